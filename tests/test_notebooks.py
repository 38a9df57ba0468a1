"""Hygiene of every chapter notebook under notebooks/, and its place in the table of contents.

The notebooks are executed by nbval (``pytest --nbval-lax notebooks/``) and by the book build;
these tests check what those cannot: that a notebook is stored clean (no outputs, no
execution counts: the committed file is the source, not a run of it), that it is valid
nbformat with a python3 kernel, that it seeds its random number generators explicitly, that
it finds flowlib because it is installed rather than through ``sys.path`` edits, and that
``_toc.yml`` and ``notebooks/`` agree.
"""

from __future__ import annotations

import pathlib
import re

import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]

SEEDING = re.compile(r"\bseed_everything\(")
SYS_PATH_EDIT = re.compile(r"\bsys\.path\s*(\.\s*(append|insert|extend)\s*\(|\+?=)|PYTHONPATH")
GATED_SOLUTION = re.compile(r"\{solution-(start|end)\}")


def code_without_comments(source: str) -> str:
    """The code of a cell with ``#`` comments removed (a commented-out call does not count)."""
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def read(path: pathlib.Path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found under {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_nbformat_with_a_python3_kernel(path):
    nb = read(path)
    assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, expected 4"
    nbformat.validate(nb)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec!r}, expected python3"
    assert kernelspec.get("language", "python") == "python", f"{path.name}: kernelspec {kernelspec!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs(path):
    dirty = [
        f"cell {i} ({len(cell.outputs)} outputs, execution_count {cell.execution_count})"
        for i, cell in enumerate(read(path).cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name} is stored with outputs or execution counts in {', '.join(dirty)}; clear them before "
        "committing (in Jupyter: Edit > Clear Outputs of All Cells, then save)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_seeded(path):
    code = [code_without_comments(c.source) for c in read(path).cells if c.cell_type == "code"]
    assert any(SEEDING.search(src) for src in code), (
        f"{path.name} never calls flowlib.seed_everything(seed): seed it in an early cell so that it "
        "runs the same way every time"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_sys_path_edits(path):
    edits = [
        f"cell {i}: {m.group(0)!r}"
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "code"
        for m in [SYS_PATH_EDIT.search(code_without_comments(c.source))]
        if m
    ]
    assert not edits, (
        f"{path.name} edits the module search path ({'; '.join(edits)}): flowlib must be imported because "
        "it is installed (pip install -e .), not found through sys.path"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_gated_solutions(path):
    cells = read(path).cells
    gated = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and GATED_SOLUTION.search(c.source)]
    assert not gated, (
        f"{path.name} uses gated solution-start/solution-end blocks in cells {gated}: use the dropdown style "
        "(```{solution} label / :class: dropdown) instead"
    )


# ---------------------------------------------------------------- table of contents


def toc_files(node) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml``, depth first."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                found.append(value)
            else:
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def load_toc() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [str(pathlib.PurePosixPath(f).with_suffix("")) for f in toc_files(toc)]


def test_every_toc_entry_exists():
    missing = [
        f for f in load_toc()
        if not any((ROOT / f).with_suffix(ext).is_file() for ext in (".md", ".ipynb", ".rst"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc():
    listed = set(load_toc())
    absent = [p.name for p in NOTEBOOKS if f"notebooks/{p.stem}" not in listed]
    assert not absent, f"notebooks missing from _toc.yml (they would not be in the book): {absent}"


def test_toc_lists_each_file_once():
    entries = load_toc()
    repeated = sorted({f for f in entries if entries.count(f) > 1})
    assert not repeated, f"_toc.yml lists these files more than once: {repeated}"


# ---------------------------------------------------------------- the checks themselves


def test_the_patterns_catch_what_they_should():
    for edit in ["sys.path.insert(0, '..')", "sys.path.append('../flowlib')", "sys.path += ['..']",
                 "sys.path = ['..'] + sys.path", "os.environ['PYTHONPATH'] = '..'"]:
        assert SYS_PATH_EDIT.search(code_without_comments(edit)), edit
    for fine in ["print(sys.path)", "# sys.path.insert(0, '..')", "paths = list(sys.path)"]:
        assert not SYS_PATH_EDIT.search(code_without_comments(fine)), fine
    assert SEEDING.search("flowlib.seed_everything(0)")
    assert not SEEDING.search(code_without_comments("# flowlib.seed_everything(0)"))
    assert GATED_SOLUTION.search("```{solution-start} ex1")


def test_toc_files_walks_parts_chapters_and_sections():
    toc = {"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "I", "chapters": [{"file": "notebooks/01_a", "sections": [{"file": "notebooks/01_b"}]}]},
        {"caption": "II", "chapters": [{"file": "notebooks/02_c.ipynb"}]},
    ]}
    assert toc_files(toc) == ["book/intro", "notebooks/01_a", "notebooks/01_b", "notebooks/02_c.ipynb"]


def test_a_dirty_notebook_is_caught(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import sys\nsys.path.insert(0, '..')\n1 + 1")
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python2", "display_name": "Python 2", "language": "python"}
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, path)
    for test in (test_stored_without_outputs, test_seeded, test_no_sys_path_edits,
                 test_valid_nbformat_with_a_python3_kernel):
        with pytest.raises(AssertionError):
            test(path)
