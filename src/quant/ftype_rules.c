/* Per-tensor type rules: llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) as data.
 *
 * The rows below mirror llama_tensor_get_type_impl of the llama.cpp that llama-cpp-python 0.3.36
 * installs, checked against it tensor by tensor (tests/python/test_gguf_formats.py). A rule row is
 * (category, formats, stage, from-type, condition, condition) -> type. For one tensor the
 * interpreter takes the rows of its category whose format set holds the format, stage by stage
 * in order; within a stage the first row whose conditions hold (and whose from-type, if any, is
 * the type chosen so far) decides, and later stages refine that choice (the 70B and 8-expert
 * bumps of attn_v). Formats are named by their llama_ftype ids, conditions by the predicates of
 * `when`, which are the only code the rules need. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftype.h"

/* ---- format sets, by llama_ftype id ---------------------------------------------------------- */

enum { /* llama_ftype values (llama.h) */
    F_Q4_0 = 2, F_Q4_1 = 3, F_Q8_0 = 7, F_Q5_0 = 8, F_Q5_1 = 9, F_Q2_K = 10, F_Q3_K_S = 11,
    F_Q3_K_M = 12, F_Q3_K_L = 13, F_Q4_K_S = 14, F_Q4_K_M = 15, F_Q5_K_S = 16, F_Q5_K_M = 17,
    F_Q6_K = 18, F_IQ2_XXS = 19, F_IQ2_XS = 20, F_Q2_K_S = 21, F_IQ3_XS = 22, F_IQ3_XXS = 23,
    F_IQ1_S = 24, F_IQ4_NL = 25, F_IQ3_S = 26, F_IQ3_M = 27, F_IQ2_S = 28, F_IQ2_M = 29,
    F_IQ4_XS = 30, F_IQ1_M = 31,
};

#define F(id) (1ull << (id))
#define ANY (~0ull)
/* The very-low-bit formats, which llama.cpp gives their own branch of rules. */
#define IQ2_MIX (F(F_IQ2_XXS) | F(F_IQ2_XS) | F(F_IQ1_S) | F(F_IQ2_S) | F(F_IQ2_M) | F(F_IQ1_M))
#define NOT_IQ2_MIX (ANY & ~IQ2_MIX)

static bool format_in(uint64_t set, const qw_ftype_info *ft) {
    return ft->llama_ftype < 64 && (set & F(ft->llama_ftype)) != 0;
}

/* ---- categories ------------------------------------------------------------------------------ */

enum counter { NO_COUNTER = -1, C_ATTN_V = 0, C_FFN_DOWN = 1, C_FFN_GATE = 2, C_FFN_UP = 3 };

/* tensor_get_category: the first row that matches the name decides. */
static const struct {
    const char *pattern;
    bool exact; /* whole name, else substring */
    qw_tensor_category cat;
} category_rows[] = {
    {"output.weight", true, QW_CAT_OUTPUT},
    {"token_embd.weight", true, QW_CAT_TOKEN_EMBD},
    {"per_layer_token_embd.weight", true, QW_CAT_TOKEN_EMBD},
    /* llama.cpp has categories of their own for these two, but its attn_v rules are tested
     * first and cover all three, so its attn_qkv rule never fires */
    {"attn_qkv.weight", false, QW_CAT_ATTN_V},
    {"attn_kv_b.weight", false, QW_CAT_ATTN_V},
    {"attn_v.weight", false, QW_CAT_ATTN_V},
    {"attn_k.weight", false, QW_CAT_ATTN_K},
    {"attn_q.weight", false, QW_CAT_ATTN_Q},
    {"attn_output.weight", false, QW_CAT_ATTN_OUTPUT},
    {"ffn_up", false, QW_CAT_FFN_UP},
    {"ffn_gate", false, QW_CAT_FFN_GATE},
    {"ffn_down", false, QW_CAT_FFN_DOWN},
};

/* What each category counts, and whether its layer comes from the tensor's name in a MoE model
 * (llama.cpp's layer_info, which its very-low-bit branch does not call). */
