"""Regenerate the frozen references of tests/test_frozen.py from the code as it is now.

Run ONLY from a commit whose numbers are the reference (it was run once, before the flows were
made faster): ``python tests/frozen/make_frozen.py``. It writes

- ``state_dicts.json``: the names and shapes of every parameter and buffer of every registry flow,
  every flow of the test harness and every experiment row's VAE, so that checkpoints written by
  older code still load;
- ``curves.json``: fixed-seed training curves (float64 and float32) and importance-sampled
  log-likelihoods of every MNIST row's VAE, on the first images of binarized MNIST;
- with ``--ulp``, ``curves_ulp.json``: the same curves again from initial parameters moved by one
  unit in the last place: how far rounding alone moves them, the noise floor of a comparison.
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from frozen_cases import curve_cases, curves_of, state_dict_shapes  # noqa: E402


def main(ulp: bool):
    if ulp:  # curves from initial parameters moved by one ulp: the rounding noise floor
        out = {}
        for name in curve_cases():
            out[name] = curves_of(name, ulp=True)
            print(name, out[name]["float32"]["loss"][-1], flush=True)
        (HERE / "curves_ulp.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
        return
    (HERE / "state_dicts.json").write_text(json.dumps(state_dict_shapes(), indent=0, sort_keys=True) + "\n")
    out = {}
    for name in curve_cases():
        out[name] = curves_of(name)
        print(name, out[name]["float32"]["loss"][-1], flush=True)
    (HERE / "curves.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(ulp="--ulp" in sys.argv[1:])
