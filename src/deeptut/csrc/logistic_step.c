/* One fused SGD step of multinomial logistic regression (float32, plain C, no Python API).

   For each block of a few rows of x (kept in L1): logits z = x_blk W + b, softmax, g = (p - onehot) / n,
   gW^T += g^T x_blk; one pass over x. The rows are split into P = logistic_nparts(T) fixed parts (part t:
   rows [t n / P, (t+1) n / P)), each with its own partial gradient; the partials are then summed in part
   order, so the result depends on T but not on which thread computed which part (see the pool below).
   Then W -= lr (gW [+ L1 sign(W)] [+ 2 L2 W]), b -= lr sum(g). IEEE arithmetic (no -ffast-math);
   vectorised with GCC/Clang vector extensions along the input dimension d.

   Built and loaded by deeptut.ckernels. */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Vector width 8 (AVX/AVX2 ymm; elsewhere whatever the compiler makes of 32-byte vectors): on AMD Zen 4
   the 512-bit forms were slower (double-pumped, more shuffles); with AVX-512VL there are 32 ymm registers,
   enough for two rows x 10 classes of forward accumulators. */
#ifndef VW
#define VW 8
#endif
#ifndef PAIR
#if defined(__AVX512VL__)
#define PAIR 2
#else
#define PAIR 1
#endif
#endif
#define KMAX 32
#ifndef RB
#define RB 8 /* rows per block */
#endif
#ifndef PF_ROWS
#define PF_ROWS 16 /* prefetch distance in rows */
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4), may_alias));

static inline vf vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }
static inline vf vsplat(float s) {
    vf v;
    for (int i = 0; i < VW; i++) v[i] = s;
    return v;
}
static inline float hsum(vf v) { /* fixed pairwise order */
#if VW == 16
    typedef float v8 __attribute__((vector_size(32)));
    v8 a, b8;
    memcpy(&a, &v, 32);
    memcpy(&b8, (char *)&v + 32, 32);
    a += b8;
    float s0 = (a[0] + a[4]) + (a[2] + a[6]);
    float s1 = (a[1] + a[5]) + (a[3] + a[7]);
    return s0 + s1;
#else
    float s0 = (v[0] + v[4]) + (v[2] + v[6]);
    float s1 = (v[1] + v[5]) + (v[3] + v[7]);
    return s0 + s1;
#endif
}

/* z[r][c] = b[c] + x[r] . Wt[c] for P rows; K may be a compile-time constant after inlining. */
static inline __attribute__((always_inline)) void forward_rows(const float *x, int d, int K, int P,
                                                               const float *Wt, const float *b, float *z) {
    vf acc[PAIR][KMAX];
    int dv = d - d % VW;
    for (int r = 0; r < P; r++)
#pragma GCC unroll 32
        for (int c = 0; c < K; c++) acc[r][c] = vsplat(0.0f);
    for (int j = 0; j < dv; j += VW) {
        vf xv[PAIR];
        for (int r = 0; r < P; r++) {
            xv[r] = vload(x + (size_t)r * d + j);
            /* x streams from memory: fetch the rows of the block after next while this one computes (a
               prefetch past the end of x is harmless: it never faults) */
            if (VW == 16 || j % 16 == 0) __builtin_prefetch(x + (size_t)(r + PF_ROWS) * d + j, 0, 3);
        }
#pragma GCC unroll 32
        for (int c = 0; c < K; c++) {
            vf w = vload(Wt + (size_t)c * d + j);
            for (int r = 0; r < P; r++) acc[r][c] += xv[r] * w;
        }
    }
    for (int r = 0; r < P; r++)
        for (int c = 0; c < K; c++) {
            float s = hsum(acc[r][c]);
            for (int j = dv; j < d; j++) s += x[(size_t)r * d + j] * Wt[(size_t)c * d + j];
            z[r * KMAX + c] = s + b[c];
        }
}

