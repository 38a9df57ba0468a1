"""``flowlib.flows.spd``: the weighted Gram product and the Cholesky log-determinant as autograd
nodes with hand-written backward passes, against the plain PyTorch operations they replace."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows.spd import cholesky_logdet, weighted_gram

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
    assert torch.equal(L, L_ref) and torch.equal(info, info_ref)


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
