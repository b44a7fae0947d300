/*
 * tokenizer.json (HuggingFace tokenizers, serialization "1.0") -> GGUF vocabulary.
 *
 * What is read:
 *   { "added_tokens": [ {"id": int, "content": str, "special": bool, ...}, ... ],
 *     "normalizer": component | null,
 *     "pre_tokenizer": component | null,
 *     "model": { "type": "BPE", "vocab": {text: id, ...},
 *                "merges": ["a b", ...] | [["a", "b"], ...],
 *                "byte_fallback": bool, "ignore_merges": bool, "unk_token": str | null,
 *                "dropout", "continuing_subword_prefix", "end_of_word_suffix" }, ... }
 *   component = {"type": "Sequence", "normalizers" | "pretokenizers": [component, ...]}
 *             | {"type": name, ...settings}
 *
 * llama.cpp does not read the normalizer or pre-tokenizer: it knows a fixed set of pipelines by
 * name (`tokenizer.ggml.pre`). llama.cpp's converter picks the name by hashing the ids of a test
 * string; here the pipeline itself is described as text and looked up in PRE_TABLE, so a pipeline
 * that no row describes exactly is refused instead of being written under a wrong name.
 */
#include <string.h>

#include "json.h"
#include "vocab_private.h"

/* ---- the pipelines llama.cpp knows ---------------------------------------------------------- */

/* Llama-3's split regex (tiktoken cl100k without possessive quantifiers); llama.cpp's LLAMA3 and
 * SMAUG pre-tokenizers implement it. */
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Qwen2's: the same with single digits; llama.cpp's QWEN2 pre-tokenizer. */
#define RE_QWEN2                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define SPLIT_ISOLATED(re) "Split(Regex \"" re "\", Isolated, invert=false)"
#define BYTELEVEL(regex) "ByteLevel(add_prefix_space=false, use_regex=" regex ")"
#define SPACE_MARK "\xE2\x96\x81" /* U+2581, SentencePiece's visible space */

typedef struct pre_row {
    const char *pre;          /* tokenizer.ggml.pre */
    const char *model;        /* tokenizer.ggml.model */
    bool byte_fallback;       /* model.byte_fallback */
    bool ignore_merges;       /* model.ignore_merges */
    int add_space_prefix;     /* SentencePiece rows: 1 or 0; -1 for byte-level rows */
    const char *normalizer;   /* describe_pipeline() of "normalizer" */
    const char *pre_tokenizer; /* describe_pipeline() of "pre_tokenizer" */
} pre_row;

/*
 * One row per pipeline whose llama.cpp pre-tokenizer splits text exactly as HF does. llama.cpp
 * cannot express a normalizer for byte-level BPE: the qwen2 row's NFC is the one known gap (text
 * that is not already NFC tokenizes differently; tests list those strings).
 */
static const pre_row PRE_TABLE[] = {
    /* Llama-3 (and Llama-3.x): the llama3 split; llama.cpp's llama-bpe ignores merges. */
    {"llama-bpe", "gpt2", false, true, -1, "none",
     SPLIT_ISOLATED(RE_LLAMA3) " + " BYTELEVEL("false")},
    /* The same split without ignore_merges: llama.cpp's smaug-bpe (same regex, merges honoured). */
    {"smaug-bpe", "gpt2", false, false, -1, "none",
     SPLIT_ISOLATED(RE_LLAMA3) " + " BYTELEVEL("false")},
    /* Qwen2, Qwen2.5, Qwen3 (and their distillations). */
    {"qwen2", "gpt2", false, false, -1, "NFC", SPLIT_ISOLATED(RE_QWEN2) " + " BYTELEVEL("false")},
    /* GPT-2 style: ByteLevel's own regex. */
    {"gpt-2", "gpt2", false, false, -1, "none", BYTELEVEL("true")},
    /* SmolLM / StarCoder style: every digit alone, then the GPT-2 regex. */
    {"smollm", "gpt2", false, false, -1, "none",
     "Digits(individual_digits=true) + " BYTELEVEL("true")},
    /* SentencePiece BPE converted by transformers (Llama-2, Mistral v0.1, ...), legacy form:
     * "▁" prepended to every segment, spaces become "▁". */
    {"default", "llama", true, false, 1,
     "Prepend(\"" SPACE_MARK "\") + Replace(String \" \" -> \"" SPACE_MARK "\")", "none"},
    /* The same with add_prefix_space=false. */
    {"default", "llama", true, false, 0, "Replace(String \" \" -> \"" SPACE_MARK "\")", "none"},
    /* Gemma as newer transformers converts it (Gemma 3's published file): the same plus a
     * Split on " " that never fires, since the normalizer has already replaced every space. */
    {"default", "llama", true, false, 0, "Replace(String \" \" -> \"" SPACE_MARK "\")",
     "Split(String \" \", MergedWithPrevious, invert=false)"},
    /* Non-legacy transformers conversion: Metaspace without splitting. llama.cpp's
     * add_space_prefix prepends a space to the text and after every special token; HF skips it
     * where the segment already starts with a space, and "first" only prepends at the start of
     * the text. llama.cpp cannot express either, so text starting with a space (and, for
     * "first", text after a special token) is a known gap; the rest tokenizes identically. */
    {"default", "llama", true, false, 1, "none",
     "Metaspace(\"" SPACE_MARK "\", prepend_scheme=first, split=false)"},
    {"default", "llama", true, false, 1, "none",
     "Metaspace(\"" SPACE_MARK "\", prepend_scheme=always, split=false)"},
    {"default", "llama", true, false, 0, "none",
     "Metaspace(\"" SPACE_MARK "\", prepend_scheme=never, split=false)"},
};

