r"""Schedule-Free SGD and AdamW (Defazio et al. 2024, "The Road Less Scheduled").

Schedule-Free learning replaces the momentum and the decaying learning-rate schedule of a base
optimizer with an interpolation and an average of three sequences: :math:`z` takes the base
optimizer's steps, :math:`x` is a running average of the :math:`z`'s (weighted by the learning
rate), and the gradient is taken at :math:`y = (1 - \beta_1) z + \beta_1 x`. The params the
model sees while training are :math:`y`; evaluate with :math:`x` through
:func:`updates.swap_averages`, which exchanges each param with its :math:`x` for the duration of
a block (the slot ``<param>.<rule>.x`` is recorded as an average of the param).

Both rules compute what ``optax.contrib.schedule_free_sgd`` and ``schedule_free_adamw`` compute
(optax 0.2.8), and the tests compare params, :math:`x` and state with optax live. As in optax,
:math:`x` of the steps before is recovered from the params and :math:`z` at each step (so a
wrapper that changes the params moves :math:`x` too); it is also kept as a slot, written every
step, for :func:`updates.swap_averages` and ``named_state()``.
"""

from __future__ import annotations

from typing import Any

import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, UNIT, Interval
from updates.container import Updates
from updates.engine import Rule, apply_rule, first_step
from updates.public import update_rule

__all__ = ["schedule_free_sgd", "schedule_free_adamw"]

#: b1 divides in the recovery of x from y and z: optax asks for b1 > 0 too.
B1 = Interval(0.0, 1.0, low_closed=False, high_closed=True)
WARMUP = Interval(0, integer=True)

RANGES = dict(
    learning_rate=NON_NEGATIVE,
    warmup_steps=WARMUP,
    beta1=B1,
    weight_decay=NON_NEGATIVE,
    weight_lr_power=NON_NEGATIVE,
)


def _warmed_up(h, k):
    """The learning rate at count ``k`` of optax's linear warmup from 0 over ``warmup_steps``."""
    warmup = h.warmup_steps
    started = pt.gt(warmup, 0)
    return h.learning_rate * pt.switch(started, pt.minimum(k, warmup) / pt.switch(started, warmup, 1), 1)


def _averaging(h, t, step):
    """The scalars of one step: the learning rate of ``z``'s step (the warmup at ``t - 1``, as
    optax's base optimizer counts), the largest learning rate so far (the warmup at ``t``, as
    optax's schedule_free counts), the weights' running sum and the weight ``c`` of this step."""
    max_lr = pt.maximum(h.max_lr, _warmed_up(h, t))
    weight = max_lr**h.weight_lr_power
    weight_sum = h.weight_sum + weight
    c = weight / weight_sum
    # 0/0 (no learning rate yet) gives 0, as optax's nan_to_num; a NaN weight stays NaN.
    c = pt.switch(pt.isnan(c) & ~pt.isnan(weight) & ~pt.isnan(weight_sum), 0, c)
    return dict(
        first_step(h, t, step),
        step_lr=_warmed_up(h, t - 1),
        max_lr=max_lr,
        weight_sum=weight_sum,
        c=c,
        lag=(1 - h.beta1) / h.beta1,
    )


def _adamw_scalars(h, t, step):
    return dict(_averaging(h, t, step), bc2=1 - h.beta2**t)


def _interpolate(h, y, z, z_new):
    """The new params and x: x of the steps before from y and z, averaged with the new z."""
    x = y + h.lag * (y - z)  # y = (1 - b1) z + b1 x solved for x
    x = x + h.c * (z_new - x)
    return x + (1 - h.beta1) * (z_new - x), x


def _sgd(h, y, g, z, x):
    z = pt.switch(h.first, y, z)  # z starts at the params (optax's init copies them)
    z_new = z - h.step_lr * (g + h.weight_decay * y)
    y_new, x_new = _interpolate(h, y, z, z_new)
    return y_new, z_new, x_new


def _adamw(h, y, g, z, v, x):
    z = pt.switch(h.first, y, z)
    v = h.beta2 * v + (1 - h.beta2) * pt.sqr(g)
    u = g / (pt.sqrt(v / h.bc2) + h.epsilon) + h.weight_decay * y  # decay at y, the params
    z_new = z - h.step_lr * u
    y_new, x_new = _interpolate(h, y, z, z_new)
    return y_new, z_new, v, x_new


CARRY = (("max_lr", 0.0), ("weight_sum", 0.0))

SCHEDULE_FREE_SGD = Rule(
    "schedule_free_sgd",
    _sgd,
    slots=("z", "x"),
    per_step=_averaging,
    carry=CARRY,
    ranges=RANGES,
    averages=("x",),
)

