"""Graded tests of chapter 03, "The matrix determinant lemma" (not in the student edition).

Other inputs than the public checks of ``flowlib.book.exercises.determinant_lemma`` (other seeds and
shapes, D = 1, M = 1 and M = D, float32, negative determinants), references computed here with
dense linear algebra, and a part each that the cheap route is taken: no D x D determinant, only
M x M ones, no D x D inverse or solve.
"""

from __future__ import annotations

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

part1 = load_beside(__file__, "_part1.py")
call, close, diagnose, watching = part1.call, part1.close, part1.diagnose, part1.watching
single_threaded = part1.single_threaded

F64 = torch.float64


def _randn(seed, *shape, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


# ---------------------------------------------------------------- mdl-ex-rank-one


def _dense_rank_one(u, v):
    """log|det(I + u v^T)| per row by forming the D x D matrices (the reference, not the answer)."""
    u, v = u.double(), v.double()
    return torch.linalg.slogdet(torch.eye(u.shape[-1], dtype=F64) + u[:, :, None] * v[:, None, :]).logabsdet


def _rank_one_mistakes(u, v):
    u, v = u.double(), v.double()
    vu = (v * u).sum(-1)
    return {
        "you return the determinant 1 + v^T u itself: take log|.|": 1 + vu,
        "you return |1 + v^T u|: take its logarithm": (1 + vu).abs(),
        "you treat u v^T as diagonal (sum of log|1 + u_i v_i|): the lemma needs the inner product v^T u":
            torch.log((1 + u * v).abs()).sum(-1),
        "you use u^T u instead of v^T u": torch.log((1 + (u * u).sum(-1)).abs()),
    }


def _rank_one_hint(got, err, u, v, expected, default, atol=1e-8, rtol=1e-6):
    negative = 1 + (u.double() * v.double()).sum(-1) < 0
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and negative.any() \
            and torch.isnan(got[negative]).all() and close(got[~negative], expected[~negative], atol, rtol):
        return "nan where 1 + v^T u < 0: take the absolute value before the logarithm"
    return diagnose(got, err, expected, _rank_one_mistakes(u, v), default, atol, rtol)


@single_threaded
def _rank_one(logdet_rank_one):
    g = Grade(3)
    u, v = _randn(501, 20, 5) * 1.2, _randn(502, 20, 5) * 1.2
    assert ((1 + (u * v).sum(-1)) < 0).sum() == 12  # 12 of the 20 determinants are negative
    got, err = call(logdet_rank_one, u.clone(), v.clone())
    expected = _dense_rank_one(u, v)
    g.check(close(got, expected), 1, "a batch of 20 in D = 5, some determinants negative",
            _rank_one_hint(got, err, u, v, expected, "det(I + u v^T) = 1 + v^T u, per row"))
    u1 = torch.tensor([[2.0], [-0.5], [3.0]], dtype=torch.float32)
    v1 = torch.tensor([[0.25], [4.0], [-1.0]], dtype=torch.float32)
    got, err = call(logdet_rank_one, u1.clone(), v1.clone())
    expected = _dense_rank_one(u1, v1)
    g.check(close(got, expected, atol=1e-6, rtol=1e-6), 1, "D = 1, float32 (log|1 + u v| = 0.405, 0, 0.693)",
            _rank_one_hint(got, err, u1, v1, expected, "keep one value per row, shape (B,)", 1e-6, 1e-6))
    u2, v2 = _randn(503, 4, 600) / 20, _randn(504, 4, 600) / 20
    with watching(part1.DETERMINANTS) as calls:
        got, err = call(logdet_rank_one, u2.clone(), v2.clone())
    expected = _dense_rank_one(u2, v2)
    big = [shape for _, shape in calls if shape[-2:] == (600, 600)]
    g.check(close(got, expected) and not big, 1, "D = 600 in O(BD): no D x D determinant",
            "you take the determinant of the 600 x 600 matrix: use the lemma, 1 + v^T u" if big else
            _rank_one_hint(got, err, u2, v2, expected, "det(I + u v^T) = 1 + v^T u, per row"))
    return g


# ---------------------------------------------------------------- mdl-ex-low-rank


def _dense_low_rank(U, V):
    U, V = U.double(), V.double()
    return torch.linalg.slogdet(torch.eye(U.shape[-2], dtype=F64) + U @ V.transpose(-1, -2)).logabsdet


def _low_rank_mistakes(U, V):
    U, V = U.double(), V.double()
    small = V.transpose(-1, -2) @ U
    return {
        "you forgot the identity: it is det(I_M + V^T U)": torch.linalg.slogdet(small).logabsdet,
        "you return the determinant: take log|det|":
            torch.linalg.det(torch.eye(U.shape[-1], dtype=F64) + small),
        "log|1 + tr(V^T U)| is the rank-one formula, exact only for M = 1":
            torch.log((1 + torch.diagonal(small, dim1=-2, dim2=-1).sum(-1)).abs()),
    }


@single_threaded
def _low_rank(logdet_low_rank):
    g = Grade(3)
    U, V = _randn(601, 6, 10, 4) * 0.7, _randn(602, 6, 10, 4) * 0.7
    got, err = call(logdet_low_rank, U.clone(), V.clone())
    expected = _dense_low_rank(U, V)
    g.check(close(got, expected), 1, "a batch of 6 with D = 10, M = 4",
            diagnose(got, err, expected, _low_rank_mistakes(U, V), "det(I_D + U V^T) = det(I_M + V^T U)"))
    U1, V1 = _randn(603, 5, 7, 1), _randn(604, 5, 7, 1)
    U3, V3 = _randn(605, 3, 3, 3), _randn(606, 3, 3, 3)
    got1, err1 = call(logdet_low_rank, U1.clone(), V1.clone())
    got3, err3 = call(logdet_low_rank, U3.clone(), V3.clone())
    exp1, exp3 = _dense_low_rank(U1, V1), _dense_low_rank(U3, V3)
    g.check(close(got1, exp1) and close(got3, exp3), 1, "the edge cases M = 1 and M = D = 3",
            diagnose(got1, err1, exp1, _low_rank_mistakes(U1, V1), "M = 1 failed") if not close(got1, exp1)
            else diagnose(got3, err3, exp3, _low_rank_mistakes(U3, V3), "M = D failed"))
    U2, V2 = _randn(607, 2, 500, 3) / 10, _randn(608, 2, 500, 3) / 10
    with watching(part1.DETERMINANTS) as calls:
        got, err = call(logdet_low_rank, U2.clone(), V2.clone())
    expected = _dense_low_rank(U2, V2)
    big = [shape for _, shape in calls if shape[-1] > 3]
    g.check(close(got, expected) and not big, 1, "D = 500, M = 3: only 3 x 3 determinants",
            f"you take determinants of shape {big[0]}: form the M x M matrix I_M + V^T U" if big else
            diagnose(got, err, expected, _low_rank_mistakes(U2, V2), "det(I_D + U V^T) = det(I_M + V^T U)"))
    return g


# ---------------------------------------------------------------- mdl-ex-sherman-morrison-code


def _sm_mistakes(A, u, v):
    A_inv = torch.linalg.inv(A)
    Au, vA, den = A_inv @ u, v @ A_inv, 1 + v @ A_inv @ u
    return {
        "the correction is SUBTRACTED from A^{-1}": A_inv + torch.outer(Au, vA) / den,
        "the 1 is missing from the denominator 1 + v^T A^{-1} u": A_inv - torch.outer(Au, vA) / (den - 1),
        "the right factor is the row vector v^T A^{-1} (v @ A_inv), not (A^{-1} v)^T":
            A_inv - torch.outer(Au, A_inv @ v) / den,
        "u and v are swapped: that is the inverse of A + v u^T": torch.linalg.inv(A + torch.outer(v, u)),
    }


FORMULA = "A^{-1} - A^{-1} u v^T A^{-1} / (1 + v^T A^{-1} u)"


@single_threaded
def _sherman_morrison(sherman_morrison):
    g = Grade(3)
    D = 7
    A = _randn(701, D, D) + 4 * torch.eye(D, dtype=F64)  # not symmetric
    u, v = _randn(702, D), _randn(703, D)
    got, err = call(sherman_morrison, torch.linalg.inv(A), u.clone(), v.clone())
    expected = torch.linalg.inv(A + torch.outer(u, v))
    g.check(close(got, expected, atol=1e-10, rtol=1e-8), 1, "a non-symmetric 7 x 7 A",
            diagnose(got, err, expected, _sm_mistakes(A, u, v), FORMULA, atol=1e-10, rtol=1e-8))
    a = torch.tensor([[2.0]], dtype=F64)
    u1, v1 = torch.tensor([3.0], dtype=F64), torch.tensor([-0.5], dtype=F64)
    got, err = call(sherman_morrison, 1 / a, u1, v1)
    expected = torch.tensor([[1 / (2.0 - 1.5)]], dtype=F64)
    g.check(close(got, expected, atol=1e-12), 1, "D = 1: 1 / (a + u v) = 2 for a = 2, u = 3, v = -0.5",
            diagnose(got, err, expected, _sm_mistakes(a, u1, v1), "return a (D, D) matrix, here (1, 1)"))
    D = 400
    A = _randn(704, D, D) / 20 + torch.eye(D, dtype=F64)
    u, v = _randn(705, D) / 5, _randn(706, D) / 5
    A_inv = torch.linalg.inv(A)
    expected = torch.linalg.inv(A + torch.outer(u, v))
    with watching(part1.INVERSES + part1.DETERMINANTS) as calls:
        got, err = call(sherman_morrison, A_inv.clone(), u.clone(), v.clone())
    big = sorted({name for name, shape in calls if shape[-2:] == (D, D)})
    hint = (f"you call {', '.join(big)} on the 400 x 400 matrix: the formula needs only matrix-vector "
            "products" if big else
            diagnose(got, err, expected, _sm_mistakes(A, u, v), FORMULA, atol=1e-9, rtol=1e-7))
    g.check(close(got, expected, atol=1e-9, rtol=1e-7) and not big, 1,
            "D = 400 in O(D^2): no D x D inverse or solve", hint)
    return g


EXERCISES = [
    Exercise("mdl-ex-rank-one", 3, ("logdet_rank_one",), _rank_one),
    Exercise("mdl-ex-low-rank", 3, ("logdet_low_rank",), _low_rank),
    Exercise("mdl-ex-sherman-morrison-code", 3, ("sherman_morrison",), _sherman_morrison),
]
WRITTEN = {"mdl-ex-planar": 4, "mdl-ex-sherman-morrison": 3, "mdl-ex-cost": 3}
