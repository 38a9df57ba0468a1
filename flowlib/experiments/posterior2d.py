r"""The experiment behind the chapter "Looking at the posterior": VAEs with a two-dimensional latent
space on statically binarized MNIST, where the true posterior can be computed on a grid
(:mod:`flowlib.twod.posterior_grid`)::

    python -m flowlib.experiments.posterior2d run --out results/posterior2d --runs runs/posterior2d \
        --threads 1

One protocol (:data:`PROTOCOL`), seed 0, four stages, each resumable:

A. **Joint training** (:func:`flowlib.training.loop.train`) of two VAEs: no flow (the *base*), and a
   *static* planar flow (the sampling experiment).
B. **Amortized approximations of one posterior.** The base decoder and the encoder's hidden layers
   are frozen; for each family of :data:`FAMILIES` the Gaussian output layer (started from the
   base's) and an amortized flow on the encoder's features, acting on the whitened noise
   (:class:`~flowlib.model.whitened.WhitenedFlowVAE`), are trained to maximise the ELBO. With
   the decoder fixed, ``log p(x)`` is fixed and the ELBO gain is exactly a drop of the mean
   ``KL(q || p(z | x))``: every column of the chapter targets the same true posterior.
C. **Per-digit fits**: for the chosen test digits, a static flow of each family (then a diagonal
   affine map) is fitted to that one posterior by reverse KL (:func:`flowlib.twod.fit.fit_reverse_kl`),
   started at the posterior's mode on the coarse grid: no amortization, the family's own limit
   (near that mode: reverse KL does not jump between modes).
D. **Evaluation**: grid evidence and KLs on 500 random test digits, the chosen digits' grid and
   Monte Carlo KLs, and the static flow's effect on the aggregate posterior and on prior samples.

Results go to ``--out`` (small checkpoints, ``metrics.json``, ``aggregate.npz``); runs to ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shlex
import sys
import time

import torch
from tqdm.auto import tqdm

from ..flows import Sequential, registry
from ..flows.base import Flow
from ..model.vae import VAE, log_standard_normal
from ..model.whitened import WhitenedFlowVAE
from ..training.checkpoint import atomic_save, atomic_write_json, load_checkpoint
from ..training.records import write_results
from ..training.seeding import seed_everything
from ..twod.grid import Grid2D
from ..twod.posterior_grid import (
    aggregate_log_q,
    grid_evidence,
    grid_kl,
    log_joint,
    log_q,
    mc_kl,
    posterior_box,
    posterior_on_grid,
)

__all__ = ["PROTOCOL", "FAMILIES", "DiagonalAffine", "binarized_test_labels", "load_results",
           "digit_box", "digit_report", "sampling_report", "run", "main"]

# Stage A: every jointly trained VAE (flowlib.training.loop config keys).
PROTOCOL = {
    "data": "binarized-mnist", "binarize": "static", "latent_dim": 2, "hidden": [200, 200], "arch": "mlp",
    "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "warmup": 5, "epochs": 20, "patience": 20,
    "seed": 0, "subset": None,
}
JOINT = {"base": ("none", 0, True), "static-planar": ("planar", 8, False)}
# Stage B: decoder and encoder trunk frozen; heads + amortized flow; beta = 1.
FAMILIES = {"gaussian": ("none", 0), "planar": ("planar", 8), "radial": ("radial", 8),
            "iaf": ("iaf", 4), "pcpmap": ("pcpmap", 1)}
APPROX = {"epochs": 3, "lr": 1e-3, "batch_size": 100, "iaf_hidden": 64}
# Stage C: reverse-KL fits of one posterior each.
FIT = {"steps": 300, "batch_size": 64, "lr": 5e-3}
# Stage D.
EVAL = {"screen": 500, "random_digits": 3, "non_gaussian_digits": 2, "misplaced_digits": 2,
        "coarse_lim": 5.5, "coarse_n": 440,
        "fine_n": 160, "box_samples": 2000, "mc_samples": 5000, "screen_mc_samples": 32,
        "is_samples": 5000, "aggregate_lim": 5.5, "aggregate_n": 400, "aggregate_block": 4}
# log q on the digits' grids is stored for these families (their inverse is a slow Newton solve)
STORED_GRIDS = ("pcpmap",)
R99 = math.sqrt(-2 * math.log(0.01))  # the radius holding 99% of N(0, I_2): ||z||^2 ~ chi^2_2


class DiagonalAffine(Flow):
    """``y = m + exp(log_s) * z``: pushes ``N(0, I)`` to ``N(m, diag exp(2 log_s))``; static."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.m = torch.nn.Parameter(torch.zeros(dim))
        self.log_s = torch.nn.Parameter(torch.zeros(dim))

    def _forward(self, z, context):
        return self.m + torch.exp(self.log_s) * z, self.log_s.sum().expand(z.shape[0])

    def _inverse(self, y, context):
        return (y - self.m) * torch.exp(-self.log_s), (-self.log_s.sum()).expand(y.shape[0])


