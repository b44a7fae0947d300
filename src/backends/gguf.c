/*
 * The gguf backend: a HF checkpoint or a GGUF file in, one GGUF file out for llama.cpp.
 *
 * Planning decides every output tensor (name, type, transform) and builds the complete GGUF
 * header, so the plan knows the output size before any data is touched. Execution streams each
 * tensor: source rows are read from the mapped file, converted to f32, permuted where the
 * architecture needs it, quantized by the thread pool into a batch buffer, and appended to the
 * output. Peak memory is one batch plus one row of scratch per thread, whatever the model size.
 *
 * Types come from the format's rules (quant/ftype_rules.c) and llama-quantize's options, all
 * validated while planning; an importance matrix is read while planning too, and each quantized
 * tensor's entry (one slice per expert of a stacked tensor) goes to the kernels with its rows.
 * A plan may name types this build has no encoder for (a dry run shows them); execution refuses
 * such a plan before it writes anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "backend.h"
#include "file.h"
#include "ftype.h"
#include "simd.h"
#include "imatrix.h"
#include "half.h"

#define BATCH_OUTPUT_BYTES (16u << 20) /* output bytes quantized between two writes */

/* ---- formats and options -------------------------------------------------------------------- */

static size_t format_count(void) { return qw_ftype_count(); }
static const char *format_name(size_t i) { return qw_ftype_at(i)->name; }
static const char *format_description(size_t i) { return qw_ftype_at(i)->description; }

static int format_find(const char *name) {
    const qw_ftype_info *ft = qw_ftype_find(name);
    for (size_t i = 0; ft && i < qw_ftype_count(); i++) {
        if (qw_ftype_at(i) == ft) return (int)i;
    }
    return -1;
}

/* llama-quantize's options, under its names. */
static const qw_option_spec gguf_options[] = {
    {"threads", QW_OPTION_INT, QW_SCOPE_BOTH,
     "Worker threads for quantization (default: all CPUs this process may use)."},
    {"imatrix", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "Importance matrix from llama-imatrix (legacy .dat or GGUF); required by the IQ1/IQ2/"
     "IQ3_XXS/IQ3_XS/Q2_K_S formats."},
    {"leave_output_tensor", QW_OPTION_BOOL, QW_SCOPE_BOTH,
     "Leave output.weight unquantized (true/false)."},
    {"output_tensor_type", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "Type for output.weight, a ggml type name such as q8_0 or f16."},
    {"token_embedding_type", QW_OPTION_STRING, QW_SCOPE_BOTH,
     "Type for token_embd.weight, a ggml type name such as q8_0 or f16."},
    {"pure", QW_OPTION_BOOL, QW_SCOPE_BOTH,
     "Quantize every tensor to the format's default type: no k-quant mix (true/false)."},
    {"tensor_type", QW_OPTION_LIST, QW_SCOPE_BOTH,
     "Per-tensor types: REGEX=TYPE[,REGEX=TYPE...]; the first pattern found in a tensor's name "
     "(lower-cased, PCRE2) gives its type, e.g. attn_v=q8_0,ffn_down=q6_K."},
};

/* ---- plan state ----------------------------------------------------------------------------- */

typedef enum entry_source {
    SOURCE_TENSOR,    /* rows of a model tensor, possibly permuted, converted */
    SOURCE_COPY,      /* bytes of a model tensor, unchanged */
    SOURCE_ROPE_FREQS, /* generated llama3 rope factors */
    SOURCE_VALUES      /* f32 values from the configuration (Phi-3 rope_factors_long/short) */
} entry_source;

typedef struct plan_entry {
    entry_source source;
    const qw_model_tensor *tensor;
    qw_qtype type;
    qw_transform transform;
    int64_t row_len;   /* elements per processed row */
    int64_t n_rows;
    int64_t head_rows; /* rows per head, for permutes */
    const float *values; /* SOURCE_VALUES: row_len floats, owned by the model's hparams */
    /* importance weights: row_len per matrix, a matrix being rows_per_matrix consecutive rows
     * (one expert of a stacked 3-D tensor); NULL without an importance matrix entry */
    const float *importance;
    int64_t rows_per_matrix;
    /* a stacked tensor (experts): n_parts source tensors of part_rows rows each, part k giving
     * rows [k * part_rows, (k + 1) * part_rows); tensor is parts[0]. NULL otherwise. */
    const qw_model_tensor *const *parts;
    int64_t n_parts;
    int64_t part_rows;
} plan_entry;

typedef struct gguf_plan {
    qw_gguf_writer *writer;
    plan_entry *entries; /* parallel to qw_plan.tensors */
    const qw_hparams *hparams;
    qw_imatrix *imatrix; /* owned; entries point into it */
    const qw_model_tensor **parts; /* owned; the parts of every stacked entry */
    size_t n_parts;
} gguf_plan;

static void gguf_plan_free(void *p) {
    gguf_plan *gp = p;
    if (!gp) return;
    qw_gguf_writer_free(gp->writer);
    qw_imatrix_free(gp->imatrix);
    qw_free(gp->entries);
    qw_free(gp->parts);
    qw_free(gp);
}

/* ---- options, validated at plan time --------------------------------------------------------- */

typedef struct type_override {
    pcre2_code *re;
    qw_qtype type;
} type_override;

typedef struct gguf_settings {
    qw_type_options types;
    type_override *overrides; /* tensor_type, in the order given */
    size_t n_overrides;
    pcre2_match_data *match;
    qw_imatrix *imatrix; /* moved into the plan */
    const char *imatrix_path;
} gguf_settings;

static void settings_free(gguf_settings *s) {
    for (size_t i = 0; i < s->n_overrides; i++) pcre2_code_free(s->overrides[i].re);
    qw_free(s->overrides);
    pcre2_match_data_free(s->match);
    qw_imatrix_free(s->imatrix);
    memset(s, 0, sizeof *s);
}

/* A ggml type name given in an option: known, and producible by this build. */
static qw_status parse_type(const char *option, const char *value, size_t len, qw_qtype *out,
                            qw_error *err) {
    char name[32];
    if (len == 0 || len >= sizeof name) {
        return qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                          "option \"%s\": \"%.*s\" is not a ggml type name (e.g. q8_0, q6_K, "
                          "f16)", option, (int)len, value);
    }
    memcpy(name, value, len);
    name[len] = '\0';
    if (!qw_qtype_from_name(name, out)) {
        qw_buf known = {0};
        for (int t = 0; t < QW_QTYPE_COUNT; t++) {
            if (qw_qtype_get((qw_qtype)t)->quantize) {
                qw_buf_printf(&known, "%s%s", known.len ? ", " : "", qw_qtype_name((qw_qtype)t));
            }
        }
        qw_status st = qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                                  "option \"%s\": unknown type \"%s\" (this build can write: "
                                  "%s)", option, name, known.data ? known.data : "");
        qw_buf_free(&known);
        return st;
    }
    if (!qw_qtype_get(*out)->quantize) {
        return qw_fail_at(err, QW_ERR_FORMAT_NOT_SUPPORTED, option, -1,
                          "option \"%s\": this build cannot produce type %s yet", option,
                          qw_qtype_name(*out));
    }
    return QW_OK;
}

