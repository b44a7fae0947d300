/* Architecture rows and the shared code that reads them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "json.h"

static const char *const transform_names[QW_TRANSFORM_COUNT] = {
    [QW_TRANSFORM_NONE] = "",
    [QW_TRANSFORM_PERMUTE_Q] = "permute q heads",
    [QW_TRANSFORM_PERMUTE_K] = "permute k heads",
};

const char *qw_transform_name(qw_transform t) {
    return (unsigned)t < QW_TRANSFORM_COUNT ? transform_names[t] : "?";
}

/* The decoder-only families of issue scope share HF's Llama naming. */
static const qw_tensor_rule llama_like_rules[] = {
    {"model.embed_tokens", "token_embd", QW_TRANSFORM_NONE},
    {"model.norm", "output_norm", QW_TRANSFORM_NONE},
    {"lm_head", "output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.input_layernorm", "blk.{L}.attn_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.q_proj", "blk.{L}.attn_q", QW_TRANSFORM_PERMUTE_Q},
    {"model.layers.{L}.self_attn.k_proj", "blk.{L}.attn_k", QW_TRANSFORM_PERMUTE_K},
    {"model.layers.{L}.self_attn.v_proj", "blk.{L}.attn_v", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.o_proj", "blk.{L}.attn_output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.q_norm", "blk.{L}.attn_q_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.k_norm", "blk.{L}.attn_k_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.post_attention_layernorm", "blk.{L}.ffn_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.gate_proj", "blk.{L}.ffn_gate", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.up_proj", "blk.{L}.ffn_up", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.down_proj", "blk.{L}.ffn_down", QW_TRANSFORM_NONE},
    /* precomputed rope tables that llama.cpp recomputes itself */
    {"model.layers.{L}.self_attn.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {"model.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};

static const char *const llama_classes[] = {"LlamaForCausalLM", "MistralForCausalLM", NULL};
static const char *const llama_types[] = {"llama", "mistral", NULL};
static const char *const qwen2_classes[] = {"Qwen2ForCausalLM", NULL};
static const char *const qwen2_types[] = {"qwen2", NULL};
static const char *const qwen3_classes[] = {"Qwen3ForCausalLM", NULL};
static const char *const qwen3_types[] = {"qwen3", NULL};

static const qw_arch arch_table[] = {
    {
        .name = "llama",
        .hf_classes = llama_classes,
        .hf_model_types = llama_types,
        .rules = llama_like_rules,
        .permute_qk = true,
        .writes_vocab_size = true,
        .writes_rope_dimension_count = true,
        .writes_rope_freqs = true,
        .writes_linear_rope_scaling = true,
    },
    {
        .name = "qwen2",
        .hf_classes = qwen2_classes,
        .hf_model_types = qwen2_types,
        .rules = llama_like_rules,
        .writes_yarn = true,
    },
    {
        .name = "qwen3",
        .hf_classes = qwen3_classes,
        .hf_model_types = qwen3_types,
        .rules = llama_like_rules,
        .writes_yarn = true,
    },
};

#define N_ARCHS (sizeof arch_table / sizeof arch_table[0])

size_t qw_arch_count(void) { return N_ARCHS; }

const qw_arch *qw_arch_at(size_t index) { return index < N_ARCHS ? &arch_table[index] : NULL; }

const qw_arch *qw_arch_find(const char *name) {
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (strcmp(arch_table[i].name, name) == 0) return &arch_table[i];
    }
    return NULL;
}

const char *qw_arch_supported_list(void) {
    static char list[512];
    if (!list[0]) {
        size_t used = 0;
        for (size_t i = 0; i < N_ARCHS; i++) {
            for (const char *const *c = arch_table[i].hf_classes; *c; c++) {
                int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *c);
                if (n < 0 || (size_t)n >= sizeof list - used) return list;
                used += (size_t)n;
            }
        }
    }
    return list;
}

static bool in_list(const char *const *list, const char *s) {
    for (; *list; list++) {
        if (strcmp(*list, s) == 0) return true;
    }
    return false;
}

qw_status qw_arch_from_config(const json_t *config, const char *file, const qw_arch **out,
                              qw_error *err) {
    *out = NULL;
    const json_t *classes = json_object_get(config, "architectures");
    const char *model_type = NULL;
    QW_TRY(qw_json_get_string(config, "model_type", file, &model_type, NULL, err));
    const char *first_class = NULL;
    if (json_is_array(classes) && json_array_size(classes) > 0) {
        first_class = json_string_value(json_array_get(classes, 0));
    }
    if (!first_class && !model_type) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "architectures", -1,
                          "%s: no \"architectures\" or \"model_type\" key, so the model's "
                          "architecture is unknown (supported: %s)", file,
                          qw_arch_supported_list());
    }
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (first_class ? in_list(arch_table[i].hf_classes, first_class)
                        : in_list(arch_table[i].hf_model_types, model_type)) {
            *out = &arch_table[i];
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "architectures", -1,
                      "%s: architecture \"%s\" is not supported (supported: %s)", file,
                      first_class ? first_class : model_type, qw_arch_supported_list());
}

