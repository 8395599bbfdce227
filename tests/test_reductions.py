"""AllFinite and SumOfSquares: one node over many tensors, in every linker, equal to NumPy."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from updates.reductions import AllFinite, SumOfSquares, all_finite, l2_norm

MODES = ["FAST_COMPILE", "CVM", "NUMBA", "JAX", "PYTORCH"]
NEEDS = {"NUMBA": "numba", "JAX": "jax", "PYTORCH": "torch"}


def cases(small):
    """(float64 vector, float32 matrix given strided, a scalar of dtype ``small``) and whether all
    are finite."""
    base = [np.arange(5.0), np.ones((6, 3), dtype="float32")[::2], np.array(2.0, dtype=small)]
    yield base, True
    for index, position, bad in [(0, 3, np.nan), (0, 0, -np.inf), (1, (2, 1), np.inf), (2, (), np.nan)]:
        values = [np.array(x, copy=True) for x in base]
        values[index][position] = bad
        yield values, False
    yield [np.zeros(0), np.ones((0, 3), dtype="float32"), np.array(1.0, dtype=small)], True


@pytest.mark.parametrize("mode", MODES)
def test_all_finite_is_one_node_that_agrees_with_numpy(mode):
    if mode in NEEDS:
        pytest.importorskip(NEEDS[mode])
    small = "float32" if mode == "NUMBA" else "float16"  # Numba has no float16 (C: perform runs)
    x, y, z = pt.dvector("x"), pt.fmatrix("y"), pt.tensor("z", dtype=small, shape=())
    count = pt.lscalar("count")  # integers are left out: always finite
    check = pytensor.function(
        [x, y, z, count], all_finite([x, y, z, count]), mode=mode, on_unused_input="ignore"
    )
    if mode not in ("JAX", "PYTORCH"):  # the tracing linkers trace its expanded graph instead
        assert [type(n.op) for n in check.maker.fgraph.apply_nodes] == [AllFinite]
    for values, expected in cases(small):
        assert bool(check(*values, 3)) is expected
        assert bool(check(*values, 3)) is all(np.isfinite(v).all() for v in values)


def test_all_finite_of_nothing_checkable_is_true_and_inputs_are_untouched():
    assert all_finite([pt.lscalar("n")]).data
    values = np.array([1.0, np.nan])
    x = pt.dvector("x")
    f = pytensor.function([x], all_finite([x]), mode="CVM")
    assert not f(values) and np.isnan(values[1]) and values[0] == 1.0


def test_gradients_pass_around_the_check():
    """Used as a switch's condition (apply_if_finite's gate), it blocks no gradient."""
    w = pytensor.shared(np.array([1.0, 2.0]), name="w")
    loss = pt.switch(all_finite([w]), (w**2).sum(), 0.0)
    np.testing.assert_array_equal(pytensor.grad(loss, w).eval(), [2.0, 4.0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtypes", [("float64", "float32"), ("float32", "float32")], ids=str)
def test_the_norm_of_many_tensors_is_one_node_that_agrees_with_numpy(mode, dtypes):
    """Over a vector, a strided matrix and a scalar: one node, the norm NumPy gives (each
    tensor's squares summed in float64, as PyTensor's Sum does), in the common dtype; its
    gradient is x / norm."""
    if mode in NEEDS:
        pytest.importorskip(NEEDS[mode])
    first, second = dtypes
    x, y, z = (
        pt.tensor("x", dtype=first, shape=(None,)),
        pt.matrix("y", dtype=second),
        pt.scalar("z", dtype=second),
    )
    norm = l2_norm([x, y, z])
    f = pytensor.function([x, y, z], [norm, *pytensor.grad(norm, [x, y, z])], mode=mode)
    if mode not in ("JAX", "PYTORCH"):
        assert SumOfSquares in {type(n.op) for n in f.maker.fgraph.apply_nodes}
    rng = np.random.default_rng(0)
    values = [
        rng.normal(size=7).astype(first),
        rng.normal(size=(6, 3)).astype(second)[::2],
        np.array(-3.0, second),
    ]
    expected = np.sqrt(sum(float(np.sum(np.square(v), dtype="float64").astype(v.dtype)) for v in values))
    got, *grads = f(*values)
    rtol = 1e-6 if "float32" in (first, second, got.dtype) else 1e-14
    assert got.dtype == np.result_type(first, second)
    np.testing.assert_allclose(got, expected, rtol=rtol)
    for g, v in zip(grads, values):
        assert g.dtype == v.dtype
        np.testing.assert_allclose(g, v / expected, rtol=rtol)
