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
QW_DECLARE_QUANTIZE(q4_1)
QW_DECLARE_QUANTIZE(q5_0)
QW_DECLARE_QUANTIZE(q5_1)
QW_DECLARE_QUANTIZE(q8_0)

/* k-quants */
QW_DECLARE_DEQUANTIZE(q2_K)
QW_DECLARE_DEQUANTIZE(q3_K)
QW_DECLARE_DEQUANTIZE(q4_K)
QW_DECLARE_DEQUANTIZE(q5_K)
QW_DECLARE_DEQUANTIZE(q6_K)
QW_DECLARE_DEQUANTIZE(q8_K)
QW_DECLARE_QUANTIZE(q2_K)
QW_DECLARE_QUANTIZE(q3_K)
QW_DECLARE_QUANTIZE(q4_K)
QW_DECLARE_QUANTIZE(q5_K)
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

/* Sub-block fitting shared by the encoders (kernels_kquant.c), bit exact with ggml's helpers of
 * the same purpose. n <= 32; pure functions of their arguments, thread-safe.
 *
 * qw_fit_qx: ggml's make_qx_quants with rmse_type 1. Levels l in [-nmax, nmax - 1], written to L
 * as l + nmax; weights w (NULL: x^2). Returns the weighted least-squares scale (x ~ scale * l),
 * 0 for a sub-block whose largest magnitude is below 1e-15.
 *
 * qw_fit_qkx3: ggml's make_qkx3_quants as all its callers use it (rmin -0.9, rdelta 0.05, 36
 * steps, squared error). Levels in [0, nmax] (x ~ scale * l - *the_min, *the_min >= 0); w must
 * not be NULL. Returns the scale. */
float qw_fit_qx(int n, int nmax, const float *x, const float *w, int8_t *L);
float qw_fit_qkx3(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min);

/* i-quants (kernels_iq.c). The iq3 encoders build their lattice neighbour maps on first use,
 * once per process (pthread_once); all kernels are thread-safe and allocate nothing. Bytes equal
 * ggml_quantize_chunk's, with and without importance. */
QW_DECLARE_QUANTIZE(iq4_nl)
QW_DECLARE_QUANTIZE(iq4_xs)
QW_DECLARE_QUANTIZE(iq3_xxs)
QW_DECLARE_QUANTIZE(iq3_s)
QW_DECLARE_DEQUANTIZE(iq2_xxs)
QW_DECLARE_DEQUANTIZE(iq2_xs)
QW_DECLARE_DEQUANTIZE(iq2_s)
QW_DECLARE_DEQUANTIZE(iq3_xxs)
QW_DECLARE_DEQUANTIZE(iq3_s)
QW_DECLARE_DEQUANTIZE(iq1_s)
QW_DECLARE_DEQUANTIZE(iq1_m)

/* For tests: builds (if needed) the neighbour map of the iq3 grid with grid_size points (256:
 * iq3_xxs, 512: iq3_s) and returns how many neighbour entries it holds, or -1 for another
 * size. Thread-safe. */
int qw_iq3_neighbour_total(int grid_size);

#undef QW_DECLARE_DEQUANTIZE
#undef QW_DECLARE_QUANTIZE

#endif /* QW_KERNELS_H */
