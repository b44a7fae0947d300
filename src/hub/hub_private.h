/* hub_private.h — what the files of src/hub share: sha256 streaming, the HTTP client, the
 * environment. Not used outside src/hub (and its unit tests). */
#ifndef QW_HUB_PRIVATE_H
#define QW_HUB_PRIVATE_H

#include <stdio.h>

#include "hub.h"

/* ---- sha256, streamed (OpenSSL's libcrypto does the hashing) ---- */
typedef struct qw_sha256 qw_sha256;

/* NULL when out of memory. */
qw_sha256 *qw_sha256_create(void);
void qw_sha256_update(qw_sha256 *s, const void *data, size_t len);
/* Writes the lower-case hex digest and frees s. */
void qw_sha256_finish(qw_sha256 *s, char hex[65]);
void qw_sha256_free(qw_sha256 *s);

/* ---- environment ---- */

/* HF_ENDPOINT without a trailing '/', or the public Hub; caller frees. */
char *qw_hub_endpoint(void);
/* HF_DATASETS_SERVER without a trailing '/', or the public dataset viewer; caller frees. */
char *qw_hub_datasets_server(void);
/* The token: `given` when non-empty, else HF_TOKEN / HUGGING_FACE_HUB_TOKEN / the token file;
 * NULL when there is none. Caller frees (qw_hub_token_free wipes it first). */
char *qw_hub_token(const char *given);
void qw_hub_token_free(char *token);
bool qw_hub_offline(void);
/* Whether an etag can name a blob file (nothing that could leave blobs/). */
bool qw_hub_etag_ok(const char *etag);

/* ---- HTTP ---- */

/* What a response said; header values are "" when absent. */
typedef struct qw_http_response {
    long code;
    char repo_commit[64];
    char etag[160];        /* X-Linked-Etag, else ETag, normalized (no W/, no quotes) */
    int64_t size;          /* X-Linked-Size, else Content-Length of a non-redirect; -1 if none */
    char location[2048];   /* absolute, resolved against the request URL */
    char error_code[64];
    char error_message[256];
    char content_range[96];
    int curl_code;         /* CURLcode of a failed transfer (0 when the exchange completed) */
    char curl_error[256];
} qw_http_response;

typedef struct qw_http {
    const char *token;     /* sent only to auth_origin */
    char auth_origin[512]; /* "scheme://host:port" the token may go to */
    qw_reporter *reporter;
    /* download progress over all files of one call */
    uint64_t done_bytes, total_bytes;
    const char *current_file;
    double last_report;
    bool cancelled;
} qw_http;

/* The origin of a URL ("http://127.0.0.1:8080"), written to out (empty when unparseable). */
void qw_http_origin(const char *url, char *out, size_t out_size);

/* HEAD (`head`) or GET into `body` (when not NULL, at most max_body bytes) or appended to `file`
 * (only a 2xx body; a 200 answering a Range starts the file over). Redirects are followed by
 * hand, up to 10: always when they stay on the same origin, across origins only when
 * `follow_cross_origin` (a HEAD stops there: the metadata is on the redirect itself, as
 * huggingface_hub reads it). The token is sent only to h->auth_origin. `range_from` > 0 asks for
 * bytes from there on. Without a file, network failures and 5xx/408/429 are retried with backoff
 * (3 attempts; a refused connection or unknown host is not retried); downloads to a file are
 * retried by the caller, who knows how much arrived. The final response is in *resp. Returns
 * QW_OK when an HTTP exchange completed (any code), QW_ERR_NETWORK when none did,
 * QW_ERR_CANCELLED, QW_ERR_IO, QW_ERR_NO_MEMORY. */
qw_status qw_http_request(qw_http *h, const char *url, bool head, qw_buf *body, size_t max_body,
                          FILE *file, int64_t range_from, bool follow_cross_origin,
                          qw_http_response *resp, qw_error *err);

/* Percent-encodes everything but unreserved characters (and '/' when keep_slash). */
char *qw_url_quote(const char *s, bool keep_slash);

#endif /* QW_HUB_PRIVATE_H */
