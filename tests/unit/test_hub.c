/* Hub: repository IDs, cache paths, the file filter, error mapping, the revision listing, and
 * download checks (size, sha256) on corrupt input. No network: src/hub's HTTP parts are driven by
 * tests/python/test_hub.py against a local server. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hub.h"
#include "hub_private.h"
#include "test.h"

TEST(id_parse_accepts_hub_ids) {
    qw_hub_id id;
    qw_error err = {0};
    CHECK_OK(qw_hub_id_parse("meta-llama/Llama-2-7b-hf", &id, &err), &err);
    CHECK_EQ_STR(id.repo, "meta-llama/Llama-2-7b-hf");
    CHECK_EQ_STR(id.revision, "main");
    CHECK_EQ_STR(id.name, "Llama-2-7b-hf");
    CHECK_OK(qw_hub_id_parse("Qwen/Qwen2.5-0.5B@v1.0", &id, &err), &err);
    CHECK_EQ_STR(id.repo, "Qwen/Qwen2.5-0.5B");
    CHECK_EQ_STR(id.revision, "v1.0");
    CHECK_EQ_STR(id.name, "Qwen2.5-0.5B");
    CHECK_OK(qw_hub_id_parse("org/name@refs/pr/1", &id, &err), &err);
    CHECK_EQ_STR(id.revision, "refs/pr/1");
}

TEST(id_parse_refuses_non_ids) {
    static const char *const bad[] = {
        "",          "name",        "/abs/path",   "./rel/dir", "a/b/c",      "org/",
        "/name",     "org/na me",   "org--x/name", "org/a..b",  "-org/name",  "org/name.",
        "org/name@", "org/name@..", "org/name@a b", "~/model",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qw_hub_id id;
        qw_error err = {0};
        qw_status st = qw_hub_id_parse(bad[i], &id, &err);
        if (st != QW_ERR_INVALID_ARG) fprintf(stderr, "accepted \"%s\"\n", bad[i]);
        CHECK_EQ_INT(st, QW_ERR_INVALID_ARG);
        CHECK(strstr(err.message, bad[i]) != NULL || !bad[i][0]);
    }
}

TEST(local_path_wins_over_id) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/hubtest/org", test_tmpdir());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/name'", dir);
    CHECK(system(cmd) == 0);
    char cwd[512];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    char parent[600];
    snprintf(parent, sizeof parent, "%s/hubtest", test_tmpdir());
    CHECK(chdir(parent) == 0);
    CHECK(!qw_hub_is_model_id("org/name"));     /* exists here */
    CHECK(qw_hub_is_model_id("org/other-name")); /* does not */
    CHECK(!qw_hub_is_model_id("model.gguf/x/y"));
    CHECK(chdir(cwd) == 0);
}

TEST(cache_paths) {
    char *f = qw_hub_repo_folder("models", "meta-llama/Llama-2-7b-hf");
    CHECK_EQ_STR(f, "models--meta-llama--Llama-2-7b-hf");
    qw_free(f);
    f = qw_hub_repo_folder("datasets", "Salesforce/wikitext");
    CHECK_EQ_STR(f, "datasets--Salesforce--wikitext");
    qw_free(f);
    char *l = qw_hub_blob_link("config.json", "abc");
    CHECK_EQ_STR(l, "../../blobs/abc");
    qw_free(l);
    l = qw_hub_blob_link("sub/dir/x.json", "abc");
    CHECK_EQ_STR(l, "../../../../blobs/abc");
    qw_free(l);
}

TEST(cache_dir_from_environment) {
    setenv("HF_HUB_CACHE", "/tmp/x-hub-cache", 1);
    char *c = qw_hub_cache_dir();
    CHECK_EQ_STR(c, "/tmp/x-hub-cache");
    qw_free(c);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    setenv("HF_HOME", "/tmp/x-hf-home", 1);
    c = qw_hub_cache_dir();
    CHECK_EQ_STR(c, "/tmp/x-hf-home/hub");
    qw_free(c);
    unsetenv("HF_HOME");
    setenv("XDG_CACHE_HOME", "/tmp/x-xdg", 1);
    c = qw_hub_cache_dir();
    CHECK_EQ_STR(c, "/tmp/x-xdg/huggingface/hub");
    qw_free(c);
    unsetenv("XDG_CACHE_HOME");
    setenv("HF_ENDPOINT", "http://127.0.0.1:9/", 1);
    char *e = qw_hub_endpoint();
    CHECK_EQ_STR(e, "http://127.0.0.1:9");
    qw_free(e);
    unsetenv("HF_ENDPOINT");
    setenv("HF_HUB_OFFLINE", "yes", 1);
    CHECK(qw_hub_offline());
    setenv("HF_HUB_OFFLINE", "0", 1);
    CHECK(!qw_hub_offline());
    unsetenv("HF_HUB_OFFLINE");
}

