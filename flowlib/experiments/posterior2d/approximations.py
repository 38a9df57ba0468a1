"""Stage B: the amortized approximations of one posterior. With the base VAE's decoder and encoder
trunk frozen, each family's Gaussian output layer and amortized flow are trained to maximise the
ELBO (``beta = 1``, no warm-up, no early stopping: :data:`~.protocol.APPROX`).

This loop is not :func:`flowlib.training.loop.train`, which builds its VAE from a config and trains
every parameter with KL warm-up, early stopping and resumable checkpoints, nor
:func:`flowlib.twod.fit.fit_reverse_kl`, which fits a flow to a fixed energy from its own samples:
here a part of a built model is trained on minibatches of images. Its arithmetic (the order of the
random draws included) is the one that made the committed ``results/posterior2d/approximations.pt``.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ...model.vae import VAE
from ...training.loop import mean_elbo
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
    bs = APPROX["batch_size"]
    history = [{"epoch": 0, "valid_elbo": mean_elbo(model, valid_x, 500, "cpu")["elbo"]}]
    for epoch in range(APPROX["epochs"]):
        model.train()
        perm = torch.randperm(len(train_x), generator=shuffle)
        t0 = time.perf_counter()
        for b in tqdm(range(len(train_x) // bs), desc=f"{family} epoch {epoch + 1}", leave=False,
                      disable=not progress):
            loss = model.elbo(train_x[perm[b * bs:(b + 1) * bs]]).loss(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        valid = mean_elbo(model, valid_x, 500, "cpu")["elbo"]
        history.append({"epoch": epoch + 1, "valid_elbo": valid, "seconds": time.perf_counter() - t0})
        if progress:
            tqdm.write(f"  {family}: epoch {epoch + 1}, valid ELBO {valid:.3f}")
    return model.eval(), history
