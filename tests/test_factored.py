"""SM3 beyond the registry's tests: its accumulators' shapes for tensors of any rank, a scalar
param (which optax's scale_by_sm3 refuses), the paper's 0/0 = 0, and a NaN that propagates (where
optax's ``> 0`` test turns it into a silent 0). Its trajectories against tests/reference.py run
in test_rules.py, against optax in test_optax.py."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import REFERENCES

import updates


def test_sm3_keeps_one_accumulator_per_slice_of_each_axis():
    w = pytensor.shared(np.ones((2, 3, 4)), name="w")
    state = updates.sm3((w**2).sum(), [w]).named_state()
    assert {name: value.shape for name, value in state.items()} == {
        "w.sm3.mu_0": (2, 1, 1),
        "w.sm3.mu_1": (1, 3, 1),
        "w.sm3.mu_2": (1, 1, 4),
        "w.sm3.nu": (2, 3, 4),
    }


@pytest.mark.parametrize("shape", [(), (1, 3), (2, 3, 4)])
def test_sm3_matches_the_reference_on_scalars_and_tensors(shape):
    rng = np.random.default_rng(0)
    w = pytensor.shared(rng.normal(size=shape), name="w")
    g = pt.tensor("g", dtype="float64", shape=shape)
    step = pytensor.function([g], [], updates=updates.sm3([g], [w], 0.05, momentum=0.7), mode="FAST_COMPILE")
    reference = REFERENCES["sm3"]([w.get_value()], learning_rate=0.05, momentum=0.7)
    for _ in range(20):
        grad = rng.normal(size=shape)
        (want,) = reference([grad])
        step(grad)
        np.testing.assert_allclose(w.get_value(), want, rtol=1e-13)


def test_sm3_zero_gradient_where_the_accumulator_is_zero_does_not_move():
    w = pytensor.shared(np.ones((2, 2)), name="w")
    g = pt.dmatrix("g")
    result = updates.sm3([g], [w])
    step = pytensor.function([g], [], updates=result, mode="FAST_COMPILE")
    step(np.zeros((2, 2)))  # 0/0 = 0
    np.testing.assert_array_equal(w.get_value(), np.ones((2, 2)))
    step(np.array([[0.0, 1.0], [0.0, 0.0]]))
    # the slices through (0, 1) saw 1, the others' accumulators are 0 or 1: only (0, 1) moves
    assert w.get_value()[0, 1] < 1 and (w.get_value().ravel()[[0, 2, 3]] == 1).all()


def test_sm3_propagates_a_nan_gradient():
    w = pytensor.shared(np.ones((2, 3)), name="w")
    g = pt.dmatrix("g")
    step = pytensor.function([g], [], updates=updates.sm3([g], [w]), mode="FAST_COMPILE")
    grad = np.ones((2, 3))
    grad[1, 2] = np.nan
    step(grad)
    assert np.isnan(w.get_value()[1, 2]) and np.isfinite(w.get_value()[0]).all()
