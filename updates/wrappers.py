r"""Update wrappers beyond momentum: an updates dictionary in, a new one out.

Each wrapper takes the :class:`~updates.Updates` of a rule (or of another wrapper) and returns a
new one; the input is never modified. The result keeps the order of its input's keys and appends
the state the wrapper creates, named ``<param>.<wrapper>.<slot>`` (``W.apply_ema.shadow``) and its
counters (``apply_ema.t``) last, so :func:`inspect_state`, :func:`save_state`, :func:`load_state`
and :func:`reset_state` work on it as on a rule's state.

- :func:`apply_weight_decay`: decoupled weight decay for any rule (AdamW from Adam);
- :func:`apply_if_finite`: skip the whole step when anything is not finite (or the update is too
  large), count the skips, and raise :class:`SkipBudgetError` after a budget of them in a row;
- :func:`apply_lookahead`: Lookahead's slow weights;
- :func:`apply_ema`: an exponential (or uniform, Polyak) average of the params, to evaluate with;
- :func:`accumulate_gradients`: a rule that sees the mean of ``steps`` gradients (wraps the rule);
- :func:`merge_updates`: one dictionary from rules applied to groups of params.

Called without the updates (keywords only), :func:`apply_weight_decay`, :func:`apply_if_finite`,
:func:`apply_lookahead` and :func:`apply_ema` return themselves awaiting them, their arguments
bound, for :func:`chain`. The elementwise ones take a ``mask`` too: the params it leaves out pass
through unchanged.

Weight decay, lookahead and averaging (like the momentum wrappers) are elementwise steps: they go
through :func:`updates.engine.wrap_elementwise`, the path of the rules, so their state lives in one
flat buffer per dtype (shown per param by ``named_state()``) and they add one multi-tensor node
per dtype, whatever the number of params, which joins the node of the rule they wrap when the
graph is compiled (``updates.fused._merge_with_the_step_before``). :func:`accumulate_gradients`
keeps one shared variable per param (``W.accumulate_gradients.sum``) and builds its running sums
and switches per param;
:func:`apply_if_finite` keeps one counter (two with a budget), checks every value in one node
(``updates.reductions.AllFinite``) and guards every entry with a switch, which reads the old
values after the new ones; around a rule on the multi-tensor path the graph's rewrites turn
that into two passes of the rule's node instead (``updates.folding._gate_inside_the_step``):
the first checks the gradients and new values without writing, the second steps, gated, in
place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.raise_op import CheckAndRaise

from updates.checks import COUNT, NON_NEGATIVE, POSITIVE, Interval, check_mapping, describe, label
from updates.container import Updates
from updates.engine import Elementwise, as_dtype, begin_wrapper, params_to_wrap, wrap_elementwise
from updates.grads import prepare_grads
from updates.layout import new_state, pieces_of, state_like, state_record, step_counter
from updates.public import awaits_input, checks_keywords, select
from updates.reductions import all_finite, l2_norm
from updates.sync import sync_variables

__all__ = [
    "SkipBudgetError",
    "accumulate_gradients",
    "apply_ema",
    "apply_if_finite",
    "apply_lookahead",
    "apply_weight_decay",
    "merge_updates",
    "swap_averages",
]


# -- shared by the wrappers ------------------------------------------------------------------------


def masked_params(who: str, updates: Any, params: Any, mask: Any) -> Any:
    """The params an elementwise wrapper applies to: those of ``params`` (default: the params of
    ``updates``) that ``mask`` selects."""
    if mask is None:
        return params
    check_mapping(who, updates)
    wrapped = params_to_wrap(who, updates, params)
    return [p for p, keep in zip(wrapped, select(who, mask, len(wrapped), wrapped)) if keep]


def _every(counter: Variable, period: int) -> Variable:
    """True on the calls ``period``, ``2 period``, ... (the counter holds the calls before this one)."""
    return pt.eq((counter + 1) % period, 0)


# -- weight decay ----------------------------------------------------------------------------------


def _rule_learning_rate(who: str, updates: Mapping) -> Any:
    """The learning rate of the rule that built ``updates``: as given if it was a number."""
    hyper = getattr(updates, "hyperparameters", {})
    if "learning_rate" not in hyper:
        raise ValueError(
            f"{who}: learning_rate=None takes the rule's learning rate, but these updates have none "
            f"(known: {sorted(hyper) or 'none'}); pass learning_rate explicitly"
        )
    rules = [c for c in getattr(updates, "config", []) if "rule" in c]
    given = rules[-1].get("learning_rate") if rules else None
    return given if isinstance(given, float) else hyper["learning_rate"]


@awaits_input
def apply_weight_decay(
    updates: Mapping,
    params: list[Variable] | None = None,
    weight_decay: Any = 1e-2,
    learning_rate: Any = None,
    *,
    mask: Any = None,
) -> Updates:
    r"""Add decoupled weight decay to any rule: Adam becomes AdamW.

    .. math::

        p \leftarrow u - \eta\, \lambda\, p

    where :math:`u` is the new value ``updates`` gives parameter :math:`p` and :math:`p` its value
    before the step: the decay does not pass through the rule's preconditioning (unlike
    :func:`add_weight_decay`, which adds :math:`\lambda p` to the gradient).

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}``, e.g. the result of :func:`adam`. Not modified. Leave out
        (give keywords only) to get the wrapper back awaiting it, for :func:`chain`.
    params : list of shared variables, optional
        The params to decay. Default: all params of an :class:`Updates` (every floating-point key
        of a plain dict). Leave biases and norms out by listing the others, or with ``mask``.
    weight_decay : float or scalar tensor or schedule
        :math:`\lambda \ge 0`, default 1e-2 (torch.optim.AdamW's default).
    learning_rate : float or scalar tensor or schedule, optional
        :math:`\eta \ge 0`. Default None: the learning rate of the rule that built ``updates``
        (its value at each step, if it is a schedule), as in torch.optim.AdamW; give 1.0 to
        decay by :math:`\lambda` alone.
    $mask
        Biases and norms are usually left out: ``mask=lambda p: p.ndim > 1``.

    Returns
    -------
    Updates
        The entries of ``updates`` with the decayed params (no new state, unless a hyperparameter
        is a schedule: then a step counter ``apply_weight_decay.t``).

    Notes
    -----
    ``apply_weight_decay(adam(..., learning_rate=lr), weight_decay=wd)`` computes
    torch.optim.AdamW(lr=lr, weight_decay=wd) with this library's Adam epsilon placement (see
    :func:`adam`); the :func:`adamw` rule places epsilon as torch does, in one fused kernel.
    Wrapping works for every rule (decoupled decay for Lion, Adagrad, ...).
    Loshchilov and Hutter's schedule multiplier :math:`\eta_t` is the ``learning_rate`` schedule.

    References
    ----------
    Loshchilov and Hutter (2019). Decoupled weight decay regularization. ICLR.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> adamw = updates.apply_weight_decay(updates.adam((w**2).sum(), [w], learning_rate=0.1))
    >>> step = pytensor.function([], [], updates=adamw)
    >>> _ = step()
    >>> w.get_value()  # 1 - 0.1 (Adam's first step) - 0.1 * 0.01 * 1
    array([0.899, 0.899])

    Decay the matrices only, in a chain:

    >>> W = pytensor.shared(np.ones((2, 2)), name="W")
    >>> adamw = updates.chain(updates.adam(learning_rate=0.1),
    ...                       updates.apply_weight_decay(weight_decay=0.5, mask=lambda p: p.ndim > 1))
    >>> step = pytensor.function([], [], updates=adamw((W**2).sum() + (w**2).sum(), [W, w]))
    >>> _ = step()
    >>> W.get_value()[0], w.get_value()  # 1 - 0.1 - 0.1 * 0.5 * 1; w: Adam's step alone
    (array([0.85, 0.85]), array([0.799, 0.799]))
    """
    who = "apply_weight_decay"
    check_mapping(who, updates)
    params = masked_params(who, updates, params, mask)
    if learning_rate is None:
        learning_rate = _rule_learning_rate(who, updates)
    hyper = dict(weight_decay=weight_decay, learning_rate=learning_rate)
    ranges = dict(weight_decay=NON_NEGATIVE, learning_rate=NON_NEGATIVE)
    return wrap_elementwise(who, _DECAY, updates, params, hyper, ranges, _decay)


def _decay(dtype: str, values: dict, counter: Variable | None) -> SimpleNamespace:
    return SimpleNamespace(
        decay=as_dtype(values["learning_rate"], dtype) * as_dtype(values["weight_decay"], dtype)
    )


_DECAY = Elementwise("apply_weight_decay", lambda h, p, u: (u - h.decay * p,))


# -- skip non-finite or too large steps -----------------------------------------------------------


class SkipBudgetError(FloatingPointError):
    """A step of :func:`apply_if_finite` with ``budget=n`` would have been the n-th skip in a row.

    The compiled step raises it instead of skipping again, and that call applies nothing: the
    params and all the optimizer state (the skip counters included) keep their values from the
    last applied step, ready to inspect, save, or resume from after a fix (a lower learning rate
    through :func:`live`, other data). :func:`minimize` and :func:`iterate` stop with its message
    as the ``stop_reason`` of their :class:`History`.

    It is a ``FloatingPointError``, like :class:`NonFiniteLossError`: both say that training
    diverged numerically (values that are not finite, or updates too large to trust), and one
    ``except FloatingPointError`` catches both.

    Parameters
    ----------
    message : str
        What happened and what was kept. PyTensor 2.38's Python and C linkers append the details
        of the node that raised after a newline; the first line is the message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


