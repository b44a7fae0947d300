/*
 * vocab.c — a HF model directory's vocabulary, as llama.cpp's converter (convert_hf_to_gguf.py
 * with gguf-py's SpecialVocab) writes it into GGUF.
 *
 * Files read from the directory:
 *   tokenizer.json          vocabulary, merges, normalizer/pre-tokenizer, added tokens,
 *                           post-processor (vocab_hf.c)
 *   tokenizer.model         SentencePiece model, read only when there is no tokenizer.json
 *                           (spm_model.c), with added_tokens.json
 *   tokenizer_config.json   special-token texts, add_bos_token/add_eos_token, chat_template,
 *                           added_tokens_decoder (SentencePiece only)
 *   chat_template.jinja (+ additional_chat_templates/NAME.jinja), chat_template.json
 * and config.json, already parsed by the caller, for fallback special-token ids.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "json.h"
#include "vocab_private.h"

#define MAX_TOKENIZER_JSON_BYTES ((size_t)1 << 30)
#define MAX_CONFIG_BYTES ((size_t)64 << 20)

/* ---- the special tokens --------------------------------------------------------------------- */

typedef struct special_row {
    qw_special_token which;
    const char *gguf_key; /* tokenizer.ggml.<gguf_key>_token_id */
    const char *hf_name;  /* tokenizer_config "<hf_name>_token", config.json "<hf_name>_token_id";
                             NULL: the converter never looks it up */
    bool by_default;      /* in SpecialVocab's default types; eot/eom only when a post-processor
                             template moves eos */
} special_row;

static const special_row SPECIALS[QW_SPECIAL_COUNT] = {
    {QW_SPECIAL_BOS, "bos", "bos", true},
    {QW_SPECIAL_EOS, "eos", "eos", true},
    {QW_SPECIAL_UNK, "unknown", "unk", true},
    {QW_SPECIAL_SEP, "seperator", "sep", true},
    {QW_SPECIAL_PAD, "padding", "pad", true},
    {QW_SPECIAL_MASK, "mask", "mask", true},
    {QW_SPECIAL_EOT, "eot", "eot", false},
    {QW_SPECIAL_EOM, "eom", "eom", false},
    {QW_SPECIAL_FIM_PRE, "fim_pre", NULL, false},
    {QW_SPECIAL_FIM_SUF, "fim_suf", NULL, false},
    {QW_SPECIAL_FIM_MID, "fim_mid", NULL, false},
    {QW_SPECIAL_FIM_PAD, "fim_pad", NULL, false},
    {QW_SPECIAL_FIM_REP, "fim_rep", NULL, false},
    {QW_SPECIAL_FIM_SEP, "fim_sep", NULL, false},
};

const char *qw_special_token_key(qw_special_token which) {
    if ((unsigned)which >= QW_SPECIAL_COUNT) return NULL;
    return SPECIALS[which].gguf_key;
}

/* ---- named chat templates ------------------------------------------------------------------- */

/* Adds or replaces (same name: the later one wins, as in the converter) a non-default template;
 * GGUF stores each as tokenizer.chat_template.<name>. */
static bool named_put(qw_vocab *v, const char *name, const char *text) {
    for (size_t i = 0; i < v->n_named_templates; i++) {
        if (strcmp(v->template_names[i], name) == 0) {
            char *copy = qw_strdup(text);
            if (!copy) return false;
            qw_free(v->named_templates[i]);
            v->named_templates[i] = copy;
            return true;
        }
    }
    size_t n = v->n_named_templates;
    char **names = qw_realloc_array(v->template_names, n + 1, sizeof *names);
    if (!names) return false;
    v->template_names = names;
    char **templates = qw_realloc_array(v->named_templates, n + 1, sizeof *templates);
    if (!templates) return false;
    v->named_templates = templates;
    v->template_names[n] = qw_strdup(name);
    v->named_templates[n] = qw_strdup(text);
    if (!v->template_names[n] || !v->named_templates[n]) {
        qw_free(v->template_names[n]);
        qw_free(v->named_templates[n]);
        return false;
    }
    v->n_named_templates++;
    return true;
}

/* ---- loading -------------------------------------------------------------------------------- */

