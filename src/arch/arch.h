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
    QW_TRANSFORM_ADD_ONE,   /* w + 1: Gemma's RMSNorm multiplies by (1 + w), llama.cpp by w */
    QW_TRANSFORM_COUNT
} qw_transform;

/* Human-readable name of a transform ("" for none). */
const char *qw_transform_name(qw_transform t);
/* Whether a transform reorders rows (the permutes), and the constant it adds to every element
 * (0 for none). */
bool qw_transform_permutes(qw_transform t);
float qw_transform_offset(qw_transform t);

/* Longest rope_scaling.long_factor / short_factor list read (head_dim / 2 entries). */
#define QW_ROPE_FACTORS_MAX 512

/* Whether a MoE graph renormalizes the chosen experts' weights to sum to 1. */
typedef enum qw_topk_norm {
    QW_TOPK_NORM_UNKNOWN = 0, /* no experts in this architecture */
    QW_TOPK_NORM_ON,
    QW_TOPK_NORM_OFF,
} qw_topk_norm;

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
    int64_t n_expert;       /* num_local_experts (Mixtral) or num_experts (Qwen MoE) */
    int64_t n_expert_used;
    int64_t n_ff_exp;       /* moe_intermediate_size: rows of one expert's gate/up */
    int64_t n_ff_shexp;     /* shared_expert_intermediate_size */
    qw_topk_norm norm_topk_prob; /* config's norm_topk_prob (UNKNOWN when absent) */
    bool has_rope_theta;
    double rope_theta;
    bool has_rms_eps;
    double rms_eps;
    bool has_norm_eps;
    double norm_eps;    /* layer_norm_eps: LayerNorm's epsilon (BERT) */
    bool tied_embeddings;
    /* rope scaling, as config.json's rope_scaling (type "" when absent) */
    char rope_type[16];    /* "linear", "llama3", "yarn", ... */
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int64_t rope_orig_ctx;           /* rope_scaling.original_max_position_embeddings (yarn) */
    int64_t rope_freqs_orig_ctx;     /* top-level original_max_position_embeddings, default
                                      * 8192: what the converter reads for llama3 factors */
    /* rope_scaling.original_max_position_embeddings, else the top-level one, else 0: what the
     * converter reads for Phi-3 */
    int64_t longrope_orig_ctx;
    double partial_rotary_factor;    /* 0 when absent */
    /* Phi-3 longrope: rope_scaling.long_factor / short_factor (n_rope_factors each, 0 = none) */
    int64_t n_rope_factors;
    float rope_long_factor[QW_ROPE_FACTORS_MAX];
    float rope_short_factor[QW_ROPE_FACTORS_MAX];
    /* Gemma 2/3 and Phi-3 extras */
    bool has_attn_softcap, has_final_softcap;
    double attn_softcap, final_softcap; /* attn_logit_softcapping, final_logit_softcapping */
    bool has_sliding_window;
    int64_t sliding_window;             /* 0 when absent or null */
    int64_t sliding_window_pattern;     /* 0 when absent */
    bool has_rope_theta_swa;
    double rope_theta_swa;              /* rope_local_base_freq (Gemma 3) */
} qw_hparams;

/* One HF -> GGUF tensor name rule. "{L}" stands for the layer number in both patterns; the
 * patterns exclude the ".weight" / ".bias" suffix, which is carried over. An "{E}" in the HF
 * pattern (expert number < n_expert) makes the rule a stacking rule: the GGUF tensor is the
 * experts' 2-D tensors stacked, expert 0 first, into one 3-D tensor, as llama.cpp's converter
 * does (its numpy shape [n_expert, rows, cols]). */
typedef struct qw_tensor_rule {
    const char *hf;
    const char *gguf;             /* NULL: the tensor is dropped (e.g. rotary_emb.inv_freq) */
    qw_transform transform;       /* applied only when the architecture permutes */
} qw_tensor_rule;

/* A metadata key with a value fixed by the architecture. */
typedef struct qw_fixed_kv {
    const char *key;
    uint32_t value;
} qw_fixed_kv;

/* A config.json key's value when the file leaves the key out: what the HF config class fills in
 * (transformers loads the config through it, and so does llama.cpp's converter), as JSON text. */
typedef struct qw_config_default {
    const char *key;
    const char *json;
} qw_config_default;

/* An HF tensor-name prefix and what it stands for in the row's rules. */
typedef struct qw_name_prefix {
    const char *hf;
    const char *as;
} qw_name_prefix;

