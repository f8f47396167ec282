"""Every accelerator falls back to a slower path that computes the same function rather than lose a run,
and says so: on stderr at once (a run's log shows it) and as a RuntimeWarning (tests can catch it)."""

from __future__ import annotations

import sys
import warnings


def warn(msg: str) -> None:
    print(f"deeptut: warning: {msg}", file=sys.stderr, flush=True)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
