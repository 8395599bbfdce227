r"""The base update rules of Lasagne, each its elementwise equations and nothing else.

Notation in the docstrings: :math:`g` the gradient, :math:`\eta` the learning rate, :math:`t` the
step count (1 on the first step); all operations are elementwise and all state starts at zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, UNIT, is_concrete
from updates.container import Updates
from updates.engine import Rule, apply_rule
from updates.public import update_rule

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamax", "amsgrad"]


SGD = Rule("sgd", lambda h, p, g: (p - h.learning_rate * g,), ranges=dict(learning_rate=NON_NEGATIVE))


@update_rule
def sgd(loss_or_grads=None, params=None, learning_rate: Any = 1e-3, *, clear_nan: bool = False) -> Updates:
    r"""Stochastic gradient descent.

    .. math:: p \leftarrow p - \eta\, g

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3 (Lasagne has no default; PyMC's port uses 1e-3).
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The same as ``torch.optim.SGD(lr=learning_rate)`` and ``optax.sgd(learning_rate)``.

    References
    ----------
    Robbins and Monro (1951). A stochastic approximation method. Ann. Math. Statist. 22(3).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0, -2.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.sgd((w**2).sum(), [w], learning_rate=0.25))
    >>> _ = step()
    >>> w.get_value()
    array([ 0.5, -1. ])
    """
    return apply_rule(SGD, loss_or_grads, params, clear_nan, learning_rate=learning_rate)


def _adagrad(h, param, grad, accu):
    accu = accu + pt.sqr(grad)
    return param - h.learning_rate * grad / pt.sqrt(accu + h.epsilon), accu


ADAGRAD = Rule(
    "adagrad", _adagrad, slots=("accu",), ranges=dict(learning_rate=NON_NEGATIVE, epsilon=NON_NEGATIVE)
)


@update_rule
def adagrad(
    loss_or_grads=None, params=None, learning_rate: Any = 1.0, epsilon: Any = 1e-6, *, clear_nan: bool = False
) -> Updates:
    r"""Adagrad: per-element step sizes shrinking with the sum of squared gradients.

    .. math::

        a &\leftarrow a + g^2 \\
        p &\leftarrow p - \eta\, g / \sqrt{a + \epsilon}

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1.0.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added inside the square root, default 1e-6.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.Adagrad adds its ``eps`` outside the root (:math:`\sqrt{a} + \epsilon`); with
    ``eps=0, initial_accumulator_value=epsilon`` it computes exactly this rule. optax's adagrad
    starts its accumulator at 0.1 by default.

    References
    ----------
    Duchi, Hazan and Singer (2011). Adaptive subgradient methods for online learning and stochastic
    optimization. JMLR 12: 2121-2159.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.adagrad((w**2).sum(), [w]).named_state())
    ['w.adagrad.accu']
    """
    return apply_rule(ADAGRAD, loss_or_grads, params, clear_nan, learning_rate=learning_rate, epsilon=epsilon)


def _rmsprop_kernel(centered: bool, with_momentum: bool):
    """RMSProp's equations: plain, centered (Graves), with momentum, or both."""

    def kernel(h, param, grad, accu, *rest):
        accu = h.rho * accu + (1 - h.rho) * pt.sqr(grad)
        new_slots = [accu]
        variance = accu
        if centered:
            grad_avg = h.rho * rest[0] + (1 - h.rho) * grad
            variance = accu - pt.sqr(grad_avg)
            new_slots.append(grad_avg)
        step = h.learning_rate * grad / pt.sqrt(variance + h.epsilon)
        if with_momentum:
            step = h.momentum * rest[-1] + step
            new_slots.append(step)
        return (param - step, *new_slots)

    return kernel


RMSPROP = {
    (centered, with_momentum): Rule(
        "rmsprop",
        _rmsprop_kernel(centered, with_momentum),
        slots=("accu", *(("grad_avg",) if centered else ()), *(("velocity",) if with_momentum else ())),
        ranges=dict(learning_rate=NON_NEGATIVE, rho=UNIT, epsilon=NON_NEGATIVE, momentum=UNIT),
    )
    for centered in (False, True)
    for with_momentum in (False, True)
}


def _rmsprop_rule(centered: bool, momentum: Any) -> Rule:
    """The variant of RMSProp: centered or not, and with a velocity unless momentum is a concrete 0."""
    if not isinstance(centered, (bool, np.bool_)):
        raise TypeError(f"rmsprop: centered must be True or False, got {centered!r}")
    without = is_concrete(momentum) and float(momentum) == 0.0
    return RMSPROP[bool(centered), not without]


