/*
 * test.h — a minimal unit-test harness: TEST(name) functions registered in a RUN_TESTS list,
 * CHECK macros that print both operands and keep going, and a plain "N passed, N failed" line
 * at the end. Each test binary is one ctest test.
 */
#ifndef QW_TEST_H
#define QW_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwodel.h"

static int test_failures_;

static inline const char *test_error_message_(const qw_error *e) { return e ? e->message : ""; }
static int test_checks_failed_in_current_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
            test_checks_failed_in_current_++;                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld vs %lld)\n", __FILE__,    \
                    __LINE__, #a, #b, a_, b_);                                                     \
            test_checks_failed_in_current_++;                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: CHECK_EQ_STR failed: %s == %s (\"%s\" vs \"%s\")\n",          \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");           \
            test_checks_failed_in_current_++;                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        if (!(fabs(a_ - b_) <= (tol))) {                                                           \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s ~ %s (%g vs %g, tol %g)\n", __FILE__,   \
                    __LINE__, #a, #b, a_, b_, (double)(tol));                                      \
            test_checks_failed_in_current_++;                                                      \
        }                                                                                          \
    } while (0)

/* Checks a qw_status is QW_OK, printing the error message otherwise. */
#define CHECK_OK(expr, errp)                                                                       \
    do {                                                                                           \
        qw_status st_ = (expr);                                                                    \
        if (st_ != QW_OK) {                                                                        \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #expr,              \
                    qw_status_name(st_), test_error_message_(errp));                           \
            test_checks_failed_in_current_++;                                                      \
        }                                                                                          \
    } while (0)

#define TEST(name) static void name(void)

typedef struct test_case_ {
    const char *name;
    void (*fn)(void);
} test_case_;

#define TEST_CASE(name) {#name, name}

static inline int run_tests_(const test_case_ *cases, size_t n) {
    int passed = 0;
    for (size_t i = 0; i < n; i++) {
        test_checks_failed_in_current_ = 0;
        cases[i].fn();
        if (test_checks_failed_in_current_ == 0) {
            passed++;
            printf("ok   %s\n", cases[i].name);
        } else {
            test_failures_++;
            printf("FAIL %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, test_failures_);
    return test_failures_ ? 1 : 0;
}

#define RUN_TESTS(...)                                                                             \
    int main(void) {                                                                               \
        static const test_case_ cases_[] = {__VA_ARGS__};                                          \
        return run_tests_(cases_, sizeof cases_ / sizeof cases_[0]);                               \
    }

/* A per-test scratch directory under the build tree. */
static inline const char *test_tmpdir(void) {
    static char dir[512];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s", QW_TEST_TMPDIR);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot create %s\n", dir);
    }
    return dir;
}

#endif /* QW_TEST_H */
