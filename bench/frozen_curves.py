"""Fixed-seed training curves of every MNIST row against the ones frozen from the code before the
flows were made faster (``tests/frozen``; ``tests/test_frozen.py`` asserts the same comparison).

For each row and dtype it prints the largest relative difference between today's curve and the
frozen one, over the 50 updates' losses and over the importance-sampled log-likelihoods (at the
initial parameters, and after the 50 updates), next to the same differences between the frozen
curve and the old code's own curve from initial parameters moved by one unit in the last place
(``ulp``): how far rounding alone moves them. Training is chaotic in some rows, so the second
column bounds what any change of arithmetic can achieve; ``first`` is the first update at which
today's loss differs from the frozen one by more than 1e-9 (float64) or 1e-5 (float32).

    FLOWLIB_DATA=../shared/data python bench/frozen_curves.py [--rows ROW ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch

FROZEN = pathlib.Path(__file__).resolve().parents[1] / "tests" / "frozen"
sys.path.insert(0, str(FROZEN))

from frozen_cases import curve_cases, curves_of  # noqa: E402

THRESHOLD = {"float64": 1e-9, "float32": 1e-5}


def relative(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return (a - b).abs() / a.abs().clamp_min(1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=None)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    frozen = json.loads((FROZEN / "curves.json").read_text())
    ulp = json.loads((FROZEN / "curves_ulp.json").read_text())
    out = {}
    print(f"{'row':24s} {'dtype':8s} {'loss':>8s} {'ulp':>8s} {'first':>5s} {'IS init':>8s} {'IS end':>8s} "
          f"{'ulp':>8s}")
    for row in args.rows or curve_cases():
        now = curves_of(row)
        out[row] = {}
        for dtype in now:
            f, u, n = frozen[row][dtype], ulp[row][dtype], now[dtype]
            dev = relative(f["loss"], n["loss"])
            above = (dev > THRESHOLD[dtype]).nonzero()
            r = {"loss": dev.max().item(), "loss_ulp": relative(f["loss"], u["loss"]).max().item(),
                 "first_update_above_threshold": int(above[0]) if len(above) else None}
            pairs = [("log_likelihood_init", f, n), ("log_likelihood", f, n), ("log_likelihood_ulp", f, u)]
            for key, a, b in pairs:
                name = key.removesuffix("_ulp")
                r[key] = relative(a[name], b[name]).max().item()
            out[row][dtype] = r
            first = r["first_update_above_threshold"]
            first = "-" if first is None else first
            print(f"{row:24s} {dtype:8s} {r['loss']:8.1e} {r['loss_ulp']:8.1e} {first:>5} "
                  f"{r['log_likelihood_init']:8.1e} {r['log_likelihood']:8.1e} "
                  f"{r['log_likelihood_ulp']:8.1e}", flush=True)
    if args.json is not None:
        command = "python bench/frozen_curves.py" + (" --rows " + " ".join(args.rows) if args.rows else "")
        result = {"command": command, "torch": torch.__version__, "threshold": THRESHOLD, "rows": out}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
