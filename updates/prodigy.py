r"""Prodigy (Mishchenko and Defazio 2023): Adam with a learning rate it estimates itself.

Prodigy scales Adam's steps by :math:`d`, an estimate of the distance from the initial params to
a solution, grown from a small :math:`d_0` by sums over *every* param: the gradients' inner
product with the distance travelled, and the :math:`\ell_1` norm of a weighted sum of the
gradients. Those sums make the step's scalars depend on all the params at once: the rule gives
the engine (:class:`~updates.engine.Rule`) their elementwise terms (``sums``) and what it makes
of them (``reduce``), which are computed once per step from the gradients and the state before
the step, in one node over every param (``updates.reductions.FusedSums``); the step's
elementwise kernel then sees them as scalars, in the multi-tensor node as Adam's does.
:math:`d` and the weighted numerator are carried scalars (``prodigy.d``, ``prodigy.numerator``),
as Schedule-Free's weights are. The rule computes what ``optax.contrib.prodigy`` computes (optax
0.2.8); the tests compare params and every piece of state with optax live.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, POSITIVE, UNIT, Interval, is_concrete, is_schedule
from updates.container import Updates
from updates.engine import Rule, apply_rule
from updates.public import update_rule

__all__ = ["prodigy"]

RANGES = dict(
    learning_rate=NON_NEGATIVE,
    beta1=UNIT,
    beta2=UNIT,
    beta3=Interval(0.0, 1.0, high_closed=True),
    epsilon=NON_NEGATIVE,
    d0=POSITIVE,  # divides
    d_coef=NON_NEGATIVE,
    weight_decay=NON_NEGATIVE,
)


def _per_step(safeguard_warmup: bool):
    def per_step(h, t, step):
        r"""The scalars of one step before the sums: :math:`d` of the steps before (:math:`d_0` on
        the first; the carried scalar holds 0 until then), Adam's bias correction folded into
        the step size :math:`d\,\eta_t`, and the weight of this step's gradient in :math:`s`."""
        first = pt.eq(step, 1)
        d = pt.switch(first, h.d0, h.d)
        dlr = d * h.learning_rate * (pt.sqrt(1 - h.beta2**t) / (1 - h.beta1**t))
        return dict(first=pt.cast(first, t.dtype), d_prev=d, dlr=dlr, s_rate=d if safeguard_warmup else dlr)

    return per_step


def _s(h, grad, s):
    r"""The new weighted sum of the gradients: :math:`\beta_3 s + (\cdot)\, d g / d_0`."""
    return h.beta3 * s + h.s_rate * (h.d_prev * grad) / h.d0


def _x0(h, param, x0):
    """The initial params: the params themselves on the first step."""
    return pt.switch(h.first, param, x0)


def _sums(h, param, grad, m, v, s, x0):
    r"""The terms of the sums over every param: :math:`g\,(x_0 - p)` and :math:`|s|`."""
    return grad * (_x0(h, param, x0) - param), abs(_s(h, grad, s))


def _reduce(h, totals):
    """The new weighted numerator and :math:`d` from the sums."""
    inner, norm = totals
    numerator = h.beta3 * h.numerator + (h.d_prev / h.d0) * h.dlr * inner
    # no information yet (every s zero: a zero gradient, a zero learning rate): d stays, where
    # optax's becomes 0/0 = NaN and takes every param with it
    grown = pt.maximum(h.d_prev, h.d_coef * numerator / pt.switch(norm > 0, norm, 1))
    return dict(numerator=numerator, d=pt.switch(norm > 0, grown, h.d_prev))


def _prodigy(h, param, grad, m, v, s, x0):
    dg = h.d_prev * grad
    m = h.beta1 * m + (1 - h.beta1) * dg
    v = h.beta2 * v + (1 - h.beta2) * dg * dg
    step = h.weight_decay * h.dlr * param + h.dlr * m / (pt.sqrt(v) + h.d * h.epsilon)
    return param - step, m, v, _s(h, grad, s), _x0(h, param, x0)


PRODIGY = {
    safeguard: Rule(
        "prodigy",
        _prodigy,
        slots=("m", "v", "s", "x0"),
        per_step=_per_step(safeguard),
        carry=(("d", 0.0), ("numerator", 0.0)),
        ranges=RANGES,
        sums=_sums,
        reduce=_reduce,
    )
    for safeguard in (False, True)
}