typedef struct load_ctx {
    const char *dir;
    char *tj_path, *tm_path, *tc_path, *jinja_path, *ct_json_path, *added_path, *extra_dir;
    json_t *tj;             /* tokenizer.json, or NULL */
    json_t *tc;             /* tokenizer_config.json, or NULL */
    const json_t *config;   /* config.json (the caller's), or NULL */
    qw_error *err;
} load_ctx;

static void load_ctx_free(load_ctx *c) {
    qw_free(c->tj_path);
    qw_free(c->tm_path);
    qw_free(c->tc_path);
    qw_free(c->jinja_path);
    qw_free(c->ct_json_path);
    qw_free(c->added_path);
    qw_free(c->extra_dir);
    json_decref(c->tj);
    json_decref(c->tc);
}

static qw_status oom(const load_ctx *c) {
    return qw_fail(c->err, QW_ERR_NO_MEMORY, "%s: out of memory loading the vocabulary", c->dir);
}

/* A tokenizer_config "x_token" entry: a string, {"content": string} (older AddedToken form),
 * or absent/null (*text NULL). */
static qw_status config_token_text(const load_ctx *c, const char *key, const char **text) {
    *text = NULL;
    const json_t *v = json_object_get(c->tc, key);
    if (!v || json_is_null(v)) return QW_OK;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, -1,
                          "%s: key \"%s\" must be a string or an object with a string "
                          "\"content\"",
                          c->tc_path, key);
    }
    *text = json_string_value(v);
    return QW_OK;
}

static bool same(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* First id whose text is `text`: tokenizer.json's added_tokens (as the converter), then the
 * vocabulary itself (which a tokenizer.model directory has only). */
static int64_t find_token(const load_ctx *c, const qw_vocab *v, const char *text) {
    const json_t *added = c->tj ? json_object_get(c->tj, "added_tokens") : NULL;
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *tok = json_array_get(added, i);
        int64_t id;
        if (same(json_string_value(json_object_get(tok, "content")), text) &&
            qw_json_integer_value(json_object_get(tok, "id"), &id)) {
            return id;
        }
    }
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        if (v->types[i] != QW_TOKEN_UNUSED && strcmp(v->tokens[i], text) == 0) return i;
    }
    return -1;
}

/* The converter keeps the first id found for a type and drops ids outside the vocabulary. */
static void set_special(qw_vocab *v, qw_special_token which, int64_t id) {
    if (id >= 0 && id < (int64_t)v->n_tokens && v->special[which] < 0) v->special[which] = id;
}

typedef struct special_state {
    const char *text[QW_SPECIAL_COUNT]; /* tokenizer_config texts, as the template may edit them */
    bool enabled[QW_SPECIAL_COUNT];
} special_state;

/* The id text of a template item {"SpecialToken": {"id": text}}, or NULL. */
static const char *template_special(const json_t *item) {
    return json_string_value(json_object_get(json_object_get(item, "SpecialToken"), "id"));
}

/*
 * The converter's reading of the post-processor: RobertaProcessing adds bos and eos; a
 * TemplateProcessing "single" template starting with the bos (or cls) token adds bos, and one
 * ending with a special token adds eos — a trailing token other than eos becomes eos, the old eos
 * becoming eot (or eom); a ByteLevel processor adds neither. tokenizer_config's add_*_token,
 * read later, overrides these.
 */
