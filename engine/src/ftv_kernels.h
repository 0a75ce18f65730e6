/* Kernels of the engine: the portable scalar reference (ftv_kernels.c, C11, no allocation)
 * and, on x86, AVX2 versions (ftv_kernels_avx2.c) chosen at load when the CPU has AVX2.
 * Every float op mirrors PyTorch's order where the SPEC fixes it (rintf for torch.round,
 * x * rsqrt(mean(x^2) + eps) * g for RMSNorm), so the engine agrees with the model. Where the
 * order is free (the sums of a reduction), the scalar code uses the order the SIMD code can
 * reproduce: both paths give bit-identical results, tested in engine/tests/test_kernels.c. */
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
    const void *repack;   /* the SIMD kernels' copy (ftv_kernels.repack), NULL when none */
} ftv_tmat;

/* Queries one attention call handles at a time, and its scratch (floats) per thread. */
#define FTV_ATTEND_QUERIES 4
#define FTV_ATTEND_SCRATCH(ldk, hd) ((size_t)FTV_ATTEND_QUERIES * (size_t)((ldk) + (hd)))

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

/* ftv_tgemm writing y[t*ldt + (o - o0)*ldo]: ldo = 1 gives token rows, ldt = 1 the
 * transpose (keys for attention). Scratch: ftv_kernels.gemm_scratch bytes. */
void ftv_tgemm_strided(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                       int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate,
                       const ftv_fvec *gamma);

/* BitConv2d as a GEMM on int8 patches (tokens, k = chans * pp), each input channel with its
 * own scale xs[c] and its own integer sum: for o in [o0, o1),
 *   y[t*ldy + o - o0] = (sum_c acc_c / xs[c]) / row_scale[o] * cs[o] + bias[o] (bias: n = 0, none). */
void ftv_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                    int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy,
                    void *scratch);

/* LayerNorm of one row with ternary gamma/beta (FP32 statistics). */
void ftv_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                   float *out);

/* In-place softmax of n floats. */
void ftv_softmax(float *x, int n);

/* In-place exact GELU (erf form, as torch.nn.GELU(); erf from ftv_math.h). */
void ftv_gelu(float *x, int n);

/* Attention of nq queries of one head: query i at q + i*ldq (head_dim floats), keys
 * transposed (kt[d*ldk + j], ldk >= tokens), values v[j*ldv + d]; writes
 * out[i*ldo + d] = sum_j softmax_j(q.k_j * scale) v[j][d]. out may alias q.
 * Scratch: FTV_ATTEND_SCRATCH(ldk, hd) floats. */
void ftv_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                int hd, float scale, float *out, int ldo, int nq, float *scratch);

/* One implementation of every kernel the forward pass calls. */
typedef struct {
    const char *name; /* "scalar", "avx2" */
    /* Per-thread scratch bytes of tgemm / patch_gemm for rows of k codes and `tokens` tokens. */
    size_t (*gemm_scratch)(int k, int tokens);
    /* Bytes of the kernels' own copy of a ternary tensor (0: they read the file's codes);
     * writes it to dst when dst is not NULL. `values`: a LayerNorm vector, else a matrix. */
    size_t (*repack)(const ftv_tmat *w, int values, void *dst);
    void (*tgemm)(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
                  float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma);
    void (*patch_gemm)(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                       int chans, int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y,
                       int ldy, void *scratch);
    float (*rmsnorm_quant)(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps, int k,
                           int8_t *q);
    void (*layernorm)(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                      float *out);
    void (*gelu)(float *x, int n);
    void (*attend)(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv,
                   int tokens, int hd, float scale, float *out, int ldo, int nq, float *scratch);
} ftv_kernels;

extern const ftv_kernels ftv_kernels_scalar;

#if defined(__x86_64__) || defined(__i386__)
/* The AVX2 kernels (ftv_kernels_avx2.c) when the CPU runs them, else NULL. */
const ftv_kernels *ftv_kernels_avx2(void);
/* The same with AVX-512 (VNNI) where it pays, when the CPU runs them, else NULL. */
const ftv_kernels *ftv_kernels_avx512(void);
#endif

/* What a model uses: AVX-512, else AVX2 when available, unless the environment sets FTV_FORCE_SCALAR
 * (to anything but "0"). */
const ftv_kernels *ftv_kernels_select(void);

#endif
