"""The multi-tensor path: one graph node applies a rule to every parameter of a dtype.

The per-parameter path (``engine.apply_rule`` under :func:`updates.per_parameter`) builds a few
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
once on all the params end to end. A step without state becomes its equations per param in every
mode that rewrites for speed, joining the gradient's own nodes (under the C linkers, only below
:data:`LARGE_STATELESS_STEP` elements). Before either, an elementwise wrapper's node
joins the node of the rule it wraps (:class:`ComposedKernel`): one node for the whole stack.
The rewrites of ``updates.folding`` fold more into the node: the guard of
:func:`~updates.apply_if_finite` and an elementwise transform of the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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

try:  # PyTensor >= 2.32
    from pytensor.graph.traversal import ancestors, toposort
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import ancestors
    from pytensor.graph.basic import io_toposort as _io_toposort

    def toposort(outputs):
        return _io_toposort([], outputs)


class MultiTensorOp(Op):
    """The layout of a multi-tensor step, shared by :class:`FusedStep` and its compiled forms.

    Inputs: the P params, their P gradients, one flat buffer per slot (the params' segments end
    to end), one 0-d tensor per scalar. Outputs: the P new params, then the
    new buffers, written over the inputs if ``inplace``. ``perform`` runs
    ``self.vector_function(param, grad, *slots, *scalars)``, the kernel on 1-d arrays, once on
    all the params end to end.
    """

    def _set_layout(self, dtype: str, n_params: int, n_slots: int, inplace: bool) -> None:
        self.dtype = dtype
        self.n_params = n = n_params
        self.n_slots = n_slots
        self.inplace = inplace
        if inplace:
            destroyed = [*range(n), *range(2 * n, 2 * n + n_slots)]
            self.destroy_map = {out: [i] for out, i in enumerate(destroyed)}

    def split(self, inputs):
        """``(params, grads, buffers, scalars)`` of a list laid out as the inputs."""
        p = self.n_params
        s = 2 * p + self.n_slots
        return inputs[:p], inputs[p : 2 * p], inputs[2 * p : s], inputs[s:]

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        params, _, buffers, _ = self.split(inputs)
        return Apply(self, inputs, [x.type() for x in (*params, *buffers)])

    def infer_shape(self, fgraph, node, shapes):
        params, _, buffers, _ = self.split(shapes)
        return [*params, *buffers]

    def perform(self, node, inputs, output_storage):
        params, grads, buffers, scalars = self.split(inputs)
        self._run(params, grads, buffers, scalars, 0, self.starts, self.starts[-1], output_storage)

    def _check_sizes(self, params, grads, buffers, first, starts, total) -> None:
        for i, (param, grad, a, b) in enumerate(zip(params, grads, starts, starts[1:]), start=first):
            if param.size != b - a or any(buffer.size != total for buffer in buffers):
                raise ValueError(f"{self}: params[{i}] changed size after the updates were built")
            if grad.size != param.size:
                raise ValueError(f"{self}: grads[{i}] and its param differ in size")

    def _flat(self, params, grads):
        """The params and gradients, each end to end in one vector of the step's dtype."""
        return (
            np.concatenate(xs, axis=None, dtype=self.dtype, casting="same_kind") for xs in (params, grads)
        )

    def _outputs(self, params, grads, segments, scalars) -> list:
        """The kernel on the params and gradients end to end and the buffers' ``segments``."""
        scalars = [np.asarray(x, dtype=self.dtype) for x in scalars]
        return self.vector_function(*self._flat(params, grads), *segments, *scalars)

    def _all_finite(self, params, grads, buffers, scalars, first, starts, total) -> bool:
        """Whether the kernel's outputs on what ``_run`` would step are all finite (it writes
        nothing): the Python form of a check."""
        self._check_sizes(params, grads, buffers, first, starts, total)
        segments = [buffer[starts[0] : starts[-1]] for buffer in buffers]
        return all(np.isfinite(x).all() for x in self._outputs(params, grads, segments, scalars))

    def _run(self, params, grads, buffers, scalars, first, starts, total, output_storage) -> None:
        """The kernel on ``params`` (the step's params from index ``first`` on) and their segments
        ``starts[0]:starts[-1]`` of the buffers (``total`` elements each), once on them all end to
        end."""
        self._check_sizes(params, grads, buffers, first, starts, total)
        if not self.inplace:
            params, buffers = [p.copy() for p in params], [b.copy() for b in buffers]
        params = [p if p.flags.c_contiguous else p.copy() for p in params]  # strided (set by the user)
        segments = [buffer[starts[0] : starts[-1]] for buffer in buffers]
        new_param, *new_segments = self._outputs(params, grads, segments, scalars)
        for param, a, b in zip(params, starts, starts[1:]):
            param.reshape(-1)[...] = new_param[a - starts[0] : b - starts[0]]
        for segment, new in zip(segments, new_segments):
            segment[...] = new
        for storage, value in zip(output_storage, [*params, *buffers]):
            storage[0] = value


