"""The Bjorck iteration's start (``flowlib/flows/bjorck.py``): ``A / ||A||_F`` as it is, against
that scaled by ``c`` so that its largest singular value is near ``sqrt 1.5`` (``bjorck._start``).

For batches of Gaussian D x M matrices (the orthogonal Sylvester row's 128 x 40 x 20 among them),
both dtypes: the steps each start takes to converge, and the time of ``orthogonalize`` forward and
backward with each start, in one process, one thread, in alternating rounds (``orthogonalize``'s
``scale_start`` off and on), medians; the ratio is the scaled start's time over the plain one's.

    python bench/bjorck_start.py [--rounds 15] [--calls 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import torch
from flow_cost import cpu_description  # bench/flow_cost.py, beside this script

from flowlib.flows import bjorck

SHAPES = ((128, 40, 20), (128, 40, 10), (128, 40, 40), (16, 7, 4))
STARTS = {"plain": False, "scaled": True}  # orthogonalize's scale_start


def steps(scale, A):
    """Bjorck steps taken from ``A / ||A||_F``, its start scaled or not."""
    keep: list = []
    bjorck._iterate(A / torch.linalg.matrix_norm(A, keepdim=True), 1000, keep, scale)
    return len(keep) - 1  # c, then the pairs (Q_k, G_k)


def seconds(scale, A, P, calls):
    t0 = time.process_time()
    for _ in range(calls):
        (bjorck.orthogonalize(A, scale_start=scale) * P).sum().backward()
    return time.process_time() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for shape in SHAPES:
        for dtype in (torch.float32, torch.float64):
            g = torch.Generator().manual_seed(0)
            A = torch.randn(shape, dtype=dtype, generator=g).requires_grad_()
            P = torch.randn(shape, dtype=dtype, generator=g)
            counts = {name: steps(scale, A.detach()) for name, scale in STARTS.items()}
            times = {name: [] for name in STARTS}
            for scale in STARTS.values():  # warm-up
                seconds(scale, A, P, 2)
            for _ in range(args.rounds):
                for name, scale in STARTS.items():
                    times[name].append(seconds(scale, A, P, args.calls) / args.calls)
            ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            row = {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "steps": counts,
                   "ms_per_call": ms, "ratio": ms["scaled"] / ms["plain"]}
            results.append(row)
            print(f"{'x'.join(map(str, shape)):>10} {row['dtype']:>8}: steps {counts['plain']:>2} -> "
                  f"{counts['scaled']:>2}, forward + backward {ms['plain']:6.2f} -> {ms['scaled']:6.2f} ms "
                  f"(ratio {row['ratio']:.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python bench/bjorck_start.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": {"platform": platform.platform(), "cpu": cpu_description(), "torch": torch.__version__,
                        "threads": 1, "clock": "process CPU time"},
            "rows": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
