r"""MoMo (Schaipp, Ohana, Eickenberg, Defazio and Gower 2023): momentum with a Polyak-type step size.

MoMo keeps, besides the momentum of the gradients, two scalars averaged the same way: the loss
values :math:`\bar f` and the inner products of the gradients with the params :math:`\gamma`. With
them and a lower bound :math:`f^\star` of the loss it builds a model of the loss, and steps to its
minimum, or by the learning rate :math:`\eta` if that is shorter. The step size needs the loss
value and sums over *every* param (the momentum's squared norm and its inner product with the
params): the rules give the engine (:class:`~updates.engine.Rule`) the elementwise terms of
those sums (``sums``, summed in one node over every param) and what it makes of them
(``reduce``), as :func:`~updates.polyak_sgd` does; the scalar loss given to the rule is
differentiated for the gradients and its value computed in the same compiled step.
:math:`\bar f`, :math:`\gamma` and the lower bound are carried scalars (``momo.barf``,
``momo.gamma``, ``momo.lb``). The rules compute what ``optax.contrib.momo`` and
``optax.contrib.momo_adam`` compute (optax 0.2.8); the tests compare params and every piece of
state with optax live.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, UNIT
from updates.container import Updates
from updates.engine import Rule, apply_rule, first_step
from updates.grads import prepare_grads
from updates.public import update_rule
from updates.rules import ADAM_RANGES

__all__ = ["momo", "momo_adam"]

# optax's test of a vanishing denominator, jnp.finfo(float).eps, whatever the params' dtype.
_TINY = float(np.finfo(float).eps)
_CARRY = (("barf", 0.0), ("gamma", 0.0), ("lb", 0.0))


def _with_loss(who: str, rule: Rule, loss_or_grads: Any, params: Any, clear_nan: bool, **hyper: Any):
    """The rule's updates for the scalar loss ``loss_or_grads`` (its value is part of the step);
    only the checks without loss and params; a ``TypeError`` for a list of gradients."""
    checked = apply_rule(rule, None, None, clear_nan, **hyper)
    if loss_or_grads is None and params is None:
        return checked
    if loss_or_grads is None or isinstance(loss_or_grads, (list, tuple)):
        prepare_grads(who, loss_or_grads, params)  # the params' and arguments' errors first
        raise TypeError(
            f"{who}: needs the scalar loss (its step size is computed from its value f(x)); "
            "got a list of gradients"
        )
    loss = pt.as_tensor_variable(loss_or_grads)
    return apply_rule(rule, loss, params, clear_nan, loss=loss, **hyper)


def _step_size(h, adapt: bool, barf, gamma, iprod, norm, bc1=1):
    r"""The step size :math:`\tau` and the new lower bound, optax's order of operations.

    ``bc1`` is MoMo-Adam's bias correction :math:`1 - \beta_1^t` (1 for MoMo). The lower bound
    before this step is the carried ``h.lb`` (0 before the first step: ``lower_bound`` then).
    """
    decay = 1 + h.learning_rate * h.weight_decay
    lb = pt.switch(h.first > 0, h.lower_bound, h.lb) if adapt else h.lower_bound
    if adapt:
        cap = decay * (barf - gamma) + iprod
        lb = pt.switch(cap < decay * bc1 * lb, pt.maximum(cap / (2 * bc1 * decay), h.lower_bound), lb)
    t1 = pt.maximum(decay * (barf - bc1 * lb - gamma) + iprod, 0) / norm
    t1 = pt.switch(norm <= _TINY, pt.zeros_like(t1), t1)
    tau = pt.minimum(h.learning_rate / bc1, t1)
    if adapt:
        lb = pt.maximum(((barf + iprod - gamma) - tau * norm / 2) / bc1, h.lower_bound)
    return tau, lb


# -- MoMo ----------------------------------------------------------------------------------------


def _momo_per_step(h, t, step):
    r"""The averaging weight :math:`\beta_t`: 0 on the first step (the averages start at the first
    loss, gradient and inner product), :math:`\beta` after."""
    flags = first_step(h, t, step)
    return dict(flags, beta_t=(1 - flags["first"]) * h.beta)


def _momo_moment(h, grad, m):
    return h.beta_t * m + (1 - h.beta_t) * grad


def _momo_sums(h, param, grad, m):
    r"""The terms of :math:`\langle g, p\rangle`, :math:`\|m\|^2` and :math:`\langle m, p\rangle`."""
    m = _momo_moment(h, grad, m)
    return grad * param, pt.sqr(m), m * param


def _momo_reduce(adapt: bool):
    def reduce(h, totals):
        r""":math:`\bar f` and :math:`\gamma`, then from the sums the step size :math:`\tau` and
        the lower bound."""
        inner, norm, iprod = totals
        barf = h.beta_t * h.barf + (1 - h.beta_t) * h.loss
        gamma = h.beta_t * h.gamma + (1 - h.beta_t) * inner
        tau, lb = _step_size(h, adapt, barf, gamma, iprod, norm)
        return dict(barf=barf, gamma=gamma, lb=lb, tau=tau)

    return reduce


def _momo(h, param, grad, m):
    m = _momo_moment(h, grad, m)
    shrink = h.learning_rate * h.weight_decay / (1 + h.learning_rate * h.weight_decay)
    return param - shrink * param - h.tau * m, m


MOMO = {
    adapt: Rule(
        "momo",
        _momo,
        slots=("m",),
        per_step=_momo_per_step,
        carry=_CARRY,
        sums=_momo_sums,
        reduce=_momo_reduce(adapt),
        ranges=dict(learning_rate=NON_NEGATIVE, beta=UNIT, weight_decay=NON_NEGATIVE),
    )
    for adapt in (False, True)
}


@update_rule
def momo(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    beta: Any = 0.9,
    lower_bound: Any = 0.0,
    weight_decay: Any = 0.0,
    adapt_lower_bound: bool = False,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""MoMo: SGD with momentum and a Polyak-type step size from the loss value.

    With :math:`f` the loss at the params before the step, :math:`f^\star` a lower bound of the
    loss, :math:`\beta_t = 0` on the first step and :math:`\beta` after, and
    :math:`\delta = 1 + \eta\lambda`:

    .. math::

        \bar f &\leftarrow \beta_t \bar f + (1 - \beta_t)\, f \\
        m &\leftarrow \beta_t m + (1 - \beta_t)\, g \\
        \gamma &\leftarrow \beta_t \gamma + (1 - \beta_t) \langle g, p \rangle \\
        \tau &= \min\left(\eta,\ \frac{\max(\delta(\bar f - f^\star - \gamma)
            + \langle m, p \rangle,\ 0)}{\|m\|^2}\right) \\
        p &\leftarrow p - \frac{\eta\lambda}{\delta}\, p - \tau m

    with :math:`\tau = 0` where :math:`\|m\|^2` is at most 2.2e-16 (float64's machine epsilon, as
    optax); inner products and norms run over every param together. With
    ``adapt_lower_bound=True``, :math:`f^\star` is estimated on the fly from ``lower_bound``:
    with :math:`c = \delta(\bar f - \gamma) + \langle m, p\rangle`, before the step
    :math:`f^\star \leftarrow \max(c / 2\delta, f^\star_0)` where :math:`c < \delta f^\star`,
    and after it :math:`f^\star \leftarrow \max(\bar f + \langle m, p\rangle - \gamma -
    \tau\|m\|^2/2,\ f^\star_0)`.

    The rule needs the loss value: give it the scalar loss (it computes the gradients and
    builds :math:`f` into the same compiled step); gradients alone are refused.

    Parameters
    ----------
    $parameters
        MoMo needs the loss value: given a list of gradients it raises ``TypeError``.
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, the largest step size, default 1.0 (MoMo needs little tuning of it;
        the paper recommends large values).
    beta : float or scalar tensor
        :math:`\beta`, the decay of the averages, in [0, 1), default 0.9.
    lower_bound : float or scalar tensor
        :math:`f^\star_0`, a lower bound of the loss, default 0.0 (right for most losses).
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, default 0.
    adapt_lower_bound : bool
        Estimate the lower bound on the fly, starting from ``lower_bound`` (for losses whose
        minimum is far above any known bound), default False.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.momo`` with the same defaults and argument names, step for step, params and
    state (optax's ``exp_avg`` is ``<param>.momo.m``; its ``barf``, ``gamma`` and ``lb`` are
    the carried scalars ``momo.barf``, ``momo.gamma``, ``momo.lb``): where optax's update takes
    ``value=``, this rule takes the scalar loss and computes its value in the same step. As in
    optax, a schedule is evaluated at optax's count, :math:`t - 1`, and the threshold 2.2e-16
    does not depend on the dtype. ``momo.lb`` reads 0 until the first step (optax's state starts
    at ``lower_bound``; the first step starts from ``lower_bound`` either way) and is only
    updated with ``adapt_lower_bound``. torch.optim has no MoMo.

    References
    ----------
    Schaipp, Ohana, Eickenberg, Defazio and Gower (2024). MoMo: momentum models for adaptive
    learning rates. ICML. arXiv:2305.07583.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0, 2.0, 3.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.momo((w**2).sum(), [w]))
    >>> _ = step()
    >>> w.get_value()
    array([0.5, 1. , 1.5])
    """
    if not isinstance(adapt_lower_bound, (bool, np.bool_)):
        raise TypeError(f"momo: adapt_lower_bound must be True or False, got {adapt_lower_bound!r}")
    return _with_loss(
        "momo",
        MOMO[bool(adapt_lower_bound)],
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta=beta,
        lower_bound=lower_bound,
        weight_decay=weight_decay,
    )


