/* Architecture rows: name mapping, the Q/K permutation, hyperparameters, rope factors. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
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

/* Mixtral, Qwen2-MoE, Qwen3-MoE: detection, expert hyperparameters, per-expert tensor names
 * that stack into one GGUF tensor, and the converter's expert keys. */
TEST(moe_rows) {
    static const struct {
        const char *config, *arch;
        bool permutes;
    } detect[] = {
        {"{\"architectures\":[\"MixtralForCausalLM\"]}", "llama", true},
        {"{\"architectures\":[\"Qwen2MoeForCausalLM\"]}", "qwen2moe", false},
        {"{\"model_type\":\"qwen3_moe\"}", "qwen3moe", false},
    };
    qw_error err;
    for (size_t i = 0; i < sizeof detect / sizeof detect[0]; i++) {
        json_t *c = parse(detect[i].config);
        const qw_arch *a = NULL;
        CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
        CHECK(a && strcmp(a->name, detect[i].arch) == 0 && a->permute_qk == detect[i].permutes);
        CHECK(a && a->moe_rules && a->moe_topk_norm != QW_TOPK_NORM_UNKNOWN);
        json_decref(c);
    }
    CHECK(strstr(qw_arch_supported_list(), "Qwen3MoeForCausalLM") != NULL);

    /* Qwen's keys: num_experts (not num_local_experts), expert and shared-expert sizes */
    json_t *c = parse("{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":4,"
                      "\"intermediate_size\":768,\"num_experts\":60,\"num_experts_per_tok\":4,"
                      "\"moe_intermediate_size\":1408,\"shared_expert_intermediate_size\":5632,"
                      "\"norm_topk_prob\":false}");
    qw_hparams hp;
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK_EQ_INT(hp.n_expert, 60);
    CHECK_EQ_INT(hp.n_expert_used, 4);
    CHECK_EQ_INT(hp.n_ff_exp, 1408);
    CHECK_EQ_INT(hp.n_ff_shexp, 5632);
    CHECK_EQ_INT(hp.norm_topk_prob, QW_TOPK_NORM_OFF);
    qw_gguf_writer *w = NULL;
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("qwen2moe"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "qwen2moe.expert_count"));
    CHECK(qw_gguf_writer_has(w, "qwen2moe.expert_used_count"));
    CHECK(qw_gguf_writer_has(w, "qwen2moe.expert_feed_forward_length"));
    CHECK(qw_gguf_writer_has(w, "qwen2moe.expert_shared_feed_forward_length"));
    qw_gguf_writer_free(w);
    /* llama.cpp's Llama converter class (Mixtral) writes no expert sizes */
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("llama"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "llama.expert_count"));
    CHECK(!qw_gguf_writer_has(w, "llama.expert_feed_forward_length"));
    qw_gguf_writer_free(w);
    json_decref(c);

    c = parse("{\"num_hidden_layers\":2,\"hidden_size\":256,\"num_attention_heads\":4,"
              "\"num_local_experts\":8,\"num_experts\":60,\"num_experts_per_tok\":9}");
    CHECK_EQ_INT(qw_hparams_from_config(c, "cfg.json", &hp, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "cfg.json") && strstr(err.message, "9 experts used"));
    json_decref(c);

    static const struct {
        const char *arch, *hf, *gguf;
        int64_t expert;
        qw_transform t;
    } names[] = {
        {"llama", "model.layers.1.block_sparse_moe.experts.3.w1.weight",
         "blk.1.ffn_gate_exps.weight", 3, QW_TRANSFORM_NONE},
        {"llama", "model.layers.0.block_sparse_moe.experts.0.w2.weight",
         "blk.0.ffn_down_exps.weight", 0, QW_TRANSFORM_NONE},
        {"llama", "model.layers.0.block_sparse_moe.experts.2.w3.weight",
         "blk.0.ffn_up_exps.weight", 2, QW_TRANSFORM_NONE},
        {"llama", "model.layers.1.block_sparse_moe.gate.weight", "blk.1.ffn_gate_inp.weight", -1,
         QW_TRANSFORM_NONE},
        {"llama", "model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight", -1,
         QW_TRANSFORM_PERMUTE_Q},
        {"qwen2moe", "model.layers.1.mlp.experts.3.down_proj.weight",
         "blk.1.ffn_down_exps.weight", 3, QW_TRANSFORM_NONE},
        {"qwen2moe", "model.layers.0.mlp.gate.weight", "blk.0.ffn_gate_inp.weight", -1,
         QW_TRANSFORM_NONE},
        {"qwen2moe", "model.layers.0.mlp.shared_expert_gate.weight",
         "blk.0.ffn_gate_inp_shexp.weight", -1, QW_TRANSFORM_NONE},
        {"qwen2moe", "model.layers.0.mlp.shared_expert.up_proj.weight",
         "blk.0.ffn_up_shexp.weight", -1, QW_TRANSFORM_NONE},
        {"qwen2moe", "model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias", -1,
         QW_TRANSFORM_NONE},
        {"qwen3moe", "model.layers.1.mlp.experts.0.gate_proj.weight",
         "blk.1.ffn_gate_exps.weight", 0, QW_TRANSFORM_NONE},
        {"qwen3moe", "model.layers.1.self_attn.q_norm.weight", "blk.1.attn_q_norm.weight", -1,
         QW_TRANSFORM_NONE},
    };
    qw_hparams four = {.n_layer = 2, .n_expert = 4};
    char out[64];
    qw_transform t;
    bool drop;
    int64_t expert;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        CHECK_OK(qw_arch_map_tensor_part(qw_arch_find(names[i].arch), &four, names[i].hf, out,
                                         sizeof out, &t, &drop, &expert, &err), &err);
        CHECK_EQ_STR(out, names[i].gguf);
        CHECK_EQ_INT(expert, names[i].expert);
        CHECK_EQ_INT(t, names[i].t);
        CHECK(!drop);
    }
    /* an expert number past num_experts, a layer past num_hidden_layers, no experts at all */
    CHECK_EQ_INT(qw_arch_map_tensor_part(qw_arch_find("qwen3moe"), &four,
                                         "model.layers.0.mlp.experts.4.up_proj.weight", out,
                                         sizeof out, &t, &drop, &expert, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
    CHECK(strstr(err.message, "experts.4.up_proj") != NULL);
    CHECK_EQ_INT(qw_arch_map_tensor_part(qw_arch_find("llama"), &four,
                                         "model.layers.2.block_sparse_moe.experts.0.w1.weight",
                                         out, sizeof out, &t, &drop, &expert, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
    qw_hparams dense = {.n_layer = 2};
    CHECK_EQ_INT(qw_arch_map_tensor_part(qw_arch_find("qwen2moe"), &dense,
                                         "model.layers.0.mlp.experts.0.up_proj.weight", out,
                                         sizeof out, &t, &drop, &expert, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
    /* the dense Qwen rows know no expert names */
    CHECK_EQ_INT(qw_arch_map_tensor_part(qw_arch_find("qwen3"), &four,
                                         "model.layers.0.mlp.experts.0.up_proj.weight", out,
                                         sizeof out, &t, &drop, &expert, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
}

/* Gemma 1/2/3 and Phi-3: detection, tensor names and transforms, the converter's keys, and
 * refusals of bad longrope settings. */
static const char *gemma2_config =
    "{\"architectures\":[\"Gemma2ForCausalLM\"],\"model_type\":\"gemma2\",\"hidden_size\":256,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64,"
    "\"intermediate_size\":1024,\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-6,"
    "\"rope_theta\":10000.0,\"attn_logit_softcapping\":50.0,\"final_logit_softcapping\":30.0,"
    "\"sliding_window\":4096,\"vocab_size\":1000}";

static const char *gemma3_config =
    "{\"architectures\":[\"Gemma3ForCausalLM\"],\"model_type\":\"gemma3_text\",\"hidden_size\":256,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":1,\"head_dim\":128,"
    "\"intermediate_size\":1024,\"max_position_embeddings\":32768,\"rms_norm_eps\":1e-6,"
    "\"rope_theta\":1000000,\"rope_local_base_freq\":10000.0,\"sliding_window\":512,"
    "\"sliding_window_pattern\":6,\"attn_logit_softcapping\":null,"
    "\"final_logit_softcapping\":null,\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":8.0}}";

/* A Phi-3 config with `extra` spliced in before the closing brace. */
static json_t *phi3_config(const char *extra) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"architectures\":[\"Phi3ForCausalLM\"],\"model_type\":\"phi3\",\"hidden_size\":256,"
             "\"num_hidden_layers\":1,\"num_attention_heads\":32,\"num_key_value_heads\":32,"
             "\"intermediate_size\":512,\"max_position_embeddings\":131072,"
             "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0%s}", extra);
    return parse(text);
}

static void check_name(const char *arch, const qw_hparams *hp, const char *hf, const char *want,
                       qw_transform want_t) {
    char out[128];
    qw_transform t;
    bool drop;
    qw_error err;
    CHECK_OK(qw_arch_map_tensor(qw_arch_find(arch), hp, hf, out, sizeof out, &t, &drop, &err),
             &err);
    if (!want) {
        CHECK(drop);
        return;
    }
    CHECK(!drop);
    CHECK_EQ_STR(out, want);
    CHECK_EQ_INT(t, want_t);
}

TEST(dense_rows) {
    static const struct {
        const char *config, *arch;
    } detect[] = {
        {"{\"architectures\":[\"GemmaForCausalLM\"]}", "gemma"},
        {"{\"architectures\":[\"Gemma2ForCausalLM\"]}", "gemma2"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"]}", "gemma3"},
        {"{\"model_type\":\"gemma3_text\"}", "gemma3"},
        {"{\"architectures\":[\"Phi3ForCausalLM\"]}", "phi3"},
    };
    qw_error err;
    for (size_t i = 0; i < sizeof detect / sizeof detect[0]; i++) {
        json_t *c = parse(detect[i].config);
        const qw_arch *a = NULL;
        CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
        CHECK(a && strcmp(a->name, detect[i].arch) == 0 && !a->permute_qk);
        json_decref(c);
    }
    static const char *const listed[] = {"GemmaForCausalLM", "Gemma2ForCausalLM",
                                         "Gemma3ForCausalLM", "Phi3ForCausalLM"};
    for (size_t i = 0; i < 4; i++) CHECK(strstr(qw_arch_supported_list(), listed[i]) != NULL);

    /* transforms: the permutes reorder, ADD_ONE adds */
    CHECK(qw_transform_permutes(QW_TRANSFORM_PERMUTE_Q) && qw_transform_permutes(QW_TRANSFORM_PERMUTE_K));
    CHECK(!qw_transform_permutes(QW_TRANSFORM_ADD_ONE) && !qw_transform_permutes(QW_TRANSFORM_NONE));
    CHECK_NEAR(qw_transform_offset(QW_TRANSFORM_ADD_ONE), 1.0, 0);
    CHECK_NEAR(qw_transform_offset(QW_TRANSFORM_PERMUTE_Q), 0.0, 0);
    CHECK(!qw_transform_permutes(QW_TRANSFORM_COUNT) && qw_transform_offset(QW_TRANSFORM_COUNT) == 0);
    CHECK_EQ_STR(qw_transform_name(QW_TRANSFORM_ADD_ONE), "add 1");

    qw_hparams two = {.n_layer = 2, .n_head = 4, .n_head_kv = 1, .n_embd = 256};
    const qw_transform N = QW_TRANSFORM_NONE, P1 = QW_TRANSFORM_ADD_ONE;
    check_name("gemma", &two, "model.norm.weight", "output_norm.weight", P1);
    check_name("gemma", &two, "model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight", P1);
    check_name("gemma", &two, "model.layers.1.post_attention_layernorm.weight",
               "blk.1.ffn_norm.weight", P1);
    check_name("gemma", &two, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", N);
    check_name("gemma", &two, "model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", N);
    check_name("gemma", &two, "lm_head.weight", NULL, N);
    check_name("gemma2", &two, "lm_head.weight", NULL, N);
    check_name("gemma2", &two, "model.layers.0.post_attention_layernorm.weight",
               "blk.0.post_attention_norm.weight", P1);
    check_name("gemma2", &two, "model.layers.0.pre_feedforward_layernorm.weight",
               "blk.0.ffn_norm.weight", P1);
    check_name("gemma2", &two, "model.layers.0.post_feedforward_layernorm.weight",
               "blk.0.post_ffw_norm.weight", P1);
    check_name("gemma3", &two, "model.layers.1.self_attn.q_norm.weight",
               "blk.1.attn_q_norm.weight", P1);
    check_name("gemma3", &two, "model.layers.1.self_attn.k_norm.weight",
               "blk.1.attn_k_norm.weight", P1);
    check_name("gemma3", &two, "lm_head.weight", "output.weight", N);
    check_name("gemma3", &two, "model.embed_tokens.weight", "token_embd.weight", N);
    check_name("phi3", &two, "model.layers.1.self_attn.qkv_proj.weight", "blk.1.attn_qkv.weight", N);
    check_name("phi3", &two, "model.layers.1.mlp.gate_up_proj.weight", "blk.1.ffn_up.weight", N);
    check_name("phi3", &two, "model.layers.0.post_attention_layernorm.weight",
               "blk.0.ffn_norm.weight", N);
    check_name("phi3", &two, "model.norm.weight", "output_norm.weight", N);
    check_name("phi3", &two, "lm_head.weight", "output.weight", N);
    char out[128];
    qw_transform t;
    bool drop;
    CHECK_EQ_INT(qw_arch_map_tensor(qw_arch_find("phi3"), &two,
                                    "model.layers.0.self_attn.q_proj.weight", out, sizeof out, &t,
                                    &drop, &err),
                 QW_ERR_UNSUPPORTED_INPUT); /* Phi-3 has only the fused projection */
    CHECK(strstr(err.message, "phi3") != NULL);
}

TEST(dense_metadata) {
    qw_error err;
    qw_hparams hp;
    qw_gguf_writer *w = NULL;

    /* Gemma 2: soft-capping and window; no rope.freq_base (the converter omits it) */
    json_t *c = parse(gemma2_config);
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK(hp.has_attn_softcap && hp.attn_softcap == 50.0 && hp.final_softcap == 30.0);
    CHECK_EQ_INT(hp.sliding_window, 4096);
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("gemma2"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "gemma2.attn_logit_softcapping"));
    CHECK(qw_gguf_writer_has(w, "gemma2.final_logit_softcapping"));
    CHECK(qw_gguf_writer_has(w, "gemma2.attention.sliding_window"));
    CHECK(qw_gguf_writer_has(w, "gemma2.attention.key_length"));
    CHECK(!qw_gguf_writer_has(w, "gemma2.rope.freq_base"));
    CHECK(!qw_gguf_writer_has(w, "gemma2.rope.dimension_count"));
    CHECK(!qw_gguf_writer_has(w, "gemma2.vocab_size"));
    qw_gguf_writer_free(w);
    /* Gemma 1 with the same config: no soft-capping or window keys, CodeGemma's FIM ids */
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("gemma"), &hp, w, &err), &err);
    CHECK(!qw_gguf_writer_has(w, "gemma.attn_logit_softcapping"));
    CHECK(!qw_gguf_writer_has(w, "gemma.attention.sliding_window"));
    CHECK(qw_gguf_writer_has(w, "tokenizer.ggml.eot_token_id"));
    CHECK(qw_gguf_writer_has(w, "tokenizer.ggml.prefix_token_id"));
    qw_gguf_writer_free(w);
    json_decref(c);

    /* Gemma 3: local rope base, window, linear scaling, null soft-caps left out */
    c = parse(gemma3_config);
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK(!hp.has_attn_softcap && !hp.has_final_softcap);
    CHECK(hp.has_rope_theta_swa && hp.rope_theta_swa == 10000.0);
    CHECK_EQ_INT(hp.sliding_window_pattern, 6);
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("gemma3"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "gemma3.rope.freq_base"));
    CHECK(qw_gguf_writer_has(w, "gemma3.rope.freq_base_swa"));
    CHECK(qw_gguf_writer_has(w, "gemma3.attention.sliding_window"));
    CHECK(qw_gguf_writer_has(w, "gemma3.rope.scaling.type"));
    CHECK(!qw_gguf_writer_has(w, "gemma3.final_logit_softcapping"));
    CHECK(!qw_gguf_writer_has(w, "tokenizer.ggml.eot_token_id"));
    qw_gguf_writer_free(w);
    hp.sliding_window_pattern = 1; /* every layer global: no window */
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("gemma3"), &hp, w, &err), &err);
    CHECK(!qw_gguf_writer_has(w, "gemma3.attention.sliding_window"));
    qw_gguf_writer_free(w);
    json_decref(c);

    /* Mistral's window stays out of a llama file */
    c = parse("{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":256,"
              "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"sliding_window\":4096}");
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("llama"), &hp, w, &err), &err);
    CHECK(!qw_gguf_writer_has(w, "llama.attention.sliding_window"));
    qw_gguf_writer_free(w);
    json_decref(c);
}