/* ---- describing a pipeline as text ---------------------------------------------------------- */

typedef struct describe_ctx {
    qw_buf *out;
    const char *path;  /* tokenizer.json, for messages */
    const char *where; /* "normalizer" or "pre_tokenizer" */
    qw_error *err;
} describe_ctx;

static qw_status oom(const describe_ctx *c) {
    return qw_fail(c->err, QW_ERR_NO_MEMORY, "%s: out of memory", c->path);
}

static qw_status get_bool_or(const describe_ctx *c, const json_t *node, const char *type,
                             const char *key, bool dflt, bool *out) {
    const json_t *v = json_object_get(node, key);
    *out = dflt;
    if (!v || json_is_null(v)) return QW_OK;
    if (!json_is_boolean(v)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, -1,
                          "%s: %s %s: key \"%s\" must be true or false", c->path, c->where, type,
                          key);
    }
    *out = json_is_true(v);
    return QW_OK;
}

/* A string setting, or `dflt` (NULL: required). */
static qw_status get_str_or(const describe_ctx *c, const json_t *node, const char *type,
                            const char *key, const char *dflt, const char **out) {
    const json_t *v = json_object_get(node, key);
    if (!v || json_is_null(v)) {
        if (dflt) {
            *out = dflt;
            return QW_OK;
        }
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, -1, "%s: %s %s: key \"%s\" is missing",
                          c->path, c->where, type, key);
    }
    if (!json_is_string(v)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, key, -1,
                          "%s: %s %s: key \"%s\" must be a string", c->path, c->where, type, key);
    }
    *out = json_string_value(v);
    return QW_OK;
}

/* {"String": s} or {"Regex": s} -> `String "s"` / `Regex "s"`. */
static qw_status describe_pattern(const describe_ctx *c, const json_t *node, const char *type) {
    const json_t *pat = json_object_get(node, "pattern");
    static const char *const kinds[] = {"String", "Regex"};
    for (size_t i = 0; json_is_object(pat) && i < 2; i++) {
        const json_t *s = json_object_get(pat, kinds[i]);
        if (json_is_string(s)) {
            return qw_buf_printf(c->out, "%s \"%s\"", kinds[i], json_string_value(s)) ? QW_OK
                                                                                       : oom(c);
        }
    }
    return qw_fail_at(c->err, QW_ERR_CORRUPT, "pattern", -1,
                      "%s: %s %s: \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}",
                      c->path, c->where, type);
}

static qw_status describe_plain(const describe_ctx *c, const json_t *node, const char *type) {
    (void)node;
    return qw_buf_printf(c->out, "%s", type) ? QW_OK : oom(c);
}

static qw_status describe_prepend(const describe_ctx *c, const json_t *node, const char *type) {
    const char *s = NULL;
    QW_TRY(get_str_or(c, node, type, "prepend", NULL, &s));
    return qw_buf_printf(c->out, "Prepend(\"%s\")", s) ? QW_OK : oom(c);
}

static qw_status describe_replace(const describe_ctx *c, const json_t *node, const char *type) {
    const char *content = NULL;
    QW_TRY(get_str_or(c, node, type, "content", NULL, &content));
    if (!qw_buf_printf(c->out, "Replace(")) return oom(c);
    QW_TRY(describe_pattern(c, node, type));
    return qw_buf_printf(c->out, " -> \"%s\")", content) ? QW_OK : oom(c);
}

