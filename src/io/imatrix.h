/*
 * imatrix.h — importance matrices as llama.cpp's llama-imatrix writes them, in either of its two
 * file formats, read into one table of per-tensor importance weights.
 *
 * Legacy .dat (little-endian, packed):
 *
 *   i32 n_entries (>= 1)
 *   n_entries x { i32 name_len | name bytes | i32 ncall | i32 nval (>= 1) | f32 values[nval] }
 *   optional trailer: i32 chunks | i32 dataset_len | dataset bytes
 *
 *   importance = value / ncall (the value itself when ncall <= 0), as llama-quantize computes it.
 *
 * GGUF (general.type "imatrix"): keys imatrix.datasets (string array), imatrix.chunk_count and
 * imatrix.chunk_size (u32); per weight tensor W two F32 tensors, "W.in_sum2" with ne {ne0, n_mat}
 * and "W.counts" with ne {1, n_mat} (n_mat > 1 for stacked experts). Other tensors are ignored.
 *
 *   importance[j*ne0 + i] = in_sum2[j*ne0 + i] / counts[j], or 1 where counts[j] is 0.
 *
 * Every count and size is checked against the file before it is used; values must be finite and
 * not negative. Defects are QW_ERR_CORRUPT naming the file, the entry and the byte offset.
 */
#ifndef QW_IMATRIX_H
#define QW_IMATRIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* Longest tensor name GGUF allows (GGML_MAX_NAME - 1). */
#define QW_IMATRIX_MAX_NAME_BYTES 63

typedef struct qw_imatrix_entry {
    char name[QW_IMATRIX_MAX_NAME_BYTES + 1]; /* the weight tensor's GGUF name */
    float *values;                            /* n_values importance weights */
    size_t n_values;                          /* row length x matrices (experts) */
} qw_imatrix_entry;

typedef struct qw_imatrix qw_imatrix;

/* Reads a file of either format (GGUF when it starts with the GGUF magic). The handle owns all
 * it returns; it is immutable once returned, so any thread may read it. */
qw_status qw_imatrix_open(const char *path, qw_imatrix **out, qw_error *err);
/* Same over a caller's buffer (copied from; the buffer may go away afterwards). */
qw_status qw_imatrix_open_memory(const void *data, size_t size, const char *label,
                                 qw_imatrix **out, qw_error *err);
void qw_imatrix_free(qw_imatrix *m);

/* Entries sorted by name; a name appears once (in a legacy file the last entry of a name wins,
 * as in llama-quantize). */
size_t qw_imatrix_count(const qw_imatrix *m);
const qw_imatrix_entry *qw_imatrix_at(const qw_imatrix *m, size_t index);
const qw_imatrix_entry *qw_imatrix_find(const qw_imatrix *m, const char *name);

bool qw_imatrix_is_gguf(const qw_imatrix *m);
/* The first calibration dataset's name, or NULL when the file names none. */
const char *qw_imatrix_dataset(const qw_imatrix *m);
/* Chunks of calibration text the matrix was computed on; 0 when the file does not say. */
int64_t qw_imatrix_chunks(const qw_imatrix *m);

#endif /* QW_IMATRIX_H */
