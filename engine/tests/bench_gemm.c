/* The ternary GEMM alone: (tokens x k) int8 activations times a (k x rows) ternary matrix,
 * by default DeiT-S's fc1 shape (197 x 384) x (384 x 1536). Prints one JSON object per
 * (kernels, format, threads): the median time of `reps` runs and GMAC/s. Runs are
 * interleaved across configurations, so a change in machine load hits them all alike; each
 * timed run follows an untimed one of the same configuration, so that its weights and
 * activations are in cache as in a forward pass.
 *
 *   bench_gemm [tokens k rows [reps [max_threads [scalar|avx2|avx512|amx|simd|all]]]]
 *
 * benchmarks/engine_speed.py builds and runs it next to torch's FP32 matmul on the same shape. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftv_kernels.h"
#include "ftv_threads.h"

typedef struct {
    const ftv_kernels *kern;
    const ftv_tmat *w;
    const int8_t *xq;
    const float *xs;
    const int32_t *xsum;
    int tokens;
    float *y;
    uint8_t *scratch; /* per thread */
    size_t scratch_bytes;
} job;

static void run_rows(void *ctx, int i, int n) {
    const job *j = (const job *)ctx;
    const int units = (j->w->rows + 15) / 16; /* 16-row panels, as the forward pass splits */
    int r0 = units * i / n * 16, r1 = units * (i + 1) / n * 16;
    if (r1 > j->w->rows) r1 = j->w->rows;
    if (r0 < r1)
        j->kern->tgemm(j->w, r0, r1, j->xq, j->xs, j->xsum, j->tokens, j->y + r0, j->w->rows, 1,
                       j->scratch + (size_t)i * j->scratch_bytes, 0, NULL);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pack(const int8_t *q, int rows, int k, uint32_t kind, uint8_t *out, int row_bytes) {
    memset(out, 0, (size_t)rows * row_bytes);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < row_bytes * (kind == FTV_KIND_TQ2 ? 4 : 5); j++) {
            unsigned code = j < k ? (unsigned)(q[(size_t)r * k + j] + 1) : 1u;
            uint8_t *b = out + (size_t)r * row_bytes;
            if (kind == FTV_KIND_TQ2) b[j / 4] |= (uint8_t)(code << (2 * (j % 4)));
            else {
                unsigned p = 1;
                for (int t = 0; t < j % 5; t++) p *= 3;
                b[j / 5] = (uint8_t)(b[j / 5] + code * p);
            }
        }
}

#define MAX_CONFIGS 16