static void read_post_processor(const load_ctx *c, qw_vocab *v, special_state *s,
                                const char *cls) {
    const json_t *pp = json_object_get(c->tj, "post_processor");
    if (!json_is_object(pp)) return;
    const json_t *list = json_object_get(pp, "processors");
    size_t n = json_is_array(list) ? json_array_size(list) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *proc = json_is_array(list) ? json_array_get(list, i) : pp;
        const char *type = json_string_value(json_object_get(proc, "type"));
        /* A ByteLevel post-processor adds nothing, so HF adds no bos/eos: say so, or llama.cpp
         * falls back to its per-pre-tokenizer default (llama-bpe adds bos). A template later in
         * the same Sequence still decides. */
        if (same(type, "ByteLevel")) {
            if (v->add_bos < 0) v->add_bos = 0;
            if (v->add_eos < 0) v->add_eos = 0;
            continue;
        }
        if (same(type, "RobertaProcessing")) {
            v->add_bos = 1;
            v->add_eos = 1;
            continue;
        }
        if (!same(type, "TemplateProcessing")) continue;
        const json_t *single = json_object_get(proc, "single");
        if (!json_is_array(single) || json_array_size(single) < 2) continue;
        const char *first = template_special(json_array_get(single, 0));
        const char *last = template_special(json_array_get(single, json_array_size(single) - 1));
        const char **bos = &s->text[QW_SPECIAL_BOS], **eos = &s->text[QW_SPECIAL_EOS];
        if (first) {
            if (!c->tc) *bos = first;
            v->add_bos = same(first, *bos) || same(first, cls);
        }
        if (last) {
            if (!c->tc) {
                *eos = last;
            } else if (!same(last, *eos)) {
                static const qw_special_token moves[] = {QW_SPECIAL_EOT, QW_SPECIAL_EOM};
                for (size_t k = 0; k < 2; k++) {
                    if (!s->enabled[moves[k]]) {
                        s->enabled[moves[k]] = true;
                        s->text[moves[k]] = *eos;
                        break;
                    }
                }
                *eos = last;
            }
            v->add_eos = 1;
        }
    }
}

static qw_status read_add_flags(const load_ctx *c, qw_vocab *v) {
    static const struct {
        const char *key;
        size_t offset;
    } flags[] = {{"add_bos_token", offsetof(qw_vocab, add_bos)},
                 {"add_eos_token", offsetof(qw_vocab, add_eos)}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        bool value, found;
        QW_TRY(qw_json_get_bool(c->tc, flags[i].key, c->tc_path, &value, &found, c->err));
        if (found) *(int *)((char *)v + flags[i].offset) = value;
    }
    return QW_OK;
}

