/* Unit tests of the kernels (run under ASan/UBSan by `make test`): the scalar kernels
 * against naive re-computations, every other kernel set this CPU runs (lut, AVX2, AVX-512)
 * against the scalar one, bit for bit, on random and worst-case inputs, exp/erf/GELU against
 * double precision, and the thread pool. File-level tests (exported models, damaged files, threads=2 and
 * FTV_FORCE_SCALAR on whole models) are in tests/test_engine.py. */
#define _GNU_SOURCE /* sched_getcpu, sched_setaffinity: the pool's core test */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftv_kernels.h"
#include "ftv_math.h"
#include "ftv_threads.h"

static int failures = 0, tests_passed = 0, tests_failed = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static uint32_t rng = 12345u;
static int rnd(int n) { rng = rng * 1664525u + 1013904223u; return (int)((rng >> 8) % (uint32_t)n); }

/* Pack values q in {-1,0,1} as the format does (docs/format.md). */
static void pack_row(const int8_t *q, int k, uint32_t kind, uint8_t *out, int row_bytes) {
    memset(out, 0, (size_t)row_bytes);
    for (int j = 0; j < row_bytes * (kind == FTV_KIND_TQ2 ? 4 : 5); j++) {
        unsigned code = j < k ? (unsigned)(q[j] + 1) : 1u;
        if (kind == FTV_KIND_TQ2) out[j / 4] |= (uint8_t)(code << (2 * (j % 4)));
        else {
            unsigned p = 1;
            for (int t = 0; t < j % 5; t++) p *= 3;
            out[j / 5] = (uint8_t)(out[j / 5] + code * p);
        }
    }
}

static void test_decode_and_gemm(uint32_t kind, int rows, int k, int tokens, int extreme) {
    int per = kind == FTV_KIND_TQ2 ? 4 : 5, rb = (k + per - 1) / per;
    int8_t *q = malloc((size_t)rows * k), *row = malloc((size_t)k), *xq = malloc((size_t)tokens * k);
    uint8_t *packed = malloc((size_t)rows * rb);
    float *xs = malloc(sizeof(float) * tokens), *y = malloc(sizeof(float) * tokens * rows);
    for (int i = 0; i < rows * k; i++) q[i] = extreme ? (int8_t)(i % 2 ? -1 : 1) : (int8_t)(rnd(3) - 1);
    for (int i = 0; i < tokens * k; i++) xq[i] = extreme ? (int8_t)(i % 2 ? -128 : 127) : (int8_t)(rnd(256) - 128);
    for (int t = 0; t < tokens; t++) xs[t] = 0.5f + (float)t;
    for (int r = 0; r < rows; r++) pack_row(q + (size_t)r * k, k, kind, packed + (size_t)r * rb, rb);
    ftv_tmat m = {packed, rows, k, rb, kind, 2.0f, {NULL, 0, 0}, NULL};
    for (int r = 0; r < rows; r++) {
        ftv_tmat_decode_row(&m, r, row);
        CHECK(memcmp(row, q + (size_t)r * k, (size_t)k) == 0, "decode kind %u row %d", kind, r);
    }
    ftv_tgemm_strided(&m, 0, rows, xq, xs, NULL, tokens, y, rows, 1, row, 0, NULL);
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++) {
            long acc = 0;
            for (int j = 0; j < k; j++) acc += (long)xq[t * k + j] * q[r * k + j];
            float want = (float)acc / (xs[t] * 2.0f);
            CHECK(y[t * rows + r] == want, "gemm kind %u t %d r %d: %g vs %g", kind, t, r, y[t * rows + r], want);
        }
    free(q); free(row); free(xq); free(packed); free(xs); free(y);
}

