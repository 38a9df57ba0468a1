"""Experiment tables: one configuration file per row, one protocol shared by every row.

An experiment folder (e.g. ``experiments/mnist``) holds ``protocol.json`` (the training and
evaluation settings every row shares, the seeds, and where runs and results go) and
``rows/<name>.json`` (what differs between rows: the posterior flow). Running a row trains
it with :func:`flowlib.training.loop.train`, adds the importance-sampled NLL with
:func:`flowlib.training.loop.evaluate`, and copies the small results (metrics, a few images) to the
results folder, where ``table`` assembles them (mean +- std over seeds)::

    python -m flowlib.experiments run experiments/mnist --rows none iaf-2 --seeds 0
    python -m flowlib.experiments table experiments/mnist

Runs are resumable: an interrupted row continues from its ``last.pt``, and raising
``epochs`` in the protocol extends a finished row rather than restarting it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shlex
import shutil
import statistics
import sys

from ..training.records import git_commit

__all__ = ["load_experiment", "row_config", "row_argv", "run_row", "collect", "format_table", "seeds_for",
           "status", "evaluation_subset", "COMMANDS", "add_arguments", "add_subcommands", "handle", "main"]

# Keys a row file may set; everything else comes from the protocol.
ROW_KEYS = ("flow", "flow_length", "amortized", "sylvester_variant", "sylvester_M", "sylvester_reflections")
ROW_INFO = ("label", "paper")


def _read_json(path: pathlib.Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected a JSON file at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err})") from None


def _repository_root(folder: pathlib.Path) -> pathlib.Path:
    """The nearest ancestor of ``folder`` holding ``pyproject.toml``; else the working directory."""
    for parent in folder.resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return pathlib.Path.cwd()


def load_experiment(folder) -> tuple[dict, dict[str, dict]]:
    """``(protocol, rows)`` of an experiment folder; rows keyed by file stem, in name order.

    The protocol's ``runs`` and ``results`` folders are relative to the repository root (the
    nearest ancestor with a ``pyproject.toml``) and are returned as absolute paths, so that a
    notebook, whose working directory is ``notebooks/``, finds the same files as the command line.
    """
    folder = pathlib.Path(folder)
    protocol = _read_json(folder / "protocol.json", "experiment protocol")
    for key in ("train", "evaluate", "seeds", "runs", "results"):
        if key not in protocol:
            raise ValueError(f"{folder / 'protocol.json'}: missing the key {key!r}")
    root = _repository_root(folder)
    protocol["results"] = str(root / protocol["results"])
    # Run folders (checkpoints, hundreds of MB) may live outside the work tree, so that a fresh
    # checkout finds the runs an earlier one started: FLOWLIB_RUNS_ROOT replaces the repository root.
    runs_root = os.environ.get("FLOWLIB_RUNS_ROOT")
    protocol["runs"] = str((pathlib.Path(runs_root) if runs_root else root) / protocol["runs"])
    ev = protocol["evaluate"]
    for key in ("importance_samples", "subset"):
        if key not in ev:
            raise ValueError(f"{folder / 'protocol.json'}: 'evaluate' needs the key {key!r}")
    if not isinstance(ev.get("full_test_seeds", []), list):
        raise ValueError(f"{folder / 'protocol.json'}: 'full_test_seeds' must be a list of seeds")
    rows = {}
    for path in sorted((folder / "rows").glob("*.json")):
        row = _read_json(path, "experiment row")
        unknown = set(row) - set(ROW_KEYS) - set(ROW_INFO)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; a row may set {ROW_KEYS + ROW_INFO}")
        if "flow" not in row or "label" not in row:
            raise ValueError(f"{path}: a row needs at least 'flow' and 'label'")
        rows[path.stem] = row
    if not rows:
        raise ValueError(f"{folder / 'rows'}: no row files (*.json)")
    order = protocol.get("order", [])
    unknown = [name for name in order if name not in rows]
    if unknown:
        raise ValueError(f"{folder / 'protocol.json'}: 'order' names rows without a file: {unknown}")
    rows = {name: rows[name] for name in [*order, *(n for n in rows if n not in order)]}
    return protocol, rows


def row_config(protocol: dict, row: dict, seed: int, out: pathlib.Path) -> dict:
    """The full :func:`flowlib.training.loop.train` config of one row and seed: the protocol's
    training settings, the row's, the seed and the run folder, over :class:`TrainConfig`'s defaults;
    a table's runs always resume. ``python -m flowlib train`` builds the same config from
    :func:`row_argv`."""
    from ..training.config import TrainConfig

    config = {**protocol["train"], **{k: row[k] for k in ROW_KEYS if k in row}}
    return TrainConfig.from_dict({**config, "seed": seed, "out": str(out), "resume": True}).to_dict()


def row_argv(protocol: dict, row: dict, seed: int, out: pathlib.Path) -> list[str]:
    """The arguments of ``python -m flowlib train`` that train one row and seed of a table."""
    from ..training.config import TrainConfig

    return TrainConfig.from_dict(row_config(protocol, row, seed, out)).to_argv()


def evaluation_subset(protocol: dict, seed: int) -> int | None:
    """The number of test images a seed is evaluated on: ``None`` (the whole test set) for the
    protocol's ``full_test_seeds``, else its ``subset`` (the head of one fixed permutation)."""
    ev = protocol["evaluate"]
    return None if seed in ev.get("full_test_seeds", []) else ev["subset"]


