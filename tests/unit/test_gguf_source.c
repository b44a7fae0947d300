/* GGUF files as HuggingFace sources (model layer's HF view, arch_inverse.c): small GGUFs made
 * here with the writer, read back with HF names, Q/K rows un-permuted, F16 bit for bit, config
 * from metadata and rope_freqs; and defective ones (truncated, bad tensor type, missing keys,
 * unknown names, odd heads, unrecoverable rope_freqs), each a clear error. */
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "file.h"
#include "gguf.h"
#include "half.h"
#include "model.h"
#include "test.h"

/* A tiny llama: one layer, hidden 8, 2 heads of 4, 1 KV head; vocab 16; no output.weight. */
typedef struct spec {
    const char *arch;          /* general.architecture */
    bool no_block_count;
    bool no_head_count;
    int64_t q_rows;            /* rows of attn_q (8 normally) */
    bool extra_tensor;         /* blk.0.attn_foo.weight */
    bool bad_layer;            /* blk.5.attn_norm.weight in a 1-layer model */
    int64_t head_dim;          /* 4 normally; 64 for the rope tests (hidden 128) */
    const float *rope_freqs;   /* head_dim / 2 values, or NULL */
    const char *tok_model;     /* tokenizer.ggml.model, or NULL for no tokenizer */
    const char *tok_pre;
    bool tok_types_f32;        /* token_type stored as f32 instead of i32 */
    bool tok_unsplittable;     /* "a" "b" "c": no token is two others (no SPM merge at all) */
    bool router;               /* blk.0.ffn_gate_inp.weight of 4 experts, 2 used (Mixtral) */
} spec;

static spec default_spec(void) {
    spec s = {0};
    s.arch = "llama";
    s.q_rows = 8;
    s.head_dim = 4;
    return s;
}

/* HF value of element (row, col) of a named tensor: distinct everywhere. */
static float hf_value(int which, int64_t row, int64_t col) {
    return (float)(which * 1000 + row * 10 + col) / 64.0f;
}

