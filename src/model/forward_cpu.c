/*
 * The decoder forward pass on the CPU. Matrix products go to OpenBLAS (cblas_sgemm), run
 * single-threaded on parts split over the pass's own thread pool, as are the attention heads
 * and the activations; norms, RoPE and softmax are plain loops here.
 *
 * Layout: activations are row-major [token][feature] with the sequences of a batch one after
 * the other, so a linear layer over the whole batch is one sgemm: Y = X W^T.
 */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "forward.h"
#include "half.h"
#include "json.h"
#include "pool.h"

typedef enum fwd_act { ACT_SILU, ACT_GELU_TANH, ACT_GELU } fwd_act;

static const struct {
    const char *name; /* config.json hidden_act */
    fwd_act act;
} ACTIVATIONS[] = {
    {"silu", ACT_SILU},
    {"swish", ACT_SILU},
    {"gelu_pytorch_tanh", ACT_GELU_TANH},
    {"gelu_new", ACT_GELU_TANH},
    {"gelu", ACT_GELU},
};

/* What a family does that its tensors do not show, as transformers' modeling code for it does.
 * The row is chosen by config.json's model_type; anything else runs as the llama layout. */
typedef struct fwd_family {
    const char *model_type;
    const char *name;           /* qw_forward_family */
    float norm_offset;          /* norms scale by (offset + w): Gemma's RMSNorm uses 1 + w */
    bool embed_scale;           /* embeddings times sqrt(hidden_size), rounded to the model dtype */
    bool sandwich_norms;        /* Gemma 2/3: norms after attention and MLP too (post_attention,
                                 * pre_feedforward, post_feedforward) */
    bool fused_proj;            /* Phi-3: qkv_proj and gate_up_proj */
    const char *act_key;        /* the config key naming the MLP activation (else hidden_act) */
    bool gelu_is_tanh;          /* Gemma 1: the legacy "gelu" means the tanh approximation */
    bool pre_attn_scalar;       /* scores scaled by query_pre_attn_scalar^-1/2, not head_dim's */
    int64_t slide_period;       /* 0: the window, if any, on every layer; else without
                                 * layer_types every period-th layer (1-based) is global */
    bool local_rope;            /* sliding layers: unscaled rope with rope_local_base_freq */
    bool moe_renorm;            /* Mixtral: the top-k routing weights always sum to 1 (the
                                 * Qwen MoE families follow config.json's norm_topk_prob) */
} fwd_family;

static const fwd_family LLAMA_FAMILY = {NULL, "llama", 0.0f, false, false, false, "hidden_act",
                                        false, false, 0, false, false};
static const fwd_family FAMILIES[] = {
    {"gemma", "gemma", 1.0f, true, false, false, "hidden_act", true, false, 0, false, false},
    {"gemma2", "gemma2", 1.0f, true, true, false, "hidden_activation", false, true, 2, false,
     false},
    {"gemma3_text", "gemma3", 1.0f, true, true, false, "hidden_activation", false, true, 6, true,
     false},
    {"phi3", "phi3", 0.0f, false, false, true, "hidden_act", false, false, 0, false, false},
    /* the llama layout with sparse MoE layers */
    {"mixtral", "llama", 0.0f, false, false, false, "hidden_act", false, false, 0, false, true},
};

struct qw_forward {
    const qw_hf_view *view;
    const fwd_family *fam;
    qw_hparams hp;
    int64_t head_dim, q_width, kv_width;
    float rms_eps;
    fwd_act act;
    int64_t sliding_window; /* 0: every earlier token is visible */
    bool *sliding;          /* [n_layer]: whether the window applies; NULL: on every layer */
    float *inv_freq;        /* [head_dim / 2], rope scaling applied */
    float *inv_freq_local;  /* sliding layers' (Gemma 3), or NULL */
    float *inv_freq_long;   /* longrope beyond its original context, or NULL */
    int64_t long_after;     /* longrope: sequences longer than this use inv_freq_long */
    float rope_attn_factor; /* longrope: cos and sin are scaled by it (else 1) */
    float embed_scale;      /* 0: none */
    float attn_scale;
    float attn_softcap, final_softcap; /* 0: none */
    const qw_hf_tensor *embed, *final_norm, *lm_head;
    /* The pass's threads. OpenBLAS runs single-threaded and the work is split here instead:
     * OpenBLAS's own threads spin between calls, competing for the cores with everything in
     * between (attention, activations, the AWQ search's fake quantization). */
    qw_pool *pool;
    int n_threads;
};

/* ---- small helpers -------------------------------------------------------------------------- */

static qw_status oom(qw_error *err) {
    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory in the forward pass");
}

/* ---- matrix products over the pool ---------------------------------------------------------- */

typedef struct gemm_job {
    bool trans_a, trans_b;
    int64_t n, k;
    float alpha;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    float beta;
    float *c;
    int64_t ldc;
} gemm_job;

/* rows [begin, end) of C; A's rows are its columns when transposed */
static void gemm_rows(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const gemm_job *j = ctx;
    const int64_t r0 = (int64_t)begin, m = (int64_t)(end - begin);
    const float *a = j->trans_a ? j->a + r0 : j->a + r0 * j->lda;
    cblas_sgemm(CblasRowMajor, j->trans_a ? CblasTrans : CblasNoTrans,
                j->trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)j->n, (int)j->k, j->alpha, a,
                (int)j->lda, j->b, (int)j->ldb, j->beta, j->c + r0 * j->ldc, (int)j->ldc);
}

void qw_forward_gemm(const qw_forward *f, bool trans_a, bool trans_b, int64_t m, int64_t n,
                     int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                     int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm_job job = {trans_a, trans_b, n, k, alpha, a, lda, b, ldb, beta, c, ldc};
    /* one part per thread, in whole 16-row panels: each part big enough for the kernel */
    const int64_t per = (m + f->n_threads - 1) / f->n_threads;
    const int64_t grain = per < 16 ? 16 : (per + 15) / 16 * 16;
    if (!f->pool || m <= grain) {
        gemm_rows(&job, 0, (size_t)m, 0);
        return;
    }
    qw_pool_run(f->pool, (size_t)m, (size_t)grain, gemm_rows, &job);
}

/* A Gram matrix is symmetric: ssyrk computes one triangle, half of sgemm's work. The upper
 * triangle is cut into row panels, each a small ssyrk on the diagonal and an sgemm right of
 * it; the panels shrink down the matrix, so the pool takes them one at a time, largest first. */
#define GRAM_PANEL 64

typedef struct gram_job {
    int64_t n, k;
    const float *a;
    int64_t lda;
    float *c;
    int64_t ldc;
} gram_job;