@awaits_input
def apply_if_finite(
    updates: Mapping, grads: Any = None, *, max_norm: float | None = None, budget: int | None = None
) -> Updates:
    r"""Skip the whole step when a gradient or a new value is not finite, or the update too large.

    .. math::

        \text{ok} &= \text{every element of every } g_i \text{ and every new value } u_k
        \text{ is finite} \;\wedge\; \Big(\sum_{p} \lVert u_p - p \rVert_2^2\Big)^{1/2} \le c \\
        x_k &\leftarrow \begin{cases} u_k & \text{ok} \\ x_k & \text{otherwise} \end{cases}
        \quad\text{for every key } x_k \text{ of updates} \\
        s &\leftarrow s + [\lnot \text{ok}], \qquad
        r \leftarrow \begin{cases} 0 & \text{ok} \\ r + 1 & \text{otherwise} \end{cases} \\
        &\text{raise } \texttt{SkipBudgetError} \text{ instead, applying nothing, when }
        \lnot \text{ok} \wedge r + 1 \ge B

    where :math:`p` runs over the params, :math:`c` is ``max_norm`` (no bound by default),
    :math:`s` counts the skipped calls and :math:`r` (kept with ``budget`` :math:`B` only) the
    skipped calls since the last applied one.

    Every variable the updates change stays as it was on a skipped call: the params and all the
    state, including step counters, the flat buffers of the multi-tensor path and the state of
    schedules. The next applied call proceeds exactly as if the skipped one never happened.

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}``, the result of a rule or of other wrappers (wrap last,
        so that their state is restored too). Not modified. Leave out (give keywords only) to get
        the wrapper back awaiting it, for :func:`chain`.
    grads : tensor or list of tensors, optional
        Tensors that must be finite too: the gradients given to the rule (needed when the rule
        is built with ``clear_nan=True`` or may map a non-finite gradient to a finite value), the
        loss, anything. Default: only the new values are checked; in a :func:`chain`, the
        gradients the rule is given (after the chain's transforms).
    max_norm : float, optional
        :math:`c > 0`: also skip a step whose update is larger, the Euclidean norm over all the
        params of new value minus old value, computed in float64 (the params: ``updates.params``,
        every floating-point key of a plain dict). This catches a divergence before any value
        overflows. Default None: no bound.
    budget : int, optional
        :math:`B \ge 1`: the compiled step raises :class:`SkipBudgetError` rather than skip a
        :math:`B`-th call in a row (``budget=1``: raise at the first bad call, never skip).
        Default None: skip silently, however many calls in a row.

    Returns
    -------
    Updates
        Every entry of ``updates`` guarded by the check, then the number of skipped calls,
        ``apply_if_finite.skipped``, and with ``budget`` the number of those in a row,
        ``apply_if_finite.skipped_in_row`` (int64 shared variables, part of the state: saved,
        loaded and reset with the rest).

    Raises
    ------
    SkipBudgetError
        From the compiled step, at the ``budget``-th bad call in a row. That call changes
        nothing, counters included: calling again with bad values raises again, a good call is
        applied and sets the count in a row back to 0.

    Notes
    -----
    The check of ``budget`` is PyTensor's ``CheckAndRaise``, run before any guarded update in
    the default (Numba) mode, the C VM and the Python linker. PyTensor's JAX backend drops it
    (with a warning), so under ``mode="JAX"`` a step with a budget skips like one without.

    Inside :func:`minimize`, the loop's own guard holds back every update (these counters
    included) on a step whose loss or gradient is not finite, which ``on_nonfinite`` handles:
    the budget counts the steps this wrapper alone skips (too large, or a new value that is not
    finite).

    optax's ``apply_if_finite`` checks the updates only and, after ``max_consecutive_errors``,
    applies the next non-finite update; torch's ``GradScaler`` skips the optimizer step when the
    scaled gradients hold inf or NaN.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> g = pt.vector("g")
    >>> safe = updates.apply_if_finite(updates.adam([g], [w], learning_rate=0.1), grads=[g])
    >>> step = pytensor.function([g], [], updates=safe)
    >>> _ = step(np.array([np.nan, 1.0]))
    >>> w.get_value(), updates.inspect_state(safe).steps, safe.named_state()["apply_if_finite.skipped"]
    (array([1., 1.]), {'adam.t': 0}, array(1))
    """
    who = "apply_if_finite"
    check_mapping(who, updates)
    checked = _tensors(who, grads)
    max_norm = POSITIVE.or_none().check(who, "max_norm", max_norm)
    budget = COUNT.or_none().check(who, "budget", budget)
    if not updates:
        raise ValueError(f"{who}: updates is empty; wrap the result of a rule")
    params = params_to_wrap(who, updates, None)
    ok = all_finite([*checked, *updates.values()])
    if max_norm is not None:
        ok = pt.and_(ok, pt.le(_update_norm(updates, params), max_norm))
    in_row = None if budget is None else new_state(np.int64(0), f"{who}.skipped_in_row", 0)
    if in_row is not None:
        ok = _within_budget(ok, in_row, budget, max_norm)
    wrapped = begin_wrapper(who, updates, params, {}, {})
    wrapped.config[-1].update(max_norm=max_norm, budget=budget)
    for key, value in updates.items():
        wrapped[key] = pt.switch(ok, value, key)
    skipped = new_state(np.int64(0), f"{who}.skipped", 0)
    # a switch, not cast(invert(ok)): PyTensor's Python linker evaluates that to 1 for ok = True
    wrapped[skipped] = skipped + pt.switch(ok, np.int64(0), np.int64(1))
    if in_row is not None:
        wrapped[in_row] = pt.switch(ok, 0, in_row + 1)
    return wrapped