static void test_f16(void) {
    CHECK(ftv_f16_to_f32(0x3C00) == 1.0f, "1.0");
    CHECK(ftv_f16_to_f32(0xC000) == -2.0f, "-2.0");
    CHECK(ftv_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal");
    CHECK(ftv_f16_to_f32(0x7BFF) == 65504.0f, "max");
    CHECK(isinf(ftv_f16_to_f32(0x7C00)), "inf");
    CHECK(isnan(ftv_f16_to_f32(0x7E00)), "nan");
}

static void test_rmsnorm_quant(void) {
    float x[4] = {1.0f, -2.2f, 0.5f, 4.0f}; /* no code near a rounding tie */
    float g[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    ftv_fvec gv = {(const uint8_t *)g, 0, 4};
    int8_t q[4];
    int32_t sum = 0;
    float s = ftv_rmsnorm_quant(x, &gv, 1e-5f, 1e-5f, 4, q, &sum);
    /* the largest |h| maps to 127: s = 127 / (4 r) with r = 1 / rms */
    float r = 1.0f / sqrtf((1.0f + 4.84f + 0.25f + 16.0f) / 4.0f + 1e-5f);
    CHECK(fabsf(s - 127.0f / (4.0f * r)) < 1e-4f, "scale %g", s);
    CHECK(q[3] == 127 && q[1] == -70 && q[0] == 32 && q[2] == 16, "codes %d %d %d %d", q[0], q[1], q[2], q[3]);
    CHECK(sum == 127 - 70 + 32 + 16, "sum of codes %d", sum);
    float zeros[4] = {0};
    s = ftv_rmsnorm_quant(zeros, &gv, 1e-5f, 1e-5f, 4, q, NULL);
    CHECK(q[0] == 0 && q[3] == 0 && isfinite(s), "all-zero row");
}

static void test_softmax_gelu(void) {
    float a[3] = {1.0f, 2.0f, 3.0f};
    ftv_softmax(a, 3);
    float e = expf(-2.0f) + expf(-1.0f) + 1.0f;
    CHECK(fabsf(a[2] - 1.0f / e) < 1e-6f && fabsf(a[0] + a[1] + a[2] - 1.0f) < 1e-6f, "softmax");
    float g[3] = {-1.0f, 0.0f, 2.0f};
    ftv_gelu(g, 3);
    CHECK(fabsf(g[0] - (-0.158655254f)) < 1e-6f && g[1] == 0.0f && fabsf(g[2] - 1.954499736f) < 1e-6f, "gelu");
}

/* ---- every other set against scalar, bit for bit -------------------------------------- */

static const ftv_kernels *simd; /* the set under test */

static float frand(float lo, float hi) { return lo + (hi - lo) * (float)rnd(1 << 20) / (float)(1 << 20); }

/* A ternary matrix of codes q, packed as a file holds it; `fast` is the same with the SIMD
 * kernels' repacked copy (when they make one). */
typedef struct {
    int8_t *q;
    uint8_t *packed;
    void *repacked;
    ftv_tmat file, fast;
} tmat_fixture;

/* weights: 2 random, else every code equals `weights` (-1, 0, 1); values: a LayerNorm vector
 * (the set's copy as floats), else a matrix. */
static void fixture_make(tmat_fixture *f, uint32_t kind, int rows, int k, int weights, float scale, int values) {
    int per = kind == FTV_KIND_TQ2 ? 4 : 5, rb = (k + per - 1) / per;
    f->q = malloc((size_t)rows * k);
    f->packed = malloc((size_t)rows * rb);
    for (size_t i = 0; i < (size_t)rows * k; i++) f->q[i] = (int8_t)(weights == 2 ? rnd(3) - 1 : weights);
    for (int r = 0; r < rows; r++) pack_row(f->q + (size_t)r * k, k, kind, f->packed + (size_t)r * rb, rb);
    f->file = (ftv_tmat){f->packed, rows, k, rb, kind, scale, {NULL, 0, 0}, NULL};
    f->fast = f->file;
    f->repacked = NULL;
    size_t bytes = simd->repack(&f->file, values, NULL);
    if (bytes) {
        f->repacked = malloc(bytes);
        CHECK(simd->repack(&f->file, values, f->repacked) == bytes, "repack size");
        f->fast.repack = f->repacked;
    }
}

static void fixture_free(tmat_fixture *f) {
    free(f->q);
    free(f->packed);
    free(f->repacked);
}

/* acts: 2 random, else every activation equals `acts`. */
static void fill_acts(int8_t *xq, size_t n, int acts) {
    for (size_t i = 0; i < n; i++) xq[i] = (int8_t)(acts == 2 ? rnd(256) - 128 : acts);
}

/* Both kernels on rows [o0, o1), output y[t*ldt + (o - o0)*ldo] (transposed when ldt = 1);
 * with `accumulate`, onto the same random values with an FP16 or FP32 gamma. */
/* The model sizes the GEMM scratch for its longest rows (max_k); shorter rows may use more row
 * groups a panel. 0: size it for k. */
static int scratch_k = 0;
/* The tokens' scales: xs_edge 0: all in [0.1, 3]; otherwise token 0's is xs_edge. */
static float xs_edge = 0.0f;

static void check_tgemm(uint32_t kind, int rows, int k, int tokens, int o0, int o1, int transposed, int accumulate,
                        int weights, int acts) {
    tmat_fixture f;
    fixture_make(&f, kind, rows, k, weights, 1.5f, 0);
    int8_t *xq = malloc((size_t)tokens * k);
    fill_acts(xq, (size_t)tokens * k, acts);
    float *xs = malloc(sizeof(float) * tokens);
    int32_t *xsum = calloc((size_t)tokens, sizeof(int32_t)); /* what the quantizer gives the GEMM */
    for (int t = 0; t < tokens; t++) {
        xs[t] = t == 0 && xs_edge != 0.0f ? xs_edge : frand(0.1f, 3.0f);
        for (int j = 0; j < k; j++) xsum[t] += xq[(size_t)t * k + j];
    }
    const int n = o1 - o0, ldt = transposed ? 1 : n + 3, ldo = transposed ? tokens + 2 : 1;
    const size_t ylen = transposed ? (size_t)n * ldo : (size_t)tokens * ldt;
    float *y0 = malloc(sizeof(float) * ylen), *y1 = malloc(sizeof(float) * ylen);
    for (size_t i = 0; i < ylen; i++) y0[i] = y1[i] = frand(-2.0f, 2.0f);
    uint16_t g16[64];
    float g32[64];
    for (int i = 0; i < 64; i++) g32[i] = ftv_f16_to_f32(g16[i] = (uint16_t)(0x3000 + rnd(0x1000)));
    ftv_fvec gamma = {rnd(2) ? (const uint8_t *)g16 : (const uint8_t *)g32, 0, rows <= 64 ? rows : 0};
    gamma.is_f16 = gamma.data == (const uint8_t *)g16;
    const int sk = scratch_k ? scratch_k : k;
    size_t sb = simd->gemm_scratch(sk, tokens) > (size_t)sk ? simd->gemm_scratch(sk, tokens) : (size_t)sk;
    void *scratch = malloc(sb);
    ftv_kernels_scalar.tgemm(&f.file, o0, o1, xq, xs, NULL, tokens, y0, ldt, ldo, scratch, accumulate, &gamma);
    simd->tgemm(&f.fast, o0, o1, xq, xs, xsum, tokens, y1, ldt, ldo, scratch, accumulate, &gamma);
    CHECK(memcmp(y0, y1, sizeof(float) * ylen) == 0, "%s tgemm kind %u rows %d k %d tokens %d [%d, %d) t%d a%d w%d x%d",
          simd->name, kind, rows, k, tokens, o0, o1, transposed, accumulate, weights, acts);
    if (!accumulate) /* and both equal the exact integer sum */
        for (int t = 0; t < tokens; t++)
            for (int o = o0; o < o1; o++) {
                long acc = 0;
                for (int j = 0; j < k; j++) acc += (long)xq[(size_t)t * k + j] * f.q[(size_t)o * k + j];
                float want = (float)acc / (xs[t] * 1.5f), got = y1[(size_t)t * ldt + (size_t)(o - o0) * ldo];
                if (got != want) {
                    CHECK(got == want, "tgemm exact t %d o %d: %g vs %g", t, o, got, want);
                    t = tokens;
                    break;
                }
            }
    fixture_free(&f);
    free(xq), free(xs), free(xsum), free(y0), free(y1), free(scratch);
}

static void test_simd_tgemm(void) {
    for (uint32_t kind = FTV_KIND_TQ2; kind <= FTV_KIND_TQ1; kind++) {
        check_tgemm(kind, 7, 13, 3, 0, 7, 0, 0, 2, 2);      /* k % 4: the SIMD kernels fall back */
        check_tgemm(kind, 16, 384, 5, 0, 16, 0, 0, 2, 2);
        check_tgemm(kind, 23, 100, 7, 0, 23, 0, 1, 2, 2);   /* k not a multiple of 16 or 32, rows of 8 */
        check_tgemm(kind, 40, 1540, 13, 3, 37, 0, 1, 2, 2); /* unaligned row range, accumulate */
        check_tgemm(kind, 64, 192, 11, 16, 48, 1, 0, 2, 2); /* transposed output (attention keys) */
        check_tgemm(kind, 1, 4, 1, 0, 1, 0, 0, 2, 2);
        check_tgemm(kind, 33, 64, 197, 0, 33, 0, 0, 2, 2);
        /* 32-row panels of the AVX-512 GEMM: 3 row groups, 2, starting at an odd row group */
        check_tgemm(kind, 56, 384, 25, 0, 56, 0, 1, 2, 2);
        check_tgemm(kind, 24, 96, 14, 0, 24, 0, 0, 2, 2);
        check_tgemm(kind, 88, 256, 30, 8, 88, 1, 0, 2, 2);
        /* the AMX set's tiles: two blocks of 16 tokens and the VNNI rest (40 = 32 + 8; 197 = 6 x 32
         * + 5), one block (20), column groups past the last whole 16 (k = 1540, 100), odd panels */
        check_tgemm(kind, 48, 1540, 40, 5, 45, 0, 1, 2, 2);
        check_tgemm(kind, 24, 384, 20, 0, 24, 0, 0, 2, 2);
        check_tgemm(kind, 40, 100, 33, 0, 40, 1, 0, 2, 2);
        check_tgemm(kind, 72, 768, 197, 8, 72, 0, 1, 2, 2);
        /* scratch sized for longer rows (k = 1000: 16-row panels) than the GEMM's (760: 32-row) */
        scratch_k = 1000;
        check_tgemm(kind, 40, 760, 13, 0, 40, 0, 0, 2, 2);
        scratch_k = 0;
        /* a token's divisor xs * 1.5 tiny or huge: quotients far from 1 */
        const float edges[] = {1e-25f, 4e-20f, 1e19f, 1e25f};
        for (int e = 0; e < 4; e++) {
            xs_edge = edges[e];
            check_tgemm(kind, 40, 384, 13, 0, 40, 0, e % 2, 2, 2);
            check_tgemm(kind, 20, 96, 9, 4, 20, 1, 0, 2, 2);
        }
        xs_edge = 0.0f;
        /* int16 worst cases: every code 2 (q = +1) against every activation -128 puts exactly
         * -32768 in each lane after 64 column groups; also +1 x 127, -1 x -128, -1 x 127 */
        for (int w = -1; w <= 1; w += 2) {
            check_tgemm(kind, 16, 1536, 6, 0, 16, 0, 0, w, -128);
            check_tgemm(kind, 16, 1536, 6, 0, 16, 0, 0, w, 127);
            check_tgemm(kind, 9, 1540, 7, 0, 9, 0, 0, w, -128);
            check_tgemm(kind, 32, 1536, 32, 0, 32, 0, 0, w, -128); /* on the AMX tiles */
        }
    }
}

/* The patch embedding: 3 channels of `pc` codes each. 9 and 30 tokens (3 tiles of 10), 16 codes
 * a channel: no whole AMX chunk; 40 tokens of 256 (4 chunks, DeiT's 16 x 16 patches) and 80
 * (a chunk and 4 column groups) codes a channel: AMX tiles and the VNNI rest. */
static void test_simd_patch_gemm(void) {
    const int shapes[][3] = {{16, 9, 0}, {16, 30, 1}, {256, 40, 1}, {80, 40, 0}}; /* pc, tokens, with bias */
    for (uint32_t kind = FTV_KIND_TQ2; kind <= FTV_KIND_TQ1; kind++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const int rows = 24, chans = 3, pc = shapes[i][0], k = chans * pc, tokens = shapes[i][1];
            const int with_bias = shapes[i][2];
            tmat_fixture f;
            fixture_make(&f, kind, rows, k, 2, 0.0f, 0);
            float rs[24], cs[24];
            uint16_t bias[24];
            for (int r = 0; r < rows; r++) {
                rs[r] = frand(0.5f, 2.0f), cs[r] = frand(0.5f, 2.0f);
                bias[r] = (uint16_t)(0x2000 + rnd(0x3000)) | (uint16_t)(rnd(2) << 15);
            }
            f.file.row_scale = f.fast.row_scale = (ftv_fvec){(const uint8_t *)rs, 0, rows};
            ftv_fvec csv = {(const uint8_t *)cs, 0, rows}, bv = {(const uint8_t *)bias, 1, with_bias ? rows : 0};
            int8_t *xq = malloc((size_t)tokens * k);
            fill_acts(xq, (size_t)tokens * k, 2);
            float xs[3] = {frand(1, 50), frand(1, 50), frand(1, 50)};
            float *y0 = malloc(sizeof(float) * tokens * rows), *y1 = malloc(sizeof(float) * tokens * rows);
            void *scratch = malloc(simd->gemm_scratch(k, tokens) + (size_t)k);
            ftv_kernels_scalar.patch_gemm(&f.file, 5, rows, xq, xs, chans, tokens, &csv, &bv, y0, rows, scratch);
            simd->patch_gemm(&f.fast, 5, rows, xq, xs, chans, tokens, &csv, &bv, y1, rows, scratch);
            for (int t = 0; t < tokens; t++)
                CHECK(memcmp(y0 + t * rows, y1 + t * rows, sizeof(float) * (rows - 5)) == 0,
                      "%s patch gemm kind %u pc %d tokens %d t %d", simd->name, kind, pc, tokens, t);
            fixture_free(&f);
            free(xq), free(y0), free(y1), free(scratch);
        }
}

/* norm_quant (RMSNorm + int8, with and without a LayerNorm first) on 1 to 19 rows of every
 * length (groups of rows and single rows), against the scalar set; and the sums of the codes.
 * The scratch is exactly FTV_NORM_ROWS rows (AddressSanitizer checks the bound). */
static void test_simd_norm_quant(void) {
    const int ks[] = {1, 7, 8, 33, 100, 384, 1536}, row_counts[] = {1, 2, 3, 4, 5, 8, 13, 19};
    for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++)
        for (int variant = 0; variant < 4; variant++) {
            const int k = ks[c], f16 = variant & 1, ln = variant >> 1, ldx = k + 3;
            const int rows = row_counts[(c * 4 + (size_t)variant) % 8];
            float *x = malloc(sizeof(float) * rows * ldx), *g32 = malloc(sizeof(float) * k);
            float *scratch = malloc(sizeof(float) * FTV_NORM_ROWS * k), s0[19], s1[19];
            uint16_t *g16 = malloc(2 * (size_t)k);
            int8_t *q0 = malloc((size_t)rows * k), *q1 = malloc((size_t)rows * k);
            for (int j = 0; j < rows * ldx; j++) x[j] = frand(-3.0f, 3.0f) * (j % 17 == 0 ? 20.0f : 1.0f);
            for (int j = 0; j < k; j++) g32[j] = ftv_f16_to_f32(g16[j] = (uint16_t)(0x3400 + rnd(0x800)));
            ftv_fvec g = {f16 ? (const uint8_t *)g16 : (const uint8_t *)g32, f16, k};
            tmat_fixture lg, lb;
            fixture_make(&lg, FTV_KIND_TQ1, 1, k, 2, 1.7f, 1);
            fixture_make(&lb, FTV_KIND_TQ2, 1, k, 2, 3.1f, 1);
            int32_t sum0[19], sum1[19];
            ftv_kernels_scalar.norm_quant(x, (size_t)ldx, rows, ln ? &lg.file : NULL, ln ? &lb.file : NULL, 1e-6f, &g,
                                          1e-5f, 1e-5f, k, q0, s0, sum0, scratch);
            simd->norm_quant(x, (size_t)ldx, rows, ln ? &lg.fast : NULL, ln ? &lb.fast : NULL, 1e-6f, &g, 1e-5f, 1e-5f,
                             k, q1, s1, sum1, scratch);
            CHECK(memcmp(s0, s1, sizeof(float) * rows) == 0 && memcmp(q0, q1, (size_t)rows * k) == 0,
                  "%s norm_quant k %d f16 %d ln %d rows %d", simd->name, k, f16, ln, rows);
            for (int r = 0; r < rows; r++) {
                int32_t want = 0;
                for (int j = 0; j < k; j++) want += q0[r * k + j];
                CHECK(sum0[r] == want && sum1[r] == want, "%s norm_quant sums k %d row %d: %d %d, want %d", simd->name,
                      k, r, sum0[r], sum1[r], want);
            }
            fixture_free(&lg), fixture_free(&lb);
            free(x), free(g32), free(g16), free(q0), free(q1), free(scratch);
        }
}

static void test_simd_layernorm(void) {
    const int ns[] = {5, 64, 192, 385};
    for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
        const int n = ns[c];
        tmat_fixture g, b;
        fixture_make(&g, FTV_KIND_TQ1, 1, n, 2, 1.7f, 1);
        fixture_make(&b, FTV_KIND_TQ2, 1, n, 2, 3.1f, 1);
        float *x = malloc(sizeof(float) * n), *o0 = malloc(sizeof(float) * n), *o1 = malloc(sizeof(float) * n);
        for (int j = 0; j < n; j++) x[j] = frand(-4.0f, 6.0f);
        ftv_kernels_scalar.layernorm(x, &g.file, &b.file, 1e-6f, n, o0);
        simd->layernorm(x, &g.fast, &b.fast, 1e-6f, n, o1);
        CHECK(memcmp(o0, o1, sizeof(float) * n) == 0, "layernorm n %d", n);
        fixture_free(&g), fixture_free(&b);
        free(x), free(o0), free(o1);
    }
}

