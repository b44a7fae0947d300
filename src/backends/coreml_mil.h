/*
 * coreml_mil.h — building a MIL program (Core ML's ML Program) op by op, and serializing it with
 * its interface as a Core ML Model spec (protobuf, our schema src/io/mil.proto).
 *
 * Every var carries its type (dtype, rank, dims with QW_MIL_DYN for a symbolic dimension), and
 * each helper states the output type it declares; coremltools' loader re-infers the types and
 * refuses a program whose declared types differ, so the tests check the two agree.
 *
 * Errors are sticky: the first failure (out of memory, a blob write) is kept in the builder,
 * later calls do nothing and return an empty var, and qw_mil_serialize reports it. This keeps
 * graph-building code free of per-op checks.
 */
#ifndef QW_COREML_MIL_H
#define QW_COREML_MIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "mil_package.h"

/* MIL DataType numbers (research/coreml.md §2.2) */
enum {
    QW_MIL_BOOL = 1,
    QW_MIL_STRING = 2,
    QW_MIL_FP16 = 10,
    QW_MIL_FP32 = 11,
    QW_MIL_INT8 = 21,
    QW_MIL_INT32 = 23,
    QW_MIL_UINT8 = 31,
    QW_MIL_UINT32 = 33,
    QW_MIL_UINT4 = 35,
    QW_MIL_UINT6 = 38,
};

/* ArrayDataType numbers of the model interface */
enum {
    QW_ARRAY_FLOAT16 = 65552,
    QW_ARRAY_FLOAT32 = 65568,
    QW_ARRAY_INT32 = 131104,
};

#define QW_MIL_MAX_RANK 6
#define QW_MIL_DYN (-1)

typedef struct qw_mil_var {
    const char *name; /* NULL after an error */
    int dtype;
    int rank;
    int64_t dims[QW_MIL_MAX_RANK];
} qw_mil_var;

/* One named input of an op: one var, or several for a tuple input (concat's values). */
typedef struct qw_mil_arg {
    const char *key;
    const qw_mil_var *vars;
    size_t n;
} qw_mil_arg;

typedef struct qw_mil qw_mil;
typedef struct qw_mil_value qw_mil_value; /* a literal or blob value for constexpr params */

/* blobs: where consts' data goes (borrowed; may be NULL if no blob is ever needed). */
qw_status qw_mil_create(qw_blob_writer *blobs, qw_mil **out, qw_error *err);
void qw_mil_free(qw_mil *m);
/* The first error so far (QW_OK if none); err receives its message. */
qw_status qw_mil_status(const qw_mil *m, qw_error *err);
/* Records a failure that happened outside the builder (a tensor read) so the build stops. */
void qw_mil_fail(qw_mil *m, const qw_error *e, qw_status st);
qw_blob_writer *qw_mil_blobs(qw_mil *m);

qw_mil_var qw_mil_type(int dtype, int rank, const int64_t *dims);

/* A function input. dims may hold QW_MIL_DYN. */
qw_mil_var qw_mil_input(qw_mil *m, const char *name, int dtype, int rank, const int64_t *dims);
/* An iOS18 state (spec >= 9): a function input of type state<tensor fp16> with fixed dims, which
 * qw_mil_serialize also lists in description.state (doc: its short description). The var names
 * the state for read_state / write_state; its dtype and dims are those of the tensor it holds. */
qw_mil_var qw_mil_state(qw_mil *m, const char *name, const char *doc, int rank,
                        const int64_t *dims);
/* A block output (by var name). */
void qw_mil_output(qw_mil *m, qw_mil_var v);

/* A generic op with one output named `name` of type `out` (out.name is ignored). */
qw_mil_var qw_mil_op(qw_mil *m, const char *type, const char *name, const qw_mil_arg *args,
                     size_t n_args, qw_mil_var out);

/* An op without outputs (write_state), named `name`. */
void qw_mil_op_no_output(qw_mil *m, const char *type, const char *name, const qw_mil_arg *args,
                         size_t n_args);

/* Consts written inline. */
qw_mil_var qw_mil_const_i32(qw_mil *m, const char *name, const int32_t *v, size_t n, int rank);
qw_mil_var qw_mil_const_bools(qw_mil *m, const char *name, const bool *v, size_t n);
qw_mil_var qw_mil_const_bool(qw_mil *m, const char *name, bool v);
qw_mil_var qw_mil_const_f16(qw_mil *m, const char *name, float v);
qw_mil_var qw_mil_const_f32(qw_mil *m, const char *name, float v);
qw_mil_var qw_mil_const_str(qw_mil *m, const char *name, const char *s);
/* A const whose data is already in the blob file (metadata at blob_offset). */
qw_mil_var qw_mil_const_blob(qw_mil *m, const char *name, int dtype, int rank,
                             const int64_t *dims, uint64_t blob_offset);
/* Little-endian data of dtype fp16/fp32/int8/uint8: put in the blob file when it has at least
 * 10 elements (coremltools' rule), inline otherwise. */
qw_mil_var qw_mil_const_data(qw_mil *m, const char *name, int dtype, int rank,
                             const int64_t *dims, const void *data, size_t bytes);

/* Values for constexpr params (kept by the builder). */
qw_mil_value *qw_mil_value_data(qw_mil *m, int dtype, int rank, const int64_t *dims,
                                const void *data, size_t bytes);
qw_mil_value *qw_mil_value_blob(qw_mil *m, int dtype, int rank, const int64_t *dims,
                                uint64_t blob_offset);
qw_mil_value *qw_mil_value_i32(qw_mil *m, int32_t v);
/* An iOS16/17 constexpr op: params go into the op's attributes, and it has no inputs. */
qw_mil_var qw_mil_constexpr(qw_mil *m, const char *type, const char *name,
                            const char *const *keys, qw_mil_value *const *values, size_t n,
                            qw_mil_var out);

/* An iOS18 constexpr op: params are inputs bound to literal values (Binding.value). */
qw_mil_var qw_mil_constexpr_inputs(qw_mil *m, const char *type, const char *name,
                                   const char *const *keys, qw_mil_value *const *values, size_t n,
                                   qw_mil_var out);

/* The model interface: one multi-array feature. Range dims give a shapeRange; dims of
 * `shape` are the default shape (outputs with symbolic shapes pass rank 0). */
typedef struct qw_mil_feature {
    const char *name;
    const char *doc;
    int32_t array_dtype;
    int rank;
    int64_t shape[QW_MIL_MAX_RANK];
    bool has_range;
    int64_t lower[QW_MIL_MAX_RANK], upper[QW_MIL_MAX_RANK];
} qw_mil_feature;

typedef struct qw_mil_model_info {
    int32_t spec_version;
    const char *opset; /* "CoreML6" for spec 7, ... */
    const qw_mil_feature *inputs;
    size_t n_inputs;
    const qw_mil_feature *outputs;
    size_t n_outputs;
    const char *short_description;
    const char *const *user_defined; /* key, value, key, value, ... */
    size_t n_user_defined;           /* pairs */
} qw_mil_model_info;

/* The Model protobuf: one function "main" with every op added so far, and every state added
 * in description.state. *out is qw_malloc'd. */
qw_status qw_mil_serialize(qw_mil *m, const qw_mil_model_info *info, uint8_t **out,
                           size_t *out_len, qw_error *err);

#endif /* QW_COREML_MIL_H */
