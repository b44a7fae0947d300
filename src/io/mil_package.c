/* Blob storage v2 and Manifest.json of a Core ML package (layout in mil_package.h). */
#include "mil_package.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "json.h"

#define BLOB_ALIGN 64u
#define BLOB_SENTINEL 0xDEADBEEFu
#define BLOB_VERSION 2u

struct qw_blob_writer {
    FILE *f;
    char *path;
    uint64_t offset;    /* bytes written so far */
    uint64_t remaining; /* data bytes the open blob still expects */
    uint64_t count;
};

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static qw_status raw_write(qw_blob_writer *w, const void *data, size_t bytes, qw_error *err) {
    if (bytes && fwrite(data, 1, bytes, w->f) != bytes) {
        return qw_fail_write(w->path, errno, err);
    }
    w->offset += bytes;
    return QW_OK;
}

static qw_status pad_to_alignment(qw_blob_writer *w, qw_error *err) {
    static const uint8_t zeros[BLOB_ALIGN];
    const size_t pad = (size_t)((BLOB_ALIGN - w->offset % BLOB_ALIGN) % BLOB_ALIGN);
    return raw_write(w, zeros, pad, err);
}

static qw_status write_header(qw_blob_writer *w, qw_error *err) {
    uint8_t h[BLOB_ALIGN] = {0};
    put_u32(h, (uint32_t)w->count);
    put_u32(h + 4, BLOB_VERSION);
    return raw_write(w, h, sizeof h, err);
}

qw_status qw_blob_writer_open(const char *path, qw_blob_writer **out, qw_error *err) {
    *out = NULL;
    qw_blob_writer *w = qw_calloc(1, sizeof *w);
    if (!w || !(w->path = qw_strdup(path))) {
        qw_free(w);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        qw_status st = qw_fail(err, QW_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        qw_blob_writer_abort(w);
        return st;
    }
    qw_status st = write_header(w, err); /* the count is patched by finish */
    if (st != QW_OK) {
        qw_blob_writer_abort(w);
        return st;
    }
    *out = w;
    return QW_OK;
}

qw_status qw_blob_writer_begin(qw_blob_writer *w, qw_blob_dtype dtype, uint64_t size_bytes,
                               uint32_t padding_bits, uint64_t *offset, qw_error *err) {
    if (w->remaining) {
        return qw_fail(err, QW_ERR_INTERNAL, "%s: blob %llu is %llu bytes short", w->path,
                       (unsigned long long)w->count, (unsigned long long)w->remaining);
    }
    if (padding_bits >= 8) {
        return qw_fail(err, QW_ERR_INTERNAL, "%s: blob padding of %u bits", w->path,
                       padding_bits);
    }
    QW_TRY(pad_to_alignment(w, err));
    uint8_t m[BLOB_ALIGN] = {0};
    *offset = w->offset;
    put_u32(m, BLOB_SENTINEL);
    put_u32(m + 4, (uint32_t)dtype);
    put_u64(m + 8, size_bytes);
    put_u64(m + 16, w->offset + BLOB_ALIGN);
    put_u64(m + 24, padding_bits);
    QW_TRY(raw_write(w, m, sizeof m, err));
    w->remaining = size_bytes;
    w->count++;
    return QW_OK;
}

qw_status qw_blob_writer_write(qw_blob_writer *w, const void *data, size_t bytes, qw_error *err) {
    if (bytes > w->remaining) {
        return qw_fail(err, QW_ERR_INTERNAL, "%s: blob %llu overruns its size by %llu bytes",
                       w->path, (unsigned long long)w->count,
                       (unsigned long long)(bytes - w->remaining));
    }
    w->remaining -= bytes;
    return raw_write(w, data, bytes, err);
}

uint64_t qw_blob_writer_count(const qw_blob_writer *w) { return w ? w->count : 0; }

qw_status qw_blob_writer_finish(qw_blob_writer *w, qw_error *err) {
    qw_status st = QW_OK;
    if (w->remaining) {
        st = qw_fail(err, QW_ERR_INTERNAL, "%s: last blob is %llu bytes short", w->path,
                     (unsigned long long)w->remaining);
    }
    /* the header's count: rewritten now that every blob is known */
    if (st == QW_OK && fseeko(w->f, 0, SEEK_SET) != 0) {
        st = qw_fail(err, QW_ERR_IO, "%s: seek failed: %s", w->path, strerror(errno));
    }
    if (st == QW_OK) {
        w->offset = 0;
        st = write_header(w, err);
    }
    FILE *f = w->f;
    w->f = NULL;
    if (fclose(f) != 0 && st == QW_OK) {
        st = qw_fail_write(w->path, errno, err);
    }
    qw_blob_writer_abort(w);
    return st;
}

void qw_blob_writer_abort(qw_blob_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    qw_free(w->path);
    qw_free(w);
}

/* ---- Manifest.json -------------------------------------------------------------------------- */

/* A UUID-shaped identifier from a 128-bit FNV-1a-style hash of seed and item: readers accept
 * any string, and a fixed derivation keeps outputs reproducible. */
static void item_id(const char *seed, const char *item, char out[37]) {
    uint64_t h[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
    for (int k = 0; k < 2; k++) {
        for (const char *s = seed; *s; s++) h[k] = (h[k] ^ (uint8_t)*s) * 0x100000001b3ull;
        for (const char *s = item; *s; s++) h[k] = (h[k] ^ (uint8_t)*s) * 0x100000001b3ull;
    }
    snprintf(out, 37, "%08X-%04X-4%03X-%04X-%012llX", (unsigned)(h[0] >> 32),
             (unsigned)(h[0] >> 16) & 0xffffu, (unsigned)h[0] & 0xfffu,
             (unsigned)(0x8000u | ((h[1] >> 48) & 0x3fffu)),
             (unsigned long long)(h[1] & 0xffffffffffffull));
}

qw_status qw_mlpackage_layout(const char *dir, const char *seed, qw_error *err) {
    char *weights = qw_sprintf("%s/Data/" QW_MLPACKAGE_AUTHOR "/weights", dir);
    if (!weights) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_mkdir_p(weights, err);
    qw_free(weights);
    QW_TRY(st);
    char model_id[37], weights_id[37];
    item_id(seed, "model", model_id);
    item_id(seed, "weights", weights_id);
    json_t *manifest = json_pack(
        "{s:s, s:{s:{s:s, s:s, s:s, s:s}, s:{s:s, s:s, s:s, s:s}}, s:s}", "fileFormatVersion",
        "1.0.0", "itemInfoEntries", model_id, "author", QW_MLPACKAGE_AUTHOR, "description",
        "CoreML Model Specification", "name", "model.mlmodel", "path",
        QW_MLPACKAGE_AUTHOR "/model.mlmodel", weights_id, "author", QW_MLPACKAGE_AUTHOR,
        "description", "CoreML Model Weights", "name", "weights", "path",
        QW_MLPACKAGE_AUTHOR "/weights", "rootModelIdentifier", model_id);
    /* formatted as coremltools writes it: 4-space indent, sorted keys, a final newline */
    st = manifest ? qw_json_write_file_flags(manifest, dir, "Manifest.json",
                                             JSON_INDENT(4) | JSON_SORT_KEYS, err)
                  : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    json_decref(manifest);
    return st;
}
