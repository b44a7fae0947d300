/* A model source seen with HuggingFace names: the identity for HF directories, the inverse of
 * llama.cpp's conversion for GGUF files (names, Q/K row order, config.json). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

struct qw_hf_view {
    qw_hf_tensor *tensors;
    size_t n_tensors;
    size_t cap_tensors;
    /* tensors by name: open addressing, a power of two at least twice cap_tensors; 0 is an
     * empty slot, else index + 1. A Qwen3-MoE has tens of thousands of expert tensors, and
     * every backend looks most of them up by name: a scan made that quadratic. */
    size_t *slots;
    size_t n_slots;
    /* one catalog entry per expert of a stacked GGUF tensor: the expert's rows, which the HF
     * tensors of the experts point at as their source */
    qw_model_tensor *slices;
    size_t n_slices;
    json_t *config;       /* NULL when it could not be built: */
    qw_error config_err;  /* why */
};

/* torch_dtype names of the stored float types; anything else is read back as float32. */
static const struct {
    qw_qtype type;
    const char *torch;
} torch_dtypes[] = {
    {QW_QTYPE_F32, "float32"},
    {QW_QTYPE_F16, "float16"},
    {QW_QTYPE_BF16, "bfloat16"},
};

static const char *torch_dtype_of(const qw_model_tensor *t) {
    for (size_t i = 0; t && i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++) {
        if (torch_dtypes[i].type == t->type) return torch_dtypes[i].torch;
    }
    return "float32";
}

static size_t name_hash(const char *name) { /* FNV-1a */
    uint64_t h = 14695981039346656037u;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        h = (h ^ *c) * 1099511628211u;
    }
    return (size_t)h;
}

/* the slot holding name, or the empty one where it would go */
static size_t *slot_of(const qw_hf_view *v, const char *name) {
    size_t i = name_hash(name) & (v->n_slots - 1);
    while (v->slots[i] != 0 && strcmp(v->tensors[v->slots[i] - 1].name, name) != 0) {
        i = (i + 1) & (v->n_slots - 1);
    }
    return &v->slots[i];
}

/* Indexes the tensor being filled in, tensors[n_tensors], by its name; false when another
 * tensor has that name already. */
static bool index_next(qw_hf_view *v) {
    size_t *slot = slot_of(v, v->tensors[v->n_tensors].name);
    if (*slot != 0) return false;
    *slot = v->n_tensors + 1;
    return true;
}

static void fill_common(qw_hf_tensor *h, const qw_model_tensor *t) {
    const qw_qtype_info *info = qw_qtype_get(t->type);
    h->source = t;
    h->n_dims = t->n_dims;
    memcpy(h->ne, t->ne, sizeof h->ne);
    h->n_rows = t->n_rows;
    h->raw = info->is_float;
    h->raw_type = t->type;
}

static qw_status view_of_hf_dir(const qw_model *m, qw_hf_view *v, qw_error *err) {
    v->config = json_deep_copy(m->config);
    if (!v->config) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        qw_hf_tensor *h = &v->tensors[v->n_tensors];
        if (strlen(t->name) >= sizeof h->name) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                              "%s: tensor name \"%s\" is longer than %zu bytes", t->file, t->name,
                              sizeof h->name - 1);
        }
        snprintf(h->name, sizeof h->name, "%s", t->name);
        /* a name in two shards stays in the view; finding it gives the first copy */
        (void)index_next(v);
        fill_common(h, t);
        v->n_tensors++;
    }
    return QW_OK;
}

/* ---- GGUF ----------------------------------------------------------------------------------- */

static qw_status check_heads(const qw_model *m, const qw_hparams *hp, qw_error *err) {
    char key[128];
    if (hp->n_head <= 0) {
        snprintf(key, sizeof key, "%s.attention.head_count", m->arch_name);
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: \"%s\" is missing or zero; the attention heads cannot be told "
                          "apart without it", m->path, key);
    }
    snprintf(key, sizeof key, "%s.attention.head_count_kv", m->arch_name);
    if (hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv != 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: \"%s\" = %lld does not divide the %lld attention heads", m->path,
                          key, (long long)hp->n_head_kv, (long long)hp->n_head);
    }
    if (!hp->head_dim && hp->n_embd % hp->n_head != 0) {
        snprintf(key, sizeof key, "%s.embedding_length", m->arch_name);
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: \"%s\" = %lld is not a multiple of the %lld attention heads and "
                          "there is no attention.key_length", m->path, key, (long long)hp->n_embd,
                          (long long)hp->n_head);
    }
    return QW_OK;
}

