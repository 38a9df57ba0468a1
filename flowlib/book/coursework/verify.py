"""Execute a student notebook and check that only its exercise cells fail, and only with the stub."""

from __future__ import annotations

import pathlib
import tempfile

import nbformat

from .student import exercise_of

__all__ = ["execute_student_notebook"]


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
