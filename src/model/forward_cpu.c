/*
 * The decoder forward pass on the CPU. Matrix products go to OpenBLAS (cblas_sgemm, threaded
 * by OpenBLAS itself); norms, RoPE, softmax and activations are plain loops here.
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

struct qw_forward {
    const qw_hf_view *view;
    qw_hparams hp;
    int64_t head_dim, q_width, kv_width;
    float rms_eps;
    fwd_act act;
    int64_t sliding_window; /* 0: every earlier token is visible */
    float *inv_freq;        /* [head_dim / 2], rope scaling applied */
    const qw_hf_tensor *embed, *final_norm, *lm_head;
};

/* ---- small helpers -------------------------------------------------------------------------- */

static qw_status oom(qw_error *err) {
    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory in the forward pass");
}

/* Y[n x n_out] = X[n x n_in] W^T (+ b) */
void qw_linear_forward(const qw_linear *l, const float *x, int64_t n, float *y) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)l->n_out, (int)l->n_in,
                1.0f, x, (int)l->n_in, l->w, (int)l->n_in, 0.0f, y, (int)l->n_out);
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

/* inv_freq as transformers' rope initialisation computes it, with the config's scaling */
static qw_status rope_frequencies(qw_forward *f, qw_error *err) {
    const qw_hparams *hp = &f->hp;
    int64_t half = f->head_dim / 2;
    double theta = hp->has_rope_theta ? hp->rope_theta : 10000.0;
    f->inv_freq = qw_malloc_array((size_t)half, sizeof *f->inv_freq);
    if (!f->inv_freq) return oom(err);
    for (int64_t i = 0; i < half; i++) {
        /* torch computes base ** (arange(0, dim, 2) / dim) in f32 and inverts it in f32 */
        float expo = (float)(2 * i) / (float)f->head_dim;
        f->inv_freq[i] = 1.0f / powf((float)theta, expo);
    }
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
                      "pass (none, linear and llama3 are)",
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

qw_status qw_forward_create(const qw_hf_view *view, int n_threads, qw_forward **out,
                            qw_error *err) {
    *out = NULL;
    const json_t *config;
    QW_TRY(qw_hf_view_config(view, &config, err));
    qw_forward *f = qw_calloc(1, sizeof *f);
    if (!f) return oom(err);
    f->view = view;
    qw_status st = qw_hparams_from_config(config, "config.json", &f->hp, err);
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
    if (st == QW_OK) {
        const json_t *act = json_object_get(config, "hidden_act");
        const char *name = json_is_string(act) ? json_string_value(act) : "silu";
        size_t i = 0, n = sizeof ACTIVATIONS / sizeof ACTIVATIONS[0];
        while (i < n && strcmp(ACTIVATIONS[i].name, name) != 0) i++;
        if (i == n) {
            st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "hidden_act", -1,
                            "config.json: hidden_act \"%s\" is not supported by the forward "
                            "pass", name);
        } else {
            f->act = ACTIVATIONS[i].act;
        }
    }
    if (st == QW_OK) {
        /* Mistral masks beyond its window; Qwen2/3 state a window but switch it off */
        const json_t *use = json_object_get(config, "use_sliding_window");
        if (hp->sliding_window > 0 && !json_is_false(use)) f->sliding_window = hp->sliding_window;
        st = rope_frequencies(f, err);
    }
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
    if (n_threads > 0) openblas_set_num_threads(n_threads);
    *out = f;
    return QW_OK;
}

void qw_forward_free(qw_forward *f) {
    if (!f) return;
    qw_free(f->inv_freq);
    qw_free(f);
}

int64_t qw_forward_n_layer(const qw_forward *f) { return f->hp.n_layer; }
int64_t qw_forward_hidden(const qw_forward *f) { return f->hp.n_embd; }
int64_t qw_forward_vocab(const qw_forward *f) { return f->lm_head->n_rows; }
int64_t qw_forward_intermediate(const qw_forward *f) { return f->hp.n_ff; }
int64_t qw_forward_q_width(const qw_forward *f) { return f->q_width; }

