/* The type table: one row per tensor element type. Ids and block sizes are ggml's (checked in
 * tests against the gguf package and against llama.cpp's own library). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "simd.h"

#define ROW(e, nm, id, elems, bytes, flt, deq, q)                                                  \
    [QW_QTYPE_##e] = {.type = QW_QTYPE_##e,                                                        \
                      .name = nm,                                                                  \
                      .gguf_id = id,                                                               \
                      .block_elems = elems,                                                        \
                      .block_bytes = bytes,                                                        \
                      .is_float = flt,                                                             \
                      .dequantize = deq,                                                           \
                      .quantize = q}

/* A NULL kernel is one this build does not have: no encoder yet for the imatrix-only iq2/iq1
 * types and the types no llama.cpp format produces (tq*, mxfp4, nvfp4, q1_0, q2_0), none for
 * the intermediates q8_1 and q8_K, no decoder for the integer types (not model weights). */
static const qw_qtype_info qtype_table[QW_QTYPE_COUNT] = {
    ROW(F32, "f32", 0, 1, 4, true, qw_dequantize_row_f32, qw_quantize_row_f32),
    ROW(F16, "f16", 1, 1, 2, true, qw_dequantize_row_f16, qw_quantize_row_f16),
    ROW(BF16, "bf16", 30, 1, 2, true, qw_dequantize_row_bf16, qw_quantize_row_bf16),
    ROW(F64, "f64", 28, 1, 8, true, qw_dequantize_row_f64, NULL),
    ROW(I8, "i8", 24, 1, 1, false, NULL, NULL),
    ROW(I16, "i16", 25, 1, 2, false, NULL, NULL),
    ROW(I32, "i32", 26, 1, 4, false, NULL, NULL),
    ROW(I64, "i64", 27, 1, 8, false, NULL, NULL),
    ROW(Q4_0, "q4_0", 2, 32, 18, false, qw_dequantize_row_q4_0, qw_quantize_row_q4_0),
    ROW(Q4_1, "q4_1", 3, 32, 20, false, qw_dequantize_row_q4_1, qw_quantize_row_q4_1),
    ROW(Q5_0, "q5_0", 6, 32, 22, false, qw_dequantize_row_q5_0, qw_quantize_row_q5_0),
    ROW(Q5_1, "q5_1", 7, 32, 24, false, qw_dequantize_row_q5_1, qw_quantize_row_q5_1),
    ROW(Q8_0, "q8_0", 8, 32, 34, false, qw_dequantize_row_q8_0, qw_quantize_row_q8_0),
    ROW(Q8_1, "q8_1", 9, 32, 36, false, qw_dequantize_row_q8_1, NULL),
    ROW(Q2_K, "q2_K", 10, 256, 84, false, qw_dequantize_row_q2_K, qw_quantize_row_q2_K),
    ROW(Q3_K, "q3_K", 11, 256, 110, false, qw_dequantize_row_q3_K, qw_quantize_row_q3_K),
    ROW(Q4_K, "q4_K", 12, 256, 144, false, qw_dequantize_row_q4_K, qw_quantize_row_q4_K),
    ROW(Q5_K, "q5_K", 13, 256, 176, false, qw_dequantize_row_q5_K, qw_quantize_row_q5_K),
    ROW(Q6_K, "q6_K", 14, 256, 210, false, qw_dequantize_row_q6_K, qw_quantize_row_q6_K),
    ROW(Q8_K, "q8_K", 15, 256, 292, false, qw_dequantize_row_q8_K, NULL),
    ROW(IQ2_XXS, "iq2_xxs", 16, 256, 66, false, qw_dequantize_row_iq2_xxs, NULL),
    ROW(IQ2_XS, "iq2_xs", 17, 256, 74, false, qw_dequantize_row_iq2_xs, NULL),
    ROW(IQ2_S, "iq2_s", 22, 256, 82, false, qw_dequantize_row_iq2_s, NULL),
    ROW(IQ3_XXS, "iq3_xxs", 18, 256, 98, false, qw_dequantize_row_iq3_xxs,
        qw_quantize_row_iq3_xxs),
    ROW(IQ3_S, "iq3_s", 21, 256, 110, false, qw_dequantize_row_iq3_s, qw_quantize_row_iq3_s),
    ROW(IQ1_S, "iq1_s", 19, 256, 50, false, qw_dequantize_row_iq1_s, NULL),
    ROW(IQ1_M, "iq1_m", 29, 256, 56, false, qw_dequantize_row_iq1_m, NULL),
    ROW(IQ4_NL, "iq4_nl", 20, 32, 18, false, qw_dequantize_row_iq4_nl, qw_quantize_row_iq4_nl),
    ROW(IQ4_XS, "iq4_xs", 23, 256, 136, false, qw_dequantize_row_iq4_xs, qw_quantize_row_iq4_xs),
    ROW(TQ1_0, "tq1_0", 34, 256, 54, false, qw_dequantize_row_tq1_0, NULL),
    ROW(TQ2_0, "tq2_0", 35, 256, 66, false, qw_dequantize_row_tq2_0, NULL),
    ROW(MXFP4, "mxfp4", 39, 32, 17, false, qw_dequantize_row_mxfp4, NULL),
    ROW(NVFP4, "nvfp4", 40, 64, 36, false, qw_dequantize_row_nvfp4, NULL),
    ROW(Q1_0, "q1_0", 41, 128, 18, false, qw_dequantize_row_q1_0, NULL),
    ROW(Q2_0, "q2_0", 42, 64, 18, false, qw_dequantize_row_q2_0, NULL),
};