SCHEDULE_FREE_ADAMW = Rule(
    "schedule_free_adamw",
    _adamw,
    slots=("z", "v", "x"),
    per_step=_adamw_scalars,
    carry=CARRY,
    ranges=dict(RANGES, beta2=UNIT, epsilon=NON_NEGATIVE),
    averages=("x",),
)

_SHARED_NOTES = r"""
    With :math:`k` a step count, :math:`\eta_k = \eta \min(k, T)/T` during a warmup of
    :math:`T` steps (:math:`\eta_k = \eta` with :math:`T = 0`); :math:`t` is 1 on the first
    step, when :math:`z` and :math:`x` start at the params. Each step:

    .. math::

        z &\leftarrow z - \eta_{t-1}\, u \\
        \hat\eta_t &= \max(\hat\eta_{t-1}, \eta_t), \qquad
        W_t = W_{t-1} + \hat\eta_t^{\,r}, \qquad c_t = \hat\eta_t^{\,r} / W_t \\
        x &\leftarrow (1 - c_t)\, x + c_t\, z \\
        p &\leftarrow (1 - \beta_1)\, z + \beta_1 x

    :math:`x`, the average of the :math:`z`'s weighted by the largest learning rate so far to
    the power :math:`r`, is the point to evaluate the model at: :func:`swap_averages` puts it
    in the params for a block. No schedule is needed beyond the warmup.
"""


