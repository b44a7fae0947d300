/* GGUF writer: metadata and tensor infos are kept in memory (values already in their wire form),
 * then the header is written once and tensor data streamed after it. Layout: see gguf.h. */
#include <string.h>

#include "gguf.h"

typedef struct writer_kv {
    char *key;
    qw_gguf_type type;
    qw_buf wire; /* the value's bytes after the type field */
} writer_kv;

typedef struct writer_tensor {
    char *name;
    qw_qtype type;
    int n_dims;
    int64_t ne[QW_GGUF_MAX_DIMS];
    uint64_t bytes;
    uint64_t offset;
} writer_tensor;

struct qw_gguf_writer {
    writer_kv *kvs;
    size_t n_kv, cap_kv;
    writer_tensor *tensors;
    size_t n_tensors, cap_tensors;
    uint64_t data_bytes; /* padded */
    qw_output *out;
    char *path;
    size_t current;        /* tensor being written */
    uint64_t current_done; /* bytes of it written so far */
    uint32_t alignment;
};

qw_status qw_gguf_writer_create(qw_gguf_writer **out, qw_error *err) {
    *out = qw_calloc(1, sizeof **out);
    if (!*out) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    (*out)->alignment = QW_GGUF_DEFAULT_ALIGNMENT;
    return QW_OK;
}

void qw_gguf_writer_free(qw_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        qw_free(w->kvs[i].key);
        qw_buf_free(&w->kvs[i].wire);
    }
    for (size_t i = 0; i < w->n_tensors; i++) qw_free(w->tensors[i].name);
    qw_free(w->kvs);
    qw_free(w->tensors);
    qw_output_abort(w->out);
    qw_free(w->path);
    qw_free(w);
}

/* ---- metadata ------------------------------------------------------------------------------- */

static writer_kv *find_kv(const qw_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) return &w->kvs[i];
    }
    return NULL;
}

bool qw_gguf_writer_has(const qw_gguf_writer *w, const char *key) { return find_kv(w, key) != NULL; }

void qw_gguf_writer_remove(qw_gguf_writer *w, const char *key) {
    writer_kv *kv = find_kv(w, key);
    if (!kv) return;
    qw_free(kv->key);
    qw_buf_free(&kv->wire);
    size_t i = (size_t)(kv - w->kvs);
    memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof *kv);
    w->n_kv--;
}

/* Returns the slot for key (existing, emptied; or new at the end). */
static qw_status kv_slot(qw_gguf_writer *w, const char *key, qw_gguf_type type, writer_kv **out,
                         qw_error *err) {
    if (!key || !*key) return qw_fail(err, QW_ERR_INVALID_ARG, "GGUF metadata key is empty");
    writer_kv *kv = find_kv(w, key);
    if (kv) {
        kv->wire.len = 0;
    } else {
        if (w->n_kv == w->cap_kv) {
            size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
            writer_kv *p = qw_realloc_array(w->kvs, cap, sizeof *p);
            if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            w->kvs = p;
            w->cap_kv = cap;
        }
        kv = &w->kvs[w->n_kv];
        memset(kv, 0, sizeof *kv);
        kv->key = qw_strdup(key);
        if (!kv->key) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        w->n_kv++;
    }
    kv->type = type;
    *out = kv;
    return QW_OK;
}

static bool put_u32(qw_buf *b, uint32_t v) { return qw_buf_append(b, &v, 4); }
static bool put_u64(qw_buf *b, uint64_t v) { return qw_buf_append(b, &v, 8); }
static bool put_str(qw_buf *b, const char *s, uint64_t len) {
    return put_u64(b, len) && qw_buf_append(b, s, (size_t)len);
}

