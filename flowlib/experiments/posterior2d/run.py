"""The whole experiment, :func:`run`: its stages in order (A :func:`joint_training`, B
:func:`amortized_approximations`, D1 :func:`screen_digits`, C :func:`per_digit_fits`, D2
:func:`digit_results`, D3 :func:`sampling_results`), each resumable, writing the results folder
(``python -m flowlib posterior2d``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import time
from dataclasses import dataclass, field

import torch

from ...model.vae import log_standard_normal
from ...training.checkpoint import atomic_save, atomic_write_json, load_checkpoint
from ...training.loop import build_model, load_split, train
from ...training.records import write_results
from ...training.seeding import seed_everything
from ...twod.fit import sample
from ...twod.grid import Grid2D
from ...twod.posterior_grid import grid_evidence, log_joint, posterior_on_grid
from .approximations import train_approximation
from .data import binarized_test_labels
from .fit import fit_digit
from .models import approximation_model, fit_flow, train_config, trained_part
from .protocol import APPROX, EVAL, FAMILIES, FIT, JOINT, PROTOCOL, STORED_GRIDS
from .report import digit_box, digit_report, sampling_report

__all__ = ["run", "joint_training", "amortized_approximations", "screen_digits", "per_digit_fits",
           "digit_results", "sampling_results"]


def _load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


@dataclass
class _Run:
    """What every stage writes to: the results and runs folders, the metrics, the progress output."""

    out: pathlib.Path
    runs: pathlib.Path
    progress: bool
    metrics: dict = field(default_factory=dict)

    def say(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    @contextlib.contextmanager
    def timed(self, key: str):
        """Record the seconds the block takes as ``metrics["seconds"][key]``."""
        t0 = time.perf_counter()
        yield
        self.metrics["seconds"][key] = time.perf_counter() - t0


def run(out="results/posterior2d", runs="runs/posterior2d", progress: bool = True,
        command: str | None = None) -> dict:
    """All four stages; writes the results into ``out`` (``metrics.json`` with the command, the
    commit and the machine: :func:`flowlib.training.records.write_results`) and returns ``metrics``.
    Each stage keeps what it has made (checkpoints in ``out`` and ``runs``) and skips it when run
    again."""
    r = _Run(pathlib.Path(out), pathlib.Path(runs), progress)
    r.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    r.metrics.update(protocol={"train": PROTOCOL, "joint": JOINT, "families": FAMILIES, "approx": APPROX,
                               "fit": FIT, "eval": EVAL},
                     load_average=_load_average(), seconds={})
    models = joint_training(r)
    base = models["base"]
    config = train_config("base", r.runs / "base")
    approximations = amortized_approximations(r, base, load_split(config, "train", config["subset"]),
                                              load_split(config, "valid"))
    test_x = load_split(config, "test")
    screen, coarse, ev = screen_digits(r, base, approximations, test_x)
    fits, log_post_c, log_px_c = per_digit_fits(r, base, approximations, test_x, coarse)
    digit_results(r, base, approximations, fits, test_x, coarse, log_post_c, log_px_c)
    sampling_results(r, models, test_x, screen, coarse, ev)
    r.metrics["seconds"]["total"] = time.perf_counter() - t_start
    r.metrics["load_average_end"] = _load_average()
    command = command or "flowlib.experiments.posterior2d.run (called from Python)"
    metrics = write_results(r.out, r.metrics, command=command, name="metrics.json")
    r.say(f"done in {metrics['seconds']['total']:.0f} s")
    return metrics


def joint_training(r: _Run) -> dict:
    """Stage A: the jointly trained VAEs of :data:`~.protocol.JOINT` (:func:`flowlib.training.loop.train`,
    resumable in ``runs``), their best checkpoints copied into ``out``; returns ``{name: VAE}``."""
    models = {}
    for name in JOINT:
        with r.timed(f"A:{name}"):
            r.say(f"== stage A: {name}")
            config = train_config(name, r.runs / name)
            record = train(config, progress=r.progress)
            state = load_checkpoint(r.runs / name / "model.pt")
            atomic_save({"model": state["model"], "config": {k: v for k, v in config.items()
                                                             if k not in ("out", "resume")}},
                        r.out / f"{name}.pt")
            models[name] = build_model(config)
            models[name].load_state_dict(state["model"])
            models[name].eval()
            r.metrics[name] = {k: record[k] for k in ("best_epoch", "best_valid_elbo", "test_neg_elbo",
                                                      "test_reconstruction", "test_kl", "status")}
            r.metrics[name]["valid_elbo_per_epoch"] = [e["valid_elbo"] for e in record["epochs"]]
    return models


def amortized_approximations(r: _Run, base, train_x, valid_x) -> dict:
    """Stage B: each family's amortized approximation of the base posterior
    (:func:`~.approximations.train_approximation`); returns ``{family: VAE}``."""
    out, runs = r.out, r.runs
    parts = load_checkpoint(out / "approximations.pt") if (out / "approximations.pt").is_file() else {}
    history = json.loads((runs / "approx_history.json").read_text()) \
        if (runs / "approx_history.json").is_file() else {}
    approximations = {}
    for family in FAMILIES:
        with r.timed(f"B:{family}"):
            if family not in parts or family not in history:
                r.say(f"== stage B: {family}")
                model, history[family] = train_approximation(base, family, train_x, valid_x, r.progress)
                parts[family] = trained_part(model)
                atomic_save(parts, out / "approximations.pt")
                atomic_write_json(history, runs / "approx_history.json")
            model = approximation_model(base, family)
            model.load_state_dict({**model.state_dict(), **parts[family]})
            approximations[family] = model.eval()
    r.metrics["approx_valid_elbo"] = history
    return approximations


def screen_digits(r: _Run, base, approximations: dict, test_x):
    """Stage D1: grid evidence and KLs of random test digits, and the digits chosen from them
    (``metrics["screen"]``); returns the screened indices, the coarse grid and the evidence."""
    with r.timed("D1:screen"):
        r.say("== stage D1: screening")
        labels = binarized_test_labels()
        screen = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))[:EVAL["screen"]]
        coarse = Grid2D(EVAL["coarse_lim"], EVAL["coarse_n"])
        with torch.no_grad():
            mu, log_var, _ = approximations["gaussian"].encoder(test_x[screen])
        ev = grid_evidence(base, test_x[screen], coarse, gaussians=(mu, log_var))
        ok = (ev["edge"] > 20) & ((ev["mass"] - 1).abs() < 1e-3)
        screen_kl = {}
        seed_everything(PROTOCOL["seed"])
        with torch.no_grad():
            for family, model in approximations.items():
                z, lq = model.posterior(test_x[screen], EVAL["screen_mc_samples"])
                elbo = model.log_p_x_given_z(test_x[screen], z) + log_standard_normal(z) - lq
                screen_kl[family] = (ev["log_px"] - elbo.double().mean(0)).tolist()
        why = {i: "random" for i in range(EVAL["random_digits"])}
        picks = (("non_gaussianity", EVAL["non_gaussian_digits"], "least Gaussian posterior"),
                 ("kl", EVAL["misplaced_digits"], "largest KL of the amortized Gaussian"))
        for key, n_pick, reason in picks:
            pick = [i for i in ev[key].argsort(descending=True).tolist() if ok[i] and i not in why][:n_pick]
            why.update({i: reason for i in pick})
        r.metrics["screen"] = {
            "indices": screen.tolist(), "labels": labels[screen].tolist(),
            "log_px_grid": ev["log_px"].tolist(), "edge": ev["edge"].tolist(), "ok": ok.tolist(),
            "gaussian_grid_kl": ev["kl"].tolist(), "gaussian_grid_mass": ev["mass"].tolist(),
            "non_gaussianity": ev["non_gaussianity"].tolist(), "mc_kl": screen_kl,
            "chosen": [{"test_index": int(screen[i]), "label": int(labels[screen[i]]),
                        "why": why[i]} for i in why],
        }
    return screen, coarse, ev


def per_digit_fits(r: _Run, base, approximations: dict, test_x, coarse):
    """Stage C: every family fitted to each chosen digit's posterior (:func:`~.fit.fit_digit`),
    started at the posterior's highest point on the coarse grid (its mode, up to a cell) with the
    amortized Gaussian's standard deviations. Returns ``{digit: {family: flow}}`` and the chosen
    digits' posteriors and evidences on the coarse grid."""
    with r.timed("C:fits"):
        chosen = r.metrics["screen"]["chosen"]
        chosen_idx = [c["test_index"] for c in chosen]
        log_post_c, log_px_c, _ = posterior_on_grid(coarse,
                                                    log_joint(base, test_x[chosen_idx], coarse.points))
        with torch.no_grad():
            _, log_var_c, _ = approximations["gaussian"].encoder(test_x[chosen_idx])
        fits_state = load_checkpoint(r.out / "fits.pt") if (r.out / "fits.pt").is_file() else {}
        fits, curves = {}, {}
        for j, c in enumerate(chosen):
            idx = c["test_index"]
            fits[idx] = {}
            for family in FAMILIES:
                key = f"{idx}/{family}"
                flow = fit_flow(family)
                if key in fits_state:
                    flow.load_state_dict(fits_state[key])
                else:
                    r.say(f"== stage C: digit {idx} ({c['label']}), {family}")
                    mode = coarse.points[log_post_c[j].argmax()].float()
                    flow, curve = fit_digit(base, test_x[idx], family, mode, log_var_c[j], r.progress)
                    curves[key] = {"step": curve.steps, "free_energy": curve.free_energy}
                    fits_state[key] = flow.state_dict()
                    atomic_save(fits_state, r.out / "fits.pt")
                fits[idx][family] = flow.eval()
        r.metrics["fit_curves"] = curves
    return fits, log_post_c, log_px_c