/* Sets up undoing the Q/K permutation: heads of an even number of rows (elements for a bias). */
static qw_status plan_unpermute(const qw_hparams *hp, qw_hf_tensor *h, qw_transform transform) {
    h->unpermute = transform;
    int64_t heads = transform == QW_TRANSFORM_PERMUTE_Q ? hp->n_head : hp->n_head_kv;
    int64_t units = h->n_dims == 1 ? h->ne[0] : h->n_rows;
    if (heads <= 0 || units % heads != 0 || (units / heads) % 2 != 0) return QW_ERR_CORRUPT;
    h->head_rows = units / heads;
    return QW_OK;
}

static qw_status rope_scaling_from_tensor(const qw_model *m, qw_hparams *hp, qw_error *err) {
    const qw_model_tensor *t = qw_model_find(m, "rope_freqs.weight");
    if (!t) return QW_OK;
    if (t->n_dims != 1 || t->ne[0] <= 0 || t->ne[0] > (1 << 16)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                          "%s: rope_freqs.weight must be one vector of at most 65536 values",
                          m->path);
    }
    float *freqs = qw_malloc_array((size_t)t->ne[0], sizeof *freqs);
    if (!freqs) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_model_read_rows(t, 0, 1, freqs, err);
    if (st == QW_OK) st = qw_hparams_rope_from_freqs(hp, freqs, t->ne[0], m->path, err);
    qw_free(freqs);
    return st;
}

/* Phi-3's longrope factors: rope_factors_long/short.weight back into rope_scaling's lists. */
static qw_status rope_factors_from_tensors(const qw_model *m, qw_hparams *hp, qw_error *err) {
    const qw_model_tensor *lt = qw_model_find(m, "rope_factors_long.weight");
    const qw_model_tensor *st = qw_model_find(m, "rope_factors_short.weight");
    if (!lt && !st) return QW_OK;
    if (!lt || !st || lt->n_dims != 1 || st->n_dims != 1 || lt->ne[0] != st->ne[0] ||
        lt->ne[0] <= 0 || lt->ne[0] > QW_ROPE_FACTORS_MAX) {
        return qw_fail_at(err, QW_ERR_CORRUPT, lt ? lt->name : "rope_factors_long.weight", -1,
                          "%s: rope_factors_long.weight and rope_factors_short.weight must both "
                          "be vectors of the same length, at most %d", m->path,
                          QW_ROPE_FACTORS_MAX);
    }
    QW_TRY(qw_model_read_rows(lt, 0, 1, hp->rope_long_factor, err));
    QW_TRY(qw_model_read_rows(st, 0, 1, hp->rope_short_factor, err));
    for (int64_t i = 0; i < lt->ne[0]; i++) {
        if (!isfinite(hp->rope_long_factor[i]) || !isfinite(hp->rope_short_factor[i])) {
            return qw_fail_at(err, QW_ERR_CORRUPT, lt->name, -1,
                              "%s: rope factor %lld is not finite", m->path, (long long)i);
        }
    }
    hp->n_rope_factors = lt->ne[0];
    snprintf(hp->rope_type, sizeof hp->rope_type, "longrope");
    return QW_OK;
}

/* HF entries the GGUF tensors make: one per tensor, one per expert of a 3-D stack. */
static size_t count_hf_tensors(const qw_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        int64_t parts = t->n_dims == 3 && t->ne[2] > 0 && t->ne[2] <= (1 << 16) ? t->ne[2] : 1;
        n += (size_t)parts;
    }
    return n;
}

/* Expert e's rows of the stacked tensor t (GGUF ne {cols, rows, n_expert}: expert-major). */
static void slice_expert(const qw_model_tensor *t, int64_t e, qw_model_tensor *out) {
    *out = *t;
    const uint64_t slice_bytes = qw_qtype_row_bytes(t->type, t->ne[0]) * (uint64_t)t->ne[1];
    out->n_dims = 2;
    out->ne[2] = 1;
    out->n_rows = t->ne[1];
    out->data = t->data + (uint64_t)e * slice_bytes;
    out->bytes = slice_bytes;
}

