/* The Python module supernode.api._fasttokens: pre-token spans, and Encoder, which encodes texts from a
 * compact cache of pre-token ids (see fasttokens.h).
 *
 *   pieces(table, text, family) -> list[str] | None
 *       the pre-tokens of text, in order, for family 0 (DeepSeek V3) or 1 (Llama 3) with that family's
 *       table; None when text holds a character flagged UNTRUSTED.
 *   Bpe(byte_ids, merges, whole)
 *       byte-level BPE as the `tokenizers` library merges one word: the lowest-ranked pair first,
 *       leftmost among equals (its heap and its stale-entry rule, step for step). byte_ids: 256 ids, the id
 *       of each byte's character; merges: int32 quadruples (left, right, rank, merged id); whole: None,
 *       or a dict bytes -> id looked up first (the model's ignore_merges). .word(text) -> tuple of ids.
 *   Encoder(table, bpe, max_chars, family=0)
 *       .encode(text) -> (list[int], []) | (None, missing pre-tokens) | None (an untrusted character):
 *       a pre-token not in the cache is merged by bpe and kept; with bpe None it is reported, and the
 *       caller adds its ids with .add(piece, ids) before encoding again. The cache keeps pre-tokens of
 *       max_chars characters in all, then starts afresh (.size() -> (pre-tokens, characters, restarts)).
 *       With a C BPE (no whole-word lookup), a text of NOGIL_CHARS or more is encoded with the GIL released;
 *       a mutex keeps the cache consistent between threads.
 */
#include "fasttokens.h"

static int parse(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name, scan_t *s,
                 Py_buffer *table) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd arguments, got %zd", name, want, nargs);
        return -1;
    }
    if (!PyUnicode_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s: text must be str", name);
        return -1;
    }
    if (PyObject_GetBuffer(args[0], table, PyBUF_SIMPLE) < 0) return -1;
    if (table->len != TABLE_SIZE) {
        PyBuffer_Release(table);
        PyErr_Format(PyExc_ValueError, "%s: table must have %d bytes", name, TABLE_SIZE);
        return -1;
    }
    s->flags = table->buf;
    s->kind = PyUnicode_KIND(args[1]);
    s->data = PyUnicode_DATA(args[1]);
    s->n = PyUnicode_GET_LENGTH(args[1]);
    s->family = (int)PyLong_AsLong(args[2]);
    if (s->family != FAMILY_DEEPSEEK && s->family != FAMILY_LLAMA3) {
        PyBuffer_Release(table);
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: family must be 0 (DeepSeek) or 1 (Llama 3)", name);
        return -1;
    }
    return 0;
}

