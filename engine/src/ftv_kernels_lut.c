/* The "lut" kernel set: the scalar set with a ternary GEMM by table lookup, for cores without
 * a SIMD multiply-add (chosen with FTV_KERNELS=lut, or -DFTV_KERNELS_DEFAULT=\"lut\" as the
 * microcontroller ports' KERNELS=lut builds do; never picked on its own).
 *
 * A packed byte holds 4 codes (tq2) or 5 (tq1), so byte g of a weight row always meets the
 * same group of 4 or 5 activations of a token. For a pair of tokens, a table gives, for each
 * group and each of the 256 byte values, the exact integer sums of the group's activations
 * times the byte's codes, both tokens packed in one 32-bit word. A row's dot products with the
 * two tokens are then one byte load, one table load and one add per weight byte (4 or 5
 * codes, 2 tokens): 8 or 10 multiply-accumulates. Building a pair's tables costs 81 (tq2) or
 * 243 (tq1) adds per group, repaid over the layer's rows (hundreds).
 *
 * Packing: a table entry is (s0 + B) | (s1 + B) << 16, s0, s1 the two tokens' sums and B a
 * bias that makes both halves non-negative (|s| <= 4 * 128 = 512 for tq2, 640 for tq1), so
 * 32-bit adds of entries never carry from the low half into the high one as long as a
 * half's total stays below 2^16: the sums are unpacked every CHUNK groups.
 *
 * Exact integer sums, then the float steps of ftv_tgemm_strided: bit-identical results.
 * Memory: the tables of a pair, ceil(k / 4) x 256 x 4 bytes (48 KiB at k = 192, 192 KiB at
 * k = 768), the scratch the engine gives each GEMM (ftv_kernels.gemm_scratch). */
#include "ftv_kernels.h"

#define TQ2_BIAS 512
#define TQ1_BIAS 640
#define TQ2_CHUNK 63 /* 63 * (2 * 512) < 2^16 */
#define TQ1_CHUNK 51 /* 51 * (2 * 640) < 2^16 */

static size_t lut_scratch(int k, int tokens) {
    (void)tokens;
    return (size_t)((k + 3) / 4) * 256u * sizeof(uint32_t);
}

/* Activation j of a token, 0 past the row (the padding codes there are 0 anyway). */
static int act(const int8_t *a, int k, int j) { return j < k ? a[j] : 0; }

/* Two tokens' sums, packed as the table entries are (both non-negative, below 2^16). */
static uint32_t pk(int s0, int s1) { return (uint32_t)s0 | (uint32_t)s1 << 16; }

/* tq2: byte = c0 | c1 << 2 | c2 << 4 | c3 << 6 with codes c = q + 1 < 3 (3 never occurs).
 * Entry = low[c0, c1] + high[c2, c3]; only the 81 valid bytes are written. */
static void build_tq2(const int8_t *a0, const int8_t *a1, int k, int groups, uint32_t *lut) {
    static const uint8_t nib[9] = {0, 1, 2, 4, 5, 6, 8, 9, 10}; /* c + 4 c' for c, c' < 3 */
    for (int g = 0; g < groups; g++, lut += 256) {
        int v0[4], v1[4];
        for (int i = 0; i < 4; i++) v0[i] = act(a0, k, 4 * g + i), v1[i] = act(a1, k, 4 * g + i);
        uint32_t lo[9], hi[9]; /* q = c - 1 in {-1, 0, 1}; each part biased by 256 */
        for (int q1 = -1, m = 0; q1 <= 1; q1++)
            for (int q0 = -1; q0 <= 1; q0++, m++) {
                lo[m] = pk(256 + q0 * v0[0] + q1 * v0[1], 256 + q0 * v1[0] + q1 * v1[1]);
                hi[m] = pk(256 + q0 * v0[2] + q1 * v0[3], 256 + q0 * v1[2] + q1 * v1[3]);
            }
        for (int h = 0; h < 9; h++) { /* unrolled: the stores are the cost of the build */
            uint32_t *row = lut + (nib[h] << 4), base = hi[h];
            row[0] = base + lo[0], row[1] = base + lo[1], row[2] = base + lo[2];
            row[4] = base + lo[3], row[5] = base + lo[4], row[6] = base + lo[5];
            row[8] = base + lo[6], row[9] = base + lo[7], row[10] = base + lo[8];
        }
    }
}

/* tq1: byte = c0 + 3 c1 + 9 c2 + 27 c3 + 81 c4 < 243; entry[l + 9 h] = low[l] + high[h] for the
 * 9 values l of (c0, c1) and the 27 values h of (c2, c3, c4). */
