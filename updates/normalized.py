r"""Rules normalized per tensor or by the gradient before: :func:`novograd`, :func:`fromage`,
:func:`optimistic_gradient_descent` and :func:`optimistic_adam`, as optax 0.2.8 computes them.

Same conventions as :mod:`updates.rules`: :math:`g` the gradient, :math:`\eta` the learning rate,
:math:`t` the step count (1 on the first step). :func:`novograd` and :func:`fromage` need the norm
of each whole tensor, so they are built per parameter (:func:`novograd`'s second moment is one
scalar per tensor, a slot of shape ``()``); the optimistic rules are elementwise and keep the
previous step's gradient (or Adam direction) as the slot ``prev``. Each is compared with optax
live, params and state, in ``tests/test_optax.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE
from updates.container import Updates
from updates.engine import Rule, apply_rule, first_step
from updates.public import update_rule
from updates.reductions import l2_norm
from updates.rules import ADAM_RANGES

__all__ = ["novograd", "fromage", "optimistic_gradient_descent", "optimistic_adam"]


# -- NovoGrad ------------------------------------------------------------------------------------


def _novograd_slots(shape):
    """m like the param; v one scalar per tensor."""
    return ("m", tuple(shape)), ("v", ())


def _novograd(h, param, grad, m, v):
    squared_norm = pt.sqr(l2_norm([grad]))
    first = h.first > 0
    v = pt.switch(first, squared_norm, h.beta2 * v + (1 - h.beta2) * squared_norm)
    u = grad / (pt.sqrt(v + h.epsilon_root) + h.epsilon) + h.weight_decay * param
    m = pt.switch(first, u, h.beta1 * m + u)
    return param - h.learning_rate * m, m, v


NOVOGRAD = Rule(
    "novograd",
    _novograd,
    slots=("m", "v"),
    per_step=first_step,
    per_tensor=True,
    shaped_slots=_novograd_slots,
    ranges=dict(ADAM_RANGES, epsilon_root=NON_NEGATIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def novograd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.25,
    epsilon: Any = 1e-6,
    epsilon_root: Any = 0.0,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""NovoGrad: momentum of gradients normalized by a per-tensor second moment of their norm.

    With :math:`\lVert g \rVert` the norm of each whole tensor's gradient:

    .. math::

        v &\leftarrow \beta_2 v + (1 - \beta_2)\, \lVert g \rVert^2
            \quad (v \leftarrow \lVert g \rVert^2 \text{ on the first step}) \\
        u &= \frac{g}{\sqrt{v + \epsilon_{\mathrm{root}}} + \epsilon} + \lambda p \\
        m &\leftarrow \beta_1 m + u \quad (m \leftarrow u \text{ on the first step}) \\
        p &\leftarrow p - \eta\, m

    :math:`v` is one scalar per tensor (the slot ``<param>.novograd.v`` of shape ``()``),
    :math:`m` has the param's shape; neither is bias-corrected.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    beta1 : float or scalar tensor
        :math:`\beta_1`, the momentum, in [0, 1), default 0.9.
    beta2 : float or scalar tensor
        :math:`\beta_2`, the decay of the second moment of the norm, in [0, 1), default 0.25.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root, default 1e-6.
    epsilon_root : float or scalar tensor
        :math:`\epsilon_{\mathrm{root}}`, added under the root, default 0.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, added to the normalized gradient (inside the momentum), default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.novograd(learning_rate, b1, b2, eps, eps_root, weight_decay)`` with the same
    defaults (``b1``, ``b2``, ``eps``, ``eps_root`` are ``beta1``, ``beta2``, ``epsilon``,
    ``epsilon_root``), step for step, params and state (optax's ``mu`` and ``nu`` are ``m`` and
    ``v``); optax needs a ``learning_rate``, 1e-3 here, and has a ``mu_dtype`` (here the state
    has the param's dtype). As optax (and the paper's Algorithm 1), the momentum sums the
    normalized gradients without a :math:`1 - \beta_1` factor. Built per parameter (the norm
    needs each whole tensor). torch.optim has no NovoGrad.

    References
    ----------
    Ginsburg, Castonguay, Hrinchuk, Kuchaiev, Lavrukhin, Leary, Li, Nguyen, Zhang and Cohen
    (2019). Stochastic gradient methods with layer-wise adaptive moments for training of deep
    networks. arXiv:1905.11286.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.novograd((w**2).sum(), [w]).named_state())
    ['w.novograd.m', 'w.novograd.v', 'novograd.t']
    """
    return apply_rule(
        NOVOGRAD,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        epsilon_root=epsilon_root,
        weight_decay=weight_decay,
    )


# -- Fromage -------------------------------------------------------------------------------------


def _floored_norm(x, min_norm):
    norm = l2_norm([x])
    return pt.switch(pt.le(norm, min_norm), min_norm, norm)


