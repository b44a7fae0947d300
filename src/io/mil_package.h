/*
 * mil_package.h — the files of a Core ML .mlpackage other than the model spec itself:
 * MIL blob storage v2 (weights/weight.bin) and Manifest.json (research/coreml.md §1, §3).
 *
 * weight.bin layout (little-endian, every record 64-byte aligned):
 *   @0   header:   u32 count, u32 version = 2, 7 x u64 zero
 *   then per blob: metadata (u32 0xDEADBEEF, u32 blob dtype, u64 size_bytes, u64 data offset,
 *        u64 padding bits, 4 x u64 zero), the data right after it, zeros to the next 64 bytes.
 * A const refers to a blob by the offset of its metadata record.
 */
#ifndef QW_MIL_PACKAGE_H
#define QW_MIL_PACKAGE_H

#include <stdint.h>

#include "core.h"

/* Blob element types as the storage names them (not MIL's DataType numbers). */
typedef enum qw_blob_dtype {
    QW_BLOB_FLOAT16 = 1,
    QW_BLOB_FLOAT32 = 2,
    QW_BLOB_UINT8 = 3,
    QW_BLOB_INT8 = 4,
    QW_BLOB_UINT4 = 11,
    QW_BLOB_UINT6 = 13,
} qw_blob_dtype;

/* The folder under Data/ and the names inside it that the model spec refers to. */
#define QW_MLPACKAGE_AUTHOR "com.apple.CoreML"
#define QW_MLPACKAGE_WEIGHT_REF "@model_path/weights/weight.bin"

typedef struct qw_blob_writer qw_blob_writer;

/* Creates (truncates) the file at path. Not thread-safe; one writer per file. */
qw_status qw_blob_writer_open(const char *path, qw_blob_writer **out, qw_error *err);
/* Starts a blob of `size_bytes` bytes (the caller then writes exactly that many with
 * qw_blob_writer_write); *offset receives the metadata offset to put in the model spec.
 * padding_bits: unused high bits of the last byte for sub-byte types, else 0. Starting a blob
 * before the previous one is complete is QW_ERR_INTERNAL. */
qw_status qw_blob_writer_begin(qw_blob_writer *w, qw_blob_dtype dtype, uint64_t size_bytes,
                               uint32_t padding_bits, uint64_t *offset, qw_error *err);
qw_status qw_blob_writer_write(qw_blob_writer *w, const void *data, size_t bytes, qw_error *err);
/* Writes the blob count into the header and closes the file; frees w whatever the outcome. */
qw_status qw_blob_writer_finish(qw_blob_writer *w, qw_error *err);
/* Closes and frees without finishing (the caller removes the file); NULL is a no-op. */
void qw_blob_writer_abort(qw_blob_writer *w);
uint64_t qw_blob_writer_count(const qw_blob_writer *w);

/* Lays out an empty package at `dir` (which must exist): Data/<author>/weights/ and
 * Manifest.json naming model.mlmodel and the weights folder. Item identifiers are derived from
 * `seed` so the same model gives the same bytes. */
qw_status qw_mlpackage_layout(const char *dir, const char *seed, qw_error *err);

#endif /* QW_MIL_PACKAGE_H */
