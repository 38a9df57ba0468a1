"""Orthonormal columns by the iteration of Bjorck & Bowie (1971), as the orthogonal Sylvester flow
uses it (van den Berg et al. 2018, Sec. 3.1; chapter 8's eq. ``syl-bjorck``), with a hand-written
backward pass.

    Q_0 = c A / ||A||_F,   Q_{k+1} = Q_k + Q_k G_k / 2 = Q_k (I + (I - Q_k^T Q_k) / 2),   G_k = I - Q_k^T Q_k

run *to convergence* (``max |G_k|`` at rounding level): Sylvester's determinant formula needs
``Q^T Q = I`` exactly, and a fixed few steps leave a log-determinant that is silently wrong.

The start. A step maps each singular value ``sigma`` of ``Q_k`` to ``sigma (3 - sigma^2) / 2``,
which converges to 1 from any ``sigma`` in ``(0, sqrt 3)``; a small one grows by only 3/2 a step
until it nears 1, so the further the smallest is short of 1 the more steps. ``A / ||A||_F`` has
its singular values at most 1 but its largest typically well below (0.36 for a 40 x 20 Gaussian
matrix: the Frobenius norm counts all 20). So ``c = (1.5 / lambda)^{1/2}``, with ``lambda`` the
smaller of two upper bounds on the largest eigenvalue of ``G = (A / ||A||_F)^T (A / ||A||_F)``,
its largest absolute row sum and its Frobenius norm (one pass over the M x M Gram matrix that the
first step computes anyway), moves every singular value up by the same factor and keeps them at
most ``sqrt 1.5 = 1.22`` (a step maps ``[1, sqrt 1.5]`` onto ``[0.918, 1]``). For a 40 x 20
Gaussian matrix the bound is about 1.8 times the eigenvalue: the largest singular value comes to
about 0.9, each 2.5 times what it was, and a batch of 128 such matrices takes 8 steps instead of
10 in float32, 10 instead of 12 in float64 (``bench/bjorck_start.py``). The limit, the polar factor
of ``A``, does not depend on the scale, so ``c`` is a constant to the gradient (computed without
one), in the hand-written backward pass and in autograd's through the loop alike: the gradient of
``A / ||A||_F`` is ``c`` times that of ``Q_0``.

The backward pass. With ``dL/dQ_{k+1} = P``, ``dQ_{k+1} = dQ_k (I + G_k / 2) + Q_k dG_k / 2`` and
``dG_k = -(dQ_k^T Q_k + Q_k^T dQ_k)`` give

    dL/dQ_k = P + P G_k^T / 2 - Q_k (C + C^T) / 2,   C = Q_k^T P,

three batched products an iteration, the scalings folded into them (``baddbmm``). Autograd
through the same loop takes four products and a dozen elementwise operations an iteration
(gradients scaled by ``alpha``, accumulated for ``Q_k``'s three uses); the forward values are
the same operations either way, so both give the same ``Q``, and gradients equal up to rounding
(``tests/test_bjorck.py``).
"""

from __future__ import annotations

import math

import torch

from . import fused

__all__ = ["orthogonalize"]


def _start(Q: torch.Tensor, eye: torch.Tensor, scale: bool):
    """``(c Q, I - c^2 Q^T Q, c)`` for ``Q`` (B, D, M): ``c`` (B, 1, 1) from the smaller of two
    bounds on the largest eigenvalue of ``Q^T Q``, so that the singular values of ``c Q`` are at
    most ``sqrt 1.5`` (module docstring); ``c = 1`` where not ``scale``."""
    gram = torch.bmm(Q.transpose(-1, -2), Q)
    if not scale:
        return Q, eye - gram, Q.new_ones(Q.shape[0], 1, 1)
    with torch.no_grad():
        bound = torch.minimum(gram.abs().sum(-1).amax(-1), torch.linalg.matrix_norm(gram))
        c = (1.5 / bound.clamp_min(torch.finfo(Q.dtype).tiny)).sqrt()[:, None, None]
    return Q * c, eye - gram * c.square(), c