static void gram_panels(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const gram_job *j = ctx;
    for (size_t p = begin; p < end; p++) {
        const int64_t r0 = (int64_t)p * GRAM_PANEL;
        const int64_t r1 = r0 + GRAM_PANEL < j->n ? r0 + GRAM_PANEL : j->n, m = r1 - r0;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)m, (int)j->k, 1.0f, j->a + r0,
                    (int)j->lda, 0.0f, j->c + r0 * j->ldc + r0, (int)j->ldc);
        if (r1 < j->n) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)(j->n - r1),
                        (int)j->k, 1.0f, j->a + r0, (int)j->lda, j->a + r1, (int)j->lda, 0.0f,
                        j->c + r0 * j->ldc + r1, (int)j->ldc);
        }
    }
}

void qw_forward_gram(const qw_forward *f, int64_t n, int64_t k, const float *a, int64_t lda,
                     float *c, int64_t ldc) {
    gram_job job = {n, k, a, lda, c, ldc};
    const size_t panels = (size_t)((n + GRAM_PANEL - 1) / GRAM_PANEL);
    if (f->pool && panels > 1) {
        qw_pool_run(f->pool, panels, 1, gram_panels, &job);
    } else {
        gram_panels(&job, 0, panels, 0);
    }
}

/* Y[n x n_out] = X[n x n_in] W^T (+ b) */
void qw_linear_forward(const qw_forward *f, const qw_linear *l, const float *x, int64_t n,
                       float *y) {
    qw_forward_gemm(f, false, true, n, l->n_out, l->n_in, 1.0f, x, l->n_in, l->w, l->n_in, 0.0f,
                    y, l->n_out);
    if (l->b) {
        for (int64_t i = 0; i < n; i++) {
            float *row = y + i * l->n_out;
            for (int64_t j = 0; j < l->n_out; j++) row[j] += l->b[j];
        }
    }
}

/* transformers' RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, mean taken in f32 */
static void rms_norm(const float *x, const float *weight, int64_t n_rows, int64_t width,
                     float eps, float *y) {
    for (int64_t i = 0; i < n_rows; i++) {
        const float *xi = x + i * width;
        float *yi = y + i * width;
        float sum = 0.0f;
        for (int64_t j = 0; j < width; j++) sum += xi[j] * xi[j];
        float scale = 1.0f / sqrtf(sum / (float)width + eps);
        for (int64_t j = 0; j < width; j++) yi[j] = weight[j] * (xi[j] * scale);
    }
}

static float activate(fwd_act act, float x) {
    switch (act) { /* three formulas, not data: a table of function pointers would hide them */
    case ACT_SILU:
        return x / (1.0f + expf(-x));
    case ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case ACT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    }
    return x;
}

/* ---- set-up --------------------------------------------------------------------------------- */

/* inv = 1 / (factor_i * theta ^ (2i / head_dim)) into a new array (factors NULL: all 1) */
static float *base_frequencies(const qw_forward *f, double theta, const float *factors) {
    int64_t half = f->head_dim / 2;
    float *inv = qw_malloc_array((size_t)half, sizeof *inv);
    if (!inv) return NULL;
    for (int64_t i = 0; i < half; i++) {
        /* torch computes base ** (arange(0, dim, 2) / dim) in f32 and inverts it in f32 */
        float expo = (float)(2 * i) / (float)f->head_dim;
        inv[i] = factors ? 1.0f / (factors[i] * powf((float)theta, expo))
                         : 1.0f / powf((float)theta, expo);
    }
    return inv;
}

/* Phi-3's longrope: short factors up to the original context, long ones beyond it, and cos/sin
 * scaled by sqrt(1 + ln(factor) / ln(original context)) when the context was extended */
static qw_status longrope_frequencies(qw_forward *f, double theta, qw_error *err) {
    const qw_hparams *hp = &f->hp;
    if (hp->n_rope_factors * 2 != f->head_dim || hp->longrope_orig_ctx <= 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "rope_scaling", -1,
                          "config.json: longrope rope_scaling needs head_dim / 2 = %lld long and "
                          "short factors and original_max_position_embeddings (it has %lld "
                          "factors, original context %lld)",
                          (long long)(f->head_dim / 2), (long long)hp->n_rope_factors,
                          (long long)hp->longrope_orig_ctx);
    }
    const json_t *config = NULL;
    QW_TRY(qw_hf_view_config(f->view, &config, err));
    double attn = 1.0;
    QW_TRY(qw_longrope_attention_factor(config, hp, &attn, err));
    f->rope_attn_factor = (float)attn;
    f->long_after = hp->longrope_orig_ctx;
    f->inv_freq = base_frequencies(f, theta, hp->rope_short_factor);
    f->inv_freq_long = base_frequencies(f, theta, hp->rope_long_factor);
    return f->inv_freq && f->inv_freq_long ? QW_OK : oom(err);
}

/* inv_freq as transformers' rope initialisation computes it, with the config's scaling */
static qw_status rope_frequencies(qw_forward *f, qw_error *err) {
    const qw_hparams *hp = &f->hp;
    int64_t half = f->head_dim / 2;
    double theta = hp->has_rope_theta ? hp->rope_theta : 10000.0;
    f->rope_attn_factor = 1.0f;
    if (f->fam->local_rope) { /* Gemma 3's sliding layers: their own base, never scaled */
        f->inv_freq_local =
            base_frequencies(f, hp->has_rope_theta_swa ? hp->rope_theta_swa : 10000.0, NULL);
        if (!f->inv_freq_local) return oom(err);
    }
    if (strcmp(hp->rope_type, "longrope") == 0 || strcmp(hp->rope_type, "su") == 0) {
        return longrope_frequencies(f, theta, err);
    }
    f->inv_freq = base_frequencies(f, theta, NULL);
    if (!f->inv_freq) return oom(err);
    if (!hp->rope_type[0] || strcmp(hp->rope_type, "default") == 0) return QW_OK;
    if (strcmp(hp->rope_type, "linear") == 0) {
        for (int64_t i = 0; i < half; i++) f->inv_freq[i] /= (float)hp->rope_factor;
        return QW_OK;
    }
    if (strcmp(hp->rope_type, "llama3") == 0) {
        /* wavelengths longer than orig_ctx / low_freq_factor are slowed by `factor`, shorter
         * than orig_ctx / high_freq_factor kept, and blended in between */
        double factor = hp->rope_factor, lo = hp->rope_low_freq_factor,
               hi = hp->rope_high_freq_factor, orig = (double)hp->rope_orig_ctx;
        double lo_wavelen = orig / lo, hi_wavelen = orig / hi;
        for (int64_t i = 0; i < half; i++) {
            float inv = f->inv_freq[i];
            double wavelen = 2.0 * 3.14159265358979323846 / inv;
            if (wavelen > lo_wavelen) {
                f->inv_freq[i] = (float)(inv / factor);
            } else if (wavelen >= hi_wavelen) {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f->inv_freq[i] = (float)((1.0 - smooth) * inv / factor + smooth * inv);
            }
        }
        return QW_OK;
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "rope_scaling", -1,
                      "config.json: rope_scaling type \"%s\" is not supported by the forward "
                      "pass (none, linear, llama3 and longrope are)",
                      hp->rope_type);
}

