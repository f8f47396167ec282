"""The Python API: one call trains a preset and hands back the run, for a notebook or a script.

    import deeptut
    run = deeptut.train("lenet-fast", n_epochs=3)     # a preset (or a TrainConfig, a dict, a .toml) + overrides
    run.history                                       # one row per validation (a pandas DataFrame if installed)
    run.summary["test_error"], run.model              # the summary.json; the selected model, eval mode
    run.plot(); run.filters()                         # learning curves and filters, inline (matplotlib Figures)
    run = deeptut.load("runs/lenet-fast-20261206-101500")   # the same object for a saved run

`train` is `deeptut train PRESET --key value` exactly: the config resolved the same way (errors name the key
and "deeptut.train(...)"), the data found the same way, a new run directory under `runs_dir` (or `run_dir`,
which must not hold a run yet), and the one owner of a run, deeptut.train.runner.train. A run that fails
before its first step leaves no run directory behind (`discard_if_unstarted`, which the CLI uses too).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from deeptut import config
from deeptut.config import TrainConfig
from deeptut.errors import CheckpointError, ConfigError, DataError, DeeptutError

SOURCE = "deeptut.train(...)"  # how errors in the API's overrides say where the bad key came from


def make_config(preset_or_config: Any, overrides: dict[str, Any] | None = None,
                source: str = SOURCE) -> TrainConfig:
    """The config of `preset_or_config` with `overrides` (flat field names, Python values or strings):
    a preset name ("logistic"), a TOML file (a Path, or a str ending in .toml), a TrainConfig, or a dict
    of fields (flat, or nested as the TOML tables, as config.json holds them)."""
    overrides = dict(overrides or {})
    if isinstance(preset_or_config, TrainConfig) or isinstance(preset_or_config, dict):
        base = (preset_or_config if isinstance(preset_or_config, TrainConfig)
                else config.from_dict(preset_or_config, f"{source} config"))
        changed, _ = config._dealias({k: config._coerce(k, v, source) for k, v in overrides.items()}, source)
        return TrainConfig(**{**base.to_dict(), **changed}) if changed else base
    if isinstance(preset_or_config, Path) or (isinstance(preset_or_config, str)
                                              and preset_or_config.endswith(".toml")):
        return config.resolve(None, preset_or_config, overrides, source=source)
    if isinstance(preset_or_config, str):
        return config.resolve(preset_or_config, None, overrides, source=source)
    raise ConfigError(f"{source}: expected a preset name, a .toml file, a TrainConfig or a dict; got "
                      f"{type(preset_or_config).__name__}")


def open_run_dir(preset: str, run_dir: str | Path | None = None, runs_dir: str | Path = "runs") -> tuple[Path, bool]:
    """(the run's directory, whether it was made here): `run_dir` (made if needed; an error if it holds a
    run already, as `deeptut train --run-dir`) or a new RUNS_DIR/<preset>-<stamp>/."""
    from deeptut.store import rundir

    if run_dir is None:
        return rundir.new_run_dir(runs_dir, preset), True
    path = Path(run_dir)
    if (path / rundir.CONFIG).exists():
        raise DeeptutError(f"{path}: already holds a run (config.json); continue it with "
                           f"deeptut train --resume {path}, or deeptut.load({str(path)!r}) to read it")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot create run directory: {e.strerror}") from None
    return path, created


def started(run_dir: Path) -> bool:
    """Whether a run directory holds anything of a run's progress (a metrics line, a checkpoint, a summary)."""
    from deeptut.store import checkpoint, rundir

    return ((run_dir / rundir.METRICS).exists() or (run_dir / rundir.SUMMARY).exists()
            or any((run_dir / checkpoint.CKPT_DIR).glob("*")))


@contextlib.contextmanager
def discard_if_unstarted(run_dir: Path, created: bool) -> Iterator[None]:
    """Around a fresh run: if it fails before its first step (a batch larger than the data, no CUDA, a bad
    file), remove what it wrote: the directory if it was made for the run, else the files the start writes
    (config.json, model.json, init.safetensors), so the folder can be trained into again."""
    from deeptut.store import rundir

    try:
        yield
    except BaseException:
        if run_dir.is_dir() and not started(run_dir):
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for name in (rundir.CONFIG, rundir.MODEL_JSON, rundir.INIT):
                    (run_dir / name).unlink(missing_ok=True)
        raise