/* tensor_type: "REGEX=TYPE[,REGEX=TYPE...]". A pattern runs to its first '=' and a type to the
 * next ',', so patterns may hold commas ("blk\\.[0-9]{1,2}\\.attn_v=q8_0"). As llama-quantize
 * does, patterns are lower-cased before they are compiled. */
static qw_status parse_overrides(gguf_settings *s, const char *value, qw_error *err) {
    static const char *const option = "tensor_type";
    for (const char *p = value; *p;) {
        const char *eq = strchr(p, '=');
        if (!eq) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                              "option \"%s\": \"%s\" is not REGEX=TYPE", option, p);
        }
        if (eq == p) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                              "option \"%s\": missing pattern before '=' in \"%s\"", option, p);
        }
        const char *type = eq + 1, *type_end = strchr(type, ',');
        if (!type_end) type_end = type + strlen(type);
        qw_qtype t;
        QW_TRY(parse_type(option, type, (size_t)(type_end - type), &t, err));
        char *pattern = qw_strndup(p, (size_t)(eq - p));
        if (!pattern) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        qw_str_lower(pattern);
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &at,
                                       NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            qw_status st = qw_fail_at(err, QW_ERR_BAD_OPTION, option, -1,
                                      "option \"%s\": pattern \"%s\" is not a valid regular "
                                      "expression: %s at offset %zu", option, pattern,
                                      (const char *)msg, (size_t)at);
            qw_free(pattern);
            return st;
        }
        qw_free(pattern);
        type_override *o = qw_realloc_array(s->overrides, s->n_overrides + 1, sizeof *o);
        if (!o) {
            pcre2_code_free(re);
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
        s->overrides = o;
        s->overrides[s->n_overrides++] = (type_override){re, t};
        if (!s->match) {
            s->match = pcre2_match_data_create(1, NULL);
            if (!s->match) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
        p = *type_end ? type_end + 1 : type_end;
    }
    return QW_OK;
}

/* The type of the first pattern found in `name` (std::regex_search semantics), or
 * QW_QTYPE_COUNT. */
static qw_status match_override(const gguf_settings *s, const char *name, qw_qtype *out,
                                qw_error *err) {
    *out = QW_QTYPE_COUNT;
    for (size_t i = 0; i < s->n_overrides; i++) {
        int rc = pcre2_match(s->overrides[i].re, (PCRE2_SPTR)name, strlen(name), 0, 0, s->match,
                             NULL);
        if (rc >= 0) {
            *out = s->overrides[i].type;
            return QW_OK;
        }
        if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return qw_fail_at(err, QW_ERR_BAD_OPTION, "tensor_type", -1,
                              "option \"tensor_type\": matching pattern %zu against \"%s\" "
                              "failed: %s", i + 1, name, (const char *)msg);
        }
    }
    return QW_OK;
}

static qw_status parse_settings(const qw_run_context *ctx, gguf_settings *s, qw_error *err) {
    const qw_options *o = ctx->options;
    memset(s, 0, sizeof *s);
    s->types.quantize_output = !qw_options_get_bool(o, "leave_output_tensor", false);
    s->types.pure = qw_options_get_bool(o, "pure", false);
    s->types.output_type = QW_QTYPE_COUNT;
    s->types.embedding_type = QW_QTYPE_COUNT;
    const char *v;
    if ((v = qw_options_get(o, "output_tensor_type")) != NULL) {
        QW_TRY(parse_type("output_tensor_type", v, strlen(v), &s->types.output_type, err));
    }
    if ((v = qw_options_get(o, "token_embedding_type")) != NULL) {
        QW_TRY(parse_type("token_embedding_type", v, strlen(v), &s->types.embedding_type, err));
    }
    if ((v = qw_options_get(o, "tensor_type")) != NULL) QW_TRY(parse_overrides(s, v, err));
    if ((v = qw_options_get(o, "imatrix")) != NULL) {
        if (!*v) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, "imatrix", -1,
                              "option \"imatrix\" needs the path of an importance matrix file");
        }
        qw_status st = qw_imatrix_open(v, &s->imatrix, err);
        if (st != QW_OK) {
            if (err) qw_error_prefix(err, "option \"imatrix\": ");
            return st;
        }
        s->imatrix_path = v;
        s->types.has_imatrix = true;
        qw_log(ctx->reporter, QW_LOG_INFO,
               "importance matrix %s: %zu entries, %lld chunks, dataset %s", v,
               qw_imatrix_count(s->imatrix), (long long)qw_imatrix_chunks(s->imatrix),
               qw_imatrix_dataset(s->imatrix) ? qw_imatrix_dataset(s->imatrix) : "(none)");
    }
    return QW_OK;
}

/* An output tensor before ordering. */
typedef struct candidate {
    char name[64];
    plan_entry entry;
    int n_dims;
    int64_t ne[4];
    size_t parts_at; /* a stacked tensor's first slot in gguf_plan.parts, while collecting */
} candidate;

/* llama.cpp's loader order: tensors outside blocks first, then by block number, then by name. */
static int candidate_layer(const char *name) {
    int layer = -1;
    if (strncmp(name, "blk.", 4) == 0) layer = atoi(name + 4);
    return layer;
}