static void build_tq1(const int8_t *a0, const int8_t *a1, int k, int groups, uint32_t *lut) {
    for (int g = 0; g < groups; g++, lut += 256) {
        int v0[5], v1[5];
        for (int i = 0; i < 5; i++) v0[i] = act(a0, k, 5 * g + i), v1[i] = act(a1, k, 5 * g + i);
        uint32_t lo[9], hi[27]; /* biased by 256 (2 codes) and 384 (3 codes) */
        for (int q1 = -1, m = 0; q1 <= 1; q1++)
            for (int q0 = -1; q0 <= 1; q0++, m++)
                lo[m] = pk(256 + q0 * v0[0] + q1 * v0[1], 256 + q0 * v1[0] + q1 * v1[1]);
        for (int q4 = -1, m = 0; q4 <= 1; q4++)
            for (int q3 = -1; q3 <= 1; q3++)
                for (int q2 = -1; q2 <= 1; q2++, m++)
                    hi[m] = pk(384 + q2 * v0[2] + q3 * v0[3] + q4 * v0[4], 384 + q2 * v1[2] + q3 * v1[3] + q4 * v1[4]);
        for (int h = 0; h < 27; h++) {
            uint32_t *row = lut + 9 * h, base = hi[h];
            row[0] = base + lo[0], row[1] = base + lo[1], row[2] = base + lo[2];
            row[3] = base + lo[3], row[4] = base + lo[4], row[5] = base + lo[5];
            row[6] = base + lo[6], row[7] = base + lo[7], row[8] = base + lo[8];
        }
    }
}

/* One row against a pair's tables: s[0], s[1] = the two tokens' integer dot products. */
static void dot2(const uint8_t *p, int groups, const uint32_t *t, int chunk, int32_t bias, int32_t s[2]) {
    s[0] = s[1] = 0;
    for (int g0 = 0; g0 < groups; g0 += chunk) {
        const int n = groups - g0 < chunk ? groups - g0 : chunk;
        uint32_t acc = 0;
        int g = 0;
        for (; g + 4 <= n; g += 4, p += 4, t += 4 * 256) /* 4 bytes a step: fewer branches */
            acc += t[p[0]] + t[256 + p[1]] + t[512 + p[2]] + t[768 + p[3]];
        for (; g < n; g++, p++, t += 256) acc += t[*p];
        s[0] += (int32_t)(acc & 0xFFFFu) - n * bias;
        s[1] += (int32_t)(acc >> 16) - n * bias;
    }
}

/* Same contract and bit-identical results as ftv_tgemm_strided (xsum unused). */
static void lut_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, const int32_t *xsum,
                      int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma) {
    (void)xsum;
    const int k = w->k, groups = w->row_bytes, tq2 = w->kind == FTV_KIND_TQ2;
    const int chunk = tq2 ? TQ2_CHUNK : TQ1_CHUNK, bias = tq2 ? TQ2_BIAS : TQ1_BIAS;
    const int use_gamma = accumulate && gamma && gamma->n;
    uint32_t *lut = (uint32_t *)scratch;
    for (int t = 0; t < tokens; t += 2) {
        const int pair = t + 1 < tokens; /* an odd last token is paired with itself */
        const int8_t *a0 = xq + (size_t)t * k, *a1 = pair ? a0 + k : a0;
        if (tq2) build_tq2(a0, a1, k, groups, lut);
        else build_tq1(a0, a1, k, groups, lut);
        const float d0 = xs[t], d1 = xs[t + pair];
        const float div0 = d0 * w->scale, div1 = d1 * w->scale; /* as ftv_tgemm_strided */
        const uint8_t *p = w->data + (size_t)o0 * w->row_bytes;
        for (int o = o0; o < o1; o++, p += w->row_bytes) {
            int32_t s[2];
            dot2(p, groups, lut, chunk, bias, s);
            const float g = use_gamma ? ftv_fvec_get(gamma, o) : 1.0f;
            for (int i = 0; i <= pair; i++) {
                float v = (float)s[i] / (i ? div1 : div0);
                float *dst = y + (size_t)(t + i) * ldt + (size_t)(o - o0) * ldo;
                if (accumulate) *dst += g * v;
                else *dst = v;
            }
        }
    }
}

const ftv_kernels ftv_kernels_lut = FTV_SCALAR_KERNELS("lut", &ftv_kernels_lut, lut_scratch, lut_tgemm);
