"""The public API is what the README documents, and every rule's docstring carries its equations."""

import ast
import inspect
import re
from pathlib import Path

import pytensor
import pytest
from registry import RULES

import updates

README = Path(__file__).parents[1] / "README.md"


def readme_api_names():
    section = README.read_text().split("## API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)


def test_all_is_the_readme_api_table():
    assert sorted(updates.__all__) == sorted(readme_api_names())
    assert all(hasattr(updates, name) for name in updates.__all__)


def test_every_rule_is_in_the_registry():
    rules = {name for name in updates.__all__ if "clear_nan" in (getattr(updates, name).__doc__ or "")}
    assert rules == {case.name for case in RULES}


@pytest.mark.parametrize("case", RULES, ids=str)
def test_rule_docstring_has_equations_references_and_example(case):
    doc = case.function.__doc__
    for part in (".. math::", "Parameters\n", "Returns\n", "Notes\n", "References\n", "Examples\n", ">>> "):
        assert part in doc, part
    assert "$" not in doc


@pytest.mark.parametrize("case", RULES, ids=str)
def test_readme_states_each_rules_defaults(case):
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{case.name}` |"))
    defaults = {
        name: p.default
        for name, p in inspect.signature(case.function).parameters.items()
        if name not in ("loss_or_grads", "params", "clear_nan")
    }
    stated = dict(pair.split("=") for pair in row.split("|")[2].strip().split(", "))
    assert {k: ast.literal_eval(v) for k, v in stated.items()} == defaults


def test_readme_python_examples_run():
    """The README's code blocks run as written (all but the PyMC one, which needs PyMC)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    runnable = [block for block in blocks if "pm." not in block]
    assert len(runnable) >= 2
    namespace = {}
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        for block in runnable:
            exec(block, namespace)
    assert isinstance(namespace["step_updates"], updates.Updates)
