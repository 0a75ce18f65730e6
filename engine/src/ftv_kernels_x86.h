/* The kernels the AVX2 and AVX-512 sets share, written once in the vocabulary of ftv_simd.h
 * for FTV_VL = 8 or 16 lanes: the GEMM drivers and epilogues around each set's own dot-product
 * tile, the patch embedding, RMSNorm + int8 quantizer, LayerNorm, softmax, GELU, attention.
 * Included once by ftv_kernels_avx2.c and once by ftv_kernels_avx512.c, after they define:
 *
 *   FTV_VL                 lanes of a float vector, and rows of an int32 accumulator vector
 *   TILE_TOKENS            most tokens of one register tile of the GEMM
 *   TILE_BALANCED          (optional, default 1) 0: token tiles all full but the last
 *   ATT_KEY_VECS           key vectors per step of the attention scores (4 queries each)
 *   ATT_PV_QUERIES         queries per step of the weighted values (4 vectors of dimensions)
 *   panel_rgs(k)           row groups (of 8 rows) per decoded panel for rows of k codes
 *   decode_panel(...)      the repacked codes of row groups [rg, rg + nrg) into a panel
 *   dot_tile(...)          the integer sums of nt tokens against a panel (see below); it may
 *                          read the `back` token rows before its first (the AMX set does)
 *
 * Results are bit-identical to the scalar kernels (ftv_kernels_scalar.c): integer sums exactly,
 * float operations one by one in the same order (reductions in the FTV_LANES order, exp and erf
 * from ftv_math.h, no fused multiply-add). engine/tests/test_kernels.c compares them. */
#ifndef FTV_KERNELS_X86_H
#define FTV_KERNELS_X86_H

#include <math.h>
#include <string.h>

#include "ftv_kernels.h"
#include "ftv_math.h"
#include "ftv_simd.h"

#ifndef TILE_BALANCED
#define TILE_BALANCED 1
#endif

#define INLINE static inline __attribute__((always_inline))
#define RED (FTV_LANES / FTV_VL) /* vectors of one reduction's partial sums */

_Static_assert(NORM_ROWS <= FTV_NORM_ROWS, "norm_quant's scratch rows");

static int min_int(int a, int b) { return a < b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

/* GCC keeps a loop-carried vector in a register only if told: without this empty asm it keeps
 * arrays of accumulators in memory, or hoists all broadcasts ahead and spills half the
 * accumulators (measured: the GEMM 1.7x slower, attention 2x). */
#define PIN(a) __asm__ volatile("" : "+v"(a))

/* ---- the ternary GEMM: drivers and epilogues ----------------------------------------- */

/* The repacked layout (ftv_x86_repack): row groups of FTV_RG rows, each ceil(k / 16) blocks of
 * 32 bytes. A panel of nrg row groups, decoded: per column group (4 codes) 32 * nrg bytes, row
 * r of row group i at byte 32 i + 4 r, codes c = q + 1; then 32 bytes of zeros that the last
 * 64-byte load of an odd number of row groups reads (into lanes no epilogue stores). */
static int blocks_of(int k) { return (k + 15) / 16; }
static size_t panel_bytes(int k, int rgs) { return (size_t)rgs * (size_t)blocks_of(k) * 4 * 32 + 32; }

/* Per-thread scratch: the largest panel of any GEMM with rows of up to k codes (panel_rgs may
 * give a shorter row more row groups), then FTV_MAX_CHANNELS words a token: the per-channel
 * activation sums of the patch embedding, or the GEMM's reciprocals (token_reciprocals). */
static size_t x86_gemm_scratch(int k, int tokens) {
    size_t panel = 0;
    for (int rgs = 1; rgs <= PANEL_RGS_MAX; rgs++) { /* the longest rows that get rgs row groups */
        int lo = 1, hi = k;                          /* panel_rgs falls as k grows: bisect */
        while (lo < hi) {
            const int mid = lo + (hi - lo + 1) / 2;
            if (panel_rgs(mid) >= rgs) lo = mid;
            else hi = mid - 1;
        }
        if (panel_rgs(lo) >= rgs && panel_bytes(lo, rgs) > panel) panel = panel_bytes(lo, rgs);
    }
    return panel + (size_t)tokens * FTV_MAX_CHANNELS * sizeof(int32_t);
}

/* The sweep every GEMM shares: rows [o0, o1) rgs row groups at a time, each panel decoded once,
 * then tiles of up to `most` tokens over it, of balanced sizes (25 tokens: 9 + 8 + 8, not
 * 12 + 12 + 1), or with TILE_BALANCED 0 all full but the last (the AMX set's tiles take 16
 * tokens or none). tile(ctx, panel, rg, nrg, t0, nt) is inlined (measured: an indirect call costs 5%). */
typedef void (*tile_fn)(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt);

INLINE void sweep(const ftv_tmat *w, int o0, int o1, int tokens, uint8_t *panel, const int rgs, const int most,
                  tile_fn tile, void *ctx) {
    const int tiles = (tokens + most - 1) / most, blocks = blocks_of(w->k);
    const uint8_t *rp = (const uint8_t *)w->repack;
    const int rg1 = (o1 + FTV_RG - 1) / FTV_RG;
    for (int rg = o0 / FTV_RG; rg < rg1; rg += rgs) {
        const int nrg = min_int(rgs, rg1 - rg);
        decode_panel(rp, blocks, rg, nrg, panel);
        /* the next panel's codes, a share before each tile: in cache when it is decoded */
        const uint8_t *next = rp + (size_t)(rg + nrg) * (size_t)blocks * 32;
        const int lines = rg + nrg < rg1 ? min_int(rgs, rg1 - rg - nrg) * blocks / 2 : 0; /* 64-byte lines */
        for (int i = 0; i < tiles; i++) {
            for (int l = lines * i / tiles; l < lines * (i + 1) / tiles; l++) __builtin_prefetch(next + 64 * (size_t)l);
            const int t0 = TILE_BALANCED ? (int)((long)tokens * i / tiles) : i * most;
            const int t1 = TILE_BALANCED ? (int)((long)tokens * (i + 1) / tiles) : min_int(tokens, t0 + most);
            tile(ctx, panel, rg, nrg, t0, t1 - t0);
        }
    }
}

/* Accumulator vectors of FTV_VL rows that nrg row groups fill. */
#define NVEC(nrg) (((nrg) * FTV_RG + FTV_VL - 1) / FTV_VL)

typedef struct {
    const ftv_tmat *w;
    int o0, o1, ldt, ldo, accumulate;
    const int8_t *xq;
    const float *xs;
    const float *rcp; /* token_reciprocals' */
    const int32_t *xsum;
    float *y;
    const ftv_fvec *gamma; /* NULL unless accumulating with LayerScale */
} tgemm_job;

/* rcp[t] = 1 / (xs[t] scale) rounded, for n tokens: quotient's y; 0 where the divisor's magnitude
 * lies outside [2^-64, 2^64) or is NaN (that token's outputs take the division). */
static void token_reciprocals(const float *xs, float scale, int n, float *rcp) {
    const vf sv = vf_set1(scale), lo = vf_set1(0x1p-64f), hi = vf_set1(0x1p64f), one = vf_set1(1.0f);
    for (int t = 0; t < n; t += FTV_VL) {
        const vmask m = vmask_first(n - t < FTV_VL ? n - t : FTV_VL);
        const vf d = vf_mul(vf_load_mask(xs + t, m), sv), a = vf_abs(d);
        const vf ok = vf_select_lt(a, lo, vf_zero(), vf_select_lt(a, hi, one, vf_zero())); /* NaN: 0 */
        vf_store_mask(rcp + t, m, vf_mul(ok, vf_div(one, vf_select_lt(ok, one, one, d))));
    }
}

/* A token's divisor, its reciprocal and whether it divides, as the epilogues take them. */
#define TOKEN_DIVISOR(j, t)                                                                                     \
    const vf den = vf_set1((j)->xs[t] * (j)->w->scale), rcp = vf_set1((j)->rcp[t]);                           \
    const int divide = (j)->rcp[t] == 0.0f

/* x / d rounded as vdivps rounds it. divide 0: without vdivps (~10 cycles a vector on the Intel
 * Xeon of docs/engine.md, against two fused multiply-adds a cycle), from y = 1 / d rounded: q = x y, then one correction with the
 * residual r = x - d q, which a fused multiply-add gives exactly: q + r y rounded is x / d rounded
 * (Markstein's theorem: y within half an ulp of 1 / d, q within one ulp of x / d, nothing over-
 * or underflowing, which |d| in [2^-64, 2^64) and integer x, |x| < 2^31, ensure). */
INLINE vf quotient(vf x, vf d, vf y, int divide) {
    if (divide) return vf_div(x, d);
    const vf q = vf_mul(x, y);
    return vf_fma(vf_fnma(d, q, x), y, q);
}

/* An epilogue's FTV_VL values from integer sums a[] of the unsigned codes: the token's activation
 * sum s subtracted (sum c a - sum a = sum q a), converted, divided by d (quotient). */
INLINE vf acc_value(const int32_t *a, vi s, vf d, vf y, int divide) {
    return quotient(vi_to_f32(vi_sub(vi_load(a), s)), d, y, divide);
}

/* The epilogue of tgemm_store where the rows are whole vectors of each token's contiguous output:
 * nv vectors a token and what to do with a value (mode 0: store it, 1: add it, 2: add gamma
 * times it) fixed, so that the loop is a token's few vector operations. */
INLINE void store_rows(const tgemm_job *j, const int32_t *acc, int rg, int t0, int nt, const int nv, const int mode) {
    vf g[NVEC(PANEL_RGS_MAX)];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) g[v] = mode == 2 ? vf_load_fvec(j->gamma, rg * FTV_RG + v * FTV_VL) : vf_zero();
    float *dst = j->y + (size_t)t0 * j->ldt + (rg * FTV_RG - j->o0);
    for (int t = 0; t < nt; t++, dst += j->ldt) {
        TOKEN_DIVISOR(j, t0 + t);
        const vi s = vi_set1(j->xsum[t0 + t]);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const vf val = acc_value(acc + (t * nv + v) * FTV_VL, s, den, rcp, divide);
            float *o = dst + v * FTV_VL;
            if (mode == 0) vf_store(o, val);
            else if (mode == 1) vf_store(o, vf_add(vf_load(o), val)); /* 1 * val = val */
            else vf_store(o, vf_add(vf_load(o), vf_mul(g[v], val)));
        }
    }
}

