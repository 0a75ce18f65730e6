/* DeiT-Tiny's FC1 layer (197 tokens x 192 -> 768, 29.0 M multiply-accumulates) on one core:
 * packed ternary against a plain FP32 loop. Built for each emulated core by the ports
 * Makefile (APP=...fc1.c) and run by benchmarks/fc1/run.py, which counts the instructions
 * between the port_mark() calls with the QEMU plugin.
 *
 * Regions (port_mark(2i) -> port_mark(2i + 1)):
 *   0  FP32: y = x W^T, float weights and activations, the naive triple loop
 *   1  activation quantization (RMSNorm + int8 per token, ftv_rmsnorm_quant), needed by both
 *      ternary variants since the layer's input is float
 *   2  tq2 GEMM, the engine's scalar kernel (ftv_tgemm_strided: decode a row, int8 MACs)
 *   3  tq2 GEMM, table lookup (the "lut" kernel set, engine/src/ftv_kernels_lut.c)
 *   4  tq1 GEMM, the engine's scalar kernel
 *   5  tq1 GEMM, table lookup
 * The data are generated in RAM by a fixed PRNG (instruction counts do not depend on where
 * they live; on a board the weights would be in flash). The FP32 weights are the ternary
 * ones dequantized. Every ternary result is checked bit for bit against the first one, and
 * hashes of the FP32 and ternary outputs are printed (the same on every core). */
#include <stdio.h>
#include <string.h>

#include "ftv_kernels.h"
#include "port.h"

#define TOKENS 197
#define K 192
#define N 768
#define TQ2_ROW ((K + 3) / 4)
#define TQ1_ROW ((K + 4) / 5)

static float x[TOKENS * K], w32[N * K];
static int8_t q[N * K]; /* ternary weights, values in {-1, 0, 1} */
static uint8_t tq2[N * TQ2_ROW], tq1[N * TQ1_ROW];
static int8_t xq[TOKENS * K];
static float xs[TOKENS], ones[K];
static float y32[TOKENS * N], yt[TOKENS * N], yt_ref[TOKENS * N];
static uint32_t scratch[((K + 3) / 4) * 256]; /* the lookup GEMM's gemm_scratch(K); the scalar one needs K bytes */

static uint32_t rng = 0x2545F491u;
static uint32_t next(void) { /* xorshift32 */
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void pack(void) {
    memset(tq2, 0, sizeof tq2);
    memset(tq1, 0, sizeof tq1);
    for (int o = 0; o < N; o++) {
        for (int j = 0; j < TQ2_ROW * 4; j++) { /* code = q + 1, padding 0 -> code 1 */
            unsigned c = j < K ? (unsigned)(q[o * K + j] + 1) : 1u;
            tq2[o * TQ2_ROW + j / 4] |= (uint8_t)(c << (2 * (j % 4)));
        }
        for (int b = 0; b < TQ1_ROW; b++) {
            unsigned v = 0;
            for (int t = 4; t >= 0; t--) {
                int j = 5 * b + t;
                v = 3 * v + (j < K ? (unsigned)(q[o * K + j] + 1) : 1u);
            }
            tq1[o * TQ1_ROW + b] = (uint8_t)v;
        }
    }
}

static void fp32_gemm(void) {
    for (int t = 0; t < TOKENS; t++)
        for (int o = 0; o < N; o++) {
            const float *a = x + t * K, *wr = w32 + o * K;
            float acc = 0.0f;
            for (int j = 0; j < K; j++) acc += a[j] * wr[j];
            y32[t * N + o] = acc;
        }
}

static int check(const char *what) {
    if (memcmp(yt, yt_ref, sizeof yt) == 0) return 0;
    printf("fc1 error: %s differs from the first ternary result\n", what);
    return 1;
}

int main(void) {
    const float scale = 1.5f; /* value = q / scale */
    for (int i = 0; i < N * K; i++) {
        uint32_t r = next() % 3u;
        q[i] = (int8_t)((int)r - 1);
        w32[i] = (float)q[i] / scale;
    }
    for (int i = 0; i < TOKENS * K; i++) x[i] = (float)((int32_t)(next() >> 8) - (1 << 23)) / (float)(1 << 22);
    for (int j = 0; j < K; j++) ones[j] = 1.0f;
    pack();
    ftv_fvec g = {(const uint8_t *)ones, 0, K};
    ftv_tmat w2 = {tq2, N, K, TQ2_ROW, FTV_KIND_TQ2, scale, {NULL, 0, 0}, NULL};
    ftv_tmat w1 = {tq1, N, K, TQ1_ROW, FTV_KIND_TQ1, scale, {NULL, 0, 0}, NULL};
    int bad = 0;

    /* each region between port_mark(2i) and port_mark(2i + 1) */
    port_mark(0);
    fp32_gemm();
    port_mark(1);
    port_mark(2);
    for (int t = 0; t < TOKENS; t++) xs[t] = ftv_rmsnorm_quant(x + t * K, &g, 1e-6f, 1e-5f, K, xq + t * K, NULL);
    port_mark(3);
    port_mark(4);
    ftv_tgemm_strided(&w2, 0, N, xq, xs, NULL, TOKENS, yt_ref, N, 1, scratch, 0, NULL);
    port_mark(5);
    port_mark(6);
    ftv_kernels_lut.tgemm(&w2, 0, N, xq, xs, NULL, TOKENS, yt, N, 1, scratch, 0, NULL);
    port_mark(7);
    bad += check("tq2 lookup");
    port_mark(8);
    ftv_tgemm_strided(&w1, 0, N, xq, xs, NULL, TOKENS, yt, N, 1, scratch, 0, NULL);
    port_mark(9);
    bad += check("tq1 scalar");
    port_mark(10);
    ftv_kernels_lut.tgemm(&w1, 0, N, xq, xs, NULL, TOKENS, yt, N, 1, scratch, 0, NULL);
    port_mark(11);
    bad += check("tq1 lookup");

    /* checksums keep every result live and show the same numbers on every core */
    uint32_t h32 = 0, ht = 0;
    for (int i = 0; i < TOKENS * N; i++) {
        uint32_t b;
        memcpy(&b, &y32[i], 4);
        h32 = h32 * 31u + b;
        memcpy(&b, &yt_ref[i], 4);
        ht = ht * 31u + b;
    }
    printf("fc1 tokens=%d k=%d n=%d macs=%lu fp32_hash=%08lx ternary_hash=%08lx ternary_identical=%d\n", TOKENS,
           K, N, (unsigned long)TOKENS * K * N, (unsigned long)h32, (unsigned long)ht, !bad);
    return bad;
}
