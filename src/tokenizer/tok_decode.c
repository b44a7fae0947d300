/*
 * tok_decode.c — ids back to text: ids -> token strings (added tokens first, then the model's
 * vocabulary; special ones dropped on request) -> the decoder chain -> one string, as HF's
 * Tokenizer::decode. Decoders of tokenizer.json:
 *
 *   {"type": "ByteLevel"} | {"type": "ByteFallback"} | {"type": "Fuse"}
 *   {"type": "Strip", "content": char, "start": n, "stop": n}
 *   {"type": "Replace", "pattern": {"String"|"Regex": s}, "content": s}
 *   {"type": "Metaspace", "replacement": char, "prepend_scheme": s | "add_prefix_space": bool}
 *   {"type": "BPEDecoder", "suffix": s}
 *   {"type": "Sequence", "decoders": [decoder, ...]}
 */
#include <stdio.h>
#include <string.h>

#include "tok_private.h"

#define DEC_OOM qw_fail(err, QW_ERR_NO_MEMORY, "out of memory decoding")

static qw_status dec_bytelevel(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    (void)d;
    const tok_bytemap *bm = tok_bytemap_get();
    qw_buf raw = {0};
    qw_status st = QW_OK;
    for (size_t i = 0; i < in->n && st == QW_OK; i++) {
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len, mark = raw.len;
        bool all = true;
        for (size_t k = 0; k < n && all;) {
            uint32_t cp;
            k += tok_utf8_next(s + k, n - k, &cp);
            if (cp >= 512 || bm->dec[cp] < 0) {
                all = false;
            } else {
                char b = (char)bm->dec[cp];
                if (!qw_buf_append(&raw, &b, 1)) st = DEC_OOM;
            }
        }
        if (!all) { /* a token with a character outside the map is kept as its own bytes */
            raw.len = mark;
            if (!qw_buf_append(&raw, s, n)) st = DEC_OOM;
        }
    }
    qw_buf fixed = {0};
    if (st == QW_OK && !tok_utf8_lossy(raw.data ? raw.data : "", raw.len, &fixed)) st = DEC_OOM;
    if (st == QW_OK && !tok_list_push(out, fixed.data, fixed.len, -1, false)) st = DEC_OOM;
    qw_buf_free(&raw);
    qw_buf_free(&fixed);
    return st;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static qw_status flush_bytes(qw_buf *bytes, tok_list *out, qw_error *err) {
    if (!bytes->len) return QW_OK;
    bool ok = true;
    if (tok_utf8_valid(bytes->data, bytes->len)) {
        ok = tok_list_push(out, bytes->data, bytes->len, -1, false);
    } else { /* one U+FFFD per byte, not per invalid sequence: HF's ByteFallback */
        for (size_t i = 0; i < bytes->len && ok; i++) {
            ok = tok_list_push(out, "\xEF\xBF\xBD", 3, -1, false);
        }
    }
    bytes->len = 0;
    return ok ? QW_OK : DEC_OOM;
}

static qw_status dec_bytefallback(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    (void)d;
    qw_buf bytes = {0};
    qw_status st = QW_OK;
    for (size_t i = 0; i < in->n && st == QW_OK; i++) {
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len;
        if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && hexval(s[3]) >= 0 &&
            hexval(s[4]) >= 0) {
            char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            if (!qw_buf_append(&bytes, &b, 1)) st = DEC_OOM;
            continue;
        }
        st = flush_bytes(&bytes, out, err);
        if (st == QW_OK && !tok_list_push(out, s, n, -1, false)) st = DEC_OOM;
    }
    if (st == QW_OK) st = flush_bytes(&bytes, out, err);
    qw_buf_free(&bytes);
    return st;
}

static qw_status dec_fuse(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    (void)d;
    const char *s = in->text.data ? in->text.data : "";
    /* pieces are laid out in order in the text buffer, but may not cover it: copy each */
    qw_buf all = {0};
    bool ok = true;
    for (size_t i = 0; i < in->n && ok; i++) {
        ok = qw_buf_append(&all, s + in->v[i].off, in->v[i].len);
    }
    ok = ok && tok_list_push(out, all.data, all.len, -1, false);
    qw_buf_free(&all);
    return ok ? QW_OK : DEC_OOM;
}

static qw_status dec_strip(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len, a = 0, b = n;
        for (size_t k = 0; k < d->start && a < n; k++) {
            uint32_t cp;
            size_t l = tok_utf8_next(s + a, n - a, &cp);
            if (cp != d->content) break;
            a += l;
        }
        for (size_t k = 0; k < d->stop && b > a; k++) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
            uint32_t cp;
            tok_utf8_next(s + st, b - st, &cp);
            if (cp != d->content) break;
            b = st;
        }
        if (!tok_list_push(out, s + a, b - a, -1, false)) return DEC_OOM;
    }
    return QW_OK;
}

