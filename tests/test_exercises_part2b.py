"""The exercise checks of the IAF, Sylvester and PCP-Map chapters: a right answer passes, each
typical wrong answer raises ExerciseError with a message that names the mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowlib.book.exercises import ExerciseError
from flowlib.book.exercises._mistakes import call_reader, check_with_mistakes
from flowlib.book.exercises.iaf import check_iaf_inverse, check_iaf_logdet, check_made_mask
from flowlib.book.exercises.pcpmap import (
    check_cholesky_logdet,
    check_gaussian_brenier_map,
    check_pcpmap_inverse,
)
from flowlib.book.exercises.sylvester import check_bjorck_step, check_householder_Q, check_sylvester_logdet


def raises(check, fn, match):
    with pytest.raises(ExerciseError, match=match):
        check(fn)


# ---------------------------------------------------------------- shared helpers
def test_check_with_mistakes_names_the_mistake_then_falls_back_to_the_generic_message():
    right = torch.tensor([1.0, 2.0])
    check_with_mistakes("x", right.clone(), right, {"off by one": right + 1})
    with pytest.raises(ExerciseError, match="off by one"):
        check_with_mistakes("x", right + 1, right, {"off by one": right + 1})
    with pytest.raises(ExerciseError, match="(?s)largest difference.*Hint: think"):
        check_with_mistakes("x", right * 7, right, {"off by one": right + 1}, hint="think")
    with pytest.raises(ExerciseError, match="expected shape"):
        check_with_mistakes("x", torch.ones(3), right, {})


def test_call_reader_reports_crashes_and_non_functions():
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        call_reader("f", lambda: 1 / 0)
    with pytest.raises(ExerciseError, match="expected a function"):
        call_reader("f", 3)


# ---------------------------------------------------------------- Sylvester
def sylvester_logdet(R, R_tilde, a):
    diag = R.diagonal(dim1=-2, dim2=-1) * R_tilde.diagonal(dim1=-2, dim2=-1)
    return torch.log((1 + (1 - torch.tanh(a) ** 2) * diag).abs()).sum(-1)


def test_sylvester_logdet():
    check_sylvester_logdet(sylvester_logdet)

    def full_det(R, R_tilde, a):  # also right: the full M x M determinant
        hp = 1 - torch.tanh(a) ** 2
        return torch.linalg.slogdet(torch.eye(R.shape[-1], dtype=R.dtype) + hp[:, :, None] * (R_tilde @ R))[1]

    check_sylvester_logdet(full_det)

    def diag(R, Rt):
        return R.diagonal(dim1=-2, dim2=-1) * Rt.diagonal(dim1=-2, dim2=-1)

    raises(check_sylvester_logdet, lambda R, Rt, a: torch.log((1 + diag(R, Rt)).abs()).sum(-1),
           "derivative h'")
    raises(check_sylvester_logdet,
           lambda R, Rt, a: torch.log((1 + diag(R, Rt) * torch.tanh(a)).abs()).sum(-1), "not h\\(a\\) itself")
    raises(check_sylvester_logdet, lambda R, Rt, a: (1 + diag(R, Rt) * (1 - torch.tanh(a) ** 2)).prod(-1),
           "not its logarithm")
    raises(check_sylvester_logdet, lambda R, Rt, a: sylvester_logdet(R, Rt, a).sum(), "expected shape")
    raises(check_sylvester_logdet, lambda R, Rt, a: sylvester_logdet(R, Rt, a) + 0.1, "largest difference")


def householder_Q(vs):
    Q = torch.eye(vs.shape[1], dtype=vs.dtype)
    for v in vs:
        Q = Q @ (torch.eye(vs.shape[1], dtype=vs.dtype) - 2 * torch.outer(v, v) / (v @ v))
    return Q


def test_householder_Q():
    check_householder_Q(householder_Q)
    raises(check_householder_Q, lambda vs: householder_Q(vs.flip(0)), "order")
    raises(check_householder_Q, lambda vs: householder_Q(vs).T, "order")

    def unnormalised(vs):
        Q = torch.eye(vs.shape[1], dtype=vs.dtype)
        for v in vs:
            Q = Q @ (torch.eye(vs.shape[1], dtype=vs.dtype) - 2 * torch.outer(v, v))
        return Q

    raises(check_householder_Q, unnormalised, "normalise")


def bjorck_step(Q):
    I = torch.eye(Q.shape[1], dtype=Q.dtype)
    return Q @ (I + 0.5 * (I - Q.T @ Q))


def test_bjorck_step():
    check_bjorck_step(bjorck_step)
    I = lambda Q: torch.eye(Q.shape[1], dtype=Q.dtype)
    raises(check_bjorck_step, lambda Q: 0.5 * Q @ (I(Q) - Q.T @ Q), "correction alone")
    raises(check_bjorck_step, lambda Q: Q @ (I(Q) - 0.5 * (I(Q) - Q.T @ Q)), "sign")
    raises(check_bjorck_step, lambda Q: Q @ (I(Q) + (I(Q) - Q.T @ Q)), "halved")
    raises(check_bjorck_step, lambda Q: Q @ (I(Q) + 0.5 * (torch.eye(Q.shape[0]) - Q @ Q.T)), "raised")


# ---------------------------------------------------------------- PCP-Map
def test_cholesky_logdet():
    check_cholesky_logdet(lambda H: 2 * torch.linalg.cholesky(H).diagonal(dim1=-2, dim2=-1).log().sum(-1))
    raises(check_cholesky_logdet, lambda H: torch.linalg.cholesky(H).diagonal(dim1=-2, dim2=-1).log().sum(-1),
           "half the answer")
    raises(check_cholesky_logdet, lambda H: H.diagonal(dim1=-2, dim2=-1).log().sum(-1), "Hadamard")
    raises(check_cholesky_logdet, lambda H: torch.linalg.det(H), "take the logarithm")


def sqrtm(S):
    evals, evecs = torch.linalg.eigh(S)
    return evecs @ torch.diag(evals.sqrt()) @ evecs.T


def test_gaussian_brenier_map():
    check_gaussian_brenier_map(sqrtm)
    raises(check_gaussian_brenier_map, torch.linalg.cholesky, "not symmetric.*Cholesky")
    raises(check_gaussian_brenier_map, lambda S: S, "covariance Sigma\\^2")
    raises(check_gaussian_brenier_map, lambda S: S.abs().sqrt(), "entrywise")

    def negative_root(S):  # symmetric, squares to S, but not positive definite
        evals, evecs = torch.linalg.eigh(S)
        signs = torch.ones_like(evals)
        signs[0] = -1
        return evecs @ torch.diag(signs * evals.sqrt()) @ evecs.T

    raises(check_gaussian_brenier_map, negative_root, "not positive definite")


def lbfgs_inverse(flow, y, max_iter=500):
    z = y.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (flow.potential(z) - (z * y).sum(-1)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return z.detach()


def test_pcpmap_inverse():
    check_pcpmap_inverse(lbfgs_inverse)
    check_pcpmap_inverse(lambda flow, y: flow.inverse(y)[0])
    raises(check_pcpmap_inverse, lambda flow, y: y, "unchanged")
    raises(check_pcpmap_inverse, lambda flow, y: flow.gradient(y).detach(), "forward map")
    raises(check_pcpmap_inverse, lambda flow, y: y[:, :2], "shape")

    raises(check_pcpmap_inverse, lambda flow, y: lbfgs_inverse(flow, y, max_iter=2), "residual")


# ---------------------------------------------------------------- IAF
def made_mask(in_degrees, out_degrees, output):
    if output:
        return (out_degrees[:, None] > in_degrees[None, :]).float()
    return (out_degrees[:, None] >= in_degrees[None, :]).float()


def test_made_mask():
    check_made_mask(made_mask)
    raises(check_made_mask, lambda a, b, output: (b[:, None] >= a[None, :]).float(), ">=")
    raises(check_made_mask, lambda a, b, output: (b[:, None] > a[None, :]).float(), ">")
    raises(check_made_mask, lambda a, b, output: made_mask(a, b, output).T, "transpose|expected shape")

    def wrong_way(a, b, output):
        return (a[None, :] > b[:, None]).float() if output else (a[None, :] >= b[:, None]).float()

    raises(check_made_mask, wrong_way, "wrong way round")


def iaf_inverse(flow, y):
    z = y.clone()
    for _ in range(flow.dim):
        m, s = flow.m_s(z)
        z = m + (y - m) / torch.sigmoid(s)
    return z.detach()


def test_iaf_inverse():
    check_iaf_inverse(iaf_inverse)
    check_iaf_inverse(lambda flow, y: flow.inverse(y)[0].detach())

    def one_pass(flow, y):
        m, s = flow.m_s(y)
        return (m + (y - m) / torch.sigmoid(s)).detach()

    raises(check_iaf_inverse, one_pass, "ONE parallel pass")
    raises(check_iaf_inverse, lambda flow, y: flow(y)[0].detach(), "forward map")
    raises(check_iaf_inverse, lambda flow, y: y, "unchanged")


def test_iaf_logdet():
    check_iaf_logdet(lambda s: F.logsigmoid(s).sum(-1))
    raises(check_iaf_logdet, lambda s: torch.log1p(-torch.sigmoid(s)).sum(-1), "1 - sigma")
    raises(check_iaf_logdet, lambda s: s.sum(-1), "not exp")
    raises(check_iaf_logdet, lambda s: torch.sigmoid(s).prod(-1), "take logs")


# ---------------------------------------------------------------- the student edition's stubs
CHECKS = [check_made_mask, check_iaf_inverse, check_iaf_logdet, check_sylvester_logdet, check_householder_Q,
          check_bjorck_step, check_cholesky_logdet, check_gaussian_brenier_map, check_pcpmap_inverse]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_an_unwritten_answer_fails_with_its_stub_error(check):
    """A stub's NotImplementedError reaches the check cell as itself (the student edition's cells may
    fail only with it), not as a wrong answer; any other error is still reported as feedback."""
    def stub(*args):
        raise NotImplementedError("Exercise x: replace this line with your solution")

    with pytest.raises(NotImplementedError, match="Exercise x"):
        check(stub)

    def broken(*args):
        raise KeyError("oops")

    raises(check, broken, "raised KeyError")
