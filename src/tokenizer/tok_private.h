/*
 * tok_private.h — what the files of the HF-exact tokenizer share: the piece lists the pipeline
 * stages pass along, the component structs (normalizers, pre-tokenizers, model, decoders,
 * post-processor) and their kind tables, regex patterns and Unicode helpers. Only src/tokenizer/
 * includes it.
 */
#ifndef QW_TOK_PRIVATE_H
#define QW_TOK_PRIVATE_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "tokenizer.h"
#include "vocab_private.h"

/* ---- UTF-8 and Unicode ---------------------------------------------------------------------- */

/* Decodes one code point of valid UTF-8 at s (n > 0 bytes left); returns its byte length. */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Length of the code point that starts with byte c (valid UTF-8). */
size_t tok_utf8_len(unsigned char c);
size_t tok_utf8_put(uint32_t cp, char *out);
/* Appends s with every maximal invalid subsequence replaced by U+FFFD (as from_utf8_lossy). */
bool tok_utf8_lossy(const char *s, size_t n, qw_buf *out);
bool tok_utf8_valid(const char *s, size_t n);

/* Rust's char::is_whitespace (the White_Space property). */
bool tok_is_whitespace(uint32_t cp);
/* Rust's char::is_alphanumeric (Alphabetic or Numeric); the regex crate's \w adds marks and Pc. */
bool tok_is_word(uint32_t cp);
bool tok_is_numeric(uint32_t cp);
bool tok_is_punctuation(uint32_t cp);

/* GPT-2's byte <-> printable-character map. */
typedef struct tok_bytemap {
    char enc[256][3]; /* UTF-8 of the character byte b stands for */
    uint8_t enc_len[256];
    int16_t dec[512]; /* code point (< 512) -> byte, or -1 */
} tok_bytemap;
const tok_bytemap *tok_bytemap_get(void);

/* ---- piece lists ---------------------------------------------------------------------------- */

/* A run of text (owned by the list) or, when id >= 0, a token already decided (an added token).
 * at_origin: the piece starts at offset 0 of the input (Metaspace's prepend_scheme "first"). */
typedef struct tok_piece {
    size_t off;
    size_t len;
    int32_t id;
    bool at_origin;
} tok_piece;

typedef struct tok_list {
    qw_buf text;
    tok_piece *v;
    size_t n;
    size_t cap;
} tok_list;

/* Copies s (which must not point into l's own text) as a new piece. */
bool tok_list_push(tok_list *l, const char *s, size_t len, int32_t id, bool at_origin);
void tok_list_clear(tok_list *l);
void tok_list_free(tok_list *l);
static inline const char *tok_list_str(const tok_list *l, size_t i) {
    return l->text.data ? l->text.data + l->v[i].off : "";
}

/* A matched (or unmatched) span of a string, as HF's Pattern::find_matches returns them. */
typedef struct tok_span {
    size_t start;
    size_t end;
    bool match;
} tok_span;

typedef struct tok_spans {
    tok_span *v;
    size_t n;
    size_t cap;
} tok_spans;

bool tok_spans_push(tok_spans *s, size_t start, size_t end, bool match);
void tok_spans_free(tok_spans *s);

/* HF's SplitDelimiterBehavior. */
typedef enum tok_behavior {
    TOK_REMOVED,
    TOK_ISOLATED,
    TOK_MERGED_PREV,
    TOK_MERGED_NEXT,
    TOK_CONTIGUOUS
} tok_behavior;

/* Appends the pieces of s that `spans` (covering s) and `behavior` give; empty ones are dropped
 * as HF drops them. */
bool tok_split_emit(const char *s, size_t n, tok_spans *spans, tok_behavior behavior,
                    bool at_origin, tok_list *out);

/* ---- patterns: a literal string or a PCRE2 regex (UTF + UCP, JIT) ---------------------------- */

typedef struct tok_pattern {
    char *literal; /* when not a regex */
    size_t literal_len;
    pcre2_code *re;
    pcre2_match_data *md;
} tok_pattern;

/* Parses {"String": s} or {"Regex": r}; `key` names the field in errors. */
qw_status tok_pattern_parse(const json_t *v, const char *key, tok_pattern *p, qw_error *err);
qw_status tok_pattern_compile(tok_pattern *p, const char *regex, size_t len, const char *key,
                              qw_error *err);