class FusedStep(MultiTensorOp):
    """Apply ``kernel(h, param, grad, *slots)`` to many parameters of one dtype at once (the
    layout of :class:`MultiTensorOp`, one scalar input per name of ``h``)."""

    __props__ = ("kernel", "dtype", "shapes", "n_slots", "scalar_names", "inplace")

    def __init__(self, kernel, dtype, shapes, n_slots, scalar_names, inplace=False):
        self.kernel = kernel
        self.shapes = tuple(tuple(shape) for shape in shapes)
        self.scalar_names = tuple(scalar_names)
        self.sizes = [math.prod(shape) for shape in self.shapes]
        #: Where each param begins in the flat buffers, and their size last.
        self.starts = np.cumsum([0, *self.sizes]).tolist()
        self._set_layout(dtype, len(self.shapes), n_slots, inplace)

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

    def expand(self, inputs):
        """The same step as a graph of ordinary ops: concatenate, apply the kernel, split."""
        params, grads, buffers, scalars = self.split(inputs)
        flat_param, flat_grad = (pt.concatenate([pt.flatten(x) for x in xs]) for xs in (params, grads))
        h = SimpleNamespace(**dict(zip(self.scalar_names, scalars)))
        new_param, *new_buffers = self.kernel(h, flat_param, flat_grad, *buffers)
        starts = self.starts
        new_params = [new_param[a:b].reshape(shape) for a, b, shape in zip(starts, starts[1:], self.shapes)]
        return [*new_params, *new_buffers]


def gated_by(flag: Variable, new, old) -> tuple:
    """``new`` where the scalar ``flag`` is positive, else ``old``, pair by pair: a step that
    leaves the param and slots as they were (the loop's guard, :func:`~updates.apply_if_finite`)."""
    return tuple(pt.switch(flag > 0, value, before) for value, before in zip(new, old))


def vector_function(inputs: list[Variable], outputs: list[Variable]):
    """A function of 1-d arrays, compiled with PyTensor's C loops (Python's without a compiler),
    returning new arrays (in place, the rewritten graph may write one output over another's
    input)."""
    mode = Mode(linker="cvm" if pytensor.config.cxx else "py", optimizer="fast_run")
    function = pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore")
    function.trust_input = True
    return function


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


# -- a rule and its wrappers in one node ---------------------------------------------------------


@dataclass(frozen=True)
class ComposedKernel:
    """Kernels run one after another on each element, as one: each part's ``x`` is the new value
    of the param that the part before gives (the rule's gradient for the first), its ``param`` the
    param as it was. ``parts``: ``(kernel, its scalar names, its number of slots)`` each; the
    scalars are named ``<name>_<k>`` for part ``k``, in the parts' order, and the slots follow
    the parts' order too."""

    parts: tuple[tuple[object, tuple[str, ...], int], ...]

    @property
    def name(self) -> str:
        return "+".join(getattr(kernel, "name", "?") for kernel, _, _ in self.parts)

    def scalar_names(self) -> tuple[str, ...]:
        return tuple(f"{name}_{k}" for k, (_, names, _) in enumerate(self.parts) for name in names)

    def __call__(self, h: SimpleNamespace, param, x, *slots):
        value, new_slots, start = x, [], 0
        for k, (kernel, names, n_slots) in enumerate(self.parts):
            own = SimpleNamespace(**{name: getattr(h, f"{name}_{k}") for name in names})
            value, *new = kernel(own, param, value, *slots[start : start + n_slots])
            new_slots += new
            start += n_slots
        return (value, *new_slots)


def _parts(op: FusedStep) -> tuple:
    if isinstance(op.kernel, ComposedKernel):
        return op.kernel.parts
    return ((op.kernel, op.scalar_names, op.n_slots),)


