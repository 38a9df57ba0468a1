"""NICE: additive coupling and diagonal scaling (Dinh, Krueger & Bengio 2014).

Additive coupling (eq. 5-6, with ``I_1`` the kept block, ``I_2`` the shifted one):

    y_{I1} = x_{I1},    y_{I2} = x_{I2} + m(x_{I1})          (log|det| = 0)

and its inverse ``x_{I2} = y_{I2} - m(y_{I1})``. Its Jacobian is unit
triangular, so the layer preserves volume; stacking couplings that alternate
the kept block (``swap``) lets every coordinate change. The scaling layer
(Sec. 3.3) ``y = exp(s) * x`` carries all the volume change: ``log|det| = sum s``.
With a context, ``m`` also sees the context and ``s`` is predicted from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Flow, ParameterSource
from .nets import MLP

__all__ = ["AdditiveCoupling", "Scale"]


class AdditiveCoupling(Flow):
    """``y_{I2} = x_{I2} + m(x_{I1}[, context])``; ``I1`` is the first ``dim // 2``
    coordinates, or the last ``dim // 2`` with ``swap=True``."""

    sample_axis = True
    volume_preserving = True

    def __init__(self, dim: int, context_dim: int | None = None, hidden: int = 64, n_layers: int = 2,
                 swap: bool = False):
        super().__init__(dim, context_dim)
        self.swap = bool(swap)
        self.n_kept = dim // 2
        self.m = MLP(self.n_kept + (context_dim or 0), dim - self.n_kept, hidden, n_layers)

    def _split(self, x):
        if self.swap:
            return x[..., self.dim - self.n_kept :], x[..., : self.dim - self.n_kept]
        return x[..., : self.n_kept], x[..., self.n_kept :]

    def _join(self, kept, shifted):
        return torch.cat([shifted, kept] if self.swap else [kept, shifted], dim=-1)

    def _shift(self, kept, context):
        if context is None:
            return self.m(kept)
        if kept.dim() == 2:
            return self.m(torch.cat([kept, context], dim=-1))
        # samples (S, B, n_kept) of one context row each: the first layer's context part
        # W_c h is computed once per row and broadcast, W [kept; h] = W_k kept + W_c h
        first, rest = self.m.net[0], self.m.net[1:]
        w_kept, w_context = first.weight.split([self.n_kept, first.in_features - self.n_kept], dim=1)
        return rest(F.linear(kept, w_kept) + F.linear(context, w_context, first.bias))

    def _forward(self, x, context):
        kept, rest = self._split(x)
        return self._join(kept, rest + self._shift(kept, context)), x.new_zeros(x.shape[:-1])

    def _inverse(self, y, context):
        kept, rest = self._split(y)
        return self._join(kept, rest - self._shift(kept, context)), y.new_zeros(y.shape[:-1])


class Scale(Flow):
    """Diagonal scaling ``y = exp(s) * x``, ``log|det| = sum_i s_i`` (Dinh et al. 2014, Sec. 3.3)."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.01):
        super().__init__(dim, context_dim)
        self.params = ParameterSource(dim, context_dim, init_std)

    def _forward(self, x, context):
        s = self.params.raw(context)
        return x * torch.exp(s), s.sum(-1).expand(x.shape[:-1])

    def _inverse(self, y, context):
        s = self.params.raw(context)
        return y * torch.exp(-s), (-s.sum(-1)).expand(y.shape[:-1])
