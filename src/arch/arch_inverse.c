/*
 * The way back from GGUF to HuggingFace: GGUF tensor names to HF names (the table's rules read
 * right to left), the inverse of the Q/K row permutation, rope scaling recovered from GGUF keys
 * and from rope_freqs.weight, and a config.json built from hyperparameters.
 *
 * Only the rows in arch.c say how names map; this file adds nothing per architecture except the
 * few config.json keys that HF's classes expect and GGUF does not carry (config_extras below).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"

/* GGUF tensors that llama.cpp computes from the config and HF recomputes itself: no HF tensor.
 * (Phi-3's rope factor tensors come back as rope_scaling lists in config.json, hf_view.c.) */
static const char *const gguf_only_tensors[] = {"rope_freqs.weight", "rope_factors_long.weight",
                                                "rope_factors_short.weight", NULL};

bool qw_arch_is_gguf_only_tensor(const char *gguf_name) {
    for (const char *const *p = gguf_only_tensors; *p; p++) {
        if (strcmp(*p, gguf_name) == 0) return true;
    }
    return false;
}

/* HF tensors that are matrices of one row where GGUF may keep a vector (the converter and
 * qwodel's quantized path squeeze Qwen2-MoE's shared-expert gate, [1, hidden] in HF). */
static const char *const one_row_suffixes[] = {".mlp.shared_expert_gate.weight", NULL};

bool qw_arch_hf_is_one_row(const char *hf_name) {
    for (const char *const *p = one_row_suffixes; *p; p++) {
        if (qw_str_ends_with(hf_name, *p)) return true;
    }
    return false;
}

/* Matches `name` against a GGUF-side pattern whose "{L}" is a decimal layer number below
 * n_layer (leading zeros are refused so that one GGUF name has one HF name). Returns the layer
 * (0 when the pattern has none) or -1. */
static int64_t match_gguf_pattern(const char *pattern, const char *name, int64_t n_layer) {
    int64_t layer = 0;
    while (*pattern) {
        if (strncmp(pattern, "{L}", 3) == 0) {
            bool leading_zero = name[0] == '0' && name[1] >= '0' && name[1] <= '9';
            if (*name < '0' || *name > '9' || leading_zero) return -1;
            int64_t v = 0;
            int digits = 0;
            while (*name >= '0' && *name <= '9') {
                if (++digits > 9) return -1;
                v = v * 10 + (*name++ - '0');
            }
            if (v >= n_layer) return -1;
            layer = v;
            pattern += 3;
        } else if (*pattern++ != *name++) {
            return -1;
        }
    }
    return *name == '\0' ? layer : -1;
}

/* The HF pattern with "{L}" and "{E}" filled in, then suffix; false when it does not fit. */
static bool fill_hf_pattern(char *out, size_t n, const char *pattern, int64_t layer,
                            int64_t expert, const char *suffix) {
    size_t used = 0;
    while (*pattern) {
        int len;
        if (strncmp(pattern, "{L}", 3) == 0 || strncmp(pattern, "{E}", 3) == 0) {
            len = snprintf(out + used, n - used, "%lld",
                           (long long)(pattern[1] == 'L' ? layer : expert));
            pattern += 3;
        } else {
            len = snprintf(out + used, n - used, "%c", *pattern++);
        }
        if (len < 0 || (size_t)len >= n - used) return false;
        used += (size_t)len;
    }
    int len = snprintf(out + used, n - used, "%s", suffix);
    return len >= 0 && (size_t)len < n - used;
}

/* Transforms the readers can undo: the Q/K permutes (rows put back) and constant offsets
 * (subtracted). Anything else a row may one day name is refused on the way back. */
static bool transform_invertible(qw_transform t) {
    return t == QW_TRANSFORM_NONE || qw_transform_permutes(t) || qw_transform_offset(t) != 0.0f;
}

