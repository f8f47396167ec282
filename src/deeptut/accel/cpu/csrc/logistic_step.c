/* Multinomial logistic regression on a CPU (float32, plain C, no Python API): one fused SGD step, and the
   zero-one loss for evaluation.

   Why sparse: MNIST is ~81 % zeros (a digit covers ~150 of 784 pixels), and a zero pixel adds nothing to
   the logits (z = b + sum_j x_j W[j]) nor to the gradient (gW[j] += x_j g). Each row is first compacted to
   its nonzero (j, x_j) pairs, in L1, and then costs ~150 multiply-adds of a 16-lane vector holding all
   classes, W[j][0..16), instead of 784 x 10 scalar ones: ~5x less arithmetic than the dense product and no
   horizontal sums. Skipping a zero changes no value (x_j = 0 adds a signed zero to a sum that is only
   ever read after the bias is added); NaN/Inf in x are kept (they compare unequal to 0).

   The step, for each row: z = b + x W (4 partial sums in a fixed order), softmax, g = (p - onehot) / n,
   gW[j] += x_j g for its nonzero j. Rows are split into P = logistic_nparts(T) fixed parts (part t: rows
   [t n / P, (t+1) n / P)), each with its own partial gradient; the partials are summed in part order, so
   the result depends on T but not on which thread computed which part (see pool.h). Then
   W -= lr (gW [+ L1 sign(W)] [+ 2 L2 W]), b -= lr sum(g). IEEE arithmetic (no -ffast-math).

   Built and loaded by deeptut.ckernels. */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "sparse_rows.h"

#define KMAX 32 /* classes supported: up to KV = 2 vectors of 16 */
#define KVMAX (KMAX / LANES)

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__) && !defined(DEEPTUT_GENERIC_VECTORS)
/* Without AVX-512 GCC keeps 16-lane vectors in memory and moves them through the stack (~20 cycles per
   nonzero on the 2-core Zen CI machine); these are the same operations lane for lane (each `s += v * w`
   of the generic code is contracted to one fused multiply-add, as GCC contracts it), on pairs of 8-lane
   registers, for KV = 1 (up to 16 classes: MNIST's 10). tests/test_ckernel.py compares the two. */
#include <immintrin.h>
#define PAIRED_KV1 1

static inline __attribute__((always_inline)) void forward_row_kv1(const uint16_t *idx, const float *val, int m,
                                                                  const v16 *Wp, const v16 *bp, v16 *z) {
    const float *W = (const float *)Wp;
    __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
    int q = 0;
#define TERM(A, B, Q)                                                                                       \
    do {                                                                                                   \
        const __m256 x_ = _mm256_broadcast_ss(val + (Q));                                                 \
        const float *w_ = W + (size_t)idx[Q] * LANES;                                                       \
        A = _mm256_fmadd_ps(x_, _mm256_load_ps(w_), A);                                                     \
        B = _mm256_fmadd_ps(x_, _mm256_load_ps(w_ + 8), B);                                                 \
    } while (0)
    for (; q + 4 <= m; q += 4) {
        TERM(a0, b0, q);
        TERM(a1, b1, q + 1);
        TERM(a2, b2, q + 2);
        TERM(a3, b3, q + 3);
    }
    if (q < m) TERM(a0, b0, q);
    if (q + 1 < m) TERM(a1, b1, q + 1);
    if (q + 2 < m) TERM(a2, b2, q + 2);
#undef TERM
    const float *bb = (const float *)bp;
    float *zz = (float *)z;
    _mm256_store_ps(zz, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_load_ps(bb)));
    _mm256_store_ps(zz + 8,
                    _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)), _mm256_load_ps(bb + 8)));
}

/* gW[idx[q]] += val[q] z for q < m, as the generic loop (one fused multiply-add per lane). */
static inline __attribute__((always_inline)) void grad_row_kv1(const uint16_t *idx, const float *val, int m,
                                                               const v16 *z, v16 *gWp) {
    const __m256 zl = _mm256_load_ps((const float *)z), zh = _mm256_load_ps((const float *)z + 8);
    float *G = (float *)gWp;
    for (int q = 0; q < m; q++) {
        const __m256 x = _mm256_broadcast_ss(val + q);
        float *g = G + (size_t)idx[q] * LANES;
        _mm256_store_ps(g, _mm256_fmadd_ps(x, zl, _mm256_load_ps(g)));
        _mm256_store_ps(g + 8, _mm256_fmadd_ps(x, zh, _mm256_load_ps(g + 8)));
    }
}
#endif

