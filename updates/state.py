"""Optimizer state: inspect it, save it to a checkpoint, load it back, reset it.

The state of an :class:`~updates.Updates` is its shared variables other than the params: a rule's
slots (Adam's moments), the step counters, a wrapper's velocities. Each piece is named after its
param and its role (``W.adam.m``), whether it lives in a variable of its own (the per-parameter
path) or in a flat buffer shared by every param of a dtype (the default, multi-tensor path): the
functions here work by those names, so a checkpoint reads the same whichever path built the graph.

A checkpoint is one ``.npz`` file (a zip of ``.npy`` arrays, readable with ``numpy.load``)::

    __format__        the format version (1)
    __config__        json.dumps(updates.config): the rules and wrappers, outermost last
    state/<name>      one array per piece of state, e.g. state/W.adam.m, state/adam.t
    param/<name>      the params, by name, if saved with params=True
    live/<name>       the value of each live hyperparameter (a shared scalar of yours, e.g. from
                      live()), by its name in Updates.hyperparameters, e.g. live/learning_rate,
                      live/apply_momentum.momentum; only when there are such (optional: files
                      without them load as before)

Shared variables the updates do not own are not part of the state: a live hyperparameter's
value is recorded, and :func:`load_state` compares it with yours (and sets it back to the
recorded one only when asked, ``hyperparameters="restore"``); the rest of the model (data
pipelines, shared variables of your own that are not hyperparameters) is yours to save.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from updates.atomic import write_atomically
from updates.checks import describe, label
from updates.container import Updates, current_values
from updates.layout import state_record
from updates.public import checks_keywords
from updates.sync import sync_variables

__all__ = [
    "HyperparameterWarning",
    "StateEntry",
    "StateSummary",
    "inspect_state",
    "load_state",
    "reset_state",
    "save_state",
]

FORMAT_VERSION = 1
_FORMAT, _CONFIG, _STATE, _PARAM, _LIVE = "__format__", "__config__", "state/", "param/", "live/"
#: The choices of ``load_state(..., hyperparameters=...)``.
_HYPERPARAMETER_CHOICES = ("warn", "error", "restore", "ignore")


# Hyperparameters are scalar graphs: the Python linker evaluates them without compiling C or Numba.


class HyperparameterWarning(UserWarning):
    """A checkpoint was loaded (:func:`~updates.load_state`) with other hyperparameter values than saved.

    The message names each one (with its rule or wrapper) and both values. Turn it into an
    error with ``load_state(..., hyperparameters="error")``, or with the ``warnings`` module.
    """


@dataclass(frozen=True)
class StateEntry:
    """One named piece of optimizer state and where it lives.

    Attributes
    ----------
    name : str
        Its name, ``<param>.<rule or wrapper>.<slot>`` (``W.adam.m``) or, for state that belongs
        to no param, the variable's own name (``adam.t``).
    shape : tuple of int
        Its shape (the param's shape, for per-parameter state).
    dtype : str
        Its dtype.
    param : shared variable or None
        The param it belongs to; None for a step counter or a schedule's own state.
    variable : shared variable
        The shared variable holding it: its own, or a flat buffer shared with other params.
    offset : int
        Where it starts in the raveled ``variable`` (0 when the variable holds it whole).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    param: Variable | None
    variable: Variable
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def value(self) -> np.ndarray:
        """A copy of its current value."""
        return self.view().copy()

    def view(self) -> np.ndarray:
        """Its current value, without a copy (a view into the variable's storage)."""
        flat = self.variable.get_value(borrow=True).reshape(-1)
        return flat[self.offset : self.offset + self.size].reshape(self.shape)


class StateSummary(list):
    """Every :class:`~updates.state.StateEntry` of the state, in order, and what the next step will use.

    Attributes
    ----------
    steps : dict of str to int
        The value of each step counter (``{"adam.t": 12}``): the number of steps taken.
    scalars : dict of str to int or float
        The value of every 0-d piece of state, by name, when the summary was made: the step
        counters, the other counters (``apply_if_finite.skipped``, the steps skipped), carried
        scalars (``nadam.mu_product``), a schedule's state, and the slots of 0-d params. The
        table shows them in its ``value`` column.
    hyperparameters : dict of str to float or None
        The value of each hyperparameter at the next step, by name (a schedule's value at the
        current step); None for one that depends on an input of the compiled function.
    """

    def __init__(
        self,
        entries: Iterable[StateEntry],
        steps: dict,
        hyperparameters: dict,
        scalars: dict | None = None,
    ) -> None:
        super().__init__(entries)
        self.steps: dict[str, int] = dict(steps)
        self.hyperparameters: dict[str, float | int | None] = dict(hyperparameters)
        if scalars is None:
            scalars = {e.name: e.view().item() for e in self if e.shape == ()}
        self.scalars: dict[str, float | int] = dict(scalars)

    def __str__(self) -> str:
        header = ("name", "param", "shape", "dtype", "variable", "offset", "value")
        rows = [
            (
                e.name,
                "-" if e.param is None else str(e.param.name),
                str(e.shape),
                e.dtype,
                str(e.variable.name),
                str(e.offset),
                _format_value(self.scalars[e.name]) if e.name in self.scalars else "",
            )
            for e in self
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
        steps = ", ".join(f"{name} = {value}" for name, value in self.steps.items())
        lines.append(f"steps: {steps or '-'}")
        hyper = ", ".join(f"{name} = {_format_value(v)}" for name, v in self.hyperparameters.items())
        lines.append(f"hyperparameters: {hyper or '-'}")
        return "\n".join(lines)


def _format_value(value: Any) -> str:
    if value is None:
        return "(needs inputs)"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# -- where the state lives -------------------------------------------------------------------------


def _check_and_sync(who: str, updates: Any) -> None:
    """Refuse anything but an Updates; bring back the values a JAX step holds on its device."""
    if not isinstance(updates, Updates):
        raise TypeError(
            f"{who}: updates must be an Updates (the result of a rule or wrapper), got {describe(updates)}"
        )
    sync_variables([*updates.params, *updates.state])


def _entries(updates: Updates) -> list[StateEntry]:
    """Every named piece of state, in order (as ``Updates.state_layout``, keeping duplicates)."""
    owners = _owner_finder(updates.params)
    entries = []
    for variable, piece in updates.state_pieces():
        owner = owners(piece.name) if piece.name is not None else None
        dtype = str(variable.get_value(borrow=True).dtype)
        entries.append(StateEntry(piece.name, tuple(piece.shape), dtype, owner, variable, int(piece.start)))
    return entries


def _owner_finder(params: tuple[Variable, ...]):
    """``owner(name)``: the param a state name belongs to, by the naming ``<param>.<role>.<slot>``.

    The longest param name that prefixes ``name`` wins (``layer1.W.adam.m`` is ``layer1.W``'s
    even if a param is called ``layer1``); what follows it must be ``<role>.<slot>``, so the step
    counter ``adam.t`` belongs to no param even if one is called ``adam``. A name shared by
    several params belongs to none of them (their state names collide).
    """
    by_label: dict[str, list[Variable]] = {}
    for i, param in enumerate(params):
        by_label.setdefault(label(param, i), []).append(param)

    def owner(name: str) -> Variable | None:
        found = [lbl for lbl in by_label if name.startswith(lbl + ".") and "." in name[len(lbl) + 1 :]]
        if not found:
            return None
        candidates = by_label[max(found, key=len)]
        return candidates[0] if len(candidates) == 1 else None

    return owner


def _named(who: str, entries: list[StateEntry]) -> dict[str, StateEntry]:
    """The entries by name; refuse unnamed or duplicate names (a checkpoint is keyed by name)."""
    named: dict[str, StateEntry] = {}
    for entry in entries:
        if entry.name is None:
            raise ValueError(
                f"{who}: a piece of state ({entry.variable.type}) has no name, so it cannot be saved "
                "or loaded by name; give its shared variable a name"
            )
        if entry.name in named:
            raise ValueError(
                f"{who}: two pieces of state are named {entry.name!r} (two params with the same name?); "
                "give every param a distinct name"
            )
        named[entry.name] = entry
    return named


def _named_params(who: str, params: tuple[Variable, ...]) -> dict[str, Variable]:
    named: dict[str, Variable] = {}
    for i, param in enumerate(params):
        if not param.name:
            raise ValueError(
                f"{who}: params[{i}] has no name, and params are saved and loaded by name; "
                "name it, e.g. pytensor.shared(value, name='W')"
            )
        if param.name in named:
            first = next(j for j, p in enumerate(params) if p.name == param.name)
            raise ValueError(
                f"{who}: params[{first}] and params[{i}] are both named {param.name!r}; "
                "params are saved and loaded by name, give each a distinct name"
            )
        named[param.name] = param
    return named


# -- inspect ---------------------------------------------------------------------------------------


@checks_keywords
def inspect_state(updates: Updates) -> StateSummary:
    """List the optimizer state of ``updates``, the step counts and the current hyperparameters.

    Parameters
    ----------
    updates : Updates
        The result of a rule or wrapper.

    Returns
    -------
    StateSummary
        A list of :class:`~updates.state.StateEntry` (name, shape, dtype, param, variable, offset), one per
        piece of state in the order of the updates, with ``.steps`` (each step counter's value),
        ``.scalars`` (the value of every 0-d piece of state: counters, carried scalars) and
        ``.hyperparameters`` (each hyperparameter's value at the next step, evaluated now).
        ``str()`` of it is a small table, with the value of each 0-d piece.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.zeros(3), name="w")
    >>> b = pytensor.shared(np.zeros((2, 2)), name="b")
    >>> print(updates.inspect_state(updates.adam(((w - 1) ** 2).sum() + (b**2).sum(), [w, b])))
    name      param  shape   dtype    variable  offset  value
    w.adam.m  w      (3,)    float64  adam.m    0
    b.adam.m  b      (2, 2)  float64  adam.m    3
    w.adam.v  w      (3,)    float64  adam.v    0
    b.adam.v  b      (2, 2)  float64  adam.v    3
    adam.t    -      ()      int64    adam.t    0       0
    steps: adam.t = 0
    hyperparameters: learning_rate = 0.001, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-08
    """
    _check_and_sync("inspect_state", updates)
    entries = _entries(updates)
    steps = {e.name: int(e.value) for e in entries if state_record(e.variable).counts_steps}
    return StateSummary(entries, steps, current_values(updates.hyperparameters))


# -- save ------------------------------------------------------------------------------------------


@checks_keywords
def save_state(path: str | os.PathLike, updates: Updates, params: bool = False) -> None:
    """Write the optimizer state of ``updates`` (and, if asked, the params) to one ``.npz`` file.

    The file holds a format version, the configuration of the rules and wrappers
    (``updates.config``, as JSON), every piece of state under its per-parameter name
    (``state/W.adam.m``, ``state/adam.t``), with ``params=True`` every param under its own
    name (``param/W``), and the current value of each live hyperparameter (a shared scalar such
    as :func:`~updates.live` makes) under its name in ``updates.hyperparameters``
    (``live/learning_rate``), for :func:`load_state` to compare or restore. It does not depend
    on how the graph was built (per parameter or in flat buffers): :func:`load_state` reads it
    into either.

    The write is atomic: the file is written to a temporary file in the same directory
    (``.<name>.<pid>.<random>.tmp``), flushed to disk, then renamed over ``path``. An interrupted
    save leaves the previous checkpoint at ``path`` as it was, and no temporary file behind. A
    save killed outright (SIGKILL, a power cut) cannot remove its temporary file: the next save
    to the same ``path`` does, once the process that wrote it (its ``pid``) is gone (on Windows,
    only one this process wrote). It never removes another file, the temporary file of another
    path, or that of a save still running.

    Parameters
    ----------
    path : str or path-like
        Where to write, used as given (no suffix is added; ``.npz`` is the custom). An existing
        file there is replaced, atomically.
    updates : Updates
        The result of a rule or wrapper (after any number of steps).
    params : bool
        Also save the params, by name. Default False. Every param must then have a name of
        its own.

    Raises
    ------
    ValueError
        If a piece of state has no name, two share one, or (``params=True``) a param has no
        name or shares it with another.

    Examples
    --------
    >>> import os, tempfile, numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> adam = updates.adam((w**2).sum(), [w])
    >>> path = os.path.join(tempfile.mkdtemp(), "optimizer.npz")
    >>> updates.save_state(path, adam, params=True)
    >>> sorted(np.load(path))
    ['__config__', '__format__', 'param/w', 'state/adam.t', 'state/w.adam.m', 'state/w.adam.v']
    """
    _check_and_sync("save_state", updates)
    arrays: dict[str, np.ndarray] = {
        _FORMAT: np.asarray(FORMAT_VERSION, dtype=np.int64),
        _CONFIG: np.asarray(json.dumps(updates.config, default=str)),
    }
    named = _named_params("save_state", updates.params) if params else {}
    for name, entry in _named("save_state", _entries(updates)).items():
        arrays[_STATE + name] = entry.view()
    for name, param in named.items():
        arrays[_PARAM + name] = param.get_value(borrow=True)
    for name, variable in _live(updates).items():
        arrays[_LIVE + name] = np.asarray(variable.get_value(borrow=True))
    write_atomically(os.fspath(path), lambda file: _write_npz(file, arrays), who="save_state")


def _write_npz(file, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez`` writes (a zip of ``<key>.npy`` members), without pickles."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


# -- load ------------------------------------------------------------------------------------------


@checks_keywords
def load_state(
    path: str | os.PathLike, updates: Updates, params: bool = False, hyperparameters: str = "warn"
) -> None:
    """Read a checkpoint written by :func:`save_state` into ``updates``'s state (and params).

    Everything is checked before anything is written, and a mismatch writes nothing: the format
    version; the rules and wrappers, in order (by name); that the file holds exactly the pieces
    of state the updates have, by name (none unknown, none missing); their shapes and dtypes;
    and, with ``params=True``, the same for the params. Then each variable is set once (a flat
    buffer is rebuilt whole from its pieces, then set).

    The hyperparameter values may differ (to resume with a new learning rate, say): each one
    the file was saved with (its ``__config__``, and the recorded value of a live one) is
    compared with the updates', and ``hyperparameters`` says what a difference does.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_state`.
    updates : Updates
        The updates of the same rules and wrappers over params of the same names, shapes and
        dtypes, typically built afresh in a new process. Per-parameter and multi-tensor graphs
        read the same files.
    params : bool
        Also load the params, by name (the file must hold them). Default False: the params are
        left as they are.
    hyperparameters : {"warn", "error", "restore", "ignore"}
        What to do when a hyperparameter's value in the file differs from the updates' (the
        message names each, with its rule or wrapper, and both values):

        - ``"warn"`` (default): load, keep the updates' values, and warn
          (:class:`~updates.state.HyperparameterWarning`);
        - ``"error"``: refuse the file (a ``ValueError``), loading nothing;
        - ``"restore"``: load, and set each live hyperparameter of the updates (a shared scalar,
          e.g. from :func:`~updates.live`) to the file's value: the value recorded for a live one,
          or the number the file was saved with. A number or schedule fixed in the graph cannot
          be changed: those differences are warned about, as is a live hyperparameter whose value
          the file does not record (files of older versions record none);
        - ``"ignore"``: load, keep the updates' values, say nothing.

        A live hyperparameter's value is compared only when the file records it.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path`` (the message starts with ``load_state:`` and names it).
    ValueError
        If the file is not a readable checkpoint (corrupted, truncated, not written by
        :func:`save_state`, or of another format version), or it does not match ``updates``,
        or (``hyperparameters="error"``) a hyperparameter differs; the message names the file
        and the offending entries. Also if ``hyperparameters`` is not one of the four choices.

    Warns
    -----
    HyperparameterWarning
        With ``hyperparameters="warn"``, when a hyperparameter differs; with ``"restore"``, when
        one that differs cannot be restored.

    Examples
    --------
    >>> import os, tempfile, numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> adam = updates.adam((w**2).sum(), [w])
    >>> step = pytensor.function([], [], updates=adam)
    >>> for _ in range(3):
    ...     _ = step()
    >>> path = os.path.join(tempfile.mkdtemp(), "optimizer.npz")
    >>> updates.save_state(path, adam)
    >>> updates.reset_state(adam)
    >>> updates.inspect_state(adam).steps
    {'adam.t': 0}
    >>> updates.load_state(path, adam)
    >>> updates.inspect_state(adam).steps
    {'adam.t': 3}

    A live learning rate changed after the save is set back to the saved value on request:

    >>> lr = updates.live(0.01, name="lr")
    >>> sgd = updates.sgd((w**2).sum(), [w], learning_rate=lr)
    >>> updates.save_state(path, sgd)
    >>> lr.set_value(0.5)
    >>> updates.load_state(path, sgd, hyperparameters="restore")
    >>> float(lr.get_value())
    0.01
    """
    _check_and_sync("load_state", updates)
    _check_choice(hyperparameters)
    _assign(_validated(os.fspath(path), updates, params, hyperparameters))


def _check_choice(hyperparameters: Any) -> None:
    if not isinstance(hyperparameters, str):
        raise TypeError(
            f"load_state: hyperparameters must be one of {_show_choices()}, got {describe(hyperparameters)}"
        )
    if hyperparameters not in _HYPERPARAMETER_CHOICES:
        raise ValueError(
            f"load_state: hyperparameters must be one of {_show_choices()}, got {hyperparameters!r}"
        )


def _show_choices() -> str:
    return ", ".join(repr(choice) for choice in _HYPERPARAMETER_CHOICES)


def _validated(
    path: str, updates: Updates, params: bool, hyperparameters: str = "warn"
) -> list[tuple[Variable, np.ndarray]]:
    """Check the checkpoint at ``path`` against ``updates``; assign nothing.

    Parameters
    ----------
    path : str
        The checkpoint.
    updates : Updates
        What it is to be loaded into.
    params : bool
        Whether the params are to be loaded too.
    hyperparameters : str
        What a differing hyperparameter does, as :func:`load_state`'s argument (warned here).

    Returns
    -------
    list of (shared variable, ndarray)
        Every variable to set and its new value, each variable once (a flat buffer rebuilt whole
        from its pieces), the state first, then the params, then (``"restore"``) the live
        hyperparameters.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_state`, with the same messages.
    """
    named = _named_params("load_state", updates.params) if params else {}
    entries = _named("load_state", _entries(updates))
    contents = _read(path)
    where = f"load_state: {path}"
    saved_config = _check_header(where, contents, updates)
    saved_state = {k[len(_STATE) :]: v for k, v in contents.items() if k.startswith(_STATE)}
    saved_params = {k[len(_PARAM) :]: v for k, v in contents.items() if k.startswith(_PARAM)}
    saved_live = {k[len(_LIVE) :]: v for k, v in contents.items() if k.startswith(_LIVE)}
    others = [k for k in contents if not k.startswith((_STATE, _PARAM, _LIVE))]
    problems = [f"unknown entry {k!r}" for k in others]
    problems += _compare("state", saved_state, {n: (e.shape, e.dtype) for n, e in entries.items()})
    if params:
        problems += _compare_params(saved_params, named)
    problems += [
        f"live {name!r} is not a real scalar ({value.dtype}, shape {value.shape})"
        for name, value in saved_live.items()
        if value.shape != () or value.dtype.kind not in "iuf"
    ]
    if problems:
        raise ValueError(f"{where} does not match the updates: {_join(problems)}; nothing was loaded")
    restored = _checked_hyperparameters(where, saved_config, saved_live, updates, hyperparameters)
    assignments = _rebuilt(entries, saved_state)
    return assignments + [(param, saved_params[name]) for name, param in named.items()] + restored


def _check_header(where: str, contents: dict[str, np.ndarray], updates: Updates) -> list[dict]:
    """Check (and take out of ``contents``) the format version and the chain of rules and wrappers;
    the configuration the file was saved with."""
    version = contents.pop(_FORMAT, None)
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{where} is not a checkpoint written by save_state (no valid {_FORMAT} entry)")
    if int(version) != FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {int(version)}; "
            f"this version of updates reads version {FORMAT_VERSION}"
        )
    try:
        config = json.loads(str(contents.pop(_CONFIG)))
        saved_chain = _chain(config)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{where} is not a readable checkpoint (no valid {_CONFIG} entry: {err})") from None
    chain = _chain(updates.config)
    if saved_chain != chain:
        raise ValueError(
            f"{where} holds the state of {_show_chain(saved_chain)}, but the updates are "
            f"{_show_chain(chain)}; load it into updates built by the same rule and wrappers"
        )
    return config


def _compare_params(saved: dict[str, np.ndarray], named: dict[str, Variable]) -> list[str]:
    """What differs between the saved params and ``named``, or that the file holds none."""
    if not saved:
        return ["it holds no params (it was saved with params=False)"]
    current = {n: (p.get_value(borrow=True).shape, str(p.dtype)) for n, p in named.items()}
    return _compare("param", saved, current)


def _rebuilt(
    entries: dict[str, StateEntry], saved: dict[str, np.ndarray]
) -> list[tuple[Variable, np.ndarray]]:
    """Each variable of ``entries`` and its new value: a copy with the saved pieces written in."""
    new_values: dict[Variable, np.ndarray] = {}
    for name, entry in entries.items():
        flat = new_values.get(entry.variable)
        if flat is None:
            flat = np.array(entry.variable.get_value(borrow=True), copy=True).reshape(-1)
            new_values[entry.variable] = flat
        flat[entry.offset : entry.offset + entry.size] = saved[name].reshape(-1)
    return [(v, flat.reshape(v.get_value(borrow=True).shape)) for v, flat in new_values.items()]


def _assign(assignments: list[tuple[Variable, np.ndarray]]) -> None:
    """Set each variable to its value, as :func:`_validated` returned them."""
    for variable, value in assignments:
        variable.set_value(value)


def _read(path: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, by key, each read to its end so that its CRC is
    checked: a corrupted byte anywhere in an array or its header is an error, not a number."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise _not_found(path) from None
    with file:
        try:
            contents = {}
            with zipfile.ZipFile(file) as archive:
                for info in archive.infolist():
                    key = info.filename.removesuffix(".npy")
                    if key == info.filename or key in contents:
                        raise ValueError(f"unexpected member {info.filename!r}")
                    with archive.open(info) as member:
                        contents[key] = np.lib.format.read_array(member, allow_pickle=False)
                        if member.read(1):
                            raise ValueError(f"{info.filename!r} is longer than its header says")
            return contents
        except Exception as err:
            raise ValueError(
                f"load_state: {path} is not a readable checkpoint ({type(err).__name__}: {err})"
            ) from err


def _not_found(path: str) -> FileNotFoundError:
    """A FileNotFoundError whose message names the function and the path (setting its ``errno``
    or ``filename`` would make ``str()`` of it start with ``[Errno 2]``)."""
    return FileNotFoundError(f"load_state: there is no file at {path!r}")


def _chain(config: Any) -> list[tuple[str, str]]:
    """The sequence of rules and wrappers of a configuration, by name: ``[("rule", "adam"), ...]``."""
    if not isinstance(config, list) or not all(isinstance(c, dict) for c in config):
        raise TypeError(f"expected a list of dicts, got {type(config).__name__}")
    return [(kind, str(c[kind])) for c in config for kind in ("rule", "wrapper") if kind in c]


def _show_chain(chain: list[tuple[str, str]]) -> str:
    return " + ".join(name for _, name in chain) or "nothing"


def _compare(kind: str, saved: dict[str, np.ndarray], current: dict[str, tuple]) -> list[str]:
    """What differs between the saved arrays and the variables, by name, shape and dtype."""
    problems = [f"{kind} {name!r} is missing from the file" for name in current if name not in saved]
    problems += [
        f"the file has {kind} {name!r}, which the updates do not have"
        for name in saved
        if name not in current
    ]
    for name, (shape, dtype) in current.items():
        if name not in saved:
            continue
        array = saved[name]
        if tuple(array.shape) != tuple(shape):
            problems.append(
                f"{kind} {name!r} has shape {tuple(array.shape)} in the file, {tuple(shape)} in the updates"
            )
        if array.dtype != np.dtype(dtype):
            problems.append(f"{kind} {name!r} has dtype {array.dtype} in the file, {dtype} in the updates")
    return problems


def _join(problems: list[str], most: int = 10) -> str:
    shown = "; ".join(problems[:most])
    return shown + (f"; and {len(problems) - most} more" if len(problems) > most else "")


# -- hyperparameters -------------------------------------------------------------------------------

_ABSENT = object()  # a hyperparameter one configuration has and the other has not


@dataclass(frozen=True)
class _Difference:
    """A hyperparameter whose value in the file is not the updates' (or, ``known`` False, a live
    one whose value the file does not record): where, both values as shown, and, for a live one
    the file gives a number for, the variable and the value to restore."""

    where: str
    saved: str
    current: str
    restore: tuple[Variable, np.ndarray] | None = None
    known: bool = True

    def __str__(self) -> str:
        if not self.known:
            return (
                f"{self.where} is {self.saved} in the file, no value recorded, {self.current} in the updates"
            )
        return f"{self.where} is {self.saved} in the file, {self.current} in the updates"


def _live(updates: Updates) -> dict[str, Variable]:
    """The live hyperparameters, by name in ``updates.hyperparameters``: shared scalars the
    updates read and do not update (a schedule's own state, such as the value of
    ``reduce_on_plateau``, is state, saved as such)."""
    return {
        name: value
        for name, value in updates.hyperparameters.items()
        if isinstance(value, SharedVariable) and value not in updates
    }


def _checked_hyperparameters(
    where: str, saved_config: list, saved_live: dict[str, np.ndarray], updates: Updates, choice: str
) -> list[tuple[Variable, np.ndarray]]:
    """Warn about or refuse the differing hyperparameters, as ``choice`` says; what to restore."""
    if choice == "ignore":
        return []
    found = _hyperparameter_differences(saved_config, saved_live, updates)
    differences = [d for d in found if d.known]
    restorable = [d.restore for d in differences if d.restore is not None]
    listed = _join([str(d) for d in differences])
    if choice == "error" and differences:
        raise ValueError(
            f"{where} was saved with other hyperparameters: {listed}; nothing was loaded "
            "(hyperparameters='error')"
        )
    if choice == "warn" and differences:
        hint = "; hyperparameters='restore' sets the live ones to the file's values" if restorable else ""
        _warn(f"{where} was saved with other hyperparameters: {listed}; the updates keep their own{hint}")
    if choice != "restore":
        return []
    fixed = [str(d) for d in found if d.restore is None]
    if fixed:
        _warn(
            f"{where} was saved with other hyperparameters, which cannot be restored: {_join(fixed)}; "
            "the updates keep their own (a number or schedule is fixed in the graph: build the updates "
            "with the file's value, or with a live() one)"
        )
    return restorable


def _warn(message: str) -> None:
    # _warn <- _checked_hyperparameters <- _validated <- load_state <- its keyword check <- caller
    warnings.warn(HyperparameterWarning(message), stacklevel=6)


def _hyperparameter_differences(
    saved_config: list, saved_live: dict[str, np.ndarray], updates: Updates
) -> list[_Difference]:
    """Compare each hyperparameter of the file with the updates', entry by entry of the configs.

    A live hyperparameter is compared by its value (recorded in the file, current in the
    updates), the others as the configs describe them.
    """
    saved_entries = [c for c in saved_config if _kind(c)]
    current_entries = [c for c in json.loads(json.dumps(updates.config, default=str)) if _kind(c)]
    live = _live(updates)
    live_now = {slot: live[name] for slot, name in _live_slots(current_entries, list(live)).items()}
    recorded = {slot: saved_live[name] for slot, name in _live_slots(saved_entries, list(saved_live)).items()}
    owners = _owners(current_entries)
    differences = []
    for k, (saved, current) in enumerate(zip(saved_entries, current_entries)):
        for name in dict.fromkeys([*saved, *current]):
            if name not in ("rule", "wrapper"):
                before = (saved.get(name, _ABSENT), recorded.get((k, name)))
                now = (current.get(name, _ABSENT), live_now.get((k, name)))
                differences += _difference(f"{owners[k]} {name}", before, now)
    return differences


def _difference(where: str, saved: tuple, current: tuple) -> list[_Difference]:
    """``[]`` if a hyperparameter has the same value in the file and in the updates, else how
    it differs. ``saved`` is its description in the file's config and its recorded value
    (None if not recorded), ``current`` its description in the updates' and its live variable
    (None if not live)."""
    described, recorded = saved
    now_described, variable = current
    now = now_described if variable is None else variable.get_value(borrow=True).item()
    shown_now = _show(now, now_described if variable is not None else None)
    if recorded is None and _is_shared(described):  # a live value the file does not record
        return [_Difference(where, described, shown_now, known=False)] if variable is not None else []
    before = described if recorded is None else recorded.item()
    if _same(before, now):
        return []
    restore = None
    if variable is not None and _is_number(before):
        restore = (variable, np.asarray(before if recorded is None else recorded, dtype=variable.dtype))
    shown_before = _show(before, described if recorded is not None else None)
    return [_Difference(where, shown_before, shown_now, restore)]


def _kind(entry: Any) -> str | None:
    """``"rule"`` or ``"wrapper"``: what a configuration entry describes (None: neither)."""
    if not isinstance(entry, dict):
        return None
    return "rule" if "rule" in entry else "wrapper" if "wrapper" in entry else None


def _owners(entries: list[dict]) -> list[str]:
    """How messages name each rule or wrapper: ``adam``, or ``adam[1]`` for the second of two."""
    names = [str(entry[_kind(entry)]) for entry in entries]
    return [
        name if names.count(name) == 1 else f"{name}[{names[:k].count(name)}]" for k, name in enumerate(names)
    ]


def _is_shared(described: Any) -> bool:
    """Whether a configuration describes the value as a shared variable (``"shared lr"``)."""
    return isinstance(described, str) and (described == "shared" or described.startswith("shared "))


def _live_slots(entries: list[dict], names: list[str]) -> dict[tuple[int, str], str]:
    """Which of ``names`` (live hyperparameters' names in ``Updates.hyperparameters``, in order)
    each shared hyperparameter of the configuration is: ``{(entry index, argument): name}``.

    Both list the rule's and then each wrapper's hyperparameters in order; a name is the
    argument (``learning_rate``), ``<wrapper>.<argument>`` for a wrapper's, each behind its
    group's index in merged updates (``1.learning_rate``).
    """
    slots, start = {}, 0
    for k, entry in enumerate(entries):
        kind = _kind(entry)
        for argument, described in entry.items():
            if argument == kind or not _is_shared(described):
                continue
            wanted = [str(entry[kind]), argument] if kind == "wrapper" else [argument]
            found = next((i for i in range(start, len(names)) if _ungrouped(names[i]) == wanted), None)
            if found is not None:
                slots[k, argument] = names[found]
                start = found + 1
    return slots


def _ungrouped(name: str) -> list[str]:
    """A hyperparameter's name without its groups' indices, split at the dots."""
    parts = name.split(".")
    while len(parts) > 1 and parts[0].isdigit():
        parts.pop(0)
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _show(value: Any, described: Any = None) -> str:
    """A value as messages show it, with the file's or updates' description of a live one."""
    if value is _ABSENT:
        return "absent"
    shown = value if isinstance(value, str) else repr(value)
    return f"{shown} ({described})" if described is not None else shown


# -- reset -----------------------------------------------------------------------------------------


@checks_keywords
def reset_state(updates: Updates, params: Iterable[Variable] | None = None) -> None:
    """Set the optimizer state back to its initial values, all of it or only some params'.

    Each piece of state goes back to the value it was created with (zero for the moments and
    velocities, 0 for the step counters; the ``initial`` of the variable's state record). The
    params themselves are not touched.

    Parameters
    ----------
    updates : Updates
        The result of a rule or wrapper.
    params : list of shared variables, optional
        Reset only the state belonging to these params (``W.adam.m``, ``W.adam.v``, ...). State
        that belongs to no param (step counters, a schedule's own state) is reset only when all
        the params of ``updates`` are given, as when ``params`` is left out: a counter shared
        by all params keeps counting if only some start over (so Adam's bias correction of the
        reset params is that of the current step, not of a first one). Default: all state.

    Raises
    ------
    ValueError
        If a given param is not a param of ``updates``, or shares its name with another (so its
        state cannot be told apart), or a piece of state has no initial value; nothing is reset.

    Examples
    --------
    >>> import numpy as np, pytensor, updates
    >>> w = pytensor.shared(np.ones(2), name="w")
    >>> adam = updates.adam((w**2).sum(), [w])
    >>> step = pytensor.function([], [], updates=adam)
    >>> _ = step()
    >>> updates.reset_state(adam)
    >>> {name: value.tolist() for name, value in adam.named_state().items()}
    {'w.adam.m': [0.0, 0.0], 'w.adam.v': [0.0, 0.0], 'adam.t': 0}
    """
    _check_and_sync("reset_state", updates)
    entries = _entries(updates)
    if params is None:
        chosen = set(updates.params)
    else:
        params = list(params)
        if not params:
            raise ValueError("reset_state: params is empty; leave it out to reset all the state")
        position = {p: i for i, p in enumerate(updates.params)}
        labels = [label(p, i) for i, p in enumerate(updates.params)]
        for i, param in enumerate(params):
            if param not in position:
                raise ValueError(
                    f"reset_state: params[{i}] ({getattr(param, 'name', None)!r}) is not a param of "
                    f"these updates (their params: {labels})"
                )
            if labels.count(labels[position[param]]) > 1:
                raise ValueError(
                    f"reset_state: params[{i}] shares its name {labels[position[param]]!r} with another "
                    "param of these updates, so its state cannot be told apart; name params distinctly"
                )
        chosen = set(params)
    everything = chosen == set(updates.params)
    targets = [e for e in entries if (e.param in chosen if e.param is not None else everything)]
    for entry in targets:
        if state_record(entry.variable).initial is None:
            raise ValueError(
                f"reset_state: state {entry.name!r} has no initial value (the state record of "
                f"{entry.variable.name!r}); nothing was reset"
            )

    new_values: dict[Variable, np.ndarray] = {}
    for entry in targets:
        variable = entry.variable
        if variable not in new_values:
            new_values[variable] = np.array(variable.get_value(borrow=True), copy=True).reshape(-1)
        initial = np.asarray(state_record(variable).initial, dtype=entry.dtype)
        piece = slice(entry.offset, entry.offset + entry.size)
        new_values[variable][piece] = initial if initial.ndim == 0 else initial.reshape(-1)[piece]
    for variable, flat in new_values.items():
        variable.set_value(flat.reshape(variable.get_value(borrow=True).shape))
