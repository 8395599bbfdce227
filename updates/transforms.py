r"""Gradient transforms: a list of gradients in, a list of gradients out, used before a rule.

    grads = updates.get_or_compute_grads(loss, params)
    grads = updates.clip_by_global_norm(grads, max_norm=1.0)
    step = updates.adam(grads, params)

or, composed, ``updates.chain(updates.clip_by_global_norm(max_norm=1.0), updates.adam())``: called
without the gradients (keywords only), every transform returns itself awaiting them, its
arguments bound, for :func:`chain`.

Unlike Lasagne's :func:`~updates.total_norm_constraint` (kept as it was, for compatibility), the
clipping transforms here leave a gradient under the limit exactly unchanged, as torch's
``clip_grad_norm_`` and optax's ``clip_by_global_norm`` do. Every transform keeps each gradient's
type (dtype and static shape): hyperparameters are cast to the gradient's dtype.

The clipping and normalizing transforms, :func:`centralize` and :func:`add_weight_decay` take a
``mask``: the gradients of the params it leaves out pass through unchanged (the same variables),
and :func:`clip_by_global_norm` and :func:`normalize_by_update_norm` take their norm over the
selected gradients only. A mask that selects by param (a callable or a
name pattern) needs the ``params`` the gradients belong to; :func:`chain` gives them.
"""

from __future__ import annotations

import string
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from updates.checks import (
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    check_hyperparameter,
    check_params,
    describe,
    is_concrete,
)
from updates.engine import as_dtype
from updates.grads import clear_nan, prepare_grads
from updates.public import awaits_input, select
from updates.reductions import l2_norm

__all__ = [
    "adaptive_grad_clip",
    "add_gradient_noise",
    "add_weight_decay",
    "centralize",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "normalize_by_update_norm",
    "zero_nans",
]


def _tensors(who: str, grads: Any) -> list[Variable]:
    """``grads`` as a non-empty list of floating-point tensors, or a clear error."""
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"{who}: grads must be a list of tensors, got {describe(grads)}")
    if not grads:
        raise ValueError(f"{who}: grads is empty; give at least one tensor")
    tensors = []
    for i, grad in enumerate(grads):
        try:
            grad = pt.as_tensor_variable(grad)
        except (TypeError, ValueError, NotImplementedError) as err:
            raise TypeError(f"{who}: grads[{i}] must be a tensor, got {describe(grad)}") from err
        if not grad.dtype.startswith("float"):
            raise TypeError(f"{who}: grads[{i}] must be floating-point, got dtype {grad.dtype}")
        tensors.append(grad)
    return tensors


def _selected(who: str, grads: Any, mask: Any, params: Any) -> tuple[list[Variable], list[bool]]:
    """The gradients as tensors, and which of them ``mask`` selects (``params`` name them)."""
    tensors = _tensors(who, grads)
    if params is not None:
        params = check_params(who, params)
        if len(params) != len(tensors):
            raise ValueError(
                f"{who}: got {len(tensors)} gradients for {len(params)} params; give one param per gradient"
            )
    return tensors, select(who, mask, len(tensors), params)


_GRADS = """\
grads : list of TensorVariable
        The gradients, e.g. from :func:`get_or_compute_grads`. Leave out (give keywords only) to
        get the transform back awaiting them, for :func:`chain`.\
"""

_PARAMS = """\
params : list of shared variables, optional
        The params the gradients belong to, in order: needed only by a ``mask`` that selects by
        param (a callable or a name pattern); :func:`chain` gives them.\
"""


def _transform(function: Callable) -> Callable:
    """:func:`~updates.public.awaits_input`, with ``$grads`` and ``$params`` in the docstring."""
    doc = string.Template(function.__doc__ or "").safe_substitute(grads=_GRADS, params=_PARAMS)
    function.__doc__ = doc
    return awaits_input(function)


