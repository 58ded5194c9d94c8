/* Native fast path of the Kineto importer: one pass over a chunk of the traceEvents array.
 *
 * scan(buffer, start, end) reads buffer[start:end] as the body of a JSON array of events (what
 * kineto_stream cuts) and returns typed column buffers for the events the importer keeps, or
 * None. None means "let the reference path (msgspec + kineto._Builder) handle this chunk": the
 * bytes are not valid JSON (a wrong cut, a truncated file), or some value is outside the plain
 * shapes handled here (a string pid, a float correlation, a negative duration, a lone surrogate,
 * a duplicate key, ...). The reference path then produces its usual result or error, so the two
 * paths cannot disagree: this code only ever answers for inputs whose meaning is unambiguous.
 *
 * Per kept event (ph "X" and a known category): kind code, name (index into a per-chunk list of
 * distinct names, in order of first use), ts and dur (float64 microseconds, as Python's float()
 * would give), pid, tid, correlation, External id, device, stream (int64, -1 when absent),
 * whether args carry a "Collective name", the span of the args object (for the few rows whose
 * rare args the Python side decodes), and the compact text of "Input Dims" for cpu_op rows.
 * ac2g flow events ("s"/"f") come back as small arrays for the flow fallback link.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 64
#define EXACT_INT_LIMIT 9007199254740992LL /* 2**53: beyond it float64 is not exact */

/* ---------------------------------------------------------------- growable buffers */
typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static __attribute__((noinline)) int buf_grow(Buf *b, size_t extra) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static inline __attribute__((always_inline)) int buf_reserve(Buf *b, size_t extra) {
    return b->len + extra <= b->cap ? 0 : buf_grow(b, extra);
}

/* always inlined: most calls store one fixed-size value, and a constant-size memcpy becomes a move */
static inline __attribute__((always_inline)) int buf_put(Buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- string table (per chunk) */
typedef struct {
    size_t off; /* offset into the table's base */
    Py_ssize_t len;
    uint64_t hash;
    int32_t id; /* -1: empty slot */
} Slot;

typedef struct {
    Slot *slots;
    size_t cap, count;
    PyObject *values; /* list of str, index = id */
} Table;

static uint64_t hash_seed; /* per process (see init_tables): names crafted to collide cannot be precomputed */

/* Eight bytes per step (names are long: kernel signatures run to hundreds of bytes); a byte-wise
 * hash was a tenth of the scan. Keys are compared in full on a hash match, so this only has to
 * spread well. */
static uint64_t hash_bytes(const char *p, Py_ssize_t n) {
    uint64_t h = hash_seed ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, (size_t)n);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    }
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 29);
}

static int table_init(Table *t) {
    t->cap = 1024;
    t->count = 0;
    t->slots = malloc(t->cap * sizeof(Slot));
    if (!t->slots) return -1;
    for (size_t i = 0; i < t->cap; i++) t->slots[i].id = -1;
    t->values = PyList_New(0);
    return t->values ? 0 : -1;
}

static void table_free(Table *t) {
    free(t->slots);
    t->slots = NULL;
    Py_CLEAR(t->values);
}

static int table_grow(Table *t) {
    size_t cap = t->cap * 2;
    Slot *s = malloc(cap * sizeof(Slot));
    if (!s) return -1;
    for (size_t i = 0; i < cap; i++) s[i].id = -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].id < 0) continue;
        size_t j = t->slots[i].hash & (cap - 1);
        while (s[j].id >= 0) j = (j + 1) & (cap - 1);
        s[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    return 0;
}

/* Id of the key base[off:off+len]; a new key gets the next id and `value` (a new reference,
 * made by the caller only when needed: make() is called on a miss). Returns -1 on error. */
typedef PyObject *(*make_fn)(const char *p, Py_ssize_t n, void *ctx);

static int32_t table_lookup(Table *t, const char *base, size_t off, Py_ssize_t n, make_fn make, void *ctx) {
    const char *p = base + off;
    uint64_t h = hash_bytes(p, n);
    size_t j = h & (t->cap - 1);
    while (t->slots[j].id >= 0) {
        Slot *s = &t->slots[j];
        if (s->hash == h && s->len == n && memcmp(base + s->off, p, (size_t)n) == 0) return s->id;
        j = (j + 1) & (t->cap - 1);
    }
    PyObject *v = make(p, n, ctx);
    if (!v) return -1;
    int32_t id = (int32_t)PyList_GET_SIZE(t->values);
    if (PyList_Append(t->values, v) < 0) {
        Py_DECREF(v);
        return -1;
    }
    Py_DECREF(v);
    t->slots[j].off = off;
    t->slots[j].len = n;
    t->slots[j].hash = h;
    t->slots[j].id = id;
    if (++t->count * 2 > t->cap && table_grow(t) < 0) return -1;
    return id;
}

/* ---------------------------------------------------------------- configuration */
#define MAX_CATS 32
static struct {
    char name[64];
    Py_ssize_t len;
    int8_t code;
} cats[MAX_CATS];
static int n_cats = 0;
static int gpu_kind[256];  /* kind code -> device/stream come from args (else pid/tid) */
static int shape_kind = -1; /* kind code whose "Input Dims" give the shape (cpu_op) */

/* ---------------------------------------------------------------- JSON scanning */
typedef struct {
    const unsigned char *p, *end, *base;
} P;

enum { T_MISSING = 0, T_NULL, T_INT, T_BIGINT, T_FLOAT, T_STR, T_TRUE, T_FALSE, T_ARR, T_OBJ };

typedef struct {
    int type;
    int64_t i;
    double d;
    const unsigned char *s; /* T_STR: raw bytes between the quotes */
    Py_ssize_t n;
    int esc; /* T_STR: has backslash escapes */
} Val;

/* Outcome of a scan step: OK, or stop and hand the chunk to the reference path. */
#define OK 0
#define FALLBACK 1
#define ERROR -1 /* a Python exception is set (memory) */