static const struct {
    const char *name;
    int counter;
    uint64_t layer_by_name; /* formats for which a MoE tensor must be named blk.N. */
} category_info[QW_CAT_COUNT] = {
    [QW_CAT_OTHER] = {"other", NO_COUNTER, 0},
    [QW_CAT_OUTPUT] = {"output", NO_COUNTER, 0},
    [QW_CAT_TOKEN_EMBD] = {"token_embd", NO_COUNTER, 0},
    [QW_CAT_ATTN_V] = {"attn_v", C_ATTN_V, 0},
    [QW_CAT_ATTN_K] = {"attn_k", NO_COUNTER, 0},
    [QW_CAT_ATTN_Q] = {"attn_q", NO_COUNTER, 0},
    [QW_CAT_ATTN_OUTPUT] = {"attn_output", NO_COUNTER, 0},
    [QW_CAT_FFN_UP] = {"ffn_up", C_FFN_UP, NOT_IQ2_MIX},
    [QW_CAT_FFN_GATE] = {"ffn_gate", C_FFN_GATE, NOT_IQ2_MIX},
    [QW_CAT_FFN_DOWN] = {"ffn_down", C_FFN_DOWN, NOT_IQ2_MIX},
};

qw_tensor_category qw_tensor_category_of(const char *name) {
    for (size_t i = 0; i < sizeof category_rows / sizeof category_rows[0]; i++) {
        bool hit = category_rows[i].exact ? strcmp(name, category_rows[i].pattern) == 0
                                          : strstr(name, category_rows[i].pattern) != NULL;
        if (hit) return category_rows[i].cat;
    }
    return QW_CAT_OTHER;
}

const char *qw_tensor_category_name(qw_tensor_category cat) {
    return (unsigned)cat < QW_CAT_COUNT ? category_info[cat].name : "?";
}

/* ---- which tensors are quantized ------------------------------------------------------------- */

/* tensor_allows_quantization: a tensor is quantized when it has 2 or more dimensions, its name
 * ends in "weight", and no row below excludes it. */
static const struct {
    const char *pattern;
    bool exact;
    const char *arch; /* only for this architecture, or NULL for all */
} never_quantized[] = {
    {"_norm.weight", false, NULL},
    {"ffn_gate_inp.weight", false, NULL},
    {"ffn_gate_tid2eid.weight", false, NULL},
    {"altup", false, NULL},
    {"laurel", false, NULL},
    {"per_layer_model_proj", false, NULL},
    {"position_embd.weight", true, NULL},
    {"token_types.weight", true, NULL},
    {"ssm_conv1d", false, NULL},
    {"shortconv.conv.weight", false, NULL},
    {"indexer.k_proj.weight", false, NULL},
    {"indexer.q_proj.weight", false, NULL},
    {"time_mix_first.weight", false, NULL},
    {"time_mix_w0.weight", false, NULL},
    {"time_mix_w1.weight", false, NULL},
    {"time_mix_w2.weight", false, NULL},
    {"time_mix_v0.weight", false, NULL},
    {"time_mix_v1.weight", false, NULL},
    {"time_mix_v2.weight", false, NULL},
    {"time_mix_a0.weight", false, NULL},
    {"time_mix_a1.weight", false, NULL},
    {"time_mix_a2.weight", false, NULL},
    {"time_mix_g1.weight", false, NULL},
    {"time_mix_g2.weight", false, NULL},
    {"time_mix_decay_w1.weight", false, NULL},
    {"time_mix_decay_w2.weight", false, NULL},
    {"time_mix_lerp_fused.weight", false, NULL},
    {"attn_rel_b.weight", false, NULL},
    {".position_embd", false, NULL},
    {"sam.pos_embd", false, NULL},
    {"sam.neck.", false, NULL},
    {"sam.net_", false, NULL},
    {".rel_pos", false, NULL},
    {".patch_embd", false, NULL},
    {".patch_merger", false, NULL},
    {"a.rvq.codebook", false, NULL},
    {"mm.a.code_embd", false, NULL},
    /* one architecture keeps these small tensors as they are */
    {"hc_", false, "glm5-next"},
    {"indexer.attn_q_b", false, "glm5-next"},
    {"indexer.attn_k", false, "glm5-next"},
    {"indexer.proj", false, "glm5-next"},
    {"indexer_compressor_gate", false, "glm5-next"},
    {"indexer_compressor_ape", false, "glm5-next"},
    {"ssm_f_a.weight", false, "glm5-next"},
    {"ssm_f_b.weight", false, "glm5-next"},
    {"ssm_g_a.weight", false, "glm5-next"},
    {"ssm_g_b.weight", false, "glm5-next"},
    {"ssm_beta.weight", false, "glm5-next"},
    {"attn_kv_a_mqa.weight", false, "glm5-next"},
    {"attn_k_b.weight", false, "glm5-next"},
    {"attn_v_b.weight", false, "glm5-next"},
};

