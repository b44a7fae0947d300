/* Vocabulary loading (tokenizer.json, tokenizer.model, tokenizer_config.json) and its GGUF
 * export. Expected ids and types were read from the fixtures with HF `tokenizers`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test.h"

#include "file.h"
#include "gguf.h"
#include "json.h"
#include "vocab.h"

#define FIXTURES QW_FIXTURES_DIR "/tokenizers"
#define LLAMA2 FIXTURES "/llama2"
#define LLAMA3 FIXTURES "/llama3"
#define QWEN3 FIXTURES "/qwen3"

/* ---- helpers -------------------------------------------------------------------------------- */

/* A fresh scratch directory for one case. */
static const char *case_dir(const char *name) {
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/vocab-%s", test_tmpdir(), name);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot create %s\n", dir);
    return dir;
}

static void write_bytes(const char *dir, const char *name, const void *data, size_t len) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return;
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

static void write_text(const char *dir, const char *name, const char *text) {
    write_bytes(dir, name, text, strlen(text));
}

/* Loads dir and expects failure with `status`, the message naming `needle`. */
static void expect_fail(const char *dir, uint32_t rows, qw_status status, const char *needle) {
    qw_vocab *v = (qw_vocab *)1;
    qw_error err = {0};
    qw_status st = qw_vocab_load_hf(dir, NULL, rows, &v, &err);
    CHECK_EQ_STR(qw_status_name(st), qw_status_name(status));
    CHECK(v == NULL);
    if (!strstr(err.message, needle)) {
        fprintf(stderr, "  message \"%s\" does not mention \"%s\"\n", err.message, needle);
        CHECK(strstr(err.message, needle) != NULL);
    }
    if (st == QW_OK) qw_vocab_free(v);
}

static qw_vocab *load(const char *dir, const json_t *config, uint32_t rows) {
    qw_vocab *v = NULL;
    qw_error err = {0};
    CHECK_OK(qw_vocab_load_hf(dir, config, rows, &v, &err), &err);
    return v;
}

/* A small byte-level tokenizer.json around a pre_tokenizer/normalizer/model-flags fragment. */
static char *tiny_bpe_json(const char *normalizer, const char *pre_tokenizer, const char *flags) {
    return qw_sprintf(
        "{\"version\": \"1.0\", \"added_tokens\": ["
        "{\"id\": 5, \"content\": \"<|end|>\", \"special\": true},"
        "{\"id\": 6, \"content\": \"<tool>\", \"special\": false},"
        "{\"id\": 7, \"content\": \"<|fim|>\", \"special\": false}],"
        "\"normalizer\": %s, \"pre_tokenizer\": %s,"
        "\"model\": {\"type\": \"BPE\", %s \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
        "\"\\u0120\": 3, \"\\u0120ab\": 4},"
        "\"merges\": [\"a b\", [\"\\u0120\", \"ab\"]]}}",
        normalizer, pre_tokenizer, flags);
}

static const char *BYTE_LEVEL =
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
    "\"use_regex\": true}";

/* ---- protobuf writer for tokenizer.model cases ---------------------------------------------- */

static void pb_varint(qw_buf *b, uint64_t v) {
    while (v >= 0x80) {
        uint8_t c = (uint8_t)(v | 0x80);
        qw_buf_append(b, &c, 1);
        v >>= 7;
    }
    uint8_t c = (uint8_t)v;
    qw_buf_append(b, &c, 1);
}

static void pb_key(qw_buf *b, uint32_t field, uint32_t wire) { pb_varint(b, field << 3 | wire); }

static void pb_bytes(qw_buf *b, uint32_t field, const void *data, size_t len) {
    pb_key(b, field, 2);
    pb_varint(b, len);
    qw_buf_append(b, data, len);
}

static void pb_piece(qw_buf *b, const char *text, float score, int type) {
    qw_buf p = {0};
    pb_bytes(&p, 1, text, strlen(text));
    pb_key(&p, 2, 5);
    qw_buf_append(&p, &score, 4); /* little-endian host */
    if (type != 1) {
        pb_key(&p, 3, 0);
        pb_varint(&p, (uint64_t)type);
    }
    pb_bytes(b, 1, p.data, p.len);
    qw_buf_free(&p);
}

/* trainer_spec { model_type: BPE } */
static void pb_bpe_trainer_spec(qw_buf *b) {
    static const uint8_t spec[] = {3 << 3 | 0, 2};
    pb_bytes(b, 2, spec, sizeof spec);
}

#define SP "\xE2\x96\x81" /* ▁ */

/* <unk> <s> </s> <0x00> <0x0A> ▁ a b ▁a ab ▁ab, BPE, with the given add_dummy_prefix. */
static void spm_model(qw_buf *b, int model_type, int add_dummy_prefix) {
    static const struct {
        const char *text;
        float score;
        int type;
    } pieces[] = {
        {"<unk>", 0, 2}, {"<s>", 0, 3},    {"</s>", 0, 3},     {"<0x00>", 0, 6},
        {"<0x0A>", 0, 6}, {SP, -1, 1},     {"a", -2, 1},       {"b", -3, 1},
        {SP "a", -4, 1},  {"ab", -5, 1},   {SP "ab", -6, 1},   {"<sep>", 0, 4},
    };
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        pb_piece(b, pieces[i].text, pieces[i].score, pieces[i].type);
    }
    qw_buf t = {0};
    pb_key(&t, 3, 0);
    pb_varint(&t, (uint64_t)model_type);
    pb_key(&t, 4, 0);
    pb_varint(&t, 12);
    pb_key(&t, 43, 0); /* pad_id = -1: a 10-byte varint */
    pb_varint(&t, UINT64_MAX);
    pb_bytes(b, 2, t.data, t.len);
    qw_buf_free(&t);
    if (add_dummy_prefix >= 0) {
        qw_buf n = {0};
        pb_bytes(&n, 1, "identity", 8);
        pb_key(&n, 3, 0);
        pb_varint(&n, (uint64_t)add_dummy_prefix);
        pb_bytes(b, 3, n.data, n.len);
        qw_buf_free(&n);
    }
}

