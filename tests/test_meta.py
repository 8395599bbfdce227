"""Rules over a base rule (updates.meta: sam, mechanize): the properties every rule of the registry
has (trajectories against tests/reference.py, types kept, state named and checkpointed, partial
application, chain, ranges), run over registry.BASE_RULE_CASES, and what is particular to each.

The losses have a known gradient, g = a p + 0.1 p**3, so that the NumPy references can evaluate it
at SAM's perturbed params.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES
from reference import mechanize as mechanize_reference
from reference import sam as sam_reference
from registry import BASE_RULE_CASES

import updates

CASES = {case.name: case for case in BASE_RULE_CASES}
PATHS = {"fused": contextlib.nullcontext, "per_parameter": updates.per_parameter}
SHAPES = [(), (4,), (2, 3), (1, 3)]
STEPS = 30


def make_params(shapes=SHAPES, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return [
        pytensor.shared(
            rng.normal(size=s).astype(dtype), name=f"p{i}", shape=tuple(1 if n == 1 else None for n in s)
        )
        for i, s in enumerate(shapes)
    ]


def curvatures(params):
    return [np.full(p.get_value().shape, 1.0 + 0.5 * i, p.dtype) for i, p in enumerate(params)]


def loss_of(params):
    """sum(0.5 a p**2 + 0.025 p**4): its gradient is a p + 0.1 p**3."""
    return sum(pt.sum(0.5 * a * p**2 + 0.025 * p**4) for p, a in zip(params, curvatures(params)))


def gradient_of(params):
    a = curvatures(params)
    return lambda ps: [ai * p + p.dtype.type(0.1) * p**3 for ai, p in zip(a, ps)]


def given(case, params):
    """What the case is given: the loss (SAM needs it), or gradient inputs."""
    if case.needs_loss:
        return [], loss_of(params)
    grads = [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]
    return grads, grads


def reference(case, params, hyper):
    values = [p.get_value() for p in params]
    name, base_hyper = case.base
    base = REFERENCES[name](values, **base_hyper)
    own = {k: v for k, v in hyper.items() if k != "rule"}
    if case.name == "sam":
        step = sam_reference(values, gradient_of(params), base, **own)
        return lambda: step()
    step = mechanize_reference(values, base, **own)
    grad = gradient_of(params)
    return lambda: step(grad([p.get_value() for p in params]))


# -- the properties of every rule -----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_trajectory_matches_reference(case, path):
    params = make_params()
    inputs, loss_or_grads = given(case, params)
    with PATHS[path]():
        result = case.function(loss_or_grads, params, **case.hyper)
    step = pytensor.function(inputs, [], updates=result, mode="FAST_COMPILE")
    expected = reference(case, params, case.hyper)
    grad = gradient_of(params)
    start = [p.get_value() for p in params]
    for t in range(1, STEPS + 1):
        want = expected()
        step(*([] if case.needs_loss else grad([p.get_value() for p in params])))
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.get_value(), w, rtol=1e-11, atol=1e-13, err_msg=f"step {t}")
    assert all(not np.allclose(p.get_value(), s) for p, s in zip(params, start)), "nothing moved"


def test_mechanize_state_matches_the_reference():
    case = CASES["mechanize"]
    params = make_params()
    inputs, grads = given(case, params)
    result = case.function(grads, params, **case.hyper)
    step = pytensor.function(inputs, [], updates=result, mode="FAST_COMPILE")
    values = [p.get_value() for p in params]
    mirror = mechanize_reference(values, REFERENCES["adam"](values, **case.base[1]), weight_decay=0.05,
                                 s_init=1e-3, num_betas=4)  # fmt: skip
    grad = gradient_of(params)
    for _ in range(STEPS):
        g = grad([p.get_value() for p in params])
        mirror(g)
        step(*g)
    named = result.named_state()
    for slot in "rmvs":
        np.testing.assert_allclose(named[f"mechanize.{slot}"], mirror.state[slot], rtol=1e-10, err_msg=slot)
    for i, x0 in enumerate(mirror.state["x0"]):
        np.testing.assert_array_equal(named[f"p{i}.mechanize.x0"], x0)
    assert named["mechanize.s"].sum() > 10 * 4 * 1e-3, "the scale did not grow"


@pytest.mark.parametrize("floatx", ["float32", "float64"])
@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_types_are_kept(case, floatx):
    """float32 params stay float32 under floatX=float64 (and with a float64 param beside them);
    mechanize's per-beta state takes the lowest dtype of the params, as optax's."""
    with pytensor.config.change_flags(floatX=floatx):
        params = make_params([(), (3,), (1, 3)], "float32") + make_params([(2, 1)], "float64", seed=5)
        for i, p in enumerate(params):
            p.name = f"q{i}"
        hyper = {**case.hyper, **({"rho": pytensor.shared(np.float64(0.1))} if "rho" in case.hyper else {})}
        inputs, loss_or_grads = given(case, params)
        result = case.function(loss_or_grads, params, **hyper)
        for variable, value in result.items():
            assert value.type == variable.type, variable.name
        for name in ("r", "m", "v", "s"):
            if case.name == "mechanize":
                assert result.named_state()[f"mechanize.{name}"].dtype == np.float32
        step = pytensor.function(inputs, [], updates=result, mode="FAST_COMPILE")
        step(*[np.ones(p.get_value().shape, p.dtype) for p in params][: len(inputs)])
        assert [p.get_value().dtype for p in params] == [np.float32] * 3 + [np.float64]
        assert all(np.isfinite(p.get_value()).all() for p in params)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_state_is_named_and_checkpointed(case, path, tmp_path):
    params = make_params([(3,), (2,)])
    params[1].name = None
    inputs, loss_or_grads = given(case, params)
    with PATHS[path]():
        result = case.function(loss_or_grads, params, **case.hyper)
        twins = make_params([(3,), (2,)])
        twins[1].name = None
        base = case.hyper["rule"](given(case, twins)[1], twins)
    assert isinstance(result, updates.Updates)
    assert list(result)[:2] == list(result.params) == params
    names = [e.name for e in updates.inspect_state(result)]
    assert len(names) == len(set(names)) and None not in names
    own = [n for n in names if n not in base.named_state()]
    if case.name == "sam":
        assert own == []
    else:
        assert own == [
            "p0.mechanize.x0",
            "param1.mechanize.x0",
            *(f"mechanize.{s}" for s in "rmvs"),
            "mechanize.t",
        ]
        assert result.state[-1].name == "mechanize.t" and result.state[-1].dtype == "int64"
    assert result.config[-1]["wrapper"] == case.name
    step = pytensor.function(inputs, [], updates=result, mode="FAST_COMPILE")
    for _ in range(4):
        step(*[np.ones(s) for s in ((3,), (2,))][: len(inputs)])
    saved = {k: v.copy() for k, v in result.named_state().items()}
    updates.save_state(tmp_path / "state.npz", result)
    updates.reset_state(result)
    if case.name == "mechanize":
        assert (result.named_state()["mechanize.s"] == case.hyper["s_init"]).all()
    updates.load_state(tmp_path / "state.npz", result)
    for name, value in result.named_state().items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)


@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_partial_application_chain_and_discard_loss(case):
    """Called with hyperparameters only it awaits (loss_or_grads, params), also in a chain and
    through pm.fit's pattern; discard_loss=False returns the loss as given."""
    later = case.function(**case.hyper)
    assert isinstance(later, functools.partial) and later.func is case.function
    params = make_params([(3,)])
    loss = loss_of(params)
    direct = case.function(loss, params, **case.hyper)
    assert [v.name for v in later(loss, params)] == [v.name for v in direct]
    built, returned = later(loss, params, discard_loss=False)
    assert returned is loss and isinstance(built, updates.Updates)
    optimizer = updates.chain(later, updates.apply_ema(decay=0.5))
    chained = optimizer(loss, params)
    assert [c.get("wrapper", c.get("rule")) for c in chained.config][-2:] == [case.name, "apply_ema"]
    runs = []
    for build in (
        lambda p: updates.apply_ema(case.function(loss_of(p), p, **case.hyper), decay=0.5),
        lambda p: optimizer(loss_of(p), p),
    ):
        p = make_params([(3,)])
        step = pytensor.function([], [], updates=build(p), mode="FAST_COMPILE")
        for _ in range(5):
            step()
        runs.append(p[0].get_value())
    np.testing.assert_array_equal(*runs)
    assert "rule : callable" in case.function.__doc__ and "$" not in case.function.__doc__


