"""Regenerate the book's reproduction of Rezende & Mohamed (2015), Figure 3:
planar, radial and volume-preserving (NICE) flows of length K fitted to the boxed
targets U1..U4 by minimising the free energy (eq. 15), with the paper's annealing.

    python -m flowlib figure3 --out results/figure3

writes ``results.json`` (configuration, command, git commit, machine, timings, and per
fit the final KL estimate with its standard error and the training curve) and
``states.pt`` (every fitted flow's state dict, a few hundred kB, loaded by the chapters
through :func:`load`). What the chapters show of them (the figures, the tables, the budget
sentence) is in the book's :mod:`flowlib.book.plotting_figure3`.

Speed: the flows of one (flow, K) for the four targets share their structure, so they
are trained together as one batched computation (``torch.func.vmap`` over their stacked
parameters): the same arithmetic as four separate :func:`flowlib.twod.fit.fit_reverse_kl`
runs, each with its own parameters, gradients and Adam statistics, for about the
Python overhead of one.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import torch

from ..flows import Sequential, registry
from ..training.records import write_results
from ..twod.densities import BOXED
from ..twod.fit import fit_together, free_energy, kl_estimate

__all__ = ["FLOWS", "DEFAULTS", "build", "run", "load", "kl_table"]


# The registry's options of each flow of the figure: NICE is K additive couplings of width 16 that
# alternate the kept coordinate (in 2-D, the permutation between couplings is the swap), then its
# diagonal scaling (Dinh et al. 2014).
FLOWS = {"planar": {}, "radial": {}, "nice": {"hidden": 16}}

DEFAULTS = {
    "flows": ["planar", "radial", "nice"],
    "K": [2, 8, 32],
    "targets": ["U1", "U2", "U3", "U4"],
    "steps": 2000,
    "batch_size": 256,
    "lr": 0.04,
    "optimizer": "adam",
    "anneal_steps": 1000,
    "cosine": True,
    "eval_samples": 20_000,
    "log_every": 20,
    "seed": 0,
    "restarts": 2,
}


def build(flow: str, K: int) -> Sequential:
    """The flow ``flow`` (one of :data:`FLOWS`) of length ``K`` on R^2, freshly initialised."""
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; expected one of {sorted(FLOWS)}")
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive int, got {K!r}")
    return registry.build(flow, 2, length=K, **FLOWS[flow])


# the code a Figure 3 run depends on: its commit is only meaningful if these are committed
_SOURCES = ("flowlib/experiments/figure3.py", "flowlib/twod/fit.py", "flowlib/twod/densities.py",
            "flowlib/twod/grid.py",
            "flowlib/cli.py",
            *(f"flowlib/flows/{m}.py" for m in ("base", "planar", "radial", "nice", "nets", "sequential")))


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(out, *, flows=None, K=None, targets=None, steps=None, batch_size=None, lr=None, optimizer=None,
        anneal_steps=None, cosine=None, eval_samples=None, log_every=None, seed=None, restarts=None,
        progress=True, command: str | None = None) -> dict:
    """Fit every (flow, K, target) and write ``out/results.json`` and ``out/states.pt``.

    Arguments left ``None`` take their value from :data:`DEFAULTS`. The targets of one
    (flow, K) are fitted together (:func:`fit_together`), each from ``restarts`` random
    initialisations, seeded with ``seed`` and the group's index. Of the restarts, the one
    with the lowest free energy on ``eval_samples // 4`` fresh samples is kept (reverse KL
    often drops a mode from an unlucky start); its KL is then estimated from
    ``eval_samples`` other fresh samples as ``F + log Z``, with ``log Z`` of the boxed target.
    """
    given = {"flows": flows, "K": K, "targets": targets, "steps": steps, "batch_size": batch_size, "lr": lr,
             "optimizer": optimizer, "anneal_steps": anneal_steps, "cosine": cosine,
             "eval_samples": eval_samples, "log_every": log_every, "seed": seed, "restarts": restarts}
    config = {k: (DEFAULTS[k] if v is None else v) for k, v in given.items()}
    for name in config["flows"]:
        build(name, 1)
    for name in config["targets"]:
        if name not in BOXED:
            raise ValueError(f"unknown target {name!r}; expected one of {sorted(BOXED)}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    log_Z = {name: BOXED[name].log_partition() for name in config["targets"]}
    fits, states = [], {}
    started, cpu_started, load_start = time.perf_counter(), time.process_time(), _load()
    groups = [(f, k) for f in config["flows"] for k in config["K"]]
    bar = tqdm(groups, desc="figure 3", disable=not progress)
    for index, (flow_name, k) in enumerate(bar):
        bar.set_postfix_str(f"{flow_name} K={k}")
        seed_i = config["seed"] * 10_000 + index
        torch.manual_seed(seed_i)
        R = config["restarts"]
        jobs = [(target, r) for target in config["targets"] for r in range(R)]
        flows = [build(flow_name, k) for _ in jobs]
        t0 = time.perf_counter()
        curve = fit_together(flows, [BOXED[t] for t, _ in jobs], steps=config["steps"],
                             batch_size=config["batch_size"], lr=config["lr"], optimizer=config["optimizer"],
                             anneal=True, anneal_steps=config["anneal_steps"], cosine=config["cosine"],
                             log_every=config["log_every"], generator=torch.Generator().manual_seed(seed_i),
                             progress=progress)
        seconds = time.perf_counter() - t0
        for j, target in enumerate(config["targets"]):
            select_seed, eval_seed = 2 * 10**6 + seed_i * 10 + j, 10**6 + seed_i * 10 + j
            n_select = max(2, config["eval_samples"] // 4)
            candidates = [
                free_energy(flows[j * R + r], BOXED[target], n=n_select,
                            generator=torch.Generator().manual_seed(select_seed))[0]
                for r in range(R)
            ]
            best = min(range(R), key=candidates.__getitem__)
            flow = flows[j * R + best]
            kl, kl_se = kl_estimate(flow, BOXED[target], log_Z[target], n=config["eval_samples"],
                                    generator=torch.Generator().manual_seed(eval_seed))
            key = f"{flow_name}/K={k}/{target}"
            states[key] = {n: p.detach().clone() for n, p in flow.state_dict().items()}
            fits.append({
                "key": key, "flow": flow_name, "K": k, "target": target,
                "kl": kl, "kl_se": kl_se, "free_energy": kl - log_Z[target], "log_Z": log_Z[target],
                "eval_seed": eval_seed, "n_parameters": sum(p.numel() for p in flow.parameters()),
                "restart_kls": [round(F + log_Z[target], 4) for F in candidates], "chosen_restart": best,
                "curve": {"step": curve.steps, "beta": curve.beta,
                          "free_energy": [round(v[j * R + best], 4) for v in curve.free_energy]},
                "group_train_seconds": round(seconds, 2),
            })
            if progress:
                tqdm.write(f"{key}: KL = {kl:.3f} +- {kl_se:.3f} nats (restarts: "
                           f"{', '.join(f'{c + log_Z[target]:.3f}' for c in candidates)}; {seconds:.0f} s)")
    results = {
        "description": "Rezende & Mohamed (2015) Figure 3 reproduction: reverse-KL fits of flows of "
                       "length K to the boxed targets U1..U4 (flowlib.twod.densities.Boxed, lim 4, "
                       "wall 0.1). kl = F + log Z, its standard error from eval_samples Monte Carlo samples, "
                       "for the best of `restarts` initialisations by the free energy on other samples "
                       "(restart_kls: every restart's KL on those samples).",
        "load_average_start": load_start,
        "load_average_end": _load(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "total_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "config": config,
        "fits": fits,
    }
    command = command or "flowlib.experiments.figure3.run (called from Python)"
    return write_results(out, results, command=command, states=states, sources=_SOURCES)


def load(folder) -> tuple[dict, dict]:
    """``(results, flows)`` from a folder written by :func:`run`; ``flows[key]`` is the fitted
    flow for ``key = "flow/K=k/target"``, rebuilt and loaded from ``states.pt``."""
    folder = pathlib.Path(folder)
    if not (folder / "results.json").is_file() or not (folder / "states.pt").is_file():
        raise FileNotFoundError(
            f"{folder} holds no Figure 3 results: expected results.json and states.pt "
            "(made by 'python -m flowlib figure3 --out FOLDER')"
        )
    results = json.loads((folder / "results.json").read_text())
    states = torch.load(folder / "states.pt", weights_only=True)
    flows = {}
    for fit in results["fits"]:
        flow = build(fit["flow"], fit["K"])
        flow.load_state_dict(states[fit["key"]])
        flows[fit["key"]] = flow.eval()
    return results, flows


def kl_table(results: dict, flow: str) -> dict[str, dict[int, tuple[float, float]]]:
    """``table[target][K] = (kl, kl_se)`` for one flow, from :func:`run`'s results."""
    table: dict[str, dict[int, tuple[float, float]]] = {}
    for fit in results["fits"]:
        if fit["flow"] == flow:
            table.setdefault(fit["target"], {})[fit["K"]] = (fit["kl"], fit["kl_se"])
    return table


