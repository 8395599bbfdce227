"""L-BFGS in the compiled step: torch.optim.LBFGS's trajectory step for step (computed live), with
and without its strong Wolfe line search; the Armijo ladder step for step against a NumPy
reference; the Numba kernel equal to the graph; full-batch convergence; state checkpointed like
every rule's."""

from __future__ import annotations

import collections
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import reference
from pytensor.compile.mode import Mode, get_default_mode
from pytensor.graph.rewriting.db import RewriteDatabaseQuery

import updates

PY = Mode(linker="py", optimizer="fast_compile")  # tiny graphs: compiles fastest
# the kernel Numba runs, run by its ``perform`` in Python: the rewrite asked for by its tag
KERNEL = Mode(linker="py", optimizer=RewriteDatabaseQuery(include=["fast_compile", "numba"]))
lbfgs_module = importlib.import_module("updates.lbfgs")  # the module (updates.lbfgs is the function)


def kernel_mode() -> Mode:
    """:data:`KERNEL`, skipping where PyTensor has no Numba kernel (2.38)."""
    lbfgs_module._register_kernel()
    if not lbfgs_module._KERNEL[0]:
        pytest.skip("PyTensor 2.38: no Numba kernel")
    return KERNEL


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


# -- problems written twice, in PyTensor and in torch (or NumPy), from the same start


@dataclass(frozen=True)
class Problem:
    """A loss of params from a fixed start: ``build()`` makes fresh shared params and the loss;
    ``torch_loss(tensors)`` and ``numpy_loss(x)`` (all params raveled end to end) are the same."""

    start: tuple
    build_loss: Callable
    torch_loss: Callable
    numpy_loss: Callable | None = None
    numpy_grad: Callable | None = None

    def build(self, dtype: str = "float64"):
        params = [pytensor.shared(np.array(x, dtype=dtype), name=f"p{i}") for i, x in enumerate(self.start)]
        return self.build_loss(*params), params


def _rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _rosenbrock_grad(x):
    g, r = np.zeros_like(x), x[1:] - x[:-1] ** 2
    g[1:] += 200 * r
    g[:-1] += -400 * r * x[:-1] - 2 * (1 - x[:-1])
    return g


def rosenbrock(n: int) -> Problem:
    """From the classic start (-1.2, 1, -1.2, ...)."""
    start = (np.where(np.arange(n) % 2, 1.0, -1.2),)
    return Problem(start, _rosenbrock, lambda ps: _rosenbrock(ps[0]), _rosenbrock, _rosenbrock_grad)


def _least_squares_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 5))
    x[:, 0] *= 30  # condition number of x'x about 900 times larger
    return x, rng.normal(size=50)


def least_squares(seed: int = 0) -> Problem:
    """0.5 mean((X w - y)^2), one column of X scaled by 30: ill-conditioned, from w = 0."""
    x, y = _least_squares_data(seed)

    def torch_loss(ps):
        import torch

        return 0.5 * ((torch.tensor(x) @ ps[0] - torch.tensor(y)) ** 2).mean()

    return Problem(
        (np.zeros(5),),
        lambda w: 0.5 * ((pt.as_tensor_variable(x) @ w - y) ** 2).mean(),
        torch_loss,
        lambda w: 0.5 * np.mean((x @ w - y) ** 2),
        lambda w: x.T @ (x @ w - y) / len(y),
    )


def logistic() -> Problem:
    """The softmax regression above, two params of different shapes."""
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)

    def build(w, b):
        logits = pt.as_tensor_variable(x.astype(w.dtype)) @ w + b
        log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
        return -log_probs[np.arange(40), labels].mean() + 0.01 * (w**2).sum()

    def torch_loss(ps):
        import torch

        w, b = ps
        return (
            torch.nn.functional.cross_entropy(torch.tensor(x, dtype=w.dtype) @ w + b, torch.tensor(labels))
            + 0.01 * (w**2).sum()
        )

    return Problem((rng.normal(size=(5, 3)) * 0.1, np.zeros(3)), build, torch_loss)