def binarized_test_labels(check: int = 200) -> torch.Tensor:
    """Class labels of the binarized-MNIST test images, which the Larochelle & Murray file lacks.

    The file holds the MNIST test images sorted by class (its class blocks have exactly the sizes
    of MNIST's test classes), so image ``i`` gets the class of its block. ``check`` random images
    are matched to their most likely grey MNIST test image (Bernoulli likelihood) to confirm it."""
    from ..data import load

    xb, _ = load("binarized-mnist", "test")
    xm, y = load("mnist", "test")
    labels = torch.repeat_interleave(torch.arange(10), torch.bincount(y, minlength=10))
    if check:
        idx = torch.randperm(len(xb), generator=torch.Generator().manual_seed(0))[:check]
        p = xm.clamp(1e-3, 1 - 1e-3)
        match = (xb[idx] @ p.log().T + (1 - xb[idx]) @ torch.log1p(-p).T).argmax(1)
        wrong = (y[match] != labels[idx]).sum().item()
        if wrong:
            raise RuntimeError(f"binarized_test_labels: {wrong} of {check} checked images are not in the "
                               "class block expected from a class-sorted MNIST test set")
    return labels


# ------------------------------------------------------------------ models


def _train_config(name: str, out) -> dict:
    from ..training.config import TrainConfig

    flow, length, amortized = JOINT[name]
    return TrainConfig.from_dict({**PROTOCOL, "flow": flow, "flow_length": length, "amortized": amortized,
                                  "resume": True, "out": str(out)}).to_dict()


def _vae(config: dict) -> VAE:
    from ..training.loop import build_model

    return build_model(config)


def _approximation_model(base: VAE, family: str) -> VAE:
    """A VAE with the base's weights and a fresh flow of ``family``, amortized on ``h`` and acting
    on the whitened noise (:class:`~flowlib.model.whitened.WhitenedFlowVAE`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {family!r}")
    flow = _family_flow(family, base.h_dim)
    model = WhitenedFlowVAE(784, 2, tuple(PROTOCOL["hidden"]), flow)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("flow.") for k in missing), (missing, unexpected)
    return model


def _trained_part(model: VAE) -> dict:
    """What stage B trains: the encoder's output layers and the flow."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith(("encoder.mu.", "encoder.log_var.", "flow."))}


def _family_flow(family: str, context_dim: int | None) -> Sequential | None:
    """The flow of ``family`` on the 2-D latent space, from the registry (None for the Gaussian)."""
    name, length = FAMILIES[family]
    options = {"hidden": APPROX["iaf_hidden"]} if name == "iaf" else {}
    return registry.build(name, 2, context_dim=context_dim, length=length, **options)


def _fit_flow(family: str) -> Sequential:
    flow = _family_flow(family, None)
    return Sequential(*([] if flow is None else flow.flows), DiagonalAffine(2))


