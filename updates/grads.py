"""The gate every rule goes through: validate params, compute or check gradients, clear NaN.

Also the small helpers that all rules share: casting hyperparameters to a parameter's dtype and
creating optimizer state shaped like a parameter.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.tensor.type import TensorType

try:  # PyTensor >= 2.32 (moved, the old place warns)
    from pytensor.graph.traversal import ancestors
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import ancestors

__all__ = ["ArgumentError", "get_or_compute_grads"]

F = TypeVar("F", bound=Callable)


class ArgumentError(TypeError, ValueError):
    """A required argument is missing, or a param is not a shared variable.

    It is both a ``TypeError`` (what Python raises for a wrong argument) and a ``ValueError``
    (what Lasagne and PyMC raise, and what code ported from them catches).
    """


#: The names torch.optim and optax give some hyperparameters.
ALIASES = {"lr": "learning_rate", "eps": "epsilon", "betas": "beta1", "b1": "beta1", "b2": "beta2"}


def suggestion(name: str, valid: Sequence[str]) -> str:
    """``"; did you mean 'learning_rate'?"`` for a misspelt keyword (or torch's ``lr``), or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if not close and ALIASES.get(name) in valid:
        close = [ALIASES[name]]
    if not close:
        return ""
    if name == "betas" and "beta2" in valid:
        return "; did you mean 'beta1' and 'beta2'?"
    return f"; did you mean {close[0]!r}?"


def unknown_keyword(who: str, signature: inspect.Signature, kwargs: dict) -> TypeError | None:
    """The error for the first keyword of ``kwargs`` that ``signature`` does not take, if any."""
    parameters = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    keywords = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in kwargs:
        if name not in keywords:
            guess = suggestion(name, keywords)
            return TypeError(f"{who}: got an unexpected keyword argument {name!r}{guess}")
    return None


def checks_keywords(function: F) -> F:
    """Make ``function`` name the closest valid argument when called with a misspelt keyword."""
    signature = inspect.signature(function)
    keywords = set(signature.parameters)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not keywords.issuperset(kwargs):
            error = unknown_keyword(function.__name__, signature, kwargs)
            if error is not None:
                raise error
        return function(*args, **kwargs)

    return checked  # type: ignore[return-value]


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


def _compute_grads(
    who: str, loss: Any, params: list[SharedVariable], floating: bool = True
) -> list[Variable]:
    try:
        loss = pt.as_tensor_variable(loss)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{who}: loss_or_grads must be a scalar loss or a list of gradients, got {describe(loss)}"
        ) from err
    if loss.ndim != 0:
        raise ValueError(
            f"{who}: the loss must be a scalar, got a {loss.ndim}-d tensor ({loss.type}); "
            "reduce it with .sum() or .mean(), or pass a list of gradients"
        )
    if floating and not loss.dtype.startswith("float"):
        raise TypeError(f"{who}: the loss must be floating-point, got dtype {loss.dtype}")
    connected = set(ancestors([loss]))
    for i, param in enumerate(params):
        if param not in connected:
            raise ValueError(
                f"{who}: the loss does not depend on {which(param, i)}; "
                "remove it from params or pass its gradient explicitly"
            )
    return pytensor.grad(loss, params)


def _check_grad(who: str, i: int, grad: Any, param: SharedVariable) -> Variable:
    """Return ``grad`` as a tensor of ``param``'s dtype, or raise if it cannot match ``param``."""
    try:
        grad = pt.as_tensor_variable(grad)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: loss_or_grads[{i}] is a {describe(grad)}, expected a tensor") from err
    name = which(param, i)
    if grad.ndim != param.ndim or any(
        g is not None and p is not None and g != p for g, p in zip(grad.type.shape, param.type.shape)
    ):
        raise ValueError(
            f"{who}: the gradient loss_or_grads[{i}] has type {grad.type}, which cannot match "
            f"{name} of type {param.type}"
        )
    if not grad.dtype.startswith("float"):
        raise TypeError(
            f"{who}: the gradient loss_or_grads[{i}] has dtype {grad.dtype}, expected a "
            f"floating-point dtype like {name} ({param.dtype})"
        )
    return pt.cast(grad, param.dtype)


def clear_nan(grad: Variable) -> Variable:
    """Replace the NaN entries of ``grad`` by zero (inf and -inf are left alone)."""
    return pt.switch(pt.isnan(grad), np.zeros((), grad.dtype), grad)


def _check_missing(who: str, loss_or_grads: Any, params: Any) -> None:
    if loss_or_grads is None or params is None:
        missing = "loss_or_grads" if loss_or_grads is None else "params"
        raise ArgumentError(
            f"{who}: {missing} is missing; give both loss_or_grads and params"
            + ("" if who == "get_or_compute_grads" else ", or neither to get the rule back awaiting them")
        )


def _check_length(who: str, grads: Sequence, params: list) -> None:
    if len(grads) != len(params):
        raise ValueError(
            f"{who}: got {len(grads)} gradients for {len(params)} params; "
            "loss_or_grads and params must have the same length"
        )


def prepare_grads(who: str, loss_or_grads: Any, params: Any) -> tuple[list[SharedVariable], list[Variable]]:
    """Validate ``params`` and return them with one gradient each, of the parameter's dtype."""
    _check_missing(who, loss_or_grads, params)
    params = check_params(who, params)
    if isinstance(loss_or_grads, (list, tuple)):
        _check_length(who, loss_or_grads, params)
        grads = loss_or_grads
    else:
        grads = _compute_grads(who, loss_or_grads, params)
    return params, [_check_grad(who, i, g, p) for i, (g, p) in enumerate(zip(grads, params))]


