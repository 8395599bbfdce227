"""The multi-tensor node: constant size in the number of params, in place, refuses stale shapes."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from registry import GRADIENT_RULES

import updates
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
