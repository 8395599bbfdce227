"""Update wrappers: every wrapper of the registry around every rule keeps its defining property,
checked against NumPy (and torch where it has the same thing); cross-cutting properties for all
wrappers; property-based tests of apply_if_finite over every rule.

Compile cost: each (rule, wrapper) graph is compiled once per module (``compiled``) and reset
between uses; the gradients are inputs, so hypothesis feeds values to compiled functions.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytensor.graph.basic import equal_computations
from registry import RULES, WRAPPERS

import updates

PATHS = {"fused": contextlib.nullcontext, "per_parameter": updates.per_parameter}
SHAPES = [(3,), (2, 2)]
STEPS = 9
RULE = {str(case): case for case in RULES}
WRAPPER = {case.name: case for case in WRAPPERS}


def make_params(shapes=SHAPES, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(shapes)]


def gradient_inputs(params):
    return [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]


def gradient_stream(steps=STEPS, shapes=SHAPES, dtype="float64", seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(steps)]


@dataclass
class Compiled:
    params: list
    initial: list
    result: updates.Updates
    step: object

    def reset(self):
        for p, value in zip(self.params, self.initial):
            p.set_value(value.copy())
        updates.reset_state(self.result)
        return self

    def values(self):
        return [p.get_value() for p in self.params]

    def snapshot(self):
        """A copy of every variable the updates change (params, all state, whole buffers)."""
        return {k: np.array(k.get_value(), copy=True) for k in self.result}


def rule_inputs(case, params):
    """The inputs of the compiled step, and what the rule is given: the gradients themselves,
    or, for a rule that needs the loss, targets ``x`` of the loss sum(c (p - x)**2 / 2) (whose
    gradient c (p - x) is as finite as ``x``)."""
    inputs = gradient_inputs(params)
    if not case.needs_loss:
        return inputs, inputs
    curvature = [np.linspace(0.5, 2.0, p.get_value().size).reshape(p.get_value().shape) for p in params]
    loss = pt.add(*(pt.sum(c * (p - x) ** 2) / 2 for p, x, c in zip(params, inputs, curvature)))
    return inputs, loss


@functools.cache
def _compiled(rule_name, wrapper_name=None, path="fused", mode="FAST_COMPILE", shapes=tuple(SHAPES)):
    case = RULE[rule_name]
    params = make_params(shapes)
    inputs, given = rule_inputs(case, params)
    rule = case.function(**case.hyper)
    with PATHS[path]():
        if wrapper_name is None:
            result = rule(given, params)
        else:
            result = WRAPPER[wrapper_name].build(rule, given, params)
    step = pytensor.function(inputs, [], updates=result, mode=mode)
    return Compiled(params, [p.get_value() for p in params], result, step)


def compiled(rule_name, wrapper_name=None, path="fused", mode="FAST_COMPILE", shapes=tuple(SHAPES)):
    """A compiled step of the rule (wrapped), built once per module, reset to its start."""
    return _compiled(rule_name, wrapper_name, path, mode, shapes).reset()


def close(dtype):
    return {"rtol": 1e-12, "atol": 1e-14} if np.dtype(dtype) == np.float64 else {"rtol": 1e-5, "atol": 1e-6}


def assert_bitwise(a, b, context=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, context
    assert a.tobytes() == b.tobytes(), f"{context}: {a} != {b}"


def sync(twin, values):
    for p, v in zip(twin.params, values):
        p.set_value(np.array(v, copy=True))


# -- the defining property of each wrapper, around every rule ----------------------------------


def check_apply_weight_decay(wrapped, twin, stream):
    """p <- u - lr * wd * p, u the rule's step from the same params and state."""
    decay = np.float64(0.5) * np.float64(0.1)
    for t, g in enumerate(stream):
        before = wrapped.values()
        sync(twin, before)
        twin.step(*g)
        wrapped.step(*g)
        for got, u, p in zip(wrapped.values(), twin.values(), before):
            np.testing.assert_allclose(got, u - decay * p, **close(p.dtype), err_msg=f"step {t}")


def check_apply_if_finite(wrapped, twin, stream):
    """A poisoned call changes nothing (bit for bit) but the skip count; the finite calls are bit
    for bit those of a run that never saw the poisoned ones, and follow the rule's own trajectory
    on the finite gradients alone."""
    poisoned = {2: (0, 1, np.nan), 5: (1, 3, np.inf), 6: (0, 0, -np.inf)}
    skipped = next(k for k in wrapped.result if k.name == "apply_if_finite.skipped")
    replay = []
    for t, g in enumerate(stream):
        if t not in poisoned:
            wrapped.step(*g)
            replay.append({k: v for k, v in wrapped.snapshot().items() if k is not skipped})
    wrapped.reset()
    finite = iter(replay)
    for t, g in enumerate(stream):
        if t in poisoned:
            i, j, value = poisoned[t]
            g = [x.copy() for x in g]
            g[i].reshape(-1)[j] = value
            before = wrapped.snapshot()
            wrapped.step(*g)
            after = wrapped.snapshot()
            for key in before:
                if key is not skipped:
                    assert_bitwise(after[key], before[key], f"step {t} {key.name}")
            assert after[skipped] == before[skipped] + 1
            continue
        twin.step(*g)
        wrapped.step(*g)
        for key, value in next(finite).items():
            assert_bitwise(key.get_value(), value, f"step {t} {key.name}")
        for a, b in zip(wrapped.values(), twin.values()):
            np.testing.assert_allclose(a, b, **close(b.dtype), err_msg=f"step {t}")
        twin_state = twin.result.named_state()
        for name, value in wrapped.result.named_state().items():
            if name != "apply_if_finite.skipped":
                np.testing.assert_allclose(value, twin_state[name], **close(value.dtype), err_msg=name)
    assert int(skipped.get_value()) == len(poisoned)


