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
nodes' ``check`` form, threading a flag; a ``updates.reductions.FusedSums`` (the sums over
every param that Prodigy, D-Adaptation, DoG, Momo or Polyak's step size need before the step) in
their ``sums`` form, threading a float64 vector of the sums, zeros first (packed with the
scalars: a constant is read-only, and Numba would compile the first node again for it), from
which the step's scalars read each sum (``ScalarStep.take``, no ``Subtensor`` node each).
Prodigy over 30 params of shape (10,), where its FusedSums ran ``perform`` in object mode: start
16.2 -> 10.9 s (Adam 7.2 s, the model alone 6.0 s), step 95 -> 33 us (Adam 24 us, the model
22 us), medians of 5 cold runs.

The nodes of a width are one Op (the offsets are an input), so Numba compiles each width once;
each call passes a handful of arrays; the scalars ``h`` travel as one vector, and the 0-d
elementwise nodes that compute them (Adam's bias correction, the counter's increment) become
:class:`ScalarStep` nodes, plain Numba functions (PyTensor's elementwise code generation, made
for arrays of any rank, costs several times more to compile).

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
from pytensor.tensor.subtensor import Subtensor, get_idx_list

from updates.folding import FusedCheck, feeds_a_step
from updates.fused import FusedStep, ancestors
from updates.reductions import AllFinite, FusedSums, SumOfSquares, add_sums


class ParamStep(Op):
    """A few params' share of a :class:`FusedStep`, in place (built by the Numba rewrite only);
    in the ``check`` form, the share of a :class:`FusedCheck`; in the ``sums`` form, the share of
    a ``updates.reductions.FusedSums`` (``kernel`` then the ``updates.reductions.Terms``).

    Inputs: ``n_params`` params, their gradients, one flat buffer per slot, the params' offsets
    in the buffers (an int64 vector, with the end of the last one: each param's size is checked) and
    the scalars ``h`` as one vector; with ``check``, then the boolean scalar the checks before
    it give; with ``sums``, then the float64 vector of the sums before it. Outputs: the new
    params, then the new buffers; with ``check``, the boolean scalar, true when the checks
    before it and its own new values are all finite; with ``sums``, the sums before it plus its
    params' terms (the last two write nothing).
    """

    __props__ = ("kernel", "dtype", "n_params", "n_slots", "scalar_names", "form")

    def __init__(self, kernel, dtype: str, n_params: int, n_slots: int, scalar_names: tuple, form="step"):
        if form not in ("step", "check", "sums"):
            raise ValueError(f"ParamStep: form must be 'step', 'check' or 'sums', got {form!r}")
        self.kernel = kernel
        self.dtype = dtype
        self.n_params = n = n_params
        self.n_slots = n_slots
        self.scalar_names = tuple(scalar_names)
        self.form = form
        if form == "step":
            self.destroy_map = {out: [i] for out, i in enumerate([*range(n), *range(2 * n, 2 * n + n_slots)])}

    @property
    def check(self) -> bool:
        return self.form == "check"

    @property
    def count(self) -> int:
        """The number of terms (of sums) of the ``sums`` form."""
        return len(self.fused.composite.outputs)

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        if self.form == "check":
            return Apply(self, inputs, [pt.tensor(dtype="bool", shape=())])
        if self.form == "sums":
            return Apply(self, inputs, [pt.tensor(dtype="float64", shape=(self.count,))])
        n = self.n_params
        params, buffers = inputs[:n], inputs[2 * n : 2 * n + self.n_slots]
        return Apply(self, inputs, [x.type() for x in (*params, *buffers)])

    def __str__(self):
        kind = {"step": "ParamStep", "check": "ParamCheck", "sums": "ParamSums"}[self.form]
        return f"{kind}{{{self.kernel.name}, {self.dtype}, {self.n_params} params}}"

    @property
    def fused(self) -> FusedStep:
        """A one-param FusedStep with the same kernel: its compiled forms serve ``perform``."""
        return _fused(self.kernel, self.dtype, self.n_slots, self.scalar_names)

    def perform(self, node, inputs, output_storage):
        n, s = self.n_params, self.n_slots
        params, grads, buffers = inputs[:n], inputs[n : 2 * n], inputs[2 * n : 2 * n + s]
        offsets, h = inputs[2 * n + s : 2 * n + s + 2]
        h = [np.asarray(x) for x in h]  # 0-d arrays: the compiled function trusts its inputs
        if self.form == "sums":
            output_storage[0][0] = self._sums(params, grads, buffers, offsets, h, inputs[-1])
            return
        ok, ends = not self.check or bool(inputs[-1]), offsets.tolist()
        for param, grad, start, end in zip(params, grads, ends, ends[1:]):
            if not ok:
                break
            segments = _segments(param, buffers, start, end, "FusedStep")
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

    def _sums(self, params, grads, buffers, offsets, h, before) -> np.ndarray:
        """``before`` plus the terms summed over ``params`` (in float64), as the kernel adds them."""
        sums = np.array(before, dtype="float64")
        for param, grad, start, end in zip(params, grads, offsets.tolist(), offsets.tolist()[1:]):
            segments = _segments(param, buffers, start, end, "FusedSums")
            if np.size(grad) != param.size:
                raise ValueError(f"FusedSums: {STATUS[1]}")
            grad = np.ravel(grad).astype(self.dtype)
            add_sums(sums, self.fused.vector_function(param.ravel(), grad, *segments, *h), [0, param.size])
        return sums

    def infer_shape(self, fgraph, node, shapes):
        n = self.n_params
        if self.form != "step":
            return [()] if self.check else [(self.count,)]
        return [*shapes[:n], *shapes[2 * n : 2 * n + self.n_slots]]


