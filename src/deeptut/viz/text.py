"""Numbers as the tables of `report` and `compare` print them."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)
