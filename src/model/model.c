/* Model sources: HF directories and GGUF files, behind one tensor catalog. */
#include <string.h>

#include "file.h"
#include "hub.h"
#include "json.h"
#include "model.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define INDEX_MAX_BYTES (64u << 20)
#define TOKENIZER_MAX_BYTES ((size_t)1 << 30) /* as the tokenizer reader */

static qw_status add_tensor(qw_model *m, const qw_model_tensor *t, qw_error *err) {
    qw_model_tensor *p = qw_realloc_array(m->tensors, m->n_tensors + 1, sizeof *p);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    m->tensors = p;
    m->tensors[m->n_tensors++] = *t;
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->ne[d];
    m->n_params += n;
    return QW_OK;
}

/* ---- HF directories ------------------------------------------------------------------------- */

static qw_status add_shard_tensors(qw_model *m, const qw_safetensors *st, const json_t *weight_map,
                                   const char *shard_name, qw_error *err) {
    for (size_t i = 0; i < qw_safetensors_count(st); i++) {
        const qw_st_tensor *s = qw_safetensors_at(st, i);
        if (weight_map) {
            const char *listed = json_string_value(json_object_get(weight_map, s->name));
            if (!listed) {
                return qw_fail_at(err, QW_ERR_CORRUPT, s->name, -1,
                                  "%s: tensor \"%s\" is not listed in "
                                  "model.safetensors.index.json", qw_safetensors_path(st),
                                  s->name);
            }
            if (strcmp(listed, shard_name) != 0) {
                return qw_fail_at(err, QW_ERR_CORRUPT, s->name, -1,
                                  "%s: tensor \"%s\" is also stored here, but the index places "
                                  "it in %s", qw_safetensors_path(st), s->name, listed);
            }
        }
        if (s->n_dims > 4) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, s->name, -1,
                              "%s: tensor \"%s\" has %d dimensions (at most 4 are supported)",
                              qw_safetensors_path(st), s->name, s->n_dims);
        }
        if (qw_model_find(m, s->name)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, s->name, -1,
                              "%s: tensor \"%s\" is stored in more than one shard",
                              qw_safetensors_path(st), s->name);
        }
        qw_model_tensor t = {0};
        t.name = s->name;
        t.type = s->has_qtype ? s->qtype : QW_QTYPE_F32;
        t.readable = s->has_qtype;
        t.dtype_name = s->dtype;
        t.n_dims = s->n_dims > 0 ? s->n_dims : 1;
        for (int d = 0; d < 4; d++) t.ne[d] = 1;
        for (int d = 0; d < s->n_dims; d++) t.ne[d] = s->shape[s->n_dims - 1 - d];
        t.n_rows = t.ne[0] ? (int64_t)(s->n_elems / (uint64_t)t.ne[0]) : 0;
        t.data = s->data;
        t.bytes = s->bytes;
        t.file = qw_safetensors_path(st);
        t.mapped = true; /* model shards are always opened from files */
        QW_TRY(add_tensor(m, &t, err));
    }
    return QW_OK;
}

