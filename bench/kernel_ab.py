"""One compiled kernel against its source at another commit, in one process: a stack of that flow
(``planar``, ``radial``, ``householder``: 40 dimensions, batch 128, static, parameters moved off their
initial values), forward and backward of a reverse-KL-style loss, one thread, in alternating rounds
that swap which build of the kernel the flow calls (so that the machine's drift, large on a shared VM,
hits both alike). Prints each build's median time a call and the median of the per-round ratios.

    python bench/kernel_ab.py planar --before 2dc2c10 [--length 80] [--rounds 40] [--calls 20]
"""

from __future__ import annotations

import argparse
import ctypes
import pathlib
import statistics
import subprocess
import tempfile
import time

import torch

from flowlib.flows import kernels
from flowlib.flows.registry import build

KERNELS = pathlib.Path("flowlib/flows/kernels")


def sources_at(commit: str, folder: pathlib.Path) -> pathlib.Path:
    """The kernels' ``.c`` and ``.h`` files at ``commit`` (git), written into ``folder``."""
    root = pathlib.Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                                       text=True, check=True).stdout.strip())
    names = subprocess.run(["git", "ls-tree", "--name-only", commit, f"{KERNELS}/"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if name.endswith((".c", ".h")):
            text = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=root, capture_output=True,
                                  text=True, check=True).stdout
            (folder / pathlib.Path(name).name).write_text(text)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flow", choices=["planar", "radial", "householder"])
    parser.add_argument("--before", required=True, help="git commit whose kernel source to compare with")
    parser.add_argument("--length", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    builds = {"now": ctypes.CDLL(str(kernels._build(args.flow)))}
    with tempfile.TemporaryDirectory() as folder:
        here = kernels.SOURCES
        kernels.SOURCES = sources_at(args.before, pathlib.Path(folder))
        try:
            builds[args.before] = ctypes.CDLL(str(kernels._build(args.flow)))
        finally:
            kernels.SOURCES = here
    bound = {name: kernels.Kernel(lib, args.flow, "f32") for name, lib in builds.items()}
    torch.manual_seed(0)
    flow = build(args.flow, 40, length=args.length)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(128, 40)

    def call():
        z0 = z.clone().requires_grad_()
        zk, logdet = flow(z0)
        (0.5 * zk.square().sum() - logdet.sum()).backward()

    def use(name):
        kernels.Kernel._bound[args.flow, "f32"] = bound[name]

    for name in bound:  # warm-up
        use(name)
        for _ in range(5):
            call()
    times = {name: [] for name in bound}
    for r in range(args.rounds):
        for name in list(bound)[:: 1 if r % 2 else -1]:
            use(name)
            t0 = time.process_time()
            for _ in range(args.calls):
                call()
            times[name].append((time.process_time() - t0) / args.calls)
    for name, ts in times.items():
        print(f"{name:10s} {1e3 * statistics.median(ts):8.3f} ms a call")
    ratios = [a / b for a, b in zip(times["now"], times[args.before])]
    print(f"now / {args.before}: median of per-round ratios {statistics.median(ratios):.3f} "
          f"({args.flow} x {args.length}, batch 128 x 40, {args.rounds} rounds x {args.calls} calls)")


if __name__ == "__main__":
    main()
