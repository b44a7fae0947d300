/*
 * qwodel — the command. Uses only the public header.
 *
 *   qwodel quantize MODEL_PATH [-o DIR] [-b BACKEND] [-f FORMAT] [options]
 *   qwodel list-formats [BACKEND]
 *   qwodel list-backends
 *   qwodel check
 *   qwodel --version
 *
 * Results go to stdout (the output path, or JSON with --json); progress and logs go to stderr.
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "qwodel.h"

#define EXIT_OK 0
#define EXIT_FAILURE_ 1
#define EXIT_USAGE 2
#define MAX_OPTIONS 64

static const char *program = "qwodel";

__attribute__((format(printf, 1, 2))) static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s --help'.\n", program);
    va_end(ap);
}

static void print_help(FILE *f) {
    fprintf(f,
            "usage: %s <command> [arguments]\n"
            "\n"
            "Quantize language models for llama.cpp (gguf) and other runtimes.\n"
            "\n"
            "commands:\n"
            "  quantize MODEL_PATH [-o DIR] [-b BACKEND] [-f FORMAT] [options]\n"
            "      MODEL_PATH is a HuggingFace model directory, a .gguf file, or a Hub\n"
            "      model ID (org/name[@revision], downloaded into the HF cache; --token or\n"
            "      HF_TOKEN for gated/private ones) (also -m/--model MODEL_PATH).\n"
            "      -o, --output-dir DIR   where to write (default ./quantized_models)\n"
            "      -b, --backend NAME     backend (inferred from the format when unique)\n"
            "      -f, --format NAME      format (default: the backend's default)\n"
            "      --dry-run              print the per-tensor plan, write nothing\n"
            "      --json                 print model info (or the plan) as JSON on stdout\n"
            "      --threads N            worker threads (default: all CPUs)\n"
            "      -v, --verbose          more log output on stderr (-vv for debug)\n"
            "      -q, --quiet            no progress bar\n"
            "      Every backend option is also a flag: --name-with-dashes VALUE.\n"
            "  list-formats [BACKEND]     formats of one backend, or of all (also -b BACKEND)\n"
            "  list-backends              backends in this build\n"
            "  check                      what this build and machine can do\n"
            "  --version                  print the version\n",
            program);
    for (size_t b = 0; b < qw_backend_count(); b++) {
        fprintf(f, "\n%s backend options:\n", qw_backend_name(b));
        for (size_t o = 0; o < qw_option_count(b); o++) {
            char flag[96];
            snprintf(flag, sizeof flag, "--%s", qw_option_name(b, o));
            for (char *p = flag + 2; *p; p++) {
                if (*p == '_') *p = '-';
            }
            fprintf(f, "  %-26s %s\n", flag, qw_option_description(b, o));
        }
    }
}

/* ---- list commands -------------------------------------------------------------------------- */

static int cmd_list_backends(void) {
    for (size_t b = 0; b < qw_backend_count(); b++) {
        printf("%-8s %s\n", qw_backend_name(b), qw_backend_description(b));
    }
    return EXIT_OK;
}

