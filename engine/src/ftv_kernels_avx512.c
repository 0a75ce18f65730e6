/* The AVX-512 kernel set (x86 CPUs with AVX-512 F, BW, DQ, VL and VNNI): the ternary GEMM on
 * the VNNI instruction vpdpbusd, and the kernels it shares with the AVX2 set
 * (ftv_kernels_x86.h) on 16 lanes. Same repacked weights as the AVX2 set (ftv_x86_repack). The
 * whole file is compiled for AVX-512; ftv_kernels.c asks the CPU before it hands this set out.
 * The GEMM's panels and register tiles are in ftv_kernels_vnni.h (the AMX set uses them too). */
#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c,fma"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c,fma")
#endif

#include <immintrin.h>
#include <string.h>

#define FTV_VL 16
#define PANEL_RGS_MAX 4   /* 32 rows */
#define ATT_KEY_VECS 4    /* attention scores: 4 queries x 64 keys a step */
#define ATT_PV_QUERIES 4  /* weighted values: 4 queries x 64 dimensions a step */

#define NORM_ROWS 4 /* norm_quant: rows in lockstep (4 rows x 4 partial sums of the 32 registers) */

#include "ftv_kernels.h"
#include "ftv_kernels_vnni.h"

#define TILE_TOKENS VNNI_TOKENS
#define dot_tile vnni_dot_tile
#include "ftv_kernels_x86.h"

#include "ftv_attend_bf16.h"

X86_SETS_16_LANES("avx512", ftv_kernels_avx512_set, ftv_kernels_avx512_fast, ftv_kernels_avx512_bf16);

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int ftv_kernels_avx512_unused; /* ISO C: a translation unit declares something */
#endif
