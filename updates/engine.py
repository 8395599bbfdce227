"""The engine: how a rule's elementwise equations become updates for every parameter.

A rule is declared as a :class:`~updates.engine.Rule`: its name, the state slots it keeps per
parameter, an optional function of the step count computed once per step (e.g. Adam's
bias-corrected step size), the valid range of each hyperparameter, and its *kernel*, the
elementwise equations ``(h, param, grad, *slots) -> (new_param, *new_slots)`` with ``h`` the
hyperparameters cast to the parameter's dtype. Its public function (in ``rules.py``,
``modern.py``, ``momentum.py``) hands the rule and its arguments, by name, to
:func:`~updates.engine.apply_rule`, which checks them, computes the gradients and applies the
kernel as an :class:`~updates.engine.Elementwise` step: one multi-tensor node per dtype
(``updates.fused.FusedStep``), or per parameter under :func:`updates.per_parameter`. The
elementwise wrappers (momentum, weight decay, lookahead, averaging) are elementwise steps too,
applied by :func:`~updates.engine.wrap_elementwise` to the new values the wrapped updates give
the params.

Reading ``adam`` from the call to the kernel: ``rules.py`` (its equations and its body), this
module (``apply_rule``, ``_scalars``, ``_apply_fused``), ``fused.py`` (the node) and the backend
of the linker (``backends/c.py`` or ``backends/numba.py``); the "Reading map" of
``docs/design.md`` lists them in order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from updates.checks import (
    Interval,
    check_hyperparameter,
    check_mapping,
    check_params,
    describe_hyperparameter,
    is_concrete,
    is_schedule,
    label,
    which,
)
from updates.container import Updates
from updates.fused import FusedStep, gated_by
from updates.grads import clear_nan, loss_of, prepare_grads
from updates.layout import flat_state, new_state, state_like, state_of_shape, step_counter
from updates.public import checks_keywords
from updates.reductions import Terms, fused_sums, total

__all__ = ["Rule", "Elementwise", "apply_rule", "wrap_elementwise", "per_parameter", "gated"]


def as_dtype(value: Any, dtype: str) -> Variable:
    """A hyperparameter as a scalar of ``dtype``: concrete numbers are rounded once, here."""
    if is_concrete(value):
        return pt.constant(np.asarray(value, dtype=dtype))
    return pt.cast(value, dtype)


def _evaluate(value: Any, counter: Variable | None) -> Any:
    """A hyperparameter's value for the next call: a schedule is evaluated at ``counter``."""
    return value(counter) if is_schedule(value) else value


def schedule_state(values: Iterable[Any]) -> dict[Variable, Variable]:
    """The updates of the schedules among ``values`` that keep state of their own.

    A schedule may define ``state_updates() -> {shared variable: new value}`` (e.g. one driven by
    the loss); those become optimizer state in the returned updates.
    """
    state = {}
    for value in values:
        if is_schedule(value) and hasattr(value, "state_updates"):
            state.update(value.state_updates())
    return state


def first_step(h: SimpleNamespace, t: Variable, step: Variable) -> dict[str, Variable]:
    """The ``per_step`` scalar of a rule whose first step differs (no state before it):
    ``first``, 1 on the first step and 0 after, in the dtype of the rule's ``t``."""
    return dict(first=pt.cast(pt.eq(step, 1), t.dtype))


def give_loss(who: str, name: str, value: Any, loss: Variable | None, wrapper: bool = False) -> Any:
    """``value``, or, for a schedule watching a loss it was built without (``needs_loss``), that
    schedule watching ``loss``: the loss of the rule ``who``.

    A rule given gradients (``loss`` None) and a wrapper (``wrapper``) have no loss to hand over:
    a ``ValueError`` names ``who``, the hyperparameter and the schedule.
    """
    if not (is_schedule(value) and getattr(value, "needs_loss", False)):
        return value
    if loss is not None:
        return value.with_loss(loss)
    if wrapper:
        why = "and a wrapper has no loss to hand it"
    else:
        why = f"and {who} was given gradients, not a scalar loss, so it has none to hand it"
    raise ValueError(
        f"{who}: {name} is {value!r}, which watches a loss it was built without, {why}; build the "
        f"schedule with the loss it should watch (reduce_on_plateau(loss, init_value=...))"
        + ("" if wrapper else f", or give {who} the scalar loss")
    )