static void test_simd_gelu(void) {
    const int n = 1003 + (1 << 18); /* and a dense grid on [-8, 8) (2|x| / sqrt 2 in [0, 11.3)) */
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    for (int j = 0; j < n; j++) a[j] = j < 1003 ? frand(-10.0f, 10.0f) : -8.0f + 16.0f * (float)(j - 1003) / (1 << 18);
    /* interval ends of erf (2|x| / sqrt 2 an integer), its cut at 4 sqrt 2, huge and infinite values */
    const float special[] = {0.0f,   -0.0f,     0.70710678f, 1.41421356f, -1.41421356f, 4.94974747f, 5.656854f,
                             -5.656854f, 5.6568546f, 100.0f, -100.0f, 1e-30f, 1e30f, -1e30f, INFINITY, -INFINITY};
    memcpy(a, special, sizeof special);
    memcpy(b, a, sizeof(float) * n);
    ftv_kernels_scalar.gelu(a, n);
    simd->gelu(b, n);
    CHECK(memcmp(a, b, sizeof(float) * n) == 0, "gelu");
    free(a), free(b);
}

/* The image quantizer and the position embedding: absmax, quantize_patches, add_fvec. */
static void test_simd_image_kernels(void) {
    const int n = 77;
    float x[77], a[77], b[77];
    uint16_t v16[80];
    float v32[80];
    for (int j = 0; j < n; j++) x[j] = frand(-300.0f, 300.0f) * (j % 9 ? 0.01f : 1.0f);
    for (int j = 0; j < 80; j++) v32[j] = ftv_f16_to_f32(v16[j] = (uint16_t)(0x2000 + rnd(0x5000)));
    for (int len = 0; len <= n; len += 11) {
        CHECK(ftv_kernels_scalar.absmax(x, len) == simd->absmax(x, len), "%s absmax %d", simd->name, len);
        for (int f16 = 0; f16 <= 1; f16++) {
            const ftv_fvec v = {f16 ? (const uint8_t *)v16 : (const uint8_t *)v32, f16, 80};
            memcpy(a, x, sizeof x), memcpy(b, x, sizeof x);
            ftv_kernels_scalar.add_fvec(a, &v, 3, len);
            simd->add_fvec(b, &v, 3, len);
            CHECK(memcmp(a, b, sizeof a) == 0, "%s add_fvec %d f16 %d", simd->name, len, f16);
        }
    }
    /* patches of 16 x 16 (a whole AVX-512 vector a row), 7 x 7 and 3 x 5 (masked tails), 2 channels */
    const int shapes[][2] = {{16, 16}, {7, 7}, {3, 5}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const int ph = shapes[c][0], pw = shapes[c][1], h = 3 * ph, w = 4 * pw, chans = 2, kp = chans * ph * pw;
        float *img = malloc(sizeof(float) * chans * h * w), scales[2] = {0.5f, 1.25f};
        int8_t *q0 = calloc((size_t)12 * kp, 1), *q1 = calloc((size_t)12 * kp, 1);
        for (int i = 0; i < chans * h * w; i++) img[i] = frand(-150.0f, 150.0f);
        img[0] = 126.5f / 0.5f, img[1] = -128.5f / 0.5f; /* ties and the clamp of channel 0 */
        ftv_kernels_scalar.quantize_patches(img, chans, h, w, ph, pw, scales, 1, 12, q0);
        simd->quantize_patches(img, chans, h, w, ph, pw, scales, 1, 12, q1);
        CHECK(memcmp(q0, q1, (size_t)12 * kp) == 0, "%s quantize_patches %d x %d", simd->name, ph, pw);
        ftv_kernels_scalar.quantize_patches(img, chans, h, w, ph, pw, scales, 0, 1, q0);
        CHECK(q0[0] == 126 && q0[1] == -128, "quantize ties to even and clamps: %d %d", q0[0], q0[1]);
        const float first1 = rintf(img[h * w] * 1.25f); /* channel 1's first pixel */
        CHECK(q0[ph * pw] == (int8_t)(first1 > 127.0f ? 127 : first1 < -128.0f ? -128 : first1),
              "patch order: channel 1 after channel 0");
        free(img), free(q0), free(q1);
    }
}

