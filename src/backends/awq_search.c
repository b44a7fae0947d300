/*
 * AWQ's per-block scale search (awq_search.h). Statistics and parent inputs come from one pass
 * of the block as it was before any scaling, as llm-compressor's calibration hooks collect
 * them; mappings are then searched and folded in order (qkv, o, gate/up, down). Each fold is an
 * identity in real arithmetic, so an input collected before an earlier fold is still the input
 * the later mapping's parent sees.
 */
#include "awq_search.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum awq_parent { PARENT_ATTENTION, PARENT_O, PARENT_MLP, PARENT_DOWN } awq_parent;
typedef enum awq_input { INPUT_ATTN, INPUT_O, INPUT_MLP, INPUT_DOWN } awq_input;

#define NO_LINEAR SIZE_MAX

/* bit of each linear in qw_awq_params.ignored */
static const size_t LINEAR_ORDER[] = {offsetof(qw_block, q),    offsetof(qw_block, k),
                                      offsetof(qw_block, v),    offsetof(qw_block, o),
                                      offsetof(qw_block, gate), offsetof(qw_block, up),
                                      offsetof(qw_block, down)};

static bool linear_ignored(const qw_awq_params *p, size_t offset) {
    for (size_t i = 0; i < sizeof LINEAR_ORDER / sizeof LINEAR_ORDER[0]; i++) {
        if (LINEAR_ORDER[i] == offset) return (p->ignored >> i) & 1u;
    }
    return false;
}

/* llm-compressor's mappings registry (research/awq.md §1.2), one list per family; the default
 * list (Llama, Mistral, Qwen2, Qwen3, and Gemma 1, which the registry does not name). */
struct awq_mapping {
    const char *name;
    size_t smooth_norm;   /* offset of the norm vector in qw_block, or NO_LINEAR */
    size_t smooth_linear; /* offset of the qw_linear whose last rows are divided, or NO_LINEAR */
    size_t balance[3];    /* offsets of the qw_linear balance layers; NO_LINEAR ends the list */
    awq_parent parent;
    awq_input input;
    bool needs_matching_v_o; /* skipped when v's outputs are not o's inputs (GQA) */
};

/* The four kinds of mapping every dense family uses, differing only in names and norms. */
#define MAP_QKV(name, norm)                                                                   \
    {name, offsetof(qw_block, norm), NO_LINEAR,                                               \
     {offsetof(qw_block, q), offsetof(qw_block, k), offsetof(qw_block, v)}, PARENT_ATTENTION, \
     INPUT_ATTN, false}
#define MAP_V_O(name)                                                                          \
    {name, NO_LINEAR, offsetof(qw_block, v), {offsetof(qw_block, o), NO_LINEAR, NO_LINEAR},    \
     PARENT_O, INPUT_O, true}
#define MAP_GATE_UP(name, norm)                                                               \
    {name, offsetof(qw_block, norm), NO_LINEAR,                                               \
     {offsetof(qw_block, gate), offsetof(qw_block, up), NO_LINEAR}, PARENT_MLP, INPUT_MLP, false}
#define MAP_UP_DOWN(name)                                                                      \
    {name, NO_LINEAR, offsetof(qw_block, up), {offsetof(qw_block, down), NO_LINEAR, NO_LINEAR}, \
     PARENT_DOWN, INPUT_DOWN, false}

static const struct awq_mapping DEFAULT_MAPPINGS[] = {
    MAP_QKV("input_layernorm -> q_proj,k_proj,v_proj", attn_norm),
    MAP_V_O("v_proj -> o_proj"),
    MAP_GATE_UP("post_attention_layernorm -> gate_proj,up_proj", ffn_norm),
    MAP_UP_DOWN("up_proj -> down_proj"),
};

/* Gemma 2: the MLP's input norm is pre_feedforward_layernorm */
static const struct awq_mapping GEMMA2_MAPPINGS[] = {
    MAP_QKV("input_layernorm -> q_proj,k_proj,v_proj", attn_norm),
    MAP_V_O("v_proj -> o_proj"),
    MAP_GATE_UP("pre_feedforward_layernorm -> gate_proj,up_proj", pre_ffn_norm),
    MAP_UP_DOWN("up_proj -> down_proj"),
};

/* Gemma 3: as Gemma 2 without input_layernorm -> q/k/v, which llm-compressor dropped because
 * the per-head q/k norms undo the scaling and made AWQ worse than plain rounding */
static const struct awq_mapping GEMMA3_MAPPINGS[] = {
    MAP_V_O("v_proj -> o_proj"),
    MAP_GATE_UP("pre_feedforward_layernorm -> gate_proj,up_proj", pre_ffn_norm),
    MAP_UP_DOWN("up_proj -> down_proj"),
};

/* Phi-3: the fused qkv_proj and gate_up_proj. The block views q/k/v and gate/up as their rows,
 * so balancing q, k and v is balancing qkv_proj's columns, and dividing v's rows (up's) is
 * dividing qkv_proj's last rows (gate_up_proj's), as llm-compressor does; its skip rule
 * (qkv outputs != 3 x o inputs) is v outputs != o inputs. */
static const struct awq_mapping PHI3_MAPPINGS[] = {
    MAP_QKV("input_layernorm -> qkv_proj", attn_norm),
    MAP_V_O("qkv_proj -> o_proj"),
    MAP_GATE_UP("post_attention_layernorm -> gate_up_proj", ffn_norm),
    MAP_UP_DOWN("gate_up_proj -> down_proj"),
};

#define MAPPING_LIST(list) list, sizeof list / sizeof list[0]
static const struct {
    const char *family; /* qw_forward_family */
    const struct awq_mapping *list;
    size_t n;
} FAMILY_MAPPINGS[] = {
    {"gemma2", MAPPING_LIST(GEMMA2_MAPPINGS)},
    {"gemma3", MAPPING_LIST(GEMMA3_MAPPINGS)},
    {"phi3", MAPPING_LIST(PHI3_MAPPINGS)},
};

static const struct awq_mapping *family_mappings(const qw_forward *f, size_t *n) {
    const char *family = qw_forward_family(f);
    for (size_t i = 0; i < sizeof FAMILY_MAPPINGS / sizeof FAMILY_MAPPINGS[0]; i++) {
        if (strcmp(FAMILY_MAPPINGS[i].family, family) == 0) {
            *n = FAMILY_MAPPINGS[i].n;
            return FAMILY_MAPPINGS[i].list;
        }
    }
    *n = sizeof DEFAULT_MAPPINGS / sizeof DEFAULT_MAPPINGS[0];
    return DEFAULT_MAPPINGS;
}

static qw_linear *linear_at(qw_block *b, size_t offset) {
    return (qw_linear *)((char *)b + offset);
}

static qw_status oom(qw_error *err) {
    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory in the AWQ search");
}

/* ---- the grid --------------------------------------------------------------------------------- */

typedef struct grid_point {
    double ratio;
    bool duo;
} grid_point;

