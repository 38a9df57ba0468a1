"""The command line, ``python -m flowlib <subcommand>``: the application above flowlib's layers.

- ``train``: train a VAE (every setting of :class:`~flowlib.training.config.TrainConfig`; any row of
  an experiment table, see :func:`flowlib.experiments.tables.row_argv`);
- ``evaluate DIR``: add the importance-sampled test NLL to a run;
- ``run``, ``table``, ``status EXPERIMENT_DIR``: the experiment tables (also
  ``python -m flowlib.experiments ...``);
- ``figure3``, ``fits2d``, ``posterior2d``: the book's other drivers.

``--threads N`` is shared by every subcommand and applied once, here. Each subcommand is imported
when it is used. Bad arguments (an unknown flow or data set, an impossible size, a missing run
folder) exit with code 2 and a message listing what is valid, before anything is written.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import shlex
import sys

from .training.config import TrainConfig, apply_runtime, int_at_least, runtime_parser

__all__ = ["main", "parser"]


# subcommand: its help; its arguments are added (and its module imported) only when it is used
SUBCOMMANDS = {
    "train": "train a VAE; writes DIR/metrics.json and DIR/model.pt",
    "evaluate": "add the importance-sampled test NLL to DIR/metrics.json",
    "run": "train and evaluate the rows of an experiment table (resumable)",
    "table": "assemble an experiment's results into a markdown table and table.json",
    "status": "what is done, running and left of an experiment (writes status.md beside the results)",
    "figure3": "fit planar, radial and NICE flows to U1..U4 (Rezende & Mohamed 2015, Figure 3); "
               "writes DIR/results.json and DIR/states.pt",
    "fits2d": "fit planar, IAF and PCP-Map flows to U1..U4 (chapters 7 and 9); writes DIR/results.json "
              "and DIR/states.pt",
    "posterior2d": "the 2-D posteriors of chapter 11 (resumable)",
}


def _add_arguments(name: str, sp: argparse.ArgumentParser) -> None:
    if name == "train":
        TrainConfig.add_arguments(sp)
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.set_defaults(handler=_train)
    elif name == "evaluate":
        sp.add_argument("dir", type=pathlib.Path)
        sp.add_argument("--importance-samples", type=int_at_least(1), default=5000)
        sp.add_argument("--subset", type=int_at_least(1), default=None,
                        help="evaluate on a fixed random subset of N test images")
        sp.add_argument("--batch-size", type=int_at_least(1), default=100)
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--quiet", action="store_true")
        sp.set_defaults(handler=_evaluate)
    elif name in ("run", "table", "status"):
        from .experiments import tables

        tables.add_arguments(sp, name)
    else:
        module = importlib.import_module(f".experiments.{name}", __package__)
        module.add_arguments(sp)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``python -m flowlib``; with ``only``, only that subcommand's arguments are
    built (the others are listed, with their help, but not imported)."""
    p = argparse.ArgumentParser(prog="python -m flowlib", description="Train and evaluate flow VAEs, run the "
                                "book's experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in SUBCOMMANDS.items():
        # a fresh parent each: a subcommand's own default (figure3's one thread) stays its own
        sp = sub.add_parser(name, help=text, parents=[runtime_parser()])
        if only is None or name == only:
            _add_arguments(name, sp)
    return p


def _check_device(p, device: str):
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        p.error(f"--device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available on this machine; use --device cpu")


def _train(p, args, command=None) -> int:
    _check_device(p, args.device)
    from .training.loop import TrainingDiverged, train

    if args.flow != "none" and args.flow_length < 1:
        p.error(f"--flow-length must be >= 1 for --flow {args.flow} (0 only with --flow none)")
    if args.subset is not None and args.subset > 50_000:
        p.error(f"--subset must be <= 50000, the size of the training split, got {args.subset}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} exists and is not a folder")
    try:
        config = TrainConfig.from_args(args)
    except ValueError as err:
        p.error(str(err))
    try:
        m = train(config, progress=not args.quiet)
    except FileNotFoundError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {m['status']}; best epoch {m['best_epoch']}, "
          f"test -ELBO {m['test_neg_elbo']:.2f} nats")
    return 0


def _evaluate(p, args, command=None) -> int:
    _check_device(p, args.device)
    from .training.loop import evaluate

    if not (args.dir / "metrics.json").is_file() or not (args.dir / "model.pt").is_file():
        p.error(
            f"{args.dir} is not a training run: expected {args.dir}/metrics.json and {args.dir}/model.pt "
            "(made by 'python -m flowlib train --out DIR')"
        )
    try:
        m = evaluate(args.dir, args.importance_samples, args.subset, args.batch_size, args.device,
                     progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    print(
        f"{args.dir}: test NLL {m['test_nll']:.2f} +- {m['test_nll_stderr']:.2f} nats "
        f"(k = {args.importance_samples}, {m['test_nll_examples']} images); "
        f"test -ELBO on the same images {m['test_neg_elbo_same_images']:.2f} nats"
    )
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser(only=argv[0] if argv and argv[0] in SUBCOMMANDS else "")
    args = p.parse_args(argv)
    apply_runtime(args)
    return args.handler(p, args, command=f"{p.prog} {shlex.join(argv)}")
