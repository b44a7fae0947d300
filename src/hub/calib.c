/* Calibration text: local .txt/.json/.jsonl files, a Hub dataset read page by page through the
 * dataset viewer's /rows API (no Parquet reader needed), with the pages cached, or the built-in
 * text of calib_builtin.c. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "file.h"
#include "hub_private.h"
#include "json.h"

enum { PAGE_ROWS = 100, MAX_PAGE_BYTES = 64 << 20 };
#define MAX_FILE_BYTES ((size_t)1 << 30)

void qw_calib_free(qw_calib *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_samples; i++) qw_free(c->samples[i]);
    qw_free(c->samples);
    qw_free(c);
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isspace((unsigned char)s[i])) return false;
    }
    return true;
}

/* Appends a sample unless it is empty or whitespace only. */
static qw_status add_sample(qw_calib *c, const char *s, size_t n, qw_error *err) {
    if (blank(s, n)) return QW_OK;
    char **p = qw_realloc_array(c->samples, c->n_samples + 1, sizeof *p);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    c->samples = p;
    c->samples[c->n_samples] = qw_strndup(s, n);
    if (!c->samples[c->n_samples]) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    c->n_samples++;
    return QW_OK;
}

/* The text of a record: a string, or an object's "text" field, else its first string field. */
static const char *record_text(const json_t *rec) {
    if (json_is_string(rec)) return json_string_value(rec);
    if (!json_is_object(rec)) return NULL;
    const json_t *text = json_object_get(rec, "text");
    if (json_is_string(text)) return json_string_value(text);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)rec, key, value) {
        if (json_is_string(value)) return json_string_value(value);
    }
    return NULL;
}

static qw_status add_record(qw_calib *c, const json_t *rec, const char *where, qw_error *err) {
    const char *text = record_text(rec);
    if (!text) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "%s: record has no text (expected a string, or an object with a \"text\" "
                       "or other string field)", where);
    }
    return add_sample(c, text, strlen(text), err);
}

/* ---- local files ----------------------------------------------------------------------------- */

static qw_status load_txt(qw_calib *c, const char *data, size_t len, size_t max, qw_error *err) {
    size_t start = 0;
    for (size_t i = 0; i <= len && c->n_samples < max; i++) {
        if (i < len && data[i] != '\n') continue;
        size_t end = i;
        if (end > start && data[end - 1] == '\r') end--;
        QW_TRY(add_sample(c, data + start, end - start, err));
        start = i + 1;
    }
    return QW_OK;
}

static qw_status load_jsonl(qw_calib *c, const char *path, const char *data, size_t len,
                            size_t max, qw_error *err) {
    size_t start = 0, line = 0;
    for (size_t i = 0; i <= len && c->n_samples < max; i++) {
        if (i < len && data[i] != '\n') continue;
        line++;
        if (!blank(data + start, i - start)) {
            char where[600];
            snprintf(where, sizeof where, "%s:%zu", path, line);
            json_t *rec = NULL;
            QW_TRY(qw_json_parse(data + start, i - start, where, &rec, err));
            qw_status st = add_record(c, rec, where, err);
            json_decref(rec);
            QW_TRY(st);
        }
        start = i + 1;
    }
    return QW_OK;
}

static qw_status load_json(qw_calib *c, const char *path, const char *data, size_t len,
                           const char *split, size_t max, qw_error *err) {
    json_t *root = NULL;
    QW_TRY(qw_json_parse(data, len, path, &root, err));
    const json_t *records = root;
    if (json_is_object(root)) { /* {"<split>": [...]}, or {"data": [...]} / {"rows": [...]} */
        static const char *const members[] = {NULL, "data", "rows"};
        records = NULL;
        for (size_t i = 0; !records && i < sizeof members / sizeof members[0]; i++) {
            const json_t *m = json_object_get(root, members[i] ? members[i] : split);
            if (json_is_array(m)) records = m;
        }
    }
    qw_status st = QW_OK;
    if (!json_is_array(records)) {
        st = qw_fail(err, QW_ERR_INVALID_ARG,
                     "%s: expected an array of records, or an object with a \"%s\", \"data\" or "
                     "\"rows\" array", path, split);
    }
    for (size_t i = 0; st == QW_OK && records && i < json_array_size(records) &&
                       c->n_samples < max; i++) {
        char where[600];
        snprintf(where, sizeof where, "%s: record %zu", path, i);
        st = add_record(c, json_array_get(records, i), where, err);
    }
    json_decref(root);
    return st;
}

