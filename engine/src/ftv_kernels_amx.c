/* The AMX kernel set (x86 CPUs with AMX-TILE and AMX-INT8, and AVX-512 VNNI): the ternary GEMM on
 * tdpbsud tiles, everything else as the AVX-512 set (ftv_kernels_x86.h on 16 lanes, the same
 * repacked weights). ftv_kernels.c hands it out only when named (FTV_KERNELS=amx) and the CPU and
 * the OS allow it: it becomes automatic once it has run bit-identical on a CPU with AMX, which no
 * session has had yet (docs/engine.md). Built with -DFTV_AMX_EMULATE, the tile instructions are
 * C (ftv_amx.h) and the set runs, slowly, on any AVX-512 CPU: that is how the tests check it.
 *
 * The GEMM: the ternary x int8 products are exact int32 sums, as on vpdpbusd, so the logits stay
 * bit-identical. tdpbsud multiplies signed bytes of its first tile by unsigned bytes of its
 * second: the first is 16 tokens x 64 activations, read in place (rows k bytes apart); the
 * second is the AVX-512 set's decoded panel as it is (16 column groups of 4 codes c = q + 1 for
 * 16 rows, a 64-byte line each): c[t][r] = sum_j a[t][j] c[r][j], and the epilogue subtracts the
 * token's activation sum as for vpdpbusd. Token tiles of 32 (TILE_BALANCED 0: 197 tokens = 6 x
 * 32 + 5) against 32-row panels: 2 x 2 accumulator tiles, 2 activation tiles, 2 code tiles, the 8
 * tiles of palette 1. Tokens short of 16, and column groups past the last whole 16, go through
 * the VNNI tile (ftv_kernels_vnni.h) into the same accumulators, which the tiles then load. Each
 * GEMM call configures the tiles and releases them at the end, so that other code on the thread
 * (another library's AMX kernels) and this set never see each other's configuration. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c,fma"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c,fma")
#endif
/* Only the functions that touch the tiles are compiled for AMX (clang inlines nothing across a
 * difference of target features, and the float kernels need none of it). */
#define AMX_FN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c,fma,amx-tile,amx-int8")))

#include <immintrin.h>
#include <string.h>

#define FTV_VL 16
#define PANEL_RGS_MAX 4   /* 32 rows */
#define ATT_KEY_VECS 4    /* as the AVX-512 set */
#define ATT_PV_QUERIES 4
#define NORM_ROWS 4

#include "ftv_amx.h"
#include "ftv_kernels.h"
#include "ftv_kernels_vnni.h"

#define AMX_TOKENS 16 /* rows of an activation tile */
#define AMX_GROUPS 16 /* column groups (4 codes) of a tile's 64 bytes */
#define TILE_TOKENS (2 * AMX_TOKENS)
#define TILE_BALANCED 0

/* Tiles: 0-3 accumulators (token block i, rows 16 v: tile 2 i + v), 4-5 activations, 6-7 codes. */
static const ftv_tilecfg amx_config = {
    .palette = 1,
    .colsb = {AMX_COLSB, AMX_COLSB, AMX_COLSB, AMX_COLSB, AMX_COLSB, AMX_COLSB, AMX_COLSB, AMX_COLSB},
    .rows = {AMX_ROWS, AMX_ROWS, AMX_ROWS, AMX_ROWS, AMX_ROWS, AMX_ROWS, AMX_ROWS, AMX_ROWS},
};
_Static_assert(AMX_TOKENS == AMX_ROWS && AMX_GROUPS * 4 == AMX_COLSB && AMX_TOKENS == 16,
               "a tile is 16 tokens x 16 column groups, its accumulators 16 tokens x 16 rows");

/* The sums of column groups [g0, g0 + 16 chunks) for nb blocks of 16 tokens and nw vectors of
 * 16 rows, into acc[16 nw t + 16 v + lane] (the VNNI tile's layout: a tile row of 16 int32 at a
 * stride of 64 nw bytes), added to what acc holds when `add`. */