def absolute() -> Problem:
    """sum |x|: no point meets the curvature condition, the zoom narrows the bracket."""
    return Problem((np.array([-1.2, 1.0]),), lambda x: pt.abs(x).sum(), lambda ps: ps[0].abs().sum())


def steep() -> Problem:
    """A parabola that steepens past 0.5: long trial steps, zooms near the bracket's ends."""

    def torch_loss(ps):
        import torch

        return (ps[0] ** 2).sum() + 10 * torch.relu(ps[0] - 0.5).pow(2).sum()

    return Problem(
        (np.array([-1.2, 1.0]),),
        lambda x: (x**2).sum() + 10 * (pt.maximum(x - 0.5, 0) ** 2).sum(),
        torch_loss,
    )


PROBLEMS = {
    "rosenbrock 2-d": rosenbrock(2),
    "rosenbrock 10-d": rosenbrock(10),
    "least squares": least_squares(),
    "logistic": logistic(),
    "absolute": absolute(),
    "steep": steep(),
}


def torch_strong_wolfe(problem: Problem, steps: int, dtype: str = "float64", max_ls: int = 25, **options):
    """torch's LBFGS with its strong Wolfe search, one ``max_iter=1`` step per call: the params
    after each, and which interpolations the search made (``torch.optim.lbfgs._cubic_interpolate``
    called with bounds: extrapolating in the bracketing phase; without: zooming)."""
    torch = pytest.importorskip("torch")
    import torch.optim.lbfgs as torch_lbfgs

    tensors = [torch.tensor(np.array(x, dtype=dtype), requires_grad=True) for x in problem.start]
    optimizer = torch.optim.LBFGS(
        tensors, max_iter=1, max_eval=1 + max_ls, line_search_fn="strong_wolfe", **options
    )

    def closure():
        optimizer.zero_grad()
        loss = problem.torch_loss(tensors)
        loss.backward()
        return loss

    kinds = collections.Counter()
    interpolate = torch_lbfgs._cubic_interpolate

    def counted(*args, bounds=None):
        kinds["extrapolate" if bounds is not None else "zoom"] += 1
        return interpolate(*args, bounds=bounds)

    trajectory = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_lbfgs, "_cubic_interpolate", counted)
        for _ in range(steps):
            optimizer.step(closure)
            trajectory.append([t.detach().numpy().copy() for t in tensors])
    return trajectory, kinds


TORCH_OPTIONS = {
    "learning_rate": "lr",
    "history_size": "history_size",
    "tolerance_change": "tolerance_change",
}


