/*
 * blocks.h — the byte layouts of ggml's quantized blocks. Every struct is checked against the
 * table's block_bytes by a static assertion here and by the table test.
 *
 * Half-precision fields (d, dmin, m) are IEEE fp16 bit patterns, little-endian.
 */
#ifndef QW_BLOCKS_H
#define QW_BLOCKS_H

#include <stdint.h>

#define QW_QK4_0 32
#define QW_QK8_0 32
#define QW_QK_K 256

/* x = d * (q - 8); byte j holds element j (low nibble) and element j + 16 (high nibble). */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK4_0 / 2];
} qw_block_q4_0;
_Static_assert(sizeof(qw_block_q4_0) == 18, "q4_0 block size");

/* x = d * q + m */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[16];
} qw_block_q4_1;
_Static_assert(sizeof(qw_block_q4_1) == 20, "q4_1 block size");

/* x = d * (q - 16); bit j of qh is the fifth bit of element j. */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} qw_block_q5_0;
_Static_assert(sizeof(qw_block_q5_0) == 22, "q5_0 block size");

typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[16];
} qw_block_q5_1;
_Static_assert(sizeof(qw_block_q5_1) == 24, "q5_1 block size");

/* x = d * q */
typedef struct {
    uint16_t d;
    int8_t qs[QW_QK8_0];
} qw_block_q8_0;
_Static_assert(sizeof(qw_block_q8_0) == 34, "q8_0 block size");

/* x = d * q; s = d * sum(q) is a cache for dot products. */
typedef struct {
    uint16_t d;
    uint16_t s;
    int8_t qs[32];
} qw_block_q8_1;
_Static_assert(sizeof(qw_block_q8_1) == 36, "q8_1 block size");

/* ---- k-quants: 256-element super-blocks ----------------------------------------------------- */

/* Sixteen sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3. qs byte
 * 32c + l holds elements 128c + l + 32k at bits 2k (k = 0..3). d and dmin come last. */
typedef struct {
    uint8_t scales[QW_QK_K / 16];
    uint8_t qs[QW_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
} qw_block_q2_K;
_Static_assert(sizeof(qw_block_q2_K) == 84, "q2_K block size");

/* Sixteen sub-blocks of 16: x = d * (sc - 32) * (q - (hbit ? 0 : 4)), q's low two bits packed
 * as in q2_K, its high bit at bit (j / 32) of hmask[j % 32]. The 6-bit scales: low nibbles in
 * scales[0..7] (sub-blocks 0..7 low, 8..15 high nibble), high 2-bit pairs in scales[8..11]. */
typedef struct {
    uint8_t hmask[QW_QK_K / 8];
    uint8_t qs[QW_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} qw_block_q3_K;
_Static_assert(sizeof(qw_block_q3_K) == 110, "q3_K block size");

/* Eight sub-blocks of 32: x = d * sc * q - dmin * m with 6-bit sc and m packed in scales[12]
 * (see gguf.md §2). qs byte 32c + l holds element 64c + l (low) and 64c + 32 + l (high). */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QW_QK_K / 2];
} qw_block_q4_K;
_Static_assert(sizeof(qw_block_q4_K) == 144, "q4_K block size");

/* As q4_K with a fifth bit: bit 2c of qh[l] for element 64c + l, bit 2c + 1 for 64c + 32 + l. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QW_QK_K / 8];
    uint8_t qs[QW_QK_K / 2];
} qw_block_q5_K;
_Static_assert(sizeof(qw_block_q5_K) == 176, "q5_K block size");

/* Sixteen sub-blocks of 16: x = d * scales[j] * (q - 32), q 6 bits. Per 128-element half h:
 * ql[64h + l] holds elements l (low) and l + 64 (high nibble), ql[64h + 32 + l] elements
 * l + 32 and l + 96; qh[32h + l] holds the top two bits of elements l, l+32, l+64, l+96 at
 * bits 0, 2, 4, 6 (element offsets relative to the half). d comes last. */
typedef struct {
    uint8_t ql[QW_QK_K / 2];
    uint8_t qh[QW_QK_K / 4];
    int8_t scales[QW_QK_K / 16];
    uint16_t d;
} qw_block_q6_K;
_Static_assert(sizeof(qw_block_q6_K) == 210, "q6_K block size");

