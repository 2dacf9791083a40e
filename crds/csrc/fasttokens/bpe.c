/* Byte-level BPE of one pre-token, merged as the `tokenizers` library merges a word (see fasttokens.h). */
#include "fasttokens.h"


static inline const slot_t *find_merge(const BpeObject *b, int32_t left, int32_t right) {
    const uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (uint64_t h = ft_mix(key) & b->mask;; h = (h + 1) & b->mask) {
        if (b->slots[h].key == key) return &b->slots[h];
        if (b->slots[h].key == 0) return NULL;
    }
}

typedef struct { int32_t rank; Py_ssize_t pos; int32_t merged; } entry_t;

static inline int before(const entry_t *a, const entry_t *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(entry_t *heap, Py_ssize_t *size, entry_t e) {
    Py_ssize_t i = (*size)++;
    while (i > 0 && before(&e, &heap[(i - 1) / 2])) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
    heap[i] = e;
}

static entry_t heap_pop(entry_t *heap, Py_ssize_t *size) {
    entry_t top = heap[0], last = heap[--(*size)];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= *size) break;
        if (child + 1 < *size && before(&heap[child + 1], &heap[child])) child++;
        if (!before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*size > 0) heap[i] = last;
    return top;
}

static void push_pair(const BpeObject *b, entry_t *heap, Py_ssize_t *size, const int32_t *c, Py_ssize_t left,
                      Py_ssize_t right) {
    const slot_t *m = find_merge(b, c[left], c[right]);
    if (m != NULL) heap_push(heap, size, (entry_t){m->rank, left, m->merged});
}

Py_ssize_t ft_bpe(const BpeObject *b, const char *bytes, Py_ssize_t n, int32_t *out) {
    if (b->whole != NULL) {
        PyObject *key = PyBytes_FromStringAndSize(bytes, n), *id;
        if (key == NULL) return -1;
        id = PyDict_GetItemWithError(b->whole, key);
        Py_DECREF(key);
        if (id != NULL) {
            out[0] = (int32_t)PyLong_AsLong(id);
            return PyErr_Occurred() ? -1 : 1;
        }
        if (PyErr_Occurred()) return -1;
    }
    /* One allocation: a heap that holds at most 3 entries per byte, then symbols (prev, next, id, alive). */
    const Py_ssize_t heap_cap = 3 * n + 1;
    char *mem = PyMem_RawMalloc(heap_cap * sizeof(entry_t) + n * (2 * sizeof(Py_ssize_t) + sizeof(int32_t) + 1));
    if (mem == NULL) return -2;
    entry_t *heap = (entry_t *)mem;
    Py_ssize_t *prev = (Py_ssize_t *)(heap + heap_cap), *next = prev + n;
    int32_t *c = (int32_t *)(next + n);
    char *alive = (char *)(c + n);
    Py_ssize_t size = 0, count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        c[i] = b->byte_ids[(uint8_t)bytes[i]];
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
        alive[i] = 1;
    }
    for (Py_ssize_t i = 0; i + 1 < n; i++) push_pair(b, heap, &size, c, i, i + 1);
    while (size > 0) {
        const entry_t top = heap_pop(heap, &size);
        if (!alive[top.pos] || next[top.pos] < 0) continue;
        const Py_ssize_t right = next[top.pos];
        const slot_t *m = find_merge(b, c[top.pos], c[right]);
        if (m == NULL || m->merged != top.merged) continue; /* a stale entry */
        c[top.pos] = top.merged;
        next[top.pos] = next[right];
        alive[right] = 0;
        if (next[right] >= 0) prev[next[right]] = top.pos;
        if (prev[top.pos] >= 0) push_pair(b, heap, &size, c, prev[top.pos], top.pos);
        if (next[top.pos] >= 0) push_pair(b, heap, &size, c, top.pos, next[top.pos]);
    }
    for (Py_ssize_t i = n ? 0 : -1; i >= 0; i = next[i]) out[count++] = c[i];
    PyMem_RawFree(mem);
    return count;
}

static int Bpe_init(BpeObject *self, PyObject *args, PyObject *kwds) {
    PyObject *byte_ids, *whole;
    Py_buffer merges;
    static char *names[] = {"byte_ids", "merges", "whole", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*O", names, &byte_ids, &merges, &whole)) return -1;
    int rc = -1;
    PyObject *seq = PySequence_Fast(byte_ids, "byte_ids must be a sequence");
    if (seq == NULL) goto out;
    if (PySequence_Fast_GET_SIZE(seq) != 256) { PyErr_SetString(PyExc_ValueError, "byte_ids: 256 ids"); goto out; }
    for (int i = 0; i < 256; i++) {
        long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (id == -1 && PyErr_Occurred()) goto out;
        self->byte_ids[i] = (int32_t)id;
    }
    if (merges.len % 16) { PyErr_SetString(PyExc_ValueError, "merges: int32 quadruples"); goto out; }
    const Py_ssize_t count = merges.len / 16;
    uint64_t cap = 16;
    while (cap < (uint64_t)count * 2) cap *= 2;
    PyMem_Free(self->slots);
    self->slots = PyMem_Calloc(cap, sizeof(slot_t));
    if (self->slots == NULL) { PyErr_NoMemory(); goto out; }
    self->mask = cap - 1;
    const int32_t *q = merges.buf;
    for (Py_ssize_t k = 0; k < count; k++, q += 4) {
        const uint64_t key = (((uint64_t)(uint32_t)q[0] << 32) | (uint32_t)q[1]) + 1;
        uint64_t h = ft_mix(key) & self->mask;
        while (self->slots[h].key != 0 && self->slots[h].key != key) h = (h + 1) & self->mask;
        if (self->slots[h].key == key) continue; /* a repeated pair: its first (lowest) rank holds */
        self->slots[h] = (slot_t){key, q[2], q[3]};
    }
    Py_CLEAR(self->whole);
    if (whole != Py_None) {
        if (!PyDict_Check(whole)) { PyErr_SetString(PyExc_TypeError, "whole: a dict or None"); goto out; }
        self->whole = Py_NewRef(whole);
    }
    rc = 0;
out:
    Py_XDECREF(seq);
    PyBuffer_Release(&merges);
    return rc;
}

static void Bpe_dealloc(BpeObject *self) {
    PyMem_Free(self->slots);
    Py_XDECREF(self->whole);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Bpe_word(BpeObject *self, PyObject *arg) {
    Py_ssize_t n;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "word: a str");
        return NULL;
    }
    const char *bytes = PyUnicode_AsUTF8AndSize(arg, &n);
    int32_t *ids = bytes == NULL ? NULL : PyMem_Malloc(sizeof(int32_t) * (n ? n : 1));
    if (ids == NULL) return bytes == NULL ? NULL : PyErr_NoMemory();
    const Py_ssize_t count = ft_bpe(self, bytes, n, ids);
    if (count == -2) PyErr_NoMemory();
    PyObject *out = count < 0 ? NULL : PyTuple_New(count);
    for (Py_ssize_t k = 0; out != NULL && k < count; k++) {
        PyObject *id = PyLong_FromLong(ids[k]);
        if (id == NULL) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, k, id);
    }
    PyMem_Free(ids);
    return out;
}

static PyMethodDef Bpe_methods[] = {
    {"word", (PyCFunction)Bpe_word, METH_O, "word(text) -> tuple[int, ...]: the ids of one pre-token"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject BpeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supernode.api._fasttokens.Bpe",
    .tp_basicsize = sizeof(BpeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Bpe_init,
    .tp_dealloc = (destructor)Bpe_dealloc,
    .tp_methods = Bpe_methods,
};
