"""The multi-tensor path: one graph node applies a rule to every parameter of a dtype.

The per-parameter path (``core.apply_rule`` under :func:`updates.per_parameter`) builds a few
nodes per parameter, and PyTensor's Numba linker compiles such graphs in time that grows faster
than the node count. Here a rule adds a constant number of nodes whatever the number of
parameters: one :class:`FusedStep` per dtype, plus the scalars computed once per step.

Its state lives in flat buffers, one per slot and dtype (``adam.m`` holds the first moment of
every float32 parameter, end to end, in the order of ``params``); ``Updates.named_state`` shows
each parameter's part under its own name.

The rule's kernel is turned once into a scalar :class:`~pytensor.scalar.Composite`, compiled
once per (rule, dtype) by Numba as a function over raw pointers (``updates.numba_step``), and the
Op runs it

- under Numba, as a chain of small in-place nodes, a few params each, that call that function
  (``updates.numba_step``: what keeps the first call cheap to compile);
- in ``perform`` (Python and C VM linkers), on all the params and gradients end to end (in place
  when PyTensor allows it), or with PyTensor's elementwise loop where Numba is missing;
- under JAX and PyTorch, as the equivalent graph of ordinary ops (:meth:`FusedStep.expand`:
  concatenate, kernel, split), traced once by the backend.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import math
import operator
import sys
from functools import cached_property
from types import SimpleNamespace

import numpy as np
import pytensor
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.tensor.elemwise import Elemwise

from updates.grads import Piece, label, new_state

try:  # PyTensor >= 2.32
    from pytensor.graph.traversal import toposort
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import io_toposort as _io_toposort

    def toposort(outputs):
        return _io_toposort([], outputs)


def flat_state(params, indices, role: str, suffix: str = "") -> pytensor.compile.SharedVariable:
    """A zero buffer holding one slot of every param, end to end, each a named piece."""
    shapes = [p.get_value(borrow=True).shape for p in params]
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    pieces = [
        Piece(f"{label(p, i)}.{role}", start, shape)
        for p, i, start, shape in zip(params, indices, starts, shapes)
    ]
    return new_state(np.zeros(total, dtype=params[0].dtype), role + suffix, 0.0, (total,), pieces)


class FusedStep(Op):
    """Apply ``kernel(h, param, grad, *slots)`` to many parameters of one dtype at once.

    Inputs: the P params, their P gradients, one flat buffer per slot, one 0-d tensor per scalar
    of ``h``. Outputs: the P new params, then the new buffers.
    """

    __props__ = ("kernel", "dtype", "shapes", "n_slots", "scalar_names", "inplace")

    def __init__(self, kernel, dtype, shapes, n_slots, scalar_names, inplace=False):
        self.kernel = kernel
        self.dtype = dtype
        self.shapes = tuple(tuple(shape) for shape in shapes)
        self.n_params = n_params = len(self.shapes)
        self.n_slots = n_slots
        self.scalar_names = tuple(scalar_names)
        self.inplace = inplace
        if inplace:
            destroyed = [*range(n_params), *range(2 * n_params, 2 * n_params + n_slots)]
            self.destroy_map = {out: [inp] for out, inp in enumerate(destroyed)}

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        params = inputs[: self.n_params]
        buffers = inputs[2 * self.n_params : 2 * self.n_params + self.n_slots]
        return Apply(self, inputs, [x.type() for x in (*params, *buffers)])

    def __str__(self):
        return f"FusedStep{{{getattr(self.kernel, 'name', '?')}, {self.dtype}, {self.n_params} params}}"

    # -- the kernel, in the forms the linkers need --------------------------------------------

    def _symbolic(self, make):
        """Inputs made by ``make(dtype)`` and the kernel's outputs on them."""
        inputs = [make() for _ in range(2 + self.n_slots)]
        scalars = {name: pt.scalar(name, dtype=self.dtype) for name in self.scalar_names}
        outputs = self.kernel(SimpleNamespace(**scalars), *inputs)
        return [*inputs, *scalars.values()], list(outputs)

    @cached_property
    def composite(self) -> ps.Composite:
        """The kernel as one scalar op: (param, grad, *slots, *scalars) -> (param, *slots)."""
        inputs, outputs = self._symbolic(lambda: pt.scalar(dtype=self.dtype))
        return _as_composite(inputs, outputs)

    @cached_property
    def vector_function(self):
        """The kernel compiled on 1-d arrays, for ``perform`` (new arrays out: in place, the
        rewritten graph may write one output over another's input)."""
        inputs, outputs = self._symbolic(lambda: pt.vector(dtype=self.dtype))
        linker = "cvm" if pytensor.config.cxx else "py"
        mode = Mode(linker=linker, optimizer="fast_run")
        function = pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore")
        function.trust_input = True
        return function

    @cached_property
    def host_kernel(self):
        """The kernel compiled by Numba, callable from Python (None without PyTensor's Numba)."""
        from updates.numba_step import host_kernel

        return host_kernel(self)

    @cached_property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @cached_property
    def starts(self) -> list[int]:
        """Where each param begins in the flat arrays, and the total size last."""
        return np.cumsum([0, *self.sizes]).tolist()

    def split(self, inputs):
        p = self.n_params
        s = 2 * p + self.n_slots
        return inputs[:p], inputs[p : 2 * p], inputs[2 * p : s], inputs[s:]

    def perform(self, node, inputs, output_storage):
        """The kernel over all the params: the rule's compiled kernel (Numba) on the params and
        gradients end to end, or per param when large; without Numba, PyTensor's elementwise loop.

        In place, the params are moved into one flat array on the first call and handed back as
        views of it, so the next calls (which get those views back) neither gather nor scatter
        them; a param replaced in between (``set_value``) makes the step gather them again.
        """
        params, grads, buffers, scalars = self.split(inputs)
        if [p.size for p in params] != self.sizes:
            raise ValueError(f"{self}: the params changed size after the updates were built")
        if [g.size for g in grads] != self.sizes:
            raise ValueError(f"{self}: a gradient and its param differ in size")
        flat_param, views = self._gathered(node, params)
        if not self.inplace:
            buffers = [np.array(b, dtype=self.dtype) for b in buffers]
        kernel = self.host_kernel
        if kernel is None:  # no Numba: PyTensor's C (or Python) elementwise loop
            flat_grad = np.concatenate(grads, axis=None, dtype=self.dtype, casting="same_kind")
            scalars = [np.asarray(x, dtype=self.dtype) for x in scalars]
            new_param, *buffers = self.vector_function(flat_param, flat_grad, *buffers, *scalars)
            flat_param[...] = new_param
        else:
            kernel(flat_param, grads, buffers, np.array(scalars or [0], dtype=self.dtype), self.starts)
        for storage, view in zip(output_storage, views):
            storage[0] = view
        for storage, buffer in zip(output_storage[self.n_params :], buffers):
            storage[0] = buffer

    def _gathered(self, node, params):
        """The params end to end in one array this step may overwrite, and a view of it per param."""
        packed = getattr(node.tag, "packed", None)
        if self.inplace and packed is not None and all(map(operator.is_, params, packed[1])):
            return packed
        flat = np.concatenate(params, axis=None, dtype=self.dtype, casting="same_kind")
        starts = self.starts
        views = [flat[a:b].reshape(shape) for a, b, shape in zip(starts, starts[1:], self.shapes)]
        if self.inplace:
            node.tag.packed = (flat, views)
        return flat, views

    def expand(self, inputs):
        """The same step as a graph of ordinary ops: concatenate, apply the kernel, split."""
        params, grads, buffers, scalars = self.split(inputs)
        flat_param, flat_grad = (pt.concatenate([pt.flatten(x) for x in xs]) for xs in (params, grads))
        h = SimpleNamespace(**dict(zip(self.scalar_names, scalars)))
        new_param, *new_buffers = self.kernel(h, flat_param, flat_grad, *buffers)
        starts = self.starts
        new_params = [new_param[a:b].reshape(shape) for a, b, shape in zip(starts, starts[1:], self.shapes)]
        return [*new_params, *new_buffers]

    def infer_shape(self, fgraph, node, shapes):
        params = shapes[: self.n_params]
        buffers = shapes[2 * self.n_params : 2 * self.n_params + self.n_slots]
        return [*params, *buffers]


