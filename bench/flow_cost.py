"""Cost of each row of an experiment table: a training update and an importance-sampling
evaluation, in time and in FLOPs, as ratios to the no-flow row, all measured side by side in one
process.

Training: every row's VAE (built from the experiment's protocol and row files) is timed on the
same ``--batches`` updates of binarized MNIST, interleaved over ``--repeats`` rounds (median; the rows
in a new seeded order each round: :func:`round_orders`), so that a change in machine load hits every
row alike; each row keeps one optimizer throughout, as
training does, and each timed block starts with one untimed update (before, the first row of a
round, the no-flow VAE that every ratio divides by, was timed on memory just freed by the largest
row and came out up to 8% slower than the same code later in the round); the epoch time is extrapolated
(``seconds / batches * updates per epoch``). ``ratio`` is a row's time over the no-flow row's;
``flop_ratio`` the same for the FLOPs of one update (forward and backward, counted by
``torch.utils.flop_counter``, which counts matrix products and convolutions, not elementwise
arithmetic): the floor a row's ``ratio`` would reach if its extra time were all arithmetic of
that kind.

Evaluation: the importance-sampled log-likelihood (``VAE.log_likelihood``, ``--eval-k`` samples
per image, in the protocol's chunks of at most 50,000 decoder rows) of ``--eval-images`` test
images, timed the same way; ``eval_ratio`` and ``eval_flop_ratio`` are per image over the no-flow
row's at the same ``K``, and ``eval_images_per_second`` the throughput.

On the CPU, this code's planar, radial and Householder runs use their compiled kernels where they
build (``flowlib.flows.kernels``; the JSON's ``machine`` says which did; ``FLOWLIB_KERNELS=0`` measures
without them).

Times are the process's CPU time (``--clock cpu``, the default): on a machine shared with other
jobs, wall time also counts the waits for a core. ``--device cuda`` measures on a GPU (wall time,
``--clock wall``, with the device synchronized before every reading of the clock).
``--baseline NAME [NAME ...]`` also measures every row built by other importable copies of flowlib
under the package names NAME (e.g. the code before a change), as rows ``ROW@NAME``.

    FLOWLIB_DATA=../shared/data python bench/flow_cost.py experiments/mnist \\
        [--batches 20] [--repeats 3] [--threads 1] [--eval-k 500] [--eval-images 100] \\
        [--device cuda --clock wall] [--json results/mnist/cost.json]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import pathlib
import platform
import random
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from flowlib.data import load
from flowlib.experiments.tables import load_experiment, row_config
from flowlib.flows import kernels
from flowlib.training.config import torch_device

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def update(model, opt, x):
    loss = model.elbo(x).loss()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def synchronized(clock, device: torch.device):
    """``clock``, reading it only once the work queued on ``device`` has finished (for a GPU)."""
    if device.type != "cuda":
        return clock

    def read():
        torch.cuda.synchronize(device)
        return clock()

    return read


def cpu_description() -> dict:
    """The CPU, as far as this machine tells: its model name, family and model numbers (Linux's
    /proc/cpuinfo; a virtual machine may give only the vendor's name, "AMD EPYC", and the numbers
    tell the generation) and the vector instructions PyTorch's own kernels use here (e.g. AVX2,
    AVX512)."""
    fields = {}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return {"name": fields.get("model name", platform.processor() or platform.machine()),
            "family": fields.get("cpu family"), "model": fields.get("model"),
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def new_optimizer(model, make_optimizer=None):
    """The package's own optimizer (the training loop's ``make_optimizer``) where it has one."""
    return (torch.optim.Adam(model.parameters(), lr=1e-3) if make_optimizer is None
            else make_optimizer(model, {"optimizer": "adam", "lr": 1e-3}))


def time_updates(model, x, batch_size, batches, clock, make_optimizer=None):
    """Seconds of ``batches`` updates with a new optimizer (its first step allocates its state)."""
    return timed_updates(model, new_optimizer(model, make_optimizer), x, batch_size, batches, clock)


def time_block(model, opt, x, batch_size, batches, clock):
    """Seconds of ``batches`` updates with the row's own optimizer, kept from block to block as the
    training loop keeps it, after one untimed update: the rows are timed one after another, and
    what the row before left behind (its memory, freed for this one to reuse; the caches) is not
    counted against this one."""
    update(model, opt, x[:batch_size])
    return timed_updates(model, opt, x, batch_size, batches, clock)


def timed_updates(model, opt, x, batch_size, batches, clock):
    """Seconds of ``batches`` updates with ``opt``, on the first ``batches`` batches of ``x``."""
    t0 = clock()
    for b in range(batches):
        update(model, opt, x[b * batch_size : (b + 1) * batch_size])
    return clock() - t0


def training_loop(package: str):
    """The training-loop module of an importable copy of flowlib (``build_model``, and
    ``make_optimizer`` where it has one)."""
    try:
        return importlib.import_module(f"{package}.training.loop")
    except ModuleNotFoundError:  # a copy of flowlib from before the three-layer layout
        return importlib.import_module(f"{package}.train")


def round_orders(names, rounds: int, seed: int = 0):
    """The order of the rows in each of ``rounds`` rounds: the first as given, then shuffled (seeded),
    so that no row always follows the same one (on a VM, what the row before leaves behind, its freed
    memory and the caches' state, moved one unchanged row's time by up to 16% in session 15) and the
    median over rounds averages that effect instead of carrying it."""
    rng, order = random.Random(seed), list(names)
    for _ in range(rounds):
        yield list(order)
        rng.shuffle(order)


def time_eval(model, x, k, clock):
    t0 = clock()
    model.log_likelihood(x, k)
    return clock() - t0


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def eval_flops(model, x, k) -> int:
    # parameters that require no gradient: under no_grad, the flop counter's module hooks trip over
    # views of parameters (e.g. a static parameter expanded to the batch)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        return count_flops(lambda: model.log_likelihood(x, k))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def update_flops(model, x) -> int:
    def one():
        model.elbo(x).loss().backward()

    flops = count_flops(one)
    model.zero_grad(set_to_none=True)
    return flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-k", type=int, default=500, help="importance samples an image (0: none)")
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--clock", choices=CLOCKS, default="cpu")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (needs --clock wall)")
    parser.add_argument("--baseline", nargs="+", default=[],
                        help="package names of other copies of flowlib to measure")
    parser.add_argument("--rows", nargs="*", default=None, help="only these rows (and 'none')")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    try:
        device = torch_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    if device.type != "cpu" and args.clock != "wall":
        parser.error(f"--device {args.device} needs --clock wall (CPU time does not count the device's work)")
    clock = synchronized(CLOCKS[args.clock], device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    protocol, rows = load_experiment(args.folder)
    if "none" not in rows:
        raise SystemExit(f"{args.folder} has no 'none' row to take ratios against")
    if args.rows:
        rows = {name: row for name, row in rows.items() if name == "none" or name in args.rows}
    batch_size = protocol["train"]["batch_size"]
    x, _ = load(protocol["train"]["data"], "train")
    updates_per_epoch = math.ceil(len(x) / batch_size)
    x = x[: args.batches * batch_size].to(device)
    x_eval = load(protocol["train"]["data"], "test")[0][: args.eval_images].to(device)
    packages = ["flowlib"] + args.baseline
    models, optimizers = {}, {}
    for package in packages:
        loop = training_loop(package)
        build_model, make_optimizer = loop.build_model, getattr(loop, "make_optimizer", None)
        for name, row in rows.items():
            key = name if package == "flowlib" else f"{name}@{package}"
            torch.manual_seed(0)
            models[key] = build_model(row_config(protocol, row, 0, pathlib.Path("unused"))).to(device)
            optimizers[key] = new_optimizer(models[key], make_optimizer)
    flops = {name: update_flops(model, x[:batch_size]) for name, model in models.items()}
    for name, model in models.items():  # warm-up
        time_block(model, optimizers[name], x, batch_size, 2, clock)
    times = {name: [] for name in models}
    for order in tqdm(round_orders(models, args.repeats), desc="training rounds", total=args.repeats):
        for name in order:
            times[name].append(time_block(models[name], optimizers[name], x, batch_size, args.batches, clock))
    base = statistics.median(times["none"])
    result_rows = {
        name: {"label": rows[name.split("@")[0]]["label"],
               "seconds_per_epoch": statistics.median(ts) / args.batches * updates_per_epoch,
               "ratio": statistics.median(ts) / base,
               "flops_per_update": flops[name],
               "flop_ratio": flops[name] / flops["none"],
               "parameters": sum(p.numel() for p in models[name].parameters())}
        for name, ts in times.items()
    }
    if args.eval_k:
        with torch.no_grad():
            for model in models.values():
                model.eval()
            flops_eval = {name: eval_flops(model, x_eval, args.eval_k) for name, model in models.items()}
            eval_times = {name: [] for name in models}
            orders = round_orders(models, args.repeats)
            for order in tqdm(orders, desc="evaluation rounds", total=args.repeats):
                for name in order:
                    eval_times[name].append(time_eval(models[name], x_eval, args.eval_k, clock))
        eval_base = statistics.median(eval_times["none"])
        for name, ts in eval_times.items():
            t = statistics.median(ts)
            result_rows[name].update(
                eval_seconds_per_image=t / len(x_eval), eval_images_per_second=len(x_eval) / t,
                eval_ratio=t / eval_base, eval_flops_per_image=flops_eval[name] / len(x_eval),
                eval_flop_ratio=flops_eval[name] / flops_eval["none"])
    command = ["python bench/flow_cost.py", str(args.folder), f"--batches {args.batches}",
               f"--repeats {args.repeats}", f"--threads {args.threads}", f"--eval-k {args.eval_k}",
               f"--eval-images {args.eval_images}", f"--clock {args.clock}"]
    command += [f"--device {args.device}"] if device.type != "cpu" else []
    command += ["--baseline " + " ".join(args.baseline)] if args.baseline else []
    command += ["--rows " + " ".join(args.rows)] if args.rows else []
    result = {
        "command": " ".join(command),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "cpu": cpu_description(), "torch": torch.__version__,
                    "threads": args.threads,
                    "clock": args.clock, "load_average": os.getloadavg(), "device": str(device),
                    # which of this code's compiled kernels ran (the baselines' copies have their own)
                    "kernels": {name: device.type == "cpu" and kernels.load(name) is not None
                                for name in kernels.NAMES},
                    **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})},
        "rows": result_rows,
    }
    print(f"torch {torch.__version__} on {device}, {args.threads} thread(s), {args.clock} time; "
          f"{args.batches} updates x {args.repeats} rounds; "
          f"evaluation K = {args.eval_k} on {len(x_eval)} images; load {os.getloadavg()[0]:.2f}")
    print(f"{'row':34s} {'s/epoch':>8s} {'ratio':>6s} {'flops':>6s} {'r/f':>5s} "
          f"{'img/s':>7s} {'eval':>6s} {'flops':>6s} {'r/f':>5s} {'params':>9s}")
    for name, r in sorted(result["rows"].items(), key=lambda kv: kv[1]["ratio"]):
        ev = (f"{r['eval_images_per_second']:7.2f} {r['eval_ratio']:6.2f} {r['eval_flop_ratio']:6.2f} "
              f"{r['eval_ratio'] / r['eval_flop_ratio']:5.2f}") if args.eval_k else ""
        print(f"{name:34s} {r['seconds_per_epoch']:8.1f} {r['ratio']:6.2f} {r['flop_ratio']:6.2f} "
              f"{r['ratio'] / r['flop_ratio']:5.2f} {ev} {r['parameters']:9d}")
    if args.json is not None:
        from flowlib.training.checkpoint import atomic_write_json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(result, args.json)


if __name__ == "__main__":
    main()