/* config.json "<name>_token_id", or text_config's (multimodal configs); only plain integers. */
static int64_t config_token_id(const json_t *config, const char *name) {
    char key[64];
    snprintf(key, sizeof key, "%s_token_id", name);
    const json_t *v = json_object_get(config, key);
    if ((!v || json_is_null(v)) && json_is_object(json_object_get(config, "text_config"))) {
        v = json_object_get(json_object_get(config, "text_config"), key);
    }
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static qw_status load_specials(load_ctx *c, qw_vocab *v) {
    special_state s = {{0}, {0}};
    for (int i = 0; i < QW_SPECIAL_COUNT; i++) s.enabled[i] = SPECIALS[i].by_default;
    const char *cls = NULL, *sep = NULL;
    if (c->tc) {
        for (int i = 0; i < QW_SPECIAL_COUNT; i++) {
            if (!SPECIALS[i].hf_name) continue;
            char key[64];
            snprintf(key, sizeof key, "%s_token", SPECIALS[i].hf_name);
            QW_TRY(config_token_text(c, key, &s.text[i]));
        }
        QW_TRY(config_token_text(c, "cls_token", &cls));
        sep = s.text[QW_SPECIAL_SEP];
        /* BERT-style configs name only cls/sep; the converter uses them as bos/eos. */
        if (!s.text[QW_SPECIAL_BOS] && cls) s.text[QW_SPECIAL_BOS] = cls;
        if (!s.text[QW_SPECIAL_EOS] && sep) s.text[QW_SPECIAL_EOS] = sep;
    }
    if (c->tj) read_post_processor(c, v, &s, cls);
    if (c->tc) {
        QW_TRY(read_add_flags(c, v));
        for (int i = 0; i < QW_SPECIAL_COUNT; i++) {
            if (!s.enabled[i] || !s.text[i]) continue;
            set_special(v, (qw_special_token)i, find_token(c, v, s.text[i]));
        }
    }
    if (c->config) {
        for (int i = 0; i < QW_SPECIAL_COUNT; i++) {
            if (!s.enabled[i] || !SPECIALS[i].hf_name) continue;
            set_special(v, (qw_special_token)i, config_token_id(c->config, SPECIALS[i].hf_name));
        }
    }
    return QW_OK;
}

/* ---- SentencePiece extras ------------------------------------------------------------------- */

/* An added token of a SentencePiece vocabulary, typed as the converter does. */
static qw_status spm_add(const load_ctx *c, qw_vocab *v, uint32_t id, const char *text,
                         bool control, const char *file) {
    if (control || qw_token_looks_special(text)) {
        QW_TRY(qw_vocab_set_text(v, id, text, strlen(text), file, c->err));
        v->types[id] = QW_TOKEN_CONTROL;
    } else {
        char *plain = qw_token_unescape_spaces(text);
        if (!plain) return oom(c);
        qw_free(v->tokens[id]);
        v->tokens[id] = plain;
        v->types[id] = QW_TOKEN_USER_DEFINED;
    }
    v->scores[id] = QW_VOCAB_ADDED_SCORE;
    return QW_OK;
}

/* added_tokens.json ({text: id}) and tokenizer_config's added_tokens_decoder
 * ({"id": {"content", "special"}}); ids beyond the embedding are skipped, as the converter
 * does. */
static qw_status spm_extras(load_ctx *c, qw_vocab *v) {
    if (qw_path_is_file(c->added_path)) {
        json_t *added;
        QW_TRY(qw_json_load_file(c->added_path, MAX_CONFIG_BYTES, &added, c->err));
        qw_status st = QW_OK;
        if (!json_is_object(added)) {
            st = qw_fail(c->err, QW_ERR_CORRUPT, "%s: must be an object of token ids",
                         c->added_path);
        }
        const char *text;
        json_t *idv;
        json_object_foreach(added, text, idv) {
            if (st != QW_OK) break;
            if (!json_is_integer(idv) || json_integer_value(idv) < 0) {
                st = qw_fail_at(c->err, QW_ERR_CORRUPT, text, -1,
                                "%s: key \"%s\" must be a token id", c->added_path, text);
            } else if (json_integer_value(idv) < (json_int_t)v->n_tokens && *text) {
                uint32_t id = (uint32_t)json_integer_value(idv);
                st = qw_vocab_set_text(v, id, text, strlen(text), c->added_path, c->err);
                v->types[id] = QW_TOKEN_USER_DEFINED;
                v->scores[id] = QW_VOCAB_ADDED_SCORE;
            }
        }
        json_decref(added);
        QW_TRY(st);
    }
    const json_t *dec = json_object_get(c->tc, "added_tokens_decoder");
    if (!dec || json_is_null(dec)) return QW_OK;
    if (!json_is_object(dec)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, "added_tokens_decoder", -1,
                          "%s: key \"added_tokens_decoder\" must be an object", c->tc_path);
    }
    const char *key;
    const json_t *entry;
    json_object_foreach((json_t *)dec, key, entry) {
        char *end = NULL;
        unsigned long long id = strtoull(key, &end, 10);
        const json_t *content = json_object_get(entry, "content");
        const json_t *special = json_object_get(entry, "special");
        if (!*key || *end || key[0] == '-' || !json_is_string(content) ||
            json_string_length(content) == 0 ||
            strlen(json_string_value(content)) != json_string_length(content) ||
            (special && !json_is_null(special) && !json_is_boolean(special))) {
            return qw_fail_at(c->err, QW_ERR_CORRUPT, "added_tokens_decoder", -1,
                              "%s: added_tokens_decoder[\"%s\"] must map a token id to "
                              "{\"content\": text, \"special\": bool}",
                              c->tc_path, key);
        }
        if (id >= v->n_tokens) continue;
        /* The unknown piece stays UNKNOWN (the converter would make it CONTROL, as
         * added_tokens_decoder lists it as special). */
        if (v->types[id] == QW_TOKEN_UNKNOWN && same(v->tokens[id], json_string_value(content))) {
            continue;
        }
        QW_TRY(spm_add(c, v, (uint32_t)id, json_string_value(content), json_is_true(special),
                       c->tc_path));
    }
    return QW_OK;
}

