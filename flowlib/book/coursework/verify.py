"""Execute a student notebook and check that only its exercise cells fail, and only with the stub; and
check that the built student HTML shows no solution."""

from __future__ import annotations

import html
import pathlib
import re
import tempfile

import nbformat

from .markers import SOLUTION_TAG
from .student import exercise_of, student_notebook

__all__ = ["execute_student_notebook", "html_leaks", "solution_lines"]


def execute_student_notebook(path, timeout: int = 300):
    """Run ``path`` top to bottom in a fresh kernel (in a scratch folder); return the executed
    notebook and a list of problems: any error in a cell that is not an exercise cell, and any
    exercise cell that fails with something other than ``NotImplementedError``."""
    from nbclient import NotebookClient

    nb = nbformat.read(pathlib.Path(path), as_version=4)
    with tempfile.TemporaryDirectory(prefix="flowlib-student-") as work:
        NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                       resources={"metadata": {"path": work}}).execute()
    problems = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            label = exercise_of(cell)
            if label is None:
                problems.append(
                    f"cell {index} (not an exercise) raised {out.get('ename')}: {out.get('evalue')}")
            elif out.get("ename") != "NotImplementedError":
                problems.append(f"cell {index} (exercise {label}) raised {out.get('ename')}, not the stub's "
                                f"NotImplementedError: {out.get('evalue')}")
    return nb, problems


# ------------------------------------------------------------------ no solution in the student HTML

_TAG = re.compile(r"<[^>]+>")
# What sphinx-exercise writes for a {solution} directive: a node with the class "solution" and a
# section "solution-content" (see sphinx_exercise.directive.SolutionDirective).
_SOLUTION_NODE = re.compile(r'class="[^"]*\bsolution\b[^"]*"|id="solution-content"')
_MIN_LINE = 12  # shorter solution lines (`return z`, `# END`) are not distinctive


def _page_text(path: pathlib.Path) -> str:
    """What a page or a downloadable notebook under the built HTML shows: an HTML page without its
    tags (a highlighted code line is split into spans), a notebook's sources and printed outputs."""
    raw = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        nb = nbformat.reads(raw, as_version=4)
        parts = []
        for cell in nb.cells:
            parts.append(cell.source)
            for out in cell.get("outputs", []):
                parts.append(out.get("text", ""))
                parts += [str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
                parts += out.get("traceback", [])
        return "\n".join(parts)
    if path.suffix == ".html":
        return html.unescape(_TAG.sub("", raw))
    return raw


def solution_lines(nb) -> list[str]:
    """The distinctive lines of a chapter's solutions: each line longer than 12 characters inside a
    ``# BEGIN SOLUTION`` / ``# END SOLUTION`` region or in a cell tagged ``solution``."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        whole = SOLUTION_TAG in cell.metadata.get("tags", [])
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN SOLUTION" in line:
                inside = True
            elif "END SOLUTION" in line:
                inside = False
            elif (inside or whole) and len(line.strip()) > _MIN_LINE:
                lines.append(line.strip())
    return lines


def html_leaks(html_dir, chapters, public_sources=()) -> list[str]:
    """The solutions that the built student HTML ``html_dir`` shows: a page or downloadable notebook
    that contains a solution line of one of the instructor notebooks ``chapters`` or a rendered
    ``{solution}`` directive. A line that the student edition itself has (in any student notebook,
    or in ``public_sources``, the book's other pages) is public, not a leak."""
    html_dir = pathlib.Path(html_dir)
    notebooks = [nbformat.read(pathlib.Path(p), as_version=4) for p in chapters]
    public = "\n".join(c.source for nb in notebooks for c in student_notebook(nb).cells)
    public += "\n" + "\n".join(pathlib.Path(p).read_text() for p in public_sources)
    secrets = {line for nb in notebooks for line in solution_lines(nb) if line not in public}
    problems = []
    files = sorted(p for p in html_dir.rglob("*") if p.is_file() and p.suffix in (".html", ".ipynb", ".md"))
    if not any(p.suffix == ".html" for p in files):
        return [f"{html_dir}: no HTML page to check"]
    for path in files:
        text = _page_text(path)
        where = path.relative_to(html_dir)
        if path.suffix == ".html" and _SOLUTION_NODE.search(path.read_text(errors="replace")):
            problems.append(f"{where}: a rendered {{solution}} directive")
        shown = sorted(line for line in secrets if line in text)
        if shown:
            problems.append(f"{where}: {len(shown)} solution line(s), e.g. {shown[0]!r}")
    return problems
