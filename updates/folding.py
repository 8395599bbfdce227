"""What the graph's rewrites fold into a rule's multi-tensor node beyond the wrappers.

**The guard.** :func:`~updates.apply_if_finite` guards every entry with ``switch(ok, new, old)``,
which reads the old values after the new ones: PyTensor then copies every param and state before
the step, and adds a switch per tensor. Around a :class:`~updates.fused.FusedStep`, a rewrite
(before PyTensor's canonicalization) makes the step two passes over the same inputs: a
:class:`FusedCheck` computes the gradients and new values and checks them without writing, then
the step gated by its answer (:class:`GatedKernel`) writes them in place. Each backend lowers the
check as it lowers the step (``updates.backends``).

**The gradients' transform.** When every gradient of a step is the same elementwise function of
its own tensor and of shared scalars (the scale of :func:`~updates.clip_by_global_norm`) and
nothing else reads it, a rewrite after PyTensor's canonicalization (so that the numbers are the
per-parameter graph's) computes it inside the step and its check (:class:`PrefixedKernel`).

With the global norm as one node (``updates.reductions.SumOfSquares``), the README's stack
(clip, Adam, weight decay, lookahead, EMA, the guard) adds 10 nodes to the model's 12 at
P = 10 under the C VM, where it added 67: step 24 -> 15 us at P = 10 (the model alone: 7 us),
82 -> 44 us at P = 30 (20 us); start 36 -> 25 s at P = 30 (14 s). Under Numba: start 5.5 ->
4.2 s at P = 10 (1.6 s), 18.9 -> 11.8 s at P = 30 (5.1 s); step 43 -> 34 us at P = 30 (22 us).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import GraphRewriter, in2out, node_rewriter
from pytensor.scalar import Switch
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from updates.fused import FusedStep, ancestors, gated_by
from updates.reductions import AllFinite


@dataclass(frozen=True)
class GatedKernel:
    """``kernel``, leaving the param and slots as they were where the scalar ``h.all_finite`` is 0."""

    kernel: object

    @property
    def name(self) -> str:
        return f"{getattr(self.kernel, 'name', '?')}+apply_if_finite"

    def __call__(self, h: SimpleNamespace, param, x, *slots):
        return gated_by(h.all_finite, self.kernel(h, param, x, *slots), (param, *slots))


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


def feeds_a_step(fgraph, node, *scalar_ops: type) -> bool:
    """Whether the results of ``node`` reach the scalars of a FusedStep or FusedCheck through 0-d
    Elemwise nodes (or nodes of ``scalar_ops``) only."""
    seen, todo, passing = set(), [node], (Elemwise, *scalar_ops)
    while todo:
        for output in todo.pop().outputs:
            for client, _ in fgraph.clients[output]:
                op = getattr(client, "op", None)
                if isinstance(op, FusedStep | FusedCheck):
                    return True
                if isinstance(op, passing) and not client.outputs[0].type.ndim and client not in seen:
                    seen.add(client)
                    todo.append(client)
    return False


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
        step = self.checked
        ok = step._all_finite(*step.split(inputs), 0, step.starts, step.starts[-1])
        output_storage[0][0] = np.asarray(ok)

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
    checks, moved = [], set()
    for step in steps:  # a step's gradients all checked: their check joins the step's
        grads = set(step.op.split(step.inputs)[1])
        with_grads = grads <= set(others)
        moved |= grads if with_grads else set()
        checks.append(FusedCheck(step.op, with_grads)(*step.inputs))
    others = [x for x in others if x not in moved]
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
    param fewer (the README's stack under the C VM at P = 10: 32 nodes -> 22)."""
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


class MergeStepScalars(GraphRewriter):
    """Merge the 0-d Elemwise nodes that compute a step's scalars (each counter's increment,
    Adam's bias correction, the clip's scale, the gated counters) into as few nodes as their
    dependencies allow: one node before the step's check and one for the gate after it in a
    guarded stack, instead of one per wrapper. Each is a module to compile: a C module (about
    0.2 s of gcc at least) or a Numba function."""

    def apply(self, fgraph):
        nodes = [node for node in fgraph.toposort() if _is_step_scalar(fgraph, node)]
        while len(nodes) > 1:
            group, rest = [nodes[0]], []
            for node in nodes[1:]:
                produced = {x for member in group for x in member.outputs}
                outside = [x for x in node.inputs if x not in produced]
                (group if produced.isdisjoint(ancestors(outside)) else rest).append(node)
            if len(group) > 1:
                _merge(fgraph, group)
            nodes = rest


def _is_step_scalar(fgraph, node) -> bool:
    """A 0-d Elemwise that feeds a step's scalars or reads its check (a gated counter)."""
    if type(node.op) is not Elemwise or node.op.inplace_pattern:
        return False
    if any(x.type.ndim for x in (*node.inputs, *node.outputs)):
        return False
    reads = any(isinstance(getattr(x.owner, "op", None), FusedStep | FusedCheck) for x in node.inputs)
    return reads or feeds_a_step(fgraph, node)


def _merge(fgraph, group: list) -> None:
    """Replace the 0-d Elemwise nodes of ``group`` (in order, none depending on another through a
    node outside it) by one, whose Composite holds their scalar graphs."""
    produced = {x for node in group for x in node.outputs}
    inputs = list(dict.fromkeys(x for node in group for x in node.inputs if x not in produced))
    scalars = {x: ps.get_scalar_type(x.dtype)() for x in inputs}
    for node in group:
        scalars.update(zip(node.outputs, _applied(node.op.scalar_op, [scalars[x] for x in node.inputs])))
    members = set(group)  # the outputs read outside the group (or returned)
    outputs = [x for n in group for x in n.outputs if any(c not in members for c, _ in fgraph.clients[x])]
    composite = ps.Composite([scalars[x] for x in inputs], [scalars[x] for x in outputs])
    merged = Elemwise(composite)(*inputs, return_list=True)
    fgraph.replace_all_validate(list(zip(outputs, merged)), reason="updates_merge_step_scalars")


def _applied(op, arguments: list) -> list:
    """The outputs of the scalar ``op`` on ``arguments``; a Composite's graph rebuilt on them."""
    if not isinstance(op, ps.Composite):
        return op.make_node(*arguments).outputs
    values = dict(zip(op.fgraph.inputs, arguments))
    for node in op.fgraph.toposort():
        values.update(zip(node.outputs, node.op.make_node(*(values.get(x, x) for x in node.inputs)).outputs))
    return [values.get(x, x) for x in op.fgraph.outputs]


def register_rewrites() -> None:
    """Add the rewrites to PyTensor's database (called once, by ``updates.backends``)."""
    from pytensor.compile import optdb

    # after the wrappers join their rule's node (0.45), before PyTensor's canonicalization (1)
    optdb.register("updates_gate_inside_the_step", in2out(_gate_inside_the_step), "fast_run", position=0.46)
    # after it and the specializations, before the elementwise fusion (49)
    optdb.register(
        "updates_fold_the_gradients_transform",
        in2out(_fold_the_gradients_transform),
        "fast_run",
        position=48.5,
    )
    # after the step's in-place pass (50.4), before the backends' rewrites of its scalars; a
    # fusion (its Composite), so not where PyTensor fuses nothing (PyTorch)
    optdb.register("updates_merge_step_scalars", MergeStepScalars(), "fast_run", "fusion", position=50.42)
