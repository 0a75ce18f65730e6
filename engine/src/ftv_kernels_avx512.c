/* The AVX-512 kernel set (x86 CPUs with AVX-512 F, BW, DQ, VL and VNNI): the ternary GEMM on
 * the VNNI instruction vpdpbusd, and the kernels it shares with the AVX2 set
 * (ftv_kernels_x86.h) on 16 lanes. Same repacked weights as the AVX2 set (ftv_x86_repack). The
 * whole file is compiled for AVX-512; ftv_kernels.c asks the CPU before it hands this set out.
 *
 * The GEMM: vpdpbusd adds the 4 products u8 x s8 of a column group straight into an int32 lane
 * (no int16 step, so no bound beyond the int32 one of the scalar kernel). One 64-byte vector
 * holds 16 rows x 4 codes (two row groups, adjacent in the panel); panels of 32 rows, tiles of
 * 12 tokens: 2 x 12 accumulators, 2 weight vectors and a broadcast of the 32 zmm registers
 * (measured: 16 or 24 tokens with one weight vector are slower). */
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
#define TILE_TOKENS 12
#define PANEL_RGS_MAX 4   /* 32 rows */
#define ATT_KEY_VECS 4    /* attention scores: 4 queries x 64 keys a step */
#define ATT_PV_QUERIES 4  /* weighted values: 4 queries x 64 dimensions a step */

#define NORM_ROWS 4 /* norm_quant: rows in lockstep (4 rows x 4 partial sums of the 32 registers) */

#include "ftv_kernels.h"

/* 32-row panels (two weight vectors per broadcast: measured 400 GMAC/s against 350 with 16
 * rows on (197 x 384) x (384 x 1536)), unless the panel, in every thread's scratch, would pass
 * 24 KB: 16 rows then (fc2 of DeiT-III-S, k = 1536, runs as fast). */
#define PANEL_MAX (24 * 1024 + 32)
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
    __m512i h0[TILE_TOKENS], h1[TILE_TOKENS];
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

