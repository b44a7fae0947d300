/* test_simd — the SIMD overlay (src/quant/simd.h) against the reference kernels.
 *
 * For every row whose active kernel differs from the reference one, thousands of random rows of
 * many shapes (Gaussian, zeros of both signs, outliers, exact rounding ties, fp32 subnormals,
 * huge values, per-block and per-sub-block magnitude spreads, random bit patterns) must give the
 * same bytes (encoders) or the same float bits (decoders), from unaligned buffers too. The
 * overlay is built with qw_qtype_build_table, so it is tested whatever QWODEL_KERNELS says; the
 * variable itself is tested in a child process (this binary re-run with --child-kernels). On a
 * CPU with no SIMD kernels the comparisons have nothing to compare and pass. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "half.h"
#include "quant.h"
#include "simd.h"
#include "test.h"

/* ---- deterministic random inputs ------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

static int rng_int(int lo, int hi) { /* inclusive */
    return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1));
}

static float rng_gauss(void) {
    double u1 = rng_uniform(), u2 = rng_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static float pow10f_(double e) { return (float)pow(10.0, e); }

enum {
    IN_GAUSS,        /* N(0, 1) */
    IN_GAUSS_SCALED, /* N(0, 1) times one magnitude per row, 1e-8 .. 1e8 */
    IN_ZEROS,        /* +0 and -0 */
    IN_OUTLIERS,     /* Gaussian with a few huge values */
    IN_TIES,         /* halves of small integers, with the block extremes that make them ties */
    IN_SUBNORMAL,    /* fp32 subnormals and the smallest normals */
    IN_HUGE,         /* up to 3e38, and around fp16's overflow threshold */
    IN_BLOCK_MAGS,   /* each 32 elements at their own magnitude, 1e-30 .. 1e30 */
    IN_GROUP_MAGS,   /* each 16 elements at their own magnitude, some below 1e-15 */
    IN_SIGNED_TIES,  /* +a and -a at random places: which comes first decides the sign */
    IN_CONSTANT,
    IN_SPARSE,       /* mostly zeros */
    IN_RANDOM_BITS,  /* any finite fp32 bit pattern */
    IN_COUNT
};

static void fill_input(int kind, float *x, int64_t n) {
    switch (kind) {
    case IN_GAUSS:
        for (int64_t i = 0; i < n; i++) x[i] = rng_gauss();
        break;
    case IN_GAUSS_SCALED: {
        const float m = pow10f_(rng_uniform() * 16 - 8);
        for (int64_t i = 0; i < n; i++) x[i] = rng_gauss() * m;
        break;
    }
    case IN_ZEROS:
        for (int64_t i = 0; i < n; i++) x[i] = (rng_next() & 1) ? -0.0f : 0.0f;
        break;
    case IN_OUTLIERS: {
        static const float big[] = {1e3f, 1e4f, 6e4f, 1e6f, 1e12f, 1e20f, 3e38f};
        for (int64_t i = 0; i < n; i++) x[i] = rng_gauss();
        for (int k = rng_int(1, 4); k > 0 && n > 0; k--) {
            const float v = big[rng_int(0, 6)];
            x[rng_next() % (uint64_t)n] = (rng_next() & 1) ? v : -v;
        }
        break;
    }
    case IN_TIES: {
        /* q8_0: a block holding +-127 has d = 1, so halves are exact ties for roundf; q4_0: a
         * block extreme of +-8 gives id = -+1 and x + 8.5 lands on integers and halves; nearest
         * ties come from the other scales. Powers of two keep everything exact. */
        const int lim = (rng_next() & 1) ? 127 : 8;
        const float p2 = ldexpf(1.0f, rng_int(-6, 6));
        for (int64_t i = 0; i < n; i++) x[i] = (float)rng_int(-2 * lim, 2 * lim) * 0.5f * p2;
        for (int64_t b = 0; b < n; b += 32) x[b + (int64_t)(rng_next() % 32) % (n - b)] =
            ((rng_next() & 1) ? lim : -lim) * p2;
        break;
    }
    case IN_SUBNORMAL:
        for (int64_t i = 0; i < n; i++) {
            const float m = (rng_next() & 1) ? 1e-40f : 1e-38f;
            x[i] = rng_gauss() * m;
        }
        break;
    case IN_HUGE: {
        static const float edge[] = {65504.0f, 65519.99f, 65520.0f, 7e4f, 3e38f, 1e37f, 1e30f};
        for (int64_t i = 0; i < n; i++) {
            x[i] = (rng_next() % 4 == 0) ? edge[rng_int(0, 6)] : rng_gauss() * 1e30f;
            if (rng_next() & 1) x[i] = -x[i];
        }
        break;
    }
    case IN_BLOCK_MAGS:
        for (int64_t b = 0; b < n; b += 32) {
            const float m = pow10f_(rng_uniform() * 60 - 30);
            for (int64_t i = b; i < b + 32 && i < n; i++) x[i] = rng_gauss() * m;
        }
        break;
    case IN_GROUP_MAGS:
        for (int64_t b = 0; b < n; b += 16) {
            const int pick = rng_int(0, 5);
            const float m =
                pick == 0 ? 1e-16f : pick == 1 ? 0.0f : pow10f_(rng_uniform() * 46 - 42);
            for (int64_t i = b; i < b + 16 && i < n; i++) x[i] = rng_gauss() * m;
        }
        break;
    case IN_SIGNED_TIES: {
        const float a = fabsf(rng_gauss()) + 0.5f;
        for (int64_t i = 0; i < n; i++) {
            const int r = rng_int(0, 3);
            x[i] = r == 0 ? a : r == 1 ? -a : rng_gauss() * 0.25f;
        }
        break;
    }
    case IN_CONSTANT: {
        const float c = rng_gauss();
        for (int64_t i = 0; i < n; i++) x[i] = c;
        break;
    }
    case IN_SPARSE:
        for (int64_t i = 0; i < n; i++) x[i] = (rng_next() % 16 == 0) ? rng_gauss() : 0.0f;
        break;
    case IN_RANDOM_BITS:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            do u = (uint32_t)rng_next();
            while ((u & 0x7f800000u) == 0x7f800000u);
            x[i] = qw_bits_f32(u);
        }
        break;
    }
}