static qw_status open_shard(qw_model *m, const char *dir, const char *shard_name,
                            const json_t *weight_map, qw_error *err) {
    /* Shard names come from a file that may come from anywhere: no path may leave the directory. */
    if (!*shard_name || strchr(shard_name, '/') || strchr(shard_name, '\\') ||
        strcmp(shard_name, "..") == 0 || strcmp(shard_name, ".") == 0) {
        return qw_fail_at(err, QW_ERR_CORRUPT, shard_name, -1,
                          "%s/model.safetensors.index.json: shard name \"%s\" is not a plain file "
                          "name inside the model directory", dir, shard_name);
    }
    char *path = qw_path_join(dir, shard_name);
    qw_safetensors **shards = qw_realloc_array(m->shards, m->n_shards + 1, sizeof *shards);
    if (!path || !shards) {
        qw_free(path);
        if (shards) m->shards = shards;
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    m->shards = shards;
    qw_status st = qw_safetensors_open(path, &m->shards[m->n_shards], err);
    qw_free(path);
    if (st != QW_OK) return st;
    m->n_shards++;
    return add_shard_tensors(m, m->shards[m->n_shards - 1], weight_map, shard_name, err);
}

static qw_status open_weights(qw_model *m, const char *dir, qw_error *err) {
    char *index_path = qw_path_join(dir, "model.safetensors.index.json");
    char *single_path = qw_path_join(dir, "model.safetensors");
    if (!index_path || !single_path) {
        qw_free(index_path);
        qw_free(single_path);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    qw_status st = QW_OK;
    if (qw_path_is_file(index_path)) {
        json_t *index = NULL;
        st = qw_json_load_file(index_path, INDEX_MAX_BYTES, &index, err);
        const json_t *map = index ? json_object_get(index, "weight_map") : NULL;
        if (st == QW_OK && !json_is_object(map)) {
            st = qw_fail_at(err, QW_ERR_CORRUPT, "weight_map", -1,
                            "%s: \"weight_map\" is missing or not an object", index_path);
        }
        /* Open each distinct shard once, in the order the map first names it. */
        const char *key;
        json_t *value;
        if (st == QW_OK) {
            json_object_foreach((json_t *)map, key, value) {
                if (!json_is_string(value)) {
                    st = qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                                    "%s: the shard of tensor \"%s\" is not a string", index_path,
                                    key);
                    break;
                }
                bool seen = false;
                const char *shard = json_string_value(value);
                const char *k2;
                json_t *v2;
                json_object_foreach((json_t *)map, k2, v2) {
                    if (k2 == key) break;
                    if (strcmp(json_string_value(v2), shard) == 0) {
                        seen = true;
                        break;
                    }
                }
                if (seen) continue;
                st = open_shard(m, dir, shard, map, err);
                if (st != QW_OK) break;
            }
        }
        if (st == QW_OK) {
            json_object_foreach((json_t *)map, key, value) {
                if (!qw_model_find(m, key)) {
                    st = qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                                    "%s: tensor \"%s\" is listed in the index but not found in %s",
                                    index_path, key, json_string_value(value));
                    break;
                }
            }
        }
        json_decref(index);
    } else if (qw_path_is_file(single_path)) {
        qw_safetensors **shards = qw_malloc_array(1, sizeof *shards);
        if (!shards) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        } else {
            m->shards = shards;
            st = qw_safetensors_open(single_path, &m->shards[0], err);
            if (st == QW_OK) {
                m->n_shards = 1;
                st = add_shard_tensors(m, m->shards[0], NULL, NULL, err);
            }
        }
    } else {
        char *bin = qw_path_join(dir, "pytorch_model.bin");
        char *bin_index = qw_path_join(dir, "pytorch_model.bin.index.json");
        bool has_bin = (bin && qw_path_exists(bin)) || (bin_index && qw_path_exists(bin_index));
        qw_free(bin);
        qw_free(bin_index);
        st = has_bin ? qw_fail(err, QW_ERR_UNSUPPORTED_INPUT,
                               "%s: has only PyTorch .bin weights; qwodel reads safetensors "
                               "(loading .bin files can run arbitrary code). Convert them to "
                               "safetensors first.", dir)
                     : qw_fail(err, QW_ERR_NOT_FOUND,
                               "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    qw_free(index_path);
    qw_free(single_path);
    return st;
}

/* generation_config.json is optional; when present it must be a valid object. */
static qw_status open_generation_config(qw_model *m, const char *dir, qw_error *err) {
    char *path = qw_path_join(dir, "generation_config.json");
    if (!path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = QW_OK;
    if (qw_path_is_file(path)) {
        st = qw_json_load_file(path, CONFIG_MAX_BYTES, &m->generation_config, err);
        if (st == QW_OK && !json_is_object(m->generation_config)) {
            st = qw_fail(err, QW_ERR_CORRUPT, "%s: not a JSON object", path);
        }
    }
    qw_free(path);
    return st;
}

/* bos/eos ids that the tokenizer files do not name, from generation_config.json (where
 * eos_token_id may be a list: the first is the one GGUF keeps). */
static void fill_specials_from_generation_config(qw_model *m) {
    static const struct {
        const char *key;
        qw_special_token which;
    } keys[] = {{"bos_token_id", QW_SPECIAL_BOS}, {"eos_token_id", QW_SPECIAL_EOS},
                {"pad_token_id", QW_SPECIAL_PAD}};
    if (!m->generation_config || !m->vocab) return;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const json_t *v = json_object_get(m->generation_config, keys[i].key);
        if (json_is_array(v)) v = json_array_get(v, 0);
        int64_t id;
        if (m->vocab->special[keys[i].which] < 0 && qw_json_integer_value(v, &id) && id >= 0 &&
            id < (int64_t)m->vocab->n_tokens) {
            m->vocab->special[keys[i].which] = id;
        }
    }
}

/* The catalog entry the row maps to gguf_name ("token_embd.weight"), whatever prefix a
 * multimodal checkpoint gives it; NULL if none. */
static qw_model_tensor *find_mapped(qw_model *m, const char *gguf_name) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        char name[256];
        qw_transform transform;
        bool drop;
        if (qw_arch_map_tensor(m->arch, &m->hparams, m->tensors[i].name, name, sizeof name,
                               &transform, &drop, NULL) == QW_OK &&
            !drop && strcmp(name, gguf_name) == 0) {
            return &m->tensors[i];
        }
    }
    return NULL;
}

