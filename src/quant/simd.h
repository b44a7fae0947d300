/*
 * simd.h — the SIMD overlay of the type table.
 *
 * qw_qtype_get() returns a copy of the reference table (qw_qtype_get_reference) in which a row's
 * kernel is replaced by a SIMD kernel when this CPU can run one. Every SIMD kernel performs the
 * same IEEE fp32 operations in the same order per value as the reference kernel it replaces, so
 * output bytes never depend on which kernel ran (tests/unit/test_simd.c checks this row by row).
 *
 * The environment variable QWODEL_KERNELS, read once at the first qw_qtype_get(), chooses:
 *   QWODEL_KERNELS=reference   the scalar reference kernels only (for tests and bisection);
 *   unset or anything else     the best kernels this CPU supports.
 *
 * Instruction sets are chosen at run time (__builtin_cpu_supports); SIMD code is compiled with
 * per-function target attributes, so the library runs on any x86-64 (and on other CPUs, where
 * the overlay is empty).
 */
#ifndef QW_SIMD_H
#define QW_SIMD_H

#include "quant.h"

/* Replaces kernels of `table` (a full copy of the reference table, indexed by qw_qtype) with the
 * SIMD kernels this CPU can run. Only a kernel the reference row has is replaced: a NULL stays
 * NULL. Returns the instruction set used ("avx2"), or NULL when nothing was replaced.
 * Thread-safe (it only writes `table`). */
const char *qw_simd_overlay(qw_qtype_info table[QW_QTYPE_COUNT]);

/* Fills `table` with the reference rows and, unless `kernels` is "reference", applies
 * qw_simd_overlay. This is what the first qw_qtype_get() does with getenv("QWODEL_KERNELS");
 * exposed so tests and benchmarks can build either table in one process. Returns the kernel set
 * in use: "reference" or the overlay's instruction set. Thread-safe. */
const char *qw_qtype_build_table(qw_qtype_info table[QW_QTYPE_COUNT], const char *kernels);

/* The kernel set qw_qtype_get() uses: "reference" or an instruction set name ("avx2").
 * Thread-safe; initializes the table on first use like qw_qtype_get(). */
const char *qw_qtype_kernels(void);

/* Index of the first element of x[0..n) that is NaN or infinite, or -1 when all are finite: the
 * answer of the scalar loop `if (x[i] - x[i] != 0.0f) return i;`, with SIMD where the active
 * kernel set has it. For the backends' check of decoded rows. Thread-safe. */
int64_t qw_find_nonfinite(const float *x, int64_t n);

#endif /* QW_SIMD_H */