/* Attention of nq queries of one head by two kernel sets on the same random queries, keys and
 * values, in place as the forward pass calls it (rows of 3 hd floats, the head's dimensions
 * [hd, 2 hd)), each on scratch of exactly its own size (AddressSanitizer sees any overrun):
 * o[0] and o[1] the rows after each, o[2] before (the caller frees them). */
static void attend_two(const ftv_kernels *a, const ftv_kernels *b, int T, int hd, int nq, float scale, float *o[3]) {
    const int ldk = (T + 7) & ~7, ld = 3 * hd;
    float *kt = calloc((size_t)hd * ldk, sizeof(float)), *v = malloc(sizeof(float) * T * hd);
    float *s0 = malloc(sizeof(float) * a->attend_scratch(ldk, hd, T)), *s1 = malloc(sizeof(float) * b->attend_scratch(ldk, hd, T));
    for (int i = 0; i < 3; i++) o[i] = malloc(sizeof(float) * nq * ld);
    for (int i = 0; i < nq * ld; i++) o[2][i] = frand(-2.0f, 2.0f);
    for (int d = 0; d < hd; d++)
        for (int j = 0; j < T; j++) kt[d * ldk + j] = frand(-2.0f, 2.0f);
    for (int i = 0; i < T * hd; i++) v[i] = frand(-1.0f, 1.0f);
    memcpy(o[0], o[2], sizeof(float) * nq * ld);
    memcpy(o[1], o[2], sizeof(float) * nq * ld);
    a->attend(o[0] + hd, ld, kt, ldk, v, hd, T, hd, scale, o[0] + hd, ld, nq, s0);
    b->attend(o[1] + hd, ld, kt, ldk, v, hd, T, hd, scale, o[1] + hd, ld, nq, s1);
    free(kt), free(v), free(s0), free(s1);
}

