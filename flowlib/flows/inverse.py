"""A flow's density anywhere, by inversion (Rezende & Mohamed 2015, eq. 6):

    log q_K(z) = log q_0(f^{-1}(z)) + log|det d f^{-1}/dz|.

Every flow's inverse is its own ``inverse`` (planar layers solve a one-dimensional root,
:meth:`flowlib.flows.Planar.solve`; :class:`~flowlib.flows.Sequential` inverts its parts in
reverse order); this module keeps the checked entry points the chapters use.
"""

from __future__ import annotations

import torch

from .base import Flow
from .gaussian import log_standard_normal
from .planar import Planar, solve_planar

__all__ = ["solve_planar", "planar_inverse", "flow_inverse", "log_density"]


def planar_inverse(layer: Planar, y: torch.Tensor, max_iterations: int = 200, *, context=None):
    """``(z, log|det dz/dy|)`` with ``layer(z, context) = y``, for a static :class:`Planar` layer
    or an amortized one with its ``context`` (per-sample ``u_hat``, ``w``, ``b``)."""
    if not isinstance(layer, Planar) or (layer.amortized and context is None):
        raise ValueError("planar_inverse: expected a static Planar layer, or an amortized one with its "
                         f"context, got {layer!r}")
    layer._check_inputs(y, context, "y")
    z = layer.solve(y, context, max_iterations)
    _, logdet = layer(z, context)
    return z, -logdet


def flow_inverse(flow: Flow, y: torch.Tensor, context: torch.Tensor | None = None):
    """``(f^{-1}(y), log|det df^{-1}/dy|)`` for a static flow, or an amortized one with its
    ``context``: ``flow.inverse``, checked."""
    if not isinstance(flow, Flow) or (flow.amortized and context is None):
        raise ValueError("flow_inverse: expected a static flowlib Flow, or an amortized one with its "
                         f"context, got {type(flow).__name__}")
    return flow.inverse(y, context)


def log_density(flow: Flow, z: torch.Tensor) -> torch.Tensor:
    """``log q_K(z)`` for ``q_0 = N(0, I)`` pushed through the static ``flow`` (eq. 6)."""
    with torch.no_grad():
        z0, logdet_inv = flow_inverse(flow, z)
    return log_standard_normal(z0) + logdet_inv
