"""The machinery shared by every rule: the updates dictionary, hyperparameter checks, and the one
mechanism that turns a rule's elementwise equations into updates for every parameter.

A rule is declared as a ``Rule``: its name, the state slots it keeps per parameter, an
optional function of the step count computed once per step (e.g. Adam's bias-corrected step size),
and its *kernel*, the elementwise equations ``(h, param, grad, *slots) -> (new_param, *new_slots)``
with ``h`` the hyperparameters cast to the parameter's dtype. Because the kernel is elementwise, the
same code serves one parameter at a time (here) or all parameters at once (a multi-tensor path).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import string
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable

from updates import numba_step  # noqa: F401  (registers the Numba form of the step)
from updates.fused import FusedStep, flat_state
from updates.grads import (
    as_dtype,
    check_params,
    clear_nan,
    describe,
    is_concrete,
    label,
    prepare_grads,
    state_like,
    which,
)

__all__ = ["Updates", "per_parameter"]


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
        #: The hyperparameters as symbolic scalars, by name: the value the next call will use
        #: (for a schedule, its value at the current step), e.g. for logging.
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

    def named_state(self) -> dict[str, np.ndarray]:
        """The current value of every piece of state, by name, per parameter.

        State kept in a flat buffer shared by many parameters (the multi-tensor path) is shown
        as one view per parameter under its own name (``W.adam.m``), as on the per-parameter
        path; the step counter appears as itself (``adam.t``). The arrays are views: copy them
        to keep a snapshot.
        """
        named = {}
        for name, (variable, start, shape) in self.state_layout().items():
            value = variable.get_value(borrow=True).reshape(-1)
            named[name] = value[start : start + math.prod(shape)].reshape(shape)
        return named

    def state_layout(self) -> dict[str, tuple[Variable, int, tuple[int, ...]]]:
        """Where each named piece of state lives: ``{name: (shared variable, offset, shape)}``.

        The offset counts elements into the raveled variable; a variable holding one piece of
        state whole has offset 0 and its own shape.
        """
        layout = {}
        for variable in self.state:
            shape = variable.get_value(borrow=True).shape
            for name, start, part in getattr(variable.tag, "slices", [(variable.name, 0, shape)]):
                layout[name] = (variable, start, part)
        return layout

    def copy(self) -> Updates:
        """A shallow copy that keeps the params, config and hyperparameters."""
        return Updates(self, self.params, self.config, self.hyperparameters)

    def __reduce__(self):
        return (Updates, (list(self.items()), self.params, self.config, self.hyperparameters))


# -- hyperparameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """The range of valid concrete values of a hyperparameter: ``[low, high)`` by default."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        left, right = "[("[not self.low_closed], ")]"[self.high_closed]
        return f"{left}{self.low:g}, {self.high:g}{right}"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_closed=False)
UNIT = Interval(0.0, 1.0)


def is_schedule(value: Any) -> bool:
    """A schedule is any callable (not a variable): step count -> scalar."""
    return callable(value) and not isinstance(value, Variable)


def evaluate(value: Any, counter: Variable | None) -> Any:
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


