/* SIMD kernels for x86, two sets: AVX2 (the ternary GEMM on vpmaddubsw, and vectorized
 * RMSNorm + int8 quantizer, LayerNorm, GELU and attention), and AVX-512 (the GEMMs on the VNNI
 * instruction vpdpbusd; attention, softmax, GELU and the quantizer's element-wise passes on
 * 16 lanes; the rest shared with the AVX2 set).
 *
 * Every function is compiled for its instruction sets through a target attribute, so the
 * library still runs on CPUs without them: ftv_kernels_avx512() and ftv_kernels_avx2() ask
 * the CPU at run time and the engine falls back to the scalar kernels. Results are
 * bit-identical to the scalar kernels: integer sums exactly, float ops in the same order
 * (reductions in the FTV_LANES order, exp and erf from ftv_math.h, no fused multiply-add).
 * engine/tests/test_kernels.c compares every set the CPU runs with the scalar kernels on
 * random and worst-case inputs.
 *
 * The GEMM (a ViT layer: ~200 tokens x thousands of rows, so every decoded weight serves
 * many tokens):
 *   - at load, each ternary matrix is repacked (ftv_kernels.repack) into 2-bit blocks of 8
 *     rows x 16 codes that decode with one shift and one mask per 32 codes. Same size as tq2
 *     (rows padded to 8, k to 16); tq1 files get the same copy, so both formats run the same
 *     code at the same speed. The file's codes stay untouched (the scalar path reads them).
 *   - a thread decodes 16 rows at a time into a "panel" (16 x k bytes of codes c = q + 1 in
 *     {0, 1, 2}, in its scratch), then sweeps all tokens over it, 6 at a time: the 16 x 6
 *     tile lives in 12 registers; per 4-code column group, two 8-row weight vectors meet a
 *     broadcast of each token's 4 activations in vpmaddubsw (the activations of a token never
 *     need reordering: rows sit in the lanes, as in ik_llama.cpp's IQ2_BN_R4).
 *   - codes are unsigned, activations signed, so sum_j c_j a_j - sum_j a_j = sum_j q_j a_j:
 *     one int32 correction per token instead of a sign instruction per multiply.
 * Integer bound: vpmaddubsw adds two products c*a with int16 saturation; a pair is in
 * [2 * 2 * -128, 2 * 2 * 127] = [-512, 508], far from saturating. vpaddw (wrapping) adds one
 * pair per column group to each int16 lane, I16_GROUPS = 64 groups at most: [-32768, 32512],
 * inside int16 (the worst case, every code 2 against every activation -128, reaches -32768
 * exactly and is tested), then vpmaddwd folds lane pairs into int32. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftv_kernels.h"
#include "ftv_math.h"

#define AVX2 __attribute__((target("avx2,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX2

#define RG 8           /* rows per row group: one 32-byte vector holds 8 rows x 4 codes */
#define PANEL_RGS 2    /* row groups decoded at a time: 16 rows */
#define TILE_TOKENS 6  /* tokens per register tile: 2 x 6 accumulators + 2 weights + 2 temporaries */
#define I16_GROUPS 64  /* column groups an int16 lane may sum (see the bound above) */
_Static_assert(I16_GROUPS * 2 * 2 * 128 <= 32768 && I16_GROUPS * 2 * 2 * 127 <= 32767,
               "int16 accumulators could overflow");
/* With AVX-512 VNNI (vpdpbusd: 4 products u8 x s8 summed straight into an int32 lane, no int16
 * step, so no bound but the int32 one of the scalar kernel), one 64-byte vector holds 16 rows
 * x 4 codes: panels of 32 rows, tiles of 12 tokens in 2 x 12 accumulators + 2 weights + a
 * broadcast, of the 32 zmm registers. */
#define VNNI_RGS 4
#define VNNI_TOKENS 12 /* measured: 16 or 24 tokens with one weight vector are slower */

static int min_int(int a, int b) { return a < b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

/* ---- repacking (at load) ---------------------------------------------------------------- */

/* A repacked matrix: row groups of 8 rows, each ceil(k / 16) blocks of 32 bytes. Byte 4r + c of
 * block b holds, in bits 2s..2s+1, code c of column group 4b + s of row r (a column group =
 * 4 consecutive codes). Codes are q + 1; padding rows and columns hold 1 (q = 0). */
static int blocks_of(int k) { return (k + 15) / 16; }

/* A panel of rgs row groups, and 32 bytes past its end that the VNNI GEMM's last 64-byte load
 * of an odd number of row groups reads (into lanes it ignores). */
static size_t panel_bytes(int k, int rgs) { return (size_t)rgs * (size_t)blocks_of(k) * 4 * 32 + 32; }

static size_t avx2_repack(const ftv_tmat *w, int values, void *dst) {
    if (values) { /* a LayerNorm gamma or beta: its float values q / scale */
        if (dst)
            for (int j = 0; j < w->k; j++) ((float *)dst)[j] = ftv_tvec_get(w, j);
        return (size_t)w->k * sizeof(float);
    }
    if (w->k % 4) return 0; /* activation rows are read 4 bytes at a time: scalar kernel */
    const int rgs = (w->rows + RG - 1) / RG, blocks = blocks_of(w->k);
    const size_t bytes = (size_t)rgs * (size_t)blocks * 32;
    if (!dst) return bytes;
    int8_t *row = (int8_t *)calloc((size_t)blocks * 16, 1); /* zeros past k: padding q = 0 */
    if (!row) return 0;
    uint8_t *out = (uint8_t *)dst;
    memset(out, 0x55, bytes); /* code 1 in every 2-bit field: the padding rows */
    for (int r = 0; r < w->rows; r++) {
        uint8_t *rgp = out + (size_t)(r / RG) * (size_t)blocks * 32 + 4 * (r % RG);
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

/* ---- the ternary GEMM ----------------------------------------------------------------- */

/* Codes of row group rg + i into a panel of nrg row groups: 32 * nrg bytes per column group
 * g, row group i at offset 32 * i, row r's 4 codes at 4r. */
INLINE void decode_group(const uint8_t *rp, int blocks, int rg, int i, int nrg, uint8_t *panel) {
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

/* Row groups rg, rg + 1, ... (nrg of them) into the panel, and zeros in the 32 bytes past it. */
static AVX2 void decode_panel(const uint8_t *rp, int blocks, int rg, int nrg, uint8_t *panel) {
    for (int i = 0; i < nrg; i++) decode_group(rp, blocks, rg, i, nrg, panel);
    _mm256_storeu_si256((__m256i *)(panel + (size_t)blocks * 4 * 32 * nrg), _mm256_setzero_si256());
}

/* GCC keeps a loop-carried vector in a register only if told: without this empty asm it
 * keeps arrays of accumulators in memory, or hoists all broadcasts ahead and spills half the
 * accumulators (measured: the GEMM 1.7x slower, attention 2x). */
#define PIN1(a) __asm__ volatile("" : "+x"(a))
#define PIN2(a, b) __asm__ volatile("" : "+x"(a), "+x"(b))

/* acc[16t + 8i + r] = sum over column groups [g0, g1) of codes(row r of row group i) . a_t,
 * for nt tokens a_t = a + t * lda; nrg and nt are constants after inlining. */
INLINE void dot_tile(const uint8_t *panel, const int nrg, const int8_t *a, size_t lda, int g0, int g1,
                     const int nt, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++)
#pragma GCC unroll 2
        for (int i = 0; i < nrg; i++) _mm256_storeu_si256((__m256i *)(acc + 16 * t + 8 * i), _mm256_setzero_si256());
    for (int c = g0; c < g1; c += I16_GROUPS) {
        const int ce = min_int(c + I16_GROUPS, g1);
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
                __m256i *dst = (__m256i *)(acc + 16 * t + 8 * i);
                const __m256i h = i ? h1[t] : h0[t];
                _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), _mm256_madd_epi16(h, ones)));
            }
    }
}