/* ---- fixtures ------------------------------------------------------------------------------- */

TEST(test_llama3_fixture) {
    qw_vocab *v = load(LLAMA3, NULL, 128256);
    if (!v) return;
    CHECK_EQ_STR(v->model, "gpt2");
    CHECK_EQ_STR(v->pre, "llama-bpe");
    CHECK_EQ_INT(v->n_tokens, 128256);
    CHECK(v->scores == NULL);
    CHECK_EQ_INT(v->n_merges, 280147);
    CHECK_EQ_STR(v->merges[0], "\xC4\xA0 \xC4\xA0");
    CHECK_EQ_STR(v->merges[1], "\xC4\xA0 \xC4\xA0\xC4\xA0\xC4\xA0");
    CHECK_EQ_STR(v->tokens[0], "!");
    CHECK_EQ_STR(v->tokens[279], "\xC4\xA0the");
    CHECK_EQ_STR(v->tokens[1000], "indow");
    CHECK_EQ_INT(v->types[279], QW_TOKEN_NORMAL);
    CHECK_EQ_STR(v->tokens[128000], "<|begin_of_text|>");
    CHECK_EQ_INT(v->types[128000], QW_TOKEN_CONTROL);
    CHECK_EQ_STR(v->tokens[128255], "<|reserved_special_token_250|>");
    CHECK_EQ_INT(v->types[128255], QW_TOKEN_CONTROL);
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 128000);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 128001);
    CHECK_EQ_INT(v->special[QW_SPECIAL_UNK], -1);
    CHECK_EQ_INT(v->special[QW_SPECIAL_PAD], -1);
    CHECK_EQ_INT(v->add_bos, 0); /* a ByteLevel post-processor only: HF adds neither */
    CHECK_EQ_INT(v->add_eos, 0);
    CHECK_EQ_INT(v->add_space_prefix, -1);
    CHECK(v->chat_template && strstr(v->chat_template, "<|start_header_id|>"));
    qw_vocab_free(v);
}

TEST(test_llama3_padded) {
    qw_vocab *v = load(LLAMA3, NULL, 128300);
    if (!v) return;
    CHECK_EQ_INT(v->n_tokens, 128300);
    CHECK_EQ_STR(v->tokens[128255], "<|reserved_special_token_250|>");
    CHECK_EQ_STR(v->tokens[128256], "[PAD128256]");
    CHECK_EQ_STR(v->tokens[128299], "[PAD128299]");
    CHECK_EQ_INT(v->types[128299], QW_TOKEN_UNUSED);
    qw_vocab_free(v);
}

TEST(test_qwen3_fixture) {
    qw_vocab *v = load(QWEN3, NULL, 151669);
    if (!v) return;
    CHECK_EQ_STR(v->model, "gpt2");
    CHECK_EQ_STR(v->pre, "qwen2");
    CHECK_EQ_INT(v->n_tokens, 151669);
    CHECK_EQ_INT(v->n_merges, 151387);
    /* pair-form merges written "a b" */
    CHECK_EQ_STR(v->merges[0], "\xC4\xA0 \xC4\xA0");
    CHECK_EQ_STR(v->merges[1], "\xC4\xA0\xC4\xA0 \xC4\xA0\xC4\xA0");
    CHECK_EQ_STR(v->tokens[279], "\xC4\xA0the");
    CHECK_EQ_STR(v->tokens[151643], "<|endoftext|>");
    CHECK_EQ_INT(v->types[151643], QW_TOKEN_CONTROL);
    CHECK_EQ_STR(v->tokens[151657], "<tool_call>"); /* added, not special */
    CHECK_EQ_INT(v->types[151657], QW_TOKEN_USER_DEFINED);
    CHECK_EQ_STR(v->tokens[151659], "<|fim_prefix|>"); /* not special, but looks it */
    CHECK_EQ_INT(v->types[151659], QW_TOKEN_CONTROL);
    CHECK_EQ_STR(v->tokens[151667], "<think>");
    CHECK_EQ_INT(v->types[151667], QW_TOKEN_USER_DEFINED);
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], -1); /* bos_token is null */
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 151645);
    CHECK_EQ_INT(v->special[QW_SPECIAL_PAD], 151643);
    CHECK_EQ_INT(v->add_bos, 0);
    CHECK_EQ_INT(v->add_eos, 0); /* ByteLevel post-processor */
    CHECK(v->chat_template && strstr(v->chat_template, "<|im_start|>"));
    qw_vocab_free(v);
}

TEST(test_qwen3_config_fallback) {
    /* config.json ids fill only what tokenizer_config left open, and only inside the vocab. */
    json_t *config = json_pack("{s:i, s:i, s:i, s:i}", "bos_token_id", 151643, "eos_token_id",
                               7, "unk_token_id", 999999, "mask_token_id", -3);
    qw_vocab *v = load(QWEN3, config, 151669);
    json_decref(config);
    if (!v) return;
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 151643);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 151645);
    CHECK_EQ_INT(v->special[QW_SPECIAL_UNK], -1);
    CHECK_EQ_INT(v->special[QW_SPECIAL_MASK], -1);
    qw_vocab_free(v);
}

