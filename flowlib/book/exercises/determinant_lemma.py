"""Checks for the exercises of the chapter "The matrix determinant lemma".

    det(I + u v^T) = 1 + v^T u                     (rank one, O(D))
    det(I_D + U V^T) = det(I_M + V^T U)            (rank M, O(D M^2 + M^3))
    (A + u v^T)^{-1} = A^{-1} - A^{-1} u v^T A^{-1} / (1 + v^T A^{-1} u)   (Sherman-Morrison, O(D^2))

Each check calls the reader's function in float64 on fixed random inputs, some of which
make the determinant negative, and names the usual mistakes when it recognises one.
"""

from __future__ import annotations

import torch

from ._answers import call_answer
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError

__all__ = ["check_rank_one_logdet", "check_low_rank_logdet", "check_sherman_morrison"]


def _inputs(B: int, D: int, M: int | None, seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    shape = (B, D) if M is None else (B, D, M)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale,
            torch.randn(*shape, generator=g, dtype=torch.float64) * scale)


def check_rank_one_logdet(logdet_fn) -> None:
    """Check ``logdet_fn(u, v)``: ``log|det(I + u v^T)|`` for each row of ``u`` and ``v`` of shape
    ``(B, D)``, returned with shape ``(B,)``, without forming a ``D x D`` matrix."""
    what = "log|det(I + u v^T)|"
    u, v = _inputs(32, 7, None, seed=11, scale=0.8)
    got = call_answer(what, logdet_fn, u.clone(), v.clone())
    vu = (v * u).sum(-1)
    expected = torch.log(torch.abs(1 + vu))
    negative = 1 + vu < 0
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.isnan(got[negative]).all() \
            and torch.allclose(got[~negative].to(torch.float64), expected[~negative]):
        raise ExerciseError(f"{what}: almost. Where det(I + u v^T) = 1 + v^T u is negative you return nan "
                            "(the log of a negative number): take the absolute value before the log.")
    check_with_mistakes(what, got, expected, {
        "You return the determinant 1 + v^T u itself: take log|.| of it.": 1 + vu,
        "You return |det| = |1 + v^T u|: take its logarithm.": torch.abs(1 + vu),
        "You treat u v^T as if it were diagonal (sum of log|1 + u_i v_i|): the lemma needs the full "
        "inner product v^T u.": torch.log(torch.abs(1 + u * v)).sum(-1),
        "You use u^T u (or v^T v) instead of the inner product v^T u.":
            torch.log(torch.abs(1 + (u * u).sum(-1))),
    }, hint="det(I + u v^T) = 1 + v^T u, computed per row: (v * u).sum(-1)")


def check_low_rank_logdet(logdet_fn) -> None:
    """Check ``logdet_fn(U, V)``: ``log|det(I_D + U V^T)|`` for ``U, V`` of shape ``(B, D, M)``,
    returned with shape ``(B,)``, computed from an ``M x M`` determinant."""
    what = "log|det(I_D + U V^T)|"
    U, V = _inputs(16, 9, 3, seed=12, scale=0.6)
    got = call_answer(what, logdet_fn, U.clone(), V.clone())
    I_M = torch.eye(3, dtype=torch.float64)
    small = I_M + V.transpose(-1, -2) @ U
    expected = torch.linalg.slogdet(small).logabsdet
    check_with_mistakes(what, got, expected, {
        "You return the determinant: take log|det| (torch.linalg.slogdet(...).logabsdet).":
            torch.linalg.det(small),
        "You forgot the identity: it is det(I_M + V^T U), not det(V^T U).":
            torch.linalg.slogdet(V.transpose(-1, -2) @ U).logabsdet,
        "You used the trace, log|1 + tr(V^T U)|: that is the rank-one formula, exact only for M = 1.":
            torch.log(torch.abs(1 + torch.diagonal(V.transpose(-1, -2) @ U, dim1=-2, dim2=-1).sum(-1))),
    }, hint="det(I_D + U V^T) = det(I_M + V^T U): form the M x M matrix V^T U (V.transpose(-1, -2) @ U)")


def check_sherman_morrison(inverse_fn) -> None:
    """Check ``inverse_fn(A_inv, u, v)``: ``(A + u v^T)^{-1}`` by the Sherman-Morrison formula, given
    ``A^{-1}`` of shape ``(D, D)`` and ``u``, ``v`` of shape ``(D,)``, in ``O(D^2)`` operations."""
    what = "(A + u v^T)^{-1}"
    g = torch.Generator().manual_seed(13)
    D = 6
    A = torch.randn(D, D, generator=g, dtype=torch.float64) + 3 * torch.eye(D, dtype=torch.float64)
    u, v = (torch.randn(D, generator=g, dtype=torch.float64) for _ in range(2))
    A_inv = torch.linalg.inv(A)
    got = call_answer(what, inverse_fn, A_inv.clone(), u.clone(), v.clone())
    expected = torch.linalg.inv(A + torch.outer(u, v))
    Au, vA, denominator = A_inv @ u, v @ A_inv, 1 + v @ A_inv @ u
    check_with_mistakes(what, got, expected, {
        "The correction must be SUBTRACTED from A^{-1}: (A + u v^T)^{-1} = A^{-1} - A^{-1} u v^T A^{-1} / "
        "(1 + v^T A^{-1} u).": A_inv + torch.outer(Au, vA) / denominator,
        "The 1 is missing from the denominator 1 + v^T A^{-1} u.":
            A_inv - torch.outer(Au, vA) / (denominator - 1),
        "The right factor is v^T A^{-1}, a row vector (v @ A_inv), not (A^{-1} v)^T: they differ when A is "
        "not symmetric.": A_inv - torch.outer(Au, A_inv @ v) / denominator,
        "u and v are swapped: that is the inverse of A + v u^T.": torch.linalg.inv(A + torch.outer(v, u)),
    }, atol=1e-9, rtol=1e-7, hint="A_inv - torch.outer(A_inv @ u, v @ A_inv) / (1 + v @ A_inv @ u)")