def _as_composite(inputs: list[Variable], outputs: list[Variable]) -> ps.Composite:
    """Rebuild a graph of elementwise ops on 0-d tensors as one scalar Composite."""
    scalar_of = {x: ps.get_scalar_type(x.dtype)() for x in inputs}
    for node in toposort(outputs):
        if not isinstance(node.op, Elemwise):
            raise TypeError(f"a rule kernel must be elementwise, found {node.op}")
        args = [
            ps.constant(np.asarray(x.data).item(), dtype=x.dtype) if isinstance(x, Constant) else scalar_of[x]
            for x in node.inputs
        ]
        scalar_of.update(zip(node.outputs, node.op.scalar_op.make_node(*args).outputs))
    # an output that is an input as it is (a wrapper passing a value through) needs an identity
    results = [ps.identity(scalar_of[x]) if x in inputs else scalar_of[x] for x in outputs]
    return ps.Composite([scalar_of[x] for x in inputs], results)


# -- in place ------------------------------------------------------------------------------------


@node_rewriter([FusedStep])
def _fused_step_inplace(fgraph, node):
    """Let the step overwrite the params and buffers it updates (validated by PyTensor)."""
    op = node.op
    if op.inplace:
        return None
    inplace = FusedStep(op.kernel, op.dtype, op.shapes, op.n_slots, op.scalar_names, inplace=True)
    return inplace.make_node(*node.inputs).outputs


