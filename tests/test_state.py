"""Optimizer state: inspect, save, load, reset.

The defining property: run N steps, save, build everything again from scratch (in this process and
in a fresh one), load, run M more steps: the params and the state equal those of an uninterrupted
N + M run bit for bit, for every rule of the registry and for the momentum wrappers, on both the
multi-tensor and the per-parameter path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.sharedvalue import SharedVariable
from registry import RULES, WRAPPERS

import updates
from updates.state import FORMAT_VERSION, HyperparameterWarning

PATHS = {"fused": contextlib.nullcontext, "per_parameter": updates.per_parameter}
N, M = 7, 5
# Three float64 params (a vector, a matrix, a scalar) and a broadcastable float32 one: the
# multi-tensor path keeps one flat buffer per slot and dtype.
SHAPES = {"w": ((3,), "float64"), "b": ((2, 2), "float64"), "s": ((), "float64"), "h": ((1, 3), "float32")}


def _rule(case):
    return lambda loss, params: case.function(loss, params, **case.hyper)


def _wrapped(wrapper, rule):
    return lambda loss, params: wrapper(rule(loss, params, learning_rate=0.05), momentum=0.8)


def _scheduled(loss, params):
    """Schedules, one with state of its own (driven by the loss), on a rule and on a wrapper."""
    learning_rate = updates.reduce_on_plateau(loss + 10.0, 0.05, factor=0.5, patience=1, threshold=0.2)
    beta1 = updates.exponential_decay(0.9, 0.5, 4)
    adam = updates.adam(loss, params, learning_rate=learning_rate, beta1=beta1)
    return updates.apply_momentum(adam, momentum=updates.momentum_ramp(0.5, 0.9, 6))


def _around_adam(wrapper_case):
    return lambda loss, params: wrapper_case.build(updates.adam(learning_rate=0.05), loss, params)


def _groups(grads, params):
    """Two parameter groups, each with its own Adam (and step counter), merged."""
    return updates.merge_updates(
        updates.adam(grads[:2], params[:2], learning_rate=0.05),
        updates.adam(grads[2:], params[2:], learning_rate=0.01),
    )


# Every rule of the registry, the momentum wrappers around a rule without state and one with,
# schedules, every other wrapper of the registry around Adam, and two parameter groups.
CASES = {
    **{str(case): _rule(case) for case in RULES},
    **{
        f"{wrapper.__name__}({rule.__name__})": _wrapped(wrapper, rule)
        for wrapper in (updates.apply_momentum, updates.apply_nesterov_momentum)
        for rule in (updates.sgd, updates.adam)
    },
    "scheduled": _scheduled,
    **{
        f"{case.name}(adam)": _around_adam(case)
        for case in WRAPPERS
        if case.name not in ("apply_momentum", "apply_nesterov_momentum")
    },
    "groups": lambda loss, params: _groups(updates.get_or_compute_grads(loss, params), params),
}


def make_params(names=tuple(SHAPES), shapes=None, seed=0):
    """Named params, the same values for the same seed in any process."""
    rng = np.random.default_rng(seed)
    params = []
    for name in names:
        shape, dtype = (shapes or {}).get(name, SHAPES[name])
        static = tuple(1 if n == 1 else None for n in shape)
        params.append(pytensor.shared(rng.normal(size=shape).astype(dtype), name=name, shape=static))
    return params


def make_loss(params, seed=1):
    """sum(a p**2 / 2 + p**4 / 40 - c p): a closed loop whose gradient depends on the params."""
    rng = np.random.default_rng(seed)
    terms = []
    for p in params:
        shape = p.get_value().shape
        a, c = rng.uniform(0.5, 2.0, size=shape).astype(p.dtype), rng.normal(size=shape).astype(p.dtype)
        terms.append(pt.cast(pt.sum(0.5 * a * p**2 + 0.025 * p**4 - c * p), "float64"))
    return pt.add(*terms)


def build(case, path, names=tuple(SHAPES), shapes=None):
    """The whole graph, from scratch: params, loss, updates, compiled step."""
    params = make_params(names, shapes)
    with PATHS[path]():
        result = CASES[case](make_loss(params), params)
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    return params, result, step


def run(step, steps):
    for _ in range(steps):
        step()


def snapshot(params, result):
    """Copies of the params and of the state, by name."""
    return {
        **{f"param/{p.name}": p.get_value() for p in params},
        **{f"state/{name}": np.array(value) for name, value in result.named_state().items()},
    }


def assert_bitwise_equal(got, expected, context=""):
    assert got.keys() == expected.keys(), context
    for key in expected:
        a, b = np.asarray(got[key]), np.asarray(expected[key])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{context} {key}"
        assert a.tobytes() == b.tobytes(), f"{context} {key}: {a} != {b}"


def checkpoint_after_n_steps(case, path, directory):
    """Run N steps, save (with the params), run M more: the checkpoint and the uninterrupted end."""
    params, result, step = build(case, path)
    run(step, N)
    checkpoint = os.path.join(directory, f"{case}-{path}.npz")
    updates.save_state(checkpoint, result, params=True)
    saved = snapshot(params, result)
    run(step, M)
    return checkpoint, saved, snapshot(params, result)


# -- the defining property -------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_resume_equals_an_uninterrupted_run(case, path, tmp_path):
    checkpoint, saved, uninterrupted = checkpoint_after_n_steps(case, path, tmp_path)
    if any(key.startswith("state/") for key in saved):
        assert any(np.any(v != 0) for k, v in saved.items() if k.startswith("state/")), "no state to save"

    params, result, step = build(case, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyperparameterWarning)  # the same hyperparameters: no warning
        updates.load_state(checkpoint, result, params=True)
    assert_bitwise_equal(snapshot(params, result), saved, "loaded")
    run(step, M)
    assert_bitwise_equal(snapshot(params, result), uninterrupted, "resumed")


@pytest.mark.parametrize("path", PATHS)
def test_saving_changes_nothing(path, tmp_path):
    """So the run continued after a save (the reference above) is an uninterrupted run."""
    _, _, continued = checkpoint_after_n_steps("scheduled", path, tmp_path)
    params, result, step = build("scheduled", path)
    run(step, N + M)
    assert_bitwise_equal(continued, snapshot(params, result))


RESUME_SCRIPT = """
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
import numpy as np
import updates
from test_state import M, build, run, snapshot
warnings.simplefilter("error", updates.state.HyperparameterWarning)
for case, path, checkpoint, out in json.loads(sys.argv[2]):
    params, result, step = build(case, path)
    updates.load_state(checkpoint, result, params=True)
    run(step, M)
    np.savez(out, **snapshot(params, result))