typedef qw_status (*local_loader)(qw_calib *c, const char *path, const char *data, size_t len,
                                  const char *split, size_t max, qw_error *err);

static qw_status txt_loader(qw_calib *c, const char *path, const char *data, size_t len,
                            const char *split, size_t max, qw_error *err) {
    (void)path, (void)split;
    return load_txt(c, data, len, max, err);
}

static qw_status jsonl_loader(qw_calib *c, const char *path, const char *data, size_t len,
                              const char *split, size_t max, qw_error *err) {
    (void)split;
    return load_jsonl(c, path, data, len, max, err);
}

static const struct {
    const char *extension;
    local_loader load;
} local_formats[] = {
    {".txt", txt_loader},
    {".jsonl", jsonl_loader},
    {".json", load_json},
};

static qw_status load_local(qw_calib *c, const char *path, const char *split, size_t max,
                            qw_error *err) {
    local_loader load = NULL;
    for (size_t i = 0; i < sizeof local_formats / sizeof local_formats[0]; i++) {
        if (qw_str_ends_with(path, local_formats[i].extension)) load = local_formats[i].load;
    }
    if (!load) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "%s: calibration files must be .txt, .json or .jsonl", path);
    }
    char *data = NULL;
    size_t len = 0;
    QW_TRY(qw_file_read_all(path, MAX_FILE_BYTES, &data, &len, err));
    qw_status st = load(c, path, data, len, split, max, err);
    qw_free(data);
    return st;
}

/* ---- Hub datasets ---------------------------------------------------------------------------- */

static bool spec_part_ok(const char *s) {
    if (!*s || strlen(s) > 200 || s[0] == '.' || s[0] == '-' || strstr(s, "..")) return false;
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-_.", *p)) return false;
    }
    return true;
}

typedef struct dataset_ref {
    char repo[256];
    char config[256];
    char split[256];
} dataset_ref;

static qw_status dataset_parse(const char *spec, const char *split, dataset_ref *d,
                               qw_error *err) {
    memset(d, 0, sizeof *d);
    const char *colon = strchr(spec, ':');
    size_t repo_len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (repo_len >= sizeof d->repo) repo_len = sizeof d->repo - 1;
    memcpy(d->repo, spec, repo_len);
    snprintf(d->config, sizeof d->config, "%s", colon ? colon + 1 : "default");
    snprintf(d->split, sizeof d->split, "%s", split);
    char *slash = strchr(d->repo, '/');
    bool ok = spec_part_ok(d->config) && spec_part_ok(d->split);
    if (slash) {
        *slash = '\0';
        ok = ok && spec_part_ok(d->repo) && spec_part_ok(slash + 1);
        *slash = '/';
    } else {
        ok = ok && spec_part_ok(d->repo);
    }
    if (!ok) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "calibration dataset \"%s\" (split \"%s\") is neither an existing .txt, "
                       ".json or .jsonl file nor a Hub dataset \"repo[:config]\"", spec, split);
    }
    return QW_OK;
}

