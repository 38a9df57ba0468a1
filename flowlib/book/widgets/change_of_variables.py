"""Pushing a 2-D standard Gaussian through an invertible map: the change of variables
formula, drawn.

For ``y = f(x)`` with ``x ~ N(0, I)`` the density of ``y`` is

    log p_Y(y) = log p_X(f^{-1}(y)) + log|det J_{f^{-1}}(y)|
               = log p_X(x) - log|det J_f(x)|,   x = f^{-1}(y).

Each map of :data:`MAPS` has a ``strength`` ``s >= 0`` (``s = 0`` is the identity), a
closed-form inverse and its log-determinant. :func:`plot_pushforward` draws the map, a
histogram of pushed samples and the formula's density side by side;
:func:`pushforward_widget` lets the reader choose the map and its strength.
"""

from __future__ import annotations

import math

import torch

from ...flows.gaussian import log_standard_normal
from ...twod.grid import Grid2D

__all__ = ["Map2D", "MAPS", "log_density", "plot_pushforward", "pushforward_widget"]



def _check_points(x, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what}: expected a floating-point tensor of shape (N, 2), got {shape}")


class Map2D:
    """An invertible map of the plane with strength ``s``.

    ``forward(x)`` returns ``(y, log|det J_f(x)|)``; ``inverse(y)`` returns
    ``(x, log|det J_{f^{-1}}(y)|)``; both take and give shapes ``(N, 2)`` and ``(N,)``.
    """

    def __init__(self, name: str, description: str, forward, inverse, strength: float = 1.0):
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not strength >= 0:
            raise ValueError(f"{name}: strength must be a number >= 0, got {strength!r}")
        self.name, self.description, self.strength = name, description, float(strength)
        self._forward, self._inverse = forward, inverse

    def with_strength(self, strength: float) -> Map2D:
        return Map2D(self.name, self.description, self._forward, self._inverse, strength)

    def forward(self, x: torch.Tensor):
        _check_points(x, f"{self.name}.forward")
        return self._forward(x, self.strength)

    def inverse(self, y: torch.Tensor):
        _check_points(y, f"{self.name}.inverse")
        return self._inverse(y, self.strength)

    def __call__(self, x: torch.Tensor, context=None):
        """Same as :meth:`forward`; the signature of a flowlib flow, for :mod:`flowlib.twod.jacobian`."""
        return self.forward(x)

    def __repr__(self) -> str:
        return f"Map2D({self.name!r}, strength={self.strength})"


# --- linear: y = A x, A lower triangular with diagonal (e^{s/2}, e^{-s/4}) and a shear 1.5 s
def _linear_matrix(s, like):
    return torch.tensor([[math.exp(s / 2), 0.0], [1.5 * s, math.exp(-s / 4)]], dtype=like.dtype)


def _linear_forward(x, s):
    A = _linear_matrix(s, x)
    return x @ A.T, torch.full_like(x[:, 0], s / 2 - s / 4)


def _linear_inverse(y, s):
    A = _linear_matrix(s, y)
    return torch.linalg.solve_triangular(A, y.T, upper=False).T, torch.full_like(y[:, 0], s / 4 - s / 2)


# --- coupling ("banana"): y1 = x1, y2 = x2 exp(0.4 s x1) + s (x1^2 - 1)
def _coupling_forward(x, s):
    x1, x2 = x[:, 0], x[:, 1]
    y2 = x2 * torch.exp(0.4 * s * x1) + s * (x1**2 - 1)
    return torch.stack([x1, y2], 1), 0.4 * s * x1


def _coupling_inverse(y, s):
    y1, y2 = y[:, 0], y[:, 1]
    x2 = (y2 - s * (y1**2 - 1)) * torch.exp(-0.4 * s * y1)
    return torch.stack([y1, x2], 1), -0.4 * s * y1


# --- elementwise sinh: y_i = sinh(c x_i) / c with c = 1.5 s (the identity at s = 0): heavy tails
def _sinh_forward(x, s):
    c = 1.5 * s
    if c == 0:
        return x.clone(), torch.zeros_like(x[:, 0])
    return torch.sinh(c * x) / c, torch.log(torch.cosh(c * x)).sum(1)


def _sinh_inverse(y, s):
    c = 1.5 * s
    if c == 0:
        return y.clone(), torch.zeros_like(y[:, 0])
    x = torch.asinh(c * y) / c
    return x, -torch.log(torch.cosh(c * x)).sum(1)


# --- radial expansion: y = x (1 + beta / (alpha + r)), r = ||x||, alpha = 0.3, beta = 2 s: a hole
ALPHA = 0.3


def _radial_forward(x, s):
    beta = 2.0 * s
    r = torch.linalg.vector_norm(x, dim=1)
    h = 1.0 / (ALPHA + r)
    scale = 1.0 + beta * h
    # 2-D case of Rezende & Mohamed (2015), eq. 14: [1 + beta h] (1 + beta h + beta h' r), h' = -h^2
    logdet = torch.log(scale) + torch.log(scale - beta * h * h * r)
    return x * scale.unsqueeze(1), logdet


