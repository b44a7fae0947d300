/*
 * model.h — a model source: a HuggingFace model directory (config, tokenizer, single or sharded
 * safetensors) or a GGUF file, opened into one catalog of tensors over memory-mapped files.
 * Nothing is loaded whole; tensors are read row range by row range, converted to f32.
 */
#ifndef QW_MODEL_H
#define QW_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch.h"
#include "core.h"
#include "gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "vocab.h"

typedef enum qw_source_kind {
    QW_SOURCE_HF_DIR = 0,
    QW_SOURCE_GGUF = 1,
} qw_source_kind;

typedef struct qw_model_tensor {
    const char *name;       /* as named in the source (HF or GGUF name); borrowed */
    qw_qtype type;          /* storage type */
    bool readable;          /* type can be converted to f32 by this build */
    bool mapped;            /* data lies in a read-only file mapping (may be released) */
    const char *dtype_name; /* the source's own dtype string ("BF16", "q4_K") */
    int n_dims;
    int64_t ne[4];          /* GGUF order: ne[0] is the row length */
    int64_t n_rows;         /* elements / ne[0] */
    const uint8_t *data;
    uint64_t bytes;
    const char *file;       /* path of the file holding it */
} qw_model_tensor;

typedef struct qw_model {
    qw_source_kind kind;
    char *path;             /* as given */
    char *name;             /* for output names: directory name or GGUF stem */
    const char *input_format; /* "safetensors" or "gguf" (for get_model_info) */
    const qw_arch *arch;    /* NULL for a GGUF of an architecture qwodel has no row for */
    char *arch_name;        /* GGUF architecture name */
    qw_hparams hparams;
    json_t *config;         /* HF: config.json */
    bool multimodal;        /* HF: the config nests the text model's in another model's (Gemma
                             * 3's multimodal checkpoint), its tensors under other names */
    json_t *generation_config; /* HF: generation_config.json, or NULL */
    qw_vocab *vocab;        /* HF: the tokenizer as GGUF stores it */
    qw_gguf *gguf;          /* GGUF: the file */
    qw_safetensors **shards;
    size_t n_shards;
    qw_model_tensor *tensors;
    size_t n_tensors;
    uint64_t n_params;      /* elements over all tensors */
} qw_model;

/* Opens `path`: a directory with config.json, or a .gguf file. Everything that can be checked
 * without reading tensor data is checked here. */
qw_status qw_model_open(const char *path, qw_reporter *reporter, qw_model **out, qw_error *err);
/* As qw_model_open, and also a HuggingFace Hub model ID ("org/name[@revision]") that is not an
 * existing local path: it is downloaded into the HF cache first (hub.h, qw_hub_snapshot) with
 * `hub_token` (NULL: the environment's), and named after the ID's last part. */
qw_status qw_model_open_any(const char *path, const char *hub_token, qw_reporter *reporter,
                            qw_model **out, qw_error *err);
void qw_model_close(qw_model *model);

const qw_model_tensor *qw_model_find(const qw_model *model, const char *name);

/* Converts rows [row_begin, row_begin + n_rows) of t (rows of ne[0] elements) to f32 in dst. */
qw_status qw_model_read_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows,
                             float *dst, qw_error *err);

/* Drops rows [row_begin, row_begin + n_rows) of t from the resident set (see qw_mapped_release);
 * they can still be read later. No effect for tensors not backed by a file mapping. */
void qw_model_release_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows);

/* ---- the model as HuggingFace names it (hf_view.c) -------------------------------------------
 * Backends that write HF-shaped output (AWQ, Core ML) see every source through this view: an HF
 * directory as it is, a GGUF file with HF tensor names, Q/K rows back in HF order, llama.cpp-only
 * tensors (rope_freqs.weight) dropped, and a config.json built from its metadata. */

