"""Graded tests of chapter 4, Planar flows (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.planar`` (other seeds, shapes, dtypes, and
the edge cases: D = 1, B = D, |w^T u| in the hundreds, w^T u_hat near -1 or large), with reference
answers computed here, by this file's own code. Partial credit part by part; the feedback names the
typical mistake a wrong answer matches.
"""

from __future__ import annotations

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside
from flowlib.flows import Planar

_shared = load_beside(__file__, "_part2a.py")
answer, part, problem, own_work = _shared.answer, _shared.part, _shared.problem, _shared.own_work

F64 = torch.float64


# ------------------------------------------------------------------ references (this file's own code)
def _m(x):
    """m(x) = -1 + log(1 + e^x), as -1 + logaddexp(0, x): exact for any x, no overflow."""
    return -1 + torch.logaddexp(torch.zeros_like(x), x)


def _u_hat(u, w):
    wu = torch.einsum("bd,bd->b", w, u)[:, None]
    return u + (_m(wu) - wu) * w / torch.einsum("bd,bd->b", w, w)[:, None]


def _logdet(z, u_hat, w, b):
    a = torch.einsum("bd,bd->b", w, z) + b
    h_prime = torch.cosh(a) ** -2  # 1 - tanh^2, without cancellation
    return torch.log(torch.abs(1 + h_prime * torch.einsum("bd,bd->b", w, u_hat)))


def _layer(u, w, b):
    """A static float64 Planar layer with raw parameters u, w, b; and its (u_hat, w, b), computed here."""
    layer = Planar(len(u)).double()
    u, w = torch.tensor(u, dtype=F64), torch.tensor(w, dtype=F64)
    with torch.no_grad():
        layer.params.theta.copy_(torch.cat([u, w, torch.tensor([b], dtype=F64)]))
    return layer, (_u_hat(u[None], w[None])[0], w, b)


def _forward(params, z):
    u_hat, w, b = params
    return z + u_hat * torch.tanh(z @ w + b)[:, None]


# ------------------------------------------------------------------ pf-ex-uhat
def _uhat_mistakes(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    w_sq = (w * w).sum(-1, keepdim=True)
    m = _m(wu)
    mistakes = {
        "you add m(w^T u) w / ||w||^2: subtract w^T u inside the bracket, u + (m(w^T u) - w^T u) w / ||w||^2":
            u + m * w / w_sq,
        "you divide by ||w|| instead of ||w||^2": u + (m - wu) * w / w_sq.sqrt(),
        "m(x) is -1 + log(1 + e^x): the -1 is missing": u + (m + 1 - wu) * w / w_sq,
        "you return u unchanged": u,
        "w^T u is one inner product per row: you summed over the whole batch":
            u + (_m((w * u).sum()) - (w * u).sum()) * w / w_sq,
    }
    if u.shape[0] == u.shape[1]:  # then (w * u).sum(-1) without keepdim, shape (B,), broadcasts along columns
        flat_wu, flat_sq = wu[:, 0], w_sq[:, 0]
        mistakes["without keepdim=True the per-row w^T u (shape (B,)) broadcasts along the columns, not the "
                 "rows: use .sum(-1, keepdim=True)"] = u + (_m(flat_wu) - flat_wu) * w / flat_sq
    return mistakes


def _uhat_inputs(seed, B, D):
    g = torch.Generator().manual_seed(seed)
    u = 1.5 * torch.randn(B, D, generator=g, dtype=F64)
    w = torch.randn(B, D, generator=g, dtype=F64) + 0.1
    u[: B // 3] = -2.5 * w[: B // 3] + 0.1 * u[: B // 3]  # w^T u < -1: where the correction matters
    return u, w


def grade_u_hat(u_hat) -> Grade:
    g = Grade(3)
    hint = "w^T u_hat must equal m(w^T u) = -1 + log(1 + exp(w^T u)) in every row"
    u, w = _uhat_inputs(4101, 37, 5)
    part(g, 1.5, "37 rows in D = 5", answer(u_hat, u, w), _u_hat(u, w), _uhat_mistakes(u, w), hint)
    u, w = _uhat_inputs(4102, 4, 4)
    part(g, 0.5, "B = D = 4 (a missing keepdim broadcasts without an error)", answer(u_hat, u, w),
         _u_hat(u, w), _uhat_mistakes(u, w), hint)
    u, w = _uhat_inputs(4103, 6, 1)
    part(g, 0.5, "D = 1", answer(u_hat, u, w), _u_hat(u, w), _uhat_mistakes(u, w), hint)
    w = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]], dtype=F64)
    wu = torch.tensor([800.0, -800.0, 40.0, -40.0], dtype=F64)
    u = wu[:, None] * w / (w * w).sum(-1, keepdim=True) + torch.tensor([[0.5, -1.0]], dtype=F64)
    u = u - ((u * w).sum(-1) - wu)[:, None] * w / (w * w).sum(-1, keepdim=True)  # w^T u = wu exactly
    part(g, 0.5, "|w^T u| = 40 and 800", answer(u_hat, u, w), _u_hat(u, w), _uhat_mistakes(u, w),
         "log(1 + exp(x)) overflows to inf above x = 709 in float64: use torch.nn.functional.softplus(x), "
         "and m(x) - x = softplus(-x) - 1", atol=1e-8, rtol=1e-8)
    return g


