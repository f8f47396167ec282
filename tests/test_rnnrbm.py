"""The RNN-RBM chapter (models/rnnrbm.py, train/rnnrbm.py, data/music.py, viz/music.py): MIDI in and out,
bad MIDI files, the cost and its gradient against a hand computation, the initialisation's draw order, AIS
per frame against exact enumeration, a tiny `deeptut train` run on generated MIDI files, SIGKILL and resume,
and `deeptut sample`."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mido")

from deeptut.config import TrainConfig  # noqa: E402
from deeptut.data import music  # noqa: E402
from deeptut.errors import DataError  # noqa: E402
from deeptut.models.rnnrbm import DEFAULT_INIT_SEED, RnnRbm, init_rng  # noqa: E402
from deeptut.train import ais  # noqa: E402
from deeptut.train import rnnrbm as train_rnnrbm  # noqa: E402

N_PITCHES, LOW = 12, 60  # the tiny runs' piano-rolls: one octave from middle C


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread (a second one only spins on a busy machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_piece(rng: np.random.RandomState, n: int) -> np.ndarray:
    """A learnable piano-roll [n, 12]: a rising pair of notes a fourth apart, and 5 % noise; the last
    frame holds a note (so a MIDI file gives back every frame)."""
    roll = np.zeros((n, N_PITCHES), np.float32)
    t = np.arange(n)
    roll[t, (4 * t) % N_PITCHES] = 1
    roll[t, (4 * t + 5) % N_PITCHES] = 1
    roll[rng.rand(n, N_PITCHES) < 0.05] = 1
    return roll


def tiny_music(seed: int = 0) -> music.Music:
    rng = np.random.RandomState(seed)
    splits = {s: music.PianoRolls.from_sequences([tiny_piece(rng, rng.randint(15, 35)) for _ in range(m)],
                                                 [f"{s}{i}" for i in range(m)])
              for s, m in (("train", 6), ("valid", 2), ("test", 2))}
    return music.Music(source="generated", pitch_low=LOW, **splits)


TINY = dict(model="rnnrbm", n_visible=N_PITCHES, pitch_low=LOW, n_hidden=8, n_hidden_recurrent=6, k=2,
            batch_size=10, n_epochs=3, ais_frames=4, ais_steps=10, ais_runs=4, threads=1, device="cpu", seed=7)


# --- MIDI ----------------------------------------------------------------------------------------------


def test_midi_round_trip_is_identical(tmp_path):
    roll = tiny_piece(np.random.RandomState(1), 40)
    roll[10:14, 3] = 1  # a held note over several frames
    path = music.roll_to_midi(roll, tmp_path / "piece.mid", dt=0.3, pitch_low=LOW)
    back = music.midi_to_roll(path, dt=0.3, pitch_low=LOW, n_pitches=N_PITCHES)
    assert back.dtype == np.float32 and back.shape == roll.shape
    np.testing.assert_array_equal(back, roll)
    notes = music.read_notes(path)
    assert (LOW + 3, pytest.approx(3.0), pytest.approx(4.2)) in [(p, a, b) for p, a, b in notes]  # 10..13: 3.0-4.2 s
    # the full piano range and another frame length
    wide = np.zeros((5, 88), np.float32)
    wide[[0, 1, 2, 4], [0, 87, 40, 41]] = 1
    back = music.midi_to_roll(music.roll_to_midi(wide, tmp_path / "wide.mid", 0.25), 0.25)
    np.testing.assert_array_equal(back, wide)


def test_bad_midi_files_are_errors_naming_the_file(tmp_path):
    good = music.roll_to_midi(tiny_piece(np.random.RandomState(2), 20), tmp_path / "good.mid", 0.3, LOW)
    data = good.read_bytes()
    cases = {"truncated.mid": (data[:-7], "truncated"), "empty.mid": (b"", "empty"),
             "text.mid": (b"not a midi file at all", "not a MIDI file")}
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=what) as e:
            music.midi_to_roll(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
    with pytest.raises(DataError, match="no notes between"):  # notes, but none in the pitch range
        music.midi_to_roll(good, pitch_low=100, n_pitches=12)


def test_nottingham_folders_load_split_and_cache(tmp_path):
    rng = np.random.RandomState(3)
    rolls = {}
    for split, m in (("train", 3), ("valid", 1), ("test", 2)):
        d = tmp_path / "data" / "Nottingham" / split
        d.mkdir(parents=True)
        rolls[split] = [tiny_piece(rng, rng.randint(10, 20)) for _ in range(m)]
        for i, r in enumerate(rolls[split]):
            music.roll_to_midi(r, d / f"tune{i}.mid", 0.3, LOW)
    m = music.load_midi_folders(tmp_path / "data", 0.3, LOW, N_PITCHES, cache=tmp_path / "cache")
    for split in rolls:
        got = getattr(m, split)
        assert got.names == tuple(f"tune{i}.mid" for i in range(len(rolls[split])))
        for a, b in zip(got.sequences(), rolls[split]):
            np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "cache").glob("rolls-*.npz"))) == 1
    again = music.load_midi_folders(tmp_path / "data", 0.3, LOW, N_PITCHES, cache=tmp_path / "cache")
    np.testing.assert_array_equal(again.train.x, m.train.x)
    with pytest.raises(DataError, match="no Nottingham database"):
        music.nottingham_dirs(tmp_path / "cache")
    (tmp_path / "data" / "Nottingham" / "valid" / "tune0.mid").unlink()
    with pytest.raises(DataError, match="valid.*no .mid files"):
        music.nottingham_dirs(tmp_path / "data")


def test_chorale_split_and_transposition():
    split = music.split_pieces([f"p{i}" for i in range(100)])
    assert [len(split[s]) for s in ("train", "valid", "test")] == [60, 20, 20]
    assert sorted(sum(split.values(), [])) == list(range(100))
    assert [music.transposition_to_c(pc) for pc in (0, 2, 5, 6, 7, 11)] == [0, -2, -5, -6, 5, 1]


# --- the model -----------------------------------------------------------------------------------------


def test_initialisation_follows_rnnrbm_py_draw_order():
    m = RnnRbm(5, 4, 3)
    rng = np.random.RandomState(DEFAULT_INIT_SEED)
    assert m.sample_seed == rng.randint(1 << 30)
    for name, shape in (("W", (5, 4)), ("Wuh", (3, 4)), ("Wuv", (3, 5)), ("Wvu", (5, 3)), ("Wuu", (3, 3))):
        want = rng.normal(scale=0.01 if name == "W" else 0.0001, size=shape).astype(np.float32)
        np.testing.assert_array_equal(getattr(m, name).detach().numpy(), want)
    for name in ("bv", "bh", "bu"):
        assert not getattr(m, name).detach().any()
    assert init_rng(5, 4, 3).randint(1000) == rng.randint(1000)  # the shuffles continue the same stream


def test_cost_monitor_and_gradient_match_a_hand_computation():
    torch.manual_seed(0)
    m = RnnRbm(5, 4, 3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    v = (torch.rand(6, 1, 5, dtype=torch.float64) < 0.4).double()  # [T, B, n_visible]
    g = torch.Generator().manual_seed(11)
    cost, monitor = m.cost(v, None, k=3, generator=g)
    m.zero_grad()
    cost.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}

    # by hand: the recurrence one frame at a time, the same noise (the chain draws first), the FE difference
    m.zero_grad()
    g = torch.Generator().manual_seed(11)
    u = torch.zeros(3, dtype=torch.float64)
    bvs, bhs = [], []
    for t in range(6):
        bvs.append(m.bv + u @ m.Wuv)
        bhs.append(m.bh + u @ m.Wuh)
        u = torch.tanh(m.bu + v[t, 0] @ m.Wvu + u @ m.Wuu)
    bv, bh = torch.stack(bvs), torch.stack(bhs)
    with torch.no_grad():
        s = v[:, 0]
        for _ in range(3):
            h = (torch.rand(6, 4, generator=g, dtype=torch.float64) < torch.sigmoid(s @ m.W + bh)).double()
            s = (torch.rand(6, 5, generator=g, dtype=torch.float64) < torch.sigmoid(h @ m.W.t() + bv)).double()
        h = (torch.rand(6, 4, generator=g, dtype=torch.float64) < torch.sigmoid(s @ m.W + bh)).double()
        mean_v = torch.sigmoid(h @ m.W.t() + bv)
        x = v[:, 0]
        want_monitor = (x * torch.log(mean_v) + (1 - x) * torch.log(1 - mean_v)).sum() / 6

    def fe(z):
        return -(z * bv).sum(1) - torch.log1p(torch.exp(z @ m.W + bh)).sum(1)

    want = (fe(v[:, 0]) - fe(s)).sum() / 6
    want.backward()
    assert float(cost.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert float(monitor) == pytest.approx(float(want_monitor), rel=1e-12)
    assert float(monitor) < 0
    for n, p in m.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12)
    # CD's closed form for the visible biases' own part: d/d bv of mean FE difference = mean(s - v) ... plus
    # nothing else (bv enters only the RBMs): check it
    torch.testing.assert_close(grads["bv"], (s - x).mean(0), rtol=1e-10, atol=1e-12)


def test_padding_changes_nothing_and_generation_is_binary():
    m = RnnRbm(5, 4, 3)
    rng = np.random.RandomState(0)
    a = torch.as_tensor(tiny_piece(rng, 7)[:, :5])
    b = torch.as_tensor(tiny_piece(rng, 4)[:, :5])
    v, mask = train_rnnrbm.batch_of(torch.cat([a, b]), [(0, 7), (7, 4)])
    bv, bh, _ = m.biases(v)
    bv_b, bh_b, _ = m.biases(b.unsqueeze(1))
    torch.testing.assert_close(bv[:4, 1], bv_b[:, 0])
    torch.testing.assert_close(bh[:4, 1], bh_b[:, 0])
    assert mask.sum() == 11
    roll = m.generate(9, 2, m.make_generator())
    assert roll.shape == (9, 5) and set(roll.unique().tolist()) <= {0.0, 1.0}


def test_frame_log_likelihood_by_ais_against_enumeration():
    """Per frame, the AIS estimate against log Z by enumeration (10 visible units: 1,024 states)."""
    torch.manual_seed(1)
    m = RnnRbm(10, 6, 4)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    rolls = music.PianoRolls.from_sequences([(np.random.RandomState(2).rand(5, 10) < 0.3).astype(np.float32)],
                                            ["p"])
    base = train_rnnrbm.base_rate(rolls)
    est = train_rnnrbm.frame_log_likelihood(m, rolls, base, 5, 200, 30, seed=0)
    bv, bh, _ = m.biases(torch.as_tensor(rolls.x).unsqueeze(1))
    exact = []
    for t in range(5):
        rbm = train_rnnrbm.FrameRBM(m.W.detach(), bh[t, 0].detach(), bv[t, 0].detach())
        exact.append(ais.mean_log_probability(rbm, torch.as_tensor(rolls.x[t:t + 1]), ais.exact_log_partition(rbm)))
    assert est["n_frames"] == 5
    assert est["log_likelihood"] == pytest.approx(float(np.mean(exact)), abs=0.05)
    assert est["log_likelihood"] < 0


# --- runs ----------------------------------------------------------------------------------------------


def _write_dataset(root: Path) -> None:
    data = tiny_music(0)
    for split in ("train", "valid", "test"):
        d = root / "Nottingham" / split
        d.mkdir(parents=True)
        for i, seq in enumerate(getattr(data, split).sequences()):
            music.roll_to_midi(seq, d / f"{split}{i}.mid", 0.3, LOW)


def _flags(**kw) -> list[str]:
    return [a for k, v in kw.items() if k != "model" for a in (f"--{k}", str(v))]


@pytest.mark.slow  # ~5 s on an idle machine (the CLI, matplotlib's import, three pictures)
def test_deeptut_train_then_sample_writes_midi_and_png(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from deeptut.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _write_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "rnnrbm", "--data-dir", str(tmp_path / "data"), "--run-dir", str(run), "--quiet",
                 *_flags(**TINY)]) == 0
    out = capsys.readouterr().out
    assert "test log-likelihood" in out and "nats/frame" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["test_loglik"]["n_frames"] == 4
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [0, 1, 2] and all(-N_PITCHES < ln["cost"] < 0 for ln in lines)
    for name in ("config.json", "model.json", "best.safetensors"):
        assert (run / name).is_file()
    assert main(["sample", str(run), "--seed", "5"]) == 0
    mid, png = run / "plots" / "sample.mid", run / "plots" / "sample.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roll = music.midi_to_roll(mid, 0.3, LOW, N_PITCHES)
    assert 0 < len(roll) <= 200 and roll.sum() > 0
    info = json.loads((run / "plots" / "sample.json").read_text())
    assert info["seed"] == 5 and info["frames"] == 200
    assert main(["viz", str(run)]) == 0  # the family's pictures: a generated piece and the cost per epoch
    assert (run / "plots" / "costs.png").read_bytes()[:4] == b"\x89PNG"


# --- SIGKILL and resume --------------------------------------------------------------------------------

KILL = dict(TINY, n_epochs=4, optimizer="adam", sequences_per_batch=2, clip_norm=1.0, learning_rate=0.01)


def _child(run_dir: str, resume: bool, kill_at_update: int | None, kill_at_ais: int | None) -> None:
    counts = {"update": 0, "ais": 0}
    real_update, real_ais = train_rnnrbm.update, train_rnnrbm.ais.ais_log_partition

    def update(*a, **k):
        counts["update"] += 1
        if counts["update"] == kill_at_update:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_update(*a, **k)

    def ais_log_partition(*a, **k):
        counts["ais"] += 1
        if counts["ais"] == kill_at_ais:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_ais(*a, **k)

    train_rnnrbm.update, train_rnnrbm.ais.ais_log_partition = update, ais_log_partition
    try:
        train_rnnrbm.train(TrainConfig(**KILL), tiny_music(0), Path(run_dir), quiet=True, resume=resume)
        code = 0
    except BaseException as e:  # noqa: BLE001 - report, never hang the parent
        print(f"child failed: {type(e).__name__}: {e}", flush=True)
        code = 1
    os._exit(code)


def _run(run_dir: Path, resume: bool = False, kill_at_update: int | None = None,
         kill_at_ais: int | None = None) -> int:
    run_dir.mkdir(exist_ok=True)
    p = mp.get_context("fork").Process(target=_child, args=(str(run_dir), resume, kill_at_update, kill_at_ais))
    p.start()
    p.join(120)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def _record(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    for k in ("train_seconds",):
        summary.pop(k)
    lines = [{k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
             for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"best": (run_dir / "best.safetensors").read_bytes(), "summary": summary, "lines": lines}


@pytest.fixture
def fast_dir(tmp_path):
    """A tmpfs when there is one (fsync is free there; a process kill is a process kill anywhere)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import shutil
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="deeptut-rnnrbm-", dir=shm))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


@pytest.mark.slow  # ~8 s on an idle 2-core machine: nine forked child runs
def test_sigkill_then_resume_is_bit_identical(fast_dir):
    import torch._dynamo  # noqa: F401 - torch.optim imports it on first use: once here, not in every child

    tmp_path = fast_dir
    ref = tmp_path / "ref"
    assert _run(ref) == 0
    want = _record(ref)
    n_updates = want["summary"]["iterations"]  # 4 epochs x 3 batches of 2 subsequences
    assert n_updates == 4 * train_rnnrbm.n_batches(tiny_music(0).train, 10, 2)
    cases = [dict(kill_at_update=2), dict(kill_at_update=n_updates // 2 + 1), dict(kill_at_update=n_updates),
             dict(kill_at_ais=3)]
    for i, case in enumerate(cases):
        run = tmp_path / f"case{i}"
        assert _run(run, **case) == -signal.SIGKILL, case
        assert _run(run, resume=True) == 0, case
        got = _record(run)
        assert got["lines"] == want["lines"], case
        assert got["summary"] == want["summary"], case
        assert got["best"] == want["best"], case
