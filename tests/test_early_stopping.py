"""The tutorials' patience rule, on scripted validation sequences."""

import math

import pytest

from deeptut.train.early_stopping import EarlyStopping


def tutorial_loop(losses, n_train_batches, patience, patience_increase=2, improvement_threshold=0.995,
                  n_epochs=1000):
    """A literal transcription of logistic_sgd.py's loop, as the oracle. Returns (stop iter, epoch, best)."""
    validation_frequency = min(n_train_batches, patience // 2)
    best_validation_loss = math.inf
    losses = iter(losses)
    epoch, done_looping, best_iter = 0, False, None
    while epoch < n_epochs and not done_looping:
        epoch += 1
        for minibatch_index in range(n_train_batches):
            it = (epoch - 1) * n_train_batches + minibatch_index
            if (it + 1) % validation_frequency == 0:
                this_validation_loss = next(losses)
                if this_validation_loss < best_validation_loss:
                    if this_validation_loss < best_validation_loss * improvement_threshold:
                        patience = max(patience, it * patience_increase)
                    best_validation_loss, best_iter = this_validation_loss, it
            if patience <= it:
                done_looping = True
                break
    return it, epoch, best_iter


def object_loop(losses, n_train_batches, patience, patience_increase=2, improvement_threshold=0.995,
                n_epochs=1000):
    stopper = EarlyStopping(patience, patience_increase, improvement_threshold)
    vf = EarlyStopping.validation_frequency(n_train_batches, patience)
    losses = iter(losses)
    for epoch in range(1, n_epochs + 1):
        for minibatch_index in range(n_train_batches):
            it = (epoch - 1) * n_train_batches + minibatch_index
            if (it + 1) % vf == 0:
                stopper.update(it, next(losses))
            if stopper.should_stop(it):
                return it, epoch, stopper.best_iteration
    return it, epoch, stopper.best_iteration


# (n_train_batches, patience, validation losses, expected (stop iter, epoch, best iter))
CASES = [
    # validation every 4 iterations (iters 3, 7, 11, ...). 0.4 at iter 7 is significant -> patience 14.
    (4, 10, [0.5, 0.4, 0.45, 0.45, 0.45], (14, 4, 7)),
    # 0.399 after 0.4 improves (new best) but not by 0.5 %: patience stays 14.
    (4, 10, [0.5, 0.4, 0.399, 0.45, 0.45], (14, 4, 11)),
    # no improvement after the first: stops at the initial patience.
    (4, 10, [0.5] + [0.6] * 10, (10, 3, 3)),
    # steady significant improvement: patience doubles each time (iter 3 -> 6, 7 -> 14, 11 -> 22, 15 -> 30).
    (4, 10, [1.0, 0.9, 0.8, 0.7] + [0.7] * 20, (30, 8, 15)),
    # validation_frequency = patience // 2 when that is shorter than an epoch.
    (100, 10, [0.5, 0.4, 0.3] + [0.3] * 10, (28, 1, 14)),  # 4 -> 10, 9 -> 18, 14 -> 28
]


@pytest.mark.parametrize("n_train_batches,patience,losses,expected", CASES)
def test_scripted_sequences(n_train_batches, patience, losses, expected):
    assert object_loop(losses, n_train_batches, patience) == expected
    assert tutorial_loop(losses, n_train_batches, patience) == expected


def test_matches_transcription_on_random_sequences():
    import random

    rng = random.Random(0)
    for _ in range(300):
        n, patience = rng.randint(1, 50), rng.randint(2, 300)
        losses = [rng.choice([rng.random(), 0.5 - 0.001 * i]) for i in range(10_000)]
        assert object_loop(losses, n, patience) == tutorial_loop(losses, n, patience)


def test_decision_fields():
    s = EarlyStopping(patience=10, patience_increase=2, improvement_threshold=0.995)
    d = s.update(7, 0.5)
    assert d.improved and d.significant and d.patience == 14
    d = s.update(11, 0.4999)
    assert d.improved and not d.significant and d.patience == 14
    d = s.update(15, 0.6)
    assert not d.improved and not d.significant and d.patience == 14
    assert not s.should_stop(13) and s.should_stop(14)


def test_state_dict_round_trip_continues_identically():
    losses = [0.5, 0.4, 0.45, 0.3, 0.29, 0.35, 0.1]
    a = EarlyStopping(20)
    for i, loss in enumerate(losses[:4]):
        a.update(4 * i + 3, loss)
    b = EarlyStopping(1, 9, 0.1)
    b.load_state_dict(a.state_dict())
    for i, loss in enumerate(losses[4:], start=4):
        assert a.update(4 * i + 3, loss) == b.update(4 * i + 3, loss)
    assert a.state_dict() == b.state_dict()


def test_validation_frequency():
    assert EarlyStopping.validation_frequency(83, 5000) == 83  # tutorial logistic: every epoch
    assert EarlyStopping.validation_frequency(2500, 10000) == 2500  # tutorial MLP
    assert EarlyStopping.validation_frequency(2500, 1000) == 500
    assert EarlyStopping.validation_frequency(10, 1) == 1  # never 0