def train(preset_or_config: Any, *, data_dir: str | Path | None = None, run_dir: str | Path | None = None,
          runs_dir: str | Path = "runs", quiet: bool = False, logger: str | None = None,
          **overrides: Any) -> "RunResult":
    """Train a preset (or a config) as `deeptut train` does, and return the finished run.

    preset_or_config: a preset name ("logistic", "mlp", "lenet-fast", ...; `deeptut presets` lists them),
        a TOML file, a TrainConfig or a dict of config fields.
    **overrides: any config field by its flat name, `n_epochs=3, learning_rate=0.1, nkerns=(20, 50)`
        (what `--n_epochs 3` does on the command line); an unknown key or a wrong type is a ConfigError
        naming it.
    data_dir: the data (a folder of IDX files or a .pkl.gz); default: $DEEPTUT_DATA, the repository's
        data/, the user cache, then a download (MNIST).
    run_dir: train into this folder (made if needed; it must not hold a run yet); default: a new
        `runs_dir`/<preset>-<stamp>/.
    quiet: no per-validation lines and no progress.
    logger: "tensorboard": also RUN_DIR/tensorboard/, the scalars of metrics.jsonl and the filters
        (deeptut/viz/tracking.py; the `tensorboard` extra).
    Returns a RunResult (see `load`). Ctrl-C stops at the next step with a checkpoint (KeyboardInterrupt);
    `deeptut train --resume RUN_DIR` continues it."""
    from deeptut.train import runner

    cfg = make_config(preset_or_config, overrides)
    check_logger(logger)
    warning = busy_warning(cfg)
    if warning and not quiet:
        print(warning, file=sys.stderr)
    data = runner.load_data(cfg, data_dir)
    path, created = open_run_dir(cfg.preset, run_dir, runs_dir)
    if not quiet:
        print(f"run directory: {path}  (data: {getattr(data, 'source', cfg.dataset)})")
    with tracked(path, logger, quiet), discard_if_unstarted(path, created):
        runner.train(cfg, data, path, quiet=quiet)
    return load(path)


def busy_warning(cfg: TrainConfig) -> str | None:
    """A warning when the CPU is busy and the thread count is torch's default (threads = 0: every core), or
    None. On the 2-core machine at load ~12 (2026-12-06, bench/threads.py,
    bench/results/threads-20261206/) one epoch of mlp-fast took 5-6x longer with 2 threads or the default
    than with 1 (the same errors): spinning threads wait on each other when others hold the cores."""
    import os

    if cfg.threads != 0 or cfg.device == "cuda":
        return None
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except OSError:
        return None
    if cores > 1 and load >= cores:
        return (f"warning: the machine is busy (load {load:.1f} on {cores} cores) and threads = 0 (torch's "
                f"default: {cores} threads); on a busy machine --threads 1 (threads=1) was measured several "
                f"times faster (README: 'Threads')")
    return None


def check_logger(logger: str | None) -> None:
    """None / "none" or "tensorboard" (its package present), before anything is trained."""
    if logger in (None, "none"):
        return
    if logger != "tensorboard":
        raise ConfigError(f"logger must be one of none, tensorboard; got {logger!r}")
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise DeeptutError("logger tensorboard needs the tensorboard package: pip install 'deeptut[tensorboard]'")


@contextlib.contextmanager
def tracked(run_dir: Path, logger: str | None, quiet: bool = False) -> Iterator[None]:
    """Around a run: with logger "tensorboard", RUN_DIR/tensorboard/ written when it ends or is
    interrupted (from what it saved: deeptut/viz/tracking.py)."""
    try:
        yield
    finally:
        if logger == "tensorboard" and run_dir.is_dir() and (run_dir / "metrics.jsonl").is_file():
            from deeptut.viz.tracking import write_tensorboard

            out = write_tensorboard(run_dir)
            if not quiet:
                print(f"tensorboard: {out} (tensorboard --logdir {run_dir.parent})")


def load(run_dir: str | Path) -> "RunResult":
    """A saved run (finished, or interrupted: then `summary` is {} and the model is the best so far) as a
    RunResult: its model, history, summary and config, and its pictures."""
    from deeptut.store import rundir

    run = rundir.Run.open(run_dir)  # DataError: not a run directory
    path = run.path
    summary = run.summary() if run.has_summary() else {}
    try:
        metrics = run.metrics()
        rows = metrics.supervised or metrics.pretrain
    except DataError:
        if (path / rundir.METRICS).exists():
            raise
        rows = []  # nothing validated yet
    try:
        cfg: Any = rundir.load_config(path)
    except CheckpointError:
        cfg = run.config  # a config this deeptut would refuse: the saved dict, as written
    model = None
    if (path / rundir.BEST).is_file():
        model = rundir.load_module(path).to(_device_of(run.meta))
    return RunResult(run_dir=path, config=cfg, summary=summary, history=_table(rows), model=model)


