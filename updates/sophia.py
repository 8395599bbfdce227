r"""Sophia (Liu, Li, Hall, Liang and Ma 2024): momentum divided by a clipped diagonal Hessian.

Sophia divides a moving average of the gradients by a moving average of an estimate of the
Hessian's diagonal, refreshed every few steps, and clips the result elementwise. The estimate
is Hutchinson's, :math:`\hat h = u \odot (H u)` for a random vector :math:`u` of signs, whose
expectation is the diagonal of :math:`H`. The rule builds it inside the same compiled step from
the scalar loss it is given: the Hessian-vector product :math:`H u` is the gradient of
:math:`\langle g, u\rangle` (the loss differentiated twice), computed only on the steps that
refresh the estimate where the linker evaluates lazily (C VM), and the signs are a hash of the
seed, the step count and the element (as :func:`~updates.esgd`'s): there is no generator state
to keep or checkpoint, and a run resumed from saved state draws what the uninterrupted run drew.
The rule computes what ``optax.contrib.sophia`` (optax 0.2.8) computes given the same signs; the
tests give optax's update those signs and compare params and state live.
"""

from __future__ import annotations

import functools
from typing import Any

import pytensor
import pytensor.tensor as pt
from pytensor.ifelse import ifelse

from updates.checks import COUNT, NON_NEGATIVE, POSITIVE, UNIT, Interval
from updates.container import Updates
from updates.engine import Rule, apply_rule
from updates.grads import prepare_grads
from updates.modern import _MODULUS, _random_signs
from updates.public import update_rule

__all__ = ["sophia"]

RANGES = dict(
    learning_rate=NON_NEGATIVE,
    beta1=UNIT,
    beta2=UNIT,
    epsilon=POSITIVE,  # max(gamma h, epsilon) divides
    weight_decay=NON_NEGATIVE,
    gamma=NON_NEGATIVE,
    clip_threshold=POSITIVE,
)


def hutchinson_signs(seed: int, index: int, step: Any, like: Any) -> Any:
    r"""The random signs :math:`u` (+1 or -1, of ``like``'s shape and dtype) that :func:`sophia`
    draws for ``params[index]`` on step ``step`` (1 on the first): a hash of the seed, the
    param's index, the step and the element, the same on every linker and after a resume."""
    return _random_signs(seed, index, step, like)


def _estimates(seed: int, interval: int, loss_or_grads, params, grads, step):
    r"""Hutchinson's estimate :math:`u \odot (H u)` of each param's Hessian diagonal, on the steps
    that refresh it (zeros on the others, which the kernel does not read)."""
    if isinstance(loss_or_grads, (list, tuple)):  # sophia() refuses them first; a safeguard
        raise TypeError("sophia: needs the scalar loss; got a list of gradients")
    signs = [hutchinson_signs(seed, i, step, param) for i, param in enumerate(params)]
    projection = pt.add(*(pt.sum(g * u) for g, u in zip(grads, signs)))
    products = pytensor.grad(projection, params, disconnected_inputs="ignore")
    estimates = [pt.cast(u * hu, param.dtype) for u, hu, param in zip(signs, products, params)]
    refresh = pt.eq((step - 1) % interval, 0)
    lazy = ifelse(refresh, estimates, [pt.zeros_like(p) for p in params])
    return [lazy if isinstance(lazy, list) else [lazy]]


def _per_step(interval: int):
    def per_step(h, t, step):
        r"""Adam's first bias correction, and whether this step refreshes :math:`\nu` (optax's
        count, :math:`t - 1`, a multiple of the interval)."""
        return dict(bc1=1 - h.beta1**t, refresh=pt.cast(pt.eq((step - 1) % interval, 0), t.dtype))

    return per_step


def _sophia(h, param, grad, estimate, m, nu):
    m = h.beta1 * m + (1 - h.beta1) * grad
    ratio = (m / h.bc1) / pt.maximum(h.gamma * nu, h.epsilon)  # nu of the steps before
    clip = getattr(h, "clip_threshold", None)
    if clip is not None:
        ratio = pt.clip(ratio, -clip, clip)
    nu = pt.switch(h.refresh > 0, h.beta2 * nu + (1 - h.beta2) * estimate, nu)
    return param - h.learning_rate * (ratio + h.weight_decay * param), m, nu


@functools.lru_cache(maxsize=64)
def _rule(seed: int, interval: int) -> Rule:
    return Rule(
        "sophia",
        _sophia,
        slots=("m", "nu"),
        per_step=_per_step(interval),
        per_tensor=True,
        extra=functools.partial(_estimates, seed, interval),
        ranges=RANGES,
    )


