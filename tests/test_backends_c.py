"""The multi-tensor step under the C VM: a chain of C nodes, in place, equal to the readable graph,
cached."""

import pickle

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from registry import GRADIENT_RULES

import updates
from updates.backends.c import CStep, LeanElemwise, c_chain_widths
from updates.c_compile import HOT, _is_gcc
from updates.fused import LARGE_STATELESS_STEP, FusedStep
from updates.reductions import FusedSums, Terms

if not pytensor.config.cxx:
    pytest.skip("no C compiler: the C VM runs the Python perform", allow_module_level=True)

RULES = {case.name: case for case in GRADIENT_RULES if not case.rule.per_tensor}


def nodes_of(step, op_type):
    return [node for node in step.maker.fgraph.apply_nodes if isinstance(node.op, op_type)]


def run(mode, per_parameter, make_values, grads_of, n_steps=4, rule="adam"):
    """Params from ``make_values()``, ``n_steps`` steps of ``rule`` on ``grads_of(step)``."""
    params = [pytensor.shared(value, name=f"w{i}") for i, value in enumerate(make_values())]
    grads = [pt.tensor(f"g{i}", dtype=g.dtype, shape=(None,) * g.ndim) for i, g in enumerate(grads_of(0))]
    with updates.per_parameter(per_parameter):
        result = getattr(updates, rule)(grads, params, **RULES[rule].hyper)
    step = pytensor.function(grads, [], updates=result, mode=mode)
    for k in range(n_steps):
        step(*grads_of(k))
    return step, params, result


def values():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(4, 3)), rng.normal(size=5)]


def gradients(k):
    rng = np.random.default_rng(k + 1)
    return [rng.normal(size=(4, 3)), rng.normal(size=5)]


@pytest.mark.parametrize("rule", ["momentum", "adam", "nadam"])
def test_a_chain_of_c_nodes_updates_params_and_state_in_place_as_the_readable_graph(rule):
    step, params, result = run("CVM", False, values, gradients, rule=rule)
    assert [node.op.n_params for node in nodes_of(step, CStep)] == c_chain_widths(2)
    assert not nodes_of(step, FusedStep)
    arrays = [*params, *(s for s in result.state if s.ndim)]
    storage = [v.get_value(borrow=True) for v in arrays]
    step(*gradients(4))
    assert all(v.get_value(borrow=True) is s for v, s in zip(arrays, storage))
    _, reference, _ = run("FAST_COMPILE", True, values, gradients, n_steps=5, rule=rule)
    for got, expected in zip(params, reference):
        np.testing.assert_allclose(got.get_value(), expected.get_value(), rtol=1e-13)


def test_strided_params_and_gradients_of_another_layout_and_dtype():
    """A param set to a strided view and float32 gradients of a float64 param, transposed: the
    step casts and copies what it must and still equals the readable graph."""

    def strided():
        return [np.asfortranarray(v) if v.ndim == 2 else v for v in values()]

    def float32_transposed(k):
        return [np.ascontiguousarray(g.T).T.astype("float32") for g in gradients(k)]

    results = []
    for mode, per_parameter in (("CVM", False), ("FAST_COMPILE", True)):
        _, params, _ = run(mode, per_parameter, strided, float32_transposed)
        results.append([p.get_value() for p in params])
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_a_step_without_state_joins_the_gradients_nodes():
    step, _, _ = run("CVM", False, values, gradients, rule="sgd")
    assert not nodes_of(step, CStep) and not nodes_of(step, FusedStep)


@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_a_large_step_without_state_stays_one_node_where_it_runs_c(mode):
    """From LARGE_STATELESS_STEP elements, sgd under the C VM is the C chain (PyTensor's own C
    loops take about 2.8x its time on 256 params of 16k); under Numba, whose loops are compiled,
    it still joins the gradients' nodes. The readable graph's numbers either way."""
    pytest.importorskip({"NUMBA": "numba"}.get(mode, "numpy"))
    half = LARGE_STATELESS_STEP // 2

    def large():
        return [np.linspace(-1, 1, half), np.linspace(0, 1, half)]

    def grads(k):
        return [np.cos(np.arange(half) + k), np.sin(np.arange(half) + k)]

    step, params, _ = run(mode, False, large, grads, rule="sgd")
    assert bool(nodes_of(step, CStep)) == (mode == "CVM")
    _, reference, _ = run("FAST_COMPILE", True, large, grads, rule="sgd")
    for got, expected in zip(params, reference):  # values through 0: an absolute tolerance too
        np.testing.assert_allclose(got.get_value(), expected.get_value(), rtol=1e-13, atol=1e-16)


