"""A Sylvester head narrowed to the outputs its layer reads (flowlib/flows/used_outputs.py): the same
flow as the full ``[R, R~, b]`` head it replaced, the same initial values, every kept output
trained, and the saved format (model and optimizer) of older code still read."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import ParameterSource, Sylvester
from flowlib.flows.used_outputs import keep_outputs, narrow_optimizer_state

D, C = 5, 7
VARIANTS = [("orthogonal", 3), ("householder", None), ("triangular", None)]


def _full_R_Rt_b(theta_full, M):
    """The full head's reading of its ``2 M^2 + M`` raw outputs (the code before the narrowing)."""
    both = theta_full[..., : 2 * M * M].unflatten(-1, (2, M, M))
    xy = both.diagonal(dim1=-2, dim2=-1)
    R, Rt = (both * torch.ones(M, M, dtype=both.dtype).triu(1) + torch.diag_embed(torch.tanh(xy))).unbind(-3)
    return R, Rt, theta_full[..., 2 * M * M :]


@pytest.mark.parametrize("variant,M", VARIANTS)
@pytest.mark.parametrize("amortized", [False, True])
def test_the_narrowed_head_reads_as_the_full_head_did(variant, M, amortized):
    torch.manual_seed(0)
    flow = Sylvester(D, C if amortized else None, variant=variant, M=M).double()
    with torch.no_grad():  # perturbed parameters, unread rows of the full-size state included
        for p in flow.parameters():
            p.add_(torch.randn_like(p))
    state = flow.state_dict()
    key = "params.linear" if amortized else "params"
    full = {k: v + torch.randn_like(v) * (v == 0) for k, v in state.items() if k.startswith(key)}
    context = torch.randn(4, C, dtype=torch.float64) if amortized else None
    theta_full = (context @ full["params.linear.weight"].T + full["params.linear.bias"] if amortized
                  else full["params.theta"])
    R, Rt, b, x, y = flow._R_Rt_b(context)
    R0, Rt0, b0 = _full_R_Rt_b(theta_full, flow.M)
    for new, old in ((R, R0), (Rt, Rt0), (b, b0)):  # amortized: two matrix products, rounded apart
        torch.testing.assert_close(new, old, rtol=0, atol=0 if context is None else 1e-13)
    assert (R.tril(-1) == 0).all() and (Rt.tril(-1) == 0).all()
    assert torch.equal(torch.tanh(x), R.diagonal(dim1=-2, dim2=-1))
    assert torch.equal(torch.tanh(y), Rt.diagonal(dim1=-2, dim2=-1))
    # a state dict of the full head (nonzero unread rows, as older checkpoints have) loads to the same flow
    twin = Sylvester(D, C if amortized else None, variant=variant, M=M).double()
    twin.load_state_dict({**state, **full})
    assert all(torch.equal(a, b) for a, b in zip(twin._R_Rt_b(context), flow._R_Rt_b(context)))


@pytest.mark.parametrize("variant,M", VARIANTS)
def test_the_same_random_draws_give_the_same_initial_values(variant, M):
    Mm = D if M is None else M
    q_size = {"orthogonal": D * Mm, "householder": D * D, "triangular": 0}[variant]
    torch.manual_seed(3)
    full = ParameterSource(2 * Mm * Mm + Mm, C, 0.1)
    q = ParameterSource(q_size, C, 1.0) if q_size else None
    after = torch.rand(3)
    torch.manual_seed(3)
    flow = Sylvester(D, C, variant=variant, M=M)
    assert torch.equal(torch.rand(3), after)  # no extra draws: later modules start as before
    state = flow.state_dict()
    index, full_size = flow.params._kept
    assert full_size == 2 * Mm * Mm + Mm and index.numel() == Mm * Mm + 2 * Mm
    assert torch.equal(state["params.linear.weight"][index], full.linear.weight.detach()[index])
    assert torch.equal(state["params.linear.bias"][index], full.linear.bias.detach()[index])
    unread = torch.ones(full_size, dtype=torch.bool)
    unread[index] = False
    assert (state["params.linear.weight"][unread] == 0).all()  # saved full size, unread rows zero
    if q is not None:
        assert torch.equal(state["q_params.linear.weight"], q.linear.weight.detach())


@pytest.mark.parametrize("variant,M", VARIANTS)
def test_every_kept_output_gets_a_gradient(variant, M):
    torch.manual_seed(1)
    flow = Sylvester(D, C, variant=variant, M=M)
    z, h = torch.randn(16, D), torch.randn(16, C)
    out, logdet = flow(z, h)
    (out.square().sum() + logdet.sum()).backward()
    grad = flow.params.linear.weight.grad
    assert grad.shape[0] == flow.M ** 2 + 2 * flow.M
    assert (grad.abs().sum(1) > 0).all()  # no row left at zero, as the full head's lower triangles were


def test_an_optimizer_state_saved_at_full_size_is_narrowed():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(C, C), Sylvester(D, C, variant="orthogonal", M=3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        h = model[0](torch.randn(8, C))
        out, logdet = model[1](torch.randn(8, D), h)
        (out.square().sum() - logdet.sum()).backward()
        optimizer.step()
    now = optimizer.state_dict()
    assert narrow_optimizer_state(now, model) is None  # already narrow: nothing to do
    index, full_size = model[1].params._kept
    old = {"param_groups": now["param_groups"], "state": {}}
    head = {id(model[1].params.linear.weight), id(model[1].params.linear.bias)}
    for i, p in enumerate(model.parameters()):
        entry = dict(now["state"][i])
        if id(p) in head:  # what the full head's state held: zero moments on the unread rows
            for key in ("exp_avg", "exp_avg_sq"):
                wide = entry[key].new_zeros((full_size, *entry[key].shape[1:]))
                wide[index] = entry[key]
                entry[key] = wide
        old["state"][i] = entry
    narrowed = narrow_optimizer_state(old, model)
    assert narrowed is not None
    for i in now["state"]:
        for key, value in now["state"][i].items():
            assert torch.equal(narrowed["state"][i][key], value)
    twin = torch.optim.Adam(model.parameters(), lr=1e-3)
    twin.load_state_dict(narrowed)
    assert narrow_optimizer_state({"param_groups": [{"params": [0]}], "state": {}}, model) is None


@pytest.mark.parametrize("index", [torch.tensor([0, 0]), torch.tensor([9]), torch.tensor([[0]]),
                                   torch.tensor([0.0]), torch.tensor([], dtype=torch.long)])
def test_keep_outputs_refuses_bad_positions_and_changes_nothing(index):
    source = ParameterSource(4, C)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    with pytest.raises(ValueError, match="1-D LongTensor of distinct positions in \\[0, 4\\)"):
        keep_outputs(source, index)
    assert source.size == 4 and all(torch.equal(v, source.state_dict()[k]) for k, v in before.items())


def test_a_source_is_narrowed_once():
    source = ParameterSource(4)
    keep_outputs(source, torch.tensor([1, 3]))
    assert source.size == 2 and source.state_dict()["theta"].shape == (4,)
    with pytest.raises(ValueError, match="already narrowed"):
        keep_outputs(source, torch.tensor([0]))