/* y for tokens [t0, t0 + nt) and row groups [rg, rg + nrg) from their integer sums
 * acc[t * NVEC(nrg) * FTV_VL + v * FTV_VL + lane] of the unsigned codes: subtract the token's
 * activation sum, divide by its scale times the matrix's, store (or add, times LayerScale). */
INLINE void tgemm_store(const tgemm_job *j, const int32_t *acc, int rg, int nrg, int t0, int nt) {
    const int nv = NVEC(nrg), end = min_int(j->o1, (rg + nrg) * FTV_RG);
    if (j->ldo == 1 && rg * FTV_RG >= j->o0 && end - rg * FTV_RG == nv * FTV_VL) { /* whole vectors of token rows */
        _Static_assert(NVEC(PANEL_RGS_MAX) <= 2, "store_rows' cases");
        const int mode = !j->accumulate ? 0 : !j->gamma ? 1 : 2;
#define STORE_ROWS(NV, MODE)                                                                                   \
    case (NV) * 3 + (MODE): store_rows(j, acc, rg, t0, nt, NV, MODE); return;
        switch (nv * 3 + mode) {
            STORE_ROWS(1, 0) STORE_ROWS(1, 1) STORE_ROWS(1, 2) STORE_ROWS(2, 0) STORE_ROWS(2, 1) STORE_ROWS(2, 2)
        default: break;
        }
#undef STORE_ROWS
    }
    if (j->ldt == 1 && j->ldo != 1 && !j->accumulate && rg * FTV_RG >= j->o0) { /* transposed (attention keys) */
        for (int v = 0; v < nv; v++) {
            const int r0 = rg * FTV_RG + v * FTV_VL, n = min_int(FTV_VL, end - r0); /* rows [r0, r0 + n) */
            for (int tc = 0; tc < nt && n > 0; tc += FTV_VL) { /* FTV_VL tokens, then one transpose */
                const int nc = min_int(FTV_VL, nt - tc);
                vf m[FTV_VL];
#pragma GCC unroll 16
                for (int t = 0; t < FTV_VL; t++) {
                    if (t >= nc) {
                        m[t] = vf_zero();
                        continue;
                    }
                    TOKEN_DIVISOR(j, t0 + tc + t);
                    m[t] = acc_value(acc + ((tc + t) * nv + v) * FTV_VL, vi_set1(j->xsum[t0 + tc + t]), den, rcp, divide);
                }
                vf_transpose(m);
                const vmask mt = vmask_first(nc);
                for (int l = 0; l < n; l++) vf_store_mask(j->y + (size_t)(r0 + l - j->o0) * j->ldo + t0 + tc, mt, m[l]);
            }
        }
        return;
    }
    for (int t = 0; t < nt; t++) {
        TOKEN_DIVISOR(j, t0 + t);
        const vi s = vi_set1(j->xsum[t0 + t]);
        float *yt = j->y + (size_t)(t0 + t) * j->ldt;
        for (int v = 0; v < nv; v++) {
            const int r0 = rg * FTV_RG + v * FTV_VL, n = min_int(FTV_VL, end - r0); /* rows [r0, r0 + n) */
            if (n <= 0) break;
            const vf val = acc_value(acc + (t * nv + v) * FTV_VL, s, den, rcp, divide);
            const vmask m = vmask_first(n);
            if (r0 >= j->o0 && j->ldo == 1) {
                float *dst = yt + (r0 - j->o0);
                if (!j->accumulate) vf_store_mask(dst, m, val);
                else if (!j->gamma) vf_store_mask(dst, m, vf_add(vf_load_mask(dst, m), val)); /* 1 * val = val */
                else vf_store_mask(dst, m, vf_add(vf_load_mask(dst, m), vf_mul(vf_load_fvec_mask(j->gamma, r0, m, n), val)));
                continue;
            }
            if (r0 >= j->o0 && !j->accumulate) { /* transposed output (attention keys) */
                vf_scatter(yt + (size_t)(r0 - j->o0) * j->ldo, (size_t)j->ldo, m, val);
                continue;
            }
            float lane[FTV_VL]; /* rows before o0 */
            vf_store(lane, val);
            for (int r = max_int(r0, j->o0); r < r0 + n; r++) {
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
    int32_t acc[TILE_TOKENS * NVEC(PANEL_RGS_MAX) * FTV_VL];
    dot_tile(panel, nrg, j->xq + (size_t)t0 * k, (size_t)k, 0, k / 4, nt, acc, t0);
    tgemm_store(j, acc, rg, nrg, t0, nt);
}

static void x86_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, const int32_t *xsum,
                      int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma) {
    if (!w->repack) {
        ftv_tgemm_strided(w, o0, o1, xq, xs, xsum, tokens, y, ldt, ldo, scratch, accumulate, gamma);
        return;
    }
    float *rcp = (float *)((uint8_t *)scratch + x86_gemm_scratch(w->k, 0)); /* past the panel */
    token_reciprocals(xs, w->scale, tokens, rcp);
    tgemm_job job = {w,  o0,  o1,   ldt, ldo, accumulate, xq, xs,
                     rcp, xsum, y, accumulate && gamma && gamma->n ? gamma : NULL};
    sweep(w, o0, o1, tokens, (uint8_t *)scratch, panel_rgs(w->k), TILE_TOKENS, tgemm_tile, &job);
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

/* The patch embedding's tile, on panels as the GEMM's: each input channel its own integer sum
 * and scale, summed in float channel by channel. */
INLINE void patch_tile(void *ctx, const uint8_t *panel, int rg, int nrg, int t0, int nt) {
    const patch_job *j = (const patch_job *)ctx;
    const int k = j->w->k, gpc = k / j->chans / 4, nv = NVEC(nrg); /* column groups per input channel */
    int32_t acc[TILE_TOKENS * NVEC(PANEL_RGS_MAX) * FTV_VL];
    vf sum[TILE_TOKENS][NVEC(PANEL_RGS_MAX)];
    for (int t = 0; t < nt; t++)
        for (int v = 0; v < nv; v++) sum[t][v] = vf_zero();
    for (int ch = 0; ch < j->chans; ch++) {
        dot_tile(panel, nrg, j->xq + (size_t)t0 * k, (size_t)k, ch * gpc, (ch + 1) * gpc, nt, acc, t0);
        const vf sc = vf_set1(j->xs[ch]);
        for (int t = 0; t < nt; t++) {
            const vi s = vi_set1(j->asum[(t0 + t) * j->chans + ch]);
            for (int v = 0; v < nv; v++)
                sum[t][v] = vf_add(sum[t][v], acc_value(acc + (t * nv + v) * FTV_VL, s, sc, sc, 1));
        }
    }
    const int end = min_int(j->o1, (rg + nrg) * FTV_RG);
    for (int t = 0; t < nt; t++)
        for (int v = 0; v < nv; v++) {
            const int r0 = rg * FTV_RG + v * FTV_VL, n = min_int(FTV_VL, end - r0);
            if (n <= 0) break;
            float *yt = j->y + (size_t)(t0 + t) * j->ldy;
            if (r0 >= j->o0) {
                const vmask m = vmask_first(n);
                const vf b = j->bias->n ? vf_load_fvec_mask(j->bias, r0, m, n) : vf_zero();
                const vf val = vf_div(sum[t][v], vf_load_fvec_mask(&j->w->row_scale, r0, m, n));
                vf_store_mask(yt + (r0 - j->o0), m, vf_add(vf_mul(val, vf_load_fvec_mask(j->cs, r0, m, n)), b));
                continue;
            }
            float lane[FTV_VL];
            vf_store(lane, sum[t][v]);
            for (int r = j->o0; r < r0 + n; r++) {
                const float b = j->bias->n ? ftv_fvec_get(j->bias, r) : 0.0f;
                yt[r - j->o0] = lane[r - r0] / ftv_fvec_get(&j->w->row_scale, r) * ftv_fvec_get(j->cs, r) + b;
            }
        }
}

/* Sum of n int8 (the correction term of the unsigned codes), FTV_VL at a time. */
static int32_t sum_i8(const int8_t *a, int n) {
    vi acc = vi_zero();
    int j = 0;
    for (; j + FTV_VL <= n; j += FTV_VL) acc = vi_add(acc, vi_load_i8(a + j));
    int32_t s = vi_sum(acc);
    for (; j < n; j++) s += a[j];
    return s;
}

static void x86_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans, int tokens,
                           const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy, void *scratch) {
    const int k = w->k, pc = k / chans; /* codes per input channel */
    if (!w->repack || pc % 4 || pc * chans != k) {
        ftv_patch_gemm(w, o0, o1, xq, xs, chans, tokens, cs, bias, y, ldy, scratch);
        return;
    }
    uint8_t *panel = (uint8_t *)scratch;
    int32_t *asum = (int32_t *)(panel + x86_gemm_scratch(k, 0));
    for (int t = 0; t < tokens; t++)
        for (int ch = 0; ch < chans; ch++) asum[t * chans + ch] = sum_i8(xq + (size_t)t * k + (size_t)ch * pc, pc);
    patch_job job = {w, o0, o1, chans, ldy, xq, xs, asum, cs, bias, y};
    sweep(w, o0, o1, tokens, panel, panel_rgs(k), TILE_TOKENS, patch_tile, &job);
}

/* a * b + c: rounded twice (the exact mode, as the scalar kernels), or once (fused, the fast mode) */
INLINE vf madd(vf a, vf b, vf c, const int fast) { return fast ? vf_fma(a, b, c) : vf_add(vf_mul(a, b), c); }

/* ---- exp and erf (ftv_math.h, the same operations on FTV_VL lanes) -------------------- */

/* n independent vectors at once, their chains interleaved step by step: one chain is ~60
 * cycles of latency, too long for out-of-order execution to overlap on its own. */
#define EXP_WAYS 4
INLINE void exp_v(vf *x, const int n, const int fast) {
    vf k[EXP_WAYS], r[EXP_WAYS], z[EXP_WAYS], p[EXP_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        x[w] = vf_max(vf_set1(FTV_EXP_MIN), vf_min(vf_set1(FTV_EXP_MAX), x[w]));
        k[w] = vf_round(vf_mul(x[w], vf_set1(FTV_LOG2E)));
        r[w] = vf_sub(x[w], vf_mul(k[w], vf_set1(FTV_LN2_HI)));
        r[w] = vf_sub(r[w], vf_mul(k[w], vf_set1(FTV_LN2_LO)));
        z[w] = vf_mul(r[w], r[w]);
        p[w] = vf_set1(FTV_EXP_P0);
    }
    const float coef[5] = {FTV_EXP_P1, FTV_EXP_P2, FTV_EXP_P3, FTV_EXP_P4, FTV_EXP_P5};
    for (int i = 0; i < 5; i++)
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) p[w] = madd(p[w], r[w], vf_set1(coef[i]), fast);
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        p[w] = vf_add(madd(p[w], z[w], r[w], fast), vf_set1(1.0f));
        x[w] = vf_mul(p[w], vi_as_f32(vi_shl(vi_add(vf_to_i32(k[w]), vi_set1(127)), 23)));
    }
}

