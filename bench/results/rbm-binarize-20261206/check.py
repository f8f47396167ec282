"""The ladder check of every AIS figure in this folder: each model's log Z from the paper's ladder (14,500
steps, 100 runs, seed 0; once per test protocol, whose training-image base rate differs) against its log Z
from a ladder ten times longer (145,000 steps, 20 runs, seed 1; *.long-ladder.log_likelihood.json). log Z
belongs to the model, not to the test set, so one long ladder checks both protocols' figures. Agreement:
|difference| <= 0.5 nats (issue 26 point 6). Writes check.json beside this file and prints a table."""
import json
from pathlib import Path

here = Path(__file__).resolve().parent
rows = []
for model in ("rbmfast-grey", "rbmfast-stoch", "rbm-grey", "rbm-stoch"):
    long_path = here / f"{model}.long-ladder.log_likelihood.json"
    if not long_path.exists():
        continue
    long_ = json.loads(long_path.read_text())
    assert long_["ais_steps"] == 145_000, long_path
    for protocol in ("round", "stochastic"):
        path = here / f"{model}.{protocol}.log_likelihood.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        assert r["binarize"] == protocol and r["ais_steps"] == 14_500 and r["ais_runs"] == 100, path
        diff = r["log_z"] - long_["log_z"]
        rows.append({"model": model, "test_protocol": protocol, "file": path.name,
                     "test_log_probability": r["test_log_probability"],
                     "test_log_probability_low": r["test_log_probability_low"],
                     "test_log_probability_high": r["test_log_probability_high"],
                     "log_z": r["log_z"], "log_z_long_ladder": long_["log_z"],
                     "long_ladder_file": long_path.name, "long_ladder_runs": long_["ais_runs"],
                     "difference": diff, "agree_within_0.5_nats": abs(diff) <= 0.5,
                     "test_log_probability_with_long_log_z": r["test_log_probability"] + diff,
                     "ais_seconds": r["seconds"], "long_ladder_seconds": long_["seconds"]})
(here / "check.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
print(f"{'model':14s} {'test set':10s} {'log p':>9s} {'+-3 sigma':>20s} {'log Z':>9s} {'long':>9s} {'diff':>7s} ok")
for r in rows:
    hi = r["test_log_probability_high"]
    print(f"{r['model']:14s} {r['test_protocol']:10s} {r['test_log_probability']:9.2f} "
          f"[{r['test_log_probability_low']:.2f}, {'inf' if hi is None else f'{hi:.2f}'}] {r['log_z']:9.2f} "
          f"{r['log_z_long_ladder']:9.2f} {r['difference']:+7.3f} {r['agree_within_0.5_nats']}")
