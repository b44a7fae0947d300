/* A model snapshot in the standard cache, laid out as huggingface_hub lays it out:
 *   <cache>/models--org--name/refs/<revision>            the commit, no newline
 *   <cache>/models--org--name/blobs/<etag>               the bytes (etag: sha256 for LFS files)
 *   <cache>/models--org--name/blobs/<etag>.incomplete    a partial download, resumed with Range
 *   <cache>/models--org--name/snapshots/<commit>/<file>  -> ../../blobs/<etag> (relative)
 *   <cache>/.locks/models--org--name/<etag>.lock         advisory lock while a blob is written
 * so a cache either tool wrote is used by the other. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file.h"
#include "hub_private.h"

enum { MAX_API_BYTES = 32 << 20, DOWNLOAD_ATTEMPTS = 3 };

typedef struct repo_ctx {
    qw_hub_id id;
    char *cache;
    char *folder; /* <cache>/models--org--name */
    char *endpoint;
    qw_http http;
} repo_ctx;

typedef struct file_meta {
    const char *file;
    char etag[160];
    int64_t size;
    char *url; /* where to GET it */
    bool present;
} file_meta;

static bool is_commit(const char *s) {
    if (strlen(s) != 40) return false;
    for (const char *p = s; *p; p++) {
        if (!isxdigit((unsigned char)*p)) return false;
    }
    return true;
}

/* The cached snapshot of the ID's revision, if one with a config.json is there. */
static char *cached_snapshot(const repo_ctx *c) {
    char commit[300] = "";
    if (is_commit(c->id.revision)) {
        snprintf(commit, sizeof commit, "%s", c->id.revision);
    } else {
        char *ref = qw_sprintf("%s/refs/%s", c->folder, c->id.revision);
        char *data = NULL;
        size_t len = 0;
        if (ref && qw_path_is_file(ref) &&
            qw_file_read_all(ref, 256, &data, &len, NULL) == QW_OK) {
            while (len && isspace((unsigned char)data[len - 1])) data[--len] = '\0';
            if (is_commit(data)) snprintf(commit, sizeof commit, "%s", data);
        }
        qw_free(data);
        qw_free(ref);
    }
    if (!commit[0]) return NULL;
    char *dir = qw_sprintf("%s/snapshots/%s", c->folder, commit);
    char *config = dir ? qw_path_join(dir, "config.json") : NULL;
    bool ok = config && qw_path_is_file(config);
    qw_free(config);
    if (!ok) {
        qw_free(dir);
        return NULL;
    }
    return dir;
}