/* ---- hyperparameters ------------------------------------------------------------------------ */

static qw_status check_positive(const char *file, const char *key, int64_t v, int64_t max,
                                qw_error *err) {
    if (v <= 0 || v > max) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: \"%s\" = %lld is out of range (1 to "
                          "%lld)", file, key, (long long)v, (long long)max);
    }
    return QW_OK;
}

static qw_status check_hparams(const qw_hparams *hp, const char *file, qw_error *err) {
    QW_TRY(check_positive(file, "num_hidden_layers", hp->n_layer, 100000, err));
    QW_TRY(check_positive(file, "hidden_size", hp->n_embd, 1 << 24, err));
    QW_TRY(check_positive(file, "num_attention_heads", hp->n_head, 1 << 16, err));
    QW_TRY(check_positive(file, "num_key_value_heads", hp->n_head_kv, 1 << 16, err));
    if (hp->n_head % hp->n_head_kv != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "num_key_value_heads", -1,
                          "%s: num_attention_heads (%lld) is not a multiple of "
                          "num_key_value_heads (%lld)", file, (long long)hp->n_head,
                          (long long)hp->n_head_kv);
    }
    if (hp->head_dim == 0 && hp->n_embd % hp->n_head != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "hidden_size", -1,
                          "%s: hidden_size (%lld) is not a multiple of num_attention_heads (%lld)",
                          file, (long long)hp->n_embd, (long long)hp->n_head);
    }
    if (hp->head_dim < 0 || hp->head_dim > 1 << 16 || hp->n_ff < 0 || hp->n_ctx < 0 ||
        hp->vocab_size < 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: a size in the configuration is out of range",
                       file);
    }
    return QW_OK;
}

qw_status qw_hparams_from_config(const json_t *config, const char *file, qw_hparams *hp,
                                 qw_error *err) {
    memset(hp, 0, sizeof *hp);
    QW_TRY(qw_json_require_int(config, "num_hidden_layers", file, &hp->n_layer, err));
    QW_TRY(qw_json_require_int(config, "hidden_size", file, &hp->n_embd, err));
    QW_TRY(qw_json_require_int(config, "num_attention_heads", file, &hp->n_head, err));
    bool found = false;
    hp->n_head_kv = hp->n_head;
    QW_TRY(qw_json_get_int(config, "num_key_value_heads", file, &hp->n_head_kv, NULL, err));
    QW_TRY(qw_json_get_int(config, "intermediate_size", file, &hp->n_ff, NULL, err));
    QW_TRY(qw_json_get_int(config, "max_position_embeddings", file, &hp->n_ctx, NULL, err));
    QW_TRY(qw_json_get_int(config, "head_dim", file, &hp->head_dim, NULL, err));
    QW_TRY(qw_json_get_int(config, "vocab_size", file, &hp->vocab_size, NULL, err));
    QW_TRY(qw_json_get_int(config, "num_local_experts", file, &hp->n_expert, NULL, err));
    QW_TRY(qw_json_get_int(config, "num_experts_per_tok", file, &hp->n_expert_used, NULL, err));
    QW_TRY(qw_json_get_number(config, "rope_theta", file, &hp->rope_theta, &found, err));
    hp->has_rope_theta = found;
    QW_TRY(qw_json_get_number(config, "rms_norm_eps", file, &hp->rms_eps, &found, err));
    hp->has_rms_eps = found;
    QW_TRY(qw_json_get_bool(config, "tie_word_embeddings", file, &hp->tied_embeddings, NULL, err));

    hp->rope_freqs_orig_ctx = 8192;
    QW_TRY(qw_json_get_int(config, "original_max_position_embeddings", file,
                           &hp->rope_freqs_orig_ctx, NULL, err));
    if (hp->rope_freqs_orig_ctx <= 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "original_max_position_embeddings", -1,
                          "%s: \"original_max_position_embeddings\" must be positive", file);
    }
    const json_t *rs = json_object_get(config, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "rope_scaling", -1,
                              "%s: \"rope_scaling\" must be an object", file);
        }
        const char *type = NULL;
        QW_TRY(qw_json_get_string(rs, "rope_type", file, &type, NULL, err));
        if (!type) QW_TRY(qw_json_get_string(rs, "type", file, &type, NULL, err));
        snprintf(hp->rope_type, sizeof hp->rope_type, "%s", type ? type : "");
        hp->rope_factor = 1.0;
        hp->rope_low_freq_factor = 1.0;
        hp->rope_high_freq_factor = 4.0;
        hp->rope_orig_ctx = 8192;
        QW_TRY(qw_json_get_number(rs, "factor", file, &hp->rope_factor, NULL, err));
        QW_TRY(qw_json_get_number(rs, "low_freq_factor", file, &hp->rope_low_freq_factor, NULL,
                                  err));
        QW_TRY(qw_json_get_number(rs, "high_freq_factor", file, &hp->rope_high_freq_factor, NULL,
                                  err));
        QW_TRY(qw_json_get_int(rs, "original_max_position_embeddings", file, &hp->rope_orig_ctx,
                               NULL, err));
        if (!(hp->rope_factor > 0) || !(hp->rope_high_freq_factor > hp->rope_low_freq_factor) ||
            hp->rope_orig_ctx <= 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "rope_scaling", -1,
                              "%s: \"rope_scaling\" has out-of-range factors", file);
        }
    }
    return check_hparams(hp, file, err);
}