/* A config for MoE GGUFs says every layer has experts (decoder_sparse_step 1, no
 * mlp_only_layers); a GGUF with dense layers among them would need more keys. */
static qw_status check_expert_layers(const qw_model *m, const qw_hparams *hp, qw_error *err) {
    if (hp->n_expert <= 0) return QW_OK;
    for (int64_t l = 0; l < hp->n_layer; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.ffn_gate_inp.weight", (long long)l);
        if (!qw_model_find(m, name)) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, name, -1,
                              "%s: layer %lld has no experts (no \"%s\"); qwodel writes "
                              "configs only for models whose every layer has experts", m->path,
                              (long long)l, name);
        }
    }
    return QW_OK;
}

static int64_t gguf_token_id(const qw_gguf *g, const char *key) {
    uint64_t id;
    return qw_gguf_get_u64(g, key, &id) && id <= (uint64_t)INT32_MAX ? (int64_t)id : -1;
}

static qw_status view_of_gguf(const qw_model *m, qw_hf_view *v, qw_error *err) {
    if (!m->arch) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_ARCH, "general.architecture", -1,
                          "%s: GGUF architecture \"%s\" has no HuggingFace mapping in qwodel "
                          "(supported: %s)", m->path, m->arch_name, qw_arch_supported_list());
    }
    qw_hparams hp = m->hparams;
    QW_TRY(check_heads(m, &hp, err));
    QW_TRY(qw_hparams_rope_from_gguf(m->gguf, m->arch_name, &hp, err));
    QW_TRY(rope_scaling_from_tensor(m, &hp, err));
    QW_TRY(rope_factors_from_tensors(m, &hp, err));
    hp.tied_embeddings = qw_model_find(m, "output.weight") == NULL;

    bool attention_bias = false;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        qw_transform transform;
        bool drop, stacked;
        char name[sizeof v->tensors[0].name];
        qw_status st = qw_arch_unmap_tensor_part(m->arch, &hp, t->name, 0, name, sizeof name,
                                                 &transform, &drop, &stacked, err);
        if (st != QW_OK) {
            qw_error_prefix(err, "%s: ", m->path);
            return st;
        }
        if (drop) continue;
        if (stacked) {
            /* a stack of n_expert 2-D tensors, each given back as its own HF tensor */
            if (t->n_dims != 3 || t->ne[2] != hp.n_expert || transform != QW_TRANSFORM_NONE ||
                (size_t)hp.n_expert > v->cap_tensors - v->n_tensors) {
                return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                                  "%s: tensor \"%s\" should stack %lld experts' matrices "
                                  "(3 dimensions, the last %lld)", m->path, t->name,
                                  (long long)hp.n_expert, (long long)hp.n_expert);
            }
            for (int64_t e = 0; e < hp.n_expert; e++) {
                qw_hf_tensor *h = &v->tensors[v->n_tensors];
                st = qw_arch_unmap_tensor_part(m->arch, &hp, t->name, e, h->name,
                                               sizeof h->name, &transform, &drop, &stacked, err);
                if (st != QW_OK) {
                    qw_error_prefix(err, "%s: ", m->path);
                    return st;
                }
                if (!index_next(v)) {
                    return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                                      "%s: two tensors map to the HuggingFace name \"%s\"",
                                      m->path, h->name);
                }
                qw_model_tensor *slice = &v->slices[v->n_slices++];
                slice_expert(t, e, slice);
                fill_common(h, slice);
                v->n_tensors++;
            }
            continue;
        }
        if (t->n_dims > 2) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                              "%s: tensor \"%s\" has %d dimensions; its HuggingFace tensor "
                              "has at most 2", m->path, t->name, t->n_dims);
        }
        qw_hf_tensor *h = &v->tensors[v->n_tensors];
        memcpy(h->name, name, sizeof h->name);
        if (!index_next(v)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                              "%s: two tensors map to the HuggingFace name \"%s\"", m->path,
                              h->name);
        }
        fill_common(h, t);
        if (h->n_dims == 1 && qw_arch_hf_is_one_row(h->name)) {
            h->n_dims = 2; /* the same values, HF's shape [1, n] */
            h->ne[1] = 1;
        }
        h->offset = qw_transform_offset(transform);
        if (h->offset != 0.0f) h->raw = false; /* (w + c) - c is exact only in the reals */
        if (qw_transform_permutes(transform) && plan_unpermute(&hp, h, transform) != QW_OK) {
            return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                              "%s: tensor \"%s\" has %lld rows, which cannot be split into "
                              "%lld heads of an even size", m->path, t->name,
                              (long long)(h->n_dims == 1 ? h->ne[0] : h->n_rows),
                              (long long)(transform == QW_TRANSFORM_PERMUTE_Q ? hp.n_head
                                                                               : hp.n_head_kv));
        }
        if (qw_str_ends_with(h->name, ".self_attn.q_proj.bias")) attention_bias = true;
        v->n_tensors++;
    }

    const qw_hf_tensor *embd = qw_hf_view_find(v, "model.embed_tokens.weight");
    if (!embd || embd->n_dims != 2) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "token_embd.weight", -1,
                          "%s: no 2-D token_embd.weight, so the vocabulary size is unknown",
                          m->path);
    }
    hp.vocab_size = embd->ne[1];
    qw_hf_config_info info = {
        .bos_token_id = gguf_token_id(m->gguf, "tokenizer.ggml.bos_token_id"),
        .eos_token_id = gguf_token_id(m->gguf, "tokenizer.ggml.eos_token_id"),
        .pad_token_id = gguf_token_id(m->gguf, "tokenizer.ggml.padding_token_id"),
        .torch_dtype = torch_dtype_of(embd->source),
        .attention_bias = attention_bias,
    };
    /* the tensors stay readable without a config; asking for it reports why there is none */
    qw_status st = check_expert_layers(m, &hp, &v->config_err);
    if (st == QW_OK) st = qw_arch_hf_config(m->arch, &hp, &info, &v->config, &v->config_err);
    if (st == QW_ERR_NO_MEMORY) return qw_fail(err, st, "out of memory");
    if (st != QW_OK) qw_error_prefix(&v->config_err, "%s: ", m->path);
    return QW_OK;
}

