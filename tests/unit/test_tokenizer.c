/*
 * test_tokenizer.c — the tokenizer.json loader and pipeline on small hand-written tokenizers
 * (whose ids follow from their construction), and on corrupt, truncated and wrongly typed
 * files, which must give errors naming the key, never a crash. Exactness against HF tokenizers
 * is tests/python/test_tokenizer_encode.py's job.
 */
#include "test.h"

#include <string.h>

#include "core.h"
#include "tokenizer.h"

/* a: 0, b: 1, c: 2, ab: 3, abc: 4, <s>: 5; merges a+b, ab+c */
#define TINY_MODEL                                                                                 \
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, "        \
    "\"abc\": 4, \"<s>\": 5}, \"merges\": [\"a b\", [\"ab\", \"c\"]]}"

static const char TINY[] = "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 5, \"content\": "
                           "\"<s>\", \"special\": true}], " TINY_MODEL
                           ", \"post_processor\": {\"type\": \"TemplateProcessing\", "
                           "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
                           "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": "
                           "{\"<s>\": {\"id\": \"<s>\", \"ids\": [5], \"tokens\": [\"<s>\"]}}}, "
                           "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}}";

static qw_tokenizer *load(const char *json, qw_status want, const char *want_in_message) {
    qw_tokenizer *tok = NULL;
    qw_error err = {0};
    qw_status st = qw_tokenizer_load_json_buffer(json, strlen(json), "t.json", &tok, &err);
    CHECK_EQ_INT(st, want);
    if (want_in_message && !strstr(err.message, want_in_message)) {
        fprintf(stderr, "message \"%s\" does not name \"%s\"\n", err.message, want_in_message);
        CHECK(0);
    }
    if (st != QW_OK) CHECK(tok == NULL);
    return tok;
}

static void check_ids(qw_tokenizer *tok, const char *text, bool special, const int32_t *want,
                      size_t n) {
    qw_token_ids ids = {0};
    qw_error err = {0};
    CHECK_OK(qw_tokenizer_encode(tok, text, strlen(text), special, &ids, &err), &err);
    CHECK_EQ_INT(ids.n, n);
    for (size_t i = 0; i < n && i < ids.n; i++) CHECK_EQ_INT(ids.ids[i], want[i]);
    qw_token_ids_free(&ids);
}

TEST(bpe_merges_in_rank_order) {
    qw_tokenizer *tok = load(TINY, QW_OK, NULL);
    if (!tok) return;
    check_ids(tok, "abc ab ba c", false, (const int32_t[]){4, 3, 1, 0, 2}, 5);
    check_ids(tok, "abc", true, (const int32_t[]){5, 4}, 2);
    check_ids(tok, "a<s>b", false, (const int32_t[]){0, 5, 1}, 3);
    check_ids(tok, "", true, (const int32_t[]){5}, 1);
    CHECK_EQ_INT(qw_tokenizer_vocab_size(tok), 6);
    qw_tokenizer_free(tok);
}

TEST(decode_joins_tokens_and_skips_special_and_unknown_ids) {
    qw_tokenizer *tok = load(TINY, QW_OK, NULL);
    if (!tok) return;
    char *text = NULL;
    size_t len = 0;
    qw_error err = {0};
    const int32_t ids[] = {5, 4, -1, 99, 3};
    CHECK_OK(qw_tokenizer_decode(tok, ids, 5, false, &text, &len, &err), &err);
    CHECK_EQ_STR(text, "<s> abc ab"); /* no decoder: HF joins with spaces */
    qw_free(text);
    CHECK_OK(qw_tokenizer_decode(tok, ids, 5, true, &text, &len, &err), &err);
    CHECK_EQ_STR(text, "abc ab");
    qw_free(text);
    qw_tokenizer_free(tok);
}

