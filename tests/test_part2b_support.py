"""Support code of the IAF, Sylvester and PCP-Map chapters: the Jacobian / MADE pictures and the
2-D fits command (`python -m flowlib.experiments.fits2d`)."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flowlib.book.plotting_jacobian import plot_made_graph, plot_mask, plot_matrix  # noqa: E402
from flowlib.experiments import fits2d  # noqa: E402
from flowlib.flows import MADE  # noqa: E402


def test_plot_matrix_greys_out_exact_zeros_only():
    fig, ax = plt.subplots()
    M = torch.tensor([[1.0, 0.0], [1e-30, -2.0]])
    plot_matrix(ax, M, title="t", tick_labels=["a", "b"])
    data = ax.images[0].get_array()
    assert data.mask.tolist() == [[False, True], [False, False]]  # 0 is masked (grey), 1e-30 is not
    assert ax.images[0].get_clim() == (-2.0, 2.0)                 # symmetric about 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)


def test_plotting_rejects_bad_input():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2-D torch.Tensor"):
        plot_matrix(ax, torch.ones(3))
    with pytest.raises(ValueError, match="tick_labels"):
        plot_matrix(ax, torch.ones(2, 3), tick_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="degrees"):
        plot_mask(ax, torch.ones(2, 3), col_degrees=[1, 2])
    with pytest.raises(ValueError, match="MADE"):
        plot_made_graph(ax, torch.nn.Linear(2, 2))
    plt.close(fig)


def test_made_graph_draws_one_line_per_allowed_connection():
    made = MADE(3, hidden=6, n_layers=2, n_outputs=2)
    fig, ax = plt.subplots()
    plot_made_graph(ax, made)
    masks = [layer.mask for layer in made.hidden_layers] + [made.output_layer.mask]
    n_edges = sum(int(m.sum()) for m in masks)
    assert len(ax.lines) == n_edges
    assert len(ax.texts) == 3 + 6 + 6 + 2 * 3  # one label per unit
    plt.close(fig)


def test_fits2d_runs_writes_and_loads(tmp_path):
    out = tmp_path / "fits"
    fits2d.main(["--out", str(out), "--flows", "iaf-4", "pcpmap", "--targets", "U1", "--steps", "3",
                 "--eval-samples", "200", "--no-progress"])
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("python -m flowlib.experiments.fits2d --out")
    assert [f["key"] for f in results["fits"]] == ["iaf-4/U1", "pcpmap/U1"]
    for fit in results["fits"]:
        assert fit["parameters"] == fits2d.n_parameters(fits2d.build(fit["flow"]))
        assert fit["kl"] == pytest.approx(fit["free_energy"] + fit["log_Z"])  # U1 is a proper density
    loaded, flows = fits2d.load(out)
    assert loaded == results
    z = torch.randn(5, 2)
    for key, flow in flows.items():
        assert torch.isfinite(flow(z)[0]).all(), key
    # the loaded flow is the fitted one, not a fresh initialisation
    fresh = fits2d.build("pcpmap")
    assert not torch.equal(flows["pcpmap/U1"].w1, fresh.w1) or not torch.equal(flows["pcpmap/U1"].a, fresh.a)


def test_fits2d_rejects_bad_names_and_missing_results(tmp_path):
    with pytest.raises(ValueError, match="unknown flow"):
        fits2d.build("glow")
    with pytest.raises(ValueError, match="unknown targets"):
        fits2d.run(tmp_path, flows=["iaf-4"], target_names=["U9"], steps=1)
    with pytest.raises(FileNotFoundError, match="python -m flowlib.experiments.fits2d"):
        fits2d.load(tmp_path / "nothing")


def test_iaf_stacks_start_with_a_scale_and_reverse_between_steps():
    flow = fits2d.build("iaf-4")
    names = [type(f).__name__ for f in flow.flows]
    assert names == ["Scale", "IAF", "Reverse", "IAF", "Reverse", "IAF", "Reverse", "IAF"]