TEST(phi3_longrope) {
    qw_error err;
    qw_hparams hp;
    qw_gguf_writer *w = NULL;
    int64_t n = 0;
    /* head_dim 8 -> 4 factors each */
    json_t *c = phi3_config(",\"original_max_position_embeddings\":4096,\"sliding_window\":262144,"
                            "\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":[1,2,3,4],"
                            "\"short_factor\":[1,1.5,1.25,1]}");
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK_EQ_INT(hp.longrope_orig_ctx, 4096);
    CHECK_EQ_INT(hp.n_rope_factors, 4);
    CHECK(qw_arch_has_rope_factors(qw_arch_find("phi3"), &hp, &n) && n == 4);
    CHECK(!qw_arch_has_rope_factors(qw_arch_find("llama"), &hp, &n));
    CHECK_NEAR(hp.rope_long_factor[3], 4.0, 0);
    CHECK_NEAR(hp.rope_short_factor[1], 1.5, 0);
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_OK(qw_arch_write_hparams(qw_arch_find("phi3"), &hp, w, &err), &err);
    CHECK(qw_gguf_writer_has(w, "phi3.rope.scaling.original_context_length"));
    CHECK(qw_gguf_writer_has(w, "phi3.rope.scaling.attn_factor"));
    CHECK(qw_gguf_writer_has(w, "phi3.rope.dimension_count"));
    CHECK(qw_gguf_writer_has(w, "phi3.attention.sliding_window"));
    CHECK(!qw_gguf_writer_has(w, "phi3.rope.scaling.type"));
    qw_gguf_writer_free(w);
    json_decref(c);

    /* partial rotary: 0.5 * 256 / 32 = 4 dims -> 2 factors, so 4 no longer fit */
    c = phi3_config(",\"original_max_position_embeddings\":4096,\"partial_rotary_factor\":0.5,"
                    "\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":[1,2,3,4],"
                    "\"short_factor\":[1,1,1,1]}");
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK(!qw_arch_has_rope_factors(qw_arch_find("phi3"), &hp, &n));
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_EQ_INT(qw_arch_write_hparams(qw_arch_find("phi3"), &hp, w, &err), QW_ERR_INVALID_ARG);
    CHECK(strstr(err.message, "rope_scaling") != NULL);
    qw_gguf_writer_free(w);
    json_decref(c);

    /* no original context anywhere: refused as the converter does, naming the key */
    c = phi3_config("");
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    CHECK_EQ_INT(qw_arch_write_hparams(qw_arch_find("phi3"), &hp, w, &err), QW_ERR_INVALID_ARG);
    CHECK(strstr(err.message, "original_max_position_embeddings") != NULL);
    qw_gguf_writer_free(w);
    json_decref(c);

    /* the window written as 0 when the config has none (Phi-4 style) */
    c = phi3_config(",\"original_max_position_embeddings\":4096,\"sliding_window\":null");
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK(!hp.has_sliding_window && hp.sliding_window == 0);
    json_decref(c);

    /* malformed inputs are errors naming the key, never crashes */
    static const char *const bad[] = {
        ",\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":\"x\",\"short_factor\":[1]}",
        ",\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":[1,2],\"short_factor\":[1]}",
        ",\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":[1,\"a\"],\"short_factor\":[1,1]}",
        ",\"sliding_window\":-1",
        ",\"sliding_window\":\"big\"",
        ",\"partial_rotary_factor\":2.5",
        ",\"attn_logit_softcapping\":\"x\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = phi3_config(bad[i]);
        CHECK_EQ_INT(qw_hparams_from_config(c, "config.json", &hp, &err), QW_ERR_CORRUPT);
        json_decref(c);
    }
    /* more factors than QW_ROPE_FACTORS_MAX */
    char *big = malloc(QW_ROPE_FACTORS_MAX * 2 * 2 + 256);
    CHECK(big != NULL);
    if (big) {
        size_t used = (size_t)sprintf(big, ",\"rope_scaling\":{\"type\":\"longrope\",\"long_factor\":[");
        for (int i = 0; i <= QW_ROPE_FACTORS_MAX; i++) used += (size_t)sprintf(big + used, "%s1", i ? "," : "");
        sprintf(big + used, "],\"short_factor\":[1]}");
        char text[8192];
        snprintf(text, sizeof text,
                 "{\"architectures\":[\"Phi3ForCausalLM\"],\"hidden_size\":256,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":32%s}", big);
        c = parse(text);
        CHECK_EQ_INT(qw_hparams_from_config(c, "config.json", &hp, &err), QW_ERR_CORRUPT);
        json_decref(c);
        free(big);
    }
}

/* BERT: detected from its own classes, the task models' "bert." prefix taken off, their heads
 * and the pooler dropped, LayerNorm's epsilon read; only encoders are marked as such. */
TEST(bert_row) {
    static const char *const classes[] = {"BertModel", "BertForMaskedLM", "BertForPreTraining"};
    qw_error err;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "{\"architectures\":[\"%s\"]}", classes[i]);
        json_t *c = parse(text);
        const qw_arch *a = NULL;
        CHECK_OK(qw_arch_from_config(c, "config.json", &a, &err), &err);
        CHECK(a && strcmp(a->name, "bert") == 0 && a->is_encoder && !a->permute_qk);
        json_decref(c);
    }
    CHECK(strstr(qw_arch_supported_list(), "BertModel") != NULL);
    for (size_t i = 0; i < qw_arch_count(); i++) {
        CHECK(qw_arch_at(i)->is_encoder == (strcmp(qw_arch_at(i)->name, "bert") == 0));
    }
    json_t *c = parse("{\"model_type\":\"bert\",\"num_hidden_layers\":2,\"hidden_size\":64,"
                      "\"num_attention_heads\":4,\"intermediate_size\":256,"
                      "\"max_position_embeddings\":512,\"layer_norm_eps\":1e-12}");
    qw_hparams hp;
    CHECK_OK(qw_hparams_from_config(c, "config.json", &hp, &err), &err);
    CHECK(hp.has_norm_eps && hp.norm_eps == 1e-12 && !hp.has_rms_eps && hp.n_ctx == 512);
    json_decref(c);

    const qw_arch *bert = qw_arch_find("bert");
    static const struct {
        const char *hf, *gguf;
    } names[] = {
        {"embeddings.word_embeddings.weight", "token_embd.weight"},
        {"bert.embeddings.word_embeddings.weight", "token_embd.weight"},
        {"embeddings.token_type_embeddings.weight", "token_types.weight"},
        {"embeddings.LayerNorm.bias", "token_embd_norm.bias"},
        {"encoder.layer.1.attention.self.query.bias", "blk.1.attn_q.bias"},
        {"bert.encoder.layer.0.attention.output.LayerNorm.weight", "blk.0.attn_output_norm.weight"},
        {"encoder.layer.1.output.dense.weight", "blk.1.ffn_down.weight"},
        {"encoder.layer.0.output.LayerNorm.bias", "blk.0.layer_output_norm.bias"},
    };
    char out[128];
    qw_transform t;
    bool drop;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        CHECK_OK(qw_arch_map_tensor(bert, &hp, names[i].hf, out, sizeof out, &t, &drop, &err),
                 &err);
        CHECK(!drop && strcmp(out, names[i].gguf) == 0 && t == QW_TRANSFORM_NONE);
    }
    static const char *const dropped[] = {"pooler.dense.weight", "bert.pooler.dense.bias",
                                          "cls.predictions.transform.dense.weight",
                                          "cls.seq_relationship.weight"};
    for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++) {
        CHECK_OK(qw_arch_map_tensor(bert, &hp, dropped[i], out, sizeof out, &t, &drop, &err),
                 &err);
        CHECK(drop);
    }
    CHECK(qw_arch_is_skipped_module(bert, "cls.predictions.bias"));
    CHECK(!qw_arch_is_skipped_module(bert, "embeddings.LayerNorm.weight"));
    CHECK_EQ_INT(qw_arch_map_tensor(bert, &hp, "encoder.layer.2.output.dense.weight", out,
                                    sizeof out, &t, &drop, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
}

/* Sliding-window layers: layer_types wins, else sliding_window_pattern, else the default
 * period; malformed layer_types are refused by name. */
TEST(sliding_layers) {
    qw_hparams hp = {0};
    hp.n_layer = 6;
    bool sliding[6];
    qw_error err;
    json_t *c = parse("{}");
    CHECK_OK(qw_sliding_layers(c, &hp, 2, sliding, &err), &err);
    for (int i = 0; i < 6; i++) CHECK(sliding[i] == (i % 2 == 0)); /* Gemma 2: even layers */
    hp.sliding_window_pattern = 3;
    CHECK_OK(qw_sliding_layers(c, &hp, 2, sliding, &err), &err);
    for (int i = 0; i < 6; i++) CHECK(sliding[i] == ((i + 1) % 3 != 0));
    json_decref(c);
    hp.n_layer = 2;
    c = parse("{\"layer_types\":[\"full_attention\",\"sliding_attention\"]}");
    CHECK_OK(qw_sliding_layers(c, &hp, 6, sliding, &err), &err);
    CHECK(!sliding[0] && sliding[1]);
    json_decref(c);
    c = parse("{\"layer_types\":[\"full_attention\"]}");
    CHECK_EQ_INT(qw_sliding_layers(c, &hp, 6, sliding, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "layer_types") != NULL);
    json_decref(c);
    c = parse("{\"layer_types\":[\"full_attention\",\"chunked\"]}");
    CHECK_EQ_INT(qw_sliding_layers(c, &hp, 6, sliding, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK(strstr(err.message, "layer_types[1]") != NULL);
    json_decref(c);
    /* no period: Qwen2/3's layers from max_window_layers, else every layer (Mistral) */
    hp.n_layer = 4;
    hp.sliding_window_pattern = 0;
    c = parse("{\"max_window_layers\":3}");
    CHECK_OK(qw_sliding_layers(c, &hp, 0, sliding, &err), &err);
    for (int i = 0; i < 4; i++) CHECK(sliding[i] == (i >= 3));
    json_decref(c);
    c = parse("{}");
    CHECK_OK(qw_sliding_layers(c, &hp, 0, sliding, &err), &err);
    for (int i = 0; i < 4; i++) CHECK(sliding[i]);
    json_decref(c);
    c = parse("{\"max_window_layers\":-1}");
    CHECK_EQ_INT(qw_sliding_layers(c, &hp, 0, sliding, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "max_window_layers") != NULL);
    json_decref(c);
    c = parse("{\"max_window_layers\":\"28\"}");
    CHECK_EQ_INT(qw_sliding_layers(c, &hp, 0, sliding, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "max_window_layers") != NULL);
    json_decref(c);
}

/* longrope's cos/sin scale: given, or from the extension factor, or 1 */
TEST(longrope_attention_factor) {
    qw_hparams hp = {0};
    hp.longrope_orig_ctx = 4096;
    hp.n_ctx = 131072;
    qw_error err;
    double a = 0;
    json_t *c = parse("{\"rope_scaling\":{\"type\":\"longrope\"}}");
    CHECK_OK(qw_longrope_attention_factor(c, &hp, &a, &err), &err);
    CHECK(fabs(a - sqrt(1.0 + log(32.0) / log(4096.0))) < 1e-12);
    json_decref(c);
    c = parse("{\"rope_scaling\":{\"type\":\"longrope\",\"attention_factor\":1.5}}");
    CHECK_OK(qw_longrope_attention_factor(c, &hp, &a, &err), &err);
    CHECK(a == 1.5);
    json_decref(c);
    hp.n_ctx = 4096; /* not extended */
    c = parse("{\"rope_scaling\":{\"type\":\"longrope\"}}");
    CHECK_OK(qw_longrope_attention_factor(c, &hp, &a, &err), &err);
    CHECK(a == 1.0);
    json_decref(c);
    c = parse("{\"rope_scaling\":{\"type\":\"longrope\",\"factor\":\"x\"}}");
    CHECK_EQ_INT(qw_longrope_attention_factor(c, &hp, &a, &err), QW_ERR_CORRUPT);
    json_decref(c);
}

RUN_TESTS(TEST_CASE(every_row_is_complete), TEST_CASE(bert_row), TEST_CASE(sliding_layers),
          TEST_CASE(longrope_attention_factor), TEST_CASE(architecture_detection),
          TEST_CASE(hyperparameters), TEST_CASE(tensor_names),
          TEST_CASE(permutation_matches_reshape_swap), TEST_CASE(rope_freqs_llama3),
          TEST_CASE(metadata_keys), TEST_CASE(moe_rows),
          TEST_CASE(dense_rows), TEST_CASE(dense_metadata), TEST_CASE(phi3_longrope))
