/*
 * The Core ML backend: an .mlpackage holding an ML Program (MIL) written straight from the
 * checkpoint — no tracing — for the llama family (Llama, Mistral, Qwen2, Qwen3; Gemma 1, 2 and 3
 * with their 1 + w norms, scaled embeddings, GELU, sandwich norms, soft caps and Gemma 3's local
 * rope; Phi-3 with fused projections and longrope: DECODER_VARIANTS):
 * input_ids and attention_mask (int32, [batch, 1..seq_length]) in, logits (float32) out, float16
 * compute
 * (research/coreml.md); and for BERT encoders, last_hidden_state (float32) out (FAMILIES: one
 * row per kind of program).
 *
 * Package, written under a temporary directory renamed into place when complete:
 *   Manifest.json
 *   Data/com.apple.CoreML/model.mlmodel        Model spec 7 (iOS16) or 9 (iOS18, int4), one
 *                                              function "main"
 *   Data/com.apple.CoreML/weights/weight.bin   every const with >= 10 elements, blob storage v2
 *
 * Formats, as coremltools' optimize.coreml passes define them (FORMATS below): float16 (every
 * weight fp16); int8_linear / int8_symmetric (linear_quantize_weights, per output channel, int8
 * with a zero point / symmetric ±127) as iOS16 constexpr_affine_dequantize; int6 / int4
 * (palettize_weights, k-means; one table per tensor / per 32 output channels) as
 * constexpr_lut_to_dense in its iOS16 / iOS18 form. Compressed: every const of rank >= 2 with
 * more than 2048 elements (embedding and head included); smaller ones and vectors stay fp16.
 *
 * The program (build_program): gather the embedding; positions as a running sum over the input
 * (so no op needs the length as a number); RoPE cos/sin gathered from tables of seq_length rows;
 * one additive mask for causality and attention_mask; per block RMSNorm (in fp32, as
 * transformers), q/k/v linear (+bias), Qwen3's per-head norms, rotate-half RoPE, key/value heads
 * tiled for GQA, softmax attention, o_proj, SwiGLU; final norm, lm_head (the embedding when
 * tied), logits cast to fp32 as coremltools' fp16 conversion leaves them.
 *
 * The encoder (build_encoder): word + position + token-type-0 embeddings, LayerNorm (fp32), per
 * layer q/k/v with biases, attention over every unpadded token, output dense + residual +
 * LayerNorm, intermediate dense + GELU/ReLU, output dense + residual + LayerNorm.
 *
 * Stateful (option `stateful`, spec 9 whatever the format): the key/value cache lives in two
 * fp16 states, keyCache and valueCache [layers, batch, kv heads, seq_length, head_dim], fixed
 * shape as Core ML requires. input_ids holds the L new tokens and attention_mask the past + L
 * tokens the cache will then hold, so the write position past is the difference of their
 * lengths (shape, gather, sub: Apple's Llama 3.1 recipe, no extra input). Each layer writes its
 * new keys/values at past .. past+L-1 (slice_update, then write_state + read_state, which is
 * coremltools' coreml_update_state on the wire) and attends over positions 0 .. past+L-1 with
 * the same causal + padding mask; queries get RoPE at past .. past+L-1. Both inputs keep their
 * 1..seq_length ranges, as in Apple's recipe.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "coreml_kmeans.h"
#include "json.h"
#include "coreml_mil.h"
#include "file.h"
#include "half.h"
#include "mil_package.h"

#define COMPRESS_THRESHOLD 2048 /* coremltools' weight_threshold: numel must exceed it */
#define MASK_VALUE (-30000.0f) /* added to blocked scores: far below any real score, and
                                * adding it twice stays finite in fp16 */

/* ---- formats -------------------------------------------------------------------------------- */

typedef enum cm_quant { CM_FP16, CM_INT8_LINEAR, CM_INT8_SYMMETRIC, CM_LUT } cm_quant;

/* spec 7 = iOS16 (fp16 I/O, constexpr_affine_dequantize, per-tensor LUTs); spec 9 = iOS18
 * (per-grouped-channel LUTs with uint4 indices). The opset name goes with the spec. */
static const struct {
    const char *name;
    cm_quant quant;
    int nbits;          /* LUT formats: bits per index */
    int64_t group_rows; /* LUT formats: output channels per table, 0 = one table per tensor */
    int32_t spec;
    const char *opset;
    const char *description;
} FORMATS[] = {
    {"float16", CM_FP16, 0, 0, 7, "CoreML6",
     "Half-precision weights and compute (~2x smaller than float32); iOS 16+."},
    {"int8_linear", CM_INT8_LINEAR, 0, 0, 7, "CoreML6",
     "8-bit affine weights per output channel with a zero point (coremltools "
     "linear_quantize_weights, mode linear), dequantized at load; iOS 16+."},
    {"int8_symmetric", CM_INT8_SYMMETRIC, 0, 0, 7, "CoreML6",
     "8-bit symmetric weights per output channel, range ±127 (coremltools "
     "linear_quantize_weights, mode linear_symmetric); iOS 16+."},
    {"int4", CM_LUT, 4, 32, 9, "CoreML8",
     "4-bit palettization: a 16-entry k-means table per 32 output channels (coremltools "
     "palettize_weights, per_grouped_channel), exact 1-D k-means; iOS 18+."},
    {"int6", CM_LUT, 6, 0, 7, "CoreML6",
     "6-bit palettization: one 64-entry k-means table per weight (coremltools "
     "palettize_weights, per_tensor), exact 1-D k-means; iOS 16+."},
};
#define N_FORMATS (sizeof FORMATS / sizeof FORMATS[0])

static size_t format_count(void) { return N_FORMATS; }
static const char *format_name(size_t i) { return i < N_FORMATS ? FORMATS[i].name : NULL; }
static const char *format_description(size_t i) {
    return i < N_FORMATS ? FORMATS[i].description : NULL;
}
static int format_find(const char *name) {
    for (size_t i = 0; name && i < N_FORMATS; i++) {
        if (qw_strcasecmp(name, FORMATS[i].name) == 0) return (int)i;
    }
    return -1;
}

static const qw_option_spec coreml_options[] = {
    {"input_shape", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "(batch_size, seq_length), e.g. \"1,512\": the batch is fixed, the length is the default "
     "(default (1, 512))."},
    {"compute_units", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "ALL (default), CPU_ONLY, CPU_AND_GPU or CPU_AND_NE, recorded in the model's metadata."},
    {"seq_length", QW_OPTION_INT, QW_SCOPE_BOTH,
     "Longest sequence the model accepts: inputs are flexible from 1 to this (default 512)."},
    {"stateful", QW_OPTION_BOOL, QW_SCOPE_BOTH,
     "Write a stateful model for generation (iOS 18+): the key/value cache is kept in the Core ML "
     "states keyCache and valueCache (seq_length positions), input_ids holds only the new tokens "
     "and attention_mask covers the cached and the new ones (default false)."},
};

static const char *const COMPUTE_UNITS[] = {"ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"};

typedef struct cm_settings {
    int64_t batch, default_len, seq_length;
    bool length_given; /* seq_length or input_shape set by the caller, not the default */
    const char *compute_units;
    bool stateful; /* iOS18 states keyCache / valueCache hold the key/value cache */
} cm_settings;

static qw_status parse_settings(const qw_options *o, cm_settings *s, qw_error *err) {
    int64_t shape[2] = {1, 512};
    int n = 0;
    const char *text = qw_options_get(o, "input_shape");
    if (text) {
        /* "(1, 512)", "1,512" and "[1, 512]" all read as two integers */
        const char *p = text;
        while (*p) {
            if (*p >= '0' && *p <= '9') {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (n < 2) shape[n] = v;
                n++;
                p = end;
            } else if (strchr("()[], \t", *p)) {
                p++;
            } else {
                n = -1;
                break;
            }
        }
        if (n != 2 || shape[0] < 1 || shape[0] > 4096 || shape[1] < 1 || shape[1] > (1 << 20)) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, "input_shape", -1,
                              "input_shape must be (batch_size, seq_length) with batch 1..4096 "
                              "and length 1..1048576, not \"%s\"", text);
        }
    }
    s->batch = shape[0];
    s->seq_length = qw_options_get_int(o, "seq_length", text ? shape[1] : 512);
    if (s->seq_length < 1 || s->seq_length > (1 << 20)) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "seq_length", -1,
                          "seq_length must be 1..1048576, not %lld", (long long)s->seq_length);
    }
    s->default_len = shape[1] < s->seq_length ? shape[1] : s->seq_length;
    s->length_given = text || qw_options_get(o, "seq_length");
    s->stateful = qw_options_get_bool(o, "stateful", false);
    s->compute_units = qw_options_get(o, "compute_units");
    if (!s->compute_units) s->compute_units = "ALL";
    for (size_t i = 0; i < sizeof COMPUTE_UNITS / sizeof COMPUTE_UNITS[0]; i++) {
        if (qw_strcasecmp(s->compute_units, COMPUTE_UNITS[i]) == 0) {
            s->compute_units = COMPUTE_UNITS[i];
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_BAD_OPTION, "compute_units", -1,
                      "compute_units must be ALL, CPU_ONLY, CPU_AND_GPU or CPU_AND_NE, not \"%s\"",
                      s->compute_units);
}

/* ---- the plan ------------------------------------------------------------------------------- */

typedef struct cm_family cm_family;
typedef struct cm_build cm_build;

typedef struct cm_plan {
    qw_hf_view *view;
    const cm_family *family;
    const char *arch_name; /* the model's architecture row ("llama", "gemma", "bert", ...) */
    const qw_arch *arch;   /* that row (NULL for a GGUF of an unknown architecture) */
    qw_hparams hp;
    int64_t head_dim;
    cm_settings settings;
    cm_quant quant;
    int nbits;
    int64_t group_rows;
    int32_t spec;
    const char *opset;
    const char *format;
    bool tied;
    double rms_eps, rope_theta;
    float norm_offset;       /* Gemma: its norms multiply by 1 + w */
    float embed_scale;       /* Gemma: embeddings times sqrt(hidden); 0 = none */
    const char *act;         /* the feed-forward activation (the decoders' gate's): a MIL op */
    const char *gelu_mode;   /* its mode for gelu, else NULL */
    bool sandwich;             /* Gemma 2: each sublayer's output normed before the residual */
    int64_t window;            /* keys window or more positions before the query are masked
                                * (sliding_window); 0 = none, or a window the program's
                                * seq_length never reaches */
    bool *sliding;             /* [n_layer]: the layer is a sliding one (the window, and Gemma
                                * 3's local rope): Gemma 2/3's pattern, Qwen2's layers from
                                * max_window_layers; NULL: the window is on every layer */
    bool local_rope;           /* Gemma 3: the sliding layers use their own rope */
    double rope_theta_local;   /* the local layers' base (rope_local_base_freq), unscaled */
    bool fused;                /* Phi-3: qkv_proj and gate_up_proj, split after the product */
    bool moe;                  /* some layer is a sparse mixture of experts */
    const qw_moe_layout **moe_layouts; /* [n_layer]: each layer's, NULL for a dense one (looked
                                        * up once: every tensor's role asks) */
    bool moe_renorm;           /* its top-k routing weights are renormalized to sum 1 */
    double rope_attn_factor;   /* longrope: cos and sin times this (1 otherwise) */
    double score_scale;        /* queries times this: head_dim^-1/2, or query_pre_attn_scalar's */
    double attn_softcap, final_softcap; /* tanh soft caps of scores and logits, 0 = none */
    /* encoders */
    const char *prefix;     /* "bert." for the task models' checkpoints, else "" */
    double norm_eps;        /* LayerNorm epsilon */
} cm_plan;

static void cm_plan_free(void *priv) {
    cm_plan *p = priv;
    if (!p) return;
    qw_hf_view_free(p->view);
    qw_free(p->sliding);
    qw_free(p->moe_layouts);
    qw_free(p);
}

static const char *const BLOCK_TENSORS[] = {
    "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight",        "self_attn.o_proj.weight",
    "self_attn.q_proj.bias",   "self_attn.k_proj.bias",          "self_attn.v_proj.bias",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight",        "mlp.gate_proj.weight",
    "mlp.up_proj.weight",      "mlp.down_proj.weight",
};

/* Phi-3's fused projections, known only to fused variants */
static const char *const FUSED_TENSORS[] = {"self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"};

/* Gemma 2's extra tensors, known only to sandwich-norm variants */
static const char *const SANDWICH_TENSORS[] = {"pre_feedforward_layernorm.weight",
                                               "post_feedforward_layernorm.weight"};

/* What a tensor is to a sparse layer's MLP (qw_moe_layout names them) */
typedef enum cm_moe_part {
    CM_MOE_NONE,   /* not a sparse-MLP tensor of a sparse layer */
    CM_MOE_ROUTER, /* the router or the shared expert's gate: routing, kept in fp16 */
    CM_MOE_LINEAR, /* an expert's (or the shared expert's) gate, up or down */
} cm_moe_part;

static cm_moe_part moe_part(const cm_plan *p, const char *name);

/* coremltools' rule: rank >= 2 and more than 2048 elements; grouped tables also need the
 * output channels to divide into groups (coremltools skips the const otherwise) */
static bool compressed(const cm_plan *p, const qw_hf_tensor *t) {
    if (p->quant == CM_FP16 || t->n_dims < 2 || t->ne[0] * t->n_rows <= COMPRESS_THRESHOLD) {
        return false;
    }
    /* A router's logits pick experts: rounding it flips choices, a discrete change far larger
     * than the bytes it saves (E x hidden). llama.cpp keeps its routers unquantized too. */
    if (moe_part(p, t->name) == CM_MOE_ROUTER) return false;
    return p->group_rows == 0 || t->n_rows % p->group_rows == 0;
}

static const char *compressed_type(const cm_plan *p) {
    static const char *const NAMES[] = {"f16", "int8", "int8", NULL};
    return p->quant == CM_LUT ? (p->nbits == 4 ? "lut4" : "lut6") : NAMES[p->quant];
}

/* What a checkpoint tensor is to the program. */
typedef enum cm_role {
    CM_UNKNOWN, /* no place in the program: the model is refused rather than silently cut */
    CM_WRITTEN,
    CM_LEFT_OUT, /* known, and not part of the output (a task head, the pooler) */
} cm_role;

/* Whether name is "<prefix>layers.<L>.<one of suffixes>" for a layer of the model. */
static bool is_block_tensor(const char *name, const char *prefix, int64_t n_layer,
                            const char *const *suffixes, size_t n_suffixes) {
    const size_t lp = strlen(prefix);
    long long layer;
    int at = 0;
    if (strncmp(name, prefix, lp) != 0 || sscanf(name + lp, "%lld.%n", &layer, &at) != 1 ||
        at == 0 || layer < 0 || layer >= n_layer) {
        return false;
    }
    for (size_t k = 0; k < n_suffixes; k++) {
        if (strcmp(name + lp + at, suffixes[k]) == 0) return true;
    }
    return false;
}

/* layer's sparse-MLP layout; NULL for a dense layer or one past the model */
static const qw_moe_layout *layer_moe(const cm_plan *p, long long layer) {
    return p->moe && layer >= 0 && layer < p->hp.n_layer ? p->moe_layouts[layer] : NULL;
}

static cm_moe_part moe_part(const cm_plan *p, const char *name) {
    long long layer;
    int at = 0;
    if (!p->moe || sscanf(name, "model.layers.%lld.%n", &layer, &at) != 1 || at == 0) {
        return CM_MOE_NONE;
    }
    const qw_moe_layout *lo = layer_moe(p, layer);
    char head[96];
    snprintf(head, sizeof head, "model.layers.%lld.%s.", layer, lo ? lo->prefix : "");
    const size_t lh = strlen(head);
    if (!lo || strncmp(name, head, lh) != 0) return CM_MOE_NONE;
    const char *rest = name + lh;
    if (strcmp(rest, "gate.weight") == 0 || strcmp(rest, "shared_expert_gate.weight") == 0) {
        return CM_MOE_ROUTER;
    }
    const char *linear_name = NULL;
    long long e;
    char expert[48];
    if (sscanf(rest, "experts.%lld.", &e) == 1 && e >= 0 && e < p->hp.n_expert) {
        snprintf(expert, sizeof expert, "experts.%lld.", e); /* only the canonical spelling */
        if (strncmp(rest, expert, strlen(expert)) == 0) linear_name = rest + strlen(expert);
    } else if (strncmp(rest, "shared_expert.", 14) == 0) {
        linear_name = rest + 14;
    }
    for (int i = 0; linear_name && i < 3; i++) {
        const size_t n = strlen(lo->linear[i]);
        if (strncmp(linear_name, lo->linear[i], n) == 0 && strcmp(linear_name + n, ".weight") == 0) {
            return CM_MOE_LINEAR;
        }
    }
    return CM_MOE_NONE;
}