@dataclass(frozen=True)
class Rule:
    """The equations of an update rule, independent of how they are applied to parameters.

    Attributes
    ----------
    name : str
        The rule's name, used in state names (``W.adam.m``) and error messages.
    kernel : callable
        ``kernel(h, param, grad, *slots) -> (new_param, *new_slots)``, elementwise, where ``h``
        holds the hyperparameters (and ``per_step`` results) as scalars of the param's dtype.
    slots : tuple of str
        The per-parameter state, each created as zeros like the parameter.
    per_step : callable, optional
        ``per_step(h, t, step) -> dict`` of scalars computed once per step from the step count:
        ``t`` as a scalar of the param's dtype, ``step`` as the exact int64 (both 1 on the first
        step). A rule with ``per_step`` keeps an integer step counter.
    carry : tuple of (str, float)
        Scalars the rule carries from step to step (name and initial value), e.g. a running
        product: ``h.<name>`` holds the current value, and ``per_step`` returns the new one under
        the same name (the kernel then sees the new value). One shared scalar per dtype.
    per_tensor : bool
        The kernel needs whole tensors (norms, trust ratios), not single elements: the rule is
        always applied per parameter, never fused.
    extra : callable, optional
        ``extra(loss_or_grads, params, grads, step) -> list`` of more per-parameter inputs, one
        list per input, given to the kernel after the gradient: ``kernel(h, param, grad, *extra,
        *slots)`` (e.g. ESGD's Hessian-vector products); ``step`` is the int64 step count, 1 on
        the first step (the rule needs ``per_step``). Only with ``per_tensor``.
    ranges : mapping of str to Interval
        The valid concrete values of each hyperparameter, checked when the rule is applied.
    averages : bool or tuple of str
        The slots are running averages of the params (e.g. ASGD's ``ax``): their records say of
        which, so :func:`updates.swap_averages` can evaluate with them. A tuple names the slots
        that are (e.g. Schedule-Free's ``x``, not its ``z``).
    shaped_slots : callable, optional
        ``shaped_slots(shape) -> ((name, shape), ...)`` or None: the slots of a param of
        ``shape``, each with its own shape, in place of ``slots`` (e.g. Adafactor's row and
        column factors of a matrix), or None to keep ``slots`` for that param. Called with the
        param's shape and with its static shape (None where unknown). Only with ``per_tensor``.
    sums : callable, optional
        ``sums(h, param, grad, *slots) -> tuple`` of elementwise terms, each summed over every
        element of every param of the call before the kernel runs (e.g. Prodigy's inner product
        of the gradients with the distance travelled), the gradients with ``clear_nan`` applied.
        With one dtype, one node sums them all (``updates.reductions.FusedSums``, on the
        multi-tensor path); per parameter, or with several dtypes (each param cast to the dtype
        of ``h``), ``Sum`` nodes do.
    reduce : callable, optional
        ``reduce(h, totals) -> dict`` of scalars from ``totals``, the sums of ``sums`` in its
        order (e.g. Prodigy's new estimate of the distance to the solution). It runs after
        ``per_step`` and before the kernel, which sees its results in ``h``; a carried scalar's
        new value may come from it. The state of every param is made before any kernel runs.
    """

    name: str
    kernel: Callable[..., tuple[Variable, ...]]
    slots: tuple[str, ...] = ()
    per_step: Callable[[SimpleNamespace, Variable, Variable], dict[str, Variable]] | None = None
    carry: tuple[tuple[str, float], ...] = ()
    per_tensor: bool = False
    extra: Callable[[Any, list, list, Variable], list[list[Variable]]] | None = None
    ranges: Mapping[str, Interval] = dataclasses.field(default_factory=dict, compare=False)
    averages: bool | tuple[str, ...] = False
    shaped_slots: Callable[[tuple], tuple[tuple[str, tuple], ...] | None] | None = None
    sums: Callable[..., tuple[Variable, ...]] | None = None
    reduce: Callable[[SimpleNamespace, tuple[Variable, ...]], dict[str, Variable]] | None = None


