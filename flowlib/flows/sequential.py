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
    amortized parts only, which must all share one ``context_dim``.
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

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, k: int) -> Flow:
        return self.flows[k]

    def _run(self, z, context, flows, step):
        total = z.new_zeros(z.shape[0])
        for f in flows:
            z, logdet = step(f)(z, context if f.amortized else None)
            total = total + logdet
        return z, total

    def _forward(self, z, context):
        return self._run(z, context, self.flows, lambda f: f)

    def _inverse(self, z, context):
        return self._run(z, context, reversed(self.flows), lambda f: f.inverse)

    def trajectory(self, z: torch.Tensor, context: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[z_0, z_1, ..., z_K]``: the sample after each flow, for plots."""
        self._check_inputs(z, context, "z")
        out = [z]
        for f in self.flows:
            z, _ = f(z, context if f.amortized else None)
            out.append(z)
        return out
