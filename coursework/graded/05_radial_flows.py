"""Graded tests of chapter 5, Radial flows (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.radial`` (other seeds and shapes, D = 1 and
D = 7, points at the centre z = z0, strongly contracting and expanding layers), with reference answers
computed here, by this file's own code. Partial credit part by part; the feedback names the typical
mistake a wrong answer matches.
"""

from __future__ import annotations

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

_shared = load_beside(__file__, "_part2a.py")
answer, part, own_work = _shared.answer, _shared.part, _shared.own_work

F64 = torch.float64
NOTEBOOK_D = 5  # the chapter defines a global D = 5 before the exercises


def _layers(seed, B, D, beta_range=(0.05, 4.0), scale=1.5):
    """B radial layers (z0, alpha, beta) with beta > -alpha, and B points z around their centres."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(B, D, generator=g, dtype=F64)
    alpha = 0.2 + 2.3 * torch.rand(B, generator=g, dtype=F64)
    lo, hi = beta_range
    beta = -alpha + lo + (hi - lo) * torch.rand(B, generator=g, dtype=F64)
    z = z0 + scale * torch.randn(B, D, generator=g, dtype=F64)
    return z, z0, alpha, beta


# ------------------------------------------------------------------ references (this file's own code)
def _logdet(z, z0, alpha, beta, power=None):
    """(D - 1) log|1 + beta h| + log|1 + beta alpha h^2|, h = 1 / (alpha + r): the radial factor
    1 + beta h + beta h' r, with h' = -h^2, simplified."""
    r = torch.linalg.vector_norm(z - z0, dim=-1)
    h = 1 / (alpha + r)
    power = z.shape[-1] - 1 if power is None else power
    return power * torch.log(torch.abs(1 + beta * h)) + torch.log(torch.abs(1 + beta * alpha * h * h))


def _forward(z, z0, alpha, beta):
    r = torch.linalg.vector_norm(z - z0, dim=-1, keepdim=True)
    return z0 + (z - z0) * (alpha + beta + r.squeeze(-1))[:, None] / (alpha[:, None] + r)


# ------------------------------------------------------------------ rf-ex-logdet
def _logdet_mistakes(z, z0, alpha, beta):
    D = z.shape[-1]
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    mistakes = {
        "the tangential factor (1 + beta h) appears D - 1 times, once per direction orthogonal to z - z0; "
        "you have it once": _logdet(z, z0, alpha, beta, 1),
        "the tangential factor (1 + beta h) appears D - 1 times, not D times": _logdet(z, z0, alpha, beta, D),
        "the radial term beta h'(alpha, r) r, with h' = -1 / (alpha + r)^2, is missing":
            D * torch.log(torch.abs(1 + beta * h)),
        "h'(alpha, r) = -1 / (alpha + r)^2, not -1 / (alpha + r)":
            (D - 1) * torch.log(torch.abs(1 + beta * h)) + torch.log(torch.abs(1 + beta * h - beta * h * r)),
        "you return the determinant, not its log": _logdet(z, z0, alpha, beta).exp(),
    }
    if D != NOTEBOOK_D:
        mistakes["your function uses D = 5 whatever the shape of z (the notebook's global D): take "
                 "D = z.shape[-1]"] = _logdet(z, z0, alpha, beta, NOTEBOOK_D - 1)
    return mistakes


def grade_radial_logdet(radial_logdet) -> Grade:
    g = Grade(3)
    hint = ("J = (1 + beta h) I + beta h' (z - z0)(z - z0)^T / r: by the matrix determinant lemma "
            "det J = (1 + beta h)^(D - 1) (1 + beta h + beta h' r)")
    for points, what, (seed, B, D) in ((1.5, "40 layers in D = 3", (5101, 40, 3)),
                                       (0.5, "D = 7", (5102, 10, 7)),
                                       (0.5, "D = 1 (no tangential direction)", (5103, 8, 1))):
        args = _layers(seed, B, D)
        part(g, points, what, answer(radial_logdet, *args), _logdet(*args), _logdet_mistakes(*args), hint)
    z, z0, alpha, beta = _layers(5104, 6, 3)
    z[:3] = z0[:3]  # r = 0: the determinant is (1 + beta / alpha)^D
    args = z, z0, alpha, beta
    part(g, 0.5, "points at the centre, z = z0", answer(radial_logdet, *args), _logdet(*args),
         _logdet_mistakes(*args), "at r = 0 the formula is finite, (1 + beta / alpha)^D: do not divide by r")
    return g


# ------------------------------------------------------------------ rf-ex-inverse
def _inverse_mistakes(y, z0, alpha, beta):
    r_y = (y - z0).norm(dim=-1)
    p = alpha + beta - r_y
    wrong_root = (-p - torch.sqrt(p * p + 4 * alpha * r_y)) / 2
    return {
        "you scaled y - z0 by 1 / (1 + beta h(alpha, r_y)) with r_y = ||y - z0||: the factor depends on "
        "r = ||z - z0||, the unknown; solve r_y = r (alpha + beta + r) / (alpha + r) for r first":
            z0 + (y - z0) / (1 + beta / (alpha + r_y))[:, None],
        "you applied the forward map instead of inverting it": _forward(y, z0, alpha, beta),
        "you took the negative root of the quadratic: the radius r is the non-negative one":
            z0 + (y - z0) * ((alpha + wrong_root) / (alpha + beta + wrong_root))[:, None],
    }


@own_work(("Radial", "flow_inverse"), 4, "write the inverse yourself, by solving the quadratic for r")
def grade_radial_inverse(radial_inverse) -> Grade:
    g = Grade(4)
    hint = ("r^2 + (alpha + beta - r_y) r - alpha r_y = 0 has one non-negative root r; then "
            "z = z0 + (y - z0) (alpha + r) / (alpha + beta + r)")

    def graded(points, what, z, z0, alpha, beta, atol=1e-8, rtol=1e-8, part_hint=hint):
        y = _forward(z, z0, alpha, beta)
        part(g, points, what, answer(radial_inverse, y, z0, alpha, beta), z,
             _inverse_mistakes(y, z0, alpha, beta), part_hint, atol=atol, rtol=rtol)

    graded(2, "64 layers in D = 3", *_layers(5201, 64, 3))
    z, z0, alpha, beta = (torch.cat(t) for t in zip(_layers(5202, 30, 4, (0.02, 0.05), 0.3),  # contracting
                                                    _layers(5203, 30, 4, (30.0, 40.0), 3.0)))  # expanding
    graded(1, "alpha + beta = 0.02 to 0.05, and beta = 30 to 40, points near and far", z, z0, alpha, beta,
           rtol=1e-7)
    z, z0, alpha, beta = _layers(5204, 6, 3)
    z[:2] = z0[:2]  # the centre is fixed: f(z0) = z0
    graded(0.5, "y = z0 (the centre)", z, z0, alpha, beta,
           part_hint="at y = z0, r_y = 0 and z = z0: do not divide by r_y; "
                     "z0 + (y - z0) (alpha + r) / (alpha + beta + r) is finite there")
    graded(0.5, "D = 1", *_layers(5205, 8, 1))
    return g


EXERCISES = [
    Exercise("rf-ex-logdet", 3, ("radial_logdet",), grade_radial_logdet),
    Exercise("rf-ex-inverse", 4, ("radial_inverse",), grade_radial_inverse),
]
WRITTEN = {"rf-ex-symmetry": 4}
