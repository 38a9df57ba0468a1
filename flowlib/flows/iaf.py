"""Inverse autoregressive flow (Kingma et al. 2016, Sec. 4, eq. 11-14 and Algorithm 1).

    [m, s] = MADE(z; h),   sigma = sigmoid(s + forget_bias)
    z' = sigma * z + (1 - sigma) * m                                  (eq. 14)
    log|det dz'/dz| = sum_i log sigma_i                               (eq. 15)

``m_i`` and ``s_i`` depend only on the variables before ``i`` in the order, so
the Jacobian is triangular with ``sigma`` on its diagonal. ``sigma`` lies in
(0, 1): the scales are positive by construction. A positive ``forget_bias``
(the paper suggests +1 or +2) starts the layer near ``z' = z``, which keeps
early training stable.

The forward direction is one pass of MADE (parallel); the inverse is
sequential: ``D`` passes, the ``t``-th one fixing the variable of degree ``t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Flow
from .made import MADE

__all__ = ["IAF"]


class IAF(Flow):
    """One gated IAF step; static, or with the MADE also fed a context ``h``. ``activation`` is
    the MADE's hidden activation: ``"elu"`` (default, as Kingma et al. 2016) or ``"relu"``."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, hidden: int = 64, n_layers: int = 2,
                 forget_bias: float = 1.0, order: torch.Tensor | None = None, activation: str = "elu"):
        super().__init__(dim, context_dim)
        self.made = MADE(dim, context_dim, hidden, n_layers, n_outputs=2, order=order, activation=activation)
        self.forget_bias = float(forget_bias)

    def m_s(self, z, context=None):
        """The MADE outputs ``m`` and ``s`` (``s`` already includes the forget bias)."""
        self._check_inputs(z, context, "z")
        return self._m_s(z, context)

    def _m_s(self, z, context):
        m, s = self.made._outputs(z, context)
        return m, s + self.forget_bias

    def _forward(self, z, context):
        m, s = self._m_s(z, context)
        sigma = torch.sigmoid(s)
        return torch.lerp(m, z, sigma), F.logsigmoid(s).sum(-1)  # sigma z + (1 - sigma) m

    def _inverse(self, y, context):
        # After pass t the variables of degree <= t are exact. The last pass reads only
        # degrees <= D - 1, so its m and s are those at the solution.
        z = y
        for _ in range(self.dim):
            m, s = self._m_s(z, context)
            z = m + (y - m) / torch.sigmoid(s)
        return z, -F.logsigmoid(s).sum(-1)