# -- MoMo-Adam -----------------------------------------------------------------------------------


def _momo_adam_per_step(h, t, step):
    return dict(first_step(h, t, step), bc1=1 - h.beta1**t, bc2=1 - h.beta2**t)


def _momo_adam_moments(h, grad, m, v):
    m = h.beta1 * m + (1 - h.beta1) * grad
    v = h.beta2 * v + (1 - h.beta2) * pt.sqr(grad)
    return m, v, h.epsilon + pt.sqrt(v / h.bc2)


def _momo_adam_sums(h, param, grad, m, v):
    r"""The terms of :math:`\langle g, p\rangle`, :math:`\langle m, m / D\rangle` and
    :math:`\langle m, p\rangle`."""
    m, v, d = _momo_adam_moments(h, grad, m, v)
    return grad * param, m * (m / d), m * param


def _momo_adam_reduce(adapt: bool):
    def reduce(h, totals):
        r""":math:`\bar f` and :math:`\gamma`, then from the sums :math:`\tau` and the lower bound."""
        inner, norm, iprod = totals
        barf = h.beta1 * h.barf + (1 - h.beta1) * h.loss
        gamma = h.beta1 * h.gamma + (1 - h.beta1) * inner
        tau, lb = _step_size(h, adapt, barf, gamma, iprod, norm, h.bc1)
        return dict(barf=barf, gamma=gamma, lb=lb, tau=tau)

    return reduce


