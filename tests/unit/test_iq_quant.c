/* test_iq_quant — the i-quant kernels (src/quant/kernels_iq.c) and their tables
 * (src/quant/iq_grids.c), without llama.cpp.
 *
 * Byte and bit exactness against llama.cpp is tests/python/test_iq_kernels_vs_ggml.py. Here:
 * the grids have the structure ggml generated them with (a mistyped entry breaks it), the iq3
 * neighbour maps have the size an independent construction gives, the lattice setup is safe when
 * many threads quantize at once on first use, the round-trip error stays within stated bounds,
 * and ggml's quirks that the encoders reproduce on purpose are pinned down. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "half.h"
#include "iq_grids.h"
#include "kernels.h"
#include "quant.h"
#include "test.h"

/* ---- deterministic inputs ------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng_t *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static float rng_gauss(rng_t *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void fill_gauss(float *x, size_t n, uint64_t seed) {
    rng_t r = {seed};
    for (size_t i = 0; i < n; i++) x[i] = rng_gauss(&r);
}

static const qw_qtype encoders[] = {QW_QTYPE_IQ4_NL, QW_QTYPE_IQ4_XS, QW_QTYPE_IQ3_XXS,
                                    QW_QTYPE_IQ3_S};
static const qw_qtype decoders[] = {QW_QTYPE_IQ2_XXS, QW_QTYPE_IQ2_XS, QW_QTYPE_IQ2_S,
                                    QW_QTYPE_IQ3_XXS, QW_QTYPE_IQ3_S,  QW_QTYPE_IQ1_S,
                                    QW_QTYPE_IQ1_M};
#define N_ENCODERS (sizeof encoders / sizeof encoders[0])
#define N_DECODERS (sizeof decoders / sizeof decoders[0])

/* ---- first use from many threads ------------------------------------------------------------ */

/* This test runs first, so the iq3 lattices are built while 16 threads race to use them. Every
 * thread encodes the same rows with every encoder (half of them in reverse type order, so both
 * lattices are first touched from several threads); all must give the bytes a single thread
 * gives afterwards. */
/* TS_ROW_BYTES_MAX: iq4_nl's, the largest of the four */
enum { TS_THREADS = 16, TS_ROWS = 4, TS_N = 1024, TS_ROW_BYTES_MAX = TS_N / 32 * 18 };

static float ts_x[TS_ROWS * TS_N];
static uint8_t ts_out[TS_THREADS][N_ENCODERS][TS_ROWS * TS_ROW_BYTES_MAX];
static pthread_barrier_t ts_barrier;

static void *ts_worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    pthread_barrier_wait(&ts_barrier);
    for (size_t k = 0; k < N_ENCODERS; k++) {
        const size_t e = id % 2 ? N_ENCODERS - 1 - k : k;
        const qw_qtype_info *info = qw_qtype_get(encoders[e]);
        const uint64_t rb = qw_qtype_row_bytes(encoders[e], TS_N);
        for (int r = 0; r < TS_ROWS; r++) {
            info->quantize(ts_x + r * TS_N, ts_out[id][e] + r * rb, TS_N, NULL);
        }
    }
    return NULL;
}

TEST(first_use_from_many_threads) {
    fill_gauss(ts_x, TS_ROWS * TS_N, 21);
    CHECK(pthread_barrier_init(&ts_barrier, NULL, TS_THREADS) == 0);
    pthread_t th[TS_THREADS];
    int started = 0;
    for (int i = 0; i < TS_THREADS; i++) {
        if (pthread_create(&th[i], NULL, ts_worker, (void *)(intptr_t)i) != 0) break;
        started++;
    }
    CHECK_EQ_INT(started, TS_THREADS);
    if (started != TS_THREADS) return; /* the barrier would never open */
    for (int i = 0; i < TS_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&ts_barrier);

    static uint8_t want[TS_ROWS * TS_ROW_BYTES_MAX];
    for (size_t e = 0; e < N_ENCODERS; e++) {
        const qw_qtype_info *info = qw_qtype_get(encoders[e]);
        const uint64_t rb = qw_qtype_row_bytes(encoders[e], TS_N);
        for (int r = 0; r < TS_ROWS; r++) {
            info->quantize(ts_x + r * TS_N, want + r * rb, TS_N, NULL);
        }
        for (int i = 0; i < TS_THREADS; i++) {
            const bool same = memcmp(ts_out[i][e], want, TS_ROWS * rb) == 0;
            if (!same) fprintf(stderr, "%s: thread %d wrote other bytes\n", info->name, i);
            CHECK(same);
        }
    }
}

