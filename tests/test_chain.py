"""updates.chain: the flat list builds exactly the nested calls (graph, state names, key order,
trajectories bit for bit), works where an optimizer goes (pytensor.function, minimize, pm.fit),
refuses misplaced parts by name; and the discard_loss / .func / .keywords contract PyMC's
learning-rate schedulers rely on, for rules and for chains.

Graphs are tiny and compiled with FAST_COMPILE: the linker does not matter to what is compared.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import equal_computations
from registry import RULES

import updates

MODE = "FAST_COMPILE"
SHAPES = [(3,), (2, 2)]
STEPS = 6


def make_params(seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(SHAPES)]


def gradient_inputs(dtype="float64"):
    return [pt.tensor(dtype=dtype, shape=(None,) * len(s), name=f"g{i}") for i, s in enumerate(SHAPES)]


def gradient_stream(seed=1, nan_at=2, dtype="float64"):
    """Gradients for STEPS calls, large enough to clip, one of them NaN."""
    rng = np.random.default_rng(seed)
    stream = [[(3.0 * rng.normal(size=s)).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    if nan_at is not None:
        stream[nan_at][1][0, 1] = np.nan
    return stream


def clip_value(grads, params):
    return updates.clip_by_value(grads, -2.0, 2.0)


# (chain parts, the same optimizer written as nested calls: (grads, params) -> updates)
STACKS = {
    "readme-stack": (
        lambda: [
            updates.clip_by_global_norm(max_norm=1.0),
            updates.adam(learning_rate=0.01),
            updates.apply_weight_decay(weight_decay=0.01),
            updates.apply_lookahead(k=2),
            updates.apply_ema(decay=0.9),
            updates.apply_if_finite(),
        ],
        lambda g, p: (
            lambda c: updates.apply_if_finite(
                updates.apply_ema(
                    updates.apply_lookahead(
                        updates.apply_weight_decay(updates.adam(c, p, learning_rate=0.01), weight_decay=0.01),
                        k=2,
                    ),
                    decay=0.9,
                ),
                grads=c,
            )
        )(updates.clip_by_global_norm(g, max_norm=1.0)),
    ),
    "coupled-decay-then-clip": (
        lambda: [
            updates.add_weight_decay(weight_decay=0.1),
            updates.clip_by_norm(max_norm=1.5),
            updates.zero_nans(),
            updates.rmsprop(learning_rate=0.01),
        ],
        lambda g, p: updates.rmsprop(
            updates.zero_nans(updates.clip_by_norm(updates.add_weight_decay(g, p, weight_decay=0.1), 1.5)),
            p,
            learning_rate=0.01,
        ),
    ),
    "lasagne-constraint-and-momentum": (
        lambda: [
            updates.total_norm_constraint(max_norm=2.0),
            updates.sgd(learning_rate=0.1, clear_nan=True),
            functools.partial(updates.apply_nesterov_momentum, momentum=0.8),
            updates.apply_if_finite(max_norm=100.0, budget=5),
        ],
        lambda g, p: (
            lambda c: updates.apply_if_finite(
                updates.apply_nesterov_momentum(
                    updates.sgd(c, p, learning_rate=0.1, clear_nan=True), momentum=0.8
                ),
                grads=c,
                max_norm=100.0,
                budget=5,
            )
        )(updates.total_norm_constraint(g, max_norm=2.0)),
    ),
    "rule-only": (
        lambda: [updates.lion(learning_rate=0.01)],
        lambda g, p: updates.lion(g, p, learning_rate=0.01),
    ),
}


def build_both(name, dtype="float64"):
    parts, nested = STACKS[name]
    grads = gradient_inputs(dtype)
    first, second = make_params(dtype=dtype), make_params(dtype=dtype)
    return grads, (first, updates.chain(*parts())(grads, first)), (second, nested(grads, second))


def run(grads, params, built, stream):
    step = pytensor.function(grads, [], updates=built, mode=MODE)
    for values in stream:
        step(*values)
    return [p.get_value() for p in params], built.named_state()


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (a, b)


@pytest.mark.parametrize("name", list(STACKS))
def test_chain_builds_the_nested_calls(name):
    grads, (chained_params, chained), (nested_params, nested) = build_both(name)
    assert [v.name for v in chained] == [v.name for v in nested]
    assert list(chained.named_state()) == list(nested.named_state())
    assert chained.config == nested.config
    assert equal_computations(
        list(chained.values()), list(nested.values()), in_xs=list(chained), in_ys=list(nested)
    )
    stream = gradient_stream()
    got, want = run(grads, chained_params, chained, stream), run(grads, nested_params, nested, stream)
    for a, b in zip(got[0], want[0]):
        assert_bitwise(a, b)
    assert list(got[1]) == list(want[1])
    for key in got[1]:
        assert_bitwise(got[1][key], want[1][key])


def test_a_graph_that_differs_is_seen_as_different():
    """The structural comparison above can fail: another hyperparameter is another graph."""
    grads = gradient_inputs()
    first, second = make_params(), make_params()
    chained = updates.chain(updates.clip_by_global_norm(max_norm=1.0), updates.adam())(grads, first)
    other = updates.adam(updates.clip_by_global_norm(grads, max_norm=2.0), second)
    assert [v.name for v in chained] == [v.name for v in other]
    assert not equal_computations(
        list(chained.values()), list(other.values()), in_xs=list(chained), in_ys=list(other)
    )


def test_skipped_step_and_if_finite_checks_the_transformed_gradients():
    """apply_if_finite in a chain checks the gradients the rule was given: after zero_nans, a NaN
    gradient is a zero one and the step is applied; without it, the step is skipped."""
    grads, stream = gradient_inputs(), gradient_stream(nan_at=0)[:1]
    cleared, guarded = make_params(), make_params()
    with_zero_nans = updates.chain(
        updates.zero_nans(), updates.sgd(learning_rate=0.1), updates.apply_if_finite()
    )
    plain = updates.chain(updates.sgd(learning_rate=0.1), updates.apply_if_finite())
    run(grads, cleared, with_zero_nans(grads, cleared), stream)
    run(grads, guarded, skipped := plain(grads, guarded), stream)
    assert skipped.named_state()["apply_if_finite.skipped"] == 1
    start = make_params()
    assert all(
        (a != b).any() for a, b in zip((p.get_value() for p in cleared), (p.get_value() for p in start))
    )
    for p, q in zip(guarded, start):
        assert_bitwise(p.get_value(), q.get_value())


def test_a_loss_goes_to_the_rule_and_the_wrappers_get_its_gradients():
    """Given a loss and no transform, the rule gets the loss (a rule may need it) and
    apply_if_finite the gradients of the loss: as the nested calls with pytensor.grad."""
    x = pt.vector("x")
    first, second = make_params(), make_params()

    def loss(params):
        return ((params[0] - x) ** 2).sum() + (params[1] ** 2).sum()

    chained = updates.chain(updates.adam(learning_rate=0.1), updates.apply_if_finite())(loss(first), first)
    nested = updates.apply_if_finite(
        updates.adam(loss(second), second, learning_rate=0.1), grads=pytensor.grad(loss(second), second)
    )
    assert [v.name for v in chained] == [v.name for v in nested]
    assert equal_computations(
        list(chained.values()), list(nested.values()), in_xs=list(chained), in_ys=list(nested)
    )


def test_a_rule_that_needs_the_loss_works_in_a_chain_without_transforms():
    """esgd needs the loss (Hessian-vector products): the chain hands it over, and the wrappers
    that check gradients get those of the loss."""
    first, second = (pytensor.shared(np.array([2.0, -1.0]), name="w") for _ in range(2))

    def loss(w):
        return (w**2).sum() + (w**4).sum()

    chained = updates.chain(updates.esgd(learning_rate=0.05, seed=1), updates.apply_if_finite())(
        loss(first), [first]
    )
    nested = updates.apply_if_finite(
        updates.esgd(loss(second), [second], learning_rate=0.05, seed=1),
        grads=pytensor.grad(loss(second), [second]),
    )
    values = []
    for w, built in ((first, chained), (second, nested)):
        step = pytensor.function([], loss(w), updates=built, mode=MODE)
        values.append([float(step()) for _ in range(4)])
    assert values[0] == values[1] and values[0][-1] < values[0][0]


def test_parts_given_bare_take_their_defaults():
    grads = gradient_inputs()
    first, second = make_params(), make_params()
    bare = updates.chain(updates.zero_nans, updates.adam, updates.apply_ema, updates.apply_if_finite)(
        grads, first
    )
    called = updates.chain(
        updates.zero_nans(), updates.adam(), updates.apply_ema(), updates.apply_if_finite()
    )(grads, second)
    assert [v.name for v in bare] == [v.name for v in called]
    assert equal_computations(
        list(bare.values()), list(called.values()), in_xs=list(bare), in_ys=list(called)
    )


def test_plain_callables_are_classified_by_their_first_argument():
    """A user's transform (first argument ``grads``), a rule made by accumulate_gradients, a
    wrapper (first argument ``updates``) and a chain inside a chain."""
    grads = gradient_inputs()
    first, second = make_params(), make_params()

    def halve(grads):
        return [g / 2 for g in grads]

    def freeze_first(updates, params=None):  # a wrapper: its first argument is named updates
        kept = updates.copy()
        kept[first[0]] = first[0]
        return kept

    inner = updates.chain(updates.sgd(learning_rate=0.5), updates.apply_ema(decay=0.5))
    built = updates.chain(halve, updates.accumulate_gradients(inner, steps=2), freeze_first)(grads, first)
    nested = updates.accumulate_gradients(
        lambda g, p: updates.apply_ema(updates.sgd(g, p, learning_rate=0.5), decay=0.5), steps=2
    )([g / 2 for g in grads], second)
    assert [v.name for v in built] == [v.name for v in nested]
    assert built[first[0]] is first[0]


def test_the_chain_is_a_rule_for_minimize():
    """minimize(optimizer=chain(...)) trains as with the nested calls."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 3))
    finals = []
    for optimizer in (
        updates.chain(
            updates.clip_by_global_norm(max_norm=0.5), updates.adam(learning_rate=0.1), updates.apply_ema()
        ),
        lambda g, p: updates.apply_ema(
            updates.adam(updates.clip_by_global_norm(g, 0.5), p, learning_rate=0.1)
        ),
    ):
        w = pytensor.shared(np.zeros(3), name="w")
        x = pt.matrix("x")
        updates.minimize(
            ((w - x) ** 2).mean(),
            [w],
            [x],
            data,
            optimizer,
            batch_size=4,
            max_epochs=2,
            progress=False,
            mode=MODE,
        )
        finals.append(w.get_value())
    assert (finals[0] != 0).all()
    assert_bitwise(finals[0], finals[1])


