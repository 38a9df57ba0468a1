"""Graded tests of chapter 11, "Looking at the posterior" (not in the student edition).

Other inputs than the public checks of ``flowlib.book.exercises.posterior`` (log-joints near -2500 on 2000
cells, an (n, m) grid, a Gaussian whose evidence is known in closed form; fractions of the mass other
than 99%; KLs in D = 1, D = 3 and with two batch axes), with reference answers computed by this file's
own code (closed forms, ``torch.distributions``). Partial credit part by part; the feedback names the
typical mistake a wrong answer matches.

Retraining the chapter's models with an unfrozen encoder (pos2d-ex-retrain) is a project, graded by hand:
the chapter's whole command took 21 minutes of CPU here (the instructor guide gives the costs).
"""

from __future__ import annotations

import math

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

_shared = load_beside(__file__, "_part3.py")
F64, call, number, numbers, part = _shared.F64, _shared.call, _shared.number, _shared.numbers, _shared.part
_rng = _shared.rng


# ------------------------------------------------------------------ pos2d-ex-grid
def _log_evidence(log_joint, cell_area):
    """log sum_ij exp(log_joint_ij) dA over every cell, with the maximum factored out."""
    flat = log_joint.reshape(-1).to(F64)
    top = flat.max()
    return top + torch.log(torch.exp(flat - top).sum()) + math.log(cell_area)


def _evidence_mistakes(log_joint, cell_area):
    flat = log_joint.reshape(-1).to(F64)
    right = _log_evidence(log_joint, cell_area)
    return {
        "log p(x) lacks the cell area: a Riemann sum multiplies each value by dA (add log dA)":
            right - math.log(cell_area),
        "log p(x) is the largest log-joint value, a maximum, not an integral: sum exp(.) over all cells":
            flat.max(),
        "log p(x) is the mean of the log-joint values: it is the log of the sum of exp(.) times dA":
            flat.mean(),
        "exp(-2500) underflows to 0, so log(exp(.).sum()) is -inf: use torch.logsumexp, which factors out "
        "the maximum": torch.tensor(-math.inf, dtype=F64),
    }


BY_COLUMNS = ("log p(x) must be one number: torch.logsumexp(log_joint, 0) of a 2-D tensor sums over its rows "
              "only; flatten it first (log_joint.reshape(-1))")


def _grid_answer(grid_posterior, log_joint, cell_area):
    """(log_post, log_px as a float64 0-d tensor), or the error; a log p(x) that is not one number is
    returned as it is, so that its shape is reported."""
    out, error = call(grid_posterior, log_joint, cell_area)
    if error:
        return (None, error), (None, error)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        bad = (None, f"returned a {type(out).__name__}, expected a tuple (log_post, log_px)")
        return bad, bad
    log_post, log_px = out
    value = number(log_px)
    log_px = torch.tensor(value, dtype=F64) if value is not None else log_px
    return (log_post, None), (log_px, None)


