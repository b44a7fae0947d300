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

#endif /* QW_BLOCKS_H */
