/* Architecture rows: name mapping, the Q/K permutation, hyperparameters, rope factors. */
#include <string.h>

#include "arch.h"
#include "core.h"
#include "json.h"
#include "test.h"

static json_t *parse(const char *text) {
    json_t *j = NULL;
    qw_error err;
    if (qw_json_parse(text, strlen(text), "config.json", &j, &err) != QW_OK) {
        fprintf(stderr, "bad test JSON: %s\n", err.message);
    }
    return j;
}

static const char *llama_config =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":256,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
    "\"intermediate_size\":320,\"max_position_embeddings\":2048,\"rms_norm_eps\":1e-5,"
    "\"rope_theta\":500000.0,\"vocab_size\":1000,\"tie_word_embeddings\":false,"
    "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
    "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}";

TEST(every_row_is_complete) {
    CHECK(qw_arch_count() >= 3);
    for (size_t i = 0; i < qw_arch_count(); i++) {
        const qw_arch *a = qw_arch_at(i);
        CHECK(a->name && a->hf_classes && a->hf_classes[0] && a->rules && a->rules[0].hf);
        CHECK(qw_arch_find(a->name) == a);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(qw_arch_at(j)->name, a->name) != 0);
    }
    CHECK(qw_arch_at(qw_arch_count()) == NULL);
    CHECK(qw_arch_find("nope") == NULL);
    CHECK(strstr(qw_arch_supported_list(), "Qwen3ForCausalLM") != NULL);
}

TEST(architecture_detection) {
    json_t *c = parse(llama_config);
    const qw_arch *a = NULL;
    qw_error err;
    CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
    CHECK(a && strcmp(a->name, "llama") == 0 && a->permute_qk);
    json_decref(c);

    c = parse("{\"architectures\":[\"MistralForCausalLM\"]}");
    CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
    CHECK(a && strcmp(a->name, "llama") == 0);
    json_decref(c);

    c = parse("{\"model_type\":\"qwen3\"}");
    CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
    CHECK(a && strcmp(a->name, "qwen3") == 0 && !a->permute_qk);
    json_decref(c);

    c = parse("{\"architectures\":[\"FooForCausalLM\"]}");
    CHECK_EQ_INT(qw_arch_from_config(c, "x/config.json", &a, &err), QW_ERR_UNSUPPORTED_ARCH);
    CHECK(strstr(err.message, "FooForCausalLM") && strstr(err.message, "LlamaForCausalLM"));
    CHECK(strstr(err.message, "x/config.json") != NULL);
    json_decref(c);

    c = parse("{}");
    CHECK_EQ_INT(qw_arch_from_config(c, "config.json", &a, &err), QW_ERR_UNSUPPORTED_ARCH);
    json_decref(c);
}

TEST(hyperparameters) {
    json_t *c = parse(llama_config);
    qw_hparams hp;
    qw_error err;
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK_EQ_INT(hp.n_layer, 2);
    CHECK_EQ_INT(hp.n_head_kv, 2);
    CHECK_EQ_INT(hp.n_ff, 320);
    CHECK(hp.has_rope_theta && hp.rope_theta == 500000.0);
    CHECK_EQ_STR(hp.rope_type, "llama3");
    CHECK_EQ_INT(hp.rope_orig_ctx, 8192);
    json_decref(c);

    static const struct {
        const char *json;
        const char *needle;
    } bad[] = {
        {"{\"hidden_size\":256,\"num_attention_heads\":4}", "num_hidden_layers"},
        {"{\"num_hidden_layers\":\"two\",\"hidden_size\":256,\"num_attention_heads\":4}",
         "must be an integer"},
        {"{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":0}",
         "out of range"},
        {"{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":4,"
         "\"num_key_value_heads\":3}", "not a multiple"},
        {"{\"num_hidden_layers\":2,\"hidden_size\":250,\"num_attention_heads\":4}",
         "not a multiple"},
        {"{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":4,"
         "\"rope_scaling\":[1]}", "rope_scaling"},
        {"{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":4,"
         "\"rope_theta\":\"big\"}", "must be a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = parse(bad[i].json);
        qw_status st = qw_hparams_from_config(c, "cfg.json", &hp, &err);
        CHECK_EQ_INT(st, QW_ERR_CORRUPT);
        if (st != QW_OK && !strstr(err.message, bad[i].needle)) {
            fprintf(stderr, "  case %zu: \"%s\" lacks \"%s\"\n", i, err.message, bad[i].needle);
            CHECK(0);
        }
        json_decref(c);
    }
}