/* ftv_erff: each lane's interval from 2|x| truncated (past the last one, or NaN: INT_MIN, which
 * the 8-entry lookup reads as interval 0, and the result is 1 there anyway), its coefficients
 * looked up in registers, one polynomial. */
_Static_assert(FTV_ERF_N == 8, "erf_v looks its coefficients up in 8-entry tables");
INLINE void erf_v(vf *x, const int n, const int fast) {
    vf t[EXP_WAYS], u[EXP_WAYS], p[EXP_WAYS];
    vi idx[EXP_WAYS];
    const vf centers = vf_table8(ftv_erf_center);
#pragma GCC unroll 4
    for (int w = 0; w < n; w++) {
        t[w] = vf_abs(x[w]);
        idx[w] = vi_min(vf_trunc_i32(vf_mul(t[w], vf_set1(2.0f))), vi_set1(FTV_ERF_N - 1));
        u[w] = vf_sub(t[w], vf_lookup8(centers, idx[w]));
        p[w] = vf_lookup8(vf_table8(ftv_erf_coef[0]), idx[w]);
    }
#pragma GCC unroll 6
    for (int k = 1; k <= FTV_ERF_DEG; k++) {
        const vf table = vf_table8(ftv_erf_coef[k]);
#pragma GCC unroll 4
        for (int w = 0; w < n; w++) p[w] = madd(p[w], u[w], vf_lookup8(table, idx[w]), fast);
    }
#pragma GCC unroll 4
    for (int w = 0; w < n; w++)
        x[w] = vf_copysign(vf_select_lt(t[w], vf_set1(FTV_ERF_CLAMP), p[w], vf_set1(1.0f)), x[w]);
}

