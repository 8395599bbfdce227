"""The multi-tensor node: constant size in the number of params, in place, refuses stale shapes."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from registry import GRADIENT_RULES

import updates
from updates.backends.numba import ParamStep
from updates.fused import FusedStep

# The rules that run on the multi-tensor path (the per-tensor ones are built per parameter).
RULES = [case for case in GRADIENT_RULES if not case.rule.per_tensor]


def compiled(case, n_params, mode=None):
    params = [pytensor.shared(np.ones(3), name=f"w{i}") for i in range(n_params)]
    grads = [pt.vector(f"g{i}", shape=(3,)) for i in range(n_params)]
    step = pytensor.function(grads, [], updates=case.function(grads, params), mode=mode)
    return step, params


@pytest.mark.parametrize("case", RULES, ids=str)
def test_graph_size_does_not_grow_with_the_number_of_params(case):
    sizes = {n: len(compiled(case, n, mode="FAST_COMPILE")[0].maker.fgraph.apply_nodes) for n in (2, 40)}
    assert sizes[2] == sizes[40]


@pytest.mark.parametrize(
    "wrapper",
    [
        updates.apply_momentum,
        updates.apply_nesterov_momentum,
        updates.apply_weight_decay,
        updates.apply_lookahead,
        updates.apply_ema,
    ],
)
def test_multi_tensor_wrappers_add_nodes_independent_of_the_number_of_params(wrapper):
    def size(n_params):
        params = [pytensor.shared(np.ones(3), name=f"w{i}") for i in range(n_params)]
        grads = [pt.vector(f"g{i}", shape=(3,)) for i in range(n_params)]
        step = updates.sgd(grads, params)
        bare, wrapped = (
            len(pytensor.function(grads, [], updates=u, mode="FAST_COMPILE").maker.fgraph.apply_nodes)
            for u in (step, wrapper(step))
        )
        return wrapped - bare

    assert size(2) == size(40) <= 8


@pytest.mark.parametrize("n_params", [3, 20])
@pytest.mark.parametrize("case", [c for c in RULES if c.name in ("momentum", "adam")], ids=str)
def test_numba_step_runs_in_place(case, n_params):
    """Under Numba a step with state is a chain of ParamStep nodes (one per param up to 16
    params, else 8 per node and one each for the rest) that overwrite the params and the flat
    state in place (a step without state joins the gradient's own nodes: test_backends_numba.py)."""
    pytest.importorskip("numba")
    params = [pytensor.shared(np.ones(3), name=f"w{i}") for i in range(n_params)]
    grads = [pt.vector(f"g{i}", shape=(3,)) for i in range(n_params)]
    result = case.function(grads, params)
    step = pytensor.function(grads, [], updates=result, mode="NUMBA")
    widths = [n.op.n_params for n in step.maker.fgraph.apply_nodes if isinstance(n.op, ParamStep)]
    assert sorted(widths) == ([1, 1, 1] if n_params == 3 else [1, 1, 1, 1, 8, 8])
    updated = [*params, *(s for s in result.state if s.ndim)]
    storage = [v.get_value(borrow=True) for v in updated]
    step(*[np.ones(3)] * n_params)
    assert all(v.get_value(borrow=True) is s for v, s in zip(updated, storage))
    assert not np.allclose(storage[n_params - 1], 1.0)


@pytest.mark.parametrize("size", [4, 2], ids=["larger", "smaller"])
@pytest.mark.parametrize("mode", ["FAST_COMPILE", "CVM", "NUMBA"])
def test_params_resized_after_building_are_refused(mode, size):
    if mode == "NUMBA":
        pytest.importorskip("numba")
    case = next(c for c in RULES if c.name == "adam")
    params = [pytensor.shared(np.ones(3), name="w"), pytensor.shared(np.ones(2), name="v")]
    grads = [pt.vector("g"), pt.vector("h")]
    step = pytensor.function(grads, [], updates=case.function(grads, params), mode=mode)
    params[0].set_value(np.ones(size))
    with pytest.raises(ValueError, match="changed size after the updates were built"):
        step(np.ones(size), np.ones(2))


def test_mixed_dtypes_get_one_node_and_buffer_each():
    params = [
        pytensor.shared(np.ones(2, dtype), name=f"w{i}") for i, dtype in enumerate(["float32", "float64"])
    ]
    result = updates.adam([p * 2 for p in params], params)
    nodes = {v.owner for v in result.values() if isinstance(getattr(v.owner, "op", None), FusedStep)}
    assert len(nodes) == 2
    assert sorted(v.name for v in result.state) == [
        "adam.m[float32]",
        "adam.m[float64]",
        "adam.t",
        "adam.v[float32]",
        "adam.v[float64]",
    ]


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "CVM", "NUMBA"])
def test_gradient_of_the_wrong_size_is_refused(mode):
    if mode == "NUMBA":
        pytest.importorskip("numba")
    params = [pytensor.shared(np.ones(3), name="w")]
    grads = [pt.vector("g")]
    step = pytensor.function(grads, [], updates=updates.momentum(grads, params), mode=mode)
    with pytest.raises(ValueError, match="differ in size"):
        step(np.ones(5))


