/* The forward pass of a fully ternary ViT (DeiT, DeiT-III, the ftervit presets).
 *
 * Memory: the residual stream x (tokens, dim) and the int8 input xq (tokens, dim) live
 * throughout; the phases (patch embedding, attention, MLP) reuse one region. Attention runs
 * head by head, so only one head's keys and values (tokens, head_dim) exist at a time (per
 * thread); the MLP runs on tiles of tokens, so no (tokens, hidden) buffer exists. Each thread
 * also has a little scratch of its own (a normalized row, the GEMM's decoded weights,
 * attention scores).
 *
 * Threads: the whole pass runs on every thread of the pool (forward_worker). Thread i owns a
 * contiguous range of tokens and computes everything that is per token for them: patch
 * embedding, norms and quantizers, the attention projection, the MLP. Only attention mixes
 * tokens: after the qkv inputs of all tokens are ready (a barrier), each thread takes whole
 * heads (heads i, i + n, ...; a remainder of heads is split by rows and queries among all
 * threads), a second barrier waits for all heads, and (in the small layout of the scalar sets)
 * a third for every thread to have read its tokens' attention output before the MLP tiles reuse
 * those bytes. Two or three barriers a block (not one per GEMM) keep threads from waiting on each
 * other when the machine is busy with other work. Every value is computed by the same
 * operations whichever thread computes it, so the logits do not depend on the number of threads
 * (tests/test_engine.py checks it). */
#ifdef FTV_PROFILE
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <time.h>
#endif
#include <math.h>
#include <string.h>

#include "ftv_model.h"
#include "ftv_rollout.h"

#define MLP_TILE_MIN 16 /* tokens per MLP tile at least; more when the attention phase's room allows */
#define ROW_ALIGN 16    /* GEMM row ranges split among threads start at multiples of this (AVX2 panel) */

/* Whether the MLP tiles have bytes of their own, not the attention output's: with several
 * threads, the wide (x86) sets' layout. */
static int mlp_after_o(const ftv_model *m) { return m->kernels->wide && m->threads > 1; }

static size_t carve(size_t *off, size_t bytes) {
    size_t at = (*off + 63u) & ~(size_t)63u; /* 64-byte aligned, for SIMD kernels */
    *off = at + bytes;
    return at;
}

size_t ftv_state_layout(ftv_model *m, void *arena) {
    const ftv_config *c = &m->cfg;
    const size_t T = (size_t)c->num_tokens, D = (size_t)c->embed_dim, H = (size_t)c->mlp_hidden;
    const size_t hd = (size_t)m->head_dim, ldk = (size_t)m->ldk, K = (size_t)m->max_k;
    const size_t P = (size_t)m->num_patches, n = (size_t)m->threads;
    const size_t kp = (size_t)c->in_chans * (size_t)c->patch_h * (size_t)c->patch_w;
    uint8_t *a = (uint8_t *)arena;
    ftv_state *s = &m->s;
    size_t off = 0, end;
    /* sizes the layout when arena is NULL, points the buffers into it otherwise */
#define CARVE(ptr, bytes) do { size_t at_ = carve(&off, (bytes)); if (a) (ptr) = (void *)(a + at_); } while (0)
    CARVE(s->x, T * D * 4);
    CARVE(s->xq, T * D);
    CARVE(s->xs, T * 4);
    const int wide = m->kernels->wide;
    if (wide) CARVE(s->xsum, T * 4); /* the SIMD GEMMs' activation sums; the scalar ones need none */
    else if (a) s->xsum = NULL;
    const size_t rowmax = D > H ? D : H; /* a normalized row; the wide sets' norm_quant takes FTV_NORM_ROWS */
    for (size_t i = 0; i < n; i++) {
        CARVE(m->ts[i].row, (wide ? FTV_NORM_ROWS : 1) * rowmax * 4);
        CARVE(m->ts[i].gemm, m->kernels->gemm_scratch((int)K, (int)T));
        CARVE(m->ts[i].attend, m->kernels->attend_scratch((int)ldk, (int)hd, (int)T) * 4);
    }
    const size_t phase = off;
    CARVE(s->o, T * D * 4); /* attention */
    const size_t after_o = off;
    for (size_t i = 0; i < n; i++) {
        CARVE(m->ts[i].kt, hd * ldk * 4);
        CARVE(m->ts[i].vh, T * hd * 4);
    }
    end = off;
    /* MLP: each thread's tile as large as its share of the attention phase's room allows
     * (hid, hq, hs and their alignment padding); with the wide sets, all of the thread's tokens
     * (one tile: each weight panel decoded once a block, not once a tile) */
    const size_t room = (off - phase) / n;
    size_t tile = wide ? (T + n - 1) / n : room > 192 ? (room - 192) / (H * 5 + 4) : 0;
    m->mlp_tile = (int)(tile < MLP_TILE_MIN ? MLP_TILE_MIN : tile > T ? T : tile);
    /* With several threads, the wide sets' tiles start past o (over the dead keys and values):
     * a thread's MLP cannot overwrite the attention output another is still quantizing, so no
     * barrier guards it. */
    off = mlp_after_o(m) ? after_o : phase;
    for (size_t i = 0; i < n; i++) {
        CARVE(m->ts[i].hid, (size_t)m->mlp_tile * H * 4);
        CARVE(m->ts[i].hq, (size_t)m->mlp_tile * H);
        CARVE(m->ts[i].hs, (size_t)m->mlp_tile * 4);
        if (wide) CARVE(m->ts[i].hsum, (size_t)m->mlp_tile * 4);
        else if (a) m->ts[i].hsum = NULL;
    }
    if (off > end) end = off;
    off = phase; /* patch embedding */
    CARVE(s->img_q, P * kp);
    CARVE(s->img_s, (size_t)c->in_chans * 4);
    if (off > end) end = off;
#undef CARVE
    return end;
}