@update_rule
def rmsprop(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    rho: Any = 0.9,
    epsilon: Any = 1e-6,
    momentum: Any = 0.0,
    *,
    centered: bool = False,
    clear_nan: bool = False,
) -> Updates:
    r"""RMSProp: steps scaled by a moving average of squared gradients.

    .. math::

        a &\leftarrow \rho\, a + (1 - \rho)\, g^2 \\
        p &\leftarrow p - \eta\, g / \sqrt{a + \epsilon}

    The centered form (Graves, 2013) divides by an estimate of the variance instead, and
    momentum keeps a velocity :math:`b` of the steps:

    .. math::

        \bar g &\leftarrow \rho\, \bar g + (1 - \rho)\, g \\
        b &\leftarrow \mu\, b + \eta\, g / \sqrt{a - \bar g^2 + \epsilon} \\
        p &\leftarrow p - b

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1.0.
    rho : float or scalar tensor
        :math:`\rho`, the decay of the moving average, in [0, 1), default 0.9.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added inside the square root, default 1e-6.
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0 (no velocity is kept when it is a concrete 0).
    centered : bool
        Divide by the centered second moment :math:`a - \bar g^2` (keeps :math:`\bar g`),
        default False.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.RMSprop (``alpha`` is :math:`\rho`) adds ``eps`` outside the root and defaults to
    ``lr=1e-2, alpha=0.99, eps=1e-8``; with ``eps=0`` on both sides they agree, also with
    ``centered`` and ``momentum`` (torch's buffer holds the steps without :math:`\eta`, the same
    while the learning rate is constant).
    ``optax.rmsprop(..., eps_in_sqrt=True)`` is this rule.

    References
    ----------
    Tieleman and Hinton (2012). Neural Networks for Machine Learning, lecture 6.5 (Coursera).
    Graves (2013). Generating sequences with recurrent neural networks, eq. 38-41.
    arXiv:1308.0850.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.rmsprop((w**2).sum(), [w]).named_state())
    ['w.rmsprop.accu']
    >>> list(updates.rmsprop((w**2).sum(), [w], momentum=0.9, centered=True).named_state())
    ['w.rmsprop.accu', 'w.rmsprop.grad_avg', 'w.rmsprop.velocity']
    """
    return apply_rule(
        _rmsprop_rule(centered, momentum),
        loss_or_grads,
        params,
        clear_nan,
        options=("centered",),
        learning_rate=learning_rate,
        rho=rho,
        epsilon=epsilon,
        momentum=momentum,
        centered=centered,
    )


def _adadelta(h, param, grad, accu, delta_accu):
    accu = h.rho * accu + (1 - h.rho) * pt.sqr(grad)
    update = grad * pt.sqrt(delta_accu + h.epsilon) / pt.sqrt(accu + h.epsilon)
    delta_accu = h.rho * delta_accu + (1 - h.rho) * pt.sqr(update)
    return param - h.learning_rate * update, accu, delta_accu


ADADELTA = Rule(
    "adadelta",
    _adadelta,
    slots=("accu", "delta_accu"),
    ranges=dict(learning_rate=NON_NEGATIVE, rho=UNIT, epsilon=NON_NEGATIVE),
)


@update_rule
def adadelta(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    rho: Any = 0.95,
    epsilon: Any = 1e-6,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adadelta: steps scaled by the ratio of moving RMS of past updates to that of gradients.

    .. math::

        a &\leftarrow \rho\, a + (1 - \rho)\, g^2 \\
        u &= g\, \sqrt{d + \epsilon} / \sqrt{a + \epsilon}
            \quad \text{(with the previous } d\text{)} \\
        p &\leftarrow p - \eta\, u \\
        d &\leftarrow \rho\, d + (1 - \rho)\, u^2

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1.0 (the paper has none).
    rho : float or scalar tensor
        :math:`\rho`, in [0, 1), default 0.95.
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 1e-6.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The same equations as torch.optim.Adadelta and optax's adadelta, whose ``rho`` defaults to 0.9.

    References
    ----------
    Zeiler (2012). ADADELTA: An adaptive learning rate method. arXiv:1212.5701.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.adadelta((w**2).sum(), [w]).named_state())
    ['w.adadelta.accu', 'w.adadelta.delta_accu']
    """
    return apply_rule(
        ADADELTA, loss_or_grads, params, clear_nan, learning_rate=learning_rate, rho=rho, epsilon=epsilon
    )


def _adam_step_size(h, t, step):
    return dict(alpha=h.learning_rate * pt.sqrt(1 - h.beta2**t) / (1 - h.beta1**t))


ADAM_RANGES = dict(learning_rate=NON_NEGATIVE, beta1=UNIT, beta2=UNIT, epsilon=NON_NEGATIVE)


def first_moment(h, grad, m):
    """Adam's moving average of the gradient (shared by the Adam family)."""
    return h.beta1 * m + (1 - h.beta1) * grad


