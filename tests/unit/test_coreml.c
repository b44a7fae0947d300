/* The coreml backend's pieces that need no model: MIL blob storage v2, the package manifest,
 * exact 1-D k-means (against an O(k n^2) dynamic program written independently here), and the
 * MIL builder's sticky errors. */
#include <float.h>

#include "coreml_kmeans.h"
#include "coreml_mil.h"
#include "file.h"
#include "mil_package.h"
#include "test.h"

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

TEST(blob_storage_layout) {
    char path[600];
    snprintf(path, sizeof path, "%s/coreml_blobs.bin", test_tmpdir());
    qw_error err = {0};
    qw_blob_writer *w = NULL;
    CHECK_OK(qw_blob_writer_open(path, &w, &err), &err);
    if (!w) return;
    const uint8_t a[3] = {1, 2, 3};
    const uint16_t b[70] = {0x3c00};
    uint64_t off_a = 0, off_b = 0;
    CHECK_OK(qw_blob_writer_begin(w, QW_BLOB_UINT8, 3, 0, &off_a, &err), &err);
    CHECK_OK(qw_blob_writer_write(w, a, 3, &err), &err);
    CHECK_OK(qw_blob_writer_begin(w, QW_BLOB_FLOAT16, sizeof b, 0, &off_b, &err), &err);
    CHECK_OK(qw_blob_writer_write(w, b, 100, &err), &err); /* in two pieces */
    CHECK_OK(qw_blob_writer_write(w, (const uint8_t *)b + 100, sizeof b - 100, &err), &err);
    CHECK_EQ_INT(qw_blob_writer_count(w), 2);
    CHECK_OK(qw_blob_writer_finish(w, &err), &err);
    CHECK_EQ_INT(off_a, 64);
    CHECK_EQ_INT(off_b, 192); /* 64 + 64 + 3 bytes, rounded up to 64 */
    char *data = NULL;
    size_t len = 0;
    CHECK_OK(qw_file_read_all(path, 1 << 20, &data, &len, &err), &err);
    if (!data) return;
    const uint8_t *d = (const uint8_t *)data;
    CHECK_EQ_INT(len, 192 + 64 + sizeof b);
    CHECK_EQ_INT(rd32(d), 2);
    CHECK_EQ_INT(rd32(d + 4), 2);
    for (size_t i = 8; i < 64; i++) CHECK_EQ_INT(d[i], 0);
    CHECK_EQ_INT(rd32(d + 64), 0xDEADBEEFu);
    CHECK_EQ_INT(rd32(d + 68), QW_BLOB_UINT8);
    CHECK_EQ_INT(rd64(d + 72), 3);
    CHECK_EQ_INT(rd64(d + 80), 128);
    CHECK_EQ_INT(d[128], 1);
    CHECK_EQ_INT(d[130], 3);
    for (size_t i = 131; i < 192; i++) CHECK_EQ_INT(d[i], 0);
    CHECK_EQ_INT(rd32(d + 192), 0xDEADBEEFu);
    CHECK_EQ_INT(rd32(d + 196), QW_BLOB_FLOAT16);
    CHECK_EQ_INT(rd64(d + 200), sizeof b);
    CHECK_EQ_INT(rd64(d + 208), 256);
    CHECK_EQ_INT(d[257], 0x3c);
    qw_free(data);
}

