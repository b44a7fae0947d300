/* x86 SIMD kernels (AVX2 + F16C) for the overlay described in simd.h: decoders for f16, bf16,
 * q8_0 and q4_0; encoders for f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K ... q6_K, iq4_nl and
 * iq4_xs (the importance paths of the quantized types stay with the reference).
 *
 * Each kernel gives exactly the reference kernel's bytes (encoders) or float bits (decoders):
 *
 * - Element-wise code (conversions, q8_0/q4_0 quantization, decoders) is vectorised across
 *   elements, with the scalar code's operations in its order: x * id + 8.5f stays a multiply
 *   then an add (no FMA: the target attributes below do not enable it, and the build passes
 *   -ffp-contract=off), roundf's half-away-from-zero is rebuilt from truncation, and ggml's
 *   nearest_int is the same magic-number bit trick.
 * - Reductions keep their sequential order. Maxima of magnitudes (q8_0, q4_0) are exact in any
 *   order, but "the first element with the largest magnitude" is found as the first index equal
 *   to that maximum (minimum). The sub-block fits (make_qx_quants for q6_K, make_q3_quants for
 *   q3_K, make_qkx2_quants for q2_K/q4_K/q5_K, the iq4 scale search), whose sums must run in
 *   element order, are vectorised across sub-blocks (or iq4_nl blocks) instead: eight side by
 *   side, one per lane, each lane running the reference's whole search; the scalar remainder
 *   (super-block scales) is the reference's code.
 * - Importance (imatrix) paths that are different algorithms call the reference kernel.
 * - Where the legacy encoders convert an out-of-range float to a byte (a block of fp32
 *   subnormals makes 1/d overflow to inf), the result is x86's: the low byte of cvttss2si's
 *   0x80000000 (the reference's trunc_low_byte). The SIMD kernels keep that low byte rather
 *   than saturating, so bf16 checkpoints with subnormal weights still give identical bytes.
 * - F16C conversions are exact, but they quiet signalling NaNs and keep NaN payloads where the
 *   reference (ggml's bit manipulation) does not; vectors holding an fp16 exponent of 31 or an
 *   fp32 NaN take the reference path, so even those inputs give the reference's bits.
 *
 * Compiled with per-function target attributes, so this file builds without -mavx2 and the
 * kernels are installed only when __builtin_cpu_supports says the CPU (and OS) can run them. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <string.h>

#include "simd.h"

/* The backend's test for corrupt weights, as it writes it: x - x is NaN exactly for NaN and
 * +-inf. */
static int64_t find_nonfinite_scalar(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (x[i] - x[i] != 0.0f) return i;
    }
    return -1;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <math.h>

#include "blocks.h"
#include "half.h"
#include "iq_grids.h"
#include "kernels.h"

#define QW_AVX2 __attribute__((target("avx2,f16c")))

/* ---- helpers -------------------------------------------------------------------------------- */

/* One fp16 -> fp32, as the reference (qw_fp16_to_fp32) for every input. */
QW_AVX2 static inline float h2f(uint16_t h) {
    if ((h & 0x7c00) == 0x7c00) return qw_fp16_to_fp32(h);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* One fp32 -> fp16 for a value that is not NaN (every non-NaN input rounds as the reference). */
QW_AVX2 static inline uint16_t f2h_not_nan(float f) {
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

QW_AVX2 static inline __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* Largest lane; exact in any order for values that are not NaN. */
QW_AVX2 static inline float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* ggml's nearest_int per lane: the same fp32 add and bit operations as qw_nearest_int, so the
 * result equals it for every input (not only where it rounds correctly). */
QW_AVX2 static inline __m256i nearest_int_ps(__m256 f) {
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

/* roundf (half away from zero) per lane, as a float. trunc(v) is exact, v - trunc(v) is exact,
 * and adding +-1 to an integer below 2^24 is exact. */
QW_AVX2 static inline __m256 roundf_ps(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign));
    return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

/* Four vectors of int32 (each in 0..255) -> 32 bytes, in element order. */
QW_AVX2 static inline __m256i pack_u32_to_u8_x4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packus_epi32(a, b); /* a0-3 b0-3 | a4-7 b4-7 */
    const __m256i cd = _mm256_packus_epi32(c, d);
    const __m256i abcd = _mm256_packus_epi16(ab, cd); /* a0-3 b0-3 c0-3 d0-3 | a4-7 ... */
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Two vectors of int32 (each in 0..255) -> 16 bytes, in element order. */
QW_AVX2 static inline __m128i pack_u32_to_u8(__m256i a, __m256i b) {
    __m256i ab = _mm256_packus_epi32(a, b); /* a0-3 b0-3 | a4-7 b4-7 as u16 */
    ab = _mm256_permute4x64_epi64(ab, 0xd8); /* a0-3 a4-7 | b0-3 b4-7 */
    return _mm_packus_epi16(_mm256_castsi256_si128(ab), _mm256_extracti128_si256(ab, 1));
}

/* In-place transpose of an 8x8 matrix of floats held as eight rows. */
QW_AVX2 static inline void transpose8_ps(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* ---- floats --------------------------------------------------------------------------------- */

QW_AVX2 static void dequantize_f16_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    const __m128i exp_mask = _mm_set1_epi16(0x7c00);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m128i h0 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));
        const __m128i h1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i + 16));
        const __m128i special =
            _mm_or_si128(_mm_cmpeq_epi16(_mm_and_si128(h0, exp_mask), exp_mask),
                         _mm_cmpeq_epi16(_mm_and_si128(h1, exp_mask), exp_mask));
        if (_mm_movemask_epi8(special)) { /* inf or NaN: the reference's bits */
            qw_dequantize_row_f16(p + 2 * i, dst + i, 16);
            continue;
        }
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h0));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(h1));
    }
    if (i < n) qw_dequantize_row_f16(p + 2 * i, dst + i, n - i);
}

QW_AVX2 static void dequantize_bf16_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m128i h0 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));
        const __m128i h1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i + 16));
        const __m256i w0 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h0), 16);
        const __m256i w1 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h1), 16);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), w0);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i + 8), w1);
    }
    if (i < n) qw_dequantize_row_bf16(p + 2 * i, dst + i, n - i);
}

QW_AVX2 static void quantize_f16_avx2(const float *src, void *dst, int64_t n,
                                      const float *importance) {
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) { /* NaN: ggml's 0x7e00 */
            qw_quantize_row_f16(src + i, p + 2 * i, 8, importance);
            continue;
        }
        _mm_storeu_si128((__m128i *)(void *)(p + 2 * i),
                         _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    if (i < n) qw_quantize_row_f16(src + i, p + 2 * i, n - i, importance);
}

/* bf16 = round to nearest even on the bits, NaNs quieted: the reference's integer arithmetic. */
QW_AVX2 static void quantize_bf16_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    uint8_t *p = dst;
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(src + i + 8 * k));
            const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
            const __m256i rounded = _mm256_srli_epi32(
                _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
            const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(64));
            r[k] = _mm256_blendv_epi8(rounded, quiet, nan);
        }
        __m256i packed = _mm256_packus_epi32(r[0], r[1]); /* 0-3 8-11 | 4-7 12-15 */
        packed = _mm256_permute4x64_epi64(packed, 0xd8);
        _mm256_storeu_si256((__m256i *)(void *)(p + 2 * i), packed);
    }
    if (i < n) qw_quantize_row_bf16(src + i, p + 2 * i, n - i, importance);
}

/* ---- q8_0 ----------------------------------------------------------------------------------- */

QW_AVX2 static void quantize_q8_0_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) { /* the imatrix path is another algorithm: the reference's */
        qw_quantize_row_q8_0(src, dst, n, importance);
        return;
    }
    qw_block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QW_QK8_0; b++) {
        const float *x = src + b * QW_QK8_0;
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                       _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
        const float amax = hmax_ps(m);
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f2h_not_nan(d);
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            q[k] = _mm256_and_si256(_mm256_cvttps_epi32(roundf_ps(_mm256_mul_ps(v[k], idv))),
                                    _mm256_set1_epi32(0xff));
        }
        _mm256_storeu_si256((__m256i *)(void *)y[b].qs, pack_u32_to_u8_x4(q[0], q[1], q[2], q[3]));
    }
}