bool qw_tensor_allows_quantization(const qw_type_rules *rules, const qw_tensor_desc *t) {
    if (t->n_dims < 2 || !qw_str_ends_with(t->name, "weight")) return false;
    if (!rules->options.quantize_output && strcmp(t->name, "output.weight") == 0) return false;
    const char *arch = rules->facts.arch ? rules->facts.arch : "";
    for (size_t i = 0; i < sizeof never_quantized / sizeof never_quantized[0]; i++) {
        if (never_quantized[i].arch && strcmp(never_quantized[i].arch, arch) != 0) continue;
        bool hit = never_quantized[i].exact ? strcmp(t->name, never_quantized[i].pattern) == 0
                                            : strstr(t->name, never_quantized[i].pattern) != NULL;
        if (hit) return false;
    }
    return true;
}

bool qw_tensor_keeps_f32(const char *name, int n_dims) {
    /* routers stay f32, Qwen2-MoE's shared-expert gate (a [1, n_embd] matrix) included */
    return n_dims < 2 || !qw_str_ends_with(name, ".weight") || strstr(name, "_norm.weight") ||
           strstr(name, "ffn_gate_inp.weight") || strstr(name, "ffn_gate_inp_shexp.weight");
}

/* ---- model facts ----------------------------------------------------------------------------- */

/* The architectures and depths llama.cpp's hyperparameter loader calls LLM_TYPE_70B, the only
 * model size its quantization rules look at (found by loading headers of every depth from 40 to
 * 160 for every architecture llama-cpp-python 0.3.36 loads). */
static const struct {
    const char *arch;
    int64_t n_layer;
    bool needs_gqa; /* only when keys are shared (n_head != n_head_kv) */
} size_70b[] = {
    {"llama", 80, true}, {"llama-embed", 80, true}, {"qwen2", 80, false},
    {"deci", 80, false}, {"olmo", 80, false},       {"jais2", 68, false},
};

static bool model_is_70b(const qw_model_facts *f) {
    if (!f->arch) return false;
    for (size_t i = 0; i < sizeof size_70b / sizeof size_70b[0]; i++) {
        if (strcmp(size_70b[i].arch, f->arch) == 0 && size_70b[i].n_layer == f->n_layer &&
            (!size_70b[i].needs_gqa || f->n_head != f->n_head_kv)) {
            return true;
        }
    }
    return false;
}

void qw_type_rules_init(qw_type_rules *rules, const qw_ftype_info *ft, const qw_model_facts *facts,
                        const qw_type_options *options) {
    memset(rules, 0, sizeof *rules);
    rules->ftype = ft;
    rules->facts = *facts;
    rules->options = *options;
    rules->tied_embeddings = true;
    rules->is_70b = model_is_70b(facts);
}

void qw_type_rules_count(qw_type_rules *rules, const char *name) {
    qw_tensor_category cat = qw_tensor_category_of(name);
    if (cat == QW_CAT_ATTN_V) rules->n_attention_wv++;
    if (cat == QW_CAT_OUTPUT) rules->tied_embeddings = false;
}

/* ---- predicates ------------------------------------------------------------------------------ */

typedef enum when {
    ALWAYS = 0,
    FALCON,          /* the architecture is falcon */
    NOT_FALCON,
    ROW_MISFIT,      /* the row does not fill whole blocks of the type chosen so far */
    GQA_GE_4,        /* n_head / n_head_kv >= 4 */
    GQA_OR_EXPERTS_GE_4,
    EXPERTS_8,       /* n_expert == 8 */
    SIZE_70B,
    IMATRIX,         /* an importance matrix was given */
    NO_IMATRIX,
    WV_LT_2,         /* attn_v-like tensors visited so far < 2 */
    WV_LT_4,
    WV_MORE_BITS,    /* use_more_bits(attn_v visits, attn_v tensors) */
    COUNT_LT_N8,     /* this category's visits so far < n_layer / 8 (never from the name) */
    LAYER_LT_N8,     /* the layer < n_layer / 8 */
    LAYER_LT_N16,
    LAYER_MORE_BITS, /* use_more_bits(layer, n_layer) */
    LAYER_MIDDLE,    /* n_layer / 8 <= layer < 7 * n_layer / 8 */
    EXPERTS_8_MORE_BITS,
} when;