def grade_grid_posterior(grid_posterior) -> Grade:
    g = Grade(3)
    hint_px = "log p(x) = torch.logsumexp(log_joint.reshape(-1), 0) + math.log(cell_area)"
    hint_post = "log_post = log_joint - log p(x), the shape of log_joint"
    # 2000 cells in a vector, values near -2500
    dA = 3e-4
    lj = -2500 - 30 * torch.rand(2000, generator=_rng(5101), dtype=F64)
    post, px = _grid_answer(grid_posterior, lj, dA)
    right = _log_evidence(lj, dA)
    part(g, 1.0, "log p(x) on 2000 cells near -2500", px, right, _evidence_mistakes(lj, dA), hint_px,
         atol=1e-8, rtol=1e-12)
    part(g, 0.5, "log p(z | x) on 2000 cells near -2500", post, lj - right, {
        "log_post is log_joint itself: subtract log p(x)": lj,
        "log p(x) underflowed to -inf, so log_post is inf: compute log p(x) with torch.logsumexp":
            torch.full_like(lj, math.inf),
        "log_post lacks the cell area's log: it is log_joint - log p(x), where log p(x) includes log dA":
            lj - (right - math.log(dA))}, hint_post, atol=1e-8, rtol=1e-12)
    # an (n, m) tensor: any shape
    dA = 0.01 * 0.02
    lj = -800 + 5 * torch.randn(40, 50, generator=_rng(5102), dtype=F64)
    post, px = _grid_answer(grid_posterior, lj, dA)
    right = _log_evidence(lj, dA)
    by_columns = torch.logsumexp(lj, 0) + math.log(dA)
    part(g, 0.5, "log p(x) for a 40 x 50 tensor of log-joint values", px, right, {
        **_evidence_mistakes(lj, dA), BY_COLUMNS: by_columns}, hint_px, atol=1e-8, rtol=1e-12)
    part(g, 0.5, "log p(z | x) for a 40 x 50 tensor", post, lj - right, {
        "log_post must have log_joint's shape, each value minus the one number log p(x)": lj - by_columns},
        hint_post, atol=1e-8, rtol=1e-12)
    # a Gaussian posterior: log p(x, z) = c + log N(z; m, s^2 I), so log p(x) = c exactly
    c, m, s, n = -431.7, torch.tensor([0.3, -1.2], dtype=F64), 0.07, 120
    x = torch.linspace(m[0] - 8 * s, m[0] + 8 * s, n + 1, dtype=F64)
    y = torch.linspace(m[1] - 8 * s, m[1] + 8 * s, n + 1, dtype=F64)
    xc, yc = (x[1:] + x[:-1]) / 2, (y[1:] + y[:-1]) / 2  # cell centres
    Y, X = torch.meshgrid(yc, xc, indexing="ij")
    lj = c - ((X - m[0]) ** 2 + (Y - m[1]) ** 2) / (2 * s**2) - math.log(2 * math.pi * s**2)
    dA = float((x[1] - x[0]) * (y[1] - y[0]))
    post, px = _grid_answer(grid_posterior, lj, dA)
    part(g, 0.5, "a Gaussian posterior on a 120 x 120 grid: log p(x) equals the known evidence", px,
         torch.tensor(c, dtype=F64), {**_evidence_mistakes(lj, dA),
                                      BY_COLUMNS: torch.logsumexp(lj, 0) + math.log(dA)},
         hint_px, atol=1e-6, rtol=0)
    return g


# ------------------------------------------------------------------ pos2d-ex-radius
def _radius(p):
    """P(||z|| > r) = exp(-r^2 / 2) for z ~ N(0, I_2), so the disc of mass p has r = sqrt(-2 ln(1 - p))."""
    return math.sqrt(-2 * math.log1p(-p))


def _radius_mistakes(ps):
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    ps_t = torch.tensor(ps, dtype=F64)
    return {
        "that is the two-sided quantile of ONE standard normal coordinate; in the plane ||z||^2 = z1^2 + "
        "z2^2 has the chi-squared law with 2 degrees of freedom": normal.icdf((1 + ps_t) / 2),
        "that is the one-sided quantile of one standard normal coordinate; the question is about the norm "
        "of a 2-D vector": normal.icdf(ps_t),
        "that is r^2: P(||z||^2 > t) = exp(-t / 2), so take the square root of -2 ln(1 - p)":
            torch.tensor([_radius(p) ** 2 for p in ps], dtype=F64),
        "that disc holds 1 - p of the mass, not p: solve exp(-r^2 / 2) = 1 - p":
            torch.tensor([math.sqrt(-2 * math.log(p)) for p in ps], dtype=F64),
        "your function ignores p: it returns the radius for 99% whatever p is":
            torch.full((len(ps),), _radius(0.99), dtype=F64),
    }


