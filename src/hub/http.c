/* The HTTP client of the Hub code, over libcurl's easy interface (so every callback runs on the
 * calling thread, as progress callbacks must). Redirects are followed here rather than by libcurl
 * so that the rule "the token goes to the Hub's origin only" is ours and visible: libcurl's own
 * rule (since 7.58 it drops a custom Authorization header when FOLLOWLOCATION changes host) is
 * not relied on, and CURLOPT_UNRESTRICTED_AUTH stays off. */
#include <curl/curl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hub_private.h"

enum { MAX_REDIRECTS = 10, ATTEMPTS = 3 };

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code;

static void curl_init(void) { curl_init_code = curl_global_init(CURL_GLOBAL_DEFAULT); }

char *qw_url_quote(const char *s, bool keep_slash) {
    qw_buf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("-_.~", *p) || (keep_slash && *p == '/');
        if (!(plain ? qw_buf_append(&b, p, 1) : qw_buf_printf(&b, "%%%02X", *p))) {
            qw_buf_free(&b);
            return NULL;
        }
    }
    if (!b.data && !qw_buf_append(&b, "", 0)) return NULL;
    if (!b.data) return qw_strdup("");
    return b.data;
}

void qw_http_origin(const char *url, char *out, size_t out_size) {
    out[0] = '\0';
    CURLU *u = curl_url();
    if (!u) return;
    char *scheme = NULL, *host = NULL, *port = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        qw_str_lower(scheme);
        qw_str_lower(host);
        snprintf(out, out_size, "%s://%s:%s", scheme, host, port);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/* Resolves a Location value (absolute or relative) against the URL it answered. */
static bool resolve_location(const char *base, const char *location, char *out, size_t out_size) {
    CURLU *u = curl_url();
    if (!u) return false;
    char *full = NULL;
    bool ok = curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
              curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK &&
              strlen(full) < out_size;
    if (ok) snprintf(out, out_size, "%s", full);
    curl_free(full);
    curl_url_cleanup(u);
    return ok;
}

/* The response headers the Hub code reads, as received (trimmed). */
typedef struct raw_headers {
    char repo_commit[64];
    char etag[160];
    char linked_etag[160];
    char linked_size[32];
    char content_length[32];
    char location[2048];
    char error_code[64];
    char error_message[256];
    char content_range[96];
} raw_headers;

static const struct {
    const char *name;
    size_t offset, size;
} header_fields[] = {
#define HEADER_FIELD_(name, field)                                                                 \
    {name, offsetof(raw_headers, field), sizeof ((raw_headers *)0)->field}
    HEADER_FIELD_("X-Repo-Commit", repo_commit),
    HEADER_FIELD_("ETag", etag),
    HEADER_FIELD_("X-Linked-Etag", linked_etag),
    HEADER_FIELD_("X-Linked-Size", linked_size),
    HEADER_FIELD_("Content-Length", content_length),
    HEADER_FIELD_("Location", location),
    HEADER_FIELD_("X-Error-Code", error_code),
    HEADER_FIELD_("X-Error-Message", error_message),
    HEADER_FIELD_("Content-Range", content_range),
#undef HEADER_FIELD_
};

/* One exchange's state, shared by the header and body callbacks. */
typedef struct exchange {
    qw_http *http;
    CURL *curl;
    qw_buf *body;
    size_t max_body;
    FILE *file;
    int64_t range_from;
    bool saw_body;
    bool too_big;
    bool write_failed;
    raw_headers headers;
} exchange;

static void copy_trimmed(char *dst, size_t dst_size, const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
    if (n >= dst_size) n = dst_size - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* ETag values come as W/"abc" or "abc": the cache names blobs by the bare value. */
static void normalize_etag(char *e) {
    char *p = e;
    if (strncmp(p, "W/", 2) == 0) p += 2;
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') p++, n -= 2;
    memmove(e, p, n);
    e[n] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t n, void *user) {
    exchange *x = user;
    size_t len = size * n;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) { /* a new response (after 100 Continue) */
        memset(&x->headers, 0, sizeof x->headers);
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - buf);
    for (size_t i = 0; i < sizeof header_fields / sizeof header_fields[0]; i++) {
        if (name_len == strlen(header_fields[i].name) &&
            strncasecmp(buf, header_fields[i].name, name_len) == 0) {
            copy_trimmed((char *)&x->headers + header_fields[i].offset, header_fields[i].size,
                         colon + 1, len - name_len - 1);
        }
    }
    return len;
}

/* A decimal header value, or -1 when absent or not a number. */
static int64_t header_int(const char *v) {
    if (!*v) return -1;
    char *end;
    long long n = strtoll(v, &end, 10);
    return *end || n < 0 ? -1 : (int64_t)n;
}

static void report_bytes(qw_http *h, bool force) {
    if (!h->reporter || h->cancelled) return;
    double now = qw_now_seconds();
    if (!force && now - h->last_report < 0.1) return;
    h->last_report = now;
    int percent = h->total_bytes ? (int)(h->done_bytes * 100 / h->total_bytes) : 0;
    if (percent > 99 && h->done_bytes < h->total_bytes) percent = 99;
    char msg[512];
    snprintf(msg, sizeof msg, "%.1f / %.1f MiB %s", (double)h->done_bytes / 1048576.0,
             (double)h->total_bytes / 1048576.0, h->current_file ? h->current_file : "");
    if (qw_progress(h->reporter, percent, "downloading", msg, NULL) != QW_OK) h->cancelled = true;
}

static size_t on_body(char *buf, size_t size, size_t n, void *user) {
    exchange *x = user;
    size_t len = size * n;
    long code = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300 && code < 400) return len; /* a redirect's body is never wanted */
    if (x->file && code >= 200 && code < 300) {
        if (!x->saw_body && x->range_from > 0 && code == 200) {
            /* The server ignored the Range: start the file over. */
            if (fflush(x->file) != 0 || ftruncate(fileno(x->file), 0) != 0 ||
                fseek(x->file, 0, SEEK_SET) != 0) {
                x->write_failed = true;
                return 0;
            }
            x->http->done_bytes -= (uint64_t)x->range_from < x->http->done_bytes
                                       ? (uint64_t)x->range_from
                                       : x->http->done_bytes;
        }
        x->saw_body = true;
        if (fwrite(buf, 1, len, x->file) != len) {
            x->write_failed = true;
            return 0;
        }
        x->http->done_bytes += len;
        report_bytes(x->http, false);
        return x->http->cancelled ? 0 : len;
    }
    if (x->body) {
        if (x->body->len + len > x->max_body) {
            x->too_big = true;
            return 0;
        }
        if (!qw_buf_append(x->body, buf, len)) return 0;
    }
    return len;
}

