/* test_quant — the type table, the fp16/bf16 conversions and the row kernels.
 *
 * Bit exactness against llama.cpp is tested in tests/python/test_kernels_vs_ggml.py (it needs
 * llama.cpp's library). This file needs nothing: it checks the table against ggml's published
 * ids and sizes, every block layout against an independent encoder written from the layout
 * descriptions (research/gguf.md §2), and the round-trip error of every type we can encode. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "int4.h"
#include "kernels.h"
#include "quant.h"
#include "test.h"

/* ---- deterministic inputs ------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

static float rng_gauss(void) { /* Box-Muller; the spare value is dropped for simplicity */
    double u1 = rng_uniform(), u2 = rng_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void fill_gauss(float *x, int64_t n, uint64_t seed) {
    rng_state = seed;
    for (int64_t i = 0; i < n; i++) x[i] = rng_gauss();
}

/* ---- the table ------------------------------------------------------------------------------ */

/* ggml's ids and geometry, as llama.cpp's ggml.c and GGUF files define them (research/gguf.md §2;
 * checked against llama.cpp's library by test_kernels_vs_ggml.py). Kept here as data so that a
 * wrong table row fails even without that library. */
static const struct {
    const char *name;
    uint32_t id, elems, bytes;
} ggml_types[] = {
    {"f32", 0, 1, 4},          {"f16", 1, 1, 2},         {"q4_0", 2, 32, 18},
    {"q4_1", 3, 32, 20},       {"q5_0", 6, 32, 22},      {"q5_1", 7, 32, 24},
    {"q8_0", 8, 32, 34},       {"q8_1", 9, 32, 36},      {"q2_K", 10, 256, 84},
    {"q3_K", 11, 256, 110},    {"q4_K", 12, 256, 144},   {"q5_K", 13, 256, 176},
    {"q6_K", 14, 256, 210},    {"q8_K", 15, 256, 292},   {"iq2_xxs", 16, 256, 66},
    {"iq2_xs", 17, 256, 74},   {"iq3_xxs", 18, 256, 98}, {"iq1_s", 19, 256, 50},
    {"iq4_nl", 20, 32, 18},    {"iq3_s", 21, 256, 110},  {"iq2_s", 22, 256, 82},
    {"iq4_xs", 23, 256, 136},  {"i8", 24, 1, 1},         {"i16", 25, 1, 2},
    {"i32", 26, 1, 4},         {"i64", 27, 1, 8},        {"f64", 28, 1, 8},
    {"iq1_m", 29, 256, 56},    {"bf16", 30, 1, 2},       {"tq1_0", 34, 256, 54},
    {"tq2_0", 35, 256, 66},    {"mxfp4", 39, 32, 17},    {"nvfp4", 40, 64, 36},
    {"q1_0", 41, 128, 18},     {"q2_0", 42, 64, 18},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* The structs in blocks.h, which the kernels index with; a row whose bytes disagree with its
 * struct would read past its block. */
static const struct {
    qw_qtype type;
    size_t size;
    uint32_t elems;
} block_structs[] = {
    {QW_QTYPE_Q4_0, sizeof(qw_block_q4_0), QW_QK4_0},
    {QW_QTYPE_Q4_1, sizeof(qw_block_q4_1), 32},
    {QW_QTYPE_Q5_0, sizeof(qw_block_q5_0), 32},
    {QW_QTYPE_Q5_1, sizeof(qw_block_q5_1), 32},
    {QW_QTYPE_Q8_0, sizeof(qw_block_q8_0), QW_QK8_0},
    {QW_QTYPE_Q8_1, sizeof(qw_block_q8_1), 32},
    {QW_QTYPE_Q2_K, sizeof(qw_block_q2_K), QW_QK_K},
    {QW_QTYPE_Q3_K, sizeof(qw_block_q3_K), QW_QK_K},
    {QW_QTYPE_Q4_K, sizeof(qw_block_q4_K), QW_QK_K},
    {QW_QTYPE_Q5_K, sizeof(qw_block_q5_K), QW_QK_K},
    {QW_QTYPE_Q6_K, sizeof(qw_block_q6_K), QW_QK_K},
    {QW_QTYPE_Q8_K, sizeof(qw_block_q8_K), QW_QK_K},
    {QW_QTYPE_IQ2_XXS, sizeof(qw_block_iq2_xxs), QW_QK_K},
    {QW_QTYPE_IQ2_XS, sizeof(qw_block_iq2_xs), QW_QK_K},
    {QW_QTYPE_IQ2_S, sizeof(qw_block_iq2_s), QW_QK_K},
    {QW_QTYPE_IQ3_XXS, sizeof(qw_block_iq3_xxs), QW_QK_K},
    {QW_QTYPE_IQ3_S, sizeof(qw_block_iq3_s), QW_QK_K},
    {QW_QTYPE_IQ1_S, sizeof(qw_block_iq1_s), QW_QK_K},
    {QW_QTYPE_IQ1_M, sizeof(qw_block_iq1_m), QW_QK_K},
    {QW_QTYPE_IQ4_NL, sizeof(qw_block_iq4_nl), QW_QK4_NL},
    {QW_QTYPE_IQ4_XS, sizeof(qw_block_iq4_xs), QW_QK_K},
    {QW_QTYPE_TQ1_0, sizeof(qw_block_tq1_0), QW_QK_K},
    {QW_QTYPE_TQ2_0, sizeof(qw_block_tq2_0), QW_QK_K},
    {QW_QTYPE_MXFP4, sizeof(qw_block_mxfp4), QW_QK_MXFP4},
    {QW_QTYPE_NVFP4, sizeof(qw_block_nvfp4), QW_QK_NVFP4},
    {QW_QTYPE_Q1_0, sizeof(qw_block_q1_0), QW_QK1_0},
    {QW_QTYPE_Q2_0, sizeof(qw_block_q2_0), QW_QK2_0},
    {QW_QTYPE_F32, sizeof(float), 1},
    {QW_QTYPE_F16, sizeof(uint16_t), 1},
    {QW_QTYPE_BF16, sizeof(uint16_t), 1},
    {QW_QTYPE_F64, sizeof(double), 1},
};

TEST(table_rows_are_consistent) {
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        CHECK(info != NULL);
        if (!info) continue;
        CHECK_EQ_INT(info->type, t);
        CHECK(info->name != NULL && info->name[0] != '\0');
        CHECK(info->block_elems > 0 && info->block_bytes > 0);
        if (info->is_float) CHECK_EQ_INT(info->block_elems, 1);
        /* Something we can write, we can read back (the round-trip tests rely on it). */
        if (info->quantize) CHECK(info->dequantize != NULL);
        CHECK_EQ_STR(qw_qtype_name((qw_qtype)t), info->name);

        const qw_qtype_info *ref = qw_qtype_get_reference((qw_qtype)t);
        CHECK(ref != NULL && ref->gguf_id == info->gguf_id);
        CHECK(ref != NULL && ref->block_elems == info->block_elems);
        CHECK(ref != NULL && ref->block_bytes == info->block_bytes);

        /* Names are looked up case-insensitively, so they must differ case-insensitively. */
        for (int u = t + 1; u < QW_QTYPE_COUNT; u++) {
            const qw_qtype_info *other = qw_qtype_get((qw_qtype)u);
            if (qw_strcasecmp(info->name, other->name) == 0) {
                fprintf(stderr, "duplicate name %s\n", info->name);
                CHECK(0);
            }
            if (info->gguf_id == other->gguf_id) {
                fprintf(stderr, "duplicate gguf id %u (%s, %s)\n", info->gguf_id, info->name,
                        other->name);
                CHECK(0);
            }
        }
    }
    CHECK(qw_qtype_get(QW_QTYPE_COUNT) == NULL);
    CHECK(qw_qtype_get((qw_qtype)-1) == NULL);
    CHECK_EQ_STR(qw_qtype_name(QW_QTYPE_COUNT), "?");
}

