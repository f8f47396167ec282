"""The tutorials' early stopping: patience counted in minibatch iterations, growing geometrically.

Unlike Lightning's EarlyStopping (which counts validation checks without improvement), the tutorials keep
training until iteration `patience`, and every *significant* improvement (validation loss below
`improvement_threshold` x the best so far) pushes patience out to `iteration * patience_increase`. Any
improvement, significant or not, makes a new best model.

improvement = "mcnemar" replaces the relative threshold by a test: a new best is significant when McNemar's
exact test on the validation examples, new best against previous best (deeptut.stats), gives p < alpha
with more examples fixed than broken. The previous best's mistakes are kept in memory only (`best_wrong`);
a resumed run recomputes them from the best parameters, so the saved state is the same in both modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decision:
    improved: bool  # a new best: keep these parameters and compute the test error
    significant: bool  # the improvement was large enough to extend patience
    patience: float  # patience after this update (an iteration count)


class EarlyStopping:
    def __init__(self, patience: int, patience_increase: float = 2.0,
                 improvement_threshold: float = 0.995, improvement: str = "threshold",
                 mcnemar_alpha: float = 0.05) -> None:
        self.patience: float = patience  # iterations to look at regardless (tutorial logistic: 5000)
        self.patience_increase = patience_increase  # typical 2: wait twice as long as it took
        self.improvement_threshold = improvement_threshold  # typical 0.995: 0.5 % relative is significant
        self.improvement = improvement  # threshold | mcnemar
        self.mcnemar_alpha = mcnemar_alpha  # typical 0.05
        self.best_loss = math.inf
        self.best_iteration = -1
        self.best_wrong: np.ndarray | None = None  # mcnemar: bool [n_valid], the best model's mistakes

    @staticmethod
    def validation_frequency(n_train_batches: int, patience: int) -> int:
        """The tutorial's choice: every epoch, or twice within the initial patience if that is shorter."""
        return max(1, min(n_train_batches, patience // 2))

    def significantly_better(self, wrong: np.ndarray) -> bool:
        """McNemar's exact test of the model with mistakes `wrong` against the best so far."""
        from deeptut.stats import mcnemar_exact_p

        if self.best_wrong is None:  # nothing to compare with: the first model, as the threshold rule does
            return True
        fixed = int(np.sum(self.best_wrong & ~wrong))  # the best got these wrong, the new model right
        broken = int(np.sum(~self.best_wrong & wrong))
        return fixed > broken and mcnemar_exact_p(fixed, broken) < self.mcnemar_alpha

    def update(self, iteration: int, loss: float, wrong: np.ndarray | None = None) -> Decision:
        """Record a validation loss measured after (0-based) minibatch iteration `iteration`; `wrong` (bool
        per validation example) is needed with improvement = "mcnemar"."""
        improved = loss < self.best_loss
        if self.improvement == "mcnemar":
            if wrong is None:
                raise ValueError("improvement = 'mcnemar' needs the per-example validation mistakes")
            wrong = np.asarray(wrong, dtype=bool)
            significant = improved and self.significantly_better(wrong)
        else:
            significant = improved and loss < self.best_loss * self.improvement_threshold
        if significant:
            self.patience = max(self.patience, iteration * self.patience_increase)
        if improved:
            self.best_loss = loss
            self.best_iteration = iteration
            if wrong is not None:
                self.best_wrong = np.asarray(wrong, dtype=bool).copy()
        return Decision(improved, significant, self.patience)

    def should_stop(self, iteration: int) -> bool:
        """Checked after every minibatch, as the tutorial does (`if patience <= iter: done_looping`)."""
        return self.patience <= iteration

    def state_dict(self) -> dict[str, Any]:
        return {"patience": float(self.patience), "patience_increase": float(self.patience_increase),
                "improvement_threshold": float(self.improvement_threshold),
                "best_loss": float(self.best_loss), "best_iteration": int(self.best_iteration)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience = state["patience"]
        self.patience_increase = state["patience_increase"]
        self.improvement_threshold = state["improvement_threshold"]
        self.best_loss = state["best_loss"]
        self.best_iteration = state["best_iteration"]