@dataclass(frozen=True)
class Elementwise:
    """One elementwise step, the primitive of rules and elementwise wrappers (hashable, for Ops).

    ``equations(h, param, x, *slots) -> (new_param, *new_slots)``, where ``x`` is a rule's
    gradient or, for a wrapper, the new value the wrapped updates give the param. With
    ``clear_nan``, NaN entries of ``x`` become 0 first; a ``gated`` step returns the param and
    slots as they were where the scalar ``h.gate`` is 0 (see :func:`gated`). The slots of an
    ``averages`` step (or those it names) are running averages of the params, and their records
    say of which; ``shaped_slots`` is the rule's (see :class:`Rule`).
    """

    name: str
    equations: Callable[..., tuple[Variable, ...]]
    slots: tuple[str, ...] = ()
    clear_nan: bool = False
    gated: bool = False
    averages: bool | tuple[str, ...] = False
    shaped_slots: Callable[[tuple], tuple[tuple[str, tuple], ...] | None] | None = None

    def averaged(self, slot: str) -> bool:
        """Whether ``slot`` is a running average of the params."""
        return slot in self.averages if isinstance(self.averages, tuple) else bool(self.averages)

    def __call__(self, h: SimpleNamespace, param: Variable, x: Variable, *rest: Variable):
        outputs = self.equations(h, param, clear_nan(x) if self.clear_nan else x, *rest)
        if not self.gated:
            return outputs
        slots = len(outputs) - 1  # the last inputs (with shaped_slots, their number varies by param)
        return gated_by(h.gate, outputs, (param, *rest[len(rest) - slots :]))


_PER_PARAMETER: ContextVar[bool] = ContextVar("per_parameter", default=False)


_GATE: ContextVar[Variable | None] = ContextVar("gate", default=None)


@contextmanager
def gated(ok: Variable) -> Iterator[None]:
    """Within this block, rules and elementwise wrappers leave params and state unchanged when
    the boolean scalar ``ok`` is false, inside their own node.

    A guard added afterwards, ``switch(ok, new, old)`` on every update, reads the old values
    after the step and so keeps PyTensor from updating in place (a copy of every param and
    state per step); the gate inside the multi-tensor node does not. The values built this way
    are recorded in their updates' ``gated`` (see ``Updates.is_gated``); anything else (step
    counters, other wrappers) still needs the outer switch. ``ok`` must not depend on the new
    values (it is an input of the step).
    """
    token = _GATE.set(ok)
    try:
        yield
    finally:
        _GATE.reset(token)


def building_per_parameter() -> bool:
    """Whether the rules build the per-parameter graph here (inside :func:`per_parameter`)."""
    return _PER_PARAMETER.get()


@checks_keywords
@contextmanager
def per_parameter(enabled: bool = True) -> Iterator[None]:
    """Within this block, rules build the readable per-parameter graph (the reference path).

    By default a rule adds one multi-tensor node per dtype to the graph, whatever the number of
    parameters, with its state in flat buffers (see ``updates.fused``). The per-parameter path
    builds the same equations once per parameter, each state variable a shared variable of the
    parameter's shape (``W.adam.m``). Both give the same trajectories.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> with updates.per_parameter():
    ...     print([v.name for v in updates.adam((w**2).sum(), [w])])
    ['w', 'w.adam.m', 'w.adam.v', 'adam.t']
    """
    token = _PER_PARAMETER.set(enabled)
    try:
        yield
    finally:
        _PER_PARAMETER.reset(token)


