/* kalamclient._speedups: push mode's read of one socket, compiled (optional: kalamclient/ws.py runs the same
 * steps in Python where this did not build, and tests run both).
 *
 * on_readable(conn): LiveConnection._on_readable, compiled; the read watcher calls it straight (no Python frame
 * per wake-up). While events wait in conn._pushed or conn._push_out is set, conn._on_readable() (the Python)
 * runs instead. Else one read (below) with conn._push as handler, conn._kernel_stamps, ws.kernel_stamp_shift_s
 * and time.time (looked up at each call: a test hook may replace them); then what _on_readable does with its
 * status: the harness's lag noted (conn.lag_sum, conn.lag_max as _note_lag), conn._push_buffered() for a frame
 * only ws.py handles, conn._fall_back(None) at the end, conn._fall_back(exc) for an OSError.
 * configure(change_cls, ws_globals, time_module) is called once by kalamclient.ws.
 *
 * The read: one non-blocking recvmsg() of up to 64 KiB, stamped as LiveConnection._take stamps it (the kernel's
 * SO_TIMESTAMPNS + shift, else now()), appended to conn._rbuf[conn._rpos:]; then every whole, unmasked,
 * unfragmented text frame at the front of the buffer whose JSON is a change of the usual shape is made
 * into a change_cls with the slots subscription_id, change_type, row, old, seq and received_at set as
 * kalamclient.ws._change sets them (Change.__init__'s assignments), and handed to handler(change), in order.
 * It stops at the first frame that is anything else
 * (a control, binary, fragmented, masked or RSV frame, JSON that is not a change or not of that shape):
 * that frame and what follows stay in conn._rbuf for ws.py's own path, which decides what it is.
 * Written back: conn._rbuf (what is left, from 0), conn._rpos = 0, conn._read_at, conn.bytes_in,
 * conn.frames, conn.last_opcode.
 *
 * Its status: 0 the buffer holds no whole frame more; 1 a frame for ws.py's path is next in conn._rbuf;
 * 2 nothing to read (EAGAIN); 3 the peer closed (EOF); a failed read is an OSError (on_readable's _fall_back).
 *
 * Why: a paced feed wakes the process once per frame or two, and each wake-up's Python (the read, the
 * buffer, the frame cut, the decode into a Change) cost more than Artillery's whole receive path
 * (bench/peers_bench.py). Only the GIL-holding thread touches the static read buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "slots.h"

#ifndef SCM_TIMESTAMPNS
#define SCM_TIMESTAMPNS 35 /* Linux asm-generic, as kalamclient.ws's _SO_TIMESTAMPNS */
#endif

#define CHUNK (64 * 1024) /* kalamclient.ws._RECV_CHUNK */
#define INTERFACE 2       /* kalamclient.ws checks it: a binary built from another version is not used */

static char chunk[CHUNK];
static PyObject *orjson_loads;
static PyObject *k_type, *k_change, *k_change_type, *k_subscription_id, *k_rows, *k_old_values, *k_seq,
    *k_insert, *k_update, *k_delete;
static PyObject *a_rbuf, *a_rpos, *a_read_at, *a_bytes_in, *a_frames, *a_last_opcode;
/* Change(subscription_id, change_type, row, old, seq, received_at) */
static slot_t change_slots[6] = {SLOT("subscription_id"), SLOT("change_type"), SLOT("row"),
                                 SLOT("old"),             SLOT("seq"),         SLOT("received_at")};
static PyObject *a_pushed, *a_push_out, *a_push, *a_push_fd, *a_kernel_stamps, *a_lag_sum, *a_lag_max,
    *a_fall_back, *a_push_buffered, *a_on_readable, *k_shift, *k_time;
static PyObject *cfg_change, *cfg_globals, *cfg_time; /* configure()'s */

/* d[key] for an exact dict, borrowed; NULL (no error) when absent */
static PyObject *get(PyObject *d, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL && PyErr_Occurred())
        PyErr_Clear();
    return v;
}

