"""PyMC integration: ADVI fitted with optimizers from `updates` retraces PyMC's own optimizers.

Runs ``examples/pymc_advi.py`` on a small budget. PyMC pins its own PyTensor (2.38.x), so CI runs
this file in its second environment with ``UPDATES_REQUIRE_PYMC=1``: there a missing PyMC is an
error, not a skip. Elsewhere the file is skipped when PyMC is not installed.
"""

import inspect
import os
import sys
from pathlib import Path

import numpy as np
import pytensor
import pytest

if "UPDATES_REQUIRE_PYMC" in os.environ:
    try:
        import pymc as pm
    except ImportError as err:
        raise ImportError(
            f"UPDATES_REQUIRE_PYMC is set but PyMC cannot be imported ({err}); install the pymc extra"
        ) from err
else:
    pm = pytest.importorskip("pymc")

import pytensor.tensor as pt
from test_docs import mapping_rows, names_in, stated_defaults
from test_schedules import plateau_reference

import updates

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import pymc_advi

ITERATIONS = 300
SEED = 20
# Equal algorithms from the same seed: the traces agree to rounding. Observed (PyTensor 2.38.3,
# C VM, 300 iterations): bit for bit (0.0) for adam on both paths and adagrad_window on the
# multi-tensor path, 8e-17 for adagrad_window per parameter; the bound leaves room for another
# compiler's reassociation.
TOLERANCE = 1e-9
# The model's true values: intercept 1, slope 2, log(noise scale 0.5).
TRUTH = np.array([1.0, 2.0, np.log(0.5)])


@pytest.fixture(scope="module")
def model():
    return pymc_advi.regression_model()


@pytest.mark.parametrize("per_parameter", [False, True], ids=["multi-tensor", "per-parameter"])
@pytest.mark.parametrize("name", list(pymc_advi.PAIRS))
def test_advi_traces_the_same_elbo_as_pymcs_optimizer(model, name, per_parameter):
    ours, theirs = pymc_advi.PAIRS[name]
    with updates.per_parameter(per_parameter):
        with_ours = pymc_advi.fit(model, ours, ITERATIONS, SEED)
    result = pymc_advi.Comparison(name, with_ours, pymc_advi.fit(model, theirs, ITERATIONS, SEED))
    assert result.ours.loss.shape == (ITERATIONS,)
    assert result.trace_difference <= TOLERANCE, pymc_advi.report([result])
    assert result.mean_difference <= TOLERANCE and result.std_difference <= TOLERANCE
    # The fit did something: the negative ELBO fell and the posterior mean found the truth.
    assert result.ours.loss[-50:].mean() < 0.5 * result.ours.loss[:10].mean()
    np.testing.assert_allclose(result.ours.mean, TRUTH, atol=0.2)


def test_a_different_learning_rate_gives_a_different_trace(model):
    """The comparison can fail: a 1% change of the learning rate shows in the trace."""
    ours = pymc_advi.fit(model, updates.adam(learning_rate=0.0505), ITERATIONS, SEED)
    theirs = pymc_advi.fit(model, pm.adam(learning_rate=0.05), ITERATIONS, SEED)
    assert pymc_advi.Comparison("adam", ours, theirs).trace_difference > 1e3 * TOLERANCE


def test_the_pymc_optimizer_is_deterministic_given_the_seed(model):
    """Two runs of PyMC's own optimizer from one seed agree, so the seed is what makes them equal."""
    first = pymc_advi.fit(model, pm.adam(learning_rate=0.05), 50, SEED)
    second = pymc_advi.fit(model, pm.adam(learning_rate=0.05), 50, SEED)
    other_seed = pymc_advi.fit(model, pm.adam(learning_rate=0.05), 50, SEED + 1)
    np.testing.assert_array_equal(first.loss, second.loss)
    assert not np.array_equal(first.loss, other_seed.loss)


def test_a_schedule_as_learning_rate_goes_through_pm_fit(model):
    """pm.fit(obj_optimizer=updates.adam(learning_rate=cosine_decay(...))) traces the ELBO of
    PyMC's adam given the same cosine written by hand, as an expression of a counter its step
    increments (0 on the first step); a constant rate gives another trace."""
    iterations, peak, floor, length = 80, 0.05, 0.1, 50
    scheduled = updates.adam(learning_rate=updates.cosine_decay(peak, decay_steps=length, alpha=floor))
    ours = pymc_advi.fit(model, scheduled, iterations, SEED)
    counter = pytensor.shared(np.int64(0), name="t")
    fraction = pt.minimum(pt.cast(counter, "float64"), length) / length
    by_hand = peak * ((1 - floor) * 0.5 * (1 + pt.cos(np.pi * fraction)) + floor)

    def pymc_adam_on_the_cosine(grads, params):
        built = pm.adam(grads, params, learning_rate=by_hand)
        built[counter] = counter + 1
        return built

    theirs = pymc_advi.fit(model, pymc_adam_on_the_cosine, iterations, SEED)
    assert counter.get_value() == iterations
    result = pymc_advi.Comparison("adam on a cosine", ours, theirs)
    assert result.trace_difference <= TOLERANCE, pymc_advi.report([result])
    constant = pymc_advi.fit(model, updates.adam(learning_rate=peak), iterations, SEED)
    assert pymc_advi.Comparison("adam", ours, constant).trace_difference > 1e3 * TOLERANCE


