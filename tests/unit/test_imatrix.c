/* test_imatrix — the importance-matrix reader (both of llama-imatrix's formats) on good files and
 * on every kind of damage: truncation at every byte, huge and negative counts, non-finite and
 * negative values, names too long, missing counts, missing metadata. Each damaged file is read
 * from an allocation of exactly its size, so a read past the end is an AddressSanitizer error. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core.h"
#include "imatrix.h"
#include "test.h"

/* ---- building files -------------------------------------------------------------------------- */

static void put(qw_buf *b, const void *p, size_t n) { qw_buf_append(b, p, n); }
static void put_i32(qw_buf *b, int32_t v) { put(b, &v, 4); }
static void put_u32(qw_buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(qw_buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(qw_buf *b, float v) { put(b, &v, 4); }

static void put_entry(qw_buf *b, const char *name, int32_t ncall, int32_t nval,
                      const float *values) {
    put_i32(b, (int32_t)strlen(name));
    put(b, name, strlen(name));
    put_i32(b, ncall);
    put_i32(b, nval);
    put(b, values, 4 * (size_t)nval);
}

static const float A[4] = {4.0f, 8.0f, 1.0f, 0.5f};
static const float B[2] = {3.0f, 0.25f};
static const float A2[4] = {10.0f, 20.0f, 30.0f, 40.0f};

/* Three entries ("blk.0.ffn_up.weight" twice: the second wins) and a trailer. Sets the offset
 * where the entries end. */
static void legacy_file(qw_buf *b, bool trailer, size_t *entries_end) {
    memset(b, 0, sizeof *b);
    put_i32(b, 3);
    put_entry(b, "blk.0.ffn_up.weight", 4, 4, A);
    put_entry(b, "output.weight", 0, 2, B); /* no calls: the sums are used as they are */
    put_entry(b, "blk.0.ffn_up.weight", 10, 4, A2);
    if (entries_end) *entries_end = b->len;
    if (trailer) {
        put_i32(b, 12);
        put_i32(b, 4);
        put(b, "wiki", 4);
    }
}

/* Opens `size` bytes of `data` from an allocation of exactly that size. */
static qw_status open_exact(const void *data, size_t size, qw_imatrix **out, qw_error *err) {
    void *copy = qw_malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    qw_status st = qw_imatrix_open_memory(copy, size, "test.imatrix", out, err);
    qw_free(copy);
    return st;
}

static void expect_corrupt(const qw_buf *b, const char *needle) {
    qw_imatrix *m = NULL;
    qw_error err;
    qw_status st = open_exact(b->data, b->len, &m, &err);
    CHECK_EQ_INT(st, QW_ERR_CORRUPT);
    CHECK(m == NULL);
    if (st != QW_OK && needle && !strstr(err.message, needle)) {
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err.message, needle);
        CHECK(false);
    }
    qw_imatrix_free(m);
}

/* ---- legacy .dat ----------------------------------------------------------------------------- */

TEST(legacy_values_are_divided_by_calls) {
    qw_buf b;
    legacy_file(&b, true, NULL);
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(open_exact(b.data, b.len, &m, &err), &err);
    if (m) {
        CHECK(!qw_imatrix_is_gguf(m));
        CHECK_EQ_INT(qw_imatrix_count(m), 2);
        CHECK_EQ_STR(qw_imatrix_at(m, 0)->name, "blk.0.ffn_up.weight"); /* sorted */
        CHECK_EQ_STR(qw_imatrix_at(m, 1)->name, "output.weight");
        const qw_imatrix_entry *e = qw_imatrix_find(m, "blk.0.ffn_up.weight");
        CHECK(e && e->n_values == 4);
        for (int i = 0; e && i < 4; i++) CHECK(e->values[i] == A2[i] / 10.0f); /* last wins */
        e = qw_imatrix_find(m, "output.weight");
        CHECK(e && e->n_values == 2 && e->values[0] == 3.0f && e->values[1] == 0.25f);
        CHECK(qw_imatrix_find(m, "token_embd.weight") == NULL);
        CHECK_EQ_STR(qw_imatrix_dataset(m), "wiki");
        CHECK_EQ_INT(qw_imatrix_chunks(m), 12);
    }
    qw_imatrix_free(m);
    qw_buf_free(&b);
}

TEST(legacy_without_trailer) {
    qw_buf b;
    legacy_file(&b, false, NULL);
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(open_exact(b.data, b.len, &m, &err), &err);
    CHECK(m && qw_imatrix_dataset(m) == NULL && qw_imatrix_chunks(m) == 0);
    qw_imatrix_free(m);
    qw_buf_free(&b);
}

TEST(legacy_truncated_at_every_byte) {
    qw_buf b;
    size_t entries_end;
    legacy_file(&b, true, &entries_end);
    for (size_t len = 0; len < b.len; len++) {
        qw_imatrix *m = NULL;
        qw_error err;
        qw_status st = open_exact(b.data, len, &m, &err);
        if (len == entries_end) { /* an older file, without the trailer */
            CHECK_OK(st, &err);
        } else if (st != QW_ERR_CORRUPT) {
            fprintf(stderr, "  truncated at %zu of %zu: %s\n", len, b.len, qw_status_name(st));
            CHECK(false);
        }
        qw_imatrix_free(m);
    }
    qw_buf_free(&b);
}

TEST(legacy_huge_and_negative_counts) {
    qw_buf b = {0};
    put_i32(&b, INT32_MAX); /* entries: each must still be in the file */
    put_entry(&b, "a.weight", 1, 4, A);
    expect_corrupt(&b, "truncated");
    qw_buf_free(&b);

    static const int32_t bad_counts[] = {0, -1, INT32_MIN};
    for (size_t i = 0; i < 3; i++) {
        b = (qw_buf){0};
        put_i32(&b, bad_counts[i]);
        expect_corrupt(&b, "entries");
        qw_buf_free(&b);
    }

    b = (qw_buf){0}; /* a value count past the end of the file */
    put_i32(&b, 1);
    put_i32(&b, 8);
    put(&b, "a.weight", 8);
    put_i32(&b, 1);
    put_i32(&b, INT32_MAX);
    put_f32(&b, 1.0f);
    expect_corrupt(&b, "truncated");
    qw_buf_free(&b);

    for (int32_t nval = 0; nval >= -1; nval--) {
        b = (qw_buf){0};
        put_i32(&b, 1);
        put_entry(&b, "a.weight", 1, 0, A);
        memcpy(b.data + 4 + 4 + 8 + 4, &nval, 4);
        expect_corrupt(&b, "values");
        qw_buf_free(&b);
    }

    static const int32_t bad_lengths[] = {-1, INT32_MIN, INT32_MAX, 1 << 20};
    for (size_t i = 0; i < 4; i++) {
        b = (qw_buf){0};
        put_i32(&b, 1);
        put_i32(&b, bad_lengths[i]);
        put(&b, "a.weight", 8);
        expect_corrupt(&b, "length");
        qw_buf_free(&b);
    }

    b = (qw_buf){0}; /* a dataset name longer than the rest of the file */
    legacy_file(&b, false, NULL);
    put_i32(&b, 3);
    put_i32(&b, INT32_MAX);
    put(&b, "wiki", 4);
    expect_corrupt(&b, "dataset");
    qw_buf_free(&b);

    b = (qw_buf){0};
    legacy_file(&b, false, NULL);
    put_i32(&b, -5); /* negative chunk count */
    put_i32(&b, 0);
    expect_corrupt(&b, "chunk");
    qw_buf_free(&b);

    b = (qw_buf){0};
    legacy_file(&b, true, NULL);
    put(&b, "xyz", 3); /* bytes after the dataset name */
    expect_corrupt(&b, "unexpected bytes");
    qw_buf_free(&b);
}

TEST(legacy_bad_values) {
    const float bad[] = {NAN, INFINITY, -INFINITY, -1.0f, -1e-30f};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float values[4] = {1.0f, 2.0f, bad[i], 4.0f};
        qw_buf b = {0};
        put_i32(&b, 1);
        put_entry(&b, "blk.3.attn_q.weight", 2, 4, values);
        expect_corrupt(&b, "blk.3.attn_q.weight");
        qw_buf_free(&b);
    }
    float zeros[2] = {0.0f, -0.0f}; /* zero importance is legal */
    qw_buf b = {0};
    put_i32(&b, 1);
    put_entry(&b, "z.weight", 1, 2, zeros);
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(open_exact(b.data, b.len, &m, &err), &err);
    qw_imatrix_free(m);
    qw_buf_free(&b);
}

