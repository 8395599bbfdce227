"""ESGD, the rule that needs the loss itself: its trajectory against a NumPy reference built from
the exact Hessian, its random signs, its errors; ASGD's averages against the reference and through
swap_averages. (Every rule of updates.modern runs through the registry tests of test_rules.py,
and those torch has through test_torch.py.)"""

import contextlib

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES
from reference import polyak_sgd as polyak_sgd_reference

import updates
from updates.layout import state_record
from updates.modern import _random_signs

STEPS = 60


def signs(seed, index, shape, steps):
    """The library's random signs at each step, evaluated on their own."""
    like = pytensor.shared(np.zeros(shape))
    step = pt.lscalar()
    draw = pytensor.function([step], _random_signs(seed, index, step, like), mode="FAST_COMPILE")
    return [draw(t) for t in range(1, steps + 1)]


def test_random_signs_look_independent():
    draws = np.array([v.ravel() for v in signs(0, 3, (40, 25), 400)])
    assert set(np.unique(draws)) == {-1.0, 1.0}
    assert abs(draws.mean()) < 0.01
    correlation = draws.T @ draws / len(draws)
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    # independent signs: off-diagonal entries have mean 0 and standard deviation 1/sqrt(400)
    assert abs(off_diagonal.mean()) < 0.002
    assert abs(off_diagonal.std() - 0.05) < 0.005
    other = np.array([v.ravel() for v in signs(0, 4, (40, 25), 400)])
    assert abs((draws * other).mean()) < 0.01, "two params must draw different signs"
    assert not np.array_equal(draws, np.array([v.ravel() for v in signs(1, 3, (40, 25), 400)]))


def reference_esgd(p0, gradient, hessian, vectors, learning_rate, epsilon):
    """D <- D + (H v)**2; p <- p - lr g / (sqrt(D / t) + eps), H the exact Hessian at p."""
    params, d, trajectory = [p.copy() for p in p0], [np.zeros_like(p) for p in p0], []
    for t, v in enumerate(vectors, start=1):
        g, hv = gradient(params), hessian(params, v)
        for i, p in enumerate(params):
            cast = p.dtype.type
            d[i] = d[i] + hv[i] ** 2
            params[i] = p - cast(learning_rate) * g[i] / (np.sqrt(d[i] / cast(t)) + cast(epsilon))
        trajectory.append([p.copy() for p in params])
    return trajectory


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_esgd_matches_the_reference_with_the_exact_hessian(dtype):
    """A coupled quadratic in w (Hessian A) and a quartic in b (Hessian diagonal)."""
    rng = np.random.default_rng(0)
    root = rng.normal(size=(4, 4))
    a = (root @ root.T / 4 + np.eye(4)).astype(dtype)
    w0, b0 = rng.normal(size=4).astype(dtype), rng.normal(size=3).astype(dtype)
    w, b = pytensor.shared(w0, name="w"), pytensor.shared(b0, name="b")
    loss = 0.5 * w @ pt.constant(a) @ w + pt.sum(b**4) / 4
    step = pytensor.function([], [], updates=updates.esgd(loss, [w, b], learning_rate=0.05, seed=7))

    def gradient(ps):
        return [a @ ps[0], ps[1] ** 3]

    def hessian(ps, v):
        return [a @ v[0], np.asarray(3 * ps[1] ** 2 * v[1], dtype=dtype)]

    vectors = list(zip(signs(7, 0, (4,), STEPS), signs(7, 1, (3,), STEPS)))
    vectors = [[x.astype(dtype) for x in pair] for pair in vectors]
    expected = reference_esgd([w0, b0], gradient, hessian, vectors, 0.05, 1e-4)
    tolerance = {"float64": dict(rtol=1e-11, atol=1e-13), "float32": dict(rtol=2e-4, atol=1e-6)}[dtype]
    for t, want in enumerate(expected, start=1):
        step()
        for p, value in zip((w, b), want):
            np.testing.assert_allclose(p.get_value(), value, **tolerance, err_msg=f"step {t}")
            p.set_value(value)  # the next step starts from the reference's params
        assert w.get_value().dtype == dtype
    assert np.linalg.norm(w.get_value()) < 0.5 * np.linalg.norm(w0), "ESGD should descend"


def test_esgd_state_is_named_and_typed():
    with pytensor.config.change_flags(floatX="float64"):
        w = pytensor.shared(np.ones(3, "float32"), name="w")
        result = updates.esgd(pt.sum(w**4), [w])
    assert list(result.named_state()) == ["w.esgd.d", "esgd.t"]
    assert all(value.type == variable.type for variable, value in result.items())