TEST(test_llama2_fixture) {
    qw_vocab *v = load(LLAMA2, NULL, 32000);
    if (!v) return;
    CHECK_EQ_STR(v->model, "llama");
    CHECK_EQ_STR(v->pre, "default");
    CHECK_EQ_INT(v->n_tokens, 32000);
    CHECK_EQ_INT(v->n_merges, 0); /* SentencePiece vocabularies carry scores, not merges */
    CHECK(v->scores != NULL);
    CHECK_EQ_STR(v->tokens[0], "<unk>");
    CHECK_EQ_INT(v->types[0], QW_TOKEN_UNKNOWN);
    CHECK_EQ_INT(v->types[1], QW_TOKEN_CONTROL);
    CHECK_EQ_INT(v->types[2], QW_TOKEN_CONTROL);
    CHECK_EQ_STR(v->tokens[3], "<0x00>");
    CHECK_EQ_INT(v->types[3], QW_TOKEN_BYTE);
    CHECK_EQ_STR(v->tokens[13], "<0x0A>");
    CHECK_EQ_INT(v->types[13], QW_TOKEN_BYTE);
    CHECK_EQ_INT(v->types[258], QW_TOKEN_BYTE);
    CHECK_EQ_STR(v->tokens[272], SP "the");
    CHECK_EQ_INT(v->types[272], QW_TOKEN_NORMAL);
    CHECK_EQ_STR(v->tokens[100], "<0x61>");
    /* scores: minus the rank of the first merge producing the token */
    if (v->scores) {
        CHECK_NEAR(v->scores[261], 0.0, 0); /* "▁t": merge 0 */
        CHECK_NEAR(v->scores[272], -11.0, 0);   /* "▁the": merge 11 */
        CHECK_NEAR(v->scores[259], -58876.0, 0); /* "▁▁": merge 58876 */
        CHECK_NEAR(v->scores[13], -58981.0, 0);  /* no merge: below all 58980 */
        CHECK_NEAR(v->scores[1], -58981.0, 0);
    }
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 1);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 2);
    CHECK_EQ_INT(v->special[QW_SPECIAL_UNK], 0);
    CHECK_EQ_INT(v->special[QW_SPECIAL_PAD], -1);
    CHECK_EQ_INT(v->add_bos, 1);
    CHECK_EQ_INT(v->add_eos, 0);
    CHECK_EQ_INT(v->add_space_prefix, 1);
    CHECK(v->chat_template == NULL);
    qw_vocab_free(v);
}

TEST(test_rows_too_few) {
    expect_fail(LLAMA3, 128000, QW_ERR_CORRUPT, "embedding rows");
    expect_fail(LLAMA3, 0, QW_ERR_INVALID_ARG, "embedding rows");
    expect_fail(LLAMA2, 31999, QW_ERR_CORRUPT, "tokenizer.json");
}

/* ---- GGUF export ---------------------------------------------------------------------------- */

static qw_gguf *write_and_open(const qw_vocab *v, const char *path) {
    qw_error err = {0};
    qw_gguf_writer *w = NULL;
    qw_gguf *g = NULL;
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    if (!w) return NULL;
    CHECK_OK(qw_gguf_writer_set_str(w, "general.architecture", "llama", &err), &err);
    CHECK_OK(qw_vocab_write_gguf(v, w, &err), &err);
    CHECK_OK(qw_gguf_writer_begin(w, path, &err), &err);
    CHECK_OK(qw_gguf_writer_finish(w, &err), &err);
    qw_gguf_writer_free(w);
    CHECK_OK(qw_gguf_open(path, &g, &err), &err);
    return g;
}

static void check_kv(const qw_gguf *g, const char *key, qw_gguf_type type, qw_gguf_type elem,
                     uint64_t count) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv) {
        fprintf(stderr, "  missing key %s\n", key);
        CHECK(kv != NULL);
        return;
    }
    CHECK_EQ_INT(kv->value.type, type);
    if (type == QW_GGUF_ARRAY) {
        CHECK_EQ_INT(kv->value.v.arr.elem_type, elem);
        CHECK_EQ_INT(kv->value.v.arr.count, count);
    }
}

TEST(test_gguf_llama2) {
    qw_vocab *v = load(LLAMA2, NULL, 32000);
    if (!v) return;
    char path[800];
    snprintf(path, sizeof path, "%s/llama2.gguf", case_dir("gguf-llama2"));
    qw_gguf *g = write_and_open(v, path);
    if (g) {
        static const char *const order[] = {
            "general.architecture",         "tokenizer.ggml.model",
            "tokenizer.ggml.pre",           "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",        "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",  "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
        };
        CHECK_EQ_INT(qw_gguf_kv_count(g), sizeof order / sizeof order[0]);
        for (size_t i = 0; i < qw_gguf_kv_count(g) && i < sizeof order / sizeof order[0]; i++) {
            CHECK_EQ_STR(qw_gguf_kv_at(g, i)->key, order[i]);
        }
        check_kv(g, "tokenizer.ggml.tokens", QW_GGUF_ARRAY, QW_GGUF_STRING, 32000);
        check_kv(g, "tokenizer.ggml.scores", QW_GGUF_ARRAY, QW_GGUF_FLOAT32, 32000);
        check_kv(g, "tokenizer.ggml.token_type", QW_GGUF_ARRAY, QW_GGUF_INT32, 32000);
        check_kv(g, "tokenizer.ggml.bos_token_id", QW_GGUF_UINT32, 0, 0);
        check_kv(g, "tokenizer.ggml.add_bos_token", QW_GGUF_BOOL, 0, 0);
        check_kv(g, "tokenizer.ggml.add_space_prefix", QW_GGUF_BOOL, 0, 0);
        const qw_gguf_kv *types = qw_gguf_find_kv(g, "tokenizer.ggml.token_type");
        if (types) CHECK_EQ_INT(((const int32_t *)types->value.v.arr.data)[3], QW_TOKEN_BYTE);
        const qw_gguf_kv *toks = qw_gguf_find_kv(g, "tokenizer.ggml.tokens");
        if (toks) {
            qw_gguf_str s = toks->value.v.arr.strs[272];
            CHECK(s.len == 6 && memcmp(s.data, SP "the", 6) == 0);
        }
        uint64_t u;
        CHECK(qw_gguf_get_u64(g, "tokenizer.ggml.unknown_token_id", &u) && u == 0);
        qw_gguf_close(g);
    }
    qw_vocab_free(v);
}