static AVX2 void dot_tile_any(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1,
                              int nt, int32_t *acc) {
#define TILE(R, T) case (R) * 8 + (T): dot_tile(panel, R, a, lda, g0, g1, T, acc); break;
    switch (nrg * 8 + nt) {
        TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(1, 5) TILE(1, 6)
        TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4) TILE(2, 5) TILE(2, 6)
    default: break;
    }
#undef TILE
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,f16c")))
#define INLINE512 static inline __attribute__((always_inline)) AVX512

/* dot_tile with vpdpbusd on 64-byte vectors: acc[16 nw t + 8i + r], nw = ceil(nrg / 2) weight
 * vectors of 16 rows per column group (with nrg odd, the last one's upper 8 rows are the next
 * column group's first rows: computed, never stored by the epilogue). Sums over all column
 * groups [g0, g1) in int32 at once: |sum| <= 2 * 128 * k, no int16 chunks. */
INLINE512 void dot_tile_vnni(const uint8_t *panel, int nrg, const int nw, const int8_t *a, size_t lda, int g0,
                             int g1, const int nt, int32_t *acc) {
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

static AVX512 void dot_tile_vnni_any(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1,
                                     int nt, int32_t *acc) {
#define TILE(W, T) case (W) * 16 + (T): dot_tile_vnni(panel, nrg, W, a, lda, g0, g1, T, acc); break;
    switch ((nrg + 1) / 2 * 16 + nt) {
        TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(1, 5) TILE(1, 6)
        TILE(1, 7) TILE(1, 8) TILE(1, 9) TILE(1, 10) TILE(1, 11) TILE(1, 12)
        TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4) TILE(2, 5) TILE(2, 6)
        TILE(2, 7) TILE(2, 8) TILE(2, 9) TILE(2, 10) TILE(2, 11) TILE(2, 12)
    default: break;
    }
#undef TILE
}

/* Sum of n int8 (the correction term of the unsigned codes). */
static AVX2 int32_t sum_i8(const int8_t *a, int n) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    int j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(a + j));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
    }
    int32_t lane[8], s = 0;
    _mm256_storeu_si256((__m256i *)lane, acc);
    for (int i = 0; i < 8; i++) s += lane[i];
    for (; j < n; j++) s += a[j];
    return s;
}

/* 8 floats of a file vector from index i (FP16 converts exactly, as ftv_f16_to_f32). */
INLINE __m256 load8(const ftv_fvec *v, int i) {
    if (v->is_f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v->data + 2 * (size_t)i)));
    return _mm256_loadu_ps((const float *)(v->data + 4 * (size_t)i));
}

/* Row groups of the VNNI GEMM's panels: 32 rows (two weight vectors per broadcast: measured
 * 400 GMAC/s against 350 with 16 rows on (197 x 384) x (384 x 1536)), unless the panel, in
 * every thread's scratch, would pass 24 KB: DeiT-III-S's arena stays under 1 MB with two
 * threads (fc2, k = 1536, runs as fast with 16 rows). */
#define VNNI_PANEL_MAX (24 * 1024 + 32)
static int vnni_rgs(int k) { return panel_bytes(k, VNNI_RGS) <= VNNI_PANEL_MAX ? VNNI_RGS : PANEL_RGS; }

static size_t avx2_gemm_scratch(int k, int tokens) {
    /* the largest panel of either GEMM for rows of up to k codes, then the activation sums of
     * every token (and input channel) */
    size_t panel = panel_bytes(k, VNNI_RGS) < VNNI_PANEL_MAX ? panel_bytes(k, VNNI_RGS) : VNNI_PANEL_MAX;
    if (panel < panel_bytes(k, PANEL_RGS)) panel = panel_bytes(k, PANEL_RGS);
    return panel + (size_t)tokens * FTV_MAX_CHANNELS * sizeof(int32_t);
}

/* The sweep every GEMM shares: rows [o0, o1) rgs row groups at a time, each panel decoded
 * once, then tiles of up to `most` tokens over it, of balanced sizes (25 tokens: 9 + 8 + 8,
 * not 12 + 12 + 1): tile(ctx, panel, rg, nrg, t0, nt). Inlined with its tile function
 * (measured: 5% slower as an indirect call). */
typedef void (*tile_fn)(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt);
typedef void (*decode_fn)(const uint8_t *rp, int blocks, int rg, int nrg, uint8_t *panel);

INLINE void sweep(const ftv_tmat *w, int o0, int o1, int tokens, uint8_t *panel, const int rgs, const int most,
                  decode_fn decode, tile_fn tile, void *ctx) {
    const int tiles = (tokens + most - 1) / most;
    for (int rg = o0 / RG; rg * RG < o1; rg += rgs) {
        const int nrg = min_int(rgs, (o1 + RG - 1) / RG - rg);
        decode((const uint8_t *)w->repack, blocks_of(w->k), rg, nrg, panel);
        for (int i = 0; i < tiles; i++) {
            const int t0 = (int)((long)tokens * i / tiles);
            tile(ctx, panel, rg, nrg, t0, (int)((long)tokens * (i + 1) / tiles) - t0);
        }
    }
}

typedef struct {
    const ftv_tmat *w;
    int o0, o1, ldt, ldo, accumulate;
    const int8_t *xq;
    const float *xs;
    const int32_t *asum;
    float *y;
    const ftv_fvec *gamma; /* NULL unless accumulating with LayerScale */
} tgemm_job;

/* y for tokens [t0, t0 + nt) and row groups [rg, rg + nrg) from their sums
 * acc[ld * t + 8 * i + r]. */
