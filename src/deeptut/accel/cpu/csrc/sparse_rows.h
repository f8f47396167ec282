/* Rows of a float32 matrix compacted to their nonzero entries, and the softmax / NLL gradient of one row:
   shared by the sparse CPU kernels (logistic_step.c, mlp_step.c). A row of MNIST has ~150 nonzero pixels
   of 784.

   row_nonzeros() scans a row (AVX-512: compress 16 lanes at a time; elsewhere: skip blocks of 8 zeros);
   get_row() gives a row from a packed copy (logistic_pack_*, made once per split) or scans it into
   scratch. Packed and scanned rows are the same numbers in the same order. */

#ifndef DEEPTUT_SPARSE_ROWS_H
#define DEEPTUT_SPARSE_ROWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define LANES 16
#define DMAX 65535           /* inputs indexed by uint16 (MNIST: 784) */

typedef float v16 __attribute__((vector_size(LANES * 4)));

static inline v16 vsplat(float s) { /* written out: a lane-by-lane loop compiled to 16 masked inserts */
    return (v16){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
}

/* The nonzero entries of row x [d]: idx/val get them in increasing j; returns their number. idx and val
   hold m + LANES entries (the vector path stores whole vectors). */
static inline int row_nonzeros(const float *x, int d, uint16_t *idx, float *val) {
    int m = 0, j = 0;
#if defined(__AVX512F__)
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(LANES);
    for (; j + LANES <= d; j += LANES) {
        __m512 v = _mm512_loadu_ps(x + j);
        __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        /* compress into a register, then a full store (a compressing store to memory is microcoded on
           some cores); the next store overwrites the unused tail */
        _mm512_storeu_ps(val + m, _mm512_maskz_compress_ps(nz, v));
        _mm256_storeu_si256((void *)(idx + m), _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(nz, iota)));
        m += __builtin_popcount((unsigned)nz);
        iota = _mm512_add_epi32(iota, step);
    }
#else
    for (; j + 8 <= d; j += 8) { /* elsewhere: skip blocks of 8 zeros (an image's margins), scan the rest */
        int any = 0;
        for (int t = 0; t < 8; t++) any |= x[j + t] != 0.0f;
        if (!any) continue;
        for (int t = 0; t < 8; t++) {
            idx[m] = (uint16_t)(j + t);
            val[m] = x[j + t];
            m += x[j + t] != 0.0f;
        }
    }
#endif
    for (; j < d; j++) { /* branch-free: the pixel is written, kept only if nonzero */
        idx[m] = (uint16_t)j;
        val[m] = x[j];
        m += x[j] != 0.0f;
    }
    return m;
}

/* Rows, compacted: from a packed copy (logistic_pack) when there is one, else scanned into scratch. */
typedef struct {
    const float *x; /* [n][d] */
    int d;
    const int64_t *pk_ptr; /* packed: row r of x is pk_idx/pk_val [pk_ptr[pk_row0 + r], pk_ptr[pk_row0 + r + 1]) */
    const uint16_t *pk_idx;
    const float *pk_val;
    int64_t pk_row0;
} rows_t;

static inline int get_row(const rows_t *rs, int r, int last, const uint16_t **ix, const float **vx,
                          uint16_t *idx, float *val) {
    if (rs->pk_ptr) {
        int64_t a = rs->pk_ptr[rs->pk_row0 + r], e = rs->pk_ptr[rs->pk_row0 + r + 1];
        *ix = rs->pk_idx + a;
        *vx = rs->pk_val + a;
        return (int)(e - a);
    }
    const float *xr = rs->x + (size_t)r * rs->d;
    if (r + 1 < last) /* the next row streams from memory while this one computes */
        for (int j = 0; j < rs->d; j += 16) __builtin_prefetch(xr + rs->d + j, 0, 3);
    *ix = idx;
    *vx = val;
    return row_nonzeros(xr, rs->d, idx, val);
}

/* z[0..K): one row's logits in, d (mean NLL) / d logits out, (softmax - onehot(y)) * inv_n, computed from
   the shifted logits (exp cannot overflow); z[K..npad) are zeroed (padding lanes). The gradient is added
   to gb[0..K); returns the row's NLL. */
static inline double softmax_nll_grad(float *z, int K, int npad, int y, float inv_n, double *gb) {
    float mx = z[0];
    for (int c = 1; c < K; c++) mx = z[c] > mx ? z[c] : mx;
    float ly = z[y] - mx, s = 0.0f; /* shifted logit of the true class */
    for (int c = 0; c < K; c++) {
        z[c] = expf(z[c] - mx);
        s += z[c];
    }
    for (int c = 0; c < K; c++) {
        float p = z[c] / s;
        if (c == y) p -= 1.0f;
        z[c] = p * inv_n;
        gb[c] += z[c];
    }
    for (int c = K; c < npad; c++) z[c] = 0.0f;
    return (double)(logf(s) - ly);
}

#endif
