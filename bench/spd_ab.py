"""PCP-Map's training update with the compiled Cholesky kernel (``flowlib/flows/kernels/spd.c``) and
with LAPACK (``torch.linalg.cholesky_ex`` and ``torch.cholesky_inverse``), A/B on the same model in
one process: rounds of ``--updates`` updates with the kernel, then as many with LAPACK, ``--rounds``
times, one thread, the process's CPU time, medians. Where the two versions of the code are separate
models (``bench/flow_cost.py --baseline``), the spread between models on a noisy machine can hide a
few percent; here the model, its memory and the batches are the same for both.

    FLOWLIB_DATA=../shared/data python bench/spd_ab.py experiments/mnist [--row pcpmap-1] \\
        [--rounds 8] [--updates 20]
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
    if spd._kernel(torch.zeros(1, 2, 2)) is None:
        raise SystemExit("no spd kernel here (no C compiler, or FLOWLIB_KERNELS=0): nothing to compare")
    kernel = spd._kernel

    def block(with_kernel: bool) -> float:
        spd._kernel = kernel if with_kernel else (lambda *tensors: None)
        try:
            t0 = time.process_time()
            for b in range(args.updates):
                update(model, opt, x[b * batch : (b + 1) * batch])
            return (time.process_time() - t0) / args.updates
        finally:
            spd._kernel = kernel

    block(True), block(False)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for with_kernel in (True, False):
            times[with_kernel].append(block(with_kernel))
    kernel_ms, lapack_ms = (statistics.median(times[k]) * 1e3 for k in (True, False))
    cpu = cpu_description()
    print(f"{args.row}, one thread, {cpu['name']} (family {cpu['family']}, model {cpu['model']}, "
          f"{cpu['torch_capability']}): {args.rounds} rounds of {args.updates} updates; "
          f"median update with the kernel {kernel_ms:.1f} ms, with LAPACK {lapack_ms:.1f} ms "
          f"(kernel / LAPACK {kernel_ms / lapack_ms:.3f})")


if __name__ == "__main__":
    main()
