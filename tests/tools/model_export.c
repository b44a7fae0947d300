/*
 * model_export — opens a model (HF directory or .gguf) through the model layer's HuggingFace view
 * and writes what the view shows: every tensor into one safetensors file, config.json, and the
 * tokenizer as tokenizer.json + tokenizer_config.json (built from tokenizer.ggml.* for a GGUF).
 *
 *   model_export [--f32] <model> <out_dir>
 *
 * Tensors stored as F32/F16/BF16 keep their type and bytes; every other type (and all of them
 * with --f32) is written as F32 values. Rows are streamed a few MiB at a time, so memory stays
 * bounded by the chunk, not the model. The Python GGUF-source tests drive it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "json.h"
#include "model.h"

#define CHUNK_BYTES (4u << 20)

/* safetensors dtype names of the types written unchanged. */
static const struct {
    qw_qtype type;
    const char *dtype;
} st_dtypes[] = {
    {QW_QTYPE_F32, "F32"},
    {QW_QTYPE_F16, "F16"},
    {QW_QTYPE_BF16, "BF16"},
    {QW_QTYPE_F64, "F64"},
};

static qw_qtype out_type(const qw_hf_tensor *t, bool force_f32) {
    return t->raw && !force_f32 ? t->raw_type : QW_QTYPE_F32;
}

static const char *dtype_name(qw_qtype type) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (st_dtypes[i].type == type) return st_dtypes[i].dtype;
    }
    return NULL;
}

static uint64_t tensor_elems(const qw_hf_tensor *t) {
    return (uint64_t)t->ne[0] * (uint64_t)t->n_rows;
}

/* The JSON header, space-padded so the data starts 8-byte aligned. */
static qw_status build_header(const qw_hf_view *v, bool force_f32, qw_buf *out, qw_error *err) {
    json_t *h = json_object();
    uint64_t offset = 0;
    /* as transformers' save_pretrained writes it; transformers before 4.47 refuses a file
     * without it */
    bool ok = h && json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt")) == 0;
    for (size_t i = 0; ok && i < qw_hf_view_count(v); i++) {
        const qw_hf_tensor *t = qw_hf_view_at(v, i);
        qw_qtype type = out_type(t, force_f32);
        uint64_t bytes = tensor_elems(t) * qw_qtype_get(type)->block_bytes;
        json_t *shape = json_array();
        for (int d = t->n_dims - 1; shape && d >= 0; d--) {
            ok = ok && json_array_append_new(shape, json_integer((json_int_t)t->ne[d])) == 0;
        }
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_name(type), "shape",
                                  shape, "data_offsets", (json_int_t)offset,
                                  (json_int_t)(offset + bytes));
        ok = ok && entry && json_object_set_new(h, t->name, entry) == 0;
        offset += bytes;
    }
    char *text = ok ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(h);
    if (!text) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    uint64_t n = padded;
    ok = qw_buf_append(out, &n, 8) && qw_buf_append(out, text, len);
    while (ok && out->len < 8 + padded) ok = qw_buf_append(out, " ", 1);
    free(text);
    return ok ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
}

static qw_status write_tensor(const qw_hf_tensor *t, bool force_f32, qw_output *o, void *chunk,
                              qw_error *err) {
    qw_qtype type = out_type(t, force_f32);
    size_t elem = qw_qtype_get(type)->block_bytes;
    uint64_t row_bytes = (uint64_t)t->ne[0] * (type == QW_QTYPE_F32 ? 4 : elem);
    if (row_bytes == 0) return QW_OK;
    int64_t per_chunk = (int64_t)(CHUNK_BYTES / row_bytes);
    if (per_chunk < 1) return qw_fail(err, QW_ERR_UNSUPPORTED_INPUT, "%s: rows too long", t->name);
    for (int64_t r = 0; r < t->n_rows; r += per_chunk) {
        int64_t n = t->n_rows - r < per_chunk ? t->n_rows - r : per_chunk;
        QW_TRY(t->raw && !force_f32 ? qw_hf_tensor_read_raw(t, r, n, chunk, err)
                                    : qw_hf_tensor_read_f32(t, r, n, chunk, err));
        QW_TRY(qw_output_write(o, chunk, (size_t)((uint64_t)n * row_bytes), err));
    }
    qw_model_release_rows(t->source, 0, t->source->n_rows);
    return QW_OK;
}

static qw_status run(const char *model_path, const char *dir, bool force_f32, qw_error *err) {
    qw_model *m = NULL;
    qw_hf_view *v = NULL;
    qw_output *o = NULL;
    qw_buf header = {0};
    void *chunk = NULL;
    char *st_path = NULL;
    qw_status st = qw_model_open(model_path, NULL, &m, err);
    const json_t *config = NULL;
    if (st == QW_OK) st = qw_model_hf_view(m, &v, err);
    if (st == QW_OK) st = qw_hf_view_config(v, &config, err); /* before any output is written */
    if (st == QW_OK) st = qw_mkdir_p(dir, err);
    if (st == QW_OK) st = build_header(v, force_f32, &header, err);
    if (st == QW_OK) {
        st_path = qw_path_join(dir, "model.safetensors");
        chunk = qw_malloc(CHUNK_BYTES);
        if (!st_path || !chunk) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    if (st == QW_OK) st = qw_output_open(st_path, &o, err);
    if (st == QW_OK) st = qw_output_write(o, header.data, header.len, err);
    for (size_t i = 0; st == QW_OK && i < qw_hf_view_count(v); i++) {
        st = write_tensor(qw_hf_view_at(v, i), force_f32, o, chunk, err);
    }
    if (st == QW_OK) {
        st = qw_output_commit(o, err);
        o = NULL;
    }
    if (st == QW_OK) st = qw_json_write_file(config, dir, "config.json", err);
    json_t *tokenizer = NULL, *tokenizer_config = NULL;
    if (st == QW_OK) st = qw_model_hf_tokenizer(m, &tokenizer, &tokenizer_config, err);
    if (st == QW_OK && tokenizer) st = qw_json_write_file(tokenizer, dir, "tokenizer.json", err);
    if (st == QW_OK && tokenizer_config) {
        st = qw_json_write_file(tokenizer_config, dir, "tokenizer_config.json", err);
    }
    json_decref(tokenizer);
    json_decref(tokenizer_config);
    qw_output_abort(o);
    qw_free(chunk);
    qw_free(st_path);
    qw_buf_free(&header);
    qw_hf_view_free(v);
    qw_model_close(m);
    return st;
}

int main(int argc, char **argv) {
    bool force_f32 = argc > 1 && strcmp(argv[1], "--f32") == 0;
    if (argc != 3 + (int)force_f32) {
        fprintf(stderr, "usage: %s [--f32] <model> <out_dir>\n", argv[0]);
        return 2;
    }
    qw_error err = {0};
    qw_status st = run(argv[1 + force_f32], argv[2 + force_f32], force_f32, &err);
    if (st != QW_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], qw_status_name(st), err.message);
        return 1;
    }
    return 0;
}
