"""The equivalences with optax that ``docs/coming_from.md`` states, checked live against optax.

Each pair is run on the same stream of gradients (given as inputs, so that both sides see the
very same numbers) in float64 (JAX's 64-bit mode, inside a context), and the params must agree
after every step to 1e-10 relative. Schedules are compared value by value over their steps.
"""

from __future__ import annotations

import types

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import updates
from updates import schedules

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

STEPS = 50
SHAPES = [(3, 4), (5,), ()]

# (optax's transformation, this library's rule on (grads, params)): the rows of coming_from.md
# that say "the same".
RULES = {
    "sgd": (lambda: optax.sgd(0.1), lambda g, p: updates.sgd(g, p, learning_rate=0.1)),
    "momentum": (
        lambda: optax.sgd(0.05, momentum=0.8),
        lambda g, p: updates.momentum(g, p, learning_rate=0.05, momentum=0.8),
    ),
    "nesterov_momentum": (
        lambda: optax.sgd(0.05, momentum=0.8, nesterov=True),
        lambda g, p: updates.nesterov_momentum(g, p, learning_rate=0.05, momentum=0.8),
    ),
    "adagrad": (
        lambda: optax.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-6),
        lambda g, p: updates.adagrad(g, p, learning_rate=0.1, epsilon=1e-6),
    ),
    "rmsprop": (
        lambda: optax.rmsprop(0.01, decay=0.9, eps=1e-6),
        lambda g, p: updates.rmsprop(g, p, learning_rate=0.01, rho=0.9, epsilon=1e-6),
    ),
    "adadelta": (
        lambda: optax.adadelta(1.0, rho=0.95, eps=1e-6),
        lambda g, p: updates.adadelta(g, p, learning_rate=1.0, rho=0.95, epsilon=1e-6),
    ),
    "adam": (
        lambda: optax.adam(0.01, eps=0.0),
        lambda g, p: updates.adam(g, p, learning_rate=0.01, epsilon=0.0),
    ),
    "adamax": (
        lambda: optax.adamax(0.01, eps=0.0),
        lambda g, p: updates.adamax(g, p, learning_rate=0.01, epsilon=0.0),
    ),
    "adamw": (
        lambda: optax.adamw(0.01, weight_decay=0.1),
        lambda g, p: updates.adamw(g, p, learning_rate=0.01, weight_decay=0.1),
    ),
    "adabelief": (
        lambda: optax.adabelief(0.01, eps=1e-8, eps_root=1e-8),
        lambda g, p: updates.adabelief(g, p, learning_rate=0.01, epsilon=1e-8),
    ),
    "lion": (
        lambda: optax.lion(0.01, weight_decay=0.1),
        lambda g, p: updates.lion(g, p, learning_rate=0.01, weight_decay=0.1),
    ),
    "lamb": (lambda: optax.lamb(0.01), lambda g, p: updates.lamb(g, p, learning_rate=0.01)),
    "clip_by_global_norm then sgd": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.clip_by_global_norm(g, 1.0), p, learning_rate=0.1),
    ),
    "add_decayed_weights then sgd": (
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.add_weight_decay(g, p, 0.1), p, learning_rate=0.1),
    ),
    "zero_nans then sgd": (
        lambda: optax.chain(optax.zero_nans(), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.zero_nans(g), p, learning_rate=0.1),
    ),
    "centralize then sgd": (
        lambda: optax.chain(optax.centralize(), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.centralize(g), p, learning_rate=0.1),
    ),
    "adaptive_grad_clip then sgd": (
        lambda: optax.chain(optax.adaptive_grad_clip(0.3, eps=1e-2), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.adaptive_grad_clip(g, p, 0.3, eps=1e-2), p, learning_rate=0.1),
    ),
    "clip_by_block_rms then sgd": (
        lambda: optax.chain(optax.clip_by_block_rms(1.2), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.clip_by_block_rms(g, 1.2), p, learning_rate=0.1),
    ),
    "normalize_by_update_norm then sgd": (
        lambda: optax.chain(optax.normalize_by_update_norm(scale_factor=0.7, eps=1e-3), optax.sgd(0.1)),
        lambda g, p: updates.sgd(updates.normalize_by_update_norm(g, 0.7, 1e-3), p, learning_rate=0.1),
    ),
}


def gradient_stream(seed: int, with_nan: bool) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    stream = [[rng.normal(size=shape) * (1 + k % 3) for shape in SHAPES] for k in range(STEPS)]
    if with_nan:
        for k in (3, 17):
            stream[k][0][1, 2] = np.nan
    return stream


def optax_trajectory(transformation, start: list[np.ndarray], stream) -> list[list[np.ndarray]]:
    with jax.enable_x64(True):
        params = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(params)
        trajectory = []
        for grads in stream:
            steps, state = transformation.update([jax.numpy.asarray(g) for g in grads], state, params)
            params = optax.apply_updates(params, steps)
            trajectory.append([np.asarray(x) for x in params])
    return trajectory


@pytest.mark.parametrize("name", RULES)
def test_the_rules_coming_from_optax_calls_the_same_are_the_same(name):
    make_optax, rule = RULES[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in SHAPES]
    stream = gradient_stream(2, with_nan=name.startswith("zero_nans"))
    expected = optax_trajectory(make_optax(), start, stream)
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    step = pytensor.function(grads, [], updates=rule(grads, params))
    for k, (g, want) in enumerate(zip(stream, expected)):
        step(*g)
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.get_value(), w, rtol=1e-10, atol=1e-300, err_msg=f"step {k + 1}")


SCHEDULES = {
    "exponential_decay": (
        lambda: optax.exponential_decay(0.5, transition_steps=7, decay_rate=0.8),
        lambda: schedules.exponential_decay(0.5, 0.8, 7),
    ),
    "exponential_decay staircase": (
        lambda: optax.exponential_decay(0.5, transition_steps=7, decay_rate=0.8, staircase=True),
        lambda: schedules.exponential_decay(0.5, 0.8, 7, staircase=True),
    ),
    "polynomial": (
        lambda: optax.polynomial_schedule(0.5, 0.01, power=2.0, transition_steps=30),
        lambda: schedules.polynomial_decay(0.5, 0.01, 30, 2.0),
    ),
    "linear": (
        lambda: optax.linear_schedule(0.1, 0.6, transition_steps=20),
        lambda: schedules.linear_warmup(peak_value=0.6, warmup_steps=20, init_value=0.1),
    ),
    "cosine_decay": (
        lambda: optax.cosine_decay_schedule(0.5, decay_steps=30, alpha=0.1),
        lambda: schedules.cosine_decay(0.5, 30, 0.1),
    ),
    "warmup_cosine": (
        lambda: optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=5, decay_steps=40, end_value=0.05),
        lambda: schedules.warmup_cosine(1.0, 5, 40, init_value=0.0, end_value=0.05),
    ),
    "join_schedules": (
        lambda: optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, 10), optax.cosine_decay_schedule(1.0, 30)], [10]
        ),
        lambda: schedules.join_schedules(
            [schedules.linear_warmup(1.0, 10), schedules.cosine_decay(1.0, 30)], [10]
        ),
    ),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_schedules_coming_from_optax_maps_give_optax_values(name):
    """optax's schedule at count k (k updates done) is the value this library's uses at step k
    (the step counter before the step: 0 on the first)."""
    make_optax, make_ours = SCHEDULES[name]
    counts = np.arange(STEPS)
    with jax.enable_x64(True):
        expected = np.array([float(make_optax()(k)) for k in counts])
    t = pt.lscalar("t")
    ours = pytensor.function([t], make_ours()(t))
    np.testing.assert_allclose([float(ours(k)) for k in counts], expected, rtol=1e-12, atol=1e-15)


# -- rules compared on their state too -------------------------------------------------------------


def _linear(init_value: float, end_value: float, steps: int):
    """optax's linear_schedule in float64 (optax's own computes in float32 at its int32 count)."""
    return lambda count: (
        init_value + (end_value - init_value) * jax.numpy.minimum(count, steps).astype("float64") / steps
    )


def _optimistic_adam(learning_rate, **options):
    """optax.optimistic_adam (0.2.8 warns that it is deprecated for optimistic_adam_v2, whose
    parametrization differs: the form matched is this one)."""
    with pytest.warns(DeprecationWarning, match="optimistic_adam"):
        return optax.optimistic_adam(learning_rate, **options)


