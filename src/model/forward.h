/*
 * forward.h — the decoder forward pass on the CPU (OpenBLAS for the matrix products), run one
 * decoder block at a time over a batch of token sequences: what AWQ calibration and perplexity
 * measurements need. Weights are read through the HF view (model.h), so an HF directory and a
 * GGUF file are run the same way; a block's weights are f32 in memory only while it is loaded.
 *
 * Numerics follow transformers' modeling code in f32 (RMSNorm with the mean of squares in f32,
 * rotate-half RoPE, softmax in f32, causal mask), so hidden states agree with transformers run
 * in float32 to within float rounding.
 *
 * Families: the llama layout (Llama 1-3, Mistral, SmolLM, TinyLlama), Qwen2 (q/k/v biases) and
 * Qwen3 (per-head q/k RMSNorm); which extras a block has is read from the tensors present.
 * Gemma, Gemma 2, Gemma 3 (text) and Phi-3 differ in ways the tensors do not show (norms that
 * scale by 1 + w, a scaled embedding, softcapping, per-layer sliding windows and rope bases,
 * fused projections); those come from a per-family row chosen by config.json's model_type.
 * Mixture-of-experts layers (Mixtral's block_sparse_moe, Qwen2-MoE's and Qwen3-MoE's mlp with
 * experts, router and Qwen2-MoE's shared expert) are recognised by their router tensor, so a
 * MoE model's dense layers (mlp_only_layers, decoder_sparse_step) run as dense blocks.
 */
#ifndef QW_FORWARD_H
#define QW_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "model.h"

/* y = x W^T + b; w is [n_out rows x n_in], row-major as HF stores it; b NULL when absent. */
typedef struct qw_linear {
    float *w;
    float *b;
    int64_t n_out, n_in;
} qw_linear;

/* One decoder block's weights as f32. AWQ rescales them in place; the forward pass only reads.
 * Norm vectors hold the factor the norm multiplies by: for Gemma's (1 + w) norms that is 1 + w,
 * so the same fold (divide by s) serves every family; qw_forward_norm_offset says what to
 * subtract to get the stored weight back. Fields are named after the HF tensors they hold. */
typedef struct qw_block {
    int64_t layer;
    float *attn_norm;     /* input_layernorm [hidden] */
    float *ffn_norm;      /* post_attention_layernorm [hidden]: the MLP's input norm, except in
                           * Gemma 2/3 where it normalizes the attention output */
    float *pre_ffn_norm;  /* Gemma 2/3: pre_feedforward_layernorm (the MLP's input norm) */
    float *post_ffn_norm; /* Gemma 2/3: post_feedforward_layernorm (on the MLP output) */
    float *q_norm;        /* Qwen3, Gemma 3: [head_dim], else NULL */
    float *k_norm;
    qw_linear q, k, v, o;
    qw_linear gate, up, down;
    /* Phi-3's fused self_attn.qkv_proj [q; k; v] and mlp.gate_up_proj [gate; up]: when loaded
     * (w non-NULL), q/k/v and gate/up above are views of their rows, not separate memory */
    qw_linear qkv, gate_up;
    /* Mixtral, Qwen2-MoE, Qwen3-MoE: a sparse layer's MLP (then gate/up/down above are
     * empty); NULL in dense layers, which run exactly as in the dense families */
    struct qw_moe *moe;
} qw_block;

/* One gated MLP: down(act(gate x) * up x). Mixtral's w1 / w3 / w2 are gate / up / down. */
typedef struct qw_expert {
    qw_linear gate, up, down;
} qw_expert;

/* A sparse MoE MLP as transformers runs it: router logits, softmax in f32, the n_used most
 * probable experts (their weights renormalized to sum 1 when renorm), each expert run on the
 * tokens routed to it and added in expert order, weighted; then Qwen2-MoE's shared expert
 * times sigmoid(shared_expert_gate x). */
typedef struct qw_moe {
    int64_t n_expert, n_used;
    bool renorm;
    qw_linear router;      /* mlp.gate / block_sparse_moe.gate [n_expert x hidden] */
    qw_expert *experts;    /* [n_expert] */
    qw_expert shared;      /* mlp.shared_expert; gate.w NULL when absent */
    qw_linear shared_gate; /* mlp.shared_expert_gate [1 x hidden]; w NULL when absent */
} qw_moe;

/* Activations inside a block, for calibration statistics: each non-NULL pointer receives
 * n_tokens rows of the named width. */
typedef struct qw_block_taps {
    float *attn_in; /* normed input of q/k/v [hidden] */
    float *o_in;    /* attention output before o_proj [n_head * head_dim] */
    float *mlp_in;  /* normed input of gate/up [hidden] */
    float *down_in; /* act(gate) * up [intermediate]; not written by a MoE layer, whose
                     * experts' down_proj inputs are per expert (qw_moe_route, qw_mlp_forward) */
    float *attn_out; /* self_attn's output, before any post-norm and the residual [hidden] */
    float *mlp_out;  /* the MLP's (a MoE layer's: the sparse block's) output, likewise */
} qw_block_taps;

