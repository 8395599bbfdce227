"""A compiled training step that keeps params and optimizer state on the device (JAX), or is a
plain ``pytensor.function`` in any other mode.

``compile_step(inputs, outputs, updates, mode="JAX")`` turns the step into one JAX function of
(inputs, shared values) -> (outputs, new shared values), rewritten by PyTensor's JAX mode and
converted with its ``jax_funcify``, then ``jax.jit``-compiled with the buffers of the updated
variables *donated*: XLA writes the new params and state over the old ones, on the device, and
nothing goes back to the host until :meth:`Step.sync`. PyTensor's own JAX mode instead allocates
every param and state array anew on every call and leaves JAX arrays in the shared variables.

Which values are current is tracked per shared variable: after a call the device holds the truth
for everything the step updates, until the step syncs. A ``set_value`` between calls is seen by
the next call (the host value is uploaded again), and wins over the device at :meth:`Step.sync`;
a step that reads a variable another step holds on its device syncs that one first;
``save_state``, ``load_state``, ``reset_state``, ``inspect_state``, ``Updates.named_state`` and
``swap_averages`` sync the steps holding their variables. Only a bare ``get_value()`` between
calls reads the values of the last sync: call ``step.sync()`` first.

With ``mesh`` (a ``jax.sharding.Mesh`` or a list of devices) the step is data-parallel: every
input is split along its first axis over the mesh's batch axis (its only axis, or the one named
by ``batch_axis``), params and state are replicated, and XLA inserts the reductions, so the loss
is the global-batch loss. Under ``jax.distributed.initialize`` the mesh may span processes: each
process then passes its own part of the global batch. With ``shard_state=True`` the optimizer
state is split over the batch axis instead of replicated (ZeRO stage 1): each device holds and
updates its 1/n of every state array, and XLA gathers the new params. A state array is split
along its first axis that the n devices divide, or else held as a flat vector padded to a
multiple of n; 0-d state (a step counter) stays replicated.

A random generator (that of :func:`~updates.add_gradient_noise`) is held on the device as the JAX key
PyTensor's JAX backend derives from it; :meth:`Step.sync` gives the host a NumPy generator
seeded by the key. The ``default_update`` of every shared variable the step reads is applied, as
``pytensor.function`` does.

PyTensor's JAX backend drops the graph's runtime assertions (``Assert``, ``CheckAndRaise``: the
broadcast checks of tensors of unknown shape, :func:`apply_if_finite`'s budget) and warns once
per assertion and per conversion; a build converts the graph twice, so :func:`compile_step`
silences those and warns once, listing what is not checked.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.graph.replace import clone_replace
from pytensor.tensor.random.type import RandomType
from pytensor.tensor.type import TensorType

from updates.checks import describe
from updates.container import Updates
from updates.fused import FusedStep
from updates.public import checks_keywords
from updates.sync import mark_synced, mark_unsynced, sync_variables

try:  # PyTensor >= 2.32
    from pytensor.graph.traversal import ancestors
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import ancestors

__all__ = ["Step", "compile_step"]

_first = operator.itemgetter(0)
#: The dtype of a random generator's JAX key.
_KEY_DTYPE = "uint32"
#: The axis of a mesh made of a list of devices, and the default one of a mesh with several.
_BATCH_AXIS = "data"
#: PyTensor's warning for each assertion its JAX backend drops: how it starts (a filter), and
#: the whole of it (the assertion's text in the group).
_SKIPPED_START = r"(?s)Skipping .* Op \(assertion: "
_SKIPPED = re.compile(_SKIPPED_START + r"(.*)\) as JAX tracing would remove it\.")


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

    def wait(self) -> None:
        """Wait until the device has finished the steps started (nothing to do here)."""

    def __repr__(self) -> str:
        return f"Step(mode={self.mode!r})"


class JAXStep(Step):
    """A :class:`Step` whose params and state live on JAX devices, updated in place.

    Each shared variable the step reads is held on the device as one array, or, for the flat
    buffer of a multi-tensor step, as one array per param (XLA on CPU concatenates and splits
    flat buffers slowly: each multi-tensor node is traced as its kernel per param).
    """

    def __init__(
        self,
        inputs,
        outputs,
        updates,
        single,
        mesh,
        batch_axis=_BATCH_AXIS,
        on_device=False,
        params=(),
        shard_state=False,
    ) -> None:
        import jax

        super().__init__(None, single, "JAX")
        self.jax = jax
        self.inputs = list(inputs)
        self.n_outputs = len(outputs)
        self.mesh = mesh
        #: The mesh axis the batch is split along (the others hold copies of each part).
        self.batch_axis = batch_axis
        self.local = mesh is None or jax.process_count() == 1
        if mesh is not None:
            self.batch_multiple = _local_parts(mesh, batch_axis, jax.process_index())
        #: The texts of the runtime assertions JAX does not check (one entry per assertion).
        self.skipped_assertions: list[str] = []
        updates = _with_default_updates(updates, outputs)
        self.updated = list(updates)
        #: The updated variables that are params (the others are optimizer state).
        self.params = frozenset(params)
        read = [v for v in ancestors([*outputs, *updates.values()]) if isinstance(v, SharedVariable)]
        self.shared = list(dict.fromkeys([*self.updated, *read]))
        self.python_function = self._trace(outputs, updates)
        #: How each part of a state variable split over the mesh is held (per part: a
        #: :class:`_Shard`, or None for a part kept whole), by variable.
        self.layouts = {
            v: [_Shard.of(part.type.shape, self._split_count) for part in self.parts[v]]
            for v in (self.updated if shard_state else ())
            if v not in self.params and isinstance(v.type, TensorType)
        }
        self.compiled = self._jit()
        self.shapes = {v: np.shape(v.get_value(borrow=True)) for v in self.shared}
        starts = np.cumsum([0, *(len(self.parts[v]) for v in self.shared)]).tolist()
        #: Where each variable's parts sit in :attr:`values` (the updated ones first).
        self.places = {v: slice(a, b) for v, a, b in zip(self.shared, starts, starts[1:])}
        self.n_updated_parts = sum(len(self.parts[v]) for v in self.updated)
        #: The device arrays of every part, in the order the compiled function takes them.
        self.values: list = [None] * starts[-1]
        self.containers = [v.container for v in self.shared]
        self.storages = [container.storage for container in self.containers]
        self.seen: list = [object()] * len(self.shared)  # the host values last uploaded or synced
        self.updated_ids = frozenset(map(id, self.updated))
        self.last: list = []  # the first result of the last call
        #: Whether a call returns its outputs as JAX arrays (``results="device"``), not NumPy ones.
        self.on_device = on_device

    def _trace(self, outputs: list, updates: dict) -> Any:
        """The step as a Python function of JAX arrays: (inputs, parts) -> (outputs, new parts)."""
        from pytensor.graph.fg import FunctionGraph
        from pytensor.link.jax.dispatch import jax_funcify

        _register_piece_step()
        holders = {v: _holder(v) for v in self.shared}
        results = clone_replace([*outputs, *(updates[v] for v in self.updated)], holders)
        with _quiet(_SKIPPED_START):  # the conversion below tells the same
            traced = pytensor.function(
                [*self.inputs, *holders.values()], results, mode="JAX", on_unused_input="ignore"
            )
        graph = traced.maker.fgraph  # rewritten by PyTensor's JAX mode
        #: Per shared variable, the inputs of the JAX function standing for its parts.
        head, self.parts, new_parts = _pieces(graph, len(self.inputs), self.shared, self.updated)
        arguments = [*graph.inputs[: len(self.inputs)], *(x for v in self.shared for x in self.parts[v])]
        outputs = [*head, *(x for v in self.updated for x in new_parts[v])]
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", message=_SKIPPED_START)  # each, every build
            converted = jax_funcify(_merged(FunctionGraph(arguments, outputs, clone=True)))
        self.skipped_assertions = _pass_on(caught)
        keys = [_KEY_DTYPE if _is_generator(x) else x.dtype for x in outputs]
        return _typed(_with_keys(converted, list(map(_is_generator, arguments))), keys)

    def _jit(self) -> Any:
        """The traced function under ``jax.jit``: the updated parts donated, inputs split over the
        mesh's devices (if any), the state split too with ``shard_state``, the rest replicated."""
        n_in = len(self.inputs)
        layouts = [x for v in self.shared for x in self._layouts_of(v)]
        n_updated = sum(len(self.parts[v]) for v in self.updated)
        shardings = {}
        if self.mesh is not None:
            batch, replicated = self._sharding((self.batch_axis,)), self._sharding(())
            held = [replicated if x is None else self._sharding(x.spec(self.batch_axis)) for x in layouts]
            shardings = dict(in_shardings=(*[batch] * n_in, *held))
            shardings["out_shardings"] = [*[replicated] * self.n_outputs, *held[:n_updated]]
        function = self.python_function
        if any(layouts):
            function = _held_as(function, n_in, self.n_outputs, layouts)
        donated = tuple(range(n_in, n_in + n_updated))
        return self.jax.jit(function, donate_argnums=donated, **shardings)

    def _layouts_of(self, variable: SharedVariable) -> list:
        """How each part of ``variable`` is held: a :class:`_Shard`, or None (whole)."""
        return self.layouts.get(variable) or [None] * len(self.parts[variable])

    @property
    def _split_count(self) -> int:
        """Into how many parts a state array split over the mesh's batch axis is cut."""
        return dict(zip(self.mesh.axis_names, self.mesh.devices.shape))[self.batch_axis]

    def bytes_per_device(self) -> dict[str, int]:
        """The bytes of ``"params"``, optimizer ``"state"`` and ``"other"`` shared variables the
        step holds on its most loaded device (the state's: 1/n of it with ``shard_state``)."""
        totals: dict[str, Counter] = {"params": Counter(), "state": Counter(), "other": Counter()}
        for variable in self.shared:
            updated = id(variable) in self.updated_ids
            kind = "params" if variable in self.params else "state" if updated else "other"
            for array in self.values[self.places[variable]]:
                for shard in array.addressable_shards:
                    totals[kind][shard.device] += shard.data.nbytes
        return {kind: max(count.values(), default=0) for kind, count in totals.items()}

    @property
    def device(self) -> dict[SharedVariable, Any]:
        """The device arrays by variable: one array, or a flat buffer's list of per-param parts."""
        return {
            v: (parts if len(parts) > 1 else parts[0])
            for v in self.shared
            for parts in [self.values[self.places[v]]]
        }

    def _sharding(self, spec: tuple) -> Any:
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def __call__(self, *values: Any) -> Any:
        if len(values) != len(self.inputs):
            raise TypeError(f"compile_step: the step takes {len(self.inputs)} inputs, got {len(values)}")
        sync_variables(self.shared, but=self)
        self._upload_changed()
        arguments = [self._put_input(i, value) for i, value in enumerate(values)]
        results = self.compiled(*arguments, *self.values)
        self.last = results[:1]  # what wait() waits for: one call's outputs are ready together
        self.values[: self.n_updated_parts] = results[self.n_outputs :]
        mark_unsynced(self)  # the device now holds values the host has not seen
        outputs = list(results[: self.n_outputs])
        if not self.on_device:
            outputs = [self._to_host(x) for x in outputs]
        return outputs[0] if self.single else outputs

    def wait(self) -> None:
        """Wait until the device has finished the steps started (JAX runs them asynchronously:
        a call returns once the step is queued, or when its outputs are read), e.g. to time them."""
        self.jax.block_until_ready(self.last)

    def sync(self) -> None:
        """Write the params and state held on the device back into their shared variables.

        A variable given a new value by ``set_value`` since the last call keeps it (the next
        call uploads it); the others get the device's value as a NumPy array.
        """
        if not mark_synced(self):
            return
        for i, variable in enumerate(self.updated):
            if self.containers[i].storage[0] is not self.seen[i]:
                continue  # set by hand since: the host value wins
            layouts = self._layouts_of(variable)
            held = self.values[self.places[variable]]
            if _is_generator(variable):  # a NumPy generator seeded by the device's key
                variable.set_value(np.random.default_rng(self._to_host(held[0])), borrow=True)
            else:
                parts = [self._to_host(x, layout).reshape(-1) for x, layout in zip(held, layouts)]
                variable.set_value(np.concatenate(parts).reshape(self.shapes[variable]), borrow=True)
            self.seen[i] = self.containers[i].storage[0]

    def _upload_changed(self) -> None:
        seen = self.seen
        if all(map(operator.is_, map(_first, self.storages), seen)):  # a C loop: 30 ns a variable
            return
        changed = [i for i, container in enumerate(self.containers) if container.storage[0] is not seen[i]]
        for i in changed:
            variable, host = self.shared[i], self.containers[i].storage[0]
            if np.shape(host) != self.shapes[variable]:
                raise ValueError(
                    f"compile_step: {variable.name or variable} now has shape {np.shape(host)}, "
                    f"but the step was compiled for {self.shapes[variable]}; compile it again"
                )
            layouts = self._layouts_of(variable)
            self.values[self.places[variable]] = [
                self._put_held(part, layout) for part, layout in zip(self._split(variable, host), layouts)
            ]
            seen[i] = host

    def _put_held(self, part: np.ndarray, layout: _Shard | None) -> Any:
        """A part of a shared variable on the device: whole on each, or split (``layout``)."""
        if self.mesh is None:
            return self._put(part, None)
        if layout is None:
            return self._put(part, self._sharding(()))
        held = layout.outside(part)
        sharding = self._sharding(layout.spec(self.batch_axis))
        return self.jax.make_array_from_callback(held.shape, sharding, lambda index: held[index])

    def _split(self, variable: SharedVariable, host: Any) -> list[np.ndarray]:
        """Copies of the parts of ``host`` as the device holds them (a flat buffer: per param; a
        random generator: its JAX key)."""
        if _is_generator(variable):
            return [_jax_key(host)]
        flat, start, copies = np.asarray(host).reshape(-1), 0, []
        for part in self.parts[variable]:
            size = math.prod(part.type.shape)
            copies.append(flat[start : start + size].reshape(part.type.shape).copy())
            start += size
        return copies

    def _put_input(self, index: int, value: Any) -> Any:
        """The input on the step's devices: a JAX array goes there directly (moved by
        ``jax.device_put`` if elsewhere, a no-op if already there), anything else through NumPy."""
        variable = self.inputs[index]
        if isinstance(value, self.jax.Array):
            if self._ready(index, value):
                return value
            array = self._device_input(index, variable, value)
            if array.sharding == self._input_sharding:
                return array  # where a call needs it (jax.device_put would take 10 us to see it)
        else:
            array = np.asarray(variable.type.filter(value, strict=False, allow_downcast=None))
        if self.mesh is None:
            return self._put(array, None)
        parts = self.batch_multiple
        if array.ndim == 0 or array.shape[0] % parts:
            got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
            raise ValueError(
                f"compile_step: input {index} ({variable.name or variable.type}) has {got}, which "
                f"does not split over the {parts} {'local ' if not self.local else ''}devices of "
                f"the mesh's axis {self.batch_axis!r}; give a batch whose first axis is a multiple of "
                f"{parts}"
            )
        return self._put(array, self._sharding((self.batch_axis,)))

    def _ready(self, index: int, value: Any) -> bool:
        """Whether a JAX array is already the input as a call takes it: of its type's dtype and
        static shape, where the call needs it (the checks of a call in a microsecond)."""
        shape, dtype = self._input_types[index]
        return value.shape == shape and value.dtype == dtype and value.sharding == self._input_sharding

    @functools.cached_property
    def _input_types(self) -> list[tuple]:
        """Per input, its static shape (None if partly unknown) and its NumPy dtype."""
        types = [v.type for v in self.inputs]
        return [(None if None in t.shape else t.shape, t.numpy_dtype) for t in types]

    def _device_input(self, index: int, variable: Variable, value: Any) -> Any:
        """A JAX array checked against the input's type as a host array is (dimensions, static
        shape, a dtype it converts to without loss), converted on its device if it must be."""
        kind = variable.type
        name = f"input {index} ({variable.name or kind})"
        if value.ndim != kind.ndim:
            raise TypeError(
                f"compile_step: {name} takes {kind.ndim} dimensions, the JAX array has {value.ndim}"
            )
        if any(want is not None and want != got for want, got in zip(kind.shape, value.shape)):
            raise TypeError(
                f"compile_step: {name} takes the shape {kind.shape}, the JAX array has {value.shape}"
            )
        if value.dtype == kind.numpy_dtype:
            return value
        if not np.can_cast(value.dtype, kind.dtype, "safe"):
            raise TypeError(
                f"compile_step: {name} takes {kind.dtype}, got a JAX array of {value.dtype}, which does "
                f"not convert to it without loss; cast it first"
            )
        return value.astype(kind.dtype)

    def _put(self, array: Any, sharding: Any) -> Any:
        """``array`` (NumPy or JAX) on the step's device, or laid out by ``sharding``."""
        if sharding is None:
            return self.jax.device_put(array, self._device)
        if self.local or isinstance(array, self.jax.Array):
            return self.jax.device_put(array, sharding)
        return self.jax.make_array_from_process_local_data(sharding, array)

    @functools.cached_property
    def _input_sharding(self) -> Any:
        """Where a call puts each input: on the step's device, or split over the mesh."""
        if self.mesh is None:
            return self.jax.sharding.SingleDeviceSharding(self._device)
        return self._sharding((self.batch_axis,))

    @functools.cached_property
    def _device(self) -> Any:
        """The device of a step without a mesh: JAX's default one."""
        return next(iter(self.jax.device_put(np.zeros(())).devices()))

    def _to_host(self, value: Any, layout: _Shard | None = None) -> np.ndarray:
        """A device array as NumPy (a part held split: gathered, and as its variable has it)."""
        if layout is None:
            return np.asarray(value if self.local else value.addressable_data(0))
        if not self.local:
            from jax.experimental.multihost_utils import process_allgather

            return layout.inside(np.asarray(process_allgather(value, tiled=True)))
        return layout.inside(np.asarray(value))

    def __repr__(self) -> str:
        return f"Step(mode='JAX', mesh={self.mesh}, {len(self.updated)} variables on the device)"

    def prefetch(self, *values: Any) -> list:
        """Put a batch on the step's devices now, laid out as a call lays it out (split over the
        mesh, if any), without waiting for the transfer: give the arrays returned to a later call,
        which takes them as they are, so that the batch travels while the steps before it run.

        Raises the errors a call raises for the same inputs.
        """
        if len(values) != len(self.inputs):
            raise TypeError(f"compile_step: the step takes {len(self.inputs)} inputs, got {len(values)}")
        return [self._put_input(i, value) for i, value in enumerate(values)]