/* The dataset viewer's answer for one page: rows [offset, offset + PAGE_ROWS). */
static qw_status fetch_page(qw_http *h, const char *server, const dataset_ref *d, size_t offset,
                            const char *cache_path, json_t **out, qw_error *err) {
    char *q_repo = qw_url_quote(d->repo, false), *q_config = qw_url_quote(d->config, false);
    char *q_split = qw_url_quote(d->split, false);
    char *url = q_repo && q_config && q_split
                    ? qw_sprintf("%s/rows?dataset=%s&config=%s&split=%s&offset=%zu&length=%d",
                                 server, q_repo, q_config, q_split, offset, PAGE_ROWS)
                    : NULL;
    qw_free(q_repo), qw_free(q_config), qw_free(q_split);
    if (!url) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_buf body = {0};
    qw_http_response resp;
    qw_status st = qw_http_request(h, url, false, &body, MAX_PAGE_BYTES, NULL, 0, true, &resp,
                                   err);
    if (st == QW_ERR_NETWORK) {
        qw_error_prefix(err, "dataset %s (config %s, split %s): cannot reach the dataset viewer "
                        "at %s and the rows are not cached: ", d->repo, d->config, d->split,
                        server);
    }
    if (st == QW_OK && resp.code != 200) {
        json_t *e = json_loadb(body.data ? body.data : "", body.len, 0, NULL);
        const char *why = json_string_value(json_object_get(e, "error"));
        qw_status status = resp.code == 401 || resp.code == 403 ? QW_ERR_ACCESS_DENIED
                           : resp.code == 404                   ? QW_ERR_NOT_FOUND
                                                                : QW_ERR_NETWORK;
        st = qw_fail(err, status,
                     "dataset %s (config %s, split %s): the dataset viewer answered HTTP %ld: %s. "
                     "Check the dataset ID, the \":config\" part and calibration_split%s",
                     d->repo, d->config, d->split, resp.code, why ? why : "(no message)",
                     status == QW_ERR_ACCESS_DENIED ? "; a gated or private dataset needs a token"
                                                    : "");
        json_decref(e);
    }
    if (st == QW_OK) st = qw_json_parse(body.data ? body.data : "", body.len, url, out, err);
    if (st == QW_OK) { /* keep a copy for the next run and for offline use */
        char *dir = qw_strdup(cache_path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        char *tmp = qw_sprintf("%s.%ld.tmp", cache_path, (long)getpid());
        if (slash && tmp) {
            *slash = '\0';
            FILE *f = qw_mkdir_p(dir, NULL) == QW_OK ? fopen(tmp, "wb") : NULL;
            bool ok = f && fwrite(body.data, 1, body.len, f) == body.len;
            ok = f && fclose(f) == 0 && ok;
            if (!ok || rename(tmp, cache_path) != 0) unlink(tmp); /* a cache, not a must */
        }
        qw_free(tmp);
        qw_free(dir);
    }
    qw_buf_free(&body);
    qw_free(url);
    return st;
}

static qw_status load_dataset(qw_calib *c, const char *spec, const char *split, size_t max,
                              const char *token, qw_reporter *r, qw_error *err) {
    dataset_ref d;
    QW_TRY(dataset_parse(spec, split, &d, err));
    char *cache = qw_hub_cache_dir();
    char *folder = qw_hub_repo_folder("datasets", d.repo);
    char *server = qw_hub_datasets_server();
    char *token_value = qw_hub_offline() ? NULL : qw_hub_token(token);
    qw_http h;
    memset(&h, 0, sizeof h);
    h.token = token_value;
    h.reporter = NULL; /* rows are small: no byte progress */
    qw_status st = cache && folder && server ? QW_OK
                                             : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) qw_http_origin(server, h.auth_origin, sizeof h.auth_origin);
    for (size_t offset = 0; st == QW_OK && c->n_samples < max; offset += PAGE_ROWS) {
        char *path = qw_sprintf("%s/.qwodel-rows/%s/%s/%s/%zu.json", cache, folder, d.config,
                                d.split, offset);
        if (!path) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            break;
        }
        json_t *page = NULL;
        if (qw_path_is_file(path)) {
            st = qw_json_load_file(path, MAX_PAGE_BYTES, &page, err);
        } else if (qw_hub_offline()) {
            st = qw_fail(err, QW_ERR_NETWORK,
                         "dataset %s (config %s, split %s): rows from %zu on are not cached in "
                         "%s/.qwodel-rows and HF_HUB_OFFLINE is set", d.repo, d.config, d.split,
                         offset, cache);
        } else {
            st = fetch_page(&h, server, &d, offset, path, &page, err);
        }
        json_t *rows = json_object_get(page, "rows");
        if (st == QW_OK && !json_is_array(rows)) {
            st = qw_fail_at(err, QW_ERR_CORRUPT, "rows", -1,
                            "dataset %s (config %s, split %s): the /rows answer at offset %zu "
                            "has no \"rows\" array", d.repo, d.config, d.split, offset);
        }
        for (size_t i = 0; st == QW_OK && i < json_array_size(rows) && c->n_samples < max; i++) {
            char where[1024];
            snprintf(where, sizeof where, "dataset %s (config %s, split %s): row %zu", d.repo,
                     d.config, d.split, offset + i);
            st = add_record(c, json_object_get(json_array_get(rows, i), "row"), where, err);
        }
        int64_t total = 0;
        bool has_total = qw_json_integer_value(json_object_get(page, "num_rows_total"), &total);
        bool last = st != QW_OK || json_array_size(rows) == 0 ||
                    (has_total && (int64_t)(offset + PAGE_ROWS) >= total);
        json_decref(page);
        qw_free(path);
        if (last) break;
        if (st == QW_OK) st = qw_check_cancel(r, err);
    }
    if (st == QW_OK) {
        qw_log(r, QW_LOG_INFO, "calibration: %zu samples from dataset %s (config %s, split %s)",
               c->n_samples, d.repo, d.config, d.split);
    }
    qw_hub_token_free(token_value);
    qw_free(server);
    qw_free(folder);
    qw_free(cache);
    return st;
}