def _madgrad64(learning_rate, momentum=0.9, weight_decay=0.0, eps=1e-6):
    """optax.contrib.madgrad with its weight (lr + eps) sqrt(count + 1) in float64: optax takes the
    root of its int32 count in float32 (and with a constant learning rate the product too, a
    relative 1e-9 off); a float64 learning rate that undoes the float32 root keeps optax's code."""

    def rate(count):
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        root64 = jax.numpy.sqrt(count.astype("float64") + 1)
        root32 = jax.numpy.sqrt(count + 1).astype("float64")
        return (lr + eps) * root64 / root32 - eps

    return optax.contrib.madgrad(rate, momentum=momentum, weight_decay=weight_decay, eps=eps)


# (optax's transformation, this library's rule on (grads, params), {this library's slot: the field
# of optax's first state}): params and every slot are compared after each step.
STATE_RULES = {
    "adopt": (
        lambda: optax.contrib.adopt(0.01),
        lambda g, p: updates.adopt(g, p, learning_rate=0.01),
        {"m": "mu", "v": "nu"},
    ),
    "adopt nesterov unclipped": (
        lambda: optax.contrib.adopt(0.02, b1=0.8, b2=0.99, eps=1e-3, nesterov=True, use_clipping=False),
        lambda g, p: updates.adopt(
            g, p, learning_rate=0.02, beta1=0.8, beta2=0.99, epsilon=1e-3, use_clipping=False, nesterov=True
        ),
        {"m": "mu", "v": "nu"},
    ),
    "adopt clip_value_fn": (
        lambda: optax.contrib.adopt(0.01, b2=0.999, clip_value_fn=lambda k: k**0.5),
        lambda g, p: updates.adopt(g, p, learning_rate=0.01, beta2=0.999, clip_exponent=0.5),
        {"m": "mu", "v": "nu"},
    ),
    "ademamix": (
        lambda: optax.contrib.ademamix(0.01, b3=0.99, weight_decay=0.1),
        lambda g, p: updates.ademamix(g, p, learning_rate=0.01, beta3=0.99, weight_decay=0.1),
        {"m1": "m1", "m2": "m2", "nu": "nu"},
    ),
    "ademamix defaults": (
        lambda: optax.contrib.ademamix(0.01),
        lambda g, p: updates.ademamix(g, p, learning_rate=0.01),
        {"m1": "m1", "m2": "m2", "nu": "nu"},
    ),
    "ademamix alpha and beta3 schedules": (
        lambda: optax.contrib.ademamix(0.01, b3=_linear(0.9, 0.999, 30), alpha=_linear(0.0, 4.0, 20)),
        lambda g, p: updates.ademamix(
            g,
            p,
            learning_rate=0.01,
            beta3=schedules.linear_warmup(peak_value=0.999, warmup_steps=30, init_value=0.9),
            alpha=schedules.linear_warmup(peak_value=4.0, warmup_steps=20, init_value=0.0),
        ),
        {"m1": "m1", "m2": "m2", "nu": "nu"},
    ),
    "sign_sgd": (
        lambda: optax.sign_sgd(0.01),
        lambda g, p: updates.sign_sgd(g, p, learning_rate=0.01),
        {},
    ),
    "sign_sgd learning-rate schedule": (
        lambda: optax.sign_sgd(_linear(0.0, 0.02, 20)),
        lambda g, p: updates.sign_sgd(
            g, p, learning_rate=schedules.linear_warmup(peak_value=0.02, warmup_steps=20, init_value=0.0)
        ),
        {},
    ),
    "signum": (
        lambda: optax.signum(0.01, beta=0.8),
        lambda g, p: updates.signum(g, p, learning_rate=0.01, beta=0.8),
        {"m": "ema"},
    ),
    "signum defaults": (
        lambda: optax.signum(0.01),
        lambda g, p: updates.signum(g, p, learning_rate=0.01),
        {"m": "ema"},
    ),
    "adan": (
        lambda: optax.adan(0.01, b1=0.9, b2=0.8, b3=0.95, eps=1e-6, eps_root=1e-4, weight_decay=0.1),
        lambda g, p: updates.adan(
            g,
            p,
            learning_rate=0.01,
            beta1=0.9,
            beta2=0.8,
            beta3=0.95,
            epsilon=1e-6,
            epsilon_root=1e-4,
            weight_decay=0.1,
        ),
        {"m": "m", "v": "v", "n": "n", "prev": "g"},
    ),
    "adan defaults": (
        lambda: optax.adan(0.01),
        lambda g, p: updates.adan(g, p, learning_rate=0.01),
        {"m": "m", "v": "v", "n": "n", "prev": "g"},
    ),
    "novograd": (
        lambda: optax.novograd(0.01, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-3, weight_decay=0.1),
        lambda g, p: updates.novograd(
            g, p, learning_rate=0.01, beta1=0.8, beta2=0.5, epsilon=1e-4, epsilon_root=1e-3, weight_decay=0.1
        ),
        {"m": "mu", "v": "nu"},
    ),
    "novograd defaults": (
        lambda: optax.novograd(0.01),
        lambda g, p: updates.novograd(g, p, learning_rate=0.01),
        {"m": "mu", "v": "nu"},
    ),
    "zero_nans then novograd": (
        lambda: optax.chain(optax.zero_nans(), optax.novograd(0.01)),
        lambda g, p: updates.novograd(g, p, learning_rate=0.01, clear_nan=True),
        {"m": "mu", "v": "nu"},
    ),
    "fromage": (
        lambda: optax.fromage(0.1, min_norm=1e-3),
        lambda g, p: updates.fromage(g, p, learning_rate=0.1, min_norm=1e-3),
        {},
    ),
    "fromage defaults": (
        lambda: optax.fromage(0.01),
        lambda g, p: updates.fromage(g, p),
        {},
    ),
    "fromage learning-rate schedule": (
        lambda: optax.fromage(_linear(0.0, 0.2, 20)),
        lambda g, p: updates.fromage(
            g, p, learning_rate=schedules.linear_warmup(peak_value=0.2, warmup_steps=20, init_value=0.0)
        ),
        {},
    ),
    "optimistic_gradient_descent": (
        lambda: optax.optimistic_gradient_descent(0.05, alpha=0.7, beta=0.3),
        lambda g, p: updates.optimistic_gradient_descent(g, p, learning_rate=0.05, alpha=0.7, beta=0.3),
        {"prev": "previous_gradient"},
    ),
    "optimistic_gradient_descent defaults": (
        lambda: optax.optimistic_gradient_descent(0.001),
        lambda g, p: updates.optimistic_gradient_descent(g, p),
        {"prev": "previous_gradient"},
    ),
    "optimistic_gradient_descent learning-rate schedule": (
        lambda: optax.optimistic_gradient_descent(_linear(0.0, 0.05, 20)),
        lambda g, p: updates.optimistic_gradient_descent(
            g, p, learning_rate=schedules.linear_warmup(peak_value=0.05, warmup_steps=20, init_value=0.0)
        ),
        {"prev": "previous_gradient"},
    ),
    "optimistic_adam": (
        lambda: _optimistic_adam(0.05, optimism=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-4),
        lambda g, p: updates.optimistic_adam(
            g, p, learning_rate=0.05, optimism=0.02, beta1=0.8, beta2=0.99, epsilon=1e-6, epsilon_root=1e-4
        ),
        {"m": "mu", "v": "nu", "prev": "previous_gradient"},
    ),
    "optimistic_adam defaults": (
        lambda: _optimistic_adam(0.001),
        lambda g, p: updates.optimistic_adam(g, p),
        {"m": "mu", "v": "nu", "prev": "previous_gradient"},
    ),
    "optimistic_adam without nesterov": (
        lambda: _optimistic_adam(0.05, nesterov=False),
        lambda g, p: updates.optimistic_adam(g, p, learning_rate=0.05, nesterov=False),
        {"m": "mu", "v": "nu", "prev": "previous_gradient"},
    ),
    "zero_nans then optimistic_adam": (
        lambda: optax.chain(optax.zero_nans(), _optimistic_adam(0.05)),
        lambda g, p: updates.optimistic_adam(g, p, learning_rate=0.05, clear_nan=True),
        {"m": "mu", "v": "nu", "prev": "previous_gradient"},
    ),
    "simplified_ademamix": (
        lambda: optax.contrib.simplified_ademamix(
            0.001, b1=0.9, b2=0.9, alpha=2.0, eps=1e-6, eps_root=1e-4, weight_decay=0.1
        ),
        lambda g, p: updates.simplified_ademamix(
            g,
            p,
            learning_rate=0.001,
            beta1=0.9,
            beta2=0.9,
            alpha=2.0,
            epsilon=1e-6,
            epsilon_root=1e-4,
            weight_decay=0.1,
        ),
        {"m": "m", "nu": "n"},
    ),
    "simplified_ademamix defaults": (
        lambda: optax.contrib.simplified_ademamix(0.001),
        lambda g, p: updates.simplified_ademamix(g, p, learning_rate=0.001),
        {"m": "m", "nu": "n"},
    ),
    "simplified_ademamix alpha schedule": (
        lambda: optax.contrib.simplified_ademamix(0.001, alpha=_linear(0.0, 4.0, 20)),
        lambda g, p: updates.simplified_ademamix(
            g,
            p,
            learning_rate=0.001,
            alpha=schedules.linear_warmup(peak_value=4.0, warmup_steps=20, init_value=0.0),
        ),
        {"m": "m", "nu": "n"},
    ),
    "zero_nans then simplified_ademamix": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.simplified_ademamix(0.001)),
        lambda g, p: updates.simplified_ademamix(g, p, learning_rate=0.001, clear_nan=True),
        {"m": "m", "nu": "n"},
    ),
    "madgrad": (
        lambda: _madgrad64(0.05, momentum=0.8, weight_decay=0.1, eps=1e-4),
        lambda g, p: updates.madgrad(g, p, learning_rate=0.05, momentum=0.8, weight_decay=0.1, epsilon=1e-4),
        {"grad_sum_sq": "grad_sum_sq", "s": "s", "x0": "x0"},
    ),
    "madgrad defaults": (
        lambda: _madgrad64(0.01),
        lambda g, p: updates.madgrad(g, p, learning_rate=0.01),
        {"grad_sum_sq": "grad_sum_sq", "s": "s", "x0": "x0"},
    ),
    "madgrad learning-rate schedule": (
        lambda: _madgrad64(_linear(0.0, 0.05, 20)),
        lambda g, p: updates.madgrad(
            g, p, learning_rate=schedules.linear_warmup(peak_value=0.05, warmup_steps=20, init_value=0.0)
        ),
        {"grad_sum_sq": "grad_sum_sq", "s": "s", "x0": "x0"},
    ),
    "zero_nans then madgrad": (
        lambda: optax.chain(optax.zero_nans(), _madgrad64(0.01)),
        lambda g, p: updates.madgrad(g, p, learning_rate=0.01, clear_nan=True),
        {"grad_sum_sq": "grad_sum_sq", "s": "s", "x0": "x0"},
    ),
    "zero_nans then signum": (
        lambda: optax.chain(optax.zero_nans(), optax.signum(0.01)),
        lambda g, p: updates.signum(g, p, learning_rate=0.01, clear_nan=True),
        {"m": "ema"},
    ),
    "zero_nans then adan": (
        lambda: optax.chain(optax.zero_nans(), optax.adan(0.01)),
        lambda g, p: updates.adan(g, p, learning_rate=0.01, clear_nan=True),
        {"m": "m", "v": "v", "n": "n", "prev": "g"},
    ),
    "zero_nans then adopt": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.adopt(0.01)),
        lambda g, p: updates.adopt(g, p, learning_rate=0.01, clear_nan=True),
        {"m": "mu", "v": "nu"},
    ),
    "acprop": (
        lambda: optax.contrib.acprop(0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-4, weight_decay=0.1),
        lambda g, p: updates.acprop(
            g, p, learning_rate=0.01, beta1=0.8, beta2=0.99, epsilon=1e-6, epsilon_root=1e-4, weight_decay=0.1
        ),
        {"m": "mu", "s": "nu"},
    ),
    "acprop defaults": (
        lambda: optax.contrib.acprop(0.001),
        lambda g, p: updates.acprop(g, p),
        {"m": "mu", "s": "nu"},
    ),
    "acprop learning-rate schedule": (
        lambda: optax.contrib.acprop(_linear(0.0, 0.05, 20)),
        lambda g, p: updates.acprop(
            g, p, learning_rate=schedules.linear_warmup(peak_value=0.05, warmup_steps=20, init_value=0.0)
        ),
        {"m": "mu", "s": "nu"},
    ),
    "zero_nans then acprop": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.acprop(0.01)),
        lambda g, p: updates.acprop(g, p, learning_rate=0.01, clear_nan=True),
        {"m": "mu", "s": "nu"},
    ),
}