/* A dense MLP tensor (mlp.gate_proj ...) in a layer whose router makes it sparse: the program
 * would never read it, so the model is refused rather than silently cut. */
static bool dense_mlp_in_sparse_layer(const cm_plan *p, const char *name) {
    long long layer;
    int at = 0;
    return p->moe && sscanf(name, "model.layers.%lld.mlp.%n", &layer, &at) == 1 && at > 0 &&
           layer_moe(p, layer) && moe_part(p, name) == CM_MOE_NONE;
}

static cm_role decoder_role(const cm_plan *p, const char *name) {
    if (dense_mlp_in_sparse_layer(p, name)) return CM_UNKNOWN;
    const bool known = moe_part(p, name) != CM_MOE_NONE ||
                       strcmp(name, "model.embed_tokens.weight") == 0 ||
                       strcmp(name, "model.norm.weight") == 0 ||
                       strcmp(name, "lm_head.weight") == 0 ||
                       is_block_tensor(name, "model.layers.", p->hp.n_layer, BLOCK_TENSORS,
                                       sizeof BLOCK_TENSORS / sizeof BLOCK_TENSORS[0]) ||
                       (p->sandwich &&
                        is_block_tensor(name, "model.layers.", p->hp.n_layer, SANDWICH_TENSORS,
                                        sizeof SANDWICH_TENSORS / sizeof SANDWICH_TENSORS[0])) ||
                       (p->fused &&
                        is_block_tensor(name, "model.layers.", p->hp.n_layer, FUSED_TENSORS,
                                        sizeof FUSED_TENSORS / sizeof FUSED_TENSORS[0]));
    return known ? CM_WRITTEN : CM_UNKNOWN;
}

static qw_status check_tensors(const cm_plan *p, qw_error *err);

/* What sets a decoder architecture apart from Llama's (forward_cpu.c knows the same facts for
 * the AWQ pass): Gemma multiplies its norms by 1 + w, scales the embeddings by sqrt(hidden),
 * names its activation hidden_activation and means the tanh GELU by "gelu". */
static const struct {
    const char *arch;
    float norm_offset;
    bool embed_scale;
    const char *act_key;
    bool gelu_is_tanh;
    bool sandwich; /* post_attention_layernorm on the attention's output, then
                    * pre_/post_feedforward_layernorm around the MLP */
    int64_t slide_period; /* sliding layers: all but every slide_period-th (layer_types or
                           * sliding_window_pattern say otherwise); 0 = the window, if any, on
                           * every layer */
    bool local_rope;      /* the sliding layers use their own unscaled rope */
    bool fused;           /* one qkv_proj and one gate_up_proj (gate first) */
} DECODER_VARIANTS[] = {
    {"gemma", 1.0f, true, "hidden_activation", true, false, 0, false, false},
    {"gemma2", 1.0f, true, "hidden_activation", true, true, 2, false, false},
    {"gemma3", 1.0f, true, "hidden_activation", true, true, 6, true, false},
    {"phi3", 0.0f, false, "hidden_act", false, false, 0, false, true},
};



/* config.json's activation -> the MIL op (and gelu's mode) computing it as transformers does */
static const struct {
    const char *name, *op, *gelu_mode;
} ACTIVATIONS[] = {
    {"silu", "silu", NULL},
    {"relu", "relu", NULL},
    {"gelu", "gelu", "EXACT"},
    {"gelu_new", "gelu", "TANH_APPROXIMATION"},
    {"gelu_pytorch_tanh", "gelu", "TANH_APPROXIMATION"},
};

/* p->act and p->gelu_mode for the activation `name` read from config.json's `key` */
static qw_status pick_activation(cm_plan *p, const char *key, const char *name, qw_error *err) {
    for (size_t i = 0; i < sizeof ACTIVATIONS / sizeof ACTIVATIONS[0]; i++) {
        if (strcmp(name, ACTIVATIONS[i].name) == 0) {
            p->act = ACTIVATIONS[i].op;
            p->gelu_mode = ACTIVATIONS[i].gelu_mode;
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                      "config.json: %s \"%s\" is not supported by the coreml backend (silu, "
                      "relu, gelu, gelu_new and gelu_pytorch_tanh are)", key, name);
}


/* Phi-3's longrope, as transformers applies it: the short factors while a sequence is within
 * original_max_position_embeddings, the long ones past it, and cos/sin scaled by
 * attention_factor (sqrt(1 + ln(factor) / ln(original context)) when not given). A program of
 * seq_length up to the original context only ever uses the short ones; a longer one would have
 * to switch tables by the input's length, which this program does not do. */
static qw_status check_longrope(cm_plan *p, const json_t *config, qw_error *err) {
    const qw_hparams *hp = &p->hp;
    if (hp->n_rope_factors * 2 != p->head_dim || hp->longrope_orig_ctx <= 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "rope_scaling", -1,
                          "config.json: longrope rope_scaling needs head_dim / 2 = %lld long and "
                          "short factors and original_max_position_embeddings",
                          (long long)(p->head_dim / 2));
    }
    if (p->settings.seq_length > hp->longrope_orig_ctx) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "seq_length", -1,
                          "seq_length %lld is past the model's original context of %lld, where "
                          "longrope switches to its long factors by the input's length; the "
                          "coreml backend writes programs up to that context",
                          (long long)p->settings.seq_length, (long long)hp->longrope_orig_ctx);
    }
    return qw_longrope_attention_factor(config, hp, &p->rope_attn_factor, err);
}

static qw_status check_config(cm_plan *p, const json_t *config, qw_error *err) {
    const qw_hparams *hp = &p->hp;
    const char *act_key = "hidden_act";
    bool gelu_is_tanh = false;
    for (size_t i = 0; i < sizeof DECODER_VARIANTS / sizeof DECODER_VARIANTS[0]; i++) {
        if (strcmp(p->arch_name, DECODER_VARIANTS[i].arch) == 0) {
            p->norm_offset = DECODER_VARIANTS[i].norm_offset;
            if (DECODER_VARIANTS[i].embed_scale) p->embed_scale = sqrtf((float)hp->n_embd);
            act_key = DECODER_VARIANTS[i].act_key;
            gelu_is_tanh = DECODER_VARIANTS[i].gelu_is_tanh;
            p->sandwich = DECODER_VARIANTS[i].sandwich;
            p->fused = DECODER_VARIANTS[i].fused;
            p->local_rope = DECODER_VARIANTS[i].local_rope;
            if (DECODER_VARIANTS[i].slide_period > 0) {
                p->sliding = qw_calloc((size_t)hp->n_layer, sizeof *p->sliding);
                if (!p->sliding) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                QW_TRY(qw_sliding_layers(config, hp, DECODER_VARIANTS[i].slide_period,
                                         p->sliding, err));
                p->rope_theta_local = hp->has_rope_theta_swa ? hp->rope_theta_swa : 10000.0;
            }
        }
    }
    /* Mistral, Phi-3 and Gemma 2/3 mask keys past their window; Qwen2's configs state one
     * and switch it off with use_sliding_window, or on for the layers from max_window_layers */
    if (hp->has_sliding_window && hp->sliding_window > 0 &&
        hp->sliding_window < p->settings.seq_length &&
        !json_is_false(json_object_get(config, "use_sliding_window"))) {
        p->window = hp->sliding_window;
        if (!p->sliding) {
            p->sliding = qw_calloc((size_t)hp->n_layer, sizeof *p->sliding);
            if (!p->sliding) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            QW_TRY(qw_sliding_layers(config, hp, 0, p->sliding, err));
        }
    }
    if (hp->has_attn_softcap) p->attn_softcap = hp->attn_softcap;
    if (hp->has_final_softcap) p->final_softcap = hp->final_softcap;
    double scalar = 0.0;
    QW_TRY(qw_json_get_number(config, "query_pre_attn_scalar", "config.json", &scalar, NULL, err));
    if (scalar < 0.0 || !isfinite(scalar)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "query_pre_attn_scalar", -1,
                          "config.json: query_pre_attn_scalar must be positive");
    }
    const json_t *act = json_object_get(config, act_key);
    if (!json_is_string(act)) {
        act_key = "hidden_act";
        act = json_object_get(config, act_key);
    }
    if (act && !json_is_string(act)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, act_key, -1, "config.json: %s is not a string",
                          act_key);
    }
    const char *name = act ? json_string_value(act) : "silu";
    if (gelu_is_tanh && strcmp(name, "gelu") == 0) name = "gelu_pytorch_tanh";
    QW_TRY(pick_activation(p, act_key, name, err));
    const bool longrope = strcmp(hp->rope_type, "longrope") == 0 ||
                          strcmp(hp->rope_type, "su") == 0;
    if (hp->rope_type[0] && strcmp(hp->rope_type, "default") != 0 &&
        strcmp(hp->rope_type, "linear") != 0 && strcmp(hp->rope_type, "llama3") != 0 &&
        !longrope) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "rope_scaling", -1,
                          "config.json: rope_scaling type \"%s\" is not supported by the coreml "
                          "backend (none, linear, llama3 and longrope are)", hp->rope_type);
    }
    if (hp->partial_rotary_factor != 0.0 && hp->partial_rotary_factor != 1.0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "partial_rotary_factor", -1,
                          "config.json: partial rotary embeddings are not supported by the "
                          "coreml backend");
    }
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->vocab_size < 1 ||
        hp->n_ff < 1) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "config.json", -1,
                          "config.json: the model's shape (layers, hidden size, heads, "
                          "vocabulary, intermediate size) is incomplete");
    }
    const int64_t n_kv = hp->n_head_kv > 0 ? hp->n_head_kv : hp->n_head;
    p->head_dim = hp->head_dim > 0 ? hp->head_dim : hp->n_embd / hp->n_head;
    if (p->head_dim < 2 || p->head_dim % 2 != 0 || hp->n_head % n_kv != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "num_key_value_heads", -1,
                          "config.json: head_dim %lld must be even and the %lld heads a multiple "
                          "of the %lld key/value heads",
                          (long long)p->head_dim, (long long)hp->n_head, (long long)n_kv);
    }
    p->hp.n_head_kv = n_kv;
    p->moe_layouts = qw_calloc((size_t)hp->n_layer, sizeof *p->moe_layouts);
    if (!p->moe_layouts) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        p->moe_layouts[l] = qw_hf_view_moe_layout(p->view, l);
        p->moe = p->moe || p->moe_layouts[l];
    }
    if (p->moe && (hp->n_expert < 1 || hp->n_expert_used < 1)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "num_experts_per_tok", -1,
                          "config.json: the model has routers but gives %lld experts with %lld "
                          "used per token", (long long)hp->n_expert,
                          (long long)hp->n_expert_used);
    }
    /* as transformers: Mixtral (the llama row with experts) always renormalizes the chosen
     * experts' weights; the Qwen MoE families when norm_topk_prob says so */
    p->moe_renorm = p->moe && (strcmp(p->arch_name, "llama") == 0 ||
                               hp->norm_topk_prob == QW_TOPK_NORM_ON);
    p->rope_attn_factor = 1.0;
    if (longrope) QW_TRY(check_longrope(p, config, err));
    p->score_scale = 1.0 / sqrt(scalar > 0.0 ? scalar : (double)p->head_dim);
    p->rms_eps = hp->has_rms_eps ? hp->rms_eps : 1e-6;
    p->rope_theta = hp->has_rope_theta ? hp->rope_theta : 10000.0;
    if (!qw_hf_view_find(p->view, "model.embed_tokens.weight")) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.embed_tokens.weight", -1,
                          "the model has no tensor \"model.embed_tokens.weight\"");
    }
    p->tied = !qw_hf_view_find(p->view, "lm_head.weight");
    return QW_OK;
}

/* ---- encoders (BERT) ------------------------------------------------------------------------ */

static const char *const ENCODER_TENSORS[] = {
    "embeddings.word_embeddings.weight",       "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
};
static const char *const ENCODER_BLOCK_TENSORS[] = {
    "attention.self.query.weight",           "attention.self.query.bias",
    "attention.self.key.weight",             "attention.self.key.bias",
    "attention.self.value.weight",           "attention.self.value.bias",
    "attention.output.dense.weight",         "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",     "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",             "intermediate.dense.bias",
    "output.dense.weight",                   "output.dense.bias",
    "output.LayerNorm.weight",               "output.LayerNorm.bias",
};
/* Known, and not part of last_hidden_state: the pooler (pooler_output), the buffer of position
 * ids older exports saved, and the task heads' tensors (the architecture row's skip list). */
static const char *const ENCODER_LEFT_OUT[] = {"pooler.", "embeddings.position_ids"};

static cm_role encoder_role(const cm_plan *p, const char *name) {
    const size_t lp = strlen(p->prefix);
    if (strncmp(name, p->prefix, lp) != 0) {
        return p->arch && qw_arch_is_skipped_module(p->arch, name) ? CM_LEFT_OUT : CM_UNKNOWN;
    }
    const char *rest = name + lp;
    for (size_t k = 0; k < sizeof ENCODER_TENSORS / sizeof ENCODER_TENSORS[0]; k++) {
        if (strcmp(rest, ENCODER_TENSORS[k]) == 0) return CM_WRITTEN;
    }
    if (is_block_tensor(rest, "encoder.layer.", p->hp.n_layer, ENCODER_BLOCK_TENSORS,
                        sizeof ENCODER_BLOCK_TENSORS / sizeof ENCODER_BLOCK_TENSORS[0])) {
        return CM_WRITTEN;
    }
    for (size_t k = 0; k < sizeof ENCODER_LEFT_OUT / sizeof ENCODER_LEFT_OUT[0]; k++) {
        if (strncmp(rest, ENCODER_LEFT_OUT[k], strlen(ENCODER_LEFT_OUT[k])) == 0) {
            return CM_LEFT_OUT;
        }
    }
    return CM_UNKNOWN;
}

static qw_status check_encoder_config(cm_plan *p, const json_t *config, qw_error *err) {
    const qw_hparams *hp = &p->hp;
    const char *act = "gelu", *pos_type = NULL;
    bool is_decoder = false;
    QW_TRY(qw_json_get_string(config, "hidden_act", "config.json", &act, NULL, err));
    QW_TRY(qw_json_get_string(config, "position_embedding_type", "config.json", &pos_type, NULL,
                              err));
    QW_TRY(qw_json_get_bool(config, "is_decoder", "config.json", &is_decoder, NULL, err));
    QW_TRY(pick_activation(p, "hidden_act", act, err));
    if (pos_type && strcmp(pos_type, "absolute") != 0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "position_embedding_type", -1,
                          "config.json: position_embedding_type \"%s\" is not supported by the "
                          "coreml backend (absolute is)", pos_type);
    }
    if (is_decoder) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "is_decoder", -1,
                          "config.json: is_decoder is true; the coreml backend writes BERT "
                          "models as bidirectional encoders");
    }
    if (hp->n_embd % hp->n_head != 0 || hp->n_ff < 1 || hp->n_ctx < 1) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "config.json", -1,
                          "config.json: the encoder's shape (hidden size a multiple of the heads, "
                          "intermediate_size, max_position_embeddings) is incomplete");
    }
    if (p->settings.seq_length > hp->n_ctx && !p->settings.length_given) {
        /* the default length is longer than a small model's positions: the model's limit is
         * the useful default there */
        p->settings.seq_length = hp->n_ctx;
        if (p->settings.default_len > hp->n_ctx) p->settings.default_len = hp->n_ctx;
    }
    if (p->settings.seq_length > hp->n_ctx) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "seq_length", -1,
                          "seq_length %lld is longer than the model's %lld position embeddings "
                          "(max_position_embeddings)", (long long)p->settings.seq_length,
                          (long long)hp->n_ctx);
    }
    p->head_dim = hp->n_embd / hp->n_head;
    p->norm_eps = hp->has_norm_eps ? hp->norm_eps : 1e-12; /* BertConfig's default */
    /* the task models keep the encoder under one of the row's name prefixes ("bert.") */
    p->prefix = "";
    for (const qw_name_prefix *np = p->arch ? p->arch->name_prefixes : NULL; np && np->hf; np++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", np->hf, ENCODER_TENSORS[0]);
        if (qw_hf_view_find(p->view, name)) p->prefix = np->hf;
    }
    return QW_OK;
}

/* ---- families ------------------------------------------------------------------------------- */

static void build_program(cm_build *b, qw_reporter *r);
static void build_encoder(cm_build *b, qw_reporter *r);
static qw_status coreml_check_model(const qw_model *m, qw_error *err);

