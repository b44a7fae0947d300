/* imatrix reader, both formats (legacy .dat and GGUF), over a buffer. */
#include "fuzz_util.h"
#include "imatrix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qw_imatrix *m = NULL;
    qw_error err;
    if (qw_imatrix_open_memory(data, size, "fuzz.imatrix", &m, &err) != QW_OK) return 0;
    for (size_t i = 0; i < qw_imatrix_count(m); i++) {
        const qw_imatrix_entry *e = qw_imatrix_at(m, i);
        if (e->n_values) sink += e->values[0] + e->values[e->n_values - 1];
        if (qw_imatrix_find(m, e->name) != e) __builtin_trap(); /* names are unique */
    }
    const char *ds = qw_imatrix_dataset(m);
    if (ds) sink += (float)ds[0];
    sink += (float)qw_imatrix_chunks(m);
    qw_imatrix_free(m);
    return 0;
}
