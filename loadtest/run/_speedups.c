/* loadtest.run._speedups: the change branch of ListenerSession._dispatch, compiled (optional: listening.py runs
 * the Python where this did not build, or with KALAMDB_LT_PURE_PYTHON=1, and tests run both).
 *
 * dispatch_change(session, change) -> True
 *
 * What ListenerSession._dispatch does with a kalamclient.events.Change: the subscription's ArrivalLog records
 * it (log.record_row), the subscription's counters (received, epoch_received), the highest n per writer
 * (max_n) and the last _seq move on, and session.on_delivery(name, latency_ms from the commit in _seq) is
 * called. Every change it does not take that way (an unknown subscription id is ignored, as the Python does;
 * an unknown change type, a change without _seq) goes to session._dispatch unchanged.
 *
 * deliver(stats, name, latency_ms): DeliveryStats.__call__ (loadtest/run/locuststats.py), installed as that
 * method by delivery_method(DeliveryStats); dispatch_change calls it directly for a DeliveryStats.
 *
 * Why: after the read (kalamclient._speedups) and the record (checks._speedups), the Python frames of this
 * branch and of DeliveryStats.__call__ were the largest part of a verified delivery's cost in push mode
 * (bench/peers_bench.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <time.h>

#include "slots.h"

static slot_t a_subscription_id = SLOT("subscription_id"), a_change_type = SLOT("change_type"), a_row = SLOT("row"),
              a_old = SLOT("old"), a_seq = SLOT("seq"), a_received_at = SLOT("received_at"), a_subs = SLOT("subs"),
              a_log = SLOT("log"), a_received = SLOT("received"), a_epoch_received = SLOT("epoch_received"),
              a_max_n = SLOT("max_n"), a_last_seq = SLOT("last_seq"), a_names = SLOT("names"),
              a_on_delivery = SLOT("on_delivery"), a_pending = SLOT("pending"), a_first = SLOT("first"),
              a_last = SLOT("last"), a_interval = SLOT("interval");
static PyObject *a_dispatch, *a_record_row;
static PyObject *kinds;               /* checks.model.KIND_BY_CHANGE_TYPE */
static long long epoch_ms = -1, shift; /* checks.model.SEQ_EPOCH_MS, SEQ_TIME_SHIFT */
static PyObject *one;
static PyObject *a_flush, *a_call_python, *s_call;
static PyTypeObject *delivery_type; /* DeliveryStats */
static PyObject *delivery_descr;    /* its compiled __call__ */

/* DeliveryStats.__call__(self, name, latency_ms), as locuststats.py's Python (call_python) does it:
 * now = time.time(); a pending batch older than interval or from another wall-clock second is flushed
 * first; the sample (0.0 when not positive) goes into pending[name]. A latency that is not a float goes to
 * the Python. */
static PyObject *deliver(PyObject *self, PyObject *name, PyObject *ms) {
    if (!PyFloat_CheckExact(ms)) {
        PyObject *args[3] = {self, name, ms};
        return PyObject_VectorcallMethod(a_call_python, args, 3, NULL);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* time.time()'s clock */
    double now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    PyObject *pending = slot_get(self, &a_pending), *nowv = NULL, *samples = NULL, *v = NULL;
    PyObject *out = NULL;
    if (pending == NULL)
        return NULL;
    int busy = PyObject_IsTrue(pending);
    if (busy < 0)
        goto done;
    if ((nowv = PyFloat_FromDouble(now)) == NULL)
        goto done;
    if (busy) {
        PyObject *fv = slot_get(self, &a_first), *iv = fv ? slot_get(self, &a_interval) : NULL;
        double first = fv ? PyFloat_AsDouble(fv) : -1.0, interval = iv ? PyFloat_AsDouble(iv) : -1.0;
        Py_XDECREF(fv);
        Py_XDECREF(iv);
        if (PyErr_Occurred())
            goto done;
        if (now - first >= interval || (long long)now != (long long)first) {
            PyObject *r = PyObject_CallMethodNoArgs(self, a_flush);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
            if (slot_set(self, &a_first, nowv) < 0)
                goto done;
            Py_SETREF(pending, slot_get(self, &a_pending)); /* flush() gave it a new dict */
            if (pending == NULL)
                goto done;
        }
    } else if (slot_set(self, &a_first, nowv) < 0) {
        goto done;
    }
    if (slot_set(self, &a_last, nowv) < 0)
        goto done;
    if (!PyDict_CheckExact(pending)) {
        PyErr_SetString(PyExc_TypeError, "DeliveryStats.pending must be a dict");
        goto done;
    }
    samples = Py_XNewRef(PyDict_GetItemWithError(pending, name));
    if (samples == NULL) {
        if (PyErr_Occurred() || (samples = PyList_New(0)) == NULL || PyDict_SetItem(pending, name, samples) < 0)
            goto done;
    }
    double x = PyFloat_AS_DOUBLE(ms);
    v = x > 0.0 ? Py_NewRef(ms) : PyFloat_FromDouble(0.0);
    if (v == NULL)
        goto done;
    if (PyList_CheckExact(samples)) {
        if (PyList_Append(samples, v) < 0)
            goto done;
        out = Py_NewRef(Py_None);
    } else {
        PyObject *r = PyObject_CallMethod(samples, "append", "O", v);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        out = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(pending);
    Py_XDECREF(nowv);
    Py_XDECREF(samples);
    Py_XDECREF(v);
    return out;
}

static PyObject *deliver_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "__call__() takes 3 positional arguments but %zd were given", nargs + 1);
        return NULL;
    }
    return deliver(self, args[0], args[1]);
}

static PyMethodDef deliver_def = {"__call__", (PyCFunction)(void (*)(void))deliver_method, METH_FASTCALL,
                                  "DeliveryStats.__call__, compiled (loadtest/run/_speedups.c)."};

/* delivery_method(DeliveryStats) -> its __call__, compiled (a method descriptor, as a def in its body is) */
static PyObject *delivery_method(PyObject *module, PyObject *cls) {
    (void)module;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "delivery_method(DeliveryStats)");
        return NULL;
    }
    PyObject *d = PyDescr_NewMethod((PyTypeObject *)cls, &deliver_def);
    if (d == NULL)
        return NULL;
    Py_XSETREF(delivery_type, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(delivery_descr, Py_NewRef(d));
    return d;
}

/* on_delivery(name, ms): deliver() straight for a DeliveryStats whose __call__ is still the compiled one */
static PyObject *call_delivery(PyObject *od, PyObject *name, PyObject *ms) {
    if (Py_TYPE(od) == delivery_type && PyDict_GetItemWithError(delivery_type->tp_dict, s_call) == delivery_descr)
        return deliver(od, name, ms);
    if (PyErr_Occurred())
        return NULL;
    PyObject *dargs[2] = {name, ms};
    return PyObject_Vectorcall(od, dargs, 2, NULL);
}

/* obj.name += 1 */
static int bump(PyObject *obj, slot_t *name) {
    PyObject *v = slot_get(obj, name);
    if (v == NULL)
        return -1;
    PyObject *w = PyNumber_InPlaceAdd(v, one);
    Py_DECREF(v);
    if (w == NULL)
        return -1;
    int r = slot_set(obj, name, w);
    Py_DECREF(w);
    return r;
}

static PyObject *python(PyObject *session, PyObject *ev) {
    return PyObject_CallMethodOneArg(session, a_dispatch, ev);
}

