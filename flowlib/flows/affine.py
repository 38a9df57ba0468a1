"""Diagonal affine map: the reparameterization of a diagonal Gaussian (Kingma & Welling 2014,
eq. 10, ``z = mu + sigma * eps``) as a flow,

    y = m + exp(log_s) * z,    log|det dy/dz| = sum_i log_s_i,

its inverse ``z = (y - m) * exp(-log_s)`` with ``log|det| = -sum_i log_s_i``. It pushes ``N(0, I)``
to ``N(m, diag exp(2 log_s))``: last in a stack, it places and scales what the flows before it
shaped on unit-scale noise. Static, ``m`` and ``log_s`` are free and start at the identity (0);
amortized, ``(m, log_s)`` are a linear map of the context (:class:`~.base.ParameterSource`).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Flow, ParameterSource

__all__ = ["DiagonalAffine"]


class DiagonalAffine(Flow):
    """``y = m + exp(log_s) * z``: pushes ``N(0, I)`` to ``N(m, diag exp(2 log_s))``."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None):
        super().__init__(dim, context_dim)
        if context_dim is None:
            self.m = nn.Parameter(torch.zeros(dim))
            self.log_s = nn.Parameter(torch.zeros(dim))
        else:
            self.params = ParameterSource(2 * dim, context_dim)

    def _shift_and_log_scale(self, context):
        if context is None:
            return self.m, self.log_s
        return self.params.raw(context).split(self.dim, -1)

    def _forward(self, z, context):
        m, log_s = self._shift_and_log_scale(context)
        return m + torch.exp(log_s) * z, log_s.sum(-1).expand(z.shape[:-1])

    def _inverse(self, y, context):
        m, log_s = self._shift_and_log_scale(context)
        return (y - m) * torch.exp(-log_s), (-log_s.sum(-1)).expand(y.shape[:-1])
