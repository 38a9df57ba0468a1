"""Graded tests of chapter 8, Sylvester flows (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.sylvester`` (other seeds, shapes and dtypes,
and the edge cases: M = 1, a negative Jacobian factor, D = 1, reflections of very different lengths, a
square Q, a single column), with reference answers computed here, by this file's own code. Partial credit
part by part; the feedback names the typical mistake a wrong answer matches.
"""

from __future__ import annotations

import pathlib
import runpy

import torch

from flowlib.book.coursework.harness import Exercise, Grade

_shared = runpy.run_path(str(pathlib.Path(__file__).with_name("_part2a.py")))  # not a package
answer, part, own_work = (_shared[name] for name in ("answer", "part", "own_work"))

F64 = torch.float64


# ------------------------------------------------------------------ syl-ex-logdet
def _logdet(R, R_tilde, a):
    """log|det(I_M + diag(h'(a)) R~ R)| by the full M x M determinant: this file's own route."""
    M = R.shape[-1]
    h_prime = torch.cosh(a) ** -2
    return torch.linalg.slogdet(torch.eye(M, dtype=R.dtype) + h_prime[..., :, None] * (R_tilde @ R)).logabsdet


def _logdet_inputs(seed, B, M, scale=1.0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(B, M, M, generator=g, dtype=F64).triu()
    R_tilde = torch.randn(B, M, M, generator=g, dtype=F64).triu()
    x, y = torch.randn(2, B, M, generator=g, dtype=F64)
    R.diagonal(dim1=-2, dim2=-1).copy_(scale * torch.tanh(x))
    R_tilde.diagonal(dim1=-2, dim2=-1).copy_(scale * torch.tanh(2 * y))
    a = 1.2 * torch.randn(B, M, generator=g, dtype=F64)
    return tuple(t.to(dtype) for t in (R, R_tilde, a))


def _logdet_mistakes(R, R_tilde, a):
    diag = R.diagonal(dim1=-2, dim2=-1) * R_tilde.diagonal(dim1=-2, dim2=-1)
    t = torch.tanh(a)
    return {
        "the derivative h'(a_i) = 1 - tanh(a_i)^2 is missing from each factor":
            torch.log((1 + diag).abs()).sum(-1),
        "h = tanh stands where its derivative h' = 1 - tanh^2 belongs":
            torch.log((1 + diag * t).abs()).sum(-1),
        "h' = 1 - tanh(a)^2: the square is missing": torch.log((1 + diag * (1 - t)).abs()).sum(-1),
        "you returned the determinant, not its log": (1 + diag * (1 - t ** 2)).prod(-1),
        "the identity is missing: each factor is 1 + h'(a_i) R_ii R~_ii":
            torch.log((diag * (1 - t ** 2)).abs()).sum(-1),
        "the log-determinant is a sum over the M factors, not a mean":
            torch.log((1 + diag * (1 - t ** 2)).abs()).mean(-1),
    }


def grade_sylvester_logdet(sylvester_logdet) -> Grade:
    g = Grade(3)
    hint = ("R~ R is upper triangular with diagonal R_ii R~_ii: sum_i log|1 + h'(a_i) R_ii R~_ii|, "
            "one sum per row")
    args = _logdet_inputs(8101, 11, 5)
    part(g, 1.5, "11 layers with M = 5", answer(sylvester_logdet, *args), _logdet(*args),
         _logdet_mistakes(*args), hint)
    args = _logdet_inputs(8102, 1, 1)
    part(g, 0.5, "M = 1, B = 1 (a planar layer)", answer(sylvester_logdet, *args), _logdet(*args),
         _logdet_mistakes(*args), hint)
    args = _logdet_inputs(8103, 8, 3, scale=2.5)
    args[2][:, 0] = 0.05 * args[2][:, 0]  # a_1 near 0, where h' = 1
    args[0][:, 0, 0], args[1][:, 0, 0] = 2.0, -1.5  # R_11 R~_11 = -3: the first factor is negative
    part(g, 0.5, "R_11 R~_11 = -3 (outside the tanh parameterization): a negative factor",
         answer(sylvester_logdet, *args), _logdet(*args), _logdet_mistakes(*args),
         "keep the absolute value, log|1 + h'(a_i) R_ii R~_ii|: the log of a negative factor is nan")
    args = _logdet_inputs(8104, 6, 4, dtype=torch.float32)
    exact = tuple(t.double() for t in args)
    part(g, 0.5, "float32 inputs", answer(sylvester_logdet, *args), _logdet(*exact), _logdet_mistakes(*exact),
         "compute with the inputs' dtype and torch operations", atol=1e-4, rtol=1e-4)
    return g


# ------------------------------------------------------------------ syl-ex-householder
def _Q(vs):
    """H_1 H_2 ... H_n, each H_k = I - 2 v v^T / v^T v applied to the columns of I: this file's own code."""
    Q = torch.eye(vs.shape[1], dtype=vs.dtype)
    for v in reversed(list(vs)):  # Q = H_1 (H_2 (... (H_n I)))
        Q = Q - 2 * torch.outer(v, v @ Q) / (v @ v)
    return Q


def _householder_mistakes(vs):
    eye = torch.eye(vs.shape[1], dtype=vs.dtype)
    product = lambda mats: torch.linalg.multi_dot(mats) if len(mats) > 1 else mats[0]
    return {
        "you multiplied the reflections in reverse order, H_n ... H_1 = Q^T": _Q(vs).T,
        "each v must be normalised: H = I - 2 v v^T / ||v||^2 (without it H is not orthogonal)":
            product([eye - 2 * torch.outer(v, v) for v in vs]),
        "H = I - 2 v v^T / ||v||^2: you divided by ||v|| instead of ||v||^2":
            product([eye - 2 * torch.outer(v, v) / v.norm() for v in vs]),
        "I - v v^T / ||v||^2 is a projection: a reflection needs the factor 2":
            product([eye - torch.outer(v, v) / (v @ v) for v in vs]),
    }


def _vectors(seed, n, D, dtype=F64):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


@own_work(("reflect", "reflect_many", "Householder", "Sylvester"), 3, "multiply the reflections yourself")
def grade_householder_Q(householder_Q) -> Grade:
    g = Grade(3)
    hint = "H_k = I - 2 v_k v_k^T / (v_k^T v_k); multiply them left to right, Q = H_1 H_2 ... H_n"
    vs = _vectors(8201, 4, 6)
    part(g, 1.5, "4 reflections in D = 6", answer(householder_Q, vs), _Q(vs), _householder_mistakes(vs), hint)
    vs = _vectors(8202, 5, 4) * torch.tensor([1e-3, 1e3, 1.0, 30.0, 0.02], dtype=F64)[:, None]
    part(g, 0.5, "5 reflections in D = 4, vectors of lengths from 0.001 to 1000", answer(householder_Q, vs),
         _Q(vs), _householder_mistakes(vs), hint)
    vs = _vectors(8203, 1, 3)
    part(g, 0.5, "a single reflection, D = 3", answer(householder_Q, vs), _Q(vs), _householder_mistakes(vs),
         hint)
    vs = torch.tensor([[2.0], [-0.5], [3.0]], dtype=F64)
    part(g, 0.5, "D = 1: three reflections of the line, Q = (-1)^3", answer(householder_Q, vs), _Q(vs),
         _householder_mistakes(vs), hint)
    return g


# ------------------------------------------------------------------ syl-ex-bjorck
def _bjorck(Q):
    """Q + Q (I_M - Q^T Q) / 2, written out entry by entry from the Gram matrix."""
    gram = torch.einsum("dm,dn->mn", Q, Q)
    return 1.5 * Q - 0.5 * torch.einsum("dm,mn->dn", Q, gram)


def _bjorck_mistakes(Q):
    eye = torch.eye(Q.shape[1], dtype=Q.dtype)
    gap = eye - Q.T @ Q
    mistakes = {
        "you returned the correction Q (I - Q^T Q) / 2 alone: add it to Q": 0.5 * Q @ gap,
        "the correction enters with a + sign: Q (I + (I - Q^T Q) / 2)": Q @ (eye - 0.5 * gap),
        "the correction must be halved: Q (I + (I - Q^T Q) / 2)": Q @ (eye + gap),
    }
    if Q.shape[0] == Q.shape[1]:
        mistakes["you added (I - Q^T Q) / 2 to Q without multiplying by Q"] = Q + 0.5 * gap
        mistakes["Q Q^T stands where Q^T Q belongs"] = Q @ (eye + 0.5 * (eye - Q @ Q.T))
    return mistakes


def _raw(seed, D, M, norm=1.0):
    """A random D x M matrix of Frobenius norm ``norm`` (a single column of norm 1 would be a fixed point)."""
    Q = torch.randn(D, M, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return norm * Q / torch.linalg.matrix_norm(Q)


@own_work(("orthogonalize",), 2, "write one step of the iteration yourself")
def grade_bjorck_step(bjorck_step) -> Grade:
    g = Grade(2)
    hint = "Q^T Q is M x M: return Q @ (I_M + (I_M - Q^T Q) / 2)"
    Q = _raw(8301, 9, 4)
    part(g, 1, "one step on a 9 x 4 matrix", answer(bjorck_step, Q), _bjorck(Q), _bjorck_mistakes(Q), hint)
    Q = _raw(8302, 4, 4)
    part(g, 0.25, "a square 4 x 4 matrix", answer(bjorck_step, Q), _bjorck(Q), _bjorck_mistakes(Q), hint)
    Q = _raw(8303, 5, 1, norm=0.6)
    part(g, 0.25, "a single column (M = 1) of norm 0.6", answer(bjorck_step, Q), _bjorck(Q),
         _bjorck_mistakes(Q), hint)
    # 25 steps from a Frobenius-normalised 6 x 3 matrix reach its polar factor U V^T (Q^T Q = I)
    Q0 = _raw(8304, 6, 3)
    U, _, Vh = torch.linalg.svd(Q0, full_matrices=False)
    Q, error = Q0, None
    for _ in range(25):
        Q, error = answer(bjorck_step, Q)
        if error is not None:
            break
    part(g, 0.5, "25 steps from a 6 x 3 matrix reach the orthonormal U V^T of its SVD", (Q, error), U @ Vh,
         None, "iterating the step must converge: check the sign and the factor 1/2 of the correction",
         atol=1e-12, rtol=0)
    return g


EXERCISES = [
    Exercise("syl-ex-logdet", 3, ("sylvester_logdet",), grade_sylvester_logdet),
    Exercise("syl-ex-householder", 3, ("householder_Q",), grade_householder_Q),
    Exercise("syl-ex-bjorck", 2, ("bjorck_step",), grade_bjorck_step),
]
WRITTEN = {"syl-ex-householder-orthogonal": 2, "syl-ex-bjorck-svd": 4, "syl-ex-subspace": 4}
