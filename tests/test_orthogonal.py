"""muon: the refusal of params that are not matrices, the fallback rule, the structural options."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES

import updates


def _params(dtype="float64"):
    rng = np.random.default_rng(0)
    shapes = {"W": (4, 3), "b": (3,), "V": (2, 5), "s": ()}
    return [pytensor.shared(rng.normal(size=s).astype(dtype), name=n) for n, s in shapes.items()]


def _grads(params):
    return [pt.tensor(dtype=p.dtype, shape=(None,) * p.ndim, name=f"g_{p.name}") for p in params]


def test_params_that_are_not_matrices_are_refused_by_name_and_shape():
    params = _params()
    with pytest.raises(
        ValueError,
        match=r"^muon: params\[1\] \('b'\) has shape \(3,\); muon orthogonalizes "
        r"matrices \(2-D params\) only, .*give fallback=",
    ):
        updates.muon(_grads(params), params)
    loss = sum((p**2).sum() for p in params)
    with pytest.raises(ValueError, match=r"params\[1\] \('b'\) has shape \(3,\)"):
        updates.muon(loss, params, learning_rate=0.1)


def test_the_fallback_takes_the_other_params_and_keeps_their_order():
    params = _params()
    result = updates.muon(
        _grads(params), params, learning_rate=0.02, fallback=updates.adam(learning_rate=0.01)
    )
    assert list(result.params) == params == list(result)[:4]
    buffers = ["W.muon.momentum_buffer", "V.muon.momentum_buffer"]
    assert list(result.named_state()) == [*buffers, "b.adam.m", "s.adam.m", "b.adam.v", "s.adam.v", "adam.t"]
    assert set(result.hyperparameters) >= {"learning_rate", "momentum", "fallback.learning_rate"}
    assert [c.get("rule") for c in result.config] == ["muon", "adam"]


@pytest.mark.parametrize("given", ["grads", "loss"])
def test_the_fallback_steps_as_the_rule_alone(given):
    """muon with a fallback = muon on the matrices and the fallback on the rest, each alone."""
    params, alone = _params(), _params()
    values = [p.get_value() for p in params]
    targets = [np.full(v.shape, 0.5) for v in values]
    if given == "loss":
        arg = sum(((p - t) ** 2).sum() for p, t in zip(params, targets))
        step = pytensor.function(
            [], [], updates=updates.muon(arg, params, 0.05, fallback=updates.adam(learning_rate=0.1))
        )
    else:
        gs = _grads(params)
        f = pytensor.function(
            gs, [], updates=updates.muon(gs, params, 0.05, fallback=updates.adam(learning_rate=0.1))
        )
        step = lambda: f(*[2 * (p.get_value() - t) for p, t in zip(params, targets)])  # noqa: E731
    muon = REFERENCES["muon"]([values[0], values[2]], learning_rate=0.05)
    adam = REFERENCES["adam"]([values[1], values[3]], learning_rate=0.1)
    for _ in range(5):
        step()
        current = [a.get_value() for a in alone]
        grads = [2 * (v - t) for v, t in zip(current, targets)]
        (W, V), (b, s) = muon([grads[0], grads[2]]), adam([grads[1], grads[3]])
        for a, v in zip(alone, (W, b, V, s)):
            a.set_value(v)
    for p, a in zip(params, alone):
        np.testing.assert_allclose(p.get_value(), a.get_value(), rtol=1e-12, atol=1e-14)


def test_float32_is_kept_and_state_is_checkpointed(tmp_path):
    params = _params("float32")
    gs = _grads(params)
    result = updates.muon(gs, params, 0.02, fallback=updates.sgd(learning_rate=0.1))
    for variable, value in result.items():
        assert value.type == variable.type, variable.name
    step = pytensor.function(gs, [], updates=result)
    step(*[np.ones(p.get_value().shape, "float32") for p in params])
    path = tmp_path / "muon.npz"
    updates.save_state(path, result)
    saved = {k: v.copy() for k, v in result.named_state().items()}
    step(*[np.ones(p.get_value().shape, "float32") for p in params])
    updates.load_state(path, result)
    for name, value in result.named_state().items():
        np.testing.assert_array_equal(value, saved[name])
        assert value.dtype == np.float32


def test_clear_nan_reaches_the_fallback():
    params = _params()
    gs = _grads(params)
    f = pytensor.function(
        gs,
        [],
        updates=updates.muon(gs, params, 0.02, fallback=updates.sgd(learning_rate=0.1), clear_nan=True),
    )
    before = [p.get_value() for p in params]
    f(*[np.full(p.get_value().shape, np.nan) for p in params])
    for p in params:
        assert np.isfinite(p.get_value()).all()
    np.testing.assert_array_equal(params[1].get_value(), before[1])  # sgd with a zero gradient


def test_partial_application_carries_the_fallback():
    part = updates.muon(learning_rate=0.02, fallback=updates.adam(learning_rate=0.01))
    params = _params()
    result = part(_grads(params), params)
    assert "b.adam.m" in result.named_state()


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        (
            {"fallback": "adam"},
            TypeError,
            r"^muon: fallback must be a rule awaiting \(loss_or_grads, params\)",
        ),
        ({"nesterov": 1}, TypeError, r"^muon: nesterov must be True or False, got 1"),
        ({"ns_coefficients": (1.0, 2.0)}, ValueError, r"^muon: ns_coefficients must be a tuple of 3 numbers"),
        ({"ns_steps": 100}, ValueError, r"^muon: ns_steps must be in \[0, 100\), got 100"),
        ({"ns_steps": 2.0}, TypeError, r"^muon: ns_steps must be an integer"),
        (
            {"adjust_lr_fn": "spectral"},
            ValueError,
            r"^muon: adjust_lr_fn must be None, 'original' or 'match_rms_adamw'",
        ),
        ({"momentum": 1.0}, ValueError, r"^muon: momentum must be in \[0, 1\), got 1.0"),
        ({"form": "jax"}, ValueError, r"^muon: form must be 'torch' or 'optax', got 'jax'"),
    ],
)
def test_options_are_checked(keywords, error, message):
    with pytest.raises(error, match=message):
        updates.muon(**keywords)
    params = _params()[:1]
    with pytest.raises(error, match=message):
        updates.muon(_grads(params), params, **keywords)


def test_newton_schulz_brings_singular_values_near_one():
    rng = np.random.default_rng(1)
    for shape in [(6, 3), (3, 6)]:
        W = pytensor.shared(np.zeros(shape), name="W")
        g = pt.matrix("g", dtype="float64")
        f = pytensor.function([g], [], updates=updates.muon([g], [W], 1.0, weight_decay=0.0, momentum=0.0))
        f(rng.normal(size=shape))
        singular = np.linalg.svd(-W.get_value() / np.sqrt(max(1, shape[0] / shape[1])), compute_uv=False)
        assert ((singular > 0.6) & (singular < 1.3)).all(), singular


def test_optax_form_gives_the_other_params_to_its_adam_or_to_the_fallback():
    params = _params()
    result = updates.muon(_grads(params), params, learning_rate=0.02, form="optax")
    buffers = ["W.muon.momentum_buffer", "V.muon.momentum_buffer", "muon.t"]
    assert list(result.named_state()) == [*buffers, "b.adam.m", "s.adam.m", "b.adam.v", "s.adam.v", "adam.t"]
    assert result.config[0]["form"] == "optax"
    assert {"fallback.beta1", "fallback.beta2", "fallback.epsilon"} <= set(result.hyperparameters)
    given = updates.muon(_grads(params), params, form="optax", fallback=updates.momentum(learning_rate=0.1))
    assert list(given.named_state())[3:] == ["b.momentum.velocity", "s.momentum.velocity"]


def test_optax_form_scales_by_the_fans_of_a_jax_weight():
    """One step from zero momentum without Nesterov: the step is -lr r NS(g), r = sqrt(max(1,
    B / A)) for optax's form (a JAX weight is (fan_in, fan_out)), sqrt(max(1, A / B)) for torch's."""
    g = np.random.default_rng(2).normal(size=(2, 6))
    steps = {}
    for form in ("torch", "optax"):
        W = pytensor.shared(np.zeros((2, 6)), name="W")
        x = pt.matrix("g", dtype="float64")
        rule = updates.muon([x], [W], 1.0, weight_decay=0.0, momentum=0.5, nesterov=False, form=form)
        pytensor.function([x], [], updates=rule)(g)
        steps[form] = -W.get_value()
    np.testing.assert_allclose(steps["optax"], np.sqrt(3.0) * steps["torch"], rtol=1e-6)