def check_hyperparameter(who: str, name: str, value: Any, interval: Interval) -> None:
    """Reject a hyperparameter that is not a scalar, or a concrete one outside ``interval``.

    Schedules (callables of the step) are accepted as they are: each checks its own arguments.
    """
    if is_schedule(value):
        return
    if isinstance(value, Constant):
        value = value.data
    if is_concrete(value):
        if float(value) not in interval:
            raise ValueError(f"{who}: {name} must be in {interval}, got {value!r}")
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
    """

    name: str
    kernel: Callable[..., tuple[Variable, ...]]
    slots: tuple[str, ...] = ()
    per_step: Callable[[SimpleNamespace, Variable, Variable], dict[str, Variable]] | None = None
    carry: tuple[tuple[str, float], ...] = ()
    per_tensor: bool = False
    extra: Callable[[Any, list, list, Variable], list[list[Variable]]] | None = None


@dataclass(frozen=True)
class Kernel:
    """A rule's kernel, optionally clearing NaN from the gradient first (hashable, for Ops).

    A gated kernel returns the param and slots as they were where the scalar ``h.gate`` is 0
    (see :func:`gated`).
    """

    rule: Rule
    clear_nan: bool = False
    gated: bool = False

    @property
    def name(self) -> str:
        return self.rule.name

    def __call__(self, h: SimpleNamespace, param: Variable, grad: Variable, *rest: Variable):
        outputs = self.rule.kernel(h, param, clear_nan(grad) if self.clear_nan else grad, *rest)
        if not self.gated:
            return outputs
        old = (param, *rest[len(rest) - len(self.rule.slots) :])
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
    counter = pytensor.shared(np.int64(0), name=name)
    counter.tag.initial = 0
    return counter


def apply_rule(
    rule: Rule,
    loss_or_grads: Any,
    params: Any,
    hyper: dict[str, Any],
    clear_nan: bool,
    options: Mapping[str, Any] | None = None,
) -> Updates:
    """Build the updates of ``rule`` for ``params``: per parameter, or one node per dtype.

    ``options`` (the structural choices that selected ``rule``) are recorded in the config.
    """
    params, grads = prepare_grads(rule.name, loss_or_grads, params)
    kernel = Kernel(rule, clear_nan)
    scheduled = any(is_schedule(value) for value in hyper.values())
    counter = step_counter(f"{rule.name}.t") if rule.per_step or scheduled else None
    extra = [()] * len(params)
    if rule.extra is not None:
        extra = list(zip(*rule.extra(loss_or_grads, params, grads, counter + 1)))
    config = {"rule": rule.name, **{name: describe_hyperparameter(v) for name, v in hyper.items()}}
    config.update(options or {})
    schedules = schedule_state(hyper.values())
    hyper = {name: evaluate(value, counter) for name, value in hyper.items()}
    current = {name: pt.as_tensor_variable(value) for name, value in hyper.items()}
    updates = Updates(params=params, config=[config], hyperparameters=current)
    for dtype, group, suffix in dtype_groups(params, grads, extra):
        h = _scalars(rule, hyper, dtype, counter, suffix, updates)
        apply_kernel(kernel, group, h, updates, suffix)
    updates.update(schedules)
    if counter is not None:
        updates[counter] = counter + 1
    return _in_param_order(updates, params)


def dtype_groups(params: list[Variable], *per_param: list) -> Iterator[tuple[str, list[tuple], str]]:
    """The params by dtype: ``(dtype, [(index, param, *its entries of per_param)], suffix)``.

    ``suffix`` (``[float32]``) tells apart the flat buffers of several dtypes, and is empty when
    all params share one dtype.
    """
    dtypes = list(dict.fromkeys(p.dtype for p in params))
    for dtype in dtypes:
        group = [(i, p, *rest) for i, (p, *rest) in enumerate(zip(params, *per_param)) if p.dtype == dtype]
        yield dtype, group, f"[{dtype}]" if len(dtypes) > 1 else ""


def apply_kernel(
    kernel: Kernel, group: list[tuple], h: SimpleNamespace, updates: Updates, suffix: str
) -> None:
    """Write into ``updates`` the kernel's new params and state for ``group`` (one dtype).

    ``group`` holds ``(index, param, grad, extra inputs)``; the "gradient" is whatever the
    kernel's second input means (a momentum wrapper passes the wrapped new value). One
    multi-tensor node, or per parameter under :func:`per_parameter` or for a per-tensor rule.
    """
    gate = _GATE.get()
    if gate is not None:
        kernel = dataclasses.replace(kernel, gated=True)
        h = SimpleNamespace(**vars(h), gate=pt.cast(gate, group[0][1].dtype))
    before = set(updates)
    per_param = _PER_PARAMETER.get() or kernel.rule.per_tensor
    (_apply_per_parameter if per_param else _apply_fused)(kernel, group, h, updates, suffix)
    if gate is not None:
        written = [param for _, param, *_ in group] + [key for key in updates if key not in before]
        for key in written:
            updates[key].tag.gated = True


def _apply_per_parameter(kernel: Kernel, group, h: SimpleNamespace, updates: Updates, suffix: str) -> None:
    for i, param, grad, extra in group:
        slots = [state_like(param, f"{label(param, i)}.{kernel.name}.{s}") for s in kernel.rule.slots]
        new_param, *new_slots = kernel(h, param, grad, *extra, *slots)
        updates[param] = new_param
        for slot, new_slot in zip(slots, new_slots):
            updates[slot] = new_slot


def _apply_fused(kernel: Kernel, group, h: SimpleNamespace, updates: Updates, suffix: str) -> None:
    indices, params, grads, _ = zip(*group)
    buffers = [flat_state(params, indices, f"{kernel.name}.{slot}", suffix) for slot in kernel.rule.slots]
    names = tuple(vars(h))
    shapes = [p.get_value(borrow=True).shape for p in params]
    op = FusedStep(kernel, params[0].dtype, shapes, len(buffers), names)
    outputs = op(*params, *grads, *buffers, *(getattr(h, n) for n in names), return_list=True)
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
        carried[name] = pytensor.shared(np.asarray(initial, dtype=dtype), name=f"{rule.name}.{name}{suffix}")
        carried[name].tag.initial = initial
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


def wrapper_hyperparameters(
    who: str, values: dict[str, Any], ranges: dict[str, Interval]
) -> tuple[dict[str, Any], Variable | None, dict]:
    """Check the hyperparameters; evaluate schedules at a new counter ``<who>.t`` if there are any.

    Returns the values for the next call, the counter (None without schedules) and the updates
    of the schedules' own state.
    """
    for name, interval in ranges.items():
        check_hyperparameter(who, name, values[name], interval)
    scheduled = any(is_schedule(v) for v in values.values())
    counter = step_counter(f"{who}.t") if scheduled else None
    state = schedule_state(values.values())
    return {name: evaluate(v, counter) for name, v in values.items()}, counter, state


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


def finish_wrapper(wrapped: Updates, schedules: dict, counter: Variable | None) -> Updates:
    """Append the schedules' state, then the wrapper's step counter (if any), last."""
    wrapped.update(schedules)
    if counter is not None:
        wrapped[counter] = counter + 1
    return wrapped


# -- the public face of a rule ---------------------------------------------------------------------

COMMON_PARAMETERS = """\
loss_or_grads : scalar TensorVariable or list of TensorVariable
        A scalar loss (differentiated once for all ``params``) or one gradient per parameter.
        Leave out both ``loss_or_grads`` and ``params`` to get the rule back as a callable
        awaiting them, with the hyperparameters bound (what ``pm.fit(obj_optimizer=...)`` wants).
    params : list of shared variables
        The floating-point parameters to update, each given once.\