/* Candidates in the order llm-compressor evaluates them (research/awq.md §1.4). */
static int grid_points(const qw_awq_params *p, grid_point *out, int cap) {
    int n = 0;
    if (p->duo == QW_AWQ_DUO_OFF) {
        for (int k = 0; k < p->n_grid && n < cap; k++) {
            out[n++] = (grid_point){(double)k / (p->n_grid - 1), false};
        }
    } else if (p->duo == QW_AWQ_DUO_ON) {
        out[n++] = (grid_point){0.0, false}; /* plain rounding as a candidate */
        for (int k = 0; k < p->n_grid - 1 && n < cap; k++) {
            out[n++] = (grid_point){(double)k / (p->n_grid - 2), true};
        }
    } else {
        const int half = p->n_grid / 2;
        for (int k = 0; k < half && n + 1 < cap; k++) {
            out[n++] = (grid_point){(double)k / (half - 1), false};
            out[n++] = (grid_point){(double)k / (half - 1), true};
        }
    }
    return n;
}

/* s_c = max(x̄_c^r [/ (w̄_c^(1-r) + 1e-4)], 1e-4), divided by sqrt(max s * min s); non-finite
 * entries become 1 */
static void candidate_scales(const float *x_mean, const float *w_mean, int64_t n, grid_point g,
                             float *s) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t c = 0; c < n; c++) {
        float v = powf(x_mean[c], (float)g.ratio);
        if (g.duo) v = v / (powf(w_mean[c], (float)(1.0 - g.ratio)) + 1e-4f);
        v = v < 1e-4f ? 1e-4f : v;
        s[c] = v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    const float norm = sqrtf(hi * lo);
    for (int64_t c = 0; c < n; c++) {
        s[c] /= norm;
        if (!isfinite(s[c])) s[c] = 1.0f;
    }
}

/* ---- statistics ------------------------------------------------------------------------------- */

/* x̄_c = mean over tokens of |x_tc|, summed in double (llm-compressor sums in f32; millions of
 * tokens make an f32 sum drift) */
static bool input_mean(const float *x, int64_t n_tokens, int64_t width, float *out) {
    double *acc = qw_calloc((size_t)width, sizeof *acc);
    if (!acc) return false;
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *row = x + t * width;
        for (int64_t c = 0; c < width; c++) acc[c] += fabsf(row[c]);
    }
    for (int64_t c = 0; c < width; c++) out[c] = (float)(acc[c] / (double)n_tokens);
    qw_free(acc);
    return true;
}

/* w̄_c: |W| of every balance layer, each group of a row divided by its max (+1e-6), averaged
 * over all rows of all balance layers */
static void weight_mean(qw_linear *const *balance, int n_balance, int64_t group, float *out) {
    const int64_t width = balance[0]->n_in;
    int64_t rows = 0;
    for (int64_t c = 0; c < width; c++) out[c] = 0.0f;
    for (int i = 0; i < n_balance; i++) {
        const qw_linear *l = balance[i];
        for (int64_t r = 0; r < l->n_out; r++) {
            const float *w = l->w + r * width;
            for (int64_t g0 = 0; g0 < width; g0 += group) {
                float m = 0.0f;
                for (int64_t c = g0; c < g0 + group; c++) m = fabsf(w[c]) > m ? fabsf(w[c]) : m;
                const float inv = 1.0f / (m + 1e-6f);
                for (int64_t c = g0; c < g0 + group; c++) out[c] += fabsf(w[c]) * inv;
            }
        }
        rows += l->n_out;
    }
    for (int64_t c = 0; c < width; c++) out[c] /= (float)rows;
}

/* ---- one mapping ------------------------------------------------------------------------------ */

typedef struct search_state {
    const qw_forward *f;
    qw_block *b;
    int64_t n_seq, seq_len, n_tokens;
    const float *input; /* the parent's input */
    int64_t out_width;
    float *y_ref, *y;   /* parent outputs: reference and candidate */
    bool ref_ready;     /* y_ref already holds the parent's output for input (from the block's
                         * statistics pass, which ran the same weights on the same input) */
    double *sums;       /* scratch for a sum per token (or Gram row): search_mapping's */
} search_state;

/* One mapping resolved against a block: a dense block's from its table row, a MoE block's
 * built for its experts. */
typedef struct awq_target {
    const char *name;
    float *smooth_norm;        /* the norm divided by s, or NULL */
    qw_linear *smooth_linear;  /* else the linear whose last rows are divided */
    qw_linear *const *balance;
    const bool *ignored;       /* scaled, not fake-quantized in the search */
    int n_balance;
    awq_parent parent;
    const qw_linear *parent_linear; /* PARENT_O / PARENT_DOWN: the linear itself */
} awq_target;

static qw_status run_parent(search_state *st, const awq_target *t, float *y, qw_error *err) {
    switch (t->parent) { /* four sub-modules of a block, each a different call */
    case PARENT_ATTENTION:
        return qw_block_attention(st->f, st->b, st->input, st->n_seq, st->seq_len, y, NULL, err);
    case PARENT_MLP: /* a MoE layer's: the whole sparse block, router included */
        return qw_block_mlp(st->f, st->b, st->input, st->n_tokens, y, NULL, err);
    case PARENT_O:
    case PARENT_DOWN:
        qw_linear_forward(st->f, t->parent_linear, st->input, st->n_tokens, y);
        return QW_OK;
    }
    return QW_OK;
}

/* ---- sums over rows, split over the pool ----------------------------------------------------
 * A candidate's error is a sum over the rows of an output (or of a Gram triangle). Each row's
 * sum is one thread's and the rows are added in order afterwards, so the result does not depend
 * on the number of threads. A row's own sum runs in SUM_LANES partial sums: a single sum's
 * order cannot be changed by the compiler, and its latency, not the multiplies, would bound
 * the loop. */
enum { SUM_LANES = 8 };

typedef double (*row_sum_fn)(const void *ctx, int64_t row);

typedef struct row_sum_job {
    row_sum_fn fn;
    const void *ctx;
    double *sums;
} row_sum_job;

static void row_sum_rows(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const row_sum_job *j = ctx;
    for (size_t r = begin; r < end; r++) j->sums[r] = j->fn(j->ctx, (int64_t)r);
}

/* sums[r] := fn(ctx, r) for the n_rows rows */
static void row_sums(qw_pool *pool, int64_t n_rows, row_sum_fn fn, const void *ctx,
                     double *sums) {
    row_sum_job job = {fn, ctx, sums};
    qw_pool_run(pool, (size_t)n_rows, 16, row_sum_rows, &job);
}

static double squared_error(const float *a, const float *b, int64_t n) {
    double lane[SUM_LANES] = {0};
    int64_t i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES) {
        for (int j = 0; j < SUM_LANES; j++) {
            const double d = (double)a[i + j] - (double)b[i + j];
            lane[j] += d * d;
        }
    }
    for (; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        lane[0] += d * d;
    }
    double sum = 0.0;
    for (int j = 0; j < SUM_LANES; j++) sum += lane[j];
    return sum;
}

typedef struct fake_quant_job {
    const qw_awq_params *p;
    qw_linear *l;
    const float *w0;
    const float *s;
} fake_quant_job;

static void fake_quantize_rows(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const fake_quant_job *job = ctx;
    const qw_linear *l = job->l;
    for (size_t r = begin; r < end; r++) {
        qw_int4_fake_quantize_scaled_row(&job->p->scheme, job->w0 + r * (size_t)l->n_in, job->s,
                                         l->n_in, l->w + r * (size_t)l->n_in);
    }
}

/* balance weights := Q(W0 · diag(s)) · diag(s)^-1, W0 the saved originals; rows are
 * independent, so they are split over the pool */
