/*
 * half.h — IEEE half (fp16) and bfloat16 conversions, bit exact with ggml:
 * fp32 -> fp16 rounds to nearest even (overflow -> inf, every NaN -> the quiet NaN 0x7e00);
 * fp32 -> bf16 rounds to nearest even and quiets NaNs.
 */
#ifndef QW_HALF_H
#define QW_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t qw_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float qw_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float qw_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return qw_bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return qw_bits_f32(sign);
        /* subnormal: mant * 2^-24 is exact in fp32 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return qw_bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

static inline uint16_t qw_fp32_to_fp16(float f) {
    uint32_t x = qw_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* any NaN: ggml's quiet NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520 rounds to inf */
    if (abs >= 0x38800000u) {                                  /* normal half */
        uint32_t r = abs - 0x38000000u;
        r += 0xfff + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = abs >> 23;
    if (e < 102) return (uint16_t)sign; /* below half the smallest subnormal */
    uint32_t m = (abs & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

static inline float qw_bf16_to_fp32(uint16_t h) { return qw_bits_f32((uint32_t)h << 16); }

static inline uint16_t qw_fp32_to_bf16(float f) {
    uint32_t x = qw_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64);
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#endif /* QW_HALF_H */
