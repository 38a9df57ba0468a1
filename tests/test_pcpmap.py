"""Tests of PCPMap: closed-form gradient / Hessian / log-determinant against autograd, convexity,
Newton inverse, float32 robustness. Comparisons run at perturbed parameters (noise added to every
parameter after construction), away from the initialisation where wrong formulas can look right."""

import pytest
import torch
import torch.nn.functional as F

from flowlib.flows.pcpmap import PCPMap

# (dim, context_dim, n_layers)
CONFIGS = [(1, None, 3), (2, 3, 2), (5, None, 1), (5, 3, 3), (2, None, 2)]
IDS = [f"d{d}-c{c}-L{L}" for d, c, L in CONFIGS]


def make(dim, context_dim, n_layers, dtype=torch.float64, seed=0, std=0.4, batch=6):
    torch.manual_seed(seed)
    m = PCPMap(dim, context_dim=context_dim, hidden=8, n_layers=n_layers).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(std * torch.randn_like(p))
    z = 1.5 * torch.randn(batch, dim, dtype=dtype)
    c = None if context_dim is None else torch.randn(batch, context_dim, dtype=dtype)
    return m, z, c


def per_sample(m, c):
    """Single-sample potential ``(z_i, c_i) -> G`` for torch.func transforms."""
    if c is None:
        return lambda zi, ci: m.potential(zi[None])[0]
    return lambda zi, ci: m.potential(zi[None], ci[None])[0]


