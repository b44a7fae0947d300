/* JSON file writer round trip: a jansson value tree derived from the input (objects, arrays,
 * strings of any bytes, integers and reals at their extremes, true/false/null; bounded depth and
 * size) is written with qw_json_write_file or qw_json_write_file_flags (flags from the input),
 * then read back with jansson's json_load_file and with our qw_json_load_file: both must give the
 * tree back equal (json_equal, and a stricter comparison: reals bit for bit, -0.0 included, and
 * object keys in insertion order unless the keys were sorted), and the file must be the dump
 * with a final newline. The writer may refuse a tree that has no JSON text (a string that is not
 * UTF-8, a root that is not an object or array without JSON_ENCODE_ANY): that must be a clean
 * error: a status with a message, not out-of-memory, and nothing left in the folder (neither the
 * file nor a temporary one).
 *
 * Non-finite reals cannot be put in a tree (json_real refuses them), so they never reach the
 * writer: the harness checks that jansson still refuses them. Object keys carry no NUL: jansson's
 * reader rejects "\u0000" in a key whatever the flags, though its writer escapes it.
 *
 * Found (regressions/json_roundtrip/): jansson 2.14 dumps an object key that is not UTF-8 as a
 * lone '"' and reports success, so the writer published malformed JSON, or JSON that reads back
 * with other keys (e.g. tokenizer.json from a GGUF vocabulary with such a token): invalid_utf8_key,
 * invalid_utf8_keys_parse_as_others; and it reported every refusal as out of memory:
 * invalid_utf8_string, scalar_root. It now checks the keys first and says what is wrong. */
#include <dirent.h>
#include <float.h>
#include <math.h>

#include "fuzz_util.h"
#include "file.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DEPTH 6
#define MAX_NODES 64
#define MAX_CHILDREN 6
#define MAX_STR 24 /* characters (up to 4 bytes each) */

static const json_int_t ints[] = {0, 1, -1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1,
                                  INT32_MAX, (json_int_t)INT32_MAX + 1, INT32_MIN,
                                  (json_int_t)INT32_MIN - 1, 1LL << 53, (1LL << 53) + 1,
                                  -(1LL << 53) - 1, 1000000000000000000LL};

static const double reals[] = {0.0, -0.0, 1.0, -1.0, 0.1, 1e308, -1e308, DBL_MAX, -DBL_MAX,
                               DBL_MIN, 4.9406564584124654e-324, 1e-7, 1e16, 1e21, 1e30,
                               9007199254740993.0, 0.30000000000000004, 123456789.125,
                               1.7976931348623157e308, 2.2250738585072009e-308};

/* code points around every UTF-8 length boundary and the escapes */
static const uint32_t code_points[] = {0x0,    0x1f,   0x22,    0x2f,    0x5c,    0x7f,
                                       0x80,   0x7ff,  0x800,   0xd7ff,  0xe000,  0xfeff,
                                       0xfffd, 0xffff, 0x10000, 0x1f600, 0x10ffff, 0x2028};

typedef struct builder {
    fuzz_bytes *b;
    int nodes;
} builder;

static size_t put_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string: as text (UTF-8 of chosen code points) or raw bytes (often not UTF-8). A key gets no
 * NUL. Returns the length; buf holds MAX_STR * 4 bytes. */
static size_t make_string(fuzz_bytes *b, char *buf, bool key) {
    uint8_t how = fuzz_u8(b);
    size_t chars = (how >> 1) % (MAX_STR + 1), len = 0;
    for (size_t i = 0; i < chars && b->n; i++) {
        uint8_t c = fuzz_u8(b);
        if (how & 1) { /* raw bytes */
            buf[len++] = (char)(key && !c ? 'k' : c);
            continue;
        }
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
        } else if (c < 0xc0) {
            cp = code_points[c % (sizeof code_points / sizeof code_points[0])];
        } else { /* any scalar value */
            cp = (((uint32_t)(c & 0x1f) << 16) | fuzz_u8(b) | (uint32_t)fuzz_u8(b) << 8) % 0x110000;
            if (cp >= 0xd800 && cp < 0xe000) cp -= 0x800;
        }
        if (key && !cp) cp = 'k';
        len += put_utf8(cp, buf + len);
    }
    return len;
}

