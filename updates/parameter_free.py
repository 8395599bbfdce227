r"""Learning-rate-free rules: COCOB, DoG, DoWG and D-Adaptation's AdamW.

Each of these rules estimates its own step size from what it has seen, so that its
``learning_rate`` is only a factor (1.0 by default) or a schedule on top of the estimate:

- COCOB (Orabona and Tommasi 2017) bets, per element, a fraction of the "wealth" won so far on
  the gradients' direction; elementwise, like Adam (one multi-tensor node).
- DoG (Ivgi et al. 2023) and DoWG (Khaled et al. 2023) take SGD's step size from the largest
  distance travelled from the initial params over the gradients' norms seen so far.
- D-Adaptation's AdamW (Defazio and Mishchenko 2023) scales Adam's steps by :math:`d`, a lower
  bound on the distance to a solution grown from sums over the gradients.

Prodigy, D-Adaptation's successor, lives in :mod:`updates.prodigy`. DoG, DoWG and D-Adaptation
share its shape: their scalars (a distance, sums of norms) are sums over *every* param. Each
gives the engine (:class:`~updates.engine.Rule`) the elementwise terms of those sums (``sums``)
and what it makes of them (``reduce``): the sums are computed once per step from the gradients
and the state before the step, in one node over every param
(``updates.reductions.FusedSums``), and carried from step to step as scalars of the rule
(``dog.max_dist``); the step's elementwise kernel then sees them as scalars, in the multi-tensor
node. Each rule computes what its ``optax.contrib`` namesake computes (optax 0.2.8);
the tests compare params and every piece of state with optax live.
"""

from __future__ import annotations

from typing import Any

import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, POSITIVE, UNIT
from updates.container import Updates
from updates.engine import Rule, apply_rule, first_step
from updates.prodigy import _x0
from updates.public import update_rule

__all__ = ["cocob", "dog", "dowg", "dadapt_adamw"]


# -- COCOB ----------------------------------------------------------------------------------------


def _cocob(h, param, grad, x0, theta, scale, subgradients, reward):
    g = h.learning_rate * (grad + h.weight_decay * param)
    x0 = _x0(h, param, x0)
    scale = pt.maximum(pt.switch(h.first, h.epsilon, scale), abs(g))
    subgradients = subgradients + abs(g)
    reward = pt.maximum(reward - g * (param - x0), 0)
    theta = theta - g
    bet = theta / (scale * pt.maximum(subgradients + scale, h.alpha * scale))
    return x0 + bet * (scale + reward), x0, theta, scale, subgradients, reward


COCOB = Rule(
    "cocob",
    _cocob,
    slots=("x0", "theta", "scale", "subgradients", "reward"),
    per_step=first_step,
    ranges=dict(learning_rate=NON_NEGATIVE, alpha=POSITIVE, epsilon=POSITIVE, weight_decay=NON_NEGATIVE),
)