@node_rewriter([FusedStep])
def _merge_with_the_step_before(fgraph, node):
    """A step whose inputs are the params of the step before and the new values it gives them
    (an elementwise wrapper around a rule: weight decay, lookahead, EMA, momentum) becomes one
    node with it, whose kernel runs both (:class:`ComposedKernel`): one pass over the params, one
    node per param fewer in every chain (the README's stack under the C VM: 40 chained nodes ->
    10). Left apart when the first step's new params are used elsewhere, or when the second's
    buffers or scalars depend on the first's results."""
    second = node.op
    params, xs, buffers, scalars = second.split(node.inputs)
    before = xs[0].owner
    if before is None or not isinstance(before.op, FusedStep) or second.inplace or before.op.inplace:
        return None
    first = before.op
    n = first.n_params
    first_params, grads, first_buffers, first_scalars = first.split(before.inputs)
    if (first.dtype, first.shapes) != (second.dtype, second.shapes) or list(first_params) != list(params):
        return None
    if list(xs) != before.outputs[:n] or any(len(fgraph.clients[x]) != 1 for x in xs):
        return None
    if set(before.outputs) & set(ancestors([*buffers, *scalars])):
        return None
    kernel = ComposedKernel(_parts(first) + _parts(second))
    slots = first.n_slots + second.n_slots
    merged = FusedStep(kernel, first.dtype, first.shapes, slots, kernel.scalar_names())
    outputs = merged(*params, *grads, *first_buffers, *buffers, *first_scalars, *scalars, return_list=True)
    # the merged outputs: the params, the first step's buffers, the second's
    return dict(zip([*node.outputs[:n], *before.outputs[n:], *node.outputs[n:]], outputs))


# -- in place ------------------------------------------------------------------------------------


@node_rewriter([FusedStep])
def _fused_step_inplace(fgraph, node):
    """Let the step overwrite the params and buffers it updates (validated by PyTensor)."""
    op = node.op
    if op.inplace:
        return None
    inplace = FusedStep(op.kernel, op.dtype, op.shapes, op.n_slots, op.scalar_names, inplace=True)
    return inplace.make_node(*node.inputs).outputs


#: Elements over all its params from which a step without state stays one multi-tensor node in
#: the modes that run C code, where PyTensor's own elementwise C loops are slower than the C chain
#: (SGD over 256 float32 params of 16k elements: 1.80 -> 0.65 ms, the bandwidth bound 0.45 ms;
#: over one of 16M: 6.1 -> 3.2 ms, the bound 3.2 ms). Smaller, it joins the gradients' nodes.
LARGE_STATELESS_STEP = 2**16


def _stateless_step_per_param(large: bool):
    """The rewrite that writes a step without state (sgd, decoupled weight decay) as its
    equations on each param, before PyTensor simplifies and fuses the graph: they join the nodes
    that compute the gradients, as SGD written by hand does, which costs nothing to compile and
    nothing per call. ``large``: also the steps of :data:`LARGE_STATELESS_STEP` elements or more."""

    @node_rewriter([FusedStep])
    def stateless_step_per_param(fgraph, node):
        op = node.op
        if op.n_slots or (op.starts[-1] >= LARGE_STATELESS_STEP and not large):
            return None
        params, grads, _, scalars = op.split(node.inputs)
        h = SimpleNamespace(**dict(zip(op.scalar_names, scalars)))
        return [
            out.type.filter_variable(op.kernel(h, param, grad)[0], allow_convert=True)
            for out, param, grad in zip(node.outputs, params, grads)
        ]

    return stateless_step_per_param


def register_rewrites() -> None:
    """Add the node's own rewrites to PyTensor's database (called once, by ``updates.backends``)."""
    from pytensor.compile import optdb

    # before PyTensor's canonicalization (1), in every mode that rewrites for speed; the wrappers
    # join their rule's node first, so that a step without state joins it rather than the gradient
    optdb.register(
        "updates_merge_consecutive_steps", in2out(_merge_with_the_step_before), "fast_run", position=0.45
    )
    optdb.register(
        "updates_stateless_step_per_param", in2out(_stateless_step_per_param(False)), "fast_run", position=0.5
    )
    # a large step without state too where the elementwise loops are compiled (Numba, JAX); under
    # the C VM and the other linkers it stays one node
    optdb.register(
        "updates_large_stateless_step_per_param",
        in2out(_stateless_step_per_param(True)),
        "numba",
        "jax",
        position=0.5,
    )

    optdb.register(
        "updates_fused_step_inplace",
        in2out(_fused_step_inplace, ignore_newtrees=True),
        "fast_run",
        "inplace",
        "numba",
        position=50.4,
    )