/* Tensors of the other models in a multimodal checkpoint are left out of every plan: say so
 * once, since the output then cannot see images. */
static void log_skipped_modules(const qw_model *m, qw_reporter *r) {
    size_t n = 0;
    const char *first = NULL;
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (!qw_arch_is_skipped_module(m->arch, m->tensors[i].name)) continue;
        if (!first) first = m->tensors[i].name;
        n++;
    }
    if (n) {
        qw_log(r, QW_LOG_WARNING, "%s: %zu tensors of the vision tower and projector (e.g. "
               "\"%s\") are skipped: only the text model is converted", m->path, n, first);
    }
}

/* How many embedding rows llama.cpp's converter keeps (Gemma 3 checkpoints have 64 rows past
 * the tokenizer). Its count: with a tokenizer.model, the vocab_size of the config (which it pads
 * the SentencePiece pieces to); otherwise tokenizer.json's model.vocab entries plus its
 * added_tokens entries, an added token that is also in the vocabulary counting twice. *out is 0
 * when it cannot tell (nothing is trimmed). */
static qw_status tokenizer_rows(const qw_model *m, const char *dir, int64_t *out,
                                qw_error *err) {
    *out = 0;
    char *spm = qw_path_join(dir, "tokenizer.model");
    char *tj_path = qw_path_join(dir, "tokenizer.json");
    qw_status st = QW_OK;
    if (!spm || !tj_path) {
        st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    } else if (qw_path_is_file(spm)) {
        *out = m->hparams.vocab_size;
    } else if (qw_path_is_file(tj_path)) {
        json_t *tj = NULL;
        st = qw_json_load_file(tj_path, TOKENIZER_MAX_BYTES, &tj, err);
        const json_t *vocab = json_object_get(json_object_get(tj, "model"), "vocab");
        const json_t *added = json_object_get(tj, "added_tokens");
        /* malformed files are reported, with the key, by the tokenizer reader */
        if (st == QW_OK && (json_is_object(vocab) || json_is_array(vocab))) {
            size_t n = json_is_object(vocab) ? json_object_size(vocab) : json_array_size(vocab);
            *out = (int64_t)(n + (json_is_array(added) ? json_array_size(added) : 0));
        }
        json_decref(tj);
    }
    qw_free(spm);
    qw_free(tj_path);
    return st;
}

