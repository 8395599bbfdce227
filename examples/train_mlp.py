"""Train a small MLP on two interleaved spirals with several rules from `updates`.

The data are made here (no download). Each rule trains the same network from the same start and
the script prints the training loss as it goes down, then a table of final loss and accuracy.

The step is compiled by hand here (`pytensor.function(..., updates=rule(loss, params))`), with no
training loop around it; examples/digits.py shows the same with `updates.minimize`.

    python examples/train_mlp.py [--steps 300] [--mode FAST_RUN] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pytensor
import pytensor.tensor as pt

import updates


def spirals(n_per_class: int = 200, noise: float = 0.15, seed: int = 0):
    """Two interleaved spirals in the plane: inputs (2n, 2) float32 and labels (2n,) int32."""
    rng = np.random.default_rng(seed)
    radius = np.sqrt(rng.uniform(0.05, 1.0, n_per_class)) * 3 * np.pi
    arms = [np.stack([radius * np.cos(radius), radius * np.sin(radius)], axis=1)]
    arms.append(-arms[0])
    x = np.concatenate(arms) / (3 * np.pi) + rng.normal(0, noise / 3, (2 * n_per_class, 2))
    y = np.repeat(np.arange(2), n_per_class)
    return x.astype("float32"), y.astype("int32")


def mlp(hidden: int = 32, seed: int = 0):
    """Parameters of a 2-hidden-hidden-2 network (float32, Glorot-uniform weights)."""
    rng = np.random.default_rng(seed)
    sizes = [2, hidden, hidden, 2]
    params = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        limit = np.sqrt(6 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_in, n_out)).astype("float32")
        b = np.zeros(n_out, "float32")
        params += [pytensor.shared(w, name=f"W{i}"), pytensor.shared(b, name=f"b{i}")]
    return params


def build(params, x, y):
    """The mean cross-entropy and the accuracy of the network on (x, y)."""
    h = x
    for w, b in zip(params[:-2:2], params[1:-2:2]):
        h = pt.tanh(h @ w + b)
    logits = h @ params[-2] + params[-1]
    log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
    loss = -log_probs[pt.arange(y.shape[0]), y].mean()
    return loss, pt.eq(logits.argmax(axis=1), y).mean()


RULES = {
    "sgd": updates.sgd(learning_rate=0.5),
    "momentum": updates.momentum(learning_rate=0.1, momentum=0.9),
    "nesterov_momentum": updates.nesterov_momentum(learning_rate=0.1, momentum=0.9),
    "adagrad": updates.adagrad(learning_rate=0.1),
    "rmsprop": updates.rmsprop(learning_rate=0.01),
    "adadelta": updates.adadelta(),
    "adam": updates.adam(learning_rate=0.01),
    "adamax": updates.adamax(learning_rate=0.02),
    "amsgrad": updates.amsgrad(learning_rate=0.01),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="full-batch steps per rule")
    parser.add_argument("--mode", default=None, help="PyTensor mode (default: PyTensor's default)")
    parser.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    parser.add_argument(
        "--quick", action="store_true", help="a small budget for CI: 20 steps of sgd and adam"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rules = 20, ["sgd", "adam"]

    x_data, y_data = spirals()
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    results = {}
    for name in args.rules:
        params = mlp()
        loss, accuracy = build(params, x, y)
        step = pytensor.function([x, y], [loss, accuracy], updates=RULES[name](loss, params), mode=args.mode)
        start = time.perf_counter()
        trace = [step(x_data, y_data) for _ in range(args.steps)]
        elapsed = time.perf_counter() - start
        every = max(1, args.steps // 5)
        curve = " ".join(f"{float(trace[t][0]):.3f}" for t in range(0, args.steps, every))
        print(f"{name:>18}: loss {curve} ... {float(trace[-1][0]):.4f}")
        results[name] = (float(trace[-1][0]), float(trace[-1][1]), elapsed / args.steps)

    print(f"\n{'rule':>18} | final loss | accuracy | ms/step (incl. first-call compile)")
    for name, (final, acc, per_step) in results.items():
        print(f"{name:>18} | {final:10.4f} | {acc:8.3f} | {1e3 * per_step:.2f}")
    assert all(np.isfinite(r[0]) for r in results.values())


if __name__ == "__main__":
    main()
