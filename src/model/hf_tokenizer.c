/*
 * A GGUF file's tokenizer (tokenizer.ggml.*) written back as HuggingFace tokenizer.json and
 * tokenizer_config.json, for backends whose output is an HF directory.
 *
 * GGUF keeps the vocabulary (tokens, types, SentencePiece scores or BPE merges) and names the text
 * pipeline (`tokenizer.ggml.pre`); HF spells the pipeline out. PIPELINES has one row per name
 * whose HF pipeline is known (the same facts the tokenizer layer's forward table holds, read the
 * other way). SentencePiece vocabularies get BPE merges rebuilt from their scores the way
 * transformers converts a SentencePiece model: every split of a token into two vocabulary
 * tokens, ranked by the joined token's score (ties: token id, then the two halves' ids).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model.h"

#define SPACE_MARK "\xE2\x96\x81" /* U+2581, SentencePiece's visible space */
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* ---- pipeline components -------------------------------------------------------------------- */

static json_t *byte_level(bool use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                     "trim_offsets", 1, "use_regex", use_regex);
}

static json_t *split_then_byte_level(const char *regex) {
    return json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                     "pretokenizers", "type", "Split", "pattern", "Regex", regex, "behavior",
                     "Isolated", "invert", 0, byte_level(false));
}

static json_t *pre_llama3(void) { return split_then_byte_level(RE_LLAMA3); }
static json_t *pre_qwen2(void) { return split_then_byte_level(RE_QWEN2); }
static json_t *pre_gpt2(void) { return byte_level(true); }
static json_t *pre_smollm(void) {
    return json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                     "Digits", "individual_digits", 1, byte_level(true));
}
static json_t *none(void) { return json_null(); }
static json_t *norm_nfc(void) { return json_pack("{s:s}", "type", "NFC"); }
static json_t *norm_spm_prefix(void) {
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                     "normalizers", "type", "Prepend", "prepend", SPACE_MARK, "type", "Replace",
                     "pattern", "String", " ", "content", SPACE_MARK);
}
static json_t *norm_spm(void) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ",
                     "content", SPACE_MARK);
}
static json_t *dec_byte_level(void) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                     "trim_offsets", 1, "use_regex", 1);
}
static json_t *spm_decoder(bool strip) {
    json_t *d = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]}", "type", "Sequence",
                          "decoders", "type", "Replace", "pattern", "String", SPACE_MARK,
                          "content", " ", "type", "ByteFallback", "type", "Fuse");
    if (d && strip) {
        json_array_append_new(json_object_get(d, "decoders"),
                              json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                        "start", 1, "stop", 0));
    }
    return d;
}
static json_t *dec_spm_prefix(void) { return spm_decoder(true); }
static json_t *dec_spm(void) { return spm_decoder(false); }

typedef struct pipeline {
    const char *pre;           /* tokenizer.ggml.pre */
    const char *model;         /* tokenizer.ggml.model */
    int add_space_prefix;      /* SentencePiece: 1 or 0; -1 for byte-level rows */
    bool ignore_merges;
    json_t *(*normalizer)(void);
    json_t *(*pre_tokenizer)(void);
    json_t *(*decoder)(void);
} pipeline;

static const pipeline PIPELINES[] = {
    {"llama-bpe", "gpt2", -1, true, none, pre_llama3, dec_byte_level},
    {"smaug-bpe", "gpt2", -1, false, none, pre_llama3, dec_byte_level},
    {"qwen2", "gpt2", -1, false, norm_nfc, pre_qwen2, dec_byte_level},
    {"gpt-2", "gpt2", -1, false, none, pre_gpt2, dec_byte_level},
    {"smollm", "gpt2", -1, false, none, pre_smollm, dec_byte_level},
    /* SentencePiece BPE in transformers' legacy conversion (Llama-2, Mistral v0.1) */
    {"default", "llama", 1, false, norm_spm_prefix, none, dec_spm_prefix},
    {"default", "llama", 0, false, norm_spm, none, dec_spm},
};

/* ---- the GGUF vocabulary -------------------------------------------------------------------- */

typedef struct gguf_vocab {
    const char *path;
    bool spm;
    uint64_t n;
    const qw_gguf_str *tokens;
    const int32_t *types;   /* n, or NULL (all normal) */
    const float *scores;    /* n (SentencePiece) */
    uint64_t n_merges;
    const qw_gguf_str *merges;
} gguf_vocab;

