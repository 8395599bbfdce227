"""The training loop (updates/train.py) against plain NumPy simulations of the same runs.

Most runs compile with FAST_COMPILE (the Python linker: no JIT cost); one test compares the
default mode (Numba under PyTensor 3) with it. The model is a scalar or a 2-vector pulled by a
quadratic loss towards the mean of each batch, so every trajectory has a closed-form NumPy twin.
"""

import importlib
import inspect
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import updates

MODE = "FAST_COMPILE"
QUIET = {"progress": False, "mode": MODE}
RAW = {**QUIET, "restore_best": False}  # the params where training ended
README = Path(__file__).parents[1] / "README.md"
train_module = importlib.import_module("updates.train")  # the module (updates.train may name it too)


def mean_model(dtype="float64", init=0.0):
    """w pulled towards the batch mean of x: loss = 0.5 * mean((w - x)^2), gradient w - mean(x)."""
    w = pytensor.shared(np.asarray(init, dtype=dtype), name="w")
    x = pt.vector("x", dtype=dtype)
    return w, x, 0.5 * ((w - x) ** 2).mean()


def batches_of(data, batch_size, seed, epochs, shuffle=True):
    """The batches the loop must feed: a seeded permutation per pass, the last batch shorter."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(data)) if shuffle else np.arange(len(data))
        for start in range(0, len(data), batch_size):
            yield data[order[start : start + batch_size]]


def sgd_path(data, lr, batches, w=0.0):
    """SGD on the mean model: the value of w after each batch."""
    path = []
    for batch in batches:
        w = w - lr * (w - batch.mean())
        path.append(w)
    return np.array(path)


DATA = np.linspace(-1.0, 2.0, 10) ** 2  # 10 rows: batches of 3 leave a last batch of 1


# -- batching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_batches_are_seeded_shuffles_with_a_short_last_batch(seed):
    w, x, loss = mean_model()
    rows = x.shape[0].astype("float64")
    history = updates.minimize(
        loss,
        [w],
        [x],
        [DATA],
        updates.sgd(learning_rate=0.3),
        batch_size=3,
        seed=seed,
        max_epochs=3,
        monitors={"rows": rows},
        **RAW,
    )
    path = sgd_path(DATA, 0.3, batches_of(DATA, 3, seed, 3))
    assert list(history.step) == [4, 8, 12]
    np.testing.assert_allclose(history.train["rows"], [2.5, 2.5, 2.5])  # 3, 3, 3, 1
    assert w.get_value() == pytest.approx(path[-1], rel=1e-13)
    batches = list(batches_of(DATA, 3, seed, 3))
    before = np.r_[0.0, path[:-1]]
    step_losses = [0.5 * np.mean((w_k - b) ** 2) for w_k, b in zip(before, batches)]
    reference_losses = np.mean(np.reshape(step_losses, (3, 4)), axis=1)
    np.testing.assert_allclose(history.train["loss"], reference_losses, rtol=1e-12)


def test_same_seed_same_run_other_seed_other_run():
    w, x, loss = mean_model()
    finals = []
    for seed in (3, 3, 4):
        w.set_value(0.0)
        updates.minimize(
            loss, [w], [x], DATA, updates.sgd(learning_rate=0.5), batch_size=2, seed=seed, max_epochs=2, **RAW
        )
        finals.append(float(w.get_value()))
    assert finals[0] == finals[1] != finals[2]


def test_unshuffled_batches_follow_the_data_order():
    w, x, loss = mean_model()
    updates.minimize(
        loss, [w], [x], DATA, updates.sgd(learning_rate=0.5), batch_size=4, shuffle=False, max_epochs=2, **RAW
    )
    path = sgd_path(DATA, 0.5, batches_of(DATA, 4, None, 2, shuffle=False))
    assert w.get_value() == pytest.approx(path[-1], rel=1e-13)


def test_batch_size_none_is_full_batch():
    w, x, loss = mean_model()
    history = updates.minimize(
        loss, [w], [x], DATA, updates.sgd(learning_rate=0.5), batch_size=None, max_epochs=3, **RAW
    )
    assert list(history.step) == [1, 2, 3]
    assert w.get_value() == pytest.approx(sgd_path(DATA, 0.5, [DATA] * 3)[-1], rel=1e-13)


def test_iterable_of_batches_is_reiterated_every_pass():
    w, x, loss = mean_model()
    batches = [(DATA[:4],), (DATA[4:],)]
    history = updates.minimize(loss, [w], [x], batches, updates.sgd(learning_rate=0.5), max_epochs=3, **RAW)
    assert list(history.step) == [2, 4, 6]
    assert w.get_value() == pytest.approx(sgd_path(DATA, 0.5, [DATA[:4], DATA[4:]] * 3)[-1], rel=1e-13)


def test_callable_source_is_called_every_pass_and_one_shot_generator_runs_out():
    w, x, loss = mean_model()
    calls = []

    def source():
        calls.append(1)
        return iter([[DATA[:5]], [DATA[5:]]])

    history = updates.minimize(loss, [w], [x], source, updates.sgd(learning_rate=0.5), max_epochs=2, **QUIET)
    assert len(calls) == 2 and list(history.step) == [2, 4]
    one_shot = ([DATA[i : i + 5]] for i in (0, 5))
    history = updates.minimize(
        loss, [w], [x], one_shot, updates.sgd(learning_rate=0.5), max_epochs=5, **QUIET
    )
    assert list(history.step) == [2]
    assert "ran out in epoch 2" in history.stop_reason


def test_epoch_size_cuts_an_endless_stream():
    w, x, loss = mean_model()
    rng = np.random.default_rng(1)

    def endless():
        while True:
            yield [rng.normal(size=4)]

    history = updates.minimize(
        loss, [w], [x], endless(), updates.sgd(learning_rate=0.1), epoch_size=5, max_epochs=3, **RAW
    )
    assert list(history.step) == [5, 10, 15] and list(history.epoch) == [1, 2, 3]
    # with arrays, epochs of 4 batches continue the pass (3 + 1 batches) and reshuffle after it
    w.set_value(0.0)
    updates.minimize(
        loss,
        [w],
        [x],
        DATA,
        updates.sgd(learning_rate=0.3),
        batch_size=3,
        epoch_size=4,
        max_epochs=3,
        seed=2,
        **RAW,
    )
    assert w.get_value() == pytest.approx(sgd_path(DATA, 0.3, batches_of(DATA, 3, 2, 3))[-1], rel=1e-13)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (np.zeros(0), "minimize: train is empty"),
        ([], "train is empty"),
        (lambda: iter(()), "train is empty"),
    ],
    ids=["arrays", "list", "callable"],
)
def test_empty_training_data_is_a_clear_error(train, message):
    w, x, loss = mean_model()
    with pytest.raises(ValueError, match=message):
        updates.minimize(loss, [w], [x], train, updates.sgd(), **QUIET)
    assert w.get_value() == 0.0


def test_empty_validation_data_is_a_clear_error():
    w, x, loss = mean_model()
    with pytest.raises(ValueError, match="valid is empty"):
        updates.minimize(loss, [w], [x], DATA, updates.sgd(), valid=[np.zeros(0)], **QUIET)
    with pytest.raises(ValueError, match="valid is empty"):
        updates.minimize(loss, [w], [x], DATA, updates.sgd(), valid=[], **QUIET)


def test_data_are_cast_to_the_input_dtype_and_params_keep_theirs():
    w, x, loss = mean_model("float32")
    labels = pt.ivector("labels")
    loss = loss + 0 * labels.sum()
    history = updates.minimize(
        loss,
        [w],
        [x, labels],
        [DATA, np.arange(10)],
        updates.adam(learning_rate=0.1),
        batch_size=4,
        max_epochs=2,
        **QUIET,
    )
    assert w.get_value().dtype == np.float32 and np.isfinite(history.train["loss"]).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"train": [DATA, DATA]}, ValueError, "train has 2 arrays for 1 inputs"),
        (
            {"train": [DATA.astype(complex)]},
            TypeError,
            r"train\[0\] has dtype complex128, which cannot be cast",
        ),
        ({"train": [DATA[:, None]]}, ValueError, r"train\[0\] has 2 dimensions, expected 1"),
        ({"train": "abc"}, TypeError, "train must be arrays or an iterable of batches, got str"),
        ({"train": 3.0}, TypeError, "train must be a sequence of arrays"),
        ({"batch_size": 0}, ValueError, "batch_size must be > 0 or None, got 0"),
        ({"max_epochs": None}, ValueError, "give max_epochs or max_updates"),
        ({"validate_every": None}, TypeError, "validate_every must be an integer, got NoneType"),
        ({"patience": 1.5}, TypeError, "patience must be an integer or None, got float"),
        ({"min_improvement": 1.0}, ValueError, r"min_improvement must be in \[0, 1\)"),
        ({"tolerance": -1.0}, ValueError, "tolerance must be >= 0 or None"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite must be one of"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"monitors": {"loss": 0}}, ValueError, "monitor name 'loss' is reserved"),
        ({"monitors": {"v": pt.vector()}}, ValueError, "monitor 'v' must be a scalar"),
        ({"monitors": [1]}, TypeError, "monitors must be a dict"),
        ({"optimizer": 3}, TypeError, r"optimizer must be a rule awaiting \(loss_or_grads, params\)"),
        ({"inputs": "x"}, TypeError, "inputs must be a list of symbolic input variables, got str"),
        ({"params": None}, TypeError, "iterate: params is None; give the params, or updates built by a rule"),
        (
            {"params": [pytensor.shared(1.0, name="v")]},
            ValueError,
            r"the loss does not depend on params\[0\] \('v'\)",
        ),
        ({"loss": pt.vector()}, ValueError, "iterate: the loss must be a scalar"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, error, message):
    w, x, loss = mean_model()
    arguments = {
        "loss": loss,
        "params": [w],
        "inputs": [x],
        "train": DATA,
        "optimizer": updates.sgd(),
        **kwargs,
    }
    with pytest.raises(error, match=message):
        updates.iterate(**arguments, progress=False, mode=MODE)


def test_a_plain_dictionary_of_updates_needs_params_that_it_updates():
    w, x, loss = mean_model()
    plain = dict(updates.sgd(loss, [w], learning_rate=0.5))
    updates.minimize(loss, [w], [x], DATA, plain, batch_size=None, max_epochs=2, **RAW)
    assert w.get_value() == pytest.approx(sgd_path(DATA, 0.5, [DATA] * 2)[-1], rel=1e-13)
    with pytest.raises(TypeError, match="params is None"):
        updates.iterate(loss, None, [x], DATA, plain, **QUIET)
    v = pytensor.shared(0.0, name="v")
    with pytest.raises(ValueError, match=r"the optimizer's updates have no entry for params \['v'\]"):
        updates.iterate(loss + v, [w, v], [x], DATA, plain, **QUIET)


def test_a_batch_of_the_wrong_arity_is_refused():
    w, x, loss = mean_model()
    with pytest.raises(ValueError, match=r"batch 1 of train has 2 arrays, expected a sequence of 1 arrays"):
        updates.minimize(loss, [w], [x], [[DATA], [DATA, DATA]], updates.sgd(), **QUIET)


def refuse_to_compile(*args, **kwargs):
    pytest.fail("nothing should be compiled for a call with a misspelt keyword")


@pytest.mark.parametrize("function", [updates.iterate, updates.minimize], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("misspelt", "meant"),
    [("max_epoch", "max_epochs"), ("batchsize", "batch_size"), ("on_non_finite", "on_nonfinite")],
)
def test_a_misspelt_keyword_names_the_closest_argument_when_called(function, misspelt, meant, monkeypatch):
    """Refused by the call itself (iterate's generator is never started), before compiling."""
    monkeypatch.setattr(pytensor, "function", refuse_to_compile)
    w, x, loss = mean_model()
    name = function.__name__  # the wording between name and keyword is the shared helper's (grads.py)
    message = rf"^{name}: .*unexpected keyword argument '{misspelt}'; did you mean '{meant}'\?$"
    with pytest.raises(TypeError, match=message):
        function(loss, [w], [x], DATA, updates.sgd(), **{misspelt: 3}, **QUIET)
    with pytest.raises(TypeError, match=rf"^{name}: .*unexpected keyword argument 'xyz'$"):
        function(loss, [w], [x], DATA, updates.sgd(), xyz=3)


def test_minimize_names_itself_for_arguments_that_do_not_fit(monkeypatch):
    monkeypatch.setattr(pytensor, "function", refuse_to_compile)
    w, x, loss = mean_model()
    with pytest.raises(TypeError, match=r"^minimize\(\) missing a required argument: 'optimizer'$"):
        updates.minimize(loss, [w], [x], DATA)
    with pytest.raises(TypeError, match=r"^minimize\(\) too many positional arguments$"):
        updates.minimize(loss, [w], [x], DATA, updates.sgd(), None, 32)


def test_the_options_are_the_keyword_only_arguments():
    """The loop's options mirror the keyword-only parameters written once in iterate's signature."""
    from dataclasses import fields

    from updates.train import _Options

    keywords = [
        name for name, p in inspect.signature(updates.iterate).parameters.items() if p.kind is p.KEYWORD_ONLY
    ]
    assert [f.name for f in fields(_Options)] == keywords


# -- stopping rules and the best params ------------------------------------------------------------


def pulled_model():
    """Train pulls w from 0 towards -10; validation is best at w = -1, so it improves then worsens."""
    w, x, loss = mean_model()
    train = [np.full(4, -10.0)]
    valid = [np.full(3, -1.0)]
    return w, x, loss, train, valid


def test_max_updates_stops_mid_epoch_and_validates_there():
    w, x, loss = mean_model()
    history = updates.minimize(loss, [w], [x], DATA, updates.sgd(), batch_size=3, max_updates=6, **QUIET)
    assert list(history.step) == [4, 6] and list(history.epoch) == [1, 2]
    assert history.stop_reason == "reached max_updates=6"


def test_validate_every_and_a_last_validation_at_the_end():
    w, x, loss = mean_model()
    history = updates.minimize(
        loss, [w], [x], DATA, updates.sgd(), batch_size=5, validate_every=2, max_epochs=5, **QUIET
    )
    assert list(history.epoch) == [2, 4, 5] and list(history.step) == [4, 8, 10]


@pytest.mark.parametrize("min_improvement", [0.0, 0.3])
@pytest.mark.parametrize("patience", [1, 3])
def test_patience_counts_validations_without_relative_improvement(patience, min_improvement):
    w, x, loss, train, valid = pulled_model()
    history = updates.minimize(
        loss,
        [w],
        [x],
        train,
        updates.sgd(learning_rate=0.02),
        valid=valid,
        batch_size=None,
        max_epochs=200,
        patience=patience,
        min_improvement=min_improvement,
        restore_best=False,
        monitors={"w": w},
        **QUIET,
    )
    # the rule, applied by hand to the recorded validation losses
    best, since, best_index = math.inf, 0, None
    for i, score in enumerate(history.valid["loss"]):
        if best_index is None or score < best - min_improvement * abs(best):
            best, since, best_index = score, 0, i
        else:
            since += 1
        if since >= patience:
            break
    assert len(history) == i + 1 < 200
    assert history.best is history[best_index] and [r.best for r in history].count(True) >= 1
    assert "no relative improvement" in history.stop_reason
    assert w.get_value() == pytest.approx(history.valid["w"][-1], rel=1e-15)  # not restored
    w_path = sgd_path(None, 0.02, [np.array([-10.0])] * len(history))
    np.testing.assert_allclose(history.valid["loss"], 0.5 * (w_path + 1.0) ** 2, rtol=1e-12)


def test_best_params_and_optimizer_state_are_restored():
    w, x, loss, train, valid = pulled_model()
    optimizer = updates.adam(loss, [w], learning_rate=0.3)  # built updates: their state is inspectable
    history = updates.minimize(
        loss,
        None,
        [x],
        train,
        optimizer,
        valid=valid,
        batch_size=None,
        max_epochs=40,
        monitors={"w": w},
        **QUIET,
    )
    best = history.best
    assert history.restored and best.valid["loss"] == history.valid["loss"].min()
    assert best is not history[-1]
    assert w.get_value() == pytest.approx(best.valid["w"], rel=1e-15)  # a mean over 3 rows
    assert optimizer.named_state()["adam.t"] == best.step
    # training on from the restored point continues the best run exactly: the state came back too
    first_after_best = history[history.records.index(best) + 1]
    updates.minimize(
        loss, None, [x], train, optimizer, batch_size=None, max_updates=1, restore_best=False, **QUIET
    )
    assert w.get_value() == pytest.approx(first_after_best.valid["w"], rel=1e-14)


def test_restore_best_false_keeps_the_last_params():
    w, x, loss, train, valid = pulled_model()
    history = updates.minimize(
        loss,
        [w],
        [x],
        train,
        updates.sgd(learning_rate=0.1),
        valid=valid,
        batch_size=None,
        max_epochs=30,
        restore_best=False,
        monitors={"w": w},
        **QUIET,
    )
    assert not history.restored and w.get_value() == history.valid["w"][-1] != history.best.valid["w"]


def test_without_validation_data_best_follows_the_training_loss():
    w, x, loss, train, _ = pulled_model()
    history = updates.minimize(
        loss, [w], [x], train, updates.sgd(learning_rate=0.1), batch_size=None, max_epochs=5, **QUIET
    )
    assert history.valid == {} and history.best is history[-1]


def test_validation_losses_are_weighted_means_over_uneven_batches():
    w, x, loss = mean_model(init=0.5)
    y = pt.vector("y")
    loss = loss + 0 * y.sum()
    valid_x, valid_y = np.arange(7.0), np.zeros(7)
    history = updates.minimize(
        loss,
        [w],
        [x, y],
        [DATA, DATA],
        updates.sgd(learning_rate=0.0),
        batch_size=3,
        valid=[valid_x, valid_y],
        max_epochs=1,
        monitors={"x_max": x.max()},
        **QUIET,
    )
    assert history.valid["loss"][0] == pytest.approx(np.mean(0.5 * (0.5 - valid_x) ** 2), rel=1e-14)
    assert history.valid["x_max"][0] == pytest.approx((3 * 2 + 3 * 5 + 1 * 6) / 7, rel=1e-14)


def test_callback_sees_every_record_and_stops_on_true():
    w, x, loss = mean_model()
    seen = []
    history = updates.minimize(
        loss,
        [w],
        [x],
        DATA,
        updates.sgd(),
        batch_size=5,
        max_epochs=10,
        callback=lambda r: seen.append(r) or len(seen) == 3,
        **QUIET,
    )
    assert seen == history.records and len(history) == 3
    assert history.stop_reason == "the callback asked to stop at step 6"


def test_iterate_is_a_generator_to_break_out_of_and_returns_the_history():
    w, x, loss, train, valid = pulled_model()
    arguments = dict(
        loss=loss,
        params=[w],
        inputs=[x],
        train=train,
        optimizer=updates.sgd(learning_rate=0.05),
        valid=valid,
        batch_size=None,
        max_epochs=50,
        monitors={"w": w},
        **QUIET,
    )
    run = updates.iterate(**arguments)
    assert w.get_value() == 0.0  # nothing is trained before iterating
    records = []
    for record in run:
        records.append(record)
        if record.step == 30:
            break
    assert w.get_value() == pytest.approx(records[-1].valid["w"], rel=1e-15)  # still open: nothing restored
    run.close()  # closing ends training like a stopping rule: the best params come back
    best = min(records, key=lambda r: r.valid["loss"])
    assert 1 < best.step < 30 and w.get_value() == pytest.approx(best.valid["w"], rel=1e-15)
    w.set_value(0.0)
    for record in updates.iterate(**arguments):  # breaking out of a loop over iterate(...) closes it
        if record.step == 30:
            break
    assert w.get_value() == pytest.approx(best.valid["w"], rel=1e-15)
    run = updates.iterate(loss, [w], [x], train, updates.sgd(), batch_size=None, max_epochs=2, **QUIET)
    with pytest.raises(StopIteration) as done:
        while True:
            next(run)
    assert isinstance(done.value.value, updates.History) and len(done.value.value) == 2


def test_train_monitors_and_gradient_norm_are_step_means():
    w, x, loss = mean_model()
    history = updates.minimize(
        loss,
        [w],
        [x],
        DATA,
        updates.sgd(learning_rate=0.3),
        batch_size=3,
        max_epochs=2,
        seed=5,
        monitors={"double": 2 * loss},
        gradient_norm=True,
        **RAW,
    )
    batches = list(batches_of(DATA, 3, 5, 2))
    before = np.r_[0.0, sgd_path(DATA, 0.3, batches)][:-1]
    grads = np.abs(before - np.array([b.mean() for b in batches]))
    np.testing.assert_allclose(history.train["grad_norm"], [grads[:4].mean(), grads[4:].mean()], rtol=1e-12)
    np.testing.assert_allclose(history.train["double"], 2 * history.train["loss"], rtol=1e-14)
    assert set(history.train) == {"loss", "double", "grad_norm"}


def test_learning_rate_is_reported_when_scheduled():
    w, x, loss = mean_model()
    schedule = updates.exponential_decay(init_value=0.5, decay_rate=0.5, decay_steps=4)
    history = updates.minimize(
        loss, [w], [x], DATA, updates.sgd(learning_rate=schedule), batch_size=3, max_epochs=3, **QUIET
    )
    # the rate the last step of each epoch used: that step saw the counter at step - 1
    np.testing.assert_allclose(
        history.train["learning_rate"], 0.5 * 0.5 ** ((history.step - 1) / 4), rtol=1e-14
    )
    constant = updates.minimize(loss, [w], [x], DATA, updates.sgd(learning_rate=0.5), max_epochs=1, **QUIET)
    assert "learning_rate" not in constant.train
    rate = updates.live(0.25)  # changed by hand between runs: reported too
    changed = updates.minimize(loss, [w], [x], DATA, updates.sgd(learning_rate=rate), max_epochs=1, **QUIET)
    assert changed.train["learning_rate"][-1] == 0.25


def test_tolerance_stops_at_the_first_small_step():
    w, x, loss = mean_model(init=10.0)
    history = updates.minimize(
        loss,
        [w],
        [x],
        DATA,
        updates.sgd(learning_rate=0.2),
        batch_size=None,
        max_epochs=500,
        tolerance=1e-3,
        **QUIET,
    )
    path = np.r_[10.0, sgd_path(DATA, 0.2, [DATA] * 500, w=10.0)]
    sizes = np.abs(np.diff(path))
    first = int(np.argmax(sizes <= 1e-3)) + 1
    assert history[-1].step == first and history.stop_reason.startswith(f"converged: step {first} ")
    assert history.train["update_norm"][-1] == pytest.approx(sizes[first - 1], rel=1e-10)
    assert sizes[first - 2] > 1e-3


# -- non-finite steps ----------------------------------------------------------------------------------

BAD = np.array([1.0, 2.0, np.nan, 3.0, 4.0])  # unshuffled, batch 1: step 3 sees the NaN


def nan_run(on_nonfinite, **options):
    w, x, loss = mean_model()
    optimizer = updates.adam(loss, [w], learning_rate=0.1)
    options = {"batch_size": 1, "shuffle": False, "max_epochs": 2, **QUIET, **options}
    return (
        w,
        optimizer,
        lambda: updates.minimize(loss, None, [x], BAD, optimizer, on_nonfinite=on_nonfinite, **options),
    )


def adam_path(batches, lr=0.1):
    """Adam (Lasagne's form) on the mean model, skipping NaN batches; w after each step."""
    w = m = v = 0.0
    t, path = 0, []
    for batch in batches:
        g = w - np.mean(batch)
        if np.isfinite(g):
            t += 1
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            w = w - lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (math.sqrt(v) + 1e-8)
        path.append(w)
    return path


def test_nonfinite_loss_raises_naming_the_step_and_keeps_the_last_good_params():
    w, optimizer, run = nan_run("raise")
    with pytest.raises(
        updates.NonFiniteLossError, match=r"the loss was nan at step 3 \(epoch 1, batch 3\)"
    ) as err:
        run()
    assert err.value.step == 3 and err.value.epoch == 1 and math.isnan(err.value.loss)
    assert w.get_value() == pytest.approx(adam_path(BAD[:2, None])[-1], rel=1e-13)
    assert optimizer.named_state()["adam.t"] == 2  # the optimizer state is the one after step 2
    assert isinstance(err.value.history, updates.History) and "step 3" in err.value.history.stop_reason


def test_nonfinite_stop_warns_and_ends_like_any_stop():
    w, optimizer, run = nan_run("stop", restore_best=False)
    with pytest.warns(RuntimeWarning, match="at step 3"):
        history = run()
    assert history.stop_reason.startswith("the loss was nan at step 3") and history[-1].step == 3
    assert w.get_value() == pytest.approx(adam_path(BAD[:2, None])[-1], rel=1e-13)
    assert optimizer.named_state()["adam.t"] == 2


def test_nonfinite_stop_restores_the_best_params_by_default():
    w, x, loss = mean_model()
    optimizer = updates.adam(loss, [w], learning_rate=0.1)
    train = np.array([1.0, 1.0, -10.0, np.nan])  # epochs of 2 steps: the best, then away, then nan
    with pytest.warns(RuntimeWarning, match=r"the loss was nan at step 4 \(epoch 2, batch 2\)"):
        history = updates.minimize(
            loss,
            None,
            [x],
            train,
            optimizer,
            valid=[np.array([1.0])],
            batch_size=1,
            shuffle=False,
            epoch_size=2,
            on_nonfinite="stop",
            **QUIET,
        )
    assert len(history) == 2 and history.best is history[0] and history.restored
    assert w.get_value() == pytest.approx(adam_path([[1.0], [1.0]])[-1], rel=1e-13)
    assert optimizer.named_state()["adam.t"] == 2


def test_nonfinite_skip_leaves_params_state_and_counter_untouched():
    w, optimizer, run = nan_run("skip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = run()
    assert [r.skipped for r in history] == [1, 1] and list(history.step) == [5, 10]
    path = adam_path(np.tile(BAD, 2)[:, None])
    np.testing.assert_allclose(
        history.train["loss"][0],
        np.mean([0.5 * (a - b) ** 2 for a, b in zip([0.0, *path[:4]], BAD) if np.isfinite(b)]),
        rtol=1e-12,
    )
    assert w.get_value() == pytest.approx(path[-1], rel=1e-13)
    assert optimizer.named_state()["adam.t"] == 8


def test_a_nonfinite_gradient_with_a_finite_loss_is_caught():
    w = pytensor.shared(np.float64(0.0), name="w")
    x = pt.vector("x")
    loss = pt.sqrt(w**2) + ((w - x) ** 2).mean()  # finite at w = 0, gradient 0/0 there
    with pytest.raises(updates.NonFiniteLossError, match="a gradient was not finite at step 1"):
        updates.minimize(loss, [w], [x], DATA, updates.sgd(), **QUIET)
    assert w.get_value() == 0.0


def test_skipping_every_step_stops():
    w, x, loss = mean_model()
    history = updates.minimize(
        loss, [w], [x], np.full(4, np.nan), updates.sgd(), batch_size=2, on_nonfinite="skip", **QUIET
    )
    assert len(history) == 1 and history[0].skipped == 2
    assert "every step since step 0 had a non-finite loss" in history.stop_reason
    assert w.get_value() == 0.0


@pytest.mark.parametrize("restore_best", [True, False])
def test_a_skip_budget_that_runs_out_stops_the_loop(restore_best):
    """From step 3 on the gradient is huge (x = 1e6): apply_if_finite(max_norm=10) skips those
    steps, and its budget of 3 stops the loop at step 5 with the error's message. The params are
    those after epoch 1 either way (nothing was applied since); restoring the best also sets the
    optimizer state back to it (no skips then), and otherwise the refused step counted nothing."""
    w, x, loss = mean_model()
    optimizer = updates.apply_if_finite(updates.sgd(loss, [w], learning_rate=0.5), max_norm=10.0, budget=3)
    history = updates.minimize(
        loss,
        None,
        [x],
        np.array([1.0, 1.0, 1e6, 1e6, 1e6, 1e6]),
        optimizer,
        valid=[np.array([1.0])],
        batch_size=1,
        shuffle=False,
        epoch_size=2,
        restore_best=restore_best,
        **QUIET,
    )
    assert history.stop_reason == (
        "apply_if_finite: 3 steps in a row had a value that was not finite or an update norm above "
        "max_norm=10; stopping instead of skipping again (budget=3): this step was not applied, the "
        "params and optimizer state keep their values from the last applied step"
    )
    assert list(history.step) == [2, 4] and history.best is history[0]
    assert history.restored is restore_best
    assert w.get_value() == 0.75  # 0 -> 0.5 -> 0.75, then nothing applied
    named = optimizer.named_state()
    skips = 0 if restore_best else 2
    assert named["apply_if_finite.skipped"] == skips and named["apply_if_finite.skipped_in_row"] == skips


# -- modes, progress, documentation --------------------------------------------------------------------


def test_default_mode_runs_the_same_trajectory():
    """The guarded step compiles under the default linker (Numba in PyTensor 3) with the fused
    multi-tensor node, and gives the trajectory of the Python linker."""
    finals = []
    for mode in (None, MODE):
        w = pytensor.shared(np.zeros(2), name="w")
        b = pytensor.shared(np.float64(0.0), name="b")
        x, y = pt.matrix("x"), pt.vector("y")
        loss = ((x @ w + b - y) ** 2).mean()
        data = np.random.default_rng(0).normal(size=(20, 2))
        history = updates.minimize(
            loss,
            [w, b],
            [x, y],
            [data, data @ [1.0, 2.0]],
            updates.adam(learning_rate=0.1),
            batch_size=8,
            max_epochs=3,
            gradient_norm=True,
            progress=False,
            mode=mode,
        )
        finals.append((w.get_value(), b.get_value(), history.train["grad_norm"]))
    for got, expected in zip(*finals):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def err_lines(capsys):
    """What the loop wrote to stderr, line by line."""
    return capsys.readouterr().err.splitlines()


@pytest.fixture
def log_output(monkeypatch):
    """stderr is not a terminal (as under pytest's capture) and no Jupyter kernel runs."""
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)


def test_progress_false_prints_nothing(capsys):
    w, x, loss, train, valid = pulled_model()
    updates.minimize(loss, [w], [x], train, updates.sgd(), valid=valid, max_epochs=3, **QUIET)
    list(updates.iterate(loss, [w], [x], train, updates.sgd(), valid=valid, max_epochs=3, **QUIET))
    assert capsys.readouterr() == ("", "")


def test_progress_on_a_terminal_leaves_the_bar_then_prints_the_summary(capsys, monkeypatch):
    pytest.importorskip("tqdm", reason="the progress extra is not installed")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stream, for this test only
    w, x, loss = mean_model()
    updates.minimize(
        loss, [w], [x], DATA, updates.sgd(), batch_size=5, max_epochs=2, progress=True, mode=MODE
    )
    err = capsys.readouterr().err
    assert "\r" in err  # a live bar
    bar, summary = err.rsplit("\r", 1)[1].splitlines()  # the bar's last state stays on screen
    assert bar.startswith("minimize: 100%") and "4/4" in bar and "train_loss=" in bar
    assert summary.startswith("minimize: 4 steps (2 epochs)")


@pytest.mark.parametrize("progress", [None, True])
def test_progress_in_a_log_prints_sparse_plain_lines(progress, capsys, monkeypatch, log_output):
    """Not a terminal: no carriage returns; the first and the last validation, one at most every
    _LINE_SECONDS between them, and the summary."""
    if progress:
        pytest.importorskip("tqdm", reason="the progress extra is not installed")
    w, x, loss, _, valid = pulled_model()
    options = dict(valid=valid, batch_size=2, max_epochs=5, progress=progress, mode=MODE)
    history = updates.minimize(loss, [w], [x], [np.full(4, -10.0)], updates.sgd(), **options)
    err = capsys.readouterr().err
    assert "\r" not in err
    first, last, summary = err.splitlines()
    record = history[0]
    assert first == (
        f"minimize: epoch 1/5, step 2/10, {train_module._duration(record.seconds)}; "
        f"train loss {record.train['loss']:.4g}; valid loss {record.valid['loss']:.4g} (best)"
    )
    assert last.startswith("minimize: epoch 5/5, step 10/10, ")
    assert summary.startswith("minimize: 10 steps (5 epochs) in ")
    monkeypatch.setattr(train_module, "_LINE_SECONDS", 0.0)
    history = updates.minimize(loss, [w], [x], [np.full(4, -10.0)], updates.sgd(), **options)
    lines = err_lines(capsys)
    assert [line.split(",")[0] for line in lines[:-1]] == [f"minimize: epoch {e}/5" for e in range(1, 6)]
    assert all(f"valid loss {r.valid['loss']:.4g}" in line for r, line in zip(history, lines))


def test_plain_lines_show_every_monitor_and_the_skipped_steps(capsys, log_output):
    w, x, loss = mean_model()
    data = np.array([1.0, 2.0, np.nan, 4.0])
    updates.minimize(
        loss,
        [w],
        [x],
        [data],
        updates.sgd(learning_rate=0.5),
        batch_size=1,
        shuffle=False,
        max_epochs=1,
        max_updates=None,
        monitors={"w": w},
        gradient_norm=True,
        on_nonfinite="skip",
        mode=MODE,
    )
    (line, summary) = err_lines(capsys)
    # w (read before each step) 0, 0.5, 1.25 (x = nan skipped): losses 0.5, 1.125, 3.78125 (mean 1.802),
    # gradients -1, 1.5, 2.75 (mean norm 1.75)
    assert line.endswith("; train loss 1.802 w 0.5833 grad_norm 1.75; 1 skipped (best)")
    assert summary.startswith("minimize: 4 steps (1 epoch, 1 skipped) in ")


def test_a_jupyter_kernel_counts_as_interactive(monkeypatch):
    """A notebook's stderr is no terminal, yet tqdm draws a widget there: a bar, not lines."""
    kernel = type("Shell", (), {"kernel": object()})()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setitem(sys.modules, "IPython", type(sys)("IPython"))
    assert not train_module._interactive()  # IPython imported, no shell
    sys.modules["IPython"].get_ipython = lambda: kernel
    assert train_module._interactive()
    sys.modules["IPython"].get_ipython = lambda: type("Terminal", (), {})()  # IPython in a terminal
    assert not train_module._interactive()


@pytest.mark.parametrize("function", ["minimize", "iterate"])
def test_the_run_ends_with_a_one_line_summary(function, capsys, log_output):
    """pulled_model with SGD at rate 0.1: w_1 = -10 * 0.1 = -1, where the validation loss is 0."""
    w, x, loss, train, valid = pulled_model()
    arguments = (loss, [w], [x], train, updates.sgd(learning_rate=0.1))
    options = dict(valid=valid, batch_size=None, max_epochs=6, mode=MODE)
    if function == "minimize":
        history = updates.minimize(*arguments, **options)
    else:
        run = updates.iterate(*arguments, **options)
        records = [next(run) for _ in range(6)]
        assert err_lines(capsys)[-1].startswith("iterate: epoch 6/6")  # the summary comes at the end
        with pytest.raises(StopIteration) as done:
            next(run)
        history = done.value.value
        assert len(records) == 6
    summary = err_lines(capsys)[-1]
    assert re.fullmatch(
        rf"{function}: 6 steps \(6 epochs\) in [\d.]+ [µm]?s, [\d.]+ [µm]?s/step; "
        r"best valid loss 0 at step 1 \(epoch 1\), restored; "
        r"compile [\d.]+ [µm]?s \+ first calls [\d.]+ [µm]?s; stopped: reached max_epochs=6",
        summary,
    ), summary
    assert history.best.step == 1 and w.get_value() == -1.0


def test_no_summary_after_a_nonfinite_error(capsys, log_output):
    w, x, loss = mean_model()
    with pytest.raises(updates.NonFiniteLossError):
        updates.minimize(loss, [w], [x], [np.array([np.nan])], updates.sgd(), mode=MODE)
    assert err_lines(capsys) == []


def test_history_repr_is_one_short_line():
    w, x, loss, train, valid = pulled_model()
    history = updates.minimize(
        loss,
        [w],
        [x],
        train,
        updates.sgd(learning_rate=0.1),
        valid=valid,
        batch_size=None,
        max_epochs=300,
        **QUIET,
    )
    text = repr(history)
    assert len(history) == 300 and len(text) < 200 and "\n" not in text
    last = history.valid["loss"][-1]
    assert text == (
        f"History(300 records, 300 steps, 300 epochs, last valid loss {last:.4g}, best valid loss 0 at "
        "step 1 (epoch 1), restored, stop_reason='reached max_epochs=300')"
    )
    assert repr(updates.History()) == "History(0 records, stop_reason='')"
    train_only = updates.minimize(
        loss, [w], [x], train, updates.sgd(), batch_size=None, max_epochs=2, **QUIET
    )
    assert f"last train loss {train_only.train['loss'][-1]:.4g}, best train loss" in repr(train_only)


def test_progress_true_without_tqdm_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    w, x, loss = mean_model()
    run = updates.iterate(loss, [w], [x], DATA, updates.sgd(), max_epochs=1, progress=True, mode=MODE)
    with pytest.raises(ImportError, match=r"progress=True needs tqdm.*pytensor-updates\[progress\]"):
        next(run)
    history = updates.minimize(loss, [w], [x], DATA, updates.sgd(), max_epochs=1, progress=None, mode=MODE)
    assert len(history) == 1  # the default shows plain lines without tqdm, even on a terminal
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("minimize: 1 step (1 epoch) in ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45.1e-6, "45.1 µs"),
        (999.96e-6, "1 ms"),
        (0.0032, "3.2 ms"),
        (0.99996, "1 s"),
        (1.25, "1.25 s"),
        (59.7, "0:01:00"),
        (125.4, "0:02:05"),
        (3725, "1:02:05"),
    ],
)
def test_durations_read_at_a_glance(seconds, text):
    assert train_module._duration(seconds) == text


