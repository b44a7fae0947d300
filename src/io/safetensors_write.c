/*
 * Streaming safetensors writer (safetensors.h): header first, from entries known up front, then
 * the data in entry order. Header JSON: "__metadata__" first, then the tensors in the given
 * order, compact, padded with spaces to a multiple of 8 bytes as the reference writer does.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static const struct {
    const char *name;
    size_t bytes;
} ST_DTYPES[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
    {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1},
};

struct qw_st_writer {
    qw_output *out;
    uint64_t expected; /* data bytes declared */
    uint64_t written;
    char *path;
};

size_t qw_st_dtype_bytes(const char *dtype) {
    for (size_t i = 0; dtype && i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++) {
        if (strcmp(ST_DTYPES[i].name, dtype) == 0) return ST_DTYPES[i].bytes;
    }
    return 0;
}

uint64_t qw_st_entry_bytes(const qw_st_entry *e, bool *ok) {
    uint64_t n = qw_st_dtype_bytes(e->dtype);
    *ok = n != 0 && e->n_dims >= 0 && e->n_dims <= QW_SAFETENSORS_MAX_DIMS;
    for (int d = 0; *ok && d < e->n_dims; d++) {
        *ok = e->shape[d] >= 0 && !qw_mul_overflows(n, (uint64_t)e->shape[d], &n);
    }
    return *ok ? n : 0;
}

/* The padded header text and the data size; the caller frees *text with free(). */
static qw_status build_header(const qw_st_entry *entries, size_t n, char **text,
                              size_t *text_len, uint64_t *data_bytes, qw_error *err) {
    json_t *h = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    bool ok = h && meta && json_object_set_new(h, "__metadata__", meta) == 0;
    uint64_t offset = 0;
    qw_status st = QW_OK;
    for (size_t i = 0; ok && st == QW_OK && i < n; i++) {
        const qw_st_entry *e = &entries[i];
        bool valid;
        uint64_t bytes = qw_st_entry_bytes(e, &valid);
        uint64_t end;
        if (!valid || !e->name || !e->name[0] || qw_add_overflows(offset, bytes, &end) ||
            json_object_get(h, e->name)) {
            st = qw_fail_at(err, QW_ERR_INVALID_ARG, e->name ? e->name : "", -1,
                            "safetensors entry \"%s\": bad dtype, shape or a duplicate name",
                            e->name ? e->name : "");
            break;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < e->n_dims; d++) {
            ok = ok && json_array_append_new(shape, json_integer((json_int_t)e->shape[d])) == 0;
        }
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", e->dtype, "shape", shape,
                                  "data_offsets", (json_int_t)offset, (json_int_t)end);
        ok = ok && entry && json_object_set_new(h, e->name, entry) == 0;
        offset = end;
    }
    char *dumped = st == QW_OK && ok ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(h);
    if (st != QW_OK) return st;
    if (!dumped) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for a safetensors header");
    size_t len = strlen(dumped), padded = (len + 7) / 8 * 8;
    char *out = realloc(dumped, padded + 1);
    if (!out) {
        free(dumped);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for a safetensors header");
    }
    memset(out + len, ' ', padded - len);
    out[padded] = 0;
    *text = out;
    *text_len = padded;
    *data_bytes = offset;
    return QW_OK;
}

qw_status qw_st_writer_open(const char *path, const qw_st_entry *entries, size_t n,
                            qw_st_writer **out, qw_error *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    uint64_t data = 0;
    QW_TRY(build_header(entries, n, &text, &len, &data, err));
    qw_st_writer *w = qw_calloc(1, sizeof *w);
    if (w) w->path = qw_strdup(path);
    qw_status st = w && w->path ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) st = qw_output_open(path, &w->out, err);
    if (st == QW_OK) st = qw_output_reserve(w->out, 8 + len + data, err);
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (uint8_t)((uint64_t)len >> (8 * i));
    if (st == QW_OK) st = qw_output_write(w->out, prefix, sizeof prefix, err);
    if (st == QW_OK) st = qw_output_write(w->out, text, len, err);
    free(text);
    if (st != QW_OK) {
        qw_st_writer_abort(w);
        return st;
    }
    w->expected = data;
    *out = w;
    return QW_OK;
}

qw_status qw_st_writer_write(qw_st_writer *w, const void *data, size_t bytes, qw_error *err) {
    if (bytes > w->expected - w->written) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "%s: %zu more bytes than its tensors declare",
                       w->path, bytes - (size_t)(w->expected - w->written));
    }
    QW_TRY(qw_output_write(w->out, data, bytes, err));
    w->written += bytes;
    return QW_OK;
}

qw_status qw_st_writer_finish(qw_st_writer *w, qw_error *err) {
    qw_status st;
    if (w->written != w->expected) {
        st = qw_fail(err, QW_ERR_INTERNAL, "%s: %llu of %llu tensor bytes were written", w->path,
                     (unsigned long long)w->written, (unsigned long long)w->expected);
        qw_output_abort(w->out);
    } else {
        st = qw_output_commit(w->out, err);
    }
    qw_free(w->path);
    qw_free(w);
    return st;
}

void qw_st_writer_abort(qw_st_writer *w) {
    if (!w) return;
    qw_output_abort(w->out);
    qw_free(w->path);
    qw_free(w);
}
