/* The scalar kernel set: the portable reference (C11, no allocation), and all a microcontroller
 * runs (with Helium or DSP multiply-accumulate in the GEMM where the core has them). Reductions
 * in the FTV_LANES order and exp/erf from ftv_math.h, so that the SIMD sets can compute the same
 * bits. See ftv_kernels.h. */
#include <math.h>
#include <string.h>

#include "ftv_kernels.h"
#include "ftv_math.h"

/* The sum over j < n of x[j] - c (sq = 0) or (x[j] - c)^2 (sq = 1) in the FTV_LANES order: element
 * j into partial sum j % FTV_LANES, a whole run of FTV_LANES at a time (a loop a compiler can
 * vectorize, partial sum by partial sum), then ftv_lanes_sum. */
static float lanes_reduce(const float *x, int n, float c, int sq) {
    float part[FTV_LANES] = {0};
    int j = 0;
    for (; j + FTV_LANES <= n; j += FTV_LANES)
        for (int l = 0; l < FTV_LANES; l++) {
            const float d = x[j + l] - c;
            part[l] += sq ? d * d : d;
        }
    for (int l = 0; j + l < n; l++) {
        const float d = x[j + l] - c;
        part[l] += sq ? d * d : d;
    }
    return ftv_lanes_sum(part);
}

float ftv_rmsnorm_quant(const float *x, const ftv_fvec *g, float rms_eps, float quant_eps,
                        int k, int8_t *q, int32_t *sum) {
    float r = ftv_norm_factor(lanes_reduce(x, k, 0.0f, 1), k, rms_eps);
    float amax = 0.0f;
    for (int j = 0; j < k; j++) {
        float h = x[j] * r * ftv_fvec_get(g, j);
        float a = fabsf(h);
        if (a > amax) amax = a;
    }
    float s = ftv_quant_scale(amax, quant_eps, r);
    int32_t total = 0;
    for (int j = 0; j < k; j++) {
        /* Recomputed rather than stored: same value, no (k,) float scratch needed. */
        float v = rintf(x[j] * r * ftv_fvec_get(g, j) * s);
        q[j] = ftv_to_int8(v);
        total += q[j];
    }
    if (sum) *sum = total;
    return s;
}

void ftv_norm_quant(const float *x, size_t ldx, int rows, const ftv_tmat *ln_g, const ftv_tmat *ln_b, float ln_eps,
                    const ftv_fvec *g, float rms_eps, float quant_eps, int n, int8_t *q, float *s, int32_t *sum,
                    float *scratch) {
    for (int r = 0; r < rows; r++) {
        const float *h = x + (size_t)r * ldx;
        if (ln_g) {
            ftv_layernorm(h, ln_g, ln_b, ln_eps, n, scratch);
            h = scratch;
        }
        s[r] = ftv_rmsnorm_quant(h, g, rms_eps, quant_eps, n, q + (size_t)r * n, sum ? sum + r : NULL);
    }
}

/* dot_tg: s[i] = sum_j a[i][j] * w[j] for TG tokens, in int32: exact (|s| <= 128 * k,
 * k < 2^24), so any order of the products gives the same sums. TG tokens per pass over a
 * decoded row: every weight load serves TG of them; TG is as large as the sums, pointers and
 * weights still fit in the core's registers. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#define TG 4
/* Helium (Cortex-M55): 16 MACs an instruction; a predicated tail reads nothing past k. */
static void dot_tg(const int8_t *w, const int8_t *const a[TG], int k, int32_t s[TG]) {
    const int8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 16 <= k; j += 16) {
        const int8x16_t v = vldrbq_s8(w + j);
        s0 = vmladavaq_s8(s0, vldrbq_s8(a0 + j), v);
        s1 = vmladavaq_s8(s1, vldrbq_s8(a1 + j), v);
        s2 = vmladavaq_s8(s2, vldrbq_s8(a2 + j), v);
        s3 = vmladavaq_s8(s3, vldrbq_s8(a3 + j), v);
    }
    if (j < k) {
        const mve_pred16_t p = vctp8q((uint32_t)(k - j));
        const int8x16_t v = vldrbq_z_s8(w + j, p);
        s0 = vmladavaq_s8(s0, vldrbq_z_s8(a0 + j, p), v);
        s1 = vmladavaq_s8(s1, vldrbq_z_s8(a1 + j, p), v);
        s2 = vmladavaq_s8(s2, vldrbq_z_s8(a2 + j, p), v);
        s3 = vmladavaq_s8(s3, vldrbq_z_s8(a3 + j, p), v);
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}
#elif defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
#include <arm_acle.h>
#define TG 3 /* 4 tokens need one register more than Thumb has: gcc spills on every step */
/* SXTB16 of bytes 1 and 3 in one instruction: gcc 12 has no intrinsic for the rotated form
 * and does not fuse a separate rotate into it. */
