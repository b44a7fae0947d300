/* Architecture rows and the shared code that reads them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "json.h"

static const struct {
    const char *name;
    bool permutes;
    float offset;
} transform_table[QW_TRANSFORM_COUNT] = {
    [QW_TRANSFORM_NONE] = {"", false, 0.0f},
    [QW_TRANSFORM_PERMUTE_Q] = {"permute q heads", true, 0.0f},
    [QW_TRANSFORM_PERMUTE_K] = {"permute k heads", true, 0.0f},
    [QW_TRANSFORM_ADD_ONE] = {"add 1", false, 1.0f},
};

const char *qw_transform_name(qw_transform t) {
    return (unsigned)t < QW_TRANSFORM_COUNT ? transform_table[t].name : "?";
}

bool qw_transform_permutes(qw_transform t) {
    return (unsigned)t < QW_TRANSFORM_COUNT && transform_table[t].permutes;
}

float qw_transform_offset(qw_transform t) {
    return (unsigned)t < QW_TRANSFORM_COUNT ? transform_table[t].offset : 0.0f;
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

/* Mixtral: the router and each expert's w1 (gate), w2 (down), w3 (up), stacked per layer. */
static const qw_tensor_rule mixtral_rules[] = {
    {"model.layers.{L}.block_sparse_moe.gate", "blk.{L}.ffn_gate_inp", QW_TRANSFORM_NONE},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w1", "blk.{L}.ffn_gate_exps",
     QW_TRANSFORM_NONE},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w2", "blk.{L}.ffn_down_exps",
     QW_TRANSFORM_NONE},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w3", "blk.{L}.ffn_up_exps",
     QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};

/* Qwen2-MoE and Qwen3-MoE: router, stacked experts, and (Qwen2-MoE only) one shared expert with
 * its own sigmoid gate. */
