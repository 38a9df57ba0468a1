"""What tests/test_frozen.py compares with the references frozen in this folder: the state-dict
layout of every flow and VAE, and fixed-seed training curves and importance-sampled
log-likelihoods of the MNIST rows' models. Shared by the test and ``make_frozen.py``."""

from __future__ import annotations

import functools
import math
import pathlib

import torch

from flowlib.data import data_root
from flowlib.experiments import tables as experiments
from flowlib.flows.registry import FLOWS, build
from flowlib.training.loop import build_model

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA_FOUND = (data_root() / "binarized_mnist").is_dir()
EXPERIMENTS = ("mnist", "mnist-50", "fashion-mnist")
STEPS, BATCH, WARMUP = 50, 32, 5000  # WARMUP: 10 epochs of 500 updates, as in training
IS_IMAGES, IS_SAMPLES, IS_ROWS = 4, 12, 20  # IS_ROWS // IS_IMAGES = 5 samples a chunk: 3 chunks


def _shapes(module: torch.nn.Module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _row_configs():
    for exp in EXPERIMENTS:
        protocol, rows = experiments.load_experiment(REPO / "experiments" / exp)
        for name, row in rows.items():
            yield f"{exp}/{name}", experiments.row_config(protocol, row, 0, pathlib.Path("unused"))


def state_dict_shapes() -> dict:
    """``{model name: {state-dict key: shape}}`` for every experiment row's VAE, every registry
    flow (static and amortized, every Sylvester variant) and every flow of the test harness."""
    from flowlib.flows.testing import CASES, CONTEXT_DIM

    out = {f"row/{name}": _shapes(build_model(config)) for name, config in _row_configs()}
    for name in FLOWS[1:]:
        for c in (None, 7):
            for variant in ("orthogonal", "householder", "triangular") if name == "sylvester" else ("",):
                options = {"iaf": {"hidden": 16},
                           "sylvester": {"variant": variant, "M": 3 if variant == "orthogonal" else None,
                                         "n_reflections": 2}}.get(name, {})
                flow = build(name, 5, context_dim=c, length=3, **options)
                out[f"registry/{name}{'-' + variant if variant else ''}-{'amortized' if c else 'static'}"] = (
                    _shapes(flow))
    for name, make in CASES.items():
        for dim in (1, 2, 5):
            for c in (None, CONTEXT_DIM):
                torch.manual_seed(0)
                out[f"case/{name}-d{dim}-{'amortized' if c else 'static'}"] = _shapes(make(dim, c))
    return out


def curve_cases() -> list[str]:
    """The rows of experiments/mnist (a superset of mnist-50's rows)."""
    return [name.split("/", 1)[1] for name, _ in _row_configs() if name.startswith("mnist/")]


def _config(row: str) -> dict:
    return dict(_row_configs())[f"mnist/{row}"]


@functools.cache
def _images() -> torch.Tensor:
    from flowlib.data import load

    return load("binarized-mnist", "train")[0][: STEPS * BATCH].clone()


def curves_of(row: str, dtypes=("float64", "float32"), steps: int = STEPS, ulp: bool = False) -> dict:
    """Per dtype: the loss of ``steps`` Adam updates (the row's optimizer settings, KL warm-up
    over ``WARMUP`` updates) of the row's VAE on ``steps`` batches of ``BATCH`` images,
    seed 0; then the importance-sampled log-likelihood (``IS_SAMPLES`` samples in chunks) of
    ``IS_IMAGES`` images and the single-sample ELBO parts at the trained parameters. The batches
    are the first images of binarized MNIST's training split, in order; the likelihood and the
    ELBO are those of the first batch's first images. ``ulp=True`` first moves every initial
    parameter by one unit in the last place (``p * (1 + eps)``): the sensitivity of the curve to
    rounding, which a reordering of the arithmetic cannot be expected to beat."""
    config = _config(row)
    result = {}
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        model = build_model(config).to(dtype)
        if ulp:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + torch.finfo(dtype).eps)
        data = _images()[: steps * BATCH].to(dtype)
        x = data[:BATCH]
        with torch.no_grad():
            torch.manual_seed(2)
            ll_init = model.log_likelihood(x[:IS_IMAGES], k=IS_SAMPLES, max_rows=IS_ROWS)
        opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
        losses = []
        for step in range(steps):
            loss = model.elbo(data[step * BATCH : (step + 1) * BATCH]).loss(min(1.0, step / WARMUP))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            torch.manual_seed(2)
            ll = model.log_likelihood(x[:IS_IMAGES], k=IS_SAMPLES, max_rows=IS_ROWS)
            torch.manual_seed(3)
            e = model.elbo(x[:IS_IMAGES])
        result[dtype_name] = {
            "loss": losses,
            "log_likelihood_init": ll_init.tolist(),
            "log_likelihood": ll.tolist(),
            "elbo": e.elbo.tolist(),
            "log_q": e.log_q.tolist(),
            "parameter_abs_sum": math.fsum(p.double().abs().sum().item() for p in model.parameters()),
        }
    return result


def deviations(frozen: dict, now: dict) -> dict:
    """``{dtype: {quantity: max relative difference}}`` between two :func:`curves_of` results
    (relative to ``1 + |frozen|``), over the quantities both have."""
    out = {}
    for dtype in now:
        out[dtype] = {}
        for key, value in now[dtype].items():
            a = torch.tensor(frozen[dtype][key], dtype=torch.float64)
            b = torch.tensor(value, dtype=torch.float64)
            n = min(a.numel(), b.numel()) if a.dim() else 1
            a, b = a.reshape(-1)[:n], b.reshape(-1)[:n]
            out[dtype][key] = ((a - b).abs() / (1 + a.abs())).max().item()
    return out
