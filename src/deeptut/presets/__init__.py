"""The presets (one TOML file each, read by deeptut/config.py) and what `deeptut presets` says about them.

ABOUT holds, per preset, its kind (tutorial: reproduces a tutorial script; fast: the same network trained
the modern way) and what it is for, and no measured figure. Its published or measured result with the
machine comes from the claims registry shipped with the package (deeptut/claims.toml: each figure with its
raw result), so `deeptut presets` needs nothing but the installed package; `deeptut presets NAME` names each
figure's raw-result file (under bench/results/ of the deeptut repository). A preset with no registry line
says "no figure yet". The table fits WIDTH columns (the purpose and result wrapped).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import textwrap

WIDTH = 100  # columns of `deeptut presets`
MACHINES = ("machines: 2-core AMD EPYC (KVM, AVX-512), 2026-11-26 and 2026-12-06; one NVIDIA H200, 2026-11-26 "
            "and -28; 2-core Intel Xeon (KVM, AVX-512), shared with other work, 2026-11-28. Each figure's raw "
            "result: deeptut presets NAME.")

# name -> (kind, what it is for). The measured result is not written here: it is the preset's line in the
# claims registry shipped with the package (deeptut/claims.toml), each figure named with its raw result
# under bench/results/ and checked against it by tests/test_claims.py.
ABOUT: dict[str, tuple[str, str]] = {
    "logistic": ("tutorial", "logistic_sgd.py exactly"),
    "mlp": ("tutorial", "mlp.py exactly (784-500-10 tanh, batch 20)"),
    "lenet": ("tutorial", "convolutional_mlp.py (20/50 kernels, batch 500, 200 epochs)"),
    "mlp-fast": ("fast", "mlp.py's layer sizes with ReLU, a CPU's budget (standardised inputs, Nesterov, "
                 "one-cycle peaking at 0.1, 24 epochs, moves of 1 px)"),
    "lenet-fast": ("fast", "LeNet's layer sizes with ReLU, a CPU's budget (standardised inputs, peak 0.05, "
                   "7 epochs, moves of 1 px)"),
    "lenet-fast-gpu": ("fast", "a wider LeNet (32/64 kernels, ReLU) with a GPU's budget (16 epochs, batch 256, "
                       "TF32, standardised inputs, moves of 1 px)"),
    "da": ("tutorial", "dA.py (500 hidden, batch 20, 15 epochs, corruption 0.3)"),
    "ca": ("tutorial", "cA.py (500 hidden, batch 10, 20 epochs, contraction 0.1, its floor division)"),
    "sda": ("tutorial", "SdA.py (3 x 1000, batch 1, 15 pre-training epochs a layer, then fine-tuning)"),
    "rbm": ("tutorial", "rbm.py (500 hidden, batch 20, PCD-15, 15 epochs)"),
    "dbn": ("tutorial", "DBN.py (3 x 1000, CD-1, batch 10, 100 pre-training epochs a layer, then fine-tuning)"),
    "sda-fast": ("fast", "the SdA's network: 2 pre-training epochs a layer at batch 128, fine-tuning with "
                 "Nesterov and a one-cycle rate"),
    "dbn-fast": ("fast", "the DBN's network: 2 CD-1 epochs a layer at batch 128, fine-tuning with Nesterov "
                 "and a one-cycle rate"),
    "rbm-fast": ("fast", "the RBM: PCD-5, 100 chains, cosine decay over 15 epochs"),
    "hmc": ("tutorial", "test_hmc.py: hmc.py's sampler on a 5-d Gaussian, 3 chains, 1,000 burn-in + 1,000 kept"),
    "logistic-cg": ("tutorial", "logistic_cg.py: logistic regression by scipy's fmin_cg, at most 50 iterations"),
    "lstm": ("tutorial", "lstm.py on IMDB: embedding + LSTM of 128, mean pooling, dropout, Adadelta, batch 16, "
             "maxlen 100, patience 10 (needs imdb.pkl in --data-dir)"),
    "lstm-mnist": ("tutorial", "the LSTM chapter's network reading MNIST row by row (not a tutorial script): "
                   "128 units, Adam from 2e-3 by a cosine, batch 128, 12 epochs"),
    "rnnslu": ("tutorial", "rnnslu.py on ATIS fold 3: Elman network, window 7, one sentence per update at 0.0971, "
               "60 epochs (needs atis.fold3.pkl.gz)"),
    "rnnslu-slots": ("tutorial", "rnnslu.py's settings on the generated ATIS-like slot corpus (offline)"),
    "rnnslu-fast": ("fast", "the rnnslu network on 16 padded sentences per update at 1.6, 12 epochs (slot corpus)"),
    "rnnrbm": ("tutorial", "rnnrbm.py on Nottingham: 150 RBM / 100 RNN units, CD-15, SGD at 0.001, subsequences of "
               "100 frames, 200 epochs (needs Nottingham.zip in --data-dir)"),
    "rnnrbm-chorales": ("tutorial", "rnnrbm.py's model and training on music21's Bach chorales (offline; in C, "
                        "eighth-note frames)"),
    "rnnrbm-fast": ("fast", "the RNN-RBM on the chorales: 16 padded subsequences per update, Adam at 0.001, "
                    "gradient norm clipped at 5"),
}
NO_FIGURE = "no figure yet"


def measured() -> dict[str, dict[str, Any]]:
    """The claims registry shipped with the package (deeptut/claims.toml): preset -> {"result": line with
    {names}, "figures": {name: {"value": as printed, the raw result it comes from}}}."""
    import tomllib
    from importlib import resources

    return tomllib.loads((resources.files("deeptut") / "claims.toml").read_text())


def result(name: str, registry: dict[str, dict[str, Any]] | None = None) -> str:
    """A preset's measured column: its registry line with each {name} replaced by the figure as printed."""
    entry = (measured() if registry is None else registry).get(name)
    if entry is None:
        return NO_FIGURE
    figures = entry.get("figures", {})
    return entry["result"].format(**{k: v["value"] for k, v in figures.items()})


