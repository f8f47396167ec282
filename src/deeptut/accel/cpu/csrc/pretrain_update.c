/* The dA's SGD update of W in one pass, with the rounding of torch's separate passes (accel/cpu/pretrain.py).

   torch computes, for W [n_visible, n_hidden] (row-major), in float32:
       gW  = enc + dec          enc = x~.T dy, dec = dz.T y   (two matrix products, then add_)
       t   = gW * (float)lr     (torch.mul by a Python float: the scalar in float32)
       W   = W - t              (sub_)
   Each line is one rounding; without contraction into fused multiply-adds the loops below round the same
   way, so W comes out bit-identical while W-sized arrays are read and written once instead of five times.

   da_rank1_sgd: a minibatch of one row (SdA.py's batch 1): enc[i][j] = x~_i dy_j and dec[i][j] = dz_i y_j
   are single products (a product of inner dimension 1 is its one rounded product), so nothing W-sized is
   built at all.
   da_sum2_sgd: any minibatch: enc and dec from the BLAS products, then the add, multiply and subtract fused.

   fp-contract=off: GCC would otherwise turn a * b + c into one fused multiply-add (one rounding, not two). */
#pragma GCC optimize("fp-contract=off")

#include <stddef.h>

void da_rank1_sgd(float *restrict W, const float *restrict x, const float *restrict dy,
                  const float *restrict dz, const float *restrict y, int n_visible, int n_hidden, float lr)
{
    for (int i = 0; i < n_visible; i++) {
        float *restrict w = W + (size_t)i * n_hidden;
        const float xi = x[i], dzi = dz[i];
        for (int j = 0; j < n_hidden; j++) {
            const float enc = xi * dy[j];
            const float dec = dzi * y[j];
            const float g = enc + dec;
            const float t = g * lr;
            w[j] = w[j] - t;
        }
    }
}

void da_sum2_sgd(float *restrict W, const float *restrict enc, const float *restrict dec, long n, float lr)
{
    for (long k = 0; k < n; k++) {
        const float g = enc[k] + dec[k];
        const float t = g * lr;
        W[k] = W[k] - t;
    }
}
