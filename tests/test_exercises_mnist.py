"""The MNIST chapter's exercise checks: right answers pass, typical mistakes are named."""

import math

import pytest
import torch

from flowlib.book.exercises import ExerciseError
from flowlib.book.exercises.mnist import (
    check_cost_ranking,
    check_gap,
    check_importance_estimate,
    check_inference_gap,
)


def test_the_logsumexp_answer_passes(capsys):
    check_importance_estimate(lambda log_w: torch.logsumexp(log_w, 0) - math.log(log_w.shape[0]))
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda w: torch.logsumexp(w, 0), "subtract log K"),
        (lambda w: w.mean(0), "averaged the log-weights"),
        (lambda w: torch.logsumexp(w, 1) - math.log(w.shape[1]), "batch axis"),
        (lambda w: w.float().exp().mean(0).log(), "log-sum-exp trick"),
        (lambda w: 3.0, "torch.Tensor"),
    ],
)
def test_typical_mistakes_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_importance_estimate(wrong)


def test_gap_check():
    check_gap(93.5, 88.2, 5.3)
    with pytest.raises(ExerciseError, match="negative"):
        check_gap(93.5, 88.2, -5.3)
    with pytest.raises(ExerciseError, match="off"):
        check_gap(93.5, 88.2, 4.0)


def _entry(row, nll, same, full):
    return {"row": row, "test_nll": nll, "test_neg_elbo_same_images": same, "test_neg_elbo": full}


def test_inference_gap_check_names_the_typical_mistakes(capsys):
    check_inference_gap(lambda e: e["test_neg_elbo_same_images"] - e["test_nll"])
    assert "Correct" in capsys.readouterr().out
    for wrong, message in [
        (lambda e: e["test_nll"] - e["test_neg_elbo_same_images"], "sign is flipped"),
        (lambda e: e["test_neg_elbo"] - e["test_nll"], "whole test set"),
        (lambda e: abs(e["test_neg_elbo_same_images"] - e["test_nll"]), "do not take abs"),
        (lambda e: max(0.0, e["test_neg_elbo_same_images"] - e["test_nll"]), "clip it at 0"),
        (lambda e: "5 nats", "expected a number"),
        (lambda e: e["missing"], "raised KeyError"),
    ]:
        with pytest.raises(ExerciseError, match=message):
            check_inference_gap(wrong)


def _rank(summary, cost, key=3, minus=1.0, with_none=False):
    base = next(e for e in summary if e["row"] == "none")["test_nll"]
    out = [(e["row"], base - e["test_nll"], cost["rows"][e["row"]]["ratio"] - minus,
            (base - e["test_nll"]) / max(cost["rows"][e["row"]]["ratio"] - minus, 1e-3))
           for e in summary if e["row"] != "none" or with_none]
    return sorted(out, key=lambda t: t[key], reverse=True)


def test_cost_ranking_check_names_the_typical_mistakes(capsys):
    check_cost_ranking(_rank)
    assert "Correct" in capsys.readouterr().out
    for wrong, message in [
        (lambda s, c: _rank(s, c, key=1), "sorted by the gain"),
        (lambda s, c: _rank(s, c)[::-1], "largest first"),
        (lambda s, c: _rank(s, c, minus=0.0), "not the ratio"),
        (lambda s, c: _rank(s, c, with_none=True), "leave it out"),
        (lambda s, c: [(r, -g, x, -p) for r, g, x, p in _rank(s, c)], "sign is flipped"),
        (lambda s, c: {"cheap": 1.0}, "expected a list"),
    ]:
        with pytest.raises(ExerciseError, match=message):
            check_cost_ranking(wrong)

