"""The statistics of the converged MNIST table (chapter 10), from the per-image results files.

A row of ``experiments/mnist`` is evaluated by importance sampling on the full test set for its
``full_test_seeds`` and on a fixed subset (the head of one fixed permutation of the test set, the
same for every row) for its other seeds; each seed's ``seed<n>_per_image.npz`` holds the image
``index``, ``log_px`` and ``elbo`` of every image it was evaluated on. From these files:

- :func:`nll`: a test NLL and its standard error over images;
- :func:`paired_gain`: the NLL a row gains over another on the *same* images, with the standard
  error of the mean of the per-image differences (paired: the variation between images, which is
  most of each row's own standard error, cancels);
- :func:`seed_spread`: every seed's NLL on one common subset, their mean and standard deviation;
- :func:`training_hours`: the hours a run trained, from its recorded epoch times, and
  :func:`hours_by_device` the same per device (CPU, GPU) for runs resumed on another machine;
- :func:`row_statistics` / :func:`report`: all of these for every row of an experiment, as
  ``python -m flowlib.experiments table`` writes them into ``table.json``.

Numbers are in nats; standard deviations and errors use the unbiased variance (``ddof = 1``), as
:func:`flowlib.training.loop.evaluate` does for ``test_nll_stderr``.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

__all__ = ["PerImage", "load_per_image", "subset_images", "on_images", "nll", "paired_gain", "seed_spread",
           "training_hours", "hours_by_device", "converged", "row_statistics", "common_subset", "report"]


class PerImage(dict):
    """``{"index": int array, "log_px": float array, "elbo": float array}`` of one evaluated seed."""


def load_per_image(path) -> PerImage | None:
    """The per-image file at ``path`` (``None`` if there is none), checked for equal lengths and
    distinct indices."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    with np.load(path) as z:
        out = PerImage(index=z["index"].astype(np.int64), log_px=z["log_px"].astype(np.float64),
                       elbo=z["elbo"].astype(np.float64))
    n = len(out["index"])
    if len(out["log_px"]) != n or len(out["elbo"]) != n or len(np.unique(out["index"])) != n:
        raise ValueError(f"{path}: index, log_px and elbo must have one distinct entry per image")
    return out


def subset_images(n_test: int, size: int | None) -> np.ndarray:
    """The test images of an evaluation on ``size`` images out of ``n_test``, as the evaluation picks
    them (:func:`flowlib.training.loop.evaluation_images`), as an int64 array."""
    from ..training.loop import evaluation_images

    return evaluation_images(n_test, size).numpy().astype(np.int64)


def on_images(per: PerImage, images, key: str = "log_px") -> np.ndarray:
    """``per[key]`` on ``images`` (in that order); a ``ValueError`` if some were not evaluated."""
    images = np.asarray(images, dtype=np.int64)
    position = {int(i): p for p, i in enumerate(per["index"])}
    missing = [int(i) for i in images if int(i) not in position]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(images)} images were not evaluated "
                         f"(e.g. image {missing[0]})")
    return per[key][[position[int(i)] for i in images]]


def _mean_se(values: np.ndarray) -> tuple[float, float | None]:
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), se


def nll(per: PerImage, images=None) -> dict:
    """Test NLL (minus the mean of log p(x)) on ``images`` (default: every image of the file), its
    standard error over images, and the -ELBO on the same images."""
    images = per["index"] if images is None else images
    value, se = _mean_se(-on_images(per, images))
    return {"nll": value, "se": se, "neg_elbo": float(-on_images(per, images, "elbo").mean()),
            "images": len(images)}


def paired_gain(base: PerImage, other: PerImage, images=None) -> dict:
    """The NLL ``other`` gains over ``base`` (positive: ``other`` is better) on the same images
    (default: every image both were evaluated on), with the paired standard error: the standard
    error of the mean of the per-image differences ``log p_other(x) - log p_base(x)``."""
    if images is None:
        images = np.intersect1d(base["index"], other["index"])
    if len(images) == 0:
        raise ValueError("the two evaluations share no test image")
    gain, se = _mean_se(on_images(other, images) - on_images(base, images))
    return {"gain": gain, "paired_se": se, "images": len(images)}


