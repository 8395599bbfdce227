r"""Composition: one optimizer from gradient transforms, a rule and update wrappers.

:func:`chain` writes the nested calls of a composed optimizer as a flat list, in the order the
gradients flow (optax's ``chain``, torch's optimizer plus its gradient clipping)::

    step = updates.chain(
        updates.clip_by_global_norm(max_norm=1.0),        # gradient transforms
        updates.adam(learning_rate=1e-3),                  # exactly one rule
        updates.apply_weight_decay(weight_decay=0.01),     # update wrappers, innermost first
        updates.apply_if_finite(),
    )
    pytensor.function(inputs, loss, updates=step(loss, params))

Each part is partially applied: a transform or a wrapper called without its first argument (the
gradients, the updates), with keywords only, returns itself awaiting it, as a rule called
without ``loss_or_grads`` and ``params`` does. The chain builds exactly the nested calls (the
same graph, state names and trajectories), gives the params to the transforms that take them
(``add_weight_decay``, a ``mask`` by name) and gives the gradients the rule receives to the
wrappers that check them (``apply_if_finite``'s ``grads``).

Masks: weight decay (:func:`add_weight_decay`, :func:`apply_weight_decay`), the clipping transforms
(:func:`clip_by_value`, :func:`clip_by_norm`, :func:`clip_by_global_norm`,
:func:`clip_by_block_rms`, :func:`adaptive_grad_clip`, :func:`total_norm_constraint`),
:func:`normalize_by_update_norm`, :func:`centralize` and the elementwise wrappers (:func:`apply_lookahead`,
:func:`apply_ema`) take ``mask=``: a callable on each param, one boolean per param, or a name
pattern (``fnmatch``); the params it leaves out pass through that part unchanged. For different
rules per group of params, chain each group and merge with :func:`merge_updates` (see
:func:`chain`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytensor.graph.basic import Variable

from updates.checks import ArgumentError, describe
from updates.grads import prepare_grads
from updates.public import TRANSFORM_INPUTS, WRAPPER_INPUTS, pop_discard_loss, with_loss

__all__ = ["chain"]


@dataclass(frozen=True)
class _Part:
    """One part of a chain: its position, the callable, its name and kind."""

    index: int
    function: Callable
    name: str
    kind: str  # "transform", "rule" or "wrapper"

    def __str__(self) -> str:
        return f"parts[{self.index}] ({self.name})"

    def takes(self, argument: str) -> bool:
        """Whether the chain gives this part ``argument``: it takes it and none is bound."""
        return argument in _parameters(self.function) and _bound(self.function).get(argument) is None


def _parameters(function: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):  # a callable without a signature: taken as a rule
        return {}


def _bound(function: Callable) -> dict[str, Any]:
    """The keywords bound in a partially applied callable."""
    return dict(getattr(function, "keywords", None) or {})


def _name(function: Callable) -> str:
    inner = function.func if isinstance(function, functools.partial) else function
    return getattr(inner, "__name__", type(inner).__name__)


def _kind(function: Callable) -> str:
    """A transform takes ``grads`` (or ``tensor_vars``) first, a wrapper ``updates``; anything
    else, ``(loss_or_grads, params)``, is a rule."""
    first = next(iter(_parameters(function)), None)
    if first in TRANSFORM_INPUTS:
        return "transform"
    if first in WRAPPER_INPUTS:
        return "wrapper"
    return "rule"


def _part(who: str, index: int, function: Any) -> _Part:
    """A part, checked; one of this library's functions given bare is applied to no arguments
    (its defaults bound), or refused if it needs some."""
    if not callable(function) or isinstance(function, Variable):
        raise TypeError(
            f"{who}: parts[{index}] must be a gradient transform, a rule or an update wrapper "
            f"(a callable), got {describe(function)}"
        )
    name, kind = _name(function), _kind(function)
    awaits = getattr(function, "awaits", None)
    if awaits is not None and not isinstance(function, functools.partial):
        needed = [
            n
            for n, p in _parameters(function).items()
            if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and n not in (awaits, "params")
        ]
        if needed:
            raise TypeError(
                f"{who}: parts[{index}] is {name} itself, which needs {', '.join(needed)}; "
                f"give {name}({needed[0]}=...)"
            )
        function = function()
    if kind == "transform" and _bound(function).get("return_norm"):
        raise ValueError(
            f"{who}: parts[{index}] ({name}) has return_norm=True; a chain passes the gradients on, "
            "not their norm: leave return_norm out"
        )
    return _Part(index, function, name, kind)


def _arrange(who: str, parts: list[_Part]) -> tuple[list[_Part], _Part, list[_Part]]:
    """The transforms, the rule and the wrappers, or an error naming the part out of place."""
    rules = [part for part in parts if part.kind == "rule"]
    if not rules:
        given = ", ".join(part.name for part in parts) or "none"
        raise TypeError(
            f"{who}: no rule among the parts ({given}); give exactly one, "
            "e.g. updates.adam(learning_rate=1e-3)"
        )
    if len(rules) > 1:
        raise TypeError(f"{who}: {rules[0]} and {rules[1]} are both rules; give exactly one")
    rule = rules[0]
    for part in parts:
        if part.kind == "transform" and part.index > rule.index:
            raise TypeError(
                f"{who}: {part} is a gradient transform after the rule {rule}; transforms come before it"
            )
        if part.kind == "wrapper" and part.index < rule.index:
            raise TypeError(
                f"{who}: {part} is an update wrapper before the rule {rule}; wrappers come after it"
            )
    transforms = [part for part in parts if part.index < rule.index]
    return transforms, rule, [part for part in parts if part.index > rule.index]


def chain(*parts: Callable) -> functools.partial:
    r"""Compose gradient transforms, one rule and update wrappers into one optimizer.

    With transforms :math:`T_1 \dots T_k`, the rule :math:`R` and wrappers :math:`W_1 \dots W_m`,
    the optimizer computes

    .. math::

        g = T_k(\cdots T_1(\nabla_p L)), \qquad
        \text{updates} = W_m(\cdots W_1(R(g, p)))

    exactly as the nested calls do: ``chain(t, adam(...), w1, w2)(loss, params)`` builds
    ``w2(w1(adam(t(grads), params)))``, with the same graph, the same state names and the same
    trajectories.

    Parameters
    ----------
    *parts : callables
        In order: gradient transforms (a callable taking ``grads`` first, e.g.
        ``clip_by_global_norm(max_norm=1.0)``, ``add_weight_decay(weight_decay=1e-4)``), exactly
        one rule (``adam(learning_rate=1e-3)``, or any callable ``(loss_or_grads, params) ->
        updates``: another chain, ``accumulate_gradients(...)``, PyMC's rules), then update
        wrappers (a callable taking ``updates`` first, e.g. ``apply_if_finite()``), innermost
        first. Each is partially applied: called with keywords only, a transform or wrapper of
        this library returns itself awaiting its first argument. One given bare
        (``updates.adam``, ``updates.apply_if_finite``, ``updates.zero_nans``) is taken with its
        defaults; one that needs an argument (``updates.clip_by_global_norm``: ``max_norm``) is
        refused. A part is classified by the name of its first parameter: ``grads`` (or
        ``tensor_vars``) a transform, ``updates`` a wrapper, anything else a rule.

    Returns
    -------
    functools.partial
        The optimizer, ``optimizer(loss_or_grads, params) -> Updates`` (by position or by
        keyword), for ``pytensor.function(updates=...)``, ``pm.fit(obj_optimizer=...)`` and
        :func:`minimize`. Like a partially applied rule, its ``.keywords`` are the rule's
        hyperparameters (replace one, e.g. ``learning_rate``, and call
        ``functools.partial(optimizer.func, **keywords)``), called with hyperparameters only it
        returns itself with them bound, and ``discard_loss=False`` makes it return
        ``(updates, loss)`` (the loss as given, None for a list of gradients).

    Raises
    ------
    TypeError
        For a part that is not callable, no rule or two, a transform after the rule or a wrapper
        before it, and one of this library's functions given bare that needs arguments; each
        message names the part by position and name.
    ValueError
        For a transform with ``return_norm=True`` (a chain passes on the gradients only).

    Notes
    -----
    The gradients are computed once, when a transform or a wrapper needs them; otherwise the
    rule gets ``loss_or_grads`` as given (so a rule that needs the loss, such as :func:`esgd`,
    works in a chain without transforms). Each transform whose signature has ``params`` gets
    them (unless bound), and each wrapper taking ``grads`` (:func:`apply_if_finite`) gets the
    gradients the rule was given, after the transforms (unless bound): a step is skipped when
    those are not finite. Hyperparameters of the rule are checked when the chain is made; those
    of the other parts when the optimizer is applied.

    optax's ``chain`` composes gradient transformations only, the rule among them, and applies
    the result to the params with ``apply_updates``; here the rule returns the new values and
    the wrappers after it act on those.

    For groups of params with different rules, chain each group and merge the updates with
    :func:`merge_updates`; for the same rule with parts that skip some params, use ``mask=``.

    Examples
    --------
    A guarded AdamW with clipping and averaging, the README's stack:

    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(3), name="w")
    >>> g = pt.vector("g")
    >>> optimizer = updates.chain(
    ...     updates.clip_by_global_norm(max_norm=1.0),
    ...     updates.adam(learning_rate=0.01),
    ...     updates.apply_weight_decay(weight_decay=0.01),
    ...     updates.apply_lookahead(),
    ...     updates.apply_ema(decay=0.99),
    ...     updates.apply_if_finite(),
    ... )
    >>> safe = optimizer([g], [w])
    >>> train = pytensor.function([g], [], updates=safe)
    >>> for value in ([1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [0.5, 0.5, 0.5]):
    ...     _ = train(np.array(value))
    >>> updates.inspect_state(safe).steps["adam.t"]  # the NaN step was skipped whole
    2

    Groups: a chain per group, merged; the bias has no weight decay and its own learning rate:

    >>> W, b = pytensor.shared(np.ones((2, 2)), name="W"), pytensor.shared(np.ones(2), name="b")
    >>> grads = updates.get_or_compute_grads((W**2).sum() + (b**2).sum(), [W, b])
    >>> decayed = updates.chain(updates.adam(learning_rate=0.1), updates.apply_weight_decay())
    >>> plain = updates.chain(updates.clip_by_norm(max_norm=1.0), updates.sgd(learning_rate=0.5))
    >>> merged = updates.merge_updates(decayed(grads[:1], [W]), plain(grads[1:], [b]))
    >>> [v.name for v in merged]
    ['W', 'b', 'adam.m', 'adam.v', 'adam.t']
    """
    who = "chain"
    if not parts:
        raise TypeError(
            f"{who}: no parts; give at least a rule, e.g. chain(updates.adam(learning_rate=1e-3))"
        )
    transforms, rule, wrappers = _arrange(who, [_part(who, i, part) for i, part in enumerate(parts)])
    base = rule.function
    if isinstance(base, functools.partial):
        base = functools.partial(base.func, *base.args)
    optimizer = _optimizer(who, transforms, (base, str(rule)), wrappers)
    optimizer.__name__ = optimizer.__qualname__ = (
        f"chain({', '.join(p.name for p in (*transforms, rule, *wrappers))})"
    )
    return functools.partial(optimizer, **_bound(rule.function))


def _optimizer(
    who: str, transforms: list[_Part], rule_and_label: tuple[Callable, str], wrappers: list[_Part]
) -> Callable:
    """The chain's optimizer: ``(loss_or_grads, params, **rule_hyperparameters) -> Updates``."""
    rule, label = rule_and_label
    needs_grads = bool(transforms) or any(part.takes("grads") for part in wrappers)
    library_rule = getattr(getattr(rule, "func", rule), "awaits", None) == "loss_or_grads"

    def optimizer(loss_or_grads: Any = None, params: Any = None, **hyper: Any) -> Any:
        discard = pop_discard_loss(who, hyper)
        if loss_or_grads is None and params is None:
            if library_rule:
                rule(**hyper)  # the rule checks its hyperparameters now
            bound = {} if discard is None else {"discard_loss": discard}
            return functools.partial(optimizer, **hyper, **bound)
        if loss_or_grads is None or params is None:
            missing = "loss_or_grads" if loss_or_grads is None else "params"
            raise ArgumentError(f"{who}: {missing} is missing; give both loss_or_grads and params")
        given, grads = loss_or_grads, None
        if needs_grads:
            params, grads = prepare_grads(who, loss_or_grads, params)
            grads = _transformed(who, transforms, grads, params)
            given = grads if transforms else loss_or_grads
        built = rule(given, params, **hyper)
        _check_updates(who, built, label)
        for part in wrappers:
            built = part.function(built, **({"grads": grads} if part.takes("grads") else {}))
            _check_updates(who, built, str(part))
        return with_loss(built, loss_or_grads, discard)

    optimizer.awaits = "loss_or_grads"  # a chain in a chain checks its rule's hyperparameters early
    return optimizer


def _transformed(who: str, transforms: list[_Part], grads: list[Variable], params: list) -> list[Variable]:
    """``grads`` through each transform in turn, each given the params if it takes them."""
    for part in transforms:
        grads = part.function(grads, **({"params": params} if part.takes("params") else {}))
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            shown = f"{len(grads)} entries" if isinstance(grads, (list, tuple)) else describe(grads)
            raise TypeError(f"{who}: {part} returned {shown}, expected a list of {len(params)} gradients")
        grads = list(grads) if isinstance(grads, tuple) else grads
    return grads


def _check_updates(who: str, built: Any, what: str) -> None:
    if not isinstance(built, Mapping):
        raise TypeError(f"{who}: {what} returned {describe(built)}, expected a dictionary of updates")