TEST(blob_writer_refuses_misuse) {
    char path[600];
    snprintf(path, sizeof path, "%s/coreml_misuse.bin", test_tmpdir());
    qw_error err = {0};
    qw_blob_writer *w = NULL;
    uint64_t off;
    const uint8_t x[8] = {0};
    CHECK_OK(qw_blob_writer_open(path, &w, &err), &err);
    if (!w) return;
    CHECK_OK(qw_blob_writer_begin(w, QW_BLOB_INT8, 4, 0, &off, &err), &err);
    CHECK_EQ_INT(qw_blob_writer_write(w, x, 8, &err), QW_ERR_INTERNAL); /* overrun */
    CHECK(strstr(err.message, "overruns") != NULL);
    CHECK_EQ_INT(qw_blob_writer_begin(w, QW_BLOB_INT8, 4, 0, &off, &err), QW_ERR_INTERNAL);
    CHECK_EQ_INT(qw_blob_writer_begin(w, QW_BLOB_UINT4, 4, 9, &off, &err), QW_ERR_INTERNAL);
    CHECK_EQ_INT(qw_blob_writer_finish(w, &err), QW_ERR_INTERNAL); /* last blob short */
    qw_blob_writer_abort(NULL);
    w = NULL;
    CHECK_EQ_INT(qw_blob_writer_open("/nonexistent-dir/x/weight.bin", &w, &err), QW_ERR_IO);
    CHECK(w == NULL);
    CHECK(strstr(err.message, "/nonexistent-dir/x/weight.bin") != NULL);
}

TEST(manifest_names_both_items) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/coreml_pkg.mlpackage", test_tmpdir());
    qw_error err = {0};
    CHECK_OK(qw_mkdir_p(dir, &err), &err);
    CHECK_OK(qw_mlpackage_layout(dir, "seed", &err), &err);
    char path[700];
    snprintf(path, sizeof path, "%s/Data/com.apple.CoreML/weights", dir);
    CHECK(qw_path_is_dir(path));
    snprintf(path, sizeof path, "%s/Manifest.json", dir);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(qw_file_read_all(path, 1 << 16, &text, &len, &err), &err);
    if (!text) return;
    CHECK(strstr(text, "\"fileFormatVersion\": \"1.0.0\"") != NULL);
    CHECK(strstr(text, "\"path\": \"com.apple.CoreML/model.mlmodel\"") != NULL);
    CHECK(strstr(text, "\"path\": \"com.apple.CoreML/weights\"") != NULL);
    CHECK(strstr(text, "rootModelIdentifier") != NULL);
    /* the same seed gives the same identifiers */
    char *again = NULL;
    CHECK_OK(qw_mlpackage_layout(dir, "seed", &err), &err);
    CHECK_OK(qw_file_read_all(path, 1 << 16, &again, &len, &err), &err);
    CHECK(again && strcmp(text, again) == 0);
    qw_free(text);
    qw_free(again);
}

/* ---- k-means -------------------------------------------------------------------------------- */

static double seg_cost(const double *x, const double *w, size_t a, size_t b) {
    double sw = 0, s = 0;
    for (size_t i = a; i < b; i++) {
        sw += w[i];
        s += w[i] * x[i];
    }
    const double mean = s / sw;
    double c = 0;
    for (size_t i = a; i < b; i++) c += w[i] * (x[i] - mean) * (x[i] - mean);
    return c;
}

/* the textbook O(k n^2) recurrence, with nonempty clusters */
static double brute_force(const double *x, const double *w, size_t n, size_t k) {
    double best[65][65];
    for (size_t i = 0; i <= n; i++) best[1][i] = i ? seg_cost(x, w, 0, i) : 0;
    for (size_t j = 2; j <= k; j++) {
        for (size_t i = 0; i <= n; i++) {
            best[j][i] = i < j ? 0 : DBL_MAX;
            for (size_t s = j - 1; i >= j && s < i; s++) {
                const double c = best[j - 1][s] + seg_cost(x, w, s, i);
                if (c < best[j][i]) best[j][i] = c;
            }
        }
    }
    return best[k][n];
}

