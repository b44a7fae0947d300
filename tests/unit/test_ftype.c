/* test_ftype — the format table and the per-tensor rules, without llama.cpp.
 *
 * tests/python/test_gguf_formats.py compares every format's types with llama.cpp's own quantizer;
 * this file walks every table row and pins down the rules' named predicates (use_more_bits, the
 * attn_v counter, n_gqa, 8 experts, 70B, Falcon, tied embeddings), the fallbacks, the options and
 * the importance-matrix requirement with cases worked out by hand from llama-quant.cpp. */
#include <string.h>

#include "ftype.h"
#include "test.h"

#define T(x) QW_QTYPE_##x

/* ---- the format table --------------------------------------------------------------------- */

TEST(every_format_row) {
    size_t n = qw_ftype_table_count(), offered = 0;
    CHECK(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const qw_ftype_info *ft = qw_ftype_table_at(i);
        CHECK(ft->name && *ft->name);
        CHECK(ft->description && strlen(ft->description) > 10);
        CHECK((unsigned)ft->default_type < QW_QTYPE_COUNT);
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(qw_ftype_table_at(j)->name, ft->name) != 0);
            CHECK(qw_ftype_table_at(j)->llama_ftype != ft->llama_ftype);
        }
        bool types[QW_QTYPE_COUNT];
        qw_ftype_types(ft, types);
        CHECK(types[ft->default_type]);
        if (!qw_qtype_get(ft->default_type)->is_float) CHECK(types[T(F16)] && types[T(Q6_K)]);
        char lower[16];
        snprintf(lower, sizeof lower, "%s", ft->name);
        qw_str_lower(lower);
        if (qw_ftype_offered(ft)) {
            offered++;
            CHECK(qw_ftype_find(lower) == ft);
        } else {
            CHECK(ft->needs_every_encoder);
            CHECK(qw_ftype_find(ft->name) == NULL);
        }
        if (!ft->needs_every_encoder) CHECK(qw_ftype_offered(ft));
    }
    CHECK_EQ_INT(qw_ftype_count(), offered);
    for (size_t i = 0; i < qw_ftype_count(); i++) CHECK(qw_ftype_offered(qw_ftype_at(i)));
    CHECK(qw_ftype_at(qw_ftype_count()) == NULL);
    CHECK(qw_ftype_find("Q9_K") == NULL && qw_ftype_find("") == NULL && !qw_ftype_find(NULL));
}

