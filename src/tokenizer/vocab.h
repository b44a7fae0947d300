/*
 * vocab.h — a model's vocabulary as GGUF stores it, loaded from a HuggingFace model directory
 * (tokenizer.json, or tokenizer.model when there is no tokenizer.json, plus tokenizer_config.json,
 * config.json, generation_config.json and chat_template.jinja when present), and written as the
 * `tokenizer.*` metadata that llama.cpp's converter writes.
 */
#ifndef QW_VOCAB_H
#define QW_VOCAB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "gguf.h"

/* GGUF token types (the same numbers as SentencePiece's piece types). */
typedef enum qw_token_type {
    QW_TOKEN_UNDEFINED = 0,
    QW_TOKEN_NORMAL = 1,
    QW_TOKEN_UNKNOWN = 2,
    QW_TOKEN_CONTROL = 3,
    QW_TOKEN_USER_DEFINED = 4,
    QW_TOKEN_UNUSED = 5,
    QW_TOKEN_BYTE = 6
} qw_token_type;

/* The special tokens GGUF names, in the order of this table's rows: bos, eos, unknown, seperator
 * (sic, llama.cpp's spelling), padding, mask, eot, eom, fim_pre, fim_suf, fim_mid, fim_pad,
 * fim_rep, fim_sep. */
typedef enum qw_special_token {
    QW_SPECIAL_BOS,
    QW_SPECIAL_EOS,
    QW_SPECIAL_UNK,
    QW_SPECIAL_SEP,
    QW_SPECIAL_PAD,
    QW_SPECIAL_MASK,
    QW_SPECIAL_EOT,
    QW_SPECIAL_EOM,
    QW_SPECIAL_FIM_PRE,
    QW_SPECIAL_FIM_SUF,
    QW_SPECIAL_FIM_MID,
    QW_SPECIAL_FIM_PAD,
    QW_SPECIAL_FIM_REP,
    QW_SPECIAL_FIM_SEP,
    QW_SPECIAL_COUNT
} qw_special_token;

typedef struct qw_vocab {
    char *model;           /* tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SPM) */
    char *pre;             /* tokenizer.ggml.pre: "llama-bpe", "qwen2", "smollm", "default", ... */
    uint32_t n_tokens;     /* equals the model's embedding rows */
    char **tokens;         /* n_tokens NUL-terminated strings */
    float *scores;         /* n_tokens, or NULL (gpt2 vocabularies have none) */
    int32_t *types;        /* n_tokens qw_token_type values */
    uint64_t n_merges;
    char **merges;         /* "left right", or NULL */
    int64_t special[QW_SPECIAL_COUNT]; /* token id, or -1 when absent */
    int add_bos;           /* 1, 0, or -1 when unspecified */
    int add_eos;
    int add_space_prefix;  /* SPM only; -1 when unspecified */
    char *chat_template;   /* or NULL */
    size_t n_named_templates;  /* non-default templates: tokenizer.chat_template.<name> */
    char **template_names;
    char **named_templates;
} qw_vocab;

/*
 * Loads the vocabulary of the HF model in `dir`. `config` is its parsed config.json (for
 * fallback special-token ids); `n_embd_rows` is the number of rows of the token embedding, which
 * the vocabulary is padded to (ids with no token become "[PAD<id>]", type UNUSED) and must not be
 * smaller than. An unrecognised tokenizer (one whose pre-tokenizer llama.cpp would not know) is
 * QW_ERR_UNSUPPORTED_INPUT naming what was found, never a silently wrong `pre`.
 */
qw_status qw_vocab_load_hf(const char *dir, const json_t *config, uint32_t n_embd_rows,
                           qw_vocab **out, qw_error *err);

/* Writes tokenizer.ggml.* and tokenizer.chat_template in llama.cpp converter's order and types. */
qw_status qw_vocab_write_gguf(const qw_vocab *vocab, qw_gguf_writer *w, qw_error *err);

void qw_vocab_free(qw_vocab *vocab);

/* GGUF key suffix of a special token ("bos", "seperator", "fim_pre", ...). */
const char *qw_special_token_key(qw_special_token which);

#endif /* QW_VOCAB_H */
