/* The tutorials' MLP (n_in - n_hidden tanh - n_out softmax) on a CPU: one plain-SGD step on the nonzero
   pixels of the minibatch (float32, plain C, no Python API; T threads, each owning a block of pixels).

   Why: at the tutorial's minibatch of 20 the step is two products with the 784 x 500 hidden weights, and
   MNIST is ~81 % zeros. A zero pixel adds nothing to the hidden pre-activations (a = b1 + sum_j x_j W1[j])
   nor to the gradient (gW1[j] = sum_r x_rj ga[r]), so each row is compacted to its nonzero (j, x_j)
   (sparse_rows.h) and the two products touch only those rows of W1: ~5x less arithmetic.

   Two calls per step, with the activation in between done by the caller (torch.tanh, so the hidden units
   are computed exactly as autograd's forward computes them):
     mlp_forward:  a[r] = b1 + sum_q x_rq W1[j_q] (q in increasing j), for each row r
     (caller)      h = tanh(a), in place
     mlp_backward: z = b2 + h W2, softmax, gz = (p - onehot) / n; gh = gz W2^T; ga = gh (1 - h^2);
                   W2 -= lr (h^T gz [+ L1 sign W2] [+ 2 L2 W2]), b2 -= lr sum(gz);
                   W1 -= lr (x^T ga [+ L1 sign W1] [+ 2 L2 W1]) in one pass over W1 (rows no example
                   touches get the penalty terms only), b1 -= lr sum(ga).
   The cost (NLL + L1 sum|W| + L2 sum W^2, at the parameters before the update) is returned. Sums run in
   orders fixed by the thread count T (each thread's block of pixels, then the blocks in order), so a step
   is deterministic for a given T; they are not autograd's orders, so results agree with autograd to
   float32 rounding, not bit for bit. IEEE arithmetic (no -ffast-math).

   Built and loaded by deeptut.ckernels; the packed rows come from logistic_step.c's logistic_pack_*. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* a step calls the pool twice, ~100 us apart (the caller's tanh and serial work in between): the worker
   waits spinning that long instead of going to sleep and paying a wake-up each time */
#define SPIN 20000
#include "pool.h"
#include "sparse_rows.h"

#define KMAX LANES /* classes: one vector */
#define MAXP 8     /* parts (threads) at most */

typedef float vfu __attribute__((vector_size(LANES * 4), aligned(4), may_alias));
static inline v16 vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, v16 v) { *(vfu *)p = v; }

/* The scratch, carved out of one 64-byte aligned block (mlp_scratch_bytes). */
typedef struct {
    int Hp;             /* n_hidden rounded up to LANES */
    const uint16_t **ri; /* [n] each row's nonzero pixel indices */
    const float **rv;   /* [n] and values */
    int32_t *rm;        /* [n] and their number */
    uint16_t *idx_s;    /* [n][d + LANES] scanned rows (when not packed) */
    float *val_s;       /* [n][d + LANES] */
    v16 *gz;            /* [n] d cost / d logits (padding lanes zero) */
    float *ga;          /* [n][Hp] d cost / d hidden pre-activation */
    v16 *W2p;           /* [H] rows of W2 (before the update), zero-padded */
    float *W2T;         /* [K][Hp] W2 transposed (before the update) */
    float *gb1;         /* [Hp] */
    float *ap;          /* [P][n][H] the parts' partial pre-activations */
    int32_t *start;     /* [d + 1] entries of pixel j: start[j] .. start[j + 1] */
    int32_t *fill;      /* [d] */
    int32_t *er;        /* [n * d] entry: row */
    float *ev;          /* [n * d] entry: value */
} ws_t;

static size_t carve(char *base, int n, int d, int H, int K, ws_t *w) {
    size_t off = 0;
    int Hp = (H + LANES - 1) / LANES * LANES;
#define TAKE(field, type, count)                                  \
    do {                                                          \
        off = (off + 63) / 64 * 64;                               \
        if (base) w->field = (type *)(void *)(base + off);       \
        off += sizeof(type) * (size_t)(count);                    \
    } while (0)
    TAKE(ri, const uint16_t *, n);
    TAKE(rv, const float *, n);
    TAKE(rm, int32_t, n);
    TAKE(idx_s, uint16_t, (size_t)n * (d + LANES));
    TAKE(val_s, float, (size_t)n * (d + LANES));
    TAKE(gz, v16, n);
    TAKE(ga, float, (size_t)n * Hp);
    TAKE(W2p, v16, H);
    TAKE(W2T, float, (size_t)K * Hp);
    TAKE(gb1, float, Hp);
    TAKE(ap, float, (size_t)MAXP * n * H);
    TAKE(start, int32_t, d + 1);
    TAKE(fill, int32_t, d);
    TAKE(er, int32_t, (size_t)n * d);
    TAKE(ev, float, (size_t)n * d);
#undef TAKE
    if (base) w->Hp = Hp;
    return off;
}

