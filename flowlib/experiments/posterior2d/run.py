"""The whole experiment, :func:`run`: its four stages in order, each resumable, writing the results
folder (``python -m flowlib posterior2d``)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

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

__all__ = ["run"]


def _load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run(out="results/posterior2d", runs="runs/posterior2d", progress: bool = True,
        command: str | None = None) -> dict:
    """All four stages; writes the results into ``out`` (``metrics.json`` with the command, the
    commit and the machine: :func:`flowlib.training.records.write_results`) and returns ``metrics``."""
    import numpy as np

    out, runs = pathlib.Path(out), pathlib.Path(runs)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    t_start = time.perf_counter()
    metrics = {"protocol": {"train": PROTOCOL, "joint": JOINT, "families": FAMILIES, "approx": APPROX,
                            "fit": FIT, "eval": EVAL},
               "load_average": _load_average(), "seconds": {}}

    # A. joint training
    models = {}
    for name in JOINT:
        t0 = time.perf_counter()
        say(f"== stage A: {name}", flush=True)
        config = train_config(name, runs / name)
        record = train(config, progress=progress)
        state = load_checkpoint(runs / name / "model.pt")
        atomic_save({"model": state["model"], "config": {k: v for k, v in config.items()
                                                         if k not in ("out", "resume")}},
                    out / f"{name}.pt")
        models[name] = build_model(config)
        models[name].load_state_dict(state["model"])
        models[name].eval()
        metrics[name] = {k: record[k] for k in ("best_epoch", "best_valid_elbo", "test_neg_elbo",
                                                "test_reconstruction", "test_kl", "status")}
        metrics[name]["valid_elbo_per_epoch"] = [e["valid_elbo"] for e in record["epochs"]]
        metrics["seconds"][f"A:{name}"] = time.perf_counter() - t0
    base = models["base"]

    # B. amortized approximations of the base posterior
    config = train_config("base", runs / "base")
    train_x, valid_x = load_split(config, "train", config["subset"]), load_split(config, "valid")
    parts = load_checkpoint(out / "approximations.pt") if (out / "approximations.pt").is_file() else {}
    history = json.loads((runs / "approx_history.json").read_text()) \
        if (runs / "approx_history.json").is_file() else {}
    approximations = {}
    for family in FAMILIES:
        t0 = time.perf_counter()
        if family not in parts or family not in history:
            say(f"== stage B: {family}", flush=True)
            model, history[family] = train_approximation(base, family, train_x, valid_x, progress)
            parts[family] = trained_part(model)
            atomic_save(parts, out / "approximations.pt")
            atomic_write_json(history, runs / "approx_history.json")
        model = approximation_model(base, family)
        model.load_state_dict({**model.state_dict(), **parts[family]})
        approximations[family] = model.eval()
        metrics["seconds"][f"B:{family}"] = time.perf_counter() - t0
    metrics["approx_valid_elbo"] = history

    # D1. screening: grid evidence and KLs of random test digits
    t0 = time.perf_counter()
    say("== stage D1: screening", flush=True)
    test_x = load_split(config, "test")
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
    for key, n_pick, reason in (("non_gaussianity", EVAL["non_gaussian_digits"], "least Gaussian posterior"),
                                ("kl", EVAL["misplaced_digits"], "largest KL of the amortized Gaussian")):
        pick = [i for i in ev[key].argsort(descending=True).tolist() if ok[i] and i not in why][:n_pick]
        why.update({i: reason for i in pick})
    chosen = list(why)
    metrics["screen"] = {
        "indices": screen.tolist(), "labels": labels[screen].tolist(), "log_px_grid": ev["log_px"].tolist(),
        "edge": ev["edge"].tolist(), "ok": ok.tolist(), "gaussian_grid_kl": ev["kl"].tolist(),
        "gaussian_grid_mass": ev["mass"].tolist(), "non_gaussianity": ev["non_gaussianity"].tolist(),
        "mc_kl": screen_kl,
        "chosen": [{"test_index": int(screen[i]), "label": int(labels[screen[i]]),
                    "why": why[i]} for i in chosen],
    }
    metrics["seconds"]["D1:screen"] = time.perf_counter() - t0

    # C. per-digit fits, started at the posterior's highest point on the coarse grid (its mode, up to
    # a cell) with the amortized Gaussian's standard deviations
    t0 = time.perf_counter()
    chosen_idx = [c["test_index"] for c in metrics["screen"]["chosen"]]
    log_post_c, log_px_c, _ = posterior_on_grid(coarse, log_joint(base, test_x[chosen_idx], coarse.points))
    with torch.no_grad():
        _, log_var_c, _ = approximations["gaussian"].encoder(test_x[chosen_idx])
    fits_state = load_checkpoint(out / "fits.pt") if (out / "fits.pt").is_file() else {}
    fits, curves = {}, {}
    for j, c in enumerate(metrics["screen"]["chosen"]):
        idx = c["test_index"]
        fits[idx] = {}
        for family in FAMILIES:
            key = f"{idx}/{family}"
            flow = fit_flow(family)
            if key in fits_state:
                flow.load_state_dict(fits_state[key])
            else:
                say(f"== stage C: digit {idx} ({c['label']}), {family}", flush=True)
                mode = coarse.points[log_post_c[j].argmax()].float()
                flow, curve = fit_digit(base, test_x[idx], family, mode, log_var_c[j], progress)
                curves[key] = {"step": curve.steps, "free_energy": curve.free_energy}
                fits_state[key] = flow.state_dict()
                atomic_save(fits_state, out / "fits.pt")
            fits[idx][family] = flow.eval()
    metrics["fit_curves"] = curves
    metrics["seconds"]["C:fits"] = time.perf_counter() - t0

    # D2. the chosen digits on grids fitted to their posteriors
    t0 = time.perf_counter()
    metrics["digits"], grids = [], {}
    for j, c in enumerate(metrics["screen"]["chosen"]):
        idx = c["test_index"]
        say(f"== stage D2: digit {idx}", flush=True)
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
                 "q": {f"{kind}/{fam}": {k: v for k, v in r.items() if k != "log_q"}
                       for (kind, fam), r in rep["q"].items()}}
        metrics["digits"].append(entry)
        for (kind, fam), r in rep["q"].items():
            if fam in STORED_GRIDS:
                grids[f"{idx}/{kind}/{fam}"] = r["log_q"].float().numpy()
    tmp = out / ".digits.tmp.npz"
    np.savez_compressed(tmp, **grids)
    tmp.replace(out / "digits.npz")
    metrics["seconds"]["D2:digits"] = time.perf_counter() - t0

    # D3. static flow and sampling
    t0 = time.perf_counter()
    say("== stage D3: sampling", flush=True)
    agg = Grid2D(EVAL["aggregate_lim"], EVAL["aggregate_n"])
    arrays = {}
    metrics["sampling"] = {}
    for name, model in models.items():
        rep = sampling_report(model, test_x, agg, seed=PROTOCOL["seed"])
        density, k = agg.reshape(rep.pop("log_q_aggregate").exp()), EVAL["aggregate_block"]
        arrays[name] = density.reshape(agg.n // k, k, agg.n // k, k).mean((1, 3)).log().float().numpy()
        metrics["sampling"][name] = rep
        e = ev if name == "base" else grid_evidence(model, test_x[screen], coarse)
        metrics["sampling"][name].update(screen_nll_grid=-e["log_px"].mean().item(),
                                         screen_edge_ok=(e["edge"] > 20).double().mean().item())
    tmp = out / ".aggregate.tmp.npz"
    np.savez_compressed(tmp, lim=EVAL["aggregate_lim"], n=EVAL["aggregate_n"] // EVAL["aggregate_block"],
                        **{k.replace("-", "_"): v for k, v in arrays.items()})
    tmp.replace(out / "aggregate.npz")
    metrics["seconds"]["D3:sampling"] = time.perf_counter() - t0
    metrics["seconds"]["total"] = time.perf_counter() - t_start
    metrics["load_average_end"] = _load_average()
    command = command or "flowlib.experiments.posterior2d.run (called from Python)"
    metrics = write_results(out, metrics, command=command, name="metrics.json")
    say(f"done in {metrics['seconds']['total']:.0f} s", flush=True)
    return metrics