/* Keeps the first `rows` rows of a 2-D catalog entry. */
static void trim_rows(qw_model *m, qw_model_tensor *t, int64_t rows) {
    uint64_t row_bytes = qw_qtype_row_bytes(t->type, t->ne[0]);
    m->n_params -= (uint64_t)(t->ne[1] - rows) * (uint64_t)t->ne[0];
    t->ne[1] = rows;
    t->n_rows = rows;
    t->bytes = row_bytes * (uint64_t)rows;
}

static qw_status open_hf(qw_model *m, const char *dir, qw_reporter *r, qw_error *err) {
    m->kind = QW_SOURCE_HF_DIR;
    m->input_format = "safetensors";
    char *config_path = qw_path_join(dir, "config.json");
    if (!config_path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_json_load_file(config_path, CONFIG_MAX_BYTES, &m->config, err);
    if (st == QW_OK && !json_is_object(m->config)) {
        st = qw_fail(err, QW_ERR_CORRUPT, "%s: not a JSON object", config_path);
    }
    if (st == QW_OK) st = qw_arch_from_config(m->config, config_path, &m->arch, err);
    json_t *text_config = NULL;
    bool nested = false;
    if (st == QW_OK) {
        st = qw_arch_text_config(m->arch, m->config, config_path, &text_config, &nested, err);
    }
    if (st == QW_OK) {
        /* errors in a multimodal config name the object the key sits in */
        char *label = nested ? qw_sprintf("%s (\"%s\")", config_path, m->arch->nested_key)
                             : qw_strdup(config_path);
        st = label ? qw_hparams_from_config(text_config, label, &m->hparams, err)
                   : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        qw_free(label);
    }
    json_decref(text_config);
    qw_free(config_path);
    QW_TRY(st);
    m->multimodal = nested;
    m->arch_name = qw_strdup(m->arch->name);
    if (!m->arch_name) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_log(r, QW_LOG_INFO, "%s: %s architecture, %lld layers, hidden size %lld", dir,
           m->arch->name, (long long)m->hparams.n_layer, (long long)m->hparams.n_embd);

    QW_TRY(open_generation_config(m, dir, err));
    QW_TRY(open_weights(m, dir, err));

    log_skipped_modules(m, r);
    qw_model_tensor *embd = find_mapped(m, "token_embd.weight");
    qw_model_tensor *head = find_mapped(m, "output.weight");
    int64_t rows = embd ? embd->ne[1] : m->hparams.vocab_size;
    if (rows <= 0 || rows > (int64_t)UINT32_MAX) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: cannot tell the vocabulary size (no "
                       "model.embed_tokens.weight and no vocab_size)", dir);
    }
    /* a default that does not fit (Gemma 3's text_config may leave hidden_size out) would
     * otherwise give a GGUF that llama.cpp refuses */
    if (embd && embd->ne[0] != m->hparams.n_embd) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "hidden_size", -1,
                          "%s: config.json's hidden_size is %lld but tensor \"%s\" has rows of "
                          "%lld", dir, (long long)m->hparams.n_embd, embd->name,
                          (long long)embd->ne[0]);
    }
    if (embd && m->arch->trims_embd_to_tokenizer) {
        int64_t keep = 0;
        QW_TRY(tokenizer_rows(m, dir, &keep, err));
        if (keep > 0 && keep < rows) {
            qw_log(r, QW_LOG_INFO, "%s: %lld embedding rows past the tokenizer's %lld are "
                   "dropped, as llama.cpp's converter does", dir, (long long)(rows - keep),
                   (long long)keep);
            trim_rows(m, embd, keep);
            /* llama.cpp wants output.weight with one row per token as well; the converter
             * leaves an untied lm_head whole, which llama.cpp then refuses to load */
            if (head && head->n_dims == 2 && head->ne[1] > keep) trim_rows(m, head, keep);
            rows = keep;
        }
    }
    m->hparams.tied_embeddings = head == NULL;
    if (m->hparams.vocab_size == 0) m->hparams.vocab_size = rows;
    QW_TRY(qw_vocab_load_hf(dir, m->config, (uint32_t)rows, &m->vocab, err));
    fill_specials_from_generation_config(m);
    qw_log(r, QW_LOG_INFO, "%s: %zu tensors in %zu file(s), tokenizer %s/%s with %u tokens", dir,
           m->n_tensors, m->n_shards, m->vocab->model, m->vocab->pre, m->vocab->n_tokens);
    return QW_OK;
}

