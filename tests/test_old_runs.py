"""A table started before a code change resumes after it: tests/fixtures/old_runs holds a tiny
experiment trained for one epoch by flowlib at commit dea8d3b (before the three-layer layout; see
tests/fixtures/make_old_runs.py). Today's code, through the command the background queues call
(``python -m flowlib.experiments run|table|status``), extends it to two epochs from its ``last.pt``,
evaluates it from its ``model.pt`` (loaded with weights_only=True) and assembles the table; a
resumed run equals one trained for two epochs without interruption."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "old_runs"
DATA = pathlib.Path(os.environ.get("FLOWLIB_DATA", REPO.parent / "shared" / "data"))
ROWS = ("none", "planar-2", "sylvester-orthogonal-2")
pytestmark = pytest.mark.skipif(
    not (DATA / "binarized_mnist").is_dir(),
    reason=f"binarized MNIST not found under {DATA}: set FLOWLIB_DATA or put the data at ../shared/data",
)


def _experiment(tmp_path: pathlib.Path, name: str, epochs: int, with_runs: bool) -> pathlib.Path:
    root = tmp_path / name
    shutil.copytree(FIXTURE / "exp", root / "exp")
    if with_runs:
        shutil.copytree(FIXTURE / "run_folders", root / "runs")
    protocol = json.loads((root / "exp" / "protocol.json").read_text())
    protocol["train"]["epochs"] = epochs
    protocol.update(runs=str(root / "runs"), results=str(root / "results"))
    (root / "exp" / "protocol.json").write_text(json.dumps(protocol))
    return root


def _flowlib(*args, cwd):
    env = dict(os.environ, FLOWLIB_DATA=str(DATA), PYTHONPATH=str(REPO))
    env.pop("FLOWLIB_RUNS_ROOT", None)
    done = subprocess.run([sys.executable, "-m", "flowlib.experiments", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_run_folder_written_before_the_change_resumes_and_evaluates(tmp_path):
    old = _experiment(tmp_path, "old", epochs=2, with_runs=True)
    fresh = _experiment(tmp_path, "fresh", epochs=2, with_runs=False)
    before = {n: json.loads((FIXTURE / "run_folders" / n / "seed0" / "metrics.json").read_text())
              for n in ROWS}
    assert all(m["code"][0]["git_commit"].startswith("dea8d3b") for m in before.values())

    _flowlib("run", str(old / "exp"), "--quiet", "--threads", "1", cwd=tmp_path)
    _flowlib("run", str(fresh / "exp"), "--quiet", "--threads", "1", "--train-only", cwd=tmp_path)
    for name in ROWS:
        resumed = json.loads((old / "runs" / name / "seed0" / "metrics.json").read_text())
        uninterrupted = json.loads((fresh / "runs" / name / "seed0" / "metrics.json").read_text())
        # The old epoch is kept as written; the second was trained by today's code from last.pt.
        assert resumed["epochs"][0] == before[name]["epochs"][0]
        assert [c["from_epoch"] for c in resumed["code"]] == [1, 2]
        assert resumed["code"][0] == before[name]["code"][0]
        assert len(resumed["epochs"]) == 2 and resumed["status"] == "completed"
        # Resuming restored the model, the optimiser and both random streams: the second epoch is
        # the one an uninterrupted run of today's code trains (same machine, one thread).
        for key in ("train_elbo", "valid_elbo", "valid_kl"):
            assert resumed["epochs"][1][key] == pytest.approx(uninterrupted["epochs"][1][key], rel=1e-6), (
                name, key)
        record = json.loads((old / "results" / name / "seed0.json").read_text())
        assert record["test_nll_importance_samples"] == 4 and record["test_nll_examples"] == 10
        assert record["config"]["flow"] == before[name]["config"]["flow"]
        assert (old / "results" / name / "seed0_images.npz").is_file()
    assert json.loads((old / "results" / "sylvester-orthogonal-2" / "seed0.json").read_text()
                      )["config"]["sylvester_M"] == 1
    table = _flowlib("table", str(old / "exp"), cwd=tmp_path)
    assert "| no flow |" in table and "| Sylvester orthogonal |" in table
    status = _flowlib("status", str(old / "exp"), cwd=tmp_path)
    assert status.startswith("3 done")


def test_an_old_model_evaluates_without_training(tmp_path):
    """The protocol's epochs unchanged: the old run is finished, and is only evaluated."""
    old = _experiment(tmp_path, "old", epochs=1, with_runs=True)
    model = old / "runs" / "planar-2" / "seed0" / "model.pt"
    mtime = model.stat().st_mtime_ns
    _flowlib("run", str(old / "exp"), "--rows", "planar-2", "--quiet", "--threads", "1", cwd=tmp_path)
    assert model.stat().st_mtime_ns == mtime
    metrics = json.loads((old / "runs" / "planar-2" / "seed0" / "metrics.json").read_text())
    assert len(metrics["code"]) == 1 and "test_nll" in metrics


@pytest.mark.parametrize("damage", ["metrics-key", "metrics-json", "model"])
def test_a_broken_run_folder_is_one_line_naming_the_file(tmp_path, damage):
    old = _experiment(tmp_path, "old", epochs=1, with_runs=True)
    run = old / "runs" / "planar-2" / "seed0"
    if damage == "metrics-key":
        metrics = json.loads((run / "metrics.json").read_text())
        del metrics["config"]["latent_dim"]
        (run / "metrics.json").write_text(json.dumps(metrics))
    elif damage == "metrics-json":
        (run / "metrics.json").write_text('{"config": ')
    else:
        (run / "model.pt").write_bytes(b"not a checkpoint")
    env = dict(os.environ, FLOWLIB_DATA=str(DATA), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "flowlib.experiments", "run", str(old / "exp"), "--rows",
                           "planar-2", "--quiet", "--threads", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("python -m flowlib.experiments: error: ")
    assert str(run / ("model.pt" if damage == "model" else "metrics.json")) in error
