"""apply_momentum and apply_nesterov_momentum: equal to the momentum rules, wrap params only,
never mutate their input."""

import contextlib
from collections import OrderedDict

import numpy as np
import pytensor
import pytest
from reference import REFERENCES

import updates

WRAPPERS = [
    (updates.apply_momentum, updates.momentum),
    (updates.apply_nesterov_momentum, updates.nesterov_momentum),
]
WRAPPER_IDS = ["apply_momentum", "apply_nesterov_momentum"]
INITIAL = {"w": np.array([1.0, -2.0, 0.5]), "b": np.array([[0.3, -0.7], [1.1, 0.2]])}
CURVATURE = {"w": np.array([0.5, 2.0, 4.0]), "b": np.array([[1.0, 3.0], [0.2, 6.0]])}


def make_params(dtype="float64"):
    return [pytensor.shared(value.astype(dtype), name=name) for name, value in INITIAL.items()]


def loss(params):
    """sum(c * p**2) / 2, whose gradient c * p is easy to write in NumPy."""
    return sum((CURVATURE[p.name].astype(p.dtype) * p**2).sum() for p in params) / 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("wrapper", "rule"), WRAPPERS, ids=WRAPPER_IDS)
def test_wrapper_of_sgd_equals_rule(wrapper, rule, dtype):
    """50 closed-loop steps: bit-identical to the rule's per-parameter graph (the same
    equations), and close to the NumPy reference."""
    hyper = {"learning_rate": 0.05, "momentum": 0.8}
    wrapped, direct = make_params(dtype), make_params(dtype)
    with updates.per_parameter():
        direct_updates = rule(loss(direct), direct, **hyper)
        sgd_updates = updates.sgd(loss(wrapped), wrapped, hyper["learning_rate"])
        wrapped_updates = wrapper(sgd_updates, wrapped, hyper["momentum"])
    step_wrapped = pytensor.function([], [], updates=wrapped_updates, mode="FAST_COMPILE")
    step_direct = pytensor.function([], [], updates=direct_updates, mode="FAST_COMPILE")
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-14}
    reference = REFERENCES[rule.__name__]([p.get_value() for p in direct], **hyper)
    expected = [p.get_value() for p in direct]
    for _ in range(50):
        step_wrapped()
        step_direct()
        grads = [CURVATURE[p.name].astype(dtype) * value for p, value in zip(direct, expected)]
        expected = reference(grads)
        for a, b, c in zip(wrapped, direct, expected):
            np.testing.assert_array_equal(a.get_value(), b.get_value())
            np.testing.assert_allclose(b.get_value(), c, **tol)
    assert not np.allclose(expected[0], INITIAL["w"])


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
def test_updates_params_only(wrapper, _):
    """On an Updates (here Adam's), params=None wraps the params and leaves the state alone."""
    params = make_params()
    adam = updates.adam(loss(params), params)
    result = wrapper(adam)
    name = wrapper.__name__
    assert isinstance(result, updates.Updates)
    assert result.params == adam.params
    keys = list(result)
    assert keys[: len(adam)] == list(adam)
    assert [v.name for v in keys[len(adam) :]] == [f"{name}.velocity"]  # one flat buffer
    assert list(result.named_state())[-2:] == [f"w.{name}.velocity", f"b.{name}.velocity"]
    for key in adam.state:
        assert result[key] is adam[key]
    for key in adam.params:
        assert result[key] is not adam[key]


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
def test_plain_dict_every_key(wrapper, _):
    """On a plain OrderedDict, params=None wraps every key, as Lasagne does (its state too)."""
    params = make_params()
    plain = OrderedDict(updates.adagrad(loss(params), params))
    result = wrapper(plain)
    name = wrapper.__name__
    assert [k.name for k in result] == [k.name for k in plain] + [f"{name}.velocity"]
    assert list(result.named_state()) == [f"{k.name}.{name}.velocity" for k in plain]
    for key in plain:
        assert result[key] is not plain[key]


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
@pytest.mark.parametrize("kind", ["Updates", "OrderedDict"])
@pytest.mark.parametrize("explicit_params", [True, False])
def test_input_not_mutated(wrapper, _, kind, explicit_params):
    params = make_params()
    given = updates.rmsprop(loss(params), params)
    if kind == "OrderedDict":
        given = OrderedDict(given)
    before = list(given.items())
    params_before = getattr(given, "params", None)
    result = wrapper(given, params if explicit_params else None)
    assert result is not given
    assert len(given) == len(before)
    assert all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(given.items(), before))
    assert getattr(given, "params", None) == params_before


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
def test_param_not_in_updates(wrapper, _):
    w, b = make_params()
    with pytest.raises(
        ValueError, match=rf"^{wrapper.__name__}: params\[1\] \('b'\) has no entry in updates"
    ):
        wrapper(updates.sgd(loss([w]), [w]), [w, b])


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
@pytest.mark.parametrize("mu", [1.0, -0.1, 1.5])
def test_momentum_out_of_range(wrapper, _, mu):
    params = make_params()
    with pytest.raises(ValueError, match=rf"^{wrapper.__name__}: momentum must be in \[0, 1\), got {mu}"):
        wrapper(updates.sgd(loss(params), params), params, momentum=mu)


@pytest.mark.parametrize(("wrapper", "_"), WRAPPERS, ids=WRAPPER_IDS)
def test_wrapper_multi_tensor_path_equals_per_parameter_path(wrapper, _):
    """One node per dtype for the velocities, the same trajectory and state as per parameter."""
    runs = []
    for context in (contextlib.nullcontext, updates.per_parameter):
        params = make_params("float64")
        with context():
            wrapped = wrapper(updates.adam(loss(params), params, learning_rate=0.05), momentum=0.8)
        step = pytensor.function([], [], updates=wrapped, mode="FAST_COMPILE")
        for _ in range(40):
            step()
        runs.append(([p.get_value() for p in params], wrapped.named_state()))
    (fused, fused_state), (reference, reference_state) = runs
    for a, b in zip(fused, reference):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert fused_state.keys() == reference_state.keys()
    for name, value in fused_state.items():
        np.testing.assert_allclose(value, reference_state[name], rtol=1e-13, atol=1e-15, err_msg=name)
