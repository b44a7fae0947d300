/* The coreml backend's pieces that need no model: MIL blob storage v2, the package manifest,
 * exact 1-D k-means (against an O(k n^2) dynamic program written independently here), and the
 * MIL builder's sticky errors and iOS18 states. */
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

/* The LEN field `field` (its nth occurrence) of a protobuf message; false if absent. Other wire
 * types are skipped. Enough of the wire format to walk the few messages checked here. */
static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        const uint8_t byte = *(*p)++;
        *v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return true;
    }
    return false;
}

static bool pb_field(const uint8_t *msg, size_t n, uint32_t field, int nth, const uint8_t **out,
                     size_t *out_len) {
    const uint8_t *p = msg, *end = msg + n;
    uint64_t tag, v;
    while (p < end && pb_varint(&p, end, &tag)) {
        switch (tag & 7) {
        case 0: if (!pb_varint(&p, end, &v)) return false; break;
        case 1: p += 8; break;
        case 5: p += 4; break;
        case 2:
            if (!pb_varint(&p, end, &v) || v > (uint64_t)(end - p)) return false;
            if ((tag >> 3) == field && nth-- == 0) {
                *out = p;
                *out_len = (size_t)v;
                return true;
            }
            p += v;
            break;
        default: return false;
        }
    }
    return false;
}

/* A message's LEN field as a string, for names */
static bool pb_string_is(const uint8_t *msg, size_t n, uint32_t field, const char *want) {
    const uint8_t *s;
    size_t len;
    return pb_field(msg, n, field, 0, &s, &len) && len == strlen(want) &&
           memcmp(s, want, len) == 0;
}

/* A state is a function input of stateType (ValueType 5 wrapping a tensor) and an entry of
 * ModelDescription.state (13, FeatureType.stateType 8 with an FP16 array), never an input; a
 * write_state op has no outputs. */
TEST(mil_builder_states) {
    qw_mil *m = NULL;
    qw_error err = {0};
    CHECK_OK(qw_mil_create(NULL, &m, &err), &err);
    if (!m) return;
    const int64_t dims[2] = {2, 3};
    qw_mil_var st = qw_mil_state(m, "acc", "an accumulator", 2, dims);
    CHECK(st.name && strcmp(st.name, "acc") == 0 && st.dtype == QW_MIL_FP16 && st.rank == 2);
    const qw_mil_arg rargs[] = {{"input", &st, 1}};
    qw_mil_var r = qw_mil_op(m, "read_state", "r", rargs, 1, st);
    const qw_mil_arg wargs[] = {{"input", &st, 1}, {"data", &r, 1}};
    qw_mil_op_no_output(m, "write_state", "w", wargs, 2);
    qw_mil_output(m, r);
    uint8_t *buf = NULL;
    size_t len = 0;
    const qw_mil_model_info info = {9, "CoreML8", NULL, 0, NULL, 0, NULL, NULL, 0};
    CHECK_OK(qw_mil_serialize(m, &info, &buf, &len, &err), &err);
    const uint8_t *desc, *feat, *ft, *sft, *arr, *prog, *fe, *fn, *in, *vt, *sv, *be, *blk, *op;
    size_t ldesc, lfeat, lft, lsft, larr, lprog, lfe, lfn, lin, lvt, lsv, lbe, lblk, lop;
    CHECK(buf && pb_field(buf, len, 2, 0, &desc, &ldesc));
    CHECK(!pb_field(desc, ldesc, 1, 0, &feat, &lfeat)); /* no description.input */
    CHECK(pb_field(desc, ldesc, 13, 0, &feat, &lfeat) && pb_string_is(feat, lfeat, 1, "acc"));
    CHECK(pb_field(feat, lfeat, 3, 0, &ft, &lft) && pb_field(ft, lft, 8, 0, &sft, &lsft));
    CHECK(pb_field(sft, lsft, 1, 0, &arr, &larr));
    /* ArrayFeatureType: packed shape {2, 3}, dataType FLOAT16 (65552 = 0x10010), no range */
    static const uint8_t ARR[] = {0x0a, 0x02, 0x02, 0x03, 0x10, 0x90, 0x80, 0x04};
    CHECK(larr == sizeof ARR && memcmp(arr, ARR, sizeof ARR) == 0);
    CHECK(pb_field(buf, len, 502, 0, &prog, &lprog) && pb_field(prog, lprog, 2, 0, &fe, &lfe));
    CHECK(pb_field(fe, lfe, 2, 0, &fn, &lfn) && pb_field(fn, lfn, 1, 0, &in, &lin));
    CHECK(pb_string_is(in, lin, 1, "acc") && pb_field(in, lin, 2, 0, &vt, &lvt));
    CHECK(!pb_field(vt, lvt, 1, 0, &sv, &lsv) && pb_field(vt, lvt, 5, 0, &sv, &lsv));
    CHECK(pb_field(sv, lsv, 1, 0, &vt, &lvt) && pb_field(vt, lvt, 1, 0, &sv, &lsv)); /* tensor */
    CHECK(pb_field(fn, lfn, 3, 0, &be, &lbe) && pb_field(be, lbe, 2, 0, &blk, &lblk));
    CHECK(pb_field(blk, lblk, 3, 1, &op, &lop) && pb_string_is(op, lop, 1, "write_state"));
    CHECK(!pb_field(op, lop, 3, 0, &sv, &lsv)); /* no outputs */
    qw_free(buf);
    /* after a failure both are no-ops */
    const uint16_t h[16] = {0};
    const int64_t d16[1] = {16};
    CHECK(qw_mil_const_data(m, "c", QW_MIL_FP16, 1, d16, h, sizeof h).name == NULL);
    CHECK(qw_mil_state(m, "late", NULL, 2, dims).name == NULL);
    qw_mil_op_no_output(m, "write_state", "w2", wargs, 2);
    CHECK_EQ_INT(qw_mil_status(m, NULL), QW_ERR_INTERNAL);
    qw_mil_free(m);
}

RUN_TESTS(TEST_CASE(blob_storage_layout), TEST_CASE(blob_writer_refuses_misuse),
          TEST_CASE(manifest_names_both_items), TEST_CASE(kmeans1d_is_optimal),
          TEST_CASE(kmeans1d_refuses_bad_input), TEST_CASE(mil_builder_errors_are_sticky),
          TEST_CASE(mil_builder_states))
