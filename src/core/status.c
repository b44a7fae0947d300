/* Status names, messages and classes, all generated from QW_STATUS_MAP; error filling. */
#include <stdio.h>
#include <string.h>

#include "core.h"

typedef struct status_row {
    qw_status status;
    const char *name;
    const char *message;
    qw_status_class cls;
} status_row;

static const status_row status_table[] = {
#define QW_STATUS_ROW_(name, value, cls, msg) {name, #name, msg, cls},
    QW_STATUS_MAP(QW_STATUS_ROW_)
#undef QW_STATUS_ROW_
};

static const status_row *status_find(qw_status status) {
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++) {
        if (status_table[i].status == status) return &status_table[i];
    }
    return NULL;
}

const char *qw_status_name(qw_status status) {
    const status_row *row = status_find(status);
    return row ? row->name : "QW_ERR_UNKNOWN";
}

const char *qw_status_message(qw_status status) {
    const status_row *row = status_find(status);
    return row ? row->message : "unknown status";
}

qw_status_class qw_status_class_of(qw_status status) {
    const status_row *row = status_find(status);
    return row ? row->cls : QW_CLASS_QUANTIZATION;
}

__attribute__((format(printf, 5, 0))) static void error_fill(qw_error *err, qw_status status,
                                                              const char *tensor, int64_t offset,
                                                              const char *fmt, va_list ap) {
    if (!err) return;
    err->status = status;
    err->offset = offset;
    err->tensor[0] = '\0';
    if (tensor) snprintf(err->tensor, sizeof err->tensor, "%s", tensor);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

qw_status qw_fail(qw_error *err, qw_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_fill(err, status, NULL, -1, fmt, ap);
    va_end(ap);
    return status;
}

qw_status qw_fail_at(qw_error *err, qw_status status, const char *tensor, int64_t offset,
                     const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_fill(err, status, tensor, offset, fmt, ap);
    va_end(ap);
    return status;
}

void qw_error_prefix(qw_error *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[sizeof err->message];
    size_t n = strlen(prefix);
    if (n >= sizeof joined) n = sizeof joined - 1;
    memcpy(joined, prefix, n);
    size_t rest = strnlen(err->message, sizeof err->message);
    if (rest > sizeof joined - 1 - n) rest = sizeof joined - 1 - n;
    memcpy(joined + n, err->message, rest);
    joined[n + rest] = '\0';
    memcpy(err->message, joined, sizeof joined);
}

void qw_error_clear(qw_error *err) {
    if (!err) return;
    memset(err, 0, sizeof *err);
    err->offset = -1;
}
