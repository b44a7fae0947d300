/*
 * tok_text.c — normalizers and pre-tokenizers of tokenizer.json, read from their JSON objects and
 * applied as HF `tokenizers` applies them:
 *
 *   normalizer     = {"type": "NFC"|"NFD"|"NFKC"|"NFKD"|"Lowercase"}
 *                  | {"type": "Strip", "strip_left": bool, "strip_right": bool}
 *                  | {"type": "Prepend", "prepend": str}
 *                  | {"type": "Replace", "pattern": {"String"|"Regex": str}, "content": str}
 *                  | {"type": "ByteLevel"} | {"type": "Sequence", "normalizers": [normalizer]}
 *   pre_tokenizer  = {"type": "Split", "pattern": {...}, "behavior": str, "invert": bool}
 *                  | {"type": "ByteLevel", "add_prefix_space": bool, "use_regex": bool}
 *                  | {"type": "Metaspace", "replacement": char, "prepend_scheme": str,
 *                     "split": bool} (legacy: "add_prefix_space")
 *                  | {"type": "Digits", "individual_digits": bool}
 *                  | {"type": "Whitespace"|"WhitespaceSplit"|"BertPreTokenizer"}
 *                  | {"type": "Punctuation", "behavior": str}
 *                  | {"type": "Sequence", "pretokenizers": [pre_tokenizer]}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_private.h"

/* GPT-2's pre-tokenizer regex, built into HF's ByteLevel pre-tokenizer. */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define OOM(key) qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", key)

/* ---- normalizers ---------------------------------------------------------------------------- */

/*
 * Code points that utf8proc (Unicode 15) normalizes but HF's normalizer leaves alone: its tables
 * are older (about Unicode 12), so it does not know these characters' decompositions or
 * combining classes (found by running HF's NFC/NFD/NFKC/NFKD and utf8proc over every code point,
 * plus a reordering probe for combining marks; 0x11930 and 0x11935 are the parts of a new
 * composition). HF treats them as plain starters, so text is normalized in runs between them and
 * they are copied as they are.
 */
static const uint32_t HF_UNKNOWN[][2] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},
    {0xC3C, 0xC3C},     {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},
    {0xA82C, 0xA82C},   {0xAB69, 0xAB69},   {0x10781, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x11935, 0x11935},
    {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E030, 0x1E06D}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

static bool hf_unknown(uint32_t cp) {
    if (cp < HF_UNKNOWN[0][0]) return false;
    size_t lo = 0, hi = sizeof HF_UNKNOWN / sizeof HF_UNKNOWN[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < HF_UNKNOWN[mid][0]) hi = mid;
        else if (cp > HF_UNKNOWN[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

static qw_status utf8proc_run(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                              qw_error *err) {
    if (len == 0) return QW_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      (utf8proc_option_t)n->utf8proc_options);
    if (r < 0) {
        return qw_fail(err, QW_ERR_INTERNAL, "%s normalization failed: %s", n->kind->name,
                       utf8proc_errmsg(r));
    }
    bool ok = qw_buf_append(out, dst, (size_t)r);
    free(dst);
    return ok ? QW_OK : OOM("normalizer");
}

static qw_status norm_unicode(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                              qw_error *err) {
    size_t run = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = tok_utf8_next(s + i, len - i, &cp);
        if (cp >= 0x7FD && hf_unknown(cp)) {
            QW_TRY(utf8proc_run(n, s + run, i - run, out, err));
            if (!qw_buf_append(out, s + i, l)) return OOM("normalizer");
            run = i + l;
        }
        i += l;
    }
    return utf8proc_run(n, s + run, len - run, out, err);
}

static qw_status norm_lowercase(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                                qw_error *err) {
    (void)n;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = tok_utf8_next(s + i, len - i, &cp);
        char tmp[8];
        size_t tl;
        if (cp == 0x130) { /* the one code point whose lowercase is two: i + combining dot */
            memcpy(tmp, "i\xCC\x87", 3);
            tl = 3;
        } else {
            tl = tok_utf8_put((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), tmp);
        }
        if (!qw_buf_append(out, tmp, tl)) return OOM("Lowercase");
        i += l;
    }
    return QW_OK;
}

