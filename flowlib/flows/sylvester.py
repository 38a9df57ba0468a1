"""Sylvester normalizing flows (van den Berg, Hasenclever, Tomczak & Welling 2018).

    z' = z + Q R h(R~ Q^T z + b),   h = tanh                              (eq. 13)

with ``Q`` a ``D x M`` matrix of orthonormal columns and ``R``, ``R~`` upper
triangular ``M x M``. Sylvester's determinant identity
``det(I_D + A B) = det(I_M + B A)`` (eq. 12) and ``Q^T Q = I`` give

    det dz'/dz = det(I_M + diag(h'(a)) R~ R) = prod_i (1 + R_ii R~_ii h'(a_i)),   (eq. 14)

``a = R~ Q^T z + b``: ``R~ R`` is upper triangular. With ``h' in (0, 1]`` the map
is invertible when ``R_ii R~_ii >= -1``; the parameterization
``R_ii = tanh(x_i)``, ``R~_ii = tanh(y_i)`` makes the product lie in (-1, 1).
Each factor is evaluated as ``t^2 + (1 - t^2)(1 + R_ii R~_ii)``, ``t = tanh(a_i)``, with
``log(1 + tanh x tanh y) = log cosh(x + y) - log cosh x - log cosh y``, finite in
float32 even where ``tanh x tanh y`` rounds to -1.

Three ways to get ``Q`` (Sec. 3.1-3.3):

- ``"orthogonal"``: ``Q`` from a free ``D x M`` matrix by the iterative
  orthogonalisation ``Q <- Q (I + (I - Q^T Q) / 2)`` (Bjorck & Bowie 1971),
  run *to convergence*: eq. 14 holds only for orthonormal ``Q``, and stopping
  after a fixed few steps leaves a log-determinant that is silently wrong.
- ``"householder"``: ``Q = H_1 ... H_n``, a product of Householder
  reflections, orthogonal by construction (``M = D``).
- ``"triangular"``: ``Q`` the identity or, with ``permute=True``, the reversal
  permutation (``M = D``); alternate the two between layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Flow, ParameterSource, check_size
from .bjorck import orthogonalize
from .householder import reflect_run
from .used_outputs import keep_outputs

__all__ = ["Sylvester", "orthogonalize"]

VARIANTS = ("orthogonal", "householder", "triangular")


def _log1p_tanh_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(1 + tanh(x) tanh(y))`` through ``log cosh(x + y) - log cosh x - log cosh y``."""

    def logcosh(v):
        v = v.abs()
        return v + F.softplus(-2.0 * v) - math.log(2.0)

    return logcosh(x + y) - logcosh(x) - logcosh(y)


