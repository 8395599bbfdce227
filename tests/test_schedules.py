"""Schedules: each equal to a NumPy evaluation of its formula over a range of steps, checked
arguments, readable reprs; rules and momentum wrappers follow them step by step; reduce_on_plateau
decides as torch's ReduceLROnPlateau; live() values change between calls without recompiling."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import pickle

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import plateau_reference

import updates
from updates import schedules

MODE = "FAST_COMPILE"
STEPS = sorted({*range(301), 1000, 4000, 10**5, 10**7, 2**31 + 7, 2**40})
PATHS = {"fused": contextlib.nullcontext, "per_parameter": updates.per_parameter}


# -- independent NumPy evaluations of the formulas -------------------------------------------------


def ref_piecewise(boundaries, values):
    return lambda t: values[np.searchsorted(boundaries, t, side="right")]


def ref_exponential(init, rate, steps, staircase=False):
    def value(t):
        with np.errstate(over="ignore"):  # growth (rate > 1) reaches inf, as in the graph
            return init * np.float64(rate) ** ((t // steps) if staircase else (t / steps))

    return value


def ref_inverse_time(init, rate, steps=1, power=1.0, staircase=False):
    return lambda t: init / (1.0 + rate * ((t // steps) if staircase else t / steps)) ** power


def ref_polynomial(init, end, steps, power=1.0):
    return lambda t: end + (init - end) * (1.0 - min(t, steps) / steps) ** power


def ref_linear(init, delta, low=0.0, high=np.inf):
    return lambda t: float(np.clip(init - delta * t, low, high))


def ref_step(init, size, factor=0.1):
    return lambda t: init * factor ** (t // size)


def ref_cosine(init, steps, alpha=0.0):
    return lambda t: init * ((1 - alpha) * (1 + np.cos(np.pi * min(t, steps) / steps)) / 2 + alpha)


def ref_linear_warmup(peak, steps, init=0.0):
    return lambda t: float(np.interp(t, [0, steps], [init, peak]))


def ref_warmup_cosine(peak, warmup, total, init=0.0, end=0.0):
    def value(t):
        if t < warmup:
            return float(np.interp(t, [0, warmup], [init, peak]))
        fraction = min(t - warmup, total - warmup) / (total - warmup)
        return end + (peak - end) * (1 + np.cos(np.pi * fraction)) / 2

    return value


def ref_one_cycle(max_lr, total, pct=0.3, strategy="cos", div=25.0, final_div=1e4, three_phase=False):
    """Walks the phases as torch's OneCycleLR documents them; flat after the last step."""
    initial = max_lr / div
    low = initial / final_div
    if three_phase:
        phases = [(pct * total - 1, initial, max_lr), (2 * pct * total - 2, max_lr, initial)]
        phases.append((total - 1, initial, low))
    else:
        phases = [(pct * total - 1, initial, max_lr), (total - 1, max_lr, low)]

    def anneal(a, b, x):
        return b + (a - b) * (np.cos(np.pi * x) + 1) / 2 if strategy == "cos" else a + (b - a) * x

    def value(t):
        t = min(t, total - 1)
        begin = 0.0
        for i, (end, a, b) in enumerate(phases):
            if t <= end or i == len(phases) - 1:
                return anneal(a, b, (t - begin) / (end - begin))
            begin = end

    return value


def ref_sgdr(init, period, mult=1.0, low=0.0):
    """Walks the restarts one period at a time."""

    def value(t):
        if mult == 1.0:
            start, length = t - t % period, period
        else:
            start, length = 0.0, float(period)
            while t >= start + length:
                start, length = start + length, length * mult
        return low + (init - low) * (1 + np.cos(np.pi * (t - start) / length)) / 2

    return value


def ref_noam(d_model=512, warmup=4000, scale=1.0):
    """numpy-ml's NoamScheduler formula, evaluated at step + 1."""

    def value(t):
        n = t + 1
        return scale * d_model ** (-0.5) * min(n ** (-0.5), n * warmup ** (-1.5))

    return value


def ref_momentum_ramp(start, end, end_step):
    """yann's momentum: linear in the epoch until end_step, then end."""
    return lambda t: start * (1 - t / end_step) + end * (t / end_step) if t <= end_step else end


def ref_join(refs, boundaries):
    def value(t):
        i = int(np.searchsorted(boundaries, t, side="right"))
        return refs[i](t - (boundaries[i - 1] if i else 0))

    return value