static const qw_hf_tensor *find_tensor(const qw_hf_view *v, const char *name, bool required,
                                       qw_status *st, qw_error *err) {
    const qw_hf_tensor *t = qw_hf_view_find(v, name);
    if (!t && required && *st == QW_OK) {
        *st = qw_fail_at(err, QW_ERR_CORRUPT, name, -1, "the model has no tensor \"%s\"", name);
    }
    return t;
}

/* The family row for config.json's model_type (the llama row for any other type). Gemma 3's
 * multimodal type is refused: its text model sits under other tensor names; so is
 * bidirectional attention. */
static qw_status pick_family(const json_t *config, const fwd_family **out, qw_error *err) {
    *out = &LLAMA_FAMILY;
    const json_t *mt = json_object_get(config, "model_type");
    const char *type = json_is_string(mt) ? json_string_value(mt) : "";
    if (json_is_true(json_object_get(config, "use_bidirectional_attention"))) {
        /* EmbeddingGemma-style encoders: not a causal decoder */
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "use_bidirectional_attention", -1,
                          "config.json: use_bidirectional_attention is not supported by the "
                          "forward pass (it runs causal decoders)");
    }
    if (strcmp(type, "gemma3") == 0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "model_type", -1,
                          "config.json: model_type \"gemma3\" (the multimodal Gemma 3) is not "
                          "supported by the forward pass; the text-only gemma3_text is");
    }
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++) {
        if (strcmp(type, FAMILIES[i].model_type) == 0) *out = &FAMILIES[i];
    }
    return QW_OK;
}

/* Which layers the sliding window masks (qw_sliding_layers; the family's period: Gemma 2 even
 * layers, Gemma 3 all but every sliding_window_pattern-th; else max_window_layers) */
static qw_status sliding_layers(qw_forward *f, const json_t *config, qw_error *err) {
    const int64_t n = f->hp.n_layer;
    f->sliding = qw_calloc((size_t)(n > 0 ? n : 1), sizeof *f->sliding);
    if (!f->sliding) return oom(err);
    return qw_sliding_layers(config, &f->hp, f->fam->slide_period, f->sliding, err);
}

/* Gemma's extras: the embedding scale in the model dtype (transformers multiplies by
 * tensor(sqrt(hidden)).to(weight dtype)), the score scale and the soft caps */
static qw_status family_scales(qw_forward *f, const json_t *config, qw_error *err) {
    const qw_hparams *hp = &f->hp;
    if (f->fam->embed_scale) {
        float scale = (float)sqrt((double)hp->n_embd);
        const qw_hf_tensor *e = qw_hf_view_find(f->view, "model.embed_tokens.weight");
        if (e && e->raw && e->raw_type == QW_QTYPE_BF16) {
            scale = qw_bf16_to_fp32(qw_fp32_to_bf16(scale));
        } else if (e && e->raw && e->raw_type == QW_QTYPE_F16) {
            scale = qw_fp16_to_fp32(qw_fp32_to_fp16(scale));
        }
        f->embed_scale = scale;
    }
    if (f->fam->pre_attn_scalar) {
        double scalar = 256.0; /* transformers' Gemma2Config / Gemma3TextConfig default */
        QW_TRY(qw_json_get_number(config, "query_pre_attn_scalar", "config.json", &scalar, NULL,
                                  err));
        if (!(scalar > 0.0)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "query_pre_attn_scalar", -1,
                              "config.json: query_pre_attn_scalar %g is not positive", scalar);
        }
        f->attn_scale = (float)pow(scalar, -0.5);
    }
    if (hp->has_attn_softcap) f->attn_softcap = (float)hp->attn_softcap;
    if (hp->has_final_softcap) f->final_softcap = (float)hp->final_softcap;
    if (f->attn_softcap < 0.0f || f->final_softcap < 0.0f) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "attn_logit_softcapping", -1,
                          "config.json: a logit soft cap is negative");
    }
    return QW_OK;
}

/* the activation named by the family's key (hidden_act when absent) */
static qw_status pick_activation(qw_forward *f, const json_t *config, qw_error *err) {
    const json_t *act = json_object_get(config, f->fam->act_key);
    const char *key = f->fam->act_key;
    if (!json_is_string(act)) {
        act = json_object_get(config, "hidden_act");
        key = "hidden_act";
    }
    const char *name = json_is_string(act) ? json_string_value(act) : "silu";
    if (f->fam->gelu_is_tanh && strcmp(name, "gelu") == 0) name = "gelu_pytorch_tanh";
    size_t i = 0, n = sizeof ACTIVATIONS / sizeof ACTIVATIONS[0];
    while (i < n && strcmp(ACTIVATIONS[i].name, name) != 0) i++;
    if (i == n) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, key, -1,
                          "config.json: %s \"%s\" is not supported by the forward pass", key,
                          name);
    }
    f->act = ACTIVATIONS[i].act;
    return QW_OK;
}

qw_status qw_forward_create(const qw_hf_view *view, int n_threads, qw_forward **out,
                            qw_error *err) {
    *out = NULL;
    const json_t *config;
    QW_TRY(qw_hf_view_config(view, &config, err));
    qw_forward *f = qw_calloc(1, sizeof *f);
    if (!f) return oom(err);
    f->view = view;
    qw_status st = pick_family(config, &f->fam, err);
    if (st == QW_OK) st = qw_hparams_from_config(config, "config.json", &f->hp, err);
    const qw_hparams *hp = &f->hp;
    if (st == QW_OK) {
        f->head_dim = hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head;
        f->q_width = hp->n_head * f->head_dim;
        f->kv_width = hp->n_head_kv * f->head_dim;
        f->rms_eps = hp->has_rms_eps ? (float)hp->rms_eps : 1e-6f;
        if (f->head_dim <= 0 || f->head_dim % 2 || hp->n_head_kv <= 0 ||
            hp->n_head % hp->n_head_kv) {
            st = qw_fail(err, QW_ERR_CORRUPT,
                         "config.json: head_dim %lld with %lld heads and %lld key/value heads "
                         "cannot be run", (long long)f->head_dim, (long long)hp->n_head,
                         (long long)hp->n_head_kv);
        } else if (hp->partial_rotary_factor != 0.0 && hp->partial_rotary_factor != 1.0) {
            st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "partial_rotary_factor", -1,
                            "config.json: partial_rotary_factor %g is not supported by the "
                            "forward pass", hp->partial_rotary_factor);
        }
    }
    if (st == QW_OK) st = pick_activation(f, config, err);
    if (st == QW_OK) {
        f->attn_scale = 1.0f / sqrtf((float)f->head_dim);
        st = family_scales(f, config, err);
    }
    if (st == QW_OK) {
        /* Mistral masks beyond its window; Qwen2/3 state a window but switch it off, or on
         * for their layers from max_window_layers */
        const json_t *use = json_object_get(config, "use_sliding_window");
        if (hp->sliding_window > 0 && !json_is_false(use)) f->sliding_window = hp->sliding_window;
        if (f->fam->slide_period > 0 || f->sliding_window > 0) st = sliding_layers(f, config, err);
    }
    if (st == QW_OK) st = rope_frequencies(f, err);
    f->embed = find_tensor(view, "model.embed_tokens.weight", true, &st, err);
    f->final_norm = find_tensor(view, "model.norm.weight", true, &st, err);
    f->lm_head = find_tensor(view, "lm_head.weight", false, &st, err);
    if (!f->lm_head) f->lm_head = f->embed; /* tied */
    if (st == QW_OK && (f->embed->ne[0] != hp->n_embd || f->lm_head->ne[0] != hp->n_embd)) {
        st = qw_fail(err, QW_ERR_CORRUPT, "embedding rows of %lld do not match hidden_size %lld",
                     (long long)f->embed->ne[0], (long long)hp->n_embd);
    }
    if (st != QW_OK) {
        qw_forward_free(f);
        return st;
    }
    f->n_threads = n_threads > 0 ? n_threads : qw_cpu_count();
    if (f->n_threads > 1) st = qw_pool_create(f->n_threads, &f->pool, err);
    if (st != QW_OK) {
        qw_forward_free(f);
        return st;
    }
    openblas_set_num_threads(1);
    *out = f;
    return QW_OK;
}

