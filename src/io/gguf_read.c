/* GGUF reader: parses and validates the whole header up front, so that nothing read later from a
 * qw_gguf can be out of range. Layout: see gguf.h. */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

struct qw_gguf {
    qw_mapped file;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    size_t n_kv;
    qw_gguf_kv *kvs;
    qw_gguf_str **str_arrays; /* one allocation per string array, freed on close */
    size_t n_str_arrays;
    size_t n_tensors;
    qw_gguf_tensor *tensors;
    size_t *tensor_order; /* indices sorted by name, for lookup and the duplicate check */
    size_t *kv_order;
};

static const struct {
    const char *name;
    size_t size;
} type_rows[QW_GGUF_TYPE_COUNT] = {
    [QW_GGUF_UINT8] = {"u8", 1},    [QW_GGUF_INT8] = {"i8", 1},     [QW_GGUF_UINT16] = {"u16", 2},
    [QW_GGUF_INT16] = {"i16", 2},   [QW_GGUF_UINT32] = {"u32", 4},  [QW_GGUF_INT32] = {"i32", 4},
    [QW_GGUF_FLOAT32] = {"f32", 4}, [QW_GGUF_BOOL] = {"bool", 1},   [QW_GGUF_STRING] = {"str", 0},
    [QW_GGUF_ARRAY] = {"arr", 0},   [QW_GGUF_UINT64] = {"u64", 8},  [QW_GGUF_INT64] = {"i64", 8},
    [QW_GGUF_FLOAT64] = {"f64", 8},
};

const char *qw_gguf_type_name(qw_gguf_type type) {
    return (unsigned)type < QW_GGUF_TYPE_COUNT ? type_rows[type].name : "?";
}

size_t qw_gguf_type_size(qw_gguf_type type) {
    return (unsigned)type < QW_GGUF_TYPE_COUNT ? type_rows[type].size : 0;
}

/* ---- cursor --------------------------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const char *path;
    qw_error *err;
} cursor;

static qw_status truncated(cursor *c, const char *what, const char *name) {
    return qw_fail_at(c->err, QW_ERR_CORRUPT, name, (int64_t)c->pos,
                      "%s: truncated file: %s%s%s at byte %zu runs past the end (%zu bytes)",
                      c->path, what, name ? " of " : "", name ? name : "", c->pos, c->size);
}

static qw_status read_bytes(cursor *c, void *dst, size_t n, const char *what, const char *name) {
    if (n > c->size - c->pos) return truncated(c, what, name);
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
    return QW_OK;
}

static qw_status read_u32(cursor *c, uint32_t *v, const char *what, const char *name) {
    *v = 0;
    return read_bytes(c, v, 4, what, name);
}

static qw_status read_u64(cursor *c, uint64_t *v, const char *what, const char *name) {
    *v = 0;
    return read_bytes(c, v, 8, what, name);
}

/* A string stays in the file; only its position is recorded. */
static qw_status read_str(cursor *c, qw_gguf_str *s, const char *what, const char *name) {
    uint64_t len;
    size_t at = c->pos;
    QW_TRY(read_u64(c, &len, what, name));
    if (len > c->size - c->pos) {
        c->pos = at;
        return qw_fail_at(c->err, QW_ERR_CORRUPT, name, (int64_t)at,
                          "%s: %s%s%s at byte %zu claims %llu bytes, more than the file has left",
                          c->path, what, name ? " of " : "", name ? name : "", at,
                          (unsigned long long)len);
    }
    s->data = (const char *)c->data + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return QW_OK;
}

static char *str_copy(const qw_gguf_str *s) {
    if (memchr(s->data, '\0', (size_t)s->len)) return NULL;
    return qw_strndup(s->data, (size_t)s->len);
}

/* ---- values --------------------------------------------------------------------------------- */

static void decode_scalar(qw_gguf_type type, const uint8_t *p, qw_gguf_value *out) {
    out->type = type;
    switch (type) { /* decoding the wire form of each scalar type, the one place that must */
    case QW_GGUF_UINT8: out->v.u64 = p[0]; break;
    case QW_GGUF_BOOL: out->v.u64 = p[0] != 0; break;
    case QW_GGUF_INT8: out->v.i64 = (int8_t)p[0]; break;
    case QW_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); out->v.u64 = x; break; }
    case QW_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); out->v.i64 = x; break; }
    case QW_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); out->v.u64 = x; break; }
    case QW_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); out->v.i64 = x; break; }
    case QW_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); out->v.f64 = x; break; }
    case QW_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); out->v.u64 = x; break; }
    case QW_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); out->v.i64 = x; break; }
    case QW_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); out->v.f64 = x; break; }
    default: break;
    }
}

