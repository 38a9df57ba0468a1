"""Graded tests of chapter 7, Inverse autoregressive flows (not in the student handout).

Other inputs than the public checks of ``flowlib.book.exercises.iaf`` (other seeds, degrees, orders, shapes,
dtypes, and the edge cases: D = 1, ties between degrees, gates far in the tails, a step that one pass
inverts, a step on which the passes never settle), with reference answers computed here, by this file's
own code. Partial credit part by part; the feedback names the typical mistake a wrong answer matches.
"""

from __future__ import annotations

import pathlib
import runpy

import torch

from flowlib.book.coursework.harness import Exercise, Grade
from flowlib.flows import IAF

_shared = runpy.run_path(str(pathlib.Path(__file__).with_name("_part2a.py")))  # not a package
answer, part, own_work = (_shared[name] for name in ("answer", "part", "own_work"))

F64 = torch.float64


# ------------------------------------------------------------------ iaf-ex-mask
def _mask(in_degrees, out_degrees, strict):
    """[k, j] = 1 where out_degrees[k] >= in_degrees[j] (> if strict), by loops: this file's own code."""
    M = torch.zeros(len(out_degrees), len(in_degrees), dtype=F64)
    for k, dk in enumerate(out_degrees.tolist()):
        for j, dj in enumerate(in_degrees.tolist()):
            M[k, j] = float(dk > dj if strict else dk >= dj)
    return M


def _mask_mistakes(a, b, output):
    right = _mask(a, b, output)
    mistakes = {
        ("hidden units use >= (a unit of degree k may read degree k), the output layer > (output j must "
         "not read z_j): you swapped the two rules"): _mask(a, b, not output),
        "the comparison is the wrong way round: unit k may read units of SMALLER degree, out >= in":
            _mask(b, a, output).T,
        "all ones: the mask must compare the degrees": torch.ones_like(right),
    }
    if len(a) == len(b):  # then the transposed mask has the right shape
        mistakes["the mask is transposed: rows are the units of the layer being computed (out), columns the "
                 "units it reads (in), as in nn.Linear's weight"] = right.T
    return mistakes


def _degrees(seed, D, hidden):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(D, generator=g) + 1                 # the inputs' degrees: an order of 1..D
    units = torch.randint(0, D, (hidden,), generator=g)         # hidden degrees in 0..D-1
    return order, units


def grade_made_mask(made_mask) -> Grade:
    g = Grade(2)
    hint = ("M[k, j] = 1 where out_degrees[k] >= in_degrees[j] (hidden) or > (output): compare "
            "out_degrees[:, None] with in_degrees[None, :]")
    order, units = _degrees(7101, 6, 11)
    part(g, 0.75, "a hidden layer: 6 inputs in a random order, 11 units",
         answer(made_mask, order, units, False), _mask(order, units, False),
         _mask_mistakes(order, units, False), hint, atol=0, rtol=0)
    part(g, 0.75, "an output layer: 11 units, 6 outputs in a random order",
         answer(made_mask, units, order, True), _mask(units, order, True), _mask_mistakes(units, order, True),
         hint, atol=0, rtol=0)
    a, b = torch.tensor([2, 0, 1, 1, 3]), torch.tensor([1, 1, 3, 0, 2])  # square, with ties
    part(g, 0.25, "5 units reading 5 units, with tied degrees (hidden rule)", answer(made_mask, a, b, False),
         _mask(a, b, False), _mask_mistakes(a, b, False), hint, atol=0, rtol=0)
    one, zeros = torch.tensor([1]), torch.zeros(3, dtype=torch.long)
    part(g, 0.25, "D = 1: the output of degree 1 reads three hidden units of degree 0",
         answer(made_mask, zeros, one, True), _mask(zeros, one, True), _mask_mistakes(zeros, one, True), hint,
         atol=0, rtol=0)
    return g


# ------------------------------------------------------------------ iaf-ex-inverse
class _Counted:
    """An IAF step whose ``m_s`` counts its calls, and raises after ``limit`` of them (an endless loop)."""

    def __init__(self, step, limit):
        self._step, self._limit, self.calls, self.dim = step, limit, 0, step.dim

    def m_s(self, z, context=None):
        self.calls += 1
        if self.calls > self._limit:
            raise RuntimeError(f"m_s was called more than {self._limit} times: the loop does not stop")
        return self._step.m_s(z, context)

    def __call__(self, *args, **kwargs):
        return self._step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._step, name)