@update_rule
def cocob(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    alpha: Any = 100.0,
    epsilon: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""COCOB-Backprop: continuous coin betting, per element, without a learning rate.

    With :math:`c = \eta\,(g + \lambda p)` the scaled gradient, :math:`x_0` the initial params
    and every operation elementwise:

    .. math::

        L &\leftarrow \max(L, |c|) \quad (L = \epsilon \text{ before the first step}) \\
        G &\leftarrow G + |c| \\
        R &\leftarrow \max(R - c\,(p - x_0),\ 0) \\
        \theta &\leftarrow \theta - c \\
        p &\leftarrow x_0 + \frac{\theta}{L \max(G + L,\ \alpha L)}\,(L + R)

    :math:`L` is the largest gradient seen, :math:`G` the sum of their magnitudes, :math:`R`
    the reward (the wealth won by the bets) and :math:`\theta` the sum of the negative
    gradients: each param is set to its initial value plus a bet of a fraction of its wealth.

    Parameters
    ----------
    $parameters
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, a factor on the gradients (optax's, to inject a schedule), default
        1.0.
    alpha : float or scalar tensor
        :math:`\alpha > 0`, bounds the fraction bet early on (the paper's), default 100.0.
    epsilon : float or scalar tensor
        :math:`\epsilon > 0`, the initial :math:`L` (it divides), default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, an L2 penalty added to the gradients, default 0.0.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the slots ``<param>.cocob.x0`` (the initial params, set on the
        first step), ``.theta``, ``.scale`` (:math:`L`, 0 until the first step, which starts
        from :math:`\epsilon`), ``.subgradients`` (:math:`G`) and ``.reward``, and the step
        counter ``cocob.t``.

    Notes
    -----
    ``optax.contrib.cocob`` with the same defaults, step for step, params and state (optax's
    ``eps`` is ``epsilon``; its state's ``init_particles``, ``cumulative_gradients``,
    ``scale``, ``subgradients`` and ``reward`` are ``x0``, ``theta``, ``scale``,
    ``subgradients`` and ``reward``). optax's weight-decay ``mask`` is left out (give the
    params to decay to one call and the others to another, or use ``merge_updates``). A
    learning rate given as a schedule is evaluated at :math:`t - 1`, as optax evaluates its
    callable at its count. The paper's :math:`L` starts at 0; optax's, and this one, at
    :math:`\epsilon`, so that a zero gradient does not divide 0 by 0.

    References
    ----------
    Orabona and Tommasi (2017). Training Deep Networks without Learning Rates Through Coin
    Betting. NeurIPS. arXiv:1705.07795 (Algorithm 2).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.cocob((w**2).sum(), [w])
    >>> list(result.named_state())  # doctest: +NORMALIZE_WHITESPACE
    ['w.cocob.x0', 'w.cocob.theta', 'w.cocob.scale', 'w.cocob.subgradients', 'w.cocob.reward',
     'cocob.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(50):
    ...     _ = step()
    >>> print(bool((abs(w.get_value()) < 1).all()))
    True
    """
    return apply_rule(
        COCOB,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        alpha=alpha,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )


# -- DoG and DoWG -----------------------------------------------------------------------------------


def _decayed(h, param, grad):
    """The gradient with optax's ``add_decayed_weights`` in front: :math:`g + \\lambda p`."""
    return grad + h.weight_decay * param


def _sums(h, param, grad, x0):
    """The terms of the squared distance from the initial params (0 on the first step) and of
    the squared norm of the decayed gradients."""
    # abs: PyTensor 2.38 rewrites sqrt(sum(sqr(x))) of a lone scalar to x, sign included
    return pt.sqr(abs(_x0(h, param, x0) - param)), pt.sqr(_decayed(h, param, grad))


INIT_STEPS = ("distance", "learning_rate", "heuristic")


def _dog_sums(init_step_type: str):
    def sums(h, param, grad, x0):
        """:func:`_sums`, and with the heuristic first step the squares of the params (on the
        first step, :math:`x_0`)."""
        terms = _sums(h, param, grad, x0)
        return (*terms, pt.sqr(abs(param))) if init_step_type == "heuristic" else terms

    return sums


def _dog_reduce(init_step_type: str):
    def reduce(h, totals):
        r"""The new :math:`\bar r`, :math:`G` and the step size :math:`\bar r / \sqrt{G + \epsilon}`
        (the given one on the first step, for ``init_step=("learning_rate", value)``)."""
        distance, gradients, *initial = totals
        if init_step_type == "heuristic":  # a * (1 + |x0|): the params on the first step are x0
            r_epsilon = h.init_step * (1 + pt.sqrt(initial[0]))
        elif init_step_type == "distance":
            r_epsilon = h.init_step
        else:
            r_epsilon = pt.zeros_like(h.max_dist)
        max_dist = pt.maximum(pt.switch(h.first, r_epsilon, h.max_dist), pt.sqrt(distance))
        sum_sq_norm_grads = h.sum_sq_norm_grads + gradients
        rate = max_dist / pt.sqrt(sum_sq_norm_grads + h.epsilon)
        if init_step_type == "learning_rate":
            rate = pt.switch(h.first, h.init_step, rate)
        return dict(max_dist=max_dist, sum_sq_norm_grads=sum_sq_norm_grads, rate=rate)

    return reduce


def _scaled_sgd(h, param, grad, x0):
    """SGD with the step size the sums gave: :math:`p - \\eta\\,(\\text{rate}\\,(g + \\lambda p))`."""
    return param - h.learning_rate * (h.rate * _decayed(h, param, grad)), _x0(h, param, x0)


DOG_RANGES = dict(learning_rate=NON_NEGATIVE, epsilon=NON_NEGATIVE, weight_decay=NON_NEGATIVE)

DOG = {
    kind: Rule(
        "dog",
        _scaled_sgd,
        slots=("x0",),
        per_step=first_step,
        carry=(("max_dist", 0.0), ("sum_sq_norm_grads", 0.0)),
        # a distance of 0 never grows (the params never move); a first learning rate may be 0
        ranges=dict(DOG_RANGES, init_step=NON_NEGATIVE if kind == "learning_rate" else POSITIVE),
        sums=_dog_sums(kind),
        reduce=_dog_reduce(kind),
    )
    for kind in INIT_STEPS
}


@update_rule
def dog(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    init_step: tuple[str, Any] = ("heuristic", 1e-6),
    epsilon: Any = 1e-8,
    weight_decay: Any = None,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""DoG (Distance over Gradients): SGD whose step size is the distance travelled over the
    gradients' norms.

    With :math:`x_0` the initial params, :math:`u = g + \lambda p` and norms over every param
    together:

    .. math::

        \bar r &\leftarrow \max(\bar r,\ \|p - x_0\|) \quad (\bar r = r_\epsilon
            \text{ before the first step}) \\
        G &\leftarrow G + \|u\|^2 \\
        p &\leftarrow p - \eta\, \frac{\bar r}{\sqrt{G + \epsilon}}\, u

    ``init_step`` sets the first step: ``("distance", r)`` gives :math:`r_\epsilon = r`;
    ``("heuristic", a)`` gives :math:`r_\epsilon = a\,(1 + \|x_0\|)`; ``("learning_rate",
    s)`` gives :math:`r_\epsilon = 0` and the step size :math:`s` on the first step (in place
    of :math:`\bar r / \sqrt{G + \epsilon}`).

    Parameters
    ----------
    $parameters
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, a factor (or schedule) on the estimated step size, default 1.0.
    init_step : tuple of (str, float or scalar tensor)
        ``(kind, value)``, kind one of ``"distance"``, ``"learning_rate"`` and
        ``"heuristic"`` (above), default ``("heuristic", 1e-6)``. The value must be > 0 (a
        distance of 0 never grows), or >= 0 for ``"learning_rate"``. The authors suggest
        ``("heuristic", 1e-6)``, or 1e-4 for a model with batch normalization: small enough
        that the first step cannot make the model diverge.
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to :math:`G` for numerical stability, default 1e-8.
    weight_decay : float, scalar tensor or None
        :math:`\lambda \ge 0`, an L2 penalty added to the gradients before the norms, default
        None (none, the same as 0).
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the carried scalars ``dog.max_dist`` (:math:`\bar r`, 0 until the
        first step, which starts from :math:`r_\epsilon`) and ``dog.sum_sq_norm_grads``
        (:math:`G`), the slots ``<param>.dog.x0`` (the initial params, set on the first step)
        and the step counter ``dog.t``. The norms cover every param; with params of several
        dtypes each dtype keeps its own carried scalars (``dog.max_dist[float32]``), computed
        from the norms over all the params in that dtype.

    Notes
    -----
    ``optax.contrib.dog`` with the same defaults, step for step, params and state (optax's
    ``eps`` is ``epsilon``; its state's ``init_params``, ``max_dist`` and
    ``sum_sq_norm_grads`` are ``x0``, ``dog.max_dist`` and ``dog.sum_sq_norm_grads``; its
    ``is_init_step`` is the step counter's first step). The heuristic's :math:`\|x_0\|` is
    taken from the params at the first step, where optax takes it from the params given to
    its ``init``. optax's weight-decay ``mask`` is left out. A learning rate given as a
    schedule is evaluated at :math:`t - 1`, as optax evaluates its callable at its count. The
    authors recommend averaging the params (e.g. :func:`updates.apply_ema`).

    References
    ----------
    Ivgi, Hinder and Carmon (2023). DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule. ICML. arXiv:2302.12022.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.dog((w**2).sum(), [w], init_step=("distance", 0.1))
    >>> list(result.named_state())
    ['dog.max_dist', 'dog.sum_sq_norm_grads', 'w.dog.x0', 'dog.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(20):
    ...     _ = step()
    >>> print(bool(result.named_state()["dog.max_dist"] > 0.1))  # the distance travelled grew
    True
    """
    kind, value = _init_step("dog", init_step)
    return apply_rule(
        DOG[kind],
        loss_or_grads,
        params,
        clear_nan,
        options=("init_step_type",),
        learning_rate=learning_rate,
        init_step=value,
        epsilon=epsilon,
        weight_decay=0.0 if weight_decay is None else weight_decay,
        init_step_type=kind,
    )


def _init_step(who: str, init_step: Any) -> tuple[str, Any]:
    """``(kind, value)`` from ``init_step``, or a TypeError / ValueError naming ``who``."""
    kinds = ", ".join(map(repr, INIT_STEPS))
    if not isinstance(init_step, (tuple, list)) or len(init_step) != 2:
        raise TypeError(
            f"{who}: init_step must be a pair (kind, value), kind one of {kinds}, got {init_step!r}"
        )
    kind, value = init_step
    if kind not in INIT_STEPS:
        raise ValueError(f"{who}: init_step's kind must be one of {kinds}, got {kind!r}")
    return kind, value


def _dowg_reduce(h, totals):
    r"""The new :math:`\bar r^2`, :math:`v` and the step size :math:`\bar r^2 / (\sqrt v + \epsilon)`."""
    distance, gradients = totals
    estim_sq_dist = pt.maximum(pt.switch(h.first, h.init_estim_sq_dist, h.estim_sq_dist), distance)
    weighted_sq_norm_grads = estim_sq_dist * gradients + h.weighted_sq_norm_grads
    rate = estim_sq_dist / (pt.sqrt(weighted_sq_norm_grads) + h.epsilon)
    return dict(estim_sq_dist=estim_sq_dist, weighted_sq_norm_grads=weighted_sq_norm_grads, rate=rate)


DOWG = Rule(
    "dowg",
    _scaled_sgd,
    slots=("x0",),
    per_step=first_step,
    carry=(("estim_sq_dist", 0.0), ("weighted_sq_norm_grads", 0.0)),
    ranges=dict(
        learning_rate=NON_NEGATIVE, init_estim_sq_dist=POSITIVE, epsilon=POSITIVE, weight_decay=NON_NEGATIVE
    ),
    sums=_sums,
    reduce=_dowg_reduce,
)


@update_rule
def dowg(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    init_estim_sq_dist: Any = None,
    epsilon: Any = 1e-4,
    weight_decay: Any = None,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""DoWG (Distance over Weighted Gradients): SGD whose step size is the squared distance
    travelled over a distance-weighted sum of the gradients' norms.

    With :math:`x_0` the initial params, :math:`u = g + \lambda p` and norms over every param
    together:

    .. math::

        \bar r^2 &\leftarrow \max(\bar r^2,\ \|p - x_0\|^2) \quad (\bar r^2 = r_0^2
            \text{ before the first step}) \\
        v &\leftarrow v + \bar r^2 \|u\|^2 \\
        p &\leftarrow p - \eta\, \frac{\bar r^2}{\sqrt v + \epsilon}\, u

    Parameters
    ----------
    $parameters
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, a factor (or schedule) on the estimated step size, default 1.0.
    init_estim_sq_dist : float, scalar tensor or None
        :math:`r_0^2 > 0`, an initial guess of the squared distance to a solution, default
        None (:math:`\epsilon`).
    epsilon : float or scalar tensor
        :math:`\epsilon > 0`, added to :math:`\sqrt v` (it divides), and the initial guess of
        the squared distance when ``init_estim_sq_dist`` is None, default 1e-4.
    weight_decay : float, scalar tensor or None
        :math:`\lambda \ge 0`, an L2 penalty added to the gradients before the norms, default
        None (none, the same as 0).
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the carried scalars ``dowg.estim_sq_dist`` (:math:`\bar r^2`, 0
        until the first step, which starts from :math:`r_0^2`) and
        ``dowg.weighted_sq_norm_grads`` (:math:`v`), the slots ``<param>.dowg.x0`` (the initial
        params, set on the first step) and the step counter ``dowg.t``. Its sums cover every param,
        as :func:`dog`'s.

    Notes
    -----
    ``optax.contrib.dowg`` with the same defaults, step for step, params and state (optax's
    ``eps`` is ``epsilon``; its state's ``init_params``, ``estim_sq_dist`` and
    ``weighted_sq_norm_grads`` are ``x0``, ``dowg.estim_sq_dist`` and
    ``dowg.weighted_sq_norm_grads``). optax's weight-decay ``mask`` is left out. A learning
    rate given as a schedule is evaluated at :math:`t - 1`, as optax evaluates its callable
    at its count. The paper's step has no :math:`\epsilon` (optax's guard against a first
    zero gradient).

    References
    ----------
    Khaled, Mishchenko and Jin (2023). DoWG Unleashed: An Efficient Universal Parameter-Free
    Gradient Descent Method. NeurIPS. arXiv:2305.16284.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.dowg((w**2).sum(), [w])
    >>> list(result.named_state())
    ['dowg.estim_sq_dist', 'dowg.weighted_sq_norm_grads', 'w.dowg.x0', 'dowg.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(20):
    ...     _ = step()
    >>> print(bool(result.named_state()["dowg.estim_sq_dist"] > 1e-4))  # the distance grew
    True
    """
    if init_estim_sq_dist is None:
        init_estim_sq_dist = epsilon
    return apply_rule(
        DOWG,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        epsilon=epsilon,  # first: the default of init_estim_sq_dist, whose check would name it
        init_estim_sq_dist=init_estim_sq_dist,
        weight_decay=0.0 if weight_decay is None else weight_decay,
    )


# -- D-Adaptation AdamW ------------------------------------------------------------------------------


def _dadapt_per_step(h, t, step):
    r"""The scalars of one step before the sums: :math:`d` of the steps before (:math:`d_0` on
    the first; the carried scalar holds 0 until then), Adam's bias correction folded into the
    step size :math:`d\,\eta_t`, and :math:`\sqrt{\beta_2}`."""
    d = pt.switch(pt.eq(step, 1), h.d0, h.d)
    dlr = d * h.learning_rate * (pt.sqrt(1 - h.beta2**t) / (1 - h.beta1**t))
    return dict(d_prev=d, dlr=dlr, sb2=pt.sqrt(h.beta2))


def _dadapt_s(h, grad, s):
    return h.sb2 * s + (1 - h.sb2) * h.dlr * grad


def _dadapt_sums(h, param, grad, m, v, s):
    r"""The terms of the sums over every param: :math:`g\,s / (\sqrt v + \epsilon)` and :math:`|s'|`."""
    return grad * s / (pt.sqrt(v) + h.epsilon), abs(_dadapt_s(h, grad, s))


def _dadapt_reduce(h, totals):
    r"""The new weighted numerator and :math:`d` from the sums."""
    inner, norm = totals
    numerator = h.sb2 * h.numerator + (1 - h.sb2) * h.dlr * inner
    # no information yet (every s zero: a zero gradient, a zero learning rate): d stays, where
    # optax's becomes 0/0 = NaN (and the params follow it one step later)
    grown = pt.maximum(h.d_prev, numerator / ((1 - h.sb2) * pt.switch(norm > 0, norm, 1)))
    return dict(numerator=numerator, d=pt.switch(norm > 0, grown, h.d_prev))


def _dadapt_adamw(h, param, grad, m, v, s):
    m = h.beta1 * m + (1 - h.beta1) * h.dlr * grad
    v = h.beta2 * v + (1 - h.beta2) * grad * grad
    new_param = param - h.weight_decay * h.dlr * param - m / (pt.sqrt(v) + h.epsilon)
    return new_param, m, v, _dadapt_s(h, grad, s)


DADAPT_ADAMW = Rule(
    "dadapt_adamw",
    _dadapt_adamw,
    slots=("m", "v", "s"),
    per_step=_dadapt_per_step,
    carry=(("d", 0.0), ("numerator", 0.0)),
    ranges=dict(
        learning_rate=NON_NEGATIVE,
        beta1=UNIT,
        beta2=UNIT,
        epsilon=NON_NEGATIVE,
        d0=POSITIVE,
        weight_decay=NON_NEGATIVE,
    ),
    sums=_dadapt_sums,
    reduce=_dadapt_reduce,
)


@update_rule
def dadapt_adamw(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    d0: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""D-Adaptation AdamW: AdamW whose step size :math:`d` is a growing lower bound on the
    distance to a solution.

    With :math:`d` the estimate before the step (:math:`d_0` on the first), :math:`t` the step
    count (1 on the first step), :math:`\beta_3 = \sqrt{\beta_2}` and sums over every element of
    every param:

    .. math::

        \hat\eta &= d\, \eta\, \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
        r &\leftarrow \beta_3 r + (1 - \beta_3)\, \hat\eta
            \textstyle\sum g\, s / (\sqrt v + \epsilon) \quad (s, v \text{ before the step}) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, \hat\eta\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        s &\leftarrow \beta_3 s + (1 - \beta_3)\, \hat\eta\, g \\
        d &\leftarrow \max\big(d,\ r / ((1 - \beta_3) \textstyle\sum |s|)\big) \\
        p &\leftarrow p - \lambda\, \hat\eta\, p - m / (\sqrt v + \epsilon)

    :math:`\eta` is a schedule on top of the estimated step (1.0 by default; the authors
    recommend a linear decay from 1.0 to 0 with a 0-20% warmup).

    Parameters
    ----------
    $parameters
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, a factor on the estimated step size, default 1.0.
    $betas
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to :math:`\sqrt v`, default 1e-8.
    d0 : float or scalar tensor
        :math:`d_0 > 0`, the initial (under-)estimate of :math:`d`, default 1e-6.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay scaled by the step size, default 0.0.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the carried scalars ``dadapt_adamw.d`` (:math:`d`, 0 until the
        first step, which starts from :math:`d_0`) and ``dadapt_adamw.numerator``
        (:math:`r`), the slots ``<param>.dadapt_adamw.m``, ``.v`` and ``.s``, and the step
        counter ``dadapt_adamw.t``. Its sums cover every param; with params of several dtypes
        each dtype keeps its own carried scalars.

    Notes
    -----
    ``optax.contrib.dadapt_adamw`` with the same defaults, step for step, params and state
    (optax's ``betas`` are ``beta1, beta2``, ``eps`` is ``epsilon`` and ``estim_lr0`` is
    ``d0``; its state's ``exp_avg``, ``exp_avg_sq``, ``grad_sum``, ``estim_lr`` and
    ``numerator_weighted`` are ``m``, ``v``, ``s``, ``dadapt_adamw.d`` and
    ``dadapt_adamw.numerator``). As in optax, the new :math:`d` enters the next step only, and
    :math:`m` holds :math:`\hat\eta`-scaled gradients. Where every :math:`s` is zero (a zero
    gradient, a zero learning rate) :math:`d` stays as it is; optax's becomes 0/0, NaN, and so
    do the params a step later (as :func:`updates.prodigy`). A learning rate given as a
    schedule is evaluated at :math:`t - 1`, as optax evaluates its callable at its count. The
    authors' PyTorch package (``dadaptation``) differs in small ways; torch.optim has no
    D-Adaptation.

    References
    ----------
    Defazio and Mishchenko (2023). Learning-Rate-Free Learning by D-Adaptation. ICML.
    arXiv:2301.07733 (Algorithm 4).

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.dadapt_adamw((w**2).sum(), [w])
    >>> list(result.named_state())  # doctest: +NORMALIZE_WHITESPACE
    ['dadapt_adamw.d', 'dadapt_adamw.numerator', 'w.dadapt_adamw.m', 'w.dadapt_adamw.v',
     'w.dadapt_adamw.s', 'dadapt_adamw.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(20):
    ...     _ = step()
    >>> print(bool(result.named_state()["dadapt_adamw.d"] > 1e-6))  # d grew from d0
    True
    """
    return apply_rule(
        DADAPT_ADAMW,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        d0=d0,
        weight_decay=weight_decay,
    )
