"""The training loop's Adam runs PyTorch's multi-tensor (``foreach``) implementation on CPU, where the
default is the single-tensor one: allowed only because the two give bitwise the same parameters, so
that runs started with the old loop resume, and fixed-seed curves stay, to the last bit."""

from __future__ import annotations

import copy
import pathlib

import pytest
import torch

from flowlib.experiments.tables import load_experiment, row_config
from flowlib.training.loop import _set_foreach, build_model, make_optimizer

MNIST = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mnist"
CONFIG = {"optimizer": "adam", "lr": 1e-3}


def _row_model(name):
    protocol, rows = load_experiment(MNIST)
    torch.manual_seed(0)
    return build_model(row_config(protocol, rows[name], 0, pathlib.Path("unused")))


def _same_after_updates(model, steps, batch=8):
    """Train ``model`` and a copy side by side, one with the default Adam and one with
    ``make_optimizer``'s, on the same random binary images and posterior noise."""
    other = copy.deepcopy(model)
    default = torch.optim.Adam(model.parameters(), lr=1e-3)
    ours = make_optimizer(other, CONFIG)
    assert all(g["foreach"] for g in ours.param_groups)
    data = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.bernoulli(torch.full((batch, 784), 0.3), generator=data)
        for m, opt in ((model, default), (other, ours)):
            torch.manual_seed(step)
            loss = m.elbo(x).loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return [name for (name, a), b in zip(model.named_parameters(), other.parameters())
            if not torch.equal(a, b)]


def test_foreach_adam_is_bitwise_the_default_on_parameters_of_every_shape(one_thread):
    torch.manual_seed(0)
    shapes = [(), (1,), (40,), (40, 40), (30, 78), (3, 1, 5), (64,), ()]
    a = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    default = torch.optim.Adam(a, lr=1e-3)
    ours = make_optimizer(torch.nn.ParameterList(b), CONFIG)
    for step in range(200):
        scale = 10.0 ** (step % 7 - 3)  # gradients from 1e-3 to 1e3
        for p, q in zip(a, b):
            g = scale * torch.randn(p.shape)
            p.grad, q.grad = g, g.clone()
        default.step()
        ours.step()
        assert all(torch.equal(p, q) for p, q in zip(a, b)), step


def test_foreach_adam_trains_a_row_bitwise_as_before(one_thread):
    assert _same_after_updates(_row_model("planar-80-static"), steps=5) == []


@pytest.mark.slow
@pytest.mark.parametrize("row", sorted(load_experiment(MNIST)[1]))
def test_foreach_adam_trains_every_row_bitwise_as_before(row, one_thread):
    assert _same_after_updates(_row_model(row), steps=200) == []


def test_a_resumed_optimizer_runs_foreach_whatever_wrote_its_state():
    model = torch.nn.Linear(3, 2)
    old = torch.optim.Adam(model.parameters(), lr=1e-3)  # foreach=None: what older checkpoints hold
    ours = make_optimizer(model, CONFIG)
    ours.load_state_dict(old.state_dict())
    assert ours.param_groups[0]["foreach"] is None
    _set_foreach(ours, CONFIG)
    assert ours.param_groups[0]["foreach"] is True
    adamax = make_optimizer(model, {"optimizer": "adamax", "lr": 1e-3})
    assert adamax.param_groups[0]["foreach"] is None  # PyTorch's default: not claimed identical