def _radial_inverse(y, s):
    beta = 2.0 * s
    rho = torch.linalg.vector_norm(y, dim=1)
    # ||y|| = r (alpha + beta + r) / (alpha + r)  <=>  r^2 + (alpha + beta - rho) r - alpha rho = 0
    b = ALPHA + beta - rho
    r = 0.5 * (-b + torch.sqrt(b * b + 4.0 * ALPHA * rho))
    x = y * (r / rho.clamp_min(torch.finfo(y.dtype).tiny)).unsqueeze(1)
    _, logdet = _radial_forward(x, s)
    return x, -logdet


MAPS = {
    m.name: m
    for m in (
        Map2D("linear", "y = A x: a stretch and a shear", _linear_forward, _linear_inverse),
        Map2D("banana", "y1 = x1, y2 = x2 exp(0.4 s x1) + s (x1^2 - 1)",
              _coupling_forward, _coupling_inverse),
        Map2D("sinh", "y_i = sinh(1.5 s x_i) / (1.5 s): heavy tails", _sinh_forward, _sinh_inverse),
        Map2D("radial", "y = x (1 + 2 s / (0.3 + ||x||)): a hole", _radial_forward, _radial_inverse),
    )
}


def get_map(name: str, strength: float = 1.0) -> Map2D:
    if name not in MAPS:
        raise ValueError(f"unknown map {name!r}; choose one of {', '.join(MAPS)}")
    return MAPS[name].with_strength(strength)


def log_density(f: Map2D, y: torch.Tensor) -> torch.Tensor:
    """``log p_Y(y)`` for ``y = f(x)``, ``x ~ N(0, I)``: the change of variables formula."""
    x, logdet_inv = f.inverse(y)
    return log_standard_normal(x) + logdet_inv


def plot_pushforward(name: str = "banana", strength: float = 1.0, *, n_samples: int = 100_000,
                     lim: float = 4.0, seed: int = 0, fig=None):
    """Three panels: the map applied to a square grid, a histogram of ``f(x)`` for
    ``n_samples`` draws ``x ~ N(0, I)``, and the density given by the formula.

    The figure is 7 inches wide, the width of the book's column (:mod:`flowlib.book.style`), so
    that its labels are read at their natural size."""
    import matplotlib.pyplot as plt

    f = get_map(name, strength)
    fig = fig or plt.figure(figsize=(7.0, 2.9))
    fig.clear()
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)

    ax = axes[0]
    t = torch.linspace(-3, 3, 200, dtype=torch.float64)
    for c in torch.linspace(-3, 3, 13, dtype=torch.float64):
        for line in (torch.stack([t, torch.full_like(t, c)], 1), torch.stack([torch.full_like(t, c), t], 1)):
            y, _ = f.forward(line)
            ax.plot(y[:, 0], y[:, 1], lw=0.7, color="tab:blue" if line[0, 1] == line[-1, 1] else "tab:orange")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$y_1$", ylabel="$y_2$",
           title=f"{name} map, s = {strength:.2f},\non the grid of $[-3, 3]^2$")

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    y, _ = f.forward(x)
    bins = 100
    axes[1].hist2d(y[:, 0].numpy(), y[:, 1].numpy(), bins=bins, range=[[-lim, lim], [-lim, lim]],
                   density=True, cmap="viridis")
    axes[1].set(aspect="equal", xlabel="$y_1$", title=f"histogram of $f(x)$,\n{n_samples:,} samples")

    grid = Grid2D(lim, bins)
    density = grid.reshape(log_density(f, grid.points).exp())
    axes[2].imshow(density.numpy(), origin="lower", extent=grid.extent, cmap="viridis", aspect="equal")
    axes[2].set(xlabel="$y_1$", title="change of variables:\n$p_X(f^{-1}(y))\\,|\\det J_{f^{-1}}(y)|$")
    axes[0].set(xticks=[-2, 0, 2], yticks=[-4, -2, 0, 2, 4])  # shared axes: no tick labels collide
    return fig


def pushforward_widget(name: str = "banana", strength: float = 1.0, n_samples: int = 50_000):
    """An ipywidgets control: choose the map and its strength; the three panels redraw."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    output = widgets.Output()
    choose = widgets.Dropdown(options=list(MAPS), value=name, description="map")
    slider = widgets.FloatSlider(value=strength, min=0.0, max=2.0, step=0.1, description="strength s",
                                 continuous_update=False)

    def redraw(*_):
        with output:
            output.clear_output(wait=True)
            fig = plot_pushforward(choose.value, slider.value, n_samples=n_samples)
            display(fig)
            plt.close(fig)

    choose.observe(redraw, "value")
    slider.observe(redraw, "value")
    redraw()
    return widgets.VBox([widgets.HBox([choose, slider]), output])
