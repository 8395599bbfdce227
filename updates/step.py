"""A compiled training step that keeps params and optimizer state on the device (JAX), or is a
plain ``pytensor.function`` in any other mode.

``compile_step(inputs, outputs, updates, mode="JAX")`` turns the step into one JAX function of
(inputs, shared values) -> (outputs, new shared values), rewritten by PyTensor's JAX mode and
converted with its ``jax_funcify``, then ``jax.jit``-compiled with the buffers of the updated
variables *donated*: XLA writes the new params and state over the old ones, on the device, and
nothing goes back to the host until :meth:`Step.sync`. PyTensor's own JAX mode instead allocates
every param and state array anew on every call and leaves JAX arrays in the shared variables.

Which values are current is tracked per shared variable: after a call the device holds the truth
for everything the step updates (the variable is *claimed* by the step until it syncs). A
``set_value`` between calls is seen by the next call (the host value is uploaded again), and wins
over the device at :meth:`Step.sync`; a step that reads a variable claimed by another step syncs
that one first; ``save_state``, ``load_state``, ``reset_state``, ``inspect_state``,
``Updates.named_state`` and ``swap_averages`` sync the steps holding their variables. Only a bare
``get_value()`` between calls reads the values of the last sync: call ``step.sync()`` first.

With ``mesh`` (a ``jax.sharding.Mesh`` or a list of devices) the step is data-parallel: every
input is split along its first axis over the mesh's devices, params and state are replicated,
and XLA inserts the reductions, so the loss is the global-batch loss. Under
``jax.distributed.initialize`` the mesh may span processes: each process then passes its own
part of the global batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.graph.replace import clone_replace
from pytensor.tensor.type import TensorType

from updates.grads import checks_keywords, describe

try:  # PyTensor >= 2.32
    from pytensor.graph.traversal import ancestors
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import ancestors

__all__ = ["Step", "compile_step"]

#: Which step holds the current value of a shared variable on its device (until it syncs).
_CLAIMS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_BATCH_AXIS = "data"


def sync_variables(variables: Iterable[Variable]) -> None:
    """Sync every step that holds the current value of one of ``variables`` on its device."""
    for step in {id(s): s for v in variables if (s := _CLAIMS.get(id(v))) is not None}.values():
        step.sync()


class Step:
    """A compiled training step: ``step(*input_values) -> output values``.

    Built by :func:`compile_step`. In JAX mode the params and state stay on the device between
    calls; :meth:`sync` writes them back into the shared variables (as NumPy arrays). In any
    other mode it calls the ``pytensor.function`` it holds (``.function``) and :meth:`sync` does
    nothing.
    """

    #: How many parts each batch is split into on this process (the local devices of a mesh).
    batch_multiple = 1

    def __init__(self, function: Any, single: bool, mode: Any) -> None:
        self.function = function
        self.mode = mode
        self.single = single

    def __call__(self, *values: Any) -> Any:
        return self.function(*values)

    def __getattr__(self, name: str) -> Any:
        """Anything else is the ``pytensor.function``'s (``maker``, ``trust_input``, ...)."""
        if name == "function" or self.__dict__.get("function") is None:
            raise AttributeError(name)
        return getattr(self.function, name)

    def sync(self) -> None:
        """Write the device values back into the shared variables (nothing to do here)."""

    def __repr__(self) -> str:
        return f"Step(mode={self.mode!r})"