/* z[0..KV) = b + sum_q val[q] W[idx[q]], W padded to KV vectors per input; fixed order: four running
   sums over q mod 4, then ((s0 + s1) + (s2 + s3)) + b. */
static inline __attribute__((always_inline)) void forward_row(const uint16_t *idx, const float *val, int m,
                                                              int KV, const v16 *Wp, const v16 *bp, v16 *z) {
#ifdef PAIRED_KV1
    if (KV == 1) {
        forward_row_kv1(idx, val, m, Wp, bp, z);
        return;
    }
#endif
    for (int v = 0; v < KV; v++) {
        v16 s0 = vsplat(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int q = 0;
        for (; q + 4 <= m; q += 4) {
            s0 += vsplat(val[q]) * Wp[(size_t)idx[q] * KV + v];
            s1 += vsplat(val[q + 1]) * Wp[(size_t)idx[q + 1] * KV + v];
            s2 += vsplat(val[q + 2]) * Wp[(size_t)idx[q + 2] * KV + v];
            s3 += vsplat(val[q + 3]) * Wp[(size_t)idx[q + 3] * KV + v];
        }
        if (q < m) s0 += vsplat(val[q]) * Wp[(size_t)idx[q] * KV + v];
        if (q + 1 < m) s1 += vsplat(val[q + 1]) * Wp[(size_t)idx[q + 1] * KV + v];
        if (q + 2 < m) s2 += vsplat(val[q + 2]) * Wp[(size_t)idx[q + 2] * KV + v];
        z[v] = ((s0 + s1) + (s2 + s3)) + bp[v];
    }
}

/* The logits of row r (rows up to `last` in this part) into zv; its nonzeros in *idx / *val; returns their
   number. */
static inline __attribute__((always_inline)) int logits_row(const rows_t *rs, int r, int last, int KV,
                                                            const v16 *Wp, const v16 *bp, v16 *zv,
                                                            const uint16_t **idx, const float **val,
                                                            uint16_t *idx_s, float *val_s) {
    int m = get_row(rs, r, last, idx, val, idx_s, val_s);
    forward_row(*idx, *val, m, KV, Wp, bp, zv);
    return m;
}

/* Rows [r0, r1) of the step: accumulate into gWp (zeroed here) and part = {cost sum, gb[0..K)} (doubles). */
static inline __attribute__((always_inline)) void step_part(const rows_t *rs, const int64_t *y, int r0, int r1,
                                                            int d, int K, int KV, float inv_n, const v16 *Wp,
                                                            const v16 *bp, v16 *gWp, double *part,
                                                            uint16_t *idx_s, float *val_s) {
    memset(gWp, 0, sizeof(v16) * (size_t)KV * d);
    double cost = 0.0, gb[KMAX];
    for (int c = 0; c < K; c++) gb[c] = 0.0;
    for (int r = r0; r < r1; r++) {
        const uint16_t *idx;
        const float *val;
        v16 zv[KVMAX];
        int m = logits_row(rs, r, r1, KV, Wp, bp, zv, &idx, &val, idx_s, val_s);
        cost += softmax_nll_grad((float *)zv, K, KV * LANES, (int)y[r], inv_n, gb); /* padding stays zero in gWp */
#ifdef PAIRED_KV1
        if (KV == 1) {
            grad_row_kv1(idx, val, m, zv, gWp);
            continue;
        }
#endif
        for (int v = 0; v < KV; v++)
            for (int q = 0; q < m; q++) gWp[(size_t)idx[q] * KV + v] += vsplat(val[q]) * zv[v];
    }
    part[0] = cost;
    for (int c = 0; c < K; c++) part[1 + c] = gb[c];
}

/* Rows [r0, r1) of an evaluation: wrong[r] = argmax(z) != y[r] (numpy's argmax: the first maximum, or the
   first NaN). */
static inline __attribute__((always_inline)) void errors_part(const rows_t *rs, const int64_t *y, int r0,
                                                              int r1, int K, int KV, const v16 *Wp,
                                                              const v16 *bp, uint8_t *wrong, uint16_t *idx_s,
                                                              float *val_s) {
    for (int r = r0; r < r1; r++) {
        const uint16_t *idx;
        const float *val;
        v16 zv[KVMAX];
        logits_row(rs, r, r1, KV, Wp, bp, zv, &idx, &val, idx_s, val_s);
        const float *z = (const float *)zv;
        int pred = 0;
        float best = z[0];
        if (!isnan(best))
            for (int c = 1; c < K; c++) {
                if (isnan(z[c])) {
                    pred = c;
                    break;
                }
                if (z[c] > best) {
                    best = z[c];
                    pred = c;
                }
            }
        wrong[r] = pred != y[r];
    }
}

/* A job: a step (wrong == NULL) or an evaluation, cut into nparts fixed parts of rows. */
typedef struct {
    rows_t rows;
    const int64_t *y;
    int n, d, k, kv, nparts;
    float inv_n;
    const v16 *Wp, *bp;
    v16 *gpart;     /* step: [nparts][d][kv] partial gradients */
    double *part;   /* step: [nparts][k + 1] */
    uint8_t *wrong; /* evaluation: [n] */
} job_t;

static void run_part(const job_t *jb, int t) {
    /* per-thread row scratch, in L1 (d + LANES entries each) */
    static __thread uint16_t *idx;
    static __thread float *val;
    static __thread int cap;
    if (!jb->rows.pk_ptr && cap < jb->d + LANES) {
        free(idx);
        free(val);
        cap = jb->d + LANES;
        idx = malloc(sizeof(uint16_t) * (size_t)cap);
        val = malloc(sizeof(float) * (size_t)cap);
        if (!idx || !val) abort(); /* a few KB */
    }
    int r0 = (int)((int64_t)t * jb->n / jb->nparts), r1 = (int)((int64_t)(t + 1) * jb->n / jb->nparts);
    if (jb->wrong) {
        if (jb->k == 10)
            errors_part(&jb->rows, jb->y, r0, r1, 10, 1, jb->Wp, jb->bp, jb->wrong, idx, val);
        else
            errors_part(&jb->rows, jb->y, r0, r1, jb->k, jb->kv, jb->Wp, jb->bp, jb->wrong, idx, val);
        return;
    }
    v16 *g = jb->gpart + (size_t)t * jb->kv * jb->d;
    double *p = jb->part + (size_t)t * (jb->k + 1);
    if (jb->k == 10)
        step_part(&jb->rows, jb->y, r0, r1, jb->d, 10, 1, jb->inv_n, jb->Wp, jb->bp, g, p, idx, val);
    else
        step_part(&jb->rows, jb->y, r0, r1, jb->d, jb->k, jb->kv, jb->inv_n, jb->Wp, jb->bp, g, p, idx, val);
}

static void part_of_job(const void *ctx, int t) { run_part((const job_t *)ctx, t); }

/* W [d][k] -> Wp [d][KV] vectors (zero padding lanes), b -> bp [KV]. */
static void pad_params(const float *W, const float *b, int d, int k, int KV, v16 *Wp, v16 *bp) {
    for (int j = 0; j < d; j++)
        for (int v = 0; v < KV; v++) {
            v16 w = vsplat(0.0f);
            for (int c = v * LANES; c < k && c < (v + 1) * LANES; c++) w[c - v * LANES] = W[(size_t)j * k + c];
            Wp[(size_t)j * KV + v] = w;
        }
    for (int v = 0; v < KV; v++) {
        v16 w = vsplat(0.0f);
        for (int c = v * LANES; c < k && c < (v + 1) * LANES; c++) w[c - v * LANES] = b[c];
        bp[v] = w;
    }
}

static int check_sizes(int n, int d, int k, int T) {
    return n > 0 && d > 0 && d <= DMAX && k > 0 && k <= KMAX && T > 0;
}

/* Packing: the nonzero (j, x_j) of every row of x [n][d], once, for data that is stepped over many times
   (the tutorial's unshuffled training split, the validation and test splits): ~6 bytes per nonzero
   instead of 4 d bytes per row, and no scan. The packed rows give exactly the scanned ones.
   logistic_pack_count: ptr[0..n] = offsets (ptr[0] = 0); returns 0, or -2 for bad sizes.
   logistic_pack_fill: idx/val get ptr[n] + LANES entries (the last LANES are slack). */
int logistic_pack_count(const float *x, int64_t n, int d, int64_t *ptr) {
    if (n <= 0 || d <= 0 || d > DMAX) return -2;
    ptr[0] = 0;
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        int m = 0;
        for (int j = 0; j < d; j++) m += xr[j] != 0.0f;
        ptr[r + 1] = ptr[r] + m;
    }
    return 0;
}