def test_esgd_needs_the_loss():
    w = pytensor.shared(np.ones(3), name="w")
    with pytest.raises(TypeError, match=r"^esgd: needs the scalar loss .* got a list of gradients"):
        updates.esgd([pt.vector()], [w])


@pytest.mark.parametrize("seed", [-1, 2**31])
def test_esgd_rejects_seeds_out_of_range(seed):
    with pytest.raises(ValueError, match=r"^esgd: seed must be in \[0, 2147483647\)"):
        updates.esgd(seed=seed)


@pytest.mark.parametrize(("seed", "kind"), [(1.5, "float"), (True, "bool")])
def test_esgd_rejects_seeds_that_are_not_integers(seed, kind):
    with pytest.raises(TypeError, match=rf"^esgd: seed must be an integer, got {kind}"):
        updates.esgd(seed=seed)


def test_esgd_partial_application_and_ranges():
    w = pytensor.shared(np.ones(3), name="w")
    rule = updates.esgd(learning_rate=0.1, seed=3)
    assert [v.name for v in rule(pt.sum(w**4), [w])] == ["w", "w.esgd.d", "esgd.t"]
    with pytest.raises(ValueError, match=r"^esgd: epsilon must be >= 0, got -1"):
        updates.esgd(epsilon=-1)


# -- ASGD's averages ---------------------------------------------------------------------------------

ASGD = {"learning_rate": 0.05, "lambd": 0.5, "alpha": 0.6, "t0": 5.0, "weight_decay": 0.1}


def asgd_problem(dtype="float64"):
    rng = np.random.default_rng(2)
    values = [rng.normal(size=s).astype(dtype) for s in [(), (4,), (2, 3)]]
    params = [pytensor.shared(v, name=f"w{i}") for i, v in enumerate(values)]
    grads = [pt.tensor(f"g{i}", dtype=dtype, shape=p.type.shape) for i, p in enumerate(params)]
    return values, params, grads, lambda ps: [1.5 * p + 0.1 * p**3 for p in ps]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", ["fused", "per_parameter"])
def test_asgd_averages_match_the_reference(path, dtype):
    values, params, grads, gradient = asgd_problem(dtype)
    with updates.per_parameter() if path == "per_parameter" else contextlib.nullcontext():
        result = updates.asgd(grads, params, **ASGD)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    reference = REFERENCES["asgd"](values, **ASGD)
    tolerance = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=2e-4, atol=1e-6)}[dtype]
    for t in range(1, 31):
        g = gradient([p.get_value() for p in params])
        expected = reference(g)
        step(*g)
        state = result.named_state()
        for i, (param, want) in enumerate(zip(params, expected)):
            np.testing.assert_allclose(param.get_value(), want, **tolerance, err_msg=f"step {t}")
            ax = state[f"w{i}.asgd.ax"]
            assert ax.dtype == dtype
            np.testing.assert_allclose(ax, reference.state[i]["ax"], **tolerance, err_msg=f"step {t}")
            if t <= ASGD["t0"] + 1:
                np.testing.assert_array_equal(ax, param.get_value())  # not averaging yet
    assert not np.allclose(state["w1.asgd.ax"], params[1].get_value()), "the average must lag the params"


@pytest.mark.parametrize("path", ["fused", "per_parameter"])
def test_asgd_averages_are_recorded_and_swapped_in(path):
    _, params, grads, gradient = asgd_problem()
    with updates.per_parameter() if path == "per_parameter" else contextlib.nullcontext():
        result = updates.asgd(grads, params, **ASGD)
    holders = [v for v in result.state if state_record(v).averages]
    assert [v.name for v in holders] == (
        ["asgd.ax"] if path == "fused" else [f"w{i}.asgd.ax" for i in range(3)]
    )
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for _ in range(12):
        step(*gradient([p.get_value() for p in params]))
    trained, averages = [p.get_value() for p in params], result.named_state()
    with updates.swap_averages(result) as pairs:
        assert set(pairs) == set(params)
        for i, param in enumerate(params):
            np.testing.assert_array_equal(param.get_value(), averages[f"w{i}.asgd.ax"])
    for param, value in zip(params, trained):
        np.testing.assert_array_equal(param.get_value(), value)
    np.testing.assert_array_equal(result.named_state()["w1.asgd.ax"], averages["w1.asgd.ax"])