@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_bad_arguments_are_rejected(case):
    params = make_params([(3,)])
    loss = loss_of(params)
    for name, (value, interval) in case.bad.items():
        with pytest.raises(ValueError, match=rf"^{case.name}: {name} must be {interval}, got"):
            case.function(loss, params, **{**case.hyper, name: value})
        with pytest.raises(ValueError, match=rf"^{case.name}: {name} must be "):
            case.function(**{**case.hyper, name: value})  # already when partially applied
    hyper = {k: v for k, v in case.hyper.items() if k != "rule"}
    with pytest.raises(TypeError, match=rf"^{case.name}: rule is missing; give the base rule"):
        case.function(**hyper)
    with pytest.raises(TypeError, match=rf"^{case.name}: rule must be a callable .* got str"):
        case.function(loss, params, rule="adam")
    with pytest.raises(
        TypeError, match=rf"^{case.name}: got an unexpected keyword argument 'base_optimizer'"
    ):
        case.function(loss, params, base_optimizer=updates.sgd)
    with pytest.raises(ValueError, match=rf"^{case.name}: params\[0\] .* expected a shared variable"):
        case.function([pt.vector("g")], [pt.vector("w")], **case.hyper)


# -- SAM ------------------------------------------------------------------------------------------


def test_sam_refuses_gradients_only_naming_the_argument():
    params = make_params([(3,)])
    message = r"^sam: needs the scalar loss as loss_or_grads .* got a list of gradients"
    with pytest.raises(TypeError, match=message):
        updates.sam([pt.vector("g")], params, rule=updates.sgd())
    with pytest.raises(TypeError, match=message):
        updates.sam(rule=updates.sgd(), rho=0.2)([pt.vector("g")], params)
    with pytest.raises(TypeError, match=message):  # a transform before it hands it gradients
        updates.chain(updates.clip_by_global_norm(max_norm=1.0), updates.sam(rule=updates.sgd()))(
            loss_of(params), params
        )