/* ---- the tables ----------------------------------------------------------------------------- */

/* The position of a byte in its table's value set, or -1. */
static int level_of(const uint8_t *set, int n, uint8_t v) {
    for (int i = 0; i < n; i++) {
        if (set[i] == v) return i;
    }
    return -1;
}

/* Checks one grid: every byte in `set` (the values in ascending level order), and the entries
 * strictly ascending by their code (element 0 the least significant digit, base n_set): ggml
 * built every grid by enumerating codes in that order, so an entry typed wrong almost always
 * breaks the order or the value set. Returns the number of bad entries. */
static int check_grid(const char *name, const void *grid, int n_entries, int width,
                      const uint8_t *set, int n_set) {
    int bad = 0;
    uint64_t prev = 0;
    for (int g = 0; g < n_entries; g++) {
        const uint64_t entry = width == 8 ? ((const uint64_t *)grid)[g]
                                          : ((const uint32_t *)grid)[g];
        uint64_t code = 0, place = 1;
        for (int j = 0; j < width; j++) {
            const int l = level_of(set, n_set, (uint8_t)(entry >> (8 * j)));
            if (l < 0) {
                fprintf(stderr, "%s[%d]: byte %d = %u is not a grid value\n", name, g, j,
                        (unsigned)(uint8_t)(entry >> (8 * j)));
                bad++;
            }
            code += (uint64_t)(l < 0 ? 0 : l) * place;
            place *= (uint64_t)n_set;
        }
        if (g > 0 && code <= prev) {
            fprintf(stderr, "%s[%d]: out of order\n", name, g);
            bad++;
        }
        prev = code;
    }
    return bad;
}

TEST(grids_have_ggml_structure) {
    static const uint8_t iq2[3] = {8, 25, 43};
    static const uint8_t iq3xxs[8] = {4, 12, 20, 28, 36, 44, 52, 62};
    static const uint8_t iq3s[8] = {1, 3, 5, 7, 9, 11, 13, 15};
    static const uint8_t iq1[3] = {0xff, 0, 1}; /* -1, 0, +1 */
    CHECK_EQ_INT(check_grid("iq2xxs", qw_iq2xxs_grid, QW_IQ2XXS_GRID_SIZE, 8, iq2, 3), 0);
    CHECK_EQ_INT(check_grid("iq2xs", qw_iq2xs_grid, QW_IQ2XS_GRID_SIZE, 8, iq2, 3), 0);
    CHECK_EQ_INT(check_grid("iq2s", qw_iq2s_grid, QW_IQ2S_GRID_SIZE, 8, iq2, 3), 0);
    CHECK_EQ_INT(check_grid("iq3xxs", qw_iq3xxs_grid, QW_IQ3XXS_GRID_SIZE, 4, iq3xxs, 8), 0);
    CHECK_EQ_INT(check_grid("iq3s", qw_iq3s_grid, QW_IQ3S_GRID_SIZE, 4, iq3s, 8), 0);
    CHECK_EQ_INT(check_grid("iq1s", qw_iq1s_grid, QW_IQ1S_GRID_SIZE, 8, iq1, 3), 0);

    /* The all-zero code (every element on the lowest level) is entry 0 of both iq3 grids: the
     * encoders rely on it for sub-blocks whose fit never succeeds. */
    CHECK(qw_iq3xxs_grid[0] == 0x04040404u);
    CHECK(qw_iq3s_grid[0] == 0x01010101u);

    /* iq4_nl levels: research/gguf.md §2, ascending. */
    static const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};
    CHECK(memcmp(qw_iq4nl_values, kv, sizeof kv) == 0);
}

TEST(sign_table_is_the_parity_rule) {
    /* Entry i is i with bit 7 set when i has an odd number of bits: every pattern then has an
     * even number of negative elements. */
    for (int i = 0; i < 128; i++) {
        int ones = 0;
        for (int b = 0; b < 7; b++) ones += (i >> b) & 1;
        CHECK_EQ_INT(qw_iq2_signs[i], i | (ones % 2) << 7);
    }
}