class SlowFirstCall:
    """A compiled function whose first call takes PAUSE seconds more, as a JIT compile does."""

    PAUSE = 0.3

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.PAUSE)
        return self.function(*args)

    def __getattr__(self, name):
        return getattr(self.function, name)


def test_record_seconds_are_training_time_without_the_compile(monkeypatch):
    """A slow compile and slow first calls are timed apart, not in the first record's seconds."""
    compile_step = train_module.compile_step

    def slow_compile(*args, **kwargs):
        time.sleep(SlowFirstCall.PAUSE)
        return SlowFirstCall(compile_step(*args, **kwargs))

    monkeypatch.setattr(train_module, "compile_step", slow_compile)
    w, x, loss, train, valid = pulled_model()
    history = updates.minimize(
        loss, [w], [x], train, updates.sgd(), valid=valid, batch_size=None, max_epochs=3, **QUIET
    )
    pause = SlowFirstCall.PAUSE
    assert history.compile_seconds >= 2 * pause  # the training and the validation function
    assert history.first_call_seconds >= pause and history.first_valid_call_seconds >= pause
    assert history.seconds[-1] < pause and np.all(np.diff(history.seconds) >= 0)
    assert np.all(history.seconds > 0) and np.all([r.step_seconds < pause for r in history[1:]])