TEST(invalid_utf8_input_is_replaced_not_rejected) {
    static const char BYTES[] = "{" TINY_MODEL ", \"decoder\": {\"type\": \"ByteFallback\"}}";
    qw_tokenizer *tok = load(BYTES, QW_OK, NULL);
    if (!tok) return;
    qw_token_ids ids = {0};
    qw_error err = {0};
    const char bad[] = {'a', (char)0xff, 'b', (char)0xe2, (char)0x82};
    /* no byte fallback and no unk: the replacement characters are dropped, as in HF, and the
     * symbols left either side of them then merge: "ab" */
    CHECK_OK(qw_tokenizer_encode(tok, bad, sizeof bad, true, &ids, &err), &err);
    CHECK_EQ_INT(ids.n, 1);
    if (ids.n == 1) CHECK_EQ_INT(ids.ids[0], 3);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
}

TEST(free_null_is_a_no_op) {
    qw_tokenizer_free(NULL);
    qw_token_ids_free(NULL);
}

TEST(wrong_types_name_the_key) {
    load("[]", QW_ERR_CORRUPT, "t.json");
    load("{}", QW_ERR_CORRUPT, "model");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": []}}", QW_ERR_CORRUPT, "model.vocab");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}}}", QW_ERR_CORRUPT,
         "model.vocab");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}}}", QW_ERR_CORRUPT, "model.vocab");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}", QW_ERR_CORRUPT,
         "model.vocab");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}", QW_ERR_CORRUPT,
         "model.merges");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}", QW_ERR_CORRUPT,
         "model.merges[0]");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}}",
         QW_ERR_CORRUPT, "model.merges[0]");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}}",
         QW_ERR_CORRUPT, "model.merges[0]"); /* "aa" is not in the vocabulary */
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"byte_fallback\": 1}}", QW_ERR_CORRUPT,
         "model.byte_fallback");
    load("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"dropout\": 0.1}}",
         QW_ERR_UNSUPPORTED_INPUT, "model.dropout");
    load("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", QW_ERR_UNSUPPORTED_INPUT,
         "model.type");
    load("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\"]]}}", QW_ERR_CORRUPT,
         "model.vocab[0]");
    load("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.5]], \"unk_id\": 4}}",
         QW_ERR_CORRUPT, "model.unk_id");
    load("{\"model\": {\"vocab\": {}}, \"added_tokens\": {}}", QW_ERR_CORRUPT, "added_tokens");
    load("{\"model\": {\"vocab\": {}}, \"truncation\": {\"max_length\": \"x\"}}",
         QW_ERR_CORRUPT, "truncation.max_length");
    load("{\"model\": {\"vocab\": {}}, \"truncation\": 7}", QW_ERR_CORRUPT, "truncation");
    load("{\"model\": {\"vocab\": {}}, \"padding\": {\"strategy\": 5}}", QW_ERR_CORRUPT,
         "padding.strategy");
    load("{\"model\": {\"vocab\": {}}, \"padding\": {\"direction\": \"Up\"}}",
         QW_ERR_CORRUPT, "padding.direction");
    load("{\"model\": {\"vocab\": {}}, \"added_tokens\": [{\"content\": \"x\"}]}", QW_ERR_CORRUPT,
         "added_tokens[0].id");
    load("{\"model\": {\"vocab\": {}}, \"added_tokens\": [{\"id\": 1, \"content\": 5}]}",
         QW_ERR_CORRUPT, "added_tokens[0].content");
    load("{\"model\": {\"vocab\": {}}, \"normalizer\": {\"type\": \"Precompiled\"}}",
         QW_ERR_UNSUPPORTED_INPUT, "normalizer");
    load("{\"model\": {\"vocab\": {}}, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
         "[{\"type\": \"NFC\"}, {\"type\": \"Replace\", \"content\": \"x\"}]}}",
         QW_ERR_CORRUPT, "normalizer.normalizers[1].pattern");
    load("{\"model\": {\"vocab\": {}}, \"normalizer\": {\"type\": 3}}", QW_ERR_CORRUPT,
         "normalizer.type");
    load("{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
         QW_ERR_UNSUPPORTED_INPUT, "pre_tokenizer.pattern");
    load("{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"String\": \" \"}, \"behavior\": \"Sideways\"}}",
         QW_ERR_CORRUPT, "pre_tokenizer.behavior");
    load("{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Metaspace\", "
         "\"replacement\": \"ab\"}}",
         QW_ERR_CORRUPT, "pre_tokenizer.replacement");
    load("{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
         "\"pretokenizers\": [{\"type\": \"Nope\"}]}}",
         QW_ERR_UNSUPPORTED_INPUT, "pre_tokenizer.pretokenizers[0]");
    load("{\"model\": {\"vocab\": {}}, \"decoder\": {\"type\": \"Strip\", \"content\": 1}}",
         QW_ERR_CORRUPT, "decoder.content");
    load("{\"model\": {\"vocab\": {}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
         "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}], \"special_tokens\": {}}}",
         QW_ERR_CORRUPT, "post_processor.single[0]");
}