def _iterate(Q: torch.Tensor, max_iter: int, keep: list | None = None, scale: bool = True) -> torch.Tensor:
    """Bjorck steps from ``c Q`` (:func:`_start`; ``Q`` with one batch axis) until converged.
    When ``keep`` is given, appends ``c`` to it, then ``(Q_k, G_k)`` of every step taken (for the
    backward pass)."""
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device).unsqueeze(0)
    Q, gap, c = _start(Q, eye, scale)
    if keep is not None:
        keep.append(c)
    tol = 64 * Q.shape[-1] * torch.finfo(Q.dtype).eps
    err_prev = err = math.inf
    for _ in range(max_iter):
        # one step as two fused products, G = I - Q^T Q and Q + Q G / 2 (no separate
        # subtraction, scaling and addition), and max |G| from one min/max pass
        if gap is None:
            gap = torch.baddbmm(eye, Q.transpose(-1, -2), Q, alpha=-1.0)
        low, high = torch.aminmax(gap)
        err = max(-low.item(), high.item())
        if err < tol or (err < math.sqrt(tol) and err > 0.5 * err_prev):
            return Q
        if keep is not None:
            keep.append((Q, gap))
        Q = torch.baddbmm(Q, Q, gap, alpha=0.5)
        gap, err_prev = None, err
    raise RuntimeError(
        f"orthogonalize: no convergence after {max_iter} iterations (max |Q^T Q - I| = {err:.2e}); "
        "the raw matrix is (near) rank deficient, so Sylvester's determinant formula would be wrong"
    )


class _Bjorck(torch.autograd.Function):
    """``A / ||A||_F -> Q_n``, the converged iterate, with the backward pass of the module docstring.
    Where the backward pass must itself be differentiable (``create_graph=True``, for second
    derivatives), it is autograd's through the loop rerun from ``Q_0`` (:mod:`.fused`)."""

    @staticmethod
    def forward(ctx, Q0: torch.Tensor, max_iter: int, scale: bool) -> torch.Tensor:
        keep: list = []  # c, then (Q_k, G_k) of every step
        Q = _iterate(Q0, max_iter, keep, scale)
        ctx.max_iter, ctx.scale = max_iter, scale
        fused.save(ctx, (Q0,), (keep[0], *(t for step in keep[1:] for t in step)))
        return Q

    @staticmethod
    def backward(ctx, P: torch.Tensor):
        inputs, saved = fused.saved(ctx)
        if torch.is_grad_enabled():  # a backward pass to differentiate again: the plain loop's
            plain = lambda Q0: _iterate(Q0, ctx.max_iter, scale=ctx.scale)  # noqa: E731
            return *fused.differentiable_backward(ctx, plain, inputs, (P,)), None, None
        c, *steps = saved
        for Q, gap in reversed(list(zip(steps[::2], steps[1::2]))):
            C = torch.bmm(Q.transpose(-1, -2), P)
            P = torch.baddbmm(P, P, gap.transpose(-1, -2), alpha=0.5)
            P = torch.baddbmm(P, Q, C + C.transpose(-1, -2), alpha=-0.5)
        return P * c, None, None  # through Q_0 = c (A / ||A||_F), c a constant


def orthogonalize(A: torch.Tensor, max_iter: int = 100, scale_start: bool = True) -> torch.Tensor:
    """Orthonormal columns from ``A`` (..., D, M) by Bjorck iterations, run until
    ``max |Q^T Q - I|`` stops decreasing below ``sqrt(eps)`` or reaches rounding level.

    Differentiable: where a gradient is needed, by the backward pass of the module docstring
    (second derivatives and ``torch.func`` transforms: by autograd through the loop).
    ``scale_start=False`` starts from ``A / ||A||_F`` itself (``c = 1``), as before the scaled
    start, for comparisons (``bench/bjorck_start.py``)."""
    Q = A / torch.linalg.matrix_norm(A, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    shape = Q.shape
    Q = Q.reshape(-1, *shape[-2:])  # one batch axis, for baddbmm
    if (torch.is_grad_enabled() and Q.requires_grad
            and torch._C._functorch.maybe_current_level() is None):
        return _Bjorck.apply(Q, max_iter, scale_start).view(shape)
    return _iterate(Q, max_iter, scale=scale_start).view(shape)