def _tensors(who: str, grads: Any) -> list[Variable]:
    """``grads`` (a tensor, a list of them, or None) as a list of tensor variables."""
    if grads is None:
        return []
    listed = list(grads) if isinstance(grads, (list, tuple)) else [grads]
    checked = []
    for i, x in enumerate(listed):
        try:
            checked.append(pt.as_tensor_variable(x))
        except (TypeError, ValueError, NotImplementedError) as err:
            raise TypeError(f"{who}: grads[{i}] must be a tensor, got {describe(x)}") from err
    return checked


def _update_norm(updates: Mapping, params: list[Variable]) -> Variable:
    r"""The float64 scalar :math:`(\sum_p \lVert u_p - p \rVert_2^2)^{1/2}` over ``params``."""
    return l2_norm([pt.cast(updates[p], "float64") - pt.cast(p, "float64") for p in params])


def _within_budget(ok: Variable, in_row: Variable, budget: int, max_norm: float | None) -> Variable:
    r"""``ok``, passed through a check that raises :class:`SkipBudgetError` when
    :math:`\lnot \text{ok} \wedge r + 1 \ge B` (:math:`r` = ``in_row``).

    Every guarded update reads the returned variable, so the check runs before any of them,
    and before anything may overwrite a param or state in place. The condition compares
    ``in_row`` without adding to it, so that no in-place increment of the counter precedes the
    check either.
    """
    allowed = pt.or_(ok, pt.lt(in_row, budget - 1))
    return CheckAndRaise(SkipBudgetError, _budget_message(budget, max_norm))(ok, allowed)


