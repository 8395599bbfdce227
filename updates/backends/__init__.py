"""How each PyTensor linker runs the multi-tensor step, one module per linker.

A rule or elementwise wrapper adds one :class:`~updates.fused.FusedStep` per dtype to the graph
(``updates.fused``, the Op alone, and ``updates.folding``, what the rewrites fold into it; a
step without state becomes its equations per param in every mode that rewrites for speed). Each
backend replaces or converts that node during PyTensor's rewriting, in the form that costs least
for its linker:

- ``c``: the C linkers (the C VM, PyMC's default): the node with C code generated from the rule's
  scalar Composite, one loop per param, in place, no Python per call;
- ``numba``: the Numba linker (PyTensor 3's default): a chain of small in-place nodes calling the
  rule's kernel compiled once, which keeps Numba's first call cheap;
- ``traced``: JAX and PyTorch: the expanded graph (concatenate, kernel, split), traced once.

Without a rewrite (``FAST_COMPILE``, the Python linker, no C compiler) the node's ``perform`` runs
the kernel compiled on vectors, param by param. :func:`register`, called once by ``import
updates``, adds the node's rewrites and every backend to PyTensor.
"""

from updates import folding, fused
from updates.backends import c, numba, traced

__all__ = ["c", "numba", "register", "traced"]

_registered = False


def register() -> None:
    """Add the multi-tensor node's rewrites and conversions to PyTensor, once per process."""
    global _registered
    if _registered:
        return
    _registered = True
    fused.register_rewrites()
    folding.register_rewrites()
    for backend in (c, numba, traced):
        backend.register()
