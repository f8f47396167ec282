"""The RNN-SLU chapter: conlleval's chunk F1 on hand-worked cases, the Elman network (initialisation, context
windows, hand-derived gradients against autograd), the ATIS loader on pickles made here (right and wrong),
its download from 127.0.0.1 and a fake opener, the generated corpus learned to F1 > 95, a tiny end-to-end
`deeptut train`, and SIGKILL + resume ending bit-identically."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from deeptut.config import TrainConfig
from deeptut.data import atis, slots
from deeptut.errors import ConfigError, DataError
from deeptut.models.rnnslu import ElmanSLU, context_windows
from deeptut.train import rnnslu
from deeptut.train.conlleval import chunks, conlleval

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


# --- conlleval ------------------------------------------------------------------------------------------------

def test_chunks_by_conlleval_rules():
    assert chunks(["O", "O"]) == []
    assert chunks(["B-a", "I-a", "O", "B-b"]) == [(0, 1, "a"), (3, 3, "b")]
    assert chunks(["I-a", "I-a", "O"]) == [(0, 1, "a")]  # a chunk may start with I-
    assert chunks(["O", "I-a"]) == [(1, 1, "a")]
    assert chunks(["B-a", "B-a"]) == [(0, 0, "a"), (1, 1, "a")]  # adjacent chunks of one type
    assert chunks(["B-a", "I-b"]) == [(0, 0, "a"), (1, 1, "b")]  # a type change starts a chunk
    assert chunks(["I-a", "I-b", "I-b"]) == [(0, 0, "a"), (1, 2, "b")]
    assert chunks(["B-a", "I-a"]) == [(0, 1, "a")]  # ends at the sentence end


def test_f1_hand_cases():
    truth = [["B-from", "I-from", "O", "B-to"], ["O", "B-day"]]
    s = conlleval(truth, truth)
    assert (s.correct, s.predicted, s.true, s.f1) == (3, 3, 3, 100.0)
    # one chunk cut short (wrong), one right, one missed: P = 1/2, R = 1/3, F1 = 2PR/(P+R) = 40
    pred = [["B-from", "O", "O", "B-to"], ["O", "O"]]
    s = conlleval(pred, truth)
    assert (s.correct, s.predicted, s.true) == (1, 2, 3)
    assert s.precision == pytest.approx(50.0) and s.recall == pytest.approx(100 / 3) and s.f1 == pytest.approx(40.0)
    assert s.accuracy == pytest.approx(100 * 4 / 6)
    # O everywhere: nothing predicted, P = R = F1 = 0 (no division by zero)
    s = conlleval([["O"] * 4, ["O"] * 2], truth)
    assert (s.predicted, s.precision, s.recall, s.f1) == (0, 0.0, 0.0, 0.0)
    # I- where B- is: the same chunk for conlleval (it starts after O)
    assert conlleval([["I-from", "I-from", "O", "I-to"], ["O", "I-day"]], truth).f1 == 100.0
    # adjacent chunks of one type merged by the prediction: neither is right
    s = conlleval([["B-a", "I-a"]], [["B-a", "B-a"]])
    assert (s.correct, s.predicted, s.true) == (0, 1, 2)
    # the right span with the wrong type is wrong
    assert conlleval([["B-to"]], [["B-from"]]).correct == 0
    # sentences are apart: a chunk at the end of one does not run into the next
    s = conlleval([["B-a"], ["I-a"]], [["B-a"], ["I-a"]])
    assert (s.true, s.correct) == (2, 2)
    assert s.printed() == {"p": 100.0, "r": 100.0, "f1": 100.0}
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags for 2 words"):
        conlleval([["O"]], [["O", "O"]])


# --- the network ------------------------------------------------------------------------------------------------

def test_context_windows_as_the_chapter_prints_them():
    w = context_windows(torch.arange(5), 7, -1)
    assert w.tolist() == [[-1, -1, -1, 0, 1, 2, 3], [-1, -1, 0, 1, 2, 3, 4], [-1, 0, 1, 2, 3, 4, -1],
                          [0, 1, 2, 3, 4, -1, -1], [1, 2, 3, 4, -1, -1, -1]]
    assert context_windows(torch.arange(5), 3, 9)[0].tolist() == [9, 0, 1]


def test_initialisation_draw_order():
    m = ElmanSLU(10, 4, emb_dimension=3, nhidden=5, win=3, init_seed=345)
    rng = np.random.RandomState(345)
    for name, shape in (("emb", (11, 3)), ("wx", (9, 5)), ("wh", (5, 5)), ("w", (5, 4))):
        want = rng.uniform(-1.0, 1.0, shape).astype(np.float32) * np.float32(0.2)
        assert np.array_equal(getattr(m, name).detach().numpy(), want), name
    for name in ("bh", "b", "h0"):
        assert not getattr(m, name).detach().any()
    assert [n for n, _ in m.named_parameters()] == ["emb", "wx", "wh", "w", "bh", "b", "h0"]


def test_hand_gradients_match_autograd_and_batches_match_sentences():
    torch.manual_seed(0)
    m = ElmanSLU(30, 6, emb_dimension=8, nhidden=12, win=5, init_seed=1)
    w, y = torch.randint(0, 30, (9,)), torch.randint(0, 6, (9,))
    auto = torch.autograd.grad(m.sentence_nll(w, y), list(m.parameters()))
    cost, hand = m.sentence_gradients(w, y)
    assert float(cost) == pytest.approx(float(m.sentence_nll(w, y).detach()), rel=1e-6)
    for a, b in zip(auto, hand):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # a sentence padded at the end inside a batch gets the tags it gets alone
    w2 = torch.randint(0, 30, (4,))
    batch = torch.full((2, 9), m.pad, dtype=torch.long)  # padded with PADDING, as train/rnnslu.py pads
    batch[0], batch[1, :4] = w, w2
    out = m.classify(batch)
    assert torch.equal(out[0], m.classify(w)) and torch.equal(out[1, :4], m.classify(w2))
    # and the masked batch cost is the mean of the two sentences' costs
    mask = torch.zeros(2, 9)
    mask[0], mask[1, :4] = 1, 1
    labels = torch.zeros(2, 9, dtype=torch.long)
    labels[0], labels[1, :4] = y, y[:4]
    both = (m.sentence_nll(w, y) + m.sentence_nll(w2, y[:4])) / 2
    assert float(m.sentence_nll(batch, labels, mask).detach()) == pytest.approx(float(both.detach()), rel=1e-5)
    m.normalize()
    assert torch.allclose(m.emb.norm(dim=1), torch.ones(31))


def test_shuffle_is_the_same_permutation_each_epoch():
    p = rnnslu.python2_shuffle(10, 345)
    assert sorted(p.tolist()) == list(range(10)) and p.tolist() != list(range(10))
    assert np.array_equal(rnnslu.epoch_order(10, 345, 0), p)
    assert np.array_equal(rnnslu.epoch_order(10, 345, 2), p[p][p])


def test_bad_config_values():
    with pytest.raises(ConfigError, match="win .* must be odd"):
        TrainConfig(model="rnnslu", win=4)
    with pytest.raises(ConfigError, match="fold must be one of 0..4"):
        TrainConfig(model="rnnslu", fold=5)
    with pytest.raises(ConfigError, match="n_words and n_out must be known"):
        TrainConfig(model="rnnslu").net.build(1)


# --- the ATIS files ---------------------------------------------------------------------------------------------

WORDS = {"flights": 0, "from": 1, "to": 2, "boston": 3, "denver": 4, "<UNK>": 5}
TAGS = {"O": 0, "B-fromloc.city_name": 1, "B-toloc.city_name": 2}


def sentences(n: int):
    lex = [np.array([0, 1, 3, 2, 4], np.int32) for _ in range(n)]
    ne = [np.zeros(5, np.int32) for _ in range(n)]
    y = [np.array([0, 0, 1, 0, 2], np.int32) for _ in range(n)]
    return lex, ne, y


def write_fold(path: Path, obj) -> Path:
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=2)))
    return path


def fold_obj(**change):
    dicts = {"words2idx": dict(WORDS), "labels2idx": dict(TAGS), "tables2idx": {}}
    sets = [sentences(8), sentences(2), sentences(3)]
    return (*sets, dicts) if not change else change["make"](sets, dicts)


def test_read_fold_file(tmp_path):
    c = atis.read_atis(write_fold(tmp_path / "atis.fold3.pkl.gz", fold_obj()))
    assert (len(c.train), len(c.valid), len(c.test), c.n_words, c.n_classes) == (8, 2, 3, 6, 3)
    w, t = c.test.sentence(2)
    assert [c.words[i] for i in w] == ["flights", "from", "boston", "to", "denver"]
    assert c.tag_strings(t) == ["O", "O", "B-fromloc.city_name", "O", "B-toloc.city_name"]


def test_dataset_atis_reads_the_configs_fold(tmp_path):
    from deeptut.train.runner import load_data

    write_fold(tmp_path / "atis.fold2.pkl.gz", fold_obj())
    c = load_data(TrainConfig(model="rnnslu", dataset="atis", fold=2), tmp_path)
    assert c.source == str(tmp_path / "atis.fold2.pkl.gz") and len(c.test) == 3
    with pytest.raises(DataError, match="no atis.fold3.pkl.gz here"):
        load_data(TrainConfig(model="rnnslu", dataset="atis"), tmp_path)


def test_three_sets_split_80_20(tmp_path):
    train, _, test = sentences(10), None, sentences(3)
    c = atis.read_atis(write_fold(tmp_path / "atis.pkl.gz", (train, test, {"words2idx": WORDS, "labels2idx": TAGS})))
    assert (len(c.train), len(c.valid), len(c.test)) == (8, 2, 3)


@pytest.mark.parametrize("make, message", [
    (lambda s, d: (s[0], s[1], ([np.zeros(0, np.int32)] + s[2][0][1:], s[2][1], s[2][2]), d),
     r"atis\.fold3\.pkl\.gz: test: sentence 0 is empty"),
    (lambda s, d: (s[0], (s[1][0], s[1][1], [np.array([0, 0, 7, 0, 2], np.int32), s[1][2][1]]), s[2], d),
     r"atis\.fold3\.pkl\.gz: valid: sentence 0, word 2: label 7 is outside the tag set"),
    (lambda s, d: (*s, {"words2idx": d["words2idx"]}), r"atis\.fold3\.pkl\.gz: dicts has no 'labels2idx' table"),
    (lambda s, d: (*s, {"words2idx": {"a": 0, "b": 0}, "labels2idx": TAGS}),
     r"dicts\['words2idx'\] gives index 0 to both 'a' and 'b'"),
    (lambda s, d: (*s, {"words2idx": [1, 2], "labels2idx": TAGS}), r"dicts\['words2idx'\] should be a non-empty"),
    (lambda s, d: (s[0], s[1], (s[2][0], s[2][1], s[2][2][:1]), d), r"test: 3 sentences of words but 1 of labels"),
    (lambda s, d: (s[0], [1, 2], s[2], d), r"valid should be a triple \(words, named entities, labels\)"),
    (lambda s, d: ((s[0][0][:1] + [np.array([0, 99], np.int32)], s[0][1][:2], s[0][2][:1] + [np.array([0, 0], np.int32)]),
                   s[1], s[2], d), r"train: sentence 1, word 1: index 99 is outside the vocabulary"),
    (lambda s, d: (s[0], s[1], (s[2][0], s[2][1], [[0.5] * 5] * 3), d), r"test: sentence 0 labels should be a list"),
])
def test_bad_fold_files_name_the_file_and_entry(tmp_path, make, message):
    path = write_fold(tmp_path / "atis.fold3.pkl.gz", fold_obj(make=make))
    with pytest.raises(DataError, match=message):
        atis.read_atis(path)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = write_fold(tmp_path / "atis.fold3.pkl.gz", (Evil(),))
    with pytest.raises(DataError, match=r"refusing to load .*atis\.fold3\.pkl\.gz: it names posix\.system"):
        atis.read_atis(path)
    (tmp_path / "x.pkl.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(DataError, match="x.pkl.gz"):
        atis.read_atis(tmp_path / "x.pkl.gz")


def test_find_and_download_with_a_fake_opener(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPTUT_DATA", raising=False)
    good = gzip.compress(pickle.dumps(fold_obj(), protocol=2))
    asked = []

    class Response:
        def __init__(self, data):
            self.data, self.headers = data, {"Content-Length": str(len(data))}

        def read(self, n):
            out, self.data = self.data[:n], self.data[n:]
            return out

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    def opener(url, timeout):
        asked.append(url)
        return Response(good)

    with pytest.raises(DataError, match="no atis.fold1.pkl.gz found"):
        atis.load_atis(1, download=False)
    c = atis.load_atis(1, opener=opener)
    assert asked == [atis.ATIS_URL + "atis.fold1.pkl.gz"] and len(c.train) == 8
    assert atis.find_fold(1) == tmp_path / "cache" / "deeptut" / "atis" / "atis.fold1.pkl.gz"
    with pytest.raises(DataError, match="could not download .*atis.fold2.pkl.gz: .*expected"):
        atis.download_atis(tmp_path / "d", 2, opener=lambda u, t: Response(gzip.compress(pickle.dumps([1], 2))))
    assert not list((tmp_path / "d").iterdir())  # nothing half-written is left

    def unreachable(url, timeout):
        raise OSError("Name or service not known")

    with pytest.raises(DataError, match=r"(?s)could not download .*atis\.fold4.*--data-dir.*rnnslu-slots"):
        atis.load_atis(4, opener=unreachable)
    with pytest.raises(DataError, match="no atis.fold3.pkl.gz here"):
        atis.find_fold(3, tmp_path)


def test_download_from_a_local_http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    write_fold(root / "atis.fold0.pkl.gz", fold_obj())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        path = atis.download_atis(tmp_path / "dest", 0, base_url=base)
        assert path.read_bytes() == (root / "atis.fold0.pkl.gz").read_bytes()
        with pytest.raises(DataError, match=r"could not download .*atis\.fold4\.pkl\.gz"):
            atis.download_atis(tmp_path / "dest", 4, base_url=base)  # 404
    finally:
        server.shutdown()
        server.server_close()


# --- learning, runs, resume ---------------------------------------------------------------------------------

def tiny_cfg(**over) -> TrainConfig:
    values = dict(model="rnnslu", preset="tiny-rnnslu", dataset="slots", emb_dimension=16, nhidden=32, win=5,
                  learning_rate=0.3, batch_size=1, n_epochs=4, seed=345, init_seed=345, threads=1, device="cpu")
    values.update(over)
    return TrainConfig(**values)


@pytest.mark.slow  # ~4 s on a quiet machine, ~9 s at load 14 on 2 cores
def test_generated_corpus_is_learned_to_f1_above_95():
    corpus = slots.generate(n_train=400, n_test=150, seed=5)
    assert corpus.tags[0] == "B-airline_name" and "O" in corpus.tags
    summary = rnnslu.train(tiny_cfg(n_epochs=3, learning_rate=2.0, nhidden=64, emb_dimension=32), corpus, None,
                           quiet=True)
    assert summary["valid_f1"] > 95 and summary["test_f1"] > 95, summary
    assert summary["result"].startswith(f"BEST RESULT: epoch {summary['best_epoch']} valid F1 ")


def test_decay_halves_the_rate_and_goes_back_to_the_best(monkeypatch):
    corpus = slots.generate(n_train=30, n_test=10, seed=1)
    seen = []
    real = rnnslu.score

    def scripted(model, c, split, device):  # validation F1 improves once, then never
        s = real(model, c, split, device)
        if split is c.valid:
            seen.append(None)
        return s

    monkeypatch.setattr(rnnslu, "score", scripted)
    monkeypatch.setattr(rnnslu, "DECAY_AFTER", 1)
    monkeypatch.setattr(rnnslu, "_scores", lambda v, t: {k: (50.0 if len(seen) == 1 else 10.0) for k in
                                                          ("valid_f1", "valid_p", "valid_r", "test_f1", "test_p", "test_r")})
    summary = rnnslu.train(tiny_cfg(n_epochs=4, learning_rate=0.4), corpus, None, quiet=True)
    assert summary["best_epoch"] == 0 and summary["final_learning_rate"] == pytest.approx(0.4 / 8)


def run_record(run_dir: Path) -> dict:
    metrics = [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "epoch_train_s")}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    for k in ("result", "train_seconds", "seconds_per_epoch"):
        summary.pop(k)
    return {"best": (run_dir / "best.safetensors").read_bytes(), "metrics": metrics, "summary": summary}


CHILD = """
import os, signal, sys
from pathlib import Path
import torch
from deeptut.data import slots
from deeptut.store import rundir
from deeptut.train import rnnslu, runner
sys.path.insert(0, {tests!r})
from test_rnnslu import tiny_cfg
run_dir, kill_at, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
run_dir.mkdir(parents=True, exist_ok=True)
real, n = rnnslu.sgd_update, [0]
def counted(*a, **k):
    n[0] += 1
    if n[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
rnnslu.sgd_update = counted
cfg = rundir.load_config(run_dir) if resume else tiny_cfg(n_epochs=3, batch_size=4)
runner.train(cfg, slots.generate(n_train=60, n_test=20, seed=3), run_dir, quiet=True, resume=resume)
"""


def child(run_dir: Path, kill_at: int = 0, resume: bool = False) -> int:
    code = CHILD.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code, str(run_dir), str(kill_at), "1" if resume else "0"],
                          env=env, capture_output=True, timeout=120).returncode


@pytest.mark.slow  # three interpreter start-ups
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    assert child(ref) == 0
    # 12 updates an epoch (48 sentences, batch 4): killed inside epoch 1 (update 5 of 12), then resumed
    killed = tmp_path / "killed"
    assert child(killed, kill_at=17) == -signal.SIGKILL
    assert not (killed / "summary.json").exists()  # (its checkpoint is written in the background: maybe not yet)
    assert child(killed, resume=True) == 0
    a, b = run_record(ref), run_record(killed)
    assert a["metrics"] == b["metrics"] and a["summary"] == b["summary"] and a["best"] == b["best"]
    assert len(a["metrics"]) == 3


@pytest.mark.slow  # ~5-8 s: a CLI run, then its pictures
def test_tiny_deeptut_train_writes_the_run_directory(tmp_path, capsys):
    from deeptut.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", "rnnslu-fast", "--run-dir", str(run_dir), "--quiet", "--n_epochs", "1",
                 "--batch_size", "128", "--nhidden", "16", "--emb_dimension", "8", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "BEST RESULT: epoch 0 valid F1" in out and str(run_dir) in out
    for f in ("config.json", "model.json", "init.safetensors", "best.safetensors", "metrics.jsonl", "summary.json"):
        assert (run_dir / f).is_file(), f
    model = json.loads((run_dir / "model.json").read_text())
    assert (model["model"], model["n_words"], model["n_out"]) == ("rnnslu", slots.generate().n_words, 25)
    line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= line["valid_f1"] <= 100 and line["valid_error"] == pytest.approx(1 - line["valid_f1"] / 100)
    from deeptut.store.rundir import load_module

    net = load_module(run_dir)
    assert isinstance(net, ElmanSLU) and net.nh == 16
    assert main(["viz", str(run_dir)]) == 0
    assert (run_dir / "plots" / "f1.png").stat().st_size > 1000
