"""The measurements of the benchmark suite, each run alone in a fresh process by ``run.py``.

``python benchmarks/cases.py '<json spec>'`` runs one measurement and prints ``RESULT <json>`` as
its last line. A spec's ``kind`` is one of

- ``bandwidth``: NumPy in-place add and triad on arrays of a workload's total size;
- ``step``: one optimizer step implementation on one workload, checked against a NumPy
  reference, then timed;
- ``share``: ``pytensor.function``, first-call and step time of a small model, alone or trained
  by one rule (the optimizer's share of the start);
- ``device-start``: build, compile and first call of Adam on that model on a JAX device;
- ``device-shard``: Adam through ``updates.compile_step`` over every JAX device, the state
  replicated and split (``shard_state=True``): bytes per device and step time;
- ``device-probe``: what the device benchmark can use here (JAX and its devices, optax, torch
  and CUDA, PyTensor and ``updates``), with the reason of each that is missing.

Each runs in its own process so that a compile that never ends can be killed (the caller's
timeout), memory is returned between measurements, and the compile caches are what the caller
says (cold or warm).
"""

# ruff: noqa: E402  (the thread settings must precede the numerical imports)
from __future__ import annotations

import os

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
)
for _variable in THREAD_VARIABLES:
    os.environ[_variable] = "1"

import contextlib
import functools
import gc
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# Hyperparameters of every measurement (Lasagne's names).
HYPER = {
    "sgd": {"learning_rate": 1e-3},
    "momentum": {"learning_rate": 1e-3, "momentum": 0.9},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
# Arrays read plus arrays written by one step, per element (param, grad and state).
TRAFFIC = {"sgd": 3, "momentum": 5, "adam": 7}
RTOL = {"float32": 1e-5, "float64": 1e-12}
CHECK_STEPS = 2  # steps compared with the reference before timing (the second one reads the state)


# -- NumPy reference (Lasagne's formulas, float64) -------------------------------------------------


def reference_params(rule: str, params, grads, steps: int, torch_eps: bool = False) -> list[list[np.ndarray]]:
    """The params after each of ``steps`` steps from zero state, computed in float64.

    ``torch_eps`` adds Adam's epsilon to the root of the bias-corrected second moment (torch.optim)
    instead of to the root of the raw one (Lasagne).
    """
    h = SimpleNamespace(**HYPER[rule])
    p = [x.astype(np.float64) for x in params]
    g = [x.astype(np.float64) for x in grads]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    trajectory = []
    for t in range(1, steps + 1):
        for i in range(len(p)):
            if rule == "sgd":
                p[i] = p[i] - h.learning_rate * g[i]
            elif rule == "momentum":
                x = h.momentum * v[i] + (p[i] - h.learning_rate * g[i])
                v[i], p[i] = x - p[i], x
            else:
                m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i]
                v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] ** 2
                if torch_eps:
                    denominator = np.sqrt(v[i] / (1 - h.beta2**t)) + h.epsilon
                    p[i] = p[i] - h.learning_rate / (1 - h.beta1**t) * m[i] / denominator
                else:
                    alpha = h.learning_rate * math.sqrt(1 - h.beta2**t) / (1 - h.beta1**t)
                    p[i] = p[i] - alpha * m[i] / (np.sqrt(v[i]) + h.epsilon)
        trajectory.append([x.copy() for x in p])
    return trajectory


def max_relative_error(actual, expected) -> float:
    """Largest ``|actual - expected| / (1 + |expected|)`` over all params (<= rtol passes)."""
    worst = 0.0
    for a, e in zip(actual, expected):
        error = np.abs(np.asarray(a, dtype=np.float64) - e) / (1.0 + np.abs(e))
        worst = max(worst, float(error.max()))
    return worst


# -- implementations: each returns (step, read_params, info) ---------------------------------------


def updates_step(rule: str, params, grads, mode: str | None, per_param: bool):
    """The step compiled by ``updates``: fused (default) or the per-parameter graph."""
    import pytensor

    import updates

    if mode == "CVM_NOGC":  # the C VM without its garbage collection (docs/benchmarks.md)
        mode = pytensor.compile.mode.Mode(linker="cvm_nogc", optimizer="fast_run")
    shared = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(params)]
    # The fixed gradients live in shared variables, as torch's sit in .grad: a real step computes
    # them inside the graph and does not pass them in as 1000 arguments either.
    fixed = [pytensor.shared(g, name=f"g{i}") for i, g in enumerate(grads)]
    with updates.per_parameter(per_param):
        step_updates = getattr(updates, rule)(fixed, shared, **HYPER[rule])
    start = time.perf_counter()
    function = pytensor.function([], [], updates=step_updates, mode=mode)
    info = {"compile_s": time.perf_counter() - start, "linker": type(function.maker.linker).__name__}
    function.trust_input = True

    def step():
        function()

    return step, lambda: [s.get_value(borrow=True) for s in shared], info