static int cmp_candidates(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    int lx = candidate_layer(x->name), ly = candidate_layer(y->name);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* ---- metadata ------------------------------------------------------------------------------- */

/* "135M", "8.0B": two significant digits at least, as llama.cpp's converter labels sizes. */
static void size_label(uint64_t n, char *out, size_t bytes) {
    double scaled;
    const char *suffix;
    if (n > 1000000000000ull) scaled = (double)n * 1e-12, suffix = "T";
    else if (n > 1000000000ull) scaled = (double)n * 1e-9, suffix = "B";
    else if (n > 1000000ull) scaled = (double)n * 1e-6, suffix = "M";
    else scaled = (double)n * 1e-3, suffix = "K";
    char whole[32];
    snprintf(whole, sizeof whole, "%.0f", scaled);
    int digits = (int)strlen(whole);
    int decimals = digits >= 2 ? 0 : 2 - digits;
    snprintf(out, bytes, "%.*f%s", decimals, scaled, suffix);
}

static qw_status write_hf_metadata(const qw_model *m, const qw_ftype_info *ft, qw_gguf_writer *w,
                                   qw_error *err) {
    char label[32];
    size_label(m->n_params, label, sizeof label);
    QW_TRY(qw_gguf_writer_set_str(w, "general.architecture", m->arch->name, err));
    QW_TRY(qw_gguf_writer_set_str(w, "general.type", "model", err));
    QW_TRY(qw_gguf_writer_set_str(w, "general.name", m->name, err));
    QW_TRY(qw_gguf_writer_set_str(w, "general.size_label", label, err));
    QW_TRY(qw_arch_write_hparams(m->arch, &m->hparams, w, err));
    QW_TRY(qw_gguf_writer_set_u32(w, "general.file_type", ft->llama_ftype, err));
    QW_TRY(qw_vocab_write_gguf(m->vocab, w, err));
    QW_TRY(qw_gguf_writer_set_u32(w, "general.quantization_version", 2, err));
    return QW_OK;
}

static qw_status write_gguf_metadata(const qw_model *m, const qw_ftype_info *ft,
                                     qw_gguf_writer *w, qw_error *err) {
    for (size_t i = 0; i < qw_gguf_kv_count(m->gguf); i++) {
        const qw_gguf_kv *kv = qw_gguf_kv_at(m->gguf, i);
        if (qw_str_starts_with(kv->key, "split.")) continue;
        QW_TRY(qw_gguf_writer_set(w, kv->key, &kv->value, err));
    }
    QW_TRY(qw_gguf_writer_set_u32(w, "general.quantization_version", 2, err));
    QW_TRY(qw_gguf_writer_set_u32(w, "general.file_type", ft->llama_ftype, err));
    return QW_OK;
}

/* ---- planning ------------------------------------------------------------------------------- */

/* Files source tensor t as expert `expert` of the stacked tensor named c[*n].name: a new
 * candidate for the first of its experts seen, else the one already made (searched from the
 * end: checkpoints keep a layer's experts together, so it is among the last few). */
static qw_status add_expert(const qw_model *m, gguf_plan *gp, candidate *c, size_t *n,
                            const qw_model_tensor *t, int64_t expert, qw_error *err) {
    candidate *stack = NULL;
    for (size_t i = *n; i-- > 0;) {
        if (c[i].entry.n_parts > 0 && strcmp(c[i].name, c[*n].name) == 0) {
            stack = &c[i];
            break;
        }
    }
    if (!stack) {
        const size_t n_expert = (size_t)m->hparams.n_expert;
        const qw_model_tensor **p = qw_realloc_array(gp->parts, gp->n_parts + n_expert,
                                                     sizeof *p);
        if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        gp->parts = p;
        memset(p + gp->n_parts, 0, n_expert * sizeof *p);
        stack = &c[(*n)++];
        stack->entry.source = SOURCE_TENSOR;
        stack->entry.n_parts = (int64_t)n_expert;
        stack->parts_at = gp->n_parts;
        gp->n_parts += n_expert;
    }
    const qw_model_tensor **slot = &gp->parts[stack->parts_at + (size_t)expert];
    if (*slot) {
        return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                          "%s: tensors \"%s\" and \"%s\" are both expert %lld of \"%s\"",
                          t->file, (*slot)->name, t->name, (long long)expert, stack->name);
    }
    *slot = t;
    return QW_OK;
}

/* Checks every stacked tensor has all its experts, alike in shape and dtype, and gives it its
 * 3-D shape: llama.cpp's {cols, rows, n_expert}. */
static qw_status finish_stacks(const qw_model *m, gguf_plan *gp, candidate *c, size_t n,
                               qw_error *err) {
    for (size_t i = 0; i < n; i++) {
        plan_entry *e = &c[i].entry;
        if (e->n_parts == 0) continue;
        const qw_model_tensor **parts = gp->parts + c[i].parts_at;
        const qw_model_tensor *seen = NULL;
        int64_t n_seen = 0;
        for (int64_t k = 0; k < e->n_parts; k++) {
            if (parts[k]) n_seen++, seen = seen ? seen : parts[k];
        }
        for (int64_t k = 0; k < e->n_parts; k++) {
            if (!parts[k]) {
                return qw_fail_at(err, QW_ERR_CORRUPT, c[i].name, -1,
                                  "%s: expert %lld of \"%s\" is missing: the checkpoint has %lld "
                                  "of the %lld experts config.json names (e.g. \"%s\")", m->path,
                                  (long long)k, c[i].name, (long long)n_seen,
                                  (long long)e->n_parts, seen->name);
            }
            const qw_model_tensor *t = parts[k];
            if (t->n_dims != 2 || t->type != parts[0]->type || t->ne[0] != parts[0]->ne[0] ||
                t->ne[1] != parts[0]->ne[1]) {
                return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                                  "%s: expert tensor \"%s\" (%s, %d-D, %lld x %lld) does not "
                                  "match \"%s\" (%s, %lld x %lld): the experts of \"%s\" must "
                                  "be 2-D tensors of one shape and dtype", t->file, t->name,
                                  t->dtype_name, t->n_dims, (long long)t->ne[1],
                                  (long long)t->ne[0], parts[0]->name, parts[0]->dtype_name,
                                  (long long)parts[0]->ne[1], (long long)parts[0]->ne[0],
                                  c[i].name);
            }
        }
        e->parts = parts;
        e->tensor = parts[0];
        e->row_len = parts[0]->ne[0];
        e->part_rows = parts[0]->ne[1];
        e->n_rows = e->part_rows * e->n_parts;
        c[i].n_dims = 3;
        c[i].ne[0] = e->row_len;
        c[i].ne[1] = e->part_rows;
        c[i].ne[2] = e->n_parts;
        c[i].ne[3] = 1;
    }
    return QW_OK;
}

/* Phi-3's rope_factors_long/short: 1-D f32 tensors whose values come from config.json. */
static size_t add_rope_factors(const qw_model *m, candidate *c) {
    int64_t n_factors = 0;
    if (!qw_arch_has_rope_factors(m->arch, &m->hparams, &n_factors)) return 0;
    static const char *const names[2] = {"rope_factors_long.weight", "rope_factors_short.weight"};
    const float *values[2] = {m->hparams.rope_long_factor, m->hparams.rope_short_factor};
    for (size_t k = 0; k < 2; k++) {
        snprintf(c[k].name, sizeof c[k].name, "%s", names[k]);
        c[k].entry.source = SOURCE_VALUES;
        c[k].entry.values = values[k];
        c[k].entry.row_len = n_factors;
        c[k].entry.n_rows = 1;
        c[k].n_dims = 1;
        c[k].ne[0] = n_factors;
        c[k].ne[1] = c[k].ne[2] = c[k].ne[3] = 1;
    }
    return 2;
}

