/*
 * tok_spm.c — a SentencePiece tokenizer.model (used when a model has no tokenizer.json) as a
 * qw_tokenizer that encodes and decodes as the `sentencepiece` library does.
 *
 * The file is read by spm_proto.c (which spm_model.c uses too, for the GGUF vocabulary).
 *
 * Pipeline: the normalizer (identity rules only: a non-empty precompiled_charsmap, e.g.
 * nmt_nfkc, is refused) drops leading, trailing and repeated spaces when
 * remove_extra_whitespaces, prepends one when add_dummy_prefix, and writes spaces as U+2581;
 * then BPE merges the adjacent pair whose concatenation is a piece of the highest score (ties to
 * the left), or Unigram finds the best-scoring segmentation; unknown pieces become their bytes
 * (byte_fallback) or one unknown id per run. add_special prepends the BOS piece, as
 * SentencePieceProcessor.encode(add_bos=True) and HF's Llama tokenizers do. User-defined pieces
 * are matched in the raw text before the model, like HF's added tokens.
 *
 * Decoding drops control pieces, writes the unknown piece as " \u2047 ", joins byte pieces into
 * UTF-8, turns U+2581 back into spaces and drops the dummy-prefix space of the first piece.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "file.h"
#include "spm_proto.h"
#include "tok_private.h"

#define SPM_SPACE "\xE2\x96\x81"

/* ---- normalizer and decoder ----------------------------------------------------------------- */

/* The spec's three flags ride in the tok_norm / tok_dec fields: strip_left = remove extra
 * whitespace, strip_right = add dummy prefix, utf8proc_options = escape whitespace. */
static qw_status spm_normalize(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                               qw_error *err) {
    bool remove_extra = n->strip_left, dummy = n->strip_right, escape = n->utf8proc_options != 0;
    size_t i = 0;
    if (remove_extra) {
        while (i < len && s[i] == ' ') i++;
    }
    if (i == len) return QW_OK;
    size_t start = out->len;
    const char *space = escape ? SPM_SPACE : " ";
    size_t space_len = escape ? 3 : 1;
    bool ok = !dummy || qw_buf_append(out, space, space_len);
    bool prev_space = remove_extra;
    for (; i < len && ok; i++) {
        if (s[i] == ' ') {
            if (!prev_space) ok = qw_buf_append(out, space, space_len);
            prev_space = remove_extra;
        } else {
            ok = qw_buf_append(out, s + i, 1);
            prev_space = false;
        }
    }
    if (!ok) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory normalizing");
    if (remove_extra) {
        while (out->len - start >= space_len &&
               memcmp(out->data + out->len - space_len, space, space_len) == 0) {
            out->len -= space_len;
        }
    }
    return QW_OK;
}

