"""The converged table's statistics (flowlib.experiments.mnist_report) on small synthetic records whose
numbers are worked out by hand in the comments, and the table command that writes them into table.json."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from flowlib.experiments import mnist_report as report
from flowlib.experiments import tables

REPO = pathlib.Path(__file__).resolve().parents[1]


def per(index, log_px, elbo=None):
    log_px = np.asarray(log_px, dtype=np.float64)
    elbo = log_px - 5.0 if elbo is None else np.asarray(elbo, dtype=np.float64)
    return report.PerImage(index=np.asarray(index, dtype=np.int64), log_px=log_px, elbo=elbo)


def record(seed, seconds=(1800.0, 1800.0), stopped=True, images=4, nll=None):
    return {"row": "r", "label": "r", "seed": seed,
            "epochs": [{"seconds": s, "valid_elbo": -1.0} for s in seconds],
            "best_epoch": 1, "stopped_early": stopped, "test_images": images, "test_nll_examples": images,
            "importance_samples": 7, "test_nll_importance_samples": 7, "test_nll": nll,
            "test_neg_elbo_same_images": None if nll is None else nll + 5, "test_neg_elbo": 1.0,
            "test_kl": 1.0,
            "test_reconstruction": 0.0, "command": f"cmd {seed}", "git_commit": "abc", "machine": {"cpus": 2}}


# Four test images. The baseline's seed 0 is evaluated on all four, its seeds 1 and 2 on the subset {1, 3}.
BASE = {0: per([0, 1, 2, 3], [-10, -20, -30, -40]),
        1: per([1, 3], [-22, -44]),
        2: per([3, 1], [-36, -18])}  # order in the file does not matter
ROW = {0: per([0, 1, 2, 3], [-9, -18, -30, -39]),
       1: per([1, 3], [-19, -41])}
SUBSET = np.array([1, 3])


def test_nll_and_its_standard_error_over_images():
    out = report.nll(BASE[0])
    # mean of 10, 20, 30, 40 = 25; sample s.d. sqrt(500 / 3) = 12.9099..., over sqrt(4)
    assert out["nll"] == 25.0 and out["images"] == 4 and out["neg_elbo"] == 30.0
    assert out["se"] == pytest.approx(math.sqrt(500 / 3) / 2, rel=1e-12)
    assert report.nll(BASE[0], SUBSET)["nll"] == 30.0  # (20 + 40) / 2


def test_paired_gain_uses_the_differences_image_by_image():
    out = report.paired_gain(BASE[0], ROW[0])
    # differences log p_row - log p_base: 1, 2, 0, 1 -> mean 1; s.d. sqrt(2 / 3), over sqrt(4)
    assert out["gain"] == 1.0 and out["images"] == 4
    assert out["paired_se"] == pytest.approx(math.sqrt(2 / 3) / 2, rel=1e-12)
    # unpaired, each row's standard error alone is about 6.3 nats: pairing is what resolves a 1-nat gain
    assert report.nll(ROW[0])["se"] > 10 * out["paired_se"]
    # on the images the two share when one was evaluated on a subset, {1, 3}: differences
    # -18 - (-18) = 0 and -39 - (-36) = -3 -> mean -1.5; s.d. 3 / sqrt(2), over sqrt(2) -> 1.5
    out = report.paired_gain(BASE[2], ROW[0])
    assert out["images"] == 2 and out["gain"] == -1.5 and out["paired_se"] == pytest.approx(1.5, rel=1e-12)
    with pytest.raises(ValueError, match="share no test image"):
        report.paired_gain(per([0], [-1.0]), per([1], [-1.0]))


def test_seed_spread_on_the_common_subset():
    out = report.seed_spread(BASE, SUBSET)
    # seed 0 on {1, 3}: 30 (from its full evaluation); seed 1: 33; seed 2: 27 -> mean 30, s.d. 3
    assert out["nll"] == {0: 30.0, 1: 33.0, 2: 27.0} and out["mean"] == 30.0 and out["images"] == 2
    assert out["sd"] == pytest.approx(3.0, rel=1e-12)
    assert report.seed_spread({0: BASE[0]}, SUBSET)["sd"] is None
    with pytest.raises(ValueError, match="1 of the 2 images were not evaluated"):
        report.seed_spread({1: BASE[1]}, [1, 2])


def test_row_statistics_with_a_baseline_and_a_row_without_a_converged_seed():
    base_records = [record(0), record(1), record(2, seconds=(900.0,))]
    out = report.row_statistics(base_records, BASE, None, SUBSET)
    assert out["hours"] == {0: 1.0, 1: 1.0, 2: 0.25} and out["all_converged"]
    assert out["headline"]["seed"] == 0 and out["headline"]["nll"] == 25.0 and out["headline"]["converged"]
    assert "gain" not in out and "gain" not in out["subset"]  # the baseline has no gain over itself

    out = report.row_statistics([record(0), record(1, stopped=False)], ROW, (base_records, BASE), SUBSET)
    assert not out["all_converged"] and out["headline"]["converged"]
    assert out["gain"] == {"gain": 1.0, "paired_se": pytest.approx(math.sqrt(2 / 3) / 2), "images": 4,
                           "base_seed": 0}
    # the row's seeds on {1, 3}: seed 0 (18 + 39) / 2 = 28.5, seed 1 (19 + 41) / 2 = 30
    sub = out["subset"]
    assert sub["nll"] == {0: 28.5, 1: 30.0} and sub["mean"] == 29.25
    assert sub["sd"] == pytest.approx(1.5 / math.sqrt(2), rel=1e-12)
    # gain of the means 30 - 29.25; its standard error sqrt(1.125 / 2 + 9 / 3) from the seed spreads
    assert sub["gain"] == 0.75 and sub["gain_se"] == pytest.approx(math.sqrt(3.5625), rel=1e-12)

    # a row that has trained but not converged nor been evaluated: only its hours
    out = report.row_statistics([record(0, stopped=False)], {}, (base_records, BASE), SUBSET)
    assert out == {"hours": {0: 1.0}, "all_converged": False}


def test_common_subset_is_the_head_of_the_evaluation_permutation():
    full = per(np.arange(10), np.zeros(10))
    assert np.array_equal(report.common_subset([full], 4), report.subset_images(10, 4))
    assert np.array_equal(report.common_subset([per([7, 2], [0, 0])], 2), [7, 2])
    assert report.common_subset([per([7, 2], [0, 0])], 3) is None
    assert report.common_subset([full], None) is None
    # the committed files agree: a 2,000-image evaluation is the head of the permutation of the 10,000
    path = REPO / "results" / "mnist" / "none" / "seed1_per_image.npz"
    if path.is_file():
        assert np.array_equal(report.load_per_image(path)["index"], report.subset_images(10_000, 2000))


def test_load_per_image_checks_its_file(tmp_path):
    assert report.load_per_image(tmp_path / "missing.npz") is None
    np.savez(tmp_path / "bad.npz", index=np.array([0, 0]), log_px=np.zeros(2), elbo=np.zeros(2))
    with pytest.raises(ValueError, match="one distinct entry per image"):
        report.load_per_image(tmp_path / "bad.npz")


def test_table_writes_the_statistics_and_the_provenance(tmp_path, capsys):
    folder = tmp_path / "exp"
    (folder / "rows").mkdir(parents=True)
    protocol = {"train": {}, "evaluate": {"importance_samples": 7, "subset": 2}, "seeds": [0],
                "runs": str(tmp_path / "runs"), "results": str(tmp_path / "results")}
    (folder / "protocol.json").write_text(json.dumps(protocol))
    for name in ("none", "flow", "late"):
        (folder / "rows" / f"{name}.json").write_text(json.dumps({"flow": "none", "label": name}))
    sub = report.subset_images(4, 2)
    log_px = {"none": np.array([-10.0, -20, -30, -40]), "flow": np.array([-9.0, -18, -30, -39])}
    for name, values in log_px.items():
        out = tmp_path / "results" / name
        out.mkdir(parents=True)
        np.savez(out / "seed0_per_image.npz", index=np.arange(4), log_px=values, elbo=values - 5)
        (out / "seed0.json").write_text(json.dumps(record(0, nll=float(-values.mean()))))
    np.savez(tmp_path / "results" / "none" / "seed1_per_image.npz", index=sub, log_px=log_px["none"][sub] - 1,
             elbo=log_px["none"][sub] - 6)
    (tmp_path / "results" / "none" / "seed1.json").write_text(json.dumps(record(1, images=2, nll=99.0)))
    (tmp_path / "results" / "late").mkdir()
    (tmp_path / "results" / "late" / "seed0.json").write_text(json.dumps(record(0, stopped=False, nll=50.0)))
    assert tables.main(["table", str(folder)]) == 0
    capsys.readouterr()
    table = {e["row"]: e for e in json.loads((tmp_path / "results" / "table.json").read_text())}
    none, flow, late = table["none"], table["flow"], table["late"]
    # issue 16, scope 4: per row and seed
    for key in ("seeds", "epochs", "best_epoch", "stopped_early", "test_images", "importance_samples",
                "command", "git_commit", "machine"):
        assert len(none[key]) == 2, key
    assert none["test_images"] == [4, 2] and none["command"] == ["cmd 0", "cmd 1"]
    # the NLL is averaged only over the seeds evaluated on the most images (seed 0, 25 nats), not with
    # seed 1's 99 on two other images
    assert none["test_nll_seeds"] == [0] and none["test_nll"] == 25.0 and none["test_nll_std"] is None
    # the statistics, seeds as JSON keys (strings)
    assert flow["statistics"]["gain"]["gain"] == 1.0
    spread = none["statistics"]["subset"]
    assert spread["nll"]["1"] == pytest.approx(spread["nll"]["0"] + 1) and spread["images"] == 2
    assert late["statistics"] == {"hours": {"0": 1.0}, "all_converged": False}


def test_hours_by_device_follows_the_stretches_of_a_resumed_run():
    epochs = [{"epoch": n, "seconds": s} for n, s in enumerate((360.0, 360.0, 720.0, 1800.0), start=1)]
    # epochs 1-2 on a GPU, 3 on a GPU again (resumed there), 4 on the CPU
    code = [{"from_epoch": 1, "device": "cuda"}, {"from_epoch": 3, "device": "cuda:0"},
            {"from_epoch": 4, "device": "cpu"}]
    out = report.hours_by_device({"epochs": epochs, "code": code})
    assert out == {"cuda": pytest.approx(0.4, rel=1e-12), "cpu": 0.5}
    assert sum(out.values()) == pytest.approx(report.training_hours({"epochs": epochs}), rel=1e-12)
    # stretches recorded before the device was: the CPU, the only device then
    old = {"epochs": epochs, "code": [{"from_epoch": 1}]}
    assert report.hours_by_device(old) == {"cpu": pytest.approx(0.9)}
    assert report.hours_by_device({"epochs": epochs}) == {"cpu": pytest.approx(0.9)}