/* ---- norms and the quantizer --------------------------------------------------------- */

/* An int8 code as int32: clamp(rint(v), -128, 127), as ftv_to_int8(rintf(v)). Clamped first, then
 * converted rounding to nearest even (the conversion's rounding, as rintf's): the bounds are
 * integers, so rounding commutes with the clamp, and no separate round is needed. NaN: -128
 * (max(NaN, -128) is -128). */
INLINE vi quant_code(vf v) { return vf_to_i32(vf_min(vf_max(v, vf_set1(-128.0f)), vf_set1(127.0f))); }

/* The lanes [0, n - j) of a vector at element j (none when n <= j). */
INLINE vmask lanes_left(int n, int j) { return vmask_first(n - j < 0 ? 0 : n - j > FTV_VL ? FTV_VL : n - j); }

/* ftv_lanes_sum of the RED accumulators of FTV_LANES partial sums: the same folds. */
INLINE float fold_sum(vf *acc) {
#pragma GCC unroll 4
    for (int w = RED / 2; w >= 1; w /= 2)
#pragma GCC unroll 4
        for (int u = 0; u < w; u++) acc[u] = vf_add(acc[u], acc[u + w]);
    return vf_fold_sum(acc[0]);
}

/* For each of nr rows x + r * ldx (n floats), the sum of f(x[j]) = x[j] - c[r] (sq = 0) or
 * (x[j] - c[r])^2 (sq = 1) in the order of ftv_lanes_sum: RED accumulators a row added to in
 * turn (no add waits for the one before), the rows in lockstep, the last FTV_LANES elements
 * masked (lanes past n keep their sums: no scalar tail). */
INLINE void reduce_rows(const float *x, size_t ldx, const int nr, int n, const float *c, const int sq, float *out) {
    vf acc[NORM_ROWS][RED];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++) acc[r][u] = vf_zero();
    int j = 0;
    for (; j + FTV_LANES <= n; j += FTV_LANES)
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++)
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                const vf d = vf_sub(vf_load(x + r * ldx + j + FTV_VL * u), vf_set1(c[r]));
                acc[r][u] = vf_add(acc[r][u], sq ? vf_mul(d, d) : d);
            }
    if (j < n)
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++) {
            const vmask m = lanes_left(n, j + FTV_VL * u);
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                const vf d = vf_sub(vf_load_mask(x + r * ldx + j + FTV_VL * u, m), vf_set1(c[r]));
                acc[r][u] = vf_add_mask(acc[r][u], m, sq ? vf_mul(d, d) : d);
            }
        }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) out[r] = fold_sum(acc[r]);
}

/* norm_quant on a group of nr (1 to NORM_ROWS) rows in lockstep, so that their chains of
 * dependent steps (sums, square roots, maxima, divisions) overlap, in stages: with a LayerNorm
 * (ln), norm_mean, norm_var, then norm_ln (its output, gamma gv and beta bv as floats, in the
 * group's scratch rows, and their RMSNorm sums of squares), or norm_squares without one; then
 * norm_scale and norm_codes. Every value is the scalar kernels' (ftv_layernorm,
 * ftv_rmsnorm_quant). (Two groups' stages alternated, to fill one group's waits with the other's
 * work, measured no faster: the passes are bound by their instructions, not by those waits.) */
typedef struct {
    const float *x, *h; /* the input rows x + r ldx; the RMSNorm's, h + r ldh (x, or the LayerNorm's output) */
    size_t ldx, ldh;
    float *scratch; /* nr rows of n */
    int8_t *q;
    float *s;
    int32_t *sum;
    float mean[NORM_ROWS], rn[NORM_ROWS], rs[NORM_ROWS]; /* the LayerNorm's mean and factor; the RMSNorm's factor */
} norm_group;

INLINE void norm_mean(norm_group *gr, const int nr, int n) {
    const float zero[NORM_ROWS] = {0.0f};
    reduce_rows(gr->x, gr->ldx, nr, n, zero, 0, gr->mean);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->mean[r] /= (float)n;
}

INLINE void norm_var(norm_group *gr, const int nr, int n, float ln_eps) {
    float var[NORM_ROWS];
    reduce_rows(gr->x, gr->ldx, nr, n, gr->mean, 1, var);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->rn[r] = ftv_norm_factor(var[r], n, ln_eps);
}

