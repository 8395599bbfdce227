r"""Rules that orthogonalize the step of each matrix: :func:`muon`.

Muon steps each 2-D param along the orthogonalized momentum of its gradient: a few
Newton-Schulz iterations (matrix products) bring the singular values of the momentum near 1.
Its update needs whole matrices, so it is a ``per_tensor`` rule, built per parameter; its
one slot, the momentum buffer, has the param's shape (``W.muon.momentum_buffer``). Params that
are not matrices go to a ``fallback`` rule (e.g. :func:`~updates.adam`), merged as a parameter
group (see :func:`~updates.merge_updates`). It follows torch.optim.Muon; ``form="optax"`` follows
optax.contrib.muon instead (bias-corrected momentum, its epsilon and width scaling, its Adam for
the params that are not matrices).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytensor.tensor as pt

from updates.checks import NON_NEGATIVE, UNIT, Interval, check_params, describe, is_concrete, which
from updates.container import Updates
from updates.engine import Rule, _in_param_order, apply_rule
from updates.grads import clear_nan as _zero_nans
from updates.grads import get_or_compute_grads
from updates.public import update_rule
from updates.wrappers import merge_updates

__all__ = ["muon"]

#: Keller Jordan's quintic Newton-Schulz coefficients (torch's DEFAULT_A, DEFAULT_B, DEFAULT_C).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
FORMS = ("torch", "optax")
NS_STEPS = Interval(0, 100, integer=True)
#: The Adam of ``form="optax"`` for the params that are not matrices: optax.contrib.muon's
#: ``adam_b1`` and ``adam_b2`` (its ``adam_eps_root`` and ``adam_weight_decay`` are 0).
OPTAX_ADAM_BETAS = (0.9, 0.999)


def _lr_ratio(adjust_lr_fn: str | None, shape: tuple, form: str = "torch") -> float:
    """The factor of the learning rate for a matrix of ``shape`` (A rows, B columns), in double:
    torch's ``_adjust_lr`` (a torch weight is (fan_out, fan_in)), or optax's ``scale_by_shape``
    (a JAX weight is (fan_in, fan_out)), the same function of the fans."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    fan_out, fan_in = (rows, cols) if form == "torch" else (cols, rows)
    return math.sqrt(max(1, fan_out / fan_in))


def newton_schulz(x, coefficients, steps: int, epsilon, tall: bool, add_epsilon: bool = False):
    r"""``steps`` quintic Newton-Schulz iterations on the matrix ``x`` (torch's
    ``_zeropower_via_newtonschulz``, in ``x``'s dtype): :math:`X \leftarrow X / \max(\lVert X
    \rVert_F, \epsilon)` (``add_epsilon``: :math:`X / (\lVert X \rVert_F + \epsilon)`, optax's),
    then :math:`A = X X^\top`, :math:`X \leftarrow a X + (b A + c A^2) X`, on the transpose of a
    ``tall`` matrix (more rows than columns), so that :math:`A` is the smaller Gram matrix."""
    a, b, c = (pt.constant(np.asarray(k, dtype=x.dtype)) for k in coefficients)
    if tall:
        x = x.T
    norm = pt.sqrt(pt.sum(pt.sqr(x)))
    x = x / (norm + epsilon if add_epsilon else pt.maximum(norm, epsilon))
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def _bias_corrections(h, t, step):
    """optax's bias corrections of the momentum at this step and the next (Nesterov's)."""
    return dict(bc1=1 - h.momentum**t, bc1_next=1 - h.momentum ** (t + 1))


