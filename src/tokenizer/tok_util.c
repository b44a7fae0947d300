/*
 * tok_util.c — UTF-8 and Unicode helpers, GPT-2's byte map, piece lists, split behaviours,
 * PCRE2 patterns and the integer-pair hash map of the HF-exact tokenizer.
 */
#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "json.h"
#include "tok_private.h"

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

size_t tok_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    return 4;
}

size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = tok_utf8_len(u[0]);
    if (len > n) len = n; /* only reachable on invalid input; stays in bounds */
    static const uint8_t LEAD_MASK[5] = {0, 0xFF, 0x1F, 0x0F, 0x07};
    uint32_t c = u[0] & LEAD_MASK[len];
    for (size_t i = 1; i < len; i++) c = (c << 6) | (u[i] & 0x3Fu);
    *cp = c;
    return len;
}

size_t tok_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid sequence at s, or 0 with *bad = the length of the maximal invalid prefix
 * (the Unicode "maximal subpart" rule both Python and Rust follow). */
static size_t utf8_valid_at(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char c = s[0];
    *bad = 1;
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) return 0;
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h) return 0;
        *bad = i + 1;
    }
    return need;
}

bool tok_utf8_lossy(const char *s, size_t n, qw_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t bad, ok = utf8_valid_at(u + i, n - i, &bad);
        if (ok) {
            i += ok;
            continue;
        }
        if (i > run && !qw_buf_append(out, s + run, i - run)) return false;
        if (!qw_buf_append(out, "\xEF\xBF\xBD", 3)) return false;
        i += bad;
        run = i;
    }
    if (n > run && !qw_buf_append(out, s + run, n - run)) return false;
    if (!qw_buf_append(out, "", 0)) return false;
    return true;
}

bool tok_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t bad, ok = utf8_valid_at(u + i, n - i, &bad);
        if (!ok) return false;
        i += ok;
    }
    return true;
}

/* ---- character classes ---------------------------------------------------------------------- */

bool tok_is_whitespace(uint32_t cp) {
    if (cp < 0x80) return (cp >= 9 && cp <= 13) || cp == 32;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool tok_is_numeric(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool tok_is_word(uint32_t cp) {
    if (cp < 0x80) {
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    }
    if (cp == 0x200C || cp == 0x200D) return true; /* Join_Control is part of \w */
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}

bool tok_is_punctuation(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

/* ---- GPT-2 byte map ------------------------------------------------------------------------- */

static tok_bytemap g_bytemap;
static pthread_once_t g_bytemap_once = PTHREAD_ONCE_INIT;

static void bytemap_build(void) {
    tok_bytemap *m = &g_bytemap;
    for (int i = 0; i < 512; i++) m->dec[i] = -1;
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        uint32_t cp = printable ? (uint32_t)b : next++;
        m->enc_len[b] = (uint8_t)tok_utf8_put(cp, m->enc[b]);
        m->dec[cp] = (int16_t)b;
    }
}

const tok_bytemap *tok_bytemap_get(void) {
    pthread_once(&g_bytemap_once, bytemap_build); /* tokenizers may load on several threads */
    return &g_bytemap;
}

/* ---- piece lists ---------------------------------------------------------------------------- */

bool tok_list_push(tok_list *l, const char *s, size_t len, int32_t id, bool at_origin) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        tok_piece *v = qw_realloc_array(l->v, cap, sizeof *v);
        if (!v) return false;
        l->v = v;
        l->cap = cap;
    }
    size_t off = l->text.len;
    if (len && !qw_buf_append(&l->text, s, len)) return false;
    l->v[l->n++] = (tok_piece){off, len, id, at_origin};
    return true;
}

void tok_list_clear(tok_list *l) {
    l->n = 0;
    l->text.len = 0;
}

void tok_list_free(tok_list *l) {
    qw_buf_free(&l->text);
    qw_free(l->v);
    memset(l, 0, sizeof *l);
}

bool tok_spans_push(tok_spans *s, size_t start, size_t end, bool match) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        tok_span *v = qw_realloc_array(s->v, cap, sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (tok_span){start, end, match};
    return true;
}

void tok_spans_free(tok_spans *s) {
    qw_free(s->v);
    memset(s, 0, sizeof *s);
}

/* Rewrites spans in place into the pieces HF's NormalizedString::split keeps; `match` then
 * means "remove". */
static void apply_behavior(tok_spans *sp, tok_behavior behavior) {
    size_t w = 0;
    bool prev_match = false;
    switch (behavior) { /* the five behaviours are HF's enum, not a table of variants */
    case TOK_REMOVED:
        return;
    case TOK_ISOLATED:
        for (size_t i = 0; i < sp->n; i++) sp->v[i].match = false;
        return;
    case TOK_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            tok_span s = sp->v[i];
            if (w > 0 && s.match == prev_match) {
                sp->v[w - 1].end = s.end;
            } else {
                sp->v[w++] = (tok_span){s.start, s.end, false};
            }
            prev_match = s.match;
        }
        break;
    case TOK_MERGED_PREV:
        for (size_t i = 0; i < sp->n; i++) {
            tok_span s = sp->v[i];
            if (s.match && !prev_match && w > 0) {
                sp->v[w - 1].end = s.end;
            } else {
                sp->v[w++] = (tok_span){s.start, s.end, false};
            }
            prev_match = s.match;
        }
        break;
    case TOK_MERGED_NEXT: {
        /* walk backwards, writing from the end, then shift down */
        size_t r = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            tok_span s = sp->v[i];
            if (s.match && !prev_match && r < sp->n) {
                sp->v[r].start = s.start;
            } else {
                sp->v[--r] = (tok_span){s.start, s.end, false};
            }
            prev_match = s.match;
        }
        memmove(sp->v, sp->v + r, (sp->n - r) * sizeof *sp->v);
        w = sp->n - r;
        break;
    }
    }
    sp->n = w;
}

bool tok_split_emit(const char *s, size_t n, tok_spans *spans, tok_behavior behavior,
                    bool at_origin, tok_list *out) {
    (void)n;
    apply_behavior(spans, behavior);
    for (size_t i = 0; i < spans->n; i++) {
        tok_span sp = spans->v[i];
        if (sp.match || sp.end == sp.start) continue;
        if (!tok_list_push(out, s + sp.start, sp.end - sp.start, -1, at_origin && sp.start == 0)) {
            return false;
        }
    }
    return true;
}

/* ---- patterns ------------------------------------------------------------------------------- */

qw_status tok_pattern_compile(tok_pattern *p, const char *regex, size_t len, const char *key,
                              qw_error *err) {
    int code;
    PCRE2_SIZE off;
    p->re = pcre2_compile((PCRE2_SPTR)regex, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, (int64_t)off,
                          "%s: regex cannot be compiled at offset %zu: %s", key, (size_t)off,
                          (const char *)msg);
    }
    /* JIT is a speed-up only: when unavailable the interpreter gives the same matches */
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);
    p->md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!p->md) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", key);
    return QW_OK;
}

qw_status tok_pattern_parse(const json_t *v, const char *key, tok_pattern *p, qw_error *err) {
    const json_t *s = json_is_object(v) ? json_object_get(v, "String") : NULL;
    const json_t *r = json_is_object(v) ? json_object_get(v, "Regex") : NULL;
    if (s && json_is_string(s)) {
        p->literal = qw_strndup(json_string_value(s), json_string_length(s));
        p->literal_len = json_string_length(s);
        if (!p->literal) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", key);
        return QW_OK;
    }
    if (r && json_is_string(r)) {
        return tok_pattern_compile(p, json_string_value(r), json_string_length(r), key, err);
    }
    return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                      "%s: expected {\"String\": text} or {\"Regex\": text}", key);
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0 || nn > hn) return NULL;
    const char *end = h + hn - nn;
    for (const char *p = h; p <= end; p++) {
        p = memchr(p, nd[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, nd, nn) == 0) return p;
    }
    return NULL;
}