CASES = [
    (schedules.constant(0.1), lambda t: 0.1),
    (schedules.constant(0), lambda t: 0.0),
    (
        schedules.piecewise_constant([50, 120, 121], [0.1, 0.05, 0.01, 0.001]),
        ref_piecewise([50, 120, 121], [0.1, 0.05, 0.01, 0.001]),
    ),
    (schedules.piecewise_constant([], [0.3]), lambda t: 0.3),
    (schedules.piecewise_constant([0, 10], [1, 2, 3]), ref_piecewise([0, 10], [1.0, 2.0, 3.0])),
    (schedules.exponential_decay(0.1, 0.5, 40), ref_exponential(0.1, 0.5, 40)),
    (schedules.exponential_decay(0.1, 0.5, 40, staircase=True), ref_exponential(0.1, 0.5, 40, True)),
    (schedules.exponential_decay(0.01, 1.01, 1), ref_exponential(0.01, 1.01, 1)),
    (schedules.inverse_time_decay(0.1, 0.5), ref_inverse_time(0.1, 0.5)),
    (
        schedules.inverse_time_decay(1.0, 2.0, decay_steps=30, power=0.5, staircase=True),
        ref_inverse_time(1.0, 2.0, 30, 0.5, True),
    ),
    (schedules.inverse_time_decay(0.3, 0.01, 7, power=2.0), ref_inverse_time(0.3, 0.01, 7, 2.0)),
    (schedules.polynomial_decay(0.1, 0.001, 200, power=2.0), ref_polynomial(0.1, 0.001, 200, 2.0)),
    (schedules.polynomial_decay(0.5, 0.0, 1), ref_polynomial(0.5, 0.0, 1)),
    (schedules.polynomial_decay(0.0, 1.0, 100, power=0.5), ref_polynomial(0.0, 1.0, 100, 0.5)),
    (schedules.linear_decay(1.0, 0.01, 0.05, 0.9), ref_linear(1.0, 0.01, 0.05, 0.9)),
    (schedules.linear_decay(0.1, -0.001), ref_linear(0.1, -0.001)),
    (schedules.linear_decay(0.5, 0.002, min_value=0.1), ref_linear(0.5, 0.002, 0.1)),
    (schedules.step_decay(0.1, 30, 0.5), ref_step(0.1, 30, 0.5)),
    (schedules.step_decay(1.0, 1, 0.9), ref_step(1.0, 1, 0.9)),
    (schedules.step_decay(1.0, 100), ref_step(1.0, 100)),
    (schedules.step_decay(1.0, 10, 0.0), ref_step(1.0, 10, 0.0)),
    (schedules.cosine_decay(0.1, 200), ref_cosine(0.1, 200)),
    (schedules.cosine_decay(0.1, 100, alpha=0.1), ref_cosine(0.1, 100, 0.1)),
    (schedules.cosine_decay(1, 1, 1), ref_cosine(1.0, 1, 1.0)),
    (schedules.linear_warmup(0.1, 50), ref_linear_warmup(0.1, 50)),
    (schedules.linear_warmup(0.1, 1, init_value=0.01), ref_linear_warmup(0.1, 1, 0.01)),
    (schedules.linear_warmup(0.1, 100, init_value=0.2), ref_linear_warmup(0.1, 100, 0.2)),
    (
        schedules.warmup_cosine(0.1, 50, 250, init_value=0.01, end_value=0.001),
        ref_warmup_cosine(0.1, 50, 250, 0.01, 0.001),
    ),
    (schedules.warmup_cosine(0.1, 0, 100), ref_warmup_cosine(0.1, 0, 100)),
    (schedules.warmup_cosine(1.0, 1, 2), ref_warmup_cosine(1.0, 1, 2)),
    (schedules.one_cycle(0.1, 250), ref_one_cycle(0.1, 250)),
    (
        schedules.one_cycle(0.1, 200, 0.25, "linear", three_phase=True),
        ref_one_cycle(0.1, 200, 0.25, "linear", three_phase=True),
    ),
    (schedules.one_cycle(0.1, 201, 0.3, three_phase=True), ref_one_cycle(0.1, 201, 0.3, three_phase=True)),
    (
        schedules.one_cycle(1.0, 300, 0.1, div_factor=10.0, final_div_factor=100.0),
        ref_one_cycle(1.0, 300, 0.1, div=10.0, final_div=100.0),
    ),
    (schedules.sgdr(0.1, 30), ref_sgdr(0.1, 30)),
    (schedules.sgdr(0.1, 10, 2, 0.001), ref_sgdr(0.1, 10, 2.0, 0.001)),
    (schedules.sgdr(0.1, 7, 1.5), ref_sgdr(0.1, 7, 1.5)),
    (schedules.sgdr(1, 1, 3), ref_sgdr(1.0, 1, 3.0)),
    (schedules.noam(512, 100), ref_noam(512, 100)),
    (schedules.noam(64, 1, 2.0), ref_noam(64, 1, 2.0)),
    (schedules.noam(), ref_noam()),
    (schedules.momentum_ramp(0.5, 0.99, 50), ref_momentum_ramp(0.5, 0.99, 50)),
    (schedules.momentum_ramp(0.9, 0.5, 1), ref_momentum_ramp(0.9, 0.5, 1)),
    (
        schedules.join_schedules(
            [schedules.linear_warmup(0.1, 20), schedules.cosine_decay(0.1, 100), 0.001], [20, 120]
        ),
        ref_join([ref_linear_warmup(0.1, 20), ref_cosine(0.1, 100), lambda t: 0.001], [20, 120]),
    ),
    (
        schedules.join_schedules([0.5, schedules.step_decay(1.0, 10, 0.5)], [0]),
        ref_join([lambda t: 0.5, ref_step(1.0, 10, 0.5)], [0]),
    ),
    (
        schedules.join_schedules(
            [
                schedules.sgdr(0.1, 10),
                schedules.join_schedules([schedules.constant(0.2), schedules.noam(16, 5)], [7]),
            ],
            [150],
        ),
        ref_join([ref_sgdr(0.1, 10), ref_join([lambda t: 0.2, ref_noam(16, 5)], [7])], [150]),
    ),
    (schedules.scale(schedules.cosine_decay(1.0, 100), 0.1), lambda t: 0.1 * ref_cosine(1.0, 100)(t)),
    (
        schedules.scale(lambda t: 1.0 / (1.0 + pt.cast(t, "float64")), -2.0),
        lambda t: -2.0 / (1.0 + t),
    ),
]
IDS = [f"{i}-{type(s).__name__}" for i, (s, _) in enumerate(CASES)]


def compile_schedule(schedule):
    t = pt.lscalar("t")
    return pytensor.function([t], schedule(t), mode=MODE, on_unused_input="ignore")


@pytest.mark.parametrize(("schedule", "reference"), CASES, ids=IDS)
def test_schedule_equals_numpy_formula(schedule, reference):
    value = compile_schedule(schedule)
    got = np.array([value(t) for t in STEPS])
    expected = np.array([reference(t) for t in STEPS], dtype="float64")
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("schedule", "reference"), CASES[::4], ids=IDS[::4])
def test_schedule_stays_float64_under_float32_floatx(schedule, reference):
    """Constants are float64 whatever floatX is: 0.1 is not rounded to float32 on the way."""
    with pytensor.config.change_flags(floatX="float32"):
        t = pt.lscalar("t")
        expression = schedule(t)
        value = pytensor.function([t], expression, mode=MODE, on_unused_input="ignore")
    assert expression.dtype == "float64"
    steps = [0, 1, 17, 60, 133, 299]
    np.testing.assert_allclose([value(t) for t in steps], [reference(t) for t in steps], rtol=1e-12)


@pytest.mark.parametrize(("schedule", "_"), CASES, ids=IDS)
def test_schedule_returns_a_float64_scalar_of_any_integer_step(schedule, _):
    for step in (pt.lscalar(), pt.iscalar(), pt.scalar(dtype="uint8"), 3, np.int32(3)):
        value = schedule(step)
        assert value.type.ndim == 0 and value.dtype == "float64"
    small = pt.scalar(dtype="int8")
    value = pytensor.function([small], [schedule(small), schedule(3)], mode=MODE, on_unused_input="ignore")
    assert value(3)[0] == value(3)[1]


@pytest.mark.parametrize("step", [0.5, pt.dscalar(), pt.lvector(), "3", True], ids=repr)
def test_schedule_refuses_a_step_that_is_not_an_integer_scalar(step):
    with pytest.raises(TypeError, match=r"cosine_decay: the step must be an integer"):
        schedules.cosine_decay(0.1, 10)(step)


@pytest.mark.parametrize(("schedule", "_"), CASES[:-1], ids=IDS[:-1])
def test_repr_is_readable_and_rebuilds_the_schedule(schedule, _):
    text = repr(schedule)
    assert text.startswith(f"{type(schedule).__name__}(") and "0x" not in text
    assert eval(text, {**vars(schedules), "inf": math.inf}) == schedule


