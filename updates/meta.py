r"""Rules over a base rule: sharpness-aware minimization (:func:`sam`) and Mechanic (:func:`mechanize`).

Each takes the base rule as ``rule=`` (a rule called with its hyperparameters only,
``updates.adam(learning_rate=1e-3)``, a rule given bare, a :func:`~updates.chain`, or any
callable ``(loss_or_grads, params) -> updates``) and is itself a rule: called with
``(loss_or_grads, params)`` it returns the :class:`~updates.Updates` of the whole step, called
with hyperparameters only it returns itself awaiting them, so it takes the rule's place in a
:func:`~updates.chain` (``chain(sam(rule=adam(...)), apply_ema())``) and in
``pm.fit(obj_optimizer=...)``.

- :func:`sam` hands the base rule the gradient at the perturbed params
  :math:`p + \rho\, g / \lVert g \rVert`, taken from the loss inside the same compiled step (the
  loss's graph with the params replaced by the perturbed ones);
- :func:`mechanize` runs the base rule and learns the scale of its steps (Mechanic): its inner
  product over every param is one node (``updates.reductions.FusedSums``), its step on
  the base rule's new values an elementwise step in the multi-tensor node, as a wrapper's.

Their state is the base rule's, then their own (``<param>.mechanize.x0``, ``mechanize.s``, ...),
named per param, so :func:`~updates.inspect_state`, checkpoints and :func:`~updates.reset_state`
see all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.graph.replace import clone_replace

from updates.checks import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    check_hyperparameter,
    check_mapping,
    describe,
    is_schedule,
)
from updates.container import Updates
from updates.engine import (
    Elementwise,
    apply_elementwise,
    as_dtype,
    begin_wrapper,
    building_per_parameter,
    dtype_groups,
    flat_buffers,
    params_to_wrap,
    slots_of,
)
from updates.grads import prepare_grads
from updates.layout import new_state, step_counter
from updates.public import awaits_loss_and_params
from updates.reductions import Terms, fused_sums, l2_norm
from updates.reductions import total as total_of

__all__ = ["mechanize", "sam"]


def _base_rule(who: str, rule: Any) -> Callable:
    """The base rule, checked: a callable ``(loss_or_grads, params) -> updates``."""
    if rule is None:
        raise TypeError(
            f"{who}: rule is missing; give the base rule, e.g. rule=updates.sgd(learning_rate=0.1)"
        )
    if not callable(rule) or isinstance(rule, Variable):
        raise TypeError(
            f"{who}: rule must be a callable (loss_or_grads, params) -> updates, e.g. "
            f"updates.adam(learning_rate=1e-3), got {describe(rule)}"
        )
    return rule


def _run_base(who: str, rule: Callable, given: Any, params: list[Variable]) -> Mapping:
    """The base rule's updates for ``params``, checked to update each of them."""
    inner = rule(given, params)
    check_mapping(f"{who}: rule", inner)
    params_to_wrap(f"{who}: rule", inner, params)
    return inner


def _now(value: Any, counter: Variable | None) -> Any:
    return value(counter) if is_schedule(value) else value


# -- SAM -------------------------------------------------------------------------------------------


