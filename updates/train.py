"""A small training loop around one compiled step: :func:`iterate` and :func:`minimize`.

The loop compiles one training function (loss, monitors, the optimizer's updates) and one
validation function (loss and monitors, no updates), feeds them mini-batches, and after every
``validate_every`` epochs yields a :class:`Record` of the training monitors (averaged over the
steps since the last record) and the validation monitors (averaged over the validation set).

Data are either a sequence of arrays, one per input variable, cut into mini-batches along their
first axis (reshuffled at every pass with a seeded generator; the last, shorter batch is used),
or any iterable of batches (each a sequence of arrays, one per input), iterated once per pass; a
callable returning such an iterable is called at every pass.

Every step is guarded inside the compiled function: when the loss or a gradient is not finite,
the step changes nothing (params, optimizer state and step counters keep their values), so a
non-finite step never corrupts the model. The loop then raises :class:`NonFiniteLossError`
(default), stops, or skips the step and goes on (``on_nonfinite``). An optimizer wrapped in
:func:`apply_if_finite` with a ``budget`` that runs out stops the loop too, with the message of
its :class:`SkipBudgetError`.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field, fields
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable

from updates.checks import COUNT, Interval, describe
from updates.container import Updates
from updates.engine import gated
from updates.grads import prepare_grads
from updates.public import checks_keywords
from updates.reductions import all_finite, l2_norm
from updates.step import compile_step
from updates.wrappers import SkipBudgetError

__all__ = ["History", "NonFiniteLossError", "Record", "iterate", "minimize"]

_RESERVED = ("loss", "grad_norm", "learning_rate", "update_norm")
_NONFINITE = ("raise", "stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient was not finite at a training step (``on_nonfinite='raise'``).

    That step was not applied: the params and the optimizer state keep the values they had
    after the last finite step. ``step`` is the 1-based number of the step, ``epoch`` its epoch,
    ``loss`` the loss it computed and ``history`` the :class:`History` up to that step.
    """

    def __init__(self, message: str, step: int, epoch: int, loss: float, history: History) -> None:
        super().__init__(message)
        self.step, self.epoch, self.loss, self.history = step, epoch, loss, history


@dataclass(frozen=True)
class Record:
    """What the loop reports at one validation.

    Attributes
    ----------
    step : int
        Training steps taken so far (skipped non-finite steps included).
    epoch : int
        The epoch this validation ends (1 for the first); for a last validation in the middle of
        an epoch (``max_updates``), that unfinished epoch.
    seconds : float
        Training time so far: the wall time since the loop started (training steps, validations,
        the loop's own work; with :func:`iterate`, the caller's loop body too), less the first
        call of the training function and of the validation function, which under Numba or JAX
        is mostly compilation (timed apart, in ``History.first_call_seconds`` and
        ``History.first_valid_call_seconds``). Building the functions is not counted either
        (``History.compile_seconds``).
    train : dict of str to float
        The training monitors averaged over the finite steps since the previous record:
        ``loss``, each named monitor, ``grad_norm`` if asked for; ``learning_rate`` is the rate
        the last of those steps used (when the optimizer's rate is not a constant);
        ``update_norm`` (with ``tolerance``) is the size of that last step.
    valid : dict of str to float
        ``loss`` and each named monitor over the whole validation set (batch means weighted
        by batch length); empty without validation data.
    best : bool
        True if this validation is the best so far (the one restored at the end).
    skipped : int
        Non-finite steps skipped since the previous record (``on_nonfinite='skip'``).
    step_seconds : float
        Mean wall time of one training call since the previous record, excluding the very first
        call (which compiles the function under Numba); NaN if no call qualifies. Under JAX, a
        call is timed until the step it waits for is done (itself when a check reads its values,
        else the step before) and includes putting the next batch on the device.
    """

    step: int
    epoch: int
    seconds: float
    train: dict[str, float]
    valid: dict[str, float]
    best: bool
    skipped: int = 0
    step_seconds: float = math.nan


@dataclass(repr=False)
class History:
    """The records of a training run, with their values as arrays.

    ``history.train["loss"]`` and ``history.valid["loss"]`` are arrays with one entry per record;
    ``history.step``, ``history.epoch`` and ``history.seconds`` give the matching x axes. Its
    ``repr`` is one short line (records, steps, last and best loss, why it stopped); the records
    are in ``history.records``.

    The start-up costs (``compile_seconds``, ``first_call_seconds``, ``first_valid_call_seconds``)
    are kept apart from the records' ``seconds``, which count the training time only.

    Attributes
    ----------
    records : list of Record
        One per validation, in order.
    stop_reason : str
        Why training stopped, in words.
    best : Record or None
        The record with the best validation score (validation loss, or the training loss without
        validation data).
    restored : bool
        True if the params and optimizer state were set back to their values at ``best``.
    compile_seconds : float
        Time spent building the training and validation functions (``pytensor.function``, or
        the JAX step), before training starts.
    first_call_seconds : float
        Time of the first training call (under Numba or JAX, mostly the just-in-time
        compilation); NaN if no call completed.
    first_valid_call_seconds : float
        Time of the first call of the validation function (likewise); NaN without validation
        data.
    """

    records: list[Record] = field(default_factory=list)
    stop_reason: str = ""
    best: Record | None = None
    restored: bool = False
    compile_seconds: float = 0.0
    first_call_seconds: float = math.nan
    first_valid_call_seconds: float = math.nan

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        """One line: counts, the last and the best loss, and why training stopped."""
        if not self.records:
            return f"History(0 records, stop_reason={self.stop_reason!r})"
        last = self.records[-1]
        best = "no finite loss" if self.best is None else f"{_loss_text(self.best)} at {_when(self.best)}"
        restored = ", restored" if self.restored else ""
        return (
            f"History({_count(len(self.records), 'record')}, {_count(last.step, 'step')}, "
            f"{_count(last.epoch, 'epoch')}, "
            f"last {_loss_text(last)}, best {best}{restored}, stop_reason={self.stop_reason!r})"
        )

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    @property
    def step(self) -> np.ndarray:
        return np.array([r.step for r in self.records], dtype=np.int64)

    @property
    def epoch(self) -> np.ndarray:
        return np.array([r.epoch for r in self.records], dtype=np.int64)

    @property
    def seconds(self) -> np.ndarray:
        return np.array([r.seconds for r in self.records])

    @property
    def train(self) -> dict[str, np.ndarray]:
        return self._column("train")

    @property
    def valid(self) -> dict[str, np.ndarray]:
        return self._column("valid")

    def _column(self, part: str) -> dict[str, np.ndarray]:
        names = dict.fromkeys(name for r in self.records for name in getattr(r, part))
        return {n: np.array([getattr(r, part).get(n, math.nan) for r in self.records]) for n in names}