static json_t *make_value(builder *bd, int depth) {
    fuzz_bytes *b = bd->b;
    bd->nodes++;
    uint8_t kind = fuzz_u8(b);
    bool leaf_only = depth >= MAX_DEPTH || bd->nodes >= MAX_NODES || !b->n;
    switch (kind % 9) {
    case 0:
    case 1: {
        if (leaf_only) return json_null();
        bool object = kind % 9 == 0;
        json_t *v = object ? json_object() : json_array();
        if (!v) abort();
        size_t n = fuzz_u8(b) % (MAX_CHILDREN + 1);
        for (size_t i = 0; i < n && bd->nodes < MAX_NODES; i++) {
            char key[MAX_STR * 4];
            size_t key_len = object ? make_string(b, key, true) : 0;
            json_t *child = make_value(bd, depth + 1);
            if (!child) abort();
            /* _nocheck: keys that are not UTF-8 get in too; a repeated key replaces the value */
            int rc = object ? json_object_setn_new_nocheck(v, key, key_len, child)
                            : json_array_append_new(v, child);
            if (rc != 0) abort();
        }
        return v;
    }
    case 2: {
        char s[MAX_STR * 4];
        size_t len = make_string(b, s, false);
        return json_stringn_nocheck(s, len);
    }
    case 3: {
        uint8_t pick = fuzz_u8(b);
        json_int_t i = pick < 0x80 ? ints[pick % (sizeof ints / sizeof ints[0])]
                                   : (json_int_t)fuzz_u64(b);
        return json_integer(i);
    }
    case 4: {
        uint8_t pick = fuzz_u8(b);
        double d;
        if (pick < 0x80) {
            d = reals[pick % (sizeof reals / sizeof reals[0])];
        } else {
            uint64_t bits = fuzz_u64(b);
            memcpy(&d, &bits, sizeof d);
        }
        if (!isfinite(d)) {
            /* not representable: jansson must refuse it, or the dump would not be JSON */
            json_t *r = json_real(d);
            if (r) __builtin_trap();
            return json_null();
        }
        return json_real(d);
    }
    case 5: return json_true();
    case 6: return json_false();
    default: return json_null();
    }
}

/* Equal as written: same types, integers and reals bit for bit, strings byte for byte, keys in
 * the same order unless sorted (then the same set). */
static bool same(const json_t *a, const json_t *b, bool sorted) {
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *key;
        size_t key_len;
        json_t *va;
        void *it_b = json_object_iter((json_t *)b);
        json_object_keylen_foreach((json_t *)a, key, key_len, va) {
            const json_t *vb;
            if (sorted) {
                vb = json_object_getn(b, key, key_len);
            } else {
                if (!it_b || json_object_iter_key_len(it_b) != key_len ||
                    memcmp(json_object_iter_key(it_b), key, key_len) != 0) {
                    return false;
                }
                vb = json_object_iter_value(it_b);
                it_b = json_object_iter_next((json_t *)b, it_b);
            }
            if (!vb || !same(va, vb, sorted)) return false;
        }
        return true;
    }
    case JSON_ARRAY: {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!same(json_array_get(a, i), json_array_get(b, i), sorted)) return false;
        }
        return true;
    }
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_INTEGER: return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL: {
        double x = json_real_value(a), y = json_real_value(b);
        return memcmp(&x, &y, sizeof x) == 0;
    }
    default: return true;
    }
}

