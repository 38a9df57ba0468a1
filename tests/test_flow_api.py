"""The Flow contract: shapes, bad inputs, static versus amortized, Sequential, import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from flowlib.flows import IAF, MADE, Flow, Householder, Planar, Radial, Reverse, Scale, Sequential, Sylvester
from flowlib.flows.testing import CASES, CONTEXT_DIM, case


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("amortized", [False, True])
def test_shapes_and_types(name, amortized):
    flow, z, context = case(name, 3, amortized, dtype=torch.float32)
    assert isinstance(flow, Flow) and flow.dim == 3
    assert flow.context_dim == (CONTEXT_DIM if amortized else None)
    out, logdet = flow(z, context)
    assert out.shape == z.shape and out.dtype == z.dtype
    assert logdet.shape == (z.shape[0],) and logdet.dtype == z.dtype


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("amortized", [False, True])
def test_bad_inputs_raise_value_error_naming_the_shape(name, amortized):
    flow, z, context = case(name, 3, amortized, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow(torch.randn(4, 2), context)  # wrong last dimension
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow(torch.randn(3), context)  # no batch axis
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow(torch.randn(4, 3, 1), context)
    with pytest.raises(ValueError, match="floating-point"):
        flow(torch.ones(4, 3, dtype=torch.long), context)
    if amortized:
        with pytest.raises(ValueError, match=rf"\(4, {CONTEXT_DIM}\).*None"):
            flow(z, None)  # missing context
        with pytest.raises(ValueError, match=rf"\(4, {CONTEXT_DIM}\)"):
            flow(z, torch.randn(4, CONTEXT_DIM + 1))  # wrong context width
        with pytest.raises(ValueError, match=rf"\(4, {CONTEXT_DIM}\)"):
            flow(z, torch.randn(1, CONTEXT_DIM))  # would broadcast: refused
        with pytest.raises(ValueError, match=rf"\(4, {CONTEXT_DIM}\)"):
            flow(z, torch.randn(CONTEXT_DIM))
    else:
        with pytest.raises(ValueError, match="static"):
            flow(z, torch.randn(4, CONTEXT_DIM))  # context given to a static flow


@pytest.mark.parametrize("cls", [Planar, Radial, Householder, Scale, IAF, Sylvester, Reverse])
@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None, "3"])
def test_bad_sizes_are_refused(cls, bad):
    with pytest.raises(ValueError, match="dim"):
        cls(bad)
    if bad is not None:
        with pytest.raises(ValueError, match="context_dim"):
            cls(2, context_dim=bad)


def test_static_flow_shares_parameters_amortized_flow_does_not():
    torch.manual_seed(0)
    z = torch.zeros(2, 2)
    out, _ = Planar(2)(z)
    assert torch.allclose(out[0], out[1])  # same parameters for both samples
    flow = Planar(2, context_dim=3, init_std=1.0)
    out, _ = flow(z, torch.randn(2, 3))
    assert not torch.allclose(out[0], out[1])  # parameters predicted per sample


def test_sequential_sums_logdets_and_inverts_in_reverse_order():
    torch.manual_seed(0)
    parts = [Scale(3), Householder(3), IAF(3, hidden=8), Reverse(3), Radial(3)]
    for p in parts:
        with torch.no_grad():
            for q in p.parameters():
                q.add_(0.5 * torch.randn_like(q))
    flow = Sequential(*parts).double()
    z = torch.randn(6, 3, dtype=torch.float64)
    out, logdet = flow(z)
    x, total = z, torch.zeros(6, dtype=torch.float64)
    for p in parts:
        x, ld = p(x)
        total = total + ld
    torch.testing.assert_close(out, x)
    torch.testing.assert_close(logdet, total)
    back = out
    for p in reversed(parts):
        back, _ = p.inverse(back)
    torch.testing.assert_close(flow.inverse(out)[0], back)
    torch.testing.assert_close(back, z)
    assert len(flow.trajectory(z)) == len(parts) + 1
    torch.testing.assert_close(flow.trajectory(z)[-1], out)


def test_sequential_validates_its_parts():
    with pytest.raises(ValueError, match="dim"):
        Sequential(Planar(2), Planar(3))
    with pytest.raises(ValueError, match="context_dim"):
        Sequential(Planar(2, context_dim=3), Planar(2, context_dim=4))
    with pytest.raises(ValueError, match="Flow"):
        Sequential(Planar(2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="at least one"):
        Sequential()
    mixed = Sequential(Planar(2), Planar(2, context_dim=3))
    assert mixed.amortized and mixed.context_dim == 3
    # Planar layers invert (Planar.solve), so the stack does; a part without an inverse (Sylvester)
    # makes the stack's inverse raise.
    y, context = torch.randn(1, 2), torch.randn(1, 3)
    torch.testing.assert_close(mixed(mixed.inverse(y, context)[0], context)[0], y)
    without = Sequential(Sylvester(2), Planar(2, context_dim=3))
    with pytest.raises(NotImplementedError, match="inverse"):
        without.inverse(torch.randn(1, 2), torch.randn(1, 3))


def test_made_checks_its_inputs_and_order():
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, order=torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        MADE(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="needs a context"):
        MADE(3, context_dim=2)(torch.randn(2, 3))


def test_sylvester_checks_its_options():
    with pytest.raises(ValueError, match="variant"):
        Sylvester(3, variant="cayley")
    with pytest.raises(ValueError, match="M"):
        Sylvester(3, M=4)
    with pytest.raises(ValueError, match="M applies"):
        Sylvester(3, variant="triangular", M=2)


def test_import_needs_only_torch():
    code = (
        "import sys, flowlib.flows, flowlib.twod.jacobian\n"
        "heavy = [m for m in ('torchvision', 'matplotlib', 'ipywidgets', 'IPython') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Flows whose forward and backward have no data-dependent branch (no ``.item()``, no Python ``if``
# on a tensor) run on PyTorch's ``meta`` device, which has shapes but no data: there, any tensor a
# flow allocates on the CPU instead of its input's device (which breaks training on a GPU) is an
# error. The others (planar's static guard, Björck's and PCP-Map's convergence checks) need data.
META_CASES = ["affine", "coupling", "coupling_swap", "householder", "householder_stack", "iaf",
              "iaf_permuted", "iaf_relu", "iaf_stack", "nice_stack", "radial", "radial_stack", "reverse",
              "scale", "sylvester_householder", "sylvester_triangular", "sylvester_triangular_permuted"]


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("name", META_CASES)
def test_flow_allocates_on_its_inputs_device(name, amortized):
    flow = CASES[name](5, CONTEXT_DIM if amortized else None).to("meta")
    z = torch.randn(4, 5, device="meta", requires_grad=True)
    z_k, log_det = flow(z, torch.randn(4, CONTEXT_DIM, device="meta")) if amortized else flow(z)
    (z_k.sum() + log_det.sum()).backward()
    assert z_k.device.type == log_det.device.type == z.grad.device.type == "meta"
    assert z_k.shape == (4, 5) and log_det.shape == (4,)
