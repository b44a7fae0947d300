/* Reference kernels for the k-quants (256-element super-blocks): decoding for q2_K ... q8_K and
 * encoding for q6_K.
 *
 * Everything here is bit exact with ggml: each decoded float is produced by the same fp32
 * operations in the same order (d * sc first, then * q, then - m), because a reordered product
 * can differ in the last bit, and tests compare against llama.cpp's own library with exact
 * equality. For the same reason the q6_K encoder keeps ggml's fp32 accumulation order and its
 * round-half-even helper (qw_nearest_int).
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

/* Fits one sub-block of n values to integer levels in [-nmax, nmax - 1] times a scale, as ggml's
 * make_qx_quants with rmse_type 1: start from the levels that map the largest magnitude to
 * -nmax, then try 18 nearby inverse scales and keep the one with the best weighted least-squares
 * score (sum w x l)^2 / (sum w l^2). Weights are x^2, or `w` when given. Writes the levels
 * offset by +nmax into L and returns the scale (0 for an all-zero sub-block). */
static float qx_fit(int n, int nmax, const float *x, const float *w, int8_t *L) {
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
    float iscale = (float)(-nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = qw_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        const float wi = w ? w[i] : x[i] * x[i];
        sumlx += wi * x[i] * (float)l;
        suml2 += wi * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        /* (float)nmax + 0.1f * is, then negated: ggml's -(nmax + 0.1f*is) in fp32 */
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = qw_nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            const float wi = w ? w[i] : x[i] * x[i];
            sumlx += wi * x[i] * (float)l;
            suml2 += wi * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = qw_nearest_int(iscale * x[i]);
                l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
                L[i] = (int8_t)(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

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
            scales[j] = qx_fit(16, 32, x + 16 * j, w, L + 16 * j);
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
                int l = qw_nearest_int(x[16 * j + i] / d);
                l = l < -32 ? -32 : l > 31 ? 31 : l;
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