/* out = (x - mean) * rn * gamma + beta into scratch, and its squares; the last FTV_LANES masked */
INLINE void norm_ln(norm_group *gr, const int nr, int n, const float *gv, const float *bv, float rms_eps) {
    const float *x = gr->x;
    const size_t ldx = gr->ldx;
    float *scratch = gr->scratch;
    vf mv[NORM_ROWS], rv[NORM_ROWS], acc[NORM_ROWS][RED];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        mv[r] = vf_set1(gr->mean[r]);
        rv[r] = vf_set1(gr->rn[r]);
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++) acc[r][u] = vf_zero();
    }
    int j = 0;
    for (; j + FTV_LANES <= n; j += FTV_LANES)
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++) {
            const int at = j + FTV_VL * u;
            const vf gu = vf_load(gv + at), bu = vf_load(bv + at);
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                const vf o = vf_add(vf_mul(vf_mul(vf_sub(vf_load(x + r * ldx + at), mv[r]), rv[r]), gu), bu);
                vf_store(scratch + (size_t)r * n + at, o);
                acc[r][u] = vf_add(acc[r][u], vf_mul(o, o));
            }
        }
    if (j < n)
#pragma GCC unroll 8
        for (int u = 0; u < RED; u++) {
            const int at = j + FTV_VL * u;
            const vmask m = lanes_left(n, at);
            const vf gu = vf_load_mask(gv + at, m), bu = vf_load_mask(bv + at, m);
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                const vf o = vf_add(vf_mul(vf_mul(vf_sub(vf_load_mask(x + r * ldx + at, m), mv[r]), rv[r]), gu), bu);
                vf_store_mask(scratch + (size_t)r * n + at, m, o);
                acc[r][u] = vf_add_mask(acc[r][u], m, vf_mul(o, o));
            }
        }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->rs[r] = ftv_norm_factor(fold_sum(acc[r]), n, rms_eps);
    gr->h = scratch, gr->ldh = (size_t)n;
}

INLINE void norm_squares(norm_group *gr, const int nr, int n, float rms_eps) {
    const float zero[NORM_ROWS] = {0.0f};
    float ss[NORM_ROWS];
    reduce_rows(gr->x, gr->ldx, nr, n, zero, 1, ss);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->rs[r] = ftv_norm_factor(ss[r], n, rms_eps);
    gr->h = gr->x, gr->ldh = gr->ldx;
}

/* v = h rs g, kept in scratch (in place when h is scratch) for the quantizer, and |v|'s maxima,
 * two a row in turn: the quantizer then multiplies once, not three times; the scales s. */
INLINE void norm_scale(norm_group *gr, const int nr, int n, const ftv_fvec *g, const int f16, float quant_eps) {
    const float *h = gr->h;
    const size_t ldh = gr->ldh;
    float *scratch = gr->scratch;
    vf rr[NORM_ROWS], mx[NORM_ROWS][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        rr[r] = vf_set1(gr->rs[r]);
        mx[r][0] = mx[r][1] = vf_zero();
    }
    int j = 0;
    for (; j + 2 * FTV_VL <= n; j += 2 * FTV_VL)
#pragma GCC unroll 4
        for (int a = 0; a < 2; a++) {
            const vf gj = vf_load_fv(g, j + FTV_VL * a, f16);
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                const vf v = vf_mul(vf_mul(vf_load(h + r * ldh + j + FTV_VL * a), rr[r]), gj);
                vf_store(scratch + (size_t)r * n + j + FTV_VL * a, v);
                mx[r][a] = vf_max(mx[r][a], vf_abs(v));
            }
        }
    for (; j < n; j += FTV_VL) { /* masked lanes read 0: |0| changes no maximum */
        const vmask m = lanes_left(n, j);
        const vf gj = vf_load_fvec_mask(g, j, m, n - j);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const vf v = vf_mul(vf_mul(vf_load_mask(h + r * ldh + j, m), rr[r]), gj);
            vf_store_mask(scratch + (size_t)r * n + j, m, v);
            mx[r][0] = vf_max(mx[r][0], vf_abs(v));
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->s[r] = ftv_quant_scale(vf_hmax(vf_max(mx[r][0], mx[r][1])), quant_eps, gr->rs[r]);
}

/* q = clamp(rint(v s)), 4 vectors a store, and the codes' sums */
INLINE void norm_codes(norm_group *gr, const int nr, int n) {
    const float *scratch = gr->scratch;
    int8_t *q = gr->q;
    vf sv[NORM_ROWS];
    vi total[NORM_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        sv[r] = vf_set1(gr->s[r]);
        total[r] = vi_zero();
    }
    int j = 0;
    for (; j + 4 * FTV_VL <= n; j += 4 * FTV_VL) {
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            vi c[4];
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) c[u] = quant_code(vf_mul(vf_load(scratch + (size_t)r * n + j + FTV_VL * u), sv[r]));
            total[r] = vi_add(total[r], vi_add(vi_add(c[0], c[1]), vi_add(c[2], c[3])));
            vi_store_i8x4(q + (size_t)r * n + j, c[0], c[1], c[2], c[3]);
        }
    }
    for (; j < n; j += FTV_VL) { /* masked lanes give 0 */
        const vmask m = lanes_left(n, j);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const vf v = j + FTV_VL <= n ? vf_load(scratch + (size_t)r * n + j) : vf_load_mask(scratch + (size_t)r * n + j, m);
            const vi c = quant_code(vf_mul(v, sv[r]));
            total[r] = vi_add(total[r], c);
            if (j + FTV_VL <= n) vi_store_i8(q + (size_t)r * n + j, c);
            else vi_store_i8_n(q + (size_t)r * n + j, c, m, n - j);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) gr->sum[r] = vi_sum(total[r]);
}

/* The group of rows [r, r + nr) with scratch rows sc. */
INLINE norm_group group_at(const float *x, size_t ldx, int r, int n, int8_t *q, float *s, int32_t *sum, float *sc) {
    return (norm_group){.x = x + (size_t)r * ldx, .ldx = ldx, .scratch = sc, .q = q + (size_t)r * n, .s = s + r,
                        .sum = sum + r};
}

INLINE void norm_group_run(norm_group *gr, const int nr, const int ln, const float *gv, const float *bv, float ln_eps,
                           const ftv_fvec *g, const int f16, float rms_eps, float quant_eps, int n) {
    if (ln) {
        norm_mean(gr, nr, n);
        norm_var(gr, nr, n, ln_eps);
        norm_ln(gr, nr, n, gv, bv, rms_eps);
    } else {
        norm_squares(gr, nr, n, rms_eps);
    }
    norm_scale(gr, nr, n, g, f16, quant_eps);
    norm_codes(gr, nr, n);
}

INLINE void norm_quant_with(const float *x, size_t ldx, int rows, const ftv_tmat *ln_g, const ftv_tmat *ln_b,
                            float ln_eps, const ftv_fvec *g, const int f16, float rms_eps, float quant_eps, int n,
                            int8_t *q, float *s, int32_t *sum, float *scratch) {
    const int ln = ln_g != NULL;
    const float *gv = ln ? (const float *)ln_g->repack : NULL, *bv = ln ? (const float *)ln_b->repack : NULL;
    int r = 0;
    for (; r + NORM_ROWS <= rows; r += NORM_ROWS) {
        norm_group a = group_at(x, ldx, r, n, q, s, sum, scratch);
        if (ln) norm_group_run(&a, NORM_ROWS, 1, gv, bv, ln_eps, g, f16, rms_eps, quant_eps, n);
        else norm_group_run(&a, NORM_ROWS, 0, gv, bv, ln_eps, g, f16, rms_eps, quant_eps, n);
    }
    for (; r < rows; r++) {
        norm_group a = group_at(x, ldx, r, n, q, s, sum, scratch);
        norm_group_run(&a, 1, ln, gv, bv, ln_eps, g, f16, rms_eps, quant_eps, n);
    }
}

