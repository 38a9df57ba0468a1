"""PCP-Map's training update with and without the compiled kernels of ``flowlib/flows/spd.py``, A/B on
the same model in one process: ``spd`` (``kernels/spd.c``: the Cholesky factorization and inverse,
else LAPACK's ``torch.linalg.cholesky_ex`` and ``torch.cholesky_inverse``) and ``gram``
(``kernels/gram.c``: the elementwise work of the second layer's Jacobian and its Gram product, else
the plain operations under autograd). Rounds of ``--updates`` updates with the ``--kernels`` named,
then as many without them, ``--rounds`` times, one thread, the process's CPU time, medians. Where the
two versions of the code are separate models (``bench/flow_cost.py --baseline``), the spread between
models on a noisy machine can hide a few percent; here the model, its memory and the batches are the
same for both.

    FLOWLIB_DATA=../shared/data python bench/spd_ab.py experiments/mnist [--row pcpmap-1] \\
        [--kernels spd gram] [--rounds 8] [--updates 20]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import torch
from flow_cost import cpu_description, new_optimizer, update  # bench/flow_cost.py, beside this script

from flowlib.data import load
from flowlib.experiments.tables import load_experiment, row_config
from flowlib.flows import spd
from flowlib.training.loop import build_model, make_optimizer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", type=pathlib.Path)
    p.add_argument("--row", default="pcpmap-1")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--kernels", nargs="+", choices=["spd", "gram"], default=["spd", "gram"],
                   help="the kernels to compare against their PyTorch paths (default: both)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    protocol, rows = load_experiment(args.experiment)
    if args.row not in rows:
        p.error(f"--row: {args.experiment} has no row {args.row!r}; it has {', '.join(rows)}")
    batch = protocol["train"]["batch_size"]
    x = load(protocol["train"]["data"], "train")[0][: args.updates * batch]
    torch.manual_seed(0)
    model = build_model(row_config(protocol, rows[args.row], 0, pathlib.Path("unused")))
    opt = new_optimizer(model, make_optimizer)
    finders = {"spd": "_kernel", "gram": "_gram_kernel"}
    found = {name: getattr(spd, finders[name]) for name in args.kernels}
    if any(find(torch.zeros(1, 2, 2)) is None for find in found.values()):
        raise SystemExit("no compiled kernels here (no C compiler, or FLOWLIB_KERNELS=0): nothing to compare")

    def block(with_kernel: bool) -> float:
        for name, find in found.items():
            setattr(spd, finders[name], find if with_kernel else (lambda *tensors: None))
        try:
            t0 = time.process_time()
            for b in range(args.updates):
                update(model, opt, x[b * batch : (b + 1) * batch])
            return (time.process_time() - t0) / args.updates
        finally:
            for name, find in found.items():
                setattr(spd, finders[name], find)

    block(True), block(False)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for with_kernel in (True, False):
            times[with_kernel].append(block(with_kernel))
    with_ms, without_ms = (statistics.median(times[k]) * 1e3 for k in (True, False))
    cpu = cpu_description()
    print(f"{args.row}, one thread, {cpu['name']} (family {cpu['family']}, model {cpu['model']}, "
          f"{cpu['torch_capability']}): {args.rounds} rounds of {args.updates} updates; "
          f"median update with the kernels {' and '.join(args.kernels)} {with_ms:.1f} ms, without "
          f"{without_ms:.1f} ms (with / without {with_ms / without_ms:.3f})")


if __name__ == "__main__":
    main()
