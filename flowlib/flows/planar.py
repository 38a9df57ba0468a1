"""Planar flow (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.1).

    f(z) = z + u_hat h(w^T z + b),    h = tanh                         (eq. 10)
    psi(z) = h'(w^T z + b) w                                           (eq. 11)
    |det df/dz| = |1 + u_hat^T psi(z)|                                 (eq. 12)

``u_hat`` makes the map invertible whatever the raw ``u`` (Appendix A.1):

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,    m(x) = -1 + softplus(x),

so that ``w^T u_hat = m(w^T u) > -1``. Since ``m(x) - x = softplus(-x) - 1``,
this is computed as ``u + (softplus(-w^T u) - 1) w / ||w||^2``, finite for any
``w^T u``. The determinant is evaluated in the form

    1 + h'(a) w^T u_hat = tanh(a)^2 + (1 - tanh(a)^2) softplus(w^T u),

a sum of non-negative terms (``h' = 1 - tanh^2``), which never cancels to zero
in floating point the way ``1 + h' (-1 + tiny)`` would.

The inverse has no closed form, but a planar layer ``y = z + u_hat tanh(w^T z + b)`` moves ``z``
along ``u_hat`` only, so inverting it is a one-dimensional problem: with ``a = w^T z``,

    w^T y = a + m tanh(a + b),    m = w^T u_hat > -1,

and ``g(a) = a + m tanh(a + b)`` is strictly increasing (``g' = 1 + m tanh'
>= min(1, 1 + m) > 0``). Its root lies in ``[w^T y - |m|, w^T y + |m|]``, where safeguarded Newton
(:func:`solve_planar`) finds it to machine precision; then ``z = y - u_hat tanh(a + b)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fused, kernels
from .base import Flow, ParameterSource

__all__ = ["Planar", "solve_planar"]

# Rows up to which a run without a gradient uses the compiled kernel. One thread, 80 layers of 40
# dimensions, 100 rows (a training batch): kernel 0.52 ms, PyTorch 0.88; 500 rows: 2.01 against 1.41.
KERNEL_ROWS_NO_GRAD = 256

# Without a gradient, a longer run is applied to slices of about this many entries of z along its
# first axis (the rows of a static run, the samples of an amortized one), every layer to one slice
# before the next: a slice stays in the CPU's cache through the K layers, where all of z (importance
# sampling: 500 samples x 100 images x 40 = 2 million numbers, 8 MB) went through memory several
# times a layer. One thread, 80 amortized layers on 500 x 100 x 40 (AMD EPYC, AVX2, 2026-12-02):
# 1222 ms whole, slices of 32 / 64 / 128 / 250 samples (2**17 ... 2**20 entries) 562 / 434 / 467 / 752 ms.
SLICE_ENTRIES = 2**18


def constrain(theta: torch.Tensor, dim: int):
    """``u_hat``, ``w``, ``b`` and ``w^T u`` from raw parameters ``theta = [u, w, b]`` (last axis,
    any leading axes): Appendix A.1's ``u_hat``, so that ``w^T u_hat > -1``."""
    u, w, b = theta[..., :dim], theta[..., dim : 2 * dim], theta[..., -1]
    wu = (w * u).sum(-1, keepdim=True)
    w_sq = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    u_hat = u + (F.softplus(-wu) - 1.0) * w / w_sq
    return u_hat, w, b, wu.squeeze(-1)


