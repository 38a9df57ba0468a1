"""Checks for the exercises of the IAF chapter (Kingma et al. 2016; Germain et al. 2015)."""

from __future__ import annotations

import torch

from ...flows.iaf import IAF
from ._answers import call_answer as call_reader
from ._mistakes import check_with_mistakes
from .feedback import ExerciseError

__all__ = ["check_made_mask", "check_iaf_inverse", "check_iaf_logdet"]


def check_made_mask(fn) -> None:
    """``fn(in_degrees, out_degrees, output)`` must return MADE's 0/1 mask of shape
    ``(len(out_degrees), len(in_degrees))``: ``M[k, j] = 1`` iff ``out_degrees[k] >= in_degrees[j]``
    for a hidden layer (``output=False``), iff ``out_degrees[k] > in_degrees[j]`` for the output
    layer (``output=True``) (Germain et al. 2015, eq. 12-13)."""
    g = torch.Generator().manual_seed(0)
    in_deg = torch.randperm(5, generator=g) + 1
    hidden_deg = torch.randint(0, 5, (7,), generator=g)
    out_deg = torch.randperm(5, generator=g) + 1
    for output, (a, b) in ((False, (in_deg, hidden_deg)), (True, (hidden_deg, out_deg))):
        what = f"made_mask (output={output})"
        got = call_reader(what, fn, a.clone(), b.clone(), output)
        if isinstance(got, torch.Tensor):
            got = got.to(torch.float64)
        strict = (b[:, None] > a[None, :]).double()
        loose = (b[:, None] >= a[None, :]).double()
        expected = strict if output else loose
        mistakes = {
            f"It matches the {'>=' if output else '>'} rule: hidden units use >= (a unit of degree k may "
            "see degree k), the output layer uses > (output j must not see z_j itself).":
                loose if output else strict,
            "It matches the transpose: rows index the units of the layer being computed (out), columns "
            "the units it reads (in), as in nn.Linear's weight.": expected.T,
            "It matches the comparison the wrong way round (in_degrees > out_degrees): a unit may read "
            "units of smaller degree.": (a[None, :] >= b[:, None]).double() if not output
            else (a[None, :] > b[:, None]).double(),
        }
        check_with_mistakes(what, got, expected, mistakes, hint="compare out_degrees[:, None] with "
                            "in_degrees[None, :].")


def _iaf_case(seed: int = 0, dim: int = 5):
    torch.manual_seed(seed)
    flow = IAF(dim, hidden=16, order=torch.randperm(dim) + 1).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    z = torch.randn(8, dim, dtype=torch.float64)
    with torch.no_grad():
        y = flow(z)[0]
    return flow, z, y


def check_iaf_inverse(fn) -> None:
    """``fn(flow, y)`` must return ``z`` with ``flow(z)[0] = y`` for a static :class:`~flowlib.flows.IAF`
    step (any variable order), using only ``flow.m_s(z)`` (which returns ``m`` and ``s``, the forget
    bias included) and ``sigma = sigmoid(s)``."""
    flow, z_true, y = _iaf_case()
    got = call_reader("iaf_inverse", fn, flow, y.clone())
    if not isinstance(got, torch.Tensor) or got.shape != y.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ExerciseError(f"iaf_inverse: expected a tensor of shape {tuple(y.shape)}, got {shape}")
    with torch.no_grad():
        m, s = flow.m_s(y)
        one_pass = m + (y - m) / torch.sigmoid(s)
        fwd = flow(y)[0]
    mistakes = {
        "It matches ONE parallel pass z = m(y) + (y - m(y)) / sigma(y): m and s must be evaluated at z, "
        "which is unknown. Iterate: after pass t the variables of the first t degrees are exact, so "
        "D passes give z.": one_pass,
        "It matches the forward map applied to y.": fwd,
        "It returns y unchanged.": y,
    }
    check_with_mistakes("iaf_inverse", got, z_true, mistakes, atol=1e-8, rtol=1e-6,
                        hint="z <- m(z) + (y - m(z)) / sigmoid(s(z)), repeated dim times from z = y.")


def check_iaf_logdet(fn) -> None:
    """``fn(s)`` must return ``log|det dz'/dz|`` of shape ``(B,)`` for one IAF step whose gate
    pre-activations (forget bias included) are ``s`` of shape ``(B, D)``: ``sum_i log sigmoid(s_i)``."""
    g = torch.Generator().manual_seed(1)
    s = 3 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    got = call_reader("iaf_logdet", fn, s.clone())
    sigma = torch.sigmoid(s)
    expected = torch.nn.functional.logsigmoid(s).sum(-1)
    mistakes = {
        "It matches sum_i log(1 - sigma_i): the diagonal of the Jacobian of sigma z + (1 - sigma) m is "
        "sigma (m does not depend on z_i).": torch.log1p(-sigma).sum(-1),
        "It matches sum_i s_i: the scale is sigma = sigmoid(s), not exp(s).": s.sum(-1),
        "It matches prod_i sigma_i, the determinant: take logs (F.logsigmoid is stable).": sigma.prod(-1),
    }
    check_with_mistakes("iaf_logdet", got, expected, mistakes,
                        hint="torch.nn.functional.logsigmoid(s).sum(-1)")
