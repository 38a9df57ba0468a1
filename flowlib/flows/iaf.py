"""Inverse autoregressive flow (Kingma et al. 2016, Sec. 4, eq. 11-14 and Algorithm 1).

    [m, s] = MADE(z; h),   sigma = sigmoid(s + forget_bias)
    z' = sigma * z + (1 - sigma) * m                                  (eq. 14)
    log|det dz'/dz| = sum_i log sigma_i                               (eq. 15)

``m_i`` and ``s_i`` depend only on the variables before ``i`` in the order, so
the Jacobian is triangular with ``sigma`` on its diagonal. ``sigma`` lies in
(0, 1): the scales are positive by construction. A positive ``forget_bias``
(the paper suggests +1 or +2) starts the layer near ``z' = z``, which keeps
early training stable.

The forward direction is one pass of MADE (parallel); the inverse is
sequential: ``D`` passes, the ``t``-th one fixing the variable of degree ``t``.

``sigma`` and ``log sigma`` come from one node (:func:`sigmoid_and_log`): ``log sigma`` is the log of
the ``sigma`` the step already computed, where PyTorch's ``logsigmoid`` calls ``log1p``, on some
CPUs several times slower (one thread, 128 x 40, forward and backward, AVX-512 build: 108 us
against 47 us for ``log(sigmoid(s))`` alone).

On the CPU in float32 the whole gate, from the MADE's joint output ``[m, s]`` to ``z'`` and the
log-determinant, is one call of the compiled kernel ``kernels/iaf.c`` each way (:class:`_Gate`): the
PyTorch path is some fifteen operations with their autograd nodes on a small batch, which cost more in
dispatch than in arithmetic (one thread, AVX2 CPU, 128 x 40, forward and backward: 428 us, and 364 us
for normflows' gate; ``bench/peers.py`` times the stacks). Float64, other devices, dispatch modes such
as the FLOP counter and a differentiated backward run PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels
from .base import Flow
from .made import MADE

__all__ = ["IAF", "sigmoid_and_log"]


class _SigmoidAndLog(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s):
        sigma = torch.sigmoid(s)
        # log sigma(s) = s - log(1 + e^s) = s to rounding where sigma is below the smallest normal number
        log_sigma = torch.where(sigma >= torch.finfo(s.dtype).tiny, torch.log(sigma), s)
        ctx.save_for_backward(s, sigma)
        return sigma, log_sigma

    @staticmethod
    def backward(ctx, g_sigma, g_log):
        s, sigma = ctx.saved_tensors
        if torch.is_grad_enabled():  # the backward itself is differentiated: sigma as a function of s
            sigma = torch.sigmoid(s)
        # d sigma / ds = sigma (1 - sigma),  d log sigma / ds = 1 - sigma
        g_sigma = torch.zeros_like(s) if g_sigma is None else g_sigma
        g_log = torch.zeros_like(s) if g_log is None else g_log
        return (1 - sigma) * (g_sigma * sigma + g_log)


def sigmoid_and_log(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigmoid(s), log sigmoid(s))`` in one autograd node (module doc): ``log sigma`` within two
    units in the last place of 1 (relative beyond 1) of ``F.logsigmoid``
    (``tests/test_autoregressive.py``)."""
    return _SigmoidAndLog.apply(s)


def _gate_kernel(out: torch.Tensor, z: torch.Tensor) -> kernels.Kernel | None:
    """``kernels/iaf.c`` for the MADE's joint output ``out`` (``(..., 2D)``) and ``z`` (``(..., D)``) with
    the same leading dimensions, float32 on the CPU (:func:`kernels.for_tensors`); else ``None``, where
    the PyTorch path runs."""
    if out.dtype != torch.float32 or out.shape[:-1] != z.shape[:-1]:
        return None
    return kernels.for_tensors("iaf", out, z)


class _Gate(torch.autograd.Function):
    """``(z', log|det|)`` of eq. 14-15 from the MADE's joint output ``out`` (each row ``[m, s]``, ``s``
    without the forget bias) and ``z``: one call of ``kernels/iaf.c`` each way, where the PyTorch path
    is some fifteen operations and their autograd nodes (the kernel's comment). The same numbers to
    float32 rounding (``tests/test_iaf_gate.py``)."""

    @staticmethod
    def forward(ctx, out, z, forget_bias, kernel):
        out, z = out.contiguous(), z.contiguous()
        y, sigma = torch.empty_like(z), torch.empty_like(z)
        logdet = z.new_empty(z.shape[:-1])
        bias = torch.tensor([forget_bias], dtype=z.dtype)
        kernel.forward((logdet.numel(), z.shape[-1], 0, 0), out, z, bias, y, logdet, sigma)
        ctx.save_for_backward(out, z, sigma)
        ctx.kernel, ctx.forget_bias = kernel, forget_bias
        return y, logdet

    @staticmethod
    def backward(ctx, g, g_logdet):
        out, z, sigma = ctx.saved_tensors
        g = torch.zeros_like(z) if g is None else g
        g_logdet = z.new_zeros(z.shape[:-1]) if g_logdet is None else g_logdet
        if torch.is_grad_enabled():  # the backward itself is differentiated: the same in PyTorch
            m, s = out.unflatten(-1, (2, z.shape[-1])).unbind(-2)
            sigma = torch.sigmoid(s + ctx.forget_bias)
            o = 1 - sigma
            g_s = o * (g * (z - m) * sigma + g_logdet.unsqueeze(-1))
            return torch.cat([g * o, g_s], -1), g * sigma, None, None
        g_out, g_z = torch.empty_like(out), torch.empty_like(z)
        ctx.kernel.backward((g_logdet.numel(), z.shape[-1], 0, 0), out, z, sigma, g.contiguous(),
                            g_logdet.contiguous(), g_out, g_z)
        return g_out, g_z, None, None


class IAF(Flow):
    """One gated IAF step; static, or with the MADE also fed a context ``h``. ``activation`` is
    the MADE's hidden activation: ``"elu"`` (default, as Kingma et al. 2016) or ``"relu"``."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, hidden: int = 64, n_layers: int = 2,
                 forget_bias: float = 1.0, order: torch.Tensor | None = None, activation: str = "elu"):
        super().__init__(dim, context_dim)
        self.made = MADE(dim, context_dim, hidden, n_layers, n_outputs=2, order=order, activation=activation)
        self.forget_bias = float(forget_bias)

    def m_s(self, z, context=None):
        """The MADE outputs ``m`` and ``s`` (``s`` already includes the forget bias)."""
        self._check_inputs(z, context, "z")
        return self._m_s(z, context)

    def _m_s(self, z, context):
        m, s = self.made._outputs(z, context)
        return m, s + self.forget_bias

    def _forward(self, z, context):
        out = self.made._joint_output(z, context)
        kernel = _gate_kernel(out, z)
        if kernel is not None:
            return _Gate.apply(out, z, self.forget_bias, kernel)
        m, s = out.unflatten(-1, (2, self.dim)).unbind(-2)
        sigma, log_sigma = sigmoid_and_log(s + self.forget_bias)
        return torch.lerp(m, z, sigma), log_sigma.sum(-1)  # sigma z + (1 - sigma) m

    def _inverse(self, y, context):
        # After pass t the variables of degree <= t are exact. The last pass reads only
        # degrees <= D - 1, so its m and s are those at the solution.
        z = y
        for _ in range(self.dim):
            m, s = self._m_s(z, context)
            z = m + (y - m) / torch.sigmoid(s)
        return z, -F.logsigmoid(s).sum(-1)
