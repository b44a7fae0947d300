/*
 * tok_json.c — reads tokenizer.json (HF tokenizers serialization "1.0") into a qw_tokenizer:
 *
 *   { "added_tokens": [{"id", "content", "single_word", "lstrip", "rstrip", "normalized",
 *                       "special"}, ...],
 *     "normalizer": ..., "pre_tokenizer": ..., "post_processor": ..., "decoder": ...,
 *     "model": {"type": "BPE", "vocab": {text: id}, "merges": ["a b"] | [["a", "b"]],
 *               "unk_token", "fuse_unk", "byte_fallback", "ignore_merges", "dropout",
 *               "continuing_subword_prefix", "end_of_word_suffix"}
 *            | {"type": "Unigram", "vocab": [[text, score]], "unk_id", "byte_fallback"} }
 *
 * Every error names the key path at fault ("model.merges[7]: ...").
 */
#include <stdio.h>
#include <string.h>

#include "file.h"
#include "json.h"
#include "tok_private.h"

#define OOM(what) qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", what)
#define MAX_ID (1 << 26) /* far above any real vocabulary; keeps id arrays allocatable */

static qw_status set_token(tok_model *m, int64_t id, const char *text, size_t len, bool map,
                           const char *key, qw_error *err) {
    if (id < 0 || id >= MAX_ID || (size_t)id >= m->n_tok) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: id %lld out of range", key,
                          (long long)id);
    }
    if (m->tok[id]) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: id %lld is given to two tokens", key,
                          (long long)id);
    }
    m->tok[id] = qw_strndup(text, len);
    if (!m->tok[id]) return OOM(key);
    m->tok_len[id] = (uint32_t)len;
    if (map && !qw_tok_map_put(&m->vocab, m->tok[id], len, (int32_t)id)) return OOM(key);
    return QW_OK;
}

static qw_status alloc_ids(tok_model *m, size_t n, const char *key, qw_error *err) {
    m->n_tok = n;
    m->tok = qw_calloc(n + 1, sizeof *m->tok);
    m->tok_len = qw_calloc(n + 1, sizeof *m->tok_len);
    if (!m->tok || !m->tok_len || !qw_tok_map_init(&m->vocab, n)) return OOM(key);
    return QW_OK;
}

static qw_status lookup(const tok_model *m, const char *s, size_t len, const char *key,
                        int32_t *id, qw_error *err) {
    *id = qw_tok_map_get(&m->vocab, s, len);
    if (*id < 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: token \"%.*s\" is not in model.vocab",
                          key, (int)(len > 64 ? 64 : len), s);
    }
    return QW_OK;
}

static qw_status load_merges(tok_model *m, const json_t *arr, qw_error *err) {
    qw_buf joined = {0};
    qw_status st = QW_OK;
    for (size_t i = 0; i < json_array_size(arr) && st == QW_OK; i++) {
        char key[64];
        snprintf(key, sizeof key, "model.merges[%zu]", i);
        const json_t *e = json_array_get(arr, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(e)) {
            const char *s = json_string_value(e);
            size_t n = json_string_length(e);
            const char *sp = memchr(s, ' ', n);
            if (n >= 8 && memcmp(s, "#version", 8) == 0) continue;
            if (!sp) {
                st = qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected \"left right\"", key);
                break;
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = n - al - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0));
            al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1));
            bl = json_string_length(json_array_get(e, 1));
        } else {
            st = qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                            "%s: expected \"left right\" or [\"left\", \"right\"]", key);
            break;
        }
        int32_t ia, ib, in;
        if ((st = lookup(m, a, al, key, &ia, err)) != QW_OK) break;
        if ((st = lookup(m, b, bl, key, &ib, err)) != QW_OK) break;
        /* the merged token drops the right part's continuing-subword prefix */
        if (m->prefix_len && bl >= m->prefix_len && memcmp(b, m->prefix, m->prefix_len) == 0) {
            b += m->prefix_len;
            bl -= m->prefix_len;
        }
        joined.len = 0;
        if (!qw_buf_append(&joined, a, al) || !qw_buf_append(&joined, b, bl)) {
            st = OOM(key);
            break;
        }
        if ((st = lookup(m, joined.data, joined.len, key, &in, err)) != QW_OK) break;
        if (!tok_pairmap_put(&m->merges, (uint32_t)ia, (uint32_t)ib, (uint32_t)i, in)) {
            st = OOM(key);
        }
    }
    qw_buf_free(&joined);
    return st;
}

