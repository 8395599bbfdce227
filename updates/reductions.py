"""One node over many tensors: whether every element is finite, the sum of their squares.

The guard of :func:`~updates.apply_if_finite` and of the training loop checks the gradients and
every new value. Written with PyTensor's ops, that is two nodes per tensor (``isfinite``, then
``all``) and one more to join them: in the README's stack at P = 30 params, about 130 of its 306
nodes, each one call of the C VM and one more function for Numba to compile. :class:`AllFinite`
is one node over all the tensors, whatever their number: C loops under the C linkers, one Numba
function under Numba (``updates.backends.numba``), its expanded graph under JAX and PyTorch
(``updates.backends.traced``), NumPy in ``perform``.

:class:`SumOfSquares` is the same for the global norm of :func:`~updates.clip_by_global_norm` and
:func:`~updates.total_norm_constraint` (:func:`l2_norm`): one node where ``Sum`` takes one per
tensor, and the ``ExpandDims`` that join the sums another.

:class:`FusedSums` sums what a rule needs over every element of every param before its step
(Prodigy's and D-Adaptation's inner products, DoG's distance travelled, Momo's and Polyak's
norms): the rule's elementwise terms on the layout of its multi-tensor node (params, gradients,
flat buffers, scalars), one node whatever the number of params, where the per-parameter graph
takes an elementwise node and a ``Sum`` per term and param.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.null_type import NullType
from pytensor.graph.op import Op
from pytensor.link.c.op import COp

from updates.c_compile import HOT, LeanCompile
from updates.fused import FusedStep
from updates.grads import clear_nan

#: Bumped when the C code changes meaning (part of PyTensor's C cache key).
_VERSION = 2

_CTYPES = {"float32": "npy_float32", "float64": "npy_float64"}


class AllFinite(LeanCompile, COp):
    """``AllFinite()(*tensors)``: a boolean scalar, true when no element of any tensor is NaN or
    infinite (true for no tensors). Its inputs are left as they are; it has no gradient."""

    __props__ = ()

    def make_node(self, *tensors):
        inputs = [pt.as_tensor_variable(x) for x in tensors]
        return Apply(self, inputs, [pt.tensor(dtype="bool", shape=())])

    def infer_shape(self, fgraph, node, shapes):
        return [()]

    def connection_pattern(self, node):
        return [[False] for _ in node.inputs]

    def L_op(self, inputs, outputs, output_grads):
        return [NullType("AllFinite has no gradient")() for _ in inputs]

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = np.asarray(all(np.isfinite(x).all() for x in inputs))

    def expand(self, inputs: list[Variable]) -> list[Variable]:
        """The same check in ordinary ops (for the tracing linkers)."""
        checks = [pt.all(isfinite(x)) for x in inputs]
        return [pt.all(pt.stack(checks)) if checks else pt.constant(True)]

    def c_code_cache_version(self):
        return (_VERSION,)

    def c_headers(self, **kwargs):
        return ["<math.h>"]

    def c_support_code(self, **kwargs):
        return _c_loops(_ANY_NONFINITE)

    def c_code(self, node, name, inputs, outputs, sub):
        if any(x.dtype not in _CTYPES for x in node.inputs):
            raise NotImplementedError("AllFinite: C code for float32 and float64 only")  # perform runs
        (out,), fail = outputs, sub["fail"]
        checks = "\n".join(_c_check(x, variable.dtype, fail) for x, variable in zip(inputs, node.inputs))
        return f"""{{
int bad = 0;
{checks}
if ({out} == NULL) {{
    {out} = (PyArrayObject*) PyArray_ZEROS(0, NULL, NPY_BOOL, 0);
    if ({out} == NULL) {{ {fail} }}
}}
*(npy_bool*) PyArray_DATA({out}) = !bad;
}}"""


def _c_check(x: str, dtype: str, fail: str) -> str:
    """Set ``bad`` if an element of the array ``x`` is not finite."""
    return f"if (!bad) {_c_read(x, dtype, fail, f'bad |= updates_any_nonfinite_{dtype}(d, n);')}"


def _c_read(x: str, dtype: str, fail: str, loop: str) -> str:
    """A block running ``loop`` on ``d``, the ``n`` elements of the array ``x`` (a contiguous copy
    first if it is strided)."""
    ctype, typenum = _CTYPES[dtype], f"NPY_{dtype.upper()}"
    return f"""{{
    PyArrayObject* a = (PyArrayObject*) PyArray_FromAny((PyObject*) {x}, PyArray_DescrFromType({typenum}),
        0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (a == NULL) {{ {fail} }}
    const {ctype}* d = (const {ctype}*) PyArray_DATA(a);
    const npy_intp n = PyArray_SIZE(a);
    {loop}
    Py_DECREF(a);
}}"""


def _c_loops(template: str) -> list[str]:
    """The support code of a node: :data:`~updates.c_compile.HOT` and ``template``'s function for
    each dtype (``{t}``: its name, ``{c}``: its C type)."""
    return [HOT, *(template.format(t=dtype, c=ctype) for dtype, ctype in _CTYPES.items())]


#: Whether one of ``n`` elements is not finite (no branch in the loop, which gcc vectorizes).
_ANY_NONFINITE = """
UPDATES_HOT static int updates_any_nonfinite_{t}(const {c}* __restrict__ d, const npy_intp n) {{
    int found = 0;
    for (npy_intp k = 0; k < n; ++k) found |= !isfinite(d[k]);
    return found;
}}"""

#: The sum of the squares of ``n`` elements, each square in the elements' dtype, summed in double.
_SUM_OF_SQUARES = """
UPDATES_HOT static double updates_sum_of_squares_{t}(const {c}* __restrict__ d, const npy_intp n) {{
    double sum = 0;
    for (npy_intp k = 0; k < n; ++k) sum += ({c}) (d[k] * d[k]);
    return sum;
}}"""


class SumOfSquares(LeanCompile, COp):
    """``SumOfSquares()(*tensors)``: the sum of the squares of every element of ``tensors``, as
    ``add(*(sum(sqr(x)) for x in tensors))`` gives it: each tensor's squares (in its dtype) summed
    in float64 and cast to its dtype, as PyTensor's ``Sum`` does, then those sums added in their
    common dtype, in order."""

    __props__ = ()

    def make_node(self, *tensors):
        inputs = [pt.as_tensor_variable(x) for x in tensors]
        if not inputs or any(not x.dtype.startswith("float") for x in inputs):
            raise TypeError(f"SumOfSquares: floating-point tensors expected, got {[x.dtype for x in inputs]}")
        dtype = pytensor.scalar.upcast(*(x.dtype for x in inputs))
        return Apply(self, inputs, [pt.tensor(dtype=dtype, shape=())])

    def infer_shape(self, fgraph, node, shapes):
        return [()]

    def L_op(self, inputs, outputs, output_grads):
        (g,) = output_grads
        return [pt.cast(2 * x * g, x.dtype) for x in inputs]

    def perform(self, node, inputs, output_storage):
        dtype = node.outputs[0].dtype
        sums = [np.sum(np.square(x), dtype="float64").astype(x.dtype) for x in inputs]
        total = np.zeros((), dtype)
        for value in sums:
            total = (total + value).astype(dtype)
        output_storage[0][0] = np.asarray(total, dtype)

    def expand(self, inputs: list[Variable]) -> list[Variable]:
        """The same sum in ordinary ops (for the tracing linkers)."""
        return [pt.add(*(pt.sum(pt.sqr(x)) for x in inputs))]

    def c_code_cache_version(self):
        return (_VERSION,)

    def c_support_code(self, **kwargs):
        return _c_loops(_SUM_OF_SQUARES)

    def c_code(self, node, name, inputs, outputs, sub):
        if any(x.dtype not in _CTYPES for x in node.inputs):
            raise NotImplementedError("SumOfSquares: C code for float32 and float64 only")  # perform runs
        (out,), fail, dtype = outputs, sub["fail"], node.outputs[0].dtype
        total = _CTYPES[dtype]
        sums = []
        for x, variable in zip(inputs, node.inputs):
            own = _CTYPES[variable.dtype]
            add = f"total += ({total}) ({own}) updates_sum_of_squares_{variable.dtype}(d, n);"
            sums.append(_c_read(x, variable.dtype, fail, add))
        sums = "\n".join(sums)
        return f"""{{
{total} total = 0;
{sums}
if ({out} == NULL) {{
    {out} = (PyArrayObject*) PyArray_ZEROS(0, NULL, NPY_{dtype.upper()}, 0);
    if ({out} == NULL) {{ {fail} }}
}}
*({total}*) PyArray_DATA({out}) = total;
}}"""


def l2_norm(tensors: Sequence[Variable], dtype: str | None = None) -> Variable:
    """The Euclidean norm of all the elements of ``tensors`` together (of one tensor: its norm).

    Each tensor's squares are summed in its own dtype (or in ``dtype``, cast first), the sums in
    their common dtype; over several tensors in one node (:class:`SumOfSquares`). The squares of
    one tensor are those of ``abs(x)``, the same numbers: PyTensor 2.38 rewrites ``sqrt(sqr(x))``
    of a lone scalar to ``x``, sign included.
    """
    tensors = [pt.as_tensor_variable(x if dtype is None else pt.cast(x, dtype)) for x in tensors]
    if len(tensors) == 1:
        return pt.sqrt(pt.sum(pt.sqr(abs(tensors[0]))))
    return pt.sqrt(SumOfSquares()(*tensors))


def total(terms: Iterable[Variable]) -> Variable:
    """The sum of ``terms``, added left to right (as optax sums over a tree of params)."""
    return functools.reduce(operator.add, terms)


def isfinite(x: Variable) -> Variable:
    """``pt.isfinite(x)``, written out where PyTensor has none (2.38)."""
    if hasattr(pt, "isfinite"):
        return pt.isfinite(x)
    return pt.invert(pt.or_(pt.isnan(x), pt.isinf(x)))  # PyTensor 2.38 has no isfinite


def all_finite(tensors: list[Variable]) -> Variable:
    """A boolean scalar: every element of every floating-point tensor in ``tensors`` is finite
    (one node, :class:`AllFinite`)."""
    checked = [x for x in tensors if x.dtype.startswith(("float", "complex"))]
    return AllFinite()(*checked) if checked else pt.constant(True)


@dataclass(frozen=True)
class Terms:
    """A rule's ``sums`` as the kernel of a :class:`~updates.fused.FusedStep` (which is not a node
    of the graph, but carries the layout and compiles the terms): ``(h, param, grad, *slots) ->
    terms``, the gradient with NaN cleared first with ``clear_nan``."""

    name: str
    terms: Callable
    clear_nan: bool = False

    def __call__(self, h: SimpleNamespace, param, grad, *slots):
        return tuple(self.terms(h, param, clear_nan(grad) if self.clear_nan else grad, *slots))


class FusedSums(Op):
    """``FusedSums(terms)(*inputs)``: a float64 vector, the sum of each output of the kernel of
    ``terms`` (a :class:`~updates.fused.FusedStep` whose kernel is a :class:`Terms`) over every
    element of every param, on ``inputs`` laid out as that step's. Writes nothing.

    Each term is computed in the params' dtype; each param's terms are summed in float64, element
    after element, and those sums added in the params' order: in float64, the numbers of
    ``total(pt.sum(term) for term in ...)`` on the per-parameter path.
    """

    __props__ = ("terms",)

    def __init__(self, terms: FusedStep):
        self.terms = terms

    def __str__(self):
        return f"FusedSums{{{getattr(self.terms.kernel, 'name', '?')}, {self.terms.dtype}}}"

    @property
    def count(self) -> int:
        """How many sums: the number of terms."""
        return len(self.terms.composite.outputs)

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        return Apply(self, inputs, [pt.tensor(dtype="float64", shape=(self.count,))])

    def infer_shape(self, fgraph, node, shapes):
        return [(self.count,)]

    def perform(self, node, inputs, output_storage):
        step = self.terms
        params, grads, buffers, scalars = step.split(inputs)
        step._check_sizes(params, grads, buffers, 0, step.starts, step.starts[-1])
        sums = np.zeros(self.count)
        add_sums(sums, step._outputs(params, grads, buffers, scalars), step.starts)
        output_storage[0][0] = sums

    def expand(self, inputs: list[Variable]) -> list[Variable]:
        """The same sums in ordinary ops (for the tracing linkers): concatenate, terms, sum."""
        step = self.terms
        params, grads, buffers, scalars = step.split(inputs)
        flat_param, flat_grad = (pt.concatenate([pt.flatten(x) for x in xs]) for xs in (params, grads))
        h = SimpleNamespace(**dict(zip(step.scalar_names, scalars)))
        terms = step.kernel(h, flat_param, flat_grad, *buffers)
        terms = [pt.broadcast_to(x, flat_param.shape) for x in terms]
        pieces = list(itertools.pairwise(step.starts))
        return [pt.stack([total(pt.sum(x[a:b], dtype="float64") for a, b in pieces) for x in terms])]


def add_sums(sums: np.ndarray, terms: Sequence[np.ndarray], starts: Sequence[int]) -> None:
    """Add to ``sums`` each of ``terms`` (each the params' terms end to end, or one value for all)
    summed over each param, the params beginning at ``starts`` (their end last): each param's
    terms in float64, one element after another (``cumsum``), as the C and Numba loops add them,
    then added to ``sums`` in the params' order."""
    terms = [np.broadcast_to(x, (starts[-1] - starts[0],)) for x in terms]
    for a, b in itertools.pairwise(np.subtract(starts, starts[0])):
        if b > a:
            sums += [np.cumsum(x[a:b], dtype="float64")[-1] for x in terms]


def fused_sums(terms: Terms, dtype: str, params: Sequence, grads: Sequence, buffers: Sequence, h) -> list:
    """The sums of ``terms`` over every element of ``params`` (one dtype, their gradients and flat
    buffers ``buffers``, the scalars ``h``): one :class:`FusedSums` node, each sum cast to ``dtype``."""
    names = tuple(vars(h))
    shapes = [p.get_value(borrow=True).shape for p in params]
    step = FusedStep(terms, dtype, shapes, len(buffers), names)
    sums = FusedSums(step)(*params, *grads, *buffers, *(getattr(h, n) for n in names))
    return [pt.cast(sums[j], dtype) for j in range(FusedSums(step).count)]
