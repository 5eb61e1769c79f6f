/* An inline cache of one __slots__ attribute, for the compiled parts' hottest attribute reads and writes.
 *
 * A read through PyObject_GetAttr looks the name up in the type (a cache) and calls the slot's descriptor;
 * per change that was about a tenth of a listener's cost (bench/peers_bench.py). Here each call site keeps
 * the type it last saw, that type's version tag and the slot's offset: while the object's type and its tag
 * are the same (the tag changes when the class is changed, e.g. an attribute replaced), the slot is read or
 * written in place; anything else (another type, a name that is not a plain slot, an empty slot) goes
 * through PyObject_GetAttr / PyObject_SetAttr, which raise as Python does.
 */
#ifndef KALAMDB_LT_SLOTS_H
#define KALAMDB_LT_SLOTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    const char *text;    /* the attribute's name */
    PyObject *name;      /* interned, on first use */
    PyTypeObject *type;  /* last type seen (not a reference: compared only, and its tag is checked) */
    unsigned int tag;    /* that type's version tag when resolved (0: none, so the generic path) */
    Py_ssize_t offset;   /* of the slot in that type's objects; 0: not a plain slot */
} slot_t;

#define SLOT(text) {text, NULL, NULL, 0, 0}

static int slot_name(slot_t *s) {
    if (s->name == NULL && (s->name = PyUnicode_InternFromString(s->text)) == NULL)
        return -1;
    return 0;
}

static void slot_resolve(slot_t *s, PyTypeObject *t) {
    s->type = t;
    s->offset = 0;
    PyObject *d = _PyType_Lookup(t, s->name); /* borrowed; gives the type a version tag where it can */
    s->tag = (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
    if (s->tag != 0 && d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            s->offset = m->offset;
    }
}

/* the slot of obj, or NULL (NULL: not cached here; the caller uses the generic path) */
static inline PyObject **slot_ptr(PyObject *obj, slot_t *s) {
    PyTypeObject *t = Py_TYPE(obj);
    if (t != s->type || t->tp_version_tag != s->tag || !(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        slot_resolve(s, t);
    return s->offset ? (PyObject **)((char *)obj + s->offset) : NULL;
}

/* obj.<name>: a new reference, or NULL with the error Python raises */
static inline PyObject *slot_get(PyObject *obj, slot_t *s) {
    if (slot_name(s) < 0)
        return NULL;
    PyObject **p = slot_ptr(obj, s);
    if (p != NULL && *p != NULL)
        return Py_NewRef(*p);
    return PyObject_GetAttr(obj, s->name);
}

/* obj.<name> = v: 0, or -1 with the error Python raises */
static inline int slot_set(PyObject *obj, slot_t *s, PyObject *v) {
    if (slot_name(s) < 0)
        return -1;
    PyObject **p = slot_ptr(obj, s);
    if (p != NULL) {
        Py_XSETREF(*p, Py_NewRef(v));
        return 0;
    }
    return PyObject_SetAttr(obj, s->name, v);
}

#endif
