"""Kill training with SIGKILL at seeded random points (training steps, inside atomic writes between write
and rename, just after renames, after the stopping validation, at random times) and resume each run:
every resumed run must end exactly as the uninterrupted run (bit-identical parameters and files, same
summary and metrics.jsonl apart from timings, no leftover temporaries).

Each case is a child process forked from a forkserver that imported torch once, so a case costs a fork and
a fraction of a second of training, not an interpreter start-up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

import tiny

SEED = 20261126
run_child = tiny.run_child


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory):
    """A tmpfs when there is one: fsync is free there, and a process kill is a process kill anywhere."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile
        import shutil

        d = Path(tempfile.mkdtemp(prefix="deeptut-kill-", dir=shm))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("kill")


def manifest_done(run_dir: Path) -> bool | None:
    path = run_dir / "checkpoints" / "last.json"
    return json.loads(path.read_text())["loop"]["done"] if path.exists() else None


def plan_cases(name: str, n_fsync: int, n_steps: int, wall_s: float, rng: random.Random) -> list[dict]:
    """Kill points for one config: random training steps, random fsyncs (inside atomic writes), the last
    steps and the last fsyncs (after the stopping validation: final best model, summary, final checkpoint),
    random times, and a run killed twice."""
    cases = [{"kill_at_step": k} for k in sorted(rng.sample(range(1, n_steps + 1), 4))]
    cases.append({"kill_at_step": n_steps})
    # fsync 1-2 write config.json: killed there, there is no run to resume yet (the CLI says so)
    cases += [{"kill_at_fsync": k} for k in sorted(rng.sample(range(3, n_fsync - 3), 5))]
    cases += [{"kill_at_fsync": k} for k in (n_fsync - 3, n_fsync - 2, n_fsync - 1, n_fsync)]
    cases += [{"kill_after_s": rng.uniform(0.0, wall_s)} for _ in range(2)]
    cases.append({"kill_at_fsync": rng.randrange(3, n_fsync // 2), "then": {"kill_at_step": n_steps // 3}})
    for c in cases:
        c["name"] = name
    return cases


@pytest.mark.slow  # ~11 s: dozens of child processes
def test_sigkill_anywhere_then_resume_is_bit_identical(fast_dir, capsys):
    rng = random.Random(SEED)
    t0 = time.perf_counter()
    refs, cases = {}, []
    for name in tiny.CONFIGS:
        ref = fast_dir / f"ref-{name}"
        ref.mkdir()
        code, counts = run_child(ref, name)
        assert code == 0
        refs[name] = tiny.run_record(ref)
        again = fast_dir / f"ref2-{name}"
        again.mkdir()
        t = time.perf_counter()
        assert run_child(again, name)[0] == 0
        wall = time.perf_counter() - t
        assert tiny.differences(tiny.run_record(again), refs[name]) == [], "the run is not deterministic"
        cases += plan_cases(name, counts["fsync"], counts["step"], wall, rng)

    killed = identical = too_early = 0
    failures = []
    stop_saved_cases = 0
    for i, case in enumerate(cases):
        run_dir = fast_dir / f"case-{i:02d}-{case['name']}"
        run_dir.mkdir()
        hooks = {k: case[k] for k in ("kill_at_step", "kill_at_fsync") if k in case}
        code, _ = run_child(run_dir, case["name"], hooks=hooks, kill_after_s=case.get("kill_after_s"))
        if code != -signal.SIGKILL:
            assert code == 0 and "kill_after_s" in case, (case, code)  # a timer that fired too late
            continue
        if not (run_dir / "config.json").exists():
            too_early += 1  # killed before the run had a config: nothing to resume (the CLI says so)
            continue
        killed += 1
        if "then" in case:  # killed again while resuming
            code, _ = run_child(run_dir, case["name"], resume=True, hooks=case["then"])
            assert code in (-signal.SIGKILL, 0), (case, code)
        done_before = manifest_done(run_dir)
        code, counts = run_child(run_dir, case["name"], resume=True)
        assert code == 0, (case, code)
        if done_before:  # the stop decision was saved: the resumed run must not train on
            assert counts["step"] == 0, (case, counts)
            stop_saved_cases += 1
        diff = tiny.differences(tiny.run_record(run_dir), refs[case["name"]])
        if diff:
            failures.append((case, diff))
        else:
            identical += 1
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nkill/resume: {identical}/{killed} resumed identically ({len(cases)} cases, "
              f"{stop_saved_cases} killed after a checkpoint that recorded the stop decision, {too_early} killed "
              f"before the run had a config; {elapsed:.1f} s)")
    assert not failures, failures
    assert killed >= 20
    assert stop_saved_cases >= 1


@pytest.mark.slow  # ~15 s: two dozen child processes
def test_sigkill_during_pretraining_then_resume_is_bit_identical(fast_dir, capsys):
    """An SdA and a DBN (PCD chains) killed anywhere: in pre-training layer 0 and layer 1 mid-epoch, inside
    the writes of pre-training files and pretrained.safetensors, in fine-tuning. Every resumed run ends as
    the uninterrupted one: pretrained.safetensors, the final model, every models/ file, metrics.jsonl (both
    phases) and the summary."""
    rng = random.Random(SEED + 1)
    failures, killed, layer1 = [], 0, 0
    for name in tiny.PRETRAIN_CONFIGS:
        ref = fast_dir / f"ref-{name}"
        ref.mkdir()
        code, counts = run_child(ref, name)
        assert code == 0
        record = tiny.run_record(ref)
        assert record["pretrained.safetensors"] is not None
        again = fast_dir / f"ref2-{name}"
        again.mkdir()
        assert run_child(again, name)[0] == 0
        assert tiny.differences(tiny.run_record(again), record) == [], "the run is not deterministic"
        cfg = tiny.tiny_config(name)
        per_layer = cfg.pretraining_epochs * (400 // cfg.batch_size)  # updates of one layer's pre-training
        # mid-epoch in layer 0 and in layer 1, at the last pre-training update, early in fine-tuning
        steps = [rng.randrange(2, per_layer), per_layer + rng.randrange(45, per_layer - 5),
                 per_layer + rng.randrange(45, per_layer - 5), 2 * per_layer, 2 * per_layer + 7,
                 rng.randrange(2 * per_layer + 8, counts["step"])]
        cases = [{"kill_at_step": k} for k in steps]
        cases += [{"kill_at_fsync": k} for k in sorted(rng.sample(range(3, counts["fsync"]), 6))]
        cases.append({"kill_at_step": per_layer + 50, "then": {"kill_at_step": 30}})
        for i, case in enumerate(cases):
            run_dir = fast_dir / f"pcase-{i:02d}-{name}"
            run_dir.mkdir()
            hooks = {k: case[k] for k in ("kill_at_step", "kill_at_fsync") if k in case}
            code, _ = run_child(run_dir, name, hooks=hooks)
            assert code == -signal.SIGKILL, (case, code)
            if not (run_dir / "config.json").exists():
                continue
            killed += 1
            layer1 += per_layer < case.get("kill_at_step", 0) < 2 * per_layer
            if "then" in case:
                code, _ = run_child(run_dir, name, resume=True, hooks=case["then"])
                assert code in (-signal.SIGKILL, 0), (case, code)
            code, _ = run_child(run_dir, name, resume=True)
            assert code == 0, (case, code)
            diff = tiny.differences(tiny.run_record(run_dir), record)
            if diff:
                failures.append((name, case, diff))
    with capsys.disabled():
        print(f"\npre-training kill/resume: {killed - len(failures)}/{killed} resumed identically")
    assert not failures, failures
    assert killed >= 20 and layer1 >= 4
