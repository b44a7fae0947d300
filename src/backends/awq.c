/*
 * The AWQ backend: activation-aware int4 (W4A16) for vLLM and transformers, in the
 * compressed-tensors "pack-quantized" format (research/awq.md §2-3).
 *
 * One run: tokenize the calibration text, embed it, then decoder block by decoder block: load
 * the block's weights, search and fold AWQ's scales (awq_search.c), quantize its linear layers
 * to int4 groups and write them, then run the scaled, unquantized block to get the next block's
 * input, as llm-compressor's sequential pipeline does. Memory: one block's weights in f32 and
 * the calibration activations, whatever the model's size.
 *
 * Output, under a temporary directory renamed into place when complete:
 *   config.json (the source's, with quantization_config), model.safetensors or
 *   model-0000k-of-0000n.safetensors + model.safetensors.index.json, tokenizer and generation
 *   files. Per quantized linear "<module>": weight_packed I32 [out, in/8], weight_scale [out,
 *   in/group] in the model's dtype, weight_zero_point I32 [out/8, in/group] (asymmetric only),
 *   weight_shape I64 [2]. Everything else keeps its name, in the model's dtype. With
 *   layout=gemm, AutoAWQ's layout instead (put_gemm), everything in float16.
 */
#include <errno.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "awq_clip.h"
#include "awq_search.h"
#include "backend.h"
#include "file.h"
#include "forward.h"
#include "half.h"
#include "hub.h"
#include "int4.h"
#include "json.h"
#include "safetensors.h"
#include "tokenizer.h"

/* The compressed-tensors release whose format this writes (checked by tests/python/test_awq.py). */
#define CT_FORMAT_VERSION "0.20.1"
/* transformers' default shard size */
#define SHARD_BYTES ((uint64_t)5 << 30)
#define CALIB_SEED 42u

static const char *const FORMAT_NAMES[] = {"int4"};
static const char *const FORMAT_DESCRIPTIONS[] = {
    "4-bit weights, 16-bit activations (W4A16), groups of 128, activation-aware scaling; "
    "compressed-tensors pack-quantized for vLLM and transformers."};

static size_t format_count(void) { return 1; }
static const char *format_name(size_t i) { return i < 1 ? FORMAT_NAMES[i] : NULL; }
static const char *format_description(size_t i) { return i < 1 ? FORMAT_DESCRIPTIONS[i] : NULL; }
static int format_find(const char *name) {
    return name && (qw_strcasecmp(name, "int4") == 0 || qw_strcasecmp(name, "w4a16") == 0) ? 0
                                                                                          : -1;
}

static const qw_option_spec awq_options[] = {
    {"calibration_dataset", QW_OPTION_STRING, QW_SCOPE_INIT,
     "Calibration text: a Hub dataset (repo or repo:subset, default wikitext:wikitext-2-raw-v1), "
     "a local .txt/.json/.jsonl file, or builtin (qwodel's own text, also used when the default "
     "cannot be read offline)."},
    {"calibration_split", QW_OPTION_STRING, QW_SCOPE_INIT, "Dataset split (default: train)."},
    {"batch_size", QW_OPTION_INT, QW_SCOPE_BOTH,
     "Sequences per forward call when passing activations on (default: by free memory)."},
    {"seq_length", QW_OPTION_INT, QW_SCOPE_INIT,
     "Tokens per calibration sequence (default: by free memory)."},
    {"seq_len", QW_OPTION_INT, QW_SCOPE_RUN, "Overrides seq_length for one run."},
    {"num_samples", QW_OPTION_INT, QW_SCOPE_BOTH,
     "Calibration sequences (default: by free memory)."},
    {"ignore", QW_OPTION_LIST, QW_SCOPE_BOTH,
     "Linear layers left unquantized: exact module names or re:PATTERN (default: lm_head)."},
    {"group_size", QW_OPTION_INT, QW_SCOPE_BOTH,
     "Input columns per scale (default 128; must divide every quantized layer's inputs)."},
    {"symmetric", QW_OPTION_BOOL, QW_SCOPE_BOTH,
     "Symmetric int4 without zero points (W4A16) instead of asymmetric (W4A16_ASYM, default)."},
    {"duo_scaling", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "Weight statistic in the scale search: true (default), false or both."},
    {"layout", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "Checkpoint layout: pack-quantized (compressed-tensors, default) or gemm (AutoAWQ's GEMM "
     "layout: qweight/qzeros/scales, float16, quant_method awq)."},
    {"clip", QW_OPTION_BOOL, QW_SCOPE_BOTH,
     "The original AWQ's weight-clipping search after the scale search (AutoAWQ's auto_clip; "
     "default false): slower, usually lower error."},
    {"threads", QW_OPTION_INT, QW_SCOPE_BOTH, "Threads for the forward pass (default: all)."},
};

/* ---- defaults by free memory ----------------------------------------------------------------
 * The spec picks calibration sizes by free GPU memory; on the CPU, free RAM decides, and the
 * sizes are smaller because every candidate scale re-runs the block's parts on every token. */
static const struct {
    double min_free_gib;
    int64_t batch_size, seq_len, num_samples;
} AUTO_CONFIG[] = {
    {0, 1, 256, 16}, {4, 1, 512, 32}, {8, 2, 512, 64}, {16, 4, 512, 128}, {32, 8, 1024, 128},
};

static double free_memory_gib(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    }
    fclose(f);
    return kib / (1024.0 * 1024.0);
}

/* ---- settings ------------------------------------------------------------------------------- */

typedef struct awq_settings {
    const char *dataset, *split, *token;
    int64_t batch_size, seq_len, num_samples;
    qw_awq_params params;
    int threads;
    bool clip; /* the weight-clipping search (awq_clip.h) */
    bool gemm; /* AutoAWQ's GEMM layout instead of compressed-tensors' pack-quantized */
    char **ignore; /* exact names and re: patterns */
    size_t n_ignore;
    pcre2_code **ignore_re; /* compiled, NULL for exact names */
} awq_settings;

static void settings_free(awq_settings *s) {
    for (size_t i = 0; i < s->n_ignore; i++) {
        qw_free(s->ignore[i]);
        if (s->ignore_re) pcre2_code_free(s->ignore_re[i]);
    }
    qw_free(s->ignore);
    qw_free(s->ignore_re);
    memset(s, 0, sizeof *s);
}

static qw_status parse_ignore(const char *list, awq_settings *s, qw_error *err) {
    const char *text = list ? list : "lm_head";
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    s->ignore = qw_calloc(cap, sizeof *s->ignore);
    s->ignore_re = qw_calloc(cap, sizeof *s->ignore_re);
    if (!s->ignore || !s->ignore_re) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (const char *p = text; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' ')) p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if (len) {
            char *item = qw_strndup(p, len);
            if (!item) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            s->ignore[s->n_ignore] = item;
            if (strncmp(item, "re:", 3) == 0) {
                int code;
                PCRE2_SIZE at;
                s->ignore_re[s->n_ignore] = pcre2_compile((PCRE2_SPTR)(item + 3),
                                                          PCRE2_ZERO_TERMINATED, 0, &code, &at,
                                                          NULL);
                if (!s->ignore_re[s->n_ignore]) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(code, msg, sizeof msg);
                    s->n_ignore++;
                    return qw_fail_at(err, QW_ERR_BAD_OPTION, "ignore", -1,
                                      "ignore: pattern \"%s\" does not compile: %s at %zu",
                                      item + 3, (const char *)msg, (size_t)at);
                }
            }
            s->n_ignore++;
        }
        p = end ? end + 1 : p + strlen(p);
    }
    return QW_OK;
}

/* llm-compressor's rule: exact module names, or re: patterns matched from the start */
static bool is_ignored(const awq_settings *s, const char *module) {
    for (size_t i = 0; i < s->n_ignore; i++) {
        if (!s->ignore_re[i]) {
            if (strcmp(s->ignore[i], module) == 0) return true;
            continue;
        }
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(s->ignore_re[i], NULL);
        int rc = md ? pcre2_match(s->ignore_re[i], (PCRE2_SPTR)module, PCRE2_ZERO_TERMINATED, 0,
                                  PCRE2_ANCHORED, md, NULL)
                    : -1;
        pcre2_match_data_free(md);
        if (rc >= 0) return true;
    }
    return false;
}

