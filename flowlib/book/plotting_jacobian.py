"""Pictures of matrices for the chapters on structured Jacobians: heat maps of Jacobians
(exact zeros drawn apart from small values, so a triangle shows as a triangle), MADE's
0/1 masks, and MADE's connectivity graph with the degree of every unit.

Every function draws on a given matplotlib ``Axes`` and returns it; matplotlib is
imported lazily (flowlib's core needs only torch).
"""

from __future__ import annotations

import torch

__all__ = ["plot_matrix", "plot_mask", "plot_made_graph"]


def _as_matrix(M, name: str) -> torch.Tensor:
    if not isinstance(M, torch.Tensor) or M.dim() != 2:
        shape = tuple(M.shape) if isinstance(M, torch.Tensor) else type(M).__name__
        raise ValueError(f"{name}: expected a 2-D torch.Tensor (a matrix), got {shape}")
    return M.detach().to(torch.float64).cpu()


def plot_matrix(ax, M: torch.Tensor, *, title: str | None = None, xlabel: str = "input $i$",
                ylabel: str = "output $j$", cmap: str = "RdBu_r", zero_color: str = "0.82",
                colorbar: bool = True, tick_labels: list[str] | None = None):
    """Heat map of a matrix ``M[j, i]`` (row ``j`` = output, column ``i`` = input).

    The colour scale is symmetric about 0 (blue < 0 < red). Entries that are *exactly* zero
    are drawn in ``zero_color`` (grey): a structural zero (a triangle, a block) is then
    visible even beside tiny non-zero entries, which would be white.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    M = _as_matrix(M, "plot_matrix")
    values = M.numpy()
    vmax = float(np.abs(values).max()) or 1.0
    colormap = plt.get_cmap(cmap).with_extremes(bad=zero_color)
    image = ax.imshow(np.ma.masked_where(values == 0, values), cmap=colormap, vmin=-vmax, vmax=vmax,
                      interpolation="nearest")
    n_rows, n_cols = values.shape
    if max(n_rows, n_cols) <= 16:
        ax.set_xticks(range(n_cols))
        ax.set_yticks(range(n_rows))
        if tick_labels is not None:
            if len(tick_labels) != n_cols or n_rows != n_cols:
                raise ValueError("plot_matrix: tick_labels needs a square matrix and one label per column, "
                                 f"got {len(tick_labels)} labels for shape {values.shape}")
            ax.set_xticklabels(tick_labels)
            ax.set_yticklabels(tick_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_mask(ax, mask: torch.Tensor, *, row_degrees=None, col_degrees=None, title: str | None = None,
              xlabel: str = "input unit (degree)", ylabel: str = "output unit (degree)",
              fontsize: float | None = None):
    """A 0/1 mask as black (connected) and white (cut) squares, with the units' degrees as ticks
    (in ``fontsize`` points; default: matplotlib's tick label size)."""
    import numpy as np

    mask = _as_matrix(mask, "plot_mask")
    ax.imshow(mask.numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    n_rows, n_cols = mask.shape
    ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
    ax.grid(which="minor", color="0.7", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    for degrees, set_ticks, set_labels, n in ((col_degrees, ax.set_xticks, ax.set_xticklabels, n_cols),
                                               (row_degrees, ax.set_yticks, ax.set_yticklabels, n_rows)):
        if degrees is not None:
            degrees = [int(d) for d in torch.as_tensor(degrees).tolist()]
            if len(degrees) != n:
                raise ValueError(f"plot_mask: got {len(degrees)} degrees for an axis of {n} units")
            set_ticks(range(n))
            set_labels(degrees, fontsize=fontsize)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_made_graph(ax, made, *, title: str | None = None, node_size: float = 480, fontsize: float = 9):
    """MADE drawn as a network: one column of units per layer, each unit labelled with its
    degree, and a line for every connection its masks allow (Germain et al. 2015, Fig. 1).

    Inputs are labelled ``z_i`` with degree ``order[i]``; the outputs are ``n_outputs``
    groups (``m``, ``s``, ...) of ``dim`` units. The context input is not drawn. ``node_size``
    is the marker area (points squared) and ``fontsize`` the size of the labels inside the units
    (points): at the book's 100 dpi, 9 points are 12.5 pixels.
    """
    from ..flows.made import MADE

    if not isinstance(made, MADE):
        raise ValueError(f"plot_made_graph: expected a flowlib MADE, got {type(made).__name__}")
    masks = [layer.mask for layer in made.hidden_layers] + [made.output_layer.mask]
    degrees = [made.order]
    for layer in made.hidden_layers:
        degrees.append(torch.arange(layer.mask.shape[0]) % made.dim)
    degrees.append(made.order.repeat(made.n_outputs))
    n_max = max(len(d) for d in degrees)

    def y_of(n):
        return torch.linspace(0, n_max - 1, n) if n > 1 else torch.tensor([(n_max - 1) / 2])

    ys = [y_of(len(d)) for d in degrees]
    for col, mask in enumerate(masks):
        for k, j in mask.nonzero().tolist():  # output unit k of this layer sees unit j of the previous
            ax.plot([col, col + 1], [ys[col][j], ys[col + 1][k]], color="0.55", linewidth=0.6, zorder=1)
    for col, (deg, y) in enumerate(zip(degrees, ys)):
        for idx, (d, yy) in enumerate(zip(deg.tolist(), y.tolist())):
            if col == 0:
                label, color = f"$z_{idx + 1}$\n{d}", "tab:blue"
            elif col == len(degrees) - 1:
                label, color = f"{d}", "tab:red"
            else:
                label, color = f"{d}", "tab:gray"
            ax.scatter([col], [yy], s=node_size, color=color, zorder=2, edgecolor="k")
            ax.text(col, yy, label, ha="center", va="center", fontsize=fontsize, color="w", zorder=3)
    names = ["inputs"] + [f"hidden {k + 1}" for k in range(len(masks) - 1)] + ["outputs"]
    ax.set_xticks(range(len(degrees)))
    ax.set_xticklabels(names)
    ax.set_yticks([])
    ax.set_ylim(n_max - 0.5, -0.5)
    ax.set_xlim(-0.5, len(degrees) - 0.5)
    ax.set_ylabel("unit (labelled with its degree)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax
