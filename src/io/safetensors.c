/* safetensors reader. Layout: see safetensors.h. */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "safetensors.h"

struct qw_safetensors {
    qw_mapped file;
    json_t *header;
    size_t n;
    qw_st_tensor *tensors;
};

/* Every dtype the format defines, with its width; those qwodel computes with map to a qtype. */
static const struct dtype_row {
    const char *name;
    unsigned bits;
    bool has_qtype;
    qw_qtype qtype;
} dtype_table[] = {
    {"F32", 32, true, QW_QTYPE_F32},    {"F16", 16, true, QW_QTYPE_F16},
    {"BF16", 16, true, QW_QTYPE_BF16},  {"F64", 64, true, QW_QTYPE_F64},
    {"BOOL", 8, false, 0},              {"U8", 8, false, 0},
    {"I8", 8, false, 0},                {"I16", 16, false, 0},
    {"U16", 16, false, 0},              {"I32", 32, false, 0},
    {"U32", 32, false, 0},              {"I64", 64, false, 0},
    {"U64", 64, false, 0},              {"C64", 64, false, 0},
    {"F8_E5M2", 8, false, 0},           {"F8_E4M3", 8, false, 0},
    {"F8_E8M0", 8, false, 0},           {"F8_E4M3FNUZ", 8, false, 0},
    {"F8_E5M2FNUZ", 8, false, 0},       {"F4", 4, false, 0},
    {"F6_E2M3", 6, false, 0},           {"F6_E3M2", 6, false, 0},
};

static const struct dtype_row *dtype_find(const char *name) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (strcmp(dtype_table[i].name, name) == 0) return &dtype_table[i];
    }
    return NULL;
}

static int cmp_offset(const void *a, const void *b) {
    const qw_st_tensor *x = *(const qw_st_tensor *const *)a;
    const qw_st_tensor *y = *(const qw_st_tensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1;
    return 0;
}

static qw_status parse_tensor(qw_safetensors *st, const char *name, json_t *info,
                              uint64_t buffer_bytes, const uint8_t *buffer, qw_st_tensor *t,
                              qw_error *err) {
    const char *path = st->file.path;
    t->name = qw_strdup(name);
    if (!t->name) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    if (!json_is_object(info)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "%s: header entry for tensor \"%s\" is not an object", path, name);
    }
    const char *dtype = NULL;
    QW_TRY(qw_json_get_string(info, "dtype", path, &dtype, NULL, err));
    if (!dtype) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1, "%s: tensor \"%s\" has no dtype", path,
                          name);
    }
    const struct dtype_row *row = dtype_find(dtype);
    if (!row) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1, "%s: tensor \"%s\" has unknown dtype "
                          "\"%s\"", path, name, dtype);
    }
    t->dtype = row->name;
    t->has_qtype = row->has_qtype;
    t->qtype = row->qtype;
    json_t *shape = json_object_get(info, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > QW_SAFETENSORS_MAX_DIMS) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "%s: tensor \"%s\" has a missing or invalid shape (at most %d "
                          "dimensions)", path, name, QW_SAFETENSORS_MAX_DIMS);
    }
    t->n_dims = (int)json_array_size(shape);
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        int64_t dim;
        if (!qw_json_integer_value(json_array_get(shape, (size_t)d), &dim) || dim < 0 ||
            qw_mul_overflows(n, (uint64_t)dim, &n)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                              "%s: tensor \"%s\" has an invalid dimension %d", path, name, d);
        }
        t->shape[d] = dim;
    }
    t->n_elems = n;
    json_t *offsets = json_object_get(info, "data_offsets");
    int64_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        !json_is_integer(json_array_get(offsets, 0)) ||
        !json_is_integer(json_array_get(offsets, 1))) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, -1,
                          "%s: tensor \"%s\" needs data_offsets [begin, end]", path, name);
    }
    begin = json_integer_value(json_array_get(offsets, 0));
    end = json_integer_value(json_array_get(offsets, 1));
    if (begin < 0 || end < begin || (uint64_t)end > buffer_bytes) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, begin,
                          "%s: tensor \"%s\" data_offsets [%lld, %lld] fall outside the %llu-byte "
                          "data buffer", path, name, (long long)begin, (long long)end,
                          (unsigned long long)buffer_bytes);
    }
    uint64_t bits;
    if (qw_mul_overflows(n, row->bits, &bits)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, begin,
                          "%s: tensor \"%s\" has an impossible shape: its size in bytes "
                          "overflows 64 bits", path, name);
    }
    if (bits % 8 != 0 || bits / 8 != (uint64_t)(end - begin)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, name, begin,
                          "%s: tensor \"%s\" has %lld bytes of data but its %s shape needs %llu",
                          path, name, (long long)(end - begin), dtype,
                          (unsigned long long)(bits / 8));
    }
    t->bytes = (uint64_t)(end - begin);
    t->data = buffer + begin;
    return QW_OK;
}