def test_repr_examples():
    assert (
        repr(updates.cosine_decay(0.1, 1000)) == "cosine_decay(init_value=0.1, decay_steps=1000, alpha=0.0)"
    )
    assert repr(updates.step_decay(1, 10)) == "step_decay(init_value=1.0, step_size=10, factor=0.1)"
    assert repr(updates.join_schedules([0.1, updates.constant(0.01)], [5])) == (
        "join_schedules(schedules=(constant(value=0.1), constant(value=0.01)), boundaries=(5,))"
    )
    loss = pt.dscalar()
    assert repr(updates.reduce_on_plateau(loss, 0.1)) == (
        "reduce_on_plateau(init_value=0.1, factor=0.1, patience=10, threshold=0.0001, cooldown=0, "
        "min_value=0.0, name='reduce_on_plateau')"
    )


def test_schedules_are_frozen():
    schedule = updates.cosine_decay(0.1, 100)
    with pytest.raises(AttributeError):
        schedule.init_value = 0.2


BACKENDS = {"CVM": None, "NUMBA": "numba", "JAX": "jax"}


@pytest.mark.parametrize("mode", BACKENDS)
def test_schedules_agree_in_every_backend(mode):
    """All the schedules in one function per linker: rewrites (x / T -> x * (1/T)) and Numba's
    fastmath must not change them beyond rounding, nor make NaN at the edges."""
    if BACKENDS[mode]:
        pytest.importorskip(BACKENDS[mode])
    t = pt.lscalar("t")
    value = pytensor.function([t], [s(t) for s, _ in CASES], mode=mode, on_unused_input="ignore")
    for step in [*range(0, 301, 3), 99, 100, 101, 119, 120, 121, 149, 150, 199, 200, 249, 250, 2**40]:
        expected = [reference(step) for _, reference in CASES]
        np.testing.assert_allclose(value(step), expected, rtol=1e-10, atol=1e-14, err_msg=f"step {step}")


@pytest.mark.parametrize("mode", BACKENDS)
def test_reduce_on_plateau_in_every_backend(mode):
    if BACKENDS[mode]:
        pytest.importorskip(BACKENDS[mode])
    config = PLATEAU_CONFIGS[1]
    loss = pt.dscalar("loss")
    lr = schedules.reduce_on_plateau(loss, **config)
    w = pytensor.shared(np.ones(2), name="w")
    g = pt.dvector("g")
    step_updates = updates.sgd([g], [w], learning_rate=lr)
    step = pytensor.function(
        [g, loss], step_updates.hyperparameters["learning_rate"], updates=step_updates, mode=mode
    )
    losses = plateau_losses(seed=2, n=120)
    used = [float(step(np.ones(2), x)) for x in losses]
    np.testing.assert_array_equal(used, plateau_reference(losses, **config))


# -- torch.optim.lr_scheduler, live ----------------------------------------------------------------


def torch_learning_rates(make_scheduler, steps, lr):
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


TORCH = [
    (schedules.step_decay(0.1, 30, 0.5), lambda s, o: s.StepLR(o, 30, gamma=0.5), 0.1, 300),
    (schedules.exponential_decay(0.1, 0.98, 1), lambda s, o: s.ExponentialLR(o, 0.98), 0.1, 300),
    (schedules.polynomial_decay(0.1, 0.0, 120, 2.0), lambda s, o: s.PolynomialLR(o, 120, 2.0), 0.1, 300),
    (
        schedules.cosine_decay(0.1, 150, alpha=0.1),
        lambda s, o: s.CosineAnnealingLR(o, 150, eta_min=0.01),
        0.1,
        151,
    ),
    (
        schedules.linear_warmup(0.1, 40, init_value=0.025),
        lambda s, o: s.LinearLR(o, start_factor=0.25, total_iters=40),
        0.1,
        300,
    ),
    (schedules.one_cycle(0.1, 250), lambda s, o: s.OneCycleLR(o, 0.1, 250, cycle_momentum=False), 0.1, 250),
    (
        schedules.one_cycle(0.1, 200, 0.25, "linear", 10.0, 100.0, three_phase=True),
        lambda s, o: s.OneCycleLR(
            o,
            0.1,
            200,
            pct_start=0.25,
            anneal_strategy="linear",
            div_factor=10.0,
            final_div_factor=100.0,
            three_phase=True,
            cycle_momentum=False,
        ),
        0.1,
        200,
    ),
    (
        schedules.sgdr(0.1, 10, 2, 0.001),
        lambda s, o: s.CosineAnnealingWarmRestarts(o, 10, 2, 0.001),
        0.1,
        300,
    ),
    (schedules.sgdr(0.1, 25), lambda s, o: s.CosineAnnealingWarmRestarts(o, 25), 0.1, 300),
]


@pytest.mark.parametrize(
    ("schedule", "make_scheduler", "lr", "steps"), TORCH, ids=[type(c[0]).__name__ for c in TORCH]
)
def test_schedule_equals_torch_scheduler(schedule, make_scheduler, lr, steps):
    expected = torch_learning_rates(make_scheduler, steps, lr)
    value = compile_schedule(schedule)
    np.testing.assert_allclose([value(t) for t in range(steps)], expected, rtol=1e-9, atol=1e-15)


# -- bad arguments ---------------------------------------------------------------------------------

