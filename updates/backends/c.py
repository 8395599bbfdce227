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
by PyTensor and shared by every chain, model and process with the same rule and dtype.

A gradient of another dtype or layout is cast to a contiguous copy first; a param or buffer that
is not C-contiguous (a value set by the user) is replaced by a contiguous copy.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.link.c.op import COp
from pytensor.scalar import get_scalar_type
from pytensor.tensor.elemwise import Elemwise

from updates.fused import FusedStep, MultiTensorOp, vector_function

#: Bumped when the generated code changes meaning (part of PyTensor's C cache key).
_VERSION = 4


class CStep(MultiTensorOp, COp):
    """A few params' share of a :class:`~updates.fused.FusedStep`, in place, with C code (built
    by the C rewrite only).

    Inputs: as a FusedStep's (params, gradients, the whole flat buffers, scalars), then the
    int64 vector ``[first, start_0, ..., start_n, total]``: the index of its first param in the
    step, where each of its params begins in the buffers (and where the last ends), and the
    buffers' size. Its properties are what the C code depends on, and what PyTensor's C cache
    pickles as the key: the rule's Composite, the dtype, the numbers of params, slots and
    scalars, and the rule's name for messages.
    """

    __props__ = ("composite", "dtype", "n_params", "n_slots", "n_scalars", "label")

    def __init__(self, composite, dtype: str, n_params: int, n_slots: int, n_scalars: int, label: str):
        self.composite = composite
        self.n_scalars = n_scalars
        self.label = label
        self._set_layout(dtype, n_params, n_slots, inplace=True)

    def __str__(self):
        return f"CStep{{{self.label}, {self.dtype}, {self.n_params} params}}"

    def split(self, inputs):
        params, grads, buffers, rest = super().split(inputs)
        return params, grads, buffers, rest[:-1]

    def perform(self, node, inputs, output_storage):
        params, grads, buffers, scalars = self.split(inputs)
        first, *starts, total = inputs[-1].tolist()
        self._run(params, grads, buffers, scalars, first, starts, total, output_storage)

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
        return self.composite.c_compile_args(**kwargs)

    def c_support_code(self, **kwargs):
        return self.composite.c_support_code(**kwargs)

    def c_support_code_apply(self, node, name):
        """``<name>_kernel(p, g, *slots, *h, n)``: the rule on ``n`` elements, in place."""
        ctype = _ctype(self.dtype)
        slots = [f"s{j}" for j in range(self.n_slots)]
        scalars = [f"h{j}" for j in range(self.n_scalars)]
        elements = ["p[k]", *(f"{s}[k]" for s in slots)]
        body = self.composite.c_code(
            self._scalar_node(),
            f"{name}_scalar",
            [elements[0], "g[k]", *elements[1:], *scalars],
            elements,
            {"fail": "return 1;"},
        )
        arguments = [
            f"{ctype}* __restrict__ p",
            f"const {ctype}* __restrict__ g",
            *(f"{ctype}* __restrict__ {s}" for s in slots),
            *(f"const {ctype} {h}" for h in scalars),
            "const npy_intp n",
        ]
        inner = self.composite.c_support_code_apply(self._scalar_node(), f"{name}_scalar")
        typenum = _typenum(self.dtype)
        return f"""
{inner}
/* Make *target the array the step writes: source itself if C-contiguous, else a C-contiguous
   copy of it. */
static int {name}_writable(PyArrayObject* source, PyArrayObject** target) {{
    Py_XDECREF(*target);
    if (PyArray_IS_C_CONTIGUOUS(source) && PyArray_ISALIGNED(source)) {{
        *target = source;
        Py_INCREF(source);
        return 0;
    }}
    *target = (PyArrayObject*) PyArray_FromAny((PyObject*) source, PyArray_DescrFromType({typenum}),
        0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_ENSURECOPY, NULL);
    return *target == NULL;
}}

/* Not inlined: inlined into its caller, the kernel loses its restrict pointers and gcc no longer
   vectorizes the loop (Adam on 16M float32 elements: 4.2x torch's fused step instead of 1x). */
#ifdef _MSC_VER
__declspec(noinline)
#else
__attribute__((noinline))
#endif
static int {name}_kernel({", ".join(arguments)}) {{
    for (npy_intp k = 0; k < n; ++k) {body}
    return 0;
}}
"""

    def c_code(self, node, name, inputs, outputs, sub):
        n, n_slots, ctype, fail = self.n_params, self.n_slots, _ctype(self.dtype), sub["fail"]
        params, grads, buffers, scalars = self.split(list(inputs))
        typenum, label, layout = _typenum(self.dtype), str(self).replace('"', ""), inputs[-1]

        def array(kind: str, array_name: str, items: list[str]) -> str:
            return f"{kind} {array_name}[] = {{{', '.join(items) or 'NULL'}}};"

        read_scalars = [
            f"h[{j}] = ({ctype}) ((({_ctype(variable.dtype)}*) PyArray_DATA({x}))[0]);"
            for j, (x, variable) in enumerate(zip(scalars, node.inputs[2 * n + n_slots :]))
        ]
        arguments = ", ".join(
            [
                f"({ctype}*) PyArray_DATA(*params_out[i])",
                f"({ctype}*) PyArray_DATA(g)",
                *(f"({ctype}*) PyArray_DATA(*slots_out[{j}]) + layout[1 + i]" for j in range(n_slots)),
                *(f"h[{j}]" for j in range(self.n_scalars)),
                "size",
            ]
        )
        return f"""{{
{array("PyArrayObject*", "params_in", params)}
{array("PyArrayObject*", "grads_in", grads)}
{array("PyArrayObject*", "slots_in", buffers)}
{array("PyArrayObject**", "params_out", [f"&{x}" for x in outputs[:n]])}
{array("PyArrayObject**", "slots_out", [f"&{x}" for x in outputs[n:]])}
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
}}
for (int i = 0; i < {n}; ++i) {{
    if ({name}_writable(params_in[i], params_out[i])) {{ {fail} }}
}}
for (int j = 0; j < {n_slots}; ++j) {{
    if ({name}_writable(slots_in[j], slots_out[j])) {{ {fail} }}
}}
for (int i = 0; i < {n}; ++i) {{
    npy_intp size = PyArray_SIZE(params_in[i]);
    PyArrayObject* g = grads_in[i];
    if (PyArray_IS_C_CONTIGUOUS(g) && PyArray_ISALIGNED(g) && PyArray_TYPE(g) == {typenum}) {{
        Py_INCREF(g);
    }} else {{
        g = (PyArrayObject*) PyArray_FromAny((PyObject*) g, PyArray_DescrFromType({typenum}),
            0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
        if (g == NULL) {{ {fail} }}
    }}
    if (PyArray_SIZE(g) != size) {{
        Py_DECREF(g);
        PyErr_Format(PyExc_ValueError, "{label}: grads[%ld] and its param differ in size",
            (long) (layout[0] + i));
        {fail}
    }}
    int status = {name}_kernel({arguments});
    Py_DECREF(g);
    if (status) {{ {fail} }}
}}
}}"""


