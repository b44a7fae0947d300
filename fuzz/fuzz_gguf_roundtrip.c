/* GGUF writer round trip: metadata and tensors derived from the input are written with
 * qw_gguf_writer, read back with qw_gguf_open, and must come back as they were given. The writer
 * may refuse what it is handed (an error is fine); a file it publishes must read back equal. */
#include <math.h>

#include "fuzz_util.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KV 8
#define MAX_TENSORS 4
#define MAX_ARRAY 6
#define MAX_STR 40

typedef struct kv_given {
    char key[MAX_STR + 1];
    qw_gguf_type type, elem_type;
    uint64_t u; /* scalar bits as the file holds them (zero-extended) */
    char str[MAX_STR + 1];
    uint64_t count;
    uint8_t raw[MAX_ARRAY * 8];
    char strs[MAX_ARRAY][MAX_STR + 1];
} kv_given;

typedef struct tensor_given {
    char name[MAX_STR + 1];
    qw_qtype type;
    int n_dims;
    int64_t ne[4];
    uint8_t *bytes;
    uint64_t n_bytes;
} tensor_given;

static uint64_t scalar_bits(fuzz_bytes *b, qw_gguf_type t) {
    size_t n = qw_gguf_type_size(t);
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)fuzz_u8(b) << (8 * i);
    return t == QW_GGUF_BOOL ? v & 1 : v;
}

/* The scalar as qw_gguf_value carries it: u64 for unsigned and bool, i64 sign-extended, f64. */
static qw_gguf_value scalar_value(qw_gguf_type t, uint64_t bits) {
    qw_gguf_value v;
    memset(&v, 0, sizeof v);
    v.type = t;
    size_t n = qw_gguf_type_size(t);
    switch (t) { /* a harness, not the library: the mapping to the union is spelled out here */
    case QW_GGUF_INT8: case QW_GGUF_INT16: case QW_GGUF_INT32: case QW_GGUF_INT64: {
        unsigned shift = (unsigned)(64 - 8 * n);
        v.v.i64 = (int64_t)(bits << shift) >> shift;
        break;
    }
    case QW_GGUF_FLOAT32: {
        float f;
        uint32_t b32 = (uint32_t)bits;
        memcpy(&f, &b32, 4);
        v.v.f64 = f;
        break;
    }
    case QW_GGUF_FLOAT64: memcpy(&v.v.f64, &bits, 8); break;
    default: v.v.u64 = bits; break;
    }
    return v;
}

static bool same_scalar(const qw_gguf_value *a, const qw_gguf_value *b) {
    if (a->type == QW_GGUF_FLOAT32 || a->type == QW_GGUF_FLOAT64) {
        return (isnan(a->v.f64) && isnan(b->v.f64)) ||
               memcmp(&a->v.f64, &b->v.f64, sizeof a->v.f64) == 0;
    }
    return a->v.u64 == b->v.u64;
}

static void check_kv(const qw_gguf *g, const kv_given *k) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, k->key);
    if (!kv || kv->value.type != k->type) __builtin_trap();
    const qw_gguf_value *v = &kv->value;
    if (k->type == QW_GGUF_STRING) {
        if (v->v.str.len != strlen(k->str) || memcmp(v->v.str.data, k->str, v->v.str.len)) {
            __builtin_trap();
        }
    } else if (k->type == QW_GGUF_ARRAY) {
        if (v->v.arr.elem_type != k->elem_type || v->v.arr.count != k->count) __builtin_trap();
        for (uint64_t i = 0; k->elem_type == QW_GGUF_STRING && i < k->count; i++) {
            const qw_gguf_str *s = &v->v.arr.strs[i];
            if (s->len != strlen(k->strs[i]) || memcmp(s->data, k->strs[i], s->len)) {
                __builtin_trap();
            }
        }
        size_t es = qw_gguf_type_size(k->elem_type);
        if (k->elem_type != QW_GGUF_STRING && k->count &&
            memcmp(v->v.arr.data, k->raw, es * k->count) != 0) {
            __builtin_trap();
        }
    } else {
        qw_gguf_value want = scalar_value(k->type, k->u);
        if (!same_scalar(&want, v)) __builtin_trap();
    }
}

