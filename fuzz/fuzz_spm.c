/* SentencePiece tokenizer.model loader (spm_proto.c); what it accepts must also encode and
 * decode a few texts. */
#include "fuzz_util.h"
#include "fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qw_tokenizer *tok = NULL;
    qw_error err;
    if (qw_tokenizer_load_spm_buffer(data, size, "fuzz/tokenizer.model", &tok, &err) != QW_OK) {
        return 0;
    }
    fuzz_exercise_tokenizer(tok);
    return 0;
}