static qw_status read_value(qw_gguf *g, cursor *c, const char *key, qw_gguf_value *out) {
    uint32_t type;
    size_t at = c->pos;
    QW_TRY(read_u32(c, &type, "value type", key));
    if (type >= QW_GGUF_TYPE_COUNT) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, (int64_t)at,
                          "%s: key \"%s\" has unknown value type %u at byte %zu", c->path, key,
                          type, at);
    }
    out->type = (qw_gguf_type)type;
    if (type == QW_GGUF_STRING) return read_str(c, &out->v.str, "string value", key);
    if (type != QW_GGUF_ARRAY) {
        const uint8_t *p = c->data + c->pos;
        size_t n = qw_gguf_type_size(out->type);
        if (n > c->size - c->pos) return truncated(c, "value", key);
        decode_scalar(out->type, p, out);
        c->pos += n;
        return QW_OK;
    }
    uint32_t elem;
    uint64_t count;
    at = c->pos;
    QW_TRY(read_u32(c, &elem, "array element type", key));
    if (elem >= QW_GGUF_TYPE_COUNT || elem == QW_GGUF_ARRAY) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, (int64_t)at,
                          "%s: key \"%s\" is an array of %s element type %u", c->path, key,
                          elem == QW_GGUF_ARRAY ? "nested (unsupported)" : "unknown", elem);
    }
    QW_TRY(read_u64(c, &count, "array length", key));
    out->v.arr.elem_type = (qw_gguf_type)elem;
    out->v.arr.count = count;
    size_t left = c->size - c->pos;
    if (elem == QW_GGUF_STRING) {
        if (count > left / 8) { /* every string needs at least its 8-byte length */
            return qw_fail_at(c->err, QW_ERR_CORRUPT, key, (int64_t)c->pos,
                              "%s: key \"%s\" claims %llu strings, more than the file can hold",
                              c->path, key, (unsigned long long)count);
        }
        qw_gguf_str *strs = qw_malloc_array((size_t)count, sizeof *strs);
        qw_gguf_str **slots = qw_realloc_array(g->str_arrays, g->n_str_arrays + 1, sizeof *slots);
        if (!strs || !slots) {
            qw_free(strs);
            if (slots) g->str_arrays = slots;
            return qw_fail(c->err, QW_ERR_NO_MEMORY, "%s: out of memory reading \"%s\"", c->path,
                           key);
        }
        g->str_arrays = slots;
        g->str_arrays[g->n_str_arrays++] = strs;
        for (uint64_t i = 0; i < count; i++) QW_TRY(read_str(c, &strs[i], "array string", key));
        out->v.arr.strs = strs;
        out->v.arr.data = NULL;
        return QW_OK;
    }
    size_t elem_size = qw_gguf_type_size((qw_gguf_type)elem);
    if (count > left / elem_size) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, (int64_t)c->pos,
                          "%s: key \"%s\" claims %llu elements, more than the file has left",
                          c->path, key, (unsigned long long)count);
    }
    out->v.arr.data = c->data + c->pos;
    out->v.arr.strs = NULL;
    c->pos += (size_t)count * elem_size;
    return QW_OK;
}

/* ---- lookup order --------------------------------------------------------------------------- */

static int compare_by_name(const char *name, const char *other) { return strcmp(name, other); }