static qw_status set_kv(qw_gguf_writer *w, const kv_given *k, qw_error *err) {
    if (k->type == QW_GGUF_STRING) return qw_gguf_writer_set_str(w, k->key, k->str, err);
    if (k->type == QW_GGUF_ARRAY && k->elem_type == QW_GGUF_STRING) {
        const char *strs[MAX_ARRAY];
        for (uint64_t i = 0; i < k->count; i++) strs[i] = k->strs[i];
        return qw_gguf_writer_set_str_array(w, k->key, strs, k->count, err);
    }
    if (k->type == QW_GGUF_ARRAY) {
        return qw_gguf_writer_set_array(w, k->key, k->elem_type, k->raw, k->count, err);
    }
    qw_gguf_value v = scalar_value(k->type, k->u);
    return qw_gguf_writer_set(w, k->key, &v, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    kv_given kvs[MAX_KV];
    tensor_given ts[MAX_TENSORS];
    size_t n_kv = fuzz_u8(&b) % (MAX_KV + 1), n_t = fuzz_u8(&b) % (MAX_TENSORS + 1);
    memset(kvs, 0, sizeof kvs);
    memset(ts, 0, sizeof ts);
    qw_gguf_writer *w = NULL;
    qw_error err;
    if (qw_gguf_writer_create(&w, &err) != QW_OK) return 0;
    bool ok = true;
    for (size_t i = 0; i < n_kv && ok; i++) {
        kv_given *k = &kvs[i];
        fuzz_str(&b, k->key, MAX_STR);
        k->type = (qw_gguf_type)(fuzz_u8(&b) % (QW_GGUF_TYPE_COUNT + 1)); /* one bad type */
        if (k->type == QW_GGUF_STRING) {
            fuzz_str(&b, k->str, MAX_STR);
        } else if (k->type == QW_GGUF_ARRAY) {
            k->elem_type = (qw_gguf_type)(fuzz_u8(&b) % QW_GGUF_TYPE_COUNT);
            k->count = fuzz_u8(&b) % (MAX_ARRAY + 1);
            size_t es = qw_gguf_type_size(k->elem_type);
            for (uint64_t j = 0; j < k->count; j++) {
                if (k->elem_type == QW_GGUF_STRING) {
                    fuzz_str(&b, k->strs[j], MAX_STR);
                } else {
                    uint64_t bits = scalar_bits(&b, k->elem_type);
                    memcpy(k->raw + j * es, &bits, es);
                }
            }
        } else if (k->type < QW_GGUF_TYPE_COUNT) {
            k->u = scalar_bits(&b, k->type);
        }
        ok = set_kv(w, k, &err) == QW_OK;
    }
    for (size_t i = 0; i < n_t && ok; i++) {
        tensor_given *t = &ts[i];
        fuzz_str(&b, t->name, MAX_STR);
        t->type = (qw_qtype)(fuzz_u8(&b) % QW_QTYPE_COUNT);
        const qw_qtype_info *info = qw_qtype_get(t->type);
        t->n_dims = 1 + fuzz_u8(&b) % QW_GGUF_MAX_DIMS;
        t->ne[0] = (int64_t)info->block_elems * (1 + fuzz_u8(&b) % 3);
        for (int d = 1; d < 4; d++) t->ne[d] = d < t->n_dims ? 1 + fuzz_u8(&b) % 3 : 1;
        uint64_t rows = (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        t->n_bytes = qw_qtype_row_bytes(t->type, t->ne[0]) * rows;
        t->bytes = malloc(t->n_bytes ? t->n_bytes : 1);
        if (!t->bytes) abort();
        for (uint64_t j = 0; j < t->n_bytes; j++) t->bytes[j] = fuzz_u8(&b);
        ok = qw_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &err) == QW_OK;
    }
    const char *path = fuzz_path("roundtrip.gguf");
    ok = ok && qw_gguf_writer_begin(w, path, &err) == QW_OK;
    for (size_t i = 0; i < n_t && ok; i++) {
        /* in two pieces: the writer accepts a tensor's bytes in any split */
        uint64_t half = ts[i].n_bytes / 2;
        ok = qw_gguf_writer_write(w, ts[i].bytes, half, &err) == QW_OK &&
             qw_gguf_writer_write(w, ts[i].bytes + half, ts[i].n_bytes - half, &err) == QW_OK;
    }
    uint64_t total = qw_gguf_writer_total_bytes(w);
    ok = ok && qw_gguf_writer_finish(w, &err) == QW_OK;
    qw_gguf_writer_free(w);
    if (ok) {
        qw_gguf *g = NULL;
        if (qw_gguf_open(path, &g, &err) != QW_OK) {
            fprintf(stderr, "written GGUF does not read back: %s\n", err.message);
            __builtin_trap();
        }
        /* a key set twice keeps its first position and its last value */
        for (size_t i = 0; i < n_kv; i++) {
            bool later = false;
            for (size_t j = i + 1; j < n_kv; j++) later |= strcmp(kvs[i].key, kvs[j].key) == 0;
            if (!later) check_kv(g, &kvs[i]);
        }
        if (qw_gguf_tensor_count(g) != n_t) __builtin_trap();
        for (size_t i = 0; i < n_t; i++) {
            const qw_gguf_tensor *t = qw_gguf_tensor_at(g, i);
            if (strcmp(t->name, ts[i].name) != 0 || t->type != ts[i].type ||
                t->n_dims != ts[i].n_dims || memcmp(t->ne, ts[i].ne, sizeof t->ne) != 0 ||
                t->bytes != ts[i].n_bytes || memcmp(t->data, ts[i].bytes, t->bytes) != 0) {
                __builtin_trap();
            }
        }
        struct stat sb;
        if (stat(path, &sb) != 0 || (uint64_t)sb.st_size != total) __builtin_trap();
        qw_gguf_close(g);
        remove(path);
    }
    for (size_t i = 0; i < n_t; i++) free(ts[i].bytes);
    return 0;
}