def check_apply_lookahead(wrapped, twin, stream, k=3, alpha=0.4):
    """Every k-th call: slow += alpha (fast - slow), p <- slow; otherwise p <- fast."""
    slow = [np.array(v) for v in wrapped.values()]
    for t, g in enumerate(stream):
        sync(twin, wrapped.values())
        twin.step(*g)
        wrapped.step(*g)
        fast = twin.values()
        if (t + 1) % k == 0:
            slow = [s + s.dtype.type(alpha) * (f - s) for s, f in zip(slow, fast)]
            expected = slow
        else:
            expected = fast
        for got, want in zip(wrapped.values(), expected):
            np.testing.assert_allclose(got, want, **close(want.dtype), err_msg=f"step {t}")
        named = wrapped.result.named_state()
        for p, s in zip(wrapped.params, slow):
            if (t + 1) % k == 0 or t > 0:
                np.testing.assert_allclose(named[f"{p.name}.apply_lookahead.slow"], s, **close(s.dtype))


def check_apply_ema(wrapped, twin, stream, decay=0.8):
    """The params follow the rule exactly; the shadows: a <- u first, then a + (1 - d) (u - a)."""
    shadows = None
    for t, g in enumerate(stream):
        twin.step(*g)
        wrapped.step(*g)
        values = twin.values()
        for a, b in zip(wrapped.values(), values):
            assert_bitwise(a, b, f"step {t}")
        if shadows is None:
            shadows = [v.copy() for v in values]
        else:
            shadows = [a + (1 - a.dtype.type(decay)) * (u - a) for a, u in zip(shadows, values)]
        named = wrapped.result.named_state()
        for p, a in zip(wrapped.params, shadows):
            np.testing.assert_allclose(named[f"{p.name}.apply_ema.shadow"], a, **close(a.dtype))


def check_accumulate_gradients(wrapped, twin, stream, k=3):
    """Params and rule state move every k-th call only, by the rule's step on the mean gradient."""
    sums = None
    for t, g in enumerate(stream):
        before = wrapped.snapshot()
        wrapped.step(*g)
        sums = [x.copy() for x in g] if sums is None else [s + x for s, x in zip(sums, g)]
        if (t + 1) % k:
            for key in wrapped.result:
                if ".accumulate_gradients." not in str(key.name) and key.name != "accumulate_gradients.t":
                    assert_bitwise(key.get_value(), before[key], f"step {t} {key.name}")
            continue
        twin.step(*[s / s.dtype.type(k) for s in sums])
        sums = None
        for a, b in zip(wrapped.values(), twin.values()):
            np.testing.assert_allclose(a, b, **close(b.dtype), err_msg=f"step {t}")
        twin_state = twin.result.named_state()
        for name, value in wrapped.result.named_state().items():
            if name in twin_state:
                np.testing.assert_allclose(value, twin_state[name], **close(value.dtype), err_msg=name)


def check_momentum(nesterov, wrapped, twin, stream, mu=0.7):
    velocity = [np.zeros_like(v) for v in wrapped.values()]
    for t, g in enumerate(stream):
        before = wrapped.values()
        sync(twin, before)
        twin.step(*g)
        wrapped.step(*g)
        expected = []
        for i, (u, p) in enumerate(zip(twin.values(), before)):
            if nesterov:
                x = mu * velocity[i] + u - p
                velocity[i], new = x, mu * x + u
            else:
                x = mu * velocity[i] + u
                velocity[i], new = x - p, x
            expected.append(new)
        for got, want in zip(wrapped.values(), expected):
            np.testing.assert_allclose(got, want, **close(want.dtype), err_msg=f"step {t}")


CHECKS = {
    "apply_weight_decay": check_apply_weight_decay,
    "apply_if_finite": check_apply_if_finite,
    "apply_lookahead": check_apply_lookahead,
    "apply_ema": check_apply_ema,
    "accumulate_gradients": check_accumulate_gradients,
    "apply_momentum": functools.partial(check_momentum, False),
    "apply_nesterov_momentum": functools.partial(check_momentum, True),
}


def test_every_wrapper_has_a_check():
    assert set(CHECKS) == {case.name for case in WRAPPERS}


# Rules that need the loss cannot be handed mean gradients by a wrapper of the rule.
LOSS_ONLY = [(r, w) for r in RULES for w in WRAPPERS if r.needs_loss and w.wraps_rule]