static qw_status collect_hf(const qw_model *m, gguf_plan *gp, candidate **out, size_t *n_out,
                            qw_error *err) {
    /* + rope_freqs and the two rope factor tensors */
    candidate *c = qw_calloc(m->n_tensors + 3, sizeof *c);
    if (!c) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    size_t n = 0;
    int64_t n_rope = 0;
    if (qw_arch_has_rope_freqs(m->arch, &m->hparams, &n_rope)) {
        snprintf(c[n].name, sizeof c[n].name, "rope_freqs.weight");
        c[n].entry.source = SOURCE_ROPE_FREQS;
        c[n].entry.row_len = n_rope;
        c[n].entry.n_rows = 1;
        c[n].n_dims = 1;
        c[n].ne[0] = n_rope;
        c[n].ne[1] = c[n].ne[2] = c[n].ne[3] = 1;
        n++;
    }
    n += add_rope_factors(m, c + n);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        qw_transform transform;
        bool drop;
        int64_t expert;
        qw_status st = qw_arch_map_tensor_part(m->arch, &m->hparams, t->name, c[n].name,
                                               sizeof c[n].name, &transform, &drop, &expert, err);
        if (st != QW_OK) {
            qw_free(c);
            return st;
        }
        if (drop) continue;
        if (!t->readable) {
            qw_free(c);
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                              "%s: tensor \"%s\" has dtype %s; only F32, F16 and BF16 weights "
                              "can be converted", t->file, t->name, t->dtype_name);
        }
        if (expert >= 0) { /* one slice of a stacked tensor: placed by finish_stacks */
            st = add_expert(m, gp, c, &n, t, expert, err);
            if (st != QW_OK) {
                qw_free(c);
                return st;
            }
            continue;
        }
        plan_entry *e = &c[n].entry;
        e->source = SOURCE_TENSOR;
        e->tensor = t;
        e->transform = transform;
        e->row_len = t->ne[0];
        e->n_rows = t->n_rows;
        c[n].n_dims = t->n_dims;
        memcpy(c[n].ne, t->ne, sizeof c[n].ne);
        if (qw_transform_permutes(transform)) {
            int64_t heads = transform == QW_TRANSFORM_PERMUTE_Q ? m->hparams.n_head
                                                                 : m->hparams.n_head_kv;
            if (t->n_dims == 1) { /* a bias: permute single elements */
                e->row_len = 1;
                e->n_rows = t->ne[0];
            }
            if (heads <= 0 || e->n_rows % heads != 0 || (e->n_rows / heads) % 2 != 0) {
                qw_free(c);
                return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                                  "%s: tensor \"%s\" has %lld rows, which cannot be split into "
                                  "%lld heads of an even size", t->file, t->name,
                                  (long long)e->n_rows, (long long)heads);
            }
            e->head_rows = e->n_rows / heads;
        }
        n++;
    }
    qw_status st = finish_stacks(m, gp, c, n, err);
    if (st != QW_OK) {
        qw_free(c);
        return st;
    }
    *out = c;
    *n_out = n;
    return QW_OK;
}

static qw_status collect_gguf(const qw_model *m, candidate **out, size_t *n_out, qw_error *err) {
    candidate *c = qw_calloc(m->n_tensors + 1, sizeof *c);
    if (!c) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        snprintf(c[i].name, sizeof c[i].name, "%s", t->name);
        c[i].entry.source = SOURCE_TENSOR;
        c[i].entry.tensor = t;
        c[i].entry.row_len = t->ne[0];
        c[i].entry.n_rows = t->n_rows;
        c[i].n_dims = t->n_dims;
        memcpy(c[i].ne, t->ne, sizeof c[i].ne);
    }
    *out = c;
    *n_out = m->n_tensors;
    return QW_OK;
}

/* The type an HF tensor gets when it is not quantized: what llama.cpp's converter writes. */
static qw_qtype hf_unquantized_type(const candidate *c, const qw_ftype_info *ft) {
    if (c->entry.source == SOURCE_ROPE_FREQS || c->entry.source == SOURCE_VALUES ||
        qw_tensor_keeps_f32(c->name, c->n_dims)) {
        return QW_QTYPE_F32;
    }
    return qw_qtype_get(ft->default_type)->is_float ? ft->default_type : QW_QTYPE_F16;
}

/* Dimensions as ggml_n_dims counts them (trailing sizes of 1 do not count), which is what
 * llama.cpp's quantizer looks at: a [1, n] matrix such as Qwen2-MoE's shared-expert gate is a
 * vector to it, and stays unquantized. */
static int effective_dims(const candidate *c) {
    int d = 4;
    while (d > 1 && c->ne[d - 1] == 1) d--;
    return d;
}

/* The importance weights of one tensor that llama.cpp's quantizer converts, checked as llama.cpp
 * checks them: an entry must hold one weight per column of each matrix (expert). */
static qw_status attach_importance(const qw_run_context *ctx, const qw_imatrix *im,
                                   const candidate *c, const qw_type_choice *ch, plan_entry *e,
                                   const char *format, size_t *n_missing, qw_error *err) {
    const qw_imatrix_entry *entry = qw_imatrix_find(im, c->name);
    if (!entry) {
        /* llama-imatrix never sees token_embd (a lookup, not a product): no entry is normal */
        if (qw_tensor_category_of(c->name) != QW_CAT_TOKEN_EMBD) (*n_missing)++;
        qw_log(ctx->reporter, QW_LOG_INFO, "%s: no importance matrix entry", c->name);
        if (ch->requires_imatrix) {
            return qw_fail_at(err, QW_ERR_INVALID_ARG, c->name, -1,
                              "the importance matrix has no entry for tensor \"%s\", which %s "
                              "makes %s: llama.cpp refuses to quantize it without one", c->name,
                              format, qw_qtype_name(ch->type));
        }
        return QW_OK;
    }
    const int64_t n_matrices = c->n_dims > 2 ? c->ne[2] : 1;
    if ((uint64_t)entry->n_values != (uint64_t)(c->ne[0] * n_matrices)) {
        if (qw_tensor_category_of(c->name) == QW_CAT_TOKEN_EMBD) {
            qw_log(ctx->reporter, QW_LOG_INFO,
                   "%s: importance matrix entry of %zu values does not fit (%lld needed); not "
                   "used", c->name, entry->n_values, (long long)(c->ne[0] * n_matrices));
            return QW_OK;
        }
        return qw_fail_at(err, QW_ERR_INVALID_ARG, c->name, -1,
                          "the importance matrix entry for tensor \"%s\" has %zu values, but the "
                          "tensor needs %lld (%lld columns x %lld matrices): is the matrix from "
                          "another model?", c->name, entry->n_values,
                          (long long)(c->ne[0] * n_matrices), (long long)c->ne[0],
                          (long long)n_matrices);
    }
    e->importance = entry->values;
    e->rows_per_matrix = c->ne[1];
    return QW_OK;
}

