"""What the graded tests of chapters 04-06 (planar, radial, volume-preserving flows) share: calling an
answer safely, grading one part of it against a reference, and naming the typical mistake a wrong
answer matches. Loaded by path from those modules (``coursework/graded`` is not a package)."""

from __future__ import annotations

import torch

from flowlib.book.coursework.harness import Grade

__all__ = ["answer", "problem", "part", "uses", "own_work"]


def answer(fn, *args):
    """``(result, None)`` for the answer ``fn`` called on copies of ``args``, or ``(None, what went
    wrong)``. The stub's ``NotImplementedError`` and the grader's ``TimeoutError`` propagate (the
    harness reports them as "not attempted" and "ran past its time limit")."""
    try:
        return fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args)), None
    except (NotImplementedError, TimeoutError):
        raise
    except Exception as err:  # the answer's bug: this part gets 0 points, with the error named
        return None, " ".join(f"raised {type(err).__name__}: {err}".split())[:200]


def problem(got, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    """``None`` if ``got`` is a tensor of ``expected``'s shape with values within ``atol + rtol |expected|``
    of it (compared in float64); otherwise what is wrong with it."""
    if not isinstance(got, torch.Tensor):
        return f"returned a {type(got).__name__}, not a tensor"
    if tuple(got.shape) != tuple(expected.shape):
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got = got.detach().to(torch.float64)
    if not torch.isfinite(got).all():
        return "the result contains nan or inf"
    diff = (got - expected).abs()
    bad = diff > atol + rtol * expected.abs()
    if bad.any():
        return f"{int(bad.sum())} of {bad.numel()} values are wrong, by up to {float(diff.max()):.3g}"
    return None


def part(grade, points: float, what: str, got, expected: torch.Tensor, mistakes: dict | None = None,
         hint: str = "", atol: float = 1e-8, rtol: float = 1e-6) -> bool:
    """Grade one part: ``got`` is what :func:`answer` returned. Full ``points`` if it matches ``expected``;
    otherwise 0, with what is wrong and, as the hint, the first of ``mistakes`` (message -> the answer
    that mistake gives on these inputs) that the result matches, or else ``hint``. No hint when the
    answer raised (its error is named), and a hint already given for an earlier part is not repeated."""
    value, error = got
    wrong = error or problem(value, expected, atol, rtol)
    if error:
        hint = ""  # the error says what happened
    elif wrong:
        named = [m for m, bad in (mistakes or {}).items() if problem(value, bad, atol, rtol) is None]
        hint = named[0] if named else hint
    if hint and any(hint in note for note in grade.notes):
        hint = "the same as above"  # said once is enough
    return grade.check(wrong is None, points, f"{what}: {wrong}" if wrong else what, hint)


def uses(fn, names) -> set[str]:
    """Which of ``names`` the code of ``fn`` (with the functions defined inside it) refers to: globals and
    attributes such as ``planar_inverse`` or ``layer.inverse``. A name reached through an alias defined
    outside ``fn`` is not seen."""
    found, codes = set(), [getattr(fn, "__code__", None)]
    while codes:
        code = codes.pop()
        if code is not None:
            found |= set(code.co_names) & set(names)
            codes += [c for c in code.co_consts if hasattr(c, "co_names")]
    return found



def own_work(names, points: float, task: str):
    """Decorator of a graded test: an answer that calls one of flowlib's own implementations ``names``
    (see :func:`uses`) instead of doing the exercise, which is to ``task``, gets 0 of ``points``, and
    the feedback says why; any other answer goes to the test."""
    def decorate(test):
        def graded(fn):
            called = uses(fn, names)
            if not called:
                return test(fn)
            grade = Grade(points)
            grade.check(False, points, f"the answer calls flowlib's {', '.join(sorted(called))}",
                        f"the exercise asks you to {task}")
            return grade

        return graded

    return decorate
