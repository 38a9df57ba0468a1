"""Checks for the exercises of the chapter "Change of variables".

Each ``check_*`` calls the reader's function on fixed points in float64, compares it
with the change of variables formula

    log p_Y(y) = log p_X(f^{-1}(y)) + log|d f^{-1}(y) / dy|,

recognises the usual mistakes (no Jacobian term, its sign flipped, a density instead of
a log-density, a preimage missing) and says which one it found.
"""

from __future__ import annotations

import math

import torch

from ..widgets.change_of_variables import get_map, log_density
from ._answers import call_answer
from ._mistakes import check_with_mistakes

__all__ = ["check_logit_normal", "check_square_of_normal", "check_banana_density"]

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_normal_1d(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x * x - LOG_SQRT_2PI


def logit_normal_log_density(y: torch.Tensor) -> torch.Tensor:
    """``log p_Y(y)`` for ``Y = sigmoid(X)``, ``X ~ N(0, 1)``; ``y`` in ``(0, 1)``."""
    return _log_normal_1d(torch.logit(y)) - torch.log(y * (1 - y))


def check_logit_normal(log_density_y) -> None:
    """Check ``log_density_y(y)``: the log-density of ``Y = sigmoid(X)``, ``X ~ N(0, 1)``,
    at a tensor ``y`` of points in ``(0, 1)``."""
    what = "log-density of Y = sigmoid(X)"
    y = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    got = call_answer(what, log_density_y, y.clone())
    expected = logit_normal_log_density(y)
    jacobian = -torch.log(y * (1 - y))  # log|d logit(y) / dy|
    check_with_mistakes(what, got, expected, {
        "You return log p_X(f^{-1}(y)) only: the Jacobian term log|d f^{-1}/dy| = -log(y (1 - y)) "
        "is missing.": expected - jacobian,
        "The Jacobian term has the wrong sign: the density of y = f(x) DIVIDES by |f'(x)| = y (1 - y), "
        "so its log is subtracted.": expected - 2 * jacobian,
        "You return the density itself; return its logarithm.": expected.exp(),
    }, hint="log p_Y(y) = log N(logit(y); 0, 1) - log(y (1 - y))")


def square_of_normal_log_density(y: torch.Tensor) -> torch.Tensor:
    """``log p_Y(y)`` for ``Y = X^2``, ``X ~ N(0, 1)`` (a chi-square with one degree of freedom):
    the preimages ``+-sqrt(y)`` each contribute ``p_X(sqrt(y)) / (2 sqrt(y))``."""
    return _log_normal_1d(torch.sqrt(y)) - 0.5 * torch.log(y)


def check_square_of_normal(log_density_y) -> None:
    """Check ``log_density_y(y)``: the log-density of ``Y = X^2``, ``X ~ N(0, 1)``, at ``y > 0``."""
    what = "log-density of Y = X^2"
    y = torch.linspace(0.05, 6.0, 60, dtype=torch.float64)
    got = call_answer(what, log_density_y, y.clone())
    expected = square_of_normal_log_density(y)
    check_with_mistakes(what, got, expected, {
        "You count one preimage only: y = x^2 has two, x = +sqrt(y) and x = -sqrt(y), and the density "
        "of y is the SUM of their contributions (here twice one of them).": expected - math.log(2),
        "The Jacobian term is missing: each preimage contributes p_X(x) / |f'(x)| with "
        "|f'(x)| = 2 sqrt(y).": expected + math.log(2) + 0.5 * torch.log(y),
        "The Jacobian term has the wrong sign: divide by |f'(x)| = 2 sqrt(y), do not multiply.":
            expected + 2 * (math.log(2) + 0.5 * torch.log(y)),
        "You return the density itself; return its logarithm.": expected.exp(),
    }, hint="p_Y(y) = [p_X(sqrt(y)) + p_X(-sqrt(y))] / (2 sqrt(y))")


def check_banana_density(log_density_y, strength: float = 1.0) -> None:
    """Check ``log_density_y(y)``: the log-density of ``y = f(x)``, ``x ~ N(0, I_2)``, for the
    banana map ``y1 = x1``, ``y2 = x2 exp(0.4 s x1) + s (x1^2 - 1)`` with ``s = strength``,
    at a tensor ``y`` of shape ``(N, 2)``."""
    what = f"log-density of the banana map with s = {strength}"
    f = get_map("banana", strength)
    y = torch.randn(64, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 1.5
    got = call_answer(what, log_density_y, y.clone())
    expected = log_density(f, y)
    log_det_inv = -0.4 * strength * y[:, 0]
    check_with_mistakes(what, got, expected, {
        "The Jacobian term is missing: add log|det J_{f^{-1}}(y)| = -0.4 s y1.": expected - log_det_inv,
        "The Jacobian term has the wrong sign: log|det J_{f^{-1}}(y)| = -log|det J_f(x)| = -0.4 s y1.":
            expected - 2 * log_det_inv,
        "You return the density itself; return its logarithm.": expected.exp(),
        "The Gaussian's normalising constant is off: log N(x; 0, I_2) = -|x|^2 / 2 - log(2 pi) in 2-D.":
            expected + math.log(2 * math.pi) / 2,
    }, hint="invert the map: x1 = y1, x2 = (y2 - s (y1^2 - 1)) exp(-0.4 s y1); then add the log-det")