def _wrapped_adam(grads, params):
    """Adam, then decoupled weight decay (scheduled, so that it keeps a counter), lookahead and EMA."""
    decay = updates.schedules.exponential_decay(0.01, 0.5, 3)
    inner = updates.apply_weight_decay(updates.adam(grads, params, learning_rate=0.1), weight_decay=decay)
    return updates.apply_ema(updates.apply_lookahead(inner, k=2), decay=0.9)


def both_paths(build, grads, initial, mode, outputs=lambda built: []):
    """``{"fused": (updates, step), "per-parameter": (...)}``: ``build(params)`` on params of the
    ``initial`` values, compiled in ``mode`` (the per-parameter graph in FAST_COMPILE) as
    functions of ``grads`` returning ``outputs(updates)``."""
    runs = {}
    for path in ("fused", "per-parameter"):
        params = [pytensor.shared(np.array(value), name=f"w{i}") for i, value in enumerate(initial)]
        with updates.per_parameter(path == "per-parameter"):
            built = build(params)
        compiled_mode = mode if path == "fused" else "FAST_COMPILE"
        runs[path] = built, pytensor.function(grads, outputs(built), updates=built, mode=compiled_mode)
    return runs


def step_both(runs, values, rtol=1e-13, atol=1e-15):
    """One step of both paths on the gradients ``values``; asserts equal outputs, state and
    params (dtypes included); returns the fused path's named state."""
    results = [step(*values) for _, step in runs.values()]
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    fused, reference = (built.named_state() for built, _ in runs.values())
    assert fused.keys() == reference.keys()
    for name in reference:
        np.testing.assert_allclose(fused[name], reference[name], rtol=rtol, atol=atol, err_msg=name)
    for a, b in zip(*(built.params for built, _ in runs.values())):
        assert a.get_value().dtype == b.get_value().dtype
        np.testing.assert_allclose(a.get_value(), b.get_value(), rtol=rtol, atol=atol)
    return fused


SHAPES = [(3,), (2, 4), ()]


def float64_grads(shapes=SHAPES):
    return [pt.tensor(f"g{i}", dtype="float64", shape=shape) for i, shape in enumerate(shapes)]


def initial(shapes=SHAPES):
    return [np.full(shape, 1.0 + i) for i, shape in enumerate(shapes)]


@pytest.mark.parametrize("mode", ["CVM", "NUMBA", "JAX"])
def test_a_rule_and_its_elementwise_wrappers_run_as_one_node(mode):
    """The wrappers' nodes join the rule's (one pass over the params, one kernel), with the
    numbers of the per-parameter graph, state included, step after step."""
    pytest.importorskip({"CVM": "numpy", "NUMBA": "numba", "JAX": "jax"}[mode])
    grads = float64_grads()
    runs = both_paths(lambda params: _wrapped_adam(grads, params), grads, initial(), mode)
    nodes = runs["fused"][1].maker.fgraph.apply_nodes
    kernels = {
        str(getattr(n.op, "label", None) or getattr(getattr(n.op, "kernel", None), "name", "")) for n in nodes
    }
    if mode != "JAX":
        assert "adam+apply_weight_decay+apply_lookahead+apply_ema" in kernels
        assert not {"adam", "apply_lookahead", "apply_ema"} & kernels
    rng = np.random.default_rng(0)
    for _ in range(7):
        step_both(runs, [rng.normal(size=shape) for shape in SHAPES])


def test_a_rule_whose_new_params_are_used_elsewhere_keeps_its_own_node():
    """Asking for the rule's new params as an output leaves the two steps apart, and right."""
    w = pytensor.shared(np.ones(3), name="w")
    g = pt.vector("g", shape=(3,))
    inner = updates.adam([g], [w], learning_rate=0.1)
    outer = updates.apply_lookahead(inner, k=2)
    step = pytensor.function([g], inner[w], updates=outer, mode="CVM")
    labels = sorted(n.op.label for n in step.maker.fgraph.apply_nodes if hasattr(n.op, "label"))
    assert labels == ["adam", "apply_lookahead"]
    before = w.get_value()
    proposed = step(np.full(3, 2.0))
    np.testing.assert_allclose(proposed, before - 0.1, rtol=1e-7)  # Adam's first step: lr * g / (|g| + eps)


@pytest.mark.parametrize(("mode", "scalar_node"), [("CVM", "LeanElemwise"), ("NUMBA", "ScalarStep")])
def test_the_scalars_of_a_guarded_stack_are_computed_by_two_nodes(mode, scalar_node):
    """The counters, Adam's bias correction and the clip's scale in one node before the check, the
    guard's gate in one after it (each a module to compile), not one node per wrapper."""
    pytest.importorskip("numba" if mode == "NUMBA" else "numpy")
    params = [pytensor.shared(value, name=f"w{i}") for i, value in enumerate(initial())]
    raw = float64_grads()
    grads = updates.clip_by_global_norm(raw, max_norm=2.0)
    guarded = updates.apply_if_finite(_wrapped_adam(grads, params), grads=grads)
    step = pytensor.function(raw, [], updates=guarded, mode=mode)
    nodes = [node for node in step.maker.fgraph.apply_nodes if type(node.op).__name__ == scalar_node]
    assert len(nodes) == 2
    assert not [node for node in step.maker.fgraph.apply_nodes if type(node.op).__name__ == "Elemwise"]


