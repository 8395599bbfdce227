r"""Norm constraints on expressions and on lists of gradients (Lasagne's formulation).

Both scale by :math:`\min(n, c) / (n + \epsilon)` for a norm :math:`n` and limit :math:`c`, so a
tensor under the limit is also shrunk slightly, by :math:`n / (n + \epsilon)`: this is Lasagne's
behaviour, kept for compatibility (torch's ``clip_grad_norm_`` and optax's ``clip_by_global_norm``
leave such tensors exactly unchanged).

:func:`total_norm_constraint` is also a gradient transform for :func:`chain`: called without the
tensors (keywords only), it returns itself awaiting them; its ``mask`` leaves some out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from updates.checks import NON_NEGATIVE, POSITIVE, check_hyperparameter, check_params, describe
from updates.engine import as_dtype
from updates.public import awaits_input, checks_keywords, select
from updates.reductions import l2_norm

__all__ = ["norm_constraint", "total_norm_constraint"]


def _check_limits(who: str, max_norm: Any, epsilon: Any) -> None:
    check_hyperparameter(who, "max_norm", max_norm, POSITIVE)
    check_hyperparameter(who, "epsilon", epsilon, NON_NEGATIVE)


def _as_float_tensor(who: str, name: str, value: Any) -> Variable:
    try:
        value = pt.as_tensor_variable(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: {name} must be a tensor, got {describe(value)}") from err
    if not value.dtype.startswith("float"):
        raise TypeError(f"{who}: {name} must be floating-point, got dtype {value.dtype}")
    return value


def _scale(norm: Variable, max_norm: Any, epsilon: Any) -> Variable:
    dtype = norm.dtype
    return pt.clip(norm, 0, as_dtype(max_norm, dtype)) / (as_dtype(epsilon, dtype) + norm)


@checks_keywords
def norm_constraint(
    tensor_var: Any, max_norm: Any, norm_axes: Sequence[int] | None = None, epsilon: Any = 1e-7
) -> Variable:
    r"""Rescale a tensor so that its norms over ``norm_axes`` are at most ``max_norm``.

    .. math::

        n &= \sqrt{\textstyle\sum_{\text{norm\_axes}} x^2} \\
        x &\leftarrow x\, \min(n, c) / (n + \epsilon)

    Parameters
    ----------
    tensor_var : TensorVariable
        The expression to constrain, typically the new value of a weight matrix in an updates
        dictionary.
    max_norm : float or scalar tensor
        :math:`c`, the largest norm allowed, > 0.
    norm_axes : int or sequence of int, optional
        The axes to take each norm over. By default: axis 0 for a matrix (one norm per column,
        i.e. per output unit of a dense layer), all axes but the first for 3-d to 5-d tensors
        (per output filter of a convolution). Other dimensionalities need ``norm_axes``.
    epsilon : float
        :math:`\epsilon`, default 1e-7.

    Returns
    -------
    TensorVariable
        The constrained expression, of the type of ``tensor_var``.

    Examples
    --------
    >>> import numpy as np, updates
    >>> updates.norm_constraint(np.array([[3.0], [4.0]]), max_norm=1.0, epsilon=0).eval()
    array([[0.6],
           [0.8]])
    """
    who = "norm_constraint"
    _check_limits(who, max_norm, epsilon)
    tensor_var = _as_float_tensor(who, "tensor_var", tensor_var)
    ndim = tensor_var.ndim
    if norm_axes is None:
        if ndim == 2:
            norm_axes = (0,)
        elif 3 <= ndim <= 5:
            norm_axes = tuple(range(1, ndim))
        else:
            raise ValueError(
                f"{who}: a {ndim}-d tensor has no default norm_axes (defaults cover 2-d to 5-d "
                "tensors); pass norm_axes, e.g. norm_axes=(0,)"
            )
    norm_axes = (norm_axes,) if isinstance(norm_axes, int) else tuple(norm_axes)
    if not norm_axes or any(not -ndim <= a < ndim for a in norm_axes):
        raise ValueError(f"{who}: norm_axes must be axes of a {ndim}-d tensor, got {norm_axes}")
    norms = pt.sqrt(pt.sum(tensor_var**2, axis=norm_axes, keepdims=True))
    return tensor_var * _scale(norms, max_norm, epsilon)


@awaits_input
def total_norm_constraint(
    tensor_vars: Sequence[Any],
    max_norm: Any,
    epsilon: Any = 1e-7,
    return_norm: bool = False,
    *,
    mask: Any = None,
    params: Any = None,
) -> list[Variable] | tuple[list[Variable], Variable]:
    r"""Rescale a list of tensors so that their joint (global) norm is at most ``max_norm``.

    .. math::

        n &= \sqrt{\textstyle\sum_i \sum x_i^2} \\
        x_i &\leftarrow x_i\, \min(n, c) / (n + \epsilon)

    Parameters
    ----------
    tensor_vars : list of TensorVariable
        Typically the gradients, from :func:`get_or_compute_grads`; the result can be passed to
        any rule in place of the loss. Leave out (give keywords only) to get the constraint back
        awaiting them, for :func:`chain`.
    max_norm : float or scalar tensor
        :math:`c`, the largest joint norm allowed, > 0.
    epsilon : float
        :math:`\epsilon`, default 1e-7.
    return_norm : bool
        Also return the joint norm :math:`n` (before scaling). Default False.
    $mask
        With a mask, :math:`n` is the joint norm of the selected tensors only.
    params : list of shared variables, optional
        The params the tensors belong to, in order: needed only by a ``mask`` that selects by
        param (a callable or a name pattern); :func:`chain` gives them.

    Returns
    -------
    list of TensorVariable, or (list of TensorVariable, TensorVariable)
        The scaled tensors, each of its input's type, and with ``return_norm`` the norm (computed
        in the widest dtype of the inputs).

    Examples
    --------
    >>> import numpy as np, updates
    >>> scaled, norm = updates.total_norm_constraint(
    ...     [np.array([3.0]), np.array([4.0])], max_norm=1.0, epsilon=0, return_norm=True)
    >>> [x.eval() for x in scaled], norm.eval()
    ([array([0.6]), array([0.8])], array(5.))
    """
    who = "total_norm_constraint"
    _check_limits(who, max_norm, epsilon)
    if not isinstance(tensor_vars, (list, tuple)):
        raise TypeError(f"{who}: tensor_vars must be a list of tensors, got {describe(tensor_vars)}")
    if not tensor_vars:
        raise ValueError(f"{who}: tensor_vars is empty; give at least one tensor")
    tensors = [_as_float_tensor(who, f"tensor_vars[{i}]", x) for i, x in enumerate(tensor_vars)]
    if params is not None and len(check_params(who, params)) != len(tensors):
        raise ValueError(
            f"{who}: got {len(tensors)} tensors for {len(params)} params; give one param per tensor"
        )
    chosen = select(who, mask, len(tensors), params)
    norm = l2_norm([x for x, keep in zip(tensors, chosen) if keep])
    scale = _scale(norm, max_norm, epsilon)
    scaled = [x * pt.cast(scale, x.dtype) if keep else x for x, keep in zip(tensors, chosen)]
    return (scaled, norm) if return_norm else scaled
