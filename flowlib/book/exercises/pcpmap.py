"""Checks for the exercises of the PCP-Map chapter (Wang et al. 2023; Amos et al. 2017)."""

from __future__ import annotations

import torch

from ...flows.pcpmap import PCPMap
from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError, passed

__all__ = ["check_cholesky_logdet", "check_gaussian_brenier_map", "check_pcpmap_inverse"]


def _spd_batch(seed: int = 0, batch: int = 4, d: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    return X @ X.transpose(1, 2) + 0.5 * torch.eye(d, dtype=torch.float64)


def check_cholesky_logdet(fn) -> None:
    """``fn(H)`` for symmetric positive definite ``H`` of shape ``(B, d, d)`` must return
    ``log det H`` of shape ``(B,)``, computed from the Cholesky factor ``H = L L^T``."""
    H = _spd_batch()
    got = call_reader("cholesky_logdet", fn, H.clone())
    L = torch.linalg.cholesky(H)
    diag_L = L.diagonal(dim1=-2, dim2=-1)
    expected = torch.linalg.slogdet(H).logabsdet
    mistakes = {
        "It matches sum_i log L_ii, half the answer: det H = det L det L^T = (prod_i L_ii)^2, so "
        "log det H = 2 sum_i log L_ii.": diag_L.log().sum(-1),
        "It matches sum_i log H_ii: the diagonal of H is not its eigenvalues (for a non-diagonal H, "
        "prod_i H_ii >= det H by Hadamard's inequality); use the diagonal of the Cholesky factor.":
            H.diagonal(dim1=-2, dim2=-1).log().sum(-1),
        "It matches prod_i L_ii^2 = det H itself: take the logarithm (a sum of logs never overflows).":
            diag_L.prod(-1) ** 2,
    }
    check_with_mistakes("cholesky_logdet", got, expected, mistakes,
                        hint="L = torch.linalg.cholesky(H); return 2 * log(diag(L)).sum(-1).")


def check_gaussian_brenier_map(fn) -> None:
    """``fn(Sigma)`` must return the matrix ``A`` of the Brenier map ``T(z) = m + A z`` that pushes
    ``N(0, I)`` to ``N(m, Sigma)``: ``A`` symmetric positive definite with ``A A = Sigma``, the
    principal square root (``T`` is then the gradient of the convex ``m.z + z^T A z / 2``)."""
    Sigma = _spd_batch(seed=3, batch=1, d=3)[0]
    got = call_reader("gaussian_brenier_map", fn, Sigma.clone())
    evals, evecs = torch.linalg.eigh(Sigma)
    expected = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    if isinstance(got, torch.Tensor) and got.shape == Sigma.shape:
        A = got.detach().to(torch.float64)
        pushes_forward = torch.allclose(A @ A.T, Sigma, atol=1e-8, rtol=1e-6)
        if pushes_forward and not torch.allclose(A, A.T, atol=1e-8, rtol=1e-6):
            raise ExerciseError(
                "gaussian_brenier_map: your A satisfies A A^T = Sigma, so z -> m + A z does push N(0, I) "
                "to N(m, Sigma), but A is not symmetric (a Cholesky factor is triangular), so the map is "
                "not the gradient of any potential and not the optimal (Brenier) map. Use the "
                "symmetric square root: A = V diag(sqrt(lambda)) V^T from torch.linalg.eigh(Sigma).")
        if pushes_forward and (torch.linalg.eigvalsh(0.5 * (A + A.T)) < 0).any():
            raise ExerciseError(
                "gaussian_brenier_map: A is a symmetric square root of Sigma, but not positive definite: "
                "a gradient of a convex function has a positive semi-definite Jacobian. Take the "
                "positive square roots of the eigenvalues.")
    mistakes = {
        "It matches Sigma itself: z -> m + Sigma z gives covariance Sigma^2; you need the square root.":
            Sigma,
        "It matches the entrywise square root torch.sqrt(Sigma): a matrix square root acts on the "
        "eigenvalues, V diag(sqrt(lambda)) V^T.": Sigma.abs().sqrt(),
    }
    check_with_mistakes("gaussian_brenier_map", got, expected, mistakes,
                        hint="eigh gives Sigma = V diag(lambda) V^T; return V diag(sqrt(lambda)) V^T.")


def _pcpmap_case(seed: int = 0):
    torch.manual_seed(seed)
    flow = PCPMap(3, hidden=8).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.4 * torch.randn_like(p))
    z_true = 1.5 * torch.randn(16, 3, dtype=torch.float64)
    with torch.no_grad():
        y = flow.gradient(z_true)
    return flow, z_true, y


def check_pcpmap_inverse(fn, atol: float = 1e-5) -> None:
    """``fn(flow, y)`` must return ``z`` with ``flow.gradient(z) = y`` (``T^{-1}(y)``) for a static
    :class:`~flowlib.flows.PCPMap` ``flow`` and ``y`` of shape ``(B, d)``, e.g. by minimising the
    convex ``G(z) - <z, y>`` with ``torch.optim.LBFGS``; accurate to ``atol`` in ``z``."""
    flow, z_true, y = _pcpmap_case()
    got = call_reader("pcpmap_inverse", fn, flow, y.clone())
    if not isinstance(got, torch.Tensor) or got.shape != y.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ExerciseError(f"pcpmap_inverse: expected a tensor of shape {tuple(y.shape)}, got {shape}")
    got = got.detach().to(torch.float64)
    with torch.no_grad():
        residual = (flow.gradient(got) - y).norm(dim=-1).max().item()
        forward_of_y = flow.gradient(y)
    mistakes = {
        "It returns y unchanged: start from y, but then minimise G(z) - <z, y> (its gradient is "
        "T(z) - y) until the gradient vanishes.": y,
        "It returns T(y), the forward map applied to y: the inverse solves T(z) = y for z.": forward_of_y,
    }
    check_with_mistakes("pcpmap_inverse", got, z_true, mistakes, atol=atol, rtol=0.0,
                        hint=f"the residual max ||T(z) - y|| of your z is {residual:.2e}; minimise "
                             "G(z) - <z, y> to a smaller gradient (tolerance_grad, max_iter).")
    passed(f"T(z) = y to max residual {residual:.1e}")
