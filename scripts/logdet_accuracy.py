"""Report, per flow, the largest |logdet - log|det J_autograd|| seen at perturbed parameters.

float64: the flow's own log-det against ``slogdet`` of the brute-force Jacobian, both in float64.
float32: the flow run in float32 against the float64 brute-force reference at the same parameters.

    python scripts/logdet_accuracy.py [--seeds 5]
"""

from __future__ import annotations

import argparse

from flowlib.flows.testing import CASES, DIMS, case
from flowlib.twod.jacobian import autograd_logdet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'flow':32s} {'float64':>10s} {'float32':>10s}   (max over dims {DIMS}, static+amortized, "
          f"{args.seeds} seeds, batch 4)")
    for name in CASES:
        err64 = err32 = 0.0
        for seed in range(args.seeds):
            for dim in DIMS:
                for amortized in (False, True):
                    flow, z, context = case(name, dim, amortized, seed=seed)
                    reference = autograd_logdet(flow, z, context)
                    err64 = max(err64, (flow(z, context)[1] - reference).abs().max().item())
                    c32 = None if context is None else context.float()
                    logdet32 = flow.float()(z.float(), c32)[1].double()
                    err32 = max(err32, (logdet32 - reference).abs().max().item())
        print(f"{name:32s} {err64:10.2e} {err32:10.2e}")


if __name__ == "__main__":
    main()
