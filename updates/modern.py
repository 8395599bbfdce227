r"""Rules beyond Lasagne: the optimizers torch.optim and optax users take for granted.

Same conventions as :mod:`updates.rules`: :math:`g` the gradient, :math:`\eta` the learning rate,
:math:`t` the step count (1 on the first step), elementwise operations, state starting at zero.
Where torch.optim has the algorithm, the rule follows torch's formulation (epsilon placement and
bias corrections), and the tests compare trajectories with torch live; where only optax has it
(:func:`sign_sgd`, :func:`signum`, :func:`adopt`, :func:`ademamix`, :func:`adan`), optax's,
compared with optax live. :func:`lamb`, :func:`lars` and :func:`esgd` need whole tensors (norms,
Hessian-vector products), so they are built per parameter; every other rule runs on the
multi-tensor path.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt

from updates.checks import COUNT, NON_NEGATIVE, POSITIVE, UNIT, Interval
from updates.container import Updates
from updates.engine import Rule, apply_rule, first_step
from updates.grads import prepare_grads
from updates.public import update_rule
from updates.reductions import l2_norm
from updates.rules import ADAM_RANGES, first_moment, moments

__all__ = [
    "adamw",
    "nadam",
    "radam",
    "adabelief",
    "yogi",
    "lion",
    "sign_sgd",
    "signum",
    "rprop",
    "asgd",
    "adopt",
    "ademamix",
    "adan",
    "simplified_ademamix",
    "madgrad",
    "polyak_sgd",
    "lamb",
    "lars",
    "adagrad_window",
    "esgd",
    "acprop",
]


def _bias_corrections(h, t, step):
    return dict(bc1=1 - h.beta1**t, sqrt_bc2=pt.sqrt(1 - h.beta2**t))


# -- AdamW ---------------------------------------------------------------------------------------


def _adamw(h, param, grad, m, v):
    m, v = moments(h, grad, m, v)
    param = param * (1 - h.learning_rate * h.weight_decay)
    return param - (h.learning_rate / h.bc1) * m / (pt.sqrt(v) / h.sqrt_bc2 + h.epsilon), m, v


ADAMW = Rule(
    "adamw",
    _adamw,
    slots=("m", "v"),
    per_step=_bias_corrections,
    ranges=dict(ADAM_RANGES, weight_decay=NON_NEGATIVE),
)


@update_rule
def adamw(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    weight_decay: Any = 1e-2,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""AdamW: Adam with weight decay decoupled from the gradient.

    .. math::

        p &\leftarrow p\, (1 - \eta \lambda) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        p &\leftarrow p - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root of the bias-corrected :math:`v`, default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda`, default 1e-2.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.AdamW with the same defaults, step for step. Unlike :func:`adam` (Lasagne's
    form), :math:`\epsilon` is added after bias correction, as in torch and optax, so
    ``adamw(weight_decay=0)`` equals torch's Adam rather than this library's ``adam``.
    optax.adamw multiplies the decay by the learning rate the same way; its default
    ``weight_decay`` is 1e-4.

    References
    ----------
    Loshchilov and Hutter (2019). Decoupled weight decay regularization. ICLR. arXiv:1711.05101.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.adamw((w**2).sum(), [w]).named_state())
    ['w.adamw.m', 'w.adamw.v', 'adamw.t']
    """
    return apply_rule(
        ADAMW,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )


# -- NAdam ---------------------------------------------------------------------------------------


def _nadam_schedule(h, t, step):
    half, base = (np.asarray(c, dtype=t.dtype) for c in (0.5, 0.96))

    def mu(at):
        return h.beta1 * (1 - half * base ** (at * h.momentum_decay))

    mu_t, mu_next = mu(t), mu(t + 1)
    product = h.mu_product * mu_t
    return dict(
        mu_product=product,
        grad_scale=h.learning_rate * (1 - mu_t) / (1 - product),
        m_scale=h.learning_rate * mu_next / (1 - product * mu_next),
        sqrt_bc2=pt.sqrt(1 - h.beta2**t),
    )


def _nadam(h, param, grad, m, v):
    m, v = moments(h, grad, m, v)
    denominator = pt.sqrt(v) / h.sqrt_bc2 + h.epsilon
    return param - h.grad_scale * grad / denominator - h.m_scale * m / denominator, m, v


NADAM = Rule(
    "nadam",
    _nadam,
    slots=("m", "v"),
    per_step=_nadam_schedule,
    carry=(("mu_product", 1.0),),
    ranges=dict(ADAM_RANGES, momentum_decay=NON_NEGATIVE),
)


@update_rule
def nadam(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 2e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    momentum_decay: Any = 4e-3,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""NAdam: Adam with Nesterov momentum and Dozat's momentum schedule.

    .. math::

        \mu_t &= \beta_1 \left(1 - \tfrac12\, 0.96^{t \psi}\right), \qquad
        \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        d &= \sqrt{v / (1 - \beta_2^t)} + \epsilon \\
        p &\leftarrow p - \eta\, \frac{1 - \mu_t}{1 - \Pi_t}\, \frac{g}{d}
            - \eta\, \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}}\, \frac{m}{d}

    The running product :math:`\Pi_t` is state (``nadam.mu_product``).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 2e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 1e-8.
    momentum_decay : float or scalar tensor
        :math:`\psi`, default 4e-3.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.NAdam with the same defaults, step for step. optax.nadam has no momentum
    schedule (a constant :math:`\mu = \beta_1`), a different algorithm.

    References
    ----------
    Dozat (2016). Incorporating Nesterov momentum into Adam. ICLR workshop.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.nadam((w**2).sum(), [w]).named_state())
    ['nadam.mu_product', 'w.nadam.m', 'w.nadam.v', 'nadam.t']
    """
    return apply_rule(
        NADAM,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        momentum_decay=momentum_decay,
    )


# -- RAdam ---------------------------------------------------------------------------------------


def _radam_schedule(h, t, step):
    rho_inf = 2 / (1 - h.beta2) - 1
    rho_t = rho_inf - 2 * t * h.beta2**t / (1 - h.beta2**t)
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    rectified = pt.gt(rho_t, 5)
    return dict(
        step_size=h.learning_rate / (1 - h.beta1**t),
        rectifier=pt.switch(rectified, pt.sqrt(pt.maximum(ratio, 0)) * pt.sqrt(1 - h.beta2**t), 0),
        rectified=pt.cast(rectified, t.dtype),
    )


def _radam(h, param, grad, m, v):
    m, v = moments(h, grad, m, v)
    adaptive = pt.switch(h.rectified > 0, h.rectifier / (pt.sqrt(v) + h.epsilon), 1)
    return param - h.step_size * m * adaptive, m, v


RADAM = Rule("radam", _radam, slots=("m", "v"), per_step=_radam_schedule, ranges=ADAM_RANGES)


@update_rule
def radam(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""RAdam: Adam whose adaptive step is switched on as the variance of :math:`v` allows.

    .. math::

        \rho_\infty &= 2 / (1 - \beta_2) - 1, \qquad
        \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        p &\leftarrow p - \frac{\eta}{1 - \beta_1^t}\, m \cdot
            \begin{cases}
            r_t \sqrt{1 - \beta_2^t} / (\sqrt{v} + \epsilon) & \rho_t > 5 \\
            1 & \text{otherwise}
            \end{cases} \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\, \rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\, \rho_t}}

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to :math:`\sqrt{v}` (before bias correction, as torch does),
        default 1e-8.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.RAdam with the same defaults, step for step; optax.radam uses the threshold
    :math:`\rho_t \ge 5` and adds :math:`\epsilon` after bias correction.

    References
    ----------
    Liu et al. (2020). On the variance of the adaptive learning rate and beyond. ICLR.
    arXiv:1908.03265.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.radam((w**2).sum(), [w]).named_state())
    ['w.radam.m', 'w.radam.v', 'radam.t']
    """
    return apply_rule(
        RADAM,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )


# -- AdaBelief -----------------------------------------------------------------------------------


def _adabelief(h, param, grad, m, s):
    m = first_moment(h, grad, m)
    s = h.beta2 * s + (1 - h.beta2) * pt.sqr(grad - m) + h.epsilon
    return param - (h.learning_rate / h.bc1) * m / (pt.sqrt(s) / h.sqrt_bc2 + h.epsilon), m, s


ADABELIEF = Rule("adabelief", _adabelief, slots=("m", "s"), per_step=_bias_corrections, ranges=ADAM_RANGES)


@update_rule
def adabelief(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-16,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""AdaBelief: Adam scaled by the variance of the gradient around its moving average.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        s &\leftarrow \beta_2 s + (1 - \beta_2)\, (g - m)^2 + \epsilon \\
        p &\leftarrow p - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{s / (1 - \beta_2^t)} + \epsilon}

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 1e-16 (the paper's).
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The algorithm of the paper (its Algorithm 2) and of ``optax.adabelief`` (whose ``eps`` and
    ``eps_root`` are both this :math:`\epsilon`). torch.optim has no AdaBelief.

    References
    ----------
    Zhuang et al. (2020). AdaBelief optimizer: adapting stepsizes by the belief in observed
    gradients. NeurIPS. arXiv:2010.07468.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.adabelief((w**2).sum(), [w]).named_state())
    ['w.adabelief.m', 'w.adabelief.s', 'adabelief.t']
    """
    return apply_rule(
        ADABELIEF,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )


# -- Yogi ----------------------------------------------------------------------------------------


def _yogi(h, param, grad, m, v):
    m = h.beta1 * m + (1 - h.beta1) * grad
    g2 = pt.sqr(grad)
    v = v - (1 - h.beta2) * pt.sign(v - g2) * g2
    return param - h.learning_rate * m / (pt.sqrt(v) + h.epsilon), m, v


YOGI = Rule("yogi", _yogi, slots=("m", "v"), ranges=ADAM_RANGES)


@update_rule
def yogi(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-3,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Yogi: Adam whose second moment grows additively, by the sign of :math:`g^2 - v`.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow v - (1 - \beta_2)\, \operatorname{sign}(v - g^2)\, g^2 \\
        p &\leftarrow p - \eta\, m / (\sqrt{v} + \epsilon)

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-2 (the paper's).
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 1e-3 (the paper's).
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The paper's Algorithm 2, without bias correction. ``optax.yogi`` is the same but starts
    :math:`v` at 1e-6 instead of 0. torch.optim has no Yogi.

    References
    ----------
    Zaheer et al. (2018). Adaptive methods for nonconvex optimization. NeurIPS.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.yogi((w**2).sum(), [w]).named_state())
    ['w.yogi.m', 'w.yogi.v']
    """
    return apply_rule(
        YOGI,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
    )


# -- Lion ----------------------------------------------------------------------------------------


def _lion(h, param, grad, m):
    direction = pt.sign(h.beta1 * m + (1 - h.beta1) * grad)
    new_param = param - h.learning_rate * (direction + h.weight_decay * param)
    return new_param, h.beta2 * m + (1 - h.beta2) * grad


LION = Rule(
    "lion",
    _lion,
    slots=("m",),
    ranges=dict(learning_rate=NON_NEGATIVE, beta1=UNIT, beta2=UNIT, weight_decay=NON_NEGATIVE),
)


@update_rule
def lion(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-4,
    beta1: Any = 0.9,
    beta2: Any = 0.99,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Lion: steps of fixed size in the sign of an interpolated momentum.

    .. math::

        c &= \beta_1 m + (1 - \beta_1)\, g \\
        p &\leftarrow p - \eta\, (\operatorname{sign}(c) + \lambda p) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2)\, g

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-4 (3-10x smaller than AdamW's, as the paper advises).
    beta1, beta2 : float or scalar tensor
        In [0, 1), defaults 0.9 and 0.99.
    weight_decay : float or scalar tensor
        :math:`\lambda`, decoupled, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    As ``optax.lion`` (whose default ``weight_decay`` is 1e-3). torch.optim has no Lion.

    References
    ----------
    Chen et al. (2023). Symbolic discovery of optimization algorithms. NeurIPS.
    arXiv:2302.06675.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> step = pytensor.function([], [], updates=updates.lion((w**2).sum(), [w], learning_rate=0.1))
    >>> _ = step()
    >>> w.get_value()
    array([0.9, 0.9])
    """
    return apply_rule(
        LION,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
    )


# -- signSGD and Signum --------------------------------------------------------------------------


SIGN_SGD = Rule(
    "sign_sgd",
    lambda h, param, grad: (param - h.learning_rate * pt.sign(grad),),
    ranges=dict(learning_rate=NON_NEGATIVE),
)


@update_rule
def sign_sgd(
    loss_or_grads=None, params=None, learning_rate: Any = 1e-3, *, clear_nan: bool = False
) -> Updates:
    r"""signSGD: steps of fixed size in the sign of each gradient component.

    .. math:: p \leftarrow p - \eta\, \operatorname{sign}(g)

    with :math:`\operatorname{sign}(0) = 0`. No state.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, the size of every component's step, default 1e-3.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.sign_sgd(learning_rate)`` (``scale_by_sign`` then the learning rate), step for step;
    optax needs a ``learning_rate``, 1e-3 here as :func:`sgd`'s. A learning rate that is a
    callable of optax's count is a schedule here. torch.optim has no signSGD.

    References
    ----------
    Bernstein, Wang, Azizzadenesheli and Anandkumar (2018). signSGD: compressed optimisation for
    non-convex problems. ICML. arXiv:1802.04434.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([3.0, -0.5, 0.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.sign_sgd((w**2).sum(), [w], learning_rate=0.1))
    >>> _ = step()
    >>> w.get_value()
    array([ 2.9, -0.4,  0. ])
    """
    return apply_rule(SIGN_SGD, loss_or_grads, params, clear_nan, learning_rate=learning_rate)


def _signum(h, param, grad, m):
    m = h.beta * m + (1 - h.beta) * grad
    return param - h.learning_rate * pt.sign(m), m


SIGNUM = Rule("signum", _signum, slots=("m",), ranges=dict(learning_rate=NON_NEGATIVE, beta=UNIT))


@update_rule
def signum(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta: Any = 0.9,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Signum: steps of fixed size in the sign of the momentum (signSGD with momentum).

    .. math::

        m &\leftarrow \beta m + (1 - \beta)\, g \\
        p &\leftarrow p - \eta\, \operatorname{sign}(m)

    :math:`m` is not bias-corrected: a positive factor does not change its sign.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, the size of every component's step, default 1e-3.
    beta : float or scalar tensor
        :math:`\beta`, the decay of the moving average of the gradient, in [0, 1), default 0.9.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.signum(learning_rate, beta)`` (``ema(beta, debias=False)``, ``scale_by_sign``, the
    learning rate) with the same ``beta``, step for step, params and state (optax's ``ema`` is
    ``m``); optax needs a ``learning_rate`` and has an ``accumulator_dtype`` (here the state
    has the param's dtype). With ``beta=0`` it is :func:`sign_sgd`. :func:`lion` is the same
    with the sign taken of an interpolation of :math:`m` and :math:`g`. torch.optim has no
    Signum.

    References
    ----------
    Bernstein, Wang, Azizzadenesheli and Anandkumar (2018). signSGD: compressed optimisation for
    non-convex problems. ICML. arXiv:1802.04434.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([3.0, -0.5]), name="w")
    >>> result = updates.signum((w**2).sum(), [w], learning_rate=0.1)
    >>> list(result.named_state())
    ['w.signum.m']
    >>> step = pytensor.function([], [], updates=result)
    >>> _ = step()
    >>> w.get_value()
    array([ 2.9, -0.4])
    """
    return apply_rule(SIGNUM, loss_or_grads, params, clear_nan, learning_rate=learning_rate, beta=beta)


# -- Rprop ---------------------------------------------------------------------------------------


def _rprop(h, param, grad, prev, step_size):
    step_size = pt.switch(h.first > 0, h.learning_rate, step_size)
    agreement = grad * prev
    factor = pt.switch(pt.gt(agreement, 0), h.eta_plus, pt.switch(pt.lt(agreement, 0), h.eta_minus, 1))
    step_size = pt.clip(step_size * factor, h.min_step, h.max_step)
    grad = pt.switch(pt.lt(agreement, 0), 0, grad)
    return param - pt.sign(grad) * step_size, grad, step_size


OPEN_UNIT = Interval(0.0, 1.0, low_closed=False)
RPROP = Rule(
    "rprop",
    _rprop,
    slots=("prev", "step_size"),
    per_step=first_step,
    ranges=dict(
        learning_rate=NON_NEGATIVE,
        eta_minus=OPEN_UNIT,
        eta_plus=Interval(1.0, low_closed=False),
        min_step=NON_NEGATIVE,
        max_step=NON_NEGATIVE,
    ),
)


@update_rule
def rprop(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    eta_minus: Any = 0.5,
    eta_plus: Any = 1.2,
    min_step: Any = 1e-6,
    max_step: Any = 50.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Rprop (iRprop-): per-element step sizes adapted by the sign agreement of gradients.

    With :math:`\Delta` the step sizes (:math:`\eta` at first) and :math:`g'` the previous
    gradient as kept:

    .. math::

        \Delta &\leftarrow \operatorname{clip}\left(\Delta \cdot
            \begin{cases} \eta_+ & g g' > 0 \\ \eta_- & g g' < 0 \\ 1 & \text{otherwise}
            \end{cases},\ \Delta_{\min}, \Delta_{\max}\right) \\
        g &\leftarrow 0 \quad \text{where } g g' < 0 \\
        p &\leftarrow p - \operatorname{sign}(g)\, \Delta, \qquad g' \leftarrow g

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        The initial step size, default 1e-2. Later steps use the adapted sizes only.
    eta_minus, eta_plus : float or scalar tensor
        The decrease factor in (0, 1) and the increase factor above 1, defaults 0.5 and 1.2.
    min_step, max_step : float or scalar tensor
        The bounds of the step sizes, defaults 1e-6 and 50.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    torch.optim.Rprop with ``etas=(eta_minus, eta_plus)`` and
    ``step_sizes=(min_step, max_step)``, step for step. Rprop is meant for full-batch
    gradients.

    References
    ----------
    Riedmiller and Braun (1993). A direct adaptive method for faster backpropagation learning:
    the RPROP algorithm. IEEE ICNN. Igel and Hüsken (2000). Improving the Rprop learning
    algorithm. NC 2000.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.rprop((w**2).sum(), [w]).named_state())
    ['w.rprop.prev', 'w.rprop.step_size', 'rprop.t']
    """
    return apply_rule(
        RPROP,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step=min_step,
        max_step=max_step,
    )


# -- ASGD ----------------------------------------------------------------------------------------


def _asgd_schedule(h, t, step):
    taken = pt.cast(step - 1, t.dtype)  # the steps taken before this one
    return dict(
        eta=h.learning_rate / (1 + h.lambd * h.learning_rate * taken) ** h.alpha,
        mu=1 / pt.maximum(1, taken - h.t0),
    )


def _asgd(h, param, grad, ax):
    grad = grad + h.weight_decay * param
    param = param * (1 - h.lambd * h.eta) - h.eta * grad
    return param, pt.switch(pt.eq(h.mu, 1), param, ax + h.mu * (param - ax))


ASGD = Rule(
    "asgd",
    _asgd,
    slots=("ax",),
    per_step=_asgd_schedule,
    averages=True,
    ranges=dict(
        learning_rate=NON_NEGATIVE,
        lambd=NON_NEGATIVE,
        alpha=NON_NEGATIVE,
        t0=NON_NEGATIVE,
        weight_decay=NON_NEGATIVE,
    ),
)


@update_rule
def asgd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""ASGD: SGD with a decaying step size and a Polyak-Ruppert average of the params.

    With :math:`k = t - 1` the number of steps taken before this one:

    .. math::

        \eta_t &= \frac{\eta}{(1 + \lambda \eta k)^{\alpha}}, \qquad
        \mu_t = \frac{1}{\max(1, k - t_0)} \\
        g &\leftarrow g + \omega p \\
        p &\leftarrow p\, (1 - \lambda \eta_t) - \eta_t\, g \\
        \bar p &\leftarrow
            \begin{cases} p & \mu_t = 1 \\ \bar p + \mu_t\, (p - \bar p) & \text{otherwise}
            \end{cases}

    The average :math:`\bar p` (``<param>.asgd.ax``) equals the params until step
    :math:`t_0 + 1`, then is their uniform average since then. The params themselves follow the
    plain decaying-step SGD; evaluate with the average through :func:`swap_averages`.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-2.
    lambd : float or scalar tensor
        :math:`\lambda \ge 0`, the decay of the step size and of the params, default 1e-4.
    alpha : float or scalar tensor
        :math:`\alpha \ge 0`, the power of the step size's decay, default 0.75.
    t0 : float or scalar tensor
        :math:`t_0 \ge 0`, the number of steps after which averaging starts, default 1e6.
    weight_decay : float or scalar tensor
        :math:`\omega \ge 0`, an L2 penalty added to the gradient, default 0.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the averages (``<param>.asgd.ax``; on the multi-tensor path one
        flat buffer per dtype, ``asgd.ax``, shown per param by ``named_state()``) and the step
        counter ``asgd.t``. The averages are recorded as averages of the params, so
        :func:`swap_averages` accepts these updates.

    Notes
    -----
    torch.optim.ASGD with the same defaults (``lr`` is ``learning_rate``), params and averages
    (torch's ``state["ax"]``) step for step while the learning rate is constant. With a
    learning rate that changes (a shared variable, a schedule), :math:`\eta_t` here uses the
    rate of the current step; torch computes it at the end of the previous step from the rate
    then, so it lags one step behind. torch accepts negative ``lambd``, ``alpha`` and ``t0``;
    here they are refused. optax has no ASGD.

    References
    ----------
    Polyak and Juditsky (1992). Acceleration of stochastic approximation by averaging. SIAM J.
    Control Optim. 30(4): 838-855. Bottou (2012). Stochastic gradient descent tricks. Neural
    Networks: Tricks of the Trade, LNCS 7700.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> averaged = updates.asgd((w**2).sum(), [w], learning_rate=0.1, t0=0.0)
    >>> list(averaged.named_state())
    ['w.asgd.ax', 'asgd.t']
    >>> step = pytensor.function([], [], updates=averaged)
    >>> for _ in range(3):
    ...     _ = step()
    >>> with updates.swap_averages(averaged):  # the params hold their averages in the block
    ...     print(np.round(w.get_value(), 4))
    [0.576 0.576]
    """
    return apply_rule(
        ASGD,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        lambd=lambd,
        alpha=alpha,
        t0=t0,
        weight_decay=weight_decay,
    )


# -- ADOPT ---------------------------------------------------------------------------------------


def _adopt_schedule(h, t, step):
    # The first step only sets v; the clipping bound c = (t - 1)**e is optax's count**e.
    return dict(first_step(h, t, step), clip=(t - 1) ** h.clip_exponent)


def _adopt_kernel(use_clipping: bool, nesterov: bool):
    """ADOPT's equations: with or without the clipping of the normalized gradient, with or
    without Nesterov's look-ahead."""

    def kernel(h, param, grad, m, v):
        u = grad / pt.maximum(pt.sqrt(v), h.epsilon)  # normalized by the v of the steps before
        if use_clipping:
            u = pt.minimum(pt.maximum(u, -h.clip), h.clip)
        m_new = h.beta1 * m + (1 - h.beta1) * u
        step = h.beta1 * m_new + (1 - h.beta1) * u if nesterov else m_new
        v_new = h.beta2 * v + (1 - h.beta2) * pt.sqr(grad)
        first = h.first
        return (
            pt.switch(first, param, param - h.learning_rate * step),
            pt.switch(first, m, m_new),
            pt.switch(first, pt.sqr(grad), v_new),
        )

    return kernel


ADOPT = {
    (use_clipping, nesterov): Rule(
        "adopt",
        _adopt_kernel(use_clipping, nesterov),
        slots=("m", "v"),
        per_step=_adopt_schedule,
        ranges=dict(ADAM_RANGES, clip_exponent=NON_NEGATIVE),
    )
    for use_clipping in (False, True)
    for nesterov in (False, True)
}


def _adopt_rule(use_clipping: bool, nesterov: bool) -> Rule:
    for name, value in (("use_clipping", use_clipping), ("nesterov", nesterov)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"adopt: {name} must be True or False, got {value!r}")
    return ADOPT[bool(use_clipping), bool(nesterov)]


@update_rule
def adopt(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.9999,
    epsilon: Any = 1e-6,
    clip_exponent: Any = 0.25,
    *,
    use_clipping: bool = True,
    nesterov: bool = False,
    clear_nan: bool = False,
) -> Updates:
    r"""ADOPT: Adam with the gradient normalized by the second moment of the steps before.

    The first step only sets :math:`v \leftarrow g^2` (the params and :math:`m` stay as they
    are). Every later step, with :math:`k = t - 1` the number of steps taken before this one:

    .. math::

        u &= \operatorname{clip}\left(\frac{g}{\max(\sqrt{v}, \epsilon)},\,
            -k^{e},\, k^{e}\right) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, u \\
        p &\leftarrow p - \eta\, m \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2

    :math:`v` in :math:`u` is the one of the steps before, so the current gradient does not
    scale itself. With ``use_clipping=False``, :math:`u = g / \max(\sqrt{v}, \epsilon)`; with
    ``nesterov=True`` the step is :math:`p \leftarrow p - \eta\, (\beta_1 m + (1 - \beta_1)\, u)`
    with the new :math:`m`.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    beta1, beta2 : float or scalar tensor
        The decays of the moving averages of the normalized gradient and of the squared
        gradient, in [0, 1), defaults 0.9 and 0.9999.
    epsilon : float or scalar tensor
        :math:`\epsilon`, the floor of :math:`\sqrt{v}`, default 1e-6.
    clip_exponent : float or scalar tensor
        :math:`e \ge 0`, the bound of the clipping grows as :math:`k^{e}`, default 0.25.
    use_clipping : bool
        Clip the normalized gradient, default True.
    nesterov : bool
        Step with Nesterov's look-ahead of :math:`m`, default False.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.adopt`` with the same defaults, step for step, params and state
    (optax's ``mu`` and ``nu`` are ``m`` and ``v``): ``clip_value_fn`` is ``lambda k: k**e``
    of optax's count :math:`k`, its default ``k**0.25``, and ``use_clipping`` and ``nesterov``
    are optax's. optax needs a ``learning_rate``; 1e-3 is the authors' default. A first
    step with :math:`\epsilon = 0` and a zero gradient leaves :math:`m` at 0 here; optax
    puts NaN there (0/0). torch.optim has no ADOPT.

    References
    ----------
    Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa and Matsuo
    (2024). ADOPT: Modified Adam can converge with any :math:`\beta_2` with the optimal rate.
    NeurIPS. arXiv:2411.02853.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.adopt((w**2).sum(), [w], learning_rate=0.1)
    >>> list(result.named_state())
    ['w.adopt.m', 'w.adopt.v', 'adopt.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(3):
    ...     _ = step()
    >>> print(np.round(w.get_value(), 4))  # the first step only sets v
    [0.9711 0.9711]
    """
    return apply_rule(
        _adopt_rule(use_clipping, nesterov),
        loss_or_grads,
        params,
        clear_nan,
        options=("use_clipping", "nesterov"),
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        clip_exponent=clip_exponent,
        use_clipping=use_clipping,
        nesterov=nesterov,
    )


# -- AdEMAMix ------------------------------------------------------------------------------------


def _ademamix(h, param, grad, m1, m2, nu):
    m1 = h.beta1 * m1 + (1 - h.beta1) * grad
    m2 = h.beta3 * m2 + (1 - h.beta3) * grad
    nu = h.beta2 * nu + (1 - h.beta2) * pt.sqr(grad)
    direction = (m1 / h.bc1 + h.alpha * m2) / (pt.sqrt(nu / h.bc2) + h.epsilon)
    return param - h.learning_rate * (direction + h.weight_decay * param), m1, m2, nu


def _ademamix_bias_corrections(h, t, step):
    return dict(bc1=1 - h.beta1**t, bc2=1 - h.beta2**t)


ADEMAMIX = Rule(
    "ademamix",
    _ademamix,
    slots=("m1", "m2", "nu"),
    per_step=_ademamix_bias_corrections,
    ranges=dict(ADAM_RANGES, beta3=UNIT, alpha=NON_NEGATIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def ademamix(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    beta3: Any = 0.9999,
    alpha: Any = 5.0,
    epsilon: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""AdEMAMix: Adam whose step mixes a fast and a slow moving average of the gradient.

    .. math::

        m_1 &\leftarrow \beta_1 m_1 + (1 - \beta_1)\, g \\
        m_2 &\leftarrow \beta_3 m_2 + (1 - \beta_3)\, g \\
        \nu &\leftarrow \beta_2 \nu + (1 - \beta_2)\, g^2 \\
        p &\leftarrow p - \eta \left(\frac{m_1 / (1 - \beta_1^t) + \alpha\, m_2}
            {\sqrt{\nu / (1 - \beta_2^t)} + \epsilon} + \lambda p\right)

    The slow average :math:`m_2` is not bias-corrected, so it fills in slowly. The paper warms
    :math:`\alpha` and :math:`\beta_3` up over the first steps; give them as schedules for
    that (they are evaluated at :math:`t - 1`, as optax evaluates its ``alpha`` and ``b3``).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    beta1, beta2 : float or scalar tensor
        The decays of the fast moving average of the gradient and of the average of its
        square, in [0, 1), defaults 0.9 and 0.999.
    beta3 : float, scalar tensor or schedule
        :math:`\beta_3`, the decay of the slow moving average, in [0, 1), default 0.9999.
    alpha : float, scalar tensor or schedule
        :math:`\alpha \ge 0`, the weight of the slow average, default 5.0.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root of the bias-corrected :math:`\nu`, default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.ademamix`` with the same defaults (``b1``, ``b2``, ``b3``, ``eps`` are
    ``beta1``, ``beta2``, ``beta3``, ``epsilon``), step for step, params and state (``m1``,
    ``m2``, ``nu``); optax needs a ``learning_rate`` and also has ``eps_root`` (0 here) and a
    weight-decay ``mask`` (use :func:`merge_updates` for groups). Its ``alpha`` and ``b3`` as
    callables of optax's count are schedules here. torch.optim has no AdEMAMix.

    References
    ----------
    Pagliardini, Ablin and Grangier (2024). The AdEMAMix optimizer: better, faster, older.
    arXiv:2409.03137.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.ademamix((w**2).sum(), [w]).named_state())
    ['w.ademamix.m1', 'w.ademamix.m2', 'w.ademamix.nu', 'ademamix.t']
    """
    return apply_rule(
        ADEMAMIX,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        alpha=alpha,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )


# -- Adan ----------------------------------------------------------------------------------------


def _adan_schedule(h, t, step):
    # The first step has no previous gradient: its difference is 0 (optax's state.t == 0).
    return dict(
        first_step(h, t, step),
        bc1=1 - h.beta1**t,
        bc2=1 - h.beta2**t,
        bc3=1 - h.beta3**t,
    )


def _adan(h, param, grad, m, v, n, prev):
    diff = pt.switch(h.first > 0, 0, grad - prev)
    m = h.beta1 * m + (1 - h.beta1) * grad
    v = h.beta2 * v + (1 - h.beta2) * diff
    n = h.beta3 * n + (1 - h.beta3) * pt.sqr(grad + (1 - h.beta2) * diff)
    direction = (m / h.bc1 + (1 - h.beta2) * (v / h.bc2)) / (pt.sqrt(n / h.bc3 + h.epsilon_root) + h.epsilon)
    return param - h.learning_rate * (direction + h.weight_decay * param), m, v, n, grad


ADAN = Rule(
    "adan",
    _adan,
    slots=("m", "v", "n", "prev"),
    per_step=_adan_schedule,
    ranges=dict(ADAM_RANGES, beta3=UNIT, epsilon_root=NON_NEGATIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def adan(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.98,
    beta2: Any = 0.92,
    beta3: Any = 0.99,
    epsilon: Any = 1e-8,
    epsilon_root: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adan: adaptive Nesterov momentum, from moving averages of the gradient and its change.

    With :math:`d = g - g_{\mathrm{prev}}` the change of the gradient since the step before
    (:math:`d = 0` on the first step, which has no step before):

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, d \\
        n &\leftarrow \beta_3 n + (1 - \beta_3)\, \bigl(g + (1 - \beta_2)\, d\bigr)^2 \\
        u &= \frac{m / (1 - \beta_1^t) + (1 - \beta_2)\, v / (1 - \beta_2^t)}
            {\sqrt{n / (1 - \beta_3^t) + \epsilon_{\mathrm{root}}} + \epsilon} \\
        p &\leftarrow p - \eta\, (u + \lambda p) \\
        g_{\mathrm{prev}} &\leftarrow g

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    beta1, beta2, beta3 : float or scalar tensor
        The decays of the moving averages of the gradient, of its change and of the squared
        term, in [0, 1), defaults 0.98, 0.92 and 0.99 (each weighs the old average, as
        Adam's betas do; the paper's :math:`\beta_k` are one minus these).
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root, default 1e-8.
    epsilon_root : float or scalar tensor
        :math:`\epsilon_{\mathrm{root}}`, added under the root, default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.adan`` with the same defaults (``b1``, ``b2``, ``b3``, ``eps``, ``eps_root`` are
    ``beta1``, ``beta2``, ``beta3``, ``epsilon``, ``epsilon_root``), step for step, params and
    state (optax's ``m``, ``v``, ``n``, and its previous gradient ``g`` as ``prev``); optax
    needs a ``learning_rate`` and has a weight-decay ``mask`` (use :func:`merge_updates` for
    groups). As in optax, the weight decay is added to the step,
    :math:`p \leftarrow p - \eta(u + \lambda p)`, not the paper's proximal
    :math:`p \leftarrow (p - \eta u) / (1 + \lambda\eta)`, and the averages start at 0 and are
    bias-corrected (the paper starts them at the first gradient). Also as optax 0.2.8, the
    change :math:`d` and its average :math:`v` enter :math:`n` and :math:`u` weighted by
    :math:`1 - \beta_2` (0.08 by default), where the paper and its authors' code weigh them by
    :math:`\beta_2` (0.92; the paper's :math:`1 - \beta_2` in its own notation); optax's pull
    request 1715 proposes the paper's weight. torch.optim has no Adan.

    References
    ----------
    Xie, Zhou, Li, Lin and Yan (2022). Adan: adaptive Nesterov momentum algorithm for faster
    optimizing deep models. arXiv:2208.06677 (TPAMI 2024).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.adan((w**2).sum(), [w]).named_state())
    ['w.adan.m', 'w.adan.v', 'w.adan.n', 'w.adan.prev', 'adan.t']
    """
    return apply_rule(
        ADAN,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        epsilon=epsilon,
        epsilon_root=epsilon_root,
        weight_decay=weight_decay,
    )


# -- LAMB and LARS (per-tensor trust ratios) ----------------------------------------------------


def _trust_ratio(numerator, denominator):
    """``numerator / denominator`` where both norms are positive, else 1."""
    positive = pt.and_(pt.gt(numerator, 0), pt.gt(denominator, 0))
    return pt.switch(positive, numerator / pt.switch(positive, denominator, 1), 1)


def _lamb(h, param, grad, m, v):
    m, v = moments(h, grad, m, v)
    direction = (m / h.bc1) / (pt.sqrt(v) / h.sqrt_bc2 + h.epsilon) + h.weight_decay * param
    trust = _trust_ratio(l2_norm([param]), l2_norm([direction]))
    return param - h.learning_rate * trust * direction, m, v


LAMB = Rule(
    "lamb",
    _lamb,
    slots=("m", "v"),
    per_step=_bias_corrections,
    per_tensor=True,
    ranges=dict(ADAM_RANGES, weight_decay=NON_NEGATIVE),
)


@update_rule
def lamb(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""LAMB: Adam's direction scaled per tensor by a trust ratio, for large batches.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        u &= \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} + \lambda p \\
        p &\leftarrow p - \eta\, \frac{\lVert p \rVert}{\lVert u \rVert}\, u

    with the ratio taken as 1 when either norm is 0; norms over each whole tensor.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 1e-6.
    weight_decay : float or scalar tensor
        :math:`\lambda`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    As ``optax.lamb`` (identity scaling function). Built per parameter (the norms need each
    whole tensor). torch.optim has no LAMB.

    References
    ----------
    You et al. (2020). Large batch optimization for deep learning: training BERT in 76 minutes.
    ICLR. arXiv:1904.00962.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.lamb((w**2).sum(), [w]).named_state())
    ['w.lamb.m', 'w.lamb.v', 'lamb.t']
    """
    return apply_rule(
        LAMB,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )


def _lars(h, param, grad, velocity):
    param_norm = l2_norm([param])
    local = _trust_ratio(
        h.trust_coefficient * param_norm, l2_norm([grad]) + h.weight_decay * param_norm + h.epsilon
    )
    velocity = h.momentum * velocity + h.learning_rate * local * (grad + h.weight_decay * param)
    return param - velocity, velocity


LARS = Rule(
    "lars",
    _lars,
    slots=("velocity",),
    per_tensor=True,
    ranges=dict(
        learning_rate=NON_NEGATIVE,
        momentum=UNIT,
        weight_decay=NON_NEGATIVE,
        trust_coefficient=POSITIVE,
        epsilon=NON_NEGATIVE,
    ),
)


@update_rule
def lars(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 0.1,
    momentum: Any = 0.9,
    weight_decay: Any = 0.0,
    trust_coefficient: Any = 1e-3,
    epsilon: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""LARS: momentum SGD with a per-tensor learning rate from the ratio of norms.

    .. math::

        \ell &= \kappa\, \frac{\lVert p \rVert}{\lVert g \rVert + \lambda \lVert p \rVert
            + \epsilon} \\
        v &\leftarrow \mu v + \eta\, \ell\, (g + \lambda p) \\
        p &\leftarrow p - v

    with :math:`\ell = 1` when either norm is 0; norms over each whole tensor.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, the global learning rate, default 0.1.
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    weight_decay : float or scalar tensor
        :math:`\lambda`, default 0.
    trust_coefficient : float or scalar tensor
        :math:`\kappa`, default 1e-3 (the paper's).
    epsilon : float or scalar tensor
        :math:`\epsilon`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The velocity holds steps scaled by the learning rate, as in :func:`momentum`. Built per
    parameter (the norms need each whole tensor). torch.optim has no LARS.

    References
    ----------
    You, Gitman and Ginsburg (2017). Large batch training of convolutional networks.
    arXiv:1708.03888.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.lars((w**2).sum(), [w]).named_state())
    ['w.lars.velocity']
    """
    return apply_rule(
        LARS,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        trust_coefficient=trust_coefficient,
        epsilon=epsilon,
    )


# -- Adagrad over a window (PyMC) ---------------------------------------------------------------


@functools.cache
def _window_rule(n_win: int) -> Rule:
    def kernel(h, param, grad, *window):
        squared = pt.sqr(grad)
        window = [pt.switch(pt.eq(h.slot, k), squared, old) for k, old in enumerate(window)]
        total = functools.reduce(lambda a, b: a + b, window)
        return (param - h.learning_rate * grad / pt.sqrt(total + h.epsilon), *window)

    def schedule(h, t, step):
        return dict(slot=pt.cast((step - 1) % n_win, t.dtype))

    slots = tuple(f"window{k}" for k in range(n_win))
    ranges = dict(learning_rate=NON_NEGATIVE, epsilon=NON_NEGATIVE)
    return Rule("adagrad_window", kernel, slots=slots, per_step=schedule, ranges=ranges)


def _adagrad_window_rule(n_win: int) -> Rule:
    return _window_rule(COUNT.check("adagrad_window", "n_win", n_win))


@update_rule
def adagrad_window(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    epsilon: Any = 0.1,
    n_win: int = 10,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adagrad over a window: steps scaled by the squared gradients of the last ``n_win`` steps.

    .. math::

        w_{(t - 1) \bmod n} &\leftarrow g^2 \\
        p &\leftarrow p - \eta\, g / \sqrt{\textstyle\sum_{k < n} w_k + \epsilon}

    (the window starts at zero, so the first steps sum fewer squares).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    epsilon : float or scalar tensor
        :math:`\epsilon`, inside the root, default 0.1.
    n_win : int
        :math:`n`, the number of steps in the window, default 10.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    PyMC's default optimizer for variational inference (``pm.adagrad_window``), same
    signature, defaults and numbers. PyMC keeps the window as one array of shape
    ``param.shape + (n_win,)`` and a float index; here it is ``n_win`` slots
    (``W.adagrad_window.window0``, ...) and the integer step counter, so the window runs on the
    multi-tensor path.

    References
    ----------
    Duchi, Hazan and Singer (2011). Adaptive subgradient methods for online learning and
    stochastic optimization. JMLR 12: 2121-2159 (the windowed form is PyMC's).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.adagrad_window((w**2).sum(), [w], n_win=2).named_state())
    ['w.adagrad_window.window0', 'w.adagrad_window.window1', 'adagrad_window.t']
    """
    return apply_rule(
        _adagrad_window_rule(n_win),
        loss_or_grads,
        params,
        clear_nan,
        options=("n_win",),
        learning_rate=learning_rate,
        epsilon=epsilon,
        n_win=n_win,
    )


# -- ESGD ----------------------------------------------------------------------------------------


_MODULUS = 2**31 - 1  # a prime: products of two residues fit in int64


def _random_signs(seed: int, index: int, step, like):
    """Signs (+1 or -1) of ``like``'s shape and dtype, a hash of (seed, param index, step, element).

    A counter-based generator: the same step gives the same vector, so a run resumed from a
    checkpoint draws exactly what the uninterrupted run drew, and there is no generator state.
    Four rounds of ``x <- (x**2 + k) mod (2**31 - 1)`` mix the counters nonlinearly.
    """
    element = pt.arange(like.size, dtype="int64").reshape(like.shape)
    x = (seed + 1_000_003 * index + 7_919 * (step % _MODULUS)) % _MODULUS
    x = (x + 65_537 * element) % _MODULUS
    for k in (12_345, 678_901, 2_345_678, 90_123_457):
        x = (x * x + k) % _MODULUS
    return pt.cast(1 - 2 * (x % 2), like.dtype)


def _hessian_vector_products(seed, loss_or_grads, params, grads, step):
    """``H v`` for each param, with ``v`` random signs drawn anew at every step."""
    if isinstance(loss_or_grads, (list, tuple)):
        raise TypeError(
            "esgd: needs the scalar loss (it differentiates the gradients again for "
            "Hessian-vector products); got a list of gradients"
        )
    vectors = [_random_signs(seed, i, step, param) for i, param in enumerate(params)]
    projection = pt.add(*(pt.sum(g * v) for g, v in zip(grads, vectors)))
    products = pytensor.grad(projection, params, disconnected_inputs="ignore")
    return [[pt.cast(hv, param.dtype) for hv, param in zip(products, params)]]


def _esgd(h, param, grad, hv, d):
    d = d + pt.sqr(hv)
    return param - h.learning_rate * grad / (pt.sqrt(d / h.t) + h.epsilon), d


def _esgd_rule(seed: int) -> Rule:
    seed = Interval(0, _MODULUS, integer=True).check("esgd", "seed", seed)
    return Rule(
        "esgd",
        _esgd,
        slots=("d",),
        per_step=lambda h, t, step: dict(t=t),
        per_tensor=True,
        extra=functools.partial(_hessian_vector_products, int(seed)),
        ranges=dict(learning_rate=NON_NEGATIVE, epsilon=NON_NEGATIVE),
    )


@update_rule
def esgd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    epsilon: Any = 1e-4,
    seed: int = 0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Equilibrated SGD: a diagonal preconditioner from random Hessian-vector products.

    With :math:`v` a random vector of independent signs (:math:`\pm 1`) drawn at every step and
    :math:`H` the Hessian of the loss:

    .. math::

        D &\leftarrow D + (H v)^2 \\
        p &\leftarrow p - \eta\, g / (\sqrt{D / t} + \epsilon)

    :math:`D / t` estimates the squared row norms of :math:`H` (the equilibration
    preconditioner), which stays meaningful where the Hessian is indefinite.

    Parameters
    ----------
    $parameters
        ESGD needs the scalar loss: given a list of gradients it raises ``TypeError``.
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-2.
    epsilon : float or scalar tensor
        :math:`\epsilon`, the damping, default 1e-4.
    seed : int
        Seed of the random vectors, in [0, 2**31 - 1), default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    The paper's Algorithm 1 with :math:`D` updated at every step, and random signs in place of
    its Gaussian :math:`v` (both have :math:`E[v v^\top] = I`, which is all the estimate
    :math:`E[(Hv)^2] = \operatorname{diag}(H^2)` needs; signs have less variance). The signs
    are a hash of the seed, the step count and the element, computed in the graph: no
    generator state, and a resumed run draws what the uninterrupted run drew. :math:`H v` is
    computed by differentiating :math:`\sum g \cdot v` again (an L-op), so a step costs about
    two gradient evaluations. Built per parameter. torch.optim and optax have no ESGD.

    References
    ----------
    Dauphin, de Vries and Bengio (2015). Equilibrated adaptive learning rates for non-convex
    optimization. NeurIPS. arXiv:1502.04390.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.esgd((w**4).sum(), [w], seed=0).named_state())
    ['w.esgd.d', 'esgd.t']
    """
    return apply_rule(
        _esgd_rule(seed),
        loss_or_grads,
        params,
        clear_nan,
        options=("seed",),
        learning_rate=learning_rate,
        epsilon=epsilon,
        seed=seed,
    )


# -- Simplified AdEMAMix -------------------------------------------------------------------------


def _simplified_ademamix(h, param, grad, m, nu):
    m = h.beta1 * m + grad
    nu = h.beta2 * nu + (1 - h.beta2) * pt.sqr(grad)
    direction = (m + h.alpha * grad) / (pt.sqrt(nu / h.bc2 + h.epsilon_root) + h.epsilon)
    return param - h.learning_rate * (direction + h.weight_decay * param), m, nu


def _simplified_ademamix_bias_correction(h, t, step):
    return dict(bc2=1 - h.beta2**t)


SIMPLIFIED_ADEMAMIX = Rule(
    "simplified_ademamix",
    _simplified_ademamix,
    slots=("m", "nu"),
    per_step=_simplified_ademamix_bias_correction,
    ranges=dict(ADAM_RANGES, alpha=NON_NEGATIVE, epsilon_root=NON_NEGATIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def simplified_ademamix(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.99,
    beta2: Any = 0.95,
    alpha: Any = 0.0,
    epsilon: Any = 1e-8,
    epsilon_root: Any = 0.0,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Simplified AdEMAMix: one undamped momentum sum mixed with the current gradient.

    .. math::

        m &\leftarrow \beta_1 m + g \\
        \nu &\leftarrow \beta_2 \nu + (1 - \beta_2)\, g^2 \\
        p &\leftarrow p - \eta \left(\frac{m + \alpha\, g}
            {\sqrt{\nu / (1 - \beta_2^t) + \epsilon_{\mathrm{root}}} + \epsilon}
            + \lambda p\right)

    :math:`m` is a sum, not an average (no :math:`1 - \beta_1` on :math:`g`, no bias
    correction): it grows to about :math:`g / (1 - \beta_1)`, 100 times the gradient with the
    default :math:`\beta_1`, so learning rates are about :math:`1 - \beta_1` times Adam's.
    With :math:`\alpha = 0` it is Adam with :math:`\eta` and :math:`\beta_1` rescaled (and
    :math:`m` not bias-corrected).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3.
    beta1 : float or scalar tensor
        :math:`\beta_1`, the decay of the momentum sum, in [0, 1), default 0.99.
    beta2 : float or scalar tensor
        :math:`\beta_2`, the decay of the moving average of the squared gradient, in [0, 1),
        default 0.95.
    alpha : float, scalar tensor or schedule
        :math:`\alpha \ge 0`, the weight of the current gradient, default 0.0.
    epsilon : float or scalar tensor
        :math:`\epsilon`, added to the root, default 1e-8.
    epsilon_root : float or scalar tensor
        :math:`\epsilon_{\mathrm{root}}`, added under the root, default 0.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.simplified_ademamix`` with the same defaults (``b1``, ``b2``, ``eps``,
    ``eps_root`` are ``beta1``, ``beta2``, ``epsilon``, ``epsilon_root``), step for step,
    params and state (optax's ``m`` and ``n`` are ``m`` and ``nu``); optax needs a
    ``learning_rate`` and has a weight-decay ``mask`` (use :func:`merge_updates` for groups).
    Its ``alpha`` as a callable of optax's count is a schedule here (evaluated at
    :math:`t - 1`, as optax evaluates it). torch.optim has no Simplified AdEMAMix.

    References
    ----------
    Morwani, Vyas, Zhang and Kakade (2025). Connections between schedule-free optimizers,
    AdEMAMix, and accelerated SGD variants. arXiv:2502.02431.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.simplified_ademamix((w**2).sum(), [w]).named_state())
    ['w.simplified_ademamix.m', 'w.simplified_ademamix.nu', 'simplified_ademamix.t']
    """
    return apply_rule(
        SIMPLIFIED_ADEMAMIX,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        alpha=alpha,
        epsilon=epsilon,
        epsilon_root=epsilon_root,
        weight_decay=weight_decay,
    )


# -- MADGRAD -------------------------------------------------------------------------------------


def _madgrad_schedule(h, t, step):
    # t is the step count (1 on the first): optax's sqrt(count + 1).
    return dict(
        first_step(h, t, step),
        lamb=(h.learning_rate + h.epsilon) * pt.sqrt(t),
        third=pt.cast(1.0 / 3.0, t.dtype),
    )


def _madgrad(h, param, grad, grad_sum_sq, s, x0):
    grad = grad + h.weight_decay * param
    x0 = pt.switch(h.first > 0, param, x0)
    grad_sum_sq = grad_sum_sq + h.lamb * pt.sqr(grad)
    s = s + h.lamb * grad
    z = x0 - s / (grad_sum_sq**h.third + h.epsilon)
    new = (1 - h.momentum) * z + h.momentum * param
    return param + (new - param), grad_sum_sq, s, x0


MADGRAD = Rule(
    "madgrad",
    _madgrad,
    slots=("grad_sum_sq", "s", "x0"),
    per_step=_madgrad_schedule,
    ranges=dict(learning_rate=NON_NEGATIVE, momentum=UNIT, epsilon=POSITIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def madgrad(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    momentum: Any = 0.9,
    epsilon: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""MADGRAD: momentumized, adaptive, dual-averaged gradient descent.

    With :math:`x_0` the params before the first step, :math:`g \leftarrow g + \lambda p`
    (coupled weight decay) and :math:`\lambda_t = (\eta + \epsilon)\sqrt{t}`:

    .. math::

        \nu &\leftarrow \nu + \lambda_t\, g^2 \\
        s &\leftarrow s + \lambda_t\, g \\
        z &= x_0 - \frac{s}{\sqrt[3]{\nu} + \epsilon} \\
        p &\leftarrow (1 - \mu)\, z + \mu\, p

    The sums :math:`\nu` and :math:`s` weigh later gradients more (by :math:`\sqrt{t}`); the
    step is taken from the initial params (dual averaging), and :math:`\mu` averages the
    params towards it.

    Parameters
    ----------
    $parameters
    learning_rate : float, scalar tensor or schedule
        :math:`\eta`, default 1e-2 (the paper's default).
    momentum : float or scalar tensor
        :math:`\mu`, in [0, 1), default 0.9.
    epsilon : float or scalar tensor
        :math:`\epsilon > 0`, added to the cube root and to :math:`\eta` in
        :math:`\lambda_t`, default 1e-6.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, L2 weight decay added to the gradient, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.madgrad`` (``add_decayed_weights`` then ``scale_by_madgrad``) with the
    same defaults (``eps`` is ``epsilon``), step for step, params and state (``grad_sum_sq``,
    ``s``, ``x0``: the params before the first step, set on it); optax needs a
    ``learning_rate``. As in optax, :math:`\eta + \epsilon` (not :math:`\eta`) weighs the sums
    and the learning rate is evaluated at optax's count, :math:`t - 1`, when a schedule.
    Unlike the paper's code, the weight decay is added to the gradient of every step (no
    decoupled form). torch.optim has no MADGRAD.

    References
    ----------
    Defazio and Jelassi (2021). Adaptivity without compromise: a momentumized, adaptive, dual
    averaged gradient method for stochastic optimization. arXiv:2101.11075.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.madgrad((w**2).sum(), [w]).named_state())
    ['w.madgrad.grad_sum_sq', 'w.madgrad.s', 'w.madgrad.x0', 'madgrad.t']
    """
    return apply_rule(
        MADGRAD,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        momentum=momentum,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )


# -- SGD with the Polyak step size -----------------------------------------------------------------

# optax's test of a vanishing denominator, jnp.finfo(float).eps, whatever the params' dtype.
_POLYAK_TINY = float(np.finfo(float).eps)
POLYAK_VARIANTS = ("sps", "sps+")


def _polyak_sums(h, param, grad):
    r"""The terms of the squared norm of the gradients optax steps with: it scales them by
    :math:`-s` first, so the norm is :math:`s^2 \|g\|^2`."""
    return (pt.sqr(-h.learning_rate * grad),)


def _polyak_reduce(variant: str):
    def reduce(h, totals):
        r"""The Polyak step size from the squared norm of every param's gradient."""
        (total,) = totals
        gap = h.loss - h.f_min
        if variant == "sps+":
            gap = pt.maximum(gap, 0)
        step = pt.switch(
            total + h.epsilon <= _POLYAK_TINY, 0, pt.minimum(gap / (total + h.epsilon), h.max_learning_rate)
        )
        return dict(polyak_step=pt.cast(step, total.dtype))

    return reduce


def _polyak(h, param, grad):
    return (param + h.polyak_step * (-h.learning_rate * grad),)


POLYAK_SGD = {
    variant: Rule(
        "polyak_sgd",
        _polyak,
        sums=_polyak_sums,
        reduce=_polyak_reduce(variant),
        ranges=dict(learning_rate=NON_NEGATIVE, max_learning_rate=NON_NEGATIVE, epsilon=NON_NEGATIVE),
    )
    for variant in POLYAK_VARIANTS
}


@update_rule
def polyak_sgd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    max_learning_rate: Any = 1.0,
    f_min: Any = 0.0,
    epsilon: Any = 0.0,
    variant: str = "sps",
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""SGD with the Polyak step size, from the loss value and the gradient's norm.

    With :math:`f` the loss at the params before the step, :math:`f^\star` a guess of its
    minimum and :math:`\|g\|^2` the squared norm of every gradient together:

    .. math::

        \gamma &= \min\left(\frac{f - f^\star}{s^2 \|g\|^2 + \epsilon},\ \gamma_{\max}\right) \\
        p &\leftarrow p - \gamma\, s\, g

    and :math:`\gamma = 0` where :math:`s^2 \|g\|^2 + \epsilon` is at most 2.2e-16 (float64's
    machine epsilon, as optax). With ``variant="sps+"`` the gap :math:`f - f^\star` is taken
    as :math:`\max(f - f^\star, 0)`. For :math:`s = 1` the step is
    :math:`\min((f - f^\star) / (\|g\|^2 + \epsilon), \gamma_{\max})\, g`.

    The rule needs the loss value: give it the scalar loss (it computes the gradients and
    builds :math:`f` into the same compiled step); gradients alone are refused.

    Parameters
    ----------
    $parameters
        The Polyak step size needs the loss value: given a list of gradients it raises
        ``TypeError``.
    learning_rate : float, scalar tensor or schedule
        :math:`s \ge 0`, a factor on the gradients before the step size is computed (optax's
        ``scaling``, its ``sgd`` learning rate), default 1.0.
    max_learning_rate : float or scalar tensor
        :math:`\gamma_{\max} \ge 0`, the largest step size, default 1.0.
    f_min : float or scalar tensor
        :math:`f^\star`, a guess of (a lower bound on) the minimum of the loss, default 0.0 (the
        right value for a model that can fit its data exactly).
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to the denominator, default 0.0.
    variant : {"sps", "sps+"}
        ``"sps"`` (default) uses the gap :math:`f - f^\star` as it is, ``"sps+"`` its positive
        part (Garrigos et al. 2023).
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.polyak_sgd`` (``sgd(learning_rate=scaling)`` then ``scale_by_polyak``) with the
    same defaults (``scaling`` and ``eps`` are ``learning_rate`` and ``epsilon``; ``f_min``,
    ``max_learning_rate`` and ``variant`` the same), step for step: where optax's update takes
    ``value=``, this rule takes the scalar loss and computes its value in the step. As in
    optax, :math:`s` enters the squared norm too (:math:`s^2\|g\|^2`), a schedule is
    evaluated at optax's count, :math:`t - 1`, and the threshold 2.2e-16 does not depend on
    the dtype. A loss below ``f_min`` gives a negative step size (a step up the gradient)
    with ``"sps"``. No state but the step counter of a learning-rate schedule. torch.optim
    has no Polyak step size.

    References
    ----------
    Loizou, Vaswani, Laradji and Lacoste-Julien (2021). Stochastic Polyak step-size for SGD:
    an adaptive learning rate for fast convergence. AISTATS. arXiv:2002.10542.

    Garrigos, Gower and Schaipp (2023). Function value learning: adaptive learning rates based
    on the Polyak stepsize and function splitting in ERM. arXiv:2307.14528.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0, 2.0, 3.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.polyak_sgd((w**2).sum(), [w]))
    >>> _ = step()
    >>> w.get_value()
    array([0.5, 1. , 1.5])
    """
    if variant not in POLYAK_VARIANTS:
        raise ValueError(f"polyak_sgd: variant must be 'sps' or 'sps+', got {variant!r}")
    rule = POLYAK_SGD[variant]
    hyper = dict(
        learning_rate=learning_rate, max_learning_rate=max_learning_rate, f_min=f_min, epsilon=epsilon
    )
    checked = apply_rule(rule, None, None, clear_nan, **hyper)
    if loss_or_grads is None and params is None:
        return checked
    if loss_or_grads is None or isinstance(loss_or_grads, (list, tuple)):
        prepare_grads("polyak_sgd", loss_or_grads, params)  # the params' and arguments' errors first
        raise TypeError(
            "polyak_sgd: needs the scalar loss (the Polyak step size is computed from its value "
            "f(x)); got a list of gradients"
        )
    loss = pt.as_tensor_variable(loss_or_grads)
    return apply_rule(rule, loss, params, clear_nan, loss=loss, **hyper)


# -- ACProp --------------------------------------------------------------------------------------


def _acprop_schedule(h, t, step):
    # The denominator reads s before this step, bias-corrected by the step before (t - 1); the
    # first step has none and divides by 1 (optax's nu_hat = 1 at count 0).
    return dict(first_step(h, t, step), bc2=1 - h.beta2 ** pt.maximum(t - 1, 1))


def _acprop(h, param, grad, m, s):
    s_hat = pt.switch(h.first > 0, 1, s / h.bc2)
    direction = grad / (pt.sqrt(s_hat) + h.epsilon)
    s = h.beta2 * s + (1 - h.beta2) * pt.sqr(grad - m) + h.epsilon_root
    m = first_moment(h, grad, m)
    return param - h.learning_rate * (direction + h.weight_decay * param), m, s


ACPROP = Rule(
    "acprop",
    _acprop,
    slots=("m", "s"),
    per_step=_acprop_schedule,
    ranges=dict(ADAM_RANGES, epsilon_root=NON_NEGATIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def acprop(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-16,
    epsilon_root: Any = 1e-16,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""ACProp: AdaBelief's centred second moment, applied one step late (asynchronously).

    The step divides the gradient by the bias-corrected second moment of the step *before*
    (:math:`\hat s_0 = 1` on the first step), so the denominator does not depend on the
    gradient it divides; then the moments take the new gradient, the second one around the
    previous moving average:

    .. math::

        \hat s_{t-1} &= s_{t-1} / (1 - \beta_2^{t-1}) \quad (t > 1), \qquad \hat s_0 = 1 \\
        p &\leftarrow p - \eta \left(\frac{g_t}{\sqrt{\hat s_{t-1}} + \epsilon} + \lambda p\right) \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2)\, (g_t - m_{t-1})^2 + \epsilon_{\mathrm{root}} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, default 1e-3 (optax's ``acprop`` has none; Adam's and AdaBelief's
        usual value).
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to the root, default 1e-16.
    epsilon_root : float or scalar tensor
        :math:`\epsilon_{\mathrm{root}} \ge 0`, added to :math:`s` at every step, default 1e-16.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.acprop`` with the same defaults (``b1``, ``b2``, ``eps``, ``eps_root`` are
    ``beta1``, ``beta2``, ``epsilon``, ``epsilon_root``), step for step, params and state
    (optax's ``mu`` and ``nu`` are ``m`` and ``s``). As optax's code, the residual of
    :math:`s` is taken around the previous average :math:`m_{t-1}`, where optax's docstring
    writes :math:`m_t`; the numerator is the raw gradient :math:`g_t`, not
    :math:`m_t`. optax's weight-decay ``mask`` is not taken (use :func:`merge_updates` for
    groups). torch.optim has no ACProp.

    References
    ----------
    Zhuang, Ding, Tang, Dvornek, Tatikonda and Duncan (2021). Momentum centering and
    asynchronous update for adaptive gradient methods. NeurIPS. arXiv:2110.05454.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.acprop((w**2).sum(), [w]).named_state())
    ['w.acprop.m', 'w.acprop.s', 'acprop.t']
    """
    return apply_rule(
        ACPROP,
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
