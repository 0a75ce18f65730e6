/* ftervit.h - the FTerViT inference engine: load a .ftv file, classify an image.
 *
 * Portable C11 + libm (+ pthreads for threads > 1 on POSIX). One arena, sized at load, holds
 * every activation buffer; nothing is allocated in the forward pass. Weights are read in
 * place from the file image, which may be a caller's buffer (flash, mmap) that must outlive
 * the model; on x86 with AVX2 the kernels also keep a repacked copy (ftv_model_repacked_bytes).
 *
 *   ftv_model *m;
 *   char err[256];
 *   if (ftv_model_load_file("model.ftv", &m, err, sizeof err) != FTV_OK) { puts(err); ... }
 *   float logits[ftv_model_config(m)->num_classes];
 *   ftv_model_forward(m, image, logits);   // image: (C, H, W) floats, already normalized
 *   ftv_model_free(m);
 */
#ifndef FTERVIT_H
#define FTERVIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FTV_OK = 0,
    FTV_ERR_IO = 1,       /* the file could not be opened or read */
    FTV_ERR_FORMAT = 2,   /* not a .ftv file, or damaged: bad magic, bounds, shapes, codes */
    FTV_ERR_VERSION = 3,  /* a newer format version than this engine reads */
    FTV_ERR_CHECKSUM = 4, /* CRC32 mismatch: the file is corrupted */
    FTV_ERR_NOMEM = 5,    /* the arena (or the file buffer) could not be allocated */
    FTV_ERR_ARG = 6,      /* invalid argument */
    FTV_ERR_INPUT = 7,    /* the input image holds NaN or infinity */
    FTV_ERR_OVERFLOW = 8, /* a value of the forward pass overflowed float range: no logits */
} ftv_status;

/* The model geometry read from the header. */
typedef struct {
    int img_h, img_w, patch_h, patch_w, in_chans;
    int embed_dim, depth, num_heads, mlp_hidden, num_classes;
    int num_tokens; /* patches + class token */
    uint32_t flags, format;
    float mean[4], std[4]; /* input normalization, per channel */
} ftv_config;

typedef struct ftv_model ftv_model;

/* Read a whole file into memory, validate it, and bind the weights. */
ftv_status ftv_model_load_file(const char *path, ftv_model **out, char *err, size_t errlen);

/* Validate `size` bytes at `data` and bind the weights in place (no copy). The buffer must
 * stay valid and unchanged for the model's lifetime. */
ftv_status ftv_model_load_buffer(const void *data, size_t size, ftv_model **out, char *err,
                                 size_t errlen);

void ftv_model_free(ftv_model *m);

const ftv_config *ftv_model_config(const ftv_model *m);

/* Bytes of working memory the forward pass uses (the arena), beyond the weights. */
size_t ftv_model_arena_bytes(const ftv_model *m);

#define FTV_MAX_THREADS 256

/* Run the forward pass on n threads (default 1): a fixed pool of n - 1 workers plus the
 * caller, and an arena re-laid out for n threads' scratch. The logits do not depend on n.
 * FTV_ERR_ARG when n is out of range or n > 1 in a build without threads (FTV_NO_THREADS,
 * non-POSIX targets). */
ftv_status ftv_model_set_threads(ftv_model *m, int n);
int ftv_model_threads(const ftv_model *m);

/* The kernels chosen at load: "avx512" (x86 CPUs with AVX-512 F/BW/DQ/VL and VNNI), "avx2"
 * (x86 CPUs with AVX2 and F16C) or "scalar" (everything else). The environment caps the choice
 * at load: FTV_KERNELS=avx2 or FTV_KERNELS=scalar (FTV_FORCE_SCALAR=1 is the same as the
 * latter); FTV_KERNELS=lut and FTV_KERNELS=amx (CPUs with AMX-INT8; not chosen otherwise until
 * it has run on one) name sets never chosen on their own. Every set gives bit-identical logits. */
