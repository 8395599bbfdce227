r"""L-BFGS inside the compiled step: the two-loop recursion over all params as one vector.

The history of the last :math:`m` steps :math:`s_i` and gradient changes :math:`y_i` lives in one
flat buffer of shape :math:`(2, m, N)` (the newest last), so the graph has a constant number of
nodes whatever the number of params and the history size: the two loops of the recursion are two
unit triangular systems of size :math:`m`, solved with a handful of small matrix products
(unused rows of zeros change nothing). Two optional line searches run within the same call (no
Python loop): a backtracking ladder of step sizes evaluated at once (Armijo), refined by
quadratic interpolation, and torch's strong Wolfe search (cubic interpolation, bracketing and
zoom) as a bounded loop inside the graph. Under Numba the whole step is instead one kernel of
loops and scalars calling the loss's compiled graph at each trial (``_StepKernel``): Numba
compiles it in a fraction of the time the graph's vectorized ladder or ``scan`` takes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.compile.mode import Mode
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.op import Op
from pytensor.graph.replace import graph_replace, vectorize_graph
from pytensor.scan.utils import until

try:  # PyTensor >= 2.32 (moved, the old place warns)
    from pytensor.graph.traversal import graph_inputs
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import graph_inputs

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
from updates.engine import give_loss, schedule_state
from updates.grads import clear_nan as zero_nan
from updates.grads import loss_of, prepare_grads
from updates.layout import new_state, step_counter
from updates.public import awaits_loss_and_params
from updates.reductions import isfinite

__all__ = ["lbfgs"]

_OPEN_UNIT = Interval(0.0, 1.0, low_closed=False)
_RANGES = dict(
    learning_rate=NON_NEGATIVE,
    tolerance_grad=NON_NEGATIVE,
    tolerance_change=NON_NEGATIVE,
    shrink=_OPEN_UNIT,
    armijo=_OPEN_UNIT,
    curvature=_OPEN_UNIT,
)
_COUNTS = dict(history_size=COUNT, ladder=COUNT, max_ls=Interval(0, integer=True))
_LINE_SEARCHES = (None, "armijo", "strong_wolfe")
_CURVATURE_FLOOR = 1e-10  # a pair is kept when y . s exceeds it (torch's)


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
    curvature: float = 0.9,
    max_ls: int = 25,
    clear_nan: bool = False,
) -> Updates:
    r"""L-BFGS: quasi-Newton steps from the last ``history_size`` steps and gradient changes.

    With :math:`g` the gradient of all params as one vector, :math:`s_i = x_{i+1} - x_i` and
    :math:`y_i = g_{i+1} - g_i` the stored pairs (kept when :math:`y_i \cdot s_i > 10^{-10}`),
    :math:`\rho_i = 1 / y_i \cdot s_i` and :math:`\gamma = y \cdot s / y \cdot y` of the newest
    (1 while none is stored), the direction is the two-loop recursion

    .. math::

        q &\leftarrow -g; \quad \alpha_i = \rho_i\, s_i \cdot q,\ q \leftarrow q - \alpha_i y_i
            \quad (\text{newest to oldest}) \\
        d &\leftarrow \gamma q; \quad \beta_i = \rho_i\, y_i \cdot d,\
            d \leftarrow d + (\alpha_i - \beta_i) s_i \quad (\text{oldest to newest}) \\
        x &\leftarrow x + t\, d

    with :math:`d = -g` and the initial step :math:`t_0 = \eta \min(1, 1 / \lVert g \rVert_1)` on
    the first step, :math:`t_0 = \eta` after. No step is taken while
    :math:`\phi'(0) = g \cdot d > -\epsilon_{change}`, and nothing changes at all (state
    included) while :math:`\max |g| \le \epsilon_{grad}`. Below, :math:`\phi(t) = f(x + t d)`.

    **No line search** (``line_search=None``): :math:`t = t_0`.

    **Armijo** (``line_search="armijo"``): the loss is evaluated at the ladder
    :math:`t_k = t_0 c^k`, :math:`k < K`, all at once; :math:`t_j` is the first (largest) with
    :math:`\phi(t_k) \le \phi(0) + a\, t_k\, \phi'(0)`, or the smallest if none is. The minimizer of
    the parabola through :math:`\phi(0)`, :math:`\phi'(0)` and :math:`\phi(t_j)`,

    .. math::

        t_q = \frac{-\phi'(0)\, t_j^2}{2\, (\phi(t_j) - \phi(0) - \phi'(0)\, t_j)},

    is evaluated too (when the denominator is positive) and taken if it meets the Armijo condition
    and lowers the loss below :math:`\phi(t_j)` (or if no :math:`t_k` met it); else :math:`t_j` if
    it met it; else no step. The loss never increases. On a quadratic :math:`t_q` is the exact
    minimizer along :math:`d`, so the ladder can lengthen a step as well as shorten it. The
    initial step is :math:`\eta \min(1, 1 / \lVert g \rVert_1)` whenever the history is empty,
    and a call that takes no step empties the history (the next direction is :math:`-g`).

    **Strong Wolfe** (``line_search="strong_wolfe"``): torch's search. From :math:`t_0` it brackets
    an interval, extrapolating by cubic interpolation of :math:`\phi` and :math:`\phi'` at the
    last two points within :math:`[t + 0.01 (t - t_{prev}), 10 t]`, until a point fails the Armijo
    condition :math:`\phi(t) \le \phi(0) + c_1 t \phi'(0)` (or does not decrease after the second
    trial), has :math:`\phi'(t) \ge 0`, or meets the strong Wolfe conditions (Armijo and
    :math:`|\phi'(t)| \le -c_2 \phi'(0)`); then it zooms into the bracket by cubic interpolation
    (kept 10% of its width away from its ends when progress stalls) until the strong Wolfe
    conditions hold, the bracket is narrower than :math:`\epsilon_{change} / \max |d|`, or
    :math:`1 + L` evaluations are spent; the step is the lowest point of the bracket. Each
    evaluation computes :math:`\phi` and :math:`\phi'`: the model and its gradient, one at a time,
    in a loop inside the graph that stops as soon as the search does.

    Parameters
    ----------
    $parameters
    learning_rate : float or scalar tensor or schedule
        :math:`\eta`, default 1.0.
    history_size : int
        :math:`m`, the number of pairs kept, default 10.
    tolerance_grad, tolerance_change : float
        :math:`\epsilon_{grad}` and :math:`\epsilon_{change}`, defaults 1e-7 and 1e-9 (torch's).
    line_search : {None, "armijo", "strong_wolfe"}
        None (default): the step :math:`t_0`, as torch's ``LBFGS`` without a line search;
        ``"armijo"``: the ladder of step sizes and its interpolated step; ``"strong_wolfe"``:
        torch's strong Wolfe search. Both need the scalar loss.
    ladder, shrink : int, float
        :math:`K` and :math:`c` of the Armijo ladder: 12 candidates, halving.
    armijo : float
        :math:`a = c_1`, the sufficient decrease of both line searches, in (0, 1), default 1e-4.
    curvature : float
        :math:`c_2` of the strong Wolfe conditions, in :math:`(c_1, 1)`, default 0.9 (torch's).
    max_ls : int
        :math:`L`, the evaluations of the strong Wolfe search after the first, >= 0, default 25
        (as torch's ``_strong_wolfe``).
    $clear_nan

    Returns
    -------
    Updates
        The params, then the state: ``lbfgs.history`` (the pairs, shape :math:`(2, m, N)`:
        :math:`s_i` then :math:`y_i`, the newest last), ``lbfgs.step`` (the last :math:`t d`),
        ``lbfgs.previous_grad`` and the counter ``lbfgs.t``. All params must share one dtype.

    Notes
    -----
    Without a line search one call is one iteration of ``torch.optim.LBFGS(lr, max_iter=1,
    history_size=m, line_search_fn=None)``; with ``line_search="strong_wolfe"`` one of
    ``torch.optim.LBFGS(lr, max_iter=1, max_eval=1 + L, history_size=m,
    line_search_fn="strong_wolfe")`` (the same trajectories: ``tests/test_lbfgs.py``). torch's
    default ``max_eval`` for ``max_iter=1`` is 1, which leaves its search one evaluation
    (:math:`L = 0`: the step :math:`t_0` if it lowers the loss, else none, for good). The
    two loops are computed as triangular systems (:math:`R \alpha = S(-g)`, then the same
    factor transposed for :math:`\beta`), the same numbers up to rounding. For full-batch
    problems: the gradients of mini-batches break the pairs' curvature. The strong Wolfe loop
    is a ``scan`` with a stopping condition: backends without such loops (JAX) cannot run it.
    Under Numba the step is one kernel of loops (the two loops as written, then the search,
    evaluating the loss one trial at a time; the ladder stops at its first step meeting the
    Armijo condition): the same steps, to rounding, compiled several times faster.

    References
    ----------
    Nocedal (1980). Updating quasi-Newton matrices with limited storage. Math. Comp. 35.
    Byrd, Nocedal and Schnabel (1994). Representations of quasi-Newton matrices and their use in
    limited memory methods. Math. Prog. 63.
    Nocedal and Wright (2006). Numerical Optimization, 2nd ed., algorithms 7.4, 7.5, 3.1, 3.5
    and 3.6, and section 3.5 (interpolation).

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
        curvature=curvature,
        max_ls=max_ls,
        clear_nan=clear_nan,
    )
    if loss_or_grads is None and params is None:
        return None  # checked: the decorator returns lbfgs awaiting them
    params, grads = prepare_grads("lbfgs", loss_or_grads, params)
    if line_search is not None and isinstance(loss_or_grads, (list, tuple)):
        raise TypeError(
            f"lbfgs: line_search={line_search!r} evaluates the loss; give the scalar loss, not gradients"
        )
    dtypes = sorted({p.dtype for p in params})
    if len(dtypes) > 1:
        raise ArgumentError(f"lbfgs: all params must share one dtype (one vector), got {', '.join(dtypes)}")
    if clear_nan:
        grads = [zero_nan(g) for g in grads]
    loss = loss_of(loss_or_grads)
    rate = give_loss("lbfgs", "learning_rate", learning_rate, loss)  # a plateau schedule watches it
    settings = dataclasses.replace(settings, learning_rate=rate)
    return _build(params, grads, loss if line_search else None, settings)


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
    curvature: float
    max_ls: int
    clear_nan: bool

    def __post_init__(self) -> None:
        """Check every setting, raising what :func:`lbfgs` raises for a bad value."""
        for name, interval in _RANGES.items():
            check_hyperparameter("lbfgs", name, getattr(self, name), interval)
        for name, interval in _COUNTS.items():
            interval.check("lbfgs", name, getattr(self, name))
        if self.line_search not in _LINE_SEARCHES:
            raise ValueError(f"lbfgs: line_search must be one of {_LINE_SEARCHES}, got {self.line_search!r}")
        if self.line_search == "strong_wolfe" and not self.armijo < self.curvature:
            raise ValueError(
                "lbfgs: the strong Wolfe conditions need armijo < curvature (0 < c1 < c2 < 1), "
                f"got armijo={self.armijo!r} and curvature={self.curvature!r}"
            )
        if not isinstance(self.clear_nan, (bool, np.bool_)):
            raise TypeError(f"lbfgs: clear_nan must be True or False, got {self.clear_nan!r}")


def _config(settings: _Settings) -> dict:
    config = {"rule": "lbfgs"}
    names = ("history_size", "line_search", "ladder", "shrink", "armijo", "curvature", "max_ls")
    config.update((name, getattr(settings, name)) for name in names)
    for name in ("learning_rate", "tolerance_grad", "tolerance_change"):
        config[name] = describe_hyperparameter(getattr(settings, name))
    return config


@dataclass(frozen=True)
class _Search:
    """What a line search starts from: the loss as a graph of the params, the point, the direction,
    and :math:`\\phi(0)` (``value``), :math:`\\phi'(0)` (``slope``)."""

    loss: Variable
    value: Variable
    params: list
    pieces: list  # the direction split and shaped like each param
    direction: Variable
    t0: Variable
    slope: Variable
    settings: _Settings

    def cast(self, value: Any) -> Variable:
        return pt.cast(value, self.loss.dtype)

    def at(self, t: Variable, pieces: list | None = None) -> Variable:
        """:math:`\\phi(t)`, the loss at ``x + t d`` (``t`` a scalar; ``pieces``: ``d`` per param,
        by default :attr:`pieces`)."""
        steps = {p: p + t * x for p, x in zip(self.params, pieces or self.pieces)}
        return graph_replace(self.loss, steps, strict=False)


def _build(params: list, grads: list, loss: Variable | None, settings: _Settings) -> Updates:
    dtype = params[0].dtype
    cast = functools.partial(pt.cast, dtype=dtype)
    sizes = [math.prod(p.get_value(borrow=True).shape) for p in params]
    state = _State(dtype, settings.history_size, sum(sizes))
    g = pt.concatenate([x.ravel() for x in grads]) if len(grads) > 1 else grads[0].ravel()
    given = settings.learning_rate
    rate = cast(given(state.counter) if is_schedule(given) else given)
    inputs = [g, state.history, state.step, state.previous, state.counter, rate]
    outputs = _step(settings, params, sizes, inputs, None if loss is None else cast(loss))
    pairs, _, step, previous, counter, _, _, move = outputs
    updates = Updates(params=params, config=[_config(settings)], hyperparameters={"learning_rate": rate})
    for p, x in zip(params, _pieces(move, params, sizes)):
        updates[p] = p + x  # the move is computed in the node: no broadcast of its scalars here
    updates[state.history] = pairs
    updates[state.step] = step
    updates[state.previous] = previous
    updates[state.counter] = counter
    updates.update(schedule_state([settings.learning_rate]))
    return updates


class _State:
    """The shared variables of L-BFGS, all of the params' dtype but the int64 counter."""

    def __init__(self, dtype: str, m: int, size: int) -> None:
        zeros = functools.partial(np.zeros, dtype=dtype)
        self.history = new_state(zeros((2, m, size)), "lbfgs.history", 0.0)
        self.step = new_state(zeros(size), "lbfgs.step", 0.0)
        self.previous = new_state(zeros(size), "lbfgs.previous_grad", 0.0)
        self.counter = step_counter("lbfgs.t")


def _split(vector: Variable, sizes: list[int]) -> list[Variable]:
    if len(sizes) == 1:
        return [vector]
    return pt.split(vector, sizes, n_splits=len(sizes))


def _pieces(direction: Variable, params: list, sizes: list[int]) -> list[Variable]:
    """The direction split and shaped like each param."""
    return [x.reshape(p.shape) for p, x in zip(params, _split(direction, sizes))]


# -- the step: one node, the graph below or, under Numba, one kernel of loops


@dataclass(frozen=True)
class _Spec:
    """What the kernel of a step needs besides its inputs: the settings it reads, the line search
    (None, ``"armijo"``, ``"strong_wolfe"``) with its constants, and ``phi``: the graph of
    :math:`\\phi(t)` (and :math:`\\phi'(t)` for strong Wolfe) from :math:`t`, :math:`d` and the
    inputs of the loss."""

    m: int
    tolerance: float
    change: float
    restart: bool
    search: str | None = None
    constants: tuple = ()
    phi: FunctionGraph | None = dataclasses.field(default=None, compare=False)


class _Step(OpFromGraph):
    """:func:`_step` as one node: PyTensor inlines it (``inline=True``) in every mode but Numba's,
    where :func:`_register_kernel`'s rewrite replaces it by :class:`_StepKernel` first. Under
    JAX, which converts no loop of unknown length, a rewrite rebuilds it with ``bounded`` (the
    strong Wolfe search as a loop of its largest length that stops changing once done)."""

    def __init__(self, inputs, outputs, spec: _Spec, bounded: Callable[[], list] | None = None) -> None:
        super().__init__(inputs, outputs, inline=True)
        self.spec, self.bounded, self.given = spec, bounded, list(inputs)


def _step(settings: _Settings, params: list, sizes: list[int], inputs: list, loss: Variable | None) -> list:
    r"""The step, from the gradient ``g``, the state (history, last step, previous gradient,
    counter), the learning rate and, for a line search, the loss: the history with the newest
    pair, the direction :math:`d`, the new last step, previous gradient and counter, the step
    size taken along :math:`d` and whether to take it (the slope :math:`g \cdot d` below
    :math:`-\epsilon_{change}` and :math:`\max |g| > \epsilon_{grad}`; with the Armijo search, a
    step found too) and the move of the params as one vector (:math:`t d`, or zeros): the
    params' update is then one addition, with no broadcast scalars for Numba to compile.
    Nothing changes while :math:`\max |g| \le \epsilon_{grad}`."""
    _register_kernel()
    _register_bounded()
    roots = [] if loss is None else [x for x in graph_inputs([loss]) if not isinstance(x, Constant)]
    outer = [*inputs, *([] if loss is None else [loss, *roots])]
    inner = [x.type() for x in outer]
    spec = _Spec(
        settings.history_size,
        float(settings.tolerance_grad),
        float(settings.tolerance_change),
        settings.line_search == "armijo",
    )
    core = _core_graph(*inner[:6], spec.m, spec.tolerance, spec.change, spec.restart)
    pairs, direction, t0, slope, stop, moves, step, previous, counter = core
    if loss is None:
        move = _move(moves, t0, direction)
        return _Step(inner, [pairs, direction, step, previous, counter, t0, moves, move], spec)(*outer)
    search = _inner_search(settings, params, sizes, roots, loss, inner, core)
    spec = dataclasses.replace(spec, **_search_spec(settings, search, inner[7:]))

    def searched(bounded: bool = False) -> list:
        taken = _armijo(search) if settings.line_search == "armijo" else _strong_wolfe(search, bounded)
        kept = pt.switch(slope <= -search.cast(settings.tolerance_change), taken, t0)  # torch's t
        found, history = moves, pairs
        if settings.line_search == "armijo":  # no step taken: forget the history, start from -g
            found = pt.and_(moves, taken > 0)
            kept = pt.switch(found, taken, search.cast(0.0))
            history = pt.switch(pt.or_(found, stop), pairs, pt.zeros_like(pairs))
        new_step = pt.switch(stop, inner[2], kept * direction)
        return [history, direction, new_step, previous, counter, taken, found, _move(found, taken, direction)]

    bounded = functools.partial(searched, True) if settings.line_search == "strong_wolfe" else None
    return _Step(inner, searched(), spec, bounded)(*outer)


def _move(moves: Variable, taken: Variable, direction: Variable) -> Variable:
    """What the params move by, as one vector: :math:`t d` when a step is taken, else zeros."""
    return pt.switch(moves, taken * direction, pt.zeros_like(direction))


def _inner_search(
    settings: _Settings, params: list, sizes: list[int], roots: list, loss: Variable, inner: list, core: list
) -> _Search:
    """The :class:`_Search` inside :func:`_step`'s graph: the loss of its inputs (``roots``) as
    the node's inputs, from the point, along the direction."""
    renamed = dict(zip(roots, inner[7:]))
    direction, t0, slope = core[1:4]
    inner_params = [renamed.get(p, p) for p in params]
    pieces = _pieces(direction, inner_params, sizes)
    moved = [(renamed[p], x) for p, x in zip(params, pieces) if p in renamed]  # the loss's params
    local = graph_replace(loss, renamed, strict=False)
    params, pieces = [p for p, _ in moved], [x for _, x in moved]
    return _Search(local, inner[6], params, pieces, direction, t0, slope, settings)


def _search_spec(settings: _Settings, search: _Search, roots: list) -> dict:
    """The fields of :class:`_Spec` for the line search: its kind, its constants and ``phi``."""
    t, d = search.t0.type(), search.direction.type()
    at_t = graph_replace(search.at(t), {search.direction: d}, strict=False)
    if settings.line_search == "armijo":
        powers = tuple(float(settings.shrink**k) for k in range(settings.ladder))
        constants, outputs = (powers, float(settings.armijo)), [at_t]
    else:
        tolerances = float(settings.armijo), float(settings.curvature), float(settings.tolerance_change)
        constants, outputs = (*tolerances, int(settings.max_ls)), [at_t, _derivative(at_t, t)]
    phi = FunctionGraph([t, d, *roots], outputs, clone=True)
    return dict(search=settings.line_search, constants=constants, phi=phi)


def _derivative(value: Variable, t: Variable) -> Variable:
    r""":math:`\phi'(t)` in forward mode (each op's own push-forward), else by ``pytensor.grad``.

    Forward mode carries the tangent :math:`d` along the model: no gradient buffer, so none of the
    ``Alloc`` and ``IncSubtensor`` of the reverse mode, which Numba's linker compiles into the
    kernel and then optimizes again at every level of the function (100-d Rosenbrock: the trial
    function 12 nodes -> 9, the kernel's compile 3.5-4.0 s -> 3.1 s). An op without a
    push-forward (PyTensor 3.0.7's ``Matmul``, for one) makes the whole of it the reverse mode."""
    one = pt.ones_like(t)
    try:
        if hasattr(pytensor.gradient, "pushforward"):  # PyTensor 3
            return pytensor.gradient.pushforward(value, t, one, use_op_pushforward=True)
        return pytensor.gradient.Rop(value, t, one, use_op_rop_implementation=True)
    except NotImplementedError:
        return pytensor.grad(value, t)


def _core_graph(g, history, step, previous, counter, rate, m, tolerance, change, restart):
    """The step before the line search as a graph: the pair, the two loops as triangular systems,
    the scalars (:func:`_core_kernel`'s outputs)."""
    cast = functools.partial(pt.cast, dtype=g.dtype)
    stop = pt.max(pt.abs(g)) <= cast(tolerance)  # then nothing changes at all
    y = g - previous
    keep = pt.and_(pt.dot(y, step) > cast(_CURVATURE_FLOOR), pt.invert(stop))
    rolled = pt.concatenate([history[:, 1:], history[:, :1]], axis=1)  # of the state's type
    pairs = pt.switch(keep, pt.set_subtensor(rolled[:, -1], pt.stack([step, y])), history)
    direction, empty = _two_loops(g, pairs, m)
    fresh = pt.eq(counter, 0)
    if restart:
        fresh = pt.or_(fresh, empty)
    t0 = pt.switch(fresh, pt.minimum(cast(1.0), cast(1.0) / pt.abs(g).sum()) * rate, rate)
    slope = pt.dot(g, direction)
    go = pt.and_(slope <= -cast(change), pt.invert(stop))
    step = pt.switch(stop, step, t0 * direction)
    previous = pt.switch(stop, previous, g)
    counter = counter + pt.switch(stop, np.int64(0), np.int64(1))  # see apply_if_finite's counter
    return [pairs, direction, t0, slope, stop, go, step, previous, counter]


def _two_loops(g: Variable, pairs: Variable, m: int) -> tuple[Variable, Variable]:
    r"""The direction :math:`-H g` of the two-loop recursion, and whether the history is empty.

    With :math:`S`, :math:`Y` the rows :math:`s_i`, :math:`y_i` (oldest first) and :math:`C = S
    Y^T`, the first loop is :math:`R \alpha = S(-g)`, :math:`R = \mathrm{triu}(C)`; with
    :math:`r_0 = \gamma (-g - Y^T \alpha)` the second is :math:`R^T e = \sigma \circ \alpha - Y r_0`
    for :math:`e = \alpha - \beta`, :math:`\sigma_i = y_i \cdot s_i`, and :math:`d = r_0 + S^T e`.
    With :math:`R = \mathrm{diag}(\sigma)(I + N)`, :math:`N` strictly upper triangular, so
    nilpotent: :math:`Q = (I + N)^{-1} = (I - N)(I + N^2)(I + N^4)\cdots` costs
    :math:`\lceil \log_2 m \rceil` products of :math:`m \times m` matrices, and
    :math:`R^{-1} = Q\, \mathrm{diag}(\rho)`. Unused rows are zeros, with :math:`\rho_i = 0`:
    they change nothing.
    """
    s, y = pairs[0], pairs[1]
    dtype = g.dtype
    curvature = s @ y.T  # C[i, j] = s_i . y_j
    sigma = pt.diagonal(curvature)
    used = sigma > 0
    rho = pt.switch(used, 1 / pt.switch(used, sigma, 1), 0)
    newest = pt.dot(y[-1], y[-1])
    gamma = pt.switch(used[-1], sigma[-1] / pt.switch(used[-1], newest, 1), np.ones((), dtype))
    upper = np.triu(np.ones((m, m), dtype=dtype), 1)
    inverse = _unit_triangular_inverse(rho[:, None] * curvature * upper, m)
    alpha = inverse @ (rho * (s @ -g))
    r0 = gamma * (-g - alpha @ y)
    e = rho * ((sigma * alpha - y @ r0) @ inverse)
    return r0 + e @ s, pt.invert(used[-1])


def _unit_triangular_inverse(nilpotent: Variable, m: int) -> Variable:
    """:math:`(I + N)^{-1}` for a strictly triangular :math:`m \\times m` matrix :math:`N`, as
    :math:`(I - N) \\prod_k (I + N^{2^k})`, exact once :math:`2^k \\ge m`."""
    eye = np.eye(m, dtype=nilpotent.dtype)
    inverse, power = eye - nilpotent, nilpotent
    for _ in range(max(0, math.ceil(math.log2(m)) - 1)):
        power = power @ power
        inverse = inverse @ (eye + power)
    return inverse


# -- under Numba: the step as one kernel of loops, calling the loss's compiled graph


class _StepKernel(Op):
    """:class:`_Step` as one node, made by the Numba rewrite only (``perform`` runs the same
    kernel in Python): :func:`_core_kernel`, then the line search (:func:`_armijo_kernel`,
    :func:`_wolfe_kernel`, calling ``phi``) and what follows it (:func:`_searched_step`)."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self._function = None

    def make_node(self, *inputs, types):
        """``types``: those of the outputs, given by the rewrite as those of the node replaced."""
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        return Apply(self, inputs, [t() for t in types])

    def perform(self, node, inputs, output_storage):
        phi = None
        if self.spec.phi is not None:
            if self._function is None:
                mode = Mode(linker="py", optimizer="fast_compile")
                self._function = pytensor.function(self.spec.phi.inputs, self.spec.phi.outputs, mode=mode)
            phi = _unpacking(self._function, len(inputs) - 6)
        kernel = _step_kernel(self.spec, phi)
        with np.errstate(all="ignore"):  # the graph's arithmetic: inf and nan, no warnings
            results = kernel(*inputs)
        for storage, value, variable in zip(output_storage, results, node.outputs):
            storage[0] = np.asarray(value, dtype=variable.dtype)


def _step_kernel(spec: _Spec, phi: Any, jit: Any = None) -> Any:
    """The function of :class:`_StepKernel`'s node: :func:`_core_kernel`, then the line search
    calling ``phi`` (which takes its inputs after :math:`t` as one tuple). ``jit``: what makes each
    function Numba's (by default none: Python)."""
    jit = jit or (lambda function: function)
    core = jit(_core_kernel(spec.tolerance, spec.change, spec.restart))
    if spec.search is None:
        return _plain_step(core)
    search = {"armijo": _armijo_kernel, "strong_wolfe": _wolfe_kernel}[spec.search]
    found = jit(search(phi, jit(_cubic_kernel), *spec.constants))
    return _searched_step(core, found, spec.search == "armijo", spec.change)


def _plain_step(core: Any) -> Any:
    """The step without a line search: :func:`_core_kernel`'s outputs as :class:`_Step`'s."""

    def step(g, history, last, previous, counter, rate):
        outputs = core(g, history, last, previous, counter, rate)
        pairs, d, t0, _, _, go, new_step, new_previous, count = outputs
        move = np.empty_like(d)
        for k in range(d.shape[0]):
            move[k] = t0[()] * d[k] if go[()] else d.dtype.type(0.0)
        return pairs, d, new_step, new_previous, count, t0, go, move

    return step


def _searched_step(core: Any, search: Any, armijo: bool, change: float) -> Any:
    """The step with a line search: :func:`_core_kernel`, the search when a step is to be taken
    (its result is not used otherwise), then :func:`_step`'s choices after it."""

    def step(g, history, last, previous, counter, rate, f0, *roots):
        outputs = core(g, history, last, previous, counter, rate)
        pairs, d, t0, slope, stop, go, new_step, new_previous, count = outputs
        kind = d.dtype.type
        taken, moves, descends = t0[()], go[()], slope[()] <= -kind(change)
        if moves:
            taken = search(taken, f0[()], slope[()], d, (d, *roots))
        kept = taken if descends else t0[()]
        if armijo:
            moves = moves and taken > kind(0.0)
            kept = taken if moves else kind(0.0)
            if not (moves or stop[()]):
                pairs[:] = kind(0.0)
        move = np.empty_like(d)
        for k in range(d.shape[0]):
            if not stop[()]:
                new_step[k] = kept * d[k]
            move[k] = taken * d[k] if moves else kind(0.0)
        return pairs, d, new_step, new_previous, count, np.asarray(taken), np.asarray(moves), move

    return step


_KERNEL: list[bool] = []  # whether the Numba kernel and its rewrite are registered, once asked


def _kernel_version() -> int:
    """Salts the kernel's key in PyTensor's compile cache (which knows the Op's props only): a
    checksum of the kernels' source, so that an edited kernel is compiled again."""
    kernels = (_step_kernel, _plain_step, _searched_step, _core_kernel, _armijo_kernel, _wolfe_kernel)
    compiled = (*kernels, _cubic_kernel, _register_kernel, _unpacking)  # and how Numba compiles them
    try:
        return zlib.crc32("".join(inspect.getsource(f) for f in compiled).encode())
    except OSError:  # no source (a frozen install): the cache keys by props alone
        return 0


def _register_kernel() -> None:
    """Under PyTensor 3's Numba linker, replace each :class:`_Step` by :class:`_StepKernel` before
    PyTensor inlines it (position -0.02; the inlining runs at -0.01)."""
    if _KERNEL:
        return
    try:
        from pytensor.link.numba.dispatch.basic import (
            numba_funcify_and_cache_key,
            numba_njit,
            register_funcify_and_cache_key,
        )
    except ImportError:  # a PyTensor whose Numba backend takes no cache keys (2.38.3 takes them): the graph
        _KERNEL.append(False)
        return
    _KERNEL.append(True)
    from pytensor.compile import optdb
    from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter

    def inlined(function: Any) -> Any:
        return numba_njit(function, inline="always", error_model="numpy")

    @register_funcify_and_cache_key(_StepKernel)
    def _numba_step(op, node=None, **kwargs):
        """One function, the core, the search and ``phi`` inlined in it: Numba optimizes a
        function compiled apart again in every function calling it."""
        spec, phi, key = op.spec, None, "none"
        if spec.phi is not None:
            kwargs.pop("storage_map", None)
            graph = _numba_graph(spec.phi)
            phi, key = numba_funcify_and_cache_key(graph, fgraph_name="lbfgs_phi", **kwargs)
            phi = inlined(_unpacking(inlined(phi.py_func), len(node.inputs) - 6))
        kernel = numba_njit(_step_kernel(spec, phi, inlined), error_model="numpy")
        if key is None:
            return kernel, None
        salt = (type(op).__name__, repr(dataclasses.replace(spec, phi=None)), key, _kernel_version())
        return kernel, hashlib.sha256(repr(salt).encode()).hexdigest()

    @node_rewriter([_Step])
    def _step_as_kernel(fgraph, node):
        types = [x.type for x in node.outputs]
        return _StepKernel(node.op.spec).make_node(*node.inputs, types=types).outputs

    optdb.register("updates_lbfgs_kernel", dfs_rewriter(_step_as_kernel), "numba", position=-0.02)


@functools.cache
def _register_bounded() -> None:
    """Under JAX, rebuild each :class:`_Step` with a strong Wolfe search before PyTensor inlines
    it, its search then a loop of fixed length (``_Step.bounded``)."""
    from pytensor.compile import optdb
    from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter

    @node_rewriter([_Step])
    def _bounded_search(fgraph, node):
        op = node.op
        if op.bounded is None:
            return None
        return _Step(op.given, op.bounded(), op.spec).make_node(*node.inputs).outputs

    optdb.register("updates_lbfgs_bounded", dfs_rewriter(_bounded_search), "jax", position=-0.02)


def _unpacking(phi: Any, count: int) -> Any:
    """``phi`` taking its arguments after the first as one tuple of ``count``: ``evaluate(t, rest)``
    calls ``phi(t, rest[0], ...)``, written out (Numba inlines no call with ``*rest``)."""
    scope = {"phi": phi}
    arguments = "".join(f", rest[{i}]" for i in range(count))
    exec(f"def evaluate(t, rest):\n    return phi(t{arguments})\n", scope)
    return scope["evaluate"]


def _numba_graph(fgraph: FunctionGraph) -> FunctionGraph:
    """A copy of ``fgraph`` rewritten as Numba's linker would (as its ``OpFromGraph``), its inputs
    protected from in-place rewrites."""
    from pytensor.compile.aliasing import add_supervisor_to_fgraph
    from pytensor.compile.io import In
    from pytensor.compile.mode import NUMBA

    fgraph = fgraph.clone()
    specs = [In(x, borrow=True, mutable=False) for x in fgraph.inputs]
    add_supervisor_to_fgraph(fgraph=fgraph, input_specs=specs, accept_inplace=True)
    NUMBA.excluding("symbolic_op_recognition").optimizer(fgraph)
    return fgraph


def _core_kernel(tolerance: float, change: float, restart: bool) -> Any:
    """:func:`_core_graph` as loops, the two-loop recursion as written, its scalars 0-d arrays.
    Only loops and scalars: Numba compiles this in a fraction of the time the graph or NumPy's
    array functions take."""

    def core(g, history, step, previous, counter, rate):
        m, n = history.shape[1], g.shape[0]
        zero, one = g.dtype.type(0), g.dtype.type(1)
        largest, total, ys = zero, zero, zero
        y = np.empty_like(g)
        for k in range(n):
            total += abs(g[k])
            largest = max(largest, abs(g[k]))
            y[k] = g[k] - previous[k]
            ys += y[k] * step[k]
        stop = largest <= g.dtype.type(tolerance)
        shift = 1 if ys > g.dtype.type(_CURVATURE_FLOOR) and not stop else 0
        pairs = np.empty_like(history)
        for i in range(m):  # the oldest pair dropped if the newest is kept
            for k in range(n):
                new = i + shift == m
                pairs[0, i, k] = step[k] if new else history[0, i + shift, k]
                pairs[1, i, k] = y[k] if new else history[1, i + shift, k]
        d = np.empty_like(g)
        for k in range(n):
            d[k] = -g[k]
        alpha, rho = np.zeros(m, g.dtype), np.zeros(m, g.dtype)
        for i in range(m - 1, -1, -1):  # newest to oldest
            sy, sd = zero, zero
            for k in range(n):
                sy += pairs[1, i, k] * pairs[0, i, k]
                sd += pairs[0, i, k] * d[k]
            if sy > 0:
                rho[i] = one / sy
                alpha[i] = sd * rho[i]
                for k in range(n):
                    d[k] -= alpha[i] * pairs[1, i, k]
        if rho[m - 1] > 0:
            yy = zero
            for k in range(n):
                yy += pairs[1, m - 1, k] * pairs[1, m - 1, k]
            gamma = (one / rho[m - 1]) / yy
            for k in range(n):
                d[k] *= gamma
        for i in range(m):  # oldest to newest
            if rho[i] > 0:
                yd = zero
                for k in range(n):
                    yd += pairs[1, i, k] * d[k]
                step_i = alpha[i] - yd * rho[i]
                for k in range(n):
                    d[k] += step_i * pairs[0, i, k]
        slope = zero
        for k in range(n):
            slope += g[k] * d[k]
        t0 = rate[()]
        if counter[()] == 0 or (restart and rho[m - 1] == 0):
            t0 = min(one, one / total) * rate[()]
        new_step, new_previous = np.empty_like(g), np.empty_like(g)
        for k in range(n):
            new_step[k] = step[k] if stop else t0 * d[k]
            new_previous[k] = previous[k] if stop else g[k]
        go = slope <= -g.dtype.type(change) and not stop
        scalars = np.asarray(t0), np.asarray(slope), np.asarray(stop), np.asarray(go)
        count = np.asarray(counter[()] + (0 if stop else 1))
        return pairs, d, *scalars, new_step, new_previous, count

    return core


def _armijo_kernel(phi: Any, cubic: Any, powers: tuple, c1: float) -> Any:
    """:func:`_armijo` as a loop of scalars: ``phi(t, rest)[0]`` is :math:`\\phi(t)` as a 0-d array
    (``cubic``: unused, the arguments of :func:`_wolfe_kernel`). The ladder stops at its first
    step meeting the condition when :math:`t_0 > 0` (the largest: the steps decrease); else every
    step is evaluated, as the graph does."""

    def search(t0, f0, slope, direction, rest):
        kind = direction.dtype.type
        zero, count = kind(0.0), len(powers)
        enough = kind(c1) * slope
        steps, losses = np.zeros(count, direction.dtype), np.zeros(count, direction.dtype)
        largest, any_found, evaluated = zero, False, count
        for k in range(count):
            steps[k] = t0 * kind(powers[k])
            losses[k] = phi(np.asarray(steps[k]), rest)[0][()]
            if losses[k] <= f0 + enough * steps[k]:
                largest, any_found = np.maximum(largest, steps[k]), True
                if t0 > zero:
                    evaluated = k + 1
                    break
        t = largest if any_found else t0 * kind(powers[count - 1])
        value = kind(-np.inf)
        for k in range(evaluated):
            if steps[k] == t:
                value = np.maximum(value, losses[k])
        excess = value - f0 - slope * t
        tq = -slope * t * t / (kind(2.0) * excess) if excess > zero and np.isfinite(excess) else zero
        if tq > zero:
            at_tq = phi(np.asarray(tq), rest)[0][()]
            if at_tq <= f0 + enough * tq and (not any_found or at_tq < value):
                return tq
        return t if any_found else zero

    return search


def _cubic_kernel(kind, x1, f1, g1, x2, f2, g2, low, high):
    """:func:`_cubic_minimum` of scalars of the type ``kind``."""
    d1 = g1 + g2 - kind(3.0) * (f1 - f2) / (x1 - x2)
    square = d1 * d1 - g1 * g2
    if not square >= kind(0.0):
        return (low + high) / kind(2.0)
    d2 = np.sqrt(np.maximum(square, kind(0.0)))
    if x1 <= x2:
        minimum = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + kind(2.0) * d2))
    else:
        minimum = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + kind(2.0) * d2))
    return np.minimum(np.maximum(minimum, low), high)