static qw_status choose_types(const qw_run_context *ctx, const qw_ftype_info *ft,
                              const gguf_settings *settings, candidate *c, size_t n,
                              qw_error *err) {
    const qw_model *m = ctx->model;
    const qw_model_facts facts = {m->arch_name, m->hparams.n_layer, m->hparams.n_head,
                                  m->hparams.n_head_kv, m->hparams.n_expert};
    qw_type_rules rules;
    qw_type_rules_init(&rules, ft, &facts, &settings->types);
    for (size_t i = 0; i < n; i++) qw_type_rules_count(&rules, c[i].name);
    bool warned_requant = false;
    size_t n_quantized = 0, n_missing = 0;
    for (size_t i = 0; i < n; i++) {
        plan_entry *e = &c[i].entry;
        const qw_qtype source_type = e->tensor ? e->tensor->type : QW_QTYPE_F32;
        /* what llama.cpp's quantizer would read: the source tensor, or for a HF checkpoint the
         * tensor as llama.cpp's converter writes it */
        const qw_qtype input_type =
            m->kind == QW_SOURCE_HF_DIR ? hf_unquantized_type(&c[i], ft) : source_type;
        qw_tensor_desc desc = {c[i].name, effective_dims(&c[i]), {0}, input_type};
        memcpy(desc.ne, c[i].ne, sizeof desc.ne);
        qw_qtype manual;
        QW_TRY(match_override(settings, c[i].name, &manual, err));
        qw_type_choice ch;
        QW_TRY(qw_type_rules_choose(&rules, &desc, manual, &ch, err));
        if (ch.note[0]) qw_log(ctx->reporter, QW_LOG_INFO, "%s: %s", c[i].name, ch.note);
        if (ch.source == QW_TYPE_OVERRIDE) {
            qw_log(ctx->reporter, QW_LOG_INFO, "%s: tensor_type gives %s", c[i].name,
                   qw_qtype_name(manual));
        }
        if (ch.requires_imatrix && !settings->imatrix) {
            return qw_fail_at(err, QW_ERR_INVALID_ARG, c[i].name, -1,
                              "format %s needs an importance matrix: tensor \"%s\" gets type %s, "
                              "which llama.cpp produces only with one (give the imatrix option "
                              "a file from llama-imatrix)", ft->name, c[i].name,
                              qw_qtype_name(ch.type));
        }
        e->type = ch.type;
        if (settings->imatrix && ch.type != input_type) {
            n_quantized++;
            QW_TRY(attach_importance(ctx, settings->imatrix, &c[i], &ch, e, ft->name, &n_missing,
                                     err));
        }
        if (e->source == SOURCE_TENSOR && ch.type == source_type &&
            e->transform == QW_TRANSFORM_NONE) {
            e->source = SOURCE_COPY; /* same type: bit for bit */
            continue;
        }
        if (e->source != SOURCE_TENSOR) continue;
        if (!e->tensor->readable) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, c[i].name, -1,
                              "%s: tensor \"%s\" is stored as %s, which qwodel cannot decode, "
                              "so it cannot be converted to %s", e->tensor->file, c[i].name,
                              e->tensor->dtype_name, qw_qtype_name(ch.type));
        }
        if (!qw_qtype_get(source_type)->is_float && !warned_requant) {
            qw_log(ctx->reporter, QW_LOG_WARNING,
                   "%s: requantizing already-quantized tensors (%s -> %s ...): quality will be "
                   "lower than quantizing from the original weights", m->path,
                   qw_qtype_name(source_type), qw_qtype_name(ch.type));
            warned_requant = true;
        }
    }
    if (settings->imatrix && n_missing) {
        qw_log(ctx->reporter, QW_LOG_WARNING,
               "importance matrix %s has no entry for %zu of the %zu tensors quantized (besides "
               "token_embd); they are quantized without one (-v lists them)",
               settings->imatrix_path, n_missing, n_quantized);
    }
    return QW_OK;
}

/* What llama-quantize records about an importance matrix (through its KV overrides: strings cut
 * to 127 bytes, integers as u32). */
static qw_status write_imatrix_metadata(const gguf_settings *s, qw_gguf_writer *w,
                                        qw_error *err) {
    if (!s->imatrix) return QW_OK;
    char value[128];
    snprintf(value, sizeof value, "%s", s->imatrix_path);
    QW_TRY(qw_gguf_writer_set_str(w, "quantize.imatrix.file", value, err));
    if (qw_imatrix_dataset(s->imatrix)) {
        snprintf(value, sizeof value, "%s", qw_imatrix_dataset(s->imatrix));
        QW_TRY(qw_gguf_writer_set_str(w, "quantize.imatrix.dataset", value, err));
    }
    QW_TRY(qw_gguf_writer_set_u32(w, "quantize.imatrix.entries_count",
                                  (uint32_t)qw_imatrix_count(s->imatrix), err));
    if (qw_imatrix_chunks(s->imatrix) > 0) {
        QW_TRY(qw_gguf_writer_set_u32(w, "quantize.imatrix.chunks_count",
                                      (uint32_t)qw_imatrix_chunks(s->imatrix), err));
    }
    return QW_OK;
}

