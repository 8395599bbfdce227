"""The container: :class:`Updates`, the ordered dictionary every rule and wrapper returns.

It is a plain ``OrderedDict`` to PyTensor and PyMC, and knows which keys are params, what built
it (``config``), its hyperparameters as expressions, which updates carry the non-finite gate
inside (``gated``), and where each named piece of state lives (from the state's
:class:`~updates.layout.StateRecord`). ``current_values`` evaluates scalar expressions now,
without compiling the step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pytensor
from pytensor.compile.mode import Mode
from pytensor.graph.basic import Constant, Variable

from updates.layout import Piece, pieces_of
from updates.sync import sync_variables

__all__ = ["Updates"]


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
    config : iterable of dict
        What built these updates (see :attr:`config`).
    hyperparameters : mapping of str to scalar tensor, optional
        The hyperparameters by name (see :attr:`hyperparameters`).
    gated : mapping of shared variable to its new value, optional
        The values built with the non-finite gate inside (see :meth:`is_gated`).
    """

    def __init__(
        self,
        items: Mapping | Iterable = (),
        params: Iterable[Variable] = (),
        config: Iterable[dict] = (),
        hyperparameters: Mapping[str, Variable] | None = None,
        gated: Mapping[Variable, Variable] | None = None,
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
        #: The values that already keep their variable as it was when the step's non-finite
        #: gate is closed (built inside ``updates.engine.gated``), by key: a guard around the
        #: step leaves them alone, so they stay updated in place.
        self.gated: dict[Variable, Variable] = dict(gated or {})

    def is_gated(self, key: Variable) -> bool:
        """Whether the value of ``key`` is one built with the non-finite gate inside."""
        return key in self and self.gated.get(key) is self[key]

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
        from updates.container import current_values

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

        A flat buffer holds one piece per param (its ``layout.StateRecord`` says
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
        """A shallow copy that keeps the params, config, hyperparameters and gated values."""
        return Updates(self, self.params, self.config, self.hyperparameters, self.gated)

    def __reduce__(self):
        return (Updates, (list(self.items()), self.params, self.config, self.hyperparameters, self.gated))


_EVAL_MODE = Mode(linker="py", optimizer="fast_compile")


def current_values(hyperparameters: dict[str, Variable]) -> dict[str, Any]:
    """The current value of each symbolic scalar, compiled once (None where inputs are needed)."""
    values: dict[str, Any] = {}
    pending = {}
    for name, variable in hyperparameters.items():
        if isinstance(variable, Constant):
            values[name] = np.asarray(variable.data).item()
        else:
            pending[name] = variable
    if pending:
        try:
            results = _run(list(pending.values()))
        except pytensor.graph.utils.MissingInputError:
            results = []
            for variable in pending.values():
                try:
                    results.extend(_run([variable]))
                except pytensor.graph.utils.MissingInputError:
                    results.append(None)
        values.update(
            (name, None if r is None else np.asarray(r).item()) for name, r in zip(pending, results)
        )
    return {name: values[name] for name in hyperparameters}


def _run(outputs: list[Variable]) -> list[Any]:
    return pytensor.function([], outputs, mode=_EVAL_MODE, on_unused_input="ignore")()
