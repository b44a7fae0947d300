/* The MIL program builder and Model serialization (coreml_mil.h). Every protobuf-c message and
 * string lives in the builder's arena and is freed with it. */
#include "coreml_mil.h"

#include <string.h>

#include "half.h"
#include "mil.pb-c.h"

struct qw_mil_value {
    Qwml__Value v;
};

struct qw_mil {
    void **allocs;
    size_t n_allocs, cap_allocs;
    Qwml__Op **ops;
    size_t n_ops, cap_ops;
    Qwml__NamedType **inputs;
    size_t n_inputs, cap_inputs;
    char **outputs;
    size_t n_outputs, cap_outputs;
    Qwml__Feature **states; /* description.state entries */
    size_t n_states, cap_states;
    qw_blob_writer *blobs;
    qw_status st;
    qw_error err;
};

/* ---- arena and errors ----------------------------------------------------------------------- */

static void set_error(qw_mil *m, qw_status st, const char *msg) {
    if (m->st != QW_OK) return;
    m->st = st;
    qw_fail(&m->err, st, "%s", msg);
}

static bool grow(qw_mil *m, void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 64;
    void *p = qw_realloc_array(*arr, ncap, elem);
    if (!p) {
        set_error(m, QW_ERR_NO_MEMORY, "out of memory building the MIL program");
        return false;
    }
    *arr = p;
    *cap = ncap;
    return true;
}

static void *alloc(qw_mil *m, size_t bytes) {
    if (m->st != QW_OK) return NULL;
    if (!grow(m, (void **)&m->allocs, &m->cap_allocs, m->n_allocs, sizeof *m->allocs)) return NULL;
    void *p = qw_calloc(1, bytes ? bytes : 1);
    if (!p) {
        set_error(m, QW_ERR_NO_MEMORY, "out of memory building the MIL program");
        return NULL;
    }
    m->allocs[m->n_allocs++] = p;
    return p;
}

static char *str(qw_mil *m, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = alloc(m, n);
    if (p) memcpy(p, s, n);
    return p;
}

static void *new_msg(qw_mil *m, const ProtobufCMessageDescriptor *d) {
    void *p = alloc(m, d->sizeof_message);
    if (p) protobuf_c_message_init(d, p);
    return p;
}

#define NEW(m, T, desc) ((T *)new_msg((m), &(desc)))

qw_status qw_mil_create(qw_blob_writer *blobs, qw_mil **out, qw_error *err) {
    *out = qw_calloc(1, sizeof **out);
    if (!*out) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    (*out)->blobs = blobs;
    return QW_OK;
}

void qw_mil_free(qw_mil *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_allocs; i++) qw_free(m->allocs[i]);
    qw_free(m->allocs);
    qw_free(m->ops);
    qw_free(m->inputs);
    qw_free(m->outputs);
    qw_free(m->states);
    qw_free(m);
}

qw_status qw_mil_status(const qw_mil *m, qw_error *err) {
    if (m->st != QW_OK && err) *err = m->err;
    return m->st;
}

void qw_mil_fail(qw_mil *m, const qw_error *e, qw_status st) {
    if (m->st != QW_OK || st == QW_OK) return;
    m->st = st;
    if (e) m->err = *e;
}

qw_blob_writer *qw_mil_blobs(qw_mil *m) { return m->blobs; }

/* ---- types ---------------------------------------------------------------------------------- */

qw_mil_var qw_mil_type(int dtype, int rank, const int64_t *dims) {
    qw_mil_var v = {NULL, dtype, rank, {0}};
    for (int i = 0; i < rank && i < QW_MIL_MAX_RANK; i++) v.dims[i] = dims[i];
    return v;
}