TEST(legacy_names) {
    char name[80];
    memset(name, 'x', sizeof name);
    name[63] = '\0'; /* 63 bytes: the longest GGUF tensor name */
    qw_buf b = {0};
    put_i32(&b, 1);
    put_entry(&b, name, 1, 2, B);
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(open_exact(b.data, b.len, &m, &err), &err);
    CHECK(m && qw_imatrix_find(m, name) != NULL);
    qw_imatrix_free(m);
    qw_buf_free(&b);

    name[63] = 'x';
    name[64] = '\0'; /* one byte too many */
    b = (qw_buf){0};
    put_i32(&b, 1);
    put_entry(&b, name, 1, 2, B);
    expect_corrupt(&b, "length 64");
    qw_buf_free(&b);

    b = (qw_buf){0};
    put_i32(&b, 1);
    put_entry(&b, "", 1, 2, B);
    expect_corrupt(&b, "empty");
    qw_buf_free(&b);

    b = (qw_buf){0};
    put_i32(&b, 1);
    put_i32(&b, 5);
    put(&b, "ab\0cd", 5);
    put_i32(&b, 1);
    put_i32(&b, 2);
    put(&b, B, 8);
    expect_corrupt(&b, "NUL");
    qw_buf_free(&b);
}

/* ---- GGUF ------------------------------------------------------------------------------------ */

