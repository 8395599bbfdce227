"""compile_step: a JAX step that keeps params and state on the device trains exactly as
pytensor.function, keeps every other reader of its variables right, and runs data-parallel over
devices and processes (those in fresh processes, which get their own CPU devices)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from jax.sharding import Mesh, PartitionSpec
from pytensor.compile.mode import Mode
from registry import RULES, WRAPPERS

import updates

STEPS = 50
CVM = Mode(linker="cvm", optimizer="fast_run")
HERE = Path(__file__).parent


def data(rows: int = 16, width: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=(rows, width)), rng.normal(size=(rows, 2))]


def problem(rule: str = "adam", wrapper: str | None = None, case=None, width: int = 3, rows=None):
    """A small least-squares fit of ``width`` features: (loss, params, inputs, updates of ``rule``
    or a registry case); the inputs' number of rows is static if given."""
    params = [
        pytensor.shared(np.linspace(-0.5, 0.5, 2 * width).reshape(width, 2), name="W"),
        pytensor.shared(np.array([0.1, -0.2]), name="b"),
    ]
    x, y = pt.matrix("x", shape=(rows, width)), pt.matrix("y", shape=(rows, 2))
    loss = ((x @ params[0] + params[1] - y) ** 2).mean()
    if wrapper is not None:
        inner = updates.adam(learning_rate=0.05)
        grads = updates.get_or_compute_grads(loss, params)
        built = next(w for w in WRAPPERS if w.name == wrapper).build(inner, grads, params)
    elif case is not None:
        built = case.function(loss, params, **case.hyper)
    else:
        built = getattr(updates, rule)(loss, params, learning_rate=0.05)
    return loss, params, [x, y], built


def train(step, batch, steps: int = STEPS) -> np.ndarray:
    return np.array([float(step(*batch)) for _ in range(steps)])


def run(build, mode):
    loss, params, inputs, built = build()
    if mode == "JAX":
        step = updates.compile_step(inputs, loss, built, mode="JAX")
    else:
        step = pytensor.function(inputs, loss, updates=built, mode=mode)
    losses = train(step, data())
    if mode == "JAX":
        step.sync()
    return losses, [p.get_value() for p in params], built.named_state()


def assert_close(a, b, rtol=1e-10):
    """Equal to ``rtol`` relative to the size of ``b`` (an element near 0 after cancellation
    keeps the absolute error of the large ones)."""
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


def assert_same_run(jax_run, reference):
    assert_close(jax_run[0], reference[0])
    for got, expected in zip(jax_run[1], reference[1]):
        assert type(got) is np.ndarray
        assert_close(got, expected)
    assert jax_run[2].keys() == reference[2].keys()
    for name in reference[2]:
        assert_close(jax_run[2][name], reference[2][name])


@pytest.mark.parametrize("case", RULES, ids=str)
def test_every_rule_trains_on_the_device_as_in_the_c_vm(case):
    def build():
        return problem(case=case)

    assert_same_run(run(build, "JAX"), run(build, CVM))


@pytest.mark.parametrize("wrapper", [w.name for w in WRAPPERS])
def test_every_wrapper_trains_on_the_device_as_in_the_c_vm(wrapper):
    def build():
        return problem(wrapper=wrapper)

    assert_same_run(run(build, "JAX"), run(build, CVM))


@pytest.mark.parametrize("line_search", [None, "armijo", "strong_wolfe"])
def test_lbfgs_trains_on_the_device_as_in_the_c_vm(line_search):
    def build():
        loss, params, inputs, _ = problem()
        return loss, params, inputs, updates.lbfgs(loss, params, history_size=4, line_search=line_search)

    assert_same_run(run(build, "JAX"), run(build, CVM))


def noisy_problem(seed: int = 0):
    """The problem's Adam on gradients with annealed noise: (loss, params, inputs, noisy
    gradients, the noise drawn, updates)."""
    loss, params, inputs, _ = problem()
    grads = updates.get_or_compute_grads(loss, params)
    noisy = updates.add_gradient_noise(grads, eta=0.05, seed=seed)
    noise = [n - g for n, g in zip(noisy, grads)]
    return loss, params, inputs, noisy, noise, updates.adam(noisy, params, learning_rate=0.05)


