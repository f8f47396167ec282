"""Divergence caught by default: a small stateful rule, checked once per validation period.

The rule fires when
  * the mean training cost of a period is not finite (nan or inf), or
  * it rises above `threshold = max(factor * reference, reference + margin)`.

`reference` is where the cost started. For a classifier it is first the chance-level NLL, log(n_out): the
cost of predicting every class with probability 1/n_out, which is where every tutorial network starts
(logistic regression's zero weights give exactly log 10 = 2.303; the MLP's and LeNet's small random weights
give ~2.30-2.35). After the first period that does not fire, the reference becomes max(reference, that
period's mean), so a cost that carries a large penalty term (L1/L2 in the cost) is judged against its own
start. Without a chance level (a reconstruction cost) the first period's mean is the reference and only a
non-finite cost can fire in the first period.

Why factor 4 (threshold 9.21 for 10 classes): a mean NLL of 9.2 means the true class gets, on geometric
average, probability e^-9.2 ~ 1e-4, a thousand times below guessing: confident and wrong, which SGD only
reaches by diverging. The period means measured on MNIST (tests/test_divergence.py holds them with their
provenance) stay below log 10, where the networks start: logistic's whole published run at most 0.94, the
first epochs of mlp 0.72 and lenet 0.92, the whole runs of lenet-fast 0.39 and mlp-fast 0.90; so the rule
has a margin of ~10x over them. The diverging `lenet-fast --dataset fashion-mnist` runs average 58.8-84
over their first epoch (the first validation period): 6-9x the threshold, so the rule fires at the end of
the first epoch. mlp-fast on Fashion-MNIST blows up at its one-cycle peak and is caught too: its 16-epoch
run at epoch 5 (means 0.91, 0.64, 0.65, 7.7, 14.8; valid 18.2 % -> 46.5 %), where today it recovers to the
issue's 14.4 % as the rate anneals. 4 is also the factor of the learning-rate range test's stop
(train/lr_find.py, after Leslie Smith / fastai).
`margin` (in nats, default 2) keeps the threshold a useful distance above a reference near zero (2 classes:
log 2 = 0.69, threshold max(2.77, 2.69)).

The rule counts validation periods, not epochs: the loop calls `update` with the mean minibatch cost since
the previous call (the `train_cost` of metrics.jsonl) and the 0-based iteration of the last minibatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DivergenceDecision:
    diverged: bool  # stop: keep the best parameters so far, record `stopped = "diverged"`
    reason: str  # "" | "non-finite" | "cost-rise"
    mean_cost: float  # this period's mean training cost (nats)
    reference: float  # where the cost started (nan before the first period without a chance level)
    threshold: float  # the mean cost above which the rule fires (nan while unknown)
    ratio: float  # mean_cost / reference (nan where undefined)
    iteration: int  # 0-based minibatch iteration of the period's last update

    def figures(self) -> dict[str, Any]:
        """For summary.json: plain JSON (non-finite numbers as null, `reason` says which)."""
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None
        return {"reason": self.reason, "mean_cost": num(self.mean_cost), "reference": num(self.reference),
                "threshold": num(self.threshold), "ratio": num(self.ratio), "iteration": int(self.iteration)}

    def message(self) -> str:
        """One line for the console."""
        if not self.diverged:
            return f"cost {self.mean_cost:.4g} at iteration {self.iteration} (threshold {self.threshold:.4g})"
        if self.reason == "non-finite":
            return f"training diverged: the mean training cost became {self.mean_cost} at iteration " \
                   f"{self.iteration}"
        return f"training diverged: mean training cost {self.mean_cost:.4g} at iteration {self.iteration} " \
               f"is {self.ratio:.1f}x where it started ({self.reference:.4g}; threshold {self.threshold:.4g})"


def hint(learning_rate: float) -> str:
    """The console's advice after a divergence: half the rate (lenet-fast's 0.2 -> 0.1)."""
    return f"the learning rate {learning_rate:g} is too high for this data: try --learning_rate " \
           f"{learning_rate / 2:g}, `deeptut lr-find`, or --divergence off to train on regardless"


class DivergenceRule:
    def __init__(self, chance_cost: float | None = None, factor: float = 4.0, margin: float = 2.0) -> None:
        if not factor > 1.0:
            raise ValueError(f"divergence factor must be > 1, got {factor}")
        if not margin >= 0.0:
            raise ValueError(f"divergence margin must be >= 0, got {margin}")
        if chance_cost is not None and not (math.isfinite(chance_cost) and chance_cost >= 0):
            raise ValueError(f"chance_cost must be a finite cost >= 0, got {chance_cost}")
        self.factor = float(factor)  # typical 4: see the module docstring
        self.margin = float(margin)  # nats; typical 2
        self.reference: float | None = None if chance_cost is None else float(chance_cost)
        self.periods = 0  # periods seen without firing
        self.fired: dict[str, Any] | None = None  # the firing decision's figures, once it fired

    @classmethod
    def for_classes(cls, n_out: int, factor: float = 4.0, margin: float = 2.0) -> "DivergenceRule":
        """The rule for a softmax classifier's NLL: reference log(n_out) (10 classes: 2.303, threshold
        9.21)."""
        if n_out < 2:
            raise ValueError(f"n_out must be >= 2 for a chance-level cost, got {n_out}")
        return cls(math.log(n_out), factor, margin)

    @property
    def threshold(self) -> float:
        if self.reference is None:
            return math.nan
        return max(self.factor * self.reference, self.reference + self.margin)

    def update(self, mean_cost: float, iteration: int) -> DivergenceDecision:
        """Judge one validation period's mean training cost (nats), ending at 0-based `iteration`."""
        mean_cost = float(mean_cost)
        ref = math.nan if self.reference is None else self.reference
        threshold = self.threshold
        if not math.isfinite(mean_cost):
            reason = "non-finite"
        elif self.reference is not None and mean_cost > threshold:
            reason = "cost-rise"
        else:
            reason = ""
        ratio = mean_cost / ref if math.isfinite(ref) and ref > 0 and math.isfinite(mean_cost) else math.nan
        decision = DivergenceDecision(bool(reason), reason, mean_cost, ref, threshold, ratio, int(iteration))
        if reason:
            self.fired = decision.figures()
        else:
            if self.periods == 0:  # the first period's mean is where a penalised cost starts
                self.reference = mean_cost if self.reference is None else max(self.reference, mean_cost)
            self.periods += 1
        return decision

    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "margin": self.margin, "reference": self.reference,
                "periods": self.periods, "fired": None if self.fired is None else dict(self.fired)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.factor = float(state["factor"])
            self.margin = float(state["margin"])
            self.reference = None if state["reference"] is None else float(state["reference"])
            self.periods = int(state["periods"])
            self.fired = None if state["fired"] is None else dict(state["fired"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"divergence rule state: bad or missing field ({e!r})") from e