/* ---- chat templates ------------------------------------------------------------------------- */

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* additional_chat_templates/NAME.jinja, in name order (the converter's order is the file
 * system's; sorting makes the output reproducible). */
static qw_status read_extra_templates(load_ctx *c, qw_vocab *v) {
    DIR *d = opendir(c->extra_dir);
    if (!d) return QW_OK;
    char **names = NULL;
    size_t n = 0;
    qw_status st = QW_OK;
    for (struct dirent *e; st == QW_OK && (e = readdir(d));) {
        if (!qw_str_ends_with(e->d_name, ".jinja") || strlen(e->d_name) <= 6) continue;
        char **grown = qw_realloc_array(names, n + 1, sizeof *names);
        if (!grown || !(grown[n] = qw_strdup(e->d_name))) {
            names = grown ? grown : names;
            st = oom(c);
            break;
        }
        names = grown;
        n++;
    }
    closedir(d);
    if (st == QW_OK && n) qsort(names, n, sizeof *names, compare_names);
    for (size_t i = 0; st == QW_OK && i < n; i++) {
        char *path = qw_path_join(c->extra_dir, names[i]);
        char *text = NULL;
        if (!path) {
            st = oom(c);
            break;
        }
        st = qw_file_read_all(path, MAX_CONFIG_BYTES, &text, NULL, c->err);
        names[i][strlen(names[i]) - 6] = '\0';
        if (st == QW_OK && !named_put(v, names[i], text)) st = oom(c);
        qw_free(text);
        qw_free(path);
    }
    for (size_t i = 0; i < n; i++) qw_free(names[i]);
    qw_free(names);
    return st;
}

/* A tokenizer_config / chat_template.json "chat_template": a string, or a list of
 * {"name", "template"} whose "default" entry is the main template. Names keep only ASCII letters
 * and digits (others become '_'), as gguf-py writes them. */
static qw_status read_template_value(load_ctx *c, qw_vocab *v, const json_t *value,
                                     const char *file) {
    if (!value || json_is_null(value)) return QW_OK;
    if (json_is_string(value)) {
        v->chat_template = qw_strdup(json_string_value(value));
        return v->chat_template ? QW_OK : oom(c);
    }
    if (!json_is_array(value)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, "chat_template", -1,
                          "%s: key \"chat_template\" must be a string or a list of "
                          "{\"name\", \"template\"}",
                          file);
    }
    for (size_t i = 0; i < json_array_size(value); i++) {
        const json_t *entry = json_array_get(value, i);
        const char *name = json_string_value(json_object_get(entry, "name"));
        const char *text = json_string_value(json_object_get(entry, "template"));
        if (!json_is_object(entry)) {
            return qw_fail_at(c->err, QW_ERR_CORRUPT, "chat_template", -1,
                              "%s: chat_template[%zu] must be an object", file, i);
        }
        if (!name || !*name || !text) continue;
        char *clean = qw_strdup(name);
        if (!clean) return oom(c);
        for (char *p = clean; *p; p++) {
            bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                         (*p >= '0' && *p <= '9');
            if (!alnum) *p = '_';
        }
        bool ok;
        if (strcmp(clean, "default") == 0) {
            qw_free(v->chat_template);
            v->chat_template = qw_strdup(text);
            ok = v->chat_template != NULL;
        } else {
            ok = named_put(v, clean, text);
        }
        qw_free(clean);
        if (!ok) return oom(c);
    }
    return QW_OK;
}

/* chat_template.jinja (what transformers reads first), else tokenizer_config's chat_template,
 * else chat_template.json. */
static qw_status load_chat_template(load_ctx *c, qw_vocab *v) {
    if (qw_path_is_file(c->jinja_path)) {
        QW_TRY(qw_file_read_all(c->jinja_path, MAX_CONFIG_BYTES, &v->chat_template, NULL,
                                c->err));
        return read_extra_templates(c, v);
    }
    if (c->tc && json_object_get(c->tc, "chat_template") &&
        !json_is_null(json_object_get(c->tc, "chat_template"))) {
        return read_template_value(c, v, json_object_get(c->tc, "chat_template"), c->tc_path);
    }
    if (qw_path_is_file(c->ct_json_path)) {
        json_t *ct;
        QW_TRY(qw_json_load_file(c->ct_json_path, MAX_CONFIG_BYTES, &ct, c->err));
        qw_status st = json_is_object(ct)
                           ? read_template_value(c, v, json_object_get(ct, "chat_template"),
                                                 c->ct_json_path)
                           : qw_fail(c->err, QW_ERR_CORRUPT, "%s: must be a JSON object",
                                     c->ct_json_path);
        json_decref(ct);
        return st;
    }
    return QW_OK;
}