static Qwml__ValueType *value_type(qw_mil *m, const qw_mil_var *t) {
    Qwml__ValueType *vt = NEW(m, Qwml__ValueType, qwml__value_type__descriptor);
    Qwml__TensorType *tt = NEW(m, Qwml__TensorType, qwml__tensor_type__descriptor);
    Qwml__Dimension **dims = t->rank ? alloc(m, (size_t)t->rank * sizeof *dims) : NULL;
    if (!vt || !tt || (t->rank && !dims)) return NULL;
    tt->data_type = t->dtype;
    tt->rank = t->rank;
    for (int i = 0; i < t->rank; i++) {
        Qwml__Dimension *d = NEW(m, Qwml__Dimension, qwml__dimension__descriptor);
        if (!d) return NULL;
        if (t->dims[i] == QW_MIL_DYN) {
            Qwml__UnknownDim *u = NEW(m, Qwml__UnknownDim, qwml__unknown_dim__descriptor);
            if (!u) return NULL;
            d->kind_case = QWML__DIMENSION__KIND_UNKNOWN;
            d->unknown = u;
        } else {
            Qwml__FixedDim *f = NEW(m, Qwml__FixedDim, qwml__fixed_dim__descriptor);
            if (!f) return NULL;
            f->size = (uint64_t)t->dims[i];
            d->kind_case = QWML__DIMENSION__KIND_FIXED;
            d->fixed = f;
        }
        dims[i] = d;
    }
    tt->n_dims = (size_t)t->rank;
    tt->dims = dims;
    vt->kind_case = QWML__VALUE_TYPE__KIND_TENSOR;
    vt->tensor = tt;
    return vt;
}

static Qwml__NamedType *named_type(qw_mil *m, const char *name, const qw_mil_var *t) {
    Qwml__NamedType *nt = NEW(m, Qwml__NamedType, qwml__named_type__descriptor);
    if (!nt) return NULL;
    nt->name = str(m, name);
    nt->type = value_type(m, t);
    return nt->name && nt->type ? nt : NULL;
}

static int64_t numel(const qw_mil_var *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->dims[i];
    return n;
}

/* ---- values --------------------------------------------------------------------------------- */

static Qwml__Value *value_new(qw_mil *m, const qw_mil_var *t) {
    qw_mil_value *w = alloc(m, sizeof *w);
    if (!w) return NULL;
    protobuf_c_message_init(&qwml__value__descriptor, &w->v);
    w->v.type = value_type(m, t);
    return w->v.type ? &w->v : NULL;
}

static Qwml__Value *value_tensor(qw_mil *m, const qw_mil_var *t, Qwml__TensorValue **tv) {
    Qwml__Value *v = value_new(m, t);
    Qwml__Immediate *im = NEW(m, Qwml__Immediate, qwml__immediate__descriptor);
    *tv = NEW(m, Qwml__TensorValue, qwml__tensor_value__descriptor);
    if (!v || !im || !*tv) return NULL;
    im->kind_case = QWML__IMMEDIATE__KIND_TENSOR;
    im->tensor = *tv;
    v->kind_case = QWML__VALUE__KIND_IMMEDIATE;
    v->immediate = im;
    return v;
}

/* fp16, int8, uint8 and uint32 immediates are raw little-endian bytes */
static Qwml__Value *value_bytes(qw_mil *m, const qw_mil_var *t, const void *data, size_t n) {
    Qwml__TensorValue *tv;
    Qwml__Value *v = value_tensor(m, t, &tv);
    Qwml__Bytes *b = NEW(m, Qwml__Bytes, qwml__bytes__descriptor);
    uint8_t *copy = alloc(m, n);
    if (!v || !b || !copy) return NULL;
    memcpy(copy, data, n);
    b->values.data = copy;
    b->values.len = n;
    tv->kind_case = QWML__TENSOR_VALUE__KIND_BYTES;
    tv->bytes = b;
    return v;
}

