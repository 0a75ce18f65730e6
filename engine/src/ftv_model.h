/* Internal: the model's weights (views into the file image) and run state (views into the
 * arena), in the manner of llama2.c. */
#ifndef FTV_MODEL_H
#define FTV_MODEL_H

#include "ftervit.h"
#include "ftv_kernels.h"
#include "ftv_profile.h"
#include "ftv_threads.h"

typedef struct {
    ftv_tmat norm1_g, norm1_b;
    ftv_fvec qkv_rms;
    ftv_tmat qkv; /* (3 * dim, dim): q rows, then k, then v; heads contiguous in each */
    ftv_fvec proj_rms;
    ftv_tmat proj; /* (dim, dim) */
    ftv_fvec ls1;  /* (dim), n = 0 without LayerScale */
    ftv_tmat norm2_g, norm2_b;
    ftv_fvec fc1_rms;
    ftv_tmat fc1; /* (hidden, dim) */
    ftv_fvec fc2_rms;
    ftv_tmat fc2; /* (dim, hidden) */
    ftv_fvec ls2;
} ftv_block;

/* Bytes of the file bound as they are (class_names). */
typedef struct {
    const uint8_t *data;
    uint64_t nbytes;
} ftv_blob;

/* Every tensor of the file, bound by the table of engine/include/ftv_tensors.h (the field
 * names are that table's). */
typedef struct {
    ftv_tmat patch;     /* (dim, in_chans * patch_h * patch_w), one scale per row */
    ftv_fvec patch_cs;  /* channel_scale (dim) */
    ftv_fvec patch_bias; /* (dim), n = 0 without bias */
    ftv_fvec cls;       /* (dim), n = 0 without class token */
    ftv_fvec pos;       /* (pos_len, dim) */
    ftv_block *blocks;  /* (depth) */
    ftv_tmat norm_g, norm_b;   /* final norm, rows = 0 when absent */
    ftv_tmat fcn_g, fcn_b;     /* fc_norm, rows = 0 when absent */
    ftv_fvec head_rms;
    ftv_tmat head; /* (classes, dim) */
    ftv_blob names; /* class_names, nbytes = 0 when absent */
} ftv_weights;

/* Activation buffers, all inside one arena. Phases reuse the same bytes (see ftv_forward.c). */
typedef struct {
    float *x;      /* (tokens, dim) residual stream */
    int8_t *xq;    /* (tokens, dim) int8 input of a BitLinear */
    float *xs;     /* (tokens) its per-token scales */
    int32_t *xsum; /* (tokens) the sums of each token's codes */
    float *o;      /* (tokens, dim) attention output, the queries of each head before that */
    int8_t *img_q; /* (patches, in_chans * patch_h * patch_w) patch-embedding phase */
    float *img_s;  /* (in_chans) */
} ftv_state;

/* What each thread owns in the arena: scratch, and its buffers of the attention phase (one
 * head's keys and values) and of the MLP phase (a tile of its tokens), which share bytes. */
typedef struct {
    float *row;    /* (max(dim, hidden), and FTV_NORM_ROWS * dim for the wide sets) normalized rows */
    void *gemm;    /* kernels->gemm_scratch(max k, tokens) bytes */
    float *attend; /* kernels->attend_scratch(ldk, head_dim, tokens) floats */
    float *kt;     /* (head_dim, ldk) keys of one head, transposed */
    float *vh;     /* (tokens, head_dim) values of one head */
    float *hid;    /* (mlp_tile, hidden) */
    int8_t *hq;    /* (mlp_tile, hidden) */
    float *hs;     /* (mlp_tile) */
    int32_t *hsum; /* (mlp_tile) */
#ifdef FTV_PROFILE
    ftv_profile prof; /* time by phase */
#endif
} ftv_thread_state;

struct ftv_model {
    ftv_config cfg;
    float ln_eps, rms_eps, quant_eps;
    int head_dim, num_patches, pos_len, max_k;
    int mlp_tile; /* most tokens of one thread's MLP tile */
    int ldk; /* row stride of the transposed keys: tokens rounded up to 8 */
    ftv_weights w;
    ftv_state s;
    const ftv_kernels *kernels; /* chosen at load, or its fast variant (ftv_model_set_numerics) */
    int threads;
    ftv_pool *pool;          /* NULL with one thread */
    ftv_thread_state *ts;    /* (threads) */
    void *repacked;          /* the kernels' copies of the weights (ftv_kernels.repack), or NULL */
    size_t repacked_bytes;
    void *arena;
    size_t arena_bytes;
    uint8_t *owned_file; /* the file image when loaded from a path */
    const char **class_names; /* (classes) into the file image, NULL when absent */
    struct ftv_rollout *rollout; /* ftv_model_forward_rollout's workspace, NULL before its first call */
};

/* Lay out the run state of m->threads threads in an arena; returns the bytes needed (arena
 * may be NULL to size). */
size_t ftv_state_layout(ftv_model *m, void *arena);

#endif