static const tok_norm_kind SPM_NORM = {"SentencePiece", spm_normalize};

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Byte pieces: valid UTF-8 is kept, every byte of an invalid sequence becomes U+FFFD. */
static bool flush_bytes(qw_buf *bytes, qw_buf *text) {
    size_t i = 0;
    bool ok = true;
    while (i < bytes->len && ok) {
        size_t l = tok_utf8_len((unsigned char)bytes->data[i]);
        if (l <= bytes->len - i && ((unsigned char)bytes->data[i] & 0xC0) != 0x80 &&
            tok_utf8_valid(bytes->data + i, l)) {
            ok = qw_buf_append(text, bytes->data + i, l);
            i += l;
        } else {
            ok = qw_buf_append(text, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    bytes->len = 0;
    return ok;
}

static qw_status spm_decode(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err) {
    const tok_model *m = d->ctx;
    /* sentencepiece drops the space of the first piece when the normalizer adds a dummy prefix
     * or removes extra whitespace; in the latter case it keeps dropping while nothing has been
     * written yet (leading whitespace is all extra) */
    bool dummy = d->start != 0, remove_extra = d->stop != 0;
    bool bos_ws = dummy || remove_extra;
    qw_buf text = {0}, bytes = {0};
    bool ok = true;
    for (size_t i = 0; i < in->n && ok; i++) {
        int32_t id = in->v[i].id;
        uint8_t type = id >= 0 && (size_t)id < m->n_tok ? m->piece_type[id] : SPM_PIECE_NORMAL;
        const char *s = tok_list_str(in, i);
        size_t n = in->v[i].len;
        if (type == SPM_PIECE_BYTE && n == 6 && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            ok = qw_buf_append(&bytes, &b, 1);
            continue;
        }
        ok = flush_bytes(&bytes, &text);
        if (text.len) bos_ws = false;
        if (!ok || type == SPM_PIECE_CONTROL) continue;
        if (type == SPM_PIECE_UNKNOWN) {
            ok = qw_buf_append(&text, " \xE2\x81\x87 ", 5);
            continue;
        }
        size_t k = 0;
        if (bos_ws && n >= 3 && memcmp(s, SPM_SPACE, 3) == 0) k = 3;
        if (!remove_extra) bos_ws = false;
        while (k < n && ok) {
            if (n - k >= 3 && memcmp(s + k, SPM_SPACE, 3) == 0) {
                ok = qw_buf_append(&text, " ", 1);
                k += 3;
            } else {
                ok = qw_buf_append(&text, s + k, 1);
                k++;
            }
        }
    }
    ok = ok && flush_bytes(&bytes, &text) && tok_list_push(out, text.data, text.len, -1, false);
    qw_buf_free(&text);
    qw_buf_free(&bytes);
    return ok ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory decoding");
}

static const tok_dec_kind SPM_DEC = {"SentencePiece", spm_decode};

/* ---- BPE ------------------------------------------------------------------------------------ */

typedef struct spm_sym {
    size_t off;
    size_t len;
    int64_t prev, next;
} spm_sym;

typedef struct spm_pair {
    float score;
    uint32_t left, right;
    size_t size;
} spm_pair;

static bool pair_before(const spm_pair *a, const spm_pair *b) {
    return a->score != b->score ? a->score > b->score : a->left < b->left;
}

typedef struct spm_heap {
    spm_pair *v;
    size_t n, cap;
} spm_heap;

static bool heap_push(spm_heap *h, spm_pair p) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        spm_pair *v = qw_realloc_array(h->v, cap, sizeof *v);
        if (!v) return false;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && pair_before(&p, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = p;
    return true;
}

static spm_pair heap_pop(spm_heap *h) {
    spm_pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const spm_pair *mv = &last;
        if (l < h->n && pair_before(&h->v[l], mv)) {
            m = l;
            mv = &h->v[l];
        }
        if (r < h->n && pair_before(&h->v[r], mv)) m = r;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static bool mergeable(const tok_model *m, int32_t id) {
    uint8_t t = m->piece_type[id];
    return t == SPM_PIECE_NORMAL || t == SPM_PIECE_USER_DEFINED || t == SPM_PIECE_UNUSED;
}

static bool add_pair(const tok_model *m, const char *s, spm_sym *sy, int64_t l, int64_t r,
                     spm_heap *h) {
    if (l < 0 || r < 0) return true;
    size_t size = sy[l].len + sy[r].len;
    int32_t id = qw_tok_map_get(&m->vocab, s + sy[l].off, size);
    if (id < 0 || !mergeable(m, id)) return true;
    return heap_push(h, (spm_pair){(float)m->scores[id], (uint32_t)l, (uint32_t)r, size});
}

/* Appends the ids of one final piece; *prev_unk carries the run of unknown pieces. */
static qw_status emit_piece(tok_model *m, const char *s, size_t n, bool *prev_unk,
                            qw_token_ids *out, qw_error *err) {
    int32_t id = qw_tok_map_get(&m->vocab, s, n);
    if (id >= 0 && id != m->unk_id) {
        *prev_unk = false;
        return tok_ids_push(out, id) ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    if (m->byte_fallback) {
        bool all = true;
        for (size_t k = 0; k < n && all; k++) all = m->byte_id[(unsigned char)s[k]] >= 0;
        if (all) {
            for (size_t k = 0; k < n; k++) {
                if (!tok_ids_push(out, m->byte_id[(unsigned char)s[k]])) {
                    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                }
            }
            *prev_unk = false;
            return QW_OK;
        }
    }
    if (m->unk_id < 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "tokenizer.model has no unknown piece");
    }
    if (!*prev_unk && !tok_ids_push(out, m->unk_id)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    *prev_unk = true;
    return QW_OK;
}

qw_status tok_spm_bpe_encode(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                             qw_error *err) {
    if (n == 0) return QW_OK;
    spm_sym *sy = qw_malloc_array(n, sizeof *sy);
    spm_heap h = {0};
    qw_status st = QW_OK;
    if (!sy) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    int64_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = tok_utf8_len((unsigned char)s[i]);
        if (l > n - i) l = n - i;
        sy[ns] = (spm_sym){i, l, ns - 1, i + l < n ? ns + 1 : -1};
        ns++;
        i += l;
    }
    for (int64_t i = 1; i < ns && st == QW_OK; i++) {
        if (!add_pair(m, s, sy, i - 1, i, &h)) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    while (h.n && st == QW_OK) {
        spm_pair top = heap_pop(&h);
        spm_sym *L = &sy[top.left], *R = &sy[top.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != top.size) continue;
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0) sy[R->next].prev = top.left;
        R->len = 0;
        if (!add_pair(m, s, sy, L->prev, top.left, &h) ||
            !add_pair(m, s, sy, top.left, sy[top.left].next, &h)) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
    }
    bool prev_unk = false;
    for (int64_t i = 0; i != -1 && st == QW_OK; i = sy[i].next) {
        st = emit_piece(m, s + sy[i].off, sy[i].len, &prev_unk, out, err);
    }
    qw_free(sy);
    qw_free(h.v);
    return st;
}

/* ---- loading -------------------------------------------------------------------------------- */

static qw_status load_pieces(qw_tokenizer *tok, const spm_proto *sp, qw_error *err) {
    tok_model *m = &tok->model;
    size_t n = sp->n_pieces;
    m->n_tok = n;
    m->tok = qw_calloc(n + 1, sizeof *m->tok);
    m->tok_len = qw_calloc(n + 1, sizeof *m->tok_len);
    m->scores = qw_calloc(n + 1, sizeof *m->scores);
    m->piece_type = qw_calloc(n + 1, 1);
    tok->added = qw_calloc(n + 1, sizeof *tok->added);
    tok->norm_added = qw_calloc(n + 1, sizeof *tok->norm_added);
    tok->norm_added_len = qw_calloc(n + 1, sizeof *tok->norm_added_len);
    if (!m->tok || !m->tok_len || !m->scores || !m->piece_type || !tok->added ||
        !tok->norm_added || !tok->norm_added_len || !qw_tok_map_init(&m->vocab, n)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for %zu pieces", n);
    }
    bool first = true;
    for (size_t id = 0; id < n; id++) {
        const spm_piece *pc = &sp->pieces[id];
        m->tok[id] = qw_strndup(pc->text, pc->len);
        if (!m->tok[id]) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        m->tok_len[id] = pc->len;
        m->scores[id] = pc->score;
        m->piece_type[id] = pc->type;
        if (qw_tok_map_get(&m->vocab, m->tok[id], pc->len) >= 0) {
            char key[48];
            snprintf(key, sizeof key, "pieces[%zu]", id);
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: \"%s\" is defined twice", key,
                              m->tok[id]);
        }
        if (!qw_tok_map_put(&m->vocab, m->tok[id], pc->len, (int32_t)id)) {
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
        if (pc->type == SPM_PIECE_NORMAL && (first || pc->score < m->min_score)) {
            m->min_score = pc->score;
            first = false;
        }
        if (pc->type == SPM_PIECE_UNKNOWN) m->unk_id = (int32_t)id;
        if (pc->type == SPM_PIECE_USER_DEFINED) {
            tok_added *a = &tok->added[tok->n_added++];
            a->content = qw_strndup(m->tok[id], pc->len);
            if (!a->content) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            a->len = pc->len;
            a->id = (int32_t)id;
        }
    }
    return QW_OK;
}

static qw_status build_unigram_trie(tok_model *m, qw_error *err) {
    m->trie_id = qw_malloc_array(1024, sizeof *m->trie_id);
    if (!m->trie_id) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    m->trie_id[0] = -1;
    m->n_nodes = 1;
    m->cap_nodes = 1024;
    for (size_t id = 0; id < m->n_tok; id++) {
        if (m->piece_type[id] != SPM_PIECE_NORMAL) continue; /* control, byte, unused: not text */
        uint32_t node = 0;
        for (size_t k = 0; k < m->tok_len[id]; k++) {
            unsigned char c = (unsigned char)m->tok[id][k];
            int32_t child;
            if (!tok_pairmap_get(&m->trie, node, c, NULL, &child)) {
                if (m->n_nodes == m->cap_nodes) {
                    int32_t *t = qw_realloc_array(m->trie_id, m->cap_nodes * 2, sizeof *t);
                    if (!t) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                    m->trie_id = t;
                    m->cap_nodes *= 2;
                }
                child = (int32_t)m->n_nodes++;
                m->trie_id[child] = -1;
                if (!tok_pairmap_put(&m->trie, node, c, 0, child)) {
                    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                }
            }
            node = (uint32_t)child;
        }
        m->trie_id[node] = (int32_t)id;
    }
    return QW_OK;
}

/* Everything after parsing: parse errors already name the file, these get it prefixed. */
static qw_status build_spm(qw_tokenizer *tok, const spm_proto *proto, qw_error *err) {
    const spm_proto sp = *proto;
    if (sp.model_type != SPM_MODEL_UNIGRAM && sp.model_type != SPM_MODEL_BPE) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "trainer_spec.model_type", -1,
                          "trainer_spec.model_type %llu (%s) is not supported (UNIGRAM and BPE "
                          "are)",
                          (unsigned long long)sp.model_type, spm_model_type_name(sp.model_type));
    }
    if (sp.has_charsmap) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "normalizer_spec.precompiled_charsmap",
                          -1, "normalizer_spec.precompiled_charsmap: normalization rules \"%s\" (a "
                              "precompiled charsmap) are not supported; only identity is",
                          sp.normalizer_name);
    }
    if (sp.whitespace_as_suffix) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "trainer_spec.treat_whitespace_as_suffix",
                          -1, "trainer_spec.treat_whitespace_as_suffix is not supported");
    }
    tok_model *m = &tok->model;
    m->type = sp.model_type == SPM_MODEL_BPE ? TOK_MODEL_SPM_BPE : TOK_MODEL_UNIGRAM;
    m->unk_id = -1;
    m->byte_fallback = sp.byte_fallback;
    m->spm_f32 = true;
    QW_TRY(load_pieces(tok, &sp, err));
    if (m->type == TOK_MODEL_UNIGRAM) QW_TRY(build_unigram_trie(m, err));
    QW_TRY(tok_model_finish_load(m, err));
    tok->n_vocab = m->n_tok;

    tok->normalizer = qw_calloc(1, sizeof *tok->normalizer);
    tok->decoder = qw_calloc(1, sizeof *tok->decoder);
    if (!tok->normalizer || !tok->decoder) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    tok->normalizer->kind = &SPM_NORM;
    tok->normalizer->strip_left = sp.remove_extra_whitespaces;
    tok->normalizer->strip_right = sp.add_dummy_prefix;
    tok->normalizer->utf8proc_options = sp.escape_whitespaces;
    tok->decoder->kind = &SPM_DEC;
    tok->decoder->ctx = m; /* piece types */
    tok->decoder->start = sp.add_dummy_prefix;
    tok->decoder->stop = sp.remove_extra_whitespaces;

    if (sp.bos_id >= 0 && (size_t)sp.bos_id < m->n_tok) {
        tok->post.before = qw_malloc_array(1, sizeof(int32_t));
        if (!tok->post.before) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        tok->post.before[0] = (int32_t)sp.bos_id;
        tok->post.n_before = 1;
        tok->has_post = true;
    }
    /* user-defined pieces: cut out of the raw text first */
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        QW_TRY(tok_trie_add(&tok->trie_raw, a->content, a->len, (int32_t)i) == QW_OK
                   ? QW_OK
                   : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory"));
    }
    return tok_added_finish(tok, err);
}

