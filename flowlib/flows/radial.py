"""Radial flow (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.2).

    f(z) = z + beta h(alpha, r) (z - z0),   r = ||z - z0||,   h = 1 / (alpha + r)   (eq. 14)
    |det df/dz| = [1 + beta h]^(D-1) [1 + beta h + beta h'(alpha, r) r]

Invertibility needs ``beta >= -alpha`` (Appendix A.2). Both are built into the
parameterization: ``alpha = softplus(alpha')`` and ``beta = -alpha + softplus(beta')``.
With ``s = softplus(beta')`` the two factors simplify to ratios of positive terms,

    1 + beta h                = (r + s) / (alpha + r)
    1 + beta h + beta h' r    = (r^2 + 2 alpha r + alpha s) / (alpha + r)^2,

which is how they are evaluated (no cancellation, no log of a negative number).

Unlike the paper's remark, the inverse has a closed form: taking norms of
``y - z0 = (1 + beta h(r)) (z - z0)`` gives ``r_y = r (r + s) / (alpha + r)``, a
quadratic in ``r`` with one positive root.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fused, kernels
from .base import Flow, ParameterSource

__all__ = ["Radial"]


class Radial(Flow):
    """One radial layer; static, or amortized from a context (eq. 14)."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.1):
        super().__init__(dim, context_dim)
        # raw parameters, one row per sample: [z0 (dim), alpha' (1), beta' (1)]
        self.params = ParameterSource(dim + 2, context_dim, init_std)

    def _z0_alpha_s(self, context):
        """``z0`` (``(D,)`` static, ``(B, D)`` amortized), ``alpha > 0`` and ``s = beta + alpha > 0``."""
        theta = self.params.raw(context)
        alpha, s = F.softplus(theta[..., self.dim :]).unbind(-1)
        return theta[..., : self.dim], alpha, s

    def z0_alpha_s(self, batch_size: int, context=None):
        """Per-sample centre ``z0`` (B, D), ``alpha > 0`` and ``s = beta + alpha > 0`` (B,)."""
        z0, alpha, s = self._z0_alpha_s(context)
        if context is None:
            return z0.expand(batch_size, self.dim), alpha.expand(batch_size), s.expand(batch_size)
        return z0, alpha, s

    def _log_factors(self, r, alpha, s):
        log_1 = torch.log(r + s) - torch.log(alpha + r)
        log_2 = torch.log(r * r + 2.0 * alpha * r + alpha * s) - 2.0 * torch.log(alpha + r)
        return (self.dim - 1) * log_1 + log_2

    def _forward(self, z, context):
        return Radial._chain([self], z, context)

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (radial, all static or all amortized) applied in order (eq. 14), their
        parameters constrained together and their log-determinants summed together. Where autograd
        records it, the whole run is one node (:class:`_RadialChain`) with a hand-written backward; on
        the CPU both directions are one call of the compiled kernel (``kernels/radial.c``) where it
        can be built."""
        dim = layers[0].dim
        theta = ParameterSource.stack([f.params for f in layers], context)  # (K, D + 2) or (B, K, D + 2)
        alpha, s = F.softplus(theta[..., dim:]).unbind(-1)
        z0 = theta[..., :dim]
        if torch.is_grad_enabled() and torch._C._functorch.maybe_current_level() is None:
            return _RadialChain.apply(z, z0, alpha, s)
        kernel = _kernel(z, z0)
        if kernel is not None:
            return _kernel_forward(kernel, z, z0, alpha, s, keep=False)[:2]
        return _radial_run(z, z0, alpha, s, keep=False)[:2]

    def _inverse(self, y, context):
        z0, alpha, s = self._z0_alpha_s(context)
        diff_y = y - z0
        r_y = torch.linalg.vector_norm(diff_y, dim=-1)
        # r_y (alpha + r) = r (r + s)  <=>  r^2 + p r - r_y alpha = 0 with p = s - r_y;
        # its positive root, in the form that avoids cancellation for either sign of p
        p = s - r_y
        q = torch.sqrt(p * p + 4.0 * r_y * alpha)
        r = torch.where(p > 0, 2.0 * r_y * alpha / (q + p), 0.5 * (q - p))
        scale = (r + s) / (alpha + r)
        return z0 + diff_y / scale.unsqueeze(-1), -self._log_factors(r, alpha, s)


def _radial_run(z, z0, alpha, s, keep: bool = True):
    """Eq. 14 for each layer ``k`` of the centres ``z0`` (``(K, D)`` static, ``(B, K, D)`` amortized),
    ``alpha`` and ``s`` (``(K,)`` or ``(B, K)``), and the summed log-determinants. Returns
    ``(z_K, logdet, (diffs, r, scale))``: the layers' ``z - z0``, their radii and ``1 + beta h``."""
    diffs, radii, scales = [], [], []
    axis = z0.dim() - 2  # the layer axis of the parameters
    for z0_k, alpha_k, s_k in zip(z0.unbind(axis), alpha.unbind(-1), s.unbind(-1)):
        diff = z - z0_k
        r = torch.linalg.vector_norm(diff, dim=-1)
        scale = (r + s_k) / (alpha_k + r)  # 1 + beta h
        z = torch.addcmul(z0_k, scale.unsqueeze(-1), diff)
        if keep:  # for the backward only
            diffs.append(diff)
        radii.append(r)
        scales.append(scale)
    r, scale = torch.stack(radii, dim=-1), torch.stack(scales, dim=-1)  # (..., B, K)
    # (D - 1) log(1 + beta h) + log(r^2 + 2 alpha r + alpha s) - 2 log(alpha + r)
    log_2 = torch.log(r * (r + 2.0 * alpha) + alpha * s) - 2.0 * torch.log(alpha + r)
    return z, ((z.shape[-1] - 1) * torch.log(scale) + log_2).sum(-1), (diffs, r, scale)


