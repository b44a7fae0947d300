/* Hub models: IDs, the environment, the cache layout huggingface_hub uses, error mapping and the
 * snapshot download (list the revision, HEAD each file for its etag and size, GET the blob with
 * resume, check it, link it into the snapshot). */
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

#include <jansson.h>

#include "file.h"
#include "hub_private.h"
#include "json.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define DEFAULT_DATASETS_SERVER "https://datasets-server.huggingface.co"

/* ---- environment ----------------------------------------------------------------------------- */

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static char *without_trailing_slash(const char *s) {
    char *out = qw_strdup(s);
    if (!out) return NULL;
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/') out[--n] = '\0';
    return out;
}

char *qw_hub_endpoint(void) {
    const char *e = env_nonempty("HF_ENDPOINT");
    return without_trailing_slash(e ? e : DEFAULT_ENDPOINT);
}

char *qw_hub_datasets_server(void) {
    const char *e = env_nonempty("HF_DATASETS_SERVER");
    return without_trailing_slash(e ? e : DEFAULT_DATASETS_SERVER);
}

/* huggingface_hub's rule for boolean variables: upper-cased value in {1, ON, YES, TRUE}. */
static bool env_true(const char *name) {
    static const char *const yes[] = {"1", "ON", "YES", "TRUE"};
    const char *v = getenv(name);
    if (!v) return false;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (qw_strcasecmp(v, yes[i]) == 0) return true;
    }
    return false;
}

bool qw_hub_offline(void) { return env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE"); }

static char *hf_home(void) {
    const char *home = env_nonempty("HF_HOME");
    if (home) return qw_strdup(home);
    const char *xdg = env_nonempty("XDG_CACHE_HOME");
    if (xdg) return qw_path_join(xdg, "huggingface");
    const char *user = env_nonempty("HOME");
    return qw_sprintf("%s/.cache/huggingface", user ? user : ".");
}

char *qw_hub_cache_dir(void) {
    const char *c = env_nonempty("HF_HUB_CACHE");
    if (!c) c = env_nonempty("HUGGINGFACE_HUB_CACHE");
    if (c) return qw_strdup(c);
    char *home = hf_home();
    char *out = home ? qw_path_join(home, "hub") : NULL;
    qw_free(home);
    return out;
}

static char *strip_dup(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return qw_strndup(s, n);
}

char *qw_hub_token(const char *given) {
    if (given && *given) return strip_dup(given, strlen(given));
    const char *env = env_nonempty("HF_TOKEN");
    if (!env) env = env_nonempty("HUGGING_FACE_HUB_TOKEN");
    if (env) return strip_dup(env, strlen(env));
    const char *path = env_nonempty("HF_TOKEN_PATH");
    char *home = path ? NULL : hf_home();
    char *file = path ? qw_strdup(path) : home ? qw_path_join(home, "token") : NULL;
    qw_free(home);
    char *data = NULL, *token = NULL;
    size_t len = 0;
    if (file && qw_path_is_file(file) && qw_file_read_all(file, 4096, &data, &len, NULL) == QW_OK) {
        token = strip_dup(data, len);
        memset(data, 0, len);
        if (token && !*token) {
            qw_free(token);
            token = NULL;
        }
    }
    qw_free(data);
    qw_free(file);
    return token;
}

void qw_hub_token_free(char *token) {
    if (!token) return;
    memset(token, 0, strlen(token));
    qw_free(token);
}

/* ---- IDs and cache paths --------------------------------------------------------------------- */

static bool name_part_ok(const char *s, size_t n) {
    if (n == 0 || n > 96) return false;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return false;
        if (i && (c == '-' || c == '.') && s[i - 1] == c) return false; /* "--" and ".." */
    }
    return true;
}

static bool revision_ok(const char *s) {
    if (!*s || strlen(s) >= sizeof ((qw_hub_id *)0)->revision) return false;
    if (s[0] == '/' || strstr(s, "..") || qw_str_ends_with(s, "/")) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == '\\' || *p == 0x7f) return false;
    }
    return true;
}

