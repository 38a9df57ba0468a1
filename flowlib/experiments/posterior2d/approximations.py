"""Stage B: the amortized approximations of one posterior. With the base VAE's decoder and encoder
trunk frozen, each family's Gaussian output layer and amortized flow are trained to maximise the
ELBO (``beta = 1``, no warm-up, no early stopping: :data:`~.protocol.APPROX`), an epoch at a time
by the library's loop (:func:`flowlib.training.loop.train_epoch`, the epoch of
:func:`~flowlib.training.loop.train`), given an optimizer of the trained part only.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ...model.vae import VAE
from ...training.loop import mean_elbo, train_epoch
from ...training.seeding import seed_everything
from .models import approximation_model
from .protocol import APPROX, PROTOCOL

__all__ = ["train_approximation"]


def train_approximation(base: VAE, family: str, train_x, valid_x, progress: bool = True):
    """Stage B for one family; returns the model and its per-epoch validation ELBO."""
    seed_everything(PROTOCOL["seed"])
    model = approximation_model(base, family)
    for p in (*model.encoder.features.parameters(), *model.decoder.parameters()):
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=APPROX["lr"])
    shuffle = torch.Generator().manual_seed(PROTOCOL["seed"])
    history = [{"epoch": 0, "valid_elbo": mean_elbo(model, valid_x, 500, "cpu")["elbo"]}]
    for epoch in range(APPROX["epochs"]):
        t0 = time.perf_counter()
        train_epoch(model, opt, train_x, APPROX["batch_size"], shuffle, desc=f"{family} epoch {epoch + 1}",
                    progress=progress)
        valid = mean_elbo(model, valid_x, 500, "cpu")["elbo"]
        history.append({"epoch": epoch + 1, "valid_elbo": valid, "seconds": time.perf_counter() - t0})
        if progress:
            tqdm.write(f"  {family}: epoch {epoch + 1}, valid ELBO {valid:.3f}")
    return model.eval(), history