/* Writes refs/<revision> atomically (a reader never sees it half written). */
static qw_status write_ref(const repo_ctx *c, const char *commit, qw_error *err) {
    char *path = qw_sprintf("%s/refs/%s", c->folder, c->id.revision);
    char *tmp = path ? qw_sprintf("%s.%ld.tmp", path, (long)getpid()) : NULL;
    qw_status st = tmp ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) {
        char *slash = strrchr(path, '/');
        *slash = '\0';
        st = qw_mkdir_p(path, err);
        *slash = '/';
    }
    if (st == QW_OK) {
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fputs(commit, f) >= 0;
        ok = f && fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            st = qw_fail(err, QW_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    qw_free(tmp);
    qw_free(path);
    return st;
}

static qw_status api_listing(repo_ctx *c, qw_hub_listing *listing, qw_http_response *resp,
                             qw_error *err) {
    char *rev = qw_url_quote(c->id.revision, false);
    char *url = rev ? qw_sprintf("%s/api/models/%s/revision/%s", c->endpoint, c->id.repo, rev)
                    : NULL;
    qw_free(rev);
    if (!url) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_buf body = {0};
    qw_status st = qw_http_request(&c->http, url, false, &body, MAX_API_BYTES, NULL, 0, true,
                                   resp, err);
    if (st == QW_OK && resp->code != 200) {
        st = qw_hub_http_error(resp->code, resp->error_code, resp->error_message, c->id.repo,
                               c->id.revision, NULL, err);
    } else if (st == QW_OK) {
        st = qw_hub_listing_parse(body.data ? body.data : "", body.len, url, listing, err);
    }
    qw_buf_free(&body);
    qw_free(url);
    return st;
}

/* HEAD on the resolve URL: the etag, size and where to GET, as huggingface_hub reads them. */
static qw_status head_file(repo_ctx *c, const char *commit, file_meta *m, qw_error *err) {
    char *file = qw_url_quote(m->file, true);
    char *url = file ? qw_sprintf("%s/%s/resolve/%s/%s", c->endpoint, c->id.repo, commit, file)
                     : NULL;
    qw_free(file);
    if (!url) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_http_response resp;
    qw_status st = qw_http_request(&c->http, url, true, NULL, 0, NULL, 0, false, &resp, err);
    bool redirect = resp.code >= 300 && resp.code < 400;
    if (st != QW_OK) {
        qw_error_prefix(err, "%s, file %s: ", c->id.repo, m->file);
    } else if (resp.code != 200 && !redirect) {
        st = qw_hub_http_error(resp.code, resp.error_code, resp.error_message, c->id.repo,
                               c->id.revision, m->file, err);
    } else if (!resp.repo_commit[0]) {
        st = qw_fail_at(err, QW_ERR_NETWORK, m->file, -1,
                        "%s: the answer has no X-Repo-Commit header, so %s is not a HuggingFace "
                        "Hub (check HF_ENDPOINT)", url, c->endpoint);
    } else if (!qw_hub_etag_ok(resp.etag) || resp.size < 0) {
        st = qw_fail_at(err, QW_ERR_CORRUPT, m->file, -1,
                        "%s: the Hub gave no usable ETag/X-Linked-Etag or size for %s",
                        c->id.repo, m->file);
    }
    if (st == QW_OK) {
        snprintf(m->etag, sizeof m->etag, "%s", resp.etag);
        m->size = resp.size;
        m->url = redirect && resp.location[0] ? qw_strdup(resp.location) : qw_strdup(url);
        if (!m->url) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    qw_free(url);
    return st;
}

static int64_t file_size_or_zero(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* GETs one blob into blobs/<etag>.incomplete (resuming what is there), checks it, renames it. */
static qw_status download_blob(repo_ctx *c, const file_meta *m, const char *blob, qw_error *err) {
    char *part = qw_sprintf("%s.incomplete", blob);
    if (!part) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st = QW_OK;
    c->http.current_file = m->file;
    for (int attempt = 0; attempt < DOWNLOAD_ATTEMPTS; attempt++) {
        if (attempt) {
            struct timespec pause = {0, 250000000L << attempt}; /* 0.5 s, 1 s */
            nanosleep(&pause, NULL);
        }
        int64_t have = file_size_or_zero(part);
        if (have > m->size) { /* not ours to resume: start over */
            unlink(part);
            have = 0;
        }
        if (have == m->size) break;
        FILE *f = fopen(part, "ab");
        if (!f) {
            st = qw_fail(err, QW_ERR_IO, "%s: cannot write: %s", part, strerror(errno));
            break;
        }
        qw_http_response resp;
        st = qw_http_request(&c->http, m->url, false, NULL, 0, f, have, true, &resp, err);
        if (fclose(f) != 0 && st == QW_OK) {
            st = qw_fail(err, QW_ERR_IO, "%s: cannot write: %s", part, strerror(errno));
        }
        if (st == QW_OK && (resp.code < 200 || resp.code >= 300)) {
            st = qw_hub_http_error(resp.code, resp.error_code, resp.error_message, c->id.repo,
                                   c->id.revision, m->file, err);
            if (resp.code < 500 && resp.code != 408 && resp.code != 429) break;
            continue;
        }
        if (st == QW_ERR_NETWORK) {
            qw_error_prefix(err, "%s, file %s: download interrupted after %lld of %lld bytes "
                            "(kept in %s, the next run resumes it): ", c->id.repo, m->file,
                            (long long)file_size_or_zero(part), (long long)m->size, part);
            continue;
        }
        if (st != QW_OK) break;
        if (file_size_or_zero(part) >= m->size) break;
        st = qw_fail(err, QW_ERR_NETWORK, "%s, file %s: transfer ended after %lld of %lld bytes",
                     c->id.repo, m->file, (long long)file_size_or_zero(part), (long long)m->size);
    }
    if (st == QW_OK) {
        char label[512];
        snprintf(label, sizeof label, "%s, file %s", c->id.repo, m->file);
        st = qw_hub_verify_file(part, m->etag, (uint64_t)m->size, label, err);
        if (st == QW_ERR_CORRUPT) unlink(part); /* resuming a wrong file would stay wrong */
    }
    if (st == QW_OK && rename(part, blob) != 0) {
        st = qw_fail(err, QW_ERR_IO, "%s: cannot rename to %s: %s", part, blob, strerror(errno));
    }
    qw_free(part);
    return st;
}

/* Holds .locks/models--org--name/<etag>.lock while the blob is written, as huggingface_hub does,
 * so two processes filling one cache do not write the same .incomplete file. */
static int lock_blob(const repo_ctx *c, const char *etag) {
    char *folder = qw_strdup(strrchr(c->folder, '/') + 1);
    char *dir = folder ? qw_sprintf("%s/.locks/%s", c->cache, folder) : NULL;
    char *path = dir ? qw_sprintf("%s/%s.lock", dir, etag) : NULL;
    int fd = -1;
    if (path && qw_mkdir_p(dir, NULL) == QW_OK) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
            close(fd);
            fd = -1;
        }
    }
    qw_free(path);
    qw_free(dir);
    qw_free(folder);
    return fd;
}

static qw_status link_file(const repo_ctx *c, const char *snapshot, const file_meta *m,
                           qw_error *err) {
    char *path = qw_path_join(snapshot, m->file);
    char *target = qw_hub_blob_link(m->file, m->etag);
    qw_status st = path && target ? QW_OK : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) {
        char *slash = strrchr(path, '/');
        *slash = '\0';
        st = qw_mkdir_p(path, err);
        *slash = '/';
    }
    if (st == QW_OK) {
        unlink(path); /* a dangling link left by an interrupted run */
        if (symlink(target, path) != 0) {
            st = qw_fail(err, QW_ERR_IO, "%s: cannot create the link to %s: %s", path, target,
                         strerror(errno));
        }
    }
    (void)c;
    qw_free(target);
    qw_free(path);
    return st;
}