void qw_forward_free(qw_forward *f) {
    if (!f) return;
    qw_free(f->inv_freq);
    qw_free(f->inv_freq_local);
    qw_free(f->inv_freq_long);
    qw_free(f->sliding);
    qw_pool_free(f->pool);
    qw_free(f);
}

int64_t qw_forward_n_layer(const qw_forward *f) { return f->hp.n_layer; }
int64_t qw_forward_hidden(const qw_forward *f) { return f->hp.n_embd; }
int64_t qw_forward_vocab(const qw_forward *f) { return f->lm_head->n_rows; }
int64_t qw_forward_intermediate(const qw_forward *f) { return f->hp.n_ff; }
int64_t qw_forward_q_width(const qw_forward *f) { return f->q_width; }
const char *qw_forward_family(const qw_forward *f) { return f->fam->name; }
float qw_forward_norm_offset(const qw_forward *f) { return f->fam->norm_offset; }

qw_status qw_forward_embed(const qw_forward *f, const int32_t *ids, int64_t n_tokens,
                           float *hidden, qw_error *err) {
    for (int64_t i = 0; i < n_tokens; i++) {
        if (ids[i] < 0 || ids[i] >= f->embed->n_rows) {
            return qw_fail(err, QW_ERR_INVALID_ARG,
                           "token id %d at position %lld is outside the vocabulary of %lld",
                           ids[i], (long long)i, (long long)f->embed->n_rows);
        }
        float *row = hidden + i * f->hp.n_embd;
        QW_TRY(qw_hf_tensor_read_f32(f->embed, ids[i], 1, row, err));
        if (f->embed_scale != 0.0f) {
            for (int64_t j = 0; j < f->hp.n_embd; j++) row[j] *= f->embed_scale;
        }
    }
    return QW_OK;
}

/* ---- block weights -------------------------------------------------------------------------- */

/* Reads `name` as f32, checking its shape (n_in 0: a vector of n_out). */
static qw_status load_f32(const qw_forward *f, const char *name, int64_t n_out, int64_t n_in,
                          bool required, float **out, qw_error *err) {
    *out = NULL;
    const qw_hf_tensor *t = qw_hf_view_find(f->view, name);
    if (!t) {
        return required ? qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                                     "the model has no tensor \"%s\"", name)
                        : QW_OK;
    }
    bool vector = n_in == 0;
    int64_t rows = vector ? 1 : n_out, cols = vector ? n_out : n_in;
    if (t->ne[0] != cols || t->n_rows != rows) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "tensor \"%s\" is %lld x %lld, the config makes it %lld x %lld", name,
                          (long long)t->n_rows, (long long)t->ne[0], (long long)rows,
                          (long long)cols);
    }
    float *data = qw_malloc_array((size_t)(rows * cols), sizeof *data);
    if (!data) return oom(err);
    qw_status st = qw_hf_tensor_read_f32(t, 0, rows, data, err);
    if (st != QW_OK) {
        qw_free(data);
        return st;
    }
    *out = data;
    return QW_OK;
}

static qw_status load_linear(const qw_forward *f, int64_t layer, const char *module,
                             int64_t n_out, int64_t n_in, qw_linear *l, qw_error *err) {
    char name[256];
    l->n_out = n_out;
    l->n_in = n_in;
    /* module names come from the tables here, far shorter than the buffer */
    if (snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer, module) >=
        (int)sizeof name) {
        return qw_fail(err, QW_ERR_INTERNAL, "tensor name of %s too long", module);
    }
    QW_TRY(load_f32(f, name, n_out, n_in, true, &l->w, err));
    snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)layer, module);
    return load_f32(f, name, n_out, 0, false, &l->b, err);
}

static void moe_free(qw_moe *m);

static qw_status load_expert(const qw_forward *f, int64_t layer, const char *prefix,
                             const qw_moe_layout *layout, int64_t ff, qw_expert *e,
                             qw_error *err) {
    char module[160];
    const int64_t d = f->hp.n_embd;
    qw_linear *const linears[3] = {&e->gate, &e->up, &e->down};
    for (int i = 0; i < 3; i++) { /* gate and up: d -> ff; down: ff -> d */
        if (snprintf(module, sizeof module, "%s.%s", prefix, layout->linear[i]) >=
            (int)sizeof module) {
            return qw_fail(err, QW_ERR_INTERNAL, "module name %s too long", prefix);
        }
        QW_TRY(load_linear(f, layer, module, i < 2 ? ff : d, i < 2 ? d : ff, linears[i], err));
    }
    return QW_OK;
}

