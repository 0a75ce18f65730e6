/* A fixed pool of threads for the forward pass: created once (ftv_model_set_threads), it
 * runs one function on every thread, and the function splits its phases with barriers.
 *
 * POSIX builds use pthreads. Builds without them (microcontrollers, or -DFTV_NO_THREADS)
 * get the single-thread path: ftv_pool_create(1) returns NULL, which every call accepts as
 * "one thread, no synchronization". */
#ifndef FTV_THREADS_H
#define FTV_THREADS_H

#if !defined(FTV_NO_THREADS) && (defined(__unix__) || defined(__APPLE__))
#define FTV_HAVE_THREADS 1
#else
#define FTV_HAVE_THREADS 0
#endif

typedef struct ftv_pool ftv_pool;

/* A pool of n threads in all: the caller of ftv_pool_run is thread 0, n - 1 workers wait.
 * Sets *out to NULL for n == 1. Returns 0 on success, -1 when n > 1 threads cannot be had
 * (no thread support in this build, or thread creation failed). */
int ftv_pool_create(int n, ftv_pool **out);
void ftv_pool_free(ftv_pool *p);

/* Runs fn(ctx, i, n) on threads i = 0..n-1 (the caller is thread 0) and returns when every
 * one has returned. p == NULL: fn(ctx, 0, 1). */
void ftv_pool_run(ftv_pool *p, void (*fn)(void *ctx, int i, int n), void *ctx);

/* Called by all n threads inside ftv_pool_run: none returns before all have arrived, and
 * every write made before the barrier is visible after it. No-op for p == NULL. */
void ftv_pool_barrier(ftv_pool *p);

#endif
