/* SentencePiece tokenizer.model loader (spm_proto.c); what it accepts must also encode and
 * decode a few texts. */
#include "fuzz_util.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {
    "Hello world, it's 2024!  ok", " \t\n<s>a</s>\xc3\xa9\xe2\x96\x81 \xff\xfe", "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qw_tokenizer *tok = NULL;
    qw_error err;
    if (qw_tokenizer_load_spm_buffer(data, size, "fuzz/tokenizer.model", &tok, &err) != QW_OK) {
        return 0;
    }
    qw_token_ids ids = {0};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (qw_tokenizer_encode(tok, texts[i], strlen(texts[i]), i == 0, &ids, &err) != QW_OK) {
            continue;
        }
        char *text = NULL;
        size_t len = 0;
        if (qw_tokenizer_decode(tok, ids.ids, ids.n, i == 1, &text, &len, &err) == QW_OK) {
            qw_free(text);
        }
    }
    /* ids the vocabulary does not have are skipped, never read out of bounds */
    int32_t odd[] = {-1, 0, 1, (int32_t)qw_tokenizer_vocab_size(tok), 0x7fffffff};
    char *text = NULL;
    size_t len = 0;
    if (qw_tokenizer_decode(tok, odd, 5, false, &text, &len, &err) == QW_OK) qw_free(text);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
    return 0;
}
