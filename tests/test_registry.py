"""The flow registry (flowlib.flows.registry): one place that builds flows by name."""

from __future__ import annotations

import pytest
import torch

from flowlib.experiments import figure3, fits2d
from flowlib.flows import IAF, AdditiveCoupling, Reverse, Scale, Sequential, Sylvester
from flowlib.flows.registry import FLOWS, LAYERS, build, layer


@pytest.mark.parametrize("name", FLOWS[1:])
@pytest.mark.parametrize("context_dim", [None, 5])
def test_every_family_builds_length_layers_that_run(name, context_dim):
    torch.manual_seed(0)
    flow = build(name, 3, context_dim=context_dim, length=3)
    assert isinstance(flow, Sequential)
    steps = [f for f in flow.flows if not isinstance(f, (Reverse, Scale))]
    assert len(steps) == 3
    assert all(f.context_dim == context_dim for f in steps)
    z = torch.randn(4, 3)
    out, logdet = flow(z, None if context_dim is None else torch.randn(4, context_dim))
    assert out.shape == (4, 3) and logdet.shape == (4,)


def test_the_books_stacks():
    nice = build("nice", 4, length=3)
    assert [type(f) for f in nice.flows] == [AdditiveCoupling] * 3 + [Scale]
    assert [f.swap for f in nice.flows[:3]] == [False, True, False]
    iaf = build("iaf", 4, length=3)
    assert [type(f) for f in iaf.flows] == [IAF, Reverse, IAF, Reverse, IAF]
    assert iaf.flows[0].made.output_layer.in_features == 320  # the default width (van den Berg et al. 2018)
    tri = build("sylvester", 4, length=3, variant="triangular")
    assert [f.permute for f in tri.flows] == [False, True, False]
    orth = build("sylvester", 4, length=2, M=None, n_reflections=None)  # None: the defaults
    assert all(isinstance(f, Sylvester) and f.M == 4 for f in orth.flows)


def test_none_and_bad_requests():
    assert build("none", 3, length=0) is None
    with pytest.raises(TypeError, match="takes no options"):
        build("none", 3, hidden=4)
    with pytest.raises(ValueError, match="flow must be one of"):
        build("glow", 3)
    with pytest.raises(ValueError, match="positive int"):
        build("planar", 3, length=0)
    with pytest.raises(TypeError, match="'planar' layer does not take the options \\['hidden'\\]"):
        build("planar", 3, hidden=16)
    with pytest.raises(ValueError, match="unknown layer"):
        layer("maf", 3)
    with pytest.raises(ValueError, match="M applies to the 'orthogonal' variant only"):
        build("sylvester", 3, variant="householder", M=2)


def test_the_drivers_build_through_the_registry():
    """Figure 3's and the 2-D fits' flows are the registry's, layer for layer, in the same order of
    random draws (so a fixed seed still gives the committed fits' initialisation)."""
    torch.manual_seed(0)
    ours = figure3.build("nice", 4)
    torch.manual_seed(0)
    reference = build("nice", 2, length=4, hidden=16)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    torch.manual_seed(0)
    ours = fits2d.build("iaf-4")
    torch.manual_seed(0)
    reference = Sequential(layer("scale", 2), *build("iaf", 2, length=4, hidden=8, n_layers=1).flows)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    assert set(LAYERS) >= {"planar", "radial", "householder", "coupling", "scale", "iaf", "sylvester"}
