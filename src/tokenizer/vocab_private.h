/*
 * vocab_private.h — what the files of the vocabulary loader share: the token-text hash map, the
 * two tokenizer readers (tokenizer.json, SentencePiece tokenizer.model) and small helpers. Not a
 * public interface; only src/tokenizer/ includes it.
 */
#ifndef QW_VOCAB_PRIVATE_H
#define QW_VOCAB_PRIVATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "vocab.h"

/* More embedding rows than this is a broken config, not a vocabulary: refuse it before allocating
 * one string per row. (The largest published vocabularies are around 2^18.) */
#define QW_VOCAB_MAX_ROWS (1u << 24)

/* Score and type llama.cpp's converter gives an id that no tokenizer file names. */
#define QW_VOCAB_PAD_SCORE (-10000.0f)
/* Score the converter gives added tokens in a SentencePiece vocabulary. */
#define QW_VOCAB_ADDED_SCORE (-1000.0f)

/* ---- token text -> id ----------------------------------------------------------------------- */

/* Open addressing over borrowed keys (the caller keeps the strings alive while the map is used).
 * The first id inserted for a text wins, as in a JSON object, whose keys are unique anyway. */
typedef struct qw_tok_map {
    const char **keys;
    size_t *lens;
    int32_t *ids;
    size_t cap; /* a power of two; 0 when empty */
    size_t count;
} qw_tok_map;

bool qw_tok_map_init(qw_tok_map *m, size_t expected);
/* False only when out of memory. */
bool qw_tok_map_put(qw_tok_map *m, const char *key, size_t len, int32_t id);
/* The id, or -1. */
int32_t qw_tok_map_get(const qw_tok_map *m, const char *key, size_t len);
void qw_tok_map_free(qw_tok_map *m);

/* ---- shared helpers ------------------------------------------------------------------------- */

/* Allocates tokens/types (and scores when with_scores) for n rows, every row the converter's
 * "[PAD<id>]" of type UNUSED (score QW_VOCAB_PAD_SCORE). */
qw_status qw_vocab_alloc_rows(qw_vocab *v, uint32_t n, bool with_scores, const char *label,
                              qw_error *err);

/* Replaces row `id`'s text with a copy of text[0..len). */
qw_status qw_vocab_set_text(qw_vocab *v, uint32_t id, const char *text, size_t len,
                            const char *label, qw_error *err);

/* llama.cpp converter's does_token_look_special: added tokens that some models forget to mark
 * special ("<|...|>", "<｜...｜>", "<unused...>", "<pad>", "<mask>", "<2mass>", "[@BOS@]"). */
bool qw_token_looks_special(const char *text);

/* Copies text with every U+2581 (▁) replaced by a space, as the converter pre-normalizes
 * user-defined added tokens (llama.cpp matches them against raw text). */
char *qw_token_unescape_spaces(const char *text);

/* True for "<0xXX>" (two hex digits, either case): SentencePiece byte pieces. */
bool qw_token_is_byte(const char *text);

/* ---- readers -------------------------------------------------------------------------------- */

/*
 * Fills model, pre, tokens, scores, types, merges and add_space_prefix of `v` from a parsed
 * tokenizer.json (`path` names it in messages). The pre-tokenizer structure must be one of the
 * known table rows, else QW_ERR_UNSUPPORTED_INPUT describing what was found.
 */
qw_status qw_vocab_read_tokenizer_json(qw_vocab *v, const json_t *root, const char *path,
                                       uint32_t n_rows, qw_error *err);

/*
 * Fills model ("llama"), pre ("default"), tokens, scores, types and add_space_prefix of `v` from
 * the bytes of a SentencePiece ModelProto (tokenizer.model). Only BPE models are accepted
 * (llama.cpp's "llama" tokenizer merges by score, which reproduces SentencePiece BPE, not
 * Unigram).
 */
qw_status qw_vocab_read_spm_model(qw_vocab *v, const uint8_t *data, size_t size,
                                  const char *path, uint32_t n_rows, qw_error *err);

#endif /* QW_VOCAB_PRIVATE_H */