def _first_state_with(state, field: str):
    """The first record of optax's (possibly nested) state that has ``field``."""
    if hasattr(state, field):
        return state
    for part in state if isinstance(state, tuple) else ():
        found = _first_state_with(part, field)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("name", STATE_RULES)
def test_rules_match_optax_in_params_and_state(name):
    make_optax, rule, slots = STATE_RULES[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in SHAPES]
    stream = gradient_stream(2, with_nan=name.startswith("zero_nans"))
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = rule(grads, params)
    rule_name = result.config[0]["rule"]
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):  # optax's schedules fix their dtype when built
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, rtol=1e-10, atol=1e-300, err_msg=message)
                for slot, field in slots.items():
                    expected = getattr(_first_state_with(state, field), field)[i]
                    np.testing.assert_allclose(
                        ours[f"p{i}.{rule_name}.{slot}"],
                        expected,
                        rtol=1e-10,
                        atol=1e-300,
                        err_msg=f"{message} {slot}",
                    )
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


# -- Schedule-Free: params (y), the evaluation point x and the state ----------------------------------


def _warmup64(peak: float, steps: int):
    """optax's warmup_constant_schedule(0, peak, steps) in float64 (optax's own computes in
    float32 at its int32 count, a relative 1e-8 apart)."""
    return lambda count: peak * jax.numpy.minimum(count, steps).astype("float64") / steps


def _schedule_free_sgd64(learning_rate, warmup_steps, b1=0.9, weight_decay=0.0, weight_lr_power=2.0):
    """optax.contrib.schedule_free_sgd as optax composes it, with the warmup in float64."""
    rate = _warmup64(learning_rate, warmup_steps)
    base = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(rate))
    return optax.contrib.schedule_free(base, learning_rate=rate, b1=b1, weight_lr_power=weight_lr_power)


def _schedule_free_adamw64(
    learning_rate, warmup_steps, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_lr_power=2.0
):
    """optax.contrib.schedule_free_adamw as optax composes it, with the warmup in float64."""
    rate = _warmup64(learning_rate, warmup_steps)
    base = optax.chain(
        optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(rate),
    )
    return optax.contrib.schedule_free(base, learning_rate=rate, b1=b1, weight_lr_power=weight_lr_power)


# (optax's transformation, this library's rule, {this library's slot: optax's field}, tolerance).
# optax's own warmup schedule computes in float32 (learning rates a relative 1e-8 off, grown over
# the steps): its rows are compared to a relative 1e-5 (and an absolute 1e-7 for values near 0),
# the same composition with a float64 warmup to 1e-10.
EXACT = dict(rtol=1e-10, atol=1e-300)
FLOAT32_WARMUP = dict(rtol=1e-5, atol=1e-7)
SCHEDULE_FREE = {
    "sgd": (
        lambda: optax.contrib.schedule_free_sgd(0.1, b1=0.8, weight_decay=0.1, weight_lr_power=1.0),
        lambda g, p: updates.schedule_free_sgd(
            g, p, learning_rate=0.1, beta1=0.8, weight_decay=0.1, weight_lr_power=1.0
        ),
        {},
        EXACT,
    ),
    "sgd defaults": (
        lambda: optax.contrib.schedule_free_sgd(),
        lambda g, p: updates.schedule_free_sgd(g, p),
        {},
        EXACT,
    ),
    "sgd warmup": (
        lambda: _schedule_free_sgd64(0.1, 7, weight_decay=0.05),
        lambda g, p: updates.schedule_free_sgd(g, p, learning_rate=0.1, warmup_steps=7, weight_decay=0.05),
        {},
        EXACT,
    ),
    "sgd optax's warmup": (
        lambda: optax.contrib.schedule_free_sgd(0.1, warmup_steps=7),
        lambda g, p: updates.schedule_free_sgd(g, p, learning_rate=0.1, warmup_steps=7),
        {},
        FLOAT32_WARMUP,
    ),
    "adamw": (
        lambda: optax.contrib.schedule_free_adamw(0.01, weight_decay=0.1),
        lambda g, p: updates.schedule_free_adamw(g, p, learning_rate=0.01, weight_decay=0.1),
        {"v": "nu"},
        EXACT,
    ),
    "adamw defaults": (
        lambda: optax.contrib.schedule_free_adamw(),
        lambda g, p: updates.schedule_free_adamw(g, p),
        {"v": "nu"},
        EXACT,
    ),
    "adamw warmup": (
        lambda: _schedule_free_adamw64(
            0.01, 10, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1, weight_lr_power=1.0
        ),
        lambda g, p: updates.schedule_free_adamw(
            g,
            p,
            learning_rate=0.01,
            warmup_steps=10,
            beta1=0.8,
            beta2=0.99,
            epsilon=1e-6,
            weight_decay=0.1,
            weight_lr_power=1.0,
        ),
        {"v": "nu"},
        EXACT,
    ),
    "adamw optax's warmup": (
        lambda: optax.contrib.schedule_free_adamw(0.01, warmup_steps=10),
        lambda g, p: updates.schedule_free_adamw(g, p, learning_rate=0.01, warmup_steps=10),
        {"v": "nu"},
        FLOAT32_WARMUP,
    ),
    "zero_nans then adamw": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.schedule_free_adamw(0.01)),
        lambda g, p: updates.schedule_free_adamw(g, p, learning_rate=0.01, clear_nan=True),
        {"v": "nu"},
        EXACT,
    ),
}