/* A merge sort of the index array: O(n log n) without qsort's need for global context. */
static void sort_indices(const qw_gguf *g, size_t *idx, size_t *tmp, size_t n, bool tensors) {
    if (n < 2) return;
    size_t half = n / 2;
    sort_indices(g, idx, tmp, half, tensors);
    sort_indices(g, idx + half, tmp, n - half, tensors);
    size_t i = 0, j = half, k = 0;
    while (i < half && j < n) {
        const char *a = tensors ? g->tensors[idx[i]].name : g->kvs[idx[i]].key;
        const char *b = tensors ? g->tensors[idx[j]].name : g->kvs[idx[j]].key;
        tmp[k++] = compare_by_name(a, b) <= 0 ? idx[i++] : idx[j++];
    }
    while (i < half) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static qw_status build_order(const qw_gguf *g, size_t n, bool tensors, size_t **out,
                             qw_error *err) {
    size_t *idx = qw_malloc_array(n, sizeof *idx);
    size_t *tmp = qw_malloc_array(n, sizeof *tmp);
    if (!idx || !tmp) {
        qw_free(idx);
        qw_free(tmp);
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", g->file.path);
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    sort_indices(g, idx, tmp, n, tensors);
    qw_free(tmp);
    *out = idx;
    for (size_t i = 1; i < n; i++) {
        const char *a = tensors ? g->tensors[idx[i - 1]].name : g->kvs[idx[i - 1]].key;
        const char *b = tensors ? g->tensors[idx[i]].name : g->kvs[idx[i]].key;
        if (strcmp(a, b) == 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, a, -1, "%s: duplicate %s \"%s\"", g->file.path,
                              tensors ? "tensor" : "key", a);
        }
    }
    return QW_OK;
}

/* ---- open ----------------------------------------------------------------------------------- */

static qw_status parse(qw_gguf *g, qw_error *err) {
    cursor c = {g->file.data, g->file.size, 0, g->file.path, err};
    char magic[4];
    if (c.size < 4 || memcmp(c.data, "GGUF", 4) != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 0,
                          "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", c.path);
    }
    QW_TRY(read_bytes(&c, magic, 4, "magic", NULL));
    QW_TRY(read_u32(&c, &g->version, "version", NULL));
    if ((g->version & 0xffff) == 0) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, NULL, 4,
                          "%s: GGUF version 0x%08x looks byte-swapped: big-endian GGUF files are "
                          "not supported", c.path, g->version);
    }
    if (g->version < 2 || g->version > 3) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, NULL, 4,
                          "%s: GGUF version %u is not supported (only 2 and 3)", c.path,
                          g->version);
    }
    uint64_t n_tensors, n_kv;
    QW_TRY(read_u64(&c, &n_tensors, "tensor count", NULL));
    QW_TRY(read_u64(&c, &n_kv, "metadata count", NULL));
    size_t left = c.size - c.pos;
    /* Smallest encodings: a KV is a 1-byte key (8+1), a type (4) and a 1-byte value; a tensor
     * info is a 1-byte name (8+1), n_dims (4), a type (4) and an offset (8). */
    if (n_kv > left / 14) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 16,
                          "%s: claims %llu metadata entries, more than the file can hold", c.path,
                          (unsigned long long)n_kv);
    }
    if (n_tensors > left / 25) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 8,
                          "%s: claims %llu tensors, more than the file can hold", c.path,
                          (unsigned long long)n_tensors);
    }
    g->kvs = qw_calloc((size_t)n_kv, sizeof *g->kvs);
    g->tensors = qw_calloc((size_t)n_tensors, sizeof *g->tensors);
    if (!g->kvs || !g->tensors) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", c.path);

    for (uint64_t i = 0; i < n_kv; i++) {
        qw_gguf_str key;
        size_t at = c.pos;
        QW_TRY(read_str(&c, &key, "metadata key", NULL));
        if (key.len == 0 || key.len > 65535) {
            return qw_fail_at(err, QW_ERR_CORRUPT, NULL, (int64_t)at,
                              "%s: metadata key %llu at byte %zu has invalid length %llu", c.path,
                              (unsigned long long)i, at, (unsigned long long)key.len);
        }
        qw_gguf_kv *kv = &g->kvs[g->n_kv];
        kv->key = str_copy(&key);
        if (!kv->key) {
            return qw_fail_at(err, QW_ERR_CORRUPT, NULL, (int64_t)at,
                              "%s: metadata key at byte %zu contains a NUL byte", c.path, at);
        }
        g->n_kv++;
        QW_TRY(read_value(g, &c, kv->key, &kv->value));
    }
    QW_TRY(build_order(g, g->n_kv, false, &g->kv_order, err));

    g->alignment = QW_GGUF_DEFAULT_ALIGNMENT;
    const qw_gguf_kv *align = qw_gguf_find_kv(g, "general.alignment");
    if (align) {
        if (align->value.type != QW_GGUF_UINT32) {
            return qw_fail_at(err, QW_ERR_CORRUPT, align->key, -1,
                              "%s: general.alignment must be u32, found %s", c.path,
                              qw_gguf_type_name(align->value.type));
        }
        uint64_t a = align->value.v.u64;
        if (a == 0 || (a & (a - 1)) != 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, align->key, -1,
                              "%s: general.alignment %llu is not a power of two", c.path,
                              (unsigned long long)a);
        }
        g->alignment = (uint32_t)a;
    }

    uint64_t expected_offset = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        qw_gguf_tensor *t = &g->tensors[g->n_tensors];
        qw_gguf_str name;
        size_t at = c.pos;
        QW_TRY(read_str(&c, &name, "tensor name", NULL));
        if (name.len == 0 || name.len > QW_GGUF_MAX_NAME_BYTES) {
            return qw_fail_at(err, QW_ERR_CORRUPT, NULL, (int64_t)at,
                              "%s: tensor %llu at byte %zu has a name of %llu bytes (1 to %d "
                              "allowed)", c.path, (unsigned long long)i, at,
                              (unsigned long long)name.len, QW_GGUF_MAX_NAME_BYTES);
        }
        t->name = str_copy(&name);
        if (!t->name) {
            return qw_fail_at(err, QW_ERR_CORRUPT, NULL, (int64_t)at,
                              "%s: tensor name at byte %zu contains a NUL byte", c.path, at);
        }
        g->n_tensors++;
        uint32_t n_dims;
        at = c.pos;
        QW_TRY(read_u32(&c, &n_dims, "dimension count", t->name));
        if (n_dims > QW_GGUF_MAX_DIMS) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" has %u dimensions (at most %d)", c.path, t->name,
                              n_dims, QW_GGUF_MAX_DIMS);
        }
        t->n_dims = (int)n_dims;
        uint64_t n_elems = 1;
        for (int d = 0; d < QW_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne;
            at = c.pos;
            QW_TRY(read_u64(&c, &ne, "dimension", t->name));
            if (ne > (uint64_t)INT64_MAX || qw_mul_overflows(n_elems, ne, &n_elems) ||
                n_elems > (uint64_t)INT64_MAX) {
                return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                                  "%s: tensor \"%s\" has an impossible shape (dimension %u = "
                                  "%llu)", c.path, t->name, d, (unsigned long long)ne);
            }
            t->ne[d] = (int64_t)ne;
        }
        uint32_t type_id;
        at = c.pos;
        QW_TRY(read_u32(&c, &type_id, "type", t->name));
        if (!qw_qtype_from_gguf_id(type_id, &t->type)) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" has unknown or removed ggml type %u", c.path,
                              t->name, type_id);
        }
        const qw_qtype_info *info = qw_qtype_get(t->type);
        if (t->ne[0] % info->block_elems != 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" has rows of %lld elements, not a multiple of "
                              "%s's block of %u", c.path, t->name, (long long)t->ne[0],
                              info->name, info->block_elems);
        }
        uint64_t blocks = n_elems / info->block_elems;
        if (qw_mul_overflows(blocks, info->block_bytes, &t->bytes)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" is too large", c.path, t->name);
        }
        at = c.pos;
        QW_TRY(read_u64(&c, &t->offset, "data offset", t->name));
        if (t->offset != expected_offset) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" has data offset %llu, expected %llu (tensor data "
                              "must follow the info order, each aligned to %u bytes)",
                              c.path, t->name, (unsigned long long)t->offset,
                              (unsigned long long)expected_offset, g->alignment);
        }
        uint64_t padded;
        if (qw_add_overflows(t->bytes, g->alignment - 1, &padded) ||
            qw_add_overflows(expected_offset, padded & ~(uint64_t)(g->alignment - 1),
                             &expected_offset)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)at,
                              "%s: tensor \"%s\" is too large", c.path, t->name);
        }
    }
    QW_TRY(build_order(g, g->n_tensors, true, &g->tensor_order, err));

    g->data_offset = ((uint64_t)c.pos + g->alignment - 1) & ~(uint64_t)(g->alignment - 1);
    for (size_t i = 0; i < g->n_tensors; i++) {
        qw_gguf_tensor *t = &g->tensors[i];
        uint64_t begin, end;
        if (qw_add_overflows(g->data_offset, t->offset, &begin) ||
            qw_add_overflows(begin, t->bytes, &end) || end > c.size) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, (int64_t)g->data_offset,
                              "%s: tensor \"%s\" data (%llu bytes at offset %llu) runs past the "
                              "end of the file (%zu bytes)", c.path, t->name,
                              (unsigned long long)t->bytes,
                              (unsigned long long)(g->data_offset + t->offset), c.size);
        }
        t->data = c.data + begin;
    }
    return QW_OK;
}