static char *write_model(const char *file, const spec *s) {
    char *path = qw_path_join(test_tmpdir(), file);
    const int64_t hd = s->head_dim, n_embd = 2 * hd, vocab = 16;
    qw_gguf_writer *w = NULL;
    qw_error err = {0};
    CHECK_OK(qw_gguf_writer_create(&w, &err), &err);
    char key[128];
    qw_gguf_writer_set_str(w, "general.architecture", s->arch, &err);
#define U32(suffix, v)                                                                             \
    do {                                                                                           \
        snprintf(key, sizeof key, "%s.%s", s->arch, suffix);                                       \
        qw_gguf_writer_set_u32(w, key, (uint32_t)(v), &err);                                       \
    } while (0)
    if (!s->no_block_count) U32("block_count", 1);
    U32("embedding_length", n_embd);
    U32("context_length", 4096);
    U32("feed_forward_length", 32);
    if (!s->no_head_count) U32("attention.head_count", 2);
    U32("attention.head_count_kv", 1);
    if (s->router) {
        U32("expert_count", 4);
        U32("expert_used_count", 2);
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", s->arch);
    qw_gguf_writer_set_f32(w, key, 1e-5f, &err);
    snprintf(key, sizeof key, "%s.rope.freq_base", s->arch);
    qw_gguf_writer_set_f32(w, key, 500000.0f, &err);
#undef U32
    if (s->tok_model) {
        /* a toy byte-level vocabulary: the letters "a" "b" "ab" and two control tokens */
        static const char *const tokens[] = {"<s>", "</s>", "a", "b", "ab"};
        static const int32_t types[] = {3, 3, 1, 1, 1};
        static const float ftypes[] = {3, 3, 1, 1, 1};
        static const char *const lone[] = {"<s>", "</s>", "a", "b", "c"};
        static const char *const merges[] = {"a b"};
        qw_gguf_writer_set_str(w, "tokenizer.ggml.model", s->tok_model, &err);
        qw_gguf_writer_set_str(w, "tokenizer.ggml.pre", s->tok_pre, &err);
        qw_gguf_writer_set_str_array(w, "tokenizer.ggml.tokens",
                                     s->tok_unsplittable ? lone : tokens, 5, &err);
        if (s->tok_types_f32) {
            qw_gguf_writer_set_array(w, "tokenizer.ggml.token_type", QW_GGUF_FLOAT32, ftypes, 5,
                                     &err);
        } else {
            qw_gguf_writer_set_array(w, "tokenizer.ggml.token_type", QW_GGUF_INT32, types, 5,
                                     &err);
        }
        if (!s->tok_unsplittable) {
            qw_gguf_writer_set_str_array(w, "tokenizer.ggml.merges", merges, 1, &err);
        } else { /* a SentencePiece vocabulary: scores, and merges only rebuilt from them */
            static const float scores[] = {0, 0, -1, -2, -3};
            qw_gguf_writer_set_array(w, "tokenizer.ggml.scores", QW_GGUF_FLOAT32, scores, 5, &err);
        }
    }
    qw_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, &err);
    qw_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, &err);

    /* token_embd F32 [vocab, n_embd]; attn_q F16 permuted (heads of 4 rows); attn_k F32
     * permuted (one head); attn_norm F32. */
    const int64_t ne_embd[2] = {n_embd, vocab}, ne_q[2] = {n_embd, s->q_rows},
                  ne_k[2] = {n_embd, hd}, ne_norm[1] = {n_embd};
    const int64_t ne_rope[1] = {hd / 2};
    if (s->rope_freqs) {
        qw_gguf_writer_add_tensor(w, "rope_freqs.weight", QW_QTYPE_F32, 1, ne_rope, &err);
    }
    qw_gguf_writer_add_tensor(w, "token_embd.weight", QW_QTYPE_F32, 2, ne_embd, &err);
    qw_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", QW_QTYPE_F16, 2, ne_q, &err);
    qw_gguf_writer_add_tensor(w, "blk.0.attn_k.weight", QW_QTYPE_F32, 2, ne_k, &err);
    const char *norm = s->bad_layer ? "blk.5.attn_norm.weight" : "blk.0.attn_norm.weight";
    qw_gguf_writer_add_tensor(w, norm, QW_QTYPE_F32, 1, ne_norm, &err);
    if (s->extra_tensor) {
        qw_gguf_writer_add_tensor(w, "blk.0.attn_foo.weight", QW_QTYPE_F32, 1, ne_norm, &err);
    }
    const int64_t ne_router[2] = {n_embd, 4};
    if (s->router) {
        qw_gguf_writer_add_tensor(w, "blk.0.ffn_gate_inp.weight", QW_QTYPE_F32, 2, ne_router,
                                  &err);
    }
    CHECK_OK(qw_gguf_writer_begin(w, path, &err), &err);
    if (s->rope_freqs) qw_gguf_writer_write(w, s->rope_freqs, (size_t)(hd / 2) * 4, &err);
    for (int64_t r = 0; r < vocab; r++) {
        for (int64_t c = 0; c < n_embd; c++) {
            float v = hf_value(0, r, c);
            qw_gguf_writer_write(w, &v, 4, &err);
        }
    }
    /* GGUF row r of a permuted tensor holds HF row qw_permute_source_row(r) */
    for (int64_t r = 0; r < s->q_rows; r++) {
        bool even_heads = (s->q_rows / 2) % 2 == 0; /* 2 heads; odd ones stay unpermuted */
        int64_t hf_row = even_heads ? qw_permute_source_row(r, s->q_rows / 2) : r;
        for (int64_t c = 0; c < n_embd; c++) {
            uint16_t h = qw_fp32_to_fp16(hf_value(1, hf_row, c));
            qw_gguf_writer_write(w, &h, 2, &err);
        }
    }
    for (int64_t r = 0; r < hd; r++) {
        for (int64_t c = 0; c < n_embd; c++) {
            float v = hf_value(2, qw_permute_source_row(r, hd), c);
            qw_gguf_writer_write(w, &v, 4, &err);
        }
    }
    for (int k = 0; k < (s->extra_tensor ? 2 : 1); k++) {
        for (int64_t c = 0; c < n_embd; c++) {
            float v = hf_value(3, 0, c);
            qw_gguf_writer_write(w, &v, 4, &err);
        }
    }
    for (int64_t r = 0; s->router && r < 4; r++) {
        for (int64_t c = 0; c < n_embd; c++) {
            float v = hf_value(4, r, c);
            qw_gguf_writer_write(w, &v, 4, &err);
        }
    }
    CHECK_OK(qw_gguf_writer_finish(w, &err), &err);
    qw_gguf_writer_free(w);
    return path;
}

/* Opens path and builds its view; returns the status of whichever failed first. */
static qw_status open_view(const char *path, qw_model **m, qw_hf_view **v, qw_error *err) {
    *m = NULL;
    *v = NULL;
    qw_status st = qw_model_open(path, NULL, m, err);
    if (st == QW_OK) st = qw_model_hf_view(*m, v, err);
    return st;
}