static int cmd_list_formats(int argc, char **argv) {
    const char *backend = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-b") == 0 || strcmp(argv[i], "--backend") == 0) {
            if (i + 1 >= argc) {
                usage_error("%s needs a backend name", argv[i]);
                return EXIT_USAGE;
            }
            backend = argv[++i];
        } else if (strncmp(argv[i], "--backend=", 10) == 0) {
            backend = argv[i] + 10;
        } else if (argv[i][0] != '-' && !backend) {
            backend = argv[i];
        } else {
            usage_error("list-formats: unexpected argument '%s'", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (backend && qw_backend_find(backend) < 0) {
        fprintf(stderr, "%s: unknown backend '%s' (see '%s list-backends')\n", program, backend,
                program);
        return EXIT_FAILURE_;
    }
    for (size_t b = 0; b < qw_backend_count(); b++) {
        if (backend && (int)b != qw_backend_find(backend)) continue;
        printf("%s:\n", qw_backend_name(b));
        for (size_t f = 0; f < qw_format_count(b); f++) {
            printf("  %-10s %s%s\n", qw_format_name(b, f), qw_format_description(b, f),
                   strcasecmp(qw_format_name(b, f), qw_backend_default_format(b)) == 0
                       ? " (default)"
                       : "");
        }
    }
    return EXIT_OK;
}

static int cmd_check(void) {
    char *info = NULL;
    qw_error err;
    if (qw_system_info_json(&info, &err) != QW_OK) {
        fprintf(stderr, "%s: %s\n", program, err.message);
        return EXIT_FAILURE_;
    }
    printf("%s\n", info);
    qw_string_free(info);
    return EXIT_OK;
}

/* ---- quantize ------------------------------------------------------------------------------- */

typedef struct cli_state {
    int verbosity; /* 0 warnings, 1 info, 2 debug */
    int quiet;
    int tty;
    int bar_shown;
    int last_download_tenth; /* without a terminal, downloads print one line per 10% */
} cli_state;

static volatile sig_atomic_t interrupted;
static qw_quantizer *volatile active_quantizer;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
    if (active_quantizer) qw_quantizer_cancel(active_quantizer);
}

static void clear_bar(cli_state *s) {
    if (s->bar_shown && s->tty) fprintf(stderr, "\r\033[K");
    s->bar_shown = 0;
}

static void on_log(void *user, int level, const char *logger, const char *message) {
    cli_state *s = user;
    int threshold = s->verbosity >= 2 ? QW_LOG_DEBUG : s->verbosity == 1 ? QW_LOG_INFO
                                                                          : QW_LOG_WARNING;
    if (level < threshold) return;
    const char *name = level >= QW_LOG_ERROR     ? "error"
                       : level >= QW_LOG_WARNING ? "warning"
                       : level >= QW_LOG_INFO    ? "info"
                                                 : "debug";
    clear_bar(s);
    fprintf(stderr, "%s: %s: %s\n", logger, name, message);
}

static int on_progress(void *user, int percent, const char *stage, const char *message) {
    cli_state *s = user;
    if (s->quiet) return interrupted;
    if (s->tty) {
        char bar[31];
        int filled = percent * 30 / 100;
        for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K[%s] %3d%% %-10s %.60s", bar, percent, stage, message);
        s->bar_shown = 1;
        if (percent >= 100) clear_bar(s);
    } else if (strcmp(stage, "downloading") == 0) { /* bytes, e.g. "12.0 / 40.0 MiB file" */
        if (percent / 10 != s->last_download_tenth || percent >= 100) {
            s->last_download_tenth = percent / 10;
            fprintf(stderr, "%3d%% %s %s\n", percent, stage, message);
        }
    } else if (strcmp(stage, "quantizing") != 0 || s->verbosity > 0) {
        fprintf(stderr, "%3d%% %s %s\n", percent, stage, message);
    }
    fflush(stderr);
    return interrupted;
}

/* Maps "--calibration-dataset" to the option key "calibration_dataset" of backend b, or NULL. */
static const char *backend_option_for_flag(size_t b, const char *flag, qw_option_type *type) {
    char key[96];
    size_t n = strlen(flag);
    if (n >= sizeof key) return NULL;
    for (size_t i = 0; i <= n; i++) key[i] = flag[i] == '-' ? '_' : flag[i];
    for (size_t o = 0; o < qw_option_count(b); o++) {
        if (strcmp(qw_option_name(b, o), key) == 0) {
            *type = qw_option_type_of(b, o);
            return qw_option_name(b, o);
        }
    }
    return NULL;
}