qw_status qw_arch_unmap_tensor_part(const qw_arch *arch, const qw_hparams *hp,
                                    const char *gguf_name, int64_t expert, char *hf_name,
                                    size_t hf_name_bytes, qw_transform *transform, bool *drop,
                                    bool *stacked, qw_error *err) {
    *drop = false;
    *stacked = false;
    *transform = QW_TRANSFORM_NONE;
    if (qw_arch_is_gguf_only_tensor(gguf_name)) {
        *drop = true;
        return QW_OK;
    }
    static const char *const suffixes[] = {".weight", ".bias", ""};
    /* the dense rules first, as the forward map tries them */
    const qw_tensor_rule *const lists[] = {arch->rules, arch->moe_rules};
    char stem[256];
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
        size_t n = strlen(gguf_name), m = strlen(suffixes[s]);
        if (n < m || n - m >= sizeof stem || strcmp(gguf_name + n - m, suffixes[s]) != 0) continue;
        memcpy(stem, gguf_name, n - m);
        stem[n - m] = '\0';
        for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
            for (const qw_tensor_rule *r = lists[l]; r && r->hf; r++) {
                if (!r->gguf) continue; /* dropped on the way to GGUF: nothing comes back */
                int64_t layer = match_gguf_pattern(r->gguf, stem, hp->n_layer);
                if (layer < 0) continue;
                bool stacks = strstr(r->hf, "{E}") != NULL;
                if (stacks && hp->n_expert <= 0) {
                    return qw_fail_at(err, QW_ERR_CORRUPT, gguf_name, -1,
                                      "tensor \"%s\" stacks experts, but the model has no "
                                      "expert_count", gguf_name);
                }
                if (stacks && (expert < 0 || expert >= hp->n_expert)) {
                    return qw_fail_at(err, QW_ERR_INVALID_ARG, gguf_name, -1,
                                      "tensor \"%s\": expert %lld is out of range (%lld "
                                      "experts)", gguf_name, (long long)expert,
                                      (long long)hp->n_expert);
                }
                char out[256];
                if (!fill_hf_pattern(out, sizeof out, r->hf, layer, expert, suffixes[s]) ||
                    strlen(out) >= hf_name_bytes) {
                    goto unknown;
                }
                /* as the forward map: permutes only where the architecture permutes, value
                 * transforms always */
                qw_transform applied = arch->permute_qk || !qw_transform_permutes(r->transform)
                                           ? r->transform
                                           : QW_TRANSFORM_NONE;
                if (!transform_invertible(applied)) {
                    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, gguf_name, -1,
                                      "tensor \"%s\": qwodel cannot undo the \"%s\" transform "
                                      "of architecture %s", gguf_name,
                                      qw_transform_name(applied), arch->name);
                }
                memcpy(hf_name, out, strlen(out) + 1);
                *transform = applied;
                *stacked = stacks;
                return QW_OK;
            }
        }
    }
unknown:
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, gguf_name, -1,
                      "tensor \"%s\" has no HuggingFace name for architecture %s (an unexpected "
                      "layer number or a tensor qwodel does not know)", gguf_name, arch->name);
}

qw_status qw_arch_unmap_tensor(const qw_arch *arch, const qw_hparams *hp, const char *gguf_name,
                               char *hf_name, size_t hf_name_bytes, qw_transform *transform,
                               bool *drop, qw_error *err) {
    bool stacked;
    qw_hparams one = *hp;
    if (one.n_expert <= 0) one.n_expert = 1; /* expert 0 names the stack in the refusal */
    QW_TRY(qw_arch_unmap_tensor_part(arch, &one, gguf_name, 0, hf_name, hf_name_bytes, transform,
                                     drop, &stacked, err));
    if (stacked) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, gguf_name, -1,
                          "tensor \"%s\" stacks many experts' HuggingFace tensors; a single name "
                          "cannot stand for it (read it expert by expert)", gguf_name);
    }
    return QW_OK;
}

/* qw_permute_source_row sends GGUF row h*hd + 2j + k to HF row h*hd + k*hd/2 + j; this is the
 * other direction. */
int64_t qw_unpermute_source_row(int64_t row, int64_t head_rows) {
    int64_t head = row / head_rows, within = row % head_rows, half = head_rows / 2;
    return head * head_rows + 2 * (within % half) + within / half;
}

/* ---- hyperparameters ------------------------------------------------------------------------ */

double qw_f32_shortest(double v) {
    /* GGUF keeps epsilons and thetas as float32; 1e-5 comes back as 9.99999974738e-06. The
     * shortest decimal that reads back as the same float32 is what the config said. */
    if (!isfinite(v)) return v;
    float f = (float)v;
    char buf[40];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

static double round_sig(double v, int digits) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    return strtod(buf, NULL);
}

static const char *arch_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

