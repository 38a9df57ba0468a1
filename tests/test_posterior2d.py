"""The 2-D posterior on a grid: inverses, densities, evidence, KLs, the aggregate posterior, the
experiment's committed results, and the chapter's exercise checks."""

from __future__ import annotations

import math
import os
import pathlib

import pytest
import torch

from flowlib.book.exercises.feedback import ExerciseError
from flowlib.book.exercises.posterior import check_grid_posterior, check_typical_radius
from flowlib.experiments import posterior2d as P
from flowlib.flows import IAF, DiagonalAffine, PCPMap, Planar, Radial, Reverse, Sequential
from flowlib.flows.inverse import flow_inverse
from flowlib.flows.registry import build
from flowlib.model.vae import VAE, log_diag_normal
from flowlib.model.whitened import WhitenedFlowVAE
from flowlib.twod.grid import Grid2D
from flowlib.twod.posterior_grid import (
    aggregate_log_q,
    grid_evidence,
    grid_kl,
    log_joint,
    log_q,
    mc_kl,
    posterior_box,
    posterior_on_grid,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("FLOWLIB_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "results" / "posterior2d"


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _perturb(module, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _vae(flow=None, seed=0, cls=VAE):
    torch.manual_seed(seed)
    model = cls(784, 2, (16,), flow)
    with torch.no_grad():  # broad posteriors that a coarse grid resolves
        model.encoder.log_var.bias.fill_(-1.0)
        model.decoder.net[-1].weight.mul_(0.3)
    return model.double().eval()


def _x(n=1, seed=0):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).bernoulli()


@pytest.mark.parametrize("amortized", [False, True])
def test_flow_inverse_undoes_every_invertible_family(amortized):
    c = 5 if amortized else None
    torch.manual_seed(1)
    flow = _perturb(Sequential(Planar(2, c), Radial(2, c), IAF(2, c, hidden=16), Reverse(2),
                               PCPMap(2, c, hidden=8), Planar(2, c)).double())
    z = 1.5 * torch.randn(300, 2, dtype=torch.float64)
    context = torch.randn(300, 5, dtype=torch.float64) if amortized else None
    with torch.no_grad():
        y, logdet = flow(z, context)
    z_back, logdet_inv = flow_inverse(flow, y, context)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-9, rtol=0)


@pytest.mark.parametrize("cls", [VAE, WhitenedFlowVAE])
@pytest.mark.parametrize("family", ["none", "planar", "radial", "iaf", "pcpmap"])
def test_log_q_at_samples_equals_the_forward_density_and_integrates_to_one(family, cls):
    flow = build(family, 2, context_dim=16, length=2, **({"hidden": 16} if family == "iaf" else {}))
    model = _vae(flow, cls=cls)
    if flow is not None:
        _perturb(model.flow, 0.3)
    x = _x()
    with torch.no_grad():
        z, lq = model.posterior(x, 2000)
    torch.testing.assert_close(log_q(model, x[0], z[:200, 0]), lq[:200, 0], atol=1e-8, rtol=0)
    lo, hi = z[:, 0].min(0).values - 1, z[:, 0].max(0).values + 1
    grid = Grid2D(n=60, xlim=(lo[0].item(), hi[0].item()), ylim=(lo[1].item(), hi[1].item()))
    mass = grid.integrate(log_q(model, x[0], grid.points).exp()).item()
    assert abs(mass - 1) < 2e-3, mass


def test_grid_evidence_agrees_with_importance_sampling_and_kls_with_monte_carlo():
    model = _vae()
    x = _x(3)
    coarse = Grid2D(8.0, 160)
    log_post, log_px, edge = posterior_on_grid(coarse, log_joint(model, x, coarse.points))
    assert (edge > 20).all(), edge
    torch.testing.assert_close(coarse.integrate(log_post[0].exp()).double(),
                               torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.manual_seed(0)  # importance sampling with q as proposal: noisy (heavy-tailed weights)
    is_ = model.log_likelihood(x, 20_000)
    assert (is_ - log_px).abs().max() < 0.1, (is_, log_px)
    for i in range(3):  # the Gaussian q: KL on a fine grid vs log p(x) - ELBO from 20000 samples
        grid = posterior_box(coarse, log_post[i])
        lp, lpx, _ = (t[0] for t in posterior_on_grid(grid, log_joint(model, x[i], grid.points)))
        assert abs(lpx - log_px[i]) < 1e-6
        kl, mass = grid_kl(grid, log_q(model, x[i], grid.points), lp)
        mc, se = mc_kl(model, x[i], lpx.item(), 20_000)
        assert kl >= 0 and abs(mass - 1) < 1e-3
        assert abs(kl - mc) < 4 * se + 1e-3, (kl, mc, se)


def test_grid_evidence_accumulates_what_posterior_on_grid_computes():
    model = _vae()
    x = _x(4, seed=2)
    grid = Grid2D(5.0, 90)
    log_post, log_px, edge = posterior_on_grid(grid, log_joint(model, x, grid.points))
    with torch.no_grad():
        mu, log_var, _ = model.encoder(x)
    ev = grid_evidence(model, x, grid, gaussians=(mu, log_var), chunk=1000)
    torch.testing.assert_close(ev["log_px"], log_px, atol=1e-9, rtol=0)
    torch.testing.assert_close(ev["edge"], edge, atol=1e-9, rtol=0)
    for i in range(4):
        kl, mass = grid_kl(grid, log_q(model, x[i], grid.points), log_post[i])
        assert abs(ev["kl"][i].item() - kl) < 1e-9 and abs(ev["mass"][i].item() - mass) < 1e-9
        p = log_post[i].exp() * grid.cell_area  # cell probabilities
        mean = p @ grid.points
        cov = (p[:, None] * (grid.points - mean)).T @ (grid.points - mean)
        d = grid.points - mean
        gauss = -0.5 * (d @ torch.linalg.inv(cov) * d).sum(1) - math.log(2 * math.pi) \
            - 0.5 * torch.logdet(cov)
        torch.testing.assert_close(ev["mean"][i], mean)
        torch.testing.assert_close(ev["cov"][i], cov)
        assert abs(ev["non_gaussianity"][i].item() - (p * (log_post[i] - gauss)).sum().item()) < 1e-6
        assert ev["non_gaussianity"][i] > 0


def test_posterior_box_covers_the_extra_points_and_the_grid_rejects_bad_models():
    coarse = Grid2D(3.0, 30)
    lp = -(coarse.points**2).sum(1)
    box = posterior_box(coarse, lp, extra=torch.tensor([[2.5, -2.9], [2.6, -2.9]] * 1000), pad=0.1)
    assert box.xlim[1] > 2.6 and box.ylim[0] < -2.9
    with pytest.raises(ValueError, match="z_dim = 2"):
        log_joint(VAE(784, 3, (8,)), _x(1).float(), coarse.points)
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        log_joint(VAE(784, 2, (8,)), _x(1).float(), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="static flow"):
        aggregate_log_q(_vae(build("planar", 2, context_dim=16)), _x(2), coarse.points)


@pytest.mark.parametrize("flow", [None, "static-planar"])
def test_aggregate_posterior_is_the_mean_of_the_posteriors(flow):
    f = None if flow is None else _perturb(build("planar", 2, length=3), 0.5)
    model = _vae(f)
    x = _x(5, seed=3)
    z = torch.randn(50, 2, dtype=torch.float64)
    brute = torch.logsumexp(torch.stack([log_q(model, xi, z) for xi in x]), 0) - math.log(5)
    torch.testing.assert_close(aggregate_log_q(model, x, z, chunk=2), brute, atol=1e-9, rtol=0)


def test_diagonal_affine_pushes_the_standard_normal_to_the_diagonal_gaussian():
    a = DiagonalAffine(2).double()
    with torch.no_grad():
        a.m.copy_(torch.tensor([0.5, -1.0]))
        a.log_s.copy_(torch.tensor([-0.7, 0.2]))
    z0 = torch.randn(10, 2, dtype=torch.float64)
    y, logdet = a(z0)
    lq = log_diag_normal(z0, torch.zeros(2), torch.zeros(2)) - logdet
    torch.testing.assert_close(lq, log_diag_normal(y, a.m, 2 * a.log_s).detach())
    back, logdet_inv = a.inverse(y)
    torch.testing.assert_close(back, z0)
    torch.testing.assert_close(logdet_inv, -logdet)


@pytest.mark.skipif(not (DATA / "binarized_mnist").is_dir() or not (DATA / "MNIST").is_dir(),
                    reason=f"binarized MNIST and MNIST not found under {DATA}")
def test_binarized_test_labels_are_the_class_blocks():
    labels = P.binarized_test_labels(check=100)
    assert labels.shape == (10_000,) and (labels[1:] >= labels[:-1]).all()
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not (RESULTS / "metrics.json").is_file(), reason="no committed results")
def test_committed_results_load_and_their_numbers_are_consistent():
    r = P.load_results(RESULTS)
    m = r["metrics"]
    assert set(r["approximations"]) == set(P.FAMILIES)
    assert r["static"].flow is not None and not r["static"].flow.amortized
    assert len(m["digits"]) >= 4 and all(set(r["fits"][d["test_index"]]) == set(P.FAMILIES)
                                         for d in m["digits"])
    for d in m["digits"]:
        assert d["edge"] > 20
        assert abs(d["log_px_grid"] - d["log_px_coarse"]) < 1e-3
        # importance sampling lies between its proposal's ELBO and log p(x), up to its noise
        kl_fit, kl_enc = d["q"]["fit/gaussian"]["kl"], d["q"]["amortized/gaussian"]["kl"]
        assert d["log_px_grid"] - kl_fit - 0.05 < d["log_px_is_fit"] < d["log_px_grid"] + 0.05
        assert d["log_px_grid"] - kl_enc - 0.05 < d["log_px_is"] < d["log_px_grid"] + 0.2
        for name, q in d["q"].items():
            assert q["kl"] > -1e-3 and abs(q["mass"] - 1) < 0.01, (d["test_index"], name, q)
            assert abs(q["kl"] - q["mc"]) < 5 * q["mc_se"] + 0.02, (d["test_index"], name, q)
    for name in ("base", "static-planar"):
        s = m["sampling"][name]
        assert abs(s["aggregate_mass_on_grid"] - 1) < 0.01 and s["kl_aggregate_prior"] > 0


def test_exercise_checks_accept_the_answer_and_explain_typical_mistakes():
    def right(lj, dA):
        log_px = torch.logsumexp(lj, 0) + math.log(dA)
        return lj - log_px, log_px

    check_grid_posterior(right)
    with pytest.raises(ExerciseError, match="cell area"):
        check_grid_posterior(lambda lj, dA: (lj - torch.logsumexp(lj, 0), torch.logsumexp(lj, 0)))
    with pytest.raises(ExerciseError, match="logsumexp"):
        check_grid_posterior(lambda lj, dA: (lj, torch.log(lj.exp().sum() * dA)))
    with pytest.raises(ExerciseError, match="log p\\(z \\| x\\)"):
        check_grid_posterior(lambda lj, dA: (lj, right(lj, dA)[1]))
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        check_grid_posterior(lambda lj, dA: 1 / 0)
    check_typical_radius(math.sqrt(-2 * math.log(0.01)))
    with pytest.raises(ExerciseError, match="ONE standard normal"):
        check_typical_radius(2.5758)
    with pytest.raises(ExerciseError, match="square root"):
        check_typical_radius(-2 * math.log(0.01))
    with pytest.raises(ExerciseError, match="expected a number"):
        check_typical_radius("3")


def test_train_epoch_trains_only_what_its_optimizer_holds_and_names_a_diverged_batch():
    """Stage B's epoch (flowlib.training.loop.train_epoch): ceil(N / batch) steps, the frozen
    decoder untouched, the trained part moved; a non-finite loss raises before its step."""
    from flowlib.training.loop import TrainingDiverged, train_epoch

    model = _vae(build("planar", 2, context_dim=16)).float()
    x = _x(50, seed=4).float()
    model.decoder.requires_grad_(False)
    decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    heads = model.encoder.mu.weight.clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    total, step, beta = train_epoch(model, opt, x, 20, torch.Generator().manual_seed(0), step=7,
                                    progress=False)
    assert step == 7 + 3 and beta == 1.0 and math.isfinite(total) and total < 0
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder.items())
    assert not torch.equal(heads, model.encoder.mu.weight)
    with torch.no_grad():
        model.encoder.mu.bias.fill_(float("nan"))
    before = model.encoder.log_var.weight.clone()
    with pytest.raises(TrainingDiverged, match="non-finite loss") as err:
        train_epoch(model, opt, x, 20, torch.Generator().manual_seed(0), progress=False)
    assert err.value.batch == 1 and torch.equal(before, model.encoder.log_var.weight)