TEST(test_gguf_qwen3) {
    qw_vocab *v = load(QWEN3, NULL, 151700);
    if (!v) return;
    char path[800];
    snprintf(path, sizeof path, "%s/qwen3.gguf", case_dir("gguf-qwen3"));
    qw_gguf *g = write_and_open(v, path);
    if (g) {
        static const char *const order[] = {
            "general.architecture",          "tokenizer.ggml.model",
            "tokenizer.ggml.pre",            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",     "tokenizer.ggml.merges",
            "tokenizer.ggml.eos_token_id",   "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",  "tokenizer.ggml.add_eos_token",
            "tokenizer.chat_template",
        };
        CHECK_EQ_INT(qw_gguf_kv_count(g), sizeof order / sizeof order[0]);
        for (size_t i = 0; i < qw_gguf_kv_count(g) && i < sizeof order / sizeof order[0]; i++) {
            CHECK_EQ_STR(qw_gguf_kv_at(g, i)->key, order[i]);
        }
        check_kv(g, "tokenizer.ggml.tokens", QW_GGUF_ARRAY, QW_GGUF_STRING, 151700);
        check_kv(g, "tokenizer.ggml.token_type", QW_GGUF_ARRAY, QW_GGUF_INT32, 151700);
        check_kv(g, "tokenizer.ggml.merges", QW_GGUF_ARRAY, QW_GGUF_STRING, 151387);
        check_kv(g, "tokenizer.ggml.eos_token_id", QW_GGUF_UINT32, 0, 0);
        CHECK(qw_gguf_find_kv(g, "tokenizer.ggml.scores") == NULL);
        char *pre = qw_gguf_get_string(g, "tokenizer.ggml.pre");
        CHECK_EQ_STR(pre, "qwen2");
        qw_free(pre);
        qw_gguf_close(g);
    }
    qw_vocab_free(v);
}

TEST(test_write_rejects_bad_vocab) {
    qw_error err = {0};
    qw_gguf_writer *w = NULL;
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    qw_vocab empty = {0};
    CHECK_EQ_INT(qw_vocab_write_gguf(&empty, w, &err), QW_ERR_INVALID_ARG);
    CHECK_EQ_INT(qw_vocab_write_gguf(NULL, w, &err), QW_ERR_INVALID_ARG);
    char *tokens[2] = {"a", NULL};
    int32_t types[2] = {1, 1};
    qw_vocab hand = {.model = "gpt2", .n_tokens = 2, .tokens = tokens, .types = types};
    for (int i = 0; i < QW_SPECIAL_COUNT; i++) hand.special[i] = -1;
    CHECK_EQ_INT(qw_vocab_write_gguf(&hand, w, &err), QW_ERR_INVALID_ARG);
    tokens[1] = "b";
    hand.special[QW_SPECIAL_EOS] = 2;
    CHECK_EQ_INT(qw_vocab_write_gguf(&hand, w, &err), QW_ERR_INVALID_ARG);
    hand.special[QW_SPECIAL_EOS] = 1;
    hand.add_bos = hand.add_eos = hand.add_space_prefix = -1;
    CHECK_OK(qw_vocab_write_gguf(&hand, w, &err), &err);
    qw_gguf_writer_free(w);
    CHECK_EQ_STR(qw_special_token_key(QW_SPECIAL_SEP), "seperator");
    CHECK_EQ_STR(qw_special_token_key(QW_SPECIAL_FIM_SEP), "fim_sep");
    CHECK(qw_special_token_key(QW_SPECIAL_COUNT) == NULL);
}

/* ---- pre-tokenizer table -------------------------------------------------------------------- */

static void check_pre(const char *name, const char *normalizer, const char *pre_tokenizer,
                      const char *flags, const char *want_model, const char *want_pre) {
    const char *dir = case_dir(name);
    char *json = tiny_bpe_json(normalizer, pre_tokenizer, flags);
    write_text(dir, "tokenizer.json", json);
    qw_free(json);
    qw_vocab *v = load(dir, NULL, 10);
    if (!v) return;
    CHECK_EQ_STR(v->model, want_model);
    CHECK_EQ_STR(v->pre, want_pre);
    qw_vocab_free(v);
}

TEST(test_pre_table) {
    check_pre("gpt2", "null", BYTE_LEVEL, "", "gpt2", "gpt-2");
    check_pre("gpt2-seq", "null",
              "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Sequence\", "
              "\"pretokenizers\": [{\"type\": \"ByteLevel\", \"add_prefix_space\": false}]}]}",
              "", "gpt2", "gpt-2");
    check_pre("smollm", "null",
              "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", "
              "\"individual_digits\": true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
              "false, \"trim_offsets\": true, \"use_regex\": true}]}",
              "", "gpt2", "smollm");
    check_pre("metaspace", "null",
              "{\"type\": \"Metaspace\", \"replacement\": \"" SP "\", \"prepend_scheme\": "
              "\"first\", \"split\": false}",
              "\"byte_fallback\": true,", "llama", "default");
}

TEST(test_pair_merge_with_space) {
    /* The pair form exists for tokens that contain spaces; GGUF merges are split on the one
     * real space, so spaces inside a part are written as U+0120 (as the converter does). */
    const char *dir = case_dir("space-merge");
    write_text(dir, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \" \": 1, \"a \": 2,"
               " \"a  \": 3}, \"merges\": [[\"a\", \" \"], [\"a \", \" \"]]}}");
    qw_vocab *v = load(dir, NULL, 4);
    if (!v) return;
    CHECK_EQ_INT(v->n_merges, 2);
    CHECK_EQ_STR(v->merges[0], "a \xC4\xA0");
    CHECK_EQ_STR(v->merges[1], "a\xC4\xA0 \xC4\xA0");
    CHECK_EQ_STR(v->tokens[2], "a "); /* the vocabulary keeps the real space */
    qw_vocab_free(v);
}