/* ggml's neighbour lists, built independently of kernels_iq.c: for each off-grid code, sort
 * (distance, index) pairs and keep every point up to the n_dist-th distinct distance. */
static int cmp_pair(const void *a, const void *b) {
    const int *p = a, *q = b;
    return p[0] != q[0] ? (p[0] < q[0] ? -1 : 1) : (p[1] < q[1] ? -1 : p[1] > q[1]);
}

static int brute_neighbour_total(const uint32_t *grid, int n_grid, int n_dist, bool xxs) {
    int (*pairs)[2] = malloc(sizeof(int[2]) * (size_t)n_grid);
    int *level = malloc(sizeof(int) * (size_t)n_grid * 4);
    bool *on = calloc(4096, sizeof(bool));
    if (!pairs || !level || !on) {
        free(pairs);
        free(level);
        free(on);
        return -1;
    }
    for (int g = 0; g < n_grid; g++) {
        int code = 0;
        for (int i = 0; i < 4; i++) {
            const int b = (grid[g] >> (8 * i)) & 0xff;
            const int l = xxs ? (b == 62 ? 7 : (b - 4) / 8) : (b - 1) / 2;
            level[4 * g + i] = 2 * l + 1;
            code |= l << (3 * i);
        }
        on[code] = true;
    }
    int total = 0;
    for (int c = 0; c < 4096; c++) {
        if (on[c]) continue;
        for (int g = 0; g < n_grid; g++) {
            int d2 = 0;
            for (int i = 0; i < 4; i++) {
                const int diff = level[4 * g + i] - (2 * ((c >> (3 * i)) & 7) + 1);
                d2 += diff * diff;
            }
            pairs[g][0] = d2;
            pairs[g][1] = g;
        }
        qsort(pairs, (size_t)n_grid, sizeof pairs[0], cmp_pair);
        int distinct = 1;
        for (int g = 0; g < n_grid; g++) {
            if (g > 0 && pairs[g][0] != pairs[g - 1][0] && ++distinct > n_dist) break;
            total++;
        }
    }
    free(pairs);
    free(level);
    free(on);
    return total;
}

TEST(iq3_neighbour_maps_have_ggml_size) {
    const int xxs = brute_neighbour_total(qw_iq3xxs_grid, QW_IQ3XXS_GRID_SIZE, 2, true);
    const int s = brute_neighbour_total(qw_iq3s_grid, QW_IQ3S_GRID_SIZE, 3, false);
    CHECK_EQ_INT(xxs, 18985);
    CHECK_EQ_INT(s, 24733);
    CHECK_EQ_INT(qw_iq3_neighbour_total(256), xxs);
    CHECK_EQ_INT(qw_iq3_neighbour_total(512), s);
    CHECK_EQ_INT(qw_iq3_neighbour_total(128), -1);
}

/* ---- round trips ---------------------------------------------------------------------------- */

/* RMSE of dequantize(quantize(x)) for N(0, 1) data (64 rows of 4096, seed 1), without and with
 * an importance vector (uniform in [0.1, 10.1), seed 3).
 *
 * Where the bounds come from: these encoders are byte-identical to llama.cpp's (checked by
 * test_iq_kernels_vs_ggml.py), so the measured errors below are llama.cpp's own on this data;
 * each bound is the measurement plus 10%, so a change that loses precision fails here even
 * without llama.cpp. For scale, the uniform-quantizer model (error uniform over one step s,
 * RMSE s / sqrt(12), with s set by the largest |x| of a Gaussian block of 32, about 2.07) gives
 * 8.6e-2 for 16 levels (s = amax / 8, q4_0) and 0.17 for 8 (s = amax / 4). iq4_nl and iq4_xs
 * (16 non-uniform levels, a searched scale) measure 7.6e-2, under the 16-level figure. iq3_s and
 * iq3_xxs have 8 magnitudes and a sign, but only 512 / 256 of the 4096 magnitude patterns of a
 * group of 4: iq3_s measures 0.166, about the 8-level figure, iq3_xxs 0.212. Without importance
 * the fit weights are x^2, which favour large values over small ones; llama.cpp's importance
 * weights qw sqrt(sigma^2 + x^2) are flatter, so the plain RMSE is lower with them for iq3.
 *
 * Then llama.cpp's tests/test-quantize-fns.cpp, on its data (x_i = 0.1 + 2 cos(i), 4096 values)
 * and with its measure sqrt(sum (x - y)^2) / n: below 0.002 for iq4_nl and iq4_xs
 * (MAX_QUANTIZATION_TOTAL_ERROR), 0.004 for iq3_s (..._3BITS), 0.005 for iq3_xxs (..._3BITS_XXS).
 * Measured: 1.24e-3, 1.26e-3, 4.35e-3, 3.12e-3. */
