"""The multi-tensor step under PyTensor's Numba linker: cheap to compile, whatever the number of params.

Numba compiles the whole training function at its first call, and its cost grows faster than
the number of arrays that cross a call inside it: a :class:`~updates.fused.FusedStep` called
with its ``2P + slots`` arrays cost more to compile than the model itself (Adam over 100 params
of shape (10,): 131 s cold where the model alone needs 48.5 s). So in Numba mode a rewrite
(after the in-place passes) replaces each ``FusedStep`` by a chain of :class:`ParamStep` nodes
that thread the flat state buffers from one to the next::

    p_i', m', v' = ParamStep(p_i, g_i, m, v, offsets, h)      (in place on p_i, m and v)

one param per node, or 8 per node beyond 16 params (:func:`chain_widths`); a
:class:`~updates.folding.FusedCheck` (the first pass of a guarded step) becomes such a chain in the
nodes' ``check`` form, threading a flag. The nodes of a width
are one Op (the offsets are an input), so Numba compiles each width once; each call passes a
handful of arrays; the scalars ``h`` travel as one vector, and the 0-d elementwise nodes that
compute them (Adam's bias correction, the counter's increment) become :class:`ScalarStep` nodes,
plain Numba functions (PyTensor's elementwise code generation, made for arrays of any rank,
costs several times more to compile).

The rule's kernel is compiled once per (rule, dtype, slots) as a C-callable function over raw
pointers (``numba.cfunc``), its equations written out as one function (:func:`_scalar_source`),
without fast-math flags. The nodes call it by a symbol name that LLVM resolves to its address
(``llvmlite.binding.add_symbol``), so LLVM cannot inline it at every call site, and the code that
calls it, cached on disk by PyTensor, stays valid in a new process, which registers the symbol
again when it builds the function.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.tensor.basic import MakeVector
from pytensor.tensor.elemwise import Elemwise

from updates.folding import FusedCheck, feeds_a_step
from updates.fused import FusedStep, ancestors
from updates.reductions import AllFinite, SumOfSquares


class ParamStep(Op):
    """A few params' share of a :class:`FusedStep`, in place (built by the Numba rewrite only);
    with ``check``, the share of a :class:`FusedCheck`.

    Inputs: ``n_params`` params, their gradients, one flat buffer per slot, the params' offsets
    in the buffers (an int64 vector) and the scalars ``h`` as one vector; with ``check``, then
    the boolean scalar the checks before it give. Outputs: the new params, then the new
    buffers; with ``check``, the boolean scalar, true when the checks before it and its own new
    values are all finite (it writes nothing).
    """

    __props__ = ("kernel", "dtype", "n_params", "n_slots", "scalar_names", "check")

    def __init__(self, kernel, dtype: str, n_params: int, n_slots: int, scalar_names: tuple, check=False):
        self.kernel = kernel
        self.dtype = dtype
        self.n_params = n = n_params
        self.n_slots = n_slots
        self.scalar_names = tuple(scalar_names)
        self.check = check
        if not check:
            self.destroy_map = {out: [i] for out, i in enumerate([*range(n), *range(2 * n, 2 * n + n_slots)])}

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        if self.check:
            return Apply(self, inputs, [pt.tensor(dtype="bool", shape=())])
        n = self.n_params
        params, buffers = inputs[:n], inputs[2 * n : 2 * n + self.n_slots]
        return Apply(self, inputs, [x.type() for x in (*params, *buffers)])

    def __str__(self):
        kind = "ParamCheck" if self.check else "ParamStep"
        return f"{kind}{{{self.kernel.name}, {self.dtype}, {self.n_params} params}}"

    @property
    def fused(self) -> FusedStep:
        """A one-param FusedStep with the same kernel: its compiled forms serve ``perform``."""
        return _fused(self.kernel, self.dtype, self.n_slots, self.scalar_names)

    def perform(self, node, inputs, output_storage):
        n, s = self.n_params, self.n_slots
        params, grads, buffers = inputs[:n], inputs[n : 2 * n], inputs[2 * n : 2 * n + s]
        offsets, h = inputs[2 * n + s : 2 * n + s + 2]
        ok = not self.check or bool(inputs[-1])
        for param, grad, start in zip(params, grads, offsets.tolist()):
            if not ok:
                break
            segments = [buffer[start : start + param.size] for buffer in buffers]
            new_param, *new_segments = self.fused.vector_function(
                param.ravel(), np.ravel(grad).astype(self.dtype), *segments, *h
            )
            if self.check:
                ok = all(np.isfinite(x).all() for x in (new_param, *new_segments))
                continue
            param.reshape(-1)[...] = new_param
            for segment, new in zip(segments, new_segments):
                segment[...] = new
        if self.check:
            output_storage[0][0] = np.asarray(ok)
            return
        for storage, value in zip(output_storage, [*params, *buffers]):
            storage[0] = value

    def infer_shape(self, fgraph, node, shapes):
        n = self.n_params
        return [()] if self.check else [*shapes[:n], *shapes[2 * n : 2 * n + self.n_slots]]


@cache
def _fused(kernel, dtype, n_slots, scalar_names) -> FusedStep:
    return FusedStep(kernel, dtype, [()], n_slots, scalar_names)


class ScalarStep(Op):
    """A 0-d elementwise node that feeds a step's scalars (e.g. Adam's bias-corrected step size,
    the counter's increment), compiled by Numba as one plain function: PyTensor's Elemwise code
    generation, made for arrays of any rank, costs several times more to compile.

    ``packs`` adds outputs: for each ``(dtype, entries)``, a vector of the entries, each
    ``("output", k)`` (the composite's output ``k``), ``("input", j)`` (the node's input ``j``:
    the composite takes the first ones, further inputs only pass into packs) or ``("constant",
    value)``. A step's scalars ``h`` are such a vector, packed where they are computed instead
    of by a ``MakeVector`` node (one function fewer for Numba to compile).
    """

    __props__ = ("composite", "packs")

    def __init__(self, composite: ps.Composite, packs: tuple = ()):
        self.composite = composite
        self.packs = tuple(packs)

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        scalars = [pt.tensor(dtype=x.dtype, shape=()) for x in self.composite.outputs]
        packed = [pt.tensor(dtype=dtype, shape=(len(entries),)) for dtype, entries in self.packs]
        return Apply(self, inputs, [*scalars, *packed])

    def __str__(self):
        return "ScalarStep"

    def perform(self, node, inputs, output_storage):
        results = self.composite.impl(*(x[()] for x in inputs[: len(self.composite.inputs)]))
        results = results if isinstance(results, list | tuple) else [results]
        for storage, value, variable in zip(output_storage, results, node.outputs):
            storage[0] = np.asarray(value, dtype=variable.dtype)
        sources = {"output": results, "input": [x[()] for x in inputs]}
        for storage, (dtype, entries) in zip(output_storage[len(results) :], self.packs):
            values = [value if kind == "constant" else sources[kind][value] for kind, value in entries]
            storage[0] = np.array(values, dtype=dtype)


def _packed(scalars: list, dtype: str) -> tuple:
    """The vector of ``scalars``, packed by the ScalarStep that computes most of them (and does
    not depend on the others), and the replacements of that node's outputs by its new node's
    (no such ScalarStep: a ``MakeVector`` node, no replacements)."""
    owners = [x.owner for x in scalars if x.owner is not None and isinstance(x.owner.op, ScalarStep)]
    for node in sorted(dict.fromkeys(owners), key=owners.count, reverse=True):
        inputs, entries = list(node.inputs), []
        for x in scalars:
            if x.owner is node:
                entries.append(("output", node.outputs.index(x)))
            elif isinstance(x, Constant):
                entries.append(("constant", np.asarray(x.data, dtype=dtype).item()))
            else:
                if x not in inputs:
                    inputs.append(x)
                entries.append(("input", inputs.index(x)))
        if set(node.outputs).isdisjoint(ancestors(inputs[len(node.inputs) :])):
            op = ScalarStep(node.op.composite, (*node.op.packs, (dtype, tuple(entries))))
            new = op(*inputs, return_list=True)
            return new[-1], dict(zip(node.outputs, new))
    return MakeVector(dtype)(*scalars), {}


@node_rewriter([Elemwise])
def _scalar_elemwise_as_scalar_step(fgraph, node):
    """A 0-d Elemwise whose results reach a FusedStep's scalars through 0-d Elemwises only."""
    if any(x.type.ndim for x in (*node.inputs, *node.outputs)) or not feeds_a_step(fgraph, node, ScalarStep):
        return None
    scalar_op = node.op.scalar_op
    if not isinstance(scalar_op, ps.Composite):
        inputs = [ps.get_scalar_type(x.dtype)() for x in node.inputs]
        scalar_op = ps.Composite(inputs, scalar_op.make_node(*inputs).outputs)
    return ScalarStep(scalar_op)(*node.inputs, return_list=True)