/* int(s) for an exact str or int, None for absent/None; NULL (no error) for anything else */
static PyObject *seq_of(PyObject *s) {
    if (s == NULL || s == Py_None)
        Py_RETURN_NONE;
    if (PyLong_CheckExact(s))
        return Py_NewRef(s);
    if (PyUnicode_CheckExact(s)) {
        PyObject *n = PyLong_FromUnicodeObject(s, 10);
        if (n == NULL)
            PyErr_Clear();
        return n;
    }
    return NULL;
}

/* The Change of a decoded message, as kalamclient.ws._change builds it; NULL (no error) when the message is
 * not a change of the usual shape (ws.py's path then decides what it is). */
static PyObject *change_of(PyObject *msg, PyObject *cls, double ts) {
    if (!PyDict_CheckExact(msg))
        return NULL;
    PyObject *t = get(msg, k_type);
    if (t == NULL || !PyUnicode_CheckExact(t) || PyUnicode_Compare(t, k_change) != 0)
        return NULL;
    PyObject *ct = get(msg, k_change_type), *sid = get(msg, k_subscription_id);
    if (ct == NULL || !PyUnicode_CheckExact(ct) || sid == NULL || !PyUnicode_CheckExact(sid))
        return NULL;
    PyObject *row, *old, *src;
    if (PyUnicode_Compare(ct, k_insert) == 0 || PyUnicode_Compare(ct, k_update) == 0) {
        PyObject *rows = get(msg, k_rows);
        if (rows == NULL || !PyList_CheckExact(rows) || PyList_GET_SIZE(rows) < 1)
            return NULL;
        row = PyList_GET_ITEM(rows, 0);
        if (!PyDict_CheckExact(row))
            return NULL;
        PyObject *ov = get(msg, k_old_values);
        if (ov == NULL || ov == Py_None)
            old = Py_None;
        else if (PyList_CheckExact(ov))
            old = PyList_GET_SIZE(ov) ? PyList_GET_ITEM(ov, 0) : Py_None;
        else
            return NULL;
        src = row;
    } else if (PyUnicode_Compare(ct, k_delete) == 0) {
        PyObject *ov = get(msg, k_old_values);
        if (ov == NULL || !PyList_CheckExact(ov) || PyList_GET_SIZE(ov) < 1)
            return NULL;
        old = PyList_GET_ITEM(ov, 0);
        if (!PyDict_CheckExact(old))
            return NULL;
        row = Py_None;
        src = old;
    } else {
        return NULL;
    }
    PyObject *seq = seq_of(get(src, k_seq));
    if (seq == NULL)
        return NULL;
    PyObject *at = PyFloat_FromDouble(ts);
    if (at == NULL) {
        Py_DECREF(seq);
        PyErr_Clear();
        return NULL;
    }
    /* what Change.__init__ does, without its Python frame: the six slots set */
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *ev = type->tp_alloc(type, 0);
    PyObject *vals[6] = {sid, ct, row, old, seq, at};
    for (int i = 0; ev != NULL && i < 6; i++) {
        if (slot_set(ev, &change_slots[i], vals[i]) < 0)
            Py_CLEAR(ev);
    }
    Py_DECREF(seq);
    Py_DECREF(at);
    if (ev == NULL)
        PyErr_Clear();
    return ev;
}

/* conn.name += by (an int attribute) */
static int add_to(PyObject *conn, PyObject *name, Py_ssize_t by) {
    PyObject *v = PyObject_GetAttr(conn, name);
    if (v == NULL)
        return -1;
    PyObject *b = PyLong_FromSsize_t(by);
    PyObject *s = b ? PyNumber_Add(v, b) : NULL;
    Py_DECREF(v);
    Py_XDECREF(b);
    if (s == NULL)
        return -1;
    int r = PyObject_SetAttr(conn, name, s);
    Py_DECREF(s);
    return r;
}

/* One read and the changes of it handed out: the status (0-3, as above), or -1 with an exception set.
 * *changes and *at (the read's stamp) are set from status 0 on. */