/* p + i, or NULL for a NULL p (the scalar kernels' absent activation sums). */
static int32_t *at(int32_t *p, int i) { return p ? p + i : NULL; }

/* Every thread waits here for the others (timed as FTV_PHASE_WAIT in a profiling build). */
static void barrier(ftv_model *m, ftv_thread_state *ts) {
    (void)ts;
    FTV_PHASE(&ts->prof, FTV_PHASE_WAIT);
    ftv_pool_barrier(m->pool);
}

/* [*lo, *hi): thread i's part of [0, count) among n, cut at multiples of `align`. */
static void split(int count, int align, int i, int n, int *lo, int *hi) {
    const long units = (count + align - 1) / align;
    *lo = (int)(units * i / n) * align;
    *hi = (int)(units * (i + 1) / n) * align;
    if (*lo > count) *lo = count;
    if (*hi > count) *hi = count;
}

/* The image's per-channel int8 scales (int8 per (n, c): absmax over H and W), channels split
 * among the threads. */
static void image_scales(ftv_model *m, const float *img, int i, int n) {
    const ftv_config *c = &m->cfg;
    for (int ch = i; ch < c->in_chans; ch += n) {
        const float amax = m->kernels->absmax(img + (size_t)ch * c->img_h * c->img_w, c->img_h * c->img_w);
        m->s.img_s[ch] = 127.0f / (amax > m->quant_eps ? amax : m->quant_eps);
    }
}

/* Tokens [t0, t1): BitConv2d (kernel = stride = patch) on the int8 patches, then the class
 * token and the position embedding (timm's _pos_embed). */
static void embed(ftv_model *m, const float *img, int t0, int t1, ftv_thread_state *ts) {
    const ftv_config *c = &m->cfg;
    ftv_state *s = &m->s;
    const int C = c->in_chans, H = c->img_h, W = c->img_w, ph = c->patch_h, pw = c->patch_w;
    const int kp = C * ph * pw, D = c->embed_dim;
    const int has_cls = (c->flags & FTV_FLAG_CLASS_TOKEN) != 0;
    const int no_embed_class = (c->flags & FTV_FLAG_NO_EMBED_CLASS) != 0;
    const int p0 = t0 - has_cls > 0 ? t0 - has_cls : 0, p1 = t1 - has_cls; /* patches of these tokens */
    m->kernels->quantize_patches(img, C, H, W, ph, pw, s->img_s, p0, p1, s->img_q);
    if (p1 > p0)
        m->kernels->patch_gemm(&m->w.patch, 0, D, s->img_q + (size_t)p0 * kp, s->img_s, C, p1 - p0, &m->w.patch_cs,
                               &m->w.patch_bias, s->x + (size_t)(p0 + has_cls) * D, D, ts->gemm);
    float *x = s->x;
    for (int t = t0; t < t1; t++) {
        if (has_cls && t == 0)
            for (int j = 0; j < D; j++) x[j] = ftv_fvec_get(&m->w.cls, j);
        int p = (has_cls && no_embed_class) ? t - 1 : t; /* row of pos_embed, -1: none */
        if (p >= 0) m->kernels->add_fvec(x + (size_t)t * D, &m->w.pos, p * D, D);
    }
}

