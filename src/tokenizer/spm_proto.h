/*
 * spm_proto.h — the one reader of SentencePiece's tokenizer.model (a proto2 ModelProto). The
 * tokenizer (tok_spm.c) and the GGUF vocabulary export (spm_model.c) both start from what it
 * returns, so a malformed file is judged the same way by both. Private to src/tokenizer/.
 *
 * Fields read (everything else is skipped):
 *   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
 *                    NormalizerSpec normalizer_spec = 3; }
 *   SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
 *                  Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
 *                  (also the numbers GGUF uses for token types)
 *   TrainerSpec    { model_type = 3 [UNIGRAM 1; BPE 2; WORD 3; CHAR 4];
 *                    treat_whitespace_as_suffix = 24; byte_fallback = 35;
 *                    unk_id = 40 [0]; bos_id = 41 [1]; }
 *   NormalizerSpec { name = 1; precompiled_charsmap = 2; add_dummy_prefix = 3 [true];
 *                    remove_extra_whitespaces = 4 [true]; escape_whitespaces = 5 [true]; }
 */
#ifndef QW_SPM_PROTO_H
#define QW_SPM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

enum { SPM_MODEL_UNIGRAM = 1, SPM_MODEL_BPE = 2, SPM_MODEL_WORD = 3, SPM_MODEL_CHAR = 4 };
enum { SPM_PIECE_NORMAL = 1, SPM_PIECE_UNKNOWN = 2, SPM_PIECE_CONTROL = 3,
       SPM_PIECE_USER_DEFINED = 4, SPM_PIECE_UNUSED = 5, SPM_PIECE_BYTE = 6 };

/* A piece's text points into the file's bytes, which must outlive the spm_proto. */
typedef struct spm_piece {
    const char *text;
    uint32_t len;
    float score;
    uint8_t type;
} spm_piece;

typedef struct spm_proto {
    spm_piece *pieces;
    size_t n_pieces;
    uint64_t model_type;
    bool byte_fallback;
    bool whitespace_as_suffix;
    int64_t unk_id, bos_id;
    bool add_dummy_prefix;
    bool remove_extra_whitespaces;
    bool escape_whitespaces;
    bool has_charsmap; /* a non-empty precompiled_charsmap: normalization rules */
    char normalizer_name[32];
} spm_proto;

/* Parses and checks the file: every piece has non-empty, valid UTF-8 text, a finite score and a
 * type 1..6. Errors name `path`, the message and the byte offset. */
qw_status spm_proto_parse(const uint8_t *data, size_t size, const char *path, spm_proto *out,
                          qw_error *err);

/* Name of a TrainerSpec model type, "?" when unknown. */
const char *spm_model_type_name(uint64_t model_type);

void spm_proto_free(spm_proto *p);

#endif