TEST(test_tiny_bpe_contents) {
    const char *dir = case_dir("tiny");
    char *json = tiny_bpe_json("null", BYTE_LEVEL, "");
    write_text(dir, "tokenizer.json", json);
    qw_free(json);
    write_text(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<|end|>\"},"
               " \"eos_token\": \"ab\", \"pad_token\": null, \"add_eos_token\": true,"
               " \"chat_template\": [{\"name\": \"default\", \"template\": \"DEF\"},"
               " {\"name\": \"tool use\", \"template\": \"TOOL\"}, {\"name\": \"rag\","
               " \"template\": \"RAG\"}]}");
    qw_vocab *v = load(dir, NULL, 9);
    if (!v) return;
    CHECK_EQ_INT(v->n_tokens, 9);
    CHECK_EQ_INT(v->n_merges, 2);
    CHECK_EQ_STR(v->merges[0], "a b");
    CHECK_EQ_STR(v->merges[1], "\xC4\xA0 ab");
    CHECK_EQ_INT(v->types[5], QW_TOKEN_CONTROL);
    CHECK_EQ_INT(v->types[6], QW_TOKEN_USER_DEFINED);
    CHECK_EQ_INT(v->types[7], QW_TOKEN_CONTROL);
    CHECK_EQ_INT(v->types[8], QW_TOKEN_UNUSED);
    CHECK_EQ_STR(v->tokens[8], "[PAD8]");
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 5);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 2); /* not an added token: found in the vocab */
    CHECK_EQ_INT(v->add_eos, 1);
    CHECK_EQ_STR(v->chat_template, "DEF");
    char path[800];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    qw_gguf *g = write_and_open(v, path);
    if (g) {
        char *tool = qw_gguf_get_string(g, "tokenizer.chat_template.tool_use");
        char *rag = qw_gguf_get_string(g, "tokenizer.chat_template.rag");
        CHECK_EQ_STR(tool, "TOOL");
        CHECK_EQ_STR(rag, "RAG");
        qw_free(tool);
        qw_free(rag);
        check_kv(g, "tokenizer.chat_templates", QW_GGUF_ARRAY, QW_GGUF_STRING, 2);
        qw_gguf_close(g);
    }
    qw_vocab_free(v);

    /* chat_template.jinja wins over tokenizer_config, with additional_chat_templates. */
    write_text(dir, "chat_template.jinja", "JINJA");
    char extra[800];
    snprintf(extra, sizeof extra, "%s/additional_chat_templates", dir);
    mkdir(extra, 0755);
    write_text(extra, "b.jinja", "B");
    write_text(extra, "a.jinja", "A");
    v = load(dir, NULL, 9);
    if (!v) return;
    CHECK_EQ_STR(v->chat_template, "JINJA");
    snprintf(path, sizeof path, "%s/tiny2.gguf", dir);
    g = write_and_open(v, path);
    if (g) {
        const qw_gguf_kv *names = qw_gguf_find_kv(g, "tokenizer.chat_templates");
        CHECK(names && names->value.v.arr.count == 2 && names->value.v.arr.strs[0].data[0] == 'a');
        char *b = qw_gguf_get_string(g, "tokenizer.chat_template.b");
        CHECK_EQ_STR(b, "B");
        qw_free(b);
        qw_gguf_close(g);
    }
    qw_vocab_free(v);
}

/* WordPiece (BERT) in llama.cpp's "bert" form: word-initial pieces marked with U+2581,
 * continuations without "##", bracketed and added tokens as they are. */
TEST(test_wordpiece) {
    const char *dir = case_dir("wordpiece");
    write_text(dir, "tokenizer.json",
               "{\"added_tokens\": [{\"id\": 0, \"content\": \"[PAD]\", \"special\": true},"
               " {\"id\": 1, \"content\": \"[UNK]\", \"special\": true},"
               " {\"id\": 2, \"content\": \"[CLS]\", \"special\": true},"
               " {\"id\": 7, \"content\": \"extra\", \"special\": false}],"
               " \"normalizer\": {\"type\": \"BertNormalizer\", \"lowercase\": true},"
               " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"},"
               " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\","
               " \"continuing_subword_prefix\": \"##\", \"max_input_chars_per_word\": 100,"
               " \"vocab\": {\"[PAD]\": 0, \"[UNK]\": 1, \"[CLS]\": 2, \"play\": 3,"
               " \"##ing\": 4, \"[unused0]\": 5, \"##\": 6, \"extra\": 7}}}");
    qw_vocab *v = load(dir, NULL, 10);
    if (!v) return;
    CHECK_EQ_STR(v->model, "bert");
    CHECK_EQ_INT(v->n_tokens, 10);
    CHECK(v->scores == NULL && v->n_merges == 0);
    CHECK_EQ_STR(v->tokens[0], "[PAD]");
    CHECK_EQ_INT(v->types[0], QW_TOKEN_CONTROL);
    CHECK_EQ_INT(v->types[1], QW_TOKEN_UNKNOWN);
    CHECK_EQ_INT(v->types[2], QW_TOKEN_CONTROL);
    CHECK_EQ_STR(v->tokens[3], SP "play");
    CHECK_EQ_STR(v->tokens[4], "ing");
    CHECK_EQ_INT(v->types[4], QW_TOKEN_NORMAL);
    CHECK_EQ_STR(v->tokens[5], "[unused0]");
    CHECK_EQ_INT(v->types[5], QW_TOKEN_NORMAL);
    CHECK_EQ_STR(v->tokens[6], SP "##"); /* "##" alone is a whole word, not a prefix */
    CHECK_EQ_STR(v->tokens[7], "extra");
    CHECK_EQ_INT(v->types[7], QW_TOKEN_USER_DEFINED);
    CHECK_EQ_STR(v->tokens[9], "[PAD9]");
    CHECK_EQ_INT(v->types[9], QW_TOKEN_UNUSED);
    qw_vocab_free(v);
}

