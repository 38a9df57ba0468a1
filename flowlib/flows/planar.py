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


def constrain(theta: torch.Tensor, dim: int):
    """``u_hat``, ``w``, ``b`` and ``w^T u`` from raw parameters ``theta = [u, w, b]`` (last axis,
    any leading axes): Appendix A.1's ``u_hat``, so that ``w^T u_hat > -1``."""
    u, w, b = theta[..., :dim], theta[..., dim : 2 * dim], theta[..., -1]
    wu = (w * u).sum(-1, keepdim=True)
    w_sq = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    u_hat = u + (F.softplus(-wu) - 1.0) * w / w_sq
    return u_hat, w, b, wu.squeeze(-1)


class Planar(Flow):
    """One planar layer; static, or amortized from a context (eq. 10-12)."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.1):
        super().__init__(dim, context_dim)
        # raw parameters, one row per sample: [u (dim), w (dim), b (1)]
        self.params = ParameterSource(2 * dim + 1, context_dim, init_std)

    def u_w_b(self, batch_size: int, context=None):
        """The per-sample ``u_hat``, ``w`` and ``b``, each with a leading batch axis."""
        u_hat, w, b, wu = constrain(self.params.raw(context), self.dim)
        if context is None:
            return (u_hat.expand(batch_size, self.dim), w.expand(batch_size, self.dim),
                    b.expand(batch_size), wu.expand(batch_size))
        return u_hat, w, b, wu

    def _forward(self, z, context):
        return Planar._chain([self], z, context)

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (planar, all static or all amortized) applied in order: their parameters
        are constrained together, then each layer is eq. 10, and the log-determinants (eq. 12)
        are evaluated together from the saved ``tanh(a)``."""
        theta = torch.stack([f.params.raw(context) for f in layers], dim=-2)  # (K, P) or (B, K, P)
        u_hat, w, b, wu = constrain(theta, layers[0].dim)
        ts = []
        for u_k, w_k, b_k in zip(u_hat.unbind(-2), w.unbind(-2), b.unbind(-1)):
            a = (z @ w_k if context is None else (w_k * z).sum(-1)) + b_k
            t = torch.tanh(a)
            z = torch.addcmul(z, t.unsqueeze(-1), u_k)  # z + u_hat h(w^T z + b)
            ts.append(t)
        t = torch.stack(ts, dim=-1)  # (..., B, K)
        t_sq = t * t
        return z, torch.log(torch.addcmul(t_sq, 1.0 - t_sq, F.softplus(wu))).sum(-1)