static inline int16x2_t sxtb16_ror8(uint32_t x) {
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
/* DSP extension (Cortex-M4): 4 int8 a load, sign-extended to 16-bit pairs (bytes 0, 2 and
 * 1, 3), 2 MACs an SMLAD. */
static void dot_tg(const int8_t *w, const int8_t *const a[TG], int k, int32_t s[TG]) {
    const int8_t *a0 = a[0], *a1 = a[1], *a2 = a[2];
    int32_t s0 = 0, s1 = 0, s2 = 0;
    int j = 0;
    for (; j + 4 <= k; j += 4) {
        uint32_t x, v; /* memcpy: activation rows start at any byte */
        memcpy(&v, w + j, 4);
        const int16x2_t ve = __sxtb16(v), vo = sxtb16_ror8(v);
        memcpy(&x, a0 + j, 4);
        s0 = __smlad(__sxtb16(x), ve, s0), s0 = __smlad(sxtb16_ror8(x), vo, s0);
        memcpy(&x, a1 + j, 4);
        s1 = __smlad(__sxtb16(x), ve, s1), s1 = __smlad(sxtb16_ror8(x), vo, s1);
        memcpy(&x, a2 + j, 4);
        s2 = __smlad(__sxtb16(x), ve, s2), s2 = __smlad(sxtb16_ror8(x), vo, s2);
    }
    for (; j < k; j++) {
        const int32_t v = w[j];
        s0 += a0[j] * v, s1 += a1[j] * v, s2 += a2[j] * v;
    }
    s[0] = s0, s[1] = s1, s[2] = s2;
}
#else
#define TG 4
static void dot_tg(const int8_t *w, const int8_t *const a[TG], int k, int32_t s[TG]) {
    const int8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int j = 0; j < k; j++) {
        const int32_t v = w[j];
        s0 += a0[j] * v, s1 += a1[j] * v, s2 += a2[j] * v, s3 += a3[j] * v;
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}
#endif

void ftv_tgemm_strided(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs,
                       const int32_t *xsum, int tokens, float *y, int ldt, int ldo, void *scratch,
                       int accumulate, const ftv_fvec *gamma) {
    (void)xsum; /* signed codes: no correction */
    const int k = w->k;
    int8_t *row = (int8_t *)scratch;
    for (int o = o0; o < o1; o++) {
        ftv_tmat_decode_row(w, o, row); /* decoded once, reused by every token */
        float g = (accumulate && gamma && gamma->n) ? ftv_fvec_get(gamma, o) : 1.0f;
        for (int t0 = 0; t0 < tokens; t0 += TG) {
            const int nt = tokens - t0 < TG ? tokens - t0 : TG;
            /* A short last group repeats its last token rather than needing a kernel per size. */
            const int8_t *a[TG];
            int32_t acc[TG];
            for (int i = 0; i < TG; i++) a[i] = xq + (size_t)(t0 + (i < nt ? i : nt - 1)) * k;
            dot_tg(row, a, k, acc);
            for (int i = 0; i < nt; i++) {
                const int t = t0 + i;
                float v = (float)acc[i] / (xs[t] * w->scale);
                float *dst = y + (size_t)t * ldt + (size_t)(o - o0) * ldo;
                if (accumulate) *dst += g * v;
                else *dst = v;
            }
        }
    }
}

void ftv_patch_gemm(const ftv_tmat *w, int o0, int o1, const int8_t *xq, const float *xs, int chans,
                    int tokens, const ftv_fvec *cs, const ftv_fvec *bias, float *y, int ldy,
                    void *scratch) {
    const int k = w->k, pp = k / chans;
    int8_t *row = (int8_t *)scratch;
    for (int o = o0; o < o1; o++) {
        ftv_tmat_decode_row(w, o, row);
        float mult = ftv_fvec_get(cs, o), rs = ftv_fvec_get(&w->row_scale, o);
        float b = bias->n ? ftv_fvec_get(bias, o) : 0.0f;
        for (int t = 0; t < tokens; t++) {
            const int8_t *a = xq + (size_t)t * k;
            float sum = 0.0f;
            for (int ch = 0; ch < chans; ch++) { /* each input channel has its own scale */
                int32_t acc = 0;
                for (int j = ch * pp; j < (ch + 1) * pp; j++) acc += (int32_t)a[j] * row[j];
                sum += (float)acc / xs[ch];
            }
            y[(size_t)t * ldy + (o - o0)] = sum / rs * mult + b;
        }
    }
}

void ftv_layernorm(const float *x, const ftv_tmat *gamma, const ftv_tmat *beta, float eps, int n,
                   float *out) {
    float mean = lanes_reduce(x, n, 0.0f, 0) / (float)n;
    float r = ftv_norm_factor(lanes_reduce(x, n, mean, 1), n, eps);
    for (int j = 0; j < n; j++) {
        float gv = gamma ? ftv_tvec_get(gamma, j) : 1.0f;
        float bv = beta ? ftv_tvec_get(beta, j) : 0.0f;
        out[j] = (x[j] - mean) * r * gv + bv;
    }
}

float ftv_absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    return amax;
}

