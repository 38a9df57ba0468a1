"""Graded tests of chapter 9, PCP-Maps (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.pcpmap`` (other seeds, shapes and flows, and
the edge cases: d = 1, a determinant beyond float64's range, a symmetric matrix that is not positive definite,
ill-conditioned covariances, points y that the map did not make), with reference answers known by
construction here (matrices built from chosen eigenvalues, points pushed forward from a known z). Partial
credit part by part; the feedback names the typical mistake a wrong answer matches.
"""

from __future__ import annotations

import pathlib
import runpy

import torch

from flowlib.book.coursework.harness import Exercise, Grade
from flowlib.flows import PCPMap

_shared = runpy.run_path(str(pathlib.Path(__file__).with_name("_part2a.py")))  # not a package
answer, part, problem, own_work = (_shared[name] for name in ("answer", "part", "problem", "own_work"))

F64 = torch.float64


def _spd(seed, batch, d, low, high):
    """``(V diag(lam) V^T, lam, V)``: V random orthogonal, eigenvalues lam log-uniform in [low, high]."""
    g = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(batch, d, d, generator=g, dtype=F64)).Q
    lam = low * (high / low) ** torch.rand(batch, d, generator=g, dtype=F64)
    H = (V * lam[..., None, :]) @ V.transpose(-1, -2)
    return 0.5 * (H + H.transpose(-1, -2)), lam, V


# ------------------------------------------------------------------ pcp-ex-cholesky
def _cholesky_mistakes(H, lam):
    L = torch.linalg.cholesky(H)
    diag_L = L.diagonal(dim1=-2, dim2=-1)
    return {
        "det H = (prod_i L_ii)^2, so log det H = 2 sum_i log L_ii: the factor 2 is missing":
            diag_L.log().sum(-1),
        "the diagonal of H is not its eigenvalues: use the diagonal of the Cholesky factor":
            H.diagonal(dim1=-2, dim2=-1).log().sum(-1),
        "you returned det H, not its logarithm": lam.prod(-1),
        "the log-determinant is a sum over the d pivots, not a mean": 2 * diag_L.log().mean(-1),
    }


@own_work(("_logdet", "PCPMap"), 2, "compute the log-determinant from the Cholesky factor yourself")
def grade_cholesky_logdet(cholesky_logdet) -> Grade:
    g = Grade(2)
    hint = "L = torch.linalg.cholesky(H); log det H = 2 * log(diag(L)).sum(-1)"
    H, lam, _ = _spd(9101, 6, 7, 0.05, 20.0)
    part(g, 1, "6 matrices, d = 7", answer(cholesky_logdet, H), lam.log().sum(-1), _cholesky_mistakes(H, lam),
         hint)
    H, lam, _ = _spd(9102, 2, 60, 1e5, 1e7)
    part(g, 0.5, "d = 60 with eigenvalues 1e5 to 1e7 (det H is about 1e360, beyond float64)",
         answer(cholesky_logdet, H), lam.log().sum(-1), _cholesky_mistakes(H, lam),
         "det H overflows to inf in float64 here: sum the logarithms of the pivots, not log(det H)",
         rtol=1e-10)
    H, lam, V = _spd(9103, 3, 4, 0.5, 3.0)
    lam[:, :2] = -lam[:, :2]  # two negative eigenvalues: symmetric, det H > 0, not positive definite
    H = (V * lam[..., None, :]) @ V.transpose(-1, -2)
    got, error = answer(cholesky_logdet, 0.5 * (H + H.transpose(-1, -2)))
    refused = error is not None or (isinstance(got, torch.Tensor) and not torch.isfinite(got).all())
    g.check(refused, 0.5, "a symmetric matrix with det H > 0 that is not positive definite: your function "
            "returned a finite log-determinant instead of failing",
            "the exercise asks for the Cholesky route, whose failure on such a matrix is a useful alarm; "
            "slogdet and det do not notice")
    return g


# ------------------------------------------------------------------ pcp-ex-gaussian
def _brenier_case(seed, d, low, high):
    Sigma, lam, V = _spd(seed, 1, d, low, high)
    A = (V * lam.sqrt()[..., None, :]) @ V.transpose(-1, -2)  # the symmetric positive definite root, known
    return Sigma[0], 0.5 * (A + A.transpose(-1, -2))[0]