/* "<arch>.<suffix>" into buf. */
static const char *arch_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

qw_status qw_hparams_from_gguf(const qw_gguf *g, const char *arch, qw_hparams *hp,
                               qw_error *err) {
    memset(hp, 0, sizeof *hp);
    char key[128];
    uint64_t u;
    static const struct {
        const char *suffix;
        size_t offset;
        bool required;
    } ints[] = {
        {"block_count", offsetof(qw_hparams, n_layer), true},
        {"context_length", offsetof(qw_hparams, n_ctx), false},
        {"embedding_length", offsetof(qw_hparams, n_embd), true},
        {"feed_forward_length", offsetof(qw_hparams, n_ff), false},
        {"attention.head_count", offsetof(qw_hparams, n_head), false},
        {"attention.head_count_kv", offsetof(qw_hparams, n_head_kv), false},
        {"attention.key_length", offsetof(qw_hparams, head_dim), false},
        {"vocab_size", offsetof(qw_hparams, vocab_size), false},
        {"expert_count", offsetof(qw_hparams, n_expert), false},
        {"expert_used_count", offsetof(qw_hparams, n_expert_used), false},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        arch_key(key, sizeof key, arch, ints[i].suffix);
        if (qw_gguf_get_u64(g, key, &u) && u <= (uint64_t)INT64_MAX) {
            *(int64_t *)((char *)hp + ints[i].offset) = (int64_t)u;
        } else if (ints[i].required) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                              "%s: required key \"%s\" is missing or not an integer",
                              qw_gguf_path(g), key);
        }
    }
    if (hp->n_head_kv == 0) hp->n_head_kv = hp->n_head;
    hp->has_rope_theta = qw_gguf_get_f64(g, arch_key(key, sizeof key, arch, "rope.freq_base"),
                                         &hp->rope_theta);
    hp->has_rms_eps = qw_gguf_get_f64(
        g, arch_key(key, sizeof key, arch, "attention.layer_norm_rms_epsilon"), &hp->rms_eps);
    if (hp->n_layer <= 0 || hp->n_layer > 100000 || hp->n_embd <= 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: block_count or embedding_length out of range",
                       qw_gguf_path(g));
    }
    return QW_OK;
}

/* ---- tensor names --------------------------------------------------------------------------- */

/* Matches `name` against `pattern`, where "{L}" matches a decimal layer number < n_layer.
 * Returns the layer (or 0 when the pattern has none), or -1 when it does not match. */