static qw_status parse(qw_safetensors *st, qw_error *err) {
    const char *path = st->file.path;
    const uint8_t *data = st->file.data;
    size_t size = st->file.size;
    if (size < 8) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 0,
                          "%s: too small to be a safetensors file (%zu bytes)", path, size);
    }
    uint64_t header_bytes;
    memcpy(&header_bytes, data, 8);
    if (header_bytes > QW_SAFETENSORS_MAX_HEADER_BYTES) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 0,
                          "%s: header length %llu is larger than the %u bytes allowed", path,
                          (unsigned long long)header_bytes, QW_SAFETENSORS_MAX_HEADER_BYTES);
    }
    if (header_bytes > size - 8) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 0,
                          "%s: header length %llu runs past the end of the file (%zu bytes)",
                          path, (unsigned long long)header_bytes, size);
    }
    if (header_bytes == 0 || data[8] != '{') {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 8,
                          "%s: header does not start with '{': not a safetensors file", path);
    }
    QW_TRY(qw_json_parse((const char *)data + 8, (size_t)header_bytes, path, &st->header, err));
    if (!json_is_object(st->header)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, 8, "%s: header is not a JSON object", path);
    }
    const uint8_t *buffer = data + 8 + header_bytes;
    uint64_t buffer_bytes = size - 8 - header_bytes;
    size_t n = json_object_size(st->header);
    st->tensors = qw_calloc(n, sizeof *st->tensors);
    if (!st->tensors) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    const char *key;
    json_t *value;
    json_object_foreach(st->header, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(value)) {
                return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                                  "%s: __metadata__ must be an object of strings", path);
            }
            json_object_foreach(value, mk, mv) {
                if (!json_is_string(mv)) {
                    return qw_fail_at(err, QW_ERR_CORRUPT, mk, -1,
                                      "%s: __metadata__ value \"%s\" is not a string", path, mk);
                }
            }
            continue;
        }
        QW_TRY(parse_tensor(st, key, value, buffer_bytes, buffer, &st->tensors[st->n++], err));
    }
    /* Sorted by offset, the tensors must tile the buffer exactly. */
    qw_st_tensor **order = qw_malloc_array(st->n, sizeof *order);
    if (!order) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    for (size_t i = 0; i < st->n; i++) order[i] = &st->tensors[i];
    qsort(order, st->n, sizeof *order, cmp_offset);
    const uint8_t *expected = buffer;
    qw_status status = QW_OK;
    for (size_t i = 0; i < st->n && status == QW_OK; i++) {
        if (order[i]->data != expected) {
            status = qw_fail_at(
                err, QW_ERR_CORRUPT, order[i]->name, (int64_t)(order[i]->data - data),
                "%s: tensor \"%s\" starts at data offset %lld, expected %lld (tensors must not "
                "overlap or leave holes)", path, order[i]->name,
                (long long)(order[i]->data - buffer), (long long)(expected - buffer));
        }
        expected += order[i]->bytes;
    }
    if (status == QW_OK && (uint64_t)(expected - buffer) != buffer_bytes) {
        status = qw_fail_at(err, QW_ERR_CORRUPT, NULL, (int64_t)(expected - data),
                            "%s: %llu bytes of data follow the last tensor", path,
                            (unsigned long long)(buffer_bytes - (uint64_t)(expected - buffer)));
    }
    qw_free(order);
    return status;
}

static qw_status finish_open(qw_safetensors *st, qw_safetensors **out, qw_error *err) {
    qw_status status = parse(st, err);
    if (status != QW_OK) {
        qw_safetensors_close(st);
        return status;
    }
    *out = st;
    return QW_OK;
}

qw_status qw_safetensors_open(const char *path, qw_safetensors **out, qw_error *err) {
    *out = NULL;
    qw_safetensors *st = qw_calloc(1, sizeof *st);
    if (!st) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    qw_status status = qw_mapped_open(path, &st->file, err);
    if (status != QW_OK) {
        qw_free(st);
        return status;
    }
    return finish_open(st, out, err);
}

qw_status qw_safetensors_open_memory(const void *data, size_t size, const char *label,
                                     qw_safetensors **out, qw_error *err) {
    *out = NULL;
    qw_safetensors *st = qw_calloc(1, sizeof *st);
    if (!st) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status status = qw_mapped_wrap(data, size, label, &st->file, err);
    if (status != QW_OK) {
        qw_free(st);
        return status;
    }
    return finish_open(st, out, err);
}

void qw_safetensors_close(qw_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) qw_free(st->tensors[i].name);
    qw_free(st->tensors);
    json_decref(st->header);
    qw_mapped_close(&st->file);
    qw_free(st);
}

const char *qw_safetensors_path(const qw_safetensors *st) { return st->file.path; }
size_t qw_safetensors_count(const qw_safetensors *st) { return st->n; }

const qw_st_tensor *qw_safetensors_at(const qw_safetensors *st, size_t index) {
    return index < st->n ? &st->tensors[index] : NULL;
}

const qw_st_tensor *qw_safetensors_find(const qw_safetensors *st, const char *name) {
    for (size_t i = 0; i < st->n; i++) {
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    }
    return NULL;
}

const char *qw_safetensors_metadata(const qw_safetensors *st, const char *key) {
    json_t *meta = json_object_get(st->header, "__metadata__");
    json_t *v = json_object_get(meta, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
