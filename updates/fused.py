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
Guarded by :func:`~updates.apply_if_finite`, the step is two passes over the same inputs: a
:class:`FusedCheck` computes the gradients and new values and checks them without writing, then
the step gated by its answer (:class:`GatedKernel`) writes them in place. An elementwise
transform of every gradient by shared scalars (the scale of
:func:`~updates.clip_by_global_norm`) runs inside both (:class:`PrefixedKernel`). With the
global norm as one node (``updates.reductions.SumOfSquares``), the README's stack (clip, Adam,
weight decay, lookahead, EMA, the guard) adds 14 nodes to the model's 12 at P = 10 under the C
VM, where it added 67: step 24 -> 15 us at P = 10 (the model alone: 7 us), 82 -> 44 us at
P = 30 (20 us); start 36 -> 25 s at P = 30 (14 s). Under Numba: start 5.5 -> 4.8 s at P = 10
(1.6 s), 18.9 -> 11.8 s at P = 30 (5.1 s); step 43 -> 34 us at P = 30 (22 us).
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
from pytensor.scalar import Switch
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from updates.reductions import AllFinite

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

    def _run(self, params, grads, buffers, scalars, first, starts, total, output_storage) -> None:
        """The kernel on ``params`` (the step's params from index ``first`` on) and their segments
        ``starts[0]:starts[-1]`` of the buffers (``total`` elements each), once on them all end to
        end."""
        self._check_sizes(params, grads, buffers, first, starts, total)
        if not self.inplace:
            params, buffers = [p.copy() for p in params], [b.copy() for b in buffers]
        params = [p if p.flags.c_contiguous else p.copy() for p in params]  # strided (set by the user)
        flat_param, flat_grad = self._flat(params, grads)
        segments = [buffer[starts[0] : starts[-1]] for buffer in buffers]
        scalars = [np.asarray(x, dtype=self.dtype) for x in scalars]
        new_param, *new_segments = self.vector_function(flat_param, flat_grad, *segments, *scalars)
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


# -- the non-finite gate inside the step --------------------------------------------------------


@dataclass(frozen=True)
class GatedKernel:
    """``kernel``, leaving the param and slots as they were where the scalar ``h.all_finite`` is 0."""

    kernel: object

    @property
    def name(self) -> str:
        return f"{getattr(self.kernel, 'name', '?')}+apply_if_finite"

    def __call__(self, h: SimpleNamespace, param, x, *slots):
        new = self.kernel(h, param, x, *slots)
        return tuple(pt.switch(h.all_finite > 0, value, old) for value, old in zip(new, (param, *slots)))


@dataclass(frozen=True)
class _WithGradient:
    """``kernel``, giving also the gradient it steps with (after a folded transform) as a last
    output: what a check of the gradients checks."""

    kernel: object

    @property
    def name(self) -> str:
        return getattr(self.kernel, "name", "?")

    def __call__(self, h: SimpleNamespace, param, x, *slots):
        gradient = self.kernel.gradient(h, x) if isinstance(self.kernel, PrefixedKernel) else x
        return (*self.kernel(h, param, x, *slots), gradient)


class FusedCheck(Op):
    """``FusedCheck(step, grads)(*inputs)``: a boolean scalar, true when the :class:`FusedStep`
    ``step`` would give only finite new values on ``inputs`` (its layout), and with ``grads``
    only finite gradients. Writes nothing: the first pass of a guarded step, whose second pass,
    the step gated by this flag, then runs in place."""

    __props__ = ("step", "grads")

    def __init__(self, step: FusedStep, grads: bool = False):
        self.step = step
        self.grads = grads

    def __str__(self):
        return f"FusedCheck{{{getattr(self.step.kernel, 'name', '?')}, {self.step.dtype}}}"

    @cached_property
    def checked(self) -> FusedStep:
        """The step whose new values (its kernel's outputs) the check checks, not a node of the
        graph: with ``grads``, its kernel gives the gradient too."""
        step = self.step
        if not self.grads:
            return step
        return FusedStep(_WithGradient(step.kernel), step.dtype, step.shapes, step.n_slots, step.scalar_names)

    def make_node(self, *inputs):
        return Apply(self, [pt.as_tensor_variable(x) for x in inputs], [pt.tensor(dtype="bool", shape=())])

    def infer_shape(self, fgraph, node, shapes):
        return [()]

    def perform(self, node, inputs, output_storage):
        step = self.step
        params, grads, buffers, scalars = step.split(inputs)
        step._check_sizes(params, grads, buffers, 0, step.starts, step.starts[-1])
        scalars = [np.asarray(x, dtype=step.dtype) for x in scalars]
        new = self.checked.vector_function(*step._flat(params, grads), *buffers, *scalars)
        output_storage[0][0] = np.asarray(all(np.isfinite(x).all() for x in new))

    def expand(self, inputs):
        """The same check in ordinary ops (for the tracing linkers)."""
        return AllFinite().expand(self.checked.expand(inputs))


