"""The command line: a thin layer over the library (the tests and notebooks call the same functions)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deeptut.errors import DeeptutError

EPILOG = """config overrides: any field of the config as --name value (dashes or underscores), e.g.
  deeptut train logistic --n_epochs 5 --learning-rate 0.1 --batch_size 20 --L2_reg 1e-4 --seed 3
  deeptut train mlp --sparse true --threads 0    # the MLP step on nonzero pixels, both cores
presets: {presets} (deeptut presets: a table; deeptut presets NAME: its values)"""


def _parser() -> argparse.ArgumentParser:
    from deeptut.config import preset_names

    presets = ", ".join(preset_names())
    from deeptut import __version__

    p = argparse.ArgumentParser(prog="deeptut", description="The Deep Learning Tutorials on PyTorch. In Python: "
                                "import deeptut; run = deeptut.train('logistic', n_epochs=5) (help(deeptut)).")
    p.add_argument("--version", action="version", version=f"deeptut {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset; any config field can be overridden with --name value",
                       epilog=EPILOG.format(presets=presets), formatter_class=argparse.RawDescriptionHelpFormatter,
                       add_help=False)
    t.add_argument("-h", "--help", action=_TrainHelp, nargs=0,
                   help="show this help; after a preset (deeptut train PRESET --help): also the config fields "
                        "of its model, with their meaning, unit, default and the preset's value")
    t.add_argument("preset", nargs="?", help=f"preset name ({presets})")
    t.add_argument("--config", help="a TOML file of config values (applied after the preset)")
    t.add_argument("--data-dir", help="directory with the four MNIST IDX files or mnist.pkl.gz")
    t.add_argument("--runs-dir", default="runs", help="where run directories are made (default: runs)")
    t.add_argument("--run-dir", help="train into this directory (created if needed; must not hold a run yet) "
                   "instead of a new RUNS_DIR/<preset>-<stamp>/ (deeptut sweep names its trials so)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--quiet", "-q", action="store_true", help="print only the final result")
    t.add_argument("--logger", choices=["none", "tensorboard"], default="none",
                   help="tensorboard: also RUN_DIR/tensorboard/ (metrics.jsonl's scalars and the filters; "
                        "pip install 'deeptut[tensorboard]')")
    t.add_argument("--sample", choices=["true", "false"], default="true",
                   help="rbm runs: end by drawing rbm.py's samples.png into RUN_DIR/plots/, as the tutorial "
                        "does (default true; deeptut sample RUN_DIR draws it later)")

    e = sub.add_parser("eval", help="validation and test error of a saved model")
    e.add_argument("run_dir")
    e.add_argument("--data-dir")
    e.add_argument("--evaluation", choices=["tutorial", "full"], help="default: the run's own")
    e.add_argument("--log-likelihood", action="store_true",
                   help="rbm runs: AIS estimate of log Z and the mean test log-probability (nats, +-3 sigma), "
                        "written to RUN_DIR/log_likelihood.json")
    e.add_argument("--ais-runs", type=int, default=100, help="parallel AIS runs (default 100)")
    e.add_argument("--ais-steps", type=int, help="AIS steps (default: the paper's ladder, 14,500)")
    e.add_argument("--seed", type=int, default=0, help="seed of the AIS noise (default 0)")
    e.add_argument("--device", default="cpu", help="where the AIS runs (cpu, cuda; default cpu)")
    e.add_argument("--binarize", choices=["round", "stochastic"], default="round",
                   help="--log-likelihood: the test digits as 0/1: round (pixel >= 0.5, rbm.py's; default) or "
                        "stochastic (each pixel drawn once from Bernoulli(intensity), a fixed seed: the "
                        "literature's binarised MNIST); recorded in the result")
    e.add_argument("--check-ladder", action="store_true",
                   help="--log-likelihood: also run a ladder ten times longer and record whether log Z agrees "
                        "within 0.5 nats")

    s = sub.add_parser("sample", help="rbm runs: draw rbm.py's samples.png into RUN_DIR/plots/; rnnrbm runs: "
                                      "a generated sample.mid and sample.png")
    s.add_argument("run_dir")
    s.add_argument("--data-dir")
    s.add_argument("--seed", type=int, help="seed of the Gibbs noise (default: the RBM's sample_seed)")
    s.add_argument("--n-chains", type=int, default=20, help="persistent chains, one column each (default 20)")
    s.add_argument("--n-samples", type=int, default=10, help="samples per chain, one row each (default 10)")
    s.add_argument("--plot-every", type=int, default=1000, help="Gibbs steps between samples (default 1000)")
    s.add_argument("--device", default="cpu", help="where the chains run (cpu, cuda; default cpu)")

    pr = sub.add_parser("predict", help="predict the digits in an IDX image file or PNG files")
    pr.add_argument("run_dir")
    pr.add_argument("images", nargs="+", help="IDX image files (idx3) or image files (PNG, JPEG; any size, grey or "
                    "colour, either polarity: made to look like MNIST's digits, with a note)")
    pr.add_argument("--data-dir", help="the run's training data, which each input is compared with (an input "
                    "unlike it is flagged); default: where the run read it")

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    x = dsub.add_parser("export-pkl", help="write the tutorials' mnist.pkl.gz from the IDX files")
    x.add_argument("out")
    x.add_argument("--data-dir")

    v = sub.add_parser("viz", help="write pictures of a saved run into RUN_DIR/plots/ (no retraining)")
    v.add_argument("run_dir")
    v.add_argument("--data-dir")
    r = sub.add_parser("report", help="write RUN_DIR/report.html, a self-contained page; for a sweep directory: "
                       "its summary table and sweep.png")
    r.add_argument("run_dir")
    r.add_argument("--out")
    r.add_argument("--data-dir")
    c = sub.add_parser("compare", help="compare runs: a table, overlaid validation curves and, for two or more "
                       "runs, McNemar's exact test on their per-example correctness")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out-dir", help="write compare.png here (default: comparisons/compare-<stamp>.png beside the "
                   "runs' folder, never among the runs)")
    c.add_argument("--data-dir", help="the runs' data (for McNemar's test)")
    c.add_argument("--split", choices=["test", "valid"], default="test", help="examples McNemar's test uses")
    c.add_argument("--no-mcnemar", action="store_true", help="skip McNemar's test (it evaluates every model)")

    sw = sub.add_parser("sweep", help="run a sweep (a TOML spec) or continue one (its directory); README: Sweeps")
    sw.add_argument("target", metavar="SPEC_OR_SWEEP_DIR")
    sw.add_argument("--backend", choices=["local", "ray"], default="local")
    sw.add_argument("--workers", type=int, help="trials at a time (local default: the CPU count; ray: the "
                    "cluster's CPUs)")
    sw.add_argument("--address", help="ray: join this cluster (host:port); without it a local Ray starts")
    sw.add_argument("--data-dir", help="the trials' data directory (or data_dir in the spec)")
    sw.add_argument("--sweeps-dir", default="sweeps", help="where sweep directories are made (default: sweeps)")
    sw.add_argument("--quiet", "-q", action="store_true", help="no per-trial lines or progress bar")

    lf = sub.add_parser("lr-find", help="learning-rate range test of a preset on its data: lr_find.png and a "
                        "suggested rate (config overrides as for train)")
    lf.add_argument("preset", help=f"preset name ({presets})")
    lf.add_argument("--steps", type=int, default=300, help="minibatches, the rate rising from 1e-6 to 10 (default 300)")
    lf.add_argument("--config", help="a TOML file of config values (applied after the preset)")
    lf.add_argument("--data-dir")
    lf.add_argument("--out-dir", default="lr-find", help="PRESET-<stamp>/ is made here (default: lr-find/, beside "
                    "runs/, never among the runs)")

    ps = sub.add_parser("presets", help="the presets: a table, or one preset's values (defaults marked)")
    ps.add_argument("name", nargs="?", help="show this preset's values, grouped by the config's sections")
    ps.add_argument("--json", action="store_true", help="one `name: {values as JSON}` line per preset")
    return p


class _TrainHelp(argparse.Action):
    """-h/--help of `deeptut train`: the usual help, then, after a preset, the fields of its model."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.print_help()
        preset = getattr(namespace, "preset", None)
        if preset:
            try:
                print("\n" + preset_fields_help(preset))
            except DeeptutError as e:
                print(f"\n{e}")
        parser.exit()


