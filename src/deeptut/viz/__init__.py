"""Pictures, an HTML report and a comparison table for saved runs; they read only what a run saved.

    render_all(run_dir, data=None) -> list[Path]   # PNGs (and a GIF) in RUN_DIR/plots/
    write_report(run_dir, out=None) -> Path        # self-contained RUN_DIR/report.html
    compare(run_dirs, out_dir=None) -> (table_text, png_path)
    write_samples(run_dir, data=None, seed=None, ...) -> list[Path]   # rbm runs: rbm.py's samples.png
    tile_raster_images(...)                        # the tutorials' utils.py helper, numpy only

Needs the `viz` extra (matplotlib, pillow); importing this package does not load them, calling does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from deeptut.viz.tiles import scale_to_unit_interval, tile_raster_images

__all__ = ["render_all", "write_report", "compare", "write_samples", "tile_raster_images", "scale_to_unit_interval"]


def _need_extra() -> None:
    import importlib.util

    from deeptut.errors import DeeptutError

    missing = [m for m in ("matplotlib", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        raise DeeptutError(f"pictures need {' and '.join(missing)}: pip install 'deeptut[viz]'")


def render_all(run_dir: str | Path, data: Any = None) -> list[Path]:
    _need_extra()
    from deeptut.viz.render import render_all as _render_all

    return _render_all(run_dir, data)


def write_report(run_dir: str | Path, out: str | Path | None = None, data: Any = None) -> Path:
    _need_extra()
    from deeptut.viz.report import write_report as _write_report

    return _write_report(run_dir, out, data)


def compare(run_dirs: Iterable[str | Path], out_dir: str | Path | None = None) -> tuple[str, Path]:
    _need_extra()
    from deeptut.viz.comparison import compare as _compare

    return _compare(run_dirs, out_dir)


def write_samples(run_dir: str | Path, data: Any = None, **kwargs: Any) -> list[Path]:
    """deeptut.viz.samples.write_samples: samples.png, samples.npy, samples.json in RUN_DIR/plots/."""
    _need_extra()
    from deeptut.viz.samples import write_samples as _write_samples

    return _write_samples(run_dir, data, **kwargs)