static PyObject *dispatch_change(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "dispatch_change(session, change)");
        return NULL;
    }
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "loadtest.run._speedups.configure() was not called");
        return NULL;
    }
    PyObject *session = args[0], *ev = args[1];
    PyObject *subs = NULL, *sid = NULL, *ct = NULL, *seq = NULL, *st = NULL, *log = NULL, *res = NULL,
             *f = NULL, *out = NULL;
    PyObject *row = NULL, *old = NULL, *t = NULL, *max_n = NULL, *last = NULL, *od = NULL, *names = NULL;
    if ((subs = slot_get(session, &a_subs)) == NULL || (sid = slot_get(ev, &a_subscription_id)) == NULL)
        goto done;
    if (!PyDict_CheckExact(subs)) {
        out = python(session, ev);
        goto done;
    }
    st = Py_XNewRef(PyDict_GetItemWithError(subs, sid)); /* self.subs.get(...) */
    if (st == NULL) {
        if (!PyErr_Occurred())
            out = Py_NewRef(Py_True);
        goto done;
    }
    if ((ct = slot_get(ev, &a_change_type)) == NULL || (seq = slot_get(ev, &a_seq)) == NULL)
        goto done;
    PyObject *kind = PyDict_GetItemWithError(kinds, ct); /* borrowed: kinds holds it */
    if (kind == NULL || seq == Py_None || !PyLong_CheckExact(seq)) {
        if (!PyErr_Occurred())
            out = python(session, ev);
        goto done;
    }
    if ((row = slot_get(ev, &a_row)) == NULL || (old = slot_get(ev, &a_old)) == NULL ||
        (t = slot_get(ev, &a_received_at)) == NULL || (log = slot_get(st, &a_log)) == NULL)
        goto done;
    PyObject *call[6] = {log, kind, row, old, seq, t};
    res = PyObject_VectorcallMethod(a_record_row, call, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (res == NULL)
        goto done;
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        PyErr_SetString(PyExc_TypeError, "record_row() must return (writer, n)");
        goto done;
    }
    if (bump(st, &a_received) < 0 || bump(st, &a_epoch_received) < 0)
        goto done;
    PyObject *w = PyTuple_GET_ITEM(res, 0), *n = PyTuple_GET_ITEM(res, 1);
    int truth = PyObject_IsTrue(w);
    if (truth < 0)
        goto done;
    if (truth) { /* if w and n > st.max_n.get(w, 0): st.max_n[w] = n */
        if ((max_n = slot_get(st, &a_max_n)) == NULL)
            goto done;
        if (!PyDict_CheckExact(max_n)) {
            PyErr_SetString(PyExc_TypeError, "SubscriptionState.max_n must be a dict");
            goto done;
        }
        PyObject *have = Py_XNewRef(PyDict_GetItemWithError(max_n, w)); /* held while n.__gt__ runs */
        if (have == NULL && (PyErr_Occurred() || (have = PyLong_FromLong(0)) == NULL))
            goto done;
        int gt = PyObject_RichCompareBool(n, have, Py_GT);
        Py_DECREF(have);
        if (gt < 0 || (gt && PyDict_SetItem(max_n, w, n) < 0))
            goto done;
    }
    if ((last = slot_get(st, &a_last_seq)) == NULL)
        goto done;
    int newer = last == Py_None ? 1 : PyObject_RichCompareBool(seq, last, Py_GT);
    if (newer < 0 || (newer && slot_set(st, &a_last_seq, seq) < 0))
        goto done;
    if ((od = slot_get(session, &a_on_delivery)) == NULL)
        goto done;
    if (od != Py_None) {
        /* ev.received_at * 1000.0 - seq_commit_ms(seq): the int is exact as a double below 2**53, as in the
         * Python's float - int */
        long long s = PyLong_AsLongLong(seq);
        double tt = PyFloat_AsDouble(t);
        if (PyErr_Occurred())
            goto done;
        if ((names = slot_get(st, &a_names)) == NULL)
            goto done;
        PyObject *name = PyObject_GetItem(names, ct);
        if (name == NULL)
            goto done;
        PyObject *ms = PyFloat_FromDouble(tt * 1000.0 - (double)((s >> shift) + epoch_ms));
        if (ms == NULL) {
            Py_DECREF(name);
            goto done;
        }
        f = call_delivery(od, name, ms);
        Py_DECREF(name);
        Py_DECREF(ms);
        if (f == NULL)
            goto done;
    }
    out = Py_NewRef(Py_True);
done:
    Py_XDECREF(subs);
    Py_XDECREF(sid);
    Py_XDECREF(ct);
    Py_XDECREF(seq);
    Py_XDECREF(st);
    Py_XDECREF(log);
    Py_XDECREF(res);
    Py_XDECREF(f);
    Py_XDECREF(row);
    Py_XDECREF(old);
    Py_XDECREF(t);
    Py_XDECREF(max_n);
    Py_XDECREF(last);
    Py_XDECREF(od);
    Py_XDECREF(names);
    return out;
}

/* configure(KIND_BY_CHANGE_TYPE, SEQ_EPOCH_MS, SEQ_TIME_SHIFT) */
static PyObject *configure(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *k;
    long long e, s;
    if (!PyArg_ParseTuple(args, "O!LL", &PyDict_Type, &k, &e, &s))
        return NULL;
    Py_XSETREF(kinds, Py_NewRef(k));
    epoch_ms = e;
    shift = s;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"dispatch_change", (PyCFunction)(void (*)(void))dispatch_change, METH_FASTCALL,
     "The change branch of ListenerSession._dispatch, compiled."},
    {"delivery_method", delivery_method, METH_O, "delivery_method(DeliveryStats): its __call__, compiled."},
    {"configure", configure, METH_VARARGS, "configure(KIND_BY_CHANGE_TYPE, SEQ_EPOCH_MS, SEQ_TIME_SHIFT)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "loadtest.run._speedups", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {{&a_dispatch, "_dispatch"}, {&a_record_row, "record_row"}, {&a_flush, "flush"},
                 {&a_call_python, "call_python"}, {&s_call, "__call__"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    if ((one = PyLong_FromLong(1)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
