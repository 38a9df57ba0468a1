"""Householder flow (Tomczak & Welling 2016, eq. 9-10).

    z' = H z,    H = I - 2 v v^T / ||v||^2.

``H`` is a reflection: orthogonal, symmetric and its own inverse, so
``log|det H| = 0`` (volume preserving) and ``H^{-1} = H``. A product of ``K``
reflections can represent any orthogonal matrix once ``K >= D`` (every
orthogonal matrix is a product of at most ``D`` reflections). In the paper ``v``
is predicted from the encoder (amortized); here it may also be a free vector.
"""

from __future__ import annotations

import torch

from .base import Flow, ParameterSource

__all__ = ["Householder", "reflect"]


def reflect(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(I - 2 v v^T / ||v||^2) z`` for rows ``z`` and (broadcast) rows ``v``, in O(D)."""
    v_sq = (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return z - 2.0 * v * (v * z).sum(-1, keepdim=True) / v_sq


class Householder(Flow):
    """One Householder reflection; static, or with ``v`` amortized from a context."""

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 1.0):
        super().__init__(dim, context_dim)
        self.params = ParameterSource(dim, context_dim, init_std)

    def _forward(self, z, context):
        v = self.params(z.shape[0], context)
        return reflect(z, v), z.new_zeros(z.shape[0])

    def _inverse(self, z, context):
        return self._forward(z, context)