# -- the rewrites ----------------------------------------------------------------------------------


def chain_widths(n_params: int) -> list[int]:
    """How many params each node of a Numba chain updates: one each up to 16 params, else 8 each
    and one each for the rest. A node of each width is compiled once; wider nodes make fewer
    nodes (measured under Numba at 30 and 100 params)."""
    if n_params <= 16:
        return [1] * n_params
    return [8] * (n_params // 8) + [1] * (n_params % 8)


@node_rewriter([FusedStep, FusedCheck])
def _fused_step_as_chain(fgraph, node):
    """Replace a FusedStep by a chain of ParamSteps over its params, threading the buffers
    through (a FusedCheck: the flag through)."""
    check = isinstance(node.op, FusedCheck)
    op = node.op.checked if check else node.op
    params, grads, buffers, scalars = op.split(node.inputs)
    if not (op.inplace or check):  # the step may not overwrite its inputs: give it copies it may
        params = [pt.tensor_copy(p) for p in params]
        buffers = [pt.tensor_copy(b) for b in buffers]
    h, replaced = _packed(scalars, op.dtype) if scalars else (pt.constant(np.zeros(1, op.dtype)), {})
    ok = pt.constant(np.array(True))
    new_params, first = [], 0
    for width in chain_widths(op.n_params):
        chunk, first = slice(first, first + width), first + width
        step = ParamStep(op.kernel, op.dtype, width, op.n_slots, op.scalar_names, check)
        offsets = pt.constant(np.array(op.starts[chunk], dtype=np.int64))
        arguments = [*params[chunk], *grads[chunk], *buffers, offsets, h]
        if check:
            ok = step(*arguments, ok)
            continue
        new = step(*arguments, return_list=True)
        new_params += new[:width]
        buffers = new[width:]
    return dict(zip(node.outputs, [ok] if check else [*new_params, *buffers])) | replaced


def _register_rewrite():
    from pytensor.compile import optdb

    # after the in-place passes (FusedStep's at 50.4), in Numba mode only
    optdb.register("updates_scalar_steps", in2out(_scalar_elemwise_as_scalar_step), "numba", position=50.65)
    optdb.register("updates_fused_step_as_chain", in2out(_fused_step_as_chain), "numba", position=50.7)


# -- Numba -----------------------------------------------------------------------------------------

_NODE_CALL = """\
    p{i}_ = contiguous(p{i})
    if status == 0:
        status = kernel(
            data(p{i}_), data(contiguous(g{i})), {slot_pointers}data(h),
            offsets[{i}], p{i}.size, g{i}.size, {size},
        )
"""


def _node_source(op: ParamStep) -> str:
    """``param_step(*params, *grads, *slots, offsets, h)``: the kernel on each param, in place;
    with ``check``, ``param_check(..., ok)``: whether ``ok`` and every new value is finite."""
    n, slots = op.n_params, [f"s{j}" for j in range(op.n_slots)]
    params, grads = [f"p{i}" for i in range(n)], [f"g{i}" for i in range(n)]
    results = ["result"] if op.check else [f"{p}_" for p in params] + slots
    arguments = [*params, *grads, *slots, "offsets", "h", *(["ok"] if op.check else [])]
    return "\n".join(
        [
            f"def {'param_check' if op.check else 'param_step'}({', '.join(arguments)}):",
            "    status = 0 if ok[()] else 3" if op.check else "    status = 0",
            *(
                _NODE_CALL.format(
                    i=i,
                    slot_pointers="".join(f"data({s}), " for s in slots),
                    size=f"{slots[0]}.size" if slots else f"offsets[{i}] + p{i}.size",
                )
                for i in range(n)
            ),
            "    if status == 1:",
            f'        raise ValueError("FusedStep: {STATUS[1]}")',
            "    if status == 2:",
            f'        raise ValueError("FusedStep: {STATUS[2]}")',
            *(["    result = np.empty((), np.bool_)", "    result[()] = status == 0"] if op.check else []),
            f"    return {results[0]}" if len(results) == 1 else f"    return ({', '.join(results)},)",
        ]
    )


_KERNEL_SOURCE = """\
def kernel(p, g, {slots}h, offset, n, n_grad, size):
    if n_grad != n:
        return 1
    if offset + n > size:
        return 2
{scalars}
    for i in range(n):
{body}
    return 0
"""

#: The kernel's last line with ``check``: a new value not finite stops it with status 3.
_CHECK_LINE = "if not ({}):\n    return 3"


@dataclass(frozen=True)
class CompiledKernel:
    """A rule's kernel compiled by Numba: the name LLVM knows it by, its cfunc, whether cached."""

    symbol: str
    cfunc: object
    cacheable: bool


#: The kernels compiled in this process, by key.
_KERNELS: dict[str, CompiledKernel] = {}


def compiled_kernel(op: FusedStep, check: bool = False) -> CompiledKernel:
    """Compile the kernel of ``op`` (or load it from Numba's cache) once per process, and make its
    address known to LLVM under a name of its own, which cached code refers to.

    The kernel is ``status = kernel(p, g, *slots, h, offset, n, n_grad, size)`` over raw pointers:
    the rule applied in place to one param's ``n`` elements and its segment of each flat buffer,
    its equations written out as one function (see :func:`_scalar_source`), compiled without
    fast-math flags (the rules' numbers stay those of their equations, as torch computes them).
    With ``check`` it writes nothing and returns 3 at the first new value that is not finite.
    """
    import numba
    from llvmlite import binding
    from pytensor.link.numba.cache import compile_numba_function_src

    slots = [f"s{j}" for j in range(op.n_slots)]
    items = ["p[i]", *(f"{s}[offset + i]" for s in slots)]
    scalars = [f"h{j}" for j in range(len(op.scalar_names))]
    targets = [f"o{j}" for j in range(len(op.composite.outputs))] if check else items
    lines, namespace, keys = _scalar_source(op.composite, [items[0], "g[i]", *items[1:], *scalars], targets)
    if check:
        lines += _CHECK_LINE.format(" and ".join(f"np.isfinite({o})" for o in targets)).splitlines()
    source = _KERNEL_SOURCE.format(
        slots="".join(f"{s}, " for s in slots),
        scalars="\n".join(f"    {name} = h[{j}]" for j, name in enumerate(scalars)),
        body="\n".join(f"        {line}" for line in lines),
    )
    cacheable = None not in keys
    signature = _kernel_signature(op)
    key = f"{_VERSION}\n{signature}\n{source}\n{sorted(map(str, keys))}"
    key = hashlib.sha256(key.encode()).hexdigest()[:40]
    if key not in _KERNELS or not cacheable:
        namespace["__name__"] = __name__  # Numba's cache rebuilds a function's environment from it
        namespace["np"] = np
        function = compile_numba_function_src(source, "kernel", namespace, cache_key=f"updates-{key}")
        compiled = numba.cfunc(signature, cache=cacheable, error_model="numpy")(function)
        binding.add_symbol(f"updates_kernel_{key}", compiled.address)
        _KERNELS[key] = CompiledKernel(f"updates_kernel_{key}", compiled, cacheable)
    return _KERNELS[key]


#: What a kernel's non-zero status means.
STATUS = {
    1: "a gradient and its param differ in size",
    2: "the params changed size after the updates were built",
    3: "a new value is not finite (a check's answer, not an error)",
}


def _scalar_source(composite, arguments: list[str], targets: list[str]) -> tuple[list[str], dict, list]:
    """The scalar graph of ``composite`` as lines of Python on the expressions ``arguments``.

    The last line assigns the outputs to ``targets``. An integer constant in a floating-point
    operation is written in the operation's dtype (the value PyTensor's upcast gives). Ops
    with a NumPy ufunc are written as calls of it (``np.sqrt``), the rest by hand; an op without
    either calls PyTensor's own Numba function for it. Returns the lines, the globals they
    use (constants, typed as NumPy scalars, and such functions) and what the cache key must hold
    beyond the source (the constants' values, those functions' keys).
    """
    import pytensor.scalar as ps
    from pytensor.graph.basic import Constant
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

    fgraph = composite.fgraph
    names = dict(zip(fgraph.inputs, (f"x{j}" for j in range(len(fgraph.inputs)))))
    lines = [f"{name} = {argument}" for name, argument in zip(names.values(), arguments)]
    namespace, keys = {}, []

    def name_of(variable, dtype=None):
        if not isinstance(variable, Constant):
            return names[variable]
        if dtype is None or not dtype.startswith("float") or variable.dtype.startswith("float"):
            dtype = variable.dtype
        name = f"k{len(namespace)}"
        namespace[name] = np.asarray(variable.data, dtype=dtype)[()]
        keys.append(f"{name} = {dtype} {namespace[name].tobytes().hex()}")  # Numba freezes it
        return name

    for index, node in enumerate(fgraph.toposort()):
        dtype = node.outputs[0].dtype
        op, args = node.op, [name_of(x, dtype) for x in node.inputs]
        infix = _INFIX.get(type(op))
        if isinstance(op, ps.Switch):
            expression = f"({args[1]} if {args[0]} else {args[2]})"
        elif isinstance(op, ps.Cast):
            expression = f"np.{_numpy_name(dtype)}({args[0]})"
        elif isinstance(op, ps.Clip):
            x, low, high = args
            expression = f"({low} if {x} < {low} else ({high} if {x} > {high} else {x}))"
        elif isinstance(op, ps.Identity):
            expression = args[0]
        elif isinstance(op, ps.Second):
            expression = args[1]
        elif infix is not None:
            expression = "(" + f" {infix} ".join(args) + ")"
        elif getattr(op, "nfunc_spec", None) and "." not in op.nfunc_spec[0] and len(args) == 1:
            expression = f"np.{op.nfunc_spec[0]}({args[0]})"
        elif getattr(op, "nfunc_spec", None) and "." not in op.nfunc_spec[0] and len(args) == 2:
            expression = f"np.{op.nfunc_spec[0]}({args[0]}, {args[1]})"
        else:
            function, key = numba_funcify_and_cache_key(op, node=node)
            namespace[f"f{index}"] = function
            keys.append(key and f"{type(op)} {key}")
            expression = f"f{index}({', '.join(args)})"
        names[node.outputs[0]] = f"v{index}"
        lines.append(f"v{index} = {expression}")
    outputs = [name_of(x) for x in fgraph.outputs]
    lines.append(f"{', '.join(targets)}, = {', '.join(outputs)},")
    return lines, namespace, keys


def _infix() -> dict:
    import pytensor.scalar as ps

    return {
        type(ps.add): "+", type(ps.sub): "-", type(ps.mul): "*", type(ps.true_div): "/",
        type(ps.pow): "**", type(ps.gt): ">", type(ps.ge): ">=", type(ps.lt): "<",
        type(ps.le): "<=", type(ps.eq): "==", type(ps.neq): "!=",
    }  # fmt: skip


_INFIX = _infix()


def _kernel_signature(op: FusedStep | ParamStep):
    from numba import from_dtype, types

    pointer = types.CPointer(from_dtype(np.dtype(op.dtype)))
    return types.intp(*[pointer] * (3 + op.n_slots), *[types.intp] * 4)


#: Changes the cache keys of everything compiled here when the generated code changes meaning.
_VERSION = 6


def _register_numba() -> bool:
    try:
        from numba import types
        from numba.core.extending import intrinsic, overload
        from pytensor.link.numba.cache import compile_numba_function_src
        from pytensor.link.numba.dispatch.basic import (
            numba_njit,
            register_funcify_and_cache_key,
        )
    except ImportError:  # PyTensor 2.38 (its Numba backend has no cache keys) or no Numba
        return False

    @intrinsic
    def data(typingctx, array):
        """The data pointer of an array."""

        def codegen(context, builder, signature, args):
            return context.make_array(array)(context, builder, args[0]).data

        return types.CPointer(array.dtype)(array), codegen

    def contiguous(array):
        """The array itself if C-contiguous (decided when typed), else a C-contiguous copy."""

    @overload(contiguous)
    def _contiguous(array):
        if array.layout == "C":
            return lambda array: array
        return lambda array: np.ascontiguousarray(array)

    @register_funcify_and_cache_key(ParamStep)
    def numba_funcify_param_step(op, node=None, **kwargs):
        kernel = compiled_kernel(op.fused, op.check)
        source = _node_source(op)
        namespace = {
            "__name__": __name__,
            "np": np,
            "kernel": types.ExternalFunction(kernel.symbol, _kernel_signature(op)),
            "data": data,
            "contiguous": contiguous,
        }
        key = "updates-param-step-" + hashlib.sha256(f"{kernel.symbol}\n{source}".encode()).hexdigest()[:40]
        name = "param_check" if op.check else "param_step"
        function = compile_numba_function_src(source, name, namespace, cache_key=key)
        return numba_njit(function), key if kernel.cacheable else None

    @register_funcify_and_cache_key(ScalarStep)
    def numba_funcify_scalar_step(op, node=None, **kwargs):
        n_in, outputs = len(op.composite.inputs), op.composite.outputs
        results = [f"r{j}" for j in range(len(outputs))]
        lines, namespace, keys = _scalar_source(
            op.composite, [f"a{j}[()]" for j in range(n_in)], [f"{r}[()]" for r in results]
        )
        for j, (dtype, entries) in enumerate(op.packs):
            lines.append(f"q{j} = np.empty({len(entries)}, np.{dtype})")
            for i, (kind, value) in enumerate(entries):
                if kind == "constant":
                    namespace[f"c{j}_{i}"] = np.asarray(value, dtype=dtype)[()]
                    keys.append(f"c{j}_{i} = {dtype} {namespace[f'c{j}_{i}'].tobytes().hex()}")
                item = {"output": f"r{value}[()]", "input": f"a{value}[()]", "constant": f"c{j}_{i}"}[kind]
                lines.append(f"q{j}[{i}] = {item}")
        returned = [*results, *(f"q{j}" for j in range(len(op.packs)))]
        source = "\n".join(
            [
                f"def scalar_step({', '.join(f'a{j}' for j in range(len(node.inputs)))}):",
                *(f"    {r} = np.empty((), np.{_numpy_name(x.dtype)})" for r, x in zip(results, outputs)),
                *(f"    {line}" for line in lines),
                f"    return {returned[0]}" if len(returned) == 1 else f"    return ({', '.join(returned)},)",
            ]
        )
        namespace.update(__name__=__name__, np=np)
        key = hashlib.sha256(f"{_VERSION}\n{source}\n{sorted(map(str, keys))}".encode()).hexdigest()[:40]
        function = compile_numba_function_src(source, "scalar_step", namespace, cache_key=f"updates-{key}")
        return numba_njit(function), None if None in keys else f"updates-scalar-step-{key}"

    @register_funcify_and_cache_key(AllFinite)
    def numba_funcify_all_finite(op, node=None, **kwargs):
        names = [f"x{j}" for j in range(len(node.inputs))]
        lines = [f"def all_finite({', '.join(names)}):", "    result = np.empty((), np.bool_)"]
        for x in names:
            lines += [f"    for value in {x}.flat:", "        if not np.isfinite(value):"]
            lines += ["            result[()] = False", "            return result"]
        source = "\n".join([*lines, "    result[()] = True", "    return result"])
        key = "updates-all-finite-" + hashlib.sha256(f"{_VERSION}\n{source}".encode()).hexdigest()[:40]
        function = compile_numba_function_src(source, "all_finite", {"np": np}, cache_key=key)
        return numba_njit(function), key

    @register_funcify_and_cache_key(SumOfSquares)
    def numba_funcify_sum_of_squares(op, node=None, **kwargs):
        names, dtype = [f"x{j}" for j in range(len(node.inputs))], node.outputs[0].dtype
        lines = [f"def sum_of_squares({', '.join(names)}):", f"    total = np.{dtype}(0)"]
        for x, variable in zip(names, node.inputs):  # squares in the tensor's dtype, summed in float64
            lines += ["    s = 0.0", f"    for value in {x}.flat:", "        s += value * value"]
            lines += [f"    total = np.{dtype}(total + np.{variable.dtype}(s))"]
        lines += [f"    result = np.empty((), np.{dtype})", "    result[()] = total", "    return result"]
        source = "\n".join(lines)
        key = "updates-sum-of-squares-" + hashlib.sha256(f"{_VERSION}\n{source}".encode()).hexdigest()[:40]
        function = compile_numba_function_src(source, "sum_of_squares", {"np": np}, cache_key=key)
        return numba_njit(function), key

    return True


def _numpy_name(dtype: str) -> str:
    return "bool_" if dtype == "bool" else dtype


#: Whether PyTensor's Numba backend takes the conversions here (it has cache keys: PyTensor 3).
NUMBA = False


def register() -> None:
    """Register the Numba conversions and, where they took, the rewrites that use them."""
    global NUMBA
    NUMBA = _register_numba()
    if NUMBA:
        _register_rewrite()
