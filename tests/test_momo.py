"""MoMo and MoMo-Adam: the loss value inside the step; trajectories against the NumPy references
(tests/reference.py), the dtype kept, the state named, the loss required. The live comparison
with optax is in test_optax.py."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import reference

import updates

SHAPES = [(3, 4), (5,), (), (1, 3)]
CASES = {
    "momo": (updates.momo, reference.momo, dict(learning_rate=0.5, beta=0.8, weight_decay=0.1)),
    "momo defaults": (updates.momo, reference.momo, dict()),
    "momo adapt": (
        updates.momo,
        reference.momo,
        dict(learning_rate=0.5, lower_bound=-2.0, weight_decay=0.05, adapt_lower_bound=True),
    ),
    "momo_adam": (
        updates.momo_adam,
        reference.momo_adam,
        dict(learning_rate=0.1, beta1=0.8, beta2=0.95, epsilon=1e-6, lower_bound=-1.0, weight_decay=0.1),
    ),
    "momo_adam defaults": (updates.momo_adam, reference.momo_adam, dict()),
    "momo_adam adapt": (
        updates.momo_adam,
        reference.momo_adam,
        dict(learning_rate=0.1, lower_bound=-2.0, adapt_lower_bound=True),
    ),
}


def problem(dtype, seed=4):
    """Params (one broadcastable), data inputs and a loss 0.05 + sum w (p - x)**2 + 0.1 p**4."""
    rng = np.random.default_rng(seed)
    params = [
        pytensor.shared(
            rng.normal(size=s).astype(dtype), name=f"p{i}", shape=tuple(1 if n == 1 else None for n in s)
        )
        for i, s in enumerate(SHAPES)
    ]
    xs = [pt.tensor(f"x{i}", dtype=dtype, shape=p.type.shape) for i, p in enumerate(params)]
    loss = 0.05 + sum((i + 1) * pt.sum((p - x) ** 2 + 0.1 * p**4) for i, (p, x) in enumerate(zip(params, xs)))
    return rng, params, xs, loss


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CASES)
def test_matches_the_reference(name, dtype):
    rule, make_reference, hyper = CASES[name]
    rng, params, xs, loss = problem(dtype)
    result = rule(loss, params, **hyper)
    assert all(result[p].type == p.type for p in params)
    f = pytensor.function(xs, [loss, *pytensor.grad(loss, params)], updates=result, mode="FAST_COMPILE")
    expected = make_reference([p.get_value() for p in params], **hyper)
    tol = dict(rtol=2e-4, atol=1e-6) if dtype == "float32" else dict(rtol=1e-10, atol=1e-13)
    start = [p.get_value() for p in params]
    for k in range(30):
        data = [rng.normal(size=p.get_value().shape).astype(dtype) for p in params]
        value, *grads = f(*data)
        want = expected(grads, value)
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.get_value(), w, **tol, err_msg=f"step {k + 1}")
            p.set_value(w)  # float32: keep both on one path
    state = result.named_state()
    prefix = rule.__name__
    for scalar in ("barf", "gamma", "lb"):
        np.testing.assert_allclose(state[f"{prefix}.{scalar}"], expected.scalars[scalar], **tol)
    np.testing.assert_allclose(state[f"p0.{prefix}.m"], expected.state[0]["m"], **tol)
    assert not np.allclose(params[1].get_value(), start[1]), "nothing moved"


@pytest.mark.parametrize("adapt", [False, True])
@pytest.mark.parametrize("rule", [updates.momo, updates.momo_adam], ids=lambda r: r.__name__)
def test_state_is_named_and_typed(rule, adapt):
    """float32 params keep float32 state (also under floatX=float64); the carried scalars, one
    per dtype, are named after the rule."""
    with pytensor.config.change_flags(floatX="float64"):
        w = pytensor.shared(np.ones(3, dtype="float32"), name="w")
        b = pytensor.shared(np.ones((), dtype="float64"), name="b")
        result = rule(pt.sum(w**2) + b**2, [w, b], adapt_lower_bound=adapt)
    name = rule.__name__
    slots = ["m", "v"] if name == "momo_adam" else ["m"]
    named = result.named_state()
    expected = [f"{p}.{name}.{s}" for p in ("w", "b") for s in slots] + [f"{name}.t"]
    expected += [f"{name}.{c}[{d}]" for c in ("barf", "gamma", "lb") for d in ("float32", "float64")]
    assert sorted(named) == sorted(expected)
    for variable, value in result.items():
        assert value.type == variable.type, variable.name
    assert named[f"w.{name}.m"].dtype == np.float32 and named[f"{name}.barf[float32]"].dtype == np.float32
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    step()
    assert w.get_value().dtype == np.float32


@pytest.mark.parametrize("rule", [updates.momo, updates.momo_adam], ids=lambda r: r.__name__)
def test_needs_the_loss_and_checks_its_arguments(rule):
    name = rule.__name__
    w = pytensor.shared(np.ones(3), name="w")
    with pytest.raises(TypeError, match=rf"^{name}: needs the scalar loss .* got a list of gradients"):
        rule([pt.vector("g")], [w])
    with pytest.raises(TypeError, match=rf"^{name}: needs the scalar loss .* got a list of gradients"):
        rule(weight_decay=0.1)([pt.vector("g")], [w])
    with pytest.raises(TypeError, match=rf"^{name}: adapt_lower_bound must be True or False, got 1"):
        rule(adapt_lower_bound=1)
    with pytest.raises(ValueError, match=rf"^{name}: weight_decay must be >= 0, got -1"):
        rule(weight_decay=-1)
    with pytest.raises(ValueError, match=rf"^{name}: learning_rate must be >= 0, got -0.1"):
        rule(pt.sum(w**2), [w], learning_rate=-0.1)


@pytest.mark.parametrize("rule", [updates.momo, updates.momo_adam], ids=lambda r: r.__name__)
def test_partial_application_gives_the_same_step(rule):
    """Bound hyperparameters await (loss, params), and build the same step as a direct call."""
    hyper = dict(learning_rate=0.3, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True)
    values = []
    for build in (lambda loss, ps: rule(**hyper)(loss, ps), lambda loss, ps: rule(loss, ps, **hyper)):
        w = pytensor.shared(np.array([1.0, -2.0, 0.5]), name="w")
        step = pytensor.function([], [], updates=build(pt.sum(w**2 + 0.1 * w**4), [w]), mode="FAST_COMPILE")
        for _ in range(5):
            step()
        values.append(w.get_value())
    np.testing.assert_array_equal(*values)
