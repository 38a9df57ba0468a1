"""``flowlib.flows.spd``: the weighted Gram product and the Cholesky log-determinant as autograd
nodes with hand-written backward passes, against the plain PyTorch operations they replace, and the
compiled kernel (``kernels/spd.c``) that factors and inverts on the CPU, against LAPACK's."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import count_kernel_calls, no_kernel_loaded

from flowlib.flows import kernels
from flowlib.flows import spd as spd_module
from flowlib.flows.spd import KERNEL_MAX_SIZE, cholesky_logdet, weighted_gram

BATCHES = [(), (5,), (3, 4)]


def _inputs(batch, n=4, m=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(*batch, n, m, generator=g, dtype=torch.float64)
    d = torch.rand(*batch, m, generator=g, dtype=torch.float64) + 0.1
    return J, d


def _spd(batch, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, n, 2 * n, generator=g, dtype=torch.float64)
    return X @ X.transpose(-1, -2) / (2 * n) + 0.5 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("batch", BATCHES)
def test_weighted_gram_value_and_gradients_match_plain_autograd(batch):
    J, d = _inputs(batch)
    G = torch.randn(*batch, J.shape[-2], J.shape[-2], dtype=torch.float64)  # not symmetric
    grads = []
    for fn in (weighted_gram, lambda J, d: (J * d[..., None, :]) @ J.transpose(-1, -2)):
        Jl, dl = J.clone().requires_grad_(), d.clone().requires_grad_()
        W = fn(Jl, dl)
        grads.append((W.detach(), *torch.autograd.grad((W * G).sum(), (Jl, dl))))
    for new, old in zip(*grads):
        torch.testing.assert_close(new, old, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("batch", BATCHES[1:])
def test_weighted_gram_gradcheck_and_second_derivatives(batch):
    J, d = _inputs(batch, n=3, m=4)
    J.requires_grad_()
    d.requires_grad_()
    assert torch.autograd.gradcheck(weighted_gram, (J, d))
    assert torch.autograd.gradgradcheck(weighted_gram, (J, d))


def test_weighted_gram_one_input_needing_a_gradient():
    J, d = _inputs((5,))
    Jl = J.clone().requires_grad_()
    (g,) = torch.autograd.grad(weighted_gram(Jl, d).sum(), Jl)
    Jr = J.clone().requires_grad_()
    (r,) = torch.autograd.grad(((Jr * d[..., None, :]) @ Jr.transpose(-1, -2)).sum(), Jr)
    torch.testing.assert_close(g, r, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("J_shape, d_shape", [((5, 4, 6), (6,)), ((5, 4, 6), (5, 4)), ((5, 4, 6), (1, 6)),
                                              ((4, 6), (5, 6))])
def test_weighted_gram_refuses_other_shapes(J_shape, d_shape):
    with pytest.raises(ValueError, match=r"J of shape \(\.\.\., n, m\) and d of shape \(\.\.\., m\)"):
        weighted_gram(torch.randn(J_shape), torch.randn(d_shape))


@pytest.mark.parametrize("batch", BATCHES)
def test_cholesky_logdet_matches_slogdet_and_cholesky_ex(batch):
    A = _spd(batch)
    logdet, L, info = cholesky_logdet(A)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(A)[1], rtol=1e-12, atol=1e-12)
    L_ref, info_ref = torch.linalg.cholesky_ex(A)
    # equal to rounding: on the CPU the compiled kernel factors, not LAPACK (tests below)
    torch.testing.assert_close(L, L_ref, rtol=1e-13, atol=1e-13)
    assert torch.equal(info, info_ref) and info.dtype == info_ref.dtype


@pytest.mark.parametrize("batch", BATCHES)
def test_cholesky_logdet_gradient_is_the_inverse_as_torch_cholesky_gives_it(batch):
    """The gradient is ``A^{-1}`` (Jacobi's formula), symmetric; it equals the gradient through
    ``torch.linalg.cholesky`` also for an input whose upper triangle is not the mirror of the lower
    (what Cholesky reads is the lower triangle; both spread the gradient over both triangles)."""
    A = _spd(batch)
    A_off = A + torch.triu(torch.full_like(A, 0.3), diagonal=1)  # upper triangle not read
    for X in (A, A_off):
        Xl = X.clone().requires_grad_()
        (g,) = torch.autograd.grad(cholesky_logdet(Xl)[0].sum(), Xl)
        Xr = X.clone().requires_grad_()
        L = torch.linalg.cholesky(Xr)
        (r,) = torch.autograd.grad(2 * L.diagonal(dim1=-2, dim2=-1).log().sum(), Xr)
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, torch.linalg.inv(A), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cholesky_logdet(A_off)[0], cholesky_logdet(A)[0], rtol=0, atol=0)


def test_cholesky_logdet_gradcheck_and_second_derivatives():
    A = _spd((3,), n=4).requires_grad_()

    def logdet(A):  # symmetric perturbations: gradcheck moves single entries
        return cholesky_logdet(0.5 * (A + A.transpose(-1, -2)))[0]

    assert torch.autograd.gradcheck(logdet, (A,))
    assert torch.autograd.gradgradcheck(logdet, (A,))


def test_cholesky_logdet_flags_what_is_not_positive_definite():
    A = _spd((3,))
    A[1] = -A[1]
    logdet, L, info = cholesky_logdet(A.requires_grad_())
    assert info.tolist()[0] == 0 and info.tolist()[1] != 0 and info.tolist()[2] == 0


def test_plain_operations_inside_torch_func():
    """Inside ``torch.func`` transforms both functions run as plain operations (no custom nodes)."""
    J, d = _inputs((), n=3, m=4)
    jac = torch.func.jacrev(weighted_gram)(J, d)
    ref = torch.func.jacrev(lambda J, d: (J * d[..., None, :]) @ J.transpose(-1, -2))(J, d)
    torch.testing.assert_close(jac, ref, rtol=1e-13, atol=1e-13)
    A = _spd(())
    torch.testing.assert_close(torch.func.grad(lambda A: cholesky_logdet(A)[0])(A), torch.linalg.inv(A),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the compiled kernel

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A kernel cache of this module's own, empty at first: the kernel is built once, into it."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def fresh(monkeypatch, cache):
    """That cache, and no kernel loaded or bound yet in this process."""
    return no_kernel_loaded(monkeypatch, cache)


@pytest.fixture
def kernel_calls(fresh, monkeypatch):
    """A list that receives "forward" or "backward" at every call of a kernel bound from now on."""
    return count_kernel_calls(monkeypatch)


def _conditioned(N, n, dtype, seed=0):
    """SPD matrices with eigenvalues in [0.5, 2.5]: float32 rounding stays near its epsilon."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(N, n, n, generator=g, dtype=torch.float64))[0]
    ev = 0.5 + 2 * torch.rand(N, n, generator=g, dtype=torch.float64)
    return ((Q * ev[:, None, :]) @ Q.transpose(-1, -2)).to(dtype)


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N, n", [(1, 1), (7, 3), (8, 8), (9, 40), (130, 40), (3, KERNEL_MAX_SIZE)])
def test_the_kernel_factors_and_inverts_as_lapack_does(fresh, dtype, N, n):
    """Batches of every size against a group of eight (a last group padded), both dtypes: the
    factor, log det A, info, and g A^{-1}, to rounding."""
    A = _conditioned(N, n, dtype)
    A_in = A + torch.triu(torch.full_like(A, 7.0), diagonal=1)  # the upper triangle is not read
    with torch.no_grad():
        logdet, L, info = spd_module._factor(A_in)
    L_ref, info_ref = torch.linalg.cholesky_ex(A)
    torch.testing.assert_close(L, L_ref, **TOL[dtype])
    torch.testing.assert_close(logdet, torch.linalg.slogdet(A.double())[1].to(dtype), **TOL[dtype])
    assert torch.equal(info, info_ref) and info.dtype == torch.int32
    g = torch.linspace(-2, 3, N, dtype=dtype)
    inv = spd_module._inverse_times(L, g)
    torch.testing.assert_close(inv, torch.cholesky_inverse(L_ref) * g[:, None, None], **TOL[dtype])
    assert torch.equal(inv, inv.transpose(-1, -2))
    assert {p.name.split("-")[0] for p in fresh.iterdir()} == {"spd"}


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_reports_the_first_pivot_that_is_not_positive_as_lapack(fresh, dtype):
    A = _conditioned(11, 6, dtype)
    A[2, 3, 3] = -1.0  # pivot 4 (one-based) negative: info 4
    A[5] = A[5] - 3 * torch.eye(6, dtype=dtype)  # indefinite
    A[9, 0, 0] = float("nan")
    A[10] = 0.0  # zero pivot at once
    with torch.no_grad():
        logdet, L, info = spd_module._factor(A)
    info_ref = torch.linalg.cholesky_ex(A)[1]
    assert info.tolist() == info_ref.tolist() and info[2] == 4 and info[9] == 1 and info[10] == 1
    ok = info == 0
    torch.testing.assert_close(logdet[ok], torch.linalg.slogdet(A[ok])[1], **TOL[dtype])


@needs_cc
def test_the_node_uses_the_kernel_exactly_where_it_applies(kernel_calls, monkeypatch):
    calls = kernel_calls

    def grad_of_logdet(A):
        A = A.clone().requires_grad_()
        return torch.autograd.grad(cholesky_logdet(A)[0].sum(), A)[0]

    A = _conditioned(5, 4, torch.float64)
    torch.testing.assert_close(grad_of_logdet(A), torch.linalg.inv(A), **TOL[torch.float64])
    assert calls == ["forward", "backward"]
    calls.clear()
    big = _conditioned(2, KERNEL_MAX_SIZE + 1, torch.float64)  # LAPACK's blocked code is faster there
    torch.testing.assert_close(grad_of_logdet(big), torch.linalg.inv(big), **TOL[torch.float64])
    with torch.no_grad():
        cholesky_logdet(A.float())  # no gradient: the kernel still factors
    assert calls == ["forward"]
    calls.clear()
    # a backward pass that is itself differentiated, and torch.func, take plain PyTorch operations
    Al = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(cholesky_logdet(Al)[0].sum(), Al, create_graph=True)
    torch.autograd.grad(g.sum(), Al)
    torch.func.grad(lambda A: cholesky_logdet(A)[0].sum())(A)
    assert calls == ["forward"]  # the node's forward only; its backward differentiated plain operations
    calls.clear()
    monkeypatch.setenv("FLOWLIB_KERNELS", "0")
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels.Kernel, "_bound", {})
    torch.testing.assert_close(grad_of_logdet(A), torch.linalg.inv(A), **TOL[torch.float64])
    assert calls == []