INLINE void tgemm_store(const tgemm_job *j, const int32_t *acc, const int ld, int rg, int nrg, int t0, int nt) {
    for (int t = 0; t < nt; t++) {
        const __m256 den = _mm256_set1_ps(j->xs[t0 + t] * j->w->scale);
        const __m256i s = _mm256_set1_epi32(j->asum[t0 + t]);
        float *yt = j->y + (size_t)(t0 + t) * j->ldt;
        for (int i = 0; i < nrg; i++) {
            const int r0 = (rg + i) * RG;
            const __m256i q = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(acc + ld * t + 8 * i)), s);
            __m256 v = _mm256_div_ps(_mm256_cvtepi32_ps(q), den);
            if (j->ldo == 1 && r0 >= j->o0 && r0 + RG <= j->o1) {
                float *dst = yt + (r0 - j->o0);
                if (j->accumulate)
                    v = _mm256_add_ps(_mm256_loadu_ps(dst), _mm256_mul_ps(j->gamma ? load8(j->gamma, r0) : _mm256_set1_ps(1.0f), v));
                _mm256_storeu_ps(dst, v);
                continue;
            }
            float lane[RG]; /* rows cut by [o0, o1), or a strided (transposed) output */
            _mm256_storeu_ps(lane, v);
            for (int r = max_int(r0, j->o0); r < min_int(r0 + RG, j->o1); r++) {
                float *dst = yt + (size_t)(r - j->o0) * j->ldo;
                if (j->accumulate) *dst += (j->gamma ? ftv_fvec_get(j->gamma, r) : 1.0f) * lane[r - r0];
                else *dst = lane[r - r0];
            }
        }
    }
}

INLINE void tgemm_tile(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt) {
    const tgemm_job *j = (const tgemm_job *)ctx;
    const int k = j->w->k;
    int32_t acc[TILE_TOKENS * PANEL_RGS * RG];
    dot_tile_any(panel, nrg, j->xq + (size_t)t0 * k, (size_t)k, 0, k / 4, nt, acc);
    tgemm_store(j, acc, PANEL_RGS * RG, rg, nrg, t0, nt);
}

/* decode_panel two row groups at a time (adjacent in the panel): one 64-byte store per column
 * group instead of two. */
static AVX512 void decode_panel16(const uint8_t *rp, int blocks, int rg, int nrg, uint8_t *panel) {
    const __m512i three = _mm512_set1_epi8(3);
    int i = 0;
    for (; i + 2 <= nrg; i += 2) {
        const uint8_t *src = rp + (size_t)(rg + i) * (size_t)blocks * 32;
        for (int b = 0; b < blocks; b++) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(src + (size_t)b * 32));
            const __m256i hi = _mm256_loadu_si256((const __m256i *)(src + ((size_t)blocks + b) * 32));
            const __m512i p = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            uint8_t *dst = panel + ((size_t)4 * b * nrg + i) * 32;
            _mm512_storeu_si512((void *)dst, _mm512_and_si512(p, three));
            _mm512_storeu_si512((void *)(dst + 32 * nrg), _mm512_and_si512(_mm512_srli_epi16(p, 2), three));
            _mm512_storeu_si512((void *)(dst + 64 * nrg), _mm512_and_si512(_mm512_srli_epi16(p, 4), three));
            _mm512_storeu_si512((void *)(dst + 96 * nrg), _mm512_and_si512(_mm512_srli_epi16(p, 6), three));
        }
    }
    if (i < nrg) decode_group(rp, blocks, rg, i, nrg, panel);
    _mm256_storeu_si256((__m256i *)(panel + (size_t)blocks * 4 * 32 * nrg), _mm256_setzero_si256());
}

/* 16 floats of a file vector from index i, lanes outside m zero (and not read). */
INLINE512 __m512 load16_masked(const ftv_fvec *v, int i, __mmask16 m) {
    if (v->is_f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v->data + 2 * (size_t)i));
    return _mm512_maskz_loadu_ps(m, v->data + 4 * (size_t)i);
}

/* tgemm_store for the VNNI tile, acc[16 nw t + 16 v + lane], 16 rows a vector: one division
 * for 16 outputs (measured: a 16-lane vdivps about as fast as an 8-lane one); lanes past
 * [o0, o1) or the panel masked off. */
INLINE512 void tgemm_store16(const tgemm_job *j, const int32_t *acc, int rg, int nrg, int t0, int nt) {
    const int nw = (nrg + 1) / 2, end = min_int(j->o1, (rg + nrg) * RG);
    for (int t = 0; t < nt; t++) {
        const __m512 den = _mm512_set1_ps(j->xs[t0 + t] * j->w->scale);
        const __m512i s = _mm512_set1_epi32(j->asum[t0 + t]);
        float *yt = j->y + (size_t)(t0 + t) * j->ldt;
        for (int v = 0; v < nw; v++) {
            const int r0 = (rg + 2 * v) * RG, n = min_int(16, end - r0); /* rows [r0, r0 + n), n >= 1 */
            const __m512i q = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(acc + 16 * nw * t + 16 * v)), s);
            __m512 val = _mm512_div_ps(_mm512_cvtepi32_ps(q), den);
            const __mmask16 m = (__mmask16)((1u << n) - 1u);
            if (j->ldo == 1 && r0 >= j->o0) {
                float *dst = yt + (r0 - j->o0);
                if (j->accumulate)
                    val = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst),
                                        _mm512_mul_ps(j->gamma ? load16_masked(j->gamma, r0, m) : _mm512_set1_ps(1.0f), val));
                _mm512_mask_storeu_ps(dst, m, val);
                continue;
            }
            if (!j->accumulate && r0 >= j->o0) { /* a transposed output (attention keys): scattered */
                const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                       _mm512_set1_epi32(j->ldo));
                _mm512_mask_i32scatter_ps(yt + (size_t)(r0 - j->o0) * j->ldo, m, idx, val, 4);
                continue;
            }
            float lane[16]; /* rows before o0, or a strided output to add to */
            _mm512_storeu_ps(lane, val);
            for (int r = max_int(r0, j->o0); r < r0 + n; r++) {
                float *dst = yt + (size_t)(r - j->o0) * j->ldo;
                if (j->accumulate) *dst += (j->gamma ? ftv_fvec_get(j->gamma, r) : 1.0f) * lane[r - r0];
                else *dst = lane[r - r0];
            }
        }
    }
}

INLINE512 void tgemm_tile_vnni(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt) {
    const tgemm_job *j = (const tgemm_job *)ctx;
    const int k = j->w->k;
    int32_t acc[VNNI_TOKENS * VNNI_RGS * RG];
    dot_tile_vnni_any(panel, nrg, j->xq + (size_t)t0 * k, (size_t)k, 0, k / 4, nt, acc);
    tgemm_store16(j, acc, rg, nrg, t0, nt);
}

static AVX2 void avx2_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
                            float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma) {
    if (!w->repack) {
        ftv_tgemm_strided(w, o0, o1, xq, xs, tokens, y, ldt, ldo, scratch, accumulate, gamma);
        return;
    }
    uint8_t *panel = (uint8_t *)scratch;
    int32_t *asum = (int32_t *)(panel + panel_bytes(w->k, PANEL_RGS));
    for (int t = 0; t < tokens; t++) asum[t] = sum_i8(xq + (size_t)t * w->k, w->k);
    tgemm_job job = {w, o0, o1, ldt, ldo, accumulate, xq, xs, asum, y, accumulate && gamma && gamma->n ? gamma : NULL};
    sweep(w, o0, o1, tokens, panel, PANEL_RGS, TILE_TOKENS, decode_panel, tgemm_tile, &job);
}