@functools.cache
def _muon_rule(
    nesterov: bool, coefficients: tuple, steps: int, adjust_lr_fn: str | None, form: str = "torch"
) -> Rule:
    """The Rule of one choice of the structural options (cached, so equal choices share it)."""
    optax_form = form == "optax"

    def kernel(h, param, grad, buf):
        shape = param.get_value(borrow=True).shape  # fixed: a per-tensor rule is built per param
        if optax_form:  # optax's scale_by_muon: a bias-corrected moving average
            buf = (1 - h.momentum) * grad + h.momentum * buf
            if nesterov:
                step = h.momentum * (buf / h.bc1_next) + (1 - h.momentum) * (grad / h.bc1)
            else:
                step = buf / h.bc1
        else:
            buf = buf + (1 - h.momentum) * (grad - buf)  # torch's buf.lerp_(grad, 1 - momentum)
            step = grad + h.momentum * (buf - grad) if nesterov else buf  # grad.lerp(buf, momentum)
        tall = shape[0] > shape[1]
        ortho = newton_schulz(step, coefficients, steps, h.epsilon, tall=tall, add_epsilon=optax_form)
        ratio = pt.constant(np.asarray(_lr_ratio(adjust_lr_fn, shape, form), dtype=param.dtype))
        if optax_form:  # scale_by_shape, add_decayed_weights, scale_by_learning_rate
            return param - h.learning_rate * (ratio * ortho + h.weight_decay * param), buf
        new = param * (1 - h.learning_rate * h.weight_decay) - (h.learning_rate * ratio) * ortho
        return new, buf

    return Rule(
        "muon",
        kernel,
        slots=("momentum_buffer",),
        per_step=_bias_corrections if optax_form else None,
        per_tensor=True,
        ranges=dict(
            learning_rate=NON_NEGATIVE, weight_decay=NON_NEGATIVE, momentum=UNIT, epsilon=NON_NEGATIVE
        ),
    )


def _adam_corrections(h, t, step):
    return dict(bc1=1 - h.beta1**t, bc1_next=1 - h.beta1 ** (t + 1), bc2=1 - h.beta2**t)


@functools.cache
def _optax_adam_rule(nesterov: bool) -> Rule:
    """optax.contrib.muon's Adam for the params that are not matrices: ``optax.adamw`` with
    ``nesterov`` as muon's, ``eps`` muon's, ``eps_root`` and ``weight_decay`` 0."""

    def kernel(h, param, grad, m, v):
        m = (1 - h.beta1) * grad + h.beta1 * m
        v = (1 - h.beta2) * pt.sqr(grad) + h.beta2 * v
        m_hat = h.beta1 * (m / h.bc1_next) + (1 - h.beta1) * (grad / h.bc1) if nesterov else m / h.bc1
        return param - h.learning_rate * (m_hat / (pt.sqrt(v / h.bc2) + h.epsilon)), m, v

    return Rule("adam", kernel, slots=("m", "v"), per_step=_adam_corrections)


def _optax_adam(nesterov: bool, learning_rate: Any, epsilon: Any):
    """The fallback of ``form="optax"``: a rule awaiting ``(loss_or_grads, params)``."""
    beta1, beta2 = OPTAX_ADAM_BETAS
    hyper = dict(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon)
    return functools.partial(apply_rule, _optax_adam_rule(bool(nesterov)), **hyper)