# ------------------------------------------------------------------ pf-ex-logdet
def _logdet_inputs(seed, B, D, dtype=F64, constrained=True):
    g = torch.Generator().manual_seed(seed)
    z = 1.2 * torch.randn(B, D, generator=g, dtype=F64)
    w = torch.randn(B, D, generator=g, dtype=F64)
    u = 2 * torch.randn(B, D, generator=g, dtype=F64)
    b = torch.randn(B, generator=g, dtype=F64)
    if constrained:
        u = _u_hat(u, w)
    else:  # w^T u = -3, and z near the hyperplane, where 1 + h' w^T u < 0
        u = u + (-3 - (w * u).sum(-1, keepdim=True)) * w / (w * w).sum(-1, keepdim=True)
        z = z - (((w * z).sum(-1) + b - 0.1 * torch.randn(B, generator=g, dtype=F64)) /
                 (w * w).sum(-1))[:, None] * w
    return tuple(t.to(dtype) for t in (z, u, w, b))


def _logdet_mistakes(z, u_hat, w, b):
    a, wu = (w * z).sum(-1) + b, (w * u_hat).sum(-1)
    return {
        "the determinant is 1 + h'(w^T z + b) w^T u_hat: h' is missing": torch.log(torch.abs(1 + wu)),
        "h = tanh stands where its derivative h' = 1 - tanh^2 belongs":
            torch.log(torch.abs(1 + torch.tanh(a) * wu)),
        "h' = 1 - tanh(a)^2: the square is missing": torch.log(torch.abs(1 + (1 - torch.tanh(a)) * wu)),
        "you return the determinant, not its log": 1 + (1 - torch.tanh(a) ** 2) * wu,
        "b is missing: the argument of h' is w^T z + b":
            torch.log(torch.abs(1 + (1 - torch.tanh(a - b) ** 2) * wu)),
    }


def grade_planar_logdet(planar_logdet) -> Grade:
    g = Grade(3)
    hint = "by the matrix determinant lemma, det(I + u_hat psi^T) = 1 + psi^T u_hat, psi = h'(w^T z + b) w"
    args = _logdet_inputs(4201, 45, 6)
    part(g, 1.5, "45 layers in D = 6", answer(planar_logdet, *args), _logdet(*args), _logdet_mistakes(*args),
         hint)
    args = _logdet_inputs(4202, 1, 1)
    part(g, 0.5, "D = 1, B = 1", answer(planar_logdet, *args), _logdet(*args), _logdet_mistakes(*args), hint)
    args = _logdet_inputs(4203, 12, 3, constrained=False)
    part(g, 0.5, "w^T u_hat = -3, z near the hyperplane (determinant < 0)", answer(planar_logdet, *args),
         _logdet(*args), _logdet_mistakes(*args),
         "keep the absolute value of log|1 + h'(a) w^T u_hat|: the log of a negative determinant is nan")
    args = _logdet_inputs(4204, 20, 4, dtype=torch.float32)
    exact = _logdet(*(t.double() for t in args))
    part(g, 0.5, "float32 inputs", answer(planar_logdet, *args), exact, None,
         "compute with the inputs' dtype and torch operations (no numpy, no float64 constants that raise)",
         atol=1e-4, rtol=1e-4)
    return g