def load_results(folder) -> dict:
    """The committed results of ``folder``: ``base``, ``static`` (VAEs), ``approximations``
    (``{family: VAE}``), ``fits`` (``{digit index: {family: static flow}}``), ``stored``
    (``{digit index: {(kind, family): log q on the digit's grid}}``), ``aggregate`` (the aggregate
    posteriors' log densities on a grid, with ``lim`` and ``n``) and ``metrics``."""
    import numpy as np

    folder = pathlib.Path(folder)
    for name in ("base.pt", "static-planar.pt", "approximations.pt", "fits.pt", "metrics.json", "digits.npz",
                 "aggregate.npz"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"load_results: missing {folder / name}; run "
                                    f"`python -m flowlib.experiments.posterior2d run --out {folder}`")
    out = {"metrics": json.loads((folder / "metrics.json").read_text())}
    for key, name in (("base", "base.pt"), ("static", "static-planar.pt")):
        state = load_checkpoint(folder / name)
        out[key] = _vae(state["config"])
        out[key].load_state_dict(state["model"])
        out[key].eval()
    out["approximations"] = {}
    for family, part in load_checkpoint(folder / "approximations.pt").items():
        model = _approximation_model(out["base"], family)
        model.load_state_dict({**model.state_dict(), **part})
        out["approximations"][family] = model.eval()
    out["fits"] = {}
    for key, part in load_checkpoint(folder / "fits.pt").items():
        digit, family = key.split("/")
        flow = _fit_flow(family)
        flow.load_state_dict(part)
        out["fits"].setdefault(int(digit), {})[family] = flow.eval()
    out["stored"] = {}
    with np.load(folder / "digits.npz") as f:
        for key in f.files:
            digit, kind, family = key.split("/")
            out["stored"].setdefault(int(digit), {})[(kind, family)] = torch.from_numpy(f[key])
    with np.load(folder / "aggregate.npz") as f:
        out["aggregate"] = {k: (f[k].item() if f[k].ndim == 0 else torch.from_numpy(f[k])) for k in f.files}
    return out


# ------------------------------------------------------------------ stage B and C


