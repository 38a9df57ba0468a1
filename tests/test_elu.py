"""flowlib's ELU (flowlib/flows/elu.py), computed from exp rather than expm1: the same function as
PyTorch's to the rounding of exp, derivatives included, and the one IAF's MADE uses."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import count_kernel_calls, no_kernel_loaded

from flowlib.flows import MADE
from flowlib.flows.elu import elu


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20_000, generator=g, dtype=dtype) * s for s in (1e-6, 1e-3, 1.0, 10.0, 100.0)])
    edges = torch.tensor([0.0, -0.0, -1e-30, 1e-30, -float("inf"), float("inf"), 88.0, -88.0], dtype=dtype)
    return torch.cat([x, edges])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_derivative_match_the_exact_elu(dtype):
    x = _inputs(dtype).requires_grad_()
    y = elu(x)
    eps = torch.finfo(dtype).eps
    # against PyTorch's ELU (expm1) in the same precision: within half a unit in the last place of 1
    reference = F.elu(x.detach())
    assert ((y.detach() - reference).abs() <= eps / 2).logical_or(y.detach() == reference).all()
    # the derivative, against the exact one computed in float64: 1 for x > 0, exp(x) for x <= 0
    (grad,) = torch.autograd.grad(y.sum(), x)
    x64 = x.detach().double()
    exact = torch.where(x64 > 0, torch.ones_like(x64), torch.exp(x64))
    # (to a relative eps, or below the smallest normal number, where exp(x) underflows)
    assert ((grad.double() - exact).abs() <= eps * exact.abs() + torch.finfo(dtype).tiny).all()
    assert torch.equal(elu(x.detach()) > 0, x.detach() > 0)  # the sign, exactly


def test_first_and_second_derivatives_by_finite_differences():
    x = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    assert torch.autograd.gradcheck(elu, (x,))
    assert torch.autograd.gradgradcheck(elu, (x,))


def test_the_input_is_left_alone():
    x = torch.randn(50)
    before = x.clone()
    elu(x, inplace=True)
    assert torch.equal(x, before)


def test_made_uses_it_by_default():
    made = MADE(5, hidden=16).double()
    z = torch.randn(3, 5, dtype=torch.float64)
    hidden = F.elu(made.hidden_layers[1](F.elu(made.hidden_layers[0](z))))
    reference = made.output_layer(hidden).unflatten(-1, (2, 5)).unbind(-2)
    for got, want in zip(made(z), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_float32_kernel_on_a_dense_grid_of_floats(monkeypatch, tmp_path):
    """``kernels/elu.c`` (float32 on the CPU) on every 61st float in [-104, 0] (18 million, by bit
    pattern; every float was checked once with a C program, session 16: exp within 0.986 units in the
    last place, the ELU within 0.354 eps of expm1): the derivative exp(x) within one unit in the last
    place of exp in float64, the value within half an eps of expm1 in float64; and float64 inputs run
    PyTorch's path."""
    no_kernel_loaded(monkeypatch, tmp_path)
    calls = count_kernel_calls(monkeypatch)
    bits = torch.arange(0x80000000 - 2**32, 0xC2D00000 - 2**32 + 1, 61, dtype=torch.int64)
    x = bits.to(torch.int32).view(torch.float32).requires_grad_()  # from -0 down to -104
    y = elu(x)
    (e,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert calls == ["forward", "backward"]
    x64 = x.detach().double()
    exact = torch.exp(x64)
    ulp = (torch.nextafter(exact.float(), torch.tensor(float("inf"))).double() - exact.float().double())
    ulp = ulp.clamp_min(torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps)
    assert ((e.double() - exact).abs() <= ulp).all()
    assert ((y.detach().double() - torch.expm1(x64)).abs() <= torch.finfo(torch.float32).eps / 2).all()
    elu(x64)
    assert calls == ["forward", "backward"]