@pytest.mark.parametrize(
    ("rule", "wrapper"),
    [(rule, wrapper) for rule in RULES for wrapper in WRAPPERS if (rule, wrapper) not in LOSS_ONLY],
    ids=str,
)
def test_wrapper_keeps_its_defining_property(rule, wrapper):
    wrapped, twin = compiled(str(rule), wrapper.name), compiled(str(rule))
    start = wrapped.values()
    CHECKS[wrapper.name](wrapped, twin, gradient_stream())
    assert any(not np.array_equal(a, b) for a, b in zip(wrapped.values(), start)), "nothing moved"


@pytest.mark.parametrize("wrapper", ["apply_if_finite", "accumulate_gradients", "apply_lookahead"])
@pytest.mark.parametrize("path", PATHS)
def test_defining_property_in_the_default_mode(wrapper, path):
    """Under the default linker the multi-tensor step may run in place; the wrappers that hold
    params back must still see the old values (PyTensor refuses the in-place step then)."""
    wrapped = _compiled("adam", wrapper, path, mode=None).reset()
    twin = _compiled("adam", None, path, mode=None).reset()
    CHECKS[wrapper](wrapped, twin, gradient_stream())


@pytest.mark.parametrize(("rule", "wrapper"), LOSS_ONLY, ids=str)
def test_a_rule_that_needs_the_loss_cannot_be_accumulated(rule, wrapper):
    """Accumulation hands the rule mean gradients; a rule that needs the loss says so."""
    params = make_params()
    _, loss = rule_inputs(rule, params)
    with pytest.raises(TypeError, match=rf"^{rule.name}: needs the scalar loss"):
        wrapper.build(rule.function(**rule.hyper), loss, params)


# -- torch ----------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_decay_of_adam_is_torch_adamw(dtype):
    """apply_weight_decay(adam) against torch.optim.AdamW, 60 steps (epsilon 0 in both: they place
    it differently)."""
    torch = _torch()
    hyper = {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.99, "epsilon": 0.0}
    params = make_params(dtype=dtype)
    grads = gradient_inputs(params)
    adamw = updates.apply_weight_decay(updates.adam(grads, params, **hyper), weight_decay=0.3)
    step = pytensor.function(grads, [], updates=adamw, mode="FAST_COMPILE")
    tensors = [torch.tensor(p.get_value(), requires_grad=True) for p in params]
    optimizer = torch.optim.AdamW(tensors, lr=0.01, betas=(0.9, 0.99), eps=0.0, weight_decay=0.3)
    for g in gradient_stream(60, dtype=dtype):
        step(*g)
        for x, gi in zip(tensors, g):
            x.grad = torch.tensor(gi)
        optimizer.step()
        for p, x in zip(params, tensors):
            tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-5, "atol": 1e-6}
            np.testing.assert_allclose(p.get_value(), x.detach().numpy(), **tolerance)


def test_weight_decay_of_adam_is_the_adamw_rule_without_epsilon():
    """The adamw rule places epsilon as torch does; with epsilon 0 the two are the same algorithm."""
    hyper = {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.99, "epsilon": 0.0}
    runs = []
    for build in (
        lambda g, p: updates.apply_weight_decay(updates.adam(g, p, **hyper), weight_decay=0.3),
        lambda g, p: updates.adamw(g, p, **hyper, weight_decay=0.3),
    ):
        params = make_params()
        grads = gradient_inputs(params)
        step = pytensor.function(grads, [], updates=build(grads, params), mode="FAST_COMPILE")
        for g in gradient_stream(50):
            step(*g)
        runs.append([p.get_value() for p in params])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("decay", [0.9, None], ids=["exponential", "uniform"])