def _fromage(h, param, grad):
    param_norm = _floored_norm(param, h.min_norm)
    grad_norm = _floored_norm(grad, h.min_norm)
    zero = pt.or_(pt.eq(param_norm, 0), pt.eq(grad_norm, 0))
    trust = pt.switch(zero, 1, param_norm / pt.switch(zero, 1, grad_norm))
    mult = 1 / pt.sqrt(1 + pt.sqr(h.learning_rate))
    return (param + (-(h.learning_rate * mult) * (grad * trust) + (mult - 1) * param),)


FROMAGE = Rule(
    "fromage",
    _fromage,
    per_tensor=True,
    ranges=dict(learning_rate=NON_NEGATIVE, min_norm=NON_NEGATIVE),
)


@update_rule
def fromage(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    min_norm: Any = 1e-6,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Fromage: steps of a fixed size relative to each tensor's norm, then a shrink.

    With norms over each whole tensor, floored at :math:`n_{\min}`:

    .. math::

        p \leftarrow \frac{1}{\sqrt{1 + \eta^2}}
            \left(p - \eta\, \frac{\max(\lVert p \rVert, n_{\min})}
            {\max(\lVert g \rVert, n_{\min})}\, g\right)

    (the ratio is 1 when either floored norm is 0, which only ``min_norm=0`` allows). No state.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, the step relative to the param's norm, default 1e-2 (the paper's).
    min_norm : float or scalar tensor
        :math:`n_{\min} \ge 0`, the floor of both norms, default 1e-6.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.fromage(learning_rate, min_norm)`` (``scale_by_trust_ratio(min_norm)``, the learning
    rate times :math:`1/\sqrt{1 + \eta^2}`, ``add_decayed_weights`` of
    :math:`1/\sqrt{1 + \eta^2} - 1`), step for step, also with a learning rate that is a
    schedule (a callable of optax's count); optax needs a ``learning_rate``. Built per
    parameter (the norms need each whole tensor). torch.optim has no Fromage.

    References
    ----------
    Bernstein, Vahdat, Yue and Liu (2020). On the distance between two neural networks and the
    stability of learning. NeurIPS. arXiv:2002.03432.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([3.0, 4.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.fromage((w**2).sum(), [w], learning_rate=0.1))
    >>> _ = step()
    >>> print(np.round(w.get_value(), 4))
    [2.6866 3.5822]
    """
    return apply_rule(
        FROMAGE, loss_or_grads, params, clear_nan, learning_rate=learning_rate, min_norm=min_norm
    )


# -- Optimistic gradient descent and Optimistic Adam ---------------------------------------------


def _optimistic(h, param, grad, prev):
    prev_grad = pt.switch(h.first > 0, grad, prev)
    step = (h.alpha + h.beta) * grad - h.beta * prev_grad
    return param - h.learning_rate * step, grad


OPTIMISTIC_GRADIENT_DESCENT = Rule(
    "optimistic_gradient_descent",
    _optimistic,
    slots=("prev",),
    per_step=first_step,
    ranges=dict(learning_rate=NON_NEGATIVE, alpha=NON_NEGATIVE, beta=NON_NEGATIVE),
)


@update_rule
def optimistic_gradient_descent(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    alpha: Any = 1.0,
    beta: Any = 1.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Optimistic gradient descent: a step on the gradient extrapolated from the one before.

    .. math::

        p &\leftarrow p - \eta\, \bigl((\alpha + \beta)\, g - \beta\, g_{\mathrm{prev}}\bigr) \\
        g_{\mathrm{prev}} &\leftarrow g

    with :math:`g_{\mathrm{prev}} = g` on the first step (a plain step :math:`\eta\alpha g`).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    alpha : float or scalar tensor
        :math:`\alpha \ge 0`, the weight of the gradient, default 1.
    beta : float or scalar tensor
        :math:`\beta \ge 0`, the weight of its change since the step before (negative
        momentum), default 1.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.optimistic_gradient_descent(learning_rate, alpha, beta)`` with the same defaults,
    step for step, params and state (optax's ``previous_gradient`` is ``prev``); optax needs a
    ``learning_rate``. A learning rate that is a callable of optax's count is a schedule here;
    optax 0.2.8 takes only numbers for ``alpha`` and ``beta``. With ``alpha=beta=1`` it is the
    optimistic gradient (OGDA) step :math:`p \leftarrow p - \eta(2g - g_{\mathrm{prev}})`.
    torch.optim has none.

    References
    ----------
    Mokhtari, Ozdaglar and Pattathil (2020). A unified analysis of extra-gradient and
    optimistic gradient methods for saddle point problems: proximal point approach. AISTATS.
    arXiv:1901.08511.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.optimistic_gradient_descent((w**2).sum(), [w]).named_state())
    ['w.optimistic_gradient_descent.prev', 'optimistic_gradient_descent.t']
    """
    return apply_rule(
        OPTIMISTIC_GRADIENT_DESCENT,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        alpha=alpha,
        beta=beta,
    )


def _optimistic_adam_schedule(h, t, step):
    return dict(
        first_step(h, t, step),
        bc1=1 - h.beta1**t,
        bc1_next=1 - h.beta1 ** (t + 1),
        bc2=1 - h.beta2**t,
    )


def _optimistic_adam_kernel(nesterov: bool):
    def kernel(h, param, grad, m, v, prev):
        m = h.beta1 * m + (1 - h.beta1) * grad
        v = h.beta2 * v + (1 - h.beta2) * pt.sqr(grad)
        # Nesterov's look-ahead (optax's scale_by_adam(nesterov=True)) or the plain m_hat.
        m_hat = h.beta1 * (m / h.bc1_next) + (1 - h.beta1) * (grad / h.bc1) if nesterov else m / h.bc1
        r = m_hat / (pt.sqrt(v / h.bc2 + h.epsilon_root) + h.epsilon)
        optimism = getattr(h, "optimism", None)
        if optimism is None:
            optimism = h.learning_rate
        step = (h.learning_rate + optimism) * r - optimism * pt.switch(h.first > 0, r, prev)
        return param - step, m, v, r

    return kernel


OPTIMISTIC_ADAM = {
    nesterov: Rule(
        "optimistic_adam",
        _optimistic_adam_kernel(nesterov),
        slots=("m", "v", "prev"),
        per_step=_optimistic_adam_schedule,
        ranges=dict(ADAM_RANGES, optimism=NON_NEGATIVE, epsilon_root=NON_NEGATIVE),
    )
    for nesterov in (False, True)
}


def _optimistic_adam_rule(nesterov: bool) -> Rule:
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"optimistic_adam: nesterov must be True or False, got {nesterov!r}")
    return OPTIMISTIC_ADAM[bool(nesterov)]


@update_rule
def optimistic_adam(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    optimism: Any = None,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    epsilon_root: Any = 0.0,
    *,
    nesterov: bool = True,
    clear_nan: bool = False,
) -> Updates:
    r"""Optimistic Adam: the optimistic step on Adam's direction, for min-max games (GANs).

    With :math:`o` the optimism (the learning rate by default):

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        \hat m &= \beta_1 \frac{m}{1 - \beta_1^{t+1}} + (1 - \beta_1) \frac{g}{1 - \beta_1^t}
            \quad \Bigl(\text{without Nesterov: } \hat m = \frac{m}{1 - \beta_1^t}\Bigr) \\
        r &= \frac{\hat m}{\sqrt{v / (1 - \beta_2^t) + \epsilon_{\mathrm{root}}} + \epsilon} \\
        p &\leftarrow p - \bigl((\eta + o)\, r - o\, r_{\mathrm{prev}}\bigr), \qquad
        r_{\mathrm{prev}} \leftarrow r

    with :math:`r_{\mathrm{prev}} = r` on the first step (a plain step :math:`\eta r`).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    optimism : float, scalar tensor or None
        :math:`o \ge 0`, the weight of the change of :math:`r`; None (the default): the
        learning rate, as in the paper.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root, default 1e-8.
    epsilon_root : float or scalar tensor
        :math:`\epsilon_{\mathrm{root}}`, added under the root, default 0.
    nesterov : bool
        Nesterov's look-ahead in :math:`\hat m` (optax's ``scale_by_adam(nesterov=True)``),
        default True (optax's default here).
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.optimistic_adam(learning_rate, optimism, b1, b2, eps, eps_root, nesterov=...)``
    of optax 0.2.8 (``scale_by_adam``, ``scale_by_optimistic_gradient(alpha=learning_rate,
    beta=optimism)``, a sign flip) with the same defaults, ``nesterov=True`` included, step for
    step, params and state (optax's ``mu``, ``nu`` and ``previous_gradient`` are ``m``, ``v``
    and ``prev``, the last holding :math:`r`, not the gradient); optax needs a
    ``learning_rate``, takes no schedule for it and warns that this form is deprecated for
    ``optimistic_adam_v2`` (whose step is :math:`\eta((\alpha + \beta) r - \beta
    r_{\mathrm{prev}})`, a different parametrization). Here a learning rate may be a schedule
    (then also the default optimism). No ``mu_dtype`` (the state has the param's dtype).
    torch.optim has none.

    References
    ----------
    Daskalakis, Ilyas, Syrgkanis and Zeng (2018). Training GANs with optimism. ICLR.
    arXiv:1711.00141.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.optimistic_adam((w**2).sum(), [w]).named_state())
    ['w.optimistic_adam.m', 'w.optimistic_adam.v', 'w.optimistic_adam.prev', 'optimistic_adam.t']
    """
    return apply_rule(
        _optimistic_adam_rule(nesterov),
        loss_or_grads,
        params,
        clear_nan,
        options=("nesterov", "optimism") if optimism is None else ("nesterov",),
        learning_rate=learning_rate,
        optimism=optimism,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        epsilon_root=epsilon_root,
        nesterov=nesterov,
    )