@node_rewriter([AllFinite])
def _gate_inside_the_step(fgraph, node):
    """``switch(ok, new, old)`` on every output of a step, ``ok`` the check of (among others)
    those outputs (:func:`~updates.apply_if_finite`), becomes two passes: :class:`FusedCheck`
    computes the new values and checks them without writing, then the step gated by ``ok``
    (:class:`GatedKernel`) writes them, in place. The guard otherwise reads the old values after
    the step, so every param and buffer is copied first, and adds a switch node per tensor (the
    README's stack under the C VM at P = 10: 28 of its nodes)."""
    ok = node.outputs[0]
    steps = list(
        dict.fromkeys(
            x.owner for x in node.inputs if x.owner is not None and isinstance(x.owner.op, FusedStep)
        )
    )
    steps = [step for step in steps if step.op.n_slots and not step.op.inplace]
    switches = [_guarded_switches(fgraph, step, node) for step in steps]
    if not steps or None in switches:
        return None
    outputs = {x for step in steps for x in step.outputs}
    others = [x for x in node.inputs if x not in outputs]
    if outputs & set(ancestors([*others, *(x for step in steps for x in step.inputs)])):
        return None
    checked = set(others)
    with_grads = [set(step.op.split(step.inputs)[1]) <= checked for step in steps]
    for step, grads in zip(steps, with_grads):
        if grads:  # the check of the step's gradients joins the step's check
            others = [x for x in others if x not in step.op.split(step.inputs)[1]]
    checks = [FusedCheck(step.op, grads)(*step.inputs) for step, grads in zip(steps, with_grads)]
    new_ok = AllFinite()(*others) if others else checks.pop()
    for check in checks:
        new_ok = pt.and_(new_ok, check)
    replacements = {ok: new_ok}
    for step, guarded in zip(steps, switches):
        op = step.op
        kernel = GatedKernel(op.kernel)
        gate = pt.cast(new_ok, op.dtype)
        gated = FusedStep(kernel, op.dtype, op.shapes, op.n_slots, (*op.scalar_names, "all_finite"))
        for output, switch in zip(gated(*step.inputs, gate, return_list=True), guarded):
            replacements.update((x, x.type.filter_variable(output, allow_convert=True)) for x in switch)
    return replacements


def _guarded_switches(fgraph, step, check) -> list[list[Variable]] | None:
    """Per output of ``step``, the switches ``switch(ok, output, old)`` that use it, ``ok`` the
    output of ``check``, ``old`` what the output replaces; None when an output is unchecked or
    used otherwise."""
    ok = check.outputs[0]
    params, _, buffers, _ = step.op.split(step.inputs)
    guarded = []
    for output, old in zip(step.outputs, [*params, *buffers]):
        switches = []
        for client, _ in fgraph.clients[output]:
            if client is check:
                continue
            if not (isinstance(client.op, Elemwise) and isinstance(client.op.scalar_op, Switch)):
                return None
            condition, new, before = client.inputs
            if isinstance(condition.owner and condition.owner.op, DimShuffle):
                condition = condition.owner.inputs[0]
            if (condition, new, before) != (ok, output, old):
                return None
            switches.append(client.outputs[0])
        if not switches or output not in check.inputs:
            return None
        guarded.append(switches)
    return guarded


# -- the gradients' transform inside the step ----------------------------------------------------