def numpy_step(rule: str, params, grads):
    """Plain NumPy: per param, in-place ufuncs with ``out=`` and preallocated temporaries."""
    h = SimpleNamespace(**HYPER[rule])
    p = [x.copy() for x in params]
    tmp = [np.empty_like(x) for x in params]
    m = [np.zeros_like(x) for x in params]
    v = [np.zeros_like(x) for x in params]
    counter = [0]

    def sgd():
        for pi, gi, ti in zip(p, grads, tmp):
            np.multiply(gi, h.learning_rate, out=ti)
            np.subtract(pi, ti, out=pi)

    def momentum():  # v <- mu*v - lr*g; p <- p + v (Lasagne's form up to rounding)
        for pi, gi, ti, vi in zip(p, grads, tmp, v):
            np.multiply(vi, h.momentum, out=vi)
            np.multiply(gi, h.learning_rate, out=ti)
            np.subtract(vi, ti, out=vi)
            np.add(pi, vi, out=pi)

    def adam():
        counter[0] += 1
        t = counter[0]
        alpha = h.learning_rate * math.sqrt(1 - h.beta2**t) / (1 - h.beta1**t)
        for pi, gi, ti, mi, vi in zip(p, grads, tmp, m, v):
            np.multiply(mi, h.beta1, out=mi)
            np.multiply(gi, 1 - h.beta1, out=ti)
            np.add(mi, ti, out=mi)
            np.multiply(vi, h.beta2, out=vi)
            np.multiply(gi, gi, out=ti)
            np.multiply(ti, 1 - h.beta2, out=ti)
            np.add(vi, ti, out=vi)
            np.sqrt(vi, out=ti)
            np.add(ti, h.epsilon, out=ti)
            np.divide(mi, ti, out=ti)
            np.multiply(ti, alpha, out=ti)
            np.subtract(pi, ti, out=pi)

    return {"sgd": sgd, "momentum": momentum, "adam": adam}[rule], lambda: p, {}


def torch_step(rule: str, params, grads, options: dict, device: str = "cpu"):
    """``torch.optim`` with ``options`` (foreach / fused), one thread; on ``device`` ("cuda": the
    params and gradients on the GPU, each step waited for)."""
    import torch

    torch.set_num_threads(1)
    tensors = [torch.tensor(x, device=device, requires_grad=True) for x in params]
    for tensor, g in zip(tensors, grads):
        tensor.grad = torch.from_numpy(g).to(device)
    h = SimpleNamespace(**HYPER[rule])
    if rule == "adam":
        betas = (h.beta1, h.beta2)
        optimizer = torch.optim.Adam(tensors, lr=h.learning_rate, betas=betas, eps=h.epsilon, **options)
    else:
        momentum = h.momentum if rule == "momentum" else 0.0
        optimizer = torch.optim.SGD(tensors, lr=h.learning_rate, momentum=momentum, **options)
    info = {"torch": torch.__version__, "device": device}
    if device == "cpu":
        return optimizer.step, lambda: [x.detach().numpy() for x in tensors], info
    info["device"] = f"{device}:{torch.cuda.get_device_name(device)}"

    def step():
        optimizer.step()
        torch.cuda.synchronize(device)

    return step, lambda: [x.detach().cpu().numpy() for x in tensors], info