@pytest.mark.parametrize(
    ("name", "steps", "options", "branches"),
    [
        ("rosenbrock 2-d", 40, {}, {"zoom"}),
        ("rosenbrock 10-d", 40, {}, {"zoom"}),
        ("least squares", 15, {}, {"extrapolate", "zoom"}),
        ("logistic", 30, {"history_size": 3}, set()),  # every first trial meets the conditions
        ("rosenbrock 2-d", 25, {"learning_rate": 0.1}, {"extrapolate", "zoom"}),  # cubics without minimum
        ("absolute", 25, {"learning_rate": 0.3}, {"extrapolate", "zoom"}),  # zooms to a narrow bracket
        ("steep", 25, {"learning_rate": 100.0, "tolerance_change": 1e-2}, {"zoom"}),  # kept off the ends
        ("rosenbrock 10-d", 30, {"max_ls": 1}, {"zoom"}),  # searches cut short: the bracket's best end
        ("logistic", 20, {"learning_rate": 3.0, "max_ls": 4}, {"zoom"}),
        ("least squares", 5, {"max_ls": 0}, set()),  # torch's default max_eval=1: a rise stalls it for good
    ],
)
@pytest.mark.parametrize("kernel", [False, True], ids=["graph", "kernel"])
def test_strong_wolfe_is_torch_step_for_step(name, steps, options, branches, kernel):
    """One call is one ``step(closure)`` of ``torch.optim.LBFGS(max_iter=1, max_eval=1 + max_ls,
    line_search_fn="strong_wolfe")``, in float64, to rounding: every branch of the search is a
    switch in the graph, so the same trial steps are evaluated in the same order; Numba's kernel
    (run here in Python) makes the same decisions as a loop."""
    mode = kernel_mode() if kernel else PY
    problem = PROBLEMS[name]
    torch_options = {"history_size": 10}  # lbfgs's default; torch's is 100
    torch_options.update((TORCH_OPTIONS[k], v) for k, v in options.items() if k in TORCH_OPTIONS)
    expected, kinds = torch_strong_wolfe(problem, steps, max_ls=options.get("max_ls", 25), **torch_options)
    assert branches <= set(kinds)  # the search went through them
    loss, params = problem.build()
    built = updates.lbfgs(loss, params, line_search="strong_wolfe", **options)
    step = pytensor.function([], loss, updates=built, mode=mode)
    assert bool(_kernel_nodes(step)) == kernel
    for t, values in enumerate(expected, start=1):
        step()
        for p, value in zip(params, values):
            scale = np.abs(value).max()  # relative to the largest entry: some cross zero
            np.testing.assert_allclose(
                p.get_value(), value, rtol=1e-8, atol=1e-8 * scale, err_msg=f"step {t}"
            )
    if options.get("max_ls") == 0:  # torch's stall, reproduced: never moved
        np.testing.assert_array_equal(params[0].get_value(), problem.start[0])


@pytest.mark.parametrize("name", ["rosenbrock 2-d", "logistic"])
def test_strong_wolfe_in_float32_follows_torch_while_rounding_allows(name):
    """In float32 torch keeps the losses in Python floats (double) and the graph in float32, and
    the rounding of the two differs: the trajectories agree closely for the first steps, then
    part (Rosenbrock's valley amplifies them); both keep float32."""
    problem = PROBLEMS[name]
    expected, _ = torch_strong_wolfe(problem, 10, dtype="float32", history_size=10)
    loss, params = problem.build("float32")
    step = pytensor.function(
        [], loss, updates=updates.lbfgs(loss, params, line_search="strong_wolfe"), mode=PY
    )
    for t, values in enumerate(expected, start=1):
        step()
        for p, value in zip(params, values):
            assert p.get_value().dtype == np.float32
            np.testing.assert_allclose(p.get_value(), value, rtol=1e-4, atol=1e-5, err_msg=f"step {t}")


# -- the Armijo ladder against the NumPy reference


