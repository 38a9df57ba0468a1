"""Checks for the exercises of the Sylvester-flow chapter (van den Berg et al. 2018)."""

from __future__ import annotations

import torch

from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes

__all__ = ["check_sylvester_logdet", "check_householder_Q", "check_bjorck_step"]


def _sylvester_inputs(seed: int = 0, batch: int = 5, M: int = 4):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(batch, M, M, generator=g, dtype=torch.float64).triu()
    R_tilde = torch.randn(batch, M, M, generator=g, dtype=torch.float64).triu()
    # diagonals with R_ii R~_ii in (-1, 1), some negative, as the tanh parameterization gives
    R.diagonal(dim1=-2, dim2=-1).copy_(torch.tanh(torch.randn(batch, M, generator=g, dtype=torch.float64)))
    R_tilde.diagonal(dim1=-2, dim2=-1).copy_(torch.tanh(2 * torch.randn(batch, M, generator=g,
                                                                        dtype=torch.float64)))
    a = 1.5 * torch.randn(batch, M, generator=g, dtype=torch.float64)
    return R, R_tilde, a


def check_sylvester_logdet(fn) -> None:
    """``fn(R, R_tilde, a)`` must return ``log|det dz'/dz|`` of shape ``(B,)`` for the Sylvester
    layer ``z' = z + Q R tanh(a)``, ``a = R~ Q^T z + b`` with ``Q^T Q = I`` (eq. 14):
    ``sum_i log|1 + R_ii R~_ii tanh'(a_i)|``. ``R``, ``R_tilde``: ``(B, M, M)`` upper triangular;
    ``a``: ``(B, M)``."""
    R, R_tilde, a = _sylvester_inputs()
    got = call_reader("sylvester_logdet", fn, R.clone(), R_tilde.clone(), a.clone())
    diag = R.diagonal(dim1=-2, dim2=-1) * R_tilde.diagonal(dim1=-2, dim2=-1)
    h_prime = 1 - torch.tanh(a) ** 2
    expected = torch.log((1 + diag * h_prime).abs()).sum(-1)
    mistakes = {
        "It matches sum_i log|1 + R_ii R~_ii|: the derivative h'(a_i) = 1 - tanh(a_i)^2 is missing from "
        "each factor (the Jacobian is I + Q R diag(h'(a)) R~ Q^T).": torch.log((1 + diag).abs()).sum(-1),
        "It matches sum_i log|1 + R_ii R~_ii tanh(a_i)|: use the derivative h'(a) = 1 - tanh(a)^2, "
        "not h(a) itself.": torch.log((1 + diag * torch.tanh(a)).abs()).sum(-1),
        "It matches the determinant itself, not its logarithm: take log|.| of each factor and sum.":
            (1 + diag * h_prime).prod(-1),
        "It matches sum_i log|R_ii R~_ii h'(a_i)|: the identity matrix is missing; the Jacobian is "
        "I + (a rank-M term).": torch.log((diag * h_prime).abs()).sum(-1),
    }
    check_with_mistakes("sylvester_logdet", got, expected, mistakes,
                        hint="det(I_M + diag(h') R~ R) is triangular: its determinant is the product of "
                             "its diagonal, 1 + h'(a_i) R~_ii R_ii; return the sum of the logs, one per row.")


def _householder_inputs(seed: int = 1, n: int = 3, D: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64)


def _reflection(v: torch.Tensor) -> torch.Tensor:
    return torch.eye(v.shape[0], dtype=v.dtype) - 2 * torch.outer(v, v) / (v @ v)


def check_householder_Q(fn) -> None:
    """``fn(vs)`` with ``vs`` of shape ``(n, D)`` must return the ``D x D`` matrix
    ``Q = H_1 H_2 ... H_n``, ``H_k = I - 2 v_k v_k^T / ||v_k||^2`` (van den Berg et al. 2018, Sec. 3.2)."""
    vs = _householder_inputs()
    got = call_reader("householder_Q", fn, vs.clone())
    Hs = [_reflection(v) for v in vs]
    eye = torch.eye(vs.shape[1], dtype=vs.dtype)
    expected = torch.linalg.multi_dot(Hs)
    mistakes = {
        "It matches H_n ... H_1 = Q^T: multiply the reflections in the order H_1 H_2 ... H_n.":
            torch.linalg.multi_dot(Hs[::-1]),
        "It matches the product of I - 2 v v^T without dividing by ||v||^2: normalise each v "
        "(otherwise H is not orthogonal).": torch.linalg.multi_dot([eye - 2 * torch.outer(v, v) for v in vs]),
        "It matches the product of I - v v^T / ||v||^2, which are projections (not invertible): "
        "a reflection needs the factor 2.": torch.linalg.multi_dot([eye - torch.outer(v, v) / (v @ v)
                                                                      for v in vs]),
    }
    check_with_mistakes("householder_Q", got, expected, mistakes,
                        hint="H_k = I - 2 v_k v_k^T / (v_k^T v_k); multiply them left to right.")


def check_bjorck_step(fn) -> None:
    """``fn(Q)`` with ``Q`` of shape ``(D, M)`` must return one Bjorck-Bowie step
    ``Q (I + (I - Q^T Q) / 2)`` (van den Berg et al. 2018, eq. 16)."""
    g = torch.Generator().manual_seed(2)
    Q = torch.randn(6, 3, generator=g, dtype=torch.float64)
    Q = Q / torch.linalg.matrix_norm(Q)
    got = call_reader("bjorck_step", fn, Q.clone())
    eye = torch.eye(3, dtype=Q.dtype)
    gap = eye - Q.T @ Q
    expected = Q @ (eye + 0.5 * gap)
    mistakes = {
        "It matches Q (I - Q^T Q) / 2, the correction alone: add it to Q, Q <- Q + Q (I - Q^T Q) / 2.":
            0.5 * Q @ gap,
        "It matches Q (I - (I - Q^T Q) / 2): the correction enters with a + sign.": Q @ (eye - 0.5 * gap),
        "It matches Q (I + (I - Q^T Q)): the correction is halved, (I - Q^T Q) / 2.": Q @ (eye + gap),
    }
    check_with_mistakes("bjorck_step", got, expected, mistakes,
                        hint="Q^T Q is M x M; the step is Q @ (I_M + (I_M - Q^T Q) / 2).")