def autograd_jacobian_of_forward(m, z, c):
    """Per-sample Jacobians of forward's output (flows are per sample, so blocks are independent)."""
    jac = torch.autograd.functional.jacobian(lambda x: m(x, c)[0].sum(0), z, vectorize=True)
    return jac.permute(1, 0, 2)  # (B, dim_out, dim_in)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradient_matches_autograd(cfg):
    m, z, c = make(*cfg)
    zr = z.clone().requires_grad_(True)
    ref = torch.autograd.grad(m.potential(zr, c).sum(), zr)[0]
    torch.testing.assert_close(m.gradient(z, c), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m(z, c)[0], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_hessian_matches_autograd_symmetric_pd(cfg):
    m, z, c = make(*cfg)
    cc = torch.zeros(z.shape[0], 1, dtype=z.dtype) if c is None else c
    ref = torch.func.vmap(torch.func.hessian(per_sample(m, c)))(z, cc)
    hess = m.hessian(z, c)
    torch.testing.assert_close(hess, ref, rtol=1e-9, atol=1e-10)
    # the Jacobian of T (from autograd on forward) is symmetric: T is a gradient field
    jac = autograd_jacobian_of_forward(m, z, c)
    torch.testing.assert_close(jac, jac.transpose(1, 2), rtol=1e-10, atol=1e-10)
    # Hess G = softplus(w1) Hess g + softplus(w2) I >= softplus(w2) I
    s2 = F.softplus(m.w2).item()
    assert (torch.linalg.eigvalsh(hess) >= s2 * (1 - 1e-10)).all()
    with torch.no_grad():  # without the quadratic term: Hess g alone is PSD
        m.w2.fill_(-40.0)
    assert (torch.linalg.eigvalsh(m.hessian(z, c)) > -1e-12).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_logdet_matches_slogdet_of_autograd_jacobian(cfg):
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        m, z, c = make(*cfg, dtype=dtype)
        _, logdet = m(z, c)
        assert logdet.shape == (z.shape[0],)
        ref = torch.linalg.slogdet(autograd_jacobian_of_forward(m, z, c))
        assert (ref.sign > 0).all()
        torch.testing.assert_close(logdet, ref.logabsdet, rtol=tol, atol=tol)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_taylor(cfg):
    """G(z + e v) - G(z) - e <T, v> = O(e^2) (ratio 4 as e halves; 2 with a wrong gradient);
    subtracting e^2/2 v^T H v leaves O(e^3) (ratio 8, or 16 where the third derivative along v
    vanishes; 4 with a wrong Hessian)."""
    m, z, c = make(*cfg)
    v = torch.randn_like(z)
    G0, T, H = m.potential(z, c), m.gradient(z, c), m.hessian(z, c)
    vHv = torch.einsum("bi,bij,bj->b", v, H, v)
    eps = 1e-2 * 0.5 ** torch.arange(4, dtype=z.dtype)
    r1, r2 = [], []
    for e in eps:
        Ge = m.potential(z + e * v, c)
        r1.append((Ge - G0 - e * (T * v).sum(-1)).abs())
        r2.append((Ge - G0 - e * (T * v).sum(-1) - 0.5 * e**2 * vHv).abs())
    r1, r2 = torch.stack(r1), torch.stack(r2)
    ratio1, ratio2 = r1[-2] / r1[-1], r2[-2] / r2[-1]
    assert ((ratio1 > 3.6) & (ratio1 < 4.4)).all(), ratio1
    assert (ratio2 > 7.0).all(), ratio2


@pytest.mark.parametrize("raw", [None, -8.0])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_convex_along_lines(cfg, raw):
    """g (quadratic term switched off) has non-negative second differences along random lines,
    also with large negative raw weights for the non-negative matrices and big gates / A."""
    m, z, c = make(*cfg, std=0.5)
    with torch.no_grad():
        m.w2.fill_(-40.0)
        if raw is not None:
            for W in list(m.W_raw) + [m.w_raw]:
                W.add_(raw)
            for A in m.A:
                A.mul_(5.0)
    t = torch.linspace(-4.0, 4.0, 161, dtype=z.dtype)
    v = torch.randn_like(z)
    pts = (z[:, None, :] + t[None, :, None] * v[:, None, :]).reshape(-1, z.shape[1])
    cc = None if c is None else c.repeat_interleave(len(t), 0)
    G = m.potential(pts, cc).reshape(z.shape[0], len(t))
    d2 = G[:, 2:] - 2 * G[:, 1:-1] + G[:, :-2]
    assert (d2 >= -1e-12 * (1 + G.abs().amax(1, keepdim=True))).all()
    assert d2.amax() > 0  # not a degenerate (linear) test


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_inverse_round_trip(cfg):
    for dtype, tol in [(torch.float64, 1e-8), (torch.float32, 1e-4)]:
        m, z, c = make(*cfg, dtype=dtype, batch=16)
        z = 2.0 * z
        y, logdet = m(z, c)
        z_back, logdet_inv = m.inverse(y, c)
        torch.testing.assert_close(z_back, z, rtol=tol, atol=tol)
        torch.testing.assert_close(logdet_inv, -logdet, rtol=tol, atol=tol)


@pytest.mark.parametrize("cfg", [(2, None, 2), (5, 3, 2)], ids=["static", "amortized"])
def test_inverse_hard_case(cfg):
    """Weak quadratic term, strong network, far targets: a full Newton step diverges here, the
    Armijo line search makes it converge."""
    m, z, c = make(*cfg, std=0.5, batch=32)
    with torch.no_grad():
        m.w2.fill_(-6.0)
        m.w1.fill_(3.0)
        for A in m.A:
            A.mul_(4.0)
    z = 2.0 * z
    y, _ = m(z, c)
    z_back, _ = m.inverse(y, c)
    assert ((m.gradient(z_back, c) - y).norm(dim=-1) <= 1e-10 * (1 + y.norm(dim=-1))).all()
    torch.testing.assert_close(z_back, z, rtol=1e-5, atol=1e-5)


def test_inverse_raises_when_not_converged():
    m, z, c = make(5, 3, 2)
    y, _ = m(z, c)
    with pytest.raises(RuntimeError, match="did not converge.*residual"):
        m._inverse(y, c, max_iter=0)


def test_per_sample_independence():
    m, z, c = make(5, 3, 2)
    T, ld = m(z, c)
    for i in range(z.shape[0]):
        Ti, ldi = m(z[i:i + 1], c[i:i + 1])
        torch.testing.assert_close(Ti[0], T[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ldi[0], ld[i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("context_dim", [None, 3])
@pytest.mark.parametrize("mode", ["+", "-", "+-"])
def test_float32_big_parameters_finite(context_dim, mode):
    torch.manual_seed(1)
    for dim in [1, 2, 5]:
        m = PCPMap(dim, context_dim=context_dim)
        with torch.no_grad():
            for p in m.parameters():
                sign = {"+": 1.0, "-": -1.0}.get(mode)
                p.copy_(20.0 * (sign if sign is not None else torch.randint(0, 2, p.shape) * 2.0 - 1.0))
        z = (3.0 * torch.randn(32, dim)).requires_grad_(True)
        c = None if context_dim is None else torch.randn(32, context_dim)
        y, logdet = m(z, c)
        G = m.potential(z, c)
        for out in (y, logdet, G, m.hessian(z, c)):
            assert torch.isfinite(out).all()
        (y.sum() + logdet.sum() + G.sum()).backward()
        assert torch.isfinite(z.grad).all()
        for name, p in m.named_parameters():
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("context_dim", [None, 3])
def test_parameter_gradients_flow(context_dim):
    m, z, c = make(2, context_dim, 2, dtype=torch.float32)
    y, logdet = m(z, c)
    loss = (y**2).sum() - logdet.sum() + m.potential(z, c).sum()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bad_inputs_raise():
    m = PCPMap(3, hidden=4)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        m(torch.randn(2, 4))
    with pytest.raises(ValueError, match="static"):
        m.gradient(torch.randn(2, 3), torch.randn(2, 2))
    ma = PCPMap(3, context_dim=2, hidden=4)
    for fn in (ma, ma.inverse, ma.potential, ma.gradient, ma.hessian):
        with pytest.raises(ValueError, match="needs a context"):
            fn(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"context of shape \(2, 2\)"):
        ma(torch.randn(2, 3), torch.randn(2, 5))
    for kwargs in ({"hidden": 0}, {"n_layers": 1.5}, {"context_hidden": 4}):
        with pytest.raises(ValueError):
            PCPMap(3, **kwargs)
    with pytest.raises(ValueError, match="dim"):
        PCPMap(0)


@pytest.mark.parametrize("context_dim", [None, 3])
@pytest.mark.parametrize("slice_entries", [10**9, 7 * 5 * 8, 5 * 8])
def test_sliced_sample_axis_equals_one_pass(context_dim, slice_entries):
    """A long sample axis is evaluated in slices (by images for an amortized map, by samples where
    one image's samples exceed a slice): the same values and gradients as in one pass."""
    m, _, c = make(5, context_dim, 2, batch=4)
    z = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=True)
    whole_T, whole_ld = m(z, c)
    g_whole = torch.autograd.grad((whole_T.sin().sum() + whole_ld.sum()), [z, *m.parameters()])
    m.SLICE_ENTRIES = slice_entries
    T, ld = m(z, c)
    g = torch.autograd.grad((T.sin().sum() + ld.sum()), [z, *m.parameters()])
    assert T.shape == (7, 4, 5) and ld.shape == (7, 4)
    torch.testing.assert_close(T, whole_T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, whole_ld, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
