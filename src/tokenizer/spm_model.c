/*
 * SentencePiece tokenizer.model -> GGUF vocabulary, reading the protobuf wire format by hand.
 *
 * Wire format (proto2): a message is a run of fields, each
 *   key   = varint (field_number << 3 | wire_type)
 *   value = varint (wire type 0) | 8 bytes (1) | varint length + bytes (2) | 4 bytes (5)
 * Varints are little-endian base-128, at most 10 bytes. Unknown fields are skipped; absent
 * fields take the defaults below.
 *
 *   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
 *                    NormalizerSpec normalizer_spec = 3; ... }
 *   SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
 *                  Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
 *                  (the numbers GGUF uses for token types)
 *   TrainerSpec    { ModelType model_type = 3 [default = UNIGRAM]; ... }
 *                  ModelType: UNIGRAM 1, BPE 2, WORD 3, CHAR 4
 *   NormalizerSpec { bool add_dummy_prefix = 3 [default = true]; ... }
 */
#include <math.h>
#include <string.h>

#include "vocab_private.h"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };
enum { MODEL_TYPE_UNIGRAM = 1, MODEL_TYPE_BPE = 2 };

static const char *const MODEL_TYPE_NAMES[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};

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
    uint64_t u64;           /* varint, fixed64 and fixed32 values */
    const uint8_t *data;    /* length-delimited value */
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

/* Reads the next field; the caller stops when r->p == r->end. */
static qw_status pb_next(pb_reader *r, pb_field *f) {
    const uint8_t *start = r->p;
    uint64_t key;
    QW_TRY(pb_varint(r, &key));
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff) return pb_fail(r, start, "bad field number");
    f->number = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->u64 = 0;
    size_t left = (size_t)(r->end - r->p);
    switch (f->wire) { /* the four wire types proto2 files use */
    case WIRE_VARINT:
        return pb_varint(r, &f->u64);
    case WIRE_FIXED64:
        if (left < 8) return pb_fail(r, start, "truncated 64-bit field");
        for (int i = 7; i >= 0; i--) f->u64 = f->u64 << 8 | r->p[i];
        r->p += 8;
        return QW_OK;
    case WIRE_FIXED32:
        if (left < 4) return pb_fail(r, start, "truncated 32-bit field");
        for (int i = 3; i >= 0; i--) f->u64 = f->u64 << 8 | r->p[i];
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

/* Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF, and no NUL (llama.cpp
 * looks token texts up as C strings). */
static bool valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

typedef struct spm_info {
    uint32_t n_pieces;
    uint64_t model_type;
    bool add_dummy_prefix;
} spm_info;

static qw_status read_trainer_spec(const pb_reader *top, const pb_field *f, spm_info *info) {
    pb_reader r = sub_reader(top, f, "trainer_spec");
    while (r.p < r.end) {
        pb_field g;
        QW_TRY(pb_next(&r, &g));
        if (g.number == 3 && g.wire == WIRE_VARINT) info->model_type = g.u64;
    }
    return QW_OK;
}

static qw_status read_normalizer_spec(const pb_reader *top, const pb_field *f, spm_info *info) {
    pb_reader r = sub_reader(top, f, "normalizer_spec");
    while (r.p < r.end) {
        pb_field g;
        QW_TRY(pb_next(&r, &g));
        if (g.number == 3 && g.wire == WIRE_VARINT) info->add_dummy_prefix = g.u64 != 0;
    }
    return QW_OK;
}

/* First pass: counts the pieces and reads the two specs. */
static qw_status scan_model(pb_reader *r, spm_info *info) {
    *info = (spm_info){0, MODEL_TYPE_UNIGRAM, true};
    while (r->p < r->end) {
        const uint8_t *at = r->p;
        pb_field f;
        QW_TRY(pb_next(r, &f));
        if (f.number >= 1 && f.number <= 3 && f.wire != WIRE_LEN) {
            return pb_fail(r, at, "field 1, 2 or 3 is not a message");
        }
        if (f.number == 1) {
            if (info->n_pieces == UINT32_MAX) return pb_fail(r, at, "too many pieces");
            info->n_pieces++;
        } else if (f.number == 2) {
            QW_TRY(read_trainer_spec(r, &f, info));
        } else if (f.number == 3) {
            QW_TRY(read_normalizer_spec(r, &f, info));
        }
    }
    return QW_OK;
}

static qw_status read_piece(const pb_reader *top, const pb_field *f, qw_vocab *v, uint32_t id) {
    pb_reader r = sub_reader(top, f, "pieces");
    const uint8_t *text = NULL;
    size_t text_len = 0;
    float score = 0.0f;
    uint64_t type = QW_TOKEN_NORMAL;
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
    if (!valid_utf8(text, text_len)) return pb_fail(&r, start, "piece text is not valid UTF-8");
    if (type < QW_TOKEN_NORMAL || type > QW_TOKEN_BYTE) {
        return pb_fail(&r, start, "piece type is not 1..6");
    }
    QW_TRY(qw_vocab_set_text(v, id, (const char *)text, text_len, top->path, top->err));
    v->scores[id] = score;
    v->types[id] = (int32_t)type;
    return QW_OK;
}

qw_status qw_vocab_read_spm_model(qw_vocab *v, const uint8_t *data, size_t size,
                                  const char *path, uint32_t n_rows, qw_error *err) {
    pb_reader r = {data, data, data + size, path, "ModelProto", err};
    spm_info info;
    QW_TRY(scan_model(&r, &info));
    if (info.n_pieces == 0) {
        return qw_fail(err, QW_ERR_CORRUPT, "%s: no SentencePiece pieces (not a tokenizer.model?)",
                       path);
    }
    if (info.model_type != MODEL_TYPE_BPE) {
        const char *name = info.model_type < sizeof MODEL_TYPE_NAMES / sizeof MODEL_TYPE_NAMES[0]
                               ? MODEL_TYPE_NAMES[info.model_type]
                               : "?";
        return qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "trainer_spec.model_type", -1,
                          "%s: SentencePiece model type %llu (%s) is not supported: llama.cpp's "
                          "\"llama\" tokenizer reproduces BPE models only",
                          path, (unsigned long long)info.model_type, name);
    }
    if (info.n_pieces > n_rows) {
        return qw_fail(err, QW_ERR_CORRUPT,
                       "%s: %u pieces do not fit the model's %u embedding rows", path,
                       info.n_pieces, n_rows);
    }
    QW_TRY(qw_vocab_alloc_rows(v, n_rows, true, path, err));
    r.p = data;
    uint32_t id = 0;
    while (r.p < r.end) {
        pb_field f;
        QW_TRY(pb_next(&r, &f));
        if (f.number == 1) QW_TRY(read_piece(&r, &f, v, id++));
    }
    v->model = qw_strdup("llama");
    v->pre = qw_strdup("default");
    if (!v->model || !v->pre) return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    v->add_space_prefix = info.add_dummy_prefix ? 1 : 0;
    return QW_OK;
}