/* Queries, keys (transposed) and values of rows [r0, r1) of head h's (head_dim) rows. */
static void project_head(ftv_model *m, const ftv_block *b, int h, int r0, int r1, float *kt, float *vh,
                         ftv_thread_state *ts) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens, hd = m->head_dim;
    const ftv_kernels *k = m->kernels;
    ftv_state *s = &m->s;
    const int q = h * hd + r0, kk = D + q, v = 2 * D + q, nr = r1 - r0;
    if (nr <= 0) return;
    FTV_PHASE(&ts->prof, FTV_PHASE_GEMM);
    k->tgemm(&b->qkv, q, q + nr, s->xq, s->xs, s->xsum, T, s->o + q, D, 1, ts->gemm, 0, NULL); /* into o's columns */
    k->tgemm(&b->qkv, kk, kk + nr, s->xq, s->xs, s->xsum, T, kt + (size_t)r0 * m->ldk, 1, m->ldk, ts->gemm, 0, NULL);
    k->tgemm(&b->qkv, v, v + nr, s->xq, s->xs, s->xsum, T, vh + r0, hd, 1, ts->gemm, 0, NULL);
}

/* Queries [q0, q1) of head h: each query's output replaces it in o. */
static void attend_head(ftv_model *m, int h, int q0, int q1, const float *kt, const float *vh,
                        ftv_thread_state *ts) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens, hd = m->head_dim;
    float *qo = m->s.o + (size_t)q0 * D + h * hd;
    FTV_PHASE(&ts->prof, FTV_PHASE_ATTENTION);
    if (q1 > q0)
        m->kernels->attend(qo, D, kt, m->ldk, vh, hd, T, hd, 1.0f / sqrtf((float)hd), qo, D, q1 - q0, ts->attend);
}

/* x <- x + ls1 * proj(attention(qkv(norm1(x)))); this thread's tokens are [t0, t1). With a
 * rollout workspace, each head's probabilities are also recorded (ftv_rollout.h). */
static void attention(ftv_model *m, const ftv_block *b, int i, int n, int t0, int t1, ftv_rollout *ro) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens, hd = m->head_dim, heads = m->cfg.num_heads;
    const ftv_kernels *k = m->kernels;
    ftv_state *s = &m->s;
    ftv_thread_state *ts = &m->ts[i];
    FTV_PHASE(&ts->prof, FTV_PHASE_NORM);
    k->norm_quant(s->x + (size_t)t0 * D, D, t1 - t0, &b->norm1_g, &b->norm1_b, m->ln_eps, &b->qkv_rms, m->rms_eps,
                  m->quant_eps, D, s->xq + (size_t)t0 * D, s->xs + t0, at(s->xsum, t0), ts->row);
    barrier(m, ts); /* the qkv input of every token is ready */
    const int whole = heads / n * n; /* heads taken whole, one thread each */
    for (int h = i; h < whole; h += n) {
        project_head(m, b, h, 0, hd, ts->kt, ts->vh, ts);
        if (ro) ftv_rollout_head(m, ro, h, 0, T, ts->kt);
        attend_head(m, h, 0, T, ts->kt, ts->vh, ts);
    }
    for (int h = whole; h < heads; h++) { /* the rest: every thread a part of each */
        float *kt = m->ts[0].kt, *vh = m->ts[0].vh;
        int r0, r1, q0, q1;
        split(hd, ROW_ALIGN, i, n, &r0, &r1);
        split(T, 1, i, n, &q0, &q1);
        barrier(m, ts); /* thread 0's keys and values are free */
        project_head(m, b, h, r0, r1, kt, vh, ts);
        barrier(m, ts);
        if (ro) ftv_rollout_head(m, ro, h, q0, q1, kt);
        attend_head(m, h, q0, q1, kt, vh, ts);
    }
    barrier(m, ts); /* every head's output is in o */
    FTV_PHASE(&ts->prof, FTV_PHASE_NORM);
    k->norm_quant(s->o + (size_t)t0 * D, D, t1 - t0, NULL, NULL, 0.0f, &b->proj_rms, m->rms_eps, m->quant_eps, D,
                  s->xq + (size_t)t0 * D, s->xs + t0, at(s->xsum, t0), ts->row);
    if (!mlp_after_o(m)) barrier(m, ts); /* o is read: the MLP tiles may overwrite it */
    FTV_PHASE(&ts->prof, FTV_PHASE_GEMM);
    if (t1 > t0)
        k->tgemm(&b->proj, 0, D, s->xq + (size_t)t0 * D, s->xs + t0, at(s->xsum, t0), t1 - t0, s->x + (size_t)t0 * D,
                 D, 1, ts->gemm, 1, &b->ls1);
}