static qw_status get_array(const qw_gguf *g, const char *key, qw_gguf_type elem, bool required,
                           uint64_t want_count, const qw_gguf_value **out, qw_error *err) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) {
        return required ? qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: \"%s\" is missing",
                                     qw_gguf_path(g), key)
                        : QW_OK;
    }
    if (kv->value.type != QW_GGUF_ARRAY || kv->value.v.arr.elem_type != elem ||
        (want_count && kv->value.v.arr.count != want_count)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: \"%s\" must be an array of %llu %s values", qw_gguf_path(g), key,
                          (unsigned long long)want_count, qw_gguf_type_name(elem));
    }
    *out = &kv->value;
    return QW_OK;
}

/* JSON text is UTF-8, so a token that is not (a damaged file: GGUF strings are UTF-8 too) has no
 * place in tokenizer.json; jansson's own check decides, as it does when the file is written. */
static qw_status require_utf8(const gguf_vocab *v, const char *key, const qw_gguf_str *strs,
                              uint64_t n, qw_error *err) {
    for (uint64_t i = 0; i < n; i++) {
        json_t *probe = json_stringn(strs[i].data, (size_t)strs[i].len);
        if (!probe) {
            return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                              "%s: %s[%llu] is not valid UTF-8 (the vocabulary is damaged)",
                              v->path, key, (unsigned long long)i);
        }
        json_decref(probe);
    }
    return QW_OK;
}

static qw_status read_vocab(const qw_gguf *g, gguf_vocab *v, qw_error *err) {
    const qw_gguf_value *tokens, *types, *scores, *merges;
    QW_TRY(get_array(g, "tokenizer.ggml.tokens", QW_GGUF_STRING, true, 0, &tokens, err));
    v->n = tokens->v.arr.count;
    v->tokens = tokens->v.arr.strs;
    if (v->n == 0 || v->n > INT32_MAX) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "tokenizer.ggml.tokens", -1,
                          "%s: %llu tokens", v->path, (unsigned long long)v->n);
    }
    QW_TRY(get_array(g, "tokenizer.ggml.token_type", QW_GGUF_INT32, false, v->n, &types, err));
    v->types = types ? types->v.arr.data : NULL;
    QW_TRY(get_array(g, "tokenizer.ggml.scores", QW_GGUF_FLOAT32, v->spm, v->n, &scores, err));
    v->scores = scores ? scores->v.arr.data : NULL;
    QW_TRY(get_array(g, "tokenizer.ggml.merges", QW_GGUF_STRING, !v->spm, 0, &merges, err));
    v->n_merges = merges ? merges->v.arr.count : 0;
    v->merges = merges ? merges->v.arr.strs : NULL;
    QW_TRY(require_utf8(v, "tokenizer.ggml.tokens", v->tokens, v->n, err));
    return require_utf8(v, "tokenizer.ggml.merges", v->merges, v->n_merges, err);
}

static int32_t token_type(const gguf_vocab *v, uint64_t id) {
    int32_t t = QW_TOKEN_NORMAL;
    if (v->types) memcpy(&t, (const char *)v->types + id * 4, 4); /* unaligned in the file */
    return t;
}

static float token_score(const gguf_vocab *v, uint64_t id) {
    float s;
    memcpy(&s, (const char *)v->scores + id * 4, 4);
    return s;
}

/* Padding rows qwodel and llama.cpp add past the tokenizer ("[PAD123]", unused): not HF tokens. */
static bool is_padding(const gguf_vocab *v, uint64_t id) {
    const qw_gguf_str *s = &v->tokens[id];
    return token_type(v, id) == QW_TOKEN_UNUSED && s->len > 5 && memcmp(s->data, "[PAD", 4) == 0;
}

/* Added tokens: control, user-defined and unknown ones, as HF lists them apart. */
static bool is_added(const gguf_vocab *v, uint64_t id) {
    int32_t t = token_type(v, id);
    return t == QW_TOKEN_CONTROL || t == QW_TOKEN_USER_DEFINED || t == QW_TOKEN_UNKNOWN;
}

static json_t *str_json(const qw_gguf_str *s) {
    return json_stringn_nocheck(s->data, (size_t)s->len);
}

/* ---- SentencePiece merges ------------------------------------------------------------------- */

