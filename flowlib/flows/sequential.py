"""Composition of flows: the change-of-variables formula applied K times
(Rezende & Mohamed 2015, eq. 7):

    z_K = f_K o ... o f_1 (z_0),   log|det dz_K/dz_0| = sum_k log|det df_k/dz_{k-1}|.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Flow

__all__ = ["Sequential"]


class Sequential(Flow):
    """``Sequential(f_1, ..., f_K)`` applies ``f_1`` first; ``inverse`` runs in reverse order.

    It is amortized when any part is; the context is then passed to the
    amortized parts only, which must all share one ``context_dim``. It takes a sample axis,
    ``z`` of shape ``(S, B, dim)``, when every part does. Its input is checked once, and each
    part is called on it unchecked (a part maps ``(B, dim)`` to ``(B, dim)``); consecutive parts
    of one class that defines ``_chain`` (planar, radial, Householder) are applied by it together.
    """

    def __init__(self, *flows: Flow):
        if not flows:
            raise ValueError("Sequential needs at least one Flow, got none")
        for i, f in enumerate(flows):
            if not isinstance(f, Flow):
                raise ValueError(f"Sequential expects Flow instances; argument {i} is {type(f).__name__}")
        dims = {f.dim for f in flows}
        if len(dims) != 1:
            raise ValueError(
                f"all flows in a Sequential must share one dim, got dims {[f.dim for f in flows]}"
            )
        context_dims = {f.context_dim for f in flows if f.context_dim is not None}
        if len(context_dims) > 1:
            raise ValueError(f"amortized parts must share one context_dim, got {sorted(context_dims)}")
        super().__init__(flows[0].dim, context_dims.pop() if context_dims else None)
        self.flows = nn.ModuleList(flows)
        self.sample_axis = all(f.sample_axis for f in flows)
        self.volume_preserving = all(f.volume_preserving for f in flows)

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, k: int) -> Flow:
        return self.flows[k]

    def _step(self, z, context):
        flows, total, i = list(self.flows), None, 0
        while i < len(flows):
            f, j = flows[i], i + 1
            c = None if f.context_dim is None else context
            if type(f)._chain is not None:  # the longest run of layers of f's class that it can chain
                while j < len(flows) and type(flows[j]) is type(f) and flows[j].context_dim == f.context_dim:
                    j += 1
            z, logdet = f._chain(flows[i:j], z, c) if j - i > 1 else f._step(z, c)
            if logdet is not None:
                total = logdet if total is None else total + logdet
            i = j
        return z, total

    def _forward(self, z, context):
        z, total = self._step(z, context)
        return z, z.new_zeros(z.shape[:-1]) if total is None else total

    def _inverse(self, z, context):
        total = z.new_zeros(z.shape[:-1])
        for f in reversed(self.flows):
            z, logdet = f.inverse(z, context if f.amortized else None)
            total = total + logdet
        return z, total

    def trajectory(self, z: torch.Tensor, context: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[z_0, z_1, ..., z_K]``: the sample after each flow, for plots."""
        self._check_inputs(z, context, "z")
        out = [z]
        for f in self.flows:
            z, _ = f(z, context if f.amortized else None)
            out.append(z)
        return out
