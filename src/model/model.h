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
void qw_model_close(qw_model *model);

const qw_model_tensor *qw_model_find(const qw_model *model, const char *name);

/* Converts rows [row_begin, row_begin + n_rows) of t (rows of ne[0] elements) to f32 in dst. */
qw_status qw_model_read_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows,
                             float *dst, qw_error *err);

/* Drops rows [row_begin, row_begin + n_rows) of t from the resident set (see qw_mapped_release);
 * they can still be read later. No effect for tensors not backed by a file mapping. */
void qw_model_release_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows);

#endif /* QW_MODEL_H */
