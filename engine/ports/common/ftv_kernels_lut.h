/* A ternary GEMM for cores without SIMD (Cortex-M, Xtensa): table lookup instead of
 * multiply-accumulate. See ftv_kernels_lut.c. */
#ifndef FTV_KERNELS_LUT_H
#define FTV_KERNELS_LUT_H

#include "ftv_kernels.h"

/* Scratch bytes of ftv_tgemm_lut for rows of k codes: a 256-entry table of 32-bit words per
 * packed byte of a row (tq2 has the most bytes: ceil(k / 4)). */
size_t ftv_lut_scratch(int k, int tokens);

/* Same contract and bit-identical results as ftv_tgemm_strided (ftv_kernels.h). */
void ftv_tgemm_lut(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
                   float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma);

/* The engine's scalar kernels with ftv_tgemm_lut as the GEMM; name "lut". */
const ftv_kernels *ftv_kernels_lut(void);

#endif
