/* Importance-matrix reader: llama-imatrix's legacy .dat and GGUF files (layouts in imatrix.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "gguf.h"
#include "imatrix.h"

struct qw_imatrix {
    qw_imatrix_entry *entries; /* sorted by name, names unique */
    size_t n;
    size_t cap;
    bool gguf;
    char *dataset;
    int64_t chunks;
};

void qw_imatrix_free(qw_imatrix *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) qw_free(m->entries[i].values);
    qw_free(m->entries);
    qw_free(m->dataset);
    qw_free(m);
}

size_t qw_imatrix_count(const qw_imatrix *m) { return m ? m->n : 0; }

const qw_imatrix_entry *qw_imatrix_at(const qw_imatrix *m, size_t index) {
    return m && index < m->n ? &m->entries[index] : NULL;
}

static int cmp_entry_name(const void *key, const void *elem) {
    return strcmp(key, ((const qw_imatrix_entry *)elem)->name);
}

const qw_imatrix_entry *qw_imatrix_find(const qw_imatrix *m, const char *name) {
    if (!m || !name || !m->n) return NULL;
    return bsearch(name, m->entries, m->n, sizeof *m->entries, cmp_entry_name);
}

bool qw_imatrix_is_gguf(const qw_imatrix *m) { return m && m->gguf; }
const char *qw_imatrix_dataset(const qw_imatrix *m) { return m ? m->dataset : NULL; }
int64_t qw_imatrix_chunks(const qw_imatrix *m) { return m ? m->chunks : 0; }

/* ---- building ------------------------------------------------------------------------------- */

/* Appends an entry that takes ownership of `values`; a repeated name replaces the earlier entry
 * (last wins, as in llama-quantize). Entries are kept in insertion order until finish(). */
static qw_status add_entry(qw_imatrix *m, const char *name, size_t name_len, float *values,
                           size_t n_values, qw_error *err) {
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->entries[i].name, name) == 0) {
            qw_free(m->entries[i].values);
            m->entries[i].values = values;
            m->entries[i].n_values = n_values;
            return QW_OK;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        qw_imatrix_entry *e = qw_realloc_array(m->entries, cap, sizeof *e);
        if (!e) {
            qw_free(values);
            return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory reading an importance matrix");
        }
        m->entries = e;
        m->cap = cap;
    }
    qw_imatrix_entry *e = &m->entries[m->n++];
    memset(e->name, 0, sizeof e->name);
    memcpy(e->name, name, name_len);
    e->values = values;
    e->n_values = n_values;
    return QW_OK;
}

static int cmp_entries(const void *a, const void *b) {
    return strcmp(((const qw_imatrix_entry *)a)->name, ((const qw_imatrix_entry *)b)->name);
}

static void finish(qw_imatrix *m) { qsort(m->entries, m->n, sizeof *m->entries, cmp_entries); }

/* Importance is a mean of squares: a finite number, not negative. */
static qw_status check_value(float v, const char *label, const char *name, int64_t offset,
                             qw_error *err) {
    if (isfinite(v) && v >= 0.0f) return QW_OK;
    return qw_fail_at(err, QW_ERR_CORRUPT, name, offset,
                      "%s: importance value %g of \"%s\" at byte %lld is %s", label, (double)v,
                      name, (long long)offset, isfinite(v) ? "negative" : "not finite");
}