TEST(token_precedence) {
    char path[600];
    snprintf(path, sizeof path, "%s/hub-token", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("  hf_file\n", f);
        fclose(f);
    }
    setenv("HF_TOKEN_PATH", path, 1);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    char *t = qw_hub_token(NULL);
    CHECK_EQ_STR(t, "hf_file");
    qw_hub_token_free(t);
    setenv("HF_TOKEN", "hf_env", 1);
    t = qw_hub_token("");
    CHECK_EQ_STR(t, "hf_env");
    qw_hub_token_free(t);
    t = qw_hub_token("hf_given");
    CHECK_EQ_STR(t, "hf_given");
    qw_hub_token_free(t);
    unsetenv("HF_TOKEN");
    unsetenv("HF_TOKEN_PATH");
}

TEST(file_filter) {
    static const char *const yes[] = {"config.json", "tokenizer.json", "tokenizer.model",
                                      "tokenizer_config.json", "special_tokens_map.json",
                                      "generation_config.json", "model.safetensors",
                                      "model-00001-of-00002.safetensors",
                                      "model.safetensors.index.json"};
    static const char *const no[] = {"pytorch_model.bin", "model.pth", "model.onnx",
                                     "model.gguf", "flax_model.msgpack", "tf_model.h5",
                                     "README.md", "onnx/model.safetensors",
                                     "consolidated.safetensors", ".gitattributes"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) CHECK(qw_hub_file_wanted(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) CHECK(!qw_hub_file_wanted(no[i]));
}

TEST(error_mapping) {
    static const struct {
        long code;
        const char *error_code, *error_message;
        qw_status status;
        const char *says;
    } cases[] = {
        {403, "GatedRepo", NULL, QW_ERR_ACCESS_DENIED, "gated"},
        {401, "GatedRepo", NULL, QW_ERR_ACCESS_DENIED, "gated"},
        {401, "RepoNotFound", NULL, QW_ERR_NOT_FOUND, "private"},
        {404, "RepoNotFound", NULL, QW_ERR_NOT_FOUND, "not found"},
        {404, "RevisionNotFound", NULL, QW_ERR_NOT_FOUND, "revision not found"},
        {404, "EntryNotFound", NULL, QW_ERR_NOT_FOUND, "file not found"},
        {401, NULL, "Invalid credentials in Authorization header", QW_ERR_ACCESS_DENIED,
         "token was rejected"},
        {401, NULL, NULL, QW_ERR_ACCESS_DENIED, "authentication required"},
        {404, NULL, NULL, QW_ERR_NOT_FOUND, "not found"},
        {429, NULL, NULL, QW_ERR_NETWORK, "rate limited"},
        {503, NULL, NULL, QW_ERR_NETWORK, "server error"},
        {418, NULL, NULL, QW_ERR_NETWORK, "unexpected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qw_error err = {0};
        qw_status st = qw_hub_http_error(cases[i].code, cases[i].error_code,
                                         cases[i].error_message, "org/name", "main",
                                         "config.json", &err);
        CHECK_EQ_INT(st, cases[i].status);
        if (!strstr(err.message, cases[i].says)) fprintf(stderr, "case %zu: %s\n", i, err.message);
        CHECK(strstr(err.message, cases[i].says) != NULL);
        CHECK(strstr(err.message, "org/name") != NULL);
        CHECK(strstr(err.message, "config.json") != NULL);
    }
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_ACCESS_DENIED), QW_CLASS_VALIDATION);
}

static qw_status parse(const char *json, qw_hub_listing *l, qw_error *err) {
    return qw_hub_listing_parse(json, strlen(json), "listing", l, err);
}