/* One row per kind of program: the architectures it serves, how their config and tensors are
 * checked, the graph, and the output it gives. */
struct cm_family {
    const char *const *archs;
    const char *layout; /* for messages: what the program is made of */
    qw_status (*check_config)(cm_plan *p, const json_t *config, qw_error *err);
    cm_role (*role)(const cm_plan *p, const char *name);
    void (*build)(cm_build *b, qw_reporter *r);
    const char *output, *output_doc;
    bool generates; /* a causal LM: `stateful` can keep its key/value cache */
};

static const char *const DECODER_ARCHS[] = {"llama", "qwen2",  "qwen2moe", "qwen3", "qwen3moe",
                                            "gemma", "gemma2", "gemma3",   "phi3",  NULL};
static const char *const ENCODER_ARCHS[] = {"bert", NULL};

static const cm_family FAMILIES[] = {
    {DECODER_ARCHS, "the decoder layout the coreml backend writes (embedding, attention, MLP, "
     "norms, head)", check_config, decoder_role, build_program, "logits",
     "Next-token logits [batch, sequence, vocabulary]", true},
    {ENCODER_ARCHS, "the BERT encoder layout the coreml backend writes (embeddings, attention, "
     "feed-forward, LayerNorms; pooler and task heads left out)", check_encoder_config,
     encoder_role, build_encoder, "last_hidden_state",
     "The encoder's last hidden states [batch, sequence, hidden]", false},
};

static const cm_family *family_of(const qw_model *m) {
    const char *arch = m->arch ? m->arch->name : m->arch_name;
    for (size_t i = 0; arch && i < sizeof FAMILIES / sizeof FAMILIES[0]; i++) {
        for (const char *const *a = FAMILIES[i].archs; *a; a++) {
            if (strcmp(arch, *a) == 0) return &FAMILIES[i];
        }
    }
    return NULL;
}

/* Every tensor must have a place in the program, or be a known part the output does not use:
 * anything else is refused rather than silently dropped. */
static qw_status check_tensors(const cm_plan *p, qw_error *err) {
    for (size_t i = 0; i < qw_hf_view_count(p->view); i++) {
        const char *name = qw_hf_view_at(p->view, i)->name;
        if (p->family->role(p, name) == CM_UNKNOWN) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, name, -1,
                              "tensor \"%s\" is not part of %s", name, p->family->layout);
        }
    }
    return QW_OK;
}

/* States need iOS18 (spec 9, opset CoreML8) whatever the weights' format. Each cache is one fp16
 * tensor [layers, batch, key/value heads, seq_length, head_dim] that Core ML allocates whole
 * for every state made: more than 2^31 elements (4 GiB) is refused, past what 32-bit indexing
 * and any Apple device's memory comfortably hold. */
static qw_status check_stateful(cm_plan *p, qw_error *err) {
    if (!p->family->generates) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "stateful", -1,
                          "stateful: a key/value cache serves generation, and this model is an "
                          "encoder (it outputs %s)", p->family->output);
    }
    const double n = (double)p->hp.n_layer * (double)p->settings.batch *
                     (double)p->hp.n_head_kv * (double)p->settings.seq_length *
                     (double)p->head_dim;
    if (n > 2147483647.0) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "seq_length", -1,
                          "stateful: a key/value cache of %lld layers x batch %lld x %lld heads x "
                          "seq_length %lld x head_dim %lld is %.0f elements (%.1f GiB in fp16), "
                          "more than the 2^31 a fixed-size Core ML state may hold: lower "
                          "seq_length or the batch",
                          (long long)p->hp.n_layer, (long long)p->settings.batch,
                          (long long)p->hp.n_head_kv, (long long)p->settings.seq_length,
                          (long long)p->head_dim, n, n * 2.0 / (1024.0 * 1024.0 * 1024.0));
    }
    p->spec = 9;
    p->opset = "CoreML8";
    return QW_OK;
}

static qw_status coreml_plan_build(const qw_run_context *ctx, const char *format, qw_plan *plan,
                                   qw_error *err) {
    const int f = format_find(format);
    if (f < 0) {
        return qw_fail(err, QW_ERR_FORMAT_NOT_SUPPORTED,
                       "format \"%s\" is not supported by the coreml backend (supported: float16, "
                       "int8_linear, int8_symmetric, int4, int6)", format ? format : "");
    }
    cm_plan *p = qw_calloc(1, sizeof *p);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->priv = p;
    plan->priv_free = cm_plan_free;
    p->quant = FORMATS[f].quant;
    p->nbits = FORMATS[f].nbits;
    p->group_rows = FORMATS[f].group_rows;
    p->spec = FORMATS[f].spec;
    p->opset = FORMATS[f].opset;
    p->format = FORMATS[f].name;
    QW_TRY(parse_settings(ctx->options, &p->settings, err));
    QW_TRY(qw_model_hf_view(ctx->model, &p->view, err));
    const json_t *config;
    QW_TRY(qw_hf_view_config(p->view, &config, err));
    QW_TRY(qw_hparams_from_config(config, "config.json", &p->hp, err));
    p->family = family_of(ctx->model);
    if (!p->family) return coreml_check_model(ctx->model, err);
    p->arch = ctx->model->arch;
    p->arch_name = p->arch ? p->arch->name : ctx->model->arch_name;
    QW_TRY(p->family->check_config(p, config, err));
    QW_TRY(check_tensors(p, err));
    if (p->settings.stateful) QW_TRY(check_stateful(p, err));
    if (p->settings.stateful && strcmp(p->settings.compute_units, "CPU_ONLY") != 0 &&
        strcmp(p->settings.compute_units, "CPU_AND_GPU") != 0 &&
        (p->settings.seq_length % 32 != 0 || p->head_dim % 32 != 0)) {
        qw_log(ctx->reporter, QW_LOG_WARNING,
               "stateful: the cache's seq_length %lld or head_dim %lld is not a multiple of 32; "
               "the Neural Engine has been reported to refuse such states (coremltools #2631), "
               "where CPU and GPU run them",
               (long long)p->settings.seq_length, (long long)p->head_dim);
    }
    uint64_t total = 0;
    size_t n_left_out = 0;
    for (size_t i = 0; i < qw_hf_view_count(p->view); i++) {
        const qw_hf_tensor *t = qw_hf_view_at(p->view, i);
        if (p->family->role(p, t->name) == CM_LEFT_OUT) {
            n_left_out++;
            continue;
        }
        const bool c = compressed(p, t);
        qw_plan_tensor pt = {0};
        pt.name = t->name;
        pt.source_name = t->name;
        pt.source_type = t->source->dtype_name;
        pt.type = c ? compressed_type(p) : "f16";
        pt.transform = !c                          ? ""
                       : p->quant == CM_LUT        ? "constexpr_lut_to_dense, k-means"
                       : p->quant == CM_INT8_LINEAR ? "constexpr_affine_dequantize, per "
                                                     "output channel with zero point"
                                                   : "constexpr_affine_dequantize, per "
                                                     "output channel, symmetric";
        pt.n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims && d < 4; d++) pt.shape[d] = t->ne[d];
        const uint64_t n = (uint64_t)(t->ne[0] * t->n_rows);
        pt.bytes = !c                  ? 2 * n
                   : p->quant == CM_LUT ? (n * (uint64_t)p->nbits + 7) / 8
                   : n + 3 * (uint64_t)t->n_rows;
        total += pt.bytes;
        QW_TRY(qw_plan_push(plan, &pt, err));
    }
    if (n_left_out > 0) {
        qw_log(ctx->reporter, QW_LOG_INFO,
               "%zu tensor(s) not part of the %s output are left out (pooler, task heads)",
               n_left_out, p->family->output);
    }
    char fmt[32];
    snprintf(fmt, sizeof fmt, "%s", p->format);
    for (char *c = fmt; *c; c++) {
        if (*c == '_') *c = '-'; /* int8_linear -> int8-linear (DESIGN.md output names) */
    }
    char *dir = qw_sprintf("%s_%s.mlpackage", ctx->model->name, fmt);
    plan->output_path = dir ? qw_path_join(ctx->output_dir, dir) : NULL;
    plan->format = qw_strdup(p->format);
    qw_free(dir);
    if (!plan->output_path || !plan->format) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->output_bytes = total;
    return QW_OK;
}

/* ---- weights -------------------------------------------------------------------------------- */

typedef qw_mil_var mv;

struct cm_build {
    const cm_plan *p;
    qw_mil *m;
    qw_blob_writer *blobs;
    float *rows;      /* a chunk of rows as f32 */
    uint16_t *half;   /* the same as fp16 */
    int8_t *q;        /* quantized */
    size_t chunk;     /* elements the buffers hold */
    uint64_t n_compressed, n_params;
    qw_pool *pool; /* may be NULL */
};

static bool ok(const cm_build *b) { return qw_mil_status(b->m, NULL) == QW_OK; }

static void fail(cm_build *b, const qw_error *e, qw_status st) { qw_mil_fail(b->m, e, st); }

static float f16r(float x) { return qw_fp16_to_fp32(qw_fp32_to_fp16(x)); }

/* Rows [r0, r0 + n) of t into b->rows and, rounded, b->half. */
static bool read_rows(cm_build *b, const qw_hf_tensor *t, int64_t r0, int64_t n) {
    qw_error e = {0};
    qw_status st = qw_hf_tensor_read_f32(t, r0, n, b->rows, &e);
    if (st != QW_OK) {
        fail(b, &e, st);
        return false;
    }
    const size_t count = (size_t)(n * t->ne[0]);
    for (size_t i = 0; i < count; i++) b->half[i] = qw_fp32_to_fp16(b->rows[i]);
    return true;
}

static int64_t rows_per_chunk(const cm_build *b, const qw_hf_tensor *t) {
    int64_t r = (int64_t)(b->chunk / (size_t)t->ne[0]);
    return r > 0 ? r : 1;
}

static bool blob_put(cm_build *b, const void *data, size_t bytes) {
    qw_error e = {0};
    qw_status st = qw_blob_writer_write(b->blobs, data, bytes, &e);
    if (st != QW_OK) fail(b, &e, st);
    return st == QW_OK;
}

static bool blob_begin(cm_build *b, qw_blob_dtype dt, uint64_t bytes, uint64_t *offset) {
    qw_error e = {0};
    qw_status st = qw_blob_writer_begin(b->blobs, dt, bytes, 0, offset, &e);
    if (st != QW_OK) fail(b, &e, st);
    return st == QW_OK;
}

/* Per-row int8 quantization as coremltools' linear_quantize_weights computes it for an fp16
 * weight: numpy in float16, each step rounded to fp16, np.round (half to even). An all-zero
 * row (scale 0, which coremltools turns into NaN) is written as zeros. */
static void quantize_row(const uint16_t *w, int64_t n, cm_quant quant, int8_t *q, uint16_t *scale,
                         int8_t *zero) {
    const bool sym = quant == CM_INT8_SYMMETRIC;
    const float qmin = sym ? -127.0f : -128.0f, qmax = 127.0f;
    float lo = qw_fp16_to_fp32(w[0]), hi = lo;
    for (int64_t i = 1; i < n; i++) {
        const float v = qw_fp16_to_fp32(w[i]);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (sym) {
        const float amax = fabsf(lo) > fabsf(hi) ? fabsf(lo) : fabsf(hi);
        lo = -amax;
        hi = amax;
    } else {
        lo = lo < 0.0f ? lo : 0.0f;
        hi = hi > 0.0f ? hi : 0.0f;
    }
    const float range = f16r(hi - lo), s = f16r(range / (qmax - qmin));
    float zp = 0.0f;
    if (!sym && range > 0.0f) {
        zp = nearbyintf(f16r(f16r(f16r(qmin * hi) - f16r(qmax * lo)) / range));
        zp = zp < qmin ? qmin : zp > qmax ? qmax : zp;
    }
    *scale = qw_fp32_to_fp16(s);
    *zero = (int8_t)zp;
    for (int64_t i = 0; i < n; i++) {
        float v = 0.0f;
        if (s > 0.0f && isfinite(s)) {
            v = nearbyintf(f16r(qw_fp16_to_fp32(w[i]) / s)) + zp;
            v = v < qmin ? qmin : v > qmax ? qmax : v;
        }
        q[i] = (int8_t)v;
    }
}

/* ---- palettization -------------------------------------------------------------------------- */

/* One table: exact k-means over the group's distinct fp16 values weighted by their counts (what
 * coremltools' kmeans1d path computes), centers rounded to fp16 and ascending, unused slots 0.
 * The distinct values come from a count per fp16 bit pattern, walked in value order. */
static qw_status kmeans_group(const uint16_t *w, size_t n, int nbits, const char *tensor_name,
                              uint16_t *lut, uint8_t *idx, qw_error *err) {
    const size_t k = (size_t)1 << nbits;
    uint32_t *count = qw_calloc(65536, sizeof *count);
    uint16_t *slot = qw_malloc_array(65536, sizeof *slot);
    double *x = qw_malloc_array(65536, sizeof *x), *cw = qw_malloc_array(65536, sizeof *cw);
    double *centers = qw_malloc_array(k, sizeof *centers);
    uint16_t *assign = qw_malloc_array(65536, sizeof *assign);
    qw_status st = count && slot && x && cw && centers && assign
                       ? QW_OK
                       : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for k-means");
    for (size_t i = 0; st == QW_OK && i < n; i++) {
        const uint16_t bits = w[i] == 0x8000u ? 0 : w[i]; /* -0 is 0 */
        if ((bits & 0x7c00u) == 0x7c00u) {
            st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, tensor_name, -1,
                            "tensor \"%s\" holds a value that is not finite: it cannot be "
                            "palettized", tensor_name);
        }
        count[bits]++;
    }
    size_t nu = 0, k_used = 0;
    /* negatives from the largest magnitude down, then zero and the positives up */
    for (uint32_t b = 0xfbffu; st == QW_OK && b >= 0x8001u; b--) {
        if (count[b]) {
            slot[b] = (uint16_t)nu;
            x[nu] = (double)qw_fp16_to_fp32((uint16_t)b);
            cw[nu++] = (double)count[b];
        }
    }
    for (uint32_t b = 0; st == QW_OK && b <= 0x7bffu; b++) {
        if (count[b]) {
            slot[b] = (uint16_t)nu;
            x[nu] = (double)qw_fp16_to_fp32((uint16_t)b);
            cw[nu++] = (double)count[b];
        }
    }
    if (st == QW_OK) st = qw_kmeans1d(x, cw, nu, k, centers, &k_used, assign, NULL, err);
    if (st == QW_OK) {
        for (size_t j = 0; j < k; j++) lut[j] = j < k_used ? qw_fp32_to_fp16((float)centers[j]) : 0;
        for (size_t i = 0; i < n; i++) idx[i] = (uint8_t)assign[slot[w[i] == 0x8000u ? 0 : w[i]]];
    }
    qw_free(count);
    qw_free(slot);
    qw_free(x);
    qw_free(cw);
    qw_free(centers);
    qw_free(assign);
    return st;
}

/* Tables of several groups at once: each writes only its own slots, so the output does not
 * depend on the threads. */
typedef struct lut_job {
    const uint16_t *h;
    uint16_t *lut;
    uint8_t *idx;
    size_t gsz, k;
    int nbits;
    const char *name;
    qw_status *status;
} lut_job;

static void lut_task(void *ctx, size_t begin, size_t end, int worker) {
    const lut_job *j = ctx;
    (void)worker;
    for (size_t g = begin; g < end; g++) {
        j->status[g] = kmeans_group(j->h + g * j->gsz, j->gsz, j->nbits, j->name, j->lut + g * j->k,
                                    j->idx + g * j->gsz, NULL);
    }
}

/* LSB-first bit stream: element i takes bits [i*nbits, i*nbits + nbits) */
static void pack_bits(const uint8_t *idx, size_t n, int nbits, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t bit = (uint64_t)i * (uint64_t)nbits;
        const unsigned v = (unsigned)idx[i] << (bit % 8);
        out[bit / 8] |= (uint8_t)v;
        if ((bit % 8) + (unsigned)nbits > 8) out[bit / 8 + 1] |= (uint8_t)(v >> 8);
    }
}

/* A weight as constexpr_lut_to_dense: per tensor in the iOS16 form (attributes: packed uint8
 * indices, lut [2^n], uint32 shape), per group of output channels in the iOS18 form (inputs:
 * uintN indices shaped like the weight, lut [groups, 1, 2^n, 1]). The whole tensor is held as
 * fp16 while its tables are made. */