TEST(aliases_and_ids) {
    static const struct {
        const char *name, *canonical;
        uint32_t id;
        qw_qtype type;
    } cases[] = {
        {"q4_k", "Q4_K_M", 15, T(Q4_K)},  {"Q5_K", "Q5_K_M", 17, T(Q5_K)},
        {"Q3_K", "Q3_K_M", 12, T(Q3_K)},  {"IQ3_XS", "IQ3_XS", 22, T(IQ3_S)},
        {"IQ3_M", "IQ3_M", 27, T(IQ3_S)}, {"Q8_0", "Q8_0", 7, T(Q8_0)},
        {"bf16", "BF16", 32, T(BF16)},    {"F32", "F32", 0, T(F32)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const qw_ftype_info *ft = qw_ftype_find(cases[i].name);
        CHECK(ft != NULL);
        if (!ft) continue;
        CHECK_EQ_STR(ft->name, cases[i].canonical);
        CHECK_EQ_INT(ft->llama_ftype, cases[i].id);
        CHECK_EQ_INT(ft->default_type, cases[i].type);
    }
    CHECK_EQ_STR(qw_ftype_at(0)->name, "Q4_K_M");
}

TEST(categories) {
    static const struct {
        const char *name;
        qw_tensor_category cat;
    } cases[] = {
        {"output.weight", QW_CAT_OUTPUT},
        {"token_embd.weight", QW_CAT_TOKEN_EMBD},
        {"per_layer_token_embd.weight", QW_CAT_TOKEN_EMBD},
        {"blk.0.attn_v.weight", QW_CAT_ATTN_V},
        {"blk.0.attn_qkv.weight", QW_CAT_ATTN_V},
        {"blk.3.attn_kv_b.weight", QW_CAT_ATTN_V},
        {"blk.0.attn_k.weight", QW_CAT_ATTN_K},
        {"blk.0.attn_q.weight", QW_CAT_ATTN_Q},
        {"blk.0.attn_output.weight", QW_CAT_ATTN_OUTPUT},
        {"blk.0.ffn_up_exps.weight", QW_CAT_FFN_UP},
        {"blk.0.ffn_gate_shexp.weight", QW_CAT_FFN_GATE},
        {"blk.0.ffn_down.weight", QW_CAT_FFN_DOWN},
        {"blk.0.attn_k_b.weight", QW_CAT_OTHER},
        {"output_norm.weight", QW_CAT_OTHER},
        {"blk.0.output.weight", QW_CAT_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (qw_tensor_category_of(cases[i].name) != cases[i].cat) {
            fprintf(stderr, "  %s: %s\n", cases[i].name,
                    qw_tensor_category_name(qw_tensor_category_of(cases[i].name)));
            CHECK(false);
        }
    }
}

/* ---- a small model to run the rules on ------------------------------------------------------ */

typedef struct model {
    const char *arch;
    int n_layer, n_head, n_head_kv, n_expert;
    int64_t n_embd;
    bool tied;
} model;

/* A row of the table, offered by this build or not (the rules do not depend on kernels). */
static const qw_ftype_info *format_row(const char *name) {
    for (size_t i = 0; i < qw_ftype_table_count(); i++) {
        if (strcmp(qw_ftype_table_at(i)->name, name) == 0) return qw_ftype_table_at(i);
    }
    fprintf(stderr, "no format row %s\n", name);
    abort();
}

/* The rules' state for a model, with every tensor name of a plain llama layout counted. */
static qw_type_rules start(const char *format, const model *m, const qw_type_options *options) {
    qw_model_facts facts = {m->arch, m->n_layer, m->n_head, m->n_head_kv, m->n_expert};
    qw_type_options defaults = {true, false, false, T(COUNT), T(COUNT)};
    qw_type_rules r;
    qw_type_rules_init(&r, format_row(format), &facts, options ? options : &defaults);
    if (!m->tied) qw_type_rules_count(&r, "output.weight");
    qw_type_rules_count(&r, "token_embd.weight");
    char name[64];
    for (int i = 0; i < m->n_layer; i++) {
        static const char *const parts[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                            "ffn_gate", "ffn_up", "ffn_down"};
        for (size_t p = 0; p < 7; p++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", i, parts[p]);
            qw_type_rules_count(&r, name);
        }
    }
    return r;
}

static qw_qtype choose(qw_type_rules *r, const char *name, int64_t ne0, qw_qtype manual) {
    qw_tensor_desc d = {name, 2, {ne0, 64, 1, 1}, T(F16)};
    qw_type_choice ch;
    qw_error err;
    qw_status st = qw_type_rules_choose(r, &d, manual, &ch, &err);
    if (st != QW_OK) {
        fprintf(stderr, "  %s: %s\n", name, err.message);
        return T(COUNT);
    }
    return ch.type;
}

/* Visits the attn_v and ffn_down tensors of every layer in order; returns the type per layer. */
static void per_layer(qw_type_rules *r, const char *part, int n_layer, qw_qtype *out) {
    char name[64];
    for (int i = 0; i < n_layer; i++) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", i, part);
        out[i] = choose(r, name, 256, T(COUNT));
    }
}

static const model LLAMA32 = {"llama", 32, 32, 8, 0, 4096, false};

TEST(q4_k_m_more_bits_pattern) {
    /* use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2 */
    static const int more[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
    qw_type_rules r = start("Q4_K_M", &LLAMA32, NULL);
    qw_qtype v[32], d[32];
    per_layer(&r, "attn_v", 32, v);
    per_layer(&r, "ffn_down", 32, d);
    for (int i = 0; i < 32; i++) {
        bool is_more = false;
        for (size_t k = 0; k < sizeof more / sizeof more[0]; k++) is_more |= more[k] == i;
        CHECK_EQ_INT(v[i], is_more ? T(Q6_K) : T(Q4_K));
        CHECK_EQ_INT(d[i], is_more ? T(Q6_K) : T(Q4_K));
    }
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(Q6_K));
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 4096, T(COUNT)), T(Q4_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_q.weight", 4096, T(COUNT)), T(Q4_K));
}

TEST(counters_and_layers) {
    qw_type_rules r = start("Q3_K_M", &LLAMA32, NULL);
    qw_qtype v[32], d[32];
    per_layer(&r, "attn_v", 32, v);
    per_layer(&r, "ffn_down", 32, d);
    for (int i = 0; i < 32; i++) {
        CHECK_EQ_INT(v[i], i < 2 ? T(Q5_K) : T(Q4_K)); /* the first two attn_v */
        CHECK_EQ_INT(d[i], i < 2 ? T(Q5_K) : T(Q4_K)); /* layers below n/16 */
    }
    r = start("Q4_K_S", &LLAMA32, NULL);
    per_layer(&r, "attn_v", 32, v);
    per_layer(&r, "ffn_down", 32, d);
    for (int i = 0; i < 32; i++) {
        CHECK_EQ_INT(v[i], i < 4 ? T(Q5_K) : T(Q4_K));
        CHECK_EQ_INT(d[i], i < 4 ? T(Q5_K) : T(Q4_K)); /* below n/8 */
    }
}

TEST(gqa_70b_experts_falcon) {
    /* n_gqa 4: Q2_K's attn_v is q4_K */
    qw_type_rules r = start("Q2_K", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(COUNT)), T(Q4_K));
    model mha = LLAMA32;
    mha.n_head_kv = 32;
    r = start("Q2_K", &mha, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(COUNT)), T(Q3_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_output.weight", 4096, T(COUNT)), T(Q3_K));

    /* 70B: llama, 80 layers, shared keys: attn_v q4_K -> q5_K */
    model big = {"llama", 80, 64, 8, 0, 8192, false};
    r = start("Q3_K_M", &big, NULL);
    qw_qtype v[80];
    per_layer(&r, "attn_v", 80, v);
    for (int i = 0; i < 80; i++) CHECK_EQ_INT(v[i], T(Q5_K));
    big.n_head_kv = 64; /* without GQA llama.cpp calls it 65B */
    r = start("Q3_K_M", &big, NULL);
    per_layer(&r, "attn_v", 80, v);
    CHECK_EQ_INT(v[5], T(Q4_K));
    big.arch = "qwen2"; /* qwen2's 80 layers are 70B with or without GQA */
    r = start("Q3_K_M", &big, NULL);
    per_layer(&r, "attn_v", 80, v);
    CHECK_EQ_INT(v[5], T(Q5_K));

    /* 8 experts: attn_v and attn_k q8_0; attn_output q5_K in Q4_K_M, kept in Q3_K_L */
    model moe = {"llama", 32, 32, 8, 8, 4096, false};
    r = start("Q4_K_M", &moe, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(COUNT)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_k.weight", 4096, T(COUNT)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_output.weight", 4096, T(COUNT)), T(Q5_K));
    r = start("Q3_K_L", &moe, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_output.weight", 4096, T(COUNT)), T(Q3_K));
    /* the layer of an expert tensor is the N of its name */
    r = start("Q4_K_S", &moe, NULL);
    CHECK_EQ_INT(choose(&r, "blk.30.ffn_down_exps.weight", 4096, T(COUNT)), T(Q4_K));
    CHECK_EQ_INT(choose(&r, "blk.3.ffn_down_exps.weight", 4096, T(COUNT)), T(Q5_K));
    qw_tensor_desc bad = {"ffn_down_exps.weight", 3, {4096, 64, 8, 1}, T(F16)};
    qw_type_choice ch;
    qw_error err;
    CHECK_EQ_INT(qw_type_rules_choose(&r, &bad, T(COUNT), &ch, &err), QW_ERR_UNSUPPORTED_INPUT);
    CHECK(strstr(err.message, "ffn_down_exps.weight") != NULL);

    /* Falcon: output q8_0; Q3_K_L's ffn_down q4_K */
    model falcon = {"falcon", 32, 71, 1, 0, 4544, false};
    r = start("Q3_K_L", &falcon, NULL);
    CHECK_EQ_INT(choose(&r, "output.weight", 4608, T(COUNT)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_down.weight", 4608, T(COUNT)), T(Q4_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_output.weight", 4608, T(COUNT)), T(Q4_K));
}

TEST(output_embeddings_and_fallbacks) {
    model tied = {"qwen2", 24, 14, 2, 0, 896, true};
    qw_type_rules r = start("Q4_0", &tied, NULL);
    /* tied: token_embd takes output's rule; 896 is not a multiple of 256: q8_0 */
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 896, T(COUNT)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_q.weight", 896, T(COUNT)), T(Q4_0));
    r = start("Q4_K_M", &tied, NULL);
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 1024, T(COUNT)), T(Q6_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_q.weight", 896, T(COUNT)), T(Q5_0)); /* q4_K -> q5_0 */
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_up.weight", 48, T(COUNT)), T(F16));   /* -> q5_0 -> f16 */
    r = start("Q8_0", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_up.weight", 48, T(COUNT)), T(F16));
    r = start("IQ2_XXS", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(Q5_K));
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 4096, T(COUNT)), T(Q2_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_q.weight", 4000, T(COUNT)), T(IQ4_NL));
    r = start("F16", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(F16));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_q.weight", 4096, T(Q8_0)), T(F16)); /* no overrides */
}

TEST(options) {
    qw_type_options o = {false, false, false, T(COUNT), T(COUNT)};
    qw_type_rules r = start("Q4_K_M", &LLAMA32, &o);
    qw_tensor_desc out = {"output.weight", 2, {4096, 32000, 1, 1}, T(F16)};
    qw_type_choice ch;
    qw_error err;
    CHECK_OK(qw_type_rules_choose(&r, &out, T(COUNT), &ch, &err), &err);
    CHECK(ch.type == T(F16) && ch.source == QW_TYPE_KEPT); /* leave_output_tensor */

    o = (qw_type_options){true, true, false, T(COUNT), T(COUNT)};
    r = start("Q4_K_M", &LLAMA32, &o); /* pure: default type, no mix, fallback still */
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(Q4_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(COUNT)), T(Q4_K));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 320, T(COUNT)), T(Q5_0));
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(Q8_0)), T(Q8_0)); /* override */
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 320, T(Q6_K)), T(Q8_0));  /* falls back */

    o = (qw_type_options){true, false, false, T(Q6_K), T(F16)};
    r = start("Q4_0", &LLAMA32, &o);
    CHECK_EQ_INT(choose(&r, "output.weight", 4096, T(COUNT)), T(Q6_K));
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 4096, T(COUNT)), T(F16));
    qw_tensor_desc narrow = {"output.weight", 2, {320, 32000, 1, 1}, T(F16)};
    CHECK_EQ_INT(qw_type_rules_choose(&r, &narrow, T(COUNT), &ch, &err), QW_ERR_BAD_OPTION);
    CHECK(strstr(err.message, "output_tensor_type") && strstr(err.message, "output.weight"));

    /* a tied token_embd takes output_tensor_type through the rules, with fallback */
    model tied = {"llama", 2, 4, 4, 0, 320, true};
    o = (qw_type_options){true, false, false, T(Q6_K), T(COUNT)};
    r = start("Q4_0", &tied, &o);
    CHECK_EQ_INT(choose(&r, "token_embd.weight", 320, T(COUNT)), T(Q8_0));

    /* an override does not advance the attn_v counter (llama.cpp skips its rules) */
    r = start("Q3_K_M", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(Q8_0)), T(Q8_0));
    CHECK_EQ_INT(choose(&r, "blk.1.attn_v.weight", 4096, T(COUNT)), T(Q5_K));
    CHECK_EQ_INT(choose(&r, "blk.2.attn_v.weight", 4096, T(COUNT)), T(Q5_K));
    CHECK_EQ_INT(choose(&r, "blk.3.attn_v.weight", 4096, T(COUNT)), T(Q4_K));
}