static inline void skip_ws(P *ps) {
    const unsigned char *p = ps->p, *end = ps->end;
    if (p < end && *p > ' ') return; /* compact JSON: almost always no whitespace at all */
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    ps->p = p;
}

/* bytes that may stand in a string as they are: printable ASCII but the quote and backslash */
static unsigned char plain[256];

static void init_tables(void) {
    /* string ids follow first appearance, so the seed changes speed under attack, never output */
    hash_seed = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)time(NULL) * 0xFF51AFD7ED558CCDULL) ^ ((uint64_t)getpid() << 32) ^
                (uint64_t)(uintptr_t)&hash_seed;
    for (int c = 0; c < 256; c++) plain[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

static inline int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One UTF-8 sequence starting at p (first byte >= 0x80): its length if well formed (as Python's
 * strict decoder requires: no overlongs, no encoded surrogates, <= U+10FFFF), else 0. */
static inline int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (end - p >= 2 && (p[1] & 0xC0) == 0x80) return 2;
        return 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3) return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4) return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        return 4;
    }
    return 0;
}

/* At the opening quote. Validates the string; any surrogate escape, bad UTF-8 or control
 * character -> FALLBACK. */
static int scan_string(P *ps, Val *v) {
    const unsigned char *p = ps->p + 1, *end = ps->end;
    int esc = 0;
    const unsigned char *start = p;
    for (;;) {
        /* the common case: plain ASCII */
#ifdef __SSE2__
        {
            const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
            while (end - p >= 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)p);
                /* signed compare: bytes < 0x20 and bytes >= 0x80 (negative) both stop the run */
                __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                            _mm_cmplt_epi8(v, space));
                int mask = _mm_movemask_epi8(stop);
                if (mask) {
                    p += __builtin_ctz((unsigned)mask);
                    break;
                }
                p += 16;
            }
        }
#endif
        while (p < end && plain[*p]) p++;
        if (p >= end) return FALLBACK;
        unsigned char c = *p;
        if (c == '"') break;
        if (c == '\\') {
            esc = 1;
            if (p + 1 >= end) return FALLBACK;
            unsigned char e = p[1];
            if (e == 'u') {
                if (p + 6 > end) return FALLBACK;
                int cp = 0;
                for (int k = 2; k < 6; k++) {
                    int h = hexval(p[k]);
                    if (h < 0) return FALLBACK;
                    cp = cp * 16 + h;
                }
                if (cp >= 0xD800 && cp <= 0xDFFF) return FALLBACK;
                p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                p += 2;
            } else {
                return FALLBACK;
            }
        } else if (c < 0x20) {
            return FALLBACK;
        } else {
            int k = utf8_len(p, end);
            if (!k) return FALLBACK;
            p += k;
        }
    }
    v->type = T_STR;
    v->s = start;
    v->n = p - start;
    v->esc = esc;
    ps->p = p + 1;
    return OK;
}

/* The run of ASCII digits at p, up to eight of them read with one load (SWAR): its length
 * (0-8; 8 means the run may go on) with its value in *val, or -1 when fewer than eight bytes
 * are left (the caller then reads byte by byte). Small numbers (pids, durations, ids) are one
 * block instead of a loop per digit. Little-endian byte order only. */
static inline int digit_block(const unsigned char *p, const unsigned char *end, uint64_t *val) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - p < 8) return -1;
    uint64_t x;
    memcpy(&x, p, 8);
    x ^= 0x3030303030303030ULL; /* digit bytes become 0-9, all others 10 or more */
    /* high bit of each byte that is not a digit (masking first keeps the add from carrying) */
    uint64_t non = (((x & 0x7F7F7F7F7F7F7F7FULL) + 0x7676767676767676ULL) | x) & 0x8080808080808080ULL;
    int k = non ? __builtin_ctzll(non) >> 3 : 8;
    if (k == 0) {
        *val = 0;
        return 0;
    }
    x <<= 8 * (8 - k); /* the k digits become the last k of eight; the first 8-k are zeros */
    x = x * 10 + (x >> 8);
    x = (((x & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) + (((x >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
    *val = (uint32_t)x;
    return k;
#else
    (void)p;
    (void)end;
    (void)val;
    return -1;
#endif
}

static const uint64_t pow10_u64[9] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL};

/* A JSON number at ps->p (strict grammar). Ints within +-2**53 -> T_INT; other ints -> T_BIGINT;
 * fractions/exponents -> T_FLOAT with the correctly rounded double (FALLBACK if infinite). */
/* A plain integer of 1-7 digits at p (pids, durations, ids: most numbers in a trace): its
 * length, with its value in *val; 0 for anything else (the general grammar then reads it).
 * The byte after it is read by the same load, so a fraction or exponent is seen. */
static inline int short_int(const unsigned char *p, const unsigned char *end, uint64_t *val) {
    if (end - p < 9 || (unsigned char)(*p - '1') > 8) return 0;
    int k = digit_block(p, end, val);
    if (k <= 0 || k >= 8 || p[k] == '.' || p[k] == 'e' || p[k] == 'E') return 0;
    return k;
}

static int scan_number(P *ps, Val *v) {
    const unsigned char *p = ps->p, *end = ps->end, *start = p;
    uint64_t small;
    int len = short_int(p, end, &small);
    if (len) {
        ps->p = p + len;
        v->type = T_INT;
        v->i = (int64_t)small;
        return OK;
    }
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return FALLBACK;
    uint64_t mant = 0;
    int digits = 0; /* significant digits accumulated in mant */
    int dropped = 0; /* integer digits that did not fit in mant */
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        uint64_t block;
        int k = 8;
        while (k == 8 && digits <= 11 && (k = digit_block(p, end, &block)) >= 0) {
            mant = mant * pow10_u64[k] + block;
            digits += k;
            p += k;
        }
        while (p < end && (unsigned char)(*p - '0') < 10) {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                digits++;
            } else {
                dropped++;
            }
            p++;
        }
    } else {
        return FALLBACK;
    }
    int is_int = 1;
    int frac_digits = 0;
    int frac_dropped = 0;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        uint64_t block;
        int k = 8;
        while (k == 8 && digits <= 11 && (k = digit_block(p, end, &block)) >= 0) {
            mant = mant * pow10_u64[k] + block;
            digits += k;
            frac_digits += k;
            p += k;
        }
        while (p < end && (unsigned char)(*p - '0') < 10) {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                digits++;
                frac_digits++;
            } else {
                frac_dropped = 1;
            }
            p++;
        }
    }
    int exp10 = 0;
    int exp_big = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        while (p < end && (unsigned char)(*p - '0') < 10) {
            if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
            else exp_big = 1;
            p++;
        }
        if (eneg) exp10 = -exp10;
    }
    ps->p = p;
    if (is_int) {
        if (dropped || mant > (uint64_t)EXACT_INT_LIMIT) {
            v->type = T_BIGINT;
            return OK;
        }
        v->type = T_INT;
        v->i = neg ? -(int64_t)mant : (int64_t)mant;
        return OK;
    }
    v->type = T_FLOAT;
    /* Exact fast path: mantissa and power of ten both exact doubles, one rounding. */
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int e = exp10 - frac_digits;
    if (!dropped && !frac_dropped && !exp_big && mant <= (uint64_t)EXACT_INT_LIMIT && e >= -22 && e <= 22) {
        double d = (double)mant;
        d = e < 0 ? d / pow10[-e] : d * pow10[e];
        v->d = neg ? -d : d;
        return OK;
    }
    /* Otherwise Python's own correctly rounded conversion (what float() does). */
    char tmp[128];
    size_t n = (size_t)(p - start);
    if (n >= sizeof(tmp)) {
        return FALLBACK; /* out of range: msgspec refuses it in decoded fields */
    }
    memcpy(tmp, start, n);
    tmp[n] = 0;
    double d = PyOS_string_to_double(tmp, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return FALLBACK; /* out of range: msgspec refuses it in decoded fields */
    }
    if (!(d - d == 0.0)) { /* inf */
        return FALLBACK; /* out of range: msgspec refuses it in decoded fields */
    }
    v->d = d;
    return OK;
}

