/*
 * The weight-clipping search (awq_clip.h).
 *
 * The error of a group is e(d) = mean_t (x_t,g · d)^2 = d^T H_g d, with d the change the clipped
 * and quantized weights make to the group's G weights and H_g = X_g^T X_g / T the Gram matrix of
 * the sampled inputs' G columns. Building H_g once per group (T·G² work) and judging every row
 * and candidate against it (G² each) is cheaper than the direct sum over tokens (T·G each)
 * whenever G < T, which holds for the usual 64/128 groups against ~512 tokens; it is also one
 * matrix product per group for all rows and candidates together.
 *
 * In a mixture-of-experts layer AutoAWQ's hooks see each expert's linears on the tokens routed
 * to it, and so does this search: the MLP input is sampled about n_expert / n_used times as
 * densely as the other taps (so each expert gets ~CLIP_TOKENS of its own on average), routed
 * as the router routes it, and each expert's share thinned to the same ~CLIP_TOKENS at an even
 * stride; its down_proj input is computed from those tokens before anything is clipped.
 * Qwen2-MoE's shared expert sees every token, sampled as a dense MLP's. Routers are never
 * clipped (they are never quantized).
 */
#include "awq_clip.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* AutoAWQ's grid: 20 steps, at most half the range cut, ~512 tokens */
#define CLIP_GRID 20
#define CLIP_STEPS 10
#define CLIP_TOKENS 512

typedef enum clip_input { INPUT_ATTN, INPUT_O, INPUT_MLP, INPUT_DOWN, N_INPUTS } clip_input;

/* the linears searched, the tap that feeds each, and its bit in qw_awq_params.ignored; q_proj
 * and k_proj are left out as AutoAWQ leaves them out: their errors pass through the softmax,
 * which the per-linear error cannot see */
static const struct {
    size_t field;
    clip_input input;
    unsigned ignore_bit;
} CLIPPED[] = {
    {offsetof(qw_block, v), INPUT_ATTN, 2},    {offsetof(qw_block, o), INPUT_O, 3},
    {offsetof(qw_block, gate), INPUT_MLP, 4},  {offsetof(qw_block, up), INPUT_MLP, 5},
    {offsetof(qw_block, down), INPUT_DOWN, 6},
};

static qw_status oom(qw_error *err) {
    return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory in the AWQ clipping search");
}

/* ---- the sampled inputs --------------------------------------------------------------------- */

typedef struct sampled_inputs {
    float *x[N_INPUTS]; /* n_rows[i] rows each; NULL for a tap the block does not have */
    int64_t width[N_INPUTS];
    int64_t step[N_INPUTS];   /* every step-th token is kept */
    int64_t n_rows[N_INPUTS]; /* T */
} sampled_inputs;

/* AutoAWQ's thinning of n rows: every step-th, step = n / CLIP_TOKENS (at least 1) */
static int64_t thinning_step(int64_t n) { return n / CLIP_TOKENS > 1 ? n / CLIP_TOKENS : 1; }

/* how many times denser than a dense tap a MoE layer's MLP input is sampled: n_expert / n_used,
 * so that each expert gets about CLIP_TOKENS of its own */
static int64_t moe_density(const qw_moe *m) {
    return m->n_expert / m->n_used > 1 ? m->n_expert / m->n_used : 1;
}

/* Runs the block over `hidden` batch by batch, in place, and keeps every step-th token's input
 * of each tap (tokens counted across sequences, as AutoAWQ flattens them). A MoE layer has no
 * single down_proj input, and its MLP input is kept denser (see the top of the file). */