def _budget_message(budget: int, max_norm: float | None) -> str:
    """What :class:`SkipBudgetError` says: a constant of the compiled step (one line, no quotes)."""
    bad = "a value that was not finite"
    if max_norm is not None:
        bad += f" or an update norm above max_norm={max_norm:g}"
    return (
        f"apply_if_finite: {budget} step{'s' * (budget > 1)} in a row had {bad}; stopping instead of "
        f"skipping again (budget={budget}): this step was not applied, the params and optimizer state "
        "keep their values from the last applied step"
    )


# -- lookahead -------------------------------------------------------------------------------------


@awaits_input
def apply_lookahead(
    updates: Mapping, params: list[Variable] | None = None, k: int = 5, alpha: Any = 0.5, *, mask: Any = None
) -> Updates:
    r"""Lookahead: every ``k`` steps, move slow weights towards the fast ones and restart from them.

    With :math:`u` the new value ``updates`` gives parameter :math:`p` (the fast weights) and
    :math:`\phi` the slow weights (the params' values before the first call):

    .. math::

        p &\leftarrow u \quad\text{on most calls; on every } k\text{-th call:} \\
        \phi &\leftarrow \phi + \alpha (u - \phi), \quad p \leftarrow \phi

    The rule's own state (moments) carries on across synchronizations.

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}`` of the inner rule. Not modified. Leave out (give keywords
        only) to get the wrapper back awaiting it, for :func:`chain`.
    params : list of shared variables, optional
        As in :func:`apply_weight_decay`.
    k : int
        Synchronize every ``k`` calls, ``k >= 1``; default 5 (the paper uses 5 and 10).
    alpha : float or scalar tensor or schedule
        :math:`\alpha \in [0, 1]`, the slow weights' step, default 0.5 (the paper's value).
    $mask

    Returns
    -------
    Updates
        The entries of ``updates`` (params replaced), then the slow weights (one flat buffer per
        dtype, ``apply_lookahead.slow``, shown per param by ``named_state()`` as
        ``<param>.apply_lookahead.slow``) and the counter ``apply_lookahead.t``.

    Notes
    -----
    The slow weights start at the params' values on the first call (after :func:`reset_state`,
    at their values then). optax's ``lookahead`` keeps fast and slow weights in the params
    themselves.

    References
    ----------
    Zhang, Lucas, Hinton and Ba (2019). Lookahead optimizer: k steps forward, 1 step back.
    NeurIPS.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> step = pytensor.function([], [], updates=updates.apply_lookahead(
    ...     updates.sgd([np.ones(1)], [w], learning_rate=1.0), k=2, alpha=0.5))
    >>> [(step(), float(w.get_value()[0]))[1] for _ in range(4)]
    [-1.0, -1.0, -2.0, -2.0]
    """
    who = "apply_lookahead"
    k = COUNT.check(who, "k", k)
    params = masked_params(who, updates, params, mask)
    ranges = dict(alpha=Interval(0.0, 1.0, high_closed=True))

    def scalars(dtype: str, values: dict, counter: Variable) -> SimpleNamespace:
        first, sync = pt.cast(pt.eq(counter, 0), dtype), pt.cast(_every(counter, k), dtype)
        return SimpleNamespace(first=first, sync=sync, alpha=as_dtype(values["alpha"], dtype))

    hyper = dict(alpha=alpha)
    return wrap_elementwise(
        who, _LOOKAHEAD, updates, params, hyper, ranges, scalars, counted=True, options=dict(k=k)
    )


