"""norm_constraint and total_norm_constraint against tests/reference.py, types, and errors."""

import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import reference

import updates

DTYPES = ["float32", "float64"]
# (shape, norm_axes): the defaults for 2-d and 4-d, then explicit axes.
CASES = [((4, 3), None), ((3, 2, 2, 2), None), ((4, 3), (1,)), ((5,), (0,)), ((2, 3, 4), (0, 2))]
# max_norm relative to the norms of the tensor: all above the limit, all below, some of each.
LIMITS = {"above": lambda n: n.min() / 2, "below": lambda n: n.max() * 2, "mixed": np.median}


def tolerance(dtype):
    return {"rtol": 2e-6, "atol": 1e-7} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-15}


def default_axes(ndim):
    return (0,) if ndim == 2 else tuple(range(1, ndim))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("limit", LIMITS.values(), ids=LIMITS.keys())
@pytest.mark.parametrize(("shape", "norm_axes"), CASES)
def test_norm_constraint_matches_reference(shape, norm_axes, limit, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    axes = norm_axes or default_axes(len(shape))
    max_norm = float(limit(np.sqrt((x.astype(float) ** 2).sum(axis=axes))))
    got = updates.norm_constraint(pt.as_tensor(x), max_norm, norm_axes=norm_axes).eval(mode="FAST_COMPILE")
    assert got.dtype == dtype
    np.testing.assert_allclose(got, reference.norm_constraint(x, max_norm, norm_axes), **tolerance(dtype))
    assert np.all(np.sqrt((got.astype(float) ** 2).sum(axis=axes)) <= max_norm * (1 + 1e-6))


@pytest.mark.parametrize("dtypes", [["float32"] * 2, ["float64"] * 2, ["float32", "float64"]])
@pytest.mark.parametrize("factor", [0.5, 2.0], ids=["above", "below"])
def test_total_norm_constraint_matches_reference(factor, dtypes):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 4)).astype(dtypes[0]), rng.standard_normal(5).astype(dtypes[1])]
    max_norm = factor * float(np.sqrt(sum((x.astype(float) ** 2).sum() for x in xs)))
    scaled, norm = updates.total_norm_constraint([pt.as_tensor(x) for x in xs], max_norm, return_norm=True)
    got = pytensor.function([], [*scaled, norm], mode="FAST_COMPILE")()
    expected, expected_norm = reference.total_norm_constraint(xs, max_norm, return_norm=True)
    tol = tolerance("float32" if "float32" in dtypes else "float64")
    for g, e, x in zip(got, expected, xs):
        assert g.dtype == x.dtype
        np.testing.assert_allclose(g, e, **tol)
    np.testing.assert_allclose(got[-1], expected_norm, **tol)
    assert got[-1].dtype == np.result_type(*xs)


@pytest.mark.parametrize(
    "constrain",
    [
        lambda x: updates.norm_constraint(x, 1.0, epsilon=1e-7),
        lambda x: updates.total_norm_constraint([x], 1.0, epsilon=1e-7)[0],
    ],
    ids=["norm_constraint", "total_norm_constraint"],
)
def test_below_the_limit_shrinks_by_n_over_n_plus_eps(constrain):
    """Lasagne's formula also scales a tensor under the limit: norm 1e-6 gives x * 1e-6 / 1.1e-6."""
    x = np.array([[6e-7], [8e-7]])  # one column, norm 1e-6
    got = constrain(pt.as_tensor(x)).eval(mode="FAST_COMPILE")
    np.testing.assert_allclose(got, x * (1e-6 / (1e-6 + 1e-7)), rtol=1e-12)  # x * 0.909


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [1.0, np.float64(1.0), "symbolic float64"])
def test_types_kept(dtype, max_norm):
    with pytensor.config.change_flags(floatX="float64"):
        max_norm = pt.dscalar("c") if max_norm == "symbolic float64" else max_norm
        x, y = pt.tensor(dtype=dtype, shape=(3, 4)), pt.tensor(dtype=dtype, shape=(2, 3, 4))
        assert updates.norm_constraint(x, max_norm).type == x.type
        assert updates.norm_constraint(y, max_norm).type == y.type
        scaled, norm = updates.total_norm_constraint([x, y], max_norm, return_norm=True)
    assert [s.type for s in scaled] == [x.type, y.type]
    assert norm.dtype == dtype and norm.ndim == 0


def test_return_norm_false_gives_the_list():
    x = pt.as_tensor(np.array([3.0, 4.0]))
    scaled = updates.total_norm_constraint([x], 1.0, epsilon=0)
    assert isinstance(scaled, list) and len(scaled) == 1
    np.testing.assert_allclose(scaled[0].eval(mode="FAST_COMPILE"), [0.6, 0.8])


@pytest.mark.parametrize("shape", [(5,), (2,) * 6], ids=["1-d", "6-d"])
def test_no_default_norm_axes(shape):
    x = pt.tensor(dtype="float64", shape=shape)
    with pytest.raises(
        ValueError, match=rf"^norm_constraint: a {len(shape)}-d tensor has no default norm_axes"
    ):
        updates.norm_constraint(x, 1.0)


CONSTRAINTS = {
    "norm_constraint": lambda **kw: updates.norm_constraint(pt.matrix(), **kw),
    "total_norm_constraint": lambda **kw: updates.total_norm_constraint([pt.matrix()], **kw),
}


@pytest.mark.parametrize("who", CONSTRAINTS)
@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_max_norm_must_be_positive(who, max_norm):
    with pytest.raises(ValueError, match=rf"^{who}: max_norm must be > 0, got {max_norm}"):
        CONSTRAINTS[who](max_norm=max_norm)


@pytest.mark.parametrize("who", CONSTRAINTS)
def test_epsilon_must_be_non_negative(who):
    with pytest.raises(ValueError, match=rf"^{who}: epsilon must be >= 0, got -1e-07"):
        CONSTRAINTS[who](max_norm=1.0, epsilon=-1e-7)


@pytest.mark.parametrize("norm_axes", [(2,), (-3,), (0, 2), ()])
def test_norm_axes_out_of_range(norm_axes):
    with pytest.raises(
        ValueError,
        match=f"^norm_constraint: norm_axes must be axes of a 2-d tensor, got {re.escape(str(norm_axes))}",
    ):
        updates.norm_constraint(pt.matrix(), 1.0, norm_axes=norm_axes)


def test_tensor_vars_must_be_a_list():
    with pytest.raises(
        TypeError, match=r"^total_norm_constraint: tensor_vars must be a list of tensors, got Tensor"
    ):
        updates.total_norm_constraint(pt.matrix(), 1.0)


def test_tensor_vars_must_not_be_empty():
    with pytest.raises(ValueError, match=r"^total_norm_constraint: tensor_vars is empty"):
        updates.total_norm_constraint([], 1.0)