qw_status tok_pattern_spans(tok_pattern *p, const char *s, size_t n, bool invert, tok_spans *out,
                            qw_error *err) {
    out->n = 0;
    if (n == 0) {
        if (!tok_spans_push(out, 0, 0, invert)) goto oom;
        return QW_OK;
    }
    size_t prev = 0;
    if (!p->re) {
        /* an empty literal matches nothing useful; HF's escaped empty regex would match
         * everywhere, which no tokenizer uses */
        const char *at = s;
        while (p->literal_len && (at = find_bytes(at, n - (size_t)(at - s), p->literal,
                                                  p->literal_len)) != NULL) {
            size_t st = (size_t)(at - s), en = st + p->literal_len;
            if (st > prev && !tok_spans_push(out, prev, st, invert)) goto oom;
            if (!tok_spans_push(out, st, en, !invert)) goto oom;
            prev = en;
            at = s + en;
        }
    } else {
        size_t last_end = 0;
        bool have_last = false;
        size_t last_match_end = 0;
        while (last_end <= n) {
            int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK, p->md,
                                 NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return qw_fail(err, QW_ERR_INTERNAL, "regex match failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
            size_t st = ov[0], en = ov[1];
            if (st == en && have_last && last_match_end == en) {
                if (last_end >= n) break;
                last_end += tok_utf8_len((unsigned char)s[last_end]);
                continue;
            }
            last_end = en;
            have_last = true;
            last_match_end = en;
            if (st > prev && !tok_spans_push(out, prev, st, invert)) goto oom;
            if (!tok_spans_push(out, st, en, !invert)) goto oom;
            prev = en;
        }
    }
    if (prev < n && !tok_spans_push(out, prev, n, invert)) goto oom;
    return QW_OK;
oom:
    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory splitting text");
}

void tok_pattern_free(tok_pattern *p) {
    qw_free(p->literal);
    pcre2_match_data_free(p->md);
    pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

/* ---- pair map ------------------------------------------------------------------------------- */

static uint64_t pair_key(uint32_t a, uint32_t b) {
    return ((uint64_t)a + 1) << 32 | ((uint64_t)b + 1);
}

static size_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static bool pairmap_grow(tok_pairmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    tok_pairmap g = {qw_calloc(cap, sizeof(uint64_t)), qw_malloc_array(cap, sizeof(uint32_t)),
                     qw_malloc_array(cap, sizeof(int32_t)), cap, 0};
    if (!g.keys || !g.ranks || !g.vals) {
        tok_pairmap_free(&g);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = pair_hash(m->keys[i]) & (cap - 1);
        while (g.keys[j]) j = (j + 1) & (cap - 1);
        g.keys[j] = m->keys[i];
        g.ranks[j] = m->ranks[i];
        g.vals[j] = m->vals[i];
        g.count++;
    }
    tok_pairmap_free(m);
    *m = g;
    return true;
}

bool tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, int32_t val) {
    if ((m->count + 1) * 2 > m->cap && !pairmap_grow(m)) return false;
    uint64_t k = pair_key(a, b);
    size_t j = pair_hash(k) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->keys[j] == k) { /* a repeated merge takes its last rank, as HF's map does */
            m->ranks[j] = rank;
            m->vals[j] = val;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = k;
    m->ranks[j] = rank;
    m->vals[j] = val;
    m->count++;
    return true;
}

bool tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, int32_t *val) {
    if (!m->cap) return false;
    uint64_t k = pair_key(a, b);
    for (size_t j = pair_hash(k) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1)) {
        if (m->keys[j] == k) {
            if (rank) *rank = m->ranks[j];
            *val = m->vals[j];
            return true;
        }
    }
    return false;
}

void tok_pairmap_free(tok_pairmap *m) {
    qw_free(m->keys);
    qw_free(m->ranks);
    qw_free(m->vals);
    memset(m, 0, sizeof *m);
}

bool tok_ids_push(qw_token_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = qw_realloc_array(ids->ids, cap, sizeof *v);
        if (!v) return false;
        ids->ids = v;
        ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return true;
}

void qw_token_ids_free(qw_token_ids *ids) {
    if (!ids) return;
    qw_free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

/* ---- JSON fields ---------------------------------------------------------------------------- */

static const json_t *field_of(const json_t *o, const char *field) {
    const json_t *v = json_is_object(o) ? json_object_get(o, field) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

qw_status tok_json_bool(const json_t *o, const char *key, const char *field, bool def, bool *out,
                        qw_error *err) {
    const json_t *v = field_of(o, field);
    if (!v) {
        *out = def;
        return QW_OK;
    }
    if (!json_is_boolean(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: expected true or false", key,
                          field);
    }
    *out = json_is_true(v);
    return QW_OK;
}

qw_status tok_json_str(const json_t *o, const char *key, const char *field, bool required,
                       const char **out, size_t *len, qw_error *err) {
    const json_t *v = field_of(o, field);
    *out = NULL;
    if (len) *len = 0;
    if (!v) {
        if (!required) return QW_OK;
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: missing", key, field);
    }
    if (!json_is_string(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: expected a string", key, field);
    }
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return QW_OK;
}

qw_status tok_json_uint(const json_t *o, const char *key, const char *field, size_t def,
                        size_t *out, qw_error *err) {
    const json_t *v = field_of(o, field);
    if (!v) {
        *out = def;
        return QW_OK;
    }
    int64_t i;
    if (!qw_json_integer_value(v, &i) || i < 0 || i > (int64_t)INT32_MAX) {
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1,
                          "%s.%s: expected a non-negative integer", key, field);
    }
    *out = (size_t)i;
    return QW_OK;
}

qw_status tok_json_array(const json_t *o, const char *key, const char *field,
                         const json_t **out, qw_error *err) {
    const json_t *v = field_of(o, field);
    if (!v || !json_is_array(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: expected an array", key, field);
    }
    *out = v;
    return QW_OK;
}
