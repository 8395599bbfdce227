"""The multi-tensor path: one graph node applies a rule to every parameter of a dtype.

The per-parameter path (``core.apply_rule`` under :func:`updates.per_parameter`) builds a few
nodes per parameter, and PyTensor's Numba linker compiles such graphs in time that grows faster
than the node count. Here a rule adds a constant number of nodes whatever the number of
parameters: one :class:`FusedStep` per dtype, plus the scalars computed once per step.

Its state lives in flat buffers, one per slot and dtype (``adam.m`` holds the first moment of
every float32 parameter, end to end, in the order of ``params``); ``Updates.named_state`` shows
each parameter's part under its own name.

The rule's kernel is turned once into a scalar :class:`~pytensor.scalar.Composite`, and the Op
runs it

- under Numba, as one generated loop per parameter over the raveled arrays (in place when
  PyTensor allows it: the params and buffers are updated variables of the function);
- in ``perform`` (Python and C VM linkers), as one compiled elementwise function over all the
  parameters concatenated;
- under JAX and PyTorch, as the equivalent graph of ordinary ops (:meth:`FusedStep.expand`:
  concatenate, kernel, split), traced once by the backend.
"""

from __future__ import annotations

import hashlib
import math
import operator
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

from updates.grads import label

try:  # PyTensor >= 2.32
    from pytensor.graph.traversal import toposort
except ImportError:  # pragma: no cover
    from pytensor.graph.basic import io_toposort as _io_toposort

    def toposort(outputs):
        return _io_toposort([], outputs)


def flat_state(params, indices, role: str, suffix: str = "") -> pytensor.compile.SharedVariable:
    """A zero buffer holding one slot of every param, end to end; ``tag.slices`` names each part."""
    shapes = [p.get_value(borrow=True).shape for p in params]
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    buffer = pytensor.shared(np.zeros(total, dtype=params[0].dtype), name=role + suffix, shape=(total,))
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    buffer.tag.initial = 0.0
    buffer.tag.slices = tuple(
        (f"{label(p, i)}.{role}", start, shape) for p, i, start, shape in zip(params, indices, starts, shapes)
    )
    return buffer