def _lookahead(h, param, fast, slow):
    start = pt.switch(h.first > 0, param, slow)
    moved = start + h.alpha * (fast - start)
    return pt.switch(h.sync > 0, moved, fast), pt.switch(h.sync > 0, moved, start)


_LOOKAHEAD = Elementwise("apply_lookahead", _lookahead, ("slow",))


# -- parameter averaging ---------------------------------------------------------------------------


@awaits_input
def apply_ema(
    updates: Mapping, params: list[Variable] | None = None, decay: Any = 0.999, *, mask: Any = None
) -> Updates:
    r"""Keep a running average of the params in shadow variables, to evaluate or deploy with.

    With :math:`u` the new value ``updates`` gives parameter :math:`p` and :math:`t` the number
    of calls before this one:

    .. math::

        a &\leftarrow u \quad\text{on the first call } (t = 0), \text{ then} \\
        a &\leftarrow a + w\,(u - a), \qquad
        w = \begin{cases} 1 - \beta & \text{exponential (``decay`` } = \beta) \\
        1/(t + 1) & \text{uniform, Polyak-Ruppert (``decay=None``)} \end{cases}

    The params themselves are updated as ``updates`` says; read the averages with
    ``named_state()["W.apply_ema.shadow"]`` or evaluate with them through :func:`swap_averages`.

    Parameters
    ----------
    updates : mapping
        ``{shared variable: new value}``. Not modified. Leave out (give keywords only) to get the
        wrapper back awaiting it, for :func:`chain`.
    params : list of shared variables, optional
        The params to average. As in :func:`apply_weight_decay`.
    decay : float or scalar tensor or schedule or None
        :math:`\beta \in [0, 1]`, default 0.999; None for the uniform average of all the params
        seen so far.
    $mask

    Returns
    -------
    Updates
        The entries of ``updates``, then the averages (one flat buffer per dtype,
        ``apply_ema.shadow``, shown per param by ``named_state()`` as
        ``<param>.apply_ema.shadow``) and the counter ``apply_ema.t`` (the number of params
        averaged).

    Notes
    -----
    torch.optim.swa_utils.AveragedModel, updated after each optimizer step, computes the same:
    ``multi_avg_fn=get_ema_multi_avg_fn(decay)`` for the exponential average, its default for the
    uniform one. optax's ``ema`` starts its average at zero and may debias it instead.

    References
    ----------
    Polyak and Juditsky (1992). Acceleration of stochastic approximation by averaging. SIAM J.
    Control Optim.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> averaged = updates.apply_ema(updates.sgd([np.ones(1)], [w], learning_rate=1.0), decay=None)
    >>> step = pytensor.function([], [], updates=averaged)
    >>> for _ in range(3):
    ...     _ = step()
    >>> w.get_value(), averaged.named_state()["w.apply_ema.shadow"]  # the mean of -1, -2, -3
    (array([-3.]), array([-2.]))
    >>> with updates.swap_averages(averaged):
    ...     w.get_value()
    array([-2.])
    """
    who = "apply_ema"
    params = masked_params(who, updates, params, mask)
    uniform = decay is None
    hyper = {} if uniform else dict(decay=decay)
    ranges = {} if uniform else dict(decay=Interval(0.0, 1.0, high_closed=True))

    def scalars(dtype: str, values: dict, counter: Variable) -> SimpleNamespace:
        weight = 1 / pt.cast(counter + 1, dtype) if uniform else 1 - as_dtype(values["decay"], dtype)
        return SimpleNamespace(first=pt.cast(pt.eq(counter, 0), dtype), weight=weight)

    options = dict(decay="uniform") if uniform else {}
    return wrap_elementwise(
        who,
        _EMA,
        updates,
        params,
        hyper,
        ranges,
        scalars,
        counted=True,
        options=options,
    )