static const struct {
    qw_qtype type;
    double measured, measured_imp, llama_bound;
} rt_bounds[] = {
    {QW_QTYPE_IQ4_NL, 7.601e-2, 7.591e-2, 0.002},
    {QW_QTYPE_IQ4_XS, 7.661e-2, 7.650e-2, 0.002},
    {QW_QTYPE_IQ3_XXS, 0.2123, 0.1974, 0.005},
    {QW_QTYPE_IQ3_S, 0.1660, 0.1437, 0.004},
};

TEST(round_trip_error) {
    enum { ROWS = 64, N = 4096 };
    float *x = malloc(sizeof(float) * ROWS * N);
    float *y = malloc(sizeof(float) * N);
    float *imp = malloc(sizeof(float) * N);
    uint8_t *q = malloc(N / 32 * 18 + N / 256 * 136);
    CHECK(x && y && imp && q);
    if (!x || !y || !imp || !q) goto done;
    fill_gauss(x, (size_t)ROWS * N, 1);
    rng_t r = {3};
    for (int i = 0; i < N; i++) imp[i] = (float)(0.1 + 10.0 * rng_uniform(&r));
    static float lx[N];
    for (int i = 0; i < N; i++) lx[i] = 0.1f + 2.0f * cosf((float)i);

    for (size_t k = 0; k < sizeof rt_bounds / sizeof rt_bounds[0]; k++) {
        const qw_qtype_info *info = qw_qtype_get(rt_bounds[k].type);
        CHECK(info->quantize && info->dequantize);
        if (!info->quantize || !info->dequantize) continue;
        for (int with_imp = 0; with_imp < 2; with_imp++) {
            double sum = 0.0;
            for (int row = 0; row < ROWS; row++) {
                const float *xr = x + (size_t)row * N;
                info->quantize(xr, q, N, with_imp ? imp : NULL);
                info->dequantize(q, y, N);
                for (int i = 0; i < N; i++) sum += ((double)xr[i] - y[i]) * ((double)xr[i] - y[i]);
            }
            const double rmse = sqrt(sum / ((double)ROWS * N));
            const double measured = with_imp ? rt_bounds[k].measured_imp : rt_bounds[k].measured;
            printf("     %-7s gaussian rmse%s %.4e (bound %.4e)\n", info->name,
                   with_imp ? " with importance" : "", rmse, measured * 1.1);
            CHECK(rmse <= measured * 1.1);
        }
        info->quantize(lx, q, N, NULL);
        info->dequantize(q, y, N);
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += ((double)lx[i] - y[i]) * ((double)lx[i] - y[i]);
        const double total = sqrt(sum) / N;
        printf("     %-7s llama.cpp total error %.3e (bound %.3e)\n", info->name, total,
               rt_bounds[k].llama_bound);
        CHECK(total < rt_bounds[k].llama_bound);
    }
done:
    free(x);
    free(y);
    free(imp);
    free(q);
}