QW_AVX2 static void dequantize_q8_0_avx2(const void *src, float *dst, int64_t n) {
    const qw_block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK8_0; b++) {
        const __m256 d = _mm256_set1_ps(h2f(x[b].d));
        for (int k = 0; k < 4; k++) {
            const __m128i q8 = _mm_loadl_epi64((const __m128i *)(const void *)(x[b].qs + 8 * k));
            const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
            _mm256_storeu_ps(dst + b * 32 + 8 * k, _mm256_mul_ps(q, d));
        }
    }
}

/* ---- q4_0 ----------------------------------------------------------------------------------- */

QW_AVX2 static void quantize_q4_0_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) { /* the imatrix path is another algorithm: the reference's */
        qw_quantize_row_q4_0(src, dst, n, importance);
        return;
    }
    qw_block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / QW_QK4_0; b++) {
        const float *x = src + b * QW_QK4_0;
        __m256 v[4], a[4];
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            a[k] = abs_ps(v[k]);
        }
        const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(a[0], a[1]),
                                                 _mm256_max_ps(a[2], a[3])));
        /* The reference keeps the first element whose magnitude is strictly larger than all
         * before it, i.e. the first one equal to the maximum; for an all-zero block, +0. */
        float max = 0.0f;
        if (amax != 0.0f) {
            const __m256 am = _mm256_set1_ps(amax);
            uint32_t hits = 0;
            for (int k = 0; k < 4; k++) {
                const __m256 eq = _mm256_cmp_ps(a[k], am, _CMP_EQ_OQ);
                hits |= (uint32_t)_mm256_movemask_ps(eq) << (8 * k);
            }
            max = x[__builtin_ctz(hits)];
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f2h_not_nan(d);
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t = _mm256_add_ps(_mm256_mul_ps(v[k], idv), _mm256_set1_ps(8.5f));
            /* (int8_t) of the truncated value, as compiled: its low byte, sign-extended */
            const __m256i q8 = _mm256_srai_epi32(_mm256_slli_epi32(_mm256_cvttps_epi32(t), 24), 24);
            q[k] = _mm256_min_epi32(q8, _mm256_set1_epi32(15));
        }
        /* byte j: element j in the low nibble, element j + 16 in the high one */
        const __m256i ff = _mm256_set1_epi32(0xff);
        const __m256i lo = _mm256_and_si256(_mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4)), ff);
        const __m256i hi = _mm256_and_si256(_mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4)), ff);
        _mm_storeu_si128((__m128i *)(void *)y[b].qs, pack_u32_to_u8(lo, hi));
    }
}

QW_AVX2 static void dequantize_q4_0_avx2(const void *src, float *dst, int64_t n) {
    const qw_block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QW_QK4_0; b++) {
        const __m256 d = _mm256_set1_ps(h2f(x[b].d));
        const __m128i qs = _mm_loadu_si128((const __m128i *)(const void *)x[b].qs);
        const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0x0f));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f));
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; k++) {
            const __m256i q =
                _mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[k]), _mm256_set1_epi32(8));
            _mm256_storeu_ps(dst + b * 32 + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

/* ---- q4_1, q5_0, q5_1 ----------------------------------------------------------------------- */

/* The reference's running minimum (maximum) starts at FLT_MAX (-FLT_MAX) and takes each element
 * strictly below (above) it, so it ends on the first element equal to the smallest (largest)
 * value. Only the sign of a zero can tell equal elements apart, and it reaches the output (the
 * fp16 m, or d = (max - min) / n as -0), so for a zero the first such element is looked up. */
QW_AVX2 static inline float first_equal(const float *x, const __m256 v[4], float value) {
    if (value != 0.0f) return value;
    uint32_t hits = 0;
    const __m256 vv = _mm256_set1_ps(value);
    for (int k = 0; k < 4; k++) {
        hits |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v[k], vv, _CMP_EQ_OQ)) << (8 * k);
    }
    return x[__builtin_ctz(hits)];
}

QW_AVX2 static inline void block_min_max(const float *x, __m256 v[4], float *min, float *max) {
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 mn = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
    const __m256 mx = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    *min = first_equal(x, v, -hmax_ps(_mm256_xor_ps(mn, _mm256_set1_ps(-0.0f))));
    *max = first_equal(x, v, hmax_ps(mx));
}

/* trunc_low_byte(v) of the reference per lane: (int32_t)v as x86 converts it (INT32_MIN when out
 * of range or NaN), then its low byte as a signed value. */
QW_AVX2 static inline __m256i trunc_low_byte_ps(__m256 v) {
    return _mm256_srai_epi32(_mm256_slli_epi32(_mm256_cvttps_epi32(v), 24), 24);
}

/* The reference's pack_q5 of 32 levels given as four int32 vectors (only their low bytes count):
 * nibbles as q4_0, and bit 4 of element j at bit j of qh. */
QW_AVX2 static inline void pack_q5_avx2(const __m256i q[4], uint8_t qh[4], uint8_t qs[16]) {
    const __m256i ff = _mm256_set1_epi32(0xff), f = _mm256_set1_epi32(0x0f);
    const __m256i bytes = pack_u32_to_u8_x4(_mm256_and_si256(q[0], ff), _mm256_and_si256(q[1], ff),
                                            _mm256_and_si256(q[2], ff), _mm256_and_si256(q[3], ff));
    const uint32_t bits = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 3));
    memcpy(qh, &bits, 4); /* little-endian, as the reference writes it */
    const __m256i lo = _mm256_or_si256(_mm256_and_si256(q[0], f),
                                       _mm256_slli_epi32(_mm256_and_si256(q[2], f), 4));
    const __m256i hi = _mm256_or_si256(_mm256_and_si256(q[1], f),
                                       _mm256_slli_epi32(_mm256_and_si256(q[3], f), 4));
    _mm_storeu_si128((__m128i *)(void *)qs, pack_u32_to_u8(lo, hi));
}

QW_AVX2 static void quantize_q4_1_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) {
        qw_quantize_row_q4_1(src, dst, n, importance);
        return;
    }
    qw_block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        __m256 v[4];
        float min, max;
        block_min_max(x, v, &min, &max);
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f2h_not_nan(d);
        y[b].m = f2h_not_nan(min);
        const __m256 minv = _mm256_set1_ps(min), idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], minv), idv),
                                           _mm256_set1_ps(0.5f));
            q[k] = _mm256_min_epi32(trunc_low_byte_ps(t), _mm256_set1_epi32(15));
        }
        const __m256i ff = _mm256_set1_epi32(0xff);
        const __m256i lo = _mm256_and_si256(_mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4)), ff);
        const __m256i hi = _mm256_and_si256(_mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4)), ff);
        _mm_storeu_si128((__m128i *)(void *)y[b].qs, pack_u32_to_u8(lo, hi));
    }
}

QW_AVX2 static void quantize_q5_0_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) {
        qw_quantize_row_q5_0(src, dst, n, importance);
        return;
    }
    qw_block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        __m256 v[4], a[4];
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            a[k] = abs_ps(v[k]);
        }
        const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(a[0], a[1]),
                                                 _mm256_max_ps(a[2], a[3])));
        float max = 0.0f; /* the first element of largest magnitude; +0 for an all-zero block */
        if (amax != 0.0f) {
            const __m256 am = _mm256_set1_ps(amax);
            uint32_t hits = 0;
            for (int k = 0; k < 4; k++) {
                const __m256 eq = _mm256_cmp_ps(a[k], am, _CMP_EQ_OQ);
                hits |= (uint32_t)_mm256_movemask_ps(eq) << (8 * k);
            }
            max = x[__builtin_ctz(hits)];
        }
        const float d = max / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f2h_not_nan(d);
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t = _mm256_add_ps(_mm256_mul_ps(v[k], idv), _mm256_set1_ps(16.5f));
            q[k] = _mm256_min_epi32(trunc_low_byte_ps(t), _mm256_set1_epi32(31));
        }
        pack_q5_avx2(q, y[b].qh, y[b].qs);
    }
}

QW_AVX2 static void quantize_q5_1_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) {
        qw_quantize_row_q5_1(src, dst, n, importance);
        return;
    }
    qw_block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        __m256 v[4];
        float min, max;
        block_min_max(x, v, &min, &max);
        const float d = (max - min) / 31;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f2h_not_nan(d);
        y[b].m = f2h_not_nan(min);
        const __m256 minv = _mm256_set1_ps(min), idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], minv), idv),
                                           _mm256_set1_ps(0.5f));
            q[k] = trunc_low_byte_ps(t);
        }
        pack_q5_avx2(q, y[b].qh, y[b].qs);
    }
}