def test_ema_is_torch_averaged_model(decay):
    """apply_ema against torch.optim.swa_utils.AveragedModel updated after every step."""
    torch = _torch()
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    params = make_params()
    grads = gradient_inputs(params)
    averaged = updates.apply_ema(updates.sgd(grads, params, learning_rate=0.1), decay=decay)
    step = pytensor.function(grads, [], updates=averaged, mode="FAST_COMPILE")
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(p.get_value())) for p in params])
    kwargs = {} if decay is None else {"multi_avg_fn": get_ema_multi_avg_fn(decay)}
    swa = AveragedModel(model, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for g in gradient_stream(30):
        step(*g)
        for x, gi in zip(model, g):
            x.grad = torch.tensor(gi)
        optimizer.step()
        swa.update_parameters(model)
        named = averaged.named_state()
        for p, x in zip(params, swa.module):
            np.testing.assert_allclose(named[f"{p.name}.apply_ema.shadow"], x.detach().numpy(), rtol=1e-12)


# -- cross-cutting properties of every wrapper -----------------------------------------------------


def _build(wrapper, params, grads, rule="adam"):
    case = RULE[rule]
    return wrapper.build(case.function(**case.hyper), grads, params)


@pytest.mark.parametrize("floatx", ["float32", "float64"])
@pytest.mark.parametrize("wrapper", WRAPPERS, ids=str)
def test_types_are_kept(wrapper, floatx):
    with pytensor.config.change_flags(floatX=floatx):
        params = make_params([(), (3,), (1, 3)], "float32") + make_params([(2, 1)], "float64", seed=5)
        for i, p in enumerate(params):
            p.name = f"q{i}"
        grads = gradient_inputs(params)
        result = _build(wrapper, params, grads)
        for variable, value in result.items():
            assert value.type == variable.type, variable.name
        step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
        step(*[np.ones(p.get_value().shape, p.dtype) for p in params])
        assert [p.get_value().dtype for p in params] == [np.float32] * 3 + [np.float64]
        assert all(np.isfinite(v).all() for v in result.named_state().values())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("wrapper", WRAPPERS, ids=str)
def test_state_is_named_and_checkpointed(wrapper, path, tmp_path):
    params = make_params()
    grads = gradient_inputs(params)
    with PATHS[path]():
        bare = RULE["adam"].function(grads, make_params(), **RULE["adam"].hyper)
        result = _build(wrapper, params, grads)
    assert isinstance(result, updates.Updates)
    assert list(result)[: len(params)] == list(result.params) == params
    entries = updates.inspect_state(result)
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) and None not in names
    new = [n for n in names if n not in bare.named_state()]
    assert bool(new) == wrapper.keeps_state, new
    for name in new:
        assert name.startswith((f"{wrapper.name}.", *(f"{p.name}.{wrapper.name}." for p in params))), name
    assert result.config[-1]["wrapper"] == wrapper.name
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for g in gradient_stream(4):
        step(*g)
    path = tmp_path / "state.npz"
    updates.save_state(path, result)
    saved = {k: v.copy() for k, v in result.named_state().items()}
    updates.reset_state(result)
    assert all(not np.any(v) for v in result.named_state().values())
    updates.load_state(path, result)
    for name, value in result.named_state().items():
        assert_bitwise(value, saved[name], name)


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=str)
def test_input_is_not_mutated(wrapper):
    params = make_params()
    grads = gradient_inputs(params)
    given = updates.adam(grads, params)
    before = (list(given.items()), given.params, list(given.config), dict(given.hyperparameters))
    seen = []

    def rule(g, p):
        seen.append(updates.adam(g, p))
        return seen[-1]

    if wrapper.wraps_rule:
        result = wrapper.build(rule, grads, params)
        given = seen[0]
        before = (list(given.items()), given.params, list(given.config), dict(given.hyperparameters))
    else:
        result = wrapper.build(lambda g, p: given, grads, params)
    assert result is not given
    items, params_before, config, hyper = before
    assert len(given) == len(items)
    assert all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(given.items(), items))
    assert given.params == params_before and given.config == config and given.hyperparameters == hyper


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=str)
def test_bad_arguments_are_rejected(wrapper):
    params = make_params()
    grads = gradient_inputs(params)
    assert wrapper.bad
    for name, (value, error, message) in wrapper.bad.items():
        with pytest.raises(error, match=message):
            if wrapper.wraps_rule:
                wrapper.function(**{"rule": updates.sgd, **{name: value}})(grads, params)
            else:
                wrapper.function(updates.adam(grads, params), **{name: value})
    if not wrapper.wraps_rule:
        with pytest.raises(
            TypeError, match=rf"^{wrapper.name}: updates must be a dictionary of updates, got int"
        ):
            wrapper.function(3)


def test_wrappers_compose_and_a_skipped_step_restores_everything():
    """if_finite around ema around lookahead around weight decay around accumulated Adam."""
    params = make_params()
    grads = gradient_inputs(params)
    inner = updates.accumulate_gradients(updates.adam(learning_rate=0.05), steps=2)(grads, params)
    chain = updates.apply_ema(updates.apply_lookahead(updates.apply_weight_decay(inner), k=2), decay=0.5)
    safe = updates.apply_if_finite(chain, grads)
    assert [c.get("wrapper", c.get("rule")) for c in safe.config] == [
        "adam",
        "accumulate_gradients",
        "apply_weight_decay",
        "apply_lookahead",
        "apply_ema",
        "apply_if_finite",
    ]
    step = pytensor.function(grads, [], updates=safe, mode="FAST_COMPILE")
    stream = gradient_stream(7)
    for g in stream[:5]:
        step(*g)
    before = {k: k.get_value().copy() for k in safe}
    step(*[np.full_like(x, np.nan) for x in stream[5]])
    for key, value in before.items():
        if key.name != "apply_if_finite.skipped":
            assert_bitwise(key.get_value(), value, key.name)
    step(*stream[6])
    assert updates.inspect_state(safe).steps == {
        "adam.t": 3,
        "accumulate_gradients.t": 6,
        "apply_lookahead.t": 6,
        "apply_ema.t": 6,
    }