static qw_status open_mapped(qw_gguf *g, qw_gguf **out, qw_error *err) {
    qw_status st = parse(g, err);
    if (st != QW_OK) {
        qw_gguf_close(g);
        return st;
    }
    *out = g;
    return QW_OK;
}

qw_status qw_gguf_open(const char *path, qw_gguf **out, qw_error *err) {
    *out = NULL;
    qw_gguf *g = qw_calloc(1, sizeof *g);
    if (!g) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    qw_status st = qw_mapped_open(path, &g->file, err);
    if (st != QW_OK) {
        qw_free(g);
        return st;
    }
    return open_mapped(g, out, err);
}

qw_status qw_gguf_open_memory(const void *data, size_t size, const char *label, qw_gguf **out,
                              qw_error *err) {
    *out = NULL;
    qw_gguf *g = qw_calloc(1, sizeof *g);
    if (!g) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_mapped_wrap(data, size, label, &g->file, err);
    if (st != QW_OK) {
        qw_free(g);
        return st;
    }
    return open_mapped(g, out, err);
}

void qw_gguf_close(qw_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) qw_free(g->kvs[i].key);
    for (size_t i = 0; i < g->n_tensors; i++) qw_free(g->tensors[i].name);
    for (size_t i = 0; i < g->n_str_arrays; i++) qw_free(g->str_arrays[i]);
    qw_free(g->str_arrays);
    qw_free(g->kvs);
    qw_free(g->tensors);
    qw_free(g->tensor_order);
    qw_free(g->kv_order);
    qw_mapped_close(&g->file);
    qw_free(g);
}

