"""Benchmark suite of ``updates``: optimizer step time and the start's cost, one command.

    python benchmarks/run.py [--quick] [--only step|share|device] [--repeats N] [--out PATH]
    python benchmarks/run.py --only device --device-platform gpu [--time-budget S]   # gpu.sh

Every measurement runs in a fresh process (``benchmarks/cases.py``) under a timeout; this script
chooses what to measure, collects the results, prints the markdown tables and writes the JSON
(``--out``) and the tables (the same path with ``.md``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cases import SHARE_RULES, STACK, THREAD_VARIABLES, TRAFFIC  # sets one thread each for the workers

HERE = Path(__file__).resolve().parent
PARTS = ("step", "share", "device")
CASES = HERE / "cases.py"
RULES = ("sgd", "momentum", "adam")
ITEMSIZE = {"float32": 4, "float64": 8}

# name: (params, elements per param, dtype); --quick keeps the names with small sizes.
WORKLOADS = {
    "big": (1, 2**24, "float32"),
    "big-f64": (1, 2**24, "float64"),
    "many": (256, 2**14, "float32"),
    "tiny": (1000, 10, "float32"),
}
QUICK_WORKLOADS = {
    "big": (1, 2**18, "float32"),
    "big-f64": (1, 2**18, "float64"),
    "many": (16, 2**10, "float32"),
    "tiny": (50, 10, "float32"),
}
IMPLEMENTATIONS = {  # name in cases.py: column title
    "updates-numba": "updates (Numba)",
    "updates-cvm": "updates (C VM)",
    "updates-cvm-nogc": "updates (C VM, no GC)",
    "per-param-numba": "per-param (Numba)",
    "per-param-cvm": "per-param (C VM)",
    "numpy-loop": "NumPy loop",
    "torch-foreach=False": "torch foreach=False",
    "torch-foreach=True": "torch foreach=True",
    "torch-fused": "torch fused",
}
# The per-parameter graph is compiled for one param only: over many params it takes minutes to
# hours (issue 3). Under Numba its first call JIT-compiles the whole graph in time growing faster
# than the node count (Adam over 100 params of shape (10,): 394 s and 11 GiB; over 256 params of
# 16k: past 6 GiB after minutes); the C VM rewrites the graph in time roughly quadratic in the
# nodes and compiles C code for it.
PER_PARAM_MAX_PARAMS = 1
# Numba's compile time grows faster than linearly with the number of arguments of a jitted
# function, and PyTensor passes every input and shared variable as one (two per param here): a
# trivial function of 129 arrays took 3.2 s to compile, of 513 arrays 37 s. The full run of
# 2026-11-22 timed out (> 600 s) for the fused step over 256 and 1000 params.
NUMBA_MAX_PARAMS = 64
NUMBA_REASON = "not run: Numba compile > 600 s for {n} params (2 arguments each; see the README)"
PER_PARAM_REASON = (
    "not run (compile): the per-parameter graph over {n} params takes minutes to hours to compile "
    "(Numba: first-call JIT growing faster than the node count; C VM: graph rewriting roughly "
    "quadratic in the nodes)"
)
STEP_SETTINGS = {"min_time_s": 0.2, "repeats": 5}
QUICK_MIN_TIME_S = 0.05
# The optimizer's share of the start (issue 10): mode -> P values; every rule of SHARE_MAIN at
# each, the model alone as the baseline; every rule and wrapper (SHARE_RULES) at SHARE_ALL_P.
# The C VM's own rewriting of the model takes minutes from P = 100 on (250 s cold).
SHARE_GRID = {"default": (10, 30, 100), "cvm": (10, 30), "jax": (10, 30, 100, 300)}
SHARE_MAIN = ("sgd", "momentum", "adam", STACK)
SHARE_ALL_P = 30
SHARE_JAX_LARGE = 1000  # JAX: Adam and the model alone also at this P


# The device step (issue 12): Adam on these workloads, each implementation in its own process,
# XLA on one thread as the others; then build + compile + first call on the probe model.
DEVICE_IMPLEMENTATIONS = {
    "updates-jax": "updates compile_step (JAX)",
    "updates-jax-input": "the same, gradients as device inputs",
    "pytensor-jax": "PyTensor JAX mode",
    "optax": "optax (jit, donated)",
    "torch-fused": "torch fused",
}
DEVICE_WORKLOADS = ("big", "many", "tiny")
DEVICE_START_P = (100, 1000)
DEVICE_START_IMPLEMENTATIONS = ("updates-jax", "pytensor-jax", "optax")
#: The virtual CPU devices the split state is measured over (on a GPU: the GPUs there are).
SHARD_CPU_DEVICES = 4
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"
# --device-platform: JAX_PLATFORMS of the workers (JAX fails rather than falling back to the CPU);
# cases.TORCH_DEVICE puts torch there too.
JAX_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}
# What each device implementation needs, by the parts of the probe (cases.measure_device_probe).
DEVICE_NEEDS = {
    "updates-jax": ("jax", "updates"),
    "updates-jax-input": ("jax", "updates"),
    "pytensor-jax": ("jax", "updates"),
    "optax": ("jax", "optax"),
    "torch-fused": ("torch",),
}
# Under --time-budget, a measurement is not started with less than this left.
MIN_CASE_S = 10.0

# -- running one measurement -----------------------------------------------------------------------


class Stopped(Exception):
    """SIGTERM arrived (``timeout``, the device tool's limit): the run ends with what it has."""


def stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def run_case(spec: dict, timeout: float, env: dict | None = None) -> dict:
    """Run ``cases.py`` on ``spec`` in a new process group; a timeout kills the group, and so
    does anything that stops this process meanwhile (Ctrl-C, SIGTERM): no worker outlives it."""
    command = [sys.executable, str(CASES), json.dumps(spec)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"status": "timeout", "timeout_s": timeout}
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    results = [line[len("RESULT ") :] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not results:
        return {"status": "error", "returncode": process.returncode, "stderr": stderr[-4000:]}
    return json.loads(results[-1])


def measure(args: argparse.Namespace, spec: dict, env: dict | None = None) -> dict:
    """:func:`run_case` under ``--compile-timeout``, cut to what is left of ``--time-budget``
    (a measurement that would start with less than MIN_CASE_S left is not run)."""
    timeout = args.compile_timeout
    if args.deadline is not None:
        left = args.deadline - time.monotonic()
        if left < MIN_CASE_S:
            return {"status": f"not run: out of time (--time-budget {args.time_budget:g} s)"}
        timeout = min(timeout, left)
    return run_case(spec, timeout, env)


def pytensor_env(folder: str) -> dict:
    """The environment with every compile cache of PyTensor and Numba inside ``folder``.

    PyTensor 3 keeps its Numba cache in ``base_compiledir/numba``, not in ``compiledir``: both
    move, and Numba's own cache (``NUMBA_CACHE_DIR``) too.
    """
    env = dict(os.environ)
    moved = ("base_compiledir=", "compiledir=")
    flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith(moved)]
    flags += [f"base_compiledir={folder}", f"compiledir={folder}/compiledir"]
    env["PYTENSOR_FLAGS"] = ",".join(flags)
    env["NUMBA_CACHE_DIR"] = f"{folder}/numba-cache"
    return env


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def describe(result: dict) -> str:
    if result["status"] == "ok":
        return "ok"
    if result["status"] == "error":
        return "ERROR\n" + result["stderr"]
    return result["status"]


# -- step benchmark --------------------------------------------------------------------------------


def skip_reason(impl: str, n_params: int, torch_available: bool) -> str | None:
    if impl.startswith("per-param") and n_params > PER_PARAM_MAX_PARAMS:
        return PER_PARAM_REASON.format(n=n_params)
    if impl == "updates-numba" and n_params > NUMBA_MAX_PARAMS:
        return NUMBA_REASON.format(n=n_params)
    if impl.startswith("torch") and not torch_available:
        return "not run: torch is not installed (pip install -e '.[torch]')"
    return None


def step_benchmark(args, workloads: dict, results: dict) -> None:
    """Bandwidth, then every implementation of every rule, per workload, into ``results["step"]``."""
    torch_available = importlib.util.find_spec("torch") is not None
    settings = {"min_time_s": args.min_time, "repeats": args.repeats}
    section = {"started": now(), "commit": git_commit(), "settings": settings, "workloads": {}}
    results["step"] = section
    with tempfile.TemporaryDirectory(prefix="updates-bench-") as cache:
        env = pytensor_env(cache)
        for name, (n_params, size, dtype) in workloads.items():
            entry = {"workload": name, "n_params": n_params, "size": size, "dtype": dtype}
            section["workloads"][name] = entry
            step_workload(args, env, entry, torch_available)
    section["finished"] = now()


def step_workload(args, env, entry: dict, torch_available: bool) -> None:
    """The bandwidth on arrays of the workload's total size, then each rule, into ``entry``."""
    n_params, size, dtype = entry["n_params"], entry["size"], entry["dtype"]
    base = {**entry, "repeats": args.repeats, "min_time": args.min_time}
    log(f"[step] {entry['workload']}: bandwidth")
    bandwidth = measure(args, {**base, "kind": "bandwidth", "size": n_params * size})
    entry.update(elements=n_params * size, bandwidth=bandwidth, rules={})
    args.save()
    speeds = [bandwidth[k]["gb_per_s"] for k in ("add", "triad")] if bandwidth["status"] == "ok" else []
    gb_per_s = max(speeds, default=None)
    given_up = {}  # impl: why it is not run for the next rules (it timed out on this workload)
    for rule in RULES:
        bytes_moved = TRAFFIC[rule] * n_params * size * ITEMSIZE[dtype]
        bound = bytes_moved / (gb_per_s * 1e9) if gb_per_s else None
        entry["rules"][rule] = {"bytes_moved": bytes_moved, "bound_s": bound, "results": {}}
        spec = {**base, "kind": "step", "rule": rule}
        step_rule(args, env, spec, entry["rules"][rule]["results"], torch_available, given_up)


def step_rule(args, env, spec: dict, results: dict, torch_available: bool, given_up: dict) -> None:
    """Every implementation of one rule on one workload (or the reason it is not run)."""
    for impl in args.impls:
        reason = skip_reason(impl, spec["n_params"], torch_available) or given_up.get(impl)
        if reason:
            results[impl] = {"status": reason}
            continue
        log(f"[step] {spec['workload']} {spec['rule']} {impl}")
        results[impl] = measure(args, {**spec, "impl": impl}, env)
        args.save()
        log(f"        {describe(results[impl])}")
        if results[impl]["status"] == "timeout":
            timeout = args.compile_timeout
            given_up[impl] = f"not run: timed out (> {timeout:g} s) with {spec['rule']} on this workload"


# -- the optimizer's share of the start ------------------------------------------------------------


def share_plan(args) -> list[dict]:
    """The (mode, P, rule) cells to measure: the model alone first in each (mode, P)."""
    grid = {"default": (10,)} if args.quick else SHARE_GRID
    if args.share_modes:
        grid = {mode: grid[mode] for mode in args.share_modes.split(",")}
    if importlib.util.find_spec("jax") is None:
        grid.pop("jax", None)
    if args.share_rules:  # these rows only, beside Adam's, in the default mode at SHARE_ALL_P
        rules = ("none", *dict.fromkeys(("adam", *args.share_rules)))
        return [{"mode": "default", "n_params": SHARE_ALL_P, "rule": rule} for rule in rules]
    plan = []
    for mode, counts in grid.items():
        for n_params in counts:
            rules = SHARE_MAIN
            if mode == "default" and n_params == SHARE_ALL_P and not args.quick:
                rules = (*dict.fromkeys((*SHARE_MAIN, *SHARE_RULES)),)
            plan += [{"mode": mode, "n_params": n_params, "rule": rule} for rule in ("none", *rules)]
        if mode == "jax" and not args.quick:
            plan += [{"mode": mode, "n_params": SHARE_JAX_LARGE, "rule": r} for r in ("none", "adam")]
    return plan


def share_benchmark(args, results: dict) -> None:
    """Cold and warm start, and the warm step, of each cell of :func:`share_plan`."""
    section = {"started": now(), "commit": git_commit(), "runs": []}
    results["share"] = section
    for cell in share_plan(args):
        run = dict(cell)
        section["runs"].append(run)
        spec = {"kind": "share", **cell}
        with tempfile.TemporaryDirectory(prefix="updates-share-") as cache:
            env = pytensor_env(cache)
            for state in ("cold", "warm"):
                log(f"[share] {cell['mode']} P={cell['n_params']} {cell['rule']} {state}")
                run[state] = measure(args, spec, env)
                args.save()
                log(f"        {describe(run[state])}")
                if run[state]["status"] != "ok":
                    break
    section["finished"] = now()


def share_markdown(section: dict, rules: tuple[str, ...] | None = None) -> str:
    """The share table; ``rules``: only these rows (e.g. SHARE_MAIN, for the project's README)."""
    runs = {(r["mode"], r["n_params"], r["rule"]): r for r in section["runs"]}
    rows = []
    for (mode, n_params, rule), run in runs.items():
        if rule == "none" or (rules is not None and rule not in rules):
            continue
        alone = runs.get((mode, n_params, "none"), {})
        cells = [mode, str(n_params), rule]
        for state in ("cold", "warm"):
            mine, base = result_of(run, state), result_of(alone, state)
            cells += [total_cell(mine), ratio(mine.get("total_s"), base.get("total_s"))]
        mine, base = result_of(run, "warm"), result_of(alone, "warm")
        cells += [fmt_time(mine.get("median_s")), ratio(mine.get("median_s"), base.get("median_s"))]
        adam = runs.get((mode, n_params, "adam"), {})
        cold, adam_cold = result_of(run, "cold"), result_of(adam, "cold")
        cells += [ratio(cold.get("total_s"), adam_cold.get("total_s"))]
        cells += [ratio(mine.get("median_s"), result_of(adam, "warm").get("median_s"))]
        cells.insert(3, total_cell(result_of(alone, "cold")))
        rows.append(cells)
    header = ["mode", "P", "rule", "model alone cold", "cold", "cold share", "warm", "warm share"]
    return "\n\n".join(
        [
            "### The optimizer's share of the start (model: sum_i sum((p_i - x)²), P float64 params of"
            " shape (10,); share = time with the optimizer / time of the model alone)",
            table([*header, "step", "step share", "cold / Adam's", "step / Adam's"], rows),
        ]
    )


# -- the device step and start (issue 12) ----------------------------------------------------------


def device_env(platform: str, cache: str) -> dict:
    """The workers' environment on ``platform``: JAX there only, XLA's CPU on one thread."""
    env = {**pytensor_env(cache), "JAX_PLATFORMS": JAX_PLATFORMS[platform]}
    if platform == "cpu":
        env["XLA_FLAGS"] = ONE_THREAD_XLA
    return env


def device_missing(probe: dict, impl: str, platform: str) -> str | None:
    """Why ``impl`` cannot run by the probe's findings (None: it can)."""
    if probe["status"] != "ok":
        return f"not run: the probe of the {platform} failed ({describe(probe).splitlines()[-1]})"
    for part in DEVICE_NEEDS[impl]:
        if not probe[part]["ok"]:
            return f"not run: {part} is missing or unusable on the {platform} ({probe[part]['error']})"
    return None


def device_benchmark(args, workloads: dict, results: dict) -> None:
    """What the platform offers (the probe), then Adam's step time per implementation and
    workload, then the start at DEVICE_START_P; each implementation that cannot run there is
    recorded as not run, with the reason."""
    platform = args.device_platform
    section = {"started": now(), "commit": git_commit(), "platform": platform, "workloads": {}, "start": {}}
    results["device"] = section
    with tempfile.TemporaryDirectory(prefix="updates-device-") as cache:
        env = device_env(platform, cache)
        log(f"[device] probe of the {platform}")
        probe = section["probe"] = measure(args, {"kind": "device-probe", "platform": platform}, env)
        args.save()
        log(f"        {describe(probe)}")
        for name in DEVICE_WORKLOADS:
            n_params, size, dtype = workloads[name]
            entry = {"workload": name, "n_params": n_params, "size": size, "dtype": dtype, "results": {}}
            section["workloads"][name] = entry
            spec = {
                **entry,
                "kind": "step",
                "rule": "adam",
                "repeats": args.repeats,
                "min_time": args.min_time,
                "platform": platform,
            }
            del spec["results"]
            for impl in DEVICE_IMPLEMENTATIONS:
                missing = device_missing(probe, impl, platform)
                if missing:
                    entry["results"][impl] = {"status": missing}
                    continue
                log(f"[device] {name} {impl}")
                entry["results"][impl] = measure(args, {**spec, "impl": impl}, env)
                args.save()
                log(f"        {describe(entry['results'][impl])}")
        device_shard(args, workloads, section, probe, env)
        for n_params in (10,) if args.quick else DEVICE_START_P:
            row = section["start"][str(n_params)] = {}
            for impl in DEVICE_START_IMPLEMENTATIONS:
                missing = device_missing(probe, impl, platform)
                if missing:
                    row[impl] = {"status": missing}
                    continue
                log(f"[device] start P={n_params} {impl}")
                spec = {"kind": "device-start", "impl": impl, "n_params": n_params}
                row[impl] = measure(args, spec, env)
                args.save()
                log(f"        {describe(row[impl])}")
    section["finished"] = now()


def device_shard(args, workloads: dict, section: dict, probe: dict, env: dict) -> None:
    """Adam on the workload "many" over all the devices, the state replicated and split
    (``shard_state``); on the CPU, over SHARD_CPU_DEVICES virtual devices."""
    n_params, size, dtype = workloads["many"]
    spec = {"kind": "device-shard", "workload": "many", "n_params": n_params, "size": size, "dtype": dtype}
    spec.update(repeats=args.repeats, min_time=args.min_time)
    missing = device_missing(probe, "updates-jax", args.device_platform)
    if missing:
        section["shard"] = {"status": missing, **spec}
        return
    if args.device_platform == "cpu":
        devices = f"--xla_force_host_platform_device_count={SHARD_CPU_DEVICES}"
        env = {**env, "XLA_FLAGS": f"{devices} {env.get('XLA_FLAGS', '')}".strip()}
    log("[device] the state split over the devices")
    section["shard"] = {**measure(args, spec, env), **spec}
    args.save()
    log(f"        {describe(section['shard'])}")


def shard_markdown(shard: dict) -> str:
    """The table of the split state: bytes per device and step time, replicated and split."""
    title = f"### Adam on {workload_label(shard)}, data-parallel: the optimizer state split over the devices"
    if shard.get("status") != "ok":
        return f"{title}\n\n{short_status(shard)}"
    forms = shard["forms"]
    rows = [
        [
            form,
            fmt_bytes(result["bytes"]["params"]),
            fmt_bytes(result["bytes"]["state"]),
            fmt_time(result["median_s"]),
            ratio(result["median_s"], forms["replicated"]["median_s"]),
        ]
        for form, result in forms.items()
    ]
    header = ["state", "params bytes per device", "state bytes per device", "step", "/ replicated"]
    error = shard["max_rel_error"]
    note = f"{shard['devices']} devices; the params after 5 steps, split to replicated: {error:.1e} relative"
    return f"{title} ({note})\n\n{table(header, rows)}"


def device_title(section: dict) -> str:
    """Where the device table ran: the CPU on one thread, or the GPU by name, and what ran there."""
    probe = section.get("probe") or {}
    if section.get("platform", "cpu") == "cpu":
        where = "a JAX device (CPU, one thread)"
    else:
        names = [*probe.get("jax", {}).get("devices", []), probe.get("torch", {}).get("device")]
        gpu = next((n.split(":", 1)[-1] for n in names if n and not n.startswith("cpu")), "unknown")
        where = f"a GPU ({gpu})"
    found = []
    for part, label in (("jax", "JAX"), ("optax", "optax"), ("torch", "torch")):
        if probe.get(part, {}).get("ok"):
            found.append(f"{label} {probe[part]['version']}")
    if probe.get("updates", {}).get("ok"):
        found.append(f"PyTensor {probe['updates']['pytensor']}")
    return f"Adam on {where}: step time, median of repeats" + (f" ({', '.join(found)})" if found else "")


def device_markdown(section: dict) -> str:
    impls = list(DEVICE_IMPLEMENTATIONS)
    rows = []
    for w in section["workloads"].values():
        found = {impl: result_of(w["results"], impl) for impl in impls}
        times = {impl: r.get("median_s") if r["status"] == "ok" else None for impl, r in found.items()}
        cells = [fmt_time(t) if t else short_status(found[impl]) for impl, t in times.items()]
        mine = times["updates-jax"]
        ratios = [ratio(mine, times[other]) for other in ("optax", "pytensor-jax", "torch-fused")]
        rows.append([workload_label(w), *cells, *ratios, ratio(times["updates-jax-input"], times["optax"])])
    header = [
        "workload",
        *DEVICE_IMPLEMENTATIONS.values(),
        "/ optax",
        "/ PyTensor JAX",
        "/ torch fused",
        "device inputs / optax",
    ]
    start_rows = []
    for n_params, row in section["start"].items():
        cells = [total_cell(result_of(row, impl)) for impl in DEVICE_START_IMPLEMENTATIONS]
        start_rows.append([n_params, *cells])
    return "\n\n".join(
        [
            f"### {device_title(section)}",
            table(header, rows),
            *([shard_markdown(section["shard"])] if "shard" in section else []),
            "### Build, compile and first call of Adam on the probe model (P float64 params of shape (10,))",
            table(["P", "updates compile_step (JAX)", "PyTensor JAX mode", "optax"], start_rows),
        ]
    )


# -- machine, versions, output ---------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as lines:
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    memory = None
    with open("/proc/meminfo") as lines:
        memory = next(
            (int(line.split()[1]) // 1024**2 for line in lines if line.startswith("MemTotal")), None
        )
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("numpy", "pytensor", "numba", "torch", "jax", "jaxlib", "optax", "pytensor-updates"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["updates_commit"] = git_commit()
    return found


def git_commit() -> str | None:
    """The checked-out commit of the package (``-dirty`` if tracked files are modified)."""
    command = ["git", "-C", str(HERE), "describe", "--always", "--dirty"]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip() or None


def keep_previous(results: dict, section: str, path: Path) -> None:
    """Keep ``section`` from the earlier output at ``path`` if it is of the same kind (quick or full)."""
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("settings", {}).get("quick") == results["settings"]["quick"]:
            results[section] = previous.get(section)


def write_results(results: dict, path: Path) -> str:
    """Write the JSON and the markdown tables (returned) next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    tables = markdown(results)
    path.with_suffix(".md").write_text(tables)
    return tables


# -- markdown --------------------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_size(n: int) -> str:
    for suffix, scale in (("M", 2**20), ("k", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


PENDING = {"status": "not run: the run stopped before this measurement"}


def result_of(container: dict, key: str) -> dict:
    """One measurement's result, or PENDING if a stopped run never got to it."""
    return container.get(key) or PENDING


def short_status(result: dict) -> str:
    """A table cell for a measurement that has no time (its full reason goes below the table)."""
    status = result["status"]
    if status == "timeout":
        return f"timeout (> {result['timeout_s']:g} s)"
    if status.startswith("not run"):
        markers = {"(compile)": " (compile)", "timed out": " (timeout)", "out of time": " (time)"}
        return "not run" + next((label for m, label in markers.items() if m in status), "")
    return status.upper()


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def workload_label(w: dict) -> str:
    return f"{w['workload']} ({w['n_params']} x {fmt_size(w['size'])} {w['dtype']})"


def step_rows(step: dict, cell) -> list[list[str]]:
    rows = []
    for w in step["workloads"].values():
        for rule, r in w.get("rules", {}).items():
            fused = r["results"].get("torch-fused", {}).get("median_s")
            cells = []
            for impl in IMPLEMENTATIONS:
                result = result_of(r["results"], impl)
                ok = result["status"] == "ok"
                cells.append(cell(result["median_s"], r["bound_s"], fused) if ok else short_status(result))
            rows.append([workload_label(w), rule, *cells])
    return rows


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def step_markdown(step: dict) -> str:
    columns = ["workload", "rule", *IMPLEMENTATIONS.values()]
    times = []
    for w in step["workloads"].values():
        for rule, r in w.get("rules", {}).items():
            results = [result_of(r["results"], impl) for impl in IMPLEMENTATIONS]
            cells = [fmt_time(x["median_s"]) if x["status"] == "ok" else short_status(x) for x in results]
            times.append([workload_label(w), rule, fmt_time(r["bound_s"]), *cells])
    bandwidth = []
    for w in step["workloads"].values():
        b = result_of(w, "bandwidth")
        if b["status"] == "ok":
            speeds = [f"{b[k]['gb_per_s']:.1f} GB/s ({fmt_time(b[k]['median_s'])})" for k in ("add", "triad")]
        else:
            speeds = [short_status(b)] * 2
        bandwidth.append([workload_label(w), f"{w['n_params'] * w['size']:,}", *speeds])
    repeats, min_time = step["settings"]["repeats"], step["settings"]["min_time_s"]
    return "\n\n".join(
        [
            f"### Step time (median of {repeats} repeats, each >= {min_time} s of calls)",
            table([columns[0], columns[1], "bandwidth bound", *columns[2:]], times),
            "### Step time / bandwidth bound",
            table(columns, step_rows(step, lambda t, bound, fused: ratio(t, bound))),
            "### Step time / torch fused",
            table(columns, step_rows(step, lambda t, bound, fused: ratio(t, fused))),
            "### Memory bandwidth (NumPy, one thread; the bound uses the faster of the two)",
            table(["workload", "elements", "add a += b", "triad a = b + s·c"], bandwidth),
        ]
    )


def total_cell(result: dict) -> str:
    return fmt_time(result["total_s"]) if result["status"] == "ok" else short_status(result)


def notes(results: dict) -> list[str]:
    """The full text of every reason a measurement was not run or failed, once each."""
    found = []
    for result in all_results(results):
        status = result["status"]
        if status.startswith("not run") or status == "error":
            text = status if status != "error" else "ERROR: " + result["stderr"].strip().splitlines()[-1]
            if text not in found:
                found.append(text)
    return found


def all_results(results: dict):
    if results.get("step"):
        for w in results["step"]["workloads"].values():
            yield result_of(w, "bandwidth")
            for r in w.get("rules", {}).values():
                yield from r["results"].values()
    if results.get("share"):
        for run in results["share"]["runs"]:
            yield result_of(run, "cold")
            yield result_of(run, "warm")
    if results.get("device"):
        if results["device"].get("probe"):
            yield results["device"]["probe"]
        for w in results["device"]["workloads"].values():
            yield from w["results"].values()
        for row in results["device"]["start"].values():
            yield from row.values()


def failures(results: dict) -> list[str]:
    return [text for text in notes(results) if text.startswith("ERROR")]


def markdown(results: dict) -> str:
    m, v = results["machine"], results["versions"]
    shown = ("python", "numpy", "pytensor", "numba", "torch")
    header = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}; one thread each.",
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in shown if v.get(k)) + ".",
    ]
    parts = []
    for name, render in (("step", step_markdown), ("share", share_markdown), ("device", device_markdown)):
        if results.get(name):
            section = results[name]
            commit = f" at commit {section['commit']}" if section.get("commit") else ""
            stopped = "" if section.get("finished") else " (stopped before the end)"
            header.append(f"{name.capitalize()} run started {section['started']}{commit}{stopped}.")
            parts.append(render(results[name]))
    lines = notes(results)
    if lines:
        parts.append("Notes:\n\n" + "\n".join(f"- {line}" for line in lines))
    return "\n\n".join([" ".join(header), *parts]) + "\n"


