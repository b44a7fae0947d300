/* safetensors writer round trip: entries derived from the input are written with qw_st_writer,
 * read back with qw_safetensors_open, and must come back as given. The writer may refuse an entry
 * list (an error is fine); a file it publishes must read back equal. */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ENTRIES 5
#define MAX_STR 40

/* the writer's dtypes and one it does not know */
static const char *const dtypes[] = {"F64", "F32", "F16", "BF16", "I64", "I32",
                                     "I16", "I8",  "U8",  "BOOL", "Q4"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    char names[MAX_ENTRIES][MAX_STR + 1];
    qw_st_entry entries[MAX_ENTRIES];
    uint8_t *bytes[MAX_ENTRIES] = {0};
    uint64_t n_bytes[MAX_ENTRIES] = {0};
    memset(entries, 0, sizeof entries);
    size_t n = fuzz_u8(&b) % (MAX_ENTRIES + 1);
    for (size_t i = 0; i < n; i++) {
        qw_st_entry *e = &entries[i];
        fuzz_str(&b, names[i], MAX_STR);
        e->name = names[i];
        e->dtype = dtypes[fuzz_u8(&b) % (sizeof dtypes / sizeof dtypes[0])];
        uint8_t dims = fuzz_u8(&b);
        e->n_dims = dims == 0xff ? QW_SAFETENSORS_MAX_DIMS + 1 : dims % 4; /* rarely too many */
        for (int d = 0; d < e->n_dims && d < QW_SAFETENSORS_MAX_DIMS; d++) {
            e->shape[d] = fuzz_u8(&b) % 4;
        }
        bool ok = false;
        n_bytes[i] = qw_st_entry_bytes(e, &ok);
        bytes[i] = malloc(n_bytes[i] ? n_bytes[i] : 1);
        if (!bytes[i]) abort();
        for (uint64_t j = 0; j < n_bytes[i]; j++) bytes[i][j] = fuzz_u8(&b);
    }
    const char *path = fuzz_path("roundtrip.safetensors");
    qw_st_writer *w = NULL;
    qw_error err;
    bool ok = qw_st_writer_open(path, entries, n, &w, &err) == QW_OK;
    for (size_t i = 0; i < n && ok; i++) {
        uint64_t half = n_bytes[i] / 2; /* in two pieces: any split is accepted */
        ok = qw_st_writer_write(w, bytes[i], half, &err) == QW_OK &&
             qw_st_writer_write(w, bytes[i] + half, n_bytes[i] - half, &err) == QW_OK;
    }
    if (ok) {
        ok = qw_st_writer_finish(w, &err) == QW_OK;
    } else {
        qw_st_writer_abort(w);
    }
    if (ok) {
        qw_safetensors *st = NULL;
        if (qw_safetensors_open(path, &st, &err) != QW_OK) {
            fprintf(stderr, "written safetensors does not read back: %s\n", err.message);
            __builtin_trap();
        }
        if (qw_safetensors_count(st) != n) __builtin_trap();
        const char *fmt = qw_safetensors_metadata(st, "format");
        if (!fmt || strcmp(fmt, "pt") != 0) __builtin_trap();
        for (size_t i = 0; i < n; i++) {
            const qw_st_tensor *t = qw_safetensors_find(st, names[i]);
            if (!t || strcmp(t->dtype, entries[i].dtype) != 0 || t->n_dims != entries[i].n_dims ||
                t->bytes != n_bytes[i] || memcmp(t->data, bytes[i], n_bytes[i]) != 0) {
                __builtin_trap();
            }
            for (int d = 0; d < t->n_dims; d++) {
                if (t->shape[d] != entries[i].shape[d]) __builtin_trap();
            }
        }
        qw_safetensors_close(st);
        remove(path);
    }
    for (size_t i = 0; i < n; i++) free(bytes[i]);
    return 0;
}