typedef struct tensor_facts {
    const qw_type_rules *rules;
    int64_t ne0;
    qw_qtype current;
    int visits; /* this category's counter before this tensor */
    int layer;  /* the layer (layer_info): the counter, or blk.N in a MoE model */
} tensor_facts;

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third between. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool holds(when w, const tensor_facts *f) {
    const qw_type_rules *r = f->rules;
    const qw_model_facts *m = &r->facts;
    int n_layer = (int)m->n_layer;
    int64_t gqa = m->n_head_kv > 0 ? m->n_head / m->n_head_kv : 0;
    bool falcon = m->arch && strcmp(m->arch, "falcon") == 0;
    switch (w) { /* the named conditions of the rules; each is one line of llama.cpp */
    case ALWAYS: return true;
    case FALCON: return falcon;
    case NOT_FALCON: return !falcon;
    case ROW_MISFIT: return f->ne0 % qw_qtype_get(f->current)->block_elems != 0;
    case GQA_GE_4: return gqa >= 4;
    case GQA_OR_EXPERTS_GE_4: return gqa >= 4 || m->n_expert >= 4;
    case EXPERTS_8: return m->n_expert == 8;
    case SIZE_70B: return r->is_70b;
    case IMATRIX: return r->options.has_imatrix;
    case NO_IMATRIX: return !r->options.has_imatrix;
    case WV_LT_2: return r->counters[C_ATTN_V] < 2;
    case WV_LT_4: return r->counters[C_ATTN_V] < 4;
    case WV_MORE_BITS: return use_more_bits(r->counters[C_ATTN_V], r->n_attention_wv);
    case COUNT_LT_N8: return f->visits < n_layer / 8;
    case LAYER_LT_N8: return f->layer < n_layer / 8;
    case LAYER_LT_N16: return f->layer < n_layer / 16;
    case LAYER_MORE_BITS: return use_more_bits(f->layer, n_layer);
    case LAYER_MIDDLE: return f->layer >= n_layer / 8 && f->layer < 7 * n_layer / 8;
    case EXPERTS_8_MORE_BITS: return m->n_expert == 8 && use_more_bits(f->layer, n_layer);
    }
    return false;
}

/* ---- the rules ------------------------------------------------------------------------------- */

#define KEEP QW_QTYPE_COUNT /* as a target: keep the type chosen so far and end the stage */
#define ANY_TYPE QW_QTYPE_COUNT

typedef struct rule {
    qw_tensor_category cat; /* QW_CAT_OUTPUT also stands for a tied token_embd */
    uint64_t formats;
    int stage;
    qw_qtype from; /* the type chosen so far must be this one, or ANY_TYPE */
    when w1, w2;   /* both must hold */
    qw_qtype to;
} rule;

#define T(x) QW_QTYPE_##x
#define R(cat, formats, w1, w2, to) {QW_CAT_##cat, formats, 0, ANY_TYPE, w1, w2, T(to)}