def _loss_text(record: Record) -> str:
    """The loss that scores ``record``: the validation loss, or the training loss without validation."""
    part, values = ("valid", record.valid) if record.valid else ("train", record.train)
    return f"{part} loss {values.get('loss', math.nan):.4g}"


def _first_calls(history: History) -> float:
    """The first training and validation calls together (0 for those that did not happen)."""
    firsts = (history.first_call_seconds, history.first_valid_call_seconds)
    return sum(s for s in firsts if not math.isnan(s))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _when(record: Record) -> str:
    return f"step {record.step} (epoch {record.epoch})"


def _duration(seconds: float) -> str:
    """``seconds`` in words a person reads at a glance: 45.1 µs, 3.2 ms, 1.25 s, 0:02:05."""
    if math.isnan(seconds):
        return "n/a"
    # each unit up to where three digits round to the next (999.96 µs reads 1 ms, not 1e+03 µs)
    if seconds < 999.5e-6:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 0.9995:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 59.5:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}"


# -- data --------------------------------------------------------------------------------------------


def _cast(who: str, what: str, value: Any, variable: Variable) -> np.ndarray:
    """``value`` as an array of ``variable``'s dtype (a same-kind cast, e.g. float64 -> float32)."""
    array = np.asarray(value)
    dtype = np.dtype(variable.dtype)
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise TypeError(
                f"{who}: {what} has dtype {array.dtype}, which cannot be cast to the dtype of input "
                f"{variable.name or variable} ({dtype})"
            )
        array = array.astype(dtype)
    if array.ndim != variable.ndim:
        raise ValueError(
            f"{who}: {what} has {array.ndim} dimensions, expected {variable.ndim} for input "
            f"{variable.name or variable} ({variable.type})"
        )
    return array


def _is_arrays(data: Any) -> bool:
    return isinstance(data, np.ndarray) or (
        isinstance(data, (list, tuple)) and len(data) > 0 and all(isinstance(a, np.ndarray) for a in data)
    )


class _Data:
    """A source of mini-batches: ``passes()`` yields one iterator of batches per pass."""

    def __init__(self, who: str, name: str, data: Any, inputs: list[Variable], batch_size, shuffle, seed):
        self.who, self.name, self.inputs = who, name, inputs
        self.arrays: list[np.ndarray] | None = None
        if _is_arrays(data):
            arrays = [data] if isinstance(data, np.ndarray) else list(data)
            if len(arrays) != len(inputs):
                raise ValueError(
                    f"{who}: {name} has {len(arrays)} arrays for {len(inputs)} inputs; give one array "
                    "per input variable, in the order of inputs"
                )
            self.arrays = [_cast(who, f"{name}[{i}]", a, v) for i, (a, v) in enumerate(zip(arrays, inputs))]
            lengths = {len(a) for a in self.arrays}
            if len(lengths) > 1:
                raise ValueError(f"{who}: the arrays of {name} differ in length ({sorted(lengths)})")
            self.size = lengths.pop()
            if self.size == 0:
                raise ValueError(f"{who}: {name} is empty (its arrays have length 0)")
            self.batch_size = self.size if batch_size is None else batch_size
            self.rng = np.random.default_rng(seed) if shuffle else None
        elif callable(data) or isinstance(data, Iterable):
            if isinstance(data, (str, bytes, Mapping)):
                raise TypeError(
                    f"{who}: {name} must be arrays or an iterable of batches, got {describe(data)}"
                )
            self.source = data
        else:
            raise TypeError(
                f"{who}: {name} must be a sequence of arrays (one per input), an iterable of batches "
                f"or a callable returning one, got {describe(data)}"
            )

    @property
    def batches_per_pass(self) -> int | None:
        if self.arrays is not None:
            return -(-self.size // self.batch_size)
        return len(self.source) if hasattr(self.source, "__len__") else None

    def passes(self) -> Iterator[Iterator[list[np.ndarray]]]:
        while True:
            yield self._one_pass()

    def _one_pass(self) -> Iterator[list[np.ndarray]]:
        if self.arrays is not None:
            order = self.rng.permutation(self.size) if self.rng is not None else None
            for start in range(0, self.size, self.batch_size):
                if order is None:
                    yield [a[start : start + self.batch_size] for a in self.arrays]
                else:
                    index = order[start : start + self.batch_size]
                    yield [a[index] for a in self.arrays]
            return
        source = self.source() if callable(self.source) else self.source
        for number, batch in enumerate(source):
            yield self._check_batch(number, batch)

    def _check_batch(self, number: int, batch: Any) -> list[np.ndarray]:
        parts = [batch] if isinstance(batch, np.ndarray) and len(self.inputs) == 1 else batch
        if not isinstance(parts, (list, tuple)) or len(parts) != len(self.inputs):
            got = f"{len(parts)} arrays" if isinstance(parts, (list, tuple)) else describe(batch)
            raise ValueError(
                f"{self.who}: batch {number} of {self.name} has {got}, expected a sequence of "
                f"{len(self.inputs)} arrays (one per input)"
            )
        what = f"batch {number} of {self.name}"
        return [_cast(self.who, f"{what}[{i}]", a, v) for i, (a, v) in enumerate(zip(parts, self.inputs))]


def _batch_length(batch: list[Any]) -> int:
    return len(batch[0]) if batch and batch[0].ndim > 0 else 1


def _wait(values: list[Any]) -> None:
    """Wait until the device has computed ``values`` (JAX arrays)."""
    for value in values:
        value.block_until_ready()


def _weighted(read: Callable[[Any], Any], n: int, values: list[Any]) -> np.ndarray:
    """A batch's outputs, read, times its length ``n``."""
    return n * np.array([float(read(v)) for v in values])


# -- the compiled functions ----------------------------------------------------------------------------


def _check_inputs(who: str, inputs: Any) -> list[Variable]:
    if isinstance(inputs, Variable):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"{who}: inputs must be a list of symbolic input variables, got {describe(inputs)}")
    for i, variable in enumerate(inputs):
        if not isinstance(variable, Variable) or isinstance(variable, (SharedVariable, Constant)):
            raise TypeError(
                f"{who}: inputs[{i}] is a {describe(variable)}, expected a symbolic input variable "
                "such as pt.matrix('x')"
            )
    return list(inputs)