/* Random blocks of a type: random bytes, with the fp16 scale of the 18/34-byte blocks drawn from
 * finite fp16 values (zeros, subnormals and normals of both signs). Float types get any bits:
 * their SIMD decoders are exact for inf and NaN too. */
static void fill_blocks(const qw_qtype_info *info, uint8_t *p, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks * info->block_bytes; i++) p[i] = (uint8_t)rng_next();
    if (info->is_float) return;
    int d_offset = -1;
    if (info->type == QW_QTYPE_Q4_0 || info->type == QW_QTYPE_Q8_0) d_offset = 0;
    if (info->type == QW_QTYPE_Q6_K) d_offset = 208;
    if (d_offset < 0) return;
    for (int64_t b = 0; b < n_blocks; b++) {
        uint16_t h = (uint16_t)rng_next();
        if ((h & 0x7c00) == 0x7c00) h &= 0xbfff; /* exponent 31 -> 15 */
        if (rng_next() % 8 == 0) h &= 0x83ff;   /* subnormal or zero */
        memcpy(p + b * info->block_bytes + d_offset, &h, 2);
    }
}

/* ---- the comparisons ------------------------------------------------------------------------ */

static qw_qtype_info simd_table[QW_QTYPE_COUNT];
static const char *simd_isa;

static void build_simd_table(void) {
    if (!simd_isa) simd_isa = qw_qtype_build_table(simd_table, NULL);
}

#define N_ROWS 3000
#define MAX_BLOCKS 6 /* super-blocks per row: the scalar k-quant references are slow under ASan */