/* ---- the view ------------------------------------------------------------------------------- */

qw_status qw_model_hf_view(const qw_model *m, qw_hf_view **out, qw_error *err) {
    *out = NULL;
    qw_hf_view *v = qw_calloc(1, sizeof *v);
    const size_t n = m->kind == QW_SOURCE_GGUF ? count_hf_tensors(m) : m->n_tensors;
    if (v) {
        v->cap_tensors = n;
        v->tensors = qw_calloc(n + 1, sizeof *v->tensors);
        v->slices = qw_calloc(n + 1, sizeof *v->slices);
        v->n_slots = 16;
        while (v->n_slots < 2 * (n + 1)) v->n_slots *= 2;
        v->slots = qw_calloc(v->n_slots, sizeof *v->slots);
    }
    if (!v || !v->tensors || !v->slices || !v->slots) {
        qw_hf_view_free(v);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    qw_status st = m->kind == QW_SOURCE_GGUF ? view_of_gguf(m, v, err) : view_of_hf_dir(m, v, err);
    if (st != QW_OK) {
        qw_hf_view_free(v);
        return st;
    }
    *out = v;
    return QW_OK;
}

void qw_hf_view_free(qw_hf_view *v) {
    if (!v) return;
    qw_free(v->tensors);
    qw_free(v->slices);
    qw_free(v->slots);
    json_decref(v->config);
    qw_free(v);
}

size_t qw_hf_view_count(const qw_hf_view *v) { return v->n_tensors; }

const qw_hf_tensor *qw_hf_view_at(const qw_hf_view *v, size_t index) {
    return index < v->n_tensors ? &v->tensors[index] : NULL;
}

const qw_hf_tensor *qw_hf_view_find(const qw_hf_view *v, const char *hf_name) {
    const size_t slot = *slot_of(v, hf_name);
    return slot != 0 ? &v->tensors[slot - 1] : NULL;
}

static const qw_moe_layout MOE_LAYOUTS[] = {
    {"block_sparse_moe", {"w1", "w3", "w2"}},      /* Mixtral */
    {"mlp", {"gate_proj", "up_proj", "down_proj"}}, /* Qwen2-MoE, Qwen3-MoE */
};

const qw_moe_layout *qw_hf_view_moe_layout(const qw_hf_view *v, int64_t layer) {
    for (size_t i = 0; i < sizeof MOE_LAYOUTS / sizeof MOE_LAYOUTS[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%lld.%s.gate.weight", (long long)layer,
                 MOE_LAYOUTS[i].prefix);
        if (qw_hf_view_find(v, name)) return &MOE_LAYOUTS[i];
    }
    return NULL;
}

qw_status qw_hf_view_config(const qw_hf_view *v, const json_t **out, qw_error *err) {
    *out = v->config;
    if (v->config) return QW_OK;
    if (err) *err = v->config_err;
    return v->config_err.status != QW_OK ? v->config_err.status : QW_ERR_INTERNAL;
}

/* ---- reading -------------------------------------------------------------------------------- */

static qw_status check_range(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                             qw_error *err) {
    if (row_begin < 0 || n_rows < 0 || row_begin > t->n_rows || n_rows > t->n_rows - row_begin) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, t->name, -1,
                          "rows %lld..%lld are out of range for \"%s\" (%lld rows)",
                          (long long)row_begin, (long long)(row_begin + n_rows), t->name,
                          (long long)t->n_rows);
    }
    return QW_OK;
}

