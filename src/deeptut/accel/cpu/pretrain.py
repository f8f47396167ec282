"""Fused CPU pre-training updates: the dA's (and SdA layer's) and the RBM's per-minibatch update without
autograd, in buffers allocated once, with torch's intra-op pool held at one thread at small minibatches.

Why: at the tutorials' minibatches (dA 20, RBM 20, SdA 1) an update is a few small matrix products. Measured
on the 2-core Xeon shared with other work (load ~4), the reference update (train/pretrain.py's
`layer_update`: autograd for the dA, the RBM's closed-form CD in eager ops) took 1.5 ms of CPU and 4.5 ms of
wall time per dA update at one thread, but 16.5 ms CPU / 38 ms wall at torch's default two threads (the second
OpenMP thread spins and waits for a core the other processes hold); the RBM's PCD-15 update 8.4 ms CPU /
20 ms wall at one thread, 36 ms / 76 ms at two. So the first gain is the thread count; the second is
autograd's graph, the intermediates' allocations and the optimiser-like Python loop; the third, at the SdA's
batch 1, the W-sized passes of the weight update (csrc/pretrain_update.c does them in one: an SdA layer-0
update 1.48 -> 0.61 ms CPU). What is left is matrix products and random draws (an RBM PCD-15 update: ~60 %
products, ~20 % draws, at ~7 ms CPU), which stay as they are so that the result and the draws are the same.

Arithmetic: the same ATen kernels on the same operands in the same order as the reference, so the result is
bit-identical to `layer_update` at the same thread count (tests/test_pretrain_fused.py checks every tensor
of several updates with torch.equal), and the random draws are the same Generator calls in the same order
(torch.rand of the same shapes, into buffers), so a run stays reproducible and resumable across the two.

    dA (dA.get_cost_updates; autograd's backward written out, n = minibatch rows):
        x~  = x * (rand < 1 - corruption_level)            (no draw at level 0)
        y   = sigmoid(x~ W + b)          z_pre = y W.T + b'
        cost = mean(sum(bce_with_logits(z_pre, x), 1))
        dz  = (sigmoid(z_pre) - x) * (1 / n)               BCE-with-logits backward, mean's 1/n
        gb' = sum_rows(dz)   gW = dz.T y + x~.T dy   dy = sigmoid_backward(dz W, y)   gb = sum_rows(dy)
        p  -= lr * g                                        (the product lr * g first, as `p.sub_(lr * g)`)
    RBM (RBM.get_cost_updates: CD-k / PCD-k, cost before the update):
        ph = sigmoid(x W + hbias); h = chain or bernoulli(ph); k x (v ~ p(v | h), h ~ p(h | v))
        gW = v.T nh / n_chains - x.T ph / n;  ghbias = mean(nh) - mean(ph);  gvbias = mean(v) - mean(x)

    cA with the tutorial's floor division (cA.py's `T.sum(J ** 2) // n_batchsize`): the penalty has a zero
        gradient (models/ca.py), so the update is the dA's at corruption 0 (autograd adds exact zeros to W's
        and y's gradients: x + 0 = x); the penalty is computed for the printed "jacobian norm" only.
The cA with true division keeps its reference update (autograd through the Jacobian penalty), at one thread.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.fused import _Threads
from deeptut.models.ca import cA as CA
from deeptut.models.da import cross_entropy_from_logits, dA as DA
from deeptut.models.rbm import RBM

aten = torch.ops.aten
SMALL_BATCH = 32  # up to this many rows an update runs at one thread (a second costs more than it saves)

Update = Callable[[torch.Tensor, torch.Generator, "torch.Tensor | None", int], tuple[torch.Tensor, Any]]


def one_thread(update: Update) -> Update:
    """The reference update with torch's pool held at one thread for its duration."""
    threads = _Threads(1)

    def run(x, g, chain, i):
        with threads:
            return update(x, g, chain, i)
    run.threads = 1  # type: ignore[attr-defined]
    return run


