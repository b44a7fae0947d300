/*
 * calib_dump — prints the calibration samples qwodel would use, as one JSON array of strings on
 * stdout, so the Python tests can compare them with the data they served or wrote.
 *
 *   calib_dump <dataset spec> [split] [max_samples]
 *
 * The token comes from the environment (HF_TOKEN), as it would for a backend without the token
 * option. On failure: the status name and message on stderr, exit 1.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "hub.h"

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: calib_dump <dataset spec> [split] [max_samples]\n");
        return 2;
    }
    const char *split = argc > 2 ? argv[2] : NULL;
    size_t max = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 128;
    qw_calib *c = NULL;
    qw_error err = {0};
    qw_status st = qw_calib_load(argv[1], split, max, NULL, NULL, &c, &err);
    if (st != QW_OK) {
        fprintf(stderr, "%s: %s\n", qw_status_name(st), err.message);
        return 1;
    }
    json_t *out = json_array();
    for (size_t i = 0; out && i < c->n_samples; i++) {
        json_array_append_new(out, json_string(c->samples[i]));
    }
    char *text = out ? json_dumps(out, JSON_ENSURE_ASCII) : NULL;
    if (text) printf("%s\n", text);
    free(text);
    json_decref(out);
    qw_calib_free(c);
    return text ? 0 : 1;
}
