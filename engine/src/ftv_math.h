/* exp and erf for the engine's softmax and GELU, written out so that the scalar kernels and
 * the SIMD kernels (ftv_kernels_x86.h) run the very same float operations in the same order
 * and agree to the bit. libm's expf/erff cannot be vectorized to match, and any difference
 * feeding an int8 quantizer can flip a code (docs/engine.md).
 *
 * Only multiplies and adds, never fused (the engine builds with -ffp-contract=off): cores
 * without FMA (Cortex-M0/M3, x86 without FMA) compute the same values as those with it.
 * Accuracy against double precision on dense grids (checked by engine/tests/test_kernels.c):
 *   ftv_expf on [-87, 0]: at most 0.97 ulp;
 *   ftv_erff on [-6, 6]: at most 1.0e-7 absolute (1.7 ulp at 1);
 *   GELU built on it, on [-10, 10]: at most 4.7e-7 absolute from the exact function, the
 *   float32 rounding of the result (half an ulp of 10 is 4.8e-7). */
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
 * element j into partial sum j % FTV_LANES, then combine the partial sums by folding halves:
 * p[i] += p[i + 32] for i < 32, then p[i] += p[i + 16], ..., p[0] += p[1]. FTV_LANES = 64 is four
 * 16-float AVX-512 registers (eight AVX2 ones) that SIMD code adds to in turn, so that no add
 * waits for the one before it, and the folds are its vector adds and the usual halving of a
 * register; the scalar code follows the same order, so all kernel sets agree to the bit. */
#define FTV_LANES 64

/* The folds in place: part holds partial sums no more afterwards. */
static inline float ftv_lanes_sum(float part[FTV_LANES]) {
    for (int w = FTV_LANES / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) part[i] += part[i + w];
    return part[0];
}

/* A norm's factor 1 / sqrt(sum / n + eps) (RMSNorm: the sum of squares; LayerNorm: of the
 * squared deviations), or NaN when the sum is not finite: a value upstream overflowed, or its
 * square does. The NaN then reaches the logits, which ftv_model_forward checks, instead of
 * being quantized into ordinary codes (a quantizer's absolute maximum skips NaN). Every
 * kernel set takes this path, so they stay bit-identical. */
static inline float ftv_norm_factor(float sum, int n, float eps) {
    return isfinite(sum) ? 1.0f / sqrtf(sum / (float)n + eps) : NAN;
}

/* The int8 scale 127 / max(absmax, eps) of a row normalized by factor r (NaN stays NaN). */
static inline float ftv_quant_scale(float amax, float eps, float r) {
    return isnan(r) ? r : 127.0f / (amax > eps ? amax : eps);
}

/* A value already rounded to an integer, clamped to int8; NaN gives -128, as the SIMD
 * kernels' max(v, -128) does, and no undefined conversion. */
static inline int8_t ftv_to_int8(float v) {
    return (int8_t)(v > 127.0f ? 127 : v >= -128.0f ? (int)v : -128);
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
    /* 2^n, n in [-126, 127]; x NaN (p is NaN then): any scale, without an undefined conversion */
    uint32_t bits = (uint32_t)((isnan(n) ? 0 : (int32_t)n) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erff: |x| cut into FTV_ERF_N intervals of width 1/2 (the interval index is the integer part
 * of 2|x|); on interval i, erf = P_i(|x| - center_i), a polynomial of degree FTV_ERF_DEG (near-
 * minimax fits, Lawson's weighted least squares; interval 0 has no constant term, so erf(0) = 0
 * exactly); past FTV_ERF_CLAMP, 1 (erf(4) rounds to 1 in float). One polynomial per value, its
 * coefficients picked by the interval: SIMD code selects them with a permute of an 8-lane table,
 * instead of evaluating two branches and blending. Coefficients: [power, highest first][interval]. */
#define FTV_ERF_N 8
#define FTV_ERF_DEG 6 /* ftv_erff writes its 6 steps out */
#define FTV_ERF_CLAMP 4.0f
#define FTV_GELU_C 0.70710678118654752f /* 1 / sqrt(2): GELU(x) = x / 2 (1 + erf(x c)) */
static const float ftv_erf_center[FTV_ERF_N] = {0.0f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3.25f, 3.75f};
static const float ftv_erf_coef[FTV_ERF_DEG + 1][FTV_ERF_N] = {
    {-0.0388242751f, -0.0265467111f, 0.020512946f, 0.00905978214f, -0.00276420079f, -0.00166910188f,
     -0.000275040133f, -2.08733527e-05f},
    {0.136505961f, -0.0512618795f, -0.0467786603f, 0.00596977631f, 0.0105813826f, 0.00282581267f, 0.000332612719f,
     2.02048923e-05f},
    {-0.00734374998f, 0.150672242f, -0.00612411741f, -0.0481064916f, -0.0190896932f, -0.00325759291f,
     -0.000286049268f, -1.37684438e-05f},
    {-0.374953955f, 0.0267272983f, 0.16752322f, 0.0901776478f, 0.0217269603f, 0.00275820866f, 0.000195219531f,
     7.91175626e-06f},
    {-8.68791976e-05f, -0.482198089f, -0.295651942f, -0.0923561826f, -0.0160701238f, -0.00161227013f,
     -9.48721499e-05f, -3.30646867e-06f},
    {1.12838137f, 0.642931521f, 0.236521214f, 0.0527748391f, 0.00714230025f, 0.00058629422f, 2.91936431e-05f,
     8.81886194e-07f},
    {0.0f, 0.711155653f, 0.92290014f, 0.986671686f, 0.998537302f, 0.999899387f, 0.999995708f, 0.999999881f},
};

static inline float ftv_erff(float x) {
    const float t = fabsf(x), t2 = t * 2.0f;
    const int i = t2 < (float)FTV_ERF_N ? (int)t2 : FTV_ERF_N - 1; /* NaN: the last interval */
    const float u = t - ftv_erf_center[i];
    const float *c = &ftv_erf_coef[0][i]; /* Horner written out: a loop costs a microcontroller more */
    float p = c[0];
    p = p * u + c[1 * FTV_ERF_N];
    p = p * u + c[2 * FTV_ERF_N];
    p = p * u + c[3 * FTV_ERF_N];
    p = p * u + c[4 * FTV_ERF_N];
    p = p * u + c[5 * FTV_ERF_N];
    p = p * u + c[6 * FTV_ERF_N];
    return copysignf(t < FTV_ERF_CLAMP ? p : 1.0f, x);
}

#endif
