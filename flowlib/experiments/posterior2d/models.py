"""The experiment's models, built from its protocol (:mod:`.protocol`), and the committed results
loaded back into them (:func:`load_results`)."""

from __future__ import annotations

import json
import pathlib

from ...flows import DiagonalAffine, Sequential, registry
from ...model.vae import VAE
from ...model.whitened import WhitenedFlowVAE
from ...training.checkpoint import load_checkpoint
from ...training.config import TrainConfig
from ...training.loop import build_model
from .protocol import APPROX, FAMILIES, JOINT, PROTOCOL

__all__ = ["train_config", "approximation_model", "trained_part", "family_flow", "fit_flow", "load_results"]


def train_config(name: str, out) -> dict:
    """The training config of the jointly trained VAE ``name`` (one of :data:`~.protocol.JOINT`)."""
    flow, length, amortized = JOINT[name]
    return TrainConfig.from_dict({**PROTOCOL, "flow": flow, "flow_length": length, "amortized": amortized,
                                  "resume": True, "out": str(out)}).to_dict()


def approximation_model(base: VAE, family: str) -> VAE:
    """A VAE with the base's weights and a fresh flow of ``family``, amortized on ``h`` and acting
    on the whitened noise (:class:`~flowlib.model.whitened.WhitenedFlowVAE`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {family!r}")
    flow = family_flow(family, base.h_dim)
    # the base's sizes (its x_dim is the data's, flowlib.data.X_DIM); built, not copied, so that the
    # random draws of its initialisation (overwritten by the base's weights) stay as they were
    model = WhitenedFlowVAE(base.x_dim, base.z_dim, tuple(PROTOCOL["hidden"]), flow, PROTOCOL["arch"])
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("flow.") for k in missing), (missing, unexpected)
    return model


def trained_part(model: VAE) -> dict:
    """What stage B trains: the encoder's output layers and the flow."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith(("encoder.mu.", "encoder.log_var.", "flow."))}


def family_flow(family: str, context_dim: int | None) -> Sequential | None:
    """The flow of ``family`` on the 2-D latent space, from the registry (None for the Gaussian)."""
    name, length = FAMILIES[family]
    options = {"hidden": APPROX["iaf_hidden"]} if name == "iaf" else {}
    return registry.build(name, 2, context_dim=context_dim, length=length, **options)


def fit_flow(family: str) -> Sequential:
    """Stage C's static flow: the family's flow on unit-scale noise, then a diagonal affine map."""
    flow = family_flow(family, None)
    return Sequential(*([] if flow is None else flow.flows), DiagonalAffine(2))


def load_results(folder) -> dict:
    """The committed results of ``folder``: ``base``, ``static`` (VAEs), ``approximations``
    (``{family: VAE}``), ``fits`` (``{digit index: {family: static flow}}``), ``stored``
    (``{digit index: {(kind, family): log q on the digit's grid}}``), ``aggregate`` (the aggregate
    posteriors' log densities on a grid, with ``lim`` and ``n``) and ``metrics``."""
    import numpy as np
    import torch

    folder = pathlib.Path(folder)
    for name in ("base.pt", "static-planar.pt", "approximations.pt", "fits.pt", "metrics.json", "digits.npz",
                 "aggregate.npz"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"load_results: missing {folder / name}; run "
                                    f"`python -m flowlib posterior2d --out {folder}`")
    out = {"metrics": json.loads((folder / "metrics.json").read_text())}
    for key, name in (("base", "base.pt"), ("static", "static-planar.pt")):
        state = load_checkpoint(folder / name)
        out[key] = build_model(state["config"])
        out[key].load_state_dict(state["model"])
        out[key].eval()
    out["approximations"] = {}
    for family, part in load_checkpoint(folder / "approximations.pt").items():
        model = approximation_model(out["base"], family)
        model.load_state_dict({**model.state_dict(), **part})
        out["approximations"][family] = model.eval()
    out["fits"] = {}
    for key, part in load_checkpoint(folder / "fits.pt").items():
        digit, family = key.split("/")
        flow = fit_flow(family)
        flow.load_state_dict(part)
        out["fits"].setdefault(int(digit), {})[family] = flow.eval()
    out["stored"] = {}
    with np.load(folder / "digits.npz") as f:
        for key in f.files:
            digit, kind, family = key.split("/")
            out["stored"].setdefault(int(digit), {})[(kind, family)] = torch.from_numpy(f[key])
    with np.load(folder / "aggregate.npz") as f:
        out["aggregate"] = {k: (f[k].item() if f[k].ndim == 0 else torch.from_numpy(f[k])) for k in f.files}
    return out
