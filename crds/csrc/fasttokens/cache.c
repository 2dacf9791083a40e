/* The pre-token cache: code points and ids in two arrays under an open-addressing index, and the encode
 * loop that looks pre-tokens up or merges and keeps them (see fasttokens.h). Touches no Python object. */
#include "fasttokens.h"

int ft_cache_init(ft_cache_t *e, size_t max_chars) {
    memset(e, 0, sizeof(*e));
    e->slots = PyMem_RawCalloc(1024, sizeof(ft_piece_t));
    e->mask = 1023;
    e->max_chars = max_chars;
    return e->slots == NULL ? -1 : 0;
}

void ft_cache_free(ft_cache_t *e) {
    PyMem_RawFree(e->slots);
    PyMem_RawFree(e->keys);
    PyMem_RawFree(e->ids);
    memset(e, 0, sizeof(*e));
}

static inline uint64_t span_hash(const scan_t *s, Py_ssize_t a, Py_ssize_t b) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a over code points, then mixed */
    for (Py_ssize_t i = a; i < b; i++) h = (h ^ at(s, i)) * 0x100000001b3ULL;
    h = ft_mix(h ^ (uint64_t)(b - a));
    return h ? h : 1;
}

static inline const ft_piece_t *cache_find(const ft_cache_t *e, const scan_t *s, Py_ssize_t a, Py_ssize_t b,
                                            uint64_t h) {
    for (uint64_t i = h & e->mask;; i = (i + 1) & e->mask) {
        const ft_piece_t *p = &e->slots[i];
        if (p->hash == 0) return NULL;
        if (p->hash != h || p->key_len != (uint32_t)(b - a)) continue;
        const Py_UCS4 *key = e->keys + p->key_at;
        Py_ssize_t k = 0;
        while (k < b - a && key[k] == at(s, a + k)) k++;
        if (k == b - a) return p;
    }
}

static void restart(ft_cache_t *e) {
    memset(e->slots, 0, sizeof(ft_piece_t) * (e->mask + 1));
    e->count = 0;
    e->keys_len = e->ids_len = 0;
    e->restarts++;
}

