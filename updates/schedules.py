r"""Schedules: hyperparameters that change with the step count, inside the one compiled step.

A *schedule* is any callable (not a PyTensor variable) ``schedule(step) -> scalar tensor``. Give one
as a hyperparameter of a rule or of :func:`apply_momentum` and the rule keeps an int64 step counter
(``<rule>.t``, in the returned state) and evaluates ``schedule(counter)`` in the graph, where
``counter`` is the number of steps already taken: 0 on the first call, one more after each call.
The value is cast to each parameter's dtype. ``Updates.hyperparameters[name]`` is the symbolic value
the next call uses; add it to the outputs of the compiled function to log it.

Every schedule here is a small frozen object: its arguments are checked when it is built, its
``repr`` is readable and deterministic (it is what ``Updates.config`` records), and calling it
on an integer scalar ``step`` (a Python int or an integer tensor) returns a float64 0-d expression
built with ``pytensor.tensor`` ops, so that it runs under every linker. Their notation: :math:`t`
the step (0 on the first call), :math:`\eta_0` the initial value.

A schedule that keeps state of its own (:class:`reduce_on_plateau`) defines ``state_updates() ->
{shared variable: new value}``; the rule adds those to its updates as optimizer state. A schedule
that watches a loss it may be built without says so with ``needs_loss`` (true while it has none)
and defines ``with_loss(loss)``, the schedule watching ``loss`` (sharing its state): a rule called
with a scalar loss hands it its own (see ``updates.engine.apply_rule``).

Building a schedule checks its arguments as a public function does: a misspelt keyword names the
closest valid ones, a missing one is named after the schedule, and ``inspect.signature`` of a
schedule class shows its arguments.

For a hyperparameter changed by hand between calls, without recompiling, see :func:`live`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from updates.checks import COUNT, NON_NEGATIVE, POSITIVE, Interval, describe, is_concrete, is_schedule
from updates.engine import schedule_state
from updates.layout import new_state
from updates.public import checks_keywords, unknown_keyword

__all__ = [
    "constant",
    "piecewise_constant",
    "exponential_decay",
    "inverse_time_decay",
    "polynomial_decay",
    "linear_decay",
    "step_decay",
    "cosine_decay",
    "linear_warmup",
    "warmup_cosine",
    "one_cycle",
    "sgdr",
    "noam",
    "momentum_ramp",
    "join_schedules",
    "scale",
    "reduce_on_plateau",
    "live",
]

_PI = np.float64(np.pi)


# -- checking arguments ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return is_concrete(value) and not isinstance(value, (bool, np.bool_))


def _boundaries(who: str, boundaries: Any) -> tuple[int, ...]:
    """Step boundaries: a sequence of integers >= 0, strictly increasing."""
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        raise TypeError(f"{who}: boundaries must be a sequence of integers, got {describe(boundaries)}")
    result = tuple(
        Interval(0, integer=True).check(who, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)
    )
    for i in range(1, len(result)):
        if result[i] <= result[i - 1]:
            raise ValueError(
                f"{who}: boundaries must be strictly increasing, got boundaries[{i - 1}] = "
                f"{result[i - 1]} and boundaries[{i}] = {result[i]}"
            )
    return result


def _as_schedule(who: str, name: str, value: Any) -> Callable:
    """A schedule argument: a callable of the step, or a number (made a :class:`constant`)."""
    if _is_number(value):
        return constant(value)
    if not is_schedule(value):
        raise TypeError(
            f"{who}: {name} must be a schedule (a callable of the step) or a number, got {describe(value)}"
        )
    return value


def _as_step(who: str, step: Any) -> Variable:
    """The step as an int64 scalar tensor."""
    if isinstance(step, (numbers.Integral, np.integer)) and not isinstance(step, (bool, np.bool_)):
        return pt.constant(np.int64(step))
    if (
        isinstance(step, Variable)
        and getattr(step.type, "ndim", None) == 0
        and step.dtype.startswith(("int", "uint"))
    ):
        return pt.cast(step, "int64")
    raise TypeError(f"{who}: the step must be an integer or an integer scalar tensor, got {describe(step)}")


def _scalar(who: str, value: Any) -> Variable:
    """A schedule's value as a float64 0-d tensor."""
    value = pt.as_tensor_variable(value)
    if value.ndim != 0:
        raise ValueError(
            f"{who}: a schedule must return a scalar, got a {value.ndim}-d tensor ({value.type})"
        )
    return pt.cast(value, "float64")


def _f(step: Variable) -> Variable:
    return pt.cast(step, "float64")


def _cosine(fraction: Variable) -> Variable:
    """Half a cosine from 1 (fraction 0) down to 0 (fraction 1)."""
    return np.float64(0.5) * (np.float64(1.0) + pt.cos(_PI * fraction))


def _word_match(name: str, keywords: list[str]) -> str:
    """``"; did you mean 'peak_value'?"`` when ``name`` begins, or is one word of, valid keywords."""
    if len(name) < 3:
        return ""
    close = [k for k in keywords if k.startswith(name) or name in k.split("_")]
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _keyword_error(who: str, signature: inspect.Signature, kwargs: dict) -> TypeError | None:
    """The error for a keyword ``signature`` does not take, naming the closest valid ones."""
    error = unknown_keyword(who, signature, kwargs)
    if error is None or "did you mean" in str(error):
        return error
    name = next(k for k in kwargs if k not in signature.parameters)
    return TypeError(f"{error}{_word_match(name, list(signature.parameters))}")


@functools.cache
def _signature(cls: type) -> inspect.Signature:
    """A schedule class's signature as a function's: its ``__init__``'s, without ``self`` and
    without the ``-> None`` (calling the class returns the schedule)."""
    signature = inspect.signature(cls.__init__)
    return signature.replace(
        parameters=list(signature.parameters.values())[1:], return_annotation=inspect.Signature.empty
    )


class _ScheduleType(type):
    """The type of the schedule classes: building one checks its arguments as a public function
    does, and ``inspect.signature`` shows the arguments it takes.

    A misspelt keyword names the closest valid ones (``warmup_cosine: got an unexpected keyword
    argument 'peak'; did you mean 'peak_value'?``); a missing or extra argument is named after
    the schedule (``warmup_cosine: missing a required argument: 'decay_steps'``), not after its
    ``__init__``. Only calls of the class are checked: ``copy`` and ``pickle``, which create the
    object without arguments, are not.
    """

    @property
    def __signature__(cls) -> inspect.Signature:
        return _signature(cls)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        who, signature = cls.__name__, _signature(cls)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            raise _keyword_error(who, signature, kwargs) or TypeError(f"{who}: {err}") from None
        return super().__call__(*args, **kwargs)


