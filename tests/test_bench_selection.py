"""bench/selection.py: the sweep scripts choose by mean validation error, never by test error."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


selection = _load("selection")


def runs(valid, test, s=1.5):
    return [{"seed": i + 1, "valid": v, "test": t, "s": s} for i, (v, t) in enumerate(zip(valid, test))]


# Hand-made: "b" has the best mean test error (0.70) but the worst validation; "a" the best validation
# (0.80) and a middling test error; "c" in between on both.
TABLE = {
    "a": runs([0.79, 0.81, 0.80], [0.90, 0.86, 0.88]),
    "b": runs([0.90, 0.92, 0.88], [0.70, 0.69, 0.71]),
    "c": runs([0.84, 0.86, 0.85], [0.80, 0.80, 0.80]),
}


def test_chooses_best_validation_not_best_test():
    assert selection.choose(TABLE) == "a"
    assert selection.rank(TABLE) == ["a", "c", "b"]
    # the test errors alone would have picked "b": the table is a real trap for a test-error ranking
    assert min(TABLE, key=lambda k: sum(r["test"] for r in TABLE[k])) == "b"


def test_test_errors_do_not_change_the_choice():
    # swap every test error for its negative or a huge number: the ranking must not move
    for f in (lambda t: -t, lambda t: 100.0 + t, lambda t: math.nan):
        changed = {k: [{**r, "test": f(r["test"])} for r in rs] for k, rs in TABLE.items()}
        assert selection.rank(changed) == ["a", "c", "b"]
    assert "test" not in str(selection.summarize(TABLE))  # nothing test-derived in what the ranking sees


def test_report_prints_test_only_for_the_chosen():
    chosen, lines = selection.report(TABLE)
    assert chosen == "a"
    test_lines = [line for line in lines if "test" in line]
    assert len(test_lines) == 1 and test_lines[0].startswith("chosen by mean validation error: a")
    assert "0.880 %" in test_lines[0]  # mean of a's tests: (0.90 + 0.86 + 0.88) / 3
    assert "0.69" not in "\n".join(lines)  # b's test errors are never shown


def test_time_budget_incomplete_and_nonfinite_settings_are_not_ranked():
    table = {**TABLE,
             "fast but slow": runs([0.50, 0.50, 0.50], [0.5, 0.5, 0.5], s=2.5),  # best valid, over 2 s
             "cut short": runs([0.40, 0.40], [0.4, 0.4]),  # 2 seeds where the others have 3
             "diverged": runs([math.inf, 0.3, 0.3], [90.0, 0.3, 0.3])}
    assert selection.choose(table) == "fast but slow"  # no budget given
    assert selection.rank(table, max_seconds=2.0) == ["a", "c", "b"]
    chosen, lines = selection.report(table, max_seconds=2.0)
    assert chosen == "a" and sum("not ranked" in line for line in lines) == 3
    with pytest.raises(ValueError, match="no eligible setting"):
        selection.choose({"x": runs([0.5], [0.5], s=3.0)}, max_seconds=2.0)


def test_a_setting_that_diverged_at_any_seed_is_not_ranked():
    # "lucky" has the best validation mean even counting its diverged seed's kept (early) parameters, but one
    # seed failed: a fast preset must not diverge at any seed, so it is not eligible
    lucky = runs([0.50, 0.52, 0.60], [0.5, 0.5, 0.6])
    lucky[2] = {**lucky[2], "failed": True, "stopped": "diverged"}
    table = {**TABLE, "lucky": lucky}
    assert selection.rank(table) == ["a", "c", "b"]
    chosen, lines = selection.report(table)
    assert chosen == "a" and any("lucky" in line and "1 failed run" in line for line in lines)
    # summary.json's own `stopped` marks a failure too, without the scripts' flag
    lucky[2] = {**lucky[2], "failed": False, "stopped": "non-finite"}
    assert selection.choose({**TABLE, "lucky": lucky}) == "a"
    lucky[2] = {**lucky[2], "stopped": "patience"}
    assert selection.choose({**TABLE, "lucky": lucky}) == "lucky"


def test_ties_broken_by_name_and_missing_valid_named():
    assert selection.choose({"z": runs([1.0], [0.1]), "y": runs([1.0], [0.9])}) == "y"
    with pytest.raises(KeyError, match="setting 'x'"):
        selection.rank({"x": [{"seed": 1, "test": 0.5}]})


@pytest.mark.parametrize("script", ["gpu_sweep.py", "gpu_lenet.py", "cpu.py", "gpu.py", "cpu_scaling.py",
                                    "mcnemar_rule.py"])
def test_bench_scripts_start(script):
    # --help imports the script (and bench/selection.py where it uses it) without training anything
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout


def test_gpu_sweep_chooses_by_validation_on_tiny_runs(tmp_path, monkeypatch):
    """bench/gpu_sweep.py end to end with its training replaced by scripted summaries: the setting with the
    best mean validation error is chosen (not the one with the best test error), a setting that diverged at
    one seed is not, and every run's figures are kept in the JSON as the runs gave them."""
    sweep = _load("gpu_sweep")
    grid = {"best valid": {"learning_rate": 0.01}, "best test": {"learning_rate": 0.02},
            "diverges": {"learning_rate": 0.03}}
    monkeypatch.setitem(sweep.GRIDS, "lenet-fast", grid)
    from deeptut.errors import TrainingError
    from deeptut.train import loop

    def fake_fit(cfg, data, quiet=False, **kw):
        v, t = {0.01: (1.0, 0.9), 0.02: (1.2, 0.5), 0.03: (0.1, 0.1)}[cfg.learning_rate]
        s = {"best_validation_error": v + cfg.seed / 100, "test_error": t, "train_seconds": 0.5,
             "stopped": "n_epochs"}
        if cfg.learning_rate == 0.03 and cfg.seed == 2:
            e = TrainingError("diverged")
            e.summary = {**s, "stopped": "diverged"}
            raise e
        return s

    monkeypatch.setattr(loop, "fit", fake_fit)
    out = tmp_path / "sweep.json"
    assert sweep.main(["--preset", "lenet-fast", "--device", "cpu", "--quick", "--seeds", "2",
                       "--datasets", "mnist", "--out", str(out)]) == 0
    import json
    res = json.loads(out.read_text())
    assert res["chosen"] == "best valid"
    runs = res["grid"]["mnist"]
    assert [r["valid"] for r in runs["best valid"]["runs"]] == [1.01, 1.02]
    assert [r["test"] for r in runs["best test"]["runs"]] == [0.5, 0.5]
    assert [r["failed"] for r in runs["diverges"]["runs"]] == [False, True]
    assert res["summary"]["mnist"]["best valid"]["mean_valid"] == pytest.approx(1.015)


