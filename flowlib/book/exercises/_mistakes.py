"""Recognising typical wrong answers: a check compares the reader's answer with the right one
and, when it is wrong, with the answers that known mistakes produce, and names the mistake."""

from __future__ import annotations

import torch

from .feedback import ExerciseError, check_close

__all__ = ["check_with_mistakes", "call_reader"]


def _close(got: torch.Tensor, value: torch.Tensor, atol: float, rtol: float) -> bool:
    value = torch.as_tensor(value, dtype=torch.float64)
    return got.shape == value.shape and bool(torch.isfinite(got).all()) and bool(
        ((got - value).abs() <= atol + rtol * value.abs()).all())


def check_with_mistakes(what: str, got, expected, mistakes: dict[str, torch.Tensor], *,
                        atol: float = 1e-8, rtol: float = 1e-6, hint: str | None = None) -> None:
    """Pass if ``got`` matches ``expected``; otherwise raise :class:`ExerciseError` naming the
    first entry of ``mistakes`` (message -> the answer that mistake gives) that ``got`` matches,
    or, if none does, the generic comparison of :func:`check_close` with ``hint``."""
    if isinstance(got, torch.Tensor) and torch.is_complex(got):
        raise ExerciseError(f"{what}: expected a real tensor, got a complex one ({got.dtype})")
    if isinstance(got, torch.Tensor):
        g = got.detach().to(torch.float64)
        if not _close(g, expected, atol, rtol):
            for message, wrong in mistakes.items():
                if _close(g, wrong, atol, rtol):
                    raise ExerciseError(f"{what}: not yet right. {message}")
    check_close(what, got, expected, atol=atol, rtol=rtol, hint=hint)


def call_reader(what: str, fn, *args):
    """Call the reader's function; turn a crash into an :class:`ExerciseError` that says where."""
    if not callable(fn):
        raise ExerciseError(f"{what}: expected a function, got {type(fn).__name__}")
    try:
        return fn(*args)
    except ExerciseError:
        raise
    except Exception as err:  # the reader's bug: report it as feedback, with its type
        raise ExerciseError(f"{what}: your function raised {type(err).__name__}: {err}") from err
