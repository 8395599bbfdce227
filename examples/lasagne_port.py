"""Porting a Lasagne training script to `updates`: the old code and the new, side by side.

`updates` keeps the names, arguments and defaults of ``lasagne.updates`` on PyTensor, so a port
changes the imports (Theano to PyTensor, ``lasagne.updates`` to ``updates``) and little else.
``LASAGNE`` below is the old script (kept as text: Lasagne and Theano are not installed);
:func:`train` is the same with `updates`, line for line, and this script runs it on a tiny
two-class problem:

    python examples/lasagne_port.py [--epochs 30] [--show] [--quick]
"""

from __future__ import annotations

import argparse
import inspect

import numpy as np
import pytensor
import pytensor.tensor as pt

import updates as lu

LASAGNE = """
import theano
import theano.tensor as T
import lasagne

x, y = T.matrix("x"), T.ivector("y")
W1 = theano.shared(lasagne.utils.floatX(glorot(2, 16)), name="W1")
b1 = theano.shared(lasagne.utils.floatX(np.zeros(16)), name="b1")
W2 = theano.shared(lasagne.utils.floatX(glorot(16, 2)), name="W2")
b2 = theano.shared(lasagne.utils.floatX(np.zeros(2)), name="b2")
params = [W1, b1, W2, b2]
probabilities = T.nnet.softmax(T.dot(T.tanh(T.dot(x, W1) + b1), W2) + b2)
loss = T.nnet.categorical_crossentropy(probabilities, y).mean()

learning_rate = theano.shared(lasagne.utils.floatX(0.1))
grads = theano.grad(loss, params)
grads = lasagne.updates.total_norm_constraint(grads, max_norm=5)
updates = lasagne.updates.nesterov_momentum(grads, params, learning_rate=learning_rate, momentum=0.9)
train_fn = theano.function([x, y], loss, updates=updates)

for epoch in range(epochs):
    for xb, yb in batches(x_data, y_data, 32, rng):
        train_fn(xb, yb)
    learning_rate.set_value(lasagne.utils.floatX(learning_rate.get_value() * 0.95))
"""


def glorot(n_in: int, n_out: int, seed: int = 0) -> np.ndarray:
    """Glorot-uniform initial weights (float32)."""
    limit = np.sqrt(6 / (n_in + n_out))
    return np.random.default_rng(seed).uniform(-limit, limit, (n_in, n_out)).astype("float32")


def two_moons(n: int = 256, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles with noise: inputs (n, 2) float32, labels (n,) int32."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(angle) + label, np.sin(angle) * (1 - 2 * label) + 0.5 * label], axis=1)
    return (x + rng.normal(0, 0.1, x.shape)).astype("float32"), label.astype("int32")


def batches(x_data, y_data, size, rng):
    """Shuffled mini-batches of one epoch (the last one may be shorter)."""
    order = rng.permutation(len(x_data))
    for start in range(0, len(order), size):
        chosen = order[start : start + size]
        yield x_data[chosen], y_data[chosen]


def train(x_data, y_data, epochs, rng, mode=None):
    """The Lasagne script above, ported: returns the loss before and after each epoch, and the params."""
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    W1 = pytensor.shared(glorot(2, 16), name="W1")
    b1 = pytensor.shared(np.zeros(16, "float32"), name="b1")
    W2 = pytensor.shared(glorot(16, 2), name="W2")
    b2 = pytensor.shared(np.zeros(2, "float32"), name="b2")
    params = [W1, b1, W2, b2]
    log_probabilities = pt.special.log_softmax(pt.tanh(x @ W1 + b1) @ W2 + b2, axis=1)
    loss = -log_probabilities[pt.arange(y.shape[0]), y].mean()

    learning_rate = lu.live(0.1, name="learning_rate")  # a shared scalar, cast to float32 in the graph
    grads = pytensor.grad(loss, params)
    grads = lu.total_norm_constraint(grads, max_norm=5)
    updates = lu.nesterov_momentum(grads, params, learning_rate=learning_rate, momentum=0.9)
    train_fn = pytensor.function([x, y], loss, updates=updates, mode=mode)

    evaluate = pytensor.function([x, y], loss, mode=mode)
    history = [float(evaluate(x_data, y_data))]
    for _epoch in range(epochs):
        for xb, yb in batches(x_data, y_data, 32, rng):
            train_fn(xb, yb)
        learning_rate.set_value(learning_rate.get_value() * 0.95)
        history.append(float(evaluate(x_data, y_data)))
    return history, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a small budget (5 epochs), for CI")
    parser.add_argument("--mode", default=None, help="PyTensor mode (default: PyTensor's default)")
    parser.add_argument("--show", action="store_true", help="print the old and the new code first")
    args = parser.parse_args()
    if args.show:
        print("# Lasagne" + LASAGNE + "\n# updates\n" + inspect.getsource(train))

    epochs = 5 if args.quick else args.epochs
    x_data, y_data = two_moons()
    history, params = train(x_data, y_data, epochs, np.random.default_rng(0), args.mode)
    every = max(1, epochs // 6)
    print("loss after epoch", ", ".join(f"{i}: {history[i]:.3f}" for i in range(0, len(history), every)))
    print("dtypes kept:", sorted({p.get_value().dtype.name for p in params}))
    if not history[-1] < 0.5 * history[0]:
        raise SystemExit(f"the loss did not fall by half: {history[0]:.3f} -> {history[-1]:.3f}")


if __name__ == "__main__":
    main()