class JAXStep(Step):
    """A :class:`Step` whose params and state live on JAX devices, updated in place."""

    def __init__(self, inputs, outputs, updates, single, mesh) -> None:
        import jax

        super().__init__(None, single, "JAX")
        self.jax = jax
        self.inputs = list(inputs)
        self.updated = list(updates)
        read = [v for v in ancestors([*outputs, *updates.values()]) if isinstance(v, SharedVariable)]
        self.shared = list(dict.fromkeys([*self.updated, *read]))
        self.n_outputs = len(outputs)
        self.mesh = mesh
        self.local = mesh is None or jax.process_count() == 1
        if mesh is not None:
            self.batch_multiple = mesh.devices.size // (1 if self.local else jax.process_count())
        holders = {v: _holder(v) for v in self.shared}
        replaced = clone_replace([*outputs, *(updates[v] for v in self.updated)], holders)
        with _quiet():
            traced = pytensor.function(
                [*self.inputs, *holders.values()], replaced, mode="JAX", on_unused_input="ignore"
            )
        from pytensor.link.jax.dispatch import jax_funcify

        self.python_function = _typed(jax_funcify(traced.maker.fgraph), [x.dtype for x in replaced])
        n_in = len(self.inputs)
        donated = tuple(n_in + i for i in range(len(self.updated)))
        shardings = {}
        if mesh is not None:
            batch, whole = self._sharding((_BATCH_AXIS,)), self._sharding(())
            shardings = dict(
                in_shardings=(*[batch] * n_in, *[whole] * len(self.shared)),
                out_shardings=whole,
            )
        self.compiled = jax.jit(self.python_function, donate_argnums=donated, **shardings)
        self.shapes = {v: holders[v].type.shape for v in self.shared}
        self.device: dict[SharedVariable, Any] = {}
        self.seen: dict[SharedVariable, Any] = {}

    def _sharding(self, spec: tuple) -> Any:
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def __call__(self, *values: Any) -> Any:
        if len(values) != len(self.inputs):
            raise TypeError(f"compile_step: the step takes {len(self.inputs)} inputs, got {len(values)}")
        sync_variables(v for v in self.shared if _CLAIMS.get(id(v)) is not self)
        self._upload_changed()
        arguments = [self._put_input(i, value) for i, value in enumerate(values)]
        results = self.compiled(*arguments, *(self.device[v] for v in self.shared))
        outputs, new_values = results[: self.n_outputs], results[self.n_outputs :]
        for variable, value in zip(self.updated, new_values):
            self.device[variable] = value
            _CLAIMS[id(variable)] = self
        values = [self._to_host(x) for x in outputs]
        return values[0] if self.single else values

    def sync(self) -> None:
        """Write the params and state held on the device back into their shared variables.

        A variable given a new value by ``set_value`` since the last call keeps it (the next
        call uploads it); the others get the device's value as a NumPy array.
        """
        for variable in self.updated:
            if _CLAIMS.get(id(variable)) is not self:
                continue
            del _CLAIMS[id(variable)]
            if variable.container.storage[0] is not self.seen.get(variable):
                continue  # set by hand since: the host value wins
            variable.set_value(np.array(self._to_host(self.device[variable])), borrow=True)
            self.seen[variable] = variable.container.storage[0]

    def _upload_changed(self) -> None:
        for variable in self.shared:
            host = variable.container.storage[0]
            if self.seen.get(variable) is not host:
                if np.shape(host) != self.shapes[variable]:
                    raise ValueError(
                        f"compile_step: {variable.name or variable} now has shape {np.shape(host)}, "
                        f"but the step was compiled for {self.shapes[variable]}; compile it again"
                    )
                self.device[variable] = self._put(np.array(host), self._sharding(()) if self.mesh else None)
                self.seen[variable] = host

    def _put_input(self, index: int, value: Any) -> Any:
        variable = self.inputs[index]
        array = np.asarray(variable.type.filter(value, strict=False, allow_downcast=None))
        if self.mesh is None:
            return self._put(array, None)
        devices = self.batch_multiple
        if array.ndim == 0 or array.shape[0] % devices:
            got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
            raise ValueError(
                f"compile_step: input {index} ({variable.name or variable.type}) has {got}, which "
                f"does not split over the {devices} {'local ' if not self.local else ''}devices of "
                "the mesh along its first axis; give a batch whose size is a multiple of it"
            )
        return self._put(array, self._sharding((_BATCH_AXIS,)))

    def _put(self, array: np.ndarray, sharding: Any) -> Any:
        if sharding is None:
            return self.jax.device_put(array)
        if self.local:
            return self.jax.device_put(array, sharding)
        return self.jax.make_array_from_process_local_data(sharding, array)

    def _to_host(self, value: Any) -> np.ndarray:
        if not self.local:
            value = value.addressable_data(0)
        return np.asarray(value)

    def __repr__(self) -> str:
        return f"Step(mode='JAX', mesh={self.mesh}, {len(self.updated)} variables on the device)"


def _typed(function: Any, dtypes: list[str]) -> Any:
    """``function`` with its outputs cast to the dtypes PyTensor gives them (JAX with 64-bit types
    on may compute a float32 model's loss in float64): a float32 param stays float32."""

    import jax.numpy as jnp

    def typed(*arguments: Any) -> list:
        return [jnp.asarray(x, dtype=d) for x, d in zip(function(*arguments), dtypes)]

    return typed


def _holder(variable: SharedVariable) -> Variable:
    """A symbolic input standing for ``variable``, with the static shape of its value."""
    if not isinstance(variable.type, TensorType):
        raise TypeError(
            f"compile_step: mode='JAX' keeps tensors on the device; {variable.name or variable} is a "
            f"{variable.type} (a random generator?), which it cannot hold"
        )
    return variable.type.clone(shape=np.shape(variable.get_value(borrow=True)))()


