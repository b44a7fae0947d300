/* GGUF reader and writer: round trips of every value type, and every defect of gguf.md §8 built
 * byte by byte, each of which must be an error naming what is wrong. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "file.h"
#include "gguf.h"
#include "test.h"

/* ---- a raw builder for hand-made (and broken) files ----------------------------------------- */

static void put(qw_buf *b, const void *p, size_t n) { qw_buf_append(b, p, n); }
static void put_u32(qw_buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(qw_buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(qw_buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(qw_buf *b, size_t alignment) {
    static const char zeros[64];
    put(b, zeros, (alignment - b->len % alignment) % alignment);
}

/* The knobs each corrupt case turns. */
typedef struct raw_spec {
    const char *magic;
    uint32_t version;
    uint64_t n_tensors_override; /* 0: real count */
    uint64_t n_kv_override;
    int duplicate_key;
    uint32_t value_type;         /* of the second KV; default u32 */
    int nested_array;
    uint64_t array_count;        /* of the array KV; 0: 3 */
    int alignment_kv;            /* 0 none, else value; negative: wrong type */
    const char *tensor_name;
    uint32_t n_dims;
    uint64_t ne0;
    uint64_t ne1;
    uint32_t ggml_type;
    uint64_t offset2;            /* offset of the second tensor; 0: correct */
    int duplicate_tensor;
    size_t truncate_data;        /* bytes to cut from the end */
} raw_spec;

static raw_spec default_spec(void) {
    raw_spec s = {0};
    s.magic = "GGUF";
    s.version = 3;
    s.value_type = QW_GGUF_UINT32;
    s.tensor_name = "blk.0.attn_q.weight";
    s.n_dims = 2;
    s.ne0 = 32;
    s.ne1 = 2;
    s.ggml_type = 0; /* f32 */
    return s;
}

/* Two tensors: "<tensor_name>" [ne0, ne1] of ggml_type and "second" f32 [8]. */
static void build_raw(const raw_spec *s, qw_buf *b) {
    b->len = 0;
    put(b, s->magic, 4);
    put_u32(b, s->version);
    uint64_t n_kv = 3 + (s->duplicate_key ? 1 : 0) + (s->alignment_kv ? 1 : 0);
    put_u64(b, s->n_tensors_override ? s->n_tensors_override : 2);
    put_u64(b, s->n_kv_override ? s->n_kv_override : n_kv);
    put_str(b, "general.architecture");
    put_u32(b, QW_GGUF_STRING);
    put_str(b, "llama");
    put_str(b, "llama.block_count");
    put_u32(b, s->value_type);
    put_u32(b, 1);
    put_str(b, "tokenizer.ggml.scores");
    put_u32(b, QW_GGUF_ARRAY);
    put_u32(b, s->nested_array ? QW_GGUF_ARRAY : QW_GGUF_FLOAT32);
    uint64_t count = s->array_count ? s->array_count : 3;
    put_u64(b, count);
    float f[3] = {1, 2, 3};
    put(b, f, sizeof f);
    if (s->duplicate_key) {
        put_str(b, "llama.block_count");
        put_u32(b, QW_GGUF_UINT32);
        put_u32(b, 2);
    }
    if (s->alignment_kv) {
        put_str(b, "general.alignment");
        if (s->alignment_kv < 0) {
            put_u32(b, QW_GGUF_UINT64);
            put_u64(b, 32);
        } else {
            put_u32(b, QW_GGUF_UINT32);
            put_u32(b, (uint32_t)s->alignment_kv);
        }
    }
    size_t alignment = s->alignment_kv > 0 ? (size_t)s->alignment_kv : 32;
    /* tensor 1 */
    put_str(b, s->tensor_name);
    put_u32(b, s->n_dims);
    for (uint32_t d = 0; d < s->n_dims; d++) put_u64(b, d == 0 ? s->ne0 : d == 1 ? s->ne1 : 1);
    put_u32(b, s->ggml_type);
    put_u64(b, 0);
    uint64_t bytes1 = s->ne0 * s->ne1 * 4;
    uint64_t padded1 = (bytes1 + alignment - 1) / alignment * alignment;
    /* tensor 2 */
    put_str(b, s->duplicate_tensor ? s->tensor_name : "second");
    put_u32(b, 1);
    put_u64(b, 8);
    put_u32(b, 0);
    put_u64(b, s->offset2 ? s->offset2 : padded1);
    pad_to(b, alignment);
    size_t data_start = b->len;
    for (uint64_t i = 0; i < padded1 + 8 * 4 && b->len < data_start + (1u << 20); i++) {
        uint8_t v = (uint8_t)i;
        put(b, &v, 1);
    }
    pad_to(b, alignment);
    if (s->truncate_data) b->len -= s->truncate_data;
}

/* Opens a buffer and expects `status` with `needle` in the message. */
static void expect_error(const raw_spec *s, qw_status status, const char *needle) {
    qw_buf b = {0};
    build_raw(s, &b);
    qw_gguf *g = NULL;
    qw_error err;
    qw_status st = qw_gguf_open_memory(b.data, b.len, "case.gguf", &g, &err);
    CHECK_EQ_INT(st, status);
    CHECK(g == NULL);
    if (st != QW_OK) {
        if (!strstr(err.message, needle)) {
            fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err.message, needle);
            CHECK(0);
        }
        CHECK(strstr(err.message, "case.gguf") != NULL);
    }
    qw_gguf_close(g);
    qw_buf_free(&b);
}

TEST(raw_valid_file_opens) {
    raw_spec s = default_spec();
    qw_buf b = {0};
    build_raw(&s, &b);
    qw_gguf *g = NULL;
    qw_error err;
    CHECK_OK(qw_gguf_open_memory(b.data, b.len, "ok.gguf", &g, &err), &err);
    if (g) {
        CHECK_EQ_INT(qw_gguf_tensor_count(g), 2);
        CHECK_EQ_INT(qw_gguf_kv_count(g), 3);
        const qw_gguf_tensor *t = qw_gguf_find_tensor(g, "second");
        CHECK(t && t->offset == 256 && t->bytes == 32);
        uint64_t v = 0;
        CHECK(qw_gguf_get_u64(g, "llama.block_count", &v) && v == 1);
    }
    qw_gguf_close(g);
    qw_buf_free(&b);
}

TEST(every_truncation_is_an_error) {
    raw_spec s = default_spec();
    qw_buf b = {0};
    build_raw(&s, &b);
    for (size_t n = 0; n < b.len; n++) {
        qw_gguf *g = NULL;
        qw_error err;
        qw_status st = qw_gguf_open_memory(b.data, n, "cut.gguf", &g, &err);
        if (st == QW_OK) {
            fprintf(stderr, "  truncated to %zu of %zu bytes opened\n", n, b.len);
            CHECK(0);
        }
        qw_gguf_close(g);
    }
    qw_buf_free(&b);
}

TEST(corrupt_headers) {
    raw_spec s;
    s = default_spec(); s.magic = "GGML"; expect_error(&s, QW_ERR_CORRUPT, "not a GGUF file");
    s = default_spec(); s.version = 1; expect_error(&s, QW_ERR_UNSUPPORTED_INPUT, "version 1");
    s = default_spec(); s.version = 4; expect_error(&s, QW_ERR_UNSUPPORTED_INPUT, "version 4");
    s = default_spec(); s.version = 0x03000000; expect_error(&s, QW_ERR_UNSUPPORTED_INPUT, "big-endian");
    s = default_spec(); s.n_tensors_override = UINT64_MAX / 2; expect_error(&s, QW_ERR_CORRUPT, "tensors");
    s = default_spec(); s.n_kv_override = 1ull << 60; expect_error(&s, QW_ERR_CORRUPT, "metadata entries");
}

TEST(corrupt_metadata) {
    raw_spec s;
    s = default_spec(); s.duplicate_key = 1; expect_error(&s, QW_ERR_CORRUPT, "duplicate key");
    s = default_spec(); s.value_type = 13; expect_error(&s, QW_ERR_CORRUPT, "unknown value type 13");
    s = default_spec(); s.nested_array = 1; expect_error(&s, QW_ERR_CORRUPT, "nested");
    s = default_spec(); s.array_count = 1ull << 40; expect_error(&s, QW_ERR_CORRUPT, "elements");
    s = default_spec(); s.alignment_kv = 48; expect_error(&s, QW_ERR_CORRUPT, "power of two");
    s = default_spec(); s.alignment_kv = -1; expect_error(&s, QW_ERR_CORRUPT, "must be u32");
}

TEST(corrupt_tensor_infos) {
    raw_spec s;
    s = default_spec();
    s.tensor_name = "a.name.that.is.far.too.long.for.ggml.which.allows.sixty.three.bytes.x";
    expect_error(&s, QW_ERR_CORRUPT, "name of");
    s = default_spec(); s.n_dims = 5; expect_error(&s, QW_ERR_CORRUPT, "5 dimensions");
    s = default_spec(); s.ggml_type = 4; expect_error(&s, QW_ERR_UNSUPPORTED_INPUT, "ggml type 4");
    s = default_spec(); s.ggml_type = 999; expect_error(&s, QW_ERR_UNSUPPORTED_INPUT, "ggml type 999");
    s = default_spec(); s.ggml_type = 8; s.ne0 = 33; expect_error(&s, QW_ERR_CORRUPT, "not a multiple");
    s = default_spec(); s.ne1 = 1ull << 62; expect_error(&s, QW_ERR_CORRUPT, "impossible shape");
    s = default_spec(); s.ne0 = 1ull << 63; expect_error(&s, QW_ERR_CORRUPT, "impossible shape");
    s = default_spec(); s.offset2 = 64; expect_error(&s, QW_ERR_CORRUPT, "expected 256");
    s = default_spec(); s.duplicate_tensor = 1; expect_error(&s, QW_ERR_CORRUPT, "duplicate tensor");
    s = default_spec(); s.truncate_data = 40; expect_error(&s, QW_ERR_CORRUPT, "past the end");
}

TEST(random_mutations_never_crash) {
    raw_spec s = default_spec();
    qw_buf b = {0};
    build_raw(&s, &b);
    uint32_t rng = 12345;
    char *copy = malloc(b.len);
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, b.data, b.len);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            rng = rng * 1664525u + 1013904223u;
            size_t at = (rng >> 8) % b.len;
            rng = rng * 1664525u + 1013904223u;
            copy[at] = (char)(rng >> 24);
        }
        qw_gguf *g = NULL;
        if (qw_gguf_open_memory(copy, b.len, "mutant.gguf", &g, NULL) == QW_OK) {
            opened++;
            /* whatever opened must be internally consistent */
            for (size_t i = 0; i < qw_gguf_tensor_count(g); i++) {
                const qw_gguf_tensor *t = qw_gguf_tensor_at(g, i);
                CHECK(t->data >= (const uint8_t *)copy &&
                      t->data + t->bytes <= (const uint8_t *)copy + b.len);
            }
        }
        qw_gguf_close(g);
    }
    CHECK(opened > 0); /* some mutations only touch tensor data */
    free(copy);
    qw_buf_free(&b);
}

