/*
 * safetensors.h — safetensors files, validated as the reference reader does.
 *
 * Byte layout:
 *   u64 N (little-endian) | N bytes of UTF-8 JSON header | data buffer
 *   header: {"<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *            "__metadata__": {"<key>": "<string>"}}
 *   offsets are relative to the data buffer, end exclusive; sorted by offset, the tensors tile
 *   the buffer exactly (no holes, no overlaps) and the last one ends at the end of the file.
 */
#ifndef QW_SAFETENSORS_H
#define QW_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "file.h"
#include "quant.h"

#define QW_SAFETENSORS_MAX_HEADER_BYTES 100000000u
#define QW_SAFETENSORS_MAX_DIMS 8

typedef struct qw_st_tensor {
    char *name;
    const char *dtype;   /* "BF16", "F32", ... (static string) */
    bool has_qtype;      /* dtype is one qwodel computes with (F32, F16, BF16, F64) */
    qw_qtype qtype;
    int n_dims;
    int64_t shape[QW_SAFETENSORS_MAX_DIMS]; /* as stored: shape[0] is the outermost dimension */
    uint64_t n_elems;
    uint64_t bytes;
    const uint8_t *data;
} qw_st_tensor;

typedef struct qw_safetensors qw_safetensors;

qw_status qw_safetensors_open(const char *path, qw_safetensors **out, qw_error *err);
qw_status qw_safetensors_open_memory(const void *data, size_t size, const char *label,
                                     qw_safetensors **out, qw_error *err);
void qw_safetensors_close(qw_safetensors *st);

const char *qw_safetensors_path(const qw_safetensors *st);
size_t qw_safetensors_count(const qw_safetensors *st);
const qw_st_tensor *qw_safetensors_at(const qw_safetensors *st, size_t index);
const qw_st_tensor *qw_safetensors_find(const qw_safetensors *st, const char *name);
/* Value of a __metadata__ entry, or NULL. */
const char *qw_safetensors_metadata(const qw_safetensors *st, const char *key);

/* ---- writing ------------------------------------------------------------------------------
 * A file whose tensors are all known before the first byte of data: the header is written at
 * open, then the tensors' bytes in the order given (each tensor's offsets follow the previous
 * one's), so a producer can stream them without holding the file. The file is published under
 * its name only by qw_st_writer_finish, after every declared byte arrived. */

typedef struct qw_st_entry {
    const char *name;
    const char *dtype; /* "F32", "F16", "BF16", "I32", "I64", "I8", "U8" */
    int n_dims;
    int64_t shape[QW_SAFETENSORS_MAX_DIMS]; /* outermost first, as stored */
} qw_st_entry;

/* Bytes of one element of a safetensors dtype name; 0 for a name it does not know. */
size_t qw_st_dtype_bytes(const char *dtype);
/* Bytes of an entry's data; 0 with *ok false for an unknown dtype or an overflowing shape. */
uint64_t qw_st_entry_bytes(const qw_st_entry *e, bool *ok);

typedef struct qw_st_writer qw_st_writer;

qw_status qw_st_writer_open(const char *path, const qw_st_entry *entries, size_t n,
                            qw_st_writer **out, qw_error *err);
/* Appends data; more bytes than the entries declare is QW_ERR_INVALID_ARG. */
qw_status qw_st_writer_write(qw_st_writer *w, const void *data, size_t bytes, qw_error *err);
/* Checks every declared byte was written, then publishes the file; frees w either way. */
qw_status qw_st_writer_finish(qw_st_writer *w, qw_error *err);
/* Drops an unfinished file; NULL is a no-op. */
void qw_st_writer_abort(qw_st_writer *w);

#endif /* QW_SAFETENSORS_H */