def apply_rule(
    rule: Rule,
    loss_or_grads: Any = None,
    params: Any = None,
    clear_nan: bool = False,
    options: Iterable[str] = (),
    **hyper: Any,
) -> Updates | Rule:
    """Build the updates of ``rule`` for ``params``: one multi-tensor node per dtype, or per param.

    A rule's public function hands it its arguments by name:
    ``apply_rule(ADAM, loss_or_grads, params, clear_nan, learning_rate=learning_rate, ...)``. The
    hyperparameters are checked against ``rule.ranges`` first; the arguments named in ``options``
    are the structural choices that selected ``rule`` (e.g. ``centered``), recorded in the config
    but not scalars of the step. Without ``loss_or_grads`` and ``params``, only the checks run
    and ``rule`` is returned: the public function then returns itself awaiting them (see
    ``update_rule``). Given a scalar loss, the rule hands it to the schedules that watch a loss
    they were built without (``reduce_on_plateau(init_value=...)``, see ``give_loss``).
    """
    chosen = {name: hyper.pop(name) for name in options}
    for name, value in hyper.items():
        check_hyperparameter(rule.name, name, value, rule.ranges.get(name))
    if not isinstance(clear_nan, (bool, np.bool_)):
        raise TypeError(f"{rule.name}: clear_nan must be True or False, got {clear_nan!r}")
    if loss_or_grads is None and params is None:
        return rule
    params, grads = prepare_grads(rule.name, loss_or_grads, params)
    loss = loss_of(loss_or_grads)
    hyper = {name: give_loss(rule.name, name, value, loss) for name, value in hyper.items()}
    kinds = dict(averages=rule.averages, shaped_slots=rule.shaped_slots)
    step = Elementwise(rule.name, rule.kernel, rule.slots, bool(clear_nan), **kinds)
    scheduled = any(is_schedule(value) for value in hyper.values())
    counter = step_counter(f"{rule.name}.t") if rule.per_step or scheduled else None
    extra = [()] * len(params)
    if rule.extra is not None:
        extra = list(zip(*rule.extra(loss_or_grads, params, grads, counter + 1)))
    config = {"rule": rule.name, **{name: describe_hyperparameter(v) for name, v in hyper.items()}}
    config.update(chosen)
    schedules = schedule_state(hyper.values())
    hyper = {name: _evaluate(value, counter) for name, value in hyper.items()}
    current = {name: pt.as_tensor_variable(value) for name, value in hyper.items()}
    updates = Updates(params=params, config=[config], hyperparameters=current)
    groups = list(dtype_groups(params, grads, extra))
    if rule.reduce and len(groups) == 1 and not (building_per_parameter() or rule.per_tensor):
        _apply_with_fused_sums(rule, step, hyper, counter, updates, *groups[0])
    else:
        slots = None
        if rule.reduce:  # every param's state first: the sums cover them all
            slots = {i: slots_of(step, i, p) for _, group, _ in groups for i, p, *_ in group}
        for dtype, group, suffix in groups:
            totals = None
            if rule.reduce:
                totals = functools.partial(_summed, rule.sums, _reduced(step, groups, slots, dtype))
            h = _scalars(rule, hyper, dtype, counter, suffix, updates, totals)
            apply_elementwise(step, group, h, updates, suffix, per_tensor=rule.per_tensor, slots=slots)
    updates.update(schedules)
    if counter is not None:
        updates[counter] = counter + 1
    return _in_param_order(updates, params)


def _apply_with_fused_sums(
    rule: Rule, step: Elementwise, hyper: dict, counter, updates: Updates, dtype: str, group, suffix: str
) -> None:
    """A rule with ``sums`` on one dtype's multi-tensor node: its flat state first, then one
    ``updates.reductions.FusedSums`` node over the same layout for ``reduce``, then the step."""
    buffers = flat_buffers(step, group, suffix)
    _, params, grads, _ = zip(*group)
    terms = Terms(rule.name, rule.sums, step.clear_nan)
    totals = functools.partial(fused_sums, terms, dtype, params, grads, buffers)
    h = _scalars(rule, hyper, dtype, counter, suffix, updates, totals)
    apply_elementwise(step, group, h, updates, suffix, buffers=buffers)


def dtype_groups(params: list[Variable], *per_param: list) -> Iterator[tuple[str, list[tuple], str]]:
    """The params by dtype: ``(dtype, [(index, param, *its entries of per_param)], suffix)``.

    ``suffix`` (``[float32]``) tells apart the flat buffers of several dtypes, and is empty when
    all params share one dtype.
    """
    dtypes = list(dict.fromkeys(p.dtype for p in params))
    for dtype in dtypes:
        group = [(i, p, *rest) for i, (p, *rest) in enumerate(zip(params, *per_param)) if p.dtype == dtype]
        yield dtype, group, f"[{dtype}]" if len(dtypes) > 1 else ""