/* ---- accessors ------------------------------------------------------------------------------ */

const char *qw_gguf_path(const qw_gguf *g) { return g->file.path; }
uint32_t qw_gguf_version(const qw_gguf *g) { return g->version; }
uint32_t qw_gguf_alignment(const qw_gguf *g) { return g->alignment; }
uint64_t qw_gguf_data_offset(const qw_gguf *g) { return g->data_offset; }
size_t qw_gguf_kv_count(const qw_gguf *g) { return g->n_kv; }
size_t qw_gguf_tensor_count(const qw_gguf *g) { return g->n_tensors; }

const qw_gguf_kv *qw_gguf_kv_at(const qw_gguf *g, size_t index) {
    return index < g->n_kv ? &g->kvs[index] : NULL;
}

const qw_gguf_tensor *qw_gguf_tensor_at(const qw_gguf *g, size_t index) {
    return index < g->n_tensors ? &g->tensors[index] : NULL;
}

const qw_gguf_kv *qw_gguf_find_kv(const qw_gguf *g, const char *key) {
    size_t lo = 0, hi = g->kv_order ? g->n_kv : 0;
    if (!g->kv_order) { /* during parsing, before the order exists */
        for (size_t i = 0; i < g->n_kv; i++) {
            if (strcmp(g->kvs[i].key, key) == 0) return &g->kvs[i];
        }
        return NULL;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kvs[g->kv_order[mid]].key, key);
        if (c == 0) return &g->kvs[g->kv_order[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const qw_gguf_tensor *qw_gguf_find_tensor(const qw_gguf *g, const char *name) {
    size_t lo = 0, hi = g->tensor_order ? g->n_tensors : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->tensor_order[mid]].name, name);
        if (c == 0) return &g->tensors[g->tensor_order[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static bool is_unsigned(qw_gguf_type t) {
    return t == QW_GGUF_UINT8 || t == QW_GGUF_UINT16 || t == QW_GGUF_UINT32 ||
           t == QW_GGUF_UINT64;
}

static bool is_signed(qw_gguf_type t) {
    return t == QW_GGUF_INT8 || t == QW_GGUF_INT16 || t == QW_GGUF_INT32 || t == QW_GGUF_INT64;
}

bool qw_gguf_get_u64(const qw_gguf *g, const char *key, uint64_t *out) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv) return false;
    if (is_unsigned(kv->value.type)) {
        *out = kv->value.v.u64;
        return true;
    }
    if (is_signed(kv->value.type) && kv->value.v.i64 >= 0) {
        *out = (uint64_t)kv->value.v.i64;
        return true;
    }
    return false;
}

bool qw_gguf_get_i64(const qw_gguf *g, const char *key, int64_t *out) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv) return false;
    if (is_signed(kv->value.type)) {
        *out = kv->value.v.i64;
        return true;
    }
    if (is_unsigned(kv->value.type) && kv->value.v.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)kv->value.v.u64;
        return true;
    }
    return false;
}

bool qw_gguf_get_f64(const qw_gguf *g, const char *key, double *out) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv) return false;
    if (kv->value.type == QW_GGUF_FLOAT32 || kv->value.type == QW_GGUF_FLOAT64) {
        *out = kv->value.v.f64;
        return true;
    }
    int64_t i;
    if (qw_gguf_get_i64(g, key, &i)) {
        *out = (double)i;
        return true;
    }
    return false;
}

bool qw_gguf_get_bool(const qw_gguf *g, const char *key, bool *out) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv || kv->value.type != QW_GGUF_BOOL) return false;
    *out = kv->value.v.u64 != 0;
    return true;
}

char *qw_gguf_get_string(const qw_gguf *g, const char *key) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv || kv->value.type != QW_GGUF_STRING) return NULL;
    return qw_strndup(kv->value.v.str.data, (size_t)kv->value.v.str.len);
}
