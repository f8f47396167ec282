"""The update arithmetic a graph step runs: one SGD update written so a CUDA graph can capture it.

An *update* object runs `block(xb, yb, nb, lr_of, acc)`: nb consecutive minibatches that lie in contiguous
device rows, adding their summed cost to the device scalar `acc`; the graph step (graphs.py) captures
exactly that call. Two kinds here (the third, LeNet's with its backward pass written out by hand, is
lenet_manual.py):

* `DenseUpdate` -- logistic regression and the MLP with the tutorials' plain SGD and constant step size:
  forward and backward written out with the fewest kernels. The softmax/NLL gradient is one
  `_log_softmax_backward_data` against a precomputed -onehot/n (what autograd does), and each update is
  fused into its gradient product: W <- (1 - 2 lr L2) W - lr h^T d is one in-place addmm, b <- b - lr d^T 1
  one addmv. About 14 kernels per MLP step instead of ~35. The cost (NLL + penalties) is accumulated on the
  device. Same mathematics as the autograd step; floating-point results differ by reassociation (the L2
  term folded into the GEMM's beta), ~1e-6 relative per step (the tests bound 20 steps at 1e-5).
* `AutogradUpdate` -- anything else (LeNet, momentum, Nesterov, weight decay, schedules, bf16 autocast):
  the reference cost, `torch.autograd.grad`, and torch.optim.SGD's update written out with foreach ops
  (momentum buffers preallocated, so the graph can update them in place). With a constant step size it is
  bit-identical to AutogradStep (same kernels, same order); with a schedule the step size is a device
  tensor per step (an extra rounding: p - g*lr instead of p + (-lr)*g).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn

from deeptut.config import TrainConfig
from deeptut.steps import AutogradStep

MAX_SPAN = 4096  # updates per span (and per captured graph)




def dense_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The (W [n_in, n_out], b [n_out]) pairs of a stack of dense layers, in forward order, or None.

    Parameters must come as (matrix, vector) pairs in registration order whose shapes chain; a matrix
    stored [n_out, n_in] (nn.Linear) is returned as a transposed view. The caller checks the forward pass
    numerically, so a model this misreads is never trained with the dense update."""
    params = list(model.parameters())
    if not params or len(params) % 2:
        return None
    layers, width = [], None
    for W, b in zip(params[0::2], params[1::2]):
        if W.dim() != 2 or b.dim() != 1 or not W.is_contiguous() or not b.is_contiguous():
            return None
        if W.shape[1] == b.shape[0] and (width is None or W.shape[0] == width):
            layers.append((W, b))
        elif W.shape[0] == b.shape[0] and (width is None or W.shape[1] == width):
            layers.append((W.t(), b))
        else:
            return None
        width = b.shape[0]
    return layers


