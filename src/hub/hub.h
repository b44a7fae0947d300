/*
 * hub.h — HuggingFace Hub models and datasets: repository IDs, the standard cache (the layout
 * huggingface_hub writes, so either tool reuses the other's downloads), downloads over libcurl,
 * and calibration text samples. This is the only code in qwodel that touches the network.
 *
 * Environment (read at each call, as huggingface_hub does):
 *   HF_ENDPOINT            the Hub (default https://huggingface.co; a trailing '/' is dropped)
 *   HF_HUB_CACHE           the cache (else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, with
 *                          HF_HOME defaulting to $XDG_CACHE_HOME/huggingface, else
 *                          ~/.cache/huggingface)
 *   HF_TOKEN               token when none is given (else HUGGING_FACE_HUB_TOKEN, else the file
 *                          $HF_TOKEN_PATH, default $HF_HOME/token)
 *   HF_HUB_OFFLINE         1/ON/YES/TRUE (or TRANSFORMERS_OFFLINE): cache only, no request at all
 *   HF_DATASETS_SERVER     the dataset viewer API (default https://datasets-server.huggingface.co)
 *
 * The token is sent only to the Hub's own origin (scheme, host and port of HF_ENDPOINT or of the
 * dataset viewer): a redirect to any other host (a CDN with a signed URL) is followed without it.
 * It never appears in a log line, an error message or a file qwodel writes.
 *
 * Not thread-safe across calls that write the same cache entry from two processes at once beyond
 * what the per-blob lock file gives (the same advisory lock huggingface_hub takes).
 */
#ifndef QW_HUB_H
#define QW_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* ---- repository IDs ------------------------------------------------------------------------- */

typedef struct qw_hub_id {
    char repo[128];     /* "org/name" */
    char revision[256]; /* "main" when the ID names none */
    char name[128];     /* "name": the model name for output files */
} qw_hub_id;

/* Parses "org/name" or "org/name@revision". Both parts use the Hub's alphabet (letters, digits,
 * '-', '_', '.'), neither starts or ends with '-' or '.', and "--" / ".." are refused (they would
 * make the cache folder name ambiguous). QW_ERR_INVALID_ARG naming the ID otherwise. */
qw_status qw_hub_id_parse(const char *spec, qw_hub_id *out, qw_error *err);

/* True when `path` is not an existing local file or directory and parses as a Hub ID: a local
 * path always wins. */
bool qw_hub_is_model_id(const char *path);

/* ---- cache paths (all returned strings are owned by the caller, qw_free) -------------------- */

/* $HF_HUB_CACHE resolved as described above; NULL only when out of memory. */
char *qw_hub_cache_dir(void);

/* "models--org--name" (kind "models"/"datasets"/"spaces"). */
char *qw_hub_repo_folder(const char *kind, const char *repo);

/* The relative symlink target from snapshots/<commit>/<file> to blobs/<etag>: "../../blobs/<etag>"
 * with one more "../" per '/' in `file`. */
char *qw_hub_blob_link(const char *file, const char *etag);

/* Whether a repository file is one qwodel fetches: config.json, generation_config.json, the
 * tokenizer files and *.safetensors (+ the index). Pickled and other weights never. */
bool qw_hub_file_wanted(const char *file);

/* ---- Hub responses --------------------------------------------------------------------------- */

/* Maps a failed Hub response onto a status and a message that says what happened and what to do.
 * `http_code` is the HTTP status, `error_code` the X-Error-Code header and `error_message` the
 * X-Error-Message header (either may be NULL); `repo`, `revision` and `file` (may be NULL) name
 * what was asked for. Always returns a failing status. */
qw_status qw_hub_http_error(long http_code, const char *error_code, const char *error_message,
                            const char *repo, const char *revision, const char *file,
                            qw_error *err);

/* The files of a revision, from GET /api/models/{repo}/revision/{rev}. */
typedef struct qw_hub_listing {
    char sha[41];  /* the commit */
    char **files;  /* wanted files only (qw_hub_file_wanted), in the listing's order */
    size_t n_files;
    size_t n_skipped_weights; /* .bin/.pth/... weights present and not fetched */
} qw_hub_listing;

