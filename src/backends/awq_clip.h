/*
 * awq_clip.h — the original AWQ's weight-clipping search (llm-awq / AutoAWQ auto_clip), run on
 * a block after the scale search: for every quantized linear except q_proj and k_proj and for
 * every (output row, group of input columns), ten clipping ranges |w| <= max|w| * (1 - i/20),
 * i = 0..9, are tried and the one whose int4 weights give the smallest squared error of that
 * group's share of the output, over at most ~512 calibration tokens taken at an even stride,
 * is kept. Weights are clamped in place; the quantizer then sees the narrower range.
 *
 * llm-compressor's AWQModifier has no clipping; this is the option for the extra quality the
 * original method gets from it. Candidates are fake-quantized with the output's own quantizer
 * (compressed-tensors' int4 rules), so the range chosen is the one that is written.
 */
#ifndef QW_AWQ_CLIP_H
#define QW_AWQ_CLIP_H

#include <stdint.h>

#include "awq_search.h"

typedef struct qw_awq_clip_report {
    int64_t n_groups;   /* (row, group) pairs searched */
    int64_t n_clipped;  /* ... whose chosen range is narrower than the weights' own */
    double loss_before; /* sum over groups of the mean squared group output error, unclipped */
    double loss_after;  /* ... with the chosen ranges */
} qw_awq_clip_report;

/* Clips block b's weights for the calibration input `hidden` (n_seq sequences of seq_len
 * tokens, run through the block `batch` sequences at a time). The pass that collects the inputs
 * also moves `hidden` on: it leaves the block's output before clipping there, the next block's
 * input as the scale search's pipeline defines it. Linears marked in p->ignored are left
 * alone, and in a MoE layer those marked in moe_ignored (NULL: none; else 3 * n_expert + 3
 * flags: expert e's gate, up, down at 3e, then the shared expert's). */
qw_status qw_awq_clip_block(const qw_forward *f, qw_block *b, float *hidden,
                            int64_t n_seq, int64_t seq_len, int64_t batch,
                            const qw_awq_params *p, const bool *moe_ignored,
                            const qw_reporter *reporter, qw_awq_clip_report *report,
                            qw_error *err);

#endif /* QW_AWQ_CLIP_H */
