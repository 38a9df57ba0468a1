"""The two-dimensional fits behind the IAF and PCP-Map chapters: planar, IAF and PCP-Map
flows fitted to the targets U1..U4 of Rezende & Mohamed (2015) by minimising the free
energy (reverse KL, their eq. 15), each with the same budget.

    python -m flowlib.experiments.fits2d --out results/fits2d

writes ``results.json`` (configuration, the command, git commit, machine, and per fit the
final free energy with its standard error, the KL estimate where the target is a proper
density, the wall-clock seconds and the training curve) and ``states.pt`` (the fitted
flows' state dicts, loaded by the chapters through :func:`load`).

The IAF stacks start with a learned diagonal :class:`~flowlib.flows.Scale`: an IAF step
has gates ``sigma`` in (0, 1), so it can only shrink volume; in a VAE the encoder's
``sigma(x)`` plays the part of this scale.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import torch

from ..flows import Sequential, registry
from ..training.records import write_results
from ..twod import densities
from ..twod.fit import fit_reverse_kl, free_energy

__all__ = ["FLOWS", "DEFAULTS", "build", "n_parameters", "targets", "run", "load"]


def _iaf(K: int, hidden: int):
    """A scaling layer, then the registry's IAF: K steps (one hidden layer of MADE width ``hidden``)
    with the variable order reversed between steps (Kingma et al. 2016)."""
    scale = registry.layer("scale", 2)  # built first: the parameters are drawn in the same order as before
    return Sequential(scale, *registry.build("iaf", 2, length=K, hidden=hidden, n_layers=1).flows)


FLOWS = {
    "planar-32": lambda: registry.build("planar", 2, length=32),
    "iaf-4": lambda: _iaf(4, hidden=8),
    "iaf-8": lambda: _iaf(8, hidden=16),
    "pcpmap": lambda: registry.layer("pcpmap", 2, hidden=32, n_layers=2),
}

DEFAULTS = {
    "flows": list(FLOWS),
    "targets": ["U1", "U2", "U3", "U4"],
    "steps": 3000,
    "batch_size": 256,
    "lr": 1e-2,
    "eval_samples": 20_000,
    "log_every": 50,
    "seed": 0,
}


def build(name: str):
    """A freshly initialised flow of the family ``name`` (one of :data:`FLOWS`)."""
    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; expected one of {sorted(FLOWS)}")
    return FLOWS[name]()


def n_parameters(flow) -> int:
    return sum(p.numel() for p in flow.parameters())


def targets() -> dict:
    """The energies fitted: the boxed targets where :mod:`flowlib.twod.densities` has them (U2..U4 are
    densities only on the box), else the plain ones. Returns ``{name: (U, log Z or None)}``."""
    boxed = getattr(densities, "BOXED", None)
    if boxed is not None:
        return {name: (U, U.log_partition()) for name, U in boxed.items()}
    return {name: (U, densities.log_partition(U) if name == "U1" else None)
            for name, U in densities.TARGETS.items()}


def run(out, *, flows=None, target_names=None, steps=None, batch_size=None, lr=None, eval_samples=None,
        seed=None, progress: bool = True, command: str | None = None) -> dict:
    """Fit every (flow, target) pair, write ``out/results.json`` and ``out/states.pt``, return the
    results. Each fit: Adam, ``steps`` steps of ``batch_size`` samples, learning rate ``lr``,
    seeded with ``seed``; then ``F`` from ``eval_samples`` fresh samples."""
    cfg = dict(DEFAULTS)
    for key, value in (("flows", flows), ("targets", target_names), ("steps", steps),
                       ("batch_size", batch_size), ("lr", lr), ("eval_samples", eval_samples),
                       ("seed", seed)):
        if value is not None:
            cfg[key] = value
    for name in cfg["flows"]:
        build(name)  # validates the name
    all_targets = targets()
    unknown = set(cfg["targets"]) - set(all_targets)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; expected some of {sorted(all_targets)}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fits, states = [], {}
    for name in cfg["flows"]:
        for target in cfg["targets"]:
            U, log_Z = all_targets[target]
            torch.manual_seed(cfg["seed"])
            flow = build(name)
            t0 = time.perf_counter()
            curve = fit_reverse_kl(flow, U, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                   log_every=cfg["log_every"], progress=progress)
            seconds = time.perf_counter() - t0
            F, se = free_energy(flow, U, n=cfg["eval_samples"], generator=torch.Generator().manual_seed(1))
            key = f"{name}/{target}"
            fits.append({
                "key": key, "flow": name, "target": target, "parameters": n_parameters(flow),
                "free_energy": F, "free_energy_se": se, "log_Z": log_Z,
                "kl": None if log_Z is None else F + log_Z, "seconds": seconds,
                "curve": {"steps": curve.steps, "free_energy": curve.free_energy},
            })
            states[key] = {k: v.detach().clone() for k, v in flow.state_dict().items()}
            kl = "" if log_Z is None else f", KL = {F + log_Z:.3f}"
            print(f"{key:18s} F = {F:.3f} +- {se:.3f}{kl}  ({seconds:.0f} s)", flush=True)
    results = {"config": cfg, "boxed_targets": getattr(densities, "BOXED", None) is not None, "fits": fits}
    return write_results(out, results, command=command, states=states)


def load(folder=None) -> tuple[dict, dict]:
    """``(results, flows)``: the contents of ``results.json`` and a dict ``key -> fitted flow``
    (``key = "flow/target"``), rebuilt and loaded from ``states.pt``.

    By default the committed fits, ``results/fits2d`` of the book's repository, found through
    :mod:`flowlib.book.paths` (so a chapter finds them wherever it runs: in ``notebooks/``, alone
    in another folder, or on Colab, where ``FLOWLIB_REPO`` names the clone). A relative ``folder``
    is taken from the repository root."""
    from ..book import paths  # the book's helpers, imported only where the committed fits are read

    folder = paths.results("fits2d") if folder is None else pathlib.Path(folder)
    if not folder.is_absolute():
        folder = paths.repository() / folder
    if not (folder / "results.json").is_file() or not (folder / "states.pt").is_file():
        raise FileNotFoundError(f"{folder} holds no 2-D fits: expected results.json and states.pt there; "
                                "make them with `python -m flowlib.experiments.fits2d --out results/fits2d`")
    results = json.loads((folder / "results.json").read_text())
    states = torch.load(folder / "states.pt", weights_only=True)
    flows = {}
    for fit in results["fits"]:
        flow = build(fit["flow"])
        flow.load_state_dict(states[fit["key"]])
        flows[fit["key"]] = flow
    return results, flows


def add_arguments(parser) -> None:
    """The options of ``python -m flowlib fits2d`` (and ``python -m flowlib.experiments.fits2d``)."""
    parser.add_argument("--out", required=True, help="folder for results.json and states.pt")
    parser.add_argument("--flows", nargs="+", choices=list(FLOWS), default=None)
    parser.add_argument("--targets", nargs="+", default=None)
    for key in ("steps", "batch_size", "eval_samples", "seed"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=handle)


def handle(p, args, command: str | None = None) -> int:
    run(args.out, flows=args.flows, target_names=args.targets, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, eval_samples=args.eval_samples, seed=args.seed, progress=not args.no_progress,
        command=command)
    return 0


def main(argv=None) -> int:
    from ..training.config import apply_runtime, runtime_parser

    parser = argparse.ArgumentParser(prog="python -m flowlib.experiments.fits2d",
                                     description=__doc__.splitlines()[0], parents=[runtime_parser()])
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    apply_runtime(args)
    return handle(parser, args, command=f"{parser.prog} {shlex.join(argv)}")


if __name__ == "__main__":
    sys.exit(main())