static const rule rules_table[] = {
    /* output.weight, and token_embd when the embeddings are tied */
    R(OUTPUT, ANY, FALCON, ALWAYS, Q8_0),
    R(OUTPUT, ANY, ROW_MISFIT, ALWAYS, Q8_0),
    R(OUTPUT, F(F_IQ2_XXS) | F(F_IQ2_XS) | F(F_IQ3_XXS) | F(F_IQ1_S) | F(F_IQ2_S) | F(F_IQ2_M) |
                  F(F_IQ1_M), ALWAYS, ALWAYS, Q5_K),
    {QW_CAT_OUTPUT, ANY, 0, T(Q8_0), ALWAYS, ALWAYS, T(Q8_0)},
    R(OUTPUT, ANY, ALWAYS, ALWAYS, Q6_K),

    /* token_embd when it is not tied */
    R(TOKEN_EMBD, F(F_IQ2_XXS) | F(F_IQ2_XS) | F(F_IQ1_S) | F(F_IQ1_M), ALWAYS, ALWAYS, Q2_K),
    R(TOKEN_EMBD, F(F_IQ2_S) | F(F_IQ2_M) | F(F_IQ3_XXS), ALWAYS, ALWAYS, IQ3_S),

    /* the very-low-bit formats */
    R(ATTN_V, IQ2_MIX, GQA_OR_EXPERTS_GE_4, ALWAYS, Q4_K),
    R(ATTN_V, F(F_IQ2_S) | F(F_IQ2_M), ALWAYS, ALWAYS, IQ3_S),
    R(ATTN_V, IQ2_MIX, ALWAYS, ALWAYS, Q2_K),
    R(ATTN_K, IQ2_MIX, EXPERTS_8, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_IQ2_S) | F(F_IQ2_M), COUNT_LT_N8, ALWAYS, IQ3_S),
    R(FFN_DOWN, IQ2_MIX, COUNT_LT_N8, ALWAYS, Q2_K),
    R(ATTN_OUTPUT, IQ2_MIX, EXPERTS_8, ALWAYS, Q5_K),
    R(ATTN_OUTPUT, F(F_IQ1_S) | F(F_IQ1_M), ALWAYS, ALWAYS, IQ2_XXS),
    R(ATTN_OUTPUT, F(F_IQ2_S) | F(F_IQ2_M), ALWAYS, ALWAYS, IQ3_S),

    /* attn_v (and attn_qkv, attn_kv_b) */
    R(ATTN_V, F(F_Q2_K), GQA_GE_4, ALWAYS, Q4_K),
    R(ATTN_V, F(F_Q2_K), ALWAYS, ALWAYS, Q3_K),
    R(ATTN_V, F(F_Q2_K_S), GQA_GE_4, ALWAYS, Q4_K),
    R(ATTN_V, F(F_IQ3_XXS), GQA_GE_4, ALWAYS, Q4_K),
    R(ATTN_V, F(F_IQ3_XXS), NO_IMATRIX, ALWAYS, IQ3_S),
    R(ATTN_V, F(F_IQ3_XXS), ALWAYS, ALWAYS, IQ3_XXS),
    R(ATTN_V, F(F_IQ3_XS) | F(F_IQ3_S), GQA_GE_4, ALWAYS, Q4_K),
    R(ATTN_V, F(F_IQ3_M), ALWAYS, ALWAYS, Q4_K),
    R(ATTN_V, F(F_Q3_K_M), WV_LT_2, ALWAYS, Q5_K),
    R(ATTN_V, F(F_Q3_K_M), ALWAYS, ALWAYS, Q4_K),
    R(ATTN_V, F(F_Q3_K_L), ALWAYS, ALWAYS, Q5_K),
    R(ATTN_V, F(F_IQ4_NL) | F(F_IQ4_XS), GQA_GE_4, ALWAYS, Q5_K),
    R(ATTN_V, F(F_Q4_K_M) | F(F_Q5_K_M), WV_MORE_BITS, ALWAYS, Q6_K),
    R(ATTN_V, F(F_Q4_K_S), WV_LT_4, ALWAYS, Q5_K),
    /* then: 70B models share each attn_v among 8 heads, so it is small and gets more bits */
    {QW_CAT_ATTN_V, NOT_IQ2_MIX, 1, T(Q3_K), SIZE_70B, ALWAYS, T(Q5_K)},
    {QW_CAT_ATTN_V, NOT_IQ2_MIX, 1, T(Q4_K), SIZE_70B, ALWAYS, T(Q5_K)},
    /* then: 8 experts */
    {QW_CAT_ATTN_V, NOT_IQ2_MIX, 2, ANY_TYPE, EXPERTS_8, ALWAYS, T(Q8_0)},

    /* attn_k */
    R(ATTN_K, NOT_IQ2_MIX, EXPERTS_8, ALWAYS, Q8_0),
    R(ATTN_K, F(F_IQ3_XS), ALWAYS, ALWAYS, IQ3_XXS),
    R(ATTN_K, F(F_IQ3_XXS), ALWAYS, ALWAYS, IQ2_S),

    /* attn_q */
    R(ATTN_Q, F(F_IQ3_XS), ALWAYS, ALWAYS, IQ3_XXS),
    R(ATTN_Q, F(F_IQ3_XXS), ALWAYS, ALWAYS, IQ2_S),

    /* ffn_down */
    R(FFN_DOWN, F(F_Q2_K), ALWAYS, ALWAYS, Q3_K),
    R(FFN_DOWN, F(F_Q2_K_S), LAYER_LT_N8, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_IQ3_XXS), NO_IMATRIX, LAYER_LT_N8, Q4_K),
    R(FFN_DOWN, F(F_IQ3_XXS), NO_IMATRIX, ALWAYS, Q3_K),
    R(FFN_DOWN, F(F_Q3_K_M), LAYER_LT_N16, ALWAYS, Q5_K),
    R(FFN_DOWN, F(F_Q3_K_M), NOT_FALCON, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_Q3_K_M), LAYER_MORE_BITS, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_IQ3_M), LAYER_LT_N8, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_IQ3_M), EXPERTS_8_MORE_BITS, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_Q3_K_L), FALCON, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_Q3_K_L), ALWAYS, ALWAYS, Q5_K),
    R(FFN_DOWN, F(F_Q4_K_M), FALCON, LAYER_LT_N16, Q6_K),
    R(FFN_DOWN, F(F_Q4_K_M), FALCON, LAYER_MORE_BITS, Q5_K),
    R(FFN_DOWN, F(F_Q4_K_M), FALCON, ALWAYS, Q4_K),
    R(FFN_DOWN, F(F_Q4_K_M), LAYER_MORE_BITS, ALWAYS, Q6_K),
    R(FFN_DOWN, F(F_IQ4_NL) | F(F_IQ4_XS), LAYER_LT_N8, NO_IMATRIX, Q5_K),
    R(FFN_DOWN, F(F_Q5_K_M), LAYER_MORE_BITS, ALWAYS, Q6_K),
    R(FFN_DOWN, F(F_Q4_K_S), NOT_FALCON, LAYER_LT_N8, Q5_K),
    R(FFN_DOWN, F(F_Q4_0), IMATRIX, LAYER_LT_N8, Q4_1), /* with an imatrix only: see llama.cpp */
    R(FFN_DOWN, F(F_Q5_0), IMATRIX, LAYER_LT_N8, Q5_1),

    /* attn_output */
    R(ATTN_OUTPUT, F(F_Q2_K) | F(F_IQ3_XS) | F(F_IQ3_XXS) | F(F_Q3_K_S) | F(F_Q3_K_M) |
                       F(F_IQ4_NL) | F(F_Q4_K_S) | F(F_Q4_K_M) | F(F_IQ3_S) | F(F_IQ3_M) |
                       F(F_IQ4_XS), NOT_FALCON, EXPERTS_8, Q5_K),
    {QW_CAT_ATTN_OUTPUT, NOT_IQ2_MIX, 0, ANY_TYPE, NOT_FALCON, EXPERTS_8, KEEP},
    R(ATTN_OUTPUT, F(F_Q2_K), NOT_FALCON, ALWAYS, Q3_K),
    R(ATTN_OUTPUT, F(F_IQ3_XXS), NOT_FALCON, ALWAYS, IQ3_S),
    R(ATTN_OUTPUT, F(F_Q3_K_M), NOT_FALCON, ALWAYS, Q4_K),
    R(ATTN_OUTPUT, F(F_Q3_K_L), NOT_FALCON, ALWAYS, Q5_K),
    R(ATTN_OUTPUT, F(F_IQ3_M), NOT_FALCON, ALWAYS, Q4_K),
    R(ATTN_OUTPUT, F(F_Q3_K_L), FALCON, ALWAYS, Q4_K),

    /* ffn_gate, ffn_up */
    R(FFN_GATE, F(F_IQ3_XS), LAYER_MIDDLE, ALWAYS, IQ3_XXS),
    R(FFN_UP, F(F_IQ3_XS), LAYER_MIDDLE, ALWAYS, IQ3_XXS),
};

