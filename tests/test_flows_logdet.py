"""The shared harness: every flow's log-determinant against a brute-force autograd
Jacobian, in float64, at perturbed parameters; inverses; per-sample independence."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import Planar
from flowlib.flows.testing import CASES, DIMS, INVERTIBLE, case
from flowlib.twod.jacobian import batch_jacobian, check_logdet

PARAMS = [(name, dim, amortized) for name in CASES for dim in DIMS for amortized in (False, True)]
IDS = [f"{n}-d{d}-{'amortized' if a else 'static'}" for n, d, a in PARAMS]


@pytest.mark.parametrize("name,dim,amortized", PARAMS, ids=IDS)
def test_logdet_matches_autograd_float64(name, dim, amortized):
    flow, z, context = case(name, dim, amortized)
    check_logdet(flow, z, context, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name,dim,amortized", PARAMS, ids=IDS)
def test_samples_do_not_interact(name, dim, amortized):
    flow, z, context = case(name, dim, amortized)
    _, cross = batch_jacobian(flow, z, context, return_cross=True)
    assert cross == 0.0, f"output of one sample depends on another (max |d f_b / d z_c| = {cross:.2e})"
    # and the log-determinant of a sample does not change when others do
    _, logdet = flow(z, context)
    z2 = z.clone()
    z2[1:] = z2[1:] + 1.0
    _, logdet2 = flow(z2, context)
    assert logdet2[0] == logdet[0]


@pytest.mark.parametrize("name,dim,amortized", PARAMS, ids=IDS)
def test_float32_close_to_float64(name, dim, amortized):
    flow, z, context = case(name, dim, amortized)
    out64, logdet64 = flow(z, context)
    flow32 = flow.float()
    out32, logdet32 = flow32(z.float(), None if context is None else context.float())
    assert out32.dtype == torch.float32 and logdet32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=1e-4, rtol=1e-4)
    assert torch.allclose(logdet32.double(), logdet64, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name,dim,amortized", PARAMS, ids=IDS)
def test_inverse(name, dim, amortized):
    flow, z, context = case(name, dim, amortized)
    y, logdet = flow(z, context)
    if name not in INVERTIBLE:
        with pytest.raises(NotImplementedError, match="inverse"):
            flow.inverse(y, context)
        return
    z_back, logdet_inv = flow.inverse(y, context)
    assert z_back.shape == z.shape and logdet_inv.shape == (z.shape[0],)
    torch.testing.assert_close(z_back, z, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", list(CASES))
def test_parameters_receive_finite_gradients(name):
    flow, z, context = case(name, 3, amortized=True, dtype=torch.float32)
    z.requires_grad_(True)
    if context is not None:
        context.requires_grad_(True)
    out, logdet = flow(z, context)
    (out.square().sum() + logdet.sum()).backward()
    params = list(flow.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params if p.requires_grad)
    if params:
        assert any(p.grad.abs().sum() > 0 for p in params)
    if name != "reverse":
        assert context.grad is not None and context.grad.abs().sum() > 0, (
            "the context does not reach the flow"
        )


class WrongPlanar(Planar):
    """Planar with a classic mistake: the determinant uses ``u`` instead of ``u_hat``."""

    def _forward(self, z, context):
        z_out, _ = super()._forward(z, context)
        theta = self.params(z.shape[0], context)
        u, w, b = theta[:, : self.dim], theta[:, self.dim : 2 * self.dim], theta[:, -1]
        h_prime = 1 - torch.tanh((w * z).sum(-1) + b) ** 2
        return z_out, torch.log((1 + h_prime * (w * u).sum(-1)).abs())


class OffByEpsilon(Planar):
    def _forward(self, z, context):
        z_out, logdet = super()._forward(z, context)
        return z_out, logdet + 1e-6


@pytest.mark.parametrize("broken", [WrongPlanar, OffByEpsilon])
def test_the_harness_catches_a_wrong_logdet(broken):
    torch.manual_seed(0)
    flow = broken(4).double()
    z = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p))
    with pytest.raises(AssertionError, match="off by"):
        check_logdet(flow, z, atol=1e-9, rtol=1e-9)