qw_status qw_hub_id_parse(const char *spec, qw_hub_id *out, qw_error *err) {
    memset(out, 0, sizeof *out);
    if (!spec) return qw_fail(err, QW_ERR_INVALID_ARG, "model ID is NULL");
    const char *at = strchr(spec, '@');
    size_t repo_len = at ? (size_t)(at - spec) : strlen(spec);
    const char *slash = memchr(spec, '/', repo_len);
    bool ok = slash && name_part_ok(spec, (size_t)(slash - spec)) &&
              name_part_ok(slash + 1, repo_len - (size_t)(slash - spec) - 1) &&
              repo_len < sizeof out->repo;
    if (!ok) {
        return qw_fail(err, QW_ERR_INVALID_ARG,
                       "\"%s\" is not a HuggingFace model ID (expected org/name or "
                       "org/name@revision, letters, digits, '-', '_' and '.') nor an existing "
                       "local path", spec);
    }
    if (at && !revision_ok(at + 1)) {
        return qw_fail(err, QW_ERR_INVALID_ARG, "\"%s\": bad revision after '@'", spec);
    }
    memcpy(out->repo, spec, repo_len);
    snprintf(out->revision, sizeof out->revision, "%s", at ? at + 1 : "main");
    snprintf(out->name, sizeof out->name, "%s", slash + 1);
    out->name[repo_len - (size_t)(slash - spec) - 1] = '\0';
    return QW_OK;
}

bool qw_hub_is_model_id(const char *path) {
    qw_hub_id id;
    return path && !qw_path_exists(path) && qw_hub_id_parse(path, &id, NULL) == QW_OK;
}

char *qw_hub_repo_folder(const char *kind, const char *repo) {
    qw_buf b = {0};
    bool ok = qw_buf_printf(&b, "%s--", kind);
    for (const char *p = repo; ok && *p; p++) {
        ok = *p == '/' ? qw_buf_append(&b, "--", 2) : qw_buf_append(&b, p, 1);
    }
    if (!ok || !qw_buf_append(&b, "", 1)) {
        qw_buf_free(&b);
        return NULL;
    }
    return b.data;
}

char *qw_hub_blob_link(const char *file, const char *etag) {
    qw_buf b = {0};
    bool ok = qw_buf_append(&b, "../../", 6);
    for (const char *p = file; ok && *p; p++) {
        if (*p == '/') ok = qw_buf_append(&b, "../", 3);
    }
    ok = ok && qw_buf_printf(&b, "blobs/%s", etag);
    if (!ok) {
        qw_buf_free(&b);
        return NULL;
    }
    return b.data;
}

bool qw_hub_file_wanted(const char *file) {
    /* What a model directory needs and nothing else: pickled weights (.bin, .pth) are never
     * fetched (they are code, and qwodel reads safetensors only), nor other frameworks' copies. */
    static const char *const exact[] = {
        "config.json",           "generation_config.json", "tokenizer.json",
        "tokenizer.model",       "tokenizer_config.json",  "special_tokens_map.json",
        "model.safetensors.index.json",
    };
    if (strchr(file, '/')) return false; /* the model is the repository's top level */
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (strcmp(file, exact[i]) == 0) return true;
    }
    /* Mistral repositories carry their own-format weights as consolidated*.safetensors next to
     * the transformers shards: fetching both would double the download for nothing. */
    return qw_str_ends_with(file, ".safetensors") && !qw_str_starts_with(file, "consolidated");
}

static bool is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i])) return false;
    }
    return true;
}

/* An etag becomes a file name: nothing that could leave blobs/. */
bool qw_hub_etag_ok(const char *e) {
    if (!*e || strlen(e) > 128 || e[0] == '.') return false;
    for (const char *p = e; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') return false;
    }
    return true;
}

/* ---- errors ---------------------------------------------------------------------------------- */

typedef struct http_error_row {
    const char *error_code;       /* X-Error-Code to match, or NULL */
    const char *message_contains; /* X-Error-Message substring to match, or NULL */
    long code_min, code_max;      /* HTTP status range to match */
    qw_status status;
    const char *happened;
    const char *advice; /* what the user can do about it */
} http_error_row;