static const qw_tensor_rule qwen_moe_rules[] = {
    {"model.layers.{L}.mlp.gate", "blk.{L}.ffn_gate_inp", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj", "blk.{L}.ffn_gate_exps", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.experts.{E}.up_proj", "blk.{L}.ffn_up_exps", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.experts.{E}.down_proj", "blk.{L}.ffn_down_exps", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.shared_expert_gate", "blk.{L}.ffn_gate_inp_shexp", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.shared_expert.gate_proj", "blk.{L}.ffn_gate_shexp", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.shared_expert.up_proj", "blk.{L}.ffn_up_shexp", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.shared_expert.down_proj", "blk.{L}.ffn_down_shexp", QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};

/* llama.cpp's converter handles Mixtral with its Llama class: GGUF architecture "llama" with
 * experts, Q/K permuted like Llama's. */
static const char *const llama_classes[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                            "MixtralForCausalLM", NULL};
static const char *const llama_types[] = {"llama", "mistral", "mixtral", NULL};
static const char *const qwen2moe_classes[] = {"Qwen2MoeForCausalLM", NULL};
static const char *const qwen2moe_types[] = {"qwen2_moe", NULL};
static const char *const qwen3moe_classes[] = {"Qwen3MoeForCausalLM", NULL};
static const char *const qwen3moe_types[] = {"qwen3_moe", NULL};
/* Gemma: HF's GemmaRMSNorm scales by (1 + w), llama.cpp's norm by w, so every norm weight gets
 * +1 (the converter's "norm.weight" suffix test). llama.cpp's Gemma graphs use NEOX rope: no
 * permute. The converter skips lm_head (Gemma 1/2 always tie the output to the embedding). */
static const qw_tensor_rule gemma_rules[] = {
    {"model.embed_tokens", "token_embd", QW_TRANSFORM_NONE},
    {"model.norm", "output_norm", QW_TRANSFORM_ADD_ONE},
    {"lm_head", NULL, QW_TRANSFORM_NONE},
    {"model.layers.{L}.input_layernorm", "blk.{L}.attn_norm", QW_TRANSFORM_ADD_ONE},
    {"model.layers.{L}.self_attn.q_proj", "blk.{L}.attn_q", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.k_proj", "blk.{L}.attn_k", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.v_proj", "blk.{L}.attn_v", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.o_proj", "blk.{L}.attn_output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.post_attention_layernorm", "blk.{L}.ffn_norm", QW_TRANSFORM_ADD_ONE},
    {"model.layers.{L}.mlp.gate_proj", "blk.{L}.ffn_gate", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.up_proj", "blk.{L}.ffn_up", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.down_proj", "blk.{L}.ffn_down", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {"model.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};

/* Gemma 2 and 3 add a norm after attention and around the feed-forward: HF's
 * post_attention_layernorm is llama.cpp's post_attention_norm here (not ffn_norm), and
 * pre_feedforward_layernorm is ffn_norm. Gemma 3 adds Q/K norms (also +1) and keeps lm_head
 * when a checkpoint has one. */
#define GEMMA2_LAYER_RULES                                                                         \
    {"model.layers.{L}.input_layernorm", "blk.{L}.attn_norm", QW_TRANSFORM_ADD_ONE},               \
    {"model.layers.{L}.self_attn.q_proj", "blk.{L}.attn_q", QW_TRANSFORM_NONE},                    \
    {"model.layers.{L}.self_attn.k_proj", "blk.{L}.attn_k", QW_TRANSFORM_NONE},                    \
    {"model.layers.{L}.self_attn.v_proj", "blk.{L}.attn_v", QW_TRANSFORM_NONE},                    \
    {"model.layers.{L}.self_attn.o_proj", "blk.{L}.attn_output", QW_TRANSFORM_NONE},               \
    {"model.layers.{L}.post_attention_layernorm", "blk.{L}.post_attention_norm",                   \
     QW_TRANSFORM_ADD_ONE},                                                                        \
    {"model.layers.{L}.pre_feedforward_layernorm", "blk.{L}.ffn_norm", QW_TRANSFORM_ADD_ONE},      \
    {"model.layers.{L}.post_feedforward_layernorm", "blk.{L}.post_ffw_norm",                       \
     QW_TRANSFORM_ADD_ONE},                                                                        \
    {"model.layers.{L}.mlp.gate_proj", "blk.{L}.ffn_gate", QW_TRANSFORM_NONE},                     \
    {"model.layers.{L}.mlp.up_proj", "blk.{L}.ffn_up", QW_TRANSFORM_NONE},                         \
    {"model.layers.{L}.mlp.down_proj", "blk.{L}.ffn_down", QW_TRANSFORM_NONE},                     \
    {"model.layers.{L}.self_attn.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},                   \
    {"model.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE}

static const qw_tensor_rule gemma2_rules[] = {
    {"model.embed_tokens", "token_embd", QW_TRANSFORM_NONE},
    {"model.norm", "output_norm", QW_TRANSFORM_ADD_ONE},
    {"lm_head", NULL, QW_TRANSFORM_NONE},
    GEMMA2_LAYER_RULES,
    {NULL, NULL, QW_TRANSFORM_NONE},
};

static const qw_tensor_rule gemma3_rules[] = {
    {"model.embed_tokens", "token_embd", QW_TRANSFORM_NONE},
    {"model.norm", "output_norm", QW_TRANSFORM_ADD_ONE},
    {"lm_head", "output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.q_norm", "blk.{L}.attn_q_norm", QW_TRANSFORM_ADD_ONE},
    {"model.layers.{L}.self_attn.k_norm", "blk.{L}.attn_k_norm", QW_TRANSFORM_ADD_ONE},
    GEMMA2_LAYER_RULES,
    {NULL, NULL, QW_TRANSFORM_NONE},
};

/* Phi-3: Q, K and V stay fused as attn_qkv and gate/up as ffn_up (llama.cpp splits them when it
 * loads the model); NEOX rope, so no permute. */
static const qw_tensor_rule phi3_rules[] = {
    {"model.embed_tokens", "token_embd", QW_TRANSFORM_NONE},
    {"model.norm", "output_norm", QW_TRANSFORM_NONE},
    {"lm_head", "output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.input_layernorm", "blk.{L}.attn_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.qkv_proj", "blk.{L}.attn_qkv", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.o_proj", "blk.{L}.attn_output", QW_TRANSFORM_NONE},
    {"model.layers.{L}.post_attention_layernorm", "blk.{L}.ffn_norm", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.gate_up_proj", "blk.{L}.ffn_up", QW_TRANSFORM_NONE},
    {"model.layers.{L}.mlp.down_proj", "blk.{L}.ffn_down", QW_TRANSFORM_NONE},
    {"model.layers.{L}.self_attn.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {"model.rotary_emb.inv_freq", NULL, QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};

/* CodeGemma's fill-in-the-middle ids, which llama.cpp's converter writes for every Gemma 1
 * model. */
static const qw_fixed_kv gemma_fixed_u32[] = {
    {"tokenizer.ggml.prefix_token_id", 67}, {"tokenizer.ggml.suffix_token_id", 69},
    {"tokenizer.ggml.middle_token_id", 68}, {"tokenizer.ggml.fsep_token_id", 70},
    {"tokenizer.ggml.eot_token_id", 107},   {NULL, 0},
};

static const char *const gemma_classes[] = {"GemmaForCausalLM", NULL};
static const char *const gemma_types[] = {"gemma", NULL};
static const char *const gemma2_classes[] = {"Gemma2ForCausalLM", NULL};
static const char *const gemma2_types[] = {"gemma2", NULL};
static const char *const gemma3_classes[] = {"Gemma3ForCausalLM", "Gemma3ForConditionalGeneration",
                                             NULL};
static const char *const gemma3_types[] = {"gemma3_text", "gemma3", NULL};
/* Gemma 3 4B/12B/27B are published as the multimodal class; its config.json nests the text
 * model's keys in text_config. */
static const char *const gemma3_nested_classes[] = {"Gemma3ForConditionalGeneration", NULL};
/* transformers' Gemma3TextConfig (5.24) fills these in; the published text_configs leave most
 * of them out (gemma-3-4b-it gives only sizes, layers, rope_scaling and sliding_window). The
 * rope bases are its default_theta; sliding_window_pattern is the one its layer_types follow. */
static const qw_config_default gemma3_defaults[] = {
    {"vocab_size", "262208"},
    {"hidden_size", "2304"},
    {"intermediate_size", "9216"},
    {"num_hidden_layers", "26"},
    {"num_attention_heads", "8"},
    {"num_key_value_heads", "4"},
    {"head_dim", "256"},
    {"max_position_embeddings", "131072"},
    {"rms_norm_eps", "1e-06"},
    {"rope_theta", "1000000.0"},
    {"rope_local_base_freq", "10000.0"},
    {"query_pre_attn_scalar", "256"},
    {"sliding_window", "4096"},
    {"sliding_window_pattern", "6"},
    {NULL, NULL},
};
/* The text model's names in the multimodal checkpoints: transformers < 4.52 saved it under
 * language_model.model / language_model.lm_head, later versions under model.language_model with
 * lm_head at the top (llama.cpp's converter deletes "language_model." wherever it appears). */
static const qw_name_prefix gemma3_prefixes[] = {
    {"language_model.model.", "model."},
    {"language_model.lm_head.", "lm_head."},
    {"model.language_model.", "model."},
    {NULL, NULL},
};
/* The SigLIP vision tower and the projector go to llama.cpp's separate mmproj file. */
static const char *const gemma3_skipped[] = {"vision_tower.", "multi_modal_projector.",
                                             "model.vision_tower.",
                                             "model.multi_modal_projector.", NULL};
/* BERT, as llama.cpp's converter names its tensors. The pooler serves only pooler_output and
 * next-sentence prediction, neither part of the encoder's hidden states. */
static const qw_tensor_rule bert_rules[] = {
    {"embeddings.word_embeddings", "token_embd", QW_TRANSFORM_NONE},
    {"embeddings.token_type_embeddings", "token_types", QW_TRANSFORM_NONE},
    {"embeddings.position_embeddings", "position_embd", QW_TRANSFORM_NONE},
    {"embeddings.LayerNorm", "token_embd_norm", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.attention.self.query", "blk.{L}.attn_q", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.attention.self.key", "blk.{L}.attn_k", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.attention.self.value", "blk.{L}.attn_v", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.attention.output.dense", "blk.{L}.attn_output", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.attention.output.LayerNorm", "blk.{L}.attn_output_norm",
     QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.intermediate.dense", "blk.{L}.ffn_up", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.output.dense", "blk.{L}.ffn_down", QW_TRANSFORM_NONE},
    {"encoder.layer.{L}.output.LayerNorm", "blk.{L}.layer_output_norm", QW_TRANSFORM_NONE},
    {"embeddings.position_ids", NULL, QW_TRANSFORM_NONE}, /* a buffer older exports saved */
    {"pooler.dense", NULL, QW_TRANSFORM_NONE},
    {NULL, NULL, QW_TRANSFORM_NONE},
};
static const char *const bert_classes[] = {"BertModel", "BertForMaskedLM", "BertForPreTraining",
                                           NULL};
static const char *const bert_types[] = {"bert", NULL};
/* The task heads' models keep the encoder under "bert."; their heads (masked-LM and
 * next-sentence "cls.") are not part of the encoder. */
static const qw_name_prefix bert_prefixes[] = {{"bert.", ""}, {NULL, NULL}};
static const char *const bert_skipped[] = {"cls.", NULL};
static const char *const phi3_classes[] = {"Phi3ForCausalLM", NULL};
static const char *const phi3_types[] = {"phi3", NULL};
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
        .moe_rules = mixtral_rules,
        .moe_topk_norm = QW_TOPK_NORM_ON,
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
    {
        .name = "qwen2moe",
        .hf_classes = qwen2moe_classes,
        .hf_model_types = qwen2moe_types,
        .rules = llama_like_rules,
        .moe_rules = qwen_moe_rules,
        .moe_topk_norm = QW_TOPK_NORM_OFF,
        .writes_yarn = true,
        .writes_expert_ff = true,
    },
    {
        .name = "qwen3moe",
        .hf_classes = qwen3moe_classes,
        .hf_model_types = qwen3moe_types,
        .rules = llama_like_rules,
        .moe_rules = qwen_moe_rules,
        .moe_topk_norm = QW_TOPK_NORM_ON,
        .writes_yarn = true,
        .writes_expert_ff = true,
    },
    {
        .name = "gemma",
        .hf_classes = gemma_classes,
        .hf_model_types = gemma_types,
        .rules = gemma_rules,
        .omits_rope_freq_base = true,
        .fixed_u32 = gemma_fixed_u32,
    },
    {
        .name = "gemma2",
        .hf_classes = gemma2_classes,
        .hf_model_types = gemma2_types,
        .rules = gemma2_rules,
        .omits_rope_freq_base = true,
        .writes_softcapping = true,
        .writes_sliding_window = true,
    },
    {
        .name = "gemma3",
        .hf_classes = gemma3_classes,
        .hf_model_types = gemma3_types,
        .rules = gemma3_rules,
        .writes_linear_rope_scaling = true,
        .writes_yarn = true,
        .writes_softcapping = true,
        .writes_sliding_window = true,
        .writes_rope_freq_base_swa = true,
        .nested_classes = gemma3_nested_classes,
        .nested_key = "text_config",
        .config_defaults = gemma3_defaults,
        .name_prefixes = gemma3_prefixes,
        .skip_prefixes = gemma3_skipped,
        .trims_embd_to_tokenizer = true,
    },
    {
        .name = "phi3",
        .hf_classes = phi3_classes,
        .hf_model_types = phi3_types,
        .rules = phi3_rules,
        .writes_sliding_window = true,
        .writes_longrope = true,
    },
    {
        .name = "bert",
        .hf_classes = bert_classes,
        .hf_model_types = bert_types,
        .rules = bert_rules,
        .name_prefixes = bert_prefixes,
        .skip_prefixes = bert_skipped,
        .is_encoder = true,
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
    static char list[1024];
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

static const char *first_class(const json_t *config) {
    const json_t *classes = json_object_get(config, "architectures");
    return json_is_array(classes) ? json_string_value(json_array_get(classes, 0)) : NULL;
}

/* transformers 5 saves the rope settings as "rope_parameters" (Gemma 3: one object per layer
 * type, "full_attention" and "sliding_attention") instead of rope_theta, rope_scaling and
 * rope_local_base_freq. They are set back under those keys, read as llama.cpp's converter
 * reads them: rope_parameters wins over rope_scaling, the global layers' object is the
 * scaling, the sliding layers' rope_theta the local base. */
static qw_status lift_rope_parameters(json_t *c, const char *file, qw_error *err) {
    const json_t *rp = json_object_get(c, "rope_parameters");
    if (!rp || json_is_null(rp)) return QW_OK;
    const json_t *full = json_is_object(rp) ? json_object_get(rp, "full_attention") : NULL;
    const json_t *global = full ? full : rp;
    const json_t *local = json_is_object(rp) ? json_object_get(rp, "sliding_attention") : NULL;
    if (!json_is_object(global) || (local && !json_is_object(local))) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "rope_parameters", -1,
                          "%s: \"rope_parameters\"%s must be an object", file,
                          !json_is_object(global) ? (full ? " \"full_attention\"" : "")
                                                  : " \"sliding_attention\"");
    }
    bool ok = true;
    const json_t *theta = json_object_get(global, "rope_theta");
    if (theta) ok = json_object_set(c, "rope_theta", (json_t *)theta) == 0;
    const json_t *local_theta = local ? json_object_get(local, "rope_theta") : NULL;
    if (ok && local_theta) {
        ok = json_object_set(c, "rope_local_base_freq", (json_t *)local_theta) == 0;
    }
    if (ok) {
        const char *type = json_string_value(json_object_get(global, "rope_type"));
        if (!type) type = json_string_value(json_object_get(global, "type")); /* legacy name */
        json_t *scaling = NULL;
        if (!type || strcmp(type, "default") == 0) {
            scaling = json_null(); /* no scaling */
        } else if ((scaling = json_copy((json_t *)global)) != NULL) {
            json_object_del(scaling, "rope_theta");
        }
        /* set_new takes the reference, also when it fails */
        ok = scaling && json_object_set_new(c, "rope_scaling", scaling) == 0;
    }
    if (!ok) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    return QW_OK;
}

qw_status qw_arch_text_config(const qw_arch *arch, const json_t *config, const char *file,
                              json_t **out, bool *nested, qw_error *err) {
    *out = NULL;
    *nested = false;
    if (!json_is_object(config)) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: the top level must be a JSON object", file);
    }
    const char *cls = first_class(config);
    json_t *merged = json_copy((json_t *)config);
    if (!merged) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    /* without "architectures" (model_type alone picked the row) the sub-object tells */
    bool wants_nested = arch->nested_classes && arch->nested_key &&
                        (cls ? in_list(arch->nested_classes, cls)
                             : json_is_object(json_object_get(config, arch->nested_key)));
    if (wants_nested) {
        const json_t *sub = json_object_get(config, arch->nested_key);
        if (!json_is_object(sub)) {
            json_decref(merged);
            return qw_fail_at(err, QW_ERR_CORRUPT, arch->nested_key, -1,
                              "%s: \"%s\" is %s; a %s config.json keeps the text model's "
                              "hyperparameters in that object", file, arch->nested_key,
                              sub ? "not an object" : "missing", cls ? cls : arch->name);
        }
        /* the converter's {**config, **config["text_config"]}: the text model's keys win */
        if (json_object_update(merged, (json_t *)sub) != 0) {
            json_decref(merged);
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
        *nested = true;
    }
    qw_status st = lift_rope_parameters(merged, file, err);
    if (st != QW_OK) {
        json_decref(merged);
        return st;
    }
    for (const qw_config_default *d = arch->config_defaults; d && d->key; d++) {
        if (json_object_get(merged, d->key)) continue; /* null too: HF keeps an explicit None */
        json_t *v = json_loads(d->json, JSON_DECODE_ANY, NULL);
        if (!v || json_object_set_new(merged, d->key, v) != 0) {
            json_decref(merged);
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
    }
    *out = merged;
    return QW_OK;
}

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
    if (hp->n_expert < 0 || hp->n_expert > 1 << 16 || hp->n_expert_used < 0 ||
        (hp->n_expert > 0 && hp->n_expert_used > hp->n_expert)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "num_experts_per_tok", -1,
                          "%s: %lld experts used per token of %lld experts is out of range", file,
                          (long long)hp->n_expert_used, (long long)hp->n_expert);
    }
    if (hp->head_dim < 0 || hp->head_dim > 1 << 16 || hp->n_ff < 0 || hp->n_ctx < 0 ||
        hp->vocab_size < 0 || hp->n_ff_exp < 0 || hp->n_ff_shexp < 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: a size in the configuration is out of range",
                       file);
    }
    return QW_OK;
}

/* Sliding window, logit soft-capping and the local-layer rope base (Gemma 2/3, Phi-3). */
static qw_status read_window_and_caps(const json_t *config, const char *file, qw_hparams *hp,
                                      qw_error *err) {
    QW_TRY(qw_json_get_int(config, "sliding_window", file, &hp->sliding_window,
                           &hp->has_sliding_window, err));
    QW_TRY(qw_json_get_int(config, "sliding_window_pattern", file, &hp->sliding_window_pattern,
                           NULL, err));
    if (hp->sliding_window < 0 || hp->sliding_window > UINT32_MAX ||
        hp->sliding_window_pattern < 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "sliding_window", -1,
                          "%s: \"sliding_window\" or \"sliding_window_pattern\" is out of range",
                          file);
    }
    QW_TRY(qw_json_get_number(config, "attn_logit_softcapping", file, &hp->attn_softcap,
                              &hp->has_attn_softcap, err));
    QW_TRY(qw_json_get_number(config, "final_logit_softcapping", file, &hp->final_softcap,
                              &hp->has_final_softcap, err));
    /* the converter's names for the local layers' rope base, first found wins */
    static const char *const swa_keys[] = {"local_rope_theta", "rope_local_theta",
                                           "rope_theta_local", "swa_rope_theta",
                                           "rope_local_base_freq"};
    for (size_t i = 0; i < sizeof swa_keys / sizeof swa_keys[0] && !hp->has_rope_theta_swa; i++) {
        QW_TRY(qw_json_get_number(config, swa_keys[i], file, &hp->rope_theta_swa,
                                  &hp->has_rope_theta_swa, err));
    }
    QW_TRY(qw_json_get_number(config, "partial_rotary_factor", file, &hp->partial_rotary_factor,
                              NULL, err));
    if (hp->partial_rotary_factor < 0 || hp->partial_rotary_factor > 1) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "partial_rotary_factor", -1,
                          "%s: \"partial_rotary_factor\" must be between 0 and 1", file);
    }
    return QW_OK;
}

/* One of rope_scaling's factor lists into out[QW_ROPE_FACTORS_MAX]; *n = -1 when absent. */
static qw_status read_factor_list(const json_t *rs, const char *key, const char *file,
                                  float *out, int64_t *n, qw_error *err) {
    const json_t *a = json_object_get(rs, key);
    *n = -1;
    if (!a || json_is_null(a)) return QW_OK;
    if (!json_is_array(a) || json_array_size(a) > QW_ROPE_FACTORS_MAX) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: \"rope_scaling.%s\" must be a list of at most %d numbers", file,
                          key, QW_ROPE_FACTORS_MAX);
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v))) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                              "%s: \"rope_scaling.%s\" item %zu is not a finite number", file,
                              key, i);
        }
        out[i] = (float)json_number_value(v);
    }
    *n = (int64_t)json_array_size(a);
    return QW_OK;
}