TEST(table_matches_ggml) {
    CHECK_EQ_INT(N_GGML_TYPES, QW_QTYPE_COUNT);
    for (size_t i = 0; i < N_GGML_TYPES; i++) {
        qw_qtype t;
        if (!qw_qtype_from_name(ggml_types[i].name, &t)) {
            fprintf(stderr, "type %s missing from the table\n", ggml_types[i].name);
            CHECK(0);
            continue;
        }
        const qw_qtype_info *info = qw_qtype_get(t);
        CHECK_EQ_STR(info->name, ggml_types[i].name);
        CHECK_EQ_INT(info->gguf_id, ggml_types[i].id);
        CHECK_EQ_INT(info->block_elems, ggml_types[i].elems);
        CHECK_EQ_INT(info->block_bytes, ggml_types[i].bytes);
    }
}

TEST(table_matches_block_structs) {
    for (size_t i = 0; i < sizeof block_structs / sizeof block_structs[0]; i++) {
        const qw_qtype_info *info = qw_qtype_get(block_structs[i].type);
        CHECK_EQ_INT(info->block_bytes, block_structs[i].size);
        CHECK_EQ_INT(info->block_elems, block_structs[i].elems);
    }
    /* Every type with a kernel has a struct in the list above. */
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        if (!info->dequantize && !info->quantize) continue;
        bool found = false;
        for (size_t i = 0; i < sizeof block_structs / sizeof block_structs[0]; i++) {
            found = found || block_structs[i].type == (qw_qtype)t;
        }
        if (!found) fprintf(stderr, "%s has kernels but no block struct here\n", info->name);
        CHECK(found);
    }
}

TEST(lookup_round_trips) {
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        qw_qtype found = QW_QTYPE_COUNT;
        CHECK(qw_qtype_from_name(info->name, &found));
        CHECK_EQ_INT(found, t);

        char upper[32];
        snprintf(upper, sizeof upper, "%s", info->name);
        for (char *p = upper; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        found = QW_QTYPE_COUNT;
        CHECK(qw_qtype_from_name(upper, &found));
        CHECK_EQ_INT(found, t);

        found = QW_QTYPE_COUNT;
        CHECK(qw_qtype_from_gguf_id(info->gguf_id, &found));
        CHECK_EQ_INT(found, t);
    }
    qw_qtype t = QW_QTYPE_F32;
    static const char *bad_names[] = {"", "q4", "q4_k_m", "Q4_K_M", "f8", "q4_0 ", "iq4"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        CHECK(!qw_qtype_from_name(bad_names[i], &t));
    }
    /* Removed ids (4, 5, 31-33, 36-38) and ids past the end are not types. */
    static const uint32_t bad_ids[] = {4, 5, 31, 32, 33, 36, 37, 38, 43, 255, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        CHECK(!qw_qtype_from_gguf_id(bad_ids[i], &t));
    }
}

TEST(row_bytes) {
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        const int64_t k = info->block_elems;
        CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, 0), 0);
        CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, k), info->block_bytes);
        CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, 7 * k), 7 * info->block_bytes);
        CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, k << 40), (uint64_t)info->block_bytes << 40);
        CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, -k), 0);
        if (k > 1) {
            CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, k + 1), 0);
            CHECK_EQ_INT(qw_qtype_row_bytes((qw_qtype)t, k - 1), 0);
        }
    }
    CHECK_EQ_INT(qw_qtype_row_bytes(QW_QTYPE_COUNT, 32), 0);
    CHECK_EQ_INT(qw_qtype_row_bytes(QW_QTYPE_Q4_K, 4096), 16 * 144);
}

/* ---- fp16 / bf16 ---------------------------------------------------------------------------- */

static float f32_of(uint32_t bits) { return qw_bits_f32(bits); }

TEST(fp16_from_fp32_edges) {
    static const struct {
        uint32_t in; /* fp32 bits */
        uint16_t out;
    } cases[] = {
        {0x00000000u, 0x0000}, /* +0 */
        {0x80000000u, 0x8000}, /* -0 keeps its sign */
        {0x3f800000u, 0x3c00}, /* 1 */
        {0xc0000000u, 0xc000}, /* -2 */
        {0x477fe000u, 0x7bff}, /* 65504, the largest half */
        {0x477fefffu, 0x7bff}, /* just below 65520 rounds down */
        {0x477ff000u, 0x7c00}, /* 65520 is the tie with 65536: even is inf */
        {0x47800000u, 0x7c00}, /* 65536 overflows */
        {0x7f7fffffu, 0x7c00}, /* FLT_MAX */
        {0xff7fffffu, 0xfc00},
        {0x7f800000u, 0x7c00}, /* inf */
        {0xff800000u, 0xfc00},
        {0x38800000u, 0x0400}, /* 2^-14, the smallest normal */
        {0x387fc000u, 0x03ff}, /* 1023 * 2^-24, the largest subnormal */
        {0x387fe000u, 0x0400}, /* 1023.5 * 2^-24: tie, 1024 is even */
        {0x33800000u, 0x0001}, /* 2^-24, the smallest subnormal */
        {0x33000000u, 0x0000}, /* 2^-25: tie between 0 and 2^-24, 0 is even */
        {0x33000001u, 0x0001}, /* just above the tie */
        {0x33c00000u, 0x0002}, /* 3 * 2^-25: tie between 1 and 2 ulps, 2 is even */
        {0x34200000u, 0x0002}, /* 2.5 * 2^-24: tie, even is 2 */
        {0x32ffffffu, 0x0000}, /* below the tie */
        {0x00000001u, 0x0000}, /* fp32 subnormal */
        {0x80000001u, 0x8000},
        {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie between 1 and 1 + 2^-10, even */
        {0x3f803000u, 0x3c02}, /* 1 + 3 * 2^-11: tie, even is 1 + 2^-9 */
        {0x3f801001u, 0x3c01}, /* just above a tie */
        {0x3f802fffu, 0x3c01}, /* just below a tie */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint16_t got = qw_fp32_to_fp16(f32_of(cases[i].in));
        if (got != cases[i].out) {
            fprintf(stderr, "fp16(0x%08x) = 0x%04x, want 0x%04x\n", cases[i].in, got,
                    cases[i].out);
            CHECK(0);
        }
    }
    /* NaN stays NaN (exponent all ones, mantissa not zero), sign kept, quiet bit set. */
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fffffffu,
                                    0xff800001u, 0x7fa00000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        const uint16_t h = qw_fp32_to_fp16(f32_of(nans[i]));
        CHECK((h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0);
        CHECK((h & 0x0200) != 0);
        CHECK_EQ_INT(h >> 15, nans[i] >> 31);
    }
}

TEST(fp16_all_patterns_round_trip) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = qw_fp16_to_fp32((uint16_t)h);
        const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0;
        if (is_nan) {
            CHECK(isnan(f));
            continue;
        }
        const uint16_t back = qw_fp32_to_fp16(f);
        if (back != h) {
            fprintf(stderr, "fp16 0x%04x -> %g -> 0x%04x\n", h, (double)f, back);
            CHECK(0);
            break;
        }
    }
    /* Decoded values are exact: subnormals are multiples of 2^-24. */
    CHECK(qw_fp16_to_fp32(0x0001) == 0x1.0p-24f);
    CHECK(qw_fp16_to_fp32(0x03ff) == 1023 * 0x1.0p-24f);
    CHECK(qw_fp16_to_fp32(0x8001) == -0x1.0p-24f);
    CHECK(qw_fp16_to_fp32(0x0400) == 0x1.0p-14f);
    CHECK(qw_fp16_to_fp32(0x7bff) == 65504.0f);
    CHECK(isinf(qw_fp16_to_fp32(0x7c00)) && qw_fp16_to_fp32(0x7c00) > 0);
    CHECK(isinf(qw_fp16_to_fp32(0xfc00)) && qw_fp16_to_fp32(0xfc00) < 0);
    CHECK(signbit(qw_fp16_to_fp32(0x8000)) && qw_fp16_to_fp32(0x8000) == 0.0f);
}