def _segments(param, buffers, start: int, end: int, owner: str) -> list:
    """The segment ``start:end`` of each buffer, where ``param`` must have exactly that size."""
    if param.size != end - start or any(buffer.size < end for buffer in buffers):
        raise ValueError(f"{owner}: {STATUS[2]}")
    return [buffer[start:end] for buffer in buffers]


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

    ``take`` (empty: none) gives for each input of the composite ``None`` (a 0-d input) or an
    index ``k``: the input is a vector, the composite takes its element ``k`` (the sums of a
    ``updates.reductions.FusedSums``, read without a ``Subtensor`` node each).
    """

    __props__ = ("composite", "packs", "take")

    def __init__(self, composite: ps.Composite, packs: tuple = (), take: tuple = ()):
        self.composite = composite
        self.packs = tuple(packs)
        self.take = tuple(take) if any(k is not None for k in take) else ()

    def at(self, j: int) -> tuple | int:
        """Where input ``j`` is read: ``()`` (0-d) or its element ``k``."""
        k = self.take[j] if j < len(self.take) else None
        return () if k is None else k

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        scalars = [pt.tensor(dtype=x.dtype, shape=()) for x in self.composite.outputs]
        packed = [pt.tensor(dtype=dtype, shape=(len(entries),)) for dtype, entries in self.packs]
        return Apply(self, inputs, [*scalars, *packed])

    def __str__(self):
        return "ScalarStep"

    def perform(self, node, inputs, output_storage):
        values = [x[self.at(j)] for j, x in enumerate(inputs)]
        results = self.composite.impl(*values[: len(self.composite.inputs)])
        results = results if isinstance(results, list | tuple) else [results]
        for storage, value, variable in zip(output_storage, results, node.outputs):
            storage[0] = np.asarray(value, dtype=variable.dtype)
        sources = {"output": results, "input": values}
        for storage, (dtype, entries) in zip(output_storage[len(results) :], self.packs):
            values = [value if kind == "constant" else sources[kind][value] for kind, value in entries]
            storage[0] = np.array(values, dtype=dtype)


def _packed(scalars: list, dtype: str, packs: tuple = ()) -> tuple:
    """The vector of ``scalars``, packed by the ScalarStep that computes most of them (and does
    not depend on the others), and the replacements of that node's outputs by its new node's
    (no such ScalarStep: a ``MakeVector`` node, no replacements; no scalars: a constant).

    ``packs`` (``(dtype, values)`` each) are vectors of constants that node packs too, after the
    scalars' (a fresh array each call, which its user may write over; a constant is read-only,
    and Numba compiles a function again for a read-only array): the first is ``[h, *packs]``."""
    owners = [x.owner for x in scalars if x.owner is not None and isinstance(x.owner.op, ScalarStep)]
    constants = tuple((kind, tuple(("constant", value) for value in values)) for kind, values in packs)
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
            packed = (*node.op.packs, (dtype, tuple(entries)), *constants)
            op = ScalarStep(node.op.composite, packed, node.op.take)
            new = op(*inputs, return_list=True)
            return new[len(new) - 1 - len(packs) :], dict(zip(node.outputs, new))
    h = MakeVector(dtype)(*scalars) if scalars else pt.constant(np.zeros(1, dtype))
    made = [MakeVector(kind)(*(pt.constant(np.asarray(v, kind)) for v in values)) for kind, values in packs]
    return [h, *made], {}


@node_rewriter([Elemwise])
def _scalar_elemwise_as_scalar_step(fgraph, node):
    """A 0-d Elemwise whose results reach a FusedStep's scalars through 0-d Elemwises only."""
    if any(x.type.ndim for x in (*node.inputs, *node.outputs)) or not feeds_a_step(fgraph, node, ScalarStep):
        return None
    scalar_op = node.op.scalar_op
    if not isinstance(scalar_op, ps.Composite):
        inputs = [ps.get_scalar_type(x.dtype)() for x in node.inputs]
        scalar_op = ps.Composite(inputs, scalar_op.make_node(*inputs).outputs)
    items = [_item_of_a_vector(x) for x in node.inputs]
    inputs = [x if item is None else item[0] for x, item in zip(node.inputs, items)]
    take = tuple(None if item is None else item[1] for item in items)
    return ScalarStep(scalar_op, (), take)(*inputs, return_list=True)


