"""The converged table's protocol: a validation estimate with fixed noise, patience counted after
the KL warm-up, and an importance-sampled evaluation that saves per-image values and resumes."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch

from flowlib.model.vae import VAE
from flowlib.training import loop as train_module

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("FLOWLIB_DATA", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "binarized_mnist").is_dir(),
    reason=f"binarized MNIST not found under {DATA}: set FLOWLIB_DATA or put the data at ../shared/data",
)


def _config(out, **over):
    config = {"data": "binarized-mnist", "flow": "planar", "flow_length": 1, "epochs": 1, "out": str(out),
              "subset": 200, "seed": 0, "amortized": True, "latent_dim": 4, "hidden": [16], "arch": "mlp",
              "sylvester_variant": "orthogonal", "batch_size": 50, "lr": 1e-3, "optimizer": "adam",
              "warmup": 1, "patience": 5, "binarize": "static", "device": "cpu", "resume": False}
    config.update(over)
    return config


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("FLOWLIB_DATA", str(DATA))
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_seeded_validation_uses_the_same_noise_and_leaves_the_caller_stream_alone():
    torch.manual_seed(0)
    model, x = VAE(20, 3, (8,)), torch.bernoulli(torch.full((30, 20), 0.4))
    state = torch.get_rng_state()
    a = train_module.mean_elbo(model, x, 7, "cpu", noise_seed=5, per_image=True)
    assert torch.equal(torch.get_rng_state(), state)  # the training stream did not move
    b = train_module.mean_elbo(model, x, 7, "cpu", noise_seed=5, per_image=True)
    assert a["elbo"] == b["elbo"] and torch.equal(a["elbo_per_image"], b["elbo_per_image"])
    assert a["elbo_per_image"].shape == (30,)
    assert a["elbo"] != train_module.mean_elbo(model, x, 7, "cpu", noise_seed=6)["elbo"]
    # Without a seed it draws from (and moves) the global stream, as before.
    train_module.mean_elbo(model, x, 7, "cpu")
    assert not torch.equal(torch.get_rng_state(), state)


@needs_data
def test_patience_counts_only_epochs_after_the_warm_up(tmp_path, monkeypatch):
    calls = {"n": 0}

    def worse_every_epoch(model, x, batch_size, device, noise_seed=None, per_image=False):
        calls["n"] += 1
        return {"elbo": -100.0 - calls["n"], "reconstruction": -90.0, "kl": 10.0}

    monkeypatch.setattr(train_module, "mean_elbo", worse_every_epoch)
    metrics = train_module.train(_config(tmp_path, epochs=10, warmup=3, patience=2), progress=False)
    # Best at epoch 1; epochs 2-3 are warm-up (not counted); 4 and 5 exhaust the patience of 2.
    assert metrics["best_epoch"] == 1 and len(metrics["epochs"]) == 5
    assert metrics["status"].startswith("early stop")


@needs_data
def test_evaluation_saves_per_image_values_and_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train_module.train(_config(run), progress=False)
    straight = train_module.evaluate(run, 8, 60, batch_size=20, progress=False)
    first = np.load(run / train_module.PER_IMAGE_FILE)
    assert first["log_px"].shape == first["elbo"].shape == first["index"].shape == (60,)
    assert np.array_equal(first["index"], train_module.test_indices(straight["config"], 60).numpy())
    assert -first["log_px"].mean() == pytest.approx(straight["test_nll"])
    # A smaller subset is the head of the same permutation: every row and seed share images.
    assert np.array_equal(train_module.test_indices(straight["config"], 25).numpy(), first["index"][:25])

    # Interrupt the evaluation after two batches, with a partial file saved after every batch.
    original, calls = VAE.log_likelihood, {"n": 0}

    def breaks_on_the_third_batch(self, x, k=5000, max_rows=50_000):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, x, k, max_rows)

    monkeypatch.setattr(VAE, "log_likelihood", breaks_on_the_third_batch)
    (run / train_module.PER_IMAGE_FILE).unlink()
    with pytest.raises(KeyboardInterrupt):
        train_module.evaluate(run, 8, 60, batch_size=20, progress=False, save_every=0)
    assert list(run.glob(".*partial.npz")) and not (run / train_module.PER_IMAGE_FILE).exists()
    monkeypatch.setattr(VAE, "log_likelihood", original)
    resumed = train_module.evaluate(run, 8, 60, batch_size=20, progress=False)
    assert resumed["test_nll"] == straight["test_nll"]
    assert np.array_equal(np.load(run / train_module.PER_IMAGE_FILE)["log_px"], first["log_px"])
    assert not list(run.glob(".*partial.npz"))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_nll_examples"] == 60
    # the code that trained and the code that evaluated are both recorded
    from flowlib.training.records import git_commit

    assert saved["code"] == [{"from_epoch": 1, "git_commit": git_commit(), "device": "cpu",
                              "machine": saved["machine"]}]
    assert saved["test_nll_git_commit"] == git_commit()
