/* The kernels of the engine, in sets that compute the same bits: every set gives bit-identical
 * logits (engine/tests/test_kernels.c compares them kernel by kernel, tests/test_engine.py on
 * whole models).
 *
 *   ftv_kernels_scalar.c  the portable reference: C11, no allocation; all most microcontrollers run
 *   ftv_kernels_lut.c     the scalar set with a table-lookup GEMM (cores without SIMD multiply-add)
 *   ftv_kernels_avx2.c    x86 with AVX2 (ternary GEMM on vpmaddubsw)
 *   ftv_kernels_avx512.c  x86 with AVX-512 VNNI (ternary GEMM on vpdpbusd)
 *   ftv_kernels_amx.c     x86 with AMX (ternary GEMM on tdpbsud tiles; fast mode's attention on tdpbf16ps)
 *   ftv_kernels_x86.h     what the x86 sets share, written once for 8 and 16 lanes
 *   ftv_kernels_vnni.h    the AVX-512 GEMM's panels and register tiles (the AMX set's too)
 *   ftv_attend_bf16.h     the fast mode's bf16 attention of the 16-lane sets
 *   ftv_kernels.c         shared helpers, and ftv_kernels_select: the one place that knows every set
 *
 * Every float op mirrors PyTorch's order where the SPEC fixes it (rintf for torch.round,
 * x * rsqrt(mean(x^2) + eps) * g for RMSNorm), so the engine agrees with the model. Where the
 * order is free (the sums of a reduction), the scalar code uses an order SIMD code can
 * reproduce (ftv_math.h, FTV_LANES). */
#ifndef FTV_KERNELS_H
#define FTV_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* Queries one attention call handles at a time, and the scratch (floats) of ftv_attend. */
#define FTV_ATTEND_QUERIES 4
#define FTV_ATTEND_SCRATCH(ldk, hd) ((size_t)FTV_ATTEND_QUERIES * (size_t)((ldk) + (hd)))
size_t ftv_attend_scratch(int ldk, int hd, int tokens);

/* Value i of a file vector. Inline: the scalar kernels read weights with it element by element
 * (a call each costs a microcontroller ~10 instructions). memcpy: file data may sit at any
 * address (a Python bytes object, flash). */
static inline float ftv_fvec_get(const ftv_fvec *v, int i) {
    if (v->is_f16) {
        uint16_t h;
        memcpy(&h, v->data + 2 * (size_t)i, 2);
        return ftv_f16_to_f32(h);
    }
    float f;
    memcpy(&f, v->data + 4 * (size_t)i, 4);
    return f;
}

/* Decode row r of a ternary matrix into k int8 values in {-1, 0, 1}. */
void ftv_tmat_decode_row(const ftv_tmat *m, int r, int8_t *out);
/* Value of code i of the (1-row) ternary vector m: q / scale. */
static inline float ftv_tvec_get(const ftv_tmat *m, int i) {
    return (float)ftv_ternary_get(m->data, (uint32_t)i, m->kind) / m->scale;
}

/* RMSNorm with weight g, then int8 per-token quantization of one row of k floats.
 * Writes q (k int8) and *sum (the sum of the k codes, which the SIMD GEMMs need; sum may be
 * NULL for the scalar sets), and returns the scale s (value = q / s). */
float ftv_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps,
                        int k, int8_t *q, int32_t *sum);

/* The int8 input of a BitLinear, row by row: for r < rows, the row x + r * ldx (n floats),
 * LayerNorm'd first when ln_g is not NULL (ln_g, ln_b: its ternary gamma and beta; the output
 * in scratch, FTV_NORM_ROWS rows of n floats), then ftv_rmsnorm_quant with g into q + r * n,
 * s[r] and sum[r] (sum may be NULL in the scalar sets). */