static qw_status gguf_plan_build(const qw_run_context *ctx, const char *format, qw_plan *plan,
                                 qw_error *err) {
    const qw_model *m = ctx->model;
    const qw_ftype_info *ft = qw_ftype_find(format);
    for (size_t i = 0; !ft && i < qw_ftype_table_count(); i++) {
        const qw_ftype_info *row = qw_ftype_table_at(i);
        if (qw_strcasecmp(row->name, format) != 0) continue;
        /* a format this build does not offer until its kernels exist */
        bool types[QW_QTYPE_COUNT];
        qw_ftype_types(row, types);
        qw_buf missing = {0};
        for (int t = 0; t < QW_QTYPE_COUNT; t++) {
            if (types[t] && !qw_qtype_get((qw_qtype)t)->quantize) {
                qw_buf_printf(&missing, "%s%s", missing.len ? ", " : "",
                              qw_qtype_name((qw_qtype)t));
            }
        }
        qw_status st = qw_fail(err, QW_ERR_FORMAT_NOT_SUPPORTED,
                               "format \"%s\" is not available in this build: it needs types it "
                               "cannot produce yet (%s)", row->name,
                               missing.data ? missing.data : "");
        qw_buf_free(&missing);
        return st;
    }
    if (!ft) {
        qw_buf names = {0};
        for (size_t i = 0; i < qw_ftype_count(); i++) {
            qw_buf_printf(&names, "%s%s", i ? ", " : "", qw_ftype_at(i)->name);
        }
        qw_status st = qw_fail(err, QW_ERR_FORMAT_NOT_SUPPORTED,
                               "format \"%s\" is not supported by the gguf backend (supported: "
                               "%s)", format, names.data ? names.data : "");
        qw_buf_free(&names);
        return st;
    }
    if (m->kind == QW_SOURCE_HF_DIR && !m->arch) {
        return qw_fail(err, QW_ERR_UNSUPPORTED_ARCH, "%s: no architecture row", m->path);
    }

    gguf_plan *gp = qw_calloc(1, sizeof *gp);
    if (!gp) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->priv = gp;
    plan->priv_free = gguf_plan_free;
    gp->hparams = &m->hparams;

    candidate *c = NULL;
    size_t n = 0;
    gguf_settings settings;
    qw_status st = parse_settings(ctx, &settings, err);
    if (st == QW_OK) {
        st = m->kind == QW_SOURCE_HF_DIR ? collect_hf(m, gp, &c, &n, err)
                                         : collect_gguf(m, &c, &n, err);
    }
    if (st == QW_OK && m->kind == QW_SOURCE_HF_DIR && m->arch->moe_topk_norm &&
        m->hparams.norm_topk_prob && m->hparams.norm_topk_prob != m->arch->moe_topk_norm) {
        /* llama.cpp fixes this per architecture and has no key for it (neither does its
         * converter write one), so the output computes differently from the checkpoint */
        qw_log(ctx->reporter, QW_LOG_WARNING,
               "%s: config.json sets norm_topk_prob to %s, but llama.cpp's %s graph always %s "
               "the chosen experts' weights: llama.cpp will not compute what transformers does",
               m->path, m->hparams.norm_topk_prob == QW_TOPK_NORM_ON ? "true" : "false",
               m->arch->name,
               m->arch->moe_topk_norm == QW_TOPK_NORM_ON ? "renormalizes" : "leaves unnormalized");
    }
    if (st == QW_OK) {
        qsort(c, n, sizeof *c, cmp_candidates);
        st = choose_types(ctx, ft, &settings, c, n, err);
    }
    if (st == QW_OK) st = qw_gguf_writer_create(&gp->writer, err);
    if (st == QW_OK) {
        st = m->kind == QW_SOURCE_HF_DIR ? write_hf_metadata(m, ft, gp->writer, err)
                                         : write_gguf_metadata(m, ft, gp->writer, err);
    }
    if (st == QW_OK) st = write_imatrix_metadata(&settings, gp->writer, err);
    gp->imatrix = settings.imatrix; /* the plan's entries point into it */
    settings.imatrix = NULL;
    settings_free(&settings);
    if (st == QW_OK) {
        gp->entries = qw_calloc(n ? n : 1, sizeof *gp->entries);
        if (!gp->entries) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    /* ggml's GGUF writer (llama-quantize) records ggml_n_dims, dropping trailing sizes of 1;
     * llama.cpp's converter records numpy's dimensions. A float format from a checkpoint is the
     * converter's file, anything else llama-quantize's. */
    const bool converter_dims =
        m->kind == QW_SOURCE_HF_DIR && qw_qtype_get(ft->default_type)->is_float;
    for (size_t i = 0; st == QW_OK && i < n; i++) {
        const plan_entry *e = &c[i].entry;
        if (!converter_dims) c[i].n_dims = effective_dims(&c[i]);
        st = qw_gguf_writer_add_tensor(gp->writer, c[i].name, e->type, c[i].n_dims, c[i].ne, err);
        if (st != QW_OK) break;
        gp->entries[i] = *e;
        qw_plan_tensor pt = {0};
        pt.name = qw_plan_intern(plan, c[i].name);
        pt.source_name = qw_plan_intern(plan, e->tensor ? e->tensor->name : "(generated)");
        pt.source_type = e->tensor ? e->tensor->dtype_name : "f32";
        pt.type = qw_qtype_name(e->type);
        pt.transform = e->source == SOURCE_COPY ? "copy" : qw_transform_name(e->transform);
        if (e->n_parts > 0) {
            char what[64];
            snprintf(what, sizeof what, "stack %lld experts%s", (long long)e->n_parts,
                     e->source == SOURCE_COPY ? " (copy)" : "");
            pt.transform = qw_plan_intern(plan, what);
            if (!pt.transform) {
                st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                break;
            }
        }
        pt.n_dims = c[i].n_dims;
        memcpy(pt.shape, c[i].ne, sizeof pt.shape);
        uint64_t elems = 1;
        for (int d = 0; d < 4; d++) elems *= (uint64_t)c[i].ne[d];
        pt.bytes = elems / qw_qtype_get(e->type)->block_elems * qw_qtype_get(e->type)->block_bytes;
        if (!pt.name || !pt.source_name) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            break;
        }
        st = qw_plan_push(plan, &pt, err);
    }
    qw_free(c);
    if (st != QW_OK) return st;

    char *file = qw_sprintf("%s-%s.gguf", m->name, ft->name);
    if (file) qw_str_lower(file + strlen(m->name));
    plan->output_path = file ? qw_path_join(ctx->output_dir, file) : NULL;
    plan->format = qw_strdup(ft->name);
    qw_free(file);
    if (!plan->output_path || !plan->format) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->output_bytes = qw_gguf_writer_total_bytes(gp->writer);
    return QW_OK;
}

/* ---- execution ------------------------------------------------------------------------------ */

typedef struct batch_job {
    const plan_entry *entry;
    int64_t first_row;
    uint8_t *out;          /* batch output */
    uint64_t row_bytes;    /* output bytes per row */
    float **scratch;       /* one row of f32 per worker */
    qw_error *errors;      /* one per worker */
    qw_status *status;     /* one per worker */
} batch_job;

/* The source tensor of output row `row` and, in *src_row, its row there. */
static const qw_model_tensor *entry_row_source(const plan_entry *e, int64_t row,
                                               int64_t *src_row) {
    if (e->n_parts > 0) {
        *src_row = row % e->part_rows;
        return e->parts[row / e->part_rows];
    }
    *src_row = qw_transform_permutes(e->transform) ? qw_permute_source_row(row, e->head_rows)
                                                   : row;
    return e->tensor;
}

/* Drops output rows [first, first + n) of an unpermuted entry from the resident set, part by
 * part for a stacked tensor. */
static void entry_release_rows(const plan_entry *e, int64_t first, int64_t n) {
    if (e->n_parts == 0) {
        qw_model_release_rows(e->tensor, first, n);
        return;
    }
    for (int64_t row = first; row < first + n;) {
        int64_t k = row / e->part_rows, at = row % e->part_rows;
        int64_t take = e->part_rows - at < first + n - row ? e->part_rows - at : first + n - row;
        qw_model_release_rows(e->parts[k], at, take);
        row += take;
    }
}

