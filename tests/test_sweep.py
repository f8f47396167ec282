"""Sweeps on the local backend: the spec's checks and expansion, selection and report, and fault tolerance
(a killed trial process resumes from its checkpoint; Ctrl-C keeps finished trials; a rerun resumes)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import statistics

import pytest

from deeptut.cli import main
from deeptut.errors import ConfigError
from deeptut.sweep import expand, parse_spec
from sweep_helpers import (BASE, attempts, check_metrics_consistent, ledger_ids, only_sweep_dir,
                           running_with_checkpoint, start_driver, tiny_data, wait_for, write_spec)

HEAD = 'name = "t"\npreset = "logistic"\n'


@pytest.mark.parametrize("body, named", [
    ("[grid]\nlerning_rate = [0.1]\n", "[grid] lerning_rate"),
    ("[grid]\nlearning_rate = [0.1, -1.0]\n", "[grid] learning_rate"),
    ("[grid]\nbatch_size = []\n", "[grid] batch_size"),
    ("[base]\nbatch_size = \"big\"\n", "[base] batch_size"),
    ("[random]\nlearning_rate = { loguniform = [0.0, 0.1] }\n", "[random] learning_rate"),
    ("[random]\nlearning_rate = { uniform = [0.2, 0.1] }\n", "[random] learning_rate"),
    ("[random]\nn_hidden = { int = [1.5, 10] }\n", "[random] n_hidden"),
    ("[random]\nmomentum = { normal = [0, 1] }\n", "[random] momentum"),
    ("[random]\nmomentum = { uniform = [0.5, 1.5] }\n", "[random] momentum"),   # the config rejects 1.5
    ("[[configs]]\nactivation = \"softplus\"\n", "[[configs]] #1 activation"),
    ("[budget]\nhours = 2\n", "[budget] unknown key 'hours'"),
    ("[grid]\nseed = [1, 2]\n", "[grid]: 'seed'"),
    ("grd = 1\n", "unknown key 'grd'"),
])
def test_bad_specs_are_rejected_naming_the_key(tmp_path, body, named):
    with pytest.raises(ConfigError) as e:
        parse_spec(HEAD + body, "s.toml")
    assert named in str(e.value) and str(e.value).startswith("s.toml")
    # and from the command line, before anything is made
    spec = tmp_path / "s.toml"
    spec.write_text(HEAD + body)
    assert main(["sweep", str(spec), "--sweeps-dir", str(tmp_path / "sweeps")]) == 2
    assert not (tmp_path / "sweeps").exists()


def test_expansion_grid_configs_random_seeds_budget():
    spec = parse_spec(HEAD + """seeds = 3