TEST(test_template_post_processor) {
    /* A template ending in a token other than eos makes it eos; the old eos becomes eot. */
    const char *dir = case_dir("template");
    char *json = tiny_bpe_json("null", BYTE_LEVEL, "");
    char *pp = strstr(json, "\"normalizer\"");
    char *full = qw_sprintf(
        "%.*s\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
        "{\"SpecialToken\": {\"id\": \"<tool>\", \"type_id\": 0}},"
        "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
        "{\"SpecialToken\": {\"id\": \"<|end|>\", \"type_id\": 0}}]}, %s",
        (int)(pp - json), json, pp);
    write_text(dir, "tokenizer.json", full);
    qw_free(json);
    qw_free(full);
    write_text(dir, "tokenizer_config.json",
               "{\"bos_token\": \"<tool>\", \"eos_token\": \"<|fim|>\"}");
    qw_vocab *v = load(dir, NULL, 8);
    if (!v) return;
    CHECK_EQ_INT(v->add_bos, 1);
    CHECK_EQ_INT(v->add_eos, 1);
    CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 6);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 5);
    CHECK_EQ_INT(v->special[QW_SPECIAL_EOT], 7);
    qw_vocab_free(v);
}

/* ---- tokenizer.model ------------------------------------------------------------------------ */

TEST(test_spm_model) {
    const char *dir = case_dir("spm");
    qw_buf b = {0};
    spm_model(&b, 2, 0);
    write_bytes(dir, "tokenizer.model", b.data, b.len);
    write_text(dir, "tokenizer_config.json",
               "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"unk_token\": \"<unk>\","
               " \"add_bos_token\": true, \"added_tokens_decoder\": {"
               "\"12\": {\"content\": \"<|im_start|>\", \"special\": false},"
               "\"13\": {\"content\": \"new" SP "word\", \"special\": false},"
               "\"99\": {\"content\": \"far\", \"special\": true}}}");
    write_text(dir, "added_tokens.json", "{\"<extra>\": 14}");
    qw_vocab *v = load(dir, NULL, 16);
    if (v) {
        CHECK_EQ_STR(v->model, "llama");
        CHECK_EQ_STR(v->pre, "default");
        CHECK_EQ_INT(v->n_tokens, 16);
        CHECK_EQ_INT(v->types[0], QW_TOKEN_UNKNOWN);
        CHECK_EQ_INT(v->types[1], QW_TOKEN_CONTROL);
        CHECK_EQ_INT(v->types[3], QW_TOKEN_BYTE);
        CHECK_EQ_INT(v->types[5], QW_TOKEN_NORMAL);
        CHECK_EQ_INT(v->types[11], QW_TOKEN_USER_DEFINED);
        CHECK_EQ_STR(v->tokens[10], SP "ab");
        CHECK_NEAR(v->scores[10], -6.0, 0);
        CHECK_EQ_STR(v->tokens[12], "<|im_start|>");
        CHECK_EQ_INT(v->types[12], QW_TOKEN_CONTROL);
        CHECK_NEAR(v->scores[12], -1000.0, 0);
        CHECK_EQ_STR(v->tokens[13], "new word");
        CHECK_EQ_INT(v->types[13], QW_TOKEN_USER_DEFINED);
        CHECK_EQ_STR(v->tokens[14], "<extra>");
        CHECK_EQ_INT(v->types[14], QW_TOKEN_USER_DEFINED);
        CHECK_EQ_STR(v->tokens[15], "[PAD15]");
        CHECK_EQ_INT(v->types[15], QW_TOKEN_UNUSED);
        CHECK_NEAR(v->scores[15], -10000.0, 0);
        CHECK_EQ_INT(v->add_space_prefix, 0);
        CHECK_EQ_INT(v->add_bos, 1);
        CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], 1);
        CHECK_EQ_INT(v->special[QW_SPECIAL_EOS], 2);
        CHECK_EQ_INT(v->special[QW_SPECIAL_UNK], 0);
        qw_vocab_free(v);
    }

    /* add_dummy_prefix defaults to true when normalizer_spec is absent */
    dir = case_dir("spm-default");
    b.len = 0;
    spm_model(&b, 2, -1);
    write_bytes(dir, "tokenizer.model", b.data, b.len);
    v = load(dir, NULL, 12);
    if (v) {
        CHECK_EQ_INT(v->add_space_prefix, 1);
        CHECK_EQ_INT(v->special[QW_SPECIAL_BOS], -1); /* nothing names it */
        qw_vocab_free(v);
    }
    expect_fail(dir, 11, QW_ERR_CORRUPT, "embedding rows");

    /* Unigram models are refused */
    dir = case_dir("spm-unigram");
    b.len = 0;
    spm_model(&b, 1, 1);
    write_bytes(dir, "tokenizer.model", b.data, b.len);
    expect_fail(dir, 12, QW_ERR_UNSUPPORTED_INPUT, "UNIGRAM");
    qw_buf_free(&b);
}