/* Gemma's norm +1 as llama.cpp's converter computes it: in float32, except that an f16 tensor
 * stays f16 through the addition (torch rounds the sum to f16 before it is widened). */
static void add_offset(float *row, int64_t n, float offset, qw_qtype source_type) {
    const bool f16 = source_type == QW_QTYPE_F16;
    for (int64_t i = 0; i < n; i++) {
        float v = row[i] + offset;
        row[i] = f16 ? qw_fp16_to_fp32(qw_fp32_to_fp16(v)) : v;
    }
}

static void batch_task(void *p, size_t begin, size_t end, int worker) {
    batch_job *job = p;
    const plan_entry *e = job->entry;
    const qw_qtype_info *info = qw_qtype_get(e->type);
    float *row = job->scratch[worker];
    for (size_t r = begin; r < end && job->status[worker] == QW_OK; r++) {
        int64_t out_row = job->first_row + (int64_t)r;
        int64_t src_row;
        const qw_model_tensor *t = entry_row_source(e, out_row, &src_row);
        qw_status st;
        if (e->row_len == 1 && t->ne[0] != 1) {
            /* a permuted vector: element src_row of its only row */
            const qw_qtype_info *src = qw_qtype_get(t->type);
            float whole_block[256];
            int64_t blk = src_row / src->block_elems;
            src->dequantize(t->data + (uint64_t)blk * src->block_bytes, whole_block,
                            src->block_elems);
            row[0] = whole_block[src_row % src->block_elems];
            st = QW_OK;
        } else {
            st = qw_model_read_rows(t, src_row, 1, row, &job->errors[worker]);
        }
        const float offset = qw_transform_offset(e->transform);
        if (st == QW_OK && offset != 0.0f) add_offset(row, e->row_len, offset, t->type);
        if (st == QW_OK) {
            /* NaN or Inf weights are a corrupt model, and quantizing them is undefined (float
             * to int conversions out of range) */
            const int64_t bad = qw_find_nonfinite(row, e->row_len);
            if (bad >= 0) {
                st = qw_fail_at(&job->errors[worker], QW_ERR_CORRUPT, t->name, -1,
                                "%s: tensor \"%s\" holds a non-finite value (%g) in row %lld",
                                t->file, t->name, (double)row[bad], (long long)src_row);
            }
        }
        if (st != QW_OK) {
            job->status[worker] = st;
            return;
        }
        const float *importance =
            e->importance ? e->importance + (out_row / e->rows_per_matrix) * e->row_len : NULL;
        info->quantize(row, job->out + r * job->row_bytes, e->row_len, importance);
    }
}

static qw_status write_rope_freqs(const qw_run_context *ctx, const plan_entry *e,
                                  qw_gguf_writer *w, qw_error *err) {
    float *f = qw_malloc_array((size_t)e->row_len, sizeof *f);
    if (!f) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_arch_rope_freqs(&ctx->model->hparams, f, e->row_len);
    qw_status st = qw_gguf_writer_write(w, f, (size_t)e->row_len * sizeof *f, err);
    qw_free(f);
    return st;
}

static qw_status write_copy(const plan_entry *e, qw_gguf_writer *w, qw_reporter *r,
                            qw_error *err) {
    /* a stacked tensor is its experts' bytes one after another */
    const int64_t n_parts = e->n_parts > 0 ? e->n_parts : 1;
    for (int64_t k = 0; k < n_parts; k++) {
        const qw_model_tensor *t = e->n_parts > 0 ? e->parts[k] : e->tensor;
        const uint8_t *p = t->data;
        uint64_t left = t->bytes;
        while (left > 0) {
            size_t n = left < BATCH_OUTPUT_BYTES ? (size_t)left : BATCH_OUTPUT_BYTES;
            QW_TRY(qw_gguf_writer_write(w, p, n, err));
            QW_TRY(qw_check_cancel(r, err));
            if (t->mapped) qw_mapped_release(p, n);
            p += n;
            left -= n;
        }
    }
    return QW_OK;
}

typedef struct exec_buffers {
    uint8_t *out;
    float **scratch;
    qw_error *errors;
    qw_status *status;
    int n_workers;
    int64_t scratch_len;
} exec_buffers;

static void buffers_free(exec_buffers *b) {
    if (b->scratch) {
        for (int i = 0; i < b->n_workers; i++) qw_free(b->scratch[i]);
    }
    qw_free(b->scratch);
    qw_free(b->errors);
    qw_free(b->status);
    qw_free(b->out);
}

static qw_status buffers_init(exec_buffers *b, const qw_plan *plan, const gguf_plan *gp,
                              int n_workers, qw_error *err) {
    memset(b, 0, sizeof *b);
    b->n_workers = n_workers;
    uint64_t max_row_bytes = 0;
    for (size_t i = 0; i < plan->n_tensors; i++) {
        const plan_entry *e = &gp->entries[i];
        if (e->source != SOURCE_TENSOR) continue;
        if (e->row_len > b->scratch_len) b->scratch_len = e->row_len;
        uint64_t rb = qw_qtype_row_bytes(e->type, e->row_len);
        if (rb > max_row_bytes) max_row_bytes = rb;
    }
    uint64_t out_bytes = max_row_bytes > BATCH_OUTPUT_BYTES ? max_row_bytes : BATCH_OUTPUT_BYTES;
    b->out = qw_malloc((size_t)out_bytes);
    b->scratch = qw_calloc((size_t)n_workers, sizeof *b->scratch);
    b->errors = qw_calloc((size_t)n_workers, sizeof *b->errors);
    b->status = qw_calloc((size_t)n_workers, sizeof *b->status);
    bool ok = b->out && b->scratch && b->errors && b->status;
    for (int i = 0; ok && i < n_workers; i++) {
        b->scratch[i] = qw_malloc_array((size_t)(b->scratch_len > 0 ? b->scratch_len : 1),
                                        sizeof(float));
        ok = b->scratch[i] != NULL;
    }
    if (!ok) {
        buffers_free(b);
        return qw_fail(err, QW_ERR_NO_MEMORY,
                       "%s: out of memory allocating %.1f MiB of quantization buffers (%d threads)",
                       plan->output_path,
                       ((double)out_bytes + (double)n_workers * (double)b->scratch_len * 4.0) /
                           (1024.0 * 1024.0),
                       n_workers);
    }
    return QW_OK;
}

/* Where a run stands, so progress can be reported inside large tensors too (a progress call is
 * also where the Python layer gets to handle Ctrl-C). */
typedef struct run_progress {
    uint64_t done;  /* output bytes of finished tensors */
    uint64_t total;
    const char *message;
} run_progress;

static int progress_percent(const run_progress *p, uint64_t extra) {
    return 5 + (int)(90.0 * (double)(p->done + extra) / (double)(p->total ? p->total : 1));
}

