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
    rules = {name for name in updates.__all__ if hasattr(getattr(updates, name), "rule_for")}
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


TRANSFORMS_AND_WRAPPERS = [*updates.transforms.__all__, *updates.wrappers.__all__]


@pytest.mark.parametrize("name", TRANSFORMS_AND_WRAPPERS)
def test_readme_states_each_transforms_and_wrappers_signature(name):
    """Their rows list every argument: required ones bare, the others with their defaults."""
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{name}` |"))
    stated = row.split("|")[2].strip().split(", ")
    expected = []
    for argument, p in inspect.signature(getattr(updates, name)).parameters.items():
        if p.kind is p.VAR_POSITIONAL:
            expected.append(f"*{argument}")
        elif p.default is p.empty:
            expected.append(argument)
        else:
            expected.append(f"{argument}={p.default!r}")
    assert [s.replace("1e-4", "0.0001").replace("1e-2", "0.01") for s in stated] == expected


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


def _keyword_callables():
    """Every public function and schedule that takes a keyword argument, with its longest one."""
    for name in updates.__all__:
        function = getattr(updates, name)
        if not callable(function) or (
            inspect.isclass(function) and not issubclass(function, updates.schedules.Schedule)
        ):
            continue
        parameters = inspect.signature(function).parameters.values()
        keywords = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if keywords:
            yield name, max(keywords, key=len)


@pytest.mark.parametrize(("name", "keyword"), list(_keyword_callables()))
def test_a_misspelt_keyword_names_the_closest_one(name, keyword):
    """Rules, wrappers, transforms, schedules, state and the loop: `momentun=` says `momentum`."""
    misspelt = keyword[:-2] + keyword[-1] + keyword[-2]  # the last two letters swapped
    message = rf"^{name}: got an unexpected keyword argument '{misspelt}'; did you mean '{keyword}'\?$"
    with pytest.raises(TypeError, match=message):
        getattr(updates, name)(**{misspelt: 1})


def test_chain_composes_every_transform_and_the_wrappers_of_one_updates():
    """The functions a chain takes with keywords only: every rule, every gradient transform
    (and Lasagne's total_norm_constraint) and the wrappers of one updates dictionary."""
    awaits = {name: getattr(getattr(updates, name), "awaits", None) for name in updates.__all__}
    rules = {name for name in updates.__all__ if hasattr(getattr(updates, name), "rule_for")}
    # rules without an engine Rule: lbfgs, dpsgd (per-example gradients) and the rules over a
    # base rule (updates.meta)
    without = {"lbfgs", "dpsgd", *updates.meta.__all__}
    assert {name for name, first in awaits.items() if first == "loss_or_grads"} == {*rules, *without}
    assert {name for name, first in awaits.items() if first in ("grads", "tensor_vars")} == {
        *updates.transforms.__all__,
        "total_norm_constraint",
        "differentially_private_aggregate",  # of per-example gradients
    }
    assert {name for name, first in awaits.items() if first == "updates"} == {
        "apply_momentum",
        "apply_nesterov_momentum",
        "apply_weight_decay",
        "apply_if_finite",
        "apply_lookahead",
        "apply_ema",
    }