def _run(build, steps=5, shapes=((3,), (2, 2))):
    params = make_params(list(shapes))
    step = pytensor.function([], [], updates=build(loss_of(params), params), mode="FAST_COMPILE")
    for _ in range(steps):
        step()
    return [p.get_value() for p in params]


def test_sam_with_rho_zero_is_the_base_rule_and_transforms_go_inside_the_base_chain():
    adam = updates.adam(learning_rate=0.1)
    sharp = _run(lambda loss, p: updates.sam(loss, p, rule=adam, rho=0.0))
    for a, b in zip(sharp, _run(lambda loss, p: adam(loss, p))):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    clipped = updates.chain(updates.clip_by_global_norm(max_norm=0.1), updates.sgd(learning_rate=0.5))
    by_hand = _run(
        lambda loss, p: updates.sgd(
            updates.clip_by_global_norm(_sam_gradient(loss, p, 0.2), max_norm=0.1), p, learning_rate=0.5
        )
    )
    for a, b in zip(_run(lambda loss, p: updates.sam(loss, p, rule=clipped, rho=0.2)), by_hand):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def _sam_gradient(loss, params, rho):
    """SAM's gradient built by hand: the loss written again at the perturbed params."""
    grads = pytensor.grad(loss, params)
    norm = pt.sqrt(sum(pt.sum(g**2) for g in grads))
    perturbed = [p + rho * g / norm for p, g in zip(params, grads)]
    return [pt.grad(loss_of_values(perturbed, params), q) for q in perturbed]


