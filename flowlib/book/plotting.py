"""Plotting helpers shared by the chapters: densities on a grid and samples.

All functions draw on a given matplotlib ``Axes`` and return it, so a chapter
controls the figure layout. Matplotlib is imported lazily (flowlib's core needs
only torch).
"""

from __future__ import annotations

import torch

from ..twod.grid import Grid2D

__all__ = ["plot_density", "plot_energy", "plot_samples", "plot_flow_density"]


def plot_density(ax, grid: Grid2D, log_density: torch.Tensor, *, cmap: str = "viridis",
                 title: str | None = None, normalize: bool = True):
    """Draw ``exp(log_density)`` (values on ``grid.points``) as an image.

    With ``normalize=True`` the density is first normalised on the grid, so
    unnormalised targets and flows can share one colour scale.
    """
    log_density = log_density.detach().reshape(-1).to(torch.float64)
    if normalize:
        log_density = grid.log_normalize(log_density)
    image = grid.reshape(log_density.exp()).cpu().numpy()
    ax.imshow(image, origin="lower", extent=grid.extent, cmap=cmap, aspect="equal", interpolation="nearest")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_energy(ax, U, grid: Grid2D | None = None, **kwargs):
    """Draw the target ``p(z) ∝ exp(-U(z))`` on ``grid`` (default ``(-4, 4)^2``)."""
    grid = grid or Grid2D(4.0, 300)
    return plot_density(ax, grid, -U(grid.points), **kwargs)


def plot_flow_density(ax, flow, grid: Grid2D | None = None, **kwargs):
    """Draw the density ``q_K`` of a static flow applied to ``N(0, I)``.

    ``log q_K(z) = log q_0(f^{-1}(z)) + log|det df^{-1}/dz|`` (eq. 6), with
    :func:`flowlib.flows.inverse.flow_inverse`: the closed-form inverse where a flow
    has one, a one-dimensional root search for planar layers.
    """
    from ..flows.inverse import log_density

    grid = grid or Grid2D(4.0, 300)
    dtype = next(flow.parameters()).dtype
    return plot_density(ax, grid, log_density(flow, grid.points.to(dtype)), **kwargs)


def plot_samples(ax, z: torch.Tensor, *, lim: float = 4.0, bins: int = 200, cmap: str = "viridis",
                 title: str | None = None):
    """A 2-D histogram of samples ``z`` of shape ``(N, 2)`` on ``(-lim, lim)^2``."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"plot_samples: expected z as a tensor of shape (N, 2), got {shape}")
    z = z.detach().cpu().numpy()
    ax.hist2d(z[:, 0], z[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]], cmap=cmap)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title is not None:
        ax.set_title(title)
    return ax