/* The magnitude a half's low 15 bits stand for when rounding: 0x7c00 (inf) rounds like 65536. */
static double half_magnitude(uint32_t code) {
    return code == 0x7c00 ? 65536.0 : (double)qw_fp16_to_fp32((uint16_t)code);
}

TEST(fp16_matches_exact_rounding) {
    /* Against the definition: no other half is closer, and at a tie the mantissa is even.
     * Double holds every half and every fp32 value exactly. Random fp32 bit patterns. */
    rng_state = 42;
    for (int i = 0; i < 300000; i++) {
        const uint32_t bits = (uint32_t)rng_next() >> (i % 9); /* many small exponents too */
        const double a = fabs((double)f32_of(bits));
        if (isnan(a) || a >= 65520.0) continue;
        const uint32_t c = qw_fp32_to_fp16(f32_of(bits)) & 0x7fff;
        const double err = fabs(half_magnitude(c) - a);
        const double err_down = c > 0 ? fabs(half_magnitude(c - 1) - a) : INFINITY;
        const double err_up = fabs(half_magnitude(c + 1) - a);
        bool ok = err <= err_down && err <= err_up;
        if (err == err_down || err == err_up) ok = ok && (c & 1) == 0;
        if (!ok) {
            fprintf(stderr, "fp16(0x%08x) = 0x%04x is not the nearest even half\n", bits, c);
            CHECK(0);
            break;
        }
    }
}

TEST(bf16_edges) {
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x80000000u, 0x8000}, /* -0 */
        {0x3f808000u, 0x3f80}, /* tie, even stays */
        {0x3f818000u, 0x3f82}, /* tie, rounds up to even */
        {0x3f808001u, 0x3f81}, /* above the tie */
        {0x3f807fffu, 0x3f80}, /* below the tie */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x7f7f7fffu, 0x7f7f}, /* the largest that does not */
        {0x7f800000u, 0x7f80}, /* inf */
        {0xff800000u, 0xff80},
        {0x00008000u, 0x0000}, /* fp32 subnormal tie: kept, not flushed, rounds to even 0 */
        {0x00018000u, 0x0002}, /* subnormal tie rounds up to even */
        {0x00010000u, 0x0001}, /* subnormal kept exactly */
        {0x807fffffu, 0x8080}, /* the largest subnormal rounds into the normals */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint16_t got = qw_fp32_to_bf16(f32_of(cases[i].in));
        if (got != cases[i].out) {
            fprintf(stderr, "bf16(0x%08x) = 0x%04x, want 0x%04x\n", cases[i].in, got,
                    cases[i].out);
            CHECK(0);
        }
    }
    /* NaNs are quieted (bit 6 of the bf16) and keep their sign and top payload bits. */
    CHECK_EQ_INT(qw_fp32_to_bf16(f32_of(0x7f800001u)), 0x7fc0);
    CHECK_EQ_INT(qw_fp32_to_bf16(f32_of(0xff810000u)), 0xffc1);
    CHECK_EQ_INT(qw_fp32_to_bf16(f32_of(0x7fc00000u)), 0x7fc0);
    CHECK_EQ_INT(qw_fp32_to_bf16(f32_of(0x7fffffffu)), 0x7fff); /* no carry into the sign */
    /* bf16 -> fp32 is exact for every pattern, and back again for all non-NaNs. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = qw_bf16_to_fp32((uint16_t)h);
        CHECK_EQ_INT(qw_f32_bits(f), h << 16);
        if (!isnan(f)) CHECK_EQ_INT(qw_fp32_to_bf16(f), h);
    }
}

TEST(float_row_kernels_match_scalar_conversions) {
    enum { N = 1000 };
    float x[N], y[N];
    uint16_t h[N];
    fill_gauss(x, N, 7);
    for (int i = 0; i < N; i++) x[i] *= powf(10.0f, (float)(i % 13) - 8.0f);
    qw_quantize_fn q16 = qw_qtype_get(QW_QTYPE_F16)->quantize;
    qw_dequantize_fn d16 = qw_qtype_get(QW_QTYPE_F16)->dequantize;
    q16(x, h, N, NULL);
    d16(h, y, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(h[i], qw_fp32_to_fp16(x[i]));
        CHECK(qw_f32_bits(y[i]) == qw_f32_bits(qw_fp16_to_fp32(h[i])));
    }
    qw_qtype_get(QW_QTYPE_BF16)->quantize(x, h, N, NULL);
    qw_qtype_get(QW_QTYPE_BF16)->dequantize(h, y, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(h[i], qw_fp32_to_bf16(x[i]));
        CHECK(qw_f32_bits(y[i]) == (uint32_t)h[i] << 16);
    }
}

/* ---- block layouts: an independent encoder per type ---------------------------------------- */

/* Each check below packs chosen integer levels and scales into a block following the layout in
 * blocks.h / research/gguf.md §2 (written independently of the kernels), decodes it through the
 * table, and compares every element with the value the format defines. Scales are simple fp16
 * values so that every expected value is exact in fp32. */

static int n_mismatch;

static void expect_row(qw_qtype type, const void *block, const double *want, int n) {
    float got[512];
    qw_qtype_get(type)->dequantize(block, got, n);
    for (int i = 0; i < n; i++) {
        if ((double)got[i] != want[i]) {
            if (n_mismatch++ < 5) {
                fprintf(stderr, "%s element %d: got %.9g, want %.9g\n", qw_qtype_name(type), i,
                        (double)got[i], want[i]);
            }
            CHECK(0);
        }
    }
}

static int rnd(int n) { return (int)(rng_next() % (uint64_t)n); }