/* Open addressing over token ids, keyed by token text. */
typedef struct text_index {
    const gguf_vocab *v;
    int64_t *slots; /* -1: empty */
    uint64_t mask;
} text_index;

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static bool index_build(text_index *x, const gguf_vocab *v) {
    uint64_t cap = 16;
    while (cap < v->n * 2) cap <<= 1;
    x->v = v;
    x->mask = cap - 1;
    x->slots = qw_malloc_array((size_t)cap, sizeof *x->slots);
    if (!x->slots) return false;
    for (uint64_t i = 0; i < cap; i++) x->slots[i] = -1;
    for (uint64_t id = 0; id < v->n; id++) {
        if (is_padding(v, id)) continue;
        uint64_t h = hash_bytes(v->tokens[id].data, (size_t)v->tokens[id].len) & x->mask;
        while (x->slots[h] >= 0) {
            const qw_gguf_str *o = &v->tokens[x->slots[h]];
            if (o->len == v->tokens[id].len && memcmp(o->data, v->tokens[id].data, o->len) == 0) {
                break; /* a repeated text keeps its first id (real vocabularies have none) */
            }
            h = (h + 1) & x->mask;
        }
        if (x->slots[h] < 0) x->slots[h] = (int64_t)id;
    }
    return true;
}

static int64_t index_find(const text_index *x, const char *p, size_t n) {
    uint64_t h = hash_bytes(p, n) & x->mask;
    while (x->slots[h] >= 0) {
        const qw_gguf_str *o = &x->v->tokens[x->slots[h]];
        if (o->len == n && memcmp(o->data, p, n) == 0) return x->slots[h];
        h = (h + 1) & x->mask;
    }
    return -1;
}

typedef struct spm_merge {
    float score;
    int32_t token, left, right;
} spm_merge;

static int cmp_merge(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->token != y->token) return x->token < y->token ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return x->right < y->right ? -1 : x->right > y->right;
}

static qw_status spm_merges(const gguf_vocab *v, json_t *out, qw_error *err) {
    text_index x = {0};
    spm_merge *m = NULL;
    size_t n = 0, cap = 0;
    qw_status st = index_build(&x, v) ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (uint64_t id = 0; st == QW_OK && id < v->n; id++) {
        if (token_type(v, id) != QW_TOKEN_NORMAL) continue;
        const char *s = v->tokens[id].data;
        size_t len = (size_t)v->tokens[id].len;
        /* split between UTF-8 characters, as Python slices a str */
        for (size_t cut = 1; st == QW_OK && cut < len; cut++) {
            if (((uint8_t)s[cut] & 0xC0) == 0x80) continue;
            int64_t l = index_find(&x, s, cut), r = index_find(&x, s + cut, len - cut);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                spm_merge *p = qw_realloc_array(m, cap, sizeof *m);
                if (!p) {
                    st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
                    break;
                }
                m = p;
            }
            m[n++] = (spm_merge){token_score(v, id), (int32_t)id, (int32_t)l, (int32_t)r};
        }
    }
    /* no token may split into two others: m is then NULL, which qsort must not be given */
    if (st == QW_OK && n > 1) qsort(m, n, sizeof *m, cmp_merge);
    for (size_t i = 0; st == QW_OK && i < n; i++) {
        json_t *pair = json_pack("[o, o]", str_json(&v->tokens[m[i].left]),
                                 str_json(&v->tokens[m[i].right]));
        if (!pair || json_array_append_new(out, pair) != 0) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
    }
    qw_free(m);
    qw_free(x.slots);
    return st;
}

/* ---- tokenizer.json ------------------------------------------------------------------------- */

static int64_t special_id(const qw_gguf *g, const char *which, uint64_t n) {
    char key[96];
    snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", which);
    uint64_t id;
    return qw_gguf_get_u64(g, key, &id) && id < n ? (int64_t)id : -1;
}

static bool flag(const qw_gguf *g, const char *key, bool dflt) {
    bool b;
    return qw_gguf_get_bool(g, key, &b) ? b : dflt;
}

/* TemplateProcessing that adds bos (and eos) as the GGUF's add_bos/add_eos flags say; NULL when
 * neither is added. */