static int sizes_ok(int n, int d, int H, int K) {
    return n > 0 && d > 0 && d <= DMAX && H > 0 && K > 0 && K <= KMAX && (int64_t)n * d < (1LL << 31);
}

/* Parts for T threads: one per thread. */
static int nparts_for(int d, int T) {
    int P = T < MAXP ? T : MAXP;
    return P < d ? P : d;
}

size_t mlp_scratch_bytes(int n, int d, int H, int K) {
    return sizes_ok(n, d, H, K) ? carve(NULL, n, d, H, K, NULL) : 0;
}

#define CHUNK 8 /* hidden units per pass: CHUNK vectors of 16 held in registers */

/* What the parts of a step share. Part t of P owns the pixels [t d / P, (t+1) d / P), i.e. a block of
   whole rows of W1 (784 x 500 floats split in two: 784 KB each, which stays in its core's L2 from step to
   step): it computes those pixels' share of the pre-activations and updates those rows. The shares are
   added in part order, so results depend on P (the thread count), as the logistic step's do. */
typedef struct {
    const ws_t *w;
    int n, d, H, P;
    float *W1;
    float *a; /* [n][H] (P == 1), else the shares go to w->ap */
    float lr, L1, L2;
    int l1; /* L1 penalty on: every weight on the scalar path */
    double pen[MAXP][2]; /* sum |W1|, sum W1^2 per part */
} job_mlp;