@_transform
def clip_by_value(
    grads: Sequence[Any], min_value: Any, max_value: Any, *, mask: Any = None, params: Any = None
) -> list[Variable]:
    r"""Clip every gradient element into ``[min_value, max_value]``.

    .. math::

        g \leftarrow \min(\max(g, a), b)

    Parameters
    ----------
    $grads
    min_value, max_value : float or scalar tensor
        :math:`a \le b`, the bounds (torch's ``clip_grad_value_(clip_value=c)`` is
        ``a = -c, b = c``).
    $mask
    $params

    Returns
    -------
    list of TensorVariable
        The clipped gradients, each of its input's type. NaN stays NaN.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.clip_by_value([np.array([-3.0, 0.5, 2.0])], -1.0, 1.0)]
    [array([-1. ,  0.5,  1. ])]
    """
    who = "clip_by_value"
    anything = Interval()
    check_hyperparameter(who, "min_value", min_value, anything)
    check_hyperparameter(who, "max_value", max_value, anything)
    if is_concrete(min_value) and is_concrete(max_value) and float(min_value) > float(max_value):
        raise ValueError(f"{who}: min_value must be <= max_value, got {min_value!r} > {max_value!r}")
    tensors, chosen = _selected(who, grads, mask, params)
    return [
        pt.clip(g, as_dtype(min_value, g.dtype), as_dtype(max_value, g.dtype)) if keep else g
        for g, keep in zip(tensors, chosen)
    ]


def _exact_scale(grad: Variable, norm: Variable, max_norm: Any) -> Variable:
    """``grad`` unchanged where ``norm <= max_norm``, else ``grad * max_norm / norm``."""
    limit = as_dtype(max_norm, norm.dtype)
    factor = pt.cast(limit / norm, grad.dtype)
    return pt.switch(norm > limit, grad * factor, grad)


@_transform
def clip_by_norm(
    grads: Sequence[Any], max_norm: Any, *, mask: Any = None, params: Any = None
) -> list[Variable]:
    r"""Rescale each gradient whose norm exceeds ``max_norm`` to norm ``max_norm``; leave the rest.

    .. math::

        n_i = \lVert g_i \rVert_2, \qquad
        g_i \leftarrow \begin{cases} g_i & n_i \le c \\ g_i\, c / n_i & n_i > c \end{cases}

    Each tensor is clipped on its own (its norm over all its elements). A gradient under the limit
    comes back bit for bit unchanged (Lasagne's :func:`norm_constraint` shrinks it by
    :math:`n/(n + \epsilon)` and takes norms per column or filter).

    Parameters
    ----------
    $grads
    max_norm : float or scalar tensor
        :math:`c > 0`.
    $mask
    $params

    Returns
    -------
    list of TensorVariable
        The clipped gradients, each of its input's type.

    Notes
    -----
    optax's ``clip_by_block_rms`` clips by the root mean square instead of the norm.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.clip_by_norm([np.array([3.0, 4.0]), np.array([0.3, 0.4])], 1.0)]
    [array([0.6, 0.8]), array([0.3, 0.4])]
    """
    who = "clip_by_norm"
    check_hyperparameter(who, "max_norm", max_norm, POSITIVE)
    tensors, chosen = _selected(who, grads, mask, params)
    return [_exact_scale(g, l2_norm([g]), max_norm) if keep else g for g, keep in zip(tensors, chosen)]