#define FTV_NORM_ROWS 4 /* the most rows a set's norm_quant normalizes at once (scratch rows) */
void ftv_norm_quant(const float *x, size_t ldx, int rows, const ftv_tmat *ln_g, const ftv_tmat *ln_b, float ln_eps,
                    const ftv_fvec *g, float rms_eps, float quant_eps, int n, int8_t *q, float *s, int32_t *sum,
                    float *scratch);

/* Ternary x int8 GEMM, for t < tokens and o in [o0, o1):
 *   y[t*ldt + (o - o0)*ldo] = (sum_j xq[t*k + j] * w[o][j]) / (xs[t] * w.scale),
 * ldo = 1 giving token rows, ldt = 1 the transpose (keys for attention). xsum[t] is the sum
 * of token t's codes (ftv_rmsnorm_quant; unused, may be NULL, in the scalar sets). With `accumulate`, y += gamma[o] * value (residual
 * add with optional LayerScale; gamma n = 0: none). Scratch: ftv_kernels.gemm_scratch bytes. */
void ftv_tgemm_strided(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                       const int32_t *xsum, int tokens, float *y, int ldt, int ldo, void *scratch,
                       int accumulate, const ftv_fvec *gamma);

/* BitConv2d as a GEMM on int8 patches (tokens, k = chans * pp), each input channel with its
 * own scale xs[c] and its own integer sum: for o in [o0, o1),
 *   y[t*ldy + o - o0] = (sum_c acc_c / xs[c]) / row_scale[o] * cs[o] + bias[o] (bias: n = 0, none). */
void ftv_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                    int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy,
                    void *scratch);

/* LayerNorm of one row with ternary gamma/beta (FP32 statistics). */
void ftv_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                   float *out);

/* The image's per-channel quantizer and the position embedding: ftv_absmax = max |x[j]|, j < n;
 * ftv_quantize_patches: the patches [p0, p1) of an image (chans, h, w) of patches (ph, pw), each
 * gathered in (chans, ph, pw) order and quantized, q = rint(x * scales[channel]) clamped to int8,
 * into q + patch * chans * ph * pw; ftv_add_fvec: x[j] += v[i0 + j], j < n. */
float ftv_absmax(const float *x, int n);
void ftv_quantize_patches(const float *img, int chans, int h, int w, int ph, int pw, const float *scales, int p0,
                          int p1, int8_t *q);
void ftv_add_fvec(float *x, const ftv_fvec *v, int i0, int n);

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
typedef struct ftv_kernels ftv_kernels;
struct ftv_kernels {
    const char *name; /* "scalar", "lut", "avx2", "avx512", "amx" */
    /* 1: the fast numerics mode (fused multiply-add; bf16 products of attention's probabilities
     * and values where the CPU has AVX512_BF16; docs/engine.md), 0: exact (every set computes the
     * same bits) */
    int fast;
    const ftv_kernels *exact; /* the exact set this one is (itself) or is the fast variant of */
    /* 1: the forward pass may trade memory for speed (whole-sequence MLP buffers instead of
     * small tiles, ftv_forward.c); 0: the small arena of a microcontroller */
    int wide;
    /* Per-thread scratch bytes of tgemm / patch_gemm for rows of k codes and `tokens` tokens. */
    size_t (*gemm_scratch)(int k, int tokens);
    /* Bytes of the kernels' own copy of a ternary tensor (0: they read the file's codes);
     * writes it to dst when dst is not NULL. `values`: a LayerNorm vector, else a matrix. */
    size_t (*repack)(const ftv_tmat *w, int values, void *dst);
    void (*tgemm)(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, const int32_t *xsum,
                  int tokens, float *y, int ldt, int ldo, void *scratch, int accumulate, const ftv_fvec *gamma);
    void (*patch_gemm)(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                       int chans, int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y,
                       int ldy, void *scratch);
    void (*norm_quant)(const float *x, size_t ldx, int rows, const ftv_tmat *ln_g, const ftv_tmat *ln_b,
                       float ln_eps, const ftv_fvec *g, float rms_eps, float quant_eps, int n, int8_t *q, float *s,
                       int32_t *sum, float *scratch);
    void (*layernorm)(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                      float *out);
    void (*gelu)(float *x, int n);
    float (*absmax)(const float *x, int n);
    void (*quantize_patches)(const float *img, int chans, int h, int w, int ph, int pw, const float *scales, int p0,
                             int p1, int8_t *q);
    void (*add_fvec)(float *x, const ftv_fvec *v, int i0, int n);
    void (*attend)(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv,
                   int tokens, int hd, float scale, float *out, int ldo, int nq, float *scratch);
    /* Floats of attend's scratch for keys of stride ldk, heads of hd, `tokens` tokens. */
    size_t (*attend_scratch)(int ldk, int hd, int tokens);
};

