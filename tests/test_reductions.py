"""AllFinite, SumOfSquares and FusedSums: one node over many tensors, in every linker, equal to NumPy."""

from types import SimpleNamespace

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import updates
from updates.fused import FusedStep, ancestors
from updates.reductions import AllFinite, FusedSums, SumOfSquares, Terms, all_finite, fused_sums, l2_norm

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


def _terms(h, param, grad, s):
    """Terms as a rule's ``sums`` gives them: an inner product, a norm, a term of the scalar only."""
    return grad * (s - param), abs(h.rate * s + grad), h.rate + 0 * param


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_sums_are_one_node_that_agrees_with_numpy(mode, dtype):
    if mode in NEEDS:
        pytest.importorskip(NEEDS[mode])
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (5,), (), (2, 2, 2)]
    values = [rng.normal(size=shape).astype(dtype) for shape in shapes]
    params = [pytensor.shared(x, name=f"p{i}") for i, x in enumerate(values)]
    grads = [pt.tensor(f"g{i}", dtype=dtype, shape=shape) for i, shape in enumerate(shapes)]
    slot = pytensor.shared(rng.normal(size=sum(x.size for x in values)).astype(dtype), name="s")
    h = SimpleNamespace(rate=pt.scalar("rate", dtype=dtype))
    sums = fused_sums(Terms("test", _terms, clear_nan=True), dtype, params, grads, [slot], h)
    f = pytensor.function([*grads, h.rate], sums, mode=mode)
    kinds = {type(n.op) for n in f.maker.fgraph.apply_nodes}
    if mode == "FAST_COMPILE":
        assert FusedSums in kinds
    elif mode in ("CVM", "NUMBA"):  # lowered to the backend's loops
        assert FusedSums not in kinds
    g = [rng.normal(size=shape).astype(dtype) for shape in shapes]
    g[1][2] = np.nan  # cleared: 0
    rate = np.asarray(0.5, dtype)
    got, expected = f(*g, rate), np.zeros(3)
    pieces = np.split(slot.get_value(), np.cumsum([x.size for x in values])[:-1])
    for x, gradient, piece in zip(values, g, pieces):
        gradient = np.nan_to_num(gradient.ravel(), nan=0.0)
        terms = gradient * (piece - x.ravel()), abs(rate * piece + gradient), np.full(x.size, rate)
        expected += [np.sum(t, dtype="float64") for t in terms]
    assert [x.dtype for x in got] == [np.dtype(dtype)] * 3
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=1e-13 if dtype == "float64" else 1e-6)


def test_a_rule_with_sums_adds_one_node_per_dtype_and_sums_per_parameter_for_mixed_dtypes():
    """Prodigy's sums: one FusedSums beside its FusedStep; with params of two dtypes (each dtype's
    sums cover all the params), the per-parameter sums."""

    def nodes(dtypes):
        params = [pytensor.shared(np.ones(3, dtype=d), name=f"p{i}") for i, d in enumerate(dtypes)]
        result = updates.prodigy(sum((p**2).sum() for p in params), params)
        owners = {x.owner for x in ancestors(list(result.values())) if x.owner is not None}
        return [type(node.op) for node in owners]

    same = nodes(["float64"] * 3)
    assert same.count(FusedSums) == 1 and same.count(FusedStep) == 1
    mixed = nodes(["float64", "float32", "float64"])
    assert FusedSums not in mixed and FusedStep not in mixed