static void x86_norm_quant(const float *x, size_t ldx, int rows, const ftv_tmat *ln_g, const ftv_tmat *ln_b,
                           float ln_eps, const ftv_fvec *g, float rms_eps, float quant_eps, int n, int8_t *q, float *s,
                           int32_t *sum, float *scratch) {
    if (ln_g && (!ln_g->repack || !ln_b->repack)) { /* LayerNorm vectors not as floats: the scalar kernels */
        ftv_norm_quant(x, ldx, rows, ln_g, ln_b, ln_eps, g, rms_eps, quant_eps, n, q, s, sum, scratch);
        return;
    }
    if (g->is_f16) norm_quant_with(x, ldx, rows, ln_g, ln_b, ln_eps, g, 1, rms_eps, quant_eps, n, q, s, sum, scratch);
    else norm_quant_with(x, ldx, rows, ln_g, ln_b, ln_eps, g, 0, rms_eps, quant_eps, n, q, s, sum, scratch);
}

static void x86_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n, float *out) {
    if (!gamma || !beta || !gamma->repack || !beta->repack) {
        ftv_layernorm(x, gamma, beta, eps, n, out);
        return;
    }
    const float *gv = (const float *)gamma->repack, *bv = (const float *)beta->repack;
    const float zero = 0.0f;
    float mean, var;
    reduce_rows(x, 0, 1, n, &zero, 0, &mean);
    mean /= (float)n;
    reduce_rows(x, 0, 1, n, &mean, 1, &var);
    const float r = ftv_norm_factor(var, n, eps);
    const vf mv = vf_set1(mean), rv = vf_set1(r);
    for (int j = 0; j < n; j += FTV_VL) {
        const vmask m = lanes_left(n, j);
        const vf h = vf_mul(vf_sub(vf_load_mask(x + j, m), mv), rv);
        vf_store_mask(out + j, m, vf_add(vf_mul(h, vf_load_mask(gv + j, m)), vf_load_mask(bv + j, m)));
    }
}

/* ---- the image's quantizer and the position embedding -------------------------------- */

static float x86_absmax(const float *x, int n) {
    vf mx[4] = {vf_zero(), vf_zero(), vf_zero(), vf_zero()}; /* four chains of maxima: not one max's latency a vector */
    int j = 0;
    for (; j + 4 * FTV_VL <= n; j += 4 * FTV_VL)
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) mx[u] = vf_max(mx[u], vf_abs(vf_load(x + j + FTV_VL * u)));
    for (; j < n; j += FTV_VL) mx[0] = vf_max(mx[0], vf_abs(vf_load_mask(x + j, lanes_left(n, j))));
    return vf_hmax(vf_max(vf_max(mx[0], mx[1]), vf_max(mx[2], mx[3]))); /* exact in any order */
}

static void x86_quantize_patches(const float *img, int chans, int h, int w, int ph, int pw, const float *scales,
                                 int p0, int p1, int8_t *q) {
    const int gw = w / pw, whole = pw % FTV_VL == 0 && (ph * pw) % (4 * FTV_VL) == 0;
    for (int pi = p0; pi < p1; pi++) {
        int8_t *dst = q + (size_t)pi * chans * ph * pw;
        const int y0 = (pi / gw) * ph, x0 = (pi % gw) * pw;
        for (int ch = 0; ch < chans; ch++) {
            const vf sv = vf_set1(scales[ch]);
            if (whole) { /* whole vectors: 4 a store (as norm_codes) */
                int dy = 0, dx = 0; /* of the vector's first value */
                for (int k = 0; k < ph * pw; k += 4 * FTV_VL) {
                    vi c[4];
#pragma GCC unroll 4
                    for (int u = 0; u < 4; u++) {
                        c[u] = quant_code(vf_mul(vf_load(img + ((size_t)ch * h + y0 + dy) * w + x0 + dx), sv));
                        if ((dx += FTV_VL) == pw) dx = 0, dy++;
                    }
                    vi_store_i8x4(dst + k, c[0], c[1], c[2], c[3]);
                }
                dst += ph * pw;
                continue;
            }
            for (int dy = 0; dy < ph; dy++, dst += pw) { /* a row of the patch, the last vector masked */
                const float *x = img + ((size_t)ch * h + y0 + dy) * w + x0;
                for (int j = 0; j < pw; j += FTV_VL) {
                    const vmask m = lanes_left(pw, j);
                    const vi c = quant_code(vf_mul(vf_load_mask(x + j, m), sv));
                    if (j + FTV_VL <= pw) vi_store_i8(dst + j, c);
                    else vi_store_i8_n(dst + j, c, m, pw - j);
                }
            }
        }
    }
}

INLINE void add_fvec_with(float *x, const ftv_fvec *v, int i0, int n, const int f16) {
    int j = 0;
    for (; j + FTV_VL <= n; j += FTV_VL) vf_store(x + j, vf_add(vf_load(x + j), vf_load_fv(v, i0 + j, f16)));
    for (; j < n; j++) x[j] += ftv_fvec_get(v, i0 + j);
}

static void x86_add_fvec(float *x, const ftv_fvec *v, int i0, int n) {
    if (v->is_f16) add_fvec_with(x, v, i0, n, 1);
    else add_fvec_with(x, v, i0, n, 0);
}

/* ---- softmax and GELU ---------------------------------------------------------------- */

/* x[j] = exp(x[j] - max) for the EXP_WAYS vectors from j0 (masked: lanes [0, n - j) of each),
 * each added to its partial sums acc[w]. */
INLINE void exp_sum(float *x, int j0, int n, const int nv, const int masked, vf mv, vf *acc, const int fast) {
    vf e[EXP_WAYS];
    vmask m[EXP_WAYS];
#pragma GCC unroll 4
    for (int w = 0; w < nv; w++) {
        m[w] = lanes_left(n, j0 + FTV_VL * w);
        e[w] = vf_sub(masked ? vf_load_mask(x + j0 + FTV_VL * w, m[w]) : vf_load(x + j0 + FTV_VL * w), mv);
    }
    exp_v(e, nv, fast);
#pragma GCC unroll 4
    for (int w = 0; w < nv; w++) {
        if (masked) {
            vf_store_mask(x + j0 + FTV_VL * w, m[w], e[w]);
            acc[w] = vf_add_mask(acc[w], m[w], e[w]);
        } else {
            vf_store(x + j0 + FTV_VL * w, e[w]);
            acc[w] = vf_add(acc[w], e[w]);
        }
    }
}

