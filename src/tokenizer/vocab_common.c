/* Helpers the vocabulary readers share: the token-text hash map, row allocation, token-text
 * predicates. */
#include <string.h>

#include "vocab_private.h"

/* ---- token text -> id ----------------------------------------------------------------------- */

/* FNV-1a: the keys are short and the map is built once per load. */
static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

bool qw_tok_map_init(qw_tok_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < expected * 2) {
        if (cap > SIZE_MAX / 4) return false;
        cap *= 2;
    }
    m->keys = qw_calloc(cap, sizeof *m->keys);
    m->lens = qw_calloc(cap, sizeof *m->lens);
    m->ids = qw_calloc(cap, sizeof *m->ids);
    if (!m->keys || !m->lens || !m->ids) {
        qw_tok_map_free(m);
        return false;
    }
    m->cap = cap;
    return true;
}

static bool map_grow(qw_tok_map *m) {
    qw_tok_map bigger;
    if (!qw_tok_map_init(&bigger, m->cap)) return false; /* doubles the capacity */
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) qw_tok_map_put(&bigger, m->keys[i], m->lens[i], m->ids[i]);
    }
    qw_tok_map_free(m);
    *m = bigger;
    return true;
}

bool qw_tok_map_put(qw_tok_map *m, const char *key, size_t len, int32_t id) {
    if ((m->count + 1) * 2 > m->cap && !map_grow(m)) return false;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        if (!m->keys[i]) {
            m->keys[i] = key;
            m->lens[i] = len;
            m->ids[i] = id;
            m->count++;
            return true;
        }
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return true;
    }
}

int32_t qw_tok_map_get(const qw_tok_map *m, const char *key, size_t len) {
    if (m->cap == 0) return -1;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)hash_bytes(key, len) & mask; m->keys[i]; i = (i + 1) & mask) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return m->ids[i];
    }
    return -1;
}

void qw_tok_map_free(qw_tok_map *m) {
    qw_free(m->keys);
    qw_free(m->lens);
    qw_free(m->ids);
    memset(m, 0, sizeof *m);
}

/* ---- rows ----------------------------------------------------------------------------------- */

qw_status qw_vocab_alloc_rows(qw_vocab *v, uint32_t n, bool with_scores, const char *label,
                              qw_error *err) {
    v->tokens = qw_calloc(n, sizeof *v->tokens);
    v->types = qw_malloc_array(n, sizeof *v->types);
    v->scores = with_scores ? qw_malloc_array(n, sizeof *v->scores) : NULL;
    if (!v->tokens || !v->types || (with_scores && !v->scores)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory for %u tokens", label, n);
    }
    v->n_tokens = n;
    for (uint32_t i = 0; i < n; i++) {
        v->tokens[i] = qw_sprintf("[PAD%u]", i);
        if (!v->tokens[i]) {
            return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory for %u tokens", label, n);
        }
        v->types[i] = QW_TOKEN_UNUSED;
        if (with_scores) v->scores[i] = QW_VOCAB_PAD_SCORE;
    }
    return QW_OK;
}

qw_status qw_vocab_set_text(qw_vocab *v, uint32_t id, const char *text, size_t len,
                            const char *label, qw_error *err) {
    char *copy = qw_strndup(text, len);
    if (!copy) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", label);
    qw_free(v->tokens[id]);
    v->tokens[id] = copy;
    return QW_OK;
}

/* ---- token text predicates ------------------------------------------------------------------ */

bool qw_token_looks_special(const char *t) {
    static const char *const exact[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    /* Open and close marks; "｜" is the full-width bar of deepseek-coder's tokens. */
    static const char *const brackets[][2] = {
        {"<|", "|>"},
        {"<\xEF\xBD\x9C", "\xEF\xBD\x9C>"},
        {"<unused", ">"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (strcmp(t, exact[i]) == 0) return true;
    }
    for (size_t i = 0; i < sizeof brackets / sizeof brackets[0]; i++) {
        if (qw_str_starts_with(t, brackets[i][0]) && qw_str_ends_with(t, brackets[i][1])) {
            return true;
        }
    }
    return false;
}

char *qw_token_unescape_spaces(const char *text) {
    static const char lower_block[] = "\xE2\x96\x81"; /* U+2581 */
    size_t n = strlen(text);
    char *out = qw_malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(text + i, lower_block, 3) == 0) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = text[i++];
        }
    }
    out[o] = '\0';
    return out;
}

static bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool qw_token_is_byte(const char *t) {
    return strlen(t) == 6 && memcmp(t, "<0x", 3) == 0 && is_hex(t[3]) && is_hex(t[4]) &&
           t[5] == '>';
}
