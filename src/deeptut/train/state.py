"""The state of a training run between two minibatches, and the `last` checkpoint that holds it.

A checkpoint is enough to resume exactly: model and best parameters, optimizer buffers, RNG states (torch,
numpy, python), position in the data order, early-stopping state, best scores, the stop decision and its
reason, the number of metrics lines written, the thread count, the resolved config and a fingerprint of the
data. `snapshot` takes it; store/checkpoint.py writes it as a safetensors file of tensors (RNG states
included, as integer tensors) and the JSON manifest `checkpoints/last.json` that names it (the file layout,
atomicity and SHA-256 live there). Nothing is unpickled on load, and every field is checked before anything
is restored.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import deeptut
from deeptut.config import differences as config_differences
from deeptut.errors import CheckpointError
from deeptut.train.divergence import DivergenceRule
from deeptut.store import checkpoint, tensors as store_tensors
from deeptut.store.checkpoint import CHECKPOINT_FORMAT, CKPT_DIR, MANIFEST, has_checkpoint  # noqa: F401

if TYPE_CHECKING:  # torch is imported by the functions that use it: a torch-free run (train/torchless.py)
    import torch   # writes its checkpoints through snapshot() without it
    from torch import nn

STOP_REASONS = ("n_epochs", "patience", "non-finite", "diverged")
MAX_THREADS = 256  # a hostile manifest must not make torch start thousands of threads


@dataclass
class LoopState:
    epoch: int = 0  # epochs started
    next_minibatch: int = 0  # index of the next minibatch in the current epoch (0: epoch complete)
    done: bool = False  # the stop decision was taken
    finished: bool = False  # the run wrote its summary
    stopped: str = "n_epochs"  # why the run stopped (or will stop): one of STOP_REASONS
    best_validation_loss: float = math.inf
    best_iter: int = -1  # 0-based iteration of the best validation
    test_score: float = math.nan  # test error of the best model (fraction)
    n_validations: int = 0  # = lines in metrics.jsonl
    cost_sum: Any = 0.0  # training cost summed since the last validation (float or device tensor)
    cost_count: int = 0
    elapsed_s: float = 0.0
    fault: str | None = None
    divergence: dict[str, Any] | None = None  # the divergence rule's state (train/divergence.py), or None
    best_params: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def scalar_types(cls) -> dict[str, Any]:
        """The type of each field a checkpoint's "loop" object holds, checked on load. A loop with more to
        resume (a pre-training loop's layer and phase) subclasses LoopState and adds its fields here."""
        return _SCALAR_TYPES

    def scalars(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name in self.scalar_types()}
        d["cost_sum"] = float(self.cost_sum)
        return d

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensors the loop's position needs besides the model (a subclass: a sampler's Generator state, a
        persistent Markov chain); saved as `state/<name>` in the checkpoint. LoopState has none."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Take back what `tensors` saved, checking each (CheckpointError naming `where` otherwise)."""
        if tensors:
            raise CheckpointError(f"{where}: unexpected loop tensors {sorted(tensors)[:4]}")


_SCALAR_TYPES = {"epoch": int, "next_minibatch": int, "done": bool, "finished": bool, "stopped": str,
                 "best_validation_loss": float, "best_iter": int, "test_score": float, "n_validations": int,
                 "cost_sum": float, "cost_count": int, "elapsed_s": float, "fault": (str, type(None)),
                 "divergence": (dict, type(None))}
# loop fields added later: a checkpoint without one resumes with its default (the behaviour before it)
_OPTIONAL_SCALARS = {"divergence"}
assert set(_SCALAR_TYPES) == {f.name for f in fields(LoopState)} - {"best_params"}