def _momo_adam(h, param, grad, m, v):
    m, v, d = _momo_adam_moments(h, grad, m, v)
    shrink = h.learning_rate * h.weight_decay / (1 + h.learning_rate * h.weight_decay)
    return param - shrink * param - h.tau * m / d, m, v


MOMO_ADAM = {
    adapt: Rule(
        "momo_adam",
        _momo_adam,
        slots=("m", "v"),
        per_step=_momo_adam_per_step,
        carry=_CARRY,
        sums=_momo_adam_sums,
        reduce=_momo_adam_reduce(adapt),
        ranges=dict(ADAM_RANGES, weight_decay=NON_NEGATIVE),
    )
    for adapt in (False, True)
}


@update_rule
def momo_adam(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    lower_bound: Any = 0.0,
    weight_decay: Any = 0.0,
    adapt_lower_bound: bool = False,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""MoMo-Adam: Adam(W) with a Polyak-type step size from the loss value.

    With :math:`f` the loss at the params before the step, :math:`f^\star` a lower bound of the
    loss, :math:`b_1 = 1 - \beta_1^t` and :math:`\delta = 1 + \eta\lambda`:

    .. math::

        \bar f &\leftarrow \beta_1 \bar f + (1 - \beta_1)\, f \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        \gamma &\leftarrow \beta_1 \gamma + (1 - \beta_1) \langle g, p \rangle \\
        D &= \epsilon + \sqrt{v / (1 - \beta_2^t)} \\
        \tau &= \min\left(\frac{\eta}{b_1},\ \frac{\max(\delta(\bar f - b_1 f^\star - \gamma)
            + \langle m, p \rangle,\ 0)}{\langle m, m / D\rangle}\right) \\
        p &\leftarrow p - \frac{\eta\lambda}{\delta}\, p - \tau\, m / D

    with :math:`\tau = 0` where :math:`\langle m, m/D\rangle` is at most 2.2e-16 (as optax);
    inner products run over every param together. With ``adapt_lower_bound=True``,
    :math:`f^\star` is estimated on the fly from ``lower_bound``: with :math:`c = \delta(\bar f -
    \gamma) + \langle m, p\rangle`, before the step :math:`f^\star \leftarrow \max(c / (2 b_1
    \delta), f^\star_0)` where :math:`c < \delta b_1 f^\star`, and after it :math:`f^\star
    \leftarrow \max((\bar f + \langle m, p\rangle - \gamma - \tau\langle m, m/D\rangle / 2) /
    b_1,\ f^\star_0)`.

    The rule needs the loss value: give it the scalar loss (it computes the gradients and
    builds :math:`f` into the same compiled step); gradients alone are refused.

    Parameters
    ----------
    $parameters
        MoMo-Adam needs the loss value: given a list of gradients it raises ``TypeError``.
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, the largest step size (before bias correction), default 1e-2.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root, default 1e-8.
    lower_bound : float or scalar tensor
        :math:`f^\star_0`, a lower bound of the loss, default 0.0 (right for most losses).
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled as in AdamW, default 0.
    adapt_lower_bound : bool
        Estimate the lower bound on the fly, starting from ``lower_bound``, default False.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.momo_adam`` with the same defaults (``b1``, ``b2``, ``eps`` are ``beta1``,
    ``beta2``, ``epsilon``), step for step, params and state (optax's ``exp_avg`` and
    ``exp_avg_sq`` are ``<param>.momo_adam.m`` and ``.v``; ``barf``, ``gamma`` and ``lb`` the
    carried scalars ``momo_adam.barf``, ``.gamma``, ``.lb``): where optax's update takes
    ``value=``, this rule takes the scalar loss and computes its value in the same step. Unlike
    :func:`momo`, the averages start from zero (and are bias-corrected through :math:`b_1`). As in
    optax, a schedule is evaluated at optax's count, :math:`t - 1`. ``momo_adam.lb`` reads 0
    until the first step (optax's starts at ``lower_bound``; the first step starts from
    ``lower_bound`` either way). torch.optim has no MoMo-Adam.

    References
    ----------
    Schaipp, Ohana, Eickenberg, Defazio and Gower (2024). MoMo: momentum models for adaptive
    learning rates. ICML. arXiv:2305.07583.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.momo_adam((w**2).sum(), [w]).named_state())  # doctest: +NORMALIZE_WHITESPACE
    ['momo_adam.barf', 'momo_adam.gamma', 'momo_adam.lb', 'w.momo_adam.m', 'w.momo_adam.v',
     'momo_adam.t']
    """
    if not isinstance(adapt_lower_bound, (bool, np.bool_)):
        raise TypeError(f"momo_adam: adapt_lower_bound must be True or False, got {adapt_lower_bound!r}")
    return _with_loss(
        "momo_adam",
        MOMO_ADAM[bool(adapt_lower_bound)],
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        lower_bound=lower_bound,
        weight_decay=weight_decay,
    )