TEST(unigram_without_unk_fails_only_on_unknown_text) {
    static const char U[] = "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", -1.0], "
                            "[\"b\", -2.0], [\"ab\", -1.5]]}}";
    qw_tokenizer *tok = load(U, QW_OK, NULL);
    if (!tok) return;
    check_ids(tok, "abab", false, (const int32_t[]){2, 2}, 2);
    qw_token_ids ids = {0};
    qw_error err = {0};
    CHECK_EQ_INT(qw_tokenizer_encode(tok, "ax", 2, false, &ids, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "unk_id") != NULL);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
}

TEST(bpe_unknown_token_missing_from_vocab_is_an_error) {
    static const char B[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                            "\"unk_token\": \"<unk>\"}}";
    qw_tokenizer *tok = load(B, QW_OK, NULL);
    if (!tok) return;
    qw_token_ids ids = {0};
    qw_error err = {0};
    CHECK_EQ_INT(qw_tokenizer_encode(tok, "ab", 2, false, &ids, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "model.unk_token") != NULL);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
}

/* Found by fuzz/fuzz_tokenizer_json (fuzz/regressions/tokenizer_json/bpe_no_ids.json): a text
 * whose first word gives no id at all (byte_fallback without <0x..> pieces, no unk_token) cached
 * "NULL + 0", undefined behaviour. HF tokenizers 0.23 encodes "b" as [] and "ab" as [0]. */
TEST(bpe_word_without_any_id_encodes_to_nothing) {
    static const char B[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                            "\"merges\": [], \"unk_token\": null, \"byte_fallback\": true}}";
    qw_tokenizer *tok = load(B, QW_OK, NULL);
    if (!tok) return;
    qw_token_ids ids = {0};
    qw_error err = {0};
    CHECK_OK(qw_tokenizer_encode(tok, "b", 1, false, &ids, &err), &err);
    CHECK_EQ_INT(ids.n, 0);
    qw_token_ids_free(&ids);
    check_ids(tok, "ab", false, (const int32_t[]){0}, 1);
    qw_tokenizer_free(tok);
}

/* Every prefix of a valid file, and deterministic byte mutations of it, load or fail cleanly;
 * whatever loads also encodes and decodes without crashing. */
TEST(truncated_and_mutated_files_never_crash) {
    static const char FULL[] =
        "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 5, \"content\": \"<s>\", \"special\": "
        "true, \"lstrip\": true, \"rstrip\": true, \"single_word\": true, \"normalized\": true}], "
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKC\"}, "
        "{\"type\": \"Prepend\", \"prepend\": \"_\"}, {\"type\": \"Replace\", \"pattern\": "
        "{\"Regex\": \"\\\\s+\"}, \"content\": \" \"}, {\"type\": \"Lowercase\"}]}, "
        "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
        "\"pattern\": {\"Regex\": \"\\\\p{N}+|x?\"}, \"behavior\": \"MergedWithNext\"}, {\"type\": "
        "\"Metaspace\", \"replacement\": \"_\", \"prepend_scheme\": \"first\"}, {\"type\": "
        "\"ByteLevel\"}, {\"type\": \"Digits\"}]}, " TINY_MODEL
        ", \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteLevel\"}, "
        "{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 1}, {\"type\": "
        "\"Metaspace\", \"replacement\": \"_\"}, {\"type\": \"Fuse\"}]}}";
    static const char *const TEXTS[] = {"abc <s> 123", "", "\xff\xfe", "x  \t\nabc", "<s>"};
    const size_t n = sizeof FULL - 1;
    uint32_t rng = 12345;
    for (size_t round = 0; round < n + 600; round++) {
        char buf[sizeof FULL];
        size_t len = n;
        memcpy(buf, FULL, n);
        if (round < n) {
            len = round; /* truncated */
        } else {
            for (int k = 0; k < 3; k++) {
                rng = rng * 1103515245u + 12345u;
                size_t at = (rng >> 8) % n;
                rng = rng * 1103515245u + 12345u;
                buf[at] = "{}[]\",:0 9a\\-tfn"[(rng >> 8) % 16];
            }
        }
        qw_tokenizer *tok = NULL;
        qw_error err = {0};
        if (qw_tokenizer_load_json_buffer(buf, len, "fuzz.json", &tok, &err) != QW_OK) {
            CHECK(tok == NULL);
            CHECK(err.message[0] != 0);
            continue;
        }
        for (size_t t = 0; t < sizeof TEXTS / sizeof TEXTS[0]; t++) {
            qw_token_ids ids = {0};
            if (qw_tokenizer_encode(tok, TEXTS[t], strlen(TEXTS[t]), true, &ids, &err) == QW_OK) {
                char *text = NULL;
                size_t tl = 0;
                if (qw_tokenizer_decode(tok, ids.ids, ids.n, false, &text, &tl, &err) == QW_OK) {
                    CHECK(text != NULL);
                }
                qw_free(text);
            }
            qw_token_ids_free(&ids);
        }
        qw_tokenizer_free(tok);
    }
}

TEST(fixture_files_load) {
    static const char *const NAMES[] = {"llama2", "llama3", "qwen3"};
    for (size_t i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", QW_FIXTURES_DIR, NAMES[i]);
        qw_tokenizer *tok = NULL;
        qw_error err = {0};
        CHECK_OK(qw_tokenizer_load_json(path, &tok, &err), &err);
        CHECK(qw_tokenizer_vocab_size(tok) >= 32000);
        qw_tokenizer_free(tok);
    }
    qw_tokenizer *tok = NULL;
    qw_error err = {0};
    CHECK_EQ_INT(qw_tokenizer_load_json("/nonexistent/tokenizer.json", &tok, &err),
                 QW_ERR_NOT_FOUND);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tokenizers/qwen3", QW_FIXTURES_DIR);
    CHECK_OK(qw_tokenizer_load_dir(dir, &tok, &err), &err);
    qw_tokenizer_free(tok);
    tok = NULL;
    CHECK_EQ_INT(qw_tokenizer_load_dir("/nonexistent", &tok, &err), QW_ERR_NOT_FOUND);
    CHECK(tok == NULL);
}

/* ---- SentencePiece tokenizer.model, written by hand ---------------------------------------- */

static void pb_varint(qw_buf *b, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) c |= 0x80;
        qw_buf_append(b, &c, 1);
    } while (v);
}