/* ---- legacy .dat ---------------------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const char *label;
    qw_error *err;
} cursor;

static qw_status short_read(cursor *c, const char *what, const char *name) {
    return qw_fail_at(c->err, QW_ERR_CORRUPT, name, (int64_t)c->pos,
                      "%s: truncated importance matrix: %s%s%s%s at byte %zu runs past the end "
                      "(%zu bytes)", c->label, what, name ? " of \"" : "", name ? name : "",
                      name ? "\"" : "", c->pos, c->size);
}

static qw_status read_i32(cursor *c, int32_t *v, const char *what, const char *name) {
    if (c->size - c->pos < 4) return short_read(c, what, name);
    uint32_t u = (uint32_t)c->data[c->pos] | (uint32_t)c->data[c->pos + 1] << 8 |
                 (uint32_t)c->data[c->pos + 2] << 16 | (uint32_t)c->data[c->pos + 3] << 24;
    memcpy(v, &u, sizeof *v);
    c->pos += 4;
    return QW_OK;
}

/* A length-prefixed string of at most `max` bytes, without NUL bytes; at points into the file. */
static qw_status read_name(cursor *c, size_t max, const char **at, size_t *len, const char *what,
                           const char *entry) {
    int32_t n = 0;
    size_t start = c->pos;
    QW_TRY(read_i32(c, &n, what, entry));
    if (n < 0 || (size_t)n > max) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, entry, (int64_t)start,
                          "%s: %s at byte %zu has length %d (must be 0 to %zu)", c->label, what,
                          start, (int)n, max);
    }
    if ((size_t)n > c->size - c->pos) return short_read(c, what, entry);
    *at = (const char *)c->data + c->pos;
    *len = (size_t)n;
    if (memchr(*at, '\0', *len)) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, entry, (int64_t)c->pos,
                          "%s: %s at byte %zu contains a NUL byte", c->label, what, c->pos);
    }
    c->pos += *len;
    return QW_OK;
}

static qw_status parse_legacy(qw_imatrix *m, cursor *c) {
    int32_t n_entries = 0;
    QW_TRY(read_i32(c, &n_entries, "the entry count", NULL));
    if (n_entries < 1) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, NULL, 0,
                          "%s: not an importance matrix: %d entries (a legacy .dat file starts "
                          "with a positive entry count)", c->label, (int)n_entries);
    }
    for (int32_t i = 0; i < n_entries; i++) {
        char where[48];
        snprintf(where, sizeof where, "entry %d", (int)i);
        const char *name;
        size_t name_len;
        size_t name_at = c->pos;
        QW_TRY(read_name(c, QW_IMATRIX_MAX_NAME_BYTES, &name, &name_len, "the tensor name",
                         where));
        if (name_len == 0) {
            return qw_fail_at(c->err, QW_ERR_CORRUPT, where, (int64_t)name_at,
                              "%s: %s at byte %zu has an empty tensor name", c->label, where,
                              name_at);
        }
        char name_z[QW_IMATRIX_MAX_NAME_BYTES + 1];
        memcpy(name_z, name, name_len);
        name_z[name_len] = '\0';
        int32_t ncall = 0, nval = 0;
        QW_TRY(read_i32(c, &ncall, "the call count", name_z));
        size_t nval_at = c->pos;
        QW_TRY(read_i32(c, &nval, "the value count", name_z));
        if (nval < 1) {
            return qw_fail_at(c->err, QW_ERR_CORRUPT, name_z, (int64_t)nval_at,
                              "%s: \"%s\" has %d values (byte %zu); at least 1 is needed",
                              c->label, name_z, (int)nval, nval_at);
        }
        if ((size_t)nval > (c->size - c->pos) / 4) return short_read(c, "the values", name_z);
        float *values = qw_malloc_array((size_t)nval, sizeof *values);
        if (!values) return qw_fail(c->err, QW_ERR_NO_MEMORY, "out of memory");
        for (int32_t k = 0; k < nval; k++) {
            size_t at = c->pos + 4 * (size_t)k;
            float v;
            memcpy(&v, c->data + at, sizeof v);
            qw_status st = check_value(v, c->label, name_z, (int64_t)at, c->err);
            if (st != QW_OK) {
                qw_free(values);
                return st;
            }
            /* llama-quantize: the sums divided by the number of calls, in float */
            values[k] = ncall > 0 ? v / (float)ncall : v;
        }
        c->pos += 4 * (size_t)nval;
        QW_TRY(add_entry(m, name_z, name_len, values, (size_t)nval, c->err));
    }
    if (c->pos == c->size) return QW_OK; /* files of older llama-imatrix versions end here */
    int32_t chunks = 0;
    size_t chunks_at = c->pos;
    QW_TRY(read_i32(c, &chunks, "the chunk count", NULL));
    if (chunks < 0) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, NULL, (int64_t)chunks_at,
                          "%s: negative chunk count %d at byte %zu", c->label, (int)chunks,
                          chunks_at);
    }
    const char *dataset;
    size_t dataset_len;
    QW_TRY(read_name(c, c->size, &dataset, &dataset_len, "the dataset name", NULL));
    if (c->pos != c->size) {
        return qw_fail_at(c->err, QW_ERR_CORRUPT, NULL, (int64_t)c->pos,
                          "%s: %zu unexpected bytes after the dataset name, at byte %zu",
                          c->label, c->size - c->pos, c->pos);
    }
    m->chunks = chunks;
    m->dataset = qw_strndup(dataset, dataset_len);
    if (!m->dataset) return qw_fail(c->err, QW_ERR_NO_MEMORY, "out of memory");
    return QW_OK;
}