TEST(layout_legacy_blocks) {
    rng_state = 101;
    double want[32];
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = rnd(32);

    qw_block_q4_1 b41 = {.d = 0x3800 /* 0.5 */, .m = 0xbc00 /* -1 */};
    for (int j = 0; j < 16; j++) b41.qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
    for (int j = 0; j < 32; j++) want[j] = 0.5 * (q[j] & 15) - 1.0;
    expect_row(QW_QTYPE_Q4_1, &b41, want, 32);

    qw_block_q5_0 b50 = {.d = 0x3400 /* 0.25 */};
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) b50.qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
    for (int j = 0; j < 32; j++) qh |= (uint32_t)(q[j] >> 4) << j;
    memcpy(b50.qh, &qh, 4);
    for (int j = 0; j < 32; j++) want[j] = 0.25 * (q[j] - 16);
    expect_row(QW_QTYPE_Q5_0, &b50, want, 32);

    qw_block_q5_1 b51 = {.d = 0x3400, .m = 0x4000 /* 2 */};
    memcpy(b51.qh, &qh, 4);
    memcpy(b51.qs, b50.qs, 16);
    for (int j = 0; j < 32; j++) want[j] = 0.25 * q[j] + 2.0;
    expect_row(QW_QTYPE_Q5_1, &b51, want, 32);

    qw_block_q8_1 b81 = {.d = 0xb800 /* -0.5 */, .s = 0x7bff /* ignored */};
    for (int j = 0; j < 32; j++) b81.qs[j] = (int8_t)(rnd(256) - 128);
    for (int j = 0; j < 32; j++) want[j] = -0.5 * b81.qs[j];
    expect_row(QW_QTYPE_Q8_1, &b81, want, 32);
}

TEST(layout_q2_K) {
    rng_state = 102;
    qw_block_q2_K b = {.d = 0x3800 /* 0.5 */, .dmin = 0x3000 /* 0.125 */};
    int q[256], sc[16], m[16];
    double want[256];
    for (int j = 0; j < 16; j++) {
        sc[j] = rnd(16);
        m[j] = rnd(16);
        b.scales[j] = (uint8_t)(sc[j] | m[j] << 4);
    }
    for (int e = 0; e < 256; e++) q[e] = rnd(4);
    for (int c = 0; c < 2; c++) { /* qs[32c + l] = q[128c + l + 32k] << 2k */
        for (int l = 0; l < 32; l++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v |= q[128 * c + l + 32 * k] << (2 * k);
            b.qs[32 * c + l] = (uint8_t)v;
        }
    }
    for (int e = 0; e < 256; e++) want[e] = 0.5 * sc[e / 16] * q[e] - 0.125 * m[e / 16];
    expect_row(QW_QTYPE_Q2_K, &b, want, 256);
}

TEST(layout_q3_K) {
    rng_state = 103;
    qw_block_q3_K b = {.d = 0xb400 /* -0.25 */};
    int q[256], ls[16];
    double want[256];
    for (int j = 0; j < 16; j++) {
        ls[j] = rnd(64);
        if (j < 8) {
            b.scales[j] |= (uint8_t)(ls[j] & 15);
        } else {
            b.scales[j - 8] |= (uint8_t)((ls[j] & 15) << 4);
        }
        b.scales[8 + j % 4] |= (uint8_t)((ls[j] >> 4) << (2 * (j / 4)));
    }
    for (int e = 0; e < 256; e++) q[e] = rnd(8); /* level q - 4 */
    for (int e = 0; e < 256; e++) {
        if (q[e] > 3) b.hmask[e % 32] |= (uint8_t)(1 << (e / 32));
    }
    for (int c = 0; c < 2; c++) {
        for (int l = 0; l < 32; l++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v |= (q[128 * c + l + 32 * k] & 3) << (2 * k);
            b.qs[32 * c + l] = (uint8_t)v;
        }
    }
    for (int e = 0; e < 256; e++) want[e] = -0.25 * (ls[e / 16] - 32) * (q[e] - 4);
    expect_row(QW_QTYPE_Q3_K, &b, want, 256);
}

/* Packs eight 6-bit scales and mins the q4_K/q5_K way. */
static void pack_k4_scales(uint8_t s[12], const int *sc, const int *m) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = (uint8_t)sc[j];
            s[j + 4] = (uint8_t)m[j];
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 15) | (m[j] & 15) << 4);
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
}

TEST(layout_q4_K_q5_K) {
    rng_state = 104;
    int q[256], sc[8], m[8];
    double want[256];
    for (int j = 0; j < 8; j++) {
        sc[j] = rnd(64);
        m[j] = rnd(64);
    }
    for (int e = 0; e < 256; e++) q[e] = rnd(32);

    qw_block_q4_K b4 = {.d = 0x3400 /* 0.25 */, .dmin = 0x3800 /* 0.5 */};
    pack_k4_scales(b4.scales, sc, m);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            b4.qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 15) | (q[64 * c + 32 + l] & 15) << 4);
        }
    }
    for (int e = 0; e < 256; e++) want[e] = 0.25 * sc[e / 32] * (q[e] & 15) - 0.5 * m[e / 32];
    expect_row(QW_QTYPE_Q4_K, &b4, want, 256);

    qw_block_q5_K b5 = {.d = 0x3400, .dmin = 0x3800};
    pack_k4_scales(b5.scales, sc, m);
    memcpy(b5.qs, b4.qs, sizeof b5.qs);
    for (int c = 0; c < 4; c++) { /* qh[l] bit 2c: q[64c + l]; bit 2c + 1: q[64c + 32 + l] */
        for (int l = 0; l < 32; l++) {
            b5.qh[l] |= (uint8_t)((q[64 * c + l] >> 4) << (2 * c));
            b5.qh[l] |= (uint8_t)((q[64 * c + 32 + l] >> 4) << (2 * c + 1));
        }
    }
    for (int e = 0; e < 256; e++) want[e] = 0.25 * sc[e / 32] * q[e] - 0.5 * m[e / 32];
    expect_row(QW_QTYPE_Q5_K, &b5, want, 256);
}

/* Packs 256 six-bit levels the q6_K way. */
static void pack_q6_K(qw_block_q6_K *b, const int *q) {
    for (int h = 0; h < 2; h++) {
        const int *p = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            b->ql[64 * h + l] = (uint8_t)((p[l] & 15) | (p[l + 64] & 15) << 4);
            b->ql[64 * h + l + 32] = (uint8_t)((p[l + 32] & 15) | (p[l + 96] & 15) << 4);
            int v = 0;
            for (int k = 0; k < 4; k++) v |= (p[l + 32 * k] >> 4) << (2 * k);
            b->qh[32 * h + l] = (uint8_t)v;
        }
    }
}

TEST(layout_q6_K_q8_K) {
    rng_state = 105;
    int q[256];
    double want[256];
    qw_block_q6_K b = {.d = 0x3c00 /* 1 */};
    for (int j = 0; j < 16; j++) b.scales[j] = (int8_t)(rnd(256) - 128);
    for (int e = 0; e < 256; e++) q[e] = rnd(64);
    pack_q6_K(&b, q);
    for (int e = 0; e < 256; e++) want[e] = (double)b.scales[e / 16] * (q[e] - 32);
    expect_row(QW_QTYPE_Q6_K, &b, want, 256);

    qw_block_q8_K b8 = {.d = -0.375f};
    for (int e = 0; e < 256; e++) b8.qs[e] = (int8_t)(rnd(256) - 128);
    for (int e = 0; e < 256; e++) want[e] = -0.375 * b8.qs[e];
    expect_row(QW_QTYPE_Q8_K, &b8, want, 256);
}

static const int iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