static qw_status dup_opt(const json_t *model, const char *field, char **out, size_t *len,
                         qw_error *err) {
    const char *s;
    QW_TRY(tok_json_str(model, "model", field, false, &s, len, err));
    if (s) {
        *out = qw_strndup(s, *len);
        if (!*out) return OOM("model");
    }
    return QW_OK;
}

static qw_status load_bpe(tok_model *m, const json_t *model, qw_error *err) {
    m->type = TOK_MODEL_BPE;
    m->unk_id = -1;
    /* jansson's iterators take a non-const object; nothing here modifies it */
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                          "model.vocab: expected an object of token: id");
    }
    int64_t max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        int64_t id;
        if (!qw_json_integer_value(v, &id) || id < 0 || id >= MAX_ID) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                              "model.vocab[\"%.64s\"]: expected an id in [0, %d)", k, MAX_ID);
        }
        if (id > max_id) max_id = id;
    }
    QW_TRY(alloc_ids(m, (size_t)(max_id + 1), "model.vocab", err));
    /* keys come back with their lengths so that tokens containing NUL survive */
    void *iter = json_object_iter(vocab);
    while (iter) {
        size_t klen = json_object_iter_key_len(iter);
        const char *key = json_object_iter_key(iter);
        int64_t id;
        qw_json_integer_value(json_object_iter_value(iter), &id);
        QW_TRY(set_token(m, id, key, klen, true, "model.vocab", err));
        iter = json_object_iter_next(vocab, iter);
    }
    double dropout = 0;
    bool found;
    QW_TRY(qw_json_get_number(model, "dropout", "model", &dropout, &found, err));
    if (found && dropout > 0.0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "model.dropout", -1,
                          "model.dropout: BPE dropout is random; only null or 0 is supported");
    }
    size_t unk_len;
    QW_TRY(dup_opt(model, "unk_token", &m->unk_token, &unk_len, err));
    QW_TRY(dup_opt(model, "continuing_subword_prefix", &m->prefix, &m->prefix_len, err));
    QW_TRY(dup_opt(model, "end_of_word_suffix", &m->suffix, &m->suffix_len, err));
    QW_TRY(tok_json_bool(model, "model", "fuse_unk", false, &m->fuse_unk, err));
    QW_TRY(tok_json_bool(model, "model", "byte_fallback", false, &m->byte_fallback, err));
    QW_TRY(tok_json_bool(model, "model", "ignore_merges", false, &m->ignore_merges, err));
    const json_t *merges = json_object_get(model, "merges");
    if (merges && !json_is_null(merges)) {
        if (!json_is_array(merges)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                              "model.merges: expected an array");
        }
        QW_TRY(load_merges(m, merges, err));
    }
    return QW_OK;
}

static qw_status trie_child(tok_pairmap *edges, int32_t **term, size_t *n_nodes, size_t *cap,
                            uint32_t node, unsigned char c, uint32_t *child) {
    int32_t v;
    if (tok_pairmap_get(edges, node, c, NULL, &v)) {
        *child = (uint32_t)v;
        return QW_OK;
    }
    if (*n_nodes == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        int32_t *t = qw_realloc_array(*term, nc, sizeof *t);
        if (!t) return QW_ERR_NO_MEMORY;
        *term = t;
        *cap = nc;
    }
    (*term)[*n_nodes] = -1;
    *child = (uint32_t)(*n_nodes)++;
    if (!tok_pairmap_put(edges, node, c, 0, (int32_t)*child)) return QW_ERR_NO_MEMORY;
    return QW_OK;
}

static qw_status trie_root(int32_t **term, size_t *n_nodes, size_t *cap) {
    *term = qw_malloc_array(1024, sizeof **term);
    if (!*term) return QW_ERR_NO_MEMORY;
    (*term)[0] = -1;
    *n_nodes = 1;
    *cap = 1024;
    return QW_OK;
}

