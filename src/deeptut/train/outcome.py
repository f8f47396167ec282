"""How a supervised run ends, and the tutorials' rules around its loop, without torch: shared by fit
(train/loop.py) and the torch-free run of the same procedure (train/torchless.py).

    learning_rate_at(cfg, it, total_steps)   the step size of update `it` ([optim] lr_schedule)
    evaluated_examples(split, ...)           how many examples the tutorial's evaluation counts
    divergence_rule(cfg, s)                  the divergence rule (train/divergence.py) with a resumed state
    run_summary(cfg, s, ...)                 summary.json
    report_end(cfg, s, summary, ...)         the tutorial's closing lines, or the fault as a TrainingError
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deeptut.config import TrainConfig
from deeptut.errors import TrainingError
from deeptut.train import divergence
from deeptut.train.state import LoopState


def learning_rate_at(cfg: TrainConfig, it: int, total_steps: int) -> float:
    """The step size for 0-based update `it` of `total_steps` (the schedule spans the n_epochs budget)."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    warm = int(cfg.warmup_fraction * total_steps) if cfg.lr_schedule == "onecycle" else 0
    if it < warm:
        return cfg.learning_rate * (it + 1) / warm
    t = (it - warm) / max(1, total_steps - warm)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def evaluated_examples(split: Any, batch_size: int, evaluation: str) -> int:
    """tutorial: whole minibatches only (9,600 of 10,000 at batch 600); full: every example."""
    return split.n_batches(batch_size) * batch_size if evaluation == "tutorial" else len(split)


def run_summary(cfg: TrainConfig, s: LoopState, n_train_batches: int, valid: Any,
                test: Any, device: Any) -> dict[str, Any]:
    """summary.json: the tutorial's result (errors in %, the best model's 1-based iteration) and its cost."""
    fired = (s.divergence or {}).get("fired")
    return {
        "best_validation_error": s.best_validation_loss * 100.,
        "test_error": s.test_score * 100. if s.best_iter >= 0 else None,
        "best_iteration": s.best_iter + 1,
        "epochs": s.epoch,
        "iterations": (s.epoch - 1) * n_train_batches + (s.next_minibatch or n_train_batches),
        "stopped": s.stopped,
        "evaluation": cfg.evaluation,
        "evaluated_examples": {"valid": evaluated_examples(valid, cfg.batch_size, cfg.evaluation),
                               "test": evaluated_examples(test, cfg.batch_size, cfg.evaluation)},
        "train_seconds": round(s.elapsed_s, 4),
        "epochs_per_second": s.epoch / s.elapsed_s if s.elapsed_s > 0 else None,
        "device": str(device),
        "fault": s.fault,
        **({"divergence": fired} if fired else {}),  # the divergence rule's figures, when it stopped the run
    }


def divergence_rule(cfg: TrainConfig, s: LoopState) -> divergence.DivergenceRule | None:
    """The rule of `cfg.divergence` (train/divergence.py), with the state a resumed run's checkpoint holds. A
    checkpoint written before the rule has none: the rule goes on from the chance level as if it had seen
    the run's validation periods (for a classifier the first period's mean rarely lies above log n_out)."""
    if cfg.divergence == "off":
        return None
    rule = divergence.DivergenceRule.for_classes(cfg.n_out) if cfg.n_out >= 2 else divergence.DivergenceRule()
    if s.divergence is not None:
        rule.load_state_dict(s.divergence)
    elif rule.reference is not None:
        rule.periods = s.n_validations
    return rule


def report_end(cfg: TrainConfig, s: LoopState, summary: dict[str, Any], run_dir: Path | None,
               say: Any) -> dict[str, Any]:
    """After the run directory is finished: the tutorial's closing lines (-> summary), or the fault it
    stopped on as a TrainingError carrying the summary, with what to try."""
    if s.fault:
        best = (f"validation {s.best_validation_loss * 100.:f} %" if s.best_iter >= 0 else
                "none validated yet: the initial ones")
        error = TrainingError(f"{s.fault}; stopped. The best parameters so far ({best}) are kept"
                              + (f" in {Path(run_dir) / 'best.safetensors'}" if run_dir is not None else "")
                              + fault_hint(cfg, s.stopped))
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    say(f"Optimization complete with best validation score of {s.best_validation_loss * 100.:f} %, "
        f"with test performance {s.test_score * 100.:f} % (obtained at iteration {s.best_iter + 1}; "
        f"{cfg.evaluation} evaluation on {summary['evaluated_examples']['test']} test examples)")
    say(f"The code run for {s.epoch} epochs, with {summary['epochs_per_second']:f} epochs/sec "
        f"({s.elapsed_s:.2f} s of training)")
    return summary


def fault_hint(cfg: TrainConfig, stopped: str) -> str:
    """What to try after a run stopped on its cost (the CLI prints it with the error)."""
    if stopped == "diverged":
        return f". {divergence.hint(cfg.learning_rate)}"
    if stopped == "non-finite":
        return f". If the inputs are finite, {divergence.hint(cfg.learning_rate)}"
    return ""
