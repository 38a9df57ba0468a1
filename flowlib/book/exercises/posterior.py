"""Checks for the exercises of the chapter "Looking at the posterior" (a VAE with z in R^2)."""

from __future__ import annotations

import math

import torch

from ...twod.grid import Grid2D
from ._answers import call_answer
from .feedback import ExerciseError, check_close

__all__ = ["check_grid_posterior", "check_typical_radius", "check_diag_gaussian_kl"]


def _close(got, expected, atol=1e-6) -> bool:
    try:
        got = torch.as_tensor(got, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == expected.shape and bool(torch.isfinite(got).all()) and \
        bool(((got - expected).abs() <= atol + 1e-6 * expected.abs()).all())


def _example(seed: int = 0):
    """A log-joint on a grid with values near -1000 nats, as a VAE's ``log p(x, z)`` has for a large
    or badly explained image: ``exp`` of it underflows to 0 even in float64."""
    grid = Grid2D(n=30, xlim=(-1.0, 2.0), ylim=(0.5, 2.0))  # cells of area 0.1 * 0.05
    g = torch.Generator().manual_seed(seed)
    z = grid.points
    centre = torch.tensor([0.4, 1.1], dtype=torch.float64)
    lj = -1000.0 - 8.0 * ((z - centre) ** 2).sum(1) + 0.3 * torch.randn(len(z), generator=g, dtype=z.dtype)
    return grid, lj


def check_grid_posterior(fn) -> None:
    """``fn(log_joint, cell_area)`` must return ``(log_post, log_px)``: the evidence
    ``log p(x) = log sum_ij exp(log_joint_ij) dA`` (a float or 0-d tensor) and the posterior
    ``log p(z | x) = log_joint - log p(x)`` on the grid (same shape as ``log_joint``)."""
    grid, lj = _example()
    out = call_answer("grid_posterior", fn, lj.clone(), grid.cell_area)
    if not isinstance(out, tuple) or len(out) != 2:
        raise ExerciseError("grid_posterior: expected a tuple (log_post, log_px)")
    log_post, log_px = out
    expected_px = torch.logsumexp(lj, 0) + math.log(grid.cell_area)
    mistakes = {
        "log p(x) is the log of a plain sum without the cell area dA: a Riemann sum multiplies each "
        "value by the area of its cell (add log dA).": torch.logsumexp(lj, 0),
        "log p(x) is the largest log-joint value (a maximum, not an integral): sum over all cells.":
            lj.max(),
        "log p(x) is the mean of the log-joint values: the evidence is the log of the sum of exp(.), "
        "not the sum (or mean) of the logs.": lj.mean(),
    }
    if not _close(log_px, expected_px):
        for message, wrong in mistakes.items():
            if _close(log_px, wrong):
                raise ExerciseError(f"grid_posterior: {message}")
        got = torch.as_tensor(log_px, dtype=torch.float64)
        if got.numel() == 1 and not torch.isfinite(got).all():
            raise ExerciseError("grid_posterior: log p(x) is not finite. exp(-1000) underflows to 0 in "
                                "floating point: use torch.logsumexp, which subtracts the maximum first.")
    check_close("log p(x) on the grid", log_px, expected_px, atol=1e-8,
                hint="log p(x) = torch.logsumexp(log_joint, 0) + math.log(cell_area)")
    check_close("log p(z | x) on the grid", log_post, lj - expected_px, atol=1e-8,
                hint="subtract log p(x) from every value of log_joint; then exp(log_post) sums to 1 / dA")


def check_typical_radius(r) -> None:
    """``r`` must be the radius of the disc that holds 99% of the mass of ``N(0, I_2)``; or a function
    ``r(p)`` of the fraction ``p`` of the mass, which is checked at ``p = 0.99``."""
    if callable(r):
        r = call_answer("typical_radius(0.99)", r, 0.99)
    if isinstance(r, bool) or not isinstance(r, (int, float, torch.Tensor)):
        raise ExerciseError(f"typical radius: expected a number, got {type(r).__name__}")
    expected = math.sqrt(-2.0 * math.log(0.01))
    mistakes = {
        2.5758: "that is the 99% two-sided quantile of ONE standard normal coordinate; in two dimensions "
                "||z||^2 = z1^2 + z2^2 follows a chi-squared law with 2 degrees of freedom.",
        2.3263: "that is the 99% one-sided quantile of one standard normal coordinate; the question is "
                "about the norm of a 2-D vector.",
        expected**2: "that is the radius squared: P(||z||^2 > t) = exp(-t / 2), so t = -2 ln 0.01 "
                     "is r^2; take its square root.",
        math.sqrt(-2.0 * math.log(0.99)): "that disc holds 1% of the mass, not 99%: solve "
                                          "exp(-r^2 / 2) = 0.01.",
    }
    value = float(r)
    for wrong, message in mistakes.items():
        if abs(value - wrong) < 1e-3 and abs(value - expected) > 1e-3:
            raise ExerciseError(f"typical radius: {value:.4f} is not it; {message}")
    check_close("the radius of the 99% disc of N(0, I_2)", value, expected, atol=1e-4, rtol=0,
                hint="in 2-D, P(||z|| > r) = exp(-r^2 / 2) (the chi-squared law with 2 degrees of "
                     "freedom is an exponential law with mean 2)")


def check_diag_gaussian_kl(fn) -> None:
    """``fn(a, t, b, s)`` must return KL(N(a, diag t^2) || N(b, diag s^2)) for each row: means ``a``, ``b``
    and standard deviations ``t``, ``s`` of shape ``(..., D)``, the result of shape ``(...)``."""
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    t, s = 0.05 + torch.rand(2, 5, 2, generator=g, dtype=torch.float64)

    def per_coordinate(a, t, b, s):
        return torch.log(s / t) + (t**2 + (a - b) ** 2) / (2 * s**2) - 0.5

    expected = per_coordinate(a, t, b, s).sum(-1)
    mistakes = {
        "the arguments' roles are swapped: that is KL(p || q); the expectation is under q = N(a, diag t^2), "
        "so the squares are divided by s^2, the variances of p": per_coordinate(b, s, a, t).sum(-1),
        "the result has one value per coordinate: sum over the last axis (the coordinates are "
        "independent, so their KLs add)": per_coordinate(a, t, b, s),
        "the constant -1/2 per coordinate is missing": expected + 0.5 * a.shape[-1],
        "ln(s / t) is the log of the ratio of standard deviations; you used the variances (ln(s^2 / t^2))":
            expected + torch.log(s / t).sum(-1),
        "you summed over the batch too: return one KL per row": expected.sum(),
    }
    got = call_answer("diag_gaussian_kl", fn, a.clone(), t.clone(), b.clone(), s.clone())
    if not _close(got, expected):
        for message, wrong in mistakes.items():
            if _close(got, wrong):
                raise ExerciseError(f"diag_gaussian_kl: {message}")
    check_close("KL(N(a, diag t^2) || N(b, diag s^2)) for 5 pairs in D = 2", got, expected, atol=1e-9,
                hint="sum over the coordinates of ln(s/t) + (t^2 + (a - b)^2) / (2 s^2) - 1/2")
