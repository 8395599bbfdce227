"""Gradients: the gate every rule goes through (validate params, compute or check gradients),
and what is computed on gradients everywhere: clearing NaN, finiteness, the global norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from updates.checks import ArgumentError, check_params, describe, which
from updates.public import checks_keywords

try:  # PyTensor >= 2.32 (moved, the old place warns)
    from pytensor.graph.traversal import ancestors
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import ancestors

__all__ = ["get_or_compute_grads"]


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
    _check_value_shape(who, i, grad, param)
    if not grad.dtype.startswith("float"):
        raise TypeError(
            f"{who}: the gradient loss_or_grads[{i}] has dtype {grad.dtype}, expected a "
            f"floating-point dtype like {name} ({param.dtype})"
        )
    return pt.cast(grad, param.dtype)


def _check_value_shape(who: str, i: int, grad: Variable, param: SharedVariable) -> None:
    """Raise if a dimension of ``grad`` known statically differs from the shape of ``param``'s
    current value: a shared variable's type rarely knows its shape, its value always does.
    Dimensions the gradient does not know are left to the run."""
    shape = np.shape(param.get_value(borrow=True))
    if any(g is not None and g != p for g, p in zip(grad.type.shape, shape)):
        raise ValueError(
            f"{who}: the gradient loss_or_grads[{i}] has static shape {grad.type.shape}, which does "
            f"not match the shape {shape} of the value of {which(param, i)}"
        )


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


def loss_of(loss_or_grads: Any) -> Variable | None:
    """The scalar loss given as ``loss_or_grads`` as a tensor, or None when it is a list of
    gradients."""
    return None if isinstance(loss_or_grads, (list, tuple)) else pt.as_tensor_variable(loss_or_grads)


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
        match the params in number, shape or dtype. A gradient's shape is checked where it is
        known statically, against the shape of its param's current value (a shared variable's
        type rarely knows it); a dimension the gradient does not know is left to the run.

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
