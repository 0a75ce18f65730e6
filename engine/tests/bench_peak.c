/* Instruction peaks of one core: each loop runs 12 independent copies of one instruction (or
 * of a multiply and an add) on registers, so nothing but the execution units limits it. The
 * floors of the forward pass's phases in docs/engine.md are work / these rates.
 * benchmarks/engine_speed.py runs it and records its JSON lines (best of `rounds`).
 *
 *   bench_peak [rounds]   one JSON object per instruction this CPU has: G instructions/s,
 *                         and G multiply-adds/s where the instruction does multiply-adds; on
 *                         AMX CPUs also tdpbusd's rate with vector instructions beside it */
#define _GNU_SOURCE /* syscall(): the AMX permission */
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

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#include <immintrin.h>

/* AMX: 4 independent accumulator tiles (0-3) fed by two source tiles (4, 5) of 16 x 64 bytes;
 * the process asks Linux for the tile data first (as the engine's AMX set does). */
typedef struct {
    unsigned char palette, start_row, reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
} tilecfg;

static int amx_ok(void) {
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    if (!((d >> 22) & 1) || !((d >> 24) & 1) || !((d >> 25) & 1)) return 0; /* AMX-BF16, -TILE, -INT8 */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

#define AMX_ITERS 2000000L
/* Four independent tile products (op: tdpbusd or tdpbf16ps) a loop, then `groups` x 12 independent
 * vector instructions (`body` after `setup`; none for the peaks); returns products/s. Where the
 * vector work hides behind the products, tdpbusd keeps its peak: what a GEMM's epilogue may do
 * while the tiles multiply (docs/engine.md, the AMX section). */
#define AMX_RATE(fn, isa, op, setup, body, groups)                                                   \
    __attribute__((target(isa))) static double fn(void) {                                         \
        tilecfg cfg = {.palette = 1};                                                                 \
        for (int i = 0; i < 6; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;                              \
        _tile_loadconfig(&cfg);                                                                       \
        _tile_zero(0);                                                                                \
        _tile_zero(1);                                                                                \
        _tile_zero(2);                                                                                \
        _tile_zero(3);                                                                                \
        _tile_zero(4);                                                                                \
        _tile_zero(5);                                                                                \
        __asm__ volatile(setup ::: "xmm13", "xmm14", "xmm15");                                      \
        double t = now();                                                                             \
        for (long i = 0; i < AMX_ITERS; i++) {                                                        \
            op(0, 4, 5);                                                                              \
            op(1, 4, 5);                                                                              \
            op(2, 4, 5);                                                                              \
            op(3, 4, 5);                                                                              \
            for (int g = 0; g < (groups); g++) __asm__ volatile(body ::: CLOB12);                     \
        }                                                                                             \
        t = now() - t;                                                                                \
        _tile_release();                                                                              \
        return 4.0 * AMX_ITERS / t * 1e-9;                                                            \
    }
#define ADDZ(i) "vaddps %%zmm14, %%zmm" #i ", %%zmm" #i "\n\t"
#define AMX_INT8 "amx-tile,amx-int8"
AMX_RATE(peak_tdpbusd, AMX_INT8, _tile_dpbusd, "", "", 0)
AMX_RATE(peak_tdpbf16ps, "amx-tile,amx-bf16", _tile_dpbf16ps, "", "", 0)
AMX_RATE(peak_tdpbusd_fma_zmm_60, AMX_INT8 ",avx512f,fma", _tile_dpbusd, ONES, R12(FMAZ), 5)
AMX_RATE(peak_tdpbusd_fma_zmm_120, AMX_INT8 ",avx512f,fma", _tile_dpbusd, ONES, R12(FMAZ), 10)
AMX_RATE(peak_tdpbusd_fma_ymm_240, AMX_INT8 ",avx2,fma", _tile_dpbusd, ONES, R12(FMAY), 20)
AMX_RATE(peak_tdpbusd_add_zmm_120, AMX_INT8 ",avx512f", _tile_dpbusd, ONES, R12(ADDZ), 10)
#else
static int amx_ok(void) { return 0; }
static double peak_tdpbusd(void) { return 0.0; }
static double peak_tdpbf16ps(void) { return 0.0; }
static double peak_tdpbusd_fma_zmm_60(void) { return 0.0; }
static double peak_tdpbusd_fma_zmm_120(void) { return 0.0; }
static double peak_tdpbusd_fma_ymm_240(void) { return 0.0; }
static double peak_tdpbusd_add_zmm_120(void) { return 0.0; }
#endif

static int have_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 3;
    __builtin_cpu_init();
    const int amx = amx_ok();
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
        {"tdpbusd", peak_tdpbusd, amx, 16 * 16 * 64},  /* AMX-INT8: a tile of 16 x 16 int32, 64 bytes a sum */
        {"tdpbf16ps", peak_tdpbf16ps, amx, 16 * 16 * 32}, /* AMX-BF16: 32 bf16 products a sum */
        /* tdpbusd's rate with vector work between each four (AMX_RATE) */
        {"tdpbusd beside 60 vfmadd231ps zmm", peak_tdpbusd_fma_zmm_60, amx && have_avx512(), 16 * 16 * 64},
        {"tdpbusd beside 120 vfmadd231ps zmm", peak_tdpbusd_fma_zmm_120, amx && have_avx512(), 16 * 16 * 64},
        {"tdpbusd beside 240 vfmadd231ps ymm", peak_tdpbusd_fma_ymm_240, amx, 16 * 16 * 64},
        {"tdpbusd beside 120 vaddps zmm", peak_tdpbusd_add_zmm_120, amx && have_avx512(), 16 * 16 * 64},
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
