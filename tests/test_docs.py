"""The documentation under docs/ states facts the code keeps: every public name has a page, the
code examples run, and the defaults in the mapping tables are the functions' own.

Building the site itself (``sphinx-build -n -W``) is a step of ``.ci/run``, which then runs the
built-site test here on what it built (``UPDATES_DOCS_HTML``; a missing site is then an error).
Elsewhere that test builds the site itself when Sphinx is installed, and skips when it is not.
"""

import ast
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
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


def built_site(tmp_path):
    """The built HTML site: the one UPDATES_DOCS_HTML names, else one built here as CI builds it."""
    if "UPDATES_DOCS_HTML" in os.environ:
        site = Path(os.environ["UPDATES_DOCS_HTML"])
        assert (site / "index.html").is_file(), f"UPDATES_DOCS_HTML={site} holds no built site"
        return site
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed (the docs extra)")
    command = [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run([*command, str(DOCS), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path


class PageAssets(HTMLParser):
    """The scripts and stylesheets an HTML page loads, and whether it holds math."""

    def __init__(self, page):
        super().__init__()
        self.scripts, self.stylesheets, self.has_math = [], [], False
        self.feed(page.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"])
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes["href"])
        if "math" in (attributes.get("class") or "").split():
            self.has_math = True


def is_remote(url):
    """``https://...``, ``//host/...``: a URL another host serves, not a file of the site."""
    return re.match(r"([a-z][a-z0-9+.-]*:)?//", url, flags=re.IGNORECASE) is not None


def test_the_built_site_renders_its_equations_offline(tmp_path):
    """Offline (CI, many readers) a page renders from the site's own files: no page loads a script
    or stylesheet from another host, and every page with math loads a MathJax script that the site
    holds, with the web fonts of MathJax's CommonHTML output beside it (else raw TeX shows).

    One test, so that under xdist one worker builds the site, not two at once.
    """
    site = built_site(tmp_path)
    pages = {page.relative_to(site): PageAssets(page) for page in sorted(site.rglob("*.html"))}
    loaded = [(page, url) for page, assets in pages.items() for url in assets.scripts + assets.stylesheets]
    remote = [f"{page}: {url}" for page, url in loaded if is_remote(url)]
    assert not remote, remote[:5]

    with_math = {page: assets for page, assets in pages.items() if assets.has_math}
    assert len(with_math) >= 10  # the API reference writes the rules as equations
    scripts = set()
    for page, assets in with_math.items():
        mathjax = [url for url in assets.scripts if "mathjax" in url.lower()]
        assert mathjax, f"{page} has math but loads no MathJax"
        for url in mathjax:
            script = (site / page).parent / url.split("?")[0]
            assert script.is_file(), f"{page} loads {url}, which the site does not hold"
            scripts.add(script.resolve())
    for script in scripts:
        assert list(script.parent.glob("output/chtml/fonts/**/*.woff")), f"no MathJax fonts beside {script}"


def test_the_reading_map_names_functions_that_exist_where_it_says():
    """In docs/design.md's "Reading map", each backticked name is an attribute of the module named
    last before it."""
    design = (DOCS / "design.md").read_text()
    section = design.split("## Reading map", 1)[1].split("\n", 1)[1].split("\n| ", 1)[0]
    module, checked = None, []
    for span in re.findall(r"`([^`]+)`", section):
        if span.startswith("tests/"):
            continue
        if span.startswith("updates/") and span.endswith(".py"):
            assert (Path(__file__).parents[1] / span).is_file(), span
            module = importlib.import_module(span[:-3].replace("/", "."))
            continue
        assert module is not None, f"{span!r} comes before any module"
        target = module
        for part in span.split("."):
            assert hasattr(target, part), f"{module.__name__} has no {span}"
            target = getattr(target, part)
        checked.append(span)
    assert len(checked) >= 15, checked