def apply_elementwise(
    step: Elementwise,
    group: list[tuple],
    h: SimpleNamespace,
    updates: Updates,
    suffix: str,
    per_tensor: bool = False,
    slots: dict[int, list[Variable]] | None = None,
    buffers: list[Variable] | None = None,
) -> None:
    """Write into ``updates`` the new params and state ``step`` gives ``group`` (one dtype).

    ``group`` holds ``(index, param, x, extra inputs)``, ``x`` the gradient of a rule or the
    wrapped new value of a wrapper. One multi-tensor node (given ``buffers``, its flat state
    already made), or per parameter under :func:`per_parameter` or for a ``per_tensor`` rule
    (given ``slots``, the state already made for each param by index, per parameter).
    """
    gate = _GATE.get()
    if gate is not None:
        step = dataclasses.replace(step, gated=True)
        h = SimpleNamespace(**vars(h), gate=pt.cast(gate, group[0][1].dtype))
    before = set(updates)
    if slots is not None:
        _apply_per_parameter(step, group, h, updates, suffix, slots)
    elif building_per_parameter() or per_tensor:
        _apply_per_parameter(step, group, h, updates, suffix)
    else:
        _apply_fused(step, group, h, updates, buffers or flat_buffers(step, group, suffix))
    if gate is not None:
        written = [param for _, param, *_ in group] + [key for key in updates if key not in before]
        updates.gated.update((key, updates[key]) for key in written)


def slots_of(step: Elementwise, i: int, param: SharedVariable) -> list[SharedVariable]:
    """The state of ``params[i]`` on the per-parameter path, one shared variable per slot."""
    shaped = step.shaped_slots and step.shaped_slots(param.get_value(borrow=True).shape)
    name = f"{label(param, i)}.{step.name}"
    if shaped:
        static = dict(step.shaped_slots(param.type.shape))
        return [state_of_shape(param, f"{name}.{s}", shape, static[s]) for s, shape in shaped]
    return [state_like(param, f"{name}.{s}", averages=step.averaged(s)) for s in step.slots]


def _summed(sums: Callable, tensors: list[tuple], h: SimpleNamespace) -> tuple[Variable, ...]:
    """The terms of ``sums`` on each of ``tensors`` (:func:`_reduced`), each summed over them all."""
    terms = [sums(h, *tensor) for tensor in tensors]
    return tuple(total(pt.sum(x) for x in column) for column in zip(*terms))


def _reduced(step: Elementwise, groups: list, slots: dict[int, list[Variable]], dtype: str) -> list[tuple]:
    """What a rule's ``sums`` sum over: ``(param, grad, *slots)`` of every param, in ``dtype``."""
    tensors = []
    for _, group, _ in groups:
        for i, param, grad, _ in group:
            grad = clear_nan(grad) if step.clear_nan else grad
            tensors.append(tuple(pt.cast(x, dtype) for x in (param, grad, *slots[i])))
    return tensors


def _apply_per_parameter(
    step: Elementwise, group, h: SimpleNamespace, updates: Updates, suffix: str, made: dict | None = None
) -> None:
    for i, param, x, extra in group:
        slots = made[i] if made is not None else slots_of(step, i, param)
        new_param, *new_slots = step(h, param, x, *extra, *slots)
        updates[param] = new_param
        for slot, new_slot in zip(slots, new_slots):
            updates[slot] = new_slot


def flat_buffers(step: Elementwise, group, suffix: str) -> list[SharedVariable]:
    """The flat state of ``step`` for the params of ``group``, one buffer per slot."""
    indices, params, *_ = zip(*group)
    return [flat_state(params, indices, f"{step.name}.{s}", suffix, step.averaged(s)) for s in step.slots]


def _apply_fused(step: Elementwise, group, h: SimpleNamespace, updates: Updates, buffers: list) -> None:
    _, params, xs, _ = zip(*group)
    names = tuple(vars(h))
    shapes = [p.get_value(borrow=True).shape for p in params]
    op = FusedStep(step, params[0].dtype, shapes, len(buffers), names)
    outputs = op(*params, *xs, *buffers, *(getattr(h, n) for n in names), return_list=True)
    for variable, value in zip((*params, *buffers), outputs):
        updates[variable] = value