def test_history_arrays():
    w, x, loss = mean_model()
    history = updates.minimize(
        loss, [w], [x], DATA, updates.sgd(), batch_size=5, max_epochs=3, monitors={"w": w}, **QUIET
    )
    assert len(history) == 3 and list(history) == history.records and history[0] is history.records[0]
    assert history.step.dtype == np.int64 and history.seconds.shape == (3,)
    assert np.all(np.diff(history.seconds) >= 0) and history.compile_seconds > 0
    assert history.first_call_seconds > 0 and np.isfinite(history[0].step_seconds)
    assert math.isnan(history.first_valid_call_seconds)  # no validation data


@pytest.mark.parametrize("function", [updates.iterate, updates.minimize], ids=lambda f: f.__name__)
def test_readme_row_states_the_signature(function):
    """The API table row lists every argument, with its default, in order."""
    row = next(
        line for line in README.read_text().splitlines() if line.startswith(f"| `{function.__name__}` |")
    )
    stated = [part.strip() for part in row.split("|")[2].split(", ")]
    expected = [
        name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}"
        for name, p in inspect.signature(function).parameters.items()
    ]
    assert stated == expected
    assert inspect.signature(updates.minimize).parameters == inspect.signature(updates.iterate).parameters
    assert re.search(r"\$\w", function.__doc__) is None