#define N_RULES (sizeof rules_table / sizeof rules_table[0])
#define N_STAGES 3

/* The mix rules for one tensor: stage by stage, the first matching row of each stage. */
static qw_qtype apply_rules(const qw_ftype_info *ft, qw_tensor_category cat, tensor_facts *f) {
    for (int stage = 0; stage < N_STAGES; stage++) {
        for (size_t i = 0; i < N_RULES; i++) {
            const rule *r = &rules_table[i];
            if (r->cat != cat || r->stage != stage || !format_in(r->formats, ft)) continue;
            if (r->from != ANY_TYPE && r->from != f->current) continue;
            if (!holds(r->w1, f) || !holds(r->w2, f)) continue;
            if (r->to != KEEP) f->current = r->to;
            break;
        }
    }
    return f->current;
}

/* ---- fallbacks and importance ---------------------------------------------------------------- */

/* tensor_type_fallback: llama.cpp's substitute when a row does not fill whole blocks of the
 * chosen type; when the substitute does not fit either, f16. The 32-element types go straight to
 * f16 (a row they do not fit has a length that is not a multiple of 32). A type without a row
 * here is an error in llama.cpp. */
static const struct {
    qw_qtype from, to;
} fallback_table[] = {
    {T(IQ1_S), T(IQ4_NL)}, {T(IQ1_M), T(IQ4_NL)}, {T(IQ2_XXS), T(IQ4_NL)}, {T(IQ2_XS), T(IQ4_NL)},
    {T(IQ2_S), T(IQ4_NL)}, {T(IQ3_XXS), T(IQ4_NL)}, {T(IQ3_S), T(IQ4_NL)}, {T(IQ4_XS), T(IQ4_NL)},
    {T(Q2_0), T(Q4_0)},    {T(Q2_K), T(Q4_0)},    {T(Q3_K), T(Q4_0)},      {T(TQ1_0), T(Q4_0)},
    {T(TQ2_0), T(Q4_0)},   {T(Q4_K), T(Q5_0)},    {T(Q5_K), T(Q5_1)},      {T(Q6_K), T(Q8_0)},
    {T(Q4_0), T(F16)},     {T(Q4_1), T(F16)},     {T(Q5_0), T(F16)},       {T(Q5_1), T(F16)},
    {T(Q8_0), T(F16)},     {T(IQ4_NL), T(F16)},   {T(MXFP4), T(F16)},
};