/* ---- writer round trip ---------------------------------------------------------------------- */

TEST(writer_round_trip_all_types) {
    char *path = qw_path_join(test_tmpdir(), "roundtrip.gguf");
    unlink(path); /* left by an earlier run */
    qw_gguf_writer *w = NULL;
    qw_error err;
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    qw_gguf_value v = {0};
    v.type = QW_GGUF_UINT8; v.v.u64 = 200; qw_gguf_writer_set(w, "t.u8", &v, &err);
    v.type = QW_GGUF_INT8; v.v.i64 = -100; qw_gguf_writer_set(w, "t.i8", &v, &err);
    v.type = QW_GGUF_UINT16; v.v.u64 = 60000; qw_gguf_writer_set(w, "t.u16", &v, &err);
    v.type = QW_GGUF_INT16; v.v.i64 = -30000; qw_gguf_writer_set(w, "t.i16", &v, &err);
    CHECK_OK(qw_gguf_writer_set_u32(w, "t.u32", 4000000000u, &err), &err);
    CHECK_OK(qw_gguf_writer_set_i32(w, "t.i32", -2000000000, &err), &err);
    CHECK_OK(qw_gguf_writer_set_f32(w, "t.f32", 0.25f, &err), &err);
    CHECK_OK(qw_gguf_writer_set_bool(w, "t.bool", true, &err), &err);
    CHECK_OK(qw_gguf_writer_set_str(w, "t.str", "héllo", &err), &err);
    CHECK_OK(qw_gguf_writer_set_u64(w, "t.u64", UINT64_MAX - 1, &err), &err);
    v.type = QW_GGUF_INT64; v.v.i64 = INT64_MIN + 1; qw_gguf_writer_set(w, "t.i64", &v, &err);
    v.type = QW_GGUF_FLOAT64; v.v.f64 = 1e300; qw_gguf_writer_set(w, "t.f64", &v, &err);
    int32_t ints[4] = {1, -2, 3, -4};
    CHECK_OK(qw_gguf_writer_set_array(w, "t.arr_i32", QW_GGUF_INT32, ints, 4, &err), &err);
    const char *strs[3] = {"a", "", "ccc"};
    CHECK_OK(qw_gguf_writer_set_str_array(w, "t.arr_str", strs, 3, &err), &err);
    CHECK_OK(qw_gguf_writer_set_u32(w, "t.u32", 7, &err), &err); /* replaced in place */
    int64_t ne_a[2] = {64, 3}, ne_b[1] = {5}, ne_c[3] = {32, 2, 2};
    CHECK_OK(qw_gguf_writer_add_tensor(w, "a", QW_QTYPE_F16, 2, ne_a, &err), &err);
    CHECK_OK(qw_gguf_writer_add_tensor(w, "b", QW_QTYPE_F32, 1, ne_b, &err), &err);
    CHECK_OK(qw_gguf_writer_add_tensor(w, "c", QW_QTYPE_Q8_0, 3, ne_c, &err), &err);
    CHECK_EQ_INT(qw_gguf_writer_add_tensor(w, "a", QW_QTYPE_F32, 1, ne_b, &err),
                 QW_ERR_INVALID_ARG);
    CHECK_EQ_INT(qw_gguf_writer_add_tensor(w, "bad", QW_QTYPE_Q8_0, 1, ne_b, &err),
                 QW_ERR_INVALID_ARG);
    uint64_t expected = qw_gguf_writer_total_bytes(w);
    CHECK_OK(qw_gguf_writer_begin(w, path, &err), &err);
    uint8_t bytes_a[64 * 3 * 2], bytes_b[5 * 4], bytes_c[4 * 34];
    for (size_t i = 0; i < sizeof bytes_a; i++) bytes_a[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof bytes_b; i++) bytes_b[i] = (uint8_t)(i + 1);
    for (size_t i = 0; i < sizeof bytes_c; i++) bytes_c[i] = (uint8_t)(i * 3 + 1);
    /* a in two pieces, b and c in one call */
    CHECK_OK(qw_gguf_writer_write(w, bytes_a, 100, &err), &err);
    CHECK_OK(qw_gguf_writer_write(w, bytes_a + 100, sizeof bytes_a - 100, &err), &err);
    CHECK_OK(qw_gguf_writer_write(w, bytes_b, sizeof bytes_b, &err), &err);
    CHECK(!qw_path_exists(path)); /* nothing at the final name before finish */
    CHECK_OK(qw_gguf_writer_write(w, bytes_c, sizeof bytes_c, &err), &err);
    CHECK_OK(qw_gguf_writer_finish(w, &err), &err);
    qw_gguf_writer_free(w);

    qw_gguf *g = NULL;
    CHECK_OK(qw_gguf_open(path, &g, &err), &err);
    if (g) {
        qw_mapped m;
        CHECK_OK(qw_mapped_open(path, &m, &err), &err);
        CHECK_EQ_INT(m.size, expected);
        qw_mapped_close(&m);
        uint64_t u;
        int64_t i;
        double d;
        bool bv;
        CHECK(qw_gguf_get_u64(g, "t.u8", &u) && u == 200);
        CHECK(qw_gguf_get_i64(g, "t.i8", &i) && i == -100);
        CHECK(qw_gguf_get_u64(g, "t.u16", &u) && u == 60000);
        CHECK(qw_gguf_get_i64(g, "t.i16", &i) && i == -30000);
        CHECK(qw_gguf_get_u64(g, "t.u32", &u) && u == 7);
        CHECK(qw_gguf_get_i64(g, "t.i32", &i) && i == -2000000000);
        CHECK(qw_gguf_get_f64(g, "t.f32", &d) && d == 0.25);
        CHECK(qw_gguf_get_bool(g, "t.bool", &bv) && bv);
        CHECK(qw_gguf_get_u64(g, "t.u64", &u) && u == UINT64_MAX - 1);
        CHECK(qw_gguf_get_i64(g, "t.i64", &i) && i == INT64_MIN + 1);
        CHECK(qw_gguf_get_f64(g, "t.f64", &d) && d == 1e300);
        char *s = qw_gguf_get_string(g, "t.str");
        CHECK_EQ_STR(s, "héllo");
        qw_free(s);
        CHECK(qw_gguf_find_kv(g, "t.u32") == qw_gguf_kv_at(g, 4)); /* kept its position */
        const qw_gguf_kv *arr = qw_gguf_find_kv(g, "t.arr_i32");
        CHECK(arr && arr->value.v.arr.elem_type == QW_GGUF_INT32 && arr->value.v.arr.count == 4);
        if (arr) CHECK(memcmp(arr->value.v.arr.data, ints, sizeof ints) == 0);
        const qw_gguf_kv *sa = qw_gguf_find_kv(g, "t.arr_str");
        CHECK(sa && sa->value.v.arr.count == 3 && sa->value.v.arr.strs[2].len == 3);
        const qw_gguf_tensor *ta = qw_gguf_find_tensor(g, "a");
        const qw_gguf_tensor *tb = qw_gguf_find_tensor(g, "b");
        const qw_gguf_tensor *tc = qw_gguf_find_tensor(g, "c");
        CHECK(ta && tb && tc);
        if (ta && tb && tc) {
            CHECK(ta->type == QW_QTYPE_F16 && ta->ne[0] == 64 && ta->ne[1] == 3);
            CHECK(memcmp(ta->data, bytes_a, sizeof bytes_a) == 0);
            CHECK(memcmp(tb->data, bytes_b, sizeof bytes_b) == 0);
            CHECK(tc->n_dims == 3 && tc->ne[2] == 2 && tc->bytes == sizeof bytes_c);
            CHECK(memcmp(tc->data, bytes_c, sizeof bytes_c) == 0);
            CHECK(tb->offset % 32 == 0 && tc->offset % 32 == 0);
        }
    }
    qw_gguf_close(g);
    qw_free(path);
}