static qw_status load_moe(const qw_forward *f, int64_t layer, qw_moe **out, qw_error *err) {
    *out = NULL;
    const qw_hparams *hp = &f->hp;
    char name[160];
    const qw_moe_layout *layout = qw_hf_view_moe_layout(f->view, layer);
    if (!layout) return QW_OK; /* dense */
    snprintf(name, sizeof name, "model.layers.%lld.%s.gate.weight", (long long)layer,
             layout->prefix);
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "%s: a router, but config.json gives %lld experts with %lld used per "
                          "token", name, (long long)hp->n_expert, (long long)hp->n_expert_used);
    }
    qw_moe *m = qw_calloc(1, sizeof *m);
    if (!m) return oom(err);
    m->n_expert = hp->n_expert;
    m->n_used = hp->n_expert_used;
    m->renorm = f->fam->moe_renorm || hp->norm_topk_prob == QW_TOPK_NORM_ON;
    const char *prefix = layout->prefix;
    const int64_t d = hp->n_embd, ff = hp->n_ff_exp > 0 ? hp->n_ff_exp : hp->n_ff;
    char module[160];
    snprintf(module, sizeof module, "%s.gate", prefix);
    qw_status st = load_linear(f, layer, module, m->n_expert, d, &m->router, err);
    m->experts = st == QW_OK ? qw_calloc((size_t)m->n_expert, sizeof *m->experts) : NULL;
    if (st == QW_OK && !m->experts) st = oom(err);
    for (int64_t e = 0; st == QW_OK && e < m->n_expert; e++) {
        snprintf(module, sizeof module, "%s.experts.%lld", prefix, (long long)e);
        st = load_expert(f, layer, module, layout, ff, &m->experts[e], err);
    }
    /* Qwen2-MoE's shared expert, present whenever its gate is */
    snprintf(name, sizeof name, "model.layers.%lld.%s.shared_expert_gate.weight",
             (long long)layer, prefix);
    if (st == QW_OK && qw_hf_view_find(f->view, name)) {
        if (hp->n_ff_shexp <= 0) {
            st = qw_fail_at(err, QW_ERR_CORRUPT, "shared_expert_intermediate_size", -1,
                            "config.json: %s is present but shared_expert_intermediate_size is "
                            "not", name);
        }
        snprintf(module, sizeof module, "%s.shared_expert_gate", prefix);
        if (st == QW_OK) st = load_linear(f, layer, module, 1, d, &m->shared_gate, err);
        snprintf(module, sizeof module, "%s.shared_expert", prefix);
        if (st == QW_OK) {
            st = load_expert(f, layer, module, layout, hp->n_ff_shexp, &m->shared, err);
        }
    }
    if (st != QW_OK) {
        moe_free(m);
        return st;
    }
    *out = m;
    return QW_OK;
}

qw_status qw_block_load(const qw_forward *f, int64_t layer, qw_block **out, qw_error *err) {
    *out = NULL;
    if (layer < 0 || layer >= f->hp.n_layer) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "layer %lld: the model has %lld", (long long)layer,
                       (long long)f->hp.n_layer);
    }
    qw_block *b = qw_calloc(1, sizeof *b);
    if (!b) return oom(err);
    b->layer = layer;
    const int64_t d = f->hp.n_embd, ff = f->hp.n_ff;
    char name[160];
    qw_status st = QW_OK;
    static const struct {
        const char *suffix;
        size_t field; /* offset of the float * in qw_block */
        bool per_head; /* [head_dim] rather than [hidden] */
        bool required;
        bool sandwich; /* only in the sandwich-norm families, and required there */
    } NORMS[] = {
        {"input_layernorm", offsetof(qw_block, attn_norm), false, true, false},
        {"post_attention_layernorm", offsetof(qw_block, ffn_norm), false, true, false},
        {"pre_feedforward_layernorm", offsetof(qw_block, pre_ffn_norm), false, true, true},
        {"post_feedforward_layernorm", offsetof(qw_block, post_ffn_norm), false, true, true},
        {"self_attn.q_norm", offsetof(qw_block, q_norm), true, false, false},
        {"self_attn.k_norm", offsetof(qw_block, k_norm), true, false, false},
    };
    for (size_t i = 0; st == QW_OK && i < sizeof NORMS / sizeof NORMS[0]; i++) {
        if (NORMS[i].sandwich && !f->fam->sandwich_norms) continue;
        snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer,
                 NORMS[i].suffix);
        float **field = (float **)((char *)b + NORMS[i].field);
        const int64_t n = NORMS[i].per_head ? f->head_dim : d;
        st = load_f32(f, name, n, 0, NORMS[i].required, field, err);
        /* Gemma: 1 + w in f32, as GemmaRMSNorm computes (1.0 + weight.float()) */
        if (st == QW_OK && *field && f->fam->norm_offset != 0.0f) {
            for (int64_t j = 0; j < n; j++) (*field)[j] += f->fam->norm_offset;
        }
    }
    if (st == QW_OK && !b->q_norm != !b->k_norm) {
        st = qw_fail(err, QW_ERR_CORRUPT, "layer %lld has a q_norm or a k_norm but not both",
                     (long long)layer);
    }
    /* fused: Phi-3's tensors, whose rows are the parts' rows one after the other; a part
     * (q/k/v, gate/up) then views its rows of the fused one */
    enum { SEPARATE = 1, FUSED = 2, PART = 4 };
    static const struct {
        const char *module;
        size_t field;
        char n_out, n_in; /* 'd' hidden, 'q' q width, 'k' kv width, 'f' intermediate,
                           * 'Q' q + 2 kv widths, 'F' 2 intermediate */
        int kind;         /* SEPARATE: in every family; FUSED / PART: by fused_proj */
        size_t whole;     /* PART: the fused linear it is part of */
    } LINEARS[] = {
        {"self_attn.qkv_proj", offsetof(qw_block, qkv), 'Q', 'd', FUSED, 0},
        {"self_attn.q_proj", offsetof(qw_block, q), 'q', 'd', PART, offsetof(qw_block, qkv)},
        {"self_attn.k_proj", offsetof(qw_block, k), 'k', 'd', PART, offsetof(qw_block, qkv)},
        {"self_attn.v_proj", offsetof(qw_block, v), 'k', 'd', PART, offsetof(qw_block, qkv)},
        {"self_attn.o_proj", offsetof(qw_block, o), 'd', 'q', SEPARATE, 0},
        {"mlp.gate_up_proj", offsetof(qw_block, gate_up), 'F', 'd', FUSED, 0},
        {"mlp.gate_proj", offsetof(qw_block, gate), 'f', 'd', PART, offsetof(qw_block, gate_up)},
        {"mlp.up_proj", offsetof(qw_block, up), 'f', 'd', PART, offsetof(qw_block, gate_up)},
        {"mlp.down_proj", offsetof(qw_block, down), 'd', 'f', SEPARATE, 0},
    };
    /* a sparse layer's MLP is its experts (a MoE model's dense layers keep mlp.*_proj) */
    if (st == QW_OK) st = load_moe(f, layer, &b->moe, err);
    int64_t row_in_whole = 0; /* first row of the next part in its fused linear */
    for (size_t i = 0; st == QW_OK && i < sizeof LINEARS / sizeof LINEARS[0]; i++) {
        const bool fused = f->fam->fused_proj;
        if (LINEARS[i].kind == FUSED && !fused) continue;
        if (b->moe && strncmp(LINEARS[i].module, "mlp.", 4) == 0) continue;
        int64_t dims[2];
        const char which[2] = {LINEARS[i].n_out, LINEARS[i].n_in};
        for (int k = 0; k < 2; k++) {
            dims[k] = which[k] == 'd'   ? d
                      : which[k] == 'q' ? f->q_width
                      : which[k] == 'k' ? f->kv_width
                      : which[k] == 'Q' ? f->q_width + 2 * f->kv_width
                      : which[k] == 'F' ? 2 * ff
                                        : ff;
        }
        qw_linear *l = (qw_linear *)((char *)b + LINEARS[i].field);
        if (LINEARS[i].kind == FUSED) row_in_whole = 0;
        if (LINEARS[i].kind == PART && fused) {
            const qw_linear *whole = (const qw_linear *)((const char *)b + LINEARS[i].whole);
            *l = (qw_linear){whole->w + row_in_whole * dims[1],
                             whole->b ? whole->b + row_in_whole : NULL, dims[0], dims[1]};
            row_in_whole += dims[0];
            continue;
        }
        st = load_linear(f, layer, LINEARS[i].module, dims[0], dims[1], l, err);
    }
    if (st != QW_OK) {
        qw_block_free(b);
        return st;
    }
    *out = b;
    return QW_OK;
}

