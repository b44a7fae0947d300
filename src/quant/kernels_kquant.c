/* Reference kernels for the k-quants (256-element super-blocks): decoding for q2_K ... q8_K,
 * encoding for q2_K ... q6_K, and the sub-block fitting helpers that the legacy encoders with
 * importance (kernels_basic.c) share.
 *
 * Everything here is bit exact with ggml: each decoded float is produced by the same fp32
 * operations in the same order (d * sc first, then * q, then - m), because a reordered product
 * can differ in the last bit, and tests compare against llama.cpp's own library with exact
 * equality. For the same reason the encoders keep ggml's fp32 accumulation order and its
 * round-half-even helper (qw_nearest_int), and reproduce its integer conversions (an int stored
 * into a byte wraps) even where they look accidental.
 *
 * The compiler must not contract a*b+c into one FMA (a single rounding instead of two): ggml's
 * reference build does not, and on an FMA-capable target (QW_NATIVE) a contracted kernel gives
 * different bytes. GCC leaves contraction off in ISO mode (-std=c11, as configured); Clang
 * contracts within an expression by default, hence the pragma. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "kernels.h"
#include "quant.h"

/* Below this a sub-block's largest magnitude counts as zero (ggml's GROUP_MAX_EPS). */
#define GROUP_MAX_EPS 1e-15f

/* ---- q2_K ----------------------------------------------------------------------------------- */

void qw_dequantize_row_q2_K(const void *src, float *dst, int64_t n) {
    const qw_block_q2_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        const float dmin = qw_fp16_to_fp32(x[b].dmin);
        float *y = dst + b * QW_QK_K;
        /* Element e = 128c + 32k + 16h + l: byte 32c + 16h + l, bits 2k, scale 8c + 2k + h. */
        for (int e = 0; e < QW_QK_K; e++) {
            const int c = e / 128, k = (e / 32) % 4, h = (e / 16) % 2, l = e % 16;
            const uint8_t sc = x[b].scales[8 * c + 2 * k + h];
            const float dl = d * (float)(sc & 0xf);
            const float ml = dmin * (float)(sc >> 4);
            const int q = (x[b].qs[32 * c + 16 * h + l] >> (2 * k)) & 3;
            y[e] = dl * (float)q - ml;
        }
    }
}

/* ---- q3_K ----------------------------------------------------------------------------------- */

/* The signed 6-bit scale of sub-block j (0..15), already offset by -32. */
static int q3_K_scale(const uint8_t scales[12], int j) {
    const int low = j < 8 ? scales[j] & 0xf : scales[j - 8] >> 4;
    const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | (high << 4)) - 32;
}

void qw_dequantize_row_q3_K(const void *src, float *dst, int64_t n) {
    const qw_block_q3_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float dl = d * (float)q3_K_scale(x[b].scales, j);
            for (int l = 0; l < 16; l++) {
                /* Element e = 128c + 32k + 16h + l' shares the q2_K bit layout; its high bit
                 * lives in hmask[e % 32] at bit e / 32. */
                const int e = 16 * j + l;
                const int c = e / 128, k = (e / 32) % 4, h = (e / 16) % 2;
                const int low = (x[b].qs[32 * c + 16 * h + l] >> (2 * k)) & 3;
                const int hbit = (x[b].hmask[e % 32] >> (e / 32)) & 1;
                y[e] = dl * (float)(low - (hbit ? 0 : 4));
            }
        }
    }
}

/* ---- q4_K and q5_K -------------------------------------------------------------------------- */

/* The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static void k4_scale_min(const uint8_t s[12], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void qw_dequantize_row_q4_K(const void *src, float *dst, int64_t n) {
    const qw_block_q4_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        const float dmin = qw_fp16_to_fp32(x[b].dmin);
        float *y = dst + b * QW_QK_K;
        for (int j = 0; j < QW_QK_K / 32; j++) {
            int sc, m;
            k4_scale_min(x[b].scales, j, &sc, &m);
            const float dl = d * (float)sc;
            const float ml = dmin * (float)m;
            /* Sub-block j is chunk j / 2 of 32 bytes, low nibbles for even j. */
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) y[32 * j + l] = dl * (float)((q[l] >> shift) & 0xf) - ml;
        }
    }
}

