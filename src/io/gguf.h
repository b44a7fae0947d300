/*
 * gguf.h — GGUF files: a validating reader over a mapped file or memory buffer, and a streaming
 * writer.
 *
 * Byte layout (little-endian, packed), versions 2 and 3:
 *
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x      { string key | u32 value_type | value }
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   zero padding to `general.alignment` (u32, a power of two; default 32)
 *   data: tensor i at data_start + offset_i; offset_i = sum of align_up(nbytes_j) for j < i
 *
 *   string = u64 length | bytes (no NUL)
 *   value  = a scalar of value_type, a string, or
 *            array: u32 element_type | u64 count | count elements (no nested arrays)
 *
 * ne[0] is the row length (an HF [out, in] matrix is ne = {in, out}).
 */
#ifndef QW_GGUF_H
#define QW_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "file.h"
#include "quant.h"

#define QW_GGUF_DEFAULT_ALIGNMENT 32
#define QW_GGUF_MAX_NAME_BYTES 63
#define QW_GGUF_MAX_DIMS 4

typedef enum qw_gguf_type {
    QW_GGUF_UINT8 = 0,
    QW_GGUF_INT8 = 1,
    QW_GGUF_UINT16 = 2,
    QW_GGUF_INT16 = 3,
    QW_GGUF_UINT32 = 4,
    QW_GGUF_INT32 = 5,
    QW_GGUF_FLOAT32 = 6,
    QW_GGUF_BOOL = 7,
    QW_GGUF_STRING = 8,
    QW_GGUF_ARRAY = 9,
    QW_GGUF_UINT64 = 10,
    QW_GGUF_INT64 = 11,
    QW_GGUF_FLOAT64 = 12,
    QW_GGUF_TYPE_COUNT
} qw_gguf_type;

/* Name of a value type ("u32", "str", ...); "?" when out of range. */
const char *qw_gguf_type_name(qw_gguf_type type);

/* Bytes of one scalar of this type; 0 for strings and arrays. */
size_t qw_gguf_type_size(qw_gguf_type type);

typedef struct qw_gguf_str {
    const char *data; /* not NUL-terminated */
    uint64_t len;
} qw_gguf_str;

/* A metadata value as read (pointers borrow from the file) or to be written. */
typedef struct qw_gguf_value {
    qw_gguf_type type;
    union {
        uint64_t u64; /* every unsigned type and bool */
        int64_t i64;  /* every signed type */
        double f64;   /* float32 and float64 */
        qw_gguf_str str;
        struct {
            qw_gguf_type elem_type;
            uint64_t count;
            const void *data;        /* raw little-endian elements (scalars) */
            const qw_gguf_str *strs; /* elements of a string array */
        } arr;
    } v;
} qw_gguf_value;

typedef struct qw_gguf_kv {
    char *key; /* NUL-terminated copy */
    qw_gguf_value value;
} qw_gguf_kv;