@pytest.mark.parametrize("name", SCHEDULE_FREE)
def test_schedule_free_matches_optax_in_params_eval_params_and_state(name):
    """After each step: the params (optax's y), x (optax's schedule_free_eval_params, here the
    slot swap_averages puts in the params), z, the second moment and the scalars."""
    make_optax, rule, slots, tolerance = SCHEDULE_FREE[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in SHAPES]
    stream = gradient_stream(2, with_nan=name.startswith("zero_nans"))
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = rule(grads, params)
    rule_name = result.config[0]["rule"]
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            free = _first_state_with(state, "z")
            evaluated = optax.contrib.schedule_free_eval_params(free, theirs)
            message = f"step {k + 1}"
            for field in ("max_lr", "weight_sum"):
                want = getattr(free, field)
                np.testing.assert_allclose(
                    ours[f"{rule_name}.{field}"], want, **tolerance, err_msg=f"{message} {field}"
                )
            assert ours[f"{rule_name}.t"] == int(free.step_count) - 1 == k + 1
            for i, p in enumerate(params):
                np.testing.assert_allclose(p.get_value(), theirs[i], **tolerance, err_msg=f"{message}, p{i}")
                np.testing.assert_allclose(
                    ours[f"p{i}.{rule_name}.x"], evaluated[i], **tolerance, err_msg=f"{message}, p{i} x"
                )
                np.testing.assert_allclose(
                    ours[f"p{i}.{rule_name}.z"], free.z[i], **tolerance, err_msg=f"{message}, p{i} z"
                )
                for slot, field in slots.items():
                    want = getattr(_first_state_with(free.base_optimizer_state, field), field)[i]
                    np.testing.assert_allclose(
                        ours[f"p{i}.{rule_name}.{slot}"], want, **tolerance, err_msg=f"{message}, p{i} {slot}"
                    )
    with updates.swap_averages(result):
        for p, want in zip(params, evaluated):
            np.testing.assert_allclose(p.get_value(), want, **tolerance)
    for p, want in zip(params, theirs):
        np.testing.assert_allclose(p.get_value(), want, **tolerance)
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


# -- prodigy: its global estimate d, carried, and every slot ---------------------------------------

PRODIGY = {
    "defaults": (lambda: optax.contrib.prodigy(), lambda g, p: updates.prodigy(g, p)),
    "weight decay, beta3, d0": (
        lambda: optax.contrib.prodigy(0.5, betas=(0.8, 0.99), beta3=0.9, estim_lr0=1e-3, weight_decay=0.1),
        lambda g, p: updates.prodigy(
            g, p, learning_rate=0.5, beta1=0.8, beta2=0.99, beta3=0.9, d0=1e-3, weight_decay=0.1
        ),
    ),
    "safeguard_warmup and weight decay": (
        lambda: optax.contrib.prodigy(
            _linear(0.0, 1.0, 10), estim_lr0=1e-6, estim_lr_coef=0.5, weight_decay=0.05, safeguard_warmup=True
        ),
        lambda g, p: updates.prodigy(
            g,
            p,
            learning_rate=schedules.linear_warmup(peak_value=1.0, warmup_steps=10, init_value=0.0),
            d0=1e-6,
            d_coef=0.5,
            weight_decay=0.05,
            safeguard_warmup=True,
        ),
    ),
    "zero_nans then prodigy": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.prodigy(eps=1e-6)),
        lambda g, p: updates.prodigy(g, p, epsilon=1e-6, clear_nan=True),
    ),
}


@pytest.mark.parametrize("name", PRODIGY)
def test_prodigy_matches_optax_in_params_and_state(name):
    make_optax, rule = PRODIGY[name]
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape) for shape in SHAPES]
    # a steady pull in one direction under the noise, so that d grows
    stream = [[x + 0.5 for x in g] for g in gradient_stream(4, with_nan=name.startswith("zero_nans"))]
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = rule(grads, params)
    step = pytensor.function(grads, [], updates=result)
    tolerance = dict(rtol=1e-10, atol=1e-300)
    slots = {"m": "exp_avg", "v": "exp_avg_sq", "s": "grad_sum", "x0": "params0"}
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            found = _first_state_with(state, "estim_lr")
            message = f"step {k + 1}"
            np.testing.assert_allclose(ours["prodigy.d"], found.estim_lr, **tolerance, err_msg=f"{message} d")
            # a sum of terms of both signs, added in another order than XLA's: compared at the
            # precision it enters d with, d = r / sum|s| (an error of 1e-10 d sum|s| moves d by 1e-10 d)
            norm = sum(float(np.abs(s).sum()) for s in found.grad_sum)
            np.testing.assert_allclose(
                ours["prodigy.numerator"],
                found.numerator_weighted,
                rtol=1e-10,
                atol=1e-10 * float(found.estim_lr) * norm,
                err_msg=f"{message} numerator",
            )
            assert ours["prodigy.t"] == int(found.count) == k + 1
            for i, p in enumerate(params):
                np.testing.assert_allclose(p.get_value(), theirs[i], **tolerance, err_msg=f"{message}, p{i}")
                for slot, field in slots.items():
                    np.testing.assert_allclose(
                        ours[f"p{i}.prodigy.{slot}"],
                        getattr(found, field)[i],
                        **tolerance,
                        err_msg=f"{message}, p{i} {slot}",
                    )
    if not name.startswith("safeguard"):  # its warmup keeps d at d0 over these 50 steps
        assert result.named_state()["prodigy.d"] > 2e-6, "d did not grow from d0"
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


# -- the learning-rate-free rules (updates/parameter_free.py): params, slots and carried scalars ---

_COCOB = {"x0": "init_particles", "theta": "cumulative_gradients", "scale": "scale"}
_COCOB.update(subgradients="subgradients", reward="reward")
_DADAPT = {"m": "exp_avg", "v": "exp_avg_sq", "s": "grad_sum"}

