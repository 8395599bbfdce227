"""The multi-tensor step under PyTensor's C linkers (the C VM, PyMC's default): C loops, no Python.

A :class:`~updates.fused.FusedStep` run by its Python ``perform`` costs 10 to 20 us of Python per
call: more than the model's own step when the params are small, as in PyMC's ADVI (1.37x PyMC's
own Adam per call). The per-parameter graph avoids the Python, but its nodes, two to four per
param, each cost the VM a call, and its outputs are new arrays (Adam over 10 params of shape
(10,): 20.8 us per step, the model alone 12.4 us). So in the modes that run C code, a rewrite
(after the in-place passes) replaces each FusedStep by a chain of :class:`CStep` nodes, a few
params each (:func:`c_chain_widths`), that thread the flat buffers from one to the
next and update params and buffers in place. Their C code is generated from the rule's scalar
:class:`~pytensor.scalar.Composite` (the code PyTensor's own fused elementwise loops run) and
runs it on each param's contiguous data and its segment of each buffer.

Why a chain: PyTensor's C code for a node grows with its arguments (extracting and checking each
one), and gcc's time with it faster than linearly: one node over 100 params, with its 300
arguments, took 125 s to compile, against 1.4 s for the whole rest of the step. The params'
positions in the buffers are an input of each node, so a node of a width is one C module, cached
by PyTensor and shared by every chain, model and process with the same rule and dtype; a chain
has one or two widths (:func:`c_chain_widths`). The modules compile at ``-O1`` under GCC, the
kernel at ``-O3`` (:mod:`updates.c_compile`): the guarded stack over 10 params started in 10.5 s
before, 6.5 s after (the model alone 3.6 s), and so do the 0-d nodes of the step's scalars
(:class:`LeanElemwise`).

A :class:`~updates.folding.FusedCheck` (the first pass of a guarded step) becomes a chain of the
same nodes in their ``check`` form, which run the rule's code into locals and thread a flag; a
``updates.reductions.FusedSums`` (the sums a rule such as Prodigy takes over every param
before its step) a chain in their ``sums`` form, which run the terms' code into locals and thread
a float64 vector of partial sums. Prodigy over 30 params of shape (10,) under the C VM, its sums
run by ``perform`` (Python, NumPy): about 280 us a step, 6x Adam's 47 us; as the C chain: 60 us,
1.3x Adam's (medians on a shared machine; the start unchanged within its noise).

A gradient of another dtype or layout is cast to a contiguous copy first; a param or buffer that
is not C-contiguous (a value set by the user) is replaced by a contiguous copy.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.link.c.op import COp
from pytensor.scalar import get_scalar_type
from pytensor.tensor.elemwise import Elemwise

from updates.c_compile import HOT, LeanCompile
from updates.folding import FusedCheck, feeds_a_step
from updates.fused import FusedStep, MultiTensorOp, vector_function
from updates.reductions import FusedSums, add_sums

#: Bumped when the generated code changes meaning (part of PyTensor's C cache key).
_VERSION = 7


#: The forms of a :class:`CStep`, by what it does with the Composite's outputs on each element.
_FORMS = ("step", "check", "sums")


class CStep(LeanCompile, MultiTensorOp, COp):
    """A few params' share of a :class:`~updates.fused.FusedStep`, in place, with C code (built
    by the C rewrite only); in its ``check`` form, the share of a
    :class:`~updates.folding.FusedCheck`; in its ``sums`` form, of a
    ``updates.reductions.FusedSums``.

    Inputs: as a FusedStep's (params, gradients, the whole flat buffers, scalars), then the
    int64 vector ``[first, start_0, ..., start_n, total]``: the index of its first param in the
    step, where each of its params begins in the buffers (and where the last ends), and the
    buffers' size; with ``check``, then the boolean scalar that the checks before it give; with
    ``sums``, then the float64 vector of the sums over the params before it (zeros for the
    first). Its properties are what the C code depends on, and what PyTensor's C cache pickles
    as the key: the Composite (the rule's, or the terms' of a FusedSums), the dtype, the numbers
    of params, slots and scalars, the rule's name for messages, and its form: ``step`` (outputs:
    the new params and buffers, written over the old), ``check`` (output: the boolean scalar,
    true when the checks before it and its own new values are all finite) or ``sums`` (output:
    the sums before it plus each output of the Composite, in its dtype, summed in float64 over
    its params' elements, one after the other, the params in order). Neither of the last two
    writes anything.
    """

    __props__ = ("composite", "dtype", "n_params", "n_slots", "n_scalars", "label", "form")

    def __init__(
        self,
        composite,
        dtype: str,
        n_params: int,
        n_slots: int,
        n_scalars: int,
        label: str,
        form: str = "step",
    ):
        if form not in _FORMS:
            raise ValueError(f"CStep: form must be one of {_FORMS}, got {form!r}")
        self.composite = composite
        self.n_scalars = n_scalars
        self.label = label
        self.form = form
        self._set_layout(dtype, n_params, n_slots, inplace=form == "step")

    def __str__(self):
        kind = {"step": "CStep", "check": "CCheck", "sums": "CSums"}[self.form]
        return f"{kind}{{{self.label}, {self.dtype}, {self.n_params} params}}"

    @property
    def count(self) -> int:
        """How many outputs the Composite has: in the ``sums`` form, how many sums."""
        return len(self.composite.outputs)

    def make_node(self, *inputs):
        if self.form == "step":
            return super().make_node(*inputs)
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        if self.form == "check":
            return Apply(self, inputs, [pt.tensor(dtype="bool", shape=())])
        return Apply(self, inputs, [pt.tensor(dtype="float64", shape=(self.count,))])

    def infer_shape(self, fgraph, node, shapes):
        if self.form == "step":
            return super().infer_shape(fgraph, node, shapes)
        return [()] if self.form == "check" else [(self.count,)]

    def split(self, inputs):
        params, grads, buffers, rest = super().split(inputs)
        return params, grads, buffers, rest[: self.n_scalars]

    def perform(self, node, inputs, output_storage):
        params, grads, buffers, scalars = self.split(inputs)
        first, *starts, total = inputs[2 * self.n_params + self.n_slots + self.n_scalars].tolist()
        if self.form == "step":
            self._run(params, grads, buffers, scalars, first, starts, total, output_storage)
        elif self.form == "check":
            ok = bool(inputs[-1]) and self._all_finite(params, grads, buffers, scalars, first, starts, total)
            output_storage[0][0] = np.asarray(ok)
        else:
            self._check_sizes(params, grads, buffers, first, starts, total)
            segments = [buffer[starts[0] : starts[-1]] for buffer in buffers]
            sums = np.array(inputs[-1], dtype="float64")
            add_sums(sums, self._outputs(params, grads, segments, scalars), starts)
            output_storage[0][0] = sums

    @cached_property
    def vector_function(self):
        """The composite on 1-d arrays (``perform``: the Python linker)."""
        vectors = [pt.vector(dtype=self.dtype) for _ in range(2 + self.n_slots)]
        scalars = [pt.scalar(dtype=self.dtype) for _ in range(self.n_scalars)]
        outputs = Elemwise(self.composite)(*vectors, *(x.dimshuffle("x") for x in scalars), return_list=True)
        return vector_function([*vectors, *scalars], outputs)

    def _scalar_node(self):
        return self.composite.make_node(*(get_scalar_type(x.type.dtype)() for x in self.composite.inputs))

    def c_code_cache_version(self):
        inner = self.composite.c_code_cache_version()
        return (_VERSION, *inner) if inner else ()

    def c_headers(self, **kwargs):
        return ["<math.h>", *self.composite.c_headers(**kwargs)]

    def c_header_dirs(self, **kwargs):
        return self.composite.c_header_dirs(**kwargs)

    def c_libraries(self, **kwargs):
        return self.composite.c_libraries(**kwargs)

    def c_compile_args(self, **kwargs):
        return [*self.composite.c_compile_args(**kwargs), *super().c_compile_args(**kwargs)]

    def c_support_code(self, **kwargs):
        return [HOT, *_as_list(self.composite.c_support_code(**kwargs))]

    def c_support_code_apply(self, node, name):
        """``<name>_kernel(p, g, *slots, *h, n)``: the rule on ``n`` elements, in place (with
        ``check``: whether a new value is not finite, writing nothing; with ``sums``, and
        ``sums`` last: the outputs added into ``sums``, writing nothing else);
        ``<name>_contiguous``, ``<name>_gradient``: the arrays it reads."""
        ctype = _ctype(self.dtype)
        slots = [f"s{j}" for j in range(self.n_slots)]
        scalars = [f"h{j}" for j in range(self.n_scalars)]
        elements = ["p[k]", *(f"{s}[k]" for s in slots)]
        targets = [f"o{j}" for j in range(self.count)] if self.form != "step" else elements
        body = self.composite.c_code(
            self._scalar_node(),
            f"{name}_scalar",
            [elements[0], "g[k]", *elements[1:], *scalars],
            targets,
            {"fail": "return 1;"},
        )
        written = "const " if self.form != "step" else ""
        arguments = [
            f"{written}{ctype}* __restrict__ p",
            f"const {ctype}* __restrict__ g",
            *(f"{written}{ctype}* __restrict__ {s}" for s in slots),
            *(f"const {ctype} {h}" for h in scalars),
            "const npy_intp n",
            *(["double* __restrict__ sums"] if self.form == "sums" else []),
        ]
        if self.form == "sums":  # each output in its own dtype, its sum over the param in a local
            outputs = [(o, _ctype(x.type.dtype)) for o, x in zip(targets, self.composite.outputs)]
            loop = f"""{" ".join(f"double a{j} = 0;" for j in range(self.count))}
    for (npy_intp k = 0; k < n; ++k) {{
        {" ".join(f"{c} {o};" for o, c in outputs)}
        {body}
        {" ".join(f"a{j} += (double) {o};" for j, (o, _) in enumerate(outputs))}
    }}
    {" ".join(f"sums[{j}] += a{j};" for j in range(self.count))}
    return 0;"""
        elif self.form == "check":  # no branch in the loop, which gcc vectorizes
            loop = f"""int bad = 0;
    for (npy_intp k = 0; k < n; ++k) {{
        {ctype} {", ".join(targets)};
        {body}
        bad |= {" | ".join(f"!isfinite({o})" for o in targets)};
    }}
    return bad;"""
        else:
            loop = f"for (npy_intp k = 0; k < n; ++k) {body}\n    return 0;"
        inner = self.composite.c_support_code_apply(self._scalar_node(), f"{name}_scalar")
        typenum = _typenum(self.dtype)
        return f"""
{inner}
/* A new reference to source itself if C-contiguous, aligned and of the step's dtype, else to a
   copy that is (a copy always with ensure_copy); NULL on failure. */
static PyArrayObject* {name}_contiguous(PyArrayObject* source, int ensure_copy) {{
    if (!ensure_copy && PyArray_IS_C_CONTIGUOUS(source) && PyArray_ISALIGNED(source)
            && PyArray_TYPE(source) == {typenum}) {{
        Py_INCREF(source);
        return source;
    }}
    int flags = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST;
    if (ensure_copy) flags |= NPY_ARRAY_ENSURECOPY;
    PyArray_Descr* descr = PyArray_DescrFromType({typenum});
    return (PyArrayObject*) PyArray_FromAny((PyObject*) source, descr, 0, 0, flags, NULL);
}}

/* Make *target the array the step writes: source itself if C-contiguous, else a C-contiguous
   copy of it. */
static int {name}_writable(PyArrayObject* source, PyArrayObject** target) {{
    Py_XDECREF(*target);
    *target = {name}_contiguous(source, !(PyArray_IS_C_CONTIGUOUS(source) && PyArray_ISALIGNED(source)));
    return *target == NULL;
}}

/* The gradient of params[index] as the kernel reads it: a new reference, NULL on failure. */
static PyArrayObject* {name}_gradient(PyArrayObject* g, npy_intp size, long index) {{
    PyArrayObject* read = {name}_contiguous(g, 0);
    if (read != NULL && PyArray_SIZE(read) != size) {{
        Py_DECREF(read);
        PyErr_Format(PyExc_ValueError, "{self.label}: grads[%ld] and its param differ in size", index);
        return NULL;
    }}
    return read;
}}

UPDATES_HOT static int {name}_kernel({", ".join(arguments)}) {{
    {loop}
}}
"""

    def c_code(self, node, name, inputs, outputs, sub):
        n, n_slots, ctype, fail = self.n_params, self.n_slots, _ctype(self.dtype), sub["fail"]
        params, grads, buffers, scalars = self.split(list(inputs))
        layout = inputs[2 * n + n_slots + self.n_scalars]
        label = str(self).replace('"', "")

        def array(kind: str, array_name: str, items: list[str]) -> str:
            return f"{kind} {array_name}[] = {{{', '.join(items) or 'NULL'}}};"

        read_scalars = [
            f"h[{j}] = ({ctype}) ((({_ctype(variable.dtype)}*) PyArray_DATA({x}))[0]);"
            for j, (x, variable) in enumerate(zip(scalars, node.inputs[2 * n + n_slots :]))
        ]
        step = self.form == "step"
        slot = "*slots_out[{j}]" if step else "slots_c[{j}]"
        arguments = ", ".join(
            [
                f"({ctype}*) PyArray_DATA({'*params_out[i]' if step else 'p'})",
                f"({ctype}*) PyArray_DATA(g)",
                *(f"({ctype}*) PyArray_DATA({slot.format(j=j)}) + layout[1 + i]" for j in range(n_slots)),
                *(f"h[{j}]" for j in range(self.n_scalars)),
                "size",
                *(["sums"] if self.form == "sums" else []),
            ]
        )
        common = f"""
{array("PyArrayObject*", "params_in", params)}
{array("PyArrayObject*", "grads_in", grads)}
{array("PyArrayObject*", "slots_in", buffers)}
{ctype} h[{max(self.n_scalars, 1)}];
{" ".join(read_scalars)}
if (PyArray_TYPE({layout}) != NPY_INT64 || PyArray_SIZE({layout}) != {n + 3}
        || !PyArray_IS_C_CONTIGUOUS({layout})) {{
    PyErr_SetString(PyExc_ValueError, "{label}: its layout must be {n + 3} contiguous int64");
    {fail}
}}
const npy_int64* layout = (const npy_int64*) PyArray_DATA({layout});
for (int i = 0; i < {n}; ++i) {{
    int resized = PyArray_SIZE(params_in[i]) != layout[2 + i] - layout[1 + i];
    for (int j = 0; j < {n_slots}; ++j) resized |= PyArray_SIZE(slots_in[j]) != layout[{n + 2}];
    if (resized) {{
        PyErr_Format(PyExc_ValueError, "{label}: params[%ld] changed size after the updates were built",
            (long) (layout[0] + i));
        {fail}
    }}
}}"""
        gradient = f"""npy_intp size = PyArray_SIZE(params_in[i]);
    PyArrayObject* g = {name}_gradient(grads_in[i], size, (long) (layout[0] + i));"""
        if self.form == "sums":
            (out,), before, count = outputs, inputs[-1], self.count
            return f"""{{{common}
double sums[{count}];
for (int j = 0; j < {count}; ++j) sums[j] = *(npy_float64*) PyArray_GETPTR1({before}, j);
int failed = 0;
PyArrayObject* slots_c[] = {{{", ".join(["NULL"] * max(n_slots, 1))}}};
for (int j = 0; j < {n_slots} && !failed; ++j) {{
    slots_c[j] = {name}_contiguous(slots_in[j], 0);
    failed = slots_c[j] == NULL;
}}
for (int i = 0; i < {n} && !failed; ++i) {{
    {gradient}
    PyArrayObject* p = g == NULL ? NULL : {name}_contiguous(params_in[i], 0);
    failed = p == NULL || {name}_kernel({arguments});
    Py_XDECREF(p);
    Py_XDECREF(g);
}}
for (int j = 0; j < {n_slots}; ++j) Py_XDECREF(slots_c[j]);
if (failed) {{ {fail} }}
if ({out} == NULL || PyArray_SIZE({out}) != {count} || !PyArray_IS_C_CONTIGUOUS({out})) {{
    Py_XDECREF({out});
    npy_intp dims[] = {{{count}}};
    {out} = (PyArrayObject*) PyArray_EMPTY(1, dims, NPY_FLOAT64, 0);
    if ({out} == NULL) {{ {fail} }}
}}
for (int j = 0; j < {count}; ++j) ((npy_float64*) PyArray_DATA({out}))[j] = sums[j];
}}"""
        if self.form == "check":
            (out,) = outputs
            return f"""{{{common}
int bad = !*(npy_bool*) PyArray_DATA({inputs[-1]});
PyArrayObject* slots_c[] = {{{", ".join(["NULL"] * max(n_slots, 1))}}};
for (int j = 0; j < {n_slots} && !bad; ++j) {{
    slots_c[j] = {name}_contiguous(slots_in[j], 0);
    bad = slots_c[j] == NULL ? -1 : 0;
}}
for (int i = 0; i < {n} && !bad; ++i) {{
    {gradient}
    PyArrayObject* p = g == NULL ? NULL : {name}_contiguous(params_in[i], 0);
    bad = p == NULL ? -1 : {name}_kernel({arguments});
    Py_XDECREF(p);
    Py_XDECREF(g);
}}
for (int j = 0; j < {n_slots}; ++j) Py_XDECREF(slots_c[j]);
if (bad < 0) {{ {fail} }}
if ({out} == NULL) {{
    {out} = (PyArrayObject*) PyArray_ZEROS(0, NULL, NPY_BOOL, 0);
    if ({out} == NULL) {{ {fail} }}
}}
*(npy_bool*) PyArray_DATA({out}) = !bad;
}}"""
        return f"""{{{common}
{array("PyArrayObject**", "params_out", [f"&{x}" for x in outputs[:n]])}
{array("PyArrayObject**", "slots_out", [f"&{x}" for x in outputs[n:]])}
for (int i = 0; i < {n}; ++i) {{
    if ({name}_writable(params_in[i], params_out[i])) {{ {fail} }}
}}
for (int j = 0; j < {n_slots}; ++j) {{
    if ({name}_writable(slots_in[j], slots_out[j])) {{ {fail} }}
}}
for (int i = 0; i < {n}; ++i) {{
    {gradient}
    if (g == NULL) {{ {fail} }}
    int status = {name}_kernel({arguments});
    Py_DECREF(g);
    if (status) {{ {fail} }}
}}
}}"""


def _as_list(code: str | list[str]) -> list[str]:
    return code if isinstance(code, list) else [code]


def _ctype(dtype: str) -> str:
    return get_scalar_type(dtype).dtype_specs()[1]


def _typenum(dtype: str) -> str:
    return f"NPY_{dtype.upper()}"


def c_chain_widths(n_params: int) -> list[int]:
    """How many params each node of a C chain updates: as few nodes as eight params each allow,
    as even as they can be (10 -> [5, 5], 13 -> [7, 6], 30 -> [8, 8, 7, 7]). Each width is a C
    module to compile, and a model's chain has one or two. Under the C VM each node costs a few
    µs of argument handling per call: Adam over 10 params of shape (10,) stepped in 8.6 µs as one
    node against 10.7 µs as ten (the model alone: 6.5 µs)."""
    nodes = -(-n_params // 8)
    width, wider = divmod(n_params, nodes) if nodes else (0, 0)
    return [width + 1] * wider + [width] * (nodes - wider)


def _chain(op: FusedStep, inputs, form: str) -> list:
    """The CStep nodes of ``op`` on ``inputs`` (its layout) in ``form``: the new params and
    buffers, the flag of a :class:`~updates.folding.FusedCheck` (``check``) or the sums of a
    ``updates.reductions.FusedSums`` (``sums``, ``op`` its ``terms``)."""
    params, grads, buffers, scalars = op.split(inputs)
    threaded = pt.constant(np.array(True) if form == "check" else np.zeros(len(op.composite.outputs)))
    new_params, first = [], 0
    for width in c_chain_widths(op.n_params):
        chunk, first = slice(first, first + width), first + width
        layout = np.array([chunk.start, *op.starts[chunk.start : first + 1], op.starts[-1]], dtype=np.int64)
        step = CStep(op.composite, op.dtype, width, op.n_slots, len(op.scalar_names), op.kernel.name, form)
        arguments = [*params[chunk], *grads[chunk], *buffers, *scalars, pt.constant(layout)]
        if form != "step":
            threaded = step(*arguments, threaded)
            continue
        new = step(*arguments, return_list=True)
        new_params += new[:width]
        buffers = new[width:]
    return [threaded] if form != "step" else [*new_params, *buffers]


class LeanElemwise(LeanCompile, Elemwise):
    """A 0-d Elemwise that computes a step's scalars (its counters, Adam's bias-corrected step
    size, the guard's gate), compiled at ``-O1`` (see :mod:`updates.c_compile`): each is a C
    module of its own, about 0.4 s of gcc at ``-O3`` for code that runs once per call."""


@node_rewriter([Elemwise])
def _scalar_elemwise_lean(fgraph, node):
    """A 0-d Elemwise whose results reach a step's scalars through 0-d Elemwises only."""
    if type(node.op) is not Elemwise or any(x.type.ndim for x in (*node.inputs, *node.outputs)):
        return None
    if not feeds_a_step(fgraph, node):
        return None
    return LeanElemwise(node.op.scalar_op, node.op.inplace_pattern)(*node.inputs, return_list=True)


@node_rewriter([FusedStep, FusedCheck, FusedSums])
def _fused_step_as_c_chain(fgraph, node):
    """Replace a FusedStep by a chain of CSteps over its params, threading the buffers through
    (a FusedCheck: the flag through; a FusedSums: the partial sums through)."""
    if not pytensor.config.cxx:
        return None
    if isinstance(node.op, FusedCheck):
        return _chain(node.op.checked, node.inputs, "check")
    if isinstance(node.op, FusedSums):
        return _chain(node.op.terms, node.inputs, "sums")
    op, inputs = node.op, list(node.inputs)
    if not op.inplace:  # the step may not overwrite its inputs: give it copies it may
        params, _, buffers, _ = op.split(range(len(inputs)))
        for i in [*params, *buffers]:
            inputs[i] = pt.tensor_copy(inputs[i])
    return _chain(op, inputs, "step")


def register() -> None:
    """Rewrite each multi-tensor node into the C chain after the in-place pass (50.4), in the modes
    that run C code only ("cxx_only" is excluded by the Numba, JAX, PyTorch and MLX linkers)."""
    optdb.register(
        "updates_scalar_elemwise_lean", in2out(_scalar_elemwise_lean), "fast_run", "cxx_only", position=50.44
    )
    optdb.register(
        "updates_fused_step_as_c_chain",
        in2out(_fused_step_as_c_chain),
        "fast_run",
        "cxx_only",
        position=50.45,
    )
