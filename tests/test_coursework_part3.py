"""The graded tests of chapters 10 and 11 (coursework/graded/), without executing the notebooks: the
instructor's answers get full marks, the student edition's stub gets 0 as "not attempted", and a typical
mistake gets partial credit with the mistake named. Their inputs are generated, not read from results/."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib.book.coursework.grade import load_graded
from flowlib.book.coursework.harness import run_exercise


def _stub(*args):
    raise NotImplementedError("Exercise: replace this line with your solution")


def inference_gap(entry):
    return entry["test_neg_elbo_same_images"] - entry["test_nll"]


def estimate(log_w):
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def rank_by_cost(summary, cost):
    base = next(e for e in summary if e["row"] == "none")["test_nll"]
    ranking = [(e["row"], base - e["test_nll"], cost["rows"][e["row"]]["ratio"] - 1.0) for e in summary
               if e["row"] != "none"]
    return sorted([(r, g, x, g / max(x, 1e-3)) for r, g, x in ranking], key=lambda t: t[3], reverse=True)


def grid_posterior(log_joint, cell_area):
    log_px = torch.logsumexp(log_joint.reshape(-1), 0) + math.log(cell_area)
    return log_joint - log_px, log_px


def typical_radius(p):
    return math.sqrt(-2 * math.log(1 - p))


def diag_gaussian_kl(a, t, b, s):
    return (torch.log(s / t) + (t**2 + (a - b) ** 2) / (2 * s**2) - 0.5).sum(-1)


RIGHT = {"inference_gap": inference_gap, "estimate": estimate, "rank_by_cost": rank_by_cost,
         "grid_posterior": grid_posterior, "typical_radius": typical_radius,
         "diag_gaussian_kl": diag_gaussian_kl}

# one typical mistake per exercise: (the wrong answer, the points it earns, words its feedback must contain)
MISTAKES = {
    "mnist-ex-gap": (lambda e: abs(inference_gap(e)), 1.5, "absolute value"),
    "mnist-ex-is": (lambda w: w.exp().mean(0).log(), 2.0, "log-sum-exp trick"),
    "mnist-ex-cost": (lambda s, c: sorted(rank_by_cost(s, c), key=lambda t: -t[1]), 1.5,
                      "sorted by the gain"),
    "pos2d-ex-grid": (lambda lj, dA: grid_posterior(lj.reshape(-1), dA) if lj.dim() == 1 else (
        lj - (torch.logsumexp(lj, 0) + math.log(dA)), torch.logsumexp(lj, 0) + math.log(dA)), 1.5,
        "flatten it first"),
    "pos2d-ex-radius": (lambda p: math.sqrt(-2 * math.log(0.01)), 0.0, "ignores p"),
    "pos2d-ex-kl-diag": (lambda a, t, b, s: (torch.log(s / t) + (t**2 + (a - b) ** 2) / (2 * s**2)
                                             - 0.5).sum(1), 2.5, "not over axis 1"),
}


@pytest.mark.parametrize("chapter", ["10_mnist", "11_posterior_2d"])
def test_graded_tests_give_full_marks_zero_and_named_partial_credit(chapter):
    module, _ = load_graded(chapter)
    assert module.WRITTEN and all(v > 0 for v in module.WRITTEN.values())
    for exercise in module.EXERCISES:
        assert 2 <= exercise.points <= 5, exercise.id
        right = run_exercise(module.EXERCISES, exercise.id, RIGHT)
        assert (right["points"], right["feedback"]) == (exercise.points, "all graded tests passed"), right
        stub = run_exercise(module.EXERCISES, exercise.id, {n: _stub for n in exercise.names})
        assert stub["points"] == 0 and "not attempted" in stub["feedback"], stub
        wrong, points, named = MISTAKES[exercise.id]
        mistake = run_exercise(module.EXERCISES, exercise.id, {n: wrong for n in exercise.names})
        assert mistake["points"] == points and named in mistake["feedback"], mistake
