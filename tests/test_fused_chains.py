"""The fused planar, radial and Householder runs (one autograd node with a hand-written backward) against
autograd: ``gradcheck`` of the nodes themselves, and the gradients of a whole ``Sequential`` with
and without the node (its forward recorded op by op), static and amortized, with and without a
sample axis; the planar and radial nodes both with their compiled kernels and with their PyTorch
paths, and the two against each other."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import Householder, Planar, Radial, Sequential, Sylvester
from flowlib.flows import householder as householder_module
from flowlib.flows import planar as planar_module
from flowlib.flows import radial as radial_module
from flowlib.flows import sylvester as sylvester_module


def _inputs(static, sample_axis, size, K=3, B=4, D=3):
    g = torch.Generator().manual_seed(0)
    lead = (K,) if static else (B, K)
    z = torch.randn(*((2, B, D) if sample_axis else (B, D)), generator=g, dtype=torch.float64)
    return z.requires_grad_(), torch.randn(*lead, size(D), generator=g, dtype=torch.float64)


def _no_kernels(monkeypatch):
    for module in (planar_module, radial_module, householder_module):
        monkeypatch.setattr(module, "_kernel", lambda z, params: None)


@pytest.fixture(params=["kernel", "pytorch"])
def kernel_path(request, monkeypatch):
    """Each planar, radial and Householder test twice: with the compiled kernels (where this machine
    builds them: see tests/test_kernels.py) and with the PyTorch path."""
    if request.param == "pytorch":
        _no_kernels(monkeypatch)
    return request.param


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_planar_node_gradcheck(static, sample_axis, kernel_path):
    z, theta = _inputs(static, sample_axis, lambda D: 2 * D + 1)
    theta.requires_grad_()
    assert torch.autograd.gradcheck(lambda z, th: planar_module._PlanarChain.apply(z, th, 3), (z, theta))


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_radial_node_gradcheck(static, sample_axis, kernel_path):
    z, theta = _inputs(static, sample_axis, lambda D: D + 2)
    z0 = theta[..., :3].clone().requires_grad_()
    alpha, s = (0.2 + theta[..., 3:].abs()).unbind(-1)
    alpha, s = alpha.clone().requires_grad_(), s.clone().requires_grad_()
    assert torch.autograd.gradcheck(radial_module._RadialChain.apply, (z, z0, alpha, s))


@pytest.mark.parametrize("cls", [Planar, Radial])
@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
@pytest.mark.parametrize("K", [1, 4])
def test_fused_gradients_equal_autograd_of_the_same_forward(cls, amortized, sample_axis, K, monkeypatch,
                                                            kernel_path):
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
def test_householder_node_gradcheck(static, sample_axis, kernel_path):
    z, v = _inputs(static, sample_axis, lambda D: D)
    assert torch.autograd.gradcheck(householder_module._ReflectChain.apply, (z, v.requires_grad_()))


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
@pytest.mark.parametrize("K", [1, 4])
def test_fused_reflections_equal_reflect_many(amortized, sample_axis, K, kernel_path):
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


def _node_and_plain(name, static, sample_axis):
    """A fused node, the same forward pass in plain PyTorch operations, and inputs for both."""
    if name == "planar":
        z, theta = _inputs(static, sample_axis, lambda D: 2 * D + 1)
        return (lambda *a: planar_module._PlanarChain.apply(*a, 3),
                lambda *a: planar_module._planar_run(*a, 3, keep=False)[:2], (z, theta.requires_grad_()))
    if name == "radial":
        z, theta = _inputs(static, sample_axis, lambda D: D + 2)
        alpha, s = (0.2 + theta[..., 3:].abs()).unbind(-1)
        inputs = (z, theta[..., :3].clone().requires_grad_(), alpha.clone().requires_grad_(),
                  s.clone().requires_grad_())
        return (radial_module._RadialChain.apply, lambda *a: radial_module._radial_run(*a, keep=False)[:2],
                inputs)
    z, v = _inputs(static, sample_axis, lambda D: D)
    return (householder_module._ReflectChain.apply,
            lambda z, v: householder_module.reflect_many(z, v, shared=v.dim() == 2), (z, v.requires_grad_()))


@pytest.mark.parametrize("name", ["planar", "radial", "householder"])
@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_second_derivatives_through_a_fused_node_are_exact(name, static, sample_axis, kernel_path):
    """A hand-written backward pass is not differentiable; asked for one (``create_graph=True``), the node
    differentiates its plain forward pass instead: gradgradcheck, and the same second derivatives as the
    plain path's, also where the loss is linear in the node's outputs (no gradient flowing into the
    backward pass would otherwise let second derivatives through the saved values go missing)."""
    node, plain, inputs = _node_and_plain(name, static, sample_axis)
    assert torch.autograd.gradgradcheck(node, inputs)
    for f_loss in (lambda out: sum(o.sum() for o in out), lambda out: sum(o.sin().sum() for o in out)):
        hessians = []
        for f in (node, plain):
            out = f(*inputs)
            out = out if isinstance(out, tuple) else (out,)
            grads = torch.autograd.grad(f_loss(out), inputs, create_graph=True)
            hessians.append(torch.autograd.grad(sum((g * g).sum() for g in grads), inputs))
        for a, b in zip(*hessians):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
def test_householder_sylvester_applies_q_through_the_fused_node(amortized, sample_axis, kernel_path):
    """The Householder Sylvester flow's ``Q^T z`` and ``Q R h`` (its reflections in both orders) run
    as fused nodes; output and gradients equal those of the same flow with ``reflect_many``."""
    torch.manual_seed(0)
    c = 5 if amortized else None
    flow = Sylvester(4, context_dim=c, variant="householder", n_reflections=3).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(*((3, 7, 4) if sample_axis else (7, 4)), dtype=torch.float64, requires_grad=True)
    h = torch.randn(7, 5, dtype=torch.float64, requires_grad=True) if amortized else None
    inputs = [z] + ([h] if amortized else []) + list(flow.parameters())

    def loss(zK, logdet):
        return zK.sin().sum() + logdet.cos().sum()

    nodes = []
    original = householder_module._ReflectChain.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(householder_module._ReflectChain, "apply", lambda *a: nodes.append(1) or original(*a))
        fused_out = flow(z, h)
        fused = torch.autograd.grad(loss(*fused_out), inputs)
    # Q^T z and Q R h, each one node; on a sample axis of more than dim / 4 samples, Q is formed once
    # (the reflections applied to the basis) and multiplied
    assert len(nodes) == (1 if sample_axis else 2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sylvester_module, "reflect_run",
                   lambda v, vs: householder_module.reflect_many(v, vs, shared=vs.dim() == 2))
        plain_out = flow(z, h)
        plain = torch.autograd.grad(loss(*plain_out), inputs)
    for a, b in zip((*fused_out, *fused), (*plain_out, *plain)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def _outputs(flow, z, h, dtype):
    """``z_K``, the log-determinant and the gradients of a loss of both with respect to ``z``, the
    context and every parameter, with and without autograd recording."""
    inputs = [z] + ([h] if h is not None else []) + list(flow.parameters())
    zK, logdet = flow(z, h)
    logdet = logdet + zK[..., 0].cos()  # a volume-preserving flow's log-det is a constant 0
    weights = torch.linspace(0.3, 2.0, logdet.numel(), dtype=dtype).view(logdet.shape)
    grads = torch.autograd.grad(zK.sin().sum() + (logdet * weights).sum(), inputs)
    with torch.no_grad():
        evaluated = flow(z, h)
    return [zK, logdet, *grads, *evaluated]


def _needs_kernel(dtype):
    z, theta = torch.zeros(1, 1, dtype=dtype), torch.zeros(1, 3, dtype=dtype)
    if any(module._kernel(z, theta[:, :size]) is None
           for module, size in ((planar_module, 3), (radial_module, 1), (householder_module, 1))):
        pytest.skip("no compiled kernels on this machine (tests/test_kernels.py says why)")


@pytest.mark.parametrize("cls", [Planar, Radial, Householder])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("sample_axis", [False, True])
@pytest.mark.parametrize("K", [1, 6])
def test_kernel_equals_the_pytorch_path(cls, dtype, amortized, sample_axis, K, monkeypatch):
    """The compiled kernels compute what the PyTorch paths compute, forward, backward and under
    ``no_grad``; planar also where the constraint moves ``u`` a long way (a first layer with ``w^T u``
    far below -1), radial also for a sample at its first layer's centre (``r = 0``), Householder
    also for a sample orthogonal to its first ``v``."""
    _needs_kernel(dtype)
    torch.manual_seed(1)
    c = 5 if amortized else None
    flow = Sequential(*(cls(4, context_dim=c, init_std=0.7) for _ in range(K))).to(dtype)
    z = torch.randn(*((3, 7, 4) if sample_axis else (7, 4)), dtype=dtype)
    h = torch.randn(7, 5, dtype=dtype, requires_grad=True) if amortized else None
    with torch.no_grad():
        raw = flow.flows[0].params.theta if c is None else flow.flows[0].params.linear.bias
        if cls is Planar:
            raw[:4] += 3.0  # u
            raw[4:8] -= 3.0  # w: w^T u about -36
        elif cls is Radial and c is None:
            z[..., 0, :] = raw[:4]  # z = z0
        elif cls is Householder and c is None:
            z[..., 0, :] = torch.tensor([raw[1], -raw[0], 0.0, 0.0])  # v^T z = 0
    z.requires_grad_()
    kernel = _outputs(flow, z, h, dtype)
    _no_kernels(monkeypatch)
    pytorch = _outputs(flow, z, h, dtype)
    for a, b in zip(kernel, pytorch):  # float32: sums of many terms, in another order
        assert torch.isfinite(a).all()
        scale = b.abs().max().item()
        if dtype == torch.float64:
            torch.testing.assert_close(a, b, atol=1e-10 * (1 + scale), rtol=1e-10)
        else:
            torch.testing.assert_close(a, b, atol=2e-5 * (1 + scale), rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_planar_kernel_clamps_a_vanishing_w_like_the_pytorch_path(dtype, monkeypatch):
    """A layer whose ``||w||^2`` underflows below the smallest normal number: both paths clamp it
    to that number (``u_hat`` is then huge, and so is ``z_K``, alike in both)."""
    _needs_kernel(dtype)
    torch.manual_seed(2)
    flow = Sequential(*(Planar(4, init_std=0.7) for _ in range(3))).to(dtype)
    with torch.no_grad():
        flow.flows[1].params.theta[4:8] = 1e-30 if dtype == torch.float32 else 1e-170
    z = torch.randn(7, 4, dtype=dtype)
    kernel = flow(z)
    _no_kernels(monkeypatch)
    pytorch = flow(z)
    assert torch.isfinite(kernel[0]).all() and kernel[0].abs().max() > 1e5
    for a, b in zip(kernel, pytorch):
        torch.testing.assert_close(a, b, atol=0, rtol=1e-5 if dtype == torch.float32 else 1e-12)