def test_apply_if_finite_checks_the_gradients_a_rule_would_hide():
    """With clear_nan=True the new values stay finite; passing the grads still skips the step."""
    params = make_params()
    grads = gradient_inputs(params)
    result = updates.apply_if_finite(updates.adam(grads, params, clear_nan=True), grads=grads)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    start = [p.get_value() for p in params]
    step(np.array([np.nan, 1.0, 1.0]), np.ones((2, 2)))
    for p, s in zip(params, start):
        assert_bitwise(p.get_value(), s)
    unchecked = updates.apply_if_finite(updates.adam(grads, params, clear_nan=True))
    pytensor.function(grads, [], updates=unchecked, mode="FAST_COMPILE")(
        np.array([np.nan, 1.0, 1.0]), np.ones((2, 2))
    )
    assert not np.array_equal(params[1].get_value(), start[1])


# -- apply_if_finite: a bound on the update's norm and a budget of skips in a row ------------------

CAP, BUDGET, MU = 5.0, 3, 0.5
BUDGET_MESSAGE = (
    f"apply_if_finite: {BUDGET} steps in a row had a value that was not finite or an update norm above "
    f"max_norm={CAP:g}; stopping instead of skipping again (budget={BUDGET}): this step was not "
    "applied, the params and optimizer state keep their values from the last applied step"
)


def guarded_momentum(mode="FAST_COMPILE", **options):
    """Momentum (learning rate 1, MU) on params starting at 0, guarded by apply_if_finite: the
    first update is exactly -g, then MU v - g (v the last applied update)."""
    params = [pytensor.shared(np.zeros(s), name=f"p{i}") for i, s in enumerate([(3,), (2,)])]
    grads = gradient_inputs(params)
    rule = updates.momentum(grads, params, learning_rate=1.0, momentum=MU)
    result = updates.apply_if_finite(rule, grads=grads, **options)
    step = pytensor.function(grads, [], updates=result, mode=mode)
    return Compiled(params, [p.get_value() for p in params], result, step)


@functools.cache
def _budgeted(mode):
    return guarded_momentum(mode, max_norm=CAP, budget=BUDGET)


def budgeted(mode="FAST_COMPILE"):
    """guarded_momentum with max_norm=CAP and budget=BUDGET, compiled once per mode, reset."""
    return _budgeted(mode).reset()


def grads_of(first, second):
    return [np.array(first, dtype=float), np.array(second, dtype=float)]


def counters(guarded):
    named = guarded.result.named_state()
    return int(named["apply_if_finite.skipped"]), int(named["apply_if_finite.skipped_in_row"])


def assert_unchanged(guarded, before, context, skipped=None):
    """Every variable the updates change is as ``before``, but the counters: ``skipped`` (both
    counts) if given."""
    now = guarded.snapshot()
    counted = guarded.result.state[-2:]
    for key, value in now.items():
        if skipped is None or key not in counted:
            assert_bitwise(value, before[key], f"{context}: {key.name}")
    if skipped is not None:
        assert counters(guarded) == skipped, context


@pytest.mark.parametrize("mode", [None, "FAST_COMPILE"], ids=["default", "FAST_COMPILE"])
def test_apply_if_finite_skips_an_update_larger_than_max_norm(mode):
    """Skipped iff the update's norm over all params exceeds max_norm (5 exactly is applied):
    params and all state unchanged, the skip counted; applied steps follow NumPy's momentum."""
    guarded = budgeted(mode)
    stream = [
        ([3, 0, 0], [4, 0]),  # update -g: norm 5 = max_norm, applied
        ([10, 0, 0], [0, 0]),  # norm of (-11.5, 0, 0, -2, 0) > 5: skipped
        ([0, 0, 0], [0, 0]),  # MU v alone: norm 2.5, applied
        ([0, 0, 0], [6, 0]),  # norm of (-0.75, 0, 0, -7, 0) > 5: skipped
        ([0.5, -0.5, 1.0], [1.0, 0.0]),  # applied
    ]
    p, v = [np.zeros(3), np.zeros(2)], [np.zeros(3), np.zeros(2)]
    skips = []
    for t, pair in enumerate(stream):
        g = grads_of(*pair)
        update = [MU * vi - gi for vi, gi in zip(v, g)]
        skips.append(math.sqrt(sum(float((u**2).sum()) for u in update)) > CAP)
        before = guarded.snapshot()
        skipped, _ = counters(guarded)
        guarded.step(*g)
        if skips[-1]:
            assert_unchanged(guarded, before, f"step {t}", skipped=(skipped + 1, 1))
            continue
        p, v = [pi + u for pi, u in zip(p, update)], update
        for got, expected in zip(guarded.values(), p):
            np.testing.assert_allclose(got, expected, rtol=1e-15, err_msg=f"step {t}")
    assert skips == [False, True, False, True, False]
    assert counters(guarded) == (2, 0)