static size_t lead_space(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t l = tok_utf8_next(s + i, len - i, &cp);
        if (!tok_is_whitespace(cp)) break;
        i += l;
    }
    return i;
}

static size_t trail_space_start(const char *s, size_t len) {
    size_t end = len;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        uint32_t cp;
        tok_utf8_next(s + st, end - st, &cp);
        if (!tok_is_whitespace(cp)) break;
        end = st;
    }
    return end;
}

static qw_status norm_strip(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                            qw_error *err) {
    size_t a = n->strip_left ? lead_space(s, len) : 0;
    size_t b = n->strip_right ? trail_space_start(s, len) : len;
    if (b < a) b = a;
    return qw_buf_append(out, s + a, b - a) ? QW_OK : OOM("Strip");
}

static qw_status norm_prepend(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                              qw_error *err) {
    if (len && !qw_buf_append(out, n->str, n->str_len)) return OOM("Prepend");
    return qw_buf_append(out, s, len) ? QW_OK : OOM("Prepend");
}

static qw_status norm_replace(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                              qw_error *err) {
    tok_spans sp = {0};
    tok_pattern pat = n->pattern; /* match data is scratch; the copy shares it */
    qw_status st = tok_pattern_spans(&pat, s, len, false, &sp, err);
    for (size_t i = 0; st == QW_OK && i < sp.n; i++) {
        const char *src = sp.v[i].match ? n->str : s + sp.v[i].start;
        size_t l = sp.v[i].match ? n->str_len : sp.v[i].end - sp.v[i].start;
        if (!qw_buf_append(out, src, l)) st = OOM("Replace");
    }
    tok_spans_free(&sp);
    return st;
}

static qw_status norm_bytelevel(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                                qw_error *err) {
    (void)n;
    const tok_bytemap *bm = tok_bytemap_get();
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        if (!qw_buf_append(out, bm->enc[b], bm->enc_len[b])) return OOM("ByteLevel");
    }
    return QW_OK;
}

static qw_status norm_sequence(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                               qw_error *err) {
    qw_buf a = {0}, b = {0};
    qw_status st = QW_OK;
    const char *cur = s;
    size_t cur_len = len;
    for (size_t i = 0; i < n->n_children && st == QW_OK; i++) {
        qw_buf *dst = (i % 2 == 0) ? &a : &b;
        dst->len = 0;
        if (!qw_buf_append(dst, "", 0)) {
            st = OOM("Sequence");
            break;
        }
        st = tok_norm_apply(&n->children[i], cur, cur_len, dst, err);
        cur = dst->data;
        cur_len = dst->len;
    }
    if (st == QW_OK && !qw_buf_append(out, cur, cur_len)) st = OOM("Sequence");
    qw_buf_free(&a);
    qw_buf_free(&b);
    return st;
}

static const tok_norm_kind NORM_KINDS[] = {
    {"NFC", norm_unicode},        {"NFD", norm_unicode},         {"NFKC", norm_unicode},
    {"NFKD", norm_unicode},       {"Lowercase", norm_lowercase}, {"Strip", norm_strip},
    {"Prepend", norm_prepend},    {"Replace", norm_replace},     {"ByteLevel", norm_bytelevel},
    {"Sequence", norm_sequence},
};

/* utf8proc options of the four Unicode forms, in NORM_KINDS' first four rows' order */
static const int UNICODE_FORMS[] = {
    UTF8PROC_STABLE | UTF8PROC_COMPOSE,
    UTF8PROC_STABLE | UTF8PROC_DECOMPOSE,
    UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
    UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
};

qw_status tok_norm_apply(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                         qw_error *err) {
    return n->kind->apply(n, s, len, out, err);
}