class DAFusedUpdate:
    """update(x, generator, chain, i) -> (cost, None): dA.get_cost_updates(x, corruption_level, lr, generator)
    bit for bit, into buffers (re-allocated if the minibatch's row count changes)."""

    def __init__(self, da: nn.Module, corruption_level: float, lr: float, threads: int = 1,
                 use_ckernel: bool = True) -> None:
        if not 0.0 <= corruption_level <= 1.0:
            raise ValueError(f"corruption_level must be in [0, 1] (got {corruption_level})")
        self.da, self.level, self.lr = da, corruption_level, lr
        self.W, self.b, self.b_prime = (p.detach() for p in da.params)
        self.threads = _Threads(threads) if threads else None
        self.n = -1
        # csrc/pretrain_update.c: W's update in one pass (same rounding); None: torch's passes
        self.kernel = ckernels.pretrain_update() if use_ckernel and self.W.is_contiguous() else None

    def _alloc(self, n: int) -> None:
        n_visible, n_hidden = self.W.shape
        self.n = n
        self.keep = torch.empty(n, n_visible)            # uniform draws, then the 0/1 mask
        self.tilde_x = torch.empty(n, n_visible)
        self.y = torch.empty(n, n_hidden)                # hidden values
        self.z = torch.empty(n, n_visible)               # reconstruction logits
        self.dz = torch.empty(n, n_visible)
        self.dy = torch.empty(n, n_hidden)
        self.gW, self.gW2 = torch.empty(n_visible, n_hidden), torch.empty(n_visible, n_hidden)
        self.gb, self.gb_prime = torch.empty(n_hidden), torch.empty(n_visible)
        self.inv_n = torch.full((), 1.0 / n)             # mean's backward: 1/n in float32, as autograd's

    def __call__(self, x: torch.Tensor, g: torch.Generator, chain: Any, i: int) -> tuple[torch.Tensor, None]:
        if self.threads is None:
            return self._update(x, g), None
        with self.threads:
            return self._update(x, g), None

    def monitor(self, x: torch.Tensor, y: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """What the update returns, from the values before the update: the dA's cost."""
        return cost

    @torch.no_grad()
    def _update(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[0] != self.n:
            self._alloc(x.shape[0])
        W, b, b_prime, lr = self.W, self.b, self.b_prime, self.lr
        if self.level == 0.0:
            tilde_x = x
        else:  # the draw dA.get_corrupted_input makes: rand of x's shape, kept where < 1 - level
            torch.rand(x.shape, generator=g, out=self.keep)
            torch.lt(self.keep, 1.0 - self.level, out=self.keep)  # 0/1 straight into float (8x faster than bool)
            tilde_x = torch.mul(x, self.keep, out=self.tilde_x)
        y = torch.sigmoid(torch.addmm(b, tilde_x, W, out=self.y), out=self.y)
        z = torch.addmm(b_prime, y, W.t(), out=self.z)
        cost = self.monitor(x, y, cross_entropy_from_logits(x, z).mean())
        # backward, as autograd runs it
        dz = torch.sigmoid(z, out=self.dz).sub_(x).mul_(self.inv_n)
        torch.sum(dz, 0, out=self.gb_prime)
        rank1 = self.kernel is not None and self.n == 1 and tilde_x.is_contiguous()
        if not rank1:
            torch.mm(dz.t(), y, out=self.gW2)               # decoder's contribution to W (W.T's gradient)
        dy = torch.mm(dz, W, out=self.dy)
        aten.sigmoid_backward.grad_input(dy, y, grad_input=dy)
        torch.sum(dy, 0, out=self.gb)
        n_visible, n_hidden = W.shape
        if rank1:  # W -= lr * (x~.T dy + dz.T y) from the vectors, in one pass
            self.kernel.rank1_sgd(W.data_ptr(), tilde_x.data_ptr(), dy.data_ptr(), dz.data_ptr(), y.data_ptr(),
                                  n_visible, n_hidden, lr)
        else:
            torch.mm(tilde_x.t(), dy, out=self.gW)          # encoder's contribution
            if self.kernel is not None:  # W -= lr * (gW + gW2) in one pass
                self.kernel.sum2_sgd(W.data_ptr(), self.gW.data_ptr(), self.gW2.data_ptr(), W.numel(), lr)
            else:
                self.gW.add_(self.gW2)
                # p -= lr * g, the product first (as the reference's p.sub_(lr * g)); gW2 is free again
                W.sub_(torch.mul(self.gW, lr, out=self.gW2))
        b.sub_(torch.mul(self.gb, lr, out=self.gb))
        b_prime.sub_(torch.mul(self.gb_prime, lr, out=self.gb_prime))
        return cost


class CAFloorFusedUpdate(DAFusedUpdate):
    """update(x, generator, chain, i) -> (stack([mean L_rec, L_jacob]), None): cA.get_cost_updates with the
    tutorial's floor division, bit for bit (the dA's update at corruption 0; no random draws)."""

    def __init__(self, ca: nn.Module, contraction_level: float, lr: float, threads: int = 1,
                 use_ckernel: bool = True) -> None:
        if not ca.floor_division:
            raise ValueError("CAFloorFusedUpdate computes the floor-division cA only (its penalty has no gradient)")
        super().__init__(ca, 0.0, lr, threads, use_ckernel)
        self.ca = ca

    def monitor(self, x: torch.Tensor, y: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        L_jacob = torch.div(self.ca.jacobian_sum_sq(y), self.ca.n_batchsize, rounding_mode="floor")
        return torch.stack([cost, L_jacob])


class RBMFusedUpdate:
    """update(x, generator, chain, i) -> (cost, chain): RBM.get_cost_updates(x, lr, chain if persistent,
    k, generator, i % n_visible) bit for bit. The returned PCD chain is a fresh tensor every update (the
    loop keeps it and checkpoints it), the rest lives in buffers."""

    def __init__(self, rbm: RBM, lr: float, k: int, persistent: bool, threads: int = 1) -> None:
        if k < 1:
            raise ValueError(f"k (Gibbs steps per update) must be >= 1 (got {k})")
        self.rbm, self.lr, self.k, self.persistent = rbm, lr, k, persistent
        self.W, self.hbias, self.vbias = (p.detach() for p in rbm.params)
        self.threads = _Threads(threads) if threads else None
        self.n = -1

    def _alloc(self, n: int) -> None:
        n_visible, n_hidden = self.W.shape
        self.n = n
        self.ph = torch.empty(n, n_hidden)       # p(h | x)
        self.u_h = torch.empty(n, n_hidden)      # uniform draws for h, then the mean p(h | v)
        self.u_v = torch.empty(n, n_visible)
        self.pre_v = torch.empty(n, n_visible)
        self.v_mean = torch.empty(n, n_visible)
        self.v = torch.empty(n, n_visible)       # visible sample
        self.pre_h = torch.empty(n, n_hidden)
        self.gW, self.gW2 = torch.empty(n_visible, n_hidden), torch.empty(n_visible, n_hidden)
        self.gh, self.gh2 = torch.empty(n_hidden), torch.empty(n_hidden)
        self.gv, self.gv2 = torch.empty(n_visible), torch.empty(n_visible)

    def __call__(self, x: torch.Tensor, g: torch.Generator, chain: torch.Tensor | None, i: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.threads is None:
            return self._update(x, g, chain, i)
        with self.threads:
            return self._update(x, g, chain, i)

    def _sample(self, mean: torch.Tensor, u: torch.Tensor, out: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """models/rbm.py's bernoulli(mean, g): (rand(mean.shape) < mean) as 0/1 floats, into out (the
        comparison written straight into float: ~2 us against ~18 us through a bool tensor and a copy)."""
        torch.rand(mean.shape, generator=g, out=u)
        return torch.lt(u, mean, out=out)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, g: torch.Generator, chain: torch.Tensor | None, i: int
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = x.shape[0]
        if n != self.n:
            self._alloc(n)
        W, hbias, vbias, lr = self.W, self.hbias, self.vbias, self.lr
        persistent = chain if self.persistent else None
        if persistent is not None and persistent.shape != (n, W.shape[1]):
            raise ValueError(f"persistent chain has shape {tuple(persistent.shape)}, expected ({n}, {W.shape[1]})")
        ph = torch.sigmoid(torch.addmm(hbias, x, W, out=self.ph), out=self.ph)
        h = torch.empty(n, W.shape[1])  # the chain's hidden state: handed back to the loop (PCD)
        if persistent is None:
            self._sample(ph, self.u_h, h, g)
        else:
            h.copy_(persistent)
        nh_mean = self.pre_h  # p(h | v) of the last step (sigmoid in place of its pre-activation)
        for _ in range(self.k):
            pre_v = torch.addmm(vbias, h, W.t(), out=self.pre_v)
            self._sample(torch.sigmoid(pre_v, out=self.v_mean), self.u_v, self.v, g)
            torch.addmm(hbias, self.v, W, out=self.pre_h)
            torch.sigmoid(self.pre_h, out=nh_mean)
            self._sample(nh_mean, self.u_h, h, g)
        v, n_chains = self.v, self.v.shape[0]
        # gradients, in the reference's expression order
        torch.div(torch.mm(v.t(), nh_mean, out=self.gW), n_chains, out=self.gW)
        torch.div(torch.mm(x.t(), ph, out=self.gW2), n, out=self.gW2)
        self.gW.sub_(self.gW2)
        torch.sub(torch.mean(nh_mean, 0, out=self.gh), torch.mean(ph, 0, out=self.gh2), out=self.gh)
        torch.sub(torch.mean(v, 0, out=self.gv), torch.mean(x, 0, out=self.gv2), out=self.gv)
        if persistent is None:
            cost = self.rbm.reconstruction_cost(x, self.pre_v)
        else:
            cost = self.rbm.pseudo_likelihood_cost(x, i % self.rbm.n_visible)
        W.sub_(torch.mul(self.gW, lr, out=self.gW2))
        hbias.sub_(torch.mul(self.gh, lr, out=self.gh2))
        vbias.sub_(torch.mul(self.gv, lr, out=self.gv2))
        return cost, (None if persistent is None else h)


def make_update(trainer: Any, cfg: Any, lr: float, reference: Update) -> Update:
    """The fused update for this layer trainer's unit and rule (CPU, float32, plain SGD), else the reference
    at one thread (small minibatches) or as given. Chosen by the unit's type and the trainer's rule
    (models/trainers.py), never by the family: a family's own rule ("kind") gets its reference update."""
    threads = 1 if cfg.batch_size <= SMALL_BATCH else cfg.threads
    plain_sgd = not (getattr(cfg, "momentum", 0) or getattr(cfg, "weight_decay", 0)
                     or getattr(cfg, "nesterov", False))
    unit, kind, options = trainer.unit, trainer.kind, trainer.options
    if plain_sgd and kind == "denoising" and type(unit) is DA and unit.W.dtype == torch.float32:
        return DAFusedUpdate(unit, options["corruption_level"], lr, threads)
    if plain_sgd and kind == "contractive" and type(unit) is CA and unit.floor_division \
            and unit.W.dtype == torch.float32:
        return CAFloorFusedUpdate(unit, options["contraction_level"], lr, threads)
    if plain_sgd and kind == "cd" and type(unit) is RBM and unit.W.dtype == torch.float32:
        return RBMFusedUpdate(unit, lr, options["k"], options["persistent"], threads)
    return one_thread(reference) if threads == 1 else reference
