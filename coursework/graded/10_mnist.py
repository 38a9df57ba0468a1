"""Graded tests of chapter 10, "VAEs with flows on MNIST" (not in the student edition).

Every input is generated here (seeded), never read from the committed results: the chapter's table will
change when longer runs replace it, and the grades must not. Other inputs than the public checks of
``flowlib.book.exercises.mnist`` (other numbers, K = B, K = 1, log-weights near -2000, float32 with
K = 5000, a summary whose baseline is not its first row, cost rows that were never run, a flow no slower
than the baseline), with reference answers computed by this file's own code. Partial credit part by
part; the feedback names the typical mistake a wrong answer matches.

The Fashion-MNIST row (mnist-ex-fashion) is a project, graded by hand: it trains a model (0.15 to 0.30
hours of CPU per seed for the committed rows; the instructor guide gives the costs).
"""

from __future__ import annotations

import math

import torch

from flowlib.book.coursework.harness import Exercise, Grade, load_beside

_shared = load_beside(__file__, "_part3.py")
F64, call, number, numbers, part = _shared.F64, _shared.call, _shared.number, _shared.numbers, _shared.part
_rng = _shared.rng


# ------------------------------------------------------------------ mnist-ex-gap
def _entries(seed, n, negative=False):
    """Rows of a table as flowlib.experiments.tables.summarize gives them: the -ELBO on the whole test set
    differs from the -ELBO on the images of the NLL estimate, and the *_std keys are there too."""
    g = _rng(seed)
    out = []
    for i in range(n):
        nll = 80 + 170 * torch.rand((), generator=g, dtype=F64).item()
        gap = 0.5 + 11.5 * torch.rand((), generator=g, dtype=F64).item()
        if negative:
            gap = -0.05 - 0.3 * torch.rand((), generator=g, dtype=F64).item()
        full = nll + gap + 1.5 + 3 * torch.rand((), generator=g, dtype=F64).item()
        out.append({"row": f"row-{i}", "label": f"row {i}", "seeds": [0, 1, 2], "test_nll": nll,
                    "test_nll_std": 0.2 + 0.1 * i, "test_neg_elbo": full, "test_neg_elbo_std": 0.15,
                    "test_neg_elbo_same_images": nll + gap, "test_neg_elbo_same_images_std": 0.3 + 0.05 * i,
                    "test_kl": 25.0 + i, "test_reconstruction": -(nll + gap - 25.0 - i)})
    return out


def _gap_case(grade, points, what, inference_gap, entries, extra_mistakes=None):
    same, full, nll, same_std, nll_std = (torch.tensor([e[k] for e in entries], dtype=F64) for k in (
        "test_neg_elbo_same_images", "test_neg_elbo", "test_nll", "test_neg_elbo_same_images_std",
        "test_nll_std"))
    mistakes = {
        **(extra_mistakes or {}),
        "the sign is flipped: the gap is -ELBO minus NLL (in expectation the -ELBO is the larger)":
            nll - same,
        "test_neg_elbo is the -ELBO on the whole test set; the NLL is estimated on a subset of it, so use "
        "test_neg_elbo_same_images": full - nll,
        "the *_std keys are the spread between seeds, not the values": same_std - nll_std,
        "that is the NLL divided by the -ELBO; the gap is their difference": nll / same,
    }
    got = numbers(inference_gap, [dict(e) for e in entries], "a number of nats")
    part(grade, points, what, got, same - nll, mistakes,
         "entry['test_neg_elbo_same_images'] - entry['test_nll']", atol=1e-9, rtol=0)
    return same - nll


def grade_inference_gap(inference_gap) -> Grade:
    g = Grade(2)
    _gap_case(g, 1.5, "six rows of a table", inference_gap, _entries(1001, 6))
    entries = _entries(1002, 3, negative=True)
    right = torch.tensor([e["test_neg_elbo_same_images"] - e["test_nll"] for e in entries], dtype=F64)
    _gap_case(g, 0.5, "rows whose estimated gap is negative (Monte Carlo noise)", inference_gap, entries, {
        "an estimate of the gap can be negative: return it as it is (your answer is its absolute value, "
        "or has the sign flipped)": right.abs(),
        "an estimate of the gap can be negative: do not clip it at 0": torch.zeros_like(right),
    })
    return g