class Schedule(metaclass=_ScheduleType):
    """The base of the schedules in this module: ``schedule(step)`` checks the step (an integer
    scalar) and returns :meth:`at` of it as a float64 0-d tensor.

    Subclasses are frozen dataclasses whose ``__post_init__`` checks and normalises the
    arguments, and whose ``at(step)`` builds the value from the int64 scalar ``step``.
    """

    def __call__(self, step: Any) -> Variable:
        who = type(self).__name__
        return _scalar(who, self.at(_as_step(who, step)))

    def at(self, step: Variable) -> Variable:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def state_updates(self) -> dict[Variable, Variable]:
        """The updates of the shared state this schedule keeps: none."""
        return {}

    @property
    def needs_loss(self) -> bool:
        """Whether this schedule watches a loss it was built without: then a rule given a scalar
        loss hands it over through :meth:`with_loss`. False here."""
        return False

    def with_loss(self, loss: Variable) -> Schedule:
        """This schedule watching ``loss`` where it was built without one; itself here."""
        return self

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


def _with_loss(schedule: Callable, loss: Variable) -> Callable:
    """``schedule`` given ``loss`` if it needs one (the part of a combinator)."""
    return schedule.with_loss(loss) if getattr(schedule, "needs_loss", False) else schedule


# -- schedules of the step -------------------------------------------------------------------------


@dataclass(frozen=True)
class constant(Schedule):
    r"""The same value at every step.

    .. math:: \eta_t = \eta_0

    Parameters
    ----------
    value : float
        :math:`\eta_0`, >= 0.

    Examples
    --------
    >>> from updates import constant
    >>> float(constant(0.1)(7).eval())
    0.1
    """

    value: float

    def __post_init__(self) -> None:
        self._set(value=NON_NEGATIVE.check("constant", "value", self.value))

    def at(self, step: Variable) -> Variable:
        return pt.constant(np.float64(self.value))


