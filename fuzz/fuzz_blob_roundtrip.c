/* Core ML weight-blob writer round trip: blobs derived from the input (dtype, size, padding bits,
 * data written in a few pieces) are written with qw_blob_writer, and the file is read back by a
 * parser written here from the layout documented in mil_package.h, not by any code of the
 * library: every header and metadata field, every data byte, the 64-byte alignment, the zero
 * fields and the zero gaps must be as given, and each offset begin returned must point at its
 * metadata record.
 *
 * The input also drives the writer's refusals, which must be errors that leave it usable: a begin
 * before the previous blob is complete, a write past the blob's size, padding of 8 bits or more,
 * a finish with a blob short; and the abort paths (right after open, mid-blob, between blobs). */
#include "fuzz_util.h"
#include "mil_package.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BLOBS 6
#define MAX_BLOB_BYTES 130 /* 0, 1, 63, 64, 65, 128, 129: every alignment case */
#define MAX_PIECES 3

#define ALIGN 64u
#define SENTINEL 0xDEADBEEFu
#define VERSION 2u

/* the storage's dtypes; the sub-byte ones carry padding bits */
static const qw_blob_dtype dtypes[] = {QW_BLOB_FLOAT16, QW_BLOB_FLOAT32, QW_BLOB_UINT8,
                                       QW_BLOB_INT8,    QW_BLOB_UINT4,   QW_BLOB_UINT6};

typedef struct blob_given {
    qw_blob_dtype dtype;
    bool known;        /* dtype from the enum */
    uint32_t padding;  /* as asked; >= 8 must be refused, then it is retried with padding & 7 */
    uint64_t size;
    uint8_t bytes[MAX_BLOB_BYTES];
    size_t cut[MAX_PIECES - 1]; /* the data goes in pieces [0,cut0) [cut0,cut1) [cut1,size) */
    bool early_begin;  /* a begin while the blob is still short: must be refused */
    uint8_t overrun;   /* nonzero: a write past the end (by this many bytes): must be refused */
    uint64_t offset;   /* what begin returned */
} blob_given;

/* A refusal must be a status with a message. */
static void expect_refused(qw_status st, const qw_error *err) {
    if (st == QW_OK || !err->message[0]) __builtin_trap();
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i]) return false;
    }
    return true;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "blob file %s was published but cannot be opened\n", path);
        __builtin_trap();
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) abort();
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        uint8_t *grown = realloc(buf, cap);
        if (!grown) abort();
        buf = grown;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The independent reader: walks the file from the documented layout and traps on any deviation. */