def test_swap_averages_of_a_param_averaged_twice_restores_every_value():
    """apply_ema around asgd: the params hold apply_ema's averages in the block, and the params
    and both averages are back after it."""
    _, params, grads, gradient = asgd_problem()
    result = updates.apply_ema(updates.asgd(grads, params, **ASGD), decay=0.5)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for _ in range(12):
        step(*gradient([p.get_value() for p in params]))
    trained, before = [p.get_value() for p in params], result.named_state()
    with updates.swap_averages(result):
        for i, param in enumerate(params):
            np.testing.assert_array_equal(param.get_value(), before[f"w{i}.apply_ema.shadow"])
    for param, value in zip(params, trained):
        np.testing.assert_array_equal(param.get_value(), value)
    after = result.named_state()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_asgd_partial_application_and_ranges():
    w = pytensor.shared(np.ones(3, "float32"), name="w")
    rule = updates.asgd(learning_rate=0.1, t0=0.0)
    assert list(rule(pt.sum(w**2), [w]).named_state()) == ["w.asgd.ax", "asgd.t"]
    with pytest.raises(ValueError, match=r"^asgd: weight_decay must be >= 0, got -0.1"):
        updates.asgd(weight_decay=-0.1)
    with pytest.raises(TypeError, match=r"^asgd: got an unexpected keyword argument 'lr'; did you mean"):
        updates.asgd(pt.sum(w**2), [w], lr=0.1)