def test_the_guarded_step_still_updates_in_place():
    """The guard against non-finite steps sits inside the multi-tensor node (``engine.gated``), so
    under Numba the step overwrites params and state in place instead of copying them."""
    pytest.importorskip("numba")
    from updates.backends.numba import ParamStep
    from updates.train import _compile

    w = pytensor.shared(np.ones(3), name="w")
    x = pt.vector("x")
    loss = pt.sum((w - x) ** 2)
    step = _compile(
        "minimize", loss, [w], [x], updates.adam(learning_rate=0.1), {}, False, None, None, "NUMBA"
    )
    (node,) = [n for n in step.train.maker.fgraph.apply_nodes if isinstance(n.op, ParamStep)]
    assert node.op.destroy_map and node.op.kernel.gated
    storage = w.get_value(borrow=True)
    step.train(np.zeros(3))
    assert w.get_value(borrow=True) is storage and (storage < 1).all()
    before = w.get_value().copy()
    step.train(np.array([np.nan, 0.0, 0.0]))
    np.testing.assert_array_equal(w.get_value(), before)


# -- JAX: the loss stays on the device, the next batch goes there ahead ---------------------------------

JAX_CASES = {  # name: (training data, options); each run once in JAX mode and once with MODE
    "monitors": (  # w as a monitor; validation in batches of 3, 3 and 1 (a weighted mean)
        DATA,
        dict(valid=[DATA[:7]], monitor_w=True, gradient_norm=True, max_epochs=3),
    ),
    "skip": (np.tile(BAD, 2), dict(on_nonfinite="skip", shuffle=False, max_epochs=3)),
    "tolerance": (DATA, dict(batch_size=None, tolerance=0.05, max_epochs=50)),
}