@pytest.mark.parametrize("clip", [False, True], ids=["", "clipped"])
@pytest.mark.parametrize("mode", ["CVM", "NUMBA", "JAX", "PYTORCH", "py"])
def test_a_guarded_step_checks_then_steps_in_place(mode, clip):
    """Under apply_if_finite the rule's node first checks the gradients and new values without
    writing, then steps gated by the check, in place, the gradients clipped inside it: no copies,
    no node per tensor beyond the model's, and the numbers of the per-parameter graph, skipped
    steps included (a NaN gradient; a finite gradient that overflows a new value; an infinite
    one, which clipping turns into NaN)."""
    pytest.importorskip({"NUMBA": "numba", "JAX": "jax", "PYTORCH": "torch"}.get(mode, "numpy"))
    grads = float64_grads()

    def build(params):
        clipped = updates.clip_by_global_norm(grads, max_norm=2.0) if clip else grads
        if mode == "PYTORCH":  # PyTensor's PyTorch backend runs neither Adam nor these wrappers
            step = updates.momentum(clipped, params, learning_rate=0.1)
        else:
            step = _wrapped_adam(clipped, params)
        return updates.apply_if_finite(step, grads=clipped)

    mode = pytensor.compile.mode.Mode("py", "fast_run") if mode == "py" else mode
    runs = both_paths(build, grads, initial(), mode)
    if mode not in ("JAX", "PYTORCH"):  # the tracing linkers trace the expanded graph
        nodes = runs["fused"][1].maker.fgraph.apply_nodes
        tensors = [n for n in nodes if any(x.ndim for x in n.outputs) and not hasattr(n.op, "n_params")]
        tensors = [n for n in tensors if str(n.op) not in ("ScalarStep", "MakeVector")]  # the scalars
        assert not tensors, tensors  # the norm is one node of a scalar, the rest is the steps
    rng = np.random.default_rng(0)
    for k in range(9):
        values = [rng.normal(size=shape) for shape in SHAPES]
        if k == 3:
            values[1][1, 2] = np.nan
        if k == 5:  # finite, but its square overflows Adam's second moment; clipped, infinite
            values[0][0] = np.inf if clip else 1e308  # (XLA rewrites (2 g) / n to g (2 / n))
        fused = step_both(runs, values)
    assert fused["apply_if_finite.skipped"] == (1 if mode == "PYTORCH" and not clip else 2)  # no overflow


@pytest.mark.parametrize("elsewhere", [False, True], ids=["", "used elsewhere"])
def test_a_transform_of_every_gradient_runs_inside_the_step(elsewhere):
    """Clipped gradients that only the step reads are clipped inside it (no node per param);
    asked for as outputs too, they stay nodes of their own. The numbers are the per-parameter
    graph's either way."""
    grads, clipped = float64_grads(), {}

    def build(params):
        clipped["grads"] = updates.clip_by_global_norm(grads, max_norm=1.0)
        return updates.adam(clipped["grads"], params, learning_rate=0.1)

    runs = both_paths(build, grads, initial(), "CVM", lambda built: clipped["grads"] if elsewhere else [])
    nodes = runs["fused"][1].maker.fgraph.apply_nodes
    per_param = [n for n in nodes if any(x.ndim for x in n.outputs) and not hasattr(n.op, "n_params")]
    assert bool(per_param) == elsewhere
    rng = np.random.default_rng(1)
    for _ in range(5):
        step_both(runs, [rng.normal(size=shape) for shape in SHAPES])


@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_a_guarded_step_over_two_dtypes_checks_both_before_either_steps(mode):
    """float32 and float64 params: one node per dtype, each checked before either steps (a NaN
    in the float32 gradient holds the float64 params too); the float64 norm is not folded into
    the float32 step. The per-parameter graph's numbers, state included."""
    pytest.importorskip({"NUMBA": "numba"}.get(mode, "numpy"))
    dtypes = ["float32", "float64", "float32"]
    grads = [pt.vector(f"g{i}", dtype=dtype, shape=(3,)) for i, dtype in enumerate(dtypes)]

    def build(params):
        clipped = updates.clip_by_global_norm(grads, max_norm=1.0)
        return updates.apply_if_finite(updates.adam(clipped, params, learning_rate=0.1), grads=clipped)

    runs = both_paths(build, grads, [np.full(3, 1.0 + i, dtype=d) for i, d in enumerate(dtypes)], mode)
    rng = np.random.default_rng(2)
    for k in range(6):
        values = [rng.normal(size=3).astype(dtype) for dtype in dtypes]
        if k == 2:
            values[0][1] = np.nan
        fused = step_both(runs, values, rtol=2e-6, atol=0)
    assert fused["apply_if_finite.skipped"] == 1