static qw_status describe_strip(const describe_ctx *c, const json_t *node, const char *type) {
    bool left, right;
    QW_TRY(get_bool_or(c, node, type, "strip_left", true, &left));
    QW_TRY(get_bool_or(c, node, type, "strip_right", true, &right));
    return qw_buf_printf(c->out, "Strip(left=%s, right=%s)", left ? "true" : "false",
                         right ? "true" : "false")
               ? QW_OK
               : oom(c);
}

static qw_status describe_split(const describe_ctx *c, const json_t *node, const char *type) {
    const char *behavior = NULL;
    bool invert;
    QW_TRY(get_str_or(c, node, type, "behavior", NULL, &behavior));
    QW_TRY(get_bool_or(c, node, type, "invert", false, &invert));
    if (!qw_buf_printf(c->out, "Split(")) return oom(c);
    QW_TRY(describe_pattern(c, node, type));
    return qw_buf_printf(c->out, ", %s, invert=%s)", behavior, invert ? "true" : "false") ? QW_OK
                                                                                         : oom(c);
}

/* trim_offsets only changes offsets, never ids, so it is left out. The defaults are HF's. */
static qw_status describe_byte_level(const describe_ctx *c, const json_t *node,
                                     const char *type) {
    bool prefix, regex;
    QW_TRY(get_bool_or(c, node, type, "add_prefix_space", true, &prefix));
    QW_TRY(get_bool_or(c, node, type, "use_regex", true, &regex));
    return qw_buf_printf(c->out, "ByteLevel(add_prefix_space=%s, use_regex=%s)",
                         prefix ? "true" : "false", regex ? "true" : "false")
               ? QW_OK
               : oom(c);
}

static qw_status describe_digits(const describe_ctx *c, const json_t *node, const char *type) {
    bool individual;
    QW_TRY(get_bool_or(c, node, type, "individual_digits", false, &individual));
    return qw_buf_printf(c->out, "Digits(individual_digits=%s)", individual ? "true" : "false")
               ? QW_OK
               : oom(c);
}

/* Older files carry add_prefix_space instead of prepend_scheme; split defaults to true. */
static qw_status describe_metaspace(const describe_ctx *c, const json_t *node,
                                    const char *type) {
    const char *replacement = NULL, *scheme = NULL;
    bool split, legacy_prefix;
    QW_TRY(get_str_or(c, node, type, "replacement", SPACE_MARK, &replacement));
    QW_TRY(get_bool_or(c, node, type, "add_prefix_space", true, &legacy_prefix));
    QW_TRY(get_str_or(c, node, type, "prepend_scheme", legacy_prefix ? "always" : "never",
                      &scheme));
    QW_TRY(get_bool_or(c, node, type, "split", true, &split));
    return qw_buf_printf(c->out, "Metaspace(\"%s\", prepend_scheme=%s, split=%s)", replacement,
                         scheme, split ? "true" : "false")
               ? QW_OK
               : oom(c);
}

typedef qw_status (*describe_fn)(const describe_ctx *c, const json_t *node, const char *type);

/* The components whose settings can change ids. Any other type is described by its name alone,
 * which no PRE_TABLE row contains. */
static const struct {
    const char *type;
    describe_fn describe;
} COMPONENTS[] = {
    {"NFC", describe_plain},         {"NFD", describe_plain},
    {"NFKC", describe_plain},        {"NFKD", describe_plain},
    {"Lowercase", describe_plain},   {"Prepend", describe_prepend},
    {"Replace", describe_replace},   {"Strip", describe_strip},
    {"Split", describe_split},       {"ByteLevel", describe_byte_level},
    {"Digits", describe_digits},     {"Metaspace", describe_metaspace},
};

/* Appends a component (Sequences flattened, since a one-element or nested Sequence behaves as
 * its contents) to c->out, items joined by " + ". */
