/*
 * qwodel.h — the one public header of libqwodel.
 *
 * qwodel quantizes language models: it reads a HuggingFace model directory, a Hub model ID or a
 * .gguf file and writes it smaller for one backend: gguf (llama.cpp), awq (int4 checkpoints for
 * vLLM and transformers) or coreml (.mlpackage for Apple devices).
 *
 * Conventions that hold for every declaration below:
 *  - Fallible functions return qw_status (QW_OK is 0) and, when `err` is not NULL, fill it with the
 *    status, a message naming the file, tensor or key at fault, and a byte offset where one applies.
 *  - The library never prints and never exits. Bad input is an error, never a crash.
 *  - Strings returned as `const char *` are borrowed: they live as long as the object they came
 *    from (or forever, for static tables). Strings returned through `char **` are owned by the
 *    caller and released with qw_string_free.
 *  - A qw_quantizer is used by one thread at a time. qw_quantizer_cancel is the exception: it may
 *    be called from any thread or from a signal handler.
 *  - Callbacks are invoked only on the thread that called into the library.
 *  - Input files are memory-mapped. The first file mapped installs a SIGBUS handler that turns a
 *    fault in one of the library's own mappings (the file shrank, a read failed) into an error
 *    naming the file, and passes every other SIGBUS to the handler that was installed before.
 *
 * The header is plain C (no inline functions, no macros in signatures) so that ctypes and cffi can
 * bind it directly.
 */
#ifndef QWODEL_H
#define QWODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; everything declared here is exported. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* ---------------------------------------------------------------------------------------------
 * Status codes.
 *
 * One list generates the enum, qw_status_name and qw_status_message. The class column maps a
 * status onto the Python exceptions of the API spec.
 * ------------------------------------------------------------------------------------------- */

typedef enum qw_status_class {
    QW_CLASS_OK = 0,
    QW_CLASS_VALIDATION = 1,           /* ValidationError: bad path, option, architecture, input */
    QW_CLASS_DEPENDENCY = 2,           /* DependencyError: a library or device this build lacks */
    QW_CLASS_FORMAT_NOT_SUPPORTED = 3, /* FormatNotSupportedError */
    QW_CLASS_QUANTIZATION = 4          /* QuantizationError: everything else */
} qw_status_class;

/* X(enum name, value, class, message) */
#define QW_STATUS_MAP(X)                                                                           \
    X(QW_OK, 0, QW_CLASS_OK, "success")                                                            \
    X(QW_ERR_INVALID_ARG, 1, QW_CLASS_VALIDATION, "invalid argument")                              \
    X(QW_ERR_NOT_FOUND, 2, QW_CLASS_VALIDATION, "file or directory not found")                     \
    X(QW_ERR_UNKNOWN_BACKEND, 3, QW_CLASS_VALIDATION, "unknown backend")                           \
    X(QW_ERR_BAD_OPTION, 4, QW_CLASS_VALIDATION, "unknown or invalid option")                      \
    X(QW_ERR_UNSUPPORTED_ARCH, 5, QW_CLASS_VALIDATION, "unsupported model architecture")           \
    X(QW_ERR_CORRUPT, 6, QW_CLASS_VALIDATION, "corrupt or malformed input file")                   \
    X(QW_ERR_UNSUPPORTED_INPUT, 7, QW_CLASS_VALIDATION, "input uses a feature qwodel cannot read") \
    X(QW_ERR_FORMAT_NOT_SUPPORTED, 8, QW_CLASS_FORMAT_NOT_SUPPORTED,                               \
      "format not supported by this backend")                                                      \
    X(QW_ERR_DEPENDENCY, 9, QW_CLASS_DEPENDENCY, "a required library or device is missing")       \
    X(QW_ERR_IO, 10, QW_CLASS_QUANTIZATION, "input/output error")                                  \
    X(QW_ERR_NO_MEMORY, 11, QW_CLASS_QUANTIZATION, "out of memory")                                \
    X(QW_ERR_CANCELLED, 12, QW_CLASS_QUANTIZATION, "cancelled")                                    \
    X(QW_ERR_INTERNAL, 13, QW_CLASS_QUANTIZATION, "internal error")                                \
    X(QW_ERR_ACCESS_DENIED, 14, QW_CLASS_VALIDATION,                                               \
      "access denied: gated or private HuggingFace repository, or a rejected token")               \
    X(QW_ERR_NETWORK, 15, QW_CLASS_QUANTIZATION, "network error, and nothing usable in the cache")