static void test_simd_attend(void) {
    /* tokens, hd, queries; also whole and partial 64-key blocks and 16-lane head dimensions
     * of the AVX-512 kernel, and a softmax with 8 to 15 keys past the last 16 */
    const int cases[][3] = {{1, 8, 1}, {5, 64, 5}, {17, 40, 9}, {197, 64, 99}, {33, 16, 7},
                            {64, 64, 4}, {100, 48, 6}, {129, 80, 3}, {29, 16, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int T = cases[c][0], hd = cases[c][1], nq = cases[c][2];
        float *o[3];
        attend_two(&ftv_kernels_scalar, simd, T, hd, nq, 1.0f / sqrtf((float)hd), o);
        CHECK(memcmp(o[0], o[1], sizeof(float) * nq * 3 * hd) == 0, "attend tokens %d hd %d queries %d", T, hd, nq);
        free(o[0]), free(o[1]), free(o[2]);
    }
}

/* ---- the fast numerics mode: close to the exact kernels, not equal ----------------------- */

/* attend_two's outputs of an exact set and its fast variant: near, and nothing written past the head */
static void check_fast_attend(const ftv_kernels *exact, int T, int hd, int nq, float *o[3]) {
    const int ld = 3 * hd;
    float worst = 0.0f; /* outputs are averages of values in [-1, 1]: bf16 rounds them to ~4e-3 */
    for (int i = 0; i < nq * ld; i++) worst = fabsf(o[0][i] - o[1][i]) > worst ? fabsf(o[0][i] - o[1][i]) : worst;
    CHECK(worst <= 4e-3f, "%s fast attend tokens %d hd %d: %g", exact->name, T, hd, worst);
    for (int i = 0; i < nq; i++) /* the other columns of the rows untouched */
        CHECK(memcmp(o[1] + i * ld, o[2] + i * ld, sizeof(float) * hd) == 0, "%s fast attend writes past its head",
              exact->name);
    free(o[0]), free(o[1]), free(o[2]);
}

/* The fast variant of an exact set: the same kernels but attention and GELU, which stay within
 * a small tolerance of the exact ones (fused multiply-adds; bf16 products of the weighted values
 * with AVX512_BF16 or on AMX tiles), on scratch of exactly its own size (AddressSanitizer sees any
 * overrun). */
static void test_fast_variant(const ftv_kernels *exact, const ftv_kernels *fast) {
    CHECK(fast->fast && !exact->fast && fast->tgemm == exact->tgemm && fast->norm_quant == exact->norm_quant &&
              fast->layernorm == exact->layernorm && fast->patch_gemm == exact->patch_gemm,
          "%s fast: only attention and GELU differ", exact->name);
    float g0[301], g1[301];
    for (int j = 0; j < 301; j++) g0[j] = g1[j] = frand(-8.0f, 8.0f);
    exact->gelu(g0, 301);
    fast->gelu(g1, 301);
    for (int j = 0; j < 301; j++) CHECK(fabsf(g0[j] - g1[j]) <= 1e-6f * (1.0f + fabsf(g0[j])), "%s fast gelu %d", exact->name, j);
    /* tokens, hd, queries; the AMX set's tiles: blocks of 16 queries whole and cut, keys past
     * the last 16 and 32, 32 and 96 dimensions (a tile of 64 and one of 32) */
    const int cases[][3] = {{17, 16, 17}, {17, 32, 5}, {197, 64, 9}, {50, 32, 50}, {33, 12, 7}, {1, 16, 1},
                            {197, 64, 40}, {45, 96, 19}, {16, 64, 16}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int T = cases[c][0], hd = cases[c][1], nq = cases[c][2];
        float *o[3];
        attend_two(exact, fast, T, hd, nq, 0.25f, o);
        check_fast_attend(exact, T, hd, nq, o);
    }
    /* sharp softmaxes (scores of ~20): a score rounded to bf16 moves a probability by ~4%, past
     * the bound; the AMX set's scores (two bf16 a factor) stay within it */
    for (int c = 0; c < 2; c++) {
        const int T = c ? 197 : 45, hd = c ? 64 : 96, nq = c ? 20 : 7;
        float *o[3];
        attend_two(exact, fast, T, hd, nq, 2.0f, o);
        check_fast_attend(exact, T, hd, nq, o);
    }
}

/* ---- exp, erf and GELU against double precision ------------------------------------- */

static void test_exp_erf_accuracy(void) {
    double worst_exp = 0.0, worst_gelu = 0.0, worst_erf = 0.0;
    for (int i = 0; i <= 400000; i++) {
        float x = -87.0f + 87.0f * (float)i / 400000.0f;
        double e = exp((double)x), ulp = (double)nextafterf((float)e, INFINITY) - (double)(float)e;
        double err = fabs((double)ftv_expf(x) - e) / ulp;
        worst_exp = err > worst_exp ? err : worst_exp;
    }
    for (int i = 0; i <= 400000; i++) {
        float x = -10.0f + 20.0f * (float)i / 400000.0f;
        double ex = 0.5 * (double)x * (1.0 + erf((double)x / sqrt(2.0)));
        float g = x;
        ftv_gelu(&g, 1);
        worst_gelu = fabs((double)g - ex) > worst_gelu ? fabs((double)g - ex) : worst_gelu;
        double ee = fabs((double)ftv_erff(0.6f * x) - erf((double)(0.6f * x)));
        worst_erf = ee > worst_erf ? ee : worst_erf;
    }
    CHECK(worst_exp <= 1.0, "expf: %.3f ulp", worst_exp);
    CHECK(worst_erf <= 1.0e-7, "erff: %.3g absolute", worst_erf);
    CHECK(worst_gelu <= 5e-7, "gelu: %.3g absolute", worst_gelu);
    CHECK(ftv_expf(-1000.0f) >= 0.0f && ftv_expf(-1000.0f) < 1.2e-38f && ftv_expf(0.0f) == 1.0f, "exp limits");
    CHECK(ftv_erff(10.0f) == 1.0f && ftv_erff(-10.0f) == -1.0f && ftv_erff(0.0f) == 0.0f && ftv_erff(4.0f) == 1.0f,
          "erf limits");
    float nan_gelu = NAN;
    ftv_gelu(&nan_gelu, 1);
    CHECK(ftv_erff(INFINITY) == 1.0f && ftv_erff(-INFINITY) == -1.0f && isnan(nan_gelu), "erf, gelu off range");
}

/* ---- the thread pool ----------------------------------------------------------------- */

typedef struct {
    ftv_pool *pool;
    int slot[8], seen[8], rounds;
} pool_job;

static void pool_work(void *ctx, int i, int n) {
    pool_job *j = (pool_job *)ctx;
    for (int r = 1; r <= j->rounds; r++) {
        j->slot[i] = r; /* every thread writes, then after the barrier reads every slot */
        ftv_pool_barrier(j->pool);
        int ok = 1;
        for (int s = 0; s < n; s++) ok &= j->slot[s] == r;
        j->seen[i] += ok;
        ftv_pool_barrier(j->pool);
    }
}

static void test_pool(void) {
    for (int n = 1; n <= 3; n++) {
        pool_job j = {.rounds = 200};
        int st = ftv_pool_create(n, &j.pool);
        if (n > 1 && !FTV_HAVE_THREADS) {
            CHECK(st != 0, "threads without thread support");
            continue;
        }
        CHECK(st == 0 && (n == 1) == (j.pool == NULL), "pool of %d", n);
        for (int run = 0; run < 3; run++) ftv_pool_run(j.pool, pool_work, &j);
        for (int i = 0; i < n; i++) CHECK(j.seen[i] == 3 * j.rounds, "pool of %d: thread %d saw %d", n, i, j.seen[i]);
        ftv_pool_free(j.pool);
    }
}

#if FTV_HAVE_THREADS && defined(__linux__)
#include <sched.h>
#include <unistd.h>

static void pool_where(void *ctx, int i, int n) {
    (void)n;
    ((int *)ctx)[i] = sched_getcpu();
}

/* A worker woken after an idle pause must not share its caller's core (ftv_threads.c: in a VM
 * guest Linux wakes it there). The caller is pinned to one core, the worker may use any: after
 * each 20 ms pause it must run elsewhere. Before the fix a probe saw 20 of 20 wake-ups share the
 * core on a 2-vCPU KVM guest; this test, with the caller pinned, failed 1 of its 10 rounds there. */
static void test_pool_cores(void) {
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2) {
        printf("skip test_pool_cores: fewer than 2 cores allowed\n");
        return;
    }
    ftv_pool *pool;
    CHECK(ftv_pool_create(2, &pool) == 0, "pool of 2");
    if (!pool) return;
    int first = 0;
    while (!CPU_ISSET(first, &allowed)) first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0, "pin the caller to core %d", first);
    for (int round = 0; round < 10; round++) {
        usleep(20000);
        int cpu[2] = {-1, -1};
        ftv_pool_run(pool, pool_where, cpu);
        CHECK(cpu[0] == first && cpu[1] >= 0 && cpu[1] != first, "round %d: caller on %d, worker on %d",
              round, cpu[0], cpu[1]);
    }
    sched_setaffinity(0, sizeof allowed, &allowed);
    ftv_pool_free(pool);
}
#endif

