/* Thread pool: workers sleep on a condition variable between loops and take chunks from an
 * atomic counter during one. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "pool.h"

struct qw_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_cond_t done;
    unsigned generation; /* bumped for each run */
    int busy;            /* workers still inside the current run */
    int stop;
    /* current job */
    qw_pool_task task;
    void *ctx;
    size_t n_items;
    size_t grain;
    atomic_size_t next;
};

typedef struct worker_arg {
    qw_pool *pool;
    int index;
} worker_arg;

static void run_chunks(qw_pool *pool, int worker) {
    for (;;) {
        size_t begin = atomic_fetch_add(&pool->next, pool->grain);
        if (begin >= pool->n_items) break;
        size_t end = begin + pool->grain;
        if (end > pool->n_items || end < begin) end = pool->n_items;
        pool->task(pool->ctx, begin, end, worker);
    }
}

static void *worker_main(void *p) {
    worker_arg arg = *(worker_arg *)p;
    free(p);
    qw_pool *pool = arg.pool;
    unsigned seen = 0;
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        while (!pool->stop && pool->generation == seen) pthread_cond_wait(&pool->wake, &pool->mutex);
        if (pool->stop) break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->mutex);
        run_chunks(pool, arg.index);
        pthread_mutex_lock(&pool->mutex);
        if (--pool->busy == 0) pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mutex);
    return NULL;
}

qw_status qw_pool_create(int n_threads, qw_pool **out, qw_error *err) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    qw_pool *pool = qw_calloc(1, sizeof *pool);
    if (!pool) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory creating a thread pool");
    pool->n_threads = 1;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    atomic_init(&pool->next, 0);
    if (n_threads > 1) {
        pool->threads = qw_calloc((size_t)n_threads - 1, sizeof *pool->threads);
        if (!pool->threads) {
            qw_pool_free(pool);
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory creating a thread pool");
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->pool = pool;
        arg->index = i;
        if (pthread_create(&pool->threads[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            break; /* fewer threads is still correct, only slower */
        }
        pool->n_threads++;
    }
    *out = pool;
    return QW_OK;
}

void qw_pool_free(qw_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i < pool->n_threads - 1; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->threads);
    free(pool);
}

int qw_pool_threads(const qw_pool *pool) { return pool ? pool->n_threads : 1; }

void qw_pool_run(qw_pool *pool, size_t n_items, size_t grain, qw_pool_task task, void *ctx) {
    if (n_items == 0) return;
    if (grain == 0) grain = 1;
    if (!pool || pool->n_threads == 1 || n_items <= grain) {
        for (size_t b = 0; b < n_items; b += grain) {
            size_t e = b + grain < n_items ? b + grain : n_items;
            task(ctx, b, e, 0);
        }
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->task = task;
    pool->ctx = ctx;
    pool->n_items = n_items;
    pool->grain = grain;
    atomic_store(&pool->next, 0);
    pool->busy = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);

    run_chunks(pool, 0);

    pthread_mutex_lock(&pool->mutex);
    while (pool->busy > 0) pthread_cond_wait(&pool->done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
}
