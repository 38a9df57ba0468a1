"""Graded tests of chapter 6, Volume-preserving flows (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.volume_preserving`` (other seeds, shapes and
networks; D = 1, B = D, a short v; orthogonal matrices whose columns are already in place, permutations),
with reference answers computed here, by this file's own code. Partial credit part by part; the feedback
names the typical mistake a wrong answer matches.
"""

from __future__ import annotations

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

_shared = load_beside(__file__, "_part2a.py")
answer, part, problem, own_work = _shared.answer, _shared.part, _shared.problem, _shared.own_work

F64 = torch.float64


def _randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ references (this file's own code)
def _householder(v):
    """The matrix H(v) = I - 2 v v^T / ||v||^2."""
    return torch.eye(len(v), dtype=F64) - 2 * torch.outer(v, v) / torch.dot(v, v)


def _orthogonal(seed, D, det):
    """A random orthogonal D x D matrix with determinant ``det`` (QR of a Gaussian matrix, signs fixed)."""
    Q, R = torch.linalg.qr(_randn(seed, D, D))
    Q = Q * torch.sign(torch.diagonal(R))  # Haar distributed
    if torch.sign(torch.linalg.det(Q)) != det:
        Q[:, -1] = -Q[:, -1]
    return Q


# ------------------------------------------------------------------ vp-ex-reflect
def _reflect_mistakes(z, v):
    mistakes = {
        "H = I - 2 v v^T / ||v||^2: you did not divide by ||v||^2 (I - 2 v v^T reflects only for a unit v)":
            z - 2 * (z @ v)[:, None] * v,
        "you divided by ||v|| instead of ||v||^2": z - 2 * (z @ v)[:, None] * v / v.norm(),
        "the factor 2 is missing: I - v v^T / ||v||^2 projects onto the hyperplane orthogonal to v, it does "
        "not reflect": z - (z @ v)[:, None] * v / (v @ v),
    }
    if z.shape[0] == z.shape[1]:  # then (z @ v) * v, shapes (B,) and (D,), multiplies elementwise
        mistakes["(z @ v) * v multiplies elementwise when B = D: write (z @ v)[:, None] * v (one row per "
                 "row of z)"] = z - 2 * (z @ v) * v / (v @ v)
    return mistakes


@own_work(("reflect", "Householder"), 2, "write H(v) z yourself: z - 2 v (v^T z) / ||v||^2 per row")
def grade_reflect_rows(reflect_rows) -> Grade:
    g = Grade(2)
    hint = "H(v) z = z - 2 v (v^T z) / ||v||^2, one inner product per row"
    cases = ((1, "30 rows in D = 7, ||v|| about 6", _randn(6101, 30, 7), 2.5 * _randn(6102, 7)),
             (0.5, "B = D = 4 (a missing [:, None] broadcasts without an error)", _randn(6103, 4, 4),
              _randn(6104, 4)),
             (0.5, "D = 1 and v = (0.001,): H(v) z = -z", _randn(6105, 5, 1),
              torch.full((1,), 1e-3, dtype=F64)))
    for points, what, z, v in cases:
        part(g, points, what, answer(reflect_rows, z, v), z @ _householder(v).T, _reflect_mistakes(z, v),
             hint, atol=1e-10, rtol=1e-10)
    return g


# ------------------------------------------------------------------ vp-ex-reflections
def _product(vs, D):
    product = torch.eye(D, dtype=F64)
    for v in vs:
        product = product @ _householder(v.detach().to(F64))
    return product


def _reflections_part(g, reflections_of, points, what, cases):
    """Award ``points`` if, for every orthogonal Q of ``cases``, the answer returns at most D vectors of
    shape (D,) whose reflections multiply to Q; otherwise say for which Q, and why, it fails."""
    for Q in cases:
        D = Q.shape[0]
        got, error = answer(reflections_of, Q)
        if error is None and (not isinstance(got, (list, tuple)) or not all(
                isinstance(v, torch.Tensor) and tuple(v.shape) == (D,) for v in got)):
            error = f"expected a list of tensors of shape ({D},), got {type(got).__name__}"
        if error is None and len(got) > D:
            error = f"{len(got)} reflections for D = {D}; at most D are needed (each fixes one more column)"
        if error is None and any(float(v.detach().norm()) == 0 for v in got):
            error = "H(0) is undefined: a column already equal to e_k gives v = 0; skip that step"
        elif error is None:
            got, reversed_product = _product(got, D), _product(got[::-1], D)
            if problem(got, Q, 1e-8, 1e-8) and problem(reversed_product, Q, 1e-8, 1e-8) is None:
                error = ("the reflections are in the wrong order: Q = H(v_1) H(v_2) ... H(v_k), with v_1 "
                         "from the first column")
        if error or problem(got, Q, 1e-8, 1e-8):  # the part fails on this Q: say which, and why
            what_Q = f"{what} (D = {D}, det Q = {round(float(torch.linalg.det(Q))):+d})"
            hint = ("reflect column k of the current matrix onto e_k with v = q_k - e_k (from the diagonal "
                    "down), skipping the columns already in place")
            return part(g, points, what_Q, (got, error), Q, None, hint, atol=1e-8, rtol=1e-8)
    return g.check(True, points, what)


def grade_reflections_of(reflections_of) -> Grade:
    g = Grade(4)
    _reflections_part(g, reflections_of, 1, "a random Q", [_orthogonal(6201, 4, 1)])
    _reflections_part(g, reflections_of, 1, "a random Q", [_orthogonal(6202, 7, -1)])
    in_place = torch.eye(4, dtype=F64)
    in_place[1:, 1:] = _orthogonal(6203, 3, -1)  # the first column is already e_1
    _reflections_part(g, reflections_of, 1, "columns already in place", [torch.eye(3, dtype=F64), in_place])
    _reflections_part(g, reflections_of, 0.5, "Q = (-1) and Q = (1)",
                      [torch.tensor([[-1.0]], dtype=F64), torch.tensor([[1.0]], dtype=F64)])
    _reflections_part(g, reflections_of, 0.5, "a permutation", [torch.eye(5, dtype=F64)[[2, 0, 4, 1, 3]]])
    return g


# ------------------------------------------------------------------ vp-ex-coupling
def _network(d, seed):
    """A small fixed network m: R^d -> R^d, not invertible, mixing the coordinates."""
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(d, 16, generator=g, dtype=F64), torch.randn(16, d, generator=g, dtype=F64)

    def m(x1):
        return torch.relu(x1 @ A) @ B / 4 + x1.pow(2).sum(-1, keepdim=True)

    return m


def _coupling_case(seed, B, d):
    x, m = _randn(seed, B, 2 * d), _network(d, seed + 1)
    y = torch.cat([x[:, :d], x[:, d:] + m(x[:, :d])], 1)
    mistakes = {
        "you added m(y_1) again: the inverse subtracts it, x_2 = y_2 - m(y_1)":
            torch.cat([y[:, :d], y[:, d:] + m(y[:, :d])], 1),
        "the shift is m of the kept (first) half, m(y_1) = m(x_1), not of the second":
            torch.cat([y[:, :d], y[:, d:] - m(y[:, d:])], 1),
    }
    return x, y, m, mistakes


def grade_coupling_inverse(coupling_inverse) -> Grade:
    g = Grade(2)
    hint = "x_1 = y_1 (kept), x_2 = y_2 - m(y_1): m is never inverted"
    x, y, m, mistakes = _coupling_case(6301, 25, 5)
    part(g, 1, "25 rows, 2d = 10, a two-layer network m", answer(coupling_inverse, y, m), x, mistakes, hint)
    x, y, m, mistakes = _coupling_case(6302, 1, 1)
    part(g, 0.5, "B = 1, d = 1", answer(coupling_inverse, y, m), x, mistakes, hint)
    x, y, m, _ = _coupling_case(6303, 8, 3)
    kept = y.clone()
    try:
        got, error = coupling_inverse(y, m), None  # y itself, not a copy
    except (NotImplementedError, TimeoutError):
        raise
    except Exception as err:
        got, error = None, f"raised {type(err).__name__}"
    wrong = error or problem(got, x, 1e-8, 1e-6)
    changed = not torch.equal(y, kept)
    what = "the inverse leaves y as it was" + (f": {wrong}" if wrong else "")
    in_place = "you changed y in place (y[:, d:] -= ...): work on a copy, e.g. with torch.cat"
    g.check(not wrong and not changed, 0.5, what, in_place if changed else "")
    return g


EXERCISES = [
    Exercise("vp-ex-reflect", 2, ("reflect_rows",), grade_reflect_rows),
    Exercise("vp-ex-reflections", 4, ("reflections_of",), grade_reflections_of),
    Exercise("vp-ex-coupling", 2, ("coupling_inverse",), grade_coupling_inverse),
]
WRITTEN = {"vp-ex-bound": 4}