# ---------------------------------------------------------------- gram_of_sum (PCP-Map's J_1 term)

def _sum_inputs(g_shape, batch, n=3, H=5, seed=2):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return r(*g_shape, n), r(*batch, n, H), r(*g_shape, n), r(n, H), torch.rand(*batch, H, generator=gen,
                                                                                   dtype=torch.float64)


def _plain_sum(g, M, f, B, d):
    J = g[..., None] * M + f[..., None] * B
    return (J * d[..., None, :]) @ J.transpose(-1, -2), J


SUM_SHAPES = [((), (4,)), ((4,), (4,)), ((4,), (2, 4)), ((2, 4), (2, 4))]  # g's batch, M's batch


@needs_cc
@pytest.mark.parametrize("g_batch, batch", SUM_SHAPES)
@pytest.mark.parametrize("use_J", [False, True])
def test_gram_of_sum_value_and_gradients_match_plain_autograd(kernel_calls, g_batch, batch, use_J):
    """The kernel's node against autograd through the plain operations: ``g`` and ``f`` shared by all
    matrices, by the samples of a row, or one a matrix; the loss through ``W`` alone, or through
    ``J`` too (what a third layer's Jacobian would take from it)."""
    inputs = _sum_inputs(g_batch, batch)
    weights = [torch.randn(*batch, 3, 3, dtype=torch.float64), torch.randn(*batch, 3, 5, dtype=torch.float64)]
    results = []
    for fn in (spd_module.gram_of_sum, _plain_sum):
        leaves = [t.clone().requires_grad_() for t in inputs]
        W, J = fn(*leaves)
        loss = (W * weights[0]).sum() + ((J * weights[1]).sum() if use_J else 0)
        results.append((W.detach(), J.detach(), *torch.autograd.grad(loss, leaves)))
    for new, old in zip(*results):
        torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-12)
    assert kernel_calls.count("backward") == 1  # the kernel's backward ran


