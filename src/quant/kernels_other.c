/* Reference decoders for the non-linear (iq4_nl, iq4_xs), ternary (tq1_0, tq2_0), 4-bit float
 * (mxfp4, nvfp4) and 1/2-bit (q1_0, q2_0) types.
 *
 * Bit exact with ggml: each output is the same single fp32 product (level * scale) that ggml
 * computes, with the scale built the same way, so tests can demand exact equality. */
#include <math.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "iq_grids.h"
#include "kernels.h"

/* E2M1 values doubled so they are integers; the block scales carry the compensating 1/2. The
 * ninth entry is -0, stored as 0: the decoded value is then +0, as in ggml. */
static const int8_t kvalues_e2m1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* ---- iq4_nl / iq4_xs ------------------------------------------------------------------------ */

void qw_dequantize_row_iq4_nl(const void *src, float *dst, int64_t n) {
    const qw_block_iq4_nl *x = src;
    for (int64_t b = 0; b < n / QW_QK4_NL; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK4_NL;
        for (int j = 0; j < QW_QK4_NL / 2; j++) {
            y[j] = d * (float)qw_iq4nl_values[x[b].qs[j] & 0xf];
            y[j + QW_QK4_NL / 2] = d * (float)qw_iq4nl_values[x[b].qs[j] >> 4];
        }
    }
}

void qw_dequantize_row_iq4_xs(const void *src, float *dst, int64_t n) {
    const qw_block_iq4_xs *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < QW_QK_K / 32; j++) {
            const int ls = ((x[b].scales_l[j / 2] >> (4 * (j % 2))) & 0xf) |
                           (((x[b].scales_h >> (2 * j)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            const uint8_t *qs = x[b].qs + 16 * j;
            float *y = dst + b * QW_QK_K + 32 * j;
            for (int l = 0; l < 16; l++) {
                y[l] = dl * (float)qw_iq4nl_values[qs[l] & 0xf];
                y[l + 16] = dl * (float)qw_iq4nl_values[qs[l] >> 4];
            }
        }
    }
}

/* ---- ternary -------------------------------------------------------------------------------- */

/* Trit k (0 = most significant) of a byte that stores trits as a base-3 fraction of 256:
 * multiplying by 3^k (mod 256) brings trit k to the top, and (q * 3) >> 8 reads it. */
static int trit(uint8_t byte, int k) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t q = (uint8_t)(byte * pow3[k]);
    return (q * 3) >> 8;
}

void qw_dequantize_row_tq1_0(const void *src, float *dst, int64_t n) {
    const qw_block_tq1_0 *x = src;
    enum { QS_BYTES = sizeof x->qs, WIDE = QS_BYTES - QS_BYTES % 32 };
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        /* qs in runs of 32 bytes, then one run of 16; within a run, trit k of every byte in
         * turn. Then trit k of each qh byte (4 per byte). */
        for (int j = 0; j < WIDE; j += 32) {
            for (int k = 0; k < 5; k++) {
                for (int m = 0; m < 32; m++) *y++ = (float)(trit(x[b].qs[j + m], k) - 1) * d;
            }
        }
        for (int j = WIDE; j < QS_BYTES; j += 16) {
            for (int k = 0; k < 5; k++) {
                for (int m = 0; m < 16; m++) *y++ = (float)(trit(x[b].qs[j + m], k) - 1) * d;
            }
        }
        for (int k = 0; k < 4; k++) {
            for (int j = 0; j < (int)sizeof x->qh; j++) *y++ = (float)(trit(x[b].qh[j], k) - 1) * d;
        }
    }
}

void qw_dequantize_row_tq2_0(const void *src, float *dst, int64_t n) {
    const qw_block_tq2_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        float *y = dst + b * QW_QK_K;
        for (int e = 0; e < QW_QK_K; e++) {
            const int c = e / 128, k = (e / 32) % 4, m = e % 32;
            const int q = (x[b].qs[32 * c + m] >> (2 * k)) & 3;
            y[e] = (float)(q - 1) * d;
        }
    }
}

/* ---- 4-bit floats --------------------------------------------------------------------------- */

/* Half the E8M0 value 2^(e - 127), i.e. 2^(e - 128), built from its bit pattern; e < 2 gives
 * an fp32 subnormal. e = 255 would be NaN in the OCP format; like ggml, it decodes as 2^127. */
static float e8m0_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    return qw_bits_f32(bits);
}

/* Half the unsigned E4M3 value (4 exponent bits, bias 7, 3 mantissa bits; bit 7 ignored).
 * 0x00 and 0x7f (E4M3's NaN) decode as 0. All results are exact in fp32. */
static float ue4m3_half(uint8_t v) {
    if (v == 0 || v == 0x7f) return 0.0f;
    const int exp = (v >> 3) & 0xf;
    const int man = v & 7;
    const float raw = exp == 0 ? ldexpf((float)man, -9) : ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return raw * 0.5f;
}

void qw_dequantize_row_mxfp4(const void *src, float *dst, int64_t n) {
    const qw_block_mxfp4 *x = src;
    for (int64_t b = 0; b < n / QW_QK_MXFP4; b++) {
        const float d = e8m0_half(x[b].e);
        float *y = dst + b * QW_QK_MXFP4;
        for (int j = 0; j < QW_QK_MXFP4 / 2; j++) {
            y[j] = (float)kvalues_e2m1x2[x[b].qs[j] & 0xf] * d;
            y[j + QW_QK_MXFP4 / 2] = (float)kvalues_e2m1x2[x[b].qs[j] >> 4] * d;
        }
    }
}

void qw_dequantize_row_nvfp4(const void *src, float *dst, int64_t n) {
    const qw_block_nvfp4 *x = src;
    enum { SUB = QW_QK_NVFP4_SUB };
    for (int64_t b = 0; b < n / QW_QK_NVFP4; b++) {
        for (int s = 0; s < QW_QK_NVFP4 / SUB; s++) {
            const float d = ue4m3_half(x[b].d[s]);
            const uint8_t *qs = x[b].qs + s * (SUB / 2);
            float *y = dst + b * QW_QK_NVFP4 + s * SUB;
            for (int j = 0; j < SUB / 2; j++) {
                y[j] = (float)kvalues_e2m1x2[qs[j] & 0xf] * d;
                y[j + SUB / 2] = (float)kvalues_e2m1x2[qs[j] >> 4] * d;
            }
        }
    }
}

/* ---- 1- and 2-bit --------------------------------------------------------------------------- */

void qw_dequantize_row_q1_0(const void *src, float *dst, int64_t n) {
    const qw_block_q1_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK1_0; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < QW_QK1_0; j++) {
            dst[b * QW_QK1_0 + j] = (x[b].qs[j / 8] >> (j % 8)) & 1 ? d : -d;
        }
    }
}

void qw_dequantize_row_q2_0(const void *src, float *dst, int64_t n) {
    const qw_block_q2_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK2_0; b++) {
        const float d = qw_fp16_to_fp32(x[b].d);
        for (int j = 0; j < QW_QK2_0; j++) {
            const int q = (x[b].qs[j / 4] >> (2 * (j % 4))) & 3;
            dst[b * QW_QK2_0 + j] = (float)(q - 1) * d;
        }
    }
}