def test_pm_fit_hands_gradients_so_a_plateau_without_a_loss_is_refused_by_name(model):
    """pm.fit gives its optimizer the gradients of the ELBO, not the ELBO: the rule has no loss
    for reduce_on_plateau(init_value=...) and says so while the graph is built."""
    optimizer = updates.adam(learning_rate=updates.reduce_on_plateau(init_value=0.05))
    with (
        model,
        pytest.raises(
            ValueError,
            match=r"^adam: learning_rate is reduce_on_plateau\(init_value=0.05, .* given gradients",
        ),
    ):
        pm.fit(5, method="advi", obj_optimizer=optimizer, progressbar=False)


def test_the_examples_plateau_fit_cuts_when_its_algorithm_says(model):
    """examples/pymc_advi.py's ADVI step with reduce_on_plateau built without a loss: the rate
    each iteration used is what the plateau algorithm (written from torch's documentation in
    test_schedules) gives for the -ELBO trace, cut at least once, and the fit found the truth."""
    fitted = pymc_advi.fit_on_plateau(model, 300, SEED)
    rate = pymc_advi.plateau_rate()
    expected = plateau_reference(
        fitted.loss,
        rate.init_value,
        rate.factor,
        rate.patience,
        rate.threshold,
        rate.cooldown,
        rate.min_value,
    )
    np.testing.assert_array_equal(fitted.rates, expected)
    assert fitted.rates[-1] < fitted.rates[0]
    assert fitted.loss[-50:].mean() < 0.5 * fitted.loss[:10].mean()
    np.testing.assert_allclose(fitted.mean, TRUTH, atol=0.2)


PYMC_ROWS = list(mapping_rows("PyMC's defaults"))


def test_the_docs_map_every_pymc_optimizer():
    documented = {names_in(row["PyMC"])[0].removeprefix("pm.") for row in PYMC_ROWS}
    pymc_optimizers = {name for name in pm.variational.updates.__all__ if name != "get_or_compute_grads"}
    assert documented == pymc_optimizers


@pytest.mark.parametrize("row", PYMC_ROWS, ids=[row["PyMC"] for row in PYMC_ROWS])
def test_pymc_names_take_the_same_arguments_and_defaults(row):
    """Each of PyMC's optimizers has its namesake here, taking PyMC's arguments in PyMC's order
    with PyMC's defaults (as the docs' table says), then possibly more keyword arguments (whose
    defaults give PyMC's rule: rmsprop's momentum and centered)."""
    theirs = getattr(pm, names_in(row["PyMC"])[0].removeprefix("pm."))
    ours = getattr(updates, names_in(row["here"])[0])

    def defaults(function):
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.default) for p in parameters if p.name != "clear_nan"]

    assert defaults(ours)[: len(defaults(theirs))] == defaults(theirs)
    stated = stated_defaults(row["PyMC's defaults"])
    assert stated and stated.items() <= dict(defaults(theirs)).items()


def test_lbfgs_reaches_scipys_map_of_a_pymc_model(model):
    """The model's log-probability (without the transforms' Jacobian, as find_MAP), its values as
    shared variables: L-BFGS with its line search lands where scipy's L-BFGS-B does (find_MAP)."""
    from pytensor.graph.replace import clone_replace

    start = model.initial_point()
    values = {v: pm.pytensorf.floatX(start[v.name]) for v in model.value_vars}
    shared = {
        v: pytensor.shared(np.asarray(value, dtype="float64"), name=v.name) for v, value in values.items()
    }
    loss = -clone_replace(model.logp(jacobian=False), shared)  # as find_MAP: no Jacobian term
    step = pytensor.function(
        [], loss, updates=updates.lbfgs(loss, list(shared.values()), line_search="armijo")
    )
    losses = [float(step()) for _ in range(100)]
    assert np.all(np.diff(losses) <= 1e-12)
    expected = pm.find_MAP(model=model, method="L-BFGS-B", include_transformed=True, progressbar=False)
    for variable in shared.values():
        np.testing.assert_allclose(variable.get_value(), expected[variable.name], rtol=1e-5, atol=1e-6)