/* "<arch>.<suffix>" keys that only some families carry, read into hparams (and their has_
 * flag where the config tells "absent" from 0): qw_hparams_from_gguf reads what every family
 * has. */
enum { EXTRA_INT, EXTRA_REAL };
#define NO_FLAG SIZE_MAX
static const struct {
    const char *suffix;
    int kind;
    size_t offset;
    size_t has_offset;
} gguf_extras[] = {
    {"attention.sliding_window", EXTRA_INT, offsetof(qw_hparams, sliding_window),
     offsetof(qw_hparams, has_sliding_window)},
    {"attn_logit_softcapping", EXTRA_REAL, offsetof(qw_hparams, attn_softcap),
     offsetof(qw_hparams, has_attn_softcap)},
    {"final_logit_softcapping", EXTRA_REAL, offsetof(qw_hparams, final_softcap),
     offsetof(qw_hparams, has_final_softcap)},
    {"rope.freq_base_swa", EXTRA_REAL, offsetof(qw_hparams, rope_theta_swa),
     offsetof(qw_hparams, has_rope_theta_swa)},
    {"expert_feed_forward_length", EXTRA_INT, offsetof(qw_hparams, n_ff_exp), NO_FLAG},
    {"expert_shared_feed_forward_length", EXTRA_INT, offsetof(qw_hparams, n_ff_shexp), NO_FLAG},
    {"rope.scaling.original_context_length", EXTRA_INT, offsetof(qw_hparams, longrope_orig_ctx),
     NO_FLAG},
};

static qw_status read_gguf_extras(const qw_gguf *g, const char *arch, qw_hparams *hp,
                                  qw_error *err) {
    char key[160];
    for (size_t i = 0; i < sizeof gguf_extras / sizeof gguf_extras[0]; i++) {
        arch_key(key, sizeof key, arch, gguf_extras[i].suffix);
        char *field = (char *)hp + gguf_extras[i].offset;
        bool found;
        if (gguf_extras[i].kind == EXTRA_INT) {
            uint64_t u = 0;
            found = qw_gguf_get_u64(g, key, &u);
            if (found && u > UINT32_MAX) {
                return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: \"%s\" = %llu is out of "
                                  "range", qw_gguf_path(g), key, (unsigned long long)u);
            }
            if (found) *(int64_t *)(void *)field = (int64_t)u;
        } else {
            double d = 0;
            found = qw_gguf_get_f64(g, key, &d);
            if (found && !isfinite(d)) {
                return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: \"%s\" is not finite",
                                  qw_gguf_path(g), key);
            }
            if (found) *(double *)(void *)field = qw_f32_shortest(d);
        }
        if (found && gguf_extras[i].has_offset != NO_FLAG) {
            *(bool *)(void *)((char *)hp + gguf_extras[i].has_offset) = true;
        }
    }
    /* Phi-3 may rotate only part of each head: the converter wrote
     * int(partial_rotary_factor * n_embd) // n_head rope dimensions */
    uint64_t dims = 0;
    const int64_t head_dim = hp->head_dim ? hp->head_dim
                           : hp->n_head > 0 ? hp->n_embd / hp->n_head
                                            : 0;
    if (qw_gguf_get_u64(g, arch_key(key, sizeof key, arch, "rope.dimension_count"), &dims) &&
        head_dim > 0 && dims > 0 && dims < (uint64_t)head_dim) {
        hp->partial_rotary_factor = round_sig((double)dims / (double)head_dim, 6);
    }
    return QW_OK;
}