typedef struct qw_gguf_tensor {
    char *name;
    qw_qtype type;
    int n_dims;
    int64_t ne[QW_GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint64_t offset;              /* relative to the data section */
    uint64_t bytes;
    const uint8_t *data;          /* into the mapped file */
} qw_gguf_tensor;

/* ---- reader --------------------------------------------------------------------------------- */

typedef struct qw_gguf qw_gguf;

/* Validates everything before returning: header, every KV, every tensor info, offsets and sizes
 * against the file. Any defect is QW_ERR_CORRUPT (or QW_ERR_UNSUPPORTED_INPUT for a version or
 * type this build does not know) naming the file, key or tensor and the byte offset. */
qw_status qw_gguf_open(const char *path, qw_gguf **out, qw_error *err);
/* Same over caller memory that outlives the handle. */
qw_status qw_gguf_open_memory(const void *data, size_t size, const char *label, qw_gguf **out,
                              qw_error *err);
void qw_gguf_close(qw_gguf *g);

const char *qw_gguf_path(const qw_gguf *g);
uint32_t qw_gguf_version(const qw_gguf *g);
uint32_t qw_gguf_alignment(const qw_gguf *g);
uint64_t qw_gguf_data_offset(const qw_gguf *g);

size_t qw_gguf_kv_count(const qw_gguf *g);
const qw_gguf_kv *qw_gguf_kv_at(const qw_gguf *g, size_t index);
const qw_gguf_kv *qw_gguf_find_kv(const qw_gguf *g, const char *key);

size_t qw_gguf_tensor_count(const qw_gguf *g);
const qw_gguf_tensor *qw_gguf_tensor_at(const qw_gguf *g, size_t index);
const qw_gguf_tensor *qw_gguf_find_tensor(const qw_gguf *g, const char *name);

/* Typed access to scalar values, with integer widening (any integer type that fits) and float
 * widening. False when the key is absent or of an incompatible type. */
bool qw_gguf_get_u64(const qw_gguf *g, const char *key, uint64_t *out);
bool qw_gguf_get_i64(const qw_gguf *g, const char *key, int64_t *out);
bool qw_gguf_get_f64(const qw_gguf *g, const char *key, double *out);
bool qw_gguf_get_bool(const qw_gguf *g, const char *key, bool *out);
/* Allocated, NUL-terminated copy of a string value; NULL if absent or not a string. */
char *qw_gguf_get_string(const qw_gguf *g, const char *key);

/* ---- writer --------------------------------------------------------------------------------- */

/*
 * Usage: create; set KVs and add tensor infos in output order; begin (writes the header to a
 * temporary file); write each tensor's bytes in order (in as many pieces as convenient); finish
 * (checks every byte arrived, pads, renames into place). Freeing an unfinished writer removes the
 * temporary file. Setting a key twice replaces its value and keeps its position.
 */
typedef struct qw_gguf_writer qw_gguf_writer;

qw_status qw_gguf_writer_create(qw_gguf_writer **out, qw_error *err);
void qw_gguf_writer_free(qw_gguf_writer *w);

/* Copies the value (strings and arrays included). */
qw_status qw_gguf_writer_set(qw_gguf_writer *w, const char *key, const qw_gguf_value *value,
                             qw_error *err);
qw_status qw_gguf_writer_set_u32(qw_gguf_writer *w, const char *key, uint32_t v, qw_error *err);
qw_status qw_gguf_writer_set_i32(qw_gguf_writer *w, const char *key, int32_t v, qw_error *err);
qw_status qw_gguf_writer_set_u64(qw_gguf_writer *w, const char *key, uint64_t v, qw_error *err);
qw_status qw_gguf_writer_set_f32(qw_gguf_writer *w, const char *key, float v, qw_error *err);
qw_status qw_gguf_writer_set_bool(qw_gguf_writer *w, const char *key, bool v, qw_error *err);
qw_status qw_gguf_writer_set_str(qw_gguf_writer *w, const char *key, const char *v,
                                 qw_error *err);
/* Array of scalars; `data` holds count little-endian elements of elem_type. */
qw_status qw_gguf_writer_set_array(qw_gguf_writer *w, const char *key, qw_gguf_type elem_type,
                                   const void *data, uint64_t count, qw_error *err);
/* Array of NUL-terminated strings. */
qw_status qw_gguf_writer_set_str_array(qw_gguf_writer *w, const char *key,
                                       const char *const *strs, uint64_t count, qw_error *err);
/* Removes a key if present. */
void qw_gguf_writer_remove(qw_gguf_writer *w, const char *key);
bool qw_gguf_writer_has(const qw_gguf_writer *w, const char *key);

/* ne[0] is the row length. */
qw_status qw_gguf_writer_add_tensor(qw_gguf_writer *w, const char *name, qw_qtype type,
                                    int n_dims, const int64_t *ne, qw_error *err);

/* Size of the whole file as it will be written (valid once all tensors are added). */
uint64_t qw_gguf_writer_total_bytes(const qw_gguf_writer *w);

qw_status qw_gguf_writer_begin(qw_gguf_writer *w, const char *final_path, qw_error *err);
qw_status qw_gguf_writer_write(qw_gguf_writer *w, const void *data, size_t bytes, qw_error *err);
qw_status qw_gguf_writer_finish(qw_gguf_writer *w, qw_error *err);

#endif /* QW_GGUF_H */
