/* The tokenizer files of an HF model directory read into a GGUF vocabulary (qw_vocab_load_hf:
 * tokenizer.json or tokenizer.model, tokenizer_config.json, added_tokens.json,
 * chat_template.json), then written as GGUF metadata. The input is a list of files:
 *   { u8 which (mod 5: the names below) | u16 little-endian length | length bytes }...
 * files it does not give are absent. */
#include "fuzz_util.h"
#include "gguf.h"
#include "json.h"
#include "vocab.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                    "added_tokens.json", "chat_template.json"};
#define N_NAMES (sizeof names / sizeof names[0])
#define EMBD_ROWS 512

static json_t *config;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    config = json_pack("{s:i, s:i}", "bos_token_id", 1, "eos_token_id", 2);
    return config ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (size_t i = 0; i < N_NAMES; i++) remove(fuzz_path(names[i]));
    fuzz_bytes b = {data, size};
    while (b.n >= 3) {
        const char *name = names[fuzz_u8(&b) % N_NAMES];
        size_t len = fuzz_u8(&b);
        len |= (size_t)fuzz_u8(&b) << 8;
        if (len > b.n) len = b.n;
        fuzz_write_file(fuzz_path(name), b.p, len);
        b.p += len;
        b.n -= len;
    }
    qw_vocab *v = NULL;
    qw_error err;
    if (qw_vocab_load_hf(fuzz_dir(), config, EMBD_ROWS, &v, &err) == QW_OK) {
        if (v->n_tokens != EMBD_ROWS) __builtin_trap(); /* padded to exactly the rows */
        qw_gguf_writer *w = NULL;
        if (qw_gguf_writer_create(&w, &err) == QW_OK) {
            (void)qw_vocab_write_gguf(v, w, &err);
            qw_gguf_writer_free(w);
        }
        qw_vocab_free(v);
    }
    return 0;
}