def _ctype(dtype: str) -> str:
    return get_scalar_type(dtype).dtype_specs()[1]


def _typenum(dtype: str) -> str:
    return f"NPY_{dtype.upper()}"


def c_chain_widths(n_params: int) -> list[int]:
    """How many params each node of a C chain updates: eight each, then the binary digits of
    the rest (13 -> [8, 4, 1]). Four widths (8, 4, 2, 1) serve every model, so four C modules at
    most are ever compiled, and at most four nodes cover what the last eight leave. Under the C VM
    each node costs a few µs of argument handling per call: Adam over 10 params of shape (10,)
    stepped in 8.6 µs as one node against 10.7 µs as ten (the model alone: 6.5 µs)."""
    rest = n_params % 8
    return [8] * (n_params // 8) + [width for width in (4, 2, 1) if rest & width]


@node_rewriter([FusedStep])
def _fused_step_as_c_chain(fgraph, node):
    """Replace a FusedStep by a chain of CSteps over its params, threading the buffers through."""
    if not pytensor.config.cxx:
        return None
    op = node.op
    params, grads, buffers, scalars = op.split(node.inputs)
    if not op.inplace:  # the step may not overwrite its inputs: give it copies it may
        params = [pt.tensor_copy(p) for p in params]
        buffers = [pt.tensor_copy(b) for b in buffers]
    new_params, first = [], 0
    for width in c_chain_widths(op.n_params):
        chunk, first = slice(first, first + width), first + width
        layout = np.array([chunk.start, *op.starts[chunk.start : first + 1], op.starts[-1]], dtype=np.int64)
        step = CStep(op.composite, op.dtype, width, op.n_slots, len(op.scalar_names), op.kernel.name)
        new = step(*params[chunk], *grads[chunk], *buffers, *scalars, pt.constant(layout), return_list=True)
        new_params += new[:width]
        buffers = new[width:]
    return [*new_params, *buffers]


def register() -> None:
    """Rewrite each multi-tensor node into the C chain after the in-place pass (50.4), in the modes
    that run C code only ("cxx_only" is excluded by the Numba, JAX, PyTorch and MLX linkers)."""
    optdb.register(
        "updates_fused_step_as_c_chain",
        in2out(_fused_step_as_c_chain),
        "fast_run",
        "cxx_only",
        position=50.45,
    )