@dataclass(frozen=True)
class PrefixedKernel:
    """``kernel`` stepping with ``prefix(g, *h.<names>)`` as its gradient: an elementwise
    transform of every gradient by the same scalars (the scale of clipping by the global norm)
    computed inside the step. ``prefix``: a scalar Composite of the gradient and those scalars."""

    kernel: object
    prefix: ps.Composite
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return getattr(self.kernel, "name", "?")

    def gradient(self, h: SimpleNamespace, g):
        """The transformed gradient, in the prefix's ops (no Composite inside the kernel's)."""
        inner = self.prefix.fgraph
        scalars = [pt.cast(getattr(h, name), x.dtype) for name, x in zip(self.names, inner.inputs[1:])]
        value = dict(zip(inner.inputs, [g, *scalars]))

        def get(x):
            return pt.constant(np.asarray(x.data, dtype=x.dtype)) if isinstance(x, Constant) else value[x]

        for node in inner.toposort():
            value.update(zip(node.outputs, Elemwise(node.op)(*map(get, node.inputs), return_list=True)))
        return get(inner.outputs[0])

    def __call__(self, h: SimpleNamespace, param, x, *slots):
        return self.kernel(h, param, self.gradient(h, x), *slots)


@node_rewriter([FusedStep, FusedCheck])
def _fold_the_gradients_transform(fgraph, node):
    """Gradients that are all the same elementwise function of their own tensor and of scalars
    they share (``clip_by_global_norm``: ``switch(n > c, g * (c / n), g)``), used by the step
    (and its check) alone, are computed inside the step: :class:`PrefixedKernel`. One node per
    param fewer (the README's stack under the C VM at P = 10: 10 of its 34)."""
    check = isinstance(node.op, FusedCheck)
    op = node.op.step if check else node.op
    if op.inplace or not op.n_slots or op.n_params < 2:
        return None
    params, grads, buffers, scalars = op.split(node.inputs)
    found = _common_transform(fgraph, grads, op.dtype)
    if found is None:
        return None
    prefix, tensors, shared = found
    names = tuple(f"gradient_transform_{k}" for k in range(len(shared)))
    kernel = PrefixedKernel(op.kernel, prefix, names)
    step = FusedStep(kernel, op.dtype, op.shapes, op.n_slots, (*op.scalar_names, *names))
    inputs = [*params, *tensors, *buffers, *scalars, *(pt.cast(x, op.dtype) for x in shared)]
    return (FusedCheck(step, node.op.grads) if check else step)(*inputs, return_list=True)


def _common_transform(fgraph, grads, dtype: str):
    """``(prefix, tensors, shared)`` when each gradient is ``prefix(tensor_i, *shared)``, through
    elementwise nodes that nothing else uses, ``shared`` single numbers (0-d, of ``dtype`` or
    boolean); else None."""
    found = []
    for grad in grads:
        found.append(_transform_of(fgraph, grad))
        if found[-1] is None:
            return None
    common = set.intersection(*(set(leaves) for _, leaves in found))
    shared = [x for x in found[0][1] if x in common]
    if any(not all(x.type.broadcastable) or x.dtype not in (dtype, "bool") for x in shared):
        return None
    prefixes, tensors = [], []
    for grad, (nodes, leaves) in zip(grads, found):
        own = [x for x in leaves if x not in common]
        if len(own) != 1 or (own[0].dtype, own[0].type.broadcastable) != (dtype, grad.type.broadcastable):
            return None
        prefix = _scalar_prefix(nodes, grad, [own[0], *shared])
        if prefix is None or (prefixes and prefix[1] != prefixes[0][1]):
            return None
        prefixes.append(prefix)
        tensors.append(own[0])
    return prefixes[0][0], tensors, [_zero_dimensional(x) for x in shared]


#: The most elementwise nodes a gradient's transform may take to be run inside the step.
_MOST_TRANSFORM_NODES = 16