def _register_rewrites():
    from pytensor.compile import optdb

    optdb.register(
        "updates_fused_step_inplace",
        in2out(_fused_step_inplace, ignore_newtrees=True),
        "fast_run",
        "inplace",
        "numba",
        position=50.4,
    )


_register_rewrites()


# -- JAX and PyTorch: the expanded graph, traced once ------------------------------------------


def _funcify_expanded(funcify, typed: bool = False):
    """The step as the backend's function of the expanded graph. ``typed`` (JAX): the inputs are
    cast to their declared dtypes first, as JAX with 64-bit types on may hand a float32 model's
    gradients over as float64; the step then computes in the params' dtype, as PyTensor says."""

    def funcify_fused_step(op, node, **kwargs):
        from pytensor.graph.fg import FunctionGraph

        kwargs.pop("storage_map", None)
        inputs = [x.type() for x in node.inputs]
        graph = FunctionGraph(inputs, op.expand(inputs), clone=False)
        function = funcify(graph, squeeze_output=True, **kwargs)
        if not typed:
            return function
        import jax.numpy as jnp

        dtypes = [x.dtype for x in node.inputs]

        def fused_step(*arguments):
            return function(*(jnp.asarray(x, dtype=d) for x, d in zip(arguments, dtypes)))

        return fused_step

    return funcify_fused_step


def _register_array_backends():
    """Register the expanded graph with PyTensor's JAX and PyTorch backends when PyTensor imports
    them (importing them here would import jax and torch with every ``import updates``: 1 s)."""
    for module, name in [
        ("pytensor.link.jax.dispatch", "jax_funcify"),
        ("pytensor.link.pytorch.dispatch", "pytorch_funcify"),
    ]:
        when_imported(module, lambda loaded, name=name: _register_expanded(getattr(loaded, name)))


def _register_expanded(funcify) -> None:
    funcify.register(FusedStep)(_funcify_expanded(funcify, typed=funcify.__name__ == "jax_funcify"))


def when_imported(name: str, callback) -> None:
    """Call ``callback(module)`` once the module ``name`` is imported (now, if it already is)."""
    if name in sys.modules:
        callback(sys.modules[name])
        return

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is not None and spec.loader is not None:
                execute = spec.loader.exec_module

                def exec_module(module):
                    execute(module)
                    callback(module)

                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Hook())


_register_array_backends()