/* Compares one row's encoding by both kernels; returns false (and says where) on a difference. */
static bool encode_matches(const qw_qtype_info *ref, const qw_qtype_info *simd, const float *x,
                           int64_t n, const float *importance, const char *label) {
    const size_t bytes = (size_t)qw_qtype_row_bytes(ref->type, n);
    uint8_t *a = malloc(bytes + 2), *b = malloc(bytes + 2);
    memset(a, 0xa5, bytes + 2);
    memset(b, 0x5a, bytes + 2);
    /* an output 2 bytes past a malloc boundary: block structs need only 2-byte alignment */
    ref->quantize(x, a + 2, n, importance);
    simd->quantize(x, b + 2, n, importance);
    bool same = memcmp(a + 2, b + 2, bytes) == 0;
    if (!same) {
        size_t at = 0;
        while (a[2 + at] == b[2 + at]) at++;
        fprintf(stderr, "%s %s n=%lld: bytes differ first at %zu (%02x vs %02x)\n",
                ref->name, label, (long long)n, at, a[2 + at], b[2 + at]);
    }
    free(a);
    free(b);
    return same;
}

static const char *const input_names[IN_COUNT] = {
    "gauss", "gauss-scaled", "zeros", "outliers", "ties", "subnormal", "huge",
    "block-mags", "group-mags", "signed-ties", "constant", "sparse", "random-bits"};

static void check_encoder(qw_qtype t) {
    const qw_qtype_info *ref = qw_qtype_get_reference(t), *simd = &simd_table[t];
    const int64_t blk = ref->block_elems;
    const int max_blocks = blk == 1 ? 600 : blk == 32 ? 64 : MAX_BLOCKS;
    float *buf = malloc(sizeof(float) * (size_t)(max_blocks * blk + 1));
    float *imp = malloc(sizeof(float) * (size_t)(max_blocks * blk));
    int failures = 0;
    rng_state = 0x51dull + (uint64_t)t;
    for (int r = 0; r < N_ROWS && failures < 5; r++) {
        const int kind = r % IN_COUNT;
        const int64_t n = blk * rng_int(1, max_blocks);
        float *x = buf + (r & 1); /* every other row 4 bytes off the allocation's alignment */
        fill_input(kind, x, n);
        if (!encode_matches(ref, simd, x, n, NULL, input_names[kind])) failures++;
        if (!ref->is_float && r % 3 == 0) { /* the importance (imatrix) path */
            const int wkind = rng_int(0, 3);
            for (int64_t i = 0; i < n; i++) {
                imp[i] = wkind == 0   ? (float)(rng_uniform() * 10 + 0.01)
                         : wkind == 1 ? (float)exp(2.0 * rng_gauss())
                         : wkind == 2 ? (float)(rng_uniform() * 1e-20)
                                      : (rng_next() % 4 ? 1.0f : 0.0f);
            }
            if (!encode_matches(ref, simd, x, n, imp, "importance")) failures++;
        }
    }
    CHECK_EQ_INT(failures, 0);
    free(buf);
    free(imp);
}

