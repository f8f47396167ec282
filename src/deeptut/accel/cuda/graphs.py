"""Launch overhead gone: whole spans of SGD updates, and the evaluation, replayed as CUDA graphs.

The tutorials' GPU runs are launch-bound: an MLP step on a minibatch of 20 is a dozen tiny kernels, and in
plain PyTorch each costs more to launch from Python than to run. With the data resident and unshuffled,
minibatch i always lives at the same device address, so a whole *span* of updates -- up to the next
validation, typically one epoch (2,500 MLP updates) -- can be captured once in a CUDA graph and replayed
with one launch. With shuffling, each epoch's permuted copy is first copied into a fixed buffer (one device
copy per epoch); with chunked streaming (data/stream.py) the two chunk buffers are fixed addresses too.

`GraphStep` is a train step (`step(x, y, lr) -> cost`, state_dict, load_state_dict) whose
`run(split, first, count, lr_at) -> summed cost` (a device tensor: no host sync per update) runs a whole
span. Inside, an *update* object (updates.py: `DenseUpdate`, `AutogradUpdate`; lenet_manual.py:
`LeNetManualUpdate`) runs n consecutive minibatches that lie in contiguous device rows; the CUDA graph
captures exactly that call, and without CUDA (or when capture fails) the same call runs eagerly.

`cfg.compile` wraps the per-update function in torch.compile (inductor, no cudagraphs of its own) before
capture; `cfg.amp = "bf16"` autocasts the forward pass. Every CUDA path falls back, with a printed
warning, to the eager block function: a failed capture never loses the run.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import torch
from torch import nn

from deeptut.accel.cuda.capture import capture, graphs_available, new_pool, warm_up
from deeptut.accel.cuda.lenet_conv import LeNetForward
from deeptut.accel.cuda.updates import MAX_SPAN, AutogradUpdate, DenseUpdate, dense_layers
from deeptut.accel.evaluator import ForwardEvaluator
from deeptut.accel.fallback import warn
from deeptut.config import TrainConfig
from deeptut.data import stream
from deeptut.data.device import DeviceSplit
from deeptut.models.lenet import LeNet5
from deeptut.steps import AutogradStep

MIN_GRAPH_STEPS = 4  # shorter blocks run eagerly (capture would cost more than it saves)
MAX_GRAPHS = 24  # distinct (buffer, offset, length) graphs kept; further blocks run eagerly
_ACTIVATIONS = ("tanh", "sigmoid", "relu")


def wanted(cfg: TrainConfig, device: torch.device) -> bool:
    """Use the graph step? graphs=auto: on CUDA; on: everywhere (eagerly without CUDA); off: never."""
    return cfg.graphs == "on" or (cfg.graphs == "auto" and device.type == "cuda")


# ----------------------------------------------------------------------------------------------------------
# The graph step


class GraphStep:
    """A train step whose `run` replays whole spans of updates as CUDA graphs where it can.

    `forward` is the function the reference cost goes through (default: the model; for LeNet a
    lenet_conv.LeNetForward, whose Triton choice this step sets)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.bs = cfg.batch_size
        if forward is None:
            forward = LeNetForward(model) if isinstance(model, LeNet5) else model
        self.forward = forward
        self.ref = AutogradStep(model, cfg, forward)  # holds the optimizer state that checkpoints save
        self.params = [p for g in self.ref.optimizer.param_groups for p in g["params"]]
        if hasattr(model, "finetune_parameters"):
            # SdA / DBN: the dAs' / RBMs' visible biases are parameters the supervised cost does not use
            # (the reference's SGD skips them, their gradient being None); autograd.grad would refuse them
            used = {id(p) for p in model.finetune_parameters()}
            self.params = [p for p in self.params if id(p) in used]
        self.bufs = None
        if cfg.momentum:
            self.bufs = []
            for p in self.params:
                buf = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.ref.optimizer.state[p]["momentum_buffer"] = buf
                self.bufs.append(buf)
        self.const_lr = cfg.learning_rate if cfg.lr_schedule == "constant" else None
        self.lrs = torch.zeros(MAX_SPAN, 4, device=device)  # step sizes of a span (rows 16-byte aligned)
        self.acc = torch.zeros(1, 1, device=device)  # cost summed over the span
        self.stats = {"graph_replays": 0, "eager_blocks": 0, "captures": 0, "home_copies": 0}
        self.update, self.kind = self._make_update()
        self.max_span = MAX_SPAN
        self.use_graphs = graphs_available(device)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.warmed = False
        self.home: tuple[torch.Tensor, torch.Tensor] | None = None  # fixed buffer for shuffled epochs
        self.home_src: Any = None
        eager = ForwardEvaluator(forward) if forward is not model else None  # evaluations it cannot capture
        self.evaluator = GraphEvaluator(forward, eager) if self.use_graphs else None
        if cfg.compile:
            self._compile()

    # -- construction ------------------------------------------------------------------------------------

    def _make_update(self) -> tuple[Any, str]:
        cfg = self.cfg
        plain = (cfg.momentum == 0 and cfg.weight_decay == 0 and cfg.lr_schedule == "constant"
                 and cfg.amp == "off" and cfg.net.dense and cfg.activation in _ACTIVATIONS)
        if plain:
            layers = dense_layers(self.model)
            weights = list(self.model.weights()) if hasattr(self.model, "weights") else None
            if layers is not None and weights is not None and \
                    {id(w) for w in weights} == {id(_base(W)) for W, _ in layers}:
                k = DenseUpdate(self.model, layers, cfg, weights)
                if self._forward_matches(k):
                    return k, "dense"
        if isinstance(self.model, LeNet5):
            k = self._lenet_update()
            if k is not None:
                return k, "lenet-" + "-".join(k.layers)
        return AutogradUpdate(self.ref, self.params, self.bufs, cfg), "autograd"

    def _lenet_update(self) -> Any:
        """LeNet on CUDA: the update with its backward pass written out by hand (lenet_manual.py) with cuDNN
        or Triton conv-pool layers, as `cfg.conv` says; `auto` measures them and the autograd update (with
        pick_conv's convolutions) and keeps the fastest. None: the autograd update (also with `compile`). On
        CPU only `conv = "triton"` (Triton's interpreter, for the tests) selects it."""
        from deeptut.accel.cuda import lenet_manual, lenet_triton

        cfg, dev, conv = self.cfg, self.device, self.cfg.conv
        lenet_forward = self.forward if isinstance(self.forward, LeNetForward) else None
        if lenet_forward is not None:
            lenet_forward.triton = (None, None)  # set below where the step uses the Triton layers
        if not lenet_manual.supports(self.model, cfg) or conv == "gemm" or cfg.compile:
            return None  # (torch.compile fuses the autograd step instead)
        if conv == "triton" and not lenet_triton.available(dev):
            warn("conv = 'triton' needs Triton and a CUDA device; using torch's convolutions")
            conv = "cudnn"
        if dev.type != "cuda" and conv != "triton":
            return None
        make = lambda layers: lenet_manual.LeNetManualUpdate(self.ref, self.params, self.bufs, cfg,  # noqa: E731
                                                             self.model, layers)
        if conv == "triton":
            layers: Any = ("triton", "triton")
            try:  # compile and run the kernels once (no update): a failure falls back to cuDNN, not mid-run
                make(layers).gradients(*self._probe_batch())
            except Exception as e:  # noqa: BLE001
                warn(f"the Triton conv-pool kernels failed ({type(e).__name__}: {e}); using cuDNN")
                layers = ("cudnn", "cudnn")
        elif conv == "cudnn":
            layers = ("cudnn", "cudnn")
        else:  # auto: measure
            layers, self.stats["lenet_step_ms"] = lenet_manual.measure(self.ref, self.params, self.bufs, cfg,
                                                                     self.model, *self._probe_batch())
            if layers == "autograd":
                return None
        if lenet_forward is not None:  # evaluations without gradients use the Triton layers too
            lenet_forward.triton = tuple(("tf32" if cfg.tf32 else "ieee") if k == "triton" else None
                                         for k in layers)
        return make(layers)

    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random minibatch (x [batch_size, n_in], y) on the device, for checks and timings."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.cfg.batch_size, self.cfg.n_in, generator=g).to(self.device)
        y = torch.randint(0, self.cfg.n_out, (self.cfg.batch_size,), generator=g).to(self.device)
        return x, y

    @torch.no_grad()
    def _forward_matches(self, k: DenseUpdate) -> bool:
        g = torch.Generator().manual_seed(0)
        n_in = k.layers[0][0].shape[0]
        x = torch.rand(3, n_in, generator=g).to(self.device)
        try:
            return bool(torch.allclose(k.forward(x), self.model(x), rtol=1e-4, atol=1e-5))
        except RuntimeError:
            return False

    def _compile(self) -> None:
        if isinstance(self.update, DenseUpdate):
            self.update.side = None  # one stream: what torch.compile traces
        try:
            self.update.step_fn = torch.compile(self.update._step, dynamic=False, fullgraph=False)
        except Exception as e:  # noqa: BLE001 - any failure: run uncompiled
            warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running the step uncompiled")

    # -- the train-step interface -------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> torch.Tensor:
        """One update, eagerly."""
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

    # -- spans ------------------------------------------------------------------------------------------

    def run(self, split: DeviceSplit | stream.StreamSplit, first: int, count: int,
            lr_at: Callable[[int], float]) -> torch.Tensor:
        """Updates on minibatches first .. first+count-1 of `split`; lr_at(k) is the step size of the k-th.
        Returns the summed cost (a device tensor)."""
        if count > MAX_SPAN:
            raise ValueError(f"a span holds at most {MAX_SPAN} updates, got {count}")
        if self.const_lr is None:  # a schedule: the step sizes go to the device once per span
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
        self.update.block(xb, yb, nb, lr_of, self.acc)

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
            warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); continuing with eager steps")
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
    """The misclassified-example vector of a resident split by `forward` (the model or the step's forward),
    captured once per (split, n) and replayed; what it cannot capture goes to `eager` (None: the loop
    evaluates it)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], eager: Any = None) -> None:
        self.forward, self.eager = forward, eager
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.broken = False
        self.pool = None

    @torch.no_grad()
    def misclassified(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        """A bool [n] tensor (valid until the next call), or None: evaluate eagerly instead."""
        if self.broken or not isinstance(split, DeviceSplit) or not graphs_available(split.x.device):
            return self._eagerly(split, n, rows, batch_size)
        key = (split.x.data_ptr(), split.y.data_ptr(), n, rows)
        if key not in self.graphs:
            if len(self.graphs) >= 8:
                return self._eagerly(split, n, rows, batch_size)
            try:
                self.graphs[key] = self._capture(split, n, rows, batch_size)
            except Exception as e:  # noqa: BLE001
                self.broken = True
                warn(f"CUDA graph capture of the evaluation failed ({type(e).__name__}: {e}); "
                      f"evaluating eagerly")
                return self._eagerly(split, n, rows, batch_size)
        g, out = self.graphs[key]
        g.replay()
        return out

    def _eagerly(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        return self.eager.misclassified(split, n, rows, batch_size) if self.eager is not None else None

    def _compute(self, split: DeviceSplit, n: int, rows: int, batch_size: int) -> torch.Tensor:
        return torch.cat([self.forward(x).argmax(dim=1) != y
                          for x, y in stream.row_chunks(split, n, rows, batch_size)])

    def _capture(self, split: DeviceSplit, n: int, rows: int,
                 batch_size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        warm_up(lambda: self._compute(split, n, rows, batch_size), split.x.device)
        if self.pool is None:
            self.pool = new_pool()
        return capture(lambda: self._compute(split, n, rows, batch_size), self.pool)


def _base(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


def span_length(step: Any, it: int, left_in_epoch: int, validation_frequency: int, patience: float) -> int:
    """How many updates the loop may hand `step.run` before it must look again: 1 for an eager step; for a
    graph step (`max_span` > 1), up to the next validation, the end of the epoch or the iteration where
    patience runs out (the loop's checks then fall on the last update of the span, exactly where they
    would fire)."""
    longest = getattr(step, "max_span", 1)
    if longest <= 1:
        return 1
    to_validation = validation_frequency - it % validation_frequency
    to_stop = math.ceil(patience) - it + 1 if math.isfinite(patience) else left_in_epoch
    return max(1, min(longest, left_in_epoch, to_validation, to_stop))
