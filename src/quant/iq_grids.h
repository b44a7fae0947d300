/*
 * iq_grids.h — ggml's i-quant format constants (values and provenance in iq_grids.c).
 *
 * Grid entries pack one group of elements, element j in byte j: read it as
 * (uint8_t)(grid[i] >> 8 * j) (iq2, iq3) or (int8_t)(grid[i] >> 8 * j) (iq1). Read-only data,
 * safe from any thread.
 */
#ifndef QW_IQ_GRIDS_H
#define QW_IQ_GRIDS_H

#include <stdint.h>

#define QW_IQ2XXS_GRID_SIZE 256
#define QW_IQ2XS_GRID_SIZE 512
#define QW_IQ2S_GRID_SIZE 1024
#define QW_IQ3XXS_GRID_SIZE 256
#define QW_IQ3S_GRID_SIZE 512
#define QW_IQ1S_GRID_SIZE 2048

/* Shift added to every iq1_s / iq1_m grid value before scaling (ggml's IQ1S_DELTA/IQ1M_DELTA). */
#define QW_IQ1_DELTA 0.125f

extern const int8_t qw_iq4nl_values[16];
extern const uint8_t qw_iq2_signs[128];
extern const uint64_t qw_iq2xxs_grid[QW_IQ2XXS_GRID_SIZE];
extern const uint64_t qw_iq2xs_grid[QW_IQ2XS_GRID_SIZE];
extern const uint64_t qw_iq2s_grid[QW_IQ2S_GRID_SIZE];
extern const uint32_t qw_iq3xxs_grid[QW_IQ3XXS_GRID_SIZE];
extern const uint32_t qw_iq3s_grid[QW_IQ3S_GRID_SIZE];
extern const uint64_t qw_iq1s_grid[QW_IQ1S_GRID_SIZE];

#endif /* QW_IQ_GRIDS_H */