def test_rank_across_datasets_weighs_each_dataset_equally_and_drops_failures():
    # "m" is best on the small-error set, "f" on the large-error one; by absolute errors "f" would win on
    # the 10 % set alone (a 0.5-point lead there against 0.2 points); relative to each set's best, "m" wins
    mnist = {"m": runs([0.60] * 3, [9.0] * 3), "f": runs([0.80] * 3, [7.777] * 3), "x": runs([0.50] * 3, [0.5] * 3)}
    fashion = {"m": runs([9.5] * 3, [1.0] * 3), "f": runs([9.0] * 3, [7.777] * 3),
               "x": runs([8.0, 8.0], [1.0] * 2) + [{"seed": 3, "valid": 50.0, "test": 50.0, "failed": True}]}
    order = selection.rank_across({"mnist": mnist, "fashion": fashion})
    assert order == ["m", "f"]  # x diverged at one seed of one dataset: out, however good elsewhere
    # 0.6/0.6 and 9.5/9.0 -> 1.028; 0.8/0.6 and 9.0/9.0 -> 1.167
    chosen, lines = selection.report_across({"mnist": mnist, "fashion": fashion})
    assert chosen == "m"
    tests = [ln for ln in lines if "test" in ln and "chosen" in ln]
    assert len(tests) == 2 and all(" m:" in ln for ln in tests)
    assert not any("7.77" in ln for ln in lines)  # no test figure of another setting


def test_rank_across_empty_when_nothing_is_eligible_everywhere():
    a = {"s": runs([1.0] * 2, [1.0] * 2)}
    b = {"s": runs([1.0], [1.0]) + [{"seed": 2, "valid": 90.0, "test": 90.0, "stopped": "diverged"}]}
    assert selection.rank_across({"a": a, "b": b}) == []
    assert selection.report_across({"a": a, "b": b})[0] is None