static Qwml__Value *value_ints(qw_mil *m, const qw_mil_var *t, const int32_t *data, size_t n) {
    Qwml__TensorValue *tv;
    Qwml__Value *v = value_tensor(m, t, &tv);
    Qwml__Ints *p = NEW(m, Qwml__Ints, qwml__ints__descriptor);
    int32_t *copy = alloc(m, n * sizeof *copy);
    if (!v || !p || !copy) return NULL;
    memcpy(copy, data, n * sizeof *copy);
    p->values = copy;
    p->n_values = n;
    tv->kind_case = QWML__TENSOR_VALUE__KIND_INTS;
    tv->ints = p;
    return v;
}

static Qwml__Value *value_bools(qw_mil *m, const qw_mil_var *t, const bool *data, size_t n) {
    Qwml__TensorValue *tv;
    Qwml__Value *v = value_tensor(m, t, &tv);
    Qwml__Bools *p = NEW(m, Qwml__Bools, qwml__bools__descriptor);
    protobuf_c_boolean *copy = alloc(m, n * sizeof *copy);
    if (!v || !p || !copy) return NULL;
    for (size_t i = 0; i < n; i++) copy[i] = data[i];
    p->values = copy;
    p->n_values = n;
    tv->kind_case = QWML__TENSOR_VALUE__KIND_BOOLS;
    tv->bools = p;
    return v;
}

static Qwml__Value *value_floats(qw_mil *m, const qw_mil_var *t, const float *data, size_t n) {
    Qwml__TensorValue *tv;
    Qwml__Value *v = value_tensor(m, t, &tv);
    Qwml__Floats *p = NEW(m, Qwml__Floats, qwml__floats__descriptor);
    float *copy = alloc(m, n * sizeof *copy);
    if (!v || !p || !copy) return NULL;
    memcpy(copy, data, n * sizeof *copy);
    p->values = copy;
    p->n_values = n;
    tv->kind_case = QWML__TENSOR_VALUE__KIND_FLOATS;
    tv->floats = p;
    return v;
}

static Qwml__Value *value_string(qw_mil *m, const char *s) {
    const qw_mil_var t = {NULL, QW_MIL_STRING, 0, {0}};
    Qwml__TensorValue *tv;
    Qwml__Value *v = value_tensor(m, &t, &tv);
    Qwml__Strings *p = NEW(m, Qwml__Strings, qwml__strings__descriptor);
    char **vals = alloc(m, sizeof *vals);
    if (!v || !p || !vals || !(vals[0] = str(m, s))) return NULL;
    p->values = vals;
    p->n_values = 1;
    tv->kind_case = QWML__TENSOR_VALUE__KIND_STRINGS;
    tv->strings = p;
    return v;
}

static Qwml__Value *value_blob(qw_mil *m, const qw_mil_var *t, uint64_t offset) {
    Qwml__Value *v = value_new(m, t);
    Qwml__BlobRef *b = NEW(m, Qwml__BlobRef, qwml__blob_ref__descriptor);
    if (!v || !b || !(b->file = str(m, QW_MLPACKAGE_WEIGHT_REF))) return NULL;
    b->offset = offset;
    v->kind_case = QWML__VALUE__KIND_BLOB;
    v->blob = b;
    return v;
}

static const struct {
    int dtype;
    qw_blob_dtype blob;
    size_t size;
} BLOB_TYPES[] = {
    {QW_MIL_FP16, QW_BLOB_FLOAT16, 2},
    {QW_MIL_FP32, QW_BLOB_FLOAT32, 4},
    {QW_MIL_INT8, QW_BLOB_INT8, 1},
    {QW_MIL_UINT8, QW_BLOB_UINT8, 1},
};

/* Writes data as a new blob, or NULL-equivalent (false) for types that stay inline. */
static bool blob_type(int dtype, qw_blob_dtype *out) {
    for (size_t i = 0; i < sizeof BLOB_TYPES / sizeof BLOB_TYPES[0]; i++) {
        if (BLOB_TYPES[i].dtype == dtype) {
            *out = BLOB_TYPES[i].blob;
            return true;
        }
    }
    return false;
}

