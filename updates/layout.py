"""The layout of optimizer state: what each state variable holds, recorded where it is made.

Every state variable carries one :class:`~updates.layout.StateRecord`, written when it is
created and never changed: its initial value (what :func:`updates.reset_state` restores), the
named :class:`~updates.layout.Piece` of each param it holds (a flat buffer of the multi-tensor
path holds one per param), whether it counts steps, and, for the shadows of
:func:`updates.apply_ema`, which param each piece averages. ``named_state``,
``inspect_state``, checkpoints and ``reset_state`` read these records; none of them guesses from
the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from updates.checks import label

__all__ = ["Piece", "StateRecord", "new_state", "step_counter"]


@dataclass(frozen=True)
class Piece:
    """A named part of a state variable: ``shape`` elements from ``start`` of its raveled value."""

    name: str
    start: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class StateRecord:
    """What an optimizer-state variable holds, written once where the variable is made.

    Attributes
    ----------
    initial : float or None
        The value every element starts from (and :func:`updates.reset_state` restores); None if unknown.
    pieces : tuple of Piece, optional
        For a flat buffer holding the state of several params, each param's piece by name; None
        for a variable holding one piece of state whole, under the variable's own name.
    averages : tuple of shared variables
        For :func:`updates.apply_ema`'s shadows: the param each piece is the running average of.
    counts_steps : bool
        An integer scalar that counts the steps taken (``adam.t``, made by :func:`step_counter`),
        shown in :func:`updates.inspect_state`'s ``steps``; not any other integer state.
    """

    initial: float | None
    pieces: tuple[Piece, ...] | None = None
    averages: tuple[Variable, ...] = ()
    counts_steps: bool = False


def new_state(
    value: Any,
    name: str,
    initial: float,
    shape: Any = None,
    pieces: Any = None,
    averages: tuple[Variable, ...] = (),
    counts_steps: bool = False,
) -> SharedVariable:
    """A shared variable of optimizer state holding ``value``, with its
    :class:`~updates.layout.StateRecord`."""
    static = {} if shape is None else {"shape": shape}  # numpy scalars take no shape
    variable = pytensor.shared(value, name=name, **static)
    pieces = None if pieces is None else tuple(pieces)
    variable.tag.state = StateRecord(initial, pieces, tuple(averages), counts_steps)
    return variable


def state_record(variable: Variable) -> StateRecord:
    """The :class:`~updates.layout.StateRecord` of ``variable`` (initial value unknown for one made
    elsewhere)."""
    return getattr(variable.tag, "state", None) or StateRecord(None)


def pieces_of(variable: Variable) -> tuple[Piece, ...]:
    """The named pieces of a state variable: a flat buffer's, or the whole variable under its name."""
    return state_record(variable).pieces or (Piece(variable.name, 0, variable.get_value(borrow=True).shape),)


def state_like(param: SharedVariable, name: str, fill: float = 0.0, averages: bool = False) -> SharedVariable:
    """New state with ``param``'s dtype, shape and static type, filled with ``fill`` (with
    ``averages``: recorded as the running average of ``param``)."""
    value = np.full_like(param.get_value(borrow=True), fill)
    return new_state(value, name, fill, param.type.shape, averages=(param,) if averages else ())


def state_of_shape(param: SharedVariable, name: str, shape: tuple[int, ...], static: tuple) -> SharedVariable:
    """New zero state with ``param``'s dtype but a shape of its own (e.g. a factor of the param's
    second moments), ``static`` its static shape (None where unknown)."""
    value = np.zeros(shape, dtype=param.get_value(borrow=True).dtype)
    return new_state(value, name, 0.0, static)


def flat_state(params, indices, role: str, suffix: str = "", averages: bool = False) -> SharedVariable:
    """A zero buffer holding one slot of every param, end to end, each a named piece (with
    ``averages``: recorded as the running averages of ``params``)."""
    shapes = [p.get_value(borrow=True).shape for p in params]
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    pieces = [
        Piece(f"{label(p, i)}.{role}", start, shape)
        for p, i, start, shape in zip(params, indices, starts, shapes)
    ]
    shadowed = tuple(params) if averages else ()
    return new_state(np.zeros(total, dtype=params[0].dtype), role + suffix, 0.0, (total,), pieces, shadowed)


def step_counter(name: str) -> SharedVariable:
    """A new integer step counter starting at 0 (an int64 counts past float32's 2**24 limit),
    recorded as one: :func:`updates.inspect_state` shows it among the steps taken."""
    return new_state(np.int64(0), name, 0, counts_steps=True)