static void close_view(qw_model *m, qw_hf_view *v) {
    qw_hf_view_free(v);
    qw_model_close(m);
}

TEST(view_gives_hf_names_rows_and_config) {
    spec s = default_spec();
    char *path = write_model("src.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    if (!v) goto done;
    CHECK_EQ_INT(qw_hf_view_count(v), 4);
    CHECK_EQ_STR(qw_hf_view_at(v, 0)->name, "model.embed_tokens.weight");
    CHECK_EQ_STR(qw_hf_view_at(v, 3)->name, "model.layers.0.input_layernorm.weight");
    const qw_hf_tensor *q = qw_hf_view_find(v, "model.layers.0.self_attn.q_proj.weight");
    const qw_hf_tensor *k = qw_hf_view_find(v, "model.layers.0.self_attn.k_proj.weight");
    CHECK(q && k);
    if (!q || !k) goto done;
    CHECK(q->raw && q->raw_type == QW_QTYPE_F16);
    float rows[8 * 8];
    uint16_t raw[8 * 8];
    /* rows 3..6 straddle the two heads */
    CHECK_OK(qw_hf_tensor_read_f32(q, 3, 4, rows, &err), &err);
    CHECK_OK(qw_hf_tensor_read_raw(q, 3, 4, raw, &err), &err);
    int bad = 0;
    for (int64_t r = 0; r < 4; r++) {
        for (int64_t c = 0; c < 8; c++) {
            uint16_t want = qw_fp32_to_fp16(hf_value(1, 3 + r, c));
            bad += raw[r * 8 + c] != want || rows[r * 8 + c] != qw_fp16_to_fp32(want);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_OK(qw_hf_tensor_read_f32(k, 0, 4, rows, &err), &err);
    for (int64_t r = 0; r < 4; r++) {
        for (int64_t c = 0; c < 8; c++) bad += rows[r * 8 + c] != hf_value(2, r, c);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(qw_hf_tensor_read_f32(k, 2, 3, rows, &err), QW_ERR_INVALID_ARG);
    CHECK_EQ_INT(qw_hf_tensor_read_raw(k, -1, 1, rows, &err), QW_ERR_INVALID_ARG);

    const json_t *c = NULL;
    CHECK_OK(qw_hf_view_config(v, &c, &err), &err);
    CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
                 "LlamaForCausalLM");
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "vocab_size")), 16);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "num_key_value_heads")), 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "max_position_embeddings")), 4096);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "eos_token_id")), 2);
    CHECK(json_is_true(json_object_get(c, "tie_word_embeddings")));
    CHECK(json_is_null(json_object_get(c, "rope_scaling")));
    CHECK(json_real_value(json_object_get(c, "rms_norm_eps")) == 1e-5);
    CHECK(json_real_value(json_object_get(c, "rope_theta")) == 500000.0);
    CHECK_EQ_STR(json_string_value(json_object_get(c, "torch_dtype")), "float32");
done:
    close_view(m, v);
    qw_free(path);
}