"""


@pytest.mark.parametrize("half", [0, 1])
@pytest.mark.parametrize("path", PATHS)
def test_resume_in_a_fresh_process(path, half, tmp_path):
    """Every case of CASES (half of them per test, to share the work between test workers): saved
    here, resumed in one new Python process that builds each graph again from scratch; the end
    equals this process's uninterrupted run bit for bit."""
    jobs, expected = [], {}
    for case in list(CASES)[half::2]:
        checkpoint, _, uninterrupted = checkpoint_after_n_steps(case, path, tmp_path)
        out = str(tmp_path / f"{case}-{path}-resumed.npz")
        jobs.append((case, path, checkpoint, out))
        expected[case] = uninterrupted
    tests = os.path.dirname(os.path.abspath(__file__))
    completed = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, tests, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    for case, _, _, out in jobs:
        with np.load(out) as resumed:
            assert_bitwise_equal(dict(resumed), expected[case], case)


@pytest.mark.parametrize(("saved_on", "loaded_on"), [("fused", "per_parameter"), ("per_parameter", "fused")])
def test_checkpoints_read_the_same_on_either_path(saved_on, loaded_on, tmp_path):
    checkpoint, saved, _ = checkpoint_after_n_steps("apply_momentum(adam)", saved_on, tmp_path)
    params, result, _ = build("apply_momentum(adam)", loaded_on)
    updates.load_state(checkpoint, result, params=True)
    assert_bitwise_equal(snapshot(params, result), saved)


def test_params_are_loaded_only_when_asked(tmp_path):
    params, result, step = build("adam", "fused")
    run(step, 3)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    saved = snapshot(params, result)
    run(step, 2)
    moved = {p.name: p.get_value() for p in params}
    updates.load_state(tmp_path / "c.npz", result)
    for p in params:
        np.testing.assert_array_equal(p.get_value(), moved[p.name])
    updates.load_state(tmp_path / "c.npz", result, params=True)
    assert_bitwise_equal(snapshot(params, result), saved)


def adam_step(learning_rate, checkpoint):
    """The change of each param in one Adam step at ``learning_rate`` after loading ``checkpoint``
    (with its params)."""
    params = make_params(("w", "b"))
    result = updates.adam(make_loss(params), params, learning_rate=learning_rate)
    updates.load_state(checkpoint, result, params=True)
    before = [p.get_value() for p in params]
    pytensor.function([], [], updates=result, mode="FAST_COMPILE")()
    return [p.get_value() - b for p, b in zip(params, before)]


def test_a_new_learning_rate_may_be_resumed_with(tmp_path):
    """Only the rules and wrappers must match, not their hyperparameter values: the state is
    loaded, the new rate is the one in effect, and the difference is warned about."""
    params = make_params(("w", "b"))
    result = updates.adam(make_loss(params), params)  # learning_rate=0.001, the default
    run(pytensor.function([], [], updates=result, mode="FAST_COMPILE"), N)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    saved = snapshot(params, result)

    params = make_params(("w", "b"))
    smaller = updates.adam(make_loss(params), params, learning_rate=1e-4)
    with pytest.warns(HyperparameterWarning) as record:
        updates.load_state(tmp_path / "c.npz", smaller, params=True)
    assert len(record) == 1 and record[0].filename == __file__
    assert str(record[0].message) == (
        f"load_state: {tmp_path / 'c.npz'} was saved with other hyperparameters: adam learning_rate is "
        "0.001 in the file, 0.0001 in the updates; the updates keep their own"
    )
    assert_bitwise_equal(snapshot(params, smaller), saved, "loaded")
    assert int(smaller.named_state()["adam.t"]) == N
    assert updates.inspect_state(smaller).hyperparameters["learning_rate"] == 1e-4

    # Adam's step is proportional to the learning rate: one step from the loaded state moves each
    # param a tenth of what the saved rate moves it.
    with pytest.warns(HyperparameterWarning):
        small = adam_step(1e-4, tmp_path / "c.npz")
    large = adam_step(1e-3, tmp_path / "c.npz")
    for a, b in zip(small, large):
        assert np.all(b != 0)
        np.testing.assert_allclose(a, b / 10, rtol=1e-9)


def test_file_layout(tmp_path):
    _params, result, step = build("apply_momentum(adam)", "fused", names=("w", "h"))
    run(step, 2)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as stored:
        assert list(stored) == [
            "__format__",
            "__config__",
            *[f"state/{p}.adam.{s}" for p in "wh" for s in "mv"],  # one buffer per slot and dtype
            "state/adam.t",
            "state/w.apply_momentum.velocity",
            "state/h.apply_momentum.velocity",
            "param/w",
            "param/h",
        ]
        assert stored["__format__"] == FORMAT_VERSION
        assert json.loads(str(stored["__config__"])) == result.config
        assert stored["state/adam.t"] == 2 and stored["state/adam.t"].dtype == np.int64
        assert stored["state/h.adam.m"].dtype == np.float32 and stored["state/h.adam.m"].shape == (1, 3)


# -- refusals: nothing is written ------------------------------------------------------------------


def trained(case="adam", path="fused", names=("w", "b"), shapes=None, steps=3):
    params, result, step = build(case, path, names, shapes)
    run(step, steps)
    return params, result


@pytest.fixture
def adam_checkpoint(tmp_path):
    _params, result = trained()
    path = tmp_path / "adam.npz"
    updates.save_state(path, result, params=True)
    return str(path)