# -- ADOPT's first step and options -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fused", "per_parameter"])
def test_adopt_first_step_only_sets_v_even_without_epsilon(path):
    """The first step leaves the params and m alone and sets v to g**2; a zero gradient with
    epsilon 0 (0/0 in the normalization) leaves no NaN behind."""
    w = pytensor.shared(np.array([1.0, -2.0, 3.0]), name="w")
    g = pt.vector("g", dtype="float64")
    with updates.per_parameter() if path == "per_parameter" else contextlib.nullcontext():
        result = updates.adopt([g], [w], learning_rate=0.1, epsilon=0.0)
    step = pytensor.function([g], [], updates=result, mode="FAST_COMPILE")
    step(np.array([0.5, 0.0, -2.0]))
    state = result.named_state()
    np.testing.assert_array_equal(w.get_value(), [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(state["w.adopt.m"], 0.0)
    np.testing.assert_array_equal(state["w.adopt.v"], [0.25, 0.0, 4.0])
    step(np.array([1.0, 0.0, -2.0]))  # k = 1: the clipping bound is 1 (w[1] is 0/0, as in optax)
    state = result.named_state()
    np.testing.assert_allclose(state["w.adopt.m"][[0, 2]], [0.1, -0.1], rtol=1e-15)
    np.testing.assert_allclose(w.get_value()[[0, 2]], [0.99, 3.01], rtol=1e-15)


def test_adopt_options_partial_application_and_ranges():
    w = pytensor.shared(np.ones(3, "float32"), name="w")
    rule = updates.adopt(learning_rate=0.1, nesterov=True)
    result = rule(pt.sum(w**2), [w])
    assert list(result.named_state()) == ["w.adopt.m", "w.adopt.v", "adopt.t"]
    assert result.config[0]["nesterov"] is True and result.config[0]["use_clipping"] is True
    with pytest.raises(TypeError, match=r"^adopt: use_clipping must be True or False, got 1"):
        updates.adopt(use_clipping=1)
    with pytest.raises(ValueError, match=r"^adopt: clip_exponent must be >= 0, got -1"):
        updates.adopt(clip_exponent=-1)


# -- Schedule-Free: x is the average swap_averages evaluates with ---------------------------------------


@pytest.mark.parametrize("rule", ["schedule_free_sgd", "schedule_free_adamw"])
@pytest.mark.parametrize("path", ["fused", "per_parameter"])
def test_schedule_free_x_is_the_only_average_and_is_swapped_in(path, rule):
    values, params, grads, gradient = asgd_problem()
    with updates.per_parameter() if path == "per_parameter" else contextlib.nullcontext():
        result = getattr(updates, rule)(grads, params, learning_rate=0.05, warmup_steps=3)
    holders = [v for v in result.state if state_record(v).averages]
    assert [v.name for v in holders] == (
        [f"{rule}.x"] if path == "fused" else [f"w{i}.{rule}.x" for i in range(3)]
    )
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    reference = REFERENCES[rule](values, learning_rate=0.05, warmup_steps=3)
    for _ in range(12):
        g = gradient([p.get_value() for p in params])
        expected = reference(g)
        step(*g)
    trained, state = [p.get_value() for p in params], result.named_state()
    for i, (param, want) in enumerate(zip(params, expected)):
        np.testing.assert_allclose(param.get_value(), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state[f"w{i}.{rule}.x"], reference.state[i]["x"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state[f"w{i}.{rule}.z"], reference.state[i]["z"], rtol=1e-12, atol=1e-14)
    with updates.swap_averages(result) as pairs:
        assert set(pairs) == set(params)
        for i, param in enumerate(params):
            np.testing.assert_array_equal(param.get_value(), state[f"w{i}.{rule}.x"])
    for param, value in zip(params, trained):
        np.testing.assert_array_equal(param.get_value(), value)
    assert not np.allclose(state["w1." + rule + ".x"], trained[1]), "x must differ from y"


def test_schedule_free_partial_application_and_ranges():
    w = pytensor.shared(np.ones(3, "float32"), name="w")
    rule = updates.schedule_free_adamw(learning_rate=0.01, warmup_steps=10)
    assert list(rule(pt.sum(w**2), [w]).named_state()) == [
        "schedule_free_adamw.max_lr",
        "schedule_free_adamw.weight_sum",
        "w.schedule_free_adamw.z",
        "w.schedule_free_adamw.v",
        "w.schedule_free_adamw.x",
        "schedule_free_adamw.t",
    ]
    with pytest.raises(ValueError, match=r"^schedule_free_sgd: beta1 must be in \(0, 1\], got 0"):
        updates.schedule_free_sgd(beta1=0)
    with pytest.raises(TypeError, match=r"^schedule_free_adamw: warmup_steps must be an integer, got float"):
        updates.schedule_free_adamw(warmup_steps=2.5)
    with pytest.raises(TypeError, match=r"^schedule_free_sgd: got an unexpected keyword argument 'b1'"):
        updates.schedule_free_sgd(pt.sum(w**2), [w], b1=0.9)


POLYAK_SHAPES = [(3, 4), (5,), ()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["sps", "sps+"])
def test_polyak_sgd_matches_the_reference_and_keeps_the_dtype(dtype, variant):
    rng = np.random.default_rng(4)
    params = [
        pytensor.shared(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(POLYAK_SHAPES)
    ]
    x = [pt.tensor(f"x{i}", dtype=dtype, shape=s) for i, s in enumerate(POLYAK_SHAPES)]
    loss = sum(pt.sum((p - v) ** 2) for p, v in zip(params, x))
    hyper = dict(learning_rate=0.9, max_learning_rate=0.4, f_min=5.0, epsilon=0.01, variant=variant)
    result = updates.polyak_sgd(loss, params, **hyper)
    assert all(result[p].dtype == dtype and result[p].ndim == p.ndim for p in params)
    assert not list(result.named_state())
    grads = pytensor.grad(loss, params)
    f = pytensor.function(x, [loss, *grads], updates=result)
    for _ in range(10):
        data = [rng.normal(size=s).astype(dtype) for s in POLYAK_SHAPES]
        before = [p.get_value() for p in params]
        value, *g = f(*data)
        want = polyak_sgd_reference(before, g, value, **hyper)
        for p, w in zip(params, want):
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(p.get_value(), w, **tol)


# -- acprop: the denominator of step t is the second moment of step t - 1 ------------------------------


def test_acprop_first_step_divides_by_one_and_later_steps_by_the_previous_moment():
    """Asynchronous: step t divides g_t by sqrt(s_hat_{t-1}) + eps, a denominator the gradient
    g_t does not enter (1 on the first step), so scaling g_t scales the step exactly."""
    g = pt.dvector("g")
    w = pytensor.shared(np.zeros(3), name="w")
    result = updates.acprop([g], [w], learning_rate=0.1, epsilon=0.0, epsilon_root=0.0)
    step = pytensor.function([g], [], updates=result, mode="FAST_COMPILE")
    step(np.array([3.0, -2.0, 0.5]))
    np.testing.assert_allclose(w.get_value(), -0.1 * np.array([3.0, -2.0, 0.5]), rtol=1e-15)
    state = {k: v.copy() for k, v in result.named_state().items()}
    moves = []
    for scale in (1.0, 10.0):
        w.set_value(np.zeros(3))
        for name, variable in zip(state, result.state):
            variable.set_value(state[name])
        step(scale * np.array([1.0, 1.0, -1.0]))
        moves.append(w.get_value())
    np.testing.assert_allclose(moves[1], 10 * moves[0], rtol=1e-14)
    # s_hat_1 = s_1 / (1 - beta2) = (g_1 - m_0)**2 = g_1**2: the second step is g_2 / |g_1|
    np.testing.assert_allclose(moves[0], -0.1 * np.array([1.0, 1.0, -1.0]) / np.array([3.0, 2.0, 0.5]))
