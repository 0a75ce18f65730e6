/* The AVX2 kernel set (x86 CPUs with AVX2, F16C and FMA): the ternary GEMM on vpmaddubsw, and
 * the kernels it shares with the AVX-512 set (ftv_kernels_x86.h) on 8 lanes. Also the repacking
 * both sets use (ftv_x86_repack). The whole file is compiled for AVX2; ftv_kernels.c asks the
 * CPU before it hands this set to a model, so the library still runs on older x86.
 *
 * The GEMM (a ViT layer: ~200 tokens x hundreds to thousands of rows, so every decoded weight
 * serves many tokens):
 *   - at load, each ternary matrix is repacked (ftv_x86_repack) into 2-bit blocks of 8 rows x 16
 *     codes that decode with one shift and one mask per 32 codes. Same size as tq2 (rows padded
 *     to 8, k to 16); tq1 files get the same copy, so both formats run the same code at the same
 *     speed. The file's codes stay untouched (the scalar path reads them).
 *   - a thread decodes 16 rows at a time into a "panel" (16 x k bytes of codes c = q + 1 in
 *     {0, 1, 2}, in its scratch), then sweeps all tokens over it, 6 at a time: the 16 x 6 tile
 *     lives in 12 registers; per 4-code column group, two 8-row weight vectors meet a broadcast
 *     of each token's 4 activations in vpmaddubsw (rows sit in the lanes, as in ik_llama.cpp's
 *     IQ2_BN_R4, so the activations of a token never need reordering).
 *   - codes are unsigned, activations signed, so sum_j c_j a_j - sum_j a_j = sum_j q_j a_j: one
 *     int32 correction per token (its activation sum, from the quantizer) instead of a sign
 *     instruction per multiply.
 * Integer bound: vpmaddubsw adds two products c*a with int16 saturation; a pair is in
 * [2 * 2 * -128, 2 * 2 * 127] = [-512, 508], far from saturating. vpaddw (wrapping) adds one pair
 * per column group to each int16 lane, I16_GROUPS = 64 groups at most: [-32768, 32512], inside
 * int16 (the worst case, every code 2 against every activation -128, reaches -32768 exactly and
 * is tested), then vpmaddwd folds lane pairs into int32. */
#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,f16c,fma")
#endif

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define FTV_VL 8
#define TILE_TOKENS 6   /* tokens per register tile: 2 x 6 accumulators + 2 weights + 2 temporaries */
#define PANEL_RGS_MAX 2 /* row groups decoded at a time: 16 rows */
#define ATT_KEY_VECS 2  /* attention scores: 4 queries x 16 keys a step */
#define ATT_PV_QUERIES 2 /* weighted values: 2 queries x 32 dimensions a step (16 registers in all) */
#define I16_GROUPS 64   /* column groups an int16 lane may sum (see the bound above) */
_Static_assert(I16_GROUPS * 2 * 2 * 128 <= 32768 && I16_GROUPS * 2 * 2 * 127 <= 32767,
               "int16 accumulators could overflow");

#define NORM_ROWS 2 /* norm_quant: rows in lockstep (16 registers: 2 rows x 8 partial sums) */

#include "ftv_kernels.h"

static int panel_rgs(int k) {
    (void)k;
    return PANEL_RGS_MAX;
}

/* ---- repacking (at load; the AVX-512 set uses the same layout) ------------------------- */

/* Byte 4r + c of block b of a row group holds, in bits 2s..2s+1, code c of column group 4b + s
 * of row r (a column group = 4 consecutive codes). Codes are q + 1; padding rows and columns
 * hold 1 (q = 0). */
size_t ftv_x86_repack(const ftv_tmat *w, int values, void *dst) {
    if (values) { /* a LayerNorm gamma or beta: its float values q / scale */
        if (dst)
            for (int j = 0; j < w->k; j++) ((float *)dst)[j] = ftv_tvec_get(w, j);
        return (size_t)w->k * sizeof(float);
    }
    if (w->k % 4) return 0; /* activation rows are read 4 bytes at a time: scalar kernel */
    const int rgs = (w->rows + FTV_RG - 1) / FTV_RG, blocks = (w->k + 15) / 16;
    const size_t bytes = (size_t)rgs * (size_t)blocks * 32;
    if (!dst) return bytes;
    int8_t *row = (int8_t *)calloc((size_t)blocks * 16, 1); /* zeros past k: padding q = 0 */
    if (!row) return 0;
    uint8_t *out = (uint8_t *)dst;
    memset(out, 0x55, bytes); /* code 1 in every 2-bit field: the padding rows */
    for (int r = 0; r < w->rows; r++) {
        uint8_t *rgp = out + (size_t)(r / FTV_RG) * (size_t)blocks * 32 + 4 * (r % FTV_RG);
        if (w->kind == FTV_KIND_TQ2) { /* 4 tq2 bytes (16 codes) -> 4 repacked bytes at once */
            const uint8_t *p = w->data + (size_t)r * (size_t)w->row_bytes;
            for (int b = 0; b < blocks; b++) {
                uint32_t v = 0x55555555u; /* little-endian (the loader checks): byte s = column group 4b + s */
                memcpy(&v, p + 4 * b, 4 * b + 4 <= w->row_bytes ? 4 : (size_t)(w->row_bytes - 4 * b));
                /* transpose the 4 x 4 two-bit fields: field c of byte s (bit 8s + 2c) moves to
                 * field s of byte c (bit 8c + 2s), a shift by 6 (c - s) */
                v = (v & 0xC0300C03u) | (v & 0x00C0300Cu) << 6 | (v >> 6 & 0x00C0300Cu) | (v & 0x0000C030u) << 12 |
                    (v >> 12 & 0x0000C030u) | (v & 0xC0u) << 18 | (v >> 18 & 0xC0u);
                for (int c = 0; c < 4; c++) rgp[32 * b + c] = (uint8_t)(v >> 8 * c);
            }
            continue;
        }
        ftv_tmat_decode_row(w, r, row);
        for (int b = 0; b < blocks; b++)
            for (int c = 0; c < 4; c++) {
                const int8_t *q = row + 16 * b + c; /* code c of column groups 4b .. 4b + 3 */
                rgp[32 * b + c] = (uint8_t)((q[0] + 1) | (q[4] + 1) << 2 | (q[8] + 1) << 4 | (q[12] + 1) << 6);
            }
    }
    free(row);
    return bytes;
}

