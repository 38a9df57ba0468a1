"""Fitting a flow to an unnormalised 2-D density by minimising the reverse KL,
as in Rezende & Mohamed (2015), Section 6.1 and Figure 3.

With ``q_0 = N(0, I)``, ``z_K = f(z_0)`` and a target ``p(z) ∝ exp(-U(z))``, the
free energy (eq. 15 of the paper, with the annealing weight ``beta``) is

    F_beta(q) = E_{z_0 ~ q_0} [ log q_0(z_0) - log|det df/dz_0| + beta U(z_K) ],

and ``F_1(q) = KL(q_K || p) - log Z``: minimising it fits ``q_K`` to ``p``
without ever normalising ``p``. The paper anneals ``beta_t = min(1, 0.01 + t/10000)``.

An amortized flow fits a whole family ``p(z | c) ∝ exp(-U(z, c))`` at once: its
parameters are predicted from the context ``c`` (:func:`fit_amortized_reverse_kl`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..flows.base import Flow
from ..flows.gaussian import log_standard_normal

__all__ = [
    "FitResult",
    "OPTIMIZERS",
    "annealing",
    "free_energy",
    "kl_estimate",
    "sample",
    "fit_reverse_kl",
    "fit_amortized_reverse_kl",
    "fit_together",
]

OPTIMIZERS = ("adam", "rmsprop")


def annealing(t: int, n_anneal: int = 10_000) -> float:
    """``beta_t = min(1, 0.01 + t / n_anneal)``; the paper's ``n_anneal = 10000`` (Sec. 6.1)."""
    return min(1.0, 0.01 + t / n_anneal)


def _check_flow(flow, amortized: bool = False) -> None:
    if not isinstance(flow, Flow):
        raise ValueError(f"expected a flowlib Flow, got {type(flow).__name__}")
    if flow.amortized and not amortized:
        raise ValueError(
            f"reverse-KL fitting of a 2-D target needs a static flow, got an amortized one "
            f"(context_dim={flow.context_dim}); build it without context_dim, or use "
            "fit_amortized_reverse_kl"
        )


def _params(flow):
    p = next(flow.parameters(), None)
    return (p.dtype, p.device) if p is not None else (torch.get_default_dtype(), torch.device("cpu"))


def sample(flow: Flow, n: int, generator: torch.Generator | None = None,
           context: torch.Tensor | None = None):
    """``(z_K, log q_K(z_K))`` for ``n`` draws ``z_0 ~ N(0, I)`` pushed through ``flow``.

    ``log q_K(z_K) = log q_0(z_0) - log|det df/dz_0|`` (the paper's eq. 6). An
    amortized flow needs ``context`` of shape ``(n, context_dim)``.
    """
    _check_flow(flow, amortized=context is not None)
    dtype, device = _params(flow)
    z0 = torch.randn(n, flow.dim, generator=generator, dtype=dtype, device=device)
    log_q0 = log_standard_normal(z0)
    zK, logdet = flow(z0, context)
    return zK, log_q0 - logdet


