"""Experiment tables: row files, the shared protocol, running a row, assembling the table."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from flowlib.experiments import tables as experiments
from flowlib.flows import Sylvester
from flowlib.flows.registry import build
from flowlib.training import records as provenance
from flowlib.training.loop import build_model

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("FLOWLIB_DATA", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "binarized_mnist").is_dir(),
    reason=f"binarized MNIST not found under {DATA}: set FLOWLIB_DATA or put the data at ../shared/data",
)


@pytest.mark.parametrize("name", ["mnist", "mnist-50", "fashion-mnist"])
def test_every_mnist_row_builds_the_model_it_names(name):
    protocol, rows = experiments.load_experiment(REPO / "experiments" / name)
    assert {"none", "iaf-2", "pcpmap-1"} <= set(rows)
    for name, row in rows.items():
        config = experiments.row_config(protocol, row, 0, pathlib.Path("unused"))
        model = build_model(config)
        assert model.z_dim == protocol["train"]["latent_dim"]
        assert (model.flow is None) == (row["flow"] == "none"), name
        # Rows differ from each other only in the flow: the protocol keys are untouched.
        for key, value in protocol["train"].items():
            assert config[key] == value, (name, key)


def test_sylvester_size_options_reach_the_layers():
    flow = build("sylvester", 6, length=2, variant="orthogonal", M=3)
    assert all(isinstance(f, Sylvester) and f.M == 3 for f in flow.flows)
    flow = build("sylvester", 6, length=2, variant="householder", n_reflections=2)
    assert all(f.n_reflections == 2 for f in flow.flows)


def _write(folder: pathlib.Path, protocol: dict, rows: dict) -> pathlib.Path:
    (folder / "rows").mkdir(parents=True)
    (folder / "protocol.json").write_text(json.dumps(protocol))
    for name, row in rows.items():
        (folder / "rows" / f"{name}.json").write_text(json.dumps(row))
    return folder


def _tiny_protocol(tmp_path):
    return {
        "train": {"data": "binarized-mnist", "latent_dim": 2, "hidden": [16], "arch": "mlp", "batch_size": 50,
                  "optimizer": "adam", "lr": 1e-3, "warmup": 1, "epochs": 1, "patience": 5,
                  "binarize": "static", "subset": 100},
        "evaluate": {"importance_samples": 4, "subset": 10, "batch_size": 10},
        "seeds": [0],
        "runs": str(tmp_path / "runs"),
        "results": str(tmp_path / "results"),
    }


def test_bad_experiment_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="protocol.json"):
        experiments.load_experiment(tmp_path)
    protocol = _tiny_protocol(tmp_path)
    del protocol["seeds"]
    folder = _write(tmp_path / "a", protocol, {"x": {"flow": "none", "label": "x"}})
    with pytest.raises(ValueError, match="missing the key 'seeds'"):
        experiments.load_experiment(folder)
    folder = _write(tmp_path / "b", _tiny_protocol(tmp_path), {"x": {"flow": "none", "label": "x", "lr": 1}})
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
        experiments.load_experiment(folder)
    with pytest.raises(SystemExit):
        experiments.main(["run", str(folder), "--rows", "nope"])


@needs_data
def test_run_row_records_results_and_the_table_reads_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWLIB_DATA", str(DATA))
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "cache"))
    folder = _write(tmp_path / "exp", _tiny_protocol(tmp_path), {
        "none": {"flow": "none", "label": "no flow"},
        "planar-2": {"flow": "planar", "flow_length": 2, "label": "planar"},
    })
    assert experiments.main(["run", str(folder), "--rows", "none", "--quiet", "--train-only"]) == 0
    assert (tmp_path / "runs" / "none" / "seed0" / "model.pt").is_file()
    assert not (tmp_path / "results" / "none").exists()  # trained, not evaluated nor recorded
    assert experiments.main(["run", str(folder), "--quiet"]) == 0
    for name in ("none", "planar-2"):
        record = json.loads((tmp_path / "results" / name / "seed0.json").read_text())
        assert record["command"].endswith(f"--rows {name} --seeds 0")
        # The commit is the one the process started from (cached), the same for every row it ran.
        assert record["git_commit"] == provenance.git_commit()
        assert record["test_nll_importance_samples"] == 4 and record["test_nll_examples"] == 10
        # The IS bound is at least as tight as the single-sample ELBO on the same images, up to noise.
        assert record["test_nll"] < record["test_neg_elbo_same_images"] + 5
        assert (tmp_path / "results" / name / "seed0_images.npz").is_file()
    capsys.readouterr()
    assert experiments.main(["table", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "| no flow |" in table and "| planar |" in table
    summary = json.loads((tmp_path / "results" / "table.json").read_text())
    assert [e["row"] for e in summary] == ["none", "planar-2"]
    # A second run finds the finished rows and does not train again.
    mtime = (tmp_path / "runs" / "none" / "seed0" / "model.pt").stat().st_mtime_ns
    assert experiments.main(["run", str(folder), "--rows", "none", "--quiet"]) == 0
    assert (tmp_path / "runs" / "none" / "seed0" / "model.pt").stat().st_mtime_ns == mtime


def test_protocol_order_sets_the_row_order(tmp_path):
    protocol = _tiny_protocol(tmp_path)
    rows = {"a": {"flow": "none", "label": "a"}, "b": {"flow": "none", "label": "b"},
            "c": {"flow": "none", "label": "c"}}
    folder = _write(tmp_path / "o", dict(protocol, order=["c", "a"]), rows)
    assert list(experiments.load_experiment(folder)[1]) == ["c", "a", "b"]
    folder = _write(tmp_path / "p", dict(protocol, order=["zz"]), rows)
    with pytest.raises(ValueError, match="'order' names rows without a file"):
        experiments.load_experiment(folder)
    assert experiments.format_table([]) == "(no results yet)"


def test_status_names_done_running_paused_and_left(tmp_path):
    protocol = dict(_tiny_protocol(tmp_path), row_seeds={"a": [0, 1]})
    folder = _write(tmp_path / "s", protocol, {"a": {"flow": "none", "label": "a"},
                                               "b": {"flow": "none", "label": "b"}})
    assert experiments.seeds_for(experiments.load_experiment(folder)[0], "a") == [0, 1]
    assert experiments.seeds_for(experiments.load_experiment(folder)[0], "b") == [0]
    run = tmp_path / "runs" / "a" / "seed1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"epochs": [{}, {}], "best_epoch": 2, "status": "running"}))
    (tmp_path / "results" / "a").mkdir(parents=True)
    record = {"test_nll_subset": 10, "test_nll_importance_samples": 4, "config": {"epochs": 1},
              "epochs": [{}], "best_epoch": 1, "stopped_early": False, "test_nll_examples": 10}
    (tmp_path / "results" / "a" / "seed0.json").write_text(json.dumps(record))
    report = experiments.status(folder)
    assert report.startswith("1 done, 1 running, 0 paused, 1 left")
    assert "| a | 0 | done (cap reached) | 1 | 1 | 10 |" in report
    assert "| a | 1 | running | 2 | 2 |" in report and "| b | 0 | left |" in report
    # An hour later, the unfinished run is paused.
    import time

    assert "| a | 1 | paused |" in experiments.status(folder, now=time.time() + 7200)
    # A record made under another protocol (fewer epochs) is not done under this one.
    record["config"]["epochs"] = 50
    (tmp_path / "results" / "a" / "seed0.json").write_text(json.dumps(record))
    assert "| a | 0 | left |" in experiments.status(folder)


def test_full_test_seeds_and_bad_evaluate_blocks(tmp_path):
    protocol = _tiny_protocol(tmp_path)
    protocol["evaluate"]["full_test_seeds"] = [0]
    folder = _write(tmp_path / "f", protocol, {"a": {"flow": "none", "label": "a"}})
    loaded = experiments.load_experiment(folder)[0]
    assert experiments.evaluation_subset(loaded, 0) is None and experiments.evaluation_subset(loaded, 1) == 10
    protocol["evaluate"]["full_test_seeds"] = 0
    folder = _write(tmp_path / "g", protocol, {"a": {"flow": "none", "label": "a"}})
    with pytest.raises(ValueError, match="full_test_seeds"):
        experiments.load_experiment(folder)
    del protocol["evaluate"]["subset"]
    protocol["evaluate"]["full_test_seeds"] = [0]
    folder = _write(tmp_path / "h", protocol, {"a": {"flow": "none", "label": "a"}})
    with pytest.raises(ValueError, match="'subset'"):
        experiments.load_experiment(folder)


def test_runs_root_can_live_outside_the_checkout(tmp_path, monkeypatch):
    protocol = dict(_tiny_protocol(tmp_path), runs="runs/x")
    folder = _write(tmp_path / "r", protocol, {"a": {"flow": "none", "label": "a"}})
    monkeypatch.setenv("FLOWLIB_RUNS_ROOT", str(tmp_path / "elsewhere"))
    assert experiments.load_experiment(folder)[0]["runs"] == str(tmp_path / "elsewhere" / "runs" / "x")


def test_format_table_gives_each_seed_its_own_epochs_under_early_stopping():
    def entry(epochs, best):
        return {"label": "r", "test_nll": 89.0, "test_nll_std": None, "test_neg_elbo_same_images": 95.0,
                "test_neg_elbo_same_images_std": None, "test_kl": 24.0, "test_kl_std": None,
                "seeds": list(range(len(epochs))), "epochs": epochs, "best_epoch": best}

    stopped = experiments.format_table([entry([192, 137, 159], [162, 107, 129])]).splitlines()[-1]
    assert stopped.endswith("| 3 | 192 (162), 137 (107), 159 (129) |")
    fixed = experiments.format_table([entry([50, 50, 50], [50, 49, 49])]).splitlines()[-1]
    assert fixed.endswith("| 3 | 50 (50, 49, 49) |")


@needs_data
def test_run_device_option_is_recorded_and_bad_devices_are_refused(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("FLOWLIB_DATA", str(DATA))
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "cache"))
    rows = {"none": {"flow": "none", "label": "no flow"}}
    folder = _write(tmp_path / "exp", _tiny_protocol(tmp_path), rows)
    bad_devices = [("gpu0", "expected a torch device")]
    if not torch.cuda.is_available():
        bad_devices.append(("cuda", "names a CUDA device, but none is available"))
    for bad, says in bad_devices:
        with pytest.raises(SystemExit):
            experiments.main(["run", str(folder), "--quiet", "--device", bad])
        assert says in capsys.readouterr().err
        assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()  # nothing written
    assert experiments.main(["run", str(folder), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "results" / "none" / "seed0.json").read_text())
    assert record["command"].endswith("--rows none --seeds 0 --device cpu")
    assert record["config"]["device"] == "cpu"