def _images(run_dir: pathlib.Path, config: dict, n: int = 10, n_samples: int = 32):
    """Reconstruction means of ``n`` fixed test images and ``n_samples`` prior samples, as uint8."""
    import numpy as np
    import torch

    from ..training.checkpoint import load_checkpoint
    from ..training.loop import build_model, load_split

    model = build_model(config)
    model.load_state_dict(load_checkpoint(run_dir / "model.pt")["model"])
    model.eval()
    x = load_split(config, "test", n)
    g = torch.Generator().manual_seed(config["seed"])
    with torch.no_grad():
        z, _ = model.posterior(x, 1)
        recon = torch.sigmoid(model.decoder(z[0]))
        samples = torch.sigmoid(model.decoder(torch.randn(n_samples, config["latent_dim"], generator=g)))
    to_u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    return {"data": to_u8(x), "reconstruction": to_u8(recon), "samples": to_u8(samples)}, np


def run_row(folder, name: str, seed: int, progress: bool = True, train_only: bool = False,
            device: str | None = None) -> dict | None:
    """Train, evaluate and record one row and seed; returns its results record (``None`` with
    ``train_only``, which stops once the run has trained, so that a later process, with the code
    of its own day, evaluates it). ``device`` (e.g. ``"cuda"``) overrides the protocol's torch
    device for training and evaluation; the run's config records the one used."""
    from ..training.loop import PER_IMAGE_FILE, evaluate, read_metrics, train

    folder = pathlib.Path(folder)
    protocol, rows = load_experiment(folder)
    if name not in rows:
        raise ValueError(f"unknown row {name!r}; rows in {folder}: {sorted(rows)}")
    row = rows[name]
    commit = git_commit()  # fixed when the process first asked (main asks at start-up)
    run_dir = pathlib.Path(protocol["runs"]) / name / f"seed{seed}"
    config = row_config(protocol, row, seed, run_dir)
    if device is not None:
        config["device"] = device
    metrics = None
    if (run_dir / "metrics.json").is_file():
        metrics = read_metrics(run_dir)  # checked: a broken file is a ValueError naming it
        done = len(metrics.get("epochs", [])) >= config["epochs"] or \
            metrics.get("status", "").startswith("early")
        if not done or "test_neg_elbo" not in metrics:
            metrics = None
    if metrics is None:
        metrics = train(config, progress=progress)
    if train_only:
        return None
    ev = protocol["evaluate"]
    subset = evaluation_subset(protocol, seed)
    if metrics.get("test_nll_importance_samples") != ev["importance_samples"] or \
            metrics.get("test_nll_subset") != subset or "test_nll" not in metrics:
        metrics = evaluate(run_dir, ev["importance_samples"], subset, ev.get("batch_size", 100),
                           config["device"], progress=progress)
    record = {
        "row": name,
        "label": row["label"],
        "seed": seed,
        "command": f"python -m flowlib.experiments run {shlex.quote(str(folder))} "
                   f"--rows {name} --seeds {seed}" + (f" --device {device}" if device else ""),
        "git_commit": commit,
        **{k: metrics[k] for k in metrics if k != "config"},
        "stopped_early": metrics["status"].startswith("early"),
        "test_images": metrics["test_nll_examples"],
        "importance_samples": metrics["test_nll_importance_samples"],
        "config": {k: v for k, v in metrics["config"].items() if k not in ("out", "resume")},
    }
    results = pathlib.Path(protocol["results"]) / name
    results.mkdir(parents=True, exist_ok=True)
    from ..training.checkpoint import atomic_write_json

    per_image = run_dir / PER_IMAGE_FILE
    if per_image.is_file():
        shutil.copyfile(per_image, results / f".seed{seed}_per_image.tmp.npz")
        (results / f".seed{seed}_per_image.tmp.npz").replace(results / f"seed{seed}_per_image.npz")
    atomic_write_json(record, results / f"seed{seed}.json")
    images, np = _images(run_dir, config)
    tmp = results / f".seed{seed}_images.tmp.npz"
    np.savez_compressed(tmp, **images)
    tmp.replace(results / f"seed{seed}_images.npz")
    return record