def _item_of_a_vector(x) -> tuple | None:
    """``(vector, k)`` where ``x`` is ``vector[k]``, ``k`` a constant within its static length."""
    node = x.owner
    if node is None or not isinstance(node.op, Subtensor) or node.inputs[0].type.ndim != 1:
        return None
    index, length = get_idx_list(node.inputs, node.op.idx_list), node.inputs[0].type.shape[0]
    if len(index) != 1 or not isinstance(index[0], Constant) or length is None:
        return None
    k = int(index[0].data)
    return (node.inputs[0], k % length) if -length <= k < length else None


# -- the rewrites ----------------------------------------------------------------------------------


def chain_widths(n_params: int) -> list[int]:
    """How many params each node of a Numba chain updates: one each up to 16 params, else 8 each
    and one each for the rest. A node of each width is compiled once; wider nodes make fewer
    nodes (measured under Numba at 30 and 100 params)."""
    if n_params <= 16:
        return [1] * n_params
    return [8] * (n_params // 8) + [1] * (n_params % 8)


@node_rewriter([FusedStep, FusedCheck, FusedSums])
def _fused_step_as_chain(fgraph, node):
    """Replace a FusedStep by a chain of ParamSteps over its params, threading the buffers
    through (a FusedCheck: the flag; a FusedSums: the vector of sums, zeros first)."""
    form = {FusedCheck: "check", FusedSums: "sums"}.get(type(node.op), "step")
    op = node.op.checked if form == "check" else node.op.terms if form == "sums" else node.op
    params, grads, buffers, scalars = op.split(node.inputs)
    if form == "step" and not op.inplace:  # the step may not overwrite its inputs: give it copies
        params = [pt.tensor_copy(p) for p in params]
        buffers = [pt.tensor_copy(b) for b in buffers]
    # the sums start from zeros packed with the scalars (a constant would be read-only to Numba)
    zeros = (("float64", (0.0,) * len(op.composite.outputs)),) if form == "sums" else ()
    (h, *packed), replaced = _packed(scalars, op.dtype, zeros)
    carried = packed[0] if form == "sums" else pt.constant(np.array(True)) if form == "check" else None
    new_params, first = [], 0
    for width in chain_widths(op.n_params):
        chunk, first = slice(first, first + width), first + width
        step = ParamStep(op.kernel, op.dtype, width, op.n_slots, op.scalar_names, form)
        # where each param begins in the buffers and where the last ends: each has its exact size
        offsets = pt.constant(np.array(op.starts[chunk.start : chunk.stop + 1], dtype=np.int64))
        arguments = [*params[chunk], *grads[chunk], *buffers, offsets, h]
        if carried is not None:
            carried = step(*arguments, carried)
            continue
        new = step(*arguments, return_list=True)
        new_params += new[:width]
        buffers = new[width:]
    return dict(zip(node.outputs, [carried] if carried is not None else [*new_params, *buffers])) | replaced


def _register_rewrite():
    from pytensor.compile import optdb

    # after the in-place passes (FusedStep's at 50.4), in Numba mode only
    optdb.register("updates_scalar_steps", in2out(_scalar_elemwise_as_scalar_step), "numba", position=50.65)
    optdb.register("updates_fused_step_as_chain", in2out(_fused_step_as_chain), "numba", position=50.7)


# -- Numba -----------------------------------------------------------------------------------------

_NODE_CALL = """\
    p{i}_, g{i}_ = contiguous(p{i}), contiguous(g{i})
    if status == 0:{exact}
        status = kernel(
            data(p{i}_), data(g{i}_), {slot_pointers}data(h), {sums}
            offsets[{i}], p{i}.size, g{i}.size, {size},
        )
    status = alive(status, p{i}_, g{i}_)
"""

#: A param must have exactly the size it had when the updates were built (its offsets' difference).
_EXACT_SIZE = """
        if p{i}.size != offsets[{j}] - offsets[{i}]:
            status = 2
    if status == 0:"""

#: The function of each form: its name, its extra argument and its first lines, what it returns.
_FORMS = {
    "step": ("param_step", [], ["    status = 0"]),
    "check": ("param_check", ["ok"], ["    status = 0 if ok[()] else 3"]),
    "sums": ("param_sums", ["acc"], ["    status = 0", "    result = acc.copy()"]),
}


def _node_source(op: ParamStep) -> str:
    """``param_step(*params, *grads, *slots, offsets, h)``: the kernel on each param, in place;
    with ``check``, ``param_check(..., ok)``: whether ``ok`` and every new value is finite; with
    ``sums``, ``param_sums(..., acc)``: ``acc`` plus the sums of the terms over the params.

    The kernel reads a strided param or gradient from a C-contiguous copy, kept alive until the
    kernel returns (:func:`alive`: Numba frees a value after its last use, here ``data``)."""
    n, slots = op.n_params, [f"s{j}" for j in range(op.n_slots)]
    params, grads = [f"p{i}" for i in range(n)], [f"g{i}" for i in range(n)]
    name, extra, first = _FORMS[op.form]
    results = {"step": [f"{p}_" for p in params] + slots}.get(op.form, ["result"])
    arguments = [*params, *grads, *slots, "offsets", "h", *extra]
    owner = "FusedSums" if op.form == "sums" else "FusedStep"
    # the param's segment ends within every buffer
    size = f"min({''.join(f'{s}.size, ' for s in slots)}offsets[{{j}}])" if slots else "offsets[{j}]"
    return "\n".join(
        [
            f"def {name}({', '.join(arguments)}):",
            *first,
            *(
                _NODE_CALL.format(
                    i=i,
                    exact=_EXACT_SIZE.format(i=i, j=i + 1),
                    slot_pointers="".join(f"data({s}), " for s in slots),
                    sums="data(result)," if op.form == "sums" else "",
                    size=size.format(i=i, j=i + 1),
                )
                for i in range(n)
            ),
            "    if status == 1:",
            f'        raise ValueError("{owner}: {STATUS[1]}")',
            "    if status == 2:",
            f'        raise ValueError("{owner}: {STATUS[2]}")',
            *(["    result = np.empty((), np.bool_)", "    result[()] = status == 0"] if op.check else []),
            f"    return {results[0]}" if len(results) == 1 else f"    return ({', '.join(results)},)",
        ]
    )


_KERNEL_SOURCE = """\
def kernel(p, g, {slots}h, {sums}offset, n, n_grad, size):
    if n_grad != n:
        return 1
    if offset + n > size:
        return 2
{scalars}
    for i in range(n):
{body}
{after}    return 0
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


def compiled_kernel(op: FusedStep, form: str = "step") -> CompiledKernel:
    """Compile the kernel of ``op`` (or load it from Numba's cache) once per process, and make its
    address known to LLVM under a name of its own, which cached code refers to.

    The kernel is ``status = kernel(p, g, *slots, h, offset, n, n_grad, size)`` over raw pointers:
    the rule applied in place to one param's ``n`` elements and its segment of each flat buffer,
    its equations written out as one function (see :func:`_scalar_source`), compiled without
    fast-math flags (the rules' numbers stay those of their equations, as torch computes them).
    In the ``check`` form it writes nothing and returns 3 at the first new value that is not
    finite. In the ``sums`` form (``op`` a ``updates.reductions.FusedSums``' terms) it is
    ``kernel(p, g, *slots, h, sums, offset, n, n_grad, size)``: it writes nothing but adds each
    term, in float64, summed over the elements, to ``sums[j]`` (a float64 pointer).
    """
    import numba
    from llvmlite import binding
    from pytensor.link.numba.cache import compile_numba_function_src

    slots = [f"s{j}" for j in range(op.n_slots)]
    items = ["p[i]", *(f"{s}[offset + i]" for s in slots)]
    scalars = [f"h{j}" for j in range(len(op.scalar_names))]
    count = len(op.composite.outputs)
    targets = [f"o{j}" for j in range(count)] if form != "step" else items
    lines, namespace, keys = _scalar_source(op.composite, [items[0], "g[i]", *items[1:], *scalars], targets)
    before, after = [f"    {name} = h[{j}]" for j, name in enumerate(scalars)], ""
    if form == "check":
        lines += _CHECK_LINE.format(" and ".join(f"np.isfinite({o})" for o in targets)).splitlines()
    elif form == "sums":  # each term's sum in a local, added to the pointer's once
        before += [f"    t{j} = 0.0" for j in range(count)]
        lines += [f"t{j} += np.float64({o})" for j, o in enumerate(targets)]
        after = "".join(f"    sums[{j}] += t{j}\n" for j in range(count))
    source = _KERNEL_SOURCE.format(
        slots="".join(f"{s}, " for s in slots),
        sums="sums, " if form == "sums" else "",
        scalars="\n".join(before),
        body="\n".join(f"        {line}" for line in lines),
        after=after,
    )
    cacheable = None not in keys
    signature = _kernel_signature(op, form)
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


def _kernel_signature(op: FusedStep | ParamStep, form: str = "step"):
    from numba import from_dtype, types

    pointer = types.CPointer(from_dtype(np.dtype(op.dtype)))
    sums = [types.CPointer(types.float64)] if form == "sums" else []
    return types.intp(*[pointer] * (3 + op.n_slots), *sums, *[types.intp] * 4)


#: Changes the cache keys of everything compiled here when the generated code changes meaning.
_VERSION = 7


def _register_numba() -> bool:
    try:
        from numba import types
        from numba.core.extending import intrinsic, overload
        from pytensor.link.numba.cache import compile_numba_function_src
        from pytensor.link.numba.dispatch.basic import (
            numba_njit,
            register_funcify_and_cache_key,
        )
    except ImportError:  # no Numba, or a PyTensor whose Numba backend takes no cache keys
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

    def alive(status, *arrays):
        """``status``, after which Numba may free ``arrays`` (whose data a kernel read)."""

    @overload(alive)
    def _alive(status, *arrays):
        return lambda status, *arrays: status

    @register_funcify_and_cache_key(ParamStep)
    def numba_funcify_param_step(op, node=None, **kwargs):
        kernel = compiled_kernel(op.fused, op.form)
        source = _node_source(op)
        namespace = {
            "__name__": __name__,
            "np": np,
            "kernel": types.ExternalFunction(kernel.symbol, _kernel_signature(op, op.form)),
            "data": data,
            "contiguous": contiguous,
            "alive": alive,
        }
        key = "updates-param-step-" + hashlib.sha256(f"{kernel.symbol}\n{source}".encode()).hexdigest()[:40]
        function = compile_numba_function_src(source, _FORMS[op.form][0], namespace, cache_key=key)
        return numba_njit(function), key if kernel.cacheable else None

    @register_funcify_and_cache_key(ScalarStep)
    def numba_funcify_scalar_step(op, node=None, **kwargs):
        n_in, outputs = len(op.composite.inputs), op.composite.outputs
        results = [f"r{j}" for j in range(len(outputs))]
        lines, namespace, keys = _scalar_source(
            op.composite, [f"a{j}[{op.at(j)!r}]" for j in range(n_in)], [f"{r}[()]" for r in results]
        )
        for j, (dtype, entries) in enumerate(op.packs):
            lines.append(f"q{j} = np.empty({len(entries)}, np.{dtype})")
            for i, (kind, value) in enumerate(entries):
                if kind == "constant":
                    namespace[f"c{j}_{i}"] = np.asarray(value, dtype=dtype)[()]
                    keys.append(f"c{j}_{i} = {dtype} {namespace[f'c{j}_{i}'].tobytes().hex()}")
                    item = f"c{j}_{i}"
                else:
                    item = f"r{value}[()]" if kind == "output" else f"a{value}[{op.at(value)!r}]"
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