TEST(listing) {
    qw_hub_listing l;
    qw_error err = {0};
    CHECK_OK(parse("{\"sha\": \"0123456789abcdef0123456789abcdef01234567\", \"siblings\": ["
                   "{\"rfilename\": \"config.json\"}, {\"rfilename\": \"pytorch_model.bin\"},"
                   "{\"rfilename\": \"model.safetensors\"}, {\"rfilename\": \"README.md\"}]}",
                   &l, &err),
             &err);
    CHECK_EQ_STR(l.sha, "0123456789abcdef0123456789abcdef01234567");
    CHECK_EQ_INT(l.n_files, 2);
    if (l.n_files == 2) {
        CHECK_EQ_STR(l.files[0], "config.json");
        CHECK_EQ_STR(l.files[1], "model.safetensors");
    }
    CHECK_EQ_INT(l.n_skipped_weights, 1);
    qw_hub_listing_free(&l);
    static const struct {
        const char *json, *says;
    } bad[] = {
        {"{\"sha\": ", "listing"},
        {"[1, 2]", "not a JSON object"},
        {"{\"siblings\": []}", "sha"},
        {"{\"sha\": \"abc\", \"siblings\": []}", "sha"},
        {"{\"sha\": \"0123456789abcdef0123456789abcdef01234567\"}", "siblings"},
        {"{\"sha\": \"0123456789abcdef0123456789abcdef01234567\", \"siblings\": [{}]}",
         "rfilename"},
        {"{\"sha\": \"0123456789abcdef0123456789abcdef01234567\", \"siblings\": "
         "[{\"rfilename\": \"../../etc/passwd\"}]}", "rfilename"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qw_status st = parse(bad[i].json, &l, &err);
        CHECK_EQ_INT(st, QW_ERR_CORRUPT);
        if (!strstr(err.message, bad[i].says)) fprintf(stderr, "bad %zu: %s\n", i, err.message);
        CHECK(strstr(err.message, bad[i].says) != NULL);
    }
}

TEST(sha256_vectors) {
    /* FIPS 180-2 appendix B examples */
    char hex[65];
    qw_sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    qw_sha256_hex("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    qw_sha256_hex(two, strlen(two), hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(verify_download) {
    char path[600];
    snprintf(path, sizeof path, "%s/hub-blob", test_tmpdir());
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs("abc", f);
    fclose(f);
    const char *sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    qw_error err = {0};
    CHECK_OK(qw_hub_verify_file(path, sha, 3, "org/x, file blob", &err), &err);
    CHECK_OK(qw_hub_verify_file(path, "a9993e364706816aba3e25717850c26c9cd0d89d", 3, "x", &err),
             &err); /* a git sha1 etag: only the size can be checked */
    CHECK_EQ_INT(qw_hub_verify_file(path, sha, 4, "org/x, file blob", &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "3 bytes") && strstr(err.message, "org/x, file blob"));
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    CHECK_EQ_INT(qw_hub_verify_file(path, wrong, 3, "org/x, file blob", &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "sha256") && strstr(err.message, "ba7816bf"));
}

TEST(calib_local_files) {
    char txt[600], jsonl[600], json[600], bad[600];
    snprintf(txt, sizeof txt, "%s/calib.txt", test_tmpdir());
    snprintf(jsonl, sizeof jsonl, "%s/calib.jsonl", test_tmpdir());
    snprintf(json, sizeof json, "%s/calib.json", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/calib-bad.jsonl", test_tmpdir());
    static const struct {
        const char *path_suffix, *content;
    } files[] = {
        {"calib.txt", "first line\r\n\n   \nsecond line\nthird"},
        {"calib.jsonl",
         "{\"id\": 1, \"text\": \"a\"}\n\n{\"title\": \"b\", \"n\": 2}\n{\"text\": \"c\"}\n"},
        {"calib.json", "{\"train\": [{\"text\": \"x\"}, {\"text\": \"\"}, {\"text\": \"y\"}]}"},
        {"calib-bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", test_tmpdir(), files[i].path_suffix);
        FILE *f = fopen(p, "wb");
        if (f) {
            fputs(files[i].content, f);
            fclose(f);
        }
    }
    qw_calib *c = NULL;
    qw_error err = {0};
    CHECK_OK(qw_calib_load(txt, NULL, 10, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, 3);
    if (c && c->n_samples == 3) {
        CHECK_EQ_STR(c->samples[0], "first line");
        CHECK_EQ_STR(c->samples[2], "third");
    }
    qw_calib_free(c);
    CHECK_OK(qw_calib_load(txt, NULL, 2, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, 2);
    qw_calib_free(c);
    CHECK_OK(qw_calib_load(jsonl, NULL, 10, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, 3);
    if (c && c->n_samples == 3) {
        CHECK_EQ_STR(c->samples[0], "a");
        CHECK_EQ_STR(c->samples[1], "b");
        CHECK_EQ_STR(c->samples[2], "c");
    }
    qw_calib_free(c);
    CHECK_OK(qw_calib_load(json, "train", 10, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, 2);
    qw_calib_free(c);
    CHECK_EQ_INT(qw_calib_load(json, "test", 10, NULL, NULL, &c, &err), QW_ERR_INVALID_ARG);
    CHECK(strstr(err.message, "\"test\"") != NULL);
    CHECK_EQ_INT(qw_calib_load(bad, NULL, 10, NULL, NULL, &c, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "calib-bad.jsonl:2") != NULL);
    CHECK_EQ_INT(qw_calib_load("not a dataset!", NULL, 10, NULL, NULL, &c, &err),
                 QW_ERR_INVALID_ARG);
    CHECK(c == NULL);
}

RUN_TESTS(TEST_CASE(id_parse_accepts_hub_ids), TEST_CASE(id_parse_refuses_non_ids),
          TEST_CASE(local_path_wins_over_id), TEST_CASE(cache_paths),
          TEST_CASE(cache_dir_from_environment), TEST_CASE(token_precedence),
          TEST_CASE(file_filter), TEST_CASE(error_mapping), TEST_CASE(listing),
          TEST_CASE(sha256_vectors), TEST_CASE(verify_download), TEST_CASE(calib_local_files))