class Planar(Flow):
    """One planar layer; static, or amortized from a context (eq. 10-12)."""

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, init_std: float = 0.1):
        super().__init__(dim, context_dim)
        # raw parameters, one row per sample: [u (dim), w (dim), b (1)]
        self.params = ParameterSource(2 * dim + 1, context_dim, init_std)

    def u_w_b(self, batch_size: int, context=None):
        """The per-sample ``u_hat``, ``w`` and ``b``, each with a leading batch axis."""
        u_hat, w, b, wu = constrain(self.params.raw(context), self.dim)
        if context is None:
            return (u_hat.expand(batch_size, self.dim), w.expand(batch_size, self.dim),
                    b.expand(batch_size), wu.expand(batch_size))
        return u_hat, w, b, wu

    def _forward(self, z, context):
        return Planar._chain([self], z, context)

    def solve(self, y: torch.Tensor, context: torch.Tensor | None = None,
              max_iterations: int = 200) -> torch.Tensor:
        """``z`` with ``self(z, context) = y`` (no gradient): per sample, the one-dimensional root
        of :func:`solve_planar`."""
        with torch.no_grad():
            u_hat, w, b, _ = (t.to(y.dtype) for t in constrain(self.params.raw(context), self.dim))
            return solve_planar(u_hat, w, b, y, max_iterations)

    def _inverse(self, y, context):
        """``(z, log|det dz/dy|)``: ``z`` from :meth:`solve`, the log-determinant minus the
        forward one at ``z`` (eq. 12), with its gradient."""
        z = self.solve(y, context)
        _, logdet = self._forward(z, context)
        return z, -logdet

    @staticmethod
    def _chain(layers, z, context):
        """``layers`` (planar, all static or all amortized) applied in order: their parameters
        are constrained together, then each layer is eq. 10, and the log-determinants (eq. 12)
        are evaluated together from the saved ``tanh(a)``. Where autograd records it, the whole
        run is one node (:class:`_PlanarChain`) with a hand-written backward; on the CPU both
        directions are one call of the compiled kernel (``kernels/planar.c``) where it can be built."""
        dim = layers[0].dim
        theta = ParameterSource.stack([f.params for f in layers], context)  # (K, P) or (B, K, P)
        if torch.is_grad_enabled() and _no_functorch():
            return _PlanarChain.apply(z, theta, dim)
        # without a gradient, many rows (importance sampling) run faster through PyTorch's
        # vectorized tanh and matrix-vector products over all rows than through the kernel's loop
        kernel = _kernel(z, theta) if z.numel() <= KERNEL_ROWS_NO_GRAD * dim else None
        if kernel is not None:
            return _kernel_forward(kernel, z, theta, dim, keep=False)[:2]
        return _planar_slices(z, theta, dim)