@update_rule
def prodigy(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    beta3: Any = None,
    epsilon: Any = 1e-8,
    d0: Any = 1e-6,
    d_coef: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    safeguard_warmup: bool = False,
    clear_nan: bool = False,
) -> Updates:
    r"""Prodigy: AdamW whose step size :math:`d` estimates the distance to a solution.

    With :math:`d` the estimate before the step (:math:`d_0` on the first), :math:`x_0` the
    initial params, :math:`t` the step count (1 on the first step) and sums over every element
    of every param:

    .. math::

        \hat\eta &= d\, \eta\, \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, d^2 g^2 \\
        s &\leftarrow \beta_3 s + \hat\eta\, d\, g / d_0
            \quad (\text{with safeguard\_warmup: } d^2 g / d_0) \\
        r &\leftarrow \beta_3 r + (d / d_0)\, \hat\eta \textstyle\sum g\,(x_0 - p) \\
        d' &= \max\big(d,\ c\, r / \textstyle\sum |s|\big) \\
        p &\leftarrow p - \lambda\, \hat\eta\, p - \hat\eta\, m / (\sqrt v + d' \epsilon)

    and :math:`d \leftarrow d'`. :math:`\eta` is a schedule on top of the estimated step
    (1.0 by default; the authors recommend a cosine or linear decay to 0, with a warmup).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, a factor on the estimated step size, default 1.0.
    beta1 : float or scalar tensor
        :math:`\beta_1`, the decay of the first moment, in [0, 1), default 0.9.
    beta2 : float or scalar tensor
        :math:`\beta_2`, the decay of the second moment, in [0, 1), default 0.999.
    beta3 : float or scalar tensor, optional
        :math:`\beta_3`, the decay of :math:`s` and :math:`r`, in [0, 1], default
        :math:`\sqrt{\beta_2}` (None; give it when ``beta2`` is a schedule).
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to :math:`\sqrt v` scaled by :math:`d`, default 1e-8.
    d0 : float or scalar tensor
        :math:`d_0 > 0`, the initial (under-)estimate of :math:`d`, default 1e-6.
    d_coef : float or scalar tensor
        :math:`c \ge 0`, a factor on each new estimate of :math:`d`, default 1.0.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay scaled by the step size, default 0.
    safeguard_warmup : bool
        Leave :math:`\eta` out of the weights of :math:`s` (the paper's safeguard for a
        learning-rate warmup), default False.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then the carried scalars ``prodigy.d`` (:math:`d`, 0 until the first
        step, which starts from :math:`d_0`) and ``prodigy.numerator`` (:math:`r`), the slots
        ``<param>.prodigy.m``, ``.v``, ``.s`` and ``.x0`` (the initial params, set on the first
        step), and the step counter ``prodigy.t``. The sums cover every param; with params of
        several dtypes each dtype keeps its own carried scalars (``prodigy.d[float32]``),
        computed from the sums over all the params in that dtype.

    Notes
    -----
    ``optax.contrib.prodigy`` with the same defaults, step for step, params and state (optax's
    ``betas`` are ``beta1, beta2``; ``eps`` is ``epsilon``, ``estim_lr0`` is ``d0``,
    ``estim_lr_coef`` is ``d_coef``; its state's ``exp_avg``, ``exp_avg_sq``, ``grad_sum``,
    ``params0``, ``estim_lr`` and ``numerator_weighted`` are ``m``, ``v``, ``s``, ``x0``,
    ``prodigy.d`` and ``prodigy.numerator``), also with ``safeguard_warmup`` and weight decay.
    Where every :math:`s` is zero (a zero gradient, a zero learning rate) :math:`d` stays as it
    is; optax's becomes 0/0, NaN, and so do the params. As in optax, the new :math:`d'` enters
    only the :math:`\epsilon` term of this step and
    the moments hold :math:`d`-scaled gradients. A learning rate given as a schedule is
    evaluated at :math:`t - 1`, as optax evaluates its callable at its count. When every
    gradient so far is 0, :math:`\sum |s| = 0` and :math:`d'` is NaN, as in optax. The
    authors' PyTorch package (``prodigyopt``) differs in small ways (its bias correction and
    weight decay); torch.optim has no Prodigy.

    References
    ----------
    Mishchenko and Defazio (2023). Prodigy: An Expeditiously Adaptive Parameter-Free Learner.
    arXiv:2306.06101.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.prodigy((w**2).sum(), [w])
    >>> list(result.named_state())  # doctest: +NORMALIZE_WHITESPACE
    ['prodigy.d', 'prodigy.numerator', 'w.prodigy.m', 'w.prodigy.v', 'w.prodigy.s',
     'w.prodigy.x0', 'prodigy.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(20):
    ...     _ = step()
    >>> print(result.named_state()["prodigy.d"] > 1e-6)  # d grew from d0
    True
    """
    if beta3 is None:
        if is_schedule(beta2):
            raise ValueError(
                "prodigy: beta3 must be given when beta2 is a schedule (its default is sqrt(beta2))"
            )
        # a concrete beta2 out of range is refused by its own check, before beta3's
        beta3 = (float(beta2) ** 0.5 if float(beta2) >= 0 else beta2) if is_concrete(beta2) else beta2**0.5
    if not isinstance(safeguard_warmup, (bool, np.bool_)):
        raise TypeError(f"prodigy: safeguard_warmup must be True or False, got {safeguard_warmup!r}")
    return apply_rule(
        PRODIGY[bool(safeguard_warmup)],
        loss_or_grads,
        params,
        clear_nan,
        options=("safeguard_warmup",),
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        epsilon=epsilon,
        d0=d0,
        d_coef=d_coef,
        weight_decay=weight_decay,
        safeguard_warmup=bool(safeguard_warmup),
    )