@_transform
def clip_by_global_norm(
    grads: Sequence[Any], max_norm: Any, return_norm: bool = False, *, mask: Any = None, params: Any = None
) -> list[Variable] | tuple[list[Variable], Variable]:
    r"""Rescale all gradients together when their joint norm exceeds ``max_norm``.

    .. math::

        n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}, \qquad
        g_i \leftarrow \begin{cases} g_i & n \le c \\ g_i\, c / n & n > c \end{cases}

    Parameters
    ----------
    $grads
    max_norm : float or scalar tensor
        :math:`c > 0`.
    return_norm : bool
        Also return :math:`n` (before clipping), e.g. to log it. Default False.
    $mask
        With a mask, :math:`n` is the joint norm of the selected gradients only (optax's
        ``masked(clip_by_global_norm(c), mask)``).
    $params

    Returns
    -------
    list of TensorVariable, or (list of TensorVariable, TensorVariable)
        The clipped gradients, each of its input's type; with ``return_norm`` also the norm,
        computed in the widest dtype of the gradients.

    Notes
    -----
    optax's ``clip_by_global_norm`` computes the same. torch's ``clip_grad_norm_`` multiplies by
    :math:`\min(1, c/(n + 10^{-6}))`: the same below the limit (unchanged), and a factor smaller by
    a relative :math:`10^{-6}/n` above it. Lasagne's :func:`total_norm_constraint` also shrinks
    gradients under the limit, by :math:`n/(n + \epsilon)`. A non-finite norm (an inf or NaN in
    some gradient) turns every gradient non-finite, as in optax: see :func:`apply_if_finite`.

    References
    ----------
    Pascanu, Mikolov and Bengio (2013). On the difficulty of training recurrent neural networks.
    ICML.

    Examples
    --------
    >>> import numpy as np, updates
    >>> clipped, norm = updates.clip_by_global_norm(
    ...     [np.array([3.0]), np.array([4.0])], max_norm=1.0, return_norm=True)
    >>> [g.eval() for g in clipped], norm.eval()
    ([array([0.6]), array([0.8])], array(5.))
    """
    who = "clip_by_global_norm"
    check_hyperparameter(who, "max_norm", max_norm, POSITIVE)
    if not isinstance(return_norm, (bool, np.bool_)):
        raise TypeError(f"{who}: return_norm must be True or False, got {return_norm!r}")
    tensors, chosen = _selected(who, grads, mask, params)
    norm = l2_norm([g for g, keep in zip(tensors, chosen) if keep])
    clipped = [_exact_scale(g, norm, max_norm) if keep else g for g, keep in zip(tensors, chosen)]
    return (clipped, norm) if return_norm else clipped


@_transform
def centralize(grads: Sequence[Any], *, mask: Any = None, params: Any = None) -> list[Variable]:
    r"""Subtract from each gradient of two or more dimensions its mean over all axes but the first.

    .. math::

        g_{i\,\cdot} \leftarrow g_{i\,\cdot} - \frac{1}{m} \textstyle\sum_j g_{ij}

    for a gradient seen as rows :math:`i` (its first axis) of :math:`m` elements :math:`j` (all its
    other axes together). Scalars and vectors pass unchanged (the same variables).

    Parameters
    ----------
    $grads
    $mask
    $params

    Returns
    -------
    list of TensorVariable
        The centralized gradients, each of its input's type.

    Notes
    -----
    optax's ``centralize`` computes the same.

    References
    ----------
    Yong, Huang, Hua and Zhang (2020). Gradient Centralization: A New Optimization Technique for
    Deep Neural Networks. ECCV. arXiv:2004.01461.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.centralize([np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])])]
    [array([[-1.,  0.,  1.],
           [-1.,  0.,  1.]])]
    """
    tensors, chosen = _selected("centralize", grads, mask, params)
    return [
        g - pt.mean(g, axis=tuple(range(1, g.ndim)), keepdims=True) if keep and g.ndim > 1 else g
        for g, keep in zip(tensors, chosen)
    ]


#: The axes of each unit-wise norm by number of dimensions (optax's ``unitwise_norm``): dense
#: layers (in, out) and multi-head ones (in, heads, out) per output column, 2-d convolutions
#: (h, w, in, out) and 3-d ones (d, h, w, in, out) per output filter.
_UNIT_AXES = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}


def _unit_axes(who: str, axis: Any) -> tuple[int, ...] | None:
    """``axis`` as a tuple of ints, or None."""
    if axis is None:
        return None
    entries = axis if isinstance(axis, (list, tuple)) else (axis,)
    if not entries or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in entries
    ):
        raise TypeError(f"{who}: axis must be None, an int or a non-empty tuple of ints, got {axis!r}")
    return tuple(int(a) for a in entries)