TEST(writer_abandoned_leaves_nothing) {
    char *path = qw_path_join(test_tmpdir(), "abandoned.gguf");
    qw_gguf_writer *w = NULL;
    qw_error err;
    qw_gguf_writer_create(&w, &err);
    int64_t ne[1] = {8};
    qw_gguf_writer_add_tensor(w, "x", QW_QTYPE_F32, 1, ne, &err);
    CHECK_OK(qw_gguf_writer_begin(w, path, &err), &err);
    float half[4] = {0};
    qw_gguf_writer_write(w, half, sizeof half, &err);
    CHECK_EQ_INT(qw_gguf_writer_finish(w, &err), QW_ERR_INTERNAL); /* incomplete tensor */
    qw_gguf_writer_free(w);
    CHECK(!qw_path_exists(path));
    qw_free(path);
}

TEST(custom_alignment) {
    char *path = qw_path_join(test_tmpdir(), "aligned.gguf");
    qw_gguf_writer *w = NULL;
    qw_error err;
    qw_gguf_writer_create(&w, &err);
    CHECK_OK(qw_gguf_writer_set_u32(w, "general.alignment", 64, &err), &err);
    CHECK_EQ_INT(qw_gguf_writer_set_u32(w, "general.alignment", 48, &err), QW_ERR_INVALID_ARG);
    qw_gguf_writer_set_u32(w, "general.alignment", 64, &err);
    int64_t ne[1] = {3};
    qw_gguf_writer_add_tensor(w, "x", QW_QTYPE_F32, 1, ne, &err);
    qw_gguf_writer_add_tensor(w, "y", QW_QTYPE_F32, 1, ne, &err);
    qw_gguf_writer_begin(w, path, &err);
    float v[6] = {1, 2, 3, 4, 5, 6};
    qw_gguf_writer_write(w, v, sizeof v, &err);
    CHECK_OK(qw_gguf_writer_finish(w, &err), &err);
    qw_gguf_writer_free(w);
    qw_gguf *g = NULL;
    CHECK_OK(qw_gguf_open(path, &g, &err), &err);
    if (g) {
        CHECK_EQ_INT(qw_gguf_alignment(g), 64);
        CHECK_EQ_INT(qw_gguf_data_offset(g) % 64, 0);
        CHECK_EQ_INT(qw_gguf_find_tensor(g, "y")->offset, 64);
        CHECK(((const float *)qw_gguf_find_tensor(g, "y")->data)[2] == 6.0f);
    }
    qw_gguf_close(g);
    qw_free(path);
}

TEST(missing_file_is_not_found) {
    qw_gguf *g = NULL;
    qw_error err;
    CHECK_EQ_INT(qw_gguf_open("/nonexistent/x.gguf", &g, &err), QW_ERR_NOT_FOUND);
    CHECK(strstr(err.message, "/nonexistent/x.gguf") != NULL);
    CHECK_EQ_STR(qw_gguf_type_name(QW_GGUF_FLOAT32), "f32");
    CHECK_EQ_STR(qw_gguf_type_name((qw_gguf_type)77), "?");
}

RUN_TESTS(TEST_CASE(raw_valid_file_opens), TEST_CASE(every_truncation_is_an_error),
          TEST_CASE(corrupt_headers), TEST_CASE(corrupt_metadata),
          TEST_CASE(corrupt_tensor_infos), TEST_CASE(random_mutations_never_crash),
          TEST_CASE(writer_round_trip_all_types), TEST_CASE(writer_abandoned_leaves_nothing),
          TEST_CASE(custom_alignment), TEST_CASE(missing_file_is_not_found))
