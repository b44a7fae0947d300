/* Reference kernels for ggml's i-quants: encoders for iq4_nl, iq4_xs, iq3_xxs and iq3_s;
 * decoders for iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs and iq3_s (iq4_nl/iq4_xs decode in
 * kernels_other.c). Block layouts are in blocks.h, grids in iq_grids.c.
 *
 * The encoders give the bytes of what llama.cpp's ggml_quantize_chunk runs (quantize_iq4_nl and
 * quantize_iq4_xs with 7 extra tries on each side of the initial scale, quantize_iq3_xxs,
 * quantize_iq3_s), not of the single-pass quantize_row_*_ref. They are searches: each compares
 * fp32 sums, and the last bit of a sum decides which candidate wins, so every sum keeps ggml's
 * operand order and every product its grouping. FP contraction must stay off (see
 * kernels_kquant.c). The decoders form each value with ggml's products, in ggml's order.
 *
 * ggml stops the process (GGML_ASSERT) on iq3 inputs so large that a weighted sum overflows fp32
 * (without importance the terms are w x q = x^3 q: |x| beyond about 3e12): no neighbour has a
 * finite distance, or the fitted scale is NaN. There is nothing to match there; these kernels
 * go on with a documented choice (iq3_best_neighbour) and never crash. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "iq_grids.h"
#include "kernels.h"
#include "quant.h"

/* Below this a sub-block's largest magnitude counts as zero (ggml's GROUP_MAX_EPS and
 * GROUP_MAX_EPS_IQ3_XXS; iq3_s tests for exact zero instead). */
#define GROUP_MAX_EPS 1e-15f
#define GROUP_MAX_EPS_IQ3_XXS 1e-8f

/* ggml's importance weighting, shared by every i-quant encoder: with an importance vector qw
 * (llama.cpp's imatrix row) the weight of x is qw * sqrt(sigma2 + x^2), sigma2 being twice the
 * mean square of the super-block; without one it is x^2. */
static void iq_weights(const float *x, const float *qw, float sigma2, int n, float *w) {
    if (qw) {
        for (int i = 0; i < n; i++) w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
    } else {
        for (int i = 0; i < n; i++) w[i] = x[i] * x[i];
    }
}

/* ==== iq4_nl / iq4_xs ======================================================================== */

/* Index of the iq4_nl level nearest to x. x picks level j over level j - 1 unless it is strictly
 * nearer to j - 1, so a tie goes up; beyond the ends it clamps. The predicate is monotone in j
 * (both differences are exact near each midpoint), so four halving steps find the largest j
 * for which it holds. A NaN selects the top level, as ggml's search does. */
static int iq4_nearest(float x) {
    if (isnan(x)) return 15;
    const int8_t *v = qw_iq4nl_values;
    int idx = 0;
    for (int step = 8; step > 0; step /= 2) {
        const int j = idx + step;
        if (x - (float)v[j - 1] >= (float)v[j] - x) idx = j;
    }
    return idx;
}

/* The scale of one sub-block of 32 under ggml's search: start from the scale that puts the
 * signed extreme on the top level, refine it by least squares over the resulting levels, then
 * try the 15 inverse scales (t - 127) / max, t = -7..7 (the extreme on the bottom levels), and
 * keep whichever maximises (sum w q x)^2 / (sum w q^2). Returns 0 for a sub-block below
 * GROUP_MAX_EPS. The levels themselves are recomputed by the caller from the final scale. */