def _check_monitors(who: str, monitors: Any) -> dict[str, Variable]:
    if monitors is None:
        return {}
    if not isinstance(monitors, Mapping):
        raise TypeError(
            f"{who}: monitors must be a dict of name -> scalar expression, got {describe(monitors)}"
        )
    checked = {}
    for name, expression in monitors.items():
        if name in _RESERVED:
            raise ValueError(f"{who}: monitor name {name!r} is reserved ({', '.join(_RESERVED)})")
        expression = pt.as_tensor_variable(expression)
        if expression.ndim != 0:
            raise ValueError(f"{who}: monitor {name!r} must be a scalar, got a {expression.ndim}-d tensor")
        checked[name] = expression
    return checked


def _build_updates(who: str, optimizer: Any, params: list[SharedVariable], grads: list[Variable]):
    """The optimizer's updates: a rule awaiting ``(loss_or_grads, params)`` is applied to ``grads``."""
    if isinstance(optimizer, Mapping):
        return optimizer
    if callable(optimizer):
        built = optimizer(grads, params)
        if not isinstance(built, Mapping):
            raise TypeError(f"{who}: optimizer returned {describe(built)}, expected a dictionary of updates")
        return built
    raise TypeError(
        f"{who}: optimizer must be a rule awaiting (loss_or_grads, params), such as "
        f"updates.adam(learning_rate=1e-3), or a dictionary of updates; got {describe(optimizer)}"
    )


def _scheduled_rate(built: Mapping) -> Variable | None:
    """The optimizer's current learning rate, if it is not a constant."""
    rate = getattr(built, "hyperparameters", {}).get("learning_rate")
    if rate is None or isinstance(rate, Constant):
        return None
    return rate


@dataclass
class _Step:
    """The compiled functions and what their outputs are.

    ``on_device``: both are JAX steps that return their outputs as device arrays (read when a
    value is needed) and take batches placed on the device beforehand (``prefetch``).
    """

    train: Callable
    train_names: list[str]
    valid: Callable | None
    valid_names: list[str]
    variables: list[SharedVariable]
    compile_seconds: float
    on_device: bool = False


def _device_mode(mode: Any) -> bool:
    """Whether :func:`compile_step` builds its JAX step for ``mode`` (the string ``"JAX"``)."""
    return isinstance(mode, str) and mode.upper() == "JAX"


def _compile(
    who,
    loss,
    params,
    inputs,
    optimizer,
    monitors,
    gradient_norm,
    tolerance,
    valid,
    mode,
    mesh=None,
    batch_axis=None,
    shard_state=False,
) -> _Step:
    if params is None and isinstance(optimizer, Updates):
        params = list(optimizer.params)
    elif params is None:
        raise TypeError(
            f"{who}: params is None; give the params, or updates built by a rule (an Updates knows them)"
        )
    params, grads = prepare_grads(who, loss, params)
    loss = pt.as_tensor_variable(loss)
    ok = all_finite([loss, *grads])
    with gated(ok):  # a rule built here keeps params and state itself on a bad step, in place
        built = _build_updates(who, optimizer, params, grads)
    missing = [p.name or str(p) for p in params if p not in built]
    if missing:
        raise ValueError(f"{who}: the optimizer's updates have no entry for params {missing}")
    outputs = OrderedDict(loss=loss, **monitors)
    if gradient_norm:
        outputs["grad_norm"] = l2_norm(grads, "float64")
    rate = _scheduled_rate(built)
    if rate is not None:
        outputs["learning_rate"] = rate
    if tolerance is not None:
        outputs["update_norm"] = l2_norm([built[p] - p for p in params], "float64")
    inside = built.is_gated if isinstance(built, Updates) else lambda key: False
    guarded = OrderedDict(
        (var, new if inside(var) else pt.switch(ok, new, var)) for var, new in built.items()
    )
    results = "device" if _device_mode(mode) else "host"
    start = time.perf_counter()
    train = compile_step(
        inputs,
        [*outputs.values(), ok],
        guarded,
        mode=mode,
        mesh=mesh,
        batch_axis=batch_axis,
        results=results,
        shard_state=shard_state,
    )
    valid_function = None
    if valid:  # one device: a validation batch need not split over a mesh
        valid_function = compile_step(inputs, [loss, *monitors.values()], mode=mode, results=results)
    return _Step(
        train,
        list(outputs),
        valid_function,
        ["loss", *monitors],
        list(built),
        time.perf_counter() - start,
        on_device=results == "device",
    )


# -- the loop ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """The keyword-only arguments of :func:`iterate` (and so :func:`minimize`), checked.

    One field per keyword-only parameter, in the order of the signature; the defaults are written
    once, in :func:`iterate`'s signature. Building one checks it (``__post_init__``), raising the
    error :func:`iterate` raises for a bad value, prefixed by ``who``.
    """

    who: InitVar[str]
    batch_size: int | None
    shuffle: bool
    seed: Any
    epoch_size: int | None
    max_epochs: int | None
    max_updates: int | None
    validate_every: int
    patience: int | None
    min_improvement: float
    tolerance: float | None
    monitors: Mapping[str, Variable] | None
    gradient_norm: bool
    restore_best: bool
    on_nonfinite: str
    callback: Callable[[Record], Any] | None
    progress: bool | None
    mode: Any
    mesh: Any
    batch_axis: str | None
    shard_state: bool

    def __post_init__(self, who: str) -> None:
        """Check the options, raising the errors ``who`` raises for bad values."""
        self._check_counts(who)
        self._check_numbers(who)
        self._check_choices(who)

    def _check_counts(self, who: str) -> None:
        for name in ("batch_size", "epoch_size", "max_epochs", "max_updates", "patience"):
            COUNT.or_none().check(who, name, getattr(self, name))
        COUNT.check(who, "validate_every", self.validate_every)
        if self.max_epochs is None and self.max_updates is None:
            raise ValueError(f"{who}: give max_epochs or max_updates (or both); both are None")

    def _check_numbers(self, who: str) -> None:
        Interval(0, 1).check(who, "min_improvement", self.min_improvement)
        Interval(0, optional=True).check(who, "tolerance", self.tolerance)

    def _check_choices(self, who: str) -> None:
        if self.on_nonfinite not in _NONFINITE:
            raise ValueError(f"{who}: on_nonfinite must be one of {_NONFINITE}, got {self.on_nonfinite!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"{who}: callback must be callable, got {describe(self.callback)}")


#: The most steps whose outputs the loop keeps unread on the device (JAX) before reading them.
_UNREAD_STEPS = 1024

_LINE_SECONDS = 30.0  # plain progress lines (output not a terminal): at most one per this many seconds


def _interactive() -> bool:
    """True if a live bar can be drawn: stderr is a terminal, or this runs in a Jupyter kernel."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def _import_tqdm(who: str, required: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if required:
            raise ImportError(
                f"{who}: progress=True needs tqdm; install it with pip install 'pytensor-updates[progress]'"
            ) from None
        return None
    return tqdm


