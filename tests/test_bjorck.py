"""The Bjorck orthogonalization's hand-written backward pass (``flowlib/flows/bjorck.py``): the same
``Q`` as the plain loop, the gradient autograd takes through that loop, and gradcheck."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import Sylvester
from flowlib.flows.bjorck import _Bjorck, _iterate, orthogonalize


def _ill_conditioned(shape, condition, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*shape, dtype=dtype, generator=g)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    s = torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), shape[-1], dtype=dtype)
    return U @ torch.diag_embed(s) @ Vh


def _nodes(t):
    """The names of the autograd nodes ``t`` was computed through."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def _autograd_through_the_loop(A):
    Q0 = A / torch.linalg.matrix_norm(A, keepdim=True)
    return _iterate(Q0.reshape(-1, *A.shape[-2:]), 100).view(A.shape)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,condition", [((7, 4), 1.0), ((16, 7, 4), 10.0), ((3, 2, 40, 20), 100.0),
                                             ((5, 6, 6), 1e3)])
def test_same_q_and_the_gradient_autograd_takes_through_the_loop(dtype, shape, condition):
    A = _ill_conditioned(shape, condition, dtype, seed=len(shape)).requires_grad_()
    P = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    Q = orthogonalize(A)
    assert "_BjorckBackward" in _nodes(Q)  # the hand-written pass
    (grad,) = torch.autograd.grad((Q * P).sum(), A)
    Q_loop = _autograd_through_the_loop(A)
    assert "_BjorckBackward" not in _nodes(Q_loop) and "BaddbmmBackward0" in _nodes(Q_loop)
    (grad_loop,) = torch.autograd.grad((Q_loop * P).sum(), A)
    assert torch.equal(Q, Q_loop)  # the forward pass is the same operations
    tol = {torch.float64: 1e-12, torch.float32: 2e-5}[dtype]
    torch.testing.assert_close(grad, grad_loop, rtol=0, atol=tol * grad_loop.abs().max().item())


def test_gradcheck_at_random_and_ill_conditioned_inputs():
    A = torch.randn(3, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(orthogonalize, (A.requires_grad_(),))
    B = _ill_conditioned((2, 5, 5), 1e3, torch.float64, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(orthogonalize, (B,), atol=1e-6)


def test_without_a_gradient_no_node_and_the_same_values():
    A = torch.randn(4, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        Q = orthogonalize(A.clone().requires_grad_())
    assert Q.grad_fn is None and torch.equal(Q, orthogonalize(A))


def test_second_derivatives_equal_those_through_the_loop():
    A = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    P = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    hessians = []
    for f in (orthogonalize, _autograd_through_the_loop):
        (g,) = torch.autograd.grad((f(A) * P).sum(), A, create_graph=True)
        hessians.append(torch.autograd.grad(g.square().sum(), A)[0])
    torch.testing.assert_close(hessians[0], hessians[1], rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradgradcheck(orthogonalize, (A,))


def test_the_orthogonal_sylvester_flow_trains_through_it():
    torch.manual_seed(0)
    flow = Sylvester(6, context_dim=5, variant="orthogonal", M=3).double()
    z, h = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    calls = []
    original = _Bjorck.backward

    def counting(ctx, P):
        calls.append(P.shape)
        return original(ctx, P)

    _Bjorck.backward = staticmethod(counting)
    try:
        zK, logdet = flow(z, h)
        (zK.square().sum() - logdet.sum()).backward()
    finally:
        _Bjorck.backward = staticmethod(original)
    assert calls == [torch.Size([4, 6, 3])]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_start_scales_every_singular_value_alike_to_at_most_sqrt_1_5_and_saves_steps(dtype):
    from flowlib.flows import bjorck

    g = torch.Generator().manual_seed(5)
    A = torch.cat([torch.randn(64, 40, 20, dtype=dtype, generator=g),
                   _ill_conditioned((8, 40, 20), 1e3, dtype, seed=6)])
    Q0 = A / torch.linalg.matrix_norm(A, keepdim=True)
    eps, eye = torch.finfo(dtype).eps, torch.eye(20, dtype=dtype)
    Q, gap, c = bjorck._start(Q0, eye, scale=True)
    assert torch.equal(Q, Q0 * c) and c.shape == (72, 1, 1)
    torch.testing.assert_close(gap, eye - Q.transpose(-1, -2) @ Q, rtol=0, atol=100 * eps)
    s0, s = torch.linalg.svdvals(Q0), torch.linalg.svdvals(Q)
    assert (c >= 1).all() and (s[:, 0] <= 1.5**0.5 * (1 + 10 * eps)).all()
    torch.testing.assert_close(s, s0 * c[:, 0], rtol=100 * eps, atol=100 * eps)
    # the Gaussian matrices' largest singular value comes up from about 0.36 to about 0.9 (the
    # bound is about 1.8 times the largest eigenvalue), so every singular value is 2.5 times larger
    assert (s0[:64, 0] < 0.45).all() and (s[:64, 0] > 0.85).all() and (c[:64] > 2).all()

    def steps(Q0, scale):
        keep: list = []
        bjorck._iterate(Q0, 1000, keep, scale)
        return len(keep) - 1, keep[0]  # c, then the pairs (Q_k, G_k)

    scaled, c_kept = steps(Q0[:64], True)
    assert torch.equal(c_kept, c[:64])
    assert scaled <= steps(Q0[:64], False)[0] - 2  # the same loop from Q0 itself
