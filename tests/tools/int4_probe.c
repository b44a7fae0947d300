/*
 * int4_probe — runs src/quant/int4.c on a matrix for the Python tests to compare with
 * compressed-tensors.
 *
 *   int4_probe <in.f32> <n_rows> <n_cols> <group> <sym 0|1> <f32|f16|bf16> <out_dir>
 *
 * Writes into out_dir: codes.i8 [rows][cols], scales.f32 [rows][groups], zp.i8 [rows][groups],
 * packed.i32 [rows][ceil(cols/8)], zp_packed.i32 [ceil(rows/8)][groups], fake.f32 [rows][cols]
 * (fake quantization) and dequant.f32 (dequantized codes: must equal fake.f32).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "int4.h"

static int put(const char *dir, const char *name, const void *data, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "int4_probe: cannot write %s\n", path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s <in.f32> <rows> <cols> <group> <sym> <dtype> <out_dir>\n",
                argv[0]);
        return 2;
    }
    const int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    static const struct {
        const char *name;
        qw_qtype type;
    } DTYPES[] = {{"f32", QW_QTYPE_F32}, {"f16", QW_QTYPE_F16}, {"bf16", QW_QTYPE_BF16}};
    qw_int4_scheme s = {atoll(argv[4]), atoi(argv[5]) != 0, QW_QTYPE_I8};
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++) {
        if (strcmp(argv[6], DTYPES[i].name) == 0) s.dtype = DTYPES[i].type;
    }
    qw_error err = {0};
    char *data = NULL;
    size_t len = 0;
    if (rows <= 0 || qw_int4_check(&s, cols, "probe", &err) != QW_OK ||
        qw_file_read_all(argv[1], (size_t)1 << 31, &data, &len, &err) != QW_OK ||
        len != (size_t)(rows * cols) * sizeof(float)) {
        fprintf(stderr, "int4_probe: %s\n", err.message[0] ? err.message : "bad arguments");
        free(data);
        return 1;
    }
    const int64_t groups = cols / s.group_size, words = (cols + 7) / 8;
    const float *w = (const float *)data;
    int8_t *codes = malloc((size_t)(rows * cols));
    int8_t *zp = malloc((size_t)(rows * groups));
    float *scales = malloc((size_t)(rows * groups) * sizeof *scales);
    float *fake = malloc((size_t)(rows * cols) * sizeof *fake);
    float *deq = malloc((size_t)(rows * cols) * sizeof *deq);
    int32_t *packed = malloc((size_t)(rows * words) * sizeof *packed);
    int32_t *zp_packed = malloc((size_t)((rows + 7) / 8 * groups) * sizeof *zp_packed);
    int8_t *unpacked = malloc((size_t)cols);
    int rc = !codes || !zp || !scales || !fake || !deq || !packed || !zp_packed || !unpacked;
    for (int64_t r = 0; !rc && r < rows; r++) {
        qw_int4_quantize_row(&s, w + r * cols, cols, codes + r * cols, scales + r * groups,
                             zp + r * groups);
        qw_int4_dequantize_row(&s, codes + r * cols, scales + r * groups, zp + r * groups, cols,
                               deq + r * cols);
        memcpy(fake + r * cols, w + r * cols, (size_t)cols * sizeof *fake);
        qw_int4_fake_quantize_row(&s, fake + r * cols, cols);
        qw_int4_pack_row(codes + r * cols, cols, packed + r * words);
        qw_int4_unpack_row(packed + r * words, cols, unpacked);
        if (memcmp(unpacked, codes + r * cols, (size_t)cols) != 0) {
            fprintf(stderr, "int4_probe: row %lld does not unpack to its codes\n", (long long)r);
            rc = 1;
        }
    }
    if (!rc) {
        qw_int4_pack_columns(zp, rows, groups, zp_packed);
        const char *dir = argv[7];
        rc = put(dir, "codes.i8", codes, (size_t)(rows * cols)) ||
             put(dir, "scales.f32", scales, (size_t)(rows * groups) * sizeof *scales) ||
             put(dir, "zp.i8", zp, (size_t)(rows * groups)) ||
             put(dir, "packed.i32", packed, (size_t)(rows * words) * sizeof *packed) ||
             put(dir, "zp_packed.i32", zp_packed,
                 (size_t)((rows + 7) / 8 * groups) * sizeof *zp_packed) ||
             put(dir, "fake.f32", fake, (size_t)(rows * cols) * sizeof *fake) ||
             put(dir, "dequant.f32", deq, (size_t)(rows * cols) * sizeof *deq);
    }
    free(codes);
    free(zp);
    free(scales);
    free(fake);
    free(deq);
    free(packed);
    free(zp_packed);
    free(unpacked);
    free(data);
    return rc;
}
