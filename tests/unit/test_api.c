/* The public API (qwodel.h), driven on a small GGUF model written by the test itself. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "file.h"
#include "gguf.h"
#include "qwodel.h"
#include "test.h"

/* Removes what an earlier run of this test left. */
static void remove_tree(const char *path) {
    char *cmd = qw_sprintf("rm -rf '%s'", path);
    if (cmd && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", path);
    qw_free(cmd);
}

/* A 1-layer llama-shaped GGUF with F32 weights: enough for the gguf backend to requantize. */
static char *make_model(const char *name) {
    char *path = qw_sprintf("%s/%s.gguf", test_tmpdir(), name);
    qw_gguf_writer *w = NULL;
    qw_error err;
    qw_gguf_writer_create(&w, &err);
    qw_gguf_writer_set_str(w, "general.architecture", "llama", &err);
    qw_gguf_writer_set_u32(w, "llama.block_count", 1, &err);
    qw_gguf_writer_set_u32(w, "llama.embedding_length", 64, &err);
    qw_gguf_writer_set_u32(w, "llama.attention.head_count", 2, &err);
    static const struct {
        const char *name;
        int n_dims;
        int64_t ne[2];
    } tensors[] = {
        {"token_embd.weight", 2, {64, 100}},   {"output_norm.weight", 1, {64, 1}},
        {"blk.0.attn_q.weight", 2, {64, 64}},  {"blk.0.attn_norm.weight", 1, {64, 1}},
        {"blk.0.ffn_down.weight", 2, {96, 64}},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) {
        qw_gguf_writer_add_tensor(w, tensors[i].name, QW_QTYPE_F32, tensors[i].n_dims,
                                  tensors[i].ne, &err);
        total += (size_t)(tensors[i].ne[0] * tensors[i].ne[1]);
    }
    qw_gguf_writer_begin(w, path, &err);
    uint32_t rng = 7;
    for (size_t i = 0; i < total; i++) {
        rng = rng * 1664525u + 1013904223u;
        float v = ((float)(rng >> 8) / 16777216.0f - 0.5f) * 0.1f;
        qw_gguf_writer_write(w, &v, sizeof v, &err);
    }
    if (qw_gguf_writer_finish(w, &err) != QW_OK) fprintf(stderr, "model: %s\n", err.message);
    qw_gguf_writer_free(w);
    return path;
}

typedef struct events {
    int progress_calls;
    int last_percent;
    int monotone;
    int saw_done;
    int cancel_at; /* cancel when a progress call reaches this percent (0: never) */
    int logs;
    char logger[64];
} events;

static int on_progress(void *user, int percent, const char *stage, const char *message) {
    events *e = user;
    (void)message;
    e->progress_calls++;
    if (percent < e->last_percent) e->monotone = 0;
    e->last_percent = percent;
    if (strcmp(stage, "done") == 0) e->saw_done = 1;
    return e->cancel_at && percent >= e->cancel_at;
}

static void on_log(void *user, int level, const char *logger, const char *message) {
    events *e = user;
    (void)level;
    (void)message;
    e->logs++;
    snprintf(e->logger, sizeof e->logger, "%s", logger);
}

TEST(tables) {
    CHECK(qw_backend_count() >= 1);
    CHECK_EQ_STR(qw_backend_name(0), "gguf");
    CHECK(qw_backend_description(0) && qw_backend_default_format(0));
    CHECK_EQ_INT(qw_backend_find("GGUF"), 0);
    CHECK_EQ_INT(qw_backend_find("awq-not-built"), -1);
    CHECK_EQ_INT(qw_backend_find(NULL), -1);
    CHECK(qw_backend_name(99) == NULL);
    CHECK(qw_format_count(0) >= 5);
    int has_q8 = 0;
    for (size_t f = 0; f < qw_format_count(0); f++) {
        CHECK(qw_format_description(0, f) && *qw_format_description(0, f));
        if (strcmp(qw_format_name(0, f), "Q8_0") == 0) has_q8 = 1;
    }
    CHECK(has_q8);
    int q4km = qw_format_find(0, "q4_k"); /* llama-quantize's alias */
    CHECK(q4km >= 0 && strcmp(qw_format_name(0, (size_t)q4km), "Q4_K_M") == 0);
    CHECK_EQ_INT(qw_format_find(0, "int4"), -1);
    CHECK_EQ_INT(qw_format_find(99, "Q8_0"), -1);
    CHECK_EQ_INT(qw_format_find(0, NULL), -1);
    CHECK(qw_format_name(0, 999) == NULL);
    CHECK(qw_option_count(0) >= 1);
    CHECK_EQ_STR(qw_option_name(0, 0), "threads");
    CHECK_EQ_INT(qw_option_type_of(0, 0), QW_OPTION_INT);
    CHECK_EQ_INT(qw_option_scope_of(0, 0), QW_SCOPE_BOTH);
    CHECK(qw_option_description(0, 0) != NULL);
    CHECK(qw_option_name(0, 99) == NULL);
    CHECK(strlen(qw_version()) >= 5);
    char *info = NULL;
    qw_error err;
    CHECK_OK(qw_system_info_json(&info, &err), &err);
    CHECK(info && strstr(info, "\"backends\"") && strstr(info, "\"threads\""));
    qw_string_free(info);
    qw_string_free(NULL);
}

TEST(create_validates) {
    char *model = make_model("api-model");
    qw_quantizer *q = NULL;
    qw_error err;
    CHECK_EQ_INT(qw_quantizer_create("nope", model, NULL, NULL, NULL, 0, NULL, NULL, NULL, &q,
                                     &err), QW_ERR_UNKNOWN_BACKEND);
    CHECK(strstr(err.message, "gguf") != NULL); /* lists what exists */
    CHECK_EQ_INT(qw_status_class_of(err.status), QW_CLASS_VALIDATION);
    CHECK_EQ_INT(qw_quantizer_create("gguf", "/nonexistent/model", NULL, NULL, NULL, 0, NULL,
                                     NULL, NULL, &q, &err), QW_ERR_NOT_FOUND);
    const char *k1[] = {"calibration_dataset"}, *v1[] = {"x"};
    CHECK_EQ_INT(qw_quantizer_create("gguf", model, NULL, k1, v1, 1, NULL, NULL, NULL, &q, &err),
                 QW_ERR_BAD_OPTION);
    CHECK(strstr(err.message, "calibration_dataset") && strstr(err.message, "threads"));
    const char *k2[] = {"threads"}, *v2[] = {"two"};
    CHECK_EQ_INT(qw_quantizer_create("gguf", model, NULL, k2, v2, 1, NULL, NULL, NULL, &q, &err),
                 QW_ERR_BAD_OPTION);
    CHECK(strstr(err.message, "integer") != NULL);
    CHECK(q == NULL);
    qw_quantizer_free(NULL);
    CHECK_EQ_INT(qw_quantizer_create("gguf", model, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
                                     &err), QW_ERR_INVALID_ARG);
    qw_free(model);
}

TEST(plan_run_info) {
    char *model = make_model("api-model");
    char *out_dir = qw_sprintf("%s/api-out", test_tmpdir());
    remove_tree(out_dir);
    events ev = {.monotone = 1};
    const char *keys[] = {"threads"}, *values[] = {"2"};
    qw_quantizer *q = NULL;
    qw_error err;
    CHECK_OK(qw_quantizer_create("gguf", model, out_dir, keys, values, 1, on_progress, on_log,
                                 &ev, &q, &err), &err);
    if (!q) return;
    CHECK(qw_quantizer_output_path(q) == NULL);
    char *info = NULL;
    CHECK_OK(qw_quantizer_info_json(q, &info, &err), &err);
    CHECK(strstr(info, "\"quantized_model\": null") && strstr(info, "\"input_format\": \"gguf\""));
    qw_string_free(info);

    qw_plan *plan = NULL;
    CHECK_OK(qw_quantizer_plan(q, "q8_0", NULL, NULL, 0, &plan, &err), &err);
    CHECK_EQ_INT(qw_plan_count(plan), 5);
    const qw_plan_tensor *first = qw_plan_get(plan, 0);
    CHECK(first && qw_plan_get(plan, 5) == NULL);
    int n_q8 = 0, n_f32 = 0;
    for (size_t i = 0; i < qw_plan_count(plan); i++) {
        const qw_plan_tensor *t = qw_plan_get(plan, i);
        n_q8 += strcmp(t->type, "q8_0") == 0;
        n_f32 += strcmp(t->type, "f32") == 0;
    }
    CHECK_EQ_INT(n_q8, 3);
    CHECK_EQ_INT(n_f32, 2);
    CHECK(qw_str_ends_with(qw_plan_output_path(plan), "/api-model-q8_0.gguf"));
    uint64_t planned = qw_plan_output_bytes(plan);
    qw_plan_free(plan);
    qw_plan_free(NULL);
    CHECK(!qw_path_exists(out_dir)); /* planning writes nothing */

    const char *rk[] = {"threads"}, *rv[] = {"1"};
    CHECK_OK(qw_quantizer_run(q, "Q8_0", rk, rv, 1, &err), &err);
    const char *path = qw_quantizer_output_path(q);
    CHECK(path && qw_str_ends_with(path, "/api-model-q8_0.gguf"));
    struct stat sb;
    CHECK(path && stat(path, &sb) == 0 && (uint64_t)sb.st_size == planned);
    CHECK(ev.monotone && ev.saw_done && ev.last_percent == 100 && ev.progress_calls > 5);
    CHECK(ev.logs > 0);
    CHECK_EQ_STR(ev.logger, "GGUFQuantizer");
    CHECK_OK(qw_quantizer_info_json(q, &info, &err), &err);
    CHECK(strstr(info, "\"backend\": \"gguf\"") && strstr(info, "\"q8_0\": 3") &&
          strstr(info, "\"format\": \"Q8_0\"") && strstr(info, "bits_per_weight"));
    qw_string_free(info);

    /* per-run options are validated too; the failure leaves the last result in place */
    const char *bk[] = {"threads"}, *bv[] = {"-3"};
    CHECK_EQ_INT(qw_quantizer_run(q, "Q8_0", bk, bv, 1, &err), QW_ERR_BAD_OPTION);
    CHECK_EQ_INT(qw_quantizer_run(q, "Q9_K", NULL, NULL, 0, &err), QW_ERR_FORMAT_NOT_SUPPORTED);
    CHECK(strstr(err.message, "Q8_0") != NULL);
    CHECK_EQ_INT(qw_status_class_of(err.status), QW_CLASS_FORMAT_NOT_SUPPORTED);
    CHECK(qw_quantizer_output_path(q) != NULL);

    /* the default format */
    CHECK_OK(qw_quantizer_run(q, NULL, NULL, NULL, 0, &err), &err);
    CHECK(qw_str_ends_with(qw_quantizer_output_path(q), "-q4_k_m.gguf"));
    qw_quantizer_free(q);
    qw_free(out_dir);
    qw_free(model);
}

TEST(cancel_leaves_nothing) {
    char *model = make_model("api-cancel");
    char *out_dir = qw_sprintf("%s/api-cancel-out", test_tmpdir());
    remove_tree(out_dir);
    events ev = {.monotone = 1, .cancel_at = 10};
    qw_quantizer *q = NULL;
    qw_error err;
    CHECK_OK(qw_quantizer_create("gguf", model, out_dir, NULL, NULL, 0, on_progress, NULL, &ev,
                                 &q, &err), &err);
    if (!q) return;
    CHECK_EQ_INT(qw_quantizer_run(q, "F16", NULL, NULL, 0, &err), QW_ERR_CANCELLED);
    CHECK(qw_quantizer_output_path(q) == NULL);
    char *expected = qw_sprintf("%s/api-cancel-f16.gguf", out_dir);
    CHECK(!qw_path_exists(expected));
    /* nothing else either: the directory holds no temporary file */
    char *cmd = qw_sprintf("test -z \"$(ls -A '%s')\"", out_dir);
    CHECK(system(cmd) == 0);
    /* qw_quantizer_cancel before a run is cleared by the run */
    ev.cancel_at = 0;
    qw_quantizer_cancel(q);
    CHECK_OK(qw_quantizer_run(q, "F16", NULL, NULL, 0, &err), &err);
    CHECK(qw_path_exists(expected));
    qw_quantizer_cancel(NULL);
    qw_quantizer_free(q);
    qw_free(cmd);
    qw_free(expected);
    qw_free(out_dir);
    qw_free(model);
}

RUN_TESTS(TEST_CASE(tables), TEST_CASE(create_validates), TEST_CASE(plan_run_info),
          TEST_CASE(cancel_leaves_nothing))
