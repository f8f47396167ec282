"""The LSTM chapter (models/lstm.py, data/sequences.py, train/sequence.py): the mask is exact, the
initialisation is the chapter's, Adadelta and RMSprop are lstm.py's formulas, an LSTM remembers what a
bag of words cannot, and a run goes through the family seam (deeptut train, metrics, viz records)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deeptut.config import TrainConfig
from deeptut.data.sequences import SequenceSets, SequenceSplit, batches, bucketed, by_length
from deeptut.errors import ConfigError, DataError
from deeptut.models.lstm import LSTMClassifier
from deeptut.train import sequence

pytestmark = pytest.mark.usefixtures("one_thread")


def order_task(n: int, seed: int, vocab: int = 12, lengths: tuple[int, int] = (6, 16)) -> SequenceSplit:
    """Each sequence holds the markers 2 and 3 once each, one at the first step and the other at the last,
    with filler tokens 4.. between; the label is 1 when it starts with 2. Every sequence has the same
    multiset of markers, so a bag of words sees nothing; the label is decided by the tokens farthest apart."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        y = int(rng.integers(0, 2))
        fill = list(rng.integers(4, vocab, int(rng.integers(*lengths)) - 2))
        seqs.append(([2] + fill + [3]) if y else ([3] + fill + [2]))
        labels.append(y)
    return SequenceSplit.from_lists(seqs, labels)


def toy_sets(n_train: int = 400, seed: int = 0) -> SequenceSets:
    return SequenceSets(order_task(n_train, seed), order_task(100, seed + 1), order_task(200, seed + 2),
                        source="order task", name="toy", n_classes=2, vocabulary=12)


# --- the mask: a padded step changes nothing ----------------------------------------------------------------


def test_padding_changes_nothing_bit_for_bit():
    model = LSTMClassifier(n_words=12, dim_proj=8, n_out=2, init_seed=5).eval()
    split = order_task(6, seed=3).to("cpu")
    x, mask, _ = split.batch(torch.arange(6))  # padded to the longest of the six
    assert (mask.sum(1) < mask.shape[1]).any(), "some sequences must be padded"
    wide_x = torch.cat([x, torch.zeros(6, 7, dtype=x.dtype)], 1)  # 7 more padded steps
    wide_mask = torch.cat([mask, torch.zeros(6, 7)], 1)
    with torch.no_grad():
        assert torch.equal(model(x, mask), model(wide_x, wide_mask))
        # one sequence alone, unpadded, and the same padded by 9 steps: the same bits
        n = int(mask[0].sum())
        alone = model.encode(x[:1, :n], mask[:1, :n])
        padded = model.encode(torch.cat([x[:1, :n], torch.zeros(1, 9, dtype=x.dtype)], 1),
                              torch.cat([mask[:1, :n], torch.zeros(1, 9)], 1))
        assert torch.equal(alone, padded)
        # alone and inside the padded batch: the same up to the matrix products' blocking (rounding)
        for i in range(6):
            n = int(mask[i].sum())
            torch.testing.assert_close(model.encode(x[i:i + 1, :n], mask[i:i + 1, :n])[0],
                                       model.encode(x, mask)[i], rtol=1e-6, atol=1e-7)


def test_padded_steps_get_no_gradient():
    model = LSTMClassifier(n_words=12, dim_proj=4, n_out=2, use_dropout=False, init_seed=1)
    x = torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 0, 0]])
    model.cost(model(x, mask), torch.tensor([1])).backward()
    assert model.Wemb.grad[0].abs().sum() == 0  # the padding token's row
    assert model.Wemb.grad[5:8].abs().sum() > 0