/* ---- q6_K ----------------------------------------------------------------------------------- */

#define GROUP_MAX_EPS 1e-15f

/* The fit of eight 16-element sub-blocks side by side (lane s = sub-block s), as the reference's
 * qx_fit(16, 32, ...) runs it on each: x[i] lane s is element i of sub-block s. */
typedef struct {
    __m256 x[16], w[16], wx[16]; /* values, weights, weights * values */
} q6k_lanes;

/* Sums of w*x*l and w*l*l for the levels l = clamp(nearest_int(iscale * x), -32, 31), for two
 * inverse scales at once (independent chains, so the adds overlap); i runs in order.
 *
 * The levels are made as floats: (v + 1.5*2^23) - 1.5*2^23 rounds v half to even exactly as
 * nearest_int does whenever |v| < 2^22, and here |v| = |iscale * x| <= 33 because max is the
 * sub-block's largest magnitude. (Lanes of all-but-zero sub-blocks, where iscale may be
 * infinite, are discarded by the caller.) */
QW_AVX2 static inline __m256 q6k_level(__m256 is, __m256 x) {
    const __m256 magic = _mm256_set1_ps(12582912.f);
    const __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(is, x), magic), magic);
    return _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-32.0f)), _mm256_set1_ps(31.0f));
}

QW_AVX2 static inline void q6k_sums2(const q6k_lanes *v, __m256 is0, __m256 is1, __m256 out[4]) {
    __m256 slx0 = _mm256_setzero_ps(), sl20 = _mm256_setzero_ps();
    __m256 slx1 = _mm256_setzero_ps(), sl21 = _mm256_setzero_ps();
    for (int i = 0; i < 16; i++) {
        const __m256 l0 = q6k_level(is0, v->x[i]);
        const __m256 l1 = q6k_level(is1, v->x[i]);
        slx0 = _mm256_add_ps(slx0, _mm256_mul_ps(v->wx[i], l0));
        sl20 = _mm256_add_ps(sl20, _mm256_mul_ps(_mm256_mul_ps(v->w[i], l0), l0));
        slx1 = _mm256_add_ps(slx1, _mm256_mul_ps(v->wx[i], l1));
        sl21 = _mm256_add_ps(sl21, _mm256_mul_ps(_mm256_mul_ps(v->w[i], l1), l1));
    }
    out[0] = slx0;
    out[1] = sl20;
    out[2] = slx1;
    out[3] = sl21;
}

/* Fits sub-blocks 8g .. 8g+7 of a 256-block: writes their scales, and their levels (+32) into
 * L for the sub-blocks whose levels the encoder may keep. */
QW_AVX2 static void q6k_fit8(const float *x, const float *w, float scales[8], int8_t L[128]) {
    q6k_lanes v;
    for (int half = 0; half < 2; half++) {
        __m256 r[8];
        for (int s = 0; s < 8; s++) r[s] = _mm256_loadu_ps(x + 16 * s + 8 * half);
        transpose8_ps(r);
        for (int i = 0; i < 8; i++) v.x[8 * half + i] = r[i];
        if (w) {
            for (int s = 0; s < 8; s++) r[s] = _mm256_loadu_ps(w + 16 * s + 8 * half);
            transpose8_ps(r);
            for (int i = 0; i < 8; i++) v.w[8 * half + i] = r[i];
        }
    }
    __m256 amax = _mm256_setzero_ps(), max = _mm256_setzero_ps();
    for (int i = 0; i < 16; i++) {
        if (!w) v.w[i] = _mm256_mul_ps(v.x[i], v.x[i]);
        v.wx[i] = _mm256_mul_ps(v.w[i], v.x[i]);
        const __m256 ax = abs_ps(v.x[i]);
        const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, larger);
        max = _mm256_blendv_ps(max, v.x[i], larger);
    }

    /* 19 candidates: the initial -nmax/max, then -(nmax + 0.1 is)/max for is = -9..-1, 1..9. */
    __m256 iscale[20], sums[20][2];
    iscale[0] = _mm256_div_ps(_mm256_set1_ps((float)-32), max);
    for (int c = 1; c < 19; c++) {
        const int is = c <= 9 ? c - 10 : c - 9;
        const float num = -((float)32 + 0.1f * (float)is);
        iscale[c] = _mm256_div_ps(_mm256_set1_ps(num), max);
    }
    iscale[19] = iscale[0]; /* padding for the pairs */
    for (int c = 0; c < 20; c += 2) {
        __m256 out[4];
        q6k_sums2(&v, iscale[c], iscale[c + 1], out);
        sums[c][0] = out[0];
        sums[c][1] = out[1];
        sums[c + 1][0] = out[2];
        sums[c + 1][1] = out[3];
    }

    const __m256 zero = _mm256_setzero_ps();
    __m256 scale = _mm256_blendv_ps(zero, _mm256_div_ps(sums[0][0], sums[0][1]),
                                    _mm256_cmp_ps(sums[0][1], zero, _CMP_NEQ_UQ));
    __m256 best = _mm256_mul_ps(scale, sums[0][0]);
    __m256 best_iscale = iscale[0];
    for (int c = 1; c < 19; c++) {
        const __m256 slx = sums[c][0], sl2 = sums[c][1];
        const __m256 adopt =
            _mm256_and_ps(_mm256_cmp_ps(sl2, zero, _CMP_GT_OQ),
                          _mm256_cmp_ps(_mm256_mul_ps(slx, slx), _mm256_mul_ps(best, sl2),
                                        _CMP_GT_OQ));
        const __m256 new_scale = _mm256_div_ps(slx, sl2);
        scale = _mm256_blendv_ps(scale, new_scale, adopt);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(new_scale, slx), adopt);
        best_iscale = _mm256_blendv_ps(best_iscale, iscale[c], adopt);
    }
    /* An all-but-zero sub-block has scale +0 and levels 0 (the reference's early return). */
    const __m256 live = _mm256_cmp_ps(amax, _mm256_set1_ps(GROUP_MAX_EPS), _CMP_GE_OQ);
    scale = _mm256_and_ps(scale, live);
    _mm256_storeu_ps(scales, scale);

    float bis[8];
    _mm256_storeu_ps(bis, best_iscale);
    const int live_bits = _mm256_movemask_ps(live);
    for (int s = 0; s < 8; s++) {
        if (!(live_bits >> s & 1)) {
            memset(L + 16 * s, 0, 16);
            continue;
        }
        for (int i = 0; i < 16; i++) {
            int l = qw_nearest_int(bis[s] * x[16 * s + i]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            L[16 * s + i] = (int8_t)(l + 32);
        }
    }
}

QW_AVX2 static void quantize_q6_K_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    qw_block_q6_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        const float *w = importance ? importance + b * QW_QK_K : NULL;
        int8_t L[QW_QK_K];
        float scales[QW_QK_K / 16];
        for (int g = 0; g < 2; g++) {
            q6k_fit8(x + 128 * g, w ? w + 128 * g : NULL, scales + 8 * g, L + 128 * g);
        }
        float max_scale = 0.0f, max_abs_scale = 0.0f;
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float abs_scale = fabsf(scales[j]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        y[b].d = qw_fp32_to_fp16(1.0f / iscale);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const int s = qw_nearest_int(iscale * scales[j]);
            y[b].scales[j] = (int8_t)(s < 127 ? s : 127);
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        const __m256i lo = _mm256_set1_epi32(-32), hi = _mm256_set1_epi32(31);
        const __m256i off = _mm256_set1_epi32(32);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float d = d_all * (float)y[b].scales[j];
            if (d == 0.0f) continue; /* keep the levels from the fit */
            const __m256 dv = _mm256_set1_ps(d);
            __m256i q[2];
            for (int k = 0; k < 2; k++) {
                const __m256 t = _mm256_div_ps(_mm256_loadu_ps(x + 16 * j + 8 * k), dv);
                q[k] = _mm256_add_epi32(
                    _mm256_min_epi32(_mm256_max_epi32(nearest_int_ps(t), lo), hi), off);
            }
            _mm_storeu_si128((__m128i *)(void *)(L + 16 * j), pack_u32_to_u8(q[0], q[1]));
        }
        const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x03);
        for (int h = 0; h < QW_QK_K / 128; h++) {
            const int8_t *q = L + 128 * h;
            const __m256i q0 = _mm256_loadu_si256((const __m256i *)(const void *)(q));
            const __m256i q1 = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32));
            const __m256i q2 = _mm256_loadu_si256((const __m256i *)(const void *)(q + 64));
            const __m256i q3 = _mm256_loadu_si256((const __m256i *)(const void *)(q + 96));
            /* levels are 0..63: nibble shifts within 16-bit lanes never carry across bytes
             * once masked */
            const __m256i ql0 = _mm256_or_si256(_mm256_and_si256(q0, m4),
                                                _mm256_slli_epi16(_mm256_and_si256(q2, m4), 4));
            const __m256i ql1 = _mm256_or_si256(_mm256_and_si256(q1, m4),
                                                _mm256_slli_epi16(_mm256_and_si256(q3, m4), 4));
            const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(q0, 4), m2);
            const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(q1, 4), m2);
            const __m256i h2 = _mm256_and_si256(_mm256_srli_epi16(q2, 4), m2);
            const __m256i h3 = _mm256_and_si256(_mm256_srli_epi16(q3, 4), m2);
            const __m256i qh = _mm256_or_si256(
                _mm256_or_si256(h0, _mm256_slli_epi16(h1, 2)),
                _mm256_or_si256(_mm256_slli_epi16(h2, 4), _mm256_slli_epi16(h3, 6)));
            _mm256_storeu_si256((__m256i *)(void *)(y[b].ql + 64 * h), ql0);
            _mm256_storeu_si256((__m256i *)(void *)(y[b].ql + 64 * h + 32), ql1);
            _mm256_storeu_si256((__m256i *)(void *)(y[b].qh + 32 * h), qh);
        }
    }
}