TEST(layout_iq4) {
    rng_state = 106;
    int q[256], ls[8];
    double want[256];
    qw_block_iq4_nl bn = {.d = 0x3000 /* 0.125 */};
    for (int j = 0; j < 32; j++) q[j] = rnd(16);
    for (int j = 0; j < 16; j++) bn.qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    for (int j = 0; j < 32; j++) want[j] = 0.125 * iq4nl_levels[q[j]];
    expect_row(QW_QTYPE_IQ4_NL, &bn, want, 32);

    qw_block_iq4_xs bx = {.d = 0x3800 /* 0.5 */};
    for (int j = 0; j < 8; j++) {
        ls[j] = rnd(64);
        bx.scales_l[j / 2] |= (uint8_t)((ls[j] & 15) << (4 * (j % 2)));
        bx.scales_h |= (uint16_t)((ls[j] >> 4) << (2 * j));
    }
    for (int e = 0; e < 256; e++) q[e] = rnd(16);
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 16; l++) {
            bx.qs[16 * j + l] = (uint8_t)(q[32 * j + l] | q[32 * j + l + 16] << 4);
        }
    }
    for (int e = 0; e < 256; e++) want[e] = 0.5 * (ls[e / 32] - 32) * iq4nl_levels[q[e]];
    expect_row(QW_QTYPE_IQ4_XS, &bx, want, 256);
}

/* Five (or four, then a zero) trits as the fraction of 256 that tq1_0 stores: ceil(v*256/243). */
static uint8_t pack_trits(const int *t, int count) {
    int v = 0;
    for (int i = 0; i < count; i++) v = v * 3 + t[i];
    for (int i = count; i < 5; i++) v *= 3;
    return (uint8_t)((v * 256 + 242) / 243);
}

TEST(layout_ternary) {
    rng_state = 107;
    int t[256];
    double want[256];
    for (int e = 0; e < 256; e++) t[e] = rnd(3);

    /* tq1_0: qs[m] (m < 32) holds elements m + 32n, n = 0..4; qs[32 + m] (m < 16) holds
     * 160 + m + 16n; qh[j] holds 240 + j + 4n, n = 0..3. */
    qw_block_tq1_0 b1 = {.d = 0x3c00};
    int tr[5];
    for (int m = 0; m < 32; m++) {
        for (int n = 0; n < 5; n++) tr[n] = t[m + 32 * n];
        b1.qs[m] = pack_trits(tr, 5);
    }
    for (int m = 0; m < 16; m++) {
        for (int n = 0; n < 5; n++) tr[n] = t[160 + m + 16 * n];
        b1.qs[32 + m] = pack_trits(tr, 5);
    }
    for (int j = 0; j < 4; j++) {
        for (int n = 0; n < 4; n++) tr[n] = t[240 + j + 4 * n];
        b1.qh[j] = pack_trits(tr, 4);
    }
    for (int e = 0; e < 256; e++) want[e] = t[e] - 1;
    expect_row(QW_QTYPE_TQ1_0, &b1, want, 256);

    qw_block_tq2_0 b2 = {.d = 0xc000 /* -2 */};
    for (int c = 0; c < 2; c++) {
        for (int m = 0; m < 32; m++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v |= t[128 * c + 32 * k + m] << (2 * k);
            b2.qs[32 * c + m] = (uint8_t)v;
        }
    }
    for (int e = 0; e < 256; e++) want[e] = -2.0 * (t[e] - 1);
    expect_row(QW_QTYPE_TQ2_0, &b2, want, 256);
}

static const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6};

TEST(layout_fp4) {
    rng_state = 108;
    int q[64];
    double want[64];
    for (int j = 0; j < 64; j++) q[j] = rnd(16);

    /* mxfp4: E8M0 scale 2^(e - 127) */
    static const uint8_t exps[] = {127, 130, 100, 200, 1, 0};
    for (size_t i = 0; i < sizeof exps; i++) {
        qw_block_mxfp4 b = {.e = exps[i]};
        for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
        for (int j = 0; j < 32; j++) want[j] = e2m1[q[j]] * ldexp(1.0, exps[i] - 127);
        expect_row(QW_QTYPE_MXFP4, &b, want, 32);
    }

    /* nvfp4: four unsigned E4M3 scales (bias 7); 0x00 and 0x7f decode as zero */
    static const struct {
        uint8_t code;
        double value;
    } ue4m3[] = {{0x38, 1.0}, {0x3c, 1.5}, {0x01, 0x1p-9}, {0x07, 7 * 0x1p-9}, {0x08, 0x1p-6},
                 {0x7e, 448.0}, {0x00, 0.0}, {0x7f, 0.0}, {0x50, 8.0}};
    for (size_t i = 0; i + 3 < sizeof ue4m3 / sizeof ue4m3[0]; i++) {
        qw_block_nvfp4 b;
        for (int s = 0; s < 4; s++) b.d[s] = ue4m3[i + (size_t)s].code;
        for (int s = 0; s < 4; s++) {
            for (int j = 0; j < 8; j++) {
                b.qs[8 * s + j] = (uint8_t)(q[16 * s + j] | q[16 * s + j + 8] << 4);
            }
        }
        for (int e = 0; e < 64; e++) want[e] = e2m1[q[e]] * ue4m3[i + (size_t)(e / 16)].value;
        expect_row(QW_QTYPE_NVFP4, &b, want, 64);
    }
}

TEST(layout_q1_0_q2_0) {
    rng_state = 109;
    double want[128];
    qw_block_q1_0 b1 = {.d = 0x3a00 /* 0.75 */};
    for (int j = 0; j < 128; j++) {
        const int bit = rnd(2);
        b1.qs[j / 8] |= (uint8_t)(bit << (j % 8));
        want[j] = bit ? 0.75 : -0.75;
    }
    expect_row(QW_QTYPE_Q1_0, &b1, want, 128);

    qw_block_q2_0 b2 = {.d = 0x3a00};
    for (int j = 0; j < 64; j++) {
        const int q = rnd(4);
        b2.qs[j / 4] |= (uint8_t)(q << (2 * (j % 4)));
        want[j] = 0.75 * (q - 1);
    }
    expect_row(QW_QTYPE_Q2_0, &b2, want, 64);
}

/* ---- round trips ---------------------------------------------------------------------------- */

/* llama.cpp's test-quantize-fns: x_i = 0.1 + 2 cos(i) for 4096 values, and its "total
 * quantization error" sqrt(sum (x - y)^2) / n (an RMSE scaled by 1/sqrt(n)), which must stay
 * below MAX_QUANTIZATION_TOTAL_ERROR = 0.002 for every type encoded here. */
static double llama_total_error(const qw_qtype_info *info, const float *x, float *y, void *q,
                                int n) {
    info->quantize(x, q, n, NULL);
    info->dequantize(q, y, n);
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    return sqrt(sum) / n;
}

