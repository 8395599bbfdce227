"""Sphinx configuration: numpydoc docstrings, autosummary pages, MathJax equations.

MathJax is served from the built site itself (sphinx-mathjax-offline copies MathJax 3 into
``_static/mathjax`` and points ``mathjax_path`` there), so the equations render offline; Sphinx's
default would load it from a CDN. tests/test_docs.py checks the built pages for that.

Build from the repository root (CI runs exactly this; warnings are errors, references checked):

    sphinx-build -n -W --keep-going -b html docs docs/_build/html
"""

import importlib
import inspect
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # document this checkout, not an installed copy

import updates  # noqa: E402

# The API reference: one page per module, in this order, titled so. A page lists the module's
# __all__ (a new name there appears by itself); a new module is one more line here.
FAMILIES = {
    "updates.container": "The updates dictionary",
    "updates.grads": "Gradients",
    "updates.checks": "Argument checks",
    "updates.rules": "Update rules",
    "updates.modern": "Rules beyond Lasagne",
    "updates.schedule_free": "Schedule-Free rules",
    "updates.prodigy": "Prodigy",
    "updates.momo": "MoMo: momentum with a Polyak-type step size",
    "updates.sophia": "Sophia",
    "updates.parameter_free": "Learning-rate-free rules",
    "updates.factored": "Factored rules",
    "updates.normalized": "Normalized and optimistic rules",
    "updates.orthogonal": "Orthogonalized rules",
    "updates.private": "Differentially private rules",
    "updates.projected": "Low-rank projected rules",
    "updates.momentum": "Momentum",
    "updates.wrappers": "Update wrappers",
    "updates.meta": "Rules over a base rule",
    "updates.constraints": "Norm constraints",
    "updates.transforms": "Gradient transforms",
    "updates.chain": "Composition",
    "updates.schedules": "Schedules",
    "updates.state": "Optimizer state",
    "updates.layout": "Optimizer state layout",
    "updates.engine": "The engine: rules as data",
    "updates.lbfgs": "L-BFGS",
    "updates.step": "Compiled steps on devices",
    "updates.train": "Training loop",
}

project = "updates"
author = "the updates authors"
copyright = "the updates authors"
release = version = updates.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # after sphinx.ext.mathjax: it sets that extension's mathjax_path
    "numpydoc",
    "myst_parser",  # the benchmark tables are Markdown written by benchmarks/run.py
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's sections give the types; keep Lasagne-style signatures
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Nitpicky mode (-n): every cross-reference must resolve. Types named by other projects (PyTensor,
# NumPy, the standard library) have no inventory here: CI builds offline.
nitpick_ignore_regex = [
    ("py:class", r"(pytensor|numpy|np|collections|os|typing)\..*"),
]

myst_heading_anchors = 3
html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["math.css"]  # no vertical scrollbar beside each display equation
html_title = f"updates {release}"
html_domain_indices = False  # modules are pages of the API reference, not a module index


def _reference_name(module: str, name: str) -> str:
    """How a page names a public object: ``adam`` (``updates.adam``) if the package exports it."""
    return name if name in updates.__all__ else f"{module.removeprefix('updates.')}.{name}"


def _family_page(module: str, title: str) -> str:
    """The module's docstring, then a table of its public names, each with a page of its own.

    The page sets the current module to ``updates``, so the docstring's references (``:func:`live```)
    resolve to the names users import; names the package does not export keep their module.
    """
    imported = importlib.import_module(module)
    entries = "\n".join(f"   {_reference_name(module, name)}" for name in imported.__all__)
    # A module whose name the package also exports as a function (updates.momentum) is not a
    # target of :mod: (one name, one object); every other module is.
    shadowed = getattr(updates, module.removeprefix("updates."), imported) is not imported
    return (
        f"{title}\n{'=' * len(title)}\n\n"
        f".. module:: {module}\n" + ("   :no-index:\n" if shadowed else "") + "\n"
        f".. currentmodule:: updates\n\n"
        f"{inspect.getdoc(imported)}\n\n"
        f".. rubric:: Contents of ``{module}``\n\n"
        f".. autosummary::\n   :toctree: ../generated\n   :nosignatures:\n\n{entries}\n"
    )


def _summary(module: str) -> str:
    return inspect.getdoc(importlib.import_module(module)).split("\n\n")[0].replace("\n", " ")


def _index() -> str:
    """The table of modules and the toctree, included by api.rst."""
    rows = "\n".join(
        f"   * - :doc:`{title} <reference/{module.removeprefix('updates.')}>`\n     - {_summary(module)}"
        for module, title in FAMILIES.items()
    )
    pages = "\n".join(f"   reference/{module.removeprefix('updates.')}" for module in FAMILIES)
    return (
        ".. currentmodule:: updates\n\n"  # the summaries' references name what users import
        f".. list-table::\n   :header-rows: 0\n   :widths: 25 75\n\n{rows}\n\n"
        f".. toctree::\n   :hidden:\n\n{pages}\n"
    )


def _write(path: Path, text: str) -> None:
    """Write only what changed, so that Sphinx rebuilds only what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# Written here, before Sphinx looks for source files (a builder-inited hook runs too late for a
# fresh build). reference/ and generated/ are build products (.gitignore).
for _module, _title in FAMILIES.items():
    _write(HERE / "reference" / f"{_module.removeprefix('updates.')}.rst", _family_page(_module, _title))
_write(HERE / "reference" / "index.rst.inc", _index())