/* ---- q3_K (no importance) ------------------------------------------------------------------- */

/* ggml's make_q3_quants(16, 4, x, L, do_rmse = true), as the reference's fit_q3 runs it, for
 * eight 16-element sub-blocks side by side (lane j = sub-block j, at x + 16 j): levels from the
 * largest magnitude, then up to 5 passes of coordinate descent in element order, each element
 * re-rounded against the leave-one-out sums and kept only if the score improves. A lane whose
 * pass changed nothing would change nothing in any later pass (its state is the same), so the
 * passes run until no lane changes (at most 5) and finished lanes simply stay put. Levels are
 * written to L (+4; all 0 for an all-but-zero sub-block); returns the scales in scale[]. */
QW_AVX2 static void q3k_fit8(const float *x, float scale[8], int8_t L[128]) {
    __m256 xt[16], w[16], wx[16], l[16];
    for (int half = 0; half < 2; half++) {
        __m256 r[8];
        for (int s = 0; s < 8; s++) r[s] = _mm256_loadu_ps(x + 16 * s + 8 * half);
        transpose8_ps(r);
        for (int i = 0; i < 8; i++) xt[8 * half + i] = r[i];
    }
    const __m256 zero = _mm256_setzero_ps();
    const __m256i lo = _mm256_set1_epi32(-4), hi = _mm256_set1_epi32(3);
    __m256 amax = zero, max = zero;
    for (int i = 0; i < 16; i++) {
        w[i] = _mm256_mul_ps(xt[i], xt[i]);
        wx[i] = _mm256_mul_ps(w[i], xt[i]);
        const __m256 ax = abs_ps(xt[i]);
        const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, larger);
        max = _mm256_blendv_ps(max, xt[i], larger);
    }
    const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(-4.0f), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < 16; i++) {
        l[i] = _mm256_cvtepi32_ps(_mm256_min_epi32(
            _mm256_max_epi32(nearest_int_ps(_mm256_mul_ps(iscale, xt[i])), lo), hi));
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(wx[i], l[i]));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], l[i]), l[i]));
    }
    for (int itry = 0; itry < 5; itry++) {
        __m256 changed = zero;
        for (int i = 0; i < 16; i++) {
            const __m256 slx = _mm256_sub_ps(sumlx, _mm256_mul_ps(wx[i], l[i]));
            const __m256 sl2 = _mm256_sub_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], l[i]), l[i]));
            const __m256 new_l = _mm256_cvtepi32_ps(_mm256_min_epi32(
                _mm256_max_epi32(nearest_int_ps(_mm256_div_ps(_mm256_mul_ps(xt[i], sl2), slx)), lo),
                hi));
            const __m256 slx2 = _mm256_add_ps(slx, _mm256_mul_ps(wx[i], new_l));
            const __m256 sl22 =
                _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w[i], new_l), new_l));
            const __m256 better = _mm256_cmp_ps(
                _mm256_mul_ps(_mm256_mul_ps(slx2, slx2), suml2),
                _mm256_mul_ps(_mm256_mul_ps(sumlx, sumlx), sl22), _CMP_GT_OQ);
            __m256 take = _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ),
                                        _mm256_cmp_ps(new_l, l[i], _CMP_NEQ_UQ));
            take = _mm256_and_ps(take,
                                 _mm256_and_ps(_mm256_cmp_ps(sl22, zero, _CMP_GT_OQ), better));
            l[i] = _mm256_blendv_ps(l[i], new_l, take);
            sumlx = _mm256_blendv_ps(sumlx, slx2, take);
            suml2 = _mm256_blendv_ps(suml2, sl22, take);
            changed = _mm256_or_ps(changed, take);
        }
        if (!_mm256_movemask_ps(changed)) break;
    }
    const __m256 live = _mm256_cmp_ps(amax, _mm256_set1_ps(GROUP_MAX_EPS), _CMP_GE_OQ);
    const __m256 sc = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx, suml2),
                                       _mm256_cmp_ps(suml2, zero, _CMP_GT_OQ));
    _mm256_storeu_ps(scale, _mm256_and_ps(sc, live));
    /* levels + 4 back in element order (all-but-zero sub-blocks: 0) */
    const __m256 four = _mm256_set1_ps(4.0f);
    for (int half = 0; half < 2; half++) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = _mm256_and_ps(_mm256_add_ps(l[8 * half + i], four), live);
        }
        transpose8_ps(r); /* r[s] = elements 8 half .. 8 half + 7 of sub-block s */
        for (int s = 0; s < 8; s++) {
            const __m256i q = _mm256_cvtps_epi32(r[s]);
            const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q),
                                                _mm256_extracti128_si256(q, 1));
            _mm_storel_epi64((__m128i *)(void *)(L + 16 * s + 8 * half), _mm_packs_epi16(q16, q16));
        }
    }
}

/* The reference's 6-bit code store for sub-block j (q3_K_put_scale); scales starts zeroed. */
static void q3k_put_scale(uint8_t scales[12], int j, int l) {
    if (j < 8) {
        scales[j] = (uint8_t)(l & 0xf);
    } else {
        scales[j - 8] |= (uint8_t)((l & 0xf) << 4);
    }
    scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
}

static int q3k_scale(const uint8_t scales[12], int j) {
    const int low = j < 8 ? scales[j] & 0xf : scales[j - 8] >> 4;
    const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | (high << 4)) - 32;
}

QW_AVX2 static void quantize_q3_K_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) {
        qw_quantize_row_q3_K(src, dst, n, importance);
        return;
    }
    qw_block_q3_K *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        int8_t L[QW_QK_K];
        float scales[QW_QK_K / 16];
        q3k_fit8(x, scales, L);
        q3k_fit8(x + 128, scales + 8, L + 128);
        memset(y[b].scales, 0, sizeof y[b].scales);
        float max_scale = 0.0f, amax = 0.0f;
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float a = fabsf(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        if (max_scale != 0.0f) {
            const float iscale = -32.0f / max_scale;
            for (int j = 0; j < QW_QK_K / 16; j++) {
                int l = (int8_t)qw_nearest_int(iscale * scales[j]);
                l = l < -32 ? -32 : l > 31 ? 31 : l;
                q3k_put_scale(y[b].scales, j, l + 32);
            }
            y[b].d = qw_fp32_to_fp16(1.0f / iscale);
        } else {
            y[b].d = qw_fp32_to_fp16(0.0f);
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        const __m256i lo = _mm256_set1_epi32(-4), hi = _mm256_set1_epi32(3);
        const __m256i four = _mm256_set1_epi32(4);
        for (int j = 0; j < QW_QK_K / 16; j++) {
            const float d = d_all * (float)q3k_scale(y[b].scales, j);
            if (d == 0.0f) continue; /* keep the fit's levels */
            const __m256 dv = _mm256_set1_ps(d);
            __m256i q[2];
            for (int k = 0; k < 2; k++) {
                const __m256 t = _mm256_div_ps(_mm256_loadu_ps(x + 16 * j + 8 * k), dv);
                q[k] = _mm256_add_epi32(
                    _mm256_min_epi32(_mm256_max_epi32(nearest_int_ps(t), lo), hi), four);
            }
            _mm_storeu_si128((__m128i *)(void *)(L + 16 * j), pack_u32_to_u8(q[0], q[1]));
        }
        /* level 0..7: bit 2 to hmask[e % 32] at bit e / 32, the low two bits packed as q2_K */
        const __m256i three = _mm256_set1_epi8(3);
        __m256i hmask = _mm256_setzero_si256();
        for (int k = 0; k < 8; k++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(L + 32 * k));
            /* bit 2 of each byte to bit k: levels are 0..7, so the 16-bit shifts stay in bytes
             * once masked */
            const __m256i h = _mm256_and_si256(_mm256_srli_epi16(v, 2), _mm256_set1_epi8(1));
            hmask = _mm256_or_si256(hmask, _mm256_slli_epi16(h, k));
        }
        _mm256_storeu_si256((__m256i *)(void *)y[b].hmask, hmask);
        for (int c = 0; c < 2; c++) {
            __m256i qs = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                const __m256i v =
                    _mm256_loadu_si256((const __m256i *)(const void *)(L + 128 * c + 32 * k));
                qs = _mm256_or_si256(qs, _mm256_slli_epi16(_mm256_and_si256(v, three), 2 * k));
            }
            _mm256_storeu_si256((__m256i *)(void *)(y[b].qs + 32 * c), qs);
        }
    }
}