/* Fills spans covering s[0..n): matches flagged (or, when invert, non-matches flagged), as
 * HF's find_matches (an empty match right after the previous match is skipped, as Oniguruma's
 * find_iter does). */
qw_status tok_pattern_spans(tok_pattern *p, const char *s, size_t n, bool invert, tok_spans *out,
                            qw_error *err);
void tok_pattern_free(tok_pattern *p);

/* ---- JSON fields: missing/null gives the default; a wrong type is QW_ERR_CORRUPT naming
 * "key.field" ------------------------------------------------------------------------------- */

qw_status tok_json_bool(const json_t *o, const char *key, const char *field, bool def, bool *out,
                        qw_error *err);
/* *out is borrowed from o (NULL when missing and not required). */
qw_status tok_json_str(const json_t *o, const char *key, const char *field, bool required,
                       const char **out, size_t *len, qw_error *err);
qw_status tok_json_uint(const json_t *o, const char *key, const char *field, size_t def,
                        size_t *out, qw_error *err);
/* A required array: missing, null or another type is QW_ERR_CORRUPT naming "key.field". */
qw_status tok_json_array(const json_t *o, const char *key, const char *field,
                         const json_t **out, qw_error *err);

/* ---- components ----------------------------------------------------------------------------- */

typedef struct tok_norm tok_norm;
typedef struct tok_pre tok_pre;
typedef struct tok_dec tok_dec;
typedef struct tok_post tok_post;

typedef struct tok_norm_kind {
    const char *name;
    qw_status (*apply)(const tok_norm *n, const char *s, size_t len, qw_buf *out, qw_error *err);
} tok_norm_kind;

struct tok_norm {
    const tok_norm_kind *kind;
    int utf8proc_options;
    char *str; /* Prepend's text, Replace's content */
    size_t str_len;
    tok_pattern pattern;
    bool strip_left, strip_right;
    tok_norm *children;
    size_t n_children;
};

typedef struct tok_pre_kind {
    const char *name;
    qw_status (*apply)(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                       qw_error *err);
} tok_pre_kind;

typedef enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend;

struct tok_pre {
    const tok_pre_kind *kind;
    tok_pattern pattern;
    tok_behavior behavior;
    bool invert;
    bool add_prefix_space, use_regex;
    bool individual_digits;
    char repl[8]; /* Metaspace replacement character */
    size_t repl_len;
    tok_prepend prepend;
    bool split;
    tok_pre *children;
    size_t n_children;
    tok_spans spans; /* scratch */
    tok_list s0, s1; /* Sequence's scratch */
};

typedef struct tok_dec_kind {
    const char *name;
    qw_status (*apply)(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err);
} tok_dec_kind;

struct tok_dec {
    const tok_dec_kind *kind;
    char *str; /* Replace content */
    size_t str_len;
    tok_pattern pattern;
    uint32_t content; /* Strip's character, Metaspace's replacement */
    size_t start, stop;
    tok_prepend prepend;
    const void *ctx; /* the SentencePiece decoder's model (piece types) */
    tok_dec *children;
    size_t n_children;
};

/* A post-processor's effect on one sequence: ids before and after. */
struct tok_post {
    int32_t *before;
    size_t n_before;
    int32_t *after;
    size_t n_after;
};

/* ---- models --------------------------------------------------------------------------------- */

/* TOK_MODEL_SPM_BPE is SentencePiece's own BPE (tokenizer.model without tokenizer.json): merges
 * by the score of the merged piece, not by a merge list. */
typedef enum tok_model_type { TOK_MODEL_BPE, TOK_MODEL_UNIGRAM, TOK_MODEL_SPM_BPE } tok_model_type;

typedef struct tok_pairmap {
    uint64_t *keys; /* 0 = empty */
    uint32_t *ranks;
    int32_t *vals;
    size_t cap;
    size_t count;
} tok_pairmap;

bool tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, int32_t val);
/* True when found. */
bool tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, int32_t *val);
void tok_pairmap_free(tok_pairmap *m);

/* word -> ids cache for BPE (cleared when full). */
typedef struct tok_cache {
    uint64_t *hashes;
    uint32_t *key_off, *key_len, *ids_off, *ids_n; /* slot is empty when key_len == UINT32_MAX */
    size_t cap, count;
    qw_buf keys;
    int32_t *ids;
    size_t n_ids, cap_ids;
} tok_cache;

