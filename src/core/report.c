/* Logging and progress: thin, so the library's callers decide where messages go. */
#include <stdio.h>

#include "core.h"

void qw_log(const qw_reporter *r, qw_log_level level, const char *fmt, ...) {
    if (!r || !r->log) return;
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    r->log(r->user, (int)level, r->logger ? r->logger : "qwodel", message);
}

qw_status qw_check_cancel(const qw_reporter *r, qw_error *err) {
    if (r && (r->cancelled || (r->cancel && *r->cancel))) {
        return qw_fail(err, QW_ERR_CANCELLED, "cancelled by the caller");
    }
    return QW_OK;
}

qw_status qw_progress(qw_reporter *r, int percent, const char *stage, const char *message,
                      qw_error *err) {
    if (!r) return QW_OK;
    if (percent < r->last_percent) percent = r->last_percent;
    if (percent > 100) percent = 100;
    r->last_percent = percent;
    if (r->progress && !r->cancelled) {
        if (r->progress(r->user, percent, stage, message ? message : "") != 0) r->cancelled = true;
    }
    return qw_check_cancel(r, err);
}
