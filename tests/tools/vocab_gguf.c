/*
 * vocab_gguf — writes a tensor-less GGUF that llama.cpp can load with vocab_only=true: the
 * vocabulary of a HF model directory plus the few llama hyperparameters llama.cpp's loader
 * requires before it reads the vocabulary. The Python tokenizer tests drive it.
 *
 *   vocab_gguf <hf_dir> <n_embd_rows> <out.gguf>
 *
 * config.json in hf_dir, when present, supplies fallback special-token ids.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "file.h"
#include "gguf.h"
#include "json.h"
#include "vocab.h"

/* Small but valid: the loader checks these exist and are consistent; nothing is computed. */
static qw_status write_hparams(qw_gguf_writer *w, uint32_t n_vocab, qw_error *err) {
    static const struct {
        const char *key;
        uint32_t value;
    } u32s[] = {
        {"llama.context_length", 4096},   {"llama.embedding_length", 64},
        {"llama.block_count", 1},         {"llama.feed_forward_length", 128},
        {"llama.attention.head_count", 4}, {"llama.attention.head_count_kv", 4},
        {"llama.rope.dimension_count", 16},
    };
    QW_TRY(qw_gguf_writer_set_str(w, "general.architecture", "llama", err));
    QW_TRY(qw_gguf_writer_set_str(w, "general.name", "vocab", err));
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        QW_TRY(qw_gguf_writer_set_u32(w, u32s[i].key, u32s[i].value, err));
    }
    QW_TRY(qw_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, err));
    return qw_gguf_writer_set_u32(w, "llama.vocab_size", n_vocab, err);
}

static qw_status run(const char *dir, uint32_t rows, const char *out_path, qw_error *err) {
    json_t *config = NULL;
    qw_vocab *vocab = NULL;
    qw_gguf_writer *w = NULL;
    char *config_path = qw_path_join(dir, "config.json");
    qw_status st = config_path ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK && qw_path_is_file(config_path)) {
        st = qw_json_load_file(config_path, 64u << 20, &config, err);
    }
    if (st == QW_OK) st = qw_vocab_load_hf(dir, config, rows, &vocab, err);
    if (st == QW_OK) st = qw_gguf_writer_create(&w, err);
    if (st == QW_OK) st = write_hparams(w, vocab->n_tokens, err);
    if (st == QW_OK) st = qw_vocab_write_gguf(vocab, w, err);
    if (st == QW_OK) st = qw_gguf_writer_begin(w, out_path, err);
    if (st == QW_OK) st = qw_gguf_writer_finish(w, err);
    qw_gguf_writer_free(w);
    qw_vocab_free(vocab);
    json_decref(config);
    qw_free(config_path);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <hf_dir> <n_embd_rows> <out.gguf>\n", argv[0]);
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long rows = strtoul(argv[2], &end, 10);
    if (errno || *end || end == argv[2] || rows == 0 || rows > UINT32_MAX) {
        fprintf(stderr, "%s: n_embd_rows must be a positive integer, not \"%s\"\n", argv[0],
                argv[2]);
        return 2;
    }
    qw_error err = {0};
    qw_status st = run(argv[1], (uint32_t)rows, argv[3], &err);
    if (st != QW_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], qw_status_name(st), err.message);
        return 1;
    }
    return 0;
}
