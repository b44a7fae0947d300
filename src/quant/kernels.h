/*
 * kernels.h — reference (scalar) row kernels, one pair per type, referenced by the type table in
 * qtype.c. Block layouts are in blocks.h. Signatures match qw_quantize_fn / qw_dequantize_fn:
 * n is a multiple of the type's block size; `importance` may be NULL.
 */
#ifndef QW_KERNELS_H
#define QW_KERNELS_H

#include <stdint.h>

#define QW_DECLARE_DEQUANTIZE(t) void qw_dequantize_row_##t(const void *src, float *dst, int64_t n);
#define QW_DECLARE_QUANTIZE(t)                                                                     \
    void qw_quantize_row_##t(const float *src, void *dst, int64_t n, const float *importance);

/* float and integer storage */
QW_DECLARE_DEQUANTIZE(f32)
QW_DECLARE_DEQUANTIZE(f16)
QW_DECLARE_DEQUANTIZE(bf16)
QW_DECLARE_DEQUANTIZE(f64)
QW_DECLARE_QUANTIZE(f32)
QW_DECLARE_QUANTIZE(f16)
QW_DECLARE_QUANTIZE(bf16)

/* 32-element blocks */
QW_DECLARE_DEQUANTIZE(q4_0)
QW_DECLARE_DEQUANTIZE(q4_1)
QW_DECLARE_DEQUANTIZE(q5_0)
QW_DECLARE_DEQUANTIZE(q5_1)
QW_DECLARE_DEQUANTIZE(q8_0)
QW_DECLARE_DEQUANTIZE(q8_1)
QW_DECLARE_QUANTIZE(q4_0)
QW_DECLARE_QUANTIZE(q8_0)

/* k-quants */
QW_DECLARE_DEQUANTIZE(q2_K)
QW_DECLARE_DEQUANTIZE(q3_K)
QW_DECLARE_DEQUANTIZE(q4_K)
QW_DECLARE_DEQUANTIZE(q5_K)
QW_DECLARE_DEQUANTIZE(q6_K)
QW_DECLARE_DEQUANTIZE(q8_K)
QW_DECLARE_QUANTIZE(q6_K)

/* non-linear and small-float types */
QW_DECLARE_DEQUANTIZE(iq4_nl)
QW_DECLARE_DEQUANTIZE(iq4_xs)
QW_DECLARE_DEQUANTIZE(tq1_0)
QW_DECLARE_DEQUANTIZE(tq2_0)
QW_DECLARE_DEQUANTIZE(mxfp4)
QW_DECLARE_DEQUANTIZE(nvfp4)
QW_DECLARE_DEQUANTIZE(q1_0)
QW_DECLARE_DEQUANTIZE(q2_0)

#undef QW_DECLARE_DEQUANTIZE
#undef QW_DECLARE_QUANTIZE

#endif /* QW_KERNELS_H */