static int scan_value(P *ps, Val *v, int depth);
static int skip_value(P *ps, int depth);

/* After a member of an array or object: a ',' (another member follows), the closer (the
 * container ends; consumed) or anything else (the chunk is not what this scanner reads). */
enum { SEP_MORE, SEP_CLOSED, SEP_BAD };
static inline int after_member(P *ps, unsigned char close) {
    const unsigned char *p = ps->p;
    /* compact JSON: the comma comes right after the value and the next member right after it */
    if (ps->end - p >= 2 && *p == ',' && p[1] > ' ') {
        ps->p = p + 1;
        return SEP_MORE;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) return SEP_BAD;
    if (*ps->p == ',') {
        ps->p++;
        skip_ws(ps);
        return SEP_MORE;
    }
    if (*ps->p == close) {
        ps->p++;
        return SEP_CLOSED;
    }
    return SEP_BAD;
}

/* A number msgspec skips (an unknown key): only its grammar matters, not its value. */
static inline const unsigned char *skip_digits(const unsigned char *p, const unsigned char *end) {
    uint64_t unused;
    int k = 8;
    while (k == 8 && (k = digit_block(p, end, &unused)) >= 0) p += k;
    while (p < end && (unsigned char)(*p - '0') < 10) p++;
    return p;
}

static int skip_number(P *ps) {
    const unsigned char *p = ps->p, *end = ps->end;
    uint64_t small;
    int len = short_int(p, end, &small);
    if (len) {
        ps->p = p + len;
        return OK;
    }
    if (p < end && *p == '-') p++;
    if (p >= end) return FALLBACK;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        p = skip_digits(p, end);
    } else {
        return FALLBACK;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        p = skip_digits(p, end);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        while (p < end && (unsigned char)(*p - '0') < 10) p++;
    }
    ps->p = p;
    return OK;
}

static int scan_container(P *ps, int depth, int is_obj, int skip) {
    if (depth > MAX_DEPTH) return FALLBACK;
    ps->p++; /* [ or { */
    skip_ws(ps);
    unsigned char close = is_obj ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return OK;
    }
    Val tmp;
    for (;;) {
        int r;
        if (is_obj) {
            if (ps->p >= ps->end || *ps->p != '"') return FALLBACK;
            if ((r = scan_string(ps, &tmp)) != OK) return r;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return FALLBACK;
            ps->p++;
            skip_ws(ps);
        }
        if ((r = skip ? skip_value(ps, depth + 1) : scan_value(ps, &tmp, depth + 1)) != OK) return r;
        int sep = after_member(ps, close);
        if (sep == SEP_MORE) continue;
        return sep == SEP_CLOSED ? OK : FALLBACK;
    }
}

static inline int scan_literal(P *ps, const char *lit, size_t n) {
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return FALLBACK;
    ps->p += n;
    return OK;
}

static int scan_value(P *ps, Val *v, int depth) {
    if (ps->p >= ps->end) return FALLBACK;
    unsigned char c = *ps->p;
    v->esc = 0;
    switch (c) {
    case '"':
        return scan_string(ps, v);
    case '{':
        v->type = T_OBJ;
        return scan_container(ps, depth, 1, 0);
    case '[':
        v->type = T_ARR;
        return scan_container(ps, depth, 0, 0);
    case 't':
        v->type = T_TRUE;
        return scan_literal(ps, "true", 4);
    case 'f':
        v->type = T_FALSE;
        return scan_literal(ps, "false", 5);
    case 'n':
        v->type = T_NULL;
        return scan_literal(ps, "null", 4);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return scan_number(ps, v);
        return FALLBACK;
    }
}

/* scan_value for a field of an event or its args: the common strings and numbers without the
 * call and switch of the general dispatch. */
static inline int scan_field(P *ps, Val *v, int depth) {
    if (ps->p < ps->end) {
        unsigned char c = *ps->p;
        if (c == '"') {
            v->esc = 0;
            return scan_string(ps, v);
        }
        if ((unsigned char)(c - '0') < 10 || c == '-') {
            v->esc = 0;
            return scan_number(ps, v);
        }
    }
    return scan_value(ps, v, depth);
}

/* A value under a key msgspec does not decode: validated as JSON, its content ignored. */
static int skip_value(P *ps, int depth) {
    if (ps->p >= ps->end) return FALLBACK;
    unsigned char c = *ps->p;
    Val tmp;
    switch (c) {
    case '"':
        return scan_string(ps, &tmp);
    case '{':
        return scan_container(ps, depth, 1, 1);
    case '[':
        return scan_container(ps, depth, 0, 1);
    case 't':
        return scan_literal(ps, "true", 4);
    case 'f':
        return scan_literal(ps, "false", 5);
    case 'n':
        return scan_literal(ps, "null", 4);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return skip_number(ps);
        return FALLBACK;
    }
}

/* "Input Dims": arrays nested in arrays holding integers. Writes their compact text (what
 * orjson.dumps gives for the decoded value) to out; *simple = 0 when the value has anything
 * else (the Python side then decodes it). */
static int scan_dims_array(P *ps, Buf *out, int *simple, int depth) {
    if (depth > MAX_DEPTH) return FALLBACK;
    ps->p++;
    if (buf_put(out, "[", 1) < 0) return ERROR;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return buf_put(out, "]", 1) < 0 ? ERROR : OK;
    }
    for (int first = 1;; first = 0) {
        if (!first && buf_put(out, ",", 1) < 0) return ERROR;
        if (ps->p >= ps->end) return FALLBACK;
        unsigned char c = *ps->p;
        int r;
        if (c == '[') {
            if ((r = scan_dims_array(ps, out, simple, depth + 1)) != OK) return r;
        } else {
            const unsigned char *s = ps->p;
            Val v;
            if ((r = scan_value(ps, &v, depth + 1)) != OK) return r;
            /* plain ints only; "-0" decodes to 0, so its text would differ */
            if (v.type == T_INT && !(v.i == 0 && *s == '-')) {
                if (buf_put(out, s, (size_t)(ps->p - s)) < 0) return ERROR;
            } else {
                *simple = 0;
            }
        }
        int sep = after_member(ps, ']');
        if (sep == SEP_MORE) continue;
        if (sep == SEP_BAD) return FALLBACK;
        return buf_put(out, "]", 1) < 0 ? ERROR : OK;
    }
}

/* An object key at ps->p and its colon; ps->p is left at the value. FALLBACK for anything but a
 * plain string key (an escaped key could spell a known one). Short keys followed directly by
 * ':' (compact JSON) are found with one 16-byte compare. */
static inline int scan_key(P *ps, Val *k) {
    const unsigned char *p = ps->p;
    if (p >= ps->end || *p != '"') return FALLBACK;
#ifdef __SSE2__
    if (ps->end - p >= 18) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(p + 1));
        /* quote, backslash, control bytes and (signed compare) bytes >= 0x80 stop the key */
        const __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                          _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
        int mask = _mm_movemask_epi8(stop);
        if (mask) {
            int i = __builtin_ctz((unsigned)mask);
            if (p[1 + i] == '"' && p[2 + i] == ':') {
                k->type = T_STR;
                k->s = p + 1;
                k->n = i;
                k->esc = 0;
                ps->p = p + 3 + i;
                skip_ws(ps);
                return OK;
            }
        }
    }
#endif
    int r = scan_string(ps, k);
    if (r != OK) return r;
    if (k->esc) return FALLBACK;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') return FALLBACK;
    ps->p++;
    skip_ws(ps);
    return OK;
}

static inline int key_is(const Val *k, const char *s, Py_ssize_t n) {
    return k->n == n && memcmp(k->s, s, (size_t)n) == 0;
}
#define KEY(k, lit) key_is((k), lit, (Py_ssize_t)(sizeof(lit) - 1))

/* ---------------------------------------------------------------- one event */
enum { F_PH = 1, F_CAT = 2, F_NAME = 4, F_PID = 8, F_TID = 16, F_TS = 32, F_DUR = 64, F_ID = 128, F_ARGS = 256 };
enum { A_CORR = 1, A_EXT = 2, A_DEV = 4, A_STREAM = 8, A_COLL = 16, A_NELEMS = 32, A_DTYPE = 64, A_PG = 128, A_DIMS = 256, A_ITYPE = 512 };

typedef struct {
    Val ph, cat, name, pid, tid, ts, dur, id;
    int has_args; /* 0 none/null, 1 object */
    size_t args_off, args_len;
    Val corr, ext, dev, stream;
    int coll; /* "Collective name" present and not null */
    int dims; /* -1 none/null/[], 0 simple (text in dims_buf), 1 needs Python */
} Ev;

static int scan_args(P *ps, Ev *ev, Buf *dims_buf) {
    const unsigned char *start = ps->p;
    ps->p++;
    skip_ws(ps);
    int seen = 0;
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
    } else {
        for (;;) {
            Val k, tmp;
            int r, bit = 0;
            if ((r = scan_key(ps, &k)) != OK) return r; /* an escaped key could spell a known one */
            Val *dst = &tmp;
            switch (k.n) { /* by length first: most keys are compared with nothing */
            case 5:
                if (KEY(&k, "dtype")) bit = A_DTYPE;
                break;
            case 6:
                if (KEY(&k, "device")) { bit = A_DEV; dst = &ev->dev; }
                else if (KEY(&k, "stream")) { bit = A_STREAM; dst = &ev->stream; }
                break;
            case 10:
                if (KEY(&k, "Input Dims")) bit = A_DIMS;
                else if (KEY(&k, "Input type")) bit = A_ITYPE;
                break;
            case 11:
                if (KEY(&k, "correlation")) { bit = A_CORR; dst = &ev->corr; }
                else if (KEY(&k, "External id")) { bit = A_EXT; dst = &ev->ext; }
                break;
            case 13:
                if (KEY(&k, "In msg nelems")) bit = A_NELEMS;
                break;
            case 15:
                if (KEY(&k, "Collective name")) bit = A_COLL;
                break;
            case 19:
                if (KEY(&k, "Process Group Ranks")) bit = A_PG;
                break;
            }
            if (bit) {
                if (seen & bit) return FALLBACK; /* duplicate key: leave it to the reference */
                seen |= bit;
            }
            if (bit == A_DIMS && ps->p < ps->end && *ps->p == '[') {
                int simple = 1;
                dims_buf->len = 0;
                if ((r = scan_dims_array(ps, dims_buf, &simple, 2)) != OK) return r;
                if (dims_buf->len == 2) ev->dims = -1; /* [] is falsy: no shape */
                else ev->dims = simple ? 0 : 1;
            } else if (!bit) {
                if ((r = skip_value(ps, 2)) != OK) return r;
            } else {
                if ((r = scan_field(ps, dst, 2)) != OK) return r;
                if (bit == A_COLL) ev->coll = tmp.type != T_NULL;
                if (bit == A_DIMS) ev->dims = tmp.type == T_NULL ? -1 : 1;
            }
            int sep = after_member(ps, '}');
            if (sep == SEP_MORE) continue;
            if (sep == SEP_CLOSED) break;
            return FALLBACK;
        }
    }
    ev->has_args = 1;
    ev->args_off = (size_t)(start - ps->base);
    ev->args_len = (size_t)(ps->p - start);
    return OK;
}

/* The event keys read above, spelled plainly and followed directly by ':' as compact JSON has
 * them: recognised with one 8-byte load and a masked compare instead of a string scan and
 * compares. The pattern covers both quotes and the colon, so a match means exactly what the
 * general path would find. Anything else (whitespace, escapes, other keys) takes that path. */
typedef struct {
    uint64_t pat, mask;
    int bit, len;
} QuickKey;
static QuickKey quick_keys[9];

static void quick_key_init(QuickKey *q, const char *text, int bit) {
    size_t n = strlen(text);
    unsigned char m[8] = {0};
    memset(m, 0xFF, n);
    q->pat = 0;
    memcpy(&q->pat, text, n);
    memcpy(&q->mask, m, 8);
    q->bit = bit;
    q->len = (int)n;
}

static void init_quick_keys(void) {
    static const struct { const char *text; int bit; } keys[9] = {
        {"\"ph\":", F_PH}, {"\"ts\":", F_TS}, {"\"id\":", F_ID}, {"\"cat\":", F_CAT}, {"\"pid\":", F_PID},
        {"\"tid\":", F_TID}, {"\"dur\":", F_DUR}, {"\"name\":", F_NAME}, {"\"args\":", F_ARGS},
    };
    for (int i = 0; i < 9; i++) quick_key_init(&quick_keys[i], keys[i].text, keys[i].bit);
}

/* The F_ bit of a quick key at ps->p (then consumed through its colon), or 0. */
static inline int quick_event_key(P *ps) {
    if (ps->end - ps->p < 8 || *ps->p != '"') return 0;
    uint64_t w;
    memcpy(&w, ps->p, 8);
    const QuickKey *q;
    switch (ps->p[1]) { /* the key's first letter picks one or two candidates */
    case 'p': q = ps->p[2] == 'h' ? &quick_keys[0] : &quick_keys[4]; break;
    case 't': q = ps->p[2] == 's' ? &quick_keys[1] : &quick_keys[5]; break;
    case 'i': q = &quick_keys[2]; break;
    case 'c': q = &quick_keys[3]; break;
    case 'd': q = &quick_keys[6]; break;
    case 'n': q = &quick_keys[7]; break;
    case 'a': q = &quick_keys[8]; break;
    default: return 0;
    }
    if ((w & q->mask) != q->pat) return 0;
    ps->p += q->len;
    return q->bit;
}

static int scan_event(P *ps, Ev *ev, Buf *dims_buf) {
    /* only the type tags: a full memset of the struct costs more than the rest of a small event */
    ev->ph.type = ev->cat.type = ev->name.type = ev->pid.type = ev->tid.type = T_MISSING;
    ev->ts.type = ev->dur.type = ev->id.type = T_MISSING;
    ev->corr.type = ev->ext.type = ev->dev.type = ev->stream.type = T_MISSING;
    ev->name.esc = ev->ph.esc = ev->cat.esc = 0;
    ev->has_args = 0;
    ev->args_off = ev->args_len = 0;
    ev->coll = 0;
    ev->dims = -1;
    if (ps->p >= ps->end || *ps->p != '{') return FALLBACK; /* not an object: a schema error */
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return OK;
    }
    int seen = 0;
    for (;;) {
        Val k, tmp;
        int r, bit = quick_event_key(ps);
        if (bit) {
            skip_ws(ps);
        } else {
            if ((r = scan_key(ps, &k)) != OK) return r;
            switch (k.n) {
            case 2:
                if (KEY(&k, "ph")) bit = F_PH;
                else if (KEY(&k, "ts")) bit = F_TS;
                else if (KEY(&k, "id")) bit = F_ID;
                break;
            case 3:
                if (KEY(&k, "cat")) bit = F_CAT;
                else if (KEY(&k, "pid")) bit = F_PID;
                else if (KEY(&k, "tid")) bit = F_TID;
                else if (KEY(&k, "dur")) bit = F_DUR;
                break;
            case 4:
                if (KEY(&k, "name")) bit = F_NAME;
                else if (KEY(&k, "args")) bit = F_ARGS;
                break;
            }
        }
        Val *dst = &tmp;
        switch (bit) {
        case F_PH: dst = &ev->ph; break;
        case F_TS: dst = &ev->ts; break;
        case F_ID: dst = &ev->id; break;
        case F_CAT: dst = &ev->cat; break;
        case F_PID: dst = &ev->pid; break;
        case F_TID: dst = &ev->tid; break;
        case F_DUR: dst = &ev->dur; break;
        case F_NAME: dst = &ev->name; break;
        }
        if (bit) {
            if (seen & bit) return FALLBACK;
            seen |= bit;
        }
        if (bit == F_ARGS) {
            if (ps->p < ps->end && *ps->p == '{') {
                if ((r = scan_args(ps, ev, dims_buf)) != OK) return r;
            } else {
                if ((r = scan_value(ps, &tmp, 1)) != OK) return r;
                if (tmp.type != T_NULL) return FALLBACK; /* args must be an object or null */
            }
        } else if (!bit) {
            if ((r = skip_value(ps, 1)) != OK) return r;
        } else {
            if ((r = scan_field(ps, dst, 1)) != OK) return r;
        }
        int sep = after_member(ps, '}');
        if (sep == SEP_MORE) continue;
        return sep == SEP_CLOSED ? OK : FALLBACK;
    }
}