static void pb_bytes(qw_buf *b, uint32_t field, const void *data, size_t len) {
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, len);
    qw_buf_append(b, data, len);
}

static void pb_piece(qw_buf *b, const char *text, float score, int type) {
    qw_buf p = {0};
    pb_bytes(&p, 1, text, strlen(text));
    uint32_t bits;
    memcpy(&bits, &score, 4);
    pb_varint(&p, 2 << 3 | 5);
    qw_buf_append(&p, &bits, 4);
    pb_varint(&p, 3 << 3 | 0);
    pb_varint(&p, (uint64_t)type);
    pb_bytes(b, 1, p.data, p.len);
    qw_buf_free(&p);
}

/* BPE model: <unk> <s> </s> ▁ a b ▁a ab; dummy prefix on, extra whitespace removed */
static qw_buf tiny_spm(void) {
    qw_buf b = {0};
    pb_piece(&b, "<unk>", 0, 2);
    pb_piece(&b, "<s>", 0, 3);
    pb_piece(&b, "</s>", 0, 3);
    pb_piece(&b, "\xE2\x96\x81", -1, 1);
    pb_piece(&b, "a", -2, 1);
    pb_piece(&b, "b", -3, 1);
    pb_piece(&b, "\xE2\x96\x81" "a", -0.5f, 1);
    pb_piece(&b, "ab", -0.25f, 1);
    qw_buf spec = {0};
    pb_varint(&spec, 3 << 3 | 0);
    pb_varint(&spec, 2); /* model_type BPE */
    pb_bytes(&b, 2, spec.data, spec.len);
    qw_buf_free(&spec);
    return b;
}