/* ftv_softmax of n floats whose maximum is mx: the exps EXP_WAYS vectors at a time (chains
 * interleaved), the partial sums in the FTV_LANES order, the vectors of the last FTV_LANES
 * elements masked (no scalar tail; none past n computed), then the scaling by the inverse of
 * their sum. */
_Static_assert(RED % EXP_WAYS == 0, "exp_sum fills whole groups of partial sums");
_Static_assert(ATT_KEY_VECS == 2 || ATT_KEY_VECS == 4, "scores_all's blocks");
INLINE void softmax_v(float *x, int n, float mx, const int fast) {
    const vf mv = vf_set1(mx);
    vf acc[RED];
#pragma GCC unroll 8
    for (int u = 0; u < RED; u++) acc[u] = vf_zero();
    int j = 0;
    for (; j + FTV_LANES <= n; j += FTV_LANES)
#pragma GCC unroll 2
        for (int u = 0; u < RED; u += EXP_WAYS) exp_sum(x, j + FTV_VL * u, n, EXP_WAYS, 0, mv, acc + u, fast);
    const int left = (n - j + FTV_VL - 1) / FTV_VL; /* vectors of the last, partial FTV_LANES */
    for (int u = 0; u < left; u += EXP_WAYS) switch (left - u < EXP_WAYS ? left - u : EXP_WAYS) {
        case 1: exp_sum(x, j + FTV_VL * u, n, 1, 1, mv, acc + u, fast); break;
        case 2: exp_sum(x, j + FTV_VL * u, n, 2, 1, mv, acc + u, fast); break;
        case 3: exp_sum(x, j + FTV_VL * u, n, 3, 1, mv, acc + u, fast); break;
        default: exp_sum(x, j + FTV_VL * u, n, 4, 1, mv, acc + u, fast); break;
        }
    const vf iv = vf_set1(1.0f / fold_sum(acc));
    for (j = 0; j + FTV_VL <= n; j += FTV_VL) vf_store(x + j, vf_mul(vf_load(x + j), iv));
    if (j < n) {
        const vmask m = lanes_left(n, j);
        vf_store_mask(x + j, m, vf_mul(vf_load_mask(x + j, m), iv));
    }
}

INLINE void gelu_with(float *x, int n, const int fast) {
    const vf half = vf_set1(0.5f), one = vf_set1(1.0f), rsqrt2 = vf_set1(FTV_GELU_C);
    int j = 0;
    for (; j + FTV_VL * EXP_WAYS <= n; j += FTV_VL * EXP_WAYS) {
        vf v[EXP_WAYS], e[EXP_WAYS];
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) {
            v[w] = vf_load(x + j + FTV_VL * w);
            e[w] = vf_mul(v[w], rsqrt2);
        }
        erf_v(e, EXP_WAYS, fast);
#pragma GCC unroll 4
        for (int w = 0; w < EXP_WAYS; w++) vf_store(x + j + FTV_VL * w, vf_mul(vf_mul(half, v[w]), vf_add(one, e[w])));
    }
    for (; j < n; j += FTV_VL) { /* the last vector masked */
        const vmask m = lanes_left(n, j);
        const vf v = vf_load_mask(x + j, m);
        vf e = vf_mul(v, rsqrt2);
        erf_v(&e, 1, fast);
        vf_store_mask(x + j, m, vf_mul(vf_mul(half, v), vf_add(one, e)));
    }
}

static void x86_gelu(float *x, int n) { gelu_with(x, n, 0); }
static void x86_gelu_fast(float *x, int n) { gelu_with(x, n, 1); }

/* ---- attention ----------------------------------------------------------------------- */

/* Scores of nq queries qb[i * hd] against keys [j0, j0 + nv * FTV_VL), the last vector cut to
 * the lanes of `last`: sc[i * ldk + j] = (sum over d in order of q[d] * k[d][j]) * scale. Keys
 * sit in the lanes, so each lane sums in the scalar kernel's order. */
INLINE void scores(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int j0, const int nv,
                   vmask last, float scale, float *sc, float *mx, const int fast) {
    vf acc[FTV_ATTEND_QUERIES][ATT_KEY_VECS + 1];
#pragma GCC unroll 8
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 8
        for (int u = 0; u < nv; u++) acc[i][u] = vf_zero();
    for (int d = 0; d < hd; d++) {
        const float *kd = kt + (size_t)d * ldk + j0;
        vf kv[ATT_KEY_VECS + 1];
#pragma GCC unroll 8
        for (int u = 0; u < nv; u++) {
            kv[u] = u + 1 < nv ? vf_load(kd + FTV_VL * u) : vf_load_mask(kd + FTV_VL * u, last);
            PIN(kv[u]);
        }
#pragma GCC unroll 8
        for (int i = 0; i < nq; i++) {
            const vf qd = vf_set1(qb[(size_t)i * hd + d]);
#pragma GCC unroll 8
            for (int u = 0; u < nv; u++) {
                acc[i][u] = madd(qd, kv[u], acc[i][u], fast);
                PIN(acc[i][u]);
            }
        }
    }
    const vf s = vf_set1(scale);
#pragma GCC unroll 8
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 8
        for (int u = 0; u < nv; u++) {
            float *dst = sc + (size_t)i * ldk + j0 + FTV_VL * u;
            const vf val = vf_mul(acc[i][u], s), m = vf_load(mx + FTV_VL * i); /* in memory: no register held */
            if (u + 1 < nv) {
                vf_store(dst, val);
                vf_store(mx + FTV_VL * i, vf_max(m, val));
            } else {
                vf_store_mask(dst, last, val);
                vf_store(mx + FTV_VL * i, vf_max_mask(m, last, val));
            }
        }
}

/* Scores of nq queries against all keys, and each query's maximum score in mx[i]. */
INLINE void scores_all(const float *qb, const int nq, const float *kt, size_t ldk, int hd, int tokens, float scale,
                       float *sc, float *mx, const int fast) {
    float m[FTV_ATTEND_QUERIES * FTV_VL];
    for (int i = 0; i < nq * FTV_VL; i++) m[i] = -INFINITY;
    /* keys in blocks of ATT_KEY_VECS vectors; one vector left over joins the last block (a block
     * of one vector is latency-bound: 197 keys on 16 lanes as 4 + 4 + 5 vectors, not 4 + 4 + 4 + 1) */
    const int nv = (tokens + FTV_VL - 1) / FTV_VL, rest = nv % ATT_KEY_VECS;
    const int whole = nv / ATT_KEY_VECS - (rest == 1 && nv > ATT_KEY_VECS);
    const vmask all = vmask_first(FTV_VL), last = vmask_first(tokens - (nv - 1) * FTV_VL);
    int j0 = 0;
    for (int b = 0; b < whole; b++, j0 += ATT_KEY_VECS * FTV_VL)
        scores(qb, nq, kt, ldk, hd, j0, ATT_KEY_VECS, j0 + ATT_KEY_VECS * FTV_VL < tokens ? all : last, scale, sc, m, fast);
    switch (nv - whole * ATT_KEY_VECS) { /* 0 to ATT_KEY_VECS + 1 vectors */
#if ATT_KEY_VECS == 4
    case 5: scores(qb, nq, kt, ldk, hd, j0, 5, last, scale, sc, m, fast); break;
    case 4: scores(qb, nq, kt, ldk, hd, j0, 4, last, scale, sc, m, fast); break;
#endif
    case 3: scores(qb, nq, kt, ldk, hd, j0, 3, last, scale, sc, m, fast); break;
    case 2: scores(qb, nq, kt, ldk, hd, j0, 2, last, scale, sc, m, fast); break;
    case 1: scores(qb, nq, kt, ldk, hd, j0, 1, last, scale, sc, m, fast); break;
    default: break;
    }
    for (int i = 0; i < nq; i++) mx[i] = vf_hmax(vf_load(m + FTV_VL * i)); /* exact in any order */
}