static qw_status load_unigram(tok_model *m, const json_t *model, qw_error *err) {
    m->type = TOK_MODEL_UNIGRAM;
    m->unk_id = -1;
    const json_t *vocab;
    QW_TRY(tok_json_array(model, "model", "vocab", &vocab, err));
    size_t n = json_array_size(vocab);
    if (n >= MAX_ID) return qw_fail(err, QW_ERR_CORRUPT, "model.vocab: too many pieces");
    QW_TRY(alloc_ids(m, n, "model.vocab", err));
    m->scores = qw_malloc_array(n + 1, sizeof *m->scores);
    if (!m->scores) return OOM("model.vocab");
    m->min_score = 0;
    bool first = true;
    if (trie_root(&m->trie_id, &m->n_nodes, &m->cap_nodes) != QW_OK) return OOM("model.vocab");
    size_t root = 0;
    for (size_t i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "model.vocab[%zu]", i);
        const json_t *e = json_array_get(vocab, i);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(json_array_get(e, 0)) ||
            !json_is_number(json_array_get(e, 1))) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected [piece, score]", key);
        }
        const char *s = json_string_value(json_array_get(e, 0));
        size_t len = json_string_length(json_array_get(e, 0));
        QW_TRY(set_token(m, (int64_t)i, s, len, false, key, err));
        double sc = json_number_value(json_array_get(e, 1));
        m->scores[i] = sc;
        if (first || sc < m->min_score) m->min_score = sc;
        first = false;
        uint32_t node = (uint32_t)root;
        for (size_t k = 0; k < len; k++) {
            if (trie_child(&m->trie, &m->trie_id, &m->n_nodes, &m->cap_nodes, node,
                           (unsigned char)s[k], &node) != QW_OK) {
                return OOM(key);
            }
        }
        if (len) m->trie_id[node] = (int32_t)i; /* a repeated piece: the last one wins */
    }
    /* the text -> id map keeps the first key it is given: insert backwards so that, as in HF's
     * token_to_ids, a repeated piece maps to its last index */
    for (size_t i = n; i-- > 0;) {
        if (!qw_tok_map_put(&m->vocab, m->tok[i], m->tok_len[i], (int32_t)i)) {
            return OOM("model.vocab");
        }
    }
    size_t unk;
    const json_t *u = json_object_get(model, "unk_id");
    if (u && !json_is_null(u)) {
        QW_TRY(tok_json_uint(model, "model", "unk_id", 0, &unk, err));
        if (unk >= n) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.unk_id", -1,
                              "model.unk_id: %zu is not a piece index", unk);
        }
        m->unk_id = (int32_t)unk;
    }
    QW_TRY(tok_json_bool(model, "model", "byte_fallback", false, &m->byte_fallback, err));
    return QW_OK;
}

typedef struct model_kind {
    const char *name;
    qw_status (*load)(tok_model *m, const json_t *model, qw_error *err);
} model_kind;

static const model_kind MODEL_KINDS[] = {
    {"BPE", load_bpe},
    {"Unigram", load_unigram},
};

/* ---- added tokens --------------------------------------------------------------------------- */

qw_status tok_trie_add(tok_trie *t, const char *s, size_t len, int32_t index) {
    uint32_t node = 0;
    if (t->n_nodes == 0) QW_TRY(trie_root(&t->term, &t->n_nodes, &t->cap_nodes));
    for (size_t k = 0; k < len; k++) {
        QW_TRY(trie_child(&t->edges, &t->term, &t->n_nodes, &t->cap_nodes, node,
                          (unsigned char)s[k], &node));
    }
    if (t->term[node] < 0) t->term[node] = index; /* the first of two equal texts wins */
    t->first_byte[(unsigned char)s[0]] = true;
    return QW_OK;
}