TEST(hf_name_map_inverts_the_forward_map) {
    const qw_arch *arch = qw_arch_find("qwen3");
    qw_hparams hp = {0};
    hp.n_layer = 12;
    static const char *const names[] = {
        "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
        "model.layers.11.self_attn.q_norm.weight", "model.layers.3.mlp.down_proj.weight",
        "model.layers.0.self_attn.v_proj.bias"};
    qw_error err = {0};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char g[128], back[128];
        qw_transform t;
        bool drop;
        CHECK_OK(qw_arch_map_tensor(arch, &hp, names[i], g, sizeof g, &t, &drop, &err), &err);
        CHECK_OK(qw_arch_unmap_tensor(arch, &hp, g, back, sizeof back, &t, &drop, &err), &err);
        CHECK(!drop);
        CHECK_EQ_STR(back, names[i]);
    }
    char back[128];
    qw_transform t;
    bool drop;
    CHECK_EQ_INT(qw_arch_unmap_tensor(arch, &hp, "blk.01.attn_q.weight", back, sizeof back, &t,
                                      &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_EQ_INT(qw_arch_unmap_tensor(arch, &hp, "blk.12.attn_q.weight", back, sizeof back, &t,
                                      &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_OK(qw_arch_unmap_tensor(arch, &hp, "rope_freqs.weight", back, sizeof back, &t, &drop,
                                  &err), &err);
    CHECK(drop);
    const qw_arch *moe = qw_arch_find("qwen3moe");
    if (moe) { /* stacked experts are one GGUF tensor for many HF ones: refused by name */
        CHECK_EQ_INT(qw_arch_unmap_tensor(moe, &hp, "blk.0.ffn_gate_exps.weight", back,
                                          sizeof back, &t, &drop, &err), QW_ERR_UNSUPPORTED_INPUT);
        CHECK(strstr(err.message, "blk.0.ffn_gate_exps.weight") != NULL);
        /* ... and given back expert by expert, each name mapping forward to the stack */
        qw_hparams mh = hp;
        mh.n_expert = 8;
        bool stacked;
        CHECK_OK(qw_arch_unmap_tensor_part(moe, &mh, "blk.11.ffn_down_exps.weight", 7, back,
                                           sizeof back, &t, &drop, &stacked, &err), &err);
        CHECK(stacked && !drop);
        CHECK_EQ_STR(back, "model.layers.11.mlp.experts.7.down_proj.weight");
        char g[128];
        int64_t e;
        CHECK_OK(qw_arch_map_tensor_part(moe, &mh, back, g, sizeof g, &t, &drop, &e, &err), &err);
        CHECK_EQ_STR(g, "blk.11.ffn_down_exps.weight");
        CHECK_EQ_INT(e, 7);
        CHECK_EQ_INT(qw_arch_unmap_tensor_part(moe, &mh, "blk.0.ffn_up_exps.weight", 8, back,
                                               sizeof back, &t, &drop, &stacked, &err),
                     QW_ERR_INVALID_ARG);
        CHECK_OK(qw_arch_unmap_tensor_part(moe, &mh, "blk.0.ffn_gate_inp.weight", 0, back,
                                           sizeof back, &t, &drop, &stacked, &err), &err);
        CHECK(!stacked);
        CHECK_EQ_STR(back, "model.layers.0.mlp.gate.weight");
    }
    for (int64_t hr = 2; hr <= 128; hr *= 2) {
        int bad = 0;
        for (int64_t r = 0; r < 3 * hr; r++) {
            bad += qw_unpermute_source_row(qw_permute_source_row(r, hr), hr) != r;
        }
        CHECK_EQ_INT(bad, 0);
    }
    CHECK(qw_f32_shortest((double)1e-6f) == 1e-6);
    CHECK(qw_f32_shortest((double)0.1f) == 0.1);
}

/* Gemma stores its norms as w + 1: the view subtracts it again and offers no raw bytes for them;
 * its config carries Gemma's own keys. */
TEST(gemma_norms_lose_their_offset_and_config_has_gemma_keys) {
    spec s = default_spec();
    s.arch = "gemma";
    char *path = write_model("gemma.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    const qw_hf_tensor *norm = v ? qw_hf_view_find(v, "model.layers.0.input_layernorm.weight")
                                 : NULL;
    CHECK(norm != NULL);
    if (norm) {
        float got[8];
        CHECK(!norm->raw);
        CHECK_OK(qw_hf_tensor_read_f32(norm, 0, 1, got, &err), &err);
        int bad = 0;
        for (int c = 0; c < 8; c++) bad += got[c] != hf_value(3, 0, c) - 1.0f;
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(qw_hf_tensor_read_raw(norm, 0, 1, got, &err), QW_ERR_INVALID_ARG);
        const json_t *c = NULL;
        CHECK_OK(qw_hf_view_config(v, &c, &err), &err);
        CHECK_EQ_STR(json_string_value(json_object_get(c, "model_type")), "gemma");
        CHECK_EQ_STR(json_string_value(json_object_get(c, "hidden_act")), "gelu_pytorch_tanh");
        /* always stated: GemmaConfig's head_dim default is 256, not hidden / heads */
        CHECK(json_real_value(json_object_get(c, "rope_theta")) > 0);
        CHECK(json_integer_value(json_object_get(c, "head_dim")) > 0);
    }
    close_view(m, v);
    qw_free(path);
}

/* Finding by name (a hash index) gives back every tensor of the view, and nothing for a name
 * it does not hold, one that differs in its last byte, or a prefix of one. */
TEST(every_tensor_is_found_by_its_name) {
    spec s = default_spec();
    s.router = true;
    char *path = write_model("find.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    if (v) {
        CHECK(qw_hf_view_count(v) >= 3);
        for (size_t i = 0; i < qw_hf_view_count(v); i++) {
            const qw_hf_tensor *t = qw_hf_view_at(v, i);
            CHECK(qw_hf_view_find(v, t->name) == t);
            char other[sizeof t->name];
            snprintf(other, sizeof other, "%s", t->name);
            other[strlen(other) - 1] ^= 1;
            CHECK(qw_hf_view_find(v, other) == NULL);
            other[strlen(other) - 1] = '\0';
            CHECK(qw_hf_view_find(v, other) == NULL);
        }
        CHECK(qw_hf_view_find(v, "") == NULL);
        CHECK(qw_hf_view_find(v, "model.layers.7.mlp.up_proj.weight") == NULL);
    }
    close_view(m, v);
    qw_free(path);
}

/* A layer with a router is a sparse one, named as its checkpoint layout names it; a layer
 * without one, or past the model's, is dense. */
TEST(moe_layout_is_found_by_the_router) {
    spec s = default_spec();
    s.router = true;
    char *path = write_model("router.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    if (v) {
        CHECK(qw_hf_view_find(v, "model.layers.0.block_sparse_moe.gate.weight") != NULL);
        const qw_moe_layout *lo = qw_hf_view_moe_layout(v, 0);
        CHECK(lo != NULL);
        if (lo) {
            CHECK_EQ_STR(lo->prefix, "block_sparse_moe");
            CHECK_EQ_STR(lo->linear[0], "w1");
            CHECK_EQ_STR(lo->linear[1], "w3");
            CHECK_EQ_STR(lo->linear[2], "w2");
        }
        CHECK(qw_hf_view_moe_layout(v, 1) == NULL);
        CHECK(qw_hf_view_moe_layout(v, -1) == NULL);
    }
    close_view(m, v);
    qw_free(path);
    s = default_spec();
    path = write_model("dense.gguf", &s);
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    if (v) CHECK(qw_hf_view_moe_layout(v, 0) == NULL);
    close_view(m, v);
    qw_free(path);
}

/* Every architecture row gets a config.json of one of its own classes (Mixtral for a "llama"
 * GGUF with experts), and a rope scaling type HF cannot take is refused, not written. */
TEST(every_architecture_row_has_a_config) {
    qw_hparams hp = {0};
    hp.n_layer = 2;
    hp.n_embd = 64;
    hp.n_head = 4;
    hp.n_head_kv = 2;
    qw_hf_config_info info = {.bos_token_id = -1, .eos_token_id = -1, .pad_token_id = -1};
    qw_error err = {0};
    for (size_t i = 0; i < qw_arch_count(); i++) {
        const qw_arch *arch = qw_arch_at(i);
        if (arch->is_encoder) {
            /* no GGUF of an encoder is written, so none is read back into a config */
            json_t *c = NULL;
            CHECK(qw_arch_hf_config(arch, &hp, &info, &c, &err) == QW_ERR_UNSUPPORTED_ARCH);
            CHECK(c == NULL);
            CHECK(strstr(err.message, arch->name) != NULL);
            continue;
        }
        for (int experts = 0; experts <= (arch->moe_rules ? 1 : 0); experts++) {
            hp.n_expert = experts ? 4 : 0;
            hp.n_expert_used = experts ? 2 : 0;
            json_t *c = NULL;
            CHECK_OK(qw_arch_hf_config(arch, &hp, &info, &c, &err), &err);
            const json_t *classes = json_object_get(c, "architectures");
            const char *cls = json_string_value(json_array_get(classes, 0));
            bool own = false;
            for (const char *const *k = arch->hf_classes; cls && *k; k++) {
                own |= strcmp(*k, cls) == 0;
            }
            CHECK(own);
            if (experts) {
                CHECK(json_integer_value(json_object_get(c, "num_experts_per_tok")) == 2);
            }
            json_decref(c);
        }
    }
    hp.n_expert = 0;
    /* llama.cpp scales Gemma 2 27B's queries (the 46-layer model) by hidden / heads, the others
     * by the head size: query_pre_attn_scalar says the same */
    hp.head_dim = 32;
    static const struct {
        int64_t layers, scalar;
    } qpas[] = {{2, 32}, {46, 16}};
    for (size_t i = 0; i < sizeof qpas / sizeof qpas[0]; i++) {
        hp.n_layer = qpas[i].layers;
        json_t *g = NULL;
        CHECK_OK(qw_arch_hf_config(qw_arch_find("gemma2"), &hp, &info, &g, &err), &err);
        CHECK_EQ_INT(json_integer_value(json_object_get(g, "query_pre_attn_scalar")),
                     qpas[i].scalar);
        json_decref(g);
    }
    snprintf(hp.rope_type, sizeof hp.rope_type, "dynamic");
    json_t *c = NULL;
    CHECK_EQ_INT(qw_arch_hf_config(qw_arch_find("llama"), &hp, &info, &c, &err),
                 QW_ERR_UNSUPPORTED_INPUT);
    CHECK(c == NULL && strstr(err.message, "dynamic") != NULL);
}

/* Llama-3 rope factors written from known parameters come back as those parameters. */
static void check_rope(double factor, double low, double high) {
    qw_hparams hp = {0};
    hp.n_embd = 128;
    hp.n_head = 2;
    hp.head_dim = 64;
    hp.has_rope_theta = true;
    hp.rope_theta = 500000.0;
    hp.rope_factor = factor;
    hp.rope_low_freq_factor = low;
    hp.rope_high_freq_factor = high;
    hp.rope_freqs_orig_ctx = 8192;
    float freqs[32];
    qw_arch_rope_freqs(&hp, freqs, 32);
    spec s = default_spec();
    s.head_dim = 64;
    s.q_rows = 128;
    s.rope_freqs = freqs;
    char *path = write_model("rope.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_OK(open_view(path, &m, &v, &err), &err);
    if (v) {
        const json_t *c = NULL;
        CHECK_OK(qw_hf_view_config(v, &c, &err), &err);
        const json_t *rs = json_object_get(c, "rope_scaling");
        CHECK_EQ_STR(json_string_value(json_object_get(rs, "rope_type")), "llama3");
        CHECK_NEAR(json_real_value(json_object_get(rs, "factor")), factor, 1e-9);
        CHECK_NEAR(json_real_value(json_object_get(rs, "low_freq_factor")), low, 1e-9);
        CHECK_NEAR(json_real_value(json_object_get(rs, "high_freq_factor")), high, 1e-9);
        CHECK_EQ_INT(json_integer_value(json_object_get(rs, "original_max_position_embeddings")),
                     8192);
        CHECK(qw_hf_view_find(v, "rope_freqs.weight") == NULL);
        CHECK_EQ_INT(qw_hf_view_count(v), 4);
    }
    close_view(m, v);
    qw_free(path);
}

TEST(rope_freqs_give_llama3_scaling) {
    check_rope(8.0, 1.0, 4.0);  /* Llama 3.1 */
    check_rope(32.0, 1.0, 4.0); /* Llama 3.2 */
    check_rope(16.0, 2.0, 6.0); /* solved from the smooth entries, not a known set */
}

TEST(rope_freqs_no_parameters_reproduce_is_an_error) {
    float freqs[32];
    for (int i = 0; i < 32; i++) freqs[i] = (float)(1 + (i * 7) % 5);
    spec s = default_spec();
    s.head_dim = 64;
    s.q_rows = 128;
    s.rope_freqs = freqs;
    char *path = write_model("rope_bad.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    CHECK_EQ_INT(open_view(path, &m, &v, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_EQ_STR(err.tensor, "rope_freqs.weight");
    CHECK(strstr(err.message, "rope_bad.gguf") != NULL);
    close_view(m, v);
    qw_free(path);
    freqs[3] = -1.0f;
    path = write_model("rope_neg.gguf", &s);
    CHECK_EQ_INT(open_view(path, &m, &v, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "rope_freqs.weight[3]") != NULL);
    close_view(m, v);
    qw_free(path);
}

static void no_block_count(spec *s) { s->no_block_count = true; }
static void no_head_count(spec *s) { s->no_head_count = true; }
static void arch_gpt2(spec *s) { s->arch = "gpt2"; }
static void odd_heads(spec *s) { s->q_rows = 6; }
static void extra_tensor(spec *s) { s->extra_tensor = true; }
static void bad_layer(spec *s) { s->bad_layer = true; }

/* Each defect: the status, and what the message must name besides the file. */
TEST(defective_models_are_clear_errors) {
    static const struct {
        const char *file;
        void (*tweak)(spec *);
        qw_status status;
        const char *needle;
    } cases[] = {
        {"no_block_count.gguf", no_block_count, QW_ERR_CORRUPT, "llama.block_count"},
        {"no_heads.gguf", no_head_count, QW_ERR_CORRUPT, "llama.attention.head_count"},
        {"gpt2.gguf", arch_gpt2, QW_ERR_UNSUPPORTED_ARCH, "gpt2"},
        {"odd_heads.gguf", odd_heads, QW_ERR_CORRUPT, "blk.0.attn_q.weight"},
        {"extra.gguf", extra_tensor, QW_ERR_UNSUPPORTED_INPUT, "blk.0.attn_foo.weight"},
        {"bad_layer.gguf", bad_layer, QW_ERR_UNSUPPORTED_INPUT, "blk.5.attn_norm.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        spec s = default_spec();
        cases[i].tweak(&s);
        char *path = write_model(cases[i].file, &s);
        qw_model *m;
        qw_hf_view *v;
        qw_error err = {0};
        qw_status st = open_view(path, &m, &v, &err);
        if (st != cases[i].status || !strstr(err.message, cases[i].needle) ||
            !strstr(err.message, cases[i].file)) {
            fprintf(stderr, "case %s: %s: %s\n", cases[i].file, qw_status_name(st), err.message);
            CHECK(0);
        }
        close_view(m, v);
        qw_free(path);
    }
}

/* Rewrites a file's bytes in place: `cut` bytes off the end, or one u32 at `at` set to `value`. */
static void patch_file(const char *path, size_t cut, size_t at, uint32_t value, bool set) {
    char *data = NULL;
    size_t len = 0;
    qw_error err = {0};
    CHECK_OK(qw_file_read_all(path, 1u << 20, &data, &len, &err), &err);
    if (!data) return;
    if (set && at + 4 <= len) memcpy(data + at, &value, 4);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(data, 1, set || cut > len ? len : len - cut, f);
        fclose(f);
    }
    qw_free(data);
}

/* Byte offset of the ggml type field of a tensor's info: after its name, n_dims and ne. */
static size_t type_field_offset(const char *path, const char *name) {
    char *data = NULL;
    size_t len = 0;
    qw_error err = {0};
    CHECK_OK(qw_file_read_all(path, 1u << 20, &data, &len, &err), &err);
    size_t at = 0;
    for (size_t i = 0; data && i + strlen(name) <= len; i++) {
        if (memcmp(data + i, name, strlen(name)) == 0) {
            uint32_t n_dims;
            memcpy(&n_dims, data + i + strlen(name), 4);
            at = i + strlen(name) + 4 + 8 * (size_t)n_dims;
            break;
        }
    }
    qw_free(data);
    return at;
}

TEST(truncated_and_bad_type_files_are_errors) {
    spec s = default_spec();
    char *path = write_model("truncated.gguf", &s);
    qw_model *m;
    qw_hf_view *v;
    qw_error err = {0};
    patch_file(path, 10, 0, 0, false); /* inside the last tensor's data */
    CHECK_EQ_INT(open_view(path, &m, &v, &err), QW_ERR_CORRUPT);
    CHECK(strstr(err.message, "truncated.gguf") != NULL);
    close_view(m, v);
    qw_free(path);

    static const uint32_t bad_types[] = {4 /* removed Q4_2 */, 1000};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        path = write_model("bad_type.gguf", &s);
        size_t at = type_field_offset(path, "blk.0.attn_k.weight");
        CHECK(at > 0);
        patch_file(path, 0, at, bad_types[i], true);
        qw_status st = open_view(path, &m, &v, &err);
        CHECK(st == QW_ERR_UNSUPPORTED_INPUT || st == QW_ERR_CORRUPT);
        CHECK(strstr(err.message, "bad_type.gguf") != NULL);
        CHECK_EQ_STR(err.tensor, "blk.0.attn_k.weight");
        close_view(m, v);
        qw_free(path);
    }
}

static qw_status tokenizer_of(const spec *s, const char *file, json_t **tok, qw_error *err) {
    char *path = write_model(file, s);
    qw_model *m = NULL;
    json_t *config = NULL;
    *tok = NULL;
    qw_status st = qw_model_open(path, NULL, &m, err);
    if (st == QW_OK) st = qw_model_hf_tokenizer(m, tok, &config, err);
    json_decref(config);
    qw_model_close(m);
    qw_free(path);
    return st;
}

TEST(tokenizer_json_from_gguf_and_its_errors) {
    spec s = default_spec();
    s.tok_model = "gpt2";
    s.tok_pre = "qwen2";
    json_t *tok = NULL;
    qw_error err = {0};
    CHECK_OK(tokenizer_of(&s, "tok.gguf", &tok, &err), &err);
    const json_t *model = json_object_get(tok, "model");
    CHECK_EQ_INT(json_object_size(json_object_get(model, "vocab")), 3); /* control tokens apart */
    CHECK_EQ_INT(json_array_size(json_object_get(tok, "added_tokens")), 2);
    CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(model, "merges"), 0)), "a b");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tok, "normalizer"), "type")),
                 "NFC");
    json_decref(tok);

    s.tok_pre = "made-up";
    CHECK_EQ_INT(tokenizer_of(&s, "tok_pre.gguf", &tok, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_EQ_STR(err.tensor, "tokenizer.ggml.pre");
    CHECK(strstr(err.message, "made-up") && strstr(err.message, "tok_pre.gguf"));
    s.tok_pre = "qwen2";
    s.tok_types_f32 = true;
    CHECK_EQ_INT(tokenizer_of(&s, "tok_types.gguf", &tok, &err), QW_ERR_CORRUPT);
    CHECK_EQ_STR(err.tensor, "tokenizer.ggml.token_type");
    s = default_spec();
    CHECK_EQ_INT(tokenizer_of(&s, "no_tok.gguf", &tok, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK_EQ_STR(err.tensor, "tokenizer.ggml.model");
    CHECK(tok == NULL);
}

/* Found by fuzz/fuzz_gguf_model (fuzz/regressions/gguf_model/): a SentencePiece vocabulary in
 * which no token is two others has no merges to rebuild, and the empty list went to qsort as
 * NULL (undefined). It gives a tokenizer.json with an empty merges array. */
TEST(spm_vocabulary_without_merges) {
    spec s = default_spec();
    s.tok_model = "llama";
    s.tok_pre = "default";
    s.tok_unsplittable = true;
    json_t *tok = NULL;
    qw_error err = {0};
    CHECK_OK(tokenizer_of(&s, "tok_spm_lone.gguf", &tok, &err), &err);
    const json_t *merges = json_object_get(json_object_get(tok, "model"), "merges");
    CHECK(json_is_array(merges));
    CHECK_EQ_INT(json_array_size(merges), 0);
    json_decref(tok);
}

/* Every byte flip of a small model with a tokenizer either fails to open with an error or
 * reads back completely: under ASan, nothing in between. */
TEST(random_mutations_never_crash) {
    spec s = default_spec();
    s.tok_model = "gpt2";
    s.tok_pre = "llama-bpe";
    char *path = write_model("mutate.gguf", &s);
    char *orig = NULL;
    size_t len = 0;
    qw_error err = {0};
    CHECK_OK(qw_file_read_all(path, 1u << 20, &orig, &len, &err), &err);
    uint32_t rng = 12345;
    int opened = 0;
    for (int iter = 0; orig && iter < 400; iter++) {
        char *data = qw_malloc(len);
        memcpy(data, orig, len);
        for (int k = 0; k < 1 + iter % 3; k++) {
            rng = rng * 1664525u + 1013904223u;
            size_t at = (rng >> 8) % len;
            rng = rng * 1664525u + 1013904223u;
            data[at] = (char)(rng >> 24);
        }
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(data, 1, len, f);
            fclose(f);
        }
        qw_free(data);
        qw_model *m = NULL;
        qw_hf_view *v = NULL;
        if (open_view(path, &m, &v, &err) == QW_OK) {
            opened++;
            float buf[256];
            for (size_t i = 0; i < qw_hf_view_count(v); i++) {
                const qw_hf_tensor *t = qw_hf_view_at(v, i);
                if ((uint64_t)t->ne[0] * (uint64_t)t->n_rows <= 256) {
                    qw_hf_tensor_read_f32(t, 0, t->n_rows, buf, &err);
                }
            }
            json_t *tok = NULL, *config = NULL;
            if (qw_model_hf_tokenizer(m, &tok, &config, &err) == QW_OK) {
                char *text = json_dumps(tok, 0);
                free(text);
            }
            json_decref(tok);
            json_decref(config);
        }
        close_view(m, v);
    }
    CHECK(opened > 0); /* some flips land in tensor data and leave the file valid */
    qw_free(orig);
    qw_free(path);
}

RUN_TESTS(TEST_CASE(view_gives_hf_names_rows_and_config),
          TEST_CASE(hf_name_map_inverts_the_forward_map),
          TEST_CASE(rope_freqs_give_llama3_scaling),
          TEST_CASE(rope_freqs_no_parameters_reproduce_is_an_error),
          TEST_CASE(defective_models_are_clear_errors),
          TEST_CASE(truncated_and_bad_type_files_are_errors),
          TEST_CASE(tokenizer_json_from_gguf_and_its_errors),
          TEST_CASE(spm_vocabulary_without_merges),
          TEST_CASE(random_mutations_never_crash),
          TEST_CASE(gemma_norms_lose_their_offset_and_config_has_gemma_keys),
          TEST_CASE(every_tensor_is_found_by_its_name),
          TEST_CASE(moe_layout_is_found_by_the_router),
          TEST_CASE(every_architecture_row_has_a_config))
