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

__all__ = ["Householder", "reflect", "reflect_many"]


def reflect(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(I - 2 v v^T / ||v||^2) z`` for rows ``z`` and (broadcast) rows ``v``, in O(D)."""
    v_sq = (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return z - 2.0 * v * (v * z).sum(-1, keepdim=True) / v_sq


def reflect_many(z: torch.Tensor, v: torch.Tensor, order=None, shared: bool = True) -> torch.Tensor:
    """``H_{k_n} ... H_{k_1} z`` for ``k`` in ``order`` (default ``0, 1, ...``): the reflections
    ``H_k = I - 2 v_k v_k^T / ||v_k||^2`` of the rows ``v[..., k, :]``, applied to rows ``z`` in
    turn, each as ``z - (v_k^T z) (2 v_k / ||v_k||^2)``. ``shared``: ``v`` is ``(K, D)``, the same
    for every row of ``z``; else ``(B, K, D)``, one set per row of ``z`` (``(B, D)`` or ``(S, B, D)``)."""
    c = 2.0 * v / (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    for k in range(v.shape[-2]) if order is None else order:
        v_z = z @ v[k] if shared else (v[..., k, :] * z).sum(-1)
        z = torch.addcmul(z, v_z.unsqueeze(-1), c[..., k, :], value=-1.0)
    return z


class Householder(Flow):
    """One Householder reflection; static, or with ``v`` amortized from a context."""

    sample_axis = True
    volume_preserving = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 1.0):
        super().__init__(dim, context_dim)
        self.params = ParameterSource(dim, context_dim, init_std)

    def _forward(self, z, context):
        return Householder._chain([self], z, context)[0], z.new_zeros(z.shape[:-1])

    def _inverse(self, z, context):
        return self._forward(z, context)

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (reflections, all static or all amortized) applied in order, each as
        ``z - (v^T z) (2 v / ||v||^2)``; ``(z, None)``: the log-determinant is 0."""
        v = torch.stack([f.params.raw(context) for f in layers], dim=-2)  # (K, D) or (B, K, D)
        return reflect_many(z, v, shared=context is None), None
