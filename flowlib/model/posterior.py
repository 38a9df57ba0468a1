"""The VAE's approximate posterior ``q_K(z | x)`` as one object, :class:`FlowPosterior`: a base
distribution ``q_0 = N(mu(x), diag sigma(x)^2)`` and a flow ``f = f_K o ... o f_1`` (none, static,
or amortized on the encoder's features ``h(x)``), applied in one of two orders.

- *after* the affine map (Rezende & Mohamed 2015, eq. 13), ``FlowPosterior(flow)``::

      z_0 = mu + sigma * eps,   z_K = f(z_0; h),   log q_K(z_K) = log N(z_0; mu, sigma^2) - log|det df/dz_0|

- *before* it, on the whitened noise, ``FlowPosterior(flow, whitened=True)`` (the posterior of
  :class:`flowlib.model.whitened.WhitenedFlowVAE`)::

      u = f(eps; h),   z = mu + sigma * u,   log q(z) = log N(eps; 0, I) - log|det df/deps| - sum log sigma

:meth:`FlowPosterior.rsample` draws (training, importance sampling);
:meth:`FlowPosterior.log_prob` evaluates the density anywhere by inverting the flow (the 2-D
true-posterior chapter). The encoder gives ``(mu, log_var, h)``; the posterior does not own it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..flows.base import Flow
from ..flows.gaussian import log_diag_normal, log_standard_normal
from ..flows.inverse import flow_inverse

__all__ = ["FlowPosterior"]


class FlowPosterior(nn.Module):
    """``FlowPosterior(flow=None, whitened=False)``: ``q_K(z | x)``, the diagonal Gaussian
    ``q_0 = N(mu(x), diag exp(log_var(x)))`` pushed through ``flow`` (a :class:`flowlib.flows.Flow`
    or None), after the Gaussian's affine map, or before it on the noise when ``whitened``.

    The flow is a submodule of the posterior, so a posterior on its own moves and converts with its
    flow (``.double()``, ``.to(device)``). A :class:`~flowlib.model.vae.VAE` registers the same flow
    as its ``flow`` (the state-dict names ``flow.*``) and holds its posterior as ``vae.q`` without
    registering it again."""

    def __init__(self, flow: Flow | None = None, whitened: bool = False):
        super().__init__()
        if flow is not None and not isinstance(flow, Flow):
            raise ValueError(f"flow must be a flowlib Flow or None, got {type(flow).__name__}")
        if not isinstance(whitened, bool):
            raise ValueError(f"whitened must be a bool, got {whitened!r}")
        self.flow, self.whitened = flow, whitened

    @property
    def amortized(self) -> bool:
        """Whether the flow takes the encoder's features ``h(x)`` as its context."""
        return self.flow is not None and self.flow.amortized

    def check(self, z_dim: int, h_dim: int) -> None:
        """Raise a ValueError unless the flow fits an encoder of ``z_dim`` and features ``h_dim``."""
        if self.flow is None:
            return
        if self.flow.dim != z_dim:
            raise ValueError(f"flow.dim must equal z_dim = {z_dim}, got {self.flow.dim}")
        if self.flow.amortized and self.flow.context_dim != h_dim:
            raise ValueError(
                f"an amortized flow needs context_dim = h_dim = {h_dim}, got {self.flow.context_dim}"
            )

    def rsample(self, mu: torch.Tensor, log_var: torch.Tensor, h: torch.Tensor | None, n_samples: int = 1):
        """``n_samples`` reparameterized draws ``z ~ q_K(z | x)`` for each row of ``mu``, ``log_var``
        (``(B, z_dim)``) and ``h`` (``(B, h_dim)``, read by an amortized flow only), and their
        ``log q_K``, with a leading sample axis: shapes ``(n_samples, B, z_dim)`` and
        ``(n_samples, B)``. ``eps ~ N(0, I)`` is drawn once, as one ``(n_samples, B, z_dim)`` tensor."""
        flow = self.flow
        B, z_dim = mu.shape
        eps = torch.randn(n_samples, B, z_dim, dtype=mu.dtype, device=mu.device)
        if self.whitened:
            log_q = log_standard_normal(eps) - 0.5 * log_var.sum(-1)
            if flow is None:
                return mu + torch.exp(0.5 * log_var) * eps, log_q
            context = h.expand(n_samples, B, h.shape[-1]).reshape(-1, h.shape[-1]) if flow.amortized else None
            u, logdet = flow(eps.reshape(-1, z_dim), context)
            z = mu + torch.exp(0.5 * log_var) * u.view(n_samples, B, z_dim)
            return z, log_q - logdet.view(n_samples, B)
        z0 = mu + torch.exp(0.5 * log_var) * eps  # reparameterization (Kingma & Welling 2014, eq. 10)
        log_q = log_diag_normal(z0, mu, log_var)
        if flow is None:
            return z0, log_q
        context = h if flow.amortized else None
        if n_samples == 1:
            zK, logdet = flow(z0[0], context)
            return zK.unsqueeze(0), log_q - logdet.unsqueeze(0)
        if flow.sample_axis:  # the flow's parameters once per image, shared by its samples
            zK, logdet = flow(z0, context)
            return zK, log_q - logdet
        if context is not None:
            context = context.expand(n_samples, B, h.shape[-1]).reshape(-1, h.shape[-1])
        zK, logdet = flow(z0.reshape(-1, z_dim), context)
        return zK.view(n_samples, B, z_dim), log_q - logdet.view(n_samples, B)

    def log_prob(self, z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
                 h: torch.Tensor | None = None) -> torch.Tensor:
        """``log q_K(z | x)`` at the points ``z`` (``(..., B, z_dim)``; ``B = 1``, one image, broadcasts
        against any number of points) of the posteriors ``mu``, ``log_var`` (``(B, z_dim)``) and
        ``h`` (``(B, h_dim)``), by inverting the flow (Rezende & Mohamed 2015, eq. 6): shape
        ``z.shape[:-1]``. At :meth:`rsample`'s draws it is the ``log q`` they came with. Far in the
        tails an inverse can overflow (an IAF step divides by a vanishing scale): such a point comes
        from infinitely far away and its density is 0, returned as ``-inf`` (not the nan of
        ``-inf - (-inf)``)."""
        flow = self.flow
        if flow is None:  # the Gaussian, in either order
            return log_diag_normal(z, mu, log_var)
        shape = torch.broadcast_shapes(z.shape, mu.shape)
        z, mu, log_var = (t.expand(shape).reshape(-1, shape[-1]) for t in (z, mu, log_var))
        context = h.expand(*shape[:-1], h.shape[-1]).reshape(-1, h.shape[-1]) if flow.amortized else None
        if self.whitened:  # z = mu + sigma * f(eps)
            eps, logdet = flow_inverse(flow, (z - mu) * torch.exp(-0.5 * log_var), context)
            out = log_standard_normal(eps) + logdet - 0.5 * log_var.sum(-1)
        else:
            z0, logdet = flow_inverse(flow, z, context)
            out = log_diag_normal(z0, mu, log_var) + logdet
        return torch.where(torch.isnan(out), -math.inf, out).view(shape[:-1])

    def extra_repr(self) -> str:
        return f"whitened={self.whitened}"
