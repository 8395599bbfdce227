"""dpsgd and differentially_private_aggregate: per-example clipping, noise and momentum, matched
live to optax.contrib (without noise), to the NumPy reference (from Abadi et al.), and the noise
checked by its statistics and its seed.

dpsgd takes per-example losses or gradients, which the shared tests over the registry (scalar
losses, gradients of the params' shapes) cannot give it: the properties they check for every rule
(types kept, state named, clear_nan, partial application, range errors) are checked here.
"""

from __future__ import annotations

import functools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES

import updates

STEPS = 50
SHAPES = [(3, 4), (5,), ()]
BATCH = 4
EXACT = dict(rtol=1e-10, atol=1e-300)


def per_example_stream(seed: int, shapes=SHAPES, steps=STEPS, batch=BATCH) -> list[list[np.ndarray]]:
    """Per-example gradients whose global norms straddle 1: some examples clipped, some not."""
    rng = np.random.default_rng(seed)
    scales = np.array([0.05, 0.2, 1.0, 3.0])[:batch].reshape(batch, 1)
    stream = []
    for _ in range(steps):
        grads = [rng.normal(size=(batch, *s)) for s in shapes]
        stream.append([g * scales.reshape((batch,) + (1,) * len(s)) for g, s in zip(grads, shapes)])
    return stream


def per_example_inputs(shapes=SHAPES, dtype="float64"):
    return [pt.tensor(f"g{i}", dtype=dtype, shape=(None, *s)) for i, s in enumerate(shapes)]


def make_params(shapes=SHAPES, dtype="float64", seed=1):
    rng = np.random.default_rng(seed)
    return [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(shapes)]


# -- live against optax ----------------------------------------------------------------------------

CONFIGS = {
    "sgd": dict(learning_rate=0.1, l2_norm_clip=1.0),
    "momentum": dict(learning_rate=0.05, l2_norm_clip=0.7, momentum=0.9),
    "nesterov": dict(learning_rate=0.05, l2_norm_clip=1.5, momentum=0.8, nesterov=True),
    "no clipping": dict(learning_rate=0.1, l2_norm_clip=1e6, momentum=0.5),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_dpsgd_matches_optax_without_noise_in_params_and_trace(name):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    config = CONFIGS[name]
    params = make_params()
    start = [p.get_value().copy() for p in params]
    grads = per_example_inputs()
    result = updates.dpsgd(grads, params, noise_multiplier=0.0, seed=0, **config)
    step = pytensor.function(grads, [], updates=result)
    stream = per_example_stream(2)
    with jax.enable_x64(True):
        transformation = optax.contrib.dpsgd(noise_multiplier=0.0, seed=0, **config)
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            for i, p in enumerate(params):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), theirs[i], **EXACT, err_msg=message)
                if "momentum" in config:
                    trace = state[1].trace[i]
                    np.testing.assert_allclose(ours[f"p{i}.dpsgd.trace"], trace, **EXACT, err_msg=message)
    if "momentum" not in config:
        assert result.state == [] and result.named_state() == {}
    assert not np.allclose(params[0].get_value(), start[0]), "trajectory did not move"


def test_differentially_private_aggregate_matches_optax_without_noise():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    grads = per_example_inputs()
    mean = updates.differentially_private_aggregate(grads, l2_norm_clip=0.8, noise_multiplier=0.0)
    f = pytensor.function(grads, list(mean))
    transformation = optax.contrib.differentially_private_aggregate(0.8, 0.0, key=0)
    with jax.enable_x64(True):
        for g in per_example_stream(3, steps=5):
            state = transformation.init(None)
            theirs, _ = transformation.update([jax.numpy.asarray(x) for x in g], state)
            for ours, want in zip(f(*g), theirs):
                np.testing.assert_allclose(ours, want, **EXACT)


# -- the reference, both dtypes, and the per-example losses -----------------------------------------

TOLERANCE = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=2e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CONFIGS)
def test_dpsgd_matches_the_reference(name, dtype):
    config = CONFIGS[name]
    with pytensor.config.change_flags(floatX="float64"):
        params = make_params(dtype=dtype)
        reference = REFERENCES["dpsgd"]([p.get_value() for p in params], noise_multiplier=0.0, **config)
        grads = per_example_inputs(dtype=dtype)
        result = updates.dpsgd(grads, params, noise_multiplier=0.0, **config)
        for variable, value in result.items():
            assert value.type == variable.type, variable.name
        step = pytensor.function(grads, [], updates=result)
    for k, g in enumerate(per_example_stream(4, steps=30)):
        g = [x.astype(dtype) for x in g]
        expected = reference(g)
        step(*g)
        for p, want in zip(params, expected):
            assert p.get_value().dtype == np.dtype(dtype)
            np.testing.assert_allclose(p.get_value(), want, **TOLERANCE[dtype], err_msg=f"step {k + 1}")
            p.set_value(want)


