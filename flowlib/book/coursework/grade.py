"""Grade submitted notebooks: execute each in a fresh kernel, then run the chapter's graded tests.

Submissions are untrusted and may be broken. Whatever they do (a cell that raises, loops forever,
prints megabytes, a file that is not a notebook, a notebook of another chapter, an exercise
deleted) the grader writes a report with 0 points and the reason for what failed, and goes on.
It does not sandbox: run it in a container for a real course (the instructor guide says how).
"""

from __future__ import annotations

import csv
import json
import pathlib
import secrets
import tempfile
import time

import nbformat

from .harness import Exercise, load_module
from .student import chapter_of, exercise_of

__all__ = ["grade", "grade_all", "load_graded", "GRADED_DIR"]

GRADED_DIR = "coursework/graded"  # relative to the repository root


def _repository() -> pathlib.Path:
    from ..paths import repository

    return repository()


def load_graded(chapter: str, root: pathlib.Path | None = None):
    """The graded-test module of a chapter (``coursework/graded/<chapter>.py``)."""
    path = (root or _repository()) / GRADED_DIR / f"{chapter}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no graded tests for chapter {chapter!r}: expected {path}")
    module = load_module(path, f"_graded_{chapter}")
    if not all(isinstance(e, Exercise) for e in getattr(module, "EXERCISES", None) or [None]):
        raise ValueError(f"{path}: EXERCISES must be a non-empty list of harness.Exercise")
    return module, path


def _client_class():
    from nbclient import NotebookClient

    class LimitedClient(NotebookClient):
        """Keeps at most ``max_output`` bytes of printed text per cell (a flood is cut, and said so);
        figures and other rich outputs do not count (a chapter's figures are hundreds of KB)."""

        max_output = 200_000

        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            size = sum(len(o.get("text", "")) for o in outs if o.get("output_type") == "stream")
            if size > self.max_output and outs and outs[-1].get("output_type") == "stream":
                outs.pop()
                flooded = self.__dict__.setdefault("flooded", set())
                flooded.add(cell_index)
            return out

    return LimitedClient


def _skeleton(exercises, reason: str) -> list[dict]:
    return [{"id": e.id, "points": 0.0, "max_points": float(e.points), "feedback": reason} for e in exercises]


def _report(submission, chapter, entries, written, notes, started) -> dict:
    return {
        "submission": str(submission),
        "chapter": chapter,
        "exercises": entries,
        "written": written,
        "total": round(sum(e["points"] for e in entries), 4),
        "max_total": round(sum(e["max_points"] for e in entries), 4),
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 1),
    }