/* gWt[c] += sum_r g[r][c] x[r] over R rows. */
static inline __attribute__((always_inline)) void backward_rows(const float *x, int d, int K, int R,
                                                                const float *g, float *gWt) {
    int dv = d - d % VW;
#ifdef BWD_JOUTER
    for (int j = 0; j < dv; j += VW) {
        vf xv[RB];
        for (int r = 0; r < R; r++) xv[r] = vload(x + (size_t)r * d + j);
#pragma GCC unroll 32
        for (int c = 0; c < K; c++) {
            vf a = vload(gWt + (size_t)c * d + j);
            for (int r = 0; r < R; r++) a += xv[r] * vsplat(g[r * KMAX + c]);
            vstore(gWt + (size_t)c * d + j, a);
        }
    }
    if (0)
#endif
#if PAIR == 2
    int c = 0;
    for (; c + 2 <= K; c += 2) { /* two classes at a time: each x vector loaded once for both */
        vf g0[RB], g1[RB];
        for (int r = 0; r < R; r++) {
            g0[r] = vsplat(g[r * KMAX + c]);
            g1[r] = vsplat(g[r * KMAX + c + 1]);
        }
        float *gc0 = gWt + (size_t)c * d, *gc1 = gc0 + d;
        for (int j = 0; j < dv; j += VW) {
            vf a0 = vload(gc0 + j), a1 = vload(gc1 + j);
            for (int r = 0; r < R; r++) {
                vf xv = vload(x + (size_t)r * d + j);
                a0 += xv * g0[r];
                a1 += xv * g1[r];
            }
            vstore(gc0 + j, a0);
            vstore(gc1 + j, a1);
        }
    }
    for (; c < K; c++) {
#else
    for (int c = 0; c < K; c++) {
#endif
        vf gs[RB];
        for (int r = 0; r < R; r++) gs[r] = vsplat(g[r * KMAX + c]);
        float *gc = gWt + (size_t)c * d;
        for (int j = 0; j < dv; j += VW) {
            vf a = vload(gc + j);
            for (int r = 0; r < R; r++) a += vload(x + (size_t)r * d + j) * gs[r];
            vstore(gc + j, a);
        }
    }
    for (int c = 0; c < K; c++)
        for (int j = dv; j < d; j++) {
            float a = gWt[(size_t)c * d + j];
            for (int r = 0; r < R; r++) a += g[r * KMAX + c] * x[(size_t)r * d + j];
            gWt[(size_t)c * d + j] = a;
        }
}

/* Rows [r0, r1): accumulate into gWt (zeroed here) and part = {cost sum, gb[0..K)} (doubles). */
static inline __attribute__((always_inline)) void do_part(const float *x, const int64_t *y, int r0, int r1,
                                                          int d, int K, float inv_n, const float *Wt,
                                                          const float *b, float *gWt, double *part) {
    float z[RB * KMAX];
    memset(gWt, 0, sizeof(float) * (size_t)K * d);
    double cost = 0.0, gb[KMAX];
    for (int c = 0; c < K; c++) gb[c] = 0.0;
    for (int r = r0; r < r1; r += RB) {
        int R = r1 - r < RB ? r1 - r : RB;
        const float *xb = x + (size_t)r * d;
        int i = 0;
        for (; i + PAIR <= R; i += PAIR) forward_rows(xb + (size_t)i * d, d, K, PAIR, Wt, b, z + i * KMAX);
        for (; i < R; i++) forward_rows(xb + (size_t)i * d, d, K, 1, Wt, b, z + i * KMAX);
        for (i = 0; i < R; i++) {
            float *zi = z + i * KMAX;
            int yi = (int)y[r + i];
            float m = zi[0];
            for (int c = 1; c < K; c++) m = zi[c] > m ? zi[c] : m;
            float ly = zi[yi] - m; /* shifted logit of the true class */
            float s = 0.0f;
            for (int c = 0; c < K; c++) {
                zi[c] = expf(zi[c] - m);
                s += zi[c];
            }
            cost += (double)(logf(s) - ly); /* NLL of this row */
            for (int c = 0; c < K; c++) {
                float p = zi[c] / s;
                if (c == yi) p -= 1.0f;
                zi[c] = p * inv_n;
                gb[c] += zi[c];
            }
        }
        backward_rows(xb, d, K, R, z, gWt);
    }
    part[0] = cost;
    for (int c = 0; c < K; c++) part[1 + c] = gb[c];
}

static void part_dispatch(const float *x, const int64_t *y, int r0, int r1, int d, int k, float inv_n,
                          const float *Wt, const float *b, float *gWt, double *part) {
    if (k == 10)
        do_part(x, y, r0, r1, d, 10, inv_n, Wt, b, gWt, part);
    else
        do_part(x, y, r0, r1, d, k, inv_n, Wt, b, gWt, part);
}

/* A tiny pool of persistent worker threads. A step is cut into a fixed number of parts (2T for T threads,
   each with its own partial gradient); the caller and the workers claim parts one at a time, and the caller
   sums the partials in part order. Who computes a part does not change the result, and the caller never
   waits for a worker that has not started: on a busy machine (another process on the other core) it simply
   does the remaining parts itself. It does wait for a part a worker has claimed (the worker reads the
   caller's x, which may be freed after the return), so a worker preempted mid-part still costs a time slice;
   workers spin only briefly and then sleep, which made that rarer under load than a long spin. */

#define MAXW 63
#ifndef SPIN
#define SPIN 1000 /* pause iterations (~20-60 us) before sleeping: a long spin made things worse on a busy machine */
#endif
typedef struct {
    const float *x;
    const int64_t *y;
    int n, d, k, nparts;
    float inv_n;
    const float *Wt, *b;
    float *gpart;
    double *part;
} job_t;

static pthread_mutex_t step_mu = PTHREAD_MUTEX_INITIALIZER; /* one multi-threaded step at a time */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static job_t job;
static int job_next, job_gen, n_sleeping, n_workers;
static atomic_int job_done, job_gen_pub;
static int atfork_set;

static void run_part(const job_t *jb, int t) {
    size_t kd = (size_t)jb->k * jb->d;
    part_dispatch(jb->x, jb->y, (int)((int64_t)t * jb->n / jb->nparts), (int)((int64_t)(t + 1) * jb->n / jb->nparts),
                  jb->d, jb->k, jb->inv_n, jb->Wt, jb->b, jb->gpart + (size_t)t * kd,
                  jb->part + (size_t)t * (jb->k + 1));
}

/* Claim parts of the current job (gen) until none is left; under no lock while computing. */
static void work(int gen) {
    for (;;) {
        pthread_mutex_lock(&mu);
        if (job_gen != gen || job_next >= job.nparts) {
            pthread_mutex_unlock(&mu);
            return;
        }
        int t = job_next++;
        job_t jb = job;
        pthread_mutex_unlock(&mu);
        run_part(&jb, t);
        atomic_fetch_add_explicit(&job_done, 1, memory_order_release);
    }
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker(void *arg) {
    (void)arg;
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
        work(seen);
    }
    return NULL;
}

static void after_fork_child(void) { /* the workers do not exist in a forked child */
    pthread_mutex_init(&step_mu, NULL);
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
        int rc = pthread_create(&th, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* fewer workers: the caller does more parts, same result */
        n_workers++;
    }
}

/* Number of parts a step is cut into for T threads (the result depends on this, hence on T only). */
int logistic_nparts(int T) { return T <= 1 ? 1 : 2 * T; }

/* Returns 0, or -1 for a label outside [0, k), -2 for bad sizes. W [d][k] and b [k] are updated in place.
   Wt: scratch [k][d]; gpart: scratch [logistic_nparts(T)][k][d]; part: scratch [logistic_nparts(T)][k + 1]. */
int logistic_step(const float *x, const int64_t *y, int n, int d, int k, float *W, float *b, float *Wt,
                  float *gpart, double *part, int T, double lr_, double L1_, double L2_, double *cost_out) {
    float lr = (float)lr_, L1 = (float)L1_, L2 = (float)(2.0 * L2_); /* as numpy: float32(2 * L2_reg) */
    if (n <= 0 || d <= 0 || k <= 0 || k > KMAX || T <= 0) return -2;
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k) return -1;
    for (int j = 0; j < d; j++)
        for (int c = 0; c < k; c++) Wt[(size_t)c * d + j] = W[(size_t)j * k + c];
    double pen1 = 0.0, pen2 = 0.0;
    if (L1 != 0.0f)
        for (size_t i = 0; i < (size_t)d * k; i++) pen1 += fabs((double)W[i]);
    if (L2 != 0.0f)
        for (size_t i = 0; i < (size_t)d * k; i++) pen2 += (double)W[i] * (double)W[i];
    int P = logistic_nparts(T);
    if (P > n) P = n; /* (never for the callers' sizes; still a fixed function of n and T) */
    job_t jb = {x, y, n, d, k, P, (float)(1.0 / n), Wt, b, gpart, part};
    if (T > 1) {
        pthread_mutex_lock(&step_mu);
        pthread_mutex_lock(&mu);
        ensure_workers(T - 1);
        job = jb;
        job_next = 0;
        atomic_store_explicit(&job_done, 0, memory_order_relaxed);
        int gen = ++job_gen;
        atomic_store_explicit(&job_gen_pub, gen, memory_order_release);
        if (n_sleeping) pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        work(gen);
        /* only parts a worker has claimed and is computing remain */
        while (atomic_load_explicit(&job_done, memory_order_acquire) < P) cpu_relax();
        pthread_mutex_unlock(&step_mu);
    } else {
        for (int t = 0; t < P; t++) run_part(&jb, t);
    }
    size_t kd = (size_t)k * d;
    /* sum the partials in part order and update W */
    for (int j = 0; j < d; j++)
        for (int c = 0; c < k; c++) {
            float g = gpart[(size_t)c * d + j];
            for (int t = 1; t < P; t++) g += gpart[(size_t)t * kd + (size_t)c * d + j];
            float w = W[(size_t)j * k + c];
            if (L1 != 0.0f) g += L1 * (w > 0.0f ? 1.0f : w < 0.0f ? -1.0f : w);
            if (L2 != 0.0f) g += L2 * w;
            W[(size_t)j * k + c] = w - lr * g;
        }
    double cost = 0.0;
    for (int c = 0; c < k; c++) {
        double g = 0.0;
        for (int t = 0; t < P; t++) g += part[(size_t)t * (k + 1) + 1 + c];
        b[c] -= lr * (float)g;
    }
    for (int t = 0; t < P; t++) cost += part[(size_t)t * (k + 1)];
    cost /= n;
    if (L1_ != 0.0) cost += L1_ * pen1;
    if (L2_ != 0.0) cost += L2_ * pen2;
    *cost_out = cost;
    return 0;
}
