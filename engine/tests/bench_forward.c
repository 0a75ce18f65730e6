/* Whole forward passes of one model from C, and where their time goes: built with
 * -DFTV_PROFILE (`make -C engine build/bench_forward`), it prints the wall time of `runs` passes
 * (minimum and median) and each phase's time (minimum and median over the passes, summed over
 * threads; ftv_model_profile). The input is fixed noise, so runs are comparable.
 *
 *   bench_forward MODEL.ftv [runs [threads [exact|fast]]]
 *
 * Minima are the numbers to compare between builds on a shared machine (another job's load only
 * ever adds time); benchmarks/engine_speed.py reports medians against other engines. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftervit.h"

#define MAX_RUNS 1000
#define MAX_PHASES 16

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_forward MODEL.ftv [runs [threads [exact|fast]]]\n");
        return 2;
    }
    const int runs = argc > 2 ? atoi(argv[2]) : 20, threads = argc > 3 ? atoi(argv[3]) : 1;
    const int fast = argc > 4 && strcmp(argv[4], "fast") == 0;
    if (runs < 1 || runs > MAX_RUNS || threads < 1) {
        fprintf(stderr, "bench_forward: runs in [1, %d], threads >= 1\n", MAX_RUNS);
        return 2;
    }
    ftv_model *m;
    char err[256];
    if (ftv_model_load_file(argv[1], &m, err, sizeof err) != FTV_OK) {
        fprintf(stderr, "bench_forward: %s\n", err);
        return 1;
    }
    if (ftv_model_set_threads(m, threads) != FTV_OK ||
        (fast && ftv_model_set_numerics(m, FTV_NUMERICS_FAST) != FTV_OK)) {
        fprintf(stderr, "bench_forward: %d threads%s not available in this build\n", threads, fast ? ", fast" : "");
        ftv_model_free(m);
        return 1;
    }
    const ftv_config *c = ftv_model_config(m);
    const size_t n = (size_t)c->in_chans * c->img_h * c->img_w;
    float *x = malloc(n * sizeof *x), *logits = malloc((size_t)c->num_classes * sizeof *logits);
    static double wall[MAX_RUNS], phase[MAX_PHASES][MAX_RUNS];
    double seconds[MAX_PHASES];
    uint32_t rng = 1;
    for (size_t i = 0; i < n; i++) { /* uniform noise in [-2, 2) */
        rng = rng * 1664525u + 1013904223u;
        x[i] = (float)(rng >> 8) / (float)(1 << 24) * 4.0f - 2.0f;
    }
    ftv_model_forward(m, x, logits); /* warm-up: caches, pool threads */
    const int phases = ftv_model_profile(m, seconds, MAX_PHASES);
    for (int r = 0; r < runs; r++) {
        const double t = now();
        ftv_model_forward(m, x, logits);
        wall[r] = now() - t;
        ftv_model_profile(m, seconds, MAX_PHASES);
        for (int p = 0; p < phases; p++) phase[p][r] = seconds[p];
    }
    printf("%s: %s kernels, %s numerics, %d thread(s), arena %zu B, %d runs\n", argv[1], ftv_model_kernels(m),
           fast ? "fast" : "exact", threads, ftv_model_arena_bytes(m), runs);
    double lo = wall[0];
    for (int r = 1; r < runs; r++) lo = wall[r] < lo ? wall[r] : lo;
    printf("  %-11s min %8.3f ms  median %8.3f ms\n", "wall", 1e3 * lo, 1e3 * median(wall, runs));
    for (int p = 0; p < phases; p++) {
        double plo = phase[p][0];
        for (int r = 1; r < runs; r++) plo = phase[p][r] < plo ? phase[p][r] : plo;
        printf("  %-11s min %8.3f ms  median %8.3f ms\n", ftv_profile_phase_name(p), 1e3 * plo,
               1e3 * median(phase[p], runs));
    }
    if (!phases) printf("  (no phases: build with -DFTV_PROFILE)\n");
    free(x), free(logits);
    ftv_model_free(m);
    return 0;
}