static float iq4_fit(const float *x, const float *w) {
    const int8_t *v = qw_iq4nl_values;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax < GROUP_MAX_EPS) return 0.0f;

    float d = -max / (float)v[0];
    float id = 1.0f / d;
    float sumqx = 0.0f, sumq2 = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float q = (float)v[iq4_nearest(id * x[j])];
        sumqx += w[j] * q * x[j];
        sumq2 += w[j] * q * q;
    }
    d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
    float best = d * sumqx;
    for (int t = -7; t <= 7; t++) {
        id = (float)(t + v[0]) / max;
        sumqx = sumq2 = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float q = (float)v[iq4_nearest(id * x[j])];
            sumqx += w[j] * q * x[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* 32 elements into 16 bytes: element j in the low nibble of byte j, element j + 16 in the high
 * nibble, each the level nearest to x * id. */
static void iq4_pack(const float *x, float id, uint8_t *qs) {
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)(iq4_nearest(id * x[j]) | iq4_nearest(id * x[j + 16]) << 4);
    }
}

void qw_quantize_row_iq4_nl(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_iq4_nl *y = dst;
    for (int64_t b = 0; b < n / QW_QK4_NL; b++) {
        const float *x = src + b * QW_QK4_NL;
        float sigma2 = 0.0f;
        for (int j = 0; j < QW_QK4_NL; j++) sigma2 += x[j] * x[j];
        sigma2 *= 2.0f / QW_QK4_NL;
        float w[QW_QK4_NL];
        iq_weights(x, importance ? importance + b * QW_QK4_NL : NULL, sigma2, QW_QK4_NL, w);
        const float d = iq4_fit(x, w);
        /* The levels come from the fp32 scale, not from the fp16 value stored. */
        y[b].d = qw_fp32_to_fp16(d);
        iq4_pack(x, d != 0.0f ? 1.0f / d : 0.0f, y[b].qs);
    }
}

void qw_quantize_row_iq4_xs(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_iq4_xs *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        float sigma2 = 0.0f;
        for (int j = 0; j < QW_QK_K; j++) sigma2 += x[j] * x[j];
        sigma2 *= 2.0f / QW_QK_K;

        float scales[QW_QK_K / 32];
        float max_scale = 0.0f, amax_scale = 0.0f; /* max_scale keeps its sign */
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            float w[32];
            iq_weights(x + 32 * ib, importance ? importance + b * QW_QK_K + 32 * ib : NULL, sigma2,
                       32, w);
            scales[ib] = iq4_fit(x + 32 * ib, w);
            if (fabsf(scales[ib]) > amax_scale) {
                amax_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        /* The sub-block with the largest |scale| gets -32; an all-zero block stores d = -0
         * (fp16 0x8000), as ggml does. Levels are recomputed against each fp32 d * ls. */
        const float d = -max_scale / 32;
        y[b].d = qw_fp32_to_fp16(d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            int ls = qw_nearest_int(id * scales[ib]);
            ls = ls < -32 ? -32 : ls > 31 ? 31 : ls;
            const float dl = d * (float)ls;
            iq4_pack(x + 32 * ib, dl != 0.0f ? 1.0f / dl : 0.0f, y[b].qs + 16 * ib);
            ls += 32;
            y[b].scales_l[ib / 2] |= (uint8_t)((ls & 0xf) << (4 * (ib % 2)));
            scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
        }
        y[b].scales_h = scales_h;
    }
}

/* ==== iq3 lattices =========================================================================== */

/* An iq3 group is 4 elements, each on a level l = 0..7 (value 2l + 1 times the scale); its 12-bit
 * code holds the level of element i at bits 3i. Only 256 (iq3_xxs) or 512 (iq3_s) codes are
 * grid points. The encoders round each group to a code and, when it is off the grid, pick the
 * best of its neighbours: the grid points at the smallest, second (and for iq3_s third) smallest
 * squared distances in level-value space, all points at those distances, in order of distance,
 * then of index. That map is ggml's (iq3xs_init_impl), rebuilt here from the grids themselves
 * once per process. */

#define IQ3_CODES 4096
/* Neighbour entries the two grids need: 18985 (256 points, 2 distances) and 24733 (512 points, 3
 * distances); tests/unit/test_iq_quant.c checks those totals. */
#define IQ3_NEIGHBOUR_CAPACITY 24733