TEST(sentencepiece_bpe_merges_by_score) {
    qw_buf b = tiny_spm();
    qw_tokenizer *tok = NULL;
    qw_error err = {0};
    CHECK_OK(qw_tokenizer_load_spm_buffer(b.data, b.len, "t.model", &tok, &err), &err);
    if (tok) {
        /* "▁ab": ab (-0.25) beats ▁a (-0.5); "  b  a" -> "▁b▁a" */
        check_ids(tok, "ab", true, (const int32_t[]){1, 3, 7}, 3);
        check_ids(tok, "  b  a ", false, (const int32_t[]){3, 5, 6}, 3);
        check_ids(tok, "ac", false, (const int32_t[]){6, 0}, 2); /* c is unknown */
        char *text = NULL;
        size_t len = 0;
        const int32_t ids[] = {1, 6, 0, 0, 3, 5, 2};
        CHECK_OK(qw_tokenizer_decode(tok, ids, 7, false, &text, &len, &err), &err);
        CHECK_EQ_STR(text, "a \xE2\x81\x87  \xE2\x81\x87  b");
        qw_free(text);
    }
    qw_tokenizer_free(tok);
    qw_buf_free(&b);
}

TEST(sentencepiece_corrupt_files_never_crash) {
    qw_buf b = tiny_spm();
    uint32_t rng = 99;
    for (size_t round = 0; round < b.len + 400; round++) {
        char *buf = qw_malloc(b.len + 1);
        memcpy(buf, b.data, b.len);
        size_t len = round < b.len ? round : b.len;
        if (round >= b.len) {
            rng = rng * 1103515245u + 12345u;
            buf[(rng >> 8) % b.len] = (char)(rng >> 20);
        }
        qw_tokenizer *tok = NULL;
        qw_error err = {0};
        if (qw_tokenizer_load_spm_buffer(buf, len, "fuzz.model", &tok, &err) == QW_OK) {
            qw_token_ids ids = {0};
            if (qw_tokenizer_encode(tok, " ab c ", 6, true, &ids, &err) == QW_OK) {
                char *text = NULL;
                size_t tl = 0;
                (void)qw_tokenizer_decode(tok, ids.ids, ids.n, true, &text, &tl, &err);
                qw_free(text);
            }
            qw_token_ids_free(&ids);
        } else {
            CHECK(tok == NULL && err.message[0] != 0);
        }
        qw_tokenizer_free(tok);
        qw_free(buf);
    }
    qw_buf_free(&b);
    /* a Unigram model with a precompiled charsmap is refused by name */
    qw_buf u = {0};
    pb_piece(&u, "<unk>", 0, 2);
    qw_buf spec = {0};
    pb_bytes(&spec, 2, "xyz", 3);
    pb_bytes(&u, 3, spec.data, spec.len);
    qw_tokenizer *tok = NULL;
    qw_error err = {0};
    CHECK_EQ_INT(qw_tokenizer_load_spm_buffer(u.data, u.len, "u.model", &tok, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
    CHECK(strstr(err.message, "precompiled_charsmap") != NULL);
    qw_buf_free(&spec);
    qw_buf_free(&u);
}

RUN_TESTS(TEST_CASE(bpe_merges_in_rank_order),
          TEST_CASE(decode_joins_tokens_and_skips_special_and_unknown_ids),
          TEST_CASE(invalid_utf8_input_is_replaced_not_rejected), TEST_CASE(free_null_is_a_no_op),
          TEST_CASE(wrong_types_name_the_key),
          TEST_CASE(unigram_without_unk_fails_only_on_unknown_text),
          TEST_CASE(bpe_unknown_token_missing_from_vocab_is_an_error),
          TEST_CASE(bpe_word_without_any_id_encodes_to_nothing),
          TEST_CASE(truncated_and_mutated_files_never_crash), TEST_CASE(fixture_files_load),
          TEST_CASE(sentencepiece_bpe_merges_by_score),
          TEST_CASE(sentencepiece_corrupt_files_never_crash))
