/*
 * tok_encode.c — text to ids in HF `tokenizers`' order:
 *
 *   1. invalid UTF-8 becomes U+FFFD (HF only accepts valid strings; see tokenizer.h);
 *   2. added tokens with normalized=false are cut out of the raw text (leftmost-longest, with
 *      single_word / lstrip / rstrip);
 *   3. each remaining segment is normalized on its own, and added tokens with normalized=true are
 *      cut out of the normalized text the same way;
 *   4. each remaining segment is pre-tokenized into pieces, and the model turns each piece into
 *      ids;
 *   5. "truncation" cuts the sequence (leaving room for the special tokens);
 *   6. with add_special, the post-processor's ids go around the sequence;
 *   7. "padding" pads it.
 */
#include <string.h>

#include "tok_private.h"

#define ENC_OOM qw_fail(err, QW_ERR_NO_MEMORY, "out of memory encoding")

static bool is_space_at_end(const char *s, size_t end, size_t *start_of_char) {
    size_t st = end - 1;
    while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
    uint32_t cp;
    tok_utf8_next(s + st, end - st, &cp);
    *start_of_char = st;
    return tok_is_whitespace(cp);
}

static bool word_before(const char *s, size_t end) {
    if (end == 0) return false;
    size_t st = end - 1;
    while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
    uint32_t cp;
    tok_utf8_next(s + st, end - st, &cp);
    return tok_is_word(cp);
}

static bool word_after(const char *s, size_t start, size_t n) {
    if (start >= n) return false;
    uint32_t cp;
    tok_utf8_next(s + start, n - start, &cp);
    return tok_is_word(cp);
}

/* Appends to `out` the segments of s: added tokens found by trie `t` (id set) and the text
 * between them; HF's AddedVocabulary::find_matches. */
static qw_status split_added(const qw_tokenizer *tok, const tok_trie *t, const char *s, size_t n,
                             bool at_origin, tok_list *out, qw_error *err) {
    size_t start_offset = 0, pos = 0;
    while (t->n_nodes > 1 && pos < n) {
        if (!t->first_byte[(unsigned char)s[pos]]) {
            pos++;
            continue;
        }
        uint32_t node = 0;
        int32_t best = -1;
        size_t best_end = 0;
        for (size_t k = pos; k < n; k++) {
            int32_t child;
            if (!tok_pairmap_get(&t->edges, node, (unsigned char)s[k], NULL, &child)) break;
            node = (uint32_t)child;
            if (t->term[node] >= 0) {
                best = t->term[node];
                best_end = k + 1;
            }
        }
        if (best < 0) {
            pos++;
            continue;
        }
        const tok_added *a = &tok->added[best];
        size_t start = pos, stop = best_end;
        pos = best_end; /* matching resumes after the match, whatever happens to it */
        if (a->single_word && (word_before(s, start) || word_after(s, stop, n))) continue;
        if (a->lstrip) {
            size_t ns = start, cs;
            while (ns > 0 && is_space_at_end(s, ns, &cs)) ns = cs;
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                size_t l = tok_utf8_next(s + stop, n - stop, &cp);
                if (!tok_is_whitespace(cp)) break;
                stop += l;
            }
        }
        if (start_offset < start &&
            !tok_list_push(out, s + start_offset, start - start_offset, -1,
                           at_origin && start_offset == 0)) {
            return ENC_OOM;
        }
        if (!tok_list_push(out, s + start, stop - start, a->id, at_origin && start == 0)) {
            return ENC_OOM;
        }
        start_offset = stop;
    }
    if (start_offset < n &&
        !tok_list_push(out, s + start_offset, n - start_offset, -1,
                       at_origin && start_offset == 0)) {
        return ENC_OOM;
    }
    return QW_OK;
}

/* HF truncates the sequence before the post-processor, leaving room for its special tokens;
 * what is cut off goes to Encoding.overflowing, which ids never include. */