def test_called_with_keywords_by_name():
    grads = gradient_inputs()
    params = make_params()
    built = updates.chain(updates.adam())(loss_or_grads=grads, params=params)
    assert isinstance(built, updates.Updates) and list(built)[:2] == params


# -- errors ---------------------------------------------------------------------------------------

CLIP, ADAM, EMA = (
    lambda: updates.clip_by_norm(max_norm=1.0),
    lambda: updates.adam(learning_rate=0.1),
    lambda: updates.apply_ema(decay=0.9),
)

BAD = [
    ((), TypeError, r"^chain: no parts; give at least a rule"),
    (
        (CLIP, EMA),
        TypeError,
        r"^chain: no rule among the parts \(clip_by_norm, apply_ema\); give exactly one",
    ),
    (
        (ADAM, lambda: updates.sgd(learning_rate=0.1)),
        TypeError,
        r"^chain: parts\[0\] \(adam\) and parts\[1\] \(sgd\) are both rules; give exactly one$",
    ),
    (
        (ADAM, CLIP),
        TypeError,
        r"^chain: parts\[1\] \(clip_by_norm\) is a gradient transform after the rule parts\[0\] \(adam\); "
        r"transforms come before it$",
    ),
    (
        (EMA, ADAM),
        TypeError,
        r"^chain: parts\[0\] \(apply_ema\) is an update wrapper before the rule parts\[1\] \(adam\); "
        r"wrappers come after it$",
    ),
    (
        (lambda: 0.1, ADAM),
        TypeError,
        r"^chain: parts\[0\] must be a gradient transform, a rule or an update wrapper \(a callable\), "
        r"got float$",
    ),
    (
        (lambda: pt.vector(), ADAM),
        TypeError,
        r"^chain: parts\[0\] must be a gradient transform, a rule or an update wrapper \(a callable\), "
        r"got TensorVariable",
    ),
    (
        (lambda: updates.clip_by_global_norm, ADAM),
        TypeError,
        r"^chain: parts\[0\] is clip_by_global_norm itself, which needs max_norm; "
        r"give clip_by_global_norm\(max_norm=\.\.\.\)$",
    ),
    (
        (lambda: updates.clip_by_value, ADAM),
        TypeError,
        r"^chain: parts\[0\] is clip_by_value itself, which needs min_value, max_value; "
        r"give clip_by_value\(min_value=",
    ),
    (
        (lambda: updates.clip_by_global_norm(max_norm=1.0, return_norm=True), ADAM),
        ValueError,
        r"^chain: parts\[0\] \(clip_by_global_norm\) has return_norm=True; a chain passes the gradients on",
    ),
]