@pytest.mark.parametrize("mode", [None, "FAST_COMPILE", "CVM"], ids=["default", "FAST_COMPILE", "CVM"])
def test_a_budget_th_skip_in_a_row_raises_and_changes_nothing(mode):
    """Non-finite and too large steps count alike; an applied step resets the count in a row;
    the BUDGET-th bad step in a row raises, changing nothing (counters included), every time it
    is retried; a good step then proceeds."""
    guarded = budgeted(mode)
    good, big, nan = (
        grads_of([0.1, 0, 0], [0, 0]),
        grads_of([9, 0, 0], [0, 0]),
        grads_of([np.nan, 0, 0], [0, 0]),
    )
    for g, expected in [(nan, (1, 1)), (big, (2, 2)), (good, (2, 0)), (big, (3, 1)), (nan, (4, 2))]:
        guarded.step(*g)
        assert counters(guarded) == expected
    before = guarded.snapshot()
    for g in (big, nan):
        with pytest.raises(updates.SkipBudgetError) as raised:
            guarded.step(*g)
        assert str(raised.value).partition("\n")[0] == BUDGET_MESSAGE
        assert isinstance(raised.value, FloatingPointError)
        assert_unchanged(guarded, before, "the refused step")
    guarded.step(*good)
    assert counters(guarded) == (4, 0)
    np.testing.assert_allclose(guarded.values()[0], [-0.1 - MU * 0.1 - 0.1, 0, 0], rtol=1e-15)


def test_a_budget_of_one_never_skips():
    guarded = guarded_momentum(budget=1)
    with pytest.raises(
        updates.SkipBudgetError,
        match=r"^apply_if_finite: 1 step in a row had a value that was not finite; stopping",
    ):
        guarded.step(*grads_of([np.inf, 0, 0], [0, 0]))
    assert counters(guarded) == (0, 0) and not np.any(guarded.values()[0])
    guarded.step(*grads_of([1e6, 0, 0], [0, 0]))  # no max_norm: any finite update is applied
    assert guarded.values()[0][0] == -1e6


def test_skip_counters_are_checkpointed_and_reset(tmp_path):
    """save_state/load_state carry both counters (a fresh copy resumes bit for bit, and a loaded
    count in a row still brings the budget); reset_state sets them back to 0."""
    good, big = grads_of([0.5, 1, 0], [0, -1]), grads_of([9, 0, 0], [0, 0])
    first = budgeted()
    for g in (good, big, good, big, big):
        first.step(*g)
    assert counters(first) == (3, 2)
    path = tmp_path / "guarded.npz"
    updates.save_state(path, first.result, params=True)
    second = guarded_momentum(max_norm=CAP, budget=BUDGET)
    updates.load_state(path, second.result, params=True)
    assert counters(second) == (3, 2)
    for copy in (first, second):
        with pytest.raises(updates.SkipBudgetError):
            copy.step(*big)
        for g in (good, big, good):
            copy.step(*g)
    for (key, value), (twin, twin_value) in zip(first.snapshot().items(), second.snapshot().items()):
        assert key.name == twin.name
        assert_bitwise(value, twin_value, key.name)
    assert counters(second) == (4, 0)
    updates.load_state(path, second.result)
    assert counters(second) == (3, 2)
    updates.reset_state(second.result)
    assert counters(second) == (0, 0)
    second.step(*big)  # skipped, the count in a row starts again
    assert counters(second) == (1, 1)


def test_max_norm_and_budget_are_in_the_config_and_add_state_only_when_given():
    params = make_params([(3,)], "float32") + make_params([(2,)], "float64")
    grads = gradient_inputs(params)
    plain = updates.apply_if_finite(updates.adam(grads, params), grads)
    assert plain.config[-1] == {"wrapper": "apply_if_finite", "max_norm": None, "budget": None}
    assert [v.name for v in plain.state][-2:] == ["adam.t", "apply_if_finite.skipped"]
    bounded = updates.apply_if_finite(updates.adam(grads, params), grads, max_norm=2, budget=4)
    assert bounded.config[-1] == {"wrapper": "apply_if_finite", "max_norm": 2.0, "budget": 4}
    names = ["apply_if_finite.skipped", "apply_if_finite.skipped_in_row"]
    assert [v.name for v in bounded.state][-2:] == names
    assert all(value.type == variable.type for variable, value in bounded.items())
    assert updates.inspect_state(bounded).steps == {"adam.t": 0}


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        ("max_norm", 0, ValueError, r"max_norm must be > 0 or None, got 0$"),
        ("max_norm", math.inf, ValueError, r"max_norm must be finite, got inf$"),
        ("max_norm", math.nan, ValueError, r"max_norm must be finite, got nan$"),
        ("max_norm", "large", TypeError, r"max_norm must be a real number or None, got str$"),
        ("budget", -2, ValueError, r"budget must be > 0 or None, got -2$"),
        ("budget", 2.0, TypeError, r"budget must be an integer or None, got float$"),
        ("budget", True, TypeError, r"budget must be an integer or None, got bool$"),
    ],
)
def test_bad_max_norm_and_budget_are_refused(argument, value, error, message):
    params = make_params()
    with pytest.raises(error, match=rf"^apply_if_finite: {message}"):
        updates.apply_if_finite(updates.sgd(gradient_inputs(params), params), **{argument: value})