qw_status qw_tokenizer_load_spm_buffer(const void *data, size_t len, const char *label,
                                       qw_tokenizer **out, qw_error *err) {
    *out = NULL;
    if (!label) label = "tokenizer.model";
    qw_tokenizer *tok = qw_calloc(1, sizeof *tok);
    if (!tok) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", label);
    spm_proto sp = {0};
    qw_status st = data || !len ? spm_proto_parse(data, len, label, &sp, err)
                                : qw_fail(err, QW_ERR_INVALID_ARG, "%s: no data", label);
    if (st == QW_OK) {
        st = build_spm(tok, &sp, err);
        if (st != QW_OK) qw_error_prefix(err, "%s: ", label);
    }
    spm_proto_free(&sp);
    if (st != QW_OK) {
        qw_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return QW_OK;
}

qw_status qw_tokenizer_load_spm(const char *path, qw_tokenizer **out, qw_error *err) {
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    QW_TRY(qw_file_read_all(path, (size_t)1 << 30, &data, &len, err));
    qw_status st = qw_tokenizer_load_spm_buffer(data, len, path, out, err);
    qw_free(data);
    return st;
}

qw_status qw_tokenizer_load_dir(const char *dir, qw_tokenizer **out, qw_error *err) {
    *out = NULL;
    char *json = qw_path_join(dir, "tokenizer.json");
    char *spm = qw_path_join(dir, "tokenizer.model");
    qw_status st;
    if (!json || !spm) {
        st = qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", dir);
    } else if (qw_path_is_file(json)) {
        st = qw_tokenizer_load_json(json, out, err);
    } else if (qw_path_is_file(spm)) {
        st = qw_tokenizer_load_spm(spm, out, err);
    } else {
        st = qw_fail(err, QW_ERR_NOT_FOUND, "%s: no tokenizer.json or tokenizer.model", dir);
    }
    qw_free(json);
    qw_free(spm);
    return st;
}