static qw_status type_of(const json_t *v, const char *key, const char **type, qw_error *err) {
    if (!json_is_object(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected an object", key);
    }
    return tok_json_str(v, key, "type", true, type, NULL, err);
}

qw_status tok_norm_parse(const json_t *v, const char *key, tok_norm *n, qw_error *err) {
    const char *type;
    QW_TRY(type_of(v, key, &type, err));
    size_t k = 0, nk = sizeof NORM_KINDS / sizeof NORM_KINDS[0];
    while (k < nk && strcmp(NORM_KINDS[k].name, type) != 0) k++;
    if (k == nk) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                          "%s: normalizer type \"%s\" is not supported", key, type);
    }
    n->kind = &NORM_KINDS[k];
    if (k < 4) n->utf8proc_options = UNICODE_FORMS[k];
    const char *str = NULL;
    size_t str_len = 0;
    if (n->kind->apply == norm_strip) {
        QW_TRY(tok_json_bool(v, key, "strip_left", true, &n->strip_left, err));
        QW_TRY(tok_json_bool(v, key, "strip_right", true, &n->strip_right, err));
    } else if (n->kind->apply == norm_prepend) {
        QW_TRY(tok_json_str(v, key, "prepend", true, &str, &str_len, err));
    } else if (n->kind->apply == norm_replace) {
        QW_TRY(tok_json_str(v, key, "content", true, &str, &str_len, err));
        char sub[256];
        snprintf(sub, sizeof sub, "%s.pattern", key);
        QW_TRY(tok_pattern_parse(json_object_get(v, "pattern"), sub, &n->pattern, err));
    } else if (n->kind->apply == norm_sequence) {
        const json_t *arr;
        QW_TRY(tok_json_array(v, key, "normalizers", &arr, err));
        n->children = qw_calloc(json_array_size(arr) + 1, sizeof *n->children);
        if (!n->children) return OOM(key);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", key, i);
            n->n_children = i + 1;
            QW_TRY(tok_norm_parse(json_array_get(arr, i), sub, &n->children[i], err));
        }
    }
    if (str) {
        n->str = qw_strndup(str, str_len);
        n->str_len = str_len;
        if (!n->str) return OOM(key);
    }
    return QW_OK;
}

void tok_norm_free(tok_norm *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_children; i++) tok_norm_free(&n->children[i]);
    qw_free(n->children);
    qw_free(n->str);
    tok_pattern_free(&n->pattern);
    memset(n, 0, sizeof *n);
}

/* ---- pre-tokenizers ------------------------------------------------------------------------- */

#define EMIT_OOM qw_fail(err, QW_ERR_NO_MEMORY, "out of memory pre-tokenizing")

static qw_status pre_split(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                           qw_error *err) {
    QW_TRY(tok_pattern_spans(&p->pattern, s, len, p->invert, &p->spans, err));
    return tok_split_emit(s, len, &p->spans, p->behavior, at_origin, out) ? QW_OK : EMIT_OOM;
}

/* Spans of single characters for which `pred` holds, as HF's Fn(char)->bool pattern. */
static bool char_spans(const char *s, size_t len, bool (*pred)(uint32_t), tok_spans *sp) {
    sp->n = 0;
    size_t last = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = tok_utf8_next(s + i, len - i, &cp);
        if (pred(cp)) {
            if (last < i && !tok_spans_push(sp, last, i, false)) return false;
            if (!tok_spans_push(sp, i, i + l, true)) return false;
            last = i + l;
        }
        i += l;
    }
    if (last < len && !tok_spans_push(sp, last, len, false)) return false;
    return true;
}

static qw_status pre_digits(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                            qw_error *err) {
    if (!char_spans(s, len, tok_is_numeric, &p->spans)) return EMIT_OOM;
    tok_behavior b = p->individual_digits ? TOK_ISOLATED : TOK_CONTIGUOUS;
    return tok_split_emit(s, len, &p->spans, b, at_origin, out) ? QW_OK : EMIT_OOM;
}

static bool is_bert_punct(uint32_t cp) {
    return (cp < 0x80 && ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
                          (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126))) ||
           tok_is_punctuation(cp);
}

static qw_status pre_punct(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                           qw_error *err) {
    if (!char_spans(s, len, is_bert_punct, &p->spans)) return EMIT_OOM;
    return tok_split_emit(s, len, &p->spans, p->behavior, at_origin, out) ? QW_OK : EMIT_OOM;
}

