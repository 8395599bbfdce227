r"""Momentum: as wrappers around any updates dictionary, and as rules built on SGD.

With :math:`\mu` the momentum, :math:`v` the velocity (zero at first) and :math:`u` the value the
wrapped updates give a parameter :math:`p`:

- heavy ball: :math:`x = \mu v + u`, then :math:`v \leftarrow x - p` and :math:`p \leftarrow x`;
- Nesterov: :math:`x = \mu v + u - p`, then :math:`v \leftarrow x` and
  :math:`p \leftarrow \mu x + u`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from pytensor.graph.basic import Variable

from updates.checks import NON_NEGATIVE, UNIT
from updates.container import Updates
from updates.engine import Elementwise, Rule, apply_rule, as_dtype, wrap_elementwise
from updates.public import awaits_input, update_rule
from updates.wrappers import masked_params

__all__ = ["apply_momentum", "apply_nesterov_momentum", "momentum", "nesterov_momentum"]


def _heavy_ball(mu, param, target, velocity):
    x = mu * velocity + target
    return x, x - param


def _nesterov(mu, param, target, velocity):
    x = mu * velocity + target - param
    return mu * x + target, x


HEAVY_BALL = Elementwise(
    "apply_momentum", lambda h, p, u, velocity: _heavy_ball(h.momentum, p, u, velocity), ("velocity",)
)
NESTEROV_STEP = Elementwise(
    "apply_nesterov_momentum", lambda h, p, u, velocity: _nesterov(h.momentum, p, u, velocity), ("velocity",)
)
MOMENTUM_RANGES = dict(momentum=UNIT)


def _momentum(dtype: str, values: dict, counter: Variable | None) -> SimpleNamespace:
    return SimpleNamespace(momentum=as_dtype(values["momentum"], dtype))


@awaits_input
def apply_momentum(
    updates: Mapping, params: list[Variable] | None = None, momentum: Any = 0.9, *, mask: Any = None
) -> Updates:
    r"""Add heavy-ball momentum to the parameters of an updates dictionary.

    .. math::

        x &= \mu v + u \\
        v &\leftarrow x - p \\
        p &\leftarrow x

    where :math:`u` is the new value ``updates`` gives parameter :math:`p`.

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}``, for example the result of :func:`sgd`. Not modified.
        Leave out (give keywords only) to get the wrapper back awaiting it, for :func:`chain`.
    params : list of shared variables, optional
        The variables to add momentum to. By default the parameters of an :class:`Updates`
        (its ``.params``), so optimizer state such as Adam's moments is left alone (Lasagne
        also wrapped the state: a deliberate fix). For a plain dictionary, every floating-point
        key, as Lasagne did (integer step counters are skipped).
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    $mask

    Returns
    -------
    Updates
        A new dictionary: the entries of ``updates`` (parameters replaced) followed by the
        velocities, one flat buffer per dtype (``apply_momentum.velocity``) updated by one
        multi-tensor node, shown per parameter by ``named_state()`` as
        ``<param>.apply_momentum.velocity`` (under :func:`per_parameter`, one shared variable
        per parameter under that name).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.apply_momentum(updates.adam((w**2).sum(), [w])).named_state())
    ['w.adam.m', 'w.adam.v', 'adam.t', 'w.apply_momentum.velocity']
    """
    params = masked_params("apply_momentum", updates, params, mask)
    hyper = dict(momentum=momentum)
    return wrap_elementwise("apply_momentum", HEAVY_BALL, updates, params, hyper, MOMENTUM_RANGES, _momentum)


@awaits_input
def apply_nesterov_momentum(
    updates: Mapping, params: list[Variable] | None = None, momentum: Any = 0.9, *, mask: Any = None
) -> Updates:
    r"""Add Nesterov momentum to the parameters of an updates dictionary.

    .. math::

        x &= \mu v + u - p \\
        v &\leftarrow x \\
        p &\leftarrow \mu x + u

    where :math:`u` is the new value ``updates`` gives parameter :math:`p` (Sutskever et al.'s
    reformulation, evaluated at the parameters rather than at the look-ahead point).

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}``, for example the result of :func:`sgd`. Not modified.
        Leave out (give keywords only) to get the wrapper back awaiting it, for :func:`chain`.
    params : list of shared variables, optional
        As in :func:`apply_momentum`.
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    $mask

    Returns
    -------
    Updates
        A new dictionary: the entries of ``updates`` (parameters replaced) followed by the
        velocities, as in :func:`apply_momentum` (``apply_nesterov_momentum.velocity``).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.apply_nesterov_momentum(updates.sgd((w**2).sum(), [w])).named_state())
    ['w.apply_nesterov_momentum.velocity']
    """
    params = masked_params("apply_nesterov_momentum", updates, params, mask)
    hyper = dict(momentum=momentum)
    return wrap_elementwise(
        "apply_nesterov_momentum", NESTEROV_STEP, updates, params, hyper, MOMENTUM_RANGES, _momentum
    )


MOMENTUM = Rule(
    "momentum",
    lambda h, p, g, velocity: _heavy_ball(h.momentum, p, p - h.learning_rate * g, velocity),
    slots=("velocity",),
    ranges=dict(learning_rate=NON_NEGATIVE, momentum=UNIT),
)
NESTEROV = Rule(
    "nesterov_momentum",
    lambda h, p, g, velocity: _nesterov(h.momentum, p, p - h.learning_rate * g, velocity),
    slots=("velocity",),
    ranges=dict(learning_rate=NON_NEGATIVE, momentum=UNIT),
)


@update_rule
def momentum(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    momentum: Any = 0.9,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""SGD with heavy-ball momentum: ``apply_momentum(sgd(...))`` in one rule.

    .. math::

        x &= \mu v + (p - \eta\, g) \\
        v &\leftarrow x - p \\
        p &\leftarrow x

    which is :math:`v \leftarrow \mu v - \eta g,\ p \leftarrow p + v` up to rounding.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3 (Lasagne has no default; PyMC's port uses 1e-3).
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.SGD(momentum=mu) keeps :math:`b \leftarrow \mu b + g` and steps by
    :math:`\eta b`: the same trajectory while :math:`\eta` is constant, different once it changes
    (here the velocity holds steps already scaled by :math:`\eta`).

    References
    ----------
    Polyak (1964). Some methods of speeding up the convergence of iteration methods.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.momentum((w**2).sum(), [w]).named_state())
    ['w.momentum.velocity']
    """
    return apply_rule(
        MOMENTUM, loss_or_grads, params, clear_nan, learning_rate=learning_rate, momentum=momentum
    )


@update_rule
def nesterov_momentum(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    momentum: Any = 0.9,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""SGD with Nesterov momentum: ``apply_nesterov_momentum(sgd(...))`` in one rule.

    .. math::

        u &= p - \eta\, g \\
        x &= \mu v + u - p \\
        v &\leftarrow x \\
        p &\leftarrow \mu x + u

    which is :math:`v \leftarrow \mu v - \eta g,\ p \leftarrow p + \mu v - \eta g` up to rounding.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3 (Lasagne has no default; PyMC's port uses 1e-3).
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.SGD(momentum=mu, nesterov=True) keeps :math:`b \leftarrow \mu b + g` and steps by
    :math:`\eta (g + \mu b)`: the same trajectory while :math:`\eta` is constant.

    References
    ----------
    Sutskever, Martens, Dahl and Hinton (2013). On the importance of initialization and momentum
    in deep learning. ICML.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.nesterov_momentum((w**2).sum(), [w]).named_state())
    ['w.nesterov_momentum.velocity']
    """
    return apply_rule(
        NESTEROV, loss_or_grads, params, clear_nan, learning_rate=learning_rate, momentum=momentum
    )
