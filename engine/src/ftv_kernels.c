/* Scalar reference kernels. See ftv_kernels.h. */
#include "ftv_kernels.h"

#include <math.h>
#include <string.h>

float ftv_fvec_get(const ftv_fvec *v, int i) {
    /* memcpy: file data may sit at any address (a Python bytes object, flash). */
    if (v->is_f16) {
        uint16_t h;
        memcpy(&h, v->data + 2 * (size_t)i, 2);
        return ftv_f16_to_f32(h);
    }
    float f;
    memcpy(&f, v->data + 4 * (size_t)i, 4);
    return f;
}

void ftv_tmat_decode_row(const ftv_tmat *m, int r, int8_t *out) {
    const uint8_t *p = m->data + (size_t)r * (size_t)m->row_bytes;
    if (m->kind == FTV_KIND_TQ2) {
        for (int j = 0; j < m->k; j++) out[j] = (int8_t)(((p[j >> 2] >> (2 * (j & 3))) & 3) - 1);
        return;
    }
    for (int jb = 0, j = 0; j < m->k; jb++) { /* 5 base-3 digits a byte, low digit first */
        unsigned v = p[jb];
        for (int t = 0; t < 5 && j < m->k; t++, j++, v /= 3u) out[j] = (int8_t)((int)(v % 3u) - 1);
    }
}

float ftv_tvec_get(const ftv_tmat *m, int i) {
    return (float)ftv_ternary_get(m->data, (uint32_t)i, m->kind) / m->scale;
}

float ftv_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps,
                        int k, int8_t *q) {
    float ss = 0.0f;
    for (int j = 0; j < k; j++) ss += x[j] * x[j];
    float r = 1.0f / sqrtf(ss / (float)k + rms_eps);
    float amax = 0.0f;
    for (int j = 0; j < k; j++) {
        float h = x[j] * r * ftv_fvec_get(g, j);
        float a = fabsf(h);
        if (a > amax) amax = a;
    }
    float s = 127.0f / (amax > quant_eps ? amax : quant_eps);
    for (int j = 0; j < k; j++) {
        /* Recomputed rather than stored: same value, no (k,) float scratch needed. */
        float v = rintf(x[j] * r * ftv_fvec_get(g, j) * s);
        q[j] = (int8_t)(v > 127.0f ? 127 : (v < -128.0f ? -128 : (int)v));
    }
    return s;
}

void ftv_tgemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int tokens,
               float *y, int ldy, int8_t *row, int accumulate, const ftv_fvec *gamma) {
    const int k = w->k;
    for (int o = o0; o < o1; o++) {
        ftv_tmat_decode_row(w, o, row); /* decoded once, reused by every token */
        float g = (accumulate && gamma && gamma->n) ? ftv_fvec_get(gamma, o) : 1.0f;
        for (int t = 0; t < tokens; t++) {
            const int8_t *a = xq + (size_t)t * k;
            int32_t acc = 0; /* |acc| <= 128 * k: fits for k < 2^24 */
            for (int j = 0; j < k; j++) acc += (int32_t)a[j] * row[j];
            float v = (float)acc / (xs[t] * w->scale);
            float *dst = y + (size_t)t * ldy + (o - o0);
            if (accumulate) *dst += g * v;
            else *dst = v;
        }
    }
}

void ftv_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                   float *out) {
    float mean = 0.0f;
    for (int j = 0; j < n; j++) mean += x[j];
    mean /= (float)n;
    float var = 0.0f;
    for (int j = 0; j < n; j++) {
        float d = x[j] - mean;
        var += d * d;
    }
    var /= (float)n;
    float r = 1.0f / sqrtf(var + eps);
    for (int j = 0; j < n; j++) {
        float gv = gamma ? ftv_tvec_get(gamma, j) : 1.0f;
        float bv = beta ? ftv_tvec_get(beta, j) : 0.0f;
        out[j] = (x[j] - mean) * r * gv + bv;
    }
}

void ftv_softmax(float *x, int n) {
    float mx = x[0];
    for (int j = 1; j < n; j++) if (x[j] > mx) mx = x[j];
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) x[j] *= inv;
}

void ftv_gelu(float *x, int n) {
    for (int j = 0; j < n; j++) x[j] = 0.5f * x[j] * (1.0f + erff(x[j] * 0.70710678118654752f));
}
