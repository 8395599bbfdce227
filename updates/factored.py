r"""Rules with factored second moments: :func:`adafactor` and :func:`sm3`.

A factored rule keeps, for a param with two dimensions or more, the running means of the squared
gradient over its rows and over its columns (two small slots, of the param's shape with the last
or the next-to-last dimension reduced to 1), not one per element. Its slots differ in shape from
the param, and its update needs whole tensors (means over rows and columns, root mean squares),
so it is a ``per_tensor`` rule with ``shaped_slots``: built per parameter, each slot a shared
variable of its own shape, named after its param (``W.adafactor.row_var``) and saved, loaded and
reset like any other state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, UNIT, Interval
from updates.container import Updates
from updates.engine import Rule, apply_rule
from updates.public import update_rule
from updates.reductions import l2_norm

__all__ = ["adafactor", "sm3"]


def _factors(shape: tuple) -> tuple[tuple[str, tuple], ...] | None:
    """The row and column factors of a param with two dimensions or more (None: one ``variance``
    like the param). Works on static shapes too (None where unknown)."""
    if len(shape) < 2:
        return None
    shape = tuple(shape)
    return ("row_var", (*shape[:-1], 1)), ("col_var", (*shape[:-2], 1, shape[-1]))


def _adafactor_schedule(h, t, step):
    epsilon1 = getattr(h, "epsilon1", None)
    if epsilon1 is None:  # the machine epsilon of the param's dtype
        epsilon1 = pt.constant(np.finfo(t.dtype).eps, dtype=t.dtype)
    return dict(
        weight=t**h.beta2_decay,  # 1 - beta2_t
        rho=pt.minimum(h.learning_rate, 1 / pt.sqrt(t)),
        eps1=epsilon1,
    )


def _rms(x, size):
    """The root mean square of the tensor ``x`` of ``size`` elements: its norm over the square
    root of its size (the param's size for the update too: taking the update's own would ask
    PyTensor to check at run time that the gradient and the second moments broadcast)."""
    return l2_norm([x]) / pt.sqrt(pt.cast(size, x.dtype))


def _adafactor(h, param, grad, *slots):
    alpha = pt.maximum(h.epsilon2, _rms(param, param.size)) * h.rho
    squared = pt.sqr(grad)
    if len(slots) == 2:  # row and column factors of the last two dimensions
        row_var, col_var = slots
        row_var = row_var + h.weight * (pt.mean(squared, axis=-1, keepdims=True) - row_var)
        col_var = col_var + h.weight * (pt.mean(squared, axis=-2, keepdims=True) - col_var)
        row_mean = pt.maximum(pt.mean(row_var, axis=-2, keepdims=True), h.eps1)
        variance = row_var * col_var / row_mean
        new_slots = (row_var, col_var)
    else:
        (variance,) = slots
        variance = variance + h.weight * (squared - variance)
        new_slots = (variance,)
    update = grad / pt.sqrt(pt.maximum(variance, h.eps1 * h.eps1))
    scale = alpha / pt.maximum(1, _rms(update, param.size) / h.clip_threshold)
    return (param * (1 - h.learning_rate * h.weight_decay) - scale * update, *new_slots)


ADAFACTOR = Rule(
    "adafactor",
    _adafactor,
    slots=("variance",),
    per_step=_adafactor_schedule,
    per_tensor=True,
    shaped_slots=_factors,
    ranges=dict(
        learning_rate=NON_NEGATIVE,
        beta2_decay=Interval(high=0.0, high_closed=True),
        epsilon1=NON_NEGATIVE,
        epsilon2=NON_NEGATIVE,
        clip_threshold=Interval(1.0),
        weight_decay=NON_NEGATIVE,
    ),
)


@update_rule
def adafactor(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    beta2_decay: Any = -0.8,
    epsilon1: Any = None,
    epsilon2: Any = 1e-3,
    clip_threshold: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Adafactor: steps relative to the params' scale, with factored second moments.

    With :math:`\hat\beta_t = t^{c}` the weight of the new squared gradient (:math:`c \le 0`
    the decay, so 1 on the first step), :math:`\operatorname{RMS}(x) = \lVert x \rVert /
    \sqrt{\operatorname{size}(x)}` over a whole tensor and :math:`\epsilon_1` the machine epsilon
    of the param's dtype unless given:

    .. math::

        \rho_t &= \min\left(\eta, 1 / \sqrt{t}\right), \qquad
        \alpha_t = \max\left(\epsilon_2, \operatorname{RMS}(p)\right) \rho_t

    For a param with two dimensions or more, the row factor :math:`R` (means over the last
    dimension) and the column factor :math:`C` (means over the next-to-last one) of the squared
    gradient, over its last two dimensions (the leading ones are a batch of matrices):

    .. math::

        R &\leftarrow R + \hat\beta_t \left(\operatorname{mean}_{-1}(g^2) - R\right), \qquad
        C \leftarrow C + \hat\beta_t \left(\operatorname{mean}_{-2}(g^2) - C\right) \\
        \hat v &= \frac{R\, C}{\max\left(\operatorname{mean}_{-2}(R), \epsilon_1\right)}

    (:math:`R\,C` the outer product); for a vector or a scalar, the unfactored
    :math:`v \leftarrow v + \hat\beta_t (g^2 - v)` and :math:`\hat v = v`. Then

    .. math::

        u &= g / \sqrt{\max(\hat v, \epsilon_1^2)} \\
        p &\leftarrow p\, (1 - \eta \lambda)
            - \frac{\alpha_t}{\max\left(1, \operatorname{RMS}(u) / d\right)}\, u

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta`, the cap of the relative step size :math:`\rho_t` (torch's ``lr``),
        default 1e-2.
    beta2_decay : float or scalar tensor
        :math:`c \le 0`, the exponent of the second moments' weight :math:`t^c`, default -0.8.
    epsilon1 : float, scalar tensor or None
        :math:`\epsilon_1 \ge 0`, the floor of the second moments (squared) and of the mean of the
        row factor (torch's ``eps[0]``); None (default): the machine epsilon of each param's dtype
        (``np.finfo(dtype).eps``).
    epsilon2 : float or scalar tensor
        :math:`\epsilon_2 \ge 0`, the floor of the params' root mean square in the step size
        (torch's ``eps[1]``), default 1e-3.
    clip_threshold : float or scalar tensor
        :math:`d \ge 1`, the root mean square above which the update is scaled down to it
        (torch's ``d``), default 1.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled, scaled by :math:`\eta` (not by :math:`\alpha_t`),
        default 0.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then per param either its row and column factors
        (``<param>.adafactor.row_var`` of the param's shape with the last dimension 1,
        ``<param>.adafactor.col_var`` with the next-to-last dimension 1) or, for a vector or a
        scalar, ``<param>.adafactor.variance`` like the param; then the step counter
        ``adafactor.t``. Like torch's ``state["row_var"]``, ``state["col_var"]`` and
        ``state["variance"]``.

    Notes
    -----
    torch.optim.Adafactor (torch 2.5 and later) with the same defaults, step for step, params and
    factors: ``lr`` is ``learning_rate``, ``eps=(epsilon1, epsilon2)``, ``d`` is
    ``clip_threshold``. torch's ``maximize`` is not taken (negate the loss). With ``eps[0]=None``
    torch takes the machine epsilon of the first param of a group for all of them; here each
    param's own dtype's. The factors are the means of the squared gradient, not their sums as in
    the paper, and :math:`\epsilon_1` floors :math:`\hat v` instead of being added to :math:`g^2`
    (both as torch). There is no first moment (the paper's :math:`\beta_1 = 0`); wrap with
    :func:`apply_momentum` for one. ``optax.adafactor`` is a different variant: it factors the
    two largest dimensions, only those of 128 elements or more (``min_dim_size_to_factor``),
    averages :math:`g^2 + 10^{-30}`, and by default scales the clipped update by the params'
    root mean square with no learning rate and no :math:`\min(\eta, 1/\sqrt{t})` cap.
    Built per parameter (the factors and the root mean squares need whole tensors).

    References
    ----------
    Shazeer and Stern (2018). Adafactor: adaptive learning rates with sublinear memory cost.
    ICML. arXiv:1804.04235.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> W = pytensor.shared(np.ones((2, 3)), name="W")
    >>> b = pytensor.shared(np.ones(3), name="b")
    >>> state = updates.adafactor((W**2).sum() + (b**2).sum(), [W, b]).named_state()
    >>> for name, value in state.items():
    ...     print(name, value.shape)
    W.adafactor.row_var (2, 1)
    W.adafactor.col_var (1, 3)
    b.adafactor.variance (3,)
    adafactor.t ()
    """
    return apply_rule(
        ADAFACTOR,
        loss_or_grads,
        params,
        clear_nan,
        options=("epsilon1",) if epsilon1 is None else (),
        learning_rate=learning_rate,
        beta2_decay=beta2_decay,
        epsilon1=epsilon1,
        epsilon2=epsilon2,
        clip_threshold=clip_threshold,
        weight_decay=weight_decay,
    )