static qw_status pre_wsplit(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                            qw_error *err) {
    if (!char_spans(s, len, tok_is_whitespace, &p->spans)) return EMIT_OOM;
    return tok_split_emit(s, len, &p->spans, TOK_REMOVED, at_origin, out) ? QW_OK : EMIT_OOM;
}

/* Whitespace: runs of \w and runs of [^\w\s], whitespace dropped (HF's \w+|[^\w\s]+). */
static qw_status pre_whitespace(tok_pre *p, const char *s, size_t len, bool at_origin,
                                tok_list *out, qw_error *err) {
    (void)p;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t l = tok_utf8_next(s + i, len - i, &cp);
        if (tok_is_whitespace(cp) && !tok_is_word(cp)) {
            i += l;
            continue;
        }
        bool word = tok_is_word(cp);
        size_t j = i + l;
        while (j < len) {
            uint32_t c2;
            size_t l2 = tok_utf8_next(s + j, len - j, &c2);
            bool w2 = tok_is_word(c2);
            if (w2 != word || (!w2 && tok_is_whitespace(c2))) break;
            j += l2;
        }
        if (!tok_list_push(out, s + i, j - i, -1, at_origin && i == 0)) return EMIT_OOM;
        i = j;
    }
    return QW_OK;
}

static qw_status pre_bert(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                          qw_error *err) {
    tok_list_clear(&p->s0);
    QW_TRY(pre_wsplit(p, s, len, at_origin, &p->s0, err));
    for (size_t i = 0; i < p->s0.n; i++) {
        if (!char_spans(tok_list_str(&p->s0, i), p->s0.v[i].len, is_bert_punct, &p->spans) ||
            !tok_split_emit(tok_list_str(&p->s0, i), p->s0.v[i].len, &p->spans, TOK_ISOLATED,
                            p->s0.v[i].at_origin, out)) {
            return EMIT_OOM;
        }
    }
    return QW_OK;
}

/* Appends one piece: s with every byte replaced by its GPT-2 character. */
static qw_status bytelevel_map(const char *s, size_t len, bool at_origin, tok_list *out,
                               qw_error *err) {
    const tok_bytemap *bm = tok_bytemap_get();
    if (!tok_list_push(out, "", 0, -1, at_origin)) return EMIT_OOM;
    size_t off = out->text.len;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        if (!qw_buf_append(&out->text, bm->enc[b], bm->enc_len[b])) return EMIT_OOM;
    }
    out->v[out->n - 1].off = off;
    out->v[out->n - 1].len = out->text.len - off;
    return QW_OK;
}

static qw_status pre_bytelevel(tok_pre *p, const char *s, size_t len, bool at_origin,
                               tok_list *out, qw_error *err) {
    qw_buf pref = {0};
    if (p->add_prefix_space && (len == 0 || s[0] != ' ')) {
        if (!qw_buf_append(&pref, " ", 1) || !qw_buf_append(&pref, s, len)) {
            qw_buf_free(&pref);
            return EMIT_OOM;
        }
        s = pref.data;
        len = pref.len;
    }
    qw_status st = QW_OK;
    if (!p->use_regex) {
        st = len ? bytelevel_map(s, len, at_origin, out, err) : QW_OK;
    } else {
        st = tok_pattern_spans(&p->pattern, s, len, false, &p->spans, err);
        for (size_t i = 0; st == QW_OK && i < p->spans.n; i++) {
            tok_span sp = p->spans.v[i];
            if (sp.end > sp.start) {
                st = bytelevel_map(s + sp.start, sp.end - sp.start, at_origin && sp.start == 0,
                                   out, err);
            }
        }
    }
    qw_buf_free(&pref);
    return st;
}