static qw_status parse_settings(const qw_run_context *ctx, qw_qtype dtype, awq_settings *s,
                                qw_error *err) {
    const qw_options *o = ctx->options;
    memset(s, 0, sizeof *s);
    s->dataset = qw_options_get(o, "calibration_dataset");
    if (!s->dataset) s->dataset = QW_CALIB_DEFAULT_DATASET;
    s->split = qw_options_get(o, "calibration_split");
    s->token = qw_options_get(o, "token");
    const double free_gib = free_memory_gib();
    size_t row = 0;
    for (size_t i = 0; i < sizeof AUTO_CONFIG / sizeof AUTO_CONFIG[0]; i++) {
        if (free_gib >= AUTO_CONFIG[i].min_free_gib) row = i;
    }
    s->batch_size = qw_options_get_int(o, "batch_size", AUTO_CONFIG[row].batch_size);
    s->seq_len = qw_options_get_int(o, "seq_len",
                                    qw_options_get_int(o, "seq_length", AUTO_CONFIG[row].seq_len));
    s->num_samples = qw_options_get_int(o, "num_samples", AUTO_CONFIG[row].num_samples);
    static const struct {
        const char *name;
        int64_t min, max;
    } LIMITS[] = {{"batch_size", 1, 4096}, {"seq_len", 2, 1 << 20}, {"num_samples", 1, 1 << 20}};
    const int64_t values[] = {s->batch_size, s->seq_len, s->num_samples};
    for (size_t i = 0; i < 3; i++) {
        if (values[i] < LIMITS[i].min || values[i] > LIMITS[i].max) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, LIMITS[i].name, -1,
                              "%s must be %lld..%lld, not %lld", LIMITS[i].name,
                              (long long)LIMITS[i].min, (long long)LIMITS[i].max,
                              (long long)values[i]);
        }
    }
    const int64_t group = qw_options_get_int(o, "group_size", 128);
    if (group < 8 || group > (1 << 16)) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "group_size", -1,
                          "group_size must be 8..65536, not %lld", (long long)group);
    }
    const char *layout = qw_options_get(o, "layout");
    if (layout && qw_strcasecmp(layout, "gemm") != 0 &&
        qw_strcasecmp(layout, "pack-quantized") != 0) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, "layout", -1,
                          "layout must be pack-quantized or gemm, not \"%s\"", layout);
    }
    s->gemm = layout && qw_strcasecmp(layout, "gemm") == 0;
    if (s->gemm) dtype = QW_QTYPE_F16; /* AutoAWQ's kernels and checkpoints are float16 */
    s->params.scheme = (qw_int4_scheme){group, qw_options_get_bool(o, "symmetric", false), dtype};
    s->params.n_grid = 20;
    s->params.rank_stride = 4;
    const char *duo = qw_options_get(o, "duo_scaling");
    static const struct {
        const char *word;
        qw_awq_duo duo;
    } DUO[] = {{"true", QW_AWQ_DUO_ON}, {"1", QW_AWQ_DUO_ON},   {"on", QW_AWQ_DUO_ON},
               {"false", QW_AWQ_DUO_OFF}, {"0", QW_AWQ_DUO_OFF}, {"off", QW_AWQ_DUO_OFF},
               {"both", QW_AWQ_DUO_BOTH}};
    s->params.duo = QW_AWQ_DUO_ON;
    if (duo) {
        size_t i = 0, n = sizeof DUO / sizeof DUO[0];
        while (i < n && qw_strcasecmp(DUO[i].word, duo) != 0) i++;
        if (i == n) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, "duo_scaling", -1,
                              "duo_scaling must be true, false or both, not \"%s\"", duo);
        }
        s->params.duo = DUO[i].duo;
    }
    s->threads = (int)qw_options_get_int(o, "threads", 0);
    s->clip = qw_options_get_bool(o, "clip", false);
    return parse_ignore(qw_options_get(o, "ignore"), s, err);
}

/* ---- the model's shape ---------------------------------------------------------------------- */

/* The linear layers of a block, in qw_block and on disk; the first seven in the order of
 * qw_awq_params.ignored. Phi-3 stores q/k/v and gate/up fused: a layer whose fused tensor is
 * present is written as that one tensor (quantization works row by row, so quantizing the
 * fused rows is quantizing the parts), and its parts are skipped. */
#define NOT_FUSED (-1)
static const struct {
    const char *module; /* after "model.layers.<L>." */
    size_t field;
    int fused_into;     /* slot of the fused layer holding this one's rows, or NOT_FUSED */
    bool optional;      /* a fused layer: only in the families that have it */
} BLOCK_LINEARS[] = {
    {"self_attn.q_proj", offsetof(qw_block, q), 7, false},
    {"self_attn.k_proj", offsetof(qw_block, k), 7, false},
    {"self_attn.v_proj", offsetof(qw_block, v), 7, false},
    {"self_attn.o_proj", offsetof(qw_block, o), NOT_FUSED, false},
    {"mlp.gate_proj", offsetof(qw_block, gate), 8, false},
    {"mlp.up_proj", offsetof(qw_block, up), 8, false},
    {"mlp.down_proj", offsetof(qw_block, down), NOT_FUSED, false},
    {"self_attn.qkv_proj", offsetof(qw_block, qkv), NOT_FUSED, true},
    {"mlp.gate_up_proj", offsetof(qw_block, gate_up), NOT_FUSED, true},
};
#define N_LINEARS (sizeof BLOCK_LINEARS / sizeof BLOCK_LINEARS[0])

static const struct {
    const char *suffix;
    size_t field;
    bool per_head;
} BLOCK_VECTORS[] = {
    {"input_layernorm.weight", offsetof(qw_block, attn_norm), false},
    {"post_attention_layernorm.weight", offsetof(qw_block, ffn_norm), false},
    {"pre_feedforward_layernorm.weight", offsetof(qw_block, pre_ffn_norm), false},
    {"post_feedforward_layernorm.weight", offsetof(qw_block, post_ffn_norm), false},
    {"self_attn.q_norm.weight", offsetof(qw_block, q_norm), true},
    {"self_attn.k_norm.weight", offsetof(qw_block, k_norm), true},
};
#define N_VECTORS (sizeof BLOCK_VECTORS / sizeof BLOCK_VECTORS[0])

/* A sparse MoE layer (Mixtral, Qwen2-MoE, Qwen3-MoE: forward.h's qw_moe) in place of
 * mlp.{gate,up,down}_proj; which layout a layer has is read from its router tensor, as the
 * forward pass does. Piece slots: MOE_SLOT + i for MOE_LINEARS[i], EXPERT_SLOT + 3 e + j for
 * expert e's gate / up / down. The router and Qwen2-MoE's shared_expert_gate are never
 * quantized, whatever `ignore` says: transformers holds the router as a plain parameter (not
 * an nn.Linear) and vLLM runs both unquantized; llm-compressor's MoE recipes ignore them
 * ("re:.*mlp.gate$"), and so are they listed in the config's ignore. */
#define MOE_SLOT 1000
#define EXPERT_SLOT 2000
static const size_t EXPERT_FIELDS[3] = {offsetof(qw_expert, gate), offsetof(qw_expert, up),
                                        offsetof(qw_expert, down)};
static const struct {
    const char *module; /* after the layout's prefix */
    size_t field;       /* in qw_moe */
    bool dense;         /* never quantized */
    bool optional;      /* Qwen2-MoE's shared expert */
} MOE_LINEARS[] = {
    {"gate", offsetof(qw_moe, router), true, false},
    {"shared_expert.gate_proj", offsetof(qw_moe, shared.gate), false, true},
    {"shared_expert.up_proj", offsetof(qw_moe, shared.up), false, true},
    {"shared_expert.down_proj", offsetof(qw_moe, shared.down), false, true},
    {"shared_expert_gate", offsetof(qw_moe, shared_gate), true, true},
};
#define N_MOE_LINEARS (sizeof MOE_LINEARS / sizeof MOE_LINEARS[0])

static const char *const ST_DTYPE[] = {[QW_QTYPE_F32] = "F32", [QW_QTYPE_F16] = "F16",
                                       [QW_QTYPE_BF16] = "BF16"};

/* ---- the plan ------------------------------------------------------------------------------- */

typedef enum piece_kind {
    PIECE_COPY,   /* a source tensor as it is, converted to the model dtype */
    PIECE_VECTOR, /* a block vector (norm, bias) from the scaled block */
    PIECE_DENSE,  /* an ignored block linear's weight, scaled, in the model dtype */
    PIECE_PACKED, /* weight_packed */
    PIECE_SCALE,  /* weight_scale */
    PIECE_ZERO,   /* weight_zero_point */
    PIECE_SHAPE,  /* weight_shape */
    PIECE_GEMM_QWEIGHT, /* AutoAWQ GEMM: qweight */
    PIECE_GEMM_QZEROS,  /* qzeros */
    PIECE_GEMM_SCALES,  /* scales */
} piece_kind;

typedef struct piece {
    piece_kind kind;
    int64_t layer;           /* -1 outside blocks */
    int slot;                /* BLOCK_LINEARS / BLOCK_VECTORS index, bias: 100 + linear */
    const qw_hf_tensor *src; /* PIECE_COPY, and the linear's weight for the others */
    size_t shard;
    qw_st_entry entry;
} piece;

typedef struct awq_plan {
    piece *pieces;
    size_t n_pieces;
    size_t n_shards;
    char **names; /* entry names */
    qw_qtype dtype;
    qw_hf_view *view;
    json_t *config;
    awq_settings settings;
    uint64_t n_quantized, n_params;
    uint64_t data_bytes; /* tensor bytes over all shards */
} awq_plan;

static void awq_plan_free(void *priv) {
    awq_plan *p = priv;
    if (!p) return;
    for (size_t i = 0; i < p->n_pieces; i++) qw_free(p->names[i]);
    qw_free(p->names);
    qw_free(p->pieces);
    qw_hf_view_free(p->view);
    json_decref(p->config);
    settings_free(&p->settings);
    qw_free(p);
}