/* ---------------------------------------------------------------- output columns */
typedef struct {
    Buf kind, name, ts, dur, pid, tid, corr, ext, dev, stream, coll, args_off, args_len, shape;
    Buf f_is_f, f_pid, f_tid, f_ts, f_id, f_id_ok;
    Buf dims; /* scratch */
    Table names, shapes;
} Out;

static PyObject *make_name(const char *p, Py_ssize_t n, void *ctx) {
    Buf *scratch = (Buf *)ctx;
    if (!scratch) return PyUnicode_DecodeUTF8(p, n, "strict");
    /* escaped: unescape into scratch (UTF-8), then decode */
    scratch->len = 0;
    if (buf_reserve(scratch, (size_t)n + 4) < 0) return PyErr_NoMemory();
    char *o = scratch->data;
    size_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c != '\\') {
            o[j++] = c;
            continue;
        }
        char e = p[++i];
        switch (e) {
        case 'b': o[j++] = '\b'; break;
        case 'f': o[j++] = '\f'; break;
        case 'n': o[j++] = '\n'; break;
        case 'r': o[j++] = '\r'; break;
        case 't': o[j++] = '\t'; break;
        case 'u': {
            int cp = 0;
            for (int k = 1; k <= 4; k++) cp = cp * 16 + hexval((unsigned char)p[i + k]);
            i += 4;
            if (cp < 0x80) {
                o[j++] = (char)cp;
            } else if (cp < 0x800) {
                o[j++] = (char)(0xC0 | (cp >> 6));
                o[j++] = (char)(0x80 | (cp & 0x3F));
            } else { /* surrogates were refused by scan_string */
                o[j++] = (char)(0xE0 | (cp >> 12));
                o[j++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[j++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: o[j++] = e; /* " \ / */
        }
    }
    return PyUnicode_DecodeUTF8(o, (Py_ssize_t)j, "strict");
}

static PyObject *make_shape(const char *p, Py_ssize_t n, void *ctx) {
    (void)ctx;
    return PyUnicode_DecodeASCII(p, n, "strict");
}

#define PUT(buf, val)                                                                              \
    do {                                                                                           \
        __typeof__(val) _v = (val);                                                                \
        if (buf_put(&(buf), &_v, sizeof(_v)) < 0) return ERROR;                                    \
    } while (0)

static inline int str_is(const Val *v, const char *s, Py_ssize_t n) {
    return v->type == T_STR && v->n == n && memcmp(v->s, s, (size_t)n) == 0;
}

/* -1: absent/null; the value: an int within 2**53; FALLBACK otherwise. */
static inline int int_field(const Val *v, int64_t *out) {
    if (v->type == T_MISSING || v->type == T_NULL) {
        *out = -1;
        return OK;
    }
    if (v->type == T_INT) {
        *out = v->i;
        return OK;
    }
    return FALLBACK;
}

static inline int scalar(const Val *v) { return v->type != T_ARR && v->type != T_OBJ; }

static int emit(Out *o, Ev *ev, const unsigned char *base, Buf *esc_scratch) {
    if (ev->ph.type == T_STR && ev->ph.esc) return FALLBACK;
    if (ev->cat.type == T_STR && ev->cat.esc) return FALLBACK;
    int is_x = str_is(&ev->ph, "X", 1);
    if (is_x) {
        if (!scalar(&ev->cat)) return FALLBACK; /* `cat in dict` would raise on a list */
        int code = -1;
        if (ev->cat.type == T_STR) {
            for (int c = 0; c < n_cats; c++)
                if (cats[c].len == ev->cat.n && memcmp(cats[c].name, ev->cat.s, (size_t)ev->cat.n) == 0) {
                    code = cats[c].code;
                    break;
                }
        }
        if (code < 0) return OK; /* a category the tools do not use */
        if (ev->name.type != T_STR) return FALLBACK;
        if (ev->pid.type != T_INT || ev->tid.type != T_INT) return FALLBACK;
        double ts, dur;
        if (ev->ts.type == T_INT) ts = (double)ev->ts.i;
        else if (ev->ts.type == T_FLOAT) ts = ev->ts.d;
        else return FALLBACK;
        if (ev->dur.type == T_MISSING || ev->dur.type == T_NULL) dur = 0.0;
        else if (ev->dur.type == T_INT) dur = (double)ev->dur.i;
        else if (ev->dur.type == T_FLOAT) dur = ev->dur.d;
        else return FALLBACK;
        if (dur < 0) return FALLBACK; /* the reference path reports it */
        int64_t corr, ext, dev, stream;
        if (int_field(&ev->corr, &corr) || int_field(&ev->ext, &ext) || int_field(&ev->dev, &dev) ||
            int_field(&ev->stream, &stream))
            return FALLBACK;
        if (gpu_kind[(uint8_t)code]) {
            if (ev->dev.type == T_MISSING || ev->dev.type == T_NULL) dev = ev->pid.i;
            if (ev->stream.type == T_MISSING || ev->stream.type == T_NULL) stream = ev->tid.i;
        } else {
            dev = -1;
            stream = -1;
        }
        int32_t nid = table_lookup(&o->names, (const char *)base, (size_t)(ev->name.s - base), ev->name.n, make_name,
                                   ev->name.esc ? esc_scratch : NULL);
        if (nid < 0) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return FALLBACK;
            }
            return ERROR;
        }
        /* -1 no "Input Dims" (absent, null or []); on cpu_op rows -2 Input Dims the Python side
         * decodes, -3 plain: interned by the caller; on other rows -4 Input Dims present (the
         * Python side decodes them for a collective's size, and skips rows without) */
        int32_t sid = -1;
        if (ev->dims >= 0) sid = code != shape_kind ? -4 : ev->dims == 1 ? -2 : -3;
        PUT(o->kind, (int8_t)code);
        PUT(o->name, nid);
        PUT(o->ts, ts);
        PUT(o->dur, dur);
        PUT(o->pid, (int64_t)ev->pid.i);
        PUT(o->tid, (int64_t)ev->tid.i);
        PUT(o->corr, corr);
        PUT(o->ext, ext);
        PUT(o->dev, dev);
        PUT(o->stream, stream);
        PUT(o->coll, (uint8_t)(ev->coll ? 1 : 0));
        PUT(o->args_off, (int64_t)(ev->has_args ? (int64_t)ev->args_off : -1));
        PUT(o->args_len, (int64_t)(ev->has_args ? (int64_t)ev->args_len : 0));
        PUT(o->shape, sid);
        return OK;
    }
    if (str_is(&ev->cat, "ac2g", 4) && (str_is(&ev->ph, "s", 1) || str_is(&ev->ph, "f", 1))) {
        /* flow ends: kept only in plain form (int pid/tid/id, numeric ts) */
        if (ev->pid.type != T_INT || ev->tid.type != T_INT) return FALLBACK;
        double ts;
        if (ev->ts.type == T_INT) ts = (double)ev->ts.i;
        else if (ev->ts.type == T_FLOAT) ts = ev->ts.d;
        else return FALLBACK;
        uint8_t id_ok;
        int64_t id = -1;
        if (ev->id.type == T_INT) {
            id_ok = 1;
            id = ev->id.i;
        } else if (ev->id.type == T_BIGINT || ev->id.type == T_TRUE || ev->id.type == T_FALSE) {
            return FALLBACK; /* a bool id would count as an int in Python */
        } else {
            id_ok = 0; /* not an int: the flow cannot link (as in the reference) */
        }
        PUT(o->f_is_f, (uint8_t)(ev->ph.s[0] == 'f'));
        PUT(o->f_pid, (int64_t)ev->pid.i);
        PUT(o->f_tid, (int64_t)ev->tid.i);
        PUT(o->f_ts, ts);
        PUT(o->f_id, id);
        PUT(o->f_id_ok, id_ok);
    }
    return OK;
}