def _kernel(z: torch.Tensor, z0: torch.Tensor) -> kernels.Kernel | None:
    """The compiled run of radial layers (``kernels/radial.c``: the same arithmetic as
    :func:`_radial_run` and :meth:`_RadialChain.backward` in one C loop over the samples and layers)
    for these tensors, or ``None`` where the PyTorch path runs (:func:`kernels.find`)."""
    return kernels.find("radial", z, z0)


def _kernel_forward(kernel: kernels.Kernel, z, z0, alpha, s, keep: bool = True):
    """``(z_K, logdet, saved)`` by the kernel; ``saved`` is ``(z0, alpha, s, r, c, ds)`` (``ds``
    ``None`` unless ``keep``), what :func:`_kernel_backward` needs."""
    z0, alpha, s = (x.detach().contiguous() for x in (z0, alpha, s))
    z_out = kernels.rows(z, z0.shape[-1])
    N, K, dim, _ = size = kernels.sizes(z_out, z0)
    logdet, r, c = z_out.new_empty(N), z_out.new_empty(N, K), z_out.new_empty(N, K)
    ds = z_out.new_empty(N, K, dim) if keep else None
    kernel.forward(size, z0, alpha, s, z_out, logdet, r, c, ds)
    return z_out.view(z.shape), logdet.view(z.shape[:-1]), (z0, alpha, s, r, c, ds)


def _kernel_backward(kernel: kernels.Kernel, saved, g_z, g_logdet):
    """``(dL/dz, dL/dz0, dL/dalpha, dL/ds)`` by the kernel, from the upstream gradients and
    :func:`_kernel_forward`'s ``saved``."""
    z0, alpha, s, r, c, ds = saved
    g = kernels.rows(g_z, z0.shape[-1])
    g_z0, g_alpha, g_s = torch.zeros_like(z0), torch.zeros_like(alpha), torch.zeros_like(s)
    kernel.backward(kernels.sizes(g, z0), alpha, s, r, c, ds, g_logdet.reshape(-1).contiguous(),
                    g, g_z0, g_alpha, g_s)
    return g.view(g_z.shape), g_z0, g_alpha, g_s


