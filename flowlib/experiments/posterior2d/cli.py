"""The experiment's command line: ``python -m flowlib posterior2d [--out DIR] [--runs DIR]``, also
``python -m flowlib.experiments.posterior2d run ...`` (the command its results record)."""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from ...training.config import apply_runtime, runtime_parser
from .run import run

__all__ = ["main", "add_arguments", "handle"]

DESCRIPTION = ("The experiment behind the chapter \"Looking at the posterior\": VAEs with a "
               "two-dimensional latent space on statically binarized MNIST, where the true posterior can "
               "be computed on a grid.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowlib.experiments.posterior2d", description=DESCRIPTION)
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
