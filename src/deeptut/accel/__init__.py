"""The accelerators: faster ways to compute the tutorials' training step, and the one seam to them.

The tutorials' path (data/, models/, train/) never needs this package to be understood: a model is a plain
`nn.Module`, and `deeptut/steps.py`'s `AutogradStep` is the reference step (NLL + L1/L2, autograd,
torch.optim.SGD). Everything here computes the same function faster on some hardware; `train/` reaches it
only through the names below (tests/test_architecture.py checks that).

    make_train_step(model, cfg, device) -> step   the fastest step with the reference arithmetic
    make_pretrain_update(trainer, cfg, lr,        the fastest form of a layer trainer's update (models/
        device, reference) -> update                 trainers.py: by the unit's type and rule)
    span_length(step, it, ...) -> int             how many updates the loop may hand `step.run` at once
    cpu_evaluator(model) -> evaluator | None      evaluation in the arithmetic of the CPU steps
    set_threads(n), thread_counts()               torch's and numpy's BLAS thread counts
    torch_free_logistic(cfg, data, threads)       the logistic C kernel on numpy arrays, no torch imported
        -> run | None                                (cpu/torch_free.py; train/torchless.py's run)
    set_blas_threads(n)                           numpy's BLAS alone (a torch-free run)

Every step has the same interface: `step(x, y, lr) -> cost` (one minibatch), `step.run(split, first, count,
lr_at) -> summed cost` (minibatches first .. first+count-1; an eager step loops over `step(...)`),
`state_dict()` / `load_state_dict()` (the optimizer's state; checkpoints of every step are interchangeable),
and optionally `step.evaluator` (see evaluator.py) for the loop's evaluations.

Glossary
    step            one object that trains: the interface above. `AutogradStep` (deeptut/steps.py) is the
                    reference; the others compute the same function faster.
    eager step      a step that updates one minibatch per Python call (its `run` is a plain loop).
    fused update    a pre-training update (dA, SdA layer, cA with floor division, RBM, DBN layer) without
                    autograd, in buffers, at one thread (cpu/pretrain.py): `DAFusedUpdate`,
                    `CAFloorFusedUpdate`, `RBMFusedUpdate`; the dA's W update in C (cpu/csrc/pretrain_update.c).
    fused step      a CPU step with the forward, backward and update written without autograd:
                    `LogisticFusedStep`, `MLPFusedStep` (cpu/fused.py).
    nonzero pixels  the C steps and the C evaluation touch only the nonzero pixels of each image (MNIST is
                    ~81 % zeros): `MLPNonzeroPixelsStep` (cpu/nonzero_pixels.py) and the logistic one. The
                    config's `sparse` flag switches them on (with `fast_step`).
    packed split    a split's nonzero pixels stored once as (index, value) pairs for the C kernels
                    (cpu/packed.py).
    kernel          compiled code only: the C kernels (cpu/csrc/, built and loaded by cpu/ckernels.py) and
                    the Triton kernels (cuda/lenet_triton.py, cuda/tail_triton.py).
    graph step      `GraphStep` (cuda/graphs.py): `run` replays a whole *span* of updates as one CUDA graph.
    span            the consecutive updates one `step.run` call does: up to the next validation, the end
                    of the epoch or the patience limit (`span_length`), at most cuda/updates.py's `MAX_SPAN`.
    update          the arithmetic of one SGD update as a graph step runs it (cuda/updates.py):
                    `DenseUpdate` (logistic / MLP, plain SGD, fewest kernels), `AutogradUpdate` (the
                    reference cost, autograd, SGD in foreach ops), `LeNetManualUpdate` (cuda/lenet_manual.py:
                    LeNet with its backward pass written by hand, cuDNN or Triton conv-pool layers).
    forward         the function a step computes its cost and evaluations through: the model itself, or
                    `LeNetForward` (cuda/lenet_conv.py: the same function with its convolutions
                    channels-last on CPU, as matrix products, or in Triton).
    evaluator       `misclassified(split, n, rows, batch_size) -> bool [n] | None`, used by the loop's
                    `evaluate` where a step brings one (evaluator.py, cpu/evaluate.py, cuda/graphs.py).
    fallback        every accelerator falls back, with a warning, to a slower path (fallback.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from deeptut.accel.cpu.blas import set_blas_threads, set_threads, thread_counts
from deeptut.config import TrainConfig

if TYPE_CHECKING:  # torch is imported where it is used, so that the C kernels (cpu/ckernels.py) and the
    import torch   # thread counts load without it (a torch-free run: train/torchless.py)
    from torch import nn


def __getattr__(name: str) -> Any:
    if name == "cpu_evaluator":  # cpu/evaluate.py imports torch and the models: loaded when asked for
        from deeptut.accel.cpu.evaluate import cpu_evaluator

        return cpu_evaluator
    if name == "torch_free_logistic":  # the logistic C kernel on numpy arrays (cpu/torch_free.py)
        from deeptut.accel.cpu.torch_free import torch_free_logistic

        return torch_free_logistic
    raise AttributeError(f"module 'deeptut.accel' has no attribute {name!r}")

__all__ = ["make_train_step", "make_pretrain_update", "span_length", "cpu_evaluator", "set_threads", "thread_counts",
           "set_blas_threads", "torch_free_logistic"]


def make_train_step(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Any:
    """The fastest step that computes the reference arithmetic for this model and device.

    CUDA graphs (cuda/graphs.py: `GraphStep`) where wanted (graphs = auto on CUDA, or on). On CPU with
    fast_step: logistic: `LogisticFusedStep` (plain SGD; C kernel or numpy); mlp: `MLPNonzeroPixelsStep`
    (with `sparse`: plain-SGD tanh MLP in C) or `MLPFusedStep` (every optimizer setting; bit-identical to
    AutogradStep at one thread); lenet: `AutogradStep` through a channels-last `LeNetForward`. Everything
    else, or `fast_step = false`: `AutogradStep`. CPU steps with fast_step evaluate with `cpu_evaluator`.
    """
    from deeptut.accel.cpu import fused, nonzero_pixels
    from deeptut.accel.cuda import graphs
    from deeptut.accel.cuda.lenet_conv import choose_forward
    from deeptut.accel.fallback import warn
    from deeptut.models.logistic import LogisticRegression
    from deeptut.models.mlp import MLP
    from deeptut.steps import AutogradStep

    forward = choose_forward(model, cfg, device)  # LeNet: its convolutions' form; None: the model itself
    if forward is not None and cfg.conv == "triton" and not graphs.wanted(cfg, device):
        # the Triton layers run only in the graph step, which itself warns where Triton cannot run
        warn("conv = 'triton' runs in the CUDA graph step (device cuda, graphs auto/on); "
             "using torch's convolutions")
    step: Any = None
    if graphs.wanted(cfg, device):
        try:
            step = graphs.GraphStep(model, cfg, device, forward)
        except Exception as e:  # noqa: BLE001 - never lose a run to the fast path: fall back to eager steps
            warn(f"graph step unavailable ({type(e).__name__}: {e}); using eager steps")
    plain_sgd = cfg.momentum == 0 and cfg.weight_decay == 0
    on_cpu = cfg.fast_step and device.type == "cpu"
    if step is not None:
        pass
    elif on_cpu and plain_sgd and type(model) is LogisticRegression:
        step = fused.LogisticFusedStep(model, cfg, use_ckernel=cfg.sparse)
    elif on_cpu and type(model) is MLP and cfg.sparse and nonzero_pixels.supports(model, cfg, device) \
            and nonzero_pixels.available():
        step = nonzero_pixels.MLPNonzeroPixelsStep(model, cfg)
    elif on_cpu and type(model) is MLP and fused.supports(model, cfg, device):
        # one thread at the tutorial's batch of 20 (synchronising a second costs more than it saves);
        # larger batches use the run's thread count
        step = fused.MLPFusedStep(model, cfg, threads=1 if cfg.batch_size <= 32 else cfg.threads)
    else:
        step = AutogradStep(model, cfg, forward)
    if getattr(step, "evaluator", None) is None:
        if on_cpu:  # evaluate in the CPU steps' arithmetic (numpy's product for the output layer)
            from deeptut.accel.cpu.evaluate import cpu_evaluator

            step.evaluator = cpu_evaluator(model, forward, use_c=False)
        elif forward is not None:  # the step's convolutions (e.g. pick_conv's GEMMs on CUDA)
            from deeptut.accel.evaluator import ForwardEvaluator

            step.evaluator = ForwardEvaluator(forward)
    return step


def make_pretrain_update(trainer: Any, cfg: TrainConfig, lr: float, device: torch.device,
                         reference: Callable[..., Any]) -> Callable[..., Any]:
    """The fastest per-minibatch update of `layer`'s unsupervised training, with the signature of
    train/pretrain.py's `layer_update`: update(x, generator, chain, update_index) -> (cost, chain).

    `trainer` is the layer's models/trainers.py LayerTrainer (its unit, rule and the rule's options);
    `reference` is that reference update (the models' own functions). On CPU with fast_step: the dA / SdA
    layer, the cA with the tutorial's floor division and the RBM / DBN layer (plain SGD: no momentum or
    weight decay) get cpu/pretrain.py's fused updates, bit-identical to the
    reference at the same thread count, with the same random draws; at minibatches up to 32 rows they (and
    the true-division cA's reference update) run at one thread. Anything else, or fast_step = false:
    `reference`. An option the reference update gains (momentum, say) must be added to cpu/pretrain.py's
    `make_update` test of what it fuses.
    """
    if not (cfg.fast_step and device.type == "cpu"):
        return reference
    from deeptut.accel.cpu import pretrain

    return pretrain.make_update(trainer, cfg, lr, reference)


def span_length(step: Any, it: int, left_in_epoch: int, validation_frequency: int, patience: float) -> int:
    """How many updates the loop may hand `step.run` before it must look again (cuda/graphs.py)."""
    if getattr(step, "max_span", 1) <= 1:  # an eager step: one (cuda/graphs.py not imported: no torch)
        return 1
    from deeptut.accel.cuda.graphs import span_length as rule

    return rule(step, it, left_in_epoch, validation_frequency, patience)