def _values_text(values: Mapping[str, float]) -> str:
    return " ".join(f"{name} {value:.4g}" for name, value in values.items())


class _Quiet:
    """Shows nothing (``progress=False``); the base of the reporters that show something."""

    def step(self) -> None:
        """One training step was taken."""

    def record(self, record: Record, last: bool) -> None:
        """A validation gave ``record``; ``last`` if training stops after it."""

    def close(self) -> None:
        """Training ended, whatever the reason."""

    def summary(self, text: str) -> None:
        """Training ended by a stopping rule: ``text`` says how it went."""


class _Lines(_Quiet):
    """Plain lines on stderr, for a log file or a pipe (no carriage returns, nothing redrawn).

    One line for the first validation, one for the last, and in between one for a validation at
    most every ``_LINE_SECONDS`` seconds; then the summary.
    """

    def __init__(self, who: str, total_steps: int | None, max_epochs: int | None) -> None:
        self.who, self.total_steps, self.max_epochs = who, total_steps, max_epochs
        self.last_line: float | None = None

    def _write(self, text: str) -> None:
        print(f"{self.who}: {text}", file=sys.stderr, flush=True)

    def record(self, record: Record, last: bool) -> None:
        now = time.perf_counter()
        if not last and self.last_line is not None and now - self.last_line < _LINE_SECONDS:
            return
        self.last_line = now
        epochs = "" if self.max_epochs is None else f"/{self.max_epochs}"
        steps = "" if self.total_steps is None else f"/{self.total_steps}"
        parts = [f"epoch {record.epoch}{epochs}, step {record.step}{steps}, {_duration(record.seconds)}"]
        parts.append(f"train {_values_text(record.train)}")
        if record.valid:
            parts.append(f"valid {_values_text(record.valid)}")
        if record.skipped:
            parts.append(f"{record.skipped} skipped")
        self._write("; ".join(parts) + (" (best)" if record.best else ""))

    def summary(self, text: str) -> None:
        self._write(text)


class _Bar(_Lines):
    """A tqdm bar, left on screen at the end, then the summary line under it."""

    def __init__(self, tqdm: Callable, who: str, total_steps: int | None, max_epochs: int | None) -> None:
        super().__init__(who, total_steps, max_epochs)
        self.bar = tqdm(total=total_steps, desc=who, unit="step", leave=True)

    def step(self) -> None:
        self.bar.update(1)

    def record(self, record: Record, last: bool) -> None:
        postfix = {f"train_{k}": f"{v:.4g}" for k, v in record.train.items() if k == "loss"}
        postfix.update({f"valid_{k}": f"{v:.4g}" for k, v in record.valid.items() if k == "loss"})
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _reporter(who: str, progress: bool | None, total_steps: int | None, max_epochs: int | None) -> _Quiet:
    """What to show: nothing, a live bar (a terminal or a notebook), or plain lines (a log, a pipe)."""
    if progress is False:
        return _Quiet()
    tqdm = _import_tqdm(who, required=progress is True)
    if tqdm is not None and _interactive():
        return _Bar(tqdm, who, total_steps, max_epochs)
    return _Lines(who, total_steps, max_epochs)


class _Interval:
    """Sums over the steps since the last record.

    The steps' outputs are kept as they come (device arrays under JAX: nothing waits for them)
    and read by ``read`` when a total is asked for, or once ``_UNREAD_STEPS`` steps are kept
    (their arrays cost host memory), in step order: the sums are those of reading step by step.
    """

    def __init__(self, names: list[str], read: Callable[[Any], Any] = np.asarray) -> None:
        self.names, self.read = names, read
        self.sums = dict.fromkeys(names, 0.0)
        self.last: dict[str, float] = {}
        self.pending: list[tuple[list[Any], Any]] = []  # (values, finite) not read yet
        self.finite = self._skipped = self.timed = 0
        self.seconds = 0.0

    def add(self, values: list[Any], ok: Any, seconds: float | None) -> None:
        if seconds is not None:
            self.timed += 1
            self.seconds += seconds
        self.pending.append((values, ok))
        if len(self.pending) >= _UNREAD_STEPS:
            self._read_pending()

    def _read_pending(self) -> None:
        for values, ok in self.pending:
            if not self.read(ok):
                self._skipped += 1
                continue
            self.finite += 1
            self.last = {n: float(self.read(v)) for n, v in zip(self.names, values)}
            for name in self.names:
                self.sums[name] += self.last[name]
        self.pending.clear()

    @property
    def steps(self) -> int:
        return self.finite + self._skipped + len(self.pending)

    @property
    def skipped(self) -> int:
        self._read_pending()
        return self._skipped

    def means(self) -> dict[str, float]:
        self._read_pending()
        means = {n: (s / self.finite if self.finite else math.nan) for n, s in self.sums.items()}
        for name in ("learning_rate", "update_norm"):
            if name in means:
                means[name] = self.last.get(name, math.nan)
        return means


class _Feed:
    """The batches of one epoch (or one validation pass) for a step, one at a time.

    With ``place`` (a JAX step's ``prefetch``), :meth:`prefetch` draws the next batch and puts it
    on the device at once, while the step just started runs; iterating then gives it. An error
    drawing or placing that batch is raised when it is asked for, as without the lookahead.
    """

    def __init__(self, batches: Iterator[list[np.ndarray]], place: Callable[..., list] | None) -> None:
        self.batches, self.place = batches, place
        self.ahead: list | Exception | None = None

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> list:
        if self.ahead is None:
            self._draw()
        ahead, self.ahead = self.ahead, None
        if isinstance(ahead, Exception):  # StopIteration at the end
            raise ahead
        return ahead

    def prefetch(self) -> None:
        """Draw the next batch now and put it on the device (a no-op without ``place``)."""
        if self.place is not None and self.ahead is None:
            self._draw()

    def _draw(self) -> None:
        try:
            batch = next(self.batches)
            self.ahead = batch if self.place is None else self.place(*batch)
        except Exception as error:  # raised in turn by __next__
            self.ahead = error