def seed_everything(seed: int, *, torch_too: bool = True) -> None:
    """Seed Python's, numpy's and (unless not `torch_too`: a torch-free run) torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch_too:
        import torch

        torch.manual_seed(seed)


TORCH_RNG_BYTES = 5056  # torch.get_rng_state() of the CPU generator (CPUGeneratorImplState)


def torch_seeded_rng_state(seed: int) -> np.ndarray:
    """What torch.get_rng_state() returns right after torch.manual_seed(seed), computed without torch (a
    torch-free run draws nothing from torch's generator, so this is its state at every checkpoint; a run
    resumed by torch restores it). The layout of torch's CPUGeneratorImplState: the initial seed (uint64),
    left = 1, seeded = 1 (int32 each), next = 0 (uint64), the 624 words of mt19937 seeded with the seed's
    low 32 bits (one uint64 each), then the normal-sampling cache, all zero. tests/test_torchless.py checks
    it against torch for several seeds."""
    seed %= 2**64  # torch.manual_seed(-1) takes the seed modulo 2^64
    mt = np.empty(624, np.uint64)
    v = seed & 0xFFFFFFFF
    for j in range(624):
        mt[j] = v
        v = (1812433253 * (v ^ (v >> 30)) + j + 1) & 0xFFFFFFFF
    out = np.zeros(TORCH_RNG_BYTES, np.uint8)
    head = np.array([seed], np.uint64).tobytes() + np.array([1, 1], np.int32).tobytes() + bytes(8)
    body = head + mt.tobytes()
    out[:len(body)] = np.frombuffer(body, np.uint8)
    return out


def non_finite(model: nn.Module, train_cost: float, it: int) -> str | None:
    if not math.isfinite(train_cost):
        return f"the mean training cost became {train_cost} by iteration {it + 1}"
    for name, p in model.named_parameters():
        if not bool(np.isfinite(p).all() if isinstance(p, np.ndarray) else p.isfinite().all()):
            return f"parameter {name} holds NaN or Inf at iteration {it + 1}"
    return None


def health(model: nn.Module, train_cost: float, it: int, max_cost: float = 0.0) -> tuple[str | None, str]:
    """(fault message or None, stop reason): NaN/Inf in the mean cost or the parameters, or a mean cost
    above `max_cost` (0: no limit), at the validation after 0-based iteration `it`."""
    fault = non_finite(model, train_cost, it)
    if fault:
        return fault, "non-finite"
    if max_cost and train_cost > max_cost:
        return (f"diverged: the mean training cost {train_cost:.4g} exceeds max_cost {max_cost} by iteration "
                f"{it + 1}"), "diverged"
    return None, "n_epochs"


def data_fingerprint(data: Any) -> str:
    """A cheap fingerprint of a Splits (shapes, every label, a sample of the inputs): a resumed run must
    train on the data the run started with."""
    h = hashlib.sha256()
    for split in (data.train, data.valid, data.test):
        x, y = np.asarray(split.x), np.asarray(split.y)
        h.update(repr((x.shape, str(x.dtype), y.shape, str(y.dtype))).encode())
        h.update(np.ascontiguousarray(y).tobytes())
        h.update(np.ascontiguousarray(x[::max(1, len(x) // 64)]).tobytes())
    return h.hexdigest()


# --- RNG states as tensors and plain numbers ----------------------------------------------------------


def _rng_tensors(torch_rng: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generators' states as tensors (torch's, or with `torch_rng` given, a torch-free run's: numpy
    arrays, torch's state as torch_seeded_rng_state made it) and plain numbers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], py_state[2]]}
    if torch_rng is not None:
        return {"rng/torch": torch_rng, "rng/numpy_keys": np_state[1].astype(np.int64),
                "rng/python": np.array(py_state[1], np.int64)}, meta
    import torch

    tensors = {"rng/torch": torch.get_rng_state(),
               "rng/numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
               "rng/python": torch.tensor(py_state[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors, meta


def _check_rng(tensors: dict[str, torch.Tensor], meta: Any, where: str) -> None:
    import torch

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: bad RNG state: {what}")

    t = tensors.get("rng/torch")
    if t is None or t.dtype != torch.uint8 or t.shape != torch.get_rng_state().shape:
        raise bad("torch")
    for key, n in (("rng/numpy_keys", 624), ("rng/python", 625)):
        t = tensors.get(key)
        if t is None or t.dtype != torch.int64 or t.shape != (n,) or bool((t < 0).any()) or \
                bool((t >= 2**32).any()):
            raise bad(key)
    if int(tensors["rng/python"][-1]) > 624:
        raise bad("python position")
    c = tensors.get("rng/cuda")
    if c is not None and (c.dtype != torch.uint8 or c.dim() != 1):
        raise bad("cuda")
    if not isinstance(meta, dict) or not isinstance(meta.get("numpy"), list) or len(meta["numpy"]) != 4 \
            or not isinstance(meta.get("python"), list) or len(meta["python"]) != 2:
        raise bad("layout")
    name, pos, has_gauss, gauss = meta["numpy"]
    if name != "MT19937" or type(pos) is not int or not 0 <= pos <= 624 or has_gauss not in (0, 1) \
            or type(has_gauss) is not int or type(gauss) not in (int, float):
        raise bad("numpy")
    version, gauss_next = meta["python"]
    if version != 3 or type(version) is not int or not (gauss_next is None or type(gauss_next) is float):
        raise bad("python")


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors["rng/torch"])
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(gauss)))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng/python"].tolist()), gauss_next))
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])


# --- optimizer state (split into tensors and a JSON skeleton by store/checkpoint.py) -----------------


def _stateless(opt: Any) -> bool:
    """True for an optimizer state that holds nothing a resumed run needs: {} (a hand-fused plain-SGD step)
    or a torch optimizer's without momentum and without buffers (plain SGD, e.g. the step a GPU uses for
    the same config). Either may then resume the other's checkpoint."""
    if opt == {}:
        return True
    try:
        return (set(opt) == {"state", "param_groups"} and isinstance(opt["param_groups"], list)
                and all(isinstance(g, dict) and g.get("momentum", 0) == 0 for g in opt["param_groups"])
                and all(isinstance(e, dict) and all(v is None for v in e.values()) for e in opt["state"].values()))
    except (AttributeError, TypeError):
        return False