def test_per_example_losses_give_the_per_example_gradients():
    """A vector of per-example losses: the gradients of each example, computed in the step."""
    rng = np.random.default_rng(5)
    W = pytensor.shared(rng.normal(size=(3, 2)), name="W")
    b = pytensor.shared(rng.normal(size=2), name="b")
    x, y = pt.matrix("x"), pt.matrix("y")
    losses = pt.sum((x @ W + b - y) ** 2, axis=1)
    config = dict(learning_rate=0.05, l2_norm_clip=1.0, noise_multiplier=0.0, momentum=0.9, nesterov=True)
    result = updates.dpsgd(losses, [W, b], **config)
    step = pytensor.function([x, y], losses.mean(), updates=result)
    reference = REFERENCES["dpsgd"]([W.get_value(), b.get_value()], **config)
    for k in range(STEPS):
        xs, ys = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
        r = xs @ W.get_value() + b.get_value() - ys
        expected = reference([2 * xs[:, :, None] * r[:, None, :], 2 * r])
        step(xs, ys)
        for p, want in zip([W, b], expected):
            np.testing.assert_allclose(p.get_value(), want, rtol=1e-10, atol=1e-13, err_msg=f"step {k + 1}")
    assert list(result.named_state()) == ["W.dpsgd.trace", "b.dpsgd.trace"]


# -- the noise --------------------------------------------------------------------------------------


def _noise_of(seed, sigma=1.5, clip=0.4, batch=8, size=20_000, steps=2):
    """The steps of SGD (learning rate 1) on zero gradients: -sigma C z / B, per step."""
    params = [pytensor.shared(np.zeros(size), name="w"), pytensor.shared(np.zeros(3), name="v")]
    grads = per_example_inputs([(size,), (3,)])
    config = dict(learning_rate=1.0, l2_norm_clip=clip, noise_multiplier=sigma, seed=seed)
    result = updates.dpsgd(grads, params, **config)
    step = pytensor.function(grads, [], updates=result)
    draws = []
    for _ in range(steps):
        before = [p.get_value().copy() for p in params]
        step(np.zeros((batch, size)), np.zeros((batch, 3)))
        draws.append([p.get_value() - b for p, b in zip(params, before)])
    return draws


def test_noise_has_mean_zero_and_std_sigma_clip_over_batch():
    sigma, clip, batch, size = 1.5, 0.4, 8, 20_000
    draws = _noise_of(0, sigma, clip, batch, size)
    std = sigma * clip / batch
    for first, second in draws:
        assert abs(first.mean()) < 5 * std / np.sqrt(size)  # 5 standard errors
        assert abs(first.std() / std - 1) < 5 / np.sqrt(2 * size)
        assert not np.all(second == 0)
    assert abs(np.corrcoef(draws[0][0], draws[1][0])[0, 1]) < 5 / np.sqrt(size), "steps draw anew"


def test_same_seed_same_draws():
    first, again, other = _noise_of(7), _noise_of(7), _noise_of(8)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert not np.allclose(first[0][0], other[0][0])
    assert not np.allclose(first[0][0], first[1][0]), "the generator advances"


def test_noise_is_added_after_clipping_and_scaled_by_the_batch():
    """A single example, far above the clip, with noise: the step is (C g/|g| + sigma C z) / 1."""
    w = pytensor.shared(np.zeros(10_000), name="w")
    (g,) = per_example_inputs([(10_000,)])
    config = dict(learning_rate=1.0, l2_norm_clip=2.0, noise_multiplier=0.5, seed=1)
    step = pytensor.function([g], [], updates=updates.dpsgd([g], [w], **config))
    big = np.full((1, 10_000), 100.0)
    step(big)
    noise = -w.get_value() - 2.0 / np.sqrt(10_000)
    assert abs(noise.mean()) < 5 / 100 and abs(noise.std() - 1.0) < 0.05


# -- the cross-cutting properties of a rule --------------------------------------------------------


def test_partial_application_awaits_loss_and_params():
    rule = updates.dpsgd(learning_rate=0.1, noise_multiplier=0.0, momentum=0.9)
    assert isinstance(rule, functools.partial) and rule.keywords["momentum"] == 0.9
    params = make_params()
    grads = per_example_inputs()
    assert list(rule(grads, params).named_state()) == [f"p{i}.dpsgd.trace" for i in range(3)]


def test_state_is_named_and_inspectable():
    params = make_params(dtype="float32")
    params[1].name = None
    result = updates.dpsgd(per_example_inputs(dtype="float32"), params, momentum=0.5)
    names = list(result.named_state())
    assert names[0] == "p0.dpsgd.trace" and names[2] == "p2.dpsgd.trace" and len(names) == 3
    assert all(v.dtype == np.float32 for v in result.named_state().values())
    summary = str(updates.inspect_state(result))
    assert "p0.dpsgd.trace" in summary
    assert result.config[0]["l2_norm_clip"] == 1.0 and result.config[0]["noise_multiplier"] == 1.1


