/* Calibration text readers (qw_calib_load): a local .txt, .json or .jsonl file, or a cached page
 * of the dataset viewer's /rows answer. The first input byte picks which; the rest is the file.
 * The Hub is switched off (HF_HUB_OFFLINE) and its cache is the harness's scratch directory, so
 * nothing here touches the network. */
#include "fuzz_util.h"
#include "hub.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DATASET "fuzzorg/fuzzset"

static char page_path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char cache[4200];
    snprintf(cache, sizeof cache, "%s/hub", fuzz_dir());
    setenv("HF_HUB_OFFLINE", "1", 1);
    setenv("HF_HUB_CACHE", cache, 1);
    unsetenv("HF_TOKEN");
    char dir[4200];
    const char *parts[] = {"", "/.qwodel-rows", "/datasets--fuzzorg--fuzzset", "/default",
                           "/train"};
    snprintf(dir, sizeof dir, "%s", cache);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        strncat(dir, parts[i], sizeof dir - strlen(dir) - 1);
        (void)mkdir(dir, 0700);
    }
    snprintf(page_path, sizeof page_path, "%s/0.json", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[] = {"calib.txt", "calib.json", "calib.jsonl", NULL};
    if (size < 1) return 0;
    const char *name = names[data[0] % 4];
    const char *spec = name ? fuzz_path(name) : DATASET;
    fuzz_write_file(name ? spec : page_path, data + 1, size - 1);
    qw_calib *c = NULL;
    qw_error err;
    /* the split selects a member of a .json object, and the cached page's folder */
    if (qw_calib_load(spec, NULL, 64, NULL, NULL, &c, &err) == QW_OK) {
        if (c->n_samples == 0 || c->n_samples > 64) __builtin_trap();
    }
    qw_calib_free(c);
    return 0;
}