typedef enum qw_status {
#define QW_STATUS_ENUM_(name, value, cls, msg) name = value,
    QW_STATUS_MAP(QW_STATUS_ENUM_)
#undef QW_STATUS_ENUM_
} qw_status;

/* Stable names ("QW_ERR_CORRUPT") and one-line messages; unknown values give "QW_ERR_UNKNOWN". */
const char *qw_status_name(qw_status status);
const char *qw_status_message(qw_status status);
qw_status_class qw_status_class_of(qw_status status);

/* Filled by a failing call when the caller passes one. `message` is complete on its own: it names
 * the file, tensor or key at fault. `tensor` repeats the tensor or key name ("" if none), `offset`
 * the byte offset in the offending file (-1 if none). */
typedef struct qw_error {
    qw_status status;
    int64_t offset;
    char tensor[128];
    char message[1024];
} qw_error;

/* ---------------------------------------------------------------------------------------------
 * Version and build.
 * ------------------------------------------------------------------------------------------- */

const char *qw_version(void);

/* What this build and machine can do, as a JSON object (CPU features, threads, CUDA, Hub,
 * backends). Caller frees with qw_string_free. */
qw_status qw_system_info_json(char **out_json, qw_error *err);

void qw_string_free(char *s);

/* ---------------------------------------------------------------------------------------------
 * Backends, formats and options (static tables; never fail, never allocate).
 * ------------------------------------------------------------------------------------------- */

/* Backends compiled into this build, in a fixed order. A backend that is not built is absent. */
size_t qw_backend_count(void);
const char *qw_backend_name(size_t index);
const char *qw_backend_description(size_t index);
const char *qw_backend_default_format(size_t index);
/* Index of `name` (case-insensitive), or -1. */
int qw_backend_find(const char *name);

size_t qw_format_count(size_t backend_index);
/* Index of a format by name or alias (case-insensitive: "q4_k" finds Q4_K_M), or -1. */
int qw_format_find(size_t backend_index, const char *name);
const char *qw_format_name(size_t backend_index, size_t format_index);
const char *qw_format_description(size_t backend_index, size_t format_index);

typedef enum qw_option_type {
    QW_OPTION_INT = 0,
    QW_OPTION_FLOAT = 1,
    QW_OPTION_BOOL = 2,   /* "true"/"false"/"1"/"0"/"yes"/"no"/"on"/"off" */
    QW_OPTION_STRING = 3,
    QW_OPTION_LIST = 4    /* comma-separated strings */
} qw_option_type;

/* Where an option may be given: to qw_quantizer_create, to qw_quantizer_run, or both. */
typedef enum qw_option_scope {
    QW_SCOPE_INIT = 1,
    QW_SCOPE_RUN = 2,
    QW_SCOPE_BOTH = 3
} qw_option_scope;

size_t qw_option_count(size_t backend_index);
const char *qw_option_name(size_t backend_index, size_t option_index);
qw_option_type qw_option_type_of(size_t backend_index, size_t option_index);
qw_option_scope qw_option_scope_of(size_t backend_index, size_t option_index);
const char *qw_option_description(size_t backend_index, size_t option_index);

/* ---------------------------------------------------------------------------------------------
 * Callbacks.
 * ------------------------------------------------------------------------------------------- */

typedef enum qw_log_level {
    QW_LOG_DEBUG = 10, /* the numbers are Python logging's */
    QW_LOG_INFO = 20,
    QW_LOG_WARNING = 30,
    QW_LOG_ERROR = 40
} qw_log_level;

/* percent is 0..100 and never decreases within one call; stage is a short word ("loading",
 * "planning", "quantizing", "writing", "done"). Return nonzero to cancel the run. */
typedef int (*qw_progress_fn)(void *user, int percent, const char *stage, const char *message);

/* logger is the backend's logger name ("GGUFQuantizer", ...). */
typedef void (*qw_log_fn)(void *user, int level, const char *logger, const char *message);