static qw_status push_piece(awq_plan *p, size_t *cap, piece pc, const char *name,
                            qw_error *err) {
    if (p->n_pieces == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        piece *np = qw_realloc_array(p->pieces, ncap, sizeof *np);
        char **nn = np ? qw_realloc_array(p->names, ncap, sizeof *nn) : NULL;
        if (np) p->pieces = np;
        if (!np || !nn) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        p->names = nn;
        *cap = ncap;
    }
    p->names[p->n_pieces] = qw_strdup(name);
    if (!p->names[p->n_pieces]) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    pc.entry.name = p->names[p->n_pieces];
    p->pieces[p->n_pieces++] = pc;
    return QW_OK;
}

/* HF shape (outermost first) of a view tensor */
static void hf_shape(const qw_hf_tensor *t, qw_st_entry *e) {
    e->n_dims = t->n_dims;
    for (int d = 0; d < t->n_dims; d++) e->shape[d] = t->ne[t->n_dims - 1 - d];
}

static qw_status plan_dense(awq_plan *p, size_t *cap, const qw_hf_tensor *w, const char *module,
                            int64_t layer, int slot, qw_error *err) {
    char name[256];
    piece pc = {PIECE_DENSE, layer, slot, w, 0, {.dtype = ST_DTYPE[p->dtype]}};
    hf_shape(w, &pc.entry);
    snprintf(name, sizeof name, "%s.weight", module);
    return push_piece(p, cap, pc, name, err);
}

static qw_status plan_linear(awq_plan *p, size_t *cap, const awq_settings *s,
                             const qw_hf_tensor *w, const char *module, int64_t layer, int slot,
                             bool *quantized, qw_error *err) {
    char name[256];
    const int64_t n_out = w->n_rows, n_in = w->ne[0];
    *quantized = !is_ignored(s, module);
    if (!*quantized) return plan_dense(p, cap, w, module, layer, slot, err);
    QW_TRY(qw_int4_check(&s->params.scheme, n_in, w->name, err));
    if (s->gemm && (n_out % 8 != 0 || layer < 0)) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, w->name, -1,
                          layer < 0 ? "the AutoAWQ GEMM layout has no quantized lm_head: keep "
                                      "lm_head in ignore"
                                    : "%s: the GEMM layout packs 8 outputs per word and this "
                                      "layer has %lld",
                          w->name, (long long)n_out);
    }
    const int64_t groups = n_in / s->params.scheme.group_size;
    typedef struct linear_part {
        piece_kind kind;
        const char *suffix, *dtype;
        int n_dims;
        int64_t d0, d1;
    } linear_part;
    const linear_part pack_quantized[] = {
        {PIECE_PACKED, "weight_packed", "I32", 2, n_out, (n_in + 7) / 8},
        {PIECE_SCALE, "weight_scale", ST_DTYPE[p->dtype], 2, n_out, groups},
        {PIECE_ZERO, "weight_zero_point", "I32", 2, (n_out + 7) / 8, groups},
        {PIECE_SHAPE, "weight_shape", "I64", 1, 2, 0},
    };
    const linear_part gemm[] = { /* research/awq.md §4: transposed, packed along the outputs */
        {PIECE_GEMM_QWEIGHT, "qweight", "I32", 2, n_in, n_out / 8},
        {PIECE_GEMM_QZEROS, "qzeros", "I32", 2, groups, n_out / 8},
        {PIECE_GEMM_SCALES, "scales", "F16", 2, groups, n_out},
    };
    const linear_part *parts = s->gemm ? gemm : pack_quantized;
    const size_t n_parts = s->gemm ? sizeof gemm / sizeof gemm[0]
                                   : sizeof pack_quantized / sizeof pack_quantized[0];
    for (size_t i = 0; i < n_parts; i++) {
        if (parts[i].kind == PIECE_ZERO && s->params.scheme.symmetric) continue;
        piece pc = {parts[i].kind, layer, slot, w, 0,
                    {.dtype = parts[i].dtype, .n_dims = parts[i].n_dims,
                     .shape = {parts[i].d0, parts[i].d1}}};
        snprintf(name, sizeof name, "%s.%s", module, parts[i].suffix);
        QW_TRY(push_piece(p, cap, pc, name, err));
    }
    p->n_quantized += (uint64_t)(n_out * n_in);
    return QW_OK;
}

/* A sparse layer's router, shared expert and experts (as many as the checkpoint has: the
 * forward pass checks the count against config.json). */
static qw_status plan_moe(awq_plan *p, size_t *cap, const awq_settings *s, int64_t layer,
                          const qw_moe_layout *layout, qw_error *err) {
    char module[200], name[256];
    const char *prefix = layout->prefix;
    for (size_t i = 0; i < N_MOE_LINEARS; i++) {
        snprintf(module, sizeof module, "model.layers.%lld.%s.%s", (long long)layer, prefix,
                 MOE_LINEARS[i].module);
        snprintf(name, sizeof name, "%s.weight", module);
        const qw_hf_tensor *w = qw_hf_view_find(p->view, name);
        if (!w && MOE_LINEARS[i].optional) continue;
        if (!w) {
            return qw_fail_at(err, QW_ERR_CORRUPT, name, -1, "the model has no tensor \"%s\"",
                              name);
        }
        const int slot = MOE_SLOT + (int)i;
        bool quantized;
        QW_TRY(MOE_LINEARS[i].dense
                   ? plan_dense(p, cap, w, module, layer, slot, err)
                   : plan_linear(p, cap, s, w, module, layer, slot, &quantized, err));
    }
    for (int e = 0; e < (1 << 16); e++) { /* qw_hparams' bound on expert counts */
        for (int j = 0; j < 3; j++) {
            snprintf(module, sizeof module, "model.layers.%lld.%s.experts.%d.%s",
                     (long long)layer, prefix, e, layout->linear[j]);
            snprintf(name, sizeof name, "%s.weight", module);
            const qw_hf_tensor *w = qw_hf_view_find(p->view, name);
            if (!w && j == 0) return QW_OK; /* past the last expert */
            if (!w) {
                return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                                  "the model has no tensor \"%s\"", name);
            }
            bool quantized;
            QW_TRY(plan_linear(p, cap, s, w, module, layer, EXPERT_SLOT + 3 * e + j, &quantized,
                               err));
        }
    }
    return QW_OK;
}

/* Every tensor of the view, in file order: non-block tensors before and after the blocks,
 * each block's tensors together (they are produced together). */
static qw_status plan_pieces(awq_plan *p, const awq_settings *s, int64_t n_layer,
                             qw_error *err) {
    size_t cap = 0;
    const size_t n_view = qw_hf_view_count(p->view);
    qw_status st = QW_OK;
    const qw_hf_tensor *embed = qw_hf_view_find(p->view, "model.embed_tokens.weight");
    if (embed) {
        piece pc = {PIECE_COPY, -1, 0, embed, 0, {.dtype = ST_DTYPE[p->dtype]}};
        hf_shape(embed, &pc.entry);
        st = push_piece(p, &cap, pc, embed->name, err);
    }
    char name[256];
    for (int64_t layer = 0; st == QW_OK && layer < n_layer; layer++) {
        for (size_t v = 0; st == QW_OK && v < N_VECTORS; v++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)layer,
                     BLOCK_VECTORS[v].suffix);
            const qw_hf_tensor *t = qw_hf_view_find(p->view, name);
            if (!t) continue;
            piece pc = {PIECE_VECTOR, layer, (int)v, t, 0, {.dtype = ST_DTYPE[p->dtype]}};
            hf_shape(t, &pc.entry);
            st = push_piece(p, &cap, pc, name, err);
        }
        const qw_moe_layout *layout = qw_hf_view_moe_layout(p->view, layer);
        if (layout) st = plan_moe(p, &cap, s, layer, layout, err);
        for (size_t l = 0; st == QW_OK && l < N_LINEARS; l++) {
            char module[200];
            const int whole = BLOCK_LINEARS[l].fused_into;
            if (layout && strncmp(BLOCK_LINEARS[l].module, "mlp.", 4) == 0) continue;
            if (whole != NOT_FUSED) {
                snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer,
                         BLOCK_LINEARS[whole].module);
                if (qw_hf_view_find(p->view, name)) continue; /* written fused */
            }
            snprintf(module, sizeof module, "model.layers.%lld.%s", (long long)layer,
                     BLOCK_LINEARS[l].module);
            snprintf(name, sizeof name, "%s.weight", module);
            const qw_hf_tensor *w = qw_hf_view_find(p->view, name);
            if (!w && BLOCK_LINEARS[l].optional) continue;
            if (!w) {
                st = qw_fail_at(err, QW_ERR_CORRUPT, name, -1, "the model has no tensor \"%s\"",
                                name);
                break;
            }
            bool quantized;
            st = plan_linear(p, &cap, s, w, module, layer, (int)l, &quantized, err);
            snprintf(name, sizeof name, "%s.bias", module);
            const qw_hf_tensor *b = qw_hf_view_find(p->view, name);
            if (st == QW_OK && b) {
                piece pc = {PIECE_VECTOR, layer, 100 + (int)l, b, 0, {.dtype = ST_DTYPE[p->dtype]}};
                hf_shape(b, &pc.entry);
                st = push_piece(p, &cap, pc, name, err);
            }
        }
    }
    static const char *const TAIL[] = {"model.norm.weight", "lm_head.weight"};
    for (size_t i = 0; st == QW_OK && i < 2; i++) {
        const qw_hf_tensor *t = qw_hf_view_find(p->view, TAIL[i]);
        if (!t) continue;
        if (i == 1 && !is_ignored(s, "lm_head")) {
            bool quantized;
            st = plan_linear(p, &cap, s, t, "lm_head", -1, -1, &quantized, err);
            continue;
        }
        piece pc = {PIECE_COPY, -1, 0, t, 0, {.dtype = ST_DTYPE[p->dtype]}};
        hf_shape(t, &pc.entry);
        st = push_piece(p, &cap, pc, t->name, err);
    }
    /* a tensor the pass does not know would silently vanish: refuse it instead */
    for (size_t i = 0; st == QW_OK && i < n_view; i++) {
        const qw_hf_tensor *t = qw_hf_view_at(p->view, i);
        bool found = false;
        for (size_t k = 0; !found && k < p->n_pieces; k++) found = p->pieces[k].src == t;
        if (!found) {
            st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                            "tensor \"%s\" is not part of the decoder layout the AWQ backend "
                            "runs (embedding, attention, MLP, norms, head)", t->name);
        }
    }
    return st;
}