/* x <- x + ls2 * fc2(gelu(fc1(norm2(x)))) for tokens [t0, t1), in balanced tiles. */
static void mlp(ftv_model *m, const ftv_block *b, int i, int t0, int t1) {
    const int D = m->cfg.embed_dim, H = m->cfg.mlp_hidden, count = t1 - t0;
    const ftv_kernels *k = m->kernels;
    ftv_state *s = &m->s;
    ftv_thread_state *ts = &m->ts[i];
    if (count <= 0) return;
    const int tiles = (count + m->mlp_tile - 1) / m->mlp_tile, tile = (count + tiles - 1) / tiles;
    for (int a = t0; a < t1; a += tile) {
        const int nt = t1 - a < tile ? t1 - a : tile;
        FTV_PHASE(&ts->prof, FTV_PHASE_NORM);
        k->norm_quant(s->x + (size_t)a * D, D, nt, &b->norm2_g, &b->norm2_b, m->ln_eps, &b->fc1_rms, m->rms_eps,
                      m->quant_eps, D, s->xq + (size_t)a * D, s->xs + a, at(s->xsum, a), ts->row);
        FTV_PHASE(&ts->prof, FTV_PHASE_GEMM);
        k->tgemm(&b->fc1, 0, H, s->xq + (size_t)a * D, s->xs + a, at(s->xsum, a), nt, ts->hid, H, 1, ts->gemm, 0, NULL);
        FTV_PHASE(&ts->prof, FTV_PHASE_GELU);
        k->gelu(ts->hid, nt * H);
        FTV_PHASE(&ts->prof, FTV_PHASE_NORM);
        k->norm_quant(ts->hid, H, nt, NULL, NULL, 0.0f, &b->fc2_rms, m->rms_eps, m->quant_eps, H, ts->hq, ts->hs,
                      ts->hsum, ts->row);
        FTV_PHASE(&ts->prof, FTV_PHASE_GEMM);
        k->tgemm(&b->fc2, 0, D, ts->hq, ts->hs, ts->hsum, nt, s->x + (size_t)a * D, D, 1, ts->gemm, 1, &b->ls2);
    }
}

/* Final norm, pooling, fc_norm and head, on one thread (a few thousand operations). */
static void head(ftv_model *m, float *logits) {
    const ftv_config *c = &m->cfg;
    const ftv_kernels *k = m->kernels;
    const int D = c->embed_dim, T = c->num_tokens;
    ftv_state *s = &m->s;
    float *row = m->ts[0].row;
    /* pool: the class token, or the mean of the (normalized) patch tokens */
    float *pooled = s->o; /* free now: (dim) */
    const int avg = (c->flags & FTV_FLAG_AVG_POOL) != 0, final_norm = m->w.norm_g.rows > 0;
    const int first = (c->flags & FTV_FLAG_CLASS_TOKEN) ? 1 : 0;
    if (!avg) {
        if (final_norm) k->layernorm(s->x, &m->w.norm_g, &m->w.norm_b, m->ln_eps, D, pooled);
        else memcpy(pooled, s->x, (size_t)D * sizeof(float));
    } else {
        for (int j = 0; j < D; j++) pooled[j] = 0.0f;
        for (int t = first; t < T; t++) {
            const float *xt = s->x + (size_t)t * D;
            if (final_norm) {
                k->layernorm(xt, &m->w.norm_g, &m->w.norm_b, m->ln_eps, D, row);
                xt = row;
            }
            for (int j = 0; j < D; j++) pooled[j] += xt[j];
        }
        for (int j = 0; j < D; j++) pooled[j] /= (float)(T - first);
    }
    if (m->w.fcn_g.rows > 0) {
        k->layernorm(pooled, &m->w.fcn_g, &m->w.fcn_b, m->ln_eps, D, row);
        memcpy(pooled, row, (size_t)D * sizeof(float));
    }
    k->norm_quant(pooled, D, 1, NULL, NULL, 0.0f, &m->w.head_rms, m->rms_eps, m->quant_eps, D, s->xq, s->xs, s->xsum,
                  row);
    k->tgemm(&m->w.head, 0, c->num_classes, s->xq, s->xs, s->xsum, 1, logits, c->num_classes, 1, m->ts[0].gemm, 0, NULL);
}

typedef struct {
    ftv_model *m;
    const float *image;
    float *logits;
    ftv_rollout *rollout; /* NULL: the plain forward pass */
    float *map;
} forward_job;