static void fake_quantize_scaled(const qw_awq_params *p, qw_linear *const *balance,
                                 const bool *ignored, float *const *saved, int n_balance,
                                 const float *s) {
    for (int i = 0; i < n_balance; i++) {
        if (ignored[i]) continue; /* stays as saved: scaling alone changes nothing */
        fake_quant_job job = {p, balance[i], saved[i], s};
        qw_pool_run(p->pool, (size_t)balance[i]->n_out, 16, fake_quantize_rows, &job);
    }
}

/* the fold: smooth / s (a norm, or the last len(s) rows and biases of a linear), balance · s.
 * A Gemma norm holds 1 + w (norm_offset 1): the stored w is what gets the dtype's rounding,
 * as AutoAWQ's (1 + w) / s - 1. */
static void fold_scales(const qw_awq_params *p, const awq_target *m, qw_linear *const *balance,
                        float *const *saved, int n_balance, const float *s, int64_t width,
                        float norm_offset) {
    if (m->smooth_norm) {
        float *gamma = m->smooth_norm;
        for (int64_t c = 0; c < width; c++) {
            gamma[c] = norm_offset == 0.0f
                           ? qw_int4_round_dtype(&p->scheme, gamma[c] / s[c])
                           : qw_int4_round_dtype(&p->scheme, gamma[c] / s[c] - norm_offset) +
                                 norm_offset;
        }
    } else {
        qw_linear *l = m->smooth_linear;
        const int64_t first = l->n_out - width;
        for (int64_t r = 0; r < width; r++) {
            float *w = l->w + (first + r) * l->n_in;
            for (int64_t c = 0; c < l->n_in; c++) {
                w[c] = qw_int4_round_dtype(&p->scheme, w[c] / s[r]);
            }
            if (l->b) l->b[first + r] = qw_int4_round_dtype(&p->scheme, l->b[first + r] / s[r]);
        }
    }
    for (int i = 0; i < n_balance; i++) {
        qw_linear *l = balance[i];
        for (int64_t r = 0; r < l->n_out; r++) {
            for (int64_t c = 0; c < l->n_in; c++) {
                l->w[r * l->n_in + c] =
                    qw_int4_round_dtype(&p->scheme, saved[i][r * l->n_in + c] * s[c]);
            }
        }
    }
}

/* ---- a linear parent's error through the Gram matrix -------------------------------------------
 * When the parent is the one balance linear itself (v -> o, up -> down), a candidate's output
 * error is |X dW^T|^2 = trace(dW (X^T X) dW^T) = <X^T X, dW^T dW>, dW the change the candidate
 * makes to the weights. The n_in x n_in Gram matrix, built once, then stands in for the tokens
 * in every candidate: cheaper whenever the layer has fewer inputs than there are calibration
 * tokens (down_proj on a few thousand tokens), and free of the cancellation in y - y_ref. Both
 * factors of the inner product are symmetric, so each is one triangle (qw_forward_gram): half
 * the work of dW (X^T X) as a full product. */

typedef struct gram_loss {
    float *gram;  /* [n_in][n_in], upper triangle */
    float *delta; /* [n_out][n_in] */
    float *dtd;   /* dW^T dW, upper triangle */
} gram_loss;

/* multiply-adds: the two triangles per candidate against the products with every token */
static bool gram_cheaper(const qw_linear *l, int64_t n_tokens, int n_points) {
    const double in = (double)l->n_in, out = (double)l->n_out;
    const double direct = (double)n_points * (double)n_tokens * in * out;
    return ((double)n_tokens * in * in + (double)n_points * out * in * in) / 2.0 < direct;
}

static bool gram_init(gram_loss *g, const qw_forward *f, const qw_linear *l, const float *x,
                      int64_t n_tokens) {
    const int64_t n = l->n_in;
    g->gram = qw_malloc_array((size_t)(n * n), sizeof *g->gram);
    g->delta = qw_malloc_array((size_t)(n * l->n_out), sizeof *g->delta);
    g->dtd = qw_malloc_array((size_t)(n * n), sizeof *g->dtd);
    if (!g->gram || !g->delta || !g->dtd) return false;
    qw_forward_gram(f, n, n_tokens, x, n, g->gram, n);
    return true;
}

static void gram_free(gram_loss *g) {
    qw_free(g->gram);
    qw_free(g->delta);
    qw_free(g->dtd);
}

typedef struct gram_rows {
    const float *gram, *dtd;
    int64_t n;
} gram_rows;

/* row r's share of the inner product of two symmetric matrices stored as upper triangles: the
 * diagonal once, the rest twice for the lower triangle */
static double gram_row(const void *ctx, int64_t r) {
    const gram_rows *g = ctx;
    const float *gr = g->gram + r * g->n, *dr = g->dtd + r * g->n;
    double lane[SUM_LANES] = {0};
    int64_t c = r + 1;
    for (; c + SUM_LANES <= g->n; c += SUM_LANES) {
        for (int j = 0; j < SUM_LANES; j++) lane[j] += (double)gr[c + j] * (double)dr[c + j];
    }
    for (; c < g->n; c++) lane[0] += (double)gr[c] * (double)dr[c];
    double off = 0.0;
    for (int j = 0; j < SUM_LANES; j++) off += lane[j];
    return (double)gr[r] * (double)dr[r] + 2.0 * off;
}

typedef struct delta_job {
    float *delta;
    const float *w, *w0;
    int64_t n_in;
} delta_job;

static void delta_rows(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const delta_job *j = ctx;
    const size_t n_in = (size_t)j->n_in;
    for (size_t i = begin * n_in; i < end * n_in; i++) j->delta[i] = j->w[i] - j->w0[i];
}

/* the squared output error of the weight change in g->delta's first n_rows rows of n, summed
 * over the tokens: tr(G dW^T dW); sums: scratch for n values */
static double gram_delta_error(gram_loss *g, const qw_forward *f, qw_pool *pool, int64_t n_rows,
                               int64_t n, double *sums) {
    qw_forward_gram(f, n, n_rows, g->delta, n, g->dtd, n);
    const gram_rows rows = {g->gram, g->dtd, n};
    row_sums(pool, n, gram_row, &rows, sums);
    double total = 0.0;
    for (int64_t r = 0; r < n; r++) total += sums[r];
    return total;
}

/* the squared output error of weights l->w against the originals w0, summed over the tokens
 * and l's output rows (sums as above) */
static double gram_error(gram_loss *g, const qw_forward *f, qw_pool *pool, const qw_linear *l,
                         const float *w0, double *sums) {
    delta_job dj = {g->delta, l->w, w0, l->n_in};
    qw_pool_run(pool, (size_t)l->n_out, 16, delta_rows, &dj);
    return gram_delta_error(g, f, pool, l->n_out, l->n_in, sums);
}

/* A candidate's Gram error is a sum over the linear's output rows, e_r = dW_r G dW_r^T, and a
 * row's int4 rounding (its groups, the column scales) depends on that row alone: rows are units
 * to sample, as tokens are. So a Gram parent's candidates are first ranked on a sample of rows,
 * about a third of the dW^T dW triangle each, which was most of down_proj's search; the
 * ROWS_KEEP best (and plain rounding) then get the other rows' errors, and so their exact error
 * on the whole.
 *
 * Rows are far from alike: a few (those reading the massive activation channels) carry much of
 * the error, and a plain every-4th-row sample that missed them cost one of SmolLM2's down_proj
 * mappings +14%. So the sample is stratified: the n_out / rank_stride rows with the largest
 * plain-rounding error (from G's diagonal, an estimate) always, and every (2 rank_stride)-th
 * of the others standing for that many. Rejected: ranking on G's diagonal alone (with the
 * inputs' mean direction), which chose +44% worse in a SmolLM2 layer; and the sample's errors
 * corrected by it (a control variate), with three finalists, which chose +2.4% worse in a
 * random test model's down_proj. */