def test_clear_nan_zeroes_nan_per_example_before_clipping():
    params = make_params()
    grads = per_example_inputs()
    config = dict(learning_rate=0.1, noise_multiplier=0.0, momentum=0.9)
    step = pytensor.function(grads, [], updates=updates.dpsgd(grads, params, clear_nan=True, **config))
    reference = REFERENCES["dpsgd"]([p.get_value() for p in params], **config)
    for g in per_example_stream(6, steps=5):
        clean = [x.copy() for x in g]
        g[0][1, 2, 3] = np.nan
        clean[0][1, 2, 3] = 0.0
        expected = reference(clean)
        step(*g)
        for p, want in zip(params, expected):
            np.testing.assert_allclose(p.get_value(), want, rtol=1e-12)


def test_mixed_dtypes_keep_their_types():
    with pytensor.config.change_flags(floatX="float64"):
        params = make_params([(2, 3), (3,)], "float32") + make_params([(2,)], "float64")
        grads = [pt.tensor(dtype=p.dtype, shape=(None, *p.get_value().shape)) for p in params]
        result = updates.dpsgd(grads, params, momentum=0.9, seed=0)
        for variable, value in result.items():
            assert value.type == variable.type, variable.name
        step = pytensor.function(grads, [], updates=result)
        step(*[np.ones((3, *p.get_value().shape), p.dtype) for p in params])
    assert [p.get_value().dtype for p in params] == [np.float32, np.float32, np.float64]


BAD = [
    (dict(learning_rate=-0.1), ValueError, r"dpsgd: learning_rate must be >= 0, got -0.1"),
    (dict(l2_norm_clip=-1.0), ValueError, r"dpsgd: l2_norm_clip must be >= 0"),
    (dict(noise_multiplier=-0.5), ValueError, r"dpsgd: noise_multiplier must be >= 0"),
    (dict(momentum=1.0), ValueError, r"dpsgd: momentum must be in \[0, 1\)"),
    (dict(nesterov=True), ValueError, r"nesterov=True needs a momentum"),
    (dict(nesterov=1), TypeError, r"nesterov must be True or False"),
    (dict(seed=1.5), TypeError, r"dpsgd: seed must be an integer or None, got float"),
    (dict(l2_norm_clip=np.inf), ValueError, r"dpsgd: l2_norm_clip must be finite"),
    (dict(l2_norm_clip=lambda t: 1.0), TypeError, r"l2_norm_clip must be a number or a scalar tensor"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: next(iter(b[0])) + ("" if b[1] is ValueError else "-type"))
def test_bad_hyperparameters_are_refused_by_name(bad):
    kwargs, error, message = bad
    with pytest.raises((error,), match=message):
        updates.dpsgd(**kwargs)
    with pytest.raises((error,), match=message):
        updates.dpsgd(per_example_inputs(), make_params(), **kwargs)


def test_inputs_without_a_batch_axis_are_refused_by_shape():
    params = make_params()
    scalar = sum(pt.sum(p) for p in params)
    with pytest.raises(ValueError, match=r"vector of per-example losses \(shape \(batch,\)\).*0-d"):
        updates.dpsgd(scalar, params)
    mean = [pt.tensor(dtype="float64", shape=s) for s in SHAPES]
    with pytest.raises(ValueError, match=r"grads\[0\] has 2 dimensions .*expected 3: \(batch, \*\(3, 4\)\)"):
        updates.dpsgd(mean, params)
    wrong = per_example_inputs()
    wrong[0] = pt.tensor(dtype="float64", shape=(None, 4, 3))
    with pytest.raises(ValueError, match=r"grads\[0\] has static shape \(None, 4, 3\), expected"):
        updates.dpsgd(wrong, params)
    batches = [pt.tensor(dtype="float64", shape=(n, *s)) for n, s in zip((2, 3, 2), SHAPES)]
    with pytest.raises(ValueError, match=r"different batch sizes \[2, 3\]"):
        updates.dpsgd(batches, params)
    with pytest.raises(ValueError, match=r"got 2 per-example gradients for 3 params"):
        updates.dpsgd(per_example_inputs()[:2], params)
    with pytest.raises(ValueError, match=r"do not depend on params\[1\] \('p1'\)"):
        updates.dpsgd(pt.stack([pt.sum(params[0]), pt.sum(params[2])]), params)
    with pytest.raises(ValueError, match=r"differentially_private_aggregate: grads\[0\] has 0 dimensions"):
        updates.differentially_private_aggregate([pt.scalar()])