def moments(h, grad, m, v):
    """Adam's moving averages of the gradient and of its square (shared by the Adam family)."""
    return first_moment(h, grad, m), h.beta2 * v + (1 - h.beta2) * pt.sqr(grad)


def _adam(h, param, grad, m, v):
    m, v = moments(h, grad, m, v)
    return param - h.alpha * m / (pt.sqrt(v) + h.epsilon), m, v


ADAM = Rule("adam", _adam, slots=("m", "v"), per_step=_adam_step_size, ranges=ADAM_RANGES)


@update_rule
def adam(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adam: steps from bias-corrected moving averages of the gradient and its square.

    .. math::

        \alpha_t &= \eta\, \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        p &\leftarrow p - \alpha_t\, m / (\sqrt{v} + \epsilon)

    Both bias corrections are folded into the step size :math:`\alpha_t`, computed once per step
    (the form of the paper's section 2 and of Lasagne).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to :math:`\sqrt{v}`, default 1e-8.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.Adam and optax.adam add :math:`\epsilon` to the root of the *bias-corrected*
    :math:`v`, which equals this rule with :math:`\epsilon_t = \epsilon\, \sqrt{1 - \beta_2^t}`;
    with ``epsilon=0`` the three agree.

    References
    ----------
    Kingma and Ba (2015). Adam: A method for stochastic optimization. ICLR. arXiv:1412.6980.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.adam((w**2).sum(), [w]).named_state())
    ['w.adam.m', 'w.adam.v', 'adam.t']
    """
    return apply_rule(
        ADAM,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )


def _adamax(h, param, grad, m, u):
    m = first_moment(h, grad, m)
    u = pt.maximum(h.beta2 * u, abs(grad))
    return param - h.alpha * m / (u + h.epsilon), m, u


def _adamax_step_size(h, t, step):
    return dict(alpha=h.learning_rate / (1 - h.beta1**t))


ADAMAX = Rule("adamax", _adamax, slots=("m", "u"), per_step=_adamax_step_size, ranges=ADAM_RANGES)


@update_rule
def adamax(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 2e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adamax: Adam with the infinity norm in place of the second moment.

    .. math::

        \alpha_t &= \eta / (1 - \beta_1^t) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        u &\leftarrow \max(\beta_2 u, |g|) \\
        p &\leftarrow p - \alpha_t\, m / (u + \epsilon)

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 2e-3.
    beta1, beta2 : float or scalar tensor
        The decays of the first moment and of the infinity norm, in [0, 1), defaults 0.9, 0.999.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to :math:`u`, default 1e-8.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.Adamax and optax.adamax put :math:`\epsilon` inside the max,
    :math:`u \leftarrow \max(\beta_2 u, |g| + \epsilon)`, and divide by :math:`u`; with
    ``epsilon=0`` they agree with this rule.

    References
    ----------
    Kingma and Ba (2015). Adam: A method for stochastic optimization, section 7. arXiv:1412.6980.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.adamax((w**2).sum(), [w]).named_state())
    ['w.adamax.m', 'w.adamax.u', 'adamax.t']
    """
    return apply_rule(
        ADAMAX,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )


def _amsgrad(h, param, grad, m, v, v_hat):
    m, v = moments(h, grad, m, v)
    v_hat = pt.maximum(v_hat, v)
    return param - h.alpha * m / (pt.sqrt(v_hat) + h.epsilon), m, v, v_hat


AMSGRAD = Rule("amsgrad", _amsgrad, slots=("m", "v", "v_hat"), per_step=_adam_step_size, ranges=ADAM_RANGES)


@update_rule
def amsgrad(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""AMSGrad: Adam dividing by the running maximum of the second moment.

    .. math::

        \alpha_t &= \eta\, \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        \hat v &\leftarrow \max(\hat v, v) \\
        p &\leftarrow p - \alpha_t\, m / (\sqrt{\hat v} + \epsilon)

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to :math:`\sqrt{\hat v}`, default 1e-8.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.Adam(amsgrad=True) also takes the maximum over the raw :math:`v`, but adds
    :math:`\epsilon` after bias correction (as in :func:`adam`); with ``epsilon=0`` they agree.
    optax.amsgrad takes the maximum over the bias-corrected :math:`v`, a different algorithm.

    References
    ----------
    Reddi, Kale and Kumar (2018). On the convergence of Adam and beyond. ICLR.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> list(updates.amsgrad((w**2).sum(), [w]).named_state())
    ['w.amsgrad.m', 'w.amsgrad.v', 'w.amsgrad.v_hat', 'amsgrad.t']
    """
    return apply_rule(
        AMSGRAD,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )
