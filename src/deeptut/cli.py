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
    p = argparse.ArgumentParser(prog="deeptut", description="The Deep Learning Tutorials on PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset; any config field can be overridden with --name value",
                       epilog=EPILOG.format(presets=presets), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("preset", nargs="?", help=f"preset name ({presets})")
    t.add_argument("--config", help="a TOML file of config values (applied after the preset)")
    t.add_argument("--data-dir", help="directory with the four MNIST IDX files or mnist.pkl.gz")
    t.add_argument("--runs-dir", default="runs", help="where run directories are made (default: runs)")
    t.add_argument("--run-dir", help="train into this directory (created if needed; must not hold a run yet) "
                   "instead of a new RUNS_DIR/<preset>-<stamp>/ (deeptut sweep names its trials so)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--quiet", "-q", action="store_true", help="print only the final result")
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

    s = sub.add_parser("sample", help="rbm runs: draw rbm.py's samples.png into RUN_DIR/plots/")
    s.add_argument("run_dir")
    s.add_argument("--data-dir")
    s.add_argument("--seed", type=int, help="seed of the Gibbs noise (default: the RBM's sample_seed)")
    s.add_argument("--n-chains", type=int, default=20, help="persistent chains, one column each (default 20)")
    s.add_argument("--n-samples", type=int, default=10, help="samples per chain, one row each (default 10)")
    s.add_argument("--plot-every", type=int, default=1000, help="Gibbs steps between samples (default 1000)")
    s.add_argument("--device", default="cpu", help="where the chains run (cpu, cuda; default cpu)")

    pr = sub.add_parser("predict", help="predict the digits in an IDX image file or PNG files")
    pr.add_argument("run_dir")
    pr.add_argument("images", nargs="+", help="an IDX image file (idx3) or 28x28 grayscale PNGs")

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
    c.add_argument("--out-dir")
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
    lf.add_argument("--runs-dir", default="runs", help="lr-find-PRESET-<stamp>/ is made here (default: runs)")

    ps = sub.add_parser("presets", help="the presets: a table, or one preset's values (defaults marked)")
    ps.add_argument("name", nargs="?", help="show this preset's values, grouped by the config's sections")
    ps.add_argument("--json", action="store_true", help="one `name: {values as JSON}` line per preset")
    return p


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from deeptut import config
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
        data = load_data(cfg, args.data_dir)
        summary = train(cfg, data, run_dir, quiet=args.quiet, resume=True)
    else:
        if not args.preset and not args.config:
            raise DeeptutError("name a preset (deeptut presets lists them) or give --config FILE")
        cfg = config.resolve(args.preset, args.config, config.parse_overrides(extra))
        data = load_data(cfg, args.data_dir)
        if args.run_dir:
            run_dir = Path(args.run_dir)
            if (run_dir / rundir.CONFIG).exists():
                raise DeeptutError(f"{run_dir}: already holds a run (config.json); continue it with "
                                   f"deeptut train --resume {run_dir}")
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            run_dir = rundir.new_run_dir(args.runs_dir, cfg.preset)
        if not args.quiet:
            print(f"run directory: {run_dir}  (data: {getattr(data, 'source', cfg.dataset)})")
        summary = train(cfg, data, run_dir, quiet=args.quiet)
    if cfg.model == "rbm" and args.sample == "true":
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
    if model in rundir.UNSUPERVISED:
        raise DeeptutError(f"{run_dir}: a {model} run has no classifier to {what}"
                           + ("; try deeptut eval --log-likelihood" if model == "rbm" else ""))


def cmd_eval(args: argparse.Namespace) -> int:
    from deeptut.accel import cpu_evaluator
    from deeptut.store import rundir

    if args.log_likelihood:
        from deeptut.train.loglik import format_result, write_log_likelihood

        path, result = write_log_likelihood(args.run_dir, args.data_dir, n_runs=args.ais_runs,
                                            ais_steps=args.ais_steps, seed=args.seed, device=args.device)
        print(format_result(result))
        print(f"-> {path}")
        return 0
    _require_classifier(args.run_dir, "evaluate")
    from deeptut.data.datasets import load_dataset
    from deeptut.data.device import DeviceSplit
    from deeptut.data.normalize import normalized_splits
    from deeptut.train.loop import evaluate

    model, cfg = rundir.load_model(args.run_dir)
    evaluator = cpu_evaluator(model) if cfg.fast_step else None  # the arithmetic training used
    data = normalized_splits(load_dataset(cfg.dataset, args.data_dir), rundir.load_normalizer(args.run_dir))
    mode = args.evaluation or cfg.evaluation
    for name in ("valid", "test"):
        split = getattr(data, name)
        err = evaluate(model, DeviceSplit(split.x, split.y), cfg.batch_size, mode, evaluator)
        print(f"{name} error {err * 100.:f} % ({mode} evaluation)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from deeptut.store import rundir
    from deeptut.data.images import load_images

    _require_classifier(args.run_dir, "predict with")
    model, _ = rundir.load_model(args.run_dir)
    names, x = load_images(args.images)
    x = rundir.load_normalizer(args.run_dir).apply(x)  # the inputs the model was trained on
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(x)), dim=1)
    for name, row in zip(names, p):
        k = int(row.argmax())
        print(f"{name}\t{k}\t(p={float(row[k]):.4f})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from deeptut.viz.samples import write_samples

    for path in write_samples(args.run_dir, args.data_dir, seed=args.seed, n_chains=args.n_chains,
                              n_samples=args.n_samples, plot_every=args.plot_every, device=args.device):
        print(path)
    return 0


def cmd_lr_find(args: argparse.Namespace, extra: list[str]) -> int:
    from deeptut import config
    from deeptut.data.datasets import load_dataset
    from deeptut.store import rundir
    from deeptut.train.lr_find import range_test

    cfg = config.resolve(args.preset, args.config, config.parse_overrides(extra))
    data = load_dataset(cfg.dataset, args.data_dir)
    out = rundir.new_run_dir(args.runs_dir, f"lr-find-{cfg.preset}")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "lr-find"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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

        if args.command == "report" and (Path(args.run_dir) / "expansion.json").is_file():
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