static AVX512 void avx512_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
                                float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma) {
    if (!w->repack) {
        ftv_tgemm_strided(w, o0, o1, xq, xs, tokens, y, ldt, ldo, scratch, accumulate, gamma);
        return;
    }
    uint8_t *panel = (uint8_t *)scratch;
    int32_t *asum = (int32_t *)(panel + panel_bytes(w->k, vnni_rgs(w->k)));
    for (int t = 0; t < tokens; t++) asum[t] = sum_i8(xq + (size_t)t * w->k, w->k);
    tgemm_job job = {w, o0, o1, ldt, ldo, accumulate, xq, xs, asum, y, accumulate && gamma && gamma->n ? gamma : NULL};
    sweep(w, o0, o1, tokens, panel, vnni_rgs(w->k), VNNI_TOKENS, decode_panel16, tgemm_tile_vnni, &job);
}

typedef struct {
    const ftv_tmat *w;
    int o0, o1, chans, ldy;
    const int8_t *xq;
    const float *xs;
    const int32_t *asum; /* (tokens, chans) */
    const ftv_fvec *cs, *bias;
    float *y;
} patch_job;

/* The patch embedding's tile on panels of up to 2 row groups, with either dot product: both
 * leave acc[16t + 8i + r] (up to VNNI_TOKENS tokens). */
typedef void (*dot_fn)(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                       int32_t *acc);

INLINE void patch_tile_with(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt, dot_fn dot) {
    const patch_job *j = (const patch_job *)ctx;
    const int k = j->w->k, gpc = k / j->chans / 4; /* column groups per input channel */
    int32_t acc[VNNI_TOKENS * PANEL_RGS * RG];
    __m256 sum[VNNI_TOKENS][PANEL_RGS];
    for (int t = 0; t < nt; t++) sum[t][0] = sum[t][1] = _mm256_setzero_ps();
    for (int ch = 0; ch < j->chans; ch++) { /* each channel: its own integer sum and scale */
        dot(panel, nrg, j->xq + (size_t)t0 * k, (size_t)k, ch * gpc, (ch + 1) * gpc, nt, acc);
        const __m256 sc = _mm256_set1_ps(j->xs[ch]);
        for (int t = 0; t < nt; t++)
            for (int i = 0; i < nrg; i++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)(acc + 16 * t + 8 * i));
                const __m256i q = _mm256_sub_epi32(a, _mm256_set1_epi32(j->asum[(t0 + t) * j->chans + ch]));
                sum[t][i] = _mm256_add_ps(sum[t][i], _mm256_div_ps(_mm256_cvtepi32_ps(q), sc));
            }
    }
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < nrg; i++) {
            const int r0 = (rg + i) * RG;
            float *yt = j->y + (size_t)(t0 + t) * j->ldy;
            if (r0 >= j->o0 && r0 + RG <= j->o1) {
                const __m256 b = j->bias->n ? load8(j->bias, r0) : _mm256_setzero_ps();
                const __m256 v = _mm256_div_ps(sum[t][i], load8(&j->w->row_scale, r0));
                _mm256_storeu_ps(yt + (r0 - j->o0), _mm256_add_ps(_mm256_mul_ps(v, load8(j->cs, r0)), b));
                continue;
            }
            float lane[RG];
            _mm256_storeu_ps(lane, sum[t][i]);
            for (int r = max_int(r0, j->o0); r < min_int(r0 + RG, j->o1); r++) {
                const float b = j->bias->n ? ftv_fvec_get(j->bias, r) : 0.0f;
                yt[r - j->o0] = lane[r - r0] / ftv_fvec_get(&j->w->row_scale, r) * ftv_fvec_get(j->cs, r) + b;
            }
        }
}

INLINE void patch_tile(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt) {
    patch_tile_with(ctx, panel, rg, nrg, t0, nt, dot_tile_any);
}

INLINE512 void patch_tile_vnni(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt) {
    patch_tile_with(ctx, panel, rg, nrg, t0, nt, dot_tile_vnni_any);
}

/* The patch embedding with either dot product (vnni: a constant after inlining). */
INLINE void patch_gemm_with(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                            int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy, void *scratch,
                            const int vnni) {
    const int k = w->k, pc = k / chans; /* codes per input channel */
    if (!w->repack || pc % 4 || pc * chans != k) {
        ftv_patch_gemm(w, o0, o1, xq, xs, chans, tokens, cs, bias, y, ldy, scratch);
        return;
    }
    uint8_t *panel = (uint8_t *)scratch;
    int32_t *asum = (int32_t *)(panel + panel_bytes(k, PANEL_RGS));
    for (int t = 0; t < tokens; t++)
        for (int ch = 0; ch < chans; ch++) asum[t * chans + ch] = sum_i8(xq + (size_t)t * k + (size_t)ch * pc, pc);
    patch_job job = {w, o0, o1, chans, ldy, xq, xs, asum, cs, bias, y};
    if (vnni) sweep(w, o0, o1, tokens, panel, PANEL_RGS, VNNI_TOKENS, decode_panel, patch_tile_vnni, &job);
    else sweep(w, o0, o1, tokens, panel, PANEL_RGS, TILE_TOKENS, decode_panel, patch_tile, &job);
}

static AVX2 void avx2_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                                 int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy,
                                 void *scratch) {
    patch_gemm_with(w, o0, o1, xq, xs, chans, tokens, cs, bias, y, ldy, scratch, 0);
}

static AVX512 void avx512_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                                     int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy,
                                     void *scratch) {
    patch_gemm_with(w, o0, o1, xq, xs, chans, tokens, cs, bias, y, ldy, scratch, 1);
}

/* ---- float kernels -------------------------------------------------------------------- */

INLINE float hmax(__m256 v) {
    float lane[8], m;
    _mm256_storeu_ps(lane, v);
    m = lane[0];
    for (int i = 1; i < 8; i++) m = lane[i] > m ? lane[i] : m;
    return m;
}

/* ftv_expf on n vectors of 8 lanes: the same operations in the same order. The n
 * independent chains are interleaved step by step: one chain is ~60 cycles of latency, too
 * long for out-of-order execution to overlap on its own. */
#define EXP_WAYS 4
INLINE void exp8(__m256 *x, const int n) {
    __m256 k[EXP_WAYS], r[EXP_WAYS], z[EXP_WAYS], p[EXP_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        x[w] = _mm256_max_ps(_mm256_set1_ps(FTV_EXP_MIN), _mm256_min_ps(_mm256_set1_ps(FTV_EXP_MAX), x[w]));
        k[w] = _mm256_round_ps(_mm256_mul_ps(x[w], _mm256_set1_ps(FTV_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r[w] = _mm256_sub_ps(x[w], _mm256_mul_ps(k[w], _mm256_set1_ps(FTV_LN2_HI)));
        r[w] = _mm256_sub_ps(r[w], _mm256_mul_ps(k[w], _mm256_set1_ps(FTV_LN2_LO)));
        z[w] = _mm256_mul_ps(r[w], r[w]);
        p[w] = _mm256_set1_ps(FTV_EXP_P0);
    }
    const float coef[5] = {FTV_EXP_P1, FTV_EXP_P2, FTV_EXP_P3, FTV_EXP_P4, FTV_EXP_P5};
    for (int i = 0; i < 5; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) p[w] = _mm256_add_ps(_mm256_mul_ps(p[w], r[w]), _mm256_set1_ps(coef[i]));
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        p[w] = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p[w], z[w]), r[w]), _mm256_set1_ps(1.0f));
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k[w]), _mm256_set1_epi32(127)), 23);
        x[w] = _mm256_mul_ps(p[w], _mm256_castsi256_ps(e));
    }
}