@pytest.mark.parametrize(
    ("name", "steps", "armijo", "kinds", "decides"),
    [
        ("rosenbrock 2-d", 40, 1e-4, {"ladder", "parabola"}, False),
        ("rosenbrock 2-d", 40, 0.4, {"ladder", "parabola"}, True),
        ("least squares", 12, 0.3, {"parabola"}, False),  # a quadratic: the parabola's step is exact
    ],
)
@pytest.mark.parametrize("kernel", [False, True], ids=["graph", "kernel"])
def test_the_armijo_ladder_takes_the_reference_step_each_call(name, steps, armijo, kinds, decides, kernel):
    """The params and the step size of every call equal the NumPy reference's (written from the
    equations: the first ladder step meeting phi(t) <= phi(0) + a t phi'(0), refined by the
    parabola's minimum), with the graph and with Numba's kernel (run here in Python). A stricter
    constant changes the choice: the test would notice a search that accepted any decrease."""
    mode = kernel_mode() if kernel else PY
    problem = PROBLEMS[name]
    expected = reference.lbfgs(
        problem.numpy_loss, problem.numpy_grad, problem.start[0], steps, line_search="armijo", armijo=armijo
    )
    loss, params = problem.build()
    built = updates.lbfgs(loss, params, line_search="armijo", armijo=armijo)
    step = pytensor.function([], loss, updates=built, mode=mode)
    previous = params[0].get_value()
    for t, call in enumerate(expected, start=1):
        step()
        x = params[0].get_value()
        np.testing.assert_allclose(x, call["x"], rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        if call["t"]:  # the state keeps the step taken, t d (without a step: 0, or unchanged at a stop)
            taken = built.named_state()["lbfgs.step"]
            np.testing.assert_allclose(
                taken, call["x"] - previous, rtol=1e-7, atol=1e-12, err_msg=f"step {t}"
            )
        previous = x
    searches = [call for call in expected if "candidates" in call]
    ladder = {t for call in searches for t, _ in call["candidates"]}
    assert {"ladder" if call["t"] in ladder else "parabola" for call in searches if call["t"]} == kinds
    if decides:  # accepting any decrease would have led elsewhere: the condition decided
        loose = reference.lbfgs(
            problem.numpy_loss,
            problem.numpy_grad,
            problem.start[0],
            steps,
            line_search="armijo",
            armijo=1e-300,
        )
        assert any(not np.allclose(a["x"], b["x"], rtol=1e-6) for a, b in zip(loose, expected))


def test_armijo_converges_on_an_ill_conditioned_least_squares_at_least_as_fast_as_no_line_search():
    """One column of the data scaled by 30. A ladder that can only shorten the step cannot undo
    a direction scaled by the first pair (gamma near 1 / the largest curvature): it stalled at
    4.5e-3 above the optimum after 15 steps where no line search reached 7.9e-11. The parabola's
    step is the exact minimum along d of a quadratic, so the search can lengthen a step too. Both
    stop stepping once g.d > -tolerance_change, where the loss is within about
    tolerance_change / 2 of the optimum: the comparison holds to that."""
    tolerance = 1e-9  # tolerance_change
    for seed in range(3):
        x, y = _least_squares_data(seed)
        best = 0.5 * np.mean((x @ np.linalg.lstsq(x, y, rcond=None)[0] - y) ** 2)
        gaps = {}
        for line_search in (None, "armijo"):
            loss, params = least_squares(seed).build()
            built = updates.lbfgs(loss, params, line_search=line_search, tolerance_change=tolerance)
            step = pytensor.function([], loss, updates=built, mode=PY)
            gaps[line_search] = np.array([float(step()) for _ in range(16)])[1:] - best
        assert np.all(gaps["armijo"] <= np.maximum(gaps[None], tolerance)), seed
        assert gaps["armijo"][-1] < tolerance


def test_after_a_step_it_cannot_take_the_ladder_starts_again_from_the_gradient():
    """A call whose ladder finds no step empties the history (torch would repeat the same failed
    direction for good): the next call is a first call from there."""
    rate = updates.live(1.0)

    def build():
        w = pytensor.shared(np.array([2.0, -1.5]), name="w")
        loss = pt.cosh(3 * w).sum() + (w**2).sum()
        built = updates.lbfgs(loss, [w], learning_rate=rate, line_search="armijo", ladder=2)
        return w, built, pytensor.function([], loss, updates=built, mode=PY)

    w, built, step = build()
    for _ in range(3):
        step()
    assert built.named_state()["lbfgs.history"].any() and np.abs(w.get_value()).max() > 0.1
    before = w.get_value()
    rate.set_value(1e6)  # both ladder steps overflow: no step, no parabola
    step()
    np.testing.assert_array_equal(w.get_value(), before)
    assert not built.named_state()["lbfgs.history"].any() and not built.named_state()["lbfgs.step"].any()
    rate.set_value(1.0)
    step()
    fresh_w, _, fresh_step = build()
    fresh_w.set_value(before)
    fresh_step()
    np.testing.assert_array_equal(w.get_value(), fresh_w.get_value())


# -- the Numba kernel, the graph, and every mode


def _kernel_nodes(function) -> list:
    return [n for n in function.maker.fgraph.apply_nodes if isinstance(n.op, lbfgs_module._StepKernel)]


def _numba_linker() -> bool:
    return type(get_default_mode().linker).__name__ == "NumbaLinker"


@pytest.mark.parametrize("line_search", [None, "armijo", "strong_wolfe"])
def test_the_default_mode_and_its_kernel_equal_the_graph(line_search):
    """Under Numba (PyTensor 3's default) the step is one kernel of loops
    (``updates.lbfgs._StepKernel``); elsewhere the graph. Same trajectory, to rounding; the
    loss takes an input (data given per call). Numba's fastmath (PyTensor's default) rounds the
    model's values differently from NumPy: on the 15 steps, the params differ by some 1e-11 of
    the largest (without fastmath, 6e-12 relative): entries near zero are compared to it."""
    results = []
    for mode in (PY, None):
        w = pytensor.shared(np.array([-1.2, 1.0, -0.5]), name="w")
        a = pt.scalar("a")
        loss = a * ((w[1:] - w[:-1] ** 2) ** 2).sum() + ((1 - w[:-1]) ** 2).sum()
        built = updates.lbfgs(loss, [w], history_size=3, line_search=line_search)
        step = pytensor.function([a], loss, updates=built, mode=mode)
        assert bool(_kernel_nodes(step)) == (mode is None and _numba_linker())
        results.append(([float(step(100.0)) for _ in range(15)], w.get_value()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-10)
    scale = np.abs(results[0][1]).max()
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("line_search", [None, "armijo", "strong_wolfe"])
def test_the_kernel_in_python_equals_the_graph(line_search):
    """The kernel node run by its ``perform`` (the rewrite asked for by its tag, the Python
    linker): the same steps as the graph, without compiling Numba. The graph's ladder evaluates
    the loss at its steps in one batched graph, the kernel one step at a time: the products
    round differently, and entries near zero are compared to the largest."""
    results = []
    for mode in (PY, kernel_mode()):
        loss, params, _ = logistic_problem()
        built = updates.lbfgs(loss, params, history_size=3, line_search=line_search)
        step = pytensor.function([], loss, updates=built, mode=mode)
        assert bool(_kernel_nodes(step)) == (mode is KERNEL)
        results.append([float(step()) for _ in range(12)] + [params[0].get_value()])
    scale = np.abs(results[0][-1]).max()
    np.testing.assert_allclose(results[1][-1], results[0][-1], rtol=1e-10, atol=1e-11 * scale)
    np.testing.assert_allclose(results[1][:-1], results[0][:-1], rtol=1e-12)


def test_a_zero_gradient_takes_no_step_in_the_default_mode():
    """A zero gradient on the first call (``t0 = min(1, 1 / |g|_1)`` divides by zero): nothing
    changes, under Numba too (the kernel divides as NumPy does, with no ZeroDivisionError)."""
    w = pytensor.shared(np.ones(3), name="w")
    loss = ((w - 1.0) ** 2).sum()
    step = pytensor.function([], loss, updates=updates.lbfgs(loss, [w]))
    assert [float(step()) for _ in range(2)] == [0.0, 0.0]
    np.testing.assert_array_equal(w.get_value(), np.ones(3))


def test_the_kernels_slope_is_forward_mode_and_equals_the_gradients():
    """The strong Wolfe kernel's :math:`\\phi'(t)` (``_derivative``): forward mode where every op of
    the model has a push-forward (no gradient buffer: no ``Alloc``/``IncSubtensor`` for Numba to
    compile into the kernel), else the reverse mode (a ``Matmul`` has none in PyTensor 3); the
    value of ``pytensor.grad`` either way."""
    x = pytensor.shared(np.array([-1.2, 1.0, -0.5, 2.0]), name="x")
    rosenbrock = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
    logistic, (w, _), _ = logistic_problem()
    for loss, p, forward in ((rosenbrock, x, True), (logistic, w, None)):
        t = pt.dscalar("t")
        direction = np.linspace(-1.0, 1.0, p.get_value().size).reshape(p.get_value().shape)
        at_t = pytensor.graph.replace.graph_replace(loss, {p: p + t * direction}, strict=False)
        slope = lbfgs_module._derivative(at_t, t)
        expected = pytensor.grad(at_t, t)
        for value in (0.0, 0.3):
            np.testing.assert_allclose(slope.eval({t: value}), expected.eval({t: value}), rtol=1e-12)
        if forward:
            graph = pytensor.graph.fg.FunctionGraph(outputs=[slope], clone=True)
            names = {type(node.op).__name__ for node in graph.apply_nodes}
            assert not names & {"Alloc", "IncSubtensor", "AdvancedIncSubtensor1"}, names


def test_default_mode_equals_the_python_linker():
    results = []
    for mode in (PY, None):
        loss, params, _ = logistic_problem()
        step = pytensor.function([], loss, updates=updates.lbfgs(loss, params, history_size=3), mode=mode)
        results.append([float(step()) for _ in range(8)] + [params[0].get_value()])
    np.testing.assert_allclose(results[0][-1], results[1][-1], rtol=1e-10)
    np.testing.assert_allclose(results[0][:-1], results[1][:-1], rtol=1e-10)


def run(rule, loss, params, steps, mode=PY):
    step = pytensor.function([], loss, updates=rule(loss, params), mode=mode)
    return np.array([float(step()) for _ in range(steps)])


@pytest.mark.parametrize("line_search", ["armijo", "strong_wolfe"])
@pytest.mark.parametrize(("n", "steps"), [(2, 60), (100, 600)])
def test_rosenbrock_converges_where_adam_does_not_and_the_loss_never_increases(n, steps, line_search):
    """From (-1.2, 1, -1.2, ...): scipy's L-BFGS-B needs a few dozen (2-d) and some hundreds
    (100-d) iterations too; Adam after as many steps is still far. The steps stop once
    g.d > -tolerance_change (1e-9): the loss within about 1e-10 of 0, the valley's far end within
    1e-4 of the optimum."""
    loss, params = rosenbrock(n).build()
    losses = run(updates.lbfgs(line_search=line_search), loss, params, steps, mode="FAST_COMPILE")
    assert np.all(np.diff(losses) <= 0) and losses[-1] < 1e-9
    np.testing.assert_allclose(params[0].get_value(), np.ones(n), atol=1e-4)
    loss, params = rosenbrock(n).build()
    adam = run(updates.adam(learning_rate=1e-2), loss, params, steps, mode="FAST_COMPILE")
    assert adam[-1] > 1e-2 > 1e6 * losses[-1]


@pytest.mark.parametrize("line_search", ["armijo", "strong_wolfe"])
def test_the_line_search_never_takes_a_step_that_increases_the_loss(line_search):
    loss, params, _ = logistic_problem(1)
    losses = run(updates.lbfgs(learning_rate=10.0, line_search=line_search), loss, params, 30)
    assert np.all(np.diff(losses) <= 0) and losses[-1] < losses[0]


def test_state_is_named_saved_and_resumed_bit_for_bit(tmp_path):
    def build():
        loss, params, _ = logistic_problem()
        built = updates.lbfgs(loss, params, history_size=4, line_search="armijo")
        return params, built, pytensor.function([], loss, updates=built, mode=PY)

    params, built, step = build()
    assert list(built.named_state()) == ["lbfgs.history", "lbfgs.step", "lbfgs.previous_grad", "lbfgs.t"]
    assert built.named_state()["lbfgs.history"].shape == (2, 4, 18)
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
    assert built_again.named_state()["lbfgs.t"] == 0 and not built_again.named_state()["lbfgs.history"].any()


def test_partial_application_and_clear_nan():
    loss, params, _ = logistic_problem()
    late = updates.lbfgs(learning_rate=0.5, clear_nan=True, line_search="strong_wolfe", max_ls=5)
    assert callable(late) and isinstance(late(loss, params), updates.Updates)
    assert late.keywords["curvature"] == 0.9 and late.keywords["max_ls"] == 5


def test_bad_input_is_refused_when_the_graph_is_built():
    loss, params, _ = logistic_problem()
    with pytest.raises(ValueError, match=r"^lbfgs: history_size must be > 0, got 0"):
        updates.lbfgs(history_size=0)
    with pytest.raises(
        ValueError,
        match=r"^lbfgs: line_search must be one of \(None, 'armijo', 'strong_wolfe'\), got 'wolfe'",
    ):
        updates.lbfgs(line_search="wolfe")
    for line_search in ("armijo", "strong_wolfe"):
        with pytest.raises(TypeError, match=rf"^lbfgs: line_search='{line_search}' evaluates the loss"):
            updates.lbfgs(updates.get_or_compute_grads(loss, params), params, line_search=line_search)
    with pytest.raises(ValueError, match=r"^lbfgs: curvature must be in \(0, 1\), got 1.0"):
        updates.lbfgs(curvature=1.0)
    with pytest.raises(ValueError, match=r"^lbfgs: max_ls must be >= 0, got -1"):
        updates.lbfgs(max_ls=-1)
    with pytest.raises(TypeError, match=r"^lbfgs: max_ls must be an integer, got float"):
        updates.lbfgs(max_ls=2.0)
    with pytest.raises(ValueError, match=r"^lbfgs: the strong Wolfe conditions need armijo < curvature"):
        updates.lbfgs(line_search="strong_wolfe", armijo=0.5, curvature=0.4)
    with pytest.raises(TypeError, match=r"^lbfgs: got an unexpected keyword argument 'max_eval'"):
        updates.lbfgs(max_eval=26)
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


@pytest.mark.parametrize("line_search", [None, "armijo", "strong_wolfe"])
def test_a_float32_model_stays_float32_under_float64_floatx(line_search):
    w = pytensor.shared(np.ones(3, dtype="float32"), name="w")
    with pytensor.config.change_flags(floatX="float64"):
        loss = ((w - 2) ** 2).sum()
        built = updates.lbfgs(loss, [w], line_search=line_search)
        assert all(value.type == key.type for key, value in built.items())
        pytensor.function([], loss, updates=built, mode=PY)()
    assert w.get_value().dtype == np.float32 and (w.get_value() > 1).all()


@pytest.mark.parametrize("given_loss", [False, True], ids=["handed-the-loss", "built-with-it"])
def test_a_plateau_learning_rate_watches_the_loss_and_is_state(given_loss):
    """reduce_on_plateau as lbfgs's learning rate: its state is in the updates (so it moves), and
    one built without a loss watches lbfgs's own."""
    w = pytensor.shared(np.array([1.0, -1.0]), name="w")
    target = pt.dvector("target")
    loss = ((w - target) ** 2).sum()
    watched = {"loss": loss} if given_loss else {}
    lr = updates.schedules.reduce_on_plateau(**watched, init_value=0.4, factor=0.5, patience=2, name="lr")
    built = updates.lbfgs(learning_rate=lr)(loss, [w])
    assert lr.value in built.state and lr.best in built.state
    step = pytensor.function([target], [loss, built.hyperparameters["learning_rate"]], updates=built, mode=PY)
    rng = np.random.default_rng(3)
    losses, used = zip(*(step(rng.normal(size=2) if k % 3 else np.zeros(2)) for k in range(40)))
    np.testing.assert_array_equal(used, reference.plateau_reference(losses, 0.4, 0.5, 2, 1e-4, 0, 0.0))
    assert min(used) < 0.4
