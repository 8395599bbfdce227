"""The multi-tensor step under the tracing linkers, JAX and PyTorch: the expanded graph.

Their ``funcify`` of a :class:`~updates.fused.FusedStep` converts :meth:`FusedStep.expand
<updates.fused.FusedStep.expand>` (concatenate the params and gradients, apply the kernel, split),
traced once, which the backend's compiler fuses; a step without state is already its equations
per param (``updates.fused``) and joins the gradient's own nodes. Under JAX the inputs are cast to
their declared dtypes first: with 64-bit types on, JAX may hand a float32 model's gradients over
as float64, and the step computes in the params' dtype, as PyTensor says. The device step
(:func:`updates.compile_step`) runs the kernel per param instead (``updates.step.PieceStep``), as
XLA on CPU concatenates and splits flat buffers slowly.

The conversions are registered when PyTensor imports its JAX or PyTorch dispatch module
(:func:`when_imported`), so that ``import updates`` does not import jax or torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import numpy as np
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import clone_replace

from updates.folding import FusedCheck
from updates.fused import FusedStep, ancestors
from updates.reductions import AllFinite, FusedSums, SumOfSquares


def _funcify_expanded(funcify, typed: bool):
    """The step as the backend's function of the expanded graph; ``typed``: inputs cast first,
    outputs cast to their declared dtypes (with 64-bit types on, JAX sums float32 in float64)."""

    def funcify_fused_step(op, node, **kwargs):
        kwargs.pop("storage_map", None)
        inputs = [x.type() for x in node.inputs]
        outputs = op.expand(inputs)
        if not typed:  # PyTorch: constants as inputs (see _without_constants)
            return _without_constants(funcify, inputs, outputs, kwargs)
        function = funcify(FunctionGraph(inputs, outputs, clone=False), squeeze_output=True, **kwargs)
        import jax.numpy as jnp

        dtypes = [x.dtype for x in node.inputs]
        out_dtypes = [x.dtype for x in node.outputs]

        def fused_step(*arguments):
            results = function(*(jnp.asarray(x, dtype=d) for x, d in zip(arguments, dtypes)))
            if len(out_dtypes) == 1:
                return jnp.asarray(results, dtype=out_dtypes[0])
            return tuple(jnp.asarray(x, dtype=d) for x, d in zip(results, out_dtypes))

        return fused_step

    return funcify_fused_step


def _without_constants(funcify, inputs, outputs, kwargs):
    """The PyTorch function of the graph ``inputs -> outputs`` with its constants passed in as
    arguments: PyTorch's compiler cannot find the constants of a graph converted inside another
    (``tensor_constant_6`` "not an attribute of pytensor.link.utils")."""
    import torch

    constants = [x for x in ancestors(outputs) if isinstance(x, Constant)]
    held = [x.type() for x in constants]
    outputs = clone_replace(outputs, dict(zip(constants, held)))
    function = funcify(FunctionGraph([*inputs, *held], outputs, clone=False), squeeze_output=True, **kwargs)
    values = [torch.as_tensor(np.asarray(x.data)) for x in constants]

    def fused_step(*arguments):
        return function(*arguments, *values)

    return fused_step


def when_imported(name: str, callback) -> None:
    """Call ``callback(module)`` once the module ``name`` is imported (now, if it already is).

    A finder put first on ``sys.meta_path`` waits for ``name``, removes itself, and runs
    ``callback`` right after the module's own code. This is the one place the package touches
    module loading, and the least bad way found to register a conversion for the tracing
    linkers: PyTensor has no entry point for the conversions of another package's Op; a graph
    rewrite cannot stand in (the PyTorch mode asks for no tag of its own, so a rewrite cannot
    tell it from the C VM, and a JAX mode built without the "jax" tag would skip it); and
    importing the dispatch modules up front would make ``import updates`` (0.5 s) take 2.3 s
    instead (measured here: the JAX dispatch module 0.8 s, the PyTorch one 1.0 s more).
    """
    if name in sys.modules:
        callback(sys.modules[name])
        return

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is not None and spec.loader is not None:
                execute = spec.loader.exec_module

                def exec_module(module):
                    execute(module)
                    callback(module)

                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Hook())


def _register(funcify, typed: bool) -> None:
    for op in (FusedStep, FusedCheck, FusedSums, AllFinite, SumOfSquares):
        funcify.register(op)(_funcify_expanded(funcify, typed))


def register() -> None:
    """Register the conversions when PyTensor's JAX or PyTorch dispatch module is imported."""
    when_imported("pytensor.link.jax.dispatch", lambda module: _register(module.jax_funcify, typed=True))
    when_imported(
        "pytensor.link.pytorch.dispatch", lambda module: _register(module.pytorch_funcify, typed=False)
    )
