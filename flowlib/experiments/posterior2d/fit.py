"""Stage C: per-digit fits. For one test image, a static flow of each family, then a diagonal
affine map (:func:`~.models.fit_flow`), is fitted to its posterior alone by reverse KL with the
library's loop (:func:`flowlib.twod.fit.fit_reverse_kl`): no amortization, the family's own limit."""

from __future__ import annotations

import torch

from ...model.vae import VAE, log_standard_normal
from ...training.seeding import seed_everything
from ...twod.fit import fit_reverse_kl
from .models import fit_flow
from .protocol import FIT, PROTOCOL

__all__ = ["fit_digit"]


def fit_digit(base: VAE, x: torch.Tensor, family: str, mean: torch.Tensor, log_var: torch.Tensor,
              progress: bool = False):
    """Stage C: a static flow of ``family`` fitted to ``p(z | x)`` alone by reverse KL; as in
    stage B the flow acts on unit-scale noise and a diagonal affine map comes last, started at
    ``N(mean, diag exp(log_var))``. Reverse KL seeks one mode: the start decides which."""
    seed_everything(PROTOCOL["seed"])
    flow = fit_flow(family)
    with torch.no_grad():
        flow[len(flow) - 1].m.copy_(mean)
        flow[len(flow) - 1].log_s.copy_(0.5 * log_var)
    base.requires_grad_(False)

    def U(z):
        return -(base.log_p_x_given_z(x[None], z[:, None])[:, 0] + log_standard_normal(z))

    curve = fit_reverse_kl(flow, U, steps=FIT["steps"], batch_size=FIT["batch_size"], lr=FIT["lr"],
                           progress=progress, generator=torch.Generator().manual_seed(PROTOCOL["seed"]))
    return flow.eval(), curve