@update_rule
def schedule_free_sgd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1.0,
    warmup_steps: Any = 0,
    beta1: Any = 0.9,
    weight_decay: Any = 0.0,
    weight_lr_power: Any = 2.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Schedule-Free SGD: gradient steps on :math:`z`, the params interpolate it and its average.

    The params :math:`p` are the point :math:`y` where the gradient :math:`g` is taken, and
    the step of :math:`z` is the SGD step with weight decay at :math:`p`,
    :math:`u = g + \lambda p`.

    $notes

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, the peak learning rate, default 1.0.
    warmup_steps : int or scalar tensor
        :math:`T \ge 0`, the length of the linear warmup from 0, default 0 (no warmup).
    beta1 : float or scalar tensor
        :math:`\beta_1`, the interpolation between :math:`z` and :math:`x`, in (0, 1],
        default 0.9.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, weight decay at the params, multiplied by the learning rate,
        default 0.
    weight_lr_power : float or scalar tensor
        :math:`r \ge 0`, the power of the learning rate in the weights of the average,
        default 2.0.
    $clear_nan

    Returns
    -------
    Updates
        The new params (:math:`y`), then the carried scalars (``schedule_free_sgd.max_lr``,
        :math:`\hat\eta`, and ``schedule_free_sgd.weight_sum``, :math:`W`), the slots
        ``<param>.schedule_free_sgd.z`` and ``.x`` (on the multi-tensor path one flat buffer
        per dtype, ``schedule_free_sgd.z``, shown per param by ``named_state()``) and the
        step counter ``schedule_free_sgd.t``. The :math:`x` slot is recorded as an average of
        the params, so :func:`swap_averages` accepts these updates.

    Notes
    -----
    ``optax.contrib.schedule_free_sgd`` with the same defaults (``b1`` is ``beta1``; optax's
    ``weight_decay=None`` is 0 here), step for step, params, state (``z``, ``max_lr``,
    ``weight_sum``) and :math:`x` (what ``optax.contrib.schedule_free_eval_params`` returns),
    also with ``warmup_steps``. optax evaluates its warmup at the count before the step for
    the step of :math:`z` and at the step's own count for the weights, and so does this rule.
    A learning rate given as a schedule is evaluated once per step, at :math:`t - 1`, for both;
    optax evaluates a callable ``learning_rate`` of ``schedule_free`` at :math:`t` for the
    weights. The slots hold zeros until the first step; evaluate with :math:`x` after it.
    Compared with optax this keeps :math:`x` as a slot too (one more buffer the size of the
    params). torch.optim has no Schedule-Free rule (the authors' ``schedulefree`` package
    does).

    References
    ----------
    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky (2024). The Road Less Scheduled.
    NeurIPS. arXiv:2405.15682.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.schedule_free_sgd((w**2).sum(), [w], learning_rate=0.1)
    >>> list(result.named_state())  # doctest: +NORMALIZE_WHITESPACE
    ['schedule_free_sgd.max_lr', 'schedule_free_sgd.weight_sum', 'w.schedule_free_sgd.z',
     'w.schedule_free_sgd.x', 'schedule_free_sgd.t']
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(3):
    ...     _ = step()
    >>> print(np.round(w.get_value(), 4))  # y, where the gradient is taken
    [0.631 0.631]
    >>> with updates.swap_averages(result):  # x, to evaluate with
    ...     print(np.round(w.get_value(), 4))
    [0.6459 0.6459]
    """
    return apply_rule(
        SCHEDULE_FREE_SGD,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        beta1=beta1,
        weight_decay=weight_decay,
        weight_lr_power=weight_lr_power,
    )


@update_rule
def schedule_free_adamw(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 0.0025,
    warmup_steps: Any = 0,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    weight_decay: Any = 0.0,
    weight_lr_power: Any = 2.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Schedule-Free AdamW: AdamW's steps without momentum on :math:`z`, the params
    interpolate it and its average.

    The params :math:`p` are the point :math:`y` where the gradient :math:`g` is taken, and
    the step of :math:`z` is RMSprop's with Adam's bias correction and decoupled weight decay
    at :math:`p`:

    .. math::

        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        u &= \frac{g}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} + \lambda p

    $notes

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, the peak learning rate, default 0.0025.
    warmup_steps : int or scalar tensor
        :math:`T \ge 0`, the length of the linear warmup from 0, default 0 (no warmup).
    beta1 : float or scalar tensor
        :math:`\beta_1`, the interpolation between :math:`z` and :math:`x`, in (0, 1],
        default 0.9.
    beta2 : float or scalar tensor
        :math:`\beta_2`, the decay of the moving average of :math:`g^2`, in [0, 1), default
        0.999.
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, added to the root of the bias-corrected :math:`v`, default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, weight decay at the params, multiplied by the learning rate,
        default 0.
    weight_lr_power : float or scalar tensor
        :math:`r \ge 0`, the power of the learning rate in the weights of the average,
        default 2.0.
    $clear_nan

    Returns
    -------
    Updates
        The new params (:math:`y`), then the carried scalars (``schedule_free_adamw.max_lr``,
        :math:`\hat\eta`, and ``schedule_free_adamw.weight_sum``, :math:`W`), the slots
        ``<param>.schedule_free_adamw.z``, ``.v`` and ``.x`` (on the multi-tensor path one
        flat buffer per slot and dtype, shown per param by ``named_state()``) and the step
        counter ``schedule_free_adamw.t``. The :math:`x` slot is recorded as an average of the
        params, so :func:`swap_averages` accepts these updates.

    Notes
    -----
    ``optax.contrib.schedule_free_adamw`` with the same defaults (``b1``, ``b2``, ``eps`` are
    ``beta1``, ``beta2``, ``epsilon``), step for step, params, state (``z``, ``max_lr``,
    ``weight_sum``; optax's ``nu`` is ``v``) and :math:`x` (what
    ``optax.contrib.schedule_free_eval_params`` returns), also with ``warmup_steps``. optax
    evaluates its warmup at the count before the step for the step of :math:`z` and at the
    step's own count for the weights, and so does this rule. A learning rate given as a
    schedule is evaluated once per step, at :math:`t - 1`, for both. The paper's Algorithm 1
    differs from optax (and this rule) in small ways: it folds :math:`\sqrt{1 - \beta_2^t}`
    into the learning rate of the weights and weighs by the current rather than the largest
    learning rate. The slots hold zeros until the first step; evaluate with :math:`x` after
    it. Compared with optax this keeps :math:`x` as a slot too (one more buffer the size of
    the params). torch.optim has no Schedule-Free rule (the authors' ``schedulefree``
    package does).

    References
    ----------
    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky (2024). The Road Less Scheduled.
    NeurIPS. arXiv:2405.15682.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> result = updates.schedule_free_adamw((w**2).sum(), [w], learning_rate=0.1, warmup_steps=2)
    >>> step = pytensor.function([], [], updates=result)
    >>> for _ in range(3):
    ...     _ = step()
    >>> with updates.swap_averages(result):  # evaluate with x
    ...     evaluated = w.get_value()
    >>> print(np.round(evaluated, 4), np.round(w.get_value(), 4))  # x, then y again
    [0.9124 0.9124] [0.9064 0.9064]
    """
    return apply_rule(
        SCHEDULE_FREE_ADAMW,
        loss_or_grads,
        params,
        clear_nan,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
        weight_lr_power=weight_lr_power,
    )


for _rule in (schedule_free_sgd, schedule_free_adamw):
    _rule.__doc__ = _rule.__doc__.replace("$notes", _SHARED_NOTES.strip())
del _rule