static json_t *post_processor(const qw_gguf *g, const gguf_vocab *v) {
    int64_t bos = special_id(g, "bos", v->n), eos = special_id(g, "eos", v->n);
    bool add_bos = bos >= 0 && flag(g, "tokenizer.ggml.add_bos_token", false);
    bool add_eos = eos >= 0 && flag(g, "tokenizer.ggml.add_eos_token", false);
    if (!add_bos && !add_eos) return json_null();
    json_t *single = json_array(), *pair = json_array(), *specials = json_object();
    for (int part = 0; part < 2; part++) {
        json_t *seq = part ? pair : single;
        for (int k = 0; k < 1 + part; k++) {
            if (add_bos) {
                json_array_append_new(seq, json_pack("{s:{s:o, s:i}}", "SpecialToken", "id",
                                                     str_json(&v->tokens[bos]), "type_id", k));
            }
            json_array_append_new(seq, json_pack("{s:{s:s, s:i}}", "Sequence", "id",
                                                 k ? "B" : "A", "type_id", k));
            if (add_eos) {
                json_array_append_new(seq, json_pack("{s:{s:o, s:i}}", "SpecialToken", "id",
                                                     str_json(&v->tokens[eos]), "type_id", k));
            }
        }
    }
    const int64_t ids[2] = {add_bos ? bos : -1, add_eos ? eos : -1};
    for (int i = 0; i < 2; i++) {
        if (ids[i] < 0) continue;
        const qw_gguf_str *t = &v->tokens[ids[i]];
        json_t *entry = json_pack("{s:o, s:[I], s:[o]}", "id", str_json(t), "ids",
                                  (json_int_t)ids[i], "tokens", str_json(t));
        char *name = qw_strndup(t->data, (size_t)t->len);
        if (name && entry) json_object_set_new_nocheck(specials, name, entry);
        else json_decref(entry);
        qw_free(name);
    }
    return json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single,
                     "pair", pair, "special_tokens", specials);
}

static const pipeline *find_pipeline(const qw_gguf *g, const char *model, const char *pre) {
    int space = flag(g, "tokenizer.ggml.add_space_prefix", true) ? 1 : 0;
    for (size_t i = 0; i < sizeof PIPELINES / sizeof PIPELINES[0]; i++) {
        const pipeline *p = &PIPELINES[i];
        if (strcmp(p->model, model) == 0 && strcmp(p->pre, pre) == 0 &&
            (p->add_space_prefix < 0 || p->add_space_prefix == space)) {
            return p;
        }
    }
    return NULL;
}

static qw_status build_tokenizer_json(const qw_gguf *g, const pipeline *p, const gguf_vocab *v,
                                      json_t **out, qw_error *err) {
    json_t *added = json_array(), *vocab = json_object(), *merges = json_array();
    bool ok = added && vocab && merges;
    for (uint64_t id = 0; ok && id < v->n; id++) {
        if (is_padding(v, id)) continue;
        if (is_added(v, id)) {
            bool special = token_type(v, id) != QW_TOKEN_USER_DEFINED;
            json_t *a = json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id,
                                  "content", str_json(&v->tokens[id]), "single_word", 0, "lstrip",
                                  0, "rstrip", 0, "normalized", 0, "special", special);
            ok = a && json_array_append_new(added, a) == 0;
            if (!v->spm) continue; /* byte-level vocabularies list added tokens apart */
        }
        char *text = qw_strndup(v->tokens[id].data, (size_t)v->tokens[id].len);
        ok = ok && text &&
             json_object_set_new_nocheck(vocab, text, json_integer((json_int_t)id)) == 0;
        qw_free(text);
    }
    qw_status st = ok ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK && v->spm) st = spm_merges(v, merges, err);
    for (uint64_t i = 0; st == QW_OK && i < v->n_merges; i++) {
        if (json_array_append_new(merges, str_json(&v->merges[i])) != 0) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        }
    }
    if (st != QW_OK) {
        json_decref(added);
        json_decref(vocab);
        json_decref(merges);
        return st;
    }
    int64_t unk = special_id(g, "unknown", v->n);
    json_t *model = json_pack(
        "{s:s, s:n, s:o, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
        "unk_token", v->spm && unk >= 0 ? str_json(&v->tokens[unk]) : json_null(),
        "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", v->spm, "byte_fallback",
        v->spm, "ignore_merges", p->ignore_merges, "vocab", vocab, "merges", merges);
    *out = json_pack("{s:s, s:n, s:n, s:o, s:o, s:o, s:o, s:o, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer",
                     p->normalizer(), "pre_tokenizer", p->pre_tokenizer(), "post_processor",
                     post_processor(g, v), "decoder", p->decoder(), "model", model);
    return *out ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
}

