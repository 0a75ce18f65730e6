/* The SIMD mapping layer of the x86 kernels (in the manner of ggml's simd mappings): one
 * vocabulary of float and int32 vector operations, for vectors of FTV_VL = 8 lanes (AVX2,
 * __m256) or FTV_VL = 16 lanes (AVX-512, __m512). ftv_kernels_x86.h writes the kernels the two
 * sets share once, in this vocabulary; ftv_kernels_avx2.c and ftv_kernels_avx512.c each
 * define FTV_VL, enable their instruction set for the whole file and include it.
 *
 *   vf / vi / vmask     float, int32 and lane-mask vectors
 *   vf_*                float ops, lane by lane, each one IEEE operation (no fused multiply-add
 *                       unless the name says fma)
 *   vf_load_n/store_n   the first n lanes only (tails), the others read as 0 and not written */
#ifndef FTV_SIMD_H
#define FTV_SIMD_H

#include <immintrin.h>
#include <stdint.h>

#include "ftv_kernels.h"

#define SIMD_INLINE static inline __attribute__((always_inline))

#if FTV_VL == 8

typedef __m256 vf;
typedef __m256i vi;
typedef __m256i vmask; /* all ones in the lanes that are on */

SIMD_INLINE vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
SIMD_INLINE void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
SIMD_INLINE vf vf_set1(float x) { return _mm256_set1_ps(x); }
SIMD_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
SIMD_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
SIMD_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SIMD_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
SIMD_INLINE vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
SIMD_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
SIMD_INLINE vf vf_fnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); } /* c - a b, rounded once */
/* min/max as x86 orders them: vf_min(a, b) = a < b ? a : b (b when either is NaN) */
SIMD_INLINE vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
SIMD_INLINE vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
SIMD_INLINE vf vf_round(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SIMD_INLINE vf vf_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
SIMD_INLINE vf vf_copysign(vf mag, vf sign) { /* mag >= 0 */
    return _mm256_or_ps(mag, _mm256_and_ps(_mm256_set1_ps(-0.0f), sign));
}
/* a < b ? x : y, lane by lane */
SIMD_INLINE vf vf_select_lt(vf a, vf b, vf x, vf y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
SIMD_INLINE vi vf_to_i32(vf a) { return _mm256_cvtps_epi32(a); } /* rounds to nearest, even */
SIMD_INLINE vi vf_trunc_i32(vf a) { return _mm256_cvttps_epi32(a); } /* as C's (int); out of range: INT_MIN */
SIMD_INLINE vi vi_min(vi a, vi b) { return _mm256_min_epi32(a, b); }
/* An 8-entry table (t[0..7]) and the lookup table[idx & 7] in every lane */
SIMD_INLINE vf vf_table8(const float *t) { return _mm256_loadu_ps(t); }
SIMD_INLINE vf vf_lookup8(vf table, vi idx) { return _mm256_permutevar8x32_ps(table, idx); }
SIMD_INLINE vf vi_to_f32(vi a) { return _mm256_cvtepi32_ps(a); }
SIMD_INLINE vf vi_as_f32(vi a) { return _mm256_castsi256_ps(a); }
SIMD_INLINE vi vi_load(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
SIMD_INLINE vi vi_load_i8(const int8_t *p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); } /* FTV_VL int8, sign-extended */
SIMD_INLINE vi vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
SIMD_INLINE vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
SIMD_INLINE vi vi_sub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
SIMD_INLINE vi vi_shl(vi a, int n) { return _mm256_slli_epi32(a, n); }
SIMD_INLINE vi vi_zero(void) { return _mm256_setzero_si256(); }
SIMD_INLINE int32_t vi_sum(vi a) { /* exact: int32 */
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}
/* FTV_VL int32 in [-128, 127] stored as int8 */
SIMD_INLINE void vi_store_i8(int8_t *q, vi a) {
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    _mm_storel_epi64((__m128i *)q, _mm_packs_epi16(w, w));
}
/* 4 FTV_VL int32 in [-128, 127], a then b, c, d, as int8 at q: two packs and a permute */
SIMD_INLINE void vi_store_i8x4(int8_t *q, vi a, vi b, vi c, vi d) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    /* packs work within 128-bit lanes: dwords come out in the order a0 b0 c0 d0 a1 b1 c1 d1 */
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}
/* The first min(n, FTV_VL) lanes (those of m) as int8 at q */
SIMD_INLINE void vi_store_i8_n(int8_t *q, vi a, vmask m, int n) {
    (void)m;
    if (n >= 8) {
        vi_store_i8(q, a);
        return;
    }
    int8_t b[8];
    vi_store_i8(b, a);
    memcpy(q, b, (size_t)n);
}
SIMD_INLINE vmask vmask_first(int n) { /* lanes [0, n) */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SIMD_INLINE vf vf_load_mask(const float *p, vmask m) { return _mm256_maskload_ps(p, m); }
/* a + b in the lanes of m, a in the others */
SIMD_INLINE vf vf_add_mask(vf a, vmask m, vf b) { return _mm256_blendv_ps(a, _mm256_add_ps(a, b), _mm256_castsi256_ps(m)); }
/* max(a, b) in the lanes of m, a in the others */
SIMD_INLINE vf vf_max_mask(vf a, vmask m, vf b) { return _mm256_blendv_ps(a, _mm256_max_ps(a, b), _mm256_castsi256_ps(m)); }
SIMD_INLINE void vf_store_mask(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }
/* lanes[0] after lanes[i] += lanes[i + 4], then [i + 2], then [i + 1] (ftv_lanes_sum's folds) */
SIMD_INLINE float vf_fold_sum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
/* a[i] lane j -> a[j] lane i: the 8 x 8 transpose (unpacks, then shuffles, then 128-bit halves) */
SIMD_INLINE void vf_transpose(vf *a) {
    vf t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(a[2 * k], a[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(a[2 * k], a[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) { /* u[4k + c], 128-bit half L: rows 4k .. 4k + 3 of column 4L + c */
        u[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        a[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        a[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}
SIMD_INLINE float vf_hmax(vf v) { /* exact in any order: max of floats is one of them */
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}
/* lane l to p[l * stride] */
SIMD_INLINE void vf_scatter(float *p, size_t stride, vmask m, vf v) {
    float lane[8];
    int on[8];
    _mm256_storeu_ps(lane, v);
    _mm256_storeu_si256((__m256i *)on, m);
    for (int l = 0; l < 8; l++)
        if (on[l]) p[(size_t)l * stride] = lane[l];
}
/* FTV_VL values of a file vector (FP16 or FP32) from index i; masked: lanes past m read nothing.
 * vf_load_fv: the same with the kind as a constant (callers specialize their loops on it). */
SIMD_INLINE vf vf_load_fv(const ftv_fvec *v, int i, const int f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v->data + 2 * (size_t)i)));
    return _mm256_loadu_ps((const float *)(v->data + 4 * (size_t)i));
}
SIMD_INLINE vf vf_load_fvec(const ftv_fvec *v, int i) { return vf_load_fv(v, i, v->is_f16); }
SIMD_INLINE vf vf_load_fvec_mask(const ftv_fvec *v, int i, vmask m, int n) {
    if (!v->is_f16) return _mm256_maskload_ps((const float *)(v->data + 4 * (size_t)i), m);
    uint16_t h[8] = {0};
    for (int l = 0; l < n; l++) memcpy(h + l, v->data + 2 * ((size_t)i + (size_t)l), 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

#elif FTV_VL == 16

typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vmask;

SIMD_INLINE vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
SIMD_INLINE void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
SIMD_INLINE vf vf_set1(float x) { return _mm512_set1_ps(x); }
SIMD_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
SIMD_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
SIMD_INLINE vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
SIMD_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
SIMD_INLINE vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
SIMD_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
SIMD_INLINE vf vf_fnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
SIMD_INLINE vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
SIMD_INLINE vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
SIMD_INLINE vf vf_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SIMD_INLINE vf vf_abs(vf a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7FFFFFFF)));
}
SIMD_INLINE vf vf_copysign(vf mag, vf sign) {
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(mag), _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32((int)0x80000000u))));
}
SIMD_INLINE vf vf_select_lt(vf a, vf b, vf x, vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
SIMD_INLINE vi vf_to_i32(vf a) { return _mm512_cvtps_epi32(a); }
SIMD_INLINE vi vf_trunc_i32(vf a) { return _mm512_cvttps_epi32(a); }
SIMD_INLINE vi vi_min(vi a, vi b) { return _mm512_min_epi32(a, b); }
SIMD_INLINE vf vf_table8(const float *t) { return _mm512_zextps256_ps512(_mm256_loadu_ps(t)); }
SIMD_INLINE vf vf_lookup8(vf table, vi idx) { /* idx in [0, 8) or INT_MIN (low 4 bits 0) */
    return _mm512_permutexvar_ps(idx, table);
}
SIMD_INLINE vf vi_to_f32(vi a) { return _mm512_cvtepi32_ps(a); }
SIMD_INLINE vf vi_as_f32(vi a) { return _mm512_castsi512_ps(a); }
SIMD_INLINE vi vi_load(const int32_t *p) { return _mm512_loadu_si512((const void *)p); }
SIMD_INLINE vi vi_load_i8(const int8_t *p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)); }
SIMD_INLINE vi vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
SIMD_INLINE vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
SIMD_INLINE vi vi_sub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
SIMD_INLINE vi vi_shl(vi a, int n) { return _mm512_slli_epi32(a, (unsigned)n); }
SIMD_INLINE vi vi_zero(void) { return _mm512_setzero_si512(); }
SIMD_INLINE int32_t vi_sum(vi a) { return _mm512_reduce_add_epi32(a); }
SIMD_INLINE void vi_store_i8(int8_t *q, vi a) { _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(a)); }
SIMD_INLINE void vi_store_i8_n(int8_t *q, vi a, vmask m, int n) {
    (void)n;
    _mm512_mask_cvtepi32_storeu_epi8(q, m, a);
}
SIMD_INLINE void vi_store_i8x4(int8_t *q, vi a, vi b, vi c, vi d) {
    const __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
    /* packs work within 128-bit lanes: dword 4L + s holds source s's elements 4L .. 4L + 3 */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_si512((void *)q, _mm512_permutexvar_epi32(order, p));
}
SIMD_INLINE vmask vmask_first(int n) { return (vmask)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
SIMD_INLINE vf vf_load_mask(const float *p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
SIMD_INLINE vf vf_add_mask(vf a, vmask m, vf b) { return _mm512_mask_add_ps(a, m, a, b); }
SIMD_INLINE vf vf_max_mask(vf a, vmask m, vf b) { return _mm512_mask_max_ps(a, m, a, b); }
SIMD_INLINE void vf_store_mask(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
SIMD_INLINE float vf_hmax(vf v) { return _mm512_reduce_max_ps(v); }
/* lanes[0] after lanes[i] += lanes[i + 8], then [i + 4], [i + 2], [i + 1] (ftv_lanes_sum's folds) */
SIMD_INLINE float vf_fold_sum(vf v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
/* a[i] lane j -> a[j] lane i: the 16 x 16 transpose (unpacks, shuffles, then two rounds of
 * 128-bit lane shuffles) */
SIMD_INLINE void vf_transpose(vf *a) {
    vf t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(a[2 * k], a[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(a[2 * k], a[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) { /* u[4k + c], 128-bit lane L: rows 4k .. 4k + 3 of column 4L + c */
        u[4 * k] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) { /* column 4L + c: lanes L of u[c], u[4 + c], u[8 + c], u[12 + c] */
        const vf p0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), p1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        const vf q0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), q1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        a[c] = _mm512_shuffle_f32x4(p0, q0, 0x88);
        a[4 + c] = _mm512_shuffle_f32x4(p0, q0, 0xDD);
        a[8 + c] = _mm512_shuffle_f32x4(p1, q1, 0x88);
        a[12 + c] = _mm512_shuffle_f32x4(p1, q1, 0xDD);
    }
}
SIMD_INLINE void vf_scatter(float *p, size_t stride, vmask m, vf v) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)stride));
    _mm512_mask_i32scatter_ps(p, m, idx, v, 4);
}
SIMD_INLINE vf vf_load_fv(const ftv_fvec *v, int i, const int f16) {
    if (f16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v->data + 2 * (size_t)i)));
    return _mm512_loadu_ps((const float *)(v->data + 4 * (size_t)i));
}
SIMD_INLINE vf vf_load_fvec(const ftv_fvec *v, int i) { return vf_load_fv(v, i, v->is_f16); }
SIMD_INLINE vf vf_load_fvec_mask(const ftv_fvec *v, int i, vmask m, int n) {
    (void)n;
    if (v->is_f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v->data + 2 * (size_t)i));
    return _mm512_maskz_loadu_ps(m, v->data + 4 * (size_t)i);
}

#else
#error "FTV_VL: 8 (AVX2) or 16 (AVX-512)"
#endif

#endif