def jax_device() -> str:
    """JAX's default device, as ``platform:kind`` (``gpu:NVIDIA H100 80GB HBM3``, ``cpu:cpu``)."""
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def updates_jax_step(rule: str, params, grads, device_inputs: bool = False):
    """``updates.compile_step(mode="JAX")``: params and state on the device, donated, in place.
    The gradients are shared variables uploaded once, or with ``device_inputs`` inputs that are
    already JAX arrays on the device (a prefetched batch, another jitted function's output),
    which go straight in, as optax's do."""
    import jax
    import pytensor
    import pytensor.tensor as pt

    import updates

    shared = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(params)]
    if device_inputs:
        symbolic = [pt.tensor(f"g{i}", dtype=g.dtype, shape=g.shape) for i, g in enumerate(grads)]
        inputs, values = symbolic, [jax.device_put(g) for g in grads]
    else:
        symbolic = [pytensor.shared(g, name=f"g{i}") for i, g in enumerate(grads)]  # uploaded once
        inputs, values = [], []
    start = time.perf_counter()
    built = getattr(updates, rule)(symbolic, shared, **HYPER[rule])
    function = updates.compile_step(inputs, [], built, mode="JAX")
    info = {"compile_s": time.perf_counter() - start, "jax": jax.__version__, "device": jax_device()}

    def step():
        function(*values)
        function.wait()

    def read():
        function.sync()
        return [s.get_value(borrow=True) for s in shared]

    return step, read, info


def pytensor_jax_step(rule: str, params, grads):
    """``pytensor.function(mode="JAX")``: every param and state array copied anew per call."""
    import jax
    import pytensor

    import updates

    shared = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(params)]
    fixed = [pytensor.shared(g, name=f"g{i}") for i, g in enumerate(grads)]
    start = time.perf_counter()
    function = pytensor.function(
        [], [], updates=getattr(updates, rule)(fixed, shared, **HYPER[rule]), mode="JAX"
    )
    info = {"compile_s": time.perf_counter() - start, "jax": jax.__version__, "device": jax_device()}

    def step():
        function()
        jax.block_until_ready([s.get_value(borrow=True) for s in shared])

    return step, lambda: [np.asarray(s.get_value(borrow=True)) for s in shared], info


def optax_step(rule: str, params, grads):
    """optax's rule under ``jax.jit``, params and state donated (its eps placement is torch's)."""
    import jax
    import optax

    h = SimpleNamespace(**HYPER[rule])
    if rule == "adam":
        transform = optax.adam(h.learning_rate, b1=h.beta1, b2=h.beta2, eps=h.epsilon)
    else:
        transform = optax.sgd(h.learning_rate, momentum=h.momentum if rule == "momentum" else None)
    state = {"params": [jax.device_put(x.copy()) for x in params]}
    state["opt"] = transform.init(state["params"])
    device_grads = [jax.device_put(g) for g in grads]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, grads):
        changes, opt_state = transform.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state

    def step():
        state["params"], state["opt"] = update(state["params"], state["opt"], device_grads)
        jax.block_until_ready(state["params"])

    info = {"optax": optax.__version__, "device": jax_device()}
    return step, lambda: [np.asarray(x) for x in state["params"]], info


IMPLEMENTATIONS = {
    "updates-jax": updates_jax_step,
    "updates-jax-input": lambda r, p, g: updates_jax_step(r, p, g, device_inputs=True),
    "pytensor-jax": pytensor_jax_step,
    "optax": optax_step,
    "updates-numba": lambda r, p, g: updates_step(r, p, g, mode=None, per_param=False),
    "updates-cvm": lambda r, p, g: updates_step(r, p, g, mode="CVM", per_param=False),
    "updates-cvm-nogc": lambda r, p, g: updates_step(r, p, g, mode="CVM_NOGC", per_param=False),
    "per-param-numba": lambda r, p, g: updates_step(r, p, g, mode=None, per_param=True),
    "per-param-cvm": lambda r, p, g: updates_step(r, p, g, mode="CVM", per_param=True),
    "numpy-loop": numpy_step,
    "torch-foreach=False": lambda r, p, g, device="cpu": torch_step(r, p, g, {"foreach": False}, device),
    "torch-foreach=True": lambda r, p, g, device="cpu": torch_step(r, p, g, {"foreach": True}, device),
    "torch-fused": lambda r, p, g, device="cpu": torch_step(r, p, g, {"fused": True}, device),
}
#: What ``platform`` ("cpu" or "gpu") of a device spec puts torch on; JAX's platform is the
#: caller's ``JAX_PLATFORMS``.
TORCH_DEVICE = {"cpu": "cpu", "gpu": "cuda"}


# -- timing ----------------------------------------------------------------------------------------