def test_weight_decay_takes_the_rules_learning_rate_or_asks_for_one():
    params = make_params()
    grads = gradient_inputs(params)
    result = updates.apply_weight_decay(updates.adam(grads, params, learning_rate=0.25), weight_decay=0.5)
    assert result.config[-1] == {"wrapper": "apply_weight_decay", "weight_decay": 0.5, "learning_rate": 0.25}
    with pytest.raises(
        ValueError, match=r"^apply_weight_decay: learning_rate=None takes the rule's learning rate"
    ):
        updates.apply_weight_decay(dict(updates.sgd(grads, params)))


def test_weight_decay_follows_a_scheduled_learning_rate():
    """learning_rate=None takes the rule's schedule: the decay at each step uses its value then."""
    params = make_params()
    grads = gradient_inputs(params)
    schedule = updates.linear_warmup(peak_value=0.1, warmup_steps=4)
    adam = updates.adam(grads, params, learning_rate=schedule)
    result = updates.apply_weight_decay(adam, weight_decay=0.5)
    twin_params = make_params()
    twin_grads = gradient_inputs(twin_params)
    twin_updates = updates.adam(twin_grads, twin_params, learning_rate=schedule)
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    twin = pytensor.function(twin_grads, [], updates=twin_updates, mode="FAST_COMPILE")
    rates = []
    for g in gradient_stream(6):
        rate = updates.inspect_state(result).hyperparameters["learning_rate"]
        rates.append(rate)
        before = [p.get_value() for p in params]
        for tp, b in zip(twin_params, before):
            tp.set_value(b)
        twin(*g)
        step(*g)
        for p, tp, b in zip(params, twin_params, before):
            np.testing.assert_allclose(p.get_value(), tp.get_value() - rate * 0.5 * b, rtol=1e-12, atol=1e-14)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and len(set(rates)) > 2


@pytest.mark.parametrize("wrapper", [w for w in WRAPPERS if not w.wraps_rule], ids=str)
def test_a_plain_dictionary_is_accepted(wrapper):
    """On a plain OrderedDict the params are its floating-point keys (as apply_momentum's)."""
    from collections import OrderedDict

    params = make_params()
    grads = gradient_inputs(params)
    plain = OrderedDict(updates.sgd(grads, params, learning_rate=0.1))
    result = wrapper.build(lambda g, p: plain, grads, params)
    assert isinstance(result, updates.Updates) and list(result.params) == params
    pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")(*gradient_stream(1)[0])


def test_swap_averages_swaps_and_restores_even_on_error():
    params = make_params()
    grads = gradient_inputs(params)
    averaged = updates.apply_ema(updates.sgd(grads, params, learning_rate=0.5), decay=0.5)
    step = pytensor.function(grads, [], updates=averaged, mode="FAST_COMPILE")
    for g in gradient_stream(3):
        step(*g)
    values = [p.get_value() for p in params]
    shadows = [averaged.named_state()[f"{p.name}.apply_ema.shadow"].copy() for p in params]
    with pytest.raises(RuntimeError), updates.swap_averages(averaged) as pairs:
        assert list(pairs) == params
        for p, s in zip(params, shadows):
            assert_bitwise(p.get_value(), s)
        raise RuntimeError
    for p, v in zip(params, values):
        assert_bitwise(p.get_value(), v)
    with (
        pytest.raises(ValueError, match=r"^swap_averages: these updates keep no averages"),
        updates.swap_averages(updates.sgd(grads, params)),
    ):
        pass


def test_lookahead_and_ema_restart_from_the_params_after_a_reset():
    params = make_params()
    grads = gradient_inputs(params)
    result = updates.apply_ema(updates.apply_lookahead(updates.sgd(grads, params, learning_rate=0.1), k=2))
    step = pytensor.function(grads, [], updates=result, mode="FAST_COMPILE")
    for g in gradient_stream(3):
        step(*g)
    updates.reset_state(result)
    now = [p.get_value() for p in params]
    step(*[np.zeros(s) for s in SHAPES])
    named = result.named_state()
    for p, v in zip(params, now):
        assert_bitwise(named[f"{p.name}.apply_lookahead.slow"], v)
        assert_bitwise(named[f"{p.name}.apply_ema.shadow"], v)


# -- parameter groups ------------------------------------------------------------------------------


def test_parameter_groups_equal_separate_rules():
    """Gradients once, Adam with two learning rates on two groups, a frozen param: each group
    follows its own rule bit for bit, the frozen param never moves."""
    params = make_params([(3,), (2, 2), (4,)])
    frozen = params[2]
    grads = gradient_inputs(params)
    merged = updates.merge_updates(
        updates.adam(grads[:1], params[:1], learning_rate=0.1),
        updates.adam(grads[1:2], params[1:2], learning_rate=0.01),
    )
    assert merged.params == tuple(params[:2]) and frozen not in merged
    assert [v.name for v in merged.state] == [
        "adam.m",
        "adam.v",
        "adam.t[0]",
        "adam.m",
        "adam.v",
        "adam.t[1]",
    ]
    assert sorted(merged.hyperparameters)[:2] == ["0.beta1", "0.beta2"]
    step = pytensor.function(grads, [], updates=merged, mode="FAST_COMPILE", on_unused_input="ignore")
    alone = [make_params([(3,), (2, 2), (4,)])[i] for i in (0, 1)]
    singles = []
    for param, rate in zip(alone, (0.1, 0.01)):
        g = gradient_inputs([param])
        singles.append(pytensor.function(g, [], updates=updates.adam(g, [param], learning_rate=rate)))
    start = frozen.get_value()
    for g in gradient_stream(10, [(3,), (2, 2), (4,)]):
        step(*g)
        for single, gi in zip(singles, g):
            single(gi)
    for a, b in zip(params, alone):
        np.testing.assert_allclose(a.get_value(), b.get_value(), rtol=1e-14)
    assert_bitwise(frozen.get_value(), start)
    assert updates.inspect_state(merged).steps == {"adam.t[0]": 10, "adam.t[1]": 10}


