/*
 * json.h — JSON files through jansson, with getters that check types and name the file and key
 * in every error.
 */
#ifndef QW_JSON_H
#define QW_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"

/* Parses a whole buffer. Duplicate keys are an error. Integers too large for int64 (e.g. the
 * "unset" model_max_length sentinel 1e30 in tokenizer configs) are read as reals. `label` names
 * the source in messages. The caller owns *out (json_decref). */
qw_status qw_json_parse(const char *data, size_t len, const char *label, json_t **out,
                        qw_error *err);

/* Reads and parses a file of at most max_bytes. */
qw_status qw_json_load_file(const char *path, size_t max_bytes, json_t **out, qw_error *err);

/* Typed getters. A missing key (or JSON null) gives QW_OK with *found false (found may be NULL)
 * and leaves *out unchanged; a value of the wrong type is QW_ERR_CORRUPT naming `file` and key.
 * Integral reals are accepted as integers. */
qw_status qw_json_get_int(const json_t *obj, const char *key, const char *file, int64_t *out,
                          bool *found, qw_error *err);
qw_status qw_json_get_number(const json_t *obj, const char *key, const char *file, double *out,
                             bool *found, qw_error *err);
qw_status qw_json_get_bool(const json_t *obj, const char *key, const char *file, bool *out,
                           bool *found, qw_error *err);
/* The string is borrowed from obj. */
qw_status qw_json_get_string(const json_t *obj, const char *key, const char *file,
                             const char **out, bool *found, qw_error *err);

/* As above, but a missing key is an error. */
qw_status qw_json_require_int(const json_t *obj, const char *key, const char *file, int64_t *out,
                              qw_error *err);

/* Integer value of a JSON number if it is integral and fits int64. */
bool qw_json_integer_value(const json_t *v, int64_t *out);

/* Writes `value` as indented JSON (keys in insertion order, a final newline) to dir/name, under a
 * temporary name renamed into place when complete. A value with no JSON text (a string or object
 * key that is not UTF-8, a root that is not an object or array) is QW_ERR_INVALID_ARG, and
 * nothing is written. */
qw_status qw_json_write_file(const json_t *value, const char *dir, const char *name,
                             qw_error *err);
/* The same with jansson's dump flags chosen by the caller (a format another tool fixes, e.g.
 * coremltools' Manifest.json: JSON_INDENT(4) | JSON_SORT_KEYS). */
qw_status qw_json_write_file_flags(const json_t *value, const char *dir, const char *name,
                                   size_t flags, qw_error *err);

#endif /* QW_JSON_H */