# ------------------------------------------------------------------ mnist-ex-is
def _log_mean_exp(log_w):
    """log (1/K) sum_k exp(log_w[k]) over axis 0, in float64, with the maximum factored out."""
    log_w = log_w.to(F64)
    top = log_w.max(0).values
    return top + torch.log(torch.exp(log_w - top).mean(0))


def _is_mistakes(log_w):
    w = log_w.to(F64)
    right = _log_mean_exp(w)
    out = {
        "you return log sum_k w_k: the estimate averages the weights, so subtract log K":
            right + math.log(w.shape[0]),
        "you averaged the log-weights: that is the ELBO's estimate, not the log of the average weight":
            w.mean(0),
        "exp(log_w) underflows to 0 for log-weights this low: subtract the maximum before exponentiating "
        "(the log-sum-exp trick), or use torch.logsumexp": torch.full_like(right, -math.inf),
        "you reduced over the whole tensor: return one estimate per image, shape (B,)": torch.logsumexp(
            w.reshape(-1), 0) - math.log(w.numel()),
    }
    if w.shape[0] == w.shape[1]:
        out["the samples z_k are on axis 0 and the images on axis 1: you reduced over the wrong axis"] = \
            _log_mean_exp(w.T)
    return out


def grade_estimate(estimate) -> Grade:
    g = Grade(3)
    hint = "log (1/K) sum_k exp(log_w[k]) over axis 0, computed as torch.logsumexp(log_w, 0) - log K"
    cases = [
        (1.0, "K = 13 samples for B = 6 images", 3101, (13, 6), 0.0, 2.0, F64, 1e-9),
        (0.5, "K = B = 5 (a wrong axis gives the right shape)", 3102, (5, 5), -3.0, 1.5, F64, 1e-9),
        (0.5, "log-weights near -2000", 3103, (50, 4), -2000.0, 4.0, F64, 1e-9),
        (0.5, "float32 log-weights near -300, K = 5000", 3104, (5000, 3), -300.0, 3.0, torch.float32, 1e-3),
        (0.5, "K = 1 (the estimate is the one log-weight)", 3105, (1, 7), -150.0, 10.0, F64, 1e-9),
    ]
    for points, what, seed, shape, centre, spread, dtype, atol in cases:
        log_w = (centre + spread * torch.randn(*shape, generator=_rng(seed), dtype=F64)).to(dtype)
        part(g, points, what, call(estimate, log_w), _log_mean_exp(log_w), _is_mistakes(log_w), hint,
             atol=atol, rtol=1e-7)
    return g


# ------------------------------------------------------------------ mnist-ex-cost
def _rank(summary, cost, *, base=None, sign=1.0, minus=1.0, floor=1e-3, key=3, reverse=False,
          with_none=False):
    """This file's ranking; the keyword arguments give the typical mistakes' rankings."""
    if base is None:
        base = [e["test_nll"] for e in summary if e["row"] == "none"][0]
    out = []
    for e in summary:
        if e["row"] == "none" and not with_none:
            continue
        gain = sign * (base - e["test_nll"])
        extra = cost["rows"][e["row"]]["ratio"] - minus
        per = gain / extra if floor is None else gain / max(extra, floor)
        out.append((e["row"], gain, extra, per))
    return sorted(out, key=lambda t: t[key], reverse=not reverse)


def _compare_ranking(got, expected) -> str | None:
    """What is wrong with ``got`` as the ranking ``expected`` (rows in order, numbers to 1e-9)."""
    if not isinstance(got, (list, tuple)):
        return f"returned a {type(got).__name__}, not a list of (row, gain, extra, gain per extra) tuples"
    rows = []
    for t in got:
        if not isinstance(t, (list, tuple)) or len(t) != 4:
            return f"expected (row, gain, extra, gain per extra) tuples, four items each; got {t!r}"
        values = [number(v) for v in t[1:]]
        if None in values:
            return f"the numbers of {t[0]!r} are not all numbers: {t!r}"
        rows.append((str(t[0]), *values))
    names, expected_names = [r[0] for r in rows], [r[0] for r in expected]
    if sorted(names) != sorted(expected_names):
        return f"the rows are {sorted(names)}, expected {sorted(expected_names)}"
    for got_row, right in zip(sorted(rows), sorted(expected)):
        for i, what in ((1, "gain"), (2, "extra time"), (3, "gain per extra time")):
            if not abs(got_row[i] - right[i]) <= 1e-9 + 1e-9 * abs(right[i]):
                return f"the {what} of {right[0]!r} is {got_row[i]:.6g}, expected {right[i]:.6g}"
    if names != expected_names:
        return f"the order is {names}, expected {expected_names}"
    return None