/* ---- q2_K, q4_K and q5_K: make_qkx2_quants (no importance) ---------------------------------- */

/* ggml's make_qkx2_quants(n, nmax, x, w, ..., rmin, rdelta, nstep, use_mad), as the reference's
 * fit_qkx2 runs it, for eight n-element sub-blocks side by side (lane j = sub-block j): q4_K
 * and q5_K (n = 32, squared error) and q2_K (n = 16, absolute error). Each lane runs the whole
 * sequential search: its candidates depend on one another (an adopted candidate moves `min`, and
 * the next grid is laid out from it), so only the sub-blocks are independent. Every sum runs
 * i = 0..n-1 in order.
 *
 * Levels are nearest_int's bit trick on integers here, not the float shortcut of q6_K: a drifted
 * `min` can put iscale * (x - min) far outside nearest_int's exact range, and the reference's
 * result there is still just those bit operations.
 *
 * Outputs per lane: the scale, the_min (= -min), and what is needed to rebuild the winning
 * levels if the encoder keeps them: the winning inverse scale and the `min` its grid used. */
typedef struct {
    float scale[8], the_min[8], iscale[8], grid_min[8];
    int dead_bits; /* lanes with max == min: levels 0, scale 0 */
} k45_result;

QW_AVX2 static inline __m256 k45_level(__m256 iscale, __m256 x, __m256 min, __m256i nmax) {
    const __m256i l = nearest_int_ps(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min)));
    return _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(l, _mm256_setzero_si256()), nmax));
}

/* G super-blocks at once (G = 1 or 2): their chains are independent, which hides the latency
 * of each lane's sequential sums. Always inlined so that G is a constant. */
QW_AVX2 static inline __attribute__((always_inline)) void
k45_fit(const float *const *xs, int G, int n, bool q2, int nmax, float rmin, float rdelta,
        int nstep, k45_result *out) {
    __m256 xt[2][32], w[2][32], lf[2][32];
    __m256 min[2], max[2], sum_w[2], sum_x[2], min0[2], dead[2], iscale[2], scale[2];
    __m256 best_error[2], best_iscale[2], best_grid_min[2];
    const __m256 zero = _mm256_setzero_ps();
    const __m256i nmax_i = _mm256_set1_epi32(nmax);
    for (int g = 0; g < G; g++) {
        for (int ib = 0; ib < n / 8; ib++) {
            __m256 r[8];
            for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(xs[g] + n * j + 8 * ib);
            transpose8_ps(r);
            for (int k = 0; k < 8; k++) xt[g][8 * ib + k] = r[k];
        }
        if (q2) { /* q2_K's weights: |x| */
            for (int i = 0; i < n; i++) w[g][i] = abs_ps(xt[g][i]);
        } else { /* q4_K's and q5_K's: sqrt(mean x^2) + |x| */
            __m256 sum_x2 = zero;
            for (int i = 0; i < n; i++) {
                sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(xt[g][i], xt[g][i]));
            }
            const __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps((float)n)));
            for (int i = 0; i < n; i++) w[g][i] = _mm256_add_ps(av_x, abs_ps(xt[g][i]));
        }

        min[g] = max[g] = xt[g][0];
        sum_w[g] = w[g][0];
        sum_x[g] = _mm256_mul_ps(sum_w[g], xt[g][0]);
        for (int i = 1; i < n; i++) {
            const __m256 v = xt[g][i];
            min[g] = _mm256_blendv_ps(min[g], v, _mm256_cmp_ps(v, min[g], _CMP_LT_OQ));
            max[g] = _mm256_blendv_ps(max[g], v, _mm256_cmp_ps(v, max[g], _CMP_GT_OQ));
            sum_w[g] = _mm256_add_ps(sum_w[g], w[g][i]);
            sum_x[g] = _mm256_add_ps(sum_x[g], _mm256_mul_ps(w[g][i], v));
        }
        min[g] = _mm256_blendv_ps(min[g], zero, _mm256_cmp_ps(min[g], zero, _CMP_GT_OQ));
        min0[g] = min[g];
        dead[g] = _mm256_cmp_ps(max[g], min[g], _CMP_EQ_OQ);
        iscale[g] = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(max[g], min[g]));
        scale[g] = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale[g]);
        best_error[g] = zero;
    }
    for (int i = 0; i < n; i++) {
        for (int g = 0; g < G; g++) {
            const __m256 l = k45_level(iscale[g], xt[g][i], min[g], nmax_i);
            const __m256 diff =
                _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[g], l), min[g]), xt[g][i]);
            const __m256 e = q2 ? abs_ps(diff) : _mm256_mul_ps(diff, diff);
            best_error[g] = _mm256_add_ps(best_error[g], _mm256_mul_ps(w[g][i], e));
        }
    }
    for (int g = 0; g < G; g++) {
        best_iscale[g] = iscale[g];
        best_grid_min[g] = min[g];
    }
    for (int is = 0; is <= nstep; is++) {
        const float num = rmin + rdelta * (float)is + (float)nmax;
        __m256 sum_l[2], sum_l2[2], sum_xl[2];
        for (int g = 0; g < G; g++) {
            iscale[g] = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max[g], min[g]));
            sum_l[g] = sum_l2[g] = sum_xl[g] = zero;
        }
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                const __m256 l = k45_level(iscale[g], xt[g][i], min[g], nmax_i);
                lf[g][i] = l;
                const __m256 wl = _mm256_mul_ps(w[g][i], l);
                sum_l[g] = _mm256_add_ps(sum_l[g], wl);
                sum_l2[g] = _mm256_add_ps(sum_l2[g], _mm256_mul_ps(wl, l));
                sum_xl[g] = _mm256_add_ps(sum_xl[g], _mm256_mul_ps(wl, xt[g][i]));
            }
        }
        __m256 D[2], this_scale[2], this_min[2], cur_error[2];
        for (int g = 0; g < G; g++) {
            D[g] = _mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_l2[g]),
                                 _mm256_mul_ps(sum_l[g], sum_l[g]));
            this_scale[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_xl[g]),
                                                        _mm256_mul_ps(sum_x[g], sum_l[g])),
                                          D[g]);
            this_min[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2[g], sum_x[g]),
                                                      _mm256_mul_ps(sum_l[g], sum_xl[g])),
                                        D[g]);
            const __m256 positive = _mm256_cmp_ps(this_min[g], zero, _CMP_GT_OQ);
            this_min[g] = _mm256_andnot_ps(positive, this_min[g]); /* +0 where positive */
            this_scale[g] =
                _mm256_blendv_ps(this_scale[g], _mm256_div_ps(sum_xl[g], sum_l2[g]), positive);
            cur_error[g] = zero;
        }
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                const __m256 diff = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(this_scale[g], lf[g][i]), this_min[g]), xt[g][i]);
                const __m256 e = q2 ? abs_ps(diff) : _mm256_mul_ps(diff, diff);
                cur_error[g] = _mm256_add_ps(cur_error[g], _mm256_mul_ps(w[g][i], e));
            }
        }
        for (int g = 0; g < G; g++) {
            const __m256 adopt =
                _mm256_and_ps(_mm256_cmp_ps(D[g], zero, _CMP_GT_OQ),
                              _mm256_cmp_ps(cur_error[g], best_error[g], _CMP_LT_OQ));
            best_error[g] = _mm256_blendv_ps(best_error[g], cur_error[g], adopt);
            scale[g] = _mm256_blendv_ps(scale[g], this_scale[g], adopt);
            best_iscale[g] = _mm256_blendv_ps(best_iscale[g], iscale[g], adopt);
            best_grid_min[g] = _mm256_blendv_ps(best_grid_min[g], min[g], adopt);
            min[g] = _mm256_blendv_ps(min[g], this_min[g], adopt);
        }
    }
    for (int g = 0; g < G; g++) {
        min[g] = _mm256_blendv_ps(min[g], min0[g], dead[g]);
        _mm256_storeu_ps(out[g].scale, _mm256_andnot_ps(dead[g], scale[g]));
        _mm256_storeu_ps(out[g].the_min, _mm256_xor_ps(min[g], _mm256_set1_ps(-0.0f)));
        _mm256_storeu_ps(out[g].iscale, best_iscale[g]);
        _mm256_storeu_ps(out[g].grid_min, best_grid_min[g]);
        out[g].dead_bits = _mm256_movemask_ps(dead[g]);
    }
}

