"""The true posterior of a VAE with a two-dimensional latent space, computed on a grid.

With ``z`` in ``R^2`` the evidence is a two-dimensional integral, and a Riemann sum over a fine
grid of cells of area ``dA`` computes it (Kingma & Welling 2014 cannot, for ``z`` in ``R^40``):

    log p(x) ~= log sum_ij p(x | z_ij) p(z_ij) dA                                   (evidence)
    log p(z | x) = log p(x | z) + log p(z) - log p(x)                                (Bayes)

An approximation ``q_K(z | x)`` (a diagonal Gaussian pushed through a flow, Rezende & Mohamed
2015, eq. 13) is evaluated at any point through the flow's inverse (their eq. 6):

    log q_K(z | x) = log q_0(f^{-1}(z) | x) + log|det df^{-1}/dz|,

and then ``KL(q || p(z | x))`` on the grid. Or, from ``q``'s own samples, with no inverse:

    KL(q || p(z | x)) = E_q[log q(z | x) - log p(x, z)] + log p(x) = log p(x) - ELBO(x).

Planar layers have no closed-form inverse, but one layer moves ``z`` along ``u_hat`` only, so its
inverse is a monotone equation in one unknown, solved by safeguarded Newton
(:func:`flowlib.flows.inverse.flow_inverse`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ..flows.base import Flow
from ..flows.inverse import flow_inverse
from ..model.posterior import FlowPosterior
from ..model.vae import VAE, log_diag_normal, log_standard_normal
from .grid import Grid2D

__all__ = [
    "log_joint",
    "posterior_on_grid",
    "grid_evidence",
    "posterior_box",
    "log_q",
    "grid_kl",
    "mc_kl",
    "aggregate_log_q",
]


def _check(model, X):
    if not isinstance(model, VAE) or model.z_dim != 2:
        z_dim = getattr(model, "z_dim", None)
        raise ValueError(f"expected a flowlib VAE with z_dim = 2, got {type(model).__name__} (z_dim={z_dim})")
    if not isinstance(X, torch.Tensor) or X.dim() not in (1, 2) or X.shape[-1] != model.x_dim:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(f"expected x of shape ({model.x_dim},) or (N, {model.x_dim}), got {shape}")
    return X.reshape(-1, model.x_dim)


@torch.no_grad()
def log_joint(model: VAE, X: torch.Tensor, z: torch.Tensor, chunk: int = 10_000) -> torch.Tensor:
    """``log p(x | z) + log p(z)`` for every image ``x`` of ``X`` (``(N, 784)`` or ``(784,)``) and
    every point of ``z`` (``(M, 2)``): shape ``(N, M)``, float64.

    The decoder runs once per point, whatever ``N``: with ``l`` its logits, the Bernoulli
    ``log p(x | z) = x . l - sum_d softplus(l_d)`` is one matrix product for all images."""
    X = _check(model, X)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != 2:
        raise ValueError(f"expected z of shape (M, 2), got {getattr(z, 'shape', type(z).__name__)}")
    dtype = next(model.parameters()).dtype
    X = X.to(dtype)
    out = []
    for zc in z.split(chunk):
        logits = model.decoder(zc.to(dtype))
        out.append((X @ logits.T).double() - F.softplus(logits).double().sum(1)
                   + log_standard_normal(zc.double()))
    return torch.cat(out, 1)


def posterior_on_grid(grid: Grid2D, log_joint_grid: torch.Tensor):
    """From ``log p(x, z)`` on the grid's points (``(N, M)``) to ``(log p(z | x), log p(x), edge)``:
    the posterior normalised on the grid (``(N, M)``), the evidence (``(N,)``, the Riemann sum)
    and ``edge`` (``(N,)``), how many nats the posterior on the grid's border lies below its
    maximum: the grid holds the posterior when ``edge`` is large (say > 20)."""
    lj = log_joint_grid.reshape(-1, grid.n * grid.n).to(torch.float64)
    log_px = torch.logsumexp(lj, 1) + math.log(grid.cell_area)
    img = lj.reshape(-1, grid.n, grid.n)
    border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], 1)
    return lj - log_px[:, None], log_px, lj.max(1).values - border.max(1).values


@torch.no_grad()
def grid_evidence(model: VAE, X: torch.Tensor, grid: Grid2D, gaussians=None, chunk: int = 10_000) -> dict:
    """:func:`posterior_on_grid` for many images on a large grid, without storing ``(N, M)``.

    Returns ``(N,)`` tensors: ``log_px`` and ``edge`` as there; ``non_gaussianity``,
    ``KL(p(z | x) || N(m, S))`` with ``m``, ``S`` the posterior's mean and covariance (zero exactly
    for a Gaussian posterior; it is ``E_p[log p] + log(2 pi e) + log det(S) / 2``); and, given
    ``gaussians = (mu, log_var)`` (each ``(N, 2)``), ``kl``, ``KL(N(mu, diag exp(log_var)) ||
    p(z | x))``, with ``mass``, the Gaussians' mass on the grid. The sums over points are
    accumulated chunk by chunk, the posterior's weights relative to a running maximum."""
    X = _check(model, X)
    n, N, dA = grid.n, X.shape[0], grid.cell_area
    border = torch.zeros(n, n, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    top = torch.full((N,), -math.inf, dtype=torch.float64)
    top_border = top.clone()
    s0, s_lj = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
    s1, s2 = torch.zeros(N, 2, dtype=torch.float64), torch.zeros(N, 2, 2, dtype=torch.float64)
    q_mass, q_s = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
    for pts, on_border in zip(grid.points.split(chunk), border.reshape(-1).split(chunk)):
        lj = log_joint(model, X, pts)
        new_top = torch.maximum(top, lj.max(1).values)
        scale, w = torch.exp(top - new_top), torch.exp(lj - new_top[:, None])
        s0 = s0 * scale + w.sum(1)
        s_lj = s_lj * scale + (w * lj).sum(1)
        s1 = s1 * scale[:, None] + w @ pts
        s2 = s2 * scale[:, None, None] + torch.einsum("nc,ci,cj->nij", w, pts, pts)
        top = new_top
        if on_border.any():
            top_border = torch.maximum(top_border, lj[:, on_border].max(1).values)
        if gaussians is not None:
            mu, log_var = (t.to(torch.float64) for t in gaussians)
            lq = log_diag_normal(pts[None], mu[:, None], log_var[:, None])
            q = lq.exp()
            q_mass += q.sum(1) * dA
            q_s += torch.where(q > 0, q * (lq - lj), torch.zeros_like(q)).sum(1) * dA
    log_px = s0.log() + top + math.log(dA)
    mean = s1 / s0[:, None]
    cov = s2 / s0[:, None, None] - mean[:, :, None] * mean[:, None, :]
    entropy_gauss = math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(cov)
    out = {"log_px": log_px, "edge": top - top_border, "mean": mean, "cov": cov,
           "non_gaussianity": s_lj / s0 - log_px + entropy_gauss}
    if gaussians is not None:  # with q normalised on the grid, m = sum q dA:
        # KL = sum q (log q - log p(x, z)) dA / m - log m + log p(x)
        out.update(kl=q_s / q_mass - q_mass.log() + log_px, mass=q_mass)
    return out


def posterior_box(grid: Grid2D, log_post: torch.Tensor, *, drop: float = 20.0,
                  extra: torch.Tensor | None = None, pad: float = 0.3, n: int = 120) -> Grid2D:
    """A grid fitted to one posterior: the box of the points of ``grid`` where ``log_post``
    (``(M,)``) is within ``drop`` nats of its maximum, joined with the 0.1% to 99.9% quantiles of
    the points ``extra`` (e.g. samples of the approximations), padded by ``pad`` on every side and
    divided into ``n x n`` cells."""
    log_post = log_post.reshape(-1)
    pts = grid.points[log_post > log_post.max() - drop]
    lo, hi = pts.min(0).values, pts.max(0).values
    if extra is not None:
        extra = extra.detach().to(pts.dtype).reshape(-1, 2)
        q = torch.tensor([0.001, 0.999], dtype=pts.dtype)
        lo = torch.minimum(lo, torch.quantile(extra, q[0], dim=0))
        hi = torch.maximum(hi, torch.quantile(extra, q[1], dim=0))
    lo, hi = lo - pad, hi + pad
    return Grid2D(n=n, xlim=(lo[0].item(), hi[0].item()), ylim=(lo[1].item(), hi[1].item()))


@torch.no_grad()
def log_q(model: VAE, x: torch.Tensor, z: torch.Tensor, flow: Flow | None = None) -> torch.Tensor:
    """``log q_K(z | x)`` at the points ``z`` (``(M, 2)``) for one image ``x``, in float64 (eq. 6):
    the model's posterior object ``model.q`` (:class:`~flowlib.model.posterior.FlowPosterior`, its
    flow after the affine map as in a :class:`~flowlib.model.vae.VAE`, or before it as in a
    :class:`~flowlib.model.whitened.WhitenedFlowVAE`) at the encoder's output for ``x``.

    ``flow`` replaces the model's posterior (e.g. a flow fitted to this one image: then ``x``'s
    Gaussian is replaced by ``N(0, I)``, the posterior is ``FlowPosterior(flow)`` and ``flow`` must
    be static)."""
    x = _check(model, x)
    if x.shape[0] != 1:
        raise ValueError(f"log_q: expected one image, got {x.shape[0]}")
    z = z.to(torch.float64)
    if flow is None:
        mu, log_var, h = (t.to(torch.float64) for t in model.encoder(x.to(next(model.parameters()).dtype)))
        q = model.q
    else:
        if flow.amortized:
            raise ValueError("log_q: a flow given in place of the model's must be static")
        mu, log_var, h = torch.zeros(1, 2, dtype=z.dtype), torch.zeros(1, 2, dtype=z.dtype), None
        q = FlowPosterior(flow)
    return copy.deepcopy(q).double().log_prob(z, mu, log_var, h)


def grid_kl(grid: Grid2D, log_q_grid: torch.Tensor, log_post: torch.Tensor) -> tuple[float, float]:
    """``(KL(q || p(z | x)), mass of q)`` on the grid; ``log_q_grid`` is normalised (a density),
    so its mass, ``sum q dA``, says how much of ``q`` the grid holds (1 when it holds all)."""
    mass = grid.integrate(log_q_grid.exp()).item()
    return grid.kl(log_q_grid, log_post).item(), mass


@torch.no_grad()
def mc_kl(model: VAE, x: torch.Tensor, log_px: float, n: int = 10_000, sampler=None) -> tuple[float, float]:
    """``KL(q || p(z | x)) = E_q[log q - log p(x, z)] + log p(x)`` from ``n`` samples of ``q``, and
    its standard error. ``sampler(n) -> (z, log q(z))`` replaces the model's posterior."""
    x = _check(model, x)
    if sampler is None:
        z, lq = model.posterior(x.to(next(model.parameters()).dtype), n)
        z, lq = z[:, 0], lq[:, 0]
    else:
        z, lq = sampler(n)
    terms = lq.to(torch.float64) - log_joint(model, x, z)[0] + log_px
    return terms.mean().item(), (terms.std() / math.sqrt(n)).item()


@torch.no_grad()
def aggregate_log_q(model: VAE, X: torch.Tensor, z: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """``log q(z) = log (1/N) sum_n q_K(z | x_n)``, the aggregate posterior of the images ``X`` at
    the points ``z`` (float64). Needs a static flow (or none) after the affine map: its inverse is
    then the same for every image and is computed once. Each Gaussian's log density is a quadratic
    in ``z``, so all of them at all points are one matrix product of ``(z^2, z, 1)`` with their
    coefficients."""
    X = _check(model, X)
    if model.q.amortized or (model.q.whitened and model.q.flow is not None):
        raise ValueError("aggregate_log_q: needs a VAE without a flow or with a static flow (after the "
                         "affine map: its posterior not whitened)")
    mu, log_var, _ = (t.to(torch.float64) for t in model.encoder(X.to(next(model.parameters()).dtype)))
    z = z.to(torch.float64)
    z0, logdet = (z, 0.0) if model.flow is None else flow_inverse(copy.deepcopy(model.flow).double(), z)
    features = torch.cat([z0 * z0, z0, torch.ones_like(z0[:, :1])], 1)  # (M, 5)
    inv_var = torch.exp(-log_var)
    const = -0.5 * (mu * mu * inv_var + log_var + math.log(2 * math.pi)).sum(1, keepdim=True)
    coef = torch.cat([-0.5 * inv_var, mu * inv_var, const], 1)  # (N, 5): log N(z0; mu_n, var_n)
    total = torch.full((z.shape[0],), -math.inf, dtype=torch.float64)
    for c in coef.split(chunk):
        total = torch.logaddexp(total, torch.logsumexp(features @ c.T, 1))
    return total - math.log(X.shape[0]) + logdet