def _table(seed, n, ratios=None):
    """A summary (n flow rows and the baseline) and a cost file for it, generated here."""
    g = _rng(seed)
    base = 85 + 10 * torch.rand((), generator=g, dtype=F64).item()
    summary = [{"row": "none", "label": "no flow", "test_nll": base, "test_nll_std": 0.2}]
    cost = {"command": "generated by the graded test", "rows": {"none": {"ratio": 1.0, "label": "no flow"}}}
    for i in range(n):
        name = f"flow-{i}"
        nll = base + 1.5 * torch.randn((), generator=g, dtype=F64).item()
        ratio = 1.1 + 9 * torch.rand((), generator=g, dtype=F64).item() if ratios is None else ratios[i]
        summary.append({"row": name, "label": f"flow {i}", "test_nll": nll, "test_nll_std": 0.3})
        cost["rows"][name] = {"ratio": ratio, "label": f"flow {i}", "seconds_per_epoch": 5.0 * ratio}
    return summary, cost


def _cost_mistakes(summary, cost):
    return {
        "you sorted by the gain, not by the gain per extra time": _rank(summary, cost, key=1),
        "the order is reversed: the best buy (largest gain per extra time) comes first":
            _rank(summary, cost, reverse=True),
        "the gain has the wrong sign: it is the no-flow NLL minus the row's NLL (positive when the flow "
        "helps)": _rank(summary, cost, sign=-1.0),
        "the extra time is the cost ratio minus 1 (the no-flow VAE's ratio is 1), not the ratio":
            _rank(summary, cost, minus=0.0),
        "the no-flow row is the baseline, not a flow: leave it out": _rank(summary, cost, with_none=True),
        "the baseline is the row named 'none', not the first row of summary":
            _rank(summary, cost, base=summary[0]["test_nll"]),
        "a flow no slower than the baseline has an extra time <= 0: count it as 0.001, as the exercise says":
            _rank(summary, cost, floor=None),
    }


def grade_rank_by_cost(rank_by_cost) -> Grade:
    g = Grade(3)
    hint = ("one tuple (row, NLL(none) - NLL(row), ratio - 1, gain / max(extra, 0.001)) per flow row of "
            "summary, sorted by the last item, largest first")

    def case(points, what, summary, cost):
        got = call(rank_by_cost, [dict(e) for e in summary], {k: v for k, v in cost.items()})
        if got[1] and "not-run" in got[1]:
            got = (None, f"{got[1]}: take the rows from summary; cost also lists rows that were never run")
        part(g, points, what, got, _rank(summary, cost), _cost_mistakes(summary, cost), hint,
             compare=_compare_ranking)

    case(1.5, "a table of seven flows", *_table(3301, 7))
    summary, cost = _table(3302, 5)
    summary = summary[3:] + summary[:3]  # the baseline in the middle
    for name in ("not-run-a", "not-run-b"):  # rows of the cost benchmark that the table does not have
        cost["rows"][name] = {"ratio": 2.0, "label": name}
    case(1.0, "the baseline not the first row, and cost rows that were never run", summary, cost)
    case(0.5, "a flow no slower than the baseline (ratio 0.97)", *_table(3303, 4, [1.6, 0.97, 3.2, 5.0]))
    return g


EXERCISES = [
    Exercise("mnist-ex-gap", 2, ("inference_gap",), grade_inference_gap),
    Exercise("mnist-ex-is", 3, ("estimate",), grade_estimate),
    Exercise("mnist-ex-cost", 3, ("rank_by_cost",), grade_rank_by_cost),
]
WRITTEN = {"mnist-ex-gap-sign": 3, "mnist-ex-cost-budget": 3, "mnist-ex-fashion": 10}
