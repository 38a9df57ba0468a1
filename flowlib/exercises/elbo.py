"""Checks for the exercises of the chapter "VAEs and the ELBO".

    KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)
    z = mu + sigma * eps,  sigma = exp(log_var / 2)           (reparameterization)

(Kingma & Welling 2014, Appendix B and eq. 10.) Each check calls the reader's function on
fixed inputs in float64 and names the usual mistakes when it recognises one.
"""

from __future__ import annotations

import torch

from ._mistakes import call_reader, check_with_mistakes
from .feedback import ExerciseError, passed

__all__ = ["check_gaussian_kl", "check_reparameterize"]


def _inputs(seed: int, B: int = 8, D: int = 5):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, D, generator=g, dtype=torch.float64)
    log_var = torch.randn(B, D, generator=g, dtype=torch.float64)
    eps = torch.randn(B, D, generator=g, dtype=torch.float64)
    return mu, log_var, eps


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(log_var)) || N(0, I))`` per row, shape ``(B,)``."""
    return 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(-1)


def check_gaussian_kl(kl_fn) -> None:
    """Check ``kl_fn(mu, log_var)``: the closed-form ``KL(N(mu, diag exp(log_var)) || N(0, I))``
    for each row of ``mu`` and ``log_var`` of shape ``(B, D)``, returned with shape ``(B,)``."""
    what = "KL(N(mu, diag sigma^2) || N(0, I))"
    mu, log_var, _ = _inputs(21)
    got = call_reader(what, kl_fn, mu.clone(), log_var.clone())
    expected = gaussian_kl(mu, log_var)
    check_with_mistakes(what, got, expected, {
        "The factor 1/2 is missing.": 2 * expected,
        "The sign is flipped: a KL divergence is never negative.": -expected,
        "You treat log_var as log sigma: the variance is sigma^2 = exp(log_var), not exp(2 log_var).":
            0.5 * (mu**2 + (2 * log_var).exp() - 1 - 2 * log_var).sum(-1),
        "The constant -1 per dimension is missing (the KL of N(0, I) to itself must be 0).":
            expected + 0.5 * mu.shape[-1],
        "You average over the latent dimensions: the KL of a product of independent Gaussians is "
        "the SUM over dimensions.": expected / mu.shape[-1],
        "You sum over the batch too: return one KL per row, shape (B,).": expected.sum(),
    }, hint="KL = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(-1)")


def check_reparameterize(reparameterize_fn) -> None:
    """Check ``reparameterize_fn(mu, log_var, eps)``: the sample ``z = mu + sigma * eps`` with
    ``sigma = exp(log_var / 2)``, differentiable with respect to ``mu`` and ``log_var``."""
    what = "reparameterized sample z"
    mu, log_var, eps = _inputs(22)
    mu.requires_grad_(True)
    log_var.requires_grad_(True)
    got = call_reader(what, reparameterize_fn, mu, log_var, eps.clone())
    expected = mu.detach() + (0.5 * log_var.detach()).exp() * eps
    check_with_mistakes(f"the values of the {what}", got.detach() if isinstance(got, torch.Tensor) else got,
                        expected, {
        "sigma is exp(log_var / 2), the square root of the variance; you used exp(log_var), the "
        "variance itself.": mu.detach() + log_var.detach().exp() * eps,
        "You multiply eps by log_var: the standard deviation is exp(log_var / 2).":
            mu.detach() + log_var.detach() * eps,
        "You return only the noise term: add the mean mu.": (0.5 * log_var.detach()).exp() * eps,
    }, hint="z = mu + torch.exp(0.5 * log_var) * eps")
    if not got.requires_grad:
        raise ExerciseError(f"{what}: the values are right but no gradient flows back to mu and log_var "
                            "(did you use .detach(), .item(), torch.no_grad() or torch.normal?). The point "
                            "of reparameterization is that z is a differentiable function of (mu, log_var).")
    grad_mu, grad_log_var = torch.autograd.grad(got.sum(), (mu, log_var), allow_unused=True)
    expected_grad = 0.5 * (0.5 * log_var.detach()).exp() * eps
    if grad_mu is None or grad_log_var is None or not torch.allclose(grad_mu, torch.ones_like(mu)) \
            or not torch.allclose(grad_log_var, expected_grad):
        raise ExerciseError(f"{what}: the values are right but the gradients are not: dz/dmu should be 1 "
                            "and dz/dlog_var = sigma * eps / 2. Compute z from mu and log_var with torch "
                            "operations.")
    passed(f"the gradients dz/dmu and dz/dlog_var of the {what}")