README_START, README_END = "<!-- results: start -->", "<!-- results: end -->"


def update_readme(tables: str) -> None:
    """Put the tables of a full run between the markers of benchmarks/README.md."""
    readme = HERE / "README.md"
    text = readme.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        tail = rest.split(README_END, 1)[1]
        readme.write_text(f"{head}{README_START}\n\n{tables}\n{README_END}{tail}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke run")
    parser.add_argument("--only", choices=PARTS, help="run one part only (device: needs jax, optax)")
    parser.add_argument("--repeats", type=int, help="timed repeats per step measurement (default 5; quick 3)")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default benchmarks/results/latest.json; quick.json)"
    )
    parser.add_argument(
        "--compile-timeout", type=float, default=600.0, help="seconds per measurement process"
    )
    parser.add_argument("--workloads", help="comma-separated step workloads to run (default: all)")
    parser.add_argument(
        "--impls", help=f"comma-separated step implementations (default all: {','.join(IMPLEMENTATIONS)})"
    )
    parser.add_argument("--share-modes", help="share table modes: default,cvm,jax (default all installed)")
    parser.add_argument(
        "--share-rules",
        type=lambda text: text.split(","),
        help=f"share table: only these rules (and Adam), default mode, P = {SHARE_ALL_P}",
    )
    parser.add_argument(
        "--device-platform",
        choices=tuple(JAX_PLATFORMS),
        default="cpu",
        help="where the device part runs JAX and torch (gpu: JAX_PLATFORMS=cuda, torch on cuda)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        help="seconds for the whole run: measurements past it are recorded as not run (default: none)",
    )
    args = parser.parse_args(argv)
    args.deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    if args.repeats is None:
        args.repeats = 3 if args.quick else STEP_SETTINGS["repeats"]
    args.min_time = QUICK_MIN_TIME_S if args.quick else STEP_SETTINGS["min_time_s"]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.impls = args.impls.split(",") if args.impls else list(IMPLEMENTATIONS)
    unknown = set(args.impls) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"--impls: unknown {', '.join(sorted(unknown))}; known: {', '.join(IMPLEMENTATIONS)}")
    if args.out is None:
        args.out = HERE / "results" / ("quick.json" if args.quick else "latest.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = {
        "quick": args.quick,
        "only": args.only,
        "device_platform": args.device_platform,
        "time_budget_s": args.time_budget,
        "threads": {v: os.environ[v] for v in THREAD_VARIABLES},
    }
    results = {
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        **dict.fromkeys(PARTS),
    }
    if args.only:  # the parts not run now stay as the last run left them
        for part in PARTS:
            if part != args.only:
                keep_previous(results, part, args.out)
    # Saved after every measurement, so that a stopped run keeps what it measured.
    args.save = lambda: write_results(results, args.out)
    signal.signal(signal.SIGTERM, stop)
    stopped = False
    try:
        if args.only in (None, "step"):
            workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
            if args.workloads:
                workloads = {name: workloads[name] for name in args.workloads.split(",")}
            step_benchmark(args, workloads, results)
        if args.only in (None, "share"):
            share_benchmark(args, results)
        # A full run skips the device part without JAX; --only device records what is missing.
        if args.only == "device" or (args.only is None and importlib.util.find_spec("jax") is not None):
            device_benchmark(args, QUICK_WORKLOADS if args.quick else WORKLOADS, results)
    except (Stopped, KeyboardInterrupt) as reason:
        log(f"stopped ({type(reason).__name__} {reason}): the tables hold what was measured")
        stopped = True
    tables = write_results(results, args.out)
    print(tables)
    if args.out.resolve() == (HERE / "results" / "latest.json").resolve():
        update_readme(tables)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    problems = failures(results)
    for problem in problems:
        log(f"FAILED: {problem}")
    return 1 if problems or stopped else 0


if __name__ == "__main__":
    sys.exit(main())
