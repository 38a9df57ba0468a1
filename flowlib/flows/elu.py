"""The exponential linear unit (Clevert, Unterthiner & Hochreiter 2016, eq. 15, alpha = 1),

    elu(x) = x            for x > 0,
             exp(x) - 1   for x <= 0,            elu'(x) = 1 for x > 0, elu(x) + 1 for x <= 0,

computed as ``max(x, exp(min(x, 0)) - 1)``: for ``x <= 0``, ``exp(x) - 1 >= x``, and for
``x > 0`` the second term is 0; and ``exp(min(x, 0))`` is also the derivative, kept for the
backward pass. PyTorch's own ``F.elu`` calls ``expm1``, which on some CPUs is
many times slower than ``exp`` (one thread, a 128 x 320 tensor, AVX-512 build: ``expm1`` 565 us,
``exp`` 36 us, ``F.elu`` 577 us), and IAF's MADE applies ELU to every hidden unit twice a step.
``exp(x) - 1`` is exact to the rounding of ``exp`` (absolute error below one unit in the last
place of 1, ``tests/test_elu.py``), where ``expm1`` is also accurate relative to tiny outputs: a
difference far below the rounding of the matrix products that the activations feed.

On the CPU, float32 runs the compiled kernel ``kernels/elu.c`` (both directions, one pass each): the
same function with its own exp, within one unit in the last place like PyTorch's (checked on every
float in [-104, 0], ``tests/test_elu.py``), because on other CPUs PyTorch's ``exp`` is itself slow
(one thread, 128 x 320, AVX2 build: ``exp`` 68 us, ``F.elu`` 133 us; the kernel 37 us with the
derivative). Float64, other devices, dispatch modes such as the FLOP counter and a differentiated
backward run the PyTorch path above.
"""

from __future__ import annotations

import torch

from . import kernels

__all__ = ["elu"]


def _kernel(x: torch.Tensor) -> kernels.Kernel | None:
    """``kernels/elu.c`` for ``x``, or ``None`` where the PyTorch path runs (module doc)."""
    return kernels.for_tensors("elu", x) if x.dtype == torch.float32 else None


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        kernel = _kernel(x)
        if kernel is None:
            e = torch.clamp(x, max=0).exp_()  # exp(x) where x <= 0, 1 elsewhere: also the derivative
            y = e - 1
            torch.maximum(x, y, out=y)
        else:
            x_c = x.contiguous()
            y, e = torch.empty_like(x_c), torch.empty_like(x_c)
            kernel.forward((x_c.numel(), 0, 0, 0), x_c, y, e)
        ctx.save_for_backward(x, e)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, e = ctx.saved_tensors
        if torch.is_grad_enabled():  # the backward itself is differentiated: e as a function of x
            return grad * torch.exp(torch.clamp(x, max=0))
        kernel = _kernel(grad)
        if kernel is None:
            return grad * e
        grad = grad.contiguous()
        grad_x = torch.empty_like(e)
        kernel.backward((e.numel(), 0, 0, 0), grad, e, grad_x)
        return grad_x


def elu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """ELU with alpha = 1 (module doc). ``inplace`` is accepted for ``F.elu``'s signature; the
    result is always a new tensor."""
    return _ELU.apply(x)
