/* config.json as qw_model_open reads it (model.c open_hf): the architecture row, the text config
 * (nested multimodal configs, transformers 5 rope_parameters, defaults), the hyperparameters;
 * then what a backend does with them: map tensor names and write the GGUF hyperparameter keys. */
#include "arch.h"
#include "fuzz_util.h"
#include "gguf.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tensor_names[] = {
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.self_attn.k_proj.bias",
    "model.layers.0.mlp.experts.3.down_proj.weight",
    "model.layers.0.mlp.shared_expert.gate_proj.weight",
    "model.layers.4294967297.input_layernorm.weight",
    "model.language_model.layers.0.self_attn.o_proj.weight",
    "lm_head.weight",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *config = NULL;
    qw_error err;
    if (qw_json_parse((const char *)data, size, "fuzz/config.json", &config, &err) != QW_OK) {
        return 0;
    }
    const qw_arch *arch = NULL;
    json_t *text = NULL;
    bool nested = false;
    qw_hparams hp;
    if (json_is_object(config) &&
        qw_arch_from_config(config, "fuzz/config.json", &arch, &err) == QW_OK &&
        qw_arch_text_config(arch, config, "fuzz/config.json", &text, &nested, &err) == QW_OK &&
        qw_hparams_from_config(text, "fuzz/config.json", &hp, &err) == QW_OK) {
        for (size_t i = 0; i < sizeof tensor_names / sizeof tensor_names[0]; i++) {
            char gguf_name[128];
            qw_transform transform;
            bool drop = false;
            int64_t expert = -1;
            (void)qw_arch_map_tensor_part(arch, &hp, tensor_names[i], gguf_name, sizeof gguf_name,
                                          &transform, &drop, &expert, &err);
        }
        qw_gguf_writer *w = NULL;
        if (qw_gguf_writer_create(&w, &err) == QW_OK) {
            (void)qw_arch_write_hparams(arch, &hp, w, &err);
            qw_gguf_writer_free(w);
        }
        int64_t n = 0;
        (void)qw_arch_has_rope_freqs(arch, &hp, &n);
    }
    json_decref(text);
    json_decref(config);
    return 0;
}