static qw_status dec_replace(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    tok_spans sp = {0};
    tok_pattern pat = d->pattern; /* shares the match scratch */
    qw_buf b = {0};
    qw_status st = QW_OK;
    for (size_t i = 0; i < in->n && st == QW_OK; i++) {
        const char *s = tok_list_str(in, i);
        st = tok_pattern_spans(&pat, s, in->v[i].len, false, &sp, err);
        b.len = 0;
        for (size_t k = 0; st == QW_OK && k < sp.n; k++) {
            tok_span v = sp.v[k];
            bool ok = v.match ? qw_buf_append(&b, d->str, d->str_len)
                              : qw_buf_append(&b, s + v.start, v.end - v.start);
            if (!ok) st = DEC_OOM;
        }
        if (st == QW_OK && !tok_list_push(out, b.data, b.len, -1, false)) st = DEC_OOM;
    }
    tok_spans_free(&sp);
    qw_buf_free(&b);
    return st;
}

static qw_status dec_metaspace(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    qw_buf b = {0};
    bool ok = true;
    for (size_t i = 0; i < in->n && ok; i++) {
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len;
        b.len = 0;
        for (size_t k = 0; k < n && ok;) {
            uint32_t cp;
            size_t l = tok_utf8_next(s + k, n - k, &cp);
            if (cp == d->content) {
                if (!(i == 0 && d->prepend != TOK_PREPEND_NEVER)) ok = qw_buf_append(&b, " ", 1);
            } else {
                ok = qw_buf_append(&b, s + k, l);
            }
            k += l;
        }
        ok = ok && tok_list_push(out, b.data, b.len, -1, false);
    }
    qw_buf_free(&b);
    return ok ? QW_OK : DEC_OOM;
}

static qw_status dec_bpe(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    qw_buf b = {0};
    bool ok = true;
    for (size_t i = 0; i < in->n && ok; i++) {
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len;
        b.len = 0;
        for (size_t k = 0; k < n && ok;) {
            if (d->str_len && k + d->str_len <= n && memcmp(s + k, d->str, d->str_len) == 0) {
                if (i + 1 != in->n) ok = qw_buf_append(&b, " ", 1);
                k += d->str_len;
            } else {
                ok = qw_buf_append(&b, s + k, 1);
                k++;
            }
        }
        ok = ok && tok_list_push(out, b.data, b.len, -1, false);
    }
    qw_buf_free(&b);
    return ok ? QW_OK : DEC_OOM;
}

static qw_status dec_sequence(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    tok_list a = {0}, b = {0};
    tok_list *cur = in;
    qw_status st = QW_OK;
    for (size_t i = 0; i < d->n_children && st == QW_OK; i++) {
        tok_list *dst = (i % 2 == 0) ? &a : &b;
        tok_list_clear(dst);
        st = tok_dec_apply(&d->children[i], cur, dst, err);
        cur = dst;
    }
    for (size_t i = 0; st == QW_OK && i < cur->n; i++) {
        if (!tok_list_push(out, tok_list_str(cur, i), cur->v[i].len, -1, false)) st = DEC_OOM;
    }
    tok_list_free(&a);
    tok_list_free(&b);
    return st;
}

static const tok_dec_kind DEC_KINDS[] = {
    {"ByteLevel", dec_bytelevel}, {"ByteFallback", dec_bytefallback},
    {"Fuse", dec_fuse},           {"Strip", dec_strip},
    {"Replace", dec_replace},     {"Metaspace", dec_metaspace},
    {"BPEDecoder", dec_bpe},      {"Sequence", dec_sequence},
};

qw_status tok_dec_apply(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    return d->kind->apply(d, in, out, err);
}

static qw_status one_char(const json_t *v, const char *key, const char *field, uint32_t *cp,
                          qw_error *err) {
    const char *s;
    size_t n;
    QW_TRY(tok_json_str(v, key, field, true, &s, &n, err));
    if (n == 0 || !tok_utf8_valid(s, n) || tok_utf8_next(s, n, cp) != n) {
        return qw_fail_at(err, QW_ERR_CORRUPT, field, -1, "%s.%s: expected one character", key,
                          field);
    }
    return QW_OK;
}