static qw_status load_added(qw_tokenizer *tok, const json_t *root, qw_error *err) {
    const json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr)) return QW_OK;
    if (!json_is_array(arr)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1,
                          "added_tokens: expected an array");
    }
    size_t n = json_array_size(arr);
    tok->added = qw_calloc(n + 1, sizeof *tok->added);
    tok->norm_added = qw_calloc(n + 1, sizeof *tok->norm_added);
    tok->norm_added_len = qw_calloc(n + 1, sizeof *tok->norm_added_len);
    if (!tok->added || !tok->norm_added || !tok->norm_added_len) return OOM("added_tokens");
    for (size_t i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "added_tokens[%zu]", i);
        const json_t *e = json_array_get(arr, i);
        if (!json_is_object(e)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected an object", key);
        }
        tok_added *a = &tok->added[tok->n_added];
        size_t id;
        const char *content;
        QW_TRY(tok_json_uint(e, key, "id", SIZE_MAX, &id, err));
        if (id == SIZE_MAX || id >= MAX_ID) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s.id: missing or out of range", key);
        }
        QW_TRY(tok_json_str(e, key, "content", true, &content, &a->len, err));
        QW_TRY(tok_json_bool(e, key, "single_word", false, &a->single_word, err));
        QW_TRY(tok_json_bool(e, key, "lstrip", false, &a->lstrip, err));
        QW_TRY(tok_json_bool(e, key, "rstrip", false, &a->rstrip, err));
        QW_TRY(tok_json_bool(e, key, "special", false, &a->special, err));
        QW_TRY(tok_json_bool(e, key, "normalized", !a->special, &a->normalized, err));
        a->id = (int32_t)id;
        if (a->len == 0) continue; /* HF ignores empty added tokens */
        a->content = qw_strndup(content, a->len);
        if (!a->content) return OOM(key);
        tok->n_added++;
        if (id + 1 > tok->n_vocab) tok->n_vocab = id + 1;
    }
    return QW_OK;
}

/* Builds the two matching tries: raw text for normalized=false, normalized text otherwise (the
 * token's content run through the normalizer, as HF's refresh_added_tokens does). Special tokens
 * come first, as in HF's pattern order. */
static qw_status build_tries(qw_tokenizer *tok, qw_error *err) {
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < tok->n_added; i++) {
            tok_added *a = &tok->added[i];
            if (a->special != (pass == 0)) continue;
            if (!a->normalized) {
                if (tok_trie_add(&tok->trie_raw, a->content, a->len, (int32_t)i) != QW_OK) {
                    return OOM("added_tokens");
                }
                continue;
            }
            qw_buf nb = {0};
            if (tok->normalizer) {
                qw_status st = tok_norm_apply(tok->normalizer, a->content, a->len, &nb, err);
                if (st != QW_OK) {
                    qw_buf_free(&nb);
                    return st;
                }
            } else if (!qw_buf_append(&nb, a->content, a->len)) {
                return OOM("added_tokens");
            }
            if (!qw_buf_append(&nb, "", 0)) return OOM("added_tokens");
            tok->norm_added[i] = nb.data;
            tok->norm_added_len[i] = nb.len;
            if (nb.len && tok_trie_add(&tok->trie_norm, nb.data, nb.len, (int32_t)i) != QW_OK) {
                return OOM("added_tokens");
            }
        }
    }
    return QW_OK;
}

/* ---- post-processor ------------------------------------------------------------------------- */

static qw_status push_ids(int32_t **v, size_t *n, const int32_t *ids, size_t k) {
    int32_t *g = qw_realloc_array(*v, *n + k + 1, sizeof *g);
    if (!g) return QW_ERR_NO_MEMORY;
    if (k) memcpy(g + *n, ids, k * sizeof *ids);
    *v = g;
    *n += k;
    return QW_OK;
}

static qw_status special_ids(const json_t *specials, const char *name, const char *key,
                             int32_t **v, size_t *n, qw_error *err) {
    const json_t *s = json_is_object(specials) ? json_object_get(specials, name) : NULL;
    const json_t *ids = json_is_object(s) ? json_object_get(s, "ids") : NULL;
    if (!json_is_array(ids)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: special token \"%s\" has no ids in special_tokens", key, name);
    }
    for (size_t i = 0; i < json_array_size(ids); i++) {
        int64_t id;
        if (!qw_json_integer_value(json_array_get(ids, i), &id) || id < 0 || id >= MAX_ID) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                              "%s: special token \"%s\": bad id", key, name);
        }
        int32_t i32 = (int32_t)id;
        if (push_ids(v, n, &i32, 1) != QW_OK) return OOM(key);
    }
    return QW_OK;
}