typedef struct qw_hf_tensor {
    char name[128];                /* HF name ("model.layers.0.self_attn.q_proj.weight") */
    const qw_model_tensor *source; /* the catalog entry holding the values; borrowed */
    qw_transform unpermute;        /* NONE, or the Q/K permutation whose inverse reading applies */
    int64_t head_rows;             /* rows (for a vector: elements) per head when unpermuting */
    float offset;                  /* subtracted from every value read (Gemma's norms: 1) */
    int n_dims;
    int64_t ne[4];                 /* GGUF order: ne[0] is the row length; HF shape reversed */
    int64_t n_rows;
    bool raw;                      /* stored as a float type (F32/F16/BF16/F64) with no offset:
                                    * rows can be copied unchanged with qw_hf_tensor_read_raw */
    qw_qtype raw_type;             /* that type, when raw */
} qw_hf_tensor;

typedef struct qw_hf_view qw_hf_view;

/* Builds the view of an open model; the model must outlive it. A GGUF whose architecture has no
 * row, a tensor name no rule gives back (stacked MoE experts come back one
 * HF tensor per expert), heads that do not
 * divide the Q/K rows, missing head counts or rope scaling HF cannot express are errors naming
 * the file and key or tensor. */
qw_status qw_model_hf_view(const qw_model *m, qw_hf_view **out, qw_error *err);
void qw_hf_view_free(qw_hf_view *v);

size_t qw_hf_view_count(const qw_hf_view *v);
const qw_hf_tensor *qw_hf_view_at(const qw_hf_view *v, size_t index);
const qw_hf_tensor *qw_hf_view_find(const qw_hf_view *v, const char *hf_name);
/* How a checkpoint names a sparse mixture-of-experts layer's MLP, under "model.layers.<L>.":
 * the router "<prefix>.gate", expert e's linears "<prefix>.experts.<e>.<gate|up|down>" and, in
 * Qwen2-MoE, one shared expert "<prefix>.shared_expert.<gate|up|down>" scaled by
 * sigmoid("<prefix>.shared_expert_gate"). Mixtral's w1 / w3 / w2 are gate / up / down. */
typedef struct qw_moe_layout {
    const char *prefix;
    const char *linear[3]; /* an expert's gate, up, down */
} qw_moe_layout;

/* The layout of layer `layer`'s sparse MLP, recognised by its router tensor; NULL for a dense
 * layer (a MoE model's mlp_only_layers / decoder_sparse_step make some). */
const qw_moe_layout *qw_hf_view_moe_layout(const qw_hf_view *v, int64_t layer);

/* config.json: the source's own for an HF directory, else built from GGUF metadata (borrowed).
 * For a GGUF architecture qwodel cannot write a config for, the tensors are still readable and
 * this returns the error (QW_ERR_UNSUPPORTED_ARCH naming the architecture). */
qw_status qw_hf_view_config(const qw_hf_view *v, const json_t **out, qw_error *err);

/* Rows [row_begin, row_begin + n_rows) in HF order as f32 (any type with a decoder). Memory use
 * is the destination plus, for a permuted vector, one copy of it. Safe to call from several
 * threads at once (reads only). */
qw_status qw_hf_tensor_read_f32(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                                float *dst, qw_error *err);
/* The same rows as the stored bytes (t->raw only): F16/BF16 come back bit for bit. dst holds
 * n_rows * ne[0] elements of raw_type. */
qw_status qw_hf_tensor_read_raw(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                                void *dst, qw_error *err);

/* The tokenizer as HF files: for an HF directory its tokenizer.json and tokenizer_config.json
 * (each NULL when absent); for a GGUF both built from tokenizer.ggml.* (byte-level BPE with a
 * known pre-tokenizer, or SentencePiece with merges rebuilt from the scores). A GGUF without a
 * tokenizer, or with a pipeline qwodel cannot spell out, is QW_ERR_UNSUPPORTED_INPUT naming the
 * key. The caller owns both (json_decref). */
qw_status qw_model_hf_tokenizer(const qw_model *m, json_t **tokenizer_json,
                                json_t **tokenizer_config, qw_error *err);

#endif /* QW_MODEL_H */
