/*
 * SentencePiece tokenizer.model: the protobuf wire format read by hand (the file is a handful of
 * fields; a protobuf library and a generated schema would be more code than this reader).
 *
 * Wire format (proto2): a message is a run of fields, each
 *   key   = varint (field_number << 3 | wire_type)
 *   value = varint (wire type 0) | 8 bytes (1) | varint length + bytes (2) | 4 bytes (5)
 * Varints are little-endian base-128, at most 10 bytes. Unknown fields are skipped; absent fields
 * take the defaults in spm_proto.h.
 */
#include "spm_proto.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tok_private.h"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* Largest piece count accepted: far above any published vocabulary (~2^18), and small enough
 * that the piece array cannot overflow. */
#define SPM_MAX_PIECES (1u << 26)

typedef struct pb_reader {
    const uint8_t *base; /* start of the file, for offsets in messages */
    const uint8_t *p, *end;
    const char *path;
    const char *where; /* message being read, for messages */
    qw_error *err;
} pb_reader;

typedef struct pb_field {
    uint32_t number;
    uint32_t wire;
    uint64_t u64;        /* varint, fixed64 and fixed32 values */
    const uint8_t *data; /* length-delimited value */
    size_t len;
} pb_field;

static qw_status pb_fail(const pb_reader *r, const uint8_t *at, const char *what) {
    return qw_fail_at(r->err, QW_ERR_CORRUPT, r->where, (int64_t)(at - r->base),
                      "%s: %s: %s at byte %lld", r->path, r->where, what,
                      (long long)(at - r->base));
}

static qw_status pb_varint(pb_reader *r, uint64_t *out) {
    const uint8_t *start = r->p;
    uint64_t v = 0;
    *out = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return pb_fail(r, start, "truncated varint");
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return QW_OK;
        }
    }
    return pb_fail(r, start, "varint longer than 10 bytes");
}

static uint64_t little_endian(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Reads the next field; the caller stops when r->p == r->end. */
static qw_status pb_next(pb_reader *r, pb_field *f) {
    const uint8_t *start = r->p;
    uint64_t key;
    QW_TRY(pb_varint(r, &key));
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff) return pb_fail(r, start, "bad field number");
    *f = (pb_field){.number = (uint32_t)(key >> 3), .wire = (uint32_t)(key & 7)};
    size_t left = (size_t)(r->end - r->p);
    switch (f->wire) { /* the four wire types proto2 files use; protobuf's numbers, not ours */
    case WIRE_VARINT:
        return pb_varint(r, &f->u64);
    case WIRE_FIXED64:
        if (left < 8) return pb_fail(r, start, "truncated 64-bit field");
        f->u64 = little_endian(r->p, 8);
        r->p += 8;
        return QW_OK;
    case WIRE_FIXED32:
        if (left < 4) return pb_fail(r, start, "truncated 32-bit field");
        f->u64 = little_endian(r->p, 4);
        r->p += 4;
        return QW_OK;
    case WIRE_LEN: {
        uint64_t len;
        QW_TRY(pb_varint(r, &len));
        if (len > (uint64_t)(r->end - r->p)) {
            return pb_fail(r, start, "length-delimited field runs past the end");
        }
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return QW_OK;
    }
    default: /* 3 and 4 are proto1 groups, which SentencePiece never wrote */
        return pb_fail(r, start, "unsupported wire type");
    }
}

static pb_reader sub_reader(const pb_reader *parent, const pb_field *f, const char *where) {
    pb_reader r = *parent;
    r.p = f->data;
    r.end = f->data + f->len;
    r.where = where;
    return r;
}

/* proto2 int32 fields are sign-extended varints */
static int64_t as_int32(uint64_t v) {
    return (int64_t)(int32_t)(uint32_t)v;
}

static qw_status read_trainer_spec(const pb_reader *top, const pb_field *f, spm_proto *sp) {
    pb_reader r = sub_reader(top, f, "trainer_spec");
    while (r.p < r.end) {
        pb_field g;
        QW_TRY(pb_next(&r, &g));
        if (g.wire != WIRE_VARINT) continue;
        if (g.number == 3) sp->model_type = g.u64;
        if (g.number == 24) sp->whitespace_as_suffix = g.u64 != 0;
        if (g.number == 35) sp->byte_fallback = g.u64 != 0;
        if (g.number == 40) sp->unk_id = as_int32(g.u64);
        if (g.number == 41) sp->bos_id = as_int32(g.u64);
    }
    return QW_OK;
}

static qw_status read_normalizer_spec(const pb_reader *top, const pb_field *f, spm_proto *sp) {
    pb_reader r = sub_reader(top, f, "normalizer_spec");
    while (r.p < r.end) {
        pb_field g;
        QW_TRY(pb_next(&r, &g));
        if (g.number == 1 && g.wire == WIRE_LEN) {
            size_t n = g.len < sizeof sp->normalizer_name - 1 ? g.len
                                                               : sizeof sp->normalizer_name - 1;
            memcpy(sp->normalizer_name, g.data, n);
            sp->normalizer_name[n] = 0;
        }
        if (g.number == 2 && g.wire == WIRE_LEN) sp->has_charsmap = g.len > 0;
        if (g.wire != WIRE_VARINT) continue;
        if (g.number == 3) sp->add_dummy_prefix = g.u64 != 0;
        if (g.number == 4) sp->remove_extra_whitespaces = g.u64 != 0;
        if (g.number == 5) sp->escape_whitespaces = g.u64 != 0;
    }
    return QW_OK;
}

