"""Stage D: what the chapter reports. The true posterior of one image on a grid fitted to it and
each approximation's KL from it (:func:`digit_box`, :func:`digit_report`), and how far a VAE's codes
leave the prior's typical set and how well its aggregate posterior covers the prior
(:func:`sampling_report`)."""

from __future__ import annotations

import math

import torch

from ...model.vae import VAE, log_standard_normal
from ...training.seeding import seed_everything
from ...twod.fit import sample
from ...twod.grid import Grid2D
from ...twod.posterior_grid import (
    aggregate_log_q,
    grid_kl,
    log_joint,
    log_q,
    mc_kl,
    posterior_box,
    posterior_on_grid,
)
from .protocol import EVAL, R99

__all__ = ["digit_box", "digit_report", "sampling_report"]


def _approximations(approximations: dict, fits: dict | None) -> dict:
    out = {("amortized", f): m for f, m in approximations.items()}
    out.update({("fit", f): flow for f, flow in (fits or {}).items()})
    return out


def _samplers(x: torch.Tensor, qs: dict, seed: int) -> dict:
    """``{key: n -> (z, log q(z))}``: the amortized posteriors of ``x``, or the fitted flows."""
    samplers = {}
    for i, (key, q) in enumerate(qs.items()):
        g = torch.Generator().manual_seed(seed + i)
        if isinstance(q, VAE):
            samplers[key] = lambda n, q=q: tuple(t[:, 0].detach() for t in q.posterior(x[None], n))
        else:
            samplers[key] = lambda n, q=q, g=g: tuple(t.detach() for t in sample(q, n, g))
    return samplers


def digit_box(x: torch.Tensor, coarse: Grid2D, log_post_coarse: torch.Tensor, approximations: dict,
              fits: dict | None = None, seed: int = 0) -> Grid2D:
    """The grid of one image: the region of its posterior on ``coarse`` joined with samples of
    every approximation (:func:`flowlib.twod.posterior_grid.posterior_box`)."""
    seed_everything(seed)
    samplers = _samplers(x, _approximations(approximations, fits), seed)
    extra = torch.cat([s(EVAL["box_samples"])[0] for s in samplers.values()])
    return posterior_box(coarse, log_post_coarse, extra=extra, n=EVAL["fine_n"])


def digit_report(base: VAE, x: torch.Tensor, grid: Grid2D, approximations: dict, fits: dict | None = None,
                 mc_samples: int | None = None, seed: int = 1, stored: dict | None = None) -> dict:
    """The true posterior of one image on ``grid``, and each approximation on that grid.

    Returns ``log_post``, ``log_px``, ``edge`` and ``q``: ``{(kind, family): {"log_q", "kl",
    "mass"[, "mc", "mc_se"]}}`` with ``kind`` ``"amortized"`` (the VAEs of ``approximations``)
    or ``"fit"`` (the static flows of ``fits``). ``mc_samples`` adds Monte Carlo KLs. ``stored``
    (``{key: log q on grid}``) gives precomputed grids, used instead of inverting those flows."""
    seed_everything(seed)
    qs = _approximations(approximations, fits)
    stored = stored or {}
    samplers = _samplers(x, qs, seed)
    log_post, log_px, edge = (t[0] for t in posterior_on_grid(grid, log_joint(base, x, grid.points)))
    out = {"log_post": log_post, "log_px": log_px.item(), "edge": edge.item(), "q": {}}
    for key, q in qs.items():
        if key in stored:
            lq = torch.as_tensor(stored[key], dtype=torch.float64).reshape(-1)
        elif isinstance(q, VAE):
            lq = log_q(q, x, grid.points)
        else:
            lq = log_q(base, x, grid.points, flow=q)
        kl, mass = grid_kl(grid, lq, log_post)
        out["q"][key] = {"log_q": lq, "kl": kl, "mass": mass}
        if mc_samples:
            mc, se = mc_kl(base, x, out["log_px"], mc_samples, sampler=samplers[key])
            out["q"][key].update(mc=mc, mc_se=se)
    return out


@torch.no_grad()
def sampling_report(model: VAE, X: torch.Tensor, grid: Grid2D, n_prior: int = 10_000, seed: int = 0) -> dict:
    """How far the codes of the images ``X`` leave the prior's typical set, and how well their
    aggregate posterior ``q(z) = mean_n q(z | x_n)`` covers the prior ``p``.

    ``z0`` is a draw of the encoder's Gaussian (the flow's input), ``zK = f(z0)`` the code the
    decoder sees; ``mu`` and ``f(mu)`` likewise for the Gaussian's mean. Both KLs and the prior's
    mass in *holes* (where ``q < p / 10``) are estimated twice: on ``grid``, and by Monte Carlo from
    one code per image (for ``KL(q || p)``) or ``n_prior`` prior draws (for ``KL(p || q)`` and
    the holes), with ``log q`` exact at every point."""
    g = torch.Generator().manual_seed(seed)
    mu, log_var, _ = model.encoder(X)
    z0 = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=g)
    flow = (lambda z: z) if model.flow is None else (lambda z: model.flow(z)[0])
    zK = flow(z0)
    outside = lambda z: (z.norm(dim=1) > R99).double().mean().item()
    lq = aggregate_log_q(model, X, grid.points, chunk=100)
    lp = log_standard_normal(grid.points)
    hole = (lq < lp - math.log(10)).double()
    z_prior = torch.randn(n_prior, 2, generator=g, dtype=torch.float64)
    lq_q, lq_p = aggregate_log_q(model, X, zK), aggregate_log_q(model, X, z_prior)
    kl_qp = lq_q - log_standard_normal(zK.double())
    kl_pq = log_standard_normal(z_prior) - lq_p
    se = lambda t: (t.std() / math.sqrt(len(t))).item()
    return {
        "outside_99_z0": outside(z0), "outside_99_zK": outside(zK),
        "outside_99_mu": outside(mu), "outside_99_f_mu": outside(flow(mu)),
        "aggregate_mass_on_grid": grid.integrate(lq.exp()).item(),
        "kl_aggregate_prior": grid.kl(lq, lp).item(), "kl_prior_aggregate": grid.kl(lp, lq).item(),
        "prior_mass_in_holes": grid.integrate(lp.exp() * hole).item(),
        "kl_aggregate_prior_mc": kl_qp.mean().item(), "kl_aggregate_prior_mc_se": se(kl_qp),
        "kl_prior_aggregate_mc": kl_pq.mean().item(), "kl_prior_aggregate_mc_se": se(kl_pq),
        "prior_mass_in_holes_mc": (kl_pq > math.log(10)).double().mean().item(),
        "posterior_std_median": torch.exp(0.5 * log_var).median().item(),
        "log_q_aggregate": lq,
    }