@dataclass(frozen=True)
class piecewise_constant(Schedule):
    r"""Eras: a constant value between consecutive step boundaries.

    .. math:: \eta_t = v_i \quad\text{for}\quad b_{i-1} \le t < b_i

    with :math:`b_{-1} = 0` and :math:`b_n = \infty`: ``values[0]`` before ``boundaries[0]``,
    ``values[i]`` from ``boundaries[i - 1]`` (included) on.

    Parameters
    ----------
    boundaries : sequence of int
        The steps where a new era starts, >= 0 and strictly increasing.
    values : sequence of float
        One value (>= 0) per era: one more than ``boundaries``.

    Notes
    -----
    yann's ``learning_rates`` and ``epochs`` describe eras by their lengths: its era lengths
    :math:`(n_1, n_2, \dots)` are the boundaries :math:`(n_1, n_1 + n_2, \dots)` here.

    Examples
    --------
    >>> from updates import piecewise_constant
    >>> eras = piecewise_constant(boundaries=[100, 150], values=[0.1, 0.01, 0.001])
    >>> [float(eras(t).eval()) for t in (0, 99, 100, 150)]
    [0.1, 0.1, 0.01, 0.001]
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        who = "piecewise_constant"
        boundaries = _boundaries(who, self.boundaries)
        if isinstance(self.values, (str, bytes)) or not hasattr(self.values, "__iter__"):
            raise TypeError(f"{who}: values must be a sequence of numbers, got {describe(self.values)}")
        values = tuple(NON_NEGATIVE.check(who, f"values[{i}]", v) for i, v in enumerate(self.values))
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"{who}: got {len(values)} values for {len(boundaries)} boundaries; "
                "give one value per era, one more than boundaries"
            )
        self._set(boundaries=boundaries, values=values)

    def at(self, step: Variable) -> Variable:
        value = pt.constant(np.float64(self.values[0]))
        for boundary, era in zip(self.boundaries, self.values[1:]):
            value = pt.switch(pt.ge(step, boundary), np.float64(era), value)
        return value


@dataclass(frozen=True)
class exponential_decay(Schedule):
    r"""Exponential decay by ``decay_rate`` every ``decay_steps`` steps, smooth or in stairs.

    .. math:: \eta_t = \eta_0\, \gamma^{\,p}, \qquad
        p = t / T \ \text{or, with staircase,}\ \lfloor t / T \rfloor

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    decay_rate : float
        :math:`\gamma`, > 0 (below 1 decays).
    decay_steps : int
        :math:`T`, > 0: the steps over which the value is multiplied by :math:`\gamma`.
    staircase : bool
        If true, decay at whole multiples of :math:`T` only. Default False.

    Notes
    -----
    numpy-ml's ``ExponentialScheduler(initial_lr, stage_length, staircase, decay)`` is
    ``exponential_decay(initial_lr, decay, stage_length, staircase)``; torch's
    ``ExponentialLR(gamma)`` is ``exponential_decay(lr, gamma, 1)``.

    Examples
    --------
    >>> from updates import exponential_decay
    >>> decay = exponential_decay(1.0, decay_rate=0.5, decay_steps=10, staircase=True)
    >>> [float(decay(t).eval()) for t in (0, 9, 10, 25)]
    [1.0, 1.0, 0.5, 0.25]
    """

    init_value: float
    decay_rate: float
    decay_steps: int
    staircase: bool = False

    def __post_init__(self) -> None:
        who = "exponential_decay"
        if not isinstance(self.staircase, (bool, np.bool_)):
            raise TypeError(f"{who}: staircase must be True or False, got {self.staircase!r}")
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            decay_rate=POSITIVE.check(who, "decay_rate", self.decay_rate),
            decay_steps=COUNT.check(who, "decay_steps", self.decay_steps),
            staircase=bool(self.staircase),
        )

    def at(self, step: Variable) -> Variable:
        p = _f(step // self.decay_steps) if self.staircase else _f(step) / np.float64(self.decay_steps)
        return np.float64(self.init_value) * np.float64(self.decay_rate) ** p


@dataclass(frozen=True)
class inverse_time_decay(Schedule):
    r"""Inverse-time (power-law) decay.

    .. math:: \eta_t = \eta_0\, (1 + r\, p)^{-k}, \qquad
        p = t / T \ \text{or, with staircase,}\ \lfloor t / T \rfloor

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    decay_rate : float
        :math:`r`, >= 0.
    decay_steps : int
        :math:`T`, > 0. Default 1.
    power : float
        :math:`k`, > 0. Default 1 (:math:`\eta_0 / (1 + r p)`).
    staircase : bool
        If true, decay at whole multiples of :math:`T` only. Default False.

    Notes
    -----
    paysage's ``PowerLawDecay(initial, coefficient)`` keeps :math:`1/\eta_{t+1} = 1/\eta_t + c`,
    that is ``inverse_time_decay(initial, decay_rate=coefficient * initial)``.

    Examples
    --------
    >>> from updates import inverse_time_decay
    >>> decay = inverse_time_decay(1.0, decay_rate=0.5)
    >>> [float(decay(t).eval()) for t in (0, 2, 6)]
    [1.0, 0.5, 0.25]
    """

    init_value: float
    decay_rate: float
    decay_steps: int = 1
    power: float = 1.0
    staircase: bool = False

    def __post_init__(self) -> None:
        who = "inverse_time_decay"
        if not isinstance(self.staircase, (bool, np.bool_)):
            raise TypeError(f"{who}: staircase must be True or False, got {self.staircase!r}")
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            decay_rate=NON_NEGATIVE.check(who, "decay_rate", self.decay_rate),
            decay_steps=COUNT.check(who, "decay_steps", self.decay_steps),
            power=POSITIVE.check(who, "power", self.power),
            staircase=bool(self.staircase),
        )

    def at(self, step: Variable) -> Variable:
        p = _f(step // self.decay_steps) if self.staircase else _f(step) / np.float64(self.decay_steps)
        base = np.float64(1.0) + np.float64(self.decay_rate) * p
        return np.float64(self.init_value) * base ** np.float64(-self.power)


@dataclass(frozen=True)
class polynomial_decay(Schedule):
    r"""Polynomial decay from ``init_value`` to ``end_value`` in ``decay_steps`` steps, then flat.

    .. math:: \eta_t = (\eta_0 - \eta_T) \left(1 - \frac{\min(t, T)}{T}\right)^{k} + \eta_T

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    end_value : float
        :math:`\eta_T`, >= 0.
    decay_steps : int
        :math:`T`, > 0.
    power : float
        :math:`k`, > 0. Default 1 (linear).

    Notes
    -----
    The same as ``optax.polynomial_schedule`` (without ``transition_begin``: use
    :class:`join_schedules`) and, with ``end_value=0``, torch's ``PolynomialLR``.

    Examples
    --------
    >>> from updates import polynomial_decay
    >>> decay = polynomial_decay(1.0, end_value=0.2, decay_steps=4, power=2.0)
    >>> [float(decay(t).eval()) for t in (0, 2, 4, 9)]
    [1.0, 0.4, 0.2, 0.2]
    """

    init_value: float
    end_value: float
    decay_steps: int
    power: float = 1.0

    def __post_init__(self) -> None:
        who = "polynomial_decay"
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            end_value=NON_NEGATIVE.check(who, "end_value", self.end_value),
            decay_steps=COUNT.check(who, "decay_steps", self.decay_steps),
            power=POSITIVE.check(who, "power", self.power),
        )

    def at(self, step: Variable) -> Variable:
        total = np.float64(self.decay_steps)
        remaining = (total - pt.minimum(_f(step), total)) / total
        span = np.float64(self.init_value - self.end_value)
        decaying = span * remaining ** np.float64(self.power) + np.float64(self.end_value)
        # From T on, exactly end_value: 0 ** power is NaN under Numba's fastmath (x * rsqrt(x)).
        return pt.switch(pt.lt(step, self.decay_steps), decaying, np.float64(self.end_value))


@dataclass(frozen=True)
class linear_decay(Schedule):
    r"""A straight line, clipped: paysage's ``Linear`` schedule.

    .. math:: \eta_t = \operatorname{clip}(\eta_0 - \delta\, t,\ \eta_{\min},\ \eta_{\max})

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    delta : float
        :math:`\delta`, the decrease per step (negative to increase).
    min_value : float
        :math:`\eta_{\min}`, >= 0. Default 0.
    max_value : float
        :math:`\eta_{\max}`, >= ``min_value``; may be ``inf``. Default ``inf``.

    Notes
    -----
    paysage's ``Linear(initial, delta, minval, maxval)`` clips every value but the first (and
    defaults ``maxval`` to 1); here the first is clipped too.

    Examples
    --------
    >>> from updates import linear_decay
    >>> line = linear_decay(1.0, delta=0.25, min_value=0.1)
    >>> [float(line(t).eval()) for t in (0, 1, 3, 10)]
    [1.0, 0.75, 0.25, 0.1]
    """

    init_value: float
    delta: float
    min_value: float = 0.0
    max_value: float = math.inf

    def __post_init__(self) -> None:
        who = "linear_decay"
        min_value = NON_NEGATIVE.check(who, "min_value", self.min_value)
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            delta=Interval().check(who, "delta", self.delta),
            min_value=min_value,
            max_value=Interval(min_value, math.inf, high_closed=True).check(who, "max_value", self.max_value),
        )

    def at(self, step: Variable) -> Variable:
        line = np.float64(self.init_value) - np.float64(self.delta) * _f(step)
        return pt.clip(line, np.float64(self.min_value), np.float64(self.max_value))


@dataclass(frozen=True)
class step_decay(Schedule):
    r"""Multiply by ``factor`` every ``step_size`` steps.

    .. math:: \eta_t = \eta_0\, \gamma^{\lfloor t / k \rfloor}

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    step_size : int
        :math:`k`, > 0.
    factor : float
        :math:`\gamma`, >= 0. Default 0.1.

    Notes
    -----
    The same as torch's ``StepLR(step_size, gamma=factor)``.

    Examples
    --------
    >>> from updates import step_decay
    >>> drop = step_decay(1.0, step_size=3, factor=0.5)
    >>> [float(drop(t).eval()) for t in (0, 2, 3, 6)]
    [1.0, 1.0, 0.5, 0.25]
    """

    init_value: float
    step_size: int
    factor: float = 0.1

    def __post_init__(self) -> None:
        who = "step_decay"
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            step_size=COUNT.check(who, "step_size", self.step_size),
            factor=NON_NEGATIVE.check(who, "factor", self.factor),
        )

    def at(self, step: Variable) -> Variable:
        return np.float64(self.init_value) * np.float64(self.factor) ** _f(step // self.step_size)


@dataclass(frozen=True)
class cosine_decay(Schedule):
    r"""Half a cosine from ``init_value`` down to ``alpha * init_value`` in ``decay_steps``, then flat.

    .. math:: \eta_t = \eta_0 \left((1 - \alpha)\, \tfrac{1}{2}
        \left(1 + \cos\frac{\pi \min(t, T)}{T}\right) + \alpha\right)

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, >= 0.
    decay_steps : int
        :math:`T`, > 0.
    alpha : float
        :math:`\alpha`, the floor as a fraction of :math:`\eta_0`, in [0, 1]. Default 0.

    Notes
    -----
    The same as ``optax.cosine_decay_schedule`` and, for :math:`t \le T`, torch's
    ``CosineAnnealingLR(T_max=T, eta_min=alpha * init_value)`` (which rises again after
    :math:`T`).

    References
    ----------
    Loshchilov and Hutter (2017). SGDR: Stochastic gradient descent with warm restarts. ICLR.

    Examples
    --------
    >>> from updates import cosine_decay
    >>> decay = cosine_decay(init_value=0.1, decay_steps=100)
    >>> [float(decay(t).eval()) for t in (0, 50, 100, 200)]
    [0.1, 0.05, 0.0, 0.0]
    """

    init_value: float
    decay_steps: int
    alpha: float = 0.0

    def __post_init__(self) -> None:
        who = "cosine_decay"
        self._set(
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            decay_steps=COUNT.check(who, "decay_steps", self.decay_steps),
            alpha=Interval(0, 1, high_closed=True).check(who, "alpha", self.alpha),
        )

    def at(self, step: Variable) -> Variable:
        total = np.float64(self.decay_steps)
        decayed = _cosine(pt.minimum(_f(step), total) / total)
        alpha = np.float64(self.alpha)
        return np.float64(self.init_value) * ((np.float64(1.0) - alpha) * decayed + alpha)


@dataclass(frozen=True)
class linear_warmup(Schedule):
    r"""A straight line from ``init_value`` up to ``peak_value`` in ``warmup_steps``, then flat.

    .. math:: \eta_t = \eta_0 + (\eta_{\max} - \eta_0)\, \frac{\min(t, W)}{W}

    Parameters
    ----------
    peak_value : float
        :math:`\eta_{\max}`, >= 0.
    warmup_steps : int
        :math:`W`, > 0.
    init_value : float
        :math:`\eta_0`, >= 0. Default 0 (the first step does not move the parameters).

    Notes
    -----
    The same as ``optax.linear_schedule(init_value, peak_value, warmup_steps)`` and torch's
    ``LinearLR(start_factor=init_value / peak_value, total_iters=warmup_steps)``.

    Examples
    --------
    >>> from updates import linear_warmup
    >>> warmup = linear_warmup(peak_value=1.0, warmup_steps=4)
    >>> [float(warmup(t).eval()) for t in (0, 1, 4, 9)]
    [0.0, 0.25, 1.0, 1.0]
    """

    peak_value: float
    warmup_steps: int
    init_value: float = 0.0

    def __post_init__(self) -> None:
        who = "linear_warmup"
        self._set(
            peak_value=NON_NEGATIVE.check(who, "peak_value", self.peak_value),
            warmup_steps=COUNT.check(who, "warmup_steps", self.warmup_steps),
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
        )

    def at(self, step: Variable) -> Variable:
        total = np.float64(self.warmup_steps)
        fraction = pt.minimum(_f(step), total) / total
        return np.float64(self.init_value) + np.float64(self.peak_value - self.init_value) * fraction


@dataclass(frozen=True)
class warmup_cosine(Schedule):
    r"""Linear warm-up to ``peak_value``, then a cosine down to ``end_value`` at ``decay_steps``.

    .. math::

        \eta_t = \begin{cases}
            \eta_0 + (\eta_{\max} - \eta_0)\, t / W & t < W \\
            \eta_T + (\eta_{\max} - \eta_T)\, \tfrac{1}{2}
                \left(1 + \cos\frac{\pi \min(t - W,\ T - W)}{T - W}\right) & t \ge W
        \end{cases}

    Parameters
    ----------
    peak_value : float
        :math:`\eta_{\max}`, >= 0.
    warmup_steps : int
        :math:`W`, >= 0 (0: no warm-up).
    decay_steps : int
        :math:`T`, the total length of both phases, > ``warmup_steps``.
    init_value : float
        :math:`\eta_0`, >= 0. Default 0.
    end_value : float
        :math:`\eta_T`, >= 0. Default 0.

    Notes
    -----
    The same as ``optax.warmup_cosine_decay_schedule`` (``decay_steps`` includes the warm-up).

    Examples
    --------
    >>> from updates import warmup_cosine
    >>> schedule = warmup_cosine(peak_value=1.0, warmup_steps=2, decay_steps=6)
    >>> [round(float(schedule(t).eval()), 6) for t in range(8)]
    [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """

    peak_value: float
    warmup_steps: int
    decay_steps: int
    init_value: float = 0.0
    end_value: float = 0.0

    def __post_init__(self) -> None:
        who = "warmup_cosine"
        warmup = Interval(0, integer=True).check(who, "warmup_steps", self.warmup_steps)
        decay = Interval(integer=True).check(who, "decay_steps", self.decay_steps)
        if decay <= warmup:
            raise ValueError(
                f"{who}: decay_steps must be > warmup_steps (it counts both phases), "
                f"got decay_steps={decay!r} and warmup_steps={warmup!r}"
            )
        self._set(
            peak_value=NON_NEGATIVE.check(who, "peak_value", self.peak_value),
            warmup_steps=warmup,
            decay_steps=decay,
            init_value=NON_NEGATIVE.check(who, "init_value", self.init_value),
            end_value=NON_NEGATIVE.check(who, "end_value", self.end_value),
        )

    def at(self, step: Variable) -> Variable:
        s, warmup = _f(step), np.float64(self.warmup_steps)
        length = np.float64(self.decay_steps - self.warmup_steps)
        peak, end = np.float64(self.peak_value), np.float64(self.end_value)
        decay = end + (peak - end) * _cosine(pt.minimum(s - warmup, length) / length)
        if self.warmup_steps == 0:
            return decay
        rise = np.float64(self.init_value) + np.float64(self.peak_value - self.init_value) * s / warmup
        return pt.switch(pt.lt(step, self.warmup_steps), rise, decay)


@dataclass(frozen=True)
class one_cycle(Schedule):
    r"""The one-cycle policy: up from ``max_value / div_factor`` to ``max_value``, then down to
    ``max_value / (div_factor * final_div_factor)``, as torch's ``OneCycleLR``.

    With :math:`\eta_{\max}` = ``max_value``, :math:`\eta_0 = \eta_{\max} / d`,
    :math:`\eta_{\min} = \eta_0 / f`, :math:`N` = ``total_steps`` and :math:`q` = ``pct_start``,
    the phases end at the steps :math:`e_1 = qN - 1` and :math:`e_2 = N - 1` (three-phase:
    :math:`e_1 = qN - 1`, :math:`e_2 = 2qN - 2`, :math:`e_3 = N - 1`), and in the phase from
    :math:`e_{i-1}` (:math:`e_0 = 0`) to :math:`e_i`, going from :math:`a` to :math:`b`:

    .. math::

        \eta_t = \operatorname{anneal}\left(a, b, \frac{t - e_{i-1}}{e_i - e_{i-1}}\right), \qquad
        \operatorname{anneal}(a, b, x) = \begin{cases}
            b + (a - b)\, \tfrac{1}{2} (1 + \cos \pi x) & \text{cos} \\
            a + (b - a)\, x & \text{linear}
        \end{cases}

    Two phases: :math:`\eta_0 \to \eta_{\max} \to \eta_{\min}`; three phases:
    :math:`\eta_0 \to \eta_{\max} \to \eta_0 \to \eta_{\min}`.

    Parameters
    ----------
    max_value : float
        :math:`\eta_{\max}`, >= 0.
    total_steps : int
        :math:`N`, > 0.
    pct_start : float
        :math:`q`, the fraction of the steps spent going up, in (0, 1). Default 0.3.
    anneal_strategy : {"cos", "linear"}
        The shape of each phase. Default "cos".
    div_factor : float
        :math:`d`, > 0. Default 25.
    final_div_factor : float
        :math:`f`, > 0. Default 1e4.
    three_phase : bool
        Come back down to :math:`\eta_0` before the final descent. Default False.

    Notes
    -----
    torch also cycles the momentum inversely to the learning rate (``cycle_momentum``); for
    that, give ``momentum`` a :class:`join_schedules` of two :class:`polynomial_decay` pieces
    (``max_momentum`` down to ``base_momentum`` and back; linear annealing). After step
    :math:`N - 1` the value stays at :math:`\eta_{\min}` (torch refuses to step past :math:`N`).
    Every phase must last more than one step (torch divides by zero otherwise).

    References
    ----------
    Smith and Topin (2019). Super-convergence: very fast training of neural networks using large
    learning rates. SPIE Artificial Intelligence and Machine Learning for Multi-Domain Operations
    Applications.

    Examples
    --------
    >>> from updates import one_cycle
    >>> cycle = one_cycle(max_value=1.0, total_steps=10, anneal_strategy="linear",
    ...                   div_factor=10.0, final_div_factor=2.0)
    >>> [round(float(cycle(t).eval()), 6) for t in (0, 1, 2, 9, 20)]
    [0.1, 0.55, 1.0, 0.05, 0.05]
    """

    max_value: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self) -> None:
        who = "one_cycle"
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"{who}: anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}"
            )
        if not isinstance(self.three_phase, (bool, np.bool_)):
            raise TypeError(f"{who}: three_phase must be True or False, got {self.three_phase!r}")
        self._set(
            max_value=NON_NEGATIVE.check(who, "max_value", self.max_value),
            total_steps=COUNT.check(who, "total_steps", self.total_steps),
            pct_start=Interval(0, 1, low_closed=False).check(who, "pct_start", self.pct_start),
            div_factor=POSITIVE.check(who, "div_factor", self.div_factor),
            final_div_factor=POSITIVE.check(who, "final_div_factor", self.final_div_factor),
            three_phase=bool(self.three_phase),
        )
        start = 0.0
        for i, (end, _, _) in enumerate(self._phases()):
            if end <= start:
                raise ValueError(
                    f"{who}: phase {i + 1} would end at step {end:g}, not after its start at step "
                    f"{start:g}; raise total_steps or change pct_start (got total_steps="
                    f"{self.total_steps}, pct_start={self.pct_start!r})"
                )
            start = end

    def _phases(self) -> list[tuple[float, float, float]]:
        """``(end step, start value, end value)`` per phase."""
        initial = self.max_value / self.div_factor
        final = initial / self.final_div_factor
        up = float(self.pct_start * self.total_steps) - 1
        last = float(self.total_steps - 1)
        if self.three_phase:
            return [(up, initial, self.max_value), (2 * up, self.max_value, initial), (last, initial, final)]
        return [(up, initial, self.max_value), (last, self.max_value, final)]

    def _anneal(self, start: float, end: float, fraction: Variable) -> Variable:
        if self.anneal_strategy == "cos":
            return np.float64(end) + np.float64(start - end) * _cosine(fraction)
        return np.float64(start) + np.float64(end - start) * fraction

    def at(self, step: Variable) -> Variable:
        s = _f(step)
        phases = self._phases()
        starts = [0.0] + [end for end, _, _ in phases[:-1]]
        values = []
        for (end, a, b), begin in zip(phases, starts):
            values.append(self._anneal(a, b, (s - np.float64(begin)) / np.float64(end - begin)))
        last_end, last_begin = phases[-1][0], starts[-1]
        fraction = pt.minimum(
            (s - np.float64(last_begin)) / np.float64(last_end - last_begin), np.float64(1.0)
        )
        value = self._anneal(*phases[-1][1:], fraction)
        for (end, _, _), phase_value in zip(phases[-2::-1], values[-2::-1]):
            value = pt.switch(pt.le(s, np.float64(end)), phase_value, value)
        return value


@dataclass(frozen=True)
class sgdr(Schedule):
    r"""Cosine annealing with warm restarts (SGDR): a cosine from ``init_value`` to ``min_value``
    over ``period`` steps, restarted, each new period ``mult`` times longer.

    With :math:`T_0` = ``period`` and :math:`m` = ``mult``, the :math:`i`-th period (from 0)
    starts at :math:`S_i = T_0 (m^i - 1)/(m - 1)` (:math:`S_i = i T_0` when :math:`m = 1`) and
    lasts :math:`T_i = T_0 m^i`; at step :math:`t` in it, :math:`T_{cur} = t - S_i` and

    .. math:: \eta_t = \eta_{\min} + (\eta_0 - \eta_{\min})\, \tfrac{1}{2}
        \left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    Parameters
    ----------
    init_value : float
        :math:`\eta_0`, the value at each restart, >= ``min_value``.
    period : int
        :math:`T_0`, the length of the first period, > 0.
    mult : float
        :math:`m`, >= 1. Default 1 (equal periods).
    min_value : float
        :math:`\eta_{\min}`, >= 0. Default 0.

    Notes
    -----
    The same as torch's ``CosineAnnealingWarmRestarts(T_0=period, T_mult=mult, eta_min=min_value)``
    stepped once per step; torch takes an integer ``T_mult``, here any real :math:`m \ge 1`.

    References
    ----------
    Loshchilov and Hutter (2017). SGDR: Stochastic gradient descent with warm restarts. ICLR.

    Examples
    --------
    >>> from updates import sgdr
    >>> restarts = sgdr(1.0, period=2, mult=2.0)
    >>> [round(float(restarts(t).eval()), 6) for t in range(8)]
    [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0, 0.96194]
    """

    init_value: float
    period: int
    mult: float = 1.0
    min_value: float = 0.0

    def __post_init__(self) -> None:
        who = "sgdr"
        min_value = NON_NEGATIVE.check(who, "min_value", self.min_value)
        self._set(
            init_value=Interval(min_value).check(who, "init_value", self.init_value),
            period=COUNT.check(who, "period", self.period),
            mult=Interval(1).check(who, "mult", self.mult),
            min_value=min_value,
        )

    def _start(self, i: Variable) -> Variable:
        """:math:`S_i`, the step where period ``i`` starts."""
        m = np.float64(self.mult)
        return np.float64(self.period) * (m**i - np.float64(1.0)) / (m - np.float64(1.0))

    def at(self, step: Variable) -> Variable:
        if self.mult == 1.0:
            elapsed, length = _f(step % self.period), np.float64(self.period)
        else:
            s, m = _f(step), np.float64(self.mult)
            guess = pt.floor(pt.log1p(s * (m - np.float64(1.0)) / np.float64(self.period)) / pt.log(m))
            # log may round across a restart: settle the period index on the exact starts.
            i = pt.switch(pt.lt(s, self._start(guess)), guess - np.float64(1.0), guess)
            i = pt.switch(pt.ge(s, self._start(i + np.float64(1.0))), i + np.float64(1.0), i)
            elapsed, length = s - self._start(i), np.float64(self.period) * m**i
        low = np.float64(self.min_value)
        return low + (np.float64(self.init_value) - low) * _cosine(elapsed / length)


@dataclass(frozen=True)
class noam(Schedule):
    r"""The Transformer's warm-up then inverse-square-root decay, as numpy-ml's ``NoamScheduler``.

    .. math:: \eta_t = s\, d^{-1/2} \min\left((t + 1)^{-1/2},\ (t + 1)\, W^{-3/2}\right)

    Parameters
    ----------
    d_model : int
        :math:`d`, the model dimension, > 0. Default 512.
    warmup_steps : int
        :math:`W`, > 0: the value peaks at :math:`t + 1 = W`. Default 4000.
    scale_factor : float
        :math:`s`, >= 0. Default 1.

    Notes
    -----
    numpy-ml evaluates the formula at the step count :math:`t` itself, which gives 0 on step 0
    (:math:`\min(\infty, 0)`); here the first call is step 1 of the formula (:math:`t + 1`), so
    every step moves the parameters.

    References
    ----------
    Vaswani et al. (2017). Attention is all you need. NeurIPS.

    Examples
    --------
    >>> from updates import noam
    >>> schedule = noam(d_model=4, warmup_steps=4)
    >>> [float(schedule(t).eval()) for t in (0, 3, 15)]
    [0.0625, 0.25, 0.125]
    """

    d_model: int = 512
    warmup_steps: int = 4000
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        who = "noam"
        self._set(
            d_model=COUNT.check(who, "d_model", self.d_model),
            warmup_steps=COUNT.check(who, "warmup_steps", self.warmup_steps),
            scale_factor=NON_NEGATIVE.check(who, "scale_factor", self.scale_factor),
        )

    def at(self, step: Variable) -> Variable:
        n = _f(step) + np.float64(1.0)
        ramp = n * np.float64(self.warmup_steps) ** np.float64(-1.5)
        return (
            np.float64(self.scale_factor)
            * np.float64(self.d_model) ** np.float64(-0.5)
            * pt.minimum(n ** np.float64(-0.5), ramp)
        )


@dataclass(frozen=True)
class momentum_ramp(Schedule):
    r"""yann's momentum schedule: a straight line from ``start`` to ``end`` at ``end_step``, then flat.

    .. math:: \mu_t = \mu_0 \left(1 - \frac{\min(t, E)}{E}\right) + \mu_E\, \frac{\min(t, E)}{E}

    Parameters
    ----------
    start : float
        :math:`\mu_0`, in [0, 1).
    end : float
        :math:`\mu_E`, in [0, 1).
    end_step : int
        :math:`E`, > 0.

    Notes
    -----
    yann's ``momentum_params = (start, end, end_epoch)`` counts epochs; here the count is of
    calls of the compiled step.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> ramp = updates.momentum_ramp(start=0.5, end=0.9, end_step=4)
    >>> [round(float(ramp(t).eval()), 6) for t in (0, 2, 4, 10)]
    [0.5, 0.7, 0.9, 0.9]
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> step = updates.apply_momentum(updates.sgd((w**2).sum(), [w]), momentum=ramp)
    >>> list(step.named_state())
    ['w.apply_momentum.velocity', 'apply_momentum.t']
    """

    start: float
    end: float
    end_step: int

    def __post_init__(self) -> None:
        who = "momentum_ramp"
        self._set(
            start=Interval(0, 1).check(who, "start", self.start),
            end=Interval(0, 1).check(who, "end", self.end),
            end_step=COUNT.check(who, "end_step", self.end_step),
        )

    def at(self, step: Variable) -> Variable:
        total = np.float64(self.end_step)
        fraction = pt.minimum(_f(step), total) / total
        return np.float64(self.start) * (np.float64(1.0) - fraction) + np.float64(self.end) * fraction


# -- combinators -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class join_schedules(Schedule):
    r"""One schedule after another: from ``boundaries[i - 1]`` on, ``schedules[i]`` runs on the
    step counted from that boundary.

    .. math:: \eta_t = s_i(t - b_{i-1}) \quad\text{for}\quad b_{i-1} \le t < b_i

    with :math:`b_{-1} = 0` and :math:`b_n = \infty`.

    Parameters
    ----------
    schedules : sequence of schedules
        Callables of the step (numbers are taken as :class:`constant`), one more than
        ``boundaries``.
    boundaries : sequence of int
        The steps where the next schedule takes over, >= 0 and strictly increasing.

    Notes
    -----
    The same as ``optax.join_schedules``. The state of the joined schedules (if any) is kept.

    Examples
    --------
    >>> from updates import cosine_decay, join_schedules, linear_warmup
    >>> schedule = join_schedules([linear_warmup(1.0, 2), cosine_decay(1.0, 4)], boundaries=[2])
    >>> [round(float(schedule(t).eval()), 6) for t in range(7)]
    [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0]
    """

    schedules: tuple[Callable, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        who = "join_schedules"
        if isinstance(self.schedules, (str, bytes)) or not hasattr(self.schedules, "__iter__"):
            raise TypeError(
                f"{who}: schedules must be a sequence of schedules, got {describe(self.schedules)}"
            )
        schedules = tuple(_as_schedule(who, f"schedules[{i}]", s) for i, s in enumerate(self.schedules))
        boundaries = _boundaries(who, self.boundaries)
        if len(schedules) != len(boundaries) + 1:
            raise ValueError(
                f"{who}: got {len(schedules)} schedules for {len(boundaries)} boundaries; "
                "give one schedule more than boundaries"
            )
        self._set(schedules=schedules, boundaries=boundaries)

    def at(self, step: Variable) -> Variable:
        who = "join_schedules"
        value = _scalar(who, self.schedules[0](step))
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            later = _scalar(who, schedule(step - np.int64(boundary)))
            value = pt.switch(pt.ge(step, boundary), later, value)
        return value

    def state_updates(self) -> dict[Variable, Variable]:
        """The state updates of the joined schedules."""
        return schedule_state(self.schedules)

    @property
    def needs_loss(self) -> bool:
        """Whether one of the joined schedules watches a loss it was built without."""
        return any(getattr(s, "needs_loss", False) for s in self.schedules)

    def with_loss(self, loss: Variable) -> join_schedules:
        """The same join, each joined schedule that needs a loss watching ``loss``."""
        return dataclasses.replace(self, schedules=tuple(_with_loss(s, loss) for s in self.schedules))


@dataclass(frozen=True)
class scale(Schedule):
    r"""A schedule multiplied by a constant factor.

    .. math:: \eta_t = c\, s(t)

    Parameters
    ----------
    schedule : schedule
        A callable of the step.
    factor : float
        :math:`c`, a finite real number.

    Examples
    --------
    >>> from updates import scale, step_decay
    >>> half = scale(step_decay(1.0, step_size=2), factor=0.5)
    >>> [float(half(t).eval()) for t in (0, 2)]
    [0.5, 0.05]
    """

    schedule: Callable
    factor: float

    def __post_init__(self) -> None:
        who = "scale"
        if not is_schedule(self.schedule):
            raise TypeError(f"{who}: schedule must be a callable of the step, got {describe(self.schedule)}")
        self._set(factor=Interval().check(who, "factor", self.factor))

    def at(self, step: Variable) -> Variable:
        return np.float64(self.factor) * _scalar("scale", self.schedule(step))

    def state_updates(self) -> dict[Variable, Variable]:
        """The state updates of the scaled schedule."""
        return schedule_state([self.schedule])

    @property
    def needs_loss(self) -> bool:
        """Whether the scaled schedule watches a loss it was built without."""
        return getattr(self.schedule, "needs_loss", False)

    def with_loss(self, loss: Variable) -> scale:
        """The scaled schedule watching ``loss``."""
        return dataclasses.replace(self, schedule=_with_loss(self.schedule, loss))


# -- driven by the loss ----------------------------------------------------------------------------


class reduce_on_plateau(Schedule):
    r"""A value cut by ``factor`` when the loss stops improving, decided inside the compiled step.

    Its state lives in four shared variables (named ``<name>.value``, ``<name>.best``,
    ``<name>.num_bad_steps``, ``<name>.cooldown_counter``) updated by the same compiled call that
    computes ``loss``. With :math:`L` the loss of a call, :math:`B` the best loss so far
    (:math:`+\infty` at first), :math:`n` the number of calls since the last improvement and
    :math:`c` the cooldown counter, each call does, in order:

    .. math::

        \text{if } L < B\,(1 - \theta):&\quad B \leftarrow L,\ n \leftarrow 0
            \quad\text{else}\quad n \leftarrow n + 1 \\
        \text{if } c > 0:&\quad c \leftarrow c - 1,\ n \leftarrow 0 \\
        \text{if } n > P:&\quad \eta \leftarrow \max(\gamma\, \eta,\ \eta_{\min}),\
            c \leftarrow C,\ n \leftarrow 0

    The value used by a call is the one decided after the previous calls: calling the schedule
    returns the shared variable ``<name>.value`` itself.

    Parameters
    ----------
    loss : scalar tensor or None
        :math:`L`, the quantity to watch (lower is better): the training loss of the compiled
        function, or an input such as a validation loss fed to it. None (the default): the loss
        of the rule the schedule is given to, which the rule hands over when it is called with a
        scalar loss (a rule given gradients, and a wrapper, refuse it: they have no loss).
    init_value : float
        The first value of :math:`\eta`, >= 0. Required (give it by name when ``loss`` is left
        out).
    factor : float
        :math:`\gamma`, in (0, 1). Default 0.1.
    patience : int
        :math:`P`, the calls without improvement tolerated, >= 0. Default 10.
    threshold : float
        :math:`\theta`, the relative improvement that counts, in [0, 1). Default 1e-4.
    cooldown : int
        :math:`C`, the calls after a cut during which bad calls are not counted, >= 0. Default 0.
    min_value : float
        :math:`\eta_{\min}`, >= 0. Default 0.
    name : str
        The prefix of the names of the shared variables. Default ``"reduce_on_plateau"``; give
        each of several instances its own.

    Notes
    -----
    torch's ``ReduceLROnPlateau(mode="min", threshold_mode="rel", eps=0)`` stepped once per call
    with the same loss; torch (by default ``eps=1e-8``) skips a cut smaller than ``eps``. Unlike
    numpy-ml's ``KingScheduler`` and like optax's ``reduce_on_plateau`` the whole decision is
    symbolic, so no Python runs between steps.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> loss = pt.dscalar("loss")
    >>> lr = updates.reduce_on_plateau(loss, init_value=1.0, factor=0.5, patience=1)
    >>> step_updates = updates.sgd([pt.ones(2)], [w], learning_rate=lr)
    >>> step = pytensor.function([loss], step_updates.hyperparameters["learning_rate"],
    ...                          updates=step_updates)
    >>> [float(step(x)) for x in (3.0, 2.0, 2.0, 2.0, 2.0)]
    [1.0, 1.0, 1.0, 1.0, 0.5]

    Without a loss, it watches the loss of the rule it is given to, so that it can be given to a
    rule built before its loss (partial application). ``pm.fit`` hands its optimizer gradients,
    not the ELBO: there a rule has no loss to hand over and says so (``examples/pymc_advi.py``).

    >>> v = pytensor.shared(np.array([2.0]), name="v")
    >>> adam = updates.adam(learning_rate=updates.reduce_on_plateau(init_value=0.1, name="lr"))
    >>> list(adam(((v - 1.0) ** 2).sum(), [v]).named_state())[-5:]
    ['lr.value', 'lr.best', 'lr.num_bad_steps', 'lr.cooldown_counter', 'adam.t']
    """

    def __init__(
        self,
        loss: Variable | None = None,
        init_value: float | None = None,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_value: float = 0.0,
        *,
        name: str = "reduce_on_plateau",
    ) -> None:
        who = "reduce_on_plateau"
        self.loss = None if loss is None else _watched(loss, init_value)
        if init_value is None:
            raise TypeError(f"{who}: missing a required argument: 'init_value'")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{who}: name must be a non-empty string, got {name!r}")
        self.init_value = NON_NEGATIVE.check(who, "init_value", init_value)
        self.factor = Interval(0, 1, low_closed=False).check(who, "factor", factor)
        self.patience = Interval(0, integer=True).check(who, "patience", patience)
        self.threshold = Interval(0, 1).check(who, "threshold", threshold)
        self.cooldown = Interval(0, integer=True).check(who, "cooldown", cooldown)
        self.min_value = NON_NEGATIVE.check(who, "min_value", min_value)
        self.name = name
        self.value = _state(np.float64(self.init_value), f"{name}.value")
        self.best = _state(np.float64(np.inf), f"{name}.best")
        self.num_bad_steps = _state(np.int64(0), f"{name}.num_bad_steps")
        self.cooldown_counter = _state(np.int64(0), f"{name}.cooldown_counter")

    def __repr__(self) -> str:
        return (
            f"reduce_on_plateau(init_value={self.init_value!r}, factor={self.factor!r}, "
            f"patience={self.patience!r}, threshold={self.threshold!r}, cooldown={self.cooldown!r}, "
            f"min_value={self.min_value!r}, name={self.name!r})"
        )

    def __call__(self, step: Any = None) -> Variable:
        """The current value (the shared variable ``<name>.value``), whatever the step."""
        return self.value

    def at(self, step: Variable) -> Variable:
        return self.value

    @property
    def needs_loss(self) -> bool:
        """True when built without a loss: the rule it is given to hands over its own."""
        return self.loss is None

    def with_loss(self, loss: Variable) -> reduce_on_plateau:
        """This schedule watching ``loss``, sharing its state (the same shared variables); itself
        if it has a loss already."""
        if self.loss is not None:
            return self
        watching = copy.copy(self)
        watching.loss = _watched(loss, self.init_value)
        return watching

    def state_updates(self) -> dict[Variable, Variable]:
        """The new best loss, counters and value after a call that computed ``loss``."""
        if self.loss is None:
            raise ValueError(
                f"{self!r} has no loss to watch: build it with one, or give it to a rule called "
                "with a scalar loss (the rule hands it its own)"
            )
        better = pt.lt(self.loss, self.best * np.float64(1.0 - self.threshold))
        best = pt.switch(better, self.loss, self.best)
        bad = pt.switch(better, np.int64(0), self.num_bad_steps + np.int64(1))
        cooling = pt.gt(self.cooldown_counter, 0)
        counter = pt.switch(cooling, self.cooldown_counter - np.int64(1), self.cooldown_counter)
        bad = pt.switch(cooling, np.int64(0), bad)
        cut = pt.gt(bad, self.patience)
        reduced = pt.maximum(self.value * np.float64(self.factor), np.float64(self.min_value))
        return {
            self.value: pt.switch(cut, reduced, self.value),
            self.best: best,
            self.num_bad_steps: pt.switch(cut, np.int64(0), bad),
            self.cooldown_counter: pt.switch(cut, np.int64(self.cooldown), counter),
        }


def _watched(loss: Any, init_value: Any) -> Variable:
    """The loss a :class:`reduce_on_plateau` watches, checked, as float64."""
    who = "reduce_on_plateau"
    if not isinstance(loss, Variable) or getattr(loss.type, "ndim", None) is None:
        hint = ""
        if _is_number(loss) and init_value is None:
            hint = f"; to watch the loss of the rule, give the first value by name: init_value={loss!r}"
        raise TypeError(f"{who}: loss must be a scalar tensor or None, got {describe(loss)}{hint}")
    if loss.ndim != 0:
        raise ValueError(
            f"{who}: loss must be a scalar, got a {loss.ndim}-d tensor ({loss.type}); "
            "reduce it with .sum() or .mean()"
        )
    if not loss.dtype.startswith(("float", "int", "uint")):
        raise TypeError(f"{who}: loss must be real, got dtype {loss.dtype}")
    return pt.cast(loss, "float64")


def _state(value: np.generic, name: str) -> Variable:
    """A 0-d shared variable holding schedule state, recording its initial value (for reset)."""
    return new_state(value, name, value.item())


# -- changed by hand -------------------------------------------------------------------------------


@checks_keywords
def live(value: float, name: str | None = None) -> Variable:
    r"""A hyperparameter you can change between calls without recompiling.

    Returns a float64 0-d shared variable holding ``value``. Give it as any hyperparameter (a
    rule's ``learning_rate``, ``apply_momentum``'s ``momentum``, ...); rules cast it to each
    parameter's dtype inside the graph, so a float32 model stays float32. Change it with
    ``.set_value(x)``: the next call of the compiled function uses ``x``. Concrete range checks
    do not apply to it (its value is not known when the graph is built).

    Parameters
    ----------
    value : float
        The initial value, a finite real number.
    name : str, optional
        The shared variable's name (e.g. ``"learning_rate"``), shown in ``Updates.config``.

    Returns
    -------
    SharedVariable
        A float64 scalar shared variable.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0]), name="w")
    >>> lr = updates.live(0.5, name="lr")
    >>> step = pytensor.function([], [], updates=updates.sgd(w.sum(), [w], learning_rate=lr))
    >>> _ = step(); lr.set_value(0.25); _ = step()
    >>> w.get_value()
    array([0.25])
    """
    value = Interval().check("live", "value", value)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"live: name must be a string or None, got {describe(name)}")
    return pytensor.shared(np.float64(value), name=name)