/* Consecutive pieces fill shards of up to SHARD_BYTES; a block never spans two shards unless
 * it alone is larger. */
static qw_status assign_shards(awq_plan *p, uint64_t *total, qw_error *err) {
    uint64_t in_shard = 0;
    size_t shard = 0;
    *total = 0;
    for (size_t i = 0; i < p->n_pieces; i++) {
        bool ok;
        uint64_t bytes = qw_st_entry_bytes(&p->pieces[i].entry, &ok);
        if (!ok) {
            return qw_fail_at(err, QW_ERR_CORRUPT, p->pieces[i].entry.name, -1,
                              "tensor \"%s\" has a shape too large to write",
                              p->pieces[i].entry.name);
        }
        if (in_shard > 0 && in_shard + bytes > SHARD_BYTES) {
            shard++;
            in_shard = 0;
        }
        p->pieces[i].shard = shard;
        in_shard += bytes;
        *total += bytes;
    }
    p->n_shards = shard + 1;
    return QW_OK;
}

static char *shard_name(const awq_plan *p, size_t shard) {
    if (p->n_shards == 1) return qw_strdup("model.safetensors");
    return qw_sprintf("model-%05zu-of-%05zu.safetensors", shard + 1, p->n_shards);
}

static qw_qtype model_dtype(const qw_hf_view *v) {
    const qw_hf_tensor *t = qw_hf_view_find(v, "model.embed_tokens.weight");
    if (t && t->raw && (t->raw_type == QW_QTYPE_BF16 || t->raw_type == QW_QTYPE_F16 ||
                        t->raw_type == QW_QTYPE_F32)) {
        return t->raw_type;
    }
    return QW_QTYPE_BF16; /* a quantized GGUF: what transformers loads such models in */
}

static unsigned ignored_mask(const awq_settings *s, int64_t layer);

/* vLLM runs q/k/v and gate/up as fused layers that need one scheme each: warn when `ignore`
 * splits one (llm-compressor writes such checkpoints too; vLLM then refuses them). */
static void warn_split_fused(const qw_run_context *ctx, const awq_settings *s, int64_t n_layer) {
    for (int64_t layer = 0; layer < n_layer; layer++) {
        const unsigned m = ignored_mask(s, layer);
        const unsigned qkv = m & 7u, gate_up = (m >> 4) & 3u;
        if ((qkv != 0 && qkv != 7u) || (gate_up != 0 && gate_up != 3u)) {
            qw_log(ctx->reporter, QW_LOG_WARNING,
                   "ignore leaves only part of layer %lld's q/k/v or gate/up unquantized: vLLM "
                   "fuses those layers and needs them all quantized or all ignored",
                   (long long)layer);
            return;
        }
    }
}

static qw_status awq_plan_build(const qw_run_context *ctx, const char *format, qw_plan *plan,
                                qw_error *err) {
    if (format_find(format) < 0) {
        return qw_fail(err, QW_ERR_FORMAT_NOT_SUPPORTED,
                       "format \"%s\" is not supported by the awq backend (supported: int4)",
                       format);
    }
    const qw_model *m = ctx->model;
    awq_plan *p = qw_calloc(1, sizeof *p);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->priv = p;
    plan->priv_free = awq_plan_free;
    QW_TRY(qw_model_hf_view(m, &p->view, err));
    const json_t *config;
    QW_TRY(qw_hf_view_config(p->view, &config, err));
    p->config = json_deep_copy(config);
    if (!p->config) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    p->dtype = model_dtype(p->view);
    QW_TRY(parse_settings(ctx, p->dtype, &p->settings, err));
    p->dtype = p->settings.params.scheme.dtype; /* the GEMM layout makes it float16 */
    qw_hparams hp;
    QW_TRY(qw_hparams_from_config(config, "config.json", &hp, err));
    QW_TRY(plan_pieces(p, &p->settings, hp.n_layer, err));
    warn_split_fused(ctx, &p->settings, hp.n_layer);
    QW_TRY(assign_shards(p, &p->data_bytes, err));
    for (size_t i = 0; i < p->n_pieces; i++) {
        const piece *pc = &p->pieces[i];
        qw_plan_tensor pt = {0};
        pt.name = pc->entry.name;
        pt.source_name = pc->src->name;
        pt.source_type = pc->src->source->dtype_name;
        pt.type = pc->entry.dtype;
        pt.transform = pc->kind == PIECE_COPY     ? "copy"
                       : pc->kind == PIECE_VECTOR ? "awq scale"
                       : pc->kind == PIECE_DENSE  ? "awq scale (ignored: not quantized)"
                                                  : "awq scale, int4 groups";
        pt.n_dims = pc->entry.n_dims;
        for (int d = 0; d < pc->entry.n_dims && d < 4; d++) {
            pt.shape[d] = pc->entry.shape[pc->entry.n_dims - 1 - d];
        }
        bool ok;
        pt.bytes = qw_st_entry_bytes(&pc->entry, &ok);
        QW_TRY(qw_plan_push(plan, &pt, err));
    }
    for (size_t i = 0; i < qw_hf_view_count(p->view); i++) {
        const qw_hf_tensor *t = qw_hf_view_at(p->view, i);
        p->n_params += (uint64_t)(t->ne[0] * t->n_rows);
    }
    char *dir = qw_sprintf("%s-awq-int4", m->name);
    plan->output_path = dir ? qw_path_join(ctx->output_dir, dir) : NULL;
    plan->format = qw_strdup("int4");
    qw_free(dir);
    if (!plan->output_path || !plan->format) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->output_bytes = p->data_bytes;
    return QW_OK;
}

/* ---- calibration ---------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static qw_status load_tokenizer(const qw_model *m, qw_tokenizer **out, qw_error *err) {
    if (m->kind == QW_SOURCE_HF_DIR) return qw_tokenizer_load_dir(m->path, out, err);
    json_t *tok_json = NULL, *tok_config = NULL;
    QW_TRY(qw_model_hf_tokenizer(m, &tok_json, &tok_config, err));
    char *text = tok_json ? json_dumps(tok_json, JSON_COMPACT) : NULL;
    json_decref(tok_json);
    json_decref(tok_config);
    qw_status st = text ? qw_tokenizer_load_json_buffer(text, strlen(text), m->path, out, err)
                        : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    free(text);
    return st;
}

/* n_seq sequences of seq_len ids: the texts in a fixed-seed shuffled order, each encoded on its
 * own and concatenated (llm-compressor's concatenate_data), every sequence starting with the
 * tokens the tokenizer adds in front of a text (BOS, for Llama-style models). */