# -- SM3 -----------------------------------------------------------------------------------------

#: optax's ``scale_by_sm3`` eps, which ``optax.sm3`` does not expose.
SM3_EPSILON = 1e-8


def _sm3_covers(shape: tuple) -> tuple[tuple[str, tuple], ...] | None:
    """SM3's slots of a param with two dimensions or more: per axis ``i`` the accumulator of its
    slices, ``mu_<i>``, of the param's shape with every other dimension 1 (so the accumulators
    broadcast against the gradient), then the momentum ``nu`` like the param (None: ``mu`` and
    ``nu`` like the param, for a vector or a scalar). Works on static shapes too."""
    if len(shape) < 2:
        return None
    shape = tuple(shape)
    covers = tuple(
        (f"mu_{i}", tuple(n if j == i else 1 for j, n in enumerate(shape))) for i in range(len(shape))
    )
    return (*covers, ("nu", shape))


def _sm3(h, param, grad, *slots):
    *mus, nu = slots
    squared = pt.sqr(grad)
    if len(mus) == 1:  # a vector or a scalar: one accumulator per element (Adagrad's)
        accumulator = squared + mus[0]
        new_mus = [accumulator]
    else:  # the smallest of the accumulators of the slices through each element
        smallest = mus[0]
        for mu in mus[1:]:
            smallest = pt.minimum(smallest, mu)
        accumulator = squared + smallest
        axes = range(param.ndim)
        new_mus = [pt.max(accumulator, axis=[j for j in axes if j != i], keepdims=True) for i in axes]
    epsilon = pt.constant(np.asarray(SM3_EPSILON, dtype=param.dtype))
    # 0/0 = 0 where the accumulator is 0 (optax's test is `> 0`, also true of a NaN: see Notes)
    scaled = pt.switch(pt.eq(accumulator, 0), 0, grad / pt.sqrt(accumulator + epsilon))
    nu = h.momentum * nu + (1 - h.momentum) * scaled
    return (param - h.learning_rate * nu, *new_mus, nu)