def _ema(h, param, new, shadow):
    return new, pt.switch(h.first > 0, new, shadow + h.weight * (new - shadow))


_EMA = Elementwise("apply_ema", _ema, ("shadow",), averages=True)


@checks_keywords
@contextmanager
def swap_averages(updates: Updates) -> Iterator[dict]:
    """Within this block, each averaged param holds its average (and the average its value).

    The values are swapped on entry and swapped back on exit, even on an error, so nothing is
    lost: evaluate, validate or save the averaged model inside the block, and do not train there.

    Parameters
    ----------
    updates : Updates
        A result of :func:`apply_ema` or :func:`asgd` (possibly wrapped further). A param
        averaged twice (``apply_ema`` around ``asgd``) holds the outer average, ``apply_ema``'s.

    Yields
    ------
    dict
        ``{param: the shared variable holding its average}`` (on the multi-tensor path, one
        flat buffer per dtype holds the averages of all its params).

    Examples
    --------
    See :func:`apply_ema`.
    """
    who = "swap_averages"
    if not isinstance(updates, Updates):
        raise TypeError(f"{who}: updates must be an Updates built by apply_ema, got {describe(updates)}")
    sync_variables([*updates.params, *updates.state])
    holders = [variable for variable in updates.state if state_record(variable).averages]
    if not holders:
        raise ValueError(f"{who}: these updates keep no averages; build them with apply_ema (or asgd)")

    def swap(order):
        for holder in order:
            averages = holder.get_value()
            flat = averages.reshape(-1)
            for param, piece in zip(state_record(holder).averages, pieces_of(holder)):
                stop = piece.start + math.prod(piece.shape)
                value = param.get_value()
                param.set_value(flat[piece.start : stop].reshape(piece.shape).copy())
                flat[piece.start : stop] = value.reshape(-1)
            holder.set_value(averages)

    # Undone in reverse order: with two averages of one param (apply_ema around asgd), the param
    # holds the outer one in the block, and every value is back in place after it.
    swap(holders)
    try:
        yield {param: holder for holder in holders for param in state_record(holder).averages}
    finally:
        swap(holders[::-1])


