"""What a chapter's graded tests are written with (``coursework/graded/<chapter>.py``).

A graded module defines ``EXERCISES``, a list of :class:`Exercise`: the exercise label, its
points, the names the student's notebook must define, and a test that receives those objects
and returns a :class:`Grade`. Graded tests use other inputs than the public feedback checks of
``flowlib.book.exercises`` and are not in the student handout. ``WRITTEN`` maps the labels of the
pen-and-paper exercises to their points (graded by hand with the instructor guide's rubric).
"""

from __future__ import annotations

import importlib.util
import pathlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Grade", "Exercise", "run_exercise", "load_module", "load_beside"]


def load_module(path: pathlib.Path, name: str):
    """Execute the Python file ``path`` as a fresh module called ``name`` (not put in sys.modules).

    The graded folder is not a package: the grader loads its files by path, in the student's kernel.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_beside(graded_file: str, helpers: str):
    """The shared helpers file ``helpers`` (e.g. ``"_part1.py"``) beside the graded file ``graded_file``."""
    path = pathlib.Path(graded_file).with_name(helpers)
    return load_module(path, f"_graded{path.stem}")


class Grade:
    """Points earned part by part, with feedback naming what failed."""

    def __init__(self, max_points: float):
        self.max_points, self.points, self.notes = float(max_points), 0.0, []

    def check(self, passed, points: float, what: str, hint: str = "") -> bool:
        """Award ``points`` if ``passed``; otherwise record ``what`` failed (and a ``hint``)."""
        passed = bool(passed)
        if passed:
            self.points += points
        else:
            self.notes.append(f"{what} (-{points:g})" + (f": {hint}" if hint else ""))
        return passed

    def feedback(self) -> str:
        if not self.notes:
            return "all graded tests passed"
        return "; ".join(self.notes)


@dataclass(frozen=True)
class Exercise:
    id: str
    points: float
    names: tuple[str, ...]
    test: Callable[..., Grade]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_exercise(exercises, label: str, namespace: dict) -> dict:
    """Grade one exercise against the objects in ``namespace`` (the executed notebook's globals)."""
    by_id = {e.id: e for e in exercises}
    exercise = by_id[label]
    result = {"id": label, "points": 0.0, "max_points": float(exercise.points)}
    missing = [n for n in exercise.names if n not in namespace]
    if missing:
        result["feedback"] = (f"{', '.join(missing)} not defined: the answer cell of this exercise is "
                              "missing or did not run")
        return result
    try:
        grade = exercise.test(*(namespace[n] for n in exercise.names))
    except NotImplementedError:
        result["feedback"] = "not attempted: the answer still raises NotImplementedError"
        return result
    except TimeoutError:
        result["feedback"] = "the graded tests ran past their time limit (an endless loop?)"
        return result
    except Exception as err:  # untrusted code: any failure is 0 points with its reason
        where = traceback.extract_tb(err.__traceback__)[-1]
        result["feedback"] = _short(f"{type(err).__name__}: {err} (at {where.name}, line {where.lineno})")
        return result
    result["points"] = round(min(max(grade.points, 0.0), exercise.points), 4)
    result["feedback"] = _short(grade.feedback(), 1000)
    return result
