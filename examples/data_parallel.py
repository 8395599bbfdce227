"""Train the digits MLP data-parallel over 4 devices with `updates.minimize(mode="JAX", mesh=...)`.

The model and the optimizer are written exactly as for one CPU core (examples/digits.py); only
`mode="JAX"` and `mesh` change. Each mini-batch of 64 rows is split in 4 parts of 16, one per
device; params and Adam's state are replicated and updated in place on every device, and XLA
adds the reductions, so the loss and the gradients are those of the whole batch. The script
trains the same network on one device too and prints both histories, which agree to float
reassociation.

Here the 4 devices are CPU devices that XLA makes of this machine's cores (the flag must be set
before JAX is imported). On GPUs, drop the flag: `jax.devices()` lists the GPUs. Across hosts,
call `jax.distributed.initialize(coordinator_address, num_processes, process_id)` first in every
process (then `jax.devices()` lists every process's devices and each process feeds its own
quarter of the data to `minimize`).

    pip install -e ".[examples,jax]"
    python examples/data_parallel.py [--epochs 10] [--devices 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="two epochs (for the tests)")
    arguments = parser.parse_args()
    if "jax" in sys.modules:
        raise RuntimeError("set the device count before JAX is imported")
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={arguments.devices}"

    import jax
    import pytensor.tensor as pt
    from digits import load_digits, mlp_loss, mlp_params

    import updates

    epochs = 2 if arguments.quick else arguments.epochs
    (x_train, y_train), valid = load_digits()
    rows = len(x_train) // 64 * 64  # whole batches only: a last batch of 29 rows would not split in 4
    x_train, y_train = x_train[:rows], y_train[:rows]
    x, y = pt.matrix("x", dtype="float32"), pt.vector("y", dtype="int32")
    runs = {}
    for name, mesh in (("one device", None), (f"{len(jax.devices())} devices", jax.devices())):
        params = mlp_params()
        loss, accuracy = mlp_loss(params, x, y)
        runs[name] = updates.minimize(
            loss,
            params,
            [x, y],
            (x_train, y_train),
            updates.adam(learning_rate=3e-3),
            valid,
            batch_size=64,
            max_epochs=epochs,
            monitors={"accuracy": accuracy},
            shuffle=False,
            progress=False,
            mode="JAX",
            mesh=mesh,
        )
    print("epoch | " + " | ".join(f"{name}: valid loss, accuracy" for name in runs))
    for epoch, records in enumerate(zip(*runs.values()), start=1):
        cells = [f"{r.valid['loss']:.6f}, {r.valid['accuracy']:.4f}" for r in records]
        print(f"{epoch:5d} | " + " | ".join(cells))
    (_, one), (_, many) = runs.items()
    difference = max(abs(a - b) for a, b in zip(one.valid["loss"], many.valid["loss"]))
    print(f"largest difference in validation loss between the runs: {difference:.2e}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
