"""Run by tests/test_step.py in a fresh process, so that JAX starts with the devices it needs.

    python step_worker.py parallel OUT            # 4 CPU devices: one step on 4 devices
    python step_worker.py process ID PORT OUT     # one of 2 processes of 2 CPU devices each
    python step_worker.py resume CHECKPOINT OUT   # load a checkpoint into a JAX step, train on
    python step_worker.py minimize OUT            # minimize data-parallel on 4 CPU devices

Each writes what it computed to OUT (an .npz) for the test to compare. Nothing runs on import
(pytest imports every module of tests/ for its doctests).
"""

import os
import sys

DEVICES = {"parallel": 4, "process": 2, "resume": 1, "minimize": 4}


def parallel(out: str) -> None:
    loss, params, inputs, built = problem("adam")
    step = updates.compile_step(inputs, loss, built, mode="JAX", mesh=jax.devices())
    losses = train(step, data())
    step.sync()
    try:
        step(*data(rows=6))
        refused = ""
    except ValueError as error:
        refused = str(error)
    state = built.named_state()
    np.savez(out, losses=losses, refused=refused, **{p.name: p.get_value() for p in params}, **state)


def process(index: str, port: str, out: str) -> None:
    """Train with the state replicated, then split over the 4 devices of both processes."""
    half = len(data()[0]) // 2
    mine = [array[int(index) * half : (int(index) + 1) * half] for array in data()]
    saved = {"devices": len(jax.devices())}
    for name, shard_state in (("replicated", False), ("sharded", True)):
        loss, params, inputs, built = problem("adam")
        step = updates.compile_step(
            inputs, loss, built, mode="JAX", mesh=jax.devices(), shard_state=shard_state
        )
        saved[f"{name}.losses"] = train(step, mine)
        step.sync()
        saved.update({f"{name}.{key}": value for key, value in built.named_state().items()})
        saved.update({f"{name}.{p.name}": p.get_value() for p in params})
    np.savez(out, **saved)


def resume(checkpoint: str, out: str) -> None:
    loss, params, inputs, built = problem("adam")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    updates.load_state(checkpoint, built, params=True)
    train(step, data(), STEPS)
    step.sync()
    np.savez(out, **{p.name: p.get_value() for p in params}, **built.named_state())


def minimize(out: str) -> None:
    """minimize on 4 devices, the state replicated, then split over them."""
    saved = {}
    for name, shard_state in (("replicated", False), ("sharded", True)):
        history, params = minimized(jax.devices(), shard_state=shard_state)
        saved[f"{name}.losses"] = history.train["loss"]
        saved.update({f"{name}.{p.name}": p.get_value() for p in params})
    np.savez(out, **saved)


if __name__ == "__main__":
    task, *arguments = sys.argv[1:]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES[task]}"
    import jax

    jax.config.update("jax_enable_x64", True)
    if task == "process":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{arguments[1]}", num_processes=2, process_id=int(arguments[0]))
    import numpy as np
    from test_step import STEPS, data, minimized, problem, train

    import updates

    {"parallel": parallel, "process": process, "resume": resume, "minimize": minimize}[task](*arguments)