class DenseUpdate:
    """Logistic regression / MLP, plain SGD at a constant step size: forward, backward and update fused.

    Per step and layer: addmm (+ activation) forward; backward d <- dprev (.) act'(h), dprev <- d W^T
    (before the update), W <- beta W - lr h^T d (in place), b <- b - lr d^T 1 (in place), where d already
    holds the 1/n of the mean. For the cost, each step writes its log-probabilities into a block buffer and
    the norms of the penalised matrices into a row of `terms` (one kernel each, no accumulation); once per
    block, NLL = <log p, -onehot/n> over the whole block plus the penalties are added into `acc`.
    (Not accumulated with in-place GEMMs into one scalar: some CPU BLAS add K-blocked partial sums into C
    one by one, which loses several digits when C is large.)

    On CUDA the work off the critical path runs on side streams, which a capture turns into parallel
    branches of the graph: the penalty norms, every bias update, and the weight updates of all but the
    first layer. The chain that remains per MLP step is addmm, tanh, addmm, log_softmax, its backward, mm,
    tanh_backward, the first layer's update: 8 kernels of 13. Every branch forks from the step's stream
    and joins it again before the step ends (the next step reads every parameter), and the tensors a branch
    reads are kept alive until the join. The arithmetic is the same as on one stream."""

    side_streams = True  # class switch (the benchmark compares both)

    def __init__(self, model: nn.Module, layers: list[tuple[torch.Tensor, torch.Tensor]],
                 cfg: TrainConfig, weights: list[torch.Tensor]) -> None:
        self.model, self.layers = model, layers
        self.act = cfg.activation
        self.bs, self.n_out = cfg.batch_size, layers[-1][1].shape[0]
        self.lr = cfg.learning_rate
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        self.weights = weights  # the penalised matrices as the model stores them
        dev = layers[0][0].device
        self.ones = torch.ones(self.bs, device=dev)
        self.beta = 1.0 - 2.0 * self.lr * self.L2_reg
        self.terms = torch.zeros(MAX_SPAN, 2 * len(weights), device=dev)  # |W|_2 ..., |W|_1 ... per step
        self.step_fn: Callable[..., None] = self._step
        # streams for the branches: [norms, updates of layer 0, updates of layer 1, ...]; None: one stream
        self.side = [torch.cuda.Stream(device=dev) for _ in range(1 + len(layers))] \
            if dev.type == "cuda" and self.side_streams else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (W, b) in enumerate(self.layers):
            h = torch.addmm(b, h, W)
            if i < len(self.layers) - 1:
                h = _act_(h, self.act)
        return h

    def neg_onehot(self, y: torch.Tensor) -> torch.Tensor:
        """-onehot(y) / batch_size, [len(y), n_out]: the gradient of the mean NLL w.r.t. log p."""
        t = torch.zeros(y.shape[0], self.n_out, device=y.device)
        return t.scatter_(1, y[:, None], -1.0 / self.bs)

    @torch.no_grad()
    def block(self, xb: torch.Tensor, yb: torch.Tensor, nb: int, lr_of: Callable[[int], Any],
              acc: torch.Tensor) -> None:
        bs, nw = self.bs, len(self.weights)
        tb = self.neg_onehot(yb[:nb * bs])
        lp = torch.empty(nb * bs, self.n_out, device=xb.device)  # log p of every step of the block
        for k in range(nb):
            s = slice(k * bs, (k + 1) * bs)
            self.step_fn(xb[s], tb[s], lp[s], self.terms[k])
        cost = torch.dot(lp.view(-1), tb.view(-1))  # the NLLs of the block's steps, summed
        if self.L2_reg:
            cost = cost + self.L2_reg * self.terms[:nb, :nw].square().sum()
        if self.L1_reg:
            cost = cost + self.L1_reg * self.terms[:nb, nw:].sum()
        acc.add_(cost)

    def _step(self, x: torch.Tensor, t: torch.Tensor, logp: torch.Tensor, terms: torch.Tensor) -> None:
        L1_reg, L2_reg, nw = self.L1_reg, self.L2_reg, len(self.weights)
        main = torch.cuda.current_stream(x.device) if self.side else None
        norms = self.side[0] if self.side and (L1_reg or L2_reg) else None
        forked = [norms] if norms is not None else []  # the branches this step opens (and must join)
        with _branch(norms, main):  # the penalties of the cost, of W before this step's update
            for j, w in enumerate(self.weights):
                if L2_reg:
                    torch.linalg.vector_norm(w.view(-1), 2, out=terms[j])
                if L1_reg:
                    torch.linalg.vector_norm(w.view(-1), 1, out=terms[nw + j])
        hs = [x]
        for i, (W, b) in enumerate(self.layers):
            a = torch.addmm(b, hs[-1], W)
            hs.append(_act_(a, self.act) if i < len(self.layers) - 1 else a)
        torch.log_softmax(hs[-1], dim=1, out=logp)
        d = torch._log_softmax_backward_data(t, logp, 1, logp.dtype)  # (softmax - onehot) / n
        keep = []  # tensors the branches read: alive until the join
        for i in range(len(self.layers) - 1, -1, -1):
            W, b = self.layers[i]
            h = hs[i]
            dprev = torch.mm(d, W.t()) if i > 0 else None  # with W before its update
            side = self.side[1 + i] if self.side else None
            if side is not None:
                forked.append(side)
            with _branch(side, main):
                b.addmv_(d.t(), self.ones, alpha=-self.lr)
                if i > 0:  # off the critical path: waits for the norms only
                    _wait(side, norms)
                    self._update_weight(W, h, d)
            if i == 0:
                _wait(main, norms)
                self._update_weight(W, h, d)
            keep.append(d)
            if dprev is not None:
                d = _act_backward(dprev, h, self.act)
        for s in forked:
            _wait(main, s)  # join: the next step reads every parameter
        del keep

    def _update_weight(self, W: torch.Tensor, h: torch.Tensor, d: torch.Tensor) -> None:
        """W <- W - lr (h^T d + L1 sign(W) + 2 L2 W), the L2 term as the GEMM's beta."""
        if self.L1_reg:
            W.add_(torch.sign(W), alpha=-self.lr * self.L1_reg)
        W.addmm_(h.t(), d, beta=self.beta, alpha=-self.lr)