qw_status qw_forward_embed(const qw_forward *f, const int32_t *ids, int64_t n_tokens,
                           float *hidden, qw_error *err) {
    for (int64_t i = 0; i < n_tokens; i++) {
        if (ids[i] < 0 || ids[i] >= f->embed->n_rows) {
            return qw_fail(err, QW_ERR_INVALID_ARG,
                           "token id %d at position %lld is outside the vocabulary of %lld",
                           ids[i], (long long)i, (long long)f->embed->n_rows);
        }
        QW_TRY(qw_hf_tensor_read_f32(f->embed, ids[i], 1, hidden + i * f->hp.n_embd, err));
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
    char name[160];
    l->n_out = n_out;
    l->n_in = n_in;
    snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer, module);
    QW_TRY(load_f32(f, name, n_out, n_in, true, &l->w, err));
    snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)layer, module);
    return load_f32(f, name, n_out, 0, false, &l->b, err);
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
    } NORMS[] = {
        {"input_layernorm", offsetof(qw_block, attn_norm), false, true},
        {"post_attention_layernorm", offsetof(qw_block, ffn_norm), false, true},
        {"self_attn.q_norm", offsetof(qw_block, q_norm), true, false},
        {"self_attn.k_norm", offsetof(qw_block, k_norm), true, false},
    };
    for (size_t i = 0; st == QW_OK && i < sizeof NORMS / sizeof NORMS[0]; i++) {
        snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer,
                 NORMS[i].suffix);
        float **field = (float **)((char *)b + NORMS[i].field);
        st = load_f32(f, name, NORMS[i].per_head ? f->head_dim : d, 0, NORMS[i].required, field,
                      err);
    }
    if (st == QW_OK && !b->q_norm != !b->k_norm) {
        st = qw_fail(err, QW_ERR_CORRUPT, "layer %lld has a q_norm or a k_norm but not both",
                     (long long)layer);
    }
    static const struct {
        const char *module;
        size_t field;
        char n_out, n_in; /* 'd' hidden, 'q' q width, 'k' kv width, 'f' intermediate */
    } LINEARS[] = {
        {"self_attn.q_proj", offsetof(qw_block, q), 'q', 'd'},
        {"self_attn.k_proj", offsetof(qw_block, k), 'k', 'd'},
        {"self_attn.v_proj", offsetof(qw_block, v), 'k', 'd'},
        {"self_attn.o_proj", offsetof(qw_block, o), 'd', 'q'},
        {"mlp.gate_proj", offsetof(qw_block, gate), 'f', 'd'},
        {"mlp.up_proj", offsetof(qw_block, up), 'f', 'd'},
        {"mlp.down_proj", offsetof(qw_block, down), 'd', 'f'},
    };
    for (size_t i = 0; st == QW_OK && i < sizeof LINEARS / sizeof LINEARS[0]; i++) {
        int64_t dims[2];
        const char which[2] = {LINEARS[i].n_out, LINEARS[i].n_in};
        for (int k = 0; k < 2; k++) {
            dims[k] = which[k] == 'd'   ? d
                      : which[k] == 'q' ? f->q_width
                      : which[k] == 'k' ? f->kv_width
                                        : ff;
        }
        st = load_linear(f, layer, LINEARS[i].module, dims[0], dims[1],
                         (qw_linear *)((char *)b + LINEARS[i].field), err);
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

void qw_block_free(qw_block *b) {
    if (!b) return;
    qw_free(b->attn_norm);
    qw_free(b->ffn_norm);
    qw_free(b->q_norm);
    qw_free(b->k_norm);
    qw_linear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) linear_free(ls[i]);
    qw_free(b);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* rotate-half RoPE on every head of n rows of `width` floats, positions restarting each seq */
static void apply_rope(const qw_forward *f, float *x, int64_t n_seq, int64_t seq_len,
                       int64_t width, float *cos_sin) {
    const int64_t half = f->head_dim / 2, n_heads = width / f->head_dim;
    for (int64_t pos = 0; pos < seq_len; pos++) {
        for (int64_t i = 0; i < half; i++) {
            /* transformers multiplies position by inv_freq in f32, then cos/sin of that */
            float angle = (float)pos * f->inv_freq[i];
            cos_sin[2 * i] = cosf(angle);
            cos_sin[2 * i + 1] = sinf(angle);
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

static void softmax_causal(float *scores, int64_t seq_len, int64_t window) {
    for (int64_t i = 0; i < seq_len; i++) {
        float *row = scores + i * seq_len;
        int64_t first = window > 0 && i >= window ? i - window + 1 : 0;
        float max = -INFINITY;
        for (int64_t j = first; j <= i; j++) max = row[j] > max ? row[j] : max;
        float sum = 0.0f;
        for (int64_t j = 0; j < seq_len; j++) {
            float e = j >= first && j <= i ? expf(row[j] - max) : 0.0f;
            row[j] = e;
            sum += e;
        }
        for (int64_t j = first; j <= i; j++) row[j] /= sum;
    }
}

qw_status qw_block_attention(const qw_forward *f, const qw_block *b, const float *normed,
                             int64_t n_seq, int64_t seq_len, float *out, float *o_in,
                             qw_error *err) {
    const int64_t n = n_seq * seq_len, hd = f->head_dim;
    const int64_t group = f->hp.n_head / f->hp.n_head_kv;
    float *q = qw_malloc_array((size_t)(n * f->q_width), sizeof *q);
    float *k = qw_malloc_array((size_t)(n * f->kv_width), sizeof *k);
    float *v = qw_malloc_array((size_t)(n * f->kv_width), sizeof *v);
    float *scores = qw_malloc_array((size_t)(seq_len * seq_len), sizeof *scores);
    float *ctx = o_in ? o_in : qw_malloc_array((size_t)(n * f->q_width), sizeof *ctx);
    float *cos_sin = qw_malloc_array((size_t)hd, sizeof *cos_sin);
    qw_status st = q && k && v && scores && ctx && cos_sin ? QW_OK : oom(err);
    if (st == QW_OK) {
        qw_linear_forward(&b->q, normed, n, q);
        qw_linear_forward(&b->k, normed, n, k);
        qw_linear_forward(&b->v, normed, n, v);
        if (b->q_norm) { /* Qwen3: RMSNorm over each head before RoPE */
            rms_norm(q, b->q_norm, n * f->hp.n_head, hd, f->rms_eps, q);
            rms_norm(k, b->k_norm, n * f->hp.n_head_kv, hd, f->rms_eps, k);
        }
        apply_rope(f, q, n_seq, seq_len, f->q_width, cos_sin);
        apply_rope(f, k, n_seq, seq_len, f->kv_width, cos_sin);
        const float scale = 1.0f / sqrtf((float)hd);
        for (int64_t s = 0; s < n_seq; s++) {
            for (int64_t h = 0; h < f->hp.n_head; h++) {
                const int64_t g = h / group;
                const float *qh = q + s * seq_len * f->q_width + h * hd;
                const float *kh = k + s * seq_len * f->kv_width + g * hd;
                const float *vh = v + s * seq_len * f->kv_width + g * hd;
                float *ch = ctx + s * seq_len * f->q_width + h * hd;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)seq_len, (int)seq_len,
                            (int)hd, scale, qh, (int)f->q_width, kh, (int)f->kv_width, 0.0f,
                            scores, (int)seq_len);
                softmax_causal(scores, seq_len, f->sliding_window);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)seq_len, (int)hd,
                            (int)seq_len, 1.0f, scores, (int)seq_len, vh, (int)f->kv_width, 0.0f,
                            ch, (int)f->q_width);
            }
        }
        qw_linear_forward(&b->o, ctx, n, out);
    }
    qw_free(q);
    qw_free(k);
    qw_free(v);
    qw_free(scores);
    qw_free(cos_sin);
    if (ctx != o_in) qw_free(ctx);
    return st;
}