/* tokenizer_config.json: the special tokens by text, the add flags, the chat template. */
static qw_status build_tokenizer_config(const qw_gguf *g, const gguf_vocab *v, int64_t n_ctx,
                                        json_t **out, qw_error *err) {
    static const struct {
        const char *gguf;
        const char *hf;
    } specials[] = {{"bos", "bos_token"}, {"eos", "eos_token"}, {"unknown", "unk_token"},
                    {"padding", "pad_token"}};
    json_t *c = json_object();
    bool ok = c != NULL;
    static const struct {
        const char *gguf;
        const char *hf;
    } flags[] = {{"tokenizer.ggml.add_bos_token", "add_bos_token"},
                 {"tokenizer.ggml.add_eos_token", "add_eos_token"}};
    for (size_t i = 0; ok && i < sizeof flags / sizeof flags[0]; i++) {
        bool b;
        if (qw_gguf_get_bool(g, flags[i].gguf, &b)) { /* absent stays absent */
            ok = json_object_set_new(c, flags[i].hf, json_boolean(b)) == 0;
        }
    }
    for (size_t i = 0; ok && i < sizeof specials / sizeof specials[0]; i++) {
        int64_t id = special_id(g, specials[i].gguf, v->n);
        if (id >= 0) ok = json_object_set_new(c, specials[i].hf, str_json(&v->tokens[id])) == 0;
    }
    char *tmpl = qw_gguf_get_string(g, "tokenizer.chat_template");
    if (ok && tmpl) ok = json_object_set_new(c, "chat_template", json_string_nocheck(tmpl)) == 0;
    qw_free(tmpl);
    ok = ok && json_object_set_new(c, "clean_up_tokenization_spaces", json_false()) == 0;
    if (ok && n_ctx > 0) ok = json_object_set_new(c, "model_max_length", json_integer(n_ctx)) == 0;
    ok = ok && json_object_set_new(c, "tokenizer_class",
                                   json_string("PreTrainedTokenizerFast")) == 0;
    if (!ok) {
        json_decref(c);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    *out = c;
    return QW_OK;
}

static qw_status load_optional(const char *dir, const char *name, json_t **out, qw_error *err) {
    char *path = qw_path_join(dir, name);
    if (!path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = qw_path_is_file(path) ? qw_json_load_file(path, 256u << 20, out, err) : QW_OK;
    qw_free(path);
    return st;
}

qw_status qw_model_hf_tokenizer(const qw_model *m, json_t **tokenizer, json_t **config,
                                qw_error *err) {
    *tokenizer = NULL;
    *config = NULL;
    if (m->kind != QW_SOURCE_GGUF) {
        qw_status st = load_optional(m->path, "tokenizer.json", tokenizer, err);
        if (st == QW_OK) st = load_optional(m->path, "tokenizer_config.json", config, err);
        if (st != QW_OK) {
            json_decref(*tokenizer);
            *tokenizer = NULL;
        }
        return st;
    }
    const qw_gguf *g = m->gguf;
    char *model = qw_gguf_get_string(g, "tokenizer.ggml.model");
    char *pre = qw_gguf_get_string(g, "tokenizer.ggml.pre");
    const pipeline *p = model ? find_pipeline(g, model, pre ? pre : "default") : NULL;
    qw_status st = QW_OK;
    if (!model) {
        st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "tokenizer.ggml.model", -1,
                        "%s: has no tokenizer (\"tokenizer.ggml.model\" is missing)", m->path);
    } else if (!p) {
        st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "tokenizer.ggml.pre", -1,
                        "%s: tokenizer \"%s\" with pre-tokenizer \"%s\" has no HuggingFace "
                        "tokenizer.json form in qwodel", m->path, model, pre ? pre : "default");
    }
    gguf_vocab v = {.path = m->path, .spm = p && strcmp(p->model, "llama") == 0};
    if (st == QW_OK) st = read_vocab(g, &v, err);
    if (st == QW_OK) st = build_tokenizer_json(g, p, &v, tokenizer, err);
    if (st == QW_OK) st = build_tokenizer_config(g, &v, m->hparams.n_ctx, config, err);
    if (st != QW_OK) {
        json_decref(*tokenizer);
        *tokenizer = NULL;
    }
    qw_free(model);
    qw_free(pre);
    return st;
}