/* ---- the load ------------------------------------------------------------------------------- */

static qw_status load_files(load_ctx *c, qw_vocab *v, uint32_t n_rows) {
    static const struct {
        const char *name;
        size_t offset;
    } files[] = {
        {"tokenizer.json", offsetof(load_ctx, tj_path)},
        {"tokenizer.model", offsetof(load_ctx, tm_path)},
        {"tokenizer_config.json", offsetof(load_ctx, tc_path)},
        {"chat_template.jinja", offsetof(load_ctx, jinja_path)},
        {"chat_template.json", offsetof(load_ctx, ct_json_path)},
        {"added_tokens.json", offsetof(load_ctx, added_path)},
        {"additional_chat_templates", offsetof(load_ctx, extra_dir)},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char **slot = (char **)((char *)c + files[i].offset);
        if (!(*slot = qw_path_join(c->dir, files[i].name))) return oom(c);
    }
    if (qw_path_is_file(c->tc_path)) {
        QW_TRY(qw_json_load_file(c->tc_path, MAX_CONFIG_BYTES, &c->tc, c->err));
        if (!json_is_object(c->tc)) {
            return qw_fail(c->err, QW_ERR_CORRUPT, "%s: the top level must be a JSON object",
                           c->tc_path);
        }
    }
    if (qw_path_is_file(c->tj_path)) {
        QW_TRY(qw_json_load_file(c->tj_path, MAX_TOKENIZER_JSON_BYTES, &c->tj, c->err));
        QW_TRY(qw_vocab_read_tokenizer_json(v, c->tj, c->tj_path, n_rows, c->err));
    } else if (qw_path_is_file(c->tm_path)) {
        qw_mapped m;
        QW_TRY(qw_mapped_open(c->tm_path, &m, c->err));
        qw_status st = qw_vocab_read_spm_model(v, m.data, m.size, c->tm_path, n_rows, c->err);
        qw_mapped_close(&m);
        QW_TRY(st);
        QW_TRY(spm_extras(c, v));
    } else {
        return qw_fail(c->err, QW_ERR_NOT_FOUND,
                       "%s: no tokenizer.json or tokenizer.model in the model directory", c->dir);
    }
    QW_TRY(load_specials(c, v));
    return load_chat_template(c, v);
}

qw_status qw_vocab_load_hf(const char *dir, const json_t *config, uint32_t n_embd_rows,
                           qw_vocab **out, qw_error *err) {
    if (!out) return qw_fail(err, QW_ERR_INVALID_ARG, "qw_vocab_load_hf: out is NULL");
    *out = NULL;
    if (!dir) return qw_fail(err, QW_ERR_INVALID_ARG, "qw_vocab_load_hf: dir is NULL");
    if (n_embd_rows == 0 || n_embd_rows > QW_VOCAB_MAX_ROWS) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "%s: %u embedding rows is not a vocabulary size (1 to %u)", dir,
                       n_embd_rows, QW_VOCAB_MAX_ROWS);
    }
    if (config && !json_is_object(config)) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s/config.json: the top level must be an object",
                       dir);
    }
    qw_vocab *v = qw_calloc(1, sizeof *v);
    if (!v) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", dir);
    for (int i = 0; i < QW_SPECIAL_COUNT; i++) v->special[i] = -1;
    v->add_bos = v->add_eos = v->add_space_prefix = -1;

    load_ctx c = {.dir = dir, .config = config, .err = err};
    qw_status st = load_files(&c, v, n_embd_rows);
    load_ctx_free(&c);
    if (st != QW_OK) {
        qw_vocab_free(v);
        return st;
    }
    *out = v;
    return QW_OK;
}

void qw_vocab_free(qw_vocab *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n_named_templates; i++) {
        qw_free(v->template_names[i]);
        qw_free(v->named_templates[i]);
    }
    qw_free(v->template_names);
    qw_free(v->named_templates);
    for (uint32_t i = 0; v->tokens && i < v->n_tokens; i++) qw_free(v->tokens[i]);
    for (uint64_t i = 0; v->merges && i < v->n_merges; i++) qw_free(v->merges[i]);
    qw_free(v->tokens);
    qw_free(v->merges);
    qw_free(v->scores);
    qw_free(v->types);
    qw_free(v->model);
    qw_free(v->pre);
    qw_free(v->chat_template);
    qw_free(v);
}

