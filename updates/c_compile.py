"""How the library's C nodes are compiled: their loops at ``-O3``, the rest at ``-O1`` (GCC).

PyTensor compiles each C node as a module of its own at ``-O3``. Most of a module is the code
that extracts and checks each argument, which runs once per call; the loops over the elements
are a few lines. gcc's time goes to the former: the C VM's step for the README's guarded stack
over 10 params compiled four modules of 3,000 to 6,000 lines in 5.0 s, 2.3 s for the largest
(``-O1``: 1.2 s, ``-O0``: 0.6 s). So under GCC a module is compiled at ``-O1`` and each loop sits
in a function marked :data:`HOT`, which GCC compiles at ``-O3`` (vectorized, as before).
Other compilers (clang ignores the attribute) keep ``-O3`` for the whole module.
"""

from __future__ import annotations

import subprocess
from functools import cache

import pytensor

#: C: defines ``UPDATES_HOT``, the mark of a function holding a loop: never inlined (inlined into
#: its caller, a kernel loses its ``restrict`` pointers and gcc no longer vectorizes its loop:
#: Adam on 16M float32 elements ran at 4.2x torch's fused step instead of 1x), and compiled at
#: ``-O3`` by GCC in a module otherwise at ``-O1``.
HOT = """
#ifndef UPDATES_HOT
#if defined(_MSC_VER)
#define UPDATES_HOT __declspec(noinline)
#elif defined(__GNUC__) && !defined(__clang__)
#define UPDATES_HOT __attribute__((noinline, optimize("O3")))
#else
#define UPDATES_HOT __attribute__((noinline))
#endif
#endif
"""


@cache
def _is_gcc() -> bool:
    """Whether PyTensor's C++ compiler is GCC (``g++ --version`` names the Free Software
    Foundation; clang's ``g++`` on macOS does not)."""
    if not pytensor.config.cxx:
        return False
    try:
        found = subprocess.run([pytensor.config.cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in found.stdout and "clang" not in found.stdout


class LeanCompile:
    """A mixin for a :class:`~pytensor.link.c.op.COp` whose loops are in :data:`HOT` functions:
    its module is compiled at ``-O1`` under GCC."""

    def c_compile_args(self, **kwargs):
        return [*super().c_compile_args(**kwargs), *(["-O1"] if _is_gcc() else [])]

    def c_no_compile_args(self, **kwargs):
        return [*super().c_no_compile_args(**kwargs), *(["-O3"] if _is_gcc() else [])]
