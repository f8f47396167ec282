"""Launch overhead gone: whole stretches of SGD steps, and the evaluation, replayed as CUDA graphs.

The tutorials' GPU runs are launch-bound: an MLP step on a minibatch of 20 is a dozen tiny kernels, and in
plain PyTorch each costs more to launch from Python than to run. With the data resident and unshuffled,
minibatch i always lives at the same device address, so a whole stretch of steps -- up to the next
validation, typically one epoch (2,500 MLP steps) -- can be captured once in a CUDA graph and replayed with
one launch. With shuffling, each epoch's permuted copy is first copied into a fixed buffer (one device
copy per epoch); with chunked streaming (data/stream.py) the two chunk buffers are fixed addresses too.

`StretchStep` is a train step (`step(x, y, lr) -> cost`, state_dict, load_state_dict) that also runs whole
stretches: `run(split, first, count, lr_at) -> summed cost` (a device tensor: no host sync per step).
Inside, a *block function* runs n consecutive minibatches that lie in contiguous device rows; the CUDA
graph captures exactly that function, and without CUDA (or when capture fails) the same function runs
eagerly. Two kinds of step arithmetic:

* `DenseKernel` -- logistic regression and the MLP with the tutorials' plain SGD and constant step size:
  forward and backward written out with the fewest kernels. The softmax/NLL gradient is one
  `_log_softmax_backward_data` against a precomputed -onehot/n (what autograd does), and each update is
  fused into its gradient product: W <- (1 - 2 lr L2) W - lr h^T d is one in-place addmm, b <- b - lr d^T 1
  one addmv. About 14 kernels per MLP step instead of ~35. The cost (NLL + penalties) is accumulated on the
  device. Same mathematics as the autograd step; floating-point results differ by reassociation (the L2
  term folded into the GEMM's beta), ~1e-6 relative per step (the tests bound 20 steps at 1e-5).
* `AutogradKernel` -- anything else (LeNet, momentum, Nesterov, weight decay, schedules, bf16 autocast):
  the reference cost, `torch.autograd.grad`, and torch.optim.SGD's update written out with foreach ops
  (momentum buffers preallocated, so the graph can update them in place). With a constant step size it is
  bit-identical to AutogradStep (same kernels, same order); with a schedule the step size is a device
  tensor per step (an extra rounding: p - g*lr instead of p + (-lr)*g).

`cfg.compile` wraps the per-step function in torch.compile (inductor, no cudagraphs of its own) before
capture; `cfg.amp = "bf16"` autocasts the forward pass. Every CUDA path falls back, with a printed
warning, to the eager block function: a failed capture never loses the run.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn

from deeptut.config import TrainConfig
from deeptut.data import stream
from deeptut.data.device import DeviceSplit
from deeptut.train.step import AutogradStep

MAX_STRETCH = 4096  # updates per stretch (and per captured graph)
MIN_GRAPH_STEPS = 4  # shorter blocks run eagerly (capture would cost more than it saves)
MAX_GRAPHS = 24  # distinct (buffer, offset, length) graphs kept; further blocks run eagerly
_ACTIVATIONS = ("tanh", "sigmoid", "relu")


def wanted(cfg: TrainConfig, device: torch.device) -> bool:
    """Use the stretch runner? graphs=auto: on CUDA; on: everywhere (eagerly without CUDA); off: never."""
    return cfg.graphs == "on" or (cfg.graphs == "auto" and device.type == "cuda")


def _warn(msg: str) -> None:
    print(f"deeptut: warning: {msg}", file=sys.stderr, flush=True)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------
# Step arithmetic


def dense_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The (W [n_in, n_out], b [n_out]) pairs of a stack of dense layers, in forward order, or None.

    Parameters must come as (matrix, vector) pairs in registration order whose shapes chain; a matrix
    stored [n_out, n_in] (nn.Linear) is returned as a transposed view. The caller checks the forward pass
    numerically, so a model this misreads is never trained with the dense kernel."""
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