def grade_typical_radius(typical_radius) -> Grade:
    g = Grade(2)
    hint = "P(||z|| > r) = exp(-r^2 / 2) in two dimensions: r = sqrt(-2 ln(1 - p))"
    for points, what, ps in ((1.0, "p = 0.9 and p = 0.5", [0.9, 0.5]),
                             (1.0, "p = 0.999, 0.6827 and 0.01", [0.999, 0.6827, 0.01])):
        right = torch.tensor([_radius(p) for p in ps], dtype=F64)
        got = numbers(typical_radius, ps)
        same = got[0] is not None and bool((got[0] == got[0][0]).all())
        part(g, points, what, got, right, _radius_mistakes(ps),
             "your function returns the same radius whatever p is" if same else hint, atol=1e-6, rtol=1e-6)
    return g


# ------------------------------------------------------------------ pos2d-ex-kl-diag
def _kl(a, t, b, s):
    """KL(N(a, diag t^2) || N(b, diag s^2)) by torch.distributions, summed over the last axis."""
    q = torch.distributions.Normal(a.to(F64), t.to(F64))
    p = torch.distributions.Normal(b.to(F64), s.to(F64))
    return torch.distributions.kl_divergence(q, p).sum(-1)


def _kl_inputs(seed, *shape):
    g = _rng(seed)
    a, b = torch.randn(2, *shape, generator=g, dtype=F64)
    t, s = 0.02 + 0.5 * torch.rand(2, *shape, generator=g, dtype=F64)
    return a, t, b, s


def _kl_mistakes(a, t, b, s):
    right = _kl(a, t, b, s)
    per = _kl(a[..., None], t[..., None], b[..., None], s[..., None])  # one value per coordinate
    out = {
        "the roles are swapped: that is KL(p || q); the expectation is under q = N(a, diag t^2), so the "
        "squares are divided by s^2": _kl(b, s, a, t),
        "one value per coordinate: sum over the last axis (independent coordinates' KLs add)": per,
        "the constant -1/2 per coordinate is missing": right + 0.5 * a.shape[-1],
        "ln(s / t) is the log of the ratio of standard deviations, not of variances": right + torch.log(
            s / t).sum(-1),
        "you summed over the batch too: return one KL per pair, shape a.shape[:-1]": right.sum(),
    }
    if a.dim() > 2:
        out["sum over the last axis (-1), the coordinates, not over axis 1"] = per.sum(1)
    return out


def grade_diag_gaussian_kl(diag_gaussian_kl) -> Grade:
    g = Grade(3)
    hint = "sum over the last axis of ln(s / t) + (t^2 + (a - b)^2) / (2 s^2) - 1/2"
    for points, what, args in (
            (1.5, "7 pairs in D = 3", _kl_inputs(5301, 7, 3)),
            (0.5, "D = 1", _kl_inputs(5302, 4, 1)),
            (0.5, "two batch axes, shape (2, 3, 2)", _kl_inputs(5303, 2, 3, 2))):
        part(g, points, what, call(diag_gaussian_kl, *args), _kl(*args), _kl_mistakes(*args), hint,
             atol=1e-9, rtol=1e-9)
    a, t, _, _ = _kl_inputs(5304, 5, 2)
    part(g, 0.5, "q = p: the KL is 0", call(diag_gaussian_kl, a, t, a, t), torch.zeros(5, dtype=F64),
         _kl_mistakes(a, t, a, t), hint, atol=1e-12, rtol=0)
    return g


EXERCISES = [
    Exercise("pos2d-ex-grid", 3, ("grid_posterior",), grade_grid_posterior),
    Exercise("pos2d-ex-radius", 2, ("typical_radius",), grade_typical_radius),
    Exercise("pos2d-ex-kl-diag", 3, ("diag_gaussian_kl",), grade_diag_gaussian_kl),
]
WRITTEN = {"pos2d-ex-radius-proof": 2, "pos2d-ex-misplaced": 3, "pos2d-ex-worst": 3, "pos2d-ex-gaps": 4,
           "pos2d-ex-retrain": 8}
