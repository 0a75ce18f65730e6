/* The fast mode's attention with bf16 products (AVX512_BF16), for the sets on 16 lanes (AVX-512
 * and AMX). Included by ftv_kernels_avx512.c and ftv_kernels_amx.c after ftv_kernels_x86.h, whose
 * scores and softmax it uses; and the tables of those sets. */
#ifndef FTV_ATTEND_BF16_H
#define FTV_ATTEND_BF16_H

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

/* The values (tokens rows of ldv, hd a multiple of 16) as `pairs` rows of pairs of keys: row m
 * holds keys 2m and 2m + 1 of each dimension, zero past the last key. */
static inline __attribute__((always_inline)) BF16 void value_pairs(const float *v, int ldv, int tokens, int hd,
                                                                   int pairs, uint32_t *vp) {
    for (int m = 0; m < pairs; m++)
        for (int d = 0; d < hd; d += 16) {
            const __m512 a = 2 * m < tokens ? _mm512_loadu_ps(v + (size_t)2 * m * ldv + d) : _mm512_setzero_ps();
            const __m512 b =
                2 * m + 1 < tokens ? _mm512_loadu_ps(v + (size_t)(2 * m + 1) * ldv + d) : _mm512_setzero_ps();
            _mm512_storeu_si512(vp + (size_t)m * hd + d, pair_bf16(a, b));
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
    value_pairs(v, ldv, tokens, hd, vpairs, vp);
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

/* The three tables of a 16-lane set: exact; fast (fused multiply-add); fast with bf16 attention. */
#define X86_SETS_16_LANES(NAME, SET, FAST, FAST_BF16)                                                           \
    const ftv_kernels SET = X86_KERNELS(NAME, 0, &SET, x86_gelu, x86_attend);                                  \
    const ftv_kernels FAST = X86_KERNELS(NAME, 1, &SET, x86_gelu_fast, x86_attend_fast);                       \
    const ftv_kernels FAST_BF16 = X86_KERNELS_ATTEND(NAME, 1, &SET, x86_gelu_fast, bf16_attend, bf16_attend_scratch)

#endif