/* ---- GGUF files ----------------------------------------------------------------------------- */

static qw_status open_gguf(qw_model *m, const char *path, qw_reporter *r, qw_error *err) {
    m->kind = QW_SOURCE_GGUF;
    m->input_format = "gguf";
    QW_TRY(qw_gguf_open(path, &m->gguf, err));
    m->arch_name = qw_gguf_get_string(m->gguf, "general.architecture");
    if (!m->arch_name || !*m->arch_name) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "general.architecture", -1,
                          "%s: \"general.architecture\" is missing or not a string", path);
    }
    uint64_t split_count = 0;
    if (qw_gguf_get_u64(m->gguf, "split.count", &split_count) && split_count > 1) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "split.count", -1,
                          "%s: is shard 1 of a %llu-file split GGUF; merge the shards first "
                          "(llama-gguf-split --merge)", path, (unsigned long long)split_count);
    }
    m->arch = qw_arch_find(m->arch_name);
    QW_TRY(qw_hparams_from_gguf(m->gguf, m->arch_name, &m->hparams, err));
    for (size_t i = 0; i < qw_gguf_tensor_count(m->gguf); i++) {
        const qw_gguf_tensor *g = qw_gguf_tensor_at(m->gguf, i);
        const qw_qtype_info *info = qw_qtype_get(g->type);
        qw_model_tensor t = {0};
        t.name = g->name;
        t.type = g->type;
        t.readable = info->dequantize != NULL;
        t.dtype_name = info->name;
        t.n_dims = g->n_dims > 0 ? g->n_dims : 1;
        for (int d = 0; d < 4; d++) t.ne[d] = g->ne[d];
        int64_t n = 1;
        for (int d = 0; d < 4; d++) n *= g->ne[d];
        t.n_rows = g->ne[0] ? n / g->ne[0] : 0;
        t.data = g->data;
        t.bytes = g->bytes;
        t.file = qw_gguf_path(m->gguf);
        t.mapped = true;
        QW_TRY(add_tensor(m, &t, err));
    }
    m->hparams.tied_embeddings = qw_model_find(m, "output.weight") == NULL;
    qw_log(r, QW_LOG_INFO, "%s: GGUF v%u, %s architecture, %zu tensors, %zu metadata keys", path,
           qw_gguf_version(m->gguf), m->arch_name, m->n_tensors, qw_gguf_kv_count(m->gguf));
    return QW_OK;
}

/* ---- common --------------------------------------------------------------------------------- */

qw_status qw_model_open(const char *path, qw_reporter *r, qw_model **out, qw_error *err) {
    *out = NULL;
    if (!path || !*path) return qw_fail(err, QW_ERR_INVALID_ARG, "model path is empty");
    qw_model *m = qw_calloc(1, sizeof *m);
    if (!m) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    m->path = qw_strdup(path);
    char *base = qw_path_basename(path);
    if (base && qw_str_ends_with(base, ".gguf") && strlen(base) > 5) base[strlen(base) - 5] = '\0';
    m->name = base;
    qw_status st;
    if (!m->path || !m->name) {
        st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    } else if (qw_path_is_dir(path)) {
        char *config = qw_path_join(path, "config.json");
        bool has_config = config && qw_path_is_file(config);
        qw_free(config);
        st = has_config ? open_hf(m, path, r, err)
                        : qw_fail(err, QW_ERR_NOT_FOUND,
                                  "%s: directory has no config.json, so it is not a HuggingFace "
                                  "model directory", path);
    } else if (qw_path_is_file(path)) {
        st = qw_str_ends_with(path, ".gguf") || qw_str_ends_with(path, ".GGUF")
                 ? open_gguf(m, path, r, err)
                 : qw_fail(err, QW_ERR_INVALID_ARG,
                           "%s: not a model: expected a HuggingFace model directory or a .gguf "
                           "file", path);
    } else {
        st = qw_fail(err, QW_ERR_NOT_FOUND, "%s: no such file or directory", path);
    }
    if (st != QW_OK) {
        qw_model_close(m);
        return st;
    }
    *out = m;
    return QW_OK;
}