/* x = d * q with an fp32 d; bsums (sums of 16 quants) serve dot products only. */
typedef struct {
    float d;
    int8_t qs[QW_QK_K];
    int16_t bsums[QW_QK_K / 16];
} qw_block_q8_K;
_Static_assert(sizeof(qw_block_q8_K) == 292, "q8_K block size");

/* ---- non-linear, ternary and small-float blocks --------------------------------------------- */

#define QW_QK4_NL 32
#define QW_QK_MXFP4 32
#define QW_QK_NVFP4 64
#define QW_QK_NVFP4_SUB 16
#define QW_QK1_0 128
#define QW_QK2_0 64

/* x = d * kvalues_iq4nl[q]; nibbles packed as in q4_0. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK4_NL / 2];
} qw_block_iq4_nl;
_Static_assert(sizeof(qw_block_iq4_nl) == 18, "iq4_nl block size");

/* Eight sub-blocks of 32: x = d * (ls - 32) * kvalues_iq4nl[q], ls 6 bits: the low nibble in
 * scales_l[j / 2] (nibble j % 2), the high two bits at bit 2j of scales_h. Each sub-block's 16
 * bytes of qs are packed as an iq4_nl block. */
typedef struct {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QW_QK_K / 64];
    uint8_t qs[QW_QK_K / 2];
} qw_block_iq4_xs;
_Static_assert(sizeof(qw_block_iq4_xs) == 136, "iq4_xs block size");

/* Ternary x = d * (t - 1), t in 0..2. qs holds five trits per byte as a base-3 fraction of 256
 * (the first trit most significant), qh four per byte (followed by a zero trit). */
typedef struct {
    uint8_t qs[(QW_QK_K - 4 * QW_QK_K / 64) / 5];
    uint8_t qh[QW_QK_K / 64];
    uint16_t d;
} qw_block_tq1_0;
_Static_assert(sizeof(qw_block_tq1_0) == 54, "tq1_0 block size");

/* Ternary x = d * (q - 1), q 2 bits: qs byte 32c + m holds elements 128c + 32k + m at bits 2k. */
typedef struct {
    uint8_t qs[QW_QK_K / 4];
    uint16_t d;
} qw_block_tq2_0;
_Static_assert(sizeof(qw_block_tq2_0) == 66, "tq2_0 block size");

/* x = e2m1(q) * 2^(e - 127): an E8M0 exponent and E2M1 nibbles (sign, 2-bit exponent, 1-bit
 * mantissa) packed as in q4_0. */
typedef struct {
    uint8_t e;
    uint8_t qs[QW_QK_MXFP4 / 2];
} qw_block_mxfp4;
_Static_assert(sizeof(qw_block_mxfp4) == 17, "mxfp4 block size");

/* Four sub-blocks of 16, each with an unsigned E4M3 scale d[s] and 8 bytes of E2M1 nibbles
 * (byte j: element j low, element j + 8 high). */
typedef struct {
    uint8_t d[QW_QK_NVFP4 / QW_QK_NVFP4_SUB];
    uint8_t qs[QW_QK_NVFP4 / 2];
} qw_block_nvfp4;
_Static_assert(sizeof(qw_block_nvfp4) == 36, "nvfp4 block size");

/* Binary x = bit ? d : -d; bit j of the row is bit j % 8 of qs[j / 8]. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK1_0 / 8];
} qw_block_q1_0;
_Static_assert(sizeof(qw_block_q1_0) == 18, "q1_0 block size");

/* x = d * (q - 1), q 2 bits: element j at bits 2 * (j % 4) of qs[j / 4]. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK2_0 / 4];
} qw_block_q2_0;
_Static_assert(sizeof(qw_block_q2_0) == 18, "q2_0 block size");

/* ---- i-quants: 256-element super-blocks of lattice (grid) codes ---------------------------- */
/* Grids and sign tables are in iq_grids.c. Sub-blocks are 32 elements, made of groups of 8
 * (iq1/iq2) or 4 (iq3) elements, each group one grid index. A 4-bit sub-block scale s gives
 * d * (0.5 + s) / 4 (iq2), d * (0.5 + s) / 2 (iq3_xxs), d * (1 + 2s) (iq3_s). */