static qw_status sample_inputs(const qw_forward *f, const qw_block *b, float *hidden,
                               int64_t n_seq, int64_t seq_len, int64_t batch, sampled_inputs *si,
                               qw_error *err) {
    const int64_t n = n_seq * seq_len, d = qw_forward_hidden(f);
    si->width[INPUT_ATTN] = d;
    si->width[INPUT_O] = b->o.n_in;
    si->width[INPUT_MLP] = d;
    si->width[INPUT_DOWN] = b->moe ? 0 : b->down.n_in;
    int64_t tap_width = 0;
    for (int i = 0; i < N_INPUTS; i++) {
        si->step[i] = thinning_step(n);
        if (i == INPUT_MLP && b->moe && moe_density(b->moe) > 1) {
            si->step[i] = n / (CLIP_TOKENS * moe_density(b->moe));
            if (si->step[i] < 1) si->step[i] = 1;
        }
        si->n_rows[i] = (n + si->step[i] - 1) / si->step[i];
        if (si->width[i] == 0) continue;
        si->x[i] = qw_malloc_array((size_t)(si->n_rows[i] * si->width[i]), sizeof(float));
        if (!si->x[i]) return oom(err);
        tap_width += si->width[i];
    }
    if (batch < 1) batch = 1;
    const int64_t rows = (batch < n_seq ? batch : n_seq) * seq_len;
    float *taps_mem = qw_malloc_array((size_t)(rows * tap_width), sizeof *taps_mem);
    qw_status st = taps_mem ? QW_OK : oom(err);
    float *tap[N_INPUTS];
    int64_t at = 0, kept[N_INPUTS] = {0};
    for (int i = 0; i < N_INPUTS; i++) {
        tap[i] = taps_mem && si->width[i] > 0 ? taps_mem + at * rows : NULL;
        at += si->width[i];
    }
    qw_block_taps taps = {tap[INPUT_ATTN], tap[INPUT_O], tap[INPUT_MLP], tap[INPUT_DOWN], NULL, NULL};
    for (int64_t s0 = 0; st == QW_OK && s0 < n_seq; s0 += batch) {
        const int64_t nb = n_seq - s0 < batch ? n_seq - s0 : batch;
        st = qw_block_forward(f, b, hidden + s0 * seq_len * d, nb, seq_len, &taps, err);
        for (int64_t r = 0; st == QW_OK && r < nb * seq_len; r++) {
            for (int i = 0; i < N_INPUTS; i++) {
                if (!tap[i] || (s0 * seq_len + r) % si->step[i] != 0) continue;
                memcpy(si->x[i] + kept[i] * si->width[i], tap[i] + r * si->width[i],
                       (size_t)si->width[i] * sizeof(float));
                kept[i]++;
            }
        }
    }
    qw_free(taps_mem);
    return st;
}

static void sampled_free(sampled_inputs *si) {
    for (int i = 0; i < N_INPUTS; i++) qw_free(si->x[i]);
}

/* ---- one group column of a linear ----------------------------------------------------------- */

typedef struct clip_job {
    const qw_int4_scheme *scheme;
    const qw_linear *l;
    int64_t col;    /* first column of the group */
    float *deltas;  /* [CLIP_STEPS][n_out][G]: quantized clipped weights minus the weights */
    float *limits;  /* [CLIP_STEPS][n_out]: each candidate's range */
} clip_job;

/* candidates for rows [begin, end): clamp to the range, fake-quantize, subtract the weights */
static void candidate_rows(void *ctx, size_t begin, size_t end, int worker) {
    (void)worker;
    const clip_job *job = ctx;
    const int64_t g = job->scheme->group_size, n_out = job->l->n_out;
    for (size_t r = begin; r < end; r++) {
        const float *w = job->l->w + (int64_t)r * job->l->n_in + job->col;
        float absmax = 0.0f;
        for (int64_t c = 0; c < g; c++) absmax = fabsf(w[c]) > absmax ? fabsf(w[c]) : absmax;
        for (int i = 0; i < CLIP_STEPS; i++) {
            const float limit =
                qw_int4_round_dtype(job->scheme, absmax * (1.0f - (float)i / CLIP_GRID));
            float *d = job->deltas + ((int64_t)i * n_out + (int64_t)r) * g;
            for (int64_t c = 0; c < g; c++) d[c] = fminf(fmaxf(w[c], -limit), limit);
            qw_int4_fake_quantize_row(job->scheme, d, g);
            for (int64_t c = 0; c < g; c++) d[c] -= w[c];
            job->limits[(int64_t)i * n_out + (int64_t)r] = limit;
        }
    }
}