def _unitwise_norm(who: str, x: Variable, axis: tuple[int, ...] | None, name: str) -> Variable:
    """The L2 norm of each unit of ``x`` (keeping the reduced axes, of length 1), as optax's
    ``unitwise_norm`` takes it: over ``axis``; else over everything for a tensor with at most one
    axis longer than 1 (a scalar, a vector, a (1, n) matrix), else over :data:`_UNIT_AXES`."""
    squares = pt.sqr(abs(x))
    if axis is not None:
        distinct = {a % max(x.ndim, 1) for a in axis}
        if any(not -x.ndim <= a < x.ndim for a in axis) or len(distinct) < len(axis):
            raise ValueError(f"{who}: axis {axis} does not fit {name}, of {x.ndim} dimensions")
        return pt.sqrt(pt.sum(squares, axis=axis, keepdims=True))
    whole = pt.sqrt(pt.sum(squares, axis=tuple(range(x.ndim)), keepdims=True))
    static = x.type.shape
    long_axes = sum(1 for n in static if n is not None and n != 1)
    if x.ndim <= 1 or (None not in static and long_axes <= 1):
        return whole
    if x.ndim not in _UNIT_AXES:
        raise ValueError(
            f"{who}: {name} has {x.ndim} dimensions; the default units cover 1 to 5: give axis=..."
        )
    unit = pt.sqrt(pt.sum(squares, axis=_UNIT_AXES[x.ndim], keepdims=True))
    if long_axes >= 2:
        return unit
    # The shape is known only at run time: which of the two optax takes depends on it.
    return pt.switch(pt.le(pt.sum(pt.neq(pt.as_tensor_variable(x.shape), 1)), 1), whole, unit)


@_transform
def adaptive_grad_clip(
    grads: Sequence[Any],
    params: Sequence[Any],
    clipping: Any,
    eps: Any = 1e-3,
    axis: int | Sequence[int] | None = None,
    *,
    mask: Any = None,
) -> list[Variable]:
    r"""Clip each unit of each gradient to at most ``clipping`` times the norm of its param's unit
    (adaptive gradient clipping, Brock et al. 2021).

    .. math::

        c_u = \lambda \max(\lVert p_u \rVert_2, \epsilon), \qquad
        g_u \leftarrow \begin{cases} g_u & \lVert g_u \rVert_2 < c_u \\
        g_u\, c_u / \max(\lVert g_u \rVert_2, 10^{-6}) & \text{otherwise} \end{cases}

    for every unit :math:`u` of a gradient :math:`g` and its param :math:`p`. The units are the
    slices along ``axis``; by default (optax's ``unitwise_norm``) the whole tensor for a scalar or
    a vector (or any tensor with at most one axis longer than 1), each column (norm over axis 0)
    for 2-d and 3-d tensors (dense layers (in, out), multi-head (in, heads, out)), each output
    filter for 4-d (h, w, in, out: axes 0, 1, 2) and 5-d tensors (axes 0 to 3).

    Parameters
    ----------
    grads : list of TensorVariable
        One gradient per parameter. Leave out ``grads`` and ``params`` (give keywords only) to get
        the transform back awaiting them, for :func:`chain`.
    params : list of shared variables
        The parameters, in the order of ``grads``.
    clipping : float or scalar tensor
        :math:`\lambda > 0`, the largest ratio of a unit's gradient norm to its param norm
        (the paper uses 0.01 to 0.16 with large batches).
    eps : float or scalar tensor
        :math:`\epsilon \ge 0`, the smallest param norm counted, default 1e-3: it keeps
        zero-initialized params (biases) from having their gradients clipped to zero.
    axis : int or tuple of int, optional
        The axes each unit-wise norm is taken over (the same for every tensor); needed for
        tensors of more than 5 dimensions. Default None: by dimensions, as above.
    $mask

    Returns
    -------
    list of TensorVariable
        The clipped gradients, each of its parameter's dtype.

    Notes
    -----
    optax's ``adaptive_grad_clip`` computes the same, in the same order. Where a tensor's shape
    is not known when the graph is built (a shared variable's type rarely knows it), whether it
    has at most one axis longer than 1 is decided when the step runs.

    References
    ----------
    Brock, De, Smith and Simonyan (2021). High-Performance Large-Scale Image Recognition Without
    Normalization. ICML. arXiv:2102.06171.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([[3.0, 0.0], [4.0, 1.0]]), name="w")
    >>> [g.eval() for g in updates.adaptive_grad_clip([np.array([[0.0, 1.0], [1.0, 0.0]])], [w], 0.1)]
    [array([[0. , 0.1],
           [0.5, 0. ]])]
    """
    who = "adaptive_grad_clip"
    check_hyperparameter(who, "clipping", clipping, POSITIVE)
    check_hyperparameter(who, "eps", eps, NON_NEGATIVE)
    axes = _unit_axes(who, axis)
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"{who}: grads must be a list of tensors, got {describe(grads)}")
    params, grads = prepare_grads(who, list(grads), params)
    chosen = select(who, mask, len(params), params)
    clipped = []
    for i, (p, g, keep) in enumerate(zip(params, grads, chosen)):
        if not keep:
            clipped.append(g)
            continue
        g_norm = _unitwise_norm(who, g, axes, f"grads[{i}]")
        p_norm = _unitwise_norm(who, p, axes, f"params[{i}]")
        limit = as_dtype(clipping, p.dtype) * pt.maximum(p_norm, as_dtype(eps, p.dtype))
        factor = limit / pt.maximum(g_norm, as_dtype(1e-6, g_norm.dtype))
        clipped.append(pt.switch(g_norm < limit, g, g * pt.cast(factor, g.dtype)))
    return clipped