static void check_file(const char *path, const blob_given *blobs, size_t n) {
    size_t len = 0;
    uint8_t *f = read_file(path, &len);
    /* header: u32 count, u32 version 2, 7 x u64 zero */
    if (len < ALIGN || get_u32(f) != n || get_u32(f + 4) != VERSION || !all_zero(f + 8, 56)) {
        __builtin_trap();
    }
    uint64_t pos = ALIGN; /* end of what has been checked */
    for (size_t i = 0; i < n; i++) {
        const blob_given *g = &blobs[i];
        uint64_t rec = (pos + ALIGN - 1) / ALIGN * ALIGN;
        /* the gap before the record is zeros; the record is where begin said */
        if (rec + ALIGN > len || !all_zero(f + pos, (size_t)(rec - pos))) __builtin_trap();
        if (g->offset != rec) __builtin_trap();
        const uint8_t *m = f + rec;
        uint64_t data_at = get_u64(m + 16);
        if (get_u32(m) != SENTINEL || get_u32(m + 4) != (uint32_t)g->dtype ||
            get_u64(m + 8) != g->size || get_u64(m + 24) != (g->padding & 7u) ||
            !all_zero(m + 32, 32)) {
            __builtin_trap();
        }
        /* the data right after the record */
        if (data_at != rec + ALIGN || data_at > len || len - data_at < g->size ||
            memcmp(f + data_at, g->bytes, (size_t)g->size) != 0) {
            __builtin_trap();
        }
        pos = data_at + g->size;
    }
    /* after the last blob: nothing, or zeros up to the next 64 bytes */
    if (len != pos && (len != (pos + ALIGN - 1) / ALIGN * ALIGN || !all_zero(f + pos, len - pos))) {
        __builtin_trap();
    }
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    static blob_given blobs[MAX_BLOBS];
    static uint8_t junk[MAX_BLOB_BYTES + 256];
    qw_error err;
    const char *path = fuzz_path("weight.bin");

    uint8_t mode = fuzz_u8(&b);
    /* 0-3 finish normally; 4 abort right after open; 5 abort during blob `stop` (before its
     * second piece); 6 finish with blob `stop` short, before its last piece, when that piece has
     * data (must be refused); 7 open a path whose folder does not exist (must be refused) */
    uint8_t kind = mode & 7;
    size_t n = fuzz_u8(&b) % (MAX_BLOBS + 1);
    size_t stop = n ? fuzz_u8(&b) % n : 0;
    for (size_t i = 0; i < n; i++) {
        blob_given *g = &blobs[i];
        memset(g, 0, sizeof *g);
        uint8_t d = fuzz_u8(&b);
        g->known = d < 0xf0;
        g->dtype = g->known ? dtypes[d % (sizeof dtypes / sizeof dtypes[0])]
                            : (qw_blob_dtype)fuzz_u8(&b); /* a number the enum does not name */
        g->padding = fuzz_u8(&b) % 10;
        g->size = fuzz_u8(&b) % (MAX_BLOB_BYTES + 1);
        size_t c0 = g->size ? fuzz_u8(&b) % (g->size + 1) : 0;
        size_t c1 = g->size ? fuzz_u8(&b) % (g->size + 1) : 0;
        g->cut[0] = c0 < c1 ? c0 : c1;
        g->cut[1] = c0 < c1 ? c1 : c0;
        uint8_t misuse = fuzz_u8(&b);
        g->early_begin = misuse & 1;
        g->overrun = (misuse & 2) ? (uint8_t)(1 + (misuse >> 2)) : 0;
        /* data from the input, made to differ from zeros and from blob to blob when it runs out */
        for (size_t j = 0; j < g->size; j++) {
            g->bytes[j] = (uint8_t)(fuzz_u8(&b) ^ (j * 37 + i * 101 + 1));
        }
    }

    if (kind == 7) {
        qw_blob_writer *w = (qw_blob_writer *)&junk; /* must be reset to NULL */
        char missing[4300];
        snprintf(missing, sizeof missing, "%s/no-such-folder/weight.bin", fuzz_dir());
        expect_refused(qw_blob_writer_open(missing, &w, &err), &err);
        if (w) __builtin_trap();
        qw_blob_writer_abort(NULL);
        if (qw_blob_writer_count(NULL) != 0) __builtin_trap();
        return 0;
    }

    qw_blob_writer *w = NULL;
    if (qw_blob_writer_open(path, &w, &err) != QW_OK) {
        fprintf(stderr, "cannot open the blob file: %s\n", err.message);
        abort(); /* the scratch folder is not writable: not a finding about the writer */
    }
    if (kind == 4) {
        qw_blob_writer_abort(w);
        remove(path);
        return 0;
    }
    bool published = true;
    for (size_t i = 0; i < n; i++) {
        blob_given *g = &blobs[i];
        qw_status st = qw_blob_writer_begin(w, g->dtype, g->size, g->padding, &g->offset, &err);
        if (g->padding >= 8) { /* refused, and the writer still takes the blob as it should be */
            expect_refused(st, &err);
            if (qw_blob_writer_count(w) != i) __builtin_trap();
            st = qw_blob_writer_begin(w, g->dtype, g->size, g->padding & 7u, &g->offset, &err);
        }
        if (st != QW_OK) {
            /* only a dtype the enum does not name, or padding on a whole-byte type, may be
             * refused */
            bool sub_byte = g->dtype == QW_BLOB_UINT4 || g->dtype == QW_BLOB_UINT6;
            if (g->known && (sub_byte || (g->padding & 7u) == 0)) __builtin_trap();
            expect_refused(st, &err);
            published = false;
            break;
        }
        if (qw_blob_writer_count(w) != i + 1) __builtin_trap();
        size_t from = 0;
        for (int p = 0; p < MAX_PIECES; p++) {
            size_t to = p < MAX_PIECES - 1 ? g->cut[p] : (size_t)g->size;
            if (kind == 5 && i == stop && p == 1) { /* abort mid-blob (or between blobs) */
                qw_blob_writer_abort(w);
                w = NULL;
                break;
            }
            if (kind == 6 && i == stop && p == 2 && from < g->size) { /* finish a short blob */
                expect_refused(qw_blob_writer_finish(w, &err), &err);
                w = NULL;
                break;
            }
            if (from < g->size && g->early_begin) {
                uint64_t off = 0;
                expect_refused(qw_blob_writer_begin(w, g->dtype, 1, 0, &off, &err), &err);
                if (qw_blob_writer_count(w) != i + 1) __builtin_trap();
            }
            if (g->overrun && p == 1) {
                size_t over = g->size - from + g->overrun; /* what is left, and then some */
                expect_refused(qw_blob_writer_write(w, junk, over, &err), &err);
            }
            /* a piece may be empty (NULL is fine then) */
            if (qw_blob_writer_write(w, to > from ? g->bytes + from : NULL, to - from, &err) !=
                QW_OK) {
                fprintf(stderr, "blob %zu: write of %zu bytes refused: %s\n", i, to - from,
                        err.message);
                __builtin_trap();
            }
            from = to;
        }
        if (!w) {
            published = false;
            break;
        }
    }
    if (w && kind == 5) { /* stop was past every blob with data: abort between blobs instead */
        qw_blob_writer_abort(w);
        w = NULL;
        published = false;
    }
    if (w && !published) {
        qw_blob_writer_abort(w);
        w = NULL;
    }
    if (w) { /* (with kind 6, blob `stop` had no data left to hold back: finished as usual) */
        /* every blob is complete now: a write of even one byte more is refused */
        expect_refused(qw_blob_writer_write(w, junk, 1, &err), &err);
        if (qw_blob_writer_count(w) != n) __builtin_trap();
        if (qw_blob_writer_finish(w, &err) != QW_OK) {
            fprintf(stderr, "finish refused: %s\n", err.message);
            __builtin_trap();
        }
        check_file(path, blobs, n);
    }
    remove(path);
    return 0;
}
