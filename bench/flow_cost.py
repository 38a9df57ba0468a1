"""Cost of each row of an experiment table: seconds per training epoch, as a ratio to the
no-flow row, all measured side by side in one process.

Every row's VAE (built from the experiment's protocol and row files) is timed on the same
``--batches`` updates of binarized MNIST, interleaved over ``--repeats`` rounds (median), so
that a change in machine load hits every row alike. The epoch time is extrapolated
(``seconds / batches * updates per epoch``).

    FLOWLIB_DATA=../shared/data python bench/flow_cost.py experiments/mnist \
        [--batches 20] [--repeats 3] [--threads 1] [--json results/mnist/cost.json]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import statistics
import time

import torch
from tqdm.auto import tqdm

from flowlib.data import load
from flowlib.experiments import load_experiment, row_config
from flowlib.train import build_model


def time_updates(model, x, batch_size, batches):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for b in range(batches):
        loss = model.elbo(x[b * batch_size : (b + 1) * batch_size]).loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    protocol, rows = load_experiment(args.folder)
    if "none" not in rows:
        raise SystemExit(f"{args.folder} has no 'none' row to take ratios against")
    batch_size = protocol["train"]["batch_size"]
    x, _ = load(protocol["train"]["data"], "train")
    updates_per_epoch = math.ceil(len(x) / batch_size)
    x = x[: args.batches * batch_size]
    models = {name: build_model(row_config(protocol, row, 0, pathlib.Path("unused")))
              for name, row in rows.items()}
    for model in models.values():  # warm-up
        time_updates(model, x, batch_size, 2)
    times = {name: [] for name in models}
    for _ in tqdm(range(args.repeats), desc="rounds"):
        for name, model in models.items():
            times[name].append(time_updates(model, x, batch_size, args.batches))
    base = statistics.median(times["none"])
    result = {
        "command": "python bench/flow_cost.py " + " ".join(
            [str(args.folder), f"--batches {args.batches}", f"--repeats {args.repeats}",
             f"--threads {args.threads}"]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads},
        "rows": {
            name: {"label": rows[name]["label"],
                   "seconds_per_epoch": statistics.median(ts) / args.batches * updates_per_epoch,
                   "ratio": statistics.median(ts) / base,
                   "parameters": sum(p.numel() for p in models[name].parameters())}
            for name, ts in times.items()
        },
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s); "
          f"{args.batches} updates x {args.repeats} rounds")
    print(f"{'row':26s} {'s/epoch':>8s} {'ratio':>6s} {'params':>9s}")
    for name, r in sorted(result["rows"].items(), key=lambda kv: kv[1]["ratio"]):
        print(f"{name:26s} {r['seconds_per_epoch']:8.1f} {r['ratio']:6.2f} {r['parameters']:9d}")
    if args.json is not None:
        from flowlib.checkpoint import atomic_write_json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(result, args.json)


if __name__ == "__main__":
    main()
