"""GaLore beyond the registry's tests: the signs of the singular vectors (fixed here, and what
they change), the structural options, a non-finite gradient at a refresh. Its trajectories
against tests/reference.py run in test_rules.py, against optax (with the same signs) in
test_optax.py."""

import importlib
import types

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import updates
from updates.projected import fixed_signs, projection_shapes


def test_fixed_signs_make_the_largest_entry_positive_whatever_the_input_signs():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 3)))
    x = pt.dmatrix("x")
    fix = pytensor.function([x], fixed_signs(x), mode="FAST_COMPILE")
    fixed = fix(q)
    for j in range(3):
        assert fixed[np.argmax(np.abs(fixed[:, j])), j] > 0
    flips = np.array([-1.0, 1.0, -1.0])
    np.testing.assert_array_equal(fix(q * flips), fixed)
    np.testing.assert_array_equal(np.abs(fixed), np.abs(q))


def test_projection_shapes_take_the_smaller_side():
    assert projection_shapes((6, 4), 2) == ((6, 2), (2, 4))  # tall: left, P^T G
    assert projection_shapes((4, 6), 2) == ((6, 2), (4, 2))  # wide: right, G P
    assert projection_shapes((3, 2), 128) == ((3, 2), (2, 2))  # full rank
    assert projection_shapes((5,), 2) is None and projection_shapes((2, 2, 2), 2) is None


def test_galore_checks_its_structural_options():
    w = pytensor.shared(np.ones((3, 2)), name="w")
    with pytest.raises(ValueError, match=r"^galore: rank must be > 0, got 0"):
        updates.galore((w**2).sum(), [w], rank=0)
    with pytest.raises(TypeError, match=r"^galore: update_proj_gap must be an integer"):
        updates.galore(update_proj_gap=2.5)
    rule = updates.galore(rank=2, update_proj_gap=4)
    assert [v.name for v in rule((w**2).sum(), [w])][1:] == [
        "w.galore.projector",
        "w.galore.m",
        "w.galore.v",
        "galore.t",
    ]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_galore_non_finite_gradient_at_a_refresh_gives_nan_not_an_error(bad):
    """LAPACK refuses a matrix with a NaN or an inf; the step then goes on with a NaN projector,
    so the param turns NaN as with any other rule (for apply_if_finite or clear_nan to act)."""
    w = pytensor.shared(np.ones((3, 2)), name="w")
    g = pt.dmatrix("g")
    result = updates.galore([g], [w], rank=1, update_proj_gap=1)
    step = pytensor.function([g], [], updates=result)
    grad = np.arange(6.0).reshape(3, 2)
    grad[1, 1] = bad
    step(grad)
    assert np.isnan(w.get_value()).all() and np.isnan(result.named_state()["w.galore.projector"]).all()
    cleared = updates.galore([g], [w], rank=1, update_proj_gap=1, clear_nan=True)
    w.set_value(np.ones((3, 2)))
    if bad is np.nan:
        pytensor.function([g], [], updates=cleared)(grad)
        assert np.isfinite(w.get_value()).all()


# -- what the signs change: optax with another sign convention ---------------------------------------

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

SHAPES = [(4, 3), (3, 5), (5,)]


class _FirstEntryPositiveJnp(types.ModuleType):
    """jax.numpy for optax's galore module: the SVD in float64 (not optax's float32), each
    singular vector of the projected side signed so that its *first* entry is positive (another
    convention than updates.galore's largest entry: the two agree on some vectors, not others)."""

    float32 = jax.numpy.float64

    def __getattr__(self, name):
        return getattr(jax.numpy, name)

    class linalg:  # stands for the module jnp.linalg
        @staticmethod
        def svd(x, full_matrices=True):
            u, s, vt = jax.numpy.linalg.svd(x, full_matrices=full_matrices)
            side = u if x.shape[0] >= x.shape[1] else vt.T
            signs = jax.numpy.where(side[0] >= 0, 1.0, -1.0).astype(u.dtype)
            return u * signs, s, vt * signs[:, None]


def _run_both(monkeypatch, update_proj_gap, steps=30):
    """This library's galore and optax's with the first-entry convention on the same gradients:
    the largest relative difference of the params at each step, and both states at the end."""
    module = importlib.import_module("optax.contrib._galore")
    monkeypatch.setattr(module, "jnp", _FirstEntryPositiveJnp("jnp"))
    rng = np.random.default_rng(5)
    start = [rng.normal(size=shape) for shape in SHAPES]
    stream = [[rng.normal(size=shape) for shape in SHAPES] for _ in range(steps)]
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = updates.galore(grads, params, 0.05, rank=2, update_proj_gap=update_proj_gap)
    step = pytensor.function(grads, [], updates=result)
    differences = []
    with jax.enable_x64(True):
        transformation = optax.contrib.galore(0.05, rank=2, update_proj_gap=update_proj_gap)
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        update = jax.jit(transformation.update)
        for g in stream:
            u, state = update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, u)
            step(*g)
            differences.append(
                max(float(np.max(np.abs(p.get_value() - w) / np.abs(w))) for p, w in zip(params, theirs))
            )
    return differences, result.named_state(), state[0]


def test_galore_signs_do_not_matter_until_the_projector_is_refreshed(monkeypatch):
    """P N is unchanged when a column of P and the matching coordinate of R, m (and so N) flip
    together: with one projector for the whole run, other signs give the same params, and the
    same state up to those flips."""
    differences, ours, theirs = _run_both(monkeypatch, update_proj_gap=100)
    assert max(differences) < 1e-12
    adam = theirs.base_optimizer_state
    flipped = 0
    for i, left in ((0, True), (1, False)):
        projector, theirs_projector = ours[f"p{i}.galore.projector"], np.asarray(theirs.projector[i])
        signs = np.sign(np.sum(projector * theirs_projector, axis=0))  # +-1 per column
        flipped += int((signs < 0).sum())
        np.testing.assert_allclose(projector, theirs_projector * signs, rtol=1e-12, atol=1e-15)
        flip = signs[:, None] if left else signs  # the rows (left) or the columns (right) of m
        np.testing.assert_allclose(ours[f"p{i}.galore.m"], np.asarray(adam.mu[i]) * flip, rtol=1e-12)
        np.testing.assert_allclose(ours[f"p{i}.galore.v"], adam.nu[i], rtol=1e-12)
    assert flipped, "the two conventions chose the same signs: the test shows nothing"


def test_galore_signs_matter_from_the_second_projector_on(monkeypatch):
    """At a refresh the moments, in the old projector's coordinates, meet the new projector: a
    vector whose sign changed relative to the previous projector's (the conventions disagree on
    it at one refresh, agree at the other) misaligns them. Hence the signs fixed here."""
    differences, _, _ = _run_both(monkeypatch, update_proj_gap=3)
    assert max(differences[:3]) < 1e-12  # the first projector
    assert max(differences[3:]) > 1e-3  # from the second on, the trajectories part