def _brenier_mistakes(Sigma):
    L = torch.linalg.cholesky(Sigma)
    return {
        ("the Cholesky factor L pushes N(0, I) to N(m, Sigma) but is not symmetric, so z -> m + L z is not a "
         "gradient: use the symmetric root V diag(sqrt(lambda)) V^T"): L,
        ("L^T is not a square root of Sigma in this sense (L^T L != Sigma) and is not symmetric: use "
         "V diag(sqrt(lambda)) V^T"): L.T,
        "z -> m + Sigma z has covariance Sigma^2: you need the square root": Sigma,
        "torch.sqrt acts entrywise: a matrix square root acts on the eigenvalues": Sigma.abs().sqrt(),
    }


def _brenier_part(g, points, what, got, Sigma, A, hint, rtol=1e-8):
    value, error = got
    if error is None and problem(value, A, 1e-10, rtol) is not None and isinstance(value, torch.Tensor) \
            and value.shape == A.shape and torch.isfinite(value).all():
        B = value.detach().to(F64)
        squares = torch.allclose(B @ B, Sigma, rtol=1e-6, atol=1e-9)
        if squares and torch.allclose(B, B.T, rtol=1e-6, atol=1e-9):
            hint = ("your A is a symmetric square root of Sigma but not positive definite: take the positive "
                    "square roots of the eigenvalues (a convex potential has a positive semi-definite "
                    "Hessian)")
    return part(g, points, what, got, A, _brenier_mistakes(Sigma), hint, atol=1e-10, rtol=rtol)


def grade_gaussian_brenier_map(gaussian_brenier_map) -> Grade:
    g = Grade(3)
    hint = "Sigma = V diag(lambda) V^T (torch.linalg.eigh); return V diag(sqrt(lambda)) V^T"
    Sigma, A = _brenier_case(9201, 5, 0.1, 10.0)
    _brenier_part(g, 1.5, "a 5 x 5 covariance", answer(gaussian_brenier_map, Sigma), Sigma, A, hint)
    Sigma, A = _brenier_case(9202, 6, 1e-6, 1e3)
    _brenier_part(g, 0.5, "a 6 x 6 covariance with eigenvalues from 1e-6 to 1e3",
                  answer(gaussian_brenier_map, Sigma), Sigma, A, hint, rtol=1e-6)
    Sigma = torch.tensor([[6.25]], dtype=F64)
    _brenier_part(g, 0.5, "d = 1, Sigma = (6.25)", answer(gaussian_brenier_map, Sigma), Sigma,
                  torch.tensor([[2.5]], dtype=F64), hint)
    Sigma, A = _brenier_case(9203, 3, 0.5, 4.0)
    got, error = answer(gaussian_brenier_map, Sigma.float())
    part(g, 0.5, "a float32 covariance (3 x 3)", (got, error), A, _brenier_mistakes(Sigma),
         "compute with torch operations in the input's dtype", atol=1e-5, rtol=1e-5)
    return g


# ------------------------------------------------------------------ pcp-ex-lbfgs
def _flow(seed, D, hidden=12, n_layers=2, std=0.4):
    torch.manual_seed(seed)
    flow = PCPMap(D, hidden=hidden, n_layers=n_layers).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(std * torch.randn_like(p))
    return flow


