"""What one planar layer ``f(z) = z + u h(w^T z + b)`` does to the plane and to a standard
Gaussian (Rezende & Mohamed 2015, eq. 10), with or without the ``u_hat`` correction that
keeps it invertible (Appendix A.1).

:func:`plot_planar_layer` draws three panels: the image of a square grid under ``f`` (a
fold appears when ``w^T u < -1``), a histogram of ``f(z_0)`` for ``z_0 ~ N(0, I)``, and the
Jacobian determinant ``1 + h'(a) w^T u`` as a function of ``a = w^T z + b``.
:func:`planar_widget` puts sliders on ``u``, ``w`` and ``b``.
"""

from __future__ import annotations

import torch

from ...flows import Planar
from ..plotting import plot_samples

__all__ = ["planar_parameters", "planar_map", "plot_planar_layer", "planar_widget"]


def planar_parameters(u, w, b: float, constrain: bool = True):
    """``(u_used, w, b)`` in float64; ``u_used`` is ``u_hat`` (as in :class:`Planar`) or the raw ``u``."""
    u = torch.as_tensor(u, dtype=torch.float64).reshape(-1)
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    if u.shape != (2,) or w.shape != (2,):
        raise ValueError(f"planar_parameters: expected u and w with 2 numbers each, got {tuple(u.shape)}, "
                         f"{tuple(w.shape)}")
    if not constrain:
        return u, w, float(b)
    layer = Planar(2).double()
    with torch.no_grad():
        layer.params.theta.copy_(torch.cat([u, w, torch.tensor([float(b)], dtype=torch.float64)]))
        u_hat, _, _, _ = layer.u_w_b(1)
    return u_hat[0], w, float(b)


def planar_map(z: torch.Tensor, u, w, b: float, constrain: bool = True) -> torch.Tensor:
    """``z + u_used tanh(w^T z + b)`` for rows ``z`` of shape ``(N, 2)``."""
    u, w, b = planar_parameters(u, w, b, constrain)
    z = z.to(torch.float64)
    return z + u * torch.tanh(z @ w + b)[:, None]


def plot_planar_layer(u=(1.0, 0.5), w=(2.0, 0.0), b: float = 0.0, constrain: bool = True, *,
                      n_samples: int = 20_000, lim: float = 4.0, axes=None, seed: int = 0):
    """Draw the three panels for one planar layer; returns the figure."""
    import matplotlib.pyplot as plt

    u_used, w_t, b = planar_parameters(u, w, b, constrain)
    wu_raw = float(torch.as_tensor(u, dtype=torch.float64) @ w_t)
    wu = float(u_used @ w_t)
    if axes is None:  # two square panels side by side, the determinant below: fits the book's column
        fig, named = plt.subplot_mosaic([["grid", "hist"], ["det", "det"]], figsize=(7.0, 6.4),
                                        height_ratios=[3.3, 2.0], layout="constrained")
        axes = (named["grid"], named["hist"], named["det"])
    else:
        fig = axes[0].figure
    ax_grid, ax_hist, ax_det = axes

    # 1. the image of a square grid: a fold shows as lines crossing over themselves
    t = torch.linspace(-3, 3, 241, dtype=torch.float64)
    for c in torch.linspace(-3, 3, 13, dtype=torch.float64):
        for line in (torch.stack([t, c.expand_as(t)], 1), torch.stack([c.expand_as(t), t], 1)):
            image = planar_map(line, u, w, b, constrain)
            ax_grid.plot(image[:, 0], image[:, 1], lw=0.7, color="tab:blue")
    w_sq = float(w_t @ w_t)
    if w_sq > 0:  # the line w^T z + b = 0, where h' is largest
        point = -b * w_t / w_sq
        direction = torch.stack([-w_t[1], w_t[0]]) / w_sq**0.5
        ends = torch.stack([point - 6 * direction, point + 6 * direction])
        ax_grid.plot(ends[:, 0], ends[:, 1], "k--", lw=1, label="$w^\\top z + b = 0$")
    ax_grid.annotate("", xy=tuple(u_used.tolist()), xytext=(0, 0),
                     arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 2})
    ax_grid.plot([], [], color="tab:red", label="$\\hat u$" if constrain else "$u$")
    ax_grid.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$f(z)_1$", ylabel="$f(z)_2$",
                title="image of a square grid under $f$")
    ax_grid.legend(loc="lower right", framealpha=0.9)

    # 2. the transformed standard Gaussian
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    plot_samples(ax_hist, planar_map(z0, u, w, b, constrain), lim=lim, bins=120,
                 title="histogram of $f(z_0)$, $z_0 \\sim N(0, I)$")

    # 3. det J = 1 + h'(a) w^T u along a = w^T z + b
    a = torch.linspace(-4, 4, 401, dtype=torch.float64)
    det = 1 + (1 - torch.tanh(a) ** 2) * wu
    ax_det.plot(a, det, color="tab:purple")
    ax_det.axhline(0, color="k", lw=0.8)
    ax_det.fill_between(a, det, 0, where=det < 0, color="tab:red", alpha=0.3, label="$\\det J < 0$: a fold")
    u_name = "\\hat u" if constrain else "u"
    ax_det.set(xlabel="$a = w^\\top z + b$", ylabel=f"$\\det J_f = 1 + h'(a)\\, w^\\top {u_name}$",
               title=f"$w^\\top u$ = {wu_raw:.2f}" + (f", $w^\\top \\hat u$ = {wu:.2f}" if constrain else ""))
    if (det < 0).any():
        ax_det.legend(loc="lower right")
    correction = " with the $\\hat u$ correction" if constrain else ", raw $u$ (no correction)"
    fig.suptitle("one planar layer" + correction)
    return fig


def planar_widget():
    """Sliders over ``u``, ``w``, ``b`` and a checkbox for the ``u_hat`` correction (needs ipywidgets)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def slider(value, low=-3.0, high=3.0, description=""):
        return widgets.FloatSlider(value=value, min=low, max=high, step=0.1, description=description,
                                   continuous_update=False)

    controls = {
        "u1": slider(1.0, description="u1"), "u2": slider(0.5, description="u2"),
        "w1": slider(2.0, description="w1"), "w2": slider(0.0, description="w2"),
        "b": slider(0.0, description="b"),
        "constrain": widgets.Checkbox(value=True, description="use u-hat"),
    }

    def draw(u1, u2, w1, w2, b, constrain):
        plot_planar_layer((u1, u2), (w1, w2), b, constrain)
        plt.show()

    return widgets.interactive(draw, **controls)