BAD = [
    (lambda: schedules.cosine_decay(0.1, 0), ValueError, r"cosine_decay: decay_steps must be > 0, got 0"),
    (
        lambda: schedules.cosine_decay(0.1, 10.0),
        TypeError,
        r"cosine_decay: decay_steps must be an integer, got float",
    ),
    (
        lambda: schedules.cosine_decay(0.1, 10, 1.5),
        ValueError,
        r"cosine_decay: alpha must be in \[0, 1\], got 1.5",
    ),
    (
        lambda: schedules.cosine_decay(-0.1, 10),
        ValueError,
        r"cosine_decay: init_value must be >= 0, got -0.1",
    ),
    (
        lambda: schedules.cosine_decay("0.1", 10),
        TypeError,
        r"cosine_decay: init_value must be a real number, got str",
    ),
    (
        lambda: schedules.cosine_decay(math.nan, 10),
        ValueError,
        r"cosine_decay: init_value must be finite, got nan",
    ),
    (lambda: schedules.cosine_decay(True, 10), TypeError, r"init_value must be a real number, got bool"),
    (
        lambda: schedules.cosine_decay(pt.dscalar(), 10),
        TypeError,
        r"init_value must be a real number, got Tensor",
    ),
    (lambda: schedules.constant(-1), ValueError, r"constant: value must be >= 0, got -1"),
    (
        lambda: schedules.piecewise_constant([10, 20], [0.1, 0.2]),
        ValueError,
        r"piecewise_constant: got 2 values for 2 boundaries",
    ),
    (
        lambda: schedules.piecewise_constant([20, 10], [0.1, 0.2, 0.3]),
        ValueError,
        r"piecewise_constant: boundaries must be strictly increasing, "
        r"got boundaries\[0\] = 20 and boundaries\[1\] = 10",
    ),
    (
        lambda: schedules.piecewise_constant([-1], [0.1, 0.2]),
        ValueError,
        r"piecewise_constant: boundaries\[0\] must be >= 0, got -1",
    ),
    (
        lambda: schedules.piecewise_constant(5, [0.1]),
        TypeError,
        r"boundaries must be a sequence of integers, got int",
    ),
    (
        lambda: schedules.piecewise_constant([], 0.1),
        TypeError,
        r"values must be a sequence of numbers, got float",
    ),
    (
        lambda: schedules.exponential_decay(0.1, 0.0, 10),
        ValueError,
        r"exponential_decay: decay_rate must be > 0, got 0.0",
    ),
    (
        lambda: schedules.exponential_decay(0.1, 0.5, 0),
        ValueError,
        r"exponential_decay: decay_steps must be > 0, got 0",
    ),
    (
        lambda: schedules.exponential_decay(0.1, 0.5, 5, "yes"),
        TypeError,
        r"staircase must be True or False, got 'yes'",
    ),
    (
        lambda: schedules.inverse_time_decay(0.1, -1.0),
        ValueError,
        r"inverse_time_decay: decay_rate must be >= 0, got -1.0",
    ),
    (
        lambda: schedules.inverse_time_decay(0.1, 1.0, power=0),
        ValueError,
        r"inverse_time_decay: power must be > 0, got 0",
    ),
    (
        lambda: schedules.polynomial_decay(0.1, -0.1, 10),
        ValueError,
        r"polynomial_decay: end_value must be >= 0, got -0.1",
    ),
    (
        lambda: schedules.polynomial_decay(0.1, 0.0, 10, 0.0),
        ValueError,
        r"polynomial_decay: power must be > 0, got 0.0",
    ),
    (
        lambda: schedules.linear_decay(0.1, math.inf),
        ValueError,
        r"linear_decay: delta must be finite, got inf",
    ),
    (
        lambda: schedules.linear_decay(0.1, 0.01, 0.5, 0.2),
        ValueError,
        r"linear_decay: max_value must be >= 0.5, got 0.2",
    ),
    (lambda: schedules.step_decay(0.1, 0), ValueError, r"step_decay: step_size must be > 0, got 0"),
    (lambda: schedules.step_decay(0.1, 10, -0.5), ValueError, r"step_decay: factor must be >= 0, got -0.5"),
    (lambda: schedules.linear_warmup(0.1, 0), ValueError, r"linear_warmup: warmup_steps must be > 0, got 0"),
    (
        lambda: schedules.warmup_cosine(0.1, 100, 100),
        ValueError,
        r"warmup_cosine: decay_steps must be > warmup_steps \(it counts both phases\), "
        r"got decay_steps=100 and warmup_steps=100",
    ),
    (
        lambda: schedules.warmup_cosine(0.1, -1, 100),
        ValueError,
        r"warmup_cosine: warmup_steps must be >= 0, got -1",
    ),
    (lambda: schedules.one_cycle(0.1, 0), ValueError, r"one_cycle: total_steps must be > 0, got 0"),
    (
        lambda: schedules.one_cycle(0.1, 100, 1.0),
        ValueError,
        r"one_cycle: pct_start must be in \(0, 1\), got 1.0",
    ),
    (
        lambda: schedules.one_cycle(0.1, 100, anneal_strategy="exp"),
        ValueError,
        r"one_cycle: anneal_strategy must be 'cos' or 'linear', got 'exp'",
    ),
    (
        lambda: schedules.one_cycle(0.1, 3),
        ValueError,
        r"one_cycle: phase 1 would end at step -0.1, not after its start at step 0",
    ),
    (
        lambda: schedules.one_cycle(0.1, 10, 0.6, three_phase=True),
        ValueError,
        r"one_cycle: phase 3 would end at step 9, not after its start at step 10",
    ),
    (
        lambda: schedules.one_cycle(0.1, 100, div_factor=0),
        ValueError,
        r"one_cycle: div_factor must be > 0, got 0",
    ),
    (lambda: schedules.sgdr(0.1, 0), ValueError, r"sgdr: period must be > 0, got 0"),
    (lambda: schedules.sgdr(0.1, 10, 0.5), ValueError, r"sgdr: mult must be >= 1, got 0.5"),
    (lambda: schedules.sgdr(0.1, 10, min_value=0.2), ValueError, r"sgdr: init_value must be >= 0.2, got 0.1"),
    (lambda: schedules.noam(0), ValueError, r"noam: d_model must be > 0, got 0"),
    (lambda: schedules.noam(512, 0), ValueError, r"noam: warmup_steps must be > 0, got 0"),
    (
        lambda: schedules.momentum_ramp(0.5, 1.0, 10),
        ValueError,
        r"momentum_ramp: end must be in \[0, 1\), got 1.0",
    ),
    (
        lambda: schedules.momentum_ramp(0.5, 0.9, 0),
        ValueError,
        r"momentum_ramp: end_step must be > 0, got 0",
    ),
    (
        lambda: schedules.join_schedules([0.1, 0.2], [10, 20]),
        ValueError,
        r"join_schedules: got 2 schedules for 2 boundaries",
    ),
    (
        lambda: schedules.join_schedules([0.1, "x"], [10]),
        TypeError,
        r"join_schedules: schedules\[1\] must be a schedule \(a callable of the step\) or a number, got str",
    ),
    (
        lambda: schedules.join_schedules(0.1, [10]),
        TypeError,
        r"schedules must be a sequence of schedules, got float",
    ),
    (
        lambda: schedules.scale(0.1, 2.0),
        TypeError,
        r"scale: schedule must be a callable of the step, got float",
    ),
    (
        lambda: schedules.scale(schedules.constant(0.1), math.inf),
        ValueError,
        r"scale: factor must be finite, got inf",
    ),
    (
        lambda: schedules.reduce_on_plateau(0.5, 0.1),
        TypeError,
        r"reduce_on_plateau: loss must be a scalar tensor or None, got float$",
    ),
    (
        lambda: schedules.reduce_on_plateau(0.1),
        TypeError,
        r"reduce_on_plateau: loss must be a scalar tensor or None, got float; to watch the loss of "
        r"the rule, give the first value by name: init_value=0.1$",
    ),
    (
        lambda: schedules.reduce_on_plateau(factor=0.5),
        TypeError,
        r"^reduce_on_plateau: missing a required argument: 'init_value'$",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dvector(), 0.1),
        ValueError,
        r"reduce_on_plateau: loss must be a scalar, got a 1-d",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dscalar(), 0.1, factor=1.0),
        ValueError,
        r"reduce_on_plateau: factor must be in \(0, 1\), got 1.0",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dscalar(), 0.1, patience=-1),
        ValueError,
        r"reduce_on_plateau: patience must be >= 0, got -1",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dscalar(), 0.1, threshold=1.0),
        ValueError,
        r"reduce_on_plateau: threshold must be in \[0, 1\), got 1.0",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dscalar(), 0.1, cooldown=1.5),
        TypeError,
        r"reduce_on_plateau: cooldown must be an integer, got float",
    ),
    (
        lambda: schedules.reduce_on_plateau(pt.dscalar(), 0.1, name=""),
        TypeError,
        r"name must be a non-empty string",
    ),
    (lambda: updates.live("0.1"), TypeError, r"live: value must be a real number, got str"),
    (lambda: updates.live(math.nan), ValueError, r"live: value must be finite, got nan"),
    (lambda: updates.live(0.1, name=3), TypeError, r"live: name must be a string or None, got int"),
]