static qw_status describe_component(const describe_ctx *c, const json_t *node,
                                    const char *list_key, int depth) {
    if (depth > 16) {
        return qw_fail(c->err, QW_ERR_CORRUPT, "%s: %s: Sequences nested too deeply", c->path,
                       c->where);
    }
    if (!json_is_object(node)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, c->where, -1,
                          "%s: \"%s\" must be an object or null", c->path, c->where);
    }
    const json_t *type_v = json_object_get(node, "type");
    if (!json_is_string(type_v)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, c->where, -1,
                          "%s: a component of \"%s\" has no string \"type\"", c->path, c->where);
    }
    const char *type = json_string_value(type_v);
    if (strcmp(type, "Sequence") == 0) {
        const json_t *items = json_object_get(node, list_key);
        if (!json_is_array(items)) {
            return qw_fail_at(c->err, QW_ERR_CORRUPT, list_key, -1,
                              "%s: %s Sequence: key \"%s\" must be an array", c->path, c->where,
                              list_key);
        }
        for (size_t i = 0; i < json_array_size(items); i++) {
            QW_TRY(describe_component(c, json_array_get(items, i), list_key, depth + 1));
        }
        return QW_OK;
    }
    if (c->out->len > 0 && !qw_buf_printf(c->out, " + ")) return oom(c);
    for (size_t i = 0; i < sizeof COMPONENTS / sizeof COMPONENTS[0]; i++) {
        if (strcmp(COMPONENTS[i].type, type) == 0) return COMPONENTS[i].describe(c, node, type);
    }
    return describe_plain(c, node, type);
}

/* The whole normalizer or pre_tokenizer as text; "none" when absent or empty. Caller frees. */
static qw_status describe_pipeline(const json_t *root, const char *where, const char *list_key,
                                   const char *path, char **out, qw_error *err) {
    *out = NULL;
    qw_buf b = {0};
    describe_ctx c = {&b, path, where, err};
    const json_t *node = json_object_get(root, where);
    if (node && !json_is_null(node)) {
        qw_status st = describe_component(&c, node, list_key, 0);
        if (st != QW_OK) {
            qw_buf_free(&b);
            return st;
        }
    }
    *out = b.len ? qw_strndup(b.data, b.len) : qw_strdup("none");
    qw_buf_free(&b);
    return *out ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
}

/* ---- the model ------------------------------------------------------------------------------ */

typedef struct merge_ref {
    const char *left, *right;
    size_t left_len, right_len;
    const char *legacy; /* the "a b" string when the file has that form, else NULL */
} merge_ref;

/* Everything a load allocates, freed in one place. */
typedef struct hf_load {
    const char *path;
    char *normalizer, *pre_tokenizer;
    merge_ref *merges;
    size_t n_merges;
    qw_tok_map vocab_map; /* model.vocab text -> id (keys borrowed from the JSON) */
    uint8_t *in_vocab;    /* per row: named by model.vocab */
    uint8_t *added;       /* per row: 0, 1 added, 2 added and special */
    qw_buf scratch;
} hf_load;

static void hf_load_free(hf_load *h) {
    qw_free(h->normalizer);
    qw_free(h->pre_tokenizer);
    qw_free(h->merges);
    qw_tok_map_free(&h->vocab_map);
    qw_free(h->in_vocab);
    qw_free(h->added);
    qw_buf_free(&h->scratch);
}

static qw_status model_bool(const hf_load *h, const json_t *model, const char *key, bool *out,
                            qw_error *err) {
    char label[64];
    snprintf(label, sizeof label, "model.%s", key);
    *out = false;
    const json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v)) return QW_OK;
    if (!json_is_boolean(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, label, -1, "%s: key \"%s\" must be true or false",
                          h->path, label);
    }
    *out = json_is_true(v);
    return QW_OK;
}

/* BPE options llama.cpp has no equivalent for. */
static qw_status check_model_options(const hf_load *h, const json_t *model, qw_error *err) {
    static const char *const empty_strings[] = {"continuing_subword_prefix",
                                                "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const json_t *v = json_object_get(model, empty_strings[i]);
        if (!v || json_is_null(v)) continue;
        if (!json_is_string(v)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, empty_strings[i], -1,
                              "%s: key \"model.%s\" must be a string or null", h->path,
                              empty_strings[i]);
        }
        if (json_string_length(v) != 0) {
            return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, empty_strings[i], -1,
                              "%s: model.%s \"%s\" has no llama.cpp equivalent", h->path,
                              empty_strings[i], json_string_value(v));
        }
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0)) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "dropout", -1,
                          "%s: model.dropout is set; BPE dropout has no llama.cpp equivalent",
                          h->path);
    }
    return QW_OK;
}

/* The string of a JSON value that must hold text without NUL bytes (GGUF strings are written
 * and read back by length, but llama.cpp looks tokens up as C strings). */
static qw_status plain_text(const hf_load *h, const json_t *s, const char *what, const char **out,
                            size_t *len, qw_error *err) {
    if (!json_is_string(s)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, what, -1, "%s: %s must be a string", h->path,
                          what);
    }
    *out = json_string_value(s);
    *len = json_string_length(s);
    if (strlen(*out) != *len) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, what, -1,
                          "%s: %s contains a NUL character", h->path, what);
    }
    return QW_OK;
}