/* Phi-3's longrope: the original context (rope_scaling's, else the top-level key, as the
 * converter mirrors it) and the long/short factor lists. */
static qw_status read_longrope(const json_t *config, const json_t *rs, const char *file,
                               qw_hparams *hp, qw_error *err) {
    bool found = false;
    if (rs) {
        QW_TRY(qw_json_get_int(rs, "original_max_position_embeddings", file,
                               &hp->longrope_orig_ctx, &found, err));
    }
    if (!found) {
        QW_TRY(qw_json_get_int(config, "original_max_position_embeddings", file,
                               &hp->longrope_orig_ctx, NULL, err));
    }
    if (!rs) return QW_OK;
    int64_t n_long, n_short;
    QW_TRY(read_factor_list(rs, "long_factor", file, hp->rope_long_factor, &n_long, err));
    QW_TRY(read_factor_list(rs, "short_factor", file, hp->rope_short_factor, &n_short, err));
    if (n_long <= 0) return QW_OK; /* the converter writes nothing without long factors */
    if (n_short != n_long) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "rope_scaling", -1,
                          "%s: \"rope_scaling\" has %lld long_factor and %lld short_factor "
                          "values; they must be the same number", file, (long long)n_long,
                          (long long)n_short);
    }
    hp->n_rope_factors = n_long;
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
    /* the converter's order: Mixtral's key, then Qwen's */
    QW_TRY(qw_json_get_int(config, "num_local_experts", file, &hp->n_expert, &found, err));
    if (!found) QW_TRY(qw_json_get_int(config, "num_experts", file, &hp->n_expert, NULL, err));
    QW_TRY(qw_json_get_int(config, "num_experts_per_tok", file, &hp->n_expert_used, NULL, err));
    QW_TRY(qw_json_get_int(config, "moe_intermediate_size", file, &hp->n_ff_exp, NULL, err));
    QW_TRY(qw_json_get_int(config, "shared_expert_intermediate_size", file, &hp->n_ff_shexp,
                           NULL, err));
    bool norm_topk = false;
    QW_TRY(qw_json_get_bool(config, "norm_topk_prob", file, &norm_topk, &found, err));
    hp->norm_topk_prob = !found ? QW_TOPK_NORM_UNKNOWN
                                : norm_topk ? QW_TOPK_NORM_ON : QW_TOPK_NORM_OFF;
    QW_TRY(qw_json_get_number(config, "rope_theta", file, &hp->rope_theta, &found, err));
    hp->has_rope_theta = found;
    QW_TRY(qw_json_get_number(config, "rms_norm_eps", file, &hp->rms_eps, &found, err));
    hp->has_rms_eps = found;
    QW_TRY(qw_json_get_number(config, "layer_norm_eps", file, &hp->norm_eps, &found, err));
    hp->has_norm_eps = found;
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
    QW_TRY(read_window_and_caps(config, file, hp, err));
    QW_TRY(read_longrope(config, rs && !json_is_null(rs) ? rs : NULL, file, hp, err));
    return check_hparams(hp, file, err);
}