/* Prints s as a JSON string literal (names come from model files and may hold anything). */
static void print_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void print_plan(const qw_plan *plan, int json) {
    if (json) {
        printf("{\n  \"output\": ");
        print_json_string(qw_plan_output_path(plan));
        printf(",\n  \"output_bytes\": %llu,\n  \"tensors\": [\n",
               (unsigned long long)qw_plan_output_bytes(plan));
        for (size_t i = 0; i < qw_plan_count(plan); i++) {
            const qw_plan_tensor *t = qw_plan_get(plan, i);
            const char *fields[][2] = {{"name", t->name}, {"source", t->source_name},
                                       {"source_type", t->source_type}, {"type", t->type},
                                       {"transform", t->transform}};
            printf("    {");
            for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
                printf("\"%s\": ", fields[f][0]);
                print_json_string(fields[f][1]);
                printf(", ");
            }
            printf("\"shape\": [");
            for (int d = 0; d < t->n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
            printf("], \"bytes\": %llu}%s\n", (unsigned long long)t->bytes,
                   i + 1 < qw_plan_count(plan) ? "," : "");
        }
        printf("  ]\n}\n");
        return;
    }
    printf("%-5s %-34s %-8s %-8s %-22s %12s  %s\n", "#", "tensor", "from", "to", "shape",
           "bytes", "transform");
    for (size_t i = 0; i < qw_plan_count(plan); i++) {
        const qw_plan_tensor *t = qw_plan_get(plan, i);
        char shape[64] = "";
        size_t used = 0;
        for (int d = 0; d < t->n_dims && used < sizeof shape; d++) {
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%lld", d ? " x " : "",
                                     (long long)t->shape[d]);
        }
        printf("%-5zu %-34s %-8s %-8s %-22s %12llu  %s\n", i + 1, t->name, t->source_type,
               t->type, shape, (unsigned long long)t->bytes, t->transform);
    }
    printf("output: %s (%.2f MiB)\n", qw_plan_output_path(plan),
           (double)qw_plan_output_bytes(plan) / (1024.0 * 1024.0));
}

/* The backend of a format (or alias) when exactly one backend has it; -1 when none, -2 when
 * several. */
static int backend_for_format(const char *format) {
    int found = -1;
    for (size_t b = 0; b < qw_backend_count(); b++) {
        if (qw_format_find(b, format) < 0) continue;
        if (found >= 0) return -2;
        found = (int)b;
    }
    return found;
}

/* Whether `name` (as typed, with dashes) is a boolean option of some backend: before the model
 * path is known such a flag takes a value only when the next argument is a boolean word, so
 * `--pure MODEL` keeps MODEL; after it, the next argument is the flag's value and a bad one is
 * reported against the option rather than as a stray argument. */
static int is_bool_flag(const char *name) {
    char key[96];
    size_t n = strlen(name);
    if (n >= sizeof key) return 0;
    for (size_t i = 0; i <= n; i++) key[i] = name[i] == '-' ? '_' : name[i];
    for (size_t b = 0; b < qw_backend_count(); b++) {
        for (size_t o = 0; o < qw_option_count(b); o++) {
            if (strcmp(qw_option_name(b, o), key) == 0) {
                return qw_option_type_of(b, o) == QW_OPTION_BOOL;
            }
        }
    }
    return 0;
}

/* `-o`, `--json`, ... but not `-1` or `-0.5`: a value may be a negative number. */
static int looks_like_flag(const char *s) {
    return s[0] == '-' && s[1] != '\0' && !(s[1] >= '0' && s[1] <= '9') && s[1] != '.';
}

static int is_bool_word(const char *s) {
    static const char *const words[] = {"1", "0", "true", "false", "yes", "no", "on", "off"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasecmp(s, words[i]) == 0) return 1;
    }
    return 0;
}

/* A quantization allocates and frees the same large buffers hundreds of times: a block's
 * activations, each AWQ candidate's intermediate products. glibc hands freed memory back to the
 * kernel (a freed mapping over its adaptive threshold, or more than twice that free at the top
 * of its heap), and the kernel zeroes it again when it is next touched: 1.4 million page faults
 * and 2-3 s of kernel time in a 30 s AWQ run of SmolLM2-135M (bench/bench_awq.py). A
 * command that runs one job and exits keeps up to TRIM_KEEP of freed memory instead; buffers
 * over MMAP_OVER (a 7B model's weights) are still mapped apiece, so their memory goes back. */
