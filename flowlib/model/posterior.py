"""The VAE's approximate posterior ``q(z | x)``, sampling and density in one place: a diagonal
Gaussian ``N(mu(x), diag sigma(x)^2)`` and a flow (none, static, or amortized on the encoder's
features ``h(x)``), applied in one of two orders.

- *after* the affine map (Rezende & Mohamed 2015, eq. 13), :class:`flowlib.model.vae.VAE`::

      z_0 = mu + sigma * eps,   z_K = f(z_0; h),   log q(z_K) = log N(z_0; mu, sigma^2) - log|det df/dz_0|

- *before* it, on the whitened noise (``whitened=True``, :class:`flowlib.model.whitened.WhitenedFlowVAE`)::

      u = f(eps; h),   z = mu + sigma * u,   log q(z) = log N(eps; 0, I) - log|det df/deps| - sum log sigma

:func:`rsample` draws (training, importance sampling); :func:`log_prob` evaluates the density
anywhere by inverting the flow (the 2-D true-posterior chapter).
"""

from __future__ import annotations

import math

import torch

from ..flows.base import Flow
from ..flows.gaussian import log_diag_normal, log_standard_normal
from ..flows.inverse import flow_inverse

__all__ = ["rsample", "log_prob"]


def rsample(flow: Flow | None, mu, log_var, h, n_samples: int, whitened: bool = False):
    """``n_samples`` reparameterized draws ``z ~ q(z | x)`` and their ``log q``, with a leading sample
    axis: shapes ``(n_samples, B, z_dim)`` and ``(n_samples, B)``."""
    B, z_dim = mu.shape
    eps = torch.randn(n_samples, B, z_dim, dtype=mu.dtype, device=mu.device)
    if whitened:
        log_q = log_standard_normal(eps) - 0.5 * log_var.sum(-1)
        if flow is None:
            return mu + torch.exp(0.5 * log_var) * eps, log_q
        context = h.expand(n_samples, B, h.shape[-1]).reshape(-1, h.shape[-1]) if flow.amortized else None
        u, logdet = flow(eps.reshape(-1, z_dim), context)
        z = mu + torch.exp(0.5 * log_var) * u.view(n_samples, B, z_dim)
        return z, log_q - logdet.view(n_samples, B)
    z0 = mu + torch.exp(0.5 * log_var) * eps  # reparameterization (Kingma & Welling 2014, eq. 10)
    log_q = log_diag_normal(z0, mu, log_var)
    if flow is None:
        return z0, log_q
    context = h if flow.amortized else None
    if n_samples == 1:
        zK, logdet = flow(z0[0], context)
        return zK.unsqueeze(0), log_q - logdet.unsqueeze(0)
    if flow.sample_axis:  # the flow's parameters once per image, shared by its samples
        zK, logdet = flow(z0, context)
        return zK, log_q - logdet
    if context is not None:
        context = context.expand(n_samples, B, h.shape[-1]).reshape(-1, h.shape[-1])
    zK, logdet = flow(z0.reshape(-1, z_dim), context)
    return zK.view(n_samples, B, z_dim), log_q - logdet.view(n_samples, B)


def log_prob(flow: Flow | None, z, mu, log_var, h, whitened: bool = False) -> torch.Tensor:
    """``log q(z | x)`` at the points ``z`` (``(M, z_dim)``) of one image's posterior (``mu``,
    ``log_var``, ``h`` of shape ``(1, .)``), by inverting the flow. Far in the tails an inverse can
    overflow (an IAF step divides by a vanishing scale): such a point comes from infinitely far away
    and its density is 0, returned as ``-inf`` (not the nan of ``-inf - (-inf)``)."""
    if flow is None:
        return log_diag_normal(z, mu, log_var)
    context = h.expand(z.shape[0], -1) if flow.amortized else None
    if whitened:  # z = mu + sigma * f(eps)
        eps, logdet = flow_inverse(flow, (z - mu) * torch.exp(-0.5 * log_var), context)
        out = log_standard_normal(eps) + logdet - 0.5 * log_var.sum(-1)
    else:
        z0, logdet = flow_inverse(flow, z, context)
        out = log_diag_normal(z0, mu, log_var) + logdet
    return torch.where(torch.isnan(out), -math.inf, out)
