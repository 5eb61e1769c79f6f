/* checks._speedups: checks.model.content_digest and old_values_digest, and ArrivalLog.record_row, compiled
 * (optional: the Python runs where this did not build, or with KALAMDB_LT_PURE_PYTHON=1). The same number
 * for the same input, bit for bit: the ledger and the arrivals may be digested by different processes, one
 * with this and one without (tests/test_speedups.py compares the two on generated rows).
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

#include "slots.h"

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

static PyObject *s_append, *s_writer_code, *s_record_row_python, *s_seq_key, *s_deleted_key, *s_empty;
static slot_t a_cols[9] = {SLOT("kind"),   SLOT("writer"),     SLOT("n"),     SLOT("seq"),  SLOT("t_recv"),
                            SLOT("digest"), SLOT("old_digest"), SLOT("epoch"), SLOT("flags")}; /* record()'s order */
static slot_t a_epochs = SLOT("epochs"), a_writer_codes = SLOT("_writer_codes"), a_row_columns = SLOT("_row_columns"),
              a_key_col = SLOT("_key_col"), a_writer_col = SLOT("_writer_col"), a_n_col = SLOT("_n_col");
static PyTypeObject *array_type; /* array.array */
static PyObject *array_append;    /* array.array.append */
static long kind_update = -1, kind_delete = -1, flag_deleted_ok, flag_malformed, flag_no_old;

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
static PyObject *old_digest_of(PyObject *old, PyObject *key);

static PyObject *old_values_digest(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "old_values_digest(old, key_column='id')");
        return NULL;
    }
    if (system_columns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "checks._speedups.configure(SYSTEM_COLUMNS) was not called");
        return NULL;
    }
    return old_digest_of(args[0], nargs > 1 ? args[1] : default_key);
}