class DenseKernel:
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
        self.terms = torch.zeros(MAX_STRETCH, 2 * len(weights), device=dev)  # |W|_2 ..., |W|_1 ... per step
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
                    self._update(W, h, d)
            if i == 0:
                _wait(main, norms)
                self._update(W, h, d)
            keep.append(d)
            if dprev is not None:
                d = _act_backward(dprev, h, self.act)
        for s in forked:
            _wait(main, s)  # join: the next step reads every parameter
        del keep

    def _update(self, W: torch.Tensor, h: torch.Tensor, d: torch.Tensor) -> None:
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


class AutogradKernel:
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


# ----------------------------------------------------------------------------------------------------------
# The stretch runner


class StretchStep:
    """A train step that also runs whole stretches of updates, as CUDA graphs where it can."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.bs = cfg.batch_size
        self.ref = AutogradStep(model, cfg)  # holds the optimizer state that checkpoints save
        self.params = [p for g in self.ref.optimizer.param_groups for p in g["params"]]
        self.bufs = None
        if cfg.momentum:
            self.bufs = []
            for p in self.params:
                buf = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.ref.optimizer.state[p]["momentum_buffer"] = buf
                self.bufs.append(buf)
        self.const_lr = cfg.learning_rate if cfg.lr_schedule == "constant" else None
        self.lrs = torch.zeros(MAX_STRETCH, 4, device=device)  # step sizes of a stretch (rows 16-byte aligned)
        self.acc = torch.zeros(1, 1, device=device)  # cost summed over the stretch
        self.stats = {"graph_replays": 0, "eager_blocks": 0, "captures": 0, "home_copies": 0}
        self.kernel, self.kind = self._make_kernel()
        self.max_stretch = MAX_STRETCH
        self.use_graphs = graphs_available(device)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.warmed = False
        self.home: tuple[torch.Tensor, torch.Tensor] | None = None  # fixed buffer for shuffled epochs
        self.home_src: Any = None
        self.evaluator = GraphEvaluator(model) if self.use_graphs else None
        if cfg.compile:
            self._compile()

    # -- construction ------------------------------------------------------------------------------------

    def _make_kernel(self) -> tuple[Any, str]:
        cfg = self.cfg
        plain = (cfg.momentum == 0 and cfg.weight_decay == 0 and cfg.lr_schedule == "constant"
                 and cfg.amp == "off" and cfg.model in ("logistic", "mlp") and cfg.activation in _ACTIVATIONS)
        if plain:
            layers = dense_layers(self.model)
            weights = list(self.model.weights()) if hasattr(self.model, "weights") else None
            if layers is not None and weights is not None and \
                    {id(w) for w in weights} == {id(_base(W)) for W, _ in layers}:
                k = DenseKernel(self.model, layers, cfg, weights)
                if self._forward_matches(k):
                    return k, "dense"
        if cfg.model == "lenet":
            k = self._lenet_kernel()
            if k is not None:
                return k, "lenet-" + "-".join(k.layers)
        return AutogradKernel(self.ref, self.params, self.bufs, cfg), "autograd"

    def _lenet_kernel(self) -> Any:
        """LeNet on CUDA: the written-out step (train/lenet_step.py) with cuDNN or Triton conv-pool layers,
        as `cfg.conv` says; `auto` measures them and the autograd step (with pick_conv's convolutions) and
        keeps the fastest. None: the autograd step (also with `compile`). On CPU only `conv = "triton"`
        (Triton's interpreter, for the tests) selects it."""
        from deeptut.models import lenet_triton
        from deeptut.train import lenet_step

        cfg, dev, conv = self.cfg, self.device, self.cfg.conv
        if hasattr(self.model, "conv_triton"):
            self.model.conv_triton = (None, None)  # set below where the step uses the Triton layers
        if not lenet_step.supports(self.model, cfg) or conv == "gemm" or cfg.compile:
            return None  # (torch.compile fuses the autograd step instead)
        if conv == "triton" and not lenet_triton.available(dev):
            _warn("conv = 'triton' needs Triton and a CUDA device; using torch's convolutions")
            conv = "cudnn"
        if dev.type != "cuda" and conv != "triton":
            return None
        make = lambda layers: lenet_step.LeNetKernel(self.ref, self.params, self.bufs, cfg, self.model,  # noqa: E731
                                                     layers)
        if conv == "triton":
            layers: Any = ("triton", "triton")
            try:  # compile and run the kernels once (no update): a failure falls back to cuDNN, not mid-run
                make(layers).gradients(*self._probe_batch())
            except Exception as e:  # noqa: BLE001
                _warn(f"the Triton conv-pool kernels failed ({type(e).__name__}: {e}); using cuDNN")
                layers = ("cudnn", "cudnn")
        elif conv == "cudnn":
            layers = ("cudnn", "cudnn")
        else:  # auto: measure
            layers, self.stats["lenet_step_ms"] = lenet_step.measure(self.ref, self.params, self.bufs, cfg,
                                                                     self.model, *self._probe_batch())
            if layers == "autograd":
                return None
        self.model.conv_triton = tuple(
            ("tf32" if cfg.tf32 else "ieee") if k == "triton" else None for k in layers)
        return make(layers)

    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random minibatch (x [batch_size, n_in], y) on the device, for checks and timings."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.cfg.batch_size, self.cfg.n_in, generator=g).to(self.device)
        y = torch.randint(0, self.cfg.n_out, (self.cfg.batch_size,), generator=g).to(self.device)
        return x, y

    @torch.no_grad()
    def _forward_matches(self, k: DenseKernel) -> bool:
        g = torch.Generator().manual_seed(0)
        n_in = k.layers[0][0].shape[0]
        x = torch.rand(3, n_in, generator=g).to(self.device)
        try:
            return bool(torch.allclose(k.forward(x), self.model(x), rtol=1e-4, atol=1e-5))
        except RuntimeError:
            return False

    def _compile(self) -> None:
        if isinstance(self.kernel, DenseKernel):
            self.kernel.side = None  # one stream: what torch.compile traces
        try:
            self.kernel.step_fn = torch.compile(self.kernel._step, dynamic=False, fullgraph=False)
        except Exception as e:  # noqa: BLE001 - any failure: run uncompiled
            _warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running the step uncompiled")

    # -- the train-step interface -------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> torch.Tensor:
        """One update, eagerly (stretches too short for a graph)."""
        self.acc.zero_()
        self._block(x, y, 1, lambda k: learning_rate)
        return self.acc.view(()).clone()

    def state_dict(self) -> dict[str, Any]:
        return self.ref.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ref.load_state_dict(state)
        if self.bufs is not None:  # keep the graphs' static buffers: copy the loaded values into them
            opt_state = self.ref.optimizer.state
            for p, buf in zip(self.params, self.bufs):
                loaded = opt_state[p].get("momentum_buffer")
                if loaded is not None and loaded is not buf:
                    buf.copy_(loaded)
                opt_state[p]["momentum_buffer"] = buf

    # -- stretches ------------------------------------------------------------------------------------------

    def run(self, split: DeviceSplit | stream.StreamSplit, first: int, count: int,
            lr_at: Callable[[int], float]) -> torch.Tensor:
        """Updates on minibatches first .. first+count-1 of `split`; lr_at(k) is the step size of the k-th.
        Returns the summed cost (a device tensor)."""
        if count > MAX_STRETCH:
            raise ValueError(f"a stretch holds at most {MAX_STRETCH} updates, got {count}")
        if self.const_lr is None:  # a schedule: the step sizes go to the device once per stretch
            host = torch.tensor([[lr_at(k), 0.0, 0.0, 0.0] for k in range(count)], dtype=torch.float32)
            if self.device.type == "cuda":
                host = host.pin_memory()
            self.lrs[:count].copy_(host, non_blocking=True)
        split = self._fixed(split)
        self.acc.zero_()
        offset = 0
        for xb, yb, nb in stream.blocks(split, first, count, self.bs):
            graph = self._graph(xb, yb, nb, offset) if self.use_graphs and nb >= MIN_GRAPH_STEPS else None
            if graph is not None:
                graph.replay()
                self.stats["graph_replays"] += 1
            else:
                self._block(xb, yb, nb, self._lr_of(offset))
                self.stats["eager_blocks"] += 1
            offset += nb
        return self.acc.view(()).clone()

    def _lr_of(self, offset: int) -> Callable[[int], Any]:
        if self.const_lr is not None:
            lr = self.const_lr
            return lambda k: lr
        lrs = self.lrs
        return lambda k: lrs[offset + k, 0]

    def _block(self, xb: torch.Tensor, yb: torch.Tensor, nb: int, lr_of: Callable[[int], Any]) -> None:
        self.kernel.block(xb, yb, nb, lr_of, self.acc)

    def _fixed(self, split: DeviceSplit | stream.StreamSplit) -> DeviceSplit | stream.StreamSplit:
        """Shuffled (or augmented) resident epochs are new tensors each epoch: copy each into one fixed
        buffer, so the graphs captured on it stay valid (one device copy per epoch)."""
        if not ((self.cfg.shuffle or self.cfg.augment_shift) and self.use_graphs and isinstance(split, DeviceSplit)):
            return split
        if self.home is None or self.home[0].shape != split.x.shape:
            self.home = (torch.empty_like(split.x), torch.empty_like(split.y))
            self.home_src = None
        src = self.home_src() if self.home_src is not None else None
        if src is not split.x:
            self.home[0].copy_(split.x)
            self.home[1].copy_(split.y)
            self.home_src = weakref.ref(split.x)
            self.stats["home_copies"] += 1
        fixed = DeviceSplit.__new__(DeviceSplit)
        fixed.x, fixed.y = self.home
        return fixed

    # -- CUDA graphs --------------------------------------------------------------------------------------

    def _graph(self, xb: torch.Tensor, yb: torch.Tensor, nb: int, offset: int) -> torch.cuda.CUDAGraph | None:
        key = (xb.data_ptr(), yb.data_ptr(), nb, offset if self.const_lr is None else 0)
        g = self.graphs.get(key)
        if g is not None or not self.use_graphs:
            return g
        if len(self.graphs) >= MAX_GRAPHS:
            return None
        try:
            g = self._capture(xb, yb, nb, offset)
        except Exception as e:  # noqa: BLE001 - fall back to eager steps for the rest of the run
            self.use_graphs = False
            _warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); continuing with eager steps")
            return None
        self.graphs[key] = g
        return g

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor, nb: int, offset: int) -> torch.cuda.CUDAGraph:
        lr_of = self._lr_of(offset)
        if not self.warmed:  # first calls initialise cuBLAS/cuDNN handles, autograd, compiled code
            saved = [t.detach().clone() for t in self._state_tensors()]
            try:
                w = min(nb, 2)
                warm_up(lambda: self._block(xb[:w * self.bs], yb[:w * self.bs], w, lr_of), self.device, times=2)
            finally:  # the warm-up steps were real updates: undo them
                with torch.no_grad():
                    for t, v in zip(self._state_tensors(), saved):
                        t.copy_(v)
            self.warmed = True
        if self.pool is None:
            self.pool = new_pool()
        g = capture(lambda: self._block(xb, yb, nb, lr_of), self.pool)[0]
        self.stats["captures"] += 1
        return g

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.params, *(self.bufs or []), self.acc]


