"""Reverse-KL fitting, the grid, flow densities by inversion, plotting, and the Figure 3 command."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import matplotlib
import pytest
import torch

from flowlib.book.plotting import plot_density, plot_energy, plot_flow_density, plot_samples
from flowlib.experiments.figure3 import build, kl_table, load
from flowlib.flows import Householder, Planar, Radial, Scale, Sequential
from flowlib.flows.inverse import flow_inverse, log_density, planar_inverse
from flowlib.flows.testing import perturb_
from flowlib.twod.densities import BOXED, U1
from flowlib.twod.fit import (
    annealing,
    fit_amortized_reverse_kl,
    fit_reverse_kl,
    free_energy,
    kl_estimate,
    sample,
)
from flowlib.twod.grid import Grid2D

matplotlib.use("Agg")
REPO = pathlib.Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def perturbed(flow, std=0.7, seed=0):
    return perturb_(flow, std=std, seed=seed)


# ------------------------------------------------------------------ annealing and sampling
def test_annealing_is_the_papers_schedule():
    assert annealing(0) == pytest.approx(0.01)
    assert annealing(5000) == pytest.approx(0.51)
    assert annealing(9900) == 1.0 and annealing(50_000) == 1.0
    assert annealing(100, n_anneal=200) == pytest.approx(0.51)


def test_sample_log_density_matches_the_density_by_inversion():
    torch.manual_seed(0)
    flow = perturbed(Sequential(Planar(2), Radial(2), Planar(2)).double())
    zK, log_qK = sample(flow, 64, torch.Generator().manual_seed(1))
    assert torch.allclose(log_qK, log_density(flow, zK), atol=1e-9)


def gaussian_target(m):
    return lambda z: 0.5 * ((z - m) ** 2).sum(1)


def test_free_energy_of_the_base_is_exact_for_its_own_target():
    # q = N(0, I) (a Scale flow at s = 0) and U = ||z||^2 / 2: every sample's term is -log(2 pi)
    flow = Scale(2)
    with torch.no_grad():
        flow.params.theta.zero_()
    F, se = free_energy(flow, gaussian_target(torch.zeros(2)), n=1000)
    assert F == pytest.approx(-math.log(2 * math.pi), abs=1e-6) and se < 1e-6


def test_a_short_planar_fit_reaches_the_known_optimum_of_a_gaussian_target():
    # p = N(m, I): the optimum is q = p, i.e. KL = F + log(2 pi) = 0. One planar layer reaches it
    # by saturating tanh (large b, small w): a translation by u_hat.
    torch.manual_seed(0)
    m = torch.tensor([1.0, -0.5])
    U = gaussian_target(m)
    flow = Sequential(Planar(2))
    log_Z = math.log(2 * math.pi)
    kl_before, _ = kl_estimate(flow, U, log_Z, n=20_000, generator=torch.Generator().manual_seed(2))
    curve = fit_reverse_kl(flow, U, steps=300, batch_size=256, lr=0.05, progress=False,
                           generator=torch.Generator().manual_seed(1))
    kl, se = kl_estimate(flow, U, log_Z, n=20_000, generator=torch.Generator().manual_seed(2))
    assert kl_before > 0.5
    assert abs(kl) < 0.02 and se < 0.01
    zK, _ = sample(flow, 20_000, torch.Generator().manual_seed(3))
    assert torch.allclose(zK.mean(0), m, atol=0.1)  # KL < 0.02 allows |mean error| < 0.2
    assert curve.steps[0] == 0 and curve.steps[-1] == 299 and len(curve.free_energy) == len(curve.beta)


def test_rmsprop_annealing_and_cosine_options_fit_too():
    torch.manual_seed(0)
    U = gaussian_target(torch.tensor([1.0, 0.0]))
    flow = Sequential(Planar(2))
    curve = fit_reverse_kl(flow, U, steps=300, lr=0.01, optimizer="rmsprop", anneal=True, anneal_steps=100,
                           cosine=True, progress=False)
    assert curve.beta[0] == pytest.approx(0.01) and curve.beta[-1] == 1.0
    kl, _ = kl_estimate(flow, U, math.log(2 * math.pi), n=10_000)
    assert kl < 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"batch_size": 2.5}, "batch_size"), ({"lr": -1.0}, "lr"),
    ({"optimizer": "sgd"}, "optimizer"), ({"anneal_steps": 0}, "anneal_steps"),
])
def test_fit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_reverse_kl(Planar(2), U1, progress=False, **kwargs)


def test_fit_rejects_amortized_flows_and_non_callables():
    with pytest.raises(ValueError, match="static flow"):
        fit_reverse_kl(Planar(2, context_dim=3), U1, steps=1, progress=False)
    with pytest.raises(ValueError, match="callable"):
        fit_reverse_kl(Planar(2), "U1", steps=1, progress=False)
    with pytest.raises(ValueError, match="Flow"):
        fit_reverse_kl(torch.nn.Linear(2, 2), U1, steps=1, progress=False)


def test_a_non_finite_free_energy_names_the_step():
    with pytest.raises(FloatingPointError, match="step 0"):
        fit_reverse_kl(Planar(2), lambda z: z[:, 0] * float("nan"), steps=3, progress=False)


def test_amortized_fit_learns_a_family_exactly():
    # p(z | c) = N(0, diag(exp(2c), exp(-2c))): an amortized Scale with s = (c, -c) is exact
    torch.manual_seed(0)

    def U(z, c):
        s = torch.cat([c, -c], dim=1)
        return 0.5 * ((z * torch.exp(-s)) ** 2).sum(1)

    def log_Z(c):
        return math.log(2 * math.pi)  # sum of the log-scales is c - c = 0

    flow = Scale(2, context_dim=1)
    fit_amortized_reverse_kl(flow, U, lambda n, g: torch.rand(n, 1, generator=g) * 2 - 1, steps=400, lr=0.05,
                             progress=False, generator=torch.Generator().manual_seed(0))
    for c in (-0.9, 0.3, 0.75):
        ctx = torch.full((5000, 1), c)
        zK, log_qK = sample(flow, 5000, torch.Generator().manual_seed(1), context=ctx)
        kl = float((log_qK + U(zK, ctx)).mean().detach()) + log_Z(c)
        assert abs(kl) < 0.01
    with pytest.raises(ValueError, match="amortized flow"):
        fit_amortized_reverse_kl(Planar(2), U, lambda n, g: torch.zeros(n, 1), steps=1, progress=False)


def test_amortized_fit_trains_the_embedding_too():
    torch.manual_seed(0)
    embed = torch.nn.Linear(1, 3)
    before = embed.weight.detach().clone()
    flow = Sequential(Scale(2, context_dim=3), Householder(2, context_dim=3))
    U = lambda z, c: 0.5 * (z**2).sum(1) * (1 + c[:, 0] ** 2)
    fit_amortized_reverse_kl(flow, U, lambda n, g: torch.randn(n, 1, generator=g), embed=embed, steps=5,
                             progress=False)
    assert not torch.equal(before, embed.weight)


# ------------------------------------------------------------------ inverting flows, densities on a grid
def test_planar_inverse_recovers_z_and_the_log_determinant():
    torch.manual_seed(0)
    for seed in range(5):
        layer = perturbed(Planar(2).double(), std=1.5, seed=seed)
        z = 2 * torch.randn(200, 2, dtype=torch.float64)
        y, logdet = layer(z)
        z_back, logdet_inv = planar_inverse(layer, y)
        assert torch.allclose(z_back, z, atol=1e-10)
        assert torch.allclose(logdet_inv, -logdet, atol=1e-10)


def test_planar_inverse_near_the_invertibility_boundary():
    # w^T u far below -1: u_hat pushes w^T u_hat to just above -1, where g'(a) nearly vanishes
    layer = Planar(2).double()
    with torch.no_grad():
        layer.params.theta.copy_(torch.tensor([-4.0, -4.0, 1.0, 1.0, 0.3], dtype=torch.float64))
    z = torch.randn(500, 2, dtype=torch.float64)
    y, _ = layer(z)
    assert torch.allclose(planar_inverse(layer, y)[0], z, atol=1e-7)


def test_planar_inverse_rejects_amortized_layers():
    with pytest.raises(ValueError, match="static Planar"):
        planar_inverse(Planar(2, context_dim=2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="static"):
        flow_inverse(Planar(2, context_dim=2), torch.zeros(3, 2))


@pytest.mark.parametrize("name", ["planar", "radial", "nice"])
def test_flow_densities_integrate_to_one_on_a_grid(name):
    torch.manual_seed(0)
    flow = perturbed(build(name, 3).double(), std=0.3)
    grid = Grid2D(9.0, 500)
    assert float(grid.integrate(log_density(flow, grid.points).exp())) == pytest.approx(1.0, abs=5e-3)


def test_grid_layout_and_kl_of_two_gaussians():
    grid = Grid2D(6.0, 400)
    assert grid.points.shape == (400 * 400, 2)
    image = grid.reshape(grid.points[:, 1])
    assert torch.all(image[:, 0] == grid.y) and torch.all(grid.reshape(grid.points[:, 0])[0] == grid.x)
    log_q = -0.5 * (grid.points**2).sum(1)
    log_p = -0.5 * ((grid.points - torch.tensor([1.0, 0.0], dtype=torch.float64)) ** 2).sum(1)
    assert float(grid.kl(log_q, log_p)) == pytest.approx(0.5, abs=1e-4)  # ||m||^2 / 2
    assert float(grid.integrate(grid.log_normalize(log_q).exp())) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="n must be"):
        Grid2D(4.0, 1)
    with pytest.raises(ValueError, match="shape"):
        grid.reshape(torch.zeros(3))


def test_plotting_helpers_draw_and_label():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4)
    grid = Grid2D(4.0, 50)
    flow = Sequential(Planar(2), Radial(2))
    assert plot_energy(axes[0], U1, grid, title="U1") is axes[0]
    plot_flow_density(axes[1], flow, grid, title="q")
    plot_density(axes[2], grid, -BOXED["U3"](grid.points))
    plot_samples(axes[3], torch.randn(100, 2), title="samples")
    for ax in axes:
        assert ax.get_xlabel() == "$z_1$" and ax.get_ylabel() == "$z_2$"
    assert axes[0].get_title() == "U1" and len(axes[1].images) == 1
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_samples(axes[3], torch.randn(10, 3))
    plt.close(fig)


# ------------------------------------------------------------------ the Figure 3 command
def flowlib(*args):
    return subprocess.run([sys.executable, "-m", "flowlib", *map(str, args)], capture_output=True, text=True,
                          env=os.environ.copy(), cwd=REPO)


def test_figure3_command_writes_results_that_reload(tmp_path):
    out = tmp_path / "f3"
    r = flowlib("figure3", "--out", out, "--steps", "5", "--K", "2", "--targets", "U1", "U3",
                "--eval-samples", "2000", "--restarts", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("python -m flowlib figure3 --out")
    assert {"git_commit", "machine", "total_seconds", "config", "load_average_start"} <= set(results)
    assert results["config"]["steps"] == 5 and results["machine"]["torch_threads"] == 1
    for fit in results["fits"]:  # the kept restart is the one with the lowest free energy
        kls = fit["restart_kls"]
        assert len(kls) == 3 and fit["chosen_restart"] == min(range(3), key=kls.__getitem__)
        assert len(fit["curve"]["step"]) == len(fit["curve"]["free_energy"]) == len(fit["curve"]["beta"])
    assert [f["key"] for f in results["fits"]] == [
        "planar/K=2/U1", "planar/K=2/U3", "radial/K=2/U1", "radial/K=2/U3", "nice/K=2/U1", "nice/K=2/U3"]
    results2, flows = load(out)
    fit = results2["fits"][2]
    kl, se = kl_estimate(flows[fit["key"]], BOXED["U1"], fit["log_Z"], n=2000,
                         generator=torch.Generator().manual_seed(fit["eval_seed"]))
    assert kl == pytest.approx(fit["kl"], abs=1e-5) and se == pytest.approx(fit["kl_se"], abs=1e-5)
    assert set(kl_table(results2, "nice")) == {"U1", "U3"}


def test_figure3_command_refuses_bad_arguments(tmp_path):
    r = flowlib("figure3", "--out", tmp_path / "x", "--flows", "sylvester")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = flowlib("figure3", "--out", tmp_path / "x", "--K", "0")
    assert r.returncode == 2 and "integer >= 1" in r.stderr
    with pytest.raises(ValueError, match="unknown flow"):
        build("iaf", 2)
    with pytest.raises(FileNotFoundError, match="results.json"):
        load(tmp_path)