/* ---- GGUF ----------------------------------------------------------------------------------- */

static const char SUMS_SUFFIX[] = ".in_sum2";
static const char COUNTS_SUFFIX[] = ".counts";

static float read_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static qw_status gguf_key_u32(const qw_gguf *g, const char *label, const char *key, int64_t *out,
                              qw_error *err) {
    const qw_gguf_kv *kv = qw_gguf_find_kv(g, key);
    if (!kv || kv->value.type != QW_GGUF_UINT32) {
        return qw_fail_at(err, QW_ERR_CORRUPT, key, -1,
                          "%s: GGUF importance matrix without its metadata: key \"%s\" is %s "
                          "(expected u32)", label, key, kv ? qw_gguf_type_name(kv->value.type)
                                                           : "missing");
    }
    *out = (int64_t)kv->value.v.u64;
    return QW_OK;
}

static qw_status parse_gguf_entry(qw_imatrix *m, const qw_gguf *g, const char *label,
                                  const qw_gguf_tensor *sums, qw_error *err) {
    char base[QW_IMATRIX_MAX_NAME_BYTES + 1];
    size_t base_len = strlen(sums->name) - (sizeof SUMS_SUFFIX - 1);
    memcpy(base, sums->name, base_len);
    base[base_len] = '\0';
    char counts_name[QW_IMATRIX_MAX_NAME_BYTES + sizeof COUNTS_SUFFIX];
    snprintf(counts_name, sizeof counts_name, "%s%s", base, COUNTS_SUFFIX);
    const qw_gguf_tensor *counts = qw_gguf_find_tensor(g, counts_name);
    if (!counts) {
        return qw_fail_at(err, QW_ERR_CORRUPT, base, -1,
                          "%s: \"%s\" has no \"%s\" tensor (each in_sum2 needs its counts)",
                          label, sums->name, counts_name);
    }
    if (sums->type != QW_QTYPE_F32 || counts->type != QW_QTYPE_F32) {
        return qw_fail_at(err, QW_ERR_CORRUPT, base, -1,
                          "%s: \"%s\" and \"%s\" must be f32, not %s and %s", label, sums->name,
                          counts_name, qw_qtype_name(sums->type), qw_qtype_name(counts->type));
    }
    const int64_t ne0 = sums->ne[0], n_mat = sums->ne[1];
    if (sums->ne[2] != 1 || sums->ne[3] != 1 || ne0 < 1 || n_mat < 1) {
        return qw_fail_at(err, QW_ERR_CORRUPT, base, -1,
                          "%s: \"%s\" has shape [%lld, %lld, %lld, %lld]; expected [row length, "
                          "matrices]", label, sums->name, (long long)sums->ne[0],
                          (long long)sums->ne[1], (long long)sums->ne[2], (long long)sums->ne[3]);
    }
    if (counts->ne[0] * counts->ne[1] * counts->ne[2] * counts->ne[3] != n_mat) {
        return qw_fail_at(err, QW_ERR_CORRUPT, base, -1,
                          "%s: \"%s\" holds %lld counts for the %lld matrices of \"%s\"", label,
                          counts_name,
                          (long long)(counts->ne[0] * counts->ne[1] * counts->ne[2] *
                                      counts->ne[3]),
                          (long long)n_mat, sums->name);
    }
    /* the reader checked that ne0 * n_mat f32 values lie inside the file */
    size_t n_values = (size_t)ne0 * (size_t)n_mat;
    float *values = qw_malloc_array(n_values, sizeof *values);
    if (!values) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    const int64_t data_at = (int64_t)qw_gguf_data_offset(g);
    for (int64_t j = 0; j < n_mat; j++) {
        float count = read_f32(counts->data + 4 * j);
        qw_status st = check_value(count, label, counts_name,
                                   data_at + (int64_t)counts->offset + 4 * j, err);
        for (int64_t i = 0; st == QW_OK && i < ne0; i++) {
            size_t k = (size_t)(j * ne0 + i);
            float sum = read_f32(sums->data + 4 * k);
            st = check_value(sum, label, sums->name, data_at + (int64_t)(sums->offset + 4 * k),
                             err);
            /* llama-quantize: a matrix that saw no input gets importance 1 */
            values[k] = count > 0.0f ? sum / count : 1.0f;
        }
        if (st != QW_OK) {
            qw_free(values);
            return st;
        }
    }
    return add_entry(m, base, base_len, values, n_values, err);
}

