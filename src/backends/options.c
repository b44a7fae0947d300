/* Backend options: string key/value pairs validated against the backend's option table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* Options every backend takes, listed after each backend's own (qw_option_name). */
const qw_option_spec qw_common_options[] = {
    {"token", QW_OPTION_STRING, QW_SCOPE_INIT,
     "HuggingFace token for gated or private Hub models and datasets (default: HF_TOKEN, then "
     "$HF_HOME/token); sent to the Hub only, never logged"},
};
const size_t qw_n_common_options = sizeof qw_common_options / sizeof qw_common_options[0];

static bool parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (qw_strcasecmp(s, yes[i]) == 0) return *out = true, true;
        if (qw_strcasecmp(s, no[i]) == 0) return *out = false, true;
    }
    return false;
}

static bool parse_int(const char *s, int64_t *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s) {
    if (!*s) return false;
    char *end;
    errno = 0;
    (void)strtod(s, &end);
    return !errno && !*end;
}

static const char *type_word(qw_option_type t) {
    static const char *const words[] = {"an integer", "a number", "true or false", "a string",
                                        "a comma-separated list"};
    return (unsigned)t < sizeof words / sizeof words[0] ? words[t] : "?";
}

/* "a, b, c" of the options allowed in `scope`, for messages. */
static void accepted_list(const qw_option_spec *specs, size_t n, qw_option_scope scope, char *buf,
                          size_t bytes) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n + qw_n_common_options; i++) {
        const qw_option_spec *spec = i < n ? &specs[i] : &qw_common_options[i - n];
        if (!(spec->scope & scope)) continue;
        int w = snprintf(buf + used, bytes - used, "%s%s", used ? ", " : "", spec->name);
        if (w < 0 || (size_t)w >= bytes - used) break;
        used += (size_t)w;
    }
    if (!used) snprintf(buf, bytes, "none");
}

static qw_status set_value(qw_options *opts, const char *key, const char *value, qw_error *err) {
    for (size_t i = 0; i < opts->n; i++) {
        if (strcmp(opts->keys[i], key) == 0) {
            char *v = qw_strdup(value);
            if (!v) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            qw_free(opts->values[i]);
            opts->values[i] = v;
            return QW_OK;
        }
    }
    char **k = qw_realloc_array(opts->keys, opts->n + 1, sizeof *k);
    if (k) opts->keys = k;
    char **v = qw_realloc_array(opts->values, opts->n + 1, sizeof *v);
    if (v) opts->values = v;
    if (!k || !v) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    opts->keys[opts->n] = qw_strdup(key);
    opts->values[opts->n] = qw_strdup(value);
    opts->n++;
    if (!opts->keys[opts->n - 1] || !opts->values[opts->n - 1]) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    return QW_OK;
}

qw_status qw_options_add(qw_options *opts, const qw_option_spec *specs, size_t n_specs,
                         const char *backend_name, qw_option_scope scope,
                         const char *const *keys, const char *const *values, size_t n,
                         qw_error *err) {
    char accepted[512];
    for (size_t i = 0; i < n; i++) {
        const char *key = keys[i], *value = values[i];
        if (!key || !value) return qw_fail(err, QW_ERR_BAD_OPTION, "option %zu is NULL", i);
        const qw_option_spec *spec = NULL;
        for (size_t s = 0; s < n_specs; s++) {
            if (strcmp(specs[s].name, key) == 0) spec = &specs[s];
        }
        for (size_t s = 0; !spec && s < qw_n_common_options; s++) {
            if (strcmp(qw_common_options[s].name, key) == 0) spec = &qw_common_options[s];
        }
        if (!spec || !(spec->scope & scope)) {
            accepted_list(specs, n_specs, scope, accepted, sizeof accepted);
            return qw_fail_at(err, QW_ERR_BAD_OPTION, key, -1,
                              "unknown option \"%s\" for the %s backend%s (accepted: %s)", key,
                              backend_name,
                              spec ? (scope == QW_SCOPE_INIT ? " at creation" : " per run") : "",
                              accepted);
        }
        int64_t iv;
        bool bv;
        bool ok = true;
        switch (spec->type) { /* parsing is per value type, not per option */
        case QW_OPTION_INT: ok = parse_int(value, &iv); break;
        case QW_OPTION_FLOAT: ok = parse_float(value); break;
        case QW_OPTION_BOOL: ok = parse_bool(value, &bv); break;
        case QW_OPTION_STRING:
        case QW_OPTION_LIST: ok = true; break;
        }
        if (!ok) {
            return qw_fail_at(err, QW_ERR_BAD_OPTION, key, -1,
                              "option \"%s\" must be %s, got \"%s\"", key, type_word(spec->type),
                              value);
        }
        QW_TRY(set_value(opts, key, value, err));
    }
    return QW_OK;
}

qw_status qw_options_copy(qw_options *dst, const qw_options *src, qw_error *err) {
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < src->n; i++) QW_TRY(set_value(dst, src->keys[i], src->values[i], err));
    return QW_OK;
}

void qw_options_free(qw_options *opts) {
    if (!opts) return;
    for (size_t i = 0; i < opts->n; i++) {
        qw_free(opts->keys[i]);
        qw_free(opts->values[i]);
    }
    qw_free(opts->keys);
    qw_free(opts->values);
    memset(opts, 0, sizeof *opts);
}

const char *qw_options_get(const qw_options *opts, const char *key) {
    for (size_t i = 0; i < opts->n; i++) {
        if (strcmp(opts->keys[i], key) == 0) return opts->values[i];
    }
    return NULL;
}

int64_t qw_options_get_int(const qw_options *opts, const char *key, int64_t fallback) {
    const char *v = qw_options_get(opts, key);
    int64_t out;
    return v && parse_int(v, &out) ? out : fallback;
}

bool qw_options_get_bool(const qw_options *opts, const char *key, bool fallback) {
    const char *v = qw_options_get(opts, key);
    bool out;
    return v && parse_bool(v, &out) ? out : fallback;
}

/* ---- plans ---------------------------------------------------------------------------------- */

const char *qw_plan_intern(qw_plan *plan, const char *s) {
    char **p = qw_realloc_array(plan->strings, plan->n_strings + 1, sizeof *p);
    if (!p) return NULL;
    plan->strings = p;
    char *copy = qw_strdup(s ? s : "");
    if (!copy) return NULL;
    plan->strings[plan->n_strings++] = copy;
    return copy;
}

qw_status qw_plan_push(qw_plan *plan, const qw_plan_tensor *entry, qw_error *err) {
    qw_plan_tensor *p = qw_realloc_array(plan->tensors, plan->n_tensors + 1, sizeof *p);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    plan->tensors = p;
    plan->tensors[plan->n_tensors++] = *entry;
    return QW_OK;
}