@_transform
def clip_by_block_rms(
    grads: Sequence[Any], threshold: Any, *, mask: Any = None, params: Any = None
) -> list[Variable]:
    r"""Rescale each gradient whose root mean square exceeds ``threshold`` to RMS ``threshold``.

    .. math::

        r_i = \sqrt{\tfrac{1}{n_i} \textstyle\sum g_i^2}, \qquad
        g_i \leftarrow \frac{g_i}{\max(1,\ r_i / c)}

    over the :math:`n_i` elements of each tensor :math:`g_i` (a "block": a weight vector or
    matrix) on its own. A gradient under the limit is divided by exactly 1: unchanged.

    Parameters
    ----------
    $grads
    threshold : float or scalar tensor
        :math:`c > 0`, the largest RMS allowed.
    $mask
    $params

    Returns
    -------
    list of TensorVariable
        The clipped gradients, each of its input's type.

    Notes
    -----
    optax's ``clip_by_block_rms`` computes the same. :func:`clip_by_norm` clips by the norm
    :math:`\sqrt{n_i}\, r_i` instead.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.clip_by_block_rms([np.array([3.0, 4.0, 0.0, 0.0])], 1.0)]
    [array([1.2, 1.6, 0. , 0. ])]
    """
    who = "clip_by_block_rms"
    check_hyperparameter(who, "threshold", threshold, POSITIVE)
    tensors, chosen = _selected(who, grads, mask, params)
    clipped = []
    for g, keep in zip(tensors, chosen):
        if keep:
            rms = pt.sqrt(pt.mean(pt.sqr(abs(g))))
            g = g / pt.maximum(as_dtype(1.0, g.dtype), rms / as_dtype(threshold, g.dtype))
        clipped.append(g)
    return clipped