TEST(importance_steers_error) {
    /* Columns with 100x the importance of the others come out closer than without importance:
     * the reason to pass it. */
    enum { ROWS = 32, N = 1024 };
    static float x[ROWS * N], y[N], imp[N];
    static uint8_t q[N / 32 * 18 + N / 256 * 136];
    fill_gauss(x, ROWS * N, 11);
    for (int i = 0; i < N; i++) imp[i] = i % 4 == 0 ? 100.0f : 1.0f;
    for (size_t e = 0; e < N_ENCODERS; e++) {
        const qw_qtype_info *info = qw_qtype_get(encoders[e]);
        double err_plain = 0.0, err_weighted = 0.0;
        for (int r = 0; r < ROWS; r++) {
            info->quantize(x + r * N, q, N, NULL);
            info->dequantize(q, y, N);
            for (int i = 0; i < N; i += 4) err_plain += pow(x[r * N + i] - y[i], 2);
            info->quantize(x + r * N, q, N, imp);
            info->dequantize(q, y, N);
            for (int i = 0; i < N; i += 4) err_weighted += pow(x[r * N + i] - y[i], 2);
        }
        printf("     %-7s important-column error: plain %.3e, weighted %.3e\n", info->name,
               err_plain, err_weighted);
        CHECK(err_weighted < err_plain);
    }
}

/* ---- special rows and ggml's quirks ------------------------------------------------------- */

TEST(zero_rows) {
    /* All-zero rows decode to zeros. The bytes are ggml's: iq3_xxs/iq3_s write all-zero
     * blocks; iq4_nl writes d = 0 with every nibble 8 (the level 1 is nearest to 0); iq4_xs
     * writes d = -0 (fp16 0x8000, from -max_scale / 32 with max_scale = 0), scales 32 and
     * nibbles 8. Signed zeros in the input change nothing. */
    enum { N = 512 };
    static float x[N], y[N];
    static uint8_t q[N / 32 * 18 + N / 256 * 136];
    for (int neg = 0; neg < 2; neg++) {
        for (int i = 0; i < N; i++) x[i] = neg && i % 3 ? -0.0f : 0.0f;
        for (size_t e = 0; e < N_ENCODERS; e++) {
            const qw_qtype_info *info = qw_qtype_get(encoders[e]);
            memset(q, 0xa5, sizeof q);
            info->quantize(x, q, N, NULL);
            info->dequantize(q, y, N);
            bool zero = true;
            for (int i = 0; i < N; i++) zero = zero && y[i] == 0.0f;
            CHECK(zero);
        }
    }
    qw_block_iq4_nl nl;
    qw_quantize_row_iq4_nl(x, &nl, 32, NULL);
    CHECK_EQ_INT(nl.d, 0);
    for (int j = 0; j < 16; j++) CHECK_EQ_INT(nl.qs[j], 0x88);
    qw_block_iq4_xs xs;
    qw_quantize_row_iq4_xs(x, &xs, 256, NULL);
    CHECK_EQ_INT(xs.d, 0x8000);
    CHECK_EQ_INT(xs.scales_h, 0xaaaa); /* 32 = 0b10'0000 in every sub-block */
    for (int j = 0; j < 4; j++) CHECK_EQ_INT(xs.scales_l[j], 0);
    for (int j = 0; j < 128; j++) CHECK_EQ_INT(xs.qs[j], 0x88);
    qw_block_iq3_s s3;
    qw_block_iq3_xxs x3;
    qw_quantize_row_iq3_s(x, &s3, 256, NULL);
    qw_quantize_row_iq3_xxs(x, &x3, 256, NULL);
    static const uint8_t zeros[sizeof s3];
    CHECK(memcmp(&s3, zeros, sizeof s3) == 0);
    CHECK(memcmp(&x3, zeros, sizeof x3) == 0);
}

TEST(iq3_s_zero_sub_block_shifts_later_groups) {
    /* ggml's iq3_s encoder advances its qs and signs cursor only past sub-blocks that are not
     * exactly zero (quantize_row_iq3_s_impl's `continue`), so a zero sub-block moves every later
     * sub-block's grid bytes and signs one slot down and leaves the last slot zero, while qh
     * and the scales stay in place. The encoder reproduces that layout (llama.cpp's files have
     * it; test_iq_kernels_vs_ggml.py checks the bytes); decoders then read the later sub-blocks
     * against the wrong qh bits and scales, so such blocks decode badly in llama.cpp too. */
    static float a[256], b[256];
    fill_gauss(a, 256, 31);
    memcpy(b, a, sizeof a);
    memset(b + 64, 0, 32 * sizeof(float)); /* sub-block 2 */
    qw_block_iq3_s qa, qb;
    qw_quantize_row_iq3_s(a, &qa, 256, NULL);
    qw_quantize_row_iq3_s(b, &qb, 256, NULL);
    /* Without importance a sub-block's grid points and signs depend only on its own values. */
    CHECK(memcmp(qb.qs, qa.qs, 16) == 0);
    CHECK(memcmp(qb.qs + 16, qa.qs + 24, 40) == 0);
    CHECK(memcmp(qb.signs, qa.signs, 8) == 0);
    CHECK(memcmp(qb.signs + 8, qa.signs + 12, 20) == 0);
    static const uint8_t zeros[8];
    CHECK(memcmp(qb.qs + 56, zeros, 8) == 0);
    CHECK(memcmp(qb.signs + 28, zeros, 4) == 0);
    CHECK_EQ_INT(qb.qh[2], 0);
    CHECK(memcmp(qb.qh + 3, qa.qh + 3, 5) == 0);
    CHECK_EQ_INT(qb.scales[1] & 0xf, 0);
}

