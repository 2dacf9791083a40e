/* The DeepSeek V3 pre-tokenizer as one scan, byte-level BPE of one pre-token, and prompt encoding from a
 * cache of pre-token ids.
 *
 * The pure rules and the proof that this scan cuts text exactly as the tokenizer's three isolating
 * regex splits do live in supernode/api/fasttokens.py; this file only runs them fast. Character
 * classes come from a table built there (one flag byte per code point), so no Unicode data is
 * compiled in here.
 *
 *   pieces(table, text) -> list[str] | None
 *       the pre-tokens of text, in order; None when text holds a character flagged UNTRUSTED.
 *   encode(table, text, cache, bpe) -> (list[int] | None, list[str]) | None
 *       the concatenated ids of text's pre-tokens looked up in cache (dict: str -> tuple[int, ...]).
 *       A missing pre-token is encoded by bpe (a Bpe, then added to cache) or, when bpe is None,
 *       reported: (None, the distinct missing pre-tokens). None as for pieces.
 *   Bpe(byte_ids, merges, whole)
 *       byte-level BPE as the `tokenizers` library merges one word: the lowest-ranked pair first,
 *       leftmost among equals (its heap and its stale-entry rule, step for step). byte_ids: 256 int32,
 *       the id of each byte's character; merges: int32 quadruples (left, right, rank, merged id);
 *       whole: None, or a dict bytes -> id checked first (the model's ignore_merges).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Flag bits of the table; kept equal to the constants of fasttokens.py. */
#define F_N 1u         /* \p{N} */
#define F_CJK 2u       /* the CJK split's class */
#define F_LM 4u        /* (\p{L} | \p{M}) minus CJK */
#define F_PS 8u        /* (\p{P} | \p{S}) minus CJK */
#define F_WS 16u       /* \s: Unicode White_Space */
#define F_PREFIX 32u   /* [^\r\n\p{L}\p{P}\p{S}] minus \p{N} and CJK */
#define F_UNTRUSTED 64u
#define TABLE_SIZE 0x110000

typedef struct {
    const uint8_t *flags;
    int kind;
    const void *data;
    Py_ssize_t n;
} scan_t;

