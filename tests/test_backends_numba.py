"""The multi-tensor step under Numba: the chain of nodes it becomes, equal to the readable graph,
and cached across processes."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.basic import MakeVector
from pytensor.tensor.subtensor import Subtensor
from registry import GRADIENT_RULES

import updates
from updates.backends import numba as numba_step
from updates.backends.numba import chain_widths
from updates.fused import FusedStep
from updates.reductions import FusedSums, Terms

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


# -- FusedSums: the chain's sums form ---------------------------------------------------------


def _terms(h, param, grad, m):
    """Terms of each sign, one a scalar's, one boolean (a count), one the gradient as it is."""
    return grad * (m - param), abs(grad) * h.scale, param * param, param > h.scale, grad


def _sums_function(dtype, n_params, mode="NUMBA"):
    """A function of the gradients giving the FusedSums of :func:`_terms` over ``n_params`` params of
    a few shapes (a 0-d one among them), its op, the params and the inputs after the gradients."""
    rng = np.random.default_rng(n_params)
    shapes = [(2 + i % 3, 3) if i % 2 else () if i % 5 == 4 else (1 + i % 5,) for i in range(n_params)]
    params = [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"w{i}") for i, s in enumerate(shapes)]
    grads = [pt.tensor(f"g{i}", dtype=dtype, shape=(None,) * len(s)) for i, s in enumerate(shapes)]
    size = sum(int(np.prod(s)) for s in shapes)
    buffer = pytensor.shared(rng.normal(size=size).astype(dtype), name="m")
    scale = pt.scalar("scale", dtype=dtype)
    op = FusedSums(FusedStep(Terms("terms", _terms), dtype, shapes, 1, ("scale",)))
    function = pytensor.function([*grads, scale], op(*params, *grads, buffer, scale), mode=mode)
    return function, op, params, buffer


def _perform(op, params, grads, rest):
    node = op.make_node(*(pt.as_tensor_variable(x) for x in [*params, *grads, *rest]))
    storage = [[None]]
    op.perform(node, [*params, *grads, *rest], storage)
    return storage[0][0]


def _check_sums(function, op, params, buffer, dtype, seed=7, rtol=1e-14):
    values = [p.get_value() for p in params]
    rng = np.random.default_rng(seed)
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(dtype) for v in values]
        scale = np.asarray(rng.uniform(0.1, 0.5), dtype=dtype)
        got = function(*grads, scale)
        assert got.dtype == "float64" and got.shape == (5,)
        np.testing.assert_allclose(got, _perform(op, values, grads, [buffer.get_value(), scale]), rtol=rtol)


@pytest.mark.parametrize(
    ("dtype", "n_params"), [("float64", 1), ("float64", 3), ("float64", 17), ("float32", 3), ("float32", 17)]
)
def test_fused_sums_become_a_chain_of_numba_nodes_equal_to_perform(dtype, n_params):
    """No FusedSums left and nothing in object mode: a chain of sums nodes of the chain's widths,
    each term computed in the params' dtype and summed in float64 as ``perform`` sums it (its
    order of additions aside); the Python forms of the nodes give the same."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function, op, params, buffer = _sums_function(dtype, n_params)
        _check_sums(function, op, params, buffer, dtype)
    assert not [w for w in caught if "object mode" in str(w.message)]
    assert not nodes_of(function, FusedSums)
    chain = [node.op for node in nodes_of(function, numba_step.ParamStep)]
    assert sorted(c.n_params for c in chain) == sorted(chain_widths(n_params))
    assert {c.form for c in chain} == {"sums"} and {c.count for c in chain} == {5}
    python = pytensor.compile.mode.Mode("py", pytensor.compile.mode.get_mode("NUMBA").optimizer)
    function, op, params, buffer = _sums_function(dtype, n_params, mode=python)
    assert not nodes_of(function, FusedSums) and nodes_of(function, numba_step.ParamStep)
    _check_sums(function, op, params, buffer, dtype)


def test_fused_sums_under_numba_read_strided_params_and_gradients():
    """A param set to a transposed array (not C-contiguous) and gradients of another layout are
    read as they are (from contiguous copies that live until the kernel returns)."""
    function, op, params, buffer = _sums_function("float64", 3)
    rng = np.random.default_rng(3)
    matrix = params[1]
    matrix.set_value(rng.normal(size=matrix.get_value().shape[::-1]).T)
    assert not matrix.get_value(borrow=True).flags.c_contiguous
    values = [p.get_value() for p in params]
    grads = [np.asfortranarray(rng.normal(size=v.shape)) for v in values]
    grads[0] = rng.normal(size=2 * grads[0].size)[::2]  # strided
    rest = [buffer.get_value(), np.asarray(0.3)]
    np.testing.assert_allclose(function(*grads, rest[1]), _perform(op, values, grads, rest), rtol=1e-14)


def test_fused_sums_under_numba_refuse_a_param_resized_after_the_build():
    function, _, params, _ = _sums_function("float64", 3)
    grads = [np.ones(p.get_value().shape) for p in params]
    for shape in [(7, 3), (1, 3)]:  # larger, smaller
        params[1].set_value(np.ones(shape))
        grads[1] = np.ones(shape)
        with pytest.raises(ValueError, match="FusedSums: the params changed size after the updates were"):
            function(*grads, 0.5)
    params[1].set_value(np.ones((3, 3)))
    grads[1] = np.ones((2, 2))
    with pytest.raises(ValueError, match="FusedSums: a gradient and its param differ in size"):
        function(*grads, 0.5)


def test_prodigy_under_numba_equals_the_per_parameter_graph():
    """Prodigy's sums as the Numba chain, ten steps, as the per-parameter graph (its Sum nodes);
    the chain's nodes in Python too. The step's scalars read the sums from the chain's vector
    (no Subtensor node)."""
    hyper = {"learning_rate": 1.0, "beta2": 0.99, "d0": 1e-2, "weight_decay": 0.1}
    rng = np.random.default_rng(0)
    values = [rng.normal(size=s) for s in [(3,), (2, 3), (), (4,)]]
    gradients = [[rng.normal(size=v.shape) for v in values] for _ in range(10)]
    python = pytensor.compile.mode.Mode("py", pytensor.compile.mode.get_mode("NUMBA").optimizer)
    results = []
    for per_parameter, mode in ((False, "NUMBA"), (False, python), (True, "NUMBA")):
        params = [pytensor.shared(v, name=f"w{i}") for i, v in enumerate(values)]
        grads = [pt.tensor(f"g{i}", dtype="float64", shape=(None,) * v.ndim) for i, v in enumerate(values)]
        with updates.per_parameter(per_parameter):
            result = updates.prodigy(grads, params, **hyper)
        step = pytensor.function(grads, [], updates=result, mode=mode)
        assert not nodes_of(step, FusedSums)
        assert any(n.op.form == "sums" for n in nodes_of(step, numba_step.ParamStep)) == (not per_parameter)
        if not per_parameter:
            assert not nodes_of(step, Subtensor)
            assert any(n.op.take for n in nodes_of(step, numba_step.ScalarStep))
        for grads_k in gradients:
            step(*grads_k)
        scalars = {s.name: s.get_value() for s in result.state}
        carried = [scalars[name] for name in ("prodigy.d", "prodigy.numerator", "prodigy.t")]
        results.append([*(p.get_value() for p in params), *carried])
    assert results[0][-1] == 10 and results[0][-3] > hyper["d0"]  # d grew
    for expected in results[1:]:
        for got, value in zip(results[0], expected):
            np.testing.assert_allclose(got, value, rtol=1e-12)