static qw_status calibration_ids(const qw_run_context *ctx, awq_settings *s,
                                 int32_t **ids_out, int64_t *n_seq_out, qw_error *err) {
    const qw_model *m = ctx->model;
    qw_tokenizer *tok = NULL;
    qw_calib *calib = NULL;
    qw_token_ids enc = {0};
    const int64_t want = s->num_samples * s->seq_len;
    int32_t *ids = qw_malloc_array((size_t)want, sizeof *ids);
    size_t *order = NULL;
    qw_status st = ids ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) st = load_tokenizer(m, &tok, err);
    /* Texts are read until they hold the tokens wanted: a first guess of 64 tokens a text,
     * then four times as many texts while the dataset has more (pages already fetched come
     * from the cache). */
    size_t max_texts = (size_t)(want / 64 > s->num_samples ? want / 64 : s->num_samples);
    for (int round = 0; st == QW_OK && round < 8; round++) {
        qw_calib_free(calib);
        calib = NULL;
        /* the option as given: NULL lets the loader fall back to the built-in text */
        st = qw_calib_load(qw_options_get(ctx->options, "calibration_dataset"), s->split,
                           max_texts, s->token, ctx->reporter, &calib, err);
        int64_t tokens = 0;
        for (size_t k = 0; st == QW_OK && k < calib->n_samples && tokens < want; k++) {
            const char *text = calib->samples[k];
            st = qw_tokenizer_encode(tok, text, strlen(text), false, &enc, err);
            tokens += (int64_t)enc.n;
        }
        /* the default dataset out of reach: what was used is the built-in text */
        if (st == QW_OK && calib->builtin) s->dataset = "builtin";
        if (st != QW_OK || tokens >= want || calib->n_samples < max_texts) break;
        max_texts *= 4;
    }
    size_t n_prefix = 0;
    int32_t prefix[8];
    if (st == QW_OK) st = qw_tokenizer_encode(tok, "", 0, true, &enc, err);
    if (st == QW_OK) {
        n_prefix = enc.n < 8 ? enc.n : 8;
        if (n_prefix) memcpy(prefix, enc.ids, n_prefix * sizeof *prefix);
        if ((int64_t)n_prefix >= s->seq_len) {
            st = qw_fail_at(err, QW_ERR_BAD_OPTION, "seq_len", -1,
                            "seq_len %lld leaves no room after the %zu special tokens",
                            (long long)s->seq_len, n_prefix);
        }
        order = qw_malloc_array(calib ? calib->n_samples : 1, sizeof *order);
        if (!order) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    int64_t filled = 0;
    if (st == QW_OK) {
        uint64_t seed = CALIB_SEED;
        for (size_t i = 0; i < calib->n_samples; i++) order[i] = i;
        for (size_t i = calib->n_samples; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)(splitmix64(&seed) % i);
            size_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        for (size_t k = 0; st == QW_OK && k < calib->n_samples && filled < want; k++) {
            const char *text = calib->samples[order[k]];
            st = qw_tokenizer_encode(tok, text, strlen(text), false, &enc, err);
            for (size_t i = 0; st == QW_OK && i < enc.n && filled < want; i++) {
                if (filled % s->seq_len == 0 && n_prefix) {
                    memcpy(ids + filled, prefix, n_prefix * sizeof *prefix);
                    filled += (int64_t)n_prefix;
                }
                ids[filled++] = enc.ids[i];
            }
        }
    }
    const int64_t n_seq = filled / s->seq_len;
    if (st == QW_OK && n_seq < 1) {
        st = qw_fail_at(err, QW_ERR_INVALID_ARG, "calibration_dataset", -1,
                        "%s gives %lld tokens, fewer than one sequence of %lld: use more text or "
                        "a smaller seq_len", s->dataset, (long long)filled, (long long)s->seq_len);
    }
    if (st == QW_OK && n_seq < s->num_samples) {
        qw_log(ctx->reporter, QW_LOG_WARNING,
               "%s gives %lld tokens: %lld calibration sequences of %lld instead of %lld",
               s->dataset, (long long)filled, (long long)n_seq, (long long)s->seq_len,
               (long long)s->num_samples);
    }
    qw_token_ids_free(&enc);
    qw_free(order);
    qw_calib_free(calib);
    qw_tokenizer_free(tok);
    if (st != QW_OK) {
        qw_free(ids);
        return st;
    }
    *ids_out = ids;
    *n_seq_out = n_seq;
    return QW_OK;
}

/* ---- writing -------------------------------------------------------------------------------- */

/* One linear's int4 codes, scales and zero points. Its pieces (packed codes, scales, zero
 * points; or the GEMM layout's three) are written one after another from the same codes, so the
 * linear is quantized once, for the first of them. */
typedef struct linear_codes {
    const qw_hf_tensor *src; /* the linear they belong to; NULL: none yet */
    int8_t *codes;           /* [n_out][n_in] */
    float *scales;           /* [n_out][groups] */
    int8_t *zps;             /* [n_out][groups] */
    float *rows;             /* a row of scratch per pool thread */
} linear_codes;

typedef struct out_state {
    awq_plan *plan;
    const char *dir; /* the temporary directory */
    qw_st_writer *writer;
    size_t shard;    /* open shard, or SIZE_MAX */
    void *chunk;     /* conversion buffer */
    size_t chunk_bytes;
    qw_pool *pool;   /* splits a linear's rows (NULL: one thread) */
    linear_codes lc;
} out_state;

static void linear_codes_free(linear_codes *lc) {
    qw_free(lc->codes);
    qw_free(lc->scales);
    qw_free(lc->zps);
    qw_free(lc->rows);
    *lc = (linear_codes){0};
}

static qw_status begin_piece(out_state *o, const piece *pc, qw_error *err) {
    if (o->writer && o->shard == pc->shard) return QW_OK;
    if (o->writer) {
        qw_st_writer *w = o->writer;
        o->writer = NULL;
        QW_TRY(qw_st_writer_finish(w, err));
    }
    awq_plan *p = o->plan;
    size_t first = 0, n = 0;
    while (first < p->n_pieces && p->pieces[first].shard != pc->shard) first++;
    while (first + n < p->n_pieces && p->pieces[first + n].shard == pc->shard) n++;
    qw_st_entry *entries = qw_malloc_array(n, sizeof *entries);
    char *name = shard_name(p, pc->shard);
    char *path = name ? qw_path_join(o->dir, name) : NULL;
    qw_status st = entries && path ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; st == QW_OK && i < n; i++) entries[i] = p->pieces[first + i].entry;
    if (st == QW_OK) st = qw_st_writer_open(path, entries, n, &o->writer, err);
    o->shard = pc->shard;
    qw_free(entries);
    qw_free(name);
    qw_free(path);
    return st;
}

/* f32 values written in the model's dtype */
static qw_status put_floats(out_state *o, const float *x, int64_t n, qw_error *err) {
    const qw_qtype dtype = o->plan->dtype;
    const size_t elem = dtype == QW_QTYPE_F32 ? 4 : 2, per_chunk = o->chunk_bytes / elem;
    for (int64_t i0 = 0; i0 < n; i0 += (int64_t)per_chunk) {
        const int64_t m = n - i0 < (int64_t)per_chunk ? n - i0 : (int64_t)per_chunk;
        uint16_t *h = o->chunk;
        for (int64_t i = 0; dtype != QW_QTYPE_F32 && i < m; i++) {
            h[i] = dtype == QW_QTYPE_BF16 ? qw_fp32_to_bf16(x[i0 + i]) : qw_fp32_to_fp16(x[i0 + i]);
        }
        const void *src = dtype == QW_QTYPE_F32 ? (const void *)(x + i0) : o->chunk;
        QW_TRY(qw_st_writer_write(o->writer, src, (size_t)m * elem, err));
    }
    return QW_OK;
}

/* A source tensor (embedding, final norm, unquantized head) in the model dtype, streamed. */
static qw_status put_copy(out_state *o, const qw_hf_tensor *t, qw_error *err) {
    const int64_t width = t->ne[0];
    const int64_t rows_per = (int64_t)(o->chunk_bytes / 2 / sizeof(float) / (size_t)width) > 0
                                 ? (int64_t)(o->chunk_bytes / 2 / sizeof(float) / (size_t)width)
                                 : 1;
    float *f = qw_malloc_array((size_t)(rows_per * width), sizeof *f);
    if (!f) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = QW_OK;
    for (int64_t r = 0; st == QW_OK && r < t->n_rows; r += rows_per) {
        const int64_t n = t->n_rows - r < rows_per ? t->n_rows - r : rows_per;
        st = qw_hf_tensor_read_f32(t, r, n, f, err);
        if (st == QW_OK) st = put_floats(o, f, n * width, err);
    }
    qw_free(f);
    return st;
}

typedef struct quantize_job {
    const qw_int4_scheme *s;
    const float *w;
    int64_t n_in, groups;
    linear_codes *lc;
} quantize_job;

/* row r of the linear from its f32 values w, rounded to the model's dtype first as the
 * checkpoint stores them; scratch may be w */
static void quantize_row(const quantize_job *j, int64_t r, const float *w, float *scratch) {
    for (int64_t c = 0; c < j->n_in; c++) scratch[c] = qw_int4_round_dtype(j->s, w[c]);
    qw_int4_quantize_row(j->s, scratch, j->n_in, j->lc->codes + r * j->n_in,
                         j->lc->scales + r * j->groups, j->lc->zps + r * j->groups);
}

static void quantize_rows(void *ctx, size_t begin, size_t end, int worker) {
    const quantize_job *j = ctx;
    float *scratch = j->lc->rows + (size_t)worker * (size_t)j->n_in;
    for (size_t r = begin; r < end; r++) {
        quantize_row(j, (int64_t)r, j->w + r * (size_t)j->n_in, scratch);
    }
}

/* o->lc := the codes of src, whose f32 rows are w (a block's scaled weights), or are read from
 * the source when w is NULL; nothing to do when they are src's already */