/* The RMSE of dequantize(quantize(x)) on N(0, 1) data (64 x 4096 values, seed 1). The bounds
 * come from the uniform-quantizer model: rounding to a grid of step s leaves an error uniform
 * over one step, of RMSE s / sqrt(12), averaged over the steps a Gaussian input gets, i.e.
 * sqrt(E[s^2] / 12) (the expectations below by Monte Carlo over 2e5 blocks; amax_k, max_k and
 * min_k are the largest |x|, the largest and the smallest of k Gaussians):
 * - f16 / bf16: s = 2^(e - 10) / 2^(e - 7) for x in [2^e, 2^(e+1)): model 2.08e-4 / 1.66e-3;
 * - q8_0: s = amax_32 / 127: model 5.43e-3;
 * - q4_0: s = amax_32 / 8 (the one-sided clamp at +7 adds a little, the exact max removes a
 *   little): model 8.62e-2;  q5_0: s = amax_32 / 16: model 4.31e-2;
 * - q4_1 / q5_1: the min-max grid, s = (max_32 - min_32) / 15 or / 31: model 8.07e-2 / 3.91e-2;
 * - q2_K: s = (max_16 - min(min_16, 0)) / 3: model 3.47e-1;  q3_K: s = amax_16 / 4 (levels
 *   -4..3, the largest magnitude on the -4 end): model 1.54e-1;
 * - q4_K / q5_K: s = (max_32 - min(min_32, 0)) / 15 or / 31: model 8.07e-2 / 3.91e-2;
 * - q6_K: s = amax_16 / 32: model 1.92e-2.
 * The k-quants fit scale and offset by least squares (and lose a little to their 4/6-bit scale
 * codes), so they must beat the plain grid: their bound is the model itself. The other types
 * round on the grid the model describes; their bound is the model plus 10%. Either way losing a
 * bit of precision anywhere fails. f32 is exact.
 * Measured (this file, x86-64): f16 2.07e-4, bf16 1.66e-3, q8_0 5.35e-3, q4_0 8.60e-2,
 * q4_1 7.80e-2, q5_0 4.26e-2, q5_1 3.78e-2, q2_K 2.96e-1, q3_K 1.51e-1, q4_K 7.12e-2,
 * q5_K 3.61e-2, q6_K 1.77e-2.
 * llama.cpp's tests/test-quantize-fns.cpp uses a looser, differently scaled measure (checked
 * separately below with its own data and thresholds). */
static const struct {
    qw_qtype type;
    double max_rmse;
} rmse_bounds[] = {
    {QW_QTYPE_F32, 0.0},      {QW_QTYPE_F16, 2.3e-4},   {QW_QTYPE_BF16, 1.85e-3},
    {QW_QTYPE_Q8_0, 6.0e-3},  {QW_QTYPE_Q4_0, 0.095},   {QW_QTYPE_Q6_K, 0.0192},
    {QW_QTYPE_Q4_1, 0.0888},  {QW_QTYPE_Q5_0, 0.0474},  {QW_QTYPE_Q5_1, 0.0430},
    {QW_QTYPE_Q2_K, 0.347},   {QW_QTYPE_Q3_K, 0.1539},  {QW_QTYPE_Q4_K, 0.0807},
    {QW_QTYPE_Q5_K, 0.0391},
    /* grid types: measured RMSE + 10% (test_iq_quant.c derives and checks them in detail) */
    {QW_QTYPE_IQ4_NL, 0.0836}, {QW_QTYPE_IQ4_XS, 0.0843}, {QW_QTYPE_IQ3_XXS, 0.2336},
    {QW_QTYPE_IQ3_S, 0.1826},
};

/* test-quantize-fns.cpp's thresholds: MAX_QUANTIZATION_TOTAL_ERROR_2BITS for q2_K, _3BITS for
 * q3_K, MAX_QUANTIZATION_TOTAL_ERROR for the rest. */
static double llama_total_error_bound(qw_qtype t) {
    return t == QW_QTYPE_Q2_K    ? 0.0075
           : t == QW_QTYPE_Q3_K  ? 0.0040
           : t == QW_QTYPE_IQ3_S ? 0.0040 /* the _3BITS limit, as llama.cpp applies to iq3 */
           : t == QW_QTYPE_IQ3_XXS ? 0.0050
                                   : 0.002;
}

static double rmse_bound(qw_qtype t) {
    for (size_t i = 0; i < sizeof rmse_bounds / sizeof rmse_bounds[0]; i++) {
        if (rmse_bounds[i].type == t) return rmse_bounds[i].max_rmse;
    }
    return -1.0;
}

TEST(round_trip_error) {
    enum { ROWS = 64, N = 4096 };
    float *x = malloc(sizeof(float) * ROWS * N);
    float *y = malloc(sizeof(float) * ROWS * N);
    float *imp = malloc(sizeof(float) * N);
    void *q = malloc((size_t)ROWS * N * 8);
    CHECK(x && y && q && imp);
    if (!x || !y || !q || !imp) return;
    fill_gauss(x, (int64_t)ROWS * N, 1);
    static float lx[N];
    for (int i = 0; i < N; i++) lx[i] = 0.1f + 2.0f * cosf((float)i);
    rng_state = 3;
    for (int i = 0; i < N; i++) imp[i] = (float)(0.1 + 10.0 * rng_uniform());

    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        if (!info->quantize || !info->dequantize) continue;
        const double bound = rmse_bound((qw_qtype)t);
        if (bound < 0) {
            fprintf(stderr, "%s: no round-trip bound; add one to rmse_bounds\n", info->name);
            CHECK(0);
            continue;
        }
        const uint64_t row_bytes = qw_qtype_row_bytes((qw_qtype)t, N);
        double sum = 0.0;
        for (int r = 0; r < ROWS; r++) {
            info->quantize(x + (size_t)r * N, (uint8_t *)q + r * row_bytes, N, NULL);
            info->dequantize((uint8_t *)q + r * row_bytes, y + (size_t)r * N, N);
        }
        for (size_t i = 0; i < (size_t)ROWS * N; i++) {
            sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        }
        const double rmse = sqrt(sum / ((double)ROWS * N));
        printf("     %-5s gaussian rmse %.3e (bound %.3e)\n", info->name, rmse, bound);
        CHECK(rmse <= bound);

        /* With importance weights the error stays within the same bound (the weights move
         * error between columns; they do not make the fit worse overall by much). */
        sum = 0.0;
        for (int r = 0; r < ROWS; r++) {
            info->quantize(x + (size_t)r * N, q, N, imp);
            info->dequantize(q, y, N);
            for (int i = 0; i < N; i++) {
                const double e = (double)x[(size_t)r * N + i] - y[i];
                sum += e * e;
            }
        }
        const double rmse_imp = sqrt(sum / ((double)ROWS * N));
        printf("     %-5s gaussian rmse with importance %.3e\n", info->name, rmse_imp);
        CHECK(rmse_imp <= bound * 1.1);

        /* llama.cpp's own check, on its own data. */
        const double total = llama_total_error(info, lx, y, q, N);
        const double total_bound = llama_total_error_bound((qw_qtype)t);
        printf("     %-5s llama.cpp total error %.3e (bound %.1e)\n", info->name, total,
               total_bound);
        CHECK(total < total_bound);
    }
    free(x);
    free(y);
    free(imp);
    free(q);
}

/* The types whose encoders take a different, weighted path when given importance (ggml's
 * quantize_row_*_impl). The others (floats, q8_0) ignore it, as ggml does. */
static const qw_qtype weighted_types[] = {QW_QTYPE_Q4_0, QW_QTYPE_Q4_1, QW_QTYPE_Q5_0,
                                          QW_QTYPE_Q5_1, QW_QTYPE_Q2_K, QW_QTYPE_Q3_K,
                                          QW_QTYPE_Q4_K, QW_QTYPE_Q5_K, QW_QTYPE_Q6_K};
#define N_WEIGHTED_TYPES (sizeof weighted_types / sizeof weighted_types[0])

/* The legacy 32-element types normalise their importance weights by sigma^2 = sum x^2 / n over
 * the whole row (ggml's quantize_row_q4_0_impl ...; the k-quants use each 256-block), so with
 * importance their bytes depend on the whole row and a call must cover exactly one row. */
