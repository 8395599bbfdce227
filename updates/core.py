"""The machinery shared by every rule: the updates dictionary, hyperparameter checks, and the one
mechanism that turns a rule's elementwise equations into updates for every parameter.

A rule is declared as a :class:`~updates.core.Rule`: its name, the state slots it keeps per
parameter, an optional function of the step count computed once per step (e.g. Adam's
bias-corrected step size), the valid range of each hyperparameter, and its *kernel*, the
elementwise equations ``(h, param, grad, *slots) -> (new_param, *new_slots)`` with ``h`` the
hyperparameters cast to the parameter's dtype. Its public function (in ``rules.py``,
``modern.py``, ``momentum.py``) hands the rule and its arguments to
:func:`~updates.core.apply_rule`, which checks them, computes the gradients and applies the
kernel as an :class:`~updates.core.Elementwise` step: one multi-tensor node per dtype
(``updates.fused``), or per parameter under :func:`per_parameter`. The elementwise wrappers
(momentum, weight decay, lookahead, averaging) are elementwise steps too, applied by
:func:`~updates.core.wrap_elementwise` to the new values the wrapped updates give the params. So
reading ``adam`` end to end takes ``rules.py`` (its equations and its one-line body) and this
module.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import string
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable

from updates.fused import FusedStep, flat_state
from updates.grads import (
    Piece,
    as_dtype,
    check_params,
    checks_keywords,
    clear_nan,
    describe,
    is_concrete,
    label,
    new_state,
    pieces_of,
    prepare_grads,
    state_like,
    unknown_keyword,
    which,
)
from updates.step import sync_variables

# The package's public API is ``updates.__all__``; these are the pieces the other modules build on
# (rules, wrappers, transforms, schedules, the loop). Everything else here is private.
__all__ = [
    "COUNT",
    "NON_NEGATIVE",
    "POSITIVE",
    "UNIT",
    "Elementwise",
    "Interval",
    "Rule",
    "Updates",
    "apply_rule",
    "awaits_loss_and_params",
    "begin_wrapper",
    "check_hyperparameter",
    "check_mapping",
    "describe_hyperparameter",
    "gated",
    "is_schedule",
    "params_to_wrap",
    "per_parameter",
    "schedule_state",
    "step_counter",
    "update_rule",
    "wrap_elementwise",
]


class Updates(OrderedDict):
    """An ``OrderedDict`` of ``{shared variable: new value}`` that knows which keys are params.

    It is a plain ``OrderedDict`` to ``pytensor.function`` and PyMC. The keys are ordered: the
    parameters in the order given, then the optimizer state, the step counter (if any) last;
    wrappers keep that order and append the state they create. :meth:`named_state` shows the
    state per parameter, by name, whichever path built it.

    Parameters
    ----------
    items : mapping or iterable of pairs, optional
        The initial entries.
    params : iterable of shared variables
        Which keys are parameters; every other key is optimizer state.
    """

    def __init__(
        self,
        items: Mapping | Iterable = (),
        params: Iterable[Variable] = (),
        config: Iterable[dict] = (),
        hyperparameters: Mapping[str, Variable] | None = None,
    ) -> None:
        super().__init__(items)
        self.params: tuple[Variable, ...] = tuple(params)
        #: What built these updates, outermost last: ``[{"rule": "adam", "learning_rate": 0.001,
        #: ...}, {"wrapper": "apply_momentum", "momentum": 0.9}]``.
        self.config: list[dict] = list(config)
        #: The hyperparameters as graph expressions (0-d tensors), by name: what the next call
        #: uses (for a schedule, its value at the current step). Add one to the outputs of the
        #: step to log it; :meth:`hyperparameter_values` gives the current values as numbers.
        self.hyperparameters: dict[str, Variable] = dict(hyperparameters or {})

    @property
    def state(self) -> list[Variable]:
        """The keys that are not parameters: the optimizer state, in order."""
        params = set(self.params)
        return [key for key in self if key not in params]

    def __setitem__(self, key: Variable, value: Any) -> None:
        """Store ``value`` with exactly the type of ``key`` (dtype and static shape)."""
        try:
            value = key.type.filter_variable(value, allow_convert=True)
        except TypeError as err:
            raise TypeError(f"the update of {key} has type {value.type}, expected {key.type}") from err
        super().__setitem__(key, value)

    def hyperparameter_values(self) -> dict[str, float | int | None]:
        """The value each hyperparameter takes at the next call, as a number, now.

        :attr:`hyperparameters` holds graph expressions (a schedule's prints as ``Switch.0``);
        this evaluates them from the current values of the shared variables they read (step
        counters, ``live`` scalars) with PyTensor's Python linker: the training step is not
        compiled. None for an expression that needs an input of the step.

        Examples
        --------
        >>> import numpy as np, pytensor, updates
        >>> w = pytensor.shared(np.zeros(2), name="w")
        >>> warm = updates.sgd((w**2).sum(), [w], learning_rate=updates.linear_warmup(1.0, 4))
        >>> warm.hyperparameters["learning_rate"].owner is not None, warm.hyperparameter_values()
        (True, {'learning_rate': 0.0})
        """
        from updates.state import current_values

        sync_variables(self.state)
        return current_values(self.hyperparameters)

    def named_state(self) -> dict[str, np.ndarray]:
        """The current value of every piece of state, by name, per parameter.

        State kept in a flat buffer shared by many parameters (the multi-tensor path) is shown
        as one view per parameter under its own name (``W.adam.m``), as on the per-parameter
        path; the step counter appears as itself (``adam.t``). The arrays are views: copy them
        to keep a snapshot.
        """
        sync_variables(self.state)
        named = {}
        for variable, piece in self.state_pieces():
            value = variable.get_value(borrow=True).reshape(-1)
            named[piece.name] = value[piece.start : piece.start + math.prod(piece.shape)].reshape(piece.shape)
        return named

    def state_pieces(self) -> list[tuple[Variable, Piece]]:
        """Every named piece of state in order, with the variable holding it.

        A flat buffer holds one piece per param (its ``grads.StateRecord`` says
        where); any other state variable is one piece, whole, under its own name.
        """
        return [(variable, piece) for variable in self.state for piece in pieces_of(variable)]

    def state_layout(self) -> dict[str, tuple[Variable, int, tuple[int, ...]]]:
        """Where each named piece of state lives: ``{name: (shared variable, offset, shape)}``.

        The offset counts elements into the raveled variable; a variable holding one piece of
        state whole has offset 0 and its own shape.
        """
        return {piece.name: (variable, piece.start, piece.shape) for variable, piece in self.state_pieces()}

    def copy(self) -> Updates:
        """A shallow copy that keeps the params, config and hyperparameters."""
        return Updates(self, self.params, self.config, self.hyperparameters)

    def __reduce__(self):
        return (Updates, (list(self.items()), self.params, self.config, self.hyperparameters))


# -- hyperparameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """The valid concrete values of an argument, and the one place that checks them.

    ``[low, high)`` by default; ``integer`` asks for an int (not a bool), ``optional`` lets None
    through. Rules, wrappers, transforms, schedules and the training loop all check their
    numbers with ``Interval.check``, so the messages read alike: ``adam: beta1 must be in [0, 1), got
    1.0``, ``step_decay: step_size must be > 0, got 0``.
    """

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False
    integer: bool = False
    optional: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        """``>= 0``, ``< 1`` or ``in [0, 1)``."""
        low, high = self._format(self.low), self._format(self.high)
        if math.isinf(self.high):
            return f"{'>=' if self.low_closed else '>'} {low}"
        if math.isinf(self.low):
            return f"{'<=' if self.high_closed else '<'} {high}"
        left, right = "[("[not self.low_closed], ")]"[self.high_closed]
        return f"in {left}{low}, {high}{right}"

    def _format(self, bound: float) -> str:
        return str(int(bound)) if self.integer and math.isfinite(bound) else f"{bound:g}"

    def or_none(self) -> Interval:
        """The same interval, None allowed too."""
        return dataclasses.replace(self, optional=True)

    def check(self, who: str, name: str, value: Any) -> Any:
        """``value`` as an int or float if it is in the interval; else a TypeError or ValueError
        that names ``who``, the argument and what was expected."""
        if value is None and self.optional:
            return None
        or_none = " or None" if self.optional else ""
        if self.integer:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
                raise TypeError(f"{who}: {name} must be an integer{or_none}, got {describe(value)}")
            number = int(value)
        else:
            if isinstance(value, (bool, np.bool_)) or not is_concrete(value):
                raise TypeError(f"{who}: {name} must be a real number{or_none}, got {describe(value)}")
            number = float(value)
            if math.isnan(number) or (math.isinf(number) and number not in self):
                raise ValueError(f"{who}: {name} must be finite, got {value!r}")
        if number not in self:
            raise ValueError(f"{who}: {name} must be {self}{or_none}, got {value!r}")
        return number


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_closed=False)
UNIT = Interval(0.0, 1.0)
#: A number of steps, items or calls: an integer > 0.
COUNT = Interval(0, low_closed=False, integer=True)


def is_schedule(value: Any) -> bool:
    """A schedule is any callable (not a variable): step count -> scalar."""
    return callable(value) and not isinstance(value, Variable)


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


def describe_hyperparameter(value: Any) -> Any:
    """A plain-data description of a hyperparameter, for ``Updates.config`` and checkpoints."""
    if is_concrete(value):
        return float(value)
    if is_schedule(value):
        return repr(value)
    if isinstance(value, SharedVariable):
        return f"shared {value.name or ''}".strip()
    return "symbolic"


def check_hyperparameter(who: str, name: str, value: Any, interval: Interval | None) -> None:
    """Reject a hyperparameter that is not a scalar, or a concrete one outside ``interval``.

    Schedules (callables of the step) are accepted as they are: each checks its own arguments.
    """
    if is_schedule(value):
        return
    if isinstance(value, Constant):
        value = value.data
    if is_concrete(value):
        (interval or Interval()).check(who, name, value)
        return
    if not isinstance(value, Variable) or getattr(value.type, "ndim", None) != 0:
        raise TypeError(f"{who}: {name} must be a number or a scalar (0-d) tensor, got {describe(value)}")
    if not (value.dtype.startswith("float") or value.dtype.startswith("int")):
        raise TypeError(f"{who}: {name} must be real, got dtype {value.dtype}")


# -- rules -----------------------------------------------------------------------------------------


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
    """

    name: str
    kernel: Callable[..., tuple[Variable, ...]]
    slots: tuple[str, ...] = ()
    per_step: Callable[[SimpleNamespace, Variable, Variable], dict[str, Variable]] | None = None
    carry: tuple[tuple[str, float], ...] = ()
    per_tensor: bool = False
    extra: Callable[[Any, list, list, Variable], list[list[Variable]]] | None = None
    ranges: Mapping[str, Interval] = dataclasses.field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Elementwise:
    """One elementwise step, the primitive of rules and elementwise wrappers (hashable, for Ops).

    ``equations(h, param, x, *slots) -> (new_param, *new_slots)``, where ``x`` is a rule's
    gradient or, for a wrapper, the new value the wrapped updates give the param. With
    ``clear_nan``, NaN entries of ``x`` become 0 first; a ``gated`` step returns the param and
    slots as they were where the scalar ``h.gate`` is 0 (see :func:`gated`).
    """

    name: str
    equations: Callable[..., tuple[Variable, ...]]
    slots: tuple[str, ...] = ()
    clear_nan: bool = False
    gated: bool = False

    def __call__(self, h: SimpleNamespace, param: Variable, x: Variable, *rest: Variable):
        outputs = self.equations(h, param, clear_nan(x) if self.clear_nan else x, *rest)
        if not self.gated:
            return outputs
        old = (param, *rest[len(rest) - len(self.slots) :])
        return tuple(pt.switch(h.gate > 0, new, before) for new, before in zip(outputs, old))


_PER_PARAMETER: ContextVar[bool] = ContextVar("per_parameter", default=False)
_GATE: ContextVar[Variable | None] = ContextVar("gate", default=None)


@contextmanager
def gated(ok: Variable) -> Iterator[None]:
    """Within this block, rules and elementwise wrappers leave params and state unchanged when
    the boolean scalar ``ok`` is false, inside their own node.

    A guard added afterwards, ``switch(ok, new, old)`` on every update, reads the old values
    after the step and so keeps PyTensor from updating in place (a copy of every param and
    state per step); the gate inside the multi-tensor node does not. The values built this way
    carry ``tag.gated = True``; anything else (step counters, other wrappers) still needs the
    outer switch. ``ok`` must not depend on the new values (it is an input of the step).
    """
    token = _GATE.set(ok)
    try:
        yield
    finally:
        _GATE.reset(token)


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


def step_counter(name: str) -> SharedVariable:
    """A new integer step counter starting at 0 (an int64 counts past float32's 2**24 limit)."""
    return new_state(np.int64(0), name, 0)


def apply_rule(
    rule: Rule,
    loss_or_grads: Any = None,
    params: Any = None,
    clear_nan: bool = False,
    options: Iterable[str] = (),
    **hyper: Any,
) -> Updates | Rule:
    """Build the updates of ``rule`` for ``params``: one multi-tensor node per dtype, or per param.

    A rule's public function hands it its arguments: ``apply_rule(ADAM, **locals())``. The
    hyperparameters are checked against ``rule.ranges`` first; the arguments named in ``options``
    are the structural choices that selected ``rule`` (e.g. ``centered``), recorded in the config
    but not scalars of the step. Without ``loss_or_grads`` and ``params``, only the checks run
    and ``rule`` is returned: the public function then returns itself awaiting them (see
    :func:`update_rule`).
    """
    chosen = {name: hyper.pop(name) for name in options}
    for name, value in hyper.items():
        check_hyperparameter(rule.name, name, value, rule.ranges.get(name))
    if not isinstance(clear_nan, (bool, np.bool_)):
        raise TypeError(f"{rule.name}: clear_nan must be True or False, got {clear_nan!r}")
    if loss_or_grads is None and params is None:
        return rule
    params, grads = prepare_grads(rule.name, loss_or_grads, params)
    step = Elementwise(rule.name, rule.kernel, rule.slots, bool(clear_nan))
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
    for dtype, group, suffix in _dtype_groups(params, grads, extra):
        h = _scalars(rule, hyper, dtype, counter, suffix, updates)
        _apply_elementwise(step, group, h, updates, suffix, per_tensor=rule.per_tensor)
    updates.update(schedules)
    if counter is not None:
        updates[counter] = counter + 1
    return _in_param_order(updates, params)


def _dtype_groups(params: list[Variable], *per_param: list) -> Iterator[tuple[str, list[tuple], str]]:
    """The params by dtype: ``(dtype, [(index, param, *its entries of per_param)], suffix)``.

    ``suffix`` (``[float32]``) tells apart the flat buffers of several dtypes, and is empty when
    all params share one dtype.
    """
    dtypes = list(dict.fromkeys(p.dtype for p in params))
    for dtype in dtypes:
        group = [(i, p, *rest) for i, (p, *rest) in enumerate(zip(params, *per_param)) if p.dtype == dtype]
        yield dtype, group, f"[{dtype}]" if len(dtypes) > 1 else ""


def _apply_elementwise(
    step: Elementwise,
    group: list[tuple],
    h: SimpleNamespace,
    updates: Updates,
    suffix: str,
    per_tensor: bool = False,
) -> None:
    """Write into ``updates`` the new params and state ``step`` gives ``group`` (one dtype).

    ``group`` holds ``(index, param, x, extra inputs)``, ``x`` the gradient of a rule or the
    wrapped new value of a wrapper. One multi-tensor node, or per parameter under
    :func:`per_parameter` or for a ``per_tensor`` rule.
    """
    gate = _GATE.get()
    if gate is not None:
        step = dataclasses.replace(step, gated=True)
        h = SimpleNamespace(**vars(h), gate=pt.cast(gate, group[0][1].dtype))
    before = set(updates)
    per_param = _PER_PARAMETER.get() or per_tensor
    (_apply_per_parameter if per_param else _apply_fused)(step, group, h, updates, suffix)
    if gate is not None:
        written = [param for _, param, *_ in group] + [key for key in updates if key not in before]
        for key in written:
            updates[key].tag.gated = True


def _apply_per_parameter(step: Elementwise, group, h: SimpleNamespace, updates: Updates, suffix: str) -> None:
    for i, param, x, extra in group:
        slots = [state_like(param, f"{label(param, i)}.{step.name}.{s}") for s in step.slots]
        new_param, *new_slots = step(h, param, x, *extra, *slots)
        updates[param] = new_param
        for slot, new_slot in zip(slots, new_slots):
            updates[slot] = new_slot


def _apply_fused(step: Elementwise, group, h: SimpleNamespace, updates: Updates, suffix: str) -> None:
    indices, params, xs, _ = zip(*group)
    buffers = [flat_state(params, indices, f"{step.name}.{slot}", suffix) for slot in step.slots]
    names = tuple(vars(h))
    shapes = [p.get_value(borrow=True).shape for p in params]
    op = FusedStep(step, params[0].dtype, shapes, len(buffers), names)
    outputs = op(*params, *xs, *buffers, *(getattr(h, n) for n in names), return_list=True)
    for variable, value in zip((*params, *buffers), outputs):
        updates[variable] = value


def _scalars(
    rule: Rule, hyper: dict[str, Any], dtype: str, counter: Variable | None, suffix: str, updates: Updates
) -> SimpleNamespace:
    """The hyperparameters cast to ``dtype``, plus the rule's per-step and carried scalars.

    Each carried scalar is a new shared variable of ``dtype`` (``nadam.mu_product``), put in
    ``updates`` with its new value.
    """
    h = SimpleNamespace(**{name: as_dtype(value, dtype) for name, value in hyper.items()})
    carried = {}
    for name, initial in rule.carry:
        carried[name] = new_state(np.asarray(initial, dtype=dtype), f"{rule.name}.{name}{suffix}", initial)
        setattr(h, name, carried[name])
    if rule.per_step is not None:
        step = counter + 1
        h.__dict__.update(rule.per_step(h, pt.cast(step, dtype), step))
    for name, variable in carried.items():
        updates[variable] = getattr(h, name)
    return h


def _in_param_order(updates: Updates, params: list[Variable]) -> Updates:
    """Params first in the order given (dtype groups may interleave them), then the state."""
    ordered = Updates(((p, updates[p]) for p in params), params, updates.config, updates.hyperparameters)
    ordered.update((k, v) for k, v in updates.items() if k not in ordered)
    return ordered


# -- shared by the update wrappers ------------------------------------------------------------------


def check_mapping(who: str, updates: Any) -> None:
    """Refuse anything but a dictionary of updates."""
    if not isinstance(updates, Mapping):
        raise TypeError(f"{who}: updates must be a dictionary of updates, got {describe(updates)}")


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
    """A new Updates with the entries of ``updates``, its params, config and hyperparameters."""
    base = updates if isinstance(updates, Updates) else Updates(params=params)
    described = {name: describe_hyperparameter(v) for name, v in config.items()}
    return Updates(
        updates,
        base.params or params,
        [*base.config, {"wrapper": who, **described}],
        {**base.hyperparameters, **{f"{who}.{k}": pt.as_tensor_variable(v) for k, v in hyper.items()}},
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
    on_state: Callable[[list[Variable], list[Variable]], None] | None = None,
) -> Updates:
    """Apply an elementwise wrapper to the params of ``updates``: the skeleton of every such wrapper.

    Checks ``updates`` and the hyperparameters, evaluates schedules at a new counter ``<who>.t``
    (kept also without schedules if ``counted``), then applies ``step`` to each dtype's params
    with ``x`` the new value ``updates`` gives them and ``h = scalars(dtype, values, counter)``.
    The result has the entries of ``updates`` (params replaced), the wrapper's state, the
    schedules' state and the counter last. ``options`` are structural choices for the config;
    ``on_state(params, new_state)`` sees each dtype's params and the state created for them.
    """
    check_mapping(who, updates)
    for name, interval in ranges.items():
        check_hyperparameter(who, name, hyper[name], interval)
    params = params_to_wrap(who, updates, params)
    scheduled = any(is_schedule(value) for value in hyper.values())
    counter = step_counter(f"{who}.t") if counted or scheduled else None
    schedules = schedule_state(hyper.values())
    values = {name: _evaluate(value, counter) for name, value in hyper.items()}
    wrapped = begin_wrapper(who, updates, params, hyper, values)
    wrapped.config[-1].update(options or {})
    for dtype, group, suffix in _dtype_groups(params, [updates[p] for p in params], [()] * len(params)):
        before = set(wrapped)
        _apply_elementwise(step, group, scalars(dtype, values, counter), wrapped, suffix)
        if on_state is not None:
            on_state([param for _, param, *_ in group], [key for key in wrapped if key not in before])
    wrapped.update(schedules)
    if counter is not None:
        wrapped[counter] = counter + 1
    return wrapped


# -- the public face of a rule ---------------------------------------------------------------------

_COMMON_PARAMETERS = """\
loss_or_grads : scalar TensorVariable or list of TensorVariable
        A scalar loss (differentiated once for all ``params``) or one gradient per parameter.
        Leave out both ``loss_or_grads`` and ``params`` to get the rule back as a callable
        awaiting them, with the hyperparameters bound (what ``pm.fit(obj_optimizer=...)`` wants).
    params : list of shared variables
        The floating-point parameters to update, each given once.\
"""
_CLEAR_NAN = """\
clear_nan : bool
        If true, NaN entries of the gradients are replaced by 0 before the rule sees them, so a
        NaN element acts exactly as a zero gradient (the parameter keeps its value there, moments
        decay). Infinities are left alone. Default False.\
"""
_BETAS = """\
beta1, beta2 : float or scalar tensor
        The decays of the moving averages of the gradient and of its square (or of its
        deviation, for AdaBelief), in [0, 1), defaults 0.9 and 0.999.\
"""
_RETURNS = """\
Updates
        An ``OrderedDict`` mapping the parameters, then the optimizer state, then the step
        counter (if the rule has one) to their new values; ``.params`` and ``.state`` tell them
        apart and ``.named_state()`` gives the state per parameter (``W.adam.m``).\
"""


def awaits_loss_and_params(function: Callable) -> Callable:
    """Give an optimizer's public function partial application and the docstring text rules share.

    Called without ``loss_or_grads`` and ``params``, the decorated function runs its body (which
    then only checks the hyperparameters) and returns itself with them bound, as a
    ``functools.partial`` awaiting ``(loss_or_grads, params)``; a misspelt keyword names the
    closest valid one. In the docstring, ``$parameters``, ``$clear_nan``, ``$returns`` and
    ``$betas`` become the text the rules share.
    """
    signature = inspect.signature(function)
    name = function.__name__

    @functools.wraps(function)
    def public(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise unknown_keyword(name, signature, kwargs) or TypeError(f"{name}: {err}") from None
        result = function(*args, **kwargs)
        bound.apply_defaults()
        hyper = {k: v for k, v in bound.arguments.items() if k not in ("loss_or_grads", "params")}
        if bound.arguments["loss_or_grads"] is None and bound.arguments["params"] is None:
            return functools.partial(public, **hyper)
        return result

    return shared_docstring(public)


def update_rule(function: Callable) -> Callable:
    """:func:`~updates.core.awaits_loss_and_params` for a rule whose body hands its
    :class:`~updates.core.Rule` and hyperparameters to :func:`~updates.core.apply_rule`;
    ``rule_for(**arguments)`` returns the ``Rule`` those arguments select."""
    public = awaits_loss_and_params(function)
    public.rule_for = lambda **arguments: function(**arguments)
    return public


def shared_docstring(function: Callable) -> Callable:
    """Put the text the rules share in ``function``'s docstring: ``$parameters``, ``$clear_nan``,
    ``$returns`` and ``$betas``."""
    function.__doc__ = string.Template(function.__doc__ or "").safe_substitute(
        parameters=_COMMON_PARAMETERS, clear_nan=_CLEAR_NAN, returns=_RETURNS, betas=_BETAS
    )
    return function