static qw_status pre_metaspace(tok_pre *p, const char *s, size_t len, bool at_origin,
                               tok_list *out, qw_error *err) {
    qw_buf *b = &p->s1.text;
    b->len = 0;
    bool starts = len >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0;
    bool prepend =
        p->prepend == TOK_PREPEND_ALWAYS || (p->prepend == TOK_PREPEND_FIRST && at_origin);
    if (!starts && prepend) {
        /* replacing spaces first cannot create a leading replacement unless s starts with ' ' */
        starts = len > 0 && s[0] == ' ';
        if (!starts && !qw_buf_append(b, p->repl, p->repl_len)) return EMIT_OOM;
    }
    for (size_t i = 0; i < len; i++) {
        bool ok = s[i] == ' ' ? qw_buf_append(b, p->repl, p->repl_len) : qw_buf_append(b, s + i, 1);
        if (!ok) return EMIT_OOM;
    }
    const char *t = b->data ? b->data : "";
    size_t tl = b->len;
    if (!p->split) {
        return tl == 0 || tok_list_push(out, t, tl, -1, at_origin) ? QW_OK : EMIT_OOM;
    }
    /* split before every replacement character (MergedWithNext) */
    p->spans.n = 0;
    size_t last = 0;
    for (size_t i = 0; i + p->repl_len <= tl;) {
        if (memcmp(t + i, p->repl, p->repl_len) == 0) {
            if (last < i && !tok_spans_push(&p->spans, last, i, false)) return EMIT_OOM;
            if (!tok_spans_push(&p->spans, i, i + p->repl_len, true)) return EMIT_OOM;
            i += p->repl_len;
            last = i;
        } else {
            i += tok_utf8_len((unsigned char)t[i]);
        }
    }
    if (last < tl && !tok_spans_push(&p->spans, last, tl, false)) return EMIT_OOM;
    return tok_split_emit(t, tl, &p->spans, TOK_MERGED_NEXT, at_origin, out) ? QW_OK : EMIT_OOM;
}

static qw_status pre_sequence(tok_pre *p, const char *s, size_t len, bool at_origin,
                              tok_list *out, qw_error *err) {
    if (p->n_children == 0) {
        return len == 0 || tok_list_push(out, s, len, -1, at_origin) ? QW_OK : EMIT_OOM;
    }
    if (p->n_children == 1) return tok_pre_apply(&p->children[0], s, len, at_origin, out, err);
    tok_list *cur = &p->s0, *nxt = &p->s1;
    tok_list_clear(cur);
    QW_TRY(tok_pre_apply(&p->children[0], s, len, at_origin, cur, err));
    for (size_t c = 1; c < p->n_children; c++) {
        tok_list *dst = c + 1 == p->n_children ? out : nxt;
        if (dst != out) tok_list_clear(dst);
        for (size_t i = 0; i < cur->n; i++) {
            QW_TRY(tok_pre_apply(&p->children[c], tok_list_str(cur, i), cur->v[i].len,
                                 cur->v[i].at_origin, dst, err));
        }
        tok_list *t = cur;
        cur = nxt;
        nxt = t;
    }
    return QW_OK;
}

static const tok_pre_kind PRE_KINDS[] = {
    {"Split", pre_split},           {"ByteLevel", pre_bytelevel},
    {"Metaspace", pre_metaspace},   {"Digits", pre_digits},
    {"Whitespace", pre_whitespace}, {"WhitespaceSplit", pre_wsplit},
    {"Punctuation", pre_punct},     {"BertPreTokenizer", pre_bert},
    {"Sequence", pre_sequence},
};

qw_status tok_pre_apply(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                        qw_error *err) {
    return p->kind->apply(p, s, len, at_origin, out, err);
}

typedef struct name_value {
    const char *name;
    int value;
} name_value;

static const name_value BEHAVIORS[] = {
    {"Removed", TOK_REMOVED},
    {"Isolated", TOK_ISOLATED},
    {"MergedWithPrevious", TOK_MERGED_PREV},
    {"MergedWithNext", TOK_MERGED_NEXT},
    {"Contiguous", TOK_CONTIGUOUS},
};

static const name_value PREPEND_SCHEMES[] = {
    {"always", TOK_PREPEND_ALWAYS},
    {"first", TOK_PREPEND_FIRST},
    {"never", TOK_PREPEND_NEVER},
};