static bool importance_is_row_level(qw_qtype t) {
    return t == QW_QTYPE_Q4_0 || t == QW_QTYPE_Q4_1 || t == QW_QTYPE_Q5_0 || t == QW_QTYPE_Q5_1;
}

TEST(importance_steers_error) {
    /* Columns with much larger importance must come out with smaller error than with no
     * importance: the point of passing it. Checked for the reference kernels and for the
     * table in use (SIMD kernels must not drop the importance). */
    enum { ROWS = 32, N = 1024 };
    static float x[ROWS * N], y[N], imp[N];
    static uint8_t q[N * 8];
    fill_gauss(x, ROWS * N, 11);
    for (int i = 0; i < N; i++) imp[i] = i % 4 == 0 ? 100.0f : 1.0f;
    for (size_t k = 0; k < N_WEIGHTED_TYPES; k++) {
        for (int active = 0; active < 2; active++) {
            const qw_qtype_info *info = active ? qw_qtype_get(weighted_types[k])
                                               : qw_qtype_get_reference(weighted_types[k]);
            CHECK(info->quantize != NULL);
            if (!info->quantize) continue;
            double err_plain = 0.0, err_weighted = 0.0;
            for (int r = 0; r < ROWS; r++) {
                info->quantize(x + r * N, q, N, NULL);
                info->dequantize(q, y, N);
                for (int i = 0; i < N; i += 4) err_plain += pow(x[r * N + i] - y[i], 2);
                info->quantize(x + r * N, q, N, imp);
                info->dequantize(q, y, N);
                for (int i = 0; i < N; i += 4) err_weighted += pow(x[r * N + i] - y[i], 2);
            }
            printf("     %-5s %s important-column error: plain %.3e, weighted %.3e\n",
                   info->name, active ? "active   " : "reference", err_plain, err_weighted);
            if (!(err_weighted < 0.9 * err_plain)) {
                fprintf(stderr, "%s (%s kernels): importance does not steer the error\n",
                        info->name, active ? "active" : "reference");
            }
            CHECK(err_weighted < 0.9 * err_plain);
        }
    }
}

TEST(importance_of_ones_is_not_null) {
    /* ggml runs a different algorithm when given weights, even all-ones weights, so an
     * importance vector of ones must not be short-cut to the NULL path (nor the reverse). */
    enum { N = 1024 };
    static float x[N], ones[N];
    static uint8_t q_null[N * 8], q_ones[N * 8];
    fill_gauss(x, N, 21);
    for (int i = 0; i < N; i++) ones[i] = 1.0f;
    for (size_t k = 0; k < N_WEIGHTED_TYPES; k++) {
        const qw_qtype_info *info = qw_qtype_get_reference(weighted_types[k]);
        const size_t bytes = (size_t)qw_qtype_row_bytes(weighted_types[k], N);
        info->quantize(x, q_null, N, NULL);
        info->quantize(x, q_ones, N, ones);
        const bool differ = memcmp(q_null, q_ones, bytes) != 0;
        if (!differ) fprintf(stderr, "%s: importance of ones gives the NULL bytes\n", info->name);
        CHECK(differ);
    }
}

TEST(special_rows) {
    /* All-zero rows encode to blocks that decode to exact zeros, with and without importance; a
     * row with one outlier keeps the outlier close and stays finite everywhere. */
    enum { N = 512 };
    static float x[N], y[N], imp[N];
    static uint8_t q[N * 8];
    rng_state = 6;
    for (int i = 0; i < N; i++) imp[i] = (float)(0.01 + rng_uniform());
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        if (!info->quantize) continue;
        for (int with_imp = 0; with_imp < 2; with_imp++) {
            memset(x, 0, sizeof x);
            memset(q, 0xa5, sizeof q);
            info->quantize(x, q, N, with_imp ? imp : NULL);
            info->dequantize(q, y, N);
            bool zero = true;
            for (int i = 0; i < N; i++) zero = zero && y[i] == 0.0f;
            if (!zero) {
                fprintf(stderr, "%s (importance %d): zero row does not decode to zeros\n",
                        info->name, with_imp);
            }
            CHECK(zero);

            fill_gauss(x, N, 5);
            x[77] = 1000.0f;
            info->quantize(x, q, N, with_imp ? imp : NULL);
            info->dequantize(q, y, N);
            bool finite = true;
            for (int i = 0; i < N; i++) finite = finite && isfinite(y[i]);
            CHECK(finite);
            /* iq3 stores its scale 1.033x larger on purpose (ggml's boost): allow 5% there */
            const bool iq3 = t == QW_QTYPE_IQ3_S || t == QW_QTYPE_IQ3_XXS;
            const double tolerance = 1000.0 * (iq3 ? 0.05 : 0.02);
            if (!(fabs(y[77] - 1000.0) <= tolerance)) {
                fprintf(stderr, "%s (importance %d): outlier 1000 decodes to %g\n", info->name,
                        with_imp, (double)y[77]);
            }
            CHECK_NEAR(y[77], 1000.0, tolerance);
        }
    }
}

TEST(rows_are_independent) {
    /* Quantizing rows one call at a time gives the same bytes as one call over all of them
     * (what lets tensors be split across threads by rows), with and without importance. The
     * exception is the legacy types with importance, whose weights are normalised over the
     * row the call is given (importance_is_row_level): for them a call is one row by contract,
     * and quantizing a row must not depend on what other rows hold, checked separately below. */
    enum { ROWS = 6, N = 768 };
    static float x[ROWS * N], imp[N], imp_tiled[ROWS * N];
    static uint8_t whole[ROWS * N * 8], by_row[ROWS * N * 8];
    fill_gauss(x, ROWS * N, 9);
    for (int i = 0; i < ROWS * N; i++) x[i] *= (float)(1 + i / N); /* rows at different scales */
    rng_state = 4;
    for (int i = 0; i < N; i++) imp[i] = (float)(0.01 + rng_uniform());
    for (int r = 0; r < ROWS; r++) memcpy(imp_tiled + r * N, imp, sizeof imp);

    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        if (!info->quantize) continue;
        const uint64_t row_bytes = qw_qtype_row_bytes((qw_qtype)t, N);
        CHECK(row_bytes > 0);
        for (int with_imp = 0; with_imp < 2; with_imp++) {
            if (with_imp && importance_is_row_level((qw_qtype)t)) continue;
            memset(whole, 0x11, sizeof whole);
            memset(by_row, 0x22, sizeof by_row);
            info->quantize(x, whole, (int64_t)ROWS * N, with_imp ? imp_tiled : NULL);
            for (int r = 0; r < ROWS; r++) {
                info->quantize(x + r * N, by_row + r * row_bytes, N, with_imp ? imp : NULL);
            }
            const bool same = memcmp(whole, by_row, (size_t)(ROWS * row_bytes)) == 0;
            if (!same) fprintf(stderr, "%s (importance %d): rows differ\n", info->name, with_imp);
            CHECK(same);
        }
    }
}