@pytest.mark.parametrize(("parts", "error", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_misplaced_parts_are_named(parts, error, message):
    with pytest.raises(error, match=message):
        updates.chain(*(make() for make in parts))


def test_errors_when_applied_name_the_part_or_the_chain():
    grads, params = gradient_inputs(), make_params()
    optimizer = updates.chain(updates.clip_by_norm(max_norm=-1.0), updates.adam())
    with pytest.raises(ValueError, match=r"^clip_by_norm: max_norm must be > 0, got -1.0$"):
        optimizer(grads, params)
    with pytest.raises(
        updates.ArgumentError, match=r"^chain: params is missing; give both loss_or_grads and params$"
    ):
        optimizer(grads)
    with pytest.raises(TypeError, match=r"^chain: discard_loss must be True or False, got 'no'$"):
        optimizer(grads, params, discard_loss="no")
    with pytest.raises(updates.ArgumentError, match=r"^chain: params\[0\] \('x'\) is a TensorVariable"):
        optimizer(grads, [pt.vector("x"), params[1]])

    def not_a_list(grads):
        return grads[0]

    with pytest.raises(
        TypeError,
        match=r"^chain: parts\[0\] \(not_a_list\) returned TensorVariable .*, "
        r"expected a list of 2 gradients$",
    ):
        updates.chain(not_a_list, updates.adam())(grads, params)
    with pytest.raises(
        TypeError, match=r"^chain: parts\[1\] \(<lambda>\) returned int, expected a dictionary"
    ):
        updates.chain(updates.adam(), lambda updates: 0)(grads, params)
    with pytest.raises(
        TypeError, match=r"^chain: parts\[0\] \(<lambda>\) returned NoneType, expected a dict"
    ):
        updates.chain(lambda loss_or_grads, params: None)(grads, params)


def test_the_rules_hyperparameters_are_checked_when_the_chain_is_bound():
    optimizer = updates.chain(updates.clip_by_norm(max_norm=1.0), updates.adam())
    with pytest.raises(ValueError, match=r"^adam: beta1 must be in \[0, 1\), got 1.0$"):
        optimizer(beta1=1.0)
    with pytest.raises(
        TypeError, match=r"^adam: got an unexpected keyword argument 'learnign_rate'; did you mean"
    ):
        optimizer(learnign_rate=0.1)
    outer = updates.chain(updates.zero_nans(), optimizer)
    with pytest.raises(ValueError, match=r"^adam: beta1 must be in \[0, 1\), got 1.0$"):
        outer(beta1=1.0)


# -- partial application and the schedulers' contract ----------------------------------------------


def test_the_chain_keywords_are_the_rules_hyperparameters():
    rule = updates.adam(learning_rate=0.05)
    optimizer = updates.chain(updates.clip_by_norm(max_norm=1.0), rule, updates.apply_ema())
    assert optimizer.keywords == rule.keywords
    assert optimizer.func.__name__ == "chain(clip_by_norm, adam, apply_ema)"
    rebound = optimizer(learning_rate=0.2)
    assert rebound.keywords == {**rule.keywords, "learning_rate": 0.2}
    grads = gradient_inputs()
    built = rebound(grads, make_params())
    assert built.hyperparameter_values()["learning_rate"] == 0.2


def scheduled(optimizer, factor, counter_name="scheduler.t"):
    """A learning-rate scheduler as PyMC's development branch writes them, from its description:
    a shared learning rate in place of ``keywords["learning_rate"]``, the optimizer rebuilt from
    ``func`` and ``keywords`` and called with ``discard_loss=False``, a step counter found among
    the updates (a key whose name ends with "t") or added, and the rate multiplied by ``factor``
    at each step."""
    rate = pytensor.shared(np.float64(optimizer.keywords["learning_rate"]), name="scheduled_lr")
    rebuilt = functools.partial(optimizer.func, **{**optimizer.keywords, "learning_rate": rate})

    def step(loss_or_grads, params):
        built, loss = rebuilt(loss_or_grads, params, discard_loss=False)
        counters = [
            key for key in built if key.name and key.name.endswith("t") and key.dtype.startswith("int")
        ]
        if not counters:
            counter = pytensor.shared(np.int64(0), name=counter_name)
            built[counter] = counter + 1
            counters = [counter]
        built[rate] = rate * factor
        return built, loss, counters[0]

    return step, rate


def test_a_partially_applied_rule_honours_the_scheduler_contract_sgd():
    """sgd has no counter: the scheduler adds its own; p <- p - lr0 * factor**k * g."""
    w = pytensor.shared(np.array([1.0, -2.0]), name="w")
    g = pt.vector("g")
    step, rate = scheduled(updates.sgd(learning_rate=0.5), factor=0.5)
    built, loss, counter = step([g], [w])
    assert loss is None and counter.name == "scheduler.t"
    train = pytensor.function([g], [], updates=built, mode=MODE)
    expected = w.get_value()
    for k, value in enumerate([np.array([1.0, 1.0]), np.array([2.0, -4.0]), np.array([0.5, 0.25])]):
        train(value)
        expected = expected - 0.5 * 0.5**k * value
        np.testing.assert_array_equal(w.get_value(), expected)
    assert rate.get_value() == 0.5 * 0.5**3 and counter.get_value() == 3


@pytest.mark.parametrize("kind", ["rule", "chain"])
def test_the_scheduler_contract_against_a_learning_rate_set_by_hand(kind):
    """adam (its counter adam.t found) or a chain with decoupled decay, driven by the scheduler,
    against the same optimizer built with a shared learning rate set by hand before each call.
    The chain's apply_weight_decay takes the rule's (scheduled) learning rate."""
    x = pt.vector("x")

    def make(learning_rate):
        if kind == "rule":
            return updates.adam(learning_rate=learning_rate)
        return updates.chain(
            updates.clip_by_norm(max_norm=1.0),
            updates.adam(learning_rate=learning_rate),
            updates.apply_weight_decay(),
        )

    w, v = (pytensor.shared(np.array([1.0, -2.0, 0.5]), name="w") for _ in range(2))
    step, _ = scheduled(make(0.1), factor=0.7)
    built, loss, counter = step(((w - x) ** 2).sum(), [w])
    assert counter.name == "adam.t" and loss is not None
    train = pytensor.function([x], loss, updates=built, mode=MODE)
    by_hand_rate = updates.live(0.1)
    by_hand = pytensor.function([x], [], updates=make(by_hand_rate)(((v - x) ** 2).sum(), [v]), mode=MODE)
    for k, target in enumerate(np.random.default_rng(0).normal(size=(5, 3))):
        by_hand_rate.set_value(0.1 * 0.7**k)
        train(target), by_hand(target)
        assert_bitwise(w.get_value(), v.get_value())
    assert counter.get_value() == 5


def test_discard_loss_on_rules():
    w = pytensor.shared(np.ones(2), name="w")
    loss = (w**2).sum()
    built, returned = updates.adam(loss, [w], discard_loss=False)
    assert returned is loss and isinstance(built, updates.Updates)
    built, returned = updates.adam([2 * w], [w], discard_loss=False)
    assert returned is None
    assert isinstance(updates.adam(loss, [w], discard_loss=True), updates.Updates)
    assert updates.lbfgs(loss, [w], discard_loss=False)[1] is loss  # a rule outside the registry
    later = updates.adam(learning_rate=0.1, discard_loss=False)
    assert later.keywords["discard_loss"] is False and isinstance(later(loss, [w]), tuple)
    assert "discard_loss" not in updates.adam(learning_rate=0.1).keywords
    with pytest.raises(TypeError, match=r"^adam: discard_loss must be True or False, got 0$"):
        updates.adam(loss, [w], discard_loss=0)
    with pytest.raises(
        TypeError,
        match=r"^adam: got an unexpected keyword argument 'discard_los'; did you mean 'discard_loss'\?$",
    ):
        updates.adam(loss, [w], discard_los=False)


@pytest.mark.parametrize("case", RULES, ids=str)
def test_every_rule_honours_discard_loss_and_rebuilds_from_func_and_keywords(case):
    w = pytensor.shared(np.ones(3), name="w")
    loss = ((w - 2.0) ** 2).sum()
    built, returned = case.function(loss, [w], **case.hyper, discard_loss=False)
    assert returned is loss and isinstance(built, updates.Updates)
    if not case.needs_loss:
        assert case.function([pt.vector()], [w], **case.hyper, discard_loss=False)[1] is None
    later = case.function(**case.hyper)
    assert later.func is case.function and "learning_rate" in later.keywords
    rate = pytensor.shared(np.float64(later.keywords["learning_rate"]), name="lr")
    rebuilt = functools.partial(later.func, **{**later.keywords, "learning_rate": rate})
    built, returned = rebuilt(loss_or_grads=loss, params=[w], discard_loss=False)
    assert returned is loss and [v.name for v in built] == [
        v.name for v in case.function(loss, [w], **case.hyper)
    ]
    assert "discard_loss : bool" in case.function.__doc__


def test_discard_loss_on_chains():
    w = pytensor.shared(np.ones(2), name="w")
    loss = (w**2).sum()
    optimizer = updates.chain(updates.clip_by_norm(max_norm=1.0), updates.sgd())
    built, returned = optimizer(loss, [w], discard_loss=False)
    assert returned is loss and isinstance(built, updates.Updates)
    assert optimizer([2 * w], [w], discard_loss=False)[1] is None
    assert isinstance(optimizer(discard_loss=False)(loss, [w]), tuple)


# -- PyMC -----------------------------------------------------------------------------------------


def test_pymc_fits_with_a_chain():
    """pm.fit(obj_optimizer=chain(...)) traces the same ELBO as the nested calls (PyMC's own CI
    environment; skipped where PyMC is not installed, an error there under UPDATES_REQUIRE_PYMC)."""
    if "UPDATES_REQUIRE_PYMC" in os.environ:
        import pymc as pm
    else:
        pm = pytest.importorskip("pymc")

    def nested(grads, params):
        clipped = updates.clip_by_global_norm(grads, 5.0)
        return updates.apply_if_finite(updates.adam(clipped, params, learning_rate=0.05), grads=clipped)

    chained = updates.chain(
        updates.clip_by_global_norm(max_norm=5.0), updates.adam(learning_rate=0.05), updates.apply_if_finite()
    )
    losses = []
    for optimizer in (chained, nested):
        with pm.Model():
            mu = pm.Normal("mu", 0.0, 10.0)
            pm.Normal("y", mu, 1.0, observed=np.array([1.0, 2.0, 1.5]))
            approx = pm.fit(50, method="advi", obj_optimizer=optimizer, random_seed=3, progressbar=False)
        losses.append(np.asarray(approx.hist))
    assert losses[0].shape == (50,)
    np.testing.assert_array_equal(losses[0], losses[1])