def _as_saved(value: Any) -> Any:
    """A hyperparameter as the checkpoint's JSON holds it: tuples (Adam's betas) as lists."""
    return [_as_saved(v) for v in value] if isinstance(value, (tuple, list)) else value


def _check_optimizer(loaded: Any, fresh: dict[str, Any], params: list[torch.Tensor], where: str) -> None:
    """`loaded` must have the layout of this run's optimizer: same groups and hyperparameters (the step size
    aside, which the schedule sets), state only for its parameters, tensors of their shapes and dtypes."""
    import torch

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: optimizer state does not fit this run's optimizer ({what})")

    if not fresh:
        if loaded != {}:
            raise bad("this run's step keeps no state")
        return
    if not isinstance(loaded, dict) or set(loaded) != set(fresh):
        raise bad("keys")
    groups, fresh_groups = loaded["param_groups"], fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        raise bad("parameter groups")
    for g, f in zip(groups, fresh_groups):
        if not isinstance(g, dict) or set(g) != set(f):
            raise bad("parameter group keys")
        for k, v in f.items():
            if k == "lr":
                if type(g[k]) not in (int, float) or not math.isfinite(g[k]):
                    raise bad("learning rate")
            elif _as_saved(g[k]) != _as_saved(v) or type(_as_saved(g[k])) is not type(_as_saved(v)):
                raise bad(f"{k} is {str(g[k])[:40]}, this run's is {v}")
    ids = {i for f in fresh_groups for i in f["params"]}
    if not isinstance(loaded["state"], dict) or not set(loaded["state"]) <= ids:
        raise bad("state for unknown parameters")
    for i, entry in loaded["state"].items():
        if not isinstance(entry, dict):
            raise bad("state entry")
        p = params[i]
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                if not ((v.shape == p.shape and v.dtype == p.dtype) or (v.dim() == 0 and v.is_floating_point())):
                    raise bad(f"{k} of parameter {i} has shape {tuple(v.shape)} {v.dtype}")
            elif not (v is None or type(v) in (int, float)):
                raise bad(f"{k} of parameter {i}")