def seed_spread(per_seed: dict, images) -> dict:
    """Each seed's NLL on the same ``images`` (``{seed: nll}``), their mean and their standard
    deviation between seeds (``None`` with one seed)."""
    values = {seed: float(-on_images(per, images).mean()) for seed, per in sorted(per_seed.items())}
    v = np.array(list(values.values()))
    return {"images": len(images), "nll": values, "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else None}


def training_hours(record: dict) -> float:
    """Hours of training of one run: the sum of its recorded epoch times (wall clock of a
    one-thread process, on whatever else the machine was doing) over 3600."""
    return sum(e["seconds"] for e in record["epochs"]) / 3600


def hours_by_device(record: dict) -> dict[str, float]:
    """Hours of training of one run per kind of torch device (``"cpu"``, ``"cuda"``): each epoch is
    counted on the device of the stretch of the record's ``code`` list it belongs to (a run resumed
    on another machine has one stretch per machine); stretches recorded before the device was
    (no ``device`` key) trained on the CPU, the only device used then."""
    stretches = sorted((c["from_epoch"], c.get("device", "cpu")) for c in record.get("code", []))
    out: dict[str, float] = {}
    for e in record["epochs"]:
        device = "cpu"
        for start, d in stretches:
            if start <= e["epoch"]:
                device = d
        kind = device.split(":")[0]
        out[kind] = out.get(kind, 0.0) + e["seconds"] / 3600
    return out


def converged(record: dict) -> bool:
    """Did this seed stop by patience (early stopping), rather than at the cap of epochs?"""
    return bool(record.get("stopped_early", record.get("status", "").startswith("early")))


def _headline(records: list[dict], per: dict) -> dict | None:
    """The seed evaluated on the most images (the full test set), the lowest seed among equals."""
    with_files = [r for r in records if r["seed"] in per]
    if not with_files:
        return None
    return max(with_files, key=lambda r: (len(per[r["seed"]]["index"]), -r["seed"]))


def row_statistics(records: list[dict], per: dict, base: tuple[list[dict], dict] | None,
                   subset: np.ndarray | None) -> dict:
    """The chapter's statistics of one row: ``records`` (one per seed), ``per`` their per-image files
    (``{seed: PerImage}``), ``base`` the baseline row's ``(records, per)`` (``None`` for the baseline
    itself), and ``subset`` the common subset of test images.

    - ``hours``: training hours per seed; ``all_converged``: every seed stopped by patience;
    - ``headline``: the seed evaluated on the most images (the full test set): its NLL, standard
      error over images, -ELBO on those images, number of images, and whether it stopped by patience;
    - ``gain``: its gain over the baseline's headline seed on the images both were evaluated on,
      with the paired standard error;
    - ``subset``: every seed's NLL on ``subset`` (the full evaluations' numbers taken from their
      per-image files), mean and standard deviation between seeds; its ``gain`` is the baseline's
      subset mean minus this row's, and ``gain_se`` the standard error of that difference from the
      two rows' seed spreads, ``sqrt(sd^2 / n + sd_base^2 / n_base)`` (``None`` unless both rows
      have at least two seeds).
    """
    out = {"hours": {r["seed"]: training_hours(r) for r in records},
           "all_converged": all(converged(r) for r in records)}
    head = _headline(records, per)
    if head is None:
        return out
    out["headline"] = dict(nll(per[head["seed"]]), seed=head["seed"], converged=converged(head))
    base_head = None if base is None else _headline(*base)
    if base_head is not None:
        out["gain"] = dict(paired_gain(base[1][base_head["seed"]], per[head["seed"]]),
                           base_seed=base_head["seed"])
    if subset is None:
        return out
    covering = {s: p for s, p in per.items() if np.isin(subset, p["index"]).all()}
    if not covering:
        return out
    out["subset"] = mine = seed_spread(covering, subset)
    base_covering = {} if base is None else \
        {s: p for s, p in base[1].items() if np.isin(subset, p["index"]).all()}
    if base_covering:
        theirs = seed_spread(base_covering, subset)
        mine["gain"] = theirs["mean"] - mine["mean"]
        mine["gain_se"] = None if mine["sd"] is None or theirs["sd"] is None else \
            math.sqrt(mine["sd"] ** 2 / len(mine["nll"]) + theirs["sd"] ** 2 / len(theirs["nll"]))
    return out


def common_subset(files: list[PerImage], size: int | None) -> np.ndarray | None:
    """The protocol's subset of ``size`` test images, found from the per-image files: the head of
    the fixed permutation of a full evaluation's test set if there is one (a file whose indices
    are 0, ..., n - 1), else the images of a file evaluated on exactly ``size`` images; ``None``
    if neither exists (or ``size`` is ``None``)."""
    if size is None:
        return None
    for p in files:
        if np.array_equal(np.sort(p["index"]), np.arange(len(p["index"]))) and len(p["index"]) > size:
            return subset_images(len(p["index"]), size)
    for p in files:
        if len(p["index"]) == size:
            return p["index"].copy()
    return None


def report(folder, baseline: str = "none") -> dict[str, dict]:
    """:func:`row_statistics` of every row of the experiment at ``folder`` that has results,
    ``{row: statistics}`` in row order, against the row ``baseline``; the common subset is the
    protocol's ``evaluate.subset`` (:func:`common_subset`)."""
    from .tables import collect, load_experiment

    protocol, _ = load_experiment(folder)
    results = pathlib.Path(protocol["results"])
    records = collect(folder)
    per = {name: {r["seed"]: p for r in recs
                  if (p := load_per_image(results / name / f"seed{r['seed']}_per_image.npz")) is not None}
           for name, recs in records.items()}
    subset = common_subset([p for files in per.values() for p in files.values()],
                           protocol["evaluate"].get("subset"))
    base = (records[baseline], per[baseline]) if baseline in records else None
    return {name: row_statistics(recs, per[name], None if name == baseline else base, subset)
            for name, recs in records.items()}
