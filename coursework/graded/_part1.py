"""What the graded tests of part I (chapters 01-03) share: calling the student's function part by part,
and comparing its result. Loaded by path from those modules (``coursework/graded`` is no package)."""

from __future__ import annotations

import contextlib
import functools

import torch


def call(fn, *args):
    """``(result, None)``, or ``(None, "raised X: ...")`` if the student's ``fn`` raised. The stub's
    ``NotImplementedError`` propagates: the grader reports the exercise as not attempted."""
    try:
        return fn(*args), None
    except NotImplementedError:
        raise
    except Exception as err:  # the student's bug: this part fails, the others are still graded
        return None, f"your function raised {type(err).__name__}: {' '.join(str(err).split())[:160]}"


def close(got, expected: torch.Tensor, atol: float = 1e-8, rtol: float = 1e-6) -> bool:
    """``got`` is a finite tensor of ``expected``'s shape whose values match it (compared in float64)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    got = got.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    within = (got - expected).abs() <= atol + rtol * expected.abs()
    return bool(torch.isfinite(got).all()) and bool(within.all())


def diagnose(got, error: str | None, expected: torch.Tensor, mistakes: dict[str, torch.Tensor], default: str,
             atol: float = 1e-8, rtol: float = 1e-6) -> str:
    """The hint for a wrong answer: the error it raised, the typical mistake whose answer it matches,
    or what is wrong with it (type, shape, nan or inf, values) followed by ``default``."""
    if error:
        return error
    for hint, wrong in mistakes.items():
        if close(got, wrong, atol, rtol):
            return hint
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}; {default}"
    if not torch.isfinite(got).all():
        return f"your result contains nan or inf; {default}"
    return default


DETERMINANTS = [(torch.linalg, "det"), (torch.linalg, "slogdet"), (torch, "det"), (torch, "slogdet"),
                (torch, "logdet"), (torch.Tensor, "det"), (torch.Tensor, "slogdet"), (torch.Tensor, "logdet")]
INVERSES = [(torch.linalg, "inv"), (torch.linalg, "inv_ex"), (torch.linalg, "solve"),
            (torch.linalg, "solve_ex"), (torch.linalg, "pinv"), (torch.linalg, "lstsq"), (torch, "inverse"),
            (torch, "pinverse"), (torch.Tensor, "inverse"), (torch.Tensor, "pinverse")]


@contextlib.contextmanager
def watching(targets):
    """Record the shape of the matrix argument of every call to the functions ``targets`` (pairs
    ``(owner, name)``, e.g. ``(torch.linalg, "slogdet")``) while the block runs; yields the list of
    ``(name, shape)``. The functions still work, and are restored afterwards."""
    calls, saved = [], []

    def wrap(name, fn):
        @functools.wraps(fn)
        def watched(*args, **kwargs):
            matrix = next((a for a in args if isinstance(a, torch.Tensor)), None)
            calls.append((name, tuple(matrix.shape) if matrix is not None else ()))
            return fn(*args, **kwargs)

        return watched

    try:
        for owner, name in targets:
            fn = getattr(owner, name, None)
            if fn is not None:
                saved.append((owner, name, fn))
                setattr(owner, name, wrap(name, fn))
        yield calls
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def single_threaded(test):
    """Run a graded test with one torch thread, and stay there. With the MKL of PyTorch 2.15, once the
    thread count has been set to 1 and back up (chapter 03 measures its timings on one thread; no
    factorisation in between is needed: ``set_num_threads(1); set_num_threads(2)`` is enough), a
    batched slogdet or inv of large matrices at two threads loops on 'Intel oneMKL ERROR: Parameter 6
    was incorrect on entry to DLASWP' and never returns; at one thread it runs. So the count is not
    restored afterwards: restoring it is what would arm the hang for the next call at two threads."""
    @functools.wraps(test)
    def run(*args):
        torch.set_num_threads(1)
        return test(*args)

    return run


def check_part(grade, fn, args, expected: torch.Tensor, points: float, what: str, mistakes: dict, hint: str,
               atol: float = 1e-8, rtol: float = 1e-6) -> bool:
    """Call the student's ``fn(*args)`` and award ``points`` if it returns ``expected``; otherwise record
    ``what`` failed, with the hint :func:`diagnose` finds (``mistakes`` maps hints to wrong answers)."""
    got, error = call(fn, *args)
    return grade.check(close(got, expected, atol, rtol), points, what,
                       diagnose(got, error, expected, mistakes, hint, atol, rtol))
