"""Command line: ``python -m flowlib train ...``, ``python -m flowlib evaluate DIR ...`` and
``python -m flowlib figure3 --out DIR`` (the book's reproduction of Rezende & Mohamed's Figure 3).

Bad arguments (an unknown flow or data set, an impossible size, a missing run folder)
exit with code 2 and a message listing what is valid, before anything is written.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from .data import DATASETS
from .flows.registry import FLOWS
from .flows.sylvester import VARIANTS

__all__ = ["main", "parser"]


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flowlib", description="Train and evaluate flow VAEs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE; writes DIR/metrics.json and DIR/model.pt")
    t.add_argument("--data", required=True, choices=DATASETS)
    t.add_argument("--flow", required=True, choices=FLOWS)
    t.add_argument("--flow-length", type=_int_at_least(0), default=1, help="K, the number of flow layers")
    t.add_argument("--epochs", type=_int_at_least(1), required=True)
    t.add_argument("--out", required=True, type=pathlib.Path, help="run folder (created)")
    t.add_argument(
        "--subset",
        type=_int_at_least(1),
        default=None,
        help="train on a fixed random subset of N training images",
    )
    t.add_argument("--seed", type=_int_at_least(0), default=0)
    g = t.add_mutually_exclusive_group()
    g.add_argument(
        "--amortized",
        dest="amortized",
        action="store_true",
        default=True,
        help="flow parameters predicted from the encoder's features h (default)",
    )
    g.add_argument("--static", dest="amortized", action="store_false", help="free flow parameters")
    t.add_argument("--latent-dim", type=_int_at_least(1), default=40)
    t.add_argument(
        "--hidden",
        type=_int_at_least(1),
        nargs="+",
        default=[300, 300],
        help="MLP hidden sizes of the encoder (the decoder mirrors them)",
    )
    t.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    t.add_argument("--sylvester-variant", choices=VARIANTS, default="orthogonal")
    t.add_argument("--batch-size", type=_int_at_least(1), default=100)
    t.add_argument("--lr", type=_positive_float, default=1e-3)
    t.add_argument("--optimizer", choices=("adam", "adamax"), default="adam")
    t.add_argument("--warmup", type=_int_at_least(0), default=10, help="KL warm-up epochs (beta 0 -> 1)")
    t.add_argument(
        "--patience",
        type=_int_at_least(1),
        default=50,
        help="stop after this many epochs without a better validation ELBO",
    )
    t.add_argument(
        "--binarize",
        choices=("dynamic", "static"),
        default="dynamic",
        help="mnist / fashion-mnist: fresh Bernoulli sample per epoch, or one fixed sample",
    )
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="add the importance-sampled test NLL to DIR/metrics.json")
    e.add_argument("dir", type=pathlib.Path)
    e.add_argument("--importance-samples", type=_int_at_least(1), default=5000)
    e.add_argument(
        "--subset",
        type=_int_at_least(1),
        default=None,
        help="evaluate on a fixed random subset of N test images",
    )
    e.add_argument("--batch-size", type=_int_at_least(1), default=100)
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")

    _figure3_parser(sub)
    return p


def _figure3_parser(sub) -> None:
    from .experiments.figure3 import DEFAULTS, FLOWS
    from .twod.densities import TARGETS

    f = sub.add_parser(
        "figure3",
        help="fit planar, radial and NICE flows to U1..U4 (Rezende & Mohamed 2015, Figure 3); "
        "writes DIR/results.json and DIR/states.pt",
    )
    f.add_argument("--out", required=True, type=pathlib.Path, help="results folder (created)")
    f.add_argument("--flows", nargs="+", choices=sorted(FLOWS), default=DEFAULTS["flows"])
    f.add_argument("--K", nargs="+", type=_int_at_least(1), default=DEFAULTS["K"], help="flow lengths")
    f.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=DEFAULTS["targets"])
    f.add_argument("--steps", type=_int_at_least(1), default=DEFAULTS["steps"])
    f.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULTS["batch_size"])
    f.add_argument("--lr", type=_positive_float, default=DEFAULTS["lr"])
    f.add_argument("--optimizer", choices=("adam", "rmsprop"), default=DEFAULTS["optimizer"])
    f.add_argument(
        "--anneal-steps",
        type=_int_at_least(1),
        default=DEFAULTS["anneal_steps"],
        help="beta_t = min(1, 0.01 + t / ANNEAL_STEPS); the paper's 10000",
    )
    f.add_argument("--constant-lr", dest="cosine", action="store_false", default=DEFAULTS["cosine"],
                   help="no cosine decay of the learning rate")
    f.add_argument("--eval-samples", type=_int_at_least(2), default=DEFAULTS["eval_samples"])
    f.add_argument("--seed", type=_int_at_least(0), default=DEFAULTS["seed"])
    f.add_argument("--restarts", type=_int_at_least(1), default=DEFAULTS["restarts"],
                   help="random initialisations per fit; the one with the lowest free energy is kept")
    f.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads (default 1)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")


def _figure3(p, args) -> int:
    import shlex

    import torch

    from .experiments.figure3 import run

    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} exists and is not a folder")
    torch.set_num_threads(args.threads)
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("__main__.py", "flowlib")) else []
    command = "python -m flowlib " + shlex.join(argv) if argv else None
    results = run(
        args.out, flows=args.flows, K=args.K, targets=args.targets, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, anneal_steps=args.anneal_steps,
        cosine=args.cosine, eval_samples=args.eval_samples, seed=args.seed, restarts=args.restarts,
        progress=not args.quiet,
        command=command,
    )
    print(f"{args.out}: {len(results['fits'])} fits in {results['total_seconds']:.0f} s")
    return 0


def _check_device(p, device: str):
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        p.error(f"--device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available on this machine; use --device cpu")


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "figure3":
        return _figure3(p, args)
    _check_device(p, args.device)
    from .training.loop import TrainingDiverged, evaluate, train

    if args.command == "train":
        if args.flow != "none" and args.flow_length < 1:
            p.error(f"--flow-length must be >= 1 for --flow {args.flow} (0 only with --flow none)")
        if args.subset is not None and args.subset > 50_000:
            p.error(f"--subset must be <= 50000, the size of the training split, got {args.subset}")
        if args.out.exists() and not args.out.is_dir():
            p.error(f"--out {args.out} exists and is not a folder")
        config = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
        config["out"] = str(args.out)
        try:
            m = train(config, progress=not args.quiet)
        except FileNotFoundError as err:
            p.exit(2, f"{p.prog}: error: {err}\n")
        except TrainingDiverged as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(
            f"{args.out}: {m['status']}; best epoch {m['best_epoch']}, "
            f"test -ELBO {m['test_neg_elbo']:.2f} nats"
        )
        return 0

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