class _Loop:
    """The state of one training run; :meth:`run` is the generator :func:`iterate` returns."""

    def __init__(self, who: str, step: _Step, train: _Data, valid: _Data | None, options: _Options) -> None:
        self.who, self.step, self.train, self.valid, self.options = who, step, train, valid, options
        self.history = History(compile_seconds=step.compile_seconds)
        self.best_score = math.inf
        self.best_values: list[np.ndarray] | None = None
        self.since_best = 0
        self.steps = self.epoch = 0
        self.call_seconds, self.timed_calls = 0.0, 0  # training calls but the first
        #: Whether every step's finiteness (and size) is read at once: a check needs it.
        self.checks_each_step = options.on_nonfinite != "skip" or options.tolerance is not None
        self.read = self._reader(step.train)
        self.previous: Any = None  # JAX: the finiteness output of the step before

    def _reader(self, function: Callable) -> Callable[[Any], Any]:
        """How to read the outputs of ``function`` on the host (JAX: from the device)."""
        return function._to_host if self.step.on_device else np.asarray

    def _feed(self, function: Callable, batches: Iterator[list[np.ndarray]]) -> _Feed:
        """``batches`` for ``function``, each put on the device ahead under JAX."""
        return _Feed(batches, function.prefetch if self.step.on_device else None)

    def _validate(self) -> dict[str, float]:
        """The validation monitors; under JAX a batch's outputs are read once the next batch is
        queued (the sums, in batch order, are those of reading each at once)."""
        if self.valid is None:
            return {}
        function, read = self.step.valid, self._reader(self.step.valid)
        sums, total, waiting = np.zeros(len(self.step.valid_names)), 0, []
        feed = self._feed(function, next(self.valid.passes()))
        for batch in feed:
            n = _batch_length(batch)
            tick = time.perf_counter()
            values = function(*batch)
            feed.prefetch()
            if math.isnan(self.history.first_valid_call_seconds):
                if self.step.on_device:  # the whole first call, run included
                    _wait(values)
                self.history.first_valid_call_seconds = time.perf_counter() - tick
            waiting.append((n, values if self.step.on_device else [float(v) for v in values]))
            if len(waiting) > 1:
                sums += _weighted(read, *waiting.pop(0))
            total += n
        for n, values in waiting:
            sums += _weighted(read, n, values)
        if total == 0:
            raise ValueError(f"{self.who}: valid is empty (it gave no batches)")
        return dict(zip(self.step.valid_names, (sums / total).tolist()))

    def _record(self, epoch: int, interval: _Interval, start: float) -> Record:
        train = interval.means()
        valid = self._validate()
        score = (valid or train)["loss"]
        margin = self.options.min_improvement * abs(self.best_score)
        best = math.isfinite(score) and (self.best_values is None or score < self.best_score - margin)
        if best:
            self.best_score, self.since_best = score, 0
            self.step.train.sync()
            self.best_values = [v.get_value(borrow=False) for v in self.step.variables]
        else:
            self.since_best += 1
        step_seconds = interval.seconds / interval.timed if interval.timed else math.nan
        seconds = self._training_seconds(start)
        record = Record(self.steps, epoch, seconds, train, valid, best, interval.skipped, step_seconds)
        self.history.records.append(record)
        if best:
            self.history.best = record
        return record

    def _training_seconds(self, start: float) -> float:
        """Wall time since ``start``, less the first calls (compilation under Numba or JAX)."""
        return time.perf_counter() - start - _first_calls(self.history)

    def _stop_after(self, record: Record, interval: _Interval) -> str:
        """Why to stop after this record (patience, callback, nothing but skipped steps), or ''."""
        callback, patience = self.options.callback, self.options.patience
        asked = callback is not None and callback(record) is True
        if interval.steps and interval.skipped == interval.steps:
            return f"every step since step {self.steps - interval.steps} had a non-finite loss or gradient"
        if patience is not None and self.since_best >= patience:
            return (
                f"no relative improvement of {self.options.min_improvement:g} in the last {patience} "
                f"validations (best at step {self.history.best.step if self.history.best else 0})"
            )
        if asked:
            return f"the callback asked to stop at step {self.steps}"
        return ""

    def _restore(self) -> None:
        self.step.train.sync()
        if self.options.restore_best and self.best_values is not None:
            for variable, value in zip(self.step.variables, self.best_values):
                variable.set_value(value, borrow=False)
            self.history.restored = True

    def _epoch(self, epoch: int) -> Iterator[list[np.ndarray]]:
        """The batches of one epoch: the rest of a pass, or ``epoch_size`` batches of the stream."""
        size = self.options.epoch_size
        taken = 0
        while size is None or taken < size:
            batch = next(self.batches, None)
            if batch is None:
                if taken > 0 and size is None:
                    return
                self.batches = next(self.passes)
                batch = next(self.batches, None)
                if batch is None:
                    self.ran_out = self._ran_out(epoch)
                    return
            if _batch_length(batch) % self.step.train.batch_multiple:
                continue  # a last smaller batch that does not split over the mesh
            taken += 1
            yield batch

    def _step(self, batch: list[Any], feed: _Feed, epoch: int, number: int, interval: _Interval) -> str:
        """Run one training step; return why to stop now (or '')."""
        self.steps += 1
        tick = time.perf_counter()
        try:
            *values, ok = self.step.train(*batch)
        except SkipBudgetError as error:  # that call applied nothing: stop as for any other reason
            return str(error).partition("\n")[0]
        if self.step.on_device:
            self._overlap(feed, ok)
        seconds = time.perf_counter() - tick
        if not self.step.on_device:  # read now: a later call may write over these outputs
            values, ok = [float(v) for v in values], bool(ok)
        if self.steps == 1:
            self.history.first_call_seconds, seconds = seconds, None
        else:
            self.call_seconds += seconds
            self.timed_calls += 1
        interval.add(values, ok, seconds)
        return self._check(values, ok, epoch, number)

    def _overlap(self, feed: _Feed, ok: Any) -> None:
        """JAX, the step queued: put the next batch on the device while it runs, then wait for
        this step if a check reads it now (or it is the first: timed whole), else for the step
        before (two at most in flight: a slow device does not pile up batches)."""
        max_updates = self.options.max_updates
        if max_updates is None or self.steps < max_updates:
            feed.prefetch()
        _wait([ok if self.checks_each_step or self.previous is None else self.previous])
        self.previous = ok

    def _check(self, values: list[Any], ok: Any, epoch: int, number: int) -> str:
        """Why to stop after this step (not finite, small enough, the last), or ''; reads only
        what a check needs from the device."""
        nonfinite, tolerance = self.options.on_nonfinite, self.options.tolerance
        finite = bool(self.read(ok)) if self.checks_each_step else None
        if nonfinite != "skip" and not finite:
            return self._nonfinite(float(self.read(values[0])), epoch, number)
        if tolerance is not None and finite and (size := float(self.read(values[-1]))) <= tolerance:
            return f"converged: step {self.steps} changed the params by {size:.3g} <= tolerance {tolerance:g}"
        max_updates = self.options.max_updates
        if max_updates is not None and self.steps >= max_updates:
            return f"reached max_updates={max_updates}"
        return ""

    def _nonfinite(self, loss: float, epoch: int, number: int) -> str:
        """Raise, or warn and return the reason to stop, for a non-finite step."""
        what = f"the loss was {loss}" if not math.isfinite(loss) else "a gradient was not finite"
        reason = f"{what} at step {self.steps} (epoch {epoch}, batch {number})"
        message = (
            f"{self.who}: {reason}; that step was not applied, the params and optimizer state keep "
            "their values from the step before. Lower the learning rate, check the data, or pass "
            "on_nonfinite='skip' to skip such steps"
        )
        self.history.stop_reason = reason
        if self.options.on_nonfinite == "raise":
            raise NonFiniteLossError(message, self.steps, epoch, loss, self.history)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        return reason

    def run(self) -> Iterator[Record]:
        report = _reporter(self.who, self.options.progress, self._total_steps(), self.options.max_epochs)
        start = time.perf_counter()
        interval, stop = _Interval(self.step.train_names, self.read), ""
        self.passes, self.batches, self.ran_out = self.train.passes(), iter(()), ""
        try:
            while not stop:
                self.epoch += 1
                feed = self._feed(self.step.train, self._epoch(self.epoch))
                for number, batch in enumerate(feed, 1):
                    stop = self._step(batch, feed, self.epoch, number, interval)
                    report.step()
                    if stop:
                        break
                stop = stop or self.ran_out or self._last_epoch(self.epoch)
                if interval.steps and (stop or self.epoch % self.options.validate_every == 0):
                    record = self._record(self.epoch, interval, start)
                    stop = stop or self._stop_after(record, interval)
                    interval = _Interval(self.step.train_names, self.read)
                    report.record(record, last=bool(stop))
                    yield record
        except GeneratorExit:
            self.history.stop_reason = f"the caller stopped iterating at step {self.steps}"
            self._restore()
            raise
        finally:
            self.step.train.sync()  # JAX: the params and state back from the device, whatever happened
            report.close()
        self.history.stop_reason = stop
        self._restore()
        report.summary(self._summary(self._training_seconds(start)))
        return self.history

    def _summary(self, seconds: float) -> str:
        """One line on the whole run: steps, time, the best loss, the start-up cost, why it stopped."""
        history = self.history
        per_step = self.call_seconds / self.timed_calls if self.timed_calls else math.nan
        skipped = sum(r.skipped for r in history)
        parts = [
            f"{_count(self.steps, 'step')} ({_count(self.epoch, 'epoch')}"
            f"{f', {skipped} skipped' if skipped else ''}) "
            f"in {_duration(seconds)}, {_duration(per_step)}/step",
            "no finite loss"
            if history.best is None
            else f"best {_loss_text(history.best)} at {_when(history.best)}"
            + (", restored" if history.restored else ""),
            f"compile {_duration(history.compile_seconds)} + first calls {_duration(_first_calls(history))}",
            f"stopped: {history.stop_reason}",
        ]
        return "; ".join(parts)

    def _last_epoch(self, epoch: int) -> str:
        """Why to stop after ``epoch`` if it is the last of ``max_epochs``, or ''."""
        max_epochs = self.options.max_epochs
        return f"reached max_epochs={max_epochs}" if max_epochs is not None and epoch >= max_epochs else ""

    def _ran_out(self, epoch: int) -> str:
        if self.steps == 0:
            raise ValueError(f"{self.who}: train is empty (it gave no batches)")
        return f"the training data ran out in epoch {epoch} (a pass gave no batches)"

    def _total_steps(self) -> int | None:
        per_epoch = self.options.epoch_size or self.train.batches_per_pass
        max_epochs = self.options.max_epochs
        totals = [self.options.max_updates]
        if per_epoch is not None and max_epochs is not None:
            totals.append(per_epoch * max_epochs)
        totals = [t for t in totals if t is not None]
        return min(totals) if totals else None