/* ftv_erff on n vectors: both branches, then a blend on |x| < FTV_ERF_SPLIT; chains
 * interleaved as in exp8. */
#define ERF_WAYS EXP_WAYS
INLINE void erf8(__m256 *x, const int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t[ERF_WAYS], z[ERF_WAYS], pa[ERF_WAYS], pb[ERF_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        t[w] = _mm256_andnot_ps(sign, x[w]);
        z[w] = _mm256_mul_ps(t[w], t[w]);
        pa[w] = _mm256_set1_ps(ftv_erf_a[0]);
        pb[w] = _mm256_set1_ps(ftv_erf_b[0]);
    }
    for (int i = 1; i < FTV_ERF_A_N; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) pa[w] = _mm256_add_ps(_mm256_mul_ps(pa[w], z[w]), _mm256_set1_ps(ftv_erf_a[i]));
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) /* from here z holds u = min(|x|, clamp) - mid */
        z[w] = _mm256_sub_ps(_mm256_min_ps(_mm256_set1_ps(FTV_ERF_CLAMP), t[w]), _mm256_set1_ps(FTV_ERF_MID));
    for (int i = 1; i < FTV_ERF_B_N; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) pb[w] = _mm256_add_ps(_mm256_mul_ps(pb[w], z[w]), _mm256_set1_ps(ftv_erf_b[i]));
    exp8(pb, n);
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        const __m256 ra = _mm256_add_ps(t[w], _mm256_mul_ps(t[w], pa[w]));
        const __m256 rb = _mm256_sub_ps(_mm256_set1_ps(1.0f), pb[w]);
        const __m256 r = _mm256_blendv_ps(rb, ra, _mm256_cmp_ps(t[w], _mm256_set1_ps(FTV_ERF_SPLIT), _CMP_LT_OQ));
        x[w] = _mm256_or_ps(r, _mm256_and_ps(sign, x[w])); /* copysign: r >= 0 */
    }
}

static AVX2 float avx2_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps, int k,
                                     int8_t *q) {
    float part[FTV_LANES];
    __m256 acc = _mm256_setzero_ps();
    int j = 0, k8 = k - k % 8;
    for (; j < k8; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    _mm256_storeu_ps(part, acc);
    for (; j < k; j++) part[j % FTV_LANES] += x[j] * x[j];
    const float r = ftv_norm_factor(ftv_lanes_sum(part), k, rms_eps);
    const __m256 rv = _mm256_set1_ps(r), abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 mx = _mm256_setzero_ps();
    for (j = 0; j < k8; j += 8)
        mx = _mm256_max_ps(mx, _mm256_and_ps(abs_mask, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), rv), load8(g, j))));
    float amax = hmax(mx);
    for (; j < k; j++) {
        const float a = fabsf(x[j] * r * ftv_fvec_get(g, j));
        if (a > amax) amax = a;
    }
    const float s = ftv_quant_scale(amax, quant_eps, r);
    const __m256 sv = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int k32 = k - k % 32;
    for (j = 0; j < k32; j += 32) {
        __m256i i32[4];
        for (int u = 0; u < 4; u++) {
            const int ju = j + 8 * u;
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + ju), rv), load8(g, ju)), sv);
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            i32[u] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
        }
        /* packs work within 128-bit lanes: dwords come out in the order 0 4 1 5 2 6 3 7 */
        const __m256i i8 = _mm256_packs_epi16(_mm256_packs_epi32(i32[0], i32[1]), _mm256_packs_epi32(i32[2], i32[3]));
        _mm256_storeu_si256((__m256i *)(q + j), _mm256_permutevar8x32_epi32(i8, order));
    }
    for (; j < k; j++) {
        const float v = rintf(x[j] * r * ftv_fvec_get(g, j) * s);
        q[j] = ftv_to_int8(v);
    }
    return s;
}

static AVX2 void avx2_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                                float *out) {
    if (!gamma || !beta || !gamma->repack || !beta->repack) {
        ftv_layernorm(x, gamma, beta, eps, n, out);
        return;
    }
    const float *gv = (const float *)gamma->repack, *bv = (const float *)beta->repack;
    float part[FTV_LANES];
    const int n8 = n - n % 8;
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j < n8; j += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + j));
    _mm256_storeu_ps(part, acc);
    for (; j < n; j++) part[j % FTV_LANES] += x[j];
    const float mean = ftv_lanes_sum(part) / (float)n;
    const __m256 mv = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (j = 0; j < n8; j += 8) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), mv);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(d, d));
    }
    _mm256_storeu_ps(part, acc);
    for (; j < n; j++) {
        const float d = x[j] - mean;
        part[j % FTV_LANES] += d * d;
    }
    const float r = ftv_norm_factor(ftv_lanes_sum(part), n, eps);
    const __m256 rv = _mm256_set1_ps(r);
    for (j = 0; j < n8; j += 8) {
        const __m256 h = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv), rv);
        _mm256_storeu_ps(out + j, _mm256_add_ps(_mm256_mul_ps(h, _mm256_loadu_ps(gv + j)), _mm256_loadu_ps(bv + j)));
    }
    for (; j < n; j++) out[j] = (x[j] - mean) * r * gv[j] + bv[j];
}

static AVX2 void softmax8(float *x, int n) {
    const int n8 = n - n % 8;
    __m256 mv = _mm256_set1_ps(x[0]);
    int j = 0;
    for (; j < n8; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + j));
    float mx = hmax(mv);
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    mv = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps(), e[EXP_WAYS];
    for (j = 0; j + 8 * EXP_WAYS <= n8; j += 8 * EXP_WAYS) {
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) e[w] = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8 * w), mv);
        exp8(e, EXP_WAYS);
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) { /* summed in order: lane l still adds x[l], x[l + 8], ... */
            _mm256_storeu_ps(x + j + 8 * w, e[w]);
            acc = _mm256_add_ps(acc, e[w]);
        }
    }
    for (; j < n8; j += 8) {
        e[0] = _mm256_sub_ps(_mm256_loadu_ps(x + j), mv);
        exp8(e, 1);
        _mm256_storeu_ps(x + j, e[0]);
        acc = _mm256_add_ps(acc, e[0]);
    }
    float part[FTV_LANES];
    _mm256_storeu_ps(part, acc);
    for (; j < n; j++) {
        x[j] = ftv_expf(x[j] - mx);
        part[j % FTV_LANES] += x[j];
    }
    const float inv = 1.0f / ftv_lanes_sum(part);
    const __m256 iv = _mm256_set1_ps(inv);
    for (j = 0; j < n8; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), iv));
    for (; j < n; j++) x[j] *= inv;
}

