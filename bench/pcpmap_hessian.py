"""Benchmark: seconds per call of the PCPMap log-determinant, d=40, batch 128, float32, CPU.

(a) flowlib: closed-form Hessian + Cholesky (``PCPMap.forward``);
(b) reference method (as in the PCP-Map code): ``vmap(hessian(potential))`` by autograd, then
    ``eigvalsh`` and the sum of log-eigenvalues.

Run: ``python bench/pcpmap_hessian.py [--threads N]`` (default: torch's thread count).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowlib.flows.pcpmap import PCPMap  # noqa: E402

DIM, BATCH, WARMUP, REPEATS = 40, 128, 3, 15


def seconds_per_call(*fns) -> list[float]:
    """Median seconds per call of each function; calls interleaved, so load changes hit all alike."""
    for _ in range(WARMUP):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flow = PCPMap(DIM)  # defaults: hidden=64, n_layers=2
    with torch.no_grad():  # move away from the near-identity initialisation
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(BATCH, DIM)

    def closed_form():
        return flow(z)[1]

    hess_single = torch.func.hessian(lambda zi: flow.potential(zi[None])[0])
    hess_batch = torch.func.vmap(hess_single)

    def reference():
        return torch.linalg.eigvalsh(hess_batch(z)).log().sum(-1)

    with torch.no_grad():
        ld_a, ld_b = closed_form(), reference()
        err = (ld_a - ld_b).abs().max().item()
        t_a, t_b = seconds_per_call(closed_form, reference)
    print(f"PCPMap log-det, d={DIM}, batch={BATCH}, float32, CPU ({torch.get_num_threads()} threads), "
          f"median of {REPEATS} after {WARMUP} warm-up runs")
    print(f"  (a) closed-form Hessian + Cholesky      : {t_a * 1e3:9.3f} ms/call")
    print(f"  (b) vmap(func.hessian) + eigvalsh (ref) : {t_b * 1e3:9.3f} ms/call")
    print(f"  ratio (b)/(a)                           : {t_b / t_a:9.1f}x")
    print(f"  max |logdet_a - logdet_b| = {err:.2e} (|logdet| ~ {ld_a.abs().mean().item():.2f})")
    if not torch.allclose(ld_a, ld_b, rtol=1e-4, atol=1e-3):
        raise SystemExit("the two log-determinants disagree")


if __name__ == "__main__":
    main()