/* One processor's before/after ids; a Sequence nests them (later ones wrap earlier ones). */
static qw_status load_post(const json_t *p, const char *key, struct tok_post *out, qw_error *err) {
    const char *type;
    if (!json_is_object(p)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: expected an object", key);
    }
    QW_TRY(tok_json_str(p, key, "type", true, &type, NULL, err));
    char sub[128];
    if (strcmp(type, "ByteLevel") == 0) return QW_OK; /* offsets only */
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr;
        QW_TRY(tok_json_array(p, key, "processors", &arr, err));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            struct tok_post inner = {0};
            snprintf(sub, sizeof sub, "%s.processors[%zu]", key, i);
            qw_status st = load_post(json_array_get(arr, i), sub, &inner, err);
            if (st == QW_OK) {
                /* new = inner.before + out.before ... out.after + inner.after */
                int32_t *nb = NULL;
                size_t nnb = 0;
                if (push_ids(&nb, &nnb, inner.before, inner.n_before) != QW_OK ||
                    push_ids(&nb, &nnb, out->before, out->n_before) != QW_OK ||
                    push_ids(&out->after, &out->n_after, inner.after, inner.n_after) != QW_OK) {
                    st = OOM(key);
                    qw_free(nb);
                } else {
                    qw_free(out->before);
                    out->before = nb;
                    out->n_before = nnb;
                }
            }
            qw_free(inner.before);
            qw_free(inner.after);
            QW_TRY(st);
        }
        return QW_OK;
    }
    if (strcmp(type, "TemplateProcessing") == 0) {
        const json_t *single;
        QW_TRY(tok_json_array(p, key, "single", &single, err));
        const json_t *specials = json_object_get(p, "special_tokens");
        bool seen_a = false;
        for (size_t i = 0; i < json_array_size(single); i++) {
            const json_t *e = json_array_get(single, i);
            snprintf(sub, sizeof sub, "%s.single[%zu]", key, i);
            const json_t *sp = json_is_object(e) ? json_object_get(e, "SpecialToken") : NULL;
            const json_t *sq = json_is_object(e) ? json_object_get(e, "Sequence") : NULL;
            if (sp) {
                const char *name;
                QW_TRY(tok_json_str(sp, sub, "id", true, &name, NULL, err));
                QW_TRY(special_ids(specials, name, sub, seen_a ? &out->after : &out->before,
                                   seen_a ? &out->n_after : &out->n_before, err));
            } else if (sq && !seen_a) {
                seen_a = true;
            } else {
                return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, sub, -1,
                                  "%s: expected one {\"Sequence\"} and {\"SpecialToken\"} items",
                                  sub);
            }
        }
        return QW_OK;
    }
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        const char *fields[2] = {"cls", "sep"};
        for (int f = 0; f < 2; f++) {
            const json_t *pair = json_object_get(p, fields[f]);
            int64_t id;
            if (!json_is_array(pair) || json_array_size(pair) != 2 ||
                !qw_json_integer_value(json_array_get(pair, 1), &id) || id < 0 || id >= MAX_ID) {
                return qw_fail_at(err, QW_ERR_CORRUPT, fields[f], -1,
                                  "%s.%s: expected [token, id]", key, fields[f]);
            }
            int32_t i32 = (int32_t)id;
            int32_t **dst = f == 0 ? &out->before : &out->after;
            if (push_ids(dst, f == 0 ? &out->n_before : &out->n_after, &i32, 1) != QW_OK) {
                return OOM(key);
            }
        }
        return QW_OK;
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                      "%s: post-processor type \"%s\" is not supported", key, type);
}

/* ---- truncation and padding ------------------------------------------------------------------
 *   "truncation": {"max_length": n, "stride": n, "strategy": "LongestFirst"|"OnlyFirst"|
 *                  "OnlySecond", "direction": "Right"|"Left"} | null
 *   "padding": {"strategy": "BatchLongest" | {"Fixed": n}, "direction": "Right"|"Left",
 *               "pad_to_multiple_of": n | null, "pad_id": n, ...} | null */

