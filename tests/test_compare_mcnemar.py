"""`deeptut compare A B ...` prints McNemar's exact test on the runs' per-example test correctness."""

from __future__ import annotations

import numpy as np

from deeptut import stats
from deeptut.cli import main
from deeptut.data.datasets import load_dataset
from deeptut.store.rundir import load_model
from sweep_helpers import tiny_data


def _predictions(run_dir, x):
    import torch

    model, _ = load_model(run_dir)
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def test_compare_prints_mcnemar_counts_and_holm(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    runs = []
    for i, lr in enumerate(("0.0005", "0.01", "0.05")):
        d = tmp_path / f"r{i}"
        assert main(["train", "logistic", "-q", "--run-dir", str(d), "--data-dir", str(data), "--dataset", "idx",
                     "--batch_size", "20", "--n_epochs", "2", "--learning_rate", lr, "--threads", "1"]) == 0
        runs.append(d)
    capsys.readouterr()
    assert main(["compare", str(runs[0]), str(runs[1]), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "McNemar's exact test on the test examples" in out and "no correction" in out
    # the counts and p-value, recomputed here from the saved models
    test = load_dataset("idx", data).test
    ok = [_predictions(r, test.x) == test.y for r in runs]
    t = stats.mcnemar(ok[0], ok[1])
    assert t.n == 100 and t.discordant > 0
    table = out.split("McNemar's exact test")[1].splitlines()
    line = next(x for x in table if x.startswith("r0 "))
    assert line.split()[2:7] == [str(v) for v in (t.n, t.both_right, t.a_only, t.b_only, t.both_wrong)]
    assert float(line.split()[7]) == float(f"{t.p_value:.4g}")
    # three runs: three pairs, Holm-corrected
    assert main(["compare", *map(str, runs), "--data-dir", str(data), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "on the valid examples" in out and "3 pairs, Holm-corrected" in out
    pairs = [x.split() for x in out.split("McNemar's exact test")[1].splitlines() if x.startswith(("r0 ", "r1 "))]
    assert [p[:2] for p in pairs] == [["r0", "r1"], ["r0", "r2"], ["r1", "r2"]]
    raw, adjusted = [float(p[7]) for p in pairs], [float(p[8]) for p in pairs]
    assert all(a >= r for a, r in zip(adjusted, raw)) and np.all(np.array(adjusted) <= 1)