def _pushed(flow, seed, B, scale=1.5):
    z = scale * torch.randn(B, flow.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    with torch.no_grad():
        return z, flow.gradient(z)


def _residual_problem(flow, y, got, atol):
    """``None`` if ``got`` solves T(z) = y to max_b ||T(z_b) - y_b|| <= atol, else ``(what is wrong, hint)``,
    the typical mistake named when the residuals say which equation the answer solved instead."""
    value, error = got
    if error:
        return error, ""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(y.shape):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        return f"returned {shape}, expected a tensor of shape {tuple(y.shape)}", ""
    z = value.detach().to(F64)
    if not torch.isfinite(z).all():
        return "the result contains nan or inf", ""
    with torch.no_grad():
        T = flow.gradient(z)
    residual = (T - y).norm(dim=-1).max().item()
    if residual <= atol:
        return None
    what = f"max_b ||T(z_b) - y_b|| = {residual:.2e}"
    if torch.equal(z, y):
        return what, "you returned y unchanged: minimise G(z) - <z, y> from there"
    if (T + y).norm(dim=-1).max() <= 1e-4:
        return what, "your z solves T(z) = -y: the sign of <z, y> is wrong, minimise G(z) - <z, y>"
    if T.norm(dim=-1).max() <= 1e-4:
        return what, "your z minimises G(z) alone (T(z) = 0): minimise G(z) - <z, y>"
    if residual < 1e-3:
        return what, ("minimise further: by default torch.optim.LBFGS stops at tolerance_grad=1e-7, "
                      "tolerance_change=1e-9 or after max_iter=20 iterations; lower the tolerances (e.g. "
                      "1e-12 and 0.0), raise max_iter, and use line_search_fn='strong_wolfe'")
    return what, "minimise G(z) - <z, y> over z (its gradient is T(z) - y), e.g. from z = y"


def _residual_part(g, points, what, flow, y, got, atol):
    wrong = _residual_problem(flow, y, got, atol)
    if wrong is None:
        return g.check(True, points, what)
    problem_, hint = wrong
    if hint and any(hint in note for note in g.notes):
        hint = "the same as above"
    return g.check(False, points, f"{what}: {problem_}", hint)


FLOWLIB_INVERSES = ("inverse", "_inverse", "inverse_newton", "inverse_lbfgs", "log_density")


@own_work(FLOWLIB_INVERSES, 4, "minimise G(z) - <z, y> yourself")
def grade_pcpmap_inverse(pcpmap_inverse) -> Grade:
    g = Grade(4)
    flow = _flow(9301, 4)
    z, y = _pushed(flow, 9302, 32)
    got = answer(pcpmap_inverse, flow, y)
    value, error = got
    mistakes = {"it returned y unchanged: minimise G(z) - <z, y> from there": y}
    with torch.no_grad():
        mistakes["it returned T(y), the forward map at y: the inverse solves T(z) = y for z"] = \
            flow.gradient(y)
    part(g, 1.5, "32 points pushed forward by a static PCP-Map in D = 4 (z to 1e-5)", got, z, mistakes,
         "minimise G(z) - <z, y> over z (its gradient is T(z) - y), e.g. from z = y", atol=1e-5, rtol=0)
    _residual_part(g, 0.5, "the same batch to a residual below 1e-6", flow, y, got, 1e-6)

    flow = _flow(9303, 7)
    y = 4 * torch.randn(16, 7, generator=torch.Generator().manual_seed(9304), dtype=F64)
    _residual_part(g, 1, "16 points y that T did not make (D = 7), to a residual below 1e-6", flow, y,
                   answer(pcpmap_inverse, flow, y), 1e-6)

    flow = _flow(9305, 1)
    z, y = _pushed(flow, 9306, 5)
    _residual_part(g, 0.5, "D = 1, 5 points, to a residual below 1e-6", flow, y,
                   answer(pcpmap_inverse, flow, y), 1e-6)

    flow = _flow(9307, 3)
    y = torch.tensor([[25.0, -18.0, 30.0]], dtype=F64)
    _residual_part(g, 0.5, "one point far out, |y| = 43 (D = 3), to a residual below 1e-6", flow, y,
                   answer(pcpmap_inverse, flow, y), 1e-6)
    return g


EXERCISES = [
    Exercise("pcp-ex-cholesky", 2, ("cholesky_logdet",), grade_cholesky_logdet),
    Exercise("pcp-ex-gaussian", 3, ("gaussian_brenier_map",), grade_gaussian_brenier_map),
    Exercise("pcp-ex-lbfgs", 4, ("pcpmap_inverse",), grade_pcpmap_inverse),
]
WRITTEN = {"pcp-ex-cholesky-why": 2, "pcp-ex-gaussian-why": 4, "pcp-ex-lbfgs-floor": 3, "pcp-ex-weights": 6,
           "pcp-ex-direction": 3}