class Sylvester(Flow):
    """One Sylvester layer (eq. 13); ``variant`` picks how ``Q`` is built (see module doc).

    ``M`` (orthogonal only) is the number of columns of ``Q``, default ``dim``;
    ``n_reflections`` (householder only) the number of reflections, default ``dim``.
    """

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, variant: str = "orthogonal",
                 M: int | None = None, n_reflections: int | None = None, permute: bool = False,
                 init_std: float = 0.1):
        super().__init__(dim, context_dim)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if M is not None and variant != "orthogonal":
            raise ValueError(f"M applies to the 'orthogonal' variant only; {variant!r} uses M = dim")
        M = dim if M is None else M
        check_size("M", M)
        if M > dim:
            raise ValueError(f"M must satisfy 1 <= M <= dim = {dim}, got {M}")
        n_reflections = dim if n_reflections is None else n_reflections
        check_size("n_reflections", n_reflections)
        self.variant, self.M, self.n_reflections, self.permute = variant, M, n_reflections, bool(permute)
        # [R (M*M), R~ (M*M), b (M)] drawn at full size, as before; the head then keeps only the
        # outputs the layer reads (.used_outputs), in the order [strict upper triangle of R, that
        # of R~ (row by row), x = raw diagonal of R, y = that of R~, b]: M^2 + 2M of 2M^2 + M
        self.params = ParameterSource(2 * M * M + M, context_dim, init_std)
        q_size = {"orthogonal": dim * M, "householder": n_reflections * dim, "triangular": 0}[variant]
        self.q_params = ParameterSource(q_size, context_dim, 1.0) if q_size else None
        i, j = torch.triu_indices(M, M, 1)
        upper, diag = i * M + j, torch.arange(M) * (M + 1)  # positions in a flattened M x M matrix
        square = M * M
        keep_outputs(self.params, torch.cat([upper, square + upper, diag, square + diag,
                                             2 * square + torch.arange(M)]))
        # where the kept [R, R~] entries go in the flattened (2, M, M) pair: read by _R_Rt_b
        self.register_buffer("_places", torch.cat([upper, square + upper, diag, square + diag]),
                             persistent=False)
        # kept in the state dict, which older checkpoints have: the mask of R's strict upper triangle
        self.register_buffer("strict_upper", torch.ones(M, M).triu(1))

    def _R_Rt_b(self, context):
        """``R``, ``R~`` (``(M, M)`` static, ``(B, M, M)`` amortized) with ``tanh`` diagonals, ``b``
        and the raw diagonals ``(x, y)`` (``(M,)`` or ``(B, M)``)."""
        M = self.M
        theta = self.params.raw(context)
        n_upper = M * (M - 1)  # both strict upper triangles
        xy = theta[..., n_upper : n_upper + 2 * M]
        entries = torch.cat([theta[..., :n_upper], torch.tanh(xy)], -1)
        both = theta.new_zeros(*theta.shape[:-1], 2 * M * M).index_copy(-1, self._places, entries)
        R, Rt = both.unflatten(-1, (2, M, M)).unbind(-3)
        x, y = xy.unflatten(-1, (2, M)).unbind(-2)
        return R, Rt, theta[..., n_upper + 2 * M :], x, y

    def R_Rt_b(self, batch_size: int, context=None):
        """Per-sample ``R``, ``R~`` (B, M, M) with ``tanh`` diagonals, ``b`` (B, M), and the raw
        diagonals ``(x, y)`` with ``R_ii = tanh(x_i)``, ``R~_ii = tanh(y_i)``."""
        out = self._R_Rt_b(context)
        if context is None:
            out = tuple(t.expand(batch_size, *t.shape) for t in out)
        return out

    def Q(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """The matrix ``Q``, (1, D, M) for a static flow or (B, D, M) per context row: for
        inspection and checks (the forward pass applies the implicit ones without forming them)."""
        if self.variant == "orthogonal":
            Q = self._orthogonal_Q(context)
            return Q if context is not None else Q.unsqueeze(0)
        n = 1 if context is None else context.shape[0]
        # Q e_j for every basis vector e_j, the basis taken as a sample axis: (D, n, D) -> (n, D, D)
        eye = self.strict_upper.new_ones(self.dim).diag().unsqueeze(1).expand(self.dim, n, self.dim)
        return self._apply_Q(eye, self._reflection_vectors(context)).permute(1, 2, 0)

    def _orthogonal_Q(self, context):
        """``Q``: (D, M) for a static flow, orthogonalized once, or (B, D, M) per context row."""
        theta = self.q_params.raw(context)
        return orthogonalize(theta.unflatten(-1, (self.dim, self.M)))

    def _reflection_vectors(self, context):
        if self.variant != "householder":
            return None
        return self.q_params.raw(context).unflatten(-1, (self.n_reflections, self.dim))

    def _apply_Q(self, v, vs, transpose=False):
        """``Q v`` (or ``Q^T v``) for rows ``v`` (B, D) or (S, B, D), ``Q`` implicit in the
        reflection vectors ``vs`` ((n, D) static, (B, n, D) per context row)."""
        if self.variant == "triangular":
            return v.flip(-1) if self.permute else v
        # Q^T v = H_n (... H_1 v),  Q v = H_1 (H_2 (... H_n v)): the reflections in reverse order
        return reflect_run(v, vs if transpose else vs.flip(-2))

    def _forward(self, z, context):
        R, Rt, b, x, y = self._R_Rt_b(context)
        Q = vs = None
        if self.variant == "orthogonal":
            Q = self._orthogonal_Q(context)
        elif self.variant == "householder" and z.dim() == 3 and 4 * z.shape[0] > self.dim:
            # many samples per context row (importance sampling): Q formed once per row turns
            # 2 n passes of reflections over all the samples into two matrix products
            Q = self.Q(context)
            Q = Q[0] if context is None else Q
        else:
            vs = self._reflection_vectors(context)  # None for the triangular variant
        Qt_z = self._apply_Q(z, vs, transpose=True) if Q is None else _rows_times(z, Q)
        a = _rows_times(Qt_z, Rt.transpose(-1, -2)) + b  # R~ Q^T z + b, as rows
        t = torch.tanh(a)
        R_h = _rows_times(t, R.transpose(-1, -2))
        z_out = z + (self._apply_Q(R_h, vs) if Q is None else _rows_times(R_h, Q.transpose(-1, -2)))
        t_sq = t * t
        factor = t_sq + (1.0 - t_sq) * torch.exp(_log1p_tanh_product(x, y))
        return z_out, torch.log(factor).sum(-1)


def _rows_times(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``v A`` for rows ``v`` of shape (B, n) or (S, B, n) and ``A`` shared, (n, m), or one per
    context row, (B, n, m); (S, B, n) samples of row ``b`` all use ``A[b]``."""
    if A.dim() == 2:
        return v @ A
    if v.dim() == 2:
        return (v.unsqueeze(-2) @ A).squeeze(-2)
    return (v.transpose(0, 1) @ A).transpose(0, 1)  # (B, S, n) @ (B, n, m): one product per row