@awaits_loss_and_params
def sam(loss_or_grads: Any = None, params: Any = None, rule: Any = None, rho: Any = 0.05) -> Updates:
    r"""Sharpness-aware minimization: the base rule's step with the gradient at the worst nearby point.

    With :math:`L` the loss and :math:`g = \nabla L(p)` over all the params together:

    .. math::

        \hat\epsilon &= \rho\, \frac{g}{\lVert g \rVert_2}
            \quad (\hat\epsilon = 0 \text{ where } \lVert g \rVert_2 = 0) \\
        g_{\text{SAM}} &= \nabla L(p + \hat\epsilon) \\
        p &\leftarrow \text{rule}(g_{\text{SAM}}, p)

    One call is one SAM step (Foret et al.'s Algorithm 1): the two gradients, the perturbed
    point and the base rule's step are all in the one compiled function. The perturbed
    gradient comes from the loss's graph with every param :math:`p` replaced by
    :math:`p + \hat\epsilon` (``pytensor.graph.replace.clone_replace``), differentiated there.

    Parameters
    ----------
    $parameters
        SAM needs the scalar loss (to take its gradient at the perturbed params): given a list
        of gradients it raises ``TypeError``.
    rule : callable
        The base rule (optax's ``optimizer``): ``updates.sgd(learning_rate=0.1)``,
        ``updates.momentum(learning_rate=0.1, momentum=0.9)`` (the paper's), any rule called with
        its hyperparameters only, a rule given bare (its defaults), a :func:`chain` (gradient
        transforms there apply to :math:`g_{\text{SAM}}`), or any callable
        ``(loss_or_grads, params) -> updates``. It is given :math:`g_{\text{SAM}}` as a list of
        gradients. Required.
    rho : float or scalar tensor or schedule
        :math:`\rho \ge 0`, the radius of the neighbourhood, default 0.05 (the paper's value
        for most of its experiments; optax has no default, its example uses 0.1). 0 gives the
        base rule itself.
    discard_loss : bool
        Default True: return the updates. False: return ``(updates, loss)``, the loss as given
        (its value at the params, not at the perturbed ones).

    Returns
    -------
    Updates
        The base rule's updates (params, then its state), with ``sam`` appended to ``config``
        and ``sam.rho`` to ``hyperparameters``; a counter ``sam.t`` only when ``rho`` is a
        schedule. SAM keeps no state of its own.

    Notes
    -----
    optax's ``contrib.sam(optimizer, adv_optimizer, sync_period=2, reset_state=True,
    opaque_mode=False)`` splits a step over two calls of ``update``: the first moves the params
    to :math:`p + \hat\epsilon` (``adv_optimizer = chain(contrib.normalize(), sgd(rho))``), the
    caller computes the gradient there, and the second moves them to the base rule's step
    from :math:`p`. Every second call of it equals one call here. With ``opaque_mode=True``
    (and ``sync_period=2``) optax does it in one call, from a ``grad_fn`` it is given, which is
    this function's step exactly; ``tests/test_optax.py`` matches both, params and the base
    rule's state. What differs: optax's ``normalize`` divides by :math:`\lVert g \rVert`
    without a guard, so a zero gradient takes every param to NaN; here
    :math:`\hat\epsilon = 0` then (the step is the base rule's on the gradient at :math:`p`).
    ``sync_period > 2`` (several ascent steps, optax's generalisation) and ``adv_optimizer``
    other than the normalized ascent are not offered. torch.optim has no SAM.

    The base rule's ``clear_nan`` clears :math:`g_{\text{SAM}}`; a NaN in :math:`g` makes
    :math:`g_{\text{SAM}}` NaN everywhere (through the norm), which a base rule with
    ``clear_nan=True`` turns into a step that leaves the params where they are.

    References
    ----------
    Foret, Kleiner, Mobahi and Neyshabur (2021). Sharpness-aware minimization for efficiently
    improving generalization. ICLR. arXiv:2010.01412.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([3.0, 4.0]), name="w")
    >>> step = pytensor.function(
    ...     [], [], updates=updates.sam((w**2).sum(), [w], rule=updates.sgd(learning_rate=0.1), rho=0.5))
    >>> _ = step()
    >>> w.get_value()  # g = (6, 8), |g| = 10: the gradient at w + 0.5 g/|g| = (3.3, 4.4)
    array([2.34, 3.12])
    """
    who = "sam"
    rule = _base_rule(who, rule)
    check_hyperparameter(who, "rho", rho, NON_NEGATIVE)
    if loss_or_grads is None and params is None:
        return None
    if loss_or_grads is None or isinstance(loss_or_grads, (list, tuple)):
        prepare_grads(who, loss_or_grads, params)  # the params' and arguments' errors first
        raise TypeError(
            f"{who}: needs the scalar loss as loss_or_grads (it takes the gradient at the perturbed "
            "params p + rho g/|g| from the loss); got a list of gradients"
        )
    params, grads = prepare_grads(who, loss_or_grads, params)
    loss = pt.as_tensor_variable(loss_or_grads)
    counter = step_counter(f"{who}.t") if is_schedule(rho) else None
    radius = _now(rho, counter)
    norm = l2_norm(grads)
    perturbed = []
    for p, g in zip(params, grads):
        n = pt.cast(norm, p.dtype)
        scale = pt.switch(pt.gt(n, 0), as_dtype(radius, p.dtype) / n, np.zeros((), p.dtype))
        perturbed.append(p.type.filter_variable(p + scale * g))
    # The loss of stand-ins for the params, differentiated there, then evaluated at the perturbed
    # params (replacing the params by expressions of themselves in one pass would not keep them).
    stand_ins = [p.type() for p in params]
    at_stand_ins = clone_replace(loss, replace=dict(zip(params, stand_ins)))
    sharp = clone_replace(pytensor.grad(at_stand_ins, stand_ins), replace=dict(zip(stand_ins, perturbed)))
    inner = _run_base(who, rule, [pt.cast(g, p.dtype) for g, p in zip(sharp, params)], params)
    result = begin_wrapper(who, inner, params, {"rho": rho}, {"rho": radius})
    if counter is not None:
        result[counter] = counter + 1
    return result


# -- Mechanic --------------------------------------------------------------------------------------


