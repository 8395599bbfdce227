"""mask= on weight decay, the clipping transforms and the elementwise wrappers: the same values,
bit for bit after several steps, as building the same thing by hand (the gradients split, or the
params split into groups and merged with merge_updates); every form of mask (callable, list of
booleans, name pattern); clear errors.

Graphs are tiny and compiled with FAST_COMPILE.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import equal_computations

import updates

MODE = "FAST_COMPILE"
NAMES_SHAPES = [("h.W", (2, 3)), ("h.b", (3,)), ("o.W", (3, 1)), ("o.b", (1,))]
SELECTED = [True, False, True, False]  # the weight matrices
MASKS = {"callable": lambda p: p.ndim > 1, "list": SELECTED, "pattern": "*.W"}
STEPS = 5


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [pytensor.shared(rng.normal(size=s), name=n) for n, s in NAMES_SHAPES]


def gradient_inputs():
    return [pt.tensor(dtype="float64", shape=(None,) * len(s), name=f"g_{n}") for n, s in NAMES_SHAPES]


def stream(seed=1):
    rng = np.random.default_rng(seed)
    return [[3.0 * rng.normal(size=s) for _, s in NAMES_SHAPES] for _ in range(STEPS)]


def split(items):
    """The selected items and the others."""
    return [x for x, k in zip(items, SELECTED) if k], [x for x, k in zip(items, SELECTED) if not k]


def mix(selected, others):
    """Selected and other items back in the params' order."""
    chosen, rest = iter(selected), iter(others)
    return [next(chosen) if k else next(rest) for k in SELECTED]


def run(grads, params, built, state=()):
    step = pytensor.function(grads, [], updates=built, mode=MODE)
    for values in stream():
        step(*values)
    named = built.named_state()
    return [p.get_value() for p in params] + [named[name] for name in state]


