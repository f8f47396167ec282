"""A small sweep of lenet-fast-gpu settings on a GPU (a few seconds a run): prints test error and time."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from deeptut import config  # noqa: E402
from deeptut.data.datasets import load_dataset  # noqa: E402
from deeptut.train.loop import fit  # noqa: E402

GRID = [dict(batch_size=256, n_epochs=10, learning_rate=0.3, weight_decay=5e-4),
        dict(batch_size=256, n_epochs=12, learning_rate=0.3, weight_decay=5e-4)]
SEEDS = tuple(range(1, int(sys.argv[2]) + 1)) if len(sys.argv) > 2 else (1, 2)
data = load_dataset()
deadline = time.time() + float(sys.argv[1] if len(sys.argv) > 1 else 100)
for over in GRID:
    res = []
    for seed in SEEDS:
        if time.time() > deadline:
            break
        s = fit(config.resolve("lenet-fast-gpu", overrides={**over, "seed": seed, "device": "cuda"}), data, quiet=True)
        res.append((s["test_error"], s["train_seconds"]))
    errs, secs = [e for e, _ in res], [t for _, t in res]
    print(over, [f"{e:.2f}% {t:.2f}s" for e, t in res], f"mean {sum(errs) / len(errs):.3f}% "
          f"{sum(secs) / len(secs):.2f}s", flush=True)