typedef struct {
    int n_grid;
    uint16_t code[QW_IQ3S_GRID_SIZE];     /* the code of each grid point */
    float value[QW_IQ3S_GRID_SIZE][4];    /* 2l + 1 per element, as the fits use it */
    int16_t index[IQ3_CODES];             /* grid point of a code, -1 off the grid */
    uint16_t first[IQ3_CODES];            /* off-grid code: its neighbours are */
    uint8_t count[IQ3_CODES];             /*   neighbours[first .. first + count) */
    uint16_t neighbours[IQ3_NEIGHBOUR_CAPACITY];
    int total; /* neighbour entries in use */
} iq3_lattice;

static iq3_lattice iq3xxs_lattice, iq3s_lattice;
static pthread_once_t iq3xxs_once = PTHREAD_ONCE_INIT, iq3s_once = PTHREAD_ONCE_INIT;

/* Builds a lattice from a decoder grid whose bytes are 4 (2l + 1) (62 for l = 7) for iq3_xxs, or
 * 2l + 1 for iq3_s: l is byte / 8 or byte / 2. n_dist: how many distinct distances to keep. */
static void iq3_lattice_build(iq3_lattice *t, const uint32_t *grid, int n_grid, int level_shift,
                              int n_dist) {
    t->n_grid = n_grid;
    for (int c = 0; c < IQ3_CODES; c++) t->index[c] = -1;
    for (int g = 0; g < n_grid; g++) {
        int code = 0;
        for (int i = 0; i < 4; i++) {
            const int l = (int)((grid[g] >> (8 * i)) & 0xff) >> level_shift;
            code |= l << (3 * i);
            t->value[g][i] = (float)(2 * l + 1);
        }
        t->code[g] = (uint16_t)code;
        t->index[code] = (int16_t)g;
    }
    int total = 0;
    for (int c = 0; c < IQ3_CODES; c++) {
        t->first[c] = (uint16_t)total;
        t->count[c] = 0;
        if (t->index[c] >= 0) continue;
        int d2[QW_IQ3S_GRID_SIZE];
        int dist[3] = {0, 0, 0}, n_have = 0; /* the smallest distinct distances, ascending */
        for (int g = 0; g < n_grid; g++) {
            int s = 0;
            for (int i = 0; i < 4; i++) {
                const int diff = 2 * ((t->code[g] >> (3 * i)) & 7) - 2 * ((c >> (3 * i)) & 7);
                s += diff * diff;
            }
            d2[g] = s;
            int pos = n_have;
            while (pos > 0 && dist[pos - 1] > s) pos--;
            if (pos > 0 && dist[pos - 1] == s) continue;
            if (pos >= n_dist) continue;
            const int last = n_have < n_dist ? n_have : n_dist - 1; /* drop the largest if full */
            for (int k = last; k > pos; k--) dist[k] = dist[k - 1];
            dist[pos] = s;
            if (n_have < n_dist) n_have++;
        }
        int count = 0;
        for (int r = 0; r < n_have; r++) {
            for (int g = 0; g < n_grid; g++) {
                if (d2[g] != dist[r]) continue;
                /* Unreachable with ggml's grids (the capacity is their exact need); keeps a
                 * wrong grid from writing out of bounds. */
                if (total + count >= IQ3_NEIGHBOUR_CAPACITY || count == UINT8_MAX) continue;
                t->neighbours[total + count++] = (uint16_t)g;
            }
        }
        t->count[c] = (uint8_t)count;
        total += count;
    }
    t->total = total;
}

static void iq3xxs_init(void) {
    iq3_lattice_build(&iq3xxs_lattice, qw_iq3xxs_grid, QW_IQ3XXS_GRID_SIZE, 3, 2);
}

static void iq3s_init(void) {
    iq3_lattice_build(&iq3s_lattice, qw_iq3s_grid, QW_IQ3S_GRID_SIZE, 1, 3);
}