# (optax's transformation, this library's rule, {slot: optax's field}, {carried scalar: optax's field})
PARAMETER_FREE = {
    "cocob": (lambda: optax.contrib.cocob(), lambda g, p: updates.cocob(g, p), _COCOB, {}),
    "cocob every argument, a learning-rate schedule": (
        lambda: optax.contrib.cocob(_linear(0.2, 1.0, 20), alpha=20.0, eps=1e-3, weight_decay=0.1),
        lambda g, p: updates.cocob(
            g,
            p,
            learning_rate=schedules.linear_warmup(peak_value=1.0, warmup_steps=20, init_value=0.2),
            alpha=20.0,
            epsilon=1e-3,
            weight_decay=0.1,
        ),
        _COCOB,
        {},
    ),
    "zero_nans then cocob": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.cocob()),
        lambda g, p: updates.cocob(g, p, clear_nan=True),
        _COCOB,
        {},
    ),
    "dog": (
        lambda: optax.contrib.dog(),
        lambda g, p: updates.dog(g, p),
        {"x0": "init_params"},
        {"max_dist": "max_dist", "sum_sq_norm_grads": "sum_sq_norm_grads"},
    ),
    "dog distance, weight decay, a learning-rate schedule": (
        lambda: optax.contrib.dog(
            _linear(0.0, 1.0, 10), init_step=("distance", 0.1), eps=1e-6, weight_decay=0.1
        ),
        lambda g, p: updates.dog(
            g,
            p,
            learning_rate=schedules.linear_warmup(peak_value=1.0, warmup_steps=10, init_value=0.0),
            init_step=("distance", 0.1),
            epsilon=1e-6,
            weight_decay=0.1,
        ),
        {"x0": "init_params"},
        {"max_dist": "max_dist", "sum_sq_norm_grads": "sum_sq_norm_grads"},
    ),
    "dog learning_rate": (
        lambda: optax.contrib.dog(0.5, init_step=("learning_rate", 0.01)),
        lambda g, p: updates.dog(g, p, learning_rate=0.5, init_step=("learning_rate", 0.01)),
        {"x0": "init_params"},
        {"max_dist": "max_dist", "sum_sq_norm_grads": "sum_sq_norm_grads"},
    ),
    "zero_nans then dog": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.dog(init_step=("heuristic", 1e-3))),
        lambda g, p: updates.dog(g, p, init_step=("heuristic", 1e-3), clear_nan=True),
        {"x0": "init_params"},
        {"max_dist": "max_dist", "sum_sq_norm_grads": "sum_sq_norm_grads"},
    ),
    "dowg": (
        lambda: optax.contrib.dowg(),
        lambda g, p: updates.dowg(g, p),
        {"x0": "init_params"},
        {"estim_sq_dist": "estim_sq_dist", "weighted_sq_norm_grads": "weighted_sq_norm_grads"},
    ),
    "dowg every argument, a learning-rate schedule": (
        lambda: optax.contrib.dowg(
            _linear(0.2, 1.0, 20), init_estim_sq_dist=0.01, eps=1e-3, weight_decay=0.1
        ),
        lambda g, p: updates.dowg(
            g,
            p,
            learning_rate=schedules.linear_warmup(peak_value=1.0, warmup_steps=20, init_value=0.2),
            init_estim_sq_dist=0.01,
            epsilon=1e-3,
            weight_decay=0.1,
        ),
        {"x0": "init_params"},
        {"estim_sq_dist": "estim_sq_dist", "weighted_sq_norm_grads": "weighted_sq_norm_grads"},
    ),
    "zero_nans then dowg": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.dowg()),
        lambda g, p: updates.dowg(g, p, clear_nan=True),
        {"x0": "init_params"},
        {"estim_sq_dist": "estim_sq_dist", "weighted_sq_norm_grads": "weighted_sq_norm_grads"},
    ),
    "dadapt_adamw": (
        lambda: optax.contrib.dadapt_adamw(),
        lambda g, p: updates.dadapt_adamw(g, p),
        _DADAPT,
        {"d": "estim_lr", "numerator": "numerator_weighted"},
    ),
    "dadapt_adamw every argument, a learning-rate schedule": (
        lambda: optax.contrib.dadapt_adamw(
            _linear(0.2, 1.0, 10), betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-3, weight_decay=0.1
        ),
        lambda g, p: updates.dadapt_adamw(
            g,
            p,
            learning_rate=schedules.linear_warmup(peak_value=1.0, warmup_steps=10, init_value=0.2),
            beta1=0.8,
            beta2=0.99,
            epsilon=1e-6,
            d0=1e-3,
            weight_decay=0.1,
        ),
        _DADAPT,
        {"d": "estim_lr", "numerator": "numerator_weighted"},
    ),
    "zero_nans then dadapt_adamw": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.dadapt_adamw()),
        lambda g, p: updates.dadapt_adamw(g, p, clear_nan=True),
        _DADAPT,
        {"d": "estim_lr", "numerator": "numerator_weighted"},
    ),
}


@pytest.mark.parametrize("name", PARAMETER_FREE)
def test_parameter_free_rules_match_optax_in_params_and_state(name):
    make_optax, rule, slots, carried = PARAMETER_FREE[name]
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape) for shape in SHAPES]
    # a steady pull in one direction under the noise, so that the estimated step sizes grow
    stream = [[x + 0.5 for x in g] for g in gradient_stream(4, with_nan=name.startswith("zero_nans"))]
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = rule(grads, params)
    rule_name = result.config[0]["rule"]
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            message = f"step {k + 1}"
            for scalar, field in carried.items():
                found = getattr(_first_state_with(state, field), field)
                np.testing.assert_allclose(
                    ours[f"{rule_name}.{scalar}"], found, **EXACT, err_msg=f"{message} {scalar}"
                )
            assert ours[f"{rule_name}.t"] == k + 1
            for i, p in enumerate(params):
                np.testing.assert_allclose(p.get_value(), theirs[i], **EXACT, err_msg=f"{message}, p{i}")
                for slot, field in slots.items():
                    np.testing.assert_allclose(
                        ours[f"p{i}.{rule_name}.{slot}"],
                        getattr(_first_state_with(state, field), field)[i],
                        **EXACT,
                        err_msg=f"{message}, p{i} {slot}",
                    )
    assert not np.array_equal(params[1].get_value(), start[1]), "trajectory did not move"


UNIT_SHAPES = [(1, 5), (5, 1), (2, 3, 4), (1, 1, 3), (2, 2, 3, 4), (1, 1, 1, 4), (2, 1, 2, 3, 2), (4,), ()]


@pytest.mark.parametrize("static", [True, False], ids=["static shapes", "run-time shapes"])
def test_adaptive_grad_clip_units_match_optax(static):
    """optax's unit-wise norm by rank (squeezed to at most one long axis: the whole tensor),
    with the shapes known when the graph is built or only when it runs."""
    rng = np.random.default_rng(5)
    start = [rng.normal(size=shape) for shape in UNIT_SHAPES]
    stream = [[rng.normal(size=shape) * (1 + k % 3) for shape in UNIT_SHAPES] for k in range(25)]
    make = optax.chain(optax.adaptive_grad_clip(0.2), optax.sgd(0.1))
    expected = optax_trajectory(make, start, stream)
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [
        pt.tensor(f"g{i}", dtype="float64", shape=shape if static else (None,) * len(shape))
        for i, shape in enumerate(UNIT_SHAPES)
    ]
    rule = updates.chain(updates.adaptive_grad_clip(clipping=0.2), updates.sgd(learning_rate=0.1))
    step = pytensor.function(grads, [], updates=rule(grads, params))
    for k, (g, want) in enumerate(zip(stream, expected)):
        step(*g)
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.get_value(), w, **EXACT, err_msg=f"step {k + 1}")


# -- polyak_sgd: the step size from the loss value, given the same losses and gradients ----------------

POLYAK = {
    "defaults": (lambda: optax.polyak_sgd(), dict()),
    "every argument": (
        lambda: optax.polyak_sgd(max_learning_rate=0.3, scaling=0.7, f_min=0.5, eps=0.1),
        dict(learning_rate=0.7, max_learning_rate=0.3, f_min=0.5, epsilon=0.1),
    ),
    "sps+ with f_min above some losses": (
        lambda: optax.polyak_sgd(f_min=15.0, variant="sps+"),
        dict(f_min=15.0, variant="sps+"),
    ),
    "sps with f_min above some losses": (lambda: optax.polyak_sgd(f_min=15.0), dict(f_min=15.0)),
    "scaling as a learning-rate schedule": (
        lambda: optax.polyak_sgd(scaling=_linear(0.2, 1.5, 20), max_learning_rate=0.8),
        dict(
            learning_rate=schedules.linear_warmup(peak_value=1.5, warmup_steps=20, init_value=0.2),
            max_learning_rate=0.8,
        ),
    ),
}