def test_merge_refuses_a_variable_updated_twice():
    params = make_params()
    grads = gradient_inputs(params)
    with pytest.raises(ValueError, match=r"^merge_updates: updates\[0\] and updates\[1\] both update 'p1'; "):
        updates.merge_updates(updates.sgd(grads, params), updates.adam(grads[1:], params[1:]))
    with pytest.raises(
        TypeError, match=r"^merge_updates: updates\[1\] must be a dictionary of updates, got list"
    ):
        updates.merge_updates(updates.sgd(grads, params), [])
    with pytest.raises(ValueError, match=r"^merge_updates: give at least one"):
        updates.merge_updates()


# -- property-based: apply_if_finite over every rule ---------------------------------------------

POISON = st.sampled_from([np.nan, np.inf, -np.inf])
SMALL = [(3,), (2,)]


@st.composite
def poisoned_streams(draw):
    """A few steps of finite gradients, some of them with a non-finite element injected."""
    steps = draw(st.integers(1, 8))
    finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    stream = []
    for _ in range(steps):
        grads = [
            np.array(draw(st.lists(finite, min_size=math.prod(s), max_size=math.prod(s)))).reshape(s)
            for s in SMALL
        ]
        poison = draw(st.none() | st.tuples(st.integers(0, 1), st.integers(0, 1), POISON))
        stream.append((grads, poison))
    return stream


@pytest.mark.parametrize("rule", RULES, ids=str)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=poisoned_streams())
def test_if_finite_never_keeps_a_non_finite_value_and_replays_the_clean_run(rule, stream):
    safe = compiled(str(rule), "apply_if_finite", shapes=tuple(SMALL))
    clean = compiled(str(rule), shapes=tuple(SMALL))
    for grads, poison in stream:
        if poison is not None:
            i, j, value = poison
            grads = [g.copy() for g in grads]
            grads[i].reshape(-1)[j] = value
        else:
            clean.step(*grads)
        safe.step(*grads)
        for key in safe.result:
            assert np.isfinite(key.get_value()).all(), key.name
    for a, b in zip(safe.values(), clean.values()):
        assert_bitwise(a, b)
    expected = clean.result.named_state()
    for name, value in safe.result.named_state().items():
        if name == "apply_if_finite.skipped":
            assert int(value) == sum(p is not None for _, p in stream)
        else:
            assert_bitwise(value, expected[name], name)


# -- partial application (for updates.chain) -------------------------------------------------------

PARTIAL = {
    "apply_momentum": dict(momentum=0.8),
    "apply_nesterov_momentum": dict(momentum=0.7),
    "apply_weight_decay": dict(weight_decay=0.1),
    "apply_if_finite": dict(max_norm=10.0, budget=3),
    "apply_lookahead": dict(k=3, alpha=0.4),
    "apply_ema": dict(decay=0.8),
}


@pytest.mark.parametrize("name", list(PARTIAL))
def test_called_without_updates_a_wrapper_awaits_them(name):
    """Keywords only: the public function back, its keywords and defaults bound; applied later it
    builds the same updates (names, graph) as the direct call."""
    function = getattr(updates, name)
    later = function(**PARTIAL[name])
    assert isinstance(later, functools.partial) and later.func is function
    defaults = {
        n: p.default for n, p in inspect.signature(function).parameters.items() if p.default is not p.empty
    }
    assert later.keywords == {**defaults, **PARTIAL[name]}
    params = make_params()
    grads = gradient_inputs(params)
    late = later(updates.adam(grads, params, learning_rate=0.1))
    direct = function(updates.adam(grads, params, learning_rate=0.1), **PARTIAL[name])
    assert [v.name for v in late] == [v.name for v in direct]
    assert equal_computations(
        list(late.values()), list(direct.values()), in_xs=list(late), in_ys=list(direct)
    )


def test_the_wrappers_that_take_a_rule_or_several_updates_are_not_partially_applied():
    """accumulate_gradients wraps a rule (its result is a rule for chain), merge_updates and
    swap_averages act on finished updates: none of them is a part of a chain."""
    for name in ("accumulate_gradients", "merge_updates", "swap_averages"):
        assert not hasattr(getattr(updates, name), "awaits")
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'rule'"):
        updates.accumulate_gradients(steps=2)