static mv palettize(cm_build *b, const qw_hf_tensor *t, const char *mil_name) {
    mv none = {0}, out = none;
    const cm_plan *p = b->p;
    const int64_t rows = t->n_rows, cols = t->ne[0], n = rows * cols;
    const int64_t dims[2] = {rows, cols};
    const int64_t group_rows = p->group_rows ? p->group_rows : rows, groups = rows / group_rows;
    const size_t k = (size_t)1 << p->nbits, packed_bytes = (size_t)((n * p->nbits + 7) / 8);
    uint16_t *h = qw_malloc_array((size_t)n, sizeof *h);
    uint16_t *lut = qw_calloc((size_t)groups * k, sizeof *lut);
    uint8_t *idx = qw_malloc_array((size_t)n, 1), *packed = qw_calloc(packed_bytes, 1);
    qw_error e = {0};
    qw_status st = h && lut && idx && packed
                       ? QW_OK
                       : qw_fail(&e, QW_ERR_NO_MEMORY, "out of memory palettizing %s", t->name);
    const int64_t per = rows_per_chunk(b, t);
    for (int64_t r0 = 0; st == QW_OK && r0 < rows; r0 += per) {
        const int64_t m = rows - r0 < per ? rows - r0 : per;
        if (!read_rows(b, t, r0, m)) {
            st = qw_mil_status(b->m, &e); /* read_rows recorded the error in the builder */
            break;
        }
        memcpy(h + r0 * cols, b->half, (size_t)(m * cols) * sizeof *h);
    }
    const size_t gsz = (size_t)(group_rows * cols);
    qw_status *status = st == QW_OK ? qw_calloc((size_t)groups, sizeof *status) : NULL;
    if (st == QW_OK && !status) st = qw_fail(&e, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) {
        lut_job job = {h, lut, idx, gsz, k, p->nbits, t->name, status};
        if (b->pool && groups > 1) qw_pool_run(b->pool, (size_t)groups, 1, lut_task, &job);
        else lut_task(&job, 0, (size_t)groups, 0);
        /* a failed group is run again alone for its message */
        for (int64_t g = 0; st == QW_OK && g < groups; g++) {
            if (status[g] != QW_OK) {
                st = kmeans_group(h + (size_t)g * gsz, gsz, p->nbits, t->name,
                                  lut + (size_t)g * k, idx + (size_t)g * gsz, &e);
                if (st == QW_OK) st = status[g];
            }
        }
    }
    qw_free(status);
    if (st == QW_OK) pack_bits(idx, (size_t)n, p->nbits, packed);
    uint64_t off = 0;
    const uint32_t padding = (uint32_t)(8 * packed_bytes - (size_t)n * (size_t)p->nbits);
    if (st == QW_OK && p->group_rows == 0 && p->spec < 9) {
        /* iOS16: indices are plain bytes (an iOS18 program, stateful, has only the iOS18 form:
         * one group) */
        const int64_t pdims[1] = {(int64_t)packed_bytes}, ldims[1] = {(int64_t)k},
                      sdims[1] = {2};
        const uint32_t shape[2] = {(uint32_t)rows, (uint32_t)cols};
        static const char *const KEYS[] = {"indices", "lut", "shape"};
        qw_mil_value *vals[3] = {
            qw_mil_value_data(b->m, QW_MIL_UINT8, 1, pdims, packed, packed_bytes),
            qw_mil_value_data(b->m, QW_MIL_FP16, 1, ldims, lut, k * 2),
            qw_mil_value_data(b->m, QW_MIL_UINT32, 1, sdims, shape, sizeof shape),
        };
        out = qw_mil_constexpr(b->m, "constexpr_lut_to_dense", mil_name, KEYS, vals, 3,
                               qw_mil_type(QW_MIL_FP16, 2, dims));
    } else if (st == QW_OK) {
        const qw_blob_dtype bt = p->nbits == 4 ? QW_BLOB_UINT4 : QW_BLOB_UINT6;
        const int mt = p->nbits == 4 ? QW_MIL_UINT4 : QW_MIL_UINT6;
        st = qw_blob_writer_begin(b->blobs, bt, packed_bytes, padding, &off, &e);
        if (st == QW_OK) st = qw_blob_writer_write(b->blobs, packed, packed_bytes, &e);
        const int64_t ldims[4] = {groups, 1, (int64_t)k, 1};
        static const char *const KEYS[] = {"indices", "lut"};
        qw_mil_value *vals[2] = {
            st == QW_OK ? qw_mil_value_blob(b->m, mt, 2, dims, off) : NULL,
            st == QW_OK ? qw_mil_value_data(b->m, QW_MIL_FP16, 4, ldims, lut,
                                            (size_t)groups * k * 2)
                        : NULL,
        };
        if (st == QW_OK) {
            out = qw_mil_constexpr_inputs(b->m, "constexpr_lut_to_dense", mil_name, KEYS, vals,
                                          2, qw_mil_type(QW_MIL_FP16, 2, dims));
        }
    }
    if (st != QW_OK) fail(b, &e, st);
    if (out.name) b->n_compressed += (uint64_t)n;
    qw_free(h);
    qw_free(lut);
    qw_free(idx);
    qw_free(packed);
    return out;
}

/* A weight as a const: fp16, or int8 behind constexpr_affine_dequantize (iOS16: parameters in
 * the op's attributes, scale and zero point per output channel along axis 0). */
static mv weight(cm_build *b, const qw_hf_tensor *t, const char *mil_name) {
    mv none = {0};
    if (!ok(b)) return none;
    const int rank = t->n_dims >= 2 ? 2 : 1;
    const int64_t rows = t->n_rows, cols = t->ne[0], n = rows * cols;
    const int64_t dims[2] = {rank == 2 ? rows : cols, cols};
    b->n_params += (uint64_t)n;
    if (t->n_dims > 2) {
        qw_error e = {0};
        fail(b, &e,
             qw_fail_at(&e, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                        "tensor \"%s\" has %d dimensions; the coreml backend writes 1-D and 2-D "
                        "weights", t->name, t->n_dims));
        return none;
    }
    const int64_t per = rows_per_chunk(b, t);
    if (!compressed(b->p, t)) {
        if (n < 10) { /* inline: one small read */
            if (!read_rows(b, t, 0, rows)) return none;
            return qw_mil_const_data(b->m, mil_name, QW_MIL_FP16, rank, dims, b->half,
                                     (size_t)n * 2);
        }
        uint64_t offset;
        if (!blob_begin(b, QW_BLOB_FLOAT16, (uint64_t)n * 2, &offset)) return none;
        for (int64_t r0 = 0; r0 < rows; r0 += per) {
            const int64_t k = rows - r0 < per ? rows - r0 : per;
            if (!read_rows(b, t, r0, k) || !blob_put(b, b->half, (size_t)(k * cols) * 2)) {
                return none;
            }
        }
        return qw_mil_const_blob(b->m, mil_name, QW_MIL_FP16, rank, dims, offset);
    }
    if (b->p->quant == CM_LUT) return palettize(b, t, mil_name);
    uint16_t *scales = qw_malloc_array((size_t)rows, sizeof *scales);
    int8_t *zeros = qw_malloc_array((size_t)rows, sizeof *zeros);
    uint64_t data_offset = 0;
    bool good = scales && zeros;
    if (!good) {
        qw_error e = {0};
        fail(b, &e, qw_fail(&e, QW_ERR_NO_MEMORY, "out of memory"));
    }
    good = good && blob_begin(b, QW_BLOB_INT8, (uint64_t)n, &data_offset);
    for (int64_t r0 = 0; good && r0 < rows; r0 += per) {
        const int64_t k = rows - r0 < per ? rows - r0 : per;
        good = read_rows(b, t, r0, k);
        for (size_t i = 0; good && i < (size_t)(k * cols); i++) {
            if (!isfinite(b->rows[i])) {
                qw_error e = {0};
                fail(b, &e,
                     qw_fail_at(&e, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                                "tensor \"%s\" holds a value that is not finite: it cannot be "
                                "quantized", t->name));
                good = false;
            }
        }
        for (int64_t r = 0; good && r < k; r++) {
            quantize_row(b->half + r * cols, cols, b->p->quant, b->q + r * cols, &scales[r0 + r],
                         &zeros[r0 + r]);
        }
        good = good && blob_put(b, b->q, (size_t)(k * cols));
    }
    mv out = none;
    if (good) {
        const int64_t vdims[1] = {rows};
        static const char *const KEYS[] = {"quantized_data", "zero_point", "scale", "axis"};
        qw_mil_value *vals[4] = {
            qw_mil_value_blob(b->m, QW_MIL_INT8, 2, dims, data_offset),
            qw_mil_value_data(b->m, QW_MIL_INT8, 1, vdims, zeros, (size_t)rows),
            qw_mil_value_data(b->m, QW_MIL_FP16, 1, vdims, scales, (size_t)rows * 2),
            qw_mil_value_i32(b->m, 0),
        };
        out = qw_mil_constexpr(b->m, "constexpr_affine_dequantize", mil_name, KEYS, vals, 4,
                               qw_mil_type(QW_MIL_FP16, 2, dims));
        b->n_compressed += (uint64_t)n;
    }
    qw_free(scales);
    qw_free(zeros);
    return out;
}

static const qw_hf_tensor *tensor(cm_build *b, bool required, const char *fmt, ...)
    QW_PRINTF(3, 4);
static const qw_hf_tensor *tensor(cm_build *b, bool required, const char *fmt, ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const qw_hf_tensor *t = qw_hf_view_find(b->p->view, name);
    if (!t && required && ok(b)) {
        qw_error e = {0};
        fail(b, &e,
             qw_fail_at(&e, QW_ERR_CORRUPT, name, -1, "the model has no tensor \"%s\"", name));
    }
    return t;
}

/* ---- ops ------------------------------------------------------------------------------------ */

#define ARGS(...)                                                                                  \
    (const qw_mil_arg[]){__VA_ARGS__},                                                             \
        sizeof((const qw_mil_arg[]){__VA_ARGS__}) / sizeof(qw_mil_arg)
#define A(key, var) {key, &(var), 1}

/* "<a><suffix>" into dst (cap bytes), cut short if longer: op names stay far below the cap,
 * and plain copies keep -Wformat-truncation out of the many name builders */
static char *join(char *dst, size_t cap, const char *a, const char *suffix) {
    const size_t la = strnlen(a, cap - 1), lb = strnlen(suffix, cap - 1 - la);
    memcpy(dst, a, la);
    memcpy(dst + la, suffix, lb);
    dst[la + lb] = '\0';
    return dst;
}

/* numpy broadcasting of two shapes (a symbolic dim against 1 stays symbolic) */
static mv broadcast(mv a, mv c, int dtype) {
    mv t = {NULL, dtype, a.rank > c.rank ? a.rank : c.rank, {0}};
    for (int i = 0; i < t.rank; i++) {
        const int ia = i - (t.rank - a.rank), ic = i - (t.rank - c.rank);
        const int64_t da = ia >= 0 ? a.dims[ia] : 1, dc = ic >= 0 ? c.dims[ic] : 1;
        t.dims[i] = da == 1 ? dc : da;
    }
    return t;
}

/* the binary ops whose result is bool whatever their operands */
static bool is_comparison(const char *type) {
    static const char *const COMPARISONS[] = {"greater", "greater_equal", "less", "equal"};
    for (size_t i = 0; i < sizeof COMPARISONS / sizeof COMPARISONS[0]; i++) {
        if (strcmp(type, COMPARISONS[i]) == 0) return true;
    }
    return false;
}

static mv binary(cm_build *b, const char *type, const char *name, mv x, mv y) {
    mv out = broadcast(x, y, is_comparison(type) ? QW_MIL_BOOL : x.dtype);
    return qw_mil_op(b->m, type, name, ARGS(A("x", x), A("y", y)), out);
}

static mv unary(cm_build *b, const char *type, const char *name, mv x) {
    return qw_mil_op(b->m, type, name, ARGS(A("x", x)), x);
}

static mv cast(cm_build *b, const char *name, mv x, const char *dtype) {
    char key[160];
    join(key, sizeof key, name, "_dtype");
    mv d = qw_mil_const_str(b->m, key, dtype);
    mv out = x;
    out.dtype = strcmp(dtype, "fp32") == 0 ? QW_MIL_FP32 : QW_MIL_FP16;
    return qw_mil_op(b->m, "cast", name, ARGS(A("x", x), A("dtype", d)), out);
}

static mv reshape(cm_build *b, const char *name, mv x, const int32_t *shape, int rank) {
    char key[160];
    join(key, sizeof key, name, "_shape");
    mv s = qw_mil_const_i32(b->m, key, shape, (size_t)rank, 1);
    mv out = {NULL, x.dtype, rank, {0}};
    for (int i = 0; i < rank; i++) out.dims[i] = shape[i] < 0 ? QW_MIL_DYN : shape[i];
    return qw_mil_op(b->m, "reshape", name, ARGS(A("x", x), A("shape", s)), out);
}

static mv transpose(cm_build *b, const char *name, mv x, const int32_t *perm) {
    char key[160];
    join(key, sizeof key, name, "_perm");
    mv pv = qw_mil_const_i32(b->m, key, perm, (size_t)x.rank, 1);
    mv out = x;
    for (int i = 0; i < x.rank; i++) out.dims[i] = x.dims[perm[i]];
    return qw_mil_op(b->m, "transpose", name, ARGS(A("x", x), A("perm", pv)), out);
}

static mv expand_dims(cm_build *b, const char *name, mv x, int32_t axis) {
    char key[160];
    join(key, sizeof key, name, "_axes");
    mv ax = qw_mil_const_i32(b->m, key, &axis, 1, 1);
    mv out = x;
    out.rank = x.rank + 1;
    for (int i = 0, j = 0; i < out.rank; i++) out.dims[i] = i == axis ? 1 : x.dims[j++];
    return qw_mil_op(b->m, "expand_dims", name, ARGS(A("x", x), A("axes", ax)), out);
}

static mv linear(cm_build *b, const char *name, mv x, mv w, const mv *bias) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    mv out = x;
    out.dims[x.rank - 1] = w.dims[0];
    if (bias) {
        return qw_mil_op(b->m, "linear", name, ARGS(A("x", x), A("weight", w), A("bias", *bias)),
                         out);
    }
    return qw_mil_op(b->m, "linear", name, ARGS(A("x", x), A("weight", w)), out);
}

static mv matmul(cm_build *b, const char *name, mv x, mv y, bool transpose_y) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char key[160];
    join(key, sizeof key, name, "_transpose_x");
    mv tx = qw_mil_const_bool(b->m, key, false);
    join(key, sizeof key, name, "_transpose_y");
    mv ty = qw_mil_const_bool(b->m, key, transpose_y);
    mv out = x;
    out.dims[x.rank - 1] = transpose_y ? y.dims[y.rank - 2] : y.dims[y.rank - 1];
    return qw_mil_op(b->m, "matmul", name,
                     ARGS(A("x", x), A("y", y), A("transpose_x", tx), A("transpose_y", ty)), out);
}

/* A norm's weight as the program multiplies by it: w, or Gemma's 1 + w (a vector: never
 * compressed, written in fp16 as every other weight) */
static mv norm_weight(cm_build *b, const qw_hf_tensor *t, const char *mil_name) {
    if (b->p->norm_offset == 0.0f) return weight(b, t, mil_name);
    if (!ok(b)) return (mv){0};
    const int64_t n = t->ne[0] * t->n_rows;
    if (t->n_dims != 1 || !read_rows(b, t, 0, t->n_rows)) {
        if (ok(b)) {
            qw_error e = {0};
            fail(b, &e, qw_fail_at(&e, QW_ERR_CORRUPT, t->name, -1,
                                   "norm \"%s\" is not a vector", t->name));
        }
        return (mv){0};
    }
    b->n_params += (uint64_t)n;
    for (int64_t i = 0; i < n; i++) b->half[i] = qw_fp32_to_fp16(b->rows[i] + b->p->norm_offset);
    const int64_t dims[1] = {n};
    return qw_mil_const_data(b->m, mil_name, QW_MIL_FP16, 1, dims, b->half, (size_t)n * 2);
}

/* The reduction `op` of x over its last axis, kept as an axis of 1 or dropped */
static mv reduce_last_axis(cm_build *b, const char *op, const char *name, mv x, bool keep_dims) {
    char n1[160];
    join(n1, sizeof n1, name, "_axes");
    mv axes = qw_mil_const_i32(b->m, n1, (const int32_t[]){-1}, 1, 1);
    join(n1, sizeof n1, name, "_keep_dims");
    mv keep = qw_mil_const_bool(b->m, n1, keep_dims);
    mv out = x;
    if (keep_dims) {
        out.dims[x.rank - 1] = 1;
    } else {
        out.rank--;
    }
    return qw_mil_op(b->m, op, name, ARGS(A("x", x), A("axes", axes), A("keep_dims", keep)), out);
}

