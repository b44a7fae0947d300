/*
 * backend.h — the backend table (gguf today; awq and coreml join as rows) and what a backend is
 * given and gives back: validated options, a plan, a run's result.
 */
#ifndef QW_BACKEND_H
#define QW_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "model.h"
#include "pool.h"

/* ---- options -------------------------------------------------------------------------------- */

typedef struct qw_option_spec {
    const char *name;
    qw_option_type type;
    qw_option_scope scope;
    const char *description;
} qw_option_spec;

/* Options every backend accepts besides its own table ("token"); qw_options_add knows them. */
extern const qw_option_spec qw_common_options[];
extern const size_t qw_n_common_options;

/* Options given at create time, overridden per run. Values are kept as strings and parsed when
 * validated, so a mistyped value is reported before any work. */
typedef struct qw_options {
    size_t n;
    char **keys;
    char **values;
} qw_options;

/* Validates and appends key/value pairs: unknown keys, keys not allowed in this scope and
 * values that do not parse are QW_ERR_BAD_OPTION naming the key and listing accepted ones. A
 * later value for the same key replaces the earlier one. */
qw_status qw_options_add(qw_options *opts, const qw_option_spec *specs, size_t n_specs,
                         const char *backend_name, qw_option_scope scope,
                         const char *const *keys, const char *const *values, size_t n,
                         qw_error *err);
qw_status qw_options_copy(qw_options *dst, const qw_options *src, qw_error *err);
void qw_options_free(qw_options *opts);
const char *qw_options_get(const qw_options *opts, const char *key);
int64_t qw_options_get_int(const qw_options *opts, const char *key, int64_t fallback);
bool qw_options_get_bool(const qw_options *opts, const char *key, bool fallback);

/* ---- plans ---------------------------------------------------------------------------------- */

/* The public qw_plan: what a run will write. Backends fill it; `priv` carries their own state
 * from planning to execution. */
struct qw_plan {
    qw_plan_tensor *tensors;
    size_t n_tensors;
    char *output_path;
    uint64_t output_bytes;
    char *format;
    void *priv;
    void (*priv_free)(void *priv);
    /* storage for the strings the entries point at */
    char **strings;
    size_t n_strings;
};

/* Copies s into the plan's string storage; NULL when out of memory. */
const char *qw_plan_intern(qw_plan *plan, const char *s);
qw_status qw_plan_push(qw_plan *plan, const qw_plan_tensor *entry, qw_error *err);

/* ---- runs ----------------------------------------------------------------------------------- */

typedef struct qw_run_context {
    const qw_model *model;
    const char *output_dir;
    const qw_options *options; /* init options merged with this run's overrides */
    qw_reporter *reporter;
    qw_pool *pool;
} qw_run_context;

typedef struct qw_run_result {
    uint64_t file_size;
    uint64_t n_elements;   /* elements in all tensors written */
    uint64_t data_bytes;   /* tensor bytes written */
    size_t type_counts[QW_QTYPE_COUNT];
    json_t *details;       /* backend-specific get_model_info keys (an object), or NULL; the
                            * quantizer owns it once the run returns */
} qw_run_result;

typedef struct qw_backend_ops {
    const char *name;
    const char *description;
    const char *logger;          /* Python logger name */
    const char *default_format;
    size_t (*format_count)(void);
    const char *(*format_name)(size_t index);
    const char *(*format_description)(size_t index);
    int (*format_find)(const char *name); /* index by name or alias, or -1 */
    const qw_option_spec *options;
    size_t n_options;
    /* Checks that the backend can take this model at all (create-time validation). */
    qw_status (*check_model)(const qw_model *model, qw_error *err);
    qw_status (*plan)(const qw_run_context *ctx, const char *format, qw_plan *plan,
                      qw_error *err);
    qw_status (*execute)(const qw_run_context *ctx, const qw_plan *plan, qw_run_result *result,
                         qw_error *err);
} qw_backend_ops;

size_t qw_backends_count(void);
const qw_backend_ops *qw_backends_at(size_t index);

/* The backends' rows. */
extern const qw_backend_ops qw_gguf_backend;
extern const qw_backend_ops qw_awq_backend;
extern const qw_backend_ops qw_coreml_backend;

#endif /* QW_BACKEND_H */