#define N_FALLBACKS (sizeof fallback_table / sizeof fallback_table[0])

static bool fallback_of(qw_qtype type, qw_qtype *out) {
    for (size_t i = 0; i < N_FALLBACKS; i++) {
        if (fallback_table[i].from == type) {
            *out = fallback_table[i].to;
            return true;
        }
    }
    return false;
}

/* Types llama.cpp refuses to produce without an importance matrix (tensor_requires_imatrix),
 * except for token_embd and output.weight. */
static const qw_qtype imatrix_types[] = {T(IQ3_XXS), T(IQ2_XXS), T(IQ2_XS), T(IQ2_S), T(IQ1_M),
                                         T(IQ1_S)};

static bool requires_imatrix(const qw_ftype_info *ft, const char *name, qw_qtype type) {
    qw_tensor_category cat = qw_tensor_category_of(name);
    if (cat == QW_CAT_OUTPUT || cat == QW_CAT_TOKEN_EMBD) return false;
    if (ft->imatrix_type != QW_QTYPE_COUNT && type == ft->imatrix_type) return true;
    for (size_t i = 0; i < sizeof imatrix_types / sizeof imatrix_types[0]; i++) {
        if (imatrix_types[i] == type) return true;
    }
    return false;
}

/* ---- choosing -------------------------------------------------------------------------------- */

/* layer_info: in a MoE model the layer is the N of "blk.N." (experts are not stored in order). */
static qw_status layer_of(const qw_type_rules *r, const char *name, int visits, int *layer,
                          qw_error *err) {
    *layer = visits;
    if (r->facts.n_expert <= 1) return QW_OK;
    char *end;
    long n = strncmp(name, "blk.", 4) == 0 ? strtol(name + 4, &end, 10) : -1;
    if (n < 0 || (n == 0 && end == name + 4)) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, name, -1,
                          "tensor \"%s\": cannot tell its layer (a MoE model's feed-forward "
                          "tensors must be named blk.N.*)", name);
    }
    if (n >= r->facts.n_layer) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "tensor \"%s\": layer %ld is not below the model's %lld layers", name, n,
                          (long long)r->facts.n_layer);
    }
    *layer = (int)n;
    return QW_OK;
}

/* `option` names the option the type came from, or is NULL. */
static qw_status fall_back(const qw_tensor_desc *t, qw_type_choice *out, const char *option,
                           qw_error *err) {
    const qw_qtype_info *info = qw_qtype_get(out->type);
    if (t->ne[0] % info->block_elems == 0) return QW_OK;
    qw_qtype to;
    if (!fallback_of(out->type, &to)) {
        if (option) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                              "option \"%s\" gives tensor \"%s\" type %s, but its rows of %lld "
                              "elements do not fill %s's blocks of %u and llama.cpp has no "
                              "fallback for %s", option, t->name, info->name, (long long)t->ne[0],
                              info->name, info->block_elems, info->name);
        }
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                          "tensor \"%s\" has rows of %lld elements, which do not fill blocks of "
                          "%u for %s, and llama.cpp has no fallback type for %s (choose another "
                          "format, or give this tensor a type with the tensor_type option)",
                          t->name, (long long)t->ne[0], info->block_elems, info->name,
                          info->name);
    }
    if (t->ne[0] % qw_qtype_get(to)->block_elems != 0) to = QW_QTYPE_F16;
    snprintf(out->note, sizeof out->note, "rows of %lld are not a multiple of %u for %s: using %s",
             (long long)t->ne[0], info->block_elems, info->name, qw_qtype_name(to));
    out->type = to;
    out->fell_back = true;
    return QW_OK;
}

