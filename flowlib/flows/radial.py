"""Radial flow (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.2).

    f(z) = z + beta h(alpha, r) (z - z0),   r = ||z - z0||,   h = 1 / (alpha + r)   (eq. 14)
    |det df/dz| = [1 + beta h]^(D-1) [1 + beta h + beta h'(alpha, r) r]

Invertibility needs ``beta >= -alpha`` (Appendix A.2). Both are built into the
parameterization: ``alpha = softplus(alpha')`` and ``beta = -alpha + softplus(beta')``.
With ``s = softplus(beta')`` the two factors simplify to ratios of positive terms,

    1 + beta h                = (r + s) / (alpha + r)
    1 + beta h + beta h' r    = (r^2 + 2 alpha r + alpha s) / (alpha + r)^2,

which is how they are evaluated (no cancellation, no log of a negative number).

Unlike the paper's remark, the inverse has a closed form: taking norms of
``y - z0 = (1 + beta h(r)) (z - z0)`` gives ``r_y = r (r + s) / (alpha + r)``, a
quadratic in ``r`` with one positive root.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Flow, ParameterSource

__all__ = ["Radial"]


class Radial(Flow):
    """One radial layer; static, or amortized from a context (eq. 14)."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.1):
        super().__init__(dim, context_dim)
        # raw parameters, one row per sample: [z0 (dim), alpha' (1), beta' (1)]
        self.params = ParameterSource(dim + 2, context_dim, init_std)

    def _z0_alpha_s(self, context):
        """``z0`` (``(D,)`` static, ``(B, D)`` amortized), ``alpha > 0`` and ``s = beta + alpha > 0``."""
        theta = self.params.raw(context)
        alpha, s = F.softplus(theta[..., self.dim :]).unbind(-1)
        return theta[..., : self.dim], alpha, s

    def z0_alpha_s(self, batch_size: int, context=None):
        """Per-sample centre ``z0`` (B, D), ``alpha > 0`` and ``s = beta + alpha > 0`` (B,)."""
        z0, alpha, s = self._z0_alpha_s(context)
        if context is None:
            return z0.expand(batch_size, self.dim), alpha.expand(batch_size), s.expand(batch_size)
        return z0, alpha, s

    def _log_factors(self, r, alpha, s):
        log_1 = torch.log(r + s) - torch.log(alpha + r)
        log_2 = torch.log(r * r + 2.0 * alpha * r + alpha * s) - 2.0 * torch.log(alpha + r)
        return (self.dim - 1) * log_1 + log_2

    def _forward(self, z, context):
        return Radial._chain([self], z, context)

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (radial, all static or all amortized) applied in order (eq. 14), their
        parameters constrained together and their log-determinants summed together."""
        dim = layers[0].dim
        theta = torch.stack([f.params.raw(context) for f in layers], dim=-2)  # (K, D + 2) or (B, K, D + 2)
        alpha, s = F.softplus(theta[..., dim:]).unbind(-1)
        radii, scales = [], []
        for z0_k, alpha_k, s_k in zip(theta[..., :dim].unbind(-2), alpha.unbind(-1), s.unbind(-1)):
            diff = z - z0_k
            r = torch.linalg.vector_norm(diff, dim=-1)
            scale = (r + s_k) / (alpha_k + r)  # 1 + beta h
            z = torch.addcmul(z0_k, scale.unsqueeze(-1), diff)
            radii.append(r)
            scales.append(scale)
        r, scale = torch.stack(radii, dim=-1), torch.stack(scales, dim=-1)  # (..., B, K)
        # (D - 1) log(1 + beta h) + log(r^2 + 2 alpha r + alpha s) - 2 log(alpha + r)
        log_2 = torch.log(r * (r + 2.0 * alpha) + alpha * s) - 2.0 * torch.log(alpha + r)
        return z, ((dim - 1) * torch.log(scale) + log_2).sum(-1)

    def _inverse(self, y, context):
        z0, alpha, s = self._z0_alpha_s(context)
        diff_y = y - z0
        r_y = torch.linalg.vector_norm(diff_y, dim=-1)
        # r_y (alpha + r) = r (r + s)  <=>  r^2 + p r - r_y alpha = 0 with p = s - r_y;
        # its positive root, in the form that avoids cancellation for either sign of p
        p = s - r_y
        q = torch.sqrt(p * p + 4.0 * r_y * alpha)
        r = torch.where(p > 0, 2.0 * r_y * alpha / (q + p), 0.5 * (q - p))
        scale = (r + s) / (alpha + r)
        return z0 + diff_y / scale.unsqueeze(-1), -self._log_factors(r, alpha, s)
