"""Sophia: the Hessian-diagonal estimate (Hutchinson's, random signs) built inside the step from
the loss; the trajectory against the NumPy reference with the exact Hessian-vector products of
the same signs, the dtype kept, the state named, the loss required, the linkers agreeing. The
live comparison with optax (its estimator fed the same signs) is in test_optax.py."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import hutchinson_signs
from reference import sophia as sophia_reference

import updates

SHAPES = [(3, 4), (5,), (), (1, 3)]
HYPER = {
    "clipped": dict(learning_rate=0.05, beta2=0.9, gamma=0.5, weight_decay=0.1, update_interval=3, seed=7),
    "unclipped": dict(learning_rate=0.02, epsilon=0.5, gamma=0.5, clip_threshold=None, update_interval=1),
    "defaults": dict(),
}


def problem(dtype, seed=2):
    """Params (one broadcastable) and a loss with a Hessian that is not diagonal:
    sum 0.5 a p**2 + 0.025 p**4 + 0.5 c (sum <b, p>)**2, so H = diag(a + 0.3 p**2) + c b b^T."""
    rng = np.random.default_rng(seed)
    params = [
        pytensor.shared(
            rng.normal(size=s).astype(dtype), name=f"p{i}", shape=tuple(1 if n == 1 else None for n in s)
        )
        for i, s in enumerate(SHAPES)
    ]
    a = [rng.uniform(0.5, 2.0, size=s).astype(dtype) for s in SHAPES]
    b = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    c = 0.3
    loss = sum(pt.sum(0.5 * ai * p**2 + 0.025 * p**4) for p, ai in zip(params, a))
    loss = loss + 0.5 * c * sum(pt.sum(bi * p) for p, bi in zip(params, b)) ** 2

    def gradients(ps):
        coupling = c * sum(np.sum(bi * p) for p, bi in zip(ps, b))
        return [ai * p + 0.1 * p**3 + coupling * bi for p, ai, bi in zip(ps, a, b)]

    def estimates(ps, seed, step):
        signs = [hutchinson_signs(seed, i, step, p.shape).astype(p.dtype) for i, p in enumerate(ps)]
        coupling = c * sum(np.sum(bi * u) for u, bi in zip(signs, b))
        return [u * ((ai + 0.3 * p**2) * u + coupling * bi) for u, p, ai, bi in zip(signs, ps, a, b)]

    return params, loss, gradients, estimates


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", HYPER)
def test_matches_the_reference_with_the_exact_hessian(name, dtype):
    hyper = HYPER[name]
    params, loss, gradients, estimates = problem(dtype)
    result = updates.sophia(loss, params, **hyper)
    assert all(p.type.is_super(result[p].type) for p in params)  # the dtype kept
    step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
    reference_hyper = {k: v for k, v in hyper.items() if k != "seed"}
    expected = sophia_reference([p.get_value() for p in params], **reference_hyper)
    tol = dict(rtol=2e-4, atol=1e-6) if dtype == "float32" else dict(rtol=1e-10, atol=1e-13)
    start = [p.get_value() for p in params]
    for t in range(1, 31):
        values = [p.get_value() for p in params]
        want = expected(gradients(values), estimates(values, hyper.get("seed", 0), t))
        step()
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.get_value(), w, **tol, err_msg=f"step {t}")
            p.set_value(w)  # float32: keep both on one path
    state = result.named_state()
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(state[f"p{i}.sophia.m"], expected.state[i]["m"], **tol)
        np.testing.assert_allclose(state[f"p{i}.sophia.nu"], expected.state[i]["h"], **tol)
    assert not np.allclose(params[0].get_value(), start[0]), "nothing moved"


def test_state_is_named_and_typed():
    """float32 params keep float32 state under floatX=float64, beside a float64 param."""
    with pytensor.config.change_flags(floatX="float64"):
        w = pytensor.shared(np.ones(3, dtype="float32"), name="w")
        b = pytensor.shared(np.ones((), dtype="float64"), name="b")
        result = updates.sophia(
            pt.sum(w**4) + b**4 + pt.sum(w) * b, [w, b], learning_rate=0.1, update_interval=1
        )
        for variable, value in result.items():
            assert value.type == variable.type, variable.name
        step = pytensor.function([], [], updates=result, mode="FAST_COMPILE")
        step()
        step()
    named = result.named_state()
    assert list(named) == ["w.sophia.m", "w.sophia.nu", "b.sophia.m", "b.sophia.nu", "sophia.t"]
    assert named["w.sophia.nu"].dtype == np.float32 and named["b.sophia.nu"].dtype == np.float64
    assert w.get_value().dtype == np.float32 and np.all(named["w.sophia.nu"] != 0)


def test_needs_the_loss_and_checks_its_arguments():
    w = pytensor.shared(np.ones(3), name="w")
    with pytest.raises(TypeError, match=r"^sophia: needs the scalar loss .* got a list of gradients"):
        updates.sophia([pt.vector("g")], [w])
    with pytest.raises(TypeError, match=r"^sophia: needs the scalar loss .* got a list of gradients"):
        updates.sophia(gamma=0.1)([pt.vector("g")], [w])
    with pytest.raises(ValueError, match=r"^sophia: update_interval must be > 0, got 0"):
        updates.sophia(update_interval=0)
    with pytest.raises(TypeError, match=r"^sophia: update_interval must be an integer, got float"):
        updates.sophia(update_interval=2.0)
    with pytest.raises(ValueError, match=r"^sophia: seed must be in \[0, 2147483647\), got -1"):
        updates.sophia(seed=-1)
    with pytest.raises(ValueError, match=r"^sophia: clip_threshold must be > 0, got 0.0"):
        updates.sophia(pt.sum(w**2), [w], clip_threshold=0.0)
    with pytest.raises(ValueError, match=r"^sophia: epsilon must be > 0, got 0"):
        updates.sophia(epsilon=0)


def test_partial_application_seeds_and_linkers():
    """A bound rule builds the step of a direct call; the C VM (lazy: the Hessian-vector products
    on refreshing steps only) and the default linker (Numba) give the same trajectory; another
    seed draws other signs."""
    hyper = dict(learning_rate=0.05, gamma=0.5, update_interval=2, seed=4)
    runs = {}
    for name, build, mode in [
        ("partial", lambda loss, ps: updates.sophia(**hyper)(loss, ps), "FAST_COMPILE"),
        ("cvm", lambda loss, ps: updates.sophia(loss, ps, **hyper), pytensor.compile.mode.Mode(linker="cvm")),
        ("default", lambda loss, ps: updates.sophia(loss, ps, **hyper), None),
        ("seed 5", lambda loss, ps: updates.sophia(loss, ps, **{**hyper, "seed": 5}), "FAST_COMPILE"),
    ]:
        params, loss, _, _ = problem("float64")
        step = pytensor.function([], [], updates=build(loss, params), mode=mode)
        for _ in range(6):
            step()
        runs[name] = [p.get_value() for p in params]
    for name in ("cvm", "default"):
        for ours, theirs in zip(runs[name], runs["partial"]):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14, err_msg=name)
    assert not all(np.allclose(a, b) for a, b in zip(runs["seed 5"], runs["partial"]))
