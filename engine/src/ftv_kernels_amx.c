/* The AMX kernel set (x86 CPUs with AMX-TILE, -INT8, -BF16, AVX512_BF16 and AVX-512 VNNI): the
 * ternary GEMM on tdpbsud tiles, the fast mode's attention on tdpbf16ps tiles, everything else as
 * the AVX-512 set (ftv_kernels_x86.h on 16 lanes, the same repacked weights). ftv_kernels.c picks
 * it first where the CPU and the OS allow it: it ran bit-identical to the scalar set on an Intel
 * Xeon with AMX (docs/engine.md). Built with -DFTV_AMX_EMULATE, the tile instructions are C
 * (ftv_amx.h) and the set runs, slowly, on any AVX-512 CPU with AVX512_BF16: that is how the
 * tests check it on CPUs without AMX.
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

/* 32-row panels for every k: with 16 rows each activation tile would feed one product, not two
 * (DeiT-III-S fc2, k = 1536: 504 -> 829 GMAC/s, bench_gemm) */
#define PANEL_MAX (48 * 1024 + 32)
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
 * column groups past the last whole chunk of 16 first through the VNNI tile). Tokens short of a
 * block (197 = 12 x 16 + 5): when k is whole chunks and the block can reach back over the tokens
 * before it, a block of 16 ending at the last token, its last rows kept (the sums of the others
 * are already in acc or in an earlier tile's); otherwise the VNNI tile. */
static AMX_FN void dot_tile(const uint8_t *panel, int nrg, const int8_t *a, size_t lda, int g0, int g1, int nt,
                             int32_t *acc, int back) {
    const int nw = (nrg + 1) / 2, chunks = (g1 - g0) / AMX_GROUPS, g2 = g0 + AMX_GROUPS * chunks;
    const int nb = chunks ? nt / AMX_TOKENS : 0, tiled = nb * AMX_TOKENS, rest = nt - tiled;
    if (rest && chunks && g2 == g1 && back + nt >= AMX_TOKENS) {
        int32_t last[AMX_TOKENS * 32];
        const int8_t *a1 = a + (ptrdiff_t)(nt - AMX_TOKENS) * (ptrdiff_t)lda;
        if (nw == 1) amx_blocks(panel, nrg, 1, a1, lda, g0, chunks, 1, 0, last);
        else amx_blocks(panel, nrg, 2, a1, lda, g0, chunks, 1, 0, last);
        memcpy(acc + 16 * nw * tiled, last + 16 * nw * (AMX_TOKENS - rest), sizeof(int32_t) * 16 * (size_t)(nw * rest));
    } else
        for (int t = tiled; t < nt; t += VNNI_TOKENS)
            vnni_dot_tile(panel, nrg, a + (size_t)t * lda, lda, g0, g1, nt - t < VNNI_TOKENS ? nt - t : VNNI_TOKENS,
                          acc + 16 * nw * t, 0);
    if (!nb) return;
    for (int t = 0; g2 < g1 && t < tiled; t += VNNI_TOKENS)
        vnni_dot_tile(panel, nrg, a + (size_t)t * lda, lda, g2, g1, tiled - t < VNNI_TOKENS ? tiled - t : VNNI_TOKENS,
                      acc + 16 * nw * t, 0);
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

/* ---- the fast mode's attention on tdpbf16ps tiles ---------------------------------------
 * Scores and weighted values on AMX-BF16, the softmax between them on AVX-512 as in the other
 * sets' fast mode. The weighted values as ftv_attend_bf16.h's: probabilities and values rounded to
 * bf16, paired along the keys, sums in fp32. The scores stay near fp32: each query and key is
 * split into two bf16, hi = bf16(x) and lo = bf16(x - hi), and q.k = ql.kh + qh.kl + qh.kh (the
 * ql.kl term, ~2^-16 of a product, left out): three tile products for ~16 significant bits, where
 * one product of bf16 (8 bits) moved a digit's class (ftv_attend_bf16.h). For each block of 16
 * queries:
 *   scores   a tile of 16 queries x 16 keys += A (16 queries x 32 dimensions, bf16) . B (16 pairs of
 *            dimensions x 16 keys: the keys as pairs of two dimensions)
 *   values   a tile of 16 queries x 16 dimensions += A (16 queries x 32 keys' probabilities) . B
 *            (16 pairs of keys x 16 dimensions: bf16_attend's pairs of values)
 * Heads whose dimension is not a multiple of 32 (the tiles' 32 bf16) take bf16_attend. */
#define AMX_BF16_FN                                                                                             \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,avx2,f16c,fma,amx-tile,"      \
                          "amx-int8,amx-bf16")))
#define AMX_QUERIES 16