class _RadialChain(torch.autograd.Function):
    """A run of radial layers as one autograd node: the forward of :func:`_radial_run`, and its
    backward by hand. For ``z' = z0 + c d``, ``d = z - z0``, ``r = ||d||``, ``c = (r + s) / (alpha + r)``
    and the log-det term ``(D - 1) log c + log P - 2 log(alpha + r)``, ``P = r^2 + 2 alpha r + alpha s``:

        dL/dc = g'^T d + gl (D - 1) / c,
        dL/dr = dL/dc (alpha - s) / (alpha + r)^2 + gl ((2 r + 2 alpha) / P - 2 / (alpha + r)),
        dL/dz = c g' + dL/dr d / r,    dL/dz0 = g' - dL/dz,
        dL/dalpha = -dL/dc c / (alpha + r) + gl ((2 r + s) / P - 2 / (alpha + r)),
        dL/ds = dL/dc / (alpha + r) + gl alpha / P,

    the parameters' gradients summed over the samples that share them."""

    @staticmethod
    def forward(ctx, z, z0, alpha, s):
        ctx.kernel, inputs = _kernel(z, z0), (z, z0, alpha, s)
        if ctx.kernel is not None:
            z_out, logdet, saved = _kernel_forward(ctx.kernel, z, z0, alpha, s)
            fused.save(ctx, inputs, saved)
            return z_out, logdet
        z_out, logdet, (diffs, r, scale) = _radial_run(z, z0, alpha, s)
        fused.save(ctx, inputs, (z0, alpha, s, r, scale, *diffs))
        return z_out, logdet

    @staticmethod
    def backward(ctx, g_z, g_logdet):
        inputs, values = fused.saved(ctx)
        if torch.is_grad_enabled():  # a backward pass to differentiate again: the plain run's
            plain = lambda *args: _radial_run(*args, keep=False)[:2]  # noqa: E731
            return fused.differentiable_backward(ctx, plain, inputs, (g_z, g_logdet))
        if ctx.kernel is not None:
            return _kernel_backward(ctx.kernel, values, g_z, g_logdet)
        z0, alpha, s, r, scale, *diffs = values
        static, dim = z0.dim() == 2, z0.shape[-1]
        # every layer's scalar factors at once, (..., B, K)
        gl = g_logdet.unsqueeze(-1)
        inv_ar = 1.0 / (alpha + r)
        P = r * (r + 2.0 * alpha) + alpha * s
        gl_P = gl / P
        g_r_ld = 2.0 * (r + alpha) * gl_P - 2.0 * gl * inv_ar  # the log-det's part of dL/dr
        g_alpha = (2.0 * r + s) * gl_P - 2.0 * gl * inv_ar
        g_s = alpha * gl_P
        g_c = torch.empty_like(r)
        g = g_z
        g_z0 = torch.empty(r.shape[:-1] + (len(diffs), dim), dtype=g.dtype, device=g.device)  # (..., B, K, D)
        inv_r = 1.0 / r.clamp_min(torch.finfo(r.dtype).tiny)
        for k in range(len(diffs) - 1, -1, -1):
            d, c_k = diffs[k], scale[..., k]
            gc_k = (g * d).sum(-1) + gl[..., 0] * ((dim - 1) / c_k)
            g_c[..., k] = gc_k
            g_r = gc_k * (alpha[..., k] - s[..., k]) * inv_ar[..., k] ** 2 + g_r_ld[..., k]
            g_d = torch.addcmul(g * c_k.unsqueeze(-1), (g_r * inv_r[..., k]).unsqueeze(-1), d)
            torch.sub(g, g_d, out=g_z0[..., k, :])
            g = g_d
        g_alpha = g_alpha - g_c * scale * inv_ar
        g_s = g_s + g_c * inv_ar
        if static:  # shared by every sample
            lead = tuple(range(g_z0.dim() - 2))
            return g, g_z0.sum(lead), g_alpha.sum(lead), g_s.sum(lead)
        if g.dim() == 3:  # a sample axis: shared by the samples of a row
            return g, g_z0.sum(0), g_alpha.sum(0), g_s.sum(0)
        return g, g_z0, g_alpha, g_s