def free_energy(flow: Flow, U, n: int = 10_000, beta: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """Monte Carlo estimate of ``F_beta`` and its standard error, from ``n`` samples."""
    with torch.no_grad():
        zK, log_qK = sample(flow, n, generator)
        terms = log_qK + beta * U(zK)
    return float(terms.mean()), float(terms.std() / math.sqrt(n))


def kl_estimate(flow: Flow, U, log_Z: float, n: int = 10_000,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """``KL(q_K || p) = F(q_K) + log Z`` (eq. 15) and its Monte Carlo standard error.

    ``log_Z`` must be the log normaliser of ``exp(-U)``, e.g. ``Boxed.log_partition()``.
    """
    F, se = free_energy(flow, U, n, generator=generator)
    return F + log_Z, se


@dataclass
class FitResult:
    """What the fitting routines record: the step, ``beta`` and the minibatch ``F_beta``
    (a list per step when several tasks are fitted together)."""

    steps: list[int] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    free_energy: list[float] = field(default_factory=list)


def _check_fit_args(name, steps, batch_size, log_every, lr, optimizer, anneal_steps, U) -> None:
    for arg, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every),
                       ("anneal_steps", anneal_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{name}: lr must be a positive number, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"{name}: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not callable(U):
        raise ValueError(f"{name}: U must be a callable energy, got {type(U).__name__}")


def _minimise(parameters, loss_at: Callable[[float], torch.Tensor], *, name: str, steps: int, lr: float,
              optimizer: str, anneal: bool, anneal_steps: int, log_every: int, progress: bool,
              cosine: bool = False) -> FitResult:
    """The shared loop: ``loss_at(beta)`` is the minibatch ``F_beta``; Adam, or RMSprop as in the paper;
    with ``cosine=True`` the learning rate decays from ``lr`` to ``lr / 100`` along a half cosine.

    ``loss_at`` may return a vector: one ``F_beta`` per independent task, trained on
    their sum (their parameters are disjoint, so each task gets its own gradient) and
    logged as a list per step."""
    from tqdm.auto import trange

    parameters = list(parameters)
    if optimizer == "adam":
        opt = torch.optim.Adam(parameters, lr=lr)
    else:
        opt = torch.optim.RMSprop(parameters, lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100) if cosine else None
    result = FitResult()
    for t in trange(steps, disable=not progress, desc=name, leave=False):
        beta = annealing(t, anneal_steps) if anneal else 1.0
        loss = loss_at(beta)
        if not torch.isfinite(loss).all():
            raise FloatingPointError(f"{name}: the free energy became {loss.detach().tolist()} at step {t}")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        if t % log_every == 0 or t == steps - 1:
            result.steps.append(t)
            result.beta.append(beta)
            result.free_energy.append(loss.detach().tolist())
    return result


def fit_reverse_kl(flow: Flow, U, *, steps: int = 10_000, batch_size: int = 256, lr: float = 1e-3,
                   anneal: bool = False, log_every: int = 100, progress: bool = True,
                   generator: torch.Generator | None = None, optimizer: str = "adam",
                   anneal_steps: int = 10_000, cosine: bool = False) -> FitResult:
    """Minimise ``F_beta`` over ``flow``'s parameters; returns the training curve.

    ``optimizer`` is ``"adam"`` or ``"rmsprop"`` (the paper's choice, here with
    momentum 0.9). ``anneal=True`` uses :func:`annealing` with ``n_anneal =
    anneal_steps`` for ``beta_t``; otherwise ``beta = 1``. A non-finite loss
    raises ``FloatingPointError`` naming the step. ``cosine=True`` decays the
    learning rate from ``lr`` to ``lr / 100`` over the run (a short budget's substitute
    for the paper's 500k steps at one small rate).
    """
    _check_flow(flow)
    _check_fit_args("fit_reverse_kl", steps, batch_size, log_every, lr, optimizer, anneal_steps, U)

    def loss_at(beta):
        zK, log_qK = sample(flow, batch_size, generator)
        return (log_qK + beta * U(zK)).mean()

    return _minimise(flow.parameters(), loss_at, name="fit_reverse_kl", steps=steps, lr=lr,
                     optimizer=optimizer, anneal=anneal, anneal_steps=anneal_steps, log_every=log_every,
                     progress=progress, cosine=cosine)


def fit_amortized_reverse_kl(flow: Flow, U, sample_context, *, embed: nn.Module | None = None,
                             steps: int = 2_000, batch_size: int = 256, lr: float = 1e-2,
                             log_every: int = 100, progress: bool = True,
                             generator: torch.Generator | None = None, optimizer: str = "adam",
                             anneal: bool = False, anneal_steps: int = 10_000,
                             cosine: bool = False) -> FitResult:
    """Fit one amortized flow to the family ``p(z | c) ∝ exp(-U(z, c))``.

    Each step draws contexts ``c = sample_context(batch_size, generator)`` of shape
    ``(B, C)``, turns them into the flow's context ``h = embed(c)`` (the role of a
    VAE's encoder; ``h = c`` without ``embed``), and minimises the average over
    ``c`` of ``F_beta(q(. | c))``. ``embed``'s parameters are trained too.
    """
    _check_flow(flow, amortized=True)
    _check_fit_args("fit_amortized_reverse_kl", steps, batch_size, log_every, lr, optimizer, anneal_steps, U)
    if not flow.amortized:
        raise ValueError("fit_amortized_reverse_kl: expected an amortized flow (built with context_dim=C); "
                         "for a static flow use fit_reverse_kl")
    if not callable(sample_context):
        raise ValueError("fit_amortized_reverse_kl: sample_context must be a callable "
                         "(n, generator) -> (n, C)")
    if embed is not None and not isinstance(embed, nn.Module):
        raise ValueError("fit_amortized_reverse_kl: embed must be an nn.Module or None, "
                         f"got {type(embed).__name__}")
    parameters = list(flow.parameters()) + (list(embed.parameters()) if embed is not None else [])

    def loss_at(beta):
        c = sample_context(batch_size, generator)
        h = embed(c) if embed is not None else c
        zK, log_qK = sample(flow, batch_size, generator, context=h)
        return (log_qK + beta * U(zK, c)).mean()

    return _minimise(parameters, loss_at, name="fit_amortized_reverse_kl", steps=steps, lr=lr,
                     optimizer=optimizer, anneal=anneal, anneal_steps=anneal_steps, log_every=log_every,
                     progress=progress, cosine=cosine)


def fit_together(flows: list, energies: list, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
                 optimizer: str = "adam", anneal: bool = True, anneal_steps: int = 10_000,
                 cosine: bool = False, log_every: int = 100, generator: torch.Generator | None = None,
                 progress: bool = False) -> FitResult:
    """Fit ``flows[t]`` to ``energies[t]`` for every ``t`` at once; the flows must share one
    structure (built by the same call). Minimises each ``F_beta`` as ``fit_reverse_kl`` does;
    the fitted parameters are written back into ``flows``. Returns the curves, one list
    of ``len(flows)`` free energies per logged step.
    """
    from torch.func import functional_call, stack_module_state, vmap

    if len(flows) != len(energies) or not flows:
        raise ValueError(
            f"fit_together: expected as many energies as flows, got {len(energies)} and {len(flows)}"
        )
    for U in energies:
        _check_fit_args("fit_together", steps, batch_size, log_every, lr, optimizer, anneal_steps, U)
    params, buffers = stack_module_state(flows)
    skeleton = copy.deepcopy(flows[0]).to("meta")
    dim = flows[0].dim

    def push(p, b, z0):
        return functional_call(skeleton, (p, b), (z0,))

    def loss_at(beta):
        z0 = torch.randn(len(flows), batch_size, dim, generator=generator)
        zK, logdet = vmap(push)(params, buffers, z0)
        log_q0 = log_standard_normal(z0)
        U = torch.stack([E(z) for E, z in zip(energies, zK)])
        return (log_q0 - logdet + beta * U).mean(-1)

    curve = _minimise(params.values(), loss_at, name="fit_together", steps=steps, lr=lr, optimizer=optimizer,
                      anneal=anneal, anneal_steps=anneal_steps, log_every=log_every, progress=progress,
                      cosine=cosine)
    with torch.no_grad():
        for t, flow in enumerate(flows):
            state = {k: v[t] for k, v in params.items()} | {k: v[t] for k, v in buffers.items()}
            flow.load_state_dict(state)
    return curve
