/*
 * awq_search.h — activation-aware scaling of one decoder block, as llm-compressor's AWQModifier
 * does it (research/awq.md §1): for each mapping (a "smooth" norm or linear feeding "balance"
 * linears) pick per-channel scales s from the grid over x̄^r (optionally divided by w̄^(1-r)),
 * judging each candidate by the squared error of the parent module's output with the balance
 * weights fake-quantized as W·diag(s) → int4 → ·diag(s)^-1; then fold the best scales in:
 * smooth / s, balance · s. The block computes the same function afterwards (exactly, in real
 * arithmetic); only its quantization error changes.
 */
#ifndef QW_AWQ_SEARCH_H
#define QW_AWQ_SEARCH_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "forward.h"
#include "int4.h"
#include "pool.h"

/* llm-compressor's duo_scaling: use the weight statistic w̄ in the scales */
typedef enum qw_awq_duo {
    QW_AWQ_DUO_OFF,  /* s = x̄^r, r = k / n_grid */
    QW_AWQ_DUO_ON,   /* identity, then s = x̄^r / w̄^(1-r), r = k / (n_grid - 2) */
    QW_AWQ_DUO_BOTH, /* r = k / (n_grid / 2 - 1), each with and without w̄ */
} qw_awq_duo;

typedef struct qw_awq_params {
    qw_int4_scheme scheme;
    qw_awq_duo duo;
    int n_grid; /* candidates per mapping (llm-compressor: 20) */
    /* linears left unquantized (bit i: q, k, v, o, gate, up, down): scaled like the others but
     * not fake-quantized in the search; a mapping whose balance layers are all ignored is
     * skipped */
    unsigned ignored;
    qw_pool *pool; /* splits the fake quantization of weight rows; NULL: one thread */
    /* With at least 2 * rank_stride calibration sequences, a mapping whose parent is the
     * attention or the MLP first ranks every candidate on a subset only: the attention's on
     * each rank_stride-th sequence, the MLP's on about every (2 rank_stride + 1)-th token
     * (with enough tokens; else as the attention); the few best (and plain rounding), less
     * those the subset already shows to be worse beyond doubt, are then judged on all tokens,
     * which decides. 0 or 1: every candidate on every token, as llm-compressor. */
    int rank_stride;
} qw_awq_params;

typedef struct qw_awq_mapping_report {
    const char *name;  /* "input_layernorm -> q_proj,k_proj,v_proj" */
    bool skipped;      /* v -> o in a GQA block */
    double ratio;      /* the exponent chosen */
    bool duo;          /* whether w̄ was used */
    double loss;       /* mean squared error of the parent output with the chosen scales */
    double loss_plain; /* ... with no scaling at all (round to nearest); in a ranked search
                        * where the subset ruled it out, its error on the subset */
} qw_awq_mapping_report;

/* four per dense block; a MoE block: q/k/v, v -> o, its norm, the experts' up -> down (one
 * line for all), the shared expert's up -> down */
#define QW_AWQ_MAX_MAPPINGS 5

typedef struct qw_awq_block_report {
    qw_awq_mapping_report mappings[QW_AWQ_MAX_MAPPINGS];
    int n_mappings;
} qw_awq_block_report;

/* Scales block b in place for the calibration input `hidden` (n_seq sequences of seq_len
 * tokens: the block's input, not changed unless it is `out`). Weights stay float; the caller
 * quantizes them. out (NULL, or as large as hidden, and may be hidden itself) receives the
 * block's output for hidden from before the scaling, which the search computes anyway.
 * Cancellation is checked between candidates. */
qw_status qw_awq_smooth_block(const qw_forward *f, qw_block *b, const float *hidden,
                              int64_t n_seq, int64_t seq_len, const qw_awq_params *p,
                              const qw_reporter *reporter, qw_awq_block_report *report,
                              float *out, qw_error *err);

#endif /* QW_AWQ_SEARCH_H */
