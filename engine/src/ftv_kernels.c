/* What every kernel set shares: reading the file's vectors and ternary codes, and the choice of
 * a set for a model (the one place that knows them all). See ftv_kernels.h. */
#define _GNU_SOURCE /* syscall(): the AMX permission */
#include "ftv_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__linux__) && !defined(FTV_AMX_EMULATE)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "ftv_math.h"


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


/* Every set, best first. `runs`: whether this CPU runs it (x86 sets need their instruction
 * sets, asked here, in code compiled without them). "lut" is never picked unless named: it
 * wins only on cores without a SIMD multiply-add (docs/mcu.md). */
static int always(void) { return 1; }
#if defined(__x86_64__) || defined(__i386__)
static int cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}
static int cpu_avx512(void) {
    return cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
}
#endif
#if defined(__x86_64__)
/* AMX-TILE, AMX-INT8 and AMX-BF16 (CPUID leaf 7: EDX bits 24, 25, 22; compilers'
 * __builtin_cpu_supports names differ by version) with AVX512_BF16 (every CPU with AMX so far has
 * all four), and Linux's permission to use the tile data, asked for the process (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; granted again when asked again). Built with
 * FTV_AMX_EMULATE (ftv_amx.h), the tiles are C and the set runs wherever AVX-512 and AVX512_BF16
 * do. */
static int cpu_amx(void) {
    if (!cpu_avx512() || !__builtin_cpu_supports("avx512bf16")) return 0;
#if defined(FTV_AMX_EMULATE)
    return 1;
#elif defined(__linux__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1) || !((d >> 25) & 1)) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0; /* other systems: their permission call is not written yet */
#endif
}
#endif

static const struct {
    const ftv_kernels *set;
    int (*runs)(void);
    int automatic; /* picked without being named */
} sets[] = {
#if defined(__x86_64__)
    /* automatic since it ran bit-identical on a Xeon with AMX (docs/engine.md) */
    {&ftv_kernels_amx_set, cpu_amx, 1},
#endif
#if defined(__x86_64__) || defined(__i386__)
    {&ftv_kernels_avx512_set, cpu_avx512, 1},
    {&ftv_kernels_avx2_set, cpu_avx2, 1},
#endif
    {&ftv_kernels_scalar, always, 1},
    {&ftv_kernels_lut, always, 0},
};
#define NSETS (sizeof sets / sizeof sets[0])

const ftv_kernels *ftv_kernels_by_name(const char *name) {
    for (size_t i = 0; i < NSETS; i++)
        if (strcmp(sets[i].set->name, name) == 0) return sets[i].runs() ? sets[i].set : NULL;
    return NULL;
}

const ftv_kernels *ftv_kernels_fast(const ftv_kernels *exact) {
#if defined(__x86_64__)
    if (exact == &ftv_kernels_amx_set) return &ftv_kernels_amx_fast;
#endif
#if defined(__x86_64__) || defined(__i386__)
    if (exact == &ftv_kernels_avx512_set)
        return __builtin_cpu_supports("avx512bf16") ? &ftv_kernels_avx512_bf16 : &ftv_kernels_avx512_fast;
    if (exact == &ftv_kernels_avx2_set) return &ftv_kernels_avx2_fast;
#endif
    (void)exact;
    return NULL;
}

#ifndef FTV_KERNELS_DEFAULT
#define FTV_KERNELS_DEFAULT NULL
#endif

/* The best set the CPU runs at or below the cap: FTV_FORCE_SCALAR=1 (as FTV_KERNELS=scalar),
 * else FTV_KERNELS (read at load; tests and benchmarks use them to run every set on one
 * machine), else the build's FTV_KERNELS_DEFAULT. An unknown name caps nothing. */
const ftv_kernels *ftv_kernels_select(void) {
    const char *force = getenv("FTV_FORCE_SCALAR");
    const char *cap = force && force[0] && strcmp(force, "0") != 0 ? "scalar" : getenv("FTV_KERNELS");
    if (!cap) cap = FTV_KERNELS_DEFAULT;
    size_t first = 0, named = NSETS; /* named: the set the cap names, if any */
    for (size_t i = 0; cap && i < NSETS; i++)
        if (strcmp(sets[i].set->name, cap) == 0) first = named = i;
    for (size_t i = first; i < NSETS; i++)
        if ((sets[i].automatic || i == named) && sets[i].runs()) return sets[i].set;
    return &ftv_kernels_scalar;
}
