/* A GGUF file as a model source (qw_model_open of a .gguf): the catalog, the HuggingFace view
 * that the AWQ and Core ML backends read (hf_view.c: names mapped back, config.json rebuilt from
 * metadata) and the tokenizer files rebuilt from tokenizer.ggml.* (hf_tokenizer.c); then the
 * first row of every tensor read as f32, as a backend would. */
#include <jansson.h>

#include "fuzz_util.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ROW 4096 /* longer rows are skipped: the reads are not what is fuzzed */

static float row[MAX_ROW];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("model.gguf");
    fuzz_write_file(path, data, size);
    qw_model *m = NULL;
    qw_error err;
    if (qw_model_open(path, NULL, &m, &err) != QW_OK) return 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qw_model_tensor *t = &m->tensors[i];
        if (t->readable && t->n_rows > 0 && t->ne[0] > 0 && t->ne[0] <= MAX_ROW) {
            (void)qw_model_read_rows(t, 0, 1, row, &err);
        }
    }
    qw_hf_view *v = NULL;
    if (qw_model_hf_view(m, &v, &err) == QW_OK) {
        const json_t *config = NULL;
        (void)qw_hf_view_config(v, &config, &err);
        for (size_t i = 0; i < qw_hf_view_count(v); i++) {
            const qw_hf_tensor *t = qw_hf_view_at(v, i);
            if (t->n_rows > 0 && t->ne[0] > 0 && t->ne[0] <= MAX_ROW) {
                (void)qw_hf_tensor_read_f32(t, 0, 1, row, &err);
            }
        }
        qw_hf_view_free(v);
    }
    json_t *tokenizer = NULL, *tokenizer_config = NULL;
    if (qw_model_hf_tokenizer(m, &tokenizer, &tokenizer_config, &err) == QW_OK) {
        json_decref(tokenizer);
        json_decref(tokenizer_config);
    }
    qw_model_close(m);
    return 0;
}