class GraphEvaluator:
    """The misclassified-example vector of a resident split, captured once per (split, n) and replayed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.broken = False
        self.pool = None

    @torch.no_grad()
    def misclassified(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        """A bool [n] tensor (valid until the next call), or None: evaluate eagerly instead."""
        if self.broken or not isinstance(split, DeviceSplit) or not graphs_available(split.x.device):
            return None
        key = (split.x.data_ptr(), split.y.data_ptr(), n, rows)
        if key not in self.graphs:
            if len(self.graphs) >= 8:
                return None
            try:
                self.graphs[key] = self._capture(split, n, rows, batch_size)
            except Exception as e:  # noqa: BLE001
                self.broken = True
                _warn(f"CUDA graph capture of the evaluation failed ({type(e).__name__}: {e}); "
                      f"evaluating eagerly")
                return None
        g, out = self.graphs[key]
        g.replay()
        return out

    def _compute(self, split: DeviceSplit, n: int, rows: int, batch_size: int) -> torch.Tensor:
        return torch.cat([self.model(x).argmax(dim=1) != y
                          for x, y in stream.row_chunks(split, n, rows, batch_size)])

    def _capture(self, split: DeviceSplit, n: int, rows: int,
                 batch_size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        warm_up(lambda: self._compute(split, n, rows, batch_size), split.x.device)
        if self.pool is None:
            self.pool = new_pool()
        return capture(lambda: self._compute(split, n, rows, batch_size), self.pool)


# The CUDA calls, in four functions (tests replace them with eager stand-ins to check the runner on CPU).


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda"


def new_pool() -> Any:
    return torch.cuda.graph_pool_handle()


def warm_up(fn: Callable[[], Any], device: torch.device, times: int = 1) -> None:
    """Run fn on a side stream, as PyTorch asks before a capture (lazy initialisation happens here)."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(times):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)


