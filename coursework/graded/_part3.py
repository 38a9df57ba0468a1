"""What the graded tests of part III (chapters 10 and 11) share: calling the student's function safely,
comparing its result (a number or a tensor) with a reference, and grading one part of an exercise with
the typical mistake its result matches named. Loaded by path from those modules (``coursework/graded``
is not a package)."""

from __future__ import annotations

import torch

__all__ = ["F64", "rng", "call", "wrong", "part", "number", "numbers"]

F64 = torch.float64


def rng(seed: int) -> torch.Generator:
    """A generator seeded with ``seed``: every graded input is drawn from one."""
    return torch.Generator().manual_seed(seed)


def call(fn, *args):
    """``(result, None)`` for ``fn`` called on copies of ``args``, or ``(None, what went wrong)``. The
    stub's ``NotImplementedError`` and the grader's ``TimeoutError`` propagate (the harness reports them
    as "not attempted" and "ran past its time limit")."""
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        return fn(*copies), None
    except (NotImplementedError, TimeoutError):
        raise
    except Exception as err:  # the student's bug: this part gets 0 points, with the error named
        return None, " ".join(f"your function raised {type(err).__name__}: {err}".split())[:200]


def number(value):
    """``value`` as a float if it is one number (Python, NumPy, or a one-element tensor), else ``None``."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(-1)[0]) if value.numel() == 1 else None
    if isinstance(value, (bool, str)) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def numbers(fn, inputs, what: str = "a number"):
    """``(float64 tensor of fn(x) for every x of inputs, None)``, or ``(None, what went wrong)`` for the
    first call that raised or did not return one number."""
    values = []
    for x in inputs:
        got, error = call(fn, x)
        if error:
            return None, error
        value = number(got)
        if value is None:
            return None, f"returned a {type(got).__name__}, not {what}"
        values.append(value)
    return torch.tensor(values, dtype=F64), None


def wrong(got, expected, atol: float, rtol: float) -> str | None:
    """``None`` if ``got`` matches ``expected`` (a float, compared with any number; or a tensor, compared
    in float64 with a tensor of its shape) within ``atol + rtol |expected|``; else what is wrong."""
    if not isinstance(expected, torch.Tensor):
        value = number(got)
        if value is None:
            return f"returned a {type(got).__name__}, not a number"
        if value != value or abs(value) == float("inf"):
            return "returned nan or inf"
        if abs(value - expected) > atol + rtol * abs(expected):
            return f"returned {value:.6g}, expected {expected:.6g}"
        return None
    if not isinstance(got, torch.Tensor):
        return f"returned a {type(got).__name__}, not a tensor"
    if tuple(got.shape) != tuple(expected.shape):
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got, expected = got.detach().to(torch.float64), expected.detach().to(torch.float64)
    finite = torch.isfinite(expected)
    if not torch.equal(torch.isfinite(got), finite) or not torch.equal(got[~finite], expected[~finite]):
        return "the result contains nan or inf" if finite.all() else "the result is not the expected inf"
    got, expected = got[finite], expected[finite]  # a mistake's answer may be inf: it is matched exactly
    diff = (got - expected).abs()
    bad = diff > atol + rtol * expected.abs()
    if bad.any():
        return f"{int(bad.sum())} of {bad.numel()} values are wrong, by up to {float(diff.max()):.3g}"
    return None


def part(grade, points: float, what: str, got, expected, mistakes: dict | None = None, hint: str = "",
         atol: float = 1e-8, rtol: float = 1e-8, compare=None) -> bool:
    """Grade one part: ``got`` is what :func:`call` returned. Full ``points`` if its result matches
    ``expected``; otherwise 0, with what is wrong and, as the hint, the first of ``mistakes`` (message ->
    the result that mistake gives on these inputs) that the result matches, or else ``hint``. A hint
    already given in an earlier part is not repeated. ``compare(got, expected)`` (by default
    :func:`wrong` with ``atol`` and ``rtol``) says what is wrong, or ``None``."""
    value, error = got
    problem = error or (compare(value, expected) if compare else wrong(value, expected, atol, rtol))
    if problem and not error:  # a mistake's answer is matched a little more loosely (float32 answers)
        like = compare or (lambda g, e: wrong(g, e, max(atol, 1e-5), max(rtol, 1e-5)))
        named = [m for m, bad in (mistakes or {}).items() if like(value, bad) is None]
        hint = named[0] if named else hint
    elif error:
        hint = ""  # the error says what happened
    if hint and any(hint in note for note in grade.notes):
        hint = "the same as above"
    return grade.check(problem is None, points, f"{what}: {problem}" if problem else what, hint)