static inline int reserve(void **buf, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    void *grown = PyMem_RawRealloc(*buf, cap2 * item);
    if (grown == NULL) return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

/* Keeps the pre-token s[a:b] with ids; -1 on no memory. May start the cache afresh first. */
int ft_cache_add(ft_cache_t *e, const scan_t *s, Py_ssize_t a, Py_ssize_t b, uint64_t h, const int32_t *ids,
                 Py_ssize_t n) {
    const size_t len = (size_t)(b - a);
    if (e->keys_len + len > e->max_chars) restart(e);
    if ((uint64_t)(e->count + 1) * 4 > (e->mask + 1) * 3) { /* grow the slots, rehashing by stored hash */
        const uint64_t cap = (e->mask + 1) * 2;
        ft_piece_t *slots = PyMem_RawCalloc(cap, sizeof(ft_piece_t));
        if (slots == NULL) return -1;
        for (uint64_t i = 0; i <= e->mask; i++) {
            if (e->slots[i].hash == 0) continue;
            uint64_t j = e->slots[i].hash & (cap - 1);
            while (slots[j].hash != 0) j = (j + 1) & (cap - 1);
            slots[j] = e->slots[i];
        }
        PyMem_RawFree(e->slots);
        e->slots = slots;
        e->mask = cap - 1;
    }
    if (reserve((void **)&e->keys, &e->keys_cap, e->keys_len + len, sizeof(Py_UCS4)) < 0 ||
        reserve((void **)&e->ids, &e->ids_cap, e->ids_len + (size_t)n, sizeof(int32_t)) < 0)
        return -1;
    for (size_t k = 0; k < len; k++) e->keys[e->keys_len + k] = at(s, a + (Py_ssize_t)k);
    memcpy(e->ids + e->ids_len, ids, sizeof(int32_t) * (size_t)n);
    uint64_t i = h & e->mask;
    while (e->slots[i].hash != 0) i = (i + 1) & e->mask;
    e->slots[i] = (ft_piece_t){h, (uint32_t)e->keys_len, (uint32_t)len, (uint32_t)e->ids_len, (uint32_t)n};
    e->keys_len += len;
    e->ids_len += (size_t)n;
    e->count++;
    return 0;
}

/* s[a:b] as UTF-8 into buf (room for 4 bytes per character); its length. */
Py_ssize_t ft_utf8(const scan_t *s, Py_ssize_t a, Py_ssize_t b, char *buf) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = a; i < b; i++) {
        const Py_UCS4 c = at(s, i);
        if (c < 0x80) buf[n++] = (char)c;
        else if (c < 0x800) { buf[n++] = (char)(0xC0 | (c >> 6)); buf[n++] = (char)(0x80 | (c & 0x3F)); }
        else if (c < 0x10000) {
            buf[n++] = (char)(0xE0 | (c >> 12));
            buf[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            buf[n++] = (char)(0x80 | (c & 0x3F));
        } else {
            buf[n++] = (char)(0xF0 | (c >> 18));
            buf[n++] = (char)(0x80 | ((c >> 12) & 0x3F));
            buf[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            buf[n++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return n;
}

static inline int append(ft_ids_t *out, const int32_t *ids, size_t n) {
    if (reserve((void **)&out->at, &out->cap, out->len + n, sizeof(int32_t)) < 0) return -1;
    memcpy(out->at + out->len, ids, sizeof(int32_t) * n);
    out->len += n;
    return 0;
}

/* Every pre-token's ids into out, looked up or merged by the C BPE and kept, touching no Python object:
 * runs with or without the GIL (the caller keeps other threads out). 0, -1 (an untrusted character) or -2
 * (no memory). */
int ft_encode(ft_cache_t *self, const BpeObject *bpe, const scan_t *s, ft_ids_t *out) {
    Py_ssize_t *spans = NULL;
    const Py_ssize_t count = ft_split(s, &spans);
    if (count < 0) return (int)count;
    char *buf = NULL;
    int32_t *merged = NULL;
    size_t buf_cap = 0, merged_cap = 0;
    int rc = 0;
    for (Py_ssize_t k = 0; k < count && rc == 0; k++) {
        const Py_ssize_t a = spans[2 * k], b = spans[2 * k + 1];
        const uint64_t h = span_hash(s, a, b);
        const ft_piece_t *p = cache_find(self, s, a, b, h);
        if (p != NULL) {
            rc = append(out, self->ids + p->ids_at, p->ids_len) < 0 ? -2 : 0;
            continue;
        }
        if (reserve((void **)&buf, &buf_cap, (size_t)(b - a) * 4 + 1, 1) < 0 ||
            reserve((void **)&merged, &merged_cap, (size_t)(b - a) * 4 + 1, sizeof(int32_t)) < 0) {
            rc = -2;
            break;
        }
        const Py_ssize_t n = ft_bpe(bpe, buf, ft_utf8(s, a, b, buf), merged);
        if (n < 0 || ft_cache_add(self, s, a, b, h, merged, n) < 0 || append(out, merged, (size_t)n) < 0) rc = -2;
    }
    PyMem_RawFree(spans);
    PyMem_RawFree(buf);
    PyMem_RawFree(merged);
    return rc;
}

uint64_t ft_span_hash(const scan_t *s, Py_ssize_t a, Py_ssize_t b) { return span_hash(s, a, b); }

const ft_piece_t *ft_cache_find(const ft_cache_t *c, const scan_t *s, Py_ssize_t a, Py_ssize_t b, uint64_t h) {
    return cache_find(c, s, a, b, h);
}

int ft_append(ft_ids_t *out, const int32_t *ids, size_t n) { return append(out, ids, n); }

int ft_reserve(void **buf, size_t *cap, size_t need, size_t item) { return reserve(buf, cap, need, item); }