static inline int first_at_least(const uint16_t *idx, int m, int j) { /* idx sorted */
    int lo = 0, hi = m;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (idx[mid] < j) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Part t of the forward pass: for each row r, sum over its nonzero pixels j in the part's block, in
   increasing order, of x_rj W1[j]; CHUNK vectors of sums in registers per pass over the row. */
static void forward_part(const void *ctx, int t) {
    const job_mlp *jb = ctx;
    const ws_t *w = jb->w;
    const int H = jb->H, nvec = H / LANES;
    const int j0 = (int)((int64_t)t * jb->d / jb->P), j1 = (int)((int64_t)(t + 1) * jb->d / jb->P);
    float *share = jb->P == 1 ? jb->a : w->ap + (size_t)t * jb->n * H;
    for (int r = 0; r < jb->n; r++) {
        const uint16_t *idx = w->ri[r];
        const float *val = w->rv[r];
        const int q0 = first_at_least(idx, w->rm[r], j0), q1 = first_at_least(idx, w->rm[r], j1);
        float *out = share + (size_t)r * H;
        for (int c0 = 0, nv; c0 < nvec * LANES; c0 += nv * LANES) {
            nv = nvec - c0 / LANES < CHUNK ? nvec - c0 / LANES : CHUNK;
            v16 acc[CHUNK];
            for (int i = 0; i < CHUNK; i++) acc[i] = vsplat(0.0f);
            for (int q = q0; q < q1; q++) {
                const float *wj = jb->W1 + (size_t)idx[q] * H + c0;
                v16 vv = vsplat(val[q]);
#pragma GCC unroll 8
                for (int i = 0; i < CHUNK; i++)
                    if (i < nv) acc[i] += vv * vload(wj + i * LANES);
            }
            for (int i = 0; i < nv; i++) vstore(out + c0 + i * LANES, acc[i]);
        }
        for (int k = nvec * LANES; k < H; k++) {
            float s = 0.0f;
            for (int q = q0; q < q1; q++) s += val[q] * jb->W1[(size_t)idx[q] * H + k];
            out[k] = s;
        }
    }
}

/* a [n][H] = b1 + x W1 over each row's nonzeros, on T threads; the rows and their per-pixel entries are
   kept in scratch for mlp_backward. Returns 0, -2 for bad sizes, -3 for misaligned scratch. pk_*: NULL, or
   x packed with x's row 0 at pk_row0. */
int mlp_forward(const float *x, int n, int d, int H, int K, float *W1, const float *b1, float *a,
                void *scratch, int T, const int64_t *pk_ptr, const uint16_t *pk_idx, const float *pk_val,
                int64_t pk_row0) {
    if (!sizes_ok(n, d, H, K) || T <= 0) return -2;
    if ((uintptr_t)scratch % 64) return -3;
    ws_t w;
    carve(scratch, n, d, H, K, &w);
    rows_t rs = {x, d, pk_ptr, pk_idx, pk_val, pk_row0};
    for (int r = 0; r < n; r++) {
        const uint16_t *idx;
        const float *val;
        int m = get_row(&rs, r, n, &idx, &val, w.idx_s + (size_t)r * (d + LANES),
                        w.val_s + (size_t)r * (d + LANES));
        w.ri[r] = idx;
        w.rv[r] = val;
        w.rm[r] = m;
    }
    /* the entries (row, x value) of each pixel, rows in order */
    memset(w.start, 0, sizeof(int32_t) * (size_t)(d + 1));
    for (int r = 0; r < n; r++)
        for (int q = 0; q < w.rm[r]; q++) w.start[w.ri[r][q] + 1]++;
    for (int j = 0; j < d; j++) w.start[j + 1] += w.start[j];
    memcpy(w.fill, w.start, sizeof(int32_t) * (size_t)d);
    for (int r = 0; r < n; r++)
        for (int q = 0; q < w.rm[r]; q++) {
            int e = w.fill[w.ri[r][q]]++;
            w.er[e] = r;
            w.ev[e] = w.rv[r][q];
        }
    int P = nparts_for(d, T);
    job_mlp jb = {&w, n, d, H, P, W1, a, 0.0f, 0.0f, 0.0f, 0, {{0}}};
    run_parts(forward_part, &jb, P, T);
    for (int r = 0; r < n; r++) { /* a = (share 0 [+ share 1 ...]) + b1 */
        float *ar = a + (size_t)r * H;
        if (P > 1) {
            memcpy(ar, w.ap + (size_t)r * H, sizeof(float) * (size_t)H);
            for (int t = 1; t < P; t++) {
                const float *sh = w.ap + ((size_t)t * n + r) * H;
                for (int k = 0; k < H; k++) ar[k] += sh[k];
            }
        }
        for (int k = 0; k < H; k++) ar[k] += b1[k];
    }
    return 0;
}

static inline float sgnf(float w) { return w > 0.0f ? 1.0f : w < 0.0f ? -1.0f : w; }

/* Part t of the W1 update: for each pixel j of the part's block, g = sum of x_rj ga[r] over the pixel's
   entries (rows in order) [+ L1 sign w] [+ 2 L2 w], w -= lr g; rows no example touches get the penalty
   terms only. Sums of |w| and w^2 (before the update) for the cost. */
static void update_part(const void *ctx, int t) {
    job_mlp *jb = (job_mlp *)ctx;
    const ws_t *w = jb->w;
    const int H = jb->H, Hp = w->Hp, nvec = H / LANES;
    const float lr = jb->lr, L1 = jb->L1, L2 = jb->L2;
    const int j0 = (int)((int64_t)t * jb->d / jb->P), j1 = (int)((int64_t)(t + 1) * jb->d / jb->P);
    double pen1 = 0.0, pen2 = 0.0;
    for (int j = j0; j < j1; j++) {
        float *wj = jb->W1 + (size_t)j * H;
        const int e0 = w->start[j], e1 = w->start[j + 1];
        v16 p2 = vsplat(0.0f);
        int k = 0;
        if (!jb->l1)
            for (int nv; k < nvec * LANES; k += nv * LANES) { /* CHUNK independent sums, not one chain */
                nv = nvec - k / LANES < CHUNK ? nvec - k / LANES : CHUNK;
                v16 g[CHUNK];
                for (int i = 0; i < CHUNK; i++) g[i] = vsplat(0.0f);
                for (int e = e0; e < e1; e++) {
                    v16 vv = vsplat(w->ev[e]);
                    const float *gr = w->ga + (size_t)w->er[e] * Hp + k;
#pragma GCC unroll 8
                    for (int i = 0; i < CHUNK; i++)
                        if (i < nv) g[i] += vv * vload(gr + i * LANES);
                }
                for (int i = 0; i < nv; i++) {
                    v16 wv = vload(wj + k + i * LANES), gi = g[i];
                    p2 += wv * wv;
                    if (L2 != 0.0f) gi += vsplat(L2) * wv;
                    vstore(wj + k + i * LANES, wv - vsplat(lr) * gi);
                }
            }
        for (; k < H; k++) { /* the leftover units, or every weight with L1 */
            float g = 0.0f, wk = wj[k];
            for (int e = e0; e < e1; e++) g += w->ev[e] * w->ga[(size_t)w->er[e] * Hp + k];
            pen1 += fabs((double)wk);
            pen2 += (double)wk * (double)wk;
            if (L1 != 0.0f) g += L1 * sgnf(wk);
            if (L2 != 0.0f) g += L2 * wk;
            wj[k] = wk - lr * g;
        }
        for (int l = 0; l < LANES; l++) pen2 += (double)p2[l]; /* (sum |W| only matters with L1: scalar path) */
    }
    jb->pen[t][0] = pen1;
    jb->pen[t][1] = pen2;
}

/* The rest of the step, after the caller's h = tanh(a) (h [n][H]). Returns 0, -1 for a label outside
   [0, K) (nothing updated), -2 for bad sizes, -3 for misaligned scratch. */
int mlp_backward(const int64_t *y, int n, int d, int H, int K, float *W1, float *b1, float *W2, float *b2,
                 const float *h, void *scratch, int T, double lr_, double L1_, double L2_, double *cost_out) {
    if (!sizes_ok(n, d, H, K) || T <= 0) return -2;
    if ((uintptr_t)scratch % 64) return -3;
    for (int r = 0; r < n; r++)
        if (y[r] < 0 || y[r] >= K) return -1;
    ws_t w;
    carve(scratch, n, d, H, K, &w);
    const int Hp = w.Hp;
    const float lr = (float)lr_, L1 = (float)L1_, L2 = (float)(2.0 * L2_), inv_n = (float)(1.0 / n);
    double pen1 = 0.0, pen2 = 0.0; /* sum |W|, sum W^2 of both weight matrices, before the update */

    /* W2 as padded rows and transposed, before it changes */
    for (int k = 0; k < H; k++) {
        v16 row = vsplat(0.0f);
        for (int c = 0; c < K; c++) row[c] = W2[(size_t)k * K + c];
        w.W2p[k] = row;
    }
    for (int c = 0; c < K; c++)
        for (int k = 0; k < Hp; k++) w.W2T[(size_t)c * Hp + k] = k < H ? W2[(size_t)k * K + c] : 0.0f;
    v16 b2p = vsplat(0.0f);
    for (int c = 0; c < K; c++) b2p[c] = b2[c];

    /* logits, softmax, d cost / d logits */
    double cost = 0.0, gb2[KMAX] = {0};
    for (int r = 0; r < n; r++) {
        const float *hr = h + (size_t)r * H;
        v16 s0 = vsplat(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int k = 0;
        for (; k + 4 <= H; k += 4) {
            s0 += vsplat(hr[k]) * w.W2p[k];
            s1 += vsplat(hr[k + 1]) * w.W2p[k + 1];
            s2 += vsplat(hr[k + 2]) * w.W2p[k + 2];
            s3 += vsplat(hr[k + 3]) * w.W2p[k + 3];
        }
        for (; k < H; k++) s0 += vsplat(hr[k]) * w.W2p[k];
        v16 zv = ((s0 + s1) + (s2 + s3)) + b2p;
        cost += softmax_nll_grad((float *)&zv, K, LANES, (int)y[r], inv_n, gb2);
        w.gz[r] = zv;
    }

    /* d cost / d hidden pre-activation: ga = (gz W2^T) (1 - h^2); gb1 = sum over rows */
    memset(w.gb1, 0, sizeof(float) * (size_t)Hp);
    for (int r = 0; r < n; r++) {
        float *ga = w.ga + (size_t)r * Hp;
        const float *gz = (const float *)&w.gz[r];
        memset(ga, 0, sizeof(float) * (size_t)Hp);
        for (int c = 0; c < K; c++) {
            v16 g = vsplat(gz[c]);
            const float *wt = w.W2T + (size_t)c * Hp;
            for (int k = 0; k < Hp; k += LANES) vstore(ga + k, vload(ga + k) + g * vload(wt + k));
        }
        const float *hr = h + (size_t)r * H;
        for (int k = 0; k < H; k++) {
            ga[k] = ga[k] * (1.0f - hr[k] * hr[k]);
            w.gb1[k] += ga[k];
        }
    }

    /* W2: gradient h^T gz (rows in order), penalties, update */
    for (int k = 0; k < H; k++) {
        v16 g = vsplat(0.0f);
        for (int r = 0; r < n; r++) g += vsplat(h[(size_t)r * H + k]) * w.gz[r];
        for (int c = 0; c < K; c++) {
            float wk = w.W2p[k][c], gk = g[c];
            pen1 += fabs((double)wk);
            pen2 += (double)wk * (double)wk;
            if (L1 != 0.0f) gk += L1 * sgnf(wk);
            if (L2 != 0.0f) gk += L2 * wk;
            W2[(size_t)k * K + c] = wk - lr * gk;
        }
    }

    /* W1: gradient x^T ga, penalties and update, in one pass, on T threads */
    int P = nparts_for(d, T);
    job_mlp jb = {&w, n, d, H, P, W1, NULL, lr, L1, L2, L1_ != 0.0, {{0}}};
    run_parts(update_part, &jb, P, T);
    for (int t = 0; t < P; t++) {
        pen1 += jb.pen[t][0];
        pen2 += jb.pen[t][1];
    }
    for (int k = 0; k < H; k++) b1[k] -= lr * w.gb1[k];
    for (int c = 0; c < K; c++) b2[c] -= lr * (float)gb2[c];
    cost /= n;
    if (L1_ != 0.0) cost += L1_ * pen1;
    if (L2_ != 0.0) cost += L2_ * pen2;
    *cost_out = cost;
    return 0;
}
