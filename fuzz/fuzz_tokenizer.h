/*
 * fuzz_tokenizer.h — what the tokenizer harnesses do with a tokenizer their loader accepted:
 * whatever a file yields must also encode and decode a few awkward texts, and decoding ids the
 * vocabulary does not have must skip them, never read out of bounds.
 */
#ifndef QW_FUZZ_TOKENIZER_H
#define QW_FUZZ_TOKENIZER_H

#include <string.h>

#include "tokenizer.h"

/* Exercises `tok` and frees it. */
static inline void fuzz_exercise_tokenizer(qw_tokenizer *tok) {
    static const char *const texts[] = {
        "Hello world, it's 2024!  ok", " \t\n<s>a</s>\xc3\xa9\xe2\x96\x81 \xff\xfe", "",
    };
    qw_error err;
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
    int32_t odd[] = {-1, 0, 1, (int32_t)qw_tokenizer_vocab_size(tok), 0x7fffffff};
    char *text = NULL;
    size_t len = 0;
    if (qw_tokenizer_decode(tok, odd, 5, false, &text, &len, &err) == QW_OK) qw_free(text);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
}

#endif /* QW_FUZZ_TOKENIZER_H */