static bool code_retryable(long code) { return code == 408 || code == 429 || code >= 500; }

static bool curl_retryable(int c) {
    /* "cannot connect" and "no such host" answer the same on a retry: fall back to the cache
     * at once instead of waiting. */
    return c != CURLE_COULDNT_CONNECT && c != CURLE_COULDNT_RESOLVE_HOST &&
           c != CURLE_COULDNT_RESOLVE_PROXY && c != CURLE_WRITE_ERROR &&
           c != CURLE_ABORTED_BY_CALLBACK && c != CURLE_UNSUPPORTED_PROTOCOL &&
           c != CURLE_URL_MALFORMAT;
}

static long timeout_from_env(const char *name, long fallback) {
    const char *v = getenv(name);
    long t = v ? strtol(v, NULL, 10) : 0;
    return t > 0 ? t : fallback;
}

/* One request to one URL, no redirect following. */
static qw_status exchange_once(qw_http *h, const char *url, bool head, qw_buf *body,
                               size_t max_body, FILE *file, int64_t range_from,
                               qw_http_response *resp, qw_error *err) {
    CURL *c = curl_easy_init();
    if (!c) return qw_fail(err, QW_ERR_NO_MEMORY, "cannot start an HTTP request (libcurl)");
    memset(resp, 0, sizeof *resp);
    resp->size = -1;
    exchange x = {.http = h, .curl = c, .body = body, .max_body = max_body, .file = file,
                  .range_from = range_from};
    char origin[512];
    qw_http_origin(url, origin, sizeof origin);
    struct curl_slist *headers = NULL, *more;
    char *auth = NULL;
    bool ok = true;
#define ADD_HEADER(s)                                                                              \
    (more = curl_slist_append(headers, (s)), more ? (headers = more, true) : false)
    ok = ok && ADD_HEADER("Accept-Encoding: identity");
    if (h->token && *h->token && origin[0] && strcmp(origin, h->auth_origin) == 0) {
        auth = qw_sprintf("Authorization: Bearer %s", h->token);
        ok = ok && auth && ADD_HEADER(auth);
    }
    char range[64];
    if (range_from > 0) {
        snprintf(range, sizeof range, "Range: bytes=%lld-", (long long)range_from);
        ok = ok && ADD_HEADER(range);
    }
#undef ADD_HEADER
    if (auth) { /* the list holds its own copy: wipe ours now */
        memset(auth, 0, strlen(auth));
        qw_free(auth);
    }
    if (!ok) {
        curl_slist_free_all(headers);
        curl_easy_cleanup(c);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
    /* every hop is its own request, so a Location to file:// or the like is refused here */
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_USERAGENT, "qwodel/" QW_VERSION);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout_from_env("HF_HUB_ETAG_TIMEOUT", 10));
    /* a stalled transfer (no byte for this long) is a timeout; a slow one is not */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, timeout_from_env("HF_HUB_DOWNLOAD_TIMEOUT", 30));
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);

    const raw_headers *hd = &x.headers;
    snprintf(resp->repo_commit, sizeof resp->repo_commit, "%s", hd->repo_commit);
    snprintf(resp->error_code, sizeof resp->error_code, "%s", hd->error_code);
    snprintf(resp->error_message, sizeof resp->error_message, "%s", hd->error_message);
    snprintf(resp->content_range, sizeof resp->content_range, "%s", hd->content_range);
    /* huggingface_hub's reading: the linked (LFS) etag and size first, the plain ones else */
    snprintf(resp->etag, sizeof resp->etag, "%s", hd->linked_etag[0] ? hd->linked_etag : hd->etag);
    normalize_etag(resp->etag);
    bool redirect = resp->code >= 300 && resp->code < 400;
    resp->size = hd->linked_size[0] ? header_int(hd->linked_size)
                 : redirect         ? -1
                                    : header_int(hd->content_length);
    if (hd->location[0] && !resolve_location(url, hd->location, resp->location,
                                             sizeof resp->location)) {
        resp->location[0] = '\0';
    }
    if (h->cancelled) return qw_fail(err, QW_ERR_CANCELLED, "download cancelled");
    if (x.too_big) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: response larger than %zu bytes", url, max_body);
    }
    if (x.write_failed) return qw_fail(err, QW_ERR_IO, "%s: cannot write the download", url);
    if (cc != CURLE_OK) {
        resp->curl_code = (int)cc;
        snprintf(resp->curl_error, sizeof resp->curl_error, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return qw_fail(err, QW_ERR_NETWORK, "%s: %s", url, resp->curl_error);
    }
    return QW_OK;
}