static Qwml__Value *value_data(qw_mil *m, const qw_mil_var *t, const void *data, size_t bytes) {
    if (m->st != QW_OK) return NULL;
    qw_blob_dtype bt;
    if (numel(t) >= 10 && blob_type(t->dtype, &bt)) {
        uint64_t offset;
        qw_error e = {0};
        qw_status st = m->blobs ? qw_blob_writer_begin(m->blobs, bt, bytes, 0, &offset, &e)
                                : qw_fail(&e, QW_ERR_INTERNAL, "no blob file for a const");
        if (st == QW_OK) st = qw_blob_writer_write(m->blobs, data, bytes, &e);
        if (st != QW_OK) {
            qw_mil_fail(m, &e, st);
            return NULL;
        }
        return value_blob(m, t, offset);
    }
    if (t->dtype == QW_MIL_FP32) return value_floats(m, t, data, bytes / 4);
    if (t->dtype == QW_MIL_INT32) return value_ints(m, t, data, bytes / 4);
    return value_bytes(m, t, data, bytes);
}

/* ---- ops ------------------------------------------------------------------------------------ */

static bool add_attr(qw_mil *m, Qwml__Op *op, const char *key, Qwml__Value *v) {
    Qwml__ValueEntry *e = NEW(m, Qwml__ValueEntry, qwml__value_entry__descriptor);
    Qwml__ValueEntry **arr = alloc(m, (op->n_attributes + 1) * sizeof *arr);
    if (!e || !arr || !v || !(e->key = str(m, key))) return false;
    e->value = v;
    if (op->n_attributes) memcpy(arr, op->attributes, op->n_attributes * sizeof *arr);
    arr[op->n_attributes++] = e;
    op->attributes = arr;
    return true;
}

static Qwml__Op *op_new(qw_mil *m, const char *type, const char *name, const qw_mil_var *out) {
    Qwml__Op *op = NEW(m, Qwml__Op, qwml__op__descriptor);
    if (!op || !(op->type = str(m, type))) return NULL;
    if (!add_attr(m, op, "name", value_string(m, name))) return NULL;
    Qwml__NamedType **outs = alloc(m, sizeof *outs);
    if (!outs || !(outs[0] = named_type(m, name, out))) return NULL;
    op->outputs = outs;
    op->n_outputs = 1;
    return op;
}

static qw_mil_var op_push(qw_mil *m, Qwml__Op *op, qw_mil_var out) {
    qw_mil_var none = {0};
    if (!op || m->st != QW_OK) return none;
    if (!grow(m, (void **)&m->ops, &m->cap_ops, m->n_ops, sizeof *m->ops)) return none;
    m->ops[m->n_ops++] = op;
    out.name = op->outputs[0]->name;
    return out;
}

static Qwml__Feature *state_feature(qw_mil *m, const qw_mil_feature *f);

qw_mil_var qw_mil_state(qw_mil *m, const char *name, const char *doc, int rank,
                        const int64_t *dims) {
    qw_mil_var t = qw_mil_type(QW_MIL_FP16, rank, dims), none = {0};
    if (!grow(m, (void **)&m->inputs, &m->cap_inputs, m->n_inputs, sizeof *m->inputs) ||
        !grow(m, (void **)&m->states, &m->cap_states, m->n_states, sizeof *m->states)) {
        return none;
    }
    qw_mil_feature f = {name, doc, QW_ARRAY_FLOAT16, rank, {0}, false, {0}, {0}};
    for (int i = 0; i < rank && i < QW_MIL_MAX_RANK; i++) f.shape[i] = dims[i];
    Qwml__Feature *desc = state_feature(m, &f);
    if (!desc) return none;
    Qwml__NamedType *nt = NEW(m, Qwml__NamedType, qwml__named_type__descriptor);
    Qwml__ValueType *vt = NEW(m, Qwml__ValueType, qwml__value_type__descriptor);
    Qwml__StateType *st = NEW(m, Qwml__StateType, qwml__state_type__descriptor);
    if (!nt || !vt || !st || !(nt->name = str(m, name)) || !(st->wrapped = value_type(m, &t))) {
        return none;
    }
    vt->kind_case = QWML__VALUE_TYPE__KIND_STATE;
    vt->state = st;
    nt->type = vt;
    m->inputs[m->n_inputs++] = nt;
    m->states[m->n_states++] = desc;
    t.name = nt->name;
    return t;
}