static void keep_freed_memory(void) {
#ifdef __GLIBC__
    enum { MMAP_OVER = 64 << 20, TRIM_KEEP = 512 << 20 };
    mallopt(M_MMAP_THRESHOLD, MMAP_OVER);
    mallopt(M_TRIM_THRESHOLD, TRIM_KEEP);
#endif
}

static int cmd_quantize(int argc, char **argv) {
    keep_freed_memory();
    const char *model = NULL, *output_dir = NULL, *backend = NULL, *format = NULL;
    int dry_run = 0, json = 0;
    cli_state state = {0};
    state.last_download_tenth = -1;
    state.tty = isatty(STDERR_FILENO);
    const char *pending_flags[MAX_OPTIONS];
    const char *pending_values[MAX_OPTIONS];
    char flag_store[MAX_OPTIONS][128]; /* "--name=value" flags, split */
    size_t n_pending = 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *inline_value = NULL;
        char flag[128];
        if (strncmp(a, "--", 2) == 0 && strchr(a, '=')) {
            size_t n = (size_t)(strchr(a, '=') - a);
            if (n >= sizeof flag) n = sizeof flag - 1;
            memcpy(flag, a, n);
            flag[n] = '\0';
            inline_value = strchr(a, '=') + 1;
            a = flag;
        }
#define TAKE_VALUE(dst)                                                                            \
    do {                                                                                           \
        if (inline_value) {                                                                        \
            dst = inline_value;                                                                    \
        } else if (i + 1 < argc) {                                                                 \
            dst = argv[++i];                                                                       \
        } else {                                                                                   \
            usage_error("%s needs a value", a);                                                    \
            return EXIT_USAGE;                                                                     \
        }                                                                                          \
    } while (0)
        if (strcmp(a, "-o") == 0 || strcmp(a, "--output-dir") == 0 || strcmp(a, "--output") == 0) {
            TAKE_VALUE(output_dir);
        } else if (strcmp(a, "-b") == 0 || strcmp(a, "--backend") == 0) {
            TAKE_VALUE(backend);
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--format") == 0) {
            TAKE_VALUE(format);
        } else if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            TAKE_VALUE(model);
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            state.verbosity++;
        } else if (strcmp(a, "-vv") == 0) {
            state.verbosity += 2;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            state.quiet = 1;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry_run = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(stdout);
            return EXIT_OK;
        } else if (strncmp(a, "--", 2) == 0) {
            if (n_pending == MAX_OPTIONS) {
                usage_error("too many options");
                return EXIT_USAGE;
            }
            /* a backend option; resolved once the backend is known */
            snprintf(flag_store[n_pending], sizeof flag_store[n_pending], "%s", a + 2);
            pending_flags[n_pending] = flag_store[n_pending];
            pending_values[n_pending] = inline_value;
            if (!inline_value && i + 1 < argc && !looks_like_flag(argv[i + 1]) &&
                (model || !is_bool_flag(a + 2) || is_bool_word(argv[i + 1]))) {
                pending_values[n_pending] = argv[++i];
            }
            n_pending++;
        } else if (a[0] == '-' && a[1]) {
            usage_error("unknown option '%s'", a);
            return EXIT_USAGE;
        } else if (!model) {
            model = a;
        } else {
            usage_error("unexpected argument '%s' (the model path is already '%s')", a, model);
            return EXIT_USAGE;
        }
