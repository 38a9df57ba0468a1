"""The student edition of the book: the same chapters without their solutions.

From each instructor notebook: cells tagged ``solution`` are dropped; in code cells every
``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region becomes a comment and a line that raises
``NotImplementedError`` naming the exercise; ``{solution}`` directives are removed from markdown;
every output is cleared. The code cells of an exercise (``metadata.coursework.exercise``) are
tagged ``raises-exception`` (nbval and nbclient then accept the stub's error, so the rest of the
notebook runs) and ``remove-output`` (the student's HTML does not show the traceback).
"""

from __future__ import annotations

import copy
import pathlib
import re

import nbformat

from .markers import SOLUTION_TAG, has_solution, strip_prose_solutions, stub_solutions

__all__ = ["student_notebook", "student_prose", "exercise_of", "chapter_of", "write_student_notebooks",
           "STUB_HINT", "STUB_COMMENT", "STUDENT_RUNNING_BOX"]

# The stub: a comment, then a line that raises naming the exercise. Both fit the page's code column
# (about 80 characters) at the answer's indentation, even for the longest label.
STUB_HINT = "Exercise {label}"
STUB_COMMENT = "Your solution replaces the next line."

# The student pages have no launch buttons (they would open the instructor notebooks in the
# repository), so each chapter's "Running this notebook" box is replaced by this one, and the
# remaining mentions of the button are dropped; a mention left over is an error (see below).
RUNNING_BOX = re.compile(r"^:::\{admonition\} Running this notebook\n.*?^:::[ \t]*$", re.S | re.M)
STUDENT_RUNNING_BOX = """:::{admonition} Running this notebook
:class: note
- **Your handout** is this page's notebook: the download button at the top of the page (`.ipynb`)
  gives it to you, with a stub in every answer cell.
- **Colab**: upload it (File > Upload notebook). Its first cell clones the book's repository and
  installs `flowlib` from it, with the extras the chapters need.
- **Locally**, in a clone of the repository: `pip install -r requirements.txt`, then open the
  notebook in Jupyter with that environment's kernel.

Every answer cell raises `NotImplementedError` until you replace its stub; the rest of the notebook
runs without your answers.
:::"""
LAUNCH_BUTTON = re.compile(r"\s*\(the\s+launch\s+button\s+at\s+the\s+top\s+of\s+the\s+page\)")


def student_prose(source: str, where: str = "a markdown cell") -> str:
    """A markdown cell's text for the student pages: the running box for students, no launch button."""
    source = LAUNCH_BUTTON.sub("", RUNNING_BOX.sub(lambda _: STUDENT_RUNNING_BOX, source))
    if re.search(r"launch button|rocket icon", source, re.I):
        raise ValueError(f"{where} mentions the launch button, which the student pages do not have; "
                         "say it inside a 'Running this notebook' box or as '(the launch button at the "
                         "top of the page)', which the student edition replaces")
    return source


def exercise_of(cell) -> str | None:
    """The exercise label a cell belongs to (``metadata.coursework.exercise``), or ``None``."""
    return cell.get("metadata", {}).get("coursework", {}).get("exercise")


def chapter_of(nb) -> str | None:
    """The chapter a notebook says it is (``metadata.coursework.chapter``), or ``None``."""
    return nb.get("metadata", {}).get("coursework", {}).get("chapter")


def student_notebook(nb):
    """The student edition of an instructor notebook (a new object; ``nb`` is not changed)."""
    nb = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = list(cell.metadata.get("tags", []))
        if SOLUTION_TAG in tags:
            continue
        if cell.cell_type == "markdown":
            cell.source = student_prose(strip_prose_solutions(cell.source), f"markdown cell {index}")
            if not cell.source.strip():
                continue
        elif cell.cell_type == "code":
            label = exercise_of(cell)
            if has_solution(cell.source):
                if label is None:
                    raise ValueError(f"cell {index} has solution markers but no metadata.coursework.exercise")
                cell.source = stub_solutions(cell.source, STUB_HINT.format(label=label), STUB_COMMENT)
            if label is not None:
                extra = [t for t in ("raises-exception", "remove-output") if t not in tags]
                cell.metadata["tags"] = tags + extra
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    return nb


def write_student_notebooks(sources, out: pathlib.Path) -> list[pathlib.Path]:
    """Write the student edition of every notebook in ``sources`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources:
        path = pathlib.Path(path)
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written