def train_approximation(base: VAE, family: str, train_x, valid_x, progress: bool = True):
    """Stage B for one family; returns the model and its per-epoch validation ELBO."""
    from ..training.loop import mean_elbo

    seed_everything(PROTOCOL["seed"])
    model = _approximation_model(base, family)
    for p in (*model.encoder.features.parameters(), *model.decoder.parameters()):
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=APPROX["lr"])
    shuffle = torch.Generator().manual_seed(PROTOCOL["seed"])
    bs = APPROX["batch_size"]
    history = [{"epoch": 0, "valid_elbo": mean_elbo(model, valid_x, 500, "cpu")["elbo"]}]
    for epoch in range(APPROX["epochs"]):
        model.train()
        perm = torch.randperm(len(train_x), generator=shuffle)
        t0 = time.perf_counter()
        for b in tqdm(range(len(train_x) // bs), desc=f"{family} epoch {epoch + 1}", leave=False,
                      disable=not progress):
            loss = model.elbo(train_x[perm[b * bs:(b + 1) * bs]]).loss(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        valid = mean_elbo(model, valid_x, 500, "cpu")["elbo"]
        history.append({"epoch": epoch + 1, "valid_elbo": valid, "seconds": time.perf_counter() - t0})
        if progress:
            tqdm.write(f"  {family}: epoch {epoch + 1}, valid ELBO {valid:.3f}")
    return model.eval(), history


def fit_digit(base: VAE, x: torch.Tensor, family: str, mean: torch.Tensor, log_var: torch.Tensor,
              progress: bool = False):
    """Stage C: a static flow of ``family`` fitted to ``p(z | x)`` alone by reverse KL; as in
    stage B the flow acts on unit-scale noise and a diagonal affine map comes last, started at
    ``N(mean, diag exp(log_var))``. Reverse KL seeks one mode: the start decides which."""
    from ..twod.fit import fit_reverse_kl

    seed_everything(PROTOCOL["seed"])
    flow = _fit_flow(family)
    with torch.no_grad():
        flow[len(flow) - 1].m.copy_(mean)
        flow[len(flow) - 1].log_s.copy_(0.5 * log_var)
    base.requires_grad_(False)

    def U(z):
        return -(base.log_p_x_given_z(x[None], z[:, None])[:, 0] + log_standard_normal(z))

    curve = fit_reverse_kl(flow, U, steps=FIT["steps"], batch_size=FIT["batch_size"], lr=FIT["lr"],
                           progress=progress, generator=torch.Generator().manual_seed(PROTOCOL["seed"]))
    return flow.eval(), curve


# ------------------------------------------------------------------ stage D


def _approximations(approximations: dict, fits: dict | None) -> dict:
    out = {("amortized", f): m for f, m in approximations.items()}
    out.update({("fit", f): flow for f, flow in (fits or {}).items()})
    return out


def _samplers(x: torch.Tensor, qs: dict, seed: int) -> dict:
    """``{key: n -> (z, log q(z))}``: the amortized posteriors of ``x``, or the fitted flows."""
    from ..twod.fit import sample

    samplers = {}
    for i, (key, q) in enumerate(qs.items()):
        g = torch.Generator().manual_seed(seed + i)
        if isinstance(q, VAE):
            samplers[key] = lambda n, q=q: tuple(t[:, 0].detach() for t in q.posterior(x[None], n))
        else:
            samplers[key] = lambda n, q=q, g=g: tuple(t.detach() for t in sample(q, n, g))
    return samplers


def digit_box(x: torch.Tensor, coarse: Grid2D, log_post_coarse: torch.Tensor, approximations: dict,
              fits: dict | None = None, seed: int = 0) -> Grid2D:
    """The grid of one image: the region of its posterior on ``coarse`` joined with samples of
    every approximation (:func:`flowlib.twod.posterior_grid.posterior_box`)."""
    seed_everything(seed)
    samplers = _samplers(x, _approximations(approximations, fits), seed)
    extra = torch.cat([s(EVAL["box_samples"])[0] for s in samplers.values()])
    return posterior_box(coarse, log_post_coarse, extra=extra, n=EVAL["fine_n"])


def digit_report(base: VAE, x: torch.Tensor, grid: Grid2D, approximations: dict, fits: dict | None = None,
                 mc_samples: int | None = None, seed: int = 1, stored: dict | None = None) -> dict:
    """The true posterior of one image on ``grid``, and each approximation on that grid.

    Returns ``log_post``, ``log_px``, ``edge`` and ``q``: ``{(kind, family): {"log_q", "kl",
    "mass"[, "mc", "mc_se"]}}`` with ``kind`` ``"amortized"`` (the VAEs of ``approximations``)
    or ``"fit"`` (the static flows of ``fits``). ``mc_samples`` adds Monte Carlo KLs. ``stored``
    (``{key: log q on grid}``) gives precomputed grids, used instead of inverting those flows."""
    seed_everything(seed)
    qs = _approximations(approximations, fits)
    stored = stored or {}
    samplers = _samplers(x, qs, seed)
    log_post, log_px, edge = (t[0] for t in posterior_on_grid(grid, log_joint(base, x, grid.points)))
    out = {"log_post": log_post, "log_px": log_px.item(), "edge": edge.item(), "q": {}}
    for key, q in qs.items():
        if key in stored:
            lq = torch.as_tensor(stored[key], dtype=torch.float64).reshape(-1)
        elif isinstance(q, VAE):
            lq = log_q(q, x, grid.points)
        else:
            lq = log_q(base, x, grid.points, flow=q)
        kl, mass = grid_kl(grid, lq, log_post)
        out["q"][key] = {"log_q": lq, "kl": kl, "mass": mass}
        if mc_samples:
            mc, se = mc_kl(base, x, out["log_px"], mc_samples, sampler=samplers[key])
            out["q"][key].update(mc=mc, mc_se=se)
    return out


@torch.no_grad()
def sampling_report(model: VAE, X: torch.Tensor, grid: Grid2D, n_prior: int = 10_000, seed: int = 0) -> dict:
    """How far the codes of the images ``X`` leave the prior's typical set, and how well their
    aggregate posterior ``q(z) = mean_n q(z | x_n)`` covers the prior ``p``.

    ``z0`` is a draw of the encoder's Gaussian (the flow's input), ``zK = f(z0)`` the code the
    decoder sees; ``mu`` and ``f(mu)`` likewise for the Gaussian's mean. Both KLs and the prior's
    mass in *holes* (where ``q < p / 10``) are estimated twice: on ``grid``, and by Monte Carlo from
    one code per image (for ``KL(q || p)``) or ``n_prior`` prior draws (for ``KL(p || q)`` and
    the holes), with ``log q`` exact at every point."""
    g = torch.Generator().manual_seed(seed)
    mu, log_var, _ = model.encoder(X)
    z0 = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=g)
    flow = (lambda z: z) if model.flow is None else (lambda z: model.flow(z)[0])
    zK = flow(z0)
    outside = lambda z: (z.norm(dim=1) > R99).double().mean().item()
    lq = aggregate_log_q(model, X, grid.points, chunk=100)
    lp = log_standard_normal(grid.points)
    hole = (lq < lp - math.log(10)).double()
    z_prior = torch.randn(n_prior, 2, generator=g, dtype=torch.float64)
    lq_q, lq_p = aggregate_log_q(model, X, zK), aggregate_log_q(model, X, z_prior)
    kl_qp = lq_q - log_standard_normal(zK.double())
    kl_pq = log_standard_normal(z_prior) - lq_p
    se = lambda t: (t.std() / math.sqrt(len(t))).item()
    return {
        "outside_99_z0": outside(z0), "outside_99_zK": outside(zK),
        "outside_99_mu": outside(mu), "outside_99_f_mu": outside(flow(mu)),
        "aggregate_mass_on_grid": grid.integrate(lq.exp()).item(),
        "kl_aggregate_prior": grid.kl(lq, lp).item(), "kl_prior_aggregate": grid.kl(lp, lq).item(),
        "prior_mass_in_holes": grid.integrate(lp.exp() * hole).item(),
        "kl_aggregate_prior_mc": kl_qp.mean().item(), "kl_aggregate_prior_mc_se": se(kl_qp),
        "kl_prior_aggregate_mc": kl_pq.mean().item(), "kl_prior_aggregate_mc_se": se(kl_pq),
        "prior_mass_in_holes_mc": (kl_pq > math.log(10)).double().mean().item(),
        "posterior_std_median": torch.exp(0.5 * log_var).median().item(),
        "log_q_aggregate": lq,
    }


# ------------------------------------------------------------------ the command


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

    from ..training.loop import load_split, train
    from ..twod.fit import sample

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
        config = _train_config(name, runs / name)
        record = train(config, progress=progress)
        state = load_checkpoint(runs / name / "model.pt")
        atomic_save({"model": state["model"], "config": {k: v for k, v in config.items()
                                                         if k not in ("out", "resume")}},
                    out / f"{name}.pt")
        models[name] = _vae(config)
        models[name].load_state_dict(state["model"])
        models[name].eval()
        metrics[name] = {k: record[k] for k in ("best_epoch", "best_valid_elbo", "test_neg_elbo",
                                                "test_reconstruction", "test_kl", "status")}
        metrics[name]["valid_elbo_per_epoch"] = [e["valid_elbo"] for e in record["epochs"]]
        metrics["seconds"][f"A:{name}"] = time.perf_counter() - t0
    base = models["base"]

    # B. amortized approximations of the base posterior
    config = _train_config("base", runs / "base")
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
            parts[family] = _trained_part(model)
            atomic_save(parts, out / "approximations.pt")
            atomic_write_json(history, runs / "approx_history.json")
        model = _approximation_model(base, family)
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
            flow = _fit_flow(family)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowlib.experiments.posterior2d",
                                description=__doc__.split("\n\n")[0])
    from ..training.config import apply_runtime, runtime_parser

    sub = p.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("run", help="train, fit and evaluate (resumable)",
                                 parents=[runtime_parser()]))
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    apply_runtime(args)
    return handle(p, args, command=f"{p.prog} {shlex.join(argv)}")


def add_arguments(r) -> None:
    """The options of ``python -m flowlib posterior2d`` (and ``python -m flowlib.experiments.posterior2d
    run``)."""
    r.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/posterior2d"))
    r.add_argument("--runs", type=pathlib.Path, default=pathlib.Path("runs/posterior2d"))
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(threads=1, handler=handle)  # one thread by default: the timings it records assume it


def handle(p, args, command: str | None = None) -> int:
    run(args.out, args.runs, progress=not args.quiet, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
