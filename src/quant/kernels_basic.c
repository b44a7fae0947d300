/* Reference kernels for float storage and the 32-element "legacy" blocks (q4_0 ... q8_1).
 * Rounding follows ggml exactly: q4_0/q4_1/q5_0/q5_1 truncate x/d + 0.5 (or + 8.5, + 16.5),
 * q8_0 uses roundf (half away from zero), and d is computed in fp32 but stored as fp16. With
 * importance weights, q4_0 ... q5_1 switch to ggml's weighted fits (round half to even), shared
 * with the k-quants (qw_fit_qx, qw_fit_qkx3 in kernels_kquant.c). As there, no FMA contraction:
 * the bytes must equal ggml's. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "kernels.h"

/* ---- floats --------------------------------------------------------------------------------- */

void qw_dequantize_row_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void qw_dequantize_row_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = qw_fp16_to_fp32(h);
    }
}

void qw_dequantize_row_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = qw_bf16_to_fp32(h);
    }
}

void qw_dequantize_row_f64(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        dst[i] = (float)v;
    }
}

void qw_quantize_row_f32(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void qw_quantize_row_f16(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = qw_fp32_to_fp16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

void qw_quantize_row_bf16(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = qw_fp32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* ---- 32-element blocks ---------------------------------------------------------------------- */

/* ggml's reference encoders truncate with C casts from float to a small integer type, e.g.
 * (int8_t)(x / d + 8.5f). For finite values in range that is plain truncation toward zero; for
 * an infinity or NaN (a sub-block whose d is so small that 1/d overflows, e.g. fp32 subnormal
 * inputs) C leaves it undefined, and x86-64, where llama-quantize and the oracle run, converts
 * through a 32-bit cvttss2si whose out-of-range answer is INT32_MIN, low byte 0. This reproduces
 * that, with defined behaviour on every target, and returns the low byte as an int8_t would
 * hold it (same bits for a uint8_t). */
static inline int trunc_low_byte(float v) {
    const int32_t i = v >= -2147483648.0f && v < 2147483648.0f ? (int32_t)v : INT32_MIN;
    const int b = (int)((uint32_t)i & 0xffu);
    return b < 128 ? b : b - 256;
}

/* sigma^2 of a whole row, as the legacy types' importance paths use it: sum x^2 / n over the
 * ROW (the k-quants use each 256-block instead). So with importance these encoders' bytes depend
 * on the whole row: n must be exactly one row, never several rows in one call. */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0.0f;
    for (int64_t i = 0; i < n; i++) sum_x2 += x[i] * x[i];
    return sum_x2 / (float)n;
}

/* Importance weights of one 32-element block, qw * sqrt(sigma^2 + x^2) (ggml's legacy and
 * k-quant importance paths all weight this way; q6_K is the exception). */
static void block_weights(const float *x, const float *qw, float sigma2, float w[32]) {
    for (int j = 0; j < 32; j++) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* Packs 32 five-bit levels: low nibbles as q4_0, the fifth bits in qh (bit j: element j). */
static void pack_q5(const uint8_t L[32], uint8_t qh_bytes[4], uint8_t qs[16]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)((L[j] >> 4) & 1) << j;
        qh |= (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
    }
    /* little-endian, as GGUF files are (ggml memcpys its host-order uint32_t) */
    for (int k = 0; k < 4; k++) qh_bytes[k] = (uint8_t)(qh >> (8 * k));
}

/* Without importance: ggml's quantize_row_q4_0_ref (d = max / -8, levels truncated from
 * x/d + 8.5 and capped at 15). With importance: quantize_row_q4_0_impl, a different algorithm:
 * make_qx_quants(32, 8) with weights qw * sqrt(sigma^2 + x^2), storing its least-squares d as is
 * (the levels are not recomputed against the fp16 d). */
void qw_quantize_row_q4_0(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q4_0 *y = dst;
    if (importance) {
        const float sigma2 = row_sigma2(src, n);
        for (int64_t b = 0; b < n / QW_QK4_0; b++) {
            float w[32];
            int8_t L[32];
            block_weights(src + b * 32, importance + b * 32, sigma2, w);
            y[b].d = qw_fp32_to_fp16(qw_fit_qx(32, 8, src + b * 32, w, L));
            for (int j = 0; j < 16; j++) y[b].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        }
        return;
    }
    for (int64_t b = 0; b < n / QW_QK4_0; b++) {
        const float *x = src + b * QW_QK4_0;
        float amax = 0.0f, max = 0.0f; /* max keeps the sign of the largest magnitude */
        for (int j = 0; j < QW_QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = qw_fp32_to_fp16(d);
        for (int j = 0; j < QW_QK4_0 / 2; j++) {
            int q0 = trunc_low_byte(x[j] * id + 8.5f);
            int q1 = trunc_low_byte(x[j + QW_QK4_0 / 2] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[j] = (uint8_t)((unsigned)q0 | ((unsigned)q1 << 4));
        }
    }
}

/* Without importance: ggml's quantize_row_q4_1_ref, the min-max grid: d = (max - min) / 15,
 * m = min, levels truncated from (x - min)/d + 0.5 and capped at 15. With importance:
 * quantize_row_q4_1_impl, make_qkx3(32, 15) with weights qw * sqrt(sigma^2 + x^2). */
void qw_quantize_row_q4_1(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q4_1 *y = dst;
    if (importance) {
        const float sigma2 = row_sigma2(src, n);
        for (int64_t b = 0; b < n / 32; b++) {
            float w[32], the_min;
            uint8_t L[32];
            block_weights(src + b * 32, importance + b * 32, sigma2, w);
            const float d = qw_fit_qkx3(32, 15, src + b * 32, w, L, &the_min);
            y[b].d = qw_fp32_to_fp16(d);
            y[b].m = qw_fp32_to_fp16(-the_min);
            for (int j = 0; j < 16; j++) y[b].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        }
        return;
    }
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = qw_fp32_to_fp16(d);
        y[b].m = qw_fp32_to_fp16(min);
        for (int j = 0; j < 16; j++) {
            int q0 = trunc_low_byte((x[j] - min) * id + 0.5f);
            int q1 = trunc_low_byte((x[j + 16] - min) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[j] = (uint8_t)((unsigned)q0 | ((unsigned)q1 << 4));
        }
    }
}

/* Without importance: ggml's quantize_row_q5_0_ref (as q4_0 with d = max / -16, levels from
 * x/d + 16.5 capped at 31). With importance: quantize_row_q5_0_impl, make_qx_quants(32, 16). */
void qw_quantize_row_q5_0(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q5_0 *y = dst;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        uint8_t L[32];
        if (importance) {
            float w[32];
            int8_t Ls[32];
            block_weights(x, importance + b * 32, sigma2, w);
            y[b].d = qw_fp32_to_fp16(qw_fit_qx(32, 16, x, w, Ls));
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)Ls[j];
        } else {
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < 32; j++) {
                if (amax < fabsf(x[j])) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            }
            const float d = max / -16;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = qw_fp32_to_fp16(d);
            for (int j = 0; j < 32; j++) {
                const int q = trunc_low_byte(x[j] * id + 16.5f);
                L[j] = (uint8_t)(q < 31 ? q : 31);
            }
        }
        pack_q5(L, y[b].qh, y[b].qs);
    }
}

/* Without importance: ggml's quantize_row_q5_1_ref (the q4_1 grid with 31 steps; the level is
 * the truncation of (x - min)/d + 0.5 with no cap, which cannot exceed 31 for finite input).
 * With importance: quantize_row_q5_1_impl, make_qkx3(32, 31). */
void qw_quantize_row_q5_1(const float *src, void *dst, int64_t n, const float *importance) {
    qw_block_q5_1 *y = dst;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        uint8_t L[32];
        if (importance) {
            float w[32], the_min;
            block_weights(x, importance + b * 32, sigma2, w);
            const float d = qw_fit_qkx3(32, 31, x, w, L, &the_min);
            y[b].d = qw_fp32_to_fp16(d);
            y[b].m = qw_fp32_to_fp16(-the_min);
        } else {
            float min = FLT_MAX, max = -FLT_MAX;
            for (int j = 0; j < 32; j++) {
                if (x[j] < min) min = x[j];
                if (x[j] > max) max = x[j];
            }
            const float d = (max - min) / 31;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = qw_fp32_to_fp16(d);
            y[b].m = qw_fp32_to_fp16(min);
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)trunc_low_byte((x[j] - min) * id + 0.5f);
        }
        pack_q5(L, y[b].qh, y[b].qs);
    }
}