# -- gradient accumulation -------------------------------------------------------------------------


@checks_keywords
def accumulate_gradients(rule: Callable, steps: int = 4) -> Callable:
    r"""Make a rule that sees the mean of ``steps`` consecutive gradients and moves every ``steps`` calls.

    .. math::

        s &\leftarrow s + g \\
        \text{on every } k\text{-th call:}\quad & \text{the rule's step with gradient } s/k,
        \text{ then } s \leftarrow 0

    On the other calls the params and all the rule's state (moments, step counter) stay as they
    are. This wraps the rule, not its updates: the rule is applied to the mean gradient.

    Parameters
    ----------
    rule : callable
        ``rule(loss_or_grads, params) -> updates``, e.g. ``updates.adam(learning_rate=1e-3)`` (a
        rule called with its hyperparameters only), ``updates.sgd``, or a function applying
        wrappers too.
    steps : int
        :math:`k \ge 1`, the number of gradients averaged per step. Default 4.

    Returns
    -------
    callable
        ``(loss_or_grads, params) -> Updates``: the rule's updates, each applied on every ``k``-th
        call only, then the sums ``<param>.accumulate_gradients.sum`` and the counter
        ``accumulate_gradients.t``.

    Notes
    -----
    optax's ``MultiSteps`` keeps the running mean instead of the sum; torch users accumulate
    ``.grad`` over backward passes and call ``step()`` every k batches, which equals this for a
    loss that is a mean over each batch when the accumulated gradient is divided by k.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> g = pt.vector("g")
    >>> sgd4 = updates.accumulate_gradients(updates.sgd(learning_rate=1.0), steps=2)
    >>> step = pytensor.function([g], [], updates=sgd4([g], [w]))
    >>> [(step(np.array([x])), float(w.get_value()[0]))[1] for x in (1.0, 3.0, 5.0, 7.0)]
    [0.0, -2.0, -2.0, -8.0]
    """
    who = "accumulate_gradients"
    if not callable(rule) or isinstance(rule, Variable):
        raise TypeError(
            f"{who}: rule must be a callable (loss_or_grads, params) -> updates, got {describe(rule)}"
        )
    steps = COUNT.check(who, "steps", steps)

    def accumulated(loss_or_grads: Any, params: Any) -> Updates:
        params, grads = prepare_grads(who, loss_or_grads, params)
        counter = step_counter(f"{who}.t")
        sums = [state_like(p, f"{label(p, i)}.{who}.sum") for i, p in enumerate(params)]
        totals = [s + g for s, g in zip(sums, grads)]
        means = [total / as_dtype(steps, p.dtype) for total, p in zip(totals, params)]
        inner = rule(means, params)
        check_mapping(f"{who}: rule", inner)
        apply = _every(counter, steps)
        base = inner if isinstance(inner, Updates) else Updates(params=params)
        result = Updates(
            params=base.params or params,
            config=[*base.config, {"wrapper": who, "steps": float(steps)}],
            hyperparameters=base.hyperparameters,
        )
        for key, value in inner.items():
            result[key] = pt.switch(apply, value, key)
        for s, total in zip(sums, totals):
            result[s] = pt.switch(apply, pt.zeros_like(total), total)
        result[counter] = counter + 1
        return result

    accumulated.__name__ = f"accumulate_gradients({getattr(rule, '__name__', 'rule')})"
    return accumulated


