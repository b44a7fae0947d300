/*
 * quant.h — the table of tensor element types (ggml's types, as GGUF files name them) and their
 * row codecs.
 *
 * One row per type: its name, its id in GGUF files (a column, never the enum's order), its block
 * geometry, and the kernels that turn a row of floats into blocks and back. No other code switches
 * on the type. Rows are independent: a row's bytes depend only on that row's values (and its
 * importance weights), so tensors can be split across threads by rows without changing output.
 */
#ifndef QW_QUANT_H
#define QW_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core.h"

typedef enum qw_qtype {
    QW_QTYPE_F32,
    QW_QTYPE_F16,
    QW_QTYPE_BF16,
    QW_QTYPE_F64,
    QW_QTYPE_I8,
    QW_QTYPE_I16,
    QW_QTYPE_I32,
    QW_QTYPE_I64,
    QW_QTYPE_Q4_0,
    QW_QTYPE_Q4_1,
    QW_QTYPE_Q5_0,
    QW_QTYPE_Q5_1,
    QW_QTYPE_Q8_0,
    QW_QTYPE_Q8_1,
    QW_QTYPE_Q2_K,
    QW_QTYPE_Q3_K,
    QW_QTYPE_Q4_K,
    QW_QTYPE_Q5_K,
    QW_QTYPE_Q6_K,
    QW_QTYPE_Q8_K,
    QW_QTYPE_IQ2_XXS,
    QW_QTYPE_IQ2_XS,
    QW_QTYPE_IQ2_S,
    QW_QTYPE_IQ3_XXS,
    QW_QTYPE_IQ3_S,
    QW_QTYPE_IQ1_S,
    QW_QTYPE_IQ1_M,
    QW_QTYPE_IQ4_NL,
    QW_QTYPE_IQ4_XS,
    QW_QTYPE_TQ1_0,
    QW_QTYPE_TQ2_0,
    QW_QTYPE_MXFP4,
    QW_QTYPE_NVFP4,
    QW_QTYPE_Q1_0,
    QW_QTYPE_Q2_0,
    QW_QTYPE_COUNT
} qw_qtype;

/* Decodes n elements (a multiple of block_elems) of one row into floats. */
typedef void (*qw_dequantize_fn)(const void *src, float *dst, int64_t n);

/* Encodes n floats (a multiple of block_elems) of one row. `importance` is NULL or n weights. */
typedef void (*qw_quantize_fn)(const float *src, void *dst, int64_t n, const float *importance);

typedef struct qw_qtype_info {
    qw_qtype type;
    const char *name;        /* lower case, as llama.cpp prints it: "q4_K", "f16" */
    uint32_t gguf_id;        /* ggml_type value in GGUF files */
    uint32_t block_elems;    /* elements per block */
    uint32_t block_bytes;    /* bytes per block */
    bool is_float;           /* F32/F16/BF16/F64: stored, not quantized */
    qw_dequantize_fn dequantize; /* NULL: cannot be decoded by this build */
    qw_quantize_fn quantize;     /* NULL: cannot be produced by this build */
} qw_qtype_info;

/* Row of the table; `type` must be < QW_QTYPE_COUNT. */
const qw_qtype_info *qw_qtype_get(qw_qtype type);

/* The reference (scalar) row of the table, before any SIMD kernel replaced a kernel. */
const qw_qtype_info *qw_qtype_get_reference(qw_qtype type);

/* Looks up a type by its GGUF id; false if the id is unknown or a removed type. */
bool qw_qtype_from_gguf_id(uint32_t gguf_id, qw_qtype *out);

/* Looks up a type by name, case-insensitively ("Q8_0", "q4_k", "bf16"); false if unknown. */
bool qw_qtype_from_name(const char *name, qw_qtype *out);

const char *qw_qtype_name(qw_qtype type);

/* Bytes for a row of n elements; 0 if n is not a multiple of the block size. */
uint64_t qw_qtype_row_bytes(qw_qtype type, int64_t n);

/* ---- ggml's rounding helpers, shared by the kernels ---------------------------------------- */

/* Round half to even, as ggml's nearest_int (valid for |f| < 2^22). */
static inline int qw_nearest_int(float f) {
    float val = f + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#endif /* QW_QUANT_H */
