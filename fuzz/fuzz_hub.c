/* What the Hub sends and the user types: the revision listing (qw_hub_listing_parse, whose file
 * names become paths in the cache) and model IDs (qw_hub_id_parse, which become cache folder
 * names). The first input byte picks which; the rest is the text. Nothing touches the network. */
#include "fuzz_util.h"
#include "hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A name that could leave its directory: absolute, or with a ".." component. */
static bool escapes(const char *s) {
    if (s[0] == '/') return true;
    for (const char *p = s; (p = strstr(p, "..")) != NULL; p++) {
        if ((p == s || p[-1] == '/') && (p[2] == '\0' || p[2] == '/')) return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    qw_error err;
    if (data[0] & 1) {
        char *spec = malloc(len + 1);
        if (!spec) abort();
        memcpy(spec, text, len);
        spec[len] = '\0';
        qw_hub_id id;
        if (qw_hub_id_parse(spec, &id, &err) == QW_OK) {
            /* an accepted ID is a safe folder name: no "..", no leading '/', one '/' */
            if (escapes(id.repo) || strstr(id.repo, "..") || !strchr(id.repo, '/') ||
                strchr(strchr(id.repo, '/') + 1, '/') || strchr(id.name, '/')) {
                __builtin_trap();
            }
            char *folder = qw_hub_repo_folder("models", id.repo);
            if (!folder || strchr(folder, '/')) __builtin_trap();
            qw_free(folder);
        }
        free(spec);
        return 0;
    }
    qw_hub_listing l;
    memset(&l, 0, sizeof l);
    if (qw_hub_listing_parse(text, len, "fuzz/revision.json", &l, &err) == QW_OK) {
        for (size_t i = 0; i < l.n_files; i++) {
            if (!l.files[i][0] || escapes(l.files[i])) __builtin_trap();
        }
        qw_hub_listing_free(&l);
    }
    return 0;
}
