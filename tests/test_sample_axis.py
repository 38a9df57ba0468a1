"""Samples share their context row's flow: ``z`` of shape ``(S, B, D)`` with a context ``(B, C)``
gives what ``S`` separate calls give, and importance sampling computes amortized parameters once
per image (per chunk) instead of once per sample, with the same result."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import MADE, Flow, ParameterSource, PCPMap, Planar, Sequential, Sylvester
from flowlib.flows.registry import FLOWS, build
from flowlib.flows.testing import CASES, INVERTIBLE, case
from flowlib.model.vae import VAE

S = 3


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("amortized", [False, True])
def test_a_sample_axis_equals_separate_calls(name, amortized):
    flow, z, context = case(name, 3, amortized)
    assert flow.sample_axis
    zs = z + torch.randn(S, *z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(5))
    out, logdet = flow(zs, context)
    assert out.shape == zs.shape and logdet.shape == zs.shape[:-1]
    for s in range(S):
        out_s, logdet_s = flow(zs[s], context)
        torch.testing.assert_close(out[s], out_s, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(logdet[s], logdet_s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(INVERTIBLE))
@pytest.mark.parametrize("amortized", [False, True])
def test_inverse_with_a_sample_axis_equals_separate_calls(name, amortized):
    flow, z, context = case(name, 3, amortized)
    zs = z + torch.randn(S, *z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(5))
    if name in ("pcpmap", "mixed_stack"):  # PCP-Map's Newton solver takes (B, dim) only
        with pytest.raises(ValueError, match=r"\(B, 3\)"):
            flow.inverse(zs, context)
        return
    back, logdet = flow.inverse(zs, context)
    for s in range(S):
        back_s, logdet_s = flow.inverse(zs[s], context)
        torch.testing.assert_close(back[s], back_s, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(logdet[s], logdet_s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("amortized", [False, True])
def test_sample_axis_shapes_are_checked(amortized):
    flow = Planar(3, context_dim=2 if amortized else None)
    context = torch.randn(4, 2) if amortized else None
    with pytest.raises(ValueError, match=r"\(B, 3\) or \(S, B, 3\)"):
        flow(torch.randn(2, 4, 3, 1), context)
    if amortized:
        with pytest.raises(ValueError, match=r"\(4, 2\)"):
            flow(torch.randn(5, 4, 3), torch.randn(5, 4, 2))  # the context has no sample axis
        with pytest.raises(ValueError, match=r"\(5, 2\)"):
            flow(torch.randn(4, 5, 3), context)


class PlainShift(Flow):
    """A user's flow written for ``(B, dim)`` only (no ``sample_axis``)."""

    def __init__(self, dim, context_dim=None):
        super().__init__(dim, context_dim)
        self.lin = torch.nn.Linear(context_dim, dim)

    def _forward(self, z, context):
        assert z.dim() == 2
        return z + self.lin(context), z.new_zeros(z.shape[0])


def test_a_flow_without_sample_axis_refuses_it_and_a_vae_flattens_for_it():
    flow = PlainShift(3, 8)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow(torch.randn(2, 4, 3), torch.randn(4, 8))
    assert not Sequential(Planar(3, context_dim=8), flow).sample_axis
    torch.manual_seed(0)
    vae = VAE(z_dim=3, hidden=(8,), flow=Sequential(Planar(3, context_dim=8), flow))
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(1)).bernoulli()
    assert torch.isfinite(vae.log_likelihood(x, k=7)).all()


def _vaes():
    for name in FLOWS[1:]:
        variants = ("orthogonal", "householder", "triangular") if name == "sylvester" else ("orthogonal",)
        for variant in variants:
            for amortized in (False, True):
                yield f"{name}-{variant}-{'amortized' if amortized else 'static'}", name, variant, amortized


@pytest.mark.parametrize("label,name,variant,amortized", list(_vaes()), ids=[v[0] for v in _vaes()])
def test_importance_sampling_shares_parameters_and_equals_per_sample_calls(label, name, variant, amortized,
                                                                          monkeypatch):
    torch.manual_seed(0)
    options = {"iaf": {"hidden": 16}, "sylvester": {"variant": variant}}.get(name, {})
    flow = build(name, 4, context_dim=16 if amortized else None, length=3, **options)
    vae = VAE(z_dim=4, hidden=(16,), flow=flow).double()
    with torch.no_grad():
        for p in vae.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64).bernoulli()
    # the rows that the maps of the context see: one per image (and chunk), not one per sample
    context_maps = [m.linear for m in vae.flow.modules() if isinstance(m, ParameterSource) and m.linear]
    context_maps += [m.context_layer for m in vae.flow.modules() if isinstance(m, MADE) and m.context_layer]
    context_maps += [layer for m in vae.flow.modules() if isinstance(m, PCPMap) and m.ctx for layer in m.ctx]
    rows = []
    hooks = [m.register_forward_hook(lambda m, args, out: rows.append(args[0].shape)) for m in context_maps]
    # a run of amortized layers computes its heads as one product, outside their modules
    heads = ParameterSource.stack

    def recorded(sources, context):
        if context is not None:
            rows.append(context.shape)
        return heads(sources, context)

    monkeypatch.setattr(ParameterSource, "stack", staticmethod(recorded))
    torch.manual_seed(3)
    shared = vae.log_likelihood(x, k=37, max_rows=5 * 10)  # chunks of 10, 10, 10 and 7 samples
    if amortized and name != "nice":  # NICE's couplings take the context in their first layer
        assert rows and all(r[0] == 5 and len(r) == 2 for r in rows), rows
    for h in hooks:
        h.remove()
    monkeypatch.undo()
    vae.flow.sample_axis = False  # the other path: every sample a row of its own, the context copied
    torch.manual_seed(3)
    per_sample = vae.log_likelihood(x, k=37, max_rows=5 * 10)
    torch.testing.assert_close(shared, per_sample, atol=1e-10, rtol=1e-12)


def test_orthogonal_sylvester_orthogonalizes_once_per_image():
    calls = []
    import flowlib.flows.sylvester as sylvester

    original = sylvester.orthogonalize

    def counting(A, *args, **kwargs):
        calls.append(tuple(A.shape))
        return original(A, *args, **kwargs)

    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(16,), flow=Sequential(Sylvester(4, context_dim=16, M=2)))
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(1)).bernoulli()
    sylvester.orthogonalize = counting
    try:
        vae.log_likelihood(x, k=40, max_rows=5 * 20)
    finally:
        sylvester.orthogonalize = original
    assert calls == [(5, 4, 2), (5, 4, 2)]  # two chunks of 20 samples; one Q per image each
