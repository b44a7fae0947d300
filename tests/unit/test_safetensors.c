/* safetensors reader: valid files, and each validity rule of ecosystem.md §5 broken once. */
#include <stdint.h>
#include <string.h>

#include "core.h"
#include "safetensors.h"
#include "test.h"

/* header JSON + data bytes -> file bytes; header_len_override replaces the length field. */
static void build(qw_buf *b, const char *header, size_t data_bytes, uint64_t header_len_override) {
    b->len = 0;
    uint64_t n = header_len_override ? header_len_override : strlen(header);
    qw_buf_append(b, &n, 8);
    qw_buf_append(b, header, strlen(header));
    for (size_t i = 0; i < data_bytes; i++) {
        uint8_t v = (uint8_t)(i * 13 + 1);
        qw_buf_append(b, &v, 1);
    }
}

static qw_status open_case(const char *header, size_t data_bytes, uint64_t len_override,
                           qw_error *err) {
    qw_buf b = {0};
    build(&b, header, data_bytes, len_override);
    qw_safetensors *st = NULL;
    qw_status s = qw_safetensors_open_memory(b.data, b.len, "case.safetensors", &st, err);
    qw_safetensors_close(st);
    qw_buf_free(&b);
    return s;
}

static void expect(const char *header, size_t data_bytes, uint64_t len_override,
                   const char *needle) {
    qw_error err;
    qw_status s = open_case(header, data_bytes, len_override, &err);
    CHECK_EQ_INT(s, QW_ERR_CORRUPT);
    if (s != QW_OK && !strstr(err.message, needle)) {
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err.message, needle);
        CHECK(0);
    }
    if (s != QW_OK) CHECK(strstr(err.message, "case.safetensors") != NULL);
}

static const char *valid =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
    "\"a\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[0,16]},"
    "\"e\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[28,28]},"
    "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[28,36]}}";

TEST(valid_file) {
    qw_buf b = {0};
    build(&b, valid, 36, 0);
    qw_safetensors *st = NULL;
    qw_error err;
    CHECK_OK(qw_safetensors_open_memory(b.data, b.len, "v.safetensors", &st, &err), &err);
    if (st) {
        CHECK_EQ_INT(qw_safetensors_count(st), 4);
        const qw_st_tensor *a = qw_safetensors_find(st, "a");
        const qw_st_tensor *bt = qw_safetensors_find(st, "b");
        const qw_st_tensor *s = qw_safetensors_find(st, "s");
        CHECK(a && a->has_qtype && a->qtype == QW_QTYPE_BF16 && a->bytes == 16);
        CHECK(bt && bt->n_dims == 2 && bt->shape[0] == 2 && bt->shape[1] == 3);
        CHECK(bt && bt->data == (const uint8_t *)b.data + 8 + strlen(valid) + 16);
        CHECK(s && !s->has_qtype && s->n_dims == 0 && s->n_elems == 1);
        CHECK_EQ_STR(qw_safetensors_metadata(st, "format"), "pt");
        CHECK(qw_safetensors_metadata(st, "nope") == NULL);
        CHECK(qw_safetensors_find(st, "zzz") == NULL);
    }
    qw_safetensors_close(st);
    qw_buf_free(&b);
}

TEST(corrupt_files) {
    const char *one = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect(one, 8, 1ull << 40, "larger than");
    expect(one, 8, 200, "past the end");
    expect("[1,2]", 0, 0, "does not start with '{'");
    expect("{\"a\":", 0, 0, "invalid JSON");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 0,
           "invalid JSON"); /* duplicate key */
    expect("{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0,
           "unknown dtype \"Q9\"");
    expect("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "no dtype");
    expect("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, 0, "shape");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, "needs 12");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0,
           "invalid dimension");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],"
           "\"data_offsets\":[0,8]}}", 8, 0, "invalid dimension");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387905,1],"
           "\"data_offsets\":[0,4]}}", 4, 0, "impossible shape");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,80]}}", 8, 0,
           "fall outside");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, 0,
           "data_offsets");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0,
           "overlap"); /* overlapping */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, 0,
           "holes"); /* a hole */
    expect(one, 12, 0, "follow the last tensor");
    expect("{\"__metadata__\":{\"format\":1}}", 0, 0, "not a string");
    expect("{\"a\":[1]}", 0, 0, "not an object");
}

TEST(short_files) {
    qw_safetensors *st = NULL;
    qw_error err;
    CHECK_EQ_INT(qw_safetensors_open_memory("abc", 3, "tiny.safetensors", &st, &err),
                 QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "too small") != NULL);
    CHECK_EQ_INT(qw_safetensors_open("/nonexistent.safetensors", &st, &err), QW_ERR_NOT_FOUND);
    /* every truncation of a valid file fails cleanly */
    qw_buf b = {0};
    build(&b, valid, 36, 0);
    for (size_t n = 0; n < b.len; n++) {
        qw_status s = qw_safetensors_open_memory(b.data, n, "cut.safetensors", &st, NULL);
        CHECK(s != QW_OK);
        qw_safetensors_close(st);
        st = NULL;
    }
    qw_buf_free(&b);
}

TEST(random_mutations_never_crash) {
    qw_buf b = {0};
    build(&b, valid, 36, 0);
    char *copy = malloc(b.len);
    uint32_t rng = 99;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, b.data, b.len);
        for (int k = 0; k < 1 + iter % 3; k++) {
            rng = rng * 1664525u + 1013904223u;
            copy[(rng >> 8) % b.len] = (char)(rng >> 24);
        }
        qw_safetensors *st = NULL;
        if (qw_safetensors_open_memory(copy, b.len, "m.safetensors", &st, NULL) == QW_OK) {
            for (size_t i = 0; i < qw_safetensors_count(st); i++) {
                const qw_st_tensor *t = qw_safetensors_at(st, i);
                CHECK(t->data + t->bytes <= (const uint8_t *)copy + b.len);
            }
        }
        qw_safetensors_close(st);
    }
    free(copy);
    qw_buf_free(&b);
}

RUN_TESTS(TEST_CASE(valid_file), TEST_CASE(corrupt_files), TEST_CASE(short_files),
          TEST_CASE(random_mutations_never_crash))