def test_minibatches_are_built_on_the_device_as_prepare_data_builds_them():
    split = SequenceSplit.from_lists([[4, 5], [6], [7, 8, 9]], [0, 1, 0])
    x, mask, y = split.padded(np.array([2, 0, 1]))
    assert x.tolist() == [[7, 8, 9], [4, 5, 0], [6, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert y.tolist() == [0, 0, 1]
    rows = SequenceSplit.from_padded(np.arange(24, dtype=np.float32).reshape(2, 4, 3), [2, 4], [1, 0])
    fx, fmask, _ = rows.padded()
    assert fx.shape == (2, 4, 3) and fx[0, 2:].sum() == 0 and fmask[0].tolist() == [1, 1, 0, 0]
    assert np.array_equal(fx[1], np.arange(12, 24).reshape(4, 3))
    # lstm.py's get_minibatches_idx keeps the remainder as a last minibatch; bucketing keeps every example
    assert [len(b) for b in batches(10, 4)] == [4, 4, 2]
    lengths = np.array([5, 1, 4, 2, 3, 6, 1])
    b = bucketed(lengths, 2, np.arange(7), window=10)
    assert sorted(np.concatenate(b).tolist()) == list(range(7))
    assert [lengths[i].tolist() for i in b] == [[1, 1], [2, 3], [4, 5], [6]]
    assert lengths[np.concatenate(by_length(lengths, 3))].tolist() == sorted(lengths.tolist())
    with pytest.raises(DataError, match="entry 1 is an empty sequence"):
        SequenceSplit.from_lists([[4], []], [0, 1], "reviews")


# --- the chapter's initialisation and optimizers ---------------------------------------------------------------


def test_initialisation_is_the_chapters():
    m = LSTMClassifier(n_words=50, dim_proj=6, n_out=3, init_seed=123)
    rng = np.random.RandomState(123)  # the chapter's order: Wemb, 4 x W, 4 x U, classifier U
    assert np.array_equal(m.Wemb.detach().numpy(), (0.01 * rng.rand(50, 6)).astype(np.float32))
    w = m.lstm_W.detach().numpy()
    first = np.linalg.svd(rng.randn(6, 6))[0].astype(np.float32)
    assert np.array_equal(w[:, :6], first)
    for block in np.split(m.lstm_U.detach().numpy(), 4, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)  # orthogonal
    assert m.lstm_b.abs().sum() == 0 and m.b.abs().sum() == 0
    assert tuple(m.U.shape) == (6, 3) and float(m.U.detach().abs().max()) < 0.1
    rows = LSTMClassifier(dim_proj=6, n_out=10, inputs="rows", n_in=28, init_seed=1)
    assert tuple(rows.Wx.shape) == (28, 6) and not hasattr(rows, "Wemb")


def test_adadelta_is_lstm_py_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = sequence.Adadelta([p])
    grads = [np.array([0.3, -1.0, 2.0]), np.array([-0.1, 0.4, 0.0])]
    want, rg2, ru2 = p.detach().numpy().copy(), np.zeros(3), np.zeros(3)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        rg2 = 0.95 * rg2 + 0.05 * g ** 2  # f_grad_shared's update
        updir = -np.sqrt(ru2 + 1e-6) / np.sqrt(rg2 + 1e-6) * g  # f_update's
        ru2 = 0.95 * ru2 + 0.05 * updir ** 2
        want = want + updir
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12)
    # the first step is sqrt(1e-6 / (0.05 g^2 + 1e-6)) * g: about 0.0045 for g = 1, whatever the scale
    assert abs(-np.sqrt(1e-6) / np.sqrt(0.05 + 1e-6) - (-0.004472)) < 1e-5


def test_rmsprop_is_lstm_py_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.2, -0.7], dtype=torch.float64))
    opt = sequence.TutorialRMSprop([p], lr=1e-4)
    want, rg, rg2, ud = p.detach().numpy().copy(), np.zeros(2), np.zeros(2), np.zeros(2)
    for g in (np.array([0.5, -0.25]), np.array([1.0, 0.1])):
        p.grad = torch.tensor(g)
        opt.step()
        rg, rg2 = 0.95 * rg + 0.05 * g, 0.95 * rg2 + 0.05 * g ** 2
        ud = 0.9 * ud - 1e-4 * g / np.sqrt(rg2 - rg ** 2 + 1e-4)
        want = want + ud
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12)


def test_patience_rule_is_lstm_py():
    rule = sequence.PatienceRule(2)
    history, decisions = [], []
    for err in (0.5, 0.4, 0.4, 0.45, 0.42, 0.41, 0.43, 0.44):
        history.append(err)
        decisions.append(rule.update(history))
    # 0.4 ties the best: a new best (lstm.py's <=); from the 4th on, each error >= min(history[:-2]) is bad,
    # and the third bad one since the last best (0.41, though better than 0.42) stops
    assert [d[0] for d in decisions] == [True, True, True, False, False, False, False, False]
    assert [d[1] for d in decisions] == [False] * 5 + [True] * 3
    assert rule.state_dict() == {"bad_counter": 5}


# --- memory: the LSTM against a bag of words ------------------------------------------------------------------------


def bag_of_words_error(data: SequenceSets, epochs: int = 300) -> float:
    """Logistic regression on each sequence's token counts (no order), trained to convergence."""
    def counts(s: SequenceSplit) -> torch.Tensor:
        out = np.zeros((len(s), data.vocabulary), np.float32)
        ends = np.cumsum(s.lengths)
        for i, (a, b) in enumerate(zip(ends - s.lengths, ends)):
            np.add.at(out[i], s.steps[a:b], 1.0)
        return torch.from_numpy(out / s.lengths[:, None].astype(np.float32))

    x, y = counts(data.train), torch.from_numpy(data.train.y)
    lin = torch.nn.Linear(data.vocabulary, 2)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x), y).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(counts(data.test)).argmax(1).numpy() != data.test.y).mean())