def test_gradient_noise_is_drawn_on_the_device_and_trains_as_the_c_vm_on_the_same_draws():
    loss, params, inputs, noisy, noise, built = noisy_problem()
    step = updates.compile_step(inputs, [loss, *noise], built, mode="JAX")
    drawn = [step(*data()) for _ in range(STEPS)]
    step.sync()
    assert noisy.counter.get_value() == STEPS
    # the C VM, given the draws as inputs
    loss, params_c, inputs, _ = problem()
    given = [p.type() for p in params_c]
    grads = updates.get_or_compute_grads(loss, params_c)
    noisy_c = [g + n for g, n in zip(grads, given)]
    replay = pytensor.function(
        [*inputs, *given], loss, updates=updates.adam(noisy_c, params_c, 0.05), mode=CVM
    )
    losses = [replay(*data(), *outputs[1:]) for outputs in drawn]
    assert_close([outputs[0] for outputs in drawn], losses)
    for p, q in zip(params, params_c):
        assert_close(p.get_value(), q.get_value())
    # the draws: the annealed variance, new at every step
    variance = 0.05 / (1 + np.arange(STEPS)) ** 0.55
    pooled = np.array([np.concatenate([x.ravel() for x in outputs[1:]]) for outputs in drawn])
    assert np.all(np.abs(pooled / np.sqrt(variance)[:, None]) < 6)
    assert abs(np.mean(pooled**2 / variance[:, None]) - 1) < 0.15  # 400 draws in all
    assert len(np.unique(pooled)) == pooled.size


def test_the_device_generator_is_reproducible_and_goes_on_after_a_sync():
    first, again = [], []
    for drawn in (first, again):
        _loss, _params, inputs, _noisy, noise, built = noisy_problem(seed=3)
        step = updates.compile_step(inputs, noise, built, mode="JAX")
        drawn += [np.concatenate([x.ravel() for x in step(*data())]) for _ in range(3)]
    np.testing.assert_array_equal(first, again)
    step.sync()  # the host generator is now seeded by the device key: a new step goes on
    later = updates.compile_step(inputs, noise, built, mode="JAX")
    assert not np.isin(np.concatenate([x.ravel() for x in later(*data())]), np.concatenate(first)).any()


def test_another_mode_is_pytensor_function():
    loss, _params, inputs, built = problem()
    step = updates.compile_step(inputs, [loss], built, mode=CVM)
    assert step.sync() is None and isinstance(step.function, type(pytensor.function([], [])))
    first = step(*data())
    assert isinstance(first, list) and len(first) == 1


# -- who sees which values ----------------------------------------------------------------------


def test_params_stay_on_the_device_until_synced():
    loss, params, inputs, built = problem()
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    before = params[0].get_value()
    step(*data())
    np.testing.assert_array_equal(params[0].get_value(), before)  # stale until sync
    step.sync()
    assert type(params[0].get_value()) is np.ndarray
    assert not np.array_equal(params[0].get_value(), before)


def test_set_value_between_calls_is_seen_and_wins_over_the_device():
    loss, params, inputs, built = problem("sgd")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    step(*data())
    params[1].set_value(np.array([5.0, 5.0]))
    step.sync()  # keeps the value set by hand
    np.testing.assert_array_equal(params[1].get_value(), [5.0, 5.0])
    twin_loss, twin_params, twin_inputs, twin_built = problem("sgd")
    reference = pytensor.function(twin_inputs, twin_loss, updates=twin_built, mode=CVM)
    reference(*data())
    twin_params[0].set_value(np.asarray(step.device[params[0]]))
    twin_params[1].set_value(np.array([5.0, 5.0]))
    assert_close(step(*data()), reference(*data()))