SM3 = Rule(
    "sm3",
    _sm3,
    slots=("mu", "nu"),
    per_tensor=True,
    shaped_slots=_sm3_covers,
    ranges=dict(learning_rate=NON_NEGATIVE, momentum=UNIT),
)


@update_rule
def sm3(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 0.1,
    momentum: Any = 0.9,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""SM3: Adagrad with one accumulator per row, column (per slice of each axis), not per element.

    For a param of :math:`k \ge 2` dimensions, an accumulator :math:`\mu_i` per axis :math:`i`,
    one value per index along that axis (the cover of the param by its slices); the accumulator
    of an element is the smallest of those of the :math:`k` slices through it (SM3-II):

    .. math::

        \nu' &= g^2 + \min_i \mu_i \qquad (\mu_i \text{ broadcast along the other axes}) \\
        \mu_i &\leftarrow \max_{\text{axes} \ne i} \nu' \\
        u &= \begin{cases} g / \sqrt{\nu' + \epsilon} & \nu' > 0 \\ 0 & \nu' = 0 \end{cases} \\
        n &\leftarrow \beta n + (1 - \beta)\, u \\
        p &\leftarrow p - \eta\, n

    with :math:`\epsilon = 10^{-8}` (optax's, fixed). For a vector or a scalar, one accumulator
    per element, :math:`\nu' = g^2 + \mu`, :math:`\mu \leftarrow \nu'` (Adagrad's sum of squares).

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, default 0.1 (optax's ``sm3`` has no default; the paper tunes it per
        task, and 0.1 is an Adagrad-like scale: each element moves at most about :math:`\eta`
        per step).
    momentum : float or scalar tensor
        :math:`\beta`, in [0, 1), the decay of the moving average :math:`n` of the scaled
        gradients, default 0.9.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then per param either its accumulators ``<param>.sm3.mu_<i>`` (one per
        axis :math:`i`, of the param's shape with every other dimension 1) and its momentum
        ``<param>.sm3.nu``, or, for a vector or a scalar, ``<param>.sm3.mu`` and
        ``<param>.sm3.nu`` like the param. No step counter.

    Notes
    -----
    ``optax.sm3`` (``scale_by_sm3(momentum)`` then ``scale(-learning_rate)``) step for step,
    params and state: optax's ``mu[i]`` of shape ``(n_i,)`` is ``mu_<i>`` with its other
    dimensions kept as 1 (``mu_<i>.ravel()``), its ``nu`` is ``nu``. Unlike optax, a scalar
    param works (optax's ``scale_by_sm3`` has no accumulator for a 0-d param and fails on it):
    it takes the vector's rule. The moving average :math:`n` is of the scaled gradients
    (optax's; the paper's SM3 has no momentum, its experiments add it this way).
    ``learning_rate`` may be a schedule here (optax's ``sm3`` takes a number only).
    The scaled gradient is 0 where the accumulator is 0 (the paper's 0/0 = 0); optax writes
    this ``where(accumulator > 0, ..., 0)``, which also turns a NaN gradient into a silent 0
    (and freezes the elements its NaN accumulator reaches): here a NaN propagates to the
    param, as in every other rule, for :func:`apply_if_finite` and ``clear_nan`` to act on.
    The same for every finite gradient.
    Built per parameter (the accumulators of the slices are reductions over whole tensors).

    References
    ----------
    Anil, Gupta, Koren and Singer (2019). Memory-efficient adaptive optimization. NeurIPS.
    arXiv:1901.11150.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> W = pytensor.shared(np.ones((2, 3)), name="W")
    >>> b = pytensor.shared(np.ones(3), name="b")
    >>> state = updates.sm3((W**2).sum() + (b**2).sum(), [W, b]).named_state()
    >>> for name, value in state.items():
    ...     print(name, value.shape)
    W.sm3.mu_0 (2, 1)
    W.sm3.mu_1 (1, 3)
    W.sm3.nu (2, 3)
    b.sm3.mu (3,)
    b.sm3.nu (3,)
    """
    return apply_rule(SM3, loss_or_grads, params, clear_nan, learning_rate=learning_rate, momentum=momentum)