class _Restless(_Counted):
    """A step on which the passes never settle: m(z) = z + 1 and s = 0, so that every pass of
    z <- m + (y - m) / sigmoid(s) = 2 y - z - 1 moves z by 1 (it alternates between y - 1 and y)."""

    def __init__(self, dim, limit):
        self._limit, self.calls, self.dim = limit, 0, dim

    def m_s(self, z, context=None):
        self.calls += 1
        if self.calls > self._limit:
            raise RuntimeError(f"m_s was called more than {self._limit} times: the loop does not stop")
        return z + 1, torch.zeros_like(z)

    def __getattr__(self, name):
        raise AttributeError(f"this test's step has only dim and m_s (you asked for {name!r})")


def _step(seed, D, hidden=24, std=0.3, dtype=F64, constant=False):
    torch.manual_seed(seed)
    step = IAF(D, hidden=hidden, order=torch.randperm(D) + 1).to(dtype)
    with torch.no_grad():
        for p in step.parameters():
            p.add_(std * torch.randn_like(p))
        if constant:  # no input reaches the network: m and s are constants, one pass inverts the step
            step.made.hidden_layers[0].weight.zero_()
    return step


def _case(seed, D, B, **kwargs):
    step = _step(seed, D, **kwargs)
    dtype = kwargs.get("dtype", F64)
    z = 1.5 * torch.randn(B, D, generator=torch.Generator().manual_seed(seed + 1), dtype=F64).to(dtype)
    with torch.no_grad():
        m, s = step.m_s(z)
        sigma = torch.sigmoid(s)
        y = sigma * z + (1 - sigma) * m           # the step, written out here
        torch.testing.assert_close(step(z)[0], y)  # ... is flowlib's step
    exact = _passes(step, y, D, lambda y, m, sg: m + (y - m) / sg)
    assert (exact - z).abs().max() < (1e-10 if dtype == F64 else 1e-4)  # D passes invert it: a sane case
    return step, z, y


def _passes(step, y, n, update):
    z = y.clone()
    with torch.no_grad():
        for _ in range(n):
            m, s = step.m_s(z)
            z = update(y, m, torch.sigmoid(s))
    return z


def _inverse_mistakes(step, y):
    D = step.dim
    return {
        ("one parallel pass z = m(y) + (y - m(y)) / sigma(y): m and s must be evaluated at z, which is "
         "unknown; repeat the pass, after pass t the first t degrees are exact"):
            _passes(step, y, 1, lambda y, m, sg: m + (y - m) / sg),
        "you multiplied by sigma: y = sigma z + (1 - sigma) m gives z = m + (y - m) / sigma":
            _passes(step, y, D + 1, lambda y, m, sg: m + (y - m) * sg),
        "you applied the forward step to y": step(y)[0].detach(),
        "you returned y unchanged": y,
    }


FLOWLIB_INVERSES = ("inverse", "_inverse")