TEST(test_spm_model_corrupt) {
    qw_buf good = {0};
    spm_model(&good, 2, 1);
    const char *dir = case_dir("spm-bad");
    /* every truncation: an error naming the file, or (at a field boundary) a smaller model */
    for (size_t len = 0; len < good.len; len++) {
        write_bytes(dir, "tokenizer.model", good.data, len);
        qw_vocab *v = NULL;
        qw_error err = {0};
        qw_status st = qw_vocab_load_hf(dir, NULL, 64, &v, &err);
        if (st == QW_OK) {
            qw_vocab_free(v);
        } else if (!strstr(err.message, "tokenizer.model")) {
            fprintf(stderr, "  truncated at %zu: %s\n", len, err.message);
            CHECK(strstr(err.message, "tokenizer.model") != NULL);
        }
    }
    write_bytes(dir, "tokenizer.model", good.data, good.len - 1);
    expect_fail(dir, 64, QW_ERR_CORRUPT, "tokenizer.model");
    /* found by fuzz/fuzz_vocab: an empty file maps to no memory (NULL), which the protobuf
     * reader offset (NULL + 0, undefined); it is refused as empty before any parsing */
    write_bytes(dir, "tokenizer.model", "", 0);
    expect_fail(dir, 64, QW_ERR_CORRUPT, "empty file");
    /* garbage, deterministic */
    uint8_t junk[4096];
    uint32_t x = 12345;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (uint8_t)(x >> 16);
        }
        write_bytes(dir, "tokenizer.model", junk, 64 + (size_t)round * 80);
        qw_vocab *v = NULL;
        qw_error err = {0};
        qw_status st = qw_vocab_load_hf(dir, NULL, 64, &v, &err);
        CHECK(st != QW_OK);
        CHECK(strstr(err.message, "tokenizer.model") != NULL);
        qw_vocab_free(v);
    }
    /* bad piece type, and text that is not UTF-8 */
    qw_buf b = {0};
    pb_piece(&b, "a", 0, 9);
    pb_bpe_trainer_spec(&b);
    write_bytes(dir, "tokenizer.model", b.data, b.len);
    expect_fail(dir, 64, QW_ERR_CORRUPT, "piece type");
    b.len = 0;
    pb_piece(&b, "\xff\xfe", 0, 1);
    pb_bpe_trainer_spec(&b);
    write_bytes(dir, "tokenizer.model", b.data, b.len);
    expect_fail(dir, 64, QW_ERR_CORRUPT, "UTF-8");
    qw_buf_free(&b);
    qw_buf_free(&good);
}

/* ---- corrupt tokenizer.json / tokenizer_config.json ----------------------------------------- */

static void expect_json_fail(const char *name, const char *json, qw_status status,
                             const char *needle) {
    const char *dir = case_dir(name);
    write_text(dir, "tokenizer.json", json);
    expect_fail(dir, 16, status, needle);
}

