"""The multi-tensor step under Numba: the chain of nodes it becomes, equal to the readable graph,
and cached across processes."""

import subprocess
import sys
import textwrap

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.basic import MakeVector
from registry import GRADIENT_RULES

import updates
from updates.backends import numba as numba_step
from updates.backends.numba import chain_widths
from updates.fused import FusedStep

if not numba_step.NUMBA:
    pytest.skip("PyTensor's Numba backend has no cache keys here (PyTensor 2.38)", allow_module_level=True)

RULES = [case for case in GRADIENT_RULES if not case.rule.per_tensor]


def nodes_of(step, op_type):
    return [node for node in step.maker.fgraph.apply_nodes if isinstance(node.op, op_type)]


@pytest.mark.parametrize("n_params", [1, 5, 16, 17, 30, 100])
def test_chain_widths_cover_every_param_with_two_widths_at_most(n_params):
    widths = chain_widths(n_params)
    assert sum(widths) == n_params
    assert set(widths) <= {1, 8} and (n_params > 16 or set(widths) == {1})


@pytest.mark.parametrize("clear_nan", [False, True])
@pytest.mark.parametrize("case", RULES, ids=str)
def test_every_kernel_is_written_out_in_one_function(case, clear_nan):
    """No op of a kernel falls back to a Numba function of its own (one more compile each)."""
    w = pytensor.shared(np.ones(3), name="w")
    result = case.function([pt.vector("g")], [w], clear_nan=clear_nan, **case.hyper)
    op = result[w].owner.op
    assert isinstance(op, FusedStep)
    arguments = [f"a{i}" for i in range(len(op.composite.inputs))]
    lines, namespace, _ = numba_step._scalar_source(
        op.composite, arguments, ["p", *arguments[2:][: op.n_slots]]
    )
    assert not [name for name in namespace if name.startswith("f")], lines


def test_scalars_of_the_step_become_one_plain_function():
    w = pytensor.shared(np.ones(3), name="w")
    g = pt.vector("g")
    step = pytensor.function([g], [], updates=updates.adam([g], [w]), mode="NUMBA")
    scalar_elemwise = [
        n
        for n in step.maker.fgraph.apply_nodes
        if n.op.__class__.__name__ == "Elemwise" and not n.outputs[0].ndim
    ]
    assert not scalar_elemwise
    assert len(nodes_of(step, numba_step.ScalarStep)) == 1
    assert not nodes_of(step, MakeVector)  # the step's scalars: one more output of that function


def test_the_scalars_of_a_guarded_stack_are_packed_where_they_are_computed():
    """Each chain's scalars are a vector output of a ScalarStep (no MakeVector node to compile),
    which Numba and its Python ``perform`` compute alike."""
    w = pytensor.shared(np.ones(3), name="w")
    g = pt.vector("g")
    lookahead = updates.apply_lookahead(updates.adam([g], [w], learning_rate=0.1))
    step = pytensor.function([g], [], updates=updates.apply_if_finite(lookahead, grads=[g]), mode="NUMBA")
    assert not nodes_of(step, MakeVector)
    packing = [node for node in nodes_of(step, numba_step.ScalarStep) if node.op.packs]
    assert len(packing) == 2  # the check's scalars and the step's
    for node in packing:
        inputs = [x.type() for x in node.inputs]
        values = [np.asarray(0.5 + i, dtype=x.dtype) for i, x in enumerate(inputs)]
        results = [
            pytensor.function(inputs, node.op(*inputs, return_list=True), mode=mode)(*values)
            for mode in ("NUMBA", pytensor.compile.mode.Mode("py", None))
        ]
        for numba_value, python_value in zip(*results):
            np.testing.assert_array_equal(numba_value, python_value)


@pytest.mark.parametrize("case", [c for c in RULES if not c.rule.slots], ids=str)
def test_a_step_without_state_fuses_into_the_gradient(case):
    """As SGD written by hand: the same nodes as the readable per-parameter graph."""
    params = [pytensor.shared(np.ones(3), name=f"w{i}") for i in range(4)]
    x = pt.vector("x")
    loss = pt.add(*[((p - x) ** 2).sum() for p in params])
    counts = []
    for per_parameter in (False, True):
        with updates.per_parameter(per_parameter):
            step_updates = case.function(loss, params, **case.hyper)
        step = pytensor.function([x], loss, updates=step_updates, mode="NUMBA")
        assert not nodes_of(step, numba_step.ParamStep)
        counts.append(len(step.maker.fgraph.apply_nodes))
    assert counts[0] == counts[1]


def test_a_step_that_may_not_overwrite_its_inputs_runs_on_copies():
    """The gradient is the param itself: the step may not update it in place, and still equals the
    per-parameter graph."""
    results = []
    for mode, per_parameter in (("NUMBA", False), ("FAST_COMPILE", True)):
        w = pytensor.shared(np.array([1.0, -2.0, 3.0]), name="w")
        with updates.per_parameter(per_parameter):
            step = pytensor.function([], [], updates=updates.adam([w], [w], learning_rate=0.1), mode=mode)
        for _ in range(3):
            step()
        results.append(w.get_value())
    np.testing.assert_allclose(*results, rtol=1e-13)


def test_a_new_process_loads_the_compiled_step_from_the_cache(tmp_path):
    """The second process finds everything in PyTensor's cache (the kernel's address is
    registered again) and computes the same numbers."""
    script = textwrap.dedent(
        """
        import numpy as np, pytensor, pytensor.tensor as pt, updates
        params = [pytensor.shared(np.linspace(-1, 1, 3 + i), name=f"w{i}") for i in range(20)]
        x = pt.scalar("x")
        loss = pt.add(*[((p - x) ** 2).sum() for p in params])
        adam = updates.adam(loss, params, learning_rate=0.1)
        step = pytensor.function([x], loss, updates=adam, mode="NUMBA")
        for _ in range(3):
            step(0.5)
        print(repr(np.concatenate([p.get_value() for p in params]).tolist()))
        """
    )
    env = {"PYTENSOR_FLAGS": f"base_compiledir={tmp_path}", "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1]
    assert list((tmp_path / "numba").glob("*")) or list(tmp_path.rglob("*.nbi"))