def test_the_steps_own_modules_compile_at_O1_under_gcc_with_their_loops_at_O3():
    """The step's C nodes and the 0-d nodes of its scalars (not the model's) compile at -O1, the
    loops in HOT functions (which GCC compiles at -O3)."""
    w = pytensor.shared(np.ones(3), name="w")
    g = pt.vector("g")
    step = pytensor.function([g], [], updates=updates.adam([g * 2], [w]), mode="CVM")
    ours = [*nodes_of(step, CStep), *nodes_of(step, LeanElemwise)]
    assert {type(node.op) for node in ours} == {CStep, LeanElemwise}
    model = [node.op for node in nodes_of(step, pt.elemwise.Elemwise) if node not in ours]
    assert model and not any("-O1" in op.c_compile_args() for op in model)  # g * 2 keeps -O3
    for node in ours:
        assert ("-O1" in node.op.c_compile_args()) == ("-O3" in node.op.c_no_compile_args()) == _is_gcc()
    (cstep,) = nodes_of(step, CStep)
    assert HOT in cstep.op.c_support_code()
    assert "UPDATES_HOT static int" in cstep.op.c_support_code_apply(cstep, "n")


def test_the_node_pickles_for_pytensors_cache_key():
    """PyTensor keys its C module cache by the pickled node: a rule's kernel is a Python function,
    so the node holds its Composite instead, and the next process loads the module."""
    params = [pytensor.shared(v) for v in values()]
    result = updates.adam([p * 2 for p in params], params)
    (fused,) = {v.owner.op for v in result.values() if isinstance(getattr(v.owner, "op", None), FusedStep)}
    c_op = CStep(fused.composite, fused.dtype, 8, fused.n_slots, len(fused.scalar_names), "adam")
    again = pickle.loads(pickle.dumps(c_op))
    assert again == c_op and hash(again) == hash(c_op)


def test_chain_widths_are_the_fewest_nodes_of_eight_at_most_differing_by_one_at_most():
    for n_params in range(1, 200):
        widths = c_chain_widths(n_params)
        assert sum(widths) == n_params and max(widths) <= 8 and max(widths) - min(widths) <= 1
        assert len(widths) == -(-n_params // 8)


@pytest.mark.parametrize(("n_params", "widths"), [(3, [3]), (20, [7, 7, 6]), (15, [8, 7])])
def test_the_chain_covers_every_param_with_the_fewest_nodes_of_two_widths_at_most(n_params, widths):
    """Nodes of eight params at most, as even as they can be (one C module per width), equal to
    the readable graph."""
    assert c_chain_widths(n_params) == widths

    def many():
        return [np.linspace(-1, 1, 2 + i) for i in range(n_params)]

    def grads(k):
        return [np.cos(np.arange(2 + i) + k) for i in range(n_params)]

    step, params, _ = run("CVM", False, many, grads)
    assert sorted(node.op.n_params for node in nodes_of(step, CStep)) == sorted(widths)
    _, reference, _ = run("FAST_COMPILE", True, many, grads)
    for got, expected in zip(params, reference):
        np.testing.assert_allclose(got.get_value(), expected.get_value(), rtol=1e-13)


# -- FusedSums: the chain's sums form ---------------------------------------------------------


def _terms(h, param, grad, m):
    """Terms of each dtype and sign, one a scalar's: an inner product, a norm, a square."""
    return grad * (m - param), abs(grad) * h.scale, param * param


def _sums_function(dtype, n_params, mode="CVM"):
    """A function of the gradients giving the FusedSums of :func:`_terms` over ``n_params`` params of
    a few shapes, and the node's op, params, buffer and the inputs it takes after the gradients."""
    rng = np.random.default_rng(n_params)
    shapes = [(2 + i % 3, 3) if i % 2 else (1 + i % 5,) for i in range(n_params)]
    params = [pytensor.shared(rng.normal(size=s).astype(dtype), name=f"w{i}") for i, s in enumerate(shapes)]
    grads = [pt.tensor(f"g{i}", dtype=dtype, shape=(None,) * len(s)) for i, s in enumerate(shapes)]
    size = sum(int(np.prod(s)) for s in shapes)
    buffer = pytensor.shared(rng.normal(size=size).astype(dtype), name="m")
    scale = pt.constant(np.asarray(0.5, dtype=dtype))
    op = FusedSums(FusedStep(Terms("terms", _terms), dtype, shapes, 1, ("scale",)))
    sums = op(*params, *grads, buffer, scale)
    return pytensor.function(grads, sums, mode=mode), op, params, [buffer.get_value(), np.asarray(0.5, dtype)]


def _perform(op, params, grads, rest):
    node = op.make_node(*(pt.as_tensor_variable(x) for x in [*params, *grads, *rest]))
    storage = [[None]]
    op.perform(node, [*params, *grads, *rest], storage)
    return storage[0][0]


@pytest.mark.parametrize(
    ("dtype", "n_params"), [("float64", 1), ("float64", 3), ("float64", 9), ("float64", 17), ("float32", 3)]
)
def test_fused_sums_become_a_chain_of_c_nodes_equal_to_perform(dtype, n_params):
    """No FusedSums left: a chain of CSums nodes of the chain's widths, each term summed in float64
    as ``perform`` sums it (its order of additions aside)."""
    function, op, params, rest = _sums_function(dtype, n_params)
    assert not nodes_of(function, FusedSums)
    chain = [node.op for node in nodes_of(function, CStep)]
    assert sorted(c.n_params for c in chain) == sorted(c_chain_widths(n_params))
    assert {c.form for c in chain} == {"sums"} and {c.count for c in chain} == {3}
    values = [p.get_value() for p in params]
    rng = np.random.default_rng(7)
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(dtype) for v in values]
        got = function(*grads)
        expected = _perform(op, values, grads, rest)
        assert got.dtype == "float64" and got.shape == (3,)
        np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_fused_sums_in_c_read_strided_params_and_gradients_of_another_layout():
    function, op, params, rest = _sums_function("float64", 3)
    rng = np.random.default_rng(3)
    matrix = params[1]
    matrix.set_value(np.asfortranarray(rng.normal(size=matrix.get_value().shape)), borrow=True)
    assert not matrix.get_value(borrow=True).flags.c_contiguous
    values = [p.get_value() for p in params]
    grads = [np.asfortranarray(rng.normal(size=v.shape)) for v in values]
    np.testing.assert_allclose(function(*grads), _perform(op, values, grads, rest), rtol=1e-14)


