r"""Rules that adapt in a projected space: :func:`galore`.

GaLore keeps, for each matrix, Adam's moments of its gradient projected on a few of the
gradient's singular vectors (an orthonormal ``projector``, refreshed from the gradient's SVD
every ``update_proj_gap`` steps), and projects Adam's step back to the matrix. Its slots differ in
shape from the param (the projector, and moments of the projected shape), so it is a
``per_tensor`` rule with ``shaped_slots``, built per parameter, each slot a shared variable
named after its param (``W.galore.projector``) and saved, loaded and reset like any other state.
The rank and the refresh period fix those shapes and the refresh steps: they are structural
options, each choice its own (cached) :class:`~updates.engine.Rule`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.ifelse import ifelse

from updates.checks import COUNT, NON_NEGATIVE, UNIT, Interval
from updates.container import Updates
from updates.engine import Rule, apply_rule
from updates.public import update_rule
from updates.reductions import isfinite

__all__ = ["galore"]


def projection_shapes(shape: tuple, rank: int) -> tuple[tuple, tuple] | None:
    """The projector's shape and the projected (low-rank) shape of a matrix of ``shape``, or None
    for a param that is not 2-D. A matrix of ``m >= n`` rows is projected on the left (the
    projector ``m x r``, the projected gradient ``r x n``), a wider one on the right (``n x r``
    and ``m x r``), ``r = min(rank, m, n)``. Static shapes (None where unknown) give None where
    the size is unknown."""
    if len(shape) != 2:
        return None
    m, n = shape
    if m is None or n is None:
        return (None, None), (None, None)
    r = min(rank, m, n)
    return ((m, r), (r, n)) if m >= n else ((n, r), (m, r))


def fixed_signs(vectors):
    """``vectors`` (singular vectors as columns) each multiplied by -1 or 1 so that its entry of
    largest magnitude is positive (``max(v) >= -min(v)``; on an exact tie of ``a`` and ``-a``
    the column is kept as it is).

    An SVD determines each singular vector up to its sign only, and LAPACK, XLA and the other
    backends' SVDs may choose differently; GaLore's first moment mixes the coordinates of one
    projector with those of the next one, so the trajectory depends on the signs. Fixing them
    makes it a function of the gradients alone, the same under every linker.
    """
    positive = pt.ge(pt.max(vectors, axis=0), -pt.min(vectors, axis=0))
    return vectors * pt.switch(positive, 1, -1).astype(vectors.dtype)


def _galore_schedule(gap: int):
    def per_step(h, t, step):
        return dict(
            refresh=pt.eq((step - 1) % gap, 0),  # optax's count % gap == 0, count = step - 1
            bc1=1 - h.beta1**t,
            bc2=1 - h.beta2**t,
        )

    return per_step


def _adam_direction(h, grad, m, v):
    """The base optimizer, optax's ``scale_by_adam`` (eps_root 0): the new moments and the step."""
    m = h.beta1 * m + (1 - h.beta1) * grad
    v = h.beta2 * v + (1 - h.beta2) * pt.sqr(grad)
    return (m / h.bc1) / (pt.sqrt(v / h.bc2) + h.epsilon), m, v


@functools.cache
def _galore_rule(rank: int, gap: int) -> Rule:
    """The Rule of one rank and refresh period (cached, so equal choices share it)."""

    def shaped(shape):
        shapes = projection_shapes(shape, rank)
        if shapes is None:
            return None
        projector, projected = shapes
        return ("projector", projector), ("m", projected), ("v", projected)

    def kernel(h, param, grad, *slots):
        if len(slots) == 2:  # not a matrix: Adam on the whole gradient, not scaled (optax's)
            direction, m, v = _adam_direction(h, grad, *slots)
            return param - h.learning_rate * (direction + h.weight_decay * param), m, v
        projector, m, v = slots
        rows, cols = param.get_value(borrow=True).shape  # fixed: a per-tensor rule is built per param
        r = min(rank, rows, cols)
        left = rows >= cols
        # LAPACK refuses a matrix with a NaN or an inf: the SVD of zeros then, and a NaN projector
        finite = pt.all(isfinite(grad))
        u, _, vt = pt.linalg.svd(pt.switch(finite, grad, 0), full_matrices=False)
        fresh = pt.switch(
            finite, fixed_signs(u[:, :r] if left else vt[:r, :].T), np.asarray(np.nan, param.dtype)
        )
        # lazy: the C VM computes the SVD on refreshing steps only (Numba and JAX every step)
        projector = ifelse(h.refresh, projector.type.filter_variable(fresh, allow_convert=True), projector)
        low_rank = projector.T @ grad if left else grad @ projector
        direction, m, v = _adam_direction(h, low_rank, m, v)
        full = projector @ direction if left else direction @ projector.T
        return param - h.learning_rate * (h.scale * full + h.weight_decay * param), projector, m, v

    return Rule(
        "galore",
        kernel,
        slots=("m", "v"),
        per_step=_galore_schedule(gap),
        per_tensor=True,
        shaped_slots=shaped,
        ranges=dict(
            learning_rate=NON_NEGATIVE,
            beta1=UNIT,
            beta2=UNIT,
            epsilon=NON_NEGATIVE,
            scale=Interval(),
            weight_decay=NON_NEGATIVE,
        ),
    )


def _options(rank: Any, update_proj_gap: Any) -> Rule:
    return _galore_rule(
        COUNT.check("galore", "rank", rank), COUNT.check("galore", "update_proj_gap", update_proj_gap)
    )