#undef TAKE_VALUE
    }
    if (!model) {
        usage_error("quantize needs a MODEL_PATH");
        return EXIT_USAGE;
    }
    int b;
    if (backend) {
        b = qw_backend_find(backend);
        if (b < 0) {
            usage_error("unknown backend '%s' (see '%s list-backends')", backend, program);
            return EXIT_USAGE;
        }
    } else if (format) {
        b = backend_for_format(format);
        if (b == -2) {
            usage_error("format '%s' exists in several backends: choose one with -b", format);
            return EXIT_USAGE;
        }
        if (b < 0) {
            usage_error("no backend has format '%s' (see '%s list-formats')", format, program);
            return EXIT_USAGE;
        }
    } else {
        b = 0;
    }
    if (!format) format = qw_backend_default_format((size_t)b);

    const char *keys[MAX_OPTIONS], *values[MAX_OPTIONS];
    static char joined_store[MAX_OPTIONS][4096];
    size_t n_options = 0;
    for (size_t i = 0; i < n_pending; i++) {
        qw_option_type type;
        const char *key = backend_option_for_flag((size_t)b, pending_flags[i], &type);
        if (!key) {
            usage_error("unknown option '--%s' for the %s backend", pending_flags[i],
                        qw_backend_name((size_t)b));
            return EXIT_USAGE;
        }
        const char *value = pending_values[i];
        if (!value) {
            if (type != QW_OPTION_BOOL) {
                usage_error("--%s needs a value", pending_flags[i]);
                return EXIT_USAGE;
            }
            value = "true";
        }
        /* a list option given twice (--tensor-type A=x --tensor-type B=y) accumulates */
        size_t k = 0;
        while (k < n_options && strcmp(keys[k], key) != 0) k++;
        if (k < n_options && type == QW_OPTION_LIST) {
            size_t len = strlen(joined_store[k]);
            if (len + 1 + strlen(value) >= sizeof joined_store[k]) {
                usage_error("--%s: the values are too long", pending_flags[i]);
                return EXIT_USAGE;
            }
            snprintf(joined_store[k] + len, sizeof joined_store[k] - len, ",%s", value);
            continue;
        }
        if (k < n_options) {
            values[k] = value; /* a later value of a plain option wins */
            continue;
        }
        snprintf(joined_store[n_options], sizeof joined_store[n_options], "%s", value);
        keys[n_options] = key;
        values[n_options] = type == QW_OPTION_LIST ? joined_store[n_options] : value;
        n_options++;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Past a file-size limit (ulimit -f) a write then fails with EFBIG, which the run reports and
     * cleans up after, instead of the signal killing it with its temporary output left behind. */
    signal(SIGXFSZ, SIG_IGN);

    qw_error err;
    qw_quantizer *q = NULL;
    qw_status st = qw_quantizer_create(qw_backend_name((size_t)b), model, output_dir, keys, values,
                                       n_options, on_progress, on_log, &state, &q, &err);
    if (st != QW_OK) {
        clear_bar(&state);
        fprintf(stderr, "%s: error: %s\n", program, err.message);
        return st == QW_ERR_BAD_OPTION ? EXIT_USAGE : EXIT_FAILURE_;
    }
    active_quantizer = q;
    int rc = EXIT_OK;
    if (dry_run) {
        qw_plan *plan = NULL;
        st = qw_quantizer_plan(q, format, NULL, NULL, 0, &plan, &err);
        if (st == QW_OK) print_plan(plan, json);
        qw_plan_free(plan);
    } else {
        st = qw_quantizer_run(q, format, NULL, NULL, 0, &err);
        clear_bar(&state);
        if (st == QW_OK) {
            if (json) {
                char *info = NULL;
                st = qw_quantizer_info_json(q, &info, &err);
                if (st == QW_OK) printf("%s\n", info);
                qw_string_free(info);
            } else {
                printf("%s\n", qw_quantizer_output_path(q));
            }
        }
    }
    active_quantizer = NULL;
    if (st != QW_OK) {
        clear_bar(&state);
        fprintf(stderr, "%s: error: %s\n", program, err.message);
        rc = st == QW_ERR_BAD_OPTION ? EXIT_USAGE : EXIT_FAILURE_;
    }
    qw_quantizer_free(q);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        printf("qwodel %s\n", qw_version());
        return EXIT_OK;
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        print_help(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "quantize") == 0) return cmd_quantize(argc - 2, argv + 2);
    if (strcmp(cmd, "list-formats") == 0) return cmd_list_formats(argc - 2, argv + 2);
    if (strcmp(cmd, "list-backends") == 0) return cmd_list_backends();
    if (strcmp(cmd, "check") == 0) return cmd_check();
    usage_error("unknown command '%s'", cmd);
    return EXIT_USAGE;
}