/* Encodes one scalar held in a qw_gguf_value into its wire width. */
static bool put_scalar(qw_buf *b, const qw_gguf_value *v) {
    switch (v->type) { /* the wire form of each scalar type */
    case QW_GGUF_UINT8: case QW_GGUF_BOOL: { uint8_t x = (uint8_t)v->v.u64; return qw_buf_append(b, &x, 1); }
    case QW_GGUF_INT8: { int8_t x = (int8_t)v->v.i64; return qw_buf_append(b, &x, 1); }
    case QW_GGUF_UINT16: { uint16_t x = (uint16_t)v->v.u64; return qw_buf_append(b, &x, 2); }
    case QW_GGUF_INT16: { int16_t x = (int16_t)v->v.i64; return qw_buf_append(b, &x, 2); }
    case QW_GGUF_UINT32: { uint32_t x = (uint32_t)v->v.u64; return qw_buf_append(b, &x, 4); }
    case QW_GGUF_INT32: { int32_t x = (int32_t)v->v.i64; return qw_buf_append(b, &x, 4); }
    case QW_GGUF_FLOAT32: { float x = (float)v->v.f64; return qw_buf_append(b, &x, 4); }
    case QW_GGUF_UINT64: return qw_buf_append(b, &v->v.u64, 8);
    case QW_GGUF_INT64: return qw_buf_append(b, &v->v.i64, 8);
    case QW_GGUF_FLOAT64: return qw_buf_append(b, &v->v.f64, 8);
    default: return false;
    }
}

qw_status qw_gguf_writer_set(qw_gguf_writer *w, const char *key, const qw_gguf_value *value,
                             qw_error *err) {
    if ((unsigned)value->type >= QW_GGUF_TYPE_COUNT) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, key, -1, "key \"%s\": bad value type", key);
    }
    writer_kv *kv;
    QW_TRY(kv_slot(w, key, value->type, &kv, err));
    bool ok;
    if (value->type == QW_GGUF_STRING) {
        ok = put_str(&kv->wire, value->v.str.data, value->v.str.len);
    } else if (value->type == QW_GGUF_ARRAY) {
        qw_gguf_type et = value->v.arr.elem_type;
        if ((unsigned)et >= QW_GGUF_TYPE_COUNT || et == QW_GGUF_ARRAY) {
            qw_gguf_writer_remove(w, key);
            return qw_fail_at(err, QW_ERR_INVALID_ARG, key, -1,
                              "key \"%s\": arrays of arrays cannot be written", key);
        }
        ok = put_u32(&kv->wire, et) && put_u64(&kv->wire, value->v.arr.count);
        if (et == QW_GGUF_STRING) {
            for (uint64_t i = 0; ok && i < value->v.arr.count; i++) {
                ok = put_str(&kv->wire, value->v.arr.strs[i].data, value->v.arr.strs[i].len);
            }
        } else {
            ok = ok && qw_buf_append(&kv->wire, value->v.arr.data,
                                     (size_t)value->v.arr.count * qw_gguf_type_size(et));
        }
    } else {
        ok = put_scalar(&kv->wire, value);
    }
    if (!ok) {
        qw_gguf_writer_remove(w, key);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory writing key \"%s\"", key);
    }
    if (strcmp(key, "general.alignment") == 0) {
        if (value->type != QW_GGUF_UINT32 || value->v.u64 == 0 ||
            (value->v.u64 & (value->v.u64 - 1)) != 0) {
            qw_gguf_writer_remove(w, key);
            return qw_fail_at(err, QW_ERR_INVALID_ARG, key, -1,
                              "general.alignment must be a u32 power of two");
        }
        w->alignment = (uint32_t)value->v.u64;
    }
    return QW_OK;
}