qw_status qw_block_mlp(const qw_forward *f, const qw_block *b, const float *normed,
                       int64_t n_tokens, float *out, float *down_in, qw_error *err) {
    const int64_t ff = b->gate.n_out;
    float *gate = qw_malloc_array((size_t)(n_tokens * ff), sizeof *gate);
    float *up = qw_malloc_array((size_t)(n_tokens * ff), sizeof *up);
    if (!gate || !up) {
        qw_free(gate);
        qw_free(up);
        return oom(err);
    }
    qw_linear_forward(&b->gate, normed, n_tokens, gate);
    qw_linear_forward(&b->up, normed, n_tokens, up);
    for (int64_t i = 0; i < n_tokens * ff; i++) gate[i] = activate(f->act, gate[i]) * up[i];
    if (down_in) memcpy(down_in, gate, (size_t)(n_tokens * ff) * sizeof *gate);
    qw_linear_forward(&b->down, gate, n_tokens, out);
    qw_free(gate);
    qw_free(up);
    return QW_OK;
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
    }
    if (st == QW_OK) {
        for (int64_t i = 0; i < n * d; i++) hidden[i] += delta[i];
        rms_norm(hidden, b->ffn_norm, n, d, f->rms_eps, normed);
        if (taps->mlp_in) memcpy(taps->mlp_in, normed, (size_t)(n * d) * sizeof *normed);
        st = qw_block_mlp(f, b, normed, n, delta, taps->down_in, err);
    }
    if (st == QW_OK) {
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
    if (st == QW_OK) rms_norm(hidden, norm, n_tokens, d, f->rms_eps, hidden);
    for (int64_t r0 = 0; st == QW_OK && r0 < vocab; r0 += HEAD_SLICE_ROWS) {
        int64_t rows = vocab - r0 < HEAD_SLICE_ROWS ? vocab - r0 : HEAD_SLICE_ROWS;
        st = qw_hf_tensor_read_f32(f->lm_head, r0, rows, slice, err);
        if (st != QW_OK) break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_tokens, (int)rows, (int)d,
                    1.0f, hidden, (int)d, slice, (int)d, 0.0f, logits + r0, (int)vocab);
    }
    qw_free(norm);
    qw_free(slice);
    return st;
}
