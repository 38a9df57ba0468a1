"""Householder flow (Tomczak & Welling 2016, eq. 9-10).

    z' = H z,    H = I - 2 v v^T / ||v||^2.

``H`` is a reflection: orthogonal, symmetric and its own inverse, so
``log|det H| = 0`` (volume preserving) and ``H^{-1} = H``. A product of ``K``
reflections can represent any orthogonal matrix once ``K >= D`` (every
orthogonal matrix is a product of at most ``D`` reflections). In the paper ``v``
is predicted from the encoder (amortized); here it may also be a free vector.
"""

from __future__ import annotations

import torch

from . import fused, kernels
from .base import Flow, ParameterSource

__all__ = ["Householder", "reflect", "reflect_many"]


def reflect(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(I - 2 v v^T / ||v||^2) z`` for rows ``z`` and (broadcast) rows ``v``, in O(D)."""
    v_sq = (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return z - 2.0 * v * (v * z).sum(-1, keepdim=True) / v_sq


def reflect_many(z: torch.Tensor, v: torch.Tensor, order=None, shared: bool = True) -> torch.Tensor:
    """``H_{k_n} ... H_{k_1} z`` for ``k`` in ``order`` (default ``0, 1, ...``): the reflections
    ``H_k = I - 2 v_k v_k^T / ||v_k||^2`` of the rows ``v[..., k, :]``, applied to rows ``z`` in
    turn, each as ``z - (v_k^T z) (2 v_k / ||v_k||^2)``. ``shared``: ``v`` is ``(K, D)``, the same
    for every row of ``z``; else ``(B, K, D)``, one set per row of ``z`` (``(B, D)`` or ``(S, B, D)``)."""
    c = 2.0 * v / (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    for k in range(v.shape[-2]) if order is None else order:
        v_z = z @ v[k] if shared else (v[..., k, :] * z).sum(-1)
        z = torch.addcmul(z, v_z.unsqueeze(-1), c[..., k, :], value=-1.0)
    return z


class Householder(Flow):
    """One Householder reflection; static, or with ``v`` amortized from a context."""

    sample_axis = True
    volume_preserving = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 1.0):
        super().__init__(dim, context_dim)
        self.params = ParameterSource(dim, context_dim, init_std)

    def _forward(self, z, context):
        return Householder._chain([self], z, context)[0], z.new_zeros(z.shape[:-1])

    def _inverse(self, z, context):
        return self._forward(z, context)

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (reflections, all static or all amortized) applied in order, each as
        ``z - (v^T z) (2 v / ||v||^2)``; ``(z, None)``: the log-determinant is 0. On the CPU the run
        is one call of the compiled kernel (``kernels/householder.c``) each way where it can be built."""
        return reflect_run(z, ParameterSource.stack([f.params for f in layers], context)), None


def reflect_run(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`reflect_many` in the default order (``v`` of shape ``(K, D)`` shared, or ``(B, K, D)``
    one set per row), run fast: where a gradient is needed, one autograd node with the backward of
    :class:`_ReflectChain` (the compiled kernel inside it where one is built); without a gradient,
    the kernel alone; inside ``torch.func`` transforms, the plain loop."""
    if torch.is_grad_enabled() and torch._C._functorch.maybe_current_level() is None:
        return _ReflectChain.apply(z, v)
    kernel = _kernel(z, v)
    if kernel is not None:
        return _kernel_forward(kernel, z, v, keep=False)[0]
    return reflect_many(z, v, shared=v.dim() == 2)


def _kernel(z: torch.Tensor, v: torch.Tensor) -> kernels.Kernel | None:
    """The compiled run of reflections (``kernels/householder.c``: the same arithmetic as
    :class:`_ReflectChain` in one C loop over the samples and reflections) for these tensors, or
    ``None`` where the PyTorch path runs (:func:`kernels.find`)."""
    return kernels.find("householder", z, v)


def _kernel_forward(kernel: kernels.Kernel, z, v, keep: bool = True):
    """``(z_K, saved)`` by the kernel; ``saved`` is ``(v, c, vz, zs)`` (``zs`` ``None`` unless ``keep``)."""
    v = v.detach().contiguous()
    z_out = kernels.rows(z, v.shape[-1])
    N, K, dim, _ = size = kernels.sizes(z_out, v)
    c, vz = torch.empty_like(v), z_out.new_empty(N, K)
    zs = z_out.new_empty(N, K, dim) if keep else None
    kernel.forward(size, v, c, z_out, vz, zs)
    return z_out.view(z.shape), (v, c, vz, zs)


class _ReflectChain(torch.autograd.Function):
    """:func:`reflect_many` (default order) as one autograd node, its backward by hand. For
    ``z' = z - (v^T z) c`` with ``c = 2 v / ||v||^2``, in reverse over the reflections:

        g = g' - (c^T g') v,    dL/dv = -(c^T g') z  +  J_c^T (-(v^T z) g'),
        J_c^T x = 2 x / ||v||^2 - 4 (x^T v) v / ||v||^4,

    the parameters' gradients summed over the samples that share them (all rows for static ``v``
    of shape ``(K, D)``, the sample axis for ``v`` of shape ``(B, K, D)``)."""

    @staticmethod
    def forward(ctx, z, v):
        ctx.kernel, inputs = _kernel(z, v), (z, v)
        if ctx.kernel is not None:
            z_out, saved = _kernel_forward(ctx.kernel, z, v)
            fused.save(ctx, inputs, saved)
            return z_out
        shared, shape = v.dim() == 2, z.shape
        v_sq_raw = (v * v).sum(-1, keepdim=True)
        v_sq = v_sq_raw.clamp_min(torch.finfo(v.dtype).tiny)
        c = 2.0 * v / v_sq
        if shared:
            z = z.reshape(-1, shape[-1])
        zs, vzs = [], []
        for k in range(v.shape[-2]):
            zs.append(z)
            if shared:
                v_z = torch.mv(z, v[k])
                z = torch.addr(z, v_z, c[k], alpha=-1.0)
            else:
                v_z = (v[:, k] * z).sum(-1)
                z = torch.addcmul(z, v_z.unsqueeze(-1), c[:, k], value=-1.0)
            vzs.append(v_z)
        fused.save(ctx, inputs, (v, c, v_sq, v_sq_raw, *zs, *vzs))
        ctx.shape = shape
        return z.view(shape)

    @staticmethod
    def backward(ctx, g_out):
        inputs, values = fused.saved(ctx)
        if torch.is_grad_enabled():  # a backward pass to differentiate again: the plain loop's
            return fused.differentiable_backward(
                ctx, lambda z, v: reflect_many(z, v, shared=v.dim() == 2), inputs, (g_out,))
        if ctx.kernel is not None:
            v, c, vz, zs = values
            g = kernels.rows(g_out, v.shape[-1])
            g_v, g_c = torch.zeros_like(v), torch.zeros_like(v)
            ctx.kernel.backward(kernels.sizes(g, v), v, c, vz, zs, g, g_v, g_c)
            return g.view(g_out.shape), g_v
        v, c, v_sq, v_sq_raw, *rest = values
        K = v.shape[-2]
        zs, vzs = rest[:K], rest[K:]
        shared, shape = v.dim() == 2, ctx.shape
        sample_axis = not shared and len(shape) == 3
        g = g_out.reshape(-1, shape[-1]) if shared else g_out
        g_v, g_c = torch.empty_like(v), torch.empty_like(c)
        for k in range(K - 1, -1, -1):
            if shared:
                c_g = torch.mv(g, c[k])
                torch.mv(zs[k].t(), c_g, out=g_v[k]).neg_()
                torch.mv(g.t(), vzs[k], out=g_c[k]).neg_()
                g = torch.addr(g, c_g, v[k], alpha=-1.0)
            else:
                c_g = (g * c[:, k]).sum(-1, keepdim=True)
                if sample_axis:
                    torch.sum(c_g * zs[k], 0, out=g_v[:, k])
                    torch.sum(vzs[k].unsqueeze(-1) * g, 0, out=g_c[:, k])
                else:
                    torch.mul(c_g, zs[k], out=g_v[:, k])
                    torch.mul(vzs[k].unsqueeze(-1), g, out=g_c[:, k])
                g_v[:, k].neg_()
                g_c[:, k].neg_()
                g = torch.addcmul(g, c_g, v[:, k], value=-1.0)
        # through c = 2 v / ||v||^2 (no gradient through the clamp where it binds)
        g_c_v = (g_c * v).sum(-1, keepdim=True)
        live = v_sq_raw >= torch.finfo(v.dtype).tiny
        g_v += 2.0 * g_c / v_sq - torch.where(live, 4.0 * g_c_v / (v_sq * v_sq), 0.0) * v
        return g.reshape(shape), g_v
