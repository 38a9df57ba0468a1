"""Checks for the exercises of the chapter "Planar flows" (Rezende & Mohamed 2015, Sec. 4.1, A.1).

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,  m(x) = -1 + log(1 + e^x)      (invertibility)
    log|det df/dz| = log|1 + h'(w^T z + b) w^T u_hat|,  h = tanh             (eq. 12)
    f^{-1}(y): solve a + (w^T u_hat) tanh(a + b) = w^T y for a = w^T z          (one dimension)

Each check calls the reader's function in float64 on fixed random inputs and names the
usual mistakes when it recognises one. An answer not yet written (the student edition's stub)
fails with its own NotImplementedError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...flows import Planar
from ...flows.inverse import planar_inverse
from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError

__all__ = ["check_u_hat", "check_planar_logdet", "check_planar_inverse"]


def _uw(seed: int, B: int = 64, D: int = 3):
    g = torch.Generator().manual_seed(seed)
    u = 2 * torch.randn(B, D, generator=g, dtype=torch.float64)
    w = torch.randn(B, D, generator=g, dtype=torch.float64)
    u[:8] = -3 * w[:8]  # w^T u far below -1: where the correction matters
    return u, w


def check_u_hat(u_hat_fn) -> None:
    """Check ``u_hat_fn(u, w)``: rows of ``u_hat`` for rows of ``u`` and ``w`` of shape ``(B, D)``."""
    what = "u_hat"
    u, w = _uw(21)
    got = call_reader(what, u_hat_fn, u.clone(), w.clone())
    wu = (w * u).sum(-1, keepdim=True)
    w_sq = (w * w).sum(-1, keepdim=True)
    m = -1 + F.softplus(wu)
    expected = u + (m - wu) * w / w_sq
    check_with_mistakes(what, got, expected, {
        "You add m(w^T u) w / ||w||^2 to u, so that w^T u_hat = w^T u + m(w^T u): subtract w^T u inside "
        "the bracket, u + (m(w^T u) - w^T u) w / ||w||^2.": u + m * w / w_sq,
        "You divide by ||w|| instead of ||w||^2: then w^T u_hat is not m(w^T u).":
            u + (m - wu) * w / w_sq.sqrt(),
        "You use m(x) = log(1 + e^x) without the -1: then w^T u_hat > 0, which is more than needed "
        "(any value above -1 is allowed) and changes every u.": u + (F.softplus(wu) - wu) * w / w_sq,
        "You return u unchanged.": u,
    }, hint="w^T u_hat should equal m(w^T u) = -1 + log(1 + exp(w^T u)) for every row")


def check_planar_logdet(logdet_fn) -> None:
    """Check ``logdet_fn(z, u_hat, w, b)``: ``log|det df/dz|`` of shape ``(B,)`` for ``z, u_hat, w``
    of shape ``(B, D)`` and ``b`` of shape ``(B,)``, with ``h = tanh``."""
    what = "log|det df/dz| of a planar layer"
    g = torch.Generator().manual_seed(22)
    B, D = 64, 4
    z = 1.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    w = torch.randn(B, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, D, generator=g, dtype=torch.float64)
    b = torch.randn(B, generator=g, dtype=torch.float64)
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(-wu) - 1) * w / (w * w).sum(-1, keepdim=True)
    got = call_reader(what, logdet_fn, z.clone(), u_hat.clone(), w.clone(), b.clone())
    a = (w * z).sum(-1) + b
    w_u_hat = (w * u_hat).sum(-1)
    expected = torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2) * w_u_hat))
    check_with_mistakes(what, got, expected, {
        "You left out h'(w^T z + b): psi(z) = h'(w^T z + b) w, so the determinant is "
        "1 + h'(w^T z + b) w^T u_hat.": torch.log(torch.abs(1 + w_u_hat)),
        "You used h = tanh itself where its derivative h' = 1 - tanh^2 belongs.":
            torch.log(torch.abs(1 + torch.tanh(a) * w_u_hat)),
        "You return the determinant, not its log.": 1 + (1 - torch.tanh(a) ** 2) * w_u_hat,
        "You left out b: the argument of h' is w^T z + b.":
            torch.log(torch.abs(1 + (1 - torch.tanh(a - b) ** 2) * w_u_hat)),
    }, hint="by the matrix determinant lemma, det(I + u_hat psi^T) = 1 + psi^T u_hat with "
            "psi = (1 - tanh(w^T z + b)^2) w")


def check_planar_inverse(inverse_fn) -> None:
    """Check ``inverse_fn(layer, y)``: the ``z`` with ``layer(z)[0] == y`` for a static
    :class:`flowlib.flows.Planar` layer in float64 and ``y`` of shape ``(B, D)``."""
    what = "the inverse of a planar layer"
    torch.manual_seed(23)
    layer = Planar(3).double()
    with torch.no_grad():
        layer.params.theta.copy_(torch.tensor([1.5, -2.0, 0.5, 1.0, 0.8, -0.6, 0.4], dtype=torch.float64))
    g = torch.Generator().manual_seed(24)
    z = 2 * torch.randn(128, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(z)
    got = call_reader(what, inverse_fn, layer, y.clone())
    if isinstance(got, tuple):
        raise ExerciseError(f"{what}: return z only, not a tuple (got a tuple of {len(got)})")
    with torch.no_grad():
        u_hat, w, b, _ = layer.u_w_b(1)
        naive = y - u_hat * torch.tanh((y * w).sum(-1, keepdim=True) + b)
        reference, _ = planar_inverse(layer, y)
    check_with_mistakes(what, got, reference.detach(), {
        "You evaluated tanh at w^T y + b: the shift depends on w^T z + b, the unknown. Solve the "
        "one-dimensional equation a + (w^T u_hat) tanh(a + b) = w^T y for a = w^T z first.": naive,
    }, atol=1e-7, rtol=1e-7,
        hint="bisection (or Newton) on a in [w^T y - |w^T u_hat|, w^T y + |w^T u_hat|]; then "
             "z = y - u_hat tanh(a + b)")
