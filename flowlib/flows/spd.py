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

On the CPU, the factorization and the inverse run as a compiled kernel where one builds
(``kernels/spd.c``: eight matrices at a time, one vector instruction for all eight, where LAPACK
takes one small matrix at a time; the same arithmetic to rounding, ``tests/test_spd.py``), for
matrices of at most :data:`KERNEL_MAX_SIZE` rows, outside autograd (the node's forward and backward,
or no gradient at all); elsewhere ``torch.linalg.cholesky_ex`` and ``torch.cholesky_inverse`` run.

Where a backward pass is itself differentiated (``create_graph=True``), both nodes differentiate
their forward pass written in plain PyTorch operations (:mod:`.fused`), and inside ``torch.func``
transforms the plain operations run instead of the nodes.
"""

from __future__ import annotations

import torch

from . import fused, kernels

__all__ = ["weighted_gram", "gram_of_sum", "cholesky_logdet", "KERNEL_MAX_SIZE"]

# Above this size LAPACK's blocked factorization wins (and the kernel's interleaved buffer of
# n * n * 8 numbers leaves the cache).
KERNEL_MAX_SIZE = 64


def _plain_gram(J, d):
    return (J * d[..., None, :]) @ J.transpose(-1, -2)


def _plain_logdet(A):
    L, info = torch.linalg.cholesky_ex(A)
    return 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1), L, info


def _kernel(*tensors):
    """The compiled kernel for these CPU tensors, or None (module doc)."""
    A = tensors[0]
    if A.dim() < 2 or not 0 < A.shape[-1] <= KERNEL_MAX_SIZE or A.numel() == 0:
        return None
    return kernels.for_tensors("spd", *tensors)


def _gram_kernel(*tensors):
    """The compiled kernel of :func:`gram_of_sum` for these CPU tensors, or None."""
    return kernels.for_tensors("gram", *tensors)


def _factor(A):
    """``(log det A, L, info)`` as :func:`_plain_logdet`, by the kernel where it runs; no autograd."""
    kernel = None if torch.is_grad_enabled() else _kernel(A)
    if kernel is None:
        return _plain_logdet(A)
    n = A.shape[-1]
    rows = A.detach().reshape(-1, n, n).contiguous()
    N = rows.shape[0]
    L, logdet = torch.empty_like(rows), rows.new_empty(N)
    info = torch.empty(N, dtype=torch.int32)
    kernel.forward((N, n, 0, 0), rows, L, logdet, info, rows.new_empty((n + 1) * n * kernel.lib.spd_lanes()))
    return logdet.reshape(A.shape[:-2]), L.reshape(A.shape), info.reshape(A.shape[:-2])


def _inverse_times(L, g):
    """``g A^{-1}`` for ``A = L L^T`` (``g`` one number a matrix); no autograd."""
    kernel = _kernel(L, g)
    if kernel is None:
        return torch.cholesky_inverse(L) * g[..., None, None]
    n = L.shape[-1]
    rows = L.reshape(-1, n, n).contiguous()
    out = torch.empty_like(rows)
    kernel.backward((rows.shape[0], n, 0, 0), rows, g.reshape(-1).contiguous(), out,
                    rows.new_empty(2 * n * n * kernel.lib.spd_lanes()))
    return out.reshape(L.shape)


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
        logdet, L, info = _factor(A)
        fused.save(ctx, (A,), (L,))
        ctx.mark_non_differentiable(L, info)
        return logdet, L, info

    @staticmethod
    def backward(ctx, g, _g_L, _g_info):
        (A,), (L,) = fused.saved(ctx)
        if torch.is_grad_enabled():
            return fused.differentiable_backward(ctx, lambda A: _plain_logdet(A)[0], (A,), (g,))
        return _inverse_times(L, g)


def _plain_gram_of_sum(g, M, f, B, d):
    J = g[..., None] * M + f[..., None] * B
    return weighted_gram(J, d), J


class _GramOfSum(torch.autograd.Function):
    """:func:`gram_of_sum` on the CPU with the compiled kernel (``kernels/gram.c``): each direction's
    elementwise work is one pass over the ``(n, H)`` matrices, where autograd's backward pass through
    the plain operations makes seven, each into fresh memory; the matrix products are PyTorch's."""

    @staticmethod
    def forward(ctx, g, M, f, B, d, kernel):
        ctx.set_materialize_grads(False)
        n, H = M.shape[-2:]
        g, M, f, B, d = (t.contiguous() for t in (g, M, f, B, d))
        J, JD = torch.empty_like(M), torch.empty_like(M)
        sizes = (M.numel() // (n * H), n, H, g.numel() // n)
        kernel.forward(sizes, g, M, f, B, d, J, JD)
        fused.save(ctx, (g, M, f, B, d), (J,))
        ctx.kernel, ctx.sizes = kernel, sizes
        return JD @ J.transpose(-1, -2), J

    @staticmethod
    def backward(ctx, G, g_J):
        inputs, (J,) = fused.saved(ctx)
        if G is None and g_J is None:
            return (None,) * 6
        if torch.is_grad_enabled():
            used = [i for i, grad in enumerate((G, g_J)) if grad is not None]  # outputs with a gradient
            grads = fused.differentiable_backward(
                ctx, lambda *xs: tuple(_plain_gram_of_sum(*xs)[i] for i in used), inputs,
                tuple((G, g_J)[i] for i in used))
            return (*grads, None)
        g, M, f, B, d = inputs
        P = (G + G.transpose(-1, -2)) @ J if G is not None else torch.zeros_like(J)
        g_M, g_d = torch.empty_like(M), torch.empty_like(d)
        g_g, g_f, g_B = torch.zeros_like(g), torch.zeros_like(f), torch.zeros_like(B)
        ctx.kernel.backward(ctx.sizes, g, M, f, B, d, J, P, None if g_J is None else g_J.contiguous(),
                            g_M, g_d, g_g, g_f, g_B)
        return g_g, g_M, g_f, g_B, g_d, None


def gram_of_sum(g: torch.Tensor, M: torch.Tensor, f: torch.Tensor, B: torch.Tensor,
                d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J diag(d) J^T, J)`` with ``J = diag(g) M + diag(f) B`` for every matrix of the batch:
    ``M`` of shape ``(..., n, H)``, ``d`` of shape ``(..., H)`` with the same batch shape, ``B`` of
    shape ``(n, H)`` shared by all, and ``g``, ``f`` of one shape ``(..., n)`` whose batch shape is a
    trailing part of ``M``'s (``(n,)``: shared by all; ``(B, n)`` against ``(S, B, n, H)``: shared
    by the samples of a row). PCP-Map's Hessian term of its second layer (``J_1``, :mod:`.pcpmap`).
    On the CPU, one autograd node whose elementwise work runs as a compiled kernel where one builds
    (:class:`_GramOfSum`); elsewhere the plain operations with :func:`weighted_gram`."""
    n, H = M.shape[-2:]
    batch = M.shape[:-2]
    if (g.shape != f.shape or g.shape[-1:] != (n,) or g.shape[:-1] != batch[len(batch) + 1 - g.dim():]
            or B.shape != (n, H) or d.shape != (*batch, H)):
        raise ValueError(f"gram_of_sum expects M (..., n, H), d (..., H), B (n, H) and g, f (..., n) with "
                         f"a trailing part of M's batch shape; got g {tuple(g.shape)}, M {tuple(M.shape)}, "
                         f"f {tuple(f.shape)}, B {tuple(B.shape)}, d {tuple(d.shape)}")
    kernel = _gram_kernel(g, M, f, B, d)
    if kernel is None or M.numel() == 0:
        return _plain_gram_of_sum(g, M, f, B, d)
    return _GramOfSum.apply(g, M, f, B, d, kernel)


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
    return _factor(A)