void qw_dequantize_row_q5_K(const void *src, float *dst, int64_t n) {
    const qw_block_q5_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        const float dmin = qw_fp16_to_fp32(x[b].dmin);
        float *y = dst + b * QW_QK_K;
        for (int j = 0; j < QW_QK_K / 32; j++) {
            int sc, m;
            k4_scale_min(x[b].scales, j, &sc, &m);
            const float dl = d * (float)sc;
            const float ml = dmin * (float)m;
            const uint8_t *ql = x[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                const int q = ((ql[l] >> shift) & 0xf) | (((x[b].qh[l] >> j) & 1) << 4);
                y[32 * j + l] = dl * (float)q - ml;
            }
        }
    }
}

/* ---- q6_K ----------------------------------------------------------------------------------- */

void qw_dequantize_row_q6_K(const void *src, float *dst, int64_t n) {
    const qw_block_q6_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int e = 0; e < QW_QK_K; e++) {
            /* e = 128h + 32k + l: k selects the ql byte (k % 2) and nibble (k / 2), and the
             * qh bit pair 2k. */
            const int h = e / 128, k = (e / 32) % 4, l = e % 32;
            const int low = (x[b].ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xf;
            const int high = (x[b].qh[32 * h + l] >> (2 * k)) & 3;
            const int q = (low | (high << 4)) - 32;
            y[e] = d * (float)x[b].scales[e / 16] * (float)q;
        }
    }
}

/* ==== fitting helpers (ggml's make_*_quants) =================================================
 *
 * Each helper re-derives one of ggml's sub-block fitting routines. The levels they pick hinge on
 * exact comparisons between fp32 sums, so every sum here is accumulated in fp32, in element
 * order, with each product associated as ggml writes it ((w * x) * l, not w * (x * l)); a
 * reassociated expression is a different rounding and, sooner or later, a different level.
 * Buffers are on the stack (n <= 32): these run once per sub-block, billions of times. */

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Largest sub-block any helper below is called with (q4_0/q5_0/q4_1/q5_1 blocks, k sub-blocks). */
#define FIT_MAX_N 32