TEST(row_level_importance) {
    /* For q4_0 ... q5_1 with importance, sigma^2 comes from the whole row: the bytes of a block
     * change when the rest of its row changes (ggml does the same, checked against it in
     * test_kernels_vs_ggml.py); and the kernel writes every byte of its row (a dirty buffer
     * gives the same bytes). */
    enum { N = 256 };
    static float x[2 * N], imp[2 * N];
    static uint8_t alone[N * 8], joined[2 * N * 8];
    fill_gauss(x, 2 * N, 13);
    for (int i = N; i < 2 * N; i++) x[i] *= 8.0f; /* a louder second half */
    for (int i = 0; i < 2 * N; i++) imp[i] = 1.0f + (float)(i % 7);
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        if (!importance_is_row_level((qw_qtype)t)) continue;
        const qw_qtype_info *info = qw_qtype_get_reference((qw_qtype)t);
        const size_t half_bytes = (size_t)qw_qtype_row_bytes((qw_qtype)t, N);
        info->quantize(x, alone, N, imp);
        memset(joined, 0x5a, sizeof joined);
        info->quantize(x, joined, 2 * N, imp);
        const bool differ = memcmp(alone, joined, half_bytes) != 0;
        if (!differ) fprintf(stderr, "%s: first half unaffected by the second\n", info->name);
        CHECK(differ);
        memset(joined, 0x5a, sizeof joined);
        info->quantize(x, joined, N, imp);
        CHECK(memcmp(alone, joined, half_bytes) == 0);
    }
}

/* ---- the fitting helpers, on cases small enough to check by hand --------------------------- */

TEST(fit_helpers) {
    /* qw_fit_qx: levels l in [-nmax, nmax - 1] stored as l + nmax; the largest magnitude maps
     * to -nmax. x = (0, 1, 2, ..., 7) * -0.5 with nmax 4: max = -3.5, the grid step is
     * 3.5 / 4 and the exact least-squares scale through the chosen levels comes back. */
    float x[16], w[16];
    int8_t L[16];
    for (int i = 0; i < 8; i++) x[i] = -0.5f * (float)i;
    const float scale = qw_fit_qx(8, 4, x, NULL, L);
    double sxl = 0.0, sll = 0.0;
    for (int i = 0; i < 8; i++) {
        CHECK(L[i] >= 0 && L[i] <= 7);
        const double l = L[i] - 4;
        sxl += (double)x[i] * x[i] * x[i] * l; /* weights x^2 */
        sll += (double)x[i] * x[i] * l * l;
    }
    CHECK_EQ_INT(L[7], 0); /* -3.5 is the largest magnitude: level -4 */
    CHECK_NEAR(scale, sxl / sll, 1e-6);
    CHECK(scale > 0.0f); /* max < 0 flips the grid: negative x on negative levels */

    /* An all-zero (below 1e-15) sub-block: scale 0, levels 0. */
    for (int i = 0; i < 16; i++) x[i] = 1e-16f;
    CHECK(qw_fit_qx(16, 32, x, NULL, L) == 0.0f);
    for (int i = 0; i < 16; i++) CHECK_EQ_INT(L[i], 0);

    /* qw_fit_qkx3 on values already on a grid: x = 0.25 * i - 1 for i = 0..15, nmax 15, equal
     * weights: scale 0.25 and min 1 reproduce them exactly. */
    uint8_t U[32];
    float the_min = -1.0f;
    for (int i = 0; i < 16; i++) {
        x[i] = 0.25f * (float)i - 1.0f;
        w[i] = 1.0f;
    }
    const float s3 = qw_fit_qkx3(16, 15, x, w, U, &the_min);
    CHECK_NEAR(s3, 0.25, 1e-6);
    CHECK_NEAR(the_min, 1.0, 1e-6);
    for (int i = 0; i < 16; i++) CHECK_EQ_INT(U[i], i);

    /* A constant positive sub-block: the offset stays 0 (it may only lower values). */
    for (int i = 0; i < 16; i++) x[i] = 3.0f;
    const float sc = qw_fit_qkx3(16, 15, x, w, U, &the_min);
    CHECK(the_min == 0.0f);
    for (int i = 0; i < 16; i++) CHECK_NEAR(sc * U[i] - the_min, 3.0, 3.0 * 0.05);
    /* A constant negative one is all offset: scale 0, levels 0, min = -x. */
    for (int i = 0; i < 16; i++) x[i] = -2.0f;
    CHECK(qw_fit_qkx3(16, 15, x, w, U, &the_min) == 0.0f);
    CHECK(the_min == 2.0f);
    for (int i = 0; i < 16; i++) CHECK_EQ_INT(U[i], 0);
}

TEST(decoders_are_deterministic_on_any_bytes) {
    /* Every decoder accepts arbitrary bytes (a file is untrusted) and writes exactly n values. */
    enum { N = 1024 };
    static uint8_t raw[N * 8];
    static float y[N + 1];
    rng_state = 12;
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)rng_next();
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        if (!info->dequantize) continue;
        y[N] = 12345.0f;
        info->dequantize(raw, y, N);
        CHECK(y[N] == 12345.0f);
    }
}

/* AWQ's candidate weights: Q(dtype(w0 · s)) / s, column by column, in every scale dtype, equal
 * to the composition of the scheme's own rounding, fake quantization and division. */
TEST(int4_fake_quantize_scaled_row_is_the_composition) {
    enum { N = 128 };
    float w0[N], scale[N], got[N], want[N];
    for (int i = 0; i < N; i++) {
        w0[i] = sinf((float)i * 0.7f + 0.3f) * (i % 17 == 0 ? 4.0f : 0.25f);
        scale[i] = 0.5f + (float)(i % 5) * 0.375f;
    }
    const qw_qtype dtypes[] = {QW_QTYPE_F32, QW_QTYPE_F16, QW_QTYPE_BF16};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        for (int symmetric = 0; symmetric < 2; symmetric++) {
            const qw_int4_scheme s = {32, symmetric != 0, dtypes[d]};
            for (int i = 0; i < N; i++) want[i] = qw_int4_round_dtype(&s, w0[i] * scale[i]);
            qw_int4_fake_quantize_row(&s, want, N);
            for (int i = 0; i < N; i++) want[i] /= scale[i];
            qw_int4_fake_quantize_scaled_row(&s, w0, scale, N, got);
            CHECK(memcmp(got, want, sizeof got) == 0);
            CHECK(got[1] != w0[1]); /* it did quantize */
        }
    }
}

RUN_TESTS(TEST_CASE(table_rows_are_consistent), TEST_CASE(table_matches_ggml),
          TEST_CASE(table_matches_block_structs), TEST_CASE(lookup_round_trips),
          TEST_CASE(row_bytes), TEST_CASE(fp16_from_fp32_edges),
          TEST_CASE(fp16_all_patterns_round_trip), TEST_CASE(fp16_matches_exact_rounding),
          TEST_CASE(bf16_edges), TEST_CASE(float_row_kernels_match_scalar_conversions),
          TEST_CASE(layout_legacy_blocks), TEST_CASE(layout_q2_K), TEST_CASE(layout_q3_K),
          TEST_CASE(layout_q4_K_q5_K), TEST_CASE(layout_q6_K_q8_K), TEST_CASE(layout_iq4),
          TEST_CASE(layout_ternary), TEST_CASE(layout_fp4), TEST_CASE(layout_q1_0_q2_0),
          TEST_CASE(round_trip_error), TEST_CASE(importance_steers_error),
          TEST_CASE(importance_of_ones_is_not_null), TEST_CASE(special_rows),
          TEST_CASE(rows_are_independent), TEST_CASE(row_level_importance),
          TEST_CASE(fit_helpers), TEST_CASE(int4_fake_quantize_scaled_row_is_the_composition),
          TEST_CASE(decoders_are_deterministic_on_any_bytes))