static void forward_worker(void *ctx, int i, int n) {
    forward_job *job = (forward_job *)ctx;
    ftv_model *m = job->m;
    int t0, t1;
    split(m->cfg.num_tokens, 1, i, n, &t0, &t1); /* this thread's tokens */
    ftv_thread_state *ts = &m->ts[i];
    FTV_PHASE(&ts->prof, FTV_PHASE_EMBED);
    image_scales(m, job->image, i, n);
    barrier(m, ts);
    FTV_PHASE(&ts->prof, FTV_PHASE_EMBED);
    embed(m, job->image, t0, t1, ts);
    for (int l = 0; l < m->cfg.depth; l++) {
        attention(m, &m->w.blocks[l], i, n, t0, t1, job->rollout);
        /* all heads are done (a barrier in attention), and the next block's heads start
         * after its first barrier: each thread folds its own tokens' rows in between */
        if (job->rollout) ftv_rollout_fold(m, job->rollout, l, t0, t1);
        mlp(m, &m->w.blocks[l], i, t0, t1);
    }
    barrier(m, ts); /* every token's row of x (and of the folded attention) is final */
    FTV_PHASE(&ts->prof, FTV_PHASE_OTHER);
    if (i == 0) {
        head(m, job->logits);
        if (job->rollout) ftv_rollout_map(m, job->rollout, job->map);
    }
    FTV_PHASE(&ts->prof, FTV_PHASES); /* stop the clock */
}

#ifdef FTV_PROFILE
void ftv_profile_switch(ftv_profile *p, int phase) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    const uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    if (p->last) p->ns[p->phase] += ns - p->last; /* last = 0: the clock was stopped */
    p->phase = phase;
    p->last = phase < FTV_PHASES ? ns : 0;
}
#endif

int ftv_model_profile(ftv_model *m, double *seconds, int n) {
#ifdef FTV_PROFILE
    for (int p = 0; p < n && p < FTV_PHASES; p++) {
        seconds[p] = 0.0;
        for (int i = 0; i < m->threads; i++) {
            seconds[p] += (double)m->ts[i].prof.ns[p] * 1e-9;
            m->ts[i].prof.ns[p] = 0;
        }
    }
    return FTV_PHASES;
#else
    (void)m, (void)seconds, (void)n;
    return 0;
#endif
}

const char *ftv_profile_phase_name(int phase) {
    static const char *const names[FTV_PHASES] = {"embed", "norm_quant", "gemm", "attention", "gelu", "wait", "other"};
    return phase >= 0 && phase < FTV_PHASES ? names[phase] : NULL;
}

/* 1 when no value is NaN or infinite. A value's exponent field plus one carries into bit 31
 * only when the field is all ones; the carries of 16 lanes OR'd across fixed blocks of 16,
 * which compilers vectorize at -O2 (a loop of unknown length they do not). */
static int all_finite(const float *x, size_t n) {
    uint32_t lanes[16] = {0}, any = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            uint32_t b;
            memcpy(&b, x + i + l, sizeof b);
            lanes[l] |= (b & 0x7F800000u) + 0x00800000u;
        }
    for (int l = 0; l < 16; l++) any |= lanes[l];
    for (; i < n; i++) any |= isfinite(x[i]) ? 0u : 0x80000000u;
    return !(any & 0x80000000u);
}

/* Both entries: non-finite input is refused before any work (NaN or infinity would reach the
 * int8 conversions); after the pass, a value the logits depend on that overflowed shows as NaN
 * (the norms turn an overflow into NaN: ftv_norm_factor). */
static ftv_status forward_checked(ftv_model *m, const float *image, float *logits, ftv_rollout *ro, float *map) {
    const size_t n = (size_t)m->cfg.in_chans * (size_t)m->cfg.img_h * (size_t)m->cfg.img_w;
    if (!all_finite(image, n)) return FTV_ERR_INPUT;
    int finite = 1;
    forward_job job = {m, image, logits, ro, map};
    ftv_pool_run(m->pool, forward_worker, &job);
    for (int j = 0; j < m->cfg.num_classes; j++) finite &= isfinite(logits[j]) != 0;
    return finite ? FTV_OK : FTV_ERR_OVERFLOW;
}

ftv_status ftv_model_forward(ftv_model *m, const float *image, float *logits) {
    if (!m || !image || !logits) return FTV_ERR_ARG;
    return forward_checked(m, image, logits, NULL, NULL);
}

size_t ftv_model_rollout_bytes(const ftv_model *m) { return ftv_rollout_bytes(m); }

ftv_status ftv_model_forward_rollout(ftv_model *m, const float *image, float *logits, float *map) {
    if (!m || !image || !logits || !map) return FTV_ERR_ARG;
    if (!m->rollout && !(m->rollout = ftv_rollout_new(m))) return FTV_ERR_NOMEM;
    return forward_checked(m, image, logits, m->rollout, map);
}