static inline __attribute__((always_inline)) AMX_FN void amx_blocks(const uint8_t *panel, int nrg, const int nw,
                                                              const int8_t *a, size_t lda, int g0, int chunks,
                                                              const int nb, int add, int32_t *acc) {
    const size_t ldc = (size_t)64 * nw, step = (size_t)32 * nrg;
    int32_t *c1 = acc + 16 * nw * AMX_TOKENS; /* the second block of tokens */
    if (add) {
        AMX_LOAD(0, acc, ldc);
        if (nw == 2) AMX_LOAD(1, acc + 16, ldc);
        if (nb == 2) AMX_LOAD(2, c1, ldc);
        if (nb == 2 && nw == 2) AMX_LOAD(3, c1 + 16, ldc);
    } else {
        AMX_ZERO(0);
        if (nw == 2) AMX_ZERO(1);
        if (nb == 2) AMX_ZERO(2);
        if (nb == 2 && nw == 2) AMX_ZERO(3);
    }
    for (int ch = 0; ch < chunks; ch++) {
        const int g = g0 + AMX_GROUPS * ch;
        const uint8_t *w = panel + (size_t)g * step;
        AMX_LOAD(4, a + 4 * (size_t)g, lda);
        AMX_LOAD(6, w, step);
        AMX_DPBSUD(0, 4, 6);
        if (nw == 2) {
            AMX_LOAD(7, w + 64, step);
            AMX_DPBSUD(1, 4, 7);
        }
        if (nb == 2) {
            AMX_LOAD(5, a + AMX_TOKENS * lda + 4 * (size_t)g, lda);
            AMX_DPBSUD(2, 5, 6);
            if (nw == 2) AMX_DPBSUD(3, 5, 7);
        }
    }
    AMX_STORE(0, acc, ldc);
    if (nw == 2) AMX_STORE(1, acc + 16, ldc);
    if (nb == 2) AMX_STORE(2, c1, ldc);
    if (nb == 2 && nw == 2) AMX_STORE(3, c1 + 16, ldc);
}

/* ftv_kernels_x86.h's dot_tile: nt <= 32 tokens. Whole blocks of 16 tokens go to the tiles (their
 * column groups past the last whole chunk of 16 first through the VNNI tile); the rest, and
 * everything when there is no whole chunk, through the VNNI tile. */
static AMX_FN void dot_tile(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                             int32_t *acc) {
    const int nw = (nrg + 1) / 2, chunks = (g1 - g0) / AMX_GROUPS, g2 = g0 + AMX_GROUPS * chunks;
    const int nb = chunks ? nt / AMX_TOKENS : 0, tiled = nb * AMX_TOKENS;
    for (int t = tiled; t < nt; t += VNNI_TOKENS)
        vnni_dot_tile(panel, nrg, a + (size_t)t * lda, lda, g0, g1, nt - t < VNNI_TOKENS ? nt - t : VNNI_TOKENS,
                      acc + 16 * nw * t);
    if (!nb) return;
    for (int t = 0; g2 < g1 && t < tiled; t += VNNI_TOKENS)
        vnni_dot_tile(panel, nrg, a + (size_t)t * lda, lda, g2, g1, tiled - t < VNNI_TOKENS ? tiled - t : VNNI_TOKENS,
                      acc + 16 * nw * t);
    const int add = g2 < g1;
    if (nw == 1 && nb == 1) amx_blocks(panel, nrg, 1, a, lda, g0, chunks, 1, add, acc);
    else if (nw == 1) amx_blocks(panel, nrg, 1, a, lda, g0, chunks, 2, add, acc);
    else if (nb == 1) amx_blocks(panel, nrg, 2, a, lda, g0, chunks, 1, add, acc);
    else amx_blocks(panel, nrg, 2, a, lda, g0, chunks, 2, add, acc);
}

static AMX_FN void amx_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                             const int32_t *xsum, int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate,
                             const ftv_fvec *gamma);
static AMX_FN void amx_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                                  int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy, void *scratch);
#define X86_TGEMM amx_tgemm
#define X86_PATCH_GEMM amx_patch_gemm
#include "ftv_kernels_x86.h"

static AMX_FN void amx_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                             const int32_t *xsum, int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate,
                             const ftv_fvec *gamma) {
    AMX_LOADCONFIG(&amx_config);
    x86_tgemm(w, o0, o1, xq, xs, xsum, tokens, y, ldt, ldo, scratch, accumulate, gamma);
    AMX_RELEASE();
}

static AMX_FN void amx_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                                  int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy, void *scratch) {
    AMX_LOADCONFIG(&amx_config);
    x86_patch_gemm(w, o0, o1, xq, xs, chans, tokens, cs, bias, y, ldy, scratch);
    AMX_RELEASE();
}

#include "ftv_attend_bf16.h"

X86_SETS_16_LANES("amx", ftv_kernels_amx_set, ftv_kernels_amx_fast, ftv_kernels_amx_bf16);

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int ftv_kernels_amx_unused; /* ISO C: a translation unit declares something */
#endif
