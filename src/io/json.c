/* jansson wrappers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "json.h"

qw_status qw_json_parse(const char *data, size_t len, const char *label, json_t **out,
                        qw_error *err) {
    *out = NULL;
    json_error_t je;
    size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
    json_t *root = json_loadb(data, len, flags, &je);
    if (!root && json_error_code(&je) == json_error_numeric_overflow) {
        root = json_loadb(data, len, flags | JSON_DECODE_INT_AS_REAL, &je);
    }
    if (!root) {
        return qw_fail_at(err, QW_ERR_CORRUPT, NULL, je.position,
                          "%s: invalid JSON at line %d, column %d: %s", label, je.line, je.column,
                          je.text);
    }
    *out = root;
    return QW_OK;
}

qw_status qw_json_load_file(const char *path, size_t max_bytes, json_t **out, qw_error *err) {
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    QW_TRY(qw_file_read_all(path, max_bytes, &text, &len, err));
    qw_status st = qw_json_parse(text, len, path, out, err);
    qw_free(text);
    return st;
}

bool qw_json_integer_value(const json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

static const json_t *lookup(const json_t *obj, const char *key, bool *found) {
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (v && json_is_null(v)) v = NULL;
    if (found) *found = v != NULL;
    return v;
}

qw_status qw_json_get_int(const json_t *obj, const char *key, const char *file, int64_t *out,
                          bool *found, qw_error *err) {
    const json_t *v = lookup(obj, key, found);
    if (!v) return QW_OK;
    if (!qw_json_integer_value(v, out)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: key \"%s\" must be an integer", file,
                          key);
    }
    return QW_OK;
}

qw_status qw_json_get_number(const json_t *obj, const char *key, const char *file, double *out,
                             bool *found, qw_error *err) {
    const json_t *v = lookup(obj, key, found);
    if (!v) return QW_OK;
    if (!json_is_number(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: key \"%s\" must be a number", file,
                          key);
    }
    *out = json_number_value(v);
    return QW_OK;
}

qw_status qw_json_get_bool(const json_t *obj, const char *key, const char *file, bool *out,
                           bool *found, qw_error *err) {
    const json_t *v = lookup(obj, key, found);
    if (!v) return QW_OK;
    if (!json_is_boolean(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: key \"%s\" must be true or false",
                          file, key);
    }
    *out = json_is_true(v);
    return QW_OK;
}

qw_status qw_json_get_string(const json_t *obj, const char *key, const char *file,
                             const char **out, bool *found, qw_error *err) {
    const json_t *v = lookup(obj, key, found);
    if (!v) return QW_OK;
    if (!json_is_string(v)) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: key \"%s\" must be a string", file,
                          key);
    }
    *out = json_string_value(v);
    return QW_OK;
}

qw_status qw_json_require_int(const json_t *obj, const char *key, const char *file, int64_t *out,
                              qw_error *err) {
    bool found = false;
    QW_TRY(qw_json_get_int(obj, key, file, out, &found, err));
    if (!found) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1, "%s: required key \"%s\" is missing",
                          file, key);
    }
    return QW_OK;
}

qw_status qw_json_write_file(const json_t *value, const char *dir, const char *name,
                             qw_error *err) {
    return qw_json_write_file_flags(value, dir, name, JSON_INDENT(2) | JSON_PRESERVE_ORDER, err);
}

/* jansson's dump refuses a string that is not UTF-8 but writes such an object key as a lone '"'
 * and reports success: every key is checked here first (json_stringn checks as the dump does). */
static bool keys_are_utf8(const json_t *v) {
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (!keys_are_utf8(json_array_get(v, i))) return false;
        }
    } else if (json_is_object(v)) {
        const char *key;
        size_t key_len;
        json_t *child;
        json_object_keylen_foreach((json_t *)v, key, key_len, child) {
            json_t *k = json_stringn(key, key_len);
            json_decref(k);
            if (!k || !keys_are_utf8(child)) return false;
        }
    }
    return true;
}

qw_status qw_json_write_file_flags(const json_t *value, const char *dir, const char *name,
                                   size_t flags, qw_error *err) {
    char *path = qw_path_join(dir, name);
    char *text = path && keys_are_utf8(value) ? json_dumps(value, flags) : NULL;
    qw_output *o = NULL;
    qw_status st = !path ? qw_fail(err, QW_ERR_NO_MEMORY, "out of memory")
                   : !text
                       ? qw_fail(err, QW_ERR_INVALID_ARG,
                                 "%s: not written: the value has no JSON text (a string or key "
                                 "that is not UTF-8, or a root that is not an object or array)",
                                 path)
                       : qw_output_open(path, &o, err);
    if (st == QW_OK) st = qw_output_write(o, text, strlen(text), err);
    if (st == QW_OK) st = qw_output_write(o, "\n", 1, err);
    if (st == QW_OK) {
        st = qw_output_commit(o, err);
        o = NULL;
    }
    qw_output_abort(o);
    free(text);
    qw_free(path);
    return st;
}