def jax_case_run(name, mode):
    """The run of JAX_CASES[name] under ``mode``: (history, final w, optimizer state)."""
    pytest.importorskip("jax")
    data, options = JAX_CASES[name]
    w, x, loss = mean_model()
    options = {"batch_size": 3, **options, "progress": False, "mode": mode}
    if options.pop("monitor_w", False):
        options["monitors"] = {"w": w}
    schedule = updates.exponential_decay(init_value=0.3, decay_rate=0.5, decay_steps=4)
    optimizer = updates.adam(loss, [w], learning_rate=schedule)
    history = updates.minimize(loss, None, [x], data, optimizer, **options)
    return history, w.get_value(), optimizer.named_state()


@pytest.mark.parametrize("name", list(JAX_CASES))
def test_jax_mode_keeps_the_records_of_the_other_modes(name, monkeypatch):
    """Reading the outputs later changes no record: every field of every record, the stop
    reason, the params and the optimizer state are those of the Python linker. (With 'skip',
    the outputs are read every 3 steps too, not only at the records of 4 steps.)"""
    if name == "skip":
        monkeypatch.setattr(train_module, "_UNREAD_STEPS", 3)
    (got, w, state), (expected, w_expected, state_expected) = (jax_case_run(name, m) for m in ("JAX", MODE))
    assert got.stop_reason == expected.stop_reason and len(got) == len(expected) > 1
    fields = [[(r.step, r.epoch, r.best, r.skipped) for r in h] for h in (got, expected)]
    assert fields[0] == fields[1]
    for part in ("train", "valid"):
        values, reference = getattr(got, part), getattr(expected, part)
        assert values.keys() == reference.keys()
        for key in reference:
            np.testing.assert_allclose(values[key], reference[key], rtol=1e-12, err_msg=f"{part} {key}")
    assert got.best.step == expected.best.step and got.restored == expected.restored
    np.testing.assert_allclose(w, w_expected, rtol=1e-12)
    for key, value in state.items():
        np.testing.assert_allclose(value, state_expected[key], rtol=1e-12, err_msg=key)
    assert any(r.skipped for r in got) == (name == "skip")
    assert got.stop_reason.startswith("converged") == (name == "tolerance")


