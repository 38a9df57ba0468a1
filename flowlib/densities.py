"""The four unnormalised 2-D target densities of Rezende & Mohamed (2015), Table 1
and Figure 3: ``p(z) ∝ exp(-U(z))``.

Each ``U`` takes ``z`` of shape ``(B, 2)`` and returns the energy ``U(z)`` of
shape ``(B,)``. With

    w1(z) = sin(2 pi z1 / 4),  w2(z) = 3 exp(-((z1 - 1) / 0.6)^2 / 2),
    w3(z) = 3 sigmoid((z1 - 1) / 0.3),

    U1(z) = ((||z|| - 2) / 0.4)^2 / 2
            - ln(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))
    U2(z) = ((z2 - w1) / 0.4)^2 / 2
    U3(z) = -ln(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))
    U4(z) = -ln(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))

The ``-ln(exp(a) + exp(b))`` terms are evaluated as ``-logsumexp`` so that
they stay finite far from the modes.
"""

from __future__ import annotations

import math

import torch

__all__ = ["U1", "U2", "U3", "U4", "TARGETS", "log_partition"]


def _check(z, name: str) -> None:
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name}: expected z as a torch.Tensor of shape (B, 2), got {type(z).__name__}")
    if z.dim() != 2 or z.shape[1] != 2:
        raise ValueError(f"{name}: expected z of shape (B, 2), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point z, got {z.dtype}")


def _w1(z1):
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1):
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1):
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _neg_log_sum_exp(a, b):
    return -torch.logaddexp(a, b)


def U1(z: torch.Tensor) -> torch.Tensor:
    """A ring of radius 2 with two modes on the z1 axis."""
    _check(z, "U1")
    z1 = z[:, 0]
    ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
    return ring + _neg_log_sum_exp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def U2(z: torch.Tensor) -> torch.Tensor:
    """A sine wave."""
    _check(z, "U2")
    return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


def U3(z: torch.Tensor) -> torch.Tensor:
    """A sine wave that splits in two near z1 = 1."""
    _check(z, "U3")
    z1, z2 = z[:, 0], z[:, 1]
    a = -0.5 * ((z2 - _w1(z1)) / 0.35) ** 2
    b = -0.5 * ((z2 - _w1(z1) + _w2(z1)) / 0.35) ** 2
    return _neg_log_sum_exp(a, b)


def U4(z: torch.Tensor) -> torch.Tensor:
    """A sine wave with a second, shifted branch for z1 > 1."""
    _check(z, "U4")
    z1, z2 = z[:, 0], z[:, 1]
    a = -0.5 * ((z2 - _w1(z1)) / 0.4) ** 2
    b = -0.5 * ((z2 - _w1(z1) + _w3(z1)) / 0.35) ** 2
    return _neg_log_sum_exp(a, b)


TARGETS = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


def log_partition(U, lim: float = 4.0, n: int = 800) -> float:
    """``log Z = log integral exp(-U(z)) dz`` over the box ``(-lim, lim)^2``, by a Riemann sum.

    With ``log Z`` the reverse KL follows from the free energy:
    ``KL(q || p) = F(q) + log Z`` (Rezende & Mohamed 2015, eq. 15).

    Only U1 is normalisable on all of R^2: U2, U3 and U4 do not depend on
    ``||z||`` and stay bounded as ``|z1| -> infinity``, so their integral over
    the plane diverges. The paper plots them on ``(-4, 4)^2``; ``log Z`` is
    therefore computed on that box, which is the target it defines.
    """
    from .grid import Grid2D

    grid = Grid2D(lim, n)
    return float(grid.log_normalizer(-U(grid.points)))