qw_status tok_dec_parse(const json_t *v, const char *key, tok_dec *d, qw_error *err) {
    const char *type;
    if (!json_is_object(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected an object", key);
    }
    QW_TRY(tok_json_str(v, key, "type", true, &type, NULL, err));
    size_t k = 0, nk = sizeof DEC_KINDS / sizeof DEC_KINDS[0];
    while (k < nk && strcmp(DEC_KINDS[k].name, type) != 0) k++;
    if (k == nk) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                          "%s: decoder type \"%s\" is not supported", key, type);
    }
    d->kind = &DEC_KINDS[k];
    const char *str = NULL;
    size_t str_len = 0;
    char sub[256];
    if (d->kind->apply == dec_strip) {
        QW_TRY(one_char(v, key, "content", &d->content, err));
        QW_TRY(tok_json_uint(v, key, "start", 0, &d->start, err));
        QW_TRY(tok_json_uint(v, key, "stop", 0, &d->stop, err));
    } else if (d->kind->apply == dec_replace) {
        QW_TRY(tok_json_str(v, key, "content", true, &str, &str_len, err));
        snprintf(sub, sizeof sub, "%s.pattern", key);
        QW_TRY(tok_pattern_parse(json_object_get(v, "pattern"), sub, &d->pattern, err));
    } else if (d->kind->apply == dec_metaspace) {
        QW_TRY(one_char(v, key, "replacement", &d->content, err));
        bool aps;
        QW_TRY(tok_json_bool(v, key, "add_prefix_space", true, &aps, err));
        const char *scheme;
        QW_TRY(tok_json_str(v, key, "prepend_scheme", false, &scheme, NULL, err));
        d->prepend = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
        if (scheme) {
            static const char *const names[] = {"always", "first", "never"};
            static const tok_prepend values[] = {TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST,
                                                 TOK_PREPEND_NEVER};
            size_t i = 0;
            while (i < 3 && strcmp(names[i], scheme) != 0) i++;
            if (i == 3) {
                return qw_fail_at(err, QW_ERR_CORRUPT, "prepend_scheme", -1,
                                  "%s.prepend_scheme: unknown value \"%s\"", key, scheme);
            }
            d->prepend = values[i];
        }
    } else if (d->kind->apply == dec_bpe) {
        QW_TRY(tok_json_str(v, key, "suffix", false, &str, &str_len, err));
        if (!str) {
            str = "</w>";
            str_len = 4;
        }
    } else if (d->kind->apply == dec_sequence) {
        const json_t *arr;
        QW_TRY(tok_json_array(v, key, "decoders", &arr, err));
        d->children = qw_calloc(json_array_size(arr) + 1, sizeof *d->children);
        if (!d->children) return DEC_OOM;
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", key, i);
            d->n_children = i + 1;
            QW_TRY(tok_dec_parse(json_array_get(arr, i), sub, &d->children[i], err));
        }
    }
    if (str) {
        d->str = qw_strndup(str, str_len);
        d->str_len = str_len;
        if (!d->str) return DEC_OOM;
    }
    return QW_OK;
}

void tok_dec_free(tok_dec *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_children; i++) tok_dec_free(&d->children[i]);
    qw_free(d->children);
    qw_free(d->str);
    tok_pattern_free(&d->pattern);
    memset(d, 0, sizeof *d);
}

/* ---- decode --------------------------------------------------------------------------------- */

qw_status qw_tokenizer_decode(qw_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              char **text_out, size_t *len_out, qw_error *err) {
    *text_out = NULL;
    if (len_out) *len_out = 0;
    if (!tok || (n && !ids)) return qw_fail(err, QW_ERR_INVALID_ARG, "decode: no tokenizer or ids");
    tok_list toks = {0}, done = {0};
    qw_status st = QW_OK;
    for (size_t i = 0; i < n && st == QW_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= tok->n_vocab) continue;
        const char *s = NULL;
        size_t len = 0;
        int32_t a = tok->added_of_id[id];
        if (a >= 0 && tok->added[a].normalized) {
            /* HF gives a normalized added token back as its normalized text, and then decides
             * whether it is special by that text */
            s = tok->norm_added[a];
            len = tok->norm_added_len[a];
        } else if (a >= 0) {
            s = tok->added[a].content;
            len = tok->added[a].len;
        } else if ((size_t)id < tok->model.n_tok && tok->model.tok[id]) {
            s = tok->model.tok[id];
            len = tok->model.tok_len[id];
        }
        if (!s) continue;
        if (skip_special && qw_tok_map_get(&tok->special_text, s, len) >= 0) continue;
        if (!tok_list_push(&toks, s, len, id, false)) st = DEC_OOM;
    }
    tok_list *res = &toks;
    if (st == QW_OK && tok->decoder) {
        st = tok_dec_apply(tok->decoder, &toks, &done, err);
        res = &done;
    }
    qw_buf out = {0};
    for (size_t i = 0; st == QW_OK && i < res->n; i++) {
        if (!tok->decoder && i > 0 && !qw_buf_append(&out, " ", 1)) st = DEC_OOM;
        if (st == QW_OK && !qw_buf_append(&out, tok_list_str(res, i), res->v[i].len)) st = DEC_OOM;
    }
    if (st == QW_OK && !qw_buf_append(&out, "", 0)) st = DEC_OOM;
    tok_list_free(&toks);
    tok_list_free(&done);
    if (st != QW_OK) {
        qw_buf_free(&out);
        return st;
    }
    /* tokens of a BPE vocabulary are valid UTF-8 already; keep the promise regardless */
    if (!tok_utf8_valid(out.data, out.len)) {
        qw_buf fixed = {0};
        if (!tok_utf8_lossy(out.data, out.len, &fixed)) {
            qw_buf_free(&out);
            return DEC_OOM;
        }
        qw_buf_free(&out);
        out = fixed;
    }
    *text_out = out.data;
    if (len_out) *len_out = out.len;
    return QW_OK;
}
