/* Scalar reference kernels of the engine: portable C99, no allocation.
 * Every float op mirrors PyTorch's order where the SPEC fixes it (rintf for torch.round,
 * x * rsqrt(mean(x^2) + eps) * g for RMSNorm), so the engine agrees with the model. */
#ifndef FTV_KERNELS_H
#define FTV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ftv_format.h"

/* A floating-point vector stored in the file as FP16 or FP32 (read in place, never copied). */
typedef struct {
    const uint8_t *data;
    int is_f16;
    int n;
} ftv_fvec;

/* A packed ternary matrix (rows, k): tq2 (4 codes a byte) or tq1 (5 trits a byte).
 * Value of a code q in {-1,0,1} is q / scale (per tensor) or q / row_scale[r]. */
typedef struct {
    const uint8_t *data;
    int rows, k, row_bytes;
    uint32_t kind;        /* FTV_KIND_TQ2 or FTV_KIND_TQ1 */
    float scale;          /* per-tensor scale, 0 when row scales are used */
    ftv_fvec row_scale;   /* per-row scales (patch embedding), n = 0 otherwise */
} ftv_tmat;

float ftv_fvec_get(const ftv_fvec *v, int i);

/* Decode row r of a ternary matrix into k int8 values in {-1, 0, 1}. */
void ftv_tmat_decode_row(const ftv_tmat *m, int r, int8_t *out);
/* Value of code i of the (1-row) ternary vector m: q / scale. */
float ftv_tvec_get(const ftv_tmat *m, int i);

/* RMSNorm with weight g, then int8 per-token quantization of one row of k floats.
 * Writes q (k int8) and returns the scale s (value = q / s). */
float ftv_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps,
                        int k, int8_t *q);

/* Ternary x int8 GEMM: y[t*ldy + o] = (sum_k xq[t*k + j] * w[o][j]) / (xs[t] * w.scale)
 * for t < tokens and o in [o0, o1). `row` is a k-byte scratch for one decoded weight row.
 * With `accumulate`, y += gamma[o] * value (residual add with optional LayerScale). */
void ftv_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
               float *y, int ldy, int8_t *row, int accumulate, const ftv_fvec *gamma);

/* LayerNorm of one row with ternary gamma/beta (FP32 statistics). */
void ftv_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                   float *out);

/* In-place softmax of n floats. */
void ftv_softmax(float *x, int n);

/* In-place exact GELU (erf form, as torch.nn.GELU()). */
void ftv_gelu(float *x, int n);

#endif