TEST(tensor_names) {
    const qw_arch *llama = qw_arch_find("llama"), *qwen3 = qw_arch_find("qwen3");
    qw_hparams hp = {.n_layer = 12};
    static const struct {
        const char *hf, *gguf;
        qw_transform t;
    } cases[] = {
        {"model.embed_tokens.weight", "token_embd.weight", QW_TRANSFORM_NONE},
        {"lm_head.weight", "output.weight", QW_TRANSFORM_NONE},
        {"model.norm.weight", "output_norm.weight", QW_TRANSFORM_NONE},
        {"model.layers.11.self_attn.q_proj.weight", "blk.11.attn_q.weight",
         QW_TRANSFORM_PERMUTE_Q},
        {"model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias", QW_TRANSFORM_PERMUTE_K},
        {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight", QW_TRANSFORM_NONE},
        {"model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight",
         QW_TRANSFORM_NONE},
        {"model.layers.3.self_attn.k_norm.weight", "blk.3.attn_k_norm.weight",
         QW_TRANSFORM_NONE},
    };
    char out[64];
    qw_transform t;
    bool drop;
    qw_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_OK(qw_arch_map_tensor(llama, &hp, cases[i].hf, out, sizeof out, &t, &drop, &err),
                 &err);
        CHECK_EQ_STR(out, cases[i].gguf);
        CHECK_EQ_INT(t, cases[i].t);
        CHECK(!drop);
        /* qwen3 never permutes */
        CHECK_OK(qw_arch_map_tensor(qwen3, &hp, cases[i].hf, out, sizeof out, &t, &drop, &err),
                 &err);
        CHECK_EQ_INT(t, QW_TRANSFORM_NONE);
    }
    CHECK_OK(qw_arch_map_tensor(llama, &hp, "model.layers.1.self_attn.rotary_emb.inv_freq", out,
                                sizeof out, &t, &drop, &err), &err);
    CHECK(drop);
    CHECK_EQ_INT(qw_arch_map_tensor(llama, &hp, "model.layers.12.mlp.up_proj.weight", out,
                                    sizeof out, &t, &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK(strstr(err.message, "model.layers.12.mlp.up_proj.weight") != NULL);
    CHECK_EQ_INT(qw_arch_map_tensor(llama, &hp, "vision_tower.x.weight", out, sizeof out, &t,
                                    &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_EQ_INT(qw_arch_map_tensor(llama, &hp, "model.layers.x1.mlp.up_proj.weight", out,
                                    sizeof out, &t, &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
}

TEST(permutation_matches_reshape_swap) {
    /* 2 heads of 8 rows: convert reshapes (H, 2, hd/2) and swaps the last two axes. */
    const int64_t heads = 2, hd = 8;
    for (int64_t h = 0; h < heads; h++) {
        for (int64_t a = 0; a < 2; a++) {
            for (int64_t b = 0; b < hd / 2; b++) {
                int64_t in_row = h * hd + a * (hd / 2) + b;
                int64_t out_row = h * hd + b * 2 + a;
                CHECK_EQ_INT(qw_permute_source_row(out_row, hd), in_row);
            }
        }
    }
    /* it is a permutation */
    int seen[16] = {0};
    for (int64_t r = 0; r < 16; r++) seen[qw_permute_source_row(r, hd)]++;
    for (int i = 0; i < 16; i++) CHECK_EQ_INT(seen[i], 1);
}

TEST(rope_freqs_llama3) {
    json_t *c = parse(llama_config);
    qw_hparams hp;
    qw_error err;
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    int64_t n = 0;
    CHECK(qw_arch_has_rope_freqs(qw_arch_find("llama"), &hp, &n));
    CHECK_EQ_INT(n, 32); /* head_dim 64 */
    CHECK(!qw_arch_has_rope_freqs(qw_arch_find("qwen2"), &hp, &n));
    float f[32];
    qw_arch_rope_freqs(&hp, f, 32);
    CHECK_NEAR(f[0], 1.0, 0);      /* short wavelengths are not scaled */
    CHECK_NEAR(f[31], 8.0, 0);     /* long ones by the full factor */
    for (int i = 1; i < 32; i++) CHECK(f[i] >= f[i - 1]); /* and smoothly in between */
    json_decref(c);
}

TEST(metadata_keys) {
    json_t *c = parse(llama_config);
    qw_hparams hp;
    qw_error err;
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    qw_gguf_writer *w = NULL;
    qw_gguf_writer_create(&w, &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("llama"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "llama.block_count"));
    CHECK(qw_gguf_writer_has(w, "llama.vocab_size"));
    CHECK(qw_gguf_writer_has(w, "llama.rope.dimension_count"));
    CHECK(qw_gguf_writer_has(w, "llama.attention.layer_norm_rms_epsilon"));
    CHECK(!qw_gguf_writer_has(w, "llama.attention.key_length")); /* no head_dim in config */
    CHECK(!qw_gguf_writer_has(w, "llama.rope.scaling.type"));    /* llama3 uses rope_freqs */
    qw_gguf_writer_free(w);
    json_decref(c);
}

RUN_TESTS(TEST_CASE(every_row_is_complete), TEST_CASE(architecture_detection),
          TEST_CASE(hyperparameters), TEST_CASE(tensor_names),
          TEST_CASE(permutation_matches_reshape_swap), TEST_CASE(rope_freqs_llama3),
          TEST_CASE(metadata_keys))