typedef struct tok_model {
    tok_model_type type;
    char **tok; /* id -> text (NULL for ids the model does not have) */
    uint32_t *tok_len;
    size_t n_tok;
    qw_tok_map vocab;
    /* BPE */
    tok_pairmap merges;
    bool byte_fallback, ignore_merges, fuse_unk;
    int32_t unk_id;
    char *unk_token; /* BPE names it; resolved on use as HF does */
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_len, suffix_len;
    int32_t byte_id[256]; /* "<0xXX>" ids, -1 when absent */
    tok_cache cache;
    /* Unigram */
    double *scores;
    double min_score;
    tok_pairmap trie; /* (node, byte) -> child node */
    int32_t *trie_id; /* node -> token id, -1 */
    size_t n_nodes, cap_nodes;
    /* SentencePiece (tokenizer.model) only */
    uint8_t *piece_type; /* id -> SPM_PIECE_* (spm_proto.h), or NULL for tokenizer.json models */
    bool spm_f32;        /* Viterbi sums in float, as sentencepiece does */
    /* scratch */
    void *scratch;
    size_t scratch_bytes;
} tok_model;

/* SentencePiece's BPE on one normalized segment (tok_spm.c). */
qw_status tok_spm_bpe_encode(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                             qw_error *err);
qw_status tok_model_encode(tok_model *m, const char *s, size_t n, qw_token_ids *out,
                           qw_error *err);
qw_status tok_model_finish_load(tok_model *m, qw_error *err);
void tok_model_free(tok_model *m);
bool tok_ids_push(qw_token_ids *ids, int32_t id);

/* ---- the tokenizer -------------------------------------------------------------------------- */

typedef struct tok_added {
    char *content;
    size_t len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* Byte trie over added-token texts, for leftmost-longest matching. */
typedef struct tok_trie {
    tok_pairmap edges;
    int32_t *term; /* node -> index into added[], -1 */
    size_t n_nodes, cap_nodes;
    bool first_byte[256];
} tok_trie;

struct qw_tokenizer {
    tok_model model;
    tok_added *added;
    size_t n_added;
    tok_trie trie_raw, trie_norm;
    char **norm_added; /* normalized text of normalized added tokens (trie_norm keys) */
    size_t *norm_added_len;
    int32_t *added_of_id; /* id -> index into added[], or -1 (n_vocab + 1 entries) */
    qw_tok_map special_text; /* contents of special added tokens (decode skips them) */
    tok_norm *normalizer; /* NULL when none */
    tok_pre *pre;
    tok_dec *decoder;
    struct tok_post post;
    bool has_post;
    /* "truncation" and "padding": HF's encode applies them to every single sequence */
    bool has_trunc, trunc_left, trunc_second_only;
    size_t trunc_max;
    bool has_pad, pad_left;
    size_t pad_fixed; /* 0: BatchLongest, which pads a single sequence to itself */
    size_t pad_multiple;
    int32_t pad_id;
    size_t n_vocab;
    /* scratch */
    tok_list l0, l1, l2, l3;
    qw_buf b0, b1;
    tok_spans spans;
};

/* Adds an added token's text to a matching trie (QW_ERR_NO_MEMORY only). */
qw_status tok_trie_add(tok_trie *t, const char *s, size_t len, int32_t index);
/* Builds the id -> added token map and the set of special texts once added[] is complete. */
qw_status tok_added_finish(qw_tokenizer *tok, qw_error *err);

/* Parsers (tok_json.c builds these; tok_text.c and tok_decode.c apply them). */
qw_status tok_norm_parse(const json_t *v, const char *key, tok_norm *n, qw_error *err);
qw_status tok_norm_apply(const tok_norm *n, const char *s, size_t len, qw_buf *out,
                         qw_error *err);
void tok_norm_free(tok_norm *n);
qw_status tok_pre_parse(const json_t *v, const char *key, tok_pre *p, qw_error *err);
qw_status tok_pre_apply(tok_pre *p, const char *s, size_t len, bool at_origin, tok_list *out,
                        qw_error *err);
void tok_pre_free(tok_pre *p);
qw_status tok_dec_parse(const json_t *v, const char *key, tok_dec *d, qw_error *err);
qw_status tok_dec_apply(const tok_dec *d, tok_list *in, tok_list *out, qw_error *err);
void tok_dec_free(tok_dec *d);

#endif /* QW_TOK_PRIVATE_H */
