/* quant_bench — times the type table's row kernels, for bench/bench_types.py.
 *
 *   quant_bench [options]
 *     --types LIST       comma-separated type names, or "all" (default): every type this build
 *                        can encode
 *     --threads LIST     thread counts, e.g. 1,2 (default 1)
 *     --kernels WHICH    active | reference | both (default both): the table qw_qtype_get uses,
 *                        the scalar reference table, or each in turn
 *     --op WHICH         quantize | dequantize | both (default quantize)
 *     --input FILE       rows of raw little-endian fp32 (default: Gaussian values, --seed)
 *     --n-per-row N      row length (default 4096; a multiple of every timed type's block)
 *     --rows N           rows to generate when there is no --input (default 512)
 *     --seconds S        time to spend per measurement, split over --repeats (default 0.5)
 *     --repeats N        measurements per row of output; the median is reported (default 5)
 *     --seed N
 *     --list             print the types this build can encode and exit
 *     --which            print the kernel set qw_qtype_get uses ("reference", "avx2") and exit
 *
 * Each measurement runs every row through the kernel once or more on a qw_pool of the given
 * size (rows are split as the library splits them: each row one kernel call, rows shared out in
 * chunks). Prints one JSON object on stdout:
 *   {"kernels_active": "avx2", "n_per_row": 4096, "rows": 512,
 *    "results": [{"type": "q8_0", "op": "quantize", "kernels": "avx2", "threads": 1,
 *                 "mvalues_per_s": 900.1, "mvalues_per_cpu_s": 905.2,
 *                 "seconds": [...], "cpu_seconds": [...]}, ...]}
 * "kernels" names the kernel set that ran ("reference", "avx2", ...): a row the SIMD overlay
 * left alone is timed once, as "reference". Throughputs are from the median pass; the lists are
 * each repeat's wall and CPU (all threads) seconds per pass. Errors go to stderr, exit status
 * 1. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "pool.h"
#include "quant.h"
#include "simd.h"

static _Noreturn void die(const char *fmt, ...) QW_PRINTF(1, 2);

static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("quant_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static long long parse_int(const char *s, long long lo, long long hi, const char *what) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) die("bad %s '%s'", what, s);
    return v;
}

/* ---- the timed work ------------------------------------------------------------------------- */

typedef struct {
    const qw_qtype_info *info;
    bool quantize;
    const float *floats; /* rows * n_per_row */
    uint8_t *blocks;     /* rows * row_bytes */
    float *decoded;      /* rows * n_per_row */
    int64_t n_per_row;
    uint64_t row_bytes;
} job;

static void task(void *p, size_t begin, size_t end, int worker) {
    (void)worker;
    const job *j = p;
    for (size_t r = begin; r < end; r++) {
        if (j->quantize) {
            j->info->quantize(j->floats + r * (size_t)j->n_per_row, j->blocks + r * j->row_bytes,
                              j->n_per_row, NULL);
        } else {
            j->info->dequantize(j->blocks + r * j->row_bytes, j->decoded + r * (size_t)j->n_per_row,
                                j->n_per_row);
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void) { /* all threads of the process */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double median(const double *v, int n) {
    double *sorted = malloc(sizeof(double) * (size_t)n);
    if (!sorted) die("out of memory");
    memcpy(sorted, v, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), cmp_double);
    const double m = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
    return m;
}

/* Median wall seconds per pass over all rows; samples[k] gets each repeat's wall seconds per
 * pass and cpu[k] its CPU seconds per pass (every thread's, so with N busy threads about N times
 * the wall time: on a loaded machine CPU time is the steadier measure of the kernel). */
static double measure(qw_pool *pool, job *j, size_t rows, double seconds, int repeats,
                      double *samples, double *cpu) {
    const int threads = qw_pool_threads(pool);
    size_t grain = rows / (size_t)(8 * threads);
    if (grain < 1) grain = 1;
    double t0 = qw_now_seconds();
    qw_pool_run(pool, rows, grain, task, j); /* warm-up, and a first estimate */
    double one = qw_now_seconds() - t0;
    if (one <= 0) one = 1e-9;
    int passes = (int)ceil(seconds / repeats / one);
    if (passes < 1) passes = 1;
    for (int k = 0; k < repeats; k++) {
        t0 = qw_now_seconds();
        const double c0 = cpu_seconds();
        for (int p = 0; p < passes; p++) qw_pool_run(pool, rows, grain, task, j);
        samples[k] = (qw_now_seconds() - t0) / passes;
        cpu[k] = (cpu_seconds() - c0) / passes;
    }
    return median(samples, repeats);
}

/* ---- inputs --------------------------------------------------------------------------------- */

static float *read_floats(const char *path, int64_t n_per_row, size_t *rows) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    if (fseek(f, 0, SEEK_END) != 0) die("cannot seek %s", path);
    const long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) die("cannot seek %s", path);
    const size_t row_size = (size_t)n_per_row * sizeof(float);
    if ((size_t)size % row_size != 0 || size == 0) {
        die("%s: %ld bytes is not a whole number of %lld-float rows", path, size,
            (long long)n_per_row);
    }
    float *x = malloc((size_t)size);
    if (!x) die("out of memory reading %s", path);
    if (fread(x, 1, (size_t)size, f) != (size_t)size) die("cannot read %s", path);
    fclose(f);
    *rows = (size_t)size / row_size;
    return x;
}