/* ---- built-in text --------------------------------------------------------------------------- */

static qw_status load_builtin(qw_calib *c, size_t max, qw_error *err) {
    for (size_t i = 0; i < qw_calib_builtin_count() && c->n_samples < max; i++) {
        const char *text = qw_calib_builtin_sample(i);
        QW_TRY(add_sample(c, text, strlen(text), err));
    }
    c->builtin = true;
    return QW_OK;
}

/* The default dataset unreachable and not cached: a quantization that asked for no dataset in
 * particular should still run offline, so it gets the built-in text, and is told. */
static qw_status fall_back_to_builtin(qw_calib *c, size_t max, qw_reporter *r, qw_error *err) {
    qw_log(r, QW_LOG_WARNING,
           "calibration: %s. Using qwodel's built-in calibration text instead; choose the text "
           "with calibration_dataset (--calibration-dataset): a Hub dataset \"repo[:config]\", a "
           "local .txt/.json/.jsonl file, or \"builtin\"",
           err ? err->message : "the default dataset cannot be read");
    for (size_t i = 0; i < c->n_samples; i++) qw_free(c->samples[i]);
    c->n_samples = 0; /* rows read from the cache before the failure are dropped */
    qw_error_clear(err);
    return load_builtin(c, max, err);
}

qw_status qw_calib_load(const char *spec, const char *split, size_t max_samples,
                        const char *token, qw_reporter *r, qw_calib **out, qw_error *err) {
    *out = NULL;
    const bool by_default = spec == NULL;
    if (by_default) spec = QW_CALIB_DEFAULT_DATASET;
    if (!*spec) return qw_fail(err, QW_ERR_INVALID_ARG, "calibration dataset is empty");
    if (!split || !*split) split = "train";
    qw_calib *c = qw_calloc(1, sizeof *c);
    if (!c) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st;
    if (qw_strcasecmp(spec, "builtin") == 0) { /* checked first: no file "builtin" could load */
        st = load_builtin(c, max_samples, err);
        if (st == QW_OK) {
            qw_log(r, QW_LOG_INFO, "calibration: %zu samples of qwodel's built-in text",
                   c->n_samples);
        }
    } else if (qw_path_is_file(spec)) {
        st = load_local(c, spec, split, max_samples, err);
    } else if (qw_path_exists(spec)) {
        st = qw_fail(err, QW_ERR_INVALID_ARG,
                     "%s: a calibration dataset is a .txt, .json or .jsonl file, not a directory",
                     spec);
    } else {
        st = load_dataset(c, spec, split, max_samples, token, r, err);
        if (st == QW_ERR_NETWORK && by_default) st = fall_back_to_builtin(c, max_samples, r, err);
    }
    if (st == QW_OK && c->n_samples == 0 && max_samples > 0) {
        st = qw_fail(err, QW_ERR_INVALID_ARG, "%s (split %s): no non-empty text sample", spec,
                     split);
    }
    if (st != QW_OK) {
        qw_calib_free(c);
        return st;
    }
    *out = c;
    return QW_OK;
}
