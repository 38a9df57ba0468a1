"""Checks for the exercises of the chapter "VAEs and the ELBO".

    KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)
    z = mu + sigma * eps,  sigma = exp(log_var / 2)           (reparameterization)
    L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k)],  z_k ~ q       (importance-weighted bound)
    argmin_q KL(p || q) over diagonal Gaussians: the mean and variances of p   (moment matching)

(Kingma & Welling 2014, Appendix B and eq. 10; Burda et al. 2016, eq. 8.) Each check calls the
reader's function on fixed inputs in float64 and names the usual mistakes when it recognises one.
"""

from __future__ import annotations

import math

import torch

from ._answers import call_answer
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError, check_close, passed

__all__ = ["check_gaussian_kl", "check_reparameterize", "check_iwae_bound", "check_moment_match"]


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
    got = call_answer(what, kl_fn, mu.clone(), log_var.clone())
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
    got = call_answer(what, reparameterize_fn, mu, log_var, eps.clone())
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


def _gaussian_log_joint(m: torch.Tensor, s: torch.Tensor, log_px: float):
    """``log p(x, z) = log p(x) + log N(z; m, diag s^2)``: a model whose posterior is that Gaussian
    and whose evidence is ``log_px``; ``z`` has shape ``(..., D)``."""
    def log_joint(z):
        return log_px + (-0.5 * ((z - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)

    return log_joint


def _call_seeded(what, fn, seed, *args):
    with torch.random.fork_rng(devices=[]):  # the reader's function draws from the CPU generator
        torch.manual_seed(seed)
        got = call_answer(what, fn, *args)
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    return got.detach().to(torch.float64)


def check_iwae_bound(iwae_bound_fn) -> None:
    """Check ``iwae_bound_fn(log_joint, mu, log_sigma, K, n)``: ``n`` independent single estimates
    ``log (1/K) sum_k p(x, z_k) / q(z_k)`` of the bound ``L_K``, each from its own ``K`` draws
    ``z_k ~ q = N(mu, diag exp(2 log_sigma))``, returned with shape ``(n,)``, and computed stably."""
    what = "estimates of L_K"
    m = torch.tensor([0.5, -1.0], dtype=torch.float64)
    s = torch.tensor([0.7, 1.3], dtype=torch.float64)
    # q equal to the posterior: every weight p(x, z) / q(z) is p(x), so every estimate is log p(x)
    exact = _call_seeded(what, iwae_bound_fn, 0, _gaussian_log_joint(m, s, -3.0), m, s.log(), 5, 7)
    expected = torch.full((7,), -3.0, dtype=torch.float64)
    if exact.shape == (5,):
        raise ExerciseError(f"{what}: the result has shape (K,) = (5,): reduce over the K samples of each "
                            "estimate and return the n = 7 estimates, shape (n,)")
    check_with_mistakes(f"{what} when q is the posterior (every weight is p(x))", exact, expected, {
        "You return log sum_k w_k: the bound AVERAGES the K weights, so subtract log K.":
            expected + math.log(5),
        "You return the weights' logarithms summed over k: average the weights themselves, inside the log.":
            5 * expected,
    }, atol=1e-8, hint="if q is the posterior, p(x, z) / q(z) = p(x) for every z: check how you draw z "
                       "(z = mu + exp(log_sigma) * eps) and how you compute log q(z)")
    far = _call_seeded(what, iwae_bound_fn, 1, _gaussian_log_joint(m, s, -1000.0), m, s.log(), 5, 7)
    if not torch.isfinite(far).all():
        raise ExerciseError(f"{what}: with log p(x) = -1000 your estimates are -inf or nan: exp(-1000) "
                            "underflows to 0. Average the weights with the log-sum-exp trick: "
                            "torch.logsumexp(log_w, dim) - log K.")
    check_close(f"{what} when log p(x) = -1000", far, expected - 997.0, atol=1e-8)
    # q narrower than the posterior and off-centre: L_1 is the ELBO, and L_K rises above it
    mu, log_sigma = m + 0.8, s.log() - 0.2
    kl = (torch.log(s) - log_sigma + ((log_sigma.exp() ** 2 + (mu - m) ** 2) / (2 * s**2)) - 0.5).sum()
    elbo = -3.0 - kl.item()
    log_joint = _gaussian_log_joint(m, s, -3.0)
    one = _call_seeded(what, iwae_bound_fn, 2, log_joint, mu, log_sigma, 1, 20_000)
    many = _call_seeded(what, iwae_bound_fn, 3, log_joint, mu, log_sigma, 50, 2_000)
    for got, n in [(one, 20_000), (many, 2_000)]:
        if got.shape != (n,):
            raise ExerciseError(f"{what}: expected shape ({n},), got {tuple(got.shape)}")
    se = one.std().item() / math.sqrt(len(one))
    if abs(one.mean().item() - elbo) > 5 * se:
        raise ExerciseError(
            f"{what}: with K = 1 the average of your estimates, {one.mean().item():.4f}, is not the ELBO "
            f"{elbo:.4f} (+- {se:.4f}): draw z_k from q = N(mu, diag exp(2 log_sigma)), i.e. "
            "z = mu + exp(log_sigma) * eps, and use log q of that same Gaussian")
    if many.mean().item() < elbo + 0.5 * kl.item():
        raise ExerciseError(
            f"{what}: with K = 50 the average of your estimates, {many.mean().item():.4f}, is hardly above "
            f"the ELBO {elbo:.4f} (log p(x) = -3): if you average the log-weights you get the ELBO for "
            "every K; L_K is the log of the average weight")
    se_many = many.std().item() / math.sqrt(len(many))
    if many.mean().item() > -3.0 + 5 * se_many:
        raise ExerciseError(f"{what}: with K = 50 the average of your estimates, {many.mean().item():.4f}, "
                            "lies above log p(x) = -3, which L_K never exceeds")
    passed(f"{what}: L_1 is the ELBO, L_50 lies above it")


def check_moment_match(moment_match_fn) -> None:
    """Check ``moment_match_fn(points, log_p, cell_area)``: the mean and the variances, shapes ``(D,)``,
    of the density whose log is ``log_p`` (shape ``(N,)``, normalised on the grid) at the centres
    ``points`` (shape ``(N, D)``) of grid cells of area ``cell_area``."""
    what = "moment matching"
    g = torch.Generator().manual_seed(23)
    points = torch.randn(400, 2, generator=g, dtype=torch.float64) * 1.5 + torch.tensor([1.0, -0.5],
                                                                                           dtype=torch.float64)
    cell_area = 0.05
    log_p = torch.randn(400, generator=g, dtype=torch.float64)
    log_p = log_p - torch.logsumexp(log_p, 0) - math.log(cell_area)  # sum(p) * cell_area = 1
    got = call_answer(what, moment_match_fn, points.clone(), log_p.clone(), cell_area)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseError(f"{what}: return a pair (mean, var), got {type(got).__name__}")
    mass = log_p.exp() * cell_area
    mean = (mass[:, None] * points).sum(0)
    second = (mass[:, None] * points**2).sum(0)
    var = second - mean**2
    check_with_mistakes(f"the mean of {what}", got[0], mean, {
        "The cell area is missing: the mass of a cell is p(z) dA, not p(z).": mean / cell_area,
        "You weight the points by log p: weight them by p = exp(log p) (times the cell area).":
            (log_p[:, None] * points).sum(0) * cell_area,
    }, hint="mean_d = sum_i p_i z_id dA")
    check_with_mistakes(f"the variances of {what}", got[1], var, {
        "You return the second moment E[z_d^2]: the variance is E[z_d^2] - E[z_d]^2.": second,
        "You return the standard deviations: return the variances.": var.sqrt(),
    }, hint="var_d = sum_i p_i (z_id - mean_d)^2 dA")
