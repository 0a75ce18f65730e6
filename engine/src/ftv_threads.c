/* The thread pool. See ftv_threads.h.
 *
 * A forward pass crosses a few dozen barriers in tens of milliseconds, so waiting must cost
 * about a microsecond: threads spin on C11 atomics (with the x86 pause hint), then yield their
 * core, and idle workers sleep on a condition variable between forward passes. */
#define _GNU_SOURCE /* sched_getcpu, sched_setaffinity: a woken worker leaves a busy core */
#include "ftv_threads.h"

#include <stdlib.h>

#if FTV_HAVE_THREADS

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SPINS 1000         /* pause instructions before a waiting thread yields its core: ~20 us */
#define YIELDS_BEFORE_SLEEP 200 /* an idle worker then yields a while (back-to-back forward
                                 * passes find it awake), then sleeps until the next run */

/* Step `spin` of a wait: pause, then yield the core. Yielding matters when the machine runs
 * other work: the thread we wait for may be queued on this very core (measured on a loaded
 * 2-core VM: without yields, 2 threads ran a GEMM slower than 1). */
static void wait_step(int spin) {
    if (spin < SPINS) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

struct ftv_pool {
    int n;
    atomic_int *cpu;     /* n: the core each thread ran the current job on (-1: not known) */
    pthread_t *workers; /* n - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_uint job;     /* bumped by ftv_pool_run: a new job for the workers */
    atomic_int running;  /* workers still in the current job */
    atomic_int stop;
    void (*fn)(void *ctx, int i, int n);
    void *ctx;
    atomic_uint arrived; /* barrier: threads arrived in the current round */
    atomic_uint round;   /* barrier: bumped by the last thread to arrive */
};

typedef struct {
    ftv_pool *pool;
    int index;
} worker_arg;

/* A worker woken after an idle pause can be put on a core another thread of the pool runs on:
 * in a VM guest, Linux does not count a halted vCPU as idle and wakes the worker on the
 * waker's core (measured on a 2-vCPU KVM guest: after 20 ms idle, 20 of 20 wake-ups), and the
 * two threads then share it for milliseconds, until the load balancer moves one (a two-thread
 * DeiT-Tiny pass: 3.0 ms after a 5 ms pause, 6.9 ms after 20 ms). A worker that finds itself
 * on a core another thread of the pool holds asks once to run elsewhere and gives its allowed
 * cores back at once: a nudge, not a pin. */
static void worker_claim_cpu(ftv_pool *p, int index) {
#if defined(__linux__)
    const int here = sched_getcpu();
    atomic_store(&p->cpu[index], here);
    if (here < 0) return;
    cpu_set_t allowed, elsewhere;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    elsewhere = allowed;
    int shared = 0;
    for (int i = 0; i < p->n; i++) {
        const int cpu = atomic_load(&p->cpu[i]);
        if (i == index || cpu < 0 || cpu >= CPU_SETSIZE) continue;
        shared |= cpu == here;
        CPU_CLR(cpu, &elsewhere);
    }
    if (!shared || CPU_COUNT(&elsewhere) == 0) return;
    if (sched_setaffinity(0, sizeof elsewhere, &elsewhere) == 0) {
        sched_setaffinity(0, sizeof allowed, &allowed); /* the move is done; the mask restored */
        atomic_store(&p->cpu[index], sched_getcpu());
    }
#else
    (void)p;
    (void)index;
#endif
}

static void *worker_main(void *arg) {
    ftv_pool *p = ((worker_arg *)arg)->pool;
    const int index = ((worker_arg *)arg)->index;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned job;
        for (int spin = 0; (job = atomic_load(&p->job)) == seen && !atomic_load(&p->stop); spin++) {
            if (spin < SPINS + YIELDS_BEFORE_SLEEP) {
                wait_step(spin);
                continue;
            }
            pthread_mutex_lock(&p->lock); /* re-checked under the lock: no lost wake-up */
            while (atomic_load(&p->job) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = job;
        worker_claim_cpu(p, index);
        p->fn(p->ctx, index, p->n);
        atomic_fetch_sub(&p->running, 1);
    }
}

int ftv_pool_create(int n, ftv_pool **out) {
    *out = NULL;
    if (n == 1) return 0;
    if (n < 1) return -1;
    ftv_pool *p = (ftv_pool *)calloc(1, sizeof *p);
    if (!p) return -1;
    p->workers = (pthread_t *)calloc((size_t)n - 1, sizeof(pthread_t));
    p->cpu = (atomic_int *)calloc((size_t)n, sizeof(atomic_int));
    if (!p->workers || !p->cpu || pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->workers);
        free(p->cpu);
        free(p);
        return -1;
    }
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->job, 0);
    atomic_init(&p->running, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->arrived, 0);
    atomic_init(&p->round, 0);
    for (int i = 0; i < n; i++) atomic_init(&p->cpu[i], -1);
    for (int i = 1; i < n; i++) {
        worker_arg *arg = (worker_arg *)malloc(sizeof *arg);
        if (arg) *arg = (worker_arg){p, i};
        if (!arg || pthread_create(&p->workers[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            p->n = i; /* the workers started so far are joined by ftv_pool_free */
            ftv_pool_free(p);
            return -1;
        }
    }
    p->n = n;
    *out = p;
    return 0;
}

void ftv_pool_free(ftv_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->workers);
    free(p->cpu);
    free(p);
}

void ftv_pool_run(ftv_pool *p, void (*fn)(void *ctx, int i, int n), void *ctx) {
    if (!p) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
#if defined(__linux__)
    atomic_store(&p->cpu[0], sched_getcpu());
#endif
    atomic_store(&p->running, p->n - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add(&p->job, 1); /* seq_cst: fn and ctx are visible to whoever sees the job */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    fn(ctx, 0, p->n);
    for (int spin = 0; atomic_load(&p->running) > 0; spin++) wait_step(spin);
}

void ftv_pool_barrier(ftv_pool *p) {
    if (!p) return;
    const unsigned round = atomic_load(&p->round);
    if (atomic_fetch_add(&p->arrived, 1) == (unsigned)p->n - 1) {
        atomic_store(&p->arrived, 0); /* before the new round: late readers of `round` see it */
        atomic_fetch_add(&p->round, 1);
        return;
    }
    for (int spin = 0; atomic_load(&p->round) == round; spin++) wait_step(spin);
}

#else /* single thread */

int ftv_pool_create(int n, ftv_pool **out) {
    *out = NULL;
    return n == 1 ? 0 : -1;
}

void ftv_pool_free(ftv_pool *p) { (void)p; }

void ftv_pool_run(ftv_pool *p, void (*fn)(void *ctx, int i, int n), void *ctx) {
    (void)p;
    fn(ctx, 0, 1);
}

void ftv_pool_barrier(ftv_pool *p) { (void)p; }

#endif
