/* Instruction peaks of one core: each loop runs 12 independent copies of one instruction (or
 * of a multiply and an add) on registers, so nothing but the execution units limits it. The
 * floors of the forward pass's phases in docs/engine.md are work / these rates.
 * benchmarks/engine_speed.py runs it and records its JSON lines (best of `rounds`).
 *
 *   bench_peak [rounds]   one JSON object per instruction this CPU has: G instructions/s,
 *                         and G multiply-adds/s where the instruction does multiply-adds */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define R12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define CLOB12 "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11"
#define ITERS 20000000L

/* One loop: 12 copies of `body` per iteration; returns G iterations of the 12 per second x 12. */
#define PEAK(fn, isa, setup, body)                                                                   \
    __attribute__((target(isa))) static double fn(void) {                                         \
        __asm__ volatile(setup ::: "xmm13", "xmm14", "xmm15");                                      \
        double t = now();                                                                             \
        for (long i = 0; i < ITERS; i++) __asm__ volatile(body ::: CLOB12);                           \
        return 12.0 * ITERS / (now() - t) * 1e-9;                                                     \
    }

#define ZERO "vpxor %%xmm13, %%xmm13, %%xmm13\n\tvpxor %%xmm14, %%xmm14, %%xmm14\n\tvpxor %%xmm15, %%xmm15, %%xmm15\n\t"
/* 3.0f in the low 8 lanes, 0.0f above: no subnormal operand slows anything */
#define ONES "vpcmpeqd %%ymm13, %%ymm13, %%ymm13\n\tvpsrld $30, %%ymm13, %%ymm13\n\tvcvtdq2ps %%ymm13, %%ymm14\n\t" \
             "vmovaps %%ymm14, %%ymm15\n\tvmovaps %%ymm14, %%ymm13\n\t"
#define DPZ(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define DPY(i) "vpdpbusd %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define MADDUBS(i) "vpmaddubsw %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define MULADDZ(i) "vmulps %%zmm14, %%zmm15, %%zmm" #i "\n\t" "vaddps %%zmm13, %%zmm" #i ", %%zmm" #i "\n\t"
#define MULADDY(i) "vmulps %%ymm14, %%ymm15, %%ymm" #i "\n\t" "vaddps %%ymm13, %%ymm" #i ", %%ymm" #i "\n\t"
#define FMAZ(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define FMAY(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define BF16(i) "vdpbf16ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define DIVZ(i) "vdivps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define PERMZ(i) "vpermps %%zmm14, %%zmm15, %%zmm" #i "\n\t"

PEAK(peak_vpdpbusd_zmm, "avx512f,avx512vnni", ZERO, R12(DPZ))
PEAK(peak_vpdpbusd_ymm, "avx512vl,avx512vnni", ZERO, R12(DPY))
PEAK(peak_vpmaddubsw_ymm, "avx2", ZERO, R12(MADDUBS))
PEAK(peak_muladd_zmm, "avx512f", ONES, R12(MULADDZ))
PEAK(peak_muladd_ymm, "avx2", ONES, R12(MULADDY))
PEAK(peak_fma_zmm, "avx512f,fma", ONES, R12(FMAZ))
PEAK(peak_fma_ymm, "avx2,fma", ONES, R12(FMAY))
PEAK(peak_vdpbf16ps_zmm, "avx512f,avx512bf16", ZERO, R12(BF16))
PEAK(peak_vdivps_zmm, "avx512f", ONES, R12(DIVZ))
PEAK(peak_vpermps_zmm, "avx512f", ZERO, R12(PERMZ))

static int have_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 3;
    __builtin_cpu_init();
    const struct {
        const char *name;
        double (*fn)(void);
        int ok;
        double macs; /* multiply-adds per instruction (pair, for mul + add) */
    } peaks[] = {
        {"vpdpbusd zmm", peak_vpdpbusd_zmm, have_avx512() && __builtin_cpu_supports("avx512vnni"), 64},
        {"vpdpbusd ymm", peak_vpdpbusd_ymm, have_avx512() && __builtin_cpu_supports("avx512vnni"), 32},
        {"vpmaddubsw ymm", peak_vpmaddubsw_ymm, __builtin_cpu_supports("avx2"), 32},
        {"vmulps + vaddps zmm", peak_muladd_zmm, have_avx512(), 16},
        {"vmulps + vaddps ymm", peak_muladd_ymm, __builtin_cpu_supports("avx2"), 8},
        {"vfmadd231ps zmm", peak_fma_zmm, have_avx512(), 16},
        {"vfmadd231ps ymm", peak_fma_ymm, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), 8},
        {"vdpbf16ps zmm", peak_vdpbf16ps_zmm, have_avx512() && __builtin_cpu_supports("avx512bf16"), 32},
        {"vdivps zmm", peak_vdivps_zmm, have_avx512(), 0},
        {"vpermps zmm", peak_vpermps_zmm, have_avx512(), 0},
    };
    for (size_t p = 0; p < sizeof peaks / sizeof peaks[0]; p++) {
        if (!peaks[p].ok) continue;
        double best = 0.0;
        for (int r = 0; r < rounds; r++) {
            const double g = peaks[p].fn();
            best = g > best ? g : best;
        }
        printf("{\"instruction\": \"%s\", \"g_per_s\": %.3f, \"gmacs\": %.1f}\n", peaks[p].name, best,
               best * peaks[p].macs);
    }
    return 0;
}

#else
int main(void) {
    fprintf(stderr, "bench_peak: x86-64 only\n");
    return 0;
}
#endif
