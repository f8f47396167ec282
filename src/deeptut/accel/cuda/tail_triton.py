"""The dense tail of a training step as one Triton kernel (CUDA; CPU under Triton's interpreter for the tests):
a hidden layer's activation, the logistic-regression layer on top, the mean negative log-likelihood and its
gradient back to the hidden layer's pre-activation.

Given pre = x W_h + b_h [n, H] (one cuBLAS product before this), each program takes a block of rows and
computes

    h = act(pre)                         [rows, H]    stored: the output layer's weight gradient needs it
    z = h W_o + b_o, log p = log_softmax(z)   [rows, C]
    nll = -log p[y]                      [rows]       stored; the cost is their mean (torch sums them)
    dz = (softmax(z) - onehot(y)) / n    [rows, C]    stored: d cost / d z
    dpre = (dz W_o^T) * act'(h)          [rows, H]    stored: d cost / d pre

which autograd runs as ~9 kernels (activation, product, log-softmax, NLL, the one-hot, their backward, the
product back, the activation's derivative). The LeNet step uses it for its hidden and output layers (800 ->
500 -> 10) together with the Triton conv-pool layers (lenet_manual.py). Same function; float32 sums in
another order. C <= 16 (MNIST: 10 classes) and H <= 4096.
"""

from __future__ import annotations

import torch

from deeptut.accel.cuda.lenet_triton import ACTS, _best, triton

if triton is not None:
    import triton.language as tl

    from deeptut.accel.cuda.lenet_triton import _act, _act_grad

    @triton.jit
    def _tail_kernel(pre_ptr, w_ptr, b_ptr, y_ptr, h_ptr, dz_ptr, dpre_ptr, nll_ptr, n, inv_n,
                     H: tl.constexpr, C: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = r < n
        c = tl.arange(0, BLOCK_C)
        cmask = c < C
        z = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
        for k0 in range(0, H, BLOCK_H):  # z = act(pre) W_o, storing act(pre) on the way
            k = k0 + tl.arange(0, BLOCK_H)
            kmask = k < H
            m = rmask[:, None] & kmask[None, :]
            h = _act(tl.load(pre_ptr + r[:, None] * H + k[None, :], mask=m, other=0.0), ACT)
            h = tl.where(m, h, 0.0)  # act(0) need not be 0 (sigmoid): padding must not add to z
            tl.store(h_ptr + r[:, None] * H + k[None, :], h, mask=m)
            w = tl.load(w_ptr + k[:, None] * C + c[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0)
            z += tl.dot(h, w, input_precision=PREC)  # [BLOCK_R, BLOCK_C]
        z += tl.load(b_ptr + c, mask=cmask, other=0.0)[None, :]
        z = tl.where(cmask[None, :], z, float("-inf"))
        zmax = tl.max(z, axis=1)
        e = tl.exp(z - zmax[:, None])  # 0 in the padding
        s = tl.sum(e, axis=1)
        label = tl.load(y_ptr + r, mask=rmask, other=0).to(tl.int32)
        hit = c[None, :] == label[:, None]
        logp_y = tl.sum(tl.where(hit, z, 0.0), axis=1) - zmax - tl.log(s)
        tl.store(nll_ptr + r, -logp_y, mask=rmask)
        dz = (e / s[:, None] - tl.where(hit, 1.0, 0.0)) * inv_n
        dz = tl.where(rmask[:, None] & cmask[None, :], dz, 0.0)
        tl.store(dz_ptr + r[:, None] * C + c[None, :], dz, mask=rmask[:, None] & cmask[None, :])
        for k0 in range(0, H, BLOCK_H):  # dpre = (dz W_o^T) * act'(h), h recomputed from pre
            k = k0 + tl.arange(0, BLOCK_H)
            kmask = k < H
            m = rmask[:, None] & kmask[None, :]
            wt = tl.load(w_ptr + k[None, :] * C + c[:, None], mask=cmask[:, None] & kmask[None, :], other=0.0)
            dh = tl.dot(dz, wt, input_precision=PREC)  # [BLOCK_R, BLOCK_H]
            h = _act(tl.load(pre_ptr + r[:, None] * H + k[None, :], mask=m, other=0.0), ACT)
            tl.store(dpre_ptr + r[:, None] * H + k[None, :], _act_grad(dh, h, ACT), mask=m)


# (BLOCK_R, BLOCK_H, num_warps), best guess first; all compile for sm_90 in ~70-115 registers without
# spilling (bench/triton_aot.py, Triton 3.6 and 3.9)
CONFIGS = [(16, 64, 4), (32, 64, 8), (16, 32, 4)]


def supports(hidden: int, classes: int) -> bool:
    return classes <= 16 and hidden <= 4096


def dense_tail(pre: torch.Tensor, W: torch.Tensor, b: torch.Tensor, y: torch.Tensor, activation: str = "tanh",
               precision: str = "ieee") -> tuple[torch.Tensor, ...]:
    """pre [n, H] (the hidden layer's pre-activation), W [H, C], b [C], y [n] ->
    (h [n, H], dz [n, C], dpre [n, H], nll [n]): see the module's docstring. float32, contiguous."""
    n, H = pre.shape
    C = W.shape[1]
    pre, W = pre.contiguous(), W.contiguous()
    h = torch.empty_like(pre)
    dpre = torch.empty_like(pre)
    dz = torch.empty(n, C, device=pre.device, dtype=torch.float32)
    nll = torch.empty(n, device=pre.device, dtype=torch.float32)

    def launch(cfg: tuple[int, int, int]) -> None:
        block_r, block_h, warps = cfg
        _tail_kernel[(triton.cdiv(n, block_r),)](
            pre, W, b, y, h, dz, dpre, nll, n, 1.0 / n, H=H, C=C, ACT=ACTS[activation], PREC=precision,
            BLOCK_R=block_r, BLOCK_H=block_h, BLOCK_C=16, num_warps=warps)

    launch(_best(("tail", n, H, C, activation, precision), CONFIGS, launch, pre.device))
    return h, dz, dpre, nll
