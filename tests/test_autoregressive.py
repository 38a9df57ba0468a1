"""MADE and IAF: triangular Jacobians under the variable order, the context reaching
every output, the log-determinant as the sum of log-scales."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import IAF, MADE, Reverse, Sequential
from flowlib.flows.testing import perturb_
from flowlib.twod.jacobian import batch_jacobian

ORDERS = {"natural": lambda d: torch.arange(1, d + 1), "random": lambda d: torch.randperm(d) + 1}


def _made_jacobians(made, z, context):
    """d output / d z, one (n_outputs, D, D) stack per sample."""

    def f(x):
        return torch.stack(made(x, context), dim=1)  # (B, n_outputs, D)

    full = torch.autograd.functional.jacobian(f, z)  # (B, n, D, B, D)
    idx = torch.arange(z.shape[0])
    return full[idx, :, :, idx, :]  # (B, n, D, D)


@pytest.mark.parametrize("activation", ["elu", "relu"])
@pytest.mark.parametrize("order_name", list(ORDERS))
@pytest.mark.parametrize("context_dim", [None, 2])
@pytest.mark.parametrize("dim", [1, 2, 6])
def test_made_is_strictly_triangular_under_its_order(order_name, context_dim, dim, activation):
    torch.manual_seed(0)
    order = ORDERS[order_name](dim)
    made = perturb_(
        MADE(dim, context_dim=context_dim, hidden=12, n_layers=2, n_outputs=3, order=order,
             activation=activation)
    ).double()
    z = torch.randn(3, dim, dtype=torch.float64)
    context = None if context_dim is None else torch.randn(3, context_dim, dtype=torch.float64)
    J = _made_jacobians(made, z, context)
    allowed = order[:, None] > order[None, :]  # output j may depend on input i iff order[i] < order[j]
    assert (J[..., ~allowed] == 0).all(), "an output depends on itself or on a later variable"
    if dim > 1:  # and it really uses what it may use (no dead mask)
        assert (J.abs().sum(dim=(0, 1))[allowed] > 0).all()


def test_activation_is_elu_by_default_relu_on_request_and_nothing_else():
    torch.manual_seed(0)
    z = torch.randn(4, 3)
    elu, relu = MADE(3, hidden=8), MADE(3, hidden=8, activation="relu")
    relu.load_state_dict(elu.state_dict())  # the activation is not a parameter: same state dict
    assert elu.activation == "elu" and "activation=relu" in repr(relu)
    for made, act in ((elu, torch.nn.functional.elu), (relu, torch.nn.functional.relu)):
        h = act(made.hidden_layers[1](act(made.hidden_layers[0](z))))  # written out, not in place
        m, s = made.output_layer(h).unflatten(-1, (2, 3)).unbind(-2)
        assert torch.allclose(made(z)[0], m, atol=1e-6) and torch.allclose(made(z)[1], s, atol=1e-6)
    assert not torch.allclose(elu(z)[0], relu(z)[0])  # the activation is used: same weights differ
    assert IAF(3, hidden=8, activation="relu").made.activation == "relu"
    with pytest.raises(ValueError, match=r"activation must be one of \['elu', 'relu'\], got 'tanh'"):
        MADE(3, activation="tanh")


@pytest.mark.parametrize("dim", [1, 2, 6])
def test_context_reaches_every_output_including_the_first(dim):
    torch.manual_seed(0)
    order = torch.randperm(dim) + 1
    made = perturb_(MADE(dim, context_dim=2, hidden=12, order=order)).double()
    z = torch.randn(3, dim, dtype=torch.float64)
    context = torch.randn(3, 2, dtype=torch.float64)
    for k, out in enumerate(torch.autograd.functional.jacobian(lambda c: made(z, c), context)):
        per_sample = out[torch.arange(3), :, torch.arange(3), :]  # (B, D, C)
        reached = per_sample.abs().sum(dim=(0, 2)) > 0
        assert reached.all(), (
            f"output {k}: the context does not reach variables {(~reached).nonzero().tolist()}"
        )
        first = int((order == 1).nonzero())
        assert reached[first]


@pytest.mark.parametrize("context_dim", [None, 2])
def test_iaf_jacobian_is_triangular_with_sigma_on_the_diagonal(context_dim):
    torch.manual_seed(0)
    dim = 5
    order = torch.randperm(dim) + 1
    flow = perturb_(IAF(dim, context_dim=context_dim, hidden=12, order=order)).double()
    z = torch.randn(4, dim, dtype=torch.float64)
    context = None if context_dim is None else torch.randn(4, context_dim, dtype=torch.float64)
    J = batch_jacobian(flow, z, context)
    later = order[:, None] < order[None, :]  # entry (j, i) with i after j in the order
    assert (J[:, later] == 0).all()
    _, s = flow.m_s(z, context)
    sigma = torch.sigmoid(s)
    torch.testing.assert_close(torch.diagonal(J, dim1=-2, dim2=-1), sigma)
    _, logdet = flow(z, context)
    torch.testing.assert_close(logdet, torch.log(sigma).sum(-1))
    assert (sigma > 0).all() and (sigma < 1).all()


def test_iaf_stack_with_reversal_is_not_triangular_but_its_logdet_is_the_sum_of_log_scales():
    torch.manual_seed(0)
    steps = [perturb_(IAF(4, hidden=12)).double() for _ in range(2)]
    flow = Sequential(steps[0], Reverse(4), steps[1])
    z = torch.randn(3, 4, dtype=torch.float64)
    J = batch_jacobian(flow, z)
    assert (J.triu(1).abs() > 0).any() and (J.tril(-1).abs() > 0).any()
    z1, _ = steps[0](z)
    expected = sum(
        torch.log(torch.sigmoid(step.m_s(x)[1])).sum(-1)
        for step, x in ((steps[0], z), (steps[1], z1.flip(-1)))
    )
    torch.testing.assert_close(flow(z)[1], expected)


def test_forget_bias_starts_iaf_near_the_identity():
    torch.manual_seed(0)
    z = torch.randn(256, 8)
    gaps = {}
    for bias in (0.0, 1.0, 3.0):
        flow = IAF(8, hidden=32, forget_bias=bias)
        out, _ = flow(z)
        gaps[bias] = (out - z).abs().mean().item()
    assert gaps[3.0] < gaps[1.0] < gaps[0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_and_log_match_pytorch_and_the_exact_derivatives(dtype):
    from flowlib.flows.iaf import sigmoid_and_log

    g = torch.Generator().manual_seed(0)
    edges = torch.tensor([0.0, -87.0, -88.0, -104.0, -746.0, 40.0, 1e4, -1e4], dtype=dtype)
    scales = (1e-3, 1.0, 10.0, 100.0)
    s = torch.cat([torch.randn(20_000, generator=g, dtype=dtype) * scale for scale in scales] + [edges])
    s.requires_grad_()
    sigma, log_sigma = sigmoid_and_log(s)
    eps = torch.finfo(dtype).eps
    assert torch.equal(sigma, torch.sigmoid(s))
    # within two units in the last place of 1 (relative, beyond 1) of PyTorch's logsigmoid; finite
    reference = torch.nn.functional.logsigmoid(s.detach())
    assert torch.isfinite(log_sigma).all()
    assert ((log_sigma.detach() - reference).abs() <= 2 * eps * reference.abs().clamp_min(1.0)).all()
    # the derivatives, against the exact ones in float64: sigma (1 - sigma) and 1 - sigma
    w1, w2 = torch.rand(s.shape, generator=g, dtype=dtype), torch.rand(s.shape, generator=g, dtype=dtype)
    (grad,) = torch.autograd.grad((w1 * sigma + w2 * log_sigma).sum(), s)
    s64 = s.detach().double()
    exact = w1.double() * torch.sigmoid(s64) * torch.sigmoid(-s64) + w2.double() * torch.sigmoid(-s64)
    assert ((grad.double() - exact).abs() <= 2 * eps * exact.abs().clamp_min(1.0)).all()


def test_sigmoid_and_log_first_and_second_derivatives_by_finite_differences():
    from flowlib.flows.iaf import sigmoid_and_log

    s = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    assert torch.autograd.gradcheck(sigmoid_and_log, (s,))
    assert torch.autograd.gradgradcheck(sigmoid_and_log, (s,))
