"""The multi-tensor path: one graph node applies a rule to every parameter of a dtype.

The per-parameter path (``core.apply_rule`` under :func:`updates.per_parameter`) builds a few
nodes per parameter, and PyTensor's Numba linker compiles such graphs in time that grows faster
than the node count. Here a rule adds a constant number of nodes whatever the number of
parameters: one :class:`FusedStep` per dtype, plus the scalars computed once per step.

Its state lives in flat buffers, one per slot and dtype (``adam.m`` holds the first moment of
every float32 parameter, end to end, in the order of ``params``); ``Updates.named_state`` shows
each parameter's part under its own name.

The rule's kernel is turned once into a scalar :class:`~pytensor.scalar.Composite`
(:attr:`FusedStep.composite`), from which each linker's backend (``updates.backends``) builds the
form that costs least for it: C code under the C VM, a chain of in-place nodes calling a Numba
kernel under Numba, the expanded graph (:meth:`FusedStep.expand`) under JAX and PyTorch. Without
a backend (``FAST_COMPILE``, the Python linker) ``perform`` runs the kernel compiled on vectors,
param by param. A step without state becomes its equations per param in every mode that
rewrites for speed, joining the gradient's own nodes.
"""

from __future__ import annotations

import math
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
        """The kernel compiled on 1-d arrays, for ``perform``."""
        return vector_function(*self._symbolic(lambda: pt.vector(dtype=self.dtype)))

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
        """The kernel compiled on vectors, run on each param and its segments of the buffers."""
        run_per_param(self, self.vector_function, inputs, output_storage)

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


def vector_function(inputs: list[Variable], outputs: list[Variable]):
    """A function of 1-d arrays, compiled with PyTensor's C loops (Python's without a compiler),
    returning new arrays (in place, the rewritten graph may write one output over another's
    input)."""
    mode = Mode(linker="cvm" if pytensor.config.cxx else "py", optimizer="fast_run")
    function = pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore")
    function.trust_input = True
    return function


def run_per_param(op, vector_function, inputs, output_storage) -> None:
    """``perform`` of a multi-tensor step: ``vector_function(param, grad, *buffers, *scalars)``
    once on the params and gradients end to end, each param then given its part, in place if
    ``op.inplace``."""
    params, grads, buffers, scalars = op.split(inputs)
    for i, (param, grad, a, b) in enumerate(zip(params, grads, op.starts, op.starts[1:])):
        if param.size != b - a or any(buffer.size != op.starts[-1] for buffer in buffers):
            raise ValueError(f"{op}: params[{i}] changed size after the updates were built")
        if grad.size != param.size:
            raise ValueError(f"{op}: grads[{i}] and its param differ in size")
    if not op.inplace:
        params, buffers = [p.copy() for p in params], [b.copy() for b in buffers]
    params = [p if p.flags.c_contiguous else p.copy() for p in params]  # strided (set by the user)
    flat_param, flat_grad = (
        np.concatenate(xs, axis=None, dtype=op.dtype, casting="same_kind") for xs in (params, grads)
    )
    scalars = [np.asarray(x, dtype=op.dtype) for x in scalars]
    new_param, *new_buffers = vector_function(flat_param, flat_grad, *buffers, *scalars)
    for param, a, b in zip(params, op.starts, op.starts[1:]):
        param.reshape(-1)[...] = new_param[a:b]
    for buffer, new in zip(buffers, new_buffers):
        buffer[...] = new
    for storage, value in zip(output_storage, [*params, *buffers]):
        storage[0] = value


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


@node_rewriter([FusedStep])
def _stateless_step_per_param(fgraph, node):
    """A step without state (sgd, decoupled weight decay) as its equations on each param, before
    PyTensor simplifies and fuses the graph: they join the nodes that compute the gradients, as
    SGD written by hand does, which costs nothing to compile and nothing per call."""
    op = node.op
    if op.n_slots:
        return None
    params, grads, _, scalars = op.split(node.inputs)
    h = SimpleNamespace(**dict(zip(op.scalar_names, scalars)))
    return [
        out.type.filter_variable(op.kernel(h, param, grad)[0], allow_convert=True)
        for out, param, grad in zip(node.outputs, params, grads)
    ]


def _register_rewrites():
    from pytensor.compile import optdb

    # before PyTensor's canonicalization (1), in every mode that rewrites for speed
    optdb.register(
        "updates_stateless_step_per_param", in2out(_stateless_step_per_param), "fast_run", position=0.5
    )

    optdb.register(
        "updates_fused_step_inplace",
        in2out(_fused_step_inplace, ignore_newtrees=True),
        "fast_run",
        "inplace",
        "numba",
        position=50.4,
    )


_register_rewrites()
