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

/* One decoder block's weights as f32. AWQ rescales them in place; the forward pass only reads. */
typedef struct qw_block {
    int64_t layer;
    float *attn_norm; /* input_layernorm [hidden] */
    float *ffn_norm;  /* post_attention_layernorm [hidden] */
    float *q_norm;    /* Qwen3: [head_dim], else NULL */
    float *k_norm;
    qw_linear q, k, v, o;
    qw_linear gate, up, down;
} qw_block;

/* Activations inside a block, for calibration statistics: each non-NULL pointer receives
 * n_tokens rows of the named width. */
typedef struct qw_block_taps {
    float *attn_in; /* normed input of q/k/v [hidden] */
    float *o_in;    /* attention output before o_proj [n_head * head_dim] */
    float *mlp_in;  /* normed input of gate/up [hidden] */
    float *down_in; /* act(gate) * up [intermediate] */
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
 * out = mlp(normed) (no residual, no norm). */
qw_status qw_block_attention(const qw_forward *f, const qw_block *b, const float *normed,
                             int64_t n_seq, int64_t seq_len, float *out, float *o_in,
                             qw_error *err);
qw_status qw_block_mlp(const qw_forward *f, const qw_block *b, const float *normed,
                       int64_t n_tokens, float *out, float *down_in, qw_error *err);

/* y = x W^T + b over n rows (OpenBLAS). */
void qw_linear_forward(const qw_linear *l, const float *x, int64_t n, float *y);

/* Final norm of `hidden` (n_tokens rows, in place) then logits = hidden lm_head^T into `logits`
 * (n_tokens rows of the vocabulary size). The head is read in slices, never whole. */
qw_status qw_forward_logits(const qw_forward *f, float *hidden, int64_t n_tokens, float *logits,
                            qw_error *err);

#endif /* QW_FORWARD_H */
