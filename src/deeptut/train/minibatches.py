"""fit's loop over the minibatches and its validation, without torch: one procedure, run by fit (train/loop.py,
`Training`) and by the torch-free run of the same procedure (train/torchless.py), each with its own parts.

    run_epochs(t)              minibatch SGD until the stop decision or n_epochs, the tutorial's loop
    validate(t, it, minibatch) the validation after 0-based iteration `it` (True: a fault stopped the run)

`t` holds the run (loop.py's `Training` says what each part is): cfg, s (train/state.py LoopState), session,
step (`step.run(split, first, count, lr_at) -> summed cost`), stopper, rules, model, best_params, valid, test,
n_train_batches, validation_frequency, say; and lr(it), stop(decision), checkpoint_parts(),
epoch_data(epoch) (the training split as that epoch sees it), evaluate(split, mistakes) (the zero-one loss,
in the step's arithmetic) and params_copy() (the parameters, copied).
"""

from __future__ import annotations

from typing import Any

from deeptut.accel import span_length


def run_epochs(t: Any) -> None:
    """Train until the stop decision, n_epochs or an interrupt (a checkpoint, then Interrupted)."""
    s, session = t.s, t.session
    with session.running(s) as interrupt:
        while not s.done and (s.next_minibatch > 0 or s.epoch < t.cfg.n_epochs):
            if s.next_minibatch == 0:
                s.epoch += 1
            epoch_data = t.epoch_data(s.epoch)
            minibatch_index = s.next_minibatch - 1
            while minibatch_index + 1 < t.n_train_batches:
                # An eager step does one minibatch per pass; a graph step (deeptut.accel) a whole span,
                # up to the next validation, epoch end or patience stop, where this loop looks again.
                first, it0 = minibatch_index + 1, (s.epoch - 1) * t.n_train_batches + minibatch_index + 1
                count = span_length(t.step, it0, t.n_train_batches - first, t.validation_frequency,
                                    t.stopper.patience)
                minibatch_index, it = first + count - 1, it0 + count - 1
                cost = t.step.run(epoch_data, first, count, lambda k: t.lr(it0 + k))
                s.cost_sum += cost
                s.cost_count += count
                s.next_minibatch = (minibatch_index + 1) % t.n_train_batches
                if t.stop(t.rules.after_span(cost, it, s.epoch)):
                    break
                validating = (it + 1) % t.validation_frequency == 0
                if validating and validate(t, it, minibatch_index):
                    break  # a fault: stopped before these parameters could be validated or kept
                t.stop(t.rules.after_iteration(it))
                if validating and session.checkpoint_due(s):
                    session.checkpoint(*t.checkpoint_parts(), it + 1)
                session.progress.show(s.epoch, minibatch_index + 1, t.n_train_batches, s.best_validation_loss)
                if s.done or interrupt.signum is not None:
                    break
            if interrupt.signum is not None and not s.done:  # a checkpoint, then Interrupted
                session.interrupted(interrupt.signum, *t.checkpoint_parts(),
                                    (s.epoch - 1) * t.n_train_batches + (s.next_minibatch or t.n_train_batches))
    session.progress.clear()


def validate(t: Any, it: int, minibatch_index: int) -> bool:
    """The validation after 0-based iteration `it`, as the tutorials do it: the validation error, the
    early-stopping rule, and on a new best the parameters kept and the test error measured. True if the run
    stopped on a fault before validating (non-finite, diverged)."""
    s, cfg = t.s, t.cfg
    train_cost = float(s.cost_sum) / s.cost_count
    stop = t.rules.at_validation(train_cost, it, t.lr(it))
    if t.rules.divergence_updated:
        s.divergence = t.rules.divergence.state_dict()
    if t.stop(stop):
        return True
    t.model.eval()
    mistakes: list | None = [] if cfg.improvement == "mcnemar" else None
    this_validation_loss = t.evaluate(t.valid, mistakes)
    s.cost_sum, s.cost_count = 0.0, 0
    where = f"epoch {s.epoch}, minibatch {minibatch_index + 1}/{t.n_train_batches}"
    t.say(f"{where}, validation error {this_validation_loss * 100.:f} %")
    decision = t.stopper.update(it, this_validation_loss, mistakes[0] if mistakes else None)
    test_error = None
    if decision.improved:
        s.best_validation_loss, s.best_iter = this_validation_loss, it
        s.test_score = test_error = t.evaluate(t.test, None)
        t.best_params = t.params_copy()
        t.say(f"     {where}, test error of best model {s.test_score * 100.:f} %")
    t.model.train()
    t.session.record(s, epoch=s.epoch, minibatch=minibatch_index + 1, n_train_batches=t.n_train_batches,
                     iteration=it + 1, train_cost=train_cost, valid_error=this_validation_loss * 100.,
                     test_error=None if test_error is None else test_error * 100.,
                     best=decision.improved, patience=decision.patience, learning_rate=t.lr(it))
    if decision.improved:
        t.session.save_best(t.best_params)
    t.session.save_intermediate(t.model, s, it + 1)
    return False