/* Highest id named by model.vocab and added_tokens (validating both), or -1 when none. */
static qw_status scan_ids(const hf_load *h, const json_t *vocab, const json_t *added,
                          int64_t *max_id, qw_error *err) {
    *max_id = -1;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)vocab, key, value) {
        int64_t id;
        if (!qw_json_integer_value(value, &id) || id < 0 || id >= (int64_t)QW_VOCAB_MAX_ROWS) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                              "%s: model.vocab[\"%s\"] must be an id from 0 to %u", h->path, key,
                              QW_VOCAB_MAX_ROWS - 1);
        }
        if (id > *max_id) *max_id = id;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *tok = json_array_get(added, i);
        int64_t id;
        if (!json_is_object(tok) || !qw_json_integer_value(json_object_get(tok, "id"), &id) ||
            id < 0 || id >= (int64_t)QW_VOCAB_MAX_ROWS) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1,
                              "%s: added_tokens[%zu] must be an object with an \"id\" from 0 to "
                              "%u",
                              h->path, i, QW_VOCAB_MAX_ROWS - 1);
        }
        if (id > *max_id) *max_id = id;
    }
    return QW_OK;
}

static qw_status fill_vocab(qw_vocab *v, hf_load *h, const json_t *vocab, qw_error *err) {
    if (!qw_tok_map_init(&h->vocab_map, json_object_size(vocab))) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
    }
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)vocab, key, value) {
        int64_t id = 0;
        qw_json_integer_value(value, &id); /* checked by scan_ids */
        if (h->in_vocab[id]) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                              "%s: model.vocab gives id %lld to both \"%s\" and \"%s\"", h->path,
                              (long long)id, v->tokens[id], key);
        }
        h->in_vocab[id] = 1;
        size_t len = strlen(key);
        QW_TRY(qw_vocab_set_text(v, (uint32_t)id, key, len, h->path, err));
        v->types[id] = QW_TOKEN_NORMAL;
        if (!qw_tok_map_put(&h->vocab_map, key, len, (int32_t)id)) {
            return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
        }
    }
    return QW_OK;
}

/* Added tokens override model.vocab's text for their id, as HF's get_vocab() does. */
static qw_status fill_added(qw_vocab *v, hf_load *h, const json_t *added, qw_error *err) {
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *tok = json_array_get(added, i);
        int64_t id = 0;
        qw_json_integer_value(json_object_get(tok, "id"), &id); /* checked by scan_ids */
        char what[64];
        snprintf(what, sizeof what, "added_tokens[%zu].content", i);
        const char *text = NULL;
        size_t len = 0;
        QW_TRY(plain_text(h, json_object_get(tok, "content"), what, &text, &len, err));
        if (len == 0) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1, "%s: %s is empty",
                              h->path, what);
        }
        const json_t *special = json_object_get(tok, "special");
        if (special && !json_is_null(special) && !json_is_boolean(special)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1,
                              "%s: added_tokens[%zu].special must be true or false", h->path, i);
        }
        QW_TRY(qw_vocab_set_text(v, (uint32_t)id, text, len, h->path, err));
        h->added[id] = json_is_true(special) ? 2 : 1;
    }
    return QW_OK;
}

/* Splits every merge into its two parts (borrowed from the JSON). */
static qw_status parse_merges(hf_load *h, const json_t *merges, qw_error *err) {
    h->n_merges = json_array_size(merges);
    h->merges = qw_calloc(h->n_merges, sizeof *h->merges);
    if (!h->merges) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
    for (size_t i = 0; i < h->n_merges; i++) {
        const json_t *m = json_array_get(merges, i);
        merge_ref *r = &h->merges[i];
        char what[64];
        snprintf(what, sizeof what, "model.merges[%zu]", i);
        if (json_is_string(m)) {
            const char *s = NULL;
            size_t len = 0;
            QW_TRY(plain_text(h, m, what, &s, &len, err));
            const char *space = memchr(s, ' ', len);
            /* HF splits on ' ' and needs exactly two non-empty parts. */
            if (!space || space == s || space + 1 == s + len ||
                memchr(space + 1, ' ', (size_t)(s + len - space - 1))) {
                return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                                  "%s: %s \"%s\" is not two tokens separated by one space",
                                  h->path, what, s);
            }
            *r = (merge_ref){s, space + 1, (size_t)(space - s), (size_t)(s + len - space - 1), s};
        } else if (json_is_array(m) && json_array_size(m) == 2) {
            const char *a = NULL, *b = NULL;
            size_t la = 0, lb = 0;
            QW_TRY(plain_text(h, json_array_get(m, 0), what, &a, &la, err));
            QW_TRY(plain_text(h, json_array_get(m, 1), what, &b, &lb, err));
            if (la == 0 || lb == 0) {
                return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                                  "%s: %s has an empty part", h->path, what);
            }
            *r = (merge_ref){a, b, la, lb, NULL};
        } else {
            return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                              "%s: %s must be a string \"a b\" or a pair [\"a\", \"b\"]", h->path,
                              what);
        }
    }
    return QW_OK;
}