/* First pass: counts the pieces and reads the two specs. */
static qw_status scan_model(pb_reader *r, spm_proto *sp) {
    while (r->p < r->end) {
        const uint8_t *at = r->p;
        pb_field f;
        QW_TRY(pb_next(r, &f));
        if (f.number >= 1 && f.number <= 3 && f.wire != WIRE_LEN) {
            return pb_fail(r, at, "field 1, 2 or 3 is not a message");
        }
        if (f.number == 1) {
            if (sp->n_pieces == SPM_MAX_PIECES) return pb_fail(r, at, "too many pieces");
            sp->n_pieces++;
        } else if (f.number == 2) {
            QW_TRY(read_trainer_spec(r, &f, sp));
        } else if (f.number == 3) {
            QW_TRY(read_normalizer_spec(r, &f, sp));
        }
    }
    return QW_OK;
}

static qw_status read_piece(const pb_reader *top, const pb_field *f, size_t id, spm_piece *out) {
    char where[48];
    snprintf(where, sizeof where, "pieces[%zu]", id);
    pb_reader r = sub_reader(top, f, where);
    const uint8_t *text = NULL;
    size_t text_len = 0;
    float score = 0.0f;
    uint64_t type = SPM_PIECE_NORMAL;
    while (r.p < r.end) {
        const uint8_t *at = r.p;
        pb_field g;
        QW_TRY(pb_next(&r, &g));
        if (g.number == 1) {
            if (g.wire != WIRE_LEN) return pb_fail(&r, at, "piece text is not a string");
            text = g.data;
            text_len = g.len;
        } else if (g.number == 2) {
            if (g.wire != WIRE_FIXED32) return pb_fail(&r, at, "piece score is not a float");
            uint32_t bits = (uint32_t)g.u64;
            memcpy(&score, &bits, sizeof score);
            if (!isfinite(score)) return pb_fail(&r, at, "piece score is not a finite number");
        } else if (g.number == 3) {
            if (g.wire != WIRE_VARINT) return pb_fail(&r, at, "piece type is not an enum");
            type = g.u64;
        }
    }
    const uint8_t *start = f->data;
    if (!text || text_len == 0) return pb_fail(&r, start, "a piece has no text");
    /* NUL is refused too: llama.cpp looks token texts up as C strings */
    if (!tok_utf8_valid((const char *)text, text_len) || memchr(text, 0, text_len)) {
        return pb_fail(&r, start, "piece text is not valid UTF-8");
    }
    if (type < SPM_PIECE_NORMAL || type > SPM_PIECE_BYTE) {
        return pb_fail(&r, start, "piece type is not 1..6");
    }
    if (text_len > UINT32_MAX) return pb_fail(&r, start, "piece text is too long");
    *out = (spm_piece){(const char *)text, (uint32_t)text_len, score, (uint8_t)type};
    return QW_OK;
}

qw_status spm_proto_parse(const uint8_t *data, size_t size, const char *path, spm_proto *sp,
                          qw_error *err) {
    *sp = (spm_proto){.model_type = SPM_MODEL_UNIGRAM,
                      .unk_id = 0,
                      .bos_id = 1,
                      .add_dummy_prefix = true,
                      .remove_extra_whitespaces = true,
                      .escape_whitespaces = true};
    /* an empty file maps to no memory at all (data NULL), and NULL + 0 is undefined */
    if (size == 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: empty file (not a tokenizer.model)", path);
    }
    pb_reader r = {data, data, data + size, path, "ModelProto", err};
    QW_TRY(scan_model(&r, sp));
    if (sp->n_pieces == 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: no SentencePiece pieces (not a tokenizer.model?)",
                       path);
    }
    sp->pieces = qw_calloc(sp->n_pieces, sizeof *sp->pieces);
    if (!sp->pieces) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory for %zu pieces", path,
                       sp->n_pieces);
    }
    r.p = data;
    size_t id = 0;
    while (r.p < r.end) {
        pb_field f;
        qw_status st = pb_next(&r, &f);
        if (st == QW_OK && f.number == 1) {
            st = read_piece(&r, &f, id, &sp->pieces[id]);
            id++;
        }
        if (st != QW_OK) {
            spm_proto_free(sp);
            return st;
        }
    }
    return QW_OK;
}

const char *spm_model_type_name(uint64_t model_type) {
    static const char *const names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    return model_type < sizeof names / sizeof names[0] ? names[model_type] : "?";
}

void spm_proto_free(spm_proto *p) {
    if (!p) return;
    qw_free(p->pieces);
    p->pieces = NULL;
    p->n_pieces = 0;
}