static qw_status fetch_listing(repo_ctx *c, const qw_hub_listing *l, qw_reporter *r,
                               char **out_dir, qw_error *err) {
    char *snapshot = qw_sprintf("%s/snapshots/%s", c->folder, l->sha);
    char *blobs = qw_path_join(c->folder, "blobs");
    file_meta *metas = qw_calloc(l->n_files + 1, sizeof *metas);
    qw_status st = snapshot && blobs && metas ? QW_OK
                                              : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (st == QW_OK) st = qw_mkdir_p(blobs, err);
    if (st == QW_OK) st = qw_mkdir_p(snapshot, err);
    /* First every file's size, so the progress can count bytes over the whole download. */
    size_t n_missing = 0;
    for (size_t i = 0; st == QW_OK && i < l->n_files; i++) {
        metas[i].file = l->files[i];
        char *path = qw_path_join(snapshot, l->files[i]);
        metas[i].present = path && qw_path_is_file(path); /* stat follows the link */
        qw_free(path);
        if (metas[i].present) continue;
        st = head_file(c, l->sha, &metas[i], err);
        if (st != QW_OK) break;
        char *blob = qw_path_join(blobs, metas[i].etag);
        char *part = blob ? qw_sprintf("%s.incomplete", blob) : NULL;
        if (!part) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        if (st == QW_OK && file_size_or_zero(blob) != metas[i].size) {
            c->http.total_bytes += (uint64_t)metas[i].size;
            int64_t have = file_size_or_zero(part);
            if (have <= metas[i].size) c->http.done_bytes += (uint64_t)have;
            n_missing++;
        }
        qw_free(part);
        qw_free(blob);
    }
    if (st == QW_OK && n_missing) {
        qw_log(r, QW_LOG_INFO, "%s@%s: downloading %zu files (%.1f MiB) into %s", c->id.repo,
               c->id.revision, n_missing, (double)c->http.total_bytes / 1048576.0, c->folder);
    }
    for (size_t i = 0; st == QW_OK && i < l->n_files; i++) {
        file_meta *m = &metas[i];
        if (m->present) continue;
        char *blob = qw_path_join(blobs, m->etag);
        if (!blob) {
            st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
            break;
        }
        int lock = lock_blob(c, m->etag);
        if (file_size_or_zero(blob) != m->size || !qw_path_is_file(blob)) {
            st = download_blob(c, m, blob, err);
        }
        if (lock >= 0) close(lock); /* closing drops the flock */
        qw_free(blob);
        if (st == QW_OK) st = link_file(c, snapshot, m, err);
    }
    for (size_t i = 0; metas && i < l->n_files; i++) qw_free(metas[i].url);
    qw_free(metas);
    qw_free(blobs);
    if (st == QW_OK) {
        if (c->http.total_bytes) {
            c->http.done_bytes = c->http.total_bytes;
            c->http.current_file = "";
            st = qw_progress(r, 100, "downloading", "done", err);
        }
    }
    if (st != QW_OK) {
        qw_free(snapshot);
        return st;
    }
    *out_dir = snapshot;
    return QW_OK;
}

