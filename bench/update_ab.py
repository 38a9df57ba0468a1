"""One training update of chosen MNIST rows, A/B in one process: the optimizer's two Adam
implementations (PyTorch's single-tensor default and the multi-tensor ``foreach`` one that
``flowlib.training.loop.make_optimizer`` picks), and other copies of flowlib, all with the same
default Adam, so that only the model's own code differs.

Interleaved rounds of ``--updates`` updates each (binarized MNIST, the protocol's batch size), one
thread, the process's CPU time, medians; printed as ratios.

    FLOWLIB_DATA=../shared/data python bench/update_ab.py experiments/mnist --rows none planar-80-static \\
        [--baseline flowlib_before ...] [--rounds 9] [--updates 30]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import torch
from flow_cost import time_updates, training_loop  # bench/flow_cost.py, beside this script

from flowlib.data import load
from flowlib.experiments.tables import load_experiment, row_config


def adam(foreach: bool):
    """An optimizer factory for :func:`flow_cost.time_updates`: Adam with or without ``foreach``."""
    return lambda model, config: torch.optim.Adam(model.parameters(), lr=config["lr"], foreach=foreach)


def build(package, protocol, row):
    torch.manual_seed(0)
    return training_loop(package).build_model(row_config(protocol, row, 0, pathlib.Path("unused")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", type=pathlib.Path)
    p.add_argument("--rows", nargs="+", default=["none"])
    p.add_argument("--baseline", nargs="*", default=[], help="other importable copies of flowlib")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--updates", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    protocol, rows = load_experiment(args.experiment)
    unknown = [r for r in args.rows if r not in rows]
    if unknown:
        p.error(f"unknown rows {unknown}; rows in {args.experiment}: {sorted(rows)}")
    batch_size = protocol["train"]["batch_size"]
    x = load(protocol["train"]["data"], "train")[0][: args.updates * batch_size]
    print(f"load average {os.getloadavg()}")
    for name in args.rows:
        # (package, foreach): today's code with both Adams, each baseline with the default one
        arms = {("flowlib", False): None, ("flowlib", True): None}
        arms.update({(b, False): None for b in args.baseline})
        models = {arm: build(arm[0], protocol, rows[name]) for arm in arms}
        times = {arm: [] for arm in arms}
        for arm, model in models.items():  # warm-up
            time_updates(model, x, batch_size, 3, time.process_time, adam(arm[1]))
        for _ in range(args.rounds):
            for arm, model in models.items():
                seconds = time_updates(model, x, batch_size, args.updates, time.process_time, adam(arm[1]))
                times[arm].append(seconds)
        ref = statistics.median(times[("flowlib", False)])
        ratios = ", ".join(f"{pkg}{' foreach' if fe else ''} {statistics.median(t) / ref:.3f}"
                           for (pkg, fe), t in times.items())
        print(f"{name}: over flowlib with the default Adam ({ref / args.updates * 1e3:.1f} ms an update): "
              f"{ratios}")


if __name__ == "__main__":
    main()