def loss_of_values(values, params):
    return sum(pt.sum(0.5 * a * v**2 + 0.025 * v**4) for v, a in zip(values, curvatures(params)))


def test_sam_on_a_zero_gradient_does_not_perturb():
    """optax's normalize divides by the zero norm (NaN params); here the perturbation is 0."""
    w = pytensor.shared(np.zeros(3), name="w")
    step = pytensor.function(
        [], [], updates=updates.sam((w**2).sum(), [w], rule=updates.sgd(learning_rate=0.1))
    )
    step()
    np.testing.assert_array_equal(w.get_value(), np.zeros(3))


def test_sam_schedule_of_rho_counts_its_steps():
    w = pytensor.shared(np.array([3.0, 4.0]), name="w")
    result = updates.sam(
        (w**2).sum(), [w], rule=updates.sgd(learning_rate=0.1), rho=updates.linear_warmup(1.0, 2)
    )
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    step()  # rho = 0: plain sgd
    np.testing.assert_allclose(w.get_value(), [2.4, 3.2])
    step()  # rho = 0.5: the gradient at w (1 + 0.5 * 2 / |2 w|) = 1.125 w is 2.25 w
    np.testing.assert_allclose(w.get_value(), 0.775 * np.array([2.4, 3.2]))
    assert updates.inspect_state(result).steps == {"sam.t": 2}


# -- Mechanic -------------------------------------------------------------------------------------


def test_mechanize_starts_from_the_params_of_its_first_call_and_after_a_reset():
    params = make_params([(3,)])
    result = updates.mechanize(loss_of(params), params, rule=updates.adam(learning_rate=1.0))
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    params[0].set_value(np.array([1.0, 2.0, 3.0]))  # set after building: read on the first call
    step()
    np.testing.assert_array_equal(result.named_state()["p0.mechanize.x0"], [1.0, 2.0, 3.0])
    step()
    updates.reset_state(result)
    now = params[0].get_value()
    step()
    np.testing.assert_array_equal(result.named_state()["p0.mechanize.x0"], now)


def test_mechanize_takes_a_rule_that_needs_the_loss():
    """The base rule is given loss_or_grads as given: polyak_sgd (which needs the loss) works."""
    params = make_params([(3,)])
    result = updates.mechanize(loss_of(params), params, rule=updates.polyak_sgd(max_learning_rate=0.5))
    assert [c.get("wrapper", c.get("rule")) for c in result.config] == ["polyak_sgd", "mechanize"]
    pytensor.function([], [], updates=result, mode="FAST_COMPILE")()


@pytest.mark.parametrize("mode", ["CVM", "NUMBA", "JAX"])
@pytest.mark.parametrize("case", BASE_RULE_CASES, ids=str)
def test_backends_agree(case, mode):
    """The step compiles under each linker to the numbers of PyTensor's Python linker."""
    pytest.importorskip({"CVM": "pytensor", "NUMBA": "numba", "JAX": "jax"}[mode])
    results = []
    for m in ("FAST_COMPILE", mode):
        params = make_params([(3,), (2, 2)])
        inputs, loss_or_grads = given(case, params)
        result = case.function(loss_or_grads, params, **case.hyper)
        step = pytensor.function(inputs, [], updates=result, mode=m)
        grad = gradient_of(params)
        for _ in range(5):
            step(*([] if case.needs_loss else grad([p.get_value() for p in params])))
        results.append([p.get_value() for p in params])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)