# --- saving and loading the `last` checkpoint ---------------------------------------------------------


def snapshot(model: nn.Module, step: Any, stopper: Any, s: LoopState, best_params: dict[str, torch.Tensor],
              cfg: Any, data_fp: str | None, *, torch_rng: np.ndarray | None = None,
              threads: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """The checkpoint as (safetensors bytes, manifest without its file list), taken now. A torch-free run
    (train/torchless.py: numpy parameters) gives torch's RNG state (`torch_rng`) and thread count."""
    tensors: dict[str, Any] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v
    for k, v in best_params.items():
        tensors[f"best/{k}"] = v
    for k, v in s.tensors().items():
        tensors[f"state/{k}"] = v
    optimizer = checkpoint.flatten("optimizer", step.state_dict(), tensors)
    rng_tensors, rng_meta = _rng_tensors(torch_rng)
    tensors.update(rng_tensors)
    data = store_tensors.serialize_tensors(tensors)
    manifest = {"format": CHECKPOINT_FORMAT, "deeptut": deeptut.__version__, "files": {},
                "loop": s.scalars(), "early_stopping": stopper.state_dict(), "optimizer": optimizer,
                "rng": rng_meta, "threads": threads if threads is not None else _torch_threads(),
                "config": None if cfg is None else cfg.to_dict(), "data": data_fp}
    return data, manifest


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def save_last(run_dir: Path, model: nn.Module, step: Any, stopper: Any, s: LoopState,
              best_params: dict[str, torch.Tensor], cfg: Any = None, data_fp: str | None = None) -> None:
    """Write the `last` checkpoint now (synchronously); fit writes it in the background (store.rundir.RunFiles)."""
    data, manifest = snapshot(model, step, stopper, s, best_params, cfg, data_fp)
    try:
        checkpoint.write_checkpoint(Path(run_dir) / CKPT_DIR, data, manifest, s.n_validations)
    except OSError as e:
        raise CheckpointError(f"{run_dir / CKPT_DIR}: cannot write: {e.strerror}") from None


def _max_checkpoint_bytes(model: nn.Module) -> int:
    n = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    return 8 * n + 16 * 2**20  # model, best, a few optimizer buffers per parameter, RNG, header


def check_position(s: LoopState, n_train_batches: int, n_epochs: int, where: str | Path) -> None:
    """A restored position must lie inside this run's schedule (else the loop could never end)."""
    if s.next_minibatch >= n_train_batches or s.epoch > n_epochs or (s.next_minibatch > 0 and s.epoch < 1) \
            or s.n_validations > s.epoch * n_train_batches or s.best_iter >= s.epoch * n_train_batches:
        raise CheckpointError(f"{where}: checkpoint position (epoch {s.epoch}, minibatch {s.next_minibatch}) "
                              f"does not fit this run ({n_epochs} epochs of {n_train_batches} minibatches)")


def _check_loop(loop: Any, state_type: type[LoopState], where: str) -> dict[str, Any]:
    """The manifest's loop state: every field of `state_type` (optional ones aside) of its type and range, a
    known stop reason, a divergence state the rule reads. -> loop."""
    scalar_types = state_type.scalar_types()
    if not isinstance(loop, dict) or not set(scalar_types) - _OPTIONAL_SCALARS <= set(loop) \
            or not set(loop) <= set(scalar_types):
        raise CheckpointError(f"{where}: malformed loop state")
    for k, t in scalar_types.items():
        if k not in loop:
            continue
        v = loop[k]
        ok = (type(v) in (int, float)) if t is float else (type(v) is t if isinstance(t, type)
                                                            else type(v) in t)
        if not ok or (t is int and v < (-1 if k == "best_iter" else 0)):
            raise CheckpointError(f"{where}: loop state {k} = {str(v)[:40]} is invalid")
    if loop["stopped"] not in STOP_REASONS or len(loop["fault"] or "") > 10_000:
        raise CheckpointError(f"{where}: loop state stop reason is invalid")
    if loop.get("divergence") is not None:
        try:
            DivergenceRule().load_state_dict(loop["divergence"])  # every field there and a number
        except ValueError as e:
            raise CheckpointError(f"{where}: loop state divergence: {e}") from None
    return loop


def load_last(run_dir: str | Path, model: nn.Module, step: Any, stopper: Any, cfg: Any = None,
              data_fp: str | None = None, state_type: type[LoopState] = LoopState) -> LoopState:
    """Check the `last` checkpoint of `run_dir` in full, then restore it into model, step, stopper and the
    global RNGs. Any defect is a CheckpointError raised before anything is restored. `cfg` and `data_fp`,
    when given, must match the ones the checkpoint records; `state_type` is the class of the loop's state
    (LoopState, or a subclass with more fields)."""
    import torch

    ckpt_dir = Path(run_dir) / CKPT_DIR
    where = str(ckpt_dir / MANIFEST)
    try:
        m, name, sha = checkpoint.read_manifest(run_dir)  # format and file entry checked
        # a key the checkpoint lacks was added to TrainConfig later: its default is the behaviour before it
        diff = [] if cfg is None else config_differences(m.get("config"), cfg)
        if diff:
            raise CheckpointError(f"{where}: the checkpoint was written with another config (differs in "
                                  f"{', '.join(diff[:8]) or 'layout'}) than {Path(run_dir) / 'config.json'}")
        if data_fp is not None and m.get("data") != data_fp:
            raise CheckpointError(f"{where}: the data differs from the data this run was trained on; "
                                  f"resume with the same dataset files (--data-dir)")
        threads = m.get("threads")
        if type(threads) is not int or not 1 <= threads <= MAX_THREADS:
            raise CheckpointError(f"{where}: bad thread count {str(threads)[:40]}")
        loop = _check_loop(m.get("loop"), state_type, where)
        es = m.get("early_stopping")
        fresh_es = stopper.state_dict()
        if not isinstance(es, dict) or set(es) != set(fresh_es) or \
                not all(type(es[k]) in (int, float) and not isinstance(es[k], bool) for k in es):
            raise CheckpointError(f"{where}: malformed early-stopping state")

        tensors = checkpoint.read_tensors(run_dir, name, sha, _max_checkpoint_bytes(model))
        tfile = str(ckpt_dir / name)
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
        expected = model.state_dict()
        for label, params in (("model", state), ("best", best)):
            if set(params) != set(expected) or any(params[k].shape != expected[k].shape or
                                                   params[k].dtype != expected[k].dtype for k in params):
                raise CheckpointError(f"{tfile}: {label} parameters do not match the model "
                                      f"(a checkpoint of another model?)")
        _check_rng(tensors, m.get("rng"), tfile)
        try:
            optimizer = checkpoint.unflatten(m.get("optimizer"), tensors)
        except CheckpointError as e:
            raise CheckpointError(f"{where}: {e}") from None
        fresh_optimizer = step.state_dict()
        if _stateless(optimizer) and _stateless(fresh_optimizer):
            optimizer = None  # nothing to restore (plain SGD), whichever step wrote it
        else:
            _check_optimizer(optimizer, fresh_optimizer, list(model.parameters()), where)
        s = state_type(**loop)
        s.load_tensors({k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}, tfile)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, RecursionError) as e:
        raise CheckpointError(f"{where}: malformed checkpoint: {type(e).__name__}: {str(e)[:200]}") from None

    # Everything checked: restore.
    try:
        model.load_state_dict(state)
        if optimizer is not None:
            step.load_state_dict(optimizer)
        stopper.load_state_dict(es)
        _restore_rng(tensors, m["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{where}: cannot restore: {type(e).__name__}: {str(e)[:200]}") from None
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)  # reductions depend on the thread count: continue with the same
    checkpoint.drop_other_files(run_dir, name)
    s.best_params = best
    return s