qw_status qw_hparams_rope_from_gguf(const qw_gguf *g, const char *arch, qw_hparams *hp,
                                    qw_error *err) {
    char key[160];
    QW_TRY(read_gguf_extras(g, arch, hp, err));
    char *type = qw_gguf_get_string(g, arch_key(key, sizeof key, arch, "rope.scaling.type"));
    if (hp->has_rope_theta) hp->rope_theta = qw_f32_shortest(hp->rope_theta);
    if (hp->has_rms_eps) hp->rms_eps = qw_f32_shortest(hp->rms_eps);
    hp->rope_freqs_orig_ctx = 8192;
    if (!type || strcmp(type, "none") == 0 || !*type) {
        qw_free(type);
        return QW_OK;
    }
    bool known = strcmp(type, "linear") == 0 || strcmp(type, "yarn") == 0;
    snprintf(hp->rope_type, sizeof hp->rope_type, "%s", type);
    qw_free(type);
    if (!known) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                          "%s: rope scaling \"%s\" cannot be expressed as a HuggingFace config "
                          "(known: linear, yarn, and llama3 through rope_freqs.weight)",
                          qw_gguf_path(g), hp->rope_type);
    }
    double factor = 0;
    if (!qw_gguf_get_f64(g, arch_key(key, sizeof key, arch, "rope.scaling.factor"), &factor) ||
        !(factor > 0)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: rope scaling \"%s\" without a positive \"%s\"", qw_gguf_path(g),
                          hp->rope_type, key);
    }
    hp->rope_factor = qw_f32_shortest(factor);
    hp->rope_low_freq_factor = 1.0;
    hp->rope_high_freq_factor = 4.0;
    uint64_t orig = 0;
    if (qw_gguf_get_u64(g, arch_key(key, sizeof key, arch, "rope.scaling.original_context_length"),
                        &orig) && orig > 0 && orig <= (uint64_t)INT64_MAX) {
        hp->rope_orig_ctx = (int64_t)orig;
    }
    return QW_OK;
}

/* Largest relative difference between freqs and what these parameters give. */
static double rope_freqs_misfit(const qw_hparams *hp, const float *freqs, int64_t n,
                                float *scratch) {
    qw_arch_rope_freqs(hp, scratch, n);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)scratch[i] - (double)freqs[i]) / fabs((double)freqs[i]);
        if (!(d <= worst)) worst = d; /* NaN makes it infinitely bad */
    }
    return worst;
}

qw_status qw_hparams_rope_from_freqs(qw_hparams *hp, const float *freqs, int64_t n,
                                     const char *file, qw_error *err) {
    const int64_t head_dim = hp->head_dim ? hp->head_dim
                           : hp->n_head > 0 ? hp->n_embd / hp->n_head
                                            : 0;
    if (n <= 1 || n != head_dim / 2) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "rope_freqs.weight", -1,
                          "%s: rope_freqs.weight has %lld values; head size %lld needs %lld",
                          file, (long long)n, (long long)head_dim, (long long)(head_dim / 2));
    }
    float factor = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(freqs[i] > 0) || !isfinite(freqs[i])) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "rope_freqs.weight", -1,
                              "%s: rope_freqs.weight[%lld] = %g is not a positive factor", file,
                              (long long)i, (double)freqs[i]);
        }
        if (freqs[i] > factor) factor = freqs[i];
    }
    float *scratch = qw_malloc_array((size_t)n, sizeof *scratch);
    if (!scratch) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_hparams cand = *hp;
    snprintf(cand.rope_type, sizeof cand.rope_type, "llama3");
    cand.rope_factor = round_sig(factor, 6);
    cand.rope_freqs_orig_ctx = 8192;
    cand.rope_orig_ctx = 8192;
    /* Llama 3.1 and 3.2 publish low 1, high 4 over 8192 positions; try that first. */
    cand.rope_low_freq_factor = 1.0;
    cand.rope_high_freq_factor = 4.0;
    const double tolerance = 1e-5;
    bool fits = rope_freqs_misfit(&cand, freqs, n, scratch) <= tolerance;
    if (!fits && factor > 1) {
        /* Otherwise solve from the smoothly interpolated entries, where
         * 1/f_i = 1/F + s_i (1 - 1/F) and s_i = (x_i - low) / (high - low) with
         * x_i = orig * freq_i / 2pi: two such entries fix low and high (orig stays 8192, which
         * the factors alone cannot tell apart from a rescaled low/high). */
        const double base = hp->has_rope_theta ? hp->rope_theta : 10000.0;
        double x[2], s[2];
        int found = 0;
        for (int64_t i = 0; i < n && found < 2; i++) {
            double v = freqs[i];
            if (v <= 1.0 + 1e-4 || v >= factor * (1 - 1e-4)) continue;
            double freq = 1.0 / pow(base, (double)(2 * i) / (double)(2 * n));
            x[found] = 8192.0 * freq / (2.0 * M_PI);
            s[found] = (1.0 / v - 1.0 / factor) / (1.0 - 1.0 / factor);
            found++;
        }
        if (found == 2 && x[0] != x[1] && s[0] != s[1]) {
            double slope = (s[1] - s[0]) / (x[1] - x[0]);
            double low = x[0] - s[0] / slope;
            cand.rope_low_freq_factor = round_sig(low, 4);
            cand.rope_high_freq_factor = round_sig(low + 1.0 / slope, 4);
            fits = cand.rope_high_freq_factor > cand.rope_low_freq_factor &&
                   rope_freqs_misfit(&cand, freqs, n, scratch) <= tolerance;
        }
    }
    qw_free(scratch);
    if (!fits) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "rope_freqs.weight", -1,
                          "%s: rope_freqs.weight does not match Llama-3 rope scaling for any "
                          "factors qwodel can recover, so no HuggingFace rope_scaling "
                          "reproduces it", file);
    }
    *hp = cand;
    return QW_OK;
}