#: From this many elements on, ``perform`` runs the kernel as a Numba loop (vectorized, in place)
#: rather than PyTensor's C elementwise loop (about 3-4x the memory-bandwidth bound); below it, the
#: one-time Numba compilation (seconds) would not pay off.
NUMBA_LOOP_MIN_SIZE = 2**20


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
    def numba_loop(self):
        """The kernel as a Numba loop over 1-d arrays, in place (None without Numba's dispatch)."""
        try:
            import numba

            namespace, _ = _numba_namespace(self, _loop_source(self))
        except ImportError:  # pragma: no cover - PyTensor 2.38 without numba
            return None
        # PyTensor's numba_njit leaves out the wrapper that lets Python call the function
        return numba.njit(namespace["loop"].py_func)

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
        """The kernel over all the params, as one elementwise call or (large) a Numba loop per param.

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
        loop = self.numba_loop if flat_param.size >= NUMBA_LOOP_MIN_SIZE else None
        if loop is None:
            flat_grad = np.concatenate(grads, axis=None, dtype=self.dtype, casting="same_kind")
            scalars = [np.asarray(x, dtype=self.dtype) for x in scalars]
            new_param, *buffers = self.vector_function(flat_param, flat_grad, *buffers, *scalars)
            flat_param[...] = new_param
        else:
            h = [np.asarray(x, dtype=self.dtype)[()] for x in scalars]
            starts = self.starts
            for start, stop, grad in zip(starts, starts[1:], grads):
                segment = [buffer[start:stop] for buffer in buffers]
                loop(flat_param[start:stop], np.ravel(grad), *segment, *h)
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
        starts = np.cumsum([0, *(math.prod(shape) for shape in self.shapes)]).tolist()
        new_params = [
            new_param[start:stop].reshape(shape)
            for start, stop, shape in zip(starts, starts[1:], self.shapes)
        ]
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


# -- Numba ---------------------------------------------------------------------------------------


def _numba_source(op: FusedStep) -> str:
    """Python source of the step: one in-place loop over the raveled elements, run per param.

    The raveled params and gradients are gathered in tuples of one type, so the loop is called
    from a single site however many params there are (the compiled code does not grow with their
    number). Each call sees contiguous views indexed from 0 and updates them in place, which
    lets LLVM vectorize it. Out of place (before PyTensor's in-place rewrite allows otherwise),
    the params and buffers are copied first.
    """
    n, k = op.n_params, op.n_slots
    params, grads = [f"p{i}" for i in range(n)], [f"g{i}" for i in range(n)]
    slots, scalars = [f"s{j}" for j in range(k)], [f"h{j}" for j in range(len(op.scalar_names))]
    copy = "" if op.inplace else ".copy()"
    views = "".join(f", {s}[o : o + size]" for s in slots)
    lines = [
        _loop_source(op),
        "",
        f"def fused_step({', '.join([*params, *grads, *slots, *scalars])}):",
        *(f"    {x} = {x}{copy}" for x in [*params, *slots]),
        *(f"    {h} = {h}.item()" for h in scalars),
        f"    flat_params = ({''.join(f'{p}.reshape(-1), ' for p in params)})",
        f"    flat_grads = ({''.join(f'np.ascontiguousarray({g}).reshape(-1), ' for g in grads)})",
        "    total = 0",
        f"    for j in range({n}):",
        "        if flat_grads[j].size != flat_params[j].size:",
        "            raise ValueError('FusedStep: a gradient and its param differ in size')",
        "        total += flat_params[j].size",
        *(
            ["    if total != s0.size:", "        raise ValueError('FusedStep: the params changed size')"]
            if k
            else []
        ),
        "    o = 0",
        f"    for j in range({n}):",
        "        size = flat_params[j].size",
        f"        loop(flat_params[j], flat_grads[j]{views}{''.join(f', {h}' for h in scalars)})",
        "        o += size",
    ]
    results = [*params, *slots]
    lines.append(f"    return {results[0]}" if len(results) == 1 else f"    return ({', '.join(results)},)")
    return "\n".join(lines)


def _loop_source(op: FusedStep) -> str:
    """``loop(p, g, *slots, *scalars)``: the kernel over 1-d arrays, in place."""
    slots, scalars = [f"s{j}" for j in range(op.n_slots)], [f"h{j}" for j in range(len(op.scalar_names))]
    elements = ", ".join(["p[i]", *(f"{s}[i]" for s in slots)])
    kernel_args = ", ".join(["p[i]", "g[i]", *(f"{s}[i]" for s in slots), *scalars])
    return "\n".join(
        [
            f"def loop({', '.join(['p', 'g', *slots, *scalars])}):",
            "    for i in range(p.size):",
            f"        ({elements},) = wrap(kernel({kernel_args}))",
        ]
    )


def _numba_namespace(op: FusedStep, source: str) -> tuple[dict, str | None]:
    """Execute generated ``source`` with the kernel compiled by Numba; also its cache key."""
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key, numba_njit

    kernel, kernel_key = numba_funcify_and_cache_key(op.composite, node=None)
    single = len(op.composite.outputs) == 1
    namespace = {"np": np, "kernel": kernel, "wrap": numba_njit(_as_tuple if single else _identity)}
    exec(compile(source, "<updates.fused>", "exec"), namespace)
    namespace["loop"] = numba_njit(namespace["loop"])
    # The generated code is a function of the kernel and of the source text alone.
    key = None if kernel_key is None else hashlib.sha256(f"{kernel_key}\n{source}".encode()).hexdigest()
    return namespace, key


def _as_tuple(x):
    return (x,)


def _identity(x):
    return x


def _register_numba():
    try:
        from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key
    except ImportError:  # pragma: no cover - numba is optional for PyTensor 2.38
        return

    @register_funcify_and_cache_key(FusedStep)
    def numba_funcify_fused_step(op, node=None, **kwargs):
        namespace, key = _numba_namespace(op, _numba_source(op))
        return numba_njit(namespace["fused_step"]), key


_register_numba()


# -- JAX and PyTorch: the expanded graph, traced once ------------------------------------------


def _funcify_expanded(funcify):
    def funcify_fused_step(op, node, **kwargs):
        from pytensor.graph.fg import FunctionGraph

        kwargs.pop("storage_map", None)
        inputs = [x.type() for x in node.inputs]
        graph = FunctionGraph(inputs, op.expand(inputs), clone=False)
        return funcify(graph, squeeze_output=True, **kwargs)

    return funcify_fused_step


def _register_array_backends():
    for module, name in [
        ("pytensor.link.jax.dispatch", "jax_funcify"),
        ("pytensor.link.pytorch.dispatch", "pytorch_funcify"),
    ]:
        try:
            funcify = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:  # the backend's array library is not installed
            continue
        funcify.register(FusedStep)(_funcify_expanded(funcify))


_register_array_backends()
