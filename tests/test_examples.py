"""Every script in examples/ runs, on the small budget of its --quick flag, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run_example(script: Path, *arguments: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script), "--quick", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# PyMC pins its own PyTensor: CI runs these in its 2.38 environment, where UPDATES_REQUIRE_PYMC
# is set and a missing PyMC is an error; elsewhere they are skipped without PyMC.
NEEDS_PYMC = {"pymc_advi.py"}


def test_there_are_examples():
    expected = {
        "digits.py",
        "train_mlp.py",
        "lasagne_port.py",
        "resume.py",
        "data_parallel.py",
        "full_batch.py",
    }
    expected |= NEEDS_PYMC
    assert expected <= {script.name for script in EXAMPLES}


@pytest.mark.parametrize(
    "script",
    [s for s in EXAMPLES if s.name not in ("digits.py", "data_parallel.py", "full_batch.py")],
    ids=lambda s: s.name,
)
def test_example_runs(script):
    if script.name in NEEDS_PYMC and "UPDATES_REQUIRE_PYMC" not in os.environ:
        pytest.importorskip("pymc")
    assert run_example(script).strip()


def test_resume_lands_where_the_uninterrupted_run_lands():
    output = run_example(ROOT / "examples" / "resume.py")
    assert "params bit for bit equal after resuming in a new process: True" in output
    assert "w.adam.m" in output and "w.apply_nesterov_momentum.velocity" in output


def test_data_parallel_trains_on_4_devices_as_on_one():
    output = run_example(ROOT / "examples" / "data_parallel.py")
    assert "4 devices: valid loss" in output
    difference = float(output.strip().splitlines()[-1].rsplit(":", 1)[1])
    assert difference < 1e-5  # float32, reassociated reductions


def test_full_batch_lbfgs_beats_adam_and_writes_the_plot(tmp_path):
    output = run_example(ROOT / "examples" / "full_batch.py", "--out", str(tmp_path))
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in output.splitlines() if " | " in line}
    for problem in ("digits", "rosenbrock 2-d", "rosenbrock 100-d"):
        lbfgs, adam = (float(cell.split(",")[0]) for cell in rows[problem])
        assert lbfgs < adam, problem
    assert (tmp_path / "full_batch.png").stat().st_size > 10_000


def test_digits_prints_the_table_and_writes_the_plot(tmp_path):
    output = run_example(ROOT / "examples" / "digits.py", "--out", str(tmp_path / "plots"))
    header = next(line for line in output.splitlines() if line.strip().startswith("rule |"))
    assert all(
        column in header for column in ("train loss", "valid loss", "train acc", "valid acc", "µs/step")
    )
    rows = [line.split("|") for line in output.splitlines() if line.count("|") == header.count("|")][1:]
    assert {row[0].strip() for row in rows} == {"nesterov_momentum", "adam"}
    for row in rows:
        train_loss, valid_loss, train_acc, valid_acc = (float(cell) for cell in row[1:5])
        assert 0 < train_loss < 2.3 and 0 < valid_loss < 2.3  # below chance level, log(10)
        assert 0.1 < valid_acc <= 1 and 0.1 < train_acc <= 1
    png = tmp_path / "plots" / "digits_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