def test_fused_sums_in_c_refuse_a_param_resized_after_the_build():
    function, op, params, rest = _sums_function("float64", 3)
    params[1].set_value(np.ones((7, 3)))
    grads = [np.ones(p.get_value().shape) for p in params]
    with pytest.raises(ValueError, match=r"CSums\{terms, float64, 3 params\}: params\[1\] changed size"):
        function(*grads)
    with pytest.raises(ValueError, match=r"params\[1\] changed size after the updates were built"):
        _perform(op, [p.get_value() for p in params], grads, rest)


def test_the_sums_node_pickles_and_one_module_serves_every_position():
    """The nodes of a width are one op (one C module) wherever their params sit in the buffers;
    its key pickles."""
    function, op, _, _ = _sums_function("float64", 16)
    chain = nodes_of(function, CStep)
    assert len(chain) == 2 and chain[0].inputs[-2].data[0] != chain[1].inputs[-2].data[0]
    assert chain[0].op == chain[1].op and str(chain[0].op) == "CSums{terms, float64, 8 params}"
    c_op = CStep(op.terms.composite, "float64", 8, 1, 1, "terms", "sums")
    again = pickle.loads(pickle.dumps(c_op))
    assert again == c_op == chain[0].op and hash(again) == hash(c_op)


def test_prodigy_under_the_c_vm_equals_the_per_parameter_graph():
    """Prodigy's sums as the C chain, ten steps, as the per-parameter graph (its Sum nodes)."""
    hyper = {"learning_rate": 1.0, "beta2": 0.99, "d0": 1e-2, "weight_decay": 0.1}
    results = []
    for per_parameter in (False, True):
        params = [pytensor.shared(v, name=f"w{i}") for i, v in enumerate(values())]
        grads = [pt.tensor(f"g{i}", dtype="float64", shape=(None,) * v.ndim) for i, v in enumerate(values())]
        with updates.per_parameter(per_parameter):
            result = updates.prodigy(grads, params, **hyper)
        step = pytensor.function(grads, [], updates=result, mode="CVM")
        assert not nodes_of(step, FusedSums)
        assert any(n.op.form == "sums" for n in nodes_of(step, CStep)) == (not per_parameter)
        for k in range(10):
            step(*gradients(k))
        scalars = {s.name: s.get_value() for s in result.state if s.ndim == 0}  # d, numerator, t
        results.append([*(p.get_value() for p in params), *(scalars[name] for name in sorted(scalars))])
    assert len(results[0]) == len(results[1]) == 5
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_the_sums_nodes_perform_adds_to_the_sums_before_it():
    """Without C code (the Python linker) a CSums node adds its params' sums to those threaded in."""
    function, op, params, rest = _sums_function("float64", 3)
    (node,) = nodes_of(function, CStep)
    values = [p.get_value() for p in params]
    grads = [np.cos(np.arange(v.size)).reshape(v.shape) for v in values]
    before = np.array([1.0, -2.0, 3.0])
    storage = [[None]]
    node.op.perform(node, [*values, *grads, *rest, node.inputs[-2].data, before], storage)
    np.testing.assert_allclose(storage[0][0], before + _perform(op, values, grads, rest), rtol=1e-14)