def capture(fn: Callable[[], Any], pool: Any) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture fn() into a CUDA graph (the caller has warmed it up); returns (graph, fn's result).

    First in capture mode "global" (PyTorch's default); if that fails -- e.g. a library thread making a
    call that global mode forbids -- once more in "thread_local" mode before giving up."""
    for mode in ("global", "thread_local"):
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g, pool=pool, capture_error_mode=mode):
                out = fn()
            return g, out
        except Exception as e:  # noqa: BLE001
            if mode != "global":
                raise
            _warn(f"CUDA graph capture in mode 'global' failed ({type(e).__name__}: {e}); retrying in "
                  f"mode 'thread_local'")
    raise AssertionError("unreachable")


def replay_ms(fn: Callable[[], Any], reps: int) -> float:
    """GPU milliseconds per call of fn (warmed up by the caller): `reps` calls captured in one CUDA graph and
    replayed, as a run executes them. (Timed as eager launches, Python's launch overhead -- tens of us for
    Triton's launcher -- would be measured instead of the GPU's work.) Eagerly, with a warning, where the
    capture fails."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    try:
        g, _ = capture(lambda: [fn() for _ in range(reps)], new_pool())
        g.replay()
        start.record()
        for _ in range(3):
            g.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / (3 * reps)
    except Exception as e:  # noqa: BLE001 - time eagerly instead
        _warn(f"timing without a CUDA graph ({type(e).__name__}: {e})")
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def _base(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


def stretch_length(step: Any, it: int, left_in_epoch: int, validation_frequency: int, patience: float) -> int:
    """How many updates the loop may hand a step before it must look again: 1 for an eager step; for a
    stretch step, up to the next validation, the end of the epoch or the iteration where patience runs out
    (the loop's checks then fall on the last update of the stretch, exactly where they would fire)."""
    longest = getattr(step, "max_stretch", 1)
    if longest <= 1:
        return 1
    to_validation = validation_frequency - it % validation_frequency
    to_stop = math.ceil(patience) - it + 1 if math.isfinite(patience) else left_in_epoch
    return max(1, min(longest, left_in_epoch, to_validation, to_stop))
