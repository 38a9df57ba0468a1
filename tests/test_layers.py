"""flowlib's three layers (see ARCHITECTURE.md), checked on the source by an AST scan of every import:

- the library (``flows``, ``model``, ``data``, ``training``, ``twod``) never imports the experiments
  (``flowlib.experiments``) or the book's helpers (``flowlib.book``);
- ``flowlib.flows`` imports only torch, the standard library and itself;
- ``flowlib/`` has at most 12 entries at its top level;
- no module imports another module's private names (``from .fit import _minimise``);
- ARCHITECTURE.md's table of moved modules names files that exist.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "flowlib"
LIBRARY = ("flows", "model", "data", "training", "twod")
UPPER = ("experiments", "book")


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in a file, relative ones resolved; a
    ``from package import name`` also yields ``package.name`` (the name may be a module)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _files(*subpackages: str):
    for name in subpackages:
        path = PACKAGE / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _violations(files, allowed) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {target}"
            for path in files for line, target in imports(path) if not allowed(target)]


def _not_upper(target: str) -> bool:
    return not any(target == f"flowlib.{u}" or target.startswith(f"flowlib.{u}.") for u in UPPER)


def _torch_only(target: str) -> bool:
    top = target.split(".")[0]
    return target == "flowlib.flows" or target.startswith("flowlib.flows.") or top == "torch" or (
        top in sys.stdlib_module_names and top != "flowlib")


def test_the_library_never_imports_the_experiments_or_the_book():
    assert not _violations(_files(*LIBRARY), _not_upper)


def test_the_books_helpers_never_import_the_experiments():
    assert not _violations(_files("book"), lambda t: not (t == "flowlib.experiments"
                                                          or t.startswith("flowlib.experiments.")))


def test_flows_import_only_torch():
    assert not _violations(_files("flows"), _torch_only)


def test_the_scan_sees_what_it_forbids(tmp_path, monkeypatch):
    """The checks fail on a library module that imports upwards, however it is written."""
    fake = tmp_path / "flowlib" / "twod"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import numpy\nfrom ..book import plotting\n"
                                 "from ..experiments.tables import main\nfrom flowlib import book\n"
                                 "import flowlib.experiments\nfrom . import grid\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = _violations([fake / "bad.py"], _not_upper)
    assert [v.split(" imports ")[1] for v in found] == [
        "flowlib.book", "flowlib.book.plotting", "flowlib.experiments.tables",
        "flowlib.experiments.tables.main", "flowlib.book", "flowlib.experiments"]
    assert len(_violations([fake / "bad.py"], _torch_only)) == 10  # every import there: none is torch


def test_no_private_names_are_imported_across_modules():
    found = [f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom)
             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found


def test_flowlib_has_at_most_twelve_top_level_entries():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, entries
    assert {*LIBRARY, *UPPER} <= {p.removesuffix(".py") for p in entries}


def test_the_architecture_table_names_files_that_exist():
    text = (REPO / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| `(flowlib/[^`]+)` \| `(flowlib/[^`]+)` \|", text, flags=re.M)
    assert len(rows) >= 20
    for old, new in rows:
        assert (REPO / new).exists(), f"ARCHITECTURE.md moves {old} to {new}, which does not exist"


@pytest.mark.parametrize("layer", LIBRARY)
def test_every_library_layer_is_scanned(layer):
    assert list(_files(layer)), layer