@pytest.mark.parametrize("name", POLYAK)
def test_polyak_sgd_matches_optax_given_the_same_losses(name):
    """A loss of the params and of a data stream: optax gets its value and gradients from JAX
    (``value=``), this rule the scalar loss, its value computed in the same step."""
    make_optax, hyper = POLYAK[name]
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape) for shape in SHAPES]
    data = [[rng.normal(size=shape) for shape in SHAPES] for _ in range(STEPS)]
    weights = [1.0, 0.5, 2.0]

    def loss_of(ps, xs, np_):
        return 0.05 + sum(w * np_.sum((p - x) ** 2) for w, p, x in zip(weights, ps, xs))

    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    xs = [pt.tensor(f"x{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = updates.polyak_sgd(loss_of(params, xs, pt), params, **hyper)
    step = pytensor.function(xs, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        value_and_grad = jax.value_and_grad(lambda ps, d: loss_of(ps, d, jax.numpy))
        for k, x in enumerate(data):
            value, grads = value_and_grad(theirs, [jax.numpy.asarray(v) for v in x])
            steps, state = transformation.update(grads, state, theirs, value=value)
            theirs = optax.apply_updates(theirs, steps)
            step(*x)
            for i, (p, want) in enumerate(zip(params, theirs)):
                np.testing.assert_allclose(
                    p.get_value(), want, rtol=1e-10, atol=1e-300, err_msg=f"step {k + 1}, p{i}"
                )
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


def test_polyak_sgd_refuses_gradients_only():
    params = [pytensor.shared(np.ones(3), name="w")]
    with pytest.raises(TypeError, match=r"^polyak_sgd: needs the scalar loss .* got a list of gradients"):
        updates.polyak_sgd([pt.vector("g")], params)
    with pytest.raises(TypeError, match=r"^polyak_sgd: needs the scalar loss .* got a list of gradients"):
        updates.polyak_sgd(f_min=0.1)([pt.vector("g")], params)
    with pytest.raises(ValueError, match=r"^polyak_sgd: variant must be 'sps' or 'sps\+', got 'sps-'"):
        updates.polyak_sgd(variant="sps-")


# -- momo, momo_adam: the loss value inside the step, given the same losses and gradients ----------

MOMO = {
    "momo defaults": (lambda: optax.contrib.momo(), updates.momo, dict()),
    "momo every argument": (
        lambda: optax.contrib.momo(0.3, beta=0.8, lower_bound=-1.0, weight_decay=0.1),
        updates.momo,
        dict(learning_rate=0.3, beta=0.8, lower_bound=-1.0, weight_decay=0.1),
    ),
    "momo adapt_lower_bound": (
        lambda: optax.contrib.momo(0.3, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True),
        updates.momo,
        dict(learning_rate=0.3, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True),
    ),
    "momo learning-rate schedule": (
        lambda: optax.contrib.momo(_linear(0.1, 0.8, 20)),
        updates.momo,
        dict(learning_rate=schedules.linear_warmup(peak_value=0.8, warmup_steps=20, init_value=0.1)),
    ),
    "momo_adam defaults": (lambda: optax.contrib.momo_adam(), updates.momo_adam, dict()),
    "momo_adam every argument": (
        lambda: optax.contrib.momo_adam(0.1, b1=0.8, b2=0.95, eps=1e-6, lower_bound=-1.0, weight_decay=0.1),
        updates.momo_adam,
        dict(learning_rate=0.1, beta1=0.8, beta2=0.95, epsilon=1e-6, lower_bound=-1.0, weight_decay=0.1),
    ),
    "momo_adam adapt_lower_bound": (
        lambda: optax.contrib.momo_adam(0.1, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True),
        updates.momo_adam,
        dict(learning_rate=0.1, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True),
    ),
    "momo_adam learning-rate schedule": (
        lambda: optax.contrib.momo_adam(_linear(0.01, 0.2, 20)),
        updates.momo_adam,
        dict(learning_rate=schedules.linear_warmup(peak_value=0.2, warmup_steps=20, init_value=0.01)),
    ),
}


@pytest.mark.parametrize("name", MOMO)
def test_momo_matches_optax_given_the_same_losses(name):
    """optax gets the loss value and gradients from JAX (``value=``), this rule the scalar loss;
    params after every step, and the state (m, v, barf, gamma, lb) after the last."""
    make_optax, rule, hyper = MOMO[name]
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape) for shape in SHAPES]
    data = [[rng.normal(size=shape) for shape in SHAPES] for _ in range(STEPS)]
    weights = [1.0, 0.5, 2.0]

    def loss_of(ps, xs, np_):
        return 0.05 + sum(w * np_.sum((p - x) ** 2) for w, p, x in zip(weights, ps, xs))

    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    xs = [pt.tensor(f"x{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = rule(loss_of(params, xs, pt), params, **hyper)
    step = pytensor.function(xs, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        value_and_grad = jax.value_and_grad(lambda ps, d: loss_of(ps, d, jax.numpy))
        for k, x in enumerate(data):
            value, grads = value_and_grad(theirs, [jax.numpy.asarray(v) for v in x])
            steps, state = transformation.update(grads, state, theirs, value=value)
            theirs = optax.apply_updates(theirs, steps)
            step(*x)
            for i, (p, want) in enumerate(zip(params, theirs)):
                np.testing.assert_allclose(p.get_value(), want, **EXACT, err_msg=f"step {k + 1}, p{i}")
    ours, who = result.named_state(), rule.__name__
    slots = {"m": state.exp_avg, **({"v": state.exp_avg_sq} if who == "momo_adam" else {})}
    for slot, values in slots.items():
        for i, want in enumerate(values):
            np.testing.assert_allclose(ours[f"p{i}.{who}.{slot}"], want, **EXACT, err_msg=slot)
    for scalar in ("barf", "gamma", "lb"):
        np.testing.assert_allclose(ours[f"{who}.{scalar}"], getattr(state, scalar), **EXACT, err_msg=scalar)
    assert ours[f"{who}.t"] == STEPS == int(state.count)
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


# -- sophia: the Hessian-diagonal estimate inside the step, optax's estimator given the same signs ---

SOPHIA = {
    "defaults": (dict(learning_rate=0.05), dict(learning_rate=0.05)),
    "every argument, unclipped": (
        dict(
            learning_rate=0.05,
            b1=0.8,
            b2=0.9,
            eps=0.5,
            weight_decay=0.1,
            gamma=0.5,
            clip_threshold=None,
            update_interval=3,
        ),
        dict(
            learning_rate=0.05,
            beta1=0.8,
            beta2=0.9,
            epsilon=0.5,
            weight_decay=0.1,
            gamma=0.5,
            clip_threshold=None,
            update_interval=3,
            seed=5,
        ),
    ),
    "clipped, refreshed every step, learning-rate schedule": (
        dict(learning_rate=_linear(0.01, 0.1, 20), gamma=0.2, clip_threshold=0.5, update_interval=1),
        dict(
            learning_rate=schedules.linear_warmup(peak_value=0.1, warmup_steps=20, init_value=0.01),
            gamma=0.2,
            clip_threshold=0.5,
            update_interval=1,
            seed=11,
        ),
    ),
}


def _hutchinson_with_signs(seed, shapes, interval, steps):
    """optax's Hutchinson estimator (u * (H u), H u a JVP of the gradient) drawing the signs of
    updates.sophia (tests/reference.py's hutchinson_signs) in place of its JAX key: its n-th call
    is step n k + 1 (optax calls it under lax.cond, so the signs are a table indexed by its count)."""
    from reference import hutchinson_signs

    tables = [
        jax.numpy.asarray(np.stack([hutchinson_signs(seed, i, n * interval + 1, s) for n in range(steps)]))
        for i, s in enumerate(shapes)
    ]

    def init(params):
        return jax.numpy.zeros([], jax.numpy.int32)

    def update(updates_, count, params=None, obj_fn=None, **extra):
        signs = [table[count] for table in tables]
        products = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return [hu * u for hu, u in zip(products, signs)], count + 1

    return optax.GradientTransformationExtraArgs(init, update)


@pytest.mark.parametrize("name", SOPHIA)
def test_sophia_matches_optax_given_the_same_signs(name):
    """optax.contrib.sophia with its Hutchinson estimator fed this rule's random signs; a loss
    whose Hessian is not diagonal (so the estimate depends on the signs) and positive definite;
    params after every step, state (m, nu) after the last."""
    theirs_hyper, hyper = SOPHIA[name]
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape) for shape in SHAPES]
    data = [[rng.normal(size=shape) for shape in SHAPES] for _ in range(STEPS)]
    weights = [1.0, 0.5, 2.0]

    def loss_of(ps, xs, np_):
        separate = sum(
            w * np_.sum((p - x) ** 2 + 0.1 * p**4 + 0.5 * x**2 * p**2) for w, p, x in zip(weights, ps, xs)
        )
        return separate + 0.3 * sum(np_.sum(p * x) for p, x in zip(ps, xs)) ** 2

    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    xs = [pt.tensor(f"x{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    result = updates.sophia(loss_of(params, xs, pt), params, **hyper)
    step = pytensor.function(xs, [], updates=result)
    seed, interval = hyper.get("seed", 0), hyper.get("update_interval", 10)
    with jax.enable_x64(True):
        transformation = optax.contrib.sophia(
            hessian_diagonal_fn=_hutchinson_with_signs(seed, SHAPES, interval, STEPS), **theirs_hyper
        )
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, x in enumerate(data):
            batch = [jax.numpy.asarray(v) for v in x]

            def objective(ps, batch=batch):
                return loss_of(ps, batch, jax.numpy)

            steps, state = transformation.update(jax.grad(objective)(theirs), state, theirs, obj_fn=objective)
            theirs = optax.apply_updates(theirs, steps)
            step(*x)
            for i, (p, want) in enumerate(zip(params, theirs)):
                np.testing.assert_allclose(p.get_value(), want, **EXACT, err_msg=f"step {k + 1}, p{i}")
    ours, sophia_state = result.named_state(), state[0]
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(ours[f"p{i}.sophia.m"], sophia_state.mu[i], **EXACT, err_msg="m")
        np.testing.assert_allclose(ours[f"p{i}.sophia.nu"], sophia_state.nu[i], **EXACT, err_msg="nu")
    assert ours["sophia.t"] == STEPS == int(sophia_state.count)
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


# -- sam and mechanize: rules over a base rule (updates.meta), given the same losses ---------------

_META_WEIGHTS = [1.0, 0.5, 2.0]


def _meta_loss(ps, xs, np_):
    """A loss of the params and of a data stream, with a cubic gradient (so SAM's two gradients
    differ): sum w ((p - x)**2 + 0.1 p**4)."""
    return sum(w * np_.sum((p - x) ** 2 + 0.1 * p**4) for w, p, x in zip(_META_WEIGHTS, ps, xs))


def _meta_problem(seed: int):
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=shape) for shape in SHAPES]
    data = [[rng.normal(size=shape) for shape in SHAPES] for _ in range(STEPS)]
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    xs = [pt.tensor(f"x{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    return start, data, params, xs


def _assert_base_state(ours, state, i, message):
    """The base rule's state (this library's adam) against optax's adam inside ``state``."""
    for slot, field in (("m", "mu"), ("v", "nu")):
        expected = getattr(_first_state_with(state, field), field)[i]
        np.testing.assert_allclose(
            ours[f"p{i}.adam.{slot}"], expected, rtol=1e-10, atol=1e-300, err_msg=f"{message} {slot}"
        )


@pytest.mark.parametrize("opaque", [True, False], ids=["opaque_mode", "two calls a step"])
def test_sam_matches_optax_one_step_sam(opaque):
    """optax.contrib.sam(adam, chain(normalize(), sgd(rho)), sync_period=2): with
    ``opaque_mode=True`` one call is one SAM step, given ``grad_fn`` (here the loss, differentiated
    at the perturbed params in the same compiled step); in its default mode the first call moves
    the params to p + rho g/|g| and the second, given the gradient there, to the base rule's step
    from p: every second call equals one call here. Params and the base rule's state."""
    start, data, params, xs = _meta_problem(3)
    base = updates.adam(learning_rate=0.01, beta2=0.99, epsilon=0.0)
    result = updates.sam(_meta_loss(params, xs, pt), params, rule=base, rho=0.1)
    step = pytensor.function(xs, [], updates=result)
    with jax.enable_x64(True):
        transformation = optax.contrib.sam(
            optax.adam(0.01, b2=0.99, eps=0.0),
            optax.chain(optax.contrib.normalize(), optax.sgd(0.1)),
            sync_period=2,
            opaque_mode=opaque,
        )
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, x in enumerate(data):
            batch = [jax.numpy.asarray(v) for v in x]
            grad_fn = jax.grad(lambda ps, _, b=batch: _meta_loss(ps, b, jax.numpy))
            for _ in range(1 if opaque else 2):  # the ascent call, then the descent call
                extra = {"grad_fn": grad_fn} if opaque else {}
                steps, state = transformation.update(grad_fn(theirs, 0), state, theirs, **extra)
                theirs = optax.apply_updates(theirs, steps)
            step(*x)
            ours = result.named_state()
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, rtol=1e-10, atol=1e-300, err_msg=message)
                _assert_base_state(ours, state, i, message)
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


def test_sam_differs_from_optax_on_a_zero_gradient():
    """optax's normalize divides by a zero norm (NaN params); here the perturbation is 0."""
    with jax.enable_x64(True):
        transformation = optax.contrib.sam(
            optax.sgd(0.1), optax.chain(optax.contrib.normalize(), optax.sgd(0.1)), opaque_mode=True
        )
        zero = [jax.numpy.zeros(3)]
        steps, _ = transformation.update(
            zero, transformation.init(zero), zero, grad_fn=jax.grad(lambda ps, _: (ps[0] ** 2).sum())
        )
        assert np.isnan(np.asarray(steps[0])).all()
    w = pytensor.shared(np.zeros(3), name="w")
    pytensor.function([], [], updates=updates.sam((w**2).sum(), [w], rule=updates.sgd(learning_rate=0.1)))()
    np.testing.assert_array_equal(w.get_value(), np.zeros(3))


def test_mechanize_matches_optax_in_params_and_state():
    """optax.contrib.mechanize(adam) with its defaults but s_init: params, its state (x0, r, m, v,
    s, count) and the base rule's."""
    start, data, params, xs = _meta_problem(5)
    base = updates.adam(learning_rate=1.0, beta2=0.99, epsilon=0.0)
    result = updates.mechanize(_meta_loss(params, xs, pt), params, rule=base, s_init=1e-4)
    step = pytensor.function(xs, [], updates=result)
    with jax.enable_x64(True):
        transformation = optax.contrib.mechanize(optax.adam(1.0, b2=0.99, eps=0.0), s_init=1e-4)
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, x in enumerate(data):
            batch = [jax.numpy.asarray(v) for v in x]
            grads = jax.grad(lambda ps, b=batch: _meta_loss(ps, b, jax.numpy))(theirs)
            steps, state = transformation.update(grads, state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*x)
            ours = result.named_state()
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, rtol=1e-10, atol=1e-300, err_msg=message)
                np.testing.assert_allclose(ours[f"p{i}.mechanize.x0"], state.x0[i], rtol=1e-10, atol=1e-300)
                _assert_base_state(ours, state.base_optimizer_state, i, message)
            for slot in "rmvs":
                expected = getattr(state, slot)
                message = f"step {k + 1} {slot}"
                np.testing.assert_allclose(ours[f"mechanize.{slot}"], expected, rtol=1e-10, err_msg=message)
            assert ours["mechanize.t"] == int(state.count)
    assert ours["mechanize.s"].sum() > 1e-2, "the scale did not grow"
    assert not np.allclose(params[1].get_value(), start[1]), "trajectory did not move"


def test_madgrad_matches_optax_own_float32_weight_closely():
    """optax.contrib.madgrad as it is: its weight (lr + eps) sqrt(count + 1) in float32 (see
    _madgrad64) puts its float64 trajectory a relative 1e-9 or so from this rule's."""
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in SHAPES]
    stream = gradient_stream(2, with_nan=False)
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SHAPES)]
    step = pytensor.function(grads, [], updates=updates.madgrad(grads, params, learning_rate=0.01))
    with jax.enable_x64(True):
        transformation = optax.contrib.madgrad(0.01)
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, rtol=1e-6, atol=1e-9, err_msg=message)