def about(name: str) -> tuple[str, str, str]:
    """(kind, what it is for, result with the machine) of a preset; a preset without an entry: its kind
    guessed from its name, its file's first comment line as its purpose; without a registry line: no figure."""
    if name in ABOUT:
        kind, purpose = ABOUT[name][:2]
        return kind, purpose, result(name)
    from importlib import resources

    text = (resources.files(__name__) / f"{name}.toml").read_text()
    first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    return ("fast" if "fast" in name else "tutorial", first[:80], result(name))


def table(width: int = WIDTH) -> str:
    """`deeptut presets`: one row per preset (name, model, kind), then what it is for and its result with the
    machine, wrapped in the last column; every line at most `width` characters."""
    from deeptut import config

    rows = [(name, str(config.load_preset(name).get("model", config.TrainConfig().model)), *about(name))
            for name in config.preset_names()]
    head = ("preset", "model", "kind")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    indent = sum(widths) + 2 * len(widths)
    text_w = max(30, width - indent)
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  what it is for; result (machine)",
             "  ".join("-" * w for w in widths) + "  " + "-" * text_w]
    for name, model, kind, purpose, result in rows:
        text = textwrap.wrap(purpose, text_w) + textwrap.wrap(f"result: {result}", text_w,
                                                              subsequent_indent="  ")
        lines.append("  ".join(c.ljust(w) for c, w in zip((name, model, kind), widths)) + "  " + text[0])
        lines += [" " * indent + t for t in text[1:]]
    foot = textwrap.wrap(MACHINES, width) + textwrap.wrap(
        "deeptut presets NAME shows one preset's values and the raw result of each figure; --json the "
        "values of each, one `name: {json}` line", width)
    return "\n".join(lines) + "\n\n" + "\n".join(foot)


def evidence(name: str, registry: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """One line per figure of a preset's result: the value as printed and the raw result it comes from
    (a file under bench/results/ of the deeptut repository; the first of several)."""
    entry = (measured() if registry is None else registry).get(name) or {}
    out = []
    for key, fig in entry.get("figures", {}).items():
        files = fig.get("files") or [fig.get("file", "?")]
        agg = fig.get("agg", "")
        how = f" ({agg} over {len(files)} files)" if len(files) > 1 else (f" ({agg} of its values)" if agg else "")
        out.append(f"{key} {fig['value']}: {files[0]}{how}")
    return out


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
    out = textwrap.wrap(f"{name}: {kind} preset, {purpose}", WIDTH, subsequent_indent="  ")
    out += textwrap.wrap(f"result: {result}", WIDTH, initial_indent="  ", subsequent_indent="    ")
    figures = evidence(name)
    if figures:
        out.append("  raw results (files in the deeptut repository):")
        out += ["    " + line for line in figures]
    out.append("  (* set by the preset; the other values are the defaults)")
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