def _wolfe_kernel(phi: Any, cubic: Any, c1: float, c2: float, tolerance: float, max_ls: int) -> Any:
    """:func:`_strong_wolfe` as a loop of scalars, :func:`_wolfe_iteration`'s decisions in its
    order: ``phi(t, rest)`` gives :math:`\\phi(t)` and :math:`\\phi'(t)` as 0-d arrays, ``cubic`` is
    :func:`_cubic_kernel`. The bracket is ``a`` and ``b`` (``low_b``: the lowest is ``b``)."""

    def search(t0, f0, slope, direction, rest):
        kind = direction.dtype.type
        zero = kind(0.0)
        reach = zero
        for k in range(direction.shape[0]):
            reach = np.maximum(reach, abs(direction[k]))
        t, t_prev, f_prev, g_prev = t0, zero, f0, slope
        a_t, a_f, a_g, b_t, b_f, b_g = zero, zero, zero, zero, zero, zero
        low_b, stuck, zoom, result = False, False, False, zero
        for j in range(max_ls + 1):
            value, derivative = phi(np.asarray(t), rest)
            f, g = value[()], derivative[()]
            last = j == max_ls
            rises = f > f0 + kind(c1) * t * slope
            flat = abs(g) <= -kind(c2) * slope
            high = rises or (j > 1 and f >= f_prev)
            enter = not last and (high or (not flat and g >= zero))
            extrapolate = not last and not (high or flat or g >= zero)
            if zoom:  # the new point replaces an end of the bracket
                lo_t, lo_f, lo_g = (b_t, b_f, b_g) if low_b else (a_t, a_f, a_g)
                hi_t, hi_f, hi_g = (a_t, a_f, a_g) if low_b else (b_t, b_f, b_g)
                replaces_high = rises or f >= lo_f
                found = not replaces_high and flat
                if not (replaces_high or flat) and g * (hi_t - lo_t) >= zero:
                    hi_t, hi_f, hi_g = lo_t, lo_f, lo_g
                if replaces_high == low_b:  # into a
                    a_t, a_f, a_g = t, f, g
                    b_t, b_f, b_g = (lo_t, lo_f, lo_g) if low_b else (hi_t, hi_f, hi_g)
                else:
                    a_t, a_f, a_g = (hi_t, hi_f, hi_g) if low_b else (lo_t, lo_f, lo_g)
                    b_t, b_f, b_g = t, f, g
                if replaces_high:
                    low_b = a_f > b_f
                done = found or last
            else:
                a_t, a_f, a_g, b_t, b_f, b_g = t_prev, f_prev, g_prev, t, f, g
                low_b = f_prev > f
                done = not (enter or extrapolate)
            in_zoom = zoom or enter
            done = done or (in_zoom and abs(b_t - a_t) * reach < kind(tolerance))
            if in_zoom:
                result = b_t if low_b else a_t
            else:
                result = zero if last and f0 <= f else t
                t_prev, f_prev, g_prev = t, f, g
            if done:
                break
            lower, upper = np.minimum(a_t, b_t), np.maximum(a_t, b_t)
            low, high = (lower, upper) if in_zoom else (t + kind(0.01) * (t - a_t), kind(10.0) * t)
            trial = cubic(kind, a_t, a_f, a_g, b_t, b_f, b_g, low, high)
            margin = kind(0.1) * (upper - lower)
            near = np.minimum(upper - trial, trial - lower) < margin
            moved = near and ((zoom and stuck) or trial >= upper or trial <= lower)
            if in_zoom and moved:
                trial = upper - margin if abs(trial - upper) < abs(trial - lower) else lower + margin
            stuck, zoom, t = near and not moved, in_zoom, trial
        return result

    return search