@needs_cc
def test_gram_of_sum_gradcheck_second_derivatives_and_torch_func(fresh):
    inputs = [t.requires_grad_() for t in _sum_inputs((2,), (3, 2), n=2, H=3)]
    assert torch.autograd.gradcheck(spd_module.gram_of_sum, inputs)
    assert torch.autograd.gradgradcheck(spd_module.gram_of_sum, inputs)
    plain = [t.detach() for t in inputs]
    jac = torch.func.jacrev(lambda M: spd_module.gram_of_sum(plain[0], M, *plain[2:])[0])(plain[1])
    ref = torch.func.jacrev(lambda M: _plain_sum(plain[0], M, *plain[2:])[0])(plain[1])
    torch.testing.assert_close(jac, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("change", ["g", "f", "B", "d"])
def test_gram_of_sum_refuses_other_shapes(change):
    g, M, f, B, d = _sum_inputs((4,), (2, 4))
    bad = {"g": dict(g=g[0]), "f": dict(f=f[:2]), "B": dict(B=B.T), "d": dict(d=d[0])}[change]
    args = dict(g=g, M=M, f=f, B=B, d=d) | bad
    with pytest.raises(ValueError, match=r"gram_of_sum expects M \(\.\.\., n, H\), d \(\.\.\., H\)"):
        spd_module.gram_of_sum(**args)
