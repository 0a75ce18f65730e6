/* exp and erf for the engine's softmax and GELU, written out so that the scalar kernels and
 * the SIMD kernels (ftv_kernels_x86.h) run the very same float operations in the same order
 * and agree to the bit. libm's expf/erff cannot be vectorized to match, and any difference
 * feeding an int8 quantizer can flip a code (docs/engine.md).
 *
 * Only multiplies and adds, never fused (the engine builds with -ffp-contract=off): cores
 * without FMA (Cortex-M0/M3, x86 without FMA) compute the same values as those with it.
 * Accuracy against double precision on dense grids (checked by engine/tests/test_kernels.c):
 *   ftv_expf on [-87, 0]: at most 0.97 ulp;
 *   ftv_erff on [-6, 6]: at most 1.3e-7 absolute (2.2 ulp at 1);
 *   GELU built on it, on [-10, 10]: at most 4.5e-7 absolute from the exact function, the
 *   same as the float32 rounding of a correctly rounded erf (within one output ulp of it). */
#ifndef FTV_MATH_H
#define FTV_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* expf: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, e^r by Cephes' degree-6
 * polynomial, then scaled by 2^n built in the exponent bits. Inputs are clamped so that 2^n
 * stays a normal number: below -87.34 the result is FLT_MIN-ish instead of a subnormal. */
#define FTV_EXP_MAX 88.0f
#define FTV_EXP_MIN (-87.3365448f)
#define FTV_LOG2E 1.44269504f
#define FTV_LN2_HI 0.693359375f /* 9 significant bits: n * FTV_LN2_HI is exact */
#define FTV_LN2_LO (-2.12194440e-4f)
#define FTV_EXP_P0 1.9875691500e-4f
#define FTV_EXP_P1 1.3981999507e-3f
#define FTV_EXP_P2 8.3334519073e-3f
#define FTV_EXP_P3 4.1665795894e-2f
#define FTV_EXP_P4 1.6666665459e-1f
#define FTV_EXP_P5 5.0000001201e-1f

/* Float reductions (sums of squares, softmax denominators, LayerNorm statistics) accumulate
 * element j into partial sum j % FTV_LANES, then combine the partial sums pairwise: the order
 * of one 16-float AVX-512 register (two AVX2 registers), which the scalar code follows so that
 * all kernel sets agree to the bit. */
#define FTV_LANES 16

static inline float ftv_lanes_sum(const float p[FTV_LANES]) {
    const float lo = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    const float hi = ((p[8] + p[9]) + (p[10] + p[11])) + ((p[12] + p[13]) + (p[14] + p[15]));
    return lo + hi;
}

static inline float ftv_expf(float x) {
    x = FTV_EXP_MAX < x ? FTV_EXP_MAX : x; /* written as the SIMD min/max order: NaN passes */
    x = FTV_EXP_MIN > x ? FTV_EXP_MIN : x;
    float n = rintf(x * FTV_LOG2E);
    float r = x - n * FTV_LN2_HI;
    r = r - n * FTV_LN2_LO;
    float z = r * r;
    float p = FTV_EXP_P0;
    p = p * r + FTV_EXP_P1;
    p = p * r + FTV_EXP_P2;
    p = p * r + FTV_EXP_P3;
    p = p * r + FTV_EXP_P4;
    p = p * r + FTV_EXP_P5;
    p = p * z + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erff: for |x| < 1, x + x * A(x^2); for 1 <= |x|, 1 - exp(B(min(|x|, 4) - 2.5)) with B a
 * fit of log(erfc) on [1, 4] (past 4, erf rounds to 1 in float). Coefficients: weighted
 * least squares to minimax (Lawson), highest degree first. */
#define FTV_ERF_SPLIT 1.0f
#define FTV_ERF_CLAMP 4.0f
#define FTV_ERF_MID 2.5f
#define FTV_ERF_A_N 7
#define FTV_ERF_B_N 10
static const float ftv_erf_a[FTV_ERF_A_N] = {7.88927937e-05f, -0.000802089344f, 0.00518954173f,
                                             -0.026854448f,   0.112836003f,     -0.37612626f,
                                             0.128379166f};
static const float ftv_erf_b[FTV_ERF_B_N] = {
    -5.55554536e-08f, 1.61495336e-06f, -1.30281187e-05f, 7.73904103e-05f, -0.000420619268f,
    0.00216516596f,   -0.01085822f,    -0.943893671f,    -5.35268068f,    -7.80681515f};

static inline float ftv_erff(float x) {
    float t = fabsf(x), r;
    if (t < FTV_ERF_SPLIT) {
        float z = t * t, p = ftv_erf_a[0];
        for (int i = 1; i < FTV_ERF_A_N; i++) p = p * z + ftv_erf_a[i];
        r = t + t * p;
    } else {
        float u = (FTV_ERF_CLAMP < t ? FTV_ERF_CLAMP : t) - FTV_ERF_MID, p = ftv_erf_b[0];
        for (int i = 1; i < FTV_ERF_B_N; i++) p = p * u + ftv_erf_b[i];
        r = 1.0f - ftv_expf(p);
    }
    return copysignf(r, x);
}

#endif
