/* checks._digest: checks.model.content_digest and old_values_digest, compiled (optional: model.py's Python runs where this did not
 * build, or with KALAMDB_LT_PURE_PYTHON=1). The same number for the same input, bit for bit: the ledger and
 * the arrivals may be digested by different processes, one with this and one without
 * (tests/test_speedups.py compares the two on generated rows).
 *
 * content_digest(values, columns) -> int
 *     CRC-32 of "\x1f".join(f"{col}={values[col]}" if col in values else col + "\x00" for col in columns),
 *     encoded as UTF-8 with surrogatepass; values any mapping (a dict read directly), columns any iterable.
 *
 * Why: every change a listener records is digested once (twice for an update), and in Python that was
 * about a tenth of a verified delivery's cost (bench/peers_bench.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

static uint32_t table[256];
static PyObject *empty_spec, *default_key, *system_columns;

static void make_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

/* zlib's crc32(data, crc) */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, Py_ssize_t n) {
    crc ^= 0xFFFFFFFFu;
    while (n--)
        crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* crc of format(x, "") (the str itself for an exact str) as UTF-8 with surrogatepass; -1 on error */
static int crc_text(uint32_t *crc, PyObject *x) {
    PyObject *s = PyUnicode_CheckExact(x) ? Py_NewRef(x) : PyObject_Format(x, empty_spec);
    if (s == NULL)
        return -1;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p != NULL) {
        *crc = crc_update(*crc, (const unsigned char *)p, n);
        Py_DECREF(s);
        return 0;
    }
    PyErr_Clear(); /* a lone surrogate: as str.encode("utf-8", "surrogatepass") */
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    Py_DECREF(s);
    if (b == NULL)
        return -1;
    *crc = crc_update(*crc, (const unsigned char *)PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return 0;
}

/* the digest of values over cols (a list or tuple); steals the reference to cols */
static PyObject *digest(PyObject *values, PyObject *cols) {
    int is_dict = PyDict_CheckExact(values);
    Py_ssize_t k = PySequence_Fast_GET_SIZE(cols);
    PyObject **items = PySequence_Fast_ITEMS(cols);
    uint32_t crc = 0;
    static const unsigned char sep = 0x1f, eq = '=', missing = 0x00;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *col = items[i];
        if (i)
            crc = crc_update(crc, &sep, 1);
        PyObject *v;
        if (is_dict) {
            v = Py_XNewRef(PyDict_GetItemWithError(values, col));
            if (v == NULL && PyErr_Occurred())
                goto fail;
        } else { /* `col in values`, then values[col], as the Python does for any mapping */
            int has = PySequence_Contains(values, col);
            if (has < 0)
                goto fail;
            v = has ? PyObject_GetItem(values, col) : NULL;
            if (has && v == NULL)
                goto fail;
        }
        if (v == NULL) { /* col + "\x00": a str column only */
            if (!PyUnicode_Check(col)) {
                PyErr_Format(PyExc_TypeError, "unsupported operand type(s) for +: '%.100s' and 'str'",
                             Py_TYPE(col)->tp_name);
                goto fail;
            }
            if (crc_text(&crc, col) < 0)
                goto fail;
            crc = crc_update(crc, &missing, 1);
            continue;
        }
        int r = crc_text(&crc, col);
        if (r == 0) {
            crc = crc_update(crc, &eq, 1);
            r = crc_text(&crc, v);
        }
        Py_DECREF(v);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(cols);
    return PyLong_FromUnsignedLong(crc);
fail:
    Py_DECREF(cols);
    return NULL;
}

static PyObject *content_digest(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "content_digest(values, columns)");
        return NULL;
    }
    PyObject *cols = PySequence_Fast(args[1], "content_digest: columns must be iterable");
    return cols == NULL ? NULL : digest(args[0], cols);
}

/* old_values_digest(old, key_column="id"): content_digest(old, sorted(k for k in old if k != key_column
 * and k not in SYSTEM_COLUMNS)), SYSTEM_COLUMNS as given to configure() */
static PyObject *old_values_digest(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "old_values_digest(old, key_column='id')");
        return NULL;
    }
    if (system_columns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "checks._digest.configure(SYSTEM_COLUMNS) was not called");
        return NULL;
    }
    PyObject *old = args[0], *key = nargs > 1 ? args[1] : default_key;
    PyObject *cols = PyList_New(0), *it = cols ? PyObject_GetIter(old) : NULL, *k;
    if (it == NULL)
        goto fail;
    while ((k = PyIter_Next(it)) != NULL) {
        int skip = PyObject_RichCompareBool(k, key, Py_EQ);
        if (skip == 0)
            skip = PySequence_Contains(system_columns, k);
        if (skip < 0 || (!skip && PyList_Append(cols, k) < 0)) {
            Py_DECREF(k);
            goto fail;
        }
        Py_DECREF(k);
    }
    if (PyErr_Occurred() || PyList_Sort(cols) < 0)
        goto fail;
    Py_DECREF(it);
    return digest(old, cols);
fail:
    Py_XDECREF(it);
    Py_XDECREF(cols);
    return NULL;
}

static PyObject *configure(PyObject *module, PyObject *arg) {
    (void)module;
    Py_XSETREF(system_columns, Py_NewRef(arg));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"content_digest", (PyCFunction)(void (*)(void))content_digest, METH_FASTCALL,
     "checks.model.content_digest, compiled."},
    {"old_values_digest", (PyCFunction)(void (*)(void))old_values_digest, METH_FASTCALL,
     "checks.model.old_values_digest, compiled."},
    {"configure", configure, METH_O, "configure(SYSTEM_COLUMNS): the columns old_values_digest leaves out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "checks._digest", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__digest(void) {
    make_table();
    empty_spec = PyUnicode_FromString("");
    default_key = PyUnicode_InternFromString("id");
    if (empty_spec == NULL || default_key == NULL)
        return NULL;
    return PyModule_Create(&module);
}