/* Id of the token a merge produces; an error when the parts or the result are not in
 * model.vocab (HF refuses such a file too, and llama.cpp would abort on it). */
static qw_status merge_result(hf_load *h, size_t i, int32_t *id, qw_error *err) {
    const merge_ref *r = &h->merges[i];
    h->scratch.len = 0;
    if (!qw_buf_append(&h->scratch, r->left, r->left_len) ||
        !qw_buf_append(&h->scratch, r->right, r->right_len)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
    }
    const char *missing = NULL;
    size_t missing_len = 0;
    if (qw_tok_map_get(&h->vocab_map, r->left, r->left_len) < 0) {
        missing = r->left, missing_len = r->left_len;
    } else if (qw_tok_map_get(&h->vocab_map, r->right, r->right_len) < 0) {
        missing = r->right, missing_len = r->right_len;
    } else if ((*id = qw_tok_map_get(&h->vocab_map, h->scratch.data, h->scratch.len)) < 0) {
        missing = h->scratch.data, missing_len = h->scratch.len;
    }
    if (missing) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                          "%s: model.merges[%zu] uses \"%.*s\", which is not in model.vocab",
                          h->path, i, (int)missing_len, missing);
    }
    return QW_OK;
}

/* Appends a merge part with spaces written as U+0120, as the converter does for the pair form
 * (llama.cpp splits merges on the one real space). */
static bool append_part(qw_buf *b, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        bool ok = s[i] == ' ' ? qw_buf_append(b, "\xC4\xA0", 2) : qw_buf_append(b, &s[i], 1);
        if (!ok) return false;
    }
    return true;
}

static qw_status export_merges(qw_vocab *v, hf_load *h, qw_error *err) {
    if (h->n_merges == 0) return QW_OK;
    v->merges = qw_calloc(h->n_merges, sizeof *v->merges);
    if (!v->merges) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
    v->n_merges = h->n_merges;
    qw_buf line = {0};
    for (size_t i = 0; i < h->n_merges; i++) {
        int32_t id = 0;
        qw_status st = merge_result(h, i, &id, err);
        if (st != QW_OK) {
            qw_buf_free(&line);
            return st;
        }
        const merge_ref *r = &h->merges[i];
        line.len = 0;
        bool ok = r->legacy ? qw_buf_append(&line, r->legacy, strlen(r->legacy))
                            : append_part(&line, r->left, r->left_len) &&
                                  qw_buf_append(&line, " ", 1) &&
                                  append_part(&line, r->right, r->right_len);
        v->merges[i] = ok ? qw_strndup(line.data, line.len) : NULL;
        if (!v->merges[i]) {
            qw_buf_free(&line);
            return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
        }
    }
    qw_buf_free(&line);
    return QW_OK;
}

/*
 * SentencePiece-style scores from the merge list. llama.cpp's "llama" tokenizer repeatedly joins
 * the adjacent pair whose joined text is the token with the highest score; HF's BPE applies the
 * merge of lowest rank. Scoring each token by minus the rank of the first merge that produces it
 * makes the two orders agree. Every token no merge produces (characters, bytes, added and
 * padding tokens) gets a score below all of those, so llama.cpp forms it last if ever.
 */
static qw_status spm_scores(qw_vocab *v, hf_load *h, qw_error *err) {
    float floor_score = -(float)(h->n_merges + 1);
    for (uint32_t i = 0; i < v->n_tokens; i++) v->scores[i] = floor_score;
    for (size_t i = h->n_merges; i-- > 0;) { /* backwards: the first merge's rank wins */
        int32_t id = 0;
        QW_TRY(merge_result(h, i, &id, err));
        v->scores[id] = i ? -(float)i : 0.0f; /* not -0.0 */
    }
    return QW_OK;
}

