"""IAF's gate in one compiled kernel (``kernels/iaf.c``, ``flowlib.flows.iaf._Gate``): sigma, log sigma,
z' and the log-determinant of eq. 14-15 and their gradients, against exact values in float64 and the
PyTorch path; used by the flow exactly where it applies (float32 on the CPU, outside torch.func)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from conftest import count_kernel_calls, no_kernel_loaded
from torch.utils.flop_counter import FlopCounterMode

from flowlib.flows import IAF, kernels
from flowlib.flows import iaf as iaf_module

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
pytestmark = needs_cc
EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def kernel_calls(monkeypatch, cache):
    no_kernel_loaded(monkeypatch, cache)
    return count_kernel_calls(monkeypatch)


def _gate(out, z, forget_bias=1.0):
    kernel = iaf_module._gate_kernel(out, z)
    assert kernel is not None
    return iaf_module._Gate.apply(out, z, forget_bias, kernel)


def _exact(out, z, forget_bias=1.0):
    """eq. 14-15 in float64 from the same float32 inputs."""
    out, z = out.double(), z.double()
    m, s = out.unflatten(-1, (2, z.shape[-1])).unbind(-2)
    a = s + forget_bias
    return m + torch.sigmoid(a) * (z - m), torch.nn.functional.logsigmoid(a), torch.sigmoid(a)


def test_sigmoid_and_log_sigmoid_on_every_scale(kernel_calls):
    """Over 200,000 values of s from 1e-6 to 100 in size and both signs (and the edges of float32's
    range), log sigma to two units in the last place of max(1, |log sigma|) and sigma to two of
    itself: the kernel keeps the logarithm where the rounded sigma would lose it (s < -87)."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.randn(40_000, generator=g) * scale for scale in (1e-6, 1e-2, 1.0, 10.0, 100.0)])
    s = torch.cat([s, torch.tensor([0.0, -0.0, 88.0, -88.0, -104.0, -120.0, 1e4, -1e4])])
    s = s[: len(s) // 8 * 8].reshape(-1, 8)  # rows of D = 8
    z = torch.zeros_like(s)
    out = torch.cat([torch.zeros_like(s), s], -1)
    y, logdet = _gate(out, z, forget_bias=0.0)
    _, log_sigma, sigma = _exact(out, z, forget_bias=0.0)
    # y = m + sigma (z - m) with m = 0, z = 0 is 0; with z = 1 it is sigma itself
    assert torch.equal(y, torch.zeros_like(y))
    y1, _ = _gate(out, torch.ones_like(s), forget_bias=0.0)
    assert ((y1.double() - sigma).abs() <= 2 * EPS * sigma + torch.finfo(torch.float32).tiny).all()
    # log sigma, one column at a time: rows of one value in column 0, zeros (log sigma = -log 2) beyond
    one = torch.cat([torch.zeros(s.numel(), 8), s.reshape(-1, 1), torch.zeros(s.numel(), 7)], -1)
    _, logdet1 = _gate(one, torch.zeros(s.numel(), 8), forget_bias=0.0)
    exact = torch.nn.functional.logsigmoid(s.reshape(-1).double()) - 7 * math.log(2)
    assert ((logdet1.double() - exact).abs() <= 8 * EPS * exact.abs().clamp_min(1)).all()
    assert kernel_calls.count("forward") == 3


@pytest.mark.parametrize("shape", [(128, 40), (3, 5, 13), (7, 1)])
def test_forward_and_gradients_match_exact_values_and_the_pytorch_path(kernel_calls, shape, monkeypatch):
    """Values and all gradients (of out, so of m and s, and of z) against float64 and against the
    PyTorch path in float32, for D a multiple of the kernel's eight lanes, not one, and below it."""
    g = torch.Generator().manual_seed(1)
    D = shape[-1]
    out = (2 * torch.randn(*shape[:-1], 2 * D, generator=g)).requires_grad_()
    z = torch.randn(shape, generator=g).requires_grad_()
    gy, gl = torch.randn(shape, generator=g), torch.randn(shape[:-1], generator=g)

    def grads(fn, dtype):
        o, zz = out.detach().to(dtype).requires_grad_(), z.detach().to(dtype).requires_grad_()
        y, ld = fn(o, zz)
        torch.autograd.backward([y, ld], [gy.to(dtype), gl.to(dtype)])
        return y.detach(), ld.detach(), o.grad, zz.grad

    def pytorch(o, zz):
        m, s = o.unflatten(-1, (2, D)).unbind(-2)
        sigma, log_sigma = iaf_module.sigmoid_and_log(s + 1.0)
        return torch.lerp(m, zz, sigma), log_sigma.sum(-1)

    got = grads(_gate, torch.float32)
    assert kernel_calls == ["forward", "backward"]
    exact = grads(pytorch, torch.float64)
    path = grads(pytorch, torch.float32)
    for a, b, c in zip(got, exact, path, strict=True):
        scale = b.abs().max().clamp_min(1)
        assert (a.double() - b).abs().max() <= 16 * EPS * scale
        torch.testing.assert_close(a, c, rtol=8 * EPS, atol=8 * EPS * scale.item())


def test_differentiated_backward_runs_pytorch_and_matches(kernel_calls, monkeypatch):
    """With create_graph, the gate's backward is PyTorch operations (second derivatives, e.g. of a
    gradient penalty), equal to the PyTorch path's."""
    g = torch.Generator().manual_seed(2)
    out = torch.randn(16, 10, generator=g, requires_grad=True)
    z = torch.randn(16, 5, generator=g, requires_grad=True)

    def pytorch(o, zz):
        m, s = o.unflatten(-1, (2, 5)).unbind(-2)
        return torch.lerp(m, zz, torch.sigmoid(s + 1.0)), torch.nn.functional.logsigmoid(s + 1.0).sum(-1)

    def second(fn):
        y, ld = fn(out, z)
        (gz,) = torch.autograd.grad((y.square().sum() + ld.sum()), z, create_graph=True)
        return torch.autograd.grad(gz.square().sum(), (out, z))

    for a, b in zip(second(_gate), second(pytorch), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the differentiated backward ran PyTorch's operations; the second, plain one (through y = z'
    # inside the first gradient) the kernel
    assert kernel_calls == ["forward", "backward"]


def test_the_flow_uses_it_where_it_applies(kernel_calls, monkeypatch):
    """float32 on the CPU (here with a sample axis and a context): the kernel; float64, under the FLOP
    counter and with FLOWLIB_KERNELS=0: the PyTorch path, with the same numbers."""
    torch.manual_seed(0)
    flow = IAF(6, context_dim=3, hidden=16, activation="relu")  # ReLU: the only kernel is the gate's
    z, h = torch.randn(4, 2, 6), torch.randn(2, 3)
    y, ld = flow(z, h)
    assert kernel_calls == ["forward"]
    flow64 = IAF(6, context_dim=3, hidden=16, activation="relu").double()
    flow64.load_state_dict(flow.state_dict())
    y64, ld64 = flow64(z.double(), h.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld.double(), ld64, rtol=1e-5, atol=1e-5)
    assert kernel_calls == ["forward"]
    with FlopCounterMode(display=False):  # a dispatch mode that traces operations: PyTorch's path
        flow(z, h)
    assert kernel_calls == ["forward"]
    monkeypatch.setenv("FLOWLIB_KERNELS", "0")
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels.Kernel, "_bound", {})
    y0, ld0 = flow(z, h)
    assert kernel_calls == ["forward"]
    torch.testing.assert_close(y0, y, rtol=8 * EPS, atol=8 * EPS)
    torch.testing.assert_close(ld0, ld, rtol=8 * EPS, atol=8 * EPS * 6)