static void dot_tile(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                     int32_t *acc) {
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

#include "ftv_kernels_x86.h"

const ftv_kernels ftv_kernels_avx512_set = X86_KERNELS("avx512", 0, &ftv_kernels_avx512_set, x86_gelu, x86_attend);
const ftv_kernels ftv_kernels_avx512_fast =
    X86_KERNELS("avx512", 1, &ftv_kernels_avx512_set, x86_gelu_fast, x86_attend_fast);

/* ---- the fast mode's attention with bf16 products (AVX512_BF16) ------------------------ */

/* vdpbf16ps adds two bf16 products a[2l] b[2l] + a[2l + 1] b[2l + 1] into fp32 lane l: twice the
 * multiply-adds of a fused multiply-add a cycle. The weighted values run on it: each query's
 * probabilities and the values rounded to bf16 (8 significant bits), paired along the keys the
 * sum runs over (two keys' values of one dimension in a 32-bit lane, dimensions in the lanes; two
 * probabilities broadcast), sums in fp32. The scores stay fp32 (fused multiply-add): rounded to
 * bf16 too, they moved the top-1 class of 1 digit in 360 (benchmarks/fast_numerics.py). */
#define BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,avx2,f16c,fma")))
#define PAIRS16(ld) (((ld) + 15) & ~15) /* 32-bit words per row of pairs: whole vectors */

/* 16 lanes of (bf16(a_l), bf16(b_l)) */
static inline __attribute__((always_inline)) BF16 __m512i pair_bf16(__m512 a, __m512 b) {
    /* 16-bit element 2l takes a_l (element l of the conversion), 2l + 1 takes b_l (element 16 + l) */
    const __m512i interleave = _mm512_set_epi32(0x001F000F, 0x001E000E, 0x001D000D, 0x001C000C, 0x001B000B, 0x001A000A,
                                                0x00190009, 0x00180008, 0x00170007, 0x00160006, 0x00150005, 0x00140004,
                                                0x00130003, 0x00120002, 0x00110001, 0x00100000);
    return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

/* n floats of x as (n + 1) / 2 pairs (x[n - 1]'s partner 0 when n is odd) into 32-bit words; no
 * word past them written */
static inline __attribute__((always_inline)) BF16 void row_pairs(const float *x, int n, uint32_t *out) {
    for (int j = 0; j < n; j += 32) {
        const __m512 a = _mm512_maskz_loadu_ps(lanes_left(n, j), x + j);
        const __m512 b = _mm512_maskz_loadu_ps(lanes_left(n, j + 16), x + j + 16);
        const int words = (n - j + 1) / 2; /* element order kept: consecutive floats make the pairs */
        _mm512_mask_storeu_epi32(out + j / 2, vmask_first(words > 16 ? 16 : words), (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
}

static size_t bf16_attend_scratch(int ldk, int hd, int tokens) {
    const size_t lp = (size_t)PAIRS16(ldk); /* probabilities per row, whole vectors */
    return (size_t)(tokens + 1) / 2 * (size_t)hd                   /* values as pairs */
           + FTV_ATTEND_QUERIES * ((size_t)ldk + (size_t)hd + lp / 2); /* scores, queries, probabilities */
}

/* out_i[d0 + 16 u + lane] = sum over key pairs m of the pairs of probabilities pp_i[m] and values
 * vp[m][d0 + 16 u + lane], for nq queries and nv vectors of dimensions. */
static inline __attribute__((always_inline)) BF16 void bf16_values(const uint32_t *pp, int ldp, const int nq,
                                                                    const uint32_t *vp, int hd, int pairs, int d0,
                                                                    const int nv, float *out, size_t ldo) {
    __m512 acc[FTV_ATTEND_QUERIES][4];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) acc[i][u] = _mm512_setzero_ps();
    for (int m = 0; m < pairs; m++) {
        __m512i vv[4];
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            vv[u] = _mm512_loadu_si512(vp + (size_t)m * hd + d0 + 16 * u);
            PIN1(vv[u]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const __m512i pb = _mm512_set1_epi32((int)pp[(size_t)i * ldp + m]);
#pragma GCC unroll 4
            for (int u = 0; u < nv; u++) {
                acc[i][u] = _mm512_dpbf16_ps(acc[i][u], (__m512bh)vv[u], (__m512bh)pb);
                PIN1(acc[i][u]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) _mm512_storeu_ps(out + (size_t)i * ldo + d0 + 16 * u, acc[i][u]);
}

/* One block of nq queries: scores in fp32 (fused multiply-add), softmax, probabilities as pairs,
 * values in bf16. */
static inline __attribute__((always_inline)) BF16 void bf16_block(const float *qb, int hd, const int nq, const float *kt,
                                                                   int ldk, const uint32_t *vp, int tokens, float scale,
                                                                   float *sc, int lp, uint32_t *pp, float *out,
                                                                   size_t ldo) {
    float mx[FTV_ATTEND_QUERIES];
    scores_all(qb, nq, kt, (size_t)ldk, hd, tokens, scale, sc, mx, 1);
    for (int i = 0; i < nq; i++) {
        float *row = sc + (size_t)i * ldk; /* scores_all's rows */
        softmax_v(row, tokens, mx[i], 1);
        row_pairs(row, tokens, pp + (size_t)i * lp / 2);
    }
    const int pairs = (tokens + 1) / 2;
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) bf16_values(pp, lp / 2, nq, vp, hd, pairs, d0, 4, out, ldo);
    for (; d0 < hd; d0 += 16) bf16_values(pp, lp / 2, nq, vp, hd, pairs, d0, 1, out, ldo);
}

static BF16 void bf16_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                             int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    if (hd % 16) { /* whole vectors of dimensions only */
        x86_attend_fast(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch);
        return;
    }
    const int lp = PAIRS16(ldk), vpairs = (tokens + 1) / 2;
    uint32_t *vp = (uint32_t *)scratch;
    float *sc = (float *)(vp + (size_t)vpairs * hd), *qb = sc + (size_t)FTV_ATTEND_QUERIES * ldk;
    uint32_t *pp = (uint32_t *)(qb + (size_t)FTV_ATTEND_QUERIES * hd);
    for (int m = 0; m < vpairs; m++) /* values: keys 2m, 2m + 1 of 16 dimensions a vector */
        for (int d = 0; d < hd; d += 16) {
            const __m512 a = _mm512_loadu_ps(v + (size_t)2 * m * ldv + d);
            const __m512 b =
                2 * m + 1 < tokens ? _mm512_loadu_ps(v + (size_t)(2 * m + 1) * ldv + d) : _mm512_setzero_ps();
            _mm512_storeu_si512(vp + (size_t)m * hd + d, pair_bf16(a, b));
        }
    for (int i0 = 0; i0 < nq; i0 += FTV_ATTEND_QUERIES) {
        const int nb = min_int(FTV_ATTEND_QUERIES, nq - i0);
        for (int i = 0; i < nb; i++) /* out may overwrite q */
            memcpy(qb + (size_t)i * hd, q + (size_t)(i0 + i) * ldq, (size_t)hd * sizeof(float));
        float *o = out + (size_t)i0 * ldo;
        switch (nb) {
        case 4: bf16_block(qb, hd, 4, kt, ldk, vp, tokens, scale, sc, lp, pp, o, (size_t)ldo); break;
        case 3: bf16_block(qb, hd, 3, kt, ldk, vp, tokens, scale, sc, lp, pp, o, (size_t)ldo); break;
        case 2: bf16_block(qb, hd, 2, kt, ldk, vp, tokens, scale, sc, lp, pp, o, (size_t)ldo); break;
        default: bf16_block(qb, hd, 1, kt, ldk, vp, tokens, scale, sc, lp, pp, o, (size_t)ldo); break;
        }
    }
}

const ftv_kernels ftv_kernels_avx512_bf16 = {
    .name = "avx512", .fast = 1, .exact = &ftv_kernels_avx512_set, .wide = 1, .gemm_scratch = x86_gemm_scratch,
    .repack = ftv_x86_repack, .tgemm = x86_tgemm, .patch_gemm = x86_patch_gemm, .norm_quant = x86_norm_quant,
    .layernorm = x86_layernorm, .gelu = x86_gelu_fast, .absmax = x86_absmax, .quantize_patches = x86_quantize_patches,
    .add_fvec = x86_add_fvec, .attend = bf16_attend, .attend_scratch = bf16_attend_scratch,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int ftv_kernels_avx512_unused; /* ISO C: a translation unit declares something */
#endif