/* Fits the sub-blocks of G (1 or 2) super-blocks with q4_K's or q5_K's search parameters. */
QW_AVX2 static void k45_fit_blocks(const float *const *xs, int G, int nmax, k45_result *out) {
    if (nmax == 15) {
        if (G == 2) k45_fit(xs, 2, 32, false, 15, -1.0f, 0.1f, 20, out);
        else k45_fit(xs, 1, 32, false, 15, -1.0f, 0.1f, 20, out);
    } else {
        if (G == 2) k45_fit(xs, 2, 32, false, 31, -0.5f, 0.1f, 15, out);
        else k45_fit(xs, 1, 32, false, 31, -0.5f, 0.1f, 15, out);
    }
}

/* q2_K's fits: make_qkx2_quants(16, 3, |x|, rmin -0.5, rdelta 0.1, 15 steps, mean absolute
 * error) for the 16 sub-blocks of 16 of a super-block, as two groups of eight lanes. */
QW_AVX2 static void q2k_fit16(const float *x, k45_result out[2]) {
    const float *xs[2] = {x, x + 128};
    k45_fit(xs, 2, 16, true, 3, -0.5f, 0.1f, 15, out);
}

/* The reference's stores of sub-block j's 6-bit scale and min codes (k4_put_scale_min). */
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

static void k4_scale_min(const uint8_t s[12], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The rest of one super-block of ggml's quantize_row_q{4,5}_K_ref, given its fit: d, dmin, the
 * scale bytes and the levels 0..nmax of all 256 elements. */
QW_AVX2 static void k45_encode_avx2(const float *x, const k45_result *f, int nmax, uint16_t *d_out,
                                    uint16_t *dmin_out, uint8_t s[12], uint8_t L[QW_QK_K]) {
    const k45_result fit = *f;
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        if (fit.scale[j] > max_scale) max_scale = fit.scale[j];
        if (fit.the_min[j] > max_min) max_min = fit.the_min[j];
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)qw_nearest_int(inv_scale * fit.scale[j]);
        uint8_t lm = (uint8_t)qw_nearest_int(inv_min * fit.the_min[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        k4_put_scale_min(s, j, ls, lm);
    }
    *d_out = qw_fp32_to_fp16(max_scale / 63.0f);
    *dmin_out = qw_fp32_to_fp16(max_min / 63.0f);
    const float d_all = qw_fp16_to_fp32(*d_out);
    const float m_all = qw_fp16_to_fp32(*dmin_out);
    const __m256i nmax_i = _mm256_set1_epi32(nmax);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k4_scale_min(s, j, &sc, &m);
        const float d = d_all * (float)sc;
        if (d == 0.0f) { /* the fit's levels */
            for (int i = 0; i < 32; i++) {
                int l = 0;
                if (!(fit.dead_bits >> j & 1)) {
                    l = qw_nearest_int(fit.iscale[j] * (x[32 * j + i] - fit.grid_min[j]));
                    l = l < 0 ? 0 : l > nmax ? nmax : l;
                }
                L[32 * j + i] = (uint8_t)l;
            }
            continue;
        }
        const float dm = m_all * (float)m;
        const __m256 dv = _mm256_set1_ps(d), dmv = _mm256_set1_ps(dm);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t =
                _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(x + 32 * j + 8 * k), dmv), dv);
            q[k] = _mm256_min_epi32(_mm256_max_epi32(nearest_int_ps(t), _mm256_setzero_si256()),
                                    nmax_i);
        }
        _mm256_storeu_si256((__m256i *)(void *)(L + 32 * j),
                            pack_u32_to_u8_x4(q[0], q[1], q[2], q[3]));
    }
}

QW_AVX2 static void quantize_q4_K_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) { /* the imatrix path (make_qkx3, make_qp) stays scalar */
        qw_quantize_row_q4_K(src, dst, n, importance);
        return;
    }
    qw_block_q4_K *y = dst;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int64_t n_blocks = n / QW_QK_K;
    k45_result fits[2];
    for (int64_t b = 0; b < n_blocks; b++) {
        if (b % 2 == 0) { /* fit two super-blocks at a time */
            const float *xs[2] = {src + b * QW_QK_K, src + (b + 1) * QW_QK_K};
            k45_fit_blocks(xs, b + 1 < n_blocks ? 2 : 1, 15, fits);
        }
        uint8_t L[QW_QK_K];
        k45_encode_avx2(src + b * QW_QK_K, &fits[b % 2], 15, &y[b].d, &y[b].dmin, y[b].scales,
                        L);
        for (int c = 0; c < QW_QK_K / 64; c++) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)(L + 64 * c));
            const __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(L + 64 * c + 32));
            const __m256i qs = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hi, m4), 4));
            _mm256_storeu_si256((__m256i *)(void *)(y[b].qs + 32 * c), qs);
        }
    }
}

QW_AVX2 static void quantize_q5_K_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) {
        qw_quantize_row_q5_K(src, dst, n, importance);
        return;
    }
    qw_block_q5_K *y = dst;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const int64_t n_blocks = n / QW_QK_K;
    k45_result fits[2];
    for (int64_t b = 0; b < n_blocks; b++) {
        if (b % 2 == 0) { /* fit two super-blocks at a time */
            const float *xs[2] = {src + b * QW_QK_K, src + (b + 1) * QW_QK_K};
            k45_fit_blocks(xs, b + 1 < n_blocks ? 2 : 1, 31, fits);
        }
        uint8_t L[QW_QK_K];
        k45_encode_avx2(src + b * QW_QK_K, &fits[b % 2], 31, &y[b].d, &y[b].dmin, y[b].scales,
                        L);
        __m256i qh = _mm256_setzero_si256();
        for (int c = 0; c < QW_QK_K / 64; c++) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)(L + 64 * c));
            const __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(L + 64 * c + 32));
            const __m256i qs = _mm256_or_si256(_mm256_and_si256(lo, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hi, m4), 4));
            _mm256_storeu_si256((__m256i *)(void *)(y[b].qs + 32 * c), qs);
            /* bit 2c: the fifth bit of the low element, bit 2c + 1: of the high one (levels are
             * 0..31, so a 16-bit shift moves no bit across a byte once masked) */
            const __m256i blo = _mm256_and_si256(_mm256_srli_epi16(lo, 4), one);
            const __m256i bhi = _mm256_and_si256(_mm256_srli_epi16(hi, 4), one);
            const __m256i bits = _mm256_or_si256(blo, _mm256_slli_epi16(bhi, 1));
            qh = _mm256_or_si256(qh, _mm256_slli_epi16(bits, 2 * c));
        }
        _mm256_storeu_si256((__m256i *)(void *)y[b].qh, qh);
    }
}

/* ---- q2_K (no importance) ------------------------------------------------------------------- */

