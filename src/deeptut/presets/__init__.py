"""The presets (one TOML file each, read by deeptut/config.py) and what `deeptut presets` says about them.

ABOUT holds, per preset, its kind (tutorial: reproduces a tutorial script; fast: the same network trained
the modern way), what it is for, and its published or measured result with the machine, as README.md's
"Presets and speed" and BENCHMARKS.md give them. A preset missing from ABOUT is listed with "no figure yet".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

CPU = "2-core EPYC CPU"  # BENCHMARKS.md: 2-core AMD EPYC (KVM, AVX-512), 2026-11-26
H200 = "H200"  # BENCHMARKS.md: one NVIDIA H200, 2026-11-26 and 2026-11-28
XEON = "2-core Xeon CPU"  # BENCHMARKS.md: 2-core Intel Xeon (KVM, AVX-512), shared, 2026-11-28
MACHINES = ("machines (BENCHMARKS.md): 2-core AMD EPYC (KVM, AVX-512), 2026-11-26; "
            "one NVIDIA H200, 2026-11-26 and -28; "
            "2-core Intel Xeon (KVM, AVX-512), shared with other work, 2026-11-28")

# name -> (kind, what it is for, result with the machine)
ABOUT: dict[str, tuple[str, str, str]] = {
    "logistic": ("tutorial", "logistic_sgd.py exactly",
                 "published 7.500000 % valid / 7.489583 % test, 74 epochs; reproduced bit for bit (CPU and GPU)"),
    "mlp": ("tutorial", "mlp.py exactly (784-500-10 tanh, batch 20)",
            f"published 1.69 % / 1.65 %; {H200}: the same, full run 107 s"),
    "lenet": ("tutorial", "convolutional_mlp.py (20/50 kernels, batch 500, 200 epochs)",
              f"published 0.91 % / 0.92 %; {H200}: 0.92 % / 0.94 % in 16.4 s (IEEE float32)"),
    "mlp-fast": ("fast", "mlp.py's layer sizes with ReLU in ~25 s on a CPU (standardised inputs, Nesterov, "
                 "one-cycle peaking at 0.1, 24 epochs, moves of 1 px)",
                 f"{XEON}: MNIST 0.98 %, Fashion-MNIST 10.69 % test in 23-29 s (3 seeds each, 2 threads)"),
    "lenet-fast": ("fast", "LeNet's layer sizes with ReLU in ~45 s on a CPU (standardised inputs, peak 0.05, "
                   "7 epochs, moves of 1 px)",
                   f"{XEON}: MNIST 0.52 %, Fashion-MNIST 8.72 % test in 46 s (3 seeds each, 2 threads)"),
    "lenet-fast-gpu": ("fast", "a wider LeNet (32/64 kernels, ReLU) with a GPU's budget (16 epochs, batch 256, "
                       "TF32, standardised inputs, moves of 1 px)",
                       f"{H200}: MNIST 0.45 %, Fashion-MNIST 7.66 % test in 1.4 s (3 seeds each, TF32)"),
    "da": ("tutorial", "dA.py (500 hidden, batch 20, 15 epochs, corruption 0.3)",
           f"pictures only (the chapter's filters); {XEON}: 145 s at load ~9 (--threads 1)"),
    "ca": ("tutorial", "cA.py (500 hidden, batch 10, 20 epochs, contraction 0.1, its floor division)",
           "pictures only (the chapter's cae_filters.png)"),
    "sda": ("tutorial", "SdA.py (3 x 1000, batch 1, 15 pre-training epochs a layer, then fine-tuning)",
            "published 1.39 % valid / 1.3 % test; not yet run here (hours on a CPU)"),
    "rbm": ("tutorial", "rbm.py (500 hidden, batch 20, PCD-15, 15 epochs)",
            f"pseudo-likelihood within 1 nat of the published curve every epoch; {XEON}: 268 s (quiet machine); "
            "AIS test log-likelihood -94.09 nats"),
    "dbn": ("tutorial", "DBN.py (3 x 1000, CD-1, batch 10, 100 pre-training epochs a layer, then fine-tuning)",
            "published 1.27 % valid / 1.34 % test; not yet run here (hours on a CPU)"),
    "sda-fast": ("fast", "the SdA's network: 2 pre-training epochs a layer at batch 128, fine-tuning with "
                 "Nesterov and a one-cycle rate",
                 f"{XEON}: 1.21 % mean test (3 seeds) in 233-253 s at load 1.4-2.6 (--threads 1)"),
    "dbn-fast": ("fast", "the DBN's network: 2 CD-1 epochs a layer at batch 128, fine-tuning with Nesterov "
                 "and a one-cycle rate",
                 f"{XEON}: 1.21 % mean test (3 seeds) in 275-297 s at load 2.4-3.5 (--threads 1)"),
    "rbm-fast": ("fast", "the RBM: PCD-5, 100 chains, cosine decay over 15 epochs",
                 f"{XEON}: AIS test log-likelihood -82.64 nats (rbm: -94.09) in 121 s (--threads 1)"),
}
NO_FIGURE = "no figure yet"


def about(name: str) -> tuple[str, str, str]:
    """(kind, what it is for, result with the machine) of a preset; a preset without an entry: its kind
    guessed from its name, its file's first comment line as its purpose, and no figure."""
    if name in ABOUT:
        return ABOUT[name]
    from importlib import resources

    text = (resources.files(__name__) / f"{name}.toml").read_text()
    first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    return ("fast" if "fast" in name else "tutorial", first[:80], NO_FIGURE)


def table() -> str:
    """`deeptut presets`: one row per preset: name, model, kind, what it is for, result."""
    from deeptut import config

    rows = [("preset", "model", "kind", "for", "result (machine)")]
    for name in config.preset_names():
        kind, purpose, result = about(name)
        rows.append((name, str(config.load_preset(name).get("model", config.TrainConfig().model)), kind,
                     purpose, result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(rows[0][4]))
    return "\n".join(lines) + (f"\n\n{MACHINES}\ndeeptut presets NAME shows one preset's values; --json the values of "
                               "each, one `name: {json}` line")


def json_lines() -> str:
    """`deeptut presets --json`: one `name: {the preset's fields as JSON}` line per preset."""
    from deeptut import config

    return "\n".join(f"{name}: " + json.dumps(config.load_preset(name)) for name in config.preset_names())


def describe(name: str) -> str:
    """`deeptut presets NAME`: the resolved values grouped by the config's sections; `*` marks a value the
    preset sets, the rest are the defaults."""
    from deeptut import config

    set_here = set(config.load_preset(name))
    cfg = config.resolve(name)
    kind, purpose, result = about(name)
    out = [f"{name}: {kind} preset, {purpose}", f"  result: {result}",
           "  (* set by the preset; the other values are the defaults)"]
    groups = cfg.sections()
    for group, values in groups.items():
        if not isinstance(values, dict):
            out.append(f"{'*' if group in set_here else ' '} {group} = {_show(values)}")
            continue
        out.append(f"[{group}]")
        for k, v in values.items():
            out.append(f"{'*' if k in set_here else ' '} {k} = {_show(v)}")
    return "\n".join(out)


def _show(v: Any) -> str:
    if dataclasses.is_dataclass(v):
        v = dataclasses.asdict(v)
    return json.dumps(v)