@_transform
def normalize_by_update_norm(
    grads: Sequence[Any], scale_factor: Any = 1.0, eps: Any = 1e-6, *, mask: Any = None, params: Any = None
) -> list[Variable]:
    r"""Divide all gradients by their joint norm (plus ``eps``), times ``scale_factor``.

    .. math::

        n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}, \qquad
        g_i \leftarrow \frac{g_i}{(n + \epsilon) / s}

    so that the gradients together have norm :math:`|s|\, n / (n + \epsilon)`, just under
    :math:`|s|`.

    Parameters
    ----------
    $grads
    scale_factor : float or scalar tensor
        :math:`s \ne 0`, the norm to give the gradients, default 1.0 (negative flips them:
        ``scale_factor=-learning_rate`` makes a normalized descent step of its own).
    eps : float or scalar tensor
        :math:`\epsilon \ge 0`, default 1e-6: keeps zero gradients from dividing by zero.
    $mask
        With a mask, :math:`n` is the joint norm of the selected gradients only.
    $params

    Returns
    -------
    list of TensorVariable
        The normalized gradients, each of its input's type; :math:`n` is computed in the widest
        dtype of the gradients.

    Notes
    -----
    optax's ``normalize_by_update_norm`` computes the same, in the same order.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.normalize_by_update_norm(
    ...     [np.array([3.0]), np.array([4.0])], scale_factor=2.0, eps=0.0)]
    [array([1.2]), array([1.6])]
    """
    who = "normalize_by_update_norm"
    check_hyperparameter(who, "scale_factor", scale_factor, Interval())
    if is_concrete(scale_factor) and float(scale_factor) == 0.0:
        raise ValueError(f"{who}: scale_factor must be nonzero, got {scale_factor!r}")
    check_hyperparameter(who, "eps", eps, NON_NEGATIVE)
    tensors, chosen = _selected(who, grads, mask, params)
    norm = l2_norm([g for g, keep in zip(tensors, chosen) if keep])
    divisor = (norm + as_dtype(eps, norm.dtype)) / as_dtype(scale_factor, norm.dtype)
    return [g / pt.cast(divisor, g.dtype) if keep else g for g, keep in zip(tensors, chosen)]


@_transform
def add_weight_decay(
    grads: Sequence[Any], params: Sequence[Any], weight_decay: Any = 1e-4, *, mask: Any = None
) -> list[Variable]:
    r"""Add L2 (coupled) weight decay to the gradients: the gradient of :math:`\lambda \lVert p\rVert^2 / 2`.

    .. math::

        g \leftarrow g + \lambda\, p

    The rule then sees the decay as part of the gradient (Adam divides it by :math:`\sqrt{v}`).
    For decoupled weight decay (AdamW), wrap the rule's updates with :func:`apply_weight_decay`.

    Parameters
    ----------
    grads : list of TensorVariable
        One gradient per parameter. Leave out ``grads`` and ``params`` (give keywords only) to get
        the transform back awaiting them, for :func:`chain`.
    params : list of shared variables
        The parameters, in the order of ``grads``.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, default 1e-4.
    $mask
        Biases and norms are usually left out: ``mask=lambda p: p.ndim > 1``.

    Returns
    -------
    list of TensorVariable
        The gradients with the decay added, each of its parameter's dtype.

    Notes
    -----
    torch.optim's ``weight_decay=`` argument of SGD, Adam, RMSprop, Adagrad (not AdamW) and optax's
    ``add_decayed_weights`` placed before the rule compute the same.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0, -2.0]), name="w")
    >>> [g.eval() for g in updates.add_weight_decay([np.zeros(2)], [w], weight_decay=0.5)]
    [array([ 0.5, -1. ])]
    >>> b = pytensor.shared(np.array([3.0]), name="b")
    >>> [g.eval() for g in updates.add_weight_decay(
    ...     [np.zeros(2), np.zeros(1)], [w, b], weight_decay=0.5, mask=lambda p: p.name != "b")]
    [array([ 0.5, -1. ]), array([0.])]
    """
    who = "add_weight_decay"
    check_hyperparameter(who, "weight_decay", weight_decay, NON_NEGATIVE)
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"{who}: grads must be a list of tensors, got {describe(grads)}")
    params, grads = prepare_grads(who, list(grads), params)
    chosen = select(who, mask, len(params), params)
    return [
        g + as_dtype(weight_decay, p.dtype) * p if keep else g for p, g, keep in zip(params, grads, chosen)
    ]


@_transform
def zero_nans(grads: Sequence[Any]) -> list[Variable]:
    """Replace the NaN entries of every gradient by 0 (infinities are left alone).

    The list form of every rule's ``clear_nan=True`` (optax's ``zero_nans``): a NaN element then
    acts exactly as a zero gradient.

    Parameters
    ----------
    $grads

    Returns
    -------
    list of TensorVariable
        The gradients without NaN, each of its input's type.

    Examples
    --------
    >>> import numpy as np, updates
    >>> [g.eval() for g in updates.zero_nans([np.array([1.0, np.nan, np.inf])])]
    [array([ 1.,  0., inf])]
    """
    return [clear_nan(g) for g in _tensors("zero_nans", grads)]


