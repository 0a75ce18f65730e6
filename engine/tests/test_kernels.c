/* Unit tests of the scalar kernels against naive re-computations (run under ASan/UBSan by
 * `make test`). File-level tests (exported models, damaged files) are in tests/test_engine.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftv_kernels.h"

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
    ftv_tmat m = {packed, rows, k, rb, kind, 2.0f, {NULL, 0, 0}};
    for (int r = 0; r < rows; r++) {
        ftv_tmat_decode_row(&m, r, row);
        CHECK(memcmp(row, q + (size_t)r * k, (size_t)k) == 0, "decode kind %u row %d", kind, r);
    }
    ftv_tgemm(&m, 0, rows, xq, xs, tokens, y, rows, row, 0, NULL);
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
    float s = ftv_rmsnorm_quant(x, &gv, 1e-5f, 1e-5f, 4, q);
    /* the largest |h| maps to 127: s = 127 / (4 r) with r = 1 / rms */
    float r = 1.0f / sqrtf((1.0f + 4.84f + 0.25f + 16.0f) / 4.0f + 1e-5f);
    CHECK(fabsf(s - 127.0f / (4.0f * r)) < 1e-4f, "scale %g", s);
    CHECK(q[3] == 127 && q[1] == -70 && q[0] == 32 && q[2] == 16, "codes %d %d %d %d", q[0], q[1], q[2], q[3]);
    float zeros[4] = {0};
    s = ftv_rmsnorm_quant(zeros, &gv, 1e-5f, 1e-5f, 4, q);
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
    }
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed != 0;
}
