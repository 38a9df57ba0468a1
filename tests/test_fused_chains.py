"""The fused planar, radial and Householder runs (one autograd node with a hand-written backward) against
autograd: ``gradcheck`` of the nodes themselves, and the gradients of a whole ``Sequential`` with
and without the node (its forward recorded op by op), static and amortized, with and without a
sample axis."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import Householder, Planar, Radial, Sequential
from flowlib.flows import householder as householder_module
from flowlib.flows import planar as planar_module
from flowlib.flows import radial as radial_module


def _inputs(static, sample_axis, size, K=3, B=4, D=3):
    g = torch.Generator().manual_seed(0)
    lead = (K,) if static else (B, K)
    z = torch.randn(*((2, B, D) if sample_axis else (B, D)), generator=g, dtype=torch.float64)
    return z.requires_grad_(), torch.randn(*lead, size(D), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_planar_node_gradcheck(static, sample_axis):
    z, theta = _inputs(static, sample_axis, lambda D: 2 * D + 1)
    theta.requires_grad_()
    assert torch.autograd.gradcheck(lambda z, th: planar_module._PlanarChain.apply(z, th, 3), (z, theta))


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_radial_node_gradcheck(static, sample_axis):
    z, theta = _inputs(static, sample_axis, lambda D: D + 2)
    z0 = theta[..., :3].clone().requires_grad_()
    alpha, s = (0.2 + theta[..., 3:].abs()).unbind(-1)
    alpha, s = alpha.clone().requires_grad_(), s.clone().requires_grad_()
    assert torch.autograd.gradcheck(radial_module._RadialChain.apply, (z, z0, alpha, s))


@pytest.mark.parametrize("cls", [Planar, Radial])
@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
@pytest.mark.parametrize("K", [1, 4])
def test_fused_gradients_equal_autograd_of_the_same_forward(cls, amortized, sample_axis, K, monkeypatch):
    torch.manual_seed(0)
    c = 5 if amortized else None
    flow = Sequential(*(cls(4, context_dim=c, init_std=0.7) for _ in range(K))).double()
    z = torch.randn(*((3, 7, 4) if sample_axis else (7, 4)), dtype=torch.float64, requires_grad=True)
    h = torch.randn(7, 5, dtype=torch.float64, requires_grad=True) if amortized else None
    inputs = [z] + ([h] if amortized else []) + list(flow.parameters())

    def grads():
        zK, logdet = flow(z, h)
        weights = torch.linspace(0.3, 2.0, logdet.numel(), dtype=logdet.dtype).view(logdet.shape)
        loss = zK.sin().sum() + (logdet * weights).sum()
        return [zK, logdet, *torch.autograd.grad(loss, inputs)]

    fused = grads()
    if cls is Planar:
        monkeypatch.setattr(planar_module, "_no_functorch", lambda: False)  # the op-by-op path
    else:
        monkeypatch.setattr(radial_module._RadialChain, "apply", lambda *a: radial_module._radial_run(*a)[:2])
    plain = grads()
    for a, b in zip(fused, plain):  # the same sums in another order: float64 rounding apart
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_householder_node_gradcheck(static, sample_axis):
    z, v = _inputs(static, sample_axis, lambda D: D)
    assert torch.autograd.gradcheck(householder_module._ReflectChain.apply, (z, v.requires_grad_()))


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
@pytest.mark.parametrize("K", [1, 4])
def test_fused_reflections_equal_reflect_many(amortized, sample_axis, K):
    torch.manual_seed(0)
    c = 5 if amortized else None
    flow = Sequential(*(Householder(4, context_dim=c) for _ in range(K))).double()
    z = torch.randn(*((3, 7, 4) if sample_axis else (7, 4)), dtype=torch.float64, requires_grad=True)
    h = torch.randn(7, 5, dtype=torch.float64, requires_grad=True) if amortized else None
    inputs = [z] + ([h] if amortized else []) + list(flow.parameters())
    v = torch.stack([f.params.raw(h) for f in flow.flows], dim=-2)
    plain_y = householder_module.reflect_many(z, v, shared=not amortized)
    torch.testing.assert_close(flow(z, h)[0], plain_y)
    fused = torch.autograd.grad(flow(z, h)[0].sin().sum(), inputs)
    plain = torch.autograd.grad(plain_y.sin().sum(), inputs)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