/* The column buffers of the last scan, kept for the next one: a file's chunks are alike, so
 * after the first they are filled without regrowing (each regrowth was a realloc and a copy). */
static Out kept;

static void out_take(Out *o) {
    *o = kept;
    memset(&kept, 0, sizeof(kept));
    Buf *bufs[] = {&o->kind, &o->name, &o->ts, &o->dur, &o->pid, &o->tid, &o->corr, &o->ext, &o->dev,
                   &o->stream, &o->coll, &o->args_off, &o->args_len, &o->shape, &o->f_is_f, &o->f_pid,
                   &o->f_tid, &o->f_ts, &o->f_id, &o->f_id_ok, &o->dims};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) bufs[i]->len = 0;
    memset(&o->names, 0, sizeof(o->names));
    memset(&o->shapes, 0, sizeof(o->shapes));
}

static void out_free(Out *o) {
    table_free(&o->names);
    table_free(&o->shapes);
    Out old = kept;
    kept = *o; /* the buffers stay allocated for the next scan */
    memset(&kept.names, 0, sizeof(kept.names));
    memset(&kept.shapes, 0, sizeof(kept.shapes));
    Buf *bufs[] = {&old.kind, &old.name, &old.ts, &old.dur, &old.pid, &old.tid, &old.corr, &old.ext, &old.dev,
                   &old.stream, &old.coll, &old.args_off, &old.args_len, &old.shape, &old.f_is_f, &old.f_pid,
                   &old.f_tid, &old.f_ts, &old.f_id, &old.f_id_ok, &old.dims};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) buf_free(bufs[i]);
}

static PyObject *as_bytes(Buf *b) { return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len); }

/* ---------------------------------------------------------------- module functions */
static PyObject *fast_configure(PyObject *self, PyObject *args) {
    PyObject *categories, *gpu;
    int shape;
    if (!PyArg_ParseTuple(args, "O!O!i", &PyDict_Type, &categories, &PyTuple_Type, &gpu, &shape)) return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int n = 0;
    while (PyDict_Next(categories, &pos, &key, &value)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(key, &len);
        if (!s) return NULL;
        long code = PyLong_AsLong(value);
        if (code == -1 && PyErr_Occurred()) return NULL;
        if (n >= MAX_CATS || len >= 64 || code < 0 || code > 127) {
            PyErr_SetString(PyExc_ValueError, "category table too large");
            return NULL;
        }
        memcpy(cats[n].name, s, (size_t)len);
        cats[n].len = len;
        cats[n].code = (int8_t)code;
        n++;
    }
    n_cats = n;
    memset(gpu_kind, 0, sizeof(gpu_kind));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(gpu); i++) {
        long code = PyLong_AsLong(PyTuple_GET_ITEM(gpu, i));
        if (code < 0 || code > 255) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad kind code");
            return NULL;
        }
        gpu_kind[code] = 1;
    }
    shape_kind = shape;
    Py_RETURN_NONE;
}