def _normal(rng: Variable, like: Variable) -> tuple[Variable, Variable]:
    """Standard normal draws shaped and typed like ``like``, and the generator's next state."""
    try:  # PyTensor 3: the next state is returned on request
        return pt.random.normal(0, 1, size=like.shape, rng=rng, dtype=like.dtype, return_next_rng=True)
    except TypeError:  # PyTensor 2.38
        draw = pt.random.normal(0, 1, size=like.shape, rng=rng, dtype=like.dtype)
        return draw.owner.outputs[0], draw


class NoisyGradients(list):
    """The gradients :func:`add_gradient_noise` returns, with the state that draws their noise.

    A list of the noisy gradients, with ``counter`` (the int64 number of calls so far) and
    ``generator`` (the random generator), both shared variables with a ``default_update``.
    """

    def __init__(self, grads: Iterable[Variable], counter: Variable, generator: Variable) -> None:
        super().__init__(grads)
        self.counter = counter
        self.generator = generator


@_transform
def add_gradient_noise(
    grads: Sequence[Any], eta: Any = 0.01, gamma: Any = 0.55, seed: int | None = None
) -> NoisyGradients:
    r"""Add annealed Gaussian noise to the gradients (Neelakantan et al. 2015).

    .. math::

        \sigma_t^2 = \frac{\eta}{(1 + t)^{\gamma}}, \qquad g \leftarrow g + \mathcal{N}(0, \sigma_t^2)

    with :math:`t` the number of calls of the compiled function so far (0 on the first), drawn
    independently for every element.

    Parameters
    ----------
    $grads
    eta : float
        :math:`\eta > 0`, the initial variance, default 0.01 (the paper tries 0.01, 0.3 and 1.0).
    gamma : float
        :math:`\gamma \ge 0`, the annealing exponent, default 0.55 (the paper's value).
    seed : int, optional
        Seed of the random generator, for reproducible noise. Default: fresh entropy.

    Returns
    -------
    NoisyGradients
        A list of the noisy gradients, each of its input's type, with the ``counter`` and
        ``generator`` that draw the noise.

    Notes
    -----
    The step count and the random generator are shared variables with a ``default_update``
    (``pytensor.function`` advances them at every call without being told): they are reachable as
    ``noisy.counter`` and ``noisy.generator``, but are not part of any
    :class:`Updates`, so :func:`save_state` does not save them. Compile each noisy gradient into one
    function only (two functions would advance the same counter twice). They advance on every
    call, also on one that :func:`apply_if_finite` skips. optax's ``add_noise`` computes the same
    variance.

    References
    ----------
    Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach and Martens (2015). Adding gradient noise
    improves learning for very deep networks. arXiv:1511.06807.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> noisy = updates.add_gradient_noise([np.zeros(1000)], eta=1.0, seed=0)
    >>> f = pytensor.function([], noisy[0])
    >>> float(np.round(f().var(), 1)), int(noisy.counter.get_value())
    (1.0, 1)
    """
    who = "add_gradient_noise"
    check_hyperparameter(who, "eta", eta, POSITIVE)
    check_hyperparameter(who, "gamma", gamma, NON_NEGATIVE)
    Interval(integer=True, optional=True).check(who, "seed", seed)
    tensors = _tensors(who, grads)
    counter = pytensor.shared(np.int64(0), name=f"{who}.t")
    generator = pytensor.shared(np.random.default_rng(seed), name=f"{who}.rng")
    noisy, rng = [], generator
    for g in tensors:
        t = pt.cast(counter, g.dtype)
        std = pt.sqrt(as_dtype(eta, g.dtype) / (1 + t) ** as_dtype(gamma, g.dtype))
        rng, draw = _normal(rng, g)
        noisy.append(g + std * draw)
    with warnings.catch_warnings():  # PyTensor 3 deprecates default_update, but still applies it
        warnings.simplefilter("ignore", DeprecationWarning)
        counter.default_update = counter + 1
        generator.default_update = rng
    return NoisyGradients(noisy, counter, generator)
