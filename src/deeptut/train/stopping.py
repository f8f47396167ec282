"""When a training loop stops, and why: decided here, in one place, for every check the tutorials' loop and
deeptut add to it.

    rules = StoppingRules(cfg, model, stopper, divergence_rule)
    stop = rules.after_span(cost, it)                 # a span of updates ended at 0-based iteration `it`
    stop = rules.at_validation(train_cost, it, lr)    # before the parameters are validated or kept
    stop = rules.after_iteration(it)                  # the tutorials' patience rule
    if stop: state.stop(stop)                         # done, its reason and (for a fault) its message

Reasons, as summary.json's "stopped" records them: "non-finite" (NaN/Inf in the cost or the parameters),
"diverged" (the mean cost above max_cost, or the divergence rule of train/divergence.py fired), "patience"
(patience <= iteration, the tutorials' rule); a run that uses its n_epochs stops with "n_epochs" by
itself, and an interrupted one (SIGINT/SIGTERM) is the session's (train/session.py Interrupts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deeptut.train import state as train_state


@dataclass(frozen=True)
class Stop:
    reason: str  # "non-finite" | "diverged" | "patience"
    fault: str | None = None  # what went wrong (None: a normal stop)


class StoppingRules:
    """The stopping decisions of one run: fault checks, the divergence rule, patience."""

    def __init__(self, cfg: Any, model: Any, stopper: Any, divergence_rule: Any = None) -> None:
        self.cfg, self.model, self.stopper, self.divergence = cfg, model, stopper, divergence_rule
        self.divergence_updated = False  # the last at_validation fed the divergence rule (its state moved)

    def after_span(self, cost: Any, it: int, epoch: int) -> Stop | None:
        """A span's summed cost (a float from the CPU steps; a device tensor elsewhere, checked at the
        validation): NaN/Inf stops at once."""
        if isinstance(cost, float) and not math.isfinite(cost):
            return Stop("non-finite", f"the training cost became {cost} at iteration {it + 1} (epoch {epoch})")
        return None

    def at_validation(self, train_cost: float, it: int, learning_rate: float) -> Stop | None:
        """Before validating: NaN/Inf in the mean cost or the parameters, the mean cost above max_cost, or
        the divergence rule (the period's mean cost far above where it started)."""
        self.divergence_updated = False
        fault, reason = train_state.health(self.model, train_cost, it, self.cfg.max_cost)
        if fault:
            return Stop(reason, fault)
        if self.divergence is not None:
            verdict = self.divergence.update(train_cost, it)
            self.divergence_updated = True
            if verdict.diverged:
                return Stop("diverged", f"{verdict.message()}, at learning rate {learning_rate:g}")
        return None

    def after_iteration(self, it: int) -> Stop | None:
        """The tutorials' rule: stop when patience <= iteration (0-based `it`)."""
        return Stop("patience") if self.stopper.should_stop(it) else None