TEST(iq3_xxs_signs_have_even_parity) {
    /* A group of 8 with an odd number of negative values loses the sign of its least important
     * element (smallest w x^2 = x^4 without importance): with one negative value among larger
     * positive ones, that value is the one, and it decodes positive. */
    static float x[256];
    for (int i = 0; i < 256; i++) x[i] = 1.0f + (float)(i % 8) * 0.25f;
    x[3] = -0.5f;     /* the smallest magnitude of its group: comes back positive */
    x[8 + 5] = -2.0f; /* not the smallest of its group: the smallest (x[8]) flips instead */
    qw_block_iq3_xxs q;
    float y[256];
    qw_quantize_row_iq3_xxs(x, &q, 256, NULL);
    qw_dequantize_row_iq3_xxs(&q, y, 256);
    CHECK(y[3] > 0.0f);
    CHECK(y[13] < 0.0f);
    CHECK(y[8] < 0.0f);
    for (int i = 16; i < 256; i++) CHECK(y[i] > 0.0f);
}

TEST(huge_inputs_do_not_crash) {
    /* Where x^2 or the least-squares sums overflow fp32, ggml's iq3 encoders abort the process
     * (GGML_ASSERT: no neighbour with a finite distance, or a NaN scale). Ours carry on: no
     * crash, no undefined behaviour (the sanitizer build runs this), same bytes every time. */
    static const float bigs[] = {1e12f, 1e19f, 1e20f, 3e38f, FLT_MAX};
    enum { N = 1024 };
    static float x[N], imp[N], y[N];
    static uint8_t q1[N], q2[N];
    for (size_t k = 0; k < sizeof bigs / sizeof bigs[0]; k++) {
        fill_gauss(x, N, 41);
        x[100] = bigs[k];
        x[700] = -bigs[k];
        x[900] = bigs[k] / 3;
        for (int i = 0; i < N; i++) imp[i] = i % 2 ? 1e30f : 0.5f;
        for (size_t e = 0; e < N_ENCODERS; e++) {
            const qw_qtype_info *info = qw_qtype_get(encoders[e]);
            for (int with_imp = 0; with_imp < 2; with_imp++) {
                info->quantize(x, q1, N, with_imp ? imp : NULL);
                info->quantize(x, q2, N, with_imp ? imp : NULL);
                CHECK(memcmp(q1, q2, qw_qtype_row_bytes(encoders[e], N)) == 0);
                info->dequantize(q1, y, N);
            }
        }
    }
}

TEST(decoders_take_any_bytes) {
    /* A file is untrusted: every index in any byte pattern is in range of its table (the
     * sanitizer build checks the reads) and exactly n values are written. */
    enum { N = 2048 };
    static uint8_t raw[N / 256 * 110];
    static float y[N + 1];
    rng_t r = {17};
    for (int round = 0; round < 8; round++) {
        for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)rng_next(&r);
        if (round == 0) memset(raw, 0xff, sizeof raw);
        for (size_t k = 0; k < N_DECODERS; k++) {
            const qw_qtype_info *info = qw_qtype_get(decoders[k]);
            CHECK(info->dequantize != NULL);
            if (!info->dequantize) continue;
            y[N] = 12345.0f;
            info->dequantize(raw, y, N);
            CHECK(y[N] == 12345.0f);
        }
    }
}