# -- parameter groups ------------------------------------------------------------------------------


def merge_updates(*updates: Mapping) -> Updates:
    """Merge the updates of rules applied to separate groups of params into one dictionary.

    Give each group its own rule or hyperparameters (a larger learning rate for the last layer,
    no weight decay for biases); leave a param out of every group to freeze it. Compute the
    gradients once with :func:`get_or_compute_grads` and hand each group its share of them.

    Parameters
    ----------
    *updates : mappings
        The updates of each group, e.g. ``adam(grads[:2], params[:2])`` and
        ``sgd(grads[2:], params[2:])``. None is modified. A variable updated by two of them is an
        error.

    Returns
    -------
    Updates
        The params of every group in order, then the state of each group in order. Its config
        lists every group's rules and wrappers, its hyperparameters are prefixed with the group's
        index (``"1.learning_rate"``).

    Raises
    ------
    ValueError
        If two dictionaries update the same variable (the message names both and the variable).

    Notes
    -----
    When two groups use the same rule, each has its own step counter of the same name
    (``adam.t``): those are renamed ``adam.t[0]``, ``adam.t[1]`` (the variables' names are
    changed in place, the dictionaries are not), so that :func:`save_state` can tell them apart.
    This is torch.optim's parameter groups and optax's ``multi_transform``. A group may be given
    a whole composed optimizer: ``chain(clip_by_norm(max_norm=1.0), adam(), apply_ema())(grads[:2],
    params[:2])`` (see :func:`chain`); for the same rule with a part that skips some params
    (no weight decay on biases), a ``mask=`` on that part is enough.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w, b = pytensor.shared(np.ones(2), name="w"), pytensor.shared(np.ones(2), name="b")
    >>> grads = updates.get_or_compute_grads((w**2).sum() + (b**2).sum(), [w, b])
    >>> merged = updates.merge_updates(
    ...     updates.adam(grads[:1], [w], learning_rate=0.1), updates.adam(grads[1:], [b], learning_rate=0.01))
    >>> [v.name for v in merged]
    ['w', 'b', 'adam.m', 'adam.v', 'adam.t[0]', 'adam.m', 'adam.v', 'adam.t[1]']
    """
    who = "merge_updates"
    if not updates:
        raise ValueError(f"{who}: give at least one updates dictionary")
    owner: dict[Variable, int] = {}
    for i, group in enumerate(updates):
        if not isinstance(group, Mapping):
            raise TypeError(f"{who}: updates[{i}] must be a dictionary of updates, got {describe(group)}")
        for key in group:
            if key in owner:
                raise ValueError(
                    f"{who}: updates[{owner[key]}] and updates[{i}] both update {key.name or key!r}; "
                    "give each variable to one rule only"
                )
            owner[key] = i
    params = [
        list(g.params) if isinstance(g, Updates) else [k for k in g if k.dtype.startswith("float")]
        for g in updates
    ]
    merged = Updates(
        params=[p for group in params for p in group],
        config=[c for g in updates for c in getattr(g, "config", [])],
        hyperparameters={
            f"{i}.{name}": v
            for i, g in enumerate(updates)
            for name, v in getattr(g, "hyperparameters", {}).items()
        },
        gated={k: v for g in updates for k, v in getattr(g, "gated", {}).items()},
    )
    for group, group_params in zip(updates, params):
        merged.update((p, group[p]) for p in group_params)
    for group, group_params in zip(updates, params):
        merged.update((k, v) for k, v in group.items() if k not in set(group_params))
    _name_apart(merged.state, owner)
    return merged


def _name_apart(state: list[Variable], owner: dict[Variable, int]) -> None:
    """Rename the whole-variable state whose names collide across groups: ``adam.t[<group>]``."""
    whole = [v for v in state if state_record(v).pieces is None]
    names = [v.name for v in whole]
    for variable in whole:
        if variable.name is not None and names.count(variable.name) > 1:
            variable.name = f"{variable.name}[{owner[variable]}]"
