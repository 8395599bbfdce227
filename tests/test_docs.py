"""The documentation under docs/ states facts the code keeps: every public name has a page, the
code examples run, and the defaults in the mapping tables are the functions' own.

Building the site itself (``sphinx-build -n -W``) is a step of ``.ci/run``.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytensor
import pytest

import updates

DOCS = Path(__file__).parents[1] / "docs"


def reference_modules():
    """The modules the API reference documents: the keys of FAMILIES in docs/conf.py."""
    tree = ast.parse((DOCS / "conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAMILIES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("docs/conf.py defines no FAMILIES")


def test_every_public_name_has_a_page_in_the_api_reference():
    documented = set()
    for module in reference_modules():
        documented.update(importlib.import_module(module).__all__)
    missing = sorted(set(updates.__all__) - documented)
    assert not missing, f"add the modules defining {missing} to FAMILIES in docs/conf.py"


def python_blocks(path):
    """The ``.. code-block:: python`` blocks of an reST file, dedented."""
    text = path.read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:(?: {3}.*)?\n)+)", text)
    return [inspect.cleandoc("\n".join(line[3:] for line in block.splitlines())) for block in blocks]


def test_getting_started_examples_run():
    """Every Python block of the getting-started page runs, in order (all but PyMC's), and each
    ``print(expression)  # value`` line prints that value."""
    blocks = [block for block in python_blocks(DOCS / "getting_started.rst") if "pm." not in block]
    assert len(blocks) >= 5
    namespace = {}
    claims = 0
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        for block in blocks:
            exec(block, namespace)
            for expression, shown in re.findall(r"^print\((.*)\)\s+# (.*)$", block, flags=re.MULTILINE):
                assert repr(eval(expression, namespace)) == shown
                claims += 1
    assert claims >= 1
    assert isinstance(namespace["step_updates"], updates.Updates)


def markdown_tables(path):
    """Each pipe table of a Markdown file: a list of rows, each a list of cell strings."""
    tables, rows = [], []
    for line in [*path.read_text().splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(cell) <= set("-: ") for cell in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def stated_defaults(cell):
    """``"lr=0.001, betas=(0.9, 0.999)"`` -> ``{"lr": 0.001, "betas": (0.9, 0.999)}``."""
    return {name: ast.literal_eval(value) for name, value in re.findall(r"(\w+)=(\([^)]*\)|[^,]+)", cell)}


def mapping_rows(column):
    """(row, cells by header) of every table of coming_from.md that has the given column."""
    for table in markdown_tables(DOCS / "coming_from.md"):
        header = table[0]
        if column in header:
            for row in table[1:]:
                yield dict(zip(header, row))


def names_in(cell):
    return re.findall(r"`([\w.]+)`", cell)


HERE_ROWS = [
    (name, row["defaults here"])
    for row in mapping_rows("defaults here")
    for name in names_in(row["here"])
    if row["defaults here"]
]


def test_the_mapping_tables_cover_lasagnes_rules():
    """Every rule, wrapper and constraint of Lasagne's set (updates.rules, updates.momentum,
    updates.constraints) is in the tables with its defaults."""
    stated = {name for name, _ in HERE_ROWS}
    modules = ("updates.rules", "updates.momentum", "updates.constraints")
    lasagne = {name for module in modules for name in importlib.import_module(module).__all__}
    assert lasagne <= stated


@pytest.mark.parametrize(("name", "cell"), HERE_ROWS, ids=[f"{n}:{c}" for n, c in HERE_ROWS])
def test_the_mapping_tables_state_the_defaults_here(name, cell):
    parameters = inspect.signature(getattr(updates, name)).parameters
    for argument, value in stated_defaults(cell).items():
        assert parameters[argument].default == value, (name, argument)


TORCH_ROWS = [row for row in mapping_rows("torch's defaults") if row["torch's defaults"]]


@pytest.mark.parametrize("row", TORCH_ROWS, ids=[row["torch.optim"] for row in TORCH_ROWS])
def test_the_torch_table_states_torchs_defaults(row):
    torch = pytest.importorskip("torch")
    target = torch.optim
    for part in names_in(row["torch.optim"])[0].split("."):
        target = getattr(target, part)
    parameters = inspect.signature(target).parameters
    for argument, value in stated_defaults(row["torch's defaults"]).items():
        assert parameters[argument].default == value, argument