TEST(decoders_known_blocks) {
    /* One hand-built block per type, decoded from the layout descriptions in blocks.h (not from
     * kernels_iq.c): d = 1, each group on grid entry 1 (or 257), a few signs and scales set. */
    float y[256];

    qw_block_iq3_s s = {.d = 0x3c00};
    s.qs[0] = 1;                   /* sub-block 0, group 0: entry 1 = {3, 1, 1, 1} */
    s.qh[0] = 0x02;                /* group 1: entry 256 + qs[1] = 256 */
    s.signs[0] = 0x11;             /* element 0 of groups 0 and 1 negative */
    s.scales[0] = 0x21;            /* sub-block 0: s = 1 -> 3; sub-block 1: s = 2 -> 5 */
    qw_dequantize_row_iq3_s(&s, y, 256);
    const uint32_t e256 = qw_iq3s_grid[256];
    CHECK(y[0] == -9.0f && y[1] == 3.0f && y[2] == 3.0f && y[3] == 3.0f);
    CHECK(y[4] == -3.0f * (float)(e256 & 0xff));
    CHECK(y[5] == 3.0f * (float)((e256 >> 8) & 0xff));
    CHECK(y[32] == 5.0f); /* sub-block 1, entry 0 = {1, 1, 1, 1}, scale 5 */

    qw_block_iq1_s s1 = {.d = 0x3c00};
    s1.qh[0] = (uint16_t)(0x8000 | 2u << 12); /* negative shift, scale 2 * 2 + 1 = 5 */
    qw_dequantize_row_iq1_s(&s1, y, 256);
    /* group 0 is entry 0: all -1, plus the shift -1/8, times 5 */
    for (int j = 0; j < 32; j++) CHECK(y[j] == 5.0f * (-1.0f - 0.125f));
    CHECK(y[32] == 1.0f * (-1.0f + 0.125f)); /* sub-block 1: scale 1, positive shift */

    qw_block_iq1_m m;
    memset(&m, 0, sizeof m);
    /* d = fp16 1.0 = 0x3c00 in the top nibbles of the four u16 scales: 0x0, 0xc, 0x3, 0x0 */
    m.scales[5] = 0xc0;
    m.scales[7] = 0x30;
    m.scales[0] = 0x3 | 0x2 << 3; /* sub-block 0: groups 0-1 scale 7, groups 2-3 scale 5 */
    m.qh[0] = 0x08;               /* group 0: negative shift */
    qw_dequantize_row_iq1_m(&m, y, 256);
    CHECK(y[0] == 7.0f * (-1.0f - 0.125f));
    CHECK(y[8] == 7.0f * (-1.0f + 0.125f));
    CHECK(y[16] == 5.0f * (-1.0f + 0.125f));

    qw_block_iq2_xs x2 = {.d = 0x3c00};
    x2.qs[0] = (uint16_t)(1 | 3u << 9); /* entry 1, sign index 3: elements 0 and 1 negative */
    x2.scales[0] = 0x0f;                /* groups 0-1: (0.5 + 15) / 4 */
    qw_dequantize_row_iq2_xs(&x2, y, 256);
    const float db = 1.0f * (0.5f + 15.0f) * 0.25f;
    CHECK(y[0] == -db * (float)(qw_iq2xs_grid[1] & 0xff));
    CHECK(y[1] == -db * (float)((qw_iq2xs_grid[1] >> 8) & 0xff));
    CHECK(y[2] == db * (float)((qw_iq2xs_grid[1] >> 16) & 0xff));
    CHECK(y[16] == 0.125f * 8.0f); /* groups 2-3: (0.5 + 0) / 4 times grid byte 8 */
}

RUN_TESTS(TEST_CASE(first_use_from_many_threads), TEST_CASE(grids_have_ggml_structure),
          TEST_CASE(sign_table_is_the_parity_rule), TEST_CASE(iq3_neighbour_maps_have_ggml_size),
          TEST_CASE(round_trip_error), TEST_CASE(importance_steers_error), TEST_CASE(zero_rows),
          TEST_CASE(iq3_s_zero_sub_block_shifts_later_groups),
          TEST_CASE(iq3_xxs_signs_have_even_parity), TEST_CASE(huge_inputs_do_not_crash),
          TEST_CASE(decoders_take_any_bytes), TEST_CASE(decoders_known_blocks))