def _device_of(meta: dict[str, Any]) -> Any:
    """The device the run trained on (config.json's "device", e.g. "cuda:0 (NVIDIA H100)"), where it exists
    here; else the CPU."""
    import torch

    name = str(meta.get("device", "cpu")).split(" ")[0]
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        return torch.device("cpu")


def _table(rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of the rows when pandas is installed, else the list of dicts."""
    try:
        import pandas
    except ImportError:
        return list(rows)
    return pandas.DataFrame(rows)


def _inline(fig: Any) -> Any:
    """A matplotlib Figure that draws itself in a notebook (IPython calls `_repr_png_`), whatever backend
    is active (deeptut's pictures use Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)

    def png() -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()

    fig._repr_png_ = png
    return fig


class Pictures(list):
    """The paths `deeptut viz` wrote (a list of Path); in a notebook it shows the PNGs."""

    def _repr_html_(self) -> str:
        import base64
        import html

        parts = []
        for p in self:
            if Path(p).suffix.lower() in (".png", ".gif"):
                mime = "image/png" if Path(p).suffix.lower() == ".png" else "image/gif"
                data = base64.b64encode(Path(p).read_bytes()).decode()
                parts.append(f'<figure style="display:inline-block;margin:4px"><img src="data:{mime};base64,'
                             f'{data}"/><figcaption>{html.escape(Path(p).name)}</figcaption></figure>')
        return "".join(parts)


@dataclass
class RunResult:
    """A run: what `deeptut.train` returns and `deeptut.load` reads back.

    run_dir   the run directory (config.json, metrics.jsonl, best.safetensors, summary.json, ...)
    config    the resolved TrainConfig (cfg.learning_rate, cfg.net, ...)
    summary   summary.json: best_validation_error and test_error in %, epochs, train_seconds, ...
    history   metrics.jsonl, one row per validation (iteration, train_cost, valid_error, test_error in %,
              ...); for a family trained without labels (dA, RBM), one row per pre-training epoch
    model     the model the run selected (best.safetensors), in eval mode, on the device it trained on
    """

    run_dir: Path
    config: Any
    summary: dict[str, Any]
    history: Any
    model: Any

    def __repr__(self) -> str:
        s = self.summary
        if s.get("best_validation_error") is not None:
            what = (f"best validation {s['best_validation_error']:.2f} %, test "
                    + (f"{s['test_error']:.2f} %" if s.get("test_error") is not None else "-"))
        elif s.get("final_cost") is not None:
            what = f"final cost {s['final_cost']}"
        else:
            what = s.get("result", "not finished")
        model = getattr(self.config, "model", None) or self.config.get("model", "?")
        return f"RunResult({str(self.run_dir)!r}, {model}: {what})"

    def _rows(self) -> list[dict[str, Any]]:
        h = self.history
        return h.to_dict("records") if hasattr(h, "to_dict") else list(h)

    def plot(self) -> Any:
        """The learning curves as a matplotlib Figure (shown inline in a notebook): the minibatch training
        cost and the validation / test error in % against the iteration; pre-training runs: the cost of
        each layer against the epoch."""
        from deeptut import viz

        viz._need_extra()
        from matplotlib.figure import Figure

        rows = self._rows()
        if not rows:
            raise DataError(f"{self.run_dir}: nothing recorded yet to draw (metrics.jsonl is empty)")
        fig = Figure(figsize=(7.0, 5.0), layout="constrained")
        title = getattr(self.config, "preset", None) or self.run_dir.name
        if "valid_error" in rows[0]:
            it = [r["iteration"] for r in rows]
            ax_c, ax_e = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.6))
            ax_c.plot(it, [_nan(r.get("train_cost")) for r in rows], color="tab:gray", lw=1.2)
            ax_c.set_ylabel("train cost (NLL)")
            ax_c.grid(alpha=0.3)
            ax_e.plot(it, [_nan(r.get("valid_error")) for r in rows], color="tab:blue", label="validation error")
            tested = [(r["iteration"], r["test_error"]) for r in rows if _finite(r.get("test_error"))]
            if tested:
                ax_e.plot(*zip(*tested), "o", ms=3.5, color="tab:orange", label="test error (on a new best)")
            ax_e.set_xlabel("iteration (minibatch updates)")
            ax_e.set_ylabel("error (%)")
            ax_e.grid(alpha=0.3)
            ax_e.legend(loc="upper right", fontsize=9)
        else:
            ax = fig.subplots()
            for layer in sorted({r["layer"] for r in rows}):
                mine = [r for r in rows if r["layer"] == layer]
                ax.plot([r["epoch"] + 1 for r in mine], [r["cost"] for r in mine], "o-", ms=3,
                        label=f"layer {layer}")
            ax.set_xlabel("pre-training epoch")
            ax.set_ylabel(str(rows[0].get("cost_kind") or "cost"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9)
        fig.suptitle(f"{title}: learning curves", fontsize=11)
        return _inline(fig)

    def filters(self) -> Any:
        """The first layer's filters (LeNet: both conv layers' kernels) of the selected model as a
        matplotlib Figure, tiled as `deeptut viz`'s filters.png."""
        from deeptut import viz

        viz._need_extra()
        from matplotlib.figure import Figure

        from deeptut.store.rundir import BEST, Run
        from deeptut.store.tensors import load_arrays
        from deeptut.viz import plots

        run = Run.open(self.run_dir)
        path = self.run_dir / BEST
        try:
            sets = plots.filter_sets(run.model, load_arrays(path), path)
        except CheckpointError as e:
            if "unknown model" in str(e):
                raise DeeptutError(f"{self.run_dir}: a {run.model} model has no filter pictures; try "
                                   f"run.pictures()") from None
            raise
        fig = Figure(figsize=(6.0 * len(sets), 6.0), layout="constrained")
        axes = fig.subplots(1, len(sets), squeeze=False)[0]
        style = (plots.FAMILIES[run.model].first_layer or ("units", ""))[0]
        for ax, (name, title, rows, img_shape, tile_shape) in zip(axes, sets):
            ax.imshow(plots.tiles_for(rows, img_shape, tile_shape), cmap="gray", interpolation="nearest")
            ax.set_title(title, fontsize=10)
            row_label, col_label, row_ticks, col_ticks = plots.tile_axes(style, name, tile_shape)
            h, w = img_shape  # tick i at the centre of tile i (1-pixel spacing)
            ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i, _ in row_ticks], [t for _, t in row_ticks], fontsize=8)
            ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j, _ in col_ticks], [t for _, t in col_ticks], fontsize=8)
            ax.set_ylabel(row_label)
            ax.set_xlabel(col_label)
        return _inline(fig)

    def pictures(self, data_dir: str | Path | None = None) -> Pictures:
        """Every picture `deeptut viz RUN_DIR` draws, written into RUN_DIR/plots/; returns their paths
        (in a notebook, shown). The test pictures read the run's data (`data_dir`, else where it trained)."""
        from deeptut import viz
        from deeptut.store.rundir import remembered_data_dir

        return Pictures(viz.render_all(self.run_dir, data_dir or remembered_data_dir(self.run_dir)))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v and abs(v) != float("inf")