qw_status qw_gguf_writer_set_u32(qw_gguf_writer *w, const char *key, uint32_t v, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_UINT32, .v.u64 = v};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_i32(qw_gguf_writer *w, const char *key, int32_t v, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_INT32, .v.i64 = v};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_u64(qw_gguf_writer *w, const char *key, uint64_t v, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_UINT64, .v.u64 = v};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_f32(qw_gguf_writer *w, const char *key, float v, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_FLOAT32, .v.f64 = v};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_bool(qw_gguf_writer *w, const char *key, bool v, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_BOOL, .v.u64 = v};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_str(qw_gguf_writer *w, const char *key, const char *v,
                                 qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_STRING, .v.str = {v, strlen(v)}};
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_array(qw_gguf_writer *w, const char *key, qw_gguf_type elem_type,
                                   const void *data, uint64_t count, qw_error *err) {
    qw_gguf_value val = {.type = QW_GGUF_ARRAY};
    val.v.arr.elem_type = elem_type;
    val.v.arr.count = count;
    val.v.arr.data = data;
    if (elem_type == QW_GGUF_STRING) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, key, -1,
                          "key \"%s\": use the string-array setter", key);
    }
    return qw_gguf_writer_set(w, key, &val, err);
}

qw_status qw_gguf_writer_set_str_array(qw_gguf_writer *w, const char *key,
                                       const char *const *strs, uint64_t count, qw_error *err) {
    writer_kv *kv;
    QW_TRY(kv_slot(w, key, QW_GGUF_ARRAY, &kv, err));
    bool ok = put_u32(&kv->wire, QW_GGUF_STRING) && put_u64(&kv->wire, count);
    for (uint64_t i = 0; ok && i < count; i++) ok = put_str(&kv->wire, strs[i], strlen(strs[i]));
    if (!ok) {
        qw_gguf_writer_remove(w, key);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory writing key \"%s\"", key);
    }
    return QW_OK;
}

/* ---- tensors -------------------------------------------------------------------------------- */

static uint64_t align_up(uint64_t v, uint32_t alignment) {
    return (v + alignment - 1) & ~(uint64_t)(alignment - 1);
}

qw_status qw_gguf_writer_add_tensor(qw_gguf_writer *w, const char *name, qw_qtype type,
                                    int n_dims, const int64_t *ne, qw_error *err) {
    if (w->out) return qw_fail(err, QW_ERR_INTERNAL, "tensor \"%s\" added after begin", name);
    size_t len = strlen(name);
    if (len == 0 || len > QW_GGUF_MAX_NAME_BYTES) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, name, -1,
                          "tensor name \"%s\" must be 1 to %d bytes", name,
                          QW_GGUF_MAX_NAME_BYTES);
    }
    if (n_dims < 1 || n_dims > QW_GGUF_MAX_DIMS) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, name, -1, "tensor \"%s\": %d dimensions",
                          name, n_dims);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0) {
            return qw_fail_at(err, QW_ERR_INVALID_ARG, name, -1, "tensor \"%s\" added twice",
                              name);
        }
    }
    const qw_qtype_info *info = qw_qtype_get(type);
    uint64_t n_elems = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || qw_mul_overflows(n_elems, (uint64_t)ne[d], &n_elems)) {
            return qw_fail_at(err, QW_ERR_INVALID_ARG, name, -1, "tensor \"%s\": bad shape",
                              name);
        }
    }
    if (!info || ne[0] % info->block_elems != 0) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, name, -1,
                          "tensor \"%s\": rows of %lld elements cannot be stored as %s", name,
                          (long long)ne[0], qw_qtype_name(type));
    }
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        writer_tensor *p = qw_realloc_array(w->tensors, cap, sizeof *p);
        if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        w->tensors = p;
        w->cap_tensors = cap;
    }
    writer_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = qw_strdup(name);
    if (!t->name) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < QW_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->bytes = n_elems / info->block_elems * info->block_bytes;
    w->n_tensors++;
    return QW_OK;
}

static void layout(qw_gguf_writer *w) {
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = offset;
        offset += align_up(w->tensors[i].bytes, w->alignment);
    }
    w->data_bytes = offset;
}

