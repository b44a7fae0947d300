/*
 * W4A16 group quantization as compressed-tensors computes it; see int4.h for the formulas.
 * Every arithmetic step is rounded to the scheme's dtype because torch evaluates bf16/f16
 * tensor operations in f32 and rounds each result: doing the same gives identical codes.
 */
#include "int4.h"

#include <math.h>

#include "half.h"

enum { CODE_MIN = -8, CODE_MAX = 7 };

qw_status qw_int4_check(const qw_int4_scheme *s, int64_t n_in, const char *tensor,
                        qw_error *err) {
    if (s->dtype != QW_QTYPE_F32 && s->dtype != QW_QTYPE_F16 && s->dtype != QW_QTYPE_BF16) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, tensor, -1,
                          "%s: int4 scales must be f32, f16 or bf16", tensor);
    }
    if (s->group_size <= 0 || n_in <= 0 || n_in % s->group_size != 0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, tensor, -1,
                          "%s: %lld input columns are not a multiple of the group size %lld",
                          tensor, (long long)n_in, (long long)s->group_size);
    }
    return QW_OK;
}

/* torch.finfo(dtype).eps */
static float dtype_eps(qw_qtype dtype) {
    return dtype == QW_QTYPE_BF16 ? 0x1p-7f : dtype == QW_QTYPE_F16 ? 0x1p-10f : 0x1p-23f;
}

static float clampf(float x, float lo, float hi) {
    return x < lo ? lo : x > hi ? hi : x; /* NaN passes through, as torch.clamp's does */
}

/* torch.round(...).to(int8) of a value already clamped to [-8, 7]; NaN (only from 0 / 0 in an
 * all-zero group, whose zero point is then irrelevant) becomes 0 */
static int8_t to_code(float x) {
    return isnan(x) ? 0 : (int8_t)nearbyintf(x);
}

/* lo = min(min(w), 0), hi = max(max(w), 0); NaNs are passed over. LANES running minima and
 * maxima instead of one: the compiler may not reorder a single float min chain into vector
 * lanes itself, and this is the search's innermost loop. Min and max are exact, so the lanes
 * give the same result as one chain. */
#define LANES 8

static inline void group_range(const float *w, int64_t n, float *lo_out, float *hi_out) {
    float lo[LANES] = {0}, hi[LANES] = {0}; /* zero is always representable */
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            lo[j] = w[i + j] < lo[j] ? w[i + j] : lo[j];
            hi[j] = w[i + j] > hi[j] ? w[i + j] : hi[j];
        }
    }
    for (; i < n; i++) {
        lo[0] = w[i] < lo[0] ? w[i] : lo[0];
        hi[0] = w[i] > hi[0] ? w[i] : hi[0];
    }
    for (int j = 1; j < LANES; j++) {
        lo[0] = lo[j] < lo[0] ? lo[j] : lo[0];
        hi[0] = hi[j] > hi[0] ? hi[j] : hi[0];
    }
    *lo_out = lo[0];
    *hi_out = hi[0];
}

static inline void group_params(const qw_int4_scheme *s, const float *w, int64_t n,
                                float *scale, int8_t *zero_point) {
    float lo, hi;
    group_range(w, n, &lo, &hi);
    float sc, zp = 0.0f;
    if (s->symmetric) {
        float m = -lo > hi ? -lo : hi;
        sc = qw_int4_round_dtype(s, m / 7.5f);
    } else {
        sc = qw_int4_round_dtype(s, qw_int4_round_dtype(s, hi - lo) / 15.0f);
        /* computed before the zero-scale fix-up, as compressed-tensors does */
        zp = clampf(qw_int4_round_dtype(s, (float)CODE_MIN - qw_int4_round_dtype(s, lo / sc)),
                    CODE_MIN, CODE_MAX);
    }
    *scale = sc == 0.0f ? dtype_eps(s->dtype) : sc;
    *zero_point = to_code(zp);
}

void qw_int4_quantize_row(const qw_int4_scheme *s, const float *w, int64_t n, int8_t *codes,
                          float *scales, int8_t *zero_points) {
    const int64_t g = s->group_size;
    for (int64_t k = 0; k * g < n; k++) {
        const float *wg = w + k * g;
        group_params(s, wg, g, &scales[k], &zero_points[k]);
        const float sc = scales[k], zp = (float)zero_points[k];
        for (int64_t i = 0; i < g; i++) {
            float x = qw_int4_round_dtype(s, qw_int4_round_dtype(s, wg[i] / sc) + zp);
            codes[k * g + i] = to_code(clampf(x, CODE_MIN, CODE_MAX));
        }
    }
}