qw_status qw_sliding_layers(const json_t *config, const qw_hparams *hp, int64_t default_period,
                            bool *sliding, qw_error *err) {
    const int64_t n = hp->n_layer;
    const json_t *types = json_object_get(config, "layer_types");
    if (json_is_array(types)) {
        if ((int64_t)json_array_size(types) != n) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "layer_types", -1,
                              "config.json: layer_types has %zu entries for %lld layers",
                              json_array_size(types), (long long)n);
        }
        for (int64_t i = 0; i < n; i++) {
            const char *t = json_string_value(json_array_get(types, (size_t)i));
            if (!t || (strcmp(t, "sliding_attention") != 0 && strcmp(t, "full_attention") != 0)) {
                return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "layer_types", -1,
                                  "config.json: layer_types[%lld] is not \"sliding_attention\" "
                                  "or \"full_attention\"", (long long)i);
            }
            sliding[i] = strcmp(t, "sliding_attention") == 0;
        }
        return QW_OK;
    }
    const int64_t period = hp->sliding_window_pattern > 0 ? hp->sliding_window_pattern
                                                          : default_period;
    if (period > 0) {
        for (int64_t i = 0; i < n; i++) sliding[i] = (i + 1) % period != 0;
        return QW_OK;
    }
    /* Qwen2, Qwen3: the layers from max_window_layers on (transformers' default layer_types);
     * Mistral: every layer */
    int64_t first = 0;
    QW_TRY(qw_json_get_int(config, "max_window_layers", "config.json", &first, NULL, err));
    if (first < 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "max_window_layers", -1,
                          "config.json: max_window_layers %lld is not a layer count",
                          (long long)first);
    }
    for (int64_t i = 0; i < n; i++) sliding[i] = i >= first;
    return QW_OK;
}