static const iq3_lattice *iq3_lattice_get(int grid_size) {
    if (grid_size == QW_IQ3XXS_GRID_SIZE) {
        pthread_once(&iq3xxs_once, iq3xxs_init);
        return &iq3xxs_lattice;
    }
    pthread_once(&iq3s_once, iq3s_init);
    return &iq3s_lattice;
}

int qw_iq3_neighbour_total(int grid_size) {
    if (grid_size != QW_IQ3XXS_GRID_SIZE && grid_size != QW_IQ3S_GRID_SIZE) return -1;
    return iq3_lattice_get(grid_size)->total;
}

/* The neighbour of off-grid `code` closest to the 4 magnitudes xv at `scale`, by
 * sum wsq * (scale * value - xv)^2 (wsq: square roots of the weights); the first one wins a tie.
 * If no distance is below FLT_MAX (an overflowed weight or scale), ggml aborts; here the first
 * neighbour, one of the nearest in level space, is taken. */
static int iq3_best_neighbour(const iq3_lattice *t, int code, const float *xv, const float *wsq,
                              float scale) {
    const uint16_t *nb = t->neighbours + t->first[code];
    float best_d2 = FLT_MAX;
    int best = t->count[code] ? nb[0] : 0;
    for (int k = 0; k < t->count[code]; k++) {
        const float *q = t->value[nb[k]];
        float d2 = 0.0f;
        for (int i = 0; i < 4; i++) {
            const float diff = scale * q[i] - xv[i];
            d2 += wsq[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            best = nb[k];
        }
    }
    return best;
}

/* Rounds the 4 magnitudes of a group at inverse scale id: levels to L[0..3]; returns the code. */
static int iq3_round_group(const float *xv, float id, int8_t *L) {
    int code = 0;
    for (int i = 0; i < 4; i++) {
        int l = qw_nearest_int(0.5f * (id * xv[i] - 1.0f));
        l = l < 0 ? 0 : l > 7 ? 7 : l;
        L[i] = (int8_t)l;
        code |= l << (3 * i);
    }
    return code;
}

static void iq3_set_levels(const iq3_lattice *t, int g, int8_t *L) {
    for (int i = 0; i < 4; i++) L[i] = (int8_t)((t->code[g] >> (3 * i)) & 7);
}

/* Weighted least-squares sums of 32 magnitudes against levels L (values 2l + 1). */
static void iq3_sums(const float *xv, const float *w, const int8_t *L, float *sumqx, float *sumq2) {
    float sx = 0.0f, s2 = 0.0f;
    for (int i = 0; i < 32; i++) {
        const float q = (float)(2 * L[i] + 1);
        sx += w[i] * xv[i] * q;
        s2 += w[i] * q * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* How the two iq3 encoders differ in their search (ggml's quantize_row_iq3_xxs_impl and
 * quantize_row_iq3_s_impl). */
typedef struct {
    int n_try;      /* inverse scales (15 + 0.2 is) / max for is = -n_try .. n_try */
    bool xxs;       /* iq3_xxs: groups count as on the grid until a fit says otherwise, and only
                     * off-grid groups are re-snapped at the end; iq3_s re-snaps all of them */
} iq3_search;

/* Fits a sub-block of 32 magnitudes xv (largest `max` > 0) to 8 grid points times a scale:
 * for each trial inverse scale, round every group to the nearest levels, snap off-grid groups
 * to their best neighbour, and keep the trial whose least-squares scale scores best. If any
 * kept group had to be snapped, snap again at the fitted scale and refit. Returns the scale
 * (negative only if the weights are) and the grid point of each group in g[8]. */
static float iq3_fit(const iq3_lattice *t, const iq3_search *p, const float *xv, const float *w,
                     const float *wsq, float max, int g[8]) {
    int8_t L[32], Laux[32];
    bool on_grid[8], on_grid_aux[8];
    memset(L, 0, sizeof L);
    for (int k = 0; k < 8; k++) on_grid[k] = p->xxs;
    float best = 0.0f, scale = max / 15;
    for (int is = -p->n_try; is <= p->n_try; is++) {
        const float id = (15.0f + (float)is * 0.2f) / max;
        const float this_scale = 1.0f / id;
        for (int k = 0; k < 8; k++) {
            const int code = iq3_round_group(xv + 4 * k, id, Laux + 4 * k);
            on_grid_aux[k] = t->index[code] >= 0;
            if (!on_grid_aux[k]) {
                const int gk = iq3_best_neighbour(t, code, xv + 4 * k, wsq + 4 * k, this_scale);
                iq3_set_levels(t, gk, Laux + 4 * k);
            }
        }
        float sumqx, sumq2;
        iq3_sums(xv, w, Laux, &sumqx, &sumq2);
        if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(L, Laux, sizeof L);
            memcpy(on_grid, on_grid_aux, sizeof on_grid);
        }
    }
    int n_off = 0;
    for (int k = 0; k < 8; k++) n_off += !on_grid[k];
    if (n_off > 0 && scale > 0.0f) {
        const float id = 1.0f / scale;
        for (int k = 0; k < 8; k++) {
            if (p->xxs && on_grid[k]) continue;
            const int code = iq3_round_group(xv + 4 * k, id, L + 4 * k);
            if (t->index[code] < 0) {
                const int gk = iq3_best_neighbour(t, code, xv + 4 * k, wsq + 4 * k, scale);
                iq3_set_levels(t, gk, L + 4 * k);
            }
        }
        float sumqx, sumq2;
        iq3_sums(xv, w, L, &sumqx, &sumq2);
        if (sumq2 > 0.0f) scale = sumqx / sumq2;
    }
    for (int k = 0; k < 8; k++) {
        int code = 0;
        for (int i = 0; i < 4; i++) code |= L[4 * k + i] << (3 * i);
        /* Every group is on the grid here (the all-zero code is a grid point of both grids). */
        g[k] = t->index[code] >= 0 ? t->index[code] : 0;
    }
    return scale;
}

/* Sum of squares of a super-block and ggml's sigma2 for the importance weights. */
static float iq3_sigma2(const float *x) {
    float sumx2 = 0.0f;
    for (int i = 0; i < QW_QK_K; i++) sumx2 += x[i] * x[i];
    return 2 * sumx2 / QW_QK_K;
}

/* The sub-block scale nibble: s with scale ~ d (2s + 1), d the fp32 super-block step. */
static uint8_t iq3_scale_nibble(float id, float scale) {
    int l = qw_nearest_int(0.5f * (id * scale - 1.0f));
    return (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
}

/* ---- iq3_xxs -------------------------------------------------------------------------------- */

void qw_quantize_row_iq3_xxs(const float *src, void *dst, int64_t n, const float *importance) {
    const iq3_lattice *t = iq3_lattice_get(QW_IQ3XXS_GRID_SIZE);
    static const iq3_search search = {.n_try = 15, .xxs = true};
    qw_block_iq3_xxs *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        memset(&y[b], 0, sizeof y[b]);
        const float sigma2 = iq3_sigma2(x);
        uint32_t signs_and_scale[QW_QK_K / 32] = {0};
        float scales[QW_QK_K / 32];
        float max_scale = 0.0f;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const float *xb = x + 32 * ib;
            float w[32], wsq[32], xv[32];
            iq_weights(xb, importance ? importance + b * QW_QK_K + 32 * ib : NULL, sigma2, 32, w);
            for (int i = 0; i < 32; i++) wsq[i] = sqrtf(w[i]);
            /* Only 7 signs per group of 8 are stored; the eighth makes the count of negatives
             * even. With an odd count, the element with the least w x^2 has its sign flipped
             * (its magnitude enters the fit negated). */
            uint8_t signs[4];
            for (int k = 0; k < 4; k++) {
                int n_neg = 0;
                unsigned s = 0;
                for (int i = 0; i < 8; i++) {
                    const float v = xb[8 * k + i];
                    if (v >= 0) {
                        xv[8 * k + i] = v;
                    } else {
                        xv[8 * k + i] = -v;
                        n_neg++;
                        s |= 1u << i;
                    }
                }
                if (n_neg % 2) {
                    int imin = 0;
                    float min = w[8 * k] * xb[8 * k] * xb[8 * k];
                    for (int i = 1; i < 8; i++) {
                        const float e = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                        if (e < min) {
                            min = e;
                            imin = i;
                        }
                    }
                    xv[8 * k + imin] = -xv[8 * k + imin];
                    s ^= 1u << imin;
                }
                signs[k] = (uint8_t)(s & 127);
            }
            float max = xv[0];
            for (int i = 1; i < 32; i++) max = max > xv[i] ? max : xv[i];
            if (max < GROUP_MAX_EPS_IQ3_XXS) {
                scales[ib] = 0.0f; /* grid bytes, signs and scale stay 0 */
                continue;
            }
            int g[8];
            float scale = iq3_fit(t, &search, xv, w, wsq, max, g);
            if (scale < 0.0f) { /* only with negative weights: keep the stored scale positive */
                scale = -scale;
                for (int k = 0; k < 4; k++) signs[k] = (uint8_t)(~signs[k] & 127);
            }
            for (int k = 0; k < 8; k++) y[b].qs[8 * ib + k] = (uint8_t)g[k];
            signs_and_scale[ib] = (uint32_t)signs[0] | (uint32_t)signs[1] << 7 |
                                  (uint32_t)signs[2] << 14 | (uint32_t)signs[3] << 21;
            scales[ib] = scale;
            max_scale = max_scale > scale ? max_scale : scale;
        }
        if (max_scale == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* ggml stores the super-block step slightly enlarged (1.0125) but picks the nibbles with
         * the plain one. */
        const float d = max_scale / 31;
        y[b].d = qw_fp32_to_fp16(d * 1.0125f);
        const float id = 1.0f / d;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const uint32_t v =
                signs_and_scale[ib] | (uint32_t)iq3_scale_nibble(id, scales[ib]) << 28;
            uint8_t *p = y[b].qs + QW_QK_K / 4 + 4 * ib;
            for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
        }
    }
}

/* ---- iq3_s ---------------------------------------------------------------------------------- */

void qw_quantize_row_iq3_s(const float *src, void *dst, int64_t n, const float *importance) {
    const iq3_lattice *t = iq3_lattice_get(QW_IQ3S_GRID_SIZE);
    static const iq3_search search = {.n_try = 9, .xxs = false};
    qw_block_iq3_s *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        memset(&y[b], 0, sizeof y[b]);
        const float sigma2 = iq3_sigma2(x);
        float scales[QW_QK_K / 32];
        float max_scale = 0.0f;
        /* ggml writes a sub-block's grid bytes and signs at a cursor that skips all-zero
         * sub-blocks: after one, the later sub-blocks' qs and signs land one slot early and
         * the last slots stay 0 (qh and the scales stay in place). Files from llama.cpp have
         * that layout, so it is reproduced: `slot` is that cursor. */
        int slot = 0;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const float *xb = x + 32 * ib;
            float w[32], wsq[32], xv[32];
            iq_weights(xb, importance ? importance + b * QW_QK_K + 32 * ib : NULL, sigma2, 32, w);
            for (int i = 0; i < 32; i++) wsq[i] = sqrtf(w[i]);
            uint8_t signs[4];
            for (int k = 0; k < 4; k++) {
                unsigned s = 0;
                for (int i = 0; i < 8; i++) {
                    const float v = xb[8 * k + i];
                    if (v >= 0) {
                        xv[8 * k + i] = v;
                    } else {
                        xv[8 * k + i] = -v;
                        s |= 1u << i;
                    }
                }
                signs[k] = (uint8_t)s;
            }
            float max = xv[0];
            for (int i = 1; i < 32; i++) max = max > xv[i] ? max : xv[i];
            if (max == 0.0f) {
                scales[ib] = 0.0f;
                continue;
            }
            int g[8];
            float scale = iq3_fit(t, &search, xv, w, wsq, max, g);
            if (scale < 0.0f) { /* only with negative weights */
                scale = -scale;
                for (int k = 0; k < 4; k++) signs[k] = (uint8_t)~signs[k];
            }
            for (int k = 0; k < 8; k++) {
                y[b].qs[8 * slot + k] = (uint8_t)(g[k] & 0xff);
                y[b].qh[ib] |= (uint8_t)((g[k] >> 8) << k);
            }
            memcpy(y[b].signs + 4 * slot, signs, 4);
            slot++;
            scales[ib] = scale;
            max_scale = max_scale > scale ? max_scale : scale;
        }
        if (max_scale == 0.0f) continue;
        /* As iq3_xxs, with a larger factor on the stored step (1.033). */
        const float d = max_scale / 31;
        y[b].d = qw_fp32_to_fp16(d * 1.033f);
        const float id = 1.0f / d;
        for (int ib = 0; ib < QW_QK_K / 32; ib += 2) {
            const uint8_t lo = iq3_scale_nibble(id, scales[ib]);
            const uint8_t hi = iq3_scale_nibble(id, scales[ib + 1]);
            y[b].scales[ib / 2] = (uint8_t)(lo | hi << 4);
        }
    }
}

