"""SIGINT/SIGTERM as a flag: the one signal handler of deeptut, for the training loops (train/session.py)
and the sweep's driver (sweep/run.py).

A loop that holds an `Interrupts` looks at `signum` at its step boundaries and stops cleanly there (the
training loops write a checkpoint first; the sweep stops starting trials and interrupts the running ones).
Nothing is raised from inside the handler unless asked: with `second_raises`, a second signal raises
KeyboardInterrupt (the sweep's "stop waiting"). Imports nothing of deeptut.
"""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """`with Interrupts() as interrupt:` SIGINT/SIGTERM set `interrupt.signum` (the last one) and count in
    `interrupt.count`; the previous handlers are put back on exit. Off the main thread, where Python
    cannot install handlers, the signals are left alone (`signum` stays None)."""

    def __init__(self, *, second_raises: bool = False) -> None:
        self.signum: int | None = None
        self.count = 0  # signals received
        self.second_raises = second_raises
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        try:
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self.count += 1
        if self.second_raises and self.count > 1:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