typedef struct { /* amx_attend's scratch; kp: keys rounded up to 16, kp32: to 32 */
    uint32_t *kh, *kl; /* (hd / 2, kp) pairs of dimensions of each key, hi and lo */
    uint32_t *vp;      /* (kp32 / 2, hd) pairs of keys of each dimension (zero past the keys) */
    float *sc;         /* (16, kp) scores, then probabilities */
    uint32_t *pp;      /* (16, kp32 / 2) pairs of probabilities (zero past the keys) */
    uint16_t *qh, *ql; /* (16, hd) queries, hi and lo */
    float *ob;         /* (16, hd) outputs */
} amx_att;

static size_t amx_attend_layout(int hd, int tokens, void *scratch, amx_att *s) {
    const size_t kp = (size_t)(tokens + 15) & ~(size_t)15, kp32 = (size_t)(tokens + 31) & ~(size_t)31;
    uint32_t *w = scratch;
    const size_t kh = 0, kl = kh + (size_t)hd / 2 * kp, vp = kl + (size_t)hd / 2 * kp, sc = vp + kp32 / 2 * hd,
                 pp = sc + AMX_QUERIES * kp, qh = pp + AMX_QUERIES * kp32 / 2, ql = qh + AMX_QUERIES * (size_t)hd / 2,
                 ob = ql + AMX_QUERIES * (size_t)hd / 2, end = ob + AMX_QUERIES * (size_t)hd;
    if (s)
        *s = (amx_att){.kh = w + kh, .kl = w + kl, .vp = w + vp, .sc = (float *)(w + sc), .pp = w + pp,
                       .qh = (uint16_t *)(w + qh), .ql = (uint16_t *)(w + ql), .ob = (float *)(w + ob)};
    return end;
}

static size_t amx_attend_scratch(int ldk, int hd, int tokens) {
    return hd % 32 ? bf16_attend_scratch(ldk, hd, tokens) : amx_attend_layout(hd, tokens, NULL, NULL);
}

/* x rounded to bf16 (to nearest even, as vcvtneps2bf16), as fp32 */
static inline __attribute__((always_inline)) BF16 __m512 bf16_round(__m512 x) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)), 16));
}

/* The keys (kt: hd rows of ldk, `tokens` used) as pairs of dimensions, hi and lo; the values as
 * pairs of keys. */
static BF16 void amx_prepare_head(const float *kt, int ldk, const float *v, int ldv, int tokens, int hd,
                                  const amx_att *s) {
    const int kp = (tokens + 15) & ~15, kp32 = (tokens + 31) & ~31;
    for (int r = 0; r < hd / 2; r++)
        for (int n = 0; n < kp; n += 16) {
            const vmask m = lanes_left(tokens, n);
            const __m512 a = _mm512_maskz_loadu_ps(m, kt + (size_t)2 * r * ldk + n);
            const __m512 b = _mm512_maskz_loadu_ps(m, kt + (size_t)(2 * r + 1) * ldk + n);
            _mm512_storeu_si512(s->kh + (size_t)r * kp + n, pair_bf16(a, b));
            _mm512_storeu_si512(s->kl + (size_t)r * kp + n,
                                pair_bf16(_mm512_sub_ps(a, bf16_round(a)), _mm512_sub_ps(b, bf16_round(b))));
        }
    value_pairs(v, ldv, tokens, hd, kp32 / 2, s->vp); /* zero up to a whole tile of 32 keys */
}

/* nb queries (rows of ldq) as hi and lo bf16; the rows past them zero */
static BF16 void amx_prepare_queries(const float *q, int ldq, int nb, int hd, const amx_att *s) {
    for (int i = 0; i < AMX_QUERIES; i++)
        for (int d = 0; d < hd; d += 16) {
            const __m512 x = i < nb ? _mm512_loadu_ps(q + (size_t)i * ldq + d) : _mm512_setzero_ps();
            _mm256_storeu_si256((__m256i *)(s->qh + (size_t)i * hd + d), (__m256i)_mm512_cvtneps_pbh(x));
            _mm256_storeu_si256((__m256i *)(s->ql + (size_t)i * hd + d),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(x, bf16_round(x))));
        }
}

/* sc: the 16 queries' unscaled scores against kp keys, two tiles of keys at a time. Tiles: 0, 1
 * scores; 4, 5 queries hi, lo; 2, 3 and 6, 7 keys hi, lo. */
static AMX_BF16_FN void amx_scores(const amx_att *s, int hd, int kp) {
    const size_t lq = (size_t)hd * 2, lk = (size_t)kp * 4; /* bytes a row */
    const int tiles = kp / 16;
    for (int j = 0; j < tiles; j += 2) {
        const int two = j + 1 < tiles;
        AMX_ZERO(0);
        if (two) AMX_ZERO(1);
        for (int d = 0; d < hd; d += 32) {
            const uint32_t *kh = s->kh + (size_t)d / 2 * kp + 16 * j, *kl = s->kl + (size_t)d / 2 * kp + 16 * j;
            AMX_LOAD(4, s->qh + d, lq);
            AMX_LOAD(5, s->ql + d, lq);
            AMX_LOAD(2, kh, lk);
            AMX_LOAD(3, kl, lk);
            AMX_DPBF16PS(0, 5, 2);
            AMX_DPBF16PS(0, 4, 3);
            if (two) {
                AMX_LOAD(6, kh + 16, lk);
                AMX_LOAD(7, kl + 16, lk);
                AMX_DPBF16PS(1, 5, 6);
                AMX_DPBF16PS(1, 4, 7);
                AMX_DPBF16PS(1, 4, 6);
            }
            AMX_DPBF16PS(0, 4, 2);
        }
        AMX_STORE(0, s->sc + 16 * j, lk);
        if (two) AMX_STORE(1, s->sc + 16 * j + 16, lk);
    }
}