const char *ftv_model_kernels(const ftv_model *m);

/* The float arithmetic of attention, softmax and GELU:
 *   FTV_NUMERICS_EXACT (the default): every kernel set computes the same bits, multiplies and
 *     adds rounded apart as in the scalar reference (and on microcontrollers);
 *   FTV_NUMERICS_FAST: fused multiply-adds, and on CPUs with AVX512_BF16 the products of the
 *     attention probabilities and values in bf16 (fp32 sums). Faster; its logits differ from the
 *     exact mode's by float rounding (measured on trained models in docs/engine.md). Only the
 *     x86 sets have it: FTV_ERR_ARG for the scalar ones.
 * Norms, quantizers and the ternary GEMMs are exact in both. */
typedef enum { FTV_NUMERICS_EXACT = 0, FTV_NUMERICS_FAST = 1 } ftv_numerics;
ftv_status ftv_model_set_numerics(ftv_model *m, ftv_numerics mode);
ftv_numerics ftv_model_numerics(const ftv_model *m);

/* Bytes of the kernels' own copy of the weights, beyond the file image: 0 for "scalar";
 * for "avx2" and "avx512", every ternary matrix in a 2-bit layout (the size of tq2) and the LayerNorm
 * parameters as floats. */
size_t ftv_model_repacked_bytes(const ftv_model *m);

/* Class name i, or NULL when the file has none. */
const char *ftv_model_class_name(const ftv_model *m, int i);

/* One image (in_chans, img_h, img_w), normalized as the model expects -> num_classes logits.
 * FTV_ERR_INPUT when the image holds NaN or infinity (checked before any work);
 * FTV_ERR_OVERFLOW when a value the logits depend on overflowed float range on the way
 * (extreme inputs, such as |x| near 1e38, or extreme weights): the logits are then NaN.
 * One call at a time per model: the model's arena is its working memory. */
ftv_status ftv_model_forward(ftv_model *m, const float *image, float *logits);

/* The same pass, plus its attention rollout (Abnar & Zuidema 2020): per block the head-mean
 * attention probabilities A, folded as (A + I) / 2 with rows renormalized, multiplied through
 * the blocks (R = A_depth ... A_1); `map` receives the class token's row of R over the patch
 * tokens or, for models pooled without a class token (FTV_FLAG_AVG_POOL or none), the mean of
 * R's rows: (img_h / patch_h) x (img_w / patch_w) floats, row-major, summing to at most 1.
 * The logits are bit-identical to ftv_model_forward's, and so are the statuses (FTV_ERR_INPUT,
 * FTV_ERR_OVERFLOW); the map does not depend on the threads or the kernel set. Memory: a workspace of ftv_model_rollout_bytes, allocated on the first
 * call (FTV_ERR_NOMEM when it cannot be) and kept until ftv_model_free; it is separate from
 * the arena (ftv_model_arena_bytes does not count it), so the plain forward pass keeps its
 * speed and memory. */
ftv_status ftv_model_forward_rollout(ftv_model *m, const float *image, float *logits, float *map);

/* Bytes of ftv_model_forward_rollout's workspace: (heads + depth) x tokens^2 floats and a
 * little more (DeiT-S/224: 2.8 MB). */
size_t ftv_model_rollout_bytes(const ftv_model *m);

const char *ftv_status_string(ftv_status s);

/* Time of the forward passes since the last call, by phase, summed over the threads, in
 * seconds: fills seconds[0 .. n) and returns the number of phases in a build compiled with
 * -DFTV_PROFILE, returns 0 (and fills nothing) in any other build. ftv_profile_phase_name(i)
 * names phase i ("embed", "norm_quant", "gemm", "attention", "gelu", "wait", "other"). */
int ftv_model_profile(ftv_model *m, double *seconds, int n);
const char *ftv_profile_phase_name(int phase);

#ifdef __cplusplus
}
#endif
#endif