int logistic_pack_fill(const float *x, int64_t n, int d, const int64_t *ptr, uint16_t *idx, float *val) {
    if (n <= 0 || d <= 0 || d > DMAX) return -2;
    for (int64_t r = 0; r < n; r++) {
        int m = row_nonzeros(x + (size_t)r * d, d, idx + ptr[r], val + ptr[r]);
        if (m != ptr[r + 1] - ptr[r]) return -4; /* x changed between count and fill */
    }
    return 0;
}

/* Number of parts a step is cut into for T threads (the result depends on this, hence on T only). */
int logistic_nparts(int T) { return T <= 1 ? 1 : 2 * T; }

/* Bytes of scratch logistic_step needs (64-byte aligned by the caller). */
size_t logistic_scratch_bytes(int d, int k, int T) {
    int KV = (k + LANES - 1) / LANES;
    return sizeof(v16) * ((size_t)KV * d * (1 + (size_t)logistic_nparts(T)) + KV) +
           sizeof(double) * (size_t)logistic_nparts(T) * (k + 1);
}

/* Returns 0, or -1 for a label outside [0, k), -2 for bad sizes, -3 for misaligned scratch. W [d][k] and
   b [k] are updated in place. scratch: logistic_scratch_bytes(d, k, T) bytes, 64-byte aligned. pk_ptr,
   pk_idx, pk_val: NULL, or x packed by logistic_pack_* with x's row 0 at packed row pk_row0. */
