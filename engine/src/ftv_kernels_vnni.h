/* The VNNI ternary GEMM's panels and register tiles, shared by the AVX-512 set and the AMX set
 * (whose tiles take the panels as they are, and hand the tokens they do not fill to
 * vnni_dot_tile). Included by ftv_kernels_avx512.c and ftv_kernels_amx.c, compiled for AVX-512
 * VNNI, after they define PANEL_RGS_MAX (4: 32-row panels).
 *
 * vpdpbusd adds the 4 products u8 x s8 of a column group straight into an int32 lane (no int16
 * step, so no bound beyond the int32 one of the scalar kernel). One 64-byte vector holds 16 rows x
 * 4 codes (two row groups, adjacent in the panel); panels of 32 rows, tiles of VNNI_TOKENS = 12
 * tokens: 2 x 12 accumulators, 2 weight vectors and a broadcast of the 32 zmm registers
 * (measured: 16 or 24 tokens with one weight vector are slower). */
#ifndef FTV_KERNELS_VNNI_H
#define FTV_KERNELS_VNNI_H

#include <immintrin.h>
#include <string.h>

#include "ftv_kernels.h"

#define VNNI_TOKENS 12

/* 32-row panels (two weight vectors per broadcast: measured 400 GMAC/s against 350 with 16
 * rows on (197 x 384) x (384 x 1536)), unless the panel, in every thread's scratch, would pass
 * 24 KB: 16 rows then (fc2 of DeiT-III-S, k = 1536, runs as fast). */
#ifndef PANEL_MAX
#define PANEL_MAX (24 * 1024 + 32)
#endif
static int panel_rgs(int k) { return 4 * ((k + 15) / 16) * 4 * 32 + 32 <= PANEL_MAX ? 4 : 2; }

/* Row groups rg, rg + 1, ... (nrg of them) into the panel two at a time: one 64-byte store per
 * column group; then zeros in the 32 bytes past it. */
static void decode_panel(const uint8_t *rp, int blocks, int rg, int nrg, uint8_t *panel) {
    const __m512i three = _mm512_set1_epi8(3);
    for (int i = 0; i < nrg; i += 2) {
        const uint8_t *src = rp + (size_t)(rg + i) * (size_t)blocks * 32;
        for (int b = 0; b < blocks; b++) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(src + (size_t)b * 32));
            /* an odd last row group: the upper half is the next column group's, never stored */
            const __m256i hi = i + 1 < nrg ? _mm256_loadu_si256((const __m256i *)(src + ((size_t)blocks + b) * 32)) : lo;
            const __m512i p = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            uint8_t *dst = panel + ((size_t)4 * b * nrg + i) * 32;
            const __mmask64 m = i + 1 < nrg ? ~(__mmask64)0 : 0xFFFFFFFFu;
            _mm512_mask_storeu_epi8(dst, m, _mm512_and_si512(p, three));
            _mm512_mask_storeu_epi8(dst + 32 * nrg, m, _mm512_and_si512(_mm512_srli_epi16(p, 2), three));
            _mm512_mask_storeu_epi8(dst + 64 * nrg, m, _mm512_and_si512(_mm512_srli_epi16(p, 4), three));
            _mm512_mask_storeu_epi8(dst + 96 * nrg, m, _mm512_and_si512(_mm512_srli_epi16(p, 6), three));
        }
    }
    _mm256_storeu_si256((__m256i *)(panel + (size_t)blocks * 4 * 32 * nrg), _mm256_setzero_si256());
}

#define PIN2(a, b) __asm__ volatile("" : "+v"(a), "+v"(b))
#define PIN1(a) __asm__ volatile("" : "+v"(a))

/* acc[16 nw t + 16 v + lane], nw = ceil(nrg / 2) weight vectors of 16 rows per column group
 * (with nrg odd, the last one's upper 8 rows are the next column group's first rows: computed,
 * never stored by the epilogue). Sums over all column groups [g0, g1) in int32 at once. */
static inline __attribute__((always_inline)) void dot_tile_n(const uint8_t *panel, int nrg, const int nw,
                                                              const int8_t *a, size_t lda, int g0, int g1,
                                                              const int nt, int32_t *acc) {
    __m512i h0[VNNI_TOKENS], h1[VNNI_TOKENS];
#pragma GCC unroll 12
    for (int t = 0; t < nt; t++) {
        h0[t] = _mm512_setzero_si512();
        if (nw == 2) h1[t] = _mm512_setzero_si512();
    }
    const size_t step = (size_t)32 * nrg;
    const uint8_t *wp = panel + (size_t)g0 * step;
    const int8_t *ap = a + 4 * (size_t)g0;
    for (int g = g0; g < g1; g++, wp += step, ap += 4) {
        const __m512i w0 = _mm512_loadu_si512((const void *)wp);
        const __m512i w1 = nw == 2 ? _mm512_loadu_si512((const void *)(wp + 64)) : w0;
#pragma GCC unroll 12
        for (int t = 0; t < nt; t++) {
            int32_t four;
            memcpy(&four, ap + (size_t)t * lda, 4);
            const __m512i b = _mm512_set1_epi32(four);
            h0[t] = _mm512_dpbusd_epi32(h0[t], w0, b);
            if (nw == 2) {
                h1[t] = _mm512_dpbusd_epi32(h1[t], w1, b);
                PIN2(h0[t], h1[t]);
            } else {
                PIN1(h0[t]);
            }
        }
    }
#pragma GCC unroll 12
    for (int t = 0; t < nt; t++) {
        _mm512_storeu_si512((void *)(acc + 16 * nw * t), h0[t]);
        if (nw == 2) _mm512_storeu_si512((void *)(acc + 32 * t + 16), h1[t]);
    }
}

static void vnni_dot_tile(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                          int32_t *acc, int back) {
    (void)back;
#define TILE(W, T) case (W) * 16 + (T): dot_tile_n(panel, nrg, W, a, lda, g0, g1, T, acc); break;
    switch ((nrg + 1) / 2 * 16 + nt) {
        TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(1, 5) TILE(1, 6)
        TILE(1, 7) TILE(1, 8) TILE(1, 9) TILE(1, 10) TILE(1, 11) TILE(1, 12)
        TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4) TILE(2, 5) TILE(2, 6)
        TILE(2, 7) TILE(2, 8) TILE(2, 9) TILE(2, 10) TILE(2, 11) TILE(2, 12)
    default: break;
    }
#undef TILE
}

#endif