/* RMSNorm in float32 as transformers computes it (mean of squares in f32, so x^2 cannot
 * overflow fp16), the result back in fp16 times the weight. */
static mv rms_norm(cm_build *b, const char *pre, mv x, mv w) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char n1[160], n2[160];
    join(n1, sizeof n1, pre, "_x32");
    mv xf = cast(b, n1, x, "fp32");
    join(n1, sizeof n1, pre, "_sq");
    mv sq = binary(b, "mul", n1, xf, xf);
    join(n1, sizeof n1, pre, "_mean");
    mv mean = reduce_last_axis(b, "reduce_mean", n1, sq, true);
    join(n1, sizeof n1, pre, "_eps");
    mv eps = qw_mil_const_f32(b->m, n1, (float)b->p->rms_eps);
    join(n2, sizeof n2, pre, "_rsqrt");
    mv r = qw_mil_op(b->m, "rsqrt", n2, ARGS(A("x", mean), A("epsilon", eps)), mean);
    join(n1, sizeof n1, pre, "_scaled");
    mv y = binary(b, "mul", n1, xf, r);
    join(n1, sizeof n1, pre, "_x16");
    mv yh = cast(b, n1, y, "fp16");
    return binary(b, "mul", pre, yh, w);
}

/* The activation op pick_activation chose, on x, named `name` */
static mv activation(cm_build *b, const char *name, mv x) {
    if (!b->p->gelu_mode) return unary(b, b->p->act, name, x);
    char key[160];
    join(key, sizeof key, name, "_mode");
    mv mode = qw_mil_const_str(b->m, key, b->p->gelu_mode);
    return qw_mil_op(b->m, "gelu", name, ARGS(A("x", x), A("mode", mode)), x);
}

/* Gemma 2's soft cap, cap * tanh(x / cap), in x's dtype; the result is named `pre` */
static mv soft_cap(cm_build *b, const char *pre, mv x, double cap) {
    char n1[160];
    const bool f32 = x.dtype == QW_MIL_FP32;
    join(n1, sizeof n1, pre, "_cap_inverse");
    mv inv = f32 ? qw_mil_const_f32(b->m, n1, (float)(1.0 / cap))
                 : qw_mil_const_f16(b->m, n1, (float)(1.0 / cap));
    join(n1, sizeof n1, pre, "_cap_scaled");
    mv scaled = binary(b, "mul", n1, x, inv);
    join(n1, sizeof n1, pre, "_cap_tanh");
    mv t = unary(b, "tanh", n1, scaled);
    join(n1, sizeof n1, pre, "_cap");
    mv c = f32 ? qw_mil_const_f32(b->m, n1, (float)cap) : qw_mil_const_f16(b->m, n1, (float)cap);
    return binary(b, "mul", pre, t, c);
}

/* x * cos + rotate_half(x) * sin on [B, heads, S, head_dim] */
static mv rope(cm_build *b, const char *pre, mv x, mv cos_t, mv sin_t) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    const int32_t hd = (int32_t)b->p->head_dim, half = hd / 2;
    char n1[160];
    const int32_t b1[4] = {0, 0, 0, 0}, e1[4] = {0, 0, 0, half};
    const int32_t b2[4] = {0, 0, 0, half}, e2[4] = {0, 0, 0, 0};
    const bool bm[4] = {true, true, true, false}, em1[4] = {true, true, true, false},
               em2[4] = {true, true, true, true};
    mv parts[2];
    for (int k = 0; k < 2; k++) {
        join(n1, sizeof n1, pre, k ? "_half1_begin" : "_half0_begin");
        mv beg = qw_mil_const_i32(b->m, n1, k ? b2 : b1, 4, 1);
        join(n1, sizeof n1, pre, k ? "_half1_end" : "_half0_end");
        mv end = qw_mil_const_i32(b->m, n1, k ? e2 : e1, 4, 1);
        join(n1, sizeof n1, pre, k ? "_half1_begin_mask" : "_half0_begin_mask");
        mv bmask = qw_mil_const_bools(b->m, n1, bm, 4);
        join(n1, sizeof n1, pre, k ? "_half1_end_mask" : "_half0_end_mask");
        mv emask = qw_mil_const_bools(b->m, n1, k ? em2 : em1, 4);
        mv out = x;
        out.dims[3] = half;
        join(n1, sizeof n1, pre, k ? "_half1" : "_half0");
        parts[k] = qw_mil_op(b->m, "slice_by_index", n1,
                             ARGS(A("x", x), A("begin", beg), A("end", end),
                                  A("begin_mask", bmask), A("end_mask", emask)),
                             out);
    }
    join(n1, sizeof n1, pre, "_neg_one");
    mv neg1 = qw_mil_const_f16(b->m, n1, -1.0f);
    join(n1, sizeof n1, pre, "_half1_neg");
    mv vals[2] = {binary(b, "mul", n1, parts[1], neg1), parts[0]};
    join(n1, sizeof n1, pre, "_rot_axis");
    mv axis = qw_mil_const_i32(b->m, n1, (const int32_t[]){3}, 1, 0);
    join(n1, sizeof n1, pre, "_rot_interleave");
    mv inter = qw_mil_const_bool(b->m, n1, false);
    join(n1, sizeof n1, pre, "_rot");
    const qw_mil_arg cargs[] = {{"values", vals, 2}, A("axis", axis), A("interleave", inter)};
    mv rot = qw_mil_op(b->m, "concat", n1, cargs, 3, x);
    join(n1, sizeof n1, pre, "_cos");
    mv xc = binary(b, "mul", n1, x, cos_t);
    join(n1, sizeof n1, pre, "_sin");
    mv rs = binary(b, "mul", n1, rot, sin_t);
    return binary(b, "add", pre, xc, rs);
}

/* ---- the program ---------------------------------------------------------------------------- */

/* The stateful program's key/value cache (states [layers, B, kv heads, seq_length, head_dim]) */
typedef struct cm_kv {
    mv state[2]; /* keyCache, valueCache */
    mv cache[2]; /* their latest values: read_state after each write */
    mv past;     /* [1] int32: tokens already in the cache (attention_mask's length - L) */
    mv total;    /* [1] int32: past + L, attention_mask's length */
    mv begin, end; /* [5] int32: the current layer's new positions [l, 0, 0, past, 0] ..
                    * [l+1, B, kv heads, total, hd] */
    mv read_begin; /* [5] int32: [l, 0, 0, 0, 0], the start of what attention reads */
    /* [5] bool: the layer is an index (squeezed), batch, heads and head_dim are whole, and
     * only the positions come from begin / end, so every other dimension stays static */
    mv squeeze, write_mask, read_begin_mask;
} cm_kv;

typedef struct cm_shared {
    mv cos, sin; /* [B, 1, S, head_dim] */
    mv cos_local, sin_local; /* the local layers' (Gemma 3), when the plan has them */
    mv bias;     /* [B, 1, S, S]: 0 where a query may see a key, MASK_VALUE elsewhere (stateful:
                  * [B, 1, L, past + L]) */
    mv bias_window; /* the same, keys past the sliding window masked too (when the plan has one) */
    cm_kv *kv;   /* stateful programs only, else NULL */
} cm_shared;

static mv split_heads_rope(cm_build *b, const char *pre, mv y, long long layer, int64_t n_heads,
                           const char *norm_name, const cm_shared *sh);

/* x[..., begin:end] on the last axis of a rank-3 var */
static mv last_axis_slice(cm_build *b, const char *pre, mv x, int64_t begin, int64_t end) {
    char n1[160];
    const int32_t bg[3] = {0, 0, (int32_t)begin}, en[3] = {0, 0, (int32_t)end};
    const bool bm[3] = {true, true, false}, em[3] = {true, true, false};
    join(n1, sizeof n1, pre, "_begin");
    mv bv = qw_mil_const_i32(b->m, n1, bg, 3, 1);
    join(n1, sizeof n1, pre, "_end");
    mv ev = qw_mil_const_i32(b->m, n1, en, 3, 1);
    join(n1, sizeof n1, pre, "_begin_mask");
    mv bmv = qw_mil_const_bools(b->m, n1, bm, 3);
    join(n1, sizeof n1, pre, "_end_mask");
    mv emv = qw_mil_const_bools(b->m, n1, em, 3);
    mv out = x;
    out.dims[2] = end - begin;
    return qw_mil_op(b->m, "slice_by_index", pre,
                     ARGS(A("x", x), A("begin", bv), A("end", ev), A("begin_mask", bmv),
                          A("end_mask", emv)),
                     out);
}

/* [B, S, n*hd] -> [B, n, S, hd] from one projection, with Qwen3's per-head norm and RoPE */
static mv project_heads(cm_build *b, const char *pre, mv h, const char *proj, long long layer,
                        int64_t n_heads, const char *norm_name, const cm_shared *sh) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char n1[160];
    const qw_hf_tensor *wt = tensor(b, true, "model.layers.%lld.self_attn.%s.weight", layer, proj);
    const qw_hf_tensor *bt = tensor(b, false, "model.layers.%lld.self_attn.%s.bias", layer, proj);
    if (!wt) return (mv){0};
    join(n1, sizeof n1, pre, "_weight");
    mv w = weight(b, wt, n1);
    mv bias = {0};
    if (bt) {
        join(n1, sizeof n1, pre, "_bias");
        bias = weight(b, bt, n1);
    }
    join(n1, sizeof n1, pre, "_linear");
    mv y = linear(b, n1, h, w, bt ? &bias : NULL);
    return split_heads_rope(b, pre, y, layer, n_heads, norm_name, sh);
}

/* [B, S, n*hd] -> [B, n, S, hd], with Qwen3's per-head norm and RoPE (sh NULL: none) */
static mv split_heads_rope(cm_build *b, const char *pre, mv y, long long layer, int64_t n_heads,
                           const char *norm_name, const cm_shared *sh) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char n1[160];
    const int64_t hd = b->p->head_dim, batch = b->p->settings.batch;
    const int32_t shape[4] = {(int32_t)batch, -1, (int32_t)n_heads, (int32_t)hd};
    join(n1, sizeof n1, pre, "_heads");
    mv r = reshape(b, n1, y, shape, 4);
    r.dims[1] = QW_MIL_DYN;
    if (norm_name) {
        const qw_hf_tensor *nt =
            tensor(b, false, "model.layers.%lld.self_attn.%s.weight", layer, norm_name);
        if (nt) {
            join(n1, sizeof n1, pre, "_norm_weight");
            mv nw = norm_weight(b, nt, n1);
            join(n1, sizeof n1, pre, "_norm");
            r = rms_norm(b, n1, r, nw);
        }
    }
    join(n1, sizeof n1, pre, "_t");
    mv t = transpose(b, n1, r, (const int32_t[]){0, 2, 1, 3});
    if (!sh) return t;
    join(n1, sizeof n1, pre, "_rope");
    const bool local = b->p->local_rope && b->p->sliding[layer];
    return rope(b, n1, t, local ? sh->cos_local : sh->cos, local ? sh->sin_local : sh->sin);
}

/* HF's repeat_kv: key/value head j serves query heads j*rep .. j*rep+rep-1 */
static mv repeat_kv(cm_build *b, const char *pre, mv x, int64_t rep) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    if (rep == 1) return x;
    char n1[160];
    join(n1, sizeof n1, pre, "_x");
    mv e = expand_dims(b, n1, x, 2);
    join(n1, sizeof n1, pre, "_reps");
    const int32_t reps[5] = {1, 1, (int32_t)rep, 1, 1};
    mv rv = qw_mil_const_i32(b->m, n1, reps, 5, 1);
    mv tiled_t = e;
    tiled_t.dims[2] = rep;
    join(n1, sizeof n1, pre, "_tiled");
    mv tiled = qw_mil_op(b->m, "tile", n1, ARGS(A("x", e), A("reps", rv)), tiled_t);
    const int32_t shape[4] = {(int32_t)x.dims[0], (int32_t)(x.dims[1] * rep), -1,
                              (int32_t)x.dims[3]};
    return reshape(b, pre, tiled, shape, 4);
}

/* The stateful program's cache step for one layer: x, this call's keys (which 0) or values
 * (which 1) [B, kv heads, L, hd], goes into positions past .. past+L-1 of the layer's slice
 * (slice_update, then write_state and read_state: coremltools' coreml_update_state on the
 * wire), and the cache's positions 0 .. past+L-1 come back [B, kv heads, past+L, hd]. The
 * keys' call makes the layer's slice bounds, which the values' call reuses. */
static mv cache_step(cm_build *b, const char *pre, long long layer, mv x, cm_kv *kv, int which) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    const int64_t batch = b->p->settings.batch, nkv = b->p->hp.n_head_kv, hd = b->p->head_dim;
    char n1[160], wpre[96];
    join(wpre, sizeof wpre, pre, which ? "_value_cache" : "_key_cache");
    if (which == 0) {
        /* both caches take the same slice: [l, 0, 0, past, 0] .. [l+1, B, kv heads, total, hd] */
        const int32_t b0[3] = {(int32_t)layer, 0, 0};
        const int32_t e0[3] = {(int32_t)layer + 1, (int32_t)batch, (int32_t)nkv};
        const int32_t zero = 0, hd32 = (int32_t)hd, r0[5] = {(int32_t)layer, 0, 0, 0, 0};
        join(n1, sizeof n1, pre, "_cache_begin_head");
        mv bh = qw_mil_const_i32(b->m, n1, b0, 3, 1);
        join(n1, sizeof n1, pre, "_cache_begin_tail");
        mv bt = qw_mil_const_i32(b->m, n1, &zero, 1, 1);
        join(n1, sizeof n1, pre, "_cache_end_head");
        mv eh = qw_mil_const_i32(b->m, n1, e0, 3, 1);
        join(n1, sizeof n1, pre, "_cache_end_tail");
        mv et = qw_mil_const_i32(b->m, n1, &hd32, 1, 1);
        join(n1, sizeof n1, pre, "_cache_axis");
        mv axis = qw_mil_const_i32(b->m, n1, (const int32_t[]){0}, 1, 0);
        join(n1, sizeof n1, pre, "_cache_interleave");
        mv inter = qw_mil_const_bool(b->m, n1, false);
        const int64_t d5[1] = {5};
        const mv bv[3] = {bh, kv->past, bt}, ev[3] = {eh, kv->total, et};
        const qw_mil_arg bargs[] = {{"values", bv, 3}, A("axis", axis), A("interleave", inter)};
        const qw_mil_arg eargs[] = {{"values", ev, 3}, A("axis", axis), A("interleave", inter)};
        join(n1, sizeof n1, pre, "_cache_begin");
        kv->begin = qw_mil_op(b->m, "concat", n1, bargs, 3, qw_mil_type(QW_MIL_INT32, 1, d5));
        join(n1, sizeof n1, pre, "_cache_end");
        kv->end = qw_mil_op(b->m, "concat", n1, eargs, 3, qw_mil_type(QW_MIL_INT32, 1, d5));
        join(n1, sizeof n1, pre, "_cache_read_begin");
        kv->read_begin = qw_mil_const_i32(b->m, n1, r0, 5, 1);
    }
    join(n1, sizeof n1, wpre, "_updated");
    mv updated = qw_mil_op(b->m, "slice_update", n1,
                           ARGS(A("x", kv->cache[which]), A("update", x), A("begin", kv->begin),
                                A("end", kv->end), A("begin_mask", kv->write_mask),
                                A("end_mask", kv->write_mask), A("squeeze_mask", kv->squeeze)),
                           kv->cache[which]);
    join(n1, sizeof n1, wpre, "_write");
    qw_mil_op_no_output(b->m, "write_state", n1,
                        ARGS(A("input", kv->state[which]), A("data", updated)));
    join(n1, sizeof n1, wpre, "_read");
    kv->cache[which] = qw_mil_op(b->m, "read_state", n1, ARGS(A("input", kv->state[which])),
                                 kv->cache[which]);
    const mv out = {NULL, QW_MIL_FP16, 4, {batch, nkv, QW_MIL_DYN, hd}};
    return qw_mil_op(b->m, "slice_by_index", wpre,
                     ARGS(A("x", kv->cache[which]), A("begin", kv->read_begin), A("end", kv->end),
                          A("begin_mask", kv->read_begin_mask), A("end_mask", kv->write_mask),
                          A("squeeze_mask", kv->squeeze)),
                     out);
}

/* softmax(q k^T * scale [soft-capped] + bias) v for q [B, heads, S, hd] and k, v with as many
 * heads, flattened to [B, S, heads * hd]; names start with pre */
