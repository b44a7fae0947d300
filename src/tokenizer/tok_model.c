/*
 * tok_model.c — the two models of tokenizer.json that qwodel's families use, run on one
 * pre-tokenized piece at a time:
 *
 * BPE: the piece's characters are the first symbols (a character missing from the vocabulary
 * becomes its "<0xXX>" byte tokens under byte_fallback, else the unknown token, consecutive
 * unknowns fused under fuse_unk); then the adjacent pair of lowest merge rank is merged, ties to
 * the leftmost, until no pair has a merge. A priority queue keyed (rank, position) with lazy
 * invalidation does this in O(n log n), as HF's Word::merge_all. Results are cached per piece.
 *
 * Unigram: Viterbi over the pieces found by a byte trie, each scored by its log probability; a
 * character no piece starts with costs (lowest score - 10) as the unknown token. Consecutive
 * unknowns fuse; pieces missing from the vocabulary fall back to bytes when byte_fallback.
 */
#include <stdio.h>
#include <string.h>

#include "tok_private.h"

#define OOM_MODEL qw_fail(err, QW_ERR_NO_MEMORY, "out of memory tokenizing")

/* ---- cache ---------------------------------------------------------------------------------- */

#define CACHE_SLOTS 65536u /* power of two; cleared when half full */

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static void cache_clear(tok_cache *c) {
    if (c->key_len) memset(c->key_len, 0xFF, c->cap * sizeof *c->key_len);
    c->count = 0;
    c->keys.len = 0;
    c->n_ids = 0;
}

static bool cache_init(tok_cache *c) {
    c->cap = CACHE_SLOTS;
    c->hashes = qw_malloc_array(c->cap, sizeof *c->hashes);
    c->key_off = qw_malloc_array(c->cap, sizeof *c->key_off);
    c->key_len = qw_malloc_array(c->cap, sizeof *c->key_len);
    c->ids_off = qw_malloc_array(c->cap, sizeof *c->ids_off);
    c->ids_n = qw_malloc_array(c->cap, sizeof *c->ids_n);
    if (!c->hashes || !c->key_off || !c->key_len || !c->ids_off || !c->ids_n) return false;
    cache_clear(c);
    return true;
}

static void cache_free(tok_cache *c) {
    qw_free(c->hashes);
    qw_free(c->key_off);
    qw_free(c->key_len);
    qw_free(c->ids_off);
    qw_free(c->ids_n);
    qw_buf_free(&c->keys);
    qw_free(c->ids);
    memset(c, 0, sizeof *c);
}

/* The slot holding s, or the empty slot where it would go. */
static size_t cache_slot(const tok_cache *c, const char *s, size_t n, uint64_t h) {
    size_t j = (size_t)h & (c->cap - 1);
    while (c->key_len[j] != UINT32_MAX) {
        if (c->hashes[j] == h && c->key_len[j] == n &&
            memcmp(c->keys.data + c->key_off[j], s, n) == 0) {
            break;
        }
        j = (j + 1) & (c->cap - 1);
    }
    return j;
}

static void cache_put(tok_cache *c, const char *s, size_t n, const int32_t *ids, size_t n_ids) {
    if (!c->cap || n > 256 || n_ids > 256) return;
    if ((c->count + 1) * 2 > c->cap || c->keys.len > (64u << 20)) cache_clear(c);
    uint64_t h = hash_str(s, n);
    size_t j = cache_slot(c, s, n, h);
    if (c->key_len[j] != UINT32_MAX) return;
    if (c->n_ids + n_ids > c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids * 2 : 65536;
        while (cap < c->n_ids + n_ids) cap *= 2;
        int32_t *v = qw_realloc_array(c->ids, cap, sizeof *v);
        if (!v) return; /* a cache miss later is harmless */
        c->ids = v;
        c->cap_ids = cap;
    }
    size_t off = c->keys.len;
    if (!qw_buf_append(&c->keys, s, n)) return;
    if (n_ids) memcpy(c->ids + c->n_ids, ids, n_ids * sizeof *ids);
    c->hashes[j] = h;
    c->key_off[j] = (uint32_t)off;
    c->key_len[j] = (uint32_t)n;
    c->ids_off[j] = (uint32_t)c->n_ids;
    c->ids_n[j] = (uint32_t)n_ids;
    c->n_ids += n_ids;
    c->count++;
}

static bool cache_get(const tok_cache *c, const char *s, size_t n, qw_token_ids *out) {
    if (!c->cap || n > 256) return false;
    size_t j = cache_slot(c, s, n, hash_str(s, n));
    if (c->key_len[j] == UINT32_MAX) return false;
    for (uint32_t i = 0; i < c->ids_n[j]; i++) {
        if (!tok_ids_push(out, c->ids[c->ids_off[j] + i])) return false;
    }
    return true;
}

