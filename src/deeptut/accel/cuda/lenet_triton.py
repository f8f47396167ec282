"""LeNet's conv-pool layer, act(maxpool2x2(conv_valid(x, W)) + b), as fused Triton kernels (CUDA).

cuDNN runs one LeNetConvPoolLayer as ~8 kernels per training step: the convolution, the pooling, the bias
add and the activation forward; the activation's derivative, the pooling's backward (a scatter), the bias
sum and the convolution's weight and data gradients backward. For these few-channel 5x5 layers most of
them are memory-bound or badly occupied (a profile of the tutorial LeNet at batch 500 on an H200:
~0.75 ms per step, the pooling backward alone 2 x 41 us). Here:

* `conv_pool_forward`: each program takes a block of pooled outputs (rows = (image, pooled position)) and
  computes, for each of the 2x2 window's four positions s, the implicit-GEMM product [rows, K] x [K, OC]
  of the input patches (gathered from x; K = IC * 5 * 5) with W; keeps the maximum (the first maximum
  wins, as in max_pool2d), adds b and applies the activation. It stores y and the window position of the
  maximum (one byte). The convolution's output is never written to memory.
* `weight_grad`: dW and db from gy (the gradient w.r.t. y), y, the positions and x. The pooled
  gradient is g = gy * act'(y); the convolution's gradient is g at the maximum's position and 0 at the
  other three, so dW = sum over s of (g where the maximum is at s)^T [rows, OC]^T x (the patches at s)
  [rows, K]. Each program sums one slice of the rows into its own partial sums; torch adds the partials
  (a fixed order: deterministic, unlike atomics).
* `data_grad` (layer 1 only; layer 0's input needs none): the dense gradient of the convolution's output
  (one kernel), then the input's gradient from it by cuDNN or by a product and a col2im gather kernel,
  whichever is faster.

Arithmetic: float32 throughout. `precision` is Triton's dot `input_precision`: "ieee" (IEEE float32 fused
multiply-adds, the tutorials' arithmetic; the default) or "tf32" (tensor cores, for the fast presets that
set `tf32 = true`). Summation order differs from cuDNN's, so results agree to float32 rounding, not bits.
The activation is computed from exp (tanh(z) = sign(z) (1 - e) / (1 + e), e = exp(-2|z|)): within a few
units in the last place of torch.tanh.

The kernels need CUDA, or Triton's interpreter on CPU (`TRITON_INTERPRET=1` set before this module is
imported; the tests do this). `available(device)` says whether they can run; callers fall back to cuDNN.
Block sizes are chosen per shape by timing a few configurations once on CUDA (`_best`, each as replays of
a small captured graph: capture.replay_ms), outside the run's own graph captures (the graph step warms up
before it captures).
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:  # Triton ships with CUDA builds of torch; CPU builds lack it (the tests install it for the interpreter)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

FILTER = 5  # 5x5 kernels ("valid": the output is 4 pixels smaller per side)
# aten.convolution's arguments for a "valid" 2-D convolution: stride, padding, dilation, transposed,
# output padding, groups
CONV_ARGS = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
ACTS = {"tanh": 0, "sigmoid": 1, "relu": 2}
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Can the kernels run on `device`? CUDA with Triton; CPU only under Triton's interpreter."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and INTERPRET)


def supports(in_shape: tuple[int, ...], out_maps: int, activation: str) -> bool:
    """x [n, IC, H, H] with an even convolution output (the pooling then covers it exactly)."""
    if len(in_shape) != 4 or in_shape[2] != in_shape[3] or activation not in ACTS:
        return False
    side = in_shape[2] - FILTER + 1
    return side > 0 and side % 2 == 0 and out_maps <= 128 and in_shape[1] * FILTER * FILTER <= 4096


if triton is not None:

    @triton.jit
    def _act(z, ACT: tl.constexpr):
        if ACT == 0:  # tanh without overflow: sign(z) (1 - e) / (1 + e), e = exp(-2|z|)
            e = tl.exp(-2.0 * tl.abs(z))
            t = (1.0 - e) / (1.0 + e)
            out = tl.where(z < 0, -t, t)
        elif ACT == 1:
            out = 1.0 / (1.0 + tl.exp(-z))
        else:
            out = tl.maximum(z, 0.0)
        return out

    @triton.jit
    def _act_grad(gy, y, ACT: tl.constexpr):
        """The gradient w.r.t. the activation's input, from its output y (as tanh_backward etc.)."""
        if ACT == 0:
            out = gy * (1.0 - y * y)
        elif ACT == 1:
            out = gy * y * (1.0 - y)
        else:
            out = tl.where(y > 0, gy, 0.0)
        return out

    @triton.jit
    def _patch_offsets(kk, H: tl.constexpr):
        """Offset of patch element k = (ic, i, j) (W's order) from the patch's top-left pixel in x."""
        return (kk // 25) * (H * H) + ((kk % 25) // 5) * H + kk % 5

    @triton.jit
    def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pos_ptr, R,
                        IC: tl.constexpr, H: tl.constexpr, OC: tl.constexpr, P: tl.constexpr, K: tl.constexpr,
                        ACT: tl.constexpr, PREC: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_OC: tl.constexpr, BLOCK_K: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # rows: (image n, pooled position p)
        rmask = r < R
        n = r // (P * P)
        p = r % (P * P)
        xbase = n * (IC * H * H) + (p // P) * (2 * H) + (p % P) * 2  # the window's top-left input pixel
        oc = tl.arange(0, BLOCK_OC)
        ocmask = oc < OC
        best = tl.full((BLOCK_R, BLOCK_OC), float("-inf"), tl.float32)
        at = tl.zeros((BLOCK_R, BLOCK_OC), tl.int32)
        for s in tl.static_range(4):  # the 2x2 window's positions, row by row (max_pool2d's scan order)
            acc = tl.zeros((BLOCK_R, BLOCK_OC), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                kmask = kk < K
                a = tl.load(x_ptr + xbase[:, None] + ((s // 2) * H + s % 2) + _patch_offsets(kk, H)[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0)  # [BLOCK_R, BLOCK_K]
                w = tl.load(w_ptr + oc[None, :] * K + kk[:, None],
                            mask=kmask[:, None] & ocmask[None, :], other=0.0)  # [BLOCK_K, BLOCK_OC]
                acc += tl.dot(a, w, input_precision=PREC)
            better = acc > best  # strict: the first maximum wins
            best = tl.where(better, acc, best)
            at = tl.where(better, s, at)
        b = tl.load(b_ptr + oc, mask=ocmask, other=0.0)
        y = _act(best + b[None, :], ACT)
        out = n[:, None] * (OC * P * P) + oc[None, :] * (P * P) + p[:, None]  # [n, OC, P, P]
        m = rmask[:, None] & ocmask[None, :]
        tl.store(y_ptr + out, y, mask=m)
        tl.store(pos_ptr + out, at.to(tl.uint8), mask=m)

    @triton.jit
    def _weight_grad_kernel(gy_ptr, y_ptr, pos_ptr, x_ptr, pw_ptr, pb_ptr, R, ROWS_PER: tl.constexpr,
                            IC: tl.constexpr, H: tl.constexpr, OC: tl.constexpr, P: tl.constexpr,
                            K: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_R: tl.constexpr, BLOCK_OC: tl.constexpr, BLOCK_K: tl.constexpr):
        part = tl.program_id(0)  # which slice of the rows
        kk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        kmask = kk < K
        koff = _patch_offsets(kk, H)
        oc = tl.arange(0, BLOCK_OC)
        ocmask = oc < OC
        acc = tl.zeros((BLOCK_OC, BLOCK_K), tl.float32)
        accb = tl.zeros((BLOCK_OC,), tl.float32)
        # This program's rows: first .. first + ROWS_PER - 1. ROWS_PER is a compile-time constant because
        # Triton 3.6's interpreter (torch 2.11's Triton) cannot loop to a bound passed at run time.
        first = part * ROWS_PER
        for i in range(0, ROWS_PER, BLOCK_R):
            r = first + i + tl.arange(0, BLOCK_R)
            rmask = r < R
            n = r // (P * P)
            p = r % (P * P)
            out = n[:, None] * (OC * P * P) + oc[None, :] * (P * P) + p[:, None]
            m = rmask[:, None] & ocmask[None, :]
            g = _act_grad(tl.load(gy_ptr + out, mask=m, other=0.0), tl.load(y_ptr + out, mask=m, other=0.0),
                          ACT)  # [BLOCK_R, BLOCK_OC], 0 outside
            at = tl.load(pos_ptr + out, mask=m, other=0).to(tl.int32)
            accb += tl.sum(g, axis=0)
            xbase = n * (IC * H * H) + (p // P) * (2 * H) + (p % P) * 2
            for s in tl.static_range(4):
                gs = tl.where(at == s, g, 0.0)
                a = tl.load(x_ptr + xbase[:, None] + ((s // 2) * H + s % 2) + koff[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0)  # [BLOCK_R, BLOCK_K]
                acc += tl.dot(tl.trans(gs), a, input_precision=PREC)
        tl.store(pw_ptr + part * (OC * K) + oc[:, None] * K + kk[None, :], acc,
                 mask=ocmask[:, None] & kmask[None, :])
        if tl.program_id(1) == 0:
            tl.store(pb_ptr + part * OC + oc, accb, mask=ocmask)

    @triton.jit
    def _unpool_kernel(gy_ptr, y_ptr, pos_ptr, dc_ptr, total, P: tl.constexpr, ACT: tl.constexpr,
                       BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # over [n, OC, P, P]
        mask = i < total
        g = _act_grad(tl.load(gy_ptr + i, mask=mask, other=0.0), tl.load(y_ptr + i, mask=mask, other=0.0), ACT)
        at = tl.load(pos_ptr + i, mask=mask, other=0).to(tl.int32)
        p = i % (P * P)
        base = (i // (P * P)) * (4 * P * P) + (p // P) * (4 * P) + (p % P) * 2  # in [n, OC, 2P, 2P]
        for s in tl.static_range(4):
            tl.store(dc_ptr + base + (s // 2) * (2 * P) + s % 2, tl.where(at == s, g, 0.0), mask=mask)

    @triton.jit
    def _fold_kernel(cols_ptr, dx_ptr, total, IC: tl.constexpr, H: tl.constexpr, O: tl.constexpr,
                     BLOCK: tl.constexpr):
        # dx[n, ic, r, c] = the sum over the taps (i, j) with (r - i, c - j) inside the convolution's O x O
        # output of cols[n, ic * 25 + i * 5 + j, (r - i) * O + (c - j)]: col2im as a gather (no atomics)
        e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # over [n, IC, H, H]
        mask = e < total
        n = e // (IC * H * H)
        ic = (e // (H * H)) % IC
        r = (e // H) % H
        c = e % H
        base = n * (IC * 25 * O * O) + ic * (25 * O * O)
        acc = tl.zeros((BLOCK,), tl.float32)
        for i in tl.static_range(5):
            for j in tl.static_range(5):
                oh = r - i
                ow = c - j
                ok = mask & (oh >= 0) & (oh < O) & (ow >= 0) & (ow < O)
                acc += tl.load(cols_ptr + base + (i * 5 + j) * (O * O) + oh * O + ow, mask=ok, other=0.0)
        tl.store(dx_ptr + e, acc, mask=mask)


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << (n - 1).bit_length())


def _dims(x: torch.Tensor, W: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    n, ic, h = x.shape[0], x.shape[1], x.shape[2]
    oc = W.shape[0]
    p = (h - FILTER + 1) // 2
    return n, ic, h, oc, p, ic * FILTER * FILTER


# Launch configurations worth timing, best guess first: (BLOCK_R, BLOCK_K, num_warps) for the forward
# kernel, (BLOCK_R, BLOCK_K, programs per SM, num_warps) for the weight gradient; by kernel, K <= 32 (layer
# 0: one input map, K = 25) or larger (layer 1: K = 500; OC 50 -> 64), and precision. Chosen from
# bench/triton_aot.py (every candidate compiled for sm_90 without a GPU, with Triton 3.9 and with 3.6,
# torch 2.11's): the ones that compile without spilling registers in both, larger tiles first. Triton's
# float32 "ieee" dot runs on FMA units with its operands in registers, so large tiles spill (e.g. the
# forward kernel at BLOCK_R 64, BLOCK_K 32, 4 warps).
CONFIGS = {
    ("forward", "small", "ieee"): [(64, 32, 8), (64, 16, 8), (32, 32, 4), (128, 16, 8)],
    ("forward", "small", "tf32"): [(64, 32, 4), (128, 32, 8), (64, 32, 8)],
    ("forward", "large", "ieee"): [(32, 16, 8), (64, 16, 8), (32, 32, 8)],
    ("forward", "large", "tf32"): [(64, 16, 8), (64, 32, 8), (32, 16, 8), (128, 16, 8)],
    ("weight_grad", "small", "ieee"): [(64, 32, 2, 8), (32, 32, 4, 4)],
    ("weight_grad", "small", "tf32"): [(64, 32, 2, 8), (128, 32, 2, 8), (32, 32, 4, 4)],
    ("weight_grad", "large", "ieee"): [(32, 64, 2, 8), (32, 32, 4, 8), (64, 32, 2, 8)],
    ("weight_grad", "large", "tf32"): [(32, 64, 2, 8), (32, 32, 4, 8), (16, 64, 4, 4), (64, 32, 2, 8)],
}


def configs(kernel: str, k: int, precision: str) -> list[tuple[int, ...]]:
    """The launch configurations to time for `kernel` at patch length k (IC * 25)."""
    return CONFIGS[(kernel, "small" if k <= 32 else "large", "ieee" if precision == "ieee" else "tf32")]


_chosen: dict[tuple, Any] = {}  # (kernel, shape...) -> the fastest configuration measured


def _best(key: tuple, configs: list[Any], launch: Any, device: torch.device) -> Any:
    """The fastest of `configs` for `key` (timed once per process on CUDA; the first one elsewhere).
    launch(config) runs the kernel; every configuration computes the same outputs."""
    if key in _chosen:
        return _chosen[key]
    if device.type != "cuda" or len(configs) == 1 or torch.cuda.is_current_stream_capturing():
        return configs[0]
    from deeptut.accel.cuda import capture  # its capture and timing helpers

    times, failure = [], None
    for c in configs:
        try:
            launch(c)  # compiles
            times.append((capture.replay_ms(lambda: launch(c), 10), c))
        except Exception as e:  # noqa: BLE001 - a configuration that does not compile (resources...)
            failure = f"{c}: {type(e).__name__}: {e}"
    if not times:
        raise RuntimeError(f"no launch configuration of the {key[0]} kernel runs (last: {failure})")
    _chosen[key] = min(times, key=lambda t: t[0])[1]
    return _chosen[key]


def conv_pool_forward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, activation: str = "tanh",
                      precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, IC, H, H], W [OC, IC, 5, 5], b [OC] (float32, contiguous) -> (y [n, OC, P, P], the window
    position of each maximum [n, OC, P, P] uint8, 0..3 row by row), P = (H - 4) / 2."""
    n, ic, h, oc, p, k = _dims(x, W)
    per_image = max(ic * h * h, oc * p * p)
    if n * per_image >= 2**31:  # the kernel's offsets are 32-bit: a very large batch goes in pieces
        step = (2**31 - 1) // per_image
        parts = [conv_pool_forward(x[i:i + step], W, b, activation, precision) for i in range(0, n, step)]
        return torch.cat([a for a, _ in parts]), torch.cat([q for _, q in parts])
    x, W = x.contiguous(), W.contiguous()
    y = torch.empty(n, oc, p, p, device=x.device, dtype=torch.float32)
    pos = torch.empty(n, oc, p, p, device=x.device, dtype=torch.uint8)
    R = n * p * p
    block_oc = _pow2(oc)

    def launch(c: tuple[int, int, int]) -> None:
        block_r, block_k, warps = c
        _forward_kernel[(triton.cdiv(R, block_r),)](
            x, W, b, y, pos, R, IC=ic, H=h, OC=oc, P=p, K=k, ACT=ACTS[activation], PREC=precision,
            BLOCK_R=block_r, BLOCK_OC=block_oc, BLOCK_K=block_k, num_warps=warps)

    launch(_best(("forward", n, ic, h, oc, activation, precision), configs("forward", k, precision),
                 launch, x.device))
    return y, pos


def _unpool(gy: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, activation: str) -> torch.Tensor:
    n, oc, p = y.shape[0], y.shape[1], y.shape[2]
    dc = torch.empty(n, oc, 2 * p, 2 * p, device=y.device, dtype=torch.float32)
    total, block = y.numel(), 1024
    _unpool_kernel[(triton.cdiv(total, block),)](gy, y, pos, dc, total, P=p, ACT=ACTS[activation], BLOCK=block)
    return dc


def weight_grad(gy: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, W: torch.Tensor,
                activation: str = "tanh", precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """(dW [OC, IC, 5, 5], db [OC]) from gy = d cost / d y [n, OC, P, P] and the forward's y, pos, x."""
    n, ic, h, oc, p, k = _dims(x, W)
    gy = gy.contiguous()
    R = n * p * p
    block_oc = _pow2(oc)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.device.type == "cuda" else 4

    def launch(c: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        block_r, block_k, per_sm, warps = c  # rows per iteration, K columns per program, programs per SM
        kblocks = triton.cdiv(k, block_k)
        parts = max(1, min(triton.cdiv(R, block_r), (per_sm * sms) // kblocks))
        rows_per = triton.cdiv(triton.cdiv(R, parts), block_r) * block_r
        parts = triton.cdiv(R, rows_per)
        pw = torch.empty(parts, oc, k, device=x.device, dtype=torch.float32)
        pb = torch.empty(parts, oc, device=x.device, dtype=torch.float32)
        _weight_grad_kernel[(parts, kblocks)](
            gy, y, pos, x, pw, pb, R, ROWS_PER=rows_per, IC=ic, H=h, OC=oc, P=p, K=k, ACT=ACTS[activation],
            PREC=precision, BLOCK_R=block_r, BLOCK_OC=block_oc, BLOCK_K=block_k, num_warps=warps)
        return pw, pb

    pw, pb = launch(_best(("weight_grad", n, ic, h, oc, activation, precision),
                          configs("weight_grad", k, precision), launch, x.device))
    return pw.sum(0).view(W.shape), pb.sum(0)


DATA_GRAD_WAYS = ("cudnn", "fold")


def data_grad(gy: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, W: torch.Tensor,
              activation: str = "tanh", how: str | None = None) -> torch.Tensor:
    """dx [n, IC, H, H]. First the dense gradient of the convolution's output, dc [n, OC, O, O] (one kernel),
    then either
      "cudnn": cuDNN's (on CPU torch's) convolution data gradient, or
      "fold":  one batched product cols = W^T [K, OC] x dc[n] [OC, O*O] (cuBLAS; K = IC * 25) and a gather
               kernel that sums each input pixel's 25 taps out of cols (col2im without atomics, reading along
               the rows of cols). For the tutorial's layer 1, cuDNN's data gradient computes the full
               convolution of an 8x8 map padded to 16x16 (~116 us per step on an H200); this does the
               product without padding, plus ~64 MB of traffic through cols.
    `how` None: the faster of the two, timed once per shape on CUDA (cudnn elsewhere). Same function;
    float32 sums in another order."""
    dc = _unpool(gy.contiguous(), y, pos, activation)

    def run(way: str) -> torch.Tensor:
        if way == "cudnn":
            return torch.ops.aten.convolution_backward(dc, x, W, None, *CONV_ARGS, [True, False, False])[0]
        n, ic, h = x.shape[0], x.shape[1], x.shape[2]
        oc, o = W.shape[0], dc.shape[-1]
        cols = torch.matmul(W.reshape(oc, ic * FILTER * FILTER).t(), dc.reshape(n, oc, o * o))  # [n, K, O*O]
        dx = torch.empty(n, ic, h, h, device=x.device, dtype=torch.float32)
        total, block = dx.numel(), 512
        _fold_kernel[(triton.cdiv(total, block),)](cols, dx, total, IC=ic, H=h, O=o, BLOCK=block)
        return dx

    if how is None:
        how = _best(("data_grad", *x.shape, W.shape[0]), list(DATA_GRAD_WAYS), run, x.device)
    return run(how)