static void check_decoder(qw_qtype t) {
    const qw_qtype_info *ref = qw_qtype_get_reference(t), *simd = &simd_table[t];
    const int64_t blk = ref->block_elems;
    const int max_blocks = blk == 1 ? 600 : blk == 32 ? 64 : MAX_BLOCKS;
    uint8_t *src = malloc((size_t)max_blocks * ref->block_bytes + 2);
    float *a = malloc(sizeof(float) * (size_t)(max_blocks * blk + 1));
    float *b = malloc(sizeof(float) * (size_t)(max_blocks * blk + 1));
    int failures = 0;
    rng_state = 0xdec0deull + (uint64_t)t;
    for (int r = 0; r < N_ROWS && failures < 5; r++) {
        const int64_t n_blocks = rng_int(1, max_blocks);
        const int64_t n = n_blocks * blk;
        uint8_t *p = src + 2 * (r & 1); /* 2-byte aligned, not 4 */
        fill_blocks(ref, p, n_blocks);
        float *da = a + (r & 1), *db = b + (r & 1);
        ref->dequantize(p, da, n);
        simd->dequantize(p, db, n);
        if (memcmp(da, db, sizeof(float) * (size_t)n) != 0) {
            int64_t at = 0;
            while (qw_f32_bits(da[at]) == qw_f32_bits(db[at])) at++;
            fprintf(stderr, "%s n=%lld: element %lld decodes to %08x vs %08x\n", ref->name,
                    (long long)n, (long long)at, qw_f32_bits(da[at]), qw_f32_bits(db[at]));
            failures++;
        }
    }
    CHECK_EQ_INT(failures, 0);
    free(src);
    free(a);
    free(b);
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(overlay_changes_only_kernels) {
    build_simd_table();
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *ref = qw_qtype_get_reference((qw_qtype)t);
        const qw_qtype_info *s = &simd_table[t];
        CHECK_EQ_STR(s->name, ref->name);
        CHECK_EQ_INT(s->type, ref->type);
        CHECK_EQ_INT(s->gguf_id, ref->gguf_id);
        CHECK_EQ_INT(s->block_elems, ref->block_elems);
        CHECK_EQ_INT(s->block_bytes, ref->block_bytes);
        CHECK_EQ_INT(s->is_float, ref->is_float);
        /* a kernel the reference lacks is never invented */
        CHECK_EQ_INT(s->quantize != NULL, ref->quantize != NULL);
        CHECK_EQ_INT(s->dequantize != NULL, ref->dequantize != NULL);
    }
    int replaced = 0;
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *ref = qw_qtype_get_reference((qw_qtype)t);
        if (simd_table[t].quantize != ref->quantize) {
            printf("     %s: %s encoder\n", ref->name, simd_isa);
            replaced++;
        }
        if (simd_table[t].dequantize != ref->dequantize) {
            printf("     %s: %s decoder\n", ref->name, simd_isa);
            replaced++;
        }
    }
    if (strcmp(simd_isa, "reference") == 0) {
        CHECK_EQ_INT(replaced, 0);
        printf("     no SIMD kernels on this CPU: nothing to compare\n");
    } else {
        CHECK(replaced > 0);
    }
}

TEST(reference_table_is_the_reference) {
    qw_qtype_info t[QW_QTYPE_COUNT];
    CHECK_EQ_STR(qw_qtype_build_table(t, "reference"), "reference");
    for (int i = 0; i < QW_QTYPE_COUNT; i++) {
        CHECK(memcmp(&t[i], qw_qtype_get_reference((qw_qtype)i), sizeof t[i]) == 0);
    }
}

TEST(simd_encoders_match_reference) {
    build_simd_table();
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        if (simd_table[t].quantize != qw_qtype_get_reference((qw_qtype)t)->quantize) {
            check_encoder((qw_qtype)t);
        }
    }
}

TEST(simd_decoders_match_reference) {
    build_simd_table();
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        if (simd_table[t].dequantize != qw_qtype_get_reference((qw_qtype)t)->dequantize) {
            check_decoder((qw_qtype)t);
        }
    }
}

/* Every fp16 bit pattern, NaNs and infinities included, and fp32 NaNs with payloads: the F16C
 * paths hand these to the reference, so the bits still agree. */
TEST(float_conversions_match_on_every_special_value) {
    build_simd_table();
    const qw_qtype_info *ref = qw_qtype_get_reference(QW_QTYPE_F16);
    const qw_qtype_info *s = &simd_table[QW_QTYPE_F16];
    uint16_t *h = malloc(2 * 65536);
    float *a = malloc(4 * 65536), *b = malloc(4 * 65536);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    ref->dequantize(h, a, 65536);
    s->dequantize(h, b, 65536);
    CHECK(memcmp(a, b, 4 * 65536) == 0);
    /* fp32 specials around every fp16 rounding boundary, NaNs with payloads, infinities */
    rng_state = 77;
    for (int i = 0; i < 65536; i++) {
        uint32_t u = qw_f32_bits(a[i]) + (uint32_t)rng_int(-2, 2) * 0x1000u;
        if (i % 7 == 0) u = 0x7f800000u | (uint32_t)rng_next(); /* inf or NaN, either sign */
        a[i] = qw_bits_f32(u);
    }
    for (int t = QW_QTYPE_F16; t <= QW_QTYPE_BF16; t++) {
        const qw_qtype_info *r2 = qw_qtype_get_reference((qw_qtype)t);
        uint16_t *o1 = malloc(2 * 65536), *o2 = malloc(2 * 65536);
        r2->quantize(a, o1, 65536, NULL);
        simd_table[t].quantize(a, o2, 65536, NULL);
        CHECK(memcmp(o1, o2, 2 * 65536) == 0);
        free(o1);
        free(o2);
    }
    free(h);
    free(a);
    free(b);
}

