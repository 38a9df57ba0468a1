"""Checks for the exercises of the chapter "Radial flows" (Rezende & Mohamed 2015, Sec. 4.1, A.2).

    f(z) = z + beta h(alpha, r) (z - z0),  r = ||z - z0||,  h = 1 / (alpha + r)        (eq. 14)
    log|det df/dz| = (D - 1) log|1 + beta h| + log|1 + beta h + beta h'(alpha, r) r|
    f^{-1}: r_y = r (1 + beta / (alpha + r)) is a quadratic in r with one positive root

Each check calls the reader's function in float64 on fixed random inputs and names the
usual mistakes when it recognises one. An answer not yet written (the student edition's stub)
fails with its own NotImplementedError.
"""

from __future__ import annotations

import torch

from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes

__all__ = ["check_radial_logdet", "check_radial_inverse"]


def _parameters(seed: int, B: int, D: int):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    alpha = torch.rand(B, generator=g, dtype=torch.float64) * 2 + 0.1
    beta = -alpha + torch.rand(B, generator=g, dtype=torch.float64) * 3  # beta >= -alpha
    z = z0 + 1.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    return z, z0, alpha, beta


def _logdet(z, z0, alpha, beta, power):
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    h_prime = -1 / (alpha + r) ** 2
    radial = torch.log(torch.abs(1 + beta * h + beta * h_prime * r))
    return power * torch.log(torch.abs(1 + beta * h)) + radial


def check_radial_logdet(logdet_fn) -> None:
    """Check ``logdet_fn(z, z0, alpha, beta)``: ``log|det df/dz|`` of shape ``(B,)`` for ``z, z0`` of
    shape ``(B, D)`` and ``alpha, beta`` of shape ``(B,)``; tried with ``D = 2`` and ``D = 5``."""
    what = "log|det df/dz| of a radial layer"
    for D, seed in ((2, 31), (5, 32)):
        z, z0, alpha, beta = _parameters(seed, 48, D)
        got = call_reader(what, logdet_fn, z.clone(), z0.clone(), alpha.clone(), beta.clone())
        r = (z - z0).norm(dim=-1)
        check_with_mistakes(f"{what} (D = {D})", got, _logdet(z, z0, alpha, beta, D - 1), {
            "The factor (1 + beta h) appears D - 1 times, once for each direction orthogonal to "
            "z - z0; you have it once.": _logdet(z, z0, alpha, beta, 1),
            "The factor (1 + beta h) appears D - 1 times, not D times.": _logdet(z, z0, alpha, beta, D),
            "You left out the radial term beta h'(alpha, r) r, with h' = -1 / (alpha + r)^2.":
                D * torch.log(torch.abs(1 + beta / (alpha + r))),
        }, hint="J = (1 + beta h) I + beta h' (z - z0)(z - z0)^T / r; use the matrix determinant lemma")


def check_radial_inverse(inverse_fn) -> None:
    """Check ``inverse_fn(y, z0, alpha, beta)``: the ``z`` with ``f(z) = y`` (shape ``(B, D)``)."""
    what = "the inverse of a radial layer"
    z, z0, alpha, beta = _parameters(33, 64, 3)
    r = (z - z0).norm(dim=-1, keepdim=True)
    y = z + (beta[:, None] / (alpha[:, None] + r)) * (z - z0)
    got = call_reader(what, inverse_fn, y.clone(), z0.clone(), alpha.clone(), beta.clone())
    r_y = (y - z0).norm(dim=-1, keepdim=True)
    check_with_mistakes(what, got, z, {
        "You scaled y - z0 by 1 / (1 + beta / (alpha + r_y)) with r_y = ||y - z0||: the factor depends on "
        "r = ||z - z0||, the unknown. Solve r_y = r (alpha + beta + r) / (alpha + r) for r first.":
            z0 + (y - z0) / (1 + beta[:, None] / (alpha[:, None] + r_y)),
        "You applied the forward map instead of inverting it.":
            y + (beta[:, None] / (alpha[:, None] + r_y)) * (y - z0),
    }, atol=1e-8, rtol=1e-8,
        hint="r^2 + (alpha + beta - r_y) r - alpha r_y = 0 has one positive root; then "
             "z = z0 + (y - z0) (alpha + r) / (alpha + beta + r)")
