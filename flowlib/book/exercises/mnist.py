"""Checks for the exercises of the chapter "VAEs with flows on MNIST"."""

from __future__ import annotations

import math

import torch

from ._answers import call_answer
from .feedback import ExerciseError, check_close, passed

__all__ = ["check_importance_estimate", "check_gap", "check_inference_gap", "check_cost_ranking"]


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


def _number(what: str, value) -> float:
    """``value`` as a float (a Python or NumPy number, or a one-element tensor)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, str)) or not hasattr(value, "__float__"):
        raise ExerciseError(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


def _entry(row: str, nll: float, neg_elbo_same: float, neg_elbo_full: float) -> dict:
    """A row of the table as ``flowlib.experiments.tables.summarize`` gives it (the keys the exercises
    use)."""
    return {"row": row, "label": row, "test_nll": nll, "test_neg_elbo_same_images": neg_elbo_same,
            "test_neg_elbo": neg_elbo_full, "test_kl": 20.0, "seeds": [0]}


def check_inference_gap(inference_gap) -> None:
    """Check ``inference_gap(entry)``: the -ELBO minus the NLL of one row of the table, both on the
    same test images (``test_neg_elbo_same_images - test_nll``), a number of nats."""
    what = "inference_gap"
    cases = [_entry("a", 91.2, 96.7, 98.4), _entry("b", 104.05, 104.8, 101.3),
             _entry("noisy", 88.9, 88.7, 90.1)]  # the last: a negative estimate of the gap (the answers
    # that fail only there take abs() or clip at 0; a flipped sign fails on the first rows already)
    for entry in cases:
        got = _number(what, call_answer(what, inference_gap, dict(entry)))
        right = entry["test_neg_elbo_same_images"] - entry["test_nll"]
        if abs(got - right) <= 1e-9:
            continue
        if abs(got - (entry["test_neg_elbo"] - entry["test_nll"])) <= 1e-9:
            raise ExerciseError(f"{what}: you used test_neg_elbo, the -ELBO on the whole test set; the NLL "
                                "is estimated on a subset of it, so take test_neg_elbo_same_images")
        if right < 0 and (abs(got - abs(right)) <= 1e-9 or abs(got) <= 1e-12):
            raise ExerciseError(f"{what}: for the row {entry['row']!r} the estimate of the gap is negative "
                                f"({right:.2f} nats): return it as it is, do not take abs() or clip it at 0")
        if abs(got + right) <= 1e-9:
            raise ExerciseError(f"{what}: the sign is flipped: the gap is -ELBO minus NLL (the ELBO is the "
                                "looser bound, so -ELBO is the larger number in expectation)")
        raise ExerciseError(f"{what}: for the row {entry['row']!r} you returned {got:.6g}, expected "
                            f"{right:.6g}\nHint: entry['test_neg_elbo_same_images'] - entry['test_nll']")
    passed("the inference gap of a row")


def _ranking(summary, cost):
    """The reference ranking of ``check_cost_ranking``."""
    base = next(e for e in summary if e["row"] == "none")["test_nll"]
    out = []
    for e in summary:
        if e["row"] != "none":
            extra = cost["rows"][e["row"]]["ratio"] - 1.0
            gain = base - e["test_nll"]
            out.append((e["row"], gain, extra, gain / max(extra, 1e-3)))
    return sorted(out, key=lambda t: -t[3])


def _as_ranking(what: str, got) -> list[tuple]:
    """``got`` as a list of ``(row, gain, extra, gain_per_extra)`` with float numbers."""
    shape = f"{what}: expected a list of (row, gain, extra, gain per extra) tuples"
    if not isinstance(got, (list, tuple)):
        raise ExerciseError(f"{shape}, got {type(got).__name__}")
    out = []
    for t in got:
        if not isinstance(t, (list, tuple)) or len(t) != 4:
            raise ExerciseError(f"{shape}, four items each; one item is {t!r}")
        out.append((str(t[0]), *(_number(what, v) for v in t[1:])))
    return out


def check_cost_ranking(rank_by_cost) -> None:
    """Check ``rank_by_cost(summary, cost)``: a list of ``(row, gain, extra, gain_per_extra)``, one per
    flow row of ``summary`` (every row but ``"none"``), with ``gain`` the NLL gained over the no-flow row,
    ``extra = cost["rows"][row]["ratio"] - 1`` and ``gain_per_extra = gain / max(extra, 0.001)``,
    sorted by ``gain_per_extra``, largest first."""
    what = "rank_by_cost"
    summary = [_entry("none", 90.0, 95.0, 96.0), _entry("cheap", 89.5, 94.0, 95.0),
               _entry("costly", 87.0, 93.0, 94.5), _entry("worse", 90.6, 95.5, 96.2),
               _entry("slow", 89.0, 94.1, 95.3)]
    ratios = {"none": 1.0, "cheap": 1.25, "costly": 9.0, "worse": 1.5, "slow": 3.0, "not-run": 2.0}
    cost = {"rows": {name: {"ratio": r} for name, r in ratios.items()}}
    got = call_answer(what, rank_by_cost, [dict(e) for e in summary], {"rows": dict(cost["rows"])})
    ranking = _as_ranking(what, got)
    right = _ranking(summary, cost)
    rows = [t[0] for t in ranking]
    if "none" in rows:
        raise ExerciseError(f"{what}: the no-flow row is the baseline, not a flow: leave it out")
    if sorted(rows) != sorted(t[0] for t in right):
        raise ExerciseError(f"{what}: expected one tuple for each flow row of summary "
                            f"{sorted(t[0] for t in right)}, got {rows}")
    by_row = {t[0]: t for t in ranking}
    for name, gain, extra, per in right:
        got_gain, got_extra, got_per = by_row[name][1:]
        if abs(got_gain - gain) > 1e-9:
            flipped = abs(got_gain + gain) <= 1e-9
            raise ExerciseError(f"{what}: the gain of {name!r} is {got_gain:.6g}, expected {gain:.6g}" + (
                ": the sign is flipped; the gain is the no-flow NLL minus the row's NLL (positive when the "
                "flow is better)" if flipped else ""))
        if abs(got_extra - extra) > 1e-9:
            ratio = abs(got_extra - (extra + 1)) <= 1e-9
            why = ": it is the cost ratio minus 1 (the no-flow VAE costs 1), not the ratio" if ratio else ""
            raise ExerciseError(f"{what}: the extra time of {name!r} is {got_extra:.6g}, "
                                f"expected {extra:.6g}{why}")
        if abs(got_per - per) > 1e-9:
            raise ExerciseError(f"{what}: the gain per extra time of {name!r} is {got_per:.6g}, expected "
                                f"{per:.6g}\nHint: gain / max(extra, 0.001)")
    if rows != [t[0] for t in right]:
        by_gain = [t[0] for t in sorted(right, key=lambda t: -t[1])]
        hint = ("you sorted by the gain, not by the gain per extra time" if rows == by_gain
                else "sort by the gain per extra time, largest first")
        raise ExerciseError(f"{what}: the order is {rows}, expected {[t[0] for t in right]}: {hint}")
    passed("the ranking of the flows by NLL gained per extra training time")
