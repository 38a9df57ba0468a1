"""Shared feedback for exercise checks: compare, explain, hint."""

from __future__ import annotations

import torch

__all__ = ["ExerciseError", "check_close", "passed"]


class ExerciseError(AssertionError):
    """An answer is wrong; the message says what was expected, what was got, and a hint."""


def passed(what: str) -> None:
    """Tell the reader that ``what`` is right."""
    print(f"Correct: {what}.")


def check_close(what: str, got, expected, *, atol: float = 1e-6, rtol: float = 1e-5,
                hint: str | None = None) -> None:
    """Raise :class:`ExerciseError` unless ``got`` matches ``expected`` (shape and values).

    ``got`` may be a number or a tensor; it is compared in float64. The error
    names the largest difference and where it occurred, then the hint.
    """
    expected = torch.as_tensor(expected, dtype=torch.float64)
    if not isinstance(got, (torch.Tensor, int, float)) or isinstance(got, bool):
        raise ExerciseError(f"{what}: expected a number or a torch.Tensor, got {type(got).__name__}")
    got = torch.as_tensor(got).detach().to(torch.float64)
    if got.shape != expected.shape:
        raise ExerciseError(
            f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            + (f"\nHint: {hint}" if hint else "")
        )
    if not torch.isfinite(got).all():
        raise ExerciseError(f"{what}: your answer contains nan or inf" + (f"\nHint: {hint}" if hint else ""))
    diff = (got - expected).abs()
    bad = diff > atol + rtol * expected.abs()
    if bad.any():
        i = int(diff.reshape(-1).argmax())
        where = f" at index {tuple(int(k) for k in torch.unravel_index(torch.tensor(i), diff.shape))}" \
            if diff.dim() else ""
        raise ExerciseError(
            f"{what}: {int(bad.sum())} of {bad.numel()} values are off; the largest difference is "
            f"{float(diff.reshape(-1)[i]):.3g}{where} (got {float(got.reshape(-1)[i]):.6g}, "
            f"expected {float(expected.reshape(-1)[i]):.6g})" + (f"\nHint: {hint}" if hint else "")
        )
    passed(what)