def _start(h: SimpleNamespace, param, x0):
    """:math:`x_0`: the params themselves on the first step."""
    return pt.switch(h.first, param, x0)


def _mechanic_terms(h: SimpleNamespace, param, grad, x0) -> tuple:
    r"""The terms of :math:`h = \langle \tilde g, \Delta_{prev} \rangle`, summed over every param."""
    previous = (_start(h, param, x0) - param) / h.denominator
    return ((grad + h.decay * param) * previous,)


def _mechanic_step(h: SimpleNamespace, param, update, x0) -> tuple:
    r"""The new param :math:`x_0 - (\sum_k s_k)\,\Delta` from the base rule's new value, and
    :math:`x_0`."""
    start = _start(h, param, x0)
    delta = (start - param) / h.denominator - (update - param)
    return start - h.scale * delta, start


@awaits_loss_and_params
def mechanize(
    loss_or_grads: Any = None,
    params: Any = None,
    rule: Any = None,
    weight_decay: Any = 1e-2,
    epsilon: Any = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> Updates:
    r"""Mechanic: run the base rule and learn the scale of its steps.

    With :math:`u` the base rule's step (its new value of :math:`p` minus :math:`p`),
    :math:`x_0` the params before the first call, :math:`s` a vector of :math:`n` scales (one
    per :math:`\beta_k = 1 - 10^{-k}`, :math:`k = 1 \dots n`), :math:`S = \sum_k s_k`, the
    gradient :math:`g` and every sum and norm over all the params together:

    .. math::

        \tilde g &= g + \lambda\, S\, \frac{\lVert g \rVert}{\lVert p \rVert + \epsilon}\, p,
        \qquad \Delta_{\text{prev}} = \frac{x_0 - p}{S + \epsilon},
        \qquad \Delta = \Delta_{\text{prev}} - u \\
        h &= \langle \tilde g, \Delta_{\text{prev}} \rangle \\
        m_k &\leftarrow \max(\beta_k m_k,\ |h| + \epsilon), \qquad
        v_k \leftarrow \beta_k^2 v_k + h^2, \qquad
        r_k \leftarrow \beta_k r_k + \operatorname{clip}(h, -m_k^{\text{old}}, m_k^{\text{old}})\, s_k \\
        s_k &\leftarrow \frac{(s_{\text{init}} / n)\, m_k + \max(r_k, 0)}{\sqrt{v_k} + \epsilon} \\
        p &\leftarrow x_0 - \Big(\sum_k s_k\Big)\, \Delta

    so the params move along the sum of the base rule's steps, scaled by the learned
    :math:`\sum_k s_k`.

    Parameters
    ----------
    $parameters
    rule : callable
        The base rule (optax's ``base_optimizer``): ``updates.adam(learning_rate=1.0)``, any rule
        called with its hyperparameters only, a rule given bare, a :func:`chain`, or any callable
        ``(loss_or_grads, params) -> updates``. It is given ``loss_or_grads`` as given (a rule
        that needs the loss may be mechanized). Its learning rate (or schedule) sets the shape
        of the steps over time, Mechanic their scale: 1.0 is the usual choice. Required.
    weight_decay : float or scalar tensor or schedule
        :math:`\lambda \ge 0`, Mechanic's own weight decay (on :math:`\tilde g` only, not the base
        rule's), default 1e-2.
    epsilon : float or scalar tensor or schedule
        :math:`\epsilon \ge 0`, default 1e-8 (optax's ``eps``).
    s_init : float
        :math:`s_{\text{init}} > 0`, the initial value of each :math:`s_k` (a number: it is the
        state's initial value), default 1e-6.
    num_betas : int
        :math:`n \ge 1`, the number of scales, default 6 (:math:`\beta = 0.9, \dots, 1 - 10^{-6}`).
    discard_loss : bool
        Default True: return the updates. False: return ``(updates, loss)``, the loss as given
        (None when ``loss_or_grads`` is a list of gradients).

    Returns
    -------
    Updates
        The params, the base rule's state, then ``<param>.mechanize.x0`` (the starting params,
        taken on the first call), ``mechanize.r``, ``mechanize.m``, ``mechanize.v``,
        ``mechanize.s`` (vectors of :math:`n`, in the lowest floating-point dtype of the params)
        and the counter ``mechanize.t``.

    Notes
    -----
    ``optax.contrib.mechanize(base_optimizer, weight_decay=1e-2, eps=1e-8, s_init=1e-6,
    num_betas=6)`` step for step, its state included (``x0``, ``r``, ``m``, ``v``, ``s``;
    ``count`` is the int64 ``mechanize.t``; the base optimizer's state is the base rule's
    here): optax's weight decay of the raw gradients, its clip of :math:`h` to the previous
    :math:`\pm m` (not in the paper) and its memory-saving form that recomputes
    :math:`\Delta_{\text{prev}}` from :math:`x_0` are all kept. Like optax, :math:`x_0` is read
    on the first call, so params loaded before it are the starting point (and
    :func:`reset_state` takes the params then as the new start). torch.optim has no Mechanic.

    References
    ----------
    Cutkosky, Defazio and Mehta (2023). Mechanic: a learning rate tuner. NeurIPS.
    arXiv:2306.00144.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([1.0, -2.0]), name="w")
    >>> tuned = updates.mechanize((w**2).sum(), [w], rule=updates.adam(learning_rate=1.0))
    >>> step = pytensor.function([], [], updates=tuned)
    >>> for _ in range(50):
    ...     _ = step()
    >>> bool(np.abs(w.get_value()).max() < 0.5), tuned.named_state()["mechanize.s"].shape
    (True, (6,))
    """
    who = "mechanize"
    rule = _base_rule(who, rule)
    for name, value in dict(weight_decay=weight_decay, epsilon=epsilon).items():
        check_hyperparameter(who, name, value, NON_NEGATIVE)
    s_init = POSITIVE.check(who, "s_init", s_init)
    num_betas = COUNT.check(who, "num_betas", num_betas)
    if loss_or_grads is None and params is None:
        return None
    params, grads = prepare_grads(who, loss_or_grads, params)
    given = grads if isinstance(loss_or_grads, (list, tuple)) else loss_or_grads
    inner = _run_base(who, rule, given, params)
    dtype = min((p.dtype for p in params), key=lambda d: np.dtype(d).itemsize)
    counter = step_counter(f"{who}.t")
    hyper = dict(weight_decay=weight_decay, epsilon=epsilon)
    values = {name: _now(value, counter) for name, value in hyper.items()}
    n = num_betas
    r, m, v = (new_state(np.zeros(n, dtype), f"{who}.{name}", 0.0, (n,)) for name in ("r", "m", "v"))
    s = new_state(np.full(n, s_init, dtype), f"{who}.s", s_init, (n,))

    total, grad_norm, param_norm = pt.sum(s), l2_norm(grads), l2_norm(params)

    def scalars(dtype: str) -> SimpleNamespace:
        r"""The step's scalars in ``dtype``: whether it is the first, the weight decay's factor on
        the params, :math:`S + \epsilon`."""
        eps, cast = as_dtype(values["epsilon"], dtype), (lambda y: pt.cast(y, dtype))
        decay = as_dtype(values["weight_decay"], dtype) * cast(total) * cast(grad_norm)
        first = pt.cast(pt.eq(counter, 0), dtype)
        factor = decay / (cast(param_norm) + eps)
        return SimpleNamespace(first=first, decay=factor, denominator=cast(total) + eps)

    step = Elementwise(who, _mechanic_step, slots=("x0",))
    groups = list(dtype_groups(params, [inner[p] for p in params], [()] * len(params)))
    buffers = slots = None
    if len(groups) == 1 and not building_per_parameter():  # the inner product in one node
        buffers = flat_buffers(step, groups[0][1], "")
        (h,) = fused_sums(Terms(who, _mechanic_terms), dtype, params, grads, buffers, scalars(dtype))
    else:
        slots = {i: slots_of(step, i, p) for i, p in enumerate(params)}
        pieces = [(scalars(p.dtype), p, g, *slots[i]) for i, (p, g) in enumerate(zip(params, grads))]
        h = total_of(pt.cast(pt.sum(_mechanic_terms(*piece)[0]), dtype) for piece in pieces)
    eps = as_dtype(values["epsilon"], dtype)
    betas = pt.constant(np.array([1.0 - 0.1**k for k in range(1, n + 1)], dtype=dtype))
    new_m = pt.maximum(betas * m, abs(h) + eps)
    new_v = betas**2 * v + h**2
    new_r = betas * r + pt.clip(h, -m, m) * s
    wealth = as_dtype(s_init / n, dtype) * new_m + pt.maximum(np.zeros((), dtype), new_r)
    new_s = wealth / (pt.sqrt(new_v) + eps)
    scale = pt.sum(new_s)

    config = {**hyper, "s_init": s_init, "num_betas": num_betas}
    result = begin_wrapper(who, inner, params, config, values)

    for group_dtype, group, _ in groups:
        own = SimpleNamespace(**vars(scalars(group_dtype)), scale=pt.cast(scale, group_dtype))
        apply_elementwise(step, group, own, result, "", slots=slots, buffers=buffers)
    for variable, value in ((r, new_r), (m, new_m), (v, new_v), (s, new_s)):
        result[variable] = value
    result[counter] = counter + 1
    return result
