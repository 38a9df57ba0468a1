"""Brute-force Jacobians: the test oracle for every flow's log-determinant.

``log|det df/dz|`` is computed the slow, obviously correct way: the full
Jacobian by automatic differentiation, then ``torch.linalg.slogdet``. Use float64.
"""

from __future__ import annotations

import torch

__all__ = ["batch_jacobian", "autograd_logdet", "check_logdet"]


def batch_jacobian(flow, z: torch.Tensor, context: torch.Tensor | None = None,
                   return_cross: bool = False):
    """Per-sample Jacobians ``d f(z)_b / d z_b`` of shape ``(B, D, D)``.

    The Jacobian of the whole batch ``(B, D, B, D)`` is computed and its diagonal
    blocks returned; with ``return_cross=True`` also the largest entry of the
    off-diagonal blocks, which is zero exactly when samples do not interact.
    """
    full = torch.autograd.functional.jacobian(lambda x: flow(x, context)[0], z)
    B = z.shape[0]
    idx = torch.arange(B)
    per_sample = full[idx, :, idx, :]
    if not return_cross:
        return per_sample
    mask = ~torch.eye(B, dtype=torch.bool)
    cross = full.permute(0, 2, 1, 3)[mask].abs().max() if B > 1 else z.new_zeros(())
    return per_sample, cross


def autograd_logdet(flow, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """``log|det J|`` of the brute-force Jacobian, shape ``(B,)``."""
    return torch.linalg.slogdet(batch_jacobian(flow, z, context)).logabsdet


def check_logdet(flow, z: torch.Tensor, context: torch.Tensor | None = None,
                 atol: float = 1e-8, rtol: float = 1e-6) -> float:
    """Assert that ``flow``'s log-determinant matches the brute-force one; return the max error.

    Raises AssertionError naming the worst sample and both values, so a learner
    sees by how much, and where, their formula is off.
    """
    _, logdet = flow(z, context)
    reference = autograd_logdet(flow, z, context)
    if logdet.shape != reference.shape:
        raise AssertionError(f"logdet has shape {tuple(logdet.shape)}, expected {tuple(reference.shape)}")
    err = (logdet - reference).abs()
    worst = int(err.argmax())
    if not torch.isfinite(logdet).all() or err[worst] > atol + rtol * reference[worst].abs():
        raise AssertionError(
            f"{type(flow).__name__}: log|det| is off by {err[worst].item():.3e} at sample {worst} "
            f"(flow says {logdet[worst].item():.10g}, autograd Jacobian says {reference[worst].item():.10g})"
        )
    return err.max().item()