# ------------------------------------------------------------------ pf-ex-inverse
FLOWLIB_INVERSES = ("planar_inverse", "solve_planar", "flow_inverse", "log_density")


def _inverse_case(raw, seed, B, scale=2.0):
    layer, params = _layer(*raw)
    z = scale * torch.randn(B, len(raw[0]), generator=torch.Generator().manual_seed(seed), dtype=F64)
    y = _forward(params, z)
    with torch.no_grad():  # the layer is the one this file's reference describes
        assert torch.allclose(layer(z)[0], y, atol=1e-12)
    return layer, params, z, y


@own_work(FLOWLIB_INVERSES, 4, "write the inverse yourself, by bisection on a + (w^T u_hat) tanh(a + b) "
                               "= w^T y")
def grade_invert(invert) -> Grade:
    g = Grade(4)
    hint = ("solve a + (w^T u_hat) tanh(a + b) = w^T y for a = w^T z by bisection on "
            "[w^T y - |w^T u_hat|, w^T y + |w^T u_hat|], then z = y - u_hat tanh(a + b); return z only")
    layer, (u_hat, w, b), z, y = _inverse_case(([0.5, -1.2, 2.0], [1.0, 0.3, -0.7], 0.4), 4301, 200)
    naive = y - u_hat * torch.tanh(y @ w + b)[:, None]
    part(g, 2, "a layer in D = 3, 200 points", answer(invert, layer, y), z, {
        "you evaluated tanh at w^T y + b: the shift depends on w^T z + b, the unknown; solve for a = w^T z "
        "first": naive}, hint, atol=1e-8, rtol=1e-8)
    layer, (u_hat, w, b), z, y = _inverse_case(([4.0, 1.0], [1.5, 0.0], -0.3), 4302, 100)
    assert float(w @ u_hat) > 5
    part(g, 1, "an expanding layer, w^T u_hat = 5", answer(invert, layer, y), z, None,
         "the fixed-point iteration z <- y - u_hat tanh(w^T z + b) diverges when |w^T u_hat| > 1 and "
         "Newton's method can overshoot; bisection always converges",
         atol=1e-8, rtol=1e-8)
    layer, params, z, y = _inverse_case(([-30.0, 0.0], [1.0, 0.0], 0.2), 4303, 100, scale=0.5)
    assert float(params[1] @ params[0]) + 1 < 1e-12  # w^T u_hat = -1 + 1e-13: g is flat at a = -b
    got, error = answer(invert, layer, y)
    if error is None and problem(got, z, float("inf"), 0) is None:  # a finite tensor of z's shape: f(got)
        got = _forward(params, got.detach().to(F64))
    part(g, 0.5, "w^T u_hat = -1 + 1e-13 (f(your z) = y)", (got, error), y, None,
         "g(a) is flat at a = -b when w^T u_hat is near -1: iterations that divide by g'(a) or contract "
         "slowly fail there, bisection does not",
         atol=1e-8, rtol=1e-8)
    layer, (u_hat, w, b), z, y = _inverse_case(([-0.8], [1.3], 0.5), 4304, 1)
    part(g, 0.5, "D = 1, B = 1", answer(invert, layer, y), z,
         {"you evaluated tanh at w^T y + b instead of solving for w^T z":
          y - u_hat * torch.tanh(y @ w + b)[:, None]}, hint, atol=1e-8, rtol=1e-8)
    return g


EXERCISES = [
    Exercise("pf-ex-uhat", 3, ("u_hat",), grade_u_hat),
    Exercise("pf-ex-logdet", 3, ("planar_logdet",), grade_planar_logdet),
    Exercise("pf-ex-inverse", 4, ("invert",), grade_invert),
]
WRITTEN = {"pf-ex-one-layer": 4}