static PyObject *spans_error(Py_ssize_t count) {
    if (count == -2) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *pieces(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    scan_t s;
    Py_buffer table;
    Py_ssize_t *spans = NULL;
    if (parse(args, nargs, 3, "pieces", &s, &table) < 0) return NULL;
    const Py_ssize_t count = ft_split(&s, &spans);
    PyBuffer_Release(&table);
    if (count < 0) return spans_error(count);
    PyObject *out = PyList_New(count);
    for (Py_ssize_t k = 0; out != NULL && k < count; k++) {
        PyObject *piece = PyUnicode_Substring(args[1], spans[2 * k], spans[2 * k + 1]);
        if (piece == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, k, piece);
    }
    PyMem_RawFree(spans);
    return out;
}

typedef struct {
    PyObject_HEAD
    PyObject *table; /* the flag table (bytes) */
    BpeObject *bpe;  /* NULL: missing pre-tokens are reported */
    ft_cache_t cache;
    int family;
    PyThread_type_lock mutex; /* guards the cache: encode may run without the GIL */
} EncoderObject;

/* Texts this long are encoded with the GIL released (a worker thread's call then leaves the event loop free);
 * shorter ones keep it, so a call on the event loop never waits to get it back. */
#define NOGIL_CHARS 16384

static void lock_with_gil(EncoderObject *e) {
    if (!PyThread_acquire_lock(e->mutex, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(e->mutex, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static int scan_of(EncoderObject *e, PyObject *text, scan_t *s) {
    if (e->mutex == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the Encoder was not initialised");
        return -1;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "text must be str");
        return -1;
    }
    s->flags = (const uint8_t *)PyBytes_AS_STRING(e->table);
    s->kind = PyUnicode_KIND(text);
    s->data = PyUnicode_DATA(text);
    s->n = PyUnicode_GET_LENGTH(text);
    s->family = e->family;
    return 0;
}

static PyObject *id_list(const ft_ids_t *out) {
    PyObject *ids = PyList_New((Py_ssize_t)out->len);
    for (size_t k = 0; ids != NULL && k < out->len; k++) {
        PyObject *id = PyLong_FromLong(out->at[k]);
        if (id == NULL) Py_CLEAR(ids);
        else PyList_SET_ITEM(ids, (Py_ssize_t)k, id);
    }
    return ids;
}

/* The model's whole-word lookup needs Python, and without a C BPE missing pre-tokens are reported: this path
 * keeps the GIL. */
static PyObject *encode_with_python(EncoderObject *self, PyObject *text, const scan_t *s) {
    Py_ssize_t *spans = NULL;
    const Py_ssize_t count = ft_split(s, &spans);
    if (count < 0) return spans_error(count);
    ft_ids_t out = {NULL, 0, 0};
    int32_t *merged = NULL;
    char *buf = NULL;
    size_t buf_cap = 0, merged_cap = 0;
    PyObject *missing = PyList_New(0), *seen = PySet_New(NULL), *result = NULL, *ids = NULL;
    if (missing == NULL || seen == NULL) goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        const Py_ssize_t a = spans[2 * k], b = spans[2 * k + 1];
        const uint64_t h = ft_span_hash(s, a, b);
        const ft_piece_t *p = ft_cache_find(&self->cache, s, a, b, h);
        if (p == NULL && self->bpe != NULL) { /* merge it and keep it */
            if (ft_reserve((void **)&buf, &buf_cap, (size_t)(b - a) * 4 + 1, 1) < 0 ||
                ft_reserve((void **)&merged, &merged_cap, (size_t)(b - a) * 4 + 1, sizeof(int32_t)) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            const Py_ssize_t n = ft_bpe(self->bpe, buf, ft_utf8(s, a, b, buf), merged);
            if (n == -2) PyErr_NoMemory();
            if (n < 0) goto done;
            if (ft_cache_add(&self->cache, s, a, b, h, merged, n) < 0 || ft_append(&out, merged, (size_t)n) < 0) {
                PyErr_NoMemory();
                goto done;
            }
        } else if (p == NULL) { /* reported, once */
            PyObject *piece = PyUnicode_Substring(text, a, b);
            const int known = piece == NULL ? -1 : PySet_Contains(seen, piece);
            const int failed = known < 0 || (!known && (PySet_Add(seen, piece) < 0 ||
                                                        PyList_Append(missing, piece) < 0));
            Py_XDECREF(piece);
            if (failed) goto done;
        } else if (PyList_GET_SIZE(missing) == 0 && ft_append(&out, self->cache.ids + p->ids_at, p->ids_len) < 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    ids = PyList_GET_SIZE(missing) == 0 ? id_list(&out) : Py_NewRef(Py_None);
    if (ids != NULL) result = PyTuple_Pack(2, ids, missing);
done:
    Py_XDECREF(ids);
    Py_XDECREF(missing);
    Py_XDECREF(seen);
    PyMem_RawFree(spans);
    PyMem_RawFree(out.at);
    PyMem_RawFree(merged);
    PyMem_RawFree(buf);
    return result;
}

static PyObject *Encoder_encode(EncoderObject *self, PyObject *text) {
    scan_t s;
    if (scan_of(self, text, &s) < 0) return NULL;
    if (self->bpe == NULL || self->bpe->whole != NULL) {
        lock_with_gil(self);
        PyObject *result = encode_with_python(self, text, &s);
        PyThread_release_lock(self->mutex);
        return result;
    }
    ft_ids_t out = {NULL, 0, 0};
    int rc;
    if (s.n >= NOGIL_CHARS) { /* text is immutable and referenced by the caller: safe to read without the GIL */
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->mutex, WAIT_LOCK);
        rc = ft_encode(&self->cache, self->bpe, &s, &out);
        PyThread_release_lock(self->mutex);
        Py_END_ALLOW_THREADS
    } else {
        lock_with_gil(self);
        rc = ft_encode(&self->cache, self->bpe, &s, &out);
        PyThread_release_lock(self->mutex);
    }
    PyObject *ids = rc == 0 ? id_list(&out) : NULL, *result = NULL;
    PyMem_RawFree(out.at);
    if (rc == -1) Py_RETURN_NONE;
    if (rc == -2) return PyErr_NoMemory();
    if (ids != NULL) {
        PyObject *none_missing = PyList_New(0);
        if (none_missing != NULL) result = PyTuple_Pack(2, ids, none_missing);
        Py_XDECREF(none_missing);
        Py_DECREF(ids);
    }
    return result;
}

static PyObject *Encoder_add(EncoderObject *self, PyObject *const *args, Py_ssize_t nargs) {
    scan_t s;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(piece, ids)");
        return NULL;
    }
    if (scan_of(self, args[0], &s) < 0) return NULL;
    PyObject *seq = PySequence_Fast(args[1], "ids must be a sequence");
    if (seq == NULL) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *ids = PyMem_RawMalloc(sizeof(int32_t) * (n ? n : 1));
    int rc = ids == NULL ? -1 : 0;
    if (ids == NULL) PyErr_NoMemory();
    for (Py_ssize_t k = 0; rc == 0 && k < n; k++) {
        const long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));
        if (id == -1 && PyErr_Occurred()) rc = -1;
        else ids[k] = (int32_t)id;
    }
    if (rc == 0 && s.n > 0) {
        const uint64_t h = ft_span_hash(&s, 0, s.n);
        lock_with_gil(self);
        if (ft_cache_find(&self->cache, &s, 0, s.n, h) == NULL &&
            ft_cache_add(&self->cache, &s, 0, s.n, h, ids, n) < 0)
            rc = -2;
        PyThread_release_lock(self->mutex);
        if (rc == -2) PyErr_NoMemory();
    }
    PyMem_RawFree(ids);
    Py_DECREF(seq);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Encoder_size(EncoderObject *self, PyObject *unused) {
    if (self->mutex == NULL) return Py_BuildValue("(nnn)", (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0);
    lock_with_gil(self);
    const ft_cache_t *c = &self->cache;
    const Py_ssize_t count = c->count, chars = (Py_ssize_t)c->keys_len, restarts = c->restarts;
    PyThread_release_lock(self->mutex);
    return Py_BuildValue("(nnn)", count, chars, restarts);
}

static int Encoder_init(EncoderObject *self, PyObject *args, PyObject *kwds) {
    PyObject *table, *bpe;
    Py_ssize_t max_chars;
    int family = FAMILY_DEEPSEEK;
    static char *names[] = {"table", "bpe", "max_chars", "family", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SOn|i", names, &table, &bpe, &max_chars, &family)) return -1;
    if (family != FAMILY_DEEPSEEK && family != FAMILY_LLAMA3) {
        PyErr_SetString(PyExc_ValueError, "family must be 0 (DeepSeek) or 1 (Llama 3)");
        return -1;
    }
    if (PyBytes_GET_SIZE(table) != TABLE_SIZE) {
        PyErr_Format(PyExc_ValueError, "table must have %d bytes", TABLE_SIZE);
        return -1;
    }
    if (bpe != Py_None && !PyObject_TypeCheck(bpe, &BpeType)) {
        PyErr_SetString(PyExc_TypeError, "bpe: a Bpe or None");
        return -1;
    }
    if (max_chars < 1 || max_chars > (1 << 28)) { /* ids then stay below 2**30: their offsets fit 32 bits */
        PyErr_SetString(PyExc_ValueError, "max_chars: 1 to 2**28");
        return -1;
    }
    if (self->mutex != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "an Encoder is initialised once");
        return -1;
    }
    if (ft_cache_init(&self->cache, (size_t)max_chars) < 0 || (self->mutex = PyThread_allocate_lock()) == NULL) {
        ft_cache_free(&self->cache);
        PyErr_NoMemory();
        return -1;
    }
    self->table = Py_NewRef(table);
    self->bpe = bpe == Py_None ? NULL : (BpeObject *)Py_NewRef(bpe);
    self->family = family;
    return 0;
}

static void Encoder_dealloc(EncoderObject *self) {
    Py_XDECREF(self->table);
    Py_XDECREF(self->bpe);
    ft_cache_free(&self->cache);
    if (self->mutex != NULL) PyThread_free_lock(self->mutex);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O, "encode(text) -> (ids, missing) | None"},
    {"add", (PyCFunction)(void (*)(void))Encoder_add, METH_FASTCALL, "add(piece, ids): keep one pre-token's ids"},
    {"size", (PyCFunction)Encoder_size, METH_NOARGS, "size() -> (pre-tokens, characters, restarts)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supernode.api._fasttokens.Encoder",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

static PyMethodDef methods[] = {
    {"pieces", (PyCFunction)(void (*)(void))pieces, METH_FASTCALL, "pieces(table, text, family) -> list[str] | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_fasttokens", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__fasttokens(void) {
    if (PyType_Ready(&BpeType) < 0 || PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "Bpe", (PyObject *)&BpeType) < 0 ||
                      PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0))
        Py_CLEAR(m);
    return m;
}
