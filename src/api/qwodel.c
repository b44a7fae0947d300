/* The public API (qwodel.h): quantizers over the backend table. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "file.h"
#include "pool.h"
#include "simd.h"

#define DEFAULT_OUTPUT_DIR "./quantized_models"

struct qw_quantizer {
    const qw_backend_ops *backend;
    qw_model *model;
    char *output_dir;
    qw_options options;
    qw_reporter reporter;
    volatile int cancel;
    /* last successful run */
    char *output_path;
    char *format;
    qw_run_result result;
    double seconds;
    bool has_result;
};

const char *qw_version(void) { return QW_VERSION; }

void qw_string_free(char *s) { qw_free(s); }

/* ---- tables --------------------------------------------------------------------------------- */

size_t qw_backend_count(void) { return qw_backends_count(); }

static const qw_backend_ops *backend_at(size_t i) { return qw_backends_at(i); }

const char *qw_backend_name(size_t i) { return backend_at(i) ? backend_at(i)->name : NULL; }

const char *qw_backend_description(size_t i) {
    return backend_at(i) ? backend_at(i)->description : NULL;
}

const char *qw_backend_default_format(size_t i) {
    return backend_at(i) ? backend_at(i)->default_format : NULL;
}

int qw_backend_find(const char *name) {
    for (size_t i = 0; name && i < qw_backends_count(); i++) {
        if (qw_strcasecmp(qw_backends_at(i)->name, name) == 0) return (int)i;
    }
    return -1;
}

size_t qw_format_count(size_t b) { return backend_at(b) ? backend_at(b)->format_count() : 0; }

const char *qw_format_name(size_t b, size_t f) {
    return f < qw_format_count(b) ? backend_at(b)->format_name(f) : NULL;
}

int qw_format_find(size_t b, const char *name) {
    return backend_at(b) && name ? backend_at(b)->format_find(name) : -1;
}

const char *qw_format_description(size_t b, size_t f) {
    return f < qw_format_count(b) ? backend_at(b)->format_description(f) : NULL;
}

/* A backend's own options, then those every backend takes. */
static const qw_option_spec *option_at(size_t b, size_t o) {
    const qw_backend_ops *ops = backend_at(b);
    if (!ops) return NULL;
    if (o < ops->n_options) return &ops->options[o];
    size_t common = o - ops->n_options;
    return common < qw_n_common_options ? &qw_common_options[common] : NULL;
}

size_t qw_option_count(size_t b) {
    return backend_at(b) ? backend_at(b)->n_options + qw_n_common_options : 0;
}
const char *qw_option_name(size_t b, size_t o) { return option_at(b, o) ? option_at(b, o)->name : NULL; }

qw_option_type qw_option_type_of(size_t b, size_t o) {
    return option_at(b, o) ? option_at(b, o)->type : QW_OPTION_STRING;
}

qw_option_scope qw_option_scope_of(size_t b, size_t o) {
    return option_at(b, o) ? option_at(b, o)->scope : QW_SCOPE_BOTH;
}

const char *qw_option_description(size_t b, size_t o) {
    return option_at(b, o) ? option_at(b, o)->description : NULL;
}

/* ---- system info ---------------------------------------------------------------------------- */