typedef struct gguf_tensor_spec {
    const char *name;
    uint32_t type; /* ggml id: 0 f32, 1 f16 */
    int64_t ne0, ne1;
    const float *data;
} gguf_tensor_spec;

typedef struct gguf_spec {
    bool with_datasets, with_chunk_count, with_chunk_size;
    const gguf_tensor_spec *tensors;
    size_t n_tensors;
} gguf_spec;

static void put_str(qw_buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void pad_to_32(qw_buf *b) {
    static const char zeros[32];
    if (b->len % 32) put(b, zeros, 32 - b->len % 32);
}

static size_t tensor_bytes(const gguf_tensor_spec *t) {
    return (size_t)(t->ne0 * t->ne1) * (t->type == 1 ? 2 : 4);
}

/* Writes the file; returns where the last tensor's data ends (its padding may be missing). */
static size_t gguf_file(qw_buf *b, const gguf_spec *s) {
    size_t data_end = 0;
    memset(b, 0, sizeof *b);
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, s->n_tensors);
    put_u64(b, 1 + s->with_datasets + s->with_chunk_count + s->with_chunk_size);
    put_str(b, "general.type");
    put_u32(b, 8);
    put_str(b, "imatrix");
    if (s->with_datasets) {
        put_str(b, "imatrix.datasets");
        put_u32(b, 9);
        put_u32(b, 8);
        put_u64(b, 2);
        put_str(b, "wiki.train.raw");
        put_str(b, "code.txt");
    }
    if (s->with_chunk_count) {
        put_str(b, "imatrix.chunk_count");
        put_u32(b, 4);
        put_u32(b, 23);
    }
    if (s->with_chunk_size) {
        put_str(b, "imatrix.chunk_size");
        put_u32(b, 4);
        put_u32(b, 512);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const gguf_tensor_spec *t = &s->tensors[i];
        put_str(b, t->name);
        put_u32(b, 2);
        put_u64(b, (uint64_t)t->ne0);
        put_u64(b, (uint64_t)t->ne1);
        put_u32(b, t->type);
        put_u64(b, offset);
        offset += (tensor_bytes(t) + 31) / 32 * 32;
    }
    pad_to_32(b);
    for (size_t i = 0; i < s->n_tensors; i++) {
        const gguf_tensor_spec *t = &s->tensors[i];
        if (t->type == 1) {
            static const uint16_t one_half[64] = {0};
            put(b, one_half, tensor_bytes(t));
        } else {
            put(b, t->data, tensor_bytes(t));
        }
        data_end = b->len;
        pad_to_32(b);
    }
    return data_end;
}