static qw_status truncate_ids(const qw_tokenizer *tok, bool add_special, size_t content,
                              qw_token_ids *out, qw_error *err) {
    if (tok->trunc_second_only) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, "truncation.strategy", -1,
                          "truncation.strategy OnlySecond needs a pair of sequences");
    }
    size_t added = add_special && tok->has_post ? tok->post.n_before + tok->post.n_after : 0;
    size_t max = tok->trunc_max > added ? tok->trunc_max - added : 0;
    size_t n = out->n - content;
    if (n <= max) return QW_OK;
    if (tok->trunc_left) {
        memmove(out->ids + content, out->ids + out->n - max, max * sizeof *out->ids);
    }
    out->n = content + max;
    return QW_OK;
}

static qw_status pad_ids(const qw_tokenizer *tok, qw_token_ids *out, qw_error *err) {
    size_t target = tok->pad_fixed ? tok->pad_fixed : out->n;
    if (tok->pad_multiple && target % tok->pad_multiple) {
        target += tok->pad_multiple - target % tok->pad_multiple;
    }
    if (out->n >= target) return QW_OK;
    size_t add = target - out->n, n = out->n;
    for (size_t i = 0; i < add; i++) {
        if (!tok_ids_push(out, tok->pad_id)) return ENC_OOM;
    }
    if (tok->pad_left) {
        memmove(out->ids + add, out->ids, n * sizeof *out->ids);
        for (size_t i = 0; i < add; i++) out->ids[i] = tok->pad_id;
    }
    return QW_OK;
}

qw_status qw_tokenizer_encode(qw_tokenizer *tok, const char *text, size_t len, bool add_special,
                              qw_token_ids *out, qw_error *err) {
    if (!tok || !out || (len && !text)) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "encode: no tokenizer, text or output");
    }
    out->n = 0;
    const char *s = text;
    if (len && !tok_utf8_valid(text, len)) {
        tok->b0.len = 0;
        if (!tok_utf8_lossy(text, len, &tok->b0)) return ENC_OOM;
        s = tok->b0.data;
        len = tok->b0.len;
    }
    if (add_special && tok->has_post) {
        for (size_t i = 0; i < tok->post.n_before; i++) {
            if (!tok_ids_push(out, tok->post.before[i])) return ENC_OOM;
        }
    }
    size_t content = out->n;
    tok_list *raw = &tok->l0, *norm = &tok->l1, *pre = &tok->l2;
    tok_list_clear(raw);
    tok_list_clear(norm);
    QW_TRY(split_added(tok, &tok->trie_raw, s, len, true, raw, err));
    for (size_t i = 0; i < raw->n; i++) {
        const tok_piece *p = &raw->v[i];
        if (p->id >= 0) {
            if (!tok_list_push(norm, "", 0, p->id, p->at_origin)) return ENC_OOM;
            continue;
        }
        const char *seg = tok_list_str(raw, i);
        size_t seg_len = p->len;
        if (tok->normalizer) {
            tok->b1.len = 0;
            QW_TRY(tok_norm_apply(tok->normalizer, seg, seg_len, &tok->b1, err));
            seg = tok->b1.data ? tok->b1.data : "";
            seg_len = tok->b1.len;
        }
        QW_TRY(split_added(tok, &tok->trie_norm, seg, seg_len, p->at_origin, norm, err));
    }
    for (size_t i = 0; i < norm->n; i++) {
        const tok_piece *p = &norm->v[i];
        if (p->id >= 0) {
            if (!tok_ids_push(out, p->id)) return ENC_OOM;
            continue;
        }
        const char *seg = tok_list_str(norm, i);
        if (!tok->pre) {
            QW_TRY(tok_model_encode(&tok->model, seg, p->len, out, err));
            continue;
        }
        tok_list_clear(pre);
        QW_TRY(tok_pre_apply(tok->pre, seg, p->len, p->at_origin, pre, err));
        for (size_t k = 0; k < pre->n; k++) {
            QW_TRY(tok_model_encode(&tok->model, tok_list_str(pre, k), pre->v[k].len, out, err));
        }
    }
    if (tok->has_trunc) QW_TRY(truncate_ids(tok, add_special, content, out, err));
    if (add_special && tok->has_post) {
        for (size_t i = 0; i < tok->post.n_after; i++) {
            if (!tok_ids_push(out, tok->post.after[i])) return ENC_OOM;
        }
    }
    if (tok->has_pad) QW_TRY(pad_ids(tok, out, err));
    return QW_OK;
}