void ftv_quantize_patches(const float *img, int chans, int h, int w, int ph, int pw, const float *scales, int p0,
                          int p1, int8_t *q) {
    const int gw = w / pw;
    for (int pi = p0; pi < p1; pi++) {
        int8_t *dst = q + (size_t)pi * chans * ph * pw;
        const int y0 = (pi / gw) * ph, x0 = (pi % gw) * pw;
        for (int ch = 0; ch < chans; ch++)
            for (int dy = 0; dy < ph; dy++)
                for (int dx = 0; dx < pw; dx++) {
                    const float v = rintf(img[((size_t)ch * h + y0 + dy) * w + x0 + dx] * scales[ch]);
                    *dst++ = ftv_to_int8(v);
                }
    }
}

void ftv_add_fvec(float *x, const ftv_fvec *v, int i0, int n) {
    for (int j = 0; j < n; j++) x[j] += ftv_fvec_get(v, i0 + j);
}

void ftv_softmax(float *x, int n) {
    float mx = x[0];
    for (int j = 1; j < n; j++) if (x[j] > mx) mx = x[j];
    float part[FTV_LANES] = {0};
    for (int j = 0; j < n; j++) {
        x[j] = ftv_expf(x[j] - mx);
        part[j % FTV_LANES] += x[j];
    }
    float inv = 1.0f / ftv_lanes_sum(part);
    for (int j = 0; j < n; j++) x[j] *= inv;
}

void ftv_gelu(float *x, int n) {
    for (int j = 0; j < n; j++) x[j] = 0.5f * x[j] * (1.0f + ftv_erff(x[j] * FTV_GELU_C));
}

void ftv_attend(const float *q, int ldq, const float *kt, int ldk, const float *v, int ldv, int tokens,
                int hd, float scale, float *out, int ldo, int nq, float *scratch) {
    float *att = scratch, *qh = scratch + ldk;
    for (int i = 0; i < nq; i++) {
        memcpy(qh, q + (size_t)i * ldq, (size_t)hd * sizeof(float)); /* out may overwrite q */
        /* d outer, keys inner: each score still sums q[d] * k[d] in the order d = 0, 1, ... */
        for (int j = 0; j < tokens; j++) att[j] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float qd = qh[d], *kd = kt + (size_t)d * ldk;
            for (int j = 0; j < tokens; j++) att[j] += qd * kd[j];
        }
        for (int j = 0; j < tokens; j++) att[j] *= scale;
        ftv_softmax(att, tokens);
        float *o = out + (size_t)i * ldo;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        for (int j = 0; j < tokens; j++) {
            const float p = att[j], *vj = v + (size_t)j * ldv;
            for (int d = 0; d < hd; d++) o[d] += p * vj[d];
        }
    }
}

static size_t scalar_gemm_scratch(int k, int tokens) {
    (void)tokens;
    return (size_t)k; /* one decoded row */
}

size_t ftv_attend_scratch(int ldk, int hd, int tokens) {
    (void)tokens;
    return FTV_ATTEND_SCRATCH(ldk, hd);
}

size_t ftv_repack_none(const ftv_tmat *w, int values, void *dst) {
    (void)w, (void)values, (void)dst;
    return 0; /* reads the file's codes in place (flash on a microcontroller) */
}

const ftv_kernels ftv_kernels_scalar =
    FTV_SCALAR_KERNELS("scalar", &ftv_kernels_scalar, scalar_gemm_scratch, ftv_tgemm_strided);