void qw_int4_dequantize_row(const qw_int4_scheme *s, const int8_t *codes, const float *scales,
                            const int8_t *zero_points, int64_t n, float *out) {
    const int64_t g = s->group_size;
    for (int64_t i = 0; i < n; i++) {
        const int64_t k = i / g;
        out[i] = qw_int4_round_dtype(s, (float)(codes[i] - zero_points[k]) * scales[k]);
    }
}

/* x rounded to dtype; called with a constant dtype in each loop below, so that the compiler
 * gives every dtype its own branch-free (vectorizable) loop */
static inline float round_to(qw_qtype dtype, float x) {
    if (dtype == QW_QTYPE_BF16) return qw_bf16_to_fp32(qw_fp32_to_bf16(x));
    if (dtype == QW_QTYPE_F16) return qw_fp16_to_fp32(qw_fp32_to_fp16(x));
    return x;
}

/* nearbyintf for x in [-8, 7]: adding 1.5 * 2^23 leaves no fraction bits, so the addition rounds
 * half to even as the FPU does; unlike nearbyintf this needs no libm call. NaN stays NaN. */
static inline float round_small(float x) {
    const float shift = 0x1.8p23f;
    return (x + shift) - shift;
}

/* Written without branches (selects only) so that it vectorizes. */
static inline void fake_quantize_group(qw_qtype dtype, float *w, int64_t g, float sc, float zp) {
    for (int64_t i = 0; i < g; i++) {
        float x = round_to(dtype, round_to(dtype, w[i] / sc) + zp);
        x = x < CODE_MIN ? CODE_MIN : x; /* clampf, as two selects */
        x = x > CODE_MAX ? CODE_MAX : x;
        const float code = x == x ? round_small(x) : 0.0f; /* NaN: code 0, as to_code */
        w[i] = round_to(dtype, (code - zp) * sc);
    }
}

QW_AVX2_CLONE void qw_int4_fake_quantize_row(const qw_int4_scheme *s, float *w, int64_t n) {
    const int64_t g = s->group_size;
    for (int64_t k = 0; k * g < n; k++) {
        float *wg = w + k * g;
        float sc;
        int8_t zp;
        group_params(s, wg, g, &sc, &zp);
        if (s->dtype == QW_QTYPE_BF16) {
            fake_quantize_group(QW_QTYPE_BF16, wg, g, sc, (float)zp);
        } else if (s->dtype == QW_QTYPE_F16) {
            fake_quantize_group(QW_QTYPE_F16, wg, g, sc, (float)zp);
        } else {
            fake_quantize_group(QW_QTYPE_F32, wg, g, sc, (float)zp);
        }
    }
}

static inline void scale_row(qw_qtype dtype, const float *w0, const float *scale, int64_t n,
                             float *w) {
    for (int64_t c = 0; c < n; c++) w[c] = round_to(dtype, w0[c] * scale[c]);
}

QW_AVX2_CLONE void qw_int4_fake_quantize_scaled_row(const qw_int4_scheme *s, const float *w0,
                                                    const float *scale, int64_t n, float *w) {
    if (s->dtype == QW_QTYPE_BF16) {
        scale_row(QW_QTYPE_BF16, w0, scale, n, w);
    } else if (s->dtype == QW_QTYPE_F16) {
        scale_row(QW_QTYPE_F16, w0, scale, n, w);
    } else {
        scale_row(QW_QTYPE_F32, w0, scale, n, w);
    }
    qw_int4_fake_quantize_row(s, w, n);
    for (int64_t c = 0; c < n; c++) w[c] /= scale[c];
}

void qw_int4_pack_row(const int8_t *codes, int64_t n, int32_t *words) {
    for (int64_t j = 0; j * 8 < n; j++) {
        uint32_t word = 0;
        for (int64_t i = 0; i < 8 && j * 8 + i < n; i++) {
            word |= (uint32_t)(codes[j * 8 + i] - CODE_MIN) << (4 * i);
        }
        words[j] = (int32_t)word;
    }
}

void qw_int4_unpack_row(const int32_t *words, int64_t n, int8_t *codes) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t word = (uint32_t)words[i / 8];
        codes[i] = (int8_t)((int)((word >> (4 * (i % 8))) & 15) + CODE_MIN);
    }
}

void qw_int4_pack_columns(const int8_t *zero_points, int64_t n_rows, int64_t n_groups,
                          int32_t *words) {
    for (int64_t r = 0; r * 8 < n_rows; r++) {
        for (int64_t k = 0; k < n_groups; k++) {
            uint32_t word = 0;
            for (int64_t i = 0; i < 8 && r * 8 + i < n_rows; i++) {
                word |= (uint32_t)(zero_points[(r * 8 + i) * n_groups + k] - CODE_MIN) << (4 * i);
            }
            words[r * n_groups + k] = (int32_t)word;
        }
    }
}