def collect(folder) -> dict[str, list[dict]]:
    """Every committed result of an experiment, ``{row: [record per seed]}`` in row order."""
    protocol, rows = load_experiment(folder)
    results = pathlib.Path(protocol["results"])
    out = {}
    for name in rows:
        records = [json.loads(p.read_text()) for p in sorted((results / name).glob("seed*.json"))]
        if records:
            out[name] = records
    return out


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(folder) -> list[dict]:
    """One summary per row with results: mean and std over seeds of each reported quantity, with the
    provenance of every seed (``command``, ``git_commit``, ``test_nll_git_commit``, ``machine``) and,
    where per-image files exist, the statistics of :func:`.mnist_report.row_statistics` (key
    ``statistics``: full-test NLL with its standard error, paired gain over the row ``none``, seed
    spread on the common subset, training hours).

    The NLL and the -ELBO on its images are averaged only over the seeds evaluated on the most test
    images (``test_nll_seeds``): a mean over seeds evaluated on different images would mix the
    differences between images into the differences between seeds."""
    from . import mnist_report

    protocol, rows = load_experiment(folder)
    statistics_by_row = mnist_report.report(folder)
    summary = []
    for name, records in collect(folder).items():
        entry = {"row": name, "label": rows[name]["label"], "seeds": [r["seed"] for r in records],
                 "paper": rows[name].get("paper")}
        images = [r.get("test_images", r.get("test_nll_examples")) for r in records]
        most = max((n for n in images if n is not None), default=None)
        headline = [r for r, n in zip(records, images) if n == most]
        entry["test_nll_seeds"] = [r["seed"] for r in headline]
        for key in ("test_nll", "test_neg_elbo_same_images"):
            entry[key], entry[key + "_std"] = _mean_std([r.get(key) for r in headline])
        for key in ("test_neg_elbo", "test_kl", "test_reconstruction"):
            entry[key], entry[key + "_std"] = _mean_std([r.get(key) for r in records])
        entry["epochs"] = [len(r["epochs"]) for r in records]
        entry["best_epoch"] = [r["best_epoch"] for r in records]
        entry["stopped_early"] = [mnist_report.converged(r) for r in records]
        entry["test_images"] = images
        entry["importance_samples"] = [r.get("importance_samples", r.get("test_nll_importance_samples"))
                                       for r in records]
        entry["seconds_per_epoch"] = statistics.median(e["seconds"] for r in records for e in r["epochs"])
        for key in ("command", "git_commit", "test_nll_git_commit", "machine"):
            entry[key] = [r.get(key) for r in records]
        if name in statistics_by_row:
            entry["statistics"] = statistics_by_row[name]
        summary.append(entry)
    return summary


