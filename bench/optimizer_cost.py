"""What Adam's update costs in a training update of an experiment's rows: work the FLOP counter of
``bench/flow_cost.py`` does not see (elementwise arithmetic over every parameter, and per parameter
tensor a few operations whatever its size). For each row: its number of parameter tensors, the time of
a whole training update (one batch, forward, backward, Adam step), and of the Adam step alone with the
training loop's optimizer (``make_optimizer``: Adam's foreach implementation) and with PyTorch's fused
CPU Adam (faster, but it rounds differently from the update that runs resume with). Medians of timed
loops, one thread, process CPU time.

    FLOWLIB_DATA=../shared/data python bench/optimizer_cost.py experiments/mnist none nice-10 pcpmap-1
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import torch
from flow_cost import new_optimizer, update  # bench/flow_cost.py, beside this script

from flowlib.data import load
from flowlib.experiments.tables import load_experiment, row_config
from flowlib.training.loop import build_model, make_optimizer


def median_ms(fn, calls: int, rounds: int = 5) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        times.append((time.process_time() - t0) / calls * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("rows", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    protocol, rows = load_experiment(args.folder)
    unknown = [name for name in args.rows if name not in rows]
    if unknown:
        parser.error(f"no rows {unknown} in {args.folder}; it has {sorted(rows)}")
    x = load(protocol["train"]["data"], "train")[0][: protocol["train"]["batch_size"]]
    print(f"{'row':26s} {'tensors':>7s} {'update ms':>9s} {'Adam ms':>8s} {'fused ms':>8s}")
    for name in args.rows:
        torch.manual_seed(0)
        model = build_model(row_config(protocol, rows[name], 0, pathlib.Path("unused")))
        opt = new_optimizer(model, make_optimizer)
        whole = median_ms(lambda model=model, opt=opt: update(model, opt, x), 10)
        model.elbo(x).loss().backward()  # gradients for the steps alone
        fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        print(f"{name:26s} {len(list(model.parameters())):7d} {whole:9.2f} {median_ms(opt.step, 50):8.2f} "
              f"{median_ms(fused.step, 50):8.2f}")


if __name__ == "__main__":
    main()
