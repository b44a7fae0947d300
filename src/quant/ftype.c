/* The format table: one row per llama-quantize format qwodel can write. The per-tensor rules that
 * give each tensor its type within a format are in ftype_rules.c. */
#include <string.h>

#include "ftype.h"

#define NONE QW_QTYPE_COUNT

/* Ids are llama.cpp's llama_ftype values (llama.h), descriptions one line each. The first eleven
 * are the API spec's formats, in its order; the rest are llama-quantize's other formats. */
static const qw_ftype_info ftype_table[] = {
    {"Q4_K_M", 15, QW_QTYPE_Q4_K, "Best balance of speed and quality. Recommended for most users.",
     "Q4_K", false, NONE},
    {"Q8_0", 7, QW_QTYPE_Q8_0, "Near-lossless quality. Requires more RAM.", NULL, false, NONE},
    {"Q2_K", 10, QW_QTYPE_Q2_K, "Maximum compression. Reduced quality.", NULL, false, NONE},
    {"Q3_K_M", 12, QW_QTYPE_Q3_K, "3-bit medium quality.", "Q3_K", false, NONE},
    {"Q4_0", 2, QW_QTYPE_Q4_0, "Compact 4-bit, slightly smaller than Q4_K_M.", NULL, false, NONE},
    {"Q4_K_S", 14, QW_QTYPE_Q4_K, "Small 4-bit K-quant.", NULL, false, NONE},
    {"Q5_K_M", 17, QW_QTYPE_Q5_K, "Better quality than Q4_K_M, slightly larger.", "Q5_K", false,
     NONE},
    {"Q5_K_S", 16, QW_QTYPE_Q5_K, "Small 5-bit K-quant.", NULL, false, NONE},
    {"Q6_K", 18, QW_QTYPE_Q6_K, "High quality between Q8_0 and Q4_K_M.", NULL, false, NONE},
    {"IQ4_NL", 25, QW_QTYPE_IQ4_NL, "4.5 bpw importance-based quantization.", NULL, false, NONE},
    {"IQ3_M", 27, QW_QTYPE_IQ3_S, "3.66 bpw compact importance quantization.", NULL, false, NONE},
    {"Q4_1", 3, QW_QTYPE_Q4_1, "Legacy 4-bit with a per-block offset, a little larger than Q4_0.",
     NULL, false, NONE},
    {"Q5_0", 8, QW_QTYPE_Q5_0, "Legacy 5-bit, symmetric.", NULL, false, NONE},
    {"Q5_1", 9, QW_QTYPE_Q5_1, "Legacy 5-bit with a per-block offset.", NULL, false, NONE},
    {"Q3_K_S", 11, QW_QTYPE_Q3_K, "3-bit small: 3-bit K-quants throughout.", NULL, false, NONE},
    {"Q3_K_L", 13, QW_QTYPE_Q3_K, "3-bit large: 5-bit attention values and feed-forward outputs.",
     NULL, false, NONE},
    {"IQ4_XS", 30, QW_QTYPE_IQ4_XS, "4.25 bpw non-linear quantization.", NULL, false, NONE},
    {"IQ3_S", 26, QW_QTYPE_IQ3_S, "3.44 bpw importance quantization.", NULL, false, NONE},
    {"IQ3_XS", 22, QW_QTYPE_IQ3_S,
     "3.3 bpw importance quantization mix (needs --imatrix for rows of 256).", NULL, false, NONE},
    {"Q2_K_S", 21, QW_QTYPE_Q2_K, "2-bit K-quant, smaller mix than Q2_K (needs --imatrix).", NULL,
     true, QW_QTYPE_Q2_K},
    {"IQ3_XXS", 23, QW_QTYPE_IQ3_XXS, "3.06 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"IQ2_M", 29, QW_QTYPE_IQ2_S, "2.7 bpw importance quantization (needs --imatrix).", NULL, true,
     NONE},
    {"IQ2_S", 28, QW_QTYPE_IQ2_XS, "2.5 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"IQ2_XS", 20, QW_QTYPE_IQ2_XS, "2.31 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"IQ2_XXS", 19, QW_QTYPE_IQ2_XXS, "2.06 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"IQ1_M", 31, QW_QTYPE_IQ1_M, "1.75 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"IQ1_S", 24, QW_QTYPE_IQ1_S, "1.56 bpw importance quantization (needs --imatrix).", NULL,
     true, NONE},
    {"F16", 1, QW_QTYPE_F16, "16-bit float, unquantized: the reference for quality.", NULL, false,
     NONE},
    {"BF16", 32, QW_QTYPE_BF16, "bfloat16, unquantized: keeps the range of bf16 checkpoints.",
     NULL, false, NONE},
    {"F32", 0, QW_QTYPE_F32, "32-bit float, unquantized: largest, exact.", NULL, false, NONE},
};

#define N_FTYPES (sizeof ftype_table / sizeof ftype_table[0])

size_t qw_ftype_table_count(void) { return N_FTYPES; }

const qw_ftype_info *qw_ftype_table_at(size_t index) {
    return index < N_FTYPES ? &ftype_table[index] : NULL;
}

bool qw_ftype_offered(const qw_ftype_info *ft) {
    if (!ft) return false;
    if (!ft->needs_every_encoder) return true;
    bool types[QW_QTYPE_COUNT];
    qw_ftype_types(ft, types);
    for (int t = 0; t < QW_QTYPE_COUNT; t++) {
        if (types[t] && !qw_qtype_get((qw_qtype)t)->quantize) return false;
    }
    return true;
}

size_t qw_ftype_count(void) {
    size_t n = 0;
    for (size_t i = 0; i < N_FTYPES; i++) n += qw_ftype_offered(&ftype_table[i]);
    return n;
}

const qw_ftype_info *qw_ftype_at(size_t index) {
    for (size_t i = 0; i < N_FTYPES; i++) {
        if (!qw_ftype_offered(&ftype_table[i])) continue;
        if (index-- == 0) return &ftype_table[i];
    }
    return NULL;
}

/* True when `name` equals one of the space-separated words of `list`, ignoring case. */
static bool in_word_list(const char *list, const char *name) {
    size_t len = strlen(name);
    for (const char *p = list; p && *p;) {
        size_t w = strcspn(p, " ");
        if (w == len) {
            char word[32];
            if (w < sizeof word) {
                memcpy(word, p, w);
                word[w] = '\0';
                if (qw_strcasecmp(word, name) == 0) return true;
            }
        }
        p += w;
        while (*p == ' ') p++;
    }
    return false;
}

const qw_ftype_info *qw_ftype_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < N_FTYPES; i++) {
        const qw_ftype_info *ft = &ftype_table[i];
        if (qw_strcasecmp(ft->name, name) == 0 || in_word_list(ft->aliases, name)) {
            return qw_ftype_offered(ft) ? ft : NULL;
        }
    }
    return NULL;
}