def _scalars(
    rule: Rule,
    hyper: dict[str, Any],
    dtype: str,
    counter: Variable | None,
    suffix: str,
    updates: Updates,
    totals: Callable[[SimpleNamespace], tuple[Variable, ...]] | None = None,
) -> SimpleNamespace:
    """The hyperparameters cast to ``dtype``, plus the rule's per-step, reduced and carried scalars.

    Each carried scalar is a new shared variable of ``dtype`` (``nadam.mu_product``), put in
    ``updates`` with its new value. ``totals(h)`` gives the sums the rule's ``reduce`` takes.
    """
    h = SimpleNamespace(**{name: as_dtype(value, dtype) for name, value in hyper.items()})
    carried = {}
    for name, initial in rule.carry:
        carried[name] = new_state(np.asarray(initial, dtype=dtype), f"{rule.name}.{name}{suffix}", initial)
        setattr(h, name, carried[name])
    if rule.per_step is not None:
        step = counter + 1
        h.__dict__.update(rule.per_step(h, pt.cast(step, dtype), step))
    if rule.reduce is not None:
        h.__dict__.update(rule.reduce(h, totals(h)))
    for name, variable in carried.items():
        updates[variable] = getattr(h, name)
    return h


def _in_param_order(updates: Updates, params: list[Variable]) -> Updates:
    """Params first in the order given (dtype groups may interleave them), then the state."""
    ordered = Updates(
        ((p, updates[p]) for p in params), params, updates.config, updates.hyperparameters, updates.gated
    )
    ordered.update((k, v) for k, v in updates.items() if k not in ordered)
    return ordered


def params_to_wrap(who: str, updates: Mapping, params: Any) -> list[SharedVariable]:
    """The params to wrap: given, or the ``.params`` of an Updates, or a plain dict's float keys."""
    if params is None and isinstance(updates, Updates):
        params = list(updates.params)
    elif params is None:
        params = [key for key in updates if key.dtype.startswith("float")]
    params = check_params(who, params)
    for i, param in enumerate(params):
        if param not in updates:
            raise ValueError(f"{who}: {which(param, i)} has no entry in updates")
    return params


def begin_wrapper(who: str, updates: Mapping, params: list, config: dict, hyper: dict[str, Any]) -> Updates:
    """A new Updates with the entries of ``updates``, its params, config, hyperparameters and gated
    values."""
    base = updates if isinstance(updates, Updates) else Updates(params=params)
    described = {name: describe_hyperparameter(v) for name, v in config.items()}
    return Updates(
        updates,
        base.params or params,
        [*base.config, {"wrapper": who, **described}],
        {**base.hyperparameters, **{f"{who}.{k}": pt.as_tensor_variable(v) for k, v in hyper.items()}},
        base.gated,
    )


def wrap_elementwise(
    who: str,
    step: Elementwise,
    updates: Any,
    params: Any,
    hyper: dict[str, Any],
    ranges: Mapping[str, Interval | None],
    scalars: Callable[[str, dict[str, Any], Variable | None], SimpleNamespace],
    *,
    counted: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Updates:
    """Apply an elementwise wrapper to the params of ``updates``: the skeleton of every such wrapper.

    Checks ``updates`` and the hyperparameters, evaluates schedules at a new counter ``<who>.t``
    (kept also without schedules if ``counted``), then applies ``step`` to each dtype's params
    with ``x`` the new value ``updates`` gives them and ``h = scalars(dtype, values, counter)``.
    The result has the entries of ``updates`` (params replaced), the wrapper's state, the
    schedules' state and the counter last. ``options`` are structural choices for the config.
    A schedule watching a loss it was built without is refused: a wrapper has no loss.
    """
    check_mapping(who, updates)
    for name, interval in ranges.items():
        check_hyperparameter(who, name, hyper[name], interval)
    params = params_to_wrap(who, updates, params)
    hyper = {name: give_loss(who, name, value, None, wrapper=True) for name, value in hyper.items()}
    scheduled = any(is_schedule(value) for value in hyper.values())
    counter = step_counter(f"{who}.t") if counted or scheduled else None
    schedules = schedule_state(hyper.values())
    values = {name: _evaluate(value, counter) for name, value in hyper.items()}
    wrapped = begin_wrapper(who, updates, params, hyper, values)
    wrapped.config[-1].update(options or {})
    for dtype, group, suffix in dtype_groups(params, [updates[p] for p in params], [()] * len(params)):
        apply_elementwise(step, group, scalars(dtype, values, counter), wrapped, suffix)
    wrapped.update(schedules)
    if counter is not None:
        wrapped[counter] = counter + 1
    return wrapped
