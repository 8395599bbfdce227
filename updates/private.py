r"""Differentially private rules: :func:`dpsgd` and its aggregation step,
:func:`differentially_private_aggregate` (Abadi et al. 2016, as optax.contrib has them).

DP-SGD bounds what one example can do to a step: each example's gradient is clipped to a global
L2 norm :math:`C` (over all params together), the clipped gradients are summed, Gaussian noise of
standard deviation :math:`\sigma C` is added, and the sum is divided by the batch size. It needs
the gradients *per example*, which a mean loss cannot give, so both take either

- a **vector of per-example losses** (shape ``(batch,)``, with the params): each example's
  gradient is computed in the same compiled step (a vectorized Jacobian), or
- a **list of per-example gradients**, one per param, each with a leading batch axis: shape
  ``(batch, *param.shape)``.

A scalar loss, or gradients without the batch axis, are refused by their shape, naming what was
given: a mean gradient clipped as one example has no privacy guarantee.

The noise is drawn from a NumPy ``Generator`` held in a shared variable (``dpsgd.rng``) that
PyTensor advances at every call by its ``default_update``, as :func:`~updates.add_gradient_noise`
does; a ``seed`` makes the draws reproducible.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from updates.checks import (
    NON_NEGATIVE,
    UNIT,
    Interval,
    check_hyperparameter,
    check_params,
    describe,
    describe_hyperparameter,
    is_schedule,
    which,
)
from updates.container import Updates
from updates.engine import Rule, apply_rule, as_dtype
from updates.grads import clear_nan as _zero_nans
from updates.public import awaits_input, awaits_loss_and_params
from updates.transforms import _normal, _tensors

__all__ = ["dpsgd", "differentially_private_aggregate"]

#: The defaults of TensorFlow Privacy's DP-SGD tutorial (MNIST): optax requires all three.
DEFAULT_LEARNING_RATE = 0.15
DEFAULT_L2_NORM_CLIP = 1.0
DEFAULT_NOISE_MULTIPLIER = 1.1
SEED = Interval(integer=True, optional=True)


class PrivateGradients(list):
    """The gradients :func:`differentially_private_aggregate` returns: a list of the noisy mean
    gradients (each of its param's shape), with the ``generator`` that draws the noise (a shared
    variable with a ``default_update``) and ``batch_size``, the symbolic number of examples."""

    def __init__(self, grads: Iterable[Variable], generator: Variable, batch_size: Variable) -> None:
        super().__init__(grads)
        self.generator = generator
        self.batch_size = batch_size


def _scalar(who: str, name: str, value: Any, interval: Interval) -> Any:
    """A number or a scalar tensor in ``interval``; schedules are refused (the aggregation has
    no step counter)."""
    if is_schedule(value):
        raise TypeError(f"{who}: {name} must be a number or a scalar tensor, got a schedule {value!r}")
    check_hyperparameter(who, name, value, interval)
    return value


def _per_example(who: str, grads: Sequence[Any], shapes: Sequence[tuple] | None) -> list[Variable]:
    """The per-example gradients as tensors, each with a leading batch axis, or a clear error.

    ``shapes``: the shapes the gradients must have after their batch axis (the params' shapes),
    or None when no params are given (then at least one axis is needed)."""
    tensors = _tensors(who, grads)
    for i, g in enumerate(tensors):
        expected = None if shapes is None else shapes[i]
        if g.ndim == 0 or (expected is not None and g.ndim != len(expected) + 1):
            want = "at least 1" if expected is None else f"{len(expected) + 1}: (batch, *{expected})"
            raise ValueError(
                f"{who}: grads[{i}] has {g.ndim} dimensions ({g.type}), expected {want}; DP-SGD "
                "needs per-example gradients, each with a leading batch axis (a mean gradient "
                "clipped as one example has no privacy guarantee)"
            )
        if expected is not None and any(
            s is not None and s != e for s, e in zip(g.type.shape[1:], expected)
        ):
            raise ValueError(
                f"{who}: grads[{i}] has static shape {g.type.shape}, expected (batch, *{expected})"
            )
    sizes = {g.type.shape[0] for g in tensors} - {None}
    if len(sizes) > 1:
        raise ValueError(f"{who}: the per-example gradients have different batch sizes {sorted(sizes)}")
    return tensors


def _aggregate(
    who: str, grads: list[Variable], l2_norm_clip: Any, noise_multiplier: Any, seed: int | None
) -> PrivateGradients:
    """Clip each example to ``l2_norm_clip``, sum, add noise, divide by the batch size."""
    dtype = "float64" if any(g.dtype == "float64" for g in grads) else grads[0].dtype
    squares = [pt.sum(pt.sqr(pt.cast(g, dtype)), axis=tuple(range(1, g.ndim))) for g in grads]
    norms = pt.sqrt(functools.reduce(lambda a, b: a + b, squares))
    ratio = as_dtype(l2_norm_clip, dtype) / norms
    # optax: min(C / |g_b|, 1), and 1 where that is NaN (C = |g_b| = 0)
    multipliers = pt.switch(pt.isnan(ratio), np.ones((), dtype), pt.minimum(ratio, np.ones((), dtype)))
    batch = grads[0].shape[0]
    generator = pytensor.shared(np.random.default_rng(seed), name=f"{who}.rng")
    noisy, rng = [], generator
    for g in grads:
        clipped = pt.tensordot(pt.cast(multipliers, g.dtype), g, axes=1)
        std = as_dtype(l2_norm_clip, g.dtype) * as_dtype(noise_multiplier, g.dtype)
        rng, draw = _normal(rng, clipped)
        noisy.append((clipped + std * draw) / pt.cast(batch, g.dtype))
    with warnings.catch_warnings():  # PyTensor 3 deprecates default_update, but still applies it
        warnings.simplefilter("ignore", DeprecationWarning)
        generator.default_update = rng
    return PrivateGradients(noisy, generator, batch)


@awaits_input
def differentially_private_aggregate(
    grads: Sequence[Any],
    l2_norm_clip: Any = DEFAULT_L2_NORM_CLIP,
    noise_multiplier: Any = DEFAULT_NOISE_MULTIPLIER,
    seed: int | None = None,
) -> PrivateGradients:
    r"""Aggregate per-example gradients privately: clip each example, sum, add noise, average.

    For a batch of :math:`B` examples with gradients :math:`g_{b,i}` (example :math:`b`, param
    :math:`i`):

    .. math::

        c_b &= \min\!\left(1, \frac{C}{\sqrt{\sum_i \lVert g_{b,i} \rVert^2}}\right)
            \quad (1 \text{ where } 0/0) \\
        \bar g_i &= \frac{1}{B} \left(\sum_b c_b\, g_{b,i} + \sigma C\, z_i\right),
            \qquad z_i \sim \mathcal{N}(0, I)

    Parameters
    ----------
    grads : list of TensorVariable
        The per-example gradients, one per param, each with a leading batch axis (shape
        ``(batch, *param.shape)``, the same batch for all), e.g. ``pytensor.gradient.jacobian``
        of a vector of per-example losses. Leave out (keywords only) to get the transform back
        awaiting them.
    l2_norm_clip : float or scalar tensor
        :math:`C \ge 0`, the largest global L2 norm of one example's gradient, default 1.0.
    noise_multiplier : float or scalar tensor
        :math:`\sigma \ge 0`, the noise's standard deviation over :math:`C`, default 1.1.
    seed : int, optional
        Seed of the random generator, for reproducible noise. Default: fresh entropy.

    Returns
    -------
    PrivateGradients
        The noisy mean gradients, each of its param's shape (without the batch axis) and of its
        input's dtype, with ``generator`` (the shared random generator) and ``batch_size``.

    Notes
    -----
    optax.contrib.differentially_private_aggregate step for step (its
    ``per_example_global_norm_clip`` then the noise); optax requires ``l2_norm_clip`` and
    ``noise_multiplier`` and splits a JAX key, here a NumPy generator draws the noise, so the
    draws differ from optax's for the same seed (their distribution is the same). The global
    norm is computed in float64 if any gradient is float64, else in the gradients' dtype.

    The generator is a shared variable with a ``default_update`` (``pytensor.function`` advances
    it at every call), not part of any :class:`Updates`: :func:`save_state` does not save it.
    Compile the aggregated gradients into one function only.

    References
    ----------
    Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang (2016). Deep learning with
    differential privacy. CCS. arXiv:1607.00133.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> per_example = [np.array([[3.0, 4.0], [0.3, 0.4]])]  # two examples, norms 5 and 0.5
    >>> mean = updates.differentially_private_aggregate(per_example, l2_norm_clip=1.0, noise_multiplier=0.0)
    >>> pytensor.function([], mean[0])()
    array([0.45, 0.6 ])
    """
    who = "differentially_private_aggregate"
    _scalar(who, "l2_norm_clip", l2_norm_clip, NON_NEGATIVE)
    _scalar(who, "noise_multiplier", noise_multiplier, NON_NEGATIVE)
    SEED.check(who, "seed", seed)
    return _aggregate(who, _per_example(who, grads, None), l2_norm_clip, noise_multiplier, seed)


def _sgd(h, param, grad):
    return (param - h.learning_rate * grad,)


def _trace_kernel(nesterov: bool):
    def kernel(h, param, grad, trace):
        trace = grad + h.momentum * trace  # optax's trace: t <- g + mu t
        step = grad + h.momentum * trace if nesterov else trace
        return param - h.learning_rate * step, trace

    return kernel


_RANGES = dict(learning_rate=NON_NEGATIVE, momentum=UNIT)
_RULES = {
    None: Rule("dpsgd", _sgd, ranges=_RANGES),
    False: Rule("dpsgd", _trace_kernel(False), slots=("trace",), ranges=_RANGES),
    True: Rule("dpsgd", _trace_kernel(True), slots=("trace",), ranges=_RANGES),
}


def _per_example_grads(who: str, loss_or_grads: Any, params: list) -> list[Variable]:
    """The per-example gradients of a vector of per-example losses, or the given ones, checked."""
    shapes = [tuple(np.shape(p.get_value(borrow=True))) for p in params]
    if isinstance(loss_or_grads, (list, tuple)):
        if len(loss_or_grads) != len(params):
            raise ValueError(
                f"{who}: got {len(loss_or_grads)} per-example gradients for {len(params)} params; "
                "loss_or_grads and params must have the same length"
            )
        return _per_example(who, loss_or_grads, shapes)
    try:
        losses = pt.as_tensor_variable(loss_or_grads)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{who}: loss_or_grads must be a vector of per-example losses or a list of per-example "
            f"gradients, got {describe(loss_or_grads)}"
        ) from err
    if losses.ndim != 1 or not losses.dtype.startswith("float"):
        raise ValueError(
            f"{who}: loss_or_grads must be a vector of per-example losses (shape (batch,)) or a list "
            f"of per-example gradients, got a {losses.ndim}-d {losses.dtype} loss ({losses.type}); "
            "do not reduce the losses with .sum() or .mean(): DP-SGD clips each example's gradient"
        )
    try:
        from pytensor.graph.traversal import ancestors
    except ImportError:  # pragma: no cover
        from pytensor.graph.basic import ancestors
    connected = set(ancestors([losses]))
    for i, param in enumerate(params):
        if param not in connected:
            raise ValueError(
                f"{who}: the losses do not depend on {which(param, i)}; remove it from params or "
                "pass its per-example gradients explicitly"
            )
    grads = pytensor.gradient.jacobian(losses, params, vectorize=True)
    return [pt.cast(g, p.dtype) for g, p in zip(grads, params)]


@awaits_loss_and_params
def dpsgd(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = DEFAULT_LEARNING_RATE,
    l2_norm_clip: Any = DEFAULT_L2_NORM_CLIP,
    noise_multiplier: Any = DEFAULT_NOISE_MULTIPLIER,
    seed: int | None = None,
    momentum: Any = None,
    nesterov: bool = False,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""DP-SGD: SGD on per-example gradients clipped, summed, noised and averaged.

    For a batch of :math:`B` examples, with :math:`g_{b,i}` the gradient of example :math:`b`'s
    loss with respect to param :math:`p_i`, and the trace :math:`\tau_i` zero at first:

    .. math::

        c_b &= \min\!\left(1, \frac{C}{\sqrt{\sum_i \lVert g_{b,i} \rVert^2}}\right) \\
        \bar g_i &= \frac{1}{B} \left(\sum_b c_b\, g_{b,i} + \sigma C\, z_i\right),
            \qquad z_i \sim \mathcal{N}(0, I) \\
        \tau_i &\leftarrow \bar g_i + \mu\, \tau_i, \qquad
        u_i = \bar g_i + \mu\, \tau_i \ (\text{nesterov}),\ \tau_i \ (\text{else}),\
        \bar g_i \ (\text{momentum None}) \\
        p_i &\leftarrow p_i - \eta\, u_i

    Parameters
    ----------
    loss_or_grads : TensorVariable or list of TensorVariable
        Per example: a **vector of per-example losses** (shape ``(batch,)``; the rule computes
        each example's gradients in the same step, by a vectorized Jacobian), or a **list of
        per-example gradients**, one per param, each of shape ``(batch, *param.shape)``. A
        scalar loss or gradients without the batch axis are refused. Leave out (with
        ``params``) to get the rule back awaiting both.
    params : list of shared variables
        The floating-point params to update, each given once.
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, default 0.15 (TensorFlow Privacy's DP-SGD tutorial; optax has no
        default).
    l2_norm_clip : float or scalar tensor
        :math:`C \ge 0`, the largest global L2 norm of one example's gradient, default 1.0.
    noise_multiplier : float or scalar tensor
        :math:`\sigma \ge 0`, the noise's standard deviation over :math:`C`, default 1.1.
    seed : int, optional
        Seed of the noise's random generator, for reproducible draws. Default: fresh entropy.
    momentum : float, scalar tensor or None
        :math:`\mu` in [0, 1) of optax's ``trace`` (kept as ``<param>.dpsgd.trace``), or None
        (default) for plain SGD, with no state.
    nesterov : bool
        Nesterov's look-ahead :math:`u = \bar g + \mu \tau` (needs a ``momentum``), default False.
    clear_nan : bool
        Replace NaN entries of the per-example gradients by zero before clipping.

    Returns
    -------
    Updates
        The new params in the order given, then ``<param>.dpsgd.trace`` for each (with a
        ``momentum``). The noise's generator (``dpsgd.rng``) is not part of it: it advances by
        its ``default_update`` at every call.

    Raises
    ------
    ValueError
        For a scalar loss, gradients without a leading batch axis or of another shape, batch
        sizes that differ, hyperparameters out of range, or ``nesterov`` without a ``momentum``.

    Notes
    -----
    ``optax.contrib.dpsgd(learning_rate, l2_norm_clip, noise_multiplier, seed, momentum,
    nesterov)`` step for step, with the same arguments and per-example gradients: with
    :math:`\sigma = 0` the trajectories (params and trace) are equal (``tests/test_private.py``).
    The noise is drawn by a NumPy generator, not optax's JAX key: the same seed gives other
    draws than optax's, from the same distribution, and the same draws as another call of
    ``dpsgd`` with that seed. optax needs every argument but ``momentum`` and ``nesterov``;
    here the defaults are TensorFlow Privacy's tutorial values and a fresh seed. optax ignores
    ``nesterov`` without momentum; here it is an error. The noise's generator is a shared
    variable with a ``default_update``, as in :func:`~updates.add_gradient_noise`:
    :func:`save_state` does not save it, and the updates should be compiled into one function
    only. PyMC's ``pm.fit`` hands its rule a scalar loss, which DP-SGD refuses.

    References
    ----------
    Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang (2016). Deep learning with
    differential privacy. CCS. arXiv:1607.00133.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> x = pt.matrix("x")  # one example per row
    >>> losses = ((x - w) ** 2).sum(axis=1)  # per-example losses, shape (batch,)
    >>> result = updates.dpsgd(losses, [w], learning_rate=0.1, noise_multiplier=0.0, momentum=0.9)
    >>> list(result.named_state())
    ['w.dpsgd.trace']
    >>> step = pytensor.function([x], [], updates=result)
    >>> step(np.array([[3.0, 4.0], [0.3, 0.4]]))  # gradients of norm 10 (clipped to 1) and 1
    []
    >>> w.get_value()
    array([0.06, 0.08])
    """
    who = "dpsgd"
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"{who}: nesterov must be True or False, got {nesterov!r}")
    if nesterov and momentum is None:
        raise ValueError(f"{who}: nesterov=True needs a momentum (e.g. momentum=0.9), got momentum=None")
    _scalar(who, "l2_norm_clip", l2_norm_clip, NON_NEGATIVE)
    _scalar(who, "noise_multiplier", noise_multiplier, NON_NEGATIVE)
    SEED.check(who, "seed", seed)
    rule = _RULES[None if momentum is None else bool(nesterov)]
    hyper = dict(learning_rate=learning_rate)
    if momentum is not None:
        hyper["momentum"] = momentum
    if loss_or_grads is None and params is None:
        return apply_rule(rule, None, None, clear_nan, **hyper)  # the checks only
    apply_rule(rule, None, None, clear_nan, **hyper)
    if loss_or_grads is None or params is None:
        return apply_rule(rule, loss_or_grads, params, clear_nan, **hyper)  # names what is missing
    params = check_params(who, params)
    grads = _per_example_grads(who, loss_or_grads, params)
    if clear_nan:
        grads = [_zero_nans(g) for g in grads]
    mean = _aggregate(who, grads, l2_norm_clip, noise_multiplier, seed)
    result = apply_rule(rule, list(mean), params, **hyper)
    private = dict(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier)
    result.config[0].update({name: describe_hyperparameter(v) for name, v in private.items()})
    result.config[0].update(seed=seed, nesterov=bool(nesterov))
    if momentum is None:
        result.config[0]["momentum"] = None
    result.hyperparameters.update({name: pt.as_tensor_variable(v) for name, v in private.items()})
    return result