/* The folder holds nothing but what was published (n files, and name among them if n is 1). */
static void expect_folder(const char *dir, int n) {
    DIR *d = opendir(dir);
    if (!d) abort();
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        count++;
        if (strcmp(e->d_name, "out.json") != 0) {
            fprintf(stderr, "left in the folder: %s\n", e->d_name);
            __builtin_trap();
        }
    }
    closedir(d);
    if (count != n) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    qw_error err;
    /* the flags: qw_json_write_file's, the Manifest.json ones, or a mix of jansson's output
     * options (JSON_REAL_PRECISION rounds reals and JSON_EMBED is not a document: not used) */
    uint8_t how = fuzz_u8(&b), opt = fuzz_u8(&b);
    bool plain = how % 3 == 0;
    size_t flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER;
    if (how % 3 == 1) flags = JSON_INDENT(4) | JSON_SORT_KEYS;
    if (how % 3 == 2) {
        flags = JSON_INDENT(how >> 3);
        if (opt & 1) flags |= JSON_COMPACT;
        if (opt & 2) flags |= JSON_ENSURE_ASCII;
        if (opt & 4) flags |= JSON_SORT_KEYS;
        if (opt & 8) flags |= JSON_PRESERVE_ORDER;
        if (opt & 16) flags |= JSON_ESCAPE_SLASH;
        if (opt & 32) flags |= JSON_ENCODE_ANY;
    }
    builder bd = {&b, 0};
    json_t *value = make_value(&bd, 0);
    if (!value) abort();

    const char *dir = fuzz_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/out.json", dir);
    remove(path);
    qw_status st = plain ? qw_json_write_file(value, dir, "out.json", &err)
                         : qw_json_write_file_flags(value, dir, "out.json", flags, &err);
    /* whether the tree has JSON text: its dump parses back to it. jansson's dump fails for a
     * string that is not UTF-8 (and a scalar root without JSON_ENCODE_ANY), but writes a key that
     * is not UTF-8 as a lone '"', which may even parse, as something else ({":null,":"x"}) */
    bool sorted = (flags & JSON_SORT_KEYS) != 0;
    char *dump = json_dumps(value, flags);
    json_error_t je;
    json_t *parsed = dump ? json_loads(dump, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je) : NULL;
    bool has_text = parsed && same(value, parsed, sorted);
    json_decref(parsed);
    if (st != QW_OK) {
        /* refused: only a tree that has no JSON text, as a clean error */
        if (has_text || !err.message[0] || st == QW_ERR_NO_MEMORY) {
            fprintf(stderr, "refused (%d): %s\n", (int)st, err.message);
            __builtin_trap();
        }
        expect_folder(dir, 0);
        free(dump);
        json_decref(value);
        return 0;
    }
    if (!has_text) { /* published a tree that has no JSON text */
        fprintf(stderr, "published, though the dump is %s\n", dump ? dump : "refused");
        __builtin_trap();
    }
    expect_folder(dir, 1);

    /* the file is the dump and a newline */
    char *text = NULL;
    size_t len = 0;
    if (qw_file_read_all(path, 1 << 24, &text, &len, &err) != QW_OK) __builtin_trap();
    size_t dump_len = strlen(dump);
    if (len != dump_len + 1 || memcmp(text, dump, dump_len) != 0 || text[dump_len] != '\n') {
        __builtin_trap();
    }
    qw_free(text);
    free(dump);

    json_t *back = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!back) {
        fprintf(stderr, "written JSON does not read back: line %d: %s\n", je.line, je.text);
        __builtin_trap();
    }
    if (!json_equal(value, back) || !same(value, back, sorted)) __builtin_trap();
    json_decref(back);
    /* our reader too, for the documents it takes (an object or array at the root) */
    if (json_is_object(value) || json_is_array(value)) {
        if (qw_json_load_file(path, 1 << 24, &back, &err) != QW_OK) {
            fprintf(stderr, "written JSON does not read back: %s\n", err.message);
            __builtin_trap();
        }
        if (!json_equal(value, back) || !same(value, back, sorted)) __builtin_trap();
        json_decref(back);
    }
    remove(path);
    json_decref(value);
    return 0;
}