/* Per sub-block, 8 bytes (qs[4ib .. 4ib + 3], read as two little-endian u32 a, b): the four grid
 * indices are the bytes of a; b holds four 7-bit sign indices (bits 7l) and the scale (bits
 * 28..31). */
typedef struct {
    uint16_t d;
    uint16_t qs[QW_QK_K / 8];
} qw_block_iq2_xxs;
_Static_assert(sizeof(qw_block_iq2_xxs) == 66, "iq2_xxs block size");

/* qs[4ib + l]: a 9-bit grid index and a 7-bit sign index (bits 9..15) per group of 8; scales[ib]
 * holds the scales of its two halves (low nibble: groups 0-1, high: groups 2-3). */
typedef struct {
    uint16_t d;
    uint16_t qs[QW_QK_K / 8];
    uint8_t scales[QW_QK_K / 32];
} qw_block_iq2_xs;
_Static_assert(sizeof(qw_block_iq2_xs) == 74, "iq2_xs block size");

/* qs[0..31]: the low 8 bits of the grid indices (group 4ib + l); qs[32..63]: one sign byte per
 * group (bit j: element j negative); qh[ib] bits 2l..2l+1: index bits 8-9 of group l; scales as
 * iq2_xs. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK_K / 4];
    uint8_t qh[QW_QK_K / 32];
    uint8_t scales[QW_QK_K / 32];
} qw_block_iq2_s;
_Static_assert(sizeof(qw_block_iq2_s) == 82, "iq2_s block size");

/* qs[0..63]: grid index of group 8ib + k (4 elements); qs[64 + 4ib ..]: a little-endian u32 per
 * sub-block with four 7-bit sign indices (bits 7l, for its groups of 8) and the scale (bits
 * 28..31). */
typedef struct {
    uint16_t d;
    uint8_t qs[3 * QW_QK_K / 8];
} qw_block_iq3_xxs;
_Static_assert(sizeof(qw_block_iq3_xxs) == 98, "iq3_xxs block size");

/* Group g = 8ib + k: grid index qs[g] | (bit k of qh[ib]) << 8; signs[g / 2] bit 4 (g % 2) + i
 * for element i of the group (one bit per element); scales[ib / 2] nibble ib % 2. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK_K / 4];
    uint8_t qh[QW_QK_K / 32];
    uint8_t signs[QW_QK_K / 8];
    uint8_t scales[QW_QK_K / 64];
} qw_block_iq3_s;
_Static_assert(sizeof(qw_block_iq3_s) == 110, "iq3_s block size");

/* Group 4ib + l: grid index qs[4ib + l] | ((qh[ib] >> 3l) & 7) << 8; qh[ib] bits 12..14 are the
 * 3-bit scale s (d * (2s + 1)), bit 15 the sign of the +-1/8 shift. */
typedef struct {
    uint16_t d;
    uint8_t qs[QW_QK_K / 8];
    uint16_t qh[QW_QK_K / 32];
} qw_block_iq1_s;
_Static_assert(sizeof(qw_block_iq1_s) == 50, "iq1_s block size");

/* No d field: the fp16 super-block scale is the top nibbles of the four little-endian u16 of
 * scales (u16 k gives bits 4k..4k+3). Below those, u16 ib / 2 holds 3-bit scales at bits
 * 6 (ib % 2) (groups 0-1) and 6 (ib % 2) + 3 (groups 2-3). Group 4ib + l: index qs[4ib + l] | 3
 * bits of qh[2ib + l / 2] (bits 0-2 for even l, 4-6 for odd) << 8; bit 3 / bit 7 of that byte is
 * the sign of the shift. */
typedef struct {
    uint8_t qs[QW_QK_K / 8];
    uint8_t qh[QW_QK_K / 16];
    uint8_t scales[QW_QK_K / 32];
} qw_block_iq1_m;
_Static_assert(sizeof(qw_block_iq1_m) == 56, "iq1_m block size");

#endif /* QW_BLOCKS_H */