def _nan(v: Any) -> float:
    return float(v) if _finite(v) else float("nan")


def small_mnist(folder: str | Path | None = None, n_train: int = 2400, n_test: int = 400,
                data_dir: str | Path | None = None) -> Path:
    """A slice of MNIST for a quick look (the notebooks with FULL = False): its first `n_train` training and
    first `n_test` test images written as the four IDX files in `folder` (default: the user cache,
    ~/.cache/deeptut/small-mnist-<n_train>-<n_test>/; made if needed, kept if already there). Train on it
    with dataset="idx", data_dir=folder (the last sixth of the training images then validate, as MNIST's
    last 10,000 of 60,000 do)."""
    import numpy as np

    from deeptut.data.datasets import IDX_FILES, cache_dir, load_dataset
    from deeptut.data.idx import write_idx

    folder = cache_dir(f"small-mnist-{n_train}-{n_test}") if folder is None else Path(folder)
    if all((folder / f).is_file() for f in IDX_FILES):
        return folder
    data = load_dataset("mnist", data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, split, n in (("train", data.train, n_train), ("t10k", data.test, n_test)):
        x = np.rint(split.x[:n] * 256).astype(np.uint8).reshape(-1, 28, 28)  # pixel / 256 back to bytes, exactly
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", split.y[:n].astype(np.uint8))
    return folder
