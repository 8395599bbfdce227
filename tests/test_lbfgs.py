"""L-BFGS in the compiled step: torch.optim.LBFGS's trajectory step for step (computed live),
full-batch convergence with the in-graph line search, state checkpointed like every rule's."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode

import updates

PY = Mode(linker="py", optimizer="fast_compile")  # tiny graphs: compiles fastest


def logistic_problem(seed: int = 0):
    """A softmax regression on fixed random data: (loss, params, data)."""
    rng = np.random.default_rng(seed)
    x, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    w = pytensor.shared(rng.normal(size=(5, 3)) * 0.1, name="W")
    b = pytensor.shared(np.zeros(3), name="b")
    logits = pt.as_tensor_variable(x) @ w + b
    log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
    loss = -log_probs[np.arange(40), labels].mean() + 0.01 * (w**2).sum()
    return loss, [w, b], (x, labels)


def torch_trajectory(params, data, steps, **options):
    torch = pytest.importorskip("torch")
    x, labels = (torch.tensor(a) for a in data)
    w, b = (torch.tensor(p.get_value(), requires_grad=True) for p in params)
    optimizer = torch.optim.LBFGS([w, b], max_iter=1, line_search_fn=None, **options)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, labels) + 0.01 * (w**2).sum()
        loss.backward()
        return loss

    trajectory = []
    for _ in range(steps):
        optimizer.step(closure)
        trajectory.append([w.detach().numpy().copy(), b.detach().numpy().copy()])
    return trajectory


@pytest.mark.parametrize(("history_size", "lr"), [(10, 1.0), (3, 0.5)])
def test_the_trajectory_is_torch_lbfgs(history_size, lr):
    loss, params, data = logistic_problem()
    expected = torch_trajectory(params, data, 25, lr=lr, history_size=history_size)
    built = updates.lbfgs(loss, params, learning_rate=lr, history_size=history_size)
    step = pytensor.function([], loss, updates=built, mode=PY)
    for t, values in enumerate(expected, start=1):
        step()
        for p, value in zip(params, values):
            np.testing.assert_allclose(p.get_value(), value, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")


def test_default_mode_equals_the_python_linker():
    results = []
    for mode in (PY, None):
        loss, params, _ = logistic_problem()
        step = pytensor.function([], loss, updates=updates.lbfgs(loss, params, history_size=3), mode=mode)
        results.append([float(step()) for _ in range(8)] + [params[0].get_value()])
    np.testing.assert_allclose(results[0][-1], results[1][-1], rtol=1e-10)
    np.testing.assert_allclose(results[0][:-1], results[1][:-1], rtol=1e-10)


def rosenbrock(n: int):
    x = pytensor.shared(np.where(np.arange(n) % 2, 1.0, -1.2), name="x")
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(), x


def run(rule, loss, params, steps, mode=PY):
    step = pytensor.function([], loss, updates=rule(loss, params), mode=mode)
    return np.array([float(step()) for _ in range(steps)])


@pytest.mark.parametrize(("n", "steps"), [(2, 60), (100, 600)])
def test_rosenbrock_converges_where_adam_does_not_and_the_loss_never_increases(n, steps):
    """From (-1.2, 1, -1.2, ...): scipy's L-BFGS-B needs a few dozen (2-d) and some hundreds
    (100-d) iterations too; Adam after as many steps is still far."""
    loss, x = rosenbrock(n)
    losses = run(updates.lbfgs(line_search="armijo"), loss, [x], steps, mode="FAST_COMPILE")
    assert np.all(np.diff(losses) <= 0)
    np.testing.assert_allclose(x.get_value(), np.ones(n), atol=1e-5)
    loss, x = rosenbrock(n)
    adam = run(updates.adam(learning_rate=1e-2), loss, [x], steps, mode="FAST_COMPILE")
    assert adam[-1] > 1e-2 > 1e6 * losses[-1]


def test_the_line_search_never_takes_a_step_that_increases_the_loss():
    loss, params, _ = logistic_problem(1)
    losses = run(updates.lbfgs(learning_rate=10.0, line_search="armijo"), loss, params, 30)
    assert np.all(np.diff(losses) <= 0) and losses[-1] < losses[0]


def test_state_is_named_saved_and_resumed_bit_for_bit(tmp_path):
    def build():
        loss, params, _ = logistic_problem()
        built = updates.lbfgs(loss, params, history_size=4, line_search="armijo")
        return params, built, pytensor.function([], loss, updates=built, mode=PY)

    params, built, step = build()
    names = ["lbfgs.s", "lbfgs.y", "lbfgs.rho", "lbfgs.gamma", "lbfgs.direction", "lbfgs.step_size"]
    assert list(built.named_state()) == [*names, "lbfgs.previous_grad", "lbfgs.t"]
    for _ in range(6):
        step()
    updates.save_state(tmp_path / "lbfgs.npz", built, params=True)
    for _ in range(6):
        step()
    params_again, built_again, step_again = build()
    updates.load_state(tmp_path / "lbfgs.npz", built_again, params=True)
    for _ in range(6):
        step_again()
    for a, b in zip(params, params_again):
        np.testing.assert_array_equal(a.get_value(), b.get_value())
    updates.reset_state(built_again)
    assert built_again.named_state()["lbfgs.t"] == 0 and not built_again.named_state()["lbfgs.s"].any()


def test_partial_application_and_clear_nan():
    loss, params, _ = logistic_problem()
    late = updates.lbfgs(learning_rate=0.5, clear_nan=True)
    assert callable(late) and isinstance(late(loss, params), updates.Updates)


def test_bad_input_is_refused_when_the_graph_is_built():
    loss, params, _ = logistic_problem()
    with pytest.raises(ValueError, match=r"^lbfgs: history_size must be > 0, got 0"):
        updates.lbfgs(history_size=0)
    with pytest.raises(
        ValueError, match=r"^lbfgs: line_search must be one of \(None, 'armijo'\), got 'wolfe'"
    ):
        updates.lbfgs(line_search="wolfe")
    with pytest.raises(TypeError, match=r"^lbfgs: line_search='armijo' evaluates the loss"):
        updates.lbfgs(updates.get_or_compute_grads(loss, params), params, line_search="armijo")
    single = pytensor.shared(np.zeros(2, dtype="float32"), name="s")
    with pytest.raises(ValueError, match=r"^lbfgs: all params must share one dtype"):
        updates.lbfgs(loss + single.sum(), [*params, single])


def test_clear_nan_treats_nan_as_a_zero_gradient():
    w = pytensor.shared(np.array([1.0, 2.0, 3.0]), name="w")
    g = pt.vector("g")
    steps = {
        flag: pytensor.function([g], [], updates=updates.lbfgs([g], [w], clear_nan=flag), mode=PY)
        for flag in (True, False)
    }
    start = w.get_value()
    steps[True](np.array([np.nan, 1.0, -2.0]))
    cleared = w.get_value()
    w.set_value(start)
    steps[False](np.array([0.0, 1.0, -2.0]))  # a fresh state: the same first step
    np.testing.assert_array_equal(cleared, w.get_value())
    assert np.isfinite(cleared).all() and cleared[0] == start[0]


def test_a_float32_model_stays_float32_under_float64_floatx():
    w = pytensor.shared(np.ones(3, dtype="float32"), name="w")
    with pytensor.config.change_flags(floatX="float64"):
        loss = ((w - 2) ** 2).sum()
        built = updates.lbfgs(loss, [w], line_search="armijo")
        assert all(value.type == key.type for key, value in built.items())
        pytensor.function([], loss, updates=built, mode=PY)()
    assert w.get_value().dtype == np.float32 and (w.get_value() > 1).all()