/* Count a test as failed when any CHECK inside it failed. */
#define RUN(call) do { int before_ = failures; call; if (failures == before_) tests_passed++; \
    else tests_failed++; } while (0)

int main(void) {
    RUN(test_f16());
    RUN(test_rmsnorm_quant());
    RUN(test_softmax_gelu());
    for (uint32_t kind = FTV_KIND_TQ2; kind <= FTV_KIND_TQ1; kind++) {
        RUN(test_decode_and_gemm(kind, 7, 13, 3, 0)); /* k not a multiple of 4 or 5: padded rows */
        RUN(test_decode_and_gemm(kind, 16, 384, 5, 0));
        RUN(test_decode_and_gemm(kind, 4, 1536, 2, 1)); /* worst case: |acc| = 128 * 1536 */
        /* the scalar GEMM takes 3 or 4 tokens at a time and 4 or 16 codes a step (by core):
         * every short last token group, k with every tail */
        for (int tokens = 1; tokens <= 9; tokens++) RUN(test_decode_and_gemm(kind, 3, 4 * tokens + 3, tokens, 0));
        RUN(test_decode_and_gemm(kind, 3, 33, 9, 1));
    }
    RUN(test_exp_erf_accuracy());
    RUN(test_pool());
#if FTV_HAVE_THREADS && defined(__linux__)
    RUN(test_pool_cores());
#endif
    /* every other kernel set this CPU runs, against the scalar one */
    const char *names[] = {"lut", "avx2", "avx512", "amx"};
    char tested[128] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(simd = ftv_kernels_by_name(names[i]))) continue;
        strcat(strcat(tested, " "), names[i]);
        RUN(test_simd_tgemm());
        RUN(test_simd_patch_gemm());
        RUN(test_simd_norm_quant());
        RUN(test_simd_layernorm());
        RUN(test_simd_gelu());
        RUN(test_simd_image_kernels());
        RUN(test_simd_attend());
    }
    CHECK(ftv_kernels_by_name("nonesuch") == NULL && ftv_kernels_by_name("scalar") == &ftv_kernels_scalar, "by name");
    /* unnamed: the best automatic set this CPU runs (amx, the emulated one too, then avx512,
     * avx2, scalar); lut only when named */
    if (!getenv("FTV_KERNELS") && !getenv("FTV_FORCE_SCALAR")) {
        const ftv_kernels *best = &ftv_kernels_scalar;
        for (size_t i = 1; i < sizeof names / sizeof names[0]; i++) /* names[] runs worst to best */
            if (ftv_kernels_by_name(names[i])) best = ftv_kernels_by_name(names[i]);
        CHECK(ftv_kernels_select() == best, "picked %s unnamed, not %s", ftv_kernels_select()->name, best->name);
    }
    CHECK(!ftv_kernels_fast(&ftv_kernels_scalar) && !ftv_kernels_fast(&ftv_kernels_lut), "no fast scalar sets");
    for (size_t i = 1; i < sizeof names / sizeof names[0]; i++) {
        const ftv_kernels *exact = ftv_kernels_by_name(names[i]), *fast = exact ? ftv_kernels_fast(exact) : NULL;
        if (!fast) continue;
        strcat(strcat(tested, " ") , "fast-");
        strcat(tested, names[i]);
        RUN(test_fast_variant(exact, fast));
    }
    printf("%d passed, %d failed (kernel sets against scalar:%s)\n", tests_passed, tests_failed, tested);
    return tests_failed != 0 || failures != 0; /* CHECKs outside a RUN count too */
}