qw_status qw_longrope_attention_factor(const json_t *config, const qw_hparams *hp, double *out,
                                       qw_error *err) {
    const json_t *rs = json_object_get(config, "rope_scaling");
    double factor = 0.0, attn = 0.0;
    bool has_factor = false, has_attn = false;
    QW_TRY(qw_json_get_number(rs, "factor", "config.json", &factor, &has_factor, err));
    QW_TRY(qw_json_get_number(rs, "attention_factor", "config.json", &attn, &has_attn, err));
    const double orig = (double)hp->longrope_orig_ctx;
    if (!has_factor) factor = (double)hp->n_ctx / orig;
    if (!has_attn) attn = factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log(orig));
    *out = attn;
    return QW_OK;
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

/* A decimal number < limit at *name (advanced past it), or -1. */
static int64_t match_number(const char **name, int64_t limit) {
    const char *p = *name;
    if (*p < '0' || *p > '9') return -1;
    int64_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 9) return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (v >= limit) return -1;
    *name = p;
    return v;
}

/* Matches `name` against `pattern`, where "{L}" matches a layer number < n_layer and "{E}" an
 * expert number < n_expert. Returns false when it does not match; otherwise *layer and *expert
 * hold the numbers (0 and -1 when the pattern has none). */
static bool match_pattern(const char *pattern, const char *name, const qw_hparams *hp,
                          int64_t *layer, int64_t *expert) {
    *layer = 0;
    *expert = -1;
    while (*pattern) {
        if (strncmp(pattern, "{L}", 3) == 0) {
            if ((*layer = match_number(&name, hp->n_layer)) < 0) return false;
            pattern += 3;
        } else if (strncmp(pattern, "{E}", 3) == 0) {
            if ((*expert = match_number(&name, hp->n_expert)) < 0) return false;
            pattern += 3;
        } else if (*pattern++ != *name++) {
            return false;
        }
    }
    return *name == '\0';
}

