/*
 * ftype.h — GGUF output formats (llama.cpp's "ftypes": Q4_K_M, Q8_0, ...) and the per-tensor rules
 * that decide each tensor's type within a format, as llama.cpp's quantizer (llama-quant.cpp,
 * llama_tensor_get_type and its helpers) decides them.
 *
 * Formats are rows of one table (ftype.c). The per-tensor rules are rows too (ftype_rules.c):
 * category x formats x condition -> type, read by one small interpreter. Conditions that need
 * code (use_more_bits, the running counters, n_gqa, 8 experts, "70B") are named predicates the
 * rows refer to. Everything here is pure computation over its arguments: no I/O, no globals that
 * change, safe to call from any thread on distinct qw_type_rules values.
 */
#ifndef QW_FTYPE_H
#define QW_FTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"

/* ---- formats -------------------------------------------------------------------------------- */

typedef struct qw_ftype_info {
    const char *name;        /* "Q4_K_M", as users type it (case-insensitive) */
    uint32_t llama_ftype;    /* llama_ftype id: the general.file_type value */
    qw_qtype default_type;   /* the type most tensors get */
    const char *description; /* one line for list-formats */
    const char *aliases;     /* llama-quantize's other names for it, space-separated, or NULL */
    /* true: offered only when this build can encode every type the format's rules can produce
     * (llama.cpp's very-low-bit formats, which exist here only once their kernels do) */
    bool needs_every_encoder;
    /* a type that needs an importance matrix only inside this format (Q2_K in Q2_K_S), or
     * QW_QTYPE_COUNT */
    qw_qtype imatrix_type;
} qw_ftype_info;

/* The formats this build offers, in list order (rows whose encoders are missing are skipped,
 * see needs_every_encoder). Never fails, never allocates. */
size_t qw_ftype_count(void);
const qw_ftype_info *qw_ftype_at(size_t index);
/* Case-insensitive, accepting llama-quantize's aliases; NULL if unknown or not offered. */
const qw_ftype_info *qw_ftype_find(const char *name);

/* Every row of the table, offered or not (tests walk them). */
size_t qw_ftype_table_count(void);
const qw_ftype_info *qw_ftype_table_at(size_t index);
bool qw_ftype_offered(const qw_ftype_info *ft);

/* Marks in `types` (QW_QTYPE_COUNT entries) every type the format's rules can give a tensor,
 * fallbacks included, with or without an importance matrix, options aside. */
void qw_ftype_types(const qw_ftype_info *ft, bool types[QW_QTYPE_COUNT]);

/* ---- per-tensor rules ----------------------------------------------------------------------- */

/* llama.cpp's tensor categories (tensor_get_category), from the GGUF tensor name. */
typedef enum qw_tensor_category {
    QW_CAT_OTHER,
    QW_CAT_OUTPUT,      /* output.weight */
    QW_CAT_TOKEN_EMBD,  /* token_embd.weight, per_layer_token_embd.weight */
    QW_CAT_ATTN_V,      /* attn_v, and attn_qkv and attn_kv_b, which llama.cpp treats alike */
    QW_CAT_ATTN_K,
    QW_CAT_ATTN_Q,
    QW_CAT_ATTN_OUTPUT,
    QW_CAT_FFN_UP,
    QW_CAT_FFN_GATE,
    QW_CAT_FFN_DOWN,
    QW_CAT_COUNT
} qw_tensor_category;

qw_tensor_category qw_tensor_category_of(const char *name);
const char *qw_tensor_category_name(qw_tensor_category cat);

/* The model-wide facts the rules depend on (llama.cpp reads them from the GGUF header). */
typedef struct qw_model_facts {
    const char *arch; /* GGUF architecture name ("llama", "qwen2"); NULL or "" if unknown */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t n_expert;
} qw_model_facts;

/* What llama-quantize's options change. */
typedef struct qw_type_options {
    bool quantize_output;    /* false: --leave-output-tensor */
    bool pure;               /* --pure: the format's default type, no mix rules */
    bool has_imatrix;        /* an importance matrix was given (some rules depend on it) */
    qw_qtype output_type;    /* --output-tensor-type, or QW_QTYPE_COUNT */
    qw_qtype embedding_type; /* --token-embedding-type, or QW_QTYPE_COUNT */
} qw_type_options;

/* One tensor as the rules see it, in GGUF terms. */
typedef struct qw_tensor_desc {
    const char *name;
    int n_dims;
    int64_t ne[4];
    qw_qtype type; /* the type it has now (kept when it is not quantized) */
} qw_tensor_desc;

/* Where a choice came from, for plans and messages. */
typedef enum qw_type_source {
    QW_TYPE_KEPT,          /* llama.cpp does not quantize this tensor: it keeps its type */
    QW_TYPE_FORMAT,        /* the format's default type or its mix rules */
    QW_TYPE_OUTPUT_OPTION, /* output_tensor_type */
    QW_TYPE_EMBD_OPTION,   /* token_embedding_type */
    QW_TYPE_OVERRIDE,      /* a tensor_type pattern */
} qw_type_source;

typedef struct qw_type_choice {
    qw_qtype type;
    qw_type_source source;
    bool requires_imatrix; /* llama.cpp refuses this tensor's type without an importance matrix */
    bool fell_back;        /* the row length did not fit the chosen type's blocks */
    char note[192];        /* why it fell back, else "" */
} qw_type_choice;

/* The rules' state for one model and format: the counters llama.cpp keeps while it visits the
 * tensors. Initialise, count every tensor name once, then choose in visiting order (llama.cpp's
 * loader order: tensors outside blocks first, then by block number, then by name). */
typedef struct qw_type_rules {
    const qw_ftype_info *ftype;
    qw_model_facts facts;
    qw_type_options options;
    bool tied_embeddings; /* no output.weight: token_embd takes output's rule */
    bool is_70b;          /* llama.cpp's LLM_TYPE_70B for this architecture and depth */
    int n_attention_wv;
    int counters[4];      /* visits so far: attn_v-like, ffn_down, ffn_gate, ffn_up */
} qw_type_rules;

void qw_type_rules_init(qw_type_rules *rules, const qw_ftype_info *ft, const qw_model_facts *facts,
                        const qw_type_options *options);

/* First pass: every tensor name of the model, in any order. */
void qw_type_rules_count(qw_type_rules *rules, const char *name);

/* Whether llama.cpp would quantize this tensor at all (tensor_allows_quantization). */
bool qw_tensor_allows_quantization(const qw_type_rules *rules, const qw_tensor_desc *t);

/* Chooses the type of one tensor; call in visiting order. `manual` is the type of the first
 * tensor_type pattern that matched the name, or QW_QTYPE_COUNT. Fails (QW_ERR_UNSUPPORTED_INPUT
 * or QW_ERR_BAD_OPTION, naming the tensor) where llama.cpp fails: a row length that no fallback
 * type fits, an option type whose blocks do not fit the row, a MoE tensor without a layer. */
qw_status qw_type_rules_choose(qw_type_rules *rules, const qw_tensor_desc *t, qw_qtype manual,
                               qw_type_choice *out, qw_error *err);

/* True for names whose tensors llama.cpp's converter keeps in F32 (norms, biases, 1-D). */
bool qw_tensor_keeps_f32(const char *name, int n_dims);

#endif /* QW_FTYPE_H */
