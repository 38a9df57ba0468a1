"""Planar flow (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.1).

    f(z) = z + u_hat h(w^T z + b),    h = tanh                         (eq. 10)
    psi(z) = h'(w^T z + b) w                                           (eq. 11)
    |det df/dz| = |1 + u_hat^T psi(z)|                                 (eq. 12)

``u_hat`` makes the map invertible whatever the raw ``u`` (Appendix A.1):

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,    m(x) = -1 + softplus(x),

so that ``w^T u_hat = m(w^T u) > -1``. Since ``m(x) - x = softplus(-x) - 1``,
this is computed as ``u + (softplus(-w^T u) - 1) w / ||w||^2``, finite for any
``w^T u``. The determinant is evaluated in the form

    1 + h'(a) w^T u_hat = tanh(a)^2 + (1 - tanh(a)^2) softplus(w^T u),

a sum of non-negative terms (``h' = 1 - tanh^2``), which never cancels to zero
in floating point the way ``1 + h' (-1 + tiny)`` would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Flow, ParameterSource

__all__ = ["Planar"]


class Planar(Flow):
    """One planar layer; static, or amortized from a context (eq. 10-12)."""

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.1):
        super().__init__(dim, context_dim)
        # raw parameters, one row per sample: [u (dim), w (dim), b (1)]
        self.params = ParameterSource(2 * dim + 1, context_dim, init_std)

    def u_w_b(self, batch_size: int, context=None):
        """The per-sample ``u_hat``, ``w`` and ``b``, each with a leading batch axis."""
        theta = self.params(batch_size, context)
        u, w, b = theta[:, : self.dim], theta[:, self.dim : 2 * self.dim], theta[:, -1]
        wu = (w * u).sum(-1, keepdim=True)
        w_sq = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        u_hat = u + (F.softplus(-wu) - 1.0) * w / w_sq
        return u_hat, w, b, wu.squeeze(-1)

    def _forward(self, z, context):
        u_hat, w, b, wu = self.u_w_b(z.shape[0], context)
        a = (w * z).sum(-1) + b
        t = torch.tanh(a)
        z_out = z + u_hat * t.unsqueeze(-1)
        t_sq = t * t
        logdet = torch.log(t_sq + (1.0 - t_sq) * F.softplus(wu))
        return z_out, logdet