/* a: 2 matrices (experts) of 4 columns, the second never saw a token; b: 1 matrix of 3 */
static const float A_SUMS[8] = {2.0f, 4.0f, 6.0f, 8.0f, 5.0f, 5.0f, 5.0f, 5.0f};
static const float A_COUNTS[2] = {2.0f, 0.0f};
static const float B_SUMS[3] = {9.0f, 3.0f, 0.0f};
static const float B_COUNTS[1] = {3.0f};

static gguf_tensor_spec good_tensors[] = {
    {"blk.0.ffn_up_exps.weight.in_sum2", 0, 4, 2, A_SUMS},
    {"blk.0.ffn_up_exps.weight.counts", 0, 1, 2, A_COUNTS},
    {"blk.0.ffn_up_exps.weight.in_sum", 0, 4, 2, A_SUMS}, /* other statistics: ignored */
    {"output.weight.in_sum2", 0, 3, 1, B_SUMS},
    {"output.weight.counts", 0, 1, 1, B_COUNTS},
};

static gguf_spec good_gguf(void) {
    return (gguf_spec){true, true, true, good_tensors,
                       sizeof good_tensors / sizeof good_tensors[0]};
}

TEST(gguf_values_are_sums_over_counts) {
    qw_buf b;
    gguf_spec s = good_gguf();
    gguf_file(&b, &s);
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(open_exact(b.data, b.len, &m, &err), &err);
    if (m) {
        CHECK(qw_imatrix_is_gguf(m));
        CHECK_EQ_INT(qw_imatrix_count(m), 2);
        const qw_imatrix_entry *e = qw_imatrix_find(m, "blk.0.ffn_up_exps.weight");
        CHECK(e && e->n_values == 8);
        static const float want[8] = {1.0f, 2.0f, 3.0f, 4.0f, 1.0f, 1.0f, 1.0f, 1.0f};
        for (int i = 0; e && i < 8; i++) CHECK(e->values[i] == want[i]);
        e = qw_imatrix_find(m, "output.weight");
        CHECK(e && e->n_values == 3 && e->values[0] == 3.0f && e->values[1] == 1.0f &&
              e->values[2] == 0.0f);
        CHECK_EQ_STR(qw_imatrix_dataset(m), "wiki.train.raw");
        CHECK_EQ_INT(qw_imatrix_chunks(m), 23);
    }
    qw_imatrix_free(m);
    qw_buf_free(&b);
}

TEST(gguf_truncated_at_every_byte) {
    qw_buf b;
    gguf_spec s = good_gguf();
    size_t data_end = gguf_file(&b, &s);
    for (size_t len = 0; len < b.len; len++) {
        qw_imatrix *m = NULL;
        qw_error err;
        qw_status st = open_exact(b.data, len, &m, &err);
        if (len >= data_end) { /* only the final padding is missing: GGUF readers accept that */
            CHECK_OK(st, &err);
        } else if (st == QW_OK) {
            fprintf(stderr, "  truncated at %zu of %zu: accepted\n", len, b.len);
            CHECK(false);
        }
        CHECK(m == NULL || len >= data_end);
        qw_imatrix_free(m);
    }
    qw_buf_free(&b);
}

TEST(gguf_missing_counts_and_metadata) {
    qw_buf b;
    gguf_tensor_spec no_counts[] = {good_tensors[0], good_tensors[1], good_tensors[3]};
    gguf_spec s = {true, true, true, no_counts, 3};
    gguf_file(&b, &s);
    expect_corrupt(&b, "output.weight.counts");
    qw_buf_free(&b);

    gguf_tensor_spec no_sums[] = {good_tensors[0], good_tensors[1], good_tensors[4]};
    s = (gguf_spec){true, true, true, no_sums, 3};
    gguf_file(&b, &s);
    expect_corrupt(&b, "output.weight.in_sum2");
    qw_buf_free(&b);

    gguf_tensor_spec none[] = {good_tensors[2]};
    s = (gguf_spec){true, true, true, none, 1};
    gguf_file(&b, &s);
    expect_corrupt(&b, "no entries");
    qw_buf_free(&b);

    for (int missing = 0; missing < 3; missing++) {
        s = good_gguf();
        if (missing == 0) s.with_datasets = false;
        if (missing == 1) s.with_chunk_count = false;
        if (missing == 2) s.with_chunk_size = false;
        gguf_file(&b, &s);
        expect_corrupt(&b, "metadata");
        qw_buf_free(&b);
    }
}

