/*
 * ftype.h — GGUF output formats (llama.cpp's "ftypes": Q4_K_M, Q8_0, ...) and the per-tensor rules
 * that decide each tensor's type within a format, as llama.cpp's quantizer decides them.
 */
#ifndef QW_FTYPE_H
#define QW_FTYPE_H

#include <stdbool.h>
#include <stdint.h>

#include "quant.h"

typedef struct qw_ftype_info {
    const char *name;        /* "Q8_0", as users type it (case-insensitive) */
    uint32_t llama_ftype;    /* general.file_type value */
    qw_qtype default_type;   /* the type most tensors get */
    const char *description; /* one line for list-formats */
} qw_ftype_info;

size_t qw_ftype_count(void);
const qw_ftype_info *qw_ftype_at(size_t index);
/* Case-insensitive, accepting llama-quantize's aliases; NULL if unknown. */
const qw_ftype_info *qw_ftype_find(const char *name);

/* The model-wide facts the rules depend on. */
typedef struct qw_type_rules {
    const qw_ftype_info *ftype;
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t n_expert;
    bool tied_embeddings;   /* no output.weight: token_embd gets output's rule */
    bool quantize_output;   /* false: --leave-output-tensor */
    qw_qtype output_type;   /* QW_QTYPE_COUNT: by rule */
    qw_qtype embedding_type;/* QW_QTYPE_COUNT: by rule */
    /* running counters, in the order tensors are visited (layer, then name) */
    int n_attention_wv;
    int i_attention_wv;
    int i_ffn_down;
} qw_type_rules;

/* Whether llama.cpp would quantize a tensor of this (GGUF) name and rank at all. */
bool qw_tensor_allows_quantization(const char *name, int n_dims, bool quantize_output);

/* True for names whose tensors llama.cpp's converter keeps in F32 (norms, biases, 1-D). */
bool qw_tensor_keeps_f32(const char *name, int n_dims);

/* Counts what the rules need before the first call of qw_type_rules_choose (attn_v tensors). */
void qw_type_rules_count(qw_type_rules *rules, const char *name);

/* Chooses the type of a quantizable tensor (call in visiting order). `fallback_note` receives a
 * short reason when the tensor's row length forced another type, else "". */
qw_qtype qw_type_rules_choose(qw_type_rules *rules, const char *name, int64_t ne0,
                              char *fallback_note, size_t note_bytes);

#endif /* QW_FTYPE_H */