static mv attention(cm_build *b, const char *pre, mv q, mv k, mv v, mv bias, double scale,
                    double softcap) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char n1[160];
    /* q scaled before the product: the same result, and smaller fp16 intermediates */
    join(n1, sizeof n1, pre, "_q_scale");
    mv sv = qw_mil_const_f16(b->m, n1, (float)scale);
    join(n1, sizeof n1, pre, "_q_scaled");
    mv qs = binary(b, "mul", n1, q, sv);
    join(n1, sizeof n1, pre, "_scores");
    mv s = matmul(b, n1, qs, k, true);
    if (softcap > 0.0) {
        join(n1, sizeof n1, pre, "_scores");
        s = soft_cap(b, n1, s, softcap);
    }
    join(n1, sizeof n1, pre, "_scores_masked");
    mv sm = binary(b, "add", n1, s, bias);
    join(n1, sizeof n1, pre, "_softmax_axis");
    mv axis = qw_mil_const_i32(b->m, n1, (const int32_t[]){-1}, 1, 0);
    join(n1, sizeof n1, pre, "_probs");
    mv pr = qw_mil_op(b->m, "softmax", n1, ARGS(A("x", sm), A("axis", axis)), sm);
    join(n1, sizeof n1, pre, "_attn");
    mv o = matmul(b, n1, pr, v, false);
    join(n1, sizeof n1, pre, "_attn_t");
    mv ot = transpose(b, n1, o, (const int32_t[]){0, 2, 1, 3});
    join(n1, sizeof n1, pre, "_attn_flat");
    const int32_t flat[3] = {(int32_t)q.dims[0], -1, (int32_t)(q.dims[1] * q.dims[3])};
    return reshape(b, n1, ot, flat, 3);
}

/* act(g) * u through the down projection w; names start with pre */
static mv gated_down(cm_build *b, const char *pre, mv g, mv u, mv w) {
    char n1[160];
    join(n1, sizeof n1, pre, "_act");
    mv a = activation(b, n1, g);
    join(n1, sizeof n1, pre, "_gated");
    mv gu = binary(b, "mul", n1, a, u);
    join(n1, sizeof n1, pre, "_down");
    return linear(b, n1, gu, w, NULL);
}

/* The gated MLP down(act(gate x) * up x) of the checkpoint module `module` (an expert's or the
 * shared expert's), whose linears the layout names; names start with pre */
static mv expert_mlp(cm_build *b, const char *pre, mv x, const char *module,
                     const qw_moe_layout *lo) {
    static const char *const WEIGHTS[3] = {"_gate_weight", "_up_weight", "_down_weight"};
    char n1[160];
    mv w[3];
    for (int i = 0; i < 3; i++) {
        const qw_hf_tensor *t = tensor(b, true, "%s.%s.weight", module, lo->linear[i]);
        if (!t) return (mv){0};
        join(n1, sizeof n1, pre, WEIGHTS[i]);
        w[i] = weight(b, t, n1);
    }
    join(n1, sizeof n1, pre, "_gate");
    mv g = linear(b, n1, x, w[0], NULL);
    join(n1, sizeof n1, pre, "_up");
    mv u = linear(b, n1, x, w[1], NULL);
    return gated_down(b, pre, g, u, w[2]);
}

/* A dense layer's MLP; Phi-3's gate_up_proj holds gate's rows, then up's */
static mv dense_mlp(cm_build *b, const char *pre, long long layer, mv h2) {
    if (!b->p->fused) {
        char module[64];
        snprintf(module, sizeof module, "model.layers.%lld.mlp", layer);
        static const qw_moe_layout DENSE = {"mlp", {"gate_proj", "up_proj", "down_proj"}};
        return expert_mlp(b, pre, h2, module, &DENSE);
    }
    char n1[160];
    const qw_hf_tensor *td = tensor(b, true, "model.layers.%lld.mlp.down_proj.weight", layer);
    const qw_hf_tensor *t = tensor(b, true, "model.layers.%lld.mlp.gate_up_proj.weight", layer);
    if (!td || !t) return (mv){0};
    join(n1, sizeof n1, pre, "_down_weight");
    mv wd = weight(b, td, n1);
    join(n1, sizeof n1, pre, "_gate_up_weight");
    mv w = weight(b, t, n1);
    join(n1, sizeof n1, pre, "_gate_up");
    mv y = linear(b, n1, h2, w, NULL);
    const int64_t ff = w.dims[0] / 2;
    join(n1, sizeof n1, pre, "_gate");
    mv g = last_axis_slice(b, n1, y, 0, ff);
    join(n1, sizeof n1, pre, "_up");
    mv u = last_axis_slice(b, n1, y, ff, 2 * ff);
    return gated_down(b, pre, g, u, wd);
}

/* A sparse layer's MLP as transformers computes it: router logits, softmax in fp32, the
 * n_expert_used most probable experts (weights renormalized to sum 1 when the plan says so),
 * their outputs summed with those weights; then Qwen2-MoE's shared expert times
 * sigmoid(shared_expert_gate x). A program has no data-dependent dispatch, so every expert runs
 * on every token and the others get weight 0; the top k are found by ranking each expert by how
 * many others beat it (a higher logit, or an equal one with a lower number: torch.topk's
 * order), which needs no sort op. */
static mv moe_mlp(cm_build *b, const char *pre, long long layer, mv x, const qw_moe_layout *lo) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    const cm_plan *p = b->p;
    const int64_t n_expert = p->hp.n_expert;
    char n1[160], rpre[96], module[96];
    join(rpre, sizeof rpre, pre, "_router");
    const qw_hf_tensor *rt = tensor(b, true, "model.layers.%lld.%s.gate.weight", layer,
                                    lo->prefix);
    if (!rt) return (mv){0};
    join(n1, sizeof n1, rpre, "_weight");
    mv rw = weight(b, rt, n1);
    join(n1, sizeof n1, rpre, "_logits_fp16");
    mv logits16 = linear(b, n1, x, rw, NULL); /* [B, S, E] */
    join(n1, sizeof n1, rpre, "_logits");
    mv logits = cast(b, n1, logits16, "fp32");
    /* beats[.., e, f]: expert f ranks before expert e */
    join(n1, sizeof n1, rpre, "_logits_e");
    mv le = expand_dims(b, n1, logits, 3);
    join(n1, sizeof n1, rpre, "_logits_f");
    mv lf = expand_dims(b, n1, logits, 2);
    join(n1, sizeof n1, rpre, "_higher");
    mv higher = binary(b, "greater", n1, lf, le);
    join(n1, sizeof n1, rpre, "_tied");
    mv tied = binary(b, "equal", n1, lf, le);
    if (!ok(b)) return (mv){0};
    int32_t *numbers = qw_malloc_array((size_t)n_expert, sizeof *numbers);
    if (!numbers) {
        qw_error e = {0};
        fail(b, &e, qw_fail(&e, QW_ERR_NO_MEMORY, "out of memory"));
        return (mv){0};
    }
    for (int64_t e = 0; e < n_expert; e++) numbers[e] = (int32_t)e;
    join(n1, sizeof n1, rpre, "_expert_f");
    mv nf = qw_mil_const_i32(b->m, n1, numbers, (size_t)n_expert, 1);
    qw_free(numbers);
    join(n1, sizeof n1, rpre, "_expert_e");
    mv ne = expand_dims(b, n1, nf, 1);
    join(n1, sizeof n1, rpre, "_lower_number");
    mv lower = binary(b, "less", n1, nf, ne); /* [E, E]: f < e */
    join(n1, sizeof n1, rpre, "_tie_won");
    mv tie_won = binary(b, "logical_and", n1, tied, lower);
    join(n1, sizeof n1, rpre, "_beats");
    mv beats = binary(b, "logical_or", n1, higher, tie_won);
    join(n1, sizeof n1, rpre, "_beats_fp32");
    mv beats32 = cast(b, n1, beats, "fp32");
    join(n1, sizeof n1, rpre, "_rank");
    mv rank = reduce_last_axis(b, "reduce_sum", n1, beats32, false);
    join(n1, sizeof n1, rpre, "_top_k");
    mv k = qw_mil_const_f32(b->m, n1, (float)p->hp.n_expert_used);
    join(n1, sizeof n1, rpre, "_chosen");
    mv chosen = binary(b, "less", n1, rank, k);
    join(n1, sizeof n1, rpre, "_chosen_fp32");
    mv chosen32 = cast(b, n1, chosen, "fp32");
    join(n1, sizeof n1, rpre, "_softmax_axis");
    mv axis = qw_mil_const_i32(b->m, n1, (const int32_t[]){-1}, 1, 0);
    join(n1, sizeof n1, rpre, "_probs");
    mv probs = qw_mil_op(b->m, "softmax", n1, ARGS(A("x", logits), A("axis", axis)), logits);
    join(n1, sizeof n1, rpre, "_weights_fp32");
    mv weights = binary(b, "mul", n1, probs, chosen32);
    if (p->moe_renorm) {
        join(n1, sizeof n1, rpre, "_weights_sum");
        mv sum = reduce_last_axis(b, "reduce_sum", n1, weights, true);
        join(n1, sizeof n1, rpre, "_weights_renormalized");
        weights = binary(b, "real_div", n1, weights, sum);
    }
    join(n1, sizeof n1, rpre, "_weights");
    weights = cast(b, n1, weights, "fp16");
    mv sum = {0};
    for (int64_t e = 0; ok(b) && e < n_expert; e++) {
        char epre[96];
        snprintf(epre, sizeof epre, "%s_expert_%lld", pre, (long long)e);
        snprintf(module, sizeof module, "model.layers.%lld.%s.experts.%lld", layer, lo->prefix,
                 (long long)e);
        mv y = expert_mlp(b, epre, x, module, lo);
        join(n1, sizeof n1, epre, "_weight");
        mv we = last_axis_slice(b, n1, weights, e, e + 1);
        join(n1, sizeof n1, epre, "_weighted");
        mv yw = binary(b, "mul", n1, y, we);
        join(n1, sizeof n1, epre, "_sum");
        sum = e == 0 ? yw : binary(b, "add", n1, sum, yw);
    }
    const qw_hf_tensor *sg = tensor(b, false, "model.layers.%lld.%s.shared_expert_gate.weight",
                                    layer, lo->prefix);
    if (!sg) return sum;
    char spre[96];
    join(spre, sizeof spre, pre, "_shared_expert");
    snprintf(module, sizeof module, "model.layers.%lld.%s.shared_expert", layer, lo->prefix);
    mv y = expert_mlp(b, spre, x, module, lo);
    join(n1, sizeof n1, spre, "_gate_weight_in");
    mv gw = weight(b, sg, n1);
    join(n1, sizeof n1, spre, "_gate_logit");
    mv gl = linear(b, n1, x, gw, NULL);
    join(n1, sizeof n1, spre, "_gate_value");
    mv gv = unary(b, "sigmoid", n1, gl);
    join(n1, sizeof n1, spre, "_gated_out");
    mv ys = binary(b, "mul", n1, y, gv);
    join(n1, sizeof n1, pre, "_moe_out");
    return binary(b, "add", n1, sum, ys);
}

static mv block(cm_build *b, long long layer, mv x, const cm_shared *sh) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    const cm_plan *p = b->p;
    const int64_t nh = p->hp.n_head, nkv = p->hp.n_head_kv, hd = p->head_dim;
    char pre[64], n1[160];
    snprintf(pre, sizeof pre, "layers_%lld", layer);
    const qw_hf_tensor *t1 = tensor(b, true, "model.layers.%lld.input_layernorm.weight", layer);
    const qw_hf_tensor *t2 =
        tensor(b, true, "model.layers.%lld.post_attention_layernorm.weight", layer);
    if (!t1 || !t2) return (mv){0};
    join(n1, sizeof n1, pre, "_input_norm_weight");
    mv w1 = norm_weight(b, t1, n1);
    join(n1, sizeof n1, pre, "_input_norm");
    mv h = rms_norm(b, n1, x, w1);
    mv q, k, v;
    if (p->fused) { /* Phi-3: one product, its columns q | k | v */
        const qw_hf_tensor *wt = tensor(b, true, "model.layers.%lld.self_attn.qkv_proj.weight",
                                        layer);
        if (!wt) return (mv){0};
        join(n1, sizeof n1, pre, "_qkv_weight");
        mv w = weight(b, wt, n1);
        join(n1, sizeof n1, pre, "_qkv");
        mv y = linear(b, n1, h, w, NULL);
        const int64_t ends[3] = {nh * hd, (nh + nkv) * hd, (nh + 2 * nkv) * hd};
        static const char *const PARTS[3] = {"_q", "_k", "_v"};
        mv parts[3];
        for (int i = 0; i < 3; i++) {
            char sub[96];
            join(sub, sizeof sub, pre, PARTS[i]);
            join(n1, sizeof n1, sub, "_cols");
            mv cols = last_axis_slice(b, n1, y, i ? ends[i - 1] : 0, ends[i]);
            parts[i] = split_heads_rope(b, sub, cols, layer, i ? nkv : nh, NULL,
                                        i < 2 ? sh : NULL);
        }
        q = parts[0], k = parts[1], v = parts[2];
    } else {
        join(n1, sizeof n1, pre, "_q");
        q = project_heads(b, n1, h, "q_proj", layer, nh, "q_norm", sh);
        join(n1, sizeof n1, pre, "_k");
        k = project_heads(b, n1, h, "k_proj", layer, nkv, "k_norm", sh);
        join(n1, sizeof n1, pre, "_v");
        v = project_heads(b, n1, h, "v_proj", layer, nkv, NULL, NULL);
    }
    if (sh->kv) { /* attention reads the cache: what earlier calls wrote and this call's k, v */
        k = cache_step(b, pre, layer, k, sh->kv, 0);
        v = cache_step(b, pre, layer, v, sh->kv, 1);
    }
    join(n1, sizeof n1, pre, "_k_rep");
    k = repeat_kv(b, n1, k, nh / nkv);
    k.dims[2] = QW_MIL_DYN;
    join(n1, sizeof n1, pre, "_v_rep");
    v = repeat_kv(b, n1, v, nh / nkv);
    v.dims[2] = QW_MIL_DYN;
    const bool windowed = p->window > 0 && (!p->sliding || p->sliding[layer]);
    mv of = attention(b, pre, q, k, v, windowed ? sh->bias_window : sh->bias, p->score_scale,
                      p->attn_softcap);
    const qw_hf_tensor *wo = tensor(b, true, "model.layers.%lld.self_attn.o_proj.weight", layer);
    if (!wo) return (mv){0};
    join(n1, sizeof n1, pre, "_o_weight");
    mv wov = weight(b, wo, n1);
    join(n1, sizeof n1, pre, "_o");
    mv attn = linear(b, n1, of, wov, NULL);
    if (p->sandwich) {
        join(n1, sizeof n1, pre, "_post_attn_norm_weight");
        mv wpa = norm_weight(b, t2, n1);
        join(n1, sizeof n1, pre, "_post_attn_norm");
        attn = rms_norm(b, n1, attn, wpa);
        t2 = tensor(b, true, "model.layers.%lld.pre_feedforward_layernorm.weight", layer);
        if (!t2) return (mv){0};
    }
    join(n1, sizeof n1, pre, "_attn_residual");
    x = binary(b, "add", n1, x, attn);

    join(n1, sizeof n1, pre, "_post_norm_weight");
    mv w2 = norm_weight(b, t2, n1);
    join(n1, sizeof n1, pre, "_post_norm");
    mv h2 = rms_norm(b, n1, x, w2);
    const qw_moe_layout *moe = layer_moe(p, layer);
    mv d = moe ? moe_mlp(b, pre, layer, h2, moe) : dense_mlp(b, pre, layer, h2);
    if (p->sandwich) {
        const qw_hf_tensor *t4 =
            tensor(b, true, "model.layers.%lld.post_feedforward_layernorm.weight", layer);
        if (!t4) return (mv){0};
        join(n1, sizeof n1, pre, "_post_ffn_norm_weight");
        mv w4 = norm_weight(b, t4, n1);
        join(n1, sizeof n1, pre, "_post_ffn_norm");
        d = rms_norm(b, n1, d, w4);
    }
    join(n1, sizeof n1, pre, "_out");
    return binary(b, "add", n1, x, d);
}

/* Reports layer `layer` of the program as converting (2..92%); false, with the build failed,
 * when the run was cancelled */
static bool layer_progress(cm_build *b, qw_reporter *r, long long layer) {
    const int64_t n = b->p->hp.n_layer;
    char msg[64];
    snprintf(msg, sizeof msg, "layer %lld/%lld", layer + 1, (long long)n);
    qw_error e = {0};
    qw_status st = qw_progress(r, 2 + (int)(90 * layer / n), "converting", msg, &e);
    if (st != QW_OK) fail(b, &e, st);
    return st == QW_OK;
}