/* out_i[d0 + FTV_VL u + lane] = sum over keys j in order of p_i[j] * v[j][d0 + FTV_VL u + lane],
 * for nq queries (probabilities p + i * ldp) and nv vectors of head dimensions from d0, the
 * last one cut to the lanes of `last`. */
INLINE void weigh_values(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens, int d0,
                         const int nv, vmask last, float *out, size_t ldo, const int fast) {
    vf acc[ATT_PV_QUERIES][4];
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) acc[i][u] = vf_zero();
    for (int j = 0; j < tokens; j++) {
        const float *vj = v + (size_t)j * ldv + d0;
        vf vv[4];
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            vv[u] = u + 1 < nv ? vf_load(vj + FTV_VL * u) : vf_load_mask(vj + FTV_VL * u, last);
            PIN(vv[u]); /* one load for all queries, not a memory operand in each multiply */
        }
#pragma GCC unroll 4
        for (int i = 0; i < nq; i++) {
            const vf pj = vf_set1(p[(size_t)i * ldp + j]);
#pragma GCC unroll 4
            for (int u = 0; u < nv; u++) {
                acc[i][u] = madd(pj, vv[u], acc[i][u], fast);
                PIN(acc[i][u]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            float *dst = out + (size_t)i * ldo + d0 + FTV_VL * u;
            if (u + 1 < nv) vf_store(dst, acc[i][u]);
            else vf_store_mask(dst, last, acc[i][u]);
        }
}

INLINE void weigh_values_all(const float *p, size_t ldp, const int nq, const float *v, size_t ldv, int tokens, int hd,
                             float *out, size_t ldo, const int fast) {
    int d0 = 0;
    for (; d0 + 4 * FTV_VL <= hd; d0 += 4 * FTV_VL)
        weigh_values(p, ldp, nq, v, ldv, tokens, d0, 4, vmask_first(FTV_VL), out, ldo, fast);
    for (; d0 < hd; d0 += FTV_VL) weigh_values(p, ldp, nq, v, ldv, tokens, d0, 1, vmask_first(hd - d0), out, ldo, fast);
}

/* ftv_attend: blocks of up to 4 queries; scores, softmax, then the weighted values in groups of
 * ATT_PV_QUERIES. */
INLINE void attend_with(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens, int hd,
                        float scale, float *out, int ldo, int nq, float *scratch, const int fast) {
    float *sc = scratch, *qb = scratch + (size_t)FTV_ATTEND_QUERIES * ldk;
    for (int i0 = 0; i0 < nq; i0 += FTV_ATTEND_QUERIES) {
        const int nb = min_int(FTV_ATTEND_QUERIES, nq - i0);
        for (int i = 0; i < nb; i++) /* out may overwrite q */
            memcpy(qb + (size_t)i * hd, q + (size_t)(i0 + i) * ldq, (size_t)hd * sizeof(float));
        float mx[FTV_ATTEND_QUERIES];
        switch (nb) {
        case 4: scores_all(qb, 4, kt, (size_t)ldk, hd, tokens, scale, sc, mx, fast); break;
        case 3: scores_all(qb, 3, kt, (size_t)ldk, hd, tokens, scale, sc, mx, fast); break;
        case 2: scores_all(qb, 2, kt, (size_t)ldk, hd, tokens, scale, sc, mx, fast); break;
        default: scores_all(qb, 1, kt, (size_t)ldk, hd, tokens, scale, sc, mx, fast); break;
        }
        for (int i = 0; i < nb; i++) softmax_v(sc + (size_t)i * ldk, tokens, mx[i], fast);
        float *o = out + (size_t)i0 * ldo;
        int i = 0;
        for (; i + ATT_PV_QUERIES <= nb; i += ATT_PV_QUERIES)
            weigh_values_all(sc + (size_t)i * ldk, (size_t)ldk, ATT_PV_QUERIES, v, (size_t)ldv, tokens, hd,
                             o + (size_t)i * ldo, (size_t)ldo, fast);
        for (; i < nb; i++)
            weigh_values_all(sc + (size_t)i * ldk, (size_t)ldk, 1, v, (size_t)ldv, tokens, hd, o + (size_t)i * ldo,
                             (size_t)ldo, fast);
    }
}

static void x86_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens, int hd,
                       float scale, float *out, int ldo, int nq, float *scratch) {
    attend_with(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch, 0);
}

static void x86_attend_fast(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                            int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    attend_with(q, ldq, kt, ldk, v, ldv, tokens, hd, scale, out, ldo, nq, scratch, 1);
}

/* A kernel table of the set including this file: the exact mode's kernels or the fast mode's
 * (fused multiply-add in attention, softmax and GELU). */
/* A set's table. Its GEMMs: x86_tgemm and x86_patch_gemm, unless the including file names its own
 * wrappers of them (X86_TGEMM, X86_PATCH_GEMM: the AMX set configures its tiles around them). */
#ifndef X86_TGEMM
#define X86_TGEMM x86_tgemm
#define X86_PATCH_GEMM x86_patch_gemm
#endif
#define X86_KERNELS_ATTEND(NAME, FAST, EXACT, GELU, ATTEND, ATTEND_SCRATCH)                                       \
    {                                                                                                            \
        .name = NAME, .fast = FAST, .exact = EXACT, .wide = 1, .gemm_scratch = x86_gemm_scratch,                 \
        .repack = ftv_x86_repack,                                                                                \
        .tgemm = X86_TGEMM, .patch_gemm = X86_PATCH_GEMM, .norm_quant = x86_norm_quant,                          \
        .layernorm = x86_layernorm, .gelu = GELU, .absmax = x86_absmax, .quantize_patches = x86_quantize_patches,                \
        .add_fvec = x86_add_fvec, .attend = ATTEND, .attend_scratch = ATTEND_SCRATCH                             \
    }
#define X86_KERNELS(NAME, FAST, EXACT, GELU, ATTEND) X86_KERNELS_ATTEND(NAME, FAST, EXACT, GELU, ATTEND, ftv_attend_scratch)

#endif