qw_status qw_http_request(qw_http *h, const char *url, bool head, qw_buf *body, size_t max_body,
                          FILE *file, int64_t range_from, bool follow_cross_origin,
                          qw_http_response *resp, qw_error *err) {
    pthread_once(&curl_once, curl_init);
    if (curl_init_code != CURLE_OK) {
        return qw_fail(err, QW_ERR_DEPENDENCY, "libcurl failed to initialise: %s",
                       curl_easy_strerror(curl_init_code));
    }
    char *current = qw_strdup(url);
    if (!current) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = QW_OK;
    for (int hop = 0;; hop++) {
        /* Downloads to a file are retried by the caller, who knows how much arrived. */
        int attempts = file ? 1 : ATTEMPTS;
        for (int attempt = 0; attempt < attempts; attempt++) {
            if (body) body->len = 0;
            if (attempt) {
                struct timespec pause = {0, 250000000L << attempt}; /* 0.5 s, 1 s */
                nanosleep(&pause, NULL);
            }
            st = exchange_once(h, current, head, body, max_body, file, range_from, resp, err);
            bool again = st == QW_ERR_NETWORK ? curl_retryable(resp->curl_code)
                                              : st == QW_OK && code_retryable(resp->code);
            if (!again) break;
        }
        if (st != QW_OK) break;
        bool redirect = resp->code >= 300 && resp->code < 400 && resp->location[0];
        if (!redirect) break;
        char from[512], to[512];
        qw_http_origin(current, from, sizeof from);
        qw_http_origin(resp->location, to, sizeof to);
        if (strcmp(from, to) != 0 && !follow_cross_origin) break;
        if (hop + 1 >= MAX_REDIRECTS) {
            st = qw_fail(err, QW_ERR_NETWORK, "%s: more than %d redirects", url, MAX_REDIRECTS);
            break;
        }
        char *next = qw_strdup(resp->location);
        if (!next) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            break;
        }
        qw_free(current);
        current = next;
    }
    qw_free(current);
    if (st == QW_OK && file) report_bytes(h, true);
    return st;
}