static int64_t match_pattern(const char *pattern, const char *name, int64_t n_layer) {
    int64_t layer = 0;
    while (*pattern) {
        if (strncmp(pattern, "{L}", 3) == 0) {
            if (*name < '0' || *name > '9') return -1;
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

qw_status qw_arch_map_tensor(const qw_arch *arch, const qw_hparams *hp, const char *hf_name,
                             char *gguf_name, size_t gguf_name_bytes, qw_transform *transform,
                             bool *drop, qw_error *err) {
    *drop = false;
    *transform = QW_TRANSFORM_NONE;
    const char *suffixes[] = {".weight", ".bias", ""};
    char stem[256];
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
        size_t n = strlen(hf_name), m = strlen(suffixes[s]);
        if (n < m || n - m >= sizeof stem || strcmp(hf_name + n - m, suffixes[s]) != 0) continue;
        memcpy(stem, hf_name, n - m);
        stem[n - m] = '\0';
        for (const qw_tensor_rule *r = arch->rules; r->hf; r++) {
            int64_t layer = match_pattern(r->hf, stem, hp->n_layer);
            if (layer < 0) continue;
            if (!r->gguf) {
                *drop = true;
                return QW_OK;
            }
            char out[256];
            const char *at = strstr(r->gguf, "{L}");
            if (at) {
                snprintf(out, sizeof out, "%.*s%lld%s%s", (int)(at - r->gguf), r->gguf,
                         (long long)layer, at + 3, suffixes[s]);
            } else {
                snprintf(out, sizeof out, "%s%s", r->gguf, suffixes[s]);
            }
            if (strlen(out) >= gguf_name_bytes) break;
            memcpy(gguf_name, out, strlen(out) + 1);
            if (arch->permute_qk) *transform = r->transform;
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, hf_name, -1,
                      "tensor \"%s\" has no GGUF name for architecture %s (an unexpected layer "
                      "number or a module qwodel does not know)", hf_name, arch->name);
}

int64_t qw_permute_source_row(int64_t row, int64_t head_rows) {
    int64_t head = row / head_rows, within = row % head_rows;
    return head * head_rows + (within % 2) * (head_rows / 2) + within / 2;
}

/* ---- metadata ------------------------------------------------------------------------------- */

static int64_t rope_dims(const qw_hparams *hp) {
    return hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head;
}

qw_status qw_arch_write_hparams(const qw_arch *arch, const qw_hparams *hp, qw_gguf_writer *w,
                                qw_error *err) {
    char key[128];
#define U32(suffix, v) QW_TRY(qw_gguf_writer_set_u32(w, arch_key(key, sizeof key, arch->name, suffix), (uint32_t)(v), err))
#define F32(suffix, v) QW_TRY(qw_gguf_writer_set_f32(w, arch_key(key, sizeof key, arch->name, suffix), (float)(v), err))
    U32("block_count", hp->n_layer);
    if (hp->n_ctx) U32("context_length", hp->n_ctx);
    U32("embedding_length", hp->n_embd);
    if (hp->n_ff) U32("feed_forward_length", hp->n_ff);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    if (hp->has_rope_theta) F32("rope.freq_base", hp->rope_theta);
    if (hp->has_rms_eps) F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    if (hp->n_expert) U32("expert_count", hp->n_expert);
    if (hp->n_expert_used) U32("expert_used_count", hp->n_expert_used);
    if (hp->head_dim) {
        U32("attention.key_length", hp->head_dim);
        U32("attention.value_length", hp->head_dim);
    }
    if (arch->writes_vocab_size && hp->vocab_size) U32("vocab_size", hp->vocab_size);
    if (arch->writes_rope_dimension_count) U32("rope.dimension_count", rope_dims(hp));
    if (arch->writes_linear_rope_scaling && strcmp(hp->rope_type, "linear") == 0) {
        QW_TRY(qw_gguf_writer_set_str(w, arch_key(key, sizeof key, arch->name, "rope.scaling.type"),
                                      "linear", err));
        F32("rope.scaling.factor", hp->rope_factor);
    }
    if (arch->writes_yarn && strcmp(hp->rope_type, "yarn") == 0) {
        QW_TRY(qw_gguf_writer_set_str(w, arch_key(key, sizeof key, arch->name, "rope.scaling.type"),
                                      "yarn", err));
        F32("rope.scaling.factor", hp->rope_factor);
        U32("rope.scaling.original_context_length", hp->rope_orig_ctx);
    }
#undef U32
#undef F32
    return QW_OK;
}

bool qw_arch_has_rope_freqs(const qw_arch *arch, const qw_hparams *hp, int64_t *n_out) {
    if (!arch->writes_rope_freqs || strcmp(hp->rope_type, "llama3") != 0) return false;
    *n_out = rope_dims(hp) / 2;
    return *n_out > 0;
}

/* Llama 3.1's frequency-dependent rope scaling, computed in float32 as the converter does. */
void qw_arch_rope_freqs(const qw_hparams *hp, float *out, int64_t n) {
    const float base = hp->has_rope_theta ? (float)hp->rope_theta : 10000.0f;
    const float dim = (float)(2 * n);
    const float factor = (float)hp->rope_factor;
    const float low = (float)hp->rope_low_freq_factor, high = (float)hp->rope_high_freq_factor;
    const float orig = (float)hp->rope_freqs_orig_ctx;
    const float low_wavelen = orig / low, high_wavelen = orig / high;
    for (int64_t i = 0; i < n; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / dim);
        float wavelen = (float)(2.0 * M_PI) / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = factor;
        } else {
            float smooth = (orig / wavelen - low) / (high - low);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}