static PyObject *fast_scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &stop)) return NULL;
    if (start < 0 || stop > view.len || start > stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad range");
        return NULL;
    }
    Out o;
    out_take(&o);
    Buf shape_text = {0}, esc = {0};
    PyObject *result = NULL;
    int r = OK;
    if (table_init(&o.names) < 0 || table_init(&o.shapes) < 0) {
        r = ERROR;
        goto done;
    }
    const unsigned char *base = (const unsigned char *)view.buf + start;
    P ps = {base, (const unsigned char *)view.buf + stop, base};
    Py_ssize_t events = 0;
    Ev ev;
    skip_ws(&ps);
    for (;;) {
        if ((r = scan_event(&ps, &ev, &o.dims)) != OK) goto done;
        events++;
        size_t rows_before = o.kind.len;
        if ((r = emit(&o, &ev, base, &esc)) != OK) goto done;
        if (o.kind.len > rows_before) {
            int32_t *sid = (int32_t *)(o.shape.data + o.shape.len - sizeof(int32_t));
            if (*sid == -3) {
                /* simple Input Dims: intern their text (kept in shape_text) */
                size_t off = shape_text.len;
                if (buf_put(&shape_text, o.dims.data, o.dims.len) < 0) {
                    r = ERROR;
                    goto done;
                }
                int32_t id = table_lookup(&o.shapes, shape_text.data, off, (Py_ssize_t)o.dims.len, make_shape, NULL);
                if (id < 0) {
                    r = ERROR;
                    goto done;
                }
                /* a known shape: its text need not be kept twice */
                if (PyList_GET_SIZE(o.shapes.values) - 1 != id) shape_text.len = off;
                sid = (int32_t *)(o.shape.data + o.shape.len - sizeof(int32_t));
                *sid = id;
            }
        }
        skip_ws(&ps);
        if (ps.p >= ps.end) break;
        if (*ps.p != ',') {
            r = FALLBACK;
            goto done;
        }
        ps.p++;
        skip_ws(&ps);
    }
    result = Py_BuildValue(
        "{s:n,s:N,s:N,s:O,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:O,s:N,s:N,s:N,s:N,s:N,s:N}",
        "events", events, "kind", as_bytes(&o.kind), "name", as_bytes(&o.name), "names", o.names.values,
        "ts", as_bytes(&o.ts), "dur", as_bytes(&o.dur), "pid", as_bytes(&o.pid), "tid", as_bytes(&o.tid),
        "correlation", as_bytes(&o.corr), "external_id", as_bytes(&o.ext), "device", as_bytes(&o.dev),
        "stream", as_bytes(&o.stream), "coll", as_bytes(&o.coll), "args_off", as_bytes(&o.args_off),
        "args_len", as_bytes(&o.args_len), "shape", as_bytes(&o.shape), "shapes", o.shapes.values,
        "flow_is_f", as_bytes(&o.f_is_f), "flow_pid", as_bytes(&o.f_pid), "flow_tid", as_bytes(&o.f_tid),
        "flow_ts", as_bytes(&o.f_ts), "flow_id", as_bytes(&o.f_id), "flow_id_ok", as_bytes(&o.f_id_ok));
done:
    out_free(&o);
    buf_free(&shape_text);
    buf_free(&esc);
    PyBuffer_Release(&view);
    if (r == ERROR) {
        Py_XDECREF(result);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    if (r == FALLBACK) {
        Py_XDECREF(result);
        Py_RETURN_NONE;
    }
    return result;
}

/* prev_ge(end, new_segment) -> int64 positions: for each i the nearest j < i in the same segment
 * with end[j] >= end[i], or -1 (a monotonic stack; the containment parent once spans are sorted
 * by thread, start, longest first). */
static PyObject *fast_prev_ge(PyObject *self, PyObject *args) {
    Py_buffer e, seg;
    if (!PyArg_ParseTuple(args, "y*y*", &e, &seg)) return NULL;
    Py_ssize_t n = e.len / (Py_ssize_t)sizeof(int64_t);
    PyObject *out = NULL;
    int64_t *stack = NULL;
    if (seg.len != n) {
        PyErr_SetString(PyExc_ValueError, "end (int64) and new_segment (uint8) differ in length");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    stack = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!out || !stack) {
        Py_CLEAR(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    const int64_t *ev = (const int64_t *)e.buf;
    const uint8_t *sv = (const uint8_t *)seg.buf;
    int64_t *res = (int64_t *)PyBytes_AS_STRING(out);
    Py_ssize_t top = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sv[i]) top = 0;
        while (top > 0 && ev[stack[top - 1]] < ev[i]) top--;
        res[i] = top > 0 ? stack[top - 1] : -1;
        stack[top++] = i;
    }
done:
    free(stack);
    PyBuffer_Release(&e);
    PyBuffer_Release(&seg);
    return out;
}

static PyMethodDef methods[] = {
    {"prev_ge", fast_prev_ge, METH_VARARGS, "prev_ge(end, new_segment) -> int64 bytes: nearest earlier j with end[j] >= end[i]"},
    {"configure", fast_configure, METH_VARARGS, "configure(categories, gpu_kinds, shape_kind): category -> kind codes"},
    {"scan", fast_scan, METH_VARARGS, "scan(buffer, start, end) -> dict of column buffers, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kineto_fast", "Native fast path of the Kineto importer.", -1, methods};

/* Bump with any change to what scan() returns: kineto.py ignores a stale build (an old .so
 * left in the tree) whose version differs, and decodes with the reference path instead. */
#define SCANNER_VERSION 2

PyMODINIT_FUNC PyInit__kineto_fast(void) {
    init_tables();
    init_quick_keys();
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "VERSION", SCANNER_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