QW_AVX2 static void quantize_q2_K_avx2(const float *src, void *dst, int64_t n,
                                       const float *importance) {
    if (importance) { /* the imatrix path (make_qkx3, make_qp) stays scalar */
        qw_quantize_row_q2_K(src, dst, n, importance);
        return;
    }
    qw_block_q2_K *y = dst;
    const __m256i three = _mm256_set1_epi32(3);
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        k45_result fit[2];
        q2k_fit16(x, fit);
        float scales[16], mins[16];
        memcpy(scales, fit[0].scale, sizeof fit[0].scale);
        memcpy(scales + 8, fit[1].scale, sizeof fit[1].scale);
        memcpy(mins, fit[0].the_min, sizeof fit[0].the_min);
        memcpy(mins + 8, fit[1].the_min, sizeof fit[1].the_min);
        /* the reference's scale and min codes */
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 16; j++) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0.0f) {
            const float iscale = 15.0f / max_scale;
            for (int j = 0; j < 16; j++) {
                y[b].scales[j] = (uint8_t)qw_nearest_int(iscale * scales[j]);
            }
            y[b].d = qw_fp32_to_fp16(max_scale / 15.0f);
        } else {
            memset(y[b].scales, 0, sizeof y[b].scales);
            y[b].d = qw_fp32_to_fp16(0.0f);
        }
        if (max_min > 0.0f) {
            const float iscale = 15.0f / max_min;
            for (int j = 0; j < 16; j++) {
                const int l = qw_nearest_int(iscale * mins[j]);
                y[b].scales[j] |= (uint8_t)((unsigned)l << 4);
            }
            y[b].dmin = qw_fp32_to_fp16(max_min / 15.0f);
        } else {
            y[b].dmin = qw_fp32_to_fp16(0.0f);
        }
        const float d_all = qw_fp16_to_fp32(y[b].d);
        const float m_all = qw_fp16_to_fp32(y[b].dmin);
        uint8_t L[QW_QK_K];
        for (int j = 0; j < 16; j++) {
            const float d = d_all * (float)(y[b].scales[j] & 0xf);
            if (d == 0.0f) { /* the fit's levels */
                const k45_result *f = &fit[j / 8];
                const int lane = j % 8;
                for (int i = 0; i < 16; i++) {
                    int l = 0;
                    if (!(f->dead_bits >> lane & 1)) {
                        l = qw_nearest_int(f->iscale[lane] * (x[16 * j + i] - f->grid_min[lane]));
                        l = l < 0 ? 0 : l > 3 ? 3 : l;
                    }
                    L[16 * j + i] = (uint8_t)l;
                }
                continue;
            }
            const float m = m_all * (float)(y[b].scales[j] >> 4);
            const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
            __m256i q[2];
            for (int k = 0; k < 2; k++) {
                const __m256 t =
                    _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(x + 16 * j + 8 * k), mv), dv);
                q[k] = _mm256_min_epi32(_mm256_max_epi32(nearest_int_ps(t), _mm256_setzero_si256()),
                                        three);
            }
            _mm_storeu_si128((__m128i *)(void *)(L + 16 * j), pack_u32_to_u8(q[0], q[1]));
        }
        /* qs[32c + l]: element 128c + 32k + l at bits 2k (levels are 0..3: no byte carries) */
        for (int c = 0; c < 2; c++) {
            __m256i qs = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                const __m256i l =
                    _mm256_loadu_si256((const __m256i *)(const void *)(L + 128 * c + 32 * k));
                qs = _mm256_or_si256(qs, _mm256_slli_epi16(l, 2 * k));
            }
            _mm256_storeu_si256((__m256i *)(void *)(y[b].qs + 32 * c), qs);
        }
    }
}

/* ---- iq4_nl and iq4_xs (no importance) ------------------------------------------------------ */

/* The reference's iq4_nearest(y) is the largest level j for which y - v[j-1] >= v[j] - y in
 * fp32 (a tie goes up), found by binary search. Near each midpoint (v[j-1] + v[j]) / 2 both
 * differences are exact (the midpoints are at least 4.5 from zero and the levels integers), and
 * away from it rounding cannot flip the comparison, so the predicate is exactly
 * y >= midpoint_j; it is monotone in j and the search returns the number of midpoints at or
 * below y. (Checked against the reference's search for all 2^32 bit patterns but NaN, which the
 * reference sends to 15.) Counting 15 exact comparisons is branch-free. */
typedef struct {
    __m256 mid[15]; /* (v[j-1] + v[j]) / 2, exact */
    __m256 lo, hi;  /* v[0..7], v[8..15] */
} iq4_tables;

QW_AVX2 static void iq4_tables_init(iq4_tables *t) {
    const int8_t *v = qw_iq4nl_values;
    float cur[16];
    for (int j = 0; j < 16; j++) cur[j] = (float)v[j];
    for (int j = 1; j < 16; j++) t->mid[j - 1] = _mm256_set1_ps(0.5f * (float)(v[j - 1] + v[j]));
    t->lo = _mm256_loadu_ps(cur);
    t->hi = _mm256_loadu_ps(cur + 8);
}

/* The level index (0..15) of each lane of y; NaN lanes give 0 here (see iq4_index_ps). */
QW_AVX2 static inline __m256i iq4_count_ps(const iq4_tables *t, __m256 y) {
    __m256i cnt = _mm256_setzero_si256();
    for (int j = 0; j < 15; j++) {
        cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(_mm256_cmp_ps(y, t->mid[j], _CMP_GE_OQ)));
    }
    return cnt;
}

/* The level value v[idx] of each lane. */
QW_AVX2 static inline __m256 iq4_value_ps(const iq4_tables *t, __m256i idx) {
    const __m256 high = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* idx >= 8 */
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t->lo, idx),
                            _mm256_permutevar8x32_ps(t->hi, idx), high);
}

/* The reference's level index for every input, NaN (-> 15) included. */
QW_AVX2 static inline __m256i iq4_index_ps(const iq4_tables *t, __m256 y) {
    const __m256 nan = _mm256_cmp_ps(y, y, _CMP_UNORD_Q);
    return _mm256_blendv_epi8(iq4_count_ps(t, y), _mm256_set1_epi32(15), _mm256_castps_si256(nan));
}

/* Sums of w*q*x and w*q*q over the 32 elements of each lane for the levels q of iscale * x, for
 * two inverse scales at once; j runs in order. */
QW_AVX2 static inline void iq4_sums2(const iq4_tables *t, const __m256 *x, const __m256 *w,
                                     __m256 is0, __m256 is1, __m256 out[4]) {
    __m256 sqx0 = _mm256_setzero_ps(), sq20 = _mm256_setzero_ps();
    __m256 sqx1 = _mm256_setzero_ps(), sq21 = _mm256_setzero_ps();
    for (int j = 0; j < 32; j++) {
        /* iscale * x is finite here (|x| <= |max| >= 1e-15 in the lanes that count) */
        const __m256 q0 = iq4_value_ps(t, iq4_count_ps(t, _mm256_mul_ps(is0, x[j])));
        const __m256 q1 = iq4_value_ps(t, iq4_count_ps(t, _mm256_mul_ps(is1, x[j])));
        const __m256 wq0 = _mm256_mul_ps(w[j], q0), wq1 = _mm256_mul_ps(w[j], q1);
        sqx0 = _mm256_add_ps(sqx0, _mm256_mul_ps(wq0, x[j]));
        sq20 = _mm256_add_ps(sq20, _mm256_mul_ps(wq0, q0));
        sqx1 = _mm256_add_ps(sqx1, _mm256_mul_ps(wq1, x[j]));
        sq21 = _mm256_add_ps(sq21, _mm256_mul_ps(wq1, q1));
    }
    out[0] = sqx0;
    out[1] = sq20;
    out[2] = sqx1;
    out[3] = sq21;
}

/* The reference's iq4_fit (weights x^2) for eight 32-element blocks at x + 32 k, lane k each:
 * writes each block's scale d. */