/* ---- the GEMM's own parts: panel decoding and the dot-product tile ----------------------- */

/* Row group rg + i into a panel of nrg row groups. */
static inline __attribute__((always_inline)) void decode_group(const uint8_t *rp, int blocks, int rg, int i, int nrg,
                                                                uint8_t *panel) {
    const __m256i three = _mm256_set1_epi8(3);
    const uint8_t *src = rp + (size_t)(rg + i) * (size_t)blocks * 32;
    for (int b = 0; b < blocks; b++) {
        const __m256i p = _mm256_loadu_si256((const __m256i *)(src + (size_t)b * 32));
        uint8_t *dst = panel + ((size_t)4 * b * nrg + i) * 32;
        /* 16-bit shifts: bits crossing from the high byte land above the 2-bit mask */
        _mm256_storeu_si256((__m256i *)dst, _mm256_and_si256(p, three));
        _mm256_storeu_si256((__m256i *)(dst + 32 * nrg), _mm256_and_si256(_mm256_srli_epi16(p, 2), three));
        _mm256_storeu_si256((__m256i *)(dst + 64 * nrg), _mm256_and_si256(_mm256_srli_epi16(p, 4), three));
        _mm256_storeu_si256((__m256i *)(dst + 96 * nrg), _mm256_and_si256(_mm256_srli_epi16(p, 6), three));
    }
}

static void decode_panel(const uint8_t *rp, int blocks, int rg, int nrg, uint8_t *panel) {
    for (int i = 0; i < nrg; i++) decode_group(rp, blocks, rg, i, nrg, panel);
    _mm256_storeu_si256((__m256i *)(panel + (size_t)blocks * 4 * 32 * nrg), _mm256_setzero_si256());
}

#define PIN2(a, b) __asm__ volatile("" : "+v"(a), "+v"(b))
#define PIN1(a) __asm__ volatile("" : "+v"(a))

/* acc[8 nrg t + 8 i + r] = sum over column groups [g0, g1) of codes(row r of row group i) . a_t,
 * for nt tokens a_t = a + t * lda; nrg and nt are constants after inlining. */
static inline __attribute__((always_inline)) void dot_tile_n(const uint8_t *panel, const int nrg, const int8_t *a,
                                                              size_t lda, int g0, int g1, const int nt, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++)
#pragma GCC unroll 2
        for (int i = 0; i < nrg; i++) _mm256_storeu_si256((__m256i *)(acc + 8 * nrg * t + 8 * i), _mm256_setzero_si256());
    for (int c = g0; c < g1; c += I16_GROUPS) {
        const int ce = c + I16_GROUPS < g1 ? c + I16_GROUPS : g1;
        __m256i h0[TILE_TOKENS], h1[TILE_TOKENS];
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) h0[t] = h1[t] = _mm256_setzero_si256();
        const uint8_t *wp = panel + (size_t)c * 32 * nrg;
        const int8_t *ap = a + 4 * (size_t)c;
        for (int g = c; g < ce; g++, wp += 32 * nrg, ap += 4) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)wp);
            const __m256i w1 = nrg == 2 ? _mm256_loadu_si256((const __m256i *)(wp + 32)) : w0;
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                int32_t four;
                memcpy(&four, ap + (size_t)t * lda, 4);
                const __m256i b = _mm256_set1_epi32(four);
                h0[t] = _mm256_add_epi16(h0[t], _mm256_maddubs_epi16(w0, b));
                if (nrg == 2) {
                    h1[t] = _mm256_add_epi16(h1[t], _mm256_maddubs_epi16(w1, b));
                    PIN2(h0[t], h1[t]);
                } else {
                    PIN1(h0[t]);
                }
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
#pragma GCC unroll 2
            for (int i = 0; i < nrg; i++) {
                __m256i *dst = (__m256i *)(acc + 8 * nrg * t + 8 * i);
                const __m256i h = i ? h1[t] : h0[t];
                _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), _mm256_madd_epi16(h, ones)));
            }
    }
}

static void dot_tile(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                     int32_t *acc, int back) {
    (void)back;
#define TILE(R, T) case (R) * 8 + (T): dot_tile_n(panel, R, a, lda, g0, g1, T, acc); break;
    switch (nrg * 8 + nt) {
        TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(1, 5) TILE(1, 6)
        TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4) TILE(2, 5) TILE(2, 6)
    default: break;
    }
#undef TILE
}

#include "ftv_kernels_x86.h"

const ftv_kernels ftv_kernels_avx2_set = X86_KERNELS("avx2", 0, &ftv_kernels_avx2_set, x86_gelu, x86_attend);
const ftv_kernels ftv_kernels_avx2_fast = X86_KERNELS("avx2", 1, &ftv_kernels_avx2_set, x86_gelu_fast, x86_attend_fast);

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int ftv_kernels_avx2_unused; /* ISO C: a translation unit declares something */
#endif