def grade(submission, chapter: str | None = None, *, cell_timeout: int = 120, exercise_timeout: int = 60,
          root: pathlib.Path | None = None) -> dict:
    """Grade one submitted notebook; returns the report (see the module docstring)."""
    started = time.perf_counter()
    submission = pathlib.Path(submission)
    notes: list[str] = []
    try:
        nb = nbformat.read(submission, as_version=4)
        found = chapter_of(nb)
    except Exception as err:  # not a file, not JSON, not a notebook
        nb, found = None, None
        notes.append(f"not a readable notebook: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
    if chapter is None:
        chapter = found
    if chapter is None:
        if nb is not None:
            notes.append("the notebook does not say which chapter it is (metadata.coursework.chapter); "
                         "grade it with --chapter")
        return _report(submission, None, [], [], notes, started)
    module, _ = load_graded(chapter, root)
    exercises = module.EXERCISES
    by_hand = "graded by hand (rubric in the instructor guide)"
    written = [{"id": k, "max_points": float(v), "feedback": by_hand}
               for k, v in getattr(module, "WRITTEN", {}).items()]
    if nb is None:
        return _report(submission, chapter, _skeleton(exercises, notes[0]), written, notes, started)
    if found != chapter:
        reason = f"this is not a notebook of chapter {chapter} (it says {found or 'nothing'})"
        return _report(submission, chapter, _skeleton(exercises, reason), written, [reason], started)

    present = {exercise_of(c) for c in nb.cells if c.cell_type == "code"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            # the submission's own error-tolerance tags are not trusted: every cell runs, errors are recorded
            cell.metadata["tags"] = [t for t in cell.metadata.get("tags", []) if t != "raises-exception"]
    nonce = secrets.token_hex(8)
    graded_path = (root or _repository()) / GRADED_DIR / f"{chapter}.py"
    grading_cells = []
    for e in exercises:
        source = (
            "import importlib.util as _fl_u, json as _fl_j\n"
            f"_fl_s = _fl_u.spec_from_file_location('_fl_graded', {str(graded_path)!r})\n"
            "_fl_m = _fl_u.module_from_spec(_fl_s); _fl_s.loader.exec_module(_fl_m)\n"
            "from flowlib.book.coursework.harness import run_exercise as _fl_run\n"
            f"print({nonce!r} + _fl_j.dumps(_fl_run(_fl_m.EXERCISES, {e.id!r}, globals())))\n"
        )
        grading_cells.append(nbformat.v4.new_code_cell(source, metadata={"coursework": {"grading": e.id}}))
    # Every cell gets a time limit inside the kernel (SIGALRM raises TimeoutError in the cell that
    # overran, so the error lands where it belongs); nbclient's own timeout is the backstop for code
    # that does not return to Python.
    setup = nbformat.v4.new_code_cell(
        "import signal as _fl_signal\n"
        "def _fl_alarm(signum, frame):\n"
        "    raise TimeoutError('the cell ran past its time limit')\n"
        "_fl_signal.signal(_fl_signal.SIGALRM, _fl_alarm)\n"
        f"get_ipython().events.register('pre_run_cell', lambda *a: _fl_signal.alarm({cell_timeout}))\n"
        "get_ipython().events.register('post_run_cell', lambda *a: _fl_signal.alarm(0))\n",
        metadata={"coursework": {"grading": "setup"}})
    for cell in grading_cells:  # the exercise's limit counts from the call, after the imports
        cell.source = "_fl_signal.alarm(0)\n" + cell.source.replace(
            "print(", f"_fl_signal.alarm({exercise_timeout})\nprint(")
    nb.cells.insert(0, setup)
    n_submitted = len(nb.cells)
    nb.cells.extend(grading_cells)

    client_cls = _client_class()
    timeouts = {}

    def timeout_for(cell):
        limit = exercise_timeout if cell.metadata.get("coursework", {}).get("grading") else cell_timeout
        return limit + 30

    with tempfile.TemporaryDirectory(prefix="flowlib-grade-") as work:
        client = client_cls(
            nb, timeout_func=timeout_for, allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": "CellTimeoutError", "evalue": "the cell ran past its time limit",
                              "traceback": []},
            kernel_name="python3", resources={"metadata": {"path": work}},
            startup_timeout=120,
        )
        try:
            client.execute()
        except Exception as err:  # a dead kernel (e.g. the submission called os._exit) and the like
            notes.append(f"execution stopped: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        flooded = getattr(client, "flooded", set())
    timed_out = ("CellTimeoutError", "TimeoutError", "KeyboardInterrupt")
    for index, cell in enumerate(nb.cells[1:n_submitted]):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                label = exercise_of(cell)
                where = f"exercise {label}" if label else "a chapter cell"
                kind = "timed out" if out.get("ename") in timed_out else f"raised {out.get('ename')}"
                notes.append(f"cell {index} ({where}) {kind}")
                if out.get("ename") in timed_out:
                    timeouts[label] = True
        if index + 1 in flooded:
            notes.append(f"cell {index} printed more than {client_cls.max_output} characters; the rest was "
                         "dropped")
    entries = []
    for e, cell in zip(exercises, nb.cells[n_submitted:]):
        result = None
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(nonce):
                    result = json.loads(line[len(nonce):])
        if result is None:
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors and errors[0].get("ename") in timed_out:
                reason = f"the graded tests ran past {exercise_timeout} s (an endless loop?)"
            elif errors:
                reason = f"grading failed: {errors[0].get('ename')}: {errors[0].get('evalue', '')[:200]}"
            else:
                reason = "grading produced no result (the kernel died or was stopped)"
            result = {"id": e.id, "points": 0.0, "max_points": float(e.points), "feedback": reason}
        if e.id not in present and result["points"] == 0:
            result["feedback"] = ("the exercise's answer cell is missing from the notebook; "
                                  f"{result['feedback']}")
        if timeouts.get(e.id):
            result["feedback"] = f"the answer cell timed out; {result['feedback']}"
        entries.append(result)
    return _report(submission, chapter, entries, written, notes, started)


def grade_all(folder, report_csv, chapter: str | None = None, **kwargs) -> list[dict]:
    """Grade every ``*.ipynb`` under ``folder`` into one CSV: a row per submission, a column per
    exercise, then total, max_total and the notes."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder of submissions, got {folder}")
    reports = [grade(path, chapter, **kwargs) for path in sorted(folder.glob("*.ipynb"))]
    ids = []
    for r in reports:
        ids += [e["id"] for e in r["exercises"] if e["id"] not in ids]
    report_csv = pathlib.Path(report_csv)
    tmp = report_csv.with_name(f".{report_csv.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "chapter", *ids, "total", "max_total", "notes"])
        for r in reports:
            points = {e["id"]: e["points"] for e in r["exercises"]}
            w.writerow([pathlib.Path(r["submission"]).name, r["chapter"], *(points.get(i, "") for i in ids),
                        r["total"], r["max_total"], " | ".join(r["notes"])])
    tmp.replace(report_csv)
    return reports