# -- sm3: the accumulators of the slices of each axis, of their own shapes -------------------------

SM3_SHAPES = [(3, 4), (5,), (2, 3, 4)]  # optax's scale_by_sm3 fails on a scalar (no accumulator)

SM3 = {
    "defaults": (lambda: optax.sm3(0.1), lambda g, p: updates.sm3(g, p)),
    "momentum": (lambda: optax.sm3(0.05, momentum=0.5), lambda g, p: updates.sm3(g, p, 0.05, momentum=0.5)),
    "no momentum": (
        lambda: optax.sm3(0.05, momentum=0.0),
        lambda g, p: updates.sm3(g, p, 0.05, momentum=0.0),
    ),
    "zero_nans then sm3": (
        lambda: optax.chain(optax.zero_nans(), optax.sm3(0.1)),
        lambda g, p: updates.sm3(g, p, clear_nan=True),
    ),
}


@pytest.mark.parametrize("name", SM3)
def test_sm3_matches_optax_in_params_and_state(name):
    make_optax, rule = SM3[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in SM3_SHAPES]
    stream = [[rng.normal(size=shape) * (1 + k % 3) for shape in SM3_SHAPES] for k in range(STEPS)]
    if name.startswith("zero_nans"):
        stream[3][0][1, 2] = stream[17][2][1, 0, 3] = np.nan
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(SM3_SHAPES)]
    result = rule(grads, params)
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = transformation.update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            found = _first_state_with(state, "mu")
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, **EXACT, err_msg=message)
                expected = {"nu": found.nu[i]}
                names = [f"mu_{j}" for j in range(p.ndim)] if p.ndim >= 2 else ["mu"]
                expected.update((slot, found.mu[i][j]) for j, slot in enumerate(names))
                for slot, want in expected.items():
                    got = ours[f"p{i}.sm3.{slot}"].reshape(np.shape(want))  # optax's mu[i][j]: (n_j,)
                    np.testing.assert_allclose(got, want, **EXACT, err_msg=f"{message} {slot}")
    assert not np.allclose(params[2].get_value(), start[2]), "trajectory did not move"


