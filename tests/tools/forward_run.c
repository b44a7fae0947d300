/*
 * forward_run — runs the CPU forward pass over token ids and writes every hidden state and the
 * logits, for the Python tests to compare with transformers.
 *
 *   forward_run <model> <ids.i32> <n_seq> <seq_len> <out.f32> [--taps <layer> <taps.f32>]
 *
 * ids.i32 holds n_seq * seq_len little-endian int32 ids. out.f32 receives, as raw f32: the
 * embeddings, the output of every block, then the logits (after the final norm and head) —
 * (n_layer + 1) * n_tokens * hidden + n_tokens * vocab values. With --taps, the block `layer`'s
 * attn_in, o_in, mlp_in and down_in activations, then its attention's and MLP's outputs
 * (attn_out, mlp_out), are written one after the other to taps.f32, followed by
 * qw_forward_gram of down_in (intermediate x intermediate, the lower triangle left zero).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "forward.h"
#include "model.h"

static qw_status write_floats(FILE *out, const float *x, int64_t n, const char *path,
                              qw_error *err) {
    if (fwrite(x, sizeof *x, (size_t)n, out) != (size_t)n) {
        return qw_fail(err, QW_ERR_IO, "%s: write failed", path);
    }
    return QW_OK;
}

typedef struct run_args {
    const char *model, *ids_path, *out_path, *taps_path;
    int64_t n_seq, seq_len, taps_layer;
} run_args;

static qw_status run(const run_args *a, qw_error *err) {
    qw_model *m = NULL;
    qw_hf_view *v = NULL;
    qw_forward *f = NULL;
    qw_block *b = NULL;
    char *ids_data = NULL;
    size_t ids_bytes = 0;
    float *hidden = NULL, *logits = NULL, *taps_buf = NULL;
    FILE *out = NULL, *taps_out = NULL;
    const int64_t n = a->n_seq * a->seq_len;
    qw_status st = qw_model_open(a->model, NULL, &m, err);
    if (st == QW_OK) st = qw_model_hf_view(m, &v, err);
    if (st == QW_OK) st = qw_forward_create(v, 0, &f, err);
    if (st == QW_OK) st = qw_file_read_all(a->ids_path, (size_t)1 << 30, &ids_data, &ids_bytes, err);
    if (st == QW_OK && ids_bytes != (size_t)n * sizeof(int32_t)) {
        st = qw_fail(err, QW_ERR_INVALID_ARG, "%s: %zu bytes, expected %lld ids", a->ids_path,
                     ids_bytes, (long long)n);
    }
    const int64_t d = st == QW_OK ? qw_forward_hidden(f) : 0;
    const int64_t ff = st == QW_OK ? qw_forward_intermediate(f) : 0;
    const int64_t qw = st == QW_OK ? qw_forward_q_width(f) : 0;
    if (st == QW_OK) {
        hidden = qw_malloc_array((size_t)(n * d), sizeof *hidden);
        logits = qw_malloc_array((size_t)(n * qw_forward_vocab(f)), sizeof *logits);
        taps_buf = qw_malloc_array((size_t)(n * (4 * d + qw + ff)), sizeof *taps_buf);
        out = fopen(a->out_path, "wb");
        if (!hidden || !logits || !taps_buf) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        if (st == QW_OK && !out) st = qw_fail(err, QW_ERR_IO, "%s: cannot create", a->out_path);
    }
    if (st == QW_OK) st = qw_forward_embed(f, (const int32_t *)ids_data, n, hidden, err);
    if (st == QW_OK) st = write_floats(out, hidden, n * d, a->out_path, err);
    for (int64_t layer = 0; st == QW_OK && layer < qw_forward_n_layer(f); layer++) {
        qw_block_taps taps = {taps_buf,
                              taps_buf + n * d,
                              taps_buf + n * (d + qw),
                              taps_buf + n * (2 * d + qw),
                              taps_buf + n * (2 * d + qw + ff),
                              taps_buf + n * (3 * d + qw + ff)};
        bool tapped = a->taps_path && layer == a->taps_layer;
        st = qw_block_load(f, layer, &b, err);
        if (st == QW_OK) st = qw_block_forward(f, b, hidden, a->n_seq, a->seq_len,
                                               tapped ? &taps : NULL, err);
        if (st == QW_OK) st = write_floats(out, hidden, n * d, a->out_path, err);
        if (st == QW_OK && tapped) {
            taps_out = fopen(a->taps_path, "wb");
            st = taps_out ? write_floats(taps_out, taps_buf, n * (4 * d + qw + ff), a->taps_path,
                                         err)
                          : qw_fail(err, QW_ERR_IO, "%s: cannot create", a->taps_path);
            float *gram = st == QW_OK ? qw_calloc((size_t)(ff * ff), sizeof *gram) : NULL;
            if (st == QW_OK && !gram) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            if (st == QW_OK) {
                qw_forward_gram(f, ff, n, taps.down_in, ff, gram, ff);
                st = write_floats(taps_out, gram, ff * ff, a->taps_path, err);
            }
            qw_free(gram);
        }
        qw_block_free(b);
        b = NULL;
    }
    if (st == QW_OK) st = qw_forward_logits(f, hidden, n, logits, err);
    if (st == QW_OK) st = write_floats(out, logits, n * qw_forward_vocab(f), a->out_path, err);
    if (out && fclose(out) != 0 && st == QW_OK) st = qw_fail(err, QW_ERR_IO, "%s", a->out_path);
    if (taps_out && fclose(taps_out) != 0 && st == QW_OK) {
        st = qw_fail(err, QW_ERR_IO, "%s", a->taps_path);
    }
    qw_free(hidden);
    qw_free(logits);
    qw_free(taps_buf);
    qw_free(ids_data);
    qw_forward_free(f);
    qw_hf_view_free(v);
    qw_model_close(m);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 6 && !(argc == 9 && strcmp(argv[6], "--taps") == 0)) {
        fprintf(stderr,
                "usage: %s <model> <ids.i32> <n_seq> <seq_len> <out.f32> "
                "[--taps <layer> <taps.f32>]\n",
                argv[0]);
        return 2;
    }
    run_args a = {argv[1], argv[2], argv[5], argc == 9 ? argv[8] : NULL,
                  atoll(argv[3]), atoll(argv[4]), argc == 9 ? atoll(argv[7]) : -1};
    qw_error err = {0};
    qw_status st = run(&a, &err);
    if (st != QW_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], qw_status_name(st), err.message);
        return 1;
    }
    return 0;
}