# -- the line searches as graphs


def _armijo(search: _Search) -> Variable:
    """The step of the ladder ``t0 c^k`` and its interpolated refinement (0: no step).

    The loss at every step of the ladder is one vectorized graph (a leading axis of candidates
    on every param), not one copy of the model per candidate: PyTensor's Numba linker compiles
    in time growing faster than the node count. The interpolated step needs one more copy.
    """
    settings, cast = search.settings, search.cast
    powers = np.asarray([settings.shrink**k for k in range(settings.ladder)])
    steps = search.t0 * cast(powers)
    batched = {
        p: pt.shape_padleft(p) + steps.reshape((-1,) + (1,) * p.ndim) * pt.shape_padleft(x)
        for p, x in zip(search.params, search.pieces)
    }
    losses = vectorize_graph(search.loss, batched)
    enough = cast(settings.armijo) * search.slope
    found = losses <= search.value + enough * steps
    any_found = pt.any(found)
    t = pt.switch(any_found, pt.max(pt.switch(found, steps, cast(0.0))), steps[-1])  # the largest
    value = pt.max(pt.switch(pt.eq(steps, t), losses, cast(-np.inf)))
    excess = value - search.value - search.slope * t  # phi(t) - phi(0) - phi'(0) t: half the curvature t^2
    usable = pt.and_(excess > 0, isfinite(excess))
    tq = pt.switch(usable, -search.slope * t * t / (cast(2.0) * pt.switch(usable, excess, 1)), cast(0.0))
    at_tq = search.at(tq)
    better = pt.and_(
        pt.and_(tq > 0, at_tq <= search.value + enough * tq), pt.or_(pt.invert(any_found), at_tq < value)
    )
    return pt.switch(better, tq, pt.switch(any_found, t, cast(0.0)))