static void linear_free(qw_linear *l) {
    qw_free(l->w);
    qw_free(l->b);
}

static void expert_free(qw_expert *e) {
    linear_free(&e->gate);
    linear_free(&e->up);
    linear_free(&e->down);
}

static void moe_free(qw_moe *m) {
    if (!m) return;
    linear_free(&m->router);
    for (int64_t e = 0; m->experts && e < m->n_expert; e++) expert_free(&m->experts[e]);
    qw_free(m->experts);
    expert_free(&m->shared);
    linear_free(&m->shared_gate);
    qw_free(m);
}

void qw_block_free(qw_block *b) {
    if (!b) return;
    qw_free(b->attn_norm);
    qw_free(b->ffn_norm);
    qw_free(b->pre_ffn_norm);
    qw_free(b->post_ffn_norm);
    qw_free(b->q_norm);
    qw_free(b->k_norm);
    /* the parts of a loaded fused linear are views of it */
    const bool qkv_fused = b->qkv.w != NULL, gate_up_fused = b->gate_up.w != NULL;
    qw_linear *ls[] = {&b->o, &b->down, &b->qkv, &b->gate_up};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) linear_free(ls[i]);
    qw_linear *parts[] = {&b->q, &b->k, &b->v, &b->gate, &b->up};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (!(i < 3 ? qkv_fused : gate_up_fused)) linear_free(parts[i]);
    }
    moe_free(b->moe);
    qw_free(b);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* The frequencies a layer's RoPE uses over sequences of seq_len tokens */
static const float *layer_frequencies(const qw_forward *f, int64_t layer, int64_t seq_len) {
    if (f->inv_freq_local && f->sliding && f->sliding[layer]) return f->inv_freq_local;
    if (f->inv_freq_long && seq_len > f->long_after) return f->inv_freq_long;
    return f->inv_freq;
}

/* how many tokens back a layer sees (0: all) */
static int64_t layer_window(const qw_forward *f, int64_t layer) {
    return f->sliding && !f->sliding[layer] ? 0 : f->sliding_window;
}

/* rotate-half RoPE on every head of n rows of `width` floats, positions restarting each seq */
static void apply_rope(const qw_forward *f, const float *inv_freq, float *x, int64_t n_seq,
                       int64_t seq_len, int64_t width, float *cos_sin) {
    const int64_t half = f->head_dim / 2, n_heads = width / f->head_dim;
    for (int64_t pos = 0; pos < seq_len; pos++) {
        for (int64_t i = 0; i < half; i++) {
            /* transformers multiplies position by inv_freq in f32, then cos/sin of that
             * (times longrope's attention factor, 1 otherwise) */
            float angle = (float)pos * inv_freq[i];
            cos_sin[2 * i] = cosf(angle);
            cos_sin[2 * i + 1] = sinf(angle);
            if (f->rope_attn_factor != 1.0f) {
                cos_sin[2 * i] *= f->rope_attn_factor;
                cos_sin[2 * i + 1] *= f->rope_attn_factor;
            }
        }
        for (int64_t s = 0; s < n_seq; s++) {
            float *row = x + (s * seq_len + pos) * width;
            for (int64_t h = 0; h < n_heads; h++) {
                float *head = row + h * f->head_dim;
                for (int64_t i = 0; i < half; i++) {
                    float c = cos_sin[2 * i], sn = cos_sin[2 * i + 1];
                    float x1 = head[i], x2 = head[i + half];
                    head[i] = x1 * c - x2 * sn;
                    head[i + half] = x2 * c + x1 * sn;
                }
            }
        }
    }
}

/* Rows [i0, i1) of the causal softmax, row i at scores + (i - i0) * ld holding keys [0, i1);
 * softcap > 0: scores become tanh(score / cap) * cap first (Gemma 2) */
static void softmax_causal(float *scores, int64_t i0, int64_t i1, int64_t ld, int64_t window,
                           float softcap) {
    for (int64_t i = i0; i < i1; i++) {
        float *row = scores + (i - i0) * ld;
        int64_t first = window > 0 && i >= window ? i - window + 1 : 0;
        if (softcap > 0.0f) {
            for (int64_t j = first; j <= i; j++) row[j] = tanhf(row[j] / softcap) * softcap;
        }
        float max = -INFINITY;
        for (int64_t j = first; j <= i; j++) max = row[j] > max ? row[j] : max;
        float sum = 0.0f;
        for (int64_t j = 0; j < i1; j++) {
            float e = j >= first && j <= i ? expf(row[j] - max) : 0.0f;
            row[j] = e;
            sum += e;
        }
        for (int64_t j = first; j <= i; j++) row[j] /= sum;
    }
}

/* softmax(q k^T * scale) v for one (sequence, head) per item, items split over the pool; each
 * thread has its own score matrix. Queries go in blocks of QUERY_BLOCK rows, each against the
 * keys up to its last row only: the causal mask zeroes the rest, and skipping them saves 3/8 of
 * the products on 256-token sequences. (The skipped terms were exact zeros, but OpenBLAS may
 * order a smaller product's sums differently: results move by float rounding.) */
#define QUERY_BLOCK 64

typedef struct attention_job {
    const qw_forward *f;
    int64_t seq_len, window;
    const float *q, *k, *v;
    float *ctx;
    float *scores; /* [threads][seq_len][seq_len] */
} attention_job;

static void attention_heads(void *arg, size_t begin, size_t end, int worker) {
    const attention_job *j = arg;
    const qw_forward *f = j->f;
    const int64_t seq_len = j->seq_len, hd = f->head_dim;
    const int64_t group = f->hp.n_head / f->hp.n_head_kv;
    float *scores = j->scores + (int64_t)worker * seq_len * seq_len;
    for (size_t item = begin; item < end; item++) {
        const int64_t s = (int64_t)item / f->hp.n_head, h = (int64_t)item % f->hp.n_head;
        const int64_t g = h / group;
        const float *qh = j->q + s * seq_len * f->q_width + h * hd;
        const float *kh = j->k + s * seq_len * f->kv_width + g * hd;
        const float *vh = j->v + s * seq_len * f->kv_width + g * hd;
        float *ch = j->ctx + s * seq_len * f->q_width + h * hd;
        for (int64_t i0 = 0; i0 < seq_len; i0 += QUERY_BLOCK) {
            const int64_t i1 = i0 + QUERY_BLOCK < seq_len ? i0 + QUERY_BLOCK : seq_len;
            const int64_t rows = i1 - i0, keys = i1;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)keys, (int)hd,
                        f->attn_scale, qh + i0 * f->q_width, (int)f->q_width, kh,
                        (int)f->kv_width, 0.0f, scores, (int)seq_len);
            softmax_causal(scores, i0, i1, seq_len, j->window, f->attn_softcap);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)keys,
                        1.0f, scores, (int)seq_len, vh, (int)f->kv_width, 0.0f,
                        ch + i0 * f->q_width, (int)f->q_width);
        }
    }
}