/* ---- BPE ------------------------------------------------------------------------------------ */

typedef struct sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
} sym;

typedef struct merge_item {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} merge_item;

static bool item_less(merge_item a, merge_item b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

typedef struct bpe_scratch {
    sym *syms;
    size_t cap_syms;
    merge_item *heap;
    size_t n_heap, cap_heap;
    qw_buf piece;
} bpe_scratch;

static bool heap_push(bpe_scratch *b, merge_item it) {
    if (b->n_heap == b->cap_heap) {
        size_t cap = b->cap_heap ? b->cap_heap * 2 : 256;
        merge_item *h = qw_realloc_array(b->heap, cap, sizeof *h);
        if (!h) return false;
        b->heap = h;
        b->cap_heap = cap;
    }
    size_t i = b->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(it, b->heap[p])) break;
        b->heap[i] = b->heap[p];
        i = p;
    }
    b->heap[i] = it;
    return true;
}

static merge_item heap_pop(bpe_scratch *b) {
    merge_item top = b->heap[0], last = b->heap[--b->n_heap];
    size_t i = 0, n = b->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        merge_item mv = last;
        if (l < n && item_less(b->heap[l], mv)) {
            m = l;
            mv = b->heap[l];
        }
        if (r < n && item_less(b->heap[r], mv)) m = r;
        if (m == i) break;
        b->heap[i] = b->heap[m];
        i = m;
    }
    if (n) b->heap[i] = last;
    return top;
}

static bpe_scratch *scratch_of(tok_model *m) {
    if (!m->scratch) m->scratch = qw_calloc(1, sizeof(bpe_scratch));
    return m->scratch;
}

static qw_status unk_id_of(tok_model *m, qw_error *err) {
    if (m->unk_id >= 0) return QW_OK;
    int32_t id = qw_tok_map_get(&m->vocab, m->unk_token, strlen(m->unk_token));
    if (id < 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.unk_token", -1,
                          "model.unk_token \"%s\" is not in model.vocab", m->unk_token);
    }
    m->unk_id = id;
    return QW_OK;
}

static qw_status bpe_word(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                          qw_error *err) {
    if (m->ignore_merges) {
        int32_t id = qw_tok_map_get(&m->vocab, s, n);
        if (id >= 0) return tok_ids_push(out, id) ? QW_OK : OOM_MODEL;
    }
    if (cache_get(&m->cache, s, n, out)) return QW_OK;
    bpe_scratch *b = scratch_of(m);
    if (!b) return OOM_MODEL;
    if (b->cap_syms < n) {
        sym *v = qw_realloc_array(b->syms, n, sizeof *v);
        if (!v) return OOM_MODEL;
        b->syms = v;
        b->cap_syms = n;
    }
    size_t ns = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
#define ADD_SYM(ID, LEN)                                                                           \
    do {                                                                                           \
        if (ns == b->cap_syms) {                                                                   \
            sym *v_ = qw_realloc_array(b->syms, b->cap_syms * 2 + 8, sizeof *v_);                  \
            if (!v_) return OOM_MODEL;                                                             \
            b->syms = v_;                                                                          \
            b->cap_syms = b->cap_syms * 2 + 8;                                                     \
        }                                                                                          \
        b->syms[ns] = (sym){(ID), (int32_t)ns - 1, (int32_t)ns + 1, (LEN)};                        \
        ns++;                                                                                      \
    } while (0)
    for (size_t i = 0; i < n;) {
        size_t l = tok_utf8_len((unsigned char)s[i]);
        if (l > n - i) l = n - i;
        const char *piece = s + i;
        size_t plen = l;
        bool first = i == 0, last = i + l == n;
        if ((m->prefix_len && !first) || (m->suffix_len && last)) {
            b->piece.len = 0;
            if ((m->prefix_len && !first && !qw_buf_append(&b->piece, m->prefix, m->prefix_len)) ||
                !qw_buf_append(&b->piece, s + i, l) ||
                (m->suffix_len && last && !qw_buf_append(&b->piece, m->suffix, m->suffix_len))) {
                return OOM_MODEL;
            }
            piece = b->piece.data;
            plen = b->piece.len;
        }
        i += l;
        int32_t id = qw_tok_map_get(&m->vocab, piece, plen);
        if (id >= 0) {
            if (unk >= 0) {
                ADD_SYM(unk, unk_len);
                unk = -1;
            }
            ADD_SYM(id, (uint32_t)l);
            continue;
        }
        if (m->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < plen && all; k++) all = m->byte_id[(unsigned char)piece[k]] >= 0;
            if (all) {
                /* HF does not flush a pending unknown before byte tokens */
                for (size_t k = 0; k < plen; k++) ADD_SYM(m->byte_id[(unsigned char)piece[k]], 1);
                continue;
            }
        }
        if (m->unk_token) {
            QW_TRY(unk_id_of(m, err));
            if (unk >= 0 && m->fuse_unk) {
                unk_len += (uint32_t)l;
            } else {
                if (unk >= 0) ADD_SYM(unk, unk_len);
                unk = m->unk_id;
                unk_len = (uint32_t)l;
            }
        }
    }
    if (unk >= 0) ADD_SYM(unk, unk_len);
