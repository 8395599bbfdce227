"""Stop training, save a checkpoint, resume in a new process, and land exactly where an
uninterrupted run lands.

A logistic regression on synthetic data is trained with Adam under a warm-up-cosine learning
rate and Nesterov momentum around it. The script trains half the steps, writes the params and the
whole optimizer state (moments, velocities, step counters) with `updates.save_state`, then starts
a fresh Python process that rebuilds the same model and optimizer, loads the checkpoint with
`updates.load_state` and trains the other half. It compares the result with an uninterrupted run,
bit for bit.

    python examples/resume.py [--steps 200] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

import updates


def build(steps: int):
    """The model, its data and a compiled training step, the same in every process."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=8) + 0.3 * rng.normal(size=256) > 0).astype("float32")
    w = pytensor.shared(np.zeros(8, "float32"), name="w")
    b = pytensor.shared(np.float32(0.0), name="b")
    logits = pt.constant(x) @ w + b
    loss = pt.mean(pt.softplus(logits) - pt.constant(y) * logits)
    learning_rate = updates.warmup_cosine(peak_value=0.1, warmup_steps=steps // 10, decay_steps=steps)
    optimizer = updates.apply_nesterov_momentum(updates.adam(loss, [w, b], learning_rate=learning_rate))
    step = pytensor.function([], loss, updates=optimizer)
    return [w, b], optimizer, step


def train(step, n: int) -> float:
    loss = float("nan")
    for _ in range(n):
        loss = float(step())
    return loss


def resume(checkpoint: str, result: str, steps: int) -> None:
    """In a new process: rebuild, load the checkpoint, train the second half, save the params."""
    params, optimizer, step = build(steps)
    updates.load_state(checkpoint, optimizer, params=True)
    loss = train(step, steps - steps // 2)
    np.savez(result, *[p.get_value() for p in params], loss=loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps in all (default 200)")
    parser.add_argument("--quick", action="store_true", help="40 steps: a smoke run")
    parser.add_argument("--resume", nargs=2, metavar=("CHECKPOINT", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 40 if args.quick else args.steps
    if args.resume:
        resume(*args.resume, steps)
        return

    params, optimizer, step = build(steps)
    uninterrupted = train(step, steps)
    expected = [p.get_value() for p in params]

    with tempfile.TemporaryDirectory() as folder:
        checkpoint, result = str(Path(folder) / "half.npz"), str(Path(folder) / "resumed.npz")
        params, optimizer, step = build(steps)
        train(step, steps // 2)
        updates.save_state(checkpoint, optimizer, params=True)
        print(updates.inspect_state(optimizer))
        command = [sys.executable, __file__, "--steps", str(steps), "--resume", checkpoint, result]
        subprocess.run(command, check=True)
        with np.load(result) as saved:
            resumed = [saved[f"arr_{i}"] for i in range(len(params))]
            resumed_loss = float(saved["loss"])

    same = all(np.array_equal(a, b) for a, b in zip(resumed, expected))
    print(f"\nloss after {steps} steps: uninterrupted {uninterrupted:.6f}, resumed {resumed_loss:.6f}")
    print(f"params bit for bit equal after resuming in a new process: {same}")
    if not same:
        raise SystemExit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