static qw_status assign_types(qw_vocab *v, const hf_load *h, const pre_row *row,
                              const json_t *model, qw_error *err) {
    bool spm = strcmp(row->model, "llama") == 0;
    const json_t *unk_v = json_object_get(model, "unk_token");
    const char *unk = json_is_string(unk_v) ? json_string_value(unk_v) : NULL;
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        const char *t = v->tokens[i];
        if (spm && h->in_vocab[i] && !h->added[i] && qw_token_is_byte(t)) {
            v->types[i] = QW_TOKEN_BYTE;
        } else if (spm && unk && (h->in_vocab[i] || h->added[i]) && strcmp(t, unk) == 0) {
            v->types[i] = QW_TOKEN_UNKNOWN;
        } else if (h->added[i] == 2 || (h->added[i] && qw_token_looks_special(t))) {
            v->types[i] = QW_TOKEN_CONTROL;
        } else if (h->added[i]) {
            char *plain = qw_token_unescape_spaces(t);
            if (!plain) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", h->path);
            qw_free(v->tokens[i]);
            v->tokens[i] = plain;
            v->types[i] = QW_TOKEN_USER_DEFINED;
        } else if (h->in_vocab[i]) {
            v->types[i] = QW_TOKEN_NORMAL;
        }
    }
    return QW_OK;
}

static qw_status find_row(const hf_load *h, bool byte_fallback, bool ignore_merges,
                          const pre_row **out, qw_error *err) {
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof PRE_TABLE[0]; i++) {
        const pre_row *r = &PRE_TABLE[i];
        if (r->byte_fallback == byte_fallback && r->ignore_merges == ignore_merges &&
            strcmp(r->normalizer, h->normalizer) == 0 &&
            strcmp(r->pre_tokenizer, h->pre_tokenizer) == 0) {
            *out = r;
            return QW_OK;
        }
    }
    return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "pre_tokenizer", -1,
                      "%s: no llama.cpp pre-tokenizer is known to match this tokenizer: "
                      "pre_tokenizer %s; normalizer %s; BPE byte_fallback=%s "
                      "ignore_merges=%s",
                      h->path, h->pre_tokenizer, h->normalizer, byte_fallback ? "true" : "false",
                      ignore_merges ? "true" : "false");
}

/* The vocabulary's rows: model.vocab's tokens, then added_tokens' over them, padded to the
 * model's n_rows embedding rows (scores too when spm). */
static qw_status fill_rows(qw_vocab *v, hf_load *h, const json_t *vocab, const json_t *added,
                           uint32_t n_rows, bool spm, qw_error *err) {
    const char *path = h->path;
    int64_t max_id;
    QW_TRY(scan_ids(h, vocab, added, &max_id, err));
    if (max_id < 0) return qw_fail(err, QW_ERR_CORRUPT, "%s: the vocabulary is empty", path);
    if ((uint64_t)max_id >= n_rows) {
        return qw_fail(err, QW_ERR_CORRUPT,
                       "%s: token id %lld does not fit the model's %u embedding rows", path,
                       (long long)max_id, n_rows);
    }
    QW_TRY(qw_vocab_alloc_rows(v, n_rows, spm, path, err));
    h->in_vocab = qw_calloc(n_rows, 1);
    h->added = qw_calloc(n_rows, 1);
    if (!h->in_vocab || !h->added) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    QW_TRY(fill_vocab(v, h, vocab, err));
    return fill_added(v, h, added, err);
}

/*
 * A WordPiece vocabulary (BERT and its relatives) in the form llama.cpp's converter gives it,
 * tokenizer.ggml.model "bert": a word-initial piece gets the SentencePiece space mark in front,
 * a continuation loses its "##" prefix, and bracketed names ("[CLS]") and added tokens stay as
 * they are. There are no scores and no merges; model.unk_token is the unknown token.
 */