def _elapsed(function, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return time.perf_counter() - start


@contextlib.contextmanager
def _no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def time_calls(function, repeats: int, min_time: float) -> dict:
    """Median time of one call over ``repeats`` repeats, each of enough calls to last ``min_time``."""
    with _no_gc():
        function()
        calls = 1
        while (elapsed := _elapsed(function, calls)) < min_time / 10:
            calls *= 10
        calls = max(1, math.ceil(calls * min_time / elapsed))
        per_call = [_elapsed(function, calls) / calls for _ in range(repeats)]
    return {"median_s": statistics.median(per_call), "repeats_s": per_call, "calls_per_repeat": calls}


# -- the measurements ------------------------------------------------------------------------------


def workload_arrays(spec: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start params and fixed gradients of a workload (the same in every process for one seed)."""
    rng = np.random.default_rng(spec.get("seed", 0))
    shape = (spec["n_params"], spec["size"])
    params = rng.standard_normal(shape, dtype=spec["dtype"])
    grads = rng.standard_normal(shape, dtype=spec["dtype"])
    return [row.copy() for row in params], list(grads)


def measure_bandwidth(spec: dict) -> dict:
    """GB/s of NumPy's in-place add (a += b) and a STREAM-like triad (a = b + s*c, via out=).

    Bytes counted are the bytes NumPy moves: add reads a and b and writes a (3 arrays); the triad
    takes two passes (a = s*c, then a += b: 5 arrays).
    """
    n, dtype = spec["size"], np.dtype(spec["dtype"])
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(n, dtype=dtype) for _ in range(3))

    def add():
        np.add(a, b, out=a)

    def triad():
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)

    result = {"status": "ok"}
    for name, kernel, arrays in (("add", add, 3), ("triad", triad, 5)):
        timing = time_calls(kernel, spec["repeats"], spec["min_time"])
        timing["bytes"] = arrays * n * dtype.itemsize
        timing["gb_per_s"] = timing["bytes"] / timing["median_s"] / 1e9
        result[name] = timing
    return result


def measure_step(spec: dict) -> dict:
    """Check one implementation against the reference for CHECK_STEPS steps, then time it."""
    rule, impl = spec["rule"], spec["impl"]
    params, grads = workload_arrays(spec)
    torch_eps = impl.startswith(("torch", "optax"))  # epsilon added after the bias corrections
    expected = reference_params(rule, params, grads, CHECK_STEPS, torch_eps=torch_eps)
    options = {}
    if impl.startswith("torch") and "platform" in spec:
        options["device"] = TORCH_DEVICE[spec["platform"]]
    step, read_params, info = IMPLEMENTATIONS[impl](rule, params, grads, **options)
    del params
    rtol = RTOL[spec["dtype"]]
    errors = []
    for t, expected_params in enumerate(expected, start=1):
        start = time.perf_counter()
        step()
        if t == 1:
            info["first_call_s"] = time.perf_counter() - start
        errors.append(max_relative_error(read_params(), expected_params))
        if errors[-1] > rtol:
            raise AssertionError(
                f"{impl} {rule} on {spec['workload']}: params after step {t} differ from the NumPy "
                f"reference by {errors[-1]:.3g} (relative), tolerance {rtol:g}"
            )
    del expected
    timing = time_calls(step, spec["repeats"], spec["min_time"])
    return {"status": "ok", **timing, **info, "check_max_rel_error": max(errors), "check_rtol": rtol}


# -- the optimizer's share of the start (issue 10) ------------------------------------------------

#: The rules and wrappers of the share table: a rule of ``updates``, or ``wrapper(rule)``, or the
#: stack apply_if_finite(apply_ema(apply_weight_decay(adam))).
SHARE_RULES = (
    "sgd", "momentum", "nesterov_momentum", "adagrad", "rmsprop", "adadelta", "adam", "adamax",
    "amsgrad", "adamw", "nadam", "radam", "adabelief", "yogi", "lion", "rprop", "lamb", "lars",
    "adagrad_window", "esgd", "apply_momentum(sgd)", "apply_nesterov_momentum(sgd)",
    "apply_weight_decay(adam)", "apply_if_finite(adam)", "apply_lookahead(adam)", "apply_ema(adam)",
    "accumulate_gradients(adam)",
    # issue 21's rules that take vectors (muon and galore step matrices; dpsgd per-example gradients)
    "asgd", "adafactor", "sm3", "adopt", "ademamix", "simplified_ademamix", "schedule_free_sgd",
    "schedule_free_adamw", "prodigy", "dadapt_adamw", "cocob", "dog", "dowg", "sign_sgd", "signum",
    "adan", "novograd", "fromage", "optimistic_gradient_descent", "optimistic_adam", "madgrad",
    "acprop", "polyak_sgd", "momo", "momo_adam", "sophia", "sam(adam)", "mechanize(adam)",
)  # fmt: skip
STACK = "apply_if_finite(apply_ema(apply_weight_decay(adam)))"
#: Rules that take the loss, not its gradients.
NEEDS_LOSS = ("esgd", "polyak_sgd", "momo", "momo_adam", "sophia")


def share_updates(name: str, loss, grads: list, params: list):
    """The updates that ``name`` (a rule, ``wrapper(rule)`` or :data:`STACK`) builds."""
    import updates

    if name == STACK:
        wrapped = updates.apply_ema(updates.apply_weight_decay(updates.adam(grads, params)))
        return updates.apply_if_finite(wrapped, grads=grads)
    if name in NEEDS_LOSS:  # the loss's value or Hessian-vector products inside the step
        return getattr(updates, name)(loss, params)
    if "(" not in name:
        return getattr(updates, name)(grads, params)
    wrapper, rule = (getattr(updates, part) for part in name.rstrip(")").split("("))
    if wrapper in (updates.sam, updates.mechanize):  # rules over a base rule (sam: the loss)
        return wrapper(loss if wrapper is updates.sam else grads, params, rule=rule())
    if wrapper is updates.accumulate_gradients:
        return wrapper(rule, steps=4)(grads, params)
    if wrapper is updates.apply_if_finite:
        return wrapper(rule(grads, params), grads=grads)
    return wrapper(rule(grads, params))


def measure_share(spec: dict) -> dict:
    """Cold (or warm) start and step time of the probe model alone (``rule`` none: the loss and the
    gradients as outputs) or trained by one rule: P float64 params of shape (10,),
    loss = sum_i sum((p_i - x)**2), as ``../shared/bench/compile_probe.py`` (which also imports
    ``updates`` before its clock starts)."""
    import pytensor
    import pytensor.tensor as pt

    import updates  # noqa: F401

    params = [pytensor.shared(np.ones(10), name=f"p{i}") for i in range(spec["n_params"])]
    x = pt.dvector("x")
    loss = pt.add(*[((p - x) ** 2).sum() for p in params])
    mode = {"default": None, "cvm": "CVM", "jax": "JAX"}[spec["mode"]]
    start = time.perf_counter()
    grads = pytensor.grad(loss, params)
    if spec["rule"] == "none":
        function = pytensor.function([x], [loss, *grads], mode=mode)
    else:
        step_updates = share_updates(spec["rule"], loss, grads, params)
        function = pytensor.function([x], loss, updates=step_updates, mode=mode)
    compiled = time.perf_counter()
    x_value = np.zeros(10)
    function(x_value)
    first_call = time.perf_counter()
    timing = time_calls(lambda: function(x_value), 5, 0.05)
    return {
        "status": "ok",
        "compile_s": compiled - start,
        "first_call_s": first_call - compiled,
        "total_s": first_call - start,
        **timing,
        "nodes": len(function.maker.fgraph.apply_nodes),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_device_start(spec: dict) -> dict:
    """Build, compile and first call of Adam on the probe model of :func:`measure_share` (P float64
    params of shape (10,)) on a JAX device: ``updates.compile_step``, PyTensor's JAX mode, or optax
    (the loss and its gradient written in JAX, under ``jax.jit`` with donation)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    n, impl = spec["n_params"], spec["impl"]
    x_value = np.zeros(10)
    start = time.perf_counter()
    if impl == "optax":
        import optax

        transform = optax.adam(1e-3)

        def loss(params, x):
            return sum(((p - x) ** 2).sum() for p in params)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def update(params, opt_state, x):
            value, grads = jax.value_and_grad(loss)(params, x)
            changes, opt_state = transform.update(grads, opt_state, params)
            return optax.apply_updates(params, changes), opt_state, value

        params = [jax.numpy.ones(10) for _ in range(n)]
        state = transform.init(params)
        params, state, _value = update(params, state, x_value)
        jax.block_until_ready(params)
    else:
        import pytensor
        import pytensor.tensor as pt

        import updates

        params = [pytensor.shared(np.ones(10), name=f"p{i}") for i in range(n)]
        x = pt.dvector("x")
        loss = pt.add(*[((p - x) ** 2).sum() for p in params])
        built = updates.adam(loss, params)
        if impl == "updates-jax":
            function = updates.compile_step([x], loss, built, mode="JAX")
        else:
            function = pytensor.function([x], loss, updates=built, mode="JAX")
        function(x_value)
    return {"status": "ok", "total_s": time.perf_counter() - start}


def measure_device_shard(spec: dict) -> dict:
    """Adam on a workload through ``updates.compile_step`` over all the JAX devices (a one-axis
    mesh; no inputs, the gradients shared variables), the optimizer state replicated and split
    over the devices: the bytes of params and state on the most loaded device, the step time, and
    how far the split state's params are from the replicated ones' after the first 5 steps."""
    import jax
    import pytensor

    import updates

    params, grads = workload_arrays(spec)
    forms = {}
    for form, shard_state in (("replicated", False), ("sharded", True)):
        shared = [pytensor.shared(x.copy(), name=f"p{i}") for i, x in enumerate(params)]
        fixed = [pytensor.shared(g, name=f"g{i}") for i, g in enumerate(grads)]
        built = updates.adam(fixed, shared, **HYPER["adam"])
        step = updates.compile_step([], [], built, mode="JAX", mesh=jax.devices(), shard_state=shard_state)

        for _ in range(5):
            step()
        step.sync()
        checked = [s.get_value() for s in shared]

        def call(step=step):
            step()
            step.wait()

        timing = time_calls(call, spec["repeats"], spec["min_time"])
        forms[form] = {**timing, "bytes": step.bytes_per_device(), "params": checked}
    error = max_relative_error(forms["sharded"].pop("params"), forms["replicated"].pop("params"))
    return {"status": "ok", "devices": len(jax.devices()), "forms": forms, "max_rel_error": error}


def _found(check: Callable[[], dict]) -> dict:
    """``{"ok": True, **check()}``, or ``{"ok": False, "error": <its last line>}`` if it raises."""
    try:
        return {"ok": True, **check()}
    except Exception as error:  # an import that fails, a platform JAX cannot start
        text = f"{type(error).__name__}: {error}".strip().splitlines()
        return {"ok": False, "error": text[-1] if text else type(error).__name__}


def _probe_jax() -> dict:
    import jax

    try:
        devices = jax.devices()
    except Exception as error:  # jax 0.10 without a CUDA plugin: a bare AssertionError
        platforms = os.environ.get("JAX_PLATFORMS", "")
        why = f"{type(error).__name__} {error}".strip()
        raise RuntimeError(f"JAX_PLATFORMS={platforms!r}: no device ({why})") from error
    names = [f"{d.platform}:{d.device_kind}" for d in devices]
    return {"version": jax.__version__, "backend": jax.default_backend(), "devices": names}


def _probe_optax() -> dict:
    import optax

    return {"version": optax.__version__}


def _probe_torch(platform: str) -> dict:
    import torch

    found = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
    if platform == "gpu" and not found["cuda"]:
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    if found["cuda"]:
        found["device"] = torch.cuda.get_device_name()
    return found


def _probe_updates() -> dict:
    import pytensor

    import updates

    return {"pytensor": pytensor.__version__, "updates": str(Path(updates.__file__).parent)}


def measure_device_probe(spec: dict) -> dict:
    """What the device benchmark can use on ``spec["platform"]`` ("cpu" or "gpu"): each part is
    ``{"ok": bool, ...}`` with its versions and devices, or the error that stopped it. JAX on the
    platform the caller's ``JAX_PLATFORMS`` names; JAX that runs but only on the CPU does not
    count for "gpu"."""
    platform = spec["platform"]
    found = {"status": "ok", "platform": platform, "python": sys.version.split()[0]}
    found["jax"] = _found(_probe_jax)
    if found["jax"]["ok"] and platform == "gpu" and found["jax"]["backend"] != "gpu":
        found["jax"] = {"ok": False, "error": f"JAX sees no GPU, only {found['jax']['devices']}"}
    found["optax"] = _found(_probe_optax)
    found["torch"] = _found(lambda: _probe_torch(platform))
    found["updates"] = _found(_probe_updates)
    return found


MEASUREMENTS = {
    "bandwidth": measure_bandwidth,
    "step": measure_step,
    "share": measure_share,
    "device-start": measure_device_start,
    "device-shard": measure_device_shard,
    "device-probe": measure_device_probe,
}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    result = MEASUREMENTS[spec["kind"]](spec)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