static AVX2 void avx2_gelu(float *x, int n) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 rsqrt2 = _mm256_set1_ps(0.70710678118654752f);
    int j = 0;
    for (; j + 8 * ERF_WAYS <= n; j += 8 * ERF_WAYS) {
        __m256 v[ERF_WAYS], e[ERF_WAYS];
#pragma GCC unroll 4
        for (int w = 0; w < ERF_WAYS; w++) {
            v[w] = _mm256_loadu_ps(x + j + 8 * w);
            e[w] = _mm256_mul_ps(v[w], rsqrt2);
        }
        erf8(e, ERF_WAYS);
#pragma GCC unroll 4
        for (int w = 0; w < ERF_WAYS; w++)
            _mm256_storeu_ps(x + j + 8 * w, _mm256_mul_ps(_mm256_mul_ps(half, v[w]), _mm256_add_ps(one, e[w])));
    }
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        __m256 e = _mm256_mul_ps(v, rsqrt2);
        erf8(&e, 1);
        _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
    }
    ftv_gelu(x + j, n - j);
}

/* Scores of NQ queries qb[i * hd] against keys [j0, j0 + 8 * NV):
 * sc[i * ldk + j] = (sum over d in order of q[d] * k[d][j]) * scale. Keys sit in the lanes,
 * so each lane sums in the scalar kernel's order. */
INLINE void scores(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int j0, const int nv,
                   float scale, float *sc) {
    __m256 acc[FTV_ATTEND_QUERIES][2];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kd = kt + (size_t)d * ldk + j0;
        const __m256 k0 = _mm256_loadu_ps(kd), k1 = nv == 2 ? _mm256_loadu_ps(kd + 8) : k0;
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const __m256 qd = _mm256_broadcast_ss(qb + (size_t)i * hd + d);
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_mul_ps(qd, k0));
            if (nv == 2) {
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_mul_ps(qd, k1));
                PIN2(acc[i][0], acc[i][1]);
            } else {
                PIN1(acc[i][0]);
            }
        }
    }
    const __m256 s = _mm256_set1_ps(scale);
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++) {
        _mm256_storeu_ps(sc + (size_t)i * ldk + j0, _mm256_mul_ps(acc[i][0], s));
        if (nv == 2) _mm256_storeu_ps(sc + (size_t)i * ldk + j0 + 8, _mm256_mul_ps(acc[i][1], s));
    }
}

INLINE void scores_all(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int tokens, float scale,
                       float *sc) {
    int j0 = 0; /* keys in blocks of 16, then 8; ldk pads the last block (its scores unused) */
    for (; j0 + 16 <= tokens; j0 += 16) scores(qb, nq, kt, ldk, hd, j0, 2, scale, sc);
    for (; j0 < tokens; j0 += 8) scores(qb, nq, kt, ldk, hd, j0, 1, scale, sc);
}

/* out_i[d0 + 8u + lane] = sum over keys j in order of p_i[j] * v[j][d0 + 8u + lane], for NQ
 * queries (probabilities p_i = p + i * ldp) and NV vectors of head dimensions from d0. */
INLINE void weigh_values(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens, int d0,
                         const int nv, float *out, size_t ldo) {
    __m256 acc[2][4];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) acc[i][u] = _mm256_setzero_ps();
    for (int j = 0; j < tokens; j++) {
        const float *vj = v + (size_t)j * ldv + d0;
        __m256 vv[4];
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            vv[u] = _mm256_loadu_ps(vj + 8 * u);
            PIN1(vv[u]); /* one load for both queries, not a memory operand in each multiply */
        }
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const __m256 pj = _mm256_broadcast_ss(p + (size_t)i * ldp + j);
#pragma GCC unroll 4
            for (int u = 0; u < nv; u++) {
                acc[i][u] = _mm256_add_ps(acc[i][u], _mm256_mul_ps(pj, vv[u]));
                PIN1(acc[i][u]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) _mm256_storeu_ps(out + (size_t)i * ldo + d0 + 8 * u, acc[i][u]);
}

INLINE void weigh_values_all(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens,
                             int hd, float *out, size_t ldo) {
    int d0 = 0;
    for (; d0 + 32 <= hd; d0 += 32) weigh_values(p, ldp, nq, v, ldv, tokens, d0, 4, out, ldo);
    for (; d0 < hd; d0 += 8) weigh_values(p, ldp, nq, v, ldv, tokens, d0, 1, out, ldo);
}

static AVX2 void avx2_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                             int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    if (hd % 8 || ldk % 8) {
        ftv_attend(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch);
        return;
    }
    float *sc = scratch, *qb = scratch + (size_t)FTV_ATTEND_QUERIES * ldk;
    for (int i0 = 0; i0 < nq; i0 += FTV_ATTEND_QUERIES) {
        const int nb = min_int(FTV_ATTEND_QUERIES, nq - i0);
        for (int i = 0; i < nb; i++) /* out may overwrite q */
            memcpy(qb + (size_t)i * hd, q + (size_t)(i0 + i) * ldq, (size_t)hd * sizeof(float));
        switch (nb) {
        case 4: scores_all(qb, 4, kt, (size_t)ldk, hd, tokens, scale, sc); break;
        case 3: scores_all(qb, 3, kt, (size_t)ldk, hd, tokens, scale, sc); break;
        case 2: scores_all(qb, 2, kt, (size_t)ldk, hd, tokens, scale, sc); break;
        default: scores_all(qb, 1, kt, (size_t)ldk, hd, tokens, scale, sc); break;
        }
        for (int i = 0; i < nb; i++) softmax8(sc + (size_t)i * ldk, tokens);
        float *o = out + (size_t)i0 * ldo;
        int i = 0;
        for (; i + 2 <= nb; i += 2)
            weigh_values_all(sc + (size_t)i * ldk, (size_t)ldk, 2, v, (size_t)ldv, tokens, hd, o + (size_t)i * ldo, (size_t)ldo);
        if (i < nb) weigh_values_all(sc + (size_t)i * ldk, (size_t)ldk, 1, v, (size_t)ldv, tokens, hd, o + (size_t)i * ldo, (size_t)ldo);
    }
}

/* ---- float kernels on AVX-512: the same operations on 16 lanes ------------------------- */

/* 16 floats of a file vector from index i. */
INLINE512 __m512 load16(const ftv_fvec *v, int i) {
    if (v->is_f16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v->data + 2 * (size_t)i)));
    return _mm512_loadu_ps((const float *)(v->data + 4 * (size_t)i));
}

/* avx2_rmsnorm_quant with its element-wise passes (the absolute maximum, the quantizer) on 16
 * lanes; the sum of squares keeps its 8-lane order. */
