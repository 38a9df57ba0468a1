"""Constraints live in the parameterization: any raw values give a valid flow, and
float32 stays finite at extreme values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlib.flows import Planar, Radial, Sylvester
from flowlib.flows.sylvester import orthogonalize
from flowlib.flows.testing import CASES, case
from flowlib.twod.jacobian import autograd_logdet

raw = st.floats(min_value=-60, max_value=60, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(u=st.lists(raw, min_size=3, max_size=3), w=st.lists(raw, min_size=3, max_size=3), b=raw)
def test_planar_w_dot_u_hat_exceeds_minus_one(u, w, b):
    flow = Planar(3).double()
    with torch.no_grad():
        flow.params.theta.copy_(torch.tensor(u + w + [b], dtype=torch.float64))
    u_hat, w_, _, _ = flow.u_w_b(1)
    if (w_ * w_).sum() > 1e-6:
        assert (w_ * u_hat).sum().item() > -1.0 - 1e-9


def test_planar_is_finite_in_float32_at_w_dot_u_of_90_and_minus_90():
    z = torch.randn(64, 2) * 3
    for wu in (90.0, -90.0):
        flow = Planar(2)
        with torch.no_grad():
            flow.params.theta.copy_(torch.tensor([wu / 3.0, 0.5, 3.0, 0.0, 0.1]))
        out, logdet = flow(z)
        assert torch.isfinite(out).all() and torch.isfinite(logdet).all(), wu
        out.sum().add(logdet.sum()).backward()
        assert torch.isfinite(flow.params.theta.grad).all()


@settings(max_examples=60, deadline=None)
@given(a=raw, b=raw)
def test_radial_beta_at_least_minus_alpha(a, b):
    flow = Radial(2).double()
    with torch.no_grad():
        flow.params.theta[2:] = torch.tensor([a, b], dtype=torch.float64)
    _, alpha, s = flow.z0_alpha_s(1)
    beta = s - alpha
    assert alpha.item() > 0 and beta.item() >= -alpha.item()


def test_sylvester_diagonals_and_orthogonal_q():
    torch.manual_seed(0)
    flow = Sylvester(6, context_dim=4, variant="orthogonal", M=4, init_std=5.0).double()
    context = torch.randn(8, 4, dtype=torch.float64)
    R, Rt, _, _, _ = flow.R_Rt_b(8, context)
    prod = torch.diagonal(R, dim1=-2, dim2=-1) * torch.diagonal(Rt, dim1=-2, dim2=-1)
    assert (prod > -1).all()
    assert torch.equal(R, R.triu()) and torch.equal(Rt, Rt.triu())
    Q = flow.Q(context)
    torch.testing.assert_close(Q.transpose(-1, -2) @ Q, torch.eye(4, dtype=torch.float64).expand(8, 4, 4))
    for variant in ("householder", "triangular"):
        Q = Sylvester(5, context_dim=4, variant=variant, permute=True).double().Q(context)
        torch.testing.assert_close(Q.transpose(-1, -2) @ Q, torch.eye(5, dtype=torch.float64).expand(8, 5, 5))


def test_orthogonalize_converges_on_ill_conditioned_input_and_refuses_singular():
    torch.manual_seed(0)
    A = torch.randn(10, 10, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(A)
    A = U @ torch.diag(torch.logspace(0, -4, 10, dtype=torch.float64)) @ Vh  # condition number 1e4
    Q = orthogonalize(A)
    torch.testing.assert_close(Q.T @ Q, torch.eye(10, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(RuntimeError, match="rank deficient"):
        orthogonalize(torch.ones(4, 3, dtype=torch.float64))


def test_sylvester_logdet_exact_where_a_fixed_iteration_count_would_not_be():
    """An ill-conditioned raw Q needs many Bjorck steps; the log-det must still be exact."""
    torch.manual_seed(0)
    flow = Sylvester(5, variant="orthogonal").double()
    with torch.no_grad():
        A = torch.randn(5, 5, dtype=torch.float64)
        A[:, 0] = A[:, 1] + 1e-3 * torch.randn(5, dtype=torch.float64)
        flow.q_params.theta.copy_(A.reshape(-1))
        flow.params.theta.add_(torch.randn_like(flow.params.theta))
    z = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(flow(z)[1], autograd_logdet(flow, z), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("amortized,size", [(False, 30.0), (True, 10.0)])
@pytest.mark.parametrize("name", [n for n in CASES if n != "pcpmap" and n != "mixed_stack"])
def test_float32_finite_at_extreme_parameters(name, amortized, size):
    """Raw parameters drawn with standard deviation `size`: output, log-det and gradients stay finite.

    (Amortized flows get a smaller size: their parameters are sums over the context, and
    ``exp(s)`` of a scaling layer overflows float32 for ``s > 88`` by nature, not by formula.)
    """
    flow, z, context = case(name, 4, amortized=amortized, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(size * torch.randn(p.shape, generator=g))
    z.requires_grad_(True)
    out, logdet = flow(z, context)
    assert torch.isfinite(out).all() and torch.isfinite(logdet).all()
    (out.sum() + logdet.sum()).backward()
    assert torch.isfinite(z.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
