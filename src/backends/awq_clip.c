/*
 * The weight-clipping search (awq_clip.h).
 *
 * The error of a group is e(d) = mean_t (x_t,g · d)^2 = d^T H_g d, with d the change the clipped
 * and quantized weights make to the group's G weights and H_g = X_g^T X_g / T the Gram matrix of
 * the sampled inputs' G columns. Building H_g once per group (T·G² work) and judging every row
 * and candidate against it (G² each) is cheaper than the direct sum over tokens (T·G each)
 * whenever G < T, which holds for the usual 64/128 groups against ~512 tokens; it is also one
 * matrix product per group for all rows and candidates together.
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
    float *x[N_INPUTS]; /* T rows each */
    int64_t width[N_INPUTS];
    int64_t n_tokens; /* T */
} sampled_inputs;

/* Runs the block over `hidden` batch by batch, in place, and keeps every step-th token's input
 * of each tap (tokens counted across sequences, as AutoAWQ flattens them). */
static qw_status sample_inputs(const qw_forward *f, const qw_block *b, float *hidden,
                               int64_t n_seq, int64_t seq_len, int64_t batch, sampled_inputs *si,
                               qw_error *err) {
    const int64_t n = n_seq * seq_len, d = qw_forward_hidden(f);
    const int64_t step = n / CLIP_TOKENS > 1 ? n / CLIP_TOKENS : 1;
    si->n_tokens = (n + step - 1) / step;
    si->width[INPUT_ATTN] = d;
    si->width[INPUT_O] = b->o.n_in;
    si->width[INPUT_MLP] = d;
    si->width[INPUT_DOWN] = b->down.n_in;
    int64_t tap_width = 0;
    for (int i = 0; i < N_INPUTS; i++) {
        si->x[i] = qw_malloc_array((size_t)(si->n_tokens * si->width[i]), sizeof(float));
        if (!si->x[i]) return oom(err);
        tap_width += si->width[i];
    }
    if (batch < 1) batch = 1;
    const int64_t rows = (batch < n_seq ? batch : n_seq) * seq_len;
    float *taps_mem = qw_malloc_array((size_t)(rows * tap_width), sizeof *taps_mem);
    qw_status st = taps_mem ? QW_OK : oom(err);
    float *tap[N_INPUTS];
    int64_t at = 0;
    for (int i = 0; i < N_INPUTS; i++) {
        tap[i] = taps_mem ? taps_mem + at * rows : NULL;
        at += si->width[i];
    }
    qw_block_taps taps = {tap[INPUT_ATTN], tap[INPUT_O], tap[INPUT_MLP], tap[INPUT_DOWN], NULL, NULL};
    int64_t kept = 0;
    for (int64_t s0 = 0; st == QW_OK && s0 < n_seq; s0 += batch) {
        const int64_t nb = n_seq - s0 < batch ? n_seq - s0 : batch;
        st = qw_block_forward(f, b, hidden + s0 * seq_len * d, nb, seq_len, &taps, err);
        for (int64_t r = 0; st == QW_OK && r < nb * seq_len; r++) {
            if ((s0 * seq_len + r) % step != 0) continue;
            for (int i = 0; i < N_INPUTS; i++) {
                memcpy(si->x[i] + kept * si->width[i], tap[i] + r * si->width[i],
                       (size_t)si->width[i] * sizeof(float));
            }
            kept++;
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

qw_status qw_awq_clip_block(const qw_forward *f, qw_block *b, float *hidden,
                            int64_t n_seq, int64_t seq_len, int64_t batch,
                            const qw_awq_params *p, const qw_reporter *reporter,
                            qw_awq_clip_report *report, qw_error *err) {
    memset(report, 0, sizeof *report);
    sampled_inputs si = {0};
    qw_status st = sample_inputs(f, b, hidden, n_seq, seq_len, batch, &si, err);
    for (size_t i = 0; st == QW_OK && i < sizeof CLIPPED / sizeof CLIPPED[0]; i++) {
        if ((p->ignored >> CLIPPED[i].ignore_bit) & 1u) continue;
        qw_linear *l = (qw_linear *)((char *)b + CLIPPED[i].field);
        st = clip_linear(f, p, l, si.x[CLIPPED[i].input], si.n_tokens, reporter, report, err);
    }
    sampled_free(&si);
    return st;
}