def digit_results(r: _Run, base, approximations: dict, fits: dict, test_x, coarse, log_post_c, log_px_c):
    """Stage D2: the chosen digits on grids fitted to their posteriors (:func:`~.report.digit_report`)
    and their importance-sampled evidence (``metrics["digits"]``; ``digits.npz``)."""
    import numpy as np

    with r.timed("D2:digits"):
        r.metrics["digits"], grids = [], {}
        for j, c in enumerate(r.metrics["screen"]["chosen"]):
            idx = c["test_index"]
            r.say(f"== stage D2: digit {idx}")
            grid = digit_box(test_x[idx], coarse, log_post_c[j], approximations, fits[idx])
            rep = digit_report(base, test_x[idx], grid, approximations, fits[idx], EVAL["mc_samples"])
            seed_everything(PROTOCOL["seed"])
            is_ = base.log_likelihood(test_x[idx][None], EVAL["is_samples"]).item()
            with torch.no_grad():  # the same estimator with the fitted Gaussian as proposal
                z, lq = sample(fits[idx]["gaussian"], EVAL["is_samples"], torch.Generator().manual_seed(0))
                log_w = log_joint(base, test_x[idx], z)[0] - lq.double()
            is_fit = (torch.logsumexp(log_w, 0) - math.log(EVAL["is_samples"])).item()
            entry = {**c, "log_px_grid": rep["log_px"], "log_px_coarse": log_px_c[j].item(),
                     "log_px_is": is_, "log_px_is_fit": is_fit, "edge": rep["edge"],
                     "box": [*grid.xlim, *grid.ylim],
                     "q": {f"{kind}/{fam}": {k: v for k, v in q.items() if k != "log_q"}
                           for (kind, fam), q in rep["q"].items()}}
            r.metrics["digits"].append(entry)
            for (kind, fam), q in rep["q"].items():
                if fam in STORED_GRIDS:
                    grids[f"{idx}/{kind}/{fam}"] = q["log_q"].float().numpy()
        tmp = r.out / ".digits.tmp.npz"
        np.savez_compressed(tmp, **grids)
        tmp.replace(r.out / "digits.npz")