def preset_fields_help(preset: str, width: int = 100) -> str:
    """The config fields that apply to the preset's model, by TOML table: `--name` (the preset's value, and
    the default where it differs), then the field's meaning and unit (its comment in config.py /
    models/families.py)."""
    import textwrap

    from deeptut import config

    values = config.load_preset(preset)
    model = values.get("model", config.TrainConfig().model)
    lines = [f"config fields of {preset} (model {model}); set any with --name value:"]
    table = None
    for tab, name, default, meaning in config.field_docs(model):
        if tab != table:
            table = tab
            lines.append(f"  [{tab}]")
        shown = values.get(name, default)
        head = f"    --{name} {_flag_value(shown)}" + ("" if _flag_value(shown) == _flag_value(default)
                                                       else f"   (default {_flag_value(default)})")
        lines.append(head)
        if meaning:
            lines += textwrap.wrap(meaning, width, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


def _flag_value(v: object) -> str:
    """A value as it is written after its flag: true, 0.13, 20,50, tanh."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v))
    return str(v)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from deeptut import config
    from deeptut.api import busy_warning, check_logger, discard_if_unstarted, open_run_dir, tracked
    from deeptut.store import rundir
    from deeptut.train.runner import load_data, train

    if args.resume:
        if args.preset or extra or args.config or args.run_dir:
            raise DeeptutError("--resume takes the run directory only: the run's saved config is used")
        run_dir = Path(args.resume)
        if not (run_dir / rundir.CONFIG).is_file():
            raise DeeptutError(f"{run_dir}: not a run directory (no config.json); nothing to resume"
                               if run_dir.is_dir() else f"{run_dir}: no such run directory")
        cfg = rundir.load_config(run_dir)
        check_logger(args.logger)
        data = load_data(cfg, args.data_dir or rundir.remembered_data_dir(run_dir))
        with tracked(run_dir, args.logger, args.quiet):
            summary = train(cfg, data, run_dir, quiet=args.quiet, resume=True)
    else:
        if not args.preset and not args.config:
            raise DeeptutError("name a preset (deeptut presets lists them) or give --config FILE")
        cfg = config.resolve(args.preset, args.config, config.parse_overrides(extra))
        check_logger(args.logger)
        warning = busy_warning(cfg)
        if warning and not args.quiet:
            print(warning, file=sys.stderr)
        data = load_data(cfg, args.data_dir)
        run_dir, created = open_run_dir(cfg.preset, args.run_dir, args.runs_dir)
        if not args.quiet:
            print(f"run directory: {run_dir}  (data: {getattr(data, 'source', cfg.dataset)})")
        with tracked(run_dir, args.logger, args.quiet), discard_if_unstarted(run_dir, created):  # a failed start
            # leaves no empty run folder behind
            summary = train(cfg, data, run_dir, quiet=args.quiet)
    if cfg.net.samples and args.sample == "true":  # rbm.py ends by drawing its samples
        _rbm_samples(run_dir, data, args.quiet)
    if args.quiet and "result" in summary:  # a family's own one-line result (the later chapters)
        print(f"{summary['result']} -> {run_dir}")
    elif args.quiet and summary.get("phase") == "pretrain":  # dA, cA, RBM: no supervised result
        print(f"final cost {summary['final_cost']} ({summary['epochs']} epochs, {summary['train_seconds']:.2f} s) "
              f"-> {run_dir}")
    elif args.quiet:
        print(f"best validation score of {summary['best_validation_error']:f} %, with test performance "
              f"{summary['test_error']:f} % ({summary['epochs']} epochs, {summary['train_seconds']:.2f} s) "
              f"-> {run_dir}")
    return 0


def _rbm_samples(run_dir: Path, data: object, quiet: bool) -> None:
    """rbm.py ends by drawing samples.png: the same as `deeptut sample RUN_DIR` (CPU, the RBM's sample_seed,
    20 chains x 10 samples, 1,000 Gibbs steps apart), from the saved model. Without the viz extra: one note."""
    import importlib.util

    missing = [m for m in ("matplotlib", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"samples.png not drawn: {' and '.join(missing)} missing (pip install 'deeptut[viz]', then "
              f"deeptut sample {run_dir})", file=sys.stderr)
        return
    from deeptut.viz.samples import write_samples

    paths = write_samples(run_dir, data)
    if not quiet:
        print(f"samples: {paths[0]}")


def _require_classifier(run_dir: str, what: str) -> None:
    """A clear error for a da / ca / rbm run (trained without labels: no classifier to `what`). sda / dbn
    runs go on: their best.safetensors is the fine-tuned classifier."""
    from deeptut.store import rundir

    try:
        model = rundir.Run.open(run_dir).model
    except DeeptutError:
        return  # load_model says what is wrong with the directory
    from deeptut.models.families import FAMILIES

    if not FAMILIES[model].classifier:
        raise DeeptutError(f"{run_dir}: a {model} run has no classifier to {what}"
                           + ("; try deeptut eval --log-likelihood" if FAMILIES[model].samples else ""))


def cmd_eval(args: argparse.Namespace) -> int:
    from deeptut.accel import cpu_evaluator
    from deeptut.store import rundir

    if args.log_likelihood:
        from deeptut.train.loglik import format_result, write_log_likelihood

        path, result = write_log_likelihood(args.run_dir, args.data_dir, n_runs=args.ais_runs,
                                            ais_steps=args.ais_steps, seed=args.seed, device=args.device,
                                            binarize_mode=args.binarize, check_ladder=args.check_ladder)
        print(format_result(result))
        print(f"-> {path}")
        return 0
    _require_classifier(args.run_dir, "evaluate")
    from deeptut.data.datasets import load_dataset
    from deeptut.data.device import DeviceSplit
    from deeptut.data.normalize import Normalizer, normalized_splits
    from deeptut.train.loop import evaluate

    model, cfg = rundir.load_model(args.run_dir)
    evaluator = cpu_evaluator(model) if cfg.fast_step else None  # the arithmetic training used
    normalizer = Normalizer.from_saved(*rundir.saved_normalization(args.run_dir))
    data = normalized_splits(load_dataset(cfg.dataset, args.data_dir), normalizer)
    mode = args.evaluation or cfg.evaluation
    for name in ("valid", "test"):
        split = getattr(data, name)
        err = evaluate(model, DeviceSplit(split.x, split.y), cfg.batch_size, mode, evaluator)
        print(f"{name} error {err * 100.:f} % ({mode} evaluation)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from deeptut.data.images import load_images
    from deeptut.data.normalize import Normalizer
    from deeptut.store import rundir

    _require_classifier(args.run_dir, "predict with")
    model, cfg = rundir.load_model(args.run_dir)
    images = load_images(args.images, strict=False)  # a bad file is reported below; the others predicted
    for note in images.notes:
        print(f"note: {note}", file=sys.stderr)
    names, x = images.names, images.x
    unlike = _unlike_training_data(cfg.dataset, args.data_dir, x)  # per row: None, or why it looks unlike it
    x = Normalizer.from_saved(*rundir.saved_normalization(args.run_dir)).apply(x)  # the inputs it was trained on
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(x)), dim=1)
    for name, row, why in zip(names, p, unlike):
        k = int(row.argmax())
        print(f"{name}\t{k}\t(p={float(row[k]):.4f})" + ("\tUNLIKE THE TRAINING DATA" if why else ""))
        if why:
            print(f"note: {name}: looks nothing like the training images ({why}): the prediction is a guess",
                  file=sys.stderr)
    for name, why in images.failed.items():
        print(f"deeptut: error: {name}: {why}", file=sys.stderr)
    return 2 if images.failed else 0


def _unlike_training_data(dataset: str, data_dir: str | None, x: object) -> list[str | None]:
    """data/novelty.py's flag per input row; without the run's training data, one note and no flags."""
    from deeptut.data.novelty import reference_for

    try:
        return reference_for(dataset, data_dir).unlike(x)
    except DeeptutError as e:
        print(f"note: the inputs were not compared with the training data ({str(e).splitlines()[0]})",
              file=sys.stderr)
        return [None] * len(x)


def cmd_sample(args: argparse.Namespace) -> int:
    from deeptut.viz.samples import write_samples

    own = _family_sampler(args.run_dir)
    if own is not None:  # a family with its own sampler (rnnrbm: a generated MIDI file and its piano-roll)
        for path in own(args.run_dir, seed=args.seed, device=args.device):
            print(path)
        return 0
    for path in write_samples(args.run_dir, args.data_dir, seed=args.seed, n_chains=args.n_chains,
                              n_samples=args.n_samples, plot_every=args.plot_every, device=args.device):
        print(path)
    return 0


def _family_sampler(run_dir: str):  # -> fn(run_dir, *, seed, device) -> [Path] | None
    """The `sampler` ("module:function") of the run's family section, or None (the RBM's samples.png)."""
    from deeptut.models.families import family
    from deeptut.registry import load_target
    from deeptut.store.rundir import Run

    target = getattr(family(Run.open(run_dir).model), "sampler", None)
    return None if target is None else load_target(target)


def cmd_lr_find(args: argparse.Namespace, extra: list[str]) -> int:
    from deeptut import config
    from deeptut.data.datasets import load_dataset
    from deeptut.store import rundir
    from deeptut.train.lr_find import range_test

    cfg = config.resolve(args.preset, args.config, config.parse_overrides(extra))
    data = load_dataset(cfg.dataset, args.data_dir)
    out = rundir.new_run_dir(args.out_dir, cfg.preset)  # lr-find/PRESET-<stamp>/: beside runs/, not in it
    try:
        r = range_test(cfg, data, out, n_steps=args.steps)
    except (ValueError, FloatingPointError) as e:
        raise DeeptutError(f"lr-find: {e}") from None
    print(f"suggested learning rate: {r.suggestion:.3g} (the smoothed loss is lowest at {r.min_rate:.3g}; a tenth "
          f"of it; {cfg.preset} trains at {cfg.learning_rate:g})")
    if cfg.lr_schedule != "constant":
        print(f"for the {cfg.lr_schedule} schedule's peak: below {r.min_rate:.3g}")
    if r.note:
        print(f"note: {r.note}")
    print(f"try: deeptut train {cfg.preset} --learning_rate {r.suggestion:.3g}  ({out / 'lr_find.png'})")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from deeptut import config, presets

    if args.name:
        config.load_preset(args.name)  # an unknown name: the error lists the presets
        print(f"{args.name}: {json.dumps(config.load_preset(args.name))}" if args.json else presets.describe(args.name))
    else:
        print(presets.json_lines() if args.json else presets.table())
    return 0


def _runs_only(paths: list[str]) -> list[str]:
    """The run directories among `paths` (a shell's runs/* also names compare.png, lr-find folders, ...):
    each other one skipped with a note on stderr; none left is an error."""
    from deeptut.store import rundir

    runs = []
    for p in paths:
        if (Path(p) / rundir.CONFIG).is_file() and (Path(p) / rundir.METRICS).is_file():
            runs.append(p)
        else:
            why = "no such file or folder" if not Path(p).exists() else (
                "not a folder" if not Path(p).is_dir() else "no config.json and metrics.jsonl")
            print(f"note: skipping {p}: not a run directory ({why})", file=sys.stderr)
    if not runs:
        raise DeeptutError("compare: none of the paths given is a run directory")
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # families, procedures and datasets registered outside src/ ($DEEPTUT_PLUGINS, entry points)
        from deeptut import registry

        registry.load_plugins()
    except LookupError as e:
        print(f"deeptut: error: {e}", file=sys.stderr)
        return 2
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "lr-find"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "data_dir", "-") is None and isinstance(getattr(args, "run_dir", None), str):
        from deeptut.store.rundir import remembered_data_dir

        args.data_dir = remembered_data_dir(args.run_dir)  # where the run read its data (None: search)
    try:
        if args.command == "train":
            return cmd_train(args, extra)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "lr-find":
            return cmd_lr_find(args, extra)
        if args.command == "presets":
            return cmd_presets(args)
        if args.command == "data":
            from deeptut.data.datasets import export_pkl

            export_pkl(args.out, args.data_dir)
            print(f"wrote {args.out}")
            return 0
        if args.command == "sweep":
            from deeptut.sweep import run_sweep

            if args.workers is not None and args.workers < 1:
                raise DeeptutError(f"--workers must be >= 1, got {args.workers}")
            return run_sweep(args.target, backend=args.backend, workers=args.workers, address=args.address,
                             data_dir=args.data_dir, sweeps_dir=args.sweeps_dir, quiet=args.quiet)
        from deeptut import viz

        from deeptut.sweep.run import is_sweep_dir

        if args.command == "report" and is_sweep_dir(args.run_dir):
            from deeptut.sweep.report import write_sweep_report

            text, png = write_sweep_report(args.run_dir)
            print(text)
            print(png if png else "(no finished trial to plot)")
            return 0
        if args.command == "viz":
            for path in viz.render_all(args.run_dir, args.data_dir):
                print(path)
        elif args.command == "report":
            print(viz.write_report(args.run_dir, args.out, args.data_dir))
        elif args.command == "compare":
            args.run_dirs = _runs_only(args.run_dirs)
            if args.data_dir is None:
                from deeptut.store.rundir import remembered_data_dir

                args.data_dir = next(filter(None, map(remembered_data_dir, args.run_dirs)), None)
            table, png = viz.compare(args.run_dirs, args.out_dir)
            print(table)
            print(png)
            if len(args.run_dirs) >= 2 and not args.no_mcnemar:
                from deeptut.viz.significance import mcnemar_table

                print()
                print(mcnemar_table(args.run_dirs, args.data_dir, args.split))
        return 0
    except DeeptutError as e:
        print(f"deeptut: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # loop.Interrupted carries the signal (SIGTERM: 143)
        return 128 + getattr(e, "signum", 2)
