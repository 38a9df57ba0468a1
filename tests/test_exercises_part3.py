"""The checks of chapter 11's new exercises: right answers pass and typical mistakes are named; and
the checks of part III (chapters 10 and 11) let the student edition's unwritten answer fail with its
own NotImplementedError."""

import math

import pytest
import torch

from flowlib.book.exercises import ExerciseError, mnist, posterior
from flowlib.book.exercises.posterior import check_diag_gaussian_kl, check_typical_radius


def kl(a, t, b, s):
    return (torch.log(s / t) + (t**2 + (a - b) ** 2) / (2 * s**2) - 0.5).sum(-1)


def test_typical_radius_accepts_a_function_of_the_mass(capsys):
    check_typical_radius(lambda p: math.sqrt(-2 * math.log(1 - p)))
    assert "Correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="ONE standard normal"):
        check_typical_radius(lambda p: 2.5758)
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        check_typical_radius(lambda p: 1 / 0)


def test_diag_gaussian_kl_check_names_the_typical_mistakes(capsys):
    check_diag_gaussian_kl(kl)
    assert "Correct" in capsys.readouterr().out
    for wrong, message in [
        (lambda a, t, b, s: kl(b, s, a, t), "KL\\(p \\|\\| q\\)"),
        (lambda a, t, b, s: torch.log(s / t) + (t**2 + (a - b) ** 2) / (2 * s**2) - 0.5, "one value per"),
        (lambda a, t, b, s: kl(a, t, b, s) + 0.5 * a.shape[-1], "-1/2"),
        (lambda a, t, b, s: kl(a, t, b, s) + torch.log(s / t).sum(-1), "variances"),
        (lambda a, t, b, s: kl(a, t, b, s).sum(), "batch"),
        (lambda a, t, b, s: kl(a, t, b, s) + 0.3, "values are off"),
        (lambda a, t, b, s: 1 / 0, "raised ZeroDivisionError"),
    ]:
        with pytest.raises(ExerciseError, match=message):
            check_diag_gaussian_kl(wrong)


@pytest.mark.parametrize("check", [mnist.check_inference_gap, mnist.check_importance_estimate,
                                   mnist.check_cost_ranking, posterior.check_grid_posterior,
                                   posterior.check_typical_radius, posterior.check_diag_gaussian_kl])
def test_the_unwritten_answer_fails_with_its_own_error(check):
    def stub(*args):
        raise NotImplementedError("Exercise: replace this line with your solution")

    with pytest.raises(NotImplementedError, match="replace this line"):
        check(stub)