# -- galore: the projector, and the base Adam's moments in the projected space ---------------------

GALORE_SHAPES = [(4, 3), (3, 5), (5,), ()]  # projected on the left, on the right; Adam's


class _Float64SignedJnp(types.ModuleType):
    """jax.numpy for optax's galore module with the two choices this library makes otherwise:
    the SVD in float64 (optax casts the gradient to float32 first) and the singular vectors of
    the projected side signed so that the entry of largest magnitude is positive (optax takes
    ``jnp.linalg.svd``'s signs, on which its trajectory depends; see updates.galore's Notes)."""

    float32 = jax.numpy.float64

    def __getattr__(self, name):
        return getattr(jax.numpy, name)

    class linalg:  # stands for the module jnp.linalg
        @staticmethod
        def svd(x, full_matrices=True):
            u, s, vt = jax.numpy.linalg.svd(x, full_matrices=full_matrices)
            side = u if x.shape[0] >= x.shape[1] else vt.T  # the one galore projects on
            signs = jax.numpy.where(side.max(axis=0) >= -side.min(axis=0), 1.0, -1.0).astype(u.dtype)
            return u * signs, s, vt * signs[:, None]  # u and v flip together


@pytest.fixture
def galore64(monkeypatch):
    """optax.contrib.galore with the SVD of _Float64SignedJnp, while the test runs."""
    import importlib

    monkeypatch.setattr(importlib.import_module("optax.contrib._galore"), "jnp", _Float64SignedJnp("jnp"))
    return optax.contrib.galore


GALORE = {
    "rank 2, refreshed every 3 steps": (
        lambda galore: galore(
            0.01,
            rank=2,
            update_proj_gap=3,
            scale=0.5,
            base_optimizer=optax.scale_by_adam(b1=0.8, b2=0.99, eps=1e-6),
            weight_decay=0.1,
        ),
        lambda g, p: updates.galore(
            g,
            p,
            0.01,
            rank=2,
            update_proj_gap=3,
            scale=0.5,
            weight_decay=0.1,
            beta1=0.8,
            beta2=0.99,
            epsilon=1e-6,
        ),
    ),
    "rank 1, refreshed every 7 steps": (
        lambda galore: galore(0.02, rank=1, update_proj_gap=7),
        lambda g, p: updates.galore(g, p, 0.02, rank=1, update_proj_gap=7),
    ),
    "defaults (full rank, one projector)": (lambda galore: galore(0.01), lambda g, p: updates.galore(g, p)),
    "learning-rate schedule": (
        lambda galore: galore(_linear(0.0, 0.05, 20), rank=2, update_proj_gap=5),
        lambda g, p: updates.galore(
            g,
            p,
            schedules.linear_warmup(peak_value=0.05, warmup_steps=20, init_value=0.0),
            rank=2,
            update_proj_gap=5,
        ),
    ),
    "zero_nans then galore": (
        lambda galore: optax.chain(optax.zero_nans(), galore(0.01, rank=2, update_proj_gap=3)),
        lambda g, p: updates.galore(g, p, rank=2, update_proj_gap=3, clear_nan=True),
    ),
}


@pytest.mark.parametrize("name", GALORE)
def test_galore_matches_optax_in_params_and_state(name, galore64):
    make_optax, rule = GALORE[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in GALORE_SHAPES]
    stream = [[rng.normal(size=shape) * (1 + k % 3) for shape in GALORE_SHAPES] for k in range(STEPS)]
    if name.startswith("zero_nans"):
        stream[3][0][1, 2] = stream[6][1][2, 0] = np.nan  # at a refresh of the projector too
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(GALORE_SHAPES)]
    result = rule(grads, params)
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax(galore64)
        update = jax.jit(transformation.update)  # traced once (eagerly, optax's galore is slow)
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            found = _first_state_with(state, "projector")
            adam = _first_state_with(found.base_optimizer_state, "mu")
            assert ours["galore.t"] == int(found.count) == k + 1
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, **EXACT, err_msg=message)
                for slot, want in (("m", adam.mu[i]), ("v", adam.nu[i])):
                    got = ours[f"p{i}.galore.{slot}"]
                    np.testing.assert_allclose(got, want, **EXACT, err_msg=f"{message} {slot}")
                if p.ndim == 2:
                    projector = ours[f"p{i}.galore.projector"]
                    np.testing.assert_allclose(projector, found.projector[i], **EXACT, err_msg=f"{message} P")
                else:
                    assert f"p{i}.galore.projector" not in ours and found.projector[i].shape == (0, 0)
    assert not np.allclose(params[0].get_value(), start[0]), "trajectory did not move"


# -- muon in optax's form: its bias-corrected momentum and count, and its Adam for the rest --------

MUON_SHAPES = [(3, 4), (5, 2), (4,), ()]
# optax's defaults are muon(learning_rate=η, weight_decay=0.0, epsilon=1e-8, form="optax")
MUON = {
    "defaults": (
        lambda: optax.contrib.muon(0.02),
        lambda g, p: updates.muon(g, p, 0.02, weight_decay=0.0, epsilon=1e-8, form="optax"),
    ),
    "no nesterov, weight decay": (
        lambda: optax.contrib.muon(0.03, beta=0.9, weight_decay=0.1, nesterov=False),
        lambda g, p: updates.muon(
            g, p, 0.03, weight_decay=0.1, momentum=0.9, epsilon=1e-8, nesterov=False, form="optax"
        ),
    ),
    "consistent rms, coefficients, steps, eps": (
        lambda: optax.contrib.muon(
            0.01, ns_coeffs=(3.0, -3.2, 1.2), ns_steps=3, eps=1e-3, weight_decay=0.05, consistent_rms=0.2
        ),
        lambda g, p: updates.muon(
            g,
            p,
            0.01,
            weight_decay=0.05,
            epsilon=1e-3,
            ns_coefficients=(3.0, -3.2, 1.2),
            ns_steps=3,
            adjust_lr_fn="match_rms_adamw",
            form="optax",
        ),
    ),
    "zero_nans then muon": (
        lambda: optax.chain(optax.zero_nans(), optax.contrib.muon(0.02)),
        lambda g, p: updates.muon(g, p, 0.02, weight_decay=0.0, epsilon=1e-8, form="optax", clear_nan=True),
    ),
}


@pytest.mark.parametrize("name", MUON)
def test_muon_in_optax_form_matches_optax_in_params_and_state(name):
    make_optax, rule = MUON[name]
    rng = np.random.default_rng(1)
    start = [rng.normal(size=shape) for shape in MUON_SHAPES]
    stream = [[rng.normal(size=shape) * (1 + k % 3) for shape in MUON_SHAPES] for k in range(STEPS)]
    if name.startswith("zero_nans"):
        stream[3][0][1, 2] = stream[6][2][1] = np.nan
    params = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(start)]
    grads = [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(MUON_SHAPES)]
    result = rule(grads, params)
    step = pytensor.function(grads, [], updates=result)
    with jax.enable_x64(True):
        transformation = make_optax()
        update = jax.jit(transformation.update)  # eager, optax's muon takes a minute over 50 steps
        theirs = [jax.numpy.asarray(x) for x in start]
        state = transformation.init(theirs)
        for k, g in enumerate(stream):
            steps, state = update([jax.numpy.asarray(x) for x in g], state, theirs)
            theirs = optax.apply_updates(theirs, steps)
            step(*g)
            ours = result.named_state()
            parts = _first_state_with(state, "inner_states").inner_states
            muon, adam = parts["muon"].inner_state[0], parts["adam"].inner_state[0]
            assert ours["muon.t"] == int(muon.count) == k + 1 and ours["adam.t"] == int(adam.count) == k + 1
            for i, (p, want) in enumerate(zip(params, theirs)):
                message = f"step {k + 1}, p{i}"
                np.testing.assert_allclose(p.get_value(), want, **EXACT, err_msg=message)
                if p.ndim == 2:
                    mu = ours[f"p{i}.muon.momentum_buffer"]
                    np.testing.assert_allclose(mu, muon.mu[i], **EXACT, err_msg=f"{message} mu")
                else:
                    for slot, field in (("m", adam.mu), ("v", adam.nu)):
                        mine = ours[f"p{i}.adam.{slot}"]
                        np.testing.assert_allclose(mine, field[i], **EXACT, err_msg=f"{message} {slot}")
    assert not np.allclose(params[0].get_value(), start[0]), "trajectory did not move"
