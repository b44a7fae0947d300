/* safetensors reader: header and data bounds through qw_safetensors_open_memory. */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qw_safetensors *st = NULL;
    qw_error err;
    if (qw_safetensors_open_memory(data, size, "fuzz.safetensors", &st, &err) != QW_OK) return 0;
    for (size_t i = 0; i < qw_safetensors_count(st); i++) {
        const qw_st_tensor *t = qw_safetensors_at(st, i);
        if (t->bytes) sink ^= (uint8_t)(t->data[0] ^ t->data[t->bytes - 1]);
        if (qw_safetensors_find(st, t->name) == NULL) __builtin_trap();
        sink ^= (uint8_t)t->dtype[0];
    }
    const char *fmt = qw_safetensors_metadata(st, "format");
    if (fmt) sink ^= (uint8_t)fmt[0];
    qw_safetensors_close(st);
    return 0;
}
