"""Graded tests of chapter 01, "VAEs and the ELBO" (not in the student edition).

Other inputs than the public checks of ``flowlib.book.exercises.elbo`` (other seeds, shapes, dtypes, the
edge cases D = 1 and q = N(0, I), log-weights near -2000), with references computed here.
"""

from __future__ import annotations

import math

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

part1 = load_beside(__file__, "_part1.py")
call, close, diagnose = part1.call, part1.close, part1.diagnose

F64 = torch.float64


def _randn(seed, *shape, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


# ---------------------------------------------------------------- vae-ex-kl


def _kl_reference(mu, log_var):
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per row, by torch.distributions (another route)."""
    q = torch.distributions.Normal(mu.double(), (0.5 * log_var.double()).exp())
    p = torch.distributions.Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))
    return torch.distributions.kl_divergence(q, p).sum(-1)


def _kl_mistakes(mu, log_var):
    mu, log_var = mu.double(), log_var.double()
    right = _kl_reference(mu, log_var)
    D = mu.shape[-1]
    return {
        "the factor 1/2 is missing": 2 * right,
        "the sign is flipped (a KL divergence is never negative)": -right,
        "log_var is the log of the VARIANCE: sigma^2 = exp(log_var), not exp(2 log_var)":
            0.5 * (mu**2 + (2 * log_var).exp() - 1 - 2 * log_var).sum(-1),
        "the constant -1 per dimension is missing": right + 0.5 * D,
        "you average over the latent dimensions; the KL of independent coordinates is their SUM":
            right / D,
        "you sum over the batch too; return one KL per row": right.sum(),
    }


def _gaussian_kl(gaussian_kl):
    g = Grade(3)
    mu, log_var = _randn(101, 5, 3), _randn(102, 5, 3)
    got, err = call(gaussian_kl, mu.clone(), log_var.clone())
    expected = _kl_reference(mu, log_var)
    g.check(close(got, expected), 1, "KL for a batch of 5 in D = 3 (float64)",
            diagnose(got, err, expected, _kl_mistakes(mu, log_var),
                     "compare with 0.5 * sum_d (mu^2 + sigma^2 - 1 - log sigma^2)"))
    mu1 = torch.tensor([[0.0], [1.5], [0.0]], dtype=F64)
    lv1 = torch.tensor([[0.0], [0.0], [-2.0]], dtype=F64)
    got, err = call(gaussian_kl, mu1.clone(), lv1.clone())
    expected = _kl_reference(mu1, lv1)
    g.check(close(got, expected, atol=1e-12), 1, "D = 1, including q = N(0, 1), whose KL is exactly 0",
            diagnose(got, err, expected, _kl_mistakes(mu1, lv1), "the KL of N(0, 1) to itself must be 0"))
    mu32, lv32 = _randn(103, 64, 16, dtype=torch.float32) * 3, _randn(104, 64, 16, dtype=torch.float32) * 2
    got, err = call(gaussian_kl, mu32.clone(), lv32.clone())
    expected = _kl_reference(mu32, lv32)
    g.check(close(got, expected, atol=1e-3, rtol=1e-5), 1,
            "a float32 batch of 64 encoder outputs with D = 16 (as in the chapter's VAE)",
            diagnose(got, err, expected, _kl_mistakes(mu32, lv32), "use torch operations that keep the batch "
                     "axis: one KL per row", atol=1e-3, rtol=1e-5))
    return g


# ---------------------------------------------------------------- vae-ex-reparam


def _reparam_mistakes(mu, log_var, eps):
    mu, log_var, eps = mu.detach().double(), log_var.detach().double(), eps.double()
    return {
        "sigma is exp(log_var / 2); you used exp(log_var), the variance": mu + log_var.exp() * eps,
        "the standard deviation is exp(log_var / 2), not log_var": mu + log_var * eps,
        "you return only the noise term: add the mean mu": (0.5 * log_var).exp() * eps,
    }


def _reparameterize(reparameterize):
    g = Grade(3)
    mu, log_var, eps = _randn(201, 4, 6), _randn(202, 4, 6), _randn(203, 4, 6)
    mu.requires_grad_(True)
    log_var.requires_grad_(True)
    got, err = call(reparameterize, mu, log_var, eps.clone())
    sigma = (0.5 * log_var.detach()).exp()
    expected = mu.detach() + sigma * eps
    values_right = g.check(close(got, expected), 1, "z = mu + sigma * eps for a batch of 4 in D = 6",
                           diagnose(got, err, expected, _reparam_mistakes(mu, log_var, eps),
                                    "z = mu + exp(log_var / 2) * eps"))
    mu1, lv1 = _randn(204, 1, 1, dtype=torch.float32), _randn(205, 1, 1, dtype=torch.float32)
    eps1 = torch.tensor([[-2.5]])
    got1, err1 = call(reparameterize, mu1, lv1, eps1)
    expected1 = mu1.double() + (0.5 * lv1.double()).exp() * eps1.double()
    g.check(close(got1, expected1, atol=1e-6, rtol=1e-5), 0.5, "one sample in D = 1 (float32)",
            diagnose(got1, err1, expected1, _reparam_mistakes(mu1, lv1, eps1),
                     "z = mu + exp(log_var / 2) * eps", atol=1e-6, rtol=1e-5))
    grads = None
    if values_right and got.requires_grad:
        grads = torch.autograd.grad(got.sum(), (mu, log_var), allow_unused=True)
    hints = []
    for d in range(2):
        if not values_right:
            hints.append("needs the right values first")
        elif grads is None or grads[d] is None:
            hints.append(f"no gradient flows back to {('mu', 'log_var')[d]} (.detach(), .item(), "
                         "torch.no_grad or torch.normal?)")
        else:
            hints.append("compute z from mu and log_var with torch operations: "
                         "z = mu + torch.exp(0.5 * log_var) * eps")
    g.check(grads is not None and grads[0] is not None and torch.allclose(grads[0], torch.ones_like(mu)), 0.5,
            "dz/dmu = 1", hints[0])
    g.check(grads is not None and grads[1] is not None and torch.allclose(grads[1], 0.5 * sigma * eps), 1,
            "dz/dlog_var = sigma * eps / 2", hints[1])
    return g


# ---------------------------------------------------------------- vae-ex-iwae-code


def _gaussian_model(m, s, log_px):
    """log p(x, z) = log_px + log N(z; m, diag s^2): posterior N(m, diag s^2), evidence exp(log_px)."""
    def log_joint(z):
        return log_px + (-0.5 * ((z - m) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    return log_joint


def _seeded(fn, seed, *args):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return call(fn, *args)


def _iwae_bound(iwae_bound):
    g = Grade(4)
    m, s = torch.tensor([1.0, 0.0, -2.0], dtype=F64), torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    got, err = _seeded(iwae_bound, 301, _gaussian_model(m, s, 1.7), m, s.log(), 4, 6)
    expected = torch.full((6,), 1.7, dtype=F64)
    g.check(close(got, expected), 1, "q equal to the posterior (D = 3, K = 4, n = 6): every estimate is "
            "log p(x)", diagnose(got, err, expected, {
                "you return log sum_k w_k: the bound AVERAGES the weights, subtract log K":
                    expected + math.log(4),
                "you sum the log-weights over k": 4 * expected,
            }, "when q is the posterior every weight is p(x): draw z = mu + exp(log_sigma) * eps and use "
               "log q of that Gaussian; return the n estimates, shape (n,)"))
    m1, s1 = torch.tensor([0.3], dtype=F64), torch.tensor([0.8], dtype=F64)
    got, err = _seeded(iwae_bound, 302, _gaussian_model(m1, s1, -2000.0), m1, s1.log(), 3, 5)
    expected = torch.full((5,), -2000.0, dtype=F64)
    g.check(close(got, expected, atol=1e-7), 1, "log-weights near -2000 (D = 1, K = 3)",
            diagnose(got, err, expected, {}, "when q is the posterior every estimate is log p(x) = -2000; "
                     "exp(-2000) underflows to 0, so average the weights with the log-sum-exp trick "
                     "(torch.logsumexp(log_w, dim) - log K)"))
    # q off-centre and narrower than the posterior N(m2, diag s2^2), log p(x) = -1
    m2, s2 = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 0.6], dtype=F64)
    mu, log_sigma = m2 - 0.7, s2.log() - 0.25
    kl = (s2.log() - log_sigma + (log_sigma.exp() ** 2 + (mu - m2) ** 2) / (2 * s2**2) - 0.5).sum().item()
    elbo = -1.0 - kl
    one, err1 = _seeded(iwae_bound, 303, _gaussian_model(m2, s2, -1.0), mu, log_sigma, 1, 20_000)
    ok1 = isinstance(one, torch.Tensor) and one.shape == (20_000,) and bool(torch.isfinite(one).all())
    se1 = one.double().std().item() / math.sqrt(20_000) if ok1 else 0.0
    g.check(ok1 and abs(one.double().mean().item() - elbo) < 5 * se1, 1,
            f"with K = 1 the estimates average to the ELBO ({elbo:.3f}) when q is not the posterior",
            err1 or "draw each z_k from q = N(mu, diag exp(2 log_sigma)) (z = mu + exp(log_sigma) * eps) and "
                    "use log q of that same Gaussian")
    many, err2 = _seeded(iwae_bound, 304, _gaussian_model(m2, s2, -1.0), mu, log_sigma, 20, 4_000)
    ok2 = isinstance(many, torch.Tensor) and many.shape == (4_000,) and bool(torch.isfinite(many).all())
    mean2 = many.double().mean().item() if ok2 else math.nan
    se2 = many.double().std().item() / math.sqrt(4_000) if ok2 else 0.0
    if err2 or not ok2:
        why = err2 or "expected n = 4000 finite estimates, shape (n,)"
    elif mean2 <= elbo + 0.4 * kl:
        why = (f"they average to {mean2:.3f}, hardly above the ELBO {elbo:.3f}: averaging the log-weights "
               "gives the ELBO for every K; L_K is the log of the AVERAGE WEIGHT")
    else:
        why = (f"they average to {mean2:.3f}, above log p(x) = -1, which L_K never exceeds: use the same "
               "z_k in log p(x, z_k) and in log q(z_k)")
    g.check(ok2 and elbo + 0.4 * kl < mean2 < -1.0 + 5 * se2, 1,
            "with K = 20 the estimates average between the ELBO and log p(x) = -1, well above the ELBO", why)
    return g


# ---------------------------------------------------------------- vae-ex-forward-kl-code


def _moment_match(moment_match):
    g = Grade(2)
    points = _randn(401, 300, 3) * torch.tensor([1.0, 0.5, 2.0], dtype=F64) + torch.tensor([-1.0, 2.0, 0.5],
                                                                                         dtype=F64)
    cell_area = 0.2
    log_p = _randn(402, 300) * 2
    log_p = log_p - torch.logsumexp(log_p, 0) - math.log(cell_area)
    got, err = call(moment_match, points.clone(), log_p.clone(), cell_area)
    pair = isinstance(got, (tuple, list)) and len(got) == 2
    weights = torch.softmax(log_p, 0)  # the masses p dA, normalised another way
    mean = weights @ points
    var = weights @ (points - mean) ** 2
    mean_got, var_got = (got if pair else (None, None))
    err = err or (None if pair else f"return a pair (mean, var), got {type(got).__name__}")
    g.check(close(mean_got, mean), 1, "the mean of a grid density in D = 3",
            diagnose(mean_got, err, mean, {
                "the cell area is missing: a cell's mass is p(z) dA": mean / cell_area,
            }, "mean_d = sum_i p(z_i) z_id dA"))
    g.check(close(var_got, var), 1, "its variances",
            diagnose(var_got, err, var, {
                "you return the second moments E[z_d^2]; the variance is E[z_d^2] - E[z_d]^2":
                    weights @ points**2,
                "you return standard deviations; return the variances": var.sqrt(),
            }, "var_d = sum_i p(z_i) (z_id - mean_d)^2 dA"))
    return g


EXERCISES = [
    Exercise("vae-ex-kl", 3, ("gaussian_kl",), _gaussian_kl),
    Exercise("vae-ex-reparam", 3, ("reparameterize",), _reparameterize),
    Exercise("vae-ex-iwae-code", 4, ("iwae_bound",), _iwae_bound),
    Exercise("vae-ex-forward-kl-code", 2, ("moment_match",), _moment_match),
]
WRITTEN = {"vae-ex-jensen": 3, "vae-ex-iwae": 3, "vae-ex-forward-kl": 3}