/* The first rule of `rules` (NULL-ended, or NULL) that matches stem. */
static const qw_tensor_rule *find_rule(const qw_tensor_rule *rules, const char *stem,
                                       const qw_hparams *hp, int64_t *layer, int64_t *expert) {
    for (const qw_tensor_rule *r = rules; r && r->hf; r++) {
        if (match_pattern(r->hf, stem, hp, layer, expert)) return r;
    }
    return NULL;
}

static bool has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool qw_arch_is_skipped_module(const qw_arch *arch, const char *hf_name) {
    for (const char *const *p = arch->skip_prefixes; p && *p; p++) {
        if (has_prefix(hf_name, *p)) return true;
    }
    return false;
}

qw_status qw_arch_map_tensor_part(const qw_arch *arch, const qw_hparams *hp, const char *hf_name,
                                  char *gguf_name, size_t gguf_name_bytes,
                                  qw_transform *transform, bool *drop, int64_t *expert,
                                  qw_error *err) {
    *drop = false;
    *transform = QW_TRANSFORM_NONE;
    *expert = -1;
    if (qw_arch_is_skipped_module(arch, hf_name)) {
        *drop = true;
        return QW_OK;
    }
    /* the name as the rules spell it: a multimodal checkpoint's text-model prefix rewritten */
    char plain[256];
    const char *name = hf_name;
    for (const qw_name_prefix *p = arch->name_prefixes; p && p->hf; p++) {
        if (!has_prefix(hf_name, p->hf)) continue;
        int len = snprintf(plain, sizeof plain, "%s%s", p->as, hf_name + strlen(p->hf));
        if (len > 0 && (size_t)len < sizeof plain) name = plain;
        break;
    }
    const char *suffixes[] = {".weight", ".bias", ""};
    char stem[256];
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
        size_t n = strlen(name), m = strlen(suffixes[s]);
        if (n < m || n - m >= sizeof stem || strcmp(name + n - m, suffixes[s]) != 0) continue;
        memcpy(stem, name, n - m);
        stem[n - m] = '\0';
        int64_t layer, e;
        const qw_tensor_rule *r = find_rule(arch->rules, stem, hp, &layer, &e);
        if (!r) r = find_rule(arch->moe_rules, stem, hp, &layer, &e);
        if (!r) continue;
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
        /* the permutes only where llama.cpp's rope is the interleaved one; value transforms
         * (Gemma's +1) always */
        if (arch->permute_qk || !qw_transform_permutes(r->transform)) *transform = r->transform;
        *expert = e;
        return QW_OK;
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, hf_name, -1,
                      "tensor \"%s\" has no GGUF name for architecture %s (an unexpected layer "
                      "or expert number, or a module qwodel does not know)", hf_name, arch->name);
}

