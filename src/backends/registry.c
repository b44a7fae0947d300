/* The backend table: the backends this build contains, in the order they are listed. */
#include "backend.h"

static const qw_backend_ops *const backend_table[] = {
    &qw_gguf_backend,
    &qw_awq_backend,
    &qw_coreml_backend,
};

size_t qw_backends_count(void) { return sizeof backend_table / sizeof backend_table[0]; }

const qw_backend_ops *qw_backends_at(size_t index) {
    return index < qw_backends_count() ? backend_table[index] : NULL;
}