def assert_bitwise(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (a, b)


# -- transforms: the masked gradients against the gradients split by hand ---------------------------

TRANSFORMS = {
    "clip_by_value": (
        lambda g, p, mask: updates.clip_by_value(g, -1.0, 0.5, mask=mask, params=p),
        lambda g, p: mix(updates.clip_by_value(split(g)[0], -1.0, 0.5), split(g)[1]),
    ),
    "clip_by_norm": (
        lambda g, p, mask: updates.clip_by_norm(g, 1.0, mask=mask, params=p),
        lambda g, p: mix(updates.clip_by_norm(split(g)[0], 1.0), split(g)[1]),
    ),
    "clip_by_global_norm": (
        lambda g, p, mask: updates.clip_by_global_norm(g, 1.0, mask=mask, params=p),
        lambda g, p: mix(updates.clip_by_global_norm(split(g)[0], 1.0), split(g)[1]),
    ),
    "total_norm_constraint": (
        lambda g, p, mask: updates.total_norm_constraint(g, 1.0, mask=mask, params=p),
        lambda g, p: mix(updates.total_norm_constraint(split(g)[0], 1.0), split(g)[1]),
    ),
    "add_weight_decay": (
        lambda g, p, mask: updates.add_weight_decay(g, p, 0.3, mask=mask),
        lambda g, p: mix(updates.add_weight_decay(split(g)[0], split(p)[0], 0.3), split(g)[1]),
    ),
    "centralize": (
        lambda g, p, mask: updates.centralize(g, mask=mask, params=p),
        lambda g, p: mix(updates.centralize(split(g)[0]), split(g)[1]),
    ),
    "adaptive_grad_clip": (
        lambda g, p, mask: updates.adaptive_grad_clip(g, p, 0.1, mask=mask),
        lambda g, p: mix(updates.adaptive_grad_clip(split(g)[0], split(p)[0], 0.1), split(g)[1]),
    ),
    "clip_by_block_rms": (
        lambda g, p, mask: updates.clip_by_block_rms(g, 0.2, mask=mask, params=p),
        lambda g, p: mix(updates.clip_by_block_rms(split(g)[0], 0.2), split(g)[1]),
    ),
    "normalize_by_update_norm": (
        lambda g, p, mask: updates.normalize_by_update_norm(g, 0.5, mask=mask, params=p),
        lambda g, p: mix(updates.normalize_by_update_norm(split(g)[0], 0.5), split(g)[1]),
    ),
}


@pytest.mark.parametrize("form", list(MASKS))
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_masked_transform_is_the_transform_of_the_selected_gradients(name, form):
    masked, by_hand = TRANSFORMS[name]
    grads = gradient_inputs()
    first, second = make_params(), make_params()
    got = masked(grads, first, MASKS[form])
    want = by_hand(grads, second)
    for i, keep in enumerate(SELECTED):
        if not keep:
            assert got[i] is grads[i]  # passed through: the same variable
    got_updates = updates.adam(got, first, learning_rate=0.1)
    want_updates = updates.adam(want, second, learning_rate=0.1)
    assert_bitwise(run(grads, first, got_updates), run(grads, second, want_updates))
    assert any(
        (a != b).any() for a, b in zip((p.get_value() for p in first), (p.get_value() for p in make_params()))
    )


def test_the_global_norm_of_a_mask_is_the_norm_of_the_selected_gradients():
    values = [np.full(s, 2.0) for _, s in NAMES_SHAPES]
    _, norm = updates.clip_by_global_norm(values, 1.0, return_norm=True, mask=SELECTED)
    assert norm.eval() == pytest.approx(np.sqrt(4.0 * (6 + 3)))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_in_a_chain_a_transform_gets_the_params_for_its_mask(name):
    """chain gives the params, so a mask by name works without params=."""
    partial = {
        "clip_by_value": lambda: updates.clip_by_value(min_value=-1.0, max_value=0.5, mask="*.W"),
        "clip_by_norm": lambda: updates.clip_by_norm(max_norm=1.0, mask="*.W"),
        "clip_by_global_norm": lambda: updates.clip_by_global_norm(max_norm=1.0, mask="*.W"),
        "total_norm_constraint": lambda: updates.total_norm_constraint(max_norm=1.0, mask="*.W"),
        "add_weight_decay": lambda: updates.add_weight_decay(weight_decay=0.3, mask="*.W"),
        "centralize": lambda: updates.centralize(mask="*.W"),
        "adaptive_grad_clip": lambda: updates.adaptive_grad_clip(clipping=0.1, mask="*.W"),
        "clip_by_block_rms": lambda: updates.clip_by_block_rms(threshold=0.2, mask="*.W"),
        "normalize_by_update_norm": lambda: updates.normalize_by_update_norm(scale_factor=0.5, mask="*.W"),
    }[name]()
    grads = gradient_inputs()
    first, second = make_params(), make_params()
    chained = updates.chain(partial, updates.adam(learning_rate=0.1))(grads, first)
    nested = updates.adam(TRANSFORMS[name][0](grads, second, "*.W"), second, learning_rate=0.1)
    assert equal_computations(
        list(chained.values()), list(nested.values()), in_xs=list(chained), in_ys=list(nested)
    )


# -- wrappers: the masked wrapper against groups merged by hand --------------------------------------

WRAPPERS = {  # name: (hyperparameters, state compared)
    "apply_momentum": (dict(momentum=0.8), ["h.W.apply_momentum.velocity", "o.W.apply_momentum.velocity"]),
    "apply_nesterov_momentum": (
        dict(momentum=0.7),
        ["h.W.apply_nesterov_momentum.velocity", "o.W.apply_nesterov_momentum.velocity"],
    ),
    "apply_weight_decay": (dict(weight_decay=0.2), []),
    "apply_lookahead": (dict(k=2, alpha=0.4), ["h.W.apply_lookahead.slow", "o.W.apply_lookahead.slow"]),
    "apply_ema": (dict(decay=0.7), ["h.W.apply_ema.shadow", "o.W.apply_ema.shadow"]),
}


@pytest.mark.parametrize("form", list(MASKS))
@pytest.mark.parametrize("name", list(WRAPPERS))
def test_a_masked_wrapper_is_the_wrapper_of_one_group_merged_with_the_other(name, form):
    """mask= equals splitting the params into two groups, wrapping one, merging (two Adam
    instances, one per group); and, as a graph, giving the selected params as params=."""
    wrapper, (hyper, state) = getattr(updates, name), WRAPPERS[name]
    grads = gradient_inputs()
    first, second, third = make_params(), make_params(), make_params()
    got = wrapper(updates.adam(grads, first, learning_rate=0.1), mask=MASKS[form], **hyper)
    (g_in, g_out), (p_in, p_out) = split(grads), split(second)
    merged = updates.merge_updates(
        wrapper(updates.adam(g_in, p_in, learning_rate=0.1), **hyper),
        updates.adam(g_out, p_out, learning_rate=0.1),
    )
    assert list(got.params) == first
    assert_bitwise(run(grads, first, got, state), run(grads, second, merged, state))
    again = wrapper(updates.adam(grads, third, learning_rate=0.1), mask=MASKS[form], **hyper)
    fourth = make_params()
    listed = wrapper(updates.adam(grads, fourth, learning_rate=0.1), params=split(fourth)[0], **hyper)
    assert [v.name for v in again] == [v.name for v in listed]
    assert equal_computations(
        list(again.values()), list(listed.values()), in_xs=list(again), in_ys=list(listed)
    )


def test_a_masked_wrapper_leaves_the_others_as_the_rule_moves_them():
    """The params the mask leaves out take exactly the rule's new values."""
    grads = gradient_inputs()
    params = make_params()
    rule = updates.adam(grads, params, learning_rate=0.1)
    decayed = updates.apply_weight_decay(rule, weight_decay=0.2, mask="*.W")
    for param, keep in zip(params, SELECTED):
        assert (decayed[param] is rule[param]) is not keep


def test_swap_averages_swaps_only_the_masked_params():
    grads = gradient_inputs()
    params = make_params()
    averaged = updates.apply_ema(updates.sgd(grads, params, learning_rate=0.1), decay=0.5, mask="*.W")
    step = pytensor.function(grads, [], updates=averaged, mode=MODE)
    for values in stream():
        step(*values)
    before = [p.get_value() for p in params]
    with updates.swap_averages(averaged) as holders:
        assert set(holders) == {params[0], params[2]}
        inside = [p.get_value() for p in params]
    assert (inside[0] != before[0]).all() and (inside[2] != before[2]).all()
    np.testing.assert_array_equal(inside[0], averaged.named_state()["h.W.apply_ema.shadow"])
    for i in (1, 3):
        np.testing.assert_array_equal(inside[i], before[i])


def test_a_pattern_names_an_unnamed_param_by_its_index():
    params = [pytensor.shared(np.ones(2)), pytensor.shared(np.ones(2))]
    grads = [np.full(2, 3.0), np.full(2, 3.0)]
    clipped = updates.clip_by_value(grads, -1.0, 1.0, mask="param1", params=params)
    assert [g.eval().tolist() for g in clipped] == [[3.0, 3.0], [1.0, 1.0]]


def test_groups_with_different_rules_in_one_chain_each():
    """The docstring's recipe for groups: a chain per group, merged: the same values as the
    groups built by hand with nested calls."""
    grads = gradient_inputs()
    first, second = make_params(), make_params()
    (g_in, g_out), (p_in, p_out) = split(grads), split(first)
    decayed = updates.chain(
        updates.clip_by_norm(max_norm=1.0), updates.adam(learning_rate=0.1), updates.apply_weight_decay()
    )
    merged = updates.merge_updates(
        decayed(g_in, p_in), updates.chain(updates.sgd(learning_rate=0.2))(g_out, p_out)
    )
    (h_in, h_out), (q_in, q_out) = split(grads), split(second)
    by_hand = updates.merge_updates(
        updates.apply_weight_decay(updates.adam(updates.clip_by_norm(h_in, 1.0), q_in, learning_rate=0.1)),
        updates.sgd(h_out, q_out, learning_rate=0.2),
    )
    assert [v.name for v in merged] == [v.name for v in by_hand]
    assert_bitwise(run(grads, first, merged), run(grads, second, by_hand))


# -- errors ----------------------------------------------------------------------------------------


def bad_masks():
    params = make_params()
    grads = gradient_inputs()
    rule = updates.sgd(grads, params)
    return [
        (
            lambda: updates.apply_ema(rule, mask=[True, False]),
            ValueError,
            r"^apply_ema: mask has 2 entries for 4 params; give one boolean per param$",
        ),
        (
            lambda: updates.apply_ema(rule, mask=[1, 0, 1, 0]),
            TypeError,
            r"^apply_ema: mask\[0\] must be True or False, got int$",
        ),
        (
            lambda: updates.apply_lookahead(rule, mask=lambda p: p.ndim),
            TypeError,
            r"^apply_lookahead: mask returned int for params\[0\] \('h.W'\), expected True or False$",
        ),
        (
            lambda: updates.apply_weight_decay(rule, mask="*.bias"),
            ValueError,
            r"^apply_weight_decay: mask '\*.bias' selects none of the 4 params "
            r"\('h.W', 'h.b', 'o.W', 'o.b'\); leave this part out instead$",
        ),
        (
            lambda: updates.apply_weight_decay(rule, mask=3),
            TypeError,
            r"^apply_weight_decay: mask must be a callable on each param, a list of booleans or a "
            r"name pattern \(str\), got int$",
        ),
        (
            lambda: updates.clip_by_norm(grads, 1.0, mask="*.W"),
            TypeError,
            r"^clip_by_norm: mask '\*.W' selects by param, so it needs the params; give params=\.\.\.$",
        ),
        (
            lambda: updates.clip_by_global_norm(grads, 1.0, mask=lambda p: True),
            TypeError,
            r"^clip_by_global_norm: mask <lambda> selects by param, so it needs the params; "
            r"give params=\.\.\.$",
        ),
        (
            lambda: updates.clip_by_value(grads, -1.0, 1.0, mask=SELECTED, params=params[:3]),
            ValueError,
            r"^clip_by_value: got 4 gradients for 3 params; give one param per gradient$",
        ),
        (
            lambda: updates.total_norm_constraint(grads, 1.0, mask=SELECTED, params=params[:3]),
            ValueError,
            r"^total_norm_constraint: got 4 tensors for 3 params; give one param per tensor$",
        ),
        (
            lambda: updates.add_weight_decay(grads, params, mask=[False] * 4),
            ValueError,
            r"^add_weight_decay: mask \[False, False, False, False\] selects none of the 4 params",
        ),
        (
            lambda: updates.apply_ema(mask=[True]),
            None,
            None,
        ),
    ]


@pytest.mark.parametrize("index", range(len(bad_masks())))
def test_bad_masks_are_refused_with_the_functions_name(index):
    call, error, message = bad_masks()[index]
    if error is None:  # a wrong mask is seen when the part is applied, not when it is bound
        assert callable(call())
        return
    with pytest.raises(error, match=message):
        call()