#define ROWS_KEEP 5

typedef struct row_split {
    int64_t *rows;     /* the linear's row numbers: the heavy rows, the sampled ones, the others */
    int64_t first[4];  /* part i is rows[first[i]] .. rows[first[i + 1] - 1] */
    const float *w0;   /* the original weights */
    int64_t n_in;
    float weight;      /* how many rows each sampled one stands for */
} row_split;

typedef struct row_rank {
    double error;
    int64_t row;
} row_rank;

static int by_row(const void *a, const void *b) {
    const row_rank *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int by_error_descending(const void *a, const void *b) {
    const row_rank *x = a, *y = b;
    if (x->error != y->error) return x->error < y->error ? 1 : -1;
    return by_row(a, b); /* equal errors: the same order on every platform */
}

static bool row_split_init(row_split *rs, const qw_int4_scheme *scheme, const float *gram,
                           const float *w0, int64_t n_out, int64_t n_in, int stride) {
    const int64_t every = 2 * (int64_t)stride, n_heavy = n_out / stride;
    const int64_t n_sampled = (n_out - n_heavy + every - 1) / every;
    row_rank *rank = qw_malloc_array((size_t)n_out, sizeof *rank);
    float *plain = qw_malloc_array((size_t)n_in, sizeof *plain); /* one plainly rounded row */
    rs->rows = qw_malloc_array((size_t)n_out, sizeof *rs->rows);
    if (!rank || !plain || !rs->rows) {
        qw_free(rank);
        qw_free(plain);
        return false;
    }
    for (int64_t r = 0; r < n_out; r++) {
        memcpy(plain, w0 + r * n_in, (size_t)n_in * sizeof *w0);
        qw_int4_fake_quantize_row(scheme, plain, n_in);
        double e = 0.0;
        for (int64_t c = 0; c < n_in; c++) {
            const double d = (double)plain[c] - (double)w0[r * n_in + c];
            e += (double)gram[c * n_in + c] * d * d;
        }
        rank[r] = (row_rank){e, r};
    }
    qsort(rank, (size_t)n_out, sizeof *rank, by_error_descending);
    qsort(rank + n_heavy, (size_t)(n_out - n_heavy), sizeof *rank, by_row); /* the others */
    int64_t to = 0;
    for (int pass = 0; pass < 3; pass++) { /* heavy, sampled (every every-th other), the rest */
        for (int64_t i = 0; i < n_out; i++) {
            const int in = i < n_heavy ? 0 : (i - n_heavy) % every == 0 ? 1 : 2;
            if (in == pass) rs->rows[to++] = rank[i].row;
        }
    }
    qw_free(rank);
    qw_free(plain);
    rs->first[0] = 0;
    rs->first[1] = n_heavy;
    rs->first[2] = n_heavy + n_sampled;
    rs->first[3] = n_out;
    rs->w0 = w0;
    rs->n_in = n_in;
    rs->weight = (float)every;
    return true;
}

static void row_split_free(row_split *rs) { qw_free(rs->rows); }

typedef struct row_delta_job {
    const qw_int4_scheme *scheme;
    const row_split *rs;
    const int64_t *rows; /* the part's */
    const float *s;
    float *delta;
} row_delta_job;

/* delta's rows k := Q(W0_r · diag(s)) · diag(s)^-1 - W0_r, r the part's k-th row */
static void row_deltas(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const row_delta_job *j = ctx;
    const int64_t n_in = j->rs->n_in;
    for (size_t k = begin; k < end; k++) {
        const float *w0 = j->rs->w0 + j->rows[k] * n_in;
        float *d = j->delta + (int64_t)k * n_in;
        qw_int4_fake_quantize_scaled_row(j->scheme, w0, j->s, n_in, d);
        for (int64_t c = 0; c < n_in; c++) d[c] -= w0[c];
    }
}

/* the Gram error of part i's rows fake-quantized with scales s (sums as for gram_error); an
 * ignored linear is only scaled, which changes nothing */
static double row_part_error(const qw_awq_params *p, gram_loss *g, const qw_forward *f,
                             const row_split *rs, int i, bool ignored, const float *s,
                             double *sums) {
    const int64_t n_rows = rs->first[i + 1] - rs->first[i], n = rs->n_in;
    if (n_rows == 0 || ignored) return 0.0;
    row_delta_job job = {&p->scheme, rs, rs->rows + rs->first[i], s, g->delta};
    qw_pool_run(p->pool, (size_t)n_rows, 16, row_deltas, &job);
    return gram_delta_error(g, f, p->pool, n_rows, n, sums);
}

/* ---- ranking on a subset of the tokens ----------------------------------------------------------
 * The parent's output for one candidate costs as much as the layer's forward pass over every
 * calibration token, and twenty candidates make the search most of AWQ's time. The loss curve
 * over the grid is smooth in the token sample, so the candidates are first ranked on a subset
 * (RANKING: whole sequences for the attention, which mixes the tokens of one), and only the
 * FINALISTS best of them, with plain rounding, are judged on all tokens (less those the subset
 * already rules out, below); that judgement picks the winner as before. The subset's units are
 * independent of the others, so a finalist's error on all tokens is its ranking error plus its
 * error on the other units: the finals run the parent on those alone. (Two finalists instead
 * of three: on SmolLM2-135M as good by the block errors, 86 of 90 choices as the exhaustive
 * search's, but its int4 model's perplexity +0.5%.) */

#define FINALISTS 3

/* The ranking is itself in two steps: every candidate on the first half of the subset, only
 * the RANKING_KEEP best (and plain rounding) on its second half; the finalists are the best on
 * both halves. The far ends of the grid are already far behind on half the subset: on
 * SmolLM2-135M keeping 4, 5 or 8 gives every mapping the same choice. */
#define RANKING_KEEP 4

/* The parent's input and reference output reordered: the ranking subset first, then the
 * rest, each a search_state of its own. */
typedef struct split {
    search_state head, tail;
    /* each in a first and a second half of its units (RANKING_KEEP, the finals' pruning) */
    search_state head_halves[2], tail_halves[2];
    float *input, *y_ref;
} split;

static void split_free(split *sp) {
    qw_free(sp->input);
    qw_free(sp->y_ref);
}

/* How a parent's candidates are ranked (rank_stride > 1). Attention mixes the tokens of a
 * sequence: every rank_stride-th whole sequence. The MLP's tokens are independent: every t-th
 * token of all the sequences, t the first stride from 2 rank_stride + 1 up that is prime to
 * the sequence length, so the subset is about half as large, spread over every sequence, and
 * every position in a sequence is as frequent as in the whole: the first token's outputs dwarf
 * the others', and every 8th token (all first tokens) cost SmolLM2's last MLP +13.5% error.
 * Below MIN_RANK_TOKENS tokens so sparse a sample misjudges (57 tokens: +6.7% in a test
 * model's MLP), and the MLP is ranked on whole sequences too. A linear parent is not ranked
 * on tokens: its error comes from the Gram matrix (ranked on rows, row_split, when it has
 * MIN_RANK_ROWS rows per rank_stride: its 256-row o_proj in a test model, a sample of 88 rows,
 * chose +3.2% worse), or its tokens are one expert's. */
#define MIN_RANK_TOKENS 256
#define MIN_RANK_ROWS 128

static const struct {
    awq_parent parent;
    bool by_token; /* single tokens when there are enough, else whole sequences */
} RANKING[] = {
    {PARENT_ATTENTION, false},
    {PARENT_MLP, true},
};

static int64_t gcd(int64_t a, int64_t b) {
    while (b != 0) {
        const int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* the subset for parent: *unit tokens per unit, every *stride-th unit; false: not ranked */
static bool ranking_subset(awq_parent parent, const search_state *st, int rank_stride,
                           int64_t *unit, int *stride) {
    for (size_t i = 0; i < sizeof RANKING / sizeof RANKING[0]; i++) {
        if (RANKING[i].parent != parent) continue;
        int t = 2 * rank_stride + 1;
        while (gcd(t, st->seq_len) != 1) t++;
        const bool by_token = RANKING[i].by_token && st->n_tokens / t >= MIN_RANK_TOKENS;
        *unit = by_token ? 1 : st->seq_len;
        *stride = by_token ? t : rank_stride;
        return true;
    }
    return false;
}

/* whole's units (seq_len tokens each): the first half, rounded up, then the rest */
static void halve(const search_state *whole, int64_t in_width, search_state halves[2]) {
    const int64_t n_first = (whole->n_seq + 1) / 2, unit = whole->seq_len;
    halves[0] = *whole;
    halves[0].n_seq = n_first;
    halves[0].n_tokens = n_first * unit;
    halves[1] = *whole;
    halves[1].n_seq = whole->n_seq - n_first;
    halves[1].n_tokens = halves[1].n_seq * unit;
    halves[1].input = whole->input + n_first * unit * in_width;
    halves[1].y_ref = whole->y_ref + n_first * unit * whole->out_width;
}

/* units of `unit` tokens (whole sequences, or single tokens), every stride-th in the head */
static bool split_init(split *sp, const search_state *st, int64_t in_width, int64_t unit,
                       int stride) {
    const int64_t units = st->n_tokens / unit;
    const int64_t n_head = (units + stride - 1) / stride, n_tail = units - n_head;
    sp->input = qw_malloc_array((size_t)(st->n_tokens * in_width), sizeof *sp->input);
    sp->y_ref = qw_malloc_array((size_t)(st->n_tokens * st->out_width), sizeof *sp->y_ref);
    if (!sp->input || !sp->y_ref) return false;
    const size_t in_floats = (size_t)(unit * in_width);
    const size_t out_floats = (size_t)(unit * st->out_width);
    int64_t to = 0;
    for (int pass = 0; pass < 2; pass++) { /* the subset, then the rest */
        for (int64_t from = 0; from < units; from++) {
            if ((from % stride == 0) != (pass == 0)) continue;
            memcpy(sp->input + (size_t)to * in_floats, st->input + (size_t)from * in_floats,
                   in_floats * sizeof(float));
            memcpy(sp->y_ref + (size_t)to * out_floats, st->y_ref + (size_t)from * out_floats,
                   out_floats * sizeof(float));
            to++;
        }
    }
    sp->head = *st;
    sp->head.seq_len = unit;
    sp->head.n_seq = n_head;
    sp->head.n_tokens = n_head * unit;
    sp->head.input = sp->input;
    sp->head.y_ref = sp->y_ref;
    sp->tail = sp->head;
    sp->tail.n_seq = n_tail;
    sp->tail.n_tokens = n_tail * unit;
    sp->tail.input = sp->input + (size_t)n_head * in_floats;
    sp->tail.y_ref = sp->y_ref + (size_t)n_head * out_floats;
    halve(&sp->head, in_width, sp->head_halves);
    halve(&sp->tail, in_width, sp->tail_halves);
    return true;
}

/* ---- finalists the subset already rules out ----------------------------------------------------
 * A finalist runs the parent on every token outside the subset, most of a ranked search's time.
 * The subset can already tell that a finalist will not win: its errors are compared with the
 * subset's best candidate's on the same tokens (a paired difference, so the tokens' own spread
 * cancels), in BATCHES runs of consecutive tokens whose sums stand in for independent samples
 * (the tokens of one sequence are not independent). A finalist whose mean difference lies more
 * than PRUNE_Z standard errors above zero is dropped: plain rounding too, which then keeps its
 * error so far for the report. The finals run the other tokens in two halves and prune again
 * between them, on the subset's and the first half's batches, now at PRUNE_Z_FINALS: with
 * about half the tokens behind it the test is sharper, and a finalist it drops wrongly (a
 * chance of 1 in 700 when two are equal) was within a few standard errors of the winner. On
 * SmolLM2-135M the choices stay those of PRUNE_Z there, and of the 160 finalists that ran the
 * first half 120 ran the second (137 at PRUNE_Z). */
#define BATCHES 16 /* 8 in each half of the subset, 16 in the first half of the others */
#define PRUNE_Z 4.0
#define PRUNE_Z_FINALS 3.0

typedef struct error_rows {
    const float *a, *b;
    int64_t width;
} error_rows;

static double error_row(const void *ctx, int64_t r) {
    const error_rows *e = ctx;
    return squared_error(e->a + r * e->width, e->b + r * e->width, e->width);
}

/* the squared error of `rows` rows of `width` values, also summed per batch of rows; sums:
 * scratch for `rows` values */
static double batched_error(qw_pool *pool, const float *a, const float *b, int64_t rows,
                            int64_t width, int n_batches, double *by_batch, double *sums) {
    const error_rows e = {a, b, width};
    row_sums(pool, rows, error_row, &e, sums);
    double total = 0.0;
    for (int j = 0; j < n_batches; j++) by_batch[j] = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        by_batch[r * n_batches / rows] += sums[r];
        total += sums[r];
    }
    return total;
}

/* Drops the finalists (final[k]) whose errors, in n_batches batch sums, are beyond doubt above
 * the best finalist's; a dropped plain rounding reports its error so far, sum / n_values. */
static void prune_finalists(const double (*by_batch)[2 * BATCHES], int n_batches, double z,
                            const double *sum, const grid_point *grid, int n_points, bool *final,
                            qw_awq_mapping_report *rep, int64_t n_values) {
    int best = -1;
    for (int k = 0; k < n_points; k++) {
        if (final[k] && isfinite(sum[k]) && (best < 0 || sum[k] < sum[best])) best = k;
    }
    for (int k = 0; best >= 0 && k < n_points; k++) {
        if (!final[k] || k == best || !isfinite(sum[k])) continue;
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < n_batches; j++) mean += by_batch[k][j] - by_batch[best][j];
        mean /= n_batches;
        for (int j = 0; j < n_batches; j++) {
            const double d = by_batch[k][j] - by_batch[best][j] - mean;
            var += d * d;
        }
        const double standard_error = sqrt(var / (n_batches - 1) / n_batches);
        if (mean > z * standard_error) {
            final[k] = false;
            if (grid[k].ratio == 0.0 && !grid[k].duo) rep->loss_plain = sum[k] / (double)n_values;
        }
    }
}

/* final[k] := whether candidate k is among the n_final smallest losses (first ones on ties;
 * non-finite losses never) or is plain rounding */
static void pick_finalists(const double *loss, const grid_point *grid, int n_points, int n_final,
                           bool *final) {
    for (int k = 0; k < n_points; k++) final[k] = grid[k].ratio == 0.0 && !grid[k].duo;
    for (int round = 0; round < n_final; round++) {
        int best = -1;
        for (int k = 0; k < n_points; k++) {
            if (!final[k] && isfinite(loss[k]) && (best < 0 || loss[k] < loss[best])) best = k;
        }
        if (best < 0) break;
        final[best] = true;
    }
}

/* The balance layers fake-quantized with candidate scales s, the parent run on part: *error :=
 * its squared error against part's reference output, also in n_batches batch sums. */
static qw_status candidate_error(search_state *part, const qw_awq_params *p, const awq_target *m,
                                 float *const *saved, const float *s,
                                 const qw_reporter *reporter, int n_batches, double *by_batch,
                                 double *error, qw_error *err) {
    qw_status status = qw_check_cancel(reporter, err);
    if (status != QW_OK) return status;
    fake_quantize_scaled(p, m->balance, m->ignored, saved, m->n_balance, s);
    status = run_parent(part, m, part->y, err);
    if (status == QW_OK) {
        *error = batched_error(p->pool, part->y_ref, part->y, part->n_tokens, part->out_width,
                               n_batches, by_batch, part->sums);
    }
    return status;
}

static qw_status search_mapping(search_state *st, const qw_awq_params *p, const awq_target *m,
                                const qw_reporter *reporter, qw_awq_mapping_report *rep,
                                qw_error *err) {
    qw_block *b = st->b;
    qw_linear *const *balance = m->balance;
    const bool *ignored = m->ignored;
    const int n_balance = m->n_balance;
    const int64_t width = balance[0]->n_in;
    const int64_t n_out = st->n_tokens * st->out_width;
    float **saved = qw_calloc((size_t)n_balance, sizeof *saved);
    if (!saved) return oom(err);
    float *x_mean = qw_malloc_array((size_t)width, sizeof *x_mean);
    float *w_mean = qw_malloc_array((size_t)width, sizeof *w_mean);
    float *s = qw_malloc_array((size_t)width, sizeof *s);
    float *best = qw_malloc_array((size_t)width, sizeof *best);
    st->sums = qw_malloc_array((size_t)(st->n_tokens > width ? st->n_tokens : width),
                               sizeof *st->sums);
    qw_status status = x_mean && w_mean && s && best && st->sums ? QW_OK : oom(err);
    for (int i = 0; status == QW_OK && i < n_balance; i++) {
        const size_t count = (size_t)(balance[i]->n_out * balance[i]->n_in);
        saved[i] = qw_malloc_array(count, sizeof *saved[i]);
        if (!saved[i]) status = oom(err);
        else memcpy(saved[i], balance[i]->w, count * sizeof *saved[i]);
    }
    if (status == QW_OK) {
        if (!input_mean(st->input, st->n_tokens, width, x_mean)) status = oom(err);
    }
    grid_point grid[128];
    const int n_points = grid_points(p, grid, 128);
    gram_loss gram = {NULL, NULL, NULL};
    const bool use_gram = (m->parent == PARENT_O || m->parent == PARENT_DOWN) &&
                          n_balance == 1 && gram_cheaper(balance[0], st->n_tokens, n_points);
    if (status == QW_OK && use_gram &&
        !gram_init(&gram, st->f, balance[0], st->input, st->n_tokens)) {
        status = oom(err);
    }
    if (status == QW_OK) {
        weight_mean(balance, n_balance, p->scheme.group_size, w_mean);
        if (!use_gram && !st->ref_ready) status = run_parent(st, m, st->y_ref, err);
    }
    bool final[128];
    for (int k = 0; k < n_points; k++) final[k] = true;
    const int stride = p->rank_stride;
    int64_t unit = 0;
    int unit_stride = 0;
    const bool ranked = status == QW_OK && stride > 1 && st->n_seq >= 2 * (int64_t)stride &&
                        ranking_subset(m->parent, st, stride, &unit, &unit_stride);
    const bool rows_ranked = status == QW_OK && use_gram && stride > 1 &&
                             balance[0]->n_out >= MIN_RANK_ROWS * (int64_t)stride;
    split sp = {0};
    row_split rs = {0};
    double rows_sampled[128]; /* rows_ranked: the exact error of the heavy and sampled rows */
    /* each candidate's squared error so far, on `seen` tokens (all candidates have seen the
     * same ones), and as batch sums: the ranking subset's halves' BATCHES / 2 each, then the
     * first half of the others' BATCHES */
    double sum[128], batches[128][2 * BATCHES];
    int64_t seen = 0;
    for (int k = 0; k < n_points; k++) sum[k] = INFINITY;
    rep->loss_plain = NAN;
    if (ranked) {
        if (!split_init(&sp, st, width, unit, unit_stride)) status = oom(err);
        /* every candidate on the subset's first half, the RANKING_KEEP best of them (and plain
         * rounding) on its second half too */
        bool kept[128];
        for (int k = 0; k < n_points; k++) kept[k] = true;
        for (int half = 0; half < 2 && status == QW_OK; half++) {
            search_state *part = &sp.head_halves[half];
            if (part->n_tokens == 0) break; /* a one-unit subset: no second half */
            if (half == 1) pick_finalists(sum, grid, n_points, RANKING_KEEP, kept);
            for (int k = 0; status == QW_OK && k < n_points; k++) {
                if (!kept[k]) {
                    sum[k] = INFINITY;
                    continue;
                }
                double e = 0.0;
                candidate_scales(x_mean, w_mean, width, grid[k], s);
                status = candidate_error(part, p, m, saved, s, reporter, BATCHES / 2,
                                         batches[k] + half * (BATCHES / 2), &e, err);
                sum[k] = half == 0 ? e : sum[k] + e;
            }
            seen += part->n_tokens;
        }
        if (status == QW_OK) {
            pick_finalists(sum, grid, n_points, FINALISTS, final);
            if (sp.head.n_tokens >= BATCHES) {
                prune_finalists((const double(*)[2 * BATCHES])batches, BATCHES, PRUNE_Z, sum,
                                grid, n_points, final, rep, seen * st->out_width);
            }
        }
    } else if (rows_ranked) {
        if (!row_split_init(&rs, &p->scheme, gram.gram, saved[0], balance[0]->n_out, width,
                            stride)) {
            status = oom(err);
        }
        for (int k = 0; status == QW_OK && k < n_points; k++) {
            status = qw_check_cancel(reporter, err);
            if (status != QW_OK) break;
            candidate_scales(x_mean, w_mean, width, grid[k], s);
            const double heavy = row_part_error(p, &gram, st->f, &rs, 0, ignored[0], s, st->sums);
            const double sampled =
                row_part_error(p, &gram, st->f, &rs, 1, ignored[0], s, st->sums);
            sum[k] = heavy + rs.weight * sampled; /* the estimate, to rank by */
            rows_sampled[k] = heavy + sampled;
        }
        if (status == QW_OK) pick_finalists(sum, grid, n_points, ROWS_KEEP, final);
    }
    /* the finals: the finalists' errors on every token, from the Gram matrix, or the parent
     * run on the tokens outside the subset in two halves, with a second pruning between them */
    if (use_gram) {
        for (int k = 0; status == QW_OK && k < n_points; k++) {
            if (!final[k]) continue;
            status = qw_check_cancel(reporter, err);
            if (status != QW_OK) break;
            candidate_scales(x_mean, w_mean, width, grid[k], s);
            if (rows_ranked) {
                sum[k] = rows_sampled[k] +
                         row_part_error(p, &gram, st->f, &rs, 2, ignored[0], s, st->sums);
            } else {
                fake_quantize_scaled(p, balance, ignored, saved, n_balance, s);
                sum[k] = gram_error(&gram, st->f, p->pool, balance[0], saved[0], st->sums);
            }
        }
    } else {
        search_state *parts[2] = {st, NULL};
        if (ranked) {
            parts[0] = &sp.tail_halves[0];
            parts[1] = sp.tail_halves[1].n_tokens > 0 ? &sp.tail_halves[1] : NULL;
        }
        for (int half = 0; half < 2 && parts[half] && status == QW_OK; half++) {
            for (int k = 0; status == QW_OK && k < n_points; k++) {
                if (!final[k]) continue;
                double e = 0.0;
                candidate_scales(x_mean, w_mean, width, grid[k], s);
                status = candidate_error(parts[half], p, m, saved, s, reporter, BATCHES,
                                         batches[k] + BATCHES, &e, err);
                sum[k] = ranked ? sum[k] + e : e;
            }
            seen += parts[half]->n_tokens;
            if (status == QW_OK && half == 0 && parts[1] && sp.head.n_tokens >= BATCHES) {
                prune_finalists((const double(*)[2 * BATCHES])batches, 2 * BATCHES,
                                PRUNE_Z_FINALS, sum, grid, n_points, final, rep,
                                seen * st->out_width);
            }
        }
    }
    double best_loss = INFINITY;
    int best_k = -1;
    for (int k = 0; status == QW_OK && k < n_points; k++) {
        if (!final[k]) continue;
        const double loss = sum[k] / (double)n_out;
        if (grid[k].ratio == 0.0 && !grid[k].duo) rep->loss_plain = loss;
        if (loss < best_loss) { /* strictly smaller: the first minimum is kept */
            best_loss = loss;
            best_k = k;
        }
    }
    if (best_k >= 0) {
        rep->ratio = grid[best_k].ratio;
        rep->duo = grid[best_k].duo;
        candidate_scales(x_mean, w_mean, width, grid[best_k], best);
    }
    split_free(&sp);
    row_split_free(&rs);
    if (status == QW_OK && !isfinite(best_loss)) {
        status = qw_fail(err, QW_ERR_CORRUPT,
                         "layer %lld, %s: every candidate gives a non-finite error (the "
                         "calibration activations overflow)",
                         (long long)b->layer, m->name);
    }
    /* restore the originals, then fold the winner in (on failure: just restore) */
    for (int i = 0; i < n_balance; i++) {
        if (saved[i]) {
            memcpy(balance[i]->w, saved[i],
                   (size_t)(balance[i]->n_out * balance[i]->n_in) * sizeof *saved[i]);
        }
    }
    if (status == QW_OK) {
        fold_scales(p, m, balance, saved, n_balance, best, width, qw_forward_norm_offset(st->f));
        rep->loss = best_loss;
    }
    for (int i = 0; i < n_balance; i++) qw_free(saved[i]);
    qw_free(saved);
    gram_free(&gram);
    qw_free(x_mean);
    qw_free(w_mean);
    qw_free(s);
    qw_free(best);
    qw_free(st->sums);
    st->sums = NULL;
    return status;
}

/* ---- a sparse MoE layer's MLP ------------------------------------------------------------------
 * As llm-compressor's MoE mappings (research/awq.md §1.2): post_attention_layernorm is balanced
 * against everything that reads its output, the router (its PR #2451: left out, the router
 * would see scaled inputs and route differently), every expert's gate/up and Qwen2-MoE's
 * shared expert and shared_expert_gate, with the whole sparse block as the parent; the router
 * and shared_expert_gate are scaled but never quantized. Then each expert's up -> down on the
 * tokens routed to it, and the shared expert's up -> down on all tokens. Down inputs come from
 * the block before any scaling, like the other statistics. */

/* the token-weighted mean of the experts' searches, as one report line */
static void add_expert_report(qw_awq_mapping_report *sum, const qw_awq_mapping_report *one,
                              int64_t tokens, int64_t *total) {
    const double w0 = (double)*total, w1 = (double)tokens, all = w0 + w1;
    sum->loss = (sum->loss * w0 + one->loss * w1) / all;
    sum->loss_plain = (sum->loss_plain * w0 + one->loss_plain * w1) / all;
    sum->ratio = (sum->ratio * w0 + one->ratio * w1) / all;
    sum->duo = sum->duo || one->duo;
    *total += tokens;
}

static qw_status smooth_moe(const qw_forward *f, qw_block *b, const float *mlp_in,
                            int64_t n_seq, int64_t seq_len, const qw_awq_params *p,
                            const qw_reporter *reporter, qw_awq_block_report *report,
                            float *y_ref, float *y, qw_error *err) {
    qw_moe *m = b->moe;
    const int64_t n = n_seq * seq_len, d = qw_forward_hidden(f), k = m->n_used;
    const int64_t ne = m->n_expert, ff = m->experts[0].gate.n_out;
    const bool shared = m->shared.gate.w != NULL;
    const int64_t sff = shared ? m->shared.gate.n_out : 0;
    int32_t *ids = qw_malloc_array((size_t)(n * k), sizeof *ids);
    float *weights = qw_malloc_array((size_t)(n * k), sizeof *weights);
    int64_t *count = qw_calloc((size_t)ne, sizeof *count);
    float *x = qw_malloc_array((size_t)(n * d), sizeof *x);
    float *down_in = qw_malloc_array((size_t)(n * k * ff), sizeof *down_in);
    float *shared_in = shared ? qw_malloc_array((size_t)(n * sff), sizeof *shared_in) : NULL;
    const int n_balance = (int)(1 + 2 * ne + (shared ? 3 : 0));
    qw_linear **balance = qw_malloc_array((size_t)n_balance, sizeof *balance);
    bool *ignored = qw_calloc((size_t)n_balance, sizeof *ignored);
    qw_status status = ids && weights && count && x && down_in && (!shared || shared_in) &&
                       balance && ignored ? QW_OK : oom(err);
    /* each expert's down_proj input on its tokens, from the unscaled block */
    if (status == QW_OK) status = qw_moe_route(f, m, mlp_in, n, ids, weights, err);
    int64_t offset = 0;
    for (int64_t e = 0; status == QW_OK && e < ne; e++) {
        for (int64_t t = 0; t < n; t++) {
            for (int64_t j = 0; j < k; j++) {
                if (ids[t * k + j] != e) continue;
                memcpy(x + count[e] * d, mlp_in + t * d, (size_t)d * sizeof *x);
                count[e]++;
            }
        }
        if (count[e] > 0) {
            status = qw_mlp_forward(f, &m->experts[e], x, count[e], y, down_in + offset * ff,
                                    err);
        }
        offset += count[e];
    }
    if (status == QW_OK && shared) {
        status = qw_mlp_forward(f, &m->shared, mlp_in, n, y, shared_in, err);
    }
    /* post_attention_layernorm -> router, experts' gate/up, shared expert */
    if (status == QW_OK) {
        int i = 0;
        ignored[i] = true;
        balance[i++] = &m->router;
        for (int64_t e = 0; e < ne; e++) {
            balance[i++] = &m->experts[e].gate;
            balance[i++] = &m->experts[e].up;
        }
        if (shared) {
            balance[i++] = &m->shared.gate;
            balance[i++] = &m->shared.up;
            ignored[i] = true;
            balance[i++] = &m->shared_gate;
        }
        qw_awq_mapping_report *rep = &report->mappings[report->n_mappings++];
        rep->name = "post_attention_layernorm -> router, experts' gate/up, shared expert";
        const awq_target t = {rep->name, b->ffn_norm, NULL, balance, ignored, n_balance,
                              PARENT_MLP, NULL};
        search_state st = {f, b, n_seq, seq_len, n, mlp_in, d, y_ref, y, false, NULL};
        status = search_mapping(&st, p, &t, reporter, rep, err);
    }
    /* each expert's up -> down on its own tokens; reported as their token-weighted mean */
    qw_awq_mapping_report *sum = status == QW_OK ? &report->mappings[report->n_mappings++]
                                                 : NULL;
    if (sum) {
        *sum = (qw_awq_mapping_report){"experts' up_proj -> down_proj", true, 0, false, 0, 0};
    }
    int64_t total = 0;
    offset = 0;
    for (int64_t e = 0; status == QW_OK && e < ne; e++) {
        const int64_t rows = count[e];
        const float *input = down_in + offset * ff;
        offset += rows;
        if (rows == 0) continue; /* no calibration token reached it: left unscaled */
        qw_expert *ex = &m->experts[e];
        qw_linear *down = &ex->down;
        const bool not_ignored = false;
        const awq_target t = {sum->name, NULL, &ex->up, &down, &not_ignored, 1, PARENT_DOWN,
                              down};
        search_state st = {f, b, n_seq, seq_len, rows, input, d, y_ref, y, false, NULL};
        qw_awq_mapping_report one = {0};
        status = search_mapping(&st, p, &t, reporter, &one, err);
        if (status == QW_OK) {
            add_expert_report(sum, &one, rows, &total);
            sum->skipped = false;
        }
    }
    if (status == QW_OK && shared) {
        qw_awq_mapping_report *rep = &report->mappings[report->n_mappings++];
        rep->name = "shared_expert.up_proj -> shared_expert.down_proj";
        qw_linear *down = &m->shared.down;
        const bool not_ignored = false;
        const awq_target t = {rep->name, NULL, &m->shared.up, &down, &not_ignored, 1,
                              PARENT_DOWN, down};
        search_state st = {f, b, n_seq, seq_len, n, shared_in, d, y_ref, y, false, NULL};
        status = search_mapping(&st, p, &t, reporter, rep, err);
    }
    qw_free(ids);
    qw_free(weights);
    qw_free(count);
    qw_free(x);
    qw_free(down_in);
    qw_free(shared_in);
    qw_free(balance);
    qw_free(ignored);
    return status;
}

/* ---- the block -------------------------------------------------------------------------------- */

qw_status qw_awq_smooth_block(const qw_forward *f, qw_block *b, const float *hidden,
                              int64_t n_seq, int64_t seq_len, const qw_awq_params *p,
                              const qw_reporter *reporter, qw_awq_block_report *report,
                              float *out, qw_error *err) {
    memset(report, 0, sizeof *report);
    const int64_t n = n_seq * seq_len, d = qw_forward_hidden(f);
    const int64_t ff = b->gate.n_out, qw = b->o.n_in; /* ff 0 in a MoE layer: no down_in tap */
    if (p->n_grid < 2 || p->n_grid > 100) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "AWQ grid of %d points (2..100)", p->n_grid);
    }
    /* the parents' inputs, from the block before any scaling */
    float *copy = qw_malloc_array((size_t)(n * d), sizeof *copy);
    float *taps_mem = qw_malloc_array((size_t)(n * (2 * d + qw + ff)), sizeof *taps_mem);
    float *y_ref = qw_malloc_array((size_t)(n * d), sizeof *y_ref);
    float *y = qw_malloc_array((size_t)(n * d), sizeof *y);
    /* the statistics pass leaves the parents' reference outputs: the attention's in y_ref
     * (good until a mapping reuses that buffer), a dense MLP's in its own */
    float *mlp_ref = b->moe ? NULL : qw_malloc_array((size_t)(n * d), sizeof *mlp_ref);
    qw_status status = copy && taps_mem && y_ref && y && (b->moe || mlp_ref) ? QW_OK : oom(err);
    qw_block_taps taps = {taps_mem, taps_mem + n * d, taps_mem + n * (d + qw),
                          taps_mem + n * (2 * d + qw), y_ref, mlp_ref};
    bool attn_ref_ready = true;
    if (status == QW_OK) {
        memcpy(copy, hidden, (size_t)(n * d) * sizeof *copy);
        status = qw_block_forward(f, b, copy, n_seq, seq_len, &taps, err);
    }
    const float *inputs[] = {taps.attn_in, taps.o_in, taps.mlp_in, taps.down_in};
    size_t n_mappings;
    const struct awq_mapping *mappings = family_mappings(f, &n_mappings);
    for (size_t i = 0; status == QW_OK && i < n_mappings; i++) {
        const struct awq_mapping *m = &mappings[i];
        /* a MoE layer's MLP has its own mappings (smooth_moe) */
        if (b->moe && (m->input == INPUT_MLP || m->input == INPUT_DOWN)) continue;
        qw_awq_mapping_report *rep = &report->mappings[report->n_mappings++];
        rep->name = m->name;
        bool all_ignored = true;
        for (int k = 0; k < 3 && m->balance[k] != NO_LINEAR; k++) {
            all_ignored = all_ignored && linear_ignored(p, m->balance[k]);
        }
        if (m->smooth_linear != NO_LINEAR && !linear_ignored(p, m->smooth_linear)) {
            all_ignored = false;
        }
        if ((m->needs_matching_v_o && b->v.n_out != b->o.n_in) || all_ignored) {
            rep->skipped = true;
            continue;
        }
        /* every parent (attention, o_proj, mlp, down_proj) writes hidden-size rows */
        search_state st = {f, b, n_seq, seq_len, n, inputs[m->input], d, y_ref, y, false, NULL};
        if (m->parent == PARENT_ATTENTION && attn_ref_ready) {
            st.ref_ready = true;
        } else if (m->parent == PARENT_MLP) {
            st.y_ref = mlp_ref;
            st.ref_ready = true;
        } else {
            attn_ref_ready = false; /* y_ref is this mapping's now */
        }
        qw_linear *balance[3];
        bool ignored[3];
        int n_balance = 0;
        while (n_balance < 3 && m->balance[n_balance] != NO_LINEAR) {
            balance[n_balance] = linear_at(b, m->balance[n_balance]);
            ignored[n_balance] = linear_ignored(p, m->balance[n_balance]);
            n_balance++;
        }
        const awq_target t = {
            m->name,
            m->smooth_norm != NO_LINEAR ? *(float **)((char *)b + m->smooth_norm) : NULL,
            m->smooth_linear != NO_LINEAR ? linear_at(b, m->smooth_linear) : NULL,
            balance, ignored, n_balance, m->parent,
            m->parent == PARENT_O ? &b->o : m->parent == PARENT_DOWN ? &b->down : NULL};
        status = search_mapping(&st, p, &t, reporter, rep, err);
    }
    if (status == QW_OK && b->moe) {
        status = smooth_moe(f, b, taps.mlp_in, n_seq, seq_len, p, reporter, report, y_ref, y,
                            err);
    }
    if (status == QW_OK && out) memcpy(out, copy, (size_t)(n * d) * sizeof *out);
    qw_free(copy);
    qw_free(taps_mem);
    qw_free(y_ref);
    qw_free(y);
    qw_free(mlp_ref);
    return status;
}
