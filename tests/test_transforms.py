"""Gradient transforms: NumPy references, torch's clip_grad_norm_ and SGD weight decay live,
exactness under the limit, kept types, clear errors, and the statistics of gradient noise."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import equal_computations

import updates

SHAPES = [(3,), (2, 4), ()]


def arrays(dtype="float64", seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(size=s)).astype(dtype) for s in SHAPES]


def run(transform, values, *args, **kwargs):
    """Apply ``transform`` to symbolic inputs and evaluate it on ``values``."""
    inputs = [pt.tensor(dtype=v.dtype, shape=(None,) * v.ndim) for v in values]
    outputs = transform(inputs, *args, **kwargs)
    extra = []
    if isinstance(outputs, tuple):
        outputs, norm = outputs
        extra = [norm]
    for x, out in zip(inputs, outputs):
        assert out.type == x.type
    return pytensor.function(inputs, [*outputs, *extra], mode="FAST_COMPILE")(*values)


def assert_bitwise(a, b):
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_by_value(dtype):
    values = arrays(dtype, scale=2.0)
    for got, x in zip(run(updates.clip_by_value, values, -0.5, 1.0), values):
        assert_bitwise(got, np.clip(x, x.dtype.type(-0.5), x.dtype.type(1.0)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [0.01, 10.0], ids=["under", "over"])
def test_clip_by_norm_per_tensor(dtype, scale):
    values = arrays(dtype, scale=scale)
    for got, x in zip(run(updates.clip_by_norm, values, 1.5), values):
        norm = np.sqrt(np.sum(x.astype("float64") ** 2))
        if norm <= 1.5:
            assert_bitwise(got, x)  # exactly unchanged
        else:
            np.testing.assert_allclose(got, x * (1.5 / norm), rtol=1e-6 if dtype == "float32" else 1e-14)
            np.testing.assert_allclose(np.sqrt(np.sum(got.astype("float64") ** 2)), 1.5, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
@pytest.mark.parametrize("max_norm", [0.3, 2.0, 1e3])
def test_clip_by_global_norm_is_torch_clip_grad_norm(dtype, max_norm):
    """Live against torch.nn.utils.clip_grad_norm_: identical (and unchanged) under the limit;
    over it torch divides by n + 1e-6 instead of n, a relative 1e-6/n apart."""
    torch = pytest.importorskip("torch")
    values = arrays("float64" if dtype == "mixed" else dtype, scale=0.7)
    if dtype == "mixed":
        values[0] = values[0].astype("float32")
    *clipped, norm = run(updates.clip_by_global_norm, values, max_norm, return_norm=True)
    tensors = [torch.tensor(x) for x in values]
    for t in tensors:
        t.grad = t.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    wide = np.float32 if dtype == "float32" else np.float64
    assert norm.dtype == wide
    np.testing.assert_allclose(norm, torch_norm.item(), rtol=1e-6 if dtype != "float64" else 1e-13)
    for got, x, t in zip(clipped, values, tensors):
        assert got.dtype == x.dtype
        if norm <= max_norm:
            assert_bitwise(got, x)
            assert_bitwise(got, t.grad.numpy())
        else:
            np.testing.assert_allclose(
                got, t.grad.numpy(), rtol=1e-5 / norm + (1e-6 if x.dtype == np.float32 else 0)
            )
            np.testing.assert_allclose(
                got, x * (max_norm / norm), rtol=1e-6 if x.dtype == np.float32 else 1e-13
            )
    if norm > max_norm:
        total = np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in clipped))
        np.testing.assert_allclose(total, max_norm, rtol=1e-6)


def test_lasagne_total_norm_constraint_is_unchanged_and_not_exact():
    """The Lasagne variant still shrinks a gradient under the limit by n/(n + eps)."""
    values = [np.array([1e-6])]
    lasagne = run(updates.total_norm_constraint, values, 1.0)[0]
    exact = run(updates.clip_by_global_norm, values, 1.0)[0]
    np.testing.assert_allclose(lasagne, values[0] * 1e-6 / (1e-6 + 1e-7))
    assert_bitwise(exact, values[0])


def test_norms_of_a_negative_scalar_gradient():
    """One shared norm (reductions.l2_norm) serves every clip: PyTensor 2.38 rewrote the root of a lone
    scalar's square to the scalar itself, so a negative one escaped clipping."""
    g = pt.dscalar("g")
    _, norm = updates.total_norm_constraint([g], 1.0, return_norm=True)
    f = pytensor.function(
        [g], [*updates.clip_by_norm([g], 1.0), *updates.clip_by_global_norm([g], 1.0), norm], mode="FAST_RUN"
    )
    by_norm, by_global_norm, total = f(-3.0)
    assert by_norm == by_global_norm == -1.0 and total == 3.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_weight_decay_is_torch_sgd_weight_decay(dtype):
    """sgd on g + wd p, 30 steps, against torch.optim.SGD(weight_decay=wd)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(SHAPES)]
    grads = [pt.tensor(dtype=p.dtype, shape=p.type.shape) for p in params]
    decayed = updates.add_weight_decay(grads, params, weight_decay=0.2)
    step = pytensor.function(
        grads, [], updates=updates.sgd(decayed, params, learning_rate=0.1), mode="FAST_COMPILE"
    )
    tensors = [torch.tensor(p.get_value(), requires_grad=True) for p in params]
    optimizer = torch.optim.SGD(tensors, lr=0.1, weight_decay=0.2)
    for _ in range(30):
        g = [rng.normal(size=s).astype(dtype) for s in SHAPES]
        step(*g)
        for t, gi in zip(tensors, g):
            t.grad = torch.tensor(gi)
        optimizer.step()
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(
            p.get_value(), t.detach().numpy(), rtol=1e-5 if dtype == "float32" else 1e-13
        )


def test_zero_nans():
    values = [np.array([1.0, np.nan, np.inf, -np.inf]), np.array(np.nan, dtype="float32")]
    got = run(updates.zero_nans, values)
    assert_bitwise(got[0], np.array([1.0, 0.0, np.inf, -np.inf]))
    assert_bitwise(got[1], np.array(0.0, dtype="float32"))


@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_types_are_kept(floatx):
    with pytensor.config.change_flags(floatX=floatx):
        params = [pytensor.shared(np.ones((1, 3), "float32"), shape=(1, None)), pytensor.shared(np.ones(2))]
        grads = [pt.tensor(dtype=p.dtype, shape=p.type.shape) for p in params]
        for transformed in (
            updates.clip_by_value(grads, -0.1, 0.1),
            updates.clip_by_norm(grads, 0.1),
            updates.clip_by_global_norm(grads, 0.1),
            updates.add_weight_decay(grads, params, 0.1),
            updates.zero_nans(grads),
            updates.add_gradient_noise(grads, seed=0),
        ):
            assert [g.type for g in transformed] == [g.type for g in grads]


BAD = [
    (
        lambda g: updates.clip_by_value(g, 1.0, -1.0),
        ValueError,
        r"^clip_by_value: min_value must be <= max_value, got 1.0 > -1.0",
    ),
    (
        lambda g: updates.clip_by_value(g, "a", 1.0),
        TypeError,
        r"^clip_by_value: min_value must be a number or a scalar",
    ),
    (
        lambda g: updates.clip_by_norm(g, 0.0),
        ValueError,
        r"^clip_by_norm: max_norm must be > 0, got 0.0",
    ),
    (
        lambda g: updates.clip_by_global_norm(g, -1),
        ValueError,
        r"^clip_by_global_norm: max_norm must be > 0",
    ),
    (
        lambda g: updates.clip_by_global_norm(g, 1.0, return_norm=1),
        TypeError,
        r"^clip_by_global_norm: return_norm must be True or False",
    ),
    (
        lambda g: updates.clip_by_global_norm(g[0], 1.0),
        TypeError,
        r"^clip_by_global_norm: grads must be a list of tensors, got TensorVariable",
    ),
    (lambda g: updates.clip_by_norm([], 1.0), ValueError, r"^clip_by_norm: grads is empty"),
    (
        lambda g: updates.zero_nans([pt.ivector()]),
        TypeError,
        r"^zero_nans: grads\[0\] must be floating-point, got dtype int32",
    ),
    (lambda g: updates.zero_nans(["x"]), TypeError, r"^zero_nans: grads\[0\] must be a tensor, got str"),
    (lambda g: updates.add_weight_decay(g, [], 0.1), ValueError, r"^add_weight_decay: params is empty"),
    (
        lambda g: updates.add_weight_decay(g, [pytensor.shared(np.ones(3))] * 2, -0.1),
        ValueError,
        r"^add_weight_decay: weight_decay must be >= 0, got -0.1",
    ),
    (
        lambda g: updates.add_gradient_noise(g, eta=0.0),
        ValueError,
        r"^add_gradient_noise: eta must be > 0, got 0.0",
    ),
    (
        lambda g: updates.add_gradient_noise(g, gamma=-1.0),
        ValueError,
        r"^add_gradient_noise: gamma must be >= 0",
    ),
    (
        lambda g: updates.add_gradient_noise(g, seed=1.5),
        TypeError,
        r"^add_gradient_noise: seed must be an integer or None, got float",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), BAD, ids=[m.split(":")[0][1:] + str(i) for i, (_, _, m) in enumerate(BAD)]
)
def test_bad_arguments_are_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call([pt.vector(), pt.vector()])


# -- gradient noise --------------------------------------------------------------------------------

N = 40_000


def test_gradient_noise_has_the_annealed_variance():
    """Zero gradients + noise: per call t, mean 0 and variance eta / (1 + t)**gamma (sample
    variance within 5 standard errors: sqrt(2/N) relative), independent across tensors and calls."""
    eta, gamma = 0.5, 0.55
    g = [pt.vector(), pt.matrix(dtype="float32")]
    noisy = updates.add_gradient_noise(g, eta=eta, gamma=gamma, seed=42)
    f = pytensor.function(g, noisy, mode="FAST_COMPILE")
    zeros = [np.zeros(N), np.zeros((N // 4, 4), "float32")]
    previous = None
    for t in range(25):
        a, b = f(*zeros)
        assert a.dtype == np.float64 and b.dtype == np.float32
        variance = eta / (1 + t) ** gamma
        for x in (a, b.ravel()):
            assert abs(x.mean()) < 5 * np.sqrt(variance / N)
            assert abs(x.var() / variance - 1) < 5 * np.sqrt(2 / N), (t, x.var(), variance)
        assert abs(np.corrcoef(a, b.ravel().astype("float64"))[0, 1]) < 5 / np.sqrt(N)
        if previous is not None:
            assert abs(np.corrcoef(a, previous)[0, 1]) < 5 / np.sqrt(N)
        previous = a
    assert int(noisy.counter.get_value()) == 25


def test_gradient_noise_is_reproducible_from_its_seed():
    def draws(seed):
        g = pt.vector()
        f = pytensor.function([g], updates.add_gradient_noise([g], seed=seed), mode="FAST_COMPILE")
        return [f(np.ones(5))[0] for _ in range(3)]

    first, again, other = draws(7), draws(7), draws(8)
    for a, b in zip(first, again):
        assert_bitwise(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])
    assert np.all(first[0] != 1.0)


# -- partial application (for updates.chain) -------------------------------------------------------

PARTIAL = {
    "clip_by_value": dict(min_value=-1.0, max_value=0.5),
    "clip_by_norm": dict(max_norm=1.0),
    "clip_by_global_norm": dict(max_norm=1.0),
    "add_weight_decay": dict(weight_decay=0.3),
    "zero_nans": dict(),
    "add_gradient_noise": dict(eta=0.1, seed=3),
    "total_norm_constraint": dict(max_norm=1.0, epsilon=0.0),
    "centralize": dict(),
    "adaptive_grad_clip": dict(clipping=0.1, eps=1e-2),
    "clip_by_block_rms": dict(threshold=0.5),
    "normalize_by_update_norm": dict(scale_factor=2.0),
}


def test_every_transform_is_partially_applicable():
    assert set(PARTIAL) == {*updates.transforms.__all__, "total_norm_constraint"}


@pytest.mark.parametrize("name", list(PARTIAL))
def test_called_without_grads_a_transform_awaits_them(name):
    """Keywords only: the public function back, its keywords and defaults bound; applied later it
    builds the same graph as the direct call."""
    function = getattr(updates, name)
    later = function(**PARTIAL[name])
    assert isinstance(later, functools.partial) and later.func is function
    defaults = {
        n: p.default for n, p in inspect.signature(function).parameters.items() if p.default is not p.empty
    }
    assert later.keywords == {**defaults, **PARTIAL[name]}
    grads = [pt.vector("a"), pt.matrix("b")]
    params = [pytensor.shared(np.ones(3), name="a"), pytensor.shared(np.ones((2, 2)), name="b")]
    extra = dict(params=params) if name in ("add_weight_decay", "adaptive_grad_clip") else {}
    late, direct = later(grads, **extra), function(grads, **extra, **PARTIAL[name])
    state = [[x.counter, x.generator] for x in (late, direct)] if name == "add_gradient_noise" else [[], []]
    assert equal_computations(late, direct, in_xs=state[0], in_ys=state[1])


def test_a_transform_awaiting_grads_still_needs_its_required_arguments():
    message = (
        r"^clip_by_value: max_value missing; called without grads, clip_by_value returns itself "
        r"awaiting them, with its other arguments bound: give max_value=\.\.\.$"
    )
    with pytest.raises(TypeError, match=message):
        updates.clip_by_value(min_value=-1.0)
    with pytest.raises(
        TypeError, match=r"^clip_by_norm: got an unexpected keyword argument 'max_nrom'; did you"
    ):
        updates.clip_by_norm(max_nrom=1.0)


# -- centralize, adaptive_grad_clip, clip_by_block_rms, normalize_by_update_norm (optax's) ----------

MORE_SHAPES = [
    (),
    (3,),
    (2, 4),
    (1, 5),
    (5, 1),
    (2, 3, 4),
    (1, 1, 3),
    (2, 2, 3, 4),
    (1, 1, 1, 4),
    (2, 1, 2, 3, 2),
]


def more_arrays(dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(size=s)).astype(dtype) for s in MORE_SHAPES]


def ref_centralize(x):
    return x - x.mean(axis=tuple(range(1, x.ndim)), keepdims=True) if x.ndim > 1 else x


def ref_unitwise_norm(x, axis=None):
    """optax's unitwise_norm from its definition: a whole-tensor norm for at most one axis longer
    than 1, else one per column (2-d, 3-d) or per output filter (4-d, 5-d)."""
    if axis is None:
        if np.squeeze(x).ndim <= 1:
            axis = tuple(range(x.ndim))
        else:
            axis = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}[x.ndim]
    return np.sqrt(np.sum(np.abs(x) ** 2, axis=axis, keepdims=True))


def ref_adaptive_grad_clip(g, p, clipping, eps, axis=None):
    g_norm, p_norm = ref_unitwise_norm(g, axis), ref_unitwise_norm(p, axis)
    limit = clipping * np.maximum(p_norm, eps)
    return np.where(g_norm < limit, g, g * (limit / np.maximum(g_norm, 1e-6)))


def ref_clip_by_block_rms(x, threshold):
    return x / max(1.0, np.sqrt(np.mean(x.astype("float64") ** 2)) / threshold)


def ref_normalize_by_update_norm(xs, scale_factor, eps):
    norm = np.sqrt(sum(np.sum(x.astype("float64") ** 2) for x in xs))
    return [x / ((norm + eps) / scale_factor) for x in xs]


def close(dtype):
    return dict(rtol=2e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-13, atol=1e-300)


def check_values(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, **close(g.dtype.name))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_centralize(dtype):
    values = more_arrays(dtype, 0)
    got = run(updates.centralize, values)
    check_values(got, [ref_centralize(x) for x in values])
    for g, x in zip(got, values):
        if x.ndim > 1:
            np.testing.assert_allclose(g.mean(axis=tuple(range(1, x.ndim))), 0, atol=1e-6)
        else:
            assert_bitwise(g, x)
    vectors = [pt.vector(), pt.scalar()]
    assert updates.centralize(vectors) == vectors  # the same variables


def agc_run(grads, params_values, **kwargs):
    params = [pytensor.shared(p) for p in params_values]
    inputs = [pt.tensor(dtype=v.dtype, shape=(None,) * v.ndim) for v in grads]
    outputs = updates.adaptive_grad_clip(inputs, params, **kwargs)
    for x, out in zip(inputs, outputs):
        assert out.type == x.type
    return pytensor.function(inputs, outputs, mode="FAST_COMPILE")(*grads)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("clipping", [0.05, 0.5, 100.0])
def test_adaptive_grad_clip(dtype, clipping):
    """Shapes of every default rule (the unit depending on the run-time shape), with zero params
    (eps decides) and units both under and over the limit."""
    grads, params = more_arrays(dtype, 1), more_arrays(dtype, 2, scale=0.5)
    params[2][:, 1] = 0.0  # a zero unit: its limit is clipping * eps
    got = agc_run(grads, params, clipping=clipping, eps=1e-3)
    want = [ref_adaptive_grad_clip(g, p, clipping, 1e-3) for g, p in zip(grads, params)]
    check_values(got, want)
    unchanged = [(g, x) for g, x, w in zip(got, grads, want) if np.array_equal(w, x)]
    assert len(unchanged) >= (len(grads) - 1 if clipping == 100.0 else 0)
    for g, x in unchanged:
        assert_bitwise(g, x)  # under the limit: exactly unchanged


@pytest.mark.parametrize("axis", [0, (0, 1), -1])
def test_adaptive_grad_clip_axis(axis):
    shapes = [(3, 4, 2), (2, 5, 3)]
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=s) for s in shapes]
    params = [0.3 * rng.normal(size=s) for s in shapes]
    got = agc_run(grads, params, clipping=0.2, axis=axis)
    check_values(got, [ref_adaptive_grad_clip(g, p, 0.2, 1e-3, axis) for g, p in zip(grads, params)])


def test_adaptive_grad_clip_mask_and_static_shapes():
    """A masked-out gradient is the same variable; known static shapes pick the unit statically."""
    rng = np.random.default_rng(4)
    params = [
        pytensor.shared(rng.normal(size=(1, 5)), name="b"),
        pytensor.shared(rng.normal(size=(3, 4)), name="W"),
    ]
    grads = [pt.tensor(dtype="float64", shape=p.get_value().shape) for p in params]
    out = updates.adaptive_grad_clip(grads, params, clipping=0.1, mask="W")
    assert out[0] is grads[0]
    values = [rng.normal(size=(1, 5)), rng.normal(size=(3, 4))]
    got = pytensor.function(grads, out, mode="FAST_COMPILE")(*values)
    assert_bitwise(got[0], values[0])
    check_values(got[1:], [ref_adaptive_grad_clip(values[1], params[1].get_value(), 0.1, 1e-3)])
    whole = updates.adaptive_grad_clip(grads[:1], params[:1], clipping=0.1)
    f = pytensor.function(grads[:1], whole, mode="FAST_COMPILE")
    check_values(f(values[0]), [ref_adaptive_grad_clip(values[0], params[0].get_value(), 0.1, 1e-3)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threshold", [0.1, 1.0, 100.0])
def test_clip_by_block_rms(dtype, threshold):
    values = more_arrays(dtype, 5, scale=2.0)
    got = run(updates.clip_by_block_rms, values, threshold)
    check_values(got, [ref_clip_by_block_rms(x, threshold).astype(dtype) for x in values])
    for g, x in zip(got, values):
        if np.sqrt(np.mean(x.astype("float64") ** 2)) <= threshold:
            assert_bitwise(g, x)  # divided by exactly 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("scale_factor", "eps"), [(1.0, 1e-6), (-0.3, 0.0), (2.5, 0.1)])
def test_normalize_by_update_norm(dtype, scale_factor, eps):
    values = more_arrays(dtype, 6)
    got = run(updates.normalize_by_update_norm, values, scale_factor, eps)
    want = [x.astype(dtype) for x in ref_normalize_by_update_norm(values, scale_factor, eps)]
    check_values(got, want)
    norm = np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in got))
    np.testing.assert_allclose(norm, abs(scale_factor) * (norm / abs(scale_factor)), rtol=1e-6)
    if eps == 0.0:
        np.testing.assert_allclose(norm, abs(scale_factor), rtol=1e-6)


def test_normalize_by_update_norm_mask_takes_the_norm_of_the_selected():
    values = [np.array([3.0, 4.0]), np.array([100.0])]
    got = run(updates.normalize_by_update_norm, values, 1.0, 0.0, mask=[True, False])
    check_values(got, [np.array([0.6, 0.8]), np.array([100.0])])


@pytest.mark.parametrize(
    "transform",
    [
        updates.centralize(),
        updates.adaptive_grad_clip(clipping=0.05),
        updates.clip_by_block_rms(threshold=0.2),
        updates.normalize_by_update_norm(scale_factor=0.5),
    ],
    ids=["centralize", "adaptive_grad_clip", "clip_by_block_rms", "normalize_by_update_norm"],
)
def test_the_new_transforms_chain_before_adam(transform):
    """chain(transform, adam) steps exactly as adam on the transformed gradients."""

    def model():
        params = [pytensor.shared(np.ones((3, 4)), name="W"), pytensor.shared(np.ones(4), name="b")]
        x = pt.vector("x")
        return x, params, pt.sum((pt.dot(params[0], x) + params[1][:3]) ** 2)

    x, chained, loss = model()
    step = updates.chain(transform, updates.adam(learning_rate=1e-2))(loss, chained)
    f = pytensor.function([x], loss, updates=step, mode="FAST_COMPILE")
    y, nested, loss2 = model()
    grads = updates.get_or_compute_grads(loss2, nested)
    extra = dict(params=nested) if "params" in inspect.signature(transform.func).parameters else {}
    direct = updates.adam(transform(grads, **extra), nested, learning_rate=1e-2)
    g = pytensor.function([y], loss2, updates=direct, mode="FAST_COMPILE")
    for k in range(3):
        value = np.array([1.0, -2.0, 0.5, 3.0]) * (k + 1)
        f(value), g(value)
        for a, b in zip(chained, nested):
            assert_bitwise(a.get_value(), b.get_value())
    assert not np.allclose(chained[0].get_value(), 1.0)


NEW_BAD = [
    (
        lambda g: updates.adaptive_grad_clip(g, P2, 0.0),
        ValueError,
        r"^adaptive_grad_clip: clipping must be > 0, got 0.0",
    ),
    (
        lambda g: updates.adaptive_grad_clip(g, P2, 0.1, eps=-1.0),
        ValueError,
        r"^adaptive_grad_clip: eps must be >= 0",
    ),
    (
        lambda g: updates.adaptive_grad_clip(g, P2, 0.1, axis=1.5),
        TypeError,
        r"^adaptive_grad_clip: axis must be None, an int",
    ),
    (
        lambda g: updates.adaptive_grad_clip(g, P2, 0.1, axis=1),
        ValueError,
        r"^adaptive_grad_clip: axis \(1,\) does not fit grads\[0\], of 1 dimensions",
    ),
    (lambda g: updates.adaptive_grad_clip(g, P2[:1], 0.1), ValueError, r"^adaptive_grad_clip: "),
    (
        lambda g: updates.adaptive_grad_clip(
            [pt.tensor(shape=(None,) * 6)], [pytensor.shared(np.ones((2,) * 6))], 0.1
        ),
        ValueError,
        r"^adaptive_grad_clip: grads\[0\] has 6 dimensions; .*give axis",
    ),
    (
        lambda g: updates.adaptive_grad_clip(g[0], P2, 0.1),
        TypeError,
        r"^adaptive_grad_clip: grads must be a list of tensors",
    ),
    (
        lambda g: updates.clip_by_block_rms(g, 0.0),
        ValueError,
        r"^clip_by_block_rms: threshold must be > 0, got 0.0",
    ),
    (
        lambda g: updates.clip_by_block_rms(g, "x"),
        TypeError,
        r"^clip_by_block_rms: threshold must be a number or a scalar",
    ),
    (
        lambda g: updates.normalize_by_update_norm(g, 0.0),
        ValueError,
        r"^normalize_by_update_norm: scale_factor must be nonzero, got 0.0",
    ),
    (
        lambda g: updates.normalize_by_update_norm(g, float("nan")),
        ValueError,
        r"^normalize_by_update_norm: scale_factor must be finite",
    ),
    (
        lambda g: updates.normalize_by_update_norm(g, eps=-1e-6),
        ValueError,
        r"^normalize_by_update_norm: eps must be >= 0",
    ),
    (
        lambda g: updates.centralize([pt.imatrix()]),
        TypeError,
        r"^centralize: grads\[0\] must be floating-point, got dtype int32",
    ),
    (lambda g: updates.centralize(g, mask=[True]), ValueError, r"^centralize: "),
    (lambda g: updates.centralize([]), ValueError, r"^centralize: grads is empty"),
]
P2 = [pytensor.shared(np.ones(3), name="a"), pytensor.shared(np.ones(3), name="b")]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    NEW_BAD,
    ids=[m.split(":")[0][1:] + str(i) for i, (_, _, m) in enumerate(NEW_BAD)],
)
def test_bad_arguments_of_the_new_transforms_are_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call([pt.vector(), pt.vector()])


@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_the_new_transforms_keep_types(floatx):
    with pytensor.config.change_flags(floatX=floatx):
        params = [
            pytensor.shared(np.ones((1, 3), "float32"), shape=(1, None)),
            pytensor.shared(np.ones((2, 2))),
        ]
        grads = [pt.tensor(dtype=p.dtype, shape=p.type.shape) for p in params]
        for transformed in (
            updates.centralize(grads),
            updates.adaptive_grad_clip(grads, params, 0.1),
            updates.clip_by_block_rms(grads, 0.1),
            updates.normalize_by_update_norm(grads, 0.5),
        ):
            assert [g.type for g in transformed] == [g.type for g in grads]