/* ---- config.json ---------------------------------------------------------------------------- */

/* What a config says about the sliding window. */
typedef enum window_keys {
    WINDOW_NONE = 0, /* no keys: the class has no window */
    WINDOW_OFF,      /* use_sliding_window false, sliding_window null (Qwen classes) */
    WINDOW_NULL,     /* sliding_window null (Mixtral: llama.cpp runs it without a window) */
    WINDOW_GGUF,     /* sliding_window from attention.sliding_window (else the row's default) */
} window_keys;

/* config.json keys that HF's classes read and GGUF does not store, per architecture (and, for
 * the "llama" GGUF architecture that Mixtral shares, per presence of experts). Values here are
 * what llama.cpp assumes when it runs the GGUF, so that transformers computes the same model. */
static const struct config_extras {
    const char *arch;
    int experts;               /* -1: any; 0: GGUF without experts; 1: with experts */
    const char *hf_class;      /* NULL: the row's first class and model type */
    const char *model_type;
    const char *hidden_act;
    bool hidden_activation_key; /* Gemma 2/3 read "hidden_activation" (Gemma 1 "hidden_act") */
    bool head_dim_always;      /* the HF class has no default head_dim of hidden / heads */
    const char *bias_key;      /* the class's q/k/v bias switch (qwen2's biases are implicit) */
    bool mlp_bias_key;
    window_keys window;
    int64_t window_default;    /* WINDOW_GGUF without the key: llama.cpp's default (0: none) */
    int64_t swa_pattern;       /* llama.cpp's fixed local/global pattern (Gemma 3), 0: no key */
    bool softcap_keys;         /* attn_/final_logit_softcapping, null when GGUF has none */
    int64_t qpas_layers;       /* query_pre_attn_scalar: head size, but hidden / heads for the
                                * layer count llama.cpp takes for the 27B model; 0: no key */
    bool rope_local_base_key;  /* rope_local_base_freq (Gemma 3's local layers) */
    double rope_theta_default; /* llama.cpp's base when GGUF has no rope.freq_base (0: omit) */
    bool pad_token_key;
    bool orig_ctx_key;         /* Phi-3: top-level original_max_position_embeddings */
    bool partial_rotary_key;
    const char *experts_key;   /* num_local_experts (Mixtral) or num_experts (Qwen) */
    bool qwen_moe_keys;        /* moe_intermediate_size, shared_expert_intermediate_size,
                                * norm_topk_prob, decoder_sparse_step, mlp_only_layers */
} config_extras[] = {
    {.arch = "llama", .experts = 0, .hidden_act = "silu", .bias_key = "attention_bias",
     .mlp_bias_key = true},
    {.arch = "llama", .experts = 1, .hf_class = "MixtralForCausalLM", .model_type = "mixtral",
     .hidden_act = "silu", .window = WINDOW_NULL, .experts_key = "num_local_experts"},
    {.arch = "qwen2", .experts = -1, .hidden_act = "silu", .window = WINDOW_OFF},
    {.arch = "qwen3", .experts = -1, .hidden_act = "silu", .head_dim_always = true,
     .bias_key = "attention_bias", .window = WINDOW_OFF},
    {.arch = "qwen2moe", .experts = -1, .hidden_act = "silu", .bias_key = "qkv_bias",
     .window = WINDOW_OFF, .experts_key = "num_experts", .qwen_moe_keys = true},
    {.arch = "qwen3moe", .experts = -1, .hidden_act = "silu", .head_dim_always = true,
     .bias_key = "attention_bias", .window = WINDOW_OFF, .experts_key = "num_experts",
     .qwen_moe_keys = true},
    {.arch = "gemma", .experts = -1, .hidden_act = "gelu_pytorch_tanh",
     .hidden_activation_key = true, .head_dim_always = true, .bias_key = "attention_bias",
     .rope_theta_default = 10000.0, .pad_token_key = true},
    {.arch = "gemma2", .experts = -1, .hidden_act = "gelu_pytorch_tanh",
     .hidden_activation_key = true, .head_dim_always = true, .bias_key = "attention_bias",
     .window = WINDOW_GGUF, .window_default = 4096, .softcap_keys = true, .qpas_layers = 46,
     .rope_theta_default = 10000.0, .pad_token_key = true},
    {.arch = "gemma3", .experts = -1, .hidden_act = "gelu_pytorch_tanh",
     .hidden_activation_key = true, .head_dim_always = true, .bias_key = "attention_bias",
     .window = WINDOW_GGUF, .swa_pattern = 6, .softcap_keys = true, .qpas_layers = 62,
     .rope_local_base_key = true, .rope_theta_default = 10000.0, .pad_token_key = true},
    {.arch = "phi3", .experts = -1, .hidden_act = "silu", .bias_key = "attention_bias",
     .window = WINDOW_GGUF,
     .rope_theta_default = 10000.0, .pad_token_key = true, .orig_ctx_key = true,
     .partial_rotary_key = true},
};

