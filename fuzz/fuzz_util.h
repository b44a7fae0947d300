/*
 * fuzz_util.h — helpers shared by the libFuzzer harnesses: a scratch directory for the readers
 * that only take a path, and a little reader of fuzz bytes for the writer round trips.
 *
 * A harness must free everything it gets (LeakSanitizer fails the run otherwise) and treat every
 * error status as an ordinary outcome: only a crash, a sanitizer report, a leak or a timeout is
 * a finding.
 */
#ifndef QW_FUZZ_UTIL_H
#define QW_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ftw.h>
#include <sys/stat.h>

/* One directory per harness process under $TMPDIR, removed by a normal exit; libFuzzer often
 * ends the process without atexit handlers, so fuzz/run.sh points TMPDIR at a folder it removes. */
static char fuzz_dir_path[4096];

static inline int fuzz_rm_entry(const char *path, const struct stat *sb, int flag,
                                struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void fuzz_dir_remove(void) {
    if (fuzz_dir_path[0]) nftw(fuzz_dir_path, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/qwodel-fuzz-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("mkdtemp");
            abort(); /* the harness cannot run at all: not a finding about the reader */
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* "<fuzz dir>/<name>" in a static buffer. */
static inline const char *fuzz_path(const char *name) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    return path;
}

static inline void fuzz_write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* Bytes of the fuzz input taken in order; past the end every read gives zeros. */
typedef struct fuzz_bytes {
    const uint8_t *p;
    size_t n;
} fuzz_bytes;

static inline uint8_t fuzz_u8(fuzz_bytes *b) {
    if (!b->n) return 0;
    b->n--;
    return *b->p++;
}

static inline uint32_t fuzz_u32(fuzz_bytes *b) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)fuzz_u8(b) << (8 * i);
    return v;
}

static inline uint64_t fuzz_u64(fuzz_bytes *b) {
    uint64_t lo = fuzz_u32(b);
    return lo | (uint64_t)fuzz_u32(b) << 32;
}

/* Up to max bytes as a NUL-terminated string in buf (stops at a NUL in the input). */
static inline void fuzz_str(fuzz_bytes *b, char *buf, size_t max) {
    size_t len = fuzz_u8(b) % (max + 1);
    size_t i = 0;
    for (; i < len && b->n; i++) {
        char c = (char)fuzz_u8(b);
        if (!c) break;
        buf[i] = c;
    }
    buf[i] = '\0';
}

#endif /* QW_FUZZ_UTIL_H */
