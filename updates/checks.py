"""The checks every public function makes on its arguments, and the messages they raise.

Params (``check_params``), hyperparameters (:class:`~updates.checks.Interval`, the one range checker, and
``check_hyperparameter``), dictionaries of updates (``check_mapping``), and how a message
names a value (``describe``) or a param (``which``). Every message starts with the name
of the function the user called and names the argument and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.tensor.type import TensorType

__all__ = ["ArgumentError", "Interval"]


class ArgumentError(TypeError, ValueError):
    """A required argument is missing, or a param is not a shared variable.

    It is both a ``TypeError`` (what Python raises for a wrong argument) and a ``ValueError``
    (what Lasagne and PyMC raise, and what code ported from them catches).
    """


def label(param: Variable, index: int) -> str:
    """A readable name for ``params[index]``: its own name, or ``param<index>``."""
    return getattr(param, "name", None) or f"param{index}"


def which(param: Variable, index: int) -> str:
    """How error messages point at ``params[index]``: ``params[2] ('W_out')``."""
    return f"params[{index}] ({label(param, index)!r})"


def describe(value: Any) -> str:
    """Describe a value in an error message by its type (and PyTensor type, if it has one)."""
    kind = type(value).__name__
    return f"{kind} {value.type}" if isinstance(value, Variable) else kind


def is_concrete(value: Any) -> bool:
    """True for a number known now: a Python or NumPy real scalar (not a symbolic variable)."""
    return isinstance(value, (numbers.Real, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0)


def check_params(who: str, params: Any, floating: bool = True) -> list[SharedVariable]:
    """Check that ``params`` is a non-empty list of distinct (floating-point) shared tensors."""
    if not isinstance(params, (list, tuple)):
        raise ArgumentError(f"{who}: params must be a list of shared variables, got {describe(params)}")
    if not params:
        raise ValueError(f"{who}: params is empty; give at least one shared variable")
    seen: dict[int, int] = {}
    for i, param in enumerate(params):
        if not isinstance(param, SharedVariable) or not isinstance(param.type, TensorType):
            raise ArgumentError(
                f"{who}: {which(param, i)} is a "
                f"{describe(param)}, expected a shared variable; wrap it with pytensor.shared(...)"
            )
        if floating and not param.dtype.startswith("float"):
            raise TypeError(
                f"{who}: {which(param, i)} has dtype {param.dtype}, expected a "
                "floating-point dtype (float32 or float64)"
            )
        if id(param) in seen:
            raise ValueError(
                f"{who}: {which(param, i)} is the same variable as "
                f"params[{seen[id(param)]}]; pass each parameter once"
            )
        seen[id(param)] = i
    return list(params)


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


def check_mapping(who: str, updates: Any) -> None:
    """Refuse anything but a dictionary of updates."""
    if not isinstance(updates, Mapping):
        raise TypeError(f"{who}: updates must be a dictionary of updates, got {describe(updates)}")
