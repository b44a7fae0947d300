/*
 * tokenizer.h — a HuggingFace tokenizer.json pipeline (added tokens, normalizer, pre-tokenizer,
 * BPE or Unigram model, post-processor, decoder) that encodes and decodes text to the same ids
 * and strings as the `tokenizers` library.
 *
 * Text handed to encode may be any bytes: invalid UTF-8 is first replaced the way Python's
 * bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do it (one U+FFFD
 * per maximal invalid subsequence), because HF's API only takes valid strings; so encoding raw
 * bytes here equals HF encoding their lossy decoding.
 *
 * A qw_tokenizer is immutable after loading except for internal caches and regex match scratch:
 * one handle must not be used by two threads at once (load one per thread instead).
 */
#ifndef QW_TOKENIZER_H
#define QW_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef struct qw_tokenizer qw_tokenizer;

/* Token ids, grown by encode; the caller frees `ids` with qw_free (or qw_token_ids_free). */
typedef struct qw_token_ids {
    int32_t *ids;
    size_t n;
    size_t cap;
} qw_token_ids;

void qw_token_ids_free(qw_token_ids *ids);

/* Loads a tokenizer.json file / buffer. A malformed or wrongly typed field is QW_ERR_CORRUPT and
 * a component this code does not implement is QW_ERR_UNSUPPORTED_INPUT; both name the key path
 * (e.g. "model.merges[12]"). `label` names the buffer in messages. The caller frees *out. */
qw_status qw_tokenizer_load_json(const char *path, qw_tokenizer **out, qw_error *err);
qw_status qw_tokenizer_load_json_buffer(const char *data, size_t len, const char *label,
                                        qw_tokenizer **out, qw_error *err);

/* Loads a SentencePiece tokenizer.model (for models without tokenizer.json): BPE or Unigram with
 * identity normalization rules (a precompiled charsmap such as nmt_nfkc is
 * QW_ERR_UNSUPPORTED_INPUT). Encode and decode then follow the `sentencepiece` library:
 * add_special prepends the BOS piece; decode always drops control pieces. */
qw_status qw_tokenizer_load_spm(const char *path, qw_tokenizer **out, qw_error *err);
qw_status qw_tokenizer_load_spm_buffer(const void *data, size_t len, const char *label,
                                       qw_tokenizer **out, qw_error *err);

/* Loads DIR/tokenizer.json, or DIR/tokenizer.model when there is no tokenizer.json (as HF
 * transformers prefers the fast tokenizer file); neither is QW_ERR_NOT_FOUND. */
qw_status qw_tokenizer_load_dir(const char *dir, qw_tokenizer **out, qw_error *err);

/* Encodes text[0..len) (any bytes) as HF's Tokenizer.encode(text, add_special_tokens), replacing
 * the contents of *out (out->n is reset first; its buffer is reused). The file's "truncation" and
 * "padding" apply as in HF's encode of one text (padding "BatchLongest" pads a text to its own
 * length, rounded up to pad_to_multiple_of). */
qw_status qw_tokenizer_encode(qw_tokenizer *tok, const char *text, size_t len, bool add_special,
                              qw_token_ids *out, qw_error *err);

/* Decodes ids as HF's Tokenizer.decode(ids, skip_special_tokens). Ids outside the vocabulary are
 * skipped as HF skips them. *text_out is NUL-terminated valid UTF-8 (it may also contain NULs:
 * *len_out counts bytes); the caller frees it with qw_free. */
qw_status qw_tokenizer_decode(qw_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              char **text_out, size_t *len_out, qw_error *err);

/* Number of ids (the largest id + 1, added tokens included). */
size_t qw_tokenizer_vocab_size(const qw_tokenizer *tok);

void qw_tokenizer_free(qw_tokenizer *tok);

#endif /* QW_TOKENIZER_H */