def seeds_for(protocol: dict, name: str) -> list[int]:
    """The seeds a row is planned with: ``row_seeds[name]`` if the protocol sets it, else ``seeds``."""
    return list(protocol.get("row_seeds", {}).get(name, protocol["seeds"]))


def status(folder, now: float | None = None) -> str:
    """A markdown report of what is done, running and left for every planned row and seed.

    *done*: a results record exists for the protocol's evaluation; *running*: the run folder's
    ``metrics.json`` was written in the last hour (epochs so far, best epoch, epochs since);
    *paused*: started but not written for an hour (``run`` resumes it); *left*: not started."""
    import time

    protocol, rows = load_experiment(folder)
    now = time.time() if now is None else now
    results, runs = pathlib.Path(protocol["results"]), pathlib.Path(protocol["runs"])
    lines = ["| row | seed | state | epochs | best epoch | test images |", "|---|---|---|---|---|---|"]
    counts = {"done": 0, "running": 0, "paused": 0, "left": 0}
    for name in rows:
        for seed in seeds_for(protocol, name):
            record_path = results / name / f"seed{seed}.json"
            metrics_path = runs / name / f"seed{seed}" / "metrics.json"
            state, epochs, best, images = "left", "", "", ""
            record = json.loads(record_path.read_text()) if record_path.is_file() else None
            ev = protocol["evaluate"]
            if record is not None and record.get("test_nll_subset") == evaluation_subset(protocol, seed) and \
                    record.get("test_nll_importance_samples") == ev["importance_samples"] and \
                    record.get("config", {}).get("epochs") == protocol["train"]["epochs"]:
                state, epochs, best = "done", len(record["epochs"]), record["best_epoch"]
                images = record["test_nll_examples"]
                state += " (early stop)" if record.get("stopped_early") else " (cap reached)"
            elif metrics_path.is_file():
                try:
                    metrics = json.loads(metrics_path.read_text())
                    epochs, best = len(metrics["epochs"]), metrics["best_epoch"]
                except (json.JSONDecodeError, KeyError):
                    metrics = {}
                recent = now - metrics_path.stat().st_mtime < 3600
                state = "running" if recent else "paused"
                if metrics.get("status", "running") != "running" and "test_neg_elbo" in metrics:
                    state = "evaluating" if recent else "trained, not evaluated"
            counts[state.split(" ")[0] if state.split(" ")[0] in counts else "running"] += 1
            lines.append(f"| {name} | {seed} | {state} | {epochs} | {best} | {images} |")
    head = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{head}\n\n" + "\n".join(lines)


def format_table(summary: list[dict]) -> str:
    """A markdown table: NLL, -ELBO on the same images, their gap, KL, seeds and epochs: the
    epochs run and, in brackets, the best epoch of each seed (one epoch count for all when equal)."""
    def fmt(m, s):
        if m is None:
            return "n/a"
        return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"

    if not summary:
        return "(no results yet)"
    lines = ["| model | test NLL (IS) | -ELBO, same images | gap | KL | seeds | epochs (best) |",
             "|---|---|---|---|---|---|---|"]
    for e in summary:
        gap = None if e["test_nll"] is None else e["test_neg_elbo_same_images"] - e["test_nll"]
        if len(set(e["epochs"])) == 1:  # one budget for every seed (a fixed-length table)
            epochs = f"{e['epochs'][0]} ({', '.join(str(b) for b in e['best_epoch'])})"
        else:  # early stopping: each seed's own length and best epoch
            epochs = ", ".join(f"{n} ({b})" for n, b in zip(e["epochs"], e["best_epoch"], strict=True))
        lines.append(
            f"| {e['label']} | {fmt(e['test_nll'], e['test_nll_std'])} | "
            f"{fmt(e['test_neg_elbo_same_images'], e['test_neg_elbo_same_images_std'])} | "
            f"{'n/a' if gap is None else f'{gap:.2f}'} | {fmt(e['test_kl'], e['test_kl_std'])} | "
            f"{len(e['seeds'])} | {epochs} |"
        )
    return "\n".join(lines)


