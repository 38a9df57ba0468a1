"""PCP-Map: the gradient of a partially convex potential (Wang, Baptista, Ruthotto et al. 2023,
"Efficient neural network approaches for conditional optimal transport", arXiv:2310.16975).

The map is ``T(z; c) = grad_z G(z; c)`` with

    G(z; c) = softplus(w1) * g(z; c) + softplus(w2) * ||z||^2 / 2,

where ``g`` is a partially input-convex neural network (PICNN, Amos et al. 2017, eq. 3): convex in
``z``, arbitrary in the context ``c``. Its Jacobian is the Hessian of ``G``: symmetric positive
definite (``>= softplus(w2) I``), so ``T`` is invertible and ``log|det| = log det Hess G`` (Cholesky).

Note: the Jacobian of ``T`` is a dense symmetric matrix, NOT triangular (a common wrong claim).
Only the joint map ``(c, z) -> (c, T(z; c))`` is block-triangular, which is what makes it a
conditional (triangular) transport map.

Gradient and Hessian of ``g`` are written in closed form (backward recursion for the gradient,
forward-mode Jacobians of the pre-activations for the Hessian); autograd is only used for the
parameter gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Flow, ParameterSource, check_inputs, check_size
from .spd import cholesky_logdet, gram_of_sum, weighted_gram

__all__ = ["PCPMap"]


def _sigma(x: torch.Tensor) -> torch.Tensor:
    # softplus with a high threshold, so that sigma' = sigmoid holds to float64 precision
    return F.softplus(x, threshold=40.0)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class PCPMap(Flow):
    """``T(z; c) = grad_z G(z; c)``, ``G`` a PICNN plus a quadratic (PCP-Map, Wang et al. 2023).

    PICNN of Amos et al. (2017, eq. 3), with ``u_k`` the context path and ``z_k`` the convex path:

    * ``u_0 = c``, ``u_{k+1} = softplus(Wt_k u_k + bt_k)`` (``ctx``; amortized only);
    * gates ``gamma_k = W^(yu)_k u_k + b^(y)_k`` (``gamma``) and
      ``rho_k = softplus(W^(zu)_k u_k + b^(z)_k)`` (``rho``), free vectors when static;
    * ``z_0 = sigma(A_0 (z * gamma_0) + W^(u)_0 u_0 + b_0)``,
      ``z_k = sigma(W^(z)+_k (z_{k-1} * rho_k) + A_k (z * gamma_k) + W^(u)_k u_k + b_k)``,
      with ``sigma = softplus`` and ``W^(z)+ = softplus(W_raw) >= 0`` (this keeps ``g`` convex);
    * ``g = w^+ . (rho_L * z_{L-1}) + a . (gamma_L * z)`` (a term in ``c`` alone would not change ``T``).

    ``forward``, ``potential``, ``gradient`` and ``hessian`` also take ``z`` of shape ``(S, B, dim)``
    with a context of shape ``(B, C)``: the context path and the gates are computed once per row.

    Args: ``dim``; ``context_dim`` (None: static); ``hidden`` (H, convex-path width);
    ``n_layers`` (L); ``context_hidden`` (context-path width, default H).
    """

    sample_axis = True

    def __init__(self, dim: int, context_dim: int | None = None, *, hidden: int = 64,
                 n_layers: int = 2, context_hidden: int | None = None):
        super().__init__(dim, context_dim)
        check_size("hidden", hidden)
        check_size("n_layers", n_layers)
        check_size("context_hidden", context_hidden, allow_none=True)
        if context_hidden is not None and context_dim is None:
            raise ValueError("context_hidden is only used with context_dim (an amortized PCPMap); got "
                             f"context_hidden={context_hidden} and context_dim=None")
        H, L = hidden, n_layers
        self.hidden, self.n_layers = H, L
        if context_dim is None:
            u_dims = [None] * (L + 1)
            self.ctx = None
        else:
            Hc = context_hidden or H
            u_dims = [context_dim] + [Hc] * L
            self.ctx = nn.ModuleList(nn.Linear(u_dims[k], Hc) for k in range(L))
        one = _inv_softplus(1.0)
        self.gamma = nn.ModuleList(ParameterSource(dim, u_dims[k], init_mean=1.0) for k in range(L + 1))
        self.rho = nn.ModuleList(ParameterSource(H, u_dims[k], init_mean=one) for k in range(1, L + 1))
        self.bias = nn.ModuleList(ParameterSource(H, u_dims[k], init_std=0.5) for k in range(L))
        self.A = nn.ParameterList(nn.Parameter(torch.randn(H, dim) / math.sqrt(dim)) for _ in range(L))
        # softplus(W_raw) ~ 1/fan_in: activations stay O(1) at initialisation
        self.W_raw = nn.ParameterList(
            nn.Parameter(_inv_softplus(1.0 / H) + 0.1 * torch.randn(H, H)) for _ in range(L - 1))
        self.w_raw = nn.Parameter(_inv_softplus(1.0 / H) + 0.1 * torch.randn(H))
        self.a = nn.Parameter(0.01 * torch.randn(dim))
        self.w1 = nn.Parameter(torch.tensor(0.0))
        self.w2 = nn.Parameter(torch.tensor(one))  # softplus(w2) = 1: T starts near a scaled identity

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hidden={self.hidden}, n_layers={self.n_layers}"

    def _evaluate(self, z: torch.Tensor, context: torch.Tensor | None, order: int):
        """``(G,)``, ``(G, grad G)`` or ``(G, grad G, Hess G)`` for ``order`` 0, 1, 2."""
        L = self.n_layers
        u, h = context, None  # parameters from the context path: (B, .) amortized, (.,) static
        pre, gam, rho, Wp = [], [], [], []
        for k in range(L):
            gam.append(self.gamma[k].raw(u))
            p = F.linear(z * gam[k], self.A[k]) + self.bias[k].raw(u)
            if k > 0:
                rho.append(F.softplus(self.rho[k - 1].raw(u)))
                Wp.append(F.softplus(self.W_raw[k - 1]))
                p = p + F.linear(h * rho[-1], Wp[-1])
            pre.append(p)
            h = _sigma(p)
            if self.ctx is not None:
                u = F.softplus(self.ctx[k](u))
        gam.append(self.gamma[L].raw(u))
        rho.append(F.softplus(self.rho[L - 1].raw(u)))  # rho[k - 1] is rho_k, Wp[k - 1] is W^(z)+_k
        w_out = F.softplus(self.w_raw)
        g = (rho[L - 1] * h) @ w_out + (gam[L] * z) @ self.a
        s1, s2 = F.softplus(self.w1), F.softplus(self.w2)
        out = (s1 * g + 0.5 * s2 * (z * z).sum(-1),)
        if order == 0:
            return out
        # backward recursion: delta_k = dg/dz_k >= 0, e_k = dg/dpre_k
        delta, grad, D = rho[L - 1] * w_out, gam[L] * self.a, [None] * L
        for k in reversed(range(L)):
            e = delta * torch.sigmoid(pre[k])
            D[k] = e * torch.sigmoid(-pre[k])  # delta_k * sigma''(pre_k)
            grad = grad + gam[k] * (e @ self.A[k])
            if k > 0:
                delta = rho[k - 1] * (e @ Wp[k - 1])
        out = out + (s1 * grad + s2 * z,)
        if order == 1:
            return out
        # forward mode: J_k = dpre_k/dz, kept transposed (Jt_k = J_k^T, shape (*, dim, H)), and
        # Hess G = s1 sum_k J_k^T diag(D_k) J_k + s2 I, with s1 folded into the vectors D_k.
        # * k = 0: J_0 = A_0 diag(gamma_0), so the term is diag(gamma_0) M diag(gamma_0) with
        #   M = A_0^T diag(D_0) A_0 = sum_h D_0[h] A_0[h]^T A_0[h]: one matrix product of D_0 with the H
        #   outer products of A_0's rows (parameters only), for all rows at once.
        # * k = 1: J_1 = W^(z)+_1 diag(v) J_0 + A_1 diag(gamma_1), v = rho_1 sigma'(pre_0), so
        #   Jt_1 = diag(gamma_0) (sum_h v[h] A_0[h]^T W^(z)+_1[:, h]^T) + diag(gamma_1) A_1^T: again one
        #   product of v with H parameter matrices (Q).
        # So J_0 is never formed row by row; the (*, dim, H) temporaries from J_1 on and their
        # weighted Gram products (:func:`weighted_gram`) are the cost of this step. Only the lower
        # triangle is exact to rounding (what Cholesky and eigvalsh read); :meth:`hessian` symmetrizes.
        dim, A0, g0 = self.dim, self.A[0], gam[0]
        P0 = (A0[:, :, None] * A0[:, None, :]).flatten(1)  # (H, dim * dim): A_0[h]^T A_0[h]
        hess = (g0[..., :, None] * g0[..., None, :]) * ((s1 * D[0]) @ P0).unflatten(-1, (dim, dim))
        for k in range(1, L):
            v = rho[k - 1] * torch.sigmoid(pre[k - 1])
            if k == 1:
                Q = (A0[:, :, None] * Wp[0].T[:, None, :]).flatten(1)  # (H, dim * H): A_0[h]^T W+[:, h]^T
                M = (v @ Q).unflatten(-1, (dim, self.hidden))
                gram, Jt = gram_of_sum(g0, M, gam[1], self.A[1].T, s1 * D[1])  # Jt_1 and its term
            else:
                Jt = ((Jt * v[..., None, :]) @ Wp[k - 1].T).add_(gam[k][..., :, None] * self.A[k].T)
                gram = weighted_gram(Jt, s1 * D[k])
            hess = hess.add_(gram)
        hess.diagonal(dim1=-2, dim2=-1).add_(s2)
        return out + (hess,)

    def potential(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``G(z; c)``, shape ``(B,)``."""
        self._check_inputs(z, context, "z")
        return self._evaluate(z, context, 0)[0]

    def gradient(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``T(z; c) = grad_z G(z; c)``, shape ``(B, dim)``."""
        self._check_inputs(z, context, "z")
        return self._evaluate(z, context, 1)[1]

    def hessian(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``Hess_z G(z; c)`` = the Jacobian of ``T``, shape ``(B, dim, dim)``, symmetric PD."""
        self._check_inputs(z, context, "z")
        hess = self._evaluate(z, context, 2)[2]
        return 0.5 * (hess + hess.transpose(-1, -2))

    def _logdet(self, hess: torch.Tensor) -> torch.Tensor:
        """``log det Hess G = 2 sum log diag(chol)``. Every squared Cholesky pivot of a matrix
        ``>= s2 I`` is ``>= s2``; where rounding breaks that (float32, extreme weights), fall back
        to the eigenvalues clamped at ``s2``."""
        s2 = F.softplus(self.w2)
        logdet, chol, info = cholesky_logdet(hess)
        piv = chol.diagonal(dim1=-2, dim2=-1)
        bad = (info != 0) | (piv.square() < 0.5 * s2).any(-1)
        if not bad.any():
            return logdet
        eye = torch.eye(self.dim, dtype=hess.dtype, device=hess.device)
        ld_chol = 2.0 * torch.linalg.cholesky(torch.where(bad[..., None, None], eye, hess))
        ld_chol = ld_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        ev = torch.linalg.eigvalsh(torch.where(bad[..., None, None], hess, eye))
        return torch.where(bad, ev.clamp_min(s2).log().sum(-1), ld_chol)

    # a sample axis is processed in slices of about this many entries of the (S, B, dim, hidden)
    # Jacobian temporaries: whole chunks of importance samples would make them hundreds of MB, and
    # the time goes into allocating and streaming them. An amortized map is sliced by images (all
    # the samples of a few context rows), so that what depends on the context alone (the context
    # path and the gates) is computed once per image, not once per slice;
    # by samples only where one image's samples exceed a slice. 2**20 entries (4 MB in float32): the
    # MNIST table's PCP-Map row (hidden 64) computed log p(x) of 100 test images with 500 samples
    # each in 2.67 s against 3.33 s with 2**22 and 3.02 s with 2**18 (one thread, median of 3).
    SLICE_ENTRIES = 2**20

    def _forward(self, z, context):
        if z.dim() == 3 and z.shape[0] * z.shape[1] * self.dim * self.hidden > self.SLICE_ENTRIES:
            S, B = z.shape[:2]
            if context is not None and B > 1:
                n = max(1, self.SLICE_ENTRIES // (S * self.dim * self.hidden))
                parts = [self._forward(zp, cp) for zp, cp in zip(z.split(n, 1), context.split(n))]
                return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
            n = max(1, self.SLICE_ENTRIES // (B * self.dim * self.hidden))
            if n < S:
                parts = [self._forward(part, context) for part in z.split(n)]
                return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        _, T, hess = self._evaluate(z, context, 2)
        return T, self._logdet(hess)

    def _inverse(self, y, context, max_iter: int = 100):
        return self.inverse_newton(y, context, max_iter=max_iter)

    @torch.no_grad()
    def inverse_newton(self, y: torch.Tensor, context: torch.Tensor | None = None, *, max_iter: int = 100,
                       trace: list | None = None):
        """Solve ``min_z G(z; c) - <z, y>`` (strictly convex, minimiser ``T^{-1}(y)``) per sample;
        what :meth:`inverse` runs. Returns ``(z, log|det dT^{-1}/dy|)``.

        The reference code uses L-BFGS (strong Wolfe), which needs only gradients (see
        :meth:`inverse_lbfgs`); here the exact Hessian is already available in closed form, so damped
        Newton (Cholesky solve, Armijo backtracking per sample) converges quadratically. Starts per
        sample at the best of a few guesses; once ``||T(z) - y|| <= max(1e-10, 100 eps) (1 + ||y||)``
        for every sample, takes one more full step. A list passed as ``trace`` receives the largest
        residual ``max_b ||T(z_b) - y_b||`` at every iteration. Not differentiable (runs under ``no_grad``).
        """
        check_inputs("PCPMap", self.dim, self.context_dim, y, context, "y")  # (B, dim) only
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
            raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
        eps = torch.finfo(y.dtype).eps
        tol = max(1e-10, 100 * eps) * (1.0 + y.norm(dim=-1))
        s2 = F.softplus(self.w2)
        # start per sample at the best of 0, y and (y - T(0)) / s2 (exact if g is linear)
        zero = torch.zeros_like(y)
        starts = torch.stack([zero, y, (y - self._evaluate(zero, context, 1)[1]) / s2])
        f0 = torch.stack([self._evaluate(q, context, 0)[0] - (q * y).sum(-1) for q in starts])
        z = starts[torch.nan_to_num(f0, nan=math.inf).argmin(0), torch.arange(y.shape[0], device=y.device)]
        for it in range(max_iter + 1):
            G, T, hess = self._evaluate(z, context, 2)
            r = T - y
            res = r.norm(dim=-1)
            if trace is not None:
                trace.append(res.max().item())
            active = res > tol
            step = -torch.cholesky_solve(r[:, :, None], torch.linalg.cholesky(hess))[:, :, 0]
            if not active.any():  # a last full step polishes z to rounding level
                z = z + step
                _, T, hess = self._evaluate(z, context, 2)
                if trace is not None:
                    trace.append((T - y).norm(dim=-1).max().item())
                return z, -self._logdet(hess)
            if it == max_iter:
                break
            f = G - (z * y).sum(-1)
            slack = 10 * eps * (G.abs() + (z * y).sum(-1).abs())  # rounding noise in f
            slope = (r * step).sum(-1)
            t = torch.where(active, 1.0, 0.0).to(y.dtype)
            for _ in range(50):  # Armijo backtracking, each sample on its own
                z_new = z + t[:, None] * step
                f_new = self._evaluate(z_new, context, 0)[0] - (z_new * y).sum(-1)
                ok = f_new <= f + 1e-4 * t * slope + slack
                if ok.all():
                    break
                t = torch.where(ok, t, 0.5 * t)
            z = z_new
        raise RuntimeError(f"PCPMap.inverse: Newton did not converge in {max_iter} iterations; "
                           f"max residual ||T(z) - y|| = {res.max().item():.3e} (tolerance "
                           f"{tol.max().item():.1e})")

    def inverse_lbfgs(self, y: torch.Tensor, context: torch.Tensor | None = None, *,
                      rtol: float | None = None, max_evals: int = 1000, history_size: int = 20,
                      max_restarts: int = 20, return_info: bool = False, trace: list | None = None):
        """``T^{-1}(y)`` by L-BFGS on ``sum_b [G(z_b; c_b) - <z_b, y_b>]``, the reference code's method
        (Wang et al. 2023, after CP-Flow): it needs gradients only, never a Hessian.

        The objective is a sum of strictly convex functions of separate samples, so its minimiser is
        every sample's ``T^{-1}(y_b)``; L-BFGS (strong-Wolfe line search, ``history_size`` pairs)
        treats the batch as one vector, so the samples share steps. The line search compares values
        of the objective, which are rounded to ``eps |G|``; near the solution a step that reduces the
        residual ``r`` lowers the objective by about ``r^2 / 2 lambda``, so progress stalls near
        ``r ~ sqrt(eps)``: the default ``rtol`` is ``10 sqrt(eps)`` (1.5e-7 in float64, 3.5e-3 in
        float32), where :meth:`inverse` (Newton, with the exact Hessian) reaches ``100 eps``. On a
        stall it restarts from the current point with an empty memory (at most ``max_restarts`` times).

        Stops when every ``||T(z_b) - y_b|| <= rtol (1 + ||y_b||)``; raises RuntimeError when
        ``max_evals`` evaluations (of ``G`` and ``T``) do not get there. Since
        ``Hess G >= softplus(w2) I``, the error in ``z`` is at most ``||T(z) - y|| / softplus(w2)``.
        Returns ``(z, log|det dT^{-1}/dy|)``, and with
        ``return_info=True`` also a dict with ``evaluations`` (of ``G`` and ``T``), ``restarts`` and the
        per-sample ``residual``. A list passed as ``trace`` receives ``max_b ||T(z_b) - y_b||`` at every
        evaluation. Not differentiable (runs under ``no_grad``).
        """
        check_inputs("PCPMap", self.dim, self.context_dim, y, context, "y")  # (B, dim) only
        check_size("max_evals", max_evals)
        check_size("history_size", history_size)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative int, got {max_restarts!r}")
        rtol = 10 * math.sqrt(torch.finfo(y.dtype).eps) if rtol is None else rtol
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0:
            raise ValueError(f"inverse_lbfgs: rtol must be a positive number, got {rtol!r}")
        y = y.detach()
        context = None if context is None else context.detach()
        tol = rtol * (1.0 + y.norm(dim=-1))
        z = y.clone().requires_grad_(True)  # start at y: T is a scaled identity plus a learned part
        evaluations = 0

        def closure():
            nonlocal evaluations
            evaluations += 1
            with torch.no_grad():
                G, T = self._evaluate(z, context, 1)
                z.grad = T - y  # the objective's gradient, in closed form
                if trace is not None:
                    trace.append(z.grad.norm(dim=-1).max().item())
                return (G - (z * y).sum(-1)).sum()

        def residual_now():
            with torch.no_grad():
                return (self._evaluate(z, context, 1)[1] - y).norm(dim=-1)

        # L-BFGS stops when max |gradient entry| <= tolerance_grad; this bound gives every sample
        # ||T(z_b) - y_b|| <= tol_b. tolerance_change = 0 leaves that test (or a stall) in charge.
        residual, restarts = residual_now(), -1
        while not (residual <= tol).all() and evaluations < max_evals and restarts < max_restarts:
            restarts += 1
            optimizer = torch.optim.LBFGS([z], lr=1.0, max_iter=max_evals - evaluations,
                                          max_eval=max_evals - evaluations,
                                          tolerance_grad=float(tol.min()) / math.sqrt(self.dim),
                                          tolerance_change=0.0, history_size=history_size,
                                          line_search_fn="strong_wolfe")
            optimizer.step(closure)
            previous, residual = residual, residual_now()
            if not residual.max() < previous.max():  # no progress since the last restart
                break
        with torch.no_grad():
            z = z.detach()
            _, T, hess = self._evaluate(z, context, 2)
            residual = (T - y).norm(dim=-1)
            if not (residual <= tol).all():
                raise RuntimeError(
                    f"PCPMap.inverse_lbfgs: no convergence ({evaluations} evaluations, {max(restarts, 0)} "
                    f"restarts); max residual ||T(z) - y|| = {residual.max().item():.3e} (tolerance "
                    f"{tol.max().item():.1e}); raise max_evals or rtol, or use inverse() (Newton)")
            logdet = -self._logdet(hess)
        if return_info:
            return z, logdet, {"evaluations": evaluations, "restarts": max(restarts, 0), "residual": residual}
        return z, logdet