static qw_status read_wordpiece(qw_vocab *v, hf_load *h, const json_t *root, const json_t *model,
                                uint32_t n_rows, qw_error *err) {
    const char *path = h->path;
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                          "%s: key \"model.vocab\" is missing or not an object", path);
    }
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1,
                          "%s: key \"added_tokens\" must be an array", path);
    }
    const json_t *prefix_v = json_object_get(model, "continuing_subword_prefix");
    if (prefix_v && !json_is_null(prefix_v) &&
        (!json_is_string(prefix_v) || strcmp(json_string_value(prefix_v), "##") != 0)) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "model.continuing_subword_prefix", -1,
                          "%s: WordPiece continuing_subword_prefix must be \"##\", as llama.cpp's "
                          "bert tokenizer assumes", path);
    }
    const json_t *unk_v = json_object_get(model, "unk_token");
    if (unk_v && !json_is_null(unk_v) && !json_is_string(unk_v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.unk_token", -1,
                          "%s: key \"model.unk_token\" must be a string", path);
    }
    QW_TRY(fill_rows(v, h, vocab, added, n_rows, false, err));
    const char *unk = json_string_value(unk_v);
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        if (!h->in_vocab[i] && !h->added[i]) continue; /* padding rows keep their [PAD<id>] */
        char *t = v->tokens[i];
        const size_t len = strlen(t);
        if (unk && strcmp(t, unk) == 0) {
            v->types[i] = QW_TOKEN_UNKNOWN;
        } else if (h->added[i] == 2 || (len >= 2 && t[0] == '[' && t[len - 1] == ']')) {
            v->types[i] = h->added[i] ? QW_TOKEN_CONTROL : QW_TOKEN_NORMAL;
        } else if (h->added[i]) {
            v->types[i] = QW_TOKEN_USER_DEFINED;
        } else if (len > 2 && t[0] == '#' && t[1] == '#') {
            memmove(t, t + 2, len - 1); /* "##ing" -> "ing" */
        } else {
            char *marked = qw_sprintf(SPACE_MARK "%s", t);
            if (!marked) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
            qw_free(t);
            v->tokens[i] = marked;
        }
    }
    v->model = qw_strdup("bert");
    v->pre = qw_strdup("default");
    if (!v->model || !v->pre) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    v->add_space_prefix = -1;
    return QW_OK;
}

static qw_status read_json(qw_vocab *v, hf_load *h, const json_t *root, uint32_t n_rows,
                           qw_error *err) {
    const char *path = h->path;
    if (!json_is_object(root)) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: the top level must be a JSON object", path);
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model", -1,
                          "%s: key \"model\" is missing or not an object", path);
    }
    const json_t *type = json_object_get(model, "type");
    const json_t *merges = json_object_get(model, "merges");
    if (type && !json_is_string(type)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.type", -1,
                          "%s: key \"model.type\" must be a string", path);
    }
    if (type && strcmp(json_string_value(type), "WordPiece") == 0) {
        return read_wordpiece(v, h, root, model, n_rows, err);
    }
    /* Files from before "type" was serialized are BPE when they have merges. */
    if (type ? strcmp(json_string_value(type), "BPE") != 0 : !merges) {
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "model.type", -1,
                          "%s: model type \"%s\" is not supported (BPE and WordPiece "
                          "vocabularies are)", path, type ? json_string_value(type) : "(none)");
    }
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.vocab", -1,
                          "%s: key \"model.vocab\" is missing or not an object", path);
    }
    if (!json_is_array(merges)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "model.merges", -1,
                          "%s: key \"model.merges\" is missing or not an array", path);
    }
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "added_tokens", -1,
                          "%s: key \"added_tokens\" must be an array", path);
    }
    bool byte_fallback, ignore_merges;
    QW_TRY(model_bool(h, model, "byte_fallback", &byte_fallback, err));
    QW_TRY(model_bool(h, model, "ignore_merges", &ignore_merges, err));
    QW_TRY(check_model_options(h, model, err));

    QW_TRY(describe_pipeline(root, "normalizer", "normalizers", path, &h->normalizer, err));
    QW_TRY(describe_pipeline(root, "pre_tokenizer", "pretokenizers", path, &h->pre_tokenizer,
                             err));
    const pre_row *row = NULL;
    QW_TRY(find_row(h, byte_fallback, ignore_merges, &row, err));
    bool spm = strcmp(row->model, "llama") == 0;

    QW_TRY(fill_rows(v, h, vocab, added, n_rows, spm, err));
    QW_TRY(parse_merges(h, merges, err));
    if (spm) {
        QW_TRY(spm_scores(v, h, err));
    } else {
        QW_TRY(export_merges(v, h, err));
    }
    QW_TRY(assign_types(v, h, row, model, err));
    v->model = qw_strdup(row->model);
    v->pre = qw_strdup(row->pre);
    if (!v->model || !v->pre) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    v->add_space_prefix = row->add_space_prefix;
    return QW_OK;
}

qw_status qw_vocab_read_tokenizer_json(qw_vocab *v, const json_t *root, const char *path,
                                       uint32_t n_rows, qw_error *err) {
    hf_load h = {.path = path};
    qw_status st = read_json(v, &h, root, n_rows, err);
    hf_load_free(&h);
    return st;
}