qw_status qw_system_info_json(char **out, qw_error *err) {
    *out = NULL;
    json_t *root = json_object();
    json_t *cpu = json_object();
    json_t *features = json_array();
    json_t *backends = json_array();
    if (!root || !cpu || !features || !backends) {
        json_decref(root);
        json_decref(cpu);
        json_decref(features);
        json_decref(backends);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    static const struct {
        const char *name;
        int present;
    } x86[] = {
        {"sse4.2", 0}, {"avx", 0}, {"avx2", 0}, {"fma", 0}, {"f16c", 0}, {"avx512f", 0},
    };
    int present[] = {
        __builtin_cpu_supports("sse4.2"), __builtin_cpu_supports("avx"),
        __builtin_cpu_supports("avx2"),   __builtin_cpu_supports("fma"),
        qw_cpu_has_f16c(),                __builtin_cpu_supports("avx512f"),
    };
    for (size_t i = 0; i < sizeof x86 / sizeof x86[0]; i++) {
        if (present[i]) json_array_append_new(features, json_string(x86[i].name));
    }
    json_object_set_new(cpu, "arch", json_string("x86_64"));
#else
    json_object_set_new(cpu, "arch", json_string("other"));
#endif
    json_object_set_new(cpu, "features", features);
    json_object_set_new(cpu, "threads", json_integer(qw_cpu_count()));
    json_object_set_new(root, "version", json_string(qw_version()));
    json_object_set_new(root, "cpu", cpu);
    json_object_set_new(root, "kernels", json_string(qw_qtype_kernels()));
    json_object_set_new(root, "cuda", json_false());
    json_object_set_new(root, "hub", json_true());
    for (size_t i = 0; i < qw_backends_count(); i++) {
        json_array_append_new(backends, json_string(qw_backends_at(i)->name));
    }
    json_object_set_new(root, "backends", backends);
    *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *out ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
}

/* ---- quantizer ------------------------------------------------------------------------------ */

qw_status qw_quantizer_create(const char *backend, const char *model_path,
                              const char *output_dir, const char *const *keys,
                              const char *const *values, size_t n_options,
                              qw_progress_fn progress, qw_log_fn log, void *user,
                              qw_quantizer **out, qw_error *err) {
    if (!out) return qw_fail(err, QW_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    qw_error_clear(err);
    int b = qw_backend_find(backend);
    if (b < 0) {
        qw_buf names = {0};
        for (size_t i = 0; i < qw_backends_count(); i++) {
            qw_buf_printf(&names, "%s%s", i ? ", " : "", qw_backends_at(i)->name);
        }
        qw_status st = qw_fail(err, QW_ERR_UNKNOWN_BACKEND,
                               "unknown backend \"%s\" (this build has: %s)",
                               backend ? backend : "(null)", names.data ? names.data : "");
        qw_buf_free(&names);
        return st;
    }
    if (n_options && (!keys || !values)) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "option arrays are NULL");
    }
    qw_quantizer *q = qw_calloc(1, sizeof *q);
    if (!q) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    q->backend = qw_backends_at((size_t)b);
    q->reporter.log = log;
    q->reporter.progress = progress;
    q->reporter.user = user;
    q->reporter.logger = q->backend->logger;
    q->reporter.cancel = &q->cancel;
    q->output_dir = qw_strdup(output_dir && *output_dir ? output_dir : DEFAULT_OUTPUT_DIR);
    qw_status st = q->output_dir ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) {
        st = qw_options_add(&q->options, q->backend->options, q->backend->n_options,
                            q->backend->name, QW_SCOPE_INIT, keys, values, n_options, err);
    }
    if (st == QW_OK) st = qw_progress(&q->reporter, 0, "loading", model_path, err);
    if (st == QW_OK) {
        st = qw_model_open_any(model_path, qw_options_get(&q->options, "token"), &q->reporter,
                               &q->model, err);
    }
    if (st == QW_OK) st = q->backend->check_model(q->model, err);
    if (st != QW_OK) {
        qw_quantizer_free(q);
        return st;
    }
    q->reporter.last_percent = 0; /* each run reports from 0 again */
    *out = q;
    return QW_OK;
}

void qw_quantizer_free(qw_quantizer *q) {
    if (!q) return;
    qw_model_close(q->model);
    qw_options_free(&q->options);
    json_decref(q->result.details);
    qw_free(q->output_dir);
    qw_free(q->output_path);
    qw_free(q->format);
    qw_free(q);
}

void qw_quantizer_cancel(qw_quantizer *q) {
    if (q) __atomic_store_n(&q->cancel, 1, __ATOMIC_SEQ_CST);
}

const char *qw_quantizer_output_path(const qw_quantizer *q) {
    return q && q->has_result ? q->output_path : NULL;
}

