"""The RNN-RBM's pictures and samples (rnnrbm.py's generate: a piano-roll picture and a MIDI file).

    write_sample(run_dir, seed=None)  -> [RUN_DIR/plots/sample.mid, sample.png, sample.json]
    draw(run, out_dir, data)          -> [sample.png (with its .mid), costs.png]   (`deeptut viz RUN_DIR`)

A sample is `generate_frames` frames (200) drawn from best.safetensors with a `generate_k`-step (25) Gibbs
chain per frame; the noise is a torch Generator seeded with `seed` (default: the model's sample_seed, the
stand-in for rnnrbm.py's RandomStreams). The picture is the tutorial's: time (s) across, MIDI note number
up, notes in black.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deeptut.store import files
from deeptut.store.rundir import Run

SAMPLE_MID, SAMPLE_PNG, SAMPLE_JSON, COSTS_PNG = "sample.mid", "sample.png", "sample.json", "costs.png"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    return fig


def draw_piano_roll(roll: np.ndarray, path: Path, dt: float, pitch_low: int, title: str) -> Path:
    """The tutorial's picture of a piano-roll [n_frames, n_pitches]: imshow(roll.T, origin lower, gray_r)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    extent = (0, dt * len(roll), pitch_low, pitch_low + roll.shape[1])
    ax.imshow(np.asarray(roll).T, origin="lower", aspect="auto", interpolation="nearest", cmap="gray_r",
              extent=extent, vmin=0, vmax=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI note number")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def generate(run: Run, seed: int | None = None, device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """A generated piano-roll [generate_frames, n_visible] of a saved rnnrbm run and what made it."""
    import torch

    model = run.require_trait("sampler", "sampling a piece").to(device)
    cfg = run.config
    seed = model.sample_seed if seed is None else int(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    n, k = int(cfg.get("generate_frames", 200)), int(cfg.get("generate_k", 25))
    roll = model.generate(n, k, g).cpu().numpy()
    info = {"seed": seed, "frames": n, "gibbs_steps": k, "pitch_low": int(cfg.get("pitch_low", 21)),
            "frame_seconds": float(cfg.get("frame_seconds", 0.3)), "notes_on_per_frame": float(roll.sum(1).mean())}
    return roll, info


def write_sample(run_dir: str | Path, *, seed: int | None = None, device: str = "cpu",
                 out_dir: str | Path | None = None) -> list[Path]:
    """Generate a piece from a saved rnnrbm run: sample.mid, sample.png and sample.json (seed, sizes) in
    RUN_DIR/plots/ (or out_dir). A run of another family raises rundir.WrongModelError."""
    from deeptut.data.music import roll_to_midi

    run = Run.open(run_dir)
    roll, info = generate(run, seed, device)
    out = Path(out_dir) if out_dir is not None else run.path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    mid = roll_to_midi(roll, out / SAMPLE_MID, info["frame_seconds"], info["pitch_low"])
    png = draw_piano_roll(roll, out / SAMPLE_PNG, info["frame_seconds"], info["pitch_low"],
                          f"generated piano-roll (seed {info['seed']})")
    meta = out / SAMPLE_JSON
    files.atomic_write_json(meta, info)
    return [mid, png, meta]


def draw_costs(run: Run, path: Path) -> Path:
    """The chapter's printed cost per epoch (training) and the same on the validation pieces."""
    lines = run.metrics().pretrain
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    epochs = [r["epoch"] + 1 for r in lines]
    ax.plot(epochs, [r["cost"] for r in lines], label="training (rnnrbm.py's printed cost)")
    if all(isinstance(r.get("valid_cost"), (int, float)) for r in lines):
        ax.plot(epochs, [r["valid_cost"] for r in lines], label="validation pieces")
    ax.set_xlabel("epoch")
    ax.set_ylabel("frame cross-entropy after Gibbs sampling (nats)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def draw(run: Run, out_dir: Path, data: Any = None) -> list[Path]:
    """`deeptut viz` of an rnnrbm run: a generated piece (sample.png, sample.mid) and costs.png."""
    written = [p for p in write_sample(run.path, out_dir=out_dir) if p.suffix in (".png", ".mid")]
    return written + [draw_costs(run, Path(out_dir) / COSTS_PNG)]