@pytest.mark.parametrize(("build", "error", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_arguments_are_refused_with_a_message(build, error, message):
    with pytest.raises(error, match=message):
        build()


SCHEDULE_CLASSES = [
    getattr(schedules, name) for name in schedules.__all__ if isinstance(getattr(schedules, name), type)
]


# reduce_on_plateau's loss may be left out, so its init_value has a default (None) in the signature.
REQUIRED = {"reduce_on_plateau": "init_value"}


def misspellings(parameters):
    """``{typo: the parameter it should suggest}``: each name without its last letter, and the
    first word of a name in words when no other name contains that word."""
    typos = {name[:-1]: name for name in parameters}
    for name in parameters:
        word = name.split("_")[0]
        if (
            len(word) >= 3
            and word != name
            and not any(word in other for other in parameters if other != name)
        ):
            typos[word] = name
    return typos


@pytest.mark.parametrize("cls", SCHEDULE_CLASSES, ids=lambda cls: cls.__name__)
def test_a_schedule_class_checks_its_arguments_as_a_function_does(cls):
    """Named after the schedule (not its __init__), a did-you-mean for every misspelt keyword, and
    a signature without self and without ``-> None``."""
    who = cls.__name__
    signature = inspect.signature(cls)
    init = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert list(signature.parameters.values()) == init
    assert signature.return_annotation is inspect.Signature.empty and "->" not in str(signature)
    names = list(signature.parameters)
    for typo, name in misspellings(names).items():
        with pytest.raises(
            TypeError, match=rf"^{who}: got an unexpected keyword argument '{typo}'; "
        ) as refused:
            cls(**{typo: 1})
        assert repr(name) in str(refused.value).split("; did you mean ")[1]
    positional = [p for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    with pytest.raises(TypeError, match=rf"^{who}: too many positional arguments$"):
        cls(*range(len(positional) + 1))
    with pytest.raises(TypeError, match=rf"^{who}: multiple values for argument '{names[0]}'$"):
        cls(1, **{names[0]: 1})
    required = REQUIRED.get(who, next((p.name for p in positional if p.default is p.empty), None))
    if required is None:
        assert isinstance(cls(), cls)
    else:
        with pytest.raises(TypeError, match=rf"^{who}: missing a required argument: '{required}'$"):
            cls()


def test_did_you_mean_names_every_keyword_a_word_may_mean():
    with pytest.raises(TypeError, match=r"^warmup_cosine: .* 'peak'; did you mean 'peak_value'\?$"):
        updates.warmup_cosine(peak=1.0, warmup_steps=2, decay_steps=6)
    with pytest.raises(TypeError, match=r"^one_cycle: .* 'max'; did you mean 'max_value'\?$"):
        updates.one_cycle(max=1.0, total_steps=10)
    with pytest.raises(
        TypeError, match=r"^one_cycle: .* 'div'; did you mean 'div_factor' or 'final_div_factor'\?$"
    ):
        updates.one_cycle(1.0, 10, div=5.0)


def test_a_schedule_instance_keeps_the_signature_of_a_call_of_the_step():
    """The class's signature is for building; the schedule built is called with the step."""
    assert list(inspect.signature(updates.cosine_decay(0.1, 10)).parameters) == ["step"]
    loss = pt.dscalar()
    assert list(inspect.signature(updates.reduce_on_plateau(loss, 0.1)).parameters) == ["step"]


def test_copies_and_pickles_of_a_schedule_are_equal():
    """Copying and unpickling make the object without arguments: the checks of a call let them."""
    schedule = updates.join_schedules([updates.linear_warmup(0.1, 5), updates.cosine_decay(0.1, 50)], [5])
    assert copy.copy(schedule) == schedule == pickle.loads(pickle.dumps(schedule))


def test_a_schedule_returning_a_vector_is_refused():
    joined = schedules.join_schedules([lambda t: pt.ones(2), 0.1], [3])
    with pytest.raises(ValueError, match=r"join_schedules: a schedule must return a scalar, got a 1-d"):
        joined(0)


# -- in a rule -------------------------------------------------------------------------------------

TRAJECTORY_SCHEDULES = [
    (schedules.step_decay(0.1, 3, 0.5), ref_step(0.1, 3, 0.5)),
    (schedules.warmup_cosine(0.2, 4, 20, end_value=0.01), ref_warmup_cosine(0.2, 4, 20, 0.0, 0.01)),
    (schedules.sgdr(0.1, 5, 2.0, 0.001), ref_sgdr(0.1, 5, 2.0, 0.001)),
    (schedules.noam(16, 6, 0.5), ref_noam(16, 6, 0.5)),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("schedule", "reference"),
    TRAJECTORY_SCHEDULES,
    ids=[type(s).__name__ for s, _ in TRAJECTORY_SCHEDULES],
)
def test_sgd_follows_its_learning_rate_schedule(schedule, reference, dtype, path):
    """sgd's closed form p <- p - cast(lr_t) g, step by step; the read-back rate is the one used."""
    rng = np.random.default_rng(0)
    w = pytensor.shared(np.array([1.0, -2.0, 0.5], dtype=dtype), name="w")
    b = pytensor.shared(np.array([[0.3, -0.7]], dtype=dtype), name="b")
    grads = [pt.tensor(dtype=dtype, shape=(None,)), pt.tensor(dtype=dtype, shape=(None, None))]
    with PATHS[path]():
        step_updates = updates.sgd(grads, [w, b], learning_rate=schedule)
    assert step_updates.config[0]["learning_rate"] == repr(schedule)
    assert [v.name for v in step_updates.state] == ["sgd.t"]
    step = pytensor.function(
        grads, step_updates.hyperparameters["learning_rate"], updates=step_updates, mode=MODE
    )
    expected = [w.get_value(), b.get_value()]
    # float32: the fused loop may contract p - lr * g into one FMA (1 ulp of |p| apart)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-15}
    for t in range(40):
        g = [rng.normal(size=(3,)).astype(dtype), rng.normal(size=(1, 2)).astype(dtype)]
        used = step(*g)
        np.testing.assert_allclose(used, reference(t), rtol=1e-12)
        lr = np.asarray(reference(t), dtype=dtype)
        expected = [p - lr * gi for p, gi in zip(expected, g)]
        for param, value in zip((w, b), expected):
            assert param.get_value().dtype == dtype
            np.testing.assert_allclose(param.get_value(), value, **tol)
    assert step_updates.named_state()["sgd.t"] == 40


def test_step_decay_trajectory_is_exact():
    """With rates exact in binary (0.5 ** k), the float64 trajectory equals NumPy's bit for bit."""
    w = pytensor.shared(np.array([1.0, -3.0]), name="w")
    g = pt.dvector("g")
    step = pytensor.function(
        [g], [], updates=updates.sgd([g], [w], updates.step_decay(0.5, 2, 0.5)), mode=MODE
    )
    expected = w.get_value()
    for t in range(20):
        grad = np.array([0.3 * t - 1.0, 1.7])
        step(grad)
        expected = expected - 0.5 * 0.5 ** (t // 2) * grad
        np.testing.assert_array_equal(w.get_value(), expected)


@pytest.mark.parametrize(
    ("wrapper", "heavy_ball"),
    [(updates.apply_momentum, True), (updates.apply_nesterov_momentum, False)],
    ids=["apply_momentum", "apply_nesterov_momentum"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_momentum_wrapper_follows_a_momentum_schedule(wrapper, heavy_ball, dtype):
    ramp = schedules.momentum_ramp(0.5, 0.9, 10)
    w = pytensor.shared(np.array([1.0, -2.0, 0.5], dtype=dtype), name="w")
    g = pt.tensor(dtype=dtype, shape=(None,), name="g")
    wrapped = wrapper(updates.sgd([g], [w], learning_rate=0.1), momentum=ramp)
    name = wrapper.__name__
    assert wrapped.config[-1] == {"wrapper": name, "momentum": repr(ramp)}
    step = pytensor.function([g], wrapped.hyperparameters[f"{name}.momentum"], updates=wrapped, mode=MODE)
    rng = np.random.default_rng(1)
    p, v = w.get_value(), np.zeros(3, dtype)
    lr = np.asarray(0.1, dtype)
    for t in range(25):
        grad = rng.normal(size=3).astype(dtype)
        used = step(grad)
        mu_value = ref_momentum_ramp(0.5, 0.9, 10)(t)
        np.testing.assert_allclose(used, mu_value, rtol=1e-12)
        mu, u = np.asarray(mu_value, dtype), p - lr * grad
        if heavy_ball:
            x = mu * v + u
            p, v = x, x - p
        else:
            x = mu * v + u - p
            p, v = mu * x + u, x
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-15}
        np.testing.assert_allclose(w.get_value(), p, **tol)
        assert w.get_value().dtype == dtype
    assert wrapped.named_state()[f"{name}.t"] == 25


def test_momentum_rule_with_two_schedules_shares_one_counter():
    lr, mu = schedules.cosine_decay(0.1, 10), schedules.momentum_ramp(0.0, 0.9, 5)
    w = pytensor.shared(np.array([2.0]), name="w")
    g = pt.dvector("g")
    with updates.per_parameter():
        rule = updates.momentum([g], [w], learning_rate=lr, momentum=mu)
    assert [v.name for v in rule.state] == ["w.momentum.velocity", "momentum.t"]
    h = rule.hyperparameters
    step = pytensor.function([g], [h["learning_rate"], h["momentum"]], updates=rule, mode=MODE)
    p, v = 2.0, 0.0
    for t in range(12):
        used = step(np.array([p]))
        np.testing.assert_allclose(
            used, [ref_cosine(0.1, 10)(t), ref_momentum_ramp(0.0, 0.9, 5)(t)], rtol=1e-12
        )
        x = used[1] * v + (p - used[0] * p)
        p, v = x, x - p
        np.testing.assert_allclose(w.get_value(), [p], rtol=1e-13)


# -- reduce_on_plateau -----------------------------------------------------------------------------


def plateau_losses(seed=0, n=200):
    """Improvements, plateaus, improvements below the threshold, noise and a NaN."""
    rng = np.random.default_rng(seed)
    losses = list(1.0 / (1.0 + np.arange(15)))
    losses += [losses[-1]] * 12
    best = losses[-1]
    for _ in range(15):
        best *= 1 - 5e-5
        losses.append(best)
    losses += list(best * (1 + 0.05 * rng.standard_normal(40)))
    losses += [math.nan, best * 0.5, best * 0.5]
    losses += list(best * 0.5 * (1 - 0.01 * np.abs(rng.standard_normal(n - len(losses)))))
    return np.array(losses[:n])


PLATEAU_CONFIGS = [
    {"init_value": 0.1, "factor": 0.5, "patience": 3, "threshold": 1e-4, "cooldown": 0, "min_value": 0.0},
    {"init_value": 1.0, "factor": 0.1, "patience": 0, "threshold": 1e-2, "cooldown": 2, "min_value": 0.005},
    {"init_value": 0.3, "factor": 0.7, "patience": 5, "threshold": 0.0, "cooldown": 4, "min_value": 0.1},
    {"init_value": 0.05, "factor": 0.9, "patience": 1, "threshold": 0.02, "cooldown": 1, "min_value": 0.0},
]


def compile_plateau(config, dtype="float64"):
    loss = pt.dscalar("loss")
    lr = schedules.reduce_on_plateau(loss, **config)
    w = pytensor.shared(np.ones(2, dtype=dtype), name="w")
    g = pt.tensor(dtype=dtype, shape=(None,), name="g")
    step_updates = updates.sgd([g], [w], learning_rate=lr)
    step = pytensor.function(
        [g, loss], step_updates.hyperparameters["learning_rate"], updates=step_updates, mode=MODE
    )
    return step, step_updates, lr, w


@pytest.mark.parametrize("config", PLATEAU_CONFIGS, ids=range(len(PLATEAU_CONFIGS)))
def test_reduce_on_plateau_follows_its_algorithm(config):
    losses = plateau_losses()
    step, _, _, w = compile_plateau(config)
    grad = np.array([1.0, -1.0])
    used = np.array([step(grad, loss) for loss in losses])
    expected = plateau_reference(losses, **config)
    np.testing.assert_array_equal(used, expected)
    assert len(set(expected)) > 2  # the value was cut, more than once
    np.testing.assert_allclose(w.get_value(), 1.0 - np.cumsum(expected)[-1] * grad, rtol=1e-12)


@pytest.mark.parametrize("config", PLATEAU_CONFIGS, ids=range(len(PLATEAU_CONFIGS)))
def test_reduce_on_plateau_cuts_when_torch_does(config):
    torch = pytest.importorskip("torch")
    losses = plateau_losses(seed=1)
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=config["init_value"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config["factor"],
        patience=config["patience"],
        threshold=config["threshold"],
        threshold_mode="rel",
        cooldown=config["cooldown"],
        min_lr=config["min_value"],
        eps=0.0,
    )
    step, _, _, _ = compile_plateau(config)
    grad = np.zeros(2)
    for loss in losses:
        assert step(grad, loss) == optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step(loss)


def test_reduce_on_plateau_state_is_optimizer_state():
    config = PLATEAU_CONFIGS[1]
    step, step_updates, lr, _ = compile_plateau(config, dtype="float32")
    names = ["reduce_on_plateau.value", "reduce_on_plateau.best", "reduce_on_plateau.num_bad_steps"]
    names += ["reduce_on_plateau.cooldown_counter", "sgd.t"]
    assert [v.name for v in step_updates.state] == names
    assert lr.value in step_updates.state and lr(pt.lscalar()) is lr.value
    assert [v.tag.state.initial for v in step_updates.state[:4]] == [1.0, math.inf, 0, 0]
    assert [v.dtype for v in step_updates.state] == ["float64", "float64", "int64", "int64", "int64"]
    for loss in (1.0, 2.0, 2.0):
        step(np.ones(2, "float32"), loss)
    state = step_updates.named_state()
    assert state["reduce_on_plateau.best"] == 1.0
    assert state["reduce_on_plateau.value"] == pytest.approx(0.1)
    assert state["reduce_on_plateau.cooldown_counter"] == 1
    assert state["sgd.t"] == 3


def test_reduce_on_plateau_on_the_training_loss():
    """The loss of the same compiled call (before its update) drives the value."""
    w = pytensor.shared(np.array([1.0, -1.0]), name="w")
    target = pt.dvector("target")
    loss = ((w - target) ** 2).sum()
    lr = schedules.reduce_on_plateau(loss, 0.4, factor=0.5, patience=2, name="lr")
    step_updates = updates.momentum(loss, [w], learning_rate=lr, momentum=0.5)
    step = pytensor.function(
        [target], [loss, step_updates.hyperparameters["learning_rate"]], updates=step_updates, mode=MODE
    )
    losses, used = [], []
    rng = np.random.default_rng(3)
    for k in range(60):
        current_loss, rate = step(rng.normal(size=2) if k % 3 else np.zeros(2))
        losses.append(float(current_loss))
        used.append(float(rate))
    np.testing.assert_array_equal(used, plateau_reference(losses, 0.4, 0.5, 2, 1e-4, 0, 0.0))
    assert min(used) < 0.4
    assert {"lr.value", "lr.best", "lr.num_bad_steps", "lr.cooldown_counter"} <= set(
        step_updates.named_state()
    )


def test_state_of_joined_and_scaled_schedules_is_kept():
    loss = pt.dscalar("loss")
    plateau = schedules.reduce_on_plateau(loss, 0.1, patience=0, name="p")
    joined = schedules.join_schedules([schedules.linear_warmup(0.1, 3), schedules.scale(plateau, 2.0)], [3])
    w = pytensor.shared(np.zeros(1), name="w")
    g = pt.dvector("g")
    step_updates = updates.sgd([g], [w], learning_rate=joined)
    assert plateau.value in step_updates.state and plateau.best in step_updates.state
    step = pytensor.function(
        [g, loss], step_updates.hyperparameters["learning_rate"], updates=step_updates, mode=MODE
    )
    used = [float(step(np.zeros(1), x)) for x in (1.0, 1.0, 1.0, 1.0, 0.5, 0.5)]
    # warm-up on steps 0-2; the plateau sees every call's loss: cut after calls 2, 3 and 4
    np.testing.assert_allclose(used, [0.0, 1 / 30, 2 / 30, 2 * 1e-3, 2 * 1e-4, 2 * 1e-4], rtol=1e-12)


def test_a_rule_and_a_wrapper_sharing_a_plateau_schedule():
    """The same schedule given to a rule and to its wrapper: its state is kept once."""
    loss = pt.dscalar("loss")
    plateau = schedules.reduce_on_plateau(loss, 0.1, factor=0.5, patience=0)
    w = pytensor.shared(np.zeros(1), name="w")
    g = pt.dvector("g")
    wrapped = updates.apply_momentum(
        updates.sgd([g], [w], learning_rate=plateau), momentum=schedules.scale(plateau, 5.0)
    )
    assert sum(v is plateau.value for v in wrapped.state) == 1
    h = wrapped.hyperparameters
    step = pytensor.function(
        [g, loss], [h["learning_rate"], h["apply_momentum.momentum"]], updates=wrapped, mode=MODE
    )
    used = [step(np.ones(1), x) for x in (1.0, 1.0, 1.0)]
    np.testing.assert_allclose(used, [[0.1, 0.5], [0.1, 0.5], [0.05, 0.25]], rtol=1e-15)


@pytest.mark.parametrize("partial", [False, True], ids=["called", "partially-applied"])
def test_a_rule_hands_its_loss_to_a_plateau_built_without_one(partial):
    """reduce_on_plateau(init_value=...) given to a rule called with a scalar loss watches that
    loss: the same decisions as a plateau built with it (as pm.fit's partial application needs)."""
    w = pytensor.shared(np.array([1.0, -1.0]), name="w")
    target = pt.dvector("target")
    loss = ((w - target) ** 2).sum()
    lr = schedules.reduce_on_plateau(init_value=0.4, factor=0.5, patience=2, name="lr")
    assert lr.needs_loss and lr.loss is None
    if partial:
        step_updates = updates.momentum(learning_rate=lr, momentum=0.5)(loss, [w])
    else:
        step_updates = updates.momentum(loss, [w], learning_rate=lr, momentum=0.5)
    assert lr.needs_loss and lr.loss is None  # the schedule given is left as it was
    assert lr.value in step_updates.state and lr.best in step_updates.state
    assert step_updates.config[0]["learning_rate"] == repr(lr)
    step = pytensor.function(
        [target], [loss, step_updates.hyperparameters["learning_rate"]], updates=step_updates, mode=MODE
    )
    losses, used = [], []
    rng = np.random.default_rng(3)
    for k in range(60):
        current_loss, rate = step(rng.normal(size=2) if k % 3 else np.zeros(2))
        losses.append(float(current_loss))
        used.append(float(rate))
    np.testing.assert_array_equal(used, plateau_reference(losses, 0.4, 0.5, 2, 1e-4, 0, 0.0))
    assert min(used) < 0.4
    # the shared value is the one the next call uses
    assert lr.value.get_value() == plateau_reference([*losses, 0.0], 0.4, 0.5, 2, 1e-4, 0, 0.0)[-1]


def test_a_rule_hands_its_loss_to_the_plateau_inside_a_join_and_a_scale():
    w = pytensor.shared(np.array([2.0]), name="w")
    loss = ((w - 1.0) ** 2).sum() + 1.0  # stalls at 1: the plateau cuts
    plateau = schedules.reduce_on_plateau(init_value=0.2, factor=0.5, patience=0, name="p")
    joined = schedules.join_schedules([0.0, schedules.scale(plateau, 2.0)], [2])
    assert joined.needs_loss and schedules.scale(plateau, 2.0).needs_loss
    assert not schedules.join_schedules([0.1, 0.2], [2]).needs_loss
    step_updates = updates.sgd(loss, [w], learning_rate=joined)
    assert plateau.value in step_updates.state
    step = pytensor.function(
        [], [loss, step_updates.hyperparameters["learning_rate"]], updates=step_updates, mode=MODE
    )
    seen = [step() for _ in range(8)]
    losses, used = [float(x) for x, _ in seen], [float(r) for _, r in seen]
    plateau_used = plateau_reference(losses, 0.2, 0.5, 0, 1e-4, 0, 0.0)
    np.testing.assert_allclose(used, [0.0, 0.0, *(2.0 * plateau_used[2:])], rtol=1e-15)
    assert len(set(used[2:])) > 1


def test_a_plateau_without_a_loss_is_refused_by_a_rule_given_gradients():
    w = pytensor.shared(np.zeros(2), name="w")
    plateau = schedules.reduce_on_plateau(init_value=0.1)
    with pytest.raises(
        ValueError,
        match=r"^adam: learning_rate is reduce_on_plateau\(init_value=0.1, .*\), which watches a loss "
        r"it was built without, and adam was given gradients, not a scalar loss, .* or give adam the "
        r"scalar loss$",
    ):
        updates.adam([pt.dvector()], [w], learning_rate=plateau)
    with pytest.raises(ValueError, match=r"^momentum: learning_rate is join_schedules\(.*reduce_on_plateau"):
        updates.momentum(learning_rate=schedules.join_schedules([0.1, plateau], [3]))([pt.dvector()], [w])


@pytest.mark.parametrize("wrapper", [updates.apply_momentum, updates.apply_nesterov_momentum])
def test_a_plateau_without_a_loss_is_refused_by_a_wrapper(wrapper):
    w = pytensor.shared(np.zeros(2), name="w")
    rule = updates.sgd((w**2).sum(), [w], learning_rate=0.1)
    plateau = schedules.scale(schedules.reduce_on_plateau(init_value=0.5), 1.0)
    name = wrapper.__name__
    with pytest.raises(
        ValueError,
        match=rf"^{name}: momentum is scale\(schedule=reduce_on_plateau\(.*a wrapper has no loss to hand it; "
        r"build the schedule with the loss it should watch \(reduce_on_plateau\(loss, init_value=...\)\)$",
    ):
        wrapper(rule, momentum=plateau)


def test_the_state_of_a_plateau_without_a_loss_cannot_be_built():
    plateau = schedules.reduce_on_plateau(init_value=0.1)
    with pytest.raises(ValueError, match=r"^reduce_on_plateau\(init_value=0.1.*\) has no loss to watch"):
        plateau.state_updates()
    watching = plateau.with_loss(pt.dscalar())
    assert not watching.needs_loss and watching.value is plateau.value and repr(watching) == repr(plateau)
    assert set(watching.state_updates()) == {
        plateau.value,
        plateau.best,
        plateau.num_bad_steps,
        plateau.cooldown_counter,
    }
    assert watching.with_loss(pt.dscalar()) is watching


# -- live ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_live_value_changes_the_step_without_recompiling(dtype):
    lr, mu = updates.live(0.1, name="learning_rate"), updates.live(0.0, name="momentum")
    assert lr.dtype == "float64" and lr.ndim == 0 and lr.name == "learning_rate"
    w = pytensor.shared(np.array([1.0, -2.0], dtype=dtype), name="w")
    g = pt.tensor(dtype=dtype, shape=(None,), name="g")
    step_updates = updates.apply_momentum(updates.sgd([g], [w], learning_rate=lr), momentum=mu)
    assert step_updates.config[0]["learning_rate"] == "shared learning_rate"
    step = pytensor.function([g], [], updates=step_updates, mode=MODE)
    p, v = w.get_value(), np.zeros(2, dtype)
    for rate, momentum in [(0.1, 0.0), (0.5, 0.0), (0.5, 0.9), (0.01, 0.9), (0.0, 0.0)]:
        lr.set_value(rate)
        mu.set_value(momentum)
        grad = np.array([0.3, -0.2], dtype=dtype)
        step(grad)
        x = np.asarray(momentum, dtype) * v + (p - np.asarray(rate, dtype) * grad)
        p, v = x, x - p
        assert w.get_value().dtype == dtype
        np.testing.assert_allclose(w.get_value(), p, rtol=1e-6 if dtype == "float32" else 1e-14)


def test_live_values_are_accepted_by_every_hyperparameter():
    w = pytensor.shared(np.zeros(2, "float32"), name="w")
    step_updates = updates.adam(
        (w**2).sum(),
        [w],
        learning_rate=updates.live(0.01),
        beta1=updates.live(0.9),
        epsilon=updates.live(1e-8),
    )
    assert step_updates.hyperparameters["beta1"].dtype == "float64"
    assert all(step_updates[key].dtype == "float32" for key in step_updates if key.name != "adam.t")


def test_hyperparameter_values_are_the_numbers_the_next_call_uses(monkeypatch):
    """Updates.hyperparameters are expressions; hyperparameter_values() evaluates them without
    compiling the step (only PyTensor's Python linker runs), at every step as the step sees them."""
    w = pytensor.shared(np.zeros(2), name="w")
    rate, mu = updates.linear_warmup(1.0, 4), updates.live(0.5)
    built = updates.momentum((w**2).sum(), [w], learning_rate=rate, momentum=mu)
    step = pytensor.function([], [built.hyperparameters["learning_rate"]], updates=built)
    compiled_linkers = []
    function = pytensor.function

    def recording(*args, **kwargs):
        compiled_linkers.append(kwargs["mode"].linker)
        return function(*args, **kwargs)

    monkeypatch.setattr(pytensor, "function", recording)
    for expected in (0.0, 0.25, 0.5, 0.75, 1.0):
        values = built.hyperparameter_values()
        assert values == {"learning_rate": expected, "momentum": mu.get_value()}
        assert float(step()[0]) == values["learning_rate"]
        mu.set_value(mu.get_value() / 2)
    assert compiled_linkers and all(type(linker).__name__ == "PerformLinker" for linker in compiled_linkers)
