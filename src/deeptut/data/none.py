"""The dataset "none" ([data] dataset = "none"): for a family that needs no data (hmc samples a given energy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(cfg: Any, data_dir: str | Path | None = None) -> None:
    """No data: the procedure gets None (a --data-dir is not read)."""
    return None