qw_status qw_block_attention(const qw_forward *f, const qw_block *b, const float *normed,
                             int64_t n_seq, int64_t seq_len, float *out, float *o_in,
                             qw_error *err) {
    const int64_t n = n_seq * seq_len, hd = f->head_dim;
    float *q = qw_malloc_array((size_t)(n * f->q_width), sizeof *q);
    float *k = qw_malloc_array((size_t)(n * f->kv_width), sizeof *k);
    float *v = qw_malloc_array((size_t)(n * f->kv_width), sizeof *v);
    float *scores = qw_malloc_array((size_t)(f->n_threads * seq_len * seq_len), sizeof *scores);
    float *ctx = o_in ? o_in : qw_malloc_array((size_t)(n * f->q_width), sizeof *ctx);
    float *cos_sin = qw_malloc_array((size_t)hd, sizeof *cos_sin);
    qw_status st = q && k && v && scores && ctx && cos_sin ? QW_OK : oom(err);
    if (st == QW_OK) {
        qw_linear_forward(f, &b->q, normed, n, q);
        qw_linear_forward(f, &b->k, normed, n, k);
        qw_linear_forward(f, &b->v, normed, n, v);
        if (b->q_norm) { /* Qwen3, Gemma 3: RMSNorm over each head before RoPE */
            rms_norm(q, b->q_norm, n * f->hp.n_head, hd, f->rms_eps, q);
            rms_norm(k, b->k_norm, n * f->hp.n_head_kv, hd, f->rms_eps, k);
        }
        const float *inv_freq = layer_frequencies(f, b->layer, seq_len);
        apply_rope(f, inv_freq, q, n_seq, seq_len, f->q_width, cos_sin);
        apply_rope(f, inv_freq, k, n_seq, seq_len, f->kv_width, cos_sin);
        attention_job job = {f, seq_len, layer_window(f, b->layer), q, k, v, ctx, scores};
        const size_t items = (size_t)(n_seq * f->hp.n_head);
        if (f->pool) {
            qw_pool_run(f->pool, items, 1, attention_heads, &job);
        } else {
            attention_heads(&job, 0, items, 0);
        }
        qw_linear_forward(f, &b->o, ctx, n, out);
    }
    qw_free(q);
    qw_free(k);
    qw_free(v);
    qw_free(scores);
    qw_free(cos_sin);
    if (ctx != o_in) qw_free(ctx);
    return st;
}

/* gate := act(gate) * up, rows split over the pool */
typedef struct gated_job {
    fwd_act act;
    int64_t width;
    float *gate;
    const float *up;
} gated_job;

static void gated_rows(void *arg, size_t begin, size_t end, int worker) {
    (void)worker;
    const gated_job *j = arg;
    for (int64_t i = (int64_t)begin * j->width; i < (int64_t)end * j->width; i++) {
        j->gate[i] = activate(j->act, j->gate[i]) * j->up[i];
    }
}

qw_status qw_mlp_forward(const qw_forward *f, const qw_expert *e, const float *normed,
                         int64_t n_tokens, float *out, float *down_in, qw_error *err) {
    const int64_t ff = e->gate.n_out; /* a dense block's MLP or an expert */
    float *gate = qw_malloc_array((size_t)(n_tokens * ff), sizeof *gate);
    float *up = qw_malloc_array((size_t)(n_tokens * ff), sizeof *up);
    if (!gate || !up) {
        qw_free(gate);
        qw_free(up);
        return oom(err);
    }
    qw_linear_forward(f, &e->gate, normed, n_tokens, gate);
    qw_linear_forward(f, &e->up, normed, n_tokens, up);
    gated_job job = {f->act, ff, gate, up};
    if (f->pool) {
        qw_pool_run(f->pool, (size_t)n_tokens, 64, gated_rows, &job);
    } else {
        gated_rows(&job, 0, (size_t)n_tokens, 0);
    }
    if (down_in) memcpy(down_in, gate, (size_t)(n_tokens * ff) * sizeof *gate);
    qw_linear_forward(f, &e->down, gate, n_tokens, out);
    qw_free(gate);
    qw_free(up);
    return QW_OK;
}

qw_status qw_moe_route(const qw_forward *f, const qw_moe *m, const float *normed, int64_t n,
                       int32_t *ids, float *weights, qw_error *err) {
    const int64_t ne = m->n_expert, k = m->n_used;
    float *probs = qw_malloc_array((size_t)(n * ne), sizeof *probs);
    if (!probs) return oom(err);
    qw_linear_forward(f, &m->router, normed, n, probs);
    for (int64_t t = 0; t < n; t++) {
        float *p = probs + t * ne;
        float max = -INFINITY, sum = 0.0f;
        for (int64_t e = 0; e < ne; e++) max = p[e] > max ? p[e] : max;
        for (int64_t e = 0; e < ne; e++) {
            p[e] = expf(p[e] - max);
            sum += p[e];
        }
        for (int64_t e = 0; e < ne; e++) p[e] /= sum;
        /* the k largest, largest first; the lower expert first among equals, as torch.topk */
        float top_sum = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < ne; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j && !taken; i++) taken = ids[t * k + i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ids[t * k + j] = (int32_t)best;
            weights[t * k + j] = p[best];
            top_sum += p[best];
        }
        if (m->renorm) {
            for (int64_t j = 0; j < k; j++) weights[t * k + j] /= top_sum;
        }
    }
    qw_free(probs);
    return QW_OK;
}