static int read_once(PyObject *conn, int fd, PyObject *handler, PyObject *cls, int stamps, double shift,
                     PyObject *now, Py_ssize_t *changes_out, double *at_out) {
    struct iovec iov = {chunk, CHUNK};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (stamps) {
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof control.buf;
    }
    ssize_t got;
    do {
        got = recvmsg(fd, &mh, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 2;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (got == 0)
        return 3;

    double ts = 0.0;
    int stamped = 0;
    if (stamps) {
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh); /* ws.py reads the first one too */
        if (c != NULL && c->cmsg_type == SCM_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec t;
            memcpy(&t, CMSG_DATA(c), sizeof t);
            ts = (double)t.tv_sec + (double)t.tv_nsec * 1e-9 + shift;
            stamped = 1;
        }
    }
    if (!stamped) {
        PyObject *t = PyObject_CallNoArgs(now);
        if (t == NULL)
            return -1;
        ts = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (ts == -1.0 && PyErr_Occurred())
            return -1;
    }

    /* what was left of the buffer, then this read */
    PyObject *old = PyObject_GetAttr(conn, a_rbuf);
    if (old == NULL)
        return -1;
    PyObject *pos_o = PyObject_GetAttr(conn, a_rpos);
    Py_ssize_t pos = pos_o ? PyLong_AsSsize_t(pos_o) : -1;
    Py_XDECREF(pos_o);
    if (pos < 0 || !PyBytes_Check(old)) {
        Py_DECREF(old);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "conn._rbuf must be bytes and conn._rpos an int >= 0");
        return -1;
    }
    Py_ssize_t rest = PyBytes_GET_SIZE(old) - pos;
    PyObject *joined = NULL;
    const unsigned char *buf;
    Py_ssize_t size;
    if (rest > 0) {
        joined = PyBytes_FromStringAndSize(NULL, rest + got);
        if (joined == NULL) {
            Py_DECREF(old);
            return -1;
        }
        memcpy(PyBytes_AS_STRING(joined), PyBytes_AS_STRING(old) + pos, rest);
        memcpy(PyBytes_AS_STRING(joined) + rest, chunk, got);
        buf = (const unsigned char *)PyBytes_AS_STRING(joined);
        size = rest + got;
    } else {
        buf = (const unsigned char *)chunk;
        size = got;
    }
    Py_DECREF(old);

    /* the cut: kalamclient.ws.LiveConnection._cut_data_frame's rules */
    Py_ssize_t p = 0, changes = 0;
    int status = 0, failed = 0;
    while (1) {
        if (size - p < 2)
            break;
        unsigned char b1 = buf[p], n1 = buf[p + 1];
        if ((b1 & 0x70) || (b1 & 0x0F) > 2 || (n1 & 0x80)) {
            status = 1; /* RSV bits, a control frame, a masked frame: websocket-client's parser */
            break;
        }
        Py_ssize_t start, n = n1;
        if (n1 < 126) {
            start = p + 2;
        } else if (n1 == 126) {
            start = p + 4;
            if (start > size)
                break;
            n = ((Py_ssize_t)buf[p + 2] << 8) | buf[p + 3];
        } else {
            start = p + 10;
            if (start > size)
                break;
            unsigned long long v = 0;
            for (int i = 2; i < 10; i++)
                v = (v << 8) | buf[p + i];
            if (v > (unsigned long long)PY_SSIZE_T_MAX - (unsigned long long)start) {
                status = 1; /* absurd length: ws.py's path reports it */
                break;
            }
            n = (Py_ssize_t)v;
        }
        Py_ssize_t end = start + n;
        if (end > size)
            break;
        if ((b1 & 0x0F) != 1 || !(b1 & 0x80)) {
            status = 1; /* binary (gzip), a fragment or a continuation: ws.py's path */
            break;
        }
        PyObject *view = PyMemoryView_FromMemory((char *)buf + start, n, PyBUF_READ);
        PyObject *msg = view ? PyObject_CallOneArg(orjson_loads, view) : NULL;
        Py_XDECREF(view);
        if (msg == NULL) {
            PyErr_Clear();
            status = 1; /* not JSON: ws.py reports the malformed frame */
            break;
        }
        PyObject *ev = change_of(msg, cls, ts);
        Py_DECREF(msg);
        if (ev == NULL) {
            status = 1;
            break;
        }
        p = end;
        changes++;
        PyObject *r = PyObject_CallOneArg(handler, ev);
        Py_DECREF(ev);
        if (r == NULL) {
            failed = 1; /* the handler's exception goes up, as from ws.py's path; the frame is consumed */
            break;
        }
        Py_DECREF(r);
    }

    /* write back; a handler's exception is kept while the state is */
    PyObject *et = NULL, *evalue = NULL, *etb = NULL;
    if (failed)
        PyErr_Fetch(&et, &evalue, &etb);
    int bad = 0;
    PyObject *left = (joined != NULL && p == 0) ? Py_NewRef(joined)
                                                : PyBytes_FromStringAndSize((const char *)buf + p, size - p);
    Py_XDECREF(joined);
    PyObject *zero = PyLong_FromLong(0), *at = PyFloat_FromDouble(ts);
    if (left == NULL || zero == NULL || at == NULL || PyObject_SetAttr(conn, a_rbuf, left) < 0 ||
        PyObject_SetAttr(conn, a_rpos, zero) < 0 || PyObject_SetAttr(conn, a_read_at, at) < 0 ||
        add_to(conn, a_bytes_in, got) < 0 || (changes && add_to(conn, a_frames, changes) < 0))
        bad = 1;
    if (!bad && changes) {
        PyObject *text = PyLong_FromLong(1);
        if (text == NULL || PyObject_SetAttr(conn, a_last_opcode, text) < 0)
            bad = 1;
        Py_XDECREF(text);
    }
    Py_XDECREF(left);
    Py_XDECREF(zero);
    Py_XDECREF(at);
    if (failed) {
        if (bad)
            PyErr_Clear();
        PyErr_Restore(et, evalue, etb);
        return -1;
    }
    if (bad)
        return -1;
    *changes_out = changes;
    *at_out = ts;
    return status;
}