static qw_status direction(const json_t *o, const char *key, bool *left, qw_error *err) {
    const char *d;
    QW_TRY(tok_json_str(o, key, "direction", false, &d, NULL, err));
    if (d && strcmp(d, "Left") != 0 && strcmp(d, "Right") != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "direction", -1,
                          "%s.direction: expected \"Left\" or \"Right\"", key);
    }
    *left = d && strcmp(d, "Left") == 0;
    return QW_OK;
}

static qw_status load_trunc_pad(qw_tokenizer *tok, const json_t *root, qw_error *err) {
    const json_t *t = json_object_get(root, "truncation");
    if (t && !json_is_null(t)) {
        if (!json_is_object(t)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "truncation", -1,
                              "truncation: expected an object or null");
        }
        tok->has_trunc = true;
        size_t max;
        QW_TRY(tok_json_uint(t, "truncation", "max_length", SIZE_MAX, &max, err));
        if (max == SIZE_MAX) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "max_length", -1,
                              "truncation.max_length: missing");
        }
        tok->trunc_max = max;
        QW_TRY(direction(t, "truncation", &tok->trunc_left, err));
        const char *strategy;
        QW_TRY(tok_json_str(t, "truncation", "strategy", false, &strategy, NULL, err));
        tok->trunc_second_only = strategy && strcmp(strategy, "OnlySecond") == 0;
    }
    const json_t *p = json_object_get(root, "padding");
    if (p && !json_is_null(p)) {
        if (!json_is_object(p)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "padding", -1,
                              "padding: expected an object or null");
        }
        tok->has_pad = true;
        const json_t *strategy = json_object_get(p, "strategy");
        const json_t *fixed = json_is_object(strategy) ? json_object_get(strategy, "Fixed") : NULL;
        if (fixed) {
            int64_t n;
            if (!qw_json_integer_value(fixed, &n) || n < 0 || n > INT32_MAX) {
                return qw_fail_at(err, QW_ERR_CORRUPT, "strategy", -1,
                                  "padding.strategy.Fixed: expected a length");
            }
            tok->pad_fixed = (size_t)n;
        } else if (strategy && !(json_is_string(strategy) &&
                                 strcmp(json_string_value(strategy), "BatchLongest") == 0)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "strategy", -1,
                              "padding.strategy: expected \"BatchLongest\" or {\"Fixed\": n}");
        }
        QW_TRY(direction(p, "padding", &tok->pad_left, err));
        QW_TRY(tok_json_uint(p, "padding", "pad_to_multiple_of", 0, &tok->pad_multiple, err));
        size_t id;
        QW_TRY(tok_json_uint(p, "padding", "pad_id", 0, &id, err));
        tok->pad_id = (int32_t)id;
    }
    return QW_OK;
}

/* ---- the whole file ------------------------------------------------------------------------- */

static qw_status load_root(qw_tokenizer *tok, const json_t *root, qw_error *err) {
    if (!json_is_object(root)) return qw_fail(err, QW_ERR_CORRUPT, "expected a JSON object");
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model", -1, "model: expected an object");
    }
    const char *type;
    QW_TRY(tok_json_str(model, "model", "type", false, &type, NULL, err));
    if (!type) { /* HF accepts an untagged model and recognises it by its fields */
        type = json_is_array(json_object_get(model, "vocab")) ? "Unigram" : "BPE";
    }
    size_t k = 0, nk = sizeof MODEL_KINDS / sizeof MODEL_KINDS[0];
    while (k < nk && strcmp(MODEL_KINDS[k].name, type) != 0) k++;
    if (k == nk) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "model.type", -1,
                          "model.type: \"%s\" is not supported (BPE and Unigram are)", type);
    }
    QW_TRY(MODEL_KINDS[k].load(&tok->model, model, err));
    QW_TRY(tok_model_finish_load(&tok->model, err));
    tok->n_vocab = tok->model.n_tok;

    const json_t *v = json_object_get(root, "normalizer");
    if (v && !json_is_null(v)) {
        tok->normalizer = qw_calloc(1, sizeof *tok->normalizer);
        if (!tok->normalizer) return OOM("normalizer");
        QW_TRY(tok_norm_parse(v, "normalizer", tok->normalizer, err));
    }
    v = json_object_get(root, "pre_tokenizer");
    if (v && !json_is_null(v)) {
        tok->pre = qw_calloc(1, sizeof *tok->pre);
        if (!tok->pre) return OOM("pre_tokenizer");
        QW_TRY(tok_pre_parse(v, "pre_tokenizer", tok->pre, err));
    }
    v = json_object_get(root, "decoder");
    if (v && !json_is_null(v)) {
        tok->decoder = qw_calloc(1, sizeof *tok->decoder);
        if (!tok->decoder) return OOM("decoder");
        QW_TRY(tok_dec_parse(v, "decoder", tok->decoder, err));
    }
    v = json_object_get(root, "post_processor");
    if (v && !json_is_null(v)) {
        QW_TRY(load_post(v, "post_processor", &tok->post, err));
        tok->has_post = true;
    }
    QW_TRY(load_trunc_pad(tok, root, err));
    QW_TRY(load_added(tok, root, err));
    QW_TRY(build_tries(tok, err));
    return tok_added_finish(tok, err);
}