qw_status qw_arch_map_tensor(const qw_arch *arch, const qw_hparams *hp, const char *hf_name,
                             char *gguf_name, size_t gguf_name_bytes, qw_transform *transform,
                             bool *drop, qw_error *err) {
    int64_t expert;
    return qw_arch_map_tensor_part(arch, hp, hf_name, gguf_name, gguf_name_bytes, transform, drop,
                                   &expert, err);
}

int64_t qw_permute_source_row(int64_t row, int64_t head_rows) {
    int64_t head = row / head_rows, within = row % head_rows;
    return head * head_rows + (within % 2) * (head_rows / 2) + within / 2;
}

/* ---- metadata ------------------------------------------------------------------------------- */

static int64_t rope_dims(const qw_hparams *hp) {
    return hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head;
}

/* Phi-3's rope dimensions: the converter's int(partial_rotary_factor * n_embd) // n_head. */
static int64_t phi3_rope_dims(const qw_hparams *hp) {
    double pct = hp->partial_rotary_factor > 0 ? hp->partial_rotary_factor : 1.0;
    return (int64_t)(pct * (double)hp->n_embd) / hp->n_head;
}

/* Phi-3: the original context is required, rope dims may be partial, and with longrope factors
 * the attention factor the converter derives from the context ratio. */
