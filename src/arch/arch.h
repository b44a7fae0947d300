/*
 * arch.h — one table row per model architecture: which HF classes it covers, how HF tensor names
 * become GGUF names, which transforms apply, and which hyperparameter keys llama.cpp expects.
 * No other code switches on the architecture.
 */
#ifndef QW_ARCH_H
#define QW_ARCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "gguf.h"

/* What happens to a tensor's rows on the way to GGUF. */
typedef enum qw_transform {
    QW_TRANSFORM_NONE = 0,
    QW_TRANSFORM_PERMUTE_Q, /* rotate-half -> interleaved rope order, heads = n_head */
    QW_TRANSFORM_PERMUTE_K, /* same with heads = n_head_kv */
    QW_TRANSFORM_COUNT
} qw_transform;

/* Human-readable name of a transform ("" for none). */
const char *qw_transform_name(qw_transform t);

/* Hyperparameters, from config.json or from GGUF metadata. 0 / false means absent. */
typedef struct qw_hparams {
    int64_t n_layer;
    int64_t n_ctx;
    int64_t n_embd;
    int64_t n_ff;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim;   /* explicit head_dim from the config; 0 = n_embd / n_head */
    int64_t vocab_size;
    int64_t n_expert;
    int64_t n_expert_used;
    bool has_rope_theta;
    double rope_theta;
    bool has_rms_eps;
    double rms_eps;
    bool tied_embeddings;
    /* rope scaling, as config.json's rope_scaling (type "" when absent) */
    char rope_type[16];    /* "linear", "llama3", "yarn", ... */
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int64_t rope_orig_ctx;           /* rope_scaling.original_max_position_embeddings (yarn) */
    int64_t rope_freqs_orig_ctx;     /* top-level original_max_position_embeddings, default
                                      * 8192: what the converter reads for llama3 factors */
} qw_hparams;

/* One HF -> GGUF tensor name rule. "{L}" stands for the layer number in both patterns; the
 * patterns exclude the ".weight" / ".bias" suffix, which is carried over. */
typedef struct qw_tensor_rule {
    const char *hf;
    const char *gguf;             /* NULL: the tensor is dropped (e.g. rotary_emb.inv_freq) */
    qw_transform transform;       /* applied only when the architecture permutes */
} qw_tensor_rule;

typedef struct qw_arch {
    const char *name;                    /* GGUF general.architecture */
    const char *const *hf_classes;       /* config.json "architectures" values, NULL-ended */
    const char *const *hf_model_types;   /* config.json "model_type" values, NULL-ended */
    const qw_tensor_rule *rules;         /* NULL-ended (hf == NULL) */
    bool permute_qk;                     /* llama.cpp's normal rope wants interleaved Q/K rows */
    bool writes_vocab_size;              /* <arch>.vocab_size */
    bool writes_rope_dimension_count;    /* <arch>.rope.dimension_count */
    bool writes_rope_freqs;              /* rope_freqs.weight for llama3 rope scaling */
    bool writes_yarn;                    /* rope.scaling.* for yarn */
    bool writes_linear_rope_scaling;     /* rope.scaling.* for linear */
} qw_arch;

size_t qw_arch_count(void);
const qw_arch *qw_arch_at(size_t index);
/* By GGUF name; NULL if unknown. */
const qw_arch *qw_arch_find(const char *name);

/* Picks the row for a parsed config.json. Unknown architectures are QW_ERR_UNSUPPORTED_ARCH with
 * a message listing the supported ones. */
qw_status qw_arch_from_config(const json_t *config, const char *file, const qw_arch **out,
                              qw_error *err);

/* Comma-separated list of supported HF classes, for messages. Static storage. */
const char *qw_arch_supported_list(void);

qw_status qw_hparams_from_config(const json_t *config, const char *file, qw_hparams *out,
                                 qw_error *err);
/* From GGUF metadata "<arch>.*" keys. Missing required keys are QW_ERR_CORRUPT. */
qw_status qw_hparams_from_gguf(const qw_gguf *g, const char *arch_name, qw_hparams *out,
                               qw_error *err);

/* Maps an HF tensor name. On success either *drop is true, or gguf_name holds the GGUF name and
 * *transform what to apply. A name no rule matches is QW_ERR_UNSUPPORTED_INPUT. */
qw_status qw_arch_map_tensor(const qw_arch *arch, const qw_hparams *hp, const char *hf_name,
                             char *gguf_name, size_t gguf_name_bytes, qw_transform *transform,
                             bool *drop, qw_error *err);

/* Writes "<arch>.*" hyperparameter keys the way llama.cpp's converter does. */
qw_status qw_arch_write_hparams(const qw_arch *arch, const qw_hparams *hp, qw_gguf_writer *w,
                                qw_error *err);

/* Whether this architecture emits a rope_freqs.weight tensor for these hyperparameters, and its
 * length (head_dim / 2). */
bool qw_arch_has_rope_freqs(const qw_arch *arch, const qw_hparams *hp, int64_t *n_out);
/* Fills the Llama-3 rope frequency factors (n = head_dim / 2). */
void qw_arch_rope_freqs(const qw_hparams *hp, float *out, int64_t n);

/* Row index in the source for output row `row` of a permuted Q/K weight (or bias) made of heads
 * of head_rows rows each: output row h*hd + 2j + k comes from source row h*hd + k*hd/2 + j. */
int64_t qw_permute_source_row(int64_t row, int64_t head_rows);

#endif /* QW_ARCH_H */
