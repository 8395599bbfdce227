"""Train a small MLP on scikit-learn's handwritten digits with several rules from `updates`.

The digits (1797 images of 8x8 pixels, 10 classes) ship inside scikit-learn: nothing is
downloaded. Every rule trains the same network from the same start with `updates.minimize`
(mini-batches, validation every epoch, the best epoch's params restored), then the script prints
a table of the final loss and accuracy on the training and validation sets and the time per
step, and writes a plot of the loss curves.

    pip install -e ".[examples]"
    python examples/digits.py [--epochs 30] [--rules adam rmsprop] [--out DIR] [--quick] [--mode CVM]

Most of the run time is compiling: each rule's training function is compiled once (under
PyTensor 3's default Numba linker, on its first call); the steps themselves take microseconds.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

import updates

RULES = {
    "sgd": lambda: updates.sgd(learning_rate=0.1),
    "nesterov_momentum": lambda: updates.nesterov_momentum(learning_rate=0.05, momentum=0.9),
    "adagrad": lambda: updates.adagrad(learning_rate=0.05),
    "rmsprop": lambda: updates.rmsprop(learning_rate=2e-3),
    "adam": lambda: updates.adam(learning_rate=3e-3),
    "adamax": lambda: updates.adamax(learning_rate=4e-3),
    "amsgrad": lambda: updates.amsgrad(learning_rate=2e-3),
    "adadelta": lambda: updates.adadelta(learning_rate=1.0),
}
DEFAULT_RULES = ["sgd", "nesterov_momentum", "adagrad", "rmsprop", "adam"]


def load_digits(seed: int = 0):
    """The digits scaled to [0, 1] (float32) and split 80/20 into training and validation sets."""
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    cut = int(0.8 * len(x))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def mlp_params(sizes=(64, 64, 10), seed: int = 0):
    """Shared float32 weights (Glorot uniform) and zero biases of a fully connected network."""
    rng = np.random.default_rng(seed)
    params = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        limit = np.sqrt(6.0 / (n_in + n_out))
        params.append(
            pytensor.shared(rng.uniform(-limit, limit, (n_in, n_out)).astype("float32"), name=f"W{i}")
        )
        params.append(pytensor.shared(np.zeros(n_out, "float32"), name=f"b{i}"))
    return params


def mlp_loss(params, x, y):
    """Mean cross-entropy and accuracy of the network (tanh hidden layers, softmax output)."""
    h = x
    for w, b in zip(params[0:-2:2], params[1:-2:2]):
        h = pt.tanh(h @ w + b)
    logits = h @ params[-2] + params[-1]
    log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
    loss = -log_probs[pt.arange(y.shape[0]), y].mean()
    accuracy = pt.eq(pt.argmax(logits, axis=1), y).mean(dtype="float64")
    return loss, accuracy


def train_all(rules, epochs: int, batch_size: int, hidden: int, mode=None):
    """Train the network once per rule; return {rule: (history, final metrics)} and the eval time."""
    (x_train, y_train), (x_valid, y_valid) = load_digits()
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    params = mlp_params((64, hidden, 10))
    start = [p.get_value() for p in params]
    loss, accuracy = mlp_loss(params, x, y)
    evaluate = pytensor.function([x, y], [loss, accuracy], mode=mode)
    results = {}
    for name in rules:
        for param, value in zip(params, start):
            param.set_value(value.copy())
        begin = time.perf_counter()
        history = updates.minimize(
            loss,
            params,
            [x, y],
            [x_train, y_train],
            RULES[name](),
            valid=[x_valid, y_valid],
            batch_size=batch_size,
            max_epochs=epochs,
            monitors={"accuracy": accuracy},
            seed=0,
            progress=None,
            mode=mode,
        )
        seconds = time.perf_counter() - begin
        final = [*map(float, evaluate(x_train, y_train)), *map(float, evaluate(x_valid, y_valid))]
        results[name] = (history, final, seconds)
        print(f"{name:>18}: best epoch {history.best.epoch:3d}, valid loss {final[2]:.4f}, {seconds:5.1f} s")
    return results


def print_table(results) -> None:
    header = (
        f"{'rule':>18} | train loss | valid loss | train acc | valid acc | best epoch | µs/step | "
        "first call (s)"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for name, (history, (train_loss, train_acc, valid_loss, valid_acc), _) in results.items():
        step_seconds = np.nanmedian([r.step_seconds for r in history])
        print(
            f"{name:>18} | {train_loss:10.4f} | {valid_loss:10.4f} | {train_acc:9.3f} | {valid_acc:9.3f} | "
            f"{history.best.epoch:10d} | {1e6 * step_seconds:7.1f} | {history.first_call_seconds:14.2f}"
        )
    print(
        "\nLosses and accuracies are those of the restored (best validation) params on the whole sets;"
        "\nµs/step is the median over epochs of the mean training call, excluding the first call"
        " (compilation)."
    )


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, (history, _, _) in results.items():
        (line,) = axes[0].plot(history.epoch, history.train["loss"], label=name)
        axes[1].plot(history.epoch, history.valid["loss"], color=line.get_color(), label=name)
        axes[1].plot(history.best.epoch, history.best.valid["loss"], "o", color=line.get_color())
    for axis, title in zip(axes, ("training loss (mean over the epoch)", "validation loss (dot: best)")):
        axis.set(title=title, xlabel="epoch", yscale="log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[1].legend()
    figure.suptitle("MLP 64-hidden-10 on scikit-learn digits, trained with updates.minimize")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"\nwrote {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per rule (default 30)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    parser.add_argument(
        "--rules", nargs="+", default=None, choices=list(RULES), help="default: " + " ".join(DEFAULT_RULES)
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for digits_loss.png")
    parser.add_argument("--mode", default=None, help="PyTensor mode (default: PyTensor's default)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small budget for CI: 2 epochs, 16 hidden units, 2 rules by default",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden = 2, 16
        args.rules = args.rules or ["nesterov_momentum", "adam"]
    args.rules = args.rules or DEFAULT_RULES
    results = train_all(args.rules, args.epochs, args.batch_size, args.hidden, args.mode)
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "digits_loss.png")


if __name__ == "__main__":
    main()