/* Elements of a permuted vector back in HF order: out[i] = in[gguf index of i]. */
static void unpermute_elements(const void *in, void *out, int64_t n, int64_t head, size_t elem) {
    for (int64_t i = 0; i < n; i++) {
        memcpy((char *)out + (size_t)i * elem,
               (const char *)in + (size_t)qw_unpermute_source_row(i, head) * elem, elem);
    }
}

static qw_status read_rows_f32(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                               float *dst, qw_error *err) {
    if (t->unpermute == QW_TRANSFORM_NONE) {
        return qw_model_read_rows(t->source, row_begin, n_rows, dst, err);
    }
    if (t->n_dims == 1) {
        if (n_rows == 0) return QW_OK;
        float *tmp = qw_malloc_array((size_t)t->ne[0], sizeof *tmp);
        if (!tmp) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        qw_status st = qw_model_read_rows(t->source, 0, 1, tmp, err);
        if (st == QW_OK) unpermute_elements(tmp, dst, t->ne[0], t->head_rows, sizeof *tmp);
        qw_free(tmp);
        return st;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t src = qw_unpermute_source_row(row_begin + r, t->head_rows);
        QW_TRY(qw_model_read_rows(t->source, src, 1, dst + r * t->ne[0], err));
    }
    return QW_OK;
}

qw_status qw_hf_tensor_read_f32(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                                float *dst, qw_error *err) {
    QW_TRY(check_range(t, row_begin, n_rows, err));
    QW_TRY(read_rows_f32(t, row_begin, n_rows, dst, err));
    if (t->offset != 0.0f) {
        const int64_t n = n_rows * t->ne[0];
        for (int64_t i = 0; i < n; i++) dst[i] -= t->offset;
    }
    return QW_OK;
}

qw_status qw_hf_tensor_read_raw(const qw_hf_tensor *t, int64_t row_begin, int64_t n_rows,
                                void *dst, qw_error *err) {
    if (!t->raw) {
        return qw_fail_at(err, QW_ERR_INVALID_ARG, t->name, -1,
                          "tensor \"%s\" is stored as %s with offset %g, not as plain floats; "
                          "read it as f32", t->name, t->source->dtype_name, (double)t->offset);
    }
    QW_TRY(check_range(t, row_begin, n_rows, err));
    const size_t elem = qw_qtype_get(t->raw_type)->block_bytes; /* float types: 1-element blocks */
    const uint64_t row_bytes = (uint64_t)t->ne[0] * elem;
    const uint8_t *base = t->source->data;
    if (t->unpermute == QW_TRANSFORM_NONE) {
        memcpy(dst, base + (uint64_t)row_begin * row_bytes,
               (size_t)((uint64_t)n_rows * row_bytes));
    } else if (t->n_dims == 1) {
        if (n_rows > 0) unpermute_elements(base, dst, t->ne[0], t->head_rows, elem);
    } else {
        for (int64_t r = 0; r < n_rows; r++) {
            int64_t src = qw_unpermute_source_row(row_begin + r, t->head_rows);
            memcpy((uint8_t *)dst + (uint64_t)r * row_bytes, base + (uint64_t)src * row_bytes,
                   (size_t)row_bytes);
        }
    }
    return QW_OK;
}