MISMATCHES = {
    "a different rule": (
        dict(case="rmsprop"),
        r"holds the state of adam, but the updates are rmsprop; load it into updates built by the same",
    ),
    "a wrapper more": (
        dict(case="apply_momentum(adam)"),
        r"holds the state of adam, but the updates are adam \+ apply_momentum",
    ),
    "a missing name": (
        dict(names=("w", "b", "s")),
        r"does not match the updates: state 's\.adam\.m' is missing from the file; "
        r"state 's\.adam\.v' is missing from the file; param 's' is missing from the file; "
        r"nothing was loaded",
    ),
    "an unknown name": (
        dict(names=("w",)),
        r"does not match the updates: the file has state 'b\.adam\.m', which the updates do not have",
    ),
    "a wrong shape": (
        dict(shapes={"b": ((2, 3), "float64")}),
        r"does not match the updates: state 'b\.adam\.m' has shape \(2, 2\) in the file, \(2, 3\) in "
        r"the updates; state 'b\.adam\.v' has shape .*; param 'b' has shape \(2, 2\) in the file",
    ),
    "a wrong dtype": (
        dict(shapes={"w": ((3,), "float32")}),
        r"does not match the updates: state 'w\.adam\.m' has dtype float64 in the file, float32 in "
        r"the updates",
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_a_mismatch_is_refused_and_nothing_is_loaded(mismatch, path, adam_checkpoint):
    changes, message = MISMATCHES[mismatch]
    params, result = trained(**{"path": path, **changes, "steps": 2})
    before = snapshot(params, result)
    with pytest.raises(ValueError, match=rf"^load_state: {re.escape(adam_checkpoint)} {message}"):
        updates.load_state(adam_checkpoint, result, params=True)
    assert_bitwise_equal(snapshot(params, result), before)


def test_a_param_mismatch_is_refused_and_no_state_is_loaded(adam_checkpoint, tmp_path):
    params, result = trained(steps=2)
    params[1].name = "c"  # the state keeps its names: only the params differ
    before = snapshot(params, result)
    with pytest.raises(ValueError, match=r"param 'c' is missing from the file; the file has param 'b', wh"):
        updates.load_state(adam_checkpoint, result, params=True)
    assert_bitwise_equal(snapshot(params, result), before)
    updates.load_state(adam_checkpoint, result)  # the state alone matches


def test_params_must_be_in_the_file_to_be_loaded(tmp_path):
    params, result = trained()
    updates.save_state(tmp_path / "c.npz", result)
    before = snapshot(params, result)
    with pytest.raises(ValueError, match=r"it holds no params \(it was saved with params=False\)"):
        updates.load_state(tmp_path / "c.npz", result, params=True)
    assert_bitwise_equal(snapshot(params, result), before)


def test_another_format_version_is_refused(adam_checkpoint, tmp_path):
    contents = dict(np.load(adam_checkpoint))
    np.savez(tmp_path / "v2.npz", **{**contents, "__format__": np.int64(FORMAT_VERSION + 1)})
    np.savez(tmp_path / "v0.npz", **{k: v for k, v in contents.items() if k != "__format__"})
    np.savez(tmp_path / "extra.npz", **contents, notes=np.zeros(2))
    params, result = trained()
    before = snapshot(params, result)
    with pytest.raises(
        ValueError, match=r"v2\.npz has format version 2; this version of updates reads version 1"
    ):
        updates.load_state(tmp_path / "v2.npz", result)
    with pytest.raises(ValueError, match=r"v0\.npz is not a checkpoint written by save_state \(no valid __f"):
        updates.load_state(tmp_path / "v0.npz", result)
    with pytest.raises(ValueError, match=r"extra\.npz does not match the updates: unknown entry 'notes'"):
        updates.load_state(tmp_path / "extra.npz", result)
    assert_bitwise_equal(snapshot(params, result), before)


def test_params_are_saved_by_distinct_names(tmp_path):
    params = make_params(("w", "b"))
    params[1].name = None
    with pytest.raises(ValueError, match=r"^save_state: params\[1\] has no name, and params are saved and"):
        updates.save_state(tmp_path / "c.npz", updates.sgd(make_loss(params), params), params=True)
    updates.save_state(tmp_path / "c.npz", updates.sgd(make_loss(params), params))  # state only: fine
    params[1].name = "w"
    result = updates.adam(make_loss(params), params)
    with pytest.raises(ValueError, match=r"^save_state: params\[0\] and params\[1\] are both named 'w'"):
        updates.save_state(tmp_path / "d.npz", result, params=True)
    with pytest.raises(ValueError, match=r"^save_state: two pieces of state are named 'w\.adam\.m'"):
        updates.save_state(tmp_path / "d.npz", result)
    with pytest.raises(ValueError, match=r"^load_state: params\[0\] and params\[1\] are both named 'w'"):
        updates.load_state(tmp_path / "c.npz", result, params=True)
    assert not (tmp_path / "d.npz").exists()


def test_only_updates_are_accepted(tmp_path):
    w = pytensor.shared(np.zeros(2), name="w")
    plain = dict(updates.sgd((w**2).sum(), [w]))
    for function, args in [
        (updates.inspect_state, ()),
        (updates.reset_state, ()),
        (updates.save_state, (tmp_path / "c.npz",)),
        (updates.load_state, (tmp_path / "c.npz",)),
    ]:
        arguments = (*args, plain) if args else (plain,)
        with pytest.raises(TypeError, match=rf"^{function.__name__}: updates must be an Updates"):
            function(*arguments)


def test_validating_a_checkpoint_assigns_nothing(adam_checkpoint, monkeypatch):
    """load_state validates everything first (setting no variable), then assigns what it validated."""
    params, result = trained(steps=5)
    before = snapshot(params, result)

    def refused(self, *args, **kwargs):
        raise AssertionError(f"{self.name} was set while validating")

    monkeypatch.setattr(SharedVariable, "set_value", refused)
    assignments = updates.state._validated(adam_checkpoint, result, params=True)
    monkeypatch.undo()
    assert_bitwise_equal(snapshot(params, result), before)
    assert [variable for variable, _ in assignments] == [*result.state, *params]
    updates.state._assign(assignments)
    assert int(result.named_state()["adam.t"]) == 3


@pytest.mark.parametrize("path", PATHS)
def test_a_piece_of_the_same_size_and_another_shape_is_refused(path, tmp_path):
    """A (2, 3) piece fills a (3, 2) one element for element: the shapes are compared, not the sizes."""
    _, result = trained(path=path, shapes={"b": ((2, 3), "float64")})
    updates.save_state(tmp_path / "c.npz", result, params=True)
    params, result = trained(path=path, shapes={"b": ((3, 2), "float64")}, steps=2)
    before = snapshot(params, result)
    transposed = r"has shape \(2, 3\) in the file, \(3, 2\) in the updates"
    with pytest.raises(
        ValueError,
        match=rf"does not match the updates: state 'b\.adam\.m' {transposed}; state 'b\.adam\.v' "
        rf"{transposed}; param 'b' {transposed}; nothing was loaded$",
    ):
        updates.load_state(tmp_path / "c.npz", result, params=True)
    with pytest.raises(
        ValueError, match=rf"state 'b\.adam\.m' {transposed}; state 'b\.adam\.v' {transposed}; n"
    ):
        updates.load_state(tmp_path / "c.npz", result)
    assert_bitwise_equal(snapshot(params, result), before)


# -- hyperparameters: compared on load, restored on request ----------------------------------------


def momentum_sgd(learning_rate, momentum, names=("w", "b"), steps=0):
    """SGD with the momentum wrapper over fresh params, after ``steps`` steps: (params, updates)."""
    params = make_params(names)
    result = updates.apply_momentum(
        updates.sgd(make_loss(params), params, learning_rate=learning_rate), momentum=momentum
    )
    if steps:
        run(pytensor.function([], [], updates=result, mode="FAST_COMPILE"), steps)
    return params, result


@pytest.fixture
def momentum_checkpoint(tmp_path):
    """sgd(learning_rate=0.1) + apply_momentum(momentum=0.9) after 3 steps, saved with the params;
    the path and what was saved."""
    params, result = momentum_sgd(0.1, 0.9, steps=3)
    path = tmp_path / "momentum.npz"
    updates.save_state(path, result, params=True)
    return str(path), snapshot(params, result)


def loaded(checkpoint, result, **options):
    """``load_state`` with params; the HyperparameterWarning messages it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        updates.load_state(checkpoint, result, params=True, **options)
    assert all(issubclass(w.category, HyperparameterWarning) for w in record), record
    assert all(w.filename == __file__ for w in record), "the warning points at the caller"
    return [str(w.message) for w in record]


def test_differing_hyperparameters_are_warned_about_and_kept(momentum_checkpoint):
    checkpoint, saved = momentum_checkpoint
    params, result = momentum_sgd(0.05, 0.8)
    assert loaded(checkpoint, result) == [
        f"load_state: {checkpoint} was saved with other hyperparameters: sgd learning_rate is 0.1 in the "
        "file, 0.05 in the updates; apply_momentum momentum is 0.9 in the file, 0.8 in the updates; the "
        "updates keep their own"
    ]
    assert_bitwise_equal(snapshot(params, result), saved)
    assert result.hyperparameter_values() == {"learning_rate": 0.05, "apply_momentum.momentum": 0.8}
    assert loaded(checkpoint, result, hyperparameters="ignore") == []
    assert loaded(checkpoint, momentum_sgd(0.1, 0.9)[1], hyperparameters="warn") == []  # the same: silent


def test_differing_hyperparameters_may_be_refused(momentum_checkpoint):
    checkpoint, saved = momentum_checkpoint
    params, result = momentum_sgd(0.1, 0.8, steps=1)
    before = snapshot(params, result)
    with pytest.raises(
        ValueError,
        match=rf"^load_state: {re.escape(checkpoint)} was saved with other hyperparameters: apply_momentum "
        r"momentum is 0\.9 in the file, 0\.8 in the updates; nothing was loaded \(hyperparameters='error'\)$",
    ):
        updates.load_state(checkpoint, result, params=True, hyperparameters="error")
    assert_bitwise_equal(snapshot(params, result), before)
    params, result = momentum_sgd(0.1, 0.9)
    assert loaded(checkpoint, result, hyperparameters="error") == []
    assert_bitwise_equal(snapshot(params, result), saved)


def test_hyperparameters_takes_one_of_four_choices(momentum_checkpoint):
    checkpoint, _ = momentum_checkpoint
    params, result = momentum_sgd(0.05, 0.9)
    before = snapshot(params, result)
    choices = "'warn', 'error', 'restore', 'ignore'"
    with pytest.raises(
        ValueError, match=rf"^load_state: hyperparameters must be one of {choices}, got 'keep'$"
    ):
        updates.load_state(checkpoint, result, hyperparameters="keep")
    with pytest.raises(TypeError, match=rf"^load_state: hyperparameters must be one of {choices}, got bool$"):
        updates.load_state(checkpoint, result, hyperparameters=True)
    assert_bitwise_equal(snapshot(params, result), before)


def test_live_hyperparameters_are_recorded_in_the_checkpoint(tmp_path):
    learning_rate, momentum = updates.live(0.1, name="lr"), updates.live(0.9)
    _, result = momentum_sgd(learning_rate, momentum, steps=1)
    learning_rate.set_value(0.25)
    updates.save_state(tmp_path / "c.npz", result)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as stored:
        assert [k for k in stored if k.startswith("live/")] == [
            "live/learning_rate",
            "live/apply_momentum.momentum",
        ]
        assert stored["live/learning_rate"] == 0.25 and stored["live/learning_rate"].dtype == np.float64
        assert stored["live/apply_momentum.momentum"] == 0.9
        assert json.loads(str(stored["__config__"])) == result.config  # the configuration as before


def test_a_changed_live_value_is_warned_about_and_kept(tmp_path):
    """Nothing the user set is overwritten unless asked."""
    learning_rate = updates.live(0.1, name="lr")
    _, result = momentum_sgd(learning_rate, 0.9, steps=2)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    learning_rate.set_value(0.02)
    assert loaded(tmp_path / "c.npz", result) == [
        f"load_state: {tmp_path / 'c.npz'} was saved with other hyperparameters: sgd learning_rate is 0.1 "
        "(shared lr) in the file, 0.02 (shared lr) in the updates; the updates keep their own; "
        "hyperparameters='restore' sets the live ones to the file's values"
    ]
    assert learning_rate.get_value() == 0.02
    assert loaded(tmp_path / "c.npz", result, hyperparameters="restore") == []
    assert learning_rate.get_value() == 0.1


def test_restore_sets_the_live_hyperparameters_to_the_files(tmp_path):
    _, result = momentum_sgd(updates.live(0.1, name="lr"), updates.live(0.9), steps=2)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    saved = result.named_state()
    saved = {k: np.array(v) for k, v in saved.items()}
    learning_rate, momentum = updates.live(0.5, name="learning_rate"), updates.live(0.3)
    _params, again = momentum_sgd(learning_rate, momentum)
    assert loaded(tmp_path / "c.npz", again, hyperparameters="restore") == []
    assert (learning_rate.get_value(), momentum.get_value()) == (0.1, 0.9)
    assert again.hyperparameter_values() == {"learning_rate": 0.1, "apply_momentum.momentum": 0.9}
    assert_bitwise_equal(
        {f"state/{k}": v for k, v in again.named_state().items()}, {f"state/{k}": v for k, v in saved.items()}
    )


def test_restore_takes_a_saved_number_and_warns_about_what_it_cannot_restore(momentum_checkpoint):
    """A number of the file goes into a live hyperparameter; a number of the graph cannot change."""
    checkpoint, saved = momentum_checkpoint  # learning_rate=0.1, momentum=0.9
    learning_rate = updates.live(0.5, name="lr")
    params, result = momentum_sgd(learning_rate, 0.8)
    assert loaded(checkpoint, result, hyperparameters="restore") == [
        f"load_state: {checkpoint} was saved with other hyperparameters, which cannot be restored: "
        "apply_momentum momentum is 0.9 in the file, 0.8 in the updates; the updates keep their own (a "
        "number or schedule is fixed in the graph: build the updates with the file's value, or with a "
        "live() one)"
    ]
    assert learning_rate.get_value() == 0.1
    assert_bitwise_equal(snapshot(params, result), saved)
    # a live value of the file and a number of the updates: compared, not restorable
    learning_rate.set_value(0.2)
    checkpoint_live = checkpoint.replace("momentum.npz", "live.npz")
    updates.save_state(checkpoint_live, result, params=True)
    messages = loaded(checkpoint_live, momentum_sgd(0.1, 0.8)[1], hyperparameters="restore")
    assert len(messages) == 1
    assert (
        "cannot be restored: sgd learning_rate is 0.2 (shared lr) in the file, 0.1 in the updates; the upd"
        in messages[0]
    )


def test_an_equal_value_is_no_difference_live_or_not(tmp_path):
    _, result = momentum_sgd(updates.live(0.1), 0.9)
    updates.save_state(tmp_path / "live.npz", result, params=True)
    updates.save_state(tmp_path / "fixed.npz", momentum_sgd(0.1, 0.9)[1], params=True)
    for checkpoint in ("live.npz", "fixed.npz"):
        for built in (momentum_sgd(0.1, updates.live(0.9))[1], momentum_sgd(updates.live(0.1), 0.9)[1]):
            for choice in ("warn", "error", "restore"):
                assert loaded(tmp_path / checkpoint, built, hyperparameters=choice) == []


def test_schedules_are_compared_by_their_description(tmp_path):
    fast, slow = updates.linear_warmup(1.0, 4), updates.linear_warmup(0.5, 4)
    _, result = momentum_sgd(fast, 0.9)
    updates.save_state(tmp_path / "c.npz", result, params=True)
    _params, again = momentum_sgd(slow, 0.9)
    messages = loaded(tmp_path / "c.npz", again, hyperparameters="restore")
    assert messages == [
        f"load_state: {tmp_path / 'c.npz'} was saved with other hyperparameters, which cannot be restored: "
        f"sgd learning_rate is {fast!r} in the file, {slow!r} in the updates; the updates keep their own (a "
        "number or schedule is fixed in the graph: build the updates with the file's value, or with a "
        "live() one)"
    ]
    assert repr(fast) != repr(slow)
    assert loaded(tmp_path / "c.npz", momentum_sgd(updates.linear_warmup(1.0, 4), 0.9)[1]) == []


def test_merged_groups_restore_each_live_hyperparameter_into_its_own(tmp_path):
    """Two groups of the same rule and a wrapper: each live value goes back where it was saved."""

    def groups(first, second, momentum):
        params = make_params(("w", "b"))
        grads = updates.get_or_compute_grads(make_loss(params), params)
        merged = updates.merge_updates(
            updates.adam(grads[:1], params[:1], learning_rate=first),
            updates.adam(grads[1:], params[1:], learning_rate=second),
        )
        return updates.apply_momentum(merged, momentum=momentum)

    first, second, momentum = updates.live(0.1, "lr0"), updates.live(0.2, "lr1"), updates.live(0.9, "mu")
    updates.save_state(tmp_path / "c.npz", groups(first, second, momentum), params=True)
    with np.load(tmp_path / "c.npz") as stored:
        assert sorted(k for k in stored if k.startswith("live/")) == [
            "live/0.learning_rate",
            "live/1.learning_rate",
            "live/apply_momentum.momentum",
        ]
    first, second, momentum = updates.live(0.2, "lr0"), updates.live(0.1, "lr1"), updates.live(0.9, "mu")
    result = groups(first, second, momentum)
    assert loaded(tmp_path / "c.npz", result) == [
        f"load_state: {tmp_path / 'c.npz'} was saved with other hyperparameters: adam[0] learning_rate "
        "is 0.1 (shared lr0) in the file, 0.2 (shared lr0) in the updates; adam[1] learning_rate is 0.2 "
        "(shared lr1) in the file, 0.1 (shared lr1) in the updates; the updates keep their own; "
        "hyperparameters='restore' sets the live ones to the file's values"
    ]
    assert loaded(tmp_path / "c.npz", result, hyperparameters="restore") == []
    assert (first.get_value(), second.get_value(), momentum.get_value()) == (0.1, 0.2, 0.9)


def write_format_1(path, config, state):
    """A checkpoint as format 1 is documented (updates.state's docstring), written without save_state."""
    np.savez(
        path,
        __format__=np.int64(1),
        __config__=np.asarray(json.dumps(config)),
        **{f"state/{name}": value for name, value in state.items()},
    )


def test_a_checkpoint_without_live_values_loads_as_before(tmp_path):
    """Format 1 as written before live values were recorded: the state loads whole; a live
    hyperparameter is left alone (its saved value is unknown), and said so only when a restore
    is asked for."""
    config = [{"rule": "sgd", "learning_rate": 0.1}, {"wrapper": "apply_momentum", "momentum": "shared mu"}]
    state = {"w.apply_momentum.velocity": np.array([1.0, 2.0, 3.0]), "b.apply_momentum.velocity": np.eye(2)}
    write_format_1(tmp_path / "old.npz", config, state)
    for path in PATHS:
        with PATHS[path]():
            momentum = updates.live(0.7, name="mu")
            _, result = momentum_sgd(0.1, momentum)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            updates.load_state(tmp_path / "old.npz", result)
        assert_bitwise_equal(result.named_state(), state, path)
        assert momentum.get_value() == 0.7
        updates.reset_state(result)
        with pytest.warns(HyperparameterWarning) as record:
            updates.load_state(tmp_path / "old.npz", result, hyperparameters="restore")
        assert [str(w.message) for w in record] == [
            f"load_state: {tmp_path / 'old.npz'} was saved with other hyperparameters, which cannot be "
            "restored: apply_momentum momentum is shared mu in the file, no value recorded, 0.7 (shared mu) "
            "in the updates; the updates keep their own (a number or schedule is fixed in the graph: build "
            "the updates with the file's value, or with a live() one)"
        ]
        assert_bitwise_equal(result.named_state(), state, path)
        assert momentum.get_value() == 0.7
    with pytest.warns(HyperparameterWarning, match=r"sgd learning_rate is 0\.1 in the file, 0\.2 in the upd"):
        updates.load_state(tmp_path / "old.npz", momentum_sgd(0.2, 0.9)[1])


def test_a_live_entry_must_be_a_real_scalar(momentum_checkpoint, tmp_path):
    checkpoint, _ = momentum_checkpoint
    contents = dict(np.load(checkpoint))
    np.savez(tmp_path / "bad.npz", **contents, **{"live/learning_rate": np.zeros(2)})
    np.savez(tmp_path / "text.npz", **contents, **{"live/learning_rate": np.asarray("0.1")})
    params, result = momentum_sgd(updates.live(0.5), 0.9, steps=1)
    before = snapshot(params, result)
    with pytest.raises(
        ValueError,
        match=r"bad\.npz does not match the updates: live 'learning_rate' is not a "
        r"real scalar \(float64, shape \(2,\)\); nothing was loaded$",
    ):
        updates.load_state(tmp_path / "bad.npz", result, hyperparameters="restore")
    with pytest.raises(ValueError, match=r"live 'learning_rate' is not a real scalar \(<U3, shape \(\)\)"):
        updates.load_state(tmp_path / "text.npz", result, hyperparameters="ignore")
    assert_bitwise_equal(snapshot(params, result), before)


# -- unreadable files ------------------------------------------------------------------------------

UNREADABLE = r"^load_state: .* is not a readable checkpoint \("


def test_every_truncation_is_an_error(adam_checkpoint, tmp_path):
    data = Path(adam_checkpoint).read_bytes()
    params, result = trained()
    before = snapshot(params, result)
    cut = tmp_path / "cut.npz"
    for length in sorted({*range(0, len(data), 37), 1, len(data) // 2, len(data) - 1}):
        cut.write_bytes(data[:length])
        with pytest.raises(ValueError, match=UNREADABLE):
            updates.load_state(cut, result, params=True)
    assert_bitwise_equal(snapshot(params, result), before)


def test_a_corrupted_byte_is_an_error_or_harmless(adam_checkpoint, tmp_path):
    """Flip each byte in turn: the load refuses, or (the byte was zip metadata such as a
    timestamp) it loads exactly what was saved; never other numbers."""
    data = Path(adam_checkpoint).read_bytes()
    params, result = trained()
    updates.load_state(adam_checkpoint, result, params=True)
    saved = snapshot(params, result)
    corrupted, refused = tmp_path / "bad.npz", 0
    for position in range(0, len(data), 3):
        corrupted.write_bytes(data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1 :])
        updates.reset_state(result)
        before = snapshot(params, result)
        try:
            updates.load_state(corrupted, result, params=True)
        except ValueError as err:
            refused += 1
            assert "load_state: " in str(err)
            assert_bitwise_equal(snapshot(params, result), before, f"byte {position}")
        else:
            assert_bitwise_equal(snapshot(params, result), saved, f"byte {position}")
    assert refused > len(data) // 3 // 2


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all\n" * 10, None], ids=["empty", "text", "npy"]
)
def test_a_file_of_another_kind_is_an_error(content, tmp_path):
    path = tmp_path / "c.npz"
    if content is None:
        with open(path, "wb") as file:
            np.save(file, np.zeros(3))
    else:
        path.write_bytes(content)
    _, result = trained()
    with pytest.raises(ValueError, match=rf"{UNREADABLE}BadZipFile: File is not a zip file\)$"):
        updates.load_state(path, result)


def test_an_archive_of_other_files_is_an_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match=rf"{UNREADABLE}ValueError: unexpected member 'notes.txt'\)$"):
        updates.load_state(tmp_path / "c.npz", trained()[1])


def test_an_array_longer_than_its_header_is_an_error(adam_checkpoint, tmp_path):
    with zipfile.ZipFile(adam_checkpoint) as source, zipfile.ZipFile(tmp_path / "c.npz", "w") as target:
        for info in source.infolist():
            target.writestr(
                info.filename, source.read(info) + (b"\0" * 8 if "adam.m" in info.filename else b"")
            )
    with pytest.raises(ValueError, match=r"'state/w\.adam\.m\.npy' is longer than its header says\)$"):
        updates.load_state(tmp_path / "c.npz", trained()[1])


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    missing = str(tmp_path / "none.npz")
    with pytest.raises(
        FileNotFoundError, match=rf"^load_state: there is no file at {re.escape(repr(missing))}$"
    ):
        updates.load_state(missing, trained()[1])
    with pytest.raises(FileNotFoundError, match=r"^load_state: there is no file at '.*none\.npz'$"):
        updates.load_state(Path(missing), trained()[1])


# -- atomic saves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_save_keeps_the_previous_checkpoint(error, adam_checkpoint, monkeypatch):
    directory = os.path.dirname(adam_checkpoint)
    original = Path(adam_checkpoint).read_bytes()
    _params, result = trained(steps=5)  # other values than the checkpoint's
    write_array, calls = np.lib.format.write_array, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise error("disk full")
        return write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(error, match="disk full"):
        updates.save_state(adam_checkpoint, result, params=True)
    monkeypatch.undo()
    assert len(calls) == 4
    assert sorted(os.listdir(directory)) == ["adam.npz"], "a temporary file was left behind"
    assert Path(adam_checkpoint).read_bytes() == original
    updates.load_state(adam_checkpoint, result, params=True)
    assert int(result.named_state()["adam.t"]) == 3


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    _params, result = trained()

    def failing(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="no space left"):
        updates.save_state(tmp_path / "c.npz", result)
    assert os.listdir(tmp_path) == []


def test_saving_again_replaces_the_checkpoint_and_keeps_its_mode(adam_checkpoint):
    os.chmod(adam_checkpoint, 0o600)
    _params, result = trained(steps=5)
    updates.save_state(adam_checkpoint, result)
    assert os.stat(adam_checkpoint).st_mode & 0o777 == 0o600
    assert os.listdir(os.path.dirname(adam_checkpoint)) == ["adam.npz"]
    with np.load(adam_checkpoint) as stored:
        assert stored["state/adam.t"] == 5 and "param/w" not in stored


def test_a_directory_is_not_overwritten(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        updates.save_state(tmp_path, trained()[1])
    assert os.listdir(tmp_path) == []


# A process that saves a small state, killed (SIGKILL) halfway through writing its temporary file.
# It compiles nothing: building the updates graph and saving need no compiled function.
KILLED_SAVE_SCRIPT = """
import io, os, signal, sys
import numpy as np
import pytensor
import updates
import updates.state

w = pytensor.shared(np.linspace(-1.0, 1.0, 500), name="w")
adam = updates.adam((w**2).sum(), [w])
write_npz = updates.state._write_npz

def killed_halfway(file, arrays):
    whole = io.BytesIO()
    write_npz(whole, arrays)
    data = whole.getvalue()
    file.write(data[: len(data) // 2])
    file.flush()
    os.fsync(file.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

updates.state._write_npz = killed_halfway
updates.save_state(sys.argv[1], adam, params=True)
"""


def kill_a_save(path):
    """Run KILLED_SAVE_SCRIPT on ``path`` in a new process; its PID, now dead (and reaped)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE_SCRIPT, str(path)], env=env, stderr=subprocess.PIPE, text=True
    ) as child:
        _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr[-4000:]
    return child.pid


def temporary_name(base, pid, token="0123456789ab"):
    """A name of save_state's temporary files (``.<base>.<pid>.<12 hex digits>.tmp``)."""
    return f".{base}.{pid}.{token}.tmp"


def write_files(directory, names):
    """Files of distinct contents; their contents, by name."""
    contents = {name: f"not mine to remove: {name}".encode() for name in names}
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    return contents


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and PIDs checked by os.kill are POSIX")
def test_a_killed_save_leaves_a_temporary_file_that_the_next_save_removes(adam_checkpoint):
    directory = Path(adam_checkpoint).parent
    original = Path(adam_checkpoint).read_bytes()
    dead = kill_a_save(adam_checkpoint)

    left = sorted(set(os.listdir(directory)) - {"adam.npz"})
    assert len(left) == 1 and re.fullmatch(rf"\.adam\.npz\.{dead}\.[0-9a-f]{{12}}\.tmp", left[0]), left
    assert (directory / left[0]).stat().st_size > 0, "the child was killed before it wrote anything"
    assert Path(adam_checkpoint).read_bytes() == original
    _params, result = trained(steps=5)
    updates.load_state(adam_checkpoint, result, params=True)
    assert int(result.named_state()["adam.t"]) == 3

    others = write_files(
        directory,
        [
            temporary_name("adam.npz.1", dead),  # the temporary file of adam.npz.1
            temporary_name("adam.npz.bak", dead),
            temporary_name("other.npz", dead),
            temporary_name("adam.npz", dead)[1:],  # a user's file: no leading dot
            temporary_name("adam.npz", dead) + ".keep",
            temporary_name("adam.npz", dead, "notes"),
            temporary_name("adam.npz", dead, "0123456789AB"),  # upper case: not a token
            "adam.npz.tmp",
        ],
    )
    updates.reset_state(result)
    updates.save_state(adam_checkpoint, result, params=True)
    assert sorted(os.listdir(directory)) == sorted(["adam.npz", *others])
    assert {name: (directory / name).read_bytes() for name in others} == others
    with np.load(adam_checkpoint) as stored:
        assert stored["state/adam.t"] == 0, "not saved again"


def dead_pid():
    """The PID of a process that has ended (and been reaped)."""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        child.wait(timeout=60)
    return child.pid


@pytest.mark.skipif(sys.platform == "win32", reason="PIDs checked by os.kill are POSIX")
def test_only_the_temporary_files_of_a_finished_writer_are_removed(adam_checkpoint, monkeypatch):
    """A dead process's and this process's own leftovers go; a live process's, a save of this
    process still writing, and what is not a regular file stay."""
    directory = Path(adam_checkpoint).parent
    dead, own, live = dead_pid(), os.getpid(), os.getppid()
    stale = write_files(directory, [temporary_name("adam.npz", dead), temporary_name("adam.npz", own)])
    kept = write_files(directory, [temporary_name("adam.npz", live), temporary_name("adam.npz", 0)])
    (directory / temporary_name("adam.npz", dead, "abcdefabcdef")).mkdir()
    (directory / temporary_name("adam.npz", dead, "fedcbafedcba")).symlink_to(directory / "adam.npz")
    special = [temporary_name("adam.npz", dead, t) for t in ("abcdefabcdef", "fedcbafedcba")]

    _params, result = trained(steps=5)
    write_npz, seen = updates.state._write_npz, []

    def saving_again_meanwhile(file, arrays):
        """A second save to the same path, while this one is writing: it must keep our file."""
        if not seen:
            seen.append(sorted(os.listdir(directory)))
            params = make_params(("w", "b"))
            updates.save_state(adam_checkpoint, updates.adam(make_loss(params), params))
        write_npz(file, arrays)

    monkeypatch.setattr(updates.state, "_write_npz", saving_again_meanwhile)
    updates.save_state(adam_checkpoint, result)
    writing = [n for n in seen[0] if n.startswith(f".adam.npz.{own}.") and n not in stale]
    assert len(writing) == 1, seen
    assert sorted(os.listdir(directory)) == sorted(["adam.npz", *kept, *special])
    assert {name: (directory / name).read_bytes() for name in kept} == kept
    with np.load(adam_checkpoint) as stored:
        assert stored["state/adam.t"] == 5, "the outer save, which finished last, is the checkpoint"


# -- reset -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_reset_all_starts_the_optimizer_over(path):
    """After a reset, the steps are those of a fresh optimizer started from the current params."""
    params, result = trained("apply_momentum(adam)", path, steps=4)
    moved = {p.name: p.get_value() for p in params}
    updates.reset_state(result)
    for name, value in result.named_state().items():
        assert value.tobytes() == np.zeros_like(value).tobytes(), name
    assert {p.name: p.get_value().tobytes() for p in params} == {k: v.tobytes() for k, v in moved.items()}

    fresh_params, fresh, fresh_step = build("apply_momentum(adam)", path, names=("w", "b"))
    for p in fresh_params:
        p.set_value(moved[p.name])
    run(fresh_step, 3)
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    run(step, 3)
    assert_bitwise_equal(snapshot(params, result), snapshot(fresh_params, fresh))


@pytest.mark.parametrize("path", PATHS)
def test_reset_some_params(path):
    params, result = trained("apply_momentum(adam)", path, names=("w", "b", "h"))
    before = result.named_state()
    before = {k: np.array(v) for k, v in before.items()}
    w, b, h = params
    updates.reset_state(result, [b, h])
    after = result.named_state()
    for name, value in after.items():
        if name.startswith(("b.", "h.")):
            assert not value.any(), name
            assert before[name].any(), name
        else:
            assert value.tobytes() == before[name].tobytes(), name
    assert after["adam.t"] == 3, "a counter is left alone unless every param is reset"
    updates.reset_state(result, [h, w, b])
    assert all(not value.any() for value in result.named_state().values())


def test_reset_refuses_unknown_params_and_resets_nothing():
    params, result = trained()
    other = pytensor.shared(np.zeros(2), name="other")
    before = snapshot(params, result)
    with pytest.raises(
        ValueError, match=r"^reset_state: params\[1\] \('other'\) is not a param of these upd"
    ):
        updates.reset_state(result, [params[0], other])
    with pytest.raises(ValueError, match=r"^reset_state: params is empty; leave it out to reset all"):
        updates.reset_state(result, [])
    params[1].name = "w"
    with pytest.raises(ValueError, match=r"^reset_state: params\[0\] shares its name 'w' with another"):
        updates.reset_state(result, [params[0]])
    params[1].name = "b"
    assert_bitwise_equal(snapshot(params, result), before)


def test_reset_refuses_state_without_an_initial_value():
    params, result = trained()
    counter = result.state[-1]
    counter.tag.state = dataclasses.replace(counter.tag.state, initial=None)
    before = snapshot(params, result)
    with pytest.raises(ValueError, match=r"^reset_state: state 'adam\.t' has no initial value .*nothing was"):
        updates.reset_state(result)
    assert_bitwise_equal(snapshot(params, result), before)
    updates.reset_state(result, [params[0]])  # the counter is not touched: fine


def test_reset_to_a_nonzero_initial_value():
    _params, result = trained(path="per_parameter")
    result.state[0].tag.state = dataclasses.replace(result.state[0].tag.state, initial=0.5)
    updates.reset_state(result)
    np.testing.assert_array_equal(result.named_state()["w.adam.m"], np.full(3, 0.5))


# -- inspect ---------------------------------------------------------------------------------------


def test_inspect_lists_the_flat_buffers_by_param():
    params, result = trained("apply_momentum(adam)", "fused", names=("w", "b", "h"), steps=3)
    w, b, h = params
    summary = updates.inspect_state(result)
    rows = [(e.name, e.shape, e.dtype, e.param, e.variable.name, e.offset) for e in summary]
    assert rows == [
        ("w.adam.m", (3,), "float64", w, "adam.m[float64]", 0),
        ("b.adam.m", (2, 2), "float64", b, "adam.m[float64]", 3),
        ("w.adam.v", (3,), "float64", w, "adam.v[float64]", 0),
        ("b.adam.v", (2, 2), "float64", b, "adam.v[float64]", 3),
        ("h.adam.m", (1, 3), "float32", h, "adam.m[float32]", 0),
        ("h.adam.v", (1, 3), "float32", h, "adam.v[float32]", 0),
        ("adam.t", (), "int64", None, "adam.t", 0),
        ("w.apply_momentum.velocity", (3,), "float64", w, "apply_momentum.velocity[float64]", 0),
        ("b.apply_momentum.velocity", (2, 2), "float64", b, "apply_momentum.velocity[float64]", 3),
        ("h.apply_momentum.velocity", (1, 3), "float32", h, "apply_momentum.velocity[float32]", 0),
    ]
    named = result.named_state()
    for entry in summary:
        assert entry.value.tobytes() == named[entry.name].tobytes()
    assert summary.steps == {"adam.t": 3}
    assert summary.hyperparameters == {
        "learning_rate": 0.05,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-08,
        "apply_momentum.momentum": 0.8,
    }
    assert summary.scalars == {"adam.t": 3}
    table = str(summary)
    lines = table.splitlines()
    assert lines[0].split() == ["name", "param", "shape", "dtype", "variable", "offset", "value"]
    assert lines[2].split() == ["b.adam.m", "b", "(2,", "2)", "float64", "adam.m[float64]", "3"]
    assert lines[7].split() == ["adam.t", "-", "()", "int64", "adam.t", "0", "3"]
    assert lines[-2] == "steps: adam.t = 3"
    assert lines[-1].startswith("hyperparameters: learning_rate = 0.05, beta1 = 0.9, beta2 = 0.999, ")


def test_inspect_shows_every_scalar():
    """Counters (the steps a guard skipped too), the slots of a 0-d param: in .scalars and the table."""
    w, s = pytensor.shared(np.ones(2), name="w"), pytensor.shared(np.float64(0.5), name="s")
    grads = [pt.vector("gw"), pt.dscalar("gs")]
    safe = updates.apply_if_finite(updates.adam(grads, [w, s], learning_rate=0.1), grads=grads)
    step = pytensor.function(grads, [], updates=safe, mode="FAST_COMPILE")
    step(np.array([1.0, 2.0]), 0.5)
    step(np.array([np.nan, 2.0]), 0.5)  # skipped
    summary = updates.inspect_state(safe)
    # after one applied step of gradient 0.5: m = (1 - 0.9) 0.5, v = (1 - 0.999) 0.5**2
    assert summary.scalars == {
        "s.adam.m": pytest.approx(0.05, rel=1e-12),
        "s.adam.v": pytest.approx(0.00025, rel=1e-12),
        "adam.t": 1,
        "apply_if_finite.skipped": 1,
    }
    assert type(summary.scalars["adam.t"]) is int and type(summary.scalars["s.adam.m"]) is float
    assert summary.steps == {"adam.t": 1}
    rows = {line.split()[0]: line.split() for line in str(summary).splitlines()[1:-2]}
    assert rows["apply_if_finite.skipped"][-2:] == ["0", "1"]  # offset, value
    assert rows["adam.t"][-2:] == ["0", "1"]
    assert rows["s.adam.m"][-2:] == ["2", "0.05"] and rows["s.adam.v"][-2:] == ["2", "0.00025"]
    assert rows["w.adam.m"] == ["w.adam.m", "w", "(2,)", "float64", "adam.m", "0"]  # no value: not 0-d


def test_inspect_per_parameter():
    params, result = trained("adadelta", "per_parameter", names=("w", "b"))
    summary = updates.inspect_state(result)
    assert [(e.name, e.variable.name, e.offset, e.param) for e in summary] == [
        (f"{p.name}.adadelta.{slot}", f"{p.name}.adadelta.{slot}", 0, p)
        for p in params
        for slot in ("accu", "delta_accu")
    ]
    assert summary.steps == {}
    assert str(summary).splitlines()[-2] == "steps: -"


def test_inspect_evaluates_live_hyperparameters():
    params = make_params(("w",))
    learning_rate, beta1 = pytensor.shared(np.float64(0.1)), pt.scalar("beta1")
    result = updates.adam(make_loss(params), params, learning_rate=learning_rate, beta1=beta1)
    assert updates.inspect_state(result).hyperparameters["learning_rate"] == 0.1
    learning_rate.set_value(0.02)
    hyper = updates.inspect_state(result).hyperparameters
    assert hyper["learning_rate"] == 0.02 and hyper["beta1"] is None and hyper["beta2"] == 0.999
    assert "beta1 = (needs inputs)" in str(updates.inspect_state(result))


def test_state_belongs_to_the_param_it_is_named_after():
    """Dotted param names: the longest that prefixes a state name; a counter is nobody's."""
    names = ("layer1", "layer1.W", "adam")
    params = [pytensor.shared(np.ones(k + 1), name=name) for k, name in enumerate(names)]
    result = updates.adam(sum((p**2).sum() for p in params), params)
    owners = {e.name: e.param.name if e.param is not None else None for e in updates.inspect_state(result)}
    assert owners == {
        **{f"{name}.adam.{slot}": name for slot in "mv" for name in names},
        "adam.t": None,
    }


def test_inspect_and_reset_schedules():
    params, result = trained("scheduled", names=("w",), steps=N)
    summary = updates.inspect_state(result)
    assert summary.steps == {"adam.t": N, "apply_momentum.t": N}  # not the plateau's counters
    owners = {e.name: e.param for e in summary}
    assert [name for name, owner in owners.items() if owner is None] == [
        "reduce_on_plateau.value",
        "reduce_on_plateau.best",
        "reduce_on_plateau.num_bad_steps",
        "reduce_on_plateau.cooldown_counter",
        "adam.t",
        "apply_momentum.t",
    ]
    named = result.named_state()
    hyper = summary.hyperparameters
    assert hyper["learning_rate"] == named["reduce_on_plateau.value"] < 0.05, "the plateau never cut"
    assert hyper["beta1"] == 0.9 * 0.5 ** (N / 4)
    assert hyper["apply_momentum.momentum"] == pytest.approx(0.5 + 0.4 * min(N, 6) / 6)

    updates.reset_state(result, params)  # all the params: the schedules start over too
    summary = updates.inspect_state(result)
    assert summary.steps == {"adam.t": 0, "apply_momentum.t": 0}
    assert summary.hyperparameters == {
        "learning_rate": 0.05,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-08,
        "apply_momentum.momentum": 0.5,
    }
    assert result.named_state()["reduce_on_plateau.best"] == np.inf