static qw_status parse_gguf(qw_imatrix *m, const qw_gguf *g, const char *label, qw_error *err) {
    int64_t chunk_size;
    QW_TRY(gguf_key_u32(g, label, "imatrix.chunk_count", &m->chunks, err));
    QW_TRY(gguf_key_u32(g, label, "imatrix.chunk_size", &chunk_size, err));
    const qw_gguf_kv *datasets = qw_gguf_find_kv(g, "imatrix.datasets");
    if (!datasets || datasets->value.type != QW_GGUF_ARRAY ||
        datasets->value.v.arr.elem_type != QW_GGUF_STRING) {
        return qw_fail_at(err, QW_ERR_CORRUPT, "imatrix.datasets", -1,
                          "%s: GGUF importance matrix without its metadata: key "
                          "\"imatrix.datasets\" is missing or not an array of strings", label);
    }
    if (datasets->value.v.arr.count > 0) {
        const qw_gguf_str *s = &datasets->value.v.arr.strs[0];
        if (memchr(s->data, '\0', (size_t)s->len)) {
            return qw_fail_at(err, QW_ERR_CORRUPT, "imatrix.datasets", -1,
                              "%s: the dataset name contains a NUL byte", label);
        }
        m->dataset = qw_strndup(s->data, (size_t)s->len);
        if (!m->dataset) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < qw_gguf_tensor_count(g); i++) {
        const qw_gguf_tensor *t = qw_gguf_tensor_at(g, i);
        if (qw_str_ends_with(t->name, SUMS_SUFFIX) && strlen(t->name) > sizeof SUMS_SUFFIX - 1) {
            QW_TRY(parse_gguf_entry(m, g, label, t, err));
        } else if (qw_str_ends_with(t->name, COUNTS_SUFFIX)) {
            char sums_name[QW_IMATRIX_MAX_NAME_BYTES + sizeof SUMS_SUFFIX];
            size_t base_len = strlen(t->name) - (sizeof COUNTS_SUFFIX - 1);
            snprintf(sums_name, sizeof sums_name, "%.*s%s", (int)base_len, t->name, SUMS_SUFFIX);
            if (!qw_gguf_find_tensor(g, sums_name)) {
                return qw_fail_at(err, QW_ERR_CORRUPT, t->name, -1,
                                  "%s: \"%s\" has no \"%s\" tensor", label, t->name, sums_name);
            }
        }
    }
    if (m->n == 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: the GGUF importance matrix has no entries "
                       "(no *.in_sum2 tensors)", label);
    }
    return QW_OK;
}

/* ---- entry points --------------------------------------------------------------------------- */

qw_status qw_imatrix_open_memory(const void *data, size_t size, const char *label,
                                 qw_imatrix **out, qw_error *err) {
    *out = NULL;
    if (!label) label = "(importance matrix)";
    qw_imatrix *m = qw_calloc(1, sizeof *m);
    if (!m) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    qw_status st;
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0) {
        m->gguf = true;
        qw_gguf *g = NULL;
        st = qw_gguf_open_memory(data, size, label, &g, err);
        if (st == QW_OK) st = parse_gguf(m, g, label, err);
        qw_gguf_close(g);
    } else {
        cursor c = {data, size, 0, label, err};
        st = parse_legacy(m, &c);
    }
    if (st != QW_OK) {
        qw_imatrix_free(m);
        return st;
    }
    finish(m);
    *out = m;
    return QW_OK;
}

qw_status qw_imatrix_open(const char *path, qw_imatrix **out, qw_error *err) {
    *out = NULL;
    qw_mapped file;
    QW_TRY(qw_mapped_open(path, &file, err));
    qw_status st = qw_imatrix_open_memory(file.data, file.size, path, out, err);
    qw_mapped_close(&file);
    return st;
}