static const struct config_extras *find_extras(const char *arch, bool has_experts) {
    for (size_t i = 0; i < sizeof config_extras / sizeof config_extras[0]; i++) {
        const struct config_extras *x = &config_extras[i];
        if (strcmp(x->arch, arch) == 0 && (x->experts < 0 || x->experts == (int)has_experts)) {
            return x;
        }
    }
    return NULL;
}

static bool set_int(json_t *o, const char *key, int64_t v) {
    return json_object_set_new(o, key, json_integer((json_int_t)v)) == 0;
}

static bool set_real(json_t *o, const char *key, double v) {
    return json_object_set_new(o, key, json_real(v)) == 0;
}

static bool set_str(json_t *o, const char *key, const char *v) {
    return json_object_set_new(o, key, json_string(v)) == 0;
}

static bool set_null(json_t *o, const char *key) {
    return json_object_set_new(o, key, json_null()) == 0;
}

static json_t *factor_list(const float *v, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_real(qw_f32_shortest(v[i]))) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Which rope_scaling keys each type carries. */
static const struct {
    const char *type;
    bool factor;
    bool llama3_keys;  /* low/high_freq_factor, original context 8192-style */
    bool orig_ctx;     /* original_max_position_embeddings of yarn */
    bool factor_lists; /* Phi-3's long_factor / short_factor */
} rope_kinds[] = {
    {"linear", true, false, false, false},
    {"yarn", true, false, true, false},
    {"llama3", true, true, false, false},
    {"longrope", false, false, false, true},
};

#define N_ROPE_KINDS (sizeof rope_kinds / sizeof rope_kinds[0])

static size_t rope_kind(const char *type) {
    size_t k = 0;
    while (k < N_ROPE_KINDS && strcmp(rope_kinds[k].type, type) != 0) k++;
    return k; /* N_ROPE_KINDS when unknown */
}

/* rope_scaling for a known type (NULL: out of memory). */
static json_t *rope_scaling_json(const qw_hparams *hp) {
    size_t k = rope_kind(hp->rope_type);
    json_t *rs = json_object();
    if (!rs) return NULL;
    bool ok = set_str(rs, "rope_type", hp->rope_type);
    if (ok && rope_kinds[k].factor) ok = set_real(rs, "factor", hp->rope_factor);
    if (ok && rope_kinds[k].llama3_keys) {
        ok = set_real(rs, "low_freq_factor", hp->rope_low_freq_factor) &&
             set_real(rs, "high_freq_factor", hp->rope_high_freq_factor) &&
             set_int(rs, "original_max_position_embeddings", hp->rope_freqs_orig_ctx);
    }
    if (ok && rope_kinds[k].orig_ctx && hp->rope_orig_ctx > 0) {
        ok = set_int(rs, "original_max_position_embeddings", hp->rope_orig_ctx);
    }
    if (ok && rope_kinds[k].factor_lists) {
        json_t *lf = factor_list(hp->rope_long_factor, hp->n_rope_factors);
        json_t *sf = factor_list(hp->rope_short_factor, hp->n_rope_factors);
        ok = lf && sf && json_object_set_new(rs, "long_factor", lf) == 0 &&
             json_object_set_new(rs, "short_factor", sf) == 0;
        if (!ok) {
            json_decref(lf);
            json_decref(sf);
        }
    }
    if (!ok) {
        json_decref(rs);
        return NULL;
    }
    return rs;
}