@checks_keywords
def get_or_compute_grads(loss_or_grads: Any, params: Sequence[SharedVariable]) -> list[Variable]:
    """Return the gradients of a scalar loss, or check and return a given list of gradients.

    Parameters
    ----------
    loss_or_grads : scalar TensorVariable or list of TensorVariable
        A scalar loss, differentiated once with respect to all ``params``, or one gradient
        expression per parameter.
    params : list of shared variables
        The floating-point parameters, each given once.

    Returns
    -------
    list of TensorVariable
        What ``pytensor.grad(loss, params)`` returns; or, given a list of gradients, that very
        list object, once checked (as Lasagne does).

    Raises
    ------
    ArgumentError
        When a param is not a shared variable, or ``loss_or_grads`` or ``params`` is None
        (both a ``TypeError`` and a ``ValueError``).
    TypeError, ValueError
        When the loss is not a scalar or does not depend on a param, or the gradients do not
        match the params in number, shape or dtype.

    Notes
    -----
    Unlike the rules, which refuse integer params, it differentiates a loss with respect to
    integer shared variables too, as Lasagne's does (PyTensor gives them zero gradients).

    Examples
    --------
    >>> import numpy as np, pytensor
    >>> from updates import get_or_compute_grads
    >>> w = pytensor.shared(np.ones(3), name="w")
    >>> [g.eval() for g in get_or_compute_grads((w**2).sum(), [w])]
    [array([2., 2., 2.])]
    """
    who = "get_or_compute_grads"
    _check_missing(who, loss_or_grads, params)
    params = check_params(who, params, floating=False)
    if not isinstance(loss_or_grads, (list, tuple)):
        return _compute_grads(who, loss_or_grads, params, floating=False)
    _check_length(who, loss_or_grads, params)
    for i, (grad, param) in enumerate(zip(loss_or_grads, params)):
        _check_grad(who, i, grad, param)
    return loss_or_grads


def is_concrete(value: Any) -> bool:
    """True for a number known now: a Python or NumPy real scalar (not a symbolic variable)."""
    return isinstance(value, (numbers.Real, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0)


def as_dtype(value: Any, dtype: str) -> Variable:
    """A hyperparameter as a scalar of ``dtype``: concrete numbers are rounded once, here."""
    if is_concrete(value):
        return pt.constant(np.asarray(value, dtype=dtype))
    return pt.cast(value, dtype)


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
        The value every element starts from (and :func:`reset_state` restores); None if unknown.
    pieces : tuple of Piece, optional
        For a flat buffer holding the state of several params, each param's piece by name; None
        for a variable holding one piece of state whole, under the variable's own name.
    averages : tuple of shared variables
        For :func:`apply_ema`'s shadows: the param each piece is the running average of.
    """

    initial: float | None
    pieces: tuple[Piece, ...] | None = None
    averages: tuple[Variable, ...] = ()


def new_state(value: Any, name: str, initial: float, shape: Any = None, pieces: Any = None) -> SharedVariable:
    """A shared variable of optimizer state holding ``value``, with its :class:`StateRecord`."""
    static = {} if shape is None else {"shape": shape}  # numpy scalars take no shape
    variable = pytensor.shared(value, name=name, **static)
    variable.tag.state = StateRecord(initial, None if pieces is None else tuple(pieces))
    return variable


def state_record(variable: Variable) -> StateRecord:
    """The :class:`StateRecord` of ``variable`` (initial value unknown for one made elsewhere)."""
    return getattr(variable.tag, "state", None) or StateRecord(None)


def pieces_of(variable: Variable) -> tuple[Piece, ...]:
    """The named pieces of a state variable: a flat buffer's, or the whole variable under its name."""
    return state_record(variable).pieces or (Piece(variable.name, 0, variable.get_value(borrow=True).shape),)


def state_like(param: SharedVariable, name: str, fill: float = 0.0) -> SharedVariable:
    """New state with ``param``'s dtype, shape and static type, filled with ``fill``."""
    return new_state(np.full_like(param.get_value(borrow=True), fill), name, fill, param.type.shape)


def all_finite(tensors: list[Variable]) -> Variable:
    """A boolean scalar: every element of every floating-point tensor is finite (one node)."""
    checks = [pt.all(_isfinite(x)) for x in tensors if x.dtype.startswith(("float", "complex"))]
    return pt.all(pt.stack(checks)) if checks else pt.constant(True)


def _isfinite(x: Variable) -> Variable:
    if hasattr(pt, "isfinite"):
        return pt.isfinite(x)
    return pt.invert(pt.or_(pt.isnan(x), pt.isinf(x)))  # PyTensor 2.38 has no isfinite


def l2_norm(tensors: Sequence[Variable], dtype: str | None = None) -> Variable:
    """The Euclidean norm of all the elements of ``tensors`` together (of one tensor: its norm).

    Each tensor's squares are summed in its own dtype (or in ``dtype``, cast first), the sums in
    their common dtype. The squares are those of ``abs(x)``, the same numbers: PyTensor 2.38
    rewrites ``sqrt(sqr(x))`` of a lone scalar to ``x``, sign included.
    """
    squares = [pt.sum(pt.sqr(abs(x if dtype is None else pt.cast(x, dtype)))) for x in tensors]
    return pt.sqrt(squares[0] if len(squares) == 1 else pt.add(*squares))