TEST(kmeans1d_is_optimal) {
    uint64_t state = 12345;
    for (int trial = 0; trial < 40; trial++) {
        double x[64], w[64], centers[64];
        uint16_t assign[64];
        const size_t n = 1 + (size_t)(trial * 7) % 60, k = 1 + (size_t)trial % 9;
        double v = -1.0;
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            v += 0.001 + (double)(state >> 40) / (double)(1ull << 24); /* ascending */
            x[i] = v;
            w[i] = 1.0 + (double)((state >> 20) % 5);
        }
        qw_error err = {0};
        size_t k_used = 0;
        double sse = -1;
        CHECK_OK(qw_kmeans1d(x, w, n, k, centers, &k_used, assign, &sse, &err), &err);
        CHECK_EQ_INT(k_used, k < n ? k : n);
        const double ref = brute_force(x, w, n, k_used);
        CHECK_NEAR(sse, ref, 1e-9 * (1 + ref));
        /* the assignment is what the returned centers give, and its cost is the optimum */
        double cost = 0;
        for (size_t i = 0; i < n; i++) {
            CHECK(assign[i] < k_used);
            CHECK(i == 0 || assign[i] >= assign[i - 1]);
            cost += w[i] * (x[i] - centers[assign[i]]) * (x[i] - centers[assign[i]]);
        }
        CHECK_NEAR(cost, ref, 1e-9 * (1 + ref));
        for (size_t j = 1; j < k_used; j++) CHECK(centers[j] > centers[j - 1]);
    }
}

TEST(kmeans1d_refuses_bad_input) {
    double x[3] = {1, 1, 2}, w[3] = {1, 1, 1}, c[3];
    uint16_t a[3];
    size_t k = 0;
    qw_error err = {0};
    CHECK_EQ_INT(qw_kmeans1d(x, w, 3, 2, c, &k, a, NULL, &err), QW_ERR_INVALID_ARG);
    x[1] = 1.5;
    w[2] = 0;
    CHECK_EQ_INT(qw_kmeans1d(x, w, 3, 2, c, &k, a, NULL, &err), QW_ERR_INVALID_ARG);
    CHECK_EQ_INT(qw_kmeans1d(x, w, 0, 2, c, &k, a, NULL, &err), QW_ERR_INVALID_ARG);
    w[2] = 1;
    CHECK_EQ_INT(qw_kmeans1d(x, w, 3, 0, c, &k, a, NULL, &err), QW_ERR_INVALID_ARG);
    CHECK_OK(qw_kmeans1d(x, w, 3, 8, c, &k, a, NULL, &err), &err);
    CHECK_EQ_INT(k, 3);
}

/* ---- the MIL builder ------------------------------------------------------------------------ */

TEST(mil_builder_errors_are_sticky) {
    qw_mil *m = NULL;
    qw_error err = {0};
    CHECK_OK(qw_mil_create(NULL, &m, &err), &err);
    if (!m) return;
    /* a 16-element fp16 const needs the blob file, which this builder has none of */
    const uint16_t h[16] = {0};
    const int64_t dims[1] = {16};
    qw_mil_var c = qw_mil_const_data(m, "c", QW_MIL_FP16, 1, dims, h, sizeof h);
    CHECK(c.name == NULL);
    qw_mil_var s = qw_mil_const_f16(m, "s", 1.0f); /* ignored after the failure */
    CHECK(s.name == NULL);
    CHECK_EQ_INT(qw_mil_status(m, &err), QW_ERR_INTERNAL);
    uint8_t *buf = NULL;
    size_t len = 0;
    const qw_mil_model_info info = {7, "CoreML6", NULL, 0, NULL, 0, NULL, NULL, 0};
    CHECK_EQ_INT(qw_mil_serialize(m, &info, &buf, &len, &err), QW_ERR_INTERNAL);
    CHECK(buf == NULL);
    qw_mil_free(m);
    qw_mil_free(NULL);
}

RUN_TESTS(TEST_CASE(blob_storage_layout), TEST_CASE(blob_writer_refuses_misuse),
          TEST_CASE(manifest_names_both_items), TEST_CASE(kmeans1d_is_optimal),
          TEST_CASE(kmeans1d_refuses_bad_input), TEST_CASE(mil_builder_errors_are_sticky))