/* ---- writing -------------------------------------------------------------------------------- */

static qw_status check_vocab(const qw_vocab *v, qw_error *err) {
    if (!v || !v->model || !v->tokens || !v->types || v->n_tokens == 0) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "qw_vocab_write_gguf: the vocabulary has no model name or no tokens");
    }
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        if (!v->tokens[i]) {
            return qw_fail(err, QW_ERR_INVALID_ARG, "qw_vocab_write_gguf: token %u has no text",
                           i);
        }
    }
    for (uint64_t i = 0; v->merges && i < v->n_merges; i++) {
        if (!v->merges[i]) {
            return qw_fail(err, QW_ERR_INVALID_ARG, "qw_vocab_write_gguf: merge %llu is NULL",
                           (unsigned long long)i);
        }
    }
    for (int i = 0; i < QW_SPECIAL_COUNT; i++) {
        if (v->special[i] >= (int64_t)v->n_tokens) {
            return qw_fail(err, QW_ERR_INVALID_ARG,
                           "qw_vocab_write_gguf: %s token id %lld is outside the %u tokens",
                           SPECIALS[i].gguf_key, (long long)v->special[i], v->n_tokens);
        }
    }
    return QW_OK;
}

/* Named templates, then the list of their names, as gguf-py's add_chat_template writes them. */
static qw_status write_named_templates(const qw_vocab *v, qw_gguf_writer *w, qw_error *err) {
    for (size_t i = 0; i < v->n_named_templates; i++) {
        char *key = qw_sprintf("tokenizer.chat_template.%s", v->template_names[i]);
        qw_status st = key ? qw_gguf_writer_set_str(w, key, v->named_templates[i], err)
                           : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        qw_free(key);
        QW_TRY(st);
    }
    if (v->n_named_templates) {
        QW_TRY(qw_gguf_writer_set_str_array(w, "tokenizer.chat_templates",
                                            (const char *const *)v->template_names,
                                            v->n_named_templates, err));
    }
    return QW_OK;
}

qw_status qw_vocab_write_gguf(const qw_vocab *v, qw_gguf_writer *w, qw_error *err) {
    if (!w) return qw_fail(err, QW_ERR_INVALID_ARG, "qw_vocab_write_gguf: writer is NULL");
    QW_TRY(check_vocab(v, err));
    QW_TRY(qw_gguf_writer_set_str(w, "tokenizer.ggml.model", v->model, err));
    if (v->pre) QW_TRY(qw_gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre, err));
    QW_TRY(qw_gguf_writer_set_str_array(w, "tokenizer.ggml.tokens",
                                        (const char *const *)v->tokens, v->n_tokens, err));
    if (v->scores) {
        QW_TRY(qw_gguf_writer_set_array(w, "tokenizer.ggml.scores", QW_GGUF_FLOAT32, v->scores,
                                        v->n_tokens, err));
    }
    QW_TRY(qw_gguf_writer_set_array(w, "tokenizer.ggml.token_type", QW_GGUF_INT32, v->types,
                                    v->n_tokens, err));
    if (v->merges && v->n_merges) {
        QW_TRY(qw_gguf_writer_set_str_array(w, "tokenizer.ggml.merges",
                                            (const char *const *)v->merges, v->n_merges, err));
    }
    for (int i = 0; i < QW_SPECIAL_COUNT; i++) {
        if (v->special[i] < 0) continue;
        char key[64];
        snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", SPECIALS[i].gguf_key);
        QW_TRY(qw_gguf_writer_set_u32(w, key, (uint32_t)v->special[i], err));
    }
    if (v->add_bos >= 0) {
        QW_TRY(qw_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos != 0, err));
    }
    if (v->add_eos >= 0) {
        QW_TRY(qw_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos != 0, err));
    }
    QW_TRY(write_named_templates(v, w, err));
    if (v->chat_template) {
        QW_TRY(qw_gguf_writer_set_str(w, "tokenizer.chat_template", v->chat_template, err));
    }
    if (v->add_space_prefix >= 0) {
        QW_TRY(qw_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix",
                                       v->add_space_prefix != 0, err));
    }
    return QW_OK;
}
