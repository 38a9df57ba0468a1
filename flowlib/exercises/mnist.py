"""Checks for the exercises of the chapter "VAEs with flows on MNIST"."""

from __future__ import annotations

import math

import torch

from .feedback import ExerciseError, check_close, passed

__all__ = ["check_importance_estimate", "check_gap"]


def _reference(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def check_importance_estimate(estimate) -> None:
    """Check ``estimate(log_w)``: from log-weights ``log w_k = log p(x, z_k) - log q(z_k | x)``
    of shape ``(K, B)`` it must return ``log (1/K) sum_k w_k`` of shape ``(B,)`` (Burda et al.
    2016, eq. 8), stably for log-weights around -500 as they are for MNIST images."""
    if not callable(estimate):
        raise ExerciseError(f"expected a function log_w -> log p(x) estimate, got {type(estimate).__name__}")
    g = torch.Generator().manual_seed(0)
    small = torch.randn(7, 3, generator=g, dtype=torch.float64)
    got = estimate(small.clone())
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"your function should return a torch.Tensor, it returned {type(got).__name__}")
    if got.shape == (7,):
        raise ExerciseError("the result has shape (K,) = (7,): you averaged over the batch axis; "
                            "the samples z_k are on axis 0, so reduce over dim 0 and keep (B,)")
    got = got.detach().to(torch.float64)
    if got.shape == (3,) and torch.allclose(got, torch.logsumexp(small, 0), atol=1e-9):
        raise ExerciseError("you returned log sum_k w_k: the estimator averages, so subtract log K")
    if got.shape == (3,) and torch.allclose(got, small.mean(0), atol=1e-9):
        raise ExerciseError("you averaged the log-weights: that is the (K-sample) ELBO, a looser bound; "
                            "the importance-sampled estimate is the log of the average weight")
    check_close("log p(x) for small log-weights", got, _reference(small), atol=1e-9,
                hint="log (1/K) sum_k exp(log_w_k), reduced over axis 0")
    large = small * 5 - 500.0
    got = estimate(large.clone()).detach().to(torch.float64)
    if not torch.isfinite(got).all():
        raise ExerciseError(
            "log-weights near -500 give -inf or nan: exp(-500) underflows in float32 and is tiny in "
            "float64. Subtract the maximum before exponentiating (the log-sum-exp trick), or use "
            "torch.logsumexp")
    check_close("log p(x) for log-weights near -500", got, _reference(large), atol=1e-8,
                hint="use torch.logsumexp(log_w, 0) - log K")
    passed("the importance-sampled estimate of log p(x)")


def check_gap(neg_elbo: float, nll: float, gap) -> None:
    """Check the reader's ELBO gap: ``-ELBO - NLL``, in nats, non-negative up to noise."""
    if not isinstance(gap, (int, float)) or isinstance(gap, bool):
        raise ExerciseError(f"expected the gap as a number of nats, got {type(gap).__name__}")
    if math.isclose(gap, nll - neg_elbo, abs_tol=1e-9) and gap < 0:
        raise ExerciseError("your gap is negative: the ELBO is a lower bound on log p(x), so in expectation "
                            "-ELBO >= NLL; subtract the NLL from the -ELBO")
    check_close("the ELBO gap (nats)", float(gap), neg_elbo - nll, atol=1e-6)