#undef ADD_SYM
    if (ns) b->syms[ns - 1].next = -1;
    b->n_heap = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        uint32_t rank;
        int32_t nid;
        if (tok_pairmap_get(&m->merges, (uint32_t)b->syms[i].id, (uint32_t)b->syms[i + 1].id, &rank,
                            &nid) &&
            !heap_push(b, (merge_item){rank, (uint32_t)i, nid})) {
            return OOM_MODEL;
        }
    }
    while (b->n_heap) {
        merge_item top = heap_pop(b);
        sym *cur = &b->syms[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym *right = &b->syms[cur->next];
        int32_t nid;
        if (!tok_pairmap_get(&m->merges, (uint32_t)cur->id, (uint32_t)right->id, NULL, &nid) ||
            nid != top.new_id) {
            continue;
        }
        cur->id = top.new_id;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0) b->syms[cur->next].prev = (int32_t)top.pos;
        uint32_t rank;
        if (cur->prev >= 0 &&
            tok_pairmap_get(&m->merges, (uint32_t)b->syms[cur->prev].id, (uint32_t)cur->id, &rank,
                            &nid) &&
            !heap_push(b, (merge_item){rank, (uint32_t)cur->prev, nid})) {
            return OOM_MODEL;
        }
        cur = &b->syms[top.pos];
        if (cur->next >= 0 &&
            tok_pairmap_get(&m->merges, (uint32_t)cur->id, (uint32_t)b->syms[cur->next].id, &rank,
                            &nid) &&
            !heap_push(b, (merge_item){rank, top.pos, nid})) {
            return OOM_MODEL;
        }
    }
    size_t first_out = out->n;
    for (size_t i = 0; i < ns; i++) {
        if (b->syms[i].len && !tok_ids_push(out, b->syms[i].id)) return OOM_MODEL;
    }
    /* a word can give no ids at all (no symbol in the vocabulary, no unk): out->ids may still be
     * NULL, and NULL + 0 is undefined */
    cache_put(&m->cache, s, n, out->ids ? out->ids + first_out : NULL, out->n - first_out);
    return QW_OK;
}

/* ---- Unigram -------------------------------------------------------------------------------- */

typedef struct best_node {
    double score;
    int64_t start; /* -1: not reached */
    int32_t id;
} best_node;

static qw_status push_string_ids(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                                 qw_error *err) {
    int32_t id = qw_tok_map_get(&m->vocab, s, n);
    if (id >= 0) return tok_ids_push(out, id) ? QW_OK : OOM_MODEL;
    if (m->byte_fallback) {
        bool all = true;
        for (size_t k = 0; k < n && all; k++) all = m->byte_id[(unsigned char)s[k]] >= 0;
        if (all) {
            for (size_t k = 0; k < n; k++) {
                if (!tok_ids_push(out, m->byte_id[(unsigned char)s[k]])) return OOM_MODEL;
            }
            return QW_OK;
        }
    }
    if (m->unk_id < 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "model.unk_id: the text needs an unknown token and "
                                            "the Unigram model has none");
    }
    return tok_ids_push(out, m->unk_id) ? QW_OK : OOM_MODEL;
}

