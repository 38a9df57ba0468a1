"""Fitting a flow to an unnormalised 2-D density by minimising the reverse KL,
as in Rezende & Mohamed (2015), Section 6.1 and Figure 3.

With ``q_0 = N(0, I)``, ``z_K = f(z_0)`` and a target ``p(z) ∝ exp(-U(z))``, the
free energy (eq. 15 of the paper, with the annealing weight ``beta``) is

    F_beta(q) = E_{z_0 ~ q_0} [ log q_0(z_0) - log|det df/dz_0| + beta U(z_K) ],

and ``F_1(q) = KL(q_K || p) - log Z``: minimising it fits ``q_K`` to ``p``
without ever normalising ``p``. The paper anneals ``beta_t = min(1, 0.01 + t/10000)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .flows.base import Flow

__all__ = ["FitResult", "annealing", "free_energy", "sample", "fit_reverse_kl"]


def annealing(t: int) -> float:
    """``beta_t = min(1, 0.01 + t / 10000)`` (Rezende & Mohamed 2015, Sec. 6.1)."""
    return min(1.0, 0.01 + t / 10000)


def _check_flow(flow) -> None:
    if not isinstance(flow, Flow):
        raise ValueError(f"expected a flowlib Flow, got {type(flow).__name__}")
    if flow.amortized:
        raise ValueError(
            f"reverse-KL fitting of a 2-D target needs a static flow, got an amortized one "
            f"(context_dim={flow.context_dim}); build it without context_dim"
        )


def _params(flow):
    p = next(flow.parameters(), None)
    return (p.dtype, p.device) if p is not None else (torch.get_default_dtype(), torch.device("cpu"))


def sample(flow: Flow, n: int, generator: torch.Generator | None = None):
    """``(z_K, log q_K(z_K))`` for ``n`` draws ``z_0 ~ N(0, I)`` pushed through ``flow``.

    ``log q_K(z_K) = log q_0(z_0) - log|det df/dz_0|`` (the paper's eq. 6).
    """
    _check_flow(flow)
    dtype, device = _params(flow)
    z0 = torch.randn(n, flow.dim, generator=generator, dtype=dtype, device=device)
    log_q0 = -0.5 * (z0**2).sum(1) - 0.5 * flow.dim * math.log(2 * math.pi)
    zK, logdet = flow(z0)
    return zK, log_q0 - logdet


def free_energy(flow: Flow, U, n: int = 10_000, beta: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """Monte Carlo estimate of ``F_beta`` and its standard error, from ``n`` samples."""
    with torch.no_grad():
        zK, log_qK = sample(flow, n, generator)
        terms = log_qK + beta * U(zK)
    return float(terms.mean()), float(terms.std() / math.sqrt(n))


@dataclass
class FitResult:
    """What :func:`fit_reverse_kl` records: the step, ``beta`` and the minibatch ``F_beta``."""

    steps: list[int] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    free_energy: list[float] = field(default_factory=list)


def fit_reverse_kl(flow: Flow, U, *, steps: int = 10_000, batch_size: int = 256, lr: float = 1e-3,
                   anneal: bool = False, log_every: int = 100, progress: bool = True,
                   generator: torch.Generator | None = None) -> FitResult:
    """Minimise ``F_beta`` over ``flow``'s parameters with Adam; returns the training curve.

    ``anneal=True`` uses :func:`annealing` for ``beta_t``; otherwise ``beta = 1``.
    A non-finite loss raises ``FloatingPointError`` naming the step.
    """
    _check_flow(flow)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_reverse_kl: {name} must be a positive int, got {value!r}")
    if not callable(U):
        raise ValueError(f"fit_reverse_kl: U must be a callable energy z -> U(z), got {type(U).__name__}")
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    result = FitResult()
    from tqdm.auto import trange

    for t in trange(steps, disable=not progress, desc="reverse KL", leave=False):
        beta = annealing(t) if anneal else 1.0
        zK, log_qK = sample(flow, batch_size, generator)
        loss = (log_qK + beta * U(zK)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fit_reverse_kl: the free energy became {float(loss)} at step {t}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if t % log_every == 0 or t == steps - 1:
            result.steps.append(t)
            result.beta.append(beta)
            result.free_energy.append(float(loss.detach()))
    return result