def test_jax_mode_raises_at_the_nonfinite_step_with_the_last_good_params():
    pytest.importorskip("jax")
    w, optimizer, run = nan_run("raise", mode="JAX")
    with pytest.raises(
        updates.NonFiniteLossError, match=r"the loss was nan at step 3 \(epoch 1, batch 3\)"
    ) as err:
        run()
    assert err.value.step == 3 and math.isnan(err.value.loss)
    assert w.get_value() == pytest.approx(adam_path(BAD[:2, None])[-1], rel=1e-13)
    assert optimizer.named_state()["adam.t"] == 2


@pytest.fixture
def jax_calls(monkeypatch):
    """The JAX step's calls, prefetches and reads to the host, logged in order as
    ``(event, number of calls so far, what)``."""
    pytest.importorskip("jax")
    from updates.step import JAXStep

    log = []
    call, prefetch, to_host = JAXStep.__call__, JAXStep.prefetch, JAXStep._to_host

    def logged_call(self, *values):
        log.append(("call", 1 + sum(e[0] == "call" for e in log), values))
        return call(self, *values)

    def logged_prefetch(self, *values):
        placed = prefetch(self, *values)
        log.append(("prefetch", sum(e[0] == "call" for e in log), placed))
        return placed

    def logged_read(self, value, *args):
        log.append(("read", sum(e[0] == "call" for e in log), value))
        return to_host(self, value, *args)

    monkeypatch.setattr(JAXStep, "__call__", logged_call)
    monkeypatch.setattr(JAXStep, "prefetch", logged_prefetch)
    monkeypatch.setattr(JAXStep, "_to_host", logged_read)
    return log


