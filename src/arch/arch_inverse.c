/*
 * The way back from GGUF to HuggingFace: GGUF tensor names to HF names (the table's rules read
 * right to left), the inverse of the Q/K row permutation, rope scaling recovered from GGUF keys
 * and from rope_freqs.weight, and a config.json built from hyperparameters.
 *
 * Only the rows in arch.c say how names map; this file adds nothing per architecture except the
 * few config.json keys that HF's classes expect and GGUF does not carry (config_extras below).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"

/* GGUF tensors that llama.cpp computes from the config and HF recomputes itself: no HF tensor. */
static const char *const gguf_only_tensors[] = {"rope_freqs.weight", NULL};

bool qw_arch_is_gguf_only_tensor(const char *gguf_name) {
    for (const char *const *p = gguf_only_tensors; *p; p++) {
        if (strcmp(*p, gguf_name) == 0) return true;
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

/* Transforms the readers can undo: the Q/K permutes (rows put back) and constant offsets
 * (subtracted). Anything else a row may one day name is refused on the way back. */
static bool transform_invertible(qw_transform t) {
    return t == QW_TRANSFORM_NONE || qw_transform_permutes(t) || qw_transform_offset(t) != 0.0f;
}

qw_status qw_arch_unmap_tensor(const qw_arch *arch, const qw_hparams *hp, const char *gguf_name,
                               char *hf_name, size_t hf_name_bytes, qw_transform *transform,
                               bool *drop, qw_error *err) {
    *drop = false;
    *transform = QW_TRANSFORM_NONE;
    if (qw_arch_is_gguf_only_tensor(gguf_name)) {
        *drop = true;
        return QW_OK;
    }
    static const char *const suffixes[] = {".weight", ".bias", ""};
    char stem[256];
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
        size_t n = strlen(gguf_name), m = strlen(suffixes[s]);
        if (n < m || n - m >= sizeof stem || strcmp(gguf_name + n - m, suffixes[s]) != 0) continue;
        memcpy(stem, gguf_name, n - m);
        stem[n - m] = '\0';
        for (const qw_tensor_rule *r = arch->rules; r->hf; r++) {
            /* dropped on the way to GGUF: nothing comes back; stacked experts ("{E}") are
             * one GGUF tensor for many HF ones, which a name map cannot undo */
            if (!r->gguf || strstr(r->hf, "{E}")) continue;
            int64_t layer = match_gguf_pattern(r->gguf, stem, hp->n_layer);
            if (layer < 0) continue;
            char out[256];
            const char *at = strstr(r->hf, "{L}");
            int len = at ? snprintf(out, sizeof out, "%.*s%lld%s%s", (int)(at - r->hf), r->hf,
                                    (long long)layer, at + 3, suffixes[s])
                         : snprintf(out, sizeof out, "%s%s", r->hf, suffixes[s]);
            if (len < 0 || (size_t)len >= sizeof out || (size_t)len >= hf_name_bytes) break;
            /* as the forward map: permutes only where the architecture permutes, value
             * transforms always */
            qw_transform applied = arch->permute_qk || !qw_transform_permutes(r->transform)
                                       ? r->transform
                                       : QW_TRANSFORM_NONE;
            if (!transform_invertible(applied)) {
                return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, gguf_name, -1,
                                  "tensor \"%s\": qwodel cannot undo the \"%s\" transform of "
                                  "architecture %s", gguf_name, qw_transform_name(applied),
                                  arch->name);
            }
            memcpy(hf_name, out, (size_t)len + 1);
            *transform = applied;
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, gguf_name, -1,
                      "tensor \"%s\" has no HuggingFace name for architecture %s (an unexpected "
                      "layer number or a tensor qwodel does not know)", gguf_name, arch->name);
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

static const char *arch_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

qw_status qw_hparams_rope_from_gguf(const qw_gguf *g, const char *arch, qw_hparams *hp,
                                    qw_error *err) {
    char key[160];
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

static double round_sig(double v, int digits) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    return strtod(buf, NULL);
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

/* config.json keys that HF's classes read and GGUF does not store, per architecture. Only
 * these architectures get a config: for the others (Gemma's activation and attention scalars,
 * Phi-3's window, ...) the common keys would make a config that loads and computes wrongly. */
static const struct config_extras {
    const char *arch;
    const char *hidden_act;
    bool head_dim_always;     /* the HF class has no default head_dim of hidden / heads */
    bool attention_bias_key;  /* the class reads "attention_bias" (qwen2's biases are implicit) */
    bool mlp_bias_key;
    bool sliding_window_keys; /* use_sliding_window false, sliding_window null */
} config_extras[] = {
    {"llama", "silu", false, true, true, false},
    {"qwen2", "silu", false, false, false, true},
    {"qwen3", "silu", true, true, false, true},
};

static const struct config_extras *find_extras(const char *arch) {
    for (size_t i = 0; i < sizeof config_extras / sizeof config_extras[0]; i++) {
        if (strcmp(config_extras[i].arch, arch) == 0) return &config_extras[i];
    }
    return NULL;
}

static bool set_int(json_t *o, const char *key, int64_t v) {
    return json_object_set_new(o, key, json_integer((json_int_t)v)) == 0;
}

static bool set_real(json_t *o, const char *key, double v) {
    return json_object_set_new(o, key, json_real(v)) == 0;
}

static json_t *rope_scaling_json(const qw_hparams *hp) {
    json_t *rs = json_object();
    if (!rs) return NULL;
    bool ok = json_object_set_new(rs, "rope_type", json_string(hp->rope_type)) == 0 &&
              set_real(rs, "factor", hp->rope_factor);
    if (strcmp(hp->rope_type, "llama3") == 0) {
        ok = ok && set_real(rs, "low_freq_factor", hp->rope_low_freq_factor) &&
             set_real(rs, "high_freq_factor", hp->rope_high_freq_factor) &&
             set_int(rs, "original_max_position_embeddings", hp->rope_freqs_orig_ctx);
    } else if (hp->rope_orig_ctx > 0) {
        ok = ok && set_int(rs, "original_max_position_embeddings", hp->rope_orig_ctx);
    }
    if (!ok) {
        json_decref(rs);
        return NULL;
    }
    return rs;
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
    const struct config_extras *x = find_extras(arch->name);
    if (!x) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "general.architecture", -1,
                          "no HuggingFace config.json can be built for architecture %s yet "
                          "(llama, qwen2 and qwen3 can)", arch->name);
    }
    json_t *c = json_object();
    json_t *classes = json_array();
    bool ok = c && classes &&
              json_array_append_new(classes, json_string(arch->hf_classes[0])) == 0;
    ok = ok && json_object_set(c, "architectures", classes) == 0;
    json_decref(classes);
    if (ok && x->attention_bias_key) {
        ok = json_object_set_new(c, "attention_bias", json_boolean(info->attention_bias)) == 0;
    }
    ok = ok && set_real(c, "attention_dropout", 0.0);
    if (ok && info->bos_token_id >= 0) ok = set_int(c, "bos_token_id", info->bos_token_id);
    if (ok && info->eos_token_id >= 0) ok = set_int(c, "eos_token_id", info->eos_token_id);
    /* head_dim when GGUF stated it (attention.key_length) or the class has no default */
    if (ok && (hp->head_dim || x->head_dim_always)) {
        ok = set_int(c, "head_dim", hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head);
    }
    ok = ok && json_object_set_new(c, "hidden_act", json_string(x->hidden_act)) == 0;
    ok = ok && set_int(c, "hidden_size", hp->n_embd);
    if (ok && hp->n_ff) ok = set_int(c, "intermediate_size", hp->n_ff);
    if (ok && hp->n_ctx) ok = set_int(c, "max_position_embeddings", hp->n_ctx);
    if (ok && x->mlp_bias_key) ok = json_object_set_new(c, "mlp_bias", json_false()) == 0;
    ok = ok && json_object_set_new(c, "model_type", json_string(arch->hf_model_types[0])) == 0;
    ok = ok && set_int(c, "num_attention_heads", hp->n_head);
    ok = ok && set_int(c, "num_hidden_layers", hp->n_layer);
    ok = ok && set_int(c, "num_key_value_heads", hp->n_head_kv);
    if (ok && hp->n_expert) ok = set_int(c, "num_local_experts", hp->n_expert);
    if (ok && hp->n_expert_used) ok = set_int(c, "num_experts_per_tok", hp->n_expert_used);
    if (ok && hp->has_rms_eps) ok = set_real(c, "rms_norm_eps", hp->rms_eps);
    if (ok) {
        json_t *rs = hp->rope_type[0] ? rope_scaling_json(hp) : json_null();
        ok = rs && json_object_set_new(c, "rope_scaling", rs) == 0;
    }
    if (ok && hp->has_rope_theta) ok = set_real(c, "rope_theta", hp->rope_theta);
    if (ok && x->sliding_window_keys) {
        ok = json_object_set_new(c, "sliding_window", json_null()) == 0 &&
             json_object_set_new(c, "use_sliding_window", json_false()) == 0;
    }
    ok = ok &&
         json_object_set_new(c, "tie_word_embeddings", json_boolean(hp->tied_embeddings)) == 0;
    if (ok && info->torch_dtype) {
        ok = json_object_set_new(c, "torch_dtype", json_string(info->torch_dtype)) == 0;
    }
    ok = ok && json_object_set_new(c, "use_cache", json_true()) == 0;
    if (ok && hp->vocab_size) ok = set_int(c, "vocab_size", hp->vocab_size);
    if (!ok) {
        json_decref(c);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    *out = c;
    return QW_OK;
}
