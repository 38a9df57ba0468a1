"""Checks for the exercises of the chapter "Volume-preserving flows" (Tomczak & Welling 2016;
Dinh, Krueger & Bengio 2014).

    H z = z - 2 v (v^T z) / ||v||^2                      (a Householder reflection, O(D))
    Q = H(v_1) ... H(v_k),  k <= D                        (any orthogonal Q)
    x_{I2} = y_{I2} - m(y_{I1})                           (the inverse of an additive coupling)

Each check calls the reader's function in float64 on fixed random inputs and names the
usual mistakes when it recognises one. An answer not yet written (the student edition's stub)
fails with its own NotImplementedError.
"""

from __future__ import annotations

import torch

from ...flows.householder import reflect
from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError, check_close

__all__ = ["check_reflect", "check_reflections_of", "check_coupling_inverse"]


def check_reflect(reflect_fn) -> None:
    """Check ``reflect_fn(z, v)``: rows ``H(v) z`` for ``z`` of shape ``(B, D)`` and ``v`` of
    shape ``(D,)``, in ``O(BD)`` (without forming ``H``)."""
    what = "H(v) z"
    g = torch.Generator().manual_seed(41)
    z = torch.randn(32, 5, generator=g, dtype=torch.float64)
    v = 3 * torch.randn(5, generator=g, dtype=torch.float64)  # not a unit vector
    got = call_reader(what, reflect_fn, z.clone(), v.clone())
    check_with_mistakes(what, got, reflect(z, v), {
        "You did not divide by ||v||^2: H = I - 2 v v^T / ||v||^2 is a reflection for any v != 0, "
        "I - 2 v v^T only for a unit v.": z - 2 * (z @ v)[:, None] * v,
        "You divided by ||v|| instead of ||v||^2.": z - 2 * (z @ v)[:, None] * v / v.norm(),
        "The factor 2 is missing: I - v v^T / ||v||^2 projects onto the plane orthogonal to v, it does "
        "not reflect.": z - (z @ v)[:, None] * v / (v @ v),
    }, hint="H z = z - 2 v (v^T z) / (v^T v), one inner product per row")


def check_reflections_of(reflections_fn) -> None:
    """Check ``reflections_fn(Q)``: a list of at most ``D`` vectors ``v_1, ..., v_k`` with
    ``H(v_1) H(v_2) ... H(v_k) = Q``, for orthogonal ``Q`` of shape ``(D, D)`` (both signs of det)."""
    what = "the reflections of an orthogonal matrix"
    g = torch.Generator().manual_seed(42)
    for D in (2, 3, 6):
        for flip in (False, True):
            Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
            if flip:
                Q[:, 0] = -Q[:, 0]
            vs = call_reader(what, reflections_fn, Q.clone())
            if not isinstance(vs, (list, tuple)) or not all(isinstance(v, torch.Tensor) for v in vs):
                raise ExerciseError(f"{what}: expected a list of tensors v_1 .. v_k, got {type(vs).__name__}")
            if len(vs) > D:
                raise ExerciseError(f"{what}: {len(vs)} reflections for D = {D}; at most D = {D} are needed "
                                    "(each one fixes one more column)")
            product = torch.eye(D, dtype=torch.float64)
            for v in vs:
                product = reflect(product, v.to(torch.float64))  # each row times H(v): product @ H(v)
            sign = "+1" if torch.linalg.det(Q) > 0 else "-1"
            check_close(f"{what} (D = {D}, det Q = {sign})", product, Q, atol=1e-8, rtol=1e-8,
                        hint="reflect the first column of Q onto e_1 with v = q_1 - e_1, then recurse on the "
                             "rest; det H = -1, so the number of reflections has the parity of det Q")


def check_coupling_inverse(inverse_fn) -> None:
    """Check ``inverse_fn(y, m)``: the ``x`` of shape ``(B, 2 d)`` with ``y = (x_1, x_2 + m(x_1))``,
    where ``x_1`` is the first half of the coordinates and ``m`` maps ``(B, d)`` to ``(B, d)``."""
    what = "the inverse of an additive coupling"
    g = torch.Generator().manual_seed(43)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)

    def m(x1):
        return torch.tanh(x1 @ A) * 2 + x1**2

    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.cat([x[:, :3], x[:, 3:] + m(x[:, :3])], 1)
    got = call_reader(what, inverse_fn, y.clone(), m)
    check_with_mistakes(what, got, x, {
        "You added m(y_1) again: the inverse subtracts it, x_2 = y_2 - m(y_1).":
            torch.cat([y[:, :3], y[:, 3:] + m(y[:, :3])], 1),
        "You applied m to the second half: the shift is a function of the kept half, m(y_1) = m(x_1).":
            torch.cat([y[:, :3], y[:, 3:] - m(y[:, 3:])], 1),
    }, hint="x_1 = y_1 (kept), x_2 = y_2 - m(y_1): no need to invert m")