static AVX512 float avx512_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps, int k,
                                         int8_t *q) {
    float part[FTV_LANES];
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    const int k8 = k - k % 8, k16 = k - k % 16;
    for (; j < k8; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    _mm256_storeu_ps(part, acc);
    for (; j < k; j++) part[j % FTV_LANES] += x[j] * x[j];
    const float r = ftv_norm_factor(ftv_lanes_sum(part), k, rms_eps);
    const __m512 rv = _mm512_set1_ps(r);
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 mx = _mm512_setzero_ps();
    for (j = 0; j < k16; j += 16) {
        const __m512 h = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + j), rv), load16(g, j));
        mx = _mm512_max_ps(mx, _mm512_castsi512_ps(_mm512_and_si512(abs_mask, _mm512_castps_si512(h))));
    }
    float amax = hmax(_mm256_max_ps(_mm512_castps512_ps256(mx), _mm512_extractf32x8_ps(mx, 1)));
    for (; j < k; j++) {
        const float a = fabsf(x[j] * r * ftv_fvec_get(g, j));
        if (a > amax) amax = a;
    }
    const float s = ftv_quant_scale(amax, quant_eps, r);
    const __m512 sv = _mm512_set1_ps(s), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    for (j = 0; j < k16; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + j), rv), load16(g, j)), sv);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i i32 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
        _mm_storeu_si128((__m128i *)(q + j), _mm512_cvtepi32_epi8(i32)); /* in [-128, 127]: truncation is exact */
    }
    for (; j < k; j++) {
        const float v = rintf(x[j] * r * ftv_fvec_get(g, j) * s);
        q[j] = ftv_to_int8(v);
    }
    return s;
}

/* exp8 on 16 lanes. */
INLINE512 void exp16(__m512 *x, const int n) {
    __m512 k[EXP_WAYS], r[EXP_WAYS], z[EXP_WAYS], p[EXP_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        x[w] = _mm512_max_ps(_mm512_set1_ps(FTV_EXP_MIN), _mm512_min_ps(_mm512_set1_ps(FTV_EXP_MAX), x[w]));
        k[w] = _mm512_roundscale_ps(_mm512_mul_ps(x[w], _mm512_set1_ps(FTV_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r[w] = _mm512_sub_ps(x[w], _mm512_mul_ps(k[w], _mm512_set1_ps(FTV_LN2_HI)));
        r[w] = _mm512_sub_ps(r[w], _mm512_mul_ps(k[w], _mm512_set1_ps(FTV_LN2_LO)));
        z[w] = _mm512_mul_ps(r[w], r[w]);
        p[w] = _mm512_set1_ps(FTV_EXP_P0);
    }
    const float coef[5] = {FTV_EXP_P1, FTV_EXP_P2, FTV_EXP_P3, FTV_EXP_P4, FTV_EXP_P5};
    for (int i = 0; i < 5; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) p[w] = _mm512_add_ps(_mm512_mul_ps(p[w], r[w]), _mm512_set1_ps(coef[i]));
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        p[w] = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p[w], z[w]), r[w]), _mm512_set1_ps(1.0f));
        const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k[w]), _mm512_set1_epi32(127)), 23);
        x[w] = _mm512_mul_ps(p[w], _mm512_castsi512_ps(e));
    }
}

/* erf8 on 16 lanes. */
INLINE512 void erf16(__m512 *x, const int n) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 t[ERF_WAYS], z[ERF_WAYS], pa[ERF_WAYS], pb[ERF_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        t[w] = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x[w])));
        z[w] = _mm512_mul_ps(t[w], t[w]);
        pa[w] = _mm512_set1_ps(ftv_erf_a[0]);
        pb[w] = _mm512_set1_ps(ftv_erf_b[0]);
    }
    for (int i = 1; i < FTV_ERF_A_N; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) pa[w] = _mm512_add_ps(_mm512_mul_ps(pa[w], z[w]), _mm512_set1_ps(ftv_erf_a[i]));
#pragma GCC unroll 4
    for (int w = 0; w < n; w++)
        z[w] = _mm512_sub_ps(_mm512_min_ps(_mm512_set1_ps(FTV_ERF_CLAMP), t[w]), _mm512_set1_ps(FTV_ERF_MID));
    for (int i = 1; i < FTV_ERF_B_N; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) pb[w] = _mm512_add_ps(_mm512_mul_ps(pb[w], z[w]), _mm512_set1_ps(ftv_erf_b[i]));
    exp16(pb, n);
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        const __m512 ra = _mm512_add_ps(t[w], _mm512_mul_ps(t[w], pa[w]));
        const __m512 rb = _mm512_sub_ps(_mm512_set1_ps(1.0f), pb[w]);
        const __m512 r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t[w], _mm512_set1_ps(FTV_ERF_SPLIT), _CMP_LT_OQ), rb, ra);
        x[w] = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(sign, _mm512_castps_si512(x[w]))));
    }
}

static AVX512 void avx512_gelu(float *x, int n) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 rsqrt2 = _mm512_set1_ps(0.70710678118654752f);
    int j = 0;
    for (; j + 16 * ERF_WAYS <= n; j += 16 * ERF_WAYS) {
        __m512 v[ERF_WAYS], e[ERF_WAYS];
#pragma GCC unroll 4
        for (int w = 0; w < ERF_WAYS; w++) {
            v[w] = _mm512_loadu_ps(x + j + 16 * w);
            e[w] = _mm512_mul_ps(v[w], rsqrt2);
        }
        erf16(e, ERF_WAYS);
#pragma GCC unroll 4
        for (int w = 0; w < ERF_WAYS; w++)
            _mm512_storeu_ps(x + j + 16 * w, _mm512_mul_ps(_mm512_mul_ps(half, v[w]), _mm512_add_ps(one, e[w])));
    }
    avx2_gelu(x + j, n - j);
}

/* softmax8 with exp on 16 lanes: lane l of the 8-lane sum still adds x[l], x[l + 8], ... in
 * order (the low half of each 16, then the high half). */
static AVX512 void softmax16(float *x, int n) {
    const int n16 = n - n % 16, n8 = n - n % 8;
    __m512 mv = _mm512_set1_ps(x[0]);
    int j = 0;
    for (; j < n16; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(x + j));
    /* max is exact in any order (the sign of a zero maximum changes no x - max) */
    float mx = hmax(_mm256_max_ps(_mm512_castps512_ps256(mv), _mm512_extractf32x8_ps(mv, 1)));
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    const __m512 mv16 = _mm512_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    __m512 e[EXP_WAYS];
    for (j = 0; j + 16 * EXP_WAYS <= n16; j += 16 * EXP_WAYS) {
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) e[w] = _mm512_sub_ps(_mm512_loadu_ps(x + j + 16 * w), mv16);
        exp16(e, EXP_WAYS);
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) {
            _mm512_storeu_ps(x + j + 16 * w, e[w]);
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e[w]));
            acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps(e[w], 1));
        }
    }
    for (; j < n16; j += 16) {
        e[0] = _mm512_sub_ps(_mm512_loadu_ps(x + j), mv16);
        exp16(e, 1);
        _mm512_storeu_ps(x + j, e[0]);
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e[0]));
        acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps(e[0], 1));
    }
    for (; j < n8; j += 8) {
        __m256 e8 = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_set1_ps(mx));
        exp8(&e8, 1);
        _mm256_storeu_ps(x + j, e8);
        acc = _mm256_add_ps(acc, e8);
    }
    float part[FTV_LANES];
    _mm256_storeu_ps(part, acc);
    for (; j < n; j++) {
        x[j] = ftv_expf(x[j] - mx);
        part[j % FTV_LANES] += x[j];
    }
    const float inv = 1.0f / ftv_lanes_sum(part);
    const __m512 iv = _mm512_set1_ps(inv);
    for (j = 0; j < n16; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), iv));
    for (; j < n; j++) x[j] *= inv;
}

