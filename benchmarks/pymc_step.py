"""PyMC, the real client: the ADVI step with ``updates.<rule>`` against PyMC's own rule, per call.

    python benchmarks/pymc_step.py [--calls N] [--repeats R] [--out PATH]

Run it in an environment with PyMC (``pip install -e ".[pymc]"``: PyMC pins PyTensor 2.38, whose
default linker is the C VM). The model is a hierarchical regression (8 groups, 400 rows). For each
of PyMC's nine rules and for ADVI and FullRankADVI, the step function
``approx.objective.step_function(obj_optimizer=...)`` is built once with PyMC's rule and once with
this library's, then timed interleaved: ``R`` rounds of ``N`` calls each, alternating, the median
of the rounds per call. The last row is the README's guarded composition (clip_by_global_norm ->
adam -> apply_weight_decay -> apply_lookahead -> apply_ema -> apply_if_finite) against PyMC's Adam.
Prints the markdown table and writes it to ``--out`` (default ``benchmarks/results/pymc.md``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor

import updates

RULES = (
    "sgd",
    "momentum",
    "nesterov_momentum",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamax",
    "adagrad_window",
)
METHODS = {"ADVI": pm.ADVI, "FullRankADVI": pm.FullRankADVI}
LEARNING_RATE = 1e-2


def model() -> pm.Model:
    rng = np.random.default_rng(0)
    groups, rows = 8, 400
    group = rng.integers(0, groups, rows)
    x = rng.normal(size=rows)
    y = 1.0 + 0.5 * rng.normal(size=groups)[group] + 2.0 * x + rng.normal(size=rows)
    with pm.Model() as hierarchical:
        mu_a = pm.Normal("mu_a", 0, 5)
        sigma_a = pm.HalfNormal("sigma_a", 2)
        a = pm.Normal("a", mu_a, sigma_a, shape=groups)
        b = pm.Normal("b", 0, 5)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", a[group] + b * x, sigma, observed=y)
    return hierarchical


def guarded_stack(loss, params):
    """The README's composition, as a PyMC ``obj_optimizer``."""
    grads = updates.clip_by_global_norm(updates.get_or_compute_grads(loss, params), max_norm=1.0)
    step = updates.adam(grads, params, learning_rate=LEARNING_RATE)
    step = updates.apply_ema(updates.apply_lookahead(updates.apply_weight_decay(step)), decay=0.99)
    return updates.apply_if_finite(step, grads=grads)


def step_function(hierarchical: pm.Model, method: str, optimizer):
    with hierarchical:
        approximation = METHODS[method](random_seed=1)
        step = approximation.objective.step_function(obj_optimizer=optimizer, total_grad_norm_constraint=None)
    step()
    return step


def per_call(functions: list, calls: int, repeats: int) -> list[float]:
    """Median seconds per call of each function, timed in interleaved rounds."""
    rounds = [[] for _ in functions]
    for _ in range(repeats):
        for function, times in zip(functions, rounds):
            start = time.perf_counter()
            for _ in range(calls):
                function()
            times.append((time.perf_counter() - start) / calls)
    return [statistics.median(times) for times in rounds]


def cases() -> list[tuple[str, str, object, object]]:
    """(row label, method, PyMC's optimizer, this library's)."""
    rows = []
    for method in METHODS:
        for rule in RULES:
            theirs = getattr(pm, rule)(learning_rate=LEARNING_RATE)
            ours = getattr(updates, rule)(learning_rate=LEARNING_RATE)
            rows.append((rule, method, theirs, ours))
    rows.append(
        ("guarded stack (vs PyMC's adam)", "ADVI", pm.adam(learning_rate=LEARNING_RATE), guarded_stack)
    )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per timed round (default 1000)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pymc.md")
    args = parser.parse_args(argv)
    hierarchical = model()
    lines = [
        f"PyMC {pm.__version__}, PyTensor {pytensor.__version__}, updates {updates.__version__}, "
        f"default mode; median of {args.repeats} interleaved rounds of {args.calls} calls.",
        "",
        "| rule | method | PyMC's own | updates | ratio |",
        "|---|---|---|---|---|",
    ]
    for label, method, theirs, ours in cases():
        functions = [step_function(hierarchical, method, optimizer) for optimizer in (theirs, ours)]
        pymc_time, our_time = per_call(functions, args.calls, args.repeats)
        lines.append(
            f"| {label} | {method} | {pymc_time * 1e6:.1f} us | {our_time * 1e6:.1f} us | "
            f"{our_time / pymc_time:.2f}x |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
