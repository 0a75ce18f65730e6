/* Makes the engine use the table-lookup GEMM (ftv_kernels_lut) without touching its sources:
 * linked with -Wl,--wrap=ftv_kernels_select (the Makefile's KERNELS=lut), the loader's call
 * to ftv_kernels_select() lands here. */
#include "ftv_kernels_lut.h"

const ftv_kernels *__wrap_ftv_kernels_select(void);

const ftv_kernels *__wrap_ftv_kernels_select(void) { return ftv_kernels_lut(); }
