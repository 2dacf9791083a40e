/* Shared declarations of the fast DeepSeek V3 encoder (supernode.api._fasttokens).
 *
 * pretok.c cuts text into pre-tokens exactly as the DeepSeek V3 tokenizer's three isolating regex splits
 * do, or as the Llama 3 tokenizer's one split does (the rules and why they are exact:
 * supernode/api/fasttokens.py); bpe.c merges one pre-token's bytes as the
 * `tokenizers` library does; cache.c keeps pre-tokens' ids and encodes texts from them; module.c is the
 * Python module. Character classes
 * come from a table built in Python (one flag byte per code point): no Unicode data is compiled in here.
 */
#ifndef SUPERNODE_FASTTOKENS_H
#define SUPERNODE_FASTTOKENS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Flag bits of the table; kept equal to the constants of fasttokens.py. */
#define F_N 1u         /* \p{N} */
#define F_CJK 2u       /* the CJK split's class; such characters also carry their own classes below */
#define F_LM 4u        /* [\p{L}\p{M}] */
#define F_PS 8u        /* [\p{P}\p{S}] */
#define F_WS 16u       /* \s: Unicode White_Space */
#define F_PREFIX 32u   /* [^\r\n\p{L}\p{P}\p{S}] minus \p{N} */
#define F_UNTRUSTED 64u
#define TABLE_SIZE 0x110000

/* Flag bits of the Llama 3 (cl100k-style) split's table. */
#define L3_L 1u        /* \p{L} */
#define L3_N 2u        /* \p{N} */
#define L3_WS 16u      /* \s */
#define L3_PREFIX 32u  /* [^\r\n\p{L}\p{N}] */
#define L3_OTHER 8u    /* [^\s\p{L}\p{N}] */

enum { FAMILY_DEEPSEEK = 0, FAMILY_LLAMA3 = 1 };

typedef struct {
    const uint8_t *flags;
    int kind;
    const void *data;
    Py_ssize_t n;
    int family;
} scan_t;

static inline Py_UCS4 at(const scan_t *s, Py_ssize_t i) { return PyUnicode_READ(s->kind, s->data, i); }
static inline unsigned fl(const scan_t *s, Py_ssize_t i) { return s->flags[at(s, i)]; }

/* Pre-token spans of s->data: fills *spans with (start, end) pairs (PyMem_Raw: the caller frees them) and
 * returns their count; -1 when the text holds an untrusted character, -2 on no memory. Needs no GIL. */
Py_ssize_t ft_split(const scan_t *s, Py_ssize_t **spans);

typedef struct {
    uint64_t key; /* (left << 32 | right) + 1; 0: empty */
    int32_t rank, merged;
} slot_t;

typedef struct {
    PyObject_HEAD
    int32_t byte_ids[256];
    slot_t *slots;
    uint64_t mask;
    PyObject *whole; /* dict bytes -> int (the model's ignore_merges), or NULL */
} BpeObject;

extern PyTypeObject BpeType;

/* The ids of one word (its UTF-8 bytes) into out (room for n ids); their count, -1 with an exception set
 * (only from the whole-word lookup, which needs the GIL), or -2 on no memory (no exception set). Without
 * b->whole it needs no GIL. */
Py_ssize_t ft_bpe(const BpeObject *b, const char *bytes, Py_ssize_t n, int32_t *out);

static inline uint64_t ft_mix(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The pre-token cache: code points and ids in flat arrays under an open-addressing index (PyMem_Raw: usable
 * without the GIL; the caller keeps threads apart). */
typedef struct {
    uint64_t hash; /* 0: empty */
    uint32_t key_at, key_len, ids_at, ids_len;
} ft_piece_t;

typedef struct {
    ft_piece_t *slots;
    uint64_t mask;
    Py_ssize_t count, restarts;
    Py_UCS4 *keys;
    size_t keys_len, keys_cap, max_chars; /* past max_chars characters the cache starts afresh */
    int32_t *ids;
    size_t ids_len, ids_cap;
} ft_cache_t;

typedef struct {
    int32_t *at;
    size_t len, cap;
} ft_ids_t;

int ft_cache_init(ft_cache_t *c, size_t max_chars); /* 0, or -1 on no memory */
void ft_cache_free(ft_cache_t *c);
uint64_t ft_span_hash(const scan_t *s, Py_ssize_t a, Py_ssize_t b);
const ft_piece_t *ft_cache_find(const ft_cache_t *c, const scan_t *s, Py_ssize_t a, Py_ssize_t b, uint64_t h);
/* Keeps s[a:b] with its ids; -1 on no memory. May start the cache afresh first. */
int ft_cache_add(ft_cache_t *c, const scan_t *s, Py_ssize_t a, Py_ssize_t b, uint64_t h, const int32_t *ids,
                 Py_ssize_t n);
int ft_reserve(void **buf, size_t *cap, size_t need, size_t item); /* grows *buf to need items; -1 on no memory */
int ft_append(ft_ids_t *out, const int32_t *ids, size_t n);
Py_ssize_t ft_utf8(const scan_t *s, Py_ssize_t a, Py_ssize_t b, char *buf); /* room for 4 bytes a character */
/* Every pre-token's ids of s into out, looked up or merged by bpe (which has no whole-word lookup) and kept:
 * 0, -1 (an untrusted character) or -2 (no memory). Needs no GIL. */
int ft_encode(ft_cache_t *c, const BpeObject *bpe, const scan_t *s, ft_ids_t *out);

#endif