static qw_status write_converted(const qw_run_context *ctx, const plan_entry *e,
                                 exec_buffers *b, qw_gguf_writer *w, const run_progress *progress,
                                 qw_error *err) {
    uint64_t row_bytes = qw_qtype_row_bytes(e->type, e->row_len);
    int64_t batch_rows = row_bytes ? (int64_t)(BATCH_OUTPUT_BYTES / row_bytes) : 1;
    if (batch_rows < 1) batch_rows = 1;
    size_t grain = row_bytes >= 4096 ? 1 : (size_t)(4096 / (row_bytes ? row_bytes : 1));
    for (int64_t first = 0; first < e->n_rows; first += batch_rows) {
        int64_t rows = e->n_rows - first < batch_rows ? e->n_rows - first : batch_rows;
        for (int i = 0; i < b->n_workers; i++) b->status[i] = QW_OK;
        batch_job job = {e, first, b->out, row_bytes, b->scratch, b->errors, b->status};
        qw_pool_run(ctx->pool, (size_t)rows, grain, batch_task, &job);
        for (int i = 0; i < b->n_workers; i++) {
            if (b->status[i] != QW_OK) {
                if (err) *err = b->errors[i];
                return b->status[i];
            }
        }
        QW_TRY(qw_gguf_writer_write(w, b->out, (size_t)(row_bytes * (uint64_t)rows), err));
        if (!qw_transform_permutes(e->transform)) entry_release_rows(e, first, rows);
        if (first + rows < e->n_rows) {
            uint64_t so_far = row_bytes * (uint64_t)(first + rows);
            QW_TRY(qw_progress(ctx->reporter, progress_percent(progress, so_far), "quantizing",
                               progress->message, err));
        }
    }
    if (qw_transform_permutes(e->transform) && e->row_len == e->tensor->ne[0]) {
        qw_model_release_rows(e->tensor, 0, e->n_rows); /* permuted rows are read out of order */
    }
    return QW_OK;
}

static qw_status gguf_execute(const qw_run_context *ctx, const qw_plan *plan,
                              qw_run_result *result, qw_error *err) {
    gguf_plan *gp = plan->priv;
    qw_reporter *r = ctx->reporter;
    /* Refused before anything is written: a plan may name types whose encoders this build does
     * not have yet (a dry run still shows it). */
    for (size_t i = 0; i < plan->n_tensors; i++) {
        const plan_entry *e = &gp->entries[i];
        if (e->source == SOURCE_TENSOR && !qw_qtype_get(e->type)->quantize) {
            return qw_fail_at(err, QW_ERR_FORMAT_NOT_SUPPORTED, plan->tensors[i].name, -1,
                              "format %s: tensor \"%s\" needs type %s, which this build cannot "
                              "produce yet", plan->format, plan->tensors[i].name,
                              qw_qtype_name(e->type));
        }
    }
    qw_output_clean_stale(plan->output_path);
    exec_buffers b;
    QW_TRY(buffers_init(&b, plan, gp, qw_pool_threads(ctx->pool), err));
    qw_status st = qw_gguf_writer_begin(gp->writer, plan->output_path, err);
    uint64_t done = 0, total = 0;
    for (size_t i = 0; i < plan->n_tensors; i++) total += plan->tensors[i].bytes;
    for (size_t i = 0; st == QW_OK && i < plan->n_tensors; i++) {
        const plan_entry *e = &gp->entries[i];
        const qw_plan_tensor *pt = &plan->tensors[i];
        char message[256];
        snprintf(message, sizeof message, "[%zu/%zu] %s %s -> %s", i + 1, plan->n_tensors,
                 pt->name, pt->source_type, pt->type);
        run_progress progress = {done, total, message};
        st = qw_progress(r, progress_percent(&progress, 0), "quantizing", message, err);
        if (st != QW_OK) break;
        qw_log(r, QW_LOG_DEBUG, "%s", message);
        switch (e->source) { /* the ways a tensor's bytes are produced */
        case SOURCE_COPY: st = write_copy(e, gp->writer, r, err); break;
        case SOURCE_ROPE_FREQS: st = write_rope_freqs(ctx, e, gp->writer, err); break;
        case SOURCE_VALUES:
            st = qw_gguf_writer_write(gp->writer, e->values, (size_t)e->row_len * sizeof(float),
                                      err);
            break;
        case SOURCE_TENSOR: st = write_converted(ctx, e, &b, gp->writer, &progress, err); break;
        }
        if (st != QW_OK) {
            if (err && st != QW_ERR_CANCELLED && !err->tensor[0]) {
                snprintf(err->tensor, sizeof err->tensor, "%s", pt->name);
            }
            break;
        }
        done += pt->bytes;
        uint64_t elems = 1;
        for (int d = 0; d < 4; d++) elems *= (uint64_t)pt->shape[d];
        result->n_elements += elems;
        result->data_bytes += pt->bytes;
        result->type_counts[e->type]++;
    }
    if (st == QW_OK) st = qw_progress(r, 96, "writing", plan->output_path, err);
    if (st == QW_OK) st = qw_gguf_writer_finish(gp->writer, err);
    buffers_free(&b);
    if (st != QW_OK) {
        /* A failed or cancelled run leaves no file: drop the writer (and its temporary). */
        qw_gguf_writer_free(gp->writer);
        gp->writer = NULL;
        return st;
    }
    result->file_size = plan->output_bytes;
    return QW_OK;
}

static qw_status gguf_check_model(const qw_model *m, qw_error *err) {
    if (m->kind == QW_SOURCE_HF_DIR && !m->arch) {
        return qw_fail(err, QW_ERR_UNSUPPORTED_ARCH, "%s: unsupported architecture", m->path);
    }
    /* llama.cpp's encoder graphs want their own metadata (pooling, token types) and a WordPiece
     * tokenizer in its form, which this backend does not write */
    if (m->kind == QW_SOURCE_HF_DIR && m->arch->is_encoder) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "architecture", -1,
                          "%s: the gguf backend does not write %s encoder models yet (the coreml "
                          "backend does)", m->path, m->arch->name);
    }
    return QW_OK;
}

const qw_backend_ops qw_gguf_backend = {
    .name = "gguf",
    .description = "GGUF files for llama.cpp, Ollama and LM Studio (CPU-friendly).",
    .logger = "GGUFQuantizer",
    .default_format = "Q4_K_M",
    .format_count = format_count,
    .format_name = format_name,
    .format_description = format_description,
    .format_find = format_find,
    .options = gguf_options,
    .n_options = sizeof gguf_options / sizeof gguf_options[0],
    .check_model = gguf_check_model,
    .plan = gguf_plan_build,
    .execute = gguf_execute,
};
