/*
 * SentencePiece tokenizer.model -> GGUF vocabulary (the file is read by spm_proto.c). llama.cpp's
 * "llama" tokenizer reproduces BPE models only, so that is all this accepts.
 */
#include <string.h>

#include "spm_proto.h"
#include "vocab_private.h"

qw_status qw_vocab_read_spm_model(qw_vocab *v, const uint8_t *data, size_t size,
                                  const char *path, uint32_t n_rows, qw_error *err) {
    spm_proto sp;
    QW_TRY(spm_proto_parse(data, size, path, &sp, err));
    qw_status st = QW_OK;
    if (sp.model_type != SPM_MODEL_BPE) {
        st = qw_fail_at(err, QW_ERR_UNSUPPORTED_INPUT, "trainer_spec.model_type", -1,
                        "%s: SentencePiece model type %llu (%s) is not supported: llama.cpp's "
                        "\"llama\" tokenizer reproduces BPE models only",
                        path, (unsigned long long)sp.model_type,
                        spm_model_type_name(sp.model_type));
    } else if (sp.n_pieces > n_rows) {
        st = qw_fail(err, QW_ERR_CORRUPT, "%s: %zu pieces do not fit the model's %u embedding rows",
                     path, sp.n_pieces, n_rows);
    }
    if (st == QW_OK) st = qw_vocab_alloc_rows(v, n_rows, true, path, err);
    for (size_t id = 0; st == QW_OK && id < sp.n_pieces; id++) {
        const spm_piece *pc = &sp.pieces[id];
        st = qw_vocab_set_text(v, (uint32_t)id, pc->text, pc->len, path, err);
        if (st != QW_OK) break;
        v->scores[id] = pc->score;
        v->types[id] = pc->type; /* SentencePiece's piece types are GGUF's token types */
    }
    if (st == QW_OK) {
        v->model = qw_strdup("llama");
        v->pre = qw_strdup("default");
        if (!v->model || !v->pre) st = qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
        v->add_space_prefix = sp.add_dummy_prefix ? 1 : 0;
    }
    spm_proto_free(&sp);
    return st;
}