/* The scalar sets' repack: none (they read the file's codes in place, flash on a microcontroller). */
size_t ftv_repack_none(const ftv_tmat *w, int values, void *dst);

/* The scalar kernels with a GEMM of one's own: the "scalar" and "lut" sets. */
#define FTV_SCALAR_KERNELS(NAME, SELF, GEMM_SCRATCH, TGEMM)                                                      \
    {                                                                                                            \
        .name = NAME, .fast = 0, .exact = SELF, .wide = 0, .gemm_scratch = GEMM_SCRATCH, .repack = ftv_repack_none, \
        .tgemm = TGEMM, .patch_gemm = ftv_patch_gemm, .norm_quant = ftv_norm_quant, .layernorm = ftv_layernorm,  \
        .gelu = ftv_gelu, .absmax = ftv_absmax, .quantize_patches = ftv_quantize_patches, .add_fvec = ftv_add_fvec,              \
        .attend = ftv_attend, .attend_scratch = ftv_attend_scratch                                               \
    }

/* The sets (each file defines its own; the x86 ones are empty elsewhere). */
extern const ftv_kernels ftv_kernels_scalar;
extern const ftv_kernels ftv_kernels_lut;
#if defined(__x86_64__) || defined(__i386__)
extern const ftv_kernels ftv_kernels_avx2_set;   /* only for CPUs with AVX2, F16C and FMA */
extern const ftv_kernels ftv_kernels_avx512_set; /* only for CPUs with AVX-512 F/BW/DQ/VL and VNNI */
/* The repacked layout both x86 sets read: row groups of FTV_RG rows (ftv_kernels_avx2.c). */
#define FTV_RG 8
size_t ftv_x86_repack(const ftv_tmat *w, int values, void *dst);
/* The fast numerics mode's variants */
extern const ftv_kernels ftv_kernels_avx2_fast;   /* fused multiply-add */
extern const ftv_kernels ftv_kernels_avx512_fast; /* fused multiply-add */
extern const ftv_kernels ftv_kernels_avx512_bf16; /* and bf16 probabilities x values (AVX512_BF16) */
#endif
#if defined(__x86_64__)
extern const ftv_kernels ftv_kernels_amx_set;  /* for CPUs with AMX-TILE, -INT8, -BF16 and the AVX-512 set's */
extern const ftv_kernels ftv_kernels_amx_fast; /* fused multiply-add, attention on AMX-BF16 tiles */
#endif

/* A set by name ("amx", "avx512", "avx2", "scalar", "lut") if this CPU and build run it, else NULL. */
const ftv_kernels *ftv_kernels_by_name(const char *name);

/* The fast-numerics variant of an exact set that this CPU runs, NULL when it has none (the
 * scalar sets: a microcontroller runs the exact mode). */
const ftv_kernels *ftv_kernels_fast(const ftv_kernels *exact);

/* What a model uses: the best set the CPU runs (AMX, else AVX-512, else AVX2, else scalar), unless
 * the environment caps it: FTV_KERNELS=avx512 | avx2 | scalar | lut (FTV_FORCE_SCALAR=1 is
 * FTV_KERNELS=scalar). A build may name its default with -DFTV_KERNELS_DEFAULT=\"lut\" (the
 * microcontroller ports' KERNELS=lut). */
const ftv_kernels *ftv_kernels_select(void);

#endif