/* The keys only some families have, as the row says. */
static bool set_family_keys(json_t *c, const qw_arch *arch, const struct config_extras *x,
                            const qw_hparams *hp, const qw_hf_config_info *info) {
    const int64_t head_dim = hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head;
    bool ok = true;
    if (x->hidden_activation_key) ok = set_str(c, "hidden_activation", x->hidden_act);
    if (ok && x->window == WINDOW_OFF) {
        ok = set_null(c, "sliding_window") &&
             json_object_set_new(c, "use_sliding_window", json_false()) == 0;
    } else if (ok && x->window == WINDOW_NULL) {
        ok = set_null(c, "sliding_window");
    } else if (ok && x->window == WINDOW_GGUF) {
        int64_t w = hp->has_sliding_window ? hp->sliding_window : x->window_default;
        ok = w > 0 ? set_int(c, "sliding_window", w) : set_null(c, "sliding_window");
        /* without a window llama.cpp runs every layer globally: a pattern of 1 says so */
        if (ok && x->swa_pattern) {
            ok = set_int(c, "sliding_window_pattern", w > 0 ? x->swa_pattern : 1);
        }
    }
    if (ok && x->softcap_keys) {
        ok = (hp->has_attn_softcap && hp->attn_softcap != 0
                  ? set_real(c, "attn_logit_softcapping", hp->attn_softcap)
                  : set_null(c, "attn_logit_softcapping")) &&
             (hp->has_final_softcap && hp->final_softcap != 0
                  ? set_real(c, "final_logit_softcapping", hp->final_softcap)
                  : set_null(c, "final_logit_softcapping"));
    }
    if (ok && x->qpas_layers) {
        ok = set_int(c, "query_pre_attn_scalar",
                     hp->n_layer == x->qpas_layers ? hp->n_embd / hp->n_head : head_dim);
    }
    if (ok && x->rope_local_base_key && (hp->has_rope_theta_swa || hp->has_rope_theta)) {
        ok = set_real(c, "rope_local_base_freq",
                      hp->has_rope_theta_swa ? hp->rope_theta_swa : hp->rope_theta);
    }
    if (ok && x->pad_token_key && info->pad_token_id >= 0) {
        ok = set_int(c, "pad_token_id", info->pad_token_id);
    }
    if (ok && x->orig_ctx_key && hp->longrope_orig_ctx > 0) {
        ok = set_int(c, "original_max_position_embeddings", hp->longrope_orig_ctx);
    }
    if (ok && x->partial_rotary_key && hp->partial_rotary_factor > 0) {
        ok = set_real(c, "partial_rotary_factor", hp->partial_rotary_factor);
    }
    if (ok && x->experts_key && hp->n_expert) ok = set_int(c, x->experts_key, hp->n_expert);
    if (ok && x->experts_key && hp->n_expert_used) {
        ok = set_int(c, "num_experts_per_tok", hp->n_expert_used);
    }
    if (ok && x->qwen_moe_keys) {
        if (hp->n_ff_exp) ok = set_int(c, "moe_intermediate_size", hp->n_ff_exp);
        if (ok && hp->n_ff_shexp) {
            ok = set_int(c, "shared_expert_intermediate_size", hp->n_ff_shexp);
        }
        /* llama.cpp fixes the top-k renormalization per architecture; every layer of the GGUF
         * has experts (hf_view.c refuses one that does not) */
        ok = ok &&
             json_object_set_new(c, "norm_topk_prob",
                                 json_boolean(arch->moe_topk_norm == QW_TOPK_NORM_ON)) == 0 &&
             set_int(c, "decoder_sparse_step", 1) &&
             json_object_set_new(c, "mlp_only_layers", json_array()) == 0;
    }
    return ok;
}