/* Positions 0..S-1 of input_ids as an exclusive running sum of ones shaped like it (so no op
 * needs the length as a number); *zero is the int32 0 and *zeros ids * 0, which the callers use
 * again. */
static mv sequence_positions(cm_build *b, mv ids, mv *zero, mv *zeros) {
    *zero = qw_mil_const_i32(b->m, "zero_i32", (const int32_t[]){0}, 1, 0);
    mv one = qw_mil_const_i32(b->m, "one_i32", (const int32_t[]){1}, 1, 0);
    *zeros = binary(b, "mul", "ids_zeros", ids, *zero);
    mv ones = binary(b, "add", "ids_ones", *zeros, one);
    mv cax = qw_mil_const_i32(b->m, "positions_axis", (const int32_t[]){1}, 1, 0);
    mv excl = qw_mil_const_bool(b->m, "positions_exclusive", true);
    mv rev = qw_mil_const_bool(b->m, "positions_reverse", false);
    return qw_mil_op(b->m, "cumsum", "positions",
                     ARGS(A("x", ones), A("axis", cax), A("exclusive", excl), A("reverse", rev)),
                     ones);
}

/* inv_freq as transformers initialises it (f32 powers), with linear or llama3 scaling */
static void rope_inv_freq(const cm_plan *p, double theta, bool scaled, float *inv) {
    const qw_hparams *hp = &p->hp;
    const int64_t hd = p->head_dim, half = hd / 2;
    const bool longrope = scaled && (strcmp(hp->rope_type, "longrope") == 0 ||
                                     strcmp(hp->rope_type, "su") == 0);
    for (int64_t i = 0; i < half; i++) {
        const float base = powf((float)theta, (float)(2 * i) / (float)hd);
        inv[i] = longrope ? 1.0f / (hp->rope_short_factor[i] * base) : 1.0f / base;
    }
    if (!scaled) return;
    if (strcmp(hp->rope_type, "linear") == 0) {
        for (int64_t i = 0; i < half; i++) inv[i] /= (float)hp->rope_factor;
    } else if (strcmp(hp->rope_type, "llama3") == 0) {
        const double factor = hp->rope_factor, lo = hp->rope_low_freq_factor,
                     hi = hp->rope_high_freq_factor, orig = (double)hp->rope_orig_ctx;
        for (int64_t i = 0; i < half; i++) {
            const double wavelen = 2.0 * 3.14159265358979323846 / inv[i];
            if (wavelen > orig / lo) {
                inv[i] = (float)(inv[i] / factor);
            } else if (wavelen >= orig / hi) {
                const double smooth = (orig / wavelen - lo) / (hi - lo);
                inv[i] = (float)((1.0 - smooth) * inv[i] / factor + smooth * inv[i]);
            }
        }
    }
}

/* cos and sin of every position up to seq_length, [seq_length, head_dim] fp16, gathered by
 * position: the program never needs the sequence length as a number. Names start with `what`
 * ("rope", or "rope_local" for Gemma 3's local layers). */
static void rope_table_pair(cm_build *b, mv pos, const char *what, double theta, bool scaled,
                            mv *cos_out, mv *sin_out) {
    const cm_plan *p = b->p;
    const int64_t hd = p->head_dim, half = hd / 2, len = p->settings.seq_length;
    float *inv = qw_malloc_array((size_t)half, sizeof *inv);
    uint16_t *tab = qw_malloc_array((size_t)(len * hd), sizeof *tab);
    if (!inv || !tab) {
        qw_error e = {0};
        fail(b, &e, qw_fail(&e, QW_ERR_NO_MEMORY, "out of memory"));
    } else {
        rope_inv_freq(p, theta, scaled, inv);
    }
    for (int k = 0; inv && tab && k < 2; k++) {
        for (int64_t t = 0; t < len; t++) {
            for (int64_t i = 0; i < hd; i++) {
                const float angle = (float)t * inv[i % half]; /* f32, as torch */
                const float v = (float)(k ? sin((double)angle) : cos((double)angle));
                /* longrope's attention factor, applied in f32 as transformers does */
                tab[t * hd + i] = qw_fp32_to_fp16(scaled ? v * (float)p->rope_attn_factor : v);
            }
        }
        char name[64], n1[96];
        snprintf(name, sizeof name, "%s_%s", what, k ? "sin" : "cos");
        const int64_t dims[2] = {len, hd};
        mv table = qw_mil_const_data(b->m, join(n1, sizeof n1, name, "_table"), QW_MIL_FP16, 2,
                                     dims, tab, (size_t)(len * hd) * 2);
        mv axis = qw_mil_const_i32(b->m, join(n1, sizeof n1, name, "_axis"),
                                   (const int32_t[]){0}, 1, 0);
        mv bd = qw_mil_const_i32(b->m, join(n1, sizeof n1, name, "_batch_dims"),
                                 (const int32_t[]){0}, 1, 0);
        const int64_t gd[3] = {pos.dims[0], pos.dims[1], hd};
        mv g = qw_mil_op(b->m, "gather", join(n1, sizeof n1, name, "_rows"),
                         ARGS(A("x", table), A("indices", pos), A("axis", axis),
                              A("batch_dims", bd)),
                         qw_mil_type(QW_MIL_FP16, 3, gd));
        mv e = expand_dims(b, name, g, 1);
        if (k) *sin_out = e;
        else *cos_out = e;
    }
    qw_free(inv);
    qw_free(tab);
}

static void rope_tables(cm_build *b, mv pos, cm_shared *sh) {
    rope_table_pair(b, pos, "rope", b->p->rope_theta, true, &sh->cos, &sh->sin);
    if (b->p->local_rope) {
        rope_table_pair(b, pos, "rope_local", b->p->rope_theta_local, false, &sh->cos_local,
                        &sh->sin_local);
    }
}

/* The stateful program's positions: input_ids holds the L new tokens and attention_mask the
 * past + L the cache will hold, so past is the difference of the two lengths (shape and sub:
 * no extra input, as Apple's Llama 3.1 recipe derives it). The queries sit at past .. past+L-1
 * and the keys at 0 .. past+L-1. Also creates the two states and reads them. */
static void stateful_positions(cm_build *b, mv ids, mv am, mv *pos, mv *kpos, cm_kv *kv) {
    const cm_plan *p = b->p;
    const int64_t d1[1] = {1}, d2[1] = {2};
    const int64_t cache_dims[5] = {p->hp.n_layer, p->settings.batch, p->hp.n_head_kv,
                                   p->settings.seq_length, p->head_dim};
    static const char *const NAMES[2] = {"keyCache", "valueCache"};
    static const char *const DOCS[2] = {
        "Keys of every layer and position so far [layers, batch, key/value heads, seq_length, "
        "head_dim]",
        "Values of every layer and position so far [layers, batch, key/value heads, "
        "seq_length, head_dim]"};
    for (int i = 0; i < 2; i++) {
        kv->state[i] = qw_mil_state(b->m, NAMES[i], DOCS[i], 5, cache_dims);
        kv->cache[i] = kv->state[i];
    }
    mv lens[2];
    static const char *const WHAT[2] = {"new", "total"};
    for (int i = 0; i < 2; i++) {
        char n1[64];
        snprintf(n1, sizeof n1, "%s_shape", i ? "attention_mask" : "input_ids");
        mv src = i ? am : ids;
        mv sh = qw_mil_op(b->m, "shape", n1, ARGS(A("x", src)), qw_mil_type(QW_MIL_INT32, 1, d2));
        snprintf(n1, sizeof n1, "%s_length_index", WHAT[i]);
        mv idx = qw_mil_const_i32(b->m, n1, (const int32_t[]){1}, 1, 1);
        snprintf(n1, sizeof n1, "%s_length_axis", WHAT[i]);
        mv axis = qw_mil_const_i32(b->m, n1, (const int32_t[]){0}, 1, 0);
        snprintf(n1, sizeof n1, "%s_length_batch_dims", WHAT[i]);
        mv bd = qw_mil_const_i32(b->m, n1, (const int32_t[]){0}, 1, 0);
        snprintf(n1, sizeof n1, "%s_length", WHAT[i]);
        lens[i] = qw_mil_op(b->m, "gather", n1,
                            ARGS(A("x", sh), A("indices", idx), A("axis", axis),
                                 A("batch_dims", bd)),
                            qw_mil_type(QW_MIL_INT32, 1, d1));
    }
    kv->total = lens[1];
    kv->past = binary(b, "sub", "past_length", lens[1], lens[0]);
    *pos = binary(b, "add", "query_positions_abs", *pos, kv->past);
    mv zero = qw_mil_const_i32(b->m, "mask_zero_i32", (const int32_t[]){0}, 1, 0);
    mv one = qw_mil_const_i32(b->m, "mask_one_i32", (const int32_t[]){1}, 1, 0);
    mv zeros = binary(b, "mul", "mask_zeros", am, zero);
    mv ones = binary(b, "add", "mask_ones", zeros, one);
    mv cax = qw_mil_const_i32(b->m, "key_positions_axis", (const int32_t[]){1}, 1, 0);
    mv excl = qw_mil_const_bool(b->m, "key_positions_exclusive", true);
    mv rev = qw_mil_const_bool(b->m, "key_positions_reverse", false);
    *kpos = qw_mil_op(b->m, "cumsum", "key_positions_abs",
                      ARGS(A("x", ones), A("axis", cax), A("exclusive", excl), A("reverse", rev)),
                      ones);
    static const bool SQUEEZE[5] = {true, false, false, false, false};
    static const bool WRITE_MASK[5] = {false, true, true, false, true};
    static const bool READ_BEGIN_MASK[5] = {false, true, true, true, true};
    kv->squeeze = qw_mil_const_bools(b->m, "cache_squeeze_mask", SQUEEZE, 5);
    kv->write_mask = qw_mil_const_bools(b->m, "cache_write_mask", WRITE_MASK, 5);
    kv->read_begin_mask = qw_mil_const_bools(b->m, "cache_read_begin_mask", READ_BEGIN_MASK, 5);
    for (int i = 0; i < 2; i++) {
        char n1[64];
        snprintf(n1, sizeof n1, "%s_initial", NAMES[i]);
        kv->cache[i] = qw_mil_op(b->m, "read_state", n1, ARGS(A("input", kv->state[i])),
                                 kv->state[i]);
    }
}

/* [B, S, S'] blocked keys -> the additive bias [B, 1, S, S']: MASK_VALUE where blocked, 0
 * elsewhere (select() would take its shape from the two values only, so the mask is scaled) */
static mv attention_bias(cm_build *b, const char *name, mv blocked, mv mask_value) {
    char n1[96];
    snprintf(n1, sizeof n1, "%s_fp16", name);
    mv blocked16 = cast(b, n1, blocked, "fp16");
    snprintf(n1, sizeof n1, "%s_3d", name);
    mv bias3 = binary(b, "mul", n1, blocked16, mask_value);
    return expand_dims(b, name, bias3, 1);
}

static void build_program(cm_build *b, qw_reporter *r) {
    const cm_plan *p = b->p;
    const int64_t in_dims[2] = {p->settings.batch, QW_MIL_DYN};
    mv ids = qw_mil_input(b->m, "input_ids", QW_MIL_INT32, 2, in_dims);
    mv am = qw_mil_input(b->m, "attention_mask", QW_MIL_INT32, 2, in_dims);
    const qw_hf_tensor *et = tensor(b, true, "model.embed_tokens.weight");
    if (!et) return;
    mv embed = weight(b, et, "embed_tokens_weight");
    mv axis0 = qw_mil_const_i32(b->m, "embed_axis", (const int32_t[]){0}, 1, 0);
    mv bd0 = qw_mil_const_i32(b->m, "embed_batch_dims", (const int32_t[]){0}, 1, 0);
    const int64_t xd[3] = {p->settings.batch, QW_MIL_DYN, p->hp.n_embd};
    mv x = qw_mil_op(b->m, "gather", "embed",
                     ARGS(A("x", embed), A("indices", ids), A("axis", axis0), A("batch_dims", bd0)),
                     qw_mil_type(QW_MIL_FP16, 3, xd));
    if (p->embed_scale != 0.0f) { /* Gemma: times sqrt(hidden), in the compute dtype */
        mv scale = qw_mil_const_f16(b->m, "embed_scale", p->embed_scale);
        x = binary(b, "mul", "embed_scaled", x, scale);
    }
    mv zero, zeros;
    mv pos = sequence_positions(b, ids, &zero, &zeros);
    cm_shared sh;
    cm_kv kv;
    sh.kv = NULL;
    mv kpos = pos; /* the keys' positions: the queries' own, or (stateful) 0 .. past+L-1 */
    if (p->settings.stateful) {
        sh.kv = &kv;
        stateful_positions(b, ids, am, &pos, &kpos, &kv);
    }
    rope_tables(b, pos, &sh);
    /* causal + padding mask: key j is blocked for query i when j > i or attention_mask[j] == 0 */
    mv pi = expand_dims(b, "query_positions", pos, 2);
    mv pj = expand_dims(b, "key_positions", kpos, 1);
    mv future = binary(b, "greater", "future_keys", pj, pi);
    mv amj = expand_dims(b, "key_mask", am, 1);
    mv padded = binary(b, "equal", "padded_keys", amj, zero);
    mv blocked = binary(b, "logical_or", "blocked_keys", future, padded);
    mv neg = qw_mil_const_f16(b->m, "mask_value", MASK_VALUE);
    sh.bias = attention_bias(b, "attention_bias", blocked, neg);
    if (p->window > 0) { /* sliding layers also block key j when i - j >= window */
        mv dist = binary(b, "sub", "key_distances", pi, pj);
        mv wv = qw_mil_const_i32(b->m, "sliding_window", (const int32_t[]){(int32_t)p->window},
                                 1, 0);
        mv far = binary(b, "greater_equal", "far_keys", dist, wv);
        mv blocked_w = binary(b, "logical_or", "blocked_keys_window", blocked, far);
        sh.bias_window = attention_bias(b, "attention_bias_window", blocked_w, neg);
    }
    for (long long layer = 0; ok(b) && layer < p->hp.n_layer; layer++) {
        if (!layer_progress(b, r, layer)) return;
        x = block(b, layer, x, &sh);
    }
    const qw_hf_tensor *nt = tensor(b, true, "model.norm.weight");
    if (!nt) return;
    mv nw = norm_weight(b, nt, "norm_weight");
    mv h = rms_norm(b, "norm", x, nw);
    mv head = embed;
    const qw_hf_tensor *lt = tensor(b, false, "lm_head.weight");
    if (lt) head = weight(b, lt, "lm_head_weight");
    mv logits16 = linear(b, "lm_head", h, head, NULL);
    mv logits = cast(b, p->final_softcap > 0.0 ? "logits_uncapped" : "logits", logits16, "fp32");
    if (p->final_softcap > 0.0) logits = soft_cap(b, "logits", logits, p->final_softcap);
    qw_mil_output(b->m, logits);
}

/* ---- the encoder program (BERT) ------------------------------------------------------------- */

/* LayerNorm over the last axis in float32, as transformers computes it in a float32 model (the
 * variance of fp16 activations would lose most of its bits), the result back in fp16 scaled and
 * shifted by the weight and bias. */
static mv layer_norm(cm_build *b, const char *pre, mv x, mv gamma, mv beta) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    char n1[160];
    join(n1, sizeof n1, pre, "_x32");
    mv xf = cast(b, n1, x, "fp32");
    join(n1, sizeof n1, pre, "_mean");
    mv mean = reduce_last_axis(b, "reduce_mean", n1, xf, true);
    join(n1, sizeof n1, pre, "_centered");
    mv centered = binary(b, "sub", n1, xf, mean);
    join(n1, sizeof n1, pre, "_sq");
    mv sq = binary(b, "mul", n1, centered, centered);
    join(n1, sizeof n1, pre, "_var");
    mv var = reduce_last_axis(b, "reduce_mean", n1, sq, true);
    join(n1, sizeof n1, pre, "_eps");
    mv eps = qw_mil_const_f32(b->m, n1, (float)b->p->norm_eps);
    join(n1, sizeof n1, pre, "_rsqrt");
    mv r = qw_mil_op(b->m, "rsqrt", n1, ARGS(A("x", var), A("epsilon", eps)), var);
    join(n1, sizeof n1, pre, "_normed");
    mv y = binary(b, "mul", n1, centered, r);
    join(n1, sizeof n1, pre, "_x16");
    mv yh = cast(b, n1, y, "fp16");
    join(n1, sizeof n1, pre, "_scaled");
    mv scaled = binary(b, "mul", n1, yh, gamma);
    return binary(b, "add", pre, scaled, beta);
}

