r"""L-BFGS inside the compiled step: the two-loop recursion over all params as one vector.

The history of the last :math:`m` steps :math:`s_i` and gradient changes :math:`y_i` lives in two
flat buffers of shape :math:`(m, N)` (the newest last), so the graph has a constant number of
nodes whatever the number of params; the two loops are unrolled over the :math:`m` rows, whose
unused (zero) rows change nothing. An optional backtracking line search evaluates the loss at a
fixed ladder of step sizes within the same call (no Python loop) and takes the largest that
decreases the loss enough (Armijo), or no step.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.graph.replace import vectorize_graph

from updates.checks import (
    COUNT,
    NON_NEGATIVE,
    ArgumentError,
    Interval,
    check_hyperparameter,
    describe_hyperparameter,
    is_schedule,
)
from updates.container import Updates
from updates.grads import clear_nan as zero_nan
from updates.grads import prepare_grads
from updates.layout import new_state, step_counter
from updates.public import awaits_loss_and_params

__all__ = ["lbfgs"]

_RANGES = dict(
    learning_rate=NON_NEGATIVE,
    tolerance_grad=NON_NEGATIVE,
    tolerance_change=NON_NEGATIVE,
    shrink=Interval(0.0, 1.0, low_closed=False),
    armijo=Interval(0.0, 1.0, low_closed=False),
)
_LINE_SEARCHES = (None, "armijo")


@awaits_loss_and_params
def lbfgs(
    loss_or_grads: Any = None,
    params: Any = None,
    learning_rate: Any = 1.0,
    history_size: int = 10,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    line_search: str | None = None,
    ladder: int = 12,
    shrink: float = 0.5,
    armijo: float = 1e-4,
    *,
    clear_nan: bool = False,
) -> Updates:
    r"""L-BFGS: quasi-Newton steps from the last ``history_size`` steps and gradient changes.

    With :math:`g` the gradient of all params as one vector, :math:`s_i = x_{i+1} - x_i` and
    :math:`y_i = g_{i+1} - g_i` the stored pairs (kept when :math:`y_i \cdot s_i > 10^{-10}`),
    :math:`\rho_i = 1 / y_i \cdot s_i` and :math:`\gamma = y \cdot s / y \cdot y` of the newest:

    .. math::

        q &\leftarrow -g; \quad \alpha_i = \rho_i\, s_i \cdot q,\ q \leftarrow q - \alpha_i y_i
            \quad (\text{newest to oldest}) \\
        d &\leftarrow \gamma q; \quad \beta_i = \rho_i\, y_i \cdot d,\
            d \leftarrow d + (\alpha_i - \beta_i) s_i \quad (\text{oldest to newest}) \\
        x &\leftarrow x + t\, d

    with :math:`d = -g` and :math:`t = \eta \min(1, 1 / \lVert g \rVert_1)` on the first step and
    :math:`t = \eta` after. No step is taken while :math:`g \cdot d > -\epsilon_{change}`, and
    nothing changes at all (state included) while :math:`\max |g| \le \epsilon_{grad}`.

    With ``line_search="armijo"``, the loss is evaluated in the same call at the ladder
    :math:`t_k = t\, c^k`, :math:`k < K`, and the step is the first :math:`t_k` with
    :math:`f(x + t_k d) \le f(x) + a\, t_k\, g \cdot d`, or no step if none is: the loss never
    increases. It needs the scalar loss, and evaluates the model :math:`K` more times per call.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor or schedule
        :math:`\eta`, default 1.0.
    history_size : int
        :math:`m`, the number of pairs kept, default 10.
    tolerance_grad, tolerance_change : float
        :math:`\epsilon_{grad}` and :math:`\epsilon_{change}`, defaults 1e-7 and 1e-9 (torch's).
    line_search : {None, "armijo"}
        None (default): the step :math:`t` as above, as torch's ``LBFGS`` without a line
        search; ``"armijo"``: backtracking over a fixed ladder of step sizes.
    ladder, shrink, armijo : int, float, float
        :math:`K`, :math:`c` and :math:`a` of the line search: 12 candidates, halving, 1e-4.
    $clear_nan

    Returns
    -------
    Updates
        The params, then the state: ``lbfgs.s`` and ``lbfgs.y`` (the history, shape
        :math:`(m, N)`), ``lbfgs.rho``, ``lbfgs.direction``, ``lbfgs.step_size``,
        ``lbfgs.gamma``, ``lbfgs.previous_grad`` and the counter ``lbfgs.t``. All params must
        share one dtype.

    Notes
    -----
    Without a line search one call is one iteration of ``torch.optim.LBFGS(lr, max_iter=1,
    history_size=m, line_search_fn=None)`` (the same trajectory: ``tests/test_lbfgs.py``).
    For full-batch problems: the gradients of mini-batches break the pairs' curvature.

    References
    ----------
    Nocedal (1980). Updating quasi-Newton matrices with limited storage. Math. Comp. 35.
    Nocedal and Wright (2006). Numerical Optimization, 2nd ed., algorithms 7.4, 7.5 and 3.1.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.array([3.0, -2.0]), name="w")
    >>> step = pytensor.function([], [], updates=updates.lbfgs(((w - 1.0) ** 2).sum(), [w]))
    >>> for _ in range(4):
    ...     _ = step()
    >>> np.round(w.get_value(), 8)
    array([1., 1.])
    """
    settings = _Settings(
        learning_rate=learning_rate,
        history_size=history_size,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        line_search=line_search,
        ladder=ladder,
        shrink=shrink,
        armijo=armijo,
        clear_nan=clear_nan,
    )
    if loss_or_grads is None and params is None:
        return None  # checked: the decorator returns lbfgs awaiting them
    params, grads = prepare_grads("lbfgs", loss_or_grads, params)
    if line_search is not None and isinstance(loss_or_grads, (list, tuple)):
        raise TypeError("lbfgs: line_search='armijo' evaluates the loss; give the scalar loss, not gradients")
    dtypes = sorted({p.dtype for p in params})
    if len(dtypes) > 1:
        raise ArgumentError(f"lbfgs: all params must share one dtype (one vector), got {', '.join(dtypes)}")
    if clear_nan:
        grads = [zero_nan(g) for g in grads]
    return _build(params, grads, loss_or_grads if line_search else None, settings)


@dataclass(frozen=True)
class _Settings:
    """The arguments of :func:`lbfgs` other than the loss and params, by name, checked when made."""

    learning_rate: Any
    history_size: int
    tolerance_grad: float
    tolerance_change: float
    line_search: str | None
    ladder: int
    shrink: float
    armijo: float
    clear_nan: bool

    def __post_init__(self) -> None:
        """Check every setting, raising what :func:`lbfgs` raises for a bad value."""
        for name, interval in _RANGES.items():
            check_hyperparameter("lbfgs", name, getattr(self, name), interval)
        for name in ("history_size", "ladder"):
            COUNT.check("lbfgs", name, getattr(self, name))
        if self.line_search not in _LINE_SEARCHES:
            raise ValueError(f"lbfgs: line_search must be one of {_LINE_SEARCHES}, got {self.line_search!r}")
        if not isinstance(self.clear_nan, (bool, np.bool_)):
            raise TypeError(f"lbfgs: clear_nan must be True or False, got {self.clear_nan!r}")


def _build(params: list, grads: list, loss: Variable | None, settings: _Settings) -> Updates:
    dtype = params[0].dtype
    size = sum(int(np.prod(p.get_value(borrow=True).shape)) for p in params)
    state = _State(dtype, settings.history_size, size)
    g = pt.concatenate([pt.flatten(x) for x in grads])
    cast = functools.partial(pt.cast, dtype=dtype)
    first = pt.eq(state.counter, 0)
    history, gamma = state.remember(g, first)
    direction = pt.switch(first, -g, _two_loops(g, *history, gamma, settings.history_size))
    given = settings.learning_rate
    rate = cast(given(state.counter) if is_schedule(given) else given)
    t, move = _step(g, direction, first, rate, loss, params, settings, cast)
    new = {
        p: pt.switch(move, p + t * x.reshape(p.shape), p) for p, x in zip(params, _split(direction, params))
    }
    new.update(state.advance(history, gamma, direction, t, g))
    stop = pt.max(pt.abs(g)) <= cast(settings.tolerance_grad)
    updates = Updates(params=params, config=[_config(settings)], hyperparameters={"learning_rate": rate})
    for variable, value in new.items():  # nothing changes while the gradient is below tolerance
        updates[variable] = pt.switch(stop, variable, value)
    return updates


def _step(g, direction, first, rate, loss, params, settings, cast) -> tuple[Variable, Variable]:
    """The step size and whether to take it: torch's rule, or the line search's choice."""
    t = pt.switch(first, pt.minimum(cast(1.0), cast(1.0) / pt.abs(g).sum()) * rate, rate)
    slope = pt.dot(g, direction)
    if loss is None:
        return t, slope <= -cast(settings.tolerance_change)
    return _armijo(loss, params, direction, t, slope, settings, cast)


def _config(settings: _Settings) -> dict:
    config = {"rule": "lbfgs"}
    config.update(
        (name, getattr(settings, name))
        for name in ("history_size", "line_search", "ladder", "shrink", "armijo")
    )
    for name in ("learning_rate", "tolerance_grad", "tolerance_change"):
        config[name] = describe_hyperparameter(getattr(settings, name))
    return config


class _State:
    """The shared variables of L-BFGS, all of the params' dtype but the int64 counter."""

    def __init__(self, dtype: str, m: int, size: int) -> None:
        zeros = functools.partial(np.zeros, dtype=dtype)
        self.s = new_state(zeros((m, size)), "lbfgs.s", 0.0)
        self.y = new_state(zeros((m, size)), "lbfgs.y", 0.0)
        self.rho = new_state(zeros(m), "lbfgs.rho", 0.0)
        self.direction = new_state(zeros(size), "lbfgs.direction", 0.0)
        self.step_size = new_state(zeros(()), "lbfgs.step_size", 0.0)
        self.gamma = new_state(np.ones((), dtype=dtype), "lbfgs.gamma", 1.0)
        self.previous = new_state(zeros(size), "lbfgs.previous_grad", 0.0)
        self.counter = step_counter("lbfgs.t")

    def remember(self, g: Variable, first: Variable) -> tuple[tuple, Variable]:
        """The history with the newest pair appended (oldest dropped) if its curvature is positive."""
        s, y = self.direction * self.step_size, g - self.previous
        ys = pt.dot(y, s)
        keep = pt.and_(pt.invert(first), ys > np.asarray(1e-10, dtype=ys.dtype))
        rows = [(self.s, s), (self.y, y), (self.rho, 1 / ys)]
        history = tuple(
            pt.switch(keep, pt.concatenate([old[1:], pt.shape_padleft(new)]), old) for old, new in rows
        )
        gamma = pt.switch(first, np.ones((), dtype=g.dtype), pt.switch(keep, ys / pt.dot(y, y), self.gamma))
        return history, gamma

    def advance(self, history: tuple, gamma: Variable, direction: Variable, t: Variable, g: Variable) -> dict:
        new = dict(zip((self.s, self.y, self.rho), history))
        new.update({self.gamma: gamma, self.direction: direction, self.step_size: t, self.previous: g})
        new[self.counter] = self.counter + 1
        return new


