/* The forward pass of a fully ternary ViT (DeiT, DeiT-III, the ftervit presets).
 *
 * Memory: the residual stream x (tokens, dim) and the int8 input xq (tokens, dim) live
 * throughout; the phases (patch embedding, attention, MLP) reuse one region. Attention runs
 * head by head, so only one head's keys and values (tokens, head_dim) exist at a time; the
 * MLP runs on tiles of tokens, so no (tokens, hidden) buffer exists. */
#include <math.h>
#include <string.h>

#include "ftv_model.h"

#define FTV_MLP_TILE 16 /* tokens per MLP tile: (16, hidden) floats, each fc1 row decoded per tile */

static size_t carve(size_t *off, size_t bytes) {
    size_t at = (*off + 63u) & ~(size_t)63u; /* 64-byte aligned, for SIMD kernels */
    *off = at + bytes;
    return at;
}

size_t ftv_state_layout(ftv_model *m, void *arena) {
    const ftv_config *c = &m->cfg;
    size_t T = (size_t)c->num_tokens, D = (size_t)c->embed_dim, H = (size_t)c->mlp_hidden;
    size_t hd = (size_t)m->head_dim, tile = (size_t)m->mlp_tile;
    size_t K = (size_t)m->max_k, P = (size_t)m->num_patches;
    size_t kp = (size_t)c->in_chans * (size_t)c->patch_h * (size_t)c->patch_w;
    size_t off = 0;
    size_t x = carve(&off, T * D * 4), xq = carve(&off, T * D), xs = carve(&off, T * 4);
    size_t row = carve(&off, (D > H ? D : H) * 4), wrow = carve(&off, K);
    size_t phase = off, end = off;
    /* attention */
    size_t o = carve(&off, T * D * 4), kh = carve(&off, T * hd * 4), vh = carve(&off, T * hd * 4);
    size_t att = carve(&off, T * 4), qh = carve(&off, hd * 4);
    if (off > end) end = off;
    /* MLP */
    off = phase;
    size_t hid = carve(&off, tile * H * 4), hq = carve(&off, tile * H), hs = carve(&off, tile * 4);
    if (off > end) end = off;
    /* patch embedding */
    off = phase;
    size_t img_q = carve(&off, P * kp), img_s = carve(&off, (size_t)c->in_chans * 4);
    if (off > end) end = off;
    if (arena) {
        uint8_t *a = (uint8_t *)arena;
        ftv_state *s = &m->s;
        s->x = (float *)(a + x);
        s->xq = (int8_t *)(a + xq);
        s->xs = (float *)(a + xs);
        s->row = (float *)(a + row);
        s->wrow = (int8_t *)(a + wrow);
        s->o = (float *)(a + o);
        s->kh = (float *)(a + kh);
        s->vh = (float *)(a + vh);
        s->att = (float *)(a + att);
        s->qh = (float *)(a + qh);
        s->hid = (float *)(a + hid);
        s->hq = (int8_t *)(a + hq);
        s->hs = (float *)(a + hs);
        s->img_q = (int8_t *)(a + img_q);
        s->img_s = (float *)(a + img_s);
    }
    return end;
}

