"""PCPMap's two inverses: damped Newton (``inverse`` / ``inverse_newton``) and L-BFGS
(``inverse_lbfgs``, the reference code's method), at perturbed parameters."""

import pytest
import torch
import torch.nn.functional as F
from test_pcpmap import make as make_case

CONFIGS = [(1, None, 3), (2, 3, 2), (5, None, 1), (5, 3, 3)]
IDS = [f"d{d}-c{c}-L{L}" for d, c, L in CONFIGS]


def make(dim, context_dim, n_layers, dtype=torch.float64, batch=32):
    """A perturbed PCPMap (as in test_pcpmap), inputs ``z`` spread wider, and ``(y, logdet) = T(z)``."""
    m, z, c = make_case(dim, context_dim, n_layers, dtype=dtype, batch=batch)
    z = 2.0 * z
    with torch.no_grad():
        y, logdet = m(z, c)
    return m, z, c, y, logdet


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_lbfgs_inverse_meets_its_tolerance_and_the_strong_convexity_bound(cfg, dtype):
    m, z, c, y, logdet = make(*cfg, dtype=dtype)
    z_back, logdet_inv, info = m.inverse_lbfgs(y, c, return_info=True)
    rtol = 10 * torch.finfo(dtype).eps ** 0.5
    with torch.no_grad():
        residual = (m.gradient(z_back, c) - y).norm(dim=-1)
        s2 = F.softplus(m.w2)
    torch.testing.assert_close(residual, info["residual"])
    assert (residual <= rtol * (1 + y.norm(dim=-1))).all()
    # strong convexity: ||z - T^{-1}(y)|| <= ||T(z) - y|| / softplus(w2)  (slack for rounding)
    assert ((z_back - z).norm(dim=-1) <= residual / s2 * 1.01 + 100 * torch.finfo(dtype).eps * 10).all()
    torch.testing.assert_close(logdet_inv, -logdet, rtol=1e-3 if dtype == torch.float32 else 1e-6, atol=1e-3)
    assert info["evaluations"] >= 1 and info["restarts"] >= 0


def test_lbfgs_and_newton_agree_and_newton_is_more_accurate():
    m, z, c, y, _ = make(5, 3, 2, batch=64)
    z_l, _ = m.inverse_lbfgs(y, c)
    z_n, _ = m.inverse_newton(y, c)
    with torch.no_grad():
        r_l = (m.gradient(z_l, c) - y).norm(dim=-1).max()
        r_n = (m.gradient(z_n, c) - y).norm(dim=-1).max()
    assert r_n < 1e-11 < r_l  # L-BFGS stalls above machine precision (line search on values)
    torch.testing.assert_close(z_l, z_n, rtol=0, atol=1e-5)
    torch.testing.assert_close(m.inverse(y, c)[0], z_n, rtol=0, atol=0)  # inverse() is Newton


def test_traces_record_the_residual():
    m, z, c, y, _ = make(2, 3, 2)
    newton, lbfgs = [], []
    m.inverse_newton(y, c, trace=newton)
    _, _, info = m.inverse_lbfgs(y, c, trace=lbfgs, return_info=True)
    assert len(lbfgs) == info["evaluations"]
    assert newton[-1] < 1e-12 < newton[0] and lbfgs[-1] < lbfgs[0]


def test_lbfgs_raises_when_the_budget_is_too_small():
    m, z, c, y, _ = make(5, 3, 2)
    with pytest.raises(RuntimeError, match="no convergence.*residual"):
        m.inverse_lbfgs(y, c, max_evals=2)
    with pytest.raises(RuntimeError, match="no convergence"):
        m.inverse_lbfgs(y, c, rtol=1e-15)  # below what a line search on function values can reach


def test_solvers_reject_bad_arguments():
    m, z, c, y, _ = make(2, 3, 2)
    for kwargs in ({"rtol": 0.0}, {"rtol": -1.0}, {"rtol": True}, {"max_evals": 0}, {"max_restarts": -1},
                   {"history_size": 0}):
        with pytest.raises(ValueError):
            m.inverse_lbfgs(y, c, **kwargs)
    with pytest.raises(ValueError, match="needs a context"):
        m.inverse_lbfgs(y)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        m.inverse_newton(y[:, :1], c)
    with pytest.raises(ValueError, match="max_iter"):
        m.inverse_newton(y, c, max_iter=-1)