qw_status qw_arch_hf_config(const qw_arch *arch, const qw_hparams *hp,
                            const qw_hf_config_info *info, json_t **out, qw_error *err) {
    *out = NULL;
    if (!arch->hf_classes || !arch->hf_classes[0] || !arch->hf_model_types ||
        !arch->hf_model_types[0]) {
        return qw_fail(err, QW_ERR_UNSUPPORTED_ARCH,
                       "architecture %s has no HuggingFace class to write a config for",
                       arch->name);
    }
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_head % hp->n_head_kv != 0) {
        return qw_fail(err, QW_ERR_CORRUPT,
                       "%s: layers %lld, hidden size %lld, %lld heads, %lld key/value heads "
                       "do not make a model", arch->name, (long long)hp->n_layer,
                       (long long)hp->n_embd, (long long)hp->n_head, (long long)hp->n_head_kv);
    }
    if (hp->rope_type[0] && rope_kind(hp->rope_type) == N_ROPE_KINDS) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "rope_scaling", -1,
                          "%s: rope scaling \"%s\" has no HuggingFace rope_scaling qwodel can "
                          "write", arch->name, hp->rope_type);
    }
    const struct config_extras *x = find_extras(arch->name, hp->n_expert > 0);
    if (!x) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "general.architecture", -1,
                          "no HuggingFace config.json can be built for architecture %s%s",
                          arch->name, hp->n_expert > 0 ? " with experts" : "");
    }
    json_t *c = json_object();
    json_t *classes = json_array();
    bool ok = c && classes &&
              json_array_append_new(classes,
                                    json_string(x->hf_class ? x->hf_class
                                                            : arch->hf_classes[0])) == 0;
    ok = ok && json_object_set(c, "architectures", classes) == 0;
    json_decref(classes);
    if (ok && x->bias_key) {
        ok = json_object_set_new(c, x->bias_key, json_boolean(info->attention_bias)) == 0;
    }
    ok = ok && set_real(c, "attention_dropout", 0.0);
    if (ok && info->bos_token_id >= 0) ok = set_int(c, "bos_token_id", info->bos_token_id);
    if (ok && info->eos_token_id >= 0) ok = set_int(c, "eos_token_id", info->eos_token_id);
    /* head_dim when GGUF stated it (attention.key_length) or the class has no default */
    if (ok && (hp->head_dim || x->head_dim_always)) {
        ok = set_int(c, "head_dim", hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head);
    }
    ok = ok && set_str(c, "hidden_act", x->hidden_act);
    ok = ok && set_int(c, "hidden_size", hp->n_embd);
    if (ok && hp->n_ff) ok = set_int(c, "intermediate_size", hp->n_ff);
    if (ok && hp->n_ctx) ok = set_int(c, "max_position_embeddings", hp->n_ctx);
    if (ok && x->mlp_bias_key) ok = json_object_set_new(c, "mlp_bias", json_false()) == 0;
    ok = ok && set_str(c, "model_type", x->model_type ? x->model_type : arch->hf_model_types[0]);
    ok = ok && set_int(c, "num_attention_heads", hp->n_head);
    ok = ok && set_int(c, "num_hidden_layers", hp->n_layer);
    ok = ok && set_int(c, "num_key_value_heads", hp->n_head_kv);
    if (ok && hp->has_rms_eps) ok = set_real(c, "rms_norm_eps", hp->rms_eps);
    if (ok) {
        json_t *rs = hp->rope_type[0] ? rope_scaling_json(hp) : json_null();
        ok = rs && json_object_set_new(c, "rope_scaling", rs) == 0;
    }
    if (ok && (hp->has_rope_theta || x->rope_theta_default > 0)) {
        ok = set_real(c, "rope_theta", hp->has_rope_theta ? hp->rope_theta : x->rope_theta_default);
    }
    ok = ok && set_family_keys(c, arch, x, hp, info);
    ok = ok &&
         json_object_set_new(c, "tie_word_embeddings", json_boolean(hp->tied_embeddings)) == 0;
    if (ok && info->torch_dtype) ok = set_str(c, "torch_dtype", info->torch_dtype);
    ok = ok && json_object_set_new(c, "use_cache", json_true()) == 0;
    if (ok && hp->vocab_size) ok = set_int(c, "vocab_size", hp->vocab_size);
    if (!ok) {
        json_decref(c);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    *out = c;
    return QW_OK;
}