/* First matching row wins: the Hub's own error codes, then the HTTP status alone. */
static const http_error_row http_errors[] = {
    {NULL, "Invalid credentials", 401, 401, QW_ERR_ACCESS_DENIED,
     "the token was rejected (401, invalid credentials)",
     "Check the token (the token option, --token, HF_TOKEN or $HF_HOME/token) or create a new one "
     "at https://huggingface.co/settings/tokens."},
    {"GatedRepo", NULL, 0, 999, QW_ERR_ACCESS_DENIED,
     "the repository is gated and the request has no access to it",
     "Accept its conditions on the model page while logged in, then pass a token of that account "
     "(the token option, --token, or HF_TOKEN)."},
    {"RepoNotFound", NULL, 0, 999, QW_ERR_NOT_FOUND,
     "repository not found (or it is private and the request has no access to it)",
     "Check the model ID; for a private repository pass a token that can read it."},
    {"RevisionNotFound", NULL, 0, 999, QW_ERR_NOT_FOUND, "revision not found",
     "Check the branch, tag or commit after '@' (without one, \"main\" is used)."},
    {"EntryNotFound", NULL, 0, 999, QW_ERR_NOT_FOUND, "file not found at this revision",
     "The repository does not hold this file at this revision."},
    {NULL, NULL, 401, 401, QW_ERR_ACCESS_DENIED, "authentication required (401)",
     "Pass a token that can read this repository (the token option, --token, or HF_TOKEN)."},
    {NULL, NULL, 403, 403, QW_ERR_ACCESS_DENIED, "access forbidden (403)",
     "Pass a token that can read this repository, or ask its owner for access."},
    {NULL, NULL, 404, 404, QW_ERR_NOT_FOUND, "not found (404)",
     "Check the model ID, the revision and HF_ENDPOINT."},
    {NULL, NULL, 429, 429, QW_ERR_NETWORK, "rate limited by the Hub (429)",
     "Wait a few minutes and try again; authenticated requests get a higher limit."},
    {NULL, NULL, 500, 599, QW_ERR_NETWORK, "the Hub answered with a server error",
     "Try again later."},
    {NULL, NULL, 0, 999, QW_ERR_NETWORK, "unexpected answer from the Hub",
     "Check HF_ENDPOINT and try again."},
};

qw_status qw_hub_http_error(long http_code, const char *error_code, const char *error_message,
                            const char *repo, const char *revision, const char *file,
                            qw_error *err) {
    const http_error_row *row = &http_errors[sizeof http_errors / sizeof http_errors[0] - 1];
    for (size_t i = 0; i < sizeof http_errors / sizeof http_errors[0]; i++) {
        const http_error_row *r = &http_errors[i];
        if (http_code < r->code_min || http_code > r->code_max) continue;
        if (r->error_code && (!error_code || strcmp(error_code, r->error_code) != 0)) continue;
        if (r->message_contains &&
            (!error_message || !strstr(error_message, r->message_contains))) {
            continue;
        }
        row = r;
        break;
    }
    return qw_fail_at(err, row->status, file ? file : "", -1,
                      "%s%s%s (revision %s): %s [HTTP %ld%s%s]. %s", repo ? repo : "?",
                      file ? ", file " : "", file ? file : "",
                      revision ? revision : "main", row->happened, http_code,
                      error_code && *error_code ? ", " : "", error_code ? error_code : "",
                      row->advice);
}

/* ---- listing --------------------------------------------------------------------------------- */

void qw_hub_listing_free(qw_hub_listing *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n_files; i++) qw_free(l->files[i]);
    qw_free(l->files);
    memset(l, 0, sizeof *l);
}

static bool pickled_weights(const char *file) {
    static const char *const exts[] = {".bin", ".pth", ".pt", ".ckpt", ".onnx", ".gguf",
                                       ".msgpack", ".h5"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        if (qw_str_ends_with(file, exts[i])) return true;
    }
    return false;
}

