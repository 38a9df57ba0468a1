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
from .encoders import Decoder, Encoder
from .posterior import FlowPosterior

__all__ = ["VAE", "ELBO", "FlowPosterior"]

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

    Its posterior ``q_K(z | x)`` is ``vae.q``, a :class:`~flowlib.model.posterior.FlowPosterior`
    (sampling and density in one place): the encoder's Gaussian and ``flow`` after its affine map
    (a :class:`~flowlib.model.whitened.WhitenedFlowVAE`, or any posterior given to
    :meth:`from_parts`, may put it before). The flow is registered once, as the submodule ``flow``
    (state-dict names ``flow.*``); ``vae.q.flow is vae.flow``.

    ``flow`` is any :class:`flowlib.flows.Flow` of dimension ``z_dim``; an amortized one
    must have ``context_dim`` equal to the encoder's feature size ``h_dim`` (``hidden[-1]`` for
    the MLP). ``arch="conv"`` uses gated convolutions (van den Berg et al. 2018).
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 40, hidden: tuple[int, ...] = (300, 300),
                 flow: Flow | None = None, arch: str = "mlp"):
        """The book's VAE: an :class:`Encoder` and a mirrored :class:`Decoder` of ``hidden`` /
        ``arch`` built here (a convenience; :meth:`from_parts` takes any parts)."""
        super().__init__()
        encoder = Encoder(x_dim, z_dim, hidden, arch)
        decoder = Decoder(x_dim, z_dim, tuple(reversed(hidden)), arch)
        self._assemble(encoder, decoder, self._posterior_of(flow))

    @classmethod
    def from_parts(cls, encoder: nn.Module, decoder: nn.Module,
                   posterior: FlowPosterior | Flow | None = None) -> VAE:
        """A VAE of injected parts: an ``encoder`` ``x -> (mu, log_var, h)`` with attributes ``x_dim``,
        ``z_dim``, ``h_dim``; a ``decoder`` ``z -> logits`` of ``x``; and its ``posterior``, a
        :class:`~flowlib.model.posterior.FlowPosterior` whose flow is None, static, or amortized with
        ``context_dim = encoder.h_dim``. A bare :class:`~flowlib.flows.Flow` or None is accepted too
        and wrapped in the class's own posterior (``FlowPosterior(flow)`` here, whitened for a
        :class:`~flowlib.model.whitened.WhitenedFlowVAE`). Sizes are read from the parts."""
        vae = cls.__new__(cls)
        nn.Module.__init__(vae)
        vae._assemble(encoder, decoder, cls._posterior_of(posterior))
        return vae

    @classmethod
    def _posterior_of(cls, posterior) -> FlowPosterior:
        """The posterior given, or a bare flow (or None) wrapped in this class's posterior."""
        if isinstance(posterior, FlowPosterior):
            return posterior
        if posterior is None or isinstance(posterior, Flow):
            return FlowPosterior(posterior)
        raise ValueError(f"posterior must be a FlowPosterior, a flowlib Flow or None, got "
                         f"{type(posterior).__name__}")

    def _assemble(self, encoder, decoder, q: FlowPosterior) -> None:
        for name in ("x_dim", "z_dim", "h_dim"):
            if not isinstance(getattr(encoder, name, None), int):
                raise ValueError(f"the encoder must say its {name} (an int attribute)")
        if (getattr(decoder, "x_dim", encoder.x_dim), getattr(decoder, "z_dim", encoder.z_dim)) != (
                encoder.x_dim, encoder.z_dim):
            raise ValueError(f"the decoder maps z_dim = {decoder.z_dim} to x_dim = {decoder.x_dim}; the "
                             f"encoder maps x_dim = {encoder.x_dim} to z_dim = {encoder.z_dim}")
        q.check(encoder.z_dim, encoder.h_dim)
        self.x_dim, self.z_dim, self.h_dim = encoder.x_dim, encoder.z_dim, encoder.h_dim
        self.encoder, self.decoder = encoder, decoder
        self.flow = q.flow  # registered here, once: the state-dict names flow.*
        self.__dict__["q"] = q  # held, not registered (no second copy of flow.* in the state dict)

    def __setattr__(self, name, value):
        if name in ("flow", "q") and "q" in self.__dict__:
            raise AttributeError(f"a VAE's {name} is set once, with its posterior (VAE.from_parts)")
        super().__setattr__(name, value)

    def _check_x(self, x):
        check_inputs("VAE", self.x_dim, None, x, None, "x")

    def posterior(self, x: torch.Tensor, n_samples: int = 1):
        """Draw ``z_K ~ q_K(z | x)``: returns ``z_K`` and ``log q_K(z_K | x)`` with a leading
        sample axis, shapes ``(n_samples, B, z_dim)`` and ``(n_samples, B)`` (``self.q.rsample`` at
        the encoder's output)."""
        self._check_x(x)
        mu, log_var, h = self.encoder(x)
        return self.q.rsample(mu, log_var, h, n_samples)

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
            z, log_q = self.q.rsample(mu, log_var, h, min(chunk, k - start))
            log_w.append(self.log_p_x_given_z(x, z) + log_standard_normal(z) - log_q)
        return torch.logsumexp(torch.cat(log_w, 0), dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Pixel probabilities of ``n`` samples from the model, ``z ~ p(z)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, dtype=p.dtype, device=p.device)
        return torch.sigmoid(self.decoder(z))
