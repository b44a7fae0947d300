/* Reference kernels for float storage and the 32-element "legacy" blocks (q4_0 ... q8_1).
 * Rounding follows ggml exactly: q4_0 truncates x/d + 8.5, q8_0 uses roundf (half away from
 * zero), and d is computed in fp32 but stored as fp16. */
#include <math.h>
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

void qw_quantize_row_q4_0(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    qw_block_q4_0 *y = dst;
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
            int q0 = (int8_t)(x[j] * id + 8.5f);
            int q1 = (int8_t)(x[j + QW_QK4_0 / 2] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
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
        for (int j = 0; j < QW_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
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