/* Searches and applies the ranges of one linear; `x` holds T sampled rows of its input. */
static qw_status clip_linear(const qw_forward *f, const qw_awq_params *p, qw_linear *l,
                             const float *x, int64_t T,
                             const qw_reporter *reporter, qw_awq_clip_report *rep,
                             qw_error *err) {
    const int64_t g = p->scheme.group_size, n_out = l->n_out, n_in = l->n_in;
    if (g <= 0 || n_in % g != 0) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "group size %lld does not divide the %lld inputs of a linear",
                       (long long)g, (long long)n_in);
    }
    float *gram = qw_malloc_array((size_t)(g * g), sizeof *gram);
    float *deltas = qw_malloc_array((size_t)(CLIP_STEPS * n_out * g), sizeof *deltas);
    float *weighted = qw_malloc_array((size_t)(CLIP_STEPS * n_out * g), sizeof *weighted);
    float *limits = qw_malloc_array((size_t)(CLIP_STEPS * n_out), sizeof *limits);
    qw_status st = gram && deltas && weighted && limits ? QW_OK : oom(err);
    for (int64_t col = 0; st == QW_OK && col < n_in; col += g) {
        st = qw_check_cancel(reporter, err);
        if (st != QW_OK) break;
        qw_forward_gemm(f, true, false, g, g, T, 1.0f / (float)T, x + col, n_in, x + col, n_in,
                        0.0f, gram, g);
        clip_job job = {&p->scheme, l, col, deltas, limits};
        if (p->pool) {
            qw_pool_run(p->pool, (size_t)n_out, 8, candidate_rows, &job);
        } else {
            candidate_rows(&job, 0, (size_t)n_out, 0);
        }
        qw_forward_gemm(f, false, false, CLIP_STEPS * n_out, g, g, 1.0f, deltas, g, gram, g,
                        0.0f, weighted, g);
        for (int64_t r = 0; r < n_out; r++) {
            double best_err = INFINITY, first_err = NAN;
            int best = 0;
            for (int i = 0; i < CLIP_STEPS; i++) {
                const float *d = deltas + ((int64_t)i * n_out + r) * g;
                const float *hd = weighted + ((int64_t)i * n_out + r) * g;
                double e = 0.0;
                for (int64_t c = 0; c < g; c++) e += (double)d[c] * (double)hd[c];
                if (i == 0) first_err = e;
                if (e < best_err) { /* strictly smaller: the widest of equal ranges is kept */
                    best_err = e;
                    best = i;
                }
            }
            rep->n_groups++;
            if (!isfinite(best_err)) continue; /* non-finite inputs: leave the group as it is */
            rep->loss_before += first_err;
            rep->loss_after += best_err;
            if (best == 0) continue;
            rep->n_clipped++;
            const float limit = limits[(int64_t)best * n_out + r];
            float *w = l->w + r * n_in + col;
            for (int64_t c = 0; c < g; c++) w[c] = fminf(fmaxf(w[c], -limit), limit);
        }
    }
    qw_free(gram);
    qw_free(deltas);
    qw_free(weighted);
    qw_free(limits);
    return st;
}

/* Clips one expert's gate, up and down (those not ignored[0..2]) on x, its n routed rows of
 * MLP input, thinned here; down's input is computed from the thinned rows first. */
static qw_status clip_expert(const qw_forward *f, const qw_awq_params *p, qw_expert *e,
                             const float *x, int64_t n, const bool *ignored, float *thin,
                             float *down_in, float *out, const qw_reporter *reporter,
                             qw_awq_clip_report *rep, qw_error *err) {
    const int64_t d = qw_forward_hidden(f), step = thinning_step(n);
    int64_t t = 0;
    for (int64_t r = 0; r < n; r += step) {
        memcpy(thin + t * d, x + r * d, (size_t)d * sizeof *thin);
        t++;
    }
    if (t == 0) return QW_OK; /* no calibration token reached it: left as it is */
    QW_TRY(qw_mlp_forward(f, e, thin, t, out, down_in, err));
    qw_linear *const linears[3] = {&e->gate, &e->up, &e->down};
    for (int j = 0; j < 3; j++) {
        if (ignored && ignored[j]) continue;
        QW_TRY(clip_linear(f, p, linears[j], j < 2 ? thin : down_in, t, reporter, rep, err));
    }
    return QW_OK;
}

