"""The start of an L-BFGS step against Adam's and SGD's on the same model, cold.

    .venv/bin/python benchmarks/lbfgs_start.py            # 3 rounds, about 3 minutes on 2 cores
    .venv/bin/python benchmarks/lbfgs_start.py --rounds 5 --only "lbfgs armijo,lbfgs strong_wolfe"

The model is the 100-d Rosenbrock function of one float64 vector. Each measurement runs in a new
process with every compile cache in a new folder (``run.pytensor_env``), in the default mode
(Numba under PyTensor 3): the seconds from the call of the rule to the end of the first call of the
compiled function, and its parts: building the graph (the rule's call), ``pytensor.function``
(the rewrites; Numba compiles nothing yet) and the first call (Numba compiles the whole function,
then runs it once). Rounds are interleaved; the table gives the medians per rule and the ratio of
the start to Adam's, in seconds of the clock and of the process's CPU (the steadier of the two on a
machine shared with other jobs: Numba compiles on one thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import pytensor_env

RULES = {
    "sgd": {"rule": "sgd", "options": {"learning_rate": 1e-3}},
    "adam": {"rule": "adam", "options": {}},
    "lbfgs": {"rule": "lbfgs", "options": {}},
    "lbfgs armijo": {"rule": "lbfgs", "options": {"line_search": "armijo"}},
    "lbfgs strong_wolfe": {"rule": "lbfgs", "options": {"line_search": "strong_wolfe"}},
}


def child(spec: dict) -> None:
    """Build, compile and call once; print the seconds taken."""
    started = time.perf_counter()
    import numpy as np
    import pytensor

    import updates

    imported, cpu = time.perf_counter(), time.process_time()
    n = 100
    x = pytensor.shared(np.tile([-1.2, 1.0], n // 2), name="x")
    loss = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
    built = getattr(updates, spec["rule"])(loss, [x], **spec["options"])
    made = time.perf_counter()
    step = pytensor.function([], loss, updates=built)
    compiled = time.perf_counter()
    step()
    done, cpu = time.perf_counter(), time.process_time() - cpu
    parts = {"build": made - imported, "function": compiled - made, "first call": done - compiled}
    print(json.dumps({"import": imported - started, "start": done - imported, "cpu": cpu, **parts}))


PARTS = ("start", "cpu", "build", "function", "first call")


def measure(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            env=pytensor_env(folder),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="the rules to measure, comma-separated (adam always)")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    names = [n for n in RULES if not args.only or n == "adam" or n in args.only.split(",")]
    seconds: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name, spec in {n: RULES[n] for n in names}.items():
            seconds[name].append(measure(spec))
            taken = seconds[name][-1]["start"]
            print(f"round {round_ + 1}: {name} {taken:.2f} s", file=sys.stderr, flush=True)
    adam, adam_cpu = (statistics.median(x[part] for x in seconds["adam"]) for part in PARTS[:2])
    print("| rule | cold start (median) | / Adam | CPU | CPU / Adam | build | function | first call |")
    print("|---|---|---|---|---|---|---|---|")
    for name, values in seconds.items():
        start, cpu, *parts = (statistics.median(x[part] for x in values) for part in PARTS)
        columns = " | ".join(f"{x:.2f} s" for x in parts)
        ratios = f"{start / adam:.2f}x | {cpu:.2f} s | {cpu / adam_cpu:.2f}x"
        print(f"| {name} | {start:.2f} s | {ratios} | {columns} |")


if __name__ == "__main__":
    main()
