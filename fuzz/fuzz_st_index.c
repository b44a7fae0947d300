/* model.safetensors.index.json as qw_model_open reads it: a model directory with a fixed
 * config.json and two small shards, and the input as its index (weight_map, shard names that
 * must not leave the directory, tensors listed and stored in agreement). */
#include "fuzz_util.h"
#include "model.h"
#include "safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_json[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 4,"
    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    " \"intermediate_size\": 8, \"vocab_size\": 8, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 10000.0, \"max_position_embeddings\": 64, \"tie_word_embeddings\": true}";

static void write_shard(const char *name, const qw_st_entry *entries, size_t n) {
    qw_st_writer *w = NULL;
    qw_error err;
    if (qw_st_writer_open(fuzz_path(name), entries, n, &w, &err) != QW_OK) abort();
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        uint64_t bytes = qw_st_entry_bytes(&entries[i], &ok);
        static const uint8_t zeros[256];
        if (!ok || bytes > sizeof zeros || qw_st_writer_write(w, zeros, bytes, &err) != QW_OK) {
            abort();
        }
    }
    if (qw_st_writer_finish(w, &err) != QW_OK) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_write_file(fuzz_path("config.json"), config_json, sizeof config_json - 1);
    const qw_st_entry first[] = {
        {"model.embed_tokens.weight", "F32", 2, {8, 4}},
        {"model.norm.weight", "F32", 1, {4}},
    };
    const qw_st_entry second[] = {
        {"model.layers.0.input_layernorm.weight", "BF16", 1, {4}},
        {"model.layers.0.self_attn.q_proj.weight", "F16", 2, {4, 4}},
    };
    write_shard("model-00001-of-00002.safetensors", first, 2);
    write_shard("model-00002-of-00002.safetensors", second, 2);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write_file(fuzz_path("model.safetensors.index.json"), data, size);
    qw_model *m = NULL;
    qw_error err;
    if (qw_model_open(fuzz_dir(), NULL, &m, &err) == QW_OK) qw_model_close(m);
    return 0;
}