qw_status tok_added_finish(qw_tokenizer *tok, qw_error *err) {
    tok->added_of_id = qw_malloc_array(tok->n_vocab + 1, sizeof *tok->added_of_id);
    if (!tok->added_of_id || !qw_tok_map_init(&tok->special_text, tok->n_added)) {
        return OOM("added_tokens");
    }
    for (size_t i = 0; i <= tok->n_vocab; i++) tok->added_of_id[i] = -1;
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        tok->added_of_id[a->id] = (int32_t)i; /* a later entry for the same id wins, as in HF */
        if (a->special && !qw_tok_map_put(&tok->special_text, a->content, a->len, a->id)) {
            return OOM("added_tokens");
        }
    }
    return QW_OK;
}

qw_status qw_tokenizer_load_json_buffer(const char *data, size_t len, const char *label,
                                        qw_tokenizer **out, qw_error *err) {
    *out = NULL;
    if (!label) label = "tokenizer.json";
    json_t *root = NULL;
    QW_TRY(qw_json_parse(data, len, label, &root, err));
    qw_tokenizer *tok = qw_calloc(1, sizeof *tok);
    if (!tok) {
        json_decref(root);
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", label);
    }
    qw_status st = load_root(tok, root, err);
    json_decref(root);
    if (st != QW_OK) {
        qw_error_prefix(err, "%s: ", label);
        qw_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return QW_OK;
}

qw_status qw_tokenizer_load_json(const char *path, qw_tokenizer **out, qw_error *err) {
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    QW_TRY(qw_file_read_all(path, (size_t)1 << 30, &text, &len, err));
    qw_status st = qw_tokenizer_load_json_buffer(text, len, path, out, err);
    qw_free(text);
    return st;
}

size_t qw_tokenizer_vocab_size(const qw_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

void qw_tokenizer_free(qw_tokenizer *tok) {
    if (!tok) return;
    tok_model_free(&tok->model);
    for (size_t i = 0; i < tok->n_added; i++) {
        qw_free(tok->added[i].content);
        qw_free(tok->norm_added[i]);
    }
    qw_free(tok->added);
    qw_free(tok->norm_added);
    qw_free(tok->norm_added_len);
    qw_free(tok->added_of_id);
    qw_tok_map_free(&tok->special_text);
    tok_pairmap_free(&tok->trie_raw.edges);
    qw_free(tok->trie_raw.term);
    tok_pairmap_free(&tok->trie_norm.edges);
    qw_free(tok->trie_norm.term);
    if (tok->normalizer) tok_norm_free(tok->normalizer);
    qw_free(tok->normalizer);
    if (tok->pre) tok_pre_free(tok->pre);
    qw_free(tok->pre);
    if (tok->decoder) tok_dec_free(tok->decoder);
    qw_free(tok->decoder);
    qw_free(tok->post.before);
    qw_free(tok->post.after);
    tok_list_free(&tok->l0);
    tok_list_free(&tok->l1);
    tok_list_free(&tok->l2);
    tok_list_free(&tok->l3);
    qw_buf_free(&tok->b0);
    qw_buf_free(&tok->b1);
    tok_spans_free(&tok->spans);
    qw_free(tok);
}