@own_work(FLOWLIB_INVERSES, 4, "write the passes yourself with flow.m_s, and decide when to stop")
def grade_iaf_inverse(iaf_inverse) -> Grade:
    g = Grade(4)
    hint = ("from z = y repeat z <- m(z) + (y - m(z)) / sigmoid(s(z)) until a pass changes z by at most "
            "1e-12, at most D + 1 passes")
    step, z, y = _case(7201, 7, 40)
    inverts = part(g, 1.5, "a perturbed step in D = 7, random order, 40 points",
                   answer(iaf_inverse, _Counted(step, 50 * step.dim), y), z, _inverse_mistakes(step, y), hint,
                   atol=1e-9, rtol=1e-9)

    step, z, y = _case(7202, 12, 10, constant=True)
    counted = _Counted(step, 50 * step.dim)
    right = part(g, 0.5, "a step that one pass inverts (m and s constant), D = 12",
                 answer(iaf_inverse, counted, y), z, _inverse_mistakes(step, y), hint, atol=1e-12, rtol=1e-12)
    what = "stopping early on that step, where a second pass changes nothing"
    if inverts and right:
        g.check(counted.calls <= 3, 0.5, f"{what}: m_s was called {counted.calls} times",
                "stop as soon as a pass changes z by at most 1e-12; a fixed D passes "
                "(inverse_passes(flow, y, flow.dim)) does not decide when to stop")
    else:
        g.check(False, 0.5, f"{what} (not graded: the inverse is wrong above)")

    what = "at most D + 1 passes on a step whose passes never settle (D = 5)"
    if inverts:
        restless = _Restless(5, 50 * 5)
        _, error = answer(iaf_inverse, restless, torch.randn(3, 5, dtype=F64))
        g.check(restless.calls <= 5 + 2, 0.5, f"{what}: m_s was called {restless.calls} times"
                + (f" and the answer {error}" if error else ""),
                "bound the loop, e.g. for _ in range(flow.dim + 1), and break early when the change is small")
    else:
        g.check(False, 0.5, f"{what} (not graded: the inverse is wrong above)")

    step, z, y = _case(7203, 1, 1)
    part(g, 0.5, "D = 1, B = 1", answer(iaf_inverse, _Counted(step, 50), y), z, _inverse_mistakes(step, y),
         hint, atol=1e-9, rtol=1e-9)

    step, z, y = _case(7204, 6, 20, dtype=torch.float32)
    part(g, 0.5, "a float32 step in D = 6", answer(iaf_inverse, _Counted(step, 50 * step.dim), y), z.double(),
         _inverse_mistakes(step, y), "in float32 a pass may never change z by less than 1e-12: the bound of "
         "D + 1 passes must stop the loop, and the result keeps float32 accuracy", atol=1e-4, rtol=1e-4)
    return g


# ------------------------------------------------------------------ iaf-ex-logdet
def _log_sigmoid(s):
    """log sigmoid(s) = -log(1 + e^-s) = -softplus(-s), written with logaddexp: exact in both tails."""
    return -torch.logaddexp(torch.zeros_like(s), -s)


def _logdet_mistakes(s):
    sigma = torch.sigmoid(s)
    return {
        "the diagonal of the Jacobian of sigma z + (1 - sigma) m is sigma, not 1 - sigma":
            torch.log1p(-sigma).sum(-1),
        "the scale is sigma = sigmoid(s), not exp(s): you returned sum_i s_i": s.sum(-1),
        "you returned the determinant prod_i sigma_i, not its log": sigma.prod(-1),
        "the log-determinant is a sum over the D variables, not a mean": _log_sigmoid(s).mean(-1),
    }


def grade_iaf_logdet(iaf_logdet) -> Grade:
    g = Grade(2)
    hint = "log|det| = sum_i log sigma_i, sigma = sigmoid(s), one sum per row"
    s = 2.5 * torch.randn(9, 7, generator=torch.Generator().manual_seed(7301), dtype=F64)
    part(g, 1, "9 rows in D = 7", answer(iaf_logdet, s), _log_sigmoid(s).sum(-1), _logdet_mistakes(s), hint)
    s = torch.tensor([[-800.0, 0.5, 2.0], [-60.0, -745.5, 40.0]], dtype=F64)
    part(g, 0.5, "gates far in the tails (s = -800, -745.5, -60, 40)", answer(iaf_logdet, s),
         _log_sigmoid(s).sum(-1), _logdet_mistakes(s),
         "torch.log(torch.sigmoid(s)) is log(0) = -inf once sigmoid(s) underflows (s below about -745 in "
         "float64): use torch.nn.functional.logsigmoid(s)", atol=1e-8, rtol=1e-10)
    s32 = torch.randn(1, 1, generator=torch.Generator().manual_seed(7302)).float()
    part(g, 0.5, "D = 1, B = 1, float32", answer(iaf_logdet, s32), _log_sigmoid(s32.double()).sum(-1),
         _logdet_mistakes(s32.double()), "return shape (B,): sum over the last axis only",
         atol=1e-5, rtol=1e-5)
    return g


EXERCISES = [
    Exercise("iaf-ex-mask", 2, ("made_mask",), grade_made_mask),
    Exercise("iaf-ex-inverse", 4, ("iaf_inverse",), grade_iaf_inverse),
    Exercise("iaf-ex-logdet", 2, ("iaf_logdet",), grade_iaf_logdet),
]
WRITTEN = {"iaf-ex-mask-strict": 2, "iaf-ex-inverse-passes": 2, "iaf-ex-logdet-init": 2, "iaf-ex-reverse": 4}