/* ob: the 16 queries' weighted values, 64 dimensions (4 tiles, 0-3) at a time, or the last 32
 * (2 tiles); tile 4 the probabilities, 5-7 the values. */
static AMX_BF16_FN void amx_values(const amx_att *s, int hd, int kp32) {
    const size_t lp = (size_t)kp32 / 2 * 4, lv = (size_t)hd * 4;
    for (int d0 = 0; d0 < hd; d0 += 64) {
        const int four = d0 + 64 <= hd;
        AMX_ZERO(0);
        AMX_ZERO(1);
        if (four) {
            AMX_ZERO(2);
            AMX_ZERO(3);
        }
        for (int m = 0; m < kp32 / 2; m += 16) { /* 32 keys */
            const uint32_t *vm = s->vp + (size_t)m * hd + d0;
            AMX_LOAD(4, s->pp + m, lp);
            AMX_LOAD(5, vm, lv);
            AMX_LOAD(6, vm + 16, lv);
            AMX_DPBF16PS(0, 4, 5);
            AMX_DPBF16PS(1, 4, 6);
            if (four) {
                AMX_LOAD(7, vm + 32, lv);
                AMX_LOAD(5, vm + 48, lv);
                AMX_DPBF16PS(2, 4, 7);
                AMX_DPBF16PS(3, 4, 5);
            }
        }
        AMX_STORE(0, s->ob + d0, lv);
        AMX_STORE(1, s->ob + d0 + 16, lv);
        if (four) {
            AMX_STORE(2, s->ob + d0 + 32, lv);
            AMX_STORE(3, s->ob + d0 + 48, lv);
        }
    }
}

static AMX_BF16_FN void amx_tiles_on(void) { AMX_LOADCONFIG(&amx_config); }
static AMX_BF16_FN void amx_tiles_off(void) { AMX_RELEASE(); }

/* A row of scores scaled in place; their maximum. */
INLINE float scale_max(float *row, int n, float scale) {
    const vf s = vf_set1(scale);
    vf m = vf_set1(-INFINITY);
    for (int j = 0; j < n; j += FTV_VL) {
        const vmask k = lanes_left(n, j);
        const vf x = vf_mul(vf_load_mask(row + j, k), s);
        vf_store_mask(row + j, k, x);
        m = vf_max_mask(m, k, x);
    }
    return vf_hmax(m);
}

static BF16 void amx_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                            int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    if (hd % 32) {
        bf16_attend(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch);
        return;
    }
    const int kp = (tokens + 15) & ~15, kp32 = (tokens + 31) & ~31;
    amx_att s;
    amx_attend_layout(hd, tokens, scratch, &s);
    amx_prepare_head(kt, ldk, v, ldv, tokens, hd, &s);
    memset(s.pp, 0, sizeof(uint32_t) * AMX_QUERIES * (size_t)kp32 / 2);
    amx_tiles_on();
    for (int i0 = 0; i0 < nq; i0 += AMX_QUERIES) {
        const int nb = min_int(AMX_QUERIES, nq - i0);
        amx_prepare_queries(q + (size_t)i0 * ldq, ldq, nb, hd, &s); /* before out, which may overwrite q */
        amx_scores(&s, hd, kp);
        for (int i = 0; i < nb; i++) {
            float *row = s.sc + (size_t)i * kp;
            softmax_v(row, tokens, scale_max(row, tokens, scale), 1);
            row_pairs(row, tokens, s.pp + (size_t)i * kp32 / 2);
        }
        amx_values(&s, hd, kp32);
        for (int i = 0; i < nb; i++)
            memcpy(out + (size_t)(i0 + i) * ldo, s.ob + (size_t)i * hd, sizeof(float) * (size_t)hd);
    }
    amx_tiles_off();
}

/* The exact table, and the fast one: fused multiply-adds in GELU and the softmax, attention on
 * tdpbf16ps tiles. */
const ftv_kernels ftv_kernels_amx_set = X86_KERNELS("amx", 0, &ftv_kernels_amx_set, x86_gelu, x86_attend);
const ftv_kernels ftv_kernels_amx_fast =
    X86_KERNELS_ATTEND("amx", 1, &ftv_kernels_amx_set, x86_gelu_fast, amx_attend, amx_attend_scratch);

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int ftv_kernels_amx_unused; /* ISO C: a translation unit declares something */
#endif