/* BitConv2d (kernel = stride = patch) on int8 per-channel input; writes token rows of x. */
static void patch_embed(ftv_model *m, const float *img) {
    const ftv_config *c = &m->cfg;
    ftv_state *s = &m->s;
    const int C = c->in_chans, H = c->img_h, W = c->img_w, ph = c->patch_h, pw = c->patch_w;
    const int gw = W / pw, pp = ph * pw, kp = C * pp, D = c->embed_dim;
    for (int ch = 0; ch < C; ch++) { /* int8 per (n, c): absmax over H and W */
        const float *p = img + (size_t)ch * H * W;
        float amax = 0.0f;
        for (int i = 0; i < H * W; i++) if (fabsf(p[i]) > amax) amax = fabsf(p[i]);
        s->img_s[ch] = 127.0f / (amax > m->quant_eps ? amax : m->quant_eps);
    }
    for (int pi = 0; pi < m->num_patches; pi++) { /* gather each patch in (C, ph, pw) order */
        int8_t *dst = s->img_q + (size_t)pi * kp;
        int y0 = (pi / gw) * ph, x0 = (pi % gw) * pw;
        for (int ch = 0; ch < C; ch++)
            for (int dy = 0; dy < ph; dy++)
                for (int dx = 0; dx < pw; dx++) {
                    float v = rintf(img[((size_t)ch * H + y0 + dy) * W + x0 + dx] * s->img_s[ch]);
                    *dst++ = (int8_t)(v > 127.0f ? 127 : (v < -128.0f ? -128 : (int)v));
                }
    }
    const int first = (c->flags & FTV_FLAG_CLASS_TOKEN) ? 1 : 0;
    for (int o = 0; o < D; o++) {
        ftv_tmat_decode_row(&m->w.patch, o, s->wrow);
        float mult = ftv_fvec_get(&m->w.patch_cs, o);
        float rs = ftv_fvec_get(&m->w.patch.row_scale, o);
        float bias = m->w.patch_bias.n ? ftv_fvec_get(&m->w.patch_bias, o) : 0.0f;
        for (int pi = 0; pi < m->num_patches; pi++) {
            const int8_t *a = s->img_q + (size_t)pi * kp;
            float y = 0.0f;
            for (int ch = 0; ch < C; ch++) { /* each input channel has its own scale */
                int32_t acc = 0;
                for (int j = ch * pp; j < (ch + 1) * pp; j++) acc += (int32_t)a[j] * s->wrow[j];
                y += (float)acc / s->img_s[ch];
            }
            s->x[(size_t)(first + pi) * D + o] = y / rs * mult + bias;
        }
    }
}

/* Class token and position embedding (timm's _pos_embed). */
static void add_positions(ftv_model *m) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens;
    const int has_cls = (m->cfg.flags & FTV_FLAG_CLASS_TOKEN) != 0;
    const int no_embed_class = (m->cfg.flags & FTV_FLAG_NO_EMBED_CLASS) != 0;
    float *x = m->s.x;
    if (has_cls)
        for (int j = 0; j < D; j++) x[j] = ftv_fvec_get(&m->w.cls, j);
    for (int t = 0; t < T; t++) {
        int p = (has_cls && no_embed_class) ? t - 1 : t; /* row of pos_embed, -1: none */
        if (p < 0) continue;
        for (int j = 0; j < D; j++) x[(size_t)t * D + j] += ftv_fvec_get(&m->w.pos, p * D + j);
    }
}

/* x <- x + ls1 * proj(attention(qkv(norm1(x)))) */
static void attention(ftv_model *m, const ftv_block *b) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens, hd = m->head_dim;
    ftv_state *s = &m->s;
    for (int t = 0; t < T; t++) {
        ftv_layernorm(s->x + (size_t)t * D, &b->norm1_g, &b->norm1_b, m->ln_eps, D, s->row);
        s->xs[t] = ftv_rmsnorm_quant(s->row, &b->qkv_rms, m->rms_eps, m->quant_eps, D, s->xq + (size_t)t * D);
    }
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < m->cfg.num_heads; h++) {
        /* queries of head h go to its own columns of o, overwritten token by token below */
        ftv_tgemm(&b->qkv, h * hd, (h + 1) * hd, s->xq, s->xs, T, s->o + h * hd, D, s->wrow, 0, NULL);
        ftv_tgemm(&b->qkv, D + h * hd, D + (h + 1) * hd, s->xq, s->xs, T, s->kh, hd, s->wrow, 0, NULL);
        ftv_tgemm(&b->qkv, 2 * D + h * hd, 2 * D + (h + 1) * hd, s->xq, s->xs, T, s->vh, hd, s->wrow, 0, NULL);
        for (int i = 0; i < T; i++) {
            float *out = s->o + (size_t)i * D + h * hd;
            memcpy(s->qh, out, (size_t)hd * sizeof(float));
            for (int j = 0; j < T; j++) {
                const float *k = s->kh + (size_t)j * hd;
                float dot = 0.0f;
                for (int d = 0; d < hd; d++) dot += s->qh[d] * k[d];
                s->att[j] = dot * scale;
            }
            ftv_softmax(s->att, T);
            for (int d = 0; d < hd; d++) out[d] = 0.0f;
            for (int j = 0; j < T; j++) {
                const float *v = s->vh + (size_t)j * hd;
                const float p = s->att[j];
                for (int d = 0; d < hd; d++) out[d] += p * v[d];
            }
        }
    }
    for (int t = 0; t < T; t++)
        s->xs[t] = ftv_rmsnorm_quant(s->o + (size_t)t * D, &b->proj_rms, m->rms_eps, m->quant_eps, D,
                                     s->xq + (size_t)t * D);
    ftv_tgemm(&b->proj, 0, D, s->xq, s->xs, T, s->x, D, s->wrow, 1, &b->ls1);
}

