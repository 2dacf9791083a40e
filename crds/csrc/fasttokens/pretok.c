/* The DeepSeek V3 and Llama 3 pre-tokenizers, each in one scan (see fasttokens.h). */
#include "fasttokens.h"

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
        Py_ssize_t *grown = PyMem_RawRealloc(sp->at, sizeof(Py_ssize_t) * 4 * sp->cap);
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
/* Case-folded ASCII letter of a contraction (with the long s, which folds to s), else 0. */
static inline Py_UCS4 folded(Py_UCS4 c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';
    return c < 128 ? c : 0;
}

/* End of the Llama 3 split's match at i: (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ |
 * \p{N}{1,3} | " "?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+ (every character matches one). */
static Py_ssize_t match_llama3(const scan_t *s, Py_ssize_t i) {
    const Py_UCS4 c = at(s, i);
    const unsigned f = s->flags[c];
    const int has_next = i + 1 < s->n;
    if (c == '\'' && has_next) {
        const Py_UCS4 c1 = folded(at(s, i + 1)), c2 = i + 2 < s->n ? folded(at(s, i + 2)) : 0;
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
    }
    if ((f & L3_PREFIX) && has_next && (fl(s, i + 1) & L3_L)) return run(s, i + 2, s->n, L3_L, 0);
    if (f & L3_L) return run(s, i + 1, s->n, L3_L, 0);
    if (f & L3_N) {
        Py_ssize_t j = i + 1;
        while (j < s->n && j < i + 3 && (fl(s, j) & L3_N)) j++;
        return j;
    }
    {
        Py_ssize_t j = (c == ' ' && has_next && (fl(s, i + 1) & L3_OTHER)) ? i + 1 : i;
        if (s->flags[at(s, j)] & L3_OTHER) {
            j = run(s, j + 1, s->n, L3_OTHER, 0);
            while (j < s->n && is_rn(at(s, j))) j++;
            return j;
        }
    }
    if (f & L3_WS) {
        const Py_ssize_t stop = run(s, i + 1, s->n, L3_WS, 0);
        for (Py_ssize_t m = stop - 1; m >= i; m--)
            if (is_rn(at(s, m))) return m + 1;
        if (stop == s->n || stop - 1 == i) return stop;
        return stop - 1;
    }
    return -1;
}

Py_ssize_t ft_split(const scan_t *s, Py_ssize_t **spans) {
    spans_t sp = {PyMem_RawMalloc(sizeof(Py_ssize_t) * 2 * 64), 0, 64};
    Py_ssize_t gap = -1, i = 0;
    if (sp.at == NULL) return -2;
    for (Py_ssize_t k = 0; k < s->n; k++)
        if (fl(s, k) & F_UNTRUSTED) { PyMem_RawFree(sp.at); return -1; }
    while (i < s->n) {
        const unsigned f = fl(s, i);
        Py_ssize_t stop;
        if (s->family == FAMILY_LLAMA3) {
            stop = match_llama3(s, i);
        } else if (f & F_N) { /* \p{N}{1,3}: no alternative of the main regex matches inside it */
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
    PyMem_RawFree(sp.at);
    return -2;
}