samples = 4
[grid]
batch_size = [20, 50]
[[configs]]
L2_reg = 0.0
[[configs]]
L2_reg = 0.001
[random]
learning_rate = { loguniform = [1e-3, 1e-1] }
n_epochs = { int = [2, 4] }
momentum = { uniform = [0.1, 0.2] }
""")
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 4 * 3 and spec.seeds == [1, 2, 3]
    assert spec.swept_fields() == ["batch_size", "L2_reg", "learning_rate", "n_epochs", "momentum"]
    assert len({t["id"] for t in trials}) == len(trials)
    confs = {t["config"]: t["overrides"] for t in trials}
    assert len(confs) == 16 and all(sum(t["config"] == c for t in trials) == 3 for c in confs)
    for o in confs.values():
        assert 1e-3 <= o["learning_rate"] <= 1e-1 and 0.1 <= o["momentum"] <= 0.2
        assert isinstance(o["n_epochs"], int) and 2 <= o["n_epochs"] <= 4
    assert {t["values"]["threads"] for t in trials} == {1}  # the sweep's default
    assert {t["values"]["checkpoint_every_s"] for t in trials} == {10.0}  # likewise (BENCHMARKS.md: the fix)
    # the same spec expands the same way (the draws are seeded); 4 draws, each crossed with grid x configs
    assert expand(spec) == trials
    assert len({o["learning_rate"] for o in confs.values()}) == 4
    capped = parse_spec(HEAD + "seeds = 3\n[budget]\ntrials = 7\n[grid]\nbatch_size = [10, 20, 30, 40]\n")
    assert [t["id"] for t in expand(capped)] == [f"c00{c}-s{s}" for c in (0, 1) for s in (1, 2, 3)]


def _rows(sweep_dir):
    with open(sweep_dir / "sweep.csv") as f:
        return list(csv.DictReader(f))


def test_local_sweep_selects_on_validation_and_reports(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    spec = write_spec(tmp_path / "s.toml", BASE + "n_epochs = 4\n[grid]\nlearning_rate = [0.0001, 0.05]\n")
    code = main(["sweep", str(spec), "--data-dir", str(data), "--sweeps-dir", str(tmp_path / "sweeps"),
                 "--workers", "2"])
    out = capsys.readouterr()
    assert code == 0, out
    d = only_sweep_dir(tmp_path / "sweeps")
    rows = _rows(d)
    assert [r["trial"] for r in rows] == ["c000-s1", "c000-s2", "c001-s1", "c001-s2"]
    assert all(r["status"] == "finished" and r["attempts"] == "1" for r in rows)
    # every value in the table is the run's own summary
    runs = {r["trial"]: json.loads((d / "trials" / r["trial"] / "summary.json").read_text()) for r in rows}
    for r in rows:
        assert float(r["best_validation_error"]) == runs[r["trial"]]["best_validation_error"]
        cfg = json.loads((d / "trials" / r["trial"] / "config.json").read_text())["config"]
        assert cfg["learning_rate"] == float(r["learning_rate"]) and cfg["seed"] == int(r["seed"])
        assert cfg["n_epochs"] == 4 and cfg["threads"] == 1 and cfg["dataset"] == "idx"
        assert cfg["checkpoint_every_s"] == 10.0
    means = {c: statistics.mean(runs[f"c00{c}-s{s}"]["best_validation_error"] for s in (1, 2)) for c in (0, 1)}
    best = min(means, key=means.get)
    assert means[0] != means[1]
    sel = json.loads((d / "selection.json").read_text())
    assert sel["chosen"]["config"] == best and [r["config"] for r in sel["ranking"]][0] == best
    assert sel["chosen"]["test_mean"] == pytest.approx(
        statistics.mean(runs[f"c00{best}-s{s}"]["test_error"] for s in (1, 2)))
    # progress: one line per trial, and the bar with the time left
    assert sum(line.startswith("[") and "valid" in line for line in out.out.splitlines()) == 4
    assert "4/4 trials" in out.err and "left" in out.err
    # the summary reports the chosen configuration's test error only
    summary = (d / "summary.txt").read_text()
    assert f"selected on validation: c00{best}" in summary and summary.count("test error") == 1
    # deeptut report SWEEP_DIR: the table again and the plot
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out
    assert "selected on validation" in out and (d / "sweep.png").stat().st_size > 1000
    # rerunning a finished sweep runs nothing and counts nothing twice
    assert main(["sweep", str(d), "--data-dir", str(data)]) == 0
    assert "4 finished before, 0 to run" in capsys.readouterr().out
    assert sorted(ledger_ids(d)) == [r["trial"] for r in rows]


def test_killed_trial_resumes_and_ctrl_c_keeps_finished_trials(tmp_path):
    """One worker, three trials of ~1 s training: the first trial's process is SIGKILLed mid-run (it is
    retried and resumes from its checkpoint); then Ctrl-C (SIGINT to the driver) during a later trial; a
    rerun finishes the rest. Every trial finished exactly once."""
    data = tiny_data(tmp_path / "data")
    spec = write_spec(tmp_path / "s.toml", BASE + "n_epochs = 400\n[grid]\nlearning_rate = [0.01, 0.02, 0.03]\n",
                      seeds="[1]")
    sweeps = tmp_path / "sweeps"
    log = tmp_path / "driver.log"
    driver = start_driver([str(spec), "--data-dir", str(data), "--sweeps-dir", str(sweeps), "--workers", "1"],
                          tmp_path, log)
    try:
        d = wait_for(lambda: sweeps.exists() and any(sweeps.iterdir()) and only_sweep_dir(sweeps), 60, "sweep dir")
        tid = wait_for(lambda: running_with_checkpoint(d), 60, "a trial mid-run")
        os.kill(attempts(d, tid)[-1]["child_pid"], signal.SIGKILL)
        wait_for(lambda: tid in ledger_ids(d), 60, "the killed trial to finish")
        # Ctrl-C while a later trial runs (after its first checkpoint)
        later = wait_for(lambda: (t := running_with_checkpoint(d)) and t != tid and t, 60, "a later trial mid-run")
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in the driver's terminal
        assert driver.wait(60) == 130, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    text = log.read_text()
    assert "stopping on SIGINT" in text and "continue with: deeptut sweep" in text
    killed = attempts(d, tid)
    assert [a["mode"] for a in killed] == ["start", "resume"]
    assert "resuming" in (d / "logs" / f"{tid}.log").read_text()
    check_metrics_consistent(d / "trials" / tid)
    kept = ledger_ids(d)
    assert tid in kept and later not in kept
    assert (d / "trials" / later / "checkpoints" / "last.json").exists()
    assert not (d / "trials" / later / "summary.json").exists()
    statuses = {r["trial"]: r["status"] for r in _rows(d)}
    assert statuses[tid] == "finished" and statuses[later] == "interrupted"

    # the rerun skips finished trials and resumes the interrupted one
    assert main(["sweep", str(d), "--data-dir", str(data), "--quiet"]) == 0
    ids = ledger_ids(d)
    assert sorted(ids) == ["c000-s1", "c001-s1", "c002-s1"] and len(ids) == 3
    assert [a["mode"] for a in attempts(d, later)] == ["start", "resume"]
    assert "resuming" in (d / "logs" / f"{later}.log").read_text()
    for t in ids:
        check_metrics_consistent(d / "trials" / t)
        s = json.loads((d / "trials" / t / "summary.json").read_text())
        assert s["epochs"] == 400 and math.isfinite(s["best_validation_error"])
    assert all(r["status"] == "finished" for r in _rows(d))


def test_wall_time_budget_stops_starting_trials(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    spec = write_spec(tmp_path / "s.toml", BASE + "n_epochs = 300\n[grid]\nlearning_rate = [0.01, 0.02, 0.03]\n"
                      "[budget]\nwall_time_s = 0.5\n", seeds="[1]")
    assert main(["sweep", str(spec), "--data-dir", str(data), "--sweeps-dir", str(tmp_path / "sweeps"),
                 "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    d = only_sweep_dir(tmp_path / "sweeps")
    assert "stopping on the wall-time budget (0.5 s)" in out
    statuses = [r["status"] for r in _rows(d)]
    assert statuses[1:] == ["pending", "pending"] and statuses[0] in ("finished", "interrupted")