@pytest.mark.slow  # ~10 s on the shared 2-core machine
def test_lstm_remembers_what_a_bag_of_words_cannot():
    data = toy_sets(300)
    cfg = TrainConfig(model="lstm", n_words=12, dim_proj=12, use_dropout=False, optimizer="adam",
                      learning_rate=0.03, batch_size=20, n_epochs=8, patience=10, shuffle=True, threads=1,
                      device="cpu", valid_batch_size=100)
    summary = sequence.train(cfg, data, None, quiet=True)
    bow = bag_of_words_error(data)
    assert bow > 0.35, bow  # chance: the markers' counts are the same in both classes
    assert summary["test_error"] < 10.0, summary  # percent


# --- the seam: config, data checks, a run, its records --------------------------------------------------------------


def test_config_section_and_checks():
    cfg = TrainConfig(model="lstm", optimizer="rmsprop", dim_proj=32)
    assert cfg.net.procedure == "sequence" and cfg.dim_proj == 32
    assert set(cfg.model_args()) == {"model", "inputs", "n_words", "n_in", "dim_proj", "n_out", "use_dropout"}
    for bad, field in ((dict(optimizer="adagrad"), "optimizer"), (dict(inputs="chars"), "inputs"),
                       (dict(valid_portion=1.0), "valid_portion"), (dict(test_size=0), "test_size"),
                       (dict(clip_norm=-1.0), "clip_norm")):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(model="lstm", **bad)
    with pytest.raises(ConfigError, match="dim_proj is a field of model"):
        TrainConfig(model="mlp", dim_proj=8)
    data = toy_sets(40)
    with pytest.raises(ConfigError, match="n_words 5 is smaller"):
        sequence.check_data(TrainConfig(model="lstm", n_words=5), data)
    with pytest.raises(ConfigError, match="inputs = rows"):
        sequence.check_data(TrainConfig(model="lstm", inputs="rows"), data)
    with pytest.raises(ConfigError, match="trains on sequences"):
        sequence.check_data(TrainConfig(model="lstm"), object())
    with pytest.raises(ConfigError, match="optimizer adadelta has none"):
        sequence.check_data(TrainConfig(model="lstm", lr_schedule="cosine"), data)


def test_lr_schedule_steps_are_learning_rate_ats(tmp_path, monkeypatch):
    """[optim] lr_schedule: each update's step size is loop.learning_rate_at's for its index over
    n_epochs x n_train_batches updates, and metrics.jsonl records each epoch's last."""
    from deeptut.store.rundir import Run
    from deeptut.train.loop import learning_rate_at

    cfg = TrainConfig(model="lstm", preset="tiny-lstm", n_words=12, dim_proj=8, batch_size=50, n_epochs=3,
                      patience=10, threads=1, device="cpu", optimizer="adam", learning_rate=0.01,
                      lr_schedule="cosine")
    real, rates = sequence.train_step, []

    def spy(model, opt, *a):
        rates.append([g["lr"] for g in opt.param_groups])
        return real(model, opt, *a)

    monkeypatch.setattr(sequence, "train_step", spy)
    sequence.train(cfg, toy_sets(200), tmp_path, quiet=True)
    want = [learning_rate_at(cfg, i, 12) for i in range(12)]  # 200 train examples / 50: 4 minibatches x 3
    assert [r[0] for r in rates] == want and all(len(set(r)) == 1 for r in rates)
    assert want[0] == 0.01 and want[-1] < 0.0003 < want[5] < want[0]
    assert [r["learning_rate"] for r in Run.open(tmp_path).metrics().supervised] == want[3::4]


def test_tiny_run_writes_a_run_directory_viz_reads(tmp_path):
    from deeptut.store.rundir import Run, load_module
    from deeptut.train.runner import train

    cfg = TrainConfig(model="lstm", preset="tiny-lstm", n_words=12, dim_proj=8, batch_size=50, n_epochs=3,
                      patience=10, shuffle=True, threads=1, device="cpu", bucket=True)
    summary = train(cfg, toy_sets(200), tmp_path, quiet=True)
    run = Run.open(tmp_path)
    recs = run.metrics().supervised
    assert [r["epoch"] for r in recs] == [1, 2, 3] and all(0 <= r["valid_error"] <= 100 for r in recs)
    assert summary["epochs"] == 3 and summary["iterations"] == 12 and math.isfinite(summary["test_error"])
    assert json.loads((tmp_path / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    model = load_module(tmp_path)
    assert isinstance(model, LSTMClassifier) and model.dim_proj == 8
    # the best model's validation error, recomputed from best.safetensors
    valid = toy_sets(200).valid.to("cpu")
    assert sequence.error_rate(model, valid, 64) * 100 == pytest.approx(summary["best_validation_error"])