/* Merges this call's overrides into a copy of the create-time options. */
static qw_status run_options(qw_quantizer *q, const char *const *keys, const char *const *values,
                             size_t n, qw_options *out, qw_error *err) {
    if (n && (!keys || !values)) return qw_fail(err, QW_ERR_INVALID_ARG, "option arrays are NULL");
    QW_TRY(qw_options_copy(out, &q->options, err));
    return qw_options_add(out, q->backend->options, q->backend->n_options, q->backend->name,
                          QW_SCOPE_RUN, keys, values, n, err);
}

static void plan_free_contents(qw_plan *plan) {
    if (plan->priv_free) plan->priv_free(plan->priv);
    for (size_t i = 0; i < plan->n_strings; i++) qw_free(plan->strings[i]);
    qw_free(plan->strings);
    qw_free(plan->tensors);
    qw_free(plan->output_path);
    qw_free(plan->format);
}

void qw_plan_free(qw_plan *plan) {
    if (!plan) return;
    plan_free_contents(plan);
    qw_free(plan);
}

size_t qw_plan_count(const qw_plan *plan) { return plan ? plan->n_tensors : 0; }

const qw_plan_tensor *qw_plan_get(const qw_plan *plan, size_t i) {
    return plan && i < plan->n_tensors ? &plan->tensors[i] : NULL;
}

const char *qw_plan_output_path(const qw_plan *plan) { return plan ? plan->output_path : NULL; }

uint64_t qw_plan_output_bytes(const qw_plan *plan) { return plan ? plan->output_bytes : 0; }

static qw_status make_plan(qw_quantizer *q, const char *format, const qw_options *opts,
                           qw_pool *pool, qw_plan **out, qw_error *err) {
    *out = NULL;
    if (!format || !*format) format = q->backend->default_format;
    qw_plan *plan = qw_calloc(1, sizeof *plan);
    if (!plan) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_run_context ctx = {q->model, q->output_dir, opts, &q->reporter, pool};
    qw_status st = q->backend->plan(&ctx, format, plan, err);
    if (st != QW_OK) {
        qw_plan_free(plan);
        return st;
    }
    *out = plan;
    return QW_OK;
}

qw_status qw_quantizer_plan(qw_quantizer *q, const char *format, const char *const *keys,
                            const char *const *values, size_t n, qw_plan **out, qw_error *err) {
    if (!q || !out) return qw_fail(err, QW_ERR_INVALID_ARG, "quantizer or out is NULL");
    qw_error_clear(err);
    qw_options opts = {0};
    qw_status st = run_options(q, keys, values, n, &opts, err);
    if (st == QW_OK) st = make_plan(q, format, &opts, NULL, out, err);
    qw_options_free(&opts);
    return st;
}