def _transform_of(fgraph, grad):
    """The elementwise nodes that compute ``grad`` and serve nothing else (at most
    ``_MOST_TRANSFORM_NODES``, in topological order), and what they read (0-d values under a
    broadcast as themselves); None without such nodes, or with more."""

    def single_elemwise(node) -> bool:
        return node is not None and isinstance(node.op, Elemwise) and len(node.outputs) == 1

    clients = [client for client, _ in fgraph.clients[grad]]
    if not single_elemwise(grad.owner) or not all(
        isinstance(getattr(c, "op", None), (FusedStep, FusedCheck)) for c in clients
    ):
        return None
    nodes, todo = [], [grad.owner]
    while todo:  # a node joins once every node that reads it has: reverse topological order
        node = todo.pop()
        nodes.append(node)
        if len(nodes) > _MOST_TRANSFORM_NODES:
            return None
        for x in node.inputs:
            owner = x.owner
            fresh = single_elemwise(owner) and owner not in nodes and owner not in todo
            if fresh and all(client in nodes for client, _ in fgraph.clients[x]):
                todo.append(owner)
    nodes.reverse()
    made = {node.outputs[0] for node in nodes}
    leaves = [
        _unbroadcast(x)
        for node in nodes
        for x in node.inputs
        if x not in made and not isinstance(x, Constant)
    ]
    return nodes, list(dict.fromkeys(leaves))


def _zero_dimensional(x: Variable) -> Variable:
    """``x``, whose every axis has length 1, as a 0-d value: computed on 0-d values where it is
    an elementwise function of such values under broadcasts (PyTensor's rewrites move the
    broadcasts of 0-d values down to the graph's inputs), else squeezed."""
    if not x.type.ndim:
        return x
    if isinstance(x, Constant):
        return pt.constant(np.asarray(x.data, dtype=x.dtype).reshape(()))
    owner = x.owner
    if owner is not None and isinstance(owner.op, DimShuffle) and all(owner.inputs[0].type.broadcastable):
        return _zero_dimensional(owner.inputs[0])
    if (
        owner is not None
        and isinstance(owner.op, Elemwise)
        and all(all(i.type.broadcastable) for i in owner.inputs)
    ):
        outputs = Elemwise(owner.op.scalar_op)(*map(_zero_dimensional, owner.inputs), return_list=True)
        return outputs[owner.outputs.index(x)]
    return x.dimshuffle([])


def _unbroadcast(x: Variable) -> Variable:
    """The 0-d value under a broadcast (``DimShuffle`` adding axes only), else ``x``."""
    while x.owner is not None and isinstance(x.owner.op, DimShuffle) and x.owner.inputs[0].type.ndim == 0:
        x = x.owner.inputs[0]
    return x


def _scalar_prefix(nodes, grad, inputs):
    """``(Composite of inputs -> grad, a key equal for equal computations)``, or None when a
    constant is not a single number."""
    scalar_of = {x: ps.get_scalar_type(x.dtype)() for x in inputs}
    key = []
    refs = {x: ("input", k) for k, x in enumerate(inputs)}
    for index, node in enumerate(nodes):
        args, arg_refs = [], []
        for x in node.inputs:
            if isinstance(x, Constant):
                if np.size(x.data) != 1:
                    return None
                value = np.asarray(x.data, dtype=x.dtype).reshape(())
                args.append(ps.constant(value.item(), dtype=x.dtype))
                arg_refs.append(("constant", x.dtype, value.tobytes()))
            else:
                x = _unbroadcast(x)
                args.append(scalar_of[x])
                arg_refs.append(refs[x])
        outputs = node.op.scalar_op.make_node(*args).outputs
        scalar_of[node.outputs[0]] = outputs[0]
        refs[node.outputs[0]] = ("node", index)
        key.append((node.op.scalar_op, tuple(arg_refs)))
    composite = ps.Composite([scalar_of[x] for x in inputs], [scalar_of[grad]])
    return composite, tuple(key)


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
    optdb.register("updates_gate_inside_the_step", in2out(_gate_inside_the_step), "fast_run", position=0.46)
    optdb.register(
        "updates_fold_the_gradients_transform",
        in2out(_fold_the_gradients_transform),
        "fast_run",
        position=48.5,
    )
    # a large step without state too, where the elementwise loops are compiled (Numba, JAX);
    # under the C VM and the other linkers it stays one node
    optdb.register(
        "updates_stateless_step_per_param", in2out(_stateless_step_per_param(False)), "fast_run", position=0.5
    )
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