/* The encoder's tensor "<prefix><fmt>" (prefix: "bert." in the task models' checkpoints) as a
 * const named mil_name. */
static mv encoder_weight(cm_build *b, const char *mil_name, const char *fmt, ...)
    QW_PRINTF(3, 4);
static mv encoder_weight(cm_build *b, const char *mil_name, const char *fmt, ...) {
    char rest[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    const qw_hf_tensor *t = tensor(b, true, "%s%s", b->p->prefix, rest);
    return t ? weight(b, t, mil_name) : (mv){0};
}

/* "<module>.weight" and "<module>.bias" of layer `layer` applied as one linear */
static mv encoder_linear(cm_build *b, const char *pre, mv x, long long layer, const char *module) {
    char n1[160];
    join(n1, sizeof n1, pre, "_weight");
    mv w = encoder_weight(b, n1, "encoder.layer.%lld.%s.weight", layer, module);
    join(n1, sizeof n1, pre, "_bias");
    mv bias = encoder_weight(b, n1, "encoder.layer.%lld.%s.bias", layer, module);
    return linear(b, pre, x, w, &bias);
}

static mv encoder_layer_norm(cm_build *b, const char *pre, mv x, long long layer,
                             const char *module) {
    char n1[160];
    join(n1, sizeof n1, pre, "_weight");
    mv g = encoder_weight(b, n1, "encoder.layer.%lld.%s.weight", layer, module);
    join(n1, sizeof n1, pre, "_bias");
    mv beta = encoder_weight(b, n1, "encoder.layer.%lld.%s.bias", layer, module);
    return layer_norm(b, pre, x, g, beta);
}

/* [B, S, H] -> [B, heads, S, head_dim] */
static mv split_heads(cm_build *b, const char *pre, mv y) {
    char n1[160];
    const int32_t shape[4] = {(int32_t)b->p->settings.batch, -1, (int32_t)b->p->hp.n_head,
                              (int32_t)b->p->head_dim};
    join(n1, sizeof n1, pre, "_heads");
    mv r = reshape(b, n1, y, shape, 4);
    r.dims[1] = QW_MIL_DYN;
    join(n1, sizeof n1, pre, "_t");
    return transpose(b, n1, r, (const int32_t[]){0, 2, 1, 3});
}

/* One BertLayer: self-attention over every unmasked token, residual and LayerNorm after each
 * sublayer (post-norm), feed-forward with the configured activation. */
static mv encoder_block(cm_build *b, long long layer, mv x, mv bias) {
    if (!ok(b)) return (mv){0}; /* after an error vars are empty: build nothing more */
    const cm_plan *p = b->p;
    char pre[64], n1[160];
    snprintf(pre, sizeof pre, "layer_%lld", layer);
    static const char *const QKV[] = {"query", "key", "value"};
    mv heads[3];
    for (int i = 0; i < 3; i++) {
        char module[64];
        snprintf(module, sizeof module, "attention.self.%s", QKV[i]);
        char sub[96];
        snprintf(sub, sizeof sub, "%s_%s", pre, QKV[i]);
        heads[i] = split_heads(b, sub, encoder_linear(b, sub, x, layer, module));
    }
    mv of = attention(b, pre, heads[0], heads[1], heads[2], bias,
                      1.0 / sqrt((double)p->head_dim), 0.0);
    join(n1, sizeof n1, pre, "_attn_out");
    mv attn = encoder_linear(b, n1, of, layer, "attention.output.dense");
    join(n1, sizeof n1, pre, "_attn_residual");
    mv r1 = binary(b, "add", n1, attn, x);
    join(n1, sizeof n1, pre, "_attn_norm");
    x = encoder_layer_norm(b, n1, r1, layer, "attention.output.LayerNorm");

    join(n1, sizeof n1, pre, "_intermediate");
    mv up = encoder_linear(b, n1, x, layer, "intermediate.dense");
    join(n1, sizeof n1, pre, "_act");
    mv act = activation(b, n1, up);
    join(n1, sizeof n1, pre, "_output");
    mv down = encoder_linear(b, n1, act, layer, "output.dense");
    join(n1, sizeof n1, pre, "_output_residual");
    mv r2 = binary(b, "add", n1, down, x);
    join(n1, sizeof n1, pre, "_output_norm");
    return encoder_layer_norm(b, n1, r2, layer, "output.LayerNorm");
}

/* BertModel's last_hidden_state: word + position + token-type embeddings (positions 0..S-1 and
 * type 0, what transformers uses when given neither), LayerNorm, the layers; padding keys are
 * masked out of every query's attention. */
static void build_encoder(cm_build *b, qw_reporter *r) {
    const cm_plan *p = b->p;
    const int64_t in_dims[2] = {p->settings.batch, QW_MIL_DYN};
    mv ids = qw_mil_input(b->m, "input_ids", QW_MIL_INT32, 2, in_dims);
    mv am = qw_mil_input(b->m, "attention_mask", QW_MIL_INT32, 2, in_dims);
    mv zero, zeros;
    mv pos = sequence_positions(b, ids, &zero, &zeros);
    static const struct {
        const char *tensor, *mil;
    } EMBEDDINGS[] = {
        {"embeddings.word_embeddings.weight", "word_embeddings"},
        {"embeddings.position_embeddings.weight", "position_embeddings"},
        {"embeddings.token_type_embeddings.weight", "token_type_embeddings"},
    };
    const mv indices[3] = {ids, pos, zeros};
    const int64_t xd[3] = {p->settings.batch, QW_MIL_DYN, p->hp.n_embd};
    mv x = {0};
    for (int i = 0; i < 3; i++) {
        char n1[160];
        join(n1, sizeof n1, EMBEDDINGS[i].mil, "_weight");
        mv table = encoder_weight(b, n1, "%s", EMBEDDINGS[i].tensor);
        join(n1, sizeof n1, EMBEDDINGS[i].mil, "_axis");
        mv axis0 = qw_mil_const_i32(b->m, n1, (const int32_t[]){0}, 1, 0);
        join(n1, sizeof n1, EMBEDDINGS[i].mil, "_batch_dims");
        mv bd0 = qw_mil_const_i32(b->m, n1, (const int32_t[]){0}, 1, 0);
        mv e = qw_mil_op(b->m, "gather", EMBEDDINGS[i].mil,
                         ARGS(A("x", table), A("indices", indices[i]), A("axis", axis0),
                              A("batch_dims", bd0)),
                         qw_mil_type(QW_MIL_FP16, 3, xd));
        join(n1, sizeof n1, EMBEDDINGS[i].mil, "_sum");
        x = i == 0 ? e : binary(b, "add", n1, x, e);
    }
    mv g = encoder_weight(b, "embeddings_norm_weight", "embeddings.LayerNorm.weight");
    mv beta = encoder_weight(b, "embeddings_norm_bias", "embeddings.LayerNorm.bias");
    x = layer_norm(b, "embeddings_norm", x, g, beta);
    /* key j is blocked for every query when attention_mask[j] == 0: [B, 1, 1, S] */
    mv amj = expand_dims(b, "key_mask", am, 1);
    mv padded = binary(b, "equal", "padded_keys", amj, zero);
    mv padded16 = cast(b, "padded_keys_fp16", padded, "fp16");
    mv neg = qw_mil_const_f16(b->m, "mask_value", MASK_VALUE);
    mv bias3 = binary(b, "mul", "mask_bias", padded16, neg);
    mv bias = expand_dims(b, "attention_bias", bias3, 1);
    for (long long layer = 0; ok(b) && layer < p->hp.n_layer; layer++) {
        if (!layer_progress(b, r, layer)) return;
        x = encoder_block(b, layer, x, bias);
    }
    qw_mil_output(b->m, cast(b, "last_hidden_state", x, "fp32"));
}

/* ---- execution ------------------------------------------------------------------------------ */

/* An earlier output is replaced only if it is a package (it has a Manifest.json). */
static bool is_mlpackage(const char *dir) {
    char *manifest = qw_path_join(dir, "Manifest.json");
    const bool ours = manifest && qw_path_is_file(manifest);
    qw_free(manifest);
    return ours;
}

static qw_status write_spec(const char *dir, const uint8_t *data, size_t len, qw_error *err) {
    char *path = qw_sprintf("%s/Data/" QW_MLPACKAGE_AUTHOR "/model.mlmodel", dir);
    if (!path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_output *o = NULL;
    qw_status st = qw_output_open(path, &o, err);
    if (st == QW_OK) st = qw_output_write(o, data, len, err);
    if (st == QW_OK) {
        st = qw_output_commit(o, err);
        o = NULL;
    }
    qw_output_abort(o);
    qw_free(path);
    return st;
}

static qw_status execute_into(const qw_run_context *ctx, cm_plan *p, const char *dir,
                              cm_build *b, qw_error *err) {
    const qw_model *model = ctx->model;
    char *seed = qw_sprintf("%s/%s", model->name, p->format);
    qw_status st = seed ? qw_mlpackage_layout(dir, seed, err)
                        : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_free(seed);
    QW_TRY(st);
    char *blob_path = qw_sprintf("%s/Data/" QW_MLPACKAGE_AUTHOR "/weights/weight.bin", dir);
    if (!blob_path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    st = qw_blob_writer_open(blob_path, &b->blobs, err);
    qw_free(blob_path);
    QW_TRY(st);
    QW_TRY(qw_mil_create(b->blobs, &b->m, err));
    p->family->build(b, ctx->reporter);
    QW_TRY(qw_mil_status(b->m, err));
    qw_blob_writer *w = b->blobs;
    b->blobs = NULL;
    QW_TRY(qw_blob_writer_finish(w, err));
    QW_TRY(qw_progress(ctx->reporter, 95, "writing", "model.mlmodel", err));

    const int64_t batch = p->settings.batch;
    const bool stateful = p->settings.stateful;
    /* stateful: both inputs stay range-flexible (a fixed input next to a range one is read as
     * enumerated, and Core ML refuses the mix in stateful models: coremltools #2548) */
    qw_mil_feature inputs[2] = {
        {"input_ids",
         stateful ? "Token ids of the new tokens (the cache holds the earlier ones)" : "Token ids",
         QW_ARRAY_INT32, 2, {batch, p->settings.default_len}, true, {batch, 1},
         {batch, p->settings.seq_length}},
        {"attention_mask",
         stateful ? "1 for tokens to attend to, 0 for padding, over the cached and the new "
                    "tokens: its length minus input_ids' is where the new ones go in the cache"
                  : "1 for tokens to attend to, 0 for padding",
         QW_ARRAY_INT32, 2, {batch, p->settings.default_len}, true, {batch, 1},
         {batch, p->settings.seq_length}},
    };
    qw_mil_feature outputs[1] = {
        {p->family->output, p->family->output_doc, QW_ARRAY_FLOAT32, 0, {0}, false, {0}, {0}},
    };
    const char *const meta[] = {
        "qwodel.version",         QW_VERSION,
        "qwodel.source",          model->path,
        "qwodel.format",          p->format,
        "qwodel.compute_units",   p->settings.compute_units,
        "co.huggingface.exporters.name", model->name,
        "qwodel.stateful",        "true", /* (stateful models only: the last pair) */
    };
    char *desc = qw_sprintf("%s (%s) converted by qwodel", model->name, p->format);
    const qw_mil_model_info info = {p->spec, p->opset, inputs, 2, outputs, 1, desc, meta,
                                    sizeof meta / sizeof meta[0] / 2 - (stateful ? 0 : 1)};
    uint8_t *spec = NULL;
    size_t spec_len = 0;
    st = desc ? qw_mil_serialize(b->m, &info, &spec, &spec_len, err)
              : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_free(desc);
    if (st == QW_OK) st = write_spec(dir, spec, spec_len, err);
    qw_free(spec);
    return st;
}

static qw_status coreml_execute(const qw_run_context *ctx, const qw_plan *plan,
                                qw_run_result *result, qw_error *err) {
    cm_plan *p = plan->priv;
    cm_build b = {0};
    b.p = p;
    b.pool = ctx->pool;
    /* chunk buffers: at least one row of the widest tensor, else 4M elements */
    int64_t widest = 1;
    for (size_t i = 0; i < qw_hf_view_count(p->view); i++) {
        const int64_t w = qw_hf_view_at(p->view, i)->ne[0];
        widest = w > widest ? w : widest;
    }
    b.chunk = (size_t)(widest > (4 << 20) ? widest : (4 << 20));
    b.rows = qw_malloc_array(b.chunk, sizeof *b.rows);
    b.half = qw_malloc_array(b.chunk, sizeof *b.half);
    b.q = qw_malloc_array(b.chunk, sizeof *b.q);
    qw_dir_clean_stale(plan->output_path);
    char *tmp = qw_dir_temp_path(plan->output_path);
    qw_status st = tmp && b.rows && b.half && b.q ? qw_mkdir_p(tmp, err)
                                                  : qw_fail(err, QW_ERR_NO_MEMORY,
                                                            "out of memory");
    if (st == QW_OK) st = execute_into(ctx, p, tmp, &b, err);
    qw_blob_writer_abort(b.blobs);
    qw_mil_free(b.m);
    if (st == QW_OK) {
        st = qw_dir_publish(tmp, plan->output_path, is_mlpackage, "an .mlpackage", err);
    }
    if (st != QW_OK && tmp) qw_dir_remove_tree(tmp); /* a failed or cancelled run leaves nothing */
    qw_free(tmp);
    qw_free(b.rows);
    qw_free(b.half);
    qw_free(b.q);
    QW_TRY(st);
    QW_TRY(qw_progress(ctx->reporter, 100, "done", plan->output_path, err));
    /* the package's size: its three files */
    static const char *const FILES[] = {"Manifest.json",
                                        "Data/" QW_MLPACKAGE_AUTHOR "/model.mlmodel",
                                        "Data/" QW_MLPACKAGE_AUTHOR "/weights/weight.bin"};
    uint64_t size = 0, weights = 0;
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        char *path = qw_path_join(plan->output_path, FILES[i]);
        struct stat sb;
        if (path && stat(path, &sb) == 0) {
            size += (uint64_t)sb.st_size;
            if (i == 2) weights = (uint64_t)sb.st_size;
        }
        qw_free(path);
    }
    result->file_size = size;
    result->data_bytes = weights;
    result->n_elements = b.n_params;
    result->details = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:b}", "compute_units",
                                p->settings.compute_units, "specification_version", (int)p->spec,
                                "opset", p->opset, "seq_length", (json_int_t)p->settings.seq_length,
                                "batch_size", (json_int_t)p->settings.batch,
                                "compressed_parameters", (json_int_t)b.n_compressed, "stateful",
                                (int)p->settings.stateful);
    if (result->details && p->settings.stateful) {
        /* both caches: layers x batch x kv heads x seq_length x head_dim fp16 values */
        const json_int_t cache = (json_int_t)(p->hp.n_layer * p->settings.batch *
                                              p->hp.n_head_kv * p->settings.seq_length *
                                              p->head_dim * 2 * 2);
        json_object_set_new(result->details, "state_bytes", json_integer(cache));
    }
    return QW_OK;
}

/* A model of another family is refused when the quantizer is created, naming the written ones;
 * so is a multimodal checkpoint (Gemma 3's, the text model nested), whose text model alone
 * (Gemma3ForCausalLM, "gemma3_text") is written. */
static qw_status coreml_check_model(const qw_model *m, qw_error *err) {
    const bool multimodal = m->multimodal;
    if (family_of(m) && !multimodal) return QW_OK;
    const char *arch = m->arch ? m->arch->name : m->arch_name;
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "architecture", -1,
                      "%s: the coreml backend does not write %s \"%s\" yet (it writes llama, "
                      "mistral, mixtral, qwen2, qwen2-moe, qwen3, qwen3-moe, gemma, gemma2, gemma3 "
                      "text and phi3 causal LMs and BERT encoders)",
                      m->path, multimodal ? "the multimodal" : "architecture", arch ? arch : "?");
}

const qw_backend_ops qw_coreml_backend = {
    .name = "coreml",
    .description = "Core ML ML Programs (.mlpackage) for Apple devices, written directly from "
                   "the checkpoint.",
    .logger = "CoreMLQuantizer",
    .default_format = "float16",
    .format_count = format_count,
    .format_name = format_name,
    .format_description = format_description,
    .format_find = format_find,
    .options = coreml_options,
    .n_options = sizeof coreml_options / sizeof coreml_options[0],
    .check_model = coreml_check_model,
    .plan = coreml_plan_build,
    .execute = coreml_execute,
};
