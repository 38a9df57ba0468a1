"""The diagonal-Gaussian log-density, written once: the base distribution ``q_0`` of every flow
in the book and the VAE's prior and posterior."""

from __future__ import annotations

import math

import torch

__all__ = ["LOG_2PI", "log_standard_normal", "log_diag_normal"]

LOG_2PI = math.log(2.0 * math.pi)


def log_diag_normal(z: torch.Tensor, mu: torch.Tensor | None = None,
                    log_var: torch.Tensor | None = None) -> torch.Tensor:
    """``log N(z; mu, diag exp(log_var))`` summed over the last axis; ``mu = 0`` and ``log_var = 0``
    (the standard normal) where they are None."""
    d2 = z * z if mu is None else (z - mu) ** 2
    if log_var is None:
        return -0.5 * (d2 + LOG_2PI).sum(-1)
    return -0.5 * (d2 * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last axis."""
    return log_diag_normal(z)
