"""Hygiene of every chapter notebook under notebooks/, and its place in the table of contents.

The notebooks are executed by nbval (``pytest --nbval-lax notebooks/``) and by the book build;
these tests check what those cannot: that a notebook is stored clean (no outputs, no
execution counts: the committed file is the source, not a run of it), that it is valid
nbformat with a python3 kernel, that it seeds its random number generators explicitly, that
it finds flowlib because it is installed rather than through ``sys.path`` edits, and that
``_toc.yml`` and ``notebooks/`` agree. And what a reader of the book or of one notebook on Colab
meets: every chapter starts with the Colab cell (``flowlib.book.colab.CELL``, hidden on the page),
finds its files through flowlib rather than ``../`` paths, opens with its learning-objectives box,
writes no doubled reference word ("exercise {ref}`...`" renders "exercise Exercise 3.2"), and
hides the dead output of every widget on the static page. A slow test runs chapter 10 alone in an
empty folder.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

import nbformat
import pytest
import yaml

from flowlib.book.colab import CELL as COLAB_CELL

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]

SEEDING = re.compile(r"\bseed_everything\(")
SYS_PATH_EDIT = re.compile(r"\bsys\.path\s*(\.\s*(append|insert|extend)\s*\(|\+?=)|PYTHONPATH")
GATED_SOLUTION = re.compile(r"\{solution-(start|end)\}")
# A path relative to the working directory: a string that starts with "../" or is "..".
PARENT_PATH = re.compile(r"""(["'])\.\.(/|\1)""")
# The box every chapter opens with (its format: /work/state/briefs/marker.txt, the book's convention).
OBJECTIVES_BOX = ":::{admonition} In this chapter"
OBJECTIVES_PARTS = ("**You will learn", "**Prerequisites", "**Time")
# A word before a reference role that writes the same word itself: {ref} and {numref} of an
# exercise, figure or table, and {prf:ref} of a lemma, render "Exercise 3.2", "Fig. 4.1", "Lemma
# 3.1", so "exercise {ref}`x`" reads "exercise Exercise 3.2". A role with its own text
# ({ref}`the exercise <x>`) is exempt. {eq} renders "(3.1)": "equation {eq}`x`" reads "equation
# (3.1)", which is fine, but "({eq}`x`)" reads "((3.1))".
REFERENCE_WORDS = (r"exercises?|figures?|figs?\.|tables?|sections?|chapters?|lemmas?|theorems?|"
                   r"corollar(?:y|ies)|definitions?|propositions?|proofs?|algorithms?|remarks?")
DOUBLED_REFERENCE = re.compile(
    rf"\b({REFERENCE_WORDS})\s+\{{(?:ref|numref|prf:ref)\}}`[^`<]*`|\(\s*\{{eq\}}`", re.IGNORECASE)
# A cell that shows a widget: ipywidgets used directly, interact, or a flowlib *_widget(...) call.
WIDGET_CALL = re.compile(r"\bipywidgets\b|\binteract(?:ive)?\s*\(|\bwidgets\.\w+\s*\(|"
                         r"(?<!def )\b\w+_widget\s*\(")


def code_without_comments(source: str) -> str:
    """The code of a cell with ``#`` comments removed (a commented-out call does not count)."""
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def read(path: pathlib.Path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def code_lines_matching(path: pathlib.Path, pattern: re.Pattern) -> list[str]:
    """``cell i: 'line'`` for every line of code (comments removed) in which ``pattern`` occurs."""
    return [
        f"cell {i}: {line.strip()!r}"
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "code"
        for line in code_without_comments(c.source).splitlines()
        if pattern.search(line)
    ]


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
    edits = code_lines_matching(path, SYS_PATH_EDIT)
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


def code_cells(path):
    return [c for c in read(path).cells if c.cell_type == "code"]


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_colab_cell(path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cell"
    first = cells[0]
    assert first.source == COLAB_CELL, (
        f"{path.name}: the first code cell must be exactly flowlib.book.colab.CELL (it installs flowlib "
        f"on Colab); it starts with {first.source[:80]!r}. Paste the cell from "
        "`python -c 'from flowlib.book.colab import CELL; print(CELL)'`"
    )
    assert "remove-cell" in tags(first), (
        f"{path.name}: the Colab cell must be tagged remove-cell (it is setup, not content); tags "
        f"{tags(first)}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_paths_relative_to_the_working_directory(path):
    found = code_lines_matching(path, PARENT_PATH)
    assert not found, (
        f"{path.name} reads files through paths relative to the notebook's folder ({'; '.join(found)}): "
        "they break as soon as the notebook runs anywhere else (Colab, a copy). Use "
        "flowlib.book.paths.results(...) / experiments(...)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_doubled_reference_words(path):
    found = [
        f"cell {i}: {m.group(0)!r}"
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "markdown"
        for m in DOUBLED_REFERENCE.finditer(c.source)
    ]
    assert not found, (
        f"{path.name} writes a reference word that the reference repeats ({'; '.join(found)}): "
        "{ref}`label` already reads 'Exercise 3.2' and {eq}`label` '(3.1)'; drop the word or the parenthesis"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_learning_objectives_box_at_the_top(path):
    markdown = [c.source for c in read(path).cells if c.cell_type == "markdown"][:3]
    boxes = [src for src in markdown if OBJECTIVES_BOX in [line.rstrip() for line in src.splitlines()]]
    assert boxes, (
        f"{path.name}: none of the first three Markdown cells has the line {OBJECTIVES_BOX!r} that opens "
        "the chapter's learning-objectives box"
    )
    lines = boxes[0].splitlines()
    start = [line.rstrip() for line in lines].index(OBJECTIVES_BOX)
    end = next((j for j in range(start + 1, len(lines)) if lines[j].strip() == ":::"), len(lines))
    box = "\n".join(lines[start:end])
    assert start + 1 < len(lines) and lines[start + 1].strip() == ":class: tip", (
        f"{path.name}: the line after {OBJECTIVES_BOX!r} must be `:class: tip`")
    missing = [part for part in OBJECTIVES_PARTS if part not in box]
    assert not missing, f"{path.name}: the learning-objectives box lacks {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_widget_cells_hide_their_output(path):
    shown = [
        f"cell {i}"
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "code" and WIDGET_CALL.search(code_without_comments(c.source))
        and not {"remove-output", "remove-cell"} & set(tags(c))
    ]
    assert not shown, (
        f"{path.name}: widget cells {shown} are not tagged remove-output; a static page cannot run a "
        "widget, so it must show the widget's static twin (a figure in the next cell) instead"
    )


@pytest.mark.slow
def test_a_results_chapter_runs_alone_in_an_empty_folder(tmp_path, monkeypatch):
    """Chapter 10 reads committed results; copied alone into an empty folder it must still find them
    (through flowlib.book.paths and the checkout flowlib is installed from), as on Colab."""
    nbclient = pytest.importorskip("nbclient")
    source = ROOT / "notebooks" / "10_mnist.ipynb"
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]
    monkeypatch.delenv("FLOWLIB_REPO", raising=False)  # found from the installed checkout, not told
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(copy, as_version=4)
    # one trailing cell that says which environment ran it: the kernel must be this one
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    kernel_prefix = nb.cells[-1].outputs[0]["text"].strip()
    assert os.path.realpath(kernel_prefix) == os.path.realpath(sys.prefix), (kernel_prefix, sys.prefix)


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
    for relative in ['figure3.load("../results/figure3")', "pathlib.Path('..') / 'experiments'",
                     'os.path.join("..", "results")', "open('../x.json')"]:
        assert PARENT_PATH.search(relative), relative
    for fine in ['paths.results("figure3")', "x[..., 0]", "print('...')", "open('a/../b')"]:
        assert not PARENT_PATH.search(code_without_comments(fine)), fine
    for doubled in ["as in exercise {ref}`vp-ex-reflections`", "see Figure {numref}`fig-x`",
                    "by Lemma {prf:ref}`pf-lemma`", "Eq. ({eq}`pf-map`)", "exercises {ref}`a` and"]:
        assert DOUBLED_REFERENCE.search(doubled), doubled
    for fine in ["as in {ref}`vp-ex-reflections`", "the equation {eq}`pf-map`",
                 "see the exercise on it, {ref}`vp-ex-reflections`", "exercise {ref}`the last one <x>`"]:
        assert not DOUBLED_REFERENCE.search(fine), fine
    for widget in ["widgets.interact(f, x=1)", "planar_widget()", 'pushforward_widget("radial", 1.0)',
                   "import ipywidgets as widgets", "interact(f, a=(0, 1))"]:
        assert WIDGET_CALL.search(widget), widget
    for fine in ["def planar_widget():",
                 "from flowlib.book.widgets.change_of_variables import plot_pushforward",
                 "plot_pushforward('radial', 1.0)"]:
        assert not WIDGET_CALL.search(fine), fine
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