/* conn.method(arg) (no argument for NULL), its result dropped: 0 or -1 */
static int call_conn(PyObject *conn, PyObject *method, PyObject *arg) {
    PyObject *r = arg ? PyObject_CallMethodOneArg(conn, method, arg) : PyObject_CallMethodNoArgs(conn, method);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* LiveConnection._note_lag(lag, events) */
static int note_lag(PyObject *conn, double lag, Py_ssize_t events) {
    PyObject *sum = PyObject_GetAttr(conn, a_lag_sum);
    double s = sum ? PyFloat_AsDouble(sum) : -1.0;
    Py_XDECREF(sum);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    PyObject *v = PyFloat_FromDouble(s + lag * (double)events);
    int r = v ? PyObject_SetAttr(conn, a_lag_sum, v) : -1;
    Py_XDECREF(v);
    if (r < 0)
        return -1;
    PyObject *mx = PyObject_GetAttr(conn, a_lag_max);
    double m = mx ? PyFloat_AsDouble(mx) : -1.0;
    Py_XDECREF(mx);
    if (m == -1.0 && PyErr_Occurred())
        return -1;
    if (lag > m) {
        v = PyFloat_FromDouble(lag);
        r = v ? PyObject_SetAttr(conn, a_lag_max, v) : -1;
        Py_XDECREF(v);
    }
    return r;
}

/* conn.<name> is true: 1, 0, or -1 */
static int conn_true(PyObject *conn, PyObject *name) {
    PyObject *v = PyObject_GetAttr(conn, name);
    int r = v ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    return r;
}

static PyObject *on_readable(PyObject *module, PyObject *conn) {
    (void)module;
    if (cfg_change == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kalamclient._speedups.configure() was not called");
        return NULL;
    }
    int busy = conn_true(conn, a_pushed);
    if (busy == 0)
        busy = conn_true(conn, a_push_out);
    if (busy < 0)
        return NULL;
    if (busy) /* events wait for recv(): the changes behind them too (their order), in the Python */
        return PyObject_CallMethodNoArgs(conn, a_on_readable);
    PyObject *fdo = PyObject_GetAttr(conn, a_push_fd), *handler = NULL, *now = NULL;
    int fd = fdo ? (int)PyLong_AsLong(fdo) : -1;
    Py_XDECREF(fdo);
    if (PyErr_Occurred())
        return NULL;
    int stamps = conn_true(conn, a_kernel_stamps);
    PyObject *sh = stamps < 0 ? NULL : PyDict_GetItemWithError(cfg_globals, k_shift); /* borrowed */
    double shift = sh ? PyFloat_AsDouble(sh) : -1.0;
    if (sh == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "kalamclient.ws has no kernel_stamp_shift_s");
    if (PyErr_Occurred())
        return NULL;
    if ((handler = PyObject_GetAttr(conn, a_push)) == NULL || (now = PyObject_GetAttr(cfg_time, k_time)) == NULL) {
        Py_XDECREF(handler);
        return NULL;
    }
    Py_ssize_t changes = 0;
    double at = 0.0;
    int status = read_once(conn, fd, handler, cfg_change, stamps, shift, now, &changes, &at);
    int r = 0;
    if (status < 0) {
        if (PyErr_ExceptionMatches(PyExc_OSError)) { /* as the Python's `except OSError` round its read */
            PyObject *et, *ev, *etb;
            PyErr_Fetch(&et, &ev, &etb);
            PyErr_NormalizeException(&et, &ev, &etb);
            if (etb != NULL && ev != NULL)
                PyException_SetTraceback(ev, etb);
            r = call_conn(conn, a_fall_back, ev ? ev : Py_None);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(etb);
        } else {
            r = -1;
        }
    } else if (status == 3) {
        r = call_conn(conn, a_fall_back, Py_None);
    } else if (status != 2) {
        if (changes) {
            PyObject *t = PyObject_CallNoArgs(now);
            double tn = t ? PyFloat_AsDouble(t) : -1.0;
            Py_XDECREF(t);
            r = (tn == -1.0 && PyErr_Occurred()) ? -1 : note_lag(conn, tn - at, changes);
        }
        if (r == 0 && status == 1) /* a frame that is not a plain change: the Python path takes it from here */
            r = call_conn(conn, a_push_buffered, NULL);
    }
    Py_DECREF(handler);
    Py_DECREF(now);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* configure(change_cls, ws_globals, time_module) */
static PyObject *configure(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *cls, *g, *t;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyType_Type, &cls, &PyDict_Type, &g, &t))
        return NULL;
    Py_XSETREF(cfg_change, Py_NewRef(cls));
    Py_XSETREF(cfg_globals, Py_NewRef(g));
    Py_XSETREF(cfg_time, Py_NewRef(t));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"on_readable", on_readable, METH_O, "LiveConnection._on_readable, compiled."},
    {"configure", configure, METH_VARARGS, "configure(change_cls, ws_globals, time_module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "kalamclient._speedups", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *orjson = PyImport_ImportModule("orjson");
    if (orjson == NULL)
        return NULL;
    orjson_loads = PyObject_GetAttrString(orjson, "loads");
    Py_DECREF(orjson);
    if (orjson_loads == NULL)
        return NULL;
#define INTERN(var, text)                                                                                      \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                                      \
        return NULL;
    INTERN(k_type, "type")
    INTERN(k_change, "change")
    INTERN(k_change_type, "change_type")
    INTERN(k_subscription_id, "subscription_id")
    INTERN(k_rows, "rows")
    INTERN(k_old_values, "old_values")
    INTERN(k_seq, "_seq")
    INTERN(k_insert, "insert")
    INTERN(k_update, "update")
    INTERN(k_delete, "delete")
    INTERN(a_rbuf, "_rbuf")
    INTERN(a_rpos, "_rpos")
    INTERN(a_read_at, "_read_at")
    INTERN(a_bytes_in, "bytes_in")
    INTERN(a_frames, "frames")
    INTERN(a_last_opcode, "last_opcode")
    INTERN(a_pushed, "_pushed")
    INTERN(a_push_out, "_push_out")
    INTERN(a_push, "_push")
    INTERN(a_push_fd, "_push_fd")
    INTERN(a_kernel_stamps, "_kernel_stamps")
    INTERN(a_lag_sum, "lag_sum")
    INTERN(a_lag_max, "lag_max")
    INTERN(a_fall_back, "_fall_back")
    INTERN(a_push_buffered, "_push_buffered")
    INTERN(a_on_readable, "_on_readable")
    INTERN(k_shift, "kernel_stamp_shift_s")
    INTERN(k_time, "time")
#undef INTERN
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "INTERFACE", INTERFACE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
