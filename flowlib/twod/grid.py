"""A regular 2-D grid for evaluating, normalising and plotting densities.

Two-dimensional densities are the book's microscope: on a fine grid an
unnormalised density ``exp(-U(z))`` can be normalised by a Riemann sum,

    Z ~= sum_ij exp(-U(z_ij)) * dA,

and a KL divergence between two densities on the grid computed the same way.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Grid2D"]


class Grid2D:
    """The ``n x n`` cell centres of the box ``xlim x ylim``.

    ``points`` has shape ``(n * n, 2)``; ``reshape(values)`` turns a vector of
    ``n * n`` values on those points into an ``(n, n)`` image whose row ``i`` is
    ``y[i]`` and column ``j`` is ``x[j]`` (the convention of ``plt.contourf(x, y, img)``
    and of ``imshow(..., origin="lower", extent=grid.extent)``).
    """

    def __init__(self, lim: float = 4.0, n: int = 200, *, xlim: tuple[float, float] | None = None,
                 ylim: tuple[float, float] | None = None, dtype: torch.dtype = torch.float64):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"Grid2D: n must be an int >= 2, got {n!r}")
        if xlim is None or ylim is None:
            if not isinstance(lim, (int, float)) or isinstance(lim, bool) or not lim > 0:
                raise ValueError(f"Grid2D: lim must be a positive number, got {lim!r}")
        xlim = (-float(lim), float(lim)) if xlim is None else tuple(map(float, xlim))
        ylim = (-float(lim), float(lim)) if ylim is None else tuple(map(float, ylim))
        for name, (lo, hi) in (("xlim", xlim), ("ylim", ylim)):
            if not hi > lo:
                raise ValueError(f"Grid2D: {name} must be (low, high) with low < high, got {(lo, hi)}")
        self.n, self.xlim, self.ylim, self.dtype = n, xlim, ylim, dtype
        dx, dy = (xlim[1] - xlim[0]) / n, (ylim[1] - ylim[0]) / n
        self.x = torch.linspace(xlim[0] + dx / 2, xlim[1] - dx / 2, n, dtype=dtype)
        self.y = torch.linspace(ylim[0] + dy / 2, ylim[1] - dy / 2, n, dtype=dtype)
        self.cell_area = dx * dy
        Y, X = torch.meshgrid(self.y, self.x, indexing="ij")
        self.points = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(x0, x1, y0, y1)`` for ``imshow``."""
        return (*self.xlim, *self.ylim)

    def reshape(self, values: torch.Tensor) -> torch.Tensor:
        """``(n * n,)`` values on :attr:`points` -> ``(n, n)`` image (rows are y)."""
        if not isinstance(values, torch.Tensor) or values.shape != (self.n * self.n,):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"Grid2D.reshape: expected a tensor of shape ({self.n * self.n},), got {shape}")
        return values.reshape(self.n, self.n)

    def log_normalizer(self, log_density: torch.Tensor) -> torch.Tensor:
        """``log sum_ij exp(log_density_ij) dA``: the log of the Riemann-sum integral."""
        return torch.logsumexp(log_density.reshape(-1), 0) + math.log(self.cell_area)

    def log_normalize(self, log_density: torch.Tensor) -> torch.Tensor:
        """Shift ``log_density`` so that ``exp`` of it integrates to 1 on the grid."""
        return log_density - self.log_normalizer(log_density)

    def integrate(self, values: torch.Tensor) -> torch.Tensor:
        """``sum_ij values_ij dA``."""
        return values.reshape(-1).sum() * self.cell_area

    def kl(self, log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        """``KL(q || p) = integral q (log q - log p)`` on the grid, both normalised here first.

        Cells where ``q`` vanishes contribute 0; the result is only as good as
        the grid covers ``q``'s mass (check ``integrate(exp(log_q))`` first).
        """
        log_q, log_p = self.log_normalize(log_q.reshape(-1)), self.log_normalize(log_p.reshape(-1))
        q = log_q.exp()
        terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
        return self.integrate(terms)