static qw_status quantize_linear(out_state *o, const qw_hf_tensor *src, const float *w,
                                 qw_error *err) {
    linear_codes *lc = &o->lc;
    if (lc->src == src) return QW_OK;
    linear_codes_free(lc);
    const qw_int4_scheme *s = &o->plan->settings.params.scheme;
    const int64_t n_out = src->n_rows, n_in = src->ne[0], groups = n_in / s->group_size;
    const int n_threads = qw_pool_threads(o->pool);
    lc->codes = qw_malloc_array((size_t)(n_out * n_in), 1);
    lc->scales = qw_malloc_array((size_t)(n_out * groups), sizeof *lc->scales);
    lc->zps = qw_malloc_array((size_t)(n_out * groups), 1);
    lc->rows = qw_malloc_array((size_t)n_threads * (size_t)n_in, sizeof *lc->rows);
    if (!lc->codes || !lc->scales || !lc->zps || !lc->rows) {
        linear_codes_free(lc);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory quantizing %s", src->name);
    }
    quantize_job job = {s, w, n_in, groups, lc};
    if (w) {
        qw_pool_run(o->pool, (size_t)n_out, 16, quantize_rows, &job);
    } else {
        for (int64_t r = 0; r < n_out; r++) { /* read into the scratch row, rounded in place */
            const qw_status st = qw_hf_tensor_read_f32(src, r, 1, lc->rows, err);
            if (st != QW_OK) {
                linear_codes_free(lc);
                return st;
            }
            quantize_row(&job, r, lc->rows, lc->rows);
        }
    }
    lc->src = src;
    return QW_OK;
}

/* AutoAWQ's GEMM layout (research/awq.md §4). Its words run along the outputs, so the whole
 * layer is quantized before any word can be written; codes and zero points are stored unsigned
 * (+8), column 8c + GEMM_ORDER[i] of a word in its nibble i. The dequantized weights are the
 * pack-quantized ones: (u - z) * s with u = q + 8 and z = zp + 8 is (q - zp) * s. */
static const int GEMM_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};

static qw_status put_gemm(out_state *o, const piece *pc, qw_error *err) {
    const qw_int4_scheme *s = &o->plan->settings.params.scheme;
    const int64_t n_out = pc->src->n_rows, n_in = pc->src->ne[0], groups = n_in / s->group_size;
    const linear_codes *lc = &o->lc;
    uint32_t *words = qw_malloc_array((size_t)(n_out / 8), sizeof *words);
    uint16_t *halves = qw_malloc_array((size_t)n_out, sizeof *halves);
    qw_status st = words && halves ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    /* one output line per input column (qweight) or per group (qzeros, scales) */
    const int64_t n_lines = pc->kind == PIECE_GEMM_QWEIGHT ? n_in : groups;
    for (int64_t k = 0; st == QW_OK && k < n_lines; k++) {
        if (pc->kind == PIECE_GEMM_SCALES) {
            for (int64_t r = 0; r < n_out; r++) {
                halves[r] = qw_fp32_to_fp16(lc->scales[r * groups + k]);
            }
            st = qw_st_writer_write(o->writer, halves, (size_t)n_out * sizeof *halves, err);
            continue;
        }
        const int8_t *v = pc->kind == PIECE_GEMM_QWEIGHT ? lc->codes : lc->zps;
        const int64_t stride = pc->kind == PIECE_GEMM_QWEIGHT ? n_in : groups;
        for (int64_t c = 0; c < n_out / 8; c++) {
            uint32_t word = 0;
            for (int i = 0; i < 8; i++) {
                word |= (uint32_t)(v[(8 * c + GEMM_ORDER[i]) * stride + k] + 8) << (4 * i);
            }
            words[c] = word;
        }
        st = qw_st_writer_write(o->writer, words, (size_t)(n_out / 8) * sizeof *words, err);
    }
    qw_free(words);
    qw_free(halves);
    return st;
}

/* One quantized linear's piece (packed codes, scales, zero points or shape); w as for
 * quantize_linear. */
static qw_status put_quantized(out_state *o, const piece *pc, const float *w, qw_error *err) {
    const qw_int4_scheme *s = &o->plan->settings.params.scheme;
    const int64_t n_out = pc->src->n_rows, n_in = pc->src->ne[0], groups = n_in / s->group_size;
    if (pc->kind == PIECE_SHAPE) {
        const int64_t shape[2] = {n_out, n_in};
        return qw_st_writer_write(o->writer, shape, sizeof shape, err);
    }
    QW_TRY(quantize_linear(o, pc->src, w, err));
    if (pc->kind >= PIECE_GEMM_QWEIGHT) return put_gemm(o, pc, err);
    const linear_codes *lc = &o->lc;
    if (pc->kind == PIECE_SCALE) return put_floats(o, lc->scales, n_out * groups, err);
    /* packed codes a row of words each; zero points packed 8 rows to a word */
    const int64_t row_words = pc->kind == PIECE_PACKED ? (n_in + 7) / 8 : groups;
    int32_t *words = qw_malloc_array((size_t)row_words, sizeof *words);
    qw_status st = words ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    const int64_t step = pc->kind == PIECE_PACKED ? 1 : 8;
    for (int64_t r0 = 0; st == QW_OK && r0 < n_out; r0 += step) {
        if (pc->kind == PIECE_PACKED) {
            qw_int4_pack_row(lc->codes + r0 * n_in, n_in, words);
        } else {
            const int64_t n = n_out - r0 < 8 ? n_out - r0 : 8;
            qw_int4_pack_columns(lc->zps + r0 * groups, n, groups, words);
        }
        st = qw_st_writer_write(o->writer, words, (size_t)row_words * sizeof *words, err);
    }
    qw_free(words);
    return st;
}

/* NULL: a MoE slot in a block the forward pass loaded dense */
static qw_linear *block_linear(qw_block *b, int slot) {
    if (slot >= MOE_SLOT && !b->moe) return NULL;
    if (slot >= EXPERT_SLOT) {
        const int e = (slot - EXPERT_SLOT) / 3, j = (slot - EXPERT_SLOT) % 3;
        if (e >= b->moe->n_expert) return NULL;
        return (qw_linear *)((char *)&b->moe->experts[e] + EXPERT_FIELDS[j]);
    }
    if (slot >= MOE_SLOT) return (qw_linear *)((char *)b->moe + MOE_LINEARS[slot - MOE_SLOT].field);
    return (qw_linear *)((char *)b + BLOCK_LINEARS[slot].field);
}

/* norm_offset: what the block's norms hold beyond the stored weight (Gemma's 1 + w: 1) */
static qw_status put_block_piece(out_state *o, const piece *pc, qw_block *b, float norm_offset,
                                 qw_error *err) {
    if (pc->kind == PIECE_VECTOR && pc->slot >= 100) {
        const qw_linear *l = block_linear(b, pc->slot - 100);
        if (!l->b) return qw_fail(err, QW_ERR_INTERNAL, "%s: bias not loaded", pc->entry.name);
        return put_floats(o, l->b, l->n_out, err);
    }
    if (pc->kind == PIECE_VECTOR) {
        const float *v = *(float *const *)((const char *)b + BLOCK_VECTORS[pc->slot].field);
        if (!v) return qw_fail(err, QW_ERR_INTERNAL, "%s: not loaded", pc->entry.name);
        const int64_t n = pc->src->ne[0];
        if (norm_offset == 0.0f) return put_floats(o, v, n, err);
        float *w = qw_malloc_array((size_t)n, sizeof *w);
        if (!w) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        for (int64_t i = 0; i < n; i++) w[i] = v[i] - norm_offset;
        qw_status st = put_floats(o, w, n, err);
        qw_free(w);
        return st;
    }
    const qw_linear *l = block_linear(b, pc->slot);
    if (!l || !l->w) {
        return qw_fail(err, QW_ERR_INTERNAL, "%s: not loaded by the forward pass",
                       pc->entry.name);
    }
    if (pc->kind == PIECE_DENSE) return put_floats(o, l->w, l->n_out * l->n_in, err);
    return put_quantized(o, pc, l->w, err);
}

/* The linear layers left unquantized, by module name: the ignored block layers, then lm_head
 * when ignored (listed tied or not, as llm-compressor lists it). */
static json_t *ignored_modules(const awq_plan *p) {
    json_t *ignore = json_array();
    for (size_t i = 0; ignore && i < p->n_pieces; i++) {
        const piece *pc = &p->pieces[i];
        if (pc->kind != PIECE_DENSE) continue;
        char module[256];
        snprintf(module, sizeof module, "%s", pc->entry.name);
        char *dot = strrchr(module, '.');
        if (dot) *dot = 0;
        json_array_append_new(ignore, json_string(module));
    }
    if (ignore && is_ignored(&p->settings, "lm_head")) {
        json_array_append_new(ignore, json_string("lm_head"));
    }
    return ignore;
}

/* compressed-tensors' quantization_config for this scheme (research/awq.md §3), or AutoAWQ's
 * for the GEMM layout (§4; the zero points are always stored there, symmetric ones as 8) */
