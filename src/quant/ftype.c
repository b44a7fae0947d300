/* Formats and per-tensor type rules. The rules follow llama.cpp's llama-quant.cpp: which tensors
 * are quantized at all, the output/embedding choice, and the fallback when a row length is not a
 * multiple of the chosen type's block. */
#include <stdio.h>
#include <string.h>

#include "ftype.h"

static const qw_ftype_info ftype_table[] = {
    {"Q8_0", 7, QW_QTYPE_Q8_0, "Near-lossless quality. Requires more RAM."},
    {"Q4_0", 2, QW_QTYPE_Q4_0, "Compact 4-bit, slightly smaller than Q4_K_M."},
    {"F16", 1, QW_QTYPE_F16, "16-bit float, unquantized: the reference for quality."},
    {"BF16", 32, QW_QTYPE_BF16, "bfloat16, unquantized: keeps the range of bf16 checkpoints."},
    {"F32", 0, QW_QTYPE_F32, "32-bit float, unquantized: largest, exact."},
};

#define N_FTYPES (sizeof ftype_table / sizeof ftype_table[0])

size_t qw_ftype_count(void) { return N_FTYPES; }

const qw_ftype_info *qw_ftype_at(size_t index) {
    return index < N_FTYPES ? &ftype_table[index] : NULL;
}

const qw_ftype_info *qw_ftype_find(const char *name) {
    for (size_t i = 0; i < N_FTYPES; i++) {
        if (qw_strcasecmp(ftype_table[i].name, name) == 0) return &ftype_table[i];
    }
    return NULL;
}

static bool contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

bool qw_tensor_allows_quantization(const char *name, int n_dims, bool quantize_output) {
    if (n_dims < 2) return false;
    if (!qw_str_ends_with(name, "weight")) return false;
    if (contains(name, "_norm.weight")) return false;
    if (!quantize_output && strcmp(name, "output.weight") == 0) return false;
    static const char *const never[] = {
        "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "time_mix_first.weight",
        "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight",
        "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
        "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
        "attn_rel_b.weight", ".position_embd", ".patch_embd", ".rel_pos",
    };
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
        if (contains(name, never[i])) return false;
    }
    return strcmp(name, "position_embd.weight") != 0 && strcmp(name, "token_types.weight") != 0;
}

bool qw_tensor_keeps_f32(const char *name, int n_dims) {
    return n_dims < 2 || !qw_str_ends_with(name, ".weight") || contains(name, "_norm.weight") ||
           contains(name, "ffn_gate_inp.weight");
}

static bool is_attn_v_like(const char *name) {
    return contains(name, "attn_v.weight") || contains(name, "attn_qkv.weight") ||
           contains(name, "attn_kv_b.weight");
}

void qw_type_rules_count(qw_type_rules *rules, const char *name) {
    if (is_attn_v_like(name)) rules->n_attention_wv++;
}

/* llama.cpp's substitute when a row does not fill whole blocks of the chosen type. */
static const struct {
    qw_qtype from, to;
} fallback_table[] = {
    {QW_QTYPE_IQ1_S, QW_QTYPE_IQ4_NL},  {QW_QTYPE_IQ1_M, QW_QTYPE_IQ4_NL},
    {QW_QTYPE_IQ2_XXS, QW_QTYPE_IQ4_NL}, {QW_QTYPE_IQ2_XS, QW_QTYPE_IQ4_NL},
    {QW_QTYPE_IQ2_S, QW_QTYPE_IQ4_NL},  {QW_QTYPE_IQ3_XXS, QW_QTYPE_IQ4_NL},
    {QW_QTYPE_IQ3_S, QW_QTYPE_IQ4_NL},  {QW_QTYPE_IQ4_XS, QW_QTYPE_IQ4_NL},
    {QW_QTYPE_Q2_0, QW_QTYPE_Q4_0},     {QW_QTYPE_Q2_K, QW_QTYPE_Q4_0},
    {QW_QTYPE_Q3_K, QW_QTYPE_Q4_0},     {QW_QTYPE_TQ1_0, QW_QTYPE_Q4_0},
    {QW_QTYPE_TQ2_0, QW_QTYPE_Q4_0},    {QW_QTYPE_Q4_K, QW_QTYPE_Q5_0},
    {QW_QTYPE_Q5_K, QW_QTYPE_Q5_1},     {QW_QTYPE_Q6_K, QW_QTYPE_Q8_0},
};

static qw_qtype fallback(qw_qtype type, int64_t ne0, char *note, size_t note_bytes) {
    const qw_qtype_info *info = qw_qtype_get(type);
    if (ne0 % info->block_elems == 0) return type;
    qw_qtype to = QW_QTYPE_F16; /* llama.cpp refuses types without a row here; F16 always fits */
    for (size_t i = 0; i < sizeof fallback_table / sizeof fallback_table[0]; i++) {
        if (fallback_table[i].from == type) to = fallback_table[i].to;
    }
    if (ne0 % qw_qtype_get(to)->block_elems != 0) to = QW_QTYPE_F16;
    snprintf(note, note_bytes, "rows of %lld are not a multiple of %u for %s: using %s",
             (long long)ne0, info->block_elems, info->name, qw_qtype_name(to));
    return to;
}

qw_qtype qw_type_rules_choose(qw_type_rules *rules, const char *name, int64_t ne0,
                              char *note, size_t note_bytes) {
    if (note_bytes) note[0] = '\0';
    const qw_qtype def = rules->ftype->default_type;
    const bool is_output = strcmp(name, "output.weight") == 0;
    const bool is_embd = strcmp(name, "token_embd.weight") == 0;
    if (is_embd && rules->embedding_type != QW_QTYPE_COUNT) return rules->embedding_type;
    if (is_output && rules->output_type != QW_QTYPE_COUNT) return rules->output_type;
    if (qw_qtype_get(def)->is_float) return def; /* float formats take no mix rules */

    qw_qtype type = def;
    if (is_output || (rules->tied_embeddings && is_embd)) {
        if (rules->output_type != QW_QTYPE_COUNT) {
            type = rules->output_type;
        } else if (ne0 % qw_qtype_get(def)->block_elems != 0) {
            type = QW_QTYPE_Q8_0;
        } else if (def != QW_QTYPE_Q8_0) {
            type = QW_QTYPE_Q6_K;
        }
    } else if (is_attn_v_like(name)) {
        rules->i_attention_wv++;
    } else if (contains(name, "ffn_down")) {
        rules->i_ffn_down++;
    }
    return fallback(type, ne0, note, note_bytes);
}
