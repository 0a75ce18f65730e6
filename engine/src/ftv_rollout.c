/* Attention rollout beside the forward pass: what ftervit.analysis.rollout computes from the
 * PyTorch model, here from the engine's own queries and keys (see ftv_rollout.h).
 *
 * Per block l, A_l = (mean over heads of the attention probabilities + I) / 2 with rows
 * renormalized to sum to 1; rollout R = A_L ... A_1. The map is row 0 of R (the class token)
 * or, for a model pooled without a class token, the mean of R's rows, over the patch tokens.
 * A row vector times R is computed from the left, v <- v A_L, ..., v A_1, which needs every
 * block's A_l (depth x tokens^2 floats) but only tokens^2 operations a block, instead of the
 * tokens^3 of forming R. */
#include <math.h>
#include <stdlib.h>

#include "ftv_rollout.h"

struct ftv_rollout {
    float *probs;  /* (heads, tokens, tokens) one block's attention probabilities */
    float *folded; /* (depth, tokens, tokens) A_l of every block */
    double *v;     /* (2, tokens) the row vector of the map and its next value */
};

static size_t square(const ftv_model *m) { return (size_t)m->cfg.num_tokens * (size_t)m->cfg.num_tokens; }

size_t ftv_rollout_bytes(const ftv_model *m) {
    return sizeof(ftv_rollout) + ((size_t)m->cfg.num_heads + (size_t)m->cfg.depth) * square(m) * sizeof(float) +
           2 * (size_t)m->cfg.num_tokens * sizeof(double);
}

ftv_rollout *ftv_rollout_new(const ftv_model *m) {
    ftv_rollout *r = (ftv_rollout *)calloc(1, sizeof *r);
    if (!r) return NULL;
    r->probs = (float *)malloc((size_t)m->cfg.num_heads * square(m) * sizeof(float));
    r->folded = (float *)malloc((size_t)m->cfg.depth * square(m) * sizeof(float));
    r->v = (double *)malloc(2 * (size_t)m->cfg.num_tokens * sizeof(double));
    if (!r->probs || !r->folded || !r->v) {
        ftv_rollout_free(r);
        return NULL;
    }
    return r;
}

void ftv_rollout_free(ftv_rollout *r) {
    if (!r) return;
    free(r->probs);
    free(r->folded);
    free(r->v);
    free(r);
}

/* p[j] = sum over d of q[d] * kt[d * ldk + j] for j < n, each sum in the order d = 0, 1, ...
 * (the scalar attention kernel's). Eight scores stay in eight variables over d: compilers
 * keep them in vector registers at -O2 (GCC 12 vectorizes neither the plain loop nor an
 * array of accumulators well there). */
static void scores(const float *q, const float *kt, int ldk, int hd, int n, float *p) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float qd = q[d], *k = kt + (size_t)d * ldk + j;
            a0 += qd * k[0], a1 += qd * k[1], a2 += qd * k[2], a3 += qd * k[3];
            a4 += qd * k[4], a5 += qd * k[5], a6 += qd * k[6], a7 += qd * k[7];
        }
        p[j] = a0, p[j + 1] = a1, p[j + 2] = a2, p[j + 3] = a3;
        p[j + 4] = a4, p[j + 5] = a5, p[j + 6] = a6, p[j + 7] = a7;
    }
    for (; j < n; j++) {
        float a = 0.0f;
        for (int d = 0; d < hd; d++) a += q[d] * kt[(size_t)d * ldk + j];
        p[j] = a;
    }
}

void ftv_rollout_head(const ftv_model *m, ftv_rollout *r, int h, int q0, int q1, const float *kt) {
    const int T = m->cfg.num_tokens, D = m->cfg.embed_dim, hd = m->head_dim;
    const float scale = 1.0f / sqrtf((float)hd); /* as the forward pass's attention */
    for (int t = q0; t < q1; t++) {
        float *p = r->probs + ((size_t)h * T + t) * T;
        scores(m->s.o + (size_t)t * D + (size_t)h * hd, kt, m->ldk, hd, T, p);
        for (int j = 0; j < T; j++) p[j] *= scale;
        ftv_softmax(p, T);
    }
}

void ftv_rollout_fold(const ftv_model *m, ftv_rollout *r, int block, int t0, int t1) {
    const int T = m->cfg.num_tokens, heads = m->cfg.num_heads;
    for (int t = t0; t < t1; t++) {
        float *a = r->folded + ((size_t)block * T + t) * T;
        double sum = 0.0;
        for (int j = 0; j < T; j++) {
            double s = 0.0;
            for (int h = 0; h < heads; h++) s += r->probs[((size_t)h * T + t) * T + j];
            s = (s / heads + (j == t)) / 2;
            a[j] = (float)s;
            sum += s;
        }
        for (int j = 0; j < T; j++) a[j] = (float)(a[j] / sum);
    }
}

void ftv_rollout_map(const ftv_model *m, ftv_rollout *r, float *map) {
    const ftv_config *c = &m->cfg;
    const int T = c->num_tokens, prefix = T - m->num_patches;
    const int class_row = (c->flags & FTV_FLAG_CLASS_TOKEN) && !(c->flags & FTV_FLAG_AVG_POOL);
    double *v = r->v, *next = r->v + T;
    for (int j = 0; j < T; j++) v[j] = class_row ? (j == 0) : 1.0 / T;
    for (int l = c->depth - 1; l >= 0; l--) {
        const float *a = r->folded + (size_t)l * T * T;
        for (int j = 0; j < T; j++) next[j] = 0.0;
        for (int t = 0; t < T; t++) {
            const double vt = v[t];
            const float *row = a + (size_t)t * T;
            for (int j = 0; j < T; j++) next[j] += vt * row[j];
        }
        double *swap = v;
        v = next;
        next = swap;
    }
    for (int p = 0; p < m->num_patches; p++) map[p] = (float)v[prefix + p];
}