def sampling_results(r: _Run, models: dict, test_x, screen, coarse, ev) -> None:
    """Stage D3: the static flow and sampling (:func:`~.report.sampling_report` of each jointly
    trained VAE, ``metrics["sampling"]``; the aggregate posteriors in ``aggregate.npz``)."""
    import numpy as np

    with r.timed("D3:sampling"):
        r.say("== stage D3: sampling")
        agg = Grid2D(EVAL["aggregate_lim"], EVAL["aggregate_n"])
        arrays = {}
        r.metrics["sampling"] = {}
        for name, model in models.items():
            rep = sampling_report(model, test_x, agg, seed=PROTOCOL["seed"])
            density, k = agg.reshape(rep.pop("log_q_aggregate").exp()), EVAL["aggregate_block"]
            arrays[name] = density.reshape(agg.n // k, k, agg.n // k, k).mean((1, 3)).log().float().numpy()
            r.metrics["sampling"][name] = rep
            e = ev if name == "base" else grid_evidence(model, test_x[screen], coarse)
            r.metrics["sampling"][name].update(screen_nll_grid=-e["log_px"].mean().item(),
                                               screen_edge_ok=(e["edge"] > 20).double().mean().item())
        tmp = r.out / ".aggregate.tmp.npz"
        np.savez_compressed(tmp, lim=EVAL["aggregate_lim"], n=EVAL["aggregate_n"] // EVAL["aggregate_block"],
                            **{k.replace("-", "_"): v for k, v in arrays.items()})
        tmp.replace(r.out / "aggregate.npz")