class _Shard:
    """How a state array of ``shape`` is held split over ``n`` devices: along its first axis
    that ``n`` divides (``axis``), or else as a flat vector padded to a multiple of ``n``."""

    def __init__(self, shape: tuple[int, ...], axis: int | None, n: int) -> None:
        self.shape, self.axis = shape, axis
        self.size = math.prod(shape)
        self.padded = -(-self.size // n) * n

    @classmethod
    def of(cls, shape: tuple[int, ...], n: int) -> _Shard | None:
        """The layout of an array of ``shape`` split over ``n`` devices (None: a 0-d one, kept
        whole)."""
        if not shape:
            return None
        axis = next((k for k, size in enumerate(shape) if size % n == 0), None)
        return cls(shape, axis, n)

    def spec(self, name: str) -> tuple:
        """The partition spec of the held array: the mesh axis ``name`` on the split axis."""
        return (None,) * self.axis + (name,) if self.axis is not None else (name,)

    def outside(self, array: Any) -> Any:
        """The array as held (NumPy or JAX)."""
        if self.axis is not None:
            return array
        flat, padding = array.reshape(-1), self.padded - self.size
        if not padding:
            return flat
        numpy = _module(array)
        return numpy.concatenate([flat, numpy.zeros(padding, flat.dtype)])

    def inside(self, held: Any) -> Any:
        """The array of ``shape`` that ``held`` holds."""
        return held if self.axis is not None else held[: self.size].reshape(self.shape)


def _module(array: Any) -> Any:
    """numpy for a NumPy array, jax.numpy for a traced or JAX one."""
    if isinstance(array, np.ndarray):
        return np
    import jax.numpy as jnp

    return jnp


def _held_as(function: Any, n_inputs: int, n_outputs: int, layouts: list) -> Any:
    """``function`` taking and returning the parts with a layout as they are held."""

    def held(*arguments: Any) -> list:
        parts = arguments[n_inputs:]
        inside = [x if layout is None else layout.inside(x) for x, layout in zip(parts, layouts)]
        results = list(function(*arguments[:n_inputs], *inside))
        for k, layout in enumerate(layouts[: len(results) - n_outputs]):
            if layout is not None:
                results[n_outputs + k] = layout.outside(results[n_outputs + k])
        return results

    return held


def _pieces(graph, n_inputs: int, shared: list, updated: list) -> tuple[list, dict, dict]:
    """The inputs and new values of each shared variable in the JAX function made of ``graph``.

    ``graph`` takes the step's inputs, then one input per shared variable, and returns the
    outputs, then one new value per updated variable. Returns the outputs, and per variable its
    inputs and new values. A flat buffer that only a multi-tensor
    step reads and writes becomes one input (and one new value) per param: its step becomes a
    :class:`PieceStep`, done after PyTensor's rewriting, which the pieces would slow down.
    """
    n_outputs = len(graph.outputs) - len(updated)
    head = graph.outputs[:n_outputs]
    parts = {v: [graph.inputs[n_inputs + i]] for i, v in enumerate(shared)}
    new = {v: [graph.outputs[n_outputs + i]] for i, v in enumerate(updated)}
    variable_of = {id(parts[v][0]): v for v in updated}
    clients = graph.clients
    replaced = {}
    for node in graph.toposort():
        if not isinstance(node.op, FusedStep):
            continue
        op = node.op
        params, grads, slots, scalars = op.split(node.inputs)
        owners = [variable_of.get(id(slot)) for slot in slots]
        written = [node.outputs[op.n_params + k] for k in range(len(slots))]
        if any(
            owner is None or len(clients[slot]) != 1 or new[owner][0] is not out or len(clients[out]) != 1
            for owner, slot, out in zip(owners, slots, written)
        ):
            continue  # a buffer read or written elsewhere too: keep it whole
        if replaced and not {id(x) for x in replaced}.isdisjoint(map(id, ancestors(node.inputs))):
            # an earlier step's new params feed this one (a wrapper around a rule)
            params, grads, _, scalars = op.split(clone_replace(list(node.inputs), replaced))
        pieces = [[TensorType(op.dtype, shape=shape)() for shape in op.shapes] for _ in slots]
        results = PieceStep(op)(*params, *grads, *(x for k in pieces for x in k), *scalars, return_list=True)
        replaced.update(zip(node.outputs[: op.n_params], results[: op.n_params]))
        for k, owner in enumerate(owners):
            start = op.n_params * (1 + k)
            parts[owner], new[owner] = pieces[k], results[start : start + op.n_params]
    if replaced:
        rebuilt = iter(clone_replace([*head, *(x for v in updated for x in new[v])], replaced))
        head = [next(rebuilt) for _ in head]
        new = {v: [next(rebuilt) for _ in new[v]] for v in updated}
    return head, parts, new


class PieceStep(Op):
    """A multi-tensor step on per-param pieces of its state: inputs the P params, their P
    gradients, the P pieces of each slot, the scalars; outputs the new params, then the new
    pieces slot by slot. One node for PyTensor's rewriting; JAX runs the kernel per param, as
    optax does (XLA on CPU concatenates and splits flat buffers slowly)."""

    __props__ = ("fused",)

    def __init__(self, fused: FusedStep) -> None:
        self.fused = fused

    def make_node(self, *inputs: Variable) -> Apply:
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        n, slots = self.fused.n_params, self.fused.n_slots
        pieces = inputs[2 * n : 2 * n + n * slots]
        return Apply(self, inputs, [x.type() for x in (*inputs[:n], *pieces)])

    def perform(self, node, inputs, output_storage) -> None:
        n, function = self.fused.n_params, self.fused.vector_function
        params, grads, rest = inputs[:n], inputs[n : 2 * n], inputs[2 * n :]
        pieces, scalars = rest[: n * self.fused.n_slots], rest[n * self.fused.n_slots :]
        for i, (p, g) in enumerate(zip(params, grads)):
            slots = [pieces[k * n + i].reshape(-1) for k in range(self.fused.n_slots)]
            new = function(p.reshape(-1), g.reshape(-1), *slots, *scalars)
            for k, value in enumerate(new):
                output_storage[k * n + i][0] = value.reshape(p.shape)


def _register_piece_step() -> None:
    """JAX: the kernel, converted once on vectors, applied to each param (inputs cast to their
    declared dtypes: with 64-bit types on, JAX computes some of PyTensor's float32 ops in
    float64, and the optimizer then would too)."""
    import jax.numpy as jnp
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(PieceStep)
    def piece_step_in_jax(op, node, **kwargs):
        fused, n = op.fused, op.fused.n_params
        inputs, outputs = fused._symbolic(lambda: pt.vector(dtype=fused.dtype))
        converted = jax_funcify(FunctionGraph(inputs, outputs, clone=True))

        def kernel(*arguments):
            result = converted(*arguments)
            return result if isinstance(result, (list, tuple)) else [result]

        dtypes = [x.dtype for x in node.inputs]

        def piece_step(*arguments):
            arguments = [jnp.asarray(x, dtype=d) for x, d in zip(arguments, dtypes)]
            params, grads, rest = arguments[:n], arguments[n : 2 * n], arguments[2 * n :]
            pieces, scalars = rest[: n * fused.n_slots], rest[n * fused.n_slots :]
            new = []
            for i, (p, g) in enumerate(zip(params, grads)):
                slots = [pieces[k * n + i].reshape(-1) for k in range(fused.n_slots)]
                new.append(
                    [x.reshape(p.shape) for x in kernel(p.reshape(-1), g.reshape(-1), *slots, *scalars)]
                )
            results = [new[i][k] for k in range(1 + fused.n_slots) for i in range(n)]
            return results if len(results) > 1 else results[0]

        return piece_step


def _typed(function: Any, dtypes: list[str]) -> Any:
    """``function`` with its outputs cast to the dtypes PyTensor gives them (JAX with 64-bit types
    on may compute a float32 model's loss in float64): a float32 param stays float32."""

    import jax.numpy as jnp

    def typed(*arguments: Any) -> list:
        return [jnp.asarray(x, dtype=d) for x, d in zip(function(*arguments), dtypes)]

    return typed


def _holder(variable: SharedVariable) -> Variable:
    """A symbolic input standing for ``variable``, with the static shape of its value."""
    if _is_generator(variable):
        return variable.type()
    if not isinstance(variable.type, TensorType):
        raise TypeError(
            f"compile_step: mode='JAX' keeps tensors and random generators on the device; "
            f"{variable.name or variable} is a {variable.type}, which it cannot hold"
        )
    return variable.type.clone(shape=np.shape(variable.get_value(borrow=True)))()


def _merged(graph: Any) -> Any:
    """``graph`` with the nodes that :func:`_pieces` cloned merged back into one (a random draw
    computed twice would draw twice: PyTensor's JAX draws advance the generator they are given)."""
    from pytensor.graph.rewriting.basic import MergeOptimizer

    MergeOptimizer().rewrite(graph)
    return graph


def _is_generator(variable: Variable) -> bool:
    """Whether ``variable`` is a random generator (held on the device as a JAX key)."""
    return isinstance(variable.type, RandomType)


def _jax_key(generator: np.random.Generator) -> np.ndarray:
    """The JAX key PyTensor's JAX backend derives from a NumPy generator's state."""
    from pytensor.link.jax.dispatch import jax_typify

    return np.asarray(jax_typify(generator)["jax_state"], dtype=_KEY_DTYPE)


def _with_keys(function: Any, generators: list[bool]) -> Any:
    """``function`` (PyTensor's JAX conversion, which passes a random generator as a dictionary
    holding its key) taking and returning each generator as its key alone."""

    def keyed(*arguments: Any) -> list:
        arguments = [{"jax_state": x} if g else x for x, g in zip(arguments, generators)]
        return [x["jax_state"] if isinstance(x, dict) else x for x in function(*arguments)]

    return keyed


def _with_default_updates(updates: dict, outputs: list) -> dict:
    """``updates`` and the ``default_update`` of each shared variable the step reads that they
    leave out (a counter, the generator of :func:`add_gradient_noise`), as ``pytensor.function``
    applies them."""
    updates, pending = dict(updates), [*outputs, *updates.values()]
    while pending:
        found = [
            v
            for v in ancestors(pending)
            if isinstance(v, SharedVariable)
            and v not in updates
            and getattr(v, "default_update", None) is not None
        ]
        updates.update((v, v.default_update) for v in found)
        pending = [v.default_update for v in found]
    return updates


class _quiet:
    """Silence PyTensor's warning about JAX-converted RNG copies while tracing (none here), and
    those matching the ``also`` patterns."""

    def __init__(self, *also: str) -> None:
        self.also = also

    def __enter__(self) -> None:
        self.context = warnings.catch_warnings()
        self.context.__enter__()
        for pattern in ("The RandomType SharedVariables", *self.also):
            warnings.filterwarnings("ignore", message=pattern)

    def __exit__(self, *exc: Any) -> None:
        self.context.__exit__(*exc)


def _pass_on(caught: list) -> list[str]:
    """Warn again the ``caught`` warnings (as recorded: already through the filters), except
    PyTensor's about skipped assertions; return the texts of those assertions."""
    skipped = []
    for record in caught:
        match = _SKIPPED.fullmatch(str(record.message))
        if match is not None:
            skipped.append(match.group(1))
            continue
        warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    return skipped


def _tell_skipped(skipped: list[str]) -> None:
    """One warning for every assertion the JAX step does not check (none: no warning)."""
    if not skipped:
        return
    listed = "; ".join(
        f"{text!r}" + (f" ({n} times)" if n > 1 else "") for text, n in Counter(skipped).items()
    )
    warnings.warn(
        f"compile_step: mode='JAX' does not check {len(skipped)} runtime assertion"
        f"{'s' if len(skipped) > 1 else ''} of the graph (JAX tracing removes them): {listed}",
        UserWarning,
        stacklevel=4,
    )


def _as_mesh(mesh: Any, batch_axis: Any) -> tuple[Any, str]:
    """The mesh (a list of devices made a one-axis mesh) and the name of its batch axis."""
    from jax.sharding import Mesh

    if mesh is None:
        return None, _BATCH_AXIS
    if isinstance(mesh, Mesh):
        return mesh, _mesh_batch_axis(mesh, batch_axis)
    devices = list(mesh) if isinstance(mesh, Sequence) else None
    if not devices:
        raise TypeError(
            f"compile_step: mesh must be a jax.sharding.Mesh or a list of devices, got {describe(mesh)}"
        )
    axis = batch_axis or _BATCH_AXIS
    return Mesh(np.array(devices), (axis,)), axis


def _mesh_batch_axis(mesh: Any, batch_axis: str | None) -> str:
    """``batch_axis``, checked to be an axis of ``mesh``; by default its only axis, or ``"data"``."""
    names = tuple(mesh.axis_names)
    if batch_axis is not None and batch_axis not in names:
        raise ValueError(
            f"compile_step: batch_axis={batch_axis!r} is not an axis of the mesh, whose axes are {names}"
        )
    if batch_axis is not None:
        return batch_axis
    if len(names) == 1:
        return names[0]
    if _BATCH_AXIS in names:
        return _BATCH_AXIS
    raise ValueError(
        f"compile_step: the mesh has several axes {names}; say which one the batch is split along "
        "with batch_axis= (one of them)"
    )


def _local_parts(mesh: Any, axis: str, process: int) -> int:
    """How many distinct parts of a batch split along ``axis`` this process's devices hold."""
    where = np.vectorize(lambda device: device.process_index == process)(mesh.devices)
    along = np.moveaxis(where, list(mesh.axis_names).index(axis), 0)
    return int(along.reshape(along.shape[0], -1).any(axis=1).sum())


def _params_of(updates: Any, outputs: list) -> list:
    """The keys of ``updates`` that are params: an :class:`~updates.Updates` knows them; of a plain
    dictionary, those the outputs read."""
    if isinstance(updates, Updates):
        return list(updates.params)
    read = set(ancestors(outputs)) if outputs else set()
    return [v for v in updates if v in read]


def _check(inputs: Any, updates: Any, mesh: Any, batch_axis: Any) -> None:
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(v, Variable) for v in inputs):
        raise TypeError(f"compile_step: inputs must be a list of symbolic variables, got {describe(inputs)}")
    if updates is not None and not hasattr(updates, "items"):
        raise TypeError(f"compile_step: updates must be a dictionary of updates, got {describe(updates)}")
    if batch_axis is not None and not isinstance(batch_axis, str):
        raise TypeError(
            f"compile_step: batch_axis must be the name of a mesh axis, got {describe(batch_axis)}"
        )
    if batch_axis is not None and mesh is None:
        raise ValueError(f"compile_step: batch_axis={batch_axis!r} needs a mesh; give mesh= too")
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
    batch_axis: str | None = None,
    results: str = "host",
    shard_state: bool = False,
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
        mesh's batch axis, params and state are replicated (over every other axis too); the
        outputs are those of the global batch. A list of devices makes a one-axis mesh. Across
        processes (``jax.distributed.initialize``), each process passes its own part of the
        global batch.
    batch_axis : str, optional
        The name of the mesh axis the batch is split along. Default: the mesh's only axis,
        whatever its name; for a mesh of several axes, the one named ``"data"`` (a mesh with
        several axes and none named ``"data"`` needs ``batch_axis``). For a list of devices,
        the name of the axis made (default ``"data"``).
    results : {"host", "device"}
        JAX only: ``"host"`` (default) returns the outputs as NumPy arrays, which waits for the
        step to finish; ``"device"`` returns them as JAX arrays, read when the caller wants
        (``np.asarray``, ``float``), so that calls queue on the device without waiting.
    shard_state : bool
        JAX with a mesh only: split the optimizer state over the mesh's batch axis instead of
        replicating it (ZeRO stage 1): each of its n devices holds and updates 1/n of each state
        array (see the module's notes), and the new params are gathered; the trajectory is the
        replicated step's. The state is every updated variable that is not a param (those of an
        :class:`~updates.Updates`; of a plain dictionary, the keys the outputs do not read).
        ``step.bytes_per_device()`` tells what each device holds.

    Returns
    -------
    Step
        ``step(*input_values)`` runs one step; ``step.sync()`` writes the device values back
        into the shared variables (done for you by the state functions and by other steps that
        read them).

    Raises
    ------
    TypeError, ValueError
        For a mode whose backend is not installed, a mesh without JAX, a ``batch_axis`` without
        a mesh or that is not one of its axes, an input without a batch axis under a mesh (and,
        at a call, a batch that does not split over the devices).

    Warns
    -----
    UserWarning
        With ``mode="JAX"``, once per build when the graph holds runtime assertions, which JAX
        does not check (e.g. the broadcast checks of inputs of unknown shape), listing them.

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
    _check(inputs, updates, mesh, batch_axis)
    single = isinstance(outputs, Variable)
    listed = [outputs] if single else list(outputs or [])
    jax_mode = isinstance(mode, str) and mode.upper() == "JAX"
    if mesh is not None and not jax_mode:
        raise ValueError(f"compile_step: mesh needs mode='JAX', got mode={mode!r}")
    if results not in ("host", "device"):
        raise ValueError(f"compile_step: results must be 'host' or 'device', got {results!r}")
    if results == "device" and not jax_mode:
        raise ValueError(f"compile_step: results='device' needs mode='JAX', got mode={mode!r}")
    if not isinstance(shard_state, bool):
        raise TypeError(f"compile_step: shard_state must be True or False, got {describe(shard_state)}")
    if shard_state and mesh is None:
        raise ValueError("compile_step: shard_state=True splits the state over a mesh; give mesh= too")
    if not jax_mode:
        function = pytensor.function(list(inputs), outputs, updates=updates, mode=mode)
        return Step(function, single, mode)
    try:
        import jax  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "compile_step: mode='JAX' needs jax, which is not installed; pip install 'pytensor-updates[jax]'"
        ) from err
    mesh, axis = _as_mesh(mesh, batch_axis)
    step = JAXStep(
        inputs,
        listed,
        dict(updates or {}),
        single,
        mesh,
        axis,
        on_device=results == "device",
        params=_params_of(updates or {}, listed),
        shard_state=shard_state,
    )
    _tell_skipped(step.skipped_assertions)
    return step