TEST(gguf_bad_shapes_types_and_values) {
    static const float three_counts[3] = {1.0f, 1.0f, 1.0f};
    gguf_tensor_spec wrong_counts[] = {good_tensors[0], {"blk.0.ffn_up_exps.weight.counts", 0, 1,
                                                         3, three_counts}};
    gguf_spec s = {true, true, true, wrong_counts, 2};
    qw_buf b;
    gguf_file(&b, &s);
    expect_corrupt(&b, "3 counts");
    qw_buf_free(&b);

    gguf_tensor_spec f16_sums[] = {{"x.weight.in_sum2", 1, 4, 1, NULL},
                                   {"x.weight.counts", 0, 1, 1, B_COUNTS}};
    s = (gguf_spec){true, true, true, f16_sums, 2};
    gguf_file(&b, &s);
    expect_corrupt(&b, "f32");
    qw_buf_free(&b);

    static const float nan_sums[3] = {1.0f, NAN, 1.0f};
    static const float neg_count[1] = {-2.0f};
    static const float inf_count[1] = {INFINITY};
    gguf_tensor_spec bad_sum[] = {{"x.weight.in_sum2", 0, 3, 1, nan_sums},
                                  {"x.weight.counts", 0, 1, 1, B_COUNTS}};
    gguf_tensor_spec bad_count[] = {{"x.weight.in_sum2", 0, 3, 1, B_SUMS},
                                    {"x.weight.counts", 0, 1, 1, neg_count}};
    gguf_tensor_spec inf_counts[] = {{"x.weight.in_sum2", 0, 3, 1, B_SUMS},
                                     {"x.weight.counts", 0, 1, 1, inf_count}};
    gguf_tensor_spec *bad[] = {bad_sum, bad_count, inf_counts};
    for (int i = 0; i < 3; i++) {
        s = (gguf_spec){true, true, true, bad[i], 2};
        gguf_file(&b, &s);
        expect_corrupt(&b, "x.weight");
        qw_buf_free(&b);
    }
}

/* ---- files ----------------------------------------------------------------------------------- */

TEST(open_from_path) {
    char path[600];
    snprintf(path, sizeof path, "%s/test.imatrix.dat", test_tmpdir());
    qw_buf b;
    legacy_file(&b, true, NULL);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(b.data, 1, b.len, f);
        fclose(f);
    }
    qw_imatrix *m = NULL;
    qw_error err;
    CHECK_OK(qw_imatrix_open(path, &m, &err), &err);
    CHECK_EQ_INT(qw_imatrix_count(m), 2);
    qw_imatrix_free(m);
    qw_buf_free(&b);

    snprintf(path, sizeof path, "%s/absent.imatrix", test_tmpdir());
    CHECK_EQ_INT(qw_imatrix_open(path, &m, &err), QW_ERR_NOT_FOUND);
    CHECK(m == NULL);
    qw_imatrix_free(NULL);
}

RUN_TESTS(TEST_CASE(legacy_values_are_divided_by_calls), TEST_CASE(legacy_without_trailer),
          TEST_CASE(legacy_truncated_at_every_byte), TEST_CASE(legacy_huge_and_negative_counts),
          TEST_CASE(legacy_bad_values), TEST_CASE(legacy_names),
          TEST_CASE(gguf_values_are_sums_over_counts), TEST_CASE(gguf_truncated_at_every_byte),
          TEST_CASE(gguf_missing_counts_and_metadata), TEST_CASE(gguf_bad_shapes_types_and_values),
          TEST_CASE(open_from_path))
