"""The exercise checks of part I (chapters 01-03) and the change-of-variables widget.

Every check must pass the right answer and reject a typical wrong one with an
ExerciseError whose message names the mistake.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowlib.book.exercises import ExerciseError
from flowlib.book.exercises import change_of_variables as cov
from flowlib.book.exercises import determinant_lemma as mdl
from flowlib.book.widgets import change_of_variables as widget
from flowlib.twod.jacobian import autograd_logdet


def log_normal_1d(x):
    return -0.5 * x**2 - 0.5 * math.log(2 * math.pi)


def rejects(check, answer, *fragments, **kwargs):
    """``check(answer)`` raises ExerciseError whose message contains every fragment."""
    with pytest.raises(ExerciseError) as info:
        check(answer, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# ------------------------------------------------------------------ change of variables


def test_logit_normal(capsys):
    cov.check_logit_normal(lambda y: log_normal_1d(torch.logit(y)) - torch.log(y * (1 - y)))
    assert "Correct" in capsys.readouterr().out
    rejects(cov.check_logit_normal, lambda y: log_normal_1d(torch.logit(y)), "Jacobian term", "missing")
    rejects(cov.check_logit_normal, lambda y: log_normal_1d(torch.logit(y)) + torch.log(y * (1 - y)),
            "wrong sign")
    rejects(cov.check_logit_normal, lambda y: torch.exp(log_normal_1d(torch.logit(y))) / (y * (1 - y)),
            "logarithm")
    rejects(cov.check_logit_normal, lambda y: torch.zeros_like(y), "values are off", "Hint")
    rejects(cov.check_logit_normal, lambda y: torch.zeros(3), "shape")
    rejects(cov.check_logit_normal, "not a function", "expected a function")


def test_square_of_normal():
    def right(y):
        r = torch.sqrt(y)
        return torch.logaddexp(log_normal_1d(r), log_normal_1d(-r)) - torch.log(2 * r)

    cov.check_square_of_normal(right)
    y = torch.linspace(0.1, 5, 20, dtype=torch.float64)
    chi2 = torch.distributions.Chi2(torch.tensor(1.0, dtype=torch.float64)).log_prob(y)
    assert torch.allclose(cov.square_of_normal_log_density(y), chi2, atol=1e-10)
    rejects(cov.check_square_of_normal, lambda y: log_normal_1d(torch.sqrt(y)) - torch.log(2 * torch.sqrt(y)),
            "one preimage")
    rejects(cov.check_square_of_normal, lambda y: math.log(2) + log_normal_1d(torch.sqrt(y)),
            "Jacobian term is missing")


def test_banana_density():
    def right(y, s=0.7):
        x2 = (y[:, 1] - s * (y[:, 0] ** 2 - 1)) * torch.exp(-0.4 * s * y[:, 0])
        return -0.5 * (y[:, 0] ** 2 + x2**2) - math.log(2 * math.pi) - 0.4 * s * y[:, 0]

    cov.check_banana_density(right, strength=0.7)

    def no_jacobian(y, s=0.7):
        return right(y, s) + 0.4 * s * y[:, 0]

    rejects(cov.check_banana_density, no_jacobian, "Jacobian term is missing", strength=0.7)
    rejects(cov.check_banana_density, lambda y: right(y) + 0.5 * math.log(2 * math.pi),
            "normalising constant", strength=0.7)
    rejects(cov.check_banana_density, right, "values are off", strength=1.0)  # wrong s


# ------------------------------------------------------------------ determinant lemma


def test_rank_one_logdet():
    mdl.check_rank_one_logdet(lambda u, v: torch.log(torch.abs(1 + (u * v).sum(-1))))
    rejects(mdl.check_rank_one_logdet, lambda u, v: torch.log(1 + (u * v).sum(-1)), "absolute value")
    rejects(mdl.check_rank_one_logdet, lambda u, v: torch.log(torch.abs(1 + u * v)).sum(-1), "diagonal")
    rejects(mdl.check_rank_one_logdet, lambda u, v: 1 + (u * v).sum(-1), "log|.|")
    rejects(mdl.check_rank_one_logdet, lambda u, v: torch.log(torch.abs(1 + (u * u).sum(-1))), "u^T u")

    def brute(u, v):  # correct, only slow: accepted
        outer = u[:, :, None] * v[:, None, :]
        return torch.linalg.slogdet(torch.eye(u.shape[1], dtype=u.dtype) + outer).logabsdet

    mdl.check_rank_one_logdet(brute)


def test_low_rank_logdet():
    def right(U, V):
        return torch.linalg.slogdet(torch.eye(U.shape[-1], dtype=U.dtype) + V.transpose(-1, -2) @ U).logabsdet

    mdl.check_low_rank_logdet(right)
    rejects(mdl.check_low_rank_logdet, lambda U, V: torch.linalg.slogdet(V.transpose(-1, -2) @ U).logabsdet,
            "identity")
    rejects(mdl.check_low_rank_logdet,
            lambda U, V: torch.log(torch.abs(1 + torch.einsum("bdm,bdm->b", U, V))), "trace")
    rejects(mdl.check_low_rank_logdet, lambda U, V: torch.linalg.det(torch.eye(3, dtype=U.dtype)
                                                                      + V.transpose(-1, -2) @ U), "log|det|")


def test_check_reports_a_crash_in_the_readers_code():
    def crashes(u, v):
        raise RuntimeError("shapes do not match")

    rejects(mdl.check_rank_one_logdet, crashes, "RuntimeError", "shapes do not match")


# ------------------------------------------------------------------ the widget's maps


@pytest.mark.parametrize("name", list(widget.MAPS))
@pytest.mark.parametrize("strength", [0.0, 0.4, 1.3])
def test_maps_invert_and_logdet_matches_autograd(name, strength):
    f = widget.get_map(name, strength)
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.5
    y, logdet = f.forward(x)
    x_back, logdet_inv = f.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-9)
    assert torch.allclose(logdet_inv, -logdet, atol=1e-10)
    assert torch.allclose(logdet, autograd_logdet(f, x), atol=1e-10)


@pytest.mark.parametrize("name", list(widget.MAPS))
def test_pushforward_density_integrates_to_one(name):
    from flowlib.twod.grid import Grid2D

    grid = Grid2D(12.0, 500)
    mass = grid.integrate(widget.log_density(widget.get_map(name, 0.5), grid.points).exp())
    assert abs(mass.item() - 1) < 5e-3


def test_widget_bad_input():
    with pytest.raises(ValueError, match="unknown map"):
        widget.get_map("spiral")
    with pytest.raises(ValueError, match="strength"):
        widget.get_map("banana", -1.0)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        widget.get_map("banana").forward(torch.zeros(5, 3))


def test_plot_and_widget_build():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = widget.plot_pushforward("radial", 0.5, n_samples=2000)
    assert len(fig.axes) >= 3 and all(ax.get_xlabel() for ax in fig.axes[:3])
    plt.close(fig)
    box = widget.pushforward_widget("sinh", 0.3, n_samples=2000)
    dropdown, slider = box.children[0].children
    slider.value = 0.8  # redraws
    assert dropdown.value == "sinh"
    plt.close("all")


# ------------------------------------------------------------------ VAEs and the ELBO


def test_gaussian_kl():
    from flowlib.book.exercises import elbo

    check = elbo.check_gaussian_kl
    check(lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(-1))
    rejects(check, lambda mu, lv: (mu**2 + lv.exp() - 1 - lv).sum(-1), "1/2")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 1 - 2 * lv).sum(-1), "log sigma")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv).sum(-1), "-1")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 - lv).mean(-1), "SUM over dimensions")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(), "one KL per row")
    # the closed form agrees with torch.distributions
    mu, log_var = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(elbo.gaussian_kl(mu, log_var), torch.distributions.kl_divergence(q, p).sum(-1))


def test_reparameterize(capsys):
    from flowlib.book.exercises import elbo

    check = elbo.check_reparameterize
    check(lambda mu, lv, eps: mu + torch.exp(0.5 * lv) * eps)
    assert capsys.readouterr().out.count("Correct") == 2
    rejects(check, lambda mu, lv, eps: mu + torch.exp(lv) * eps, "variance itself")
    rejects(check, lambda mu, lv, eps: mu + lv * eps, "exp(log_var / 2)")
    rejects(check, lambda mu, lv, eps: torch.exp(0.5 * lv) * eps, "add the mean")
    rejects(check, lambda mu, lv, eps: (mu + torch.exp(0.5 * lv) * eps).detach(), "no gradient flows")
    rejects(check, lambda mu, lv, eps: mu.detach() + torch.exp(0.5 * lv) * eps, "gradients are not")


def _iwae(log_joint, mu, log_sigma, K, n):
    z = mu + log_sigma.exp() * torch.randn(n, K, mu.shape[-1], dtype=mu.dtype)
    log_q = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)
    return torch.logsumexp(log_joint(z) - log_q, 1) - math.log(K)


def test_iwae_bound(capsys):
    from flowlib.book.exercises import elbo

    check = elbo.check_iwae_bound
    check(_iwae)
    assert "Correct: estimates of L_K: L_1 is the ELBO" in capsys.readouterr().out
    rejects(check, lambda *a: _iwae(*a) + math.log(a[3]), "subtract log K")

    def mean_log_weight(log_joint, mu, log_sigma, K, n):
        z = mu + log_sigma.exp() * torch.randn(n, K, mu.shape[-1], dtype=mu.dtype)
        return (log_joint(z) - torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)).mean(1)

    rejects(check, mean_log_weight, "average the log-weights")

    def naive(log_joint, mu, log_sigma, K, n):
        return _iwae(log_joint, mu, log_sigma, K, n).exp().log()  # exp underflows at log p(x) = -1000

    rejects(check, naive, "log-sum-exp")

    def wrong_sigma(log_joint, mu, log_sigma, K, n):
        return _iwae(log_joint, mu, 2 * log_sigma, K, n)  # samples and log q from N(mu, sigma^4)

    rejects(check, wrong_sigma, "how you draw z")
    rejects(check, lambda lj, mu, ls, K, n: _iwae(lj, mu, ls, K, n)[None].expand(K, n).mean(1),
            "shape (K,)")


def test_moment_match():
    from flowlib.book.exercises import elbo

    def right(points, log_p, cell_area):
        mass = log_p.exp() * cell_area
        mean = mass @ points
        return mean, mass @ (points - mean) ** 2

    elbo.check_moment_match(right)
    rejects(elbo.check_moment_match, lambda P, L, a: (right(P, L, a)[0], (L.exp() * a) @ P**2),
            "second moment")
    rejects(elbo.check_moment_match, lambda P, L, a: (right(P, L, a)[0], right(P, L, a)[1].sqrt()),
            "standard deviations")
    rejects(elbo.check_moment_match, lambda P, L, a: right(P, L, 1.0), "cell area")
    rejects(elbo.check_moment_match, lambda P, L, a: right(P, L, a)[0], "return a pair")


def test_sherman_morrison():
    def right(A_inv, u, v):
        return A_inv - torch.outer(A_inv @ u, v @ A_inv) / (1 + v @ A_inv @ u)

    mdl.check_sherman_morrison(right)
    rejects(mdl.check_sherman_morrison, lambda A, u, v: 2 * A - right(A, u, v), "SUBTRACTED")
    rejects(mdl.check_sherman_morrison, lambda A, u, v: A - torch.outer(A @ u, v @ A) / (v @ A @ u), "The 1")
    rejects(mdl.check_sherman_morrison, lambda A, u, v: A - torch.outer(A @ u, A @ v) / (1 + v @ A @ u),
            "row vector")
    rejects(mdl.check_sherman_morrison, lambda A, u, v: right(A, v, u), "swapped")


def test_checks_let_the_student_editions_stub_through():
    """In the student edition an answer not yet written raises NotImplementedError from its stub: the
    check cell must fail with that error (the edition's execution accepts it), not report a bug."""
    from flowlib.book.exercises import elbo

    def stub(*args):
        raise NotImplementedError("Exercise x: replace this line with your solution")

    checks = [elbo.check_gaussian_kl, elbo.check_reparameterize, elbo.check_iwae_bound,
              elbo.check_moment_match, cov.check_logit_normal, cov.check_square_of_normal,
              cov.check_banana_density,
              mdl.check_rank_one_logdet, mdl.check_low_rank_logdet, mdl.check_sherman_morrison]
    for check in checks:
        with pytest.raises(NotImplementedError, match="Exercise x"):
            check(stub)
    rejects(mdl.check_rank_one_logdet, lambda u, v: 1 / 0, "ZeroDivisionError")  # other errors: feedback
