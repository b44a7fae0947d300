/*
 * int4.h — W4A16 integer weights as compressed-tensors defines them (the AWQ backend's output):
 * per (output row, group of `group_size` consecutive input columns) a scale and, when
 * asymmetric, a zero point; codes in [-8, 7]. The arithmetic is done in the model's dtype the
 * way torch does it (each operation's f32 result rounded to bf16/f16), so codes, scales and zero
 * points are the ones compressed-tensors computes from the same weights.
 *
 *   asymmetric: lo = min(min(w), 0), hi = max(max(w), 0)
 *               scale = (hi - lo) / 15;  zp = round(clamp(-8 - lo / scale, -8, 7))
 *   symmetric:  scale = max(|lo|, |hi|) / 7.5;  zp = 0
 *   a scale of 0 becomes the dtype's epsilon;  q = round(clamp(w / scale + zp, -8, 7))
 *   dequantized: (q - zp) * scale           (round = half to even, as torch.round)
 *
 * "pack-quantized" storage: 8 codes per int32 along the row, code + 8 in nibble i for column
 * 8j + i (first column in the low nibble); zero points packed the same way down the rows.
 */
#ifndef QW_INT4_H
#define QW_INT4_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "half.h"
#include "quant.h"

typedef struct qw_int4_scheme {
    int64_t group_size;
    bool symmetric;
    qw_qtype dtype; /* QW_QTYPE_F32, F16 or BF16: the weights' and scales' type */
} qw_int4_scheme;

/* The scheme is usable for rows of n_in values: a float dtype, group size > 0 dividing n_in. */
qw_status qw_int4_check(const qw_int4_scheme *s, int64_t n_in, const char *tensor,
                        qw_error *err);

/* x rounded to the scheme's dtype (the weights must hold dtype values before quantizing).
 * Inline: the search calls it several times per weight per candidate. */
static inline float qw_int4_round_dtype(const qw_int4_scheme *s, float x) {
    if (s->dtype == QW_QTYPE_BF16) return qw_bf16_to_fp32(qw_fp32_to_bf16(x));
    if (s->dtype == QW_QTYPE_F16) return qw_fp16_to_fp32(qw_fp32_to_fp16(x));
    return x;
}

/* One row of n values (n a multiple of the group size): codes[n], scales[n / group],
 * zero_points[n / group] (all 0 when symmetric). */
void qw_int4_quantize_row(const qw_int4_scheme *s, const float *w, int64_t n, int8_t *codes,
                          float *scales, int8_t *zero_points);
void qw_int4_dequantize_row(const qw_int4_scheme *s, const int8_t *codes, const float *scales,
                            const int8_t *zero_points, int64_t n, float *out);
/* w := dequantize(quantize(w)), with scratch for nothing: AWQ's search evaluates this. */
void qw_int4_fake_quantize_row(const qw_int4_scheme *s, float *w, int64_t n);
/* w := fake_quantize(dtype(w0 · scale)) / scale, column by column: AWQ's candidate weights. */
void qw_int4_fake_quantize_scaled_row(const qw_int4_scheme *s, const float *w0,
                                      const float *scale, int64_t n, float *w);

/* words[(n + 7) / 8] from codes[n] (a short last word is zero-padded). */
void qw_int4_pack_row(const int8_t *codes, int64_t n, int32_t *words);
void qw_int4_unpack_row(const int32_t *words, int64_t n, int8_t *codes);
/* zero_points [n_rows][n_groups] -> words [(n_rows + 7) / 8][n_groups], packed down the rows */
void qw_int4_pack_columns(const int8_t *zero_points, int64_t n_rows, int64_t n_groups,
                          int32_t *words);

#endif /* QW_INT4_H */