def _cubic_minimum(x1, f1, g1, x2, f2, g2, low, high, cast):
    """The minimizer of the cubic through two points with their values and slopes, clipped to
    ``[low, high]``; their midpoint if the cubic has no minimum (torch's ``_cubic_interpolate``)."""
    d1 = g1 + g2 - cast(3.0) * (f1 - f2) / (x1 - x2)
    square = d1 * d1 - g1 * g2
    d2 = pt.sqrt(pt.maximum(square, cast(0.0)))
    ascending = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + cast(2.0) * d2))
    descending = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + cast(2.0) * d2))
    minimum = pt.switch(x1 <= x2, ascending, descending)
    return pt.switch(square >= 0, pt.minimum(pt.maximum(minimum, low), high), (low + high) / cast(2.0))


def _strong_wolfe(search: _Search, bounded: bool = False) -> Variable:
    """torch's strong Wolfe line search as a bounded loop in the graph: the step it returns.

    The loop's body is one evaluation of the loss and its derivative along ``d`` and the
    search's decisions; what it needs from the step (``d``, :math:`\\phi(0)`, :math:`\\phi'(0)`)
    enters as inputs, so that the body does not compute them again. It stops once the search is
    done, or, ``bounded`` (for JAX, which converts no loop of unknown length), always runs its
    largest number of evaluations, carrying what it found once done unchanged.
    """
    settings, cast = search.settings, search.cast
    zero, false = cast(0.0), pt.as_tensor_variable(np.bool_(False))
    start = [search.t0, zero, search.value, search.slope, *[zero] * 6, false, false, false]
    given = [*search.pieces, search.value, search.slope, pt.max(pt.abs(search.direction))]
    constants = dict(
        c1=cast(settings.armijo),
        c2=cast(settings.curvature),
        tolerance=cast(settings.tolerance_change),
        last=settings.max_ls,
        cast=cast,
    )
    count = len(search.pieces)

    def iteration(j, t, *inputs):
        carry, pieces, (f0, slope, reach) = inputs[:12], inputs[12 : 12 + count], inputs[12 + count :]
        value = search.at(t, list(pieces))
        derivative = pytensor.grad(value, t)
        return _wolfe_iteration(j, t, value, derivative, *carry, f0=f0, slope=slope, reach=reach, **constants)

    def held_once_done(j, *inputs):
        n = len(start)
        (t, *carry), (result, done), rest = inputs[:n], inputs[n : n + 2], inputs[n + 2 :]
        new, stop = iteration(j, t, *carry, *rest)
        kept = [pt.switch(done, old, x) for old, x in zip([t, *carry, result], new)]
        return [*kept, pt.or_(done, stop.condition)]

    steps = [pt.arange(settings.max_ls + 1, dtype="int64")]
    if bounded:
        outputs = pytensor.scan(
            held_once_done,
            sequences=steps,
            outputs_info=[*start, zero, false],
            non_sequences=given,
            return_updates=False,
        )
        return outputs[-2][-1]
    outputs = pytensor.scan(
        iteration, sequences=steps, outputs_info=[*start, None], non_sequences=given, return_updates=False
    )
    return outputs[-1][-1]


