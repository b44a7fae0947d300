/* Exact weighted 1-D k-means by dynamic programming (coreml_kmeans.h). */
#include "coreml_kmeans.h"

#include <math.h>

typedef struct prefix {
    const double *w1, *wx, *wxx; /* sums over [0, i) */
} prefix;

/* weighted squared error of values [a, b) around their weighted mean */
static double sse(const prefix *p, size_t a, size_t b) {
    const double w = p->w1[b] - p->w1[a];
    if (w <= 0.0) return 0.0;
    const double s = p->wx[b] - p->wx[a], ss = p->wxx[b] - p->wxx[a];
    const double v = ss - s * s / w;
    return v > 0.0 ? v : 0.0;
}

/* Row j of the table for ends i in [lo, hi], knowing the best split lies in [slo, shi]. An
 * explicit stack keeps deep recursion off the C stack for large n. */
typedef struct range {
    size_t lo, hi, slo, shi;
} range;

static void fill_row(const prefix *p, const double *prev, double *cur, uint32_t *split,
                     size_t j, size_t n, range *stack) {
    size_t top = 0;
    stack[top++] = (range){j + 1, n, j, n - 1};
    while (top) {
        const range r = stack[--top];
        if (r.lo > r.hi) continue;
        const size_t mid = r.lo + (r.hi - r.lo) / 2;
        double best = INFINITY;
        size_t arg = r.slo;
        const size_t end = r.shi < mid - 1 ? r.shi : mid - 1;
        for (size_t s = r.slo; s <= end; s++) {
            /* the last cluster is [s, mid); the first j clusters cover [0, s) */
            const double c = prev[s] + sse(p, s, mid);
            if (c < best) {
                best = c;
                arg = s;
            }
        }
        cur[mid] = best;
        split[mid] = (uint32_t)arg;
        if (mid > r.lo) stack[top++] = (range){r.lo, mid - 1, r.slo, arg};
        if (mid < r.hi) stack[top++] = (range){mid + 1, r.hi, arg, r.shi};
    }
}

qw_status qw_kmeans1d(const double *x, const double *w, size_t n, size_t k, double *centers,
                      size_t *k_used, uint16_t *assign, double *sse_out, qw_error *err) {
    if (n == 0 || k == 0 || n > UINT32_MAX) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "k-means of %zu values into %zu clusters", n, k);
    }
    for (size_t i = 0; i < n; i++) {
        if (!(w[i] > 0.0) || !isfinite(x[i]) || (i && !(x[i] > x[i - 1]))) {
            return qw_fail(err, QW_ERR_INVALID_ARG,
                           "k-means input %zu: values must be finite, ascending and distinct "
                           "with positive weights", i);
        }
    }
    if (k > n) k = n;
    if (k > 65536) k = 65536;
    double *buf = qw_malloc_array(3 * (n + 1) + 2 * (n + 1), sizeof *buf);
    uint32_t *split = qw_malloc_array(k * (n + 1), sizeof *split);
    range *stack = qw_malloc_array(2 * (n + 2) + 64, sizeof *stack);
    if (!buf || !split || !stack) {
        qw_free(buf);
        qw_free(split);
        qw_free(stack);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory for k-means of %zu values", n);
    }
    double *w1 = buf, *wx = w1 + n + 1, *wxx = wx + n + 1, *prev = wxx + n + 1,
           *cur = prev + n + 1;
    /* values are centred first so the prefix sums of squares lose little precision */
    double mean = 0.0, wsum = 0.0;
    for (size_t i = 0; i < n; i++) {
        mean += w[i] * x[i];
        wsum += w[i];
    }
    mean /= wsum;
    w1[0] = wx[0] = wxx[0] = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = x[i] - mean;
        w1[i + 1] = w1[i] + w[i];
        wx[i + 1] = wx[i] + w[i] * d;
        wxx[i + 1] = wxx[i] + w[i] * d * d;
    }
    const prefix p = {w1, wx, wxx};
    /* row 0: one cluster over [0, i) */
    for (size_t i = 0; i <= n; i++) {
        prev[i] = sse(&p, 0, i);
        split[i] = 0;
    }
    for (size_t j = 1; j < k; j++) {
        for (size_t i = 0; i <= j; i++) cur[i] = 0.0; /* i <= j values: each alone */
        fill_row(&p, prev, cur, split + j * (n + 1), j, n, stack);
        double *t = prev;
        prev = cur;
        cur = t;
    }
    if (sse_out) *sse_out = prev[n];
    /* walk the splits back from the last cluster */
    size_t end = n;
    for (size_t j = k; j-- > 0;) {
        const size_t start = j ? split[j * (n + 1) + end] : 0;
        double sw = 0.0, s = 0.0;
        for (size_t i = start; i < end; i++) {
            sw += w[i];
            s += w[i] * x[i];
            assign[i] = (uint16_t)j;
        }
        centers[j] = sw > 0.0 ? s / sw : x[start];
        end = start;
    }
    *k_used = k;
    qw_free(buf);
    qw_free(split);
    qw_free(stack);
    return QW_OK;
}