static json_t *quantization_config(const awq_plan *p) {
    const awq_settings *s = &p->settings;
    json_t *ignore = ignored_modules(p);
    if (s->gemm) {
        return json_pack("{s:s, s:i, s:I, s:b, s:s, s:o}", "quant_method", "awq", "bits", 4,
                         "group_size", (json_int_t)s->params.scheme.group_size, "zero_point", 1,
                         "version", "gemm", "modules_to_not_convert", ignore);
    }
    const bool sym = s->params.scheme.symmetric;
    json_t *weights = json_pack(
        "{s:i, s:s, s:b, s:s, s:I, s:b, s:n, s:n, s:s, s:{}, s:n, s:o}", "num_bits", 4, "type",
        "int", "symmetric", sym, "strategy", "group", "group_size",
        (json_int_t)s->params.scheme.group_size, "dynamic", 0, "actorder", "block_structure",
        "observer", "memoryless_minmax", "observer_kwargs", "scale_dtype", "zp_dtype",
        sym ? json_null() : json_string("torch.int8"));
    json_t *group = json_pack("{s:[s], s:s, s:n, s:n, s:o}", "targets", "Linear", "format",
                              "pack-quantized", "input_activations", "output_activations",
                              "weights", weights);
    return json_pack("{s:{s:o}, s:s, s:n, s:o, s:n, s:s, s:s, s:{}, s:{}, s:s}", "config_groups",
                     "group_0", group, "format", "pack-quantized", "global_compression_ratio",
                     "ignore", ignore, "kv_cache_scheme", "quant_method", "compressed-tensors",
                     "quantization_status", "compressed", "sparsity_config", "transform_config",
                     "version", CT_FORMAT_VERSION);
}

/* The tokenizer and generation files next to the weights. */
static qw_status write_side_files(const qw_model *m, const char *dir, qw_error *err) {
    if (m->kind != QW_SOURCE_HF_DIR) {
        json_t *tok = NULL, *tok_config = NULL;
        qw_status st = qw_model_hf_tokenizer(m, &tok, &tok_config, err);
        if (st == QW_OK && tok) st = qw_json_write_file(tok, dir, "tokenizer.json", err);
        if (st == QW_OK && tok_config) {
            st = qw_json_write_file(tok_config, dir, "tokenizer_config.json", err);
        }
        json_decref(tok);
        json_decref(tok_config);
        return st;
    }
    static const char *const FILES[] = {
        "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json",
        "tokenizer.model",  "generation_config.json", "chat_template.jinja",
        "added_tokens.json", "vocab.json",            "merges.txt",
    };
    qw_status st = QW_OK;
    for (size_t i = 0; st == QW_OK && i < sizeof FILES / sizeof FILES[0]; i++) {
        char *src = qw_path_join(m->path, FILES[i]);
        char *dst = qw_path_join(dir, FILES[i]);
        char *data = NULL;
        size_t len = 0;
        if (!src || !dst) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        if (st == QW_OK && qw_path_exists(src)) {
            qw_output *o = NULL;
            st = qw_file_read_all(src, (size_t)1 << 30, &data, &len, err);
            if (st == QW_OK) st = qw_output_open(dst, &o, err);
            if (st == QW_OK) st = qw_output_write(o, data, len, err);
            if (st == QW_OK) {
                st = qw_output_commit(o, err);
                o = NULL;
            }
            qw_output_abort(o);
        }
        qw_free(data);
        qw_free(src);
        qw_free(dst);
    }
    return st;
}

static qw_status write_index(const awq_plan *p, const char *dir, uint64_t total, qw_error *err) {
    json_t *map = json_object();
    for (size_t i = 0; map && i < p->n_pieces; i++) {
        char *name = shard_name(p, p->pieces[i].shard);
        json_object_set_new(map, p->pieces[i].entry.name, json_string(name ? name : ""));
        qw_free(name);
    }
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
                              "weight_map", map);
    if (!index) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_json_write_file(index, dir, "model.safetensors.index.json", err);
    json_decref(index);
    return st;
}

/* An earlier output is replaced only if it is a quantized checkpoint (its config.json has a
 * quantization_config). */
static bool is_quantized_checkpoint(const char *dir) {
    char *cfg_path = qw_path_join(dir, "config.json");
    json_t *cfg = NULL;
    qw_error ignored = {0};
    const bool ours = cfg_path &&
                      qw_json_load_file(cfg_path, 1 << 24, &cfg, &ignored) == QW_OK &&
                      json_object_get(cfg, "quantization_config");
    json_decref(cfg);
    qw_free(cfg_path);
    return ours;
}

/* ---- execution ------------------------------------------------------------------------------ */

typedef struct run_state {
    const qw_run_context *ctx;
    awq_plan *plan;
    qw_forward *fwd;
    float *hidden;
    int64_t n_seq, seq_len;
    out_state out;
} run_state;

static unsigned ignored_mask(const awq_settings *s, int64_t layer) {
    unsigned mask = 0;
    for (size_t l = 0; l < N_LINEARS; l++) {
        char module[200];
        snprintf(module, sizeof module, "model.layers.%lld.%s", (long long)layer,
                 BLOCK_LINEARS[l].module);
        if (is_ignored(s, module)) mask |= 1u << l;
    }
    /* ignoring a fused layer ignores its parts, which the search knows by name */
    for (size_t l = 0; l < N_LINEARS; l++) {
        const int whole = BLOCK_LINEARS[l].fused_into;
        if (whole != NOT_FUSED && (mask >> whole) & 1u) mask |= 1u << l;
    }
    return mask;
}

/* The clipping search's flags for a MoE layer's linears the user ignored (qw_awq_clip_block's
 * moe_ignored: expert e's gate, up, down, then the shared expert's); NULL for a dense layer,
 * or with *st set when out of memory. */
static bool *moe_ignored_flags(const awq_plan *p, const qw_block *b, int64_t layer,
                               qw_status *st, qw_error *err) {
    const qw_moe_layout *lo = qw_hf_view_moe_layout(p->view, layer);
    if (!b->moe || !lo) return NULL;
    const int64_t n = 3 * b->moe->n_expert + 3;
    bool *flags = qw_calloc((size_t)n, sizeof *flags);
    if (!flags) {
        *st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        char module[200];
        const int64_t e = i / 3;
        if (e < b->moe->n_expert) {
            snprintf(module, sizeof module, "model.layers.%lld.%s.experts.%lld.%s",
                     (long long)layer, lo->prefix, (long long)e, lo->linear[i % 3]);
        } else {
            snprintf(module, sizeof module, "model.layers.%lld.%s.shared_expert.%s",
                     (long long)layer, lo->prefix, lo->linear[i % 3]);
        }
        flags[i] = is_ignored(&p->settings, module);
    }
    return flags;
}

/* Scales, writes and runs block `layer`; *next is the first piece after the block's. */
static qw_status run_block(run_state *rs, int64_t layer, size_t first, size_t *next,
                           qw_error *err) {
    awq_plan *p = rs->plan;
    qw_block *b = NULL;
    QW_TRY(qw_block_load(rs->fwd, layer, &b, err));
    qw_awq_params params = p->settings.params;
    params.ignored = ignored_mask(&p->settings, layer);
    params.pool = rs->ctx->pool;
    qw_awq_block_report rep;
    /* The next block's input is this block's output, scaled but not quantized. In f32 the
     * scaled block is the original to f32 rounding, so the output the search's statistics pass
     * computed (before scaling) is taken instead of a second pass; in a 16-bit dtype the
     * folded weights are rounded to it and the block is run again after scaling. The clipping
     * pass moves rs->hidden on itself. */
    const bool moved = !p->settings.clip && params.scheme.dtype == QW_QTYPE_F32;
    qw_status st = qw_awq_smooth_block(rs->fwd, b, rs->hidden, rs->n_seq, rs->seq_len, &params,
                                       rs->ctx->reporter, &rep, moved ? rs->hidden : NULL, err);
    for (int i = 0; st == QW_OK && i < rep.n_mappings; i++) {
        const qw_awq_mapping_report *r = &rep.mappings[i];
        if (r->skipped) {
            qw_log(rs->ctx->reporter, QW_LOG_DEBUG, "layer %lld: %s skipped", (long long)layer,
                   r->name);
        } else {
            qw_log(rs->ctx->reporter, QW_LOG_DEBUG,
                   "layer %lld: %s: ratio %.3f%s, error %.4g (plain rounding %.4g)",
                   (long long)layer, r->name, r->ratio, r->duo ? " with weight statistic" : "",
                   r->loss, r->loss_plain);
        }
    }
    /* the clipping pass also moves rs->hidden on, through the block before clipping */
    const bool clip = st == QW_OK && p->settings.clip;
    if (clip) {
        qw_awq_clip_report crep;
        bool *moe_ignored = moe_ignored_flags(p, b, layer, &st, err);
        if (st == QW_OK) {
            st = qw_awq_clip_block(rs->fwd, b, rs->hidden, rs->n_seq, rs->seq_len,
                                   p->settings.batch_size, &params, moe_ignored,
                                   rs->ctx->reporter, &crep, err);
        }
        qw_free(moe_ignored);
        if (st == QW_OK) {
            qw_log(rs->ctx->reporter, QW_LOG_DEBUG,
                   "layer %lld: clipped %lld of %lld groups, group error %.4g -> %.4g",
                   (long long)layer, (long long)crep.n_clipped, (long long)crep.n_groups,
                   crep.loss_before, crep.loss_after);
        }
    }
    size_t i = first;
    for (; st == QW_OK && i < p->n_pieces && p->pieces[i].layer == layer; i++) {
        st = begin_piece(&rs->out, &p->pieces[i], err);
        if (st == QW_OK) {
            st = put_block_piece(&rs->out, &p->pieces[i], b, qw_forward_norm_offset(rs->fwd),
                                 err);
        }
    }
    *next = i;
    const int64_t d = qw_forward_hidden(rs->fwd), batch = p->settings.batch_size;
    for (int64_t s0 = 0; st == QW_OK && !clip && !moved && s0 < rs->n_seq; s0 += batch) {
        const int64_t n = rs->n_seq - s0 < batch ? rs->n_seq - s0 : batch;
        st = qw_block_forward(rs->fwd, b, rs->hidden + s0 * rs->seq_len * d, n, rs->seq_len, NULL,
                              err);
    }
    qw_block_free(b);
    return st;
}