/* scores() on 16 keys a vector: NQ queries x NV vectors of keys from j0, the last vector's
 * lanes cut by `last` (keys past the end: neither loaded nor stored). */
INLINE512 void scores16(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int j0, const int nv,
                        __mmask16 last, float scale, float *sc) {
    __m512 acc[FTV_ATTEND_QUERIES][4];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) acc[i][u] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kd = kt + (size_t)d * ldk + j0;
        __m512 kv[4];
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            kv[u] = u + 1 < nv ? _mm512_loadu_ps(kd + 16 * u) : _mm512_maskz_loadu_ps(last, kd + 16 * u);
            PIN1(kv[u]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const __m512 qd = _mm512_set1_ps(qb[(size_t)i * hd + d]);
#pragma GCC unroll 4
            for (int u = 0; u < nv; u++) {
                acc[i][u] = _mm512_add_ps(acc[i][u], _mm512_mul_ps(qd, kv[u]));
                PIN1(acc[i][u]);
            }
        }
    }
    const __m512 s = _mm512_set1_ps(scale);
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            float *dst = sc + (size_t)i * ldk + j0 + 16 * u;
            if (u + 1 < nv) _mm512_storeu_ps(dst, _mm512_mul_ps(acc[i][u], s));
            else _mm512_mask_storeu_ps(dst, last, _mm512_mul_ps(acc[i][u], s));
        }
}

INLINE512 void scores16_all(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int tokens,
                            float scale, float *sc) {
    int j0 = 0; /* keys in blocks of 64, then what is left in 1 to 4 vectors */
    for (; j0 + 64 <= tokens; j0 += 64) scores16(qb, nq, kt, ldk, hd, j0, 4, 0xFFFF, scale, sc);
    const int left = tokens - j0, nv = (left + 15) / 16;
    const __mmask16 last = (__mmask16)(left % 16 ? (1u << left % 16) - 1 : 0xFFFFu);
    switch (nv) {
    case 4: scores16(qb, nq, kt, ldk, hd, j0, 4, last, scale, sc); break;
    case 3: scores16(qb, nq, kt, ldk, hd, j0, 3, last, scale, sc); break;
    case 2: scores16(qb, nq, kt, ldk, hd, j0, 2, last, scale, sc); break;
    case 1: scores16(qb, nq, kt, ldk, hd, j0, 1, last, scale, sc); break;
    default: break;
    }
}

/* weigh_values() for NQ queries x NV vectors of 16 head dimensions. */
INLINE512 void weigh_values16(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens,
                              int d0, const int nv, float *out, size_t ldo) {
    __m512 acc[FTV_ATTEND_QUERIES][4];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) acc[i][u] = _mm512_setzero_ps();
    for (int j = 0; j < tokens; j++) {
        const float *vj = v + (size_t)j * ldv + d0;
        __m512 vv[4];
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            vv[u] = _mm512_loadu_ps(vj + 16 * u);
            PIN1(vv[u]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const __m512 pj = _mm512_set1_ps(p[(size_t)i * ldp + j]);
#pragma GCC unroll 4
            for (int u = 0; u < nv; u++) {
                acc[i][u] = _mm512_add_ps(acc[i][u], _mm512_mul_ps(pj, vv[u]));
                PIN1(acc[i][u]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) _mm512_storeu_ps(out + (size_t)i * ldo + d0 + 16 * u, acc[i][u]);
}

INLINE512 void weigh_values16_all(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens,
                                  int hd, float *out, size_t ldo) {
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) weigh_values16(p, ldp, nq, v, ldv, tokens, d0, 4, out, ldo);
    for (; d0 < hd; d0 += 16) weigh_values16(p, ldp, nq, v, ldv, tokens, d0, 1, out, ldo);
}

/* avx2_attend on 16 lanes: scores of 4 queries x 64 keys, weighted values of 4 queries x 64
 * head dimensions per step (16 accumulators of the 32 registers). */
static AVX512 void avx512_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv,
                                 int tokens, int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    if (hd % 16) {
        avx2_attend(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch);
        return;
    }
    float *sc = scratch, *qb = scratch + (size_t)FTV_ATTEND_QUERIES * ldk;
    for (int i0 = 0; i0 < nq; i0 += FTV_ATTEND_QUERIES) {
        const int nb = min_int(FTV_ATTEND_QUERIES, nq - i0);
        for (int i = 0; i < nb; i++) /* out may overwrite q */
            memcpy(qb + (size_t)i * hd, q + (size_t)(i0 + i) * ldq, (size_t)hd * sizeof(float));
        float *o = out + (size_t)i0 * ldo;
        switch (nb) {
#define QUERIES(N)                                                                                              \
    case N:                                                                                                     \
        scores16_all(qb, N, kt, (size_t)ldk, hd, tokens, scale, sc);                                           \
        for (int i = 0; i < N; i++) softmax16(sc + (size_t)i * ldk, tokens);                                   \
        weigh_values16_all(sc, (size_t)ldk, N, v, (size_t)ldv, tokens, hd, o, (size_t)ldo);                   \
        break;
            QUERIES(4) QUERIES(3) QUERIES(2) QUERIES(1)
#undef QUERIES
        default: break;
        }
    }
}

static const ftv_kernels kernels_avx2 = {
    "avx2",           avx2_gemm_scratch, avx2_repack, avx2_tgemm, avx2_patch_gemm,
    avx2_rmsnorm_quant, avx2_layernorm,  avx2_gelu,   avx2_attend,
};

/* The same kernels with the GEMMs, attention, GELU and the quantizer on AVX-512 (VNNI). */
static const ftv_kernels kernels_avx512 = {
    "avx512",           avx2_gemm_scratch, avx2_repack,  avx512_tgemm, avx512_patch_gemm,
    avx512_rmsnorm_quant, avx2_layernorm, avx512_gelu, avx512_attend,
};

const ftv_kernels *ftv_kernels_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") ? &kernels_avx2 : NULL;
}

const ftv_kernels *ftv_kernels_avx512(void) {
    __builtin_cpu_init();
    return ftv_kernels_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")
               ? &kernels_avx512
               : NULL;
}

#else
typedef int ftv_kernels_avx2_unused; /* ISO C: a translation unit declares something */
#endif