# -- the public functions ------------------------------------------------------------------------------

_DATA_DOC = """\
loss : scalar TensorVariable
        The training objective, a function of ``params`` and ``inputs``.
    params : list of shared variables
        The parameters to train. May be None when ``optimizer`` is an :class:`Updates` (its
        ``.params`` are used).
    inputs : list of TensorVariable
        The symbolic inputs of ``loss``, in the order of the arrays in each batch.
    train : sequence of arrays, iterable of batches, or callable
        The training data. A sequence of arrays (one per input, a single array for a single
        input) is cut into batches of ``batch_size`` rows along the first axis, reshuffled at
        every pass when ``shuffle`` is true; the last, shorter batch is used. Otherwise, an
        iterable of batches (each a sequence of arrays, one per input) iterated once per pass,
        or a callable returning such an iterable, called at every pass. Arrays are cast to the
        inputs' dtypes (same kind only: float64 to float32, int64 to int32).
    optimizer : rule awaiting (loss_or_grads, params), or dict of updates
        A rule called with its hyperparameters only, e.g. ``updates.adam(learning_rate=1e-3)``
        (it is applied to the gradients of ``loss``), or updates already built, e.g. by
        ``updates.adam(loss, params)`` (an ``Updates``: keep it to inspect or save the optimizer
        state). The gradients are computed once: the rule, the gradient norm and the guard
        against non-finite steps share them (PyTensor merges identical graphs).
    valid : same forms as ``train``, optional
        Validation data, evaluated whole (in batches of ``batch_size``, never shuffled) at every
        validation. Without it, best and patience follow the mean training loss since the last
        validation.
    batch_size : int or None
        Rows per mini-batch for array data; None for the whole data set in one batch. Default 32.
    shuffle : bool
        Reshuffle array data at every pass. Default True.
    seed : int or numpy.random.Generator
        Seeds the shuffling: the same seed gives the same batches. Default 0.
    epoch_size : int or None
        Batches that make one epoch; None for one pass over the data (default). With a number,
        epochs cut a continuous stream of batches (a new pass starts when one ends), which lets
        an endless iterable of batches be validated regularly.
    max_epochs : int or None
        Stop after this many epochs. Default 100.
    max_updates : int or None
        Stop after this many training steps (possibly mid-epoch). Default None.
    validate_every : int
        Validate (and yield a record) every this many epochs, and always at the end. Default 1.
    patience : int or None
        Stop after this many validations in a row without a relative improvement of
        ``min_improvement`` over the best score; None never stops early (default).
    min_improvement : float
        A validation improves when ``score < best - min_improvement * |best|``. Default 0.
    tolerance : float or None
        Stop when one finite step changes the params by at most this much (the Euclidean norm
        of the change over all params, reported as ``update_norm``). Default None.
    monitors : dict of str to scalar TensorVariable, optional
        More expressions evaluated with the loss on every batch (e.g. an accuracy), reported in
        the training and validation monitors under their names.
    gradient_norm : bool
        Report the gradients' joint Euclidean norm as the training monitor ``grad_norm``. Default
        False.
    restore_best : bool
        At the end, set the params and the optimizer state back to their values at the best
        validation (so training can resume consistently from there). Default True.
    on_nonfinite : {'raise', 'stop', 'skip'}
        When a step's loss or gradient is not finite (the step is then never applied): raise
        :class:`NonFiniteLossError` naming the step ('raise', default, params left at the last
        finite step, best not restored); warn and stop as any other stop ('stop'); or skip the
        step and go on ('skip', counted in ``Record.skipped``; training stops if every step
        between two validations is skipped).
    callback : callable, optional
        Called with each :class:`Record`; returning True stops training.
    progress : bool or None
        Progress output on stderr. None (default): on. Where stderr is a terminal (or in a
        Jupyter notebook) and tqdm is installed (the ``progress`` extra), a live bar, left on
        screen at the end; elsewhere (a log file, a pipe, or no tqdm) plain lines, never redrawn:
        one for the first validation, one for the last, and between them one for a validation
        at most every 30 seconds (``epoch 3/30, step 12/120, 4.1 ms; train loss 0.123; valid
        loss 0.234 (best)``). Either way, a run that ends by a stopping rule (not by an error,
        nor by breaking out of :func:`iterate`) ends with one summary line: the steps and
        epochs, the training time and the mean time of a step, the best loss with its step and
        epoch, the compile time and the first calls' time, and why it stopped. True: the same,
        but tqdm is required (ImportError without it). False: nothing is printed (for scripts
        and tests).
    mode : str or Mode, optional
        The PyTensor mode both functions are compiled with (default: PyTensor's default).
        With ``"JAX"`` the params and optimizer state stay on the device during training
        (:func:`compile_step`) and are written back into the shared variables at each new best
        validation and at the end. So do the loss and the monitors until a record reads them:
        a step is waited for only where a check needs it at once (its finiteness, unless
        ``on_nonfinite='skip'``; its size, with ``tolerance``), and otherwise at most two steps
        are queued. The next batch of an epoch goes to the device while a step runs (it is
        drawn from ``train`` then, so a run stopped by a step's values has drawn one batch
        more).
    mesh : jax.sharding.Mesh or list of devices, optional
        With ``mode="JAX"``, train data-parallel over these devices (see :func:`compile_step`):
        ``batch_size`` must be a multiple of their number; a last smaller batch of a pass that
        does not split over them is left out. Validation runs on one device.
    batch_axis : str, optional
        With a ``mesh`` of several axes, the axis the batch is split along (see
        :func:`compile_step`); a one-axis mesh needs none.
    shard_state : bool
        With a ``mesh``: split the optimizer state over its devices instead of replicating it
        (ZeRO stage 1, see :func:`compile_step`); the same training.\
"""