const qw_qtype_info *qw_qtype_get_reference(qw_qtype type) {
    return (unsigned)type < QW_QTYPE_COUNT ? &qtype_table[type] : NULL;
}

/* ---- the active table: the reference rows with the SIMD overlay (simd.h) -------------------- */

const char *qw_qtype_build_table(qw_qtype_info table[QW_QTYPE_COUNT], const char *kernels) {
    memcpy(table, qtype_table, sizeof qtype_table);
    if (kernels && strcmp(kernels, "reference") == 0) return "reference";
    const char *isa = qw_simd_overlay(table);
    return isa ? isa : "reference";
}

/* Written once, under pthread_once, before any reader sees it; read-only afterwards. */
static qw_qtype_info active_table[QW_QTYPE_COUNT];
static const char *active_kernels;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void active_init(void) {
    active_kernels = qw_qtype_build_table(active_table, getenv("QWODEL_KERNELS"));
}

const qw_qtype_info *qw_qtype_get(qw_qtype type) {
    if ((unsigned)type >= QW_QTYPE_COUNT) return NULL;
    pthread_once(&active_once, active_init);
    return &active_table[type];
}

const char *qw_qtype_kernels(void) {
    pthread_once(&active_once, active_init);
    return active_kernels;
}

bool qw_qtype_from_gguf_id(uint32_t gguf_id, qw_qtype *out) {
    for (int i = 0; i < QW_QTYPE_COUNT; i++) {
        if (qtype_table[i].gguf_id == gguf_id) {
            *out = (qw_qtype)i;
            return true;
        }
    }
    return false;
}

bool qw_qtype_from_name(const char *name, qw_qtype *out) {
    for (int i = 0; i < QW_QTYPE_COUNT; i++) {
        if (qw_strcasecmp(qtype_table[i].name, name) == 0) {
            *out = (qw_qtype)i;
            return true;
        }
    }
    return false;
}

const char *qw_qtype_name(qw_qtype type) {
    const qw_qtype_info *info = qw_qtype_get(type);
    return info ? info->name : "?";
}

uint64_t qw_qtype_row_bytes(qw_qtype type, int64_t n) {
    const qw_qtype_info *info = qw_qtype_get(type);
    if (!info || n < 0 || n % info->block_elems != 0) return 0;
    return (uint64_t)(n / info->block_elems) * info->block_bytes;
}