# ------------------------------------------------------------------ command line


def add_arguments(f) -> None:
    """The options of ``python -m flowlib figure3``."""
    from ..training.config import int_at_least, positive_float
    from ..twod.densities import TARGETS

    f.add_argument("--out", required=True, type=pathlib.Path, help="results folder (created)")
    f.add_argument("--flows", nargs="+", choices=sorted(FLOWS), default=DEFAULTS["flows"])
    f.add_argument("--K", nargs="+", type=int_at_least(1), default=DEFAULTS["K"], help="flow lengths")
    f.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=DEFAULTS["targets"])
    f.add_argument("--steps", type=int_at_least(1), default=DEFAULTS["steps"])
    f.add_argument("--batch-size", type=int_at_least(1), default=DEFAULTS["batch_size"])
    f.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"])
    f.add_argument("--optimizer", choices=("adam", "rmsprop"), default=DEFAULTS["optimizer"])
    f.add_argument("--anneal-steps", type=int_at_least(1), default=DEFAULTS["anneal_steps"],
                   help="beta_t = min(1, 0.01 + t / ANNEAL_STEPS); the paper's 10000")
    f.add_argument("--constant-lr", dest="cosine", action="store_false", default=DEFAULTS["cosine"],
                   help="no cosine decay of the learning rate")
    f.add_argument("--eval-samples", type=int_at_least(2), default=DEFAULTS["eval_samples"])
    f.add_argument("--seed", type=int_at_least(0), default=DEFAULTS["seed"])
    f.add_argument("--restarts", type=int_at_least(1), default=DEFAULTS["restarts"],
                   help="random initialisations per fit; the one with the lowest free energy is kept")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(threads=1, handler=handle)  # small tensors: one thread is as fast


def handle(p, args, command: str | None = None) -> int:
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} exists and is not a folder")
    results = run(
        args.out, flows=args.flows, K=args.K, targets=args.targets, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, anneal_steps=args.anneal_steps,
        cosine=args.cosine, eval_samples=args.eval_samples, seed=args.seed, restarts=args.restarts,
        progress=not args.quiet, command=command,
    )
    print(f"{args.out}: {len(results['fits'])} fits in {results['total_seconds']:.0f} s")
    return 0