/* ---------------------------------------------------------------------------------------------
 * Quantizer.
 * ------------------------------------------------------------------------------------------- */

typedef struct qw_quantizer qw_quantizer;

/*
 * Opens the model at `model_path` for `backend`: a HF model directory, a .gguf file, or a
 * HuggingFace Hub model ID ("org/name", "org/name@revision") that is not an existing local path.
 * A Hub ID is downloaded (config, tokenizer and *.safetensors files only) into the standard
 * HuggingFace cache ($HF_HUB_CACHE, else $HF_HOME/hub), reusing whatever is already there; the
 * "token" option, else $HF_TOKEN, else $HF_HOME/token authenticates; HF_HUB_OFFLINE=1 uses the
 * cache only. Progress reports a "downloading" stage meanwhile. Then it
 * validates everything that can be validated before quantizing: the path, the backend, the
 * architecture, the options. Options are string key/value pairs (the spec's **backend_kwargs);
 * keys are the names listed by qw_option_name. `output_dir` NULL means "./quantized_models".
 * `progress` and `log` may be NULL; `user` is passed back to both.
 * On success *out owns the opened model; free it with qw_quantizer_free.
 */
qw_status qw_quantizer_create(const char *backend, const char *model_path,
                                     const char *output_dir, const char *const *option_keys,
                                     const char *const *option_values, size_t n_options,
                                     qw_progress_fn progress, qw_log_fn log, void *user,
                                     qw_quantizer **out, qw_error *err);

void qw_quantizer_free(qw_quantizer *q);

/*
 * Quantizes to `format` (case-insensitive; NULL means the backend's default), with per-call option
 * overrides. The output is written under a temporary name and renamed into place only when
 * complete; on any failure or cancel no output is left behind and an existing file of the same
 * name is untouched. After success qw_quantizer_output_path gives the path written.
 */
qw_status qw_quantizer_run(qw_quantizer *q, const char *format,
                                  const char *const *option_keys,
                                  const char *const *option_values, size_t n_options,
                                  qw_error *err);

/* Path written by the last successful run, or NULL. */
const char *qw_quantizer_output_path(const qw_quantizer *q);

/* Asks a run in progress to stop as soon as possible (it then returns QW_ERR_CANCELLED). Safe to
 * call from any thread and from a signal handler. A later run clears the request. */
void qw_quantizer_cancel(qw_quantizer *q);

/*
 * Model info as a JSON object: the spec's get_model_info keys (source_model, quantized_model,
 * backend, file_size, input_format) plus architecture, format, n_params, n_tensors, tensor_types
 * (type name -> count), bits_per_weight and seconds. Before a run, the output keys are null.
 * Caller frees with qw_string_free.
 */
qw_status qw_quantizer_info_json(const qw_quantizer *q, char **out_json, qw_error *err);

/* ---------------------------------------------------------------------------------------------
 * Plans: what a run would do, tensor by tensor, without doing it.
 * ------------------------------------------------------------------------------------------- */

typedef struct qw_plan qw_plan;

typedef struct qw_plan_tensor {
    const char *name;        /* output tensor name */
    const char *source_name; /* tensor it is made from, in the source model */
    const char *source_type; /* "bf16", "f16", "q4_1", ... */
    const char *type;        /* output type, "q8_0", ... */
    const char *transform;   /* "" or a short description ("permute q heads") */
    int n_dims;
    int64_t shape[4];        /* output shape, row length first (GGUF order) */
    uint64_t bytes;          /* output bytes */
} qw_plan_tensor;

qw_status qw_quantizer_plan(qw_quantizer *q, const char *format,
                                   const char *const *option_keys,
                                   const char *const *option_values, size_t n_options,
                                   qw_plan **out, qw_error *err);
size_t qw_plan_count(const qw_plan *plan);
/* Borrowed; NULL when index is out of range. */
const qw_plan_tensor *qw_plan_get(const qw_plan *plan, size_t index);
/* Path the run would write. */
const char *qw_plan_output_path(const qw_plan *plan);
/* Total output size in bytes (header included). */
uint64_t qw_plan_output_bytes(const qw_plan *plan);
void qw_plan_free(qw_plan *plan);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* QWODEL_H */
