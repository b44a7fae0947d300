/*
 * coreml_kmeans.h — exact one-dimensional k-means for Core ML palettization.
 *
 * In one dimension the optimal clusters are runs of the sorted values, so k-means is solved
 * exactly by dynamic programming over split points (Wang & Song 2011; Grønlund et al. 2017):
 * cost(j, i) = min over s of cost(j-1, s) + SSE(values s..i-1), with the optimal s monotone in i,
 * which divide and conquer exploits for O(k n log n). (SMAWK's O(k n) measured slower here on
 * groups of ~20k distinct values: its constant outweighs the log.) Values are weighted (a count
 * or an importance per value), so a tensor is clustered over its distinct values.
 */
#ifndef QW_COREML_KMEANS_H
#define QW_COREML_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* x: n distinct values in ascending order, w: their positive weights. Fills centers[0..k_used)
 * ascending (k_used = min(k, n)) and, for every value, the index of its center in assign.
 * Returns the weighted sum of squared errors through *sse when not NULL.
 * QW_ERR_INVALID_ARG for n == 0, k == 0, unsorted or repeated x, or a non-positive weight;
 * QW_ERR_NO_MEMORY. Thread-safe (no shared state). */
qw_status qw_kmeans1d(const double *x, const double *w, size_t n, size_t k, double *centers,
                      size_t *k_used, uint16_t *assign, double *sse, qw_error *err);

#endif /* QW_COREML_KMEANS_H */