qw_status qw_model_open_any(const char *path, const char *hub_token, qw_reporter *r,
                            qw_model **out, qw_error *err) {
    *out = NULL;
    if (!path || !qw_hub_is_model_id(path)) return qw_model_open(path, r, out, err);
    /* A Hub ID becomes its snapshot directory in the cache, opened as any HF directory; the
     * model keeps that directory as its path (backends read files next to config.json) and takes
     * its name from the ID, since the directory is named by a commit hash. */
    qw_hub_id id;
    QW_TRY(qw_hub_id_parse(path, &id, err));
    char *dir = NULL;
    qw_status st = qw_hub_snapshot(path, hub_token, r, &dir, err);
    if (st == QW_ERR_NOT_FOUND) { /* it may have been meant as a local path */
        qw_error_prefix(err, "%s is no local file or directory, so it was looked up as a "
                        "HuggingFace Hub model ID: ", path);
    }
    if (st != QW_OK) return st;
    st = qw_model_open(dir, r, out, err);
    qw_free(dir);
    if (st != QW_OK) return st;
    char *name = qw_strdup(id.name);
    if (!name) {
        qw_model_close(*out);
        *out = NULL;
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    qw_free((*out)->name);
    (*out)->name = name;
    return QW_OK;
}

void qw_model_close(qw_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_shards; i++) qw_safetensors_close(m->shards[i]);
    qw_free(m->shards);
    qw_free(m->tensors);
    qw_gguf_close(m->gguf);
    qw_vocab_free(m->vocab);
    json_decref(m->config);
    json_decref(m->generation_config);
    qw_free(m->arch_name);
    qw_free(m->path);
    qw_free(m->name);
    qw_free(m);
}

const qw_model_tensor *qw_model_find(const qw_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    }
    return NULL;
}

qw_status qw_model_read_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows,
                             float *dst, qw_error *err) {
    const qw_qtype_info *info = qw_qtype_get(t->type);
    if (!t->readable || !info->dequantize) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, t->name, -1,
                          "%s: tensor \"%s\" is stored as %s, which qwodel cannot convert",
                          t->file, t->name, t->dtype_name);
    }
    if (row_begin < 0 || n_rows < 0 || row_begin + n_rows > t->n_rows) {
        return qw_fail_at(err, QW_ERR_INTERNAL, t->name, -1, "rows out of range for \"%s\"",
                          t->name);
    }
    uint64_t row_bytes = qw_qtype_row_bytes(t->type, t->ne[0]);
    info->dequantize(t->data + (uint64_t)row_begin * row_bytes, dst, n_rows * t->ne[0]);
    return QW_OK;
}

void qw_model_release_rows(const qw_model_tensor *t, int64_t row_begin, int64_t n_rows) {
    if (!t->mapped || row_begin < 0 || n_rows <= 0 || row_begin + n_rows > t->n_rows) return;
    uint64_t row_bytes = qw_qtype_row_bytes(t->type, t->ne[0]);
    qw_mapped_release(t->data + (uint64_t)row_begin * row_bytes,
                      (size_t)((uint64_t)n_rows * row_bytes));
}