static qw_status header(const qw_gguf_writer *w, qw_buf *b, qw_error *err) {
    bool ok = qw_buf_append(b, "GGUF", 4) && put_u32(b, 3) && put_u64(b, w->n_tensors) &&
              put_u64(b, w->n_kv);
    for (size_t i = 0; ok && i < w->n_kv; i++) {
        const writer_kv *kv = &w->kvs[i];
        ok = put_str(b, kv->key, strlen(kv->key)) && put_u32(b, kv->type) &&
             qw_buf_append(b, kv->wire.data, kv->wire.len);
    }
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        ok = put_str(b, t->name, strlen(t->name)) && put_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; ok && d < t->n_dims; d++) ok = put_u64(b, (uint64_t)t->ne[d]);
        ok = ok && put_u32(b, qw_qtype_get(t->type)->gguf_id) && put_u64(b, t->offset);
    }
    size_t pad = (size_t)(align_up(b->len, w->alignment) - b->len);
    static const char zeros[256];
    ok = ok && pad <= sizeof zeros && qw_buf_append(b, zeros, pad);
    if (!ok) {
        qw_buf_free(b);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory building the GGUF header");
    }
    return QW_OK;
}

uint64_t qw_gguf_writer_total_bytes(const qw_gguf_writer *w) {
    qw_gguf_writer *m = (qw_gguf_writer *)w; /* layout only updates cached offsets */
    layout(m);
    qw_buf b = {0};
    if (header(w, &b, NULL) != QW_OK) return 0;
    uint64_t total = b.len + w->data_bytes;
    qw_buf_free(&b);
    return total;
}

qw_status qw_gguf_writer_begin(qw_gguf_writer *w, const char *final_path, qw_error *err) {
    if (w->out) return qw_fail(err, QW_ERR_INTERNAL, "GGUF writer begun twice");
    layout(w);
    qw_buf b = {0};
    QW_TRY(header(w, &b, err));
    qw_status st = qw_output_open(final_path, &w->out, err);
    if (st == QW_OK) st = qw_output_reserve(w->out, b.len + w->data_bytes, err);
    if (st == QW_OK) st = qw_output_write(w->out, b.data, b.len, err);
    qw_buf_free(&b);
    if (st != QW_OK) return st;
    w->path = qw_strdup(final_path);
    w->current = 0;
    w->current_done = 0;
    return QW_OK;
}

qw_status qw_gguf_writer_write(qw_gguf_writer *w, const void *data, size_t bytes, qw_error *err) {
    const uint8_t *p = data;
    if (!w->out) return qw_fail(err, QW_ERR_INTERNAL, "GGUF data written before begin");
    while (bytes > 0) {
        if (w->current >= w->n_tensors) {
            return qw_fail(err, QW_ERR_INTERNAL, "%s: more tensor data than the tensors hold",
                           w->path);
        }
        writer_tensor *t = &w->tensors[w->current];
        uint64_t room = t->bytes - w->current_done;
        size_t n = bytes < room ? bytes : (size_t)room;
        QW_TRY(qw_output_write(w->out, p, n, err));
        p += n;
        bytes -= n;
        w->current_done += n;
        if (w->current_done == t->bytes) {
            uint64_t pad = align_up(t->bytes, w->alignment) - t->bytes;
            QW_TRY(qw_output_write_zeros(w->out, (size_t)pad, err));
            w->current++;
            w->current_done = 0;
        }
    }
    /* Zero-byte tensors complete without any write. */
    while (w->current < w->n_tensors && w->tensors[w->current].bytes == 0) w->current++;
    return QW_OK;
}

qw_status qw_gguf_writer_finish(qw_gguf_writer *w, qw_error *err) {
    QW_TRY(qw_gguf_writer_write(w, NULL, 0, err));
    if (w->current != w->n_tensors) {
        return qw_fail_at(err, QW_ERR_INTERNAL, w->tensors[w->current].name, -1,
                          "%s: tensor \"%s\" was not completely written", w->path,
                          w->tensors[w->current].name);
    }
    qw_output *out = w->out;
    w->out = NULL;
    return qw_output_commit(out, err);
}