_NOTES = """\
    The training function returns the loss and the monitors and applies the updates in one
    call; every update is guarded on the finiteness of the loss and the gradients, so a
    non-finite step changes no params, no optimizer state and no step counter. A rule given as
    ``updates.adam(...)`` (awaiting its gradients) is built with the guard inside its node
    (``updates.engine.gated``), which keeps the step in place; updates given ready-built, and
    the step counters, are guarded by ``switch(finite, new, old)``, which reads the old values
    after the step and so costs a copy of what it guards.

    Compilation happens when this function is called (``History.compile_seconds``); under
    PyTensor's Numba linker, or JAX, the first call of each compiled function also compiles
    (``History.first_call_seconds``, ``History.first_valid_call_seconds``). Neither counts in
    the records' ``seconds``, which are the training time.\
"""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _documented(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Fill in ``$data`` (the parameters) and ``$notes`` in ``function``'s docstring."""
    function.__doc__ = (function.__doc__ or "").replace("$data", _DATA_DOC).replace("    $notes", _NOTES)
    return function


def _same_parameters_as(source: Callable[_P, Any]) -> Callable[[Callable[..., _R]], Callable[_P, _R]]:
    """Give the decorated ``function(*args, **kwargs)`` the parameters of ``source``.

    ``inspect.signature`` (so the docs) and type checkers (through ``ParamSpec``) show it with
    ``source``'s parameters and its own return annotation, and a call that does not fit them
    raises the ``TypeError`` Python would raise, naming ``function``; ``function`` should pass
    its arguments on to ``source``.
    """

    def decorate(function: Callable[..., _R]) -> Callable[_P, _R]:
        returns = inspect.signature(function).return_annotation
        signature = inspect.signature(source).replace(return_annotation=returns)

        @functools.wraps(function)
        def bound(*args: Any, **kwargs: Any) -> _R:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{function.__name__}() {error}") from None
            return function(*args, **kwargs)

        bound.__signature__ = signature  # type: ignore[attr-defined]
        return bound

    return decorate


@checks_keywords
@_documented
def iterate(
    loss: Variable,
    params: Sequence[SharedVariable] | None,
    inputs: Sequence[Variable],
    train: Any,
    optimizer: Any,
    valid: Any = None,
    *,
    batch_size: int | None = 32,
    shuffle: bool = True,
    seed: Any = 0,
    epoch_size: int | None = None,
    max_epochs: int | None = 100,
    max_updates: int | None = None,
    validate_every: int = 1,
    patience: int | None = None,
    min_improvement: float = 0.0,
    tolerance: float | None = None,
    monitors: Mapping[str, Variable] | None = None,
    gradient_norm: bool = False,
    restore_best: bool = True,
    on_nonfinite: str = "raise",
    callback: Callable[[Record], Any] | None = None,
    progress: bool | None = None,
    mode: Any = None,
    mesh: Any = None,
    batch_axis: str | None = None,
    shard_state: bool = False,
) -> Iterator[Record]:
    """Train step by step, yielding a :class:`Record` at every validation.

    Everything is checked and both functions are compiled when ``iterate`` is called; the
    returned generator trains as it is iterated. Breaking out of the loop (or closing the
    generator) ends training like a stopping rule: the best params are restored if
    ``restore_best``. When the generator finishes, its return value (``StopIteration.value``)
    is the :class:`History`.

    Parameters
    ----------
    $data

    Yields
    ------
    Record
        The training and validation monitors at each validation.

    Raises
    ------
    TypeError, ValueError
        For bad arguments or data (empty data included), when called or at the first batch.
    NonFiniteLossError
        With ``on_nonfinite='raise'``, at the first non-finite step.

    Notes
    -----
    $notes

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> x = pt.matrix("x")
    >>> loss = ((x @ w - 1.0) ** 2).mean()
    >>> data = np.random.default_rng(0).normal(size=(40, 2))
    >>> run = updates.iterate(loss, [w], [x], [data], updates.sgd(learning_rate=0.1),
    ...                       batch_size=10, max_epochs=3, progress=False, mode="FAST_COMPILE")
    >>> [(record.step, record.epoch) for record in run]
    [(4, 1), (8, 2), (12, 3)]
    """
    options = _Options(
        "iterate",
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch_size=epoch_size,
        max_epochs=max_epochs,
        max_updates=max_updates,
        validate_every=validate_every,
        patience=patience,
        min_improvement=min_improvement,
        tolerance=tolerance,
        monitors=monitors,
        gradient_norm=gradient_norm,
        restore_best=restore_best,
        on_nonfinite=on_nonfinite,
        callback=callback,
        progress=progress,
        mode=mode,
        mesh=mesh,
        batch_axis=batch_axis,
        shard_state=shard_state,
    )
    return _start("iterate", loss, params, inputs, train, optimizer, valid, options)


def _start(who: str, loss, params, inputs, train, optimizer, valid, options: _Options) -> Iterator[Record]:
    """Check the data, compile, and return the training generator; errors and output name ``who``."""
    inputs = _check_inputs(who, inputs)
    batch_size, shuffle, seed = options.batch_size, options.shuffle, options.seed
    train_data = _Data(who, "train", train, inputs, batch_size, shuffle, seed)
    valid_data = None if valid is None else _Data(who, "valid", valid, inputs, batch_size, False, None)
    monitors = _check_monitors(who, options.monitors)
    extras = (
        options.gradient_norm,
        options.tolerance,
        valid_data,
        options.mode,
        options.mesh,
        options.batch_axis,
        options.shard_state,
    )
    step = _compile(who, loss, params, inputs, optimizer, monitors, *extras)
    multiple = step.train.batch_multiple
    if multiple > 1 and train_data.arrays is not None and train_data.batch_size % multiple:
        raise ValueError(
            f"{who}: batch_size={train_data.batch_size} does not split over the mesh's batch axis "
            f"({multiple} parts on this process); give a multiple of {multiple}"
        )
    return _Loop(who, step, train_data, valid_data, options).run()


@checks_keywords
@_same_parameters_as(iterate)
@_documented
def minimize(*args: Any, **kwargs: Any) -> History:
    """Train until a stopping rule says stop, and return the :class:`History`.

    Runs :func:`iterate` to the end, with the same arguments (its signature is iterate's), and
    returns the :class:`History` the run ends with. Training stops at
    ``max_epochs`` or ``max_updates``, after ``patience`` validations without improvement,
    when a step is smaller than ``tolerance``, when ``callback`` returns True, at a
    non-finite step (see ``on_nonfinite``), or when the compiled step raises
    :class:`SkipBudgetError` (an optimizer wrapped in :func:`apply_if_finite` with a ``budget``
    skipped that many steps in a row; its message is the stop reason). Then, unless
    ``restore_best=False``, the params and optimizer state are set back to the best validation's.

    Parameters
    ----------
    $data

    Returns
    -------
    History
        The records (``history.train["loss"]``, ``history.valid["loss"]`` as arrays), the best
        record, whether it was restored, and why training stopped.

    Raises
    ------
    TypeError, ValueError
        For bad arguments or data (empty data included).
    NonFiniteLossError
        With ``on_nonfinite='raise'``, at the first non-finite step; its ``history`` attribute
        holds the records so far, and the params keep their last finite values.

    Notes
    -----
    $notes

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> x, y = pt.matrix("x"), pt.vector("y")
    >>> loss = ((x @ w - y) ** 2).mean()
    >>> data = np.random.default_rng(0).normal(size=(80, 2))
    >>> target = data @ [2.0, -1.0]
    >>> history = updates.minimize(
    ...     loss, [w], [x, y], [data[:64], target[:64]], updates.sgd(learning_rate=0.1),
    ...     valid=[data[64:], target[64:]], batch_size=16, max_epochs=30, progress=False,
    ...     mode="FAST_COMPILE")
    >>> history.stop_reason, len(history), bool(history.valid["loss"][-1] < 1e-8)
    ('reached max_epochs=30', 30, True)
    >>> np.round(w.get_value(), 6)
    array([ 2., -1.])
    """
    arguments = inspect.signature(iterate).bind(*args, **kwargs)
    arguments.apply_defaults()
    given = arguments.arguments
    options = _Options("minimize", **{f.name: given[f.name] for f in fields(_Options)})
    positional = (given[name] for name in ("loss", "params", "inputs", "train", "optimizer", "valid"))
    run = _start("minimize", *positional, options)
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value
