/*
 * core.h — status and errors, logging, progress, allocation and small string helpers shared by
 * every layer. Depends on nothing but the public header and libc.
 */
#ifndef QW_CORE_H
#define QW_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qwodel.h"

#if defined(__GNUC__)
#define QW_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#define QW_UNUSED __attribute__((unused))
#else
#define QW_PRINTF(fmt_index, first_arg)
#define QW_UNUSED
#endif

/* A hot loop compiled twice, for AVX2 and for the baseline x86-64 (SSE2) the build targets;
 * the loader picks one for the CPU it runs on (an ifunc). Same values either way: the loops are
 * element-wise and nothing is contracted (-ffp-contract=off). GCC on x86-64 ELF only. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__)
#define QW_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define QW_AVX2_CLONE
#endif

/* ---- errors --------------------------------------------------------------------------------- */

/* Fills `err` (when not NULL) and returns `status`, so a failure site reads
 *   return qw_fail(err, QW_ERR_CORRUPT, "%s: bad magic", path);                                */
qw_status qw_fail(qw_error *err, qw_status status, const char *fmt, ...) QW_PRINTF(3, 4);

/* As qw_fail, also recording the tensor or key at fault and the byte offset (-1 for none). */
qw_status qw_fail_at(qw_error *err, qw_status status, const char *tensor, int64_t offset,
                     const char *fmt, ...) QW_PRINTF(5, 6);

/* Prefixes an already-filled error message with context ("while reading x: ..."). */
void qw_error_prefix(qw_error *err, const char *fmt, ...) QW_PRINTF(2, 3);

void qw_error_clear(qw_error *err);

#define QW_TRY(expr)                                                                               \
    do {                                                                                           \
        qw_status qw_try_status_ = (expr);                                                         \
        if (qw_try_status_ != QW_OK) return qw_try_status_;                                        \
    } while (0)

/* ---- logging and progress ------------------------------------------------------------------ */

/* Who to tell: set once per quantizer, passed down by pointer. All fields may be NULL/0. */
typedef struct qw_reporter {
    qw_log_fn log;
    qw_progress_fn progress;
    void *user;
    const char *logger;      /* "GGUFQuantizer" ... */
    volatile int *cancel;    /* set asynchronously by qw_quantizer_cancel */
    int last_percent;        /* progress never goes backwards */
    bool cancelled;          /* progress callback asked to stop */
} qw_reporter;

void qw_log(const qw_reporter *r, qw_log_level level, const char *fmt, ...) QW_PRINTF(3, 4);

/* Reports progress; returns QW_ERR_CANCELLED (with `err` filled) once the user asked to stop,
 * either through the callback's return value or qw_quantizer_cancel. */
qw_status qw_progress(qw_reporter *r, int percent, const char *stage, const char *message,
                      qw_error *err);

/* Returns QW_ERR_CANCELLED if a cancel was requested, without calling any callback. */
qw_status qw_check_cancel(const qw_reporter *r, qw_error *err);

/* ---- allocation ----------------------------------------------------------------------------- */

/* malloc/calloc/realloc that refuse sizes whose computation overflowed. */
void *qw_malloc(size_t bytes);
void *qw_calloc(size_t count, size_t size);
void *qw_malloc_array(size_t count, size_t size);
void *qw_realloc_array(void *p, size_t count, size_t size);
void qw_free(void *p);

/* a*b and a+b into *out; true when the result overflowed (then *out is not the result). */
bool qw_mul_overflows(uint64_t a, uint64_t b, uint64_t *out);
bool qw_add_overflows(uint64_t a, uint64_t b, uint64_t *out);

/* ---- strings -------------------------------------------------------------------------------- */

char *qw_strdup(const char *s);
char *qw_strndup(const char *s, size_t n);
char *qw_sprintf(const char *fmt, ...) QW_PRINTF(1, 2);
int qw_strcasecmp(const char *a, const char *b);
bool qw_str_ends_with(const char *s, const char *suffix);
bool qw_str_starts_with(const char *s, const char *prefix);
/* Lower-cases ASCII letters in place and returns s. */
char *qw_str_lower(char *s);

/* A growable byte buffer; append functions return false when out of memory. */
typedef struct qw_buf {
    char *data;
    size_t len;
    size_t cap;
} qw_buf;

bool qw_buf_append(qw_buf *b, const void *data, size_t len);
bool qw_buf_printf(qw_buf *b, const char *fmt, ...) QW_PRINTF(2, 3);
void qw_buf_free(qw_buf *b);

/* Number of CPUs this process may run on (at least 1). */
int qw_cpu_count(void);
/* Whether the CPU has F16C (x86 CPUID leaf 1, ECX bit 29; false elsewhere). Read from CPUID
 * rather than __builtin_cpu_supports("f16c"), which clang before 15 rejects. */
bool qw_cpu_has_f16c(void);

/* Monotonic seconds. */
double qw_now_seconds(void);

#endif /* QW_CORE_H */