qw_mil_var qw_mil_input(qw_mil *m, const char *name, int dtype, int rank, const int64_t *dims) {
    qw_mil_var t = qw_mil_type(dtype, rank, dims), none = {0};
    if (!grow(m, (void **)&m->inputs, &m->cap_inputs, m->n_inputs, sizeof *m->inputs)) {
        return none;
    }
    Qwml__NamedType *nt = named_type(m, name, &t);
    if (!nt) return none;
    m->inputs[m->n_inputs++] = nt;
    t.name = nt->name;
    return t;
}

void qw_mil_output(qw_mil *m, qw_mil_var v) {
    if (!v.name || !grow(m, (void **)&m->outputs, &m->cap_outputs, m->n_outputs,
                         sizeof *m->outputs)) {
        return;
    }
    m->outputs[m->n_outputs++] = (char *)v.name;
}

/* An op with its inputs bound by name; out NULL: the op has no outputs. */
static Qwml__Op *op_with_args(qw_mil *m, const char *type, const char *name,
                              const qw_mil_arg *args, size_t n_args, const qw_mil_var *out) {
    if (m->st != QW_OK) return NULL;
    for (size_t i = 0; i < n_args; i++) {
        for (size_t k = 0; k < args[i].n; k++) {
            if (!args[i].vars[k].name) {
                set_error(m, QW_ERR_INTERNAL, "MIL op input without a value");
                return NULL;
            }
        }
    }
    Qwml__Op *op = NULL;
    if (out) {
        op = op_new(m, type, name, out);
    } else if ((op = NEW(m, Qwml__Op, qwml__op__descriptor)) &&
               (!(op->type = str(m, type)) || !add_attr(m, op, "name", value_string(m, name)))) {
        op = NULL;
    }
    Qwml__ArgumentEntry **entries = n_args ? alloc(m, n_args * sizeof *entries) : NULL;
    if (!op || (n_args && !entries)) return NULL;
    for (size_t i = 0; i < n_args; i++) {
        Qwml__ArgumentEntry *e = NEW(m, Qwml__ArgumentEntry, qwml__argument_entry__descriptor);
        Qwml__Argument *a = NEW(m, Qwml__Argument, qwml__argument__descriptor);
        Qwml__Binding **b = alloc(m, args[i].n * sizeof *b);
        if (!e || !a || !b || !(e->key = str(m, args[i].key))) return NULL;
        for (size_t k = 0; k < args[i].n; k++) {
            b[k] = NEW(m, Qwml__Binding, qwml__binding__descriptor);
            if (!b[k]) return NULL;
            b[k]->kind_case = QWML__BINDING__KIND_NAME;
            b[k]->name = (char *)args[i].vars[k].name;
        }
        a->bindings = b;
        a->n_bindings = args[i].n;
        e->value = a;
        entries[i] = e;
    }
    op->inputs = entries;
    op->n_inputs = n_args;
    return op;
}

qw_mil_var qw_mil_op(qw_mil *m, const char *type, const char *name, const qw_mil_arg *args,
                     size_t n_args, qw_mil_var out) {
    return op_push(m, op_with_args(m, type, name, args, n_args, &out), out);
}

void qw_mil_op_no_output(qw_mil *m, const char *type, const char *name, const qw_mil_arg *args,
                         size_t n_args) {
    Qwml__Op *op = op_with_args(m, type, name, args, n_args, NULL);
    if (op && grow(m, (void **)&m->ops, &m->cap_ops, m->n_ops, sizeof *m->ops)) {
        m->ops[m->n_ops++] = op;
    }
}