def _planar_slices(z, theta, dim):
    """:func:`_planar_run` without a gradient, on slices of about :data:`SLICE_ENTRIES` entries along
    the first axis of ``z`` where the parameters do not run along it (a static run, or an amortized
    one with a sample axis, ``(S, B, D)``): each row's arithmetic is the same as on the whole."""
    if (theta.dim() == 2 or z.dim() == 3) and z.shape[0] > 0:  # static, or a sample axis
        n = max(1, SLICE_ENTRIES // z[0].numel())
        if z.shape[0] > n:
            parts = [_planar_run(part, theta, dim, keep=False)[:2] for part in z.split(n)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return _planar_run(z, theta, dim, keep=False)[:2]


def solve_planar(u_hat, w, b, y, max_iterations: int = 200) -> torch.Tensor:
    """``z`` with ``z + u_hat tanh(w^T z + b) = y``, per sample, for the layer's (possibly
    per-sample) ``u_hat``, ``w`` (``(B, D)`` or ``(1, D)``) and ``b``: safeguarded Newton on
    ``g(a) = a + m tanh(a + b) - w^T y`` inside its bracket ``[w^T y - |m|, w^T y + |m|]``."""
    m = (w * u_hat).sum(-1)
    c = (w * y).sum(-1)  # g(a) = c
    lo, hi = c - m.abs(), c + m.abs()
    a = c.clone()
    tol = 4 * torch.finfo(y.dtype).eps
    for _ in range(max_iterations):
        t = torch.tanh(a + b)
        g = a + m * t - c
        lo, hi = torch.where(g < 0, a, lo), torch.where(g > 0, a, hi)
        newton = a - g / (1 + m * (1 - t * t))
        inside = (newton >= lo) & (newton <= hi)
        a_next = torch.where(inside, newton, 0.5 * (lo + hi))
        done = ((a_next - a).abs() <= tol * (1 + a.abs())).all() or bool((g == 0).all())
        a = a_next
        if done:
            break
    return y - u_hat * torch.tanh(a + b).unsqueeze(-1)


def _no_functorch() -> bool:
    """False inside a ``torch.func`` transform (``vmap``), which the fused node does not support."""
    return torch._C._functorch.maybe_current_level() is None


def _planar_run(z, theta, dim, keep: bool = True):
    """The layers of raw parameters ``theta`` (``(K, P)`` static, ``(B, K, P)`` amortized; ``P = 2 D + 1``)
    applied in order (eq. 10), and their summed log-determinants ``log(t^2 + (1 - t^2) c)`` (eq. 12)
    with ``t = tanh(a)`` and ``c = softplus(w^T u) = 1 + w^T u_hat``. Returns ``(z_K, logdet, saved)``,
    ``saved`` what the backward needs: the layers' inputs ``zs``, ``t`` and the factors ``q``, ``(K, ...)``,
    and the constrained parameters; ``keep=False`` keeps no layer inputs (nothing will differentiate:
    with many samples they would hold memory for nothing)."""
    u_hat, w, b, wu = constrain(theta, dim)
    c = F.softplus(wu)
    static = theta.dim() == 2
    shape = z.shape
    if static:  # every sample shares the parameters: matrix-vector products over all rows at once
        z = z.reshape(-1, shape[-1])
    axis = 0 if static else 1  # the layer axis of the parameters
    # where nothing differentiates (the fused node's forward, evaluation): biases as Python numbers
    # for a static run; where, besides, no layer input is kept (evaluation), every layer after the
    # first updates its own output in place (no fresh memory a layer), never the caller's z
    plain = not torch.is_grad_enabled() and _no_functorch()
    fresh = plain and not keep
    # w^T z for samples that share a row's parameters, (S, B, D) against (B, D): one batched
    # matrix-vector product that reads z once, where an elementwise product and a sum read it twice
    batched_dot = fresh and not static and len(shape) == 3
    zs, ts = [], []
    for k, (u_k, w_k, b_k) in enumerate(
            zip(u_hat.unbind(axis), w.unbind(axis), b.tolist() if plain and static else b.unbind(axis))):
        if keep:
            zs.append(z)
        in_place = fresh and k > 0
        if static:
            t = torch.mv(z, w_k).add_(b_k).tanh_()
            z = z.addr_(t, u_k) if in_place else torch.addr(z, t, u_k)  # z + u_hat h(w^T z + b)
        else:
            if batched_dot:
                a = torch.matmul(z.transpose(0, 1), w_k.unsqueeze(-1)).squeeze(-1).t()
            else:
                a = (z * w_k).sum(-1)
            t = torch.tanh(a + b_k)
            z = z.addcmul_(t.unsqueeze(-1), u_k) if in_place else torch.addcmul(z, t.unsqueeze(-1), u_k)
        ts.append(t)
    t = torch.stack(ts)  # (K, N) static, (K, [S,] B) amortized
    t_sq = t * t
    # c against t: (K, 1) static, (K, B) or (K, 1, B) amortized
    c_t = c.unsqueeze(1) if static else (c.t() if len(shape) == 2 else c.t().unsqueeze(1))
    q = torch.addcmul(t_sq, 1.0 - t_sq, c_t)
    return z.view(shape), q.log().sum(0).view(shape[:-1]), (zs, t, q, c_t, u_hat, w, wu)


def _kernel(z: torch.Tensor, theta: torch.Tensor) -> kernels.Kernel | None:
    """The compiled run of planar layers (``kernels/planar.c``: the same arithmetic as
    :func:`_planar_run` and :meth:`_PlanarChain.backward`, constraint included, in one C loop over
    the samples and layers instead of some 20 PyTorch operations a layer) for these tensors, or
    ``None`` where the PyTorch path runs (:func:`kernels.find`)."""
    return kernels.find("planar", z, theta) if _no_functorch() else None


def _kernel_forward(kernel: kernels.Kernel, z, theta, dim, keep: bool = True):
    """``(z_K, logdet, saved)`` by the kernel; ``saved`` is ``(theta, u_hat, c, t, zs)`` (``zs``
    ``None`` unless ``keep``), what :func:`_kernel_backward` needs."""
    theta = theta.detach().contiguous()
    z_out = kernels.rows(z, dim)
    N, K, _, P = size = kernels.sizes(z_out, theta)
    u_hat, c = theta.new_empty(P, K, dim), theta.new_empty(P, K)
    logdet, t = z_out.new_empty(N), z_out.new_empty(N, K)
    zs = z_out.new_empty(N, K, dim) if keep else None
    kernel.forward(size, theta, u_hat, c, z_out, logdet, t, zs)
    return z_out.view(z.shape), logdet.view(z.shape[:-1]), (theta, u_hat, c, t, zs)


def _kernel_backward(kernel: kernels.Kernel, saved, g_z, g_logdet):
    """``(dL/dz, dL/dtheta)`` by the kernel, from the upstream gradients and
    :func:`_kernel_forward`'s ``saved``."""
    theta, u_hat, c, t, zs = saved
    g = kernels.rows(g_z, zs.shape[-1])
    g_theta, g_uhat, g_c = torch.zeros_like(theta), torch.zeros_like(u_hat), torch.zeros_like(c)
    kernel.backward(kernels.sizes(g, theta), theta, u_hat, c, t, zs, g_logdet.reshape(-1).contiguous(),
                    g, g_theta, g_uhat, g_c)
    return g.view(g_z.shape), g_theta


class _PlanarChain(torch.autograd.Function):
    """A run of planar layers as one autograd node: the forward of :func:`_planar_run`, and its
    backward by hand. Layer by layer in reverse, for ``z_{k+1} = z_k + u_k t_k``,
    ``t_k = tanh(w_k^T z_k + b_k)`` and ``logdet = sum_k log q_k``, ``q_k = t_k^2 + (1 - t_k^2) c_k``:

        dL/dt_k  = u_k^T g_{k+1} + gl 2 t_k (1 - c_k) / q_k,    dL/da_k = (1 - t_k^2) dL/dt_k,
        g_k      = g_{k+1} + w_k dL/da_k,
        dL/du_k  = sum t_k g_{k+1},  dL/dw_k = sum dL/da_k z_k,  dL/db_k = sum dL/da_k,
        dL/dc_k  = sum gl (1 - t_k^2) / q_k,

    the sums over the samples that share the parameters (all of them for a static run, the sample
    axis for an amortized one); then through the constraint ``u_hat = u + m w``,
    ``m = (softplus(-w^T u) - 1) / ||w||^2``, ``c = softplus(w^T u)``:

        dL/dm = g_uhat^T w,   dL/d(w^T u) = -dL/dm sigmoid(-w^T u) / ||w||^2 + dL/dc sigmoid(w^T u),
        dL/du = g_uhat + dL/d(w^T u) w,
        dL/dw = g_w + m g_uhat + dL/d(w^T u) u - 2 dL/dm m w / ||w||^2.

    Autograd would record about a dozen nodes per layer and as many passes over the parameters."""

    @staticmethod
    def forward(ctx, z, theta, dim):
        ctx.kernel, ctx.shape, ctx.dim, inputs = _kernel(z, theta), z.shape, dim, (z, theta)
        if ctx.kernel is not None:
            z_out, logdet, saved = _kernel_forward(ctx.kernel, z, theta, dim)
            fused.save(ctx, inputs, saved)
            return z_out, logdet
        z_out, logdet, (zs, t, q, c_t, u_hat, w, wu) = _planar_run(z, theta, dim)
        fused.save(ctx, inputs, (theta, u_hat, w, wu, t, q, c_t, *zs))
        return z_out, logdet

    @staticmethod
    def backward(ctx, g_z, g_logdet):
        inputs, values = fused.saved(ctx)
        if torch.is_grad_enabled():  # a backward pass to differentiate again: the plain run's
            plain = lambda z, theta: _planar_run(z, theta, ctx.dim, keep=False)[:2]  # noqa: E731
            return *fused.differentiable_backward(ctx, plain, inputs, (g_z, g_logdet)), None
        if ctx.kernel is not None:
            g, g_theta = _kernel_backward(ctx.kernel, values, g_z, g_logdet)
            return g, g_theta, None
        theta, u_hat, w, wu, t, q, c_t, *zs = values
        shape, dim, K = ctx.shape, ctx.dim, len(zs)
        static = theta.dim() == 2
        sample_axis = not static and len(shape) == 3
        if static:
            g = g_z.reshape(-1, shape[-1]).clone()
            gl = g_logdet.reshape(-1)
        else:
            g = g_z.clone()
            gl = g_logdet
        one_minus = 1.0 - t * t  # h'(a), (K, ...)
        gl_q = gl / q
        g_t = 2.0 * gl_q * t * (1.0 - c_t)  # the log-det's part of dL/dt, every layer at once
        g_a = torch.empty_like(t)
        g_uhat, g_w = torch.empty_like(u_hat), torch.empty_like(w)
        if static:
            t_k, gt_k, om_k, u_k, w_k = (x.unbind(0) for x in (t, g_t, one_minus, u_hat, w))
            gu_k, gw_k, ga_k = g_uhat.unbind(0), g_w.unbind(0), g_a.unbind(0)
            for k in range(K - 1, -1, -1):
                torch.mv(g.t(), t_k[k], out=gu_k[k])
                torch.mv(g, u_k[k], out=ga_k[k]).add_(gt_k[k]).mul_(om_k[k])
                torch.mv(zs[k].t(), ga_k[k], out=gw_k[k])
                g.addr_(ga_k[k], w_k[k])
        else:
            for k in range(K - 1, -1, -1):
                u_k, w_k, ga_k = u_hat[:, k], w[:, k], g_a[k]
                torch.add(g_t[k], (g * u_k).sum(-1), out=ga_k)
                ga_k.mul_(one_minus[k])
                if sample_axis:  # the parameters are shared by the samples of a row
                    torch.sum(g * t[k].unsqueeze(-1), 0, out=g_uhat[:, k])
                    torch.sum(ga_k.unsqueeze(-1) * zs[k], 0, out=g_w[:, k])
                else:
                    torch.mul(g, t[k].unsqueeze(-1), out=g_uhat[:, k])
                    torch.mul(ga_k.unsqueeze(-1), zs[k], out=g_w[:, k])
                g.addcmul_(ga_k.unsqueeze(-1), w_k)
        g_c = gl_q * one_minus
        if static:
            g_b, g_c = g_a.sum(-1), g_c.sum(-1)
        elif sample_axis:
            g_b, g_c = g_a.sum(1).t(), g_c.sum(1).t()
        else:
            g_b, g_c = g_a.t(), g_c.t()
        # through the constraint (see the docstring)
        u, w_raw = theta[..., :dim], theta[..., dim : 2 * dim]
        w_sq_raw = (w_raw * w_raw).sum(-1)
        w_sq = w_sq_raw.clamp_min(torch.finfo(w_raw.dtype).tiny)
        sig = torch.sigmoid(-wu)
        m = (F.softplus(-wu) - 1.0) / w_sq
        g_m = (g_uhat * w).sum(-1)
        g_wu = g_c * (1.0 - sig) - g_m * sig / w_sq
        g_wsq = torch.where(w_sq_raw >= torch.finfo(w_raw.dtype).tiny, -g_m * m / w_sq, 0.0)
        g_theta = torch.empty_like(theta)
        torch.addcmul(g_uhat, g_wu.unsqueeze(-1), w, out=g_theta[..., :dim])
        g_wt = g_theta[..., dim : 2 * dim]
        torch.addcmul(g_w, m.unsqueeze(-1), g_uhat, out=g_wt)
        g_wt.addcmul_(g_wu.unsqueeze(-1), u).addcmul_(2.0 * g_wsq.unsqueeze(-1), w)
        g_theta[..., -1] = g_b
        return g.view(shape), g_theta, None