def _wolfe_iteration(
    j, t, f, g, t_prev, f_prev, g_prev, a_t, a_f, a_g, b_t, b_f, b_g, low_b, stuck, zoom, **k
):
    """One evaluation of the strong Wolfe search and what follows from it.

    The carry: the trial step ``t``; the previous point of the bracketing phase; the bracket as
    two positions ``a`` and ``b`` (``low_b``: the lowest is ``b``); the zoom's insufficient
    progress flag; the phase. Returns the next carry, the step found so far, and the stop.
    """
    cast, f0, slope, c1, c2 = k["cast"], k["f0"], k["slope"], k["c1"], k["c2"]
    last = pt.eq(j, k["last"])
    rises = f > f0 + c1 * t * slope
    flat = pt.abs(g) <= -c2 * slope
    # bracketing: the point found, a bracket around one, or a longer step
    high = pt.or_(rises, pt.and_(j > 1, f >= f_prev))
    enter = pt.and_(pt.invert(last), pt.or_(high, pt.and_(pt.invert(flat), g >= 0)))
    extrapolate = pt.and_(pt.invert(last), pt.invert(pt.or_(high, pt.or_(flat, g >= 0))))
    bracket_result = pt.switch(pt.and_(last, f0 <= f), cast(0.0), t)
    # zoom: the new point replaces an end of the bracket
    low = [pt.switch(low_b, x, y) for x, y in ((b_t, a_t), (b_f, a_f), (b_g, a_g))]
    upper = [pt.switch(low_b, y, x) for x, y in ((b_t, a_t), (b_f, a_f), (b_g, a_g))]
    replaces_high = pt.or_(rises, f >= low[1])
    found = pt.and_(pt.invert(replaces_high), flat)
    swap = pt.and_(pt.invert(pt.or_(replaces_high, flat)), g * (upper[0] - low[0]) >= 0)
    new = (t, f, g)
    kept_high = [pt.switch(swap, lo, hi) for lo, hi in zip(low, upper)]
    # positions after the update: the high end gets the new point, or the low end does
    into_a = pt.switch(replaces_high, low_b, pt.invert(low_b))
    zoom_a = [pt.switch(into_a, n, pt.switch(low_b, h, lo)) for n, h, lo in zip(new, kept_high, low)]
    zoom_b = [pt.switch(into_a, pt.switch(low_b, lo, h), n) for n, h, lo in zip(new, kept_high, low)]
    zoom_low_b = pt.switch(replaces_high, zoom_a[1] > zoom_b[1], low_b)
    # the bracket from here on, in either phase
    in_zoom = pt.or_(zoom, enter)
    next_a = [pt.switch(zoom, z, e) for z, e in zip(zoom_a, (t_prev, f_prev, g_prev))]
    next_b = [pt.switch(zoom, z, e) for z, e in zip(zoom_b, new)]
    next_low_b = pt.switch(zoom, zoom_low_b, f_prev > f)
    narrow = pt.abs(next_b[0] - next_a[0]) * k["reach"] < k["tolerance"]
    done = pt.switch(zoom, pt.or_(found, last), pt.invert(pt.or_(enter, extrapolate)))
    done = pt.or_(done, pt.and_(in_zoom, narrow))
    result = pt.switch(in_zoom, pt.switch(next_low_b, next_b[0], next_a[0]), bracket_result)
    # the next trial: inside the bracket, or beyond t
    ends = (pt.minimum(next_a[0], next_b[0]), pt.maximum(next_a[0], next_b[0]))
    bounds = [pt.switch(in_zoom, z, e) for z, e in zip(ends, (t + cast(0.01) * (t - t_prev), cast(10.0) * t))]
    points = [pt.switch(in_zoom, z, e) for z, e in zip((*next_a, *next_b), (t_prev, f_prev, g_prev, *new))]
    trial = _cubic_minimum(*points, *bounds, cast)
    margin = cast(0.1) * (ends[1] - ends[0])
    near = pt.minimum(ends[1] - trial, trial - ends[0]) < margin
    moved = pt.and_(near, pt.or_(pt.and_(zoom, stuck), pt.or_(trial >= ends[1], trial <= ends[0])))
    away = pt.switch(pt.abs(trial - ends[1]) < pt.abs(trial - ends[0]), ends[1] - margin, ends[0] + margin)
    trial = pt.switch(pt.and_(in_zoom, moved), away, trial)
    next_stuck = pt.and_(near, pt.invert(moved))
    carry = [
        trial,
        *[pt.switch(in_zoom, a, n) for a, n in zip((t_prev, f_prev, g_prev), new)],
        *next_a,
        *next_b,
        next_low_b,
        next_stuck,
        in_zoom,
    ]
    return [*carry, result], until(done)
