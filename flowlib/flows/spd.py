"""Symmetric positive definite matrices in PCP-Map's log-determinant (``log det Hess G`` by
Cholesky, :mod:`.pcpmap`), as two autograd nodes whose backward passes use the symmetry.

* :func:`weighted_gram` ``W = J diag(d) J^T`` for a batch of ``J`` of shape ``(..., n, m)`` and
  ``d`` of shape ``(..., m)``. Autograd would treat the two factors ``J diag(d)`` and ``J^T`` as
  unrelated: two batched products for their gradients and a broadcast reduction for ``d``. With
  ``Gs = G + G^T`` (``G`` the gradient of ``W``) the one product ``P = Gs J`` gives both:

      dL/dJ = P diag(d),        dL/dd_h = 1/2 sum_i J_ih P_ih.

* :func:`cholesky_logdet` ``log det A = 2 sum_i log L_ii`` with ``A = L L^T``, whose gradient is
  ``A^{-1}`` (Jacobi's formula), computed from ``L`` by ``torch.cholesky_inverse``: one LAPACK call
  per matrix, where the backward pass of ``torch.linalg.cholesky`` takes two triangular solves, a
  product and masking. Like the Cholesky factorization it reads the lower triangle of ``A``; its
  gradient is symmetric, as ``torch.linalg.cholesky``'s is.

Where a backward pass is itself differentiated (``create_graph=True``), both nodes differentiate
their forward pass written in plain PyTorch operations (:mod:`.fused`), and inside ``torch.func``
transforms the plain operations run instead of the nodes.
"""

from __future__ import annotations

import torch

from . import fused

__all__ = ["weighted_gram", "cholesky_logdet"]


def _plain_gram(J, d):
    return (J * d[..., None, :]) @ J.transpose(-1, -2)


def _plain_logdet(A):
    L, info = torch.linalg.cholesky_ex(A)
    return 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1), L, info


def _nodes_allowed() -> bool:
    return torch.is_grad_enabled() and torch._C._functorch.maybe_current_level() is None


class _WeightedGram(torch.autograd.Function):
    @staticmethod
    def forward(ctx, J, d):
        fused.save(ctx, (J, d), ())
        return _plain_gram(J, d)

    @staticmethod
    def backward(ctx, G):
        (J, d), _ = fused.saved(ctx)
        if torch.is_grad_enabled():
            return fused.differentiable_backward(ctx, _plain_gram, (J, d), (G,))
        P = (G + G.transpose(-1, -2)) @ J
        g_J = P * d[..., None, :] if ctx.needs_input_grad[0] else None
        g_d = 0.5 * (J * P).sum(-2) if ctx.needs_input_grad[1] else None
        return g_J, g_d


class _CholeskyLogdet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A):
        logdet, L, info = _plain_logdet(A)
        fused.save(ctx, (A,), (L,))
        ctx.mark_non_differentiable(L, info)
        return logdet, L, info

    @staticmethod
    def backward(ctx, g, _g_L, _g_info):
        (A,), (L,) = fused.saved(ctx)
        if torch.is_grad_enabled():
            return fused.differentiable_backward(ctx, lambda A: _plain_logdet(A)[0], (A,), (g,))
        return torch.cholesky_inverse(L) * g[..., None, None]


def weighted_gram(J: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``J diag(d) J^T`` for every matrix of the batch: ``J`` of shape ``(..., n, m)``, ``d`` of
    shape ``(..., m)`` with the same batch shape. One autograd node (module doc)."""
    if J.shape[:-2] != d.shape[:-1] or J.shape[-1] != d.shape[-1]:
        raise ValueError(f"weighted_gram expects J of shape (..., n, m) and d of shape (..., m) with "
                         f"the same batch shape; got {tuple(J.shape)} and {tuple(d.shape)}")
    if _nodes_allowed():
        return _WeightedGram.apply(J, d)
    return _plain_gram(J, d)


def cholesky_logdet(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log det A, L, info)`` for every matrix of the batch ``A`` (``(..., n, n)``, symmetric
    positive definite; the lower triangle is read), with ``L`` and ``info`` from
    ``torch.linalg.cholesky_ex`` (where ``info`` is nonzero the log-determinant is not valid).
    The log-determinant is one autograd node whose gradient is ``A^{-1}`` (module doc)."""
    if _nodes_allowed():
        return _CholeskyLogdet.apply(A)
    return _plain_logdet(A)