qw_status qw_hub_listing_parse(const char *text, size_t len, const char *label,
                               qw_hub_listing *out, qw_error *err) {
    memset(out, 0, sizeof *out);
    json_t *root = NULL;
    QW_TRY(qw_json_parse(text, len, label, &root, err));
    qw_status st = QW_OK;
    json_t *sha = json_object_get(root, "sha");
    json_t *siblings = json_object_get(root, "siblings");
    if (!json_is_object(root)) {
        st = qw_fail(err, QW_ERR_CORRUPT, "%s: not a JSON object", label);
    } else if (!json_is_string(sha) || !is_hex(json_string_value(sha), 40)) {
        st = qw_fail_at(err, QW_ERR_CORRUPT, "sha", -1,
                        "%s: \"sha\" is missing or not a 40-hex commit", label);
    } else if (!json_is_array(siblings)) {
        st = qw_fail_at(err, QW_ERR_CORRUPT, "siblings", -1,
                        "%s: \"siblings\" is missing or not an array", label);
    }
    if (st == QW_OK) {
        snprintf(out->sha, sizeof out->sha, "%s", json_string_value(sha));
        out->files = qw_calloc(json_array_size(siblings) + 1, sizeof *out->files);
        if (!out->files) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; st == QW_OK && i < json_array_size(siblings); i++) {
        json_t *name = json_object_get(json_array_get(siblings, i), "rfilename");
        const char *f = json_string_value(name);
        if (!f || !*f || f[0] == '/' || strstr(f, "..")) {
            st = qw_fail_at(err, QW_ERR_CORRUPT, "siblings", -1,
                            "%s: siblings[%zu] has no valid \"rfilename\"", label, i);
        } else if (qw_hub_file_wanted(f)) {
            out->files[out->n_files] = qw_strdup(f);
            if (!out->files[out->n_files++]) st = qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
        } else if (!strchr(f, '/') && pickled_weights(f)) {
            out->n_skipped_weights++;
        }
    }
    json_decref(root);
    if (st != QW_OK) qw_hub_listing_free(out);
    return st;
}

/* ---- verification ---------------------------------------------------------------------------- */

qw_status qw_hub_verify_file(const char *path, const char *etag, uint64_t expected_bytes,
                             const char *label, qw_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qw_fail(err, QW_ERR_IO, "%s: cannot open %s: %s", label, path, strerror(errno));
    bool hash = etag && is_hex(etag, 64);
    qw_sha256 *s = hash ? qw_sha256_create() : NULL;
    uint64_t total = 0;
    enum { CHUNK = 1 << 16 };
    char *chunk = qw_malloc(CHUNK);
    if (!chunk || (hash && !s)) {
        fclose(f);
        qw_free(chunk);
        qw_sha256_free(s);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    size_t n;
    /* sizes are checked even when there is no sha256 to check */
    while ((n = fread(chunk, 1, CHUNK, f)) > 0) {
        total += n;
        if (hash) qw_sha256_update(s, chunk, n);
    }
    bool read_error = ferror(f);
    fclose(f);
    qw_free(chunk);
    if (read_error || total != expected_bytes) qw_sha256_free(s);
    if (read_error) return qw_fail(err, QW_ERR_IO, "%s: cannot read %s", label, path);
    if (total != expected_bytes) {
        return qw_fail(err, QW_ERR_CORRUPT,
                       "%s: download has %llu bytes, the Hub announced %llu (consistency check "
                       "failed); run again to download it anew",
                       label, (unsigned long long)total, (unsigned long long)expected_bytes);
    }
    if (hash) {
        char hex[65];
        qw_sha256_finish(s, hex);
        char want[65];
        snprintf(want, sizeof want, "%s", etag);
        qw_str_lower(want);
        if (strcmp(hex, want) != 0) {
            return qw_fail(err, QW_ERR_CORRUPT,
                           "%s: sha256 of the download is %s, the Hub announced %s; run again to "
                           "download it anew", label, hex, want);
        }
    }
    return QW_OK;
}