void qw_dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const qw_block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK4_0; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < 16; j++) {
            dst[b * 32 + j] = (float)((x[b].qs[j] & 0x0f) - 8) * d;
            dst[b * 32 + j + 16] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void qw_dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const qw_block_q4_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        const float m = qw_fp16_to_fp32(x[b].m);
        for (int j = 0; j < 16; j++) {
            dst[b * 32 + j] = (float)(x[b].qs[j] & 0x0f) * d + m;
            dst[b * 32 + j + 16] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

/* The fifth bits: element j's is bit j of qh, element j+16's is bit j+16. */
static void unpack_q5(const uint8_t qh_bytes[4], const uint8_t qs[16], int out[32]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, 4);
    for (int j = 0; j < 16; j++) {
        out[j] = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
        out[j + 16] = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
    }
}

void qw_dequantize_row_q5_0(const void *src, float *dst, int64_t n) {
    const qw_block_q5_0 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        int q[32];
        unpack_q5(x[b].qh, x[b].qs, q);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)(q[j] - 16) * d;
    }
}

void qw_dequantize_row_q5_1(const void *src, float *dst, int64_t n) {
    const qw_block_q5_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        const float m = qw_fp16_to_fp32(x[b].m);
        int q[32];
        unpack_q5(x[b].qh, x[b].qs, q);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)q[j] * d + m;
    }
}

void qw_quantize_row_q8_0(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    qw_block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QW_QK8_0; b++) {
        const float *x = src + b * QW_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QW_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = qw_fp32_to_fp16(d);
        /* roundf then x86's conversion: a block of fp32 subnormals makes id infinite, and a
         * plain (int8_t) cast of that is undefined */
        for (int j = 0; j < QW_QK8_0; j++) y[b].qs[j] = (int8_t)trunc_low_byte(roundf(x[j] * id));
    }
}

void qw_dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const qw_block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK8_0; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < QW_QK8_0; j++) dst[b * 32 + j] = (float)x[b].qs[j] * d;
    }
}

void qw_dequantize_row_q8_1(const void *src, float *dst, int64_t n) {
    const qw_block_q8_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)x[b].qs[j] * d;
    }
}