def test_readers_of_the_variables_see_the_device_values():
    loss, params, inputs, built = problem("adam")
    averaged = updates.apply_ema(built, decay=0.5)
    step = updates.compile_step(inputs, loss, averaged, mode="JAX")
    evaluate = updates.compile_step(inputs, loss, mode="JAX")
    for _ in range(3):
        trained = step(*data())
    assert evaluate(*data()) < trained  # the evaluation synced the step first: it sees 3 steps
    assert_close(evaluate(*data()), pytensor.function(inputs, loss, mode=CVM)(*data()))
    step(*data())
    assert averaged.named_state()["adam.t"] == 4  # named_state syncs
    step(*data())
    assert updates.inspect_state(averaged).steps["adam.t"] == 5  # so does inspect_state
    step(*data())
    assert averaged.hyperparameter_values()["apply_ema.decay"] == 0.5
    step(*data())
    shadows = next(v for v in averaged.state if v.name == "apply_ema.shadow")
    on_device = np.asarray(step.device[shadows][0])  # W's part of the flat buffer
    with updates.swap_averages(averaged):  # syncs, then swaps
        np.testing.assert_array_equal(params[0].get_value(), on_device)


def test_a_default_mode_function_after_jax_steps_sees_numpy_values():
    loss, params, inputs, built = problem("momentum")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    step(*data())
    step.sync()
    host = pytensor.function(inputs, loss, updates=built)
    host(*data())
    assert all(type(v.get_value(borrow=True)) is np.ndarray for v in [*params, *built.state])
    assert step(*data()) > 0  # and the JAX step takes the host's new values back


def test_save_load_in_a_new_process_and_resume_bit_for_bit(tmp_path):
    loss, params, inputs, built = problem("adam")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    train(step, data(), STEPS)
    updates.save_state(tmp_path / "ckpt.npz", built, params=True)  # syncs the step first
    train(step, data(), STEPS)
    step.sync()
    worker(["resume", str(tmp_path / "ckpt.npz")], tmp_path / "resumed.npz")
    resumed = np.load(tmp_path / "resumed.npz")
    for p in params:
        np.testing.assert_array_equal(resumed[p.name], p.get_value())
    for name, value in built.named_state().items():
        np.testing.assert_array_equal(resumed[name], value)


# -- data parallel ------------------------------------------------------------------------------


