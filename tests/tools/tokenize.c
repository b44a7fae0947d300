/*
 * tokenize — drives qw_tokenizer for the Python tests and the benchmark.
 *
 * TOKENIZER_JSON may also be a SentencePiece file named *.model.
 *
 *   tokenize TOKENIZER_JSON [--no-special] < lines      each line a JSON string -> JSON id array
 *   tokenize TOKENIZER_JSON --hex [--no-special]        each line hex-encoded raw bytes (may be
 *                                                      invalid UTF-8) -> JSON id array
 *   tokenize TOKENIZER_JSON --decode [--skip-special]   each line a JSON id array -> JSON string
 *   --both (with encode or --decode)                   two output lines per input line: with
 *                                                      special tokens then without (encode), or
 *                                                      without skipping then skipping (decode)
 *   --roundtrip                                        four lines per input string: its ids with
 *                                                      and without special tokens, then the
 *                                                      first ids decoded without and with
 *                                                      skipping special tokens
 *   tokenize TOKENIZER_JSON --bench FILE [--no-special] encodes FILE's documents (raw text,
 *                                                      separated by NUL bytes) one at a time
 *                                                      and prints "bytes seconds tokens"
 *
 * A line that fails prints {"error": message} instead, so one bad line does not hide the rest.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "tokenizer.h"

static void print_error(const qw_error *e) {
    json_t *o = json_pack("{ss}", "error", e->message);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    printf("%s\n", s ? s : "{\"error\": \"?\"}");
    free(s);
    json_decref(o);
}

static void print_ids(const qw_token_ids *ids) {
    putchar('[');
    for (size_t i = 0; i < ids->n; i++) printf(i ? ",%d" : "%d", ids->ids[i]);
    puts("]");
}

static void print_decoded(qw_tokenizer *tok, const int32_t *ids, size_t n, bool skip) {
    char *text = NULL;
    size_t len = 0;
    qw_error err = {0};
    if (qw_tokenizer_decode(tok, ids, n, skip, &text, &len, &err) != QW_OK) {
        print_error(&err);
    } else {
        /* ASCII escapes: decoded text may hold U+2028 and friends, which line readers split on */
        json_t *s = json_stringn(text, len);
        char *dump = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        printf("%s\n", dump ? dump : "{\"error\": \"decoded text is not UTF-8\"}");
        free(dump);
        json_decref(s);
    }
    qw_free(text);
}

static int hexv(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int bench(qw_tokenizer *tok, const char *path, bool special) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    qw_buf all = {0};
    size_t n_lines = 0;
    size_t *ends = NULL;
    while ((n = getdelim(&line, &cap, 0, f)) > 0) {
        if (line[n - 1] == 0) n--;
        qw_buf_append(&all, line, (size_t)n);
        ends = realloc(ends, (n_lines + 1) * sizeof *ends);
        ends[n_lines++] = all.len;
    }
    fclose(f);
    free(line);
    qw_token_ids ids = {0};
    qw_error err = {0};
    size_t tokens = 0, prev = 0;
    double t0 = qw_now_seconds();
    for (size_t i = 0; i < n_lines; i++) {
        if (qw_tokenizer_encode(tok, all.data + prev, ends[i] - prev, special, &ids, &err) !=
            QW_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        tokens += ids.n;
        prev = ends[i];
    }
    double t1 = qw_now_seconds();
    printf("%zu %.6f %zu\n", all.len, t1 - t0, tokens);
    qw_token_ids_free(&ids);
    qw_buf_free(&all);
    free(ends);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tokenize TOKENIZER_JSON [--no-special|--hex|--decode "
                        "[--skip-special]|--bench FILE]\n");
        return 2;
    }
    bool special = true, hex = false, decode = false, skip = false, both = false;
    bool roundtrip = false;
    const char *bench_file = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--no-special") == 0) special = false;
        else if (strcmp(argv[i], "--hex") == 0) hex = true;
        else if (strcmp(argv[i], "--decode") == 0) decode = true;
        else if (strcmp(argv[i], "--skip-special") == 0) skip = true;
        else if (strcmp(argv[i], "--both") == 0) both = true;
        else if (strcmp(argv[i], "--roundtrip") == 0) roundtrip = true;
        else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) bench_file = argv[++i];
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    qw_tokenizer *tok = NULL;
    qw_error err = {0};
    /* a SentencePiece tokenizer.model is binary protobuf; anything else is tokenizer.json */
    qw_status st = qw_str_ends_with(argv[1], ".model") ? qw_tokenizer_load_spm(argv[1], &tok, &err)
                                                      : qw_tokenizer_load_json(argv[1], &tok, &err);
    if (st != QW_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    if (bench_file) {
        int rc = bench(tok, bench_file, special);
        qw_tokenizer_free(tok);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    qw_token_ids ids = {0};
    qw_buf bytes = {0};
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        qw_error_clear(&err);
        if (hex) {
            bytes.len = 0;
            for (ssize_t i = 0; i + 1 < n; i += 2) {
                char b = (char)(hexv(line[i]) * 16 + hexv(line[i + 1]));
                qw_buf_append(&bytes, &b, 1);
            }
            qw_buf_append(&bytes, "", 0);
            if (qw_tokenizer_encode(tok, bytes.data, bytes.len, special, &ids, &err) != QW_OK) {
                print_error(&err);
            } else {
                print_ids(&ids);
            }
            continue;
        }
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!v) {
            snprintf(err.message, sizeof err.message, "bad input line: %s", je.text);
            print_error(&err);
            continue;
        }
        if (decode) {
            size_t k = json_array_size(v);
            int32_t *arr = calloc(k + 1, sizeof *arr);
            for (size_t i = 0; i < k; i++) {
                arr[i] = (int32_t)json_integer_value(json_array_get(v, i));
            }
            for (int pass = 0; pass < (both ? 2 : 1); pass++) {
                print_decoded(tok, arr, k, both ? pass == 1 : skip);
            }
            free(arr);
        } else if (!json_is_string(v)) {
            snprintf(err.message, sizeof err.message, "input line is not a JSON string");
            print_error(&err);
        } else if (roundtrip) {
            qw_token_ids plain = {0};
            if (qw_tokenizer_encode(tok, json_string_value(v), json_string_length(v), true, &ids,
                                    &err) != QW_OK ||
                qw_tokenizer_encode(tok, json_string_value(v), json_string_length(v), false,
                                    &plain, &err) != QW_OK) {
                for (int k = 0; k < 4; k++) print_error(&err);
            } else {
                print_ids(&ids);
                print_ids(&plain);
                print_decoded(tok, ids.ids, ids.n, false);
                print_decoded(tok, ids.ids, ids.n, true);
            }
            qw_token_ids_free(&plain);
        } else {
            for (int pass = 0; pass < (both ? 2 : 1); pass++) {
                bool special_now = both ? pass == 0 : special;
                if (qw_tokenizer_encode(tok, json_string_value(v), json_string_length(v),
                                        special_now, &ids, &err) != QW_OK) {
                    print_error(&err);
                } else {
                    print_ids(&ids);
                }
            }
        }
        json_decref(v);
    }
    free(line);
    qw_buf_free(&bytes);
    qw_token_ids_free(&ids);
    qw_tokenizer_free(tok);
    return 0;
}