TEST(importance_requirements) {
    model mha = LLAMA32;
    mha.n_head_kv = 32;
    qw_type_rules r = start("IQ3_XS", &mha, NULL);
    qw_tensor_desc q = {"blk.0.attn_q.weight", 2, {4096, 4096, 1, 1}, T(F16)};
    qw_type_choice ch;
    qw_error err;
    CHECK_OK(qw_type_rules_choose(&r, &q, T(COUNT), &ch, &err), &err);
    CHECK(ch.type == T(IQ3_XXS) && ch.requires_imatrix);
    qw_tensor_desc e = {"token_embd.weight", 2, {4096, 32000, 1, 1}, T(F16)};
    CHECK_OK(qw_type_rules_choose(&r, &e, T(IQ2_XXS), &ch, &err), &err);
    CHECK(ch.type == T(IQ2_XXS) && !ch.requires_imatrix); /* never for token_embd */
    CHECK_OK(qw_type_rules_choose(&r, &q, T(Q2_K), &ch, &err), &err);
    CHECK(!ch.requires_imatrix); /* q2_K needs one only inside Q2_K_S */

    /* the rules that look at whether an imatrix is given */
    qw_type_options with = {true, false, true, T(COUNT), T(COUNT)};
    r = start("Q4_0", &LLAMA32, &with);
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_down.weight", 4096, T(COUNT)), T(Q4_1));
    r = start("Q4_0", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_down.weight", 4096, T(COUNT)), T(Q4_0));
    r = start("IQ4_NL", &LLAMA32, NULL);
    CHECK_EQ_INT(choose(&r, "blk.0.attn_v.weight", 4096, T(COUNT)), T(Q5_K)); /* n_gqa 4 */
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_down.weight", 4096, T(COUNT)), T(Q5_K));
    r = start("IQ4_NL", &LLAMA32, &with);
    CHECK_EQ_INT(choose(&r, "blk.0.ffn_down.weight", 4096, T(COUNT)), T(IQ4_NL));
}

TEST(which_tensors_are_quantized) {
    qw_type_rules r = start("Q8_0", &LLAMA32, NULL);
    static const struct {
        const char *name;
        int n_dims;
        bool quantized;
    } cases[] = {
        {"blk.0.attn_q.weight", 2, true},        {"blk.0.attn_norm.weight", 2, false},
        {"blk.0.attn_q.bias", 1, false},         {"blk.0.attn_q.weight", 1, false},
        {"blk.0.ffn_gate_inp.weight", 2, false}, {"position_embd.weight", 2, false},
        {"token_types.weight", 2, false},        {"v.patch_embd.weight", 2, false},
        {"blk.0.ssm_conv1d.weight", 2, false},   {"blk.0.time_mix_first.weight", 2, false},
        {"blk.0.hc_attn_fn.weight", 2, true},    {"blk.0.ffn_up_exps.weight", 3, true},
        {"rope_freqs.weight", 1, false},         {"blk.0.weightx", 2, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qw_tensor_desc d = {cases[i].name, cases[i].n_dims, {256, 64, 1, 1}, T(F16)};
        if (qw_tensor_allows_quantization(&r, &d) != cases[i].quantized) {
            fprintf(stderr, "  %s (%d dims)\n", cases[i].name, cases[i].n_dims);
            CHECK(false);
        }
    }
    /* glm5-next keeps some of its small tensors as they are */
    model glm = {"glm5-next", 4, 8, 8, 0, 256, false};
    r = start("Q8_0", &glm, NULL);
    qw_tensor_desc hc = {"blk.0.hc_attn_fn.weight", 2, {256, 64, 1, 1}, T(F16)};
    CHECK(!qw_tensor_allows_quantization(&r, &hc));
}

RUN_TESTS(TEST_CASE(every_format_row), TEST_CASE(aliases_and_ids), TEST_CASE(categories),
          TEST_CASE(q4_k_m_more_bits_pattern), TEST_CASE(counters_and_layers),
          TEST_CASE(gqa_70b_experts_falcon), TEST_CASE(output_embeddings_and_fallbacks),
          TEST_CASE(options), TEST_CASE(importance_requirements),
          TEST_CASE(which_tensors_are_quantized))