/* An option's type goes in as given, without fallback: it must fit the rows. */
static qw_status check_option_fits(const qw_tensor_desc *t, qw_qtype type, const char *option,
                                   qw_error *err) {
    const qw_qtype_info *info = qw_qtype_get(type);
    if (t->ne[0] % info->block_elems == 0) return QW_OK;
    return qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                      "option \"%s\" = %s does not fit tensor \"%s\": its rows of %lld elements "
                      "are not a multiple of %s's block of %u", option, info->name, t->name,
                      (long long)t->ne[0], info->name, info->block_elems);
}

qw_status qw_type_rules_choose(qw_type_rules *rules, const qw_tensor_desc *t, qw_qtype manual,
                               qw_type_choice *out, qw_error *err) {
    memset(out, 0, sizeof *out);
    out->type = t->type;
    out->source = QW_TYPE_KEPT;
    if (!qw_tensor_allows_quantization(rules, t)) return QW_OK;

    const qw_ftype_info *ft = rules->ftype;
    const qw_type_options *opt = &rules->options;
    qw_tensor_category cat = qw_tensor_category_of(t->name);
    if (cat == QW_CAT_TOKEN_EMBD && opt->embedding_type != QW_QTYPE_COUNT) {
        out->type = opt->embedding_type;
        out->source = QW_TYPE_EMBD_OPTION;
        QW_TRY(check_option_fits(t, out->type, "token_embedding_type", err));
    } else if (cat == QW_CAT_OUTPUT && opt->output_type != QW_QTYPE_COUNT) {
        out->type = opt->output_type;
        out->source = QW_TYPE_OUTPUT_OPTION;
        QW_TRY(check_option_fits(t, out->type, "output_tensor_type", err));
    } else {
        out->type = ft->default_type;
        out->source = QW_TYPE_FORMAT;
        if (!qw_qtype_get(ft->default_type)->is_float) {
            const char *option = NULL;
            if (manual != QW_QTYPE_COUNT) {
                out->type = manual;
                out->source = QW_TYPE_OVERRIDE;
                option = "tensor_type";
            } else if (!opt->pure) {
                const int counter = category_info[cat].counter;
                tensor_facts f = {rules, t->ne[0], ft->default_type, 0, 0};
                if (counter != NO_COUNTER) {
                    f.visits = rules->counters[counter];
                    f.layer = f.visits;
                    if (format_in(category_info[cat].layer_by_name, ft)) {
                        QW_TRY(layer_of(rules, t->name, f.visits, &f.layer, err));
                    }
                }
                qw_tensor_category rule_cat =
                    cat == QW_CAT_TOKEN_EMBD && rules->tied_embeddings ? QW_CAT_OUTPUT : cat;
                if (rule_cat == QW_CAT_OUTPUT && opt->output_type != QW_QTYPE_COUNT) {
                    out->type = opt->output_type; /* a tied token_embd: the option, then fallback */
                    out->source = QW_TYPE_OUTPUT_OPTION;
                    option = "output_tensor_type";
                } else {
                    out->type = apply_rules(ft, rule_cat, &f);
                }
                if (counter != NO_COUNTER) rules->counters[counter]++;
            }
            QW_TRY(fall_back(t, out, option, err));
        }
    }
    out->requires_imatrix = requires_imatrix(ft, t->name, out->type);
    return QW_OK;
}

/* ---- what a format can produce --------------------------------------------------------------- */

void qw_ftype_types(const qw_ftype_info *ft, bool types[QW_QTYPE_COUNT]) {
    memset(types, 0, QW_QTYPE_COUNT * sizeof types[0]);
    types[ft->default_type] = true;
    if (qw_qtype_get(ft->default_type)->is_float) return;
    for (size_t i = 0; i < N_RULES; i++) {
        if (format_in(rules_table[i].formats, ft) && rules_table[i].to != KEEP) {
            types[rules_table[i].to] = true;
        }
    }
    /* fallbacks, to a fixed point (chains are short), and F16 for rows of odd lengths */
    for (size_t pass = 0; pass < N_FALLBACKS; pass++) {
        for (size_t i = 0; i < N_FALLBACKS; i++) {
            if (types[fallback_table[i].from]) types[fallback_table[i].to] = true;
        }
    }
    types[QW_QTYPE_F16] = true;
}