@pytest.mark.parametrize("on_nonfinite", ["skip", "raise"])
def test_jax_mode_reads_the_loss_only_for_the_records(on_nonfinite, jax_calls):
    """Nothing comes back from the device between two records, but the finiteness of each step
    where a non-finite step must stop the loop (on_nonfinite='raise'): read after that step."""
    w, x, loss = mean_model()
    options = dict(batch_size=4, max_epochs=2, on_nonfinite=on_nonfinite, progress=False, mode="JAX")
    updates.minimize(loss, [w], [x], DATA, updates.sgd(), **options)
    log = jax_calls
    reads = [(calls, value) for event, calls, value in log if event == "read"]
    at_records = {calls for calls, _ in reads if calls % 3 == 0}  # 3 steps an epoch
    assert at_records == {3, 6}
    between = [value for calls, value in reads if calls % 3]
    if on_nonfinite == "skip":
        assert between == []
    else:  # one read per step: its finiteness flag, not the loss
        assert len(between) == 4 and all(v.dtype == bool and v.shape == () for v in between)


def test_jax_mode_puts_the_next_batch_on_the_device_while_the_step_runs(jax_calls):
    """Each batch is placed on the device after the call before it and before that step is
    waited for (its finiteness read), the call gets those very device arrays, and nothing is
    placed past max_updates nor across an epoch's end (a pass of the data would start early)."""
    import jax

    w, x, loss = mean_model()
    updates.minimize(
        loss, [w], [x], DATA, updates.sgd(), batch_size=4, max_updates=5, progress=False, mode="JAX"
    )
    order = [(event, calls) for event, calls, _ in jax_calls]
    order = [e for i, e in enumerate(order) if i == 0 or e != order[i - 1]]  # the record's reads as one
    P, C, R = "prefetch", "call", "read"
    assert order == [
        (P, 0), (C, 1), (P, 1), (R, 1), (C, 2), (P, 2), (R, 2), (C, 3), (R, 3),  # epoch 1: 3 batches
        (P, 3), (C, 4), (P, 4), (R, 4), (C, 5), (R, 5),  # epoch 2 stops at max_updates=5
    ]  # fmt: skip
    placed = [values for event, _, values in jax_calls if event == P]
    given = [values for event, _, values in jax_calls if event == C]
    assert len(placed) == len(given) == 5
    assert all(a is b for p, g in zip(placed, given) for a, b in zip(p, g))  # the very arrays
    device = jax.devices()[0]
    assert all(isinstance(a, jax.Array) and a.devices() == {device} for g in given for a in g)
    expected = list(batches_of(DATA, 4, 0, 2))[:5]
    for (value,), batch in zip(given, expected):
        np.testing.assert_array_equal(np.asarray(value), batch)


@pytest.mark.parametrize("mode", [MODE, "JAX"])
def test_a_bad_batch_drawn_ahead_fails_in_its_turn(mode):
    """Under JAX the next batch is drawn while a step runs: its error is still raised after
    that step ends the run (here with a non-finite loss), and raised when its turn comes."""
    pytest.importorskip("jax")
    w, x, loss = mean_model()
    good, bad = [np.array([1.0])], [np.array([1.0]), np.array([2.0])]
    options = dict(progress=False, mode=mode, max_epochs=1)
    with pytest.raises(updates.NonFiniteLossError, match="at step 2"):
        updates.minimize(loss, [w], [x], [good, [np.array([np.nan])], bad], updates.sgd(), **options)
    with pytest.raises(ValueError, match=r"batch 2 of train has 2 arrays, expected a sequence of 1"):
        updates.minimize(loss, [w], [x], [good, good, bad], updates.sgd(), **options)