def worker(arguments: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, str(HERE / "step_worker.py"), *arguments, str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return dict(np.load(out))


def one_device():
    loss, params, inputs, built = problem("adam")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    losses = train(step, data())
    step.sync()
    return losses, {p.name: p.get_value() for p in params}, built.named_state()


def test_four_devices_train_as_one_on_the_global_batch(tmp_path):
    losses, params, state = one_device()
    got = worker(["parallel"], tmp_path / "parallel.npz")
    assert str(got["refused"]).startswith(
        "compile_step: input 0 (x) has 6 rows, which does not split over the 4"
    )
    assert_close(got["losses"], losses)
    for name, value in {**params, **state}.items():
        assert_close(got[name], value)


def test_two_processes_train_as_one_on_the_global_batch(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "step_worker.py"),
                "process",
                str(i),
                port,
                str(tmp_path / f"{i}.npz"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for process in processes:
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors
    losses, params, state = one_device()
    for i in range(2):
        got = np.load(tmp_path / f"{i}.npz")
        assert got["devices"] == 4
        for form in ("replicated", "sharded"):
            assert_close(got[f"{form}.losses"], losses)
            for name, value in {**params, **state}.items():
                assert_close(got[f"{form}.{name}"], value)


def with_devices(count: int, function: str, out: Path) -> dict:
    """Run ``function(out)`` of this module in a fresh process of ``count`` CPU devices (the flag
    must be set before JAX starts); return the arrays it saved."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
    }
    start = "import jax; jax.config.update('jax_enable_x64', True); import test_step"
    code = f"{start}; test_step.{function}({str(out)!r})"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return dict(np.load(out))


def named_meshes(out: str) -> None:
    """Run in :func:`with_devices` (4 devices): train on a one-axis mesh named "batch" and on a
    2 x 2 mesh split along ``batch_axis="batch"``; save what each computed and how it split."""
    devices = np.array(jax.devices())
    assert devices.size == 4
    meshes = {
        "one_axis": (Mesh(devices, ("batch",)), None),
        "two_axes": (Mesh(devices.reshape(2, 2), ("replica", "batch")), "batch"),
    }
    saved = {}
    for name, (mesh, batch_axis) in meshes.items():
        loss, params, inputs, built = problem("adam")
        step = updates.compile_step(inputs, loss, built, mode="JAX", mesh=mesh, batch_axis=batch_axis)
        placed = step._put_input(0, data()[0])
        saved[f"{name}.spec"] = str(placed.sharding.spec)
        saved[f"{name}.shards"] = [shard.data.shape[0] for shard in placed.addressable_shards]
        saved[f"{name}.multiple"] = step.batch_multiple
        saved[f"{name}.losses"] = train(step, data())
        step.sync()
        saved.update({f"{name}.{p.name}": p.get_value() for p in params})
        saved.update({f"{name}.{key}": value for key, value in built.named_state().items()})
    np.savez(out, **saved)


def test_a_mesh_of_any_axis_names_splits_the_batch_along_its_batch_axis(tmp_path):
    got = with_devices(4, "named_meshes", tmp_path / "meshes.npz")
    losses, params, state = one_device()
    for name, parts in (("one_axis", 4), ("two_axes", 2)):
        assert str(got[f"{name}.spec"]) == str(PartitionSpec("batch"))
        assert int(got[f"{name}.multiple"]) == parts
        np.testing.assert_array_equal(
            got[f"{name}.shards"], [16 // parts] * 4
        )  # 16 rows, each device its part
        assert_close(got[f"{name}.losses"], losses)
        for key, value in {**params, **state}.items():
            assert_close(got[f"{name}.{key}"], value)


def sharded_state(out: str) -> None:
    """Run in :func:`with_devices` (4 devices): train with the state replicated, split over the
    devices, and on one device (a state value set by hand halfway); save what each computed,
    how it held each array and the bytes per device."""
    saved = {}
    meshes = {"one": {}, "replicated": {"mesh": jax.devices()}}
    meshes["sharded"] = {"mesh": jax.devices(), "shard_state": True}
    for name, options in meshes.items():
        loss, params, inputs, built = problem(wrapper="apply_lookahead", width=8)
        step = updates.compile_step(inputs, loss, built, mode="JAX", **options)
        batch = data(width=8)
        first = train(step, batch, STEPS // 2)
        step.sync()
        moment = built.state[0]  # uploaded again, split, by the next call
        moment.set_value(moment.get_value() * 0.5)
        saved[f"{name}.losses"] = np.concatenate([first, train(step, batch, STEPS // 2)])
        saved[f"{name}.specs"] = [str(getattr(x.sharding, "spec", None)) for x in step.values]
        saved[f"{name}.bytes"] = [step.bytes_per_device()[kind] for kind in ("params", "state")]
        step.sync()
        saved.update({f"{name}.{p.name}": p.get_value() for p in params})
        saved.update({f"{name}.{key}": value for key, value in built.named_state().items()})
    np.savez(out, **saved)


def test_the_state_split_over_the_devices_trains_as_replicated(tmp_path):
    got = with_devices(4, "sharded_state", tmp_path / "sharded.npz")
    computed = [key[4:] for key in got if key.startswith("one.") and key[4:] not in ("specs", "bytes")]
    for key in computed:
        assert_close(got[f"replicated.{key}"], got[f"one.{key}"])
        assert_close(got[f"sharded.{key}"], got[f"one.{key}"])
    # W (8, 2) splits along its rows, b (2,) is padded to (4,): one element per device
    split = "P('data',)"
    assert list(got["sharded.specs"]) == ["P()"] * 2 + [split] * 4 + ["P()"] + [split] * 2 + ["P()"]
    state = [got[f"one.{key}"] for key in computed if key not in ("losses", "W", "b")]
    arrays, counters = [x for x in state if x.ndim], [x for x in state if not x.ndim]
    whole = sum(x.nbytes for x in state)
    quarter = sum(-(-x.size // 4) * x.itemsize for x in arrays) + sum(x.nbytes for x in counters)
    params = got["one.W"].nbytes + got["one.b"].nbytes
    assert list(got["replicated.bytes"]) == [params, whole]
    assert list(got["sharded.bytes"]) == [params, quarter]


def minimized(mesh=None, **more):
    """``minimize`` on the problem, on one device or over ``mesh``: (history, params)."""
    loss, params, inputs, _ = problem("adam")
    rule = updates.adam(learning_rate=0.05)
    options = dict(batch_size=8, max_epochs=3, shuffle=False, progress=False, mode="JAX", mesh=mesh)
    return updates.minimize(loss, params, inputs, data(), rule, **options, **more), params


def test_minimize_takes_the_batch_axis_of_a_mesh_with_several():
    history, params = minimized(one_device_mesh("replica", "batch"), batch_axis="batch")
    expected, expected_params = minimized()
    assert_close(history.train["loss"], expected.train["loss"])
    for p, q in zip(params, expected_params):
        assert_close(p.get_value(), q.get_value())
    with pytest.raises(ValueError, match=r"^compile_step: the mesh has several axes"):
        minimized(one_device_mesh("replica", "batch"))


def test_minimize_data_parallel_equals_one_device(tmp_path):
    got = worker(["minimize"], tmp_path / "minimize.npz")
    history, params = minimized()
    for form in ("replicated", "sharded"):
        assert_close(got[f"{form}.losses"], history.train["loss"])
        for p in params:
            assert type(p.get_value()) is np.ndarray
            assert_close(got[f"{form}.{p.name}"], p.get_value())


# -- bad input ----------------------------------------------------------------------------------


def test_a_mesh_needs_jax():
    loss, _params, inputs, built = problem()
    with pytest.raises(ValueError, match=r"^compile_step: mesh needs mode='JAX', got mode=None"):
        updates.compile_step(inputs, loss, built, mesh=jax.devices())


def test_an_input_without_a_batch_axis_is_refused_under_a_mesh():
    loss, _params, inputs, built = problem()
    scale = pt.scalar("scale")
    with pytest.raises(ValueError, match=r"^compile_step: inputs\[2\] \(scale\) is a scalar; with a mesh"):
        updates.compile_step([*inputs, scale], loss * scale, built, mode="JAX", mesh=jax.devices())


def one_device_mesh(*names: str) -> Mesh:
    return Mesh(np.array(jax.devices()[:1]).reshape((1,) * len(names)), names)


def test_a_one_axis_mesh_needs_no_name():
    loss, params, inputs, built = problem("adam")
    step = updates.compile_step(inputs, loss, built, mode="JAX", mesh=one_device_mesh("batch"))
    assert step.batch_axis == "batch" and step.batch_multiple == 1
    losses = train(step, data())
    step.sync()
    expected, expected_params, _ = one_device()
    assert_close(losses, expected)
    for p in params:
        assert_close(p.get_value(), expected_params[p.name])


def test_the_batch_axis_of_a_mesh_with_several():
    loss, _params, inputs, built = problem("sgd")
    named = updates.compile_step(
        inputs, loss, built, mode="JAX", mesh=one_device_mesh("replica", "batch"), batch_axis="batch"
    )
    assert named.batch_axis == "batch"
    data_axis = updates.compile_step(inputs, loss, built, mode="JAX", mesh=one_device_mesh("model", "data"))
    assert data_axis.batch_axis == "data"  # as before batch_axis existed
    listed = updates.compile_step(inputs, loss, built, mode="JAX", mesh=jax.devices()[:1], batch_axis="rows")
    assert listed.mesh.axis_names == ("rows",) and listed.batch_axis == "rows"


@pytest.mark.parametrize(
    ("batch_axis", "message"),
    [
        (None, r"the mesh has several axes \('replica', 'batch'\); say which one the batch is split along "),
        ("model", r"batch_axis='model' is not an axis of the mesh, whose axes are \('replica', 'batch'\)$"),
    ],
    ids=["missing", "unknown"],
)
def test_a_missing_or_unknown_batch_axis_is_refused(batch_axis, message):
    loss, _params, inputs, built = problem("sgd")
    mesh = one_device_mesh("replica", "batch")
    with pytest.raises(ValueError, match=f"^compile_step: {message}"):
        updates.compile_step(inputs, loss, built, mode="JAX", mesh=mesh, batch_axis=batch_axis)


def test_a_batch_axis_needs_a_mesh_and_a_name():
    loss, _params, inputs, built = problem("sgd")
    with pytest.raises(ValueError, match=r"^compile_step: batch_axis='batch' needs a mesh; give mesh= too$"):
        updates.compile_step(inputs, loss, built, mode="JAX", batch_axis="batch")
    with pytest.raises(
        TypeError, match=r"^compile_step: batch_axis must be the name of a mesh axis, got int"
    ):
        updates.compile_step(inputs, loss, built, mode="JAX", mesh=jax.devices()[:1], batch_axis=0)


def test_a_split_state_needs_a_mesh_and_a_flag():
    loss, _params, inputs, built = problem("sgd")
    with pytest.raises(
        ValueError, match=r"^compile_step: shard_state=True splits the state over a mesh; give"
    ):
        updates.compile_step(inputs, loss, built, mode="JAX", shard_state=True)
    with pytest.raises(TypeError, match=r"^compile_step: shard_state must be True or False, got str"):
        updates.compile_step(inputs, loss, built, mode="JAX", mesh=jax.devices()[:1], shard_state="yes")


@pytest.mark.parametrize("kind", [lambda built: built, dict], ids=["Updates", "dict"])
def test_the_bytes_per_device_tell_params_from_state(kind):
    """An Updates knows its params; of a plain dictionary, they are the keys the loss reads."""
    loss, params, inputs, built = problem("momentum")
    step = updates.compile_step(
        inputs, loss, kind(built), mode="JAX", mesh=jax.devices()[:1], shard_state=True
    )
    step(*data())
    size = sum(p.get_value().nbytes for p in params)
    assert step.bytes_per_device() == {"params": size, "state": size, "other": 0}


# -- what a build says ----------------------------------------------------------------------------


def build_warnings(inputs, loss, built) -> tuple[list, updates.Step]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = updates.compile_step(inputs, loss, built, mode="JAX")
    return caught, step


def test_a_build_warns_once_of_the_assertions_jax_does_not_check():
    loss, _params, inputs, built = problem("adam")  # inputs of unknown shape: broadcast checks
    caught, step = build_warnings(inputs, loss, built)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].category is UserWarning and caught[0].filename == __file__
    assert len(step.skipped_assertions) == 1  # the graph's one, not the copies of a clone
    assert str(caught[0].message).startswith(
        "compile_step: mode='JAX' does not check 1 runtime assertion of the graph (JAX tracing "
        "removes them): 'Could not broadcast dimensions. Broadcasting is only allowed"
    )
    assert "times" not in str(caught[0].message)
    a, b, c, d = (pt.matrix(name) for name in "abcd")  # two checks of the same text are counted
    caught, step = build_warnings(
        [*inputs, a, b, c, d], loss + ((a - b) ** 2).mean() + ((c - d) ** 2).mean(), built
    )
    n = len(step.skipped_assertions)
    assert n > 1 and len(caught) == 1 and str(caught[0].message).endswith(f"shape.' ({n} times)")


def static_problem(budget=None):
    """The problem with inputs of known shape (no broadcast checks), under apply_if_finite."""
    params = [pytensor.shared(np.ones((3, 2)), name="W"), pytensor.shared(np.zeros(2), name="b")]
    x, y = pt.matrix("x", shape=(16, 3)), pt.matrix("y", shape=(16, 2))
    loss = ((x @ params[0] + params[1] - y) ** 2).mean()
    return [x, y], loss, updates.apply_if_finite(updates.adam(loss, params), budget=budget)


def test_a_build_with_no_assertion_says_nothing_and_names_the_budget_it_drops():
    caught, step = build_warnings(*static_problem())
    assert caught == [] and step.skipped_assertions == []
    caught, step = build_warnings(*static_problem(budget=3))
    assert [str(w.message) for w in caught] == [
        "compile_step: mode='JAX' does not check 1 runtime assertion of the graph (JAX tracing removes "
        f"them): {step.skipped_assertions[0]!r}"
    ]
    assert step.skipped_assertions[0].startswith("apply_if_finite: 3 steps in a row had a value")


def test_other_warnings_of_the_conversion_are_passed_on(monkeypatch):
    from pytensor.link.jax import dispatch

    converting = dispatch.jax_funcify

    def warning_too(graph, **kwargs):
        warnings.warn("another warning", FutureWarning, stacklevel=2)
        return converting(graph, **kwargs)

    warning_too.register = converting.register

    monkeypatch.setattr(dispatch, "jax_funcify", warning_too)
    caught, _step = build_warnings(*static_problem())
    # PyTensor's JAX mode converts the graph once, compile_step once more: each says it
    assert [(w.category, str(w.message)) for w in caught] == [(FutureWarning, "another warning")] * 2


def test_a_mode_that_is_not_installed_is_a_clear_error(monkeypatch):
    loss, _params, inputs, built = problem()
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ValueError, match=r"^compile_step: mode='JAX' needs jax, which is not installed"):
        updates.compile_step(inputs, loss, built, mode="JAX")


def test_a_param_whose_shape_changed_is_refused():
    loss, params, inputs, built = problem("sgd")
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    params[1].set_value(np.zeros(3))
    with pytest.raises(
        ValueError, match=r"^compile_step: b now has shape \(3,\), but the step was compiled for \(2,\)"
    ):
        step(*data())


@pytest.mark.parametrize("rows", [None, 16], ids=["some shape unknown", "static shape"])
def test_inputs_already_on_the_device_go_straight_in(monkeypatch, rows):
    """A batch that is a JAX array is not copied through the host, nor put again where it is:
    the step gets its very buffer, and trains as with NumPy inputs."""
    reference = run(problem, "JAX")
    loss, params, inputs, built = problem(rows=rows)
    step = updates.compile_step(inputs, loss, built, mode="JAX")
    batch = [jax.device_put(x) for x in data()]
    put = step._put_input(0, batch[0])
    assert put.unsafe_buffer_pointer() == batch[0].unsafe_buffer_pointer()
    losses = [float(step(*batch))]  # the params' first upload
    for variable in inputs:  # the host path converts through the type's filter
        monkeypatch.setattr(
            variable.type, "filter", lambda *a, **k: pytest.fail("an input went through NumPy")
        )
    monkeypatch.setattr(jax, "device_put", lambda *a, **k: pytest.fail("an input was put again"))
    losses += list(train(step, batch, STEPS - 1))
    monkeypatch.undo()
    step.sync()
    assert_same_run((losses, [p.get_value() for p in params], built.named_state()), reference)


def test_a_device_input_of_another_type_is_converted_or_refused_by_name():
    x = pt.tensor("x", dtype="float64", shape=(None, 3))
    w = pytensor.shared(np.ones(3), name="w")
    loss = ((x @ w) ** 2).sum()
    step = updates.compile_step([x], loss, updates.sgd(loss, [w], learning_rate=0.0), mode="JAX")
    exact = float(step(np.arange(6.0).reshape(2, 3)))
    assert float(step(jax.numpy.arange(6, dtype="int32").reshape(2, 3))) == exact  # converts without loss
    with pytest.raises(
        TypeError, match=r"^compile_step: input 0 \(x\) takes 2 dimensions, the JAX array has 1"
    ):
        step(jax.numpy.ones(3))
    with pytest.raises(TypeError, match=r"^compile_step: input 0 \(x\) takes the shape \(None, 3\), the JAX"):
        step(jax.numpy.ones((2, 4)))
    with jax.enable_x64(True):
        wide = jax.numpy.ones((2, 3), dtype="complex128")
    with pytest.raises(
        TypeError, match=r"^compile_step: input 0 \(x\) takes float64, got a JAX array of complex128"
    ):
        step(wide)


def test_results_may_stay_on_the_device():
    """results="device": the outputs are JAX arrays (the calls queue), equal to the host ones."""
    reference = run(problem, "JAX")
    loss, _, inputs, built = problem()
    step = updates.compile_step(inputs, [loss, loss * 2], built, mode="JAX", results="device")
    outputs = [step(*data()) for _ in range(STEPS)]
    assert all(isinstance(x, jax.Array) for pair in outputs for x in pair)
    assert_close(np.array([float(first) for first, _ in outputs]), reference[0])
    np.testing.assert_array_equal([float(b) for _, b in outputs], [2 * float(a) for a, _ in outputs])
    with pytest.raises(ValueError, match=r"^compile_step: results='device' needs mode='JAX', got mode=None"):
        updates.compile_step(inputs, loss, built, results="device")
    with pytest.raises(ValueError, match=r"^compile_step: results must be 'host' or 'device', got 'gpu'"):
        updates.compile_step(inputs, loss, built, mode="JAX", results="gpu")
