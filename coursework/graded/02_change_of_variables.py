"""Graded tests of chapter 02, "Change of variables" (not in the student edition).

Other inputs than the public checks of ``flowlib.book.exercises.change_of_variables`` (other points,
float32, 2-D tensors, tiny and large y, other strengths s of the banana map, s = 0, N = 1), with
references computed here from closed forms.
"""

from __future__ import annotations

import math

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

part1 = load_beside(__file__, "_part1.py")
call, close, diagnose, check_part = part1.call, part1.close, part1.diagnose, part1.check_part

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------- cov-ex-logit


def _logit_reference(y):
    y = y.double()
    x = torch.log(y) - torch.log1p(-y)  # logit(y)
    return -0.5 * x**2 - 0.5 * LOG_2PI - torch.log(y) - torch.log1p(-y)


def _logit_mistakes(y):
    right = _logit_reference(y)
    jacobian = -torch.log(y.double() * (1 - y.double()))
    return {
        "the Jacobian term log|d logit(y)/dy| = -log(y (1 - y)) is missing": right - jacobian,
        "the Jacobian term has the wrong sign: divide the density by |f'(x)| = y (1 - y)":
            right - 2 * jacobian,
        "you return the density; return its logarithm": right.exp(),
    }


def _logit(log_density_logit):
    g = Grade(2)
    y = torch.linspace(0.001, 0.999, 37, dtype=F64)
    check_part(g, log_density_logit, (y.clone(),), _logit_reference(y), 1,
               "37 points of (0, 1), out to 0.001 and 0.999", _logit_mistakes(y),
               "log p_Y(y) = log N(logit(y); 0, 1) - log(y (1 - y))", atol=1e-9)
    y2 = torch.tensor([[0.5, 0.1, 0.9], [0.25, 0.75, 0.6]], dtype=torch.float32)
    check_part(g, log_density_logit, (y2.clone(),), _logit_reference(y2), 1,
               "a 2 x 3 float32 tensor, elementwise (at y = 1/2: log N(0; 0, 1) + log 4)",
               _logit_mistakes(y2), "work elementwise and keep the shape of y", atol=1e-5, rtol=1e-5)
    return g


# ---------------------------------------------------------------- cov-ex-square


def _chi2_reference(y):
    """The chi-square density with one degree of freedom, e^{-y/2} / sqrt(2 pi y), in logs."""
    y = y.double()
    return -0.5 * y - 0.5 * torch.log(2 * math.pi * y)


def _square_mistakes(y):
    right = _chi2_reference(y)
    log_2sqrt = math.log(2) + 0.5 * torch.log(y.double())
    return {
        "you count one preimage only: +sqrt(y) and -sqrt(y) both map to y, and their contributions add":
            right - math.log(2),
        "the Jacobian term is missing: each preimage contributes p_X(x) / |f'(x)|, |f'(x)| = 2 sqrt(y)":
            right + log_2sqrt,
        "the Jacobian term has the wrong sign: divide by |f'(x)| = 2 sqrt(y)": right + 2 * log_2sqrt,
        "you return the density; return its logarithm": right.exp(),
    }


def _square(log_density_square):
    g = Grade(3)
    y = torch.linspace(0.02, 9.0, 50, dtype=F64)
    check_part(g, log_density_square, (y.clone(),), _chi2_reference(y), 1.5, "50 points of (0, 9]",
               _square_mistakes(y), "p_Y(y) = [p_X(sqrt y) + p_X(-sqrt y)] / (2 sqrt y)", atol=1e-9)
    y_far = torch.tensor([1e-10, 1e-4, 400.0, 1600.0], dtype=F64)
    check_part(g, log_density_square, (y_far.clone(),), _chi2_reference(y_far), 1,
               "tiny and large y (1e-10 and 1600): stay in logarithms", _square_mistakes(y_far),
               "exp(-800) underflows to 0: add the two preimages' contributions in log space "
               "(torch.logaddexp) or simplify p_Y first", atol=1e-8)
    y2 = torch.tensor([[0.5, 2.0], [1.0, 4.0]], dtype=torch.float32)
    check_part(g, log_density_square, (y2.clone(),), _chi2_reference(y2), 0.5,
               "a 2 x 2 float32 tensor, elementwise", _square_mistakes(y2),
               "work elementwise and keep the shape of y", atol=1e-5, rtol=1e-5)
    return g


# ---------------------------------------------------------------- cov-ex-banana


def _banana_reference(y, s):
    """Invert y1 = x1, y2 = x2 exp(0.4 s x1) + s (x1^2 - 1), and add log|det J_{f^{-1}}| = -0.4 s y1."""
    y = y.double()
    x1 = y[:, 0]
    x2 = (y[:, 1] - s * (x1**2 - 1)) / torch.exp(0.4 * s * x1)
    return -0.5 * (x1**2 + x2**2) - LOG_2PI - 0.4 * s * x1


def _banana_mistakes(y, s):
    right = _banana_reference(y, s)
    log_det_inv = -0.4 * s * y[:, 0].double()
    return {
        "the Jacobian term log|det J_{f^{-1}}(y)| = -0.4 s y1 is missing": right - log_det_inv,
        "the Jacobian term has the wrong sign: log|det J_{f^{-1}}(y)| = -0.4 s y1": right - 2 * log_det_inv,
        "you return the density; return its logarithm": right.exp(),
        "the normalising constant of N(0, I_2) is off: log N(x; 0, I_2) = -|x|^2 / 2 - log(2 pi)":
            right + 0.5 * LOG_2PI,
        "your answer ignores s: it is the density for s = 1": _banana_reference(y, 1.0),
    }


def _banana(log_density_banana):
    g = Grade(4)
    gen = torch.Generator().manual_seed(901)
    y = torch.randn(50, 2, generator=gen, dtype=F64) * torch.tensor([1.2, 2.5], dtype=F64)
    check_part(g, log_density_banana, (y.clone(), 1.0), _banana_reference(y, 1.0), 1.5,
               "s = 1 at 50 other points", _banana_mistakes(y, 1.0),
               "invert the map by hand: x1 = y1, x2 = (y2 - s (y1^2 - 1)) exp(-0.4 s y1)", atol=1e-9)
    right, hint = True, ""
    for s in (0.3, 2.0):
        got, err = call(log_density_banana, y.clone(), s)
        expected = _banana_reference(y, s)
        if right and not close(got, expected, atol=1e-9):
            right, hint = False, f"s = {s}: " + diagnose(got, err, expected, _banana_mistakes(y, s),
                                                         "use s wherever the map has it", atol=1e-9)
    g.check(right, 1.5, "other strengths, s = 0.3 and s = 2", hint)
    check_part(g, log_density_banana, (y.clone(), 0.0), -0.5 * (y**2).sum(-1) - LOG_2PI, 0.5,
               "s = 0, the identity: log N(y; 0, I_2)", _banana_mistakes(y, 0.0),
               "at s = 0 the map is the identity", atol=1e-9)
    y1 = torch.tensor([[0.7, -1.1]], dtype=F64)
    check_part(g, log_density_banana, (y1.clone(), 1.0), _banana_reference(y1, 1.0), 0.5,
               "one point, N = 1: shape (1,)", _banana_mistakes(y1, 1.0), "one value per row of y", atol=1e-9)
    return g


EXERCISES = [
    Exercise("cov-ex-logit", 2, ("log_density_logit",), _logit),
    Exercise("cov-ex-square", 3, ("log_density_square",), _square),
    Exercise("cov-ex-banana", 4, ("log_density_banana",), _banana),
]
WRITTEN = {"cov-ex-affine": 4, "cov-ex-zero-det": 3}