float qw_fit_qx(int n, int nmax, const float *x, const float *w, int8_t *L) {
    float max = 0.0f, amax = 0.0f; /* max keeps the sign of the largest magnitude */
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    /* The weights, once: ggml re-evaluates x^2 per candidate, which is the same value. */
    float wt[FIT_MAX_N];
    for (int i = 0; i < n; i++) wt[i] = w ? w[i] : x[i] * x[i];

    float iscale = (float)(-nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clamp_int(qw_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        sumlx += wt[i] * x[i] * (float)l;
        suml2 += wt[i] * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    int8_t cand[FIT_MAX_N];
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        /* ggml's -(nmax + 0.1f*is) / max, in fp32 */
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(qw_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            cand[i] = (int8_t)(l + nmax);
            sumlx += wt[i] * x[i] * (float)l;
            suml2 += wt[i] * (float)l * (float)l;
        }
        /* Better when (sum w x l)^2 / (sum w l^2) grows, compared without dividing. */
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            memcpy(L, cand, (size_t)n);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_q3_quants(n, nmax, x, L, do_rmse = true), the q3_K reference fit: levels in
 * [-nmax, nmax - 1] from the largest magnitude, then up to 5 rounds of coordinate descent with
 * weights x^2, where each level is re-rounded against the sums of all the others and kept only if
 * the score (sum w x l)^2 / (sum w l^2) improves. L gets the levels + nmax; returns the scale. */
static float fit_q3(int n, int nmax, const float *x, int8_t *L) {
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float w[FIT_MAX_N];
    const float iscale = (float)(-nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clamp_int(qw_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        w[i] = x[i] * x[i];
        sumlx += w[i] * x[i] * (float)l;
        suml2 += w[i] * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * (float)L[i];
            if (slx > 0.0f) {
                float sl2 = suml2 - w[i] * (float)L[i] * (float)L[i];
                const int new_l = clamp_int(qw_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w[i] * x[i] * (float)new_l;
                    sl2 += w[i] * (float)new_l * (float)new_l;
                    if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ggml's make_qkx2_quants: fits x ~ scale * l - the_min with l in [0, nmax] (the_min >= 0),
 * minimising sum w * err^2 (or sum w * |err| when use_mad). Starts from the min-max grid, then
 * tries nstep + 1 inverse scales (rmin + rdelta * is + nmax) / (max - min), each followed by the
 * closed-form weighted least-squares scale and offset for those levels, keeping a candidate only
 * when its error is strictly lower. Note that `min` moves to the best offset found so far and
 * the later candidates' grids are laid out from it, as in ggml. */
static float fit_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L,
                      float *the_min, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_error = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(qw_nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    if (nstep < 1) { /* the min-max grid alone, as ggml (no caller here asks for it) */
        *the_min = -min;
        return scale;
    }
    uint8_t cand[FIT_MAX_N];
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(qw_nearest_int(iscale * (x[i] - min)), 0, nmax);
            cand[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) { /* the offset may only lower values: refit the scale alone */
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0.0f;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)cand[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, cand, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml's make_qkx3_quants with the arguments every one of its callers passes (rmin -0.9,
 * rdelta 0.05, 36 steps, squared error): make_qkx2 with a finer search, `max <= min` as the
 * degenerate test, and candidate levels computed as 0 for v <= 0 (or NaN) and from min(v, nmax)
 * otherwise, so that an offset that drifted up to max cannot feed nearest_int an infinity. */
float qw_fit_qkx3(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_error = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(qw_nearest_int(iscale * (x[i] - min)), 0, nmax);
        const float diff = scale * (float)L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    uint8_t cand[FIT_MAX_N];
    for (int is = 0; is <= 36; is++) {
        iscale = (-0.9f + 0.05f * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            const float v = iscale * (x[i] - min);
            const int l = v > 0.0f ? qw_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
            cand[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0.0f;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * (float)cand[i] + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, cand, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml's make_qp_quants: fits n non-negative values (the sub-block scales or mins of a k-quant
 * super-block) to levels in [0, nmax] times one scale, weighted by w (the sub-blocks' total
 * importance). Picks the best of nine inverse scales (nmax + 0.1 is) / max by weighted squared
 * error, then runs up to 5 rounds of coordinate descent on the score (sum w x l)^2 / sum w l^2.
 *
 * L is uint8_t as in ggml, and ggml stores nearest_int's result into it unclamped from below: a
 * negative input (a negative fitted scale, which the least-squares fits can produce) wraps to a
 * large byte, and the sums and comparisons then see that byte. Reproduced, not corrected. */
static float fit_qp(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0.0f;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)qw_nearest_int(iscale * x[i]);
    const float scale = 1.0f / iscale;
    float best_mse = 0.0f;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * (float)L[i];
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        const float scale_is = 1.0f / iscale_is;
        float mse = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = qw_nearest_int(iscale_is * x[i]);
            if (l > nmax) l = nmax;
            const float diff = x[i] - scale_is * (float)l;
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = qw_nearest_int(iscale * x[i]);
        if (l > nmax) l = nmax;
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * (float)l; /* the int, not the byte: as ggml */
        suml2 += w[i] * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * (float)L[i];
            float sl2 = suml2 - w[i] * (float)L[i] * (float)L[i];
            if (slx > 0.0f && sl2 > 0.0f) {
                int new_l = qw_nearest_int(x[i] * sl2 / slx);
                if (new_l > nmax) new_l = nmax;
                if (new_l != L[i]) {
                    slx += w[i] * x[i] * (float)new_l;
                    sl2 += w[i] * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* sigma^2 of a super-block as the k-quant importance paths use it: sum x^2 / 256, times
 * `twice` (2 for q3_K/q4_K/q5_K, 1 for q2_K: ggml's constants differ). */
static float superblock_sigma2(const float *x, float twice) {
    float sumx2 = 0.0f;
    for (int i = 0; i < QW_QK_K; i++) sumx2 += x[i] * x[i];
    return twice * sumx2 / QW_QK_K;
}

/* Packs the 2-bit levels of q2_K and q3_K: qs[32c + l] holds element 128c + 32k + l at bits 2k. */
static void pack_2bit(uint8_t qs[QW_QK_K / 4], const uint8_t *L) {
    for (int c = 0; c < QW_QK_K / 128; c++) {
        const uint8_t *q = L + 128 * c;
        for (int l = 0; l < 32; l++) {
            qs[32 * c + l] =
                (uint8_t)(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
        }
    }
}

/* ---- q2_K encoder --------------------------------------------------------------------------- */

/* Without importance this is ggml's quantize_row_q2_K_ref: weights |x|, make_qkx2 with mean
 * absolute error, and 4-bit scale and min codes relative to the largest of each (no clamp: the
 * largest maps to exactly 15). With importance it is quantize_row_q2_K_impl: weights
 * qw * sqrt(sigma^2 + x^2) with sigma^2 = sum x^2 / 256 (not 2x, unlike q3_K..q5_K), make_qkx3,
 * and the codes from make_qp_quants weighted by each sub-block's total weight. Either way the
 * levels are then recomputed against the fp16-rounded d and dmin that the decoder uses. */
void qw_quantize_row_q2_K(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q2_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        uint8_t L[QW_QK_K];
        float scales[QW_QK_K / 16], mins[QW_QK_K / 16], weight[16];
        if (!importance) {
            float max_scale = 0.0f, max_min = 0.0f; /* scales and mins are >= 0 */
            for (int j = 0; j < QW_QK_K / 16; j++) {
                for (int l = 0; l < 16; l++) weight[l] = fabsf(x[16 * j + l]);
                scales[j] = fit_qkx2(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f, 0.1f,
                                     15, true);
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            if (max_scale > 0.0f) {
                const float iscale = 15.0f / max_scale;
                for (int j = 0; j < QW_QK_K / 16; j++) {
                    y[b].scales[j] = (uint8_t)qw_nearest_int(iscale * scales[j]);
                }
                y[b].d = qw_fp32_to_fp16(max_scale / 15.0f);
            } else {
                memset(y[b].scales, 0, sizeof y[b].scales);
                y[b].d = qw_fp32_to_fp16(0.0f);
            }
            if (max_min > 0.0f) {
                const float iscale = 15.0f / max_min;
                for (int j = 0; j < QW_QK_K / 16; j++) {
                    const int l = qw_nearest_int(iscale * mins[j]);
                    y[b].scales[j] |= (uint8_t)((unsigned)l << 4);
                }
                y[b].dmin = qw_fp32_to_fp16(max_min / 15.0f);
            } else {
                y[b].dmin = qw_fp32_to_fp16(0.0f);
            }
        } else {
            const float *qw = importance + b * QW_QK_K;
            const float sigma2 = superblock_sigma2(x, 1.0f);
            float sw[QW_QK_K / 16];
            uint8_t Ls[QW_QK_K / 16], Lm[QW_QK_K / 16];
            for (int j = 0; j < QW_QK_K / 16; j++) {
                const float *xs = x + 16 * j;
                sw[j] = 0.0f;
                for (int l = 0; l < 16; l++) {
                    weight[l] = qw[16 * j + l] * sqrtf(sigma2 + xs[l] * xs[l]);
                    sw[j] += weight[l];
                }
                scales[j] = qw_fit_qkx3(16, 3, xs, weight, L + 16 * j, &mins[j]);
            }
            const float dm = fit_qp(QW_QK_K / 16, 15, scales, Ls, sw);
            const float mm = fit_qp(QW_QK_K / 16, 15, mins, Lm, sw);
            y[b].d = qw_fp32_to_fp16(dm);
            y[b].dmin = qw_fp32_to_fp16(mm);
            for (int j = 0; j < QW_QK_K / 16; j++) y[b].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        const float m_all = qw_fp16_to_fp32(y[b].dmin);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float d = d_all * (float)(y[b].scales[j] & 0xf);
            if (d == 0.0f) continue; /* keep the fit's levels */
            const float m = m_all * (float)(y[b].scales[j] >> 4);
            for (int i = 0; i < 16; i++) {
                L[16 * j + i] = (uint8_t)clamp_int(qw_nearest_int((x[16 * j + i] + m) / d), 0, 3);
            }
        }
        pack_2bit(y[b].qs, L);
    }
}

/* ---- q3_K encoder --------------------------------------------------------------------------- */

/* Stores the 6-bit code l (0..63) of sub-block j: low nibble in scales[j] (j < 8) or in the high
 * nibble of scales[j - 8]; the top two bits at bit 2 * (j / 4) of scales[8 + j % 4]. `scales`
 * starts zeroed; for j < 8 the low nibble is assigned, as in ggml. */
static void q3_K_put_scale(uint8_t scales[12], int j, int l) {
    if (j < 8) {
        scales[j] = (uint8_t)(l & 0xf);
    } else {
        scales[j - 8] |= (uint8_t)((l & 0xf) << 4);
    }
    scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
}

/* Without importance this is ggml's quantize_row_q3_K_ref (make_q3_quants per sub-block; the
 * sub-block with the largest |scale| gets code -32); with it, quantize_row_q3_K_impl: weights
 * qw * sqrt(sigma^2 + x^2), sigma^2 = 2 sum x^2 / 256, make_qx_quants for the levels and again,
 * weighted by the sub-blocks' total weights, for the 6-bit scale codes. */
void qw_quantize_row_q3_K(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q3_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        int8_t L[QW_QK_K];
        float scales[QW_QK_K / 16];
        memset(y[b].scales, 0, sizeof y[b].scales);
        if (!importance) {
            float max_scale = 0.0f, amax = 0.0f; /* max_scale keeps its sign */
            for (int j = 0; j < QW_QK_K / 16; j++) {
                scales[j] = fit_q3(16, 4, x + 16 * j, L + 16 * j);
                const float a = fabsf(scales[j]);
                if (a > amax) {
                    amax = a;
                    max_scale = scales[j];
                }
            }
            if (max_scale != 0.0f) {
                const float iscale = -32.0f / max_scale;
                for (int j = 0; j < QW_QK_K / 16; j++) {
                    /* ggml stores nearest_int's result in an int8_t before clamping; with
                     * |scales[j]| <= |max_scale| it is within [-32, 32] anyway. */
                    const int l = (int8_t)qw_nearest_int(iscale * scales[j]);
                    q3_K_put_scale(y[b].scales, j, clamp_int(l, -32, 31) + 32);
                }
                y[b].d = qw_fp32_to_fp16(1.0f / iscale);
            } else {
                y[b].d = qw_fp32_to_fp16(0.0f);
            }
        } else {
            const float *qw = importance + b * QW_QK_K;
            const float sigma2 = superblock_sigma2(x, 2.0f);
            float weight[16], sw[QW_QK_K / 16];
            int8_t Ls[QW_QK_K / 16];
            for (int j = 0; j < QW_QK_K / 16; j++) {
                const float *xs = x + 16 * j;
                float sumw = 0.0f;
                for (int l = 0; l < 16; l++) {
                    weight[l] = qw[16 * j + l] * sqrtf(sigma2 + xs[l] * xs[l]);
                    sumw += weight[l];
                }
                sw[j] = sumw;
                scales[j] = qw_fit_qx(16, 4, xs, weight, L + 16 * j);
            }
            const float d_block = qw_fit_qx(QW_QK_K / 16, 32, scales, sw, Ls);
            for (int j = 0; j < QW_QK_K / 16; j++) q3_K_put_scale(y[b].scales, j, Ls[j]);
            y[b].d = qw_fp32_to_fp16(d_block);
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float d = d_all * (float)q3_K_scale(y[b].scales, j);
            if (d == 0.0f) continue; /* keep the fit's levels */
            for (int i = 0; i < 16; i++) {
                L[16 * j + i] = (int8_t)(clamp_int(qw_nearest_int(x[16 * j + i] / d), -4, 3) + 4);
            }
        }
        /* Level 0..7: bit 2 goes to hmask[e % 32] at bit e / 32, the low two bits to qs. */
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        uint8_t low[QW_QK_K];
        for (int e = 0; e < QW_QK_K; e++) {
            if (L[e] > 3) y[b].hmask[e % 32] |= (uint8_t)(1 << (e / 32));
            low[e] = (uint8_t)(L[e] & 3);
        }
        pack_2bit(y[b].qs, low);
    }
}

/* ---- q4_K and q5_K encoders ----------------------------------------------------------------- */

/* Stores sub-block j's 6-bit scale and min codes (see k4_scale_min). Called for j = 0..7 in
 * order, so the bytes that j >= 4 ORs into were assigned by j < 4; codes above 63 (possible
 * from q4_K's importance path, see fit_qp) spill into neighbouring bits exactly as in ggml. */
static void k4_put_scale_min(uint8_t s[12], int j, uint8_t ls, uint8_t lm) {
    if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
    } else {
        s[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
        s[j - 4] |= (uint8_t)((ls >> 4) << 6);
        s[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* One q4_K (nmax 15) or q5_K (nmax 31) super-block: fills d, dmin, the 12 scale bytes and the
 * 256 levels (0..nmax) that the two formats then pack differently.
 *
 * Without importance: ggml's quantize_row_q{4,5}_K_ref. Per sub-block of 32, weights
 * sqrt(mean x^2) + |x| and make_qkx2 (q4_K: rmin -1, 20 steps; q5_K: rmin -0.5, 15 steps); the
 * codes are nearest_int(63 s / max s), stored in a byte and then clamped to 63.
 * With importance: quantize_row_q{4,5}_K_impl. Weights qw * sqrt(sigma^2 + x^2) with sigma^2 =
 * 2 sum x^2 / 256 over the super-block, make_qkx3, and codes from make_qp_quants weighted by each
 * sub-block's total weight; q5_K clamps those codes to 63, q4_K does not (see fit_qp). */
static void k45_encode(const float *x, const float *qw, int nmax, uint16_t *d_out,
                       uint16_t *dmin_out, uint8_t s[12], uint8_t L[QW_QK_K]) {
    float scales[QW_QK_K / 32], mins[QW_QK_K / 32], weights[32];
    if (!qw) {
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < QW_QK_K / 32; j++) {
            const float *xs = x + 32 * j;
            float sum_x2 = 0.0f;
            for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
            const float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xs[l]);
            scales[j] = nmax == 15
                            ? fit_qkx2(32, 15, xs, weights, L + 32 * j, &mins[j], -1.0f, 0.1f, 20,
                                       false)
                            : fit_qkx2(32, 31, xs, weights, L + 32 * j, &mins[j], -0.5f, 0.1f, 15,
                                       false);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
        const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
        for (int j = 0; j < QW_QK_K / 32; j++) {
            uint8_t ls = (uint8_t)qw_nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)qw_nearest_int(inv_min * mins[j]);
            ls = ls < 63 ? ls : 63;
            lm = lm < 63 ? lm : 63;
            k4_put_scale_min(s, j, ls, lm);
        }
        *d_out = qw_fp32_to_fp16(max_scale / 63.0f);
        *dmin_out = qw_fp32_to_fp16(max_min / 63.0f);
    } else {
        const float sigma2 = superblock_sigma2(x, 2.0f);
        float sw[QW_QK_K / 32];
        uint8_t Ls[QW_QK_K / 32], Lm[QW_QK_K / 32];
        for (int j = 0; j < QW_QK_K / 32; j++) {
            const float *xs = x + 32 * j;
            float sumw = 0.0f;
            for (int l = 0; l < 32; l++) {
                weights[l] = qw[32 * j + l] * sqrtf(sigma2 + xs[l] * xs[l]);
                sumw += weights[l];
            }
            sw[j] = sumw;
            scales[j] = qw_fit_qkx3(32, nmax, xs, weights, L + 32 * j, &mins[j]);
        }
        const float d_block = fit_qp(QW_QK_K / 32, 63, scales, Ls, sw);
        const float m_block = fit_qp(QW_QK_K / 32, 63, mins, Lm, sw);
        for (int j = 0; j < QW_QK_K / 32; j++) {
            uint8_t ls = Ls[j], lm = Lm[j];
            if (nmax == 31) {
                ls = ls < 63 ? ls : 63;
                lm = lm < 63 ? lm : 63;
            }
            k4_put_scale_min(s, j, ls, lm);
        }
        *d_out = qw_fp32_to_fp16(d_block);
        *dmin_out = qw_fp32_to_fp16(m_block);
    }
    const float d_all = qw_fp16_to_fp32(*d_out);
    const float m_all = qw_fp16_to_fp32(*dmin_out);
    for (int j = 0; j < QW_QK_K / 32; j++) {
        int sc, m;
        k4_scale_min(s, j, &sc, &m);
        const float d = d_all * (float)sc;
        if (d == 0.0f) continue; /* keep the fit's levels */
        const float dm = m_all * (float)m;
        for (int i = 0; i < 32; i++) {
            L[32 * j + i] = (uint8_t)clamp_int(qw_nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
        }
    }
}

void qw_quantize_row_q4_K(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q4_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        uint8_t L[QW_QK_K];
        k45_encode(src + b * QW_QK_K, importance ? importance + b * QW_QK_K : NULL, 15, &y[b].d,
                   &y[b].dmin, y[b].scales, L);
        for (int c = 0; c < QW_QK_K / 64; c++) {
            for (int l = 0; l < 32; l++) {
                y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
            }
        }
    }
}

void qw_quantize_row_q5_K(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q5_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        uint8_t L[QW_QK_K];
        k45_encode(src + b * QW_QK_K, importance ? importance + b * QW_QK_K : NULL, 31, &y[b].d,
                   &y[b].dmin, y[b].scales, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < QW_QK_K / 64; c++) {
            for (int l = 0; l < 32; l++) {
                const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                y[b].qs[32 * c + l] = (uint8_t)((lo & 0xf) | ((hi & 0xf) << 4));
                y[b].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
        }
    }
}

/* ---- q6_K encoder --------------------------------------------------------------------------- */

/* Without importance this is ggml's quantize_row_q6_K_ref; with it, quantize_row_q6_K_impl,
 * which uses the importance weights as they are (no sigma^2 + x^2 term, unlike q3_K/q4_K). */
void qw_quantize_row_q6_K(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q6_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        int8_t L[QW_QK_K];
        float scales[QW_QK_K / 16];
        float max_scale = 0.0f, max_abs_scale = 0.0f; /* max_scale keeps its sign */
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float *w = importance ? importance + b * QW_QK_K + 16 * j : NULL;
            scales[j] = qw_fit_qx(16, 32, x + 16 * j, w, L + 16 * j);
            const float abs_scale = fabsf(scales[j]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]); /* d = fp16 +0 as well */
            continue;
        }
        /* The sub-block with the largest |scale| gets -128 (so others fit in int8), and the
         * super-block scale d is stored as fp16; the quants are then recomputed against the
         * rounded d * sc that the decoder will actually use. */
        const float iscale = -128.0f / max_scale;
        y[b].d = qw_fp32_to_fp16(1.0f / iscale);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const int s = qw_nearest_int(iscale * scales[j]);
            y[b].scales[j] = (int8_t)(s < 127 ? s : 127);
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float d = d_all * (float)y[b].scales[j];
            if (d == 0.0f) continue; /* keep the levels from the fit */
            for (int i = 0; i < 16; i++) {
                const int l = clamp_int(qw_nearest_int(x[16 * j + i] / d), -32, 31);
                L[16 * j + i] = (int8_t)(l + 32);
            }
        }
        for (int h = 0; h < QW_QK_K / 128; h++) {
            const int8_t *q = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h;
            uint8_t *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((q[l] & 0xf) | ((q[l + 64] & 0xf) << 4));
                ql[l + 32] = (uint8_t)((q[l + 32] & 0xf) | ((q[l + 96] & 0xf) << 4));
                qh[l] = (uint8_t)((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                  ((q[l + 96] >> 4) << 6));
            }
        }
    }
}

/* ---- q8_K ----------------------------------------------------------------------------------- */

void qw_dequantize_row_q8_K(const void *src, float *dst, int64_t n) {
    const qw_block_q8_K *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = x[b].d;
        for (int j = 0; j < QW_QK_K; j++) dst[b * QW_QK_K + j] = d * (float)x[b].qs[j];
    }
}