static qw_status write_longrope(const qw_arch *arch, const qw_hparams *hp, qw_gguf_writer *w,
                                qw_error *err) {
    char key[128];
    if (hp->longrope_orig_ctx <= 0 || hp->longrope_orig_ctx > UINT32_MAX) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, "original_max_position_embeddings", -1,
                          "architecture %s needs a positive \"original_max_position_embeddings\" "
                          "in config.json (or in its rope_scaling), as llama.cpp's converter "
                          "does", arch->name);
    }
    QW_TRY(qw_gguf_writer_set_u32(w, arch_key(key, sizeof key, arch->name,
                                              "rope.scaling.original_context_length"),
                                  (uint32_t)hp->longrope_orig_ctx, err));
    int64_t dims = phi3_rope_dims(hp);
    QW_TRY(qw_gguf_writer_set_u32(w, arch_key(key, sizeof key, arch->name,
                                              "rope.dimension_count"),
                                  (uint32_t)dims, err));
    if (hp->n_rope_factors == 0) return QW_OK;
    if (hp->n_rope_factors * 2 != dims) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, "rope_scaling", -1,
                          "rope_scaling has %lld long/short factors; architecture %s with %lld "
                          "rope dimensions needs %lld", (long long)hp->n_rope_factors, arch->name,
                          (long long)dims, (long long)(dims / 2));
    }
    double scale = (double)hp->n_ctx / (double)hp->longrope_orig_ctx;
    double attn_factor = 1.0;
    if (strcmp(hp->rope_type, "su") == 0 || strcmp(hp->rope_type, "longrope") == 0) {
        if (scale > 1.0) attn_factor = sqrt(1.0 + log(scale) / log((double)hp->longrope_orig_ctx));
    } else if (strcmp(hp->rope_type, "yarn") == 0) {
        if (scale > 1.0) attn_factor = 0.1 * log(scale) + 1.0;
    } else {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, "rope_scaling", -1,
                          "rope_scaling type \"%s\" with long/short factors is not supported "
                          "for architecture %s (longrope, su or yarn)", hp->rope_type, arch->name);
    }
    QW_TRY(qw_gguf_writer_set_f32(w, arch_key(key, sizeof key, arch->name,
                                              "rope.scaling.attn_factor"),
                                  (float)attn_factor, err));
    return QW_OK;
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
    if (hp->has_rope_theta && !arch->omits_rope_freq_base) F32("rope.freq_base", hp->rope_theta);
    if (hp->has_rms_eps) F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    if (hp->n_expert) U32("expert_count", hp->n_expert);
    if (hp->n_expert_used) U32("expert_used_count", hp->n_expert_used);
    if (arch->writes_expert_ff && hp->n_ff_exp) U32("expert_feed_forward_length", hp->n_ff_exp);
    if (arch->writes_expert_ff && hp->n_ff_shexp) {
        U32("expert_shared_feed_forward_length", hp->n_ff_shexp);
    }
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
    if (arch->writes_softcapping && hp->has_attn_softcap && hp->attn_softcap != 0) {
        F32("attn_logit_softcapping", hp->attn_softcap);
    }
    if (arch->writes_softcapping && hp->has_final_softcap && hp->final_softcap != 0) {
        F32("final_logit_softcapping", hp->final_softcap);
    }
    /* a pattern of 1 means every layer is global: the converter leaves the window out */
    if (arch->writes_sliding_window && hp->sliding_window_pattern != 1) {
        U32("attention.sliding_window", hp->sliding_window);
    }
    if (arch->writes_rope_freq_base_swa && hp->has_rope_theta_swa) {
        F32("rope.freq_base_swa", hp->rope_theta_swa);
    }
    if (arch->writes_longrope) QW_TRY(write_longrope(arch, hp, w, err));
    for (const qw_fixed_kv *kv = arch->fixed_u32; kv && kv->key; kv++) {
        QW_TRY(qw_gguf_writer_set_u32(w, kv->key, kv->value, err));
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

bool qw_arch_has_rope_factors(const qw_arch *arch, const qw_hparams *hp, int64_t *n_out) {
    /* a length that does not fit the rope dimensions is refused by qw_arch_write_hparams */
    if (!arch->writes_longrope || hp->n_rope_factors <= 0 ||
        hp->n_rope_factors * 2 != phi3_rope_dims(hp)) {
        return false;
    }
    *n_out = hp->n_rope_factors;
    return true;
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