static qw_mil_var const_op(qw_mil *m, const char *name, qw_mil_var t, Qwml__Value *v) {
    qw_mil_var none = {0};
    if (!v) return none;
    Qwml__Op *op = op_new(m, "const", name, &t);
    if (!op || !add_attr(m, op, "val", v)) return none;
    return op_push(m, op, t);
}

qw_mil_var qw_mil_const_i32(qw_mil *m, const char *name, const int32_t *v, size_t n, int rank) {
    const int64_t dims[1] = {(int64_t)n};
    qw_mil_var t = qw_mil_type(QW_MIL_INT32, rank, dims);
    return const_op(m, name, t, value_ints(m, &t, v, n));
}

qw_mil_var qw_mil_const_bools(qw_mil *m, const char *name, const bool *v, size_t n) {
    const int64_t dims[1] = {(int64_t)n};
    qw_mil_var t = qw_mil_type(QW_MIL_BOOL, 1, dims);
    return const_op(m, name, t, value_bools(m, &t, v, n));
}

qw_mil_var qw_mil_const_bool(qw_mil *m, const char *name, bool v) {
    qw_mil_var t = qw_mil_type(QW_MIL_BOOL, 0, NULL);
    return const_op(m, name, t, value_bools(m, &t, &v, 1));
}

