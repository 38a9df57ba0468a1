"""A variational autoencoder whose posterior is a diagonal Gaussian pushed through a flow.

Generative model (Kingma & Welling 2014): ``p(z) = N(0, I)``, ``p(x | z) = Bernoulli(sigmoid(decoder(z)))``.
Approximate posterior (Rezende & Mohamed 2015, Sec. 4.2): ``z_0 ~ N(mu(x), diag sigma(x)^2)``, then
``z_K = f_K o ... o f_1 (z_0)`` with

    log q_K(z_K | x) = log q_0(z_0 | x) - sum_k log|det df_k/dz_{k-1}|                  (eq. 13)
    ELBO(x) = E_q[ log p(x | z_K) + log p(z_K) - log q_K(z_K | x) ]                      (eq. 15)

An amortized flow takes the encoder's features ``h(x)`` as its context.
``log_likelihood`` is the importance-sampled estimate of Burda et al. (2016, eq. 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..flows.base import Flow, check_inputs
from ..flows.gaussian import LOG_2PI, log_diag_normal, log_standard_normal
from . import posterior
from .encoders import Decoder, Encoder

__all__ = ["VAE", "ELBO"]

# the prior's and the posterior's densities (flowlib.flows.gaussian; importable from here too)
__all__ += ["log_standard_normal", "log_diag_normal", "LOG_2PI"]


@dataclass
class ELBO:
    """Per-example single-sample ELBO and its parts, each of shape ``(B,)``, in nats."""

    reconstruction: torch.Tensor  # log p(x | z_K)
    log_p_z: torch.Tensor  # log p(z_K)
    log_q: torch.Tensor  # log q_K(z_K | x)

    @property
    def kl(self) -> torch.Tensor:
        """Single-sample estimate of ``KL(q_K(z | x) || p(z))``."""
        return self.log_q - self.log_p_z

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Mean of ``-(reconstruction - beta * KL)``: the training loss with KL warm-up."""
        return -(self.reconstruction - beta * self.kl).mean()


class VAE(nn.Module):
    """``VAE(x_dim=784, z_dim=40, hidden=(300, 300), flow=None, arch="mlp")``.

    Its posterior ``q(z | x)`` (sampling and density) is :mod:`flowlib.model.posterior`'s; the flow
    acts after the Gaussian's affine map, or before it when ``flow_on_noise`` (a subclass's choice).

    ``flow`` is any :class:`flowlib.flows.Flow` of dimension ``z_dim``; an amortized one
    must have ``context_dim`` equal to the encoder's feature size ``h_dim`` (``hidden[-1]`` for
    the MLP). ``arch="conv"`` uses gated convolutions (van den Berg et al. 2018).
    """

    flow_on_noise = False

    def __init__(self, x_dim: int = 784, z_dim: int = 40, hidden: tuple[int, ...] = (300, 300),
                 flow: Flow | None = None, arch: str = "mlp"):
        """The book's VAE: an :class:`Encoder` and a mirrored :class:`Decoder` of ``hidden`` /
        ``arch`` built here (a convenience; :meth:`from_parts` takes any parts)."""
        super().__init__()
        encoder = Encoder(x_dim, z_dim, hidden, arch)
        self._assemble(encoder, Decoder(x_dim, z_dim, tuple(reversed(hidden)), arch), flow)

    @classmethod
    def from_parts(cls, encoder: nn.Module, decoder: nn.Module, flow: Flow | None = None) -> VAE:
        """A VAE of injected parts: an ``encoder`` ``x -> (mu, log_var, h)`` with attributes ``x_dim``,
        ``z_dim``, ``h_dim``; a ``decoder`` ``z -> logits`` of ``x``; and the posterior's flow (None,
        static, or amortized with ``context_dim = encoder.h_dim``). Sizes are read from the parts."""
        vae = cls.__new__(cls)
        nn.Module.__init__(vae)
        vae._assemble(encoder, decoder, flow)
        return vae

    def _assemble(self, encoder, decoder, flow) -> None:
        for name in ("x_dim", "z_dim", "h_dim"):
            if not isinstance(getattr(encoder, name, None), int):
                raise ValueError(f"the encoder must say its {name} (an int attribute)")
        if (getattr(decoder, "x_dim", encoder.x_dim), getattr(decoder, "z_dim", encoder.z_dim)) != (
                encoder.x_dim, encoder.z_dim):
            raise ValueError(f"the decoder maps z_dim = {decoder.z_dim} to x_dim = {decoder.x_dim}; the "
                             f"encoder maps x_dim = {encoder.x_dim} to z_dim = {encoder.z_dim}")
        self.x_dim, self.z_dim, self.h_dim = encoder.x_dim, encoder.z_dim, encoder.h_dim
        z_dim = self.z_dim
        self.encoder, self.decoder = encoder, decoder
        if flow is not None:
            if not isinstance(flow, Flow):
                raise ValueError(f"flow must be a flowlib Flow or None, got {type(flow).__name__}")
            if flow.dim != z_dim:
                raise ValueError(f"flow.dim must equal z_dim = {z_dim}, got {flow.dim}")
            if flow.amortized and flow.context_dim != self.h_dim:
                raise ValueError(
                    f"an amortized flow needs context_dim = h_dim = {self.h_dim}, got {flow.context_dim}"
                )
        self.flow = flow

    def _check_x(self, x):
        check_inputs("VAE", self.x_dim, None, x, None, "x")

    def posterior(self, x: torch.Tensor, n_samples: int = 1):
        """Draw ``z_K ~ q_K(z | x)``: returns ``z_K`` and ``log q_K(z_K | x)`` with a leading
        sample axis, shapes ``(n_samples, B, z_dim)`` and ``(n_samples, B)``."""
        self._check_x(x)
        mu, log_var, h = self.encoder(x)
        return self._sample(mu, log_var, h, n_samples)

    def _sample(self, mu, log_var, h, n_samples):
        return posterior.rsample(self.flow, mu, log_var, h, n_samples, whitened=self.flow_on_noise)

    def log_p_x_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli ``log p(x | z)`` summed over pixels; ``z`` may carry leading sample axes."""
        logits = self.decoder(z.reshape(-1, self.z_dim)).view(*z.shape[:-1], self.x_dim)
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def elbo(self, x: torch.Tensor) -> ELBO:
        """Single-sample ELBO per example, with its parts (eq. 15)."""
        z, log_q = self.posterior(x, 1)
        return ELBO(self.log_p_x_given_z(x, z)[0], log_standard_normal(z)[0], log_q[0])

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 5000, max_rows: int = 50_000) -> torch.Tensor:
        """Importance-sampled ``log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log k``
        per example (Burda et al. 2016), drawing the ``k`` samples in chunks of at most
        ``max_rows`` decoder rows so that ``k = 5000`` fits in memory. A flow that takes a sample
        axis (every flowlib flow) computes its amortized parameters once per image and chunk, and
        shares them across that image's samples."""
        self._check_x(x)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        mu, log_var, h = self.encoder(x)
        chunk = max(1, max_rows // x.shape[0])
        log_w = []
        for start in range(0, k, chunk):
            z, log_q = self._sample(mu, log_var, h, min(chunk, k - start))
            log_w.append(self.log_p_x_given_z(x, z) + log_standard_normal(z) - log_q)
        return torch.logsumexp(torch.cat(log_w, 0), dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Pixel probabilities of ``n`` samples from the model, ``z ~ p(z)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, dtype=p.dtype, device=p.device)
        return torch.sigmoid(self.decoder(z))