static float *gaussian(size_t n, uint64_t seed) {
    float *x = malloc(n * sizeof(float));
    if (!x) die("out of memory");
    uint64_t s = seed;
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) { /* splitmix64 -> uniform (0, 1] */
            uint64_t z = (s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            u[k] = ((double)(z >> 11) + 1.0) * 0x1.0p-53;
        }
        const double r = sqrt(-2.0 * log(u[0]));
        x[i] = (float)(r * cos(6.283185307179586 * u[1]));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
    return x;
}

/* ---- main ----------------------------------------------------------------------------------- */

static bool in_list(const char *list, const char *name) {
    if (strcmp(list, "all") == 0) return true;
    char item[64];
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        const size_t n = comma ? (size_t)(comma - p) : strlen(p);
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
        if (qw_strcasecmp(item, name) == 0) return true;
        p += n + (comma != NULL);
    }
    return false;
}

int main(int argc, char **argv) {
    const char *types = "all", *threads_list = "1", *kernels = "both", *op = "quantize";
    const char *input = NULL;
    int64_t n_per_row = 4096;
    size_t rows = 512;
    double seconds = 0.5;
    int repeats = 5;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--which") == 0) {
            printf("%s\n", qw_qtype_kernels());
            return 0;
        }
        if (strcmp(a, "--list") == 0) {
            for (int t = 0; t < QW_QTYPE_COUNT; t++) {
                const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
                if (info->quantize) printf("%s %" PRIu32 " %" PRIu32 "\n", info->name,
                                           info->gguf_id, info->block_elems);
            }
            return 0;
        }
        if (i + 1 >= argc) die("%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--types") == 0) types = v;
        else if (strcmp(a, "--threads") == 0) threads_list = v;
        else if (strcmp(a, "--kernels") == 0) kernels = v;
        else if (strcmp(a, "--op") == 0) op = v;
        else if (strcmp(a, "--input") == 0) input = v;
        else if (strcmp(a, "--n-per-row") == 0) n_per_row = parse_int(v, 1, 1LL << 30, a);
        else if (strcmp(a, "--rows") == 0) rows = (size_t)parse_int(v, 1, 1LL << 24, a);
        else if (strcmp(a, "--seconds") == 0) seconds = atof(v);
        else if (strcmp(a, "--repeats") == 0) repeats = (int)parse_int(v, 1, 1000, a);
        else if (strcmp(a, "--seed") == 0) seed = (uint64_t)parse_int(v, 0, INT64_MAX, a);
        else die("unknown option %s", a);
    }
    if (!(seconds > 0)) die("--seconds must be positive");

    qw_qtype_info ref_table[QW_QTYPE_COUNT];
    const char *active_name = qw_qtype_kernels();
    qw_qtype_build_table(ref_table, "reference");
    struct {
        const char *name;
        bool active;
    } sets[2];
    int n_sets = 0;
    if (strcmp(kernels, "reference") == 0 || strcmp(kernels, "both") == 0) {
        sets[n_sets].name = "reference";
        sets[n_sets++].active = false;
    }
    if (strcmp(kernels, "active") == 0 ||
        (strcmp(kernels, "both") == 0 && strcmp(active_name, "reference") != 0)) {
        sets[n_sets].name = active_name;
        sets[n_sets++].active = true;
    }
    if (n_sets == 0) die("--kernels must be active, reference or both");
    bool ops[2] = {false, false}; /* quantize, dequantize */
    if (strcmp(op, "quantize") == 0 || strcmp(op, "both") == 0) ops[0] = true;
    if (strcmp(op, "dequantize") == 0 || strcmp(op, "both") == 0) ops[1] = true;
    if (!ops[0] && !ops[1]) die("--op must be quantize, dequantize or both");

    float *floats = input ? read_floats(input, n_per_row, &rows)
                          : gaussian(rows * (size_t)n_per_row, seed);
    const size_t n_values = rows * (size_t)n_per_row;
    float *decoded = malloc(n_values * sizeof(float));
    uint8_t *blocks = malloc(n_values * 8); /* more than any type's bytes per value */
    double *samples = malloc(sizeof(double) * (size_t)repeats);
    double *cpu = malloc(sizeof(double) * (size_t)repeats);
    if (!decoded || !blocks || !samples || !cpu) die("out of memory");

    printf("{\"kernels_active\": \"%s\", \"n_per_row\": %lld, \"rows\": %zu, \"results\": [",
           active_name, (long long)n_per_row, rows);
    bool first = true;
    for (const char *p = threads_list; *p;) {
        char *end;
        const long threads = strtol(p, &end, 10);
        if (end == p || threads < 1 || threads > 1024) die("bad --threads '%s'", threads_list);
        p = *end == ',' ? end + 1 : end;
        qw_pool *pool;
        qw_error err;
        if (qw_pool_create((int)threads, &pool, &err) != QW_OK) die("%s", err.message);
        for (int t = 0; t < QW_QTYPE_COUNT; t++) {
            const qw_qtype_info *ref = &ref_table[t];
            if (!ref->quantize || !in_list(types, ref->name)) continue;
            if (n_per_row % ref->block_elems != 0) {
                fprintf(stderr, "quant_bench: skipping %s: %lld is not a multiple of %" PRIu32
                        "\n", ref->name, (long long)n_per_row, ref->block_elems);
                continue;
            }
            for (int o = 0; o < 2; o++) {
                if (!ops[o] || (o == 1 && !ref->dequantize)) continue;
                for (int s = 0; s < n_sets; s++) {
                    const qw_qtype_info *info = sets[s].active ? qw_qtype_get((qw_qtype)t) : ref;
                    const bool same = o == 0 ? info->quantize == ref->quantize
                                             : info->dequantize == ref->dequantize;
                    /* a row the overlay left alone runs the reference kernel: time it once */
                    if (sets[s].active && same && n_sets == 2) continue;
                    job j = {.info = info,
                             .quantize = o == 0,
                             .floats = floats,
                             .blocks = blocks,
                             .decoded = decoded,
                             .n_per_row = n_per_row,
                             .row_bytes = qw_qtype_row_bytes((qw_qtype)t, n_per_row)};
                    if (o == 1) { /* blocks to decode: the reference encoding of the input */
                        job enc = j;
                        enc.info = ref;
                        enc.quantize = true;
                        task(&enc, 0, rows, 0);
                    }
                    const double sec = measure(pool, &j, rows, seconds, repeats, samples, cpu);
                    printf("%s\n  {\"type\": \"%s\", \"op\": \"%s\", \"kernels\": \"%s\", "
                           "\"threads\": %ld, \"mvalues_per_s\": %.3f, "
                           "\"mvalues_per_cpu_s\": %.3f, \"seconds\": [",
                           first ? "" : ",", ref->name, o == 0 ? "quantize" : "dequantize",
                           same ? "reference" : sets[s].name, threads,
                           (double)n_values / sec / 1e6,
                           (double)n_values / median(cpu, repeats) / 1e6);
                    for (int k = 0; k < repeats; k++) {
                        printf("%s%.6g", k ? ", " : "", samples[k]);
                    }
                    printf("], \"cpu_seconds\": [");
                    for (int k = 0; k < repeats; k++) printf("%s%.6g", k ? ", " : "", cpu[k]);
                    printf("]}");
                    fflush(stdout);
                    first = false;
                }
            }
        }
        qw_pool_free(pool);
    }
    printf("\n]}\n");
    free(samples);
    free(cpu);
    free(blocks);
    free(decoded);
    free(floats);
    return 0;
}