/* x <- x + ls2 * fc2(gelu(fc1(norm2(x)))), one tile of tokens at a time */
static void mlp(ftv_model *m, const ftv_block *b) {
    const int D = m->cfg.embed_dim, T = m->cfg.num_tokens, H = m->cfg.mlp_hidden;
    ftv_state *s = &m->s;
    for (int t0 = 0; t0 < T; t0 += m->mlp_tile) {
        int n = T - t0 < m->mlp_tile ? T - t0 : m->mlp_tile;
        for (int i = 0; i < n; i++) {
            ftv_layernorm(s->x + (size_t)(t0 + i) * D, &b->norm2_g, &b->norm2_b, m->ln_eps, D, s->row);
            s->xs[i] = ftv_rmsnorm_quant(s->row, &b->fc1_rms, m->rms_eps, m->quant_eps, D, s->xq + (size_t)i * D);
        }
        ftv_tgemm(&b->fc1, 0, H, s->xq, s->xs, n, s->hid, H, s->wrow, 0, NULL);
        ftv_gelu(s->hid, n * H);
        for (int i = 0; i < n; i++)
            s->hs[i] = ftv_rmsnorm_quant(s->hid + (size_t)i * H, &b->fc2_rms, m->rms_eps, m->quant_eps, H,
                                         s->hq + (size_t)i * H);
        ftv_tgemm(&b->fc2, 0, D, s->hq, s->hs, n, s->x + (size_t)t0 * D, D, s->wrow, 1, &b->ls2);
    }
}

ftv_status ftv_model_forward(ftv_model *m, const float *image, float *logits) {
    if (!m || !image || !logits) return FTV_ERR_ARG;
    const ftv_config *c = &m->cfg;
    const int D = c->embed_dim, T = c->num_tokens;
    ftv_state *s = &m->s;
    memset(s->x, 0, (size_t)T * D * sizeof(float));
    patch_embed(m, image);
    add_positions(m);
    for (int l = 0; l < c->depth; l++) {
        attention(m, &m->w.blocks[l]);
        mlp(m, &m->w.blocks[l]);
    }
    /* pool: the class token, or the mean of the (normalized) patch tokens */
    float *pooled = s->o; /* free now: (dim) */
    const int avg = (c->flags & FTV_FLAG_AVG_POOL) != 0, final_norm = m->w.norm_g.rows > 0;
    const int first = (c->flags & FTV_FLAG_CLASS_TOKEN) ? 1 : 0;
    if (!avg) {
        if (final_norm) ftv_layernorm(s->x, &m->w.norm_g, &m->w.norm_b, m->ln_eps, D, pooled);
        else memcpy(pooled, s->x, (size_t)D * sizeof(float));
    } else {
        for (int j = 0; j < D; j++) pooled[j] = 0.0f;
        for (int t = first; t < T; t++) {
            const float *xt = s->x + (size_t)t * D;
            if (final_norm) {
                ftv_layernorm(xt, &m->w.norm_g, &m->w.norm_b, m->ln_eps, D, s->row);
                xt = s->row;
            }
            for (int j = 0; j < D; j++) pooled[j] += xt[j];
        }
        for (int j = 0; j < D; j++) pooled[j] /= (float)(T - first);
    }
    if (m->w.fcn_g.rows > 0) {
        ftv_layernorm(pooled, &m->w.fcn_g, &m->w.fcn_b, m->ln_eps, D, s->row);
        memcpy(pooled, s->row, (size_t)D * sizeof(float));
    }
    s->xs[0] = ftv_rmsnorm_quant(pooled, &m->w.head_rms, m->rms_eps, m->quant_eps, D, s->xq);
    ftv_tgemm(&m->w.head, 0, c->num_classes, s->xq, s->xs, 1, logits, c->num_classes, s->wrow, 0, NULL);
    return FTV_OK;
}