qw_status qw_quantizer_run(qw_quantizer *q, const char *format, const char *const *keys,
                           const char *const *values, size_t n, qw_error *err) {
    if (!q) return qw_fail(err, QW_ERR_INVALID_ARG, "quantizer is NULL");
    qw_error_clear(err);
    __atomic_store_n(&q->cancel, 0, __ATOMIC_SEQ_CST);
    q->reporter.cancelled = false;
    q->reporter.last_percent = 0;
    double start = qw_now_seconds();
    qw_options opts = {0};
    qw_pool *pool = NULL;
    qw_plan *plan = NULL;
    qw_run_result result = {0};
    qw_status st = run_options(q, keys, values, n, &opts, err);
    if (st == QW_OK) {
        int64_t threads = qw_options_get_int(&opts, "threads", 0);
        if (threads < 0 || threads > 1024) {
            st = qw_fail_at(err, QW_ERR_BAD_OPTION, "threads", -1,
                            "option \"threads\" must be between 0 (all CPUs) and 1024, got %lld",
                            (long long)threads);
        } else {
            st = qw_pool_create(threads ? (int)threads : qw_cpu_count(), &pool, err);
        }
    }
    if (st == QW_OK) st = qw_progress(&q->reporter, 1, "planning", format, err);
    if (st == QW_OK) st = make_plan(q, format, &opts, pool, &plan, err);
    if (st == QW_OK) st = qw_mkdir_p(q->output_dir, err);
    if (st == QW_OK) {
        qw_log(&q->reporter, QW_LOG_INFO, "quantizing %s to %s (%zu tensors, %d threads) -> %s",
               q->model->path, plan->format, plan->n_tensors, qw_pool_threads(pool),
               plan->output_path);
        qw_run_context ctx = {q->model, q->output_dir, &opts, &q->reporter, pool};
        st = q->backend->execute(&ctx, plan, &result, err);
        if (st != QW_OK) {
            json_decref(result.details);
            result.details = NULL;
        }
    }
    if (st == QW_OK) {
        char *path = qw_strdup(plan->output_path);
        char *format_copy = qw_strdup(plan->format);
        if (!path || !format_copy) {
            qw_free(path);
            qw_free(format_copy);
            json_decref(result.details);
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        } else {
            qw_free(q->output_path);
            qw_free(q->format);
            q->output_path = path;
            q->format = format_copy;
            json_decref(q->result.details);
            q->result = result;
            q->seconds = qw_now_seconds() - start;
            q->has_result = true;
            qw_log(&q->reporter, QW_LOG_INFO, "wrote %s (%.2f MiB) in %.2f s", path,
                   (double)result.file_size / (1024.0 * 1024.0), q->seconds);
            st = qw_progress(&q->reporter, 100, "done", path, err);
            if (st == QW_ERR_CANCELLED) st = QW_OK; /* the file is complete; nothing to undo */
        }
    }
    if (st != QW_OK) {
        qw_log(&q->reporter, QW_LOG_ERROR, "%s", err ? err->message : qw_status_message(st));
    }
    qw_plan_free(plan);
    qw_pool_free(pool);
    qw_options_free(&opts);
    return st;
}

qw_status qw_quantizer_info_json(const qw_quantizer *q, char **out, qw_error *err) {
    if (!q || !out) return qw_fail(err, QW_ERR_INVALID_ARG, "quantizer or out is NULL");
    *out = NULL;
    const qw_model *m = q->model;
    json_t *root = json_object();
    json_t *types = json_object();
    if (!root || !types) {
        json_decref(root);
        json_decref(types);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    json_object_set_new(root, "source_model", json_string(m->path));
    json_object_set_new(root, "quantized_model",
                        q->has_result ? json_string(q->output_path) : json_null());
    json_object_set_new(root, "backend", json_string(q->backend->name));
    json_object_set_new(root, "file_size",
                        q->has_result ? json_integer((json_int_t)q->result.file_size)
                                      : json_null());
    json_object_set_new(root, "input_format", json_string(m->input_format));
    json_object_set_new(root, "architecture", json_string(m->arch_name));
    json_object_set_new(root, "format", q->has_result ? json_string(q->format) : json_null());
    json_object_set_new(root, "n_params", json_integer((json_int_t)m->n_params));
    json_object_set_new(root, "n_tensors", json_integer((json_int_t)m->n_tensors));
    if (q->has_result) {
        for (int t = 0; t < QW_QTYPE_COUNT; t++) {
            if (q->result.type_counts[t]) {
                json_object_set_new(types, qw_qtype_name((qw_qtype)t),
                                    json_integer((json_int_t)q->result.type_counts[t]));
            }
        }
        double bpw = q->result.n_elements
                         ? 8.0 * (double)q->result.data_bytes / (double)q->result.n_elements
                         : 0.0;
        json_object_set_new(root, "tensor_types", types);
        json_object_set_new(root, "bits_per_weight", json_real(bpw));
        json_object_set_new(root, "seconds", json_real(q->seconds));
        if (q->result.details) json_object_update(root, q->result.details);
    } else {
        json_decref(types);
        json_object_set_new(root, "tensor_types", json_null());
        json_object_set_new(root, "bits_per_weight", json_null());
        json_object_set_new(root, "seconds", json_null());
    }
    *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *out ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
}