/* A MoE layer's experts and shared expert on the sampled MLP input x (n rows) */
static qw_status clip_moe(const qw_forward *f, qw_moe *m, const float *x, int64_t n,
                          const qw_awq_params *p, const bool *ignored,
                          const qw_reporter *reporter, qw_awq_clip_report *rep, qw_error *err) {
    const int64_t d = qw_forward_hidden(f), k = m->n_used;
    int64_t ff = m->shared.gate.w ? m->shared.gate.n_out : 0;
    for (int64_t e = 0; e < m->n_expert; e++) {
        ff = m->experts[e].gate.n_out > ff ? m->experts[e].gate.n_out : ff;
    }
    int32_t *ids = qw_malloc_array((size_t)(n * k), sizeof *ids);
    float *weights = qw_malloc_array((size_t)(n * k), sizeof *weights);
    float *routed = qw_malloc_array((size_t)(n * d), sizeof *routed);
    float *thin = qw_malloc_array((size_t)(n * d), sizeof *thin);
    float *out = qw_malloc_array((size_t)(n * d), sizeof *out);
    float *down_in = qw_malloc_array((size_t)(n * ff), sizeof *down_in);
    qw_status st = ids && weights && routed && thin && out && down_in ? QW_OK : oom(err);
    if (st == QW_OK) st = qw_moe_route(f, m, x, n, ids, weights, err);
    for (int64_t e = 0; st == QW_OK && e < m->n_expert; e++) {
        int64_t count = 0;
        for (int64_t t = 0; t < n; t++) {
            for (int64_t j = 0; j < k; j++) {
                if (ids[t * k + j] != e) continue;
                memcpy(routed + count * d, x + t * d, (size_t)d * sizeof *routed);
                count++;
            }
        }
        st = clip_expert(f, p, &m->experts[e], routed, count, ignored ? ignored + 3 * e : NULL,
                         thin, down_in, out, reporter, rep, err);
    }
    if (st == QW_OK && m->shared.gate.w) {
        /* every token reaches it: thinned back to the dense taps' density */
        const int64_t density = moe_density(m);
        int64_t t = 0;
        for (int64_t r = 0; r < n; r += density) {
            memcpy(routed + t * d, x + r * d, (size_t)d * sizeof *routed);
            t++;
        }
        st = clip_expert(f, p, &m->shared, routed, t,
                         ignored ? ignored + 3 * m->n_expert : NULL, thin, down_in, out,
                         reporter, rep, err);
    }
    qw_free(ids);
    qw_free(weights);
    qw_free(routed);
    qw_free(thin);
    qw_free(out);
    qw_free(down_in);
    return st;
}

qw_status qw_awq_clip_block(const qw_forward *f, qw_block *b, float *hidden,
                            int64_t n_seq, int64_t seq_len, int64_t batch,
                            const qw_awq_params *p, const bool *moe_ignored,
                            const qw_reporter *reporter, qw_awq_clip_report *report,
                            qw_error *err) {
    memset(report, 0, sizeof *report);
    sampled_inputs si = {0};
    qw_status st = sample_inputs(f, b, hidden, n_seq, seq_len, batch, &si, err);
    for (size_t i = 0; st == QW_OK && i < sizeof CLIPPED / sizeof CLIPPED[0]; i++) {
        if ((p->ignored >> CLIPPED[i].ignore_bit) & 1u) continue;
        const clip_input in = CLIPPED[i].input;
        if (b->moe && (in == INPUT_MLP || in == INPUT_DOWN)) continue; /* clip_moe's */
        qw_linear *l = (qw_linear *)((char *)b + CLIPPED[i].field);
        st = clip_linear(f, p, l, si.x[in], si.n_rows[in], reporter, report, err);
    }
    if (st == QW_OK && b->moe) {
        st = clip_moe(f, b->moe, si.x[INPUT_MLP], si.n_rows[INPUT_MLP], p, moe_ignored,
                      reporter, report, err);
    }
    sampled_free(&si);
    return st;
}