/* ==== decoders =============================================================================== */

/* Byte j of a grid entry. */
static inline float grid_u8(uint64_t entry, int j) { return (float)(uint8_t)(entry >> (8 * j)); }
static inline float grid_i8(uint64_t entry, int j) {
    return (float)(int8_t)(uint8_t)(entry >> (8 * j));
}

/* 8 values db * grid byte, negated where bit j of `signs` is set. */
static void iq2_group(float *y, float db, uint64_t entry, unsigned signs) {
    for (int j = 0; j < 8; j++) y[j] = db * grid_u8(entry, j) * ((signs >> j) & 1 ? -1.0f : 1.0f);
}

void qw_dequantize_row_iq2_xxs(const void *src, float *dst, int64_t n) {
    const qw_block_iq2_xxs *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const uint16_t *q = x[b].qs + 4 * ib;
            const uint32_t idx = (uint32_t)q[0] | (uint32_t)q[1] << 16;
            const uint32_t aux = (uint32_t)q[2] | (uint32_t)q[3] << 16;
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++) {
                iq2_group(y, db, qw_iq2xxs_grid[(idx >> (8 * l)) & 0xff],
                          qw_iq2_signs[(aux >> (7 * l)) & 127]);
                y += 8;
            }
        }
    }
}

void qw_dequantize_row_iq2_xs(const void *src, float *dst, int64_t n) {
    const qw_block_iq2_xs *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const float db[2] = {d * (0.5f + (float)(x[b].scales[ib] & 0xf)) * 0.25f,
                                 d * (0.5f + (float)(x[b].scales[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++) {
                const uint16_t q = x[b].qs[4 * ib + l];
                iq2_group(y, db[l / 2], qw_iq2xs_grid[q & 511], qw_iq2_signs[q >> 9]);
                y += 8;
            }
        }
    }
}

void qw_dequantize_row_iq2_s(const void *src, float *dst, int64_t n) {
    const qw_block_iq2_s *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const float db[2] = {d * (0.5f + (float)(x[b].scales[ib] & 0xf)) * 0.25f,
                                 d * (0.5f + (float)(x[b].scales[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++) {
                const int g = x[b].qs[4 * ib + l] | ((x[b].qh[ib] >> (2 * l)) & 3) << 8;
                iq2_group(y, db[l / 2], qw_iq2s_grid[g], x[b].qs[QW_QK_K / 8 + 4 * ib + l]);
                y += 8;
            }
        }
    }
}

void qw_dequantize_row_iq3_xxs(const void *src, float *dst, int64_t n) {
    const qw_block_iq3_xxs *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const uint8_t *q = x[b].qs + 8 * ib;
            const uint8_t *p = x[b].qs + QW_QK_K / 4 + 4 * ib;
            const uint32_t aux = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                 (uint32_t)p[3] << 24;
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++) {
                const unsigned signs = qw_iq2_signs[(aux >> (7 * l)) & 127];
                const uint64_t pair = (uint64_t)qw_iq3xxs_grid[q[2 * l]] |
                                      (uint64_t)qw_iq3xxs_grid[q[2 * l + 1]] << 32;
                iq2_group(y, db, pair, signs);
                y += 8;
            }
        }
    }
}