def _two_loops(g: Variable, s: Variable, y: Variable, rho: Variable, gamma: Variable, m: int) -> Variable:
    """The direction :math:`-H g` from the history, newest row last (rows of zeros change nothing)."""
    q, alphas = -g, {}
    for i in reversed(range(m)):
        alphas[i] = pt.dot(s[i], q) * rho[i]
        q = q - alphas[i] * y[i]
    r = q * gamma
    for i in range(m):
        beta = pt.dot(y[i], r) * rho[i]
        r = r + s[i] * (alphas[i] - beta)
    return r


def _split(vector: Variable, params: list) -> list[Variable]:
    sizes = [int(np.prod(p.get_value(borrow=True).shape)) for p in params]
    starts = np.cumsum([0, *sizes]).tolist()
    return [vector[a:b] for a, b in itertools.pairwise(starts)]


def _armijo(loss, params, direction, t, slope, settings, cast) -> tuple[Variable, Variable]:
    """The largest step of the ladder ``t c^k`` that decreases the loss enough, and whether any does.

    The loss at every step of the ladder is one vectorized graph (a leading axis of candidates
    on every param), not one copy of the model per candidate: PyTensor's Numba linker compiles
    in time growing faster than the node count.
    """
    powers = np.asarray([settings.shrink**k for k in range(settings.ladder)], dtype=loss.dtype)
    steps = t * cast(powers)
    batched = {
        p: pt.shape_padleft(p) + steps.reshape((-1,) + (1,) * p.ndim) * pt.shape_padleft(x.reshape(p.shape))
        for p, x in zip(params, _split(direction, params))
    }
    losses = vectorize_graph(loss, batched)
    found = losses <= loss + cast(settings.armijo) * steps * slope
    return pt.switch(pt.any(found), steps[pt.argmax(found)], cast(0.0)), pt.any(found)
