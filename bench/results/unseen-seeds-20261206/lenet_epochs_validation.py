"""What validation alone chooses for lenet-fast's epochs from the recorded sweeps (issue 26 point 2):
bench/selection.py's rank_across (mean validation error over MNIST and Fashion-MNIST, each divided by the
best there) over (a) the candidates of the cpu-sweep-lenet-fast*.json files as recorded (5 and 6 epochs at
one thread, 07:11-07:27 UTC; 7 epochs at two threads, 07:31-07:36 UTC) and (b) 6 against 7 epochs at the
same two threads (6 epochs: cpu-fast-lenet-fast-6ep-20261128-0726.json, bench/cpu.py's runs). Test errors
are not read. Seeds 1-3 throughout."""
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(root / "bench"))
from selection import rank_across, summarize  # noqa: E402

res = root / "bench" / "results"
tables: dict = {"mnist": {}, "fashion-mnist": {}}
for name in ("cpu-sweep-lenet-fast-20261128.json", "cpu-sweep-lenet-fast-7ep-20261128.json"):
    grid = json.loads((res / name).read_text())["grid"]
    for ds in tables:
        for setting, entry in grid[ds].items():
            tables[ds][setting] = entry["runs"]


def show(title: str, t: dict) -> None:
    order = rank_across(t)
    s = {d: summarize(v) for d, v in t.items()}
    best = {d: min(s[d][k]["mean_valid"] for k in order) for d in t}
    print(title)
    for k in order:
        score = sum(s[d][k]["mean_valid"] / best[d] for d in t) / len(t)
        print(f"  {k:45s} MNIST valid {s['mnist'][k]['mean_valid']:.3f}  Fashion valid "
              f"{s['fashion-mnist'][k]['mean_valid']:.3f}  score {score:.6f}")
    print(f"  -> chosen on validation: {order[0]}")


show("(a) the cpu-sweep-lenet-fast*.json candidates as recorded", tables)
six = json.loads((res / "cpu-fast-lenet-fast-6ep-20261128-0726.json").read_text())["fast"]
two = {"mnist": {}, "fashion-mnist": {}}
for ds in two:
    two[ds]["lr 0.05, 6 ep, 2 threads"] = [{"seed": r["seed"], "valid": r["valid_error"], "test": r["test_error"],
                                            "s": r["train_seconds"], "stopped": r["stopped"], "failed": False}
                                           for r in six[f"lenet-fast on {ds}"]["runs"]]
    two[ds]["lr 0.05, 7 ep, 2 threads"] = tables[ds]["lr 0.05, 7 ep, std, relu, wd 5e-4"]
show("(b) 6 against 7 epochs, both at two threads", two)