/* Parses the revision JSON (`label` names it in errors): a 40-hex "sha" and "siblings" of
 * {"rfilename"}. Anything else is QW_ERR_CORRUPT naming the key. */
qw_status qw_hub_listing_parse(const char *json, size_t len, const char *label,
                               qw_hub_listing *out, qw_error *err);
void qw_hub_listing_free(qw_hub_listing *l);

/* Checks a downloaded file: its size, and its sha256 when `etag` is one (64 hex digits, as LFS
 * etags are). QW_ERR_CORRUPT naming `label` on a mismatch. */
qw_status qw_hub_verify_file(const char *path, const char *etag, uint64_t expected_bytes,
                             const char *label, qw_error *err);

/* Lower-case hex sha256 of a buffer into hex[65]. */
void qw_sha256_hex(const void *data, size_t len, char hex[65]);

/* ---- models ---------------------------------------------------------------------------------- */

/* Makes the snapshot of a Hub model ID complete in the cache and returns its directory
 * (.../models--org--name/snapshots/<commit>), which the caller frees. `token` may be NULL (then
 * the environment's). Offline, or when the Hub cannot be reached, a cached snapshot of that
 * revision is used as it is. Errors: QW_ERR_ACCESS_DENIED (gated, private, bad token),
 * QW_ERR_NOT_FOUND (repository, revision or file), QW_ERR_NETWORK (no network and not cached),
 * QW_ERR_CORRUPT (a download that does not match its size or sha256), QW_ERR_UNSUPPORTED_INPUT
 * (no safetensors weights), QW_ERR_CANCELLED. Progress: stage "downloading", bytes in the
 * message. */
qw_status qw_hub_snapshot(const char *model_id, const char *token, qw_reporter *reporter,
                          char **out_dir, qw_error *err);

/* ---- calibration text ------------------------------------------------------------------------ */

typedef struct qw_calib {
    char **samples;
    size_t n_samples;
    bool builtin; /* the samples are qwodel's built-in text (asked for, or the offline fallback) */
} qw_calib;

/* The dataset used when none is given (spec NULL in qw_calib_load). */
#define QW_CALIB_DEFAULT_DATASET "wikitext:wikitext-2-raw-v1"

/* qwodel's built-in calibration text (calib_builtin.c): independent UTF-8 paragraphs of varied
 * kinds, for offline use. Sample i < count, else NULL; the strings are static. */
size_t qw_calib_builtin_count(void);
const char *qw_calib_builtin_sample(size_t i);

/*
 * Up to `max_samples` non-empty text samples for a calibration dataset spec:
 *  - an existing local file: .txt (one sample per non-empty line, "\r\n" accepted), .jsonl (one
 *    JSON object per non-blank line) or .json (an array of records, or an object whose member
 *    named `split`, else "data", else "rows", is one); a record is a string (in .json arrays) or
 *    an object whose "text" field, else first string field, is the sample;
 *  - otherwise a Hub dataset "repo[:config]" (config "default" when absent) read through the
 *    dataset viewer's /rows API, 100 rows a page, split `split` (NULL: "train"), taking the
 *    "text" column (else the first string column) and skipping empty and whitespace-only rows.
 *    Pages are cached as JSON under $HF_HUB_CACHE/.qwodel-rows/datasets--org--name/<config>/
 *    <split>/<offset>.json and read from there offline.
 *  - "builtin" (any case): qwodel's built-in text, the first `max_samples` of its samples;
 *  - NULL: the default Hub dataset, QW_CALIB_DEFAULT_DATASET. When it can be neither reached nor
 *    read from the cache (QW_ERR_NETWORK, HF_HUB_OFFLINE included), the built-in text is used
 *    instead, with a warning through `reporter`. A dataset the caller names is never replaced:
 *    its network, access and not-found errors are returned.
 * Errors name the file, line or dataset; a spec that yields no sample is QW_ERR_INVALID_ARG.
 */
qw_status qw_calib_load(const char *spec, const char *split, size_t max_samples,
                        const char *token, qw_reporter *reporter, qw_calib **out, qw_error *err);
void qw_calib_free(qw_calib *c);

#endif /* QW_HUB_H */
