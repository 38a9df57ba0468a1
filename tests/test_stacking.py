"""A static run of layers in a ``Sequential`` keeps its parameters as one ``(K, P)`` tensor
(``flowlib/flows/stacking.py``): the same numbers and gradients as the layers' own parameters,
the same saved format, and layers that still work on their own."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from flowlib.flows import Householder, Planar, Radial, Sequential
from flowlib.flows.registry import build

LAYERS = {"planar": Planar, "radial": Radial, "householder": Householder}


def _unstacked(seq: Sequential) -> list:
    """Fresh layers of ``seq``'s classes with its values, each with its own parameter (not in a
    ``Sequential``): the per-layer reference."""
    layers = []
    for f in seq.flows:
        g = type(f)(f.dim).to(f.params.theta.dtype)
        with torch.no_grad():
            g.params.theta.copy_(f.params.theta)
        layers.append(g)
    return layers


@pytest.mark.parametrize("name", LAYERS)
def test_a_static_run_has_one_parameter_and_each_layer_reads_its_row(name):
    torch.manual_seed(0)
    seq = build(name, 4, length=5)
    params = dict(seq.named_parameters())
    assert list(params) == ["stacks.0.theta"]
    theta = params["stacks.0.theta"]
    assert theta.shape[0] == 5
    for k, f in enumerate(seq.flows):
        assert torch.equal(f.params.theta, theta[k])
        assert f.params.theta.data_ptr() == theta[k].data_ptr()  # a view: written through
    with torch.no_grad():
        seq[2].params.theta.add_(1.0)
    assert torch.equal(theta[2], seq[2].params.theta)


def test_the_initial_values_are_those_each_layer_drew():
    torch.manual_seed(0)
    layers = [Planar(4) for _ in range(3)]
    expected = torch.stack([f.params.theta.detach().clone() for f in layers])
    seq = Sequential(*layers)
    assert torch.equal(seq.stacks[0].theta, expected)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("sample_axis", [False, True])
def test_outputs_and_gradients_equal_those_of_the_layers_own_parameters(name, sample_axis):
    torch.manual_seed(1)
    seq = build(name, 4, length=6).double()
    with torch.no_grad():
        seq.stacks[0].theta.add_(0.3 * torch.randn_like(seq.stacks[0].theta))
    layers = _unstacked(seq)
    z = torch.randn(*((3, 5, 4) if sample_axis else (5, 4)), dtype=torch.float64)
    y, logdet = seq(z)
    (y.square().sum() + logdet.sin().sum()).backward()
    y_ref, logdet_ref = z, 0.0
    for f in layers:
        y_ref, ld = f(y_ref)
        logdet_ref = logdet_ref + ld
    (y_ref.square().sum() + logdet_ref.sin().sum()).backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-12, atol=1e-12)
    grad = torch.stack([f.params.theta.grad for f in layers])
    torch.testing.assert_close(seq.stacks[0].theta.grad, grad, rtol=1e-10, atol=1e-12)


def test_a_layer_used_alone_trains_its_row_only():
    torch.manual_seed(2)
    seq = build("planar", 3, length=4)
    y, logdet = seq[1](torch.randn(5, 3))
    (y.sum() + logdet.sum()).backward()
    grad = seq.stacks[0].theta.grad
    assert grad[1].abs().sum() > 0
    assert torch.count_nonzero(grad[[0, 2, 3]]) == 0


def test_the_inverse_reads_the_stack():
    torch.manual_seed(3)
    seq = build("planar", 3, length=4).double()
    z = torch.randn(6, 3, dtype=torch.float64)
    y, logdet = seq(z)
    z_back, logdet_back = seq.inverse(y)
    torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet_back, -logdet, rtol=1e-9, atol=1e-9)


def test_the_state_dict_lists_the_layers_and_loads_both_ways():
    torch.manual_seed(4)
    seq = build("planar", 3, length=4)
    state = seq.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes == {f"flows.{k}.params.theta": (7,) for k in range(4)}
    # the per-layer form of a model built before the stacking (layers not in a Sequential) loads
    per_layer = {f"flows.{k}.params.theta": f.params.theta.detach().clone()
                 for k, f in enumerate(_unstacked(seq))}
    other = build("planar", 3, length=4)
    other.load_state_dict(per_layer)
    assert torch.equal(other.stacks[0].theta, seq.stacks[0].theta)
    # through a file, as checkpoints are read (weights_only)
    buffer = io.BytesIO()
    torch.save(seq.state_dict(), buffer)
    buffer.seek(0)
    third = build("planar", 3, length=4)
    third.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(third.stacks[0].theta, seq.stacks[0].theta)
    # a missing layer is named by the strict load, not silently left at its initial value
    del per_layer["flows.2.params.theta"]
    with pytest.raises(RuntimeError, match="stacks.0.theta"):
        other.load_state_dict(per_layer)


def test_a_vae_state_dict_keeps_the_per_layer_names_under_its_prefix():
    from flowlib.model.encoders import Decoder, Encoder
    from flowlib.model.posterior import FlowPosterior
    from flowlib.model.vae import VAE

    model = VAE.from_parts(Encoder(12, 4, (8,), "mlp"), Decoder(12, 4, (8,), "mlp"),
                           FlowPosterior(build("planar", 4, length=3)))
    keys = [k for k in model.state_dict() if k.endswith("params.theta")]
    assert len(keys) == 3 and all(".flows." in k for k in keys)
    model.load_state_dict(model.state_dict())


def test_copies_and_conversions_keep_each_layer_on_its_own_stack():
    torch.manual_seed(5)
    seq = build("radial", 3, length=3)
    before = seq.stacks[0].theta.detach().clone()
    twin = copy.deepcopy(seq)
    with torch.no_grad():
        twin.stacks[0].theta.zero_()
    assert torch.equal(seq.stacks[0].theta, before)
    assert all(torch.count_nonzero(f.params.theta) == 0 for f in twin.flows)
    seq.double()
    assert all(f.params.theta.dtype == torch.float64 for f in seq.flows)


def test_mixed_runs_stack_each_static_run_and_leave_the_rest():
    torch.manual_seed(6)
    seq = Sequential(Planar(3), Planar(3), Radial(3), Radial(3), Radial(3), Planar(3, context_dim=2),
                     Planar(3, context_dim=2), Householder(3))
    assert [tuple(s.theta.shape) for s in seq.stacks] == [(2, 7), (3, 5)]
    names = [n for n, _ in seq.named_parameters()]
    assert "flows.7.params.theta" in names and "flows.5.params.linear.weight" in names
    assert sum(n.startswith("stacks.") for n in names) == 2
    z, c = torch.randn(4, 3), torch.randn(4, 2)
    y, logdet = seq(z, c)
    (y.sum() + logdet.sum()).backward()
    assert all(p.grad is not None for p in seq.parameters())


def test_a_run_taken_whole_into_a_new_sequence_shares_its_stack_and_names():
    """As ``posterior2d.models.fit_flow`` does: the layers of a built flow, then another flow."""
    from flowlib.flows import DiagonalAffine

    first = build("planar", 2, length=3)
    second = Sequential(*first.flows, DiagonalAffine(2))
    assert second.stacks[0] is first.stacks[0]
    assert first.stacks[0].theta in set(second.parameters())
    names = [k for k in second.state_dict() if "params.theta" in k]
    assert names == [f"flows.{k}.params.theta" for k in range(3)]
    third = Sequential(*first.flows, DiagonalAffine(2))
    third.load_state_dict(second.state_dict())
    y, logdet = second(torch.randn(4, 2))
    (y.sum() + logdet.sum()).backward()
    assert first.stacks[0].theta.grad is not None


def test_part_of_a_run_in_a_new_sequence_still_trains_through_its_stack():
    first = build("planar", 2, length=4)
    part = Sequential(*first.flows[1:3])
    assert list(part.parameters()) == [first.stacks[0].theta]
    y, logdet = part(torch.randn(5, 2))
    (y.sum() + logdet.sum()).backward()
    grad = first.stacks[0].theta.grad
    assert torch.count_nonzero(grad[[0, 3]]) == 0 and torch.count_nonzero(grad[1:3]) > 0
    single = Sequential(first.flows[0])
    assert list(single.parameters()) == [first.stacks[0].theta]


def test_an_optimizer_sees_one_tensor_for_a_run_of_eighty_layers():
    seq = build("planar", 40, length=80)
    assert len(list(seq.parameters())) == 1
    assert next(seq.parameters()).shape == (80, 81)


def _vae(monkeypatch=None):
    from flowlib.flows import stacking
    from flowlib.model.encoders import Decoder, Encoder
    from flowlib.model.posterior import FlowPosterior
    from flowlib.model.vae import VAE

    if monkeypatch is not None:  # the code before the stacking: every layer keeps its own parameter
        monkeypatch.setattr(stacking, "adopt", lambda sources: None)
    torch.manual_seed(7)
    return VAE.from_parts(Encoder(12, 3, (8,), "mlp"), Decoder(12, 3, (8,), "mlp"),
                          FlowPosterior(Sequential(*(Planar(3) for _ in range(4)), Radial(3))))


def _train(model, steps, optimizer=None):
    from flowlib.training.loop import make_optimizer

    optimizer = optimizer or make_optimizer(model, {"optimizer": "adam", "lr": 1e-2})
    x = (torch.rand(16, 12, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    for step in range(steps):
        torch.manual_seed(100 + step)
        loss = model.elbo(x).loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return optimizer


def test_an_optimizer_state_saved_per_layer_is_stacked_for_the_model_now(monkeypatch):
    from flowlib.flows import stacking
    from flowlib.training.loop import make_optimizer

    with monkeypatch.context() as patch:
        old_model = _vae(patch)
    new_model = _vae()
    assert len(list(old_model.parameters())) == len(list(new_model.parameters())) + 3
    old_state = _train(old_model, 3).state_dict()
    new_opt = _train(new_model, 3)
    stacked = stacking.stack_optimizer_state(old_state, new_model)
    ours = new_opt.state_dict()
    assert stacked["param_groups"][0]["params"] == ours["param_groups"][0]["params"]
    for i, entry in ours["state"].items():
        for key, value in entry.items():
            assert torch.equal(stacked["state"][i][key], value), (i, key)
    # a state that already matches, or of another model, is left to load_state_dict's own check
    assert stacking.stack_optimizer_state(ours, new_model) is None
    # resuming from it continues exactly as the uninterrupted run
    resumed = make_optimizer(new_model, {"optimizer": "adam", "lr": 1e-2})
    resumed.load_state_dict(stacked)
    twin = copy.deepcopy(new_model)
    twin_opt = make_optimizer(twin, {"optimizer": "adam", "lr": 1e-2})
    twin_opt.load_state_dict(ours)
    _train(new_model, 2, resumed)
    _train(twin, 2, twin_opt)
    for a, b in zip(new_model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