static PyObject *old_digest_of(PyObject *old, PyObject *key) {
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


/* ---- ArrivalLog.record_row ------------------------------------------------------------------------------
 * record_row(kind, row, old, seq, t_recv) of checks.arrivals.ArrivalLog, with its record() folded in: the same
 * columns appended (each column's own append, so conversions and errors are the array's), the same (writer, n)
 * returned. Every input it does not take the usual way (not five arguments, a kind or time of another type,
 * a source row that is not a dict, an n that is not an int or str, no epoch yet) goes to the Python,
 * ArrivalLog.record_row_python, unchanged.
 *
 * Why: a listener records every change it receives, and the two Python frames of record_row and record were
 * the largest part of a verified delivery's cost after the read (bench/peers_bench.py). */

/* int(x) as record_row's try/except (TypeError, ValueError) takes it, for x absent, None, an int or a str:
 * 1 and *out set (NULL: the except branch), 0 for another type (the Python decides), -1 on another error */
static int int_of(PyObject *x, PyObject **out) {
    *out = NULL;
    if (x == NULL || x == Py_None)
        return 1;
    if (PyLong_CheckExact(x)) {
        *out = Py_NewRef(x);
        return 1;
    }
    if (!PyUnicode_CheckExact(x))
        return 0;
    *out = PyLong_FromUnicodeObject(x, 10);
    if (*out == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear();
    }
    return 1;
}

/* array.array's object (Modules/arraymodule.c, CPython 3.11): not public API, so array_layout_ok() checks it
 * at import against what the buffer protocol and the array itself say; where it does not hold, every append
 * is array.array.append. Why: append's argument parsing (PyArg_Parse per item) and the call were about a
 * twelfth of a verified delivery's cost (perf, bench/peers_bench.py). */
typedef struct {
    PyObject_VAR_HEAD
    char *ob_item;
    Py_ssize_t allocated;
    const char *ob_descr; /* struct arraydescr *: its first member is the typecode */
    PyObject *weakreflist;
    Py_ssize_t ob_exports;
} array_view;
static int array_layout = 0;

static int array_layout_ok(void) {
    static const char codes[] = "bHqdIhB";
    for (const char *c = codes; *c; c++) {
        PyObject *a = PyObject_CallFunction((PyObject *)array_type, "C(i)", *c, 1);
        if (a == NULL)
            return -1;
        Py_buffer b;
        int ok = PyObject_GetBuffer(a, &b, PyBUF_SIMPLE) == 0;
        if (ok) {
            array_view *v = (array_view *)a;
            ok = v->ob_item == b.buf && Py_SIZE(a) == 1 && v->allocated >= 1 && v->ob_exports == 1 &&
                 v->ob_descr != NULL && v->ob_descr[0] == *c && b.len == b.itemsize;
            PyBuffer_Release(&b);
            ok = ok && v->ob_exports == 0;
        }
        PyErr_Clear();
        Py_DECREF(a);
        if (!ok)
            return 0;
    }
    return 1;
}

/* v appended in place where the array has room and v is of the plain kind for its typecode (an int in range,
 * a float for 'd'): 1; else 0 (array.array.append decides, and raises as it does) */
static int array_push(PyObject *arr, PyObject *v) {
    array_view *a = (array_view *)arr;
    if (!array_layout || Py_SIZE(arr) >= a->allocated || a->ob_exports > 0)
        return 0;
    char *at;
    Py_ssize_t n = Py_SIZE(arr);
    char code = a->ob_descr[0];
    if (code == 'd') {
        if (!PyFloat_CheckExact(v))
            return 0;
        ((double *)a->ob_item)[n] = PyFloat_AS_DOUBLE(v);
        Py_SET_SIZE(arr, n + 1);
        return 1;
    }
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    at = a->ob_item;
    switch (code) {
    case 'q': ((long long *)at)[n] = x; break;
    case 'b': if (x < -128 || x > 127) return 0; ((signed char *)at)[n] = (signed char)x; break;
    case 'B': if (x < 0 || x > 255) return 0; ((unsigned char *)at)[n] = (unsigned char)x; break;
    case 'h': if (x < -32768 || x > 32767) return 0; ((short *)at)[n] = (short)x; break;
    case 'H': if (x < 0 || x > 65535) return 0; ((unsigned short *)at)[n] = (unsigned short)x; break;
    case 'I': if (x < 0 || x > 4294967295LL) return 0; ((unsigned int *)at)[n] = (unsigned int)x; break;
    default: return 0;
    }
    Py_SET_SIZE(arr, n + 1);
    return 1;
}

static int append(PyObject *self, int col, PyObject *v) {
    if (v == NULL)
        return -1;
    PyObject *arr = slot_get(self, &a_cols[col]);
    if (arr == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *r;
    if (Py_TYPE(arr) == array_type) { /* in place, else array.array.append itself: no method lookup per call */
        PyObject *call[2] = {arr, v};
        r = array_push(arr, v) ? Py_NewRef(Py_None) : PyObject_Vectorcall(array_append, call, 2, NULL);
    } else {
        r = PyObject_CallMethodOneArg(arr, s_append, v);
    }
    Py_DECREF(arr);
    Py_DECREF(v);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *record_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *n = NULL, *seq = NULL, *digest_v = NULL, *old_v = NULL, *code = NULL, *epochs = NULL, *out = NULL;
    PyObject *attrs[4] = {NULL, NULL, NULL, NULL}; /* _writer_col, _n_col, _row_columns, _writer_codes */
    if (kind_update < 0) {
        PyErr_SetString(PyExc_RuntimeError, "checks._speedups.record_row_method() was not called");
        return NULL;
    }
    if (nargs != 5 || !PyLong_CheckExact(args[0]) || !PyFloat_CheckExact(args[4]))
        goto python;
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto python;
    }
    PyObject *row = args[1], *old = args[2];
    PyObject *src = kind == kind_delete ? old : row;
    if (!PyDict_CheckExact(src))
        goto python;
    epochs = slot_get(self, &a_epochs);
    if (epochs == NULL)
        goto fail;
    if (!PyList_CheckExact(epochs) || PyList_GET_SIZE(epochs) == 0)
        goto python;
    slot_t *names[4] = {&a_writer_col, &a_n_col, &a_row_columns, &a_writer_codes};
    for (int i = 0; i < 4; i++)
        if ((attrs[i] = slot_get(self, names[i])) == NULL)
            goto fail;
    int malformed = 0, r;
    PyObject *writer = PyDict_GetItemWithError(src, attrs[0]);
    if (writer == NULL && PyErr_Occurred())
        goto fail;
    PyObject *n_raw = PyDict_GetItemWithError(src, attrs[1]);
    if (n_raw == NULL && PyErr_Occurred())
        goto fail;
    if ((r = int_of(n_raw, &n)) <= 0) {
        if (r < 0)
            goto fail;
        goto python;
    }
    if (n == NULL) {
        n = PyLong_FromLong(-1);
        malformed = 1;
    }
    if (writer == NULL || !PyUnicode_Check(writer)) {
        writer = s_empty;
        malformed = 1;
    }
    Py_INCREF(writer); /* the row's, kept while the row may change under the calls below */
    if (args[3] != Py_None) {
        seq = Py_NewRef(args[3]);
    } else {
        PyObject *s_raw = PyDict_GetItemWithError(src, s_seq_key);
        if (s_raw == NULL && PyErr_Occurred())
            goto release_w;
        if ((r = int_of(s_raw, &seq)) <= 0) {
            if (r < 0)
                goto release_w;
            Py_DECREF(writer);
            goto python;
        }
        if (seq == NULL)
            seq = PyLong_FromLong(0);
    }
    PyObject *cols = PySequence_Fast(attrs[2], "ArrivalLog._row_columns must be iterable");
    if (cols == NULL || (digest_v = digest(src, cols)) == NULL)
        goto release_w;
    int no_old = 0, deleted_ok = 0;
    if (kind == kind_update) {
        int truth = PyObject_IsTrue(old);
        if (truth < 0)
            goto release_w;
        if (truth) {
            PyObject *key = slot_get(self, &a_key_col);
            if (key == NULL)
                goto release_w;
            old_v = old_digest_of(old, key);
            Py_DECREF(key);
            if (old_v == NULL)
                goto release_w;
        } else {
            no_old = 1;
        }
    } else if (kind == kind_delete) {
        PyObject *d = PyDict_GetItemWithError(src, s_deleted_key);
        if (d == NULL && PyErr_Occurred())
            goto release_w;
        deleted_ok = d == Py_True;
    }
    if (old_v == NULL)
        old_v = PyLong_FromLong(0);
    code = Py_XNewRef(PyDict_GetItemWithError(attrs[3], writer));
    if (code == NULL && (PyErr_Occurred() || (code = PyObject_CallMethodOneArg(self, s_writer_code, writer)) == NULL))
        goto release_w;
    long flags = (deleted_ok ? flag_deleted_ok : 0) | (malformed ? flag_malformed : 0) | (no_old ? flag_no_old : 0);
    if (append(self, 0, Py_NewRef(args[0])) < 0 || append(self, 1, Py_NewRef(code)) < 0 ||
        append(self, 2, Py_NewRef(n)) < 0 || append(self, 3, Py_NewRef(seq)) < 0 ||
        append(self, 4, Py_NewRef(args[4])) < 0 || append(self, 5, Py_NewRef(digest_v)) < 0 ||
        append(self, 6, Py_NewRef(old_v)) < 0 ||
        append(self, 7, PyLong_FromSsize_t(PyList_GET_SIZE(epochs) - 1)) < 0 ||
        append(self, 8, PyLong_FromLong(flags)) < 0)
        goto release_w;
    out = PyTuple_Pack(2, writer, n); /* NULL on failure: the same release below */
    goto release_w;
python:
    Py_XDECREF(n);
    Py_XDECREF(seq);
    Py_XDECREF(epochs);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(attrs[i]);
    { /* the bound reference, with the arguments as given: its own defaults and errors */
        PyObject *reference = PyObject_GetAttr(self, s_record_row_python);
        if (reference == NULL)
            return NULL;
        PyObject *r = PyObject_Vectorcall(reference, args, (size_t)nargs, NULL);
        Py_DECREF(reference);
        return r;
    }
release_w: /* out: the result, or NULL on an error */
    Py_DECREF(writer);
fail:
    Py_XDECREF(n);
    Py_XDECREF(seq);
    Py_XDECREF(digest_v);
    Py_XDECREF(old_v);
    Py_XDECREF(code);
    Py_XDECREF(epochs);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(attrs[i]);
    return out;
}

static PyMethodDef record_row_def = {"record_row", (PyCFunction)(void (*)(void))record_row, METH_FASTCALL,
                                     "ArrivalLog.record_row, compiled (checks/_speedups.c)."};

/* record_row_method(ArrivalLog, KIND_UPDATE, KIND_DELETE, FLAG_DELETED_OK, FLAG_MALFORMED, FLAG_NO_OLD)
 * -> a method of that class (a descriptor, as a def in its body is) */
static PyObject *record_row_method(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *cls;
    if (!PyArg_ParseTuple(args, "O!lllll", &PyType_Type, &cls, &kind_update, &kind_delete, &flag_deleted_ok,
                          &flag_malformed, &flag_no_old))
        return NULL;
    return PyDescr_NewMethod((PyTypeObject *)cls, &record_row_def);
}

static PyMethodDef methods[] = {
    {"content_digest", (PyCFunction)(void (*)(void))content_digest, METH_FASTCALL,
     "checks.model.content_digest, compiled."},
    {"old_values_digest", (PyCFunction)(void (*)(void))old_values_digest, METH_FASTCALL,
     "checks.model.old_values_digest, compiled."},
    {"record_row_method", record_row_method, METH_VARARGS,
     "record_row_method(ArrivalLog, KIND_UPDATE, KIND_DELETE, FLAG_DELETED_OK, FLAG_MALFORMED, FLAG_NO_OLD)."},
    {"configure", configure, METH_O, "configure(SYSTEM_COLUMNS): the columns old_values_digest leaves out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "checks._speedups", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    make_table();
    empty_spec = PyUnicode_FromString("");
    default_key = PyUnicode_InternFromString("id");
    if (empty_spec == NULL || default_key == NULL)
        return NULL;
    if ((s_append = PyUnicode_InternFromString("append")) == NULL ||
        (s_writer_code = PyUnicode_InternFromString("writer_code")) == NULL ||
        (s_record_row_python = PyUnicode_InternFromString("record_row_python")) == NULL ||
        (s_seq_key = PyUnicode_InternFromString("_seq")) == NULL ||
        (s_deleted_key = PyUnicode_InternFromString("_deleted")) == NULL ||
        (s_empty = PyUnicode_InternFromString("")) == NULL)
        return NULL;
    PyObject *array_module = PyImport_ImportModule("array");
    if (array_module == NULL)
        return NULL;
    array_type = (PyTypeObject *)PyObject_GetAttrString(array_module, "array");
    Py_DECREF(array_module);
    if (array_type == NULL || (array_append = PyObject_GetAttr((PyObject *)array_type, s_append)) == NULL)
        return NULL;
    if ((array_layout = array_layout_ok()) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ARRAY_IN_PLACE", array_layout) < 0)
        Py_CLEAR(m);
    return m;
}