QW_AVX2 static void iq4_fit8(const iq4_tables *t, const float *x, float d_out[8]) {
    __m256 xt[32], w[32];
    for (int ib = 0; ib < 4; ib++) {
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(x + 32 * k + 8 * ib);
        transpose8_ps(r);
        for (int i = 0; i < 8; i++) xt[8 * ib + i] = r[i];
    }
    __m256 amax = _mm256_setzero_ps(), max = _mm256_setzero_ps();
    for (int j = 0; j < 32; j++) {
        w[j] = _mm256_mul_ps(xt[j], xt[j]);
        const __m256 ax = abs_ps(xt[j]);
        const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, larger);
        max = _mm256_blendv_ps(max, xt[j], larger);
    }
    const float v0 = (float)qw_iq4nl_values[0];
    /* 16 candidates: 1 / (-max / v[0]), then (t + v[0]) / max for t = -7..7 */
    __m256 iscale[16], sums[16][2];
    iscale[0] = _mm256_div_ps(_mm256_set1_ps(1.0f),
                              _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0f)),
                                            _mm256_set1_ps(v0)));
    for (int c = 1; c < 16; c++) {
        iscale[c] = _mm256_div_ps(_mm256_set1_ps((float)(c - 8 + qw_iq4nl_values[0])), max);
    }
    for (int c = 0; c < 16; c += 2) {
        __m256 out[4];
        iq4_sums2(t, xt, w, iscale[c], iscale[c + 1], out);
        sums[c][0] = out[0];
        sums[c][1] = out[1];
        sums[c + 1][0] = out[2];
        sums[c + 1][1] = out[3];
    }
    const __m256 zero = _mm256_setzero_ps();
    __m256 d = _mm256_blendv_ps(zero, _mm256_div_ps(sums[0][0], sums[0][1]),
                                _mm256_cmp_ps(sums[0][1], zero, _CMP_GT_OQ));
    __m256 best = _mm256_mul_ps(d, sums[0][0]);
    for (int c = 1; c < 16; c++) {
        const __m256 sqx = sums[c][0], sq2 = sums[c][1];
        const __m256 adopt =
            _mm256_and_ps(_mm256_cmp_ps(sq2, zero, _CMP_GT_OQ),
                          _mm256_cmp_ps(_mm256_mul_ps(sqx, sqx), _mm256_mul_ps(best, sq2),
                                        _CMP_GT_OQ));
        const __m256 nd = _mm256_div_ps(sqx, sq2);
        d = _mm256_blendv_ps(d, nd, adopt);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(nd, sqx), adopt);
    }
    const __m256 live = _mm256_cmp_ps(amax, _mm256_set1_ps(GROUP_MAX_EPS), _CMP_GE_OQ);
    _mm256_storeu_ps(d_out, _mm256_and_ps(d, live));
}

/* 32 elements into 16 bytes of nibbles (element j low, j + 16 high): the levels of x * id. */
QW_AVX2 static void iq4_pack_avx2(const iq4_tables *t, const float *x, float id, uint8_t *qs) {
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        q[k] = iq4_index_ps(t, _mm256_mul_ps(idv, _mm256_loadu_ps(x + 8 * k)));
    }
    const __m256i lo = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));
    const __m256i hi = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
    _mm_storeu_si128((__m128i *)(void *)qs, pack_u32_to_u8(lo, hi));
}

QW_AVX2 static void quantize_iq4_nl_avx2(const float *src, void *dst, int64_t n,
                                         const float *importance) {
    const int64_t n_blocks = n / QW_QK4_NL;
    if (importance || n_blocks < 8) {
        qw_quantize_row_iq4_nl(src, dst, n, importance);
        return;
    }
    iq4_tables t;
    iq4_tables_init(&t);
    qw_block_iq4_nl *y = dst;
    int64_t b = 0;
    for (; b + 8 <= n_blocks; b += 8) {
        float d[8];
        iq4_fit8(&t, src + b * QW_QK4_NL, d);
        for (int k = 0; k < 8; k++) {
            /* the levels come from the fp32 scale, not from the fp16 value stored */
            y[b + k].d = qw_fp32_to_fp16(d[k]);
            iq4_pack_avx2(&t, src + (b + k) * QW_QK4_NL, d[k] != 0.0f ? 1.0f / d[k] : 0.0f,
                          y[b + k].qs);
        }
    }
    if (b < n_blocks) {
        qw_quantize_row_iq4_nl(src + b * QW_QK4_NL, y + b, (n_blocks - b) * QW_QK4_NL, NULL);
    }
}

QW_AVX2 static void quantize_iq4_xs_avx2(const float *src, void *dst, int64_t n,
                                         const float *importance) {
    if (importance) {
        qw_quantize_row_iq4_xs(src, dst, n, importance);
        return;
    }
    iq4_tables t;
    iq4_tables_init(&t);
    qw_block_iq4_xs *y = dst;
    for (int64_t b = 0; b < n / QW_QK_K; b++) {
        const float *x = src + b * QW_QK_K;
        float scales[QW_QK_K / 32];
        iq4_fit8(&t, x, scales);
        float max_scale = 0.0f, amax_scale = 0.0f;
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            if (fabsf(scales[ib]) > amax_scale) {
                amax_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        const float d = -max_scale / 32;
        y[b].d = qw_fp32_to_fp16(d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int ib = 0; ib < QW_QK_K / 32; ib++) {
            int ls = qw_nearest_int(id * scales[ib]);
            ls = ls < -32 ? -32 : ls > 31 ? 31 : ls;
            const float dl = d * (float)ls;
            iq4_pack_avx2(&t, x + 32 * ib, dl != 0.0f ? 1.0f / dl : 0.0f, y[b].qs + 16 * ib);
            ls += 32;
            y[b].scales_l[ib / 2] |= (uint8_t)((ls & 0xf) << (4 * (ib % 2)));
            scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
        }
        y[b].scales_h = scales_h;
    }
}

/* ---- non-finite check ----------------------------------------------------------------------- */

QW_AVX2 static int64_t find_nonfinite_avx2(const float *x, int64_t n) {
    const __m256 zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 bad = zero;
        for (int k = 0; k < 4; k++) {
            const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), zero, _CMP_NEQ_UQ));
        }
        if (_mm256_movemask_ps(bad)) break; /* the scalar loop below finds which */
    }
    const int64_t at = find_nonfinite_scalar(x + i, n - i);
    return at < 0 ? -1 : i + at;
}

int64_t qw_find_nonfinite(const float *x, int64_t n) {
    if (strcmp(qw_qtype_kernels(), "avx2") == 0) return find_nonfinite_avx2(x, n);
    return find_nonfinite_scalar(x, n);
}

/* ---- the overlay ---------------------------------------------------------------------------- */

typedef struct {
    qw_qtype type;
    qw_dequantize_fn dequantize; /* NULL: keep the reference */
    qw_quantize_fn quantize;
} simd_row;

static const simd_row avx2_rows[] = {
    {QW_QTYPE_F16, dequantize_f16_avx2, quantize_f16_avx2},
    {QW_QTYPE_BF16, dequantize_bf16_avx2, quantize_bf16_avx2},
    {QW_QTYPE_Q8_0, dequantize_q8_0_avx2, quantize_q8_0_avx2},
    {QW_QTYPE_Q4_0, dequantize_q4_0_avx2, quantize_q4_0_avx2},
    {QW_QTYPE_Q4_1, NULL, quantize_q4_1_avx2},
    {QW_QTYPE_Q5_0, NULL, quantize_q5_0_avx2},
    {QW_QTYPE_Q5_1, NULL, quantize_q5_1_avx2},
    {QW_QTYPE_Q2_K, NULL, quantize_q2_K_avx2},
    {QW_QTYPE_Q3_K, NULL, quantize_q3_K_avx2},
    {QW_QTYPE_Q4_K, NULL, quantize_q4_K_avx2},
    {QW_QTYPE_Q5_K, NULL, quantize_q5_K_avx2},
    {QW_QTYPE_Q6_K, NULL, quantize_q6_K_avx2},
    {QW_QTYPE_IQ4_NL, NULL, quantize_iq4_nl_avx2},
    {QW_QTYPE_IQ4_XS, NULL, quantize_iq4_xs_avx2},
};

static void apply(qw_qtype_info table[QW_QTYPE_COUNT], const simd_row *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        qw_qtype_info *row = &table[rows[i].type];
        if (rows[i].dequantize && row->dequantize) row->dequantize = rows[i].dequantize;
        if (rows[i].quantize && row->quantize) row->quantize = rows[i].quantize;
    }
}

const char *qw_simd_overlay(qw_qtype_info table[QW_QTYPE_COUNT]) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && qw_cpu_has_f16c()) {
        apply(table, avx2_rows, sizeof avx2_rows / sizeof avx2_rows[0]);
        return "avx2";
    }
    return NULL;
}

#else /* not x86-64 with GCC or Clang: no SIMD kernels yet */

int64_t qw_find_nonfinite(const float *x, int64_t n) { return find_nonfinite_scalar(x, n); }

const char *qw_simd_overlay(qw_qtype_info table[QW_QTYPE_COUNT]) {
    (void)table;
    return NULL;
}

#endif
