"""The multi-tensor step under PyTensor's C linkers (the C VM, PyMC's default): one C loop per param.

A :class:`~updates.fused.FusedStep` run by its Python ``perform`` costs 10 to 20 us of Python per
call (gathering, pointers, ctypes): more than the model's own step when the params are small, as
in PyMC's ADVI (1.37x PyMC's own Adam per call). The per-parameter graph avoids the Python, but
its nodes, two to four per param, each cost the VM a call, and its outputs are new arrays (Adam
over 10 params of shape (10,): 20.8 us per step, the model alone 12.4 us). So in the modes that
run C code, a rewrite (after the in-place passes) replaces each FusedStep by a :class:`CStep`:
the same node, the same in-place outputs, with C code generated from the rule's scalar
:class:`~pytensor.scalar.Composite` (the code PyTensor's own fused elementwise loops run), called
once per param on its contiguous data and its segment of each flat buffer. No Python runs per
call, and the kernel is compiled once per (rule, dtype, shapes) by PyTensor's C module cache.

A gradient of another dtype or layout is cast to a contiguous copy first; a param or buffer that
is not C-contiguous (a value set by the user) is replaced by a contiguous copy.
"""

from __future__ import annotations

from functools import cached_property

import pytensor
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.link.c.op import COp
from pytensor.scalar import get_scalar_type
from pytensor.tensor.elemwise import Elemwise

from updates.fused import FusedStep, MultiTensorOp, vector_function

#: Bumped when the generated code changes meaning (part of PyTensor's C cache key).
_VERSION = 2


class CStep(MultiTensorOp, COp):
    """A :class:`~updates.fused.FusedStep` with a C implementation (built by the C rewrite only).

    Its properties are what the C code depends on (and what PyTensor's C cache pickles as the
    key): the rule's scalar Composite, the dtype, the numbers of params, slots and scalars, whether
    in place, and the rule's name for messages. Not the params' sizes, which the C code reads
    from the arrays: a model of other shapes, with as many params, reuses the compiled module.
    """

    __props__ = ("composite", "dtype", "n_params", "n_slots", "n_scalars", "inplace", "label")

    def __init__(self, composite, dtype, sizes, n_slots, n_scalars, inplace, label):
        self.composite = composite
        self.n_scalars = n_scalars
        self.label = label
        self._set_layout(dtype, sizes, n_slots, inplace)  # the sizes serve perform only

    @classmethod
    def of(cls, op: FusedStep) -> CStep:
        """The C form of ``op``."""
        n_scalars = len(op.scalar_names)
        return cls(op.composite, op.dtype, op.sizes, op.n_slots, n_scalars, op.inplace, op.kernel.name)

    def __str__(self):
        return f"CStep{{{self.label}, {self.dtype}, {self.n_params} params}}"

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
/* Make *target the array the step writes: source itself if in place and C-contiguous, else a
   C-contiguous copy of it. */
static int {name}_writable(PyArrayObject* source, PyArrayObject** target, int inplace) {{
    Py_XDECREF(*target);
    if (inplace && PyArray_IS_C_CONTIGUOUS(source) && PyArray_ISALIGNED(source)) {{
        *target = source;
        Py_INCREF(source);
        return 0;
    }}
    *target = (PyArrayObject*) PyArray_FromAny((PyObject*) source, PyArray_DescrFromType({typenum}),
        0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_ENSURECOPY, NULL);
    return *target == NULL;
}}

static int {name}_kernel({", ".join(arguments)}) {{
    for (npy_intp k = 0; k < n; ++k) {body}
    return 0;
}}
"""

    def c_code(self, node, name, inputs, outputs, sub):
        n, n_slots, ctype, fail = self.n_params, self.n_slots, _ctype(self.dtype), sub["fail"]
        params, grads, buffers, scalars = self.split(list(inputs))
        typenum, label = _typenum(self.dtype), str(self).replace('"', "")

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
                *(f"({ctype}*) PyArray_DATA(*slots_out[{j}]) + offset" for j in range(n_slots)),
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
npy_intp total = 0, offset = 0;
for (int i = 0; i < {n}; ++i) total += PyArray_SIZE(params_in[i]);
for (int j = 0; j < {n_slots}; ++j) {{
    if (PyArray_SIZE(slots_in[j]) != total) {{
        PyErr_SetString(PyExc_ValueError, "{label}: the params changed size after the updates were built");
        {fail}
    }}
}}
for (int i = 0; i < {n}; ++i) {{
    if ({name}_writable(params_in[i], params_out[i], {int(self.inplace)})) {{ {fail} }}
}}
for (int j = 0; j < {n_slots}; ++j) {{
    if ({name}_writable(slots_in[j], slots_out[j], {int(self.inplace)})) {{ {fail} }}
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
        PyErr_Format(PyExc_ValueError, "{label}: grads[%d] and its param differ in size", i);
        {fail}
    }}
    int status = {name}_kernel({arguments});
    Py_DECREF(g);
    if (status) {{ {fail} }}
    offset += size;
}}
}}"""


def _ctype(dtype: str) -> str:
    return get_scalar_type(dtype).dtype_specs()[1]


def _typenum(dtype: str) -> str:
    return f"NPY_{dtype.upper()}"


#: Beyond this many params of a dtype the step stays in Python (``perform``, one call of the
#: vector kernel over all of them): the C node's module, with one argument per param, gradient
#: and output, took minutes to compile at 300 params.
C_MAX_PARAMS = 64


@node_rewriter([FusedStep])
def _fused_step_in_c(fgraph, node):
    """Replace a FusedStep by its C form, same inputs and in-place choice."""
    if not pytensor.config.cxx or node.op.n_params > C_MAX_PARAMS:
        return None
    return CStep.of(node.op).make_node(*node.inputs).outputs


# after the in-place pass (50.4), in the modes that run C code only ("cxx_only" is excluded by
# the Numba, JAX, PyTorch and MLX linkers)
optdb.register("updates_fused_step_in_c", in2out(_fused_step_in_c), "fast_run", "cxx_only", position=50.45)