static qw_status execute_into(run_state *rs, const char *tmp_dir, qw_error *err) {
    const qw_run_context *ctx = rs->ctx;
    awq_plan *p = rs->plan;
    qw_reporter *r = ctx->reporter;
    int32_t *ids = NULL;
    QW_TRY(qw_progress(r, 1, "calibrating", "tokenizing the calibration text", err));
    QW_TRY(calibration_ids(ctx, &p->settings, &ids, &rs->n_seq, err));
    rs->seq_len = p->settings.seq_len;
    qw_log(r, QW_LOG_INFO, "calibration: %lld sequences of %lld tokens from %s",
           (long long)rs->n_seq, (long long)rs->seq_len, p->settings.dataset);
    qw_status st = qw_forward_create(p->view, p->settings.threads, &rs->fwd, err);
    const int64_t n_tok = rs->n_seq * rs->seq_len;
    if (st == QW_OK) {
        rs->hidden = qw_malloc_array((size_t)(n_tok * qw_forward_hidden(rs->fwd)),
                                     sizeof *rs->hidden);
        if (!rs->hidden) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for activations");
    }
    if (st == QW_OK) st = qw_forward_embed(rs->fwd, ids, n_tok, rs->hidden, err);
    qw_free(ids);
    const int64_t n_layer = st == QW_OK ? qw_forward_n_layer(rs->fwd) : 0;
    const double t0 = qw_now_seconds();
    size_t i = 0;
    while (st == QW_OK && i < p->n_pieces) {
        const piece *pc = &p->pieces[i];
        if (pc->layer >= 0) {
            const int64_t layer = pc->layer;
            char msg[160];
            const double elapsed = qw_now_seconds() - t0;
            if (layer > 0) {
                const double per = elapsed / (double)layer;
                snprintf(msg, sizeof msg, "block %lld/%lld, %.1f s per block, about %.0f s left",
                         (long long)layer + 1, (long long)n_layer, per,
                         per * (double)(n_layer - layer));
            } else {
                snprintf(msg, sizeof msg, "block 1/%lld", (long long)n_layer);
            }
            st = qw_progress(r, 2 + (int)(94 * layer / (n_layer ? n_layer : 1)), "quantizing",
                             msg, err);
            if (st == QW_OK) st = run_block(rs, layer, i, &i, err);
            continue;
        }
        st = begin_piece(&rs->out, pc, err);
        if (st == QW_OK) {
            st = pc->kind == PIECE_COPY ? put_copy(&rs->out, pc->src, err)
                                        : put_quantized(&rs->out, pc, NULL, err);
        }
        i++;
    }
    if (st == QW_OK && rs->out.writer) {
        qw_st_writer *w = rs->out.writer;
        rs->out.writer = NULL;
        st = qw_st_writer_finish(w, err);
    }
    if (st == QW_OK) st = qw_progress(r, 97, "writing", "config and tokenizer", err);
    if (st == QW_OK && p->n_shards > 1) st = write_index(p, tmp_dir, p->data_bytes, err);
    if (st == QW_OK) {
        json_t *config = json_deep_copy(p->config);
        json_t *qc = quantization_config(p);
        /* the GEMM layout's tensors are float16 whatever the source's dtype */
        static const char *const DTYPE_KEYS[] = {"torch_dtype", "dtype"};
        for (size_t k = 0; config && p->settings.gemm && k < 2; k++) {
            if (k == 0 || json_object_get(config, DTYPE_KEYS[k])) {
                json_object_set_new(config, DTYPE_KEYS[k], json_string("float16"));
            }
        }
        st = config && qc && json_object_set_new(config, "quantization_config", qc) == 0
                 ? qw_json_write_file(config, tmp_dir, "config.json", err)
                 : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        json_decref(config);
    }
    if (st == QW_OK) st = write_side_files(ctx->model, tmp_dir, err);
    return st;
}

static qw_status awq_execute(const qw_run_context *ctx, const qw_plan *plan,
                             qw_run_result *result, qw_error *err) {
    awq_plan *p = plan->priv;
    qw_dir_clean_stale(plan->output_path);
    char *tmp = qw_dir_temp_path(plan->output_path);
    run_state rs = {ctx, p, NULL, NULL, 0, 0,
                    {p, tmp, NULL, SIZE_MAX, NULL, 4u << 20, ctx->pool, {0}}};
    rs.out.chunk = qw_malloc(rs.out.chunk_bytes);
    qw_status st = tmp && rs.out.chunk ? qw_mkdir_p(tmp, err)
                                       : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) st = execute_into(&rs, tmp, err);
    qw_st_writer_abort(rs.out.writer);
    if (st == QW_OK) {
        st = qw_dir_publish(tmp, plan->output_path, is_quantized_checkpoint,
                            "a quantized checkpoint", err);
    }
    if (st != QW_OK && tmp) qw_dir_remove_tree(tmp); /* a failed or cancelled run leaves nothing */
    qw_free(rs.out.chunk);
    linear_codes_free(&rs.out.lc);
    qw_free(rs.hidden);
    qw_forward_free(rs.fwd);
    qw_free(tmp);
    if (st != QW_OK) return st;
    const int64_t rs_samples = rs.n_seq;
    result->file_size = p->data_bytes;
    result->data_bytes = p->data_bytes;
    result->n_elements = p->n_params;
    /* get_model_info: what was left out, and the storage of a quantized weight (4-bit code,
     * plus a scale and, asymmetric, a 4-bit zero point per group) */
    const qw_int4_scheme *sc = &p->settings.params.scheme;
    const double scale_bits = sc->dtype == QW_QTYPE_F32 ? 32.0 : 16.0;
    const double quant_bpw =
        4.0 + (scale_bits + (sc->symmetric && !p->settings.gemm ? 0.0 : 4.0)) /
                  (double)sc->group_size;
    result->details = json_pack(
        "{s:o, s:f, s:I, s:b, s:b, s:s, s:{s:s, s:I, s:I}}", "ignore", ignored_modules(p),
        "quantized_bits_per_weight", quant_bpw, "group_size", (json_int_t)sc->group_size,
        "symmetric", sc->symmetric, "clip", p->settings.clip, "layout",
        p->settings.gemm ? "gemm" : "pack-quantized", "calibration", "dataset",
        p->settings.dataset, "samples", (json_int_t)rs_samples, "seq_len",
        (json_int_t)p->settings.seq_len);
    return QW_OK;
}

/* The families the forward pass runs (forward.h); a model of another family is refused when
 * the quantizer is created, naming the supported ones. Gemma 3's multimodal checkpoints keep
 * the text model under other names and are refused too. */
static qw_status awq_check_model(const qw_model *m, qw_error *err) {
    static const char *const FAMILIES[] = {"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe",
                                           "gemma", "gemma2", "gemma3", "phi3"};
    const char *arch = m->arch ? m->arch->name : m->arch_name;
    const bool multimodal = m->multimodal;
    for (size_t i = 0; arch && !multimodal && i < sizeof FAMILIES / sizeof FAMILIES[0]; i++) {
        if (strcmp(arch, FAMILIES[i]) == 0) return QW_OK;
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "architecture", -1,
                      "%s: the awq backend does not run %s \"%s\" yet (it runs llama, mistral, "
                      "mixtral, qwen2, qwen3, qwen2moe, qwen3moe, gemma, gemma2, gemma3 text and "
                      "phi3 models)",
                      m->path, multimodal ? "the multimodal" : "architecture",
                      arch ? arch : "?");
}

const qw_backend_ops qw_awq_backend = {
    .name = "awq",
    .description = "Activation-aware int4 (W4A16) checkpoints for vLLM and transformers, "
                   "calibrated on the CPU.",
    .logger = "AWQQuantizer",
    .default_format = "int4",
    .format_count = format_count,
    .format_name = format_name,
    .format_description = format_description,
    .format_find = format_find,
    .options = awq_options,
    .n_options = sizeof awq_options / sizeof awq_options[0],
    .check_model = awq_check_model,
    .plan = awq_plan_build,
    .execute = awq_execute,
};