class _quiet:
    """Silence PyTensor's warning about JAX-converted RNG copies while tracing (none here)."""

    def __enter__(self) -> None:
        import warnings

        self.context = warnings.catch_warnings()
        self.context.__enter__()
        warnings.filterwarnings("ignore", message="The RandomType SharedVariables")

    def __exit__(self, *exc: Any) -> None:
        self.context.__exit__(*exc)


def _as_mesh(mesh: Any) -> Any:
    from jax.sharding import Mesh

    if mesh is None or isinstance(mesh, Mesh):
        if mesh is not None and _BATCH_AXIS not in mesh.axis_names:
            raise ValueError(
                f"compile_step: the mesh needs an axis named {_BATCH_AXIS!r}, got {mesh.axis_names}"
            )
        return mesh
    devices = list(mesh) if isinstance(mesh, Sequence) else None
    if not devices:
        raise TypeError(
            f"compile_step: mesh must be a jax.sharding.Mesh or a list of devices, got {describe(mesh)}"
        )
    return Mesh(np.array(devices), (_BATCH_AXIS,))


def _check(inputs: Any, updates: Any, mesh: Any) -> None:
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(v, Variable) for v in inputs):
        raise TypeError(f"compile_step: inputs must be a list of symbolic variables, got {describe(inputs)}")
    if updates is not None and not hasattr(updates, "items"):
        raise TypeError(f"compile_step: updates must be a dictionary of updates, got {describe(updates)}")
    if mesh is not None:
        for i, variable in enumerate(inputs):
            if variable.ndim == 0:
                raise ValueError(
                    f"compile_step: inputs[{i}] ({variable.name or variable.type}) is a scalar; with a "
                    "mesh every input is a batch split along its first axis"
                )


@checks_keywords
def compile_step(
    inputs: Sequence[Variable],
    outputs: Any,
    updates: Any = None,
    mode: Any = None,
    mesh: Any = None,
) -> Step:
    """Compile a training step, on the device and in place with ``mode="JAX"``.

    Parameters
    ----------
    inputs : list of Variable
        The symbolic inputs (a batch), as for ``pytensor.function``.
    outputs : Variable or list of Variable
        What each call returns (a single value for a single variable).
    updates : mapping, optional
        ``{shared variable: new value}``, e.g. the result of a rule.
    mode : str or Mode, optional
        ``"JAX"`` keeps the params and state on the JAX device between calls, their buffers
        donated so the update happens in place; any other mode (default: PyTensor's) gives a
        plain ``pytensor.function``, so a script changes backend with this one argument.
    mesh : jax.sharding.Mesh or list of devices, optional
        JAX only: train data-parallel. Every input is split along its first axis over the
        devices (the mesh's axis ``"data"``), params and state are replicated; the outputs are
        those of the global batch. Across processes (``jax.distributed.initialize``), each
        process passes its own part of the global batch.

    Returns
    -------
    Step
        ``step(*input_values)`` runs one step; ``step.sync()`` writes the device values back
        into the shared variables (done for you by the state functions and by other steps that
        read them).

    Raises
    ------
    TypeError, ValueError
        For a mode whose backend is not installed, a mesh without JAX, an input without a batch
        axis under a mesh (and, at a call, a batch that does not split over the devices).

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt, updates
    >>> w = pytensor.shared(np.zeros(2), name="w")
    >>> x = pt.vector("x")
    >>> loss = ((w - x) ** 2).sum()
    >>> step = updates.compile_step([x], loss, updates.sgd(loss, [w], learning_rate=0.25))
    >>> float(step(np.ones(2))), w.get_value()
    (2.0, array([0.5, 0.5]))
    """
    _check(inputs, updates, mesh)
    single = isinstance(outputs, Variable)
    listed = [outputs] if single else list(outputs or [])
    jax_mode = isinstance(mode, str) and mode.upper() == "JAX"
    if mesh is not None and not jax_mode:
        raise ValueError(f"compile_step: mesh needs mode='JAX', got mode={mode!r}")
    if not jax_mode:
        function = pytensor.function(list(inputs), outputs, updates=updates, mode=mode)
        return Step(function, single, mode)
    try:
        import jax  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "compile_step: mode='JAX' needs jax, which is not installed; pip install 'pytensor-updates[jax]'"
        ) from err
    return JAXStep(inputs, listed, dict(updates or {}), single, _as_mesh(mesh))