typedef struct qw_arch {
    const char *name;                    /* GGUF general.architecture */
    const char *const *hf_classes;       /* config.json "architectures" values, NULL-ended */
    const char *const *hf_model_types;   /* config.json "model_type" values, NULL-ended */
    const qw_tensor_rule *rules;         /* NULL-ended (hf == NULL) */
    const qw_tensor_rule *moe_rules;     /* NULL or NULL-ended: expert, router and shared-expert
                                          * names, tried after `rules` */
    qw_topk_norm moe_topk_norm;          /* what llama.cpp's graph does with the top-k expert
                                          * weights: fixed per architecture, no GGUF key */
    bool permute_qk;                     /* llama.cpp's normal rope wants interleaved Q/K rows */
    bool writes_vocab_size;              /* <arch>.vocab_size */
    bool writes_rope_dimension_count;    /* <arch>.rope.dimension_count */
    bool writes_rope_freqs;              /* rope_freqs.weight for llama3 rope scaling */
    bool writes_yarn;                    /* rope.scaling.* for yarn */
    bool writes_linear_rope_scaling;     /* rope.scaling.* for linear */
    bool writes_expert_ff;               /* expert_(shared_)feed_forward_length (Qwen MoE) */
    bool omits_rope_freq_base;           /* Gemma 1/2: the converter writes no rope.freq_base */
    bool writes_softcapping;             /* attn_logit_/final_logit_softcapping when set */
    bool writes_sliding_window;          /* attention.sliding_window (0 when none), unless
                                          * sliding_window_pattern is 1 (no local layers) */
    bool writes_rope_freq_base_swa;      /* rope.freq_base_swa from rope_local_base_freq */
    bool writes_longrope;                /* Phi-3: original context, partial rope dims, attn
                                          * factor and rope_factors_long/short tensors */
    const qw_fixed_kv *fixed_u32;        /* keys the converter writes with constant values
                                          * (CodeGemma's FIM token ids); NULL-ended, or NULL */
    /* Multimodal checkpoints that hold a text model of this row (Gemma 3 4B+): */
    const char *const *nested_classes;   /* HF classes whose config.json keeps the text model's
                                          * hyperparameters in a sub-object; NULL-ended, or NULL */
    const char *nested_key;              /* that sub-object's key ("text_config") */
    const qw_config_default *config_defaults; /* NULL-ended, or NULL */
    const qw_name_prefix *name_prefixes; /* rewritten before the rules; NULL-ended, or NULL */
    const char *const *skip_prefixes;    /* other models' tensors (vision tower, projector):
                                          * not converted; NULL-ended, or NULL */
    bool trims_embd_to_tokenizer;        /* token_embd keeps only the tokenizer's rows */
    bool is_encoder;                     /* a bidirectional encoder without a language-model
                                          * head (BERT): only the coreml backend writes it */
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

/* The config the row's hyperparameters are read from: for a class in nested_classes the
 * nested_key object merged over the top level (its keys win, as in llama.cpp's converter); the
 * rope_parameters of transformers 5 configs as rope_theta / rope_scaling / rope_local_base_freq;
 * then config_defaults for the keys still missing. *out is a new reference (the caller decrefs);
 * *nested tells whether the sub-object was used. A missing or non-object sub-object or
 * rope_parameters is QW_ERR_CORRUPT naming the key. */
qw_status qw_arch_text_config(const qw_arch *arch, const json_t *config, const char *file,
                              json_t **out, bool *nested, qw_error *err);

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

/* Whether hf_name belongs to another model of a multimodal checkpoint (skip_prefixes): such
 * tensors are dropped by qw_arch_map_tensor. */
bool qw_arch_is_skipped_module(const qw_arch *arch, const char *hf_name);

/* qw_arch_map_tensor, and which part of its GGUF tensor the source tensor is: *expert is -1
 * for a tensor written as it is, or the expert number for one slice of a stacked tensor. */
qw_status qw_arch_map_tensor_part(const qw_arch *arch, const qw_hparams *hp, const char *hf_name,
                                  char *gguf_name, size_t gguf_name_bytes,
                                  qw_transform *transform, bool *drop, int64_t *expert,
                                  qw_error *err);

/* Which of n_layer layers use sliding-window attention, into sliding[n_layer]: config.json's
 * layer_types when given; else all but every period-th layer (Gemma 2/3), the period being
 * sliding_window_pattern when set, else default_period; else, with no period, the layers from
 * max_window_layers on (Qwen2/3; 0 when absent: every layer, as Mistral). A layer_types list
 * of another length, or with an entry other than "sliding_attention" / "full_attention", or a
 * max_window_layers that is not a count, is an error naming it. */
qw_status qw_sliding_layers(const json_t *config, const qw_hparams *hp, int64_t default_period,
                            bool *sliding, qw_error *err);

/* Phi-3 longrope's cos/sin scale as transformers computes it: rope_scaling.attention_factor, else
 * sqrt(1 + ln(factor) / ln(original context)) for a context extended by factor (rope_scaling's,
 * else max_position_embeddings / original), else 1. hp->longrope_orig_ctx must be positive. */
qw_status qw_longrope_attention_factor(const json_t *config, const qw_hparams *hp, double *out,
                                       qw_error *err);

/* Writes "<arch>.*" hyperparameter keys the way llama.cpp's converter does. */
qw_status qw_arch_write_hparams(const qw_arch *arch, const qw_hparams *hp, qw_gguf_writer *w,
                                qw_error *err);

/* Whether this architecture emits a rope_freqs.weight tensor for these hyperparameters, and its
 * length (head_dim / 2). */
bool qw_arch_has_rope_freqs(const qw_arch *arch, const qw_hparams *hp, int64_t *n_out);
/* Whether this architecture emits rope_factors_long.weight / rope_factors_short.weight (Phi-3
 * longrope), and their length. The values are hp->rope_long_factor / rope_short_factor. */
bool qw_arch_has_rope_factors(const qw_arch *arch, const qw_hparams *hp, int64_t *n_out);
/* Fills the Llama-3 rope frequency factors (n = head_dim / 2). */
void qw_arch_rope_freqs(const qw_hparams *hp, float *out, int64_t n);

/* Row index in the source for output row `row` of a permuted Q/K weight (or bias) made of heads
 * of head_rows rows each: output row h*hd + 2j + k comes from source row h*hd + k*hd/2 + j. */
int64_t qw_permute_source_row(int64_t row, int64_t head_rows);

/* ---- GGUF back to HuggingFace (arch_inverse.c) ---------------------------------------------- */

/* Tensors llama.cpp stores and HF does not (rope_freqs.weight): dropped on the way back. */
bool qw_arch_is_gguf_only_tensor(const char *gguf_name);

/* Whether the HF tensor of this name is a one-row matrix that GGUF may store as a vector. */
bool qw_arch_hf_is_one_row(const char *hf_name);

/* Maps a GGUF tensor name back to its HF name with the row's rules read right to left. On
 * success either *drop is true, or hf_name holds the HF name and *transform the transform that
 * was applied on the way to GGUF (to be undone: a permute or a constant offset). A name no rule
 * produces (stacked experts included) or a transform with no inverse is
 * QW_ERR_UNSUPPORTED_INPUT naming the tensor. */
qw_status qw_arch_unmap_tensor(const qw_arch *arch, const qw_hparams *hp, const char *gguf_name,
                               char *hf_name, size_t hf_name_bytes, qw_transform *transform,
                               bool *drop, qw_error *err);

/* qw_arch_unmap_tensor that also gives back stacked experts: when the GGUF tensor is a stack of
 * per-expert HF tensors (an "{E}" rule), *stacked is true and hf_name is expert `expert`'s name
 * (0 <= expert < hp->n_expert, else QW_ERR_INVALID_ARG); otherwise `expert` is ignored. */
qw_status qw_arch_unmap_tensor_part(const qw_arch *arch, const qw_hparams *hp,
                                    const char *gguf_name, int64_t expert, char *hf_name,
                                    size_t hf_name_bytes, qw_transform *transform, bool *drop,
                                    bool *stacked, qw_error *err);

/* Row index in the GGUF tensor for HF row `row` of a permuted Q/K weight (or bias): the inverse
 * of qw_permute_source_row. */
int64_t qw_unpermute_source_row(int64_t row, int64_t head_rows);

/* The shortest decimal that reads back as the same float32 (GGUF stores 1e-5 as a float32). */
double qw_f32_shortest(double v);

/* Completes hparams read by qw_hparams_from_gguf for a config.json: float keys to their shortest
 * decimals, rope scaling from "<arch>.rope.scaling.*" (linear, yarn), and the keys only some
 * families carry (sliding window, soft-capping, local rope base, expert sizes, Phi-3's original
 * context and rope dimensions). A scaling type HF cannot express is QW_ERR_UNSUPPORTED_INPUT. */
qw_status qw_hparams_rope_from_gguf(const qw_gguf *g, const char *arch_name, qw_hparams *hp,
                                    qw_error *err);

/* Recovers Llama-3 rope scaling (factor, low/high frequency factors) from the n values of
 * rope_freqs.weight, checked by recomputing them; values no parameters reproduce are
 * QW_ERR_UNSUPPORTED_INPUT, a wrong length or non-positive value QW_ERR_CORRUPT. */
qw_status qw_hparams_rope_from_freqs(qw_hparams *hp, const float *freqs, int64_t n,
                                     const char *file, qw_error *err);

/* What a config.json needs beyond the hyperparameters. */
typedef struct qw_hf_config_info {
    int64_t bos_token_id;    /* -1: absent */
    int64_t eos_token_id;
    int64_t pad_token_id;    /* -1: absent */
    const char *torch_dtype; /* "bfloat16", ... or NULL */
    bool attention_bias;     /* q/k/v (and o) have biases */
} qw_hf_config_info;

/* Builds the config.json of the HF class a GGUF of this architecture came from (Mixtral for a
 * "llama" GGUF with experts, else the row's first class) from hyperparameters. The caller owns
 * *out. An architecture whose HF-only keys qwodel does not know is QW_ERR_UNSUPPORTED_ARCH. */
qw_status qw_arch_hf_config(const qw_arch *arch, const qw_hparams *hp,
                            const qw_hf_config_info *info, json_t **out, qw_error *err);

#endif /* QW_ARCH_H */
