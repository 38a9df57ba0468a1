"""The solution markers, and what replaces them in the student edition."""

from __future__ import annotations

import re

__all__ = ["BEGIN", "END", "SOLUTION_TAG", "has_solution", "stub_solutions", "strip_prose_solutions",
           "SolutionMarkerError"]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
SOLUTION_TAG = "solution"  # a whole cell that belongs to a solution (removed from the student edition)
_BEGIN = re.compile(r"^(\s*)#\s*BEGIN SOLUTION\b.*$")
_END = re.compile(r"^\s*#\s*END SOLUTION\b.*$")


class SolutionMarkerError(ValueError):
    """Unbalanced or nested solution markers."""


def has_solution(source: str) -> bool:
    return any(_BEGIN.match(line) for line in source.splitlines())


def stub_solutions(source: str, message: str, comment: str | None = None) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region by one line, at the
    indentation of its ``BEGIN`` line, that raises ``NotImplementedError(message)`` (after a line
    ``# comment`` if a comment is given)."""
    out, inside, where = [], False, None
    for number, line in enumerate(source.splitlines(), 1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if inside:
                raise SolutionMarkerError(
                    f"line {number}: BEGIN SOLUTION inside the region opened on line {where}")
            inside, where = True, number
            if comment:
                out.append(f"{begin.group(1)}# {comment}")
            out.append(f"{begin.group(1)}raise NotImplementedError({message!r})")
        elif end:
            if not inside:
                raise SolutionMarkerError(f"line {number}: END SOLUTION without a BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"line {where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(out)


# A {solution} directive in backtick fences (3 or more) or colon fences, with its whole body.
_FENCE_OPEN = re.compile(r"^(\s*)(`{3,}|:{3,})\{solution\}")


def strip_prose_solutions(markdown: str) -> str:
    """Remove every ``{solution}`` directive (and its body) from a markdown cell."""
    lines, out, i = markdown.splitlines(), [], 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence = m.group(2)
        close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise SolutionMarkerError(f"a {{solution}} directive opened with {fence} is never closed")
        i = j + 1
        while out and not out[-1].strip() and i < len(lines) and not lines[i].strip():
            i += 1  # do not leave two blank lines where the directive was
    return "\n".join(out).strip("\n")
