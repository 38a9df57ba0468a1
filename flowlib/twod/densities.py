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

Only U1 is a density on all of R^2. U2, U3 and U4 do not depend on ``z1``'s
size, so ``exp(-U)`` does not decay as ``|z1| -> infinity`` and its integral
over the plane diverges: their "KL divergence" is undefined and the free energy
can be lowered without end by spreading ``q`` along ``z1``. The paper shows
them on the box ``(-4, 4)^2``. :class:`Boxed` makes that box part of the target:
``U`` inside the box, plus a steep quadratic wall outside it, so that
``p = exp(-U_box) / Z`` is a proper density that equals the paper's
``exp(-U)`` (up to the constant) wherever the paper draws it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["U1", "U2", "U3", "U4", "TARGETS", "log_partition", "Boxed", "BOXED"]


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


class Boxed:
    """The target ``U`` confined to the box ``(-lim, lim)^2`` by a quadratic wall:

        U_box(z) = U(z) + sum_i max(|z_i| - lim, 0)^2 / (2 wall^2).

    Inside the box ``U_box = U``; outside, the density falls like a Gaussian of
    standard deviation ``wall``. With ``wall = 0.1`` about 3% of U2's mass lies
    outside the box (its ``z1``-marginal is flat on the box), and ``U_box`` is
    normalisable for all four targets, so ``KL(q || p) = F(q) + log Z`` is finite
    (Rezende & Mohamed 2015, eq. 15).
    """

    def __init__(self, U, lim: float = 4.0, wall: float = 0.1):
        if not callable(U):
            raise ValueError(f"Boxed: expected an energy function z -> U(z), got {type(U).__name__}")
        for name, value in (("lim", lim), ("wall", wall)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Boxed: {name} must be a positive number, got {value!r}")
        self.U, self.lim, self.wall = U, float(lim), float(wall)
        self.__name__ = f"{getattr(U, '__name__', 'U')}_box"

    def wall_energy(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_i max(|z_i| - lim, 0)^2 / (2 wall^2)``: zero inside the box."""
        excess = torch.relu(z.abs() - self.lim)
        return 0.5 * (excess / self.wall).pow(2).sum(-1)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.U(z) + self.wall_energy(z)

    def log_partition(self, n: int = 1000) -> float:
        """``log Z`` by a Riemann sum on ``(-L, L)^2`` with ``L = lim + 8 wall``, beyond which
        the wall leaves less than ``exp(-32)`` of the density."""
        return log_partition(self, lim=self.lim + 8 * self.wall, n=n)

    def __repr__(self) -> str:
        return f"Boxed({getattr(self.U, '__name__', self.U)!s}, lim={self.lim}, wall={self.wall})"


BOXED = {name: Boxed(U) for name, U in TARGETS.items()}