@contextlib.contextmanager
def _branch(side: torch.cuda.Stream | None, main: torch.cuda.Stream | None) -> Iterator[None]:
    """Run the block on `side`, forked from `main` (both None: in place, on the current stream)."""
    if side is None or main is None:
        yield
        return
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield


def _wait(stream: torch.cuda.Stream | None, other: torch.cuda.Stream | None) -> None:
    if stream is not None and other is not None:
        stream.wait_stream(other)


def _act_(a: torch.Tensor, name: str) -> torch.Tensor:
    if name == "tanh":
        return a.tanh_()
    if name == "sigmoid":
        return a.sigmoid_()
    return a.relu_()


def _act_backward(grad: torch.Tensor, out: torch.Tensor, name: str) -> torch.Tensor:
    if name == "tanh":
        return torch.ops.aten.tanh_backward(grad, out)
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, out)
    return torch.ops.aten.threshold_backward(grad, out, 0)


class AutogradUpdate:
    """The reference cost and autograd gradients; torch.optim.SGD's update (dampening 0) with foreach ops
    on preallocated momentum buffers."""

    def __init__(self, ref: AutogradStep, params: list[torch.Tensor], bufs: list[torch.Tensor] | None,
                 cfg: TrainConfig) -> None:
        self.ref, self.params, self.bufs = ref, params, bufs
        self.bs = cfg.batch_size
        self.momentum, self.nesterov, self.weight_decay = cfg.momentum, cfg.nesterov, cfg.weight_decay
        self.amp = cfg.amp == "bf16"
        self.device_type = params[0].device.type
        self.step_fn: Callable[..., None] = self._step

    def block(self, xb: torch.Tensor, yb: torch.Tensor, nb: int, lr_of: Callable[[int], Any],
              acc: torch.Tensor) -> None:
        bs = self.bs
        for k in range(nb):
            s = slice(k * bs, (k + 1) * bs)
            self.step_fn(xb[s], yb[s], lr_of(k), acc)

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor, acc: torch.Tensor) -> None:
        with torch.enable_grad():
            if self.amp:
                with torch.autocast(self.device_type, dtype=torch.bfloat16, cache_enabled=False):
                    cost = self.ref.cost(x, y)
                cost = cost.float()
            else:
                cost = self.ref.cost(x, y)
            grads = list(torch.autograd.grad(cost, self.params))
        with torch.no_grad():
            sgd_update(self.params, grads, self.bufs, lr, self.momentum, self.nesterov, self.weight_decay)
            acc.add_(cost.detach())


def sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None,
               lr: float | torch.Tensor, momentum: float, nesterov: bool, weight_decay: float) -> None:
    """torch.optim.SGD's foreach step (dampening 0, no maximize) with zero-initialised momentum buffers
    (0 * momentum + g == g, so the first step matches the optimizer's clone). A tensor `lr` keeps the step
    size on the device, so a captured graph can follow a schedule."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum:
        assert bufs is not None
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        if nesterov:
            torch._foreach_add_(grads, bufs, alpha=momentum)
        else:
            grads = bufs
    if isinstance(lr, torch.Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
    else:
        torch._foreach_add_(params, grads, alpha=-lr)
