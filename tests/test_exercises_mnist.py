"""The MNIST chapter's exercise checks: right answers pass, typical mistakes are named."""

import math

import pytest
import torch

from flowlib.exercises import ExerciseError
from flowlib.exercises.mnist import check_gap, check_importance_estimate


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
