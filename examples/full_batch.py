"""Full-batch fits: L-BFGS (with its in-graph line search) against Adam, step for step.

Three problems where the whole data set fits in one step, as in a MAP estimate or a small model:
softmax regression on scikit-learn's digits (1797 images, 650 parameters) and the Rosenbrock
function in 2 and 100 dimensions. Each optimizer gets the same number of compiled steps from the
same start; the script prints the loss reached and the steps each needed to come within 1e-6 of
the best loss seen, and writes the curves to ``full_batch.png``.

    pip install -e ".[examples]"
    python examples/full_batch.py [--steps 300] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

import updates

OPTIMIZERS = {
    "lbfgs (armijo)": lambda: updates.lbfgs(line_search="armijo"),
    "adam": lambda: updates.adam(learning_rate=1e-2),
}


def digits():
    """Softmax regression on all of scikit-learn's digits, with a small L2 penalty."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    w = pytensor.shared(np.zeros((64, 10)), name="W")
    b = pytensor.shared(np.zeros(10), name="b")
    logits = pt.as_tensor_variable(x) @ w + b
    log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
    return -log_probs[np.arange(len(y)), y].mean() + 1e-3 * (w**2).sum(), [w, b]


def rosenbrock(n: int):
    """The Rosenbrock function from its classic start (-1.2, 1, -1.2, ...)."""
    x = pytensor.shared(np.where(np.arange(n) % 2, 1.0, -1.2), name="x")
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(), [x]


PROBLEMS = {
    "digits": digits,
    "rosenbrock 2-d": lambda: rosenbrock(2),
    "rosenbrock 100-d": lambda: rosenbrock(100),
}


def fit(problem, optimizer, steps: int) -> np.ndarray:
    loss, params = problem()
    step = pytensor.function([], loss, updates=optimizer()(loss, params), mode="FAST_COMPILE")
    return np.array([float(step()) for _ in range(steps)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true", help="60 steps (for the tests)")
    arguments = parser.parse_args()
    steps = 60 if arguments.quick else arguments.steps
    curves = {name: {o: fit(p, OPTIMIZERS[o], steps) for o in OPTIMIZERS} for name, p in PROBLEMS.items()}
    print(
        f"after {steps} full-batch steps | "
        + " | ".join(f"{o}: loss, steps to best + 1e-6" for o in OPTIMIZERS)
    )
    for name, found in curves.items():
        best = min(c.min() for c in found.values())
        cells = []
        for curve in found.values():
            close = np.flatnonzero(curve <= best + 1e-6)
            cells.append(f"{curve[-1]:.3g}, {close[0] + 1 if close.size else '-'}")
        print(f"{name} | " + " | ".join(cells))
    plot(curves, arguments.out / "full_batch.png")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2))
    for axis, (name, found) in zip(axes, curves.items()):
        best = min(c.min() for c in found.values())
        for optimizer, curve in found.items():
            axis.semilogy(np.arange(1, len(curve) + 1), curve - best + 1e-16, label=optimizer)
        axis.set(title=name, xlabel="step", ylabel="loss - best")
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
