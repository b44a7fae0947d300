/* kernel_probe — runs one of the type table's row kernels over a raw file, so that tests written
 * in another language (tests/python/test_kernels_vs_ggml.py) can compare our kernels with a
 * reference implementation byte for byte.
 *
 *   kernel_probe quantize   <type> <n_per_row> <in.f32>    <out.blocks> [importance.f32]
 *   kernel_probe dequantize <type> <n_per_row> <in.blocks> <out.f32>
 *   kernel_probe list
 *
 * Input and output are raw little-endian arrays with no header: quantize reads rows of
 * n_per_row fp32 values and writes rows of blocks; dequantize does the reverse. The optional
 * importance file holds n_per_row fp32 weights, applied to every row (as llama.cpp's imatrix).
 * Each row is processed by its own kernel call, as the library does. Errors go to stderr and
 * exit with status 1.
 *
 * `list` prints the table, one row per line: name, GGUF id, block elements, block bytes, and
 * whether this build can decode and encode the type (1/0), so tests need not hard-code which
 * kernels exist. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

static _Noreturn void die(const char *fmt, ...) QW_PRINTF(1, 2);

static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kernel_probe: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Reads a whole file; an empty file gives a non-NULL buffer of size 0. */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) die("out of memory reading %s", path);
            buf = grown;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("cannot read %s", path);
    fclose(f);
    *size = len;
    return buf;
}

static void write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create %s", path);
    if (size && fwrite(data, 1, size, f) != size) die("cannot write %s", path);
    if (fclose(f) != 0) die("cannot write %s", path);
}

static int list_table(void) {
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        const qw_qtype_info *info = qw_qtype_get((qw_qtype)t);
        printf("%s %" PRIu32 " %" PRIu32 " %" PRIu32 " %d %d\n", info->name, info->gguf_id,
               info->block_elems, info->block_bytes, info->dequantize != NULL,
               info->quantize != NULL);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "list") == 0) return list_table();
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: kernel_probe quantize|dequantize <type> <n_per_row> <in> <out> "
                        "[importance]\n       kernel_probe list\n");
        return 1;
    }
    const char *mode = argv[1];
    const bool quantize = strcmp(mode, "quantize") == 0;
    if (!quantize && strcmp(mode, "dequantize") != 0) die("unknown mode '%s'", mode);
    if (!quantize && argc == 7) die("%s takes no importance file", mode);

    qw_qtype type;
    if (!qw_qtype_from_name(argv[2], &type)) die("unknown type '%s'", argv[2]);
    const qw_qtype_info *info = qw_qtype_get(type);
    if (quantize && !info->quantize) die("this build cannot quantize to %s", info->name);
    if (!quantize && !info->dequantize) die("this build cannot decode %s", info->name);

    char *end;
    errno = 0;
    const long long n_ll = strtoll(argv[3], &end, 10);
    if (errno || *end || end == argv[3] || n_ll <= 0 || n_ll > (1LL << 40)) {
        die("bad n_per_row '%s'", argv[3]);
    }
    const int64_t n_per_row = n_ll;
    const uint64_t row_bytes = qw_qtype_row_bytes(type, n_per_row);
    if (row_bytes == 0) die("n_per_row is not a multiple of the block size of %s", info->name);
    const uint64_t row_floats = (uint64_t)n_per_row * sizeof(float);
    const uint64_t in_row = quantize ? row_floats : row_bytes;
    const uint64_t out_row = quantize ? row_bytes : row_floats;

    size_t in_size;
    uint8_t *in = read_file(argv[4], &in_size);
    if (in_size % in_row != 0) die("%s is not a whole number of rows", argv[4]);
    const uint64_t n_rows = in_size / in_row;

    float *importance = NULL;
    if (argc == 7) {
        size_t imp_size;
        uint8_t *raw = read_file(argv[6], &imp_size);
        if (imp_size != row_floats) die("%s must hold n_per_row fp32 values", argv[6]);
        importance = (float *)(void *)raw; /* realloc'd memory is suitably aligned */
    }

    uint64_t out_size;
    if (qw_mul_overflows(n_rows, out_row, &out_size) || out_size > SIZE_MAX) {
        die("%s is too large", argv[4]);
    }
    uint8_t *out = malloc(out_size ? (size_t)out_size : 1);
    if (!out) die("out of memory for %s", argv[5]);

    for (uint64_t r = 0; r < n_rows; r++) {
        const uint8_t *row_in = in + r * in_row;
        uint8_t *row_out = out + r * out_row;
        if (quantize) {
            info->quantize((const float *)(const void *)row_in, row_out, n_per_row, importance);
        } else {
            info->dequantize(row_in, (float *)(void *)row_out, n_per_row);
        }
    }
    write_file(argv[5], out, (size_t)out_size);
    free(out);
    free(importance);
    free(in);
    return 0;
}