static qw_status unigram_word(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                              qw_error *err) {
    if (n == 0) return QW_OK;
    size_t need = (n + 1) * sizeof(best_node);
    if (m->scratch_bytes < need) {
        void *p = qw_realloc_array(m->scratch, n + 1, sizeof(best_node));
        if (!p) return OOM_MODEL;
        m->scratch = p;
        m->scratch_bytes = need;
    }
    best_node *best = m->scratch;
    for (size_t i = 0; i <= n; i++) best[i] = (best_node){0.0, -1, -1};
    best[0].start = 0;
    double unk_score = m->min_score - 10.0;
    for (size_t at = 0; at < n;) {
        double here = best[at].score;
        size_t mblen = tok_utf8_len((unsigned char)s[at]);
        if (mblen > n - at) mblen = n - at;
        bool single = false;
        uint32_t node = 0;
        for (size_t k = at; k < n; k++) {
            int32_t child;
            if (!tok_pairmap_get(&m->trie, node, (unsigned char)s[k], NULL, &child)) break;
            node = (uint32_t)child;
            int32_t id = m->trie_id[node];
            if (id < 0) continue;
            size_t end = k + 1;
            /* sentencepiece adds in float; HF in double: the sums round differently */
            double cand = m->spm_f32 ? (double)((float)m->scores[id] + (float)here)
                                     : m->scores[id] + here;
            if (best[end].start < 0 || cand > best[end].score) {
                best[end] = (best_node){cand, (int64_t)at, id};
            }
            if (end - at == mblen) single = true;
        }
        if (!single) {
            if (m->unk_id < 0) {
                return qw_fail(err, QW_ERR_CORRUPT, "model.unk_id: the text needs an unknown "
                                                    "token and the Unigram model has none");
            }
            double cand = m->spm_f32 ? (double)((float)unk_score + (float)here) : unk_score + here;
            size_t end = at + mblen;
            if (best[end].start < 0 || cand > best[end].score) {
                best[end] = (best_node){cand, (int64_t)at, m->unk_id};
            }
        }
        at += mblen;
    }
    /* walk back from the end collecting (start, end) byte spans, a run of unknowns as one span;
     * the spans come out last first, as pairs in an id vector, and are emitted in reverse */
    size_t end = n;
    size_t unk_end = 0;
    bool in_unk = false;
    qw_token_ids spans = {0};
    qw_status st = QW_OK;
    while (end > 0 && st == QW_OK) {
        size_t start = (size_t)best[end].start;
        bool is_unk = m->unk_id >= 0 && best[end].id == m->unk_id;
        if (is_unk) {
            if (!in_unk) unk_end = end;
            in_unk = true;
        } else {
            if (in_unk && (!tok_ids_push(&spans, (int32_t)end) ||
                           !tok_ids_push(&spans, (int32_t)unk_end))) {
                st = OOM_MODEL;
            }
            in_unk = false;
            if (!tok_ids_push(&spans, (int32_t)start) || !tok_ids_push(&spans, (int32_t)end)) {
                st = OOM_MODEL;
            }
        }
        end = start;
    }
    if (st == QW_OK && in_unk &&
        (!tok_ids_push(&spans, 0) || !tok_ids_push(&spans, (int32_t)unk_end))) {
        st = OOM_MODEL;
    }
    for (size_t i = spans.n; st == QW_OK && i >= 2; i -= 2) {
        size_t a = (size_t)spans.ids[i - 2], e = (size_t)spans.ids[i - 1];
        st = push_string_ids(m, s + a, e - a, out, err);
    }
    qw_token_ids_free(&spans);
    return st;
}

/* ---- both ----------------------------------------------------------------------------------- */

qw_status tok_model_encode(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                           qw_error *err) {
    if (n > INT32_MAX) return qw_fail(err, QW_ERR_INVALID_ARG, "text piece too long");
    static qw_status (*const ENCODERS[])(tok_model *, const char *, size_t, qw_token_ids *,
                                         qw_error *) = {
        [TOK_MODEL_BPE] = bpe_word,
        [TOK_MODEL_UNIGRAM] = unigram_word,
        [TOK_MODEL_SPM_BPE] = tok_spm_bpe_encode,
    };
    return ENCODERS[m->type](m, s, n, out, err);
}

qw_status tok_model_finish_load(tok_model *m, qw_error *err) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = qw_tok_map_get(&m->vocab, name, 6);
    }
    if (m->type == TOK_MODEL_BPE && !cache_init(&m->cache)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for the BPE cache");
    }
    return QW_OK;
}

void tok_model_free(tok_model *m) {
    for (size_t i = 0; i < m->n_tok; i++) qw_free(m->tok[i]);
    qw_free(m->tok);
    qw_free(m->tok_len);
    qw_tok_map_free(&m->vocab);
    tok_pairmap_free(&m->merges);
    qw_free(m->unk_token);
    qw_free(m->prefix);
    qw_free(m->suffix);
    cache_free(&m->cache);
    qw_free(m->scores);
    tok_pairmap_free(&m->trie);
    qw_free(m->trie_id);
    qw_free(m->piece_type);
    if (m->type == TOK_MODEL_BPE && m->scratch) {
        bpe_scratch *b = m->scratch;
        qw_free(b->syms);
        qw_free(b->heap);
        qw_buf_free(&b->piece);
    }
    qw_free(m->scratch);
    memset(m, 0, sizeof *m);
}