/* out = the sparse MoE block on n rows of normed input */
static qw_status moe_forward(const qw_forward *f, const qw_moe *m, const float *normed,
                             int64_t n, float *out, qw_error *err) {
    const int64_t d = f->hp.n_embd, k = m->n_used;
    int32_t *ids = qw_malloc_array((size_t)(n * k), sizeof *ids);
    float *weights = qw_malloc_array((size_t)(n * k), sizeof *weights);
    int64_t *rows = qw_malloc_array((size_t)n, sizeof *rows);
    float *row_w = qw_malloc_array((size_t)n, sizeof *row_w);
    float *x = qw_malloc_array((size_t)(n * d), sizeof *x);
    float *y = qw_malloc_array((size_t)(n * d), sizeof *y);
    qw_status st = ids && weights && rows && row_w && x && y ? QW_OK : oom(err);
    if (st == QW_OK) st = qw_moe_route(f, m, normed, n, ids, weights, err);
    if (st == QW_OK) memset(out, 0, (size_t)(n * d) * sizeof *out);
    for (int64_t e = 0; st == QW_OK && e < m->n_expert; e++) {
        /* gather the tokens routed to e, run e on them, add back weighted */
        int64_t count = 0;
        for (int64_t t = 0; t < n; t++) {
            for (int64_t j = 0; j < k; j++) {
                if (ids[t * k + j] != e) continue;
                rows[count] = t;
                row_w[count] = weights[t * k + j];
                memcpy(x + count * d, normed + t * d, (size_t)d * sizeof *x);
                count++;
            }
        }
        if (count == 0) continue;
        st = qw_mlp_forward(f, &m->experts[e], x, count, y, NULL, err);
        for (int64_t i = 0; st == QW_OK && i < count; i++) {
            float *o = out + rows[i] * d;
            const float *yi = y + i * d;
            for (int64_t c = 0; c < d; c++) o[c] += yi[c] * row_w[i];
        }
    }
    if (st == QW_OK && m->shared.gate.w) {
        float *gate = row_w; /* n values: sigmoid(shared_expert_gate x) */
        st = qw_mlp_forward(f, &m->shared, normed, n, y, NULL, err);
        if (st == QW_OK) qw_linear_forward(f, &m->shared_gate, normed, n, gate);
        for (int64_t t = 0; st == QW_OK && t < n; t++) {
            const float g = 1.0f / (1.0f + expf(-gate[t]));
            for (int64_t c = 0; c < d; c++) out[t * d + c] += g * y[t * d + c];
        }
    }
    qw_free(ids);
    qw_free(weights);
    qw_free(rows);
    qw_free(row_w);
    qw_free(x);
    qw_free(y);
    return st;
}

qw_status qw_block_mlp(const qw_forward *f, const qw_block *b, const float *normed,
                       int64_t n_tokens, float *out, float *down_in, qw_error *err) {
    if (b->moe) return moe_forward(f, b->moe, normed, n_tokens, out, err);
    const qw_expert dense = {b->gate, b->up, b->down};
    return qw_mlp_forward(f, &dense, normed, n_tokens, out, down_in, err);
}

qw_status qw_block_forward(const qw_forward *f, const qw_block *b, float *hidden, int64_t n_seq,
                           int64_t seq_len, const qw_block_taps *taps, qw_error *err) {
    if (n_seq <= 0 || seq_len <= 0 || seq_len > (1 << 20)) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "%lld sequences of %lld tokens", (long long)n_seq,
                       (long long)seq_len);
    }
    const int64_t n = n_seq * seq_len, d = f->hp.n_embd;
    const qw_block_taps none = {0};
    if (!taps) taps = &none;
    float *normed = qw_malloc_array((size_t)(n * d), sizeof *normed);
    float *delta = qw_malloc_array((size_t)(n * d), sizeof *delta);
    qw_status st = normed && delta ? QW_OK : oom(err);
    if (st == QW_OK) {
        rms_norm(hidden, b->attn_norm, n, d, f->rms_eps, normed);
        if (taps->attn_in) memcpy(taps->attn_in, normed, (size_t)(n * d) * sizeof *normed);
        st = qw_block_attention(f, b, normed, n_seq, seq_len, delta, taps->o_in, err);
        if (st == QW_OK && taps->attn_out) {
            memcpy(taps->attn_out, delta, (size_t)(n * d) * sizeof *delta);
        }
    }
    /* Gemma 2/3 normalize each sub-layer's output before the residual add, and the MLP's
     * input with pre_feedforward_layernorm; the others use post_attention_layernorm there */
    const bool sandwich = f->fam->sandwich_norms;
    if (st == QW_OK) {
        if (sandwich) rms_norm(delta, b->ffn_norm, n, d, f->rms_eps, delta);
        for (int64_t i = 0; i < n * d; i++) hidden[i] += delta[i];
        rms_norm(hidden, sandwich ? b->pre_ffn_norm : b->ffn_norm, n, d, f->rms_eps, normed);
        if (taps->mlp_in) memcpy(taps->mlp_in, normed, (size_t)(n * d) * sizeof *normed);
        st = qw_block_mlp(f, b, normed, n, delta, taps->down_in, err);
        if (st == QW_OK && taps->mlp_out) {
            memcpy(taps->mlp_out, delta, (size_t)(n * d) * sizeof *delta);
        }
    }
    if (st == QW_OK) {
        if (sandwich) rms_norm(delta, b->post_ffn_norm, n, d, f->rms_eps, delta);
        for (int64_t i = 0; i < n * d; i++) hidden[i] += delta[i];
    }
    qw_free(normed);
    qw_free(delta);
    return st;
}

/* ---- head ----------------------------------------------------------------------------------- */

/* rows of the head read and multiplied at a time: bounds memory for 100k+ vocabularies */
#define HEAD_SLICE_ROWS 4096

qw_status qw_forward_logits(const qw_forward *f, float *hidden, int64_t n_tokens, float *logits,
                            qw_error *err) {
    const int64_t d = f->hp.n_embd, vocab = f->lm_head->n_rows;
    float *norm = qw_malloc_array((size_t)d, sizeof *norm);
    float *slice = qw_malloc_array((size_t)(HEAD_SLICE_ROWS * d), sizeof *slice);
    qw_status st = norm && slice ? QW_OK : oom(err);
    if (st == QW_OK) st = qw_hf_tensor_read_f32(f->final_norm, 0, 1, norm, err);
    if (st == QW_OK && f->final_norm->ne[0] != d) {
        st = qw_fail_at(err, QW_ERR_CORRUPT, "model.norm.weight", -1,
                        "model.norm.weight has %lld values for hidden size %lld",
                        (long long)f->final_norm->ne[0], (long long)d);
    }
    if (st == QW_OK) {
        if (f->fam->norm_offset != 0.0f) { /* Gemma: 1 + w */
            for (int64_t j = 0; j < d; j++) norm[j] += f->fam->norm_offset;
        }
        rms_norm(hidden, norm, n_tokens, d, f->rms_eps, hidden);
    }
    for (int64_t r0 = 0; st == QW_OK && r0 < vocab; r0 += HEAD_SLICE_ROWS) {
        int64_t rows = vocab - r0 < HEAD_SLICE_ROWS ? vocab - r0 : HEAD_SLICE_ROWS;
        st = qw_hf_tensor_read_f32(f->lm_head, r0, rows, slice, err);
        if (st != QW_OK) break;
        qw_forward_gemm(f, false, true, n_tokens, rows, d, 1.0f, hidden, d, slice, d, 0.0f,
                        logits + r0, vocab);
    }
    if (st == QW_OK && f->final_softcap > 0.0f) { /* Gemma 2: tanh(logit / cap) * cap */
        const float cap = f->final_softcap;
        for (int64_t i = 0; i < n_tokens * vocab; i++) logits[i] = tanhf(logits[i] / cap) * cap;
    }
    qw_free(norm);
    qw_free(slice);
    return st;
}