qw_status qw_hub_snapshot(const char *model_id, const char *token, qw_reporter *r,
                          char **out_dir, qw_error *err) {
    *out_dir = NULL;
    repo_ctx c;
    memset(&c, 0, sizeof c);
    QW_TRY(qw_hub_id_parse(model_id, &c.id, err));
    c.cache = qw_hub_cache_dir();
    char *folder_name = qw_hub_repo_folder("models", c.id.repo);
    c.folder = c.cache && folder_name ? qw_path_join(c.cache, folder_name) : NULL;
    qw_free(folder_name);
    c.endpoint = qw_hub_endpoint();
    qw_status st = c.folder && c.endpoint ? QW_OK
                                          : qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    char *token_value = NULL;
    if (st == QW_OK && qw_hub_offline()) {
        *out_dir = cached_snapshot(&c);
        if (!*out_dir) {
            st = qw_fail(err, QW_ERR_NETWORK,
                         "%s@%s is not in the cache %s and HF_HUB_OFFLINE is set: run once "
                         "without HF_HUB_OFFLINE (or with huggingface_hub) to download it",
                         c.id.repo, c.id.revision, c.cache);
        }
        goto done;
    }
    if (st == QW_OK) {
        token_value = qw_hub_token(token);
        c.http.token = token_value;
        c.http.reporter = r;
        qw_http_origin(c.endpoint, c.http.auth_origin, sizeof c.http.auth_origin);
        qw_hub_listing listing;
        qw_http_response resp;
        memset(&resp, 0, sizeof resp);
        st = api_listing(&c, &listing, &resp, err);
        if (st == QW_ERR_NETWORK && (*out_dir = cached_snapshot(&c)) != NULL) {
            /* as huggingface_hub does: the Hub cannot be reached, a cached copy can */
            qw_log(r, QW_LOG_WARNING, "%s: cannot reach the Hub (%s); using the cached snapshot %s",
                   c.id.repo, resp.curl_error[0] ? resp.curl_error : "server error", *out_dir);
            st = QW_OK;
            goto done;
        }
        if (st == QW_ERR_NETWORK && resp.curl_code) {
            qw_error_prefix(err, "cannot reach the Hub at %s and %s@%s is not in the cache %s "
                            "(check the network, a proxy, or HF_ENDPOINT): ", c.endpoint,
                            c.id.repo, c.id.revision, c.cache);
        }
        if (st != QW_OK) goto done;
        bool has_config = false, has_weights = false;
        for (size_t i = 0; i < listing.n_files; i++) {
            has_config |= strcmp(listing.files[i], "config.json") == 0;
            has_weights |= qw_str_ends_with(listing.files[i], ".safetensors");
        }
        if (!has_config) {
            st = qw_fail(err, QW_ERR_NOT_FOUND,
                         "%s@%s has no config.json, so it is not a transformers model that "
                         "qwodel can read", c.id.repo, c.id.revision);
        } else if (!has_weights) {
            st = qw_fail(err, QW_ERR_UNSUPPORTED_INPUT,
                         "%s@%s has no *.safetensors weights%s; qwodel reads safetensors only "
                         "(pickled weights can run code when loaded)", c.id.repo,
                         c.id.revision, listing.n_skipped_weights ? " (only .bin/.pth files)" : "");
        }
        if (st == QW_OK && strcmp(listing.sha, c.id.revision) != 0) {
            st = write_ref(&c, listing.sha, err);
        }
        if (st == QW_OK) st = fetch_listing(&c, &listing, r, out_dir, err);
        qw_hub_listing_free(&listing);
    }
done:
    qw_hub_token_free(token_value);
    qw_free(c.cache);
    qw_free(c.folder);
    qw_free(c.endpoint);
    return st;
}