"""
CLEAR_NAN = """\
clear_nan : bool
        If true, NaN entries of the gradients are replaced by 0 before the rule sees them, so a
        NaN element acts exactly as a zero gradient (the parameter keeps its value there, moments
        decay). Infinities are left alone. Default False.\
"""
BETAS = """\
beta1, beta2 : float or scalar tensor
        The decays of the moving averages of the gradient and of its square (or of its
        deviation, for AdaBelief), in [0, 1), defaults 0.9 and 0.999.\
"""
RETURNS = """\
Updates
        An ``OrderedDict`` mapping the parameters, then the optimizer state, then the step
        counter (if the rule has one) to their new values; ``.params`` and ``.state`` tell them
        apart and ``.named_state()`` gives the state per parameter (``W.adam.m``).\
"""


def update_rule(
    rule: Rule | Callable[..., Rule], options: tuple[str, ...] = (), **ranges: Interval
) -> Callable[[Callable], Callable]:
    """Make a rule's public function from its signature and docstring.

    The decorated function's body is not run: its signature gives the hyperparameters and their
    defaults, its docstring the documentation (``$parameters``, ``$clear_nan``, ``$returns`` and
    ``$betas`` are replaced by the text the rules share). Called, it checks each hyperparameter
    (concrete values against its interval in ``ranges``, symbolic ones for being scalars) and
    applies ``rule``; called without ``loss_or_grads`` and ``params``, it returns itself with the
    hyperparameters bound, as a ``functools.partial`` awaiting ``(loss_or_grads, params)``.

    A rule whose equations depend on structural choices (``rmsprop(centered=True)``) gives a
    factory ``rule(hyper, **options) -> Rule`` instead of a :class:`Rule`, and names the
    arguments in ``options``: they select the equations and are not scalars of the step. The
    function's ``rule_for(**arguments)`` returns the :class:`Rule` those arguments select.
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        name = rule.name if isinstance(rule, Rule) else function.__name__

        def resolve(args: tuple, kwargs: dict) -> tuple[Rule, dict, dict, bool, Any, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:
                raise TypeError(f"{name}: {err}") from None
            bound.apply_defaults()
            hyper = dict(bound.arguments)
            loss_or_grads, params = hyper.pop("loss_or_grads"), hyper.pop("params")
            clear_nan = hyper.pop("clear_nan")
            chosen = {option: hyper.pop(option) for option in options}
            for hyper_name, interval in ranges.items():
                check_hyperparameter(name, hyper_name, hyper[hyper_name], interval)
            if not isinstance(clear_nan, (bool, np.bool_)):
                raise TypeError(f"{name}: clear_nan must be True or False, got {clear_nan!r}")
            selected = rule if isinstance(rule, Rule) else rule(hyper, **chosen)
            return selected, hyper, chosen, clear_nan, loss_or_grads, params

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            selected, hyper, chosen, clear_nan, loss_or_grads, params = resolve(args, kwargs)
            if loss_or_grads is None and params is None:
                return functools.partial(wrapper, **hyper, **chosen, clear_nan=clear_nan)
            if loss_or_grads is None or params is None:
                missing = "loss_or_grads" if loss_or_grads is None else "params"
                raise TypeError(
                    f"{name}: {missing} is missing; give both loss_or_grads and params, or "
                    "neither to get the rule back awaiting them"
                )
            return apply_rule(selected, loss_or_grads, params, hyper, clear_nan, chosen)

        wrapper.rule_for = lambda **arguments: resolve((), arguments)[0]
        wrapper.__doc__ = string.Template(function.__doc__ or "").safe_substitute(
            parameters=COMMON_PARAMETERS, clear_nan=CLEAR_NAN, returns=RETURNS, betas=BETAS
        )
        return wrapper

    return decorate
