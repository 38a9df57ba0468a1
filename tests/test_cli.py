"""The training and evaluation command line: contract, reproducibility, resume, failures."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from flowlib.training import loop as train_module
from flowlib.training.checkpoint import load_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA = pathlib.Path(os.environ.get("FLOWLIB_DATA", SHARED))
needs_data = pytest.mark.skipif(
    not (DATA / "binarized_mnist").is_dir(),
    reason=f"binarized MNIST not found under {DATA}: set FLOWLIB_DATA or put the data at ../shared/data",
)
SMALL = [
    "--data",
    "binarized-mnist",
    "--subset",
    "300",
    "--latent-dim",
    "4",
    "--hidden",
    "32",
    "--batch-size",
    "50",
    "--warmup",
    "1",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("FLOWLIB_DATA", str(DATA))
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def flowlib(*args):
    return subprocess.run(
        [sys.executable, "-m", "flowlib", *map(str, args)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO,
    )


def epochs_without_time(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return [{k: v for k, v in e.items() if k != "seconds"} for e in metrics["epochs"]], metrics


@needs_data
def test_train_is_reproducible_and_evaluate_gives_a_tighter_bound(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        r = flowlib(
            "train",
            *SMALL,
            "--flow",
            "iaf",
            "--flow-length",
            "2",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--out",
            run,
        )
        assert r.returncode == 0, r.stderr
    (ea, ma), (eb, mb) = epochs_without_time(runs[0]), epochs_without_time(runs[1])
    assert ea == eb and ma["test_neg_elbo"] == mb["test_neg_elbo"]
    assert ma["config"]["flow"] == "iaf" and ma["config"]["flow_length"] == 2 and ma["config"]["seed"] == 3
    assert len(ea) == 2 and all("seconds" in e for e in ma["epochs"])
    checkpoint = load_checkpoint(runs[0] / "model.pt")  # weights_only=True
    assert set(checkpoint) == {"model", "config"}
    assert not [p for p in runs[0].iterdir() if p.name.endswith(".tmp")]

    r = flowlib("evaluate", runs[0], "--importance-samples", "200", "--subset", "100", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "test NLL" in r.stdout
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert m["test_nll"] < m["test_neg_elbo_same_images"]
    assert m["test_nll_stderr"] > 0 and m["test_nll_importance_samples"] == 200


@needs_data
def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert (
        flowlib(
            "train", *SMALL, "--flow", "planar", "--flow-length", "2", "--epochs", "2", "--out", straight
        ).returncode
        == 0
    )
    assert (
        flowlib(
            "train", *SMALL, "--flow", "planar", "--flow-length", "2", "--epochs", "1", "--out", resumed
        ).returncode
        == 0
    )
    r = flowlib(
        "train",
        *SMALL,
        "--flow",
        "planar",
        "--flow-length",
        "2",
        "--epochs",
        "2",
        "--out",
        resumed,
        "--resume",
    )
    assert r.returncode == 0, r.stderr
    assert epochs_without_time(straight)[0] == epochs_without_time(resumed)[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--flow", "maf"], "invalid choice: 'maf' (choose from"),
        (["--flow", "iaf", "--data", "cifar"], "invalid choice: 'cifar'"),
        (["--flow", "iaf", "--epochs", "0"], "expected an integer >= 1"),
        (["--flow", "iaf", "--latent-dim", "0"], "expected an integer >= 1"),
        (["--flow", "iaf", "--flow-length", "0"], "--flow-length must be >= 1"),
        (["--flow", "iaf", "--subset", "60000"], "--subset must be <= 50000"),
        (["--flow", "iaf", "--lr", "-1"], "expected a positive number"),
        (
            ["--flow", "iaf", "--device", "cuda:0"] if not torch.cuda.is_available() else ["--flow", "zz"],
            "cuda",
        ),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    base = {"--data": "binarized-mnist", "--epochs": "1"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    r = flowlib("train", *[x for kv in base.items() for x in kv], "--out", out)
    assert r.returncode == 2
    assert message in r.stderr
    assert not out.exists()


def test_evaluate_a_missing_run_exits_2(tmp_path):
    r = flowlib("evaluate", tmp_path / "nothing")
    assert r.returncode == 2 and "metrics.json" in r.stderr


@needs_data
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = train_module.VAE.elbo

    def elbo_turning_nan(self, x):
        e = original(self, x)
        calls["n"] += 1
        if self.training and calls["n"] > 8:  # 6 batches an epoch: fails during epoch 2
            e.reconstruction = e.reconstruction * float("nan")
        return e

    monkeypatch.setattr(train_module.VAE, "elbo", elbo_turning_nan)
    config = {
        "data": "binarized-mnist",
        "flow": "planar",
        "flow_length": 1,
        "epochs": 3,
        "out": str(tmp_path),
        "subset": 300,
        "seed": 0,
        "amortized": True,
        "latent_dim": 4,
        "hidden": [32],
        "arch": "mlp",
        "sylvester_variant": "orthogonal",
        "batch_size": 50,
        "lr": 1e-3,
        "optimizer": "adam",
        "warmup": 1,
        "patience": 5,
        "binarize": "dynamic",
        "device": "cpu",
        "resume": False,
    }
    with pytest.raises(train_module.TrainingDiverged, match="non-finite loss"):
        train_module.train(config, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "non-finite" in metrics["status"] and len(metrics["epochs"]) == 1
    state = load_checkpoint(tmp_path / "model.pt")["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@needs_data
def test_evaluate_a_broken_run_folder_exits_2_naming_the_problem(tmp_path):
    run = tmp_path / "run"
    r = flowlib("train", *SMALL, "--flow", "none", "--flow-length", "0", "--epochs", "1", "--out", run)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    good_model = (run / "model.pt").read_bytes()
    # a metrics.json whose config lacks a key
    del metrics["config"]["latent_dim"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    r = flowlib("evaluate", run, "--importance-samples", "2", "--subset", "5", "--quiet")
    assert r.returncode == 2 and "lacks ['latent_dim']" in r.stderr and "Traceback" not in r.stderr
    # not JSON
    (run / "metrics.json").write_text("{")
    r = flowlib("evaluate", run, "--importance-samples", "2", "--subset", "5", "--quiet")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    # a corrupt checkpoint
    metrics["config"]["latent_dim"] = 4
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "model.pt").write_bytes(good_model[: len(good_model) // 2])
    before = (run / "metrics.json").read_text()
    r = flowlib("evaluate", run, "--importance-samples", "2", "--subset", "5", "--quiet")
    assert r.returncode == 2 and "not a readable flowlib checkpoint" in r.stderr
    assert "Traceback" not in r.stderr
    assert (run / "metrics.json").read_text() == before  # nothing written
