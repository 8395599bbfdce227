"""The learning-rate-free rules (updates/parameter_free.py) beyond the registry's properties: their
sums over every param (also of several dtypes), DoG's ``init_step``, the defaults that stand for
others (``weight_decay=None``, DoWG's ``init_estim_sq_dist=None``), and where D-Adaptation keeps
its estimate where optax's becomes NaN."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES

import updates

SHAPES = [(3,), (2, 2)]
EPSILON = {"epsilon": 1e-3}


def _params(dtypes=("float64", "float64"), seed=0):
    rng = np.random.default_rng(seed)
    return [
        pytensor.shared(rng.normal(size=s).astype(d), name=f"p{i}")
        for i, (s, d) in enumerate(zip(SHAPES, dtypes))
    ]


def _run(rule, params, stream, **hyper):
    grads = [pt.tensor(f"g{i}", dtype=p.dtype, shape=(None,) * p.ndim) for i, p in enumerate(params)]
    result = rule(grads, params, **hyper)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for g in stream:
        step(*[x.astype(p.dtype) for x, p in zip(g, params)])
    return result


def _stream(steps=15, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=s) + 0.5 for s in SHAPES] for _ in range(steps)]


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("dog", {"init_step": ("distance", 0.1)}),
        ("dog", {"init_step": ("heuristic", 1e-3)}),
        ("dowg", {}),
        ("dadapt_adamw", {"d0": 1e-2}),
    ],
)
def test_the_sums_cover_params_of_every_dtype(name, hyper):
    """With a float32 and a float64 param, each dtype's carried scalars come from the sums over
    both params: the trajectory is the float64 one, to what float32 keeps of it over 15 steps."""
    stream = _stream()
    mixed = _params(("float64", "float32"))
    result = _run(getattr(updates, name), mixed, stream, **hyper)
    reference = REFERENCES[name]([p.get_value().astype("float64") for p in _params()], **hyper)
    for g in stream:
        expected = reference(g)
    for p, want in zip(mixed, expected):
        np.testing.assert_allclose(p.get_value(), want, rtol=1e-3, atol=1e-5)
    assert mixed[1].get_value().dtype == np.float32
    carried = [n for n in result.named_state() if n.endswith("[float32]")]
    assert carried and all(n.startswith(f"{name}.") for n in carried)


def test_dog_heuristic_takes_the_norm_of_the_params_at_the_first_step():
    """r_eps = a (1 + |x0|) with x0 the params the first step sees (optax: those given to init)."""
    params = _params()
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=(None,) * p.ndim) for i, p in enumerate(params)]
    result = updates.dog(grads, params, init_step=("heuristic", 1e-2))
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for p in params:  # moved after the graph was built: the first step reads these
        p.set_value(p.get_value() * 3)
    x0 = [p.get_value() for p in params]
    norm = np.sqrt(sum(np.sum(x**2) for x in x0))
    step(*[np.ones(s) for s in SHAPES])
    named = result.named_state()
    r_epsilon = 1e-2 * (1 + norm)
    np.testing.assert_allclose(named["dog.max_dist"], r_epsilon, rtol=1e-14)
    for i, (p, x) in enumerate(zip(params, x0)):
        np.testing.assert_array_equal(named[f"p{i}.dog.x0"], x)
        np.testing.assert_allclose(p.get_value(), x - r_epsilon / np.sqrt(7 + 1e-8), rtol=1e-14)


def test_dog_learning_rate_init_step_is_the_first_step_size():
    params = _params()
    before = [p.get_value() for p in params]
    ones = [[np.ones(s) for s in SHAPES]]
    result = _run(updates.dog, params, ones, learning_rate=0.5, init_step=("learning_rate", 0.2))
    for p, x in zip(params, before):
        np.testing.assert_allclose(p.get_value(), x - 0.5 * 0.2)
    assert result.named_state()["dog.max_dist"] == 0  # the distance before the first step


@pytest.mark.parametrize(
    ("init_step", "error", "message"),
    [
        (("distances", 0.1), ValueError, r"^dog: init_step's kind must be one of 'distance', 'learning_"),
        (0.1, TypeError, r"^dog: init_step must be a pair \(kind, value\), .* got 0.1"),
        (("distance",), TypeError, r"^dog: init_step must be a pair"),
        (("distance", 0.0), ValueError, r"^dog: init_step must be > 0, got 0.0"),
        (("learning_rate", -1.0), ValueError, r"^dog: init_step must be >= 0, got -1.0"),
    ],
)
def test_dog_refuses_a_bad_init_step(init_step, error, message):
    with pytest.raises(error, match=message):
        updates.dog(init_step=init_step)
    with pytest.raises(error, match=message):
        updates.dog([pt.vector()], [pytensor.shared(np.ones(2))], init_step=init_step)


@pytest.mark.parametrize(
    ("name", "given", "meant"),
    [
        ("dog", {"weight_decay": None}, {"weight_decay": 0.0}),
        ("dowg", {"weight_decay": None}, {"weight_decay": 0.0}),
        ("dowg", {"init_estim_sq_dist": None, "epsilon": 1e-3}, {"init_estim_sq_dist": 1e-3, **EPSILON}),
    ],
)
def test_none_stands_for_its_documented_value(name, given, meant):
    stream = _stream(5)
    a, b = _params(), _params()
    _run(getattr(updates, name), a, stream, **given)
    _run(getattr(updates, name), b, stream, **meant)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.get_value(), y.get_value())


def test_dadapt_adamw_keeps_d_where_optax_would_divide_zero_by_zero():
    """A learning rate of 0 leaves s at 0: optax's d becomes 0/0 = NaN (and its params NaN a step
    later); here d stays at d0, the params stay, and a learning rate raised later moves them."""
    params = _params()
    before = [p.get_value() for p in params]
    learning_rate = pytensor.shared(0.0)
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=(None,) * p.ndim) for i, p in enumerate(params)]
    result = updates.dadapt_adamw(grads, params, learning_rate=learning_rate, d0=1e-2)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for _ in range(2):
        step(*[np.ones(s) for s in SHAPES])
    assert result.named_state()["dadapt_adamw.d"] == 1e-2
    for p, x in zip(params, before):
        np.testing.assert_array_equal(p.get_value(), x)
    learning_rate.set_value(1.0)
    step(*[np.ones(s) for s in SHAPES])
    assert all((p.get_value() < x).all() for p, x in zip(params, before))

    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        transformation = optax.contrib.dadapt_adamw(0.0, estim_lr0=1e-2)
        theirs = [jax.numpy.asarray(x) for x in before]
        state = transformation.init(theirs)
        _, state = transformation.update([jax.numpy.ones(s) for s in SHAPES], state, theirs)
        assert np.isnan(state.estim_lr)


def test_cocob_sets_each_param_from_its_initial_value_and_bet():
    """One step from the initial params with gradient g: theta = -lr g, L = max(eps, |lr g|),
    G = |lr g|, reward 0, so p = x0 - lr g L / (L max(G + L, alpha L))."""
    params = _params()
    before = [p.get_value() for p in params]
    g = [np.full(s, 2.0) for s in SHAPES]
    result = _run(updates.cocob, params, [g], learning_rate=0.5, alpha=3.0)
    for p, x in zip(params, before):
        np.testing.assert_allclose(p.get_value(), x - 1.0 / max(1.0 + 1.0, 3.0), rtol=1e-14)
    named = result.named_state()
    np.testing.assert_array_equal(named["p0.cocob.x0"], before[0])
    np.testing.assert_array_equal(named["p0.cocob.scale"], np.ones(3))