def _options(nesterov: Any, ns_coefficients: Any, ns_steps: Any, adjust_lr_fn: Any, form: Any) -> Rule:
    """Check the structural options and return the Rule they select."""
    if not (isinstance(form, str) and form in FORMS):
        raise ValueError(f"muon: form must be 'torch' or 'optax', got {form!r}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"muon: nesterov must be True or False, got {nesterov!r}")
    if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
        raise ValueError(
            f"muon: ns_coefficients must be a tuple of 3 numbers (a, b, c), got {ns_coefficients!r}"
        )
    for k in ns_coefficients:
        if isinstance(k, (bool, np.bool_)) or not is_concrete(k) or not math.isfinite(float(k)):
            raise TypeError(f"muon: ns_coefficients must be 3 finite real numbers, got {ns_coefficients!r}")
    steps = NS_STEPS.check("muon", "ns_steps", ns_steps)
    if not (adjust_lr_fn is None or (isinstance(adjust_lr_fn, str) and adjust_lr_fn in ADJUST_LR_FNS)):
        raise ValueError(
            f"muon: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}"
        )
    coefficients = tuple(float(k) for k in ns_coefficients)
    return _muon_rule(bool(nesterov), coefficients, steps, adjust_lr_fn, form)


def _check_fallback(fallback: Any) -> None:
    if fallback is None:
        return
    if isinstance(fallback, Mapping) or not callable(fallback):
        raise TypeError(
            "muon: fallback must be a rule awaiting (loss_or_grads, params), e.g. "
            f"updates.adam(learning_rate=1e-3), or None, got {describe(fallback)}"
        )


@update_rule
def muon(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-3,
    weight_decay: Any = 0.1,
    momentum: Any = 0.95,
    epsilon: Any = 1e-7,
    *,
    nesterov: bool = True,
    ns_coefficients: tuple = NS_COEFFICIENTS,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    fallback: Any = None,
    form: str = "torch",
    clear_nan: bool = False,
) -> Updates:
    r"""Muon: momentum orthogonalized by Newton-Schulz iterations, for 2-D params.

    For each matrix param :math:`P` of shape :math:`A \times B`, with :math:`B` its momentum
    buffer (zero at first) and :math:`\mu` the momentum:

    .. math::

        B &\leftarrow \mu B + (1 - \mu)\, g \\
        \tilde B &= (1 - \mu)\, g + \mu B \quad (\text{nesterov; else } \tilde B = B) \\
        O &= \operatorname{NS}^{(a,b,c)}_k(\tilde B) \\
        P &\leftarrow P\, (1 - \eta \lambda) - \eta\, r(A, B)\, O

    with :math:`r = \sqrt{\max(1, A/B)}` (``adjust_lr_fn`` None or ``"original"``, Keller
    Jordan's) or :math:`r = 0.2 \sqrt{\max(A, B)}` (``"match_rms_adamw"``, Moonshot's). The
    Newton-Schulz map :math:`\operatorname{NS}^{(a,b,c)}_k` works on :math:`X = \tilde B` (on
    :math:`\tilde B^\top` when :math:`A > B`, transposed back at the end):

    .. math::

        X &\leftarrow X / \max(\lVert X \rVert_F, \epsilon) \\
        X &\leftarrow a X + \left(b\, X X^\top + c\, (X X^\top)^2\right) X
            \quad (k \text{ times})

    which brings the singular values of :math:`\tilde B` near 1 (to about [0.7, 1.2] with the
    default coefficients, not exactly 1: the quintic favours a steep slope at 0).

    With ``form="optax"`` (optax.contrib.muon's), at step :math:`t` (a counter ``muon.t``):

    .. math::

        B &\leftarrow \mu B + (1 - \mu)\, g \\
        \tilde B &= \mu \frac{B}{1 - \mu^{t+1}} + (1 - \mu) \frac{g}{1 - \mu^t}
            \quad (\text{nesterov; else } \tilde B = B / (1 - \mu^t)) \\
        O &= \operatorname{NS}^{(a,b,c)}_k(\tilde B), \text{ from }
            X = \tilde B / (\lVert \tilde B \rVert_F + \epsilon) \\
        P &\leftarrow P - \eta \left(r'(A, B)\, O + \lambda P\right)

    with :math:`r' = \sqrt{\max(1, B/A)}` (a JAX weight is (fan_in, fan_out), a torch one
    (fan_out, fan_in): the same width scaling) or :math:`0.2 \sqrt{\max(A, B)}`
    (``"match_rms_adamw"``, optax's ``consistent_rms=0.2``); the params that are not matrices
    go, without a ``fallback``, to optax's AdamW (:math:`\beta_1 = 0.9`, :math:`\beta_2 =
    0.999`, :math:`\epsilon` and :math:`\eta` muon's, Nesterov's form if ``nesterov``, no weight
    decay; ``<param>.adam.m``, ``<param>.adam.v``, ``adam.t``).

    Parameters
    ----------
    $parameters
        Each must be a matrix (2-D), unless a ``fallback`` is given for the others.
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, default 1e-3.
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled, scaled by :math:`\eta` (not by :math:`r`), default 0.1.
    momentum : float or scalar tensor
        :math:`\mu` in [0, 1), default 0.95.
    epsilon : float or scalar tensor
        :math:`\epsilon \ge 0`, the floor of the Frobenius norm in Newton-Schulz, default 1e-7.
    nesterov : bool
        Orthogonalize Nesterov's look-ahead :math:`\tilde B` rather than :math:`B`, default True.
    ns_coefficients : tuple of 3 floats
        :math:`(a, b, c)`, default (3.4445, -4.7750, 2.0315).
    ns_steps : int
        :math:`k`, the number of Newton-Schulz iterations, in [0, 100), default 5.
    adjust_lr_fn : None, "original" or "match_rms_adamw"
        The factor :math:`r` of the learning rate (see above), default None ("original").
    fallback : rule or None
        The rule for the params that are not matrices (biases, gains, scalars, filters), called
        with their gradients (or the loss) and those params: a rule awaiting
        ``(loss_or_grads, params)`` such as ``updates.adam(learning_rate=3e-4)``, or any callable
        ``fallback(loss_or_grads, params) -> updates``. Default None: such params are refused
        (``form="torch"``) or given to optax's built-in AdamW (``form="optax"``).
    form : "torch" or "optax"
        Whose Muon: torch.optim.Muon's (default) or optax.contrib.muon's, which differ in the
        momentum (bias-corrected), the place of :math:`\epsilon`, the width scaling and the
        params that are not matrices (see above and the Notes). The defaults stay torch's:
        ``optax.contrib.muon(η)`` is ``muon(learning_rate=η, weight_decay=0.0, epsilon=1e-8,
        form="optax")``.
    $clear_nan
        With a fallback, it is given the gradients with their NaN cleared too (then not the
        loss).

    Returns
    -------
    Updates
        The new params in the order given, then ``<param>.muon.momentum_buffer`` for each
        matrix (torch's ``state["momentum_buffer"]``, optax's ``mu``), then the fallback's state.
        The fallback's hyperparameters are listed as ``fallback.<name>``. Muon keeps no step
        counter, except in optax's form (``muon.t``, optax's ``count``).

    Raises
    ------
    ValueError
        For a param that is not 2-D without a ``fallback`` (the message names it and its shape),
        and for hyperparameters out of range.

    Notes
    -----
    torch.optim.Muon (torch 2.9 and later) step for step, params and momentum buffers:
    ``Muon(lr=η, weight_decay=λ, momentum=μ, nesterov=n, ns_coefficients=(a, b, c), eps=ε,
    ns_steps=k, adjust_lr_fn=f)`` is ``muon(η, λ, μ, ε, nesterov=n, ns_coefficients=(a, b, c),
    ns_steps=k, adjust_lr_fn=f)``. torch refuses params that are not 2-D; ``fallback`` does
    here what torch leaves to a second optimizer. torch accepts any momentum >= 0; here [0, 1).

    **Dtypes.** torch computes Newton-Schulz in bfloat16 whatever the param's dtype (on the CPU
    too: a float64 param's step is rounded to bfloat16, about 3 significant digits, then added
    in float64). Here Newton-Schulz runs in the param's dtype (float32 stays float32, float64
    is exact to float64) with every constant cast to it: PyTensor has no bfloat16, and the
    rounding is not part of the algorithm. The float64 trajectories equal torch's with its
    bfloat16 cast made the identity (``tests/test_torch.py``); against torch as shipped they
    agree to bfloat16's precision.

    **optax.** ``optax.contrib.muon`` differs from torch's in five ways, all taken by
    ``form="optax"``, which then equals it step for step (params, ``mu`` and ``count``, the
    Adam's state too; ``tests/test_optax.py``): (1) its momentum is bias-corrected, by
    :math:`1 - \mu^t` (and :math:`1 - \mu^{t+1}` for the Nesterov term); (2) it divides by
    :math:`\lVert X \rVert_F + \epsilon`, not by :math:`\max(\lVert X \rVert_F, \epsilon)`;
    (3) it reads a matrix as (fan_in, fan_out), so its width scaling is
    :math:`\sqrt{\max(1, B/A)}` where torch's is :math:`\sqrt{\max(1, A/B)}`; (4) the params
    that are not matrices go to a built-in AdamW; (5) its defaults: ``eps=1e-8``,
    ``weight_decay=0`` and no default learning rate (here the defaults stay torch's, so pass
    ``epsilon=1e-8, weight_decay=0.0``). Both run Newton-Schulz in the param's dtype. optax's
    ``beta`` is ``momentum``, ``ns_coeffs`` is ``ns_coefficients``, ``eps`` is ``epsilon``,
    ``consistent_rms=0.2`` is ``adjust_lr_fn="match_rms_adamw"``. Not here: another
    ``consistent_rms``, per-iteration coefficients (``ns_coeffs="dion"``), ``adaptive``,
    ``preconditioning`` other than ``"frobenius"``, ``mu_dtype``,
    ``muon_weight_dimension_numbers`` (only 2-D params are orthogonalized),
    ``weight_decay_mask``, and the Adam's own ``adam_b1``, ``adam_b2``, ``adam_eps_root``,
    ``adam_weight_decay`` and ``adam_learning_rate`` (at their defaults here; for others give a
    ``fallback``, e.g. ``updates.adamw``, which is optax's ``adamw`` without Nesterov).

    References
    ----------
    Jordan, Jin, Boza, You, Cesista, Newhouse and Bernstein (2024). Muon: an optimizer for hidden
    layers in neural networks. https://kellerjordan.github.io/posts/muon/

    Liu, Su, Yao, Jiang, Lai, Du, Qin, Xu, Lu, Chen et al. (2025). Muon is scalable for LLM
    training. arXiv:2502.16982.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> W = pytensor.shared(np.ones((3, 2)), name="W")
    >>> b = pytensor.shared(np.ones(2), name="b")
    >>> loss = (W**2).sum() + (b**2).sum()
    >>> result = updates.muon(loss, [W, b], learning_rate=0.02, fallback=updates.adam(learning_rate=1e-3))
    >>> list(result.named_state())
    ['W.muon.momentum_buffer', 'b.adam.m', 'b.adam.v', 'adam.t']
    """
    rule = _options(nesterov, ns_coefficients, ns_steps, adjust_lr_fn, form)
    _check_fallback(fallback)
    options = dict(nesterov=nesterov, ns_coefficients=tuple(ns_coefficients), ns_steps=ns_steps)
    options.update(adjust_lr_fn=adjust_lr_fn, form=form)
    hyper = dict(learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum, epsilon=epsilon)
    apply = functools.partial(
        apply_rule, rule, clear_nan=clear_nan, options=tuple(options), **options, **hyper
    )
    if loss_or_grads is None or params is None:
        return apply(loss_or_grads, params)  # the checks, and the rule (or the missing argument)
    apply(None, None)  # the range checks, also when every param goes to the fallback
    checked = check_params("muon", params)
    others = [i for i, p in enumerate(checked) if p.ndim != 2]
    if not others:
        return apply(loss_or_grads, checked)
    if fallback is None and form == "optax":
        fallback = _optax_adam(nesterov, learning_rate, epsilon)
    if fallback is None:
        i = others[0]
        shape = tuple(checked[i].get_value(borrow=True).shape)
        raise ValueError(
            f"muon: {which(checked[i], i)} has shape {shape}; muon orthogonalizes matrices (2-D "
            "params) only, as torch.optim.Muon; give fallback= a rule for the others "
            "(fallback=updates.adam(learning_rate=3e-4)) or leave them out"
        )
    matrices = [i for i in range(len(checked)) if i not in others]
    if isinstance(loss_or_grads, (list, tuple)) or clear_nan:
        grads = get_or_compute_grads(loss_or_grads, checked)
        if clear_nan:
            grads = [_zero_nans(g) for g in grads]
        mine, theirs = [grads[i] for i in matrices], [grads[i] for i in others]
    else:  # the loss itself, so that each part may hand it to schedules that watch it
        mine = theirs = loss_or_grads
    parts = []
    if matrices:
        parts.append(apply(mine, [checked[i] for i in matrices]))
    parts.append(fallback(theirs, [checked[i] for i in others]))
    merged = merge_updates(*parts)
    merged.hyperparameters.clear()
    if matrices:
        merged.hyperparameters.update(parts[0].hyperparameters)
    merged.hyperparameters.update(
        {f"fallback.{k}": v for k, v in getattr(parts[-1], "hyperparameters", {}).items()}
    )
    return _in_param_order(merged, checked)