static inline Py_UCS4 at(const scan_t *s, Py_ssize_t i) { return PyUnicode_READ(s->kind, s->data, i); }
static inline unsigned fl(const scan_t *s, Py_ssize_t i) { return s->flags[at(s, i)]; }
static inline int is_az(Py_UCS4 c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static inline int is_rn(Py_UCS4 c) { return c == '\r' || c == '\n'; }
static inline int is_ascii_punct(Py_UCS4 c) {
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}
/* A class bit of the main regex, for a character of the segment kind at hand: CJK runs (mode F_CJK) carry
 * their own L/M, P/S and prefix bits, which plain text (mode 0) must not see. */
static inline int has(unsigned f, unsigned bit, unsigned mode) { return (f & bit) && (f & F_CJK) == mode; }
static inline Py_ssize_t run(const scan_t *s, Py_ssize_t j, Py_ssize_t end, unsigned bit, unsigned mode) {
    while (j < end && has(fl(s, j), bit, mode)) j++;
    return j;
}

/* End of the main regex's match at i inside the segment [i, end) of kind mode, or -1 (i is in a gap). */
static Py_ssize_t match_main(const scan_t *s, Py_ssize_t i, Py_ssize_t end, unsigned mode) {
    const Py_UCS4 c = at(s, i);
    const unsigned f = s->flags[c];
    const int has_next = i + 1 < end;
    if (is_ascii_punct(c) && has_next && is_az(at(s, i + 1))) { /* [punct][A-Za-z]+ */
        Py_ssize_t j = i + 2;
        while (j < end && is_az(at(s, j))) j++;
        return j;
    }
    if (has(f, F_PREFIX, mode) && has_next && has(fl(s, i + 1), F_LM, mode)) /* prefix? [LM]+ */
        return run(s, i + 2, end, F_LM, mode);
    if (has(f, F_LM, mode)) return run(s, i + 1, end, F_LM, mode);
    { /* " "? [PS]+ [\r\n]* */
        Py_ssize_t j = (c == ' ' && has_next && has(fl(s, i + 1), F_PS, mode)) ? i + 1 : i;
        if (has(fl(s, j), F_PS, mode)) {
            j = run(s, j + 1, end, F_PS, mode);
            while (j < end && is_rn(at(s, j))) j++;
            return j;
        }
    }
    if (f & F_WS) { /* white space is never CJK: plain text only */
        const Py_ssize_t stop = run(s, i + 1, end, F_WS, mode);
        for (Py_ssize_t m = stop - 1; m >= i; m--) /* \s*[\r\n]+ ends after the run's last \r or \n */
            if (is_rn(at(s, m))) return m + 1;
        if (stop == end || (fl(s, stop) & (F_N | F_CJK))) return stop; /* \s+(?!\S), \S seen per segment */
        if (stop - 1 > i) return stop - 1;                             /* it backs off one character */
        return stop;                                                   /* \s+ */
    }
    return -1;
}

typedef struct {
    Py_ssize_t *at; /* start, end pairs */
    Py_ssize_t count, cap;
} spans_t;

static int push(spans_t *sp, Py_ssize_t start, Py_ssize_t end) {
    if (sp->count == sp->cap) {
        Py_ssize_t *grown = PyMem_Realloc(sp->at, sizeof(Py_ssize_t) * 4 * sp->cap);
        if (grown == NULL) return -1;
        sp->at = grown;
        sp->cap *= 2;
    }
    sp->at[2 * sp->count] = start;
    sp->at[2 * sp->count + 1] = end;
    sp->count++;
    return 0;
}

/* Pushes [start, end) after the pending gap (text no alternative matched), which ends at start. */
static int emit(spans_t *sp, Py_ssize_t *gap, Py_ssize_t start, Py_ssize_t end) {
    if (*gap >= 0 && push(sp, *gap, start) < 0) return -1;
    *gap = -1;
    return start < end ? push(sp, start, end) : 0;
}

/* Cuts [i, end) of kind mode with the main regex: its matches and the gaps between them. */
static int scan_segment(const scan_t *s, spans_t *sp, Py_ssize_t i, Py_ssize_t end, unsigned mode) {
    Py_ssize_t gap = -1;
    while (i < end) {
        const Py_ssize_t stop = match_main(s, i, end, mode);
        if (stop < 0) {
            if (gap < 0) gap = i;
            i++;
        } else {
            if (emit(sp, &gap, i, stop) < 0) return -1;
            i = stop;
        }
    }
    return emit(sp, &gap, end, end);
}

/* Fills *spans (start, end pairs; the caller frees it) and returns their count; -1 on an untrusted
 * character, -2 on no memory. Digit groups and CJK runs are segments of their own (the first two splits);
 * the main regex then cuts each CJK run alone, and plain text in one pass: its classes stop at digits and
 * CJK characters, and its look-ahead treats them as a segment's end. */
static Py_ssize_t split(const scan_t *s, Py_ssize_t **spans) {
    spans_t sp = {PyMem_Malloc(sizeof(Py_ssize_t) * 2 * 64), 0, 64};
    Py_ssize_t gap = -1, i = 0;
    if (sp.at == NULL) return -2;
    for (Py_ssize_t k = 0; k < s->n; k++)
        if (fl(s, k) & F_UNTRUSTED) { PyMem_Free(sp.at); return -1; }
    while (i < s->n) {
        const unsigned f = fl(s, i);
        Py_ssize_t stop;
        if (f & F_N) { /* \p{N}{1,3}: no alternative of the main regex matches inside it */
            stop = i + 1;
            while (stop < s->n && stop < i + 3 && (fl(s, stop) & F_N)) stop++;
        } else if (f & F_CJK) {
            stop = run(s, i + 1, s->n, F_CJK, F_CJK);
            if (emit(&sp, &gap, i, i) < 0 || scan_segment(s, &sp, i, stop, F_CJK) < 0) goto oom;
            i = stop;
            continue;
        } else {
            stop = match_main(s, i, s->n, 0);
        }
        if (stop < 0) {
            if (gap < 0) gap = i;
            i++;
            continue;
        }
        if (emit(&sp, &gap, i, stop) < 0) goto oom;
        i = stop;
    }
    if (emit(&sp, &gap, s->n, s->n) < 0) goto oom;
    *spans = sp.at;
    return sp.count;
oom:
    PyMem_Free(sp.at);
    return -2;
}

/* ---- byte-level BPE ---- */

typedef struct {
    uint64_t key; /* (left << 32 | right) + 1; 0: empty */
    int32_t rank, merged;
} slot_t;

typedef struct {
    PyObject_HEAD
    int32_t byte_ids[256];
    slot_t *slots;
    uint64_t mask;
    PyObject *whole; /* dict bytes -> int, or NULL */
} BpeObject;

static inline uint64_t mix(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline const slot_t *find_merge(const BpeObject *b, int32_t left, int32_t right) {
    const uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (uint64_t h = mix(key) & b->mask;; h = (h + 1) & b->mask) {
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

/* The ids of one word (its UTF-8 bytes) as a new tuple. */
static PyObject *bpe_word(const BpeObject *b, const char *bytes, Py_ssize_t n) {
    if (b->whole != NULL) {
        PyObject *key = PyBytes_FromStringAndSize(bytes, n), *id;
        if (key == NULL) return NULL;
        id = PyDict_GetItemWithError(b->whole, key);
        Py_DECREF(key);
        if (id != NULL) return PyTuple_Pack(1, id);
        if (PyErr_Occurred()) return NULL;
    }
    /* One allocation: symbols (id, prev, next, alive) and a heap that holds at most 3 entries per merge. */
    const Py_ssize_t heap_cap = 3 * n + 1;
    char *mem = PyMem_Malloc(n * (sizeof(int32_t) + 2 * sizeof(Py_ssize_t) + 1) + heap_cap * sizeof(entry_t));
    if (mem == NULL) return PyErr_NoMemory();
    entry_t *heap = (entry_t *)mem;
    Py_ssize_t *prev = (Py_ssize_t *)(heap + heap_cap), *next = prev + n;
    int32_t *c = (int32_t *)(next + n);
    char *alive = (char *)(c + n);
    Py_ssize_t size = 0, count = n;
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
        count--;
        if (next[right] >= 0) prev[next[right]] = top.pos;
        if (prev[top.pos] >= 0) push_pair(b, heap, &size, c, prev[top.pos], top.pos);
        if (next[top.pos] >= 0) push_pair(b, heap, &size, c, top.pos, next[top.pos]);
    }
    PyObject *out = PyTuple_New(count);
    Py_ssize_t k = 0;
    for (Py_ssize_t i = n ? 0 : -1; out != NULL && i >= 0; i = next[i]) {
        PyObject *id = PyLong_FromLong(c[i]);
        if (id == NULL) { Py_CLEAR(out); break; }
        PyTuple_SET_ITEM(out, k++, id);
    }
    PyMem_Free(mem);
    return out;
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
        uint64_t h = mix(key) & self->mask;
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
    const char *bytes;
    if (PyUnicode_Check(arg)) {
        bytes = PyUnicode_AsUTF8AndSize(arg, &n);
        if (bytes == NULL) return NULL;
    } else {
        PyErr_SetString(PyExc_TypeError, "word: a str");
        return NULL;
    }
    return bpe_word(self, bytes, n);
}

static PyMethodDef Bpe_methods[] = {
    {"word", (PyCFunction)Bpe_word, METH_O, "word(text) -> tuple[int, ...]: the ids of one pre-token"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BpeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supernode.api._fasttokens.Bpe",
    .tp_basicsize = sizeof(BpeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Bpe_init,
    .tp_dealloc = (destructor)Bpe_dealloc,
    .tp_methods = Bpe_methods,
};

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
    if (parse(args, nargs, 2, "pieces", &s, &table) < 0) return NULL;
    const Py_ssize_t count = split(&s, &spans);
    PyBuffer_Release(&table);
    if (count < 0) return spans_error(count);
    PyObject *out = PyList_New(count);
    for (Py_ssize_t k = 0; out != NULL && k < count; k++) {
        PyObject *piece = PyUnicode_Substring(args[1], spans[2 * k], spans[2 * k + 1]);
        if (piece == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, k, piece);
    }
    PyMem_Free(spans);
    return out;
}

/* The ids of every pre-token found in cache, or (None, missing pre-tokens). */
static PyObject *encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    scan_t s;
    Py_buffer table;
    Py_ssize_t *spans = NULL;
    if (parse(args, nargs, 4, "encode", &s, &table) < 0) return NULL;
    PyObject *cache = args[2];
    BpeObject *bpe = args[3] == Py_None ? NULL : (BpeObject *)args[3];
    if (!PyDict_Check(cache) || (bpe != NULL && !PyObject_TypeCheck(args[3], &BpeType))) {
        PyBuffer_Release(&table);
        PyErr_SetString(PyExc_TypeError, "encode: cache must be a dict and bpe a Bpe or None");
        return NULL;
    }
    const Py_ssize_t count = split(&s, &spans);
    PyBuffer_Release(&table);
    if (count < 0) return spans_error(count);
    /* The found tuples, borrowed from the cache: nothing here runs Python code that could change it, except
     * the hash or compare of a str, which never does. */
    PyObject **found = PyMem_Malloc(sizeof(PyObject *) * (count ? count : 1));
    PyObject *missing = PyList_New(0), *seen = PySet_New(NULL), *result = NULL;
    Py_ssize_t total = 0;
    if (found == NULL || missing == NULL || seen == NULL) goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *piece = PyUnicode_Substring(args[1], spans[2 * k], spans[2 * k + 1]);
        if (piece == NULL) goto done;
        PyObject *ids = PyDict_GetItemWithError(cache, piece);
        if (ids == NULL && PyErr_Occurred()) { Py_DECREF(piece); goto done; }
        if (ids == NULL && bpe != NULL) { /* learn it: the cache holds the new tuple (borrowed below) */
            Py_ssize_t len;
            const char *utf8 = PyUnicode_AsUTF8AndSize(piece, &len);
            PyObject *learned = utf8 == NULL ? NULL : bpe_word(bpe, utf8, len);
            const int stored = learned == NULL ? -1 : PyDict_SetItem(cache, piece, learned);
            Py_XDECREF(learned);
            if (stored < 0) { Py_DECREF(piece); goto done; }
            ids = learned;
        }
        if (ids != NULL && !PyTuple_Check(ids)) {
            Py_DECREF(piece);
            PyErr_SetString(PyExc_TypeError, "encode: cache values must be tuples of ids");
            goto done;
        }
        found[k] = ids;
        if (ids != NULL) total += PyTuple_GET_SIZE(ids);
        else {
            const int known = PySet_Contains(seen, piece);
            if (known < 0 || (!known && (PySet_Add(seen, piece) < 0 || PyList_Append(missing, piece) < 0))) {
                Py_DECREF(piece);
                goto done;
            }
        }
        Py_DECREF(piece);
    }
    PyObject *ids = Py_None;
    if (PyList_GET_SIZE(missing) == 0) {
        ids = PyList_New(total);
        if (ids == NULL) goto done;
        Py_ssize_t at_id = 0;
        for (Py_ssize_t k = 0; k < count; k++)
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(found[k]); j++)
                PyList_SET_ITEM(ids, at_id++, Py_NewRef(PyTuple_GET_ITEM(found[k], j)));
    } else {
        Py_INCREF(ids);
    }
    result = PyTuple_Pack(2, ids, missing);
    Py_DECREF(ids);
done:
    PyMem_Free(found);
    PyMem_Free(spans);
    Py_XDECREF(missing);
    Py_XDECREF(seen);
    return result;
}

static PyMethodDef methods[] = {
    {"pieces", (PyCFunction)(void (*)(void))pieces, METH_FASTCALL, "pieces(table, text) -> list[str] | None"},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(table, text, cache, bpe) -> tuple[list[int] | None, list[str]] | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fasttokens", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fasttokens(void) {
    if (PyType_Ready(&BpeType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Bpe", (PyObject *)&BpeType) < 0) Py_CLEAR(m);
    return m;
}