@update_rule
def sophia(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-4,
    beta1: Any = 0.965,
    beta2: Any = 0.99,
    epsilon: Any = 1e-8,
    weight_decay: Any = 1e-4,
    gamma: Any = 0.01,
    clip_threshold: Any = 1.0,
    update_interval: int = 10,
    seed: int = 0,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""Sophia: clipped momentum over a diagonal Hessian estimated every few steps (Sophia-H).

    With :math:`u` random signs (:math:`\pm 1`) drawn anew, :math:`H` the Hessian of the loss
    at the params before the step, :math:`k` the update interval and :math:`c` the clip
    threshold:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        r &= \operatorname{clip}\left(\frac{m / (1 - \beta_1^t)}
            {\max(\gamma \nu, \epsilon)},\ -c,\ c\right) \\
        \nu &\leftarrow \beta_2 \nu + (1 - \beta_2)\, u \odot (H u)
            \quad \text{if } (t - 1) \bmod k = 0 \\
        p &\leftarrow p - \eta\, (r + \lambda p)

    :math:`r` divides by :math:`\nu` as it was before the step (0 on the first step, so the
    first step's :math:`r` is :math:`c\,\operatorname{sign}(g)` wherever :math:`|g| > c\epsilon`):
    the estimate of step :math:`t` is used from step :math:`t + 1`. :math:`u \odot (H u)`
    (Hutchinson's estimator) is an unbiased estimate of the Hessian's diagonal.

    The rule needs the loss: give it the scalar loss (it computes the gradients and the
    Hessian-vector products in the same compiled step); gradients alone are refused.

    Parameters
    ----------
    $parameters
        Sophia needs the scalar loss: given a list of gradients it raises ``TypeError``.
    learning_rate : float, scalar tensor or schedule
        :math:`\eta \ge 0`, default 1e-4 (optax has none; the authors' reference
        implementation's, ``SophiaG(lr=1e-4)``).
    beta1 : float or scalar tensor
        :math:`\beta_1`, the decay of the momentum, in [0, 1), default 0.965.
    beta2 : float or scalar tensor
        :math:`\beta_2`, the decay of the Hessian estimate's average, in [0, 1), default 0.99
        (refreshed every ``update_interval`` steps, it decays like :math:`1 - (1 - \beta_2)/k`
        per step, 0.999 with the defaults).
    epsilon : float or scalar tensor
        :math:`\epsilon > 0`, the least denominator, default 1e-8.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 1e-4.
    gamma : float or scalar tensor
        :math:`\gamma \ge 0`, the scale of the Hessian estimate, default 0.01.
    clip_threshold : float, scalar tensor or None
        :math:`c > 0`, the bound of each element of :math:`r`, default 1.0; None: no clipping.
    update_interval : int
        :math:`k \ge 1`, the Hessian estimate is refreshed on steps :math:`1, k + 1, 2k + 1,
        \ldots`, default 10.
    seed : int
        Seed of the random signs, in [0, 2**31 - 1), default 0.
    $clear_nan

    Returns
    -------
    $returns

    Notes
    -----
    ``optax.contrib.sophia`` with its default Hutchinson estimator (Sophia-H) and the same
    defaults (``b1``, ``b2``, ``eps`` are ``beta1``, ``beta2``, ``epsilon``), step for step,
    params and state (optax's ``mu`` and ``nu`` are ``<param>.sophia.m`` and ``.nu``), given the
    same random signs: where optax's update takes ``obj_fn=`` and draws Rademacher vectors from
    a JAX key, this rule takes the scalar loss and draws its signs from a counter-based hash
    (``from updates.sophia import hutchinson_signs`` computes them), so the two draw different
    signs for the same seed; the tests hand optax's estimator this rule's signs. :math:`H u` is
    computed as the gradient of :math:`\langle g, u\rangle` (reverse over reverse) where optax
    takes a forward-mode derivative of its gradient; the values agree. optax's learning-rate
    schedule is evaluated at its count, :math:`t - 1`, as here. No ``weight_decay_mask`` (use
    :func:`merge_updates` for groups), ``mu_dtype``, other ``hessian_diagonal_fn`` (Sophia-G's
    Gauss-Newton-Bartlett estimator needs the model's outputs) or win-rate printing. The
    Hessian-vector products sit in a lazy ``ifelse``: the C VM computes them on refreshing steps
    only; Numba and JAX compute them every step and discard them (the values are the same).
    Built per parameter. torch.optim has no Sophia.

    References
    ----------
    Liu, Li, Hall, Liang and Ma (2024). Sophia: a scalable stochastic second-order optimizer for
    language model pre-training. ICLR. arXiv:2305.14342.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> list(updates.sophia((w**4).sum(), [w]).named_state())
    ['w.sophia.m', 'w.sophia.nu', 'sophia.t']
    """
    seed = Interval(0, _MODULUS, integer=True).check("sophia", "seed", seed)
    update_interval = COUNT.check("sophia", "update_interval", update_interval)
    rule = _rule(int(seed), int(update_interval))
    hyper = dict(
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
        gamma=gamma,
        clip_threshold=clip_threshold,
        update_interval=update_interval,
        seed=seed,
    )
    options = ("update_interval", "seed") + (("clip_threshold",) if clip_threshold is None else ())
    checked = apply_rule(rule, None, None, clear_nan, options=options, **hyper)
    if loss_or_grads is None and params is None:
        return checked
    if loss_or_grads is None or isinstance(loss_or_grads, (list, tuple)):
        prepare_grads("sophia", loss_or_grads, params)  # the params' and arguments' errors first
        raise TypeError(
            "sophia: needs the scalar loss (it differentiates the gradients again for "
            "Hessian-vector products); got a list of gradients"
        )
    return apply_rule(rule, loss_or_grads, params, clear_nan, options=options, **hyper)