void qw_dequantize_row_iq3_s(const void *src, float *dst, int64_t n) {
    const qw_block_iq3_s *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const int s = (x[b].scales[ib / 2] >> (4 * (ib % 2))) & 0xf;
            const float db = d * (float)(1 + 2 * s);
            for (int l = 0; l < 4; l++) {
                const int k = 2 * l; /* the two groups of 4 in this group of 8 */
                const int g0 = x[b].qs[8 * ib + k] | ((x[b].qh[ib] >> k) & 1) << 8;
                const int g1 = x[b].qs[8 * ib + k + 1] | ((x[b].qh[ib] >> (k + 1)) & 1) << 8;
                const uint64_t pair = (uint64_t)qw_iq3s_grid[g0] | (uint64_t)qw_iq3s_grid[g1] << 32;
                iq2_group(y, db, pair, x[b].signs[4 * ib + l]);
                y += 8;
            }
        }
    }
}

/* 8 values dl * (grid value + delta). */
static void iq1_group(float *y, float dl, uint64_t entry, float delta) {
    for (int j = 0; j < 8; j++) y[j] = dl * (grid_i8(entry, j) + delta);
}

void qw_dequantize_row_iq1_s(const void *src, float *dst, int64_t n) {
    const qw_block_iq1_s *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const unsigned qh = x[b].qh[ib];
            const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -QW_IQ1_DELTA : QW_IQ1_DELTA;
            for (int l = 0; l < 4; l++) {
                const unsigned g = x[b].qs[4 * ib + l] | ((qh >> (3 * l)) & 7) << 8;
                iq1_group(y, dl, qw_iq1s_grid[g], delta);
                y += 8;
            }
        }
    }
}

void qw_dequantize_row_iq1_m(const void *src, float *dst, int64_t n) {
    const qw_block_iq1_m *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        unsigned sc[4];
        for (int k = 0; k < 4; k++) {
            sc[k] = x[b].scales[2 * k] | (unsigned)x[b].scales[2 * k + 1] << 8;
        }
        const uint16_t d16 = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                        ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
        const float d = qw_fp16_to_fp32(d16);
        float *y = dst + b * QW_QK_K;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            const unsigned s = sc[ib / 2] >> (6 * (ib % 2));
            const float dl[2] = {d * (float)(2 * (s & 7) + 1), d * (float)(2 * ((s >> 3) & 7) + 1)};
            for (int l = 0; l < 4; l++) {
                /* the low nibble for even l, the high one for odd */
                const unsigned h = x[b].qh[2 * ib + l / 2] >> (4 * (l % 2));
                const unsigned g = x[b].qs[4 * ib + l] | (h & 7) << 8;
                const float delta = h & 8 ? -QW_IQ1_DELTA : QW_IQ1_DELTA;
                iq1_group(y, dl[l / 2], qw_iq1s_grid[g], delta);
                y += 8;
            }
        }
    }
}
