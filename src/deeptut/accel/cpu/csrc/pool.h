/* A tiny pool of persistent worker threads, for the CPU kernels (each library that includes this gets its
   own pool). */

#ifndef DEEPTUT_POOL_H
#define DEEPTUT_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* A job is cut into a fixed number of parts; the caller and the
   workers claim parts one at a time. Who computes a part does not change the result, and the caller never
   waits for a worker that has not started: on a busy machine (another process on the other core) it simply
   does the remaining parts itself. It does wait for a part a worker has claimed (the worker reads the
   caller's x, which may be freed after the return), so a worker preempted mid-part still costs a time slice;
   workers spin only briefly and then sleep, which made that rarer under load than a long spin. */

#define MAXW 63
#ifndef SPIN
#define SPIN 1000 /* pause iterations (~20-60 us) before sleeping: a long spin made things worse on a busy machine */
#endif

typedef void (*part_fn)(const void *ctx, int part);

static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER; /* one multi-threaded job at a time */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct {
    part_fn fn;
    const void *ctx; /* the caller's: it stays alive until every claimed part is done */
    int nparts;
} job;
static int job_claimed, job_gen, n_sleeping, n_workers; /* job_claimed: parts claimed so far */
static uint64_t job_taken; /* bit t: part t is claimed */
static atomic_int job_done, job_gen_pub;
static int atfork_set;

/* Claim parts of the current job (gen) until none is left; under no lock while computing. Thread `self`
   (the caller 0, workers 1, 2, ...) takes part `self` first when it is still free, so that from one job to
   the next a part's data tends to stay in the same core's cache; then any free part. */
static void work(int gen, int self) {
    for (;;) {
        pthread_mutex_lock(&mu);
        if (job_gen != gen || job_claimed >= job.nparts) {
            pthread_mutex_unlock(&mu);
            return;
        }
        int t = self;
        if (t >= job.nparts || t >= 64 || (job_taken >> t & 1)) {
            t = 0;
            while (t < 64 && (job_taken >> t & 1)) t++;
        }
        if (t < 64) job_taken |= (uint64_t)1 << t;
        job_claimed++;
        if (t >= 64) t = job_claimed - 1; /* parts past 64 go in order (after the first 64 are taken) */
        part_fn fn = job.fn;
        const void *ctx = job.ctx;
        pthread_mutex_unlock(&mu);
        fn(ctx, t);
        atomic_fetch_add_explicit(&job_done, 1, memory_order_release);
    }
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker(void *arg) {
    int self = (int)(intptr_t)arg;
    int seen = 0;
    for (;;) {
        /* spin a little (the next step usually comes within tens of microseconds), then sleep */
        for (int i = 0; i < SPIN && atomic_load_explicit(&job_gen_pub, memory_order_acquire) == seen; i++)
            cpu_relax();
        pthread_mutex_lock(&mu);
        while (job_gen == seen) {
            n_sleeping++;
            pthread_cond_wait(&cv, &mu);
            n_sleeping--;
        }
        seen = job_gen;
        pthread_mutex_unlock(&mu);
        work(seen, self);
    }
    return NULL;
}

static void after_fork_child(void) { /* the workers do not exist in a forked child */
    pthread_mutex_init(&job_mu, NULL);
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&cv, NULL);
    n_workers = 0;
    n_sleeping = 0;
}

static void ensure_workers(int want) {
    if (want > MAXW) want = MAXW;
    if (!atfork_set) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_set = 1;
    }
    while (n_workers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker, (void *)(intptr_t)(n_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* fewer workers: the caller does more parts, same result */
        n_workers++;
    }
}

/* fn(ctx, t) for t in [0, nparts), spread over T threads (the caller and T - 1 workers). */
static void run_parts(part_fn fn, const void *ctx, int nparts, int T) {
    if (T > 1 && nparts > 1) {
        pthread_mutex_lock(&job_mu);
        pthread_mutex_lock(&mu);
        ensure_workers(T - 1);
        job.fn = fn;
        job.ctx = ctx;
        job.nparts = nparts;
        job_claimed = 0;
        job_taken = 0;
        atomic_store_explicit(&job_done, 0, memory_order_relaxed);
        int gen = ++job_gen;
        atomic_store_explicit(&job_gen_pub, gen, memory_order_release);
        if (n_sleeping) pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        work(gen, 0);
        /* only parts a worker has claimed and is computing remain */
        while (atomic_load_explicit(&job_done, memory_order_acquire) < nparts) cpu_relax();
        pthread_mutex_unlock(&job_mu);
    } else {
        for (int t = 0; t < nparts; t++) fn(ctx, t);
    }
}

#endif
