/*
 * pool.h — a fixed thread pool that runs one parallel loop at a time.
 *
 * qw_pool_run splits [0, n_items) into chunks of `grain` items that workers (and the calling
 * thread) take in turn. Which thread runs which chunk varies; callers keep results independent of
 * that by writing each item's output to its own place. Not reentrant: one run at a time per pool.
 */
#ifndef QW_POOL_H
#define QW_POOL_H

#include <stddef.h>

#include "core.h"

typedef struct qw_pool qw_pool;

/* Processes items [begin, end). `worker` is 0 for the calling thread, 1..n-1 for pool threads, so
 * callers can give each thread its own scratch memory. */
typedef void (*qw_pool_task)(void *ctx, size_t begin, size_t end, int worker);

/* n_threads counts the calling thread: 1 means no extra threads. */
qw_status qw_pool_create(int n_threads, qw_pool **out, qw_error *err);
void qw_pool_free(qw_pool *pool);
int qw_pool_threads(const qw_pool *pool); /* 1 for a NULL pool */
/* A NULL pool runs every chunk on the calling thread (worker 0), as a pool of one thread does. */
void qw_pool_run(qw_pool *pool, size_t n_items, size_t grain, qw_pool_task task, void *ctx);

#endif /* QW_POOL_H */