@update_rule
def galore(
    loss_or_grads=None,
    params=None,
    learning_rate: Any = 1e-2,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: Any = 1.0,
    weight_decay: Any = 0.0,
    beta1: Any = 0.9,
    beta2: Any = 0.999,
    epsilon: Any = 1e-8,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""GaLore: Adam on each matrix's gradient projected on its leading singular vectors.

    For a matrix :math:`G` of :math:`m \times n` and :math:`r = \min(\text{rank}, m, n)`: at the
    steps :math:`t = 1, 1 + T, 1 + 2T, \ldots` (:math:`T` = ``update_proj_gap``) the projector
    :math:`P` becomes the first :math:`r` left singular vectors of :math:`G` when
    :math:`m \ge n`, else its first :math:`r` right singular vectors, each signed so that its
    entry of largest magnitude is positive; in between it is kept. With :math:`R = P^\top G`
    (left) or :math:`R = G P` (right), Adam's moments live in the projected space:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, R, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2)\, R^2 \\
        N &= \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} \\
        p &\leftarrow p - \eta \left(\alpha\, P N + \lambda p\right)
            \quad\text{(left; } \alpha\, N P^\top \text{ right)}

    A param that is not 2-D takes Adam on its whole gradient, :math:`p \leftarrow p - \eta
    (N + \lambda p)` with :math:`R = g` (no :math:`\alpha`), as optax's default.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor
        :math:`\eta \ge 0`, default 1e-2 (optax's ``galore`` has none; the paper's for
        pre-training LLaMA 60M to 1B).
    rank : int
        The largest rank of the projection, > 0, default 128 (a matrix of a smaller side is
        projected on all of its singular vectors). Structural: fixes the slots' shapes.
    update_proj_gap : int
        :math:`T > 0`, the steps between refreshes of the projector, default 200.
    scale : float or scalar tensor
        :math:`\alpha`, the scale of the projected-back step of the matrices, default 1 (the
        paper's 0.25 for LLaMA).
    weight_decay : float or scalar tensor
        :math:`\lambda \ge 0`, decoupled weight decay multiplied by :math:`\eta`, default 0.
    beta1, beta2 : float or scalar tensor
        The decays of the base Adam's moving averages, in [0, 1), defaults 0.9 and 0.999.
    epsilon : float or scalar tensor
        The base Adam's :math:`\epsilon \ge 0`, added to the root, default 1e-8.
    $clear_nan

    Returns
    -------
    Updates
        The new params, then per matrix its ``<param>.galore.projector`` (:math:`P`, of
        :math:`m \times r` or :math:`n \times r`) and the moments ``<param>.galore.m`` and
        ``<param>.galore.v`` of the projected shape (:math:`r \times n` or :math:`m \times r`),
        per other param ``m`` and ``v`` like it; then the step counter ``galore.t``.

    Notes
    -----
    ``optax.contrib.galore(learning_rate, rank, update_proj_gap, scale,
    base_optimizer=optax.scale_by_adam(b1, b2, eps), weight_decay)`` step for step, params and
    state (optax's ``projector`` and the base Adam's ``mu`` and ``nu``), given the same signs of
    the singular vectors. Differences, each deliberate:

    - *Signs.* optax takes the singular vectors as ``jnp.linalg.svd`` returns them, signs
      included. :math:`P N` is unchanged when a column of :math:`P` and so the matching
      coordinate of :math:`R`, :math:`m` and :math:`N` flip together: while one projector
      lasts, the signs do not matter (``tests/test_projected.py`` runs optax with another
      convention to the same params). But at a refresh the moments, kept in the old
      projector's coordinates (as optax and the paper keep them), meet the new projector, and
      a vector whose sign changed against the old one's misaligns them: from the second
      projector on, the trajectory depends on how the SVD picked its signs (XLA's and LAPACK's
      may differ, and do not promise any). Here each vector is signed so that its entry of
      largest magnitude is positive (``fixed_signs``), so the trajectory is a function of
      the gradients, the same under every linker; ``tests/test_optax.py`` gives optax's SVD
      the same convention and matches it step for step.
    - *Precision.* optax computes the SVD in float32 (and casts the projector back); here in
      the param's dtype, so a float64 projector is orthonormal to float64's precision.
    - ``base_optimizer``: only Adam, through ``beta1``, ``beta2``, ``epsilon``;
      ``weight_dimension_numbers``: only 2-D params are projected (optax's default); ``mask``:
      use :func:`merge_updates` for groups without weight decay.

    Singular values of equal size make their vectors, not only their signs, ambiguous; the
    gradients of training rarely have them. The SVD sits in a lazy ``ifelse``: the C VM
    computes it on refreshing steps only; Numba and JAX compute it every step and discard it
    (the values are the same). Built per parameter (an SVD needs whole matrices).

    References
    ----------
    Zhao, Zhang, Chen, Wang, Anandkumar and Tian (2024). GaLore: memory-efficient LLM training
    by gradient low-rank projection. ICML. arXiv:2403.03507.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> W = pytensor.shared(np.ones((4, 3)), name="W")
    >>> b = pytensor.shared(np.ones(3), name="b")
    >>> state = updates.galore((W**2).sum() + (b**2).sum(), [W, b], rank=2).named_state()
    >>> for name, value in state.items():
    ...     print(name, value.shape)
    W.galore.projector (4, 2)
    W.galore.m (2, 3)
    W.galore.v (2, 3)
    b.galore.m (3,)
    b.galore.v (3,)
    galore.t ()
    """
    return apply_rule(
        _options(rank, update_proj_gap),
        loss_or_grads,
        params,
        clear_nan,
        options=("rank", "update_proj_gap"),
        learning_rate=learning_rate,
        scale=scale,
        weight_decay=weight_decay,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        rank=rank,
        update_proj_gap=update_proj_gap,
    )