qw_mil_var qw_mil_const_f16(qw_mil *m, const char *name, float v) {
    qw_mil_var t = qw_mil_type(QW_MIL_FP16, 0, NULL);
    const uint16_t h = qw_fp32_to_fp16(v);
    const uint8_t le[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
    return const_op(m, name, t, value_bytes(m, &t, le, 2));
}

qw_mil_var qw_mil_const_f32(qw_mil *m, const char *name, float v) {
    qw_mil_var t = qw_mil_type(QW_MIL_FP32, 0, NULL);
    return const_op(m, name, t, value_floats(m, &t, &v, 1));
}

qw_mil_var qw_mil_const_str(qw_mil *m, const char *name, const char *s) {
    qw_mil_var t = qw_mil_type(QW_MIL_STRING, 0, NULL);
    return const_op(m, name, t, value_string(m, s));
}

qw_mil_var qw_mil_const_blob(qw_mil *m, const char *name, int dtype, int rank,
                             const int64_t *dims, uint64_t blob_offset) {
    qw_mil_var t = qw_mil_type(dtype, rank, dims);
    return const_op(m, name, t, value_blob(m, &t, blob_offset));
}

qw_mil_var qw_mil_const_data(qw_mil *m, const char *name, int dtype, int rank,
                             const int64_t *dims, const void *data, size_t bytes) {
    qw_mil_var t = qw_mil_type(dtype, rank, dims);
    return const_op(m, name, t, value_data(m, &t, data, bytes));
}

qw_mil_value *qw_mil_value_data(qw_mil *m, int dtype, int rank, const int64_t *dims,
                                const void *data, size_t bytes) {
    qw_mil_var t = qw_mil_type(dtype, rank, dims);
    return (qw_mil_value *)value_data(m, &t, data, bytes);
}

qw_mil_value *qw_mil_value_blob(qw_mil *m, int dtype, int rank, const int64_t *dims,
                                uint64_t blob_offset) {
    qw_mil_var t = qw_mil_type(dtype, rank, dims);
    return (qw_mil_value *)value_blob(m, &t, blob_offset);
}

qw_mil_value *qw_mil_value_i32(qw_mil *m, int32_t v) {
    qw_mil_var t = qw_mil_type(QW_MIL_INT32, 0, NULL);
    return (qw_mil_value *)value_ints(m, &t, &v, 1);
}

qw_mil_var qw_mil_constexpr(qw_mil *m, const char *type, const char *name,
                            const char *const *keys, qw_mil_value *const *values, size_t n,
                            qw_mil_var out) {
    qw_mil_var none = {0};
    Qwml__Op *op = m->st == QW_OK ? op_new(m, type, name, &out) : NULL;
    for (size_t i = 0; op && i < n; i++) {
        if (!values[i] || !add_attr(m, op, keys[i], &values[i]->v)) return none;
    }
    return op_push(m, op, out);
}

qw_mil_var qw_mil_constexpr_inputs(qw_mil *m, const char *type, const char *name,
                                   const char *const *keys, qw_mil_value *const *values, size_t n,
                                   qw_mil_var out) {
    qw_mil_var none = {0};
    Qwml__Op *op = m->st == QW_OK ? op_new(m, type, name, &out) : NULL;
    Qwml__ArgumentEntry **entries = op ? alloc(m, (n ? n : 1) * sizeof *entries) : NULL;
    if (!entries) return none;
    for (size_t i = 0; i < n; i++) {
        Qwml__ArgumentEntry *e = NEW(m, Qwml__ArgumentEntry, qwml__argument_entry__descriptor);
        Qwml__Argument *a = NEW(m, Qwml__Argument, qwml__argument__descriptor);
        Qwml__Binding **bind = alloc(m, sizeof *bind);
        if (!e || !a || !bind || !values[i] || !(e->key = str(m, keys[i]))) return none;
        if (!(bind[0] = NEW(m, Qwml__Binding, qwml__binding__descriptor))) return none;
        bind[0]->kind_case = QWML__BINDING__KIND_VALUE;
        bind[0]->value = &values[i]->v;
        a->bindings = bind;
        a->n_bindings = 1;
        e->value = a;
        entries[i] = e;
    }
    op->inputs = entries;
    op->n_inputs = n;
    return op_push(m, op, out);
}

/* ---- the Model ------------------------------------------------------------------------------ */

static Qwml__Feature *feature(qw_mil *m, const qw_mil_feature *f) {
    Qwml__Feature *fd = NEW(m, Qwml__Feature, qwml__feature__descriptor);
    Qwml__FeatureType *ft = NEW(m, Qwml__FeatureType, qwml__feature_type__descriptor);
    Qwml__ArrayFeature *af = NEW(m, Qwml__ArrayFeature, qwml__array_feature__descriptor);
    int64_t *shape = alloc(m, (size_t)(f->rank ? f->rank : 1) * sizeof *shape);
    if (!fd || !ft || !af || !shape || !(fd->name = str(m, f->name))) return NULL;
    if (f->doc && !(fd->short_description = str(m, f->doc))) return NULL;
    memcpy(shape, f->shape, (size_t)f->rank * sizeof *shape);
    af->shape = shape;
    af->n_shape = (size_t)f->rank;
    af->data_type = f->array_dtype;
    if (f->has_range) {
        Qwml__ShapeRange *sr = NEW(m, Qwml__ShapeRange, qwml__shape_range__descriptor);
        Qwml__SizeRange **ranges = alloc(m, (size_t)f->rank * sizeof *ranges);
        if (!sr || !ranges) return NULL;
        for (int i = 0; i < f->rank; i++) {
            ranges[i] = NEW(m, Qwml__SizeRange, qwml__size_range__descriptor);
            if (!ranges[i]) return NULL;
            ranges[i]->lower = (uint64_t)f->lower[i];
            ranges[i]->upper = f->upper[i];
        }
        sr->size_ranges = ranges;
        sr->n_size_ranges = (size_t)f->rank;
        af->shape_range = sr;
    }
    ft->multi_array = af;
    fd->type = ft;
    return fd;
}

/* A state: the same array description, wrapped as a StateFeatureType. */
static Qwml__Feature *state_feature(qw_mil *m, const qw_mil_feature *f) {
    Qwml__Feature *fd = feature(m, f);
    Qwml__StateFeature *sf = NEW(m, Qwml__StateFeature, qwml__state_feature__descriptor);
    if (!fd || !sf) return NULL;
    sf->array = fd->type->multi_array;
    fd->type->multi_array = NULL;
    fd->type->state = sf;
    return fd;
}

qw_status qw_mil_serialize(qw_mil *m, const qw_mil_model_info *info, uint8_t **out,
                           size_t *out_len, qw_error *err) {
    *out = NULL;
    *out_len = 0;
    Qwml__Model *model = NEW(m, Qwml__Model, qwml__model__descriptor);
    Qwml__Interface *desc = NEW(m, Qwml__Interface, qwml__interface__descriptor);
    Qwml__Metadata *meta = NEW(m, Qwml__Metadata, qwml__metadata__descriptor);
    Qwml__Program *prog = NEW(m, Qwml__Program, qwml__program__descriptor);
    Qwml__FunctionEntry *fe = NEW(m, Qwml__FunctionEntry, qwml__function_entry__descriptor);
    Qwml__Function *fn = NEW(m, Qwml__Function, qwml__function__descriptor);
    Qwml__BlockEntry *be = NEW(m, Qwml__BlockEntry, qwml__block_entry__descriptor);
    Qwml__Block *block = NEW(m, Qwml__Block, qwml__block__descriptor);
    Qwml__Feature **ins = alloc(m, (info->n_inputs + 1) * sizeof *ins);
    Qwml__Feature **outs = alloc(m, (info->n_outputs + 1) * sizeof *outs);
    Qwml__StringEntry **ud = alloc(m, (info->n_user_defined + 1) * sizeof *ud);
    Qwml__FunctionEntry **fes = alloc(m, sizeof *fes);
    Qwml__BlockEntry **bes = alloc(m, sizeof *bes);
    if (m->st != QW_OK) return qw_mil_status(m, err);
    for (size_t i = 0; i < info->n_inputs; i++) ins[i] = feature(m, &info->inputs[i]);
    for (size_t i = 0; i < info->n_outputs; i++) outs[i] = feature(m, &info->outputs[i]);
    for (size_t i = 0; i < info->n_user_defined; i++) {
        ud[i] = NEW(m, Qwml__StringEntry, qwml__string_entry__descriptor);
        if (!ud[i]) break;
        ud[i]->key = str(m, info->user_defined[2 * i]);
        ud[i]->value = str(m, info->user_defined[2 * i + 1]);
    }
    if (info->short_description) meta->short_description = str(m, info->short_description);
    meta->user_defined = ud;
    meta->n_user_defined = info->n_user_defined;
    desc->inputs = ins;
    desc->n_inputs = info->n_inputs;
    desc->outputs = outs;
    desc->n_outputs = info->n_outputs;
    desc->states = m->states;
    desc->n_states = m->n_states;
    desc->metadata = meta;
    block->outputs = m->outputs;
    block->n_outputs = m->n_outputs;
    block->ops = m->ops;
    block->n_ops = m->n_ops;
    be->key = str(m, info->opset);
    be->value = block;
    bes[0] = be;
    fn->inputs = m->inputs;
    fn->n_inputs = m->n_inputs;
    fn->opset = str(m, info->opset);
    fn->blocks = bes;
    fn->n_blocks = 1;
    fe->key = str(m, "main");
    fe->value = fn;
    fes[0] = fe;
    prog->version = 1;
    prog->functions = fes;
    prog->n_functions = 1;
    model->spec_version = info->spec_version;
    model->description = desc;
    model->ml_program = prog;
    if (m->st != QW_OK) return qw_mil_status(m, err);
    const size_t len = protobuf_c_message_get_packed_size(&model->base);
    uint8_t *buf = qw_malloc(len ? len : 1);
    if (!buf) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    if (protobuf_c_message_pack(&model->base, buf) != len) {
        qw_free(buf);
        return qw_fail(err, QW_ERR_INTERNAL, "the Core ML model spec did not serialize");
    }
    *out = buf;
    *out_len = len;
    return QW_OK;
}
