"""The exercise checks of part II (a): planar, radial and volume-preserving flows.

For every check: a correct answer passes, and a typical wrong answer raises ExerciseError
with a message that names the mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowlib.book.exercises import ExerciseError
from flowlib.book.exercises.planar import check_planar_inverse, check_planar_logdet, check_u_hat
from flowlib.book.exercises.radial import check_radial_inverse, check_radial_logdet
from flowlib.book.exercises.volume_preserving import (
    check_coupling_inverse,
    check_reflect,
    check_reflections_of,
)


# ------------------------------------------------------------------ correct answers
def u_hat(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return u + (-1 + F.softplus(wu) - wu) * w / (w * w).sum(-1, keepdim=True)


def planar_logdet(z, u_hat, w, b):
    a = (w * z).sum(-1) + b
    return torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2) * (w * u_hat).sum(-1)))


def planar_inverse(layer, y, iterations=80):
    u_hat, w, b, _ = layer.u_w_b(1)
    m, c = (w * u_hat).sum(-1), (w * y).sum(-1)
    lo, hi = c - m.abs(), c + m.abs()
    for _ in range(iterations):
        a = (lo + hi) / 2
        too_big = a + m * torch.tanh(a + b) > c
        lo, hi = torch.where(too_big, lo, a), torch.where(too_big, a, hi)
    return y - u_hat * torch.tanh((lo + hi) / 2 + b)[:, None]


def radial_logdet(z, z0, alpha, beta):
    D = z.shape[-1]
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    return (D - 1) * torch.log(torch.abs(1 + beta * h)) + torch.log(torch.abs(1 + beta * h - beta * h**2 * r))


def radial_inverse(y, z0, alpha, beta):
    r_y = (y - z0).norm(dim=-1)
    p = alpha + beta - r_y
    r = (-p + torch.sqrt(p * p + 4 * alpha * r_y)) / 2
    return z0 + (y - z0) * ((alpha + r) / (alpha + beta + r))[:, None]


def reflect(z, v):
    return z - 2 * (z @ v)[:, None] * v / (v @ v)


def reflections_of(Q):
    D = Q.shape[0]
    R, vs = Q.clone(), []
    for k in range(D):
        v = torch.zeros(D, dtype=Q.dtype)
        v[k:] = R[k:, k]
        v[k] -= 1  # v = x - e_k maps column k onto e_k
        if v.norm() > 1e-12:
            vs.append(v)
            R = reflect(R.T, v).T
    return vs


def coupling_inverse(y, m):
    d = y.shape[1] // 2
    return torch.cat([y[:, :d], y[:, d:] - m(y[:, :d])], 1)


@pytest.mark.parametrize("check, answer", [
    (check_u_hat, u_hat),
    (check_planar_logdet, planar_logdet),
    (check_planar_inverse, planar_inverse),
    (check_radial_logdet, radial_logdet),
    (check_radial_inverse, radial_inverse),
    (check_reflect, reflect),
    (check_reflections_of, reflections_of),
    (check_coupling_inverse, coupling_inverse),
], ids=lambda x: getattr(x, "__name__", ""))
def test_correct_answers_pass(check, answer, capsys):
    check(answer)
    assert "Correct" in capsys.readouterr().out


# ------------------------------------------------------------------ typical mistakes
def u_hat_without_minus_wu(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return u + (-1 + F.softplus(wu)) * w / (w * w).sum(-1, keepdim=True)


def planar_logdet_without_h_prime(z, u_hat, w, b):
    return torch.log(torch.abs(1 + (w * u_hat).sum(-1)))


def planar_inverse_naive(layer, y):
    u_hat, w, b, _ = layer.u_w_b(1)
    return y - u_hat * torch.tanh((w * y).sum(-1, keepdim=True) + b)


def radial_logdet_once(z, z0, alpha, beta):
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    return torch.log(torch.abs(1 + beta * h)) + torch.log(torch.abs(1 + beta * h - beta * h**2 * r))


def radial_inverse_naive(y, z0, alpha, beta):
    r_y = (y - z0).norm(dim=-1, keepdim=True)
    return z0 + (y - z0) / (1 + beta[:, None] / (alpha[:, None] + r_y))


def reflect_unnormalised(z, v):
    return z - 2 * (z @ v)[:, None] * v


def too_many_reflections(Q):
    return reflections_of(Q) + [torch.ones(Q.shape[0], dtype=Q.dtype)] * 2


def wrong_reflections(Q):
    return reflections_of(Q)[:-1]


def coupling_inverse_adds(y, m):
    d = y.shape[1] // 2
    return torch.cat([y[:, :d], y[:, d:] + m(y[:, :d])], 1)


@pytest.mark.parametrize("check, answer, message", [
    (check_u_hat, u_hat_without_minus_wu, "subtract w\\^T u"),
    (check_u_hat, lambda u, w: u, "unchanged"),
    (check_planar_logdet, planar_logdet_without_h_prime, "left out h'"),
    (check_planar_logdet, lambda z, u, w, b: 1 + (1 - torch.tanh((w * z).sum(-1) + b) ** 2) * (w * u).sum(-1),
     "not its log"),
    (check_planar_inverse, planar_inverse_naive, "the unknown"),
    (check_planar_inverse, lambda layer, y: (y, None), "not a tuple"),
    (check_radial_logdet, radial_logdet_once, "D - 1 times"),
    (check_radial_inverse, radial_inverse_naive, "Solve r_y"),
    (check_reflect, reflect_unnormalised, "divide by \\|\\|v\\|\\|\\^2"),
    (check_reflections_of, too_many_reflections, "at most D"),
    (check_reflections_of, wrong_reflections, "values are off"),
    (check_reflections_of, lambda Q: Q, "list of tensors"),
    (check_coupling_inverse, coupling_inverse_adds, "subtracts it"),
    (check_coupling_inverse, lambda y, m: 1 / 0, "ZeroDivisionError"),
])
def test_typical_mistakes_are_named(check, answer, message):
    with pytest.raises(ExerciseError, match=message):
        check(answer)


# ------------------------------------------------------------------ the student edition's stubs
@pytest.mark.parametrize("check", [check_u_hat, check_planar_logdet, check_planar_inverse,
                                   check_radial_logdet, check_radial_inverse, check_reflect,
                                   check_reflections_of, check_coupling_inverse], ids=lambda c: c.__name__)
def test_an_unwritten_answer_fails_with_its_stub_error(check):
    """A stub's NotImplementedError reaches the check cell as itself (the student edition's cells may
    fail only with it), not as a wrong answer."""
    def stub(*args):
        raise NotImplementedError("Exercise x: replace this line with your solution")

    with pytest.raises(NotImplementedError, match="Exercise x"):
        check(stub)


# ------------------------------------------------------------------ the graded tests (coursework/graded)
def u_hat_overflowing(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return u + (-1 + torch.log(1 + torch.exp(wu)) - wu) * w / (w * w).sum(-1, keepdim=True)


def planar_logdet_without_abs(z, u_hat, w, b):
    a = (w * z).sum(-1) + b
    return torch.log(1 + (1 - torch.tanh(a) ** 2) * (w * u_hat).sum(-1))


def planar_inverse_fixed_point(layer, y):
    u_hat, w, b, _ = layer.u_w_b(1)
    z = y
    for _ in range(100):
        z = y - u_hat * torch.tanh((w * z).sum(-1, keepdim=True) + b)
    return z


def planar_inverse_by_flowlib(layer, y):
    from flowlib.flows import inverse

    return inverse.planar_inverse(layer, y)[0]


def radial_inverse_normalising(y, z0, alpha, beta):
    r_y = (y - z0).norm(dim=-1)
    p = alpha + beta - r_y
    r = (-p + torch.sqrt(p * p + 4 * alpha * r_y)) / 2
    return z0 + (y - z0) / r_y[:, None] * r[:, None]


def reflections_not_skipping(Q):
    """The mistake of keeping v = q_k - e_k = 0 for a column already in place (H(0) is undefined)."""
    vs = reflections_of(Q)
    return vs + [torch.zeros(Q.shape[0], dtype=Q.dtype)] * (Q.shape[0] - len(vs))


def coupling_inverse_in_place(y, m):
    d = y.shape[1] // 2
    y[:, d:] -= m(y[:, :d])
    return y


def unwritten(*args):
    raise NotImplementedError("Exercise x: replace this line with your solution")


@pytest.mark.parametrize("chapter, label, answer, points, message", [
    ("04_planar_flows", "pf-ex-uhat", u_hat, 3, "all graded tests passed"),
    ("04_planar_flows", "pf-ex-uhat", u_hat_overflowing, 2.5, "overflows"),
    ("04_planar_flows", "pf-ex-uhat", u_hat_without_minus_wu, 0, "subtract w^T u"),
    ("04_planar_flows", "pf-ex-logdet", planar_logdet, 3, "all graded tests passed"),
    ("04_planar_flows", "pf-ex-logdet", planar_logdet_without_abs, 2.5, "absolute value"),
    ("04_planar_flows", "pf-ex-logdet", planar_logdet_without_h_prime, 0, "h' is missing"),
    ("04_planar_flows", "pf-ex-inverse", planar_inverse, 4, "all graded tests passed"),
    ("04_planar_flows", "pf-ex-inverse", planar_inverse_fixed_point, 2.5, "diverges"),
    ("04_planar_flows", "pf-ex-inverse", planar_inverse_naive, 0, "the unknown"),
    ("04_planar_flows", "pf-ex-inverse", planar_inverse_by_flowlib, 0, "calls flowlib's planar_inverse"),
    ("05_radial_flows", "rf-ex-logdet", radial_logdet, 3, "all graded tests passed"),
    ("05_radial_flows", "rf-ex-logdet", radial_logdet_once, 0, "you have it once"),
    ("05_radial_flows", "rf-ex-inverse", radial_inverse, 4, "all graded tests passed"),
    ("05_radial_flows", "rf-ex-inverse", radial_inverse_normalising, 3.5, "do not divide by r_y"),
    ("05_radial_flows", "rf-ex-inverse", radial_inverse_naive, 0, "the unknown"),
    ("06_volume_preserving", "vp-ex-reflect", reflect, 2, "all graded tests passed"),
    ("06_volume_preserving", "vp-ex-reflect", reflect_unnormalised, 0, "did not divide by ||v||^2"),
    ("06_volume_preserving", "vp-ex-reflections", reflections_of, 4, "all graded tests passed"),
    ("06_volume_preserving", "vp-ex-reflections", reflections_not_skipping, 2, "skip that step"),
    ("06_volume_preserving", "vp-ex-reflections", too_many_reflections, 0, "at most D"),
    ("06_volume_preserving", "vp-ex-coupling", coupling_inverse, 2, "all graded tests passed"),
    ("06_volume_preserving", "vp-ex-coupling", coupling_inverse_in_place, 1.5, "in place"),
    ("06_volume_preserving", "vp-ex-coupling", coupling_inverse_adds, 0, "subtracts it"),
    ("06_volume_preserving", "vp-ex-coupling", unwritten, 0, "not attempted"),
], ids=lambda x: getattr(x, "__name__", None) if callable(x) else None)
def test_graded_tests_give_full_partial_and_no_credit(chapter, label, answer, points, message):
    """The hidden graded tests of chapters 4-6: full marks for a right answer, partial credit for one
    that fails an edge case the public check does not try, 0 for a typical mistake, each named."""
    from flowlib.book.coursework.grade import load_graded
    from flowlib.book.coursework.harness import run_exercise

    module, _ = load_graded(chapter)
    exercise = next(e for e in module.EXERCISES if e.id == label)
    result = run_exercise(module.EXERCISES, label, {exercise.names[0]: answer})
    assert (result["points"], result["max_points"]) == (points, exercise.points), result
    assert message in result["feedback"], result
