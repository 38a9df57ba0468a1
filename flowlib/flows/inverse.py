"""Inverting a flow (static, or amortized given its context) numerically where it has no
closed-form inverse, so that its density ``q_K`` can be evaluated anywhere (Rezende & Mohamed 2015, eq. 6):

    log q_K(z) = log q_0(f^{-1}(z)) + log|det d f^{-1}/dz|.

A planar layer ``y = z + u_hat tanh(w^T z + b)`` (eq. 10) moves ``z`` along
``u_hat`` only, so inverting it is a one-dimensional problem: with ``a = w^T z``,

    w^T y = a + m tanh(a + b),    m = w^T u_hat > -1,

and ``g(a) = a + m tanh(a + b)`` is strictly increasing (``g' = 1 + m tanh'
>= min(1, 1 + m) > 0``). Its root lies in ``[w^T y - |m|, w^T y + |m|]`` and
bisection finds it to machine precision; then ``z = y - u_hat tanh(a + b)``.
"""

from __future__ import annotations

import math

import torch

from . import Planar, Sequential
from .base import Flow

__all__ = ["solve_planar", "planar_inverse", "flow_inverse", "log_density"]


def solve_planar(u_hat, w, b, y, max_iterations: int = 200) -> torch.Tensor:
    """``z`` with ``z + u_hat tanh(w^T z + b) = y``, per sample, for the layer's (possibly
    per-sample) ``u_hat``, ``w`` (``(B, D)`` or ``(1, D)``) and ``b``: safeguarded Newton on
    ``g(a) = a + m tanh(a + b) - w^T y`` inside its bracket ``[w^T y - |m|, w^T y + |m|]``."""
    m = (w * u_hat).sum(-1)
    c = (w * y).sum(-1)  # g(a) = c
    lo, hi = c - m.abs(), c + m.abs()
    a = c.clone()
    tol = 4 * torch.finfo(y.dtype).eps
    for _ in range(max_iterations):
        t = torch.tanh(a + b)
        g = a + m * t - c
        lo, hi = torch.where(g < 0, a, lo), torch.where(g > 0, a, hi)
        newton = a - g / (1 + m * (1 - t * t))
        inside = (newton >= lo) & (newton <= hi)
        a_next = torch.where(inside, newton, 0.5 * (lo + hi))
        done = ((a_next - a).abs() <= tol * (1 + a.abs())).all() or bool((g == 0).all())
        a = a_next
        if done:
            break
    return y - u_hat * torch.tanh(a + b).unsqueeze(-1)


def planar_inverse(layer: Planar, y: torch.Tensor, max_iterations: int = 200, *, context=None):
    """``(z, log|det dz/dy|)`` with ``layer(z, context) = y``, for a static :class:`Planar` layer
    or an amortized one with its ``context`` (per-sample ``u_hat``, ``w``, ``b``)."""
    if not isinstance(layer, Planar) or (layer.amortized and context is None):
        raise ValueError("planar_inverse: expected a static Planar layer, or an amortized one with its "
                         f"context, got {layer!r}")
    layer._check_inputs(y, context, "y")
    with torch.no_grad():
        u_hat, w, b, _ = (t.to(y.dtype) for t in layer.u_w_b(y.shape[0], context))
        z = solve_planar(u_hat, w, b, y, max_iterations)
    _, logdet = layer(z, context)
    return z, -logdet


def flow_inverse(flow: Flow, y: torch.Tensor, context: torch.Tensor | None = None):
    """``(f^{-1}(y), log|det df^{-1}/dy|)`` for a static flow, or an amortized one with its
    ``context``: the closed-form inverse where the flow has one, :func:`planar_inverse` for planar
    layers, recursing into :class:`Sequential`."""
    if not isinstance(flow, Flow) or (flow.amortized and context is None):
        raise ValueError("flow_inverse: expected a static flowlib Flow, or an amortized one with its "
                         f"context, got {type(flow).__name__}")
    if isinstance(flow, Sequential):
        total = y.new_zeros(y.shape[0])
        for f in reversed(flow.flows):
            y, logdet = flow_inverse(f, y, context if f.amortized else None)
            total = total + logdet
        return y, total
    if isinstance(flow, Planar):
        return planar_inverse(flow, y, context=context)
    return flow.inverse(y, context)


def log_density(flow: Flow, z: torch.Tensor) -> torch.Tensor:
    """``log q_K(z)`` for ``q_0 = N(0, I)`` pushed through the static ``flow`` (eq. 6)."""
    with torch.no_grad():
        z0, logdet_inv = flow_inverse(flow, z)
    return -0.5 * (z0**2).sum(-1) - 0.5 * flow.dim * math.log(2 * math.pi) + logdet_inv
