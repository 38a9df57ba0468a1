"""Small networks used inside flows (NICE's coupling function ``m``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """``in_features -> hidden -> ... -> out_features`` with ReLU (Dinh et al. 2014, Sec. 5).

    With ``in_features = 0`` (nothing to condition on, e.g. a 1-D coupling
    without context) the network is a learned constant vector.
    The last layer starts small, so a flow built on it starts near the identity.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, n_layers: int = 2,
                 final_std: float = 1e-2):
        super().__init__()
        self.out_features = out_features
        if in_features == 0:
            self.net = None
            self.constant = nn.Parameter(torch.randn(out_features) * final_std)
            return
        layers, width = [], in_features
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        last = nn.Linear(width, out_features)
        nn.init.normal_(last.weight, 0.0, final_std)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return self.constant.expand(*x.shape[:-1], self.out_features)
        return self.net(x)
