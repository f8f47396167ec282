"""`deeptut sweep`: expand a spec into trials, run them on a backend, record, select, report.

The sweep directory (everything a rerun, a report or another node needs):
    spec.toml            the spec as given
    expansion.json       the trials (id, configuration index, seed, overrides), fixed at creation
    configs/<id>.toml    each trial's overrides, passed to `deeptut train --config`
    trials/<id>/         each trial's ordinary run directory (config.json, metrics.jsonl, checkpoints/, ...)
    logs/<id>.log        the trial's output, every attempt; logs/<id>.attempts.jsonl: one line per attempt
    results.jsonl        one line per finished trial, appended by the driver only (never twice per trial)
    sweep.csv            one row per trial; summary.txt and selection.json: the ranking and the choice
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from deeptut.errors import ConfigError, DeeptutError
from deeptut.signals import Interrupts
from deeptut.store import files
from deeptut.sweep.spec import Spec, expand, load_spec, parse_spec
from deeptut.sweep.trial import FAILED, FINISHED, child_env

# sweep.csv's last columns: the ledger's (results.jsonl) names. Sweeps before issue 21 named the second
# "best_valid_error"; deeptut reads only the ledger, and rewrites sweep.csv whole from it (write_csv).
CSV_RESULTS = ("best_validation_error", "test_error", "epochs", "train_seconds", "attempts")
CSV_TAIL = ("status", *CSV_RESULTS)


# --- the sweep directory --------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")


def create_sweep_dir(spec_path: str | Path, sweeps_dir: str | Path = "sweeps") -> Path:
    """Validate and expand the spec (errors before anything is written), then lay out the directory."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    trials = expand(spec)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(sweeps_dir)
    for i in range(1000):
        d = root / (f"{spec.name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            d.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    else:
        raise DeeptutError(f"{root}: too many sweep directories named {spec.name}-{stamp}")
    for sub in ("configs", "trials", "logs"):
        (d / sub).mkdir()
    for t in trials:
        (d / "configs" / f"{t['id']}.toml").write_text(
            "".join(f"{k} = {_toml_value(v)}\n" for k, v in t["values"].items()))
    shutil.copyfile(spec_path, d / "spec.toml")
    files.atomic_write_json(d / "expansion.json", {"name": spec.name, "preset": spec.preset, "seeds": spec.seeds,
                                               "swept": spec.swept_fields(), "trials": trials})
    return d


def is_sweep_dir(path: str | Path) -> bool:
    """A sweep directory (expansion.json), not a run directory: `deeptut report` and `deeptut sweep` ask."""
    return (Path(path) / "expansion.json").is_file()


def open_sweep(sweep_dir: str | Path) -> tuple[Spec, dict]:
    d = Path(sweep_dir)
    if not is_sweep_dir(d) or not (d / "spec.toml").is_file():
        raise DeeptutError(f"{d}: not a sweep directory (no spec.toml / expansion.json)")
    spec = parse_spec((d / "spec.toml").read_text(), str(d / "spec.toml"))
    return spec, json.loads((d / "expansion.json").read_text())


def make_task(sweep_dir: Path, trial: dict, spec: Spec, data_dir: str | None) -> dict:
    """What a worker needs to run a trial: absolute paths (the same on every node: shared storage) and the
    two command lines, with this Python (the same interpreter path on every node)."""
    d = sweep_dir.resolve()
    run_dir = d / "trials" / trial["id"]
    data = ["--data-dir", str(Path(data_dir).resolve())] if data_dir else []
    train = [sys.executable, "-m", "deeptut", "train"]
    env = child_env()
    return {"id": trial["id"], "run_dir": str(run_dir), "log": str(d / "logs" / f"{trial['id']}.log"),
            "attempts": str(d / "logs" / f"{trial['id']}.attempts.jsonl"), "max_attempts": spec.max_attempts,
            "cmd_start": train + [spec.preset, "--run-dir", str(run_dir),
                                  "--config", str(d / "configs" / f"{trial['id']}.toml")] + data,
            "cmd_resume": train + ["--resume", str(run_dir)] + data,
            "env": env, "stop_flag": str(d / ".stopping"), "cwd": str(d)}


# --- results ----------------------------------------------------------------------------------------------


def read_ledger(sweep_dir: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    p = sweep_dir / "results.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.setdefault(r["id"], r)
    return out


def _ledger_record(result: dict) -> dict:
    s = result["summary"] or {}
    return {"id": result["id"], "status": result["status"], "best_validation_error": s.get("best_validation_error"),
            "test_error": s.get("test_error"), "epochs": s.get("epochs"), "train_seconds": s.get("train_seconds"),
            "attempts": result["attempts"], "wall_s": result.get("wall_s"), "fault": s.get("fault"),
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}


def record(sweep_dir: Path, ledger: dict[str, dict], result: dict) -> bool:
    """Append a finished trial to results.jsonl unless it is there already; True if it was new."""
    if result["status"] != FINISHED or result["id"] in ledger:
        return False
    rec = _ledger_record(result)
    with open(sweep_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    ledger[rec["id"]] = rec
    return True


def write_csv(sweep_dir: Path, expansion: dict, ledger: dict[str, dict], status: dict[str, str]) -> Path:
    swept = expansion["swept"]
    path = sweep_dir / "sweep.csv"
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["trial", "config", "seed", *swept, *CSV_TAIL])
    for t in expansion["trials"]:
        r = ledger.get(t["id"], {})
        w.writerow([t["id"], t["config"], t["seed"], *(t["overrides"].get(k, "") for k in swept),
                    r.get("status") or status.get(t["id"], "pending"),
                    *("" if r.get(k) is None else r[k] for k in CSV_RESULTS)])
    files.atomic_write_bytes(path, text.getvalue().encode())
    return path


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def summarize(expansion: dict, ledger: dict[str, dict]) -> tuple[list[dict], dict | None]:
    """Configurations ranked by mean validation error over their finished seeds; the first is chosen and
    only its test error is reported (the tutorials' protocol)."""
    by_conf: dict[int, list[tuple[dict, dict]]] = {}
    for t in expansion["trials"]:
        r = ledger.get(t["id"])
        if r and r.get("best_validation_error") is not None and math.isfinite(r["best_validation_error"]):
            by_conf.setdefault(t["config"], []).append((t, r))
    rows = []
    for ci, pairs in by_conf.items():
        v = _mean_std([r["best_validation_error"] for _, r in pairs])
        secs = [r["train_seconds"] for _, r in pairs if r.get("train_seconds") is not None]
        tests = [r["test_error"] for _, r in pairs if r.get("test_error") is not None]
        rows.append({"config": ci, "overrides": pairs[0][0]["overrides"], "valid_mean": v[0], "valid_std": v[1],
                     "n": len(pairs), "seconds_mean": sum(secs) / len(secs) if secs else None,
                     "_test": _mean_std(tests) if tests else None})
    rows.sort(key=lambda r: (r["valid_mean"], r["config"]))
    chosen = None
    if rows:
        best = rows[0]
        chosen = {"config": best["config"], "overrides": best["overrides"], "valid_mean": best["valid_mean"],
                  "valid_std": best["valid_std"], "n": best["n"],
                  "test_mean": best["_test"][0] if best["_test"] else None,
                  "test_std": best["_test"][1] if best["_test"] else None}
    for r in rows:
        del r["_test"]
    return rows, chosen


def _over(o: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.items()) or "(base)"


def format_summary(expansion: dict, rows: list[dict], chosen: dict | None, n_trials: int) -> str:
    head = f"{'rank':>4}  {'config':>6}  {'valid % (mean +- std)':>22}  {'n':>3}  {'time s':>7}  overrides"
    lines = [f"sweep {expansion['name']} (preset {expansion['preset']}): {sum(r['n'] for r in rows)} of "
             f"{n_trials} trials finished; configurations ranked by mean validation error over their seeds",
             head, "-" * len(head)]
    for i, r in enumerate(rows):
        t = "" if r["seconds_mean"] is None else f"{r['seconds_mean']:.1f}"
        lines.append(f"{i + 1:>4}  c{r['config']:03d}   {r['valid_mean']:>12.4f} +- {r['valid_std']:<7.4f}  "
                     f"{r['n']:>3}  {t:>7}  {_over(r['overrides'])}")
    if chosen:
        test = ("n/a" if chosen["test_mean"] is None else
                f"{chosen['test_mean']:.4f} +- {chosen['test_std']:.4f} %")
        lines += ["", f"selected on validation: c{chosen['config']:03d} ({_over(chosen['overrides'])}): validation "
                      f"{chosen['valid_mean']:.4f} +- {chosen['valid_std']:.4f} % over {chosen['n']} seed(s); "
                      f"test error {test} (reported for this configuration only)"]
    return "\n".join(lines)


def write_summary(sweep_dir: Path, expansion: dict, ledger: dict[str, dict]) -> str:
    rows, chosen = summarize(expansion, ledger)
    text = format_summary(expansion, rows, chosen, len(expansion["trials"]))
    (sweep_dir / "summary.txt").write_text(text + "\n")
    files.atomic_write_json(sweep_dir / "selection.json", {"ranking": rows, "chosen": chosen})
    return text


# --- progress ---------------------------------------------------------------------------------------------


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """One line per finished trial on stdout; a bar with the time left on stderr (redrawn on a terminal)."""

    def __init__(self, total: int, done: int, quiet: bool = False) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.t0 = time.monotonic()
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def trial(self, t: dict, result: dict) -> None:
        self.done += result["status"] == FINISHED
        if self.quiet:
            return
        s = result["summary"] or {}
        v, te = s.get("best_validation_error"), s.get("test_error")
        info = (f"valid {v:.4f} %  test {te:.4f} %" if v is not None and te is not None else
                f"{result['status']}: {result.get('error') or ''}")
        retry = f"  ({result['attempts']} attempts)" if result["attempts"] > 1 else ""
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        print(f"[{self.done:>{len(str(self.total))}}/{self.total}] {t['id']}  {_over(t['overrides'])}  {info}  "
              f"{s.get('train_seconds') or 0:.1f} s{retry}", flush=True)
        self.bar()

    def bar(self) -> None:
        if self.quiet:
            return
        width = 30
        k = int(width * self.done / max(1, self.total))
        elapsed = time.monotonic() - self.t0
        new = self.done - self.start_done
        left = f"~{_clock(elapsed / new * (self.total - self.done))} left" if new else "time left: after a trial"
        line = f"[{'#' * k}{'.' * (width - k)}] {self.done}/{self.total} trials, {_clock(elapsed)} elapsed, {left}"
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        sys.stderr.flush()


# --- the driver ---------------------------------------------------------------------------------------------


def run_sweep(target: str | Path, *, backend: str = "local", workers: int | None = None,
              address: str | None = None, data_dir: str | None = None, sweeps_dir: str | Path = "sweeps",
              quiet: bool = False, out: Callable[[str], None] = print) -> int:
    """Run a new sweep (target: a spec TOML file) or continue one (target: its sweep directory).
    Returns 0 when every trial finished, 1 if some failed, 128 + signal when stopped by one."""
    from deeptut.sweep.backends import make_backend

    target = Path(target)
    if target.is_dir():
        sweep_dir = target
    elif target.is_file():
        sweep_dir = create_sweep_dir(target, sweeps_dir)
    else:
        raise DeeptutError(f"{target}: no such sweep spec or sweep directory")
    spec, expansion = open_sweep(sweep_dir)
    data_dir = data_dir or spec.data_dir
    (sweep_dir / ".stopping").unlink(missing_ok=True)
    ledger = read_ledger(sweep_dir)
    trials = {t["id"]: t for t in expansion["trials"]}
    status: dict[str, str] = {}
    # trials finished by an earlier invocation whose result did not reach the ledger (the driver died)
    for tid, t in trials.items():
        s_path = sweep_dir / "trials" / tid / "summary.json"
        if tid not in ledger and s_path.exists():
            from deeptut.sweep.trial import _read_attempts

            attempts = len(_read_attempts(sweep_dir / "logs" / f"{tid}.attempts.jsonl"))
            record(sweep_dir, ledger, {"id": tid, "status": FINISHED, "summary": json.loads(s_path.read_text()),
                                       "attempts": attempts, "wall_s": None})
    pending = [tid for tid in trials if tid not in ledger]
    out(f"sweep directory: {sweep_dir}  ({len(trials)} trials: {len(trials) - len(pending)} finished before, "
        f"{len(pending)} to run; backend {backend})")
    progress = Progress(len(trials), len(trials) - len(pending), quiet)
    deadline = time.monotonic() + spec.wall_time_s if spec.wall_time_s else None
    code = 0
    # SIGINT/SIGTERM: stop starting trials, interrupt the running ones (they checkpoint), keep every result;
    # a second signal stops waiting
    with make_backend(backend, workers=workers, address=address) as be, Interrupts(second_raises=True) as stop:
        in_flight: dict[Any, str] = {}
        stopping = False
        try:
            while (pending and not stopping) or in_flight:
                if not stopping and (stop.signum is not None or (deadline and time.monotonic() > deadline)):
                    stopping = True
                    why = (f"{signal.Signals(stop.signum).name}" if stop.signum is not None else
                           f"the wall-time budget ({spec.wall_time_s:g} s)")
                    out(f"stopping on {why}: {len(in_flight)} running trial(s) write a checkpoint and stop; "
                        f"continue with: deeptut sweep {sweep_dir}")
                    (sweep_dir / ".stopping").touch()
                    be.interrupt(list(in_flight))
                while not stopping and pending and len(in_flight) < be.slots:
                    tid = pending.pop(0)
                    in_flight[be.submit(make_task(sweep_dir, trials[tid], spec, data_dir))] = tid
                    status[tid] = "running"
                for handle, result in be.wait(list(in_flight), timeout=0.2):
                    tid = in_flight.pop(handle)
                    status[tid] = result["status"]
                    record(sweep_dir, ledger, result)
                    write_csv(sweep_dir, expansion, ledger, status)
                    progress.trial(trials[tid], result)
                    if result["status"] == FAILED:
                        code = 1
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting (the trials' checkpoints stay)
            out("second interrupt: not waiting for the running trials")
        finally:
            (sweep_dir / ".stopping").unlink(missing_ok=True)
        if stop.signum is not None:
            code = 128 + stop.signum
        elif stopping:
            code = 0 if not any(status.get(t) == FAILED for t in trials) else 1
    write_csv(sweep_dir, expansion, ledger, status)
    out(write_summary(sweep_dir, expansion, ledger))
    left = [t for t in trials if t not in ledger]
    if left:
        out(f"{len(left)} trial(s) not finished ({', '.join(left[:5])}{' ...' if len(left) > 5 else ''}); "
            f"continue with: deeptut sweep {sweep_dir}")
    return code