int logistic_step(const float *x, const int64_t *y, int n, int d, int k, float *W, float *b, void *scratch,
                  int T, double lr_, double L1_, double L2_, double *cost_out, const int64_t *pk_ptr,
                  const uint16_t *pk_idx, const float *pk_val, int64_t pk_row0) {
    float lr = (float)lr_, L1 = (float)L1_, L2 = (float)(2.0 * L2_); /* as numpy: float32(2 * L2_reg) */
    if (!check_sizes(n, d, k, T)) return -2;
    if ((uintptr_t)scratch % 64) return -3;
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k) return -1;
    int KV = (k + LANES - 1) / LANES, P = logistic_nparts(T);
    if (P > n) P = n; /* (never for the callers' sizes; still a fixed function of n and T) */
    v16 *Wp = scratch, *bp = Wp + (size_t)KV * d, *gpart = bp + KV;
    double *part = (double *)(gpart + (size_t)logistic_nparts(T) * KV * d);
    pad_params(W, b, d, k, KV, Wp, bp);
    double pen1 = 0.0, pen2 = 0.0;
    if (L1 != 0.0f)
        for (size_t i = 0; i < (size_t)d * k; i++) pen1 += fabs((double)W[i]);
    if (L2 != 0.0f)
        for (size_t i = 0; i < (size_t)d * k; i++) pen2 += (double)W[i] * (double)W[i];
    job_t jb = {{x, d, pk_ptr, pk_idx, pk_val, pk_row0}, y, n, d, k, KV, P, (float)(1.0 / n), Wp, bp, gpart,
                part, NULL};
    run_parts(part_of_job, &jb, jb.nparts, T);
    /* sum the partials in part order and update W */
    size_t pd = (size_t)KV * d;
    for (int j = 0; j < d; j++)
        for (int c = 0; c < k; c++) {
            const float *g0 = (const float *)(gpart + (size_t)j * KV) + c;
            float g = g0[0];
            for (int t = 1; t < P; t++) g += g0[(size_t)t * pd * LANES];
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

/* wrong[r] = (argmax of x[r] W + b) != y[r] for r < n; rows spread over T threads (the result does not
   depend on T). Returns 0, or -2 for bad sizes, -3 for misaligned scratch. scratch:
   logistic_scratch_bytes(d, k, 1) bytes, 64-byte aligned. pk_*: as for logistic_step. */
int logistic_errors(const float *x, const int64_t *y, int n, int d, int k, const float *W, const float *b,
                    void *scratch, int T, uint8_t *wrong, const int64_t *pk_ptr, const uint16_t *pk_idx,
                    const float *pk_val, int64_t pk_row0) {
    if (!check_sizes(n, d, k, T)) return -2;
    if ((uintptr_t)scratch % 64) return -3;
    int KV = (k + LANES - 1) / LANES;
    v16 *Wp = scratch, *bp = Wp + (size_t)KV * d;
    pad_params(W, b, d, k, KV, Wp, bp);
    int P = T <= 1 ? 1 : 8 * T; /* small parts: a preempted thread leaves little for the others to wait on */
    if (P > n) P = n;
    job_t jb = {{x, d, pk_ptr, pk_idx, pk_val, pk_row0}, y, n, d, k, KV, P, 0.0f, Wp, bp, NULL, NULL, wrong};
    run_parts(part_of_job, &jb, jb.nparts, T);
    return 0;
}