typedef struct qw_forward qw_forward;

/* Reads the shape, norms' epsilon, activation and rope from the view's config; fails naming the
 * key for anything the pass does not implement (rope scaling types other than none/linear/
 * llama3, activations other than silu/gelu). n_threads <= 0: all cores. */
qw_status qw_forward_create(const qw_hf_view *view, int n_threads, qw_forward **out,
                            qw_error *err);
void qw_forward_free(qw_forward *f);

int64_t qw_forward_n_layer(const qw_forward *f);
int64_t qw_forward_hidden(const qw_forward *f);
int64_t qw_forward_vocab(const qw_forward *f);
int64_t qw_forward_intermediate(const qw_forward *f);
int64_t qw_forward_q_width(const qw_forward *f); /* n_head * head_dim */
/* The family row in use: "llama" (also Mistral, Qwen2/3 and unknown types), "gemma", "gemma2",
 * "gemma3" or "phi3"; AWQ picks its mappings by it. */
const char *qw_forward_family(const qw_forward *f);
/* 1 for Gemma's norms (HF stores w, the block holds 1 + w), else 0. */
float qw_forward_norm_offset(const qw_forward *f);

/* hidden[i] = the embedding row of ids[i]; ids outside the vocabulary are errors. */
qw_status qw_forward_embed(const qw_forward *f, const int32_t *ids, int64_t n_tokens,
                           float *hidden, qw_error *err);

qw_status qw_block_load(const qw_forward *f, int64_t layer, qw_block **out, qw_error *err);
void qw_block_free(qw_block *b);

/* Runs block b over n_seq sequences of seq_len tokens each (hidden: n_seq * seq_len rows of
 * `hidden` floats, updated in place); positions restart at 0 in every sequence. */
qw_status qw_block_forward(const qw_forward *f, const qw_block *b, float *hidden, int64_t n_seq,
                           int64_t seq_len, const qw_block_taps *taps, qw_error *err);

/* The two halves of a block, for AWQ's search over one sub-module: out = self_attn(normed) and
 * out = mlp(normed) (no residual, no norm; the whole sparse MoE block in a MoE layer, where
 * down_in is not written). */
qw_status qw_block_attention(const qw_forward *f, const qw_block *b, const float *normed,
                             int64_t n_seq, int64_t seq_len, float *out, float *o_in,
                             qw_error *err);
qw_status qw_block_mlp(const qw_forward *f, const qw_block *b, const float *normed,
                       int64_t n_tokens, float *out, float *down_in, qw_error *err);

/* down(act(gate x) * up x) over n rows of x; down_in (NULL or n rows of gate->n_out) receives
 * down's input. */
qw_status qw_mlp_forward(const qw_forward *f, const qw_expert *e, const float *x, int64_t n,
                         float *out, float *down_in, qw_error *err);

/* The router's choice for n rows of normed input: ids[t * n_used + j] is token t's j-th most
 * probable expert and weights[...] its routing weight (renormalized when m->renorm). */
qw_status qw_moe_route(const qw_forward *f, const qw_moe *m, const float *normed, int64_t n,
                       int32_t *ids, float *weights, qw_error *err);

/* y = x W^T + b over n rows (OpenBLAS, rows split over the pass's threads). */
void qw_linear_forward(const qw_forward *f, const qw_linear *l, const float *x, int64_t n,
                       float *y);

/* C = alpha op(A) op(B) + beta C, row-major, op = transpose where asked. The pass runs OpenBLAS
 * single-threaded and splits C's rows over its own threads instead: everyone who multiplies
 * matrices while a pass exists goes through here to use more than one core. */
void qw_forward_gemm(const qw_forward *f, bool trans_a, bool trans_b, int64_t m, int64_t n,
                     int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                     int64_t ldb, float beta, float *c, int64_t ldc);

/* The upper triangle (row <= column) of C = A^T A, A k rows of n (lda apart), C n x n (ldc);
 * below the diagonal C is left as it was. Split over the pass's threads like
 * qw_forward_gemm; the same bytes whatever the thread count. */
void qw_forward_gram(const qw_forward *f, int64_t n, int64_t k, const float *a, int64_t lda,
                     float *c, int64_t ldc);

/* Final norm of `hidden` (n_tokens rows, in place) then logits = hidden lm_head^T into `logits`
 * (n_tokens rows of the vocabulary size). The head is read in slices, never whole. */
qw_status qw_forward_logits(const qw_forward *f, float *hidden, int64_t n_tokens, float *logits,
                            qw_error *err);

#endif /* QW_FORWARD_H */