TEST(test_corrupt_tokenizer_json) {
    expect_json_fail("trunc", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ",
                     QW_ERR_CORRUPT, "tokenizer.json");
    expect_json_fail("empty", "", QW_ERR_CORRUPT, "tokenizer.json");
    expect_json_fail("array", "[1, 2]", QW_ERR_CORRUPT, "tokenizer.json");
    expect_json_fail("nomodel", "{\"added_tokens\": []}", QW_ERR_CORRUPT, "\"model\"");
    expect_json_fail("modelarray", "{\"model\": []}", QW_ERR_CORRUPT, "\"model\"");
    expect_json_fail("unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
                     QW_ERR_UNSUPPORTED_INPUT, "Unigram");
    expect_json_fail("wordpiece", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
                     QW_ERR_CORRUPT, "empty");
    expect_json_fail("wp-vocab", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": []}}",
                     QW_ERR_CORRUPT, "model.vocab");
    expect_json_fail("wp-prefix",
                     "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0},"
                     " \"continuing_subword_prefix\": \"@@\"}}",
                     QW_ERR_UNSUPPORTED_INPUT, "continuing_subword_prefix");
    expect_json_fail("wp-unk",
                     "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0},"
                     " \"unk_token\": 3}}",
                     QW_ERR_CORRUPT, "model.unk_token");
    expect_json_fail("wp-id",
                     "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 99}}}",
                     QW_ERR_CORRUPT, "embedding rows");
    expect_json_fail("wp-added",
                     "{\"added_tokens\": 4, \"model\": {\"type\": \"WordPiece\","
                     " \"vocab\": {\"a\": 0}}}",
                     QW_ERR_CORRUPT, "added_tokens");

    char *ok = tiny_bpe_json("null", BYTE_LEVEL, "");
    /* each line: a corruption of the tiny tokenizer (from, to), the status, and a needle */
    static const struct {
        const char *from, *to;
        qw_status status;
        const char *needle;
    } cases[] = {
        {"\"a\": 0", "\"a\": \"zero\"", QW_ERR_CORRUPT, "model.vocab"},
        {"\"a\": 0", "\"a\": -4", QW_ERR_CORRUPT, "model.vocab"},
        {"\"a\": 0", "\"a\": 1", QW_ERR_CORRUPT, "id 1"},
        {"\"merges\": [", "\"merges\": [5, ", QW_ERR_CORRUPT, "model.merges[0]"},
        {"\"a b\"", "\"a  b\"", QW_ERR_CORRUPT, "model.merges[0]"},
        {"\"a b\"", "\"a c\"", QW_ERR_CORRUPT, "\"c\""},
        {"\"a b\"", "\"b a\"", QW_ERR_CORRUPT, "\"ba\""},
        {"[\"\\u0120\", \"ab\"]", "[\"\\u0120\"]", QW_ERR_CORRUPT, "model.merges[1]"},
        {"\"merges\": [\"a b\", [\"\\u0120\", \"ab\"]]", "\"merges\": {}", QW_ERR_CORRUPT,
         "model.merges"},
        {"\"vocab\": {", "\"vocab\": 5, \"x\": {", QW_ERR_CORRUPT, "model.vocab"},
        {"\"added_tokens\": [", "\"added_tokens\": 5, \"y\": [", QW_ERR_CORRUPT,
         "added_tokens"},
        {"\"id\": 5,", "\"id\": \"5\",", QW_ERR_CORRUPT, "added_tokens[0]"},
        {"\"content\": \"<|end|>\"", "\"content\": 5", QW_ERR_CORRUPT, "added_tokens[0]"},
        {"\"special\": true", "\"special\": \"yes\"", QW_ERR_CORRUPT, "added_tokens[0]"},
        {"\"add_prefix_space\": false", "\"add_prefix_space\": 0", QW_ERR_CORRUPT,
         "add_prefix_space"},
        {"\"add_prefix_space\": false", "\"add_prefix_space\": true", QW_ERR_UNSUPPORTED_INPUT,
         "ByteLevel(add_prefix_space=true, use_regex=true)"},
        {"\"type\": \"ByteLevel\"", "\"type\": \"Whitespace\"", QW_ERR_UNSUPPORTED_INPUT,
         "pre_tokenizer Whitespace"},
        {"\"type\": \"ByteLevel\"", "\"kind\": \"ByteLevel\"", QW_ERR_CORRUPT, "\"type\""},
        {"\"normalizer\": null", "\"normalizer\": {\"type\": \"NFKC\"}",
         QW_ERR_UNSUPPORTED_INPUT, "normalizer NFKC"},
        {"\"normalizer\": null", "\"normalizer\": 3", QW_ERR_CORRUPT, "normalizer"},
        {"\"type\": \"BPE\",", "\"type\": \"BPE\", \"dropout\": 0.1,", QW_ERR_UNSUPPORTED_INPUT,
         "dropout"},
        {"\"type\": \"BPE\",", "\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\",",
         QW_ERR_UNSUPPORTED_INPUT, "continuing_subword_prefix"},
        {"\"type\": \"BPE\",", "\"type\": \"BPE\", \"byte_fallback\": 1,", QW_ERR_CORRUPT,
         "model.byte_fallback"},
        {"\"type\": \"BPE\",", "\"type\": \"BPE\", \"ignore_merges\": true,",
         QW_ERR_UNSUPPORTED_INPUT, "ignore_merges=true"},
        {"\"type\": \"BPE\",", "\"type\": 7,", QW_ERR_CORRUPT, "model.type"},
        {"\"id\": 7,", "\"id\": 70,", QW_ERR_CORRUPT, "embedding rows"},
        {"\"<|end|>\"", "\"<|e\\u0000d|>\"", QW_ERR_UNSUPPORTED_INPUT, "NUL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = strstr(ok, cases[i].from);
        if (!at) {
            fprintf(stderr, "  case %zu: \"%s\" not in the template\n", i, cases[i].from);
            CHECK(at != NULL);
            continue;
        }
        char *bad = qw_sprintf("%.*s%s%s", (int)(at - ok), ok, cases[i].to,
                               at + strlen(cases[i].from));
        char name[32];
        snprintf(name, sizeof name, "case%zu", i);
        expect_json_fail(name, bad, cases[i].status, cases[i].needle);
        qw_free(bad);
    }

    /* every truncation of a valid file fails cleanly */
    const char *dir = case_dir("trunc-all");
    for (size_t len = 0; len < strlen(ok); len++) {
        write_bytes(dir, "tokenizer.json", ok, len);
        qw_vocab *v = NULL;
        qw_error err = {0};
        CHECK(qw_vocab_load_hf(dir, NULL, 16, &v, &err) == QW_ERR_CORRUPT);
        CHECK(strstr(err.message, "tokenizer.json") != NULL);
    }
    qw_free(ok);
}

TEST(test_corrupt_tokenizer_config) {
    char *ok = tiny_bpe_json("null", BYTE_LEVEL, "");
    static const struct {
        const char *config;
        const char *needle;
    } cases[] = {
        {"{\"bos_token\": 5}", "bos_token"},
        {"{\"eos_token\": {\"content\": 3}}", "eos_token"},
        {"{\"add_bos_token\": \"yes\"}", "add_bos_token"},
        {"{\"chat_template\": 12}", "chat_template"},
        {"{\"chat_template\": [1]}", "chat_template"},
        {"[\"not an object\"]", "tokenizer_config.json"},
        {"{\"bos_token\": ", "tokenizer_config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = case_dir("config");
        write_text(dir, "tokenizer.json", ok);
        write_text(dir, "tokenizer_config.json", cases[i].config);
        expect_fail(dir, 16, QW_ERR_CORRUPT, cases[i].needle);
        if (i == 0) {
            /* the message names the file */
            qw_vocab *v = NULL;
            qw_error err = {0};
            qw_vocab_load_hf(dir, NULL, 16, &v, &err);
            CHECK(strstr(err.message, "tokenizer_config.json") != NULL);
        }
    }
    qw_free(ok);
}

TEST(test_missing_files) {
    expect_fail(case_dir("nothing"), 16, QW_ERR_NOT_FOUND, "tokenizer.json");
    expect_fail("/nonexistent/qwodel/model", 16, QW_ERR_NOT_FOUND, "/nonexistent/qwodel/model");
    qw_vocab *v = NULL;
    qw_error err = {0};
    CHECK_EQ_INT(qw_vocab_load_hf(NULL, NULL, 16, &v, &err), QW_ERR_INVALID_ARG);
    CHECK_EQ_INT(qw_vocab_load_hf(LLAMA3, NULL, 16, NULL, &err), QW_ERR_INVALID_ARG);
    json_t *bad_config = json_array();
    CHECK_EQ_INT(qw_vocab_load_hf(LLAMA3, bad_config, 128256, &v, &err), QW_ERR_CORRUPT);
    json_decref(bad_config);
    qw_vocab_free(NULL);
}

RUN_TESTS(TEST_CASE(test_llama3_fixture), TEST_CASE(test_llama3_padded),
          TEST_CASE(test_qwen3_fixture), TEST_CASE(test_qwen3_config_fallback),
          TEST_CASE(test_llama2_fixture), TEST_CASE(test_rows_too_few),
          TEST_CASE(test_gguf_llama2), TEST_CASE(test_gguf_qwen3),
          TEST_CASE(test_write_rejects_bad_vocab), TEST_CASE(test_pre_table),
          TEST_CASE(test_pair_merge_with_space),
          TEST_CASE(test_tiny_bpe_contents), TEST_CASE(test_wordpiece),
          TEST_CASE(test_template_post_processor),
          TEST_CASE(test_spm_model), TEST_CASE(test_spm_model_corrupt),
          TEST_CASE(test_corrupt_tokenizer_json), TEST_CASE(test_corrupt_tokenizer_config),
          TEST_CASE(test_missing_files))