/* Row lengths that leave tails for the vector loops (float types take any length). */
TEST(float_kernels_handle_every_tail) {
    build_simd_table();
    rng_state = 99;
    float x[80], y1[80], y2[80];
    uint16_t h1[80], h2[80];
    for (int t = QW_QTYPE_F16; t <= QW_QTYPE_BF16; t++) {
        const qw_qtype_info *ref = qw_qtype_get_reference((qw_qtype)t);
        for (int n = 0; n <= 70; n++) {
            fill_input(IN_RANDOM_BITS, x, n);
            memset(h1, 0, sizeof h1);
            memset(h2, 0, sizeof h2);
            ref->quantize(x, h1, n, NULL);
            simd_table[t].quantize(x, h2, n, NULL);
            CHECK(memcmp(h1, h2, sizeof h1) == 0);
            memset(y1, 0, sizeof y1);
            memset(y2, 0, sizeof y2);
            ref->dequantize(h1, y1, n);
            simd_table[t].dequantize(h1, y2, n);
            CHECK(memcmp(y1, y2, sizeof y1) == 0);
        }
    }
}

/* qw_find_nonfinite gives the scalar loop's answer: the first NaN or infinity, or -1. */
TEST(find_nonfinite_matches_scalar_loop) {
    rng_state = 4242;
    static const uint32_t specials[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                        0x7f800001u, 0x7fbfffffu, 0xffffffffu};
    float x[300];
    int failures = 0;
    for (int r = 0; r < 20000 && failures < 5; r++) {
        const int n = rng_int(0, 300);
        fill_input(r % IN_COUNT, x, n);
        for (int k = rng_int(0, 3); k > 0 && n > 0; k--) {
            x[rng_int(0, n - 1)] = qw_bits_f32(specials[rng_int(0, 6)]);
        }
        int64_t expect = -1;
        for (int i = 0; i < n; i++) {
            if (x[i] - x[i] != 0.0f) {
                expect = i;
                break;
            }
        }
        const int64_t got = qw_find_nonfinite(x + 0, n);
        if (got != expect) {
            fprintf(stderr, "n=%d: first non-finite %lld, expected %lld\n", n, (long long)got,
                    (long long)expect);
            failures++;
        }
    }
    CHECK_EQ_INT(failures, 0);
}

/* QWODEL_KERNELS, through qw_qtype_get in a fresh process: "reference" gives the reference
 * kernels; unset gives the overlay. */
static int run_child(const char *env_value, const char *expect) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (env_value) {
            setenv("QWODEL_KERNELS", env_value, 1);
        } else {
            unsetenv("QWODEL_KERNELS");
        }
        execl("/proc/self/exe", "test_simd", "--child-kernels", expect, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int child_main(const char *expect) {
    qw_qtype_info expected[QW_QTYPE_COUNT];
    const char *isa = qw_qtype_build_table(expected, strcmp(expect, "reference") ? NULL : expect);
    if (strcmp(qw_qtype_kernels(), isa) != 0) return 2;
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        if (memcmp(qw_qtype_get((qw_qtype)t), &expected[t], sizeof expected[t]) != 0) return 3;
    }
    return 0;
}

TEST(environment_selects_kernels) {
    CHECK_EQ_INT(run_child("reference", "reference"), 0);
    CHECK_EQ_INT(run_child(NULL, "auto"), 0);
    CHECK_EQ_INT(run_child("", "auto"), 0);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--child-kernels") == 0) return child_main(argv[2]);
    static const test_case_ cases[] = {
        TEST_CASE(overlay_changes_only_kernels),
        TEST_CASE(reference_table_is_the_reference),
        TEST_CASE(simd_encoders_match_reference),
        TEST_CASE(simd_decoders_match_reference),
        TEST_CASE(float_conversions_match_on_every_special_value),
        TEST_CASE(float_kernels_handle_every_tail),
        TEST_CASE(find_nonfinite_matches_scalar_loop),
        TEST_CASE(environment_selects_kernels),
    };
    return run_tests_(cases, sizeof cases / sizeof cases[0]);
}