int main(int argc, char **argv) {
    int tokens = 197, k = 384, rows = 1536, reps = 30, max_threads = 2;
    const char *which = argc >= 7 ? argv[6] : "all";
    if (argc >= 4) tokens = atoi(argv[1]), k = atoi(argv[2]), rows = atoi(argv[3]);
    if (argc >= 5) reps = atoi(argv[4]);
    if (argc >= 6) max_threads = atoi(argv[5]);
    if (tokens < 1 || k < 1 || rows < 1 || reps < 1 || max_threads < 1 || max_threads > 64) {
        fprintf(stderr, "usage: bench_gemm [tokens k rows [reps [max_threads [scalar|avx2|avx512|amx|simd|all]]]]\n");
        return 2;
    }
    srand(1);
    /* activations and outputs 64-byte aligned, as in the engine's arena: from malloc (16 bytes),
     * every 64-byte row of an AMX activation tile spanned two cache lines (820 against 1,300
     * GMAC/s on the Intel Xeon of docs/engine.md) */
    int8_t *q = malloc((size_t)rows * k), *xq = aligned_alloc(64, ((size_t)tokens * k + 63) / 64 * 64);
    float *xs = malloc(sizeof(float) * tokens), *y = aligned_alloc(64, (sizeof(float) * tokens * rows + 63) / 64 * 64);
    int32_t *xsum = calloc((size_t)tokens, sizeof(int32_t));
    for (size_t i = 0; i < (size_t)rows * k; i++) q[i] = (int8_t)(rand() % 3 - 1);
    for (size_t i = 0; i < (size_t)tokens * k; i++) xq[i] = (int8_t)(rand() % 256 - 128);
    for (int t = 0; t < tokens; t++) {
        xs[t] = 1.0f + (float)t;
        for (int j = 0; j < k; j++) xsum[t] += xq[(size_t)t * k + j];
    }

    const char *labels[4] = {"scalar", "avx2", "avx512", "amx"};
    const ftv_kernels *kernels[4];
    for (int i = 0; i < 4; i++) kernels[i] = ftv_kernels_by_name(labels[i]);
    struct { const char *label; const ftv_kernels *kern; ftv_tmat w; int threads; ftv_pool *pool; double t[1024]; } cfg[MAX_CONFIGS];
    ftv_pool *pools[65] = {NULL};
    void *owned[4 * 2 * 2] = {NULL}; /* the packed and repacked matrices: sets x kinds x 2 */
    int n_owned = 0;
    int nc = 0;
    size_t scratch_bytes = 0;
    for (int ki = 0; ki < 4; ki++) {
        const int wanted = strcmp(which, "all") == 0 || strcmp(which, labels[ki]) == 0 || (strcmp(which, "simd") == 0 && ki > 0);
        if (!kernels[ki] || !wanted) continue;
        for (uint32_t kind = FTV_KIND_TQ2; kind <= FTV_KIND_TQ1; kind++) {
            int rb = (k + (kind == FTV_KIND_TQ2 ? 3 : 4)) / (kind == FTV_KIND_TQ2 ? 4 : 5);
            uint8_t *packed = malloc((size_t)rows * rb);
            owned[n_owned++] = packed;
            pack(q, rows, k, kind, packed, rb);
            ftv_tmat w = {packed, rows, k, rb, kind, 1.0f, {NULL, 0, 0}, NULL};
            size_t bytes = kernels[ki]->repack(&w, 0, NULL);
            if (bytes) {
                void *rp = aligned_alloc(64, (bytes + 63) / 64 * 64);
                owned[n_owned++] = rp;
                kernels[ki]->repack(&w, 0, rp);
                w.repack = rp;
            }
            size_t sb = (kernels[ki]->gemm_scratch(k, tokens) + 63) / 64 * 64;
            if (sb > scratch_bytes) scratch_bytes = sb;
            for (int th = 1; th <= max_threads && nc < MAX_CONFIGS; th *= 2) {
                if (th > 1 && !pools[th]) {
                    if (ftv_pool_create(th, &pools[th]) != 0) break;
                }
                cfg[nc].label = labels[ki];
                cfg[nc].kern = kernels[ki];
                cfg[nc].w = w;
                cfg[nc].threads = th;
                cfg[nc].pool = pools[th]; /* one pool per thread count: no idle pool's workers around */
                nc++;
            }
        }
    }
    if (reps > 1024) reps = 1024;
    uint8_t *scratch = aligned_alloc(64, scratch_bytes * (size_t)max_threads);
    for (int rep = 0; rep < reps; rep++)
        for (int c = 0; c < nc; c++) {
            job j = {cfg[c].kern, &cfg[c].w, xq, xs, xsum, tokens, y, scratch, scratch_bytes};
            ftv_pool_run(cfg[c].pool, run_rows, &j); /* warm-up */
            double t0 = now();
            ftv_pool_run(cfg[c].pool, run_rows, &j);
            cfg[c].t[rep] = now() - t0;
        }
    for (int c = 0; c < nc; c++) {
        qsort(cfg[c].t, (size_t)reps, sizeof(double), cmp_double);
        double med = cfg[c].t[reps / 2], macs = (double)tokens * k * rows;
        printf("{\"kernels\": \"%s\", \"format\": \"%s\", \"threads\": %d, \"tokens\": %d, \"k\": %d, \"rows\": %d, "
               "\"reps\": %d, \"median_s\": %.6g, \"min_s\": %.6g, \"gmacs\": %.2f}\n",
               cfg[c].label, cfg[c].w.kind == FTV_KIND_TQ2 ? "tq2" : "tq1", cfg[c].threads, tokens, k, rows,
               reps, med, cfg[c].t[0], macs / med * 1e-9);
    }
    for (int th = 0; th <= max_threads; th++) ftv_pool_free(pools[th]);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(q), free(xq), free(xs), free(xsum), free(y), free(scratch);
    return 0;
}