COMMANDS = {
    "run": "train and evaluate the rows of an experiment table (resumable)",
    "table": "assemble an experiment's results into a markdown table and table.json",
    "status": "what is done, running and left of an experiment (writes status.md beside the results)",
}


def add_arguments(parser, command: str) -> None:
    """The arguments of the subcommand ``command`` (one of :data:`COMMANDS`)."""
    parser.add_argument("folder", type=pathlib.Path)
    if command == "run":
        parser.add_argument("--rows", nargs="+", help="row names (default: every row)")
        parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the protocol's)")
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--train-only", action="store_true",
                            help="train (or resume) and stop before evaluating")
        parser.add_argument("--device", default=None,
                            help="torch device for training and evaluation, e.g. cuda "
                                 "(default: the protocol's, cpu)")
    parser.set_defaults(handler=handle)


def add_subcommands(sub, parents=()) -> None:
    """The subcommands ``run``, ``table`` and ``status`` of ``python -m flowlib.experiments``;
    ``parents`` give the shared options (``--threads``)."""
    for command, text in COMMANDS.items():
        add_arguments(sub.add_parser(command, help=text, parents=list(parents)), command)


def main(argv=None) -> int:
    """``python -m flowlib.experiments run|table|status EXPERIMENT_DIR ...``."""
    from ..training.config import runtime_parser

    p = argparse.ArgumentParser(prog="python -m flowlib.experiments", description=__doc__.split("\n\n")[0])
    add_subcommands(p.add_subparsers(dest="command", required=True), [runtime_parser()])
    args = p.parse_args(argv)
    return args.handler(p, args)


def handle(p: argparse.ArgumentParser, args: argparse.Namespace, command: str | None = None) -> int:
    """Run the subcommand ``args.command`` (``run``, ``table`` or ``status``); ``p`` reports errors.
    (Each result records its own command, ``python -m flowlib.experiments run ...`` for one row.)"""
    from ..training.config import apply_runtime

    apply_runtime(args)
    git_commit()  # the code this process imported, before any later commit moves HEAD
    try:
        protocol, rows = load_experiment(args.folder)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    if args.command == "table":
        summary = summarize(args.folder)
        if not summary:
            p.error(f"no results yet under {protocol['results']}")
        from ..training.checkpoint import atomic_write_json

        atomic_write_json(summary, pathlib.Path(protocol["results"]) / "table.json")
        print(format_table(summary))
        return 0
    if args.command == "status":
        report = status(args.folder)
        results = pathlib.Path(protocol["results"])
        results.mkdir(parents=True, exist_ok=True)
        text = (f"# Status of {args.folder.as_posix()}\n\n`python -m flowlib.experiments status "
                f"{args.folder.as_posix()}`\n\n{report}\n")
        from ..training.checkpoint import atomic_write_text

        atomic_write_text(text, results / "status.md")
        print(report)
        return 0
    if getattr(args, "device", None) is not None:
        from ..training.config import torch_device

        try:
            torch_device(args.device)
        except ValueError as err:
            p.error(f"--device: {err}")
    names = args.rows or list(rows)
    unknown = [n for n in names if n not in rows]
    if unknown:
        p.error(f"unknown rows {unknown}; rows in {args.folder}: {sorted(rows)}")
    def seeds(name):
        return args.seeds if args.seeds is not None else seeds_for(protocol, name)

    for name in names:
        for seed in seeds(name):
            print(f"== {name} seed {seed}", flush=True)
            try:
                rec = run_row(args.folder, name, seed, progress=not args.quiet, train_only=args.train_only,
                              device=getattr(args, "device", None))
            except ValueError as err:  # a broken run folder: which file, and what is wrong with it
                p.exit(2, f"{p.prog}: error: {err}\n")
            if rec is None:
                print("   trained; evaluate with the same command without --train-only", flush=True)
                continue
            nll = rec.get("test_nll", math.nan)
            print(f"   {rec['label']}: test NLL {nll:.2f}, -ELBO {rec['test_neg_elbo']:.2f}, "
                  f"{len(rec['epochs'])} epochs (best {rec['best_epoch']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