static qw_status enum_field(const json_t *v, const char *key, const char *field,
                            const name_value *table, size_t n, int def, int *out, qw_error *err) {
    const char *s;
    QW_TRY(tok_json_str(v, key, field, false, &s, NULL, err));
    if (!s) {
        *out = def;
        return QW_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, s) == 0) {
            *out = table[i].value;
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: unknown value \"%s\"", key, field,
                      s);
}

qw_status tok_pre_parse(const json_t *v, const char *key, tok_pre *p, qw_error *err) {
    const char *type;
    QW_TRY(type_of(v, key, &type, err));
    size_t k = 0, nk = sizeof PRE_KINDS / sizeof PRE_KINDS[0];
    while (k < nk && strcmp(PRE_KINDS[k].name, type) != 0) k++;
    if (k == nk) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                          "%s: pre-tokenizer type \"%s\" is not supported", key, type);
    }
    p->kind = &PRE_KINDS[k];
    int e = 0;
    char sub[256];
    if (p->kind->apply == pre_split) {
        QW_TRY(enum_field(v, key, "behavior", BEHAVIORS, 5, -1, &e, err));
        if (e < 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "behavior", -1, "%s.behavior: missing", key);
        }
        p->behavior = (tok_behavior)e;
        QW_TRY(tok_json_bool(v, key, "invert", false, &p->invert, err));
        snprintf(sub, sizeof sub, "%s.pattern", key);
        QW_TRY(tok_pattern_parse(json_object_get(v, "pattern"), sub, &p->pattern, err));
    } else if (p->kind->apply == pre_punct) {
        QW_TRY(enum_field(v, key, "behavior", BEHAVIORS, 5, TOK_ISOLATED, &e, err));
        p->behavior = (tok_behavior)e;
    } else if (p->kind->apply == pre_digits) {
        QW_TRY(tok_json_bool(v, key, "individual_digits", false, &p->individual_digits, err));
    } else if (p->kind->apply == pre_bytelevel) {
        QW_TRY(tok_json_bool(v, key, "add_prefix_space", true, &p->add_prefix_space, err));
        QW_TRY(tok_json_bool(v, key, "use_regex", true, &p->use_regex, err));
        if (p->use_regex) {
            snprintf(sub, sizeof sub, "%s (GPT-2 regex)", key);
            QW_TRY(tok_pattern_compile(&p->pattern, GPT2_REGEX, sizeof GPT2_REGEX - 1, sub, err));
        }
    } else if (p->kind->apply == pre_metaspace) {
        const char *r;
        size_t rl;
        QW_TRY(tok_json_str(v, key, "replacement", true, &r, &rl, err));
        uint32_t cp;
        if (rl == 0 || rl > 4 || !tok_utf8_valid(r, rl) || tok_utf8_next(r, rl, &cp) != rl) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "replacement", -1,
                              "%s.replacement: expected one character", key);
        }
        memcpy(p->repl, r, rl);
        p->repl_len = rl;
        QW_TRY(tok_json_bool(v, key, "split", true, &p->split, err));
        bool aps;
        QW_TRY(tok_json_bool(v, key, "add_prefix_space", true, &aps, err));
        QW_TRY(enum_field(v, key, "prepend_scheme", PREPEND_SCHEMES, 3,
                          aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER, &e, err));
        p->prepend = (tok_prepend)e;
    } else if (p->kind->apply == pre_sequence) {
        const json_t *arr;
        QW_TRY(tok_json_array(v, key, "pretokenizers", &arr, err));
        p->children = qw_calloc(json_array_size(arr) + 1, sizeof *p->children);
        if (!p->children) return OOM(key);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", key, i);
            p->n_children = i + 1;
            QW_TRY(tok_pre_parse(json_array_get(arr, i), sub, &p->children[i], err));
        }
    }
    return QW_OK;
}

void tok_pre_free(tok_pre *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_children; i++) tok_pre_free(&p->children[i]);
    qw_free(p->children);
    tok_pattern_free(&p->pattern);
    tok_spans_free(&p->spans);
    tok_list_free(&p->s0);
    tok_list_free(&p->s1);
    memset(p, 0, sizeof *p);
}
