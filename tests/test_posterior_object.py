"""The VAE's posterior as an object (:class:`flowlib.model.posterior.FlowPosterior`) and the VAE of
injected parts: its density at its own draws, how the VAE holds it (one copy of the flow in the
state dict), its errors; and the convolutional networks on images of other shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from flowlib.flows import Planar
from flowlib.flows.registry import build
from flowlib.flows.testing import perturb_
from flowlib.model.encoders import Decoder, Encoder
from flowlib.model.posterior import FlowPosterior
from flowlib.model.vae import VAE
from flowlib.model.whitened import WhitenedFlowVAE
from flowlib.twod.posterior_grid import aggregate_log_q

Z, H = 3, 8
INVERTIBLE = ("planar", "radial", "householder", "nice", "iaf", "pcpmap")  # Sylvester has no inverse


def _flow(name, amortized):
    if name == "none":
        return None
    torch.manual_seed(0)
    options = {"hidden": 16} if name == "iaf" else {}
    flow = build(name, Z, context_dim=H if amortized else None, length=2, **options).double()
    return perturb_(flow, std=0.3)  # away from the identity, where a wrong formula can look right


def _encoded(B=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, Z, generator=g, dtype=torch.float64)
    log_var = 0.5 * torch.randn(B, Z, generator=g, dtype=torch.float64) - 1.0
    return mu, log_var, torch.randn(B, H, generator=g, dtype=torch.float64)


CASES = [("none", False)] + [(name, amortized) for name in INVERTIBLE for amortized in (False, True)]


@pytest.mark.parametrize("whitened", [False, True])
@pytest.mark.parametrize("name, amortized", CASES)
@pytest.mark.parametrize("n_samples", [1, 5])
def test_log_prob_at_its_own_draws_is_the_log_q_they_came_with(name, amortized, whitened, n_samples):
    """q.log_prob inverts the flow; q.rsample goes forward: at rsample's draws, both give one
    log q_K(z | x), in float64, for B images at once and for one image's points."""
    q = FlowPosterior(_flow(name, amortized), whitened=whitened)
    mu, log_var, h = _encoded()
    torch.manual_seed(2)
    z, lq = q.rsample(mu, log_var, h, n_samples)
    assert z.shape == (n_samples, 4, Z) and lq.shape == (n_samples, 4)
    with torch.no_grad():
        torch.testing.assert_close(q.log_prob(z, mu, log_var, h), lq.detach(), rtol=0, atol=1e-9)
        # one image (B = 1) broadcast against its n_samples points
        one = q.log_prob(z[:, 2], mu[2:3], log_var[2:3], h[2:3])
    torch.testing.assert_close(one, lq[:, 2].detach(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("whitened", [False, True])
def test_both_sampling_paths_of_an_amortized_flow_give_the_same_draws(whitened):
    """With several samples an amortized flow either computes its parameters once per image (its
    sample axis) or once per row; the draws and their log q agree, and so does the density."""
    q = FlowPosterior(_flow("iaf", True), whitened=whitened)
    mu, log_var, h = _encoded()
    torch.manual_seed(3)
    z, lq = q.rsample(mu, log_var, h, 6)
    q.flow.sample_axis = not q.flow.sample_axis
    torch.manual_seed(3)
    z2, lq2 = q.rsample(mu, log_var, h, 6)
    torch.testing.assert_close(z, z2)
    torch.testing.assert_close(lq, lq2)


def test_the_two_orders_are_different_posteriors_with_the_same_flow():
    """The same flow before and after the affine map gives different draws from the same noise,
    so the flag is read (a test of the two orders that could not tell them apart would pass anyway)."""
    flow = _flow("planar", True)
    mu, log_var, h = _encoded()
    torch.manual_seed(4)
    after = FlowPosterior(flow).rsample(mu, log_var, h, 3)[0]
    torch.manual_seed(4)
    before = FlowPosterior(flow, whitened=True).rsample(mu, log_var, h, 3)[0]
    assert (after - before).abs().max() > 1e-2


def test_the_vae_holds_its_posterior_and_registers_the_flow_once():
    torch.manual_seed(0)
    flow = Planar(Z, context_dim=H)
    vae = VAE.from_parts(Encoder(10, Z, (H,)), Decoder(10, Z, (H,)), FlowPosterior(flow))
    assert vae.q.flow is vae.flow is flow and not vae.q.whitened
    keys = list(vae.state_dict())
    assert len(keys) == len(set(keys)) and not any(k.startswith("q.") for k in keys)
    assert [k for k in keys if k.startswith("flow.")] == [f"flow.{k}" for k in flow.state_dict()]
    n_params = sum(p.numel() for p in vae.parameters())
    parts = (vae.encoder, vae.decoder, flow)
    assert n_params == sum(p.numel() for m in parts for p in m.parameters())
    # the book's constructor, a bare flow and a posterior object: one model, one set of names
    torch.manual_seed(0)
    book = VAE(10, Z, (H,), Planar(Z, context_dim=H))
    torch.manual_seed(0)
    bare = VAE.from_parts(Encoder(10, Z, (H,)), Decoder(10, Z, (H,)), Planar(Z, context_dim=H))
    assert list(book.state_dict()) == list(bare.state_dict()) == keys
    assert isinstance(bare.q, FlowPosterior) and bare.q.flow is bare.flow
    assert VAE(10, Z, (H,)).q.flow is None
    # conversions, copies and loaded weights reach the posterior (it holds the same flow)
    vae.double()
    assert all(p.dtype == torch.float64 for p in vae.q.parameters())
    twin = copy.deepcopy(vae)
    assert twin.q.flow is twin.flow and twin.flow is not vae.flow
    bare.double().load_state_dict(vae.state_dict())
    x = torch.rand(5, 10, dtype=torch.float64).bernoulli()
    torch.manual_seed(1)
    z, lq = vae.posterior(x, 2)
    torch.manual_seed(1)
    z2, lq2 = bare.posterior(x, 2)
    torch.testing.assert_close(z, z2)
    torch.testing.assert_close(lq, lq2)
    with pytest.raises(AttributeError, match="set once"):
        vae.flow = Planar(Z)
    with pytest.raises(AttributeError, match="set once"):
        vae.q = FlowPosterior()


def test_a_whitened_flow_vae_is_a_vae_with_a_whitened_posterior():
    torch.manual_seed(0)
    w = WhitenedFlowVAE(10, Z, (H,), Planar(Z, context_dim=H)).double()
    torch.manual_seed(0)
    v = VAE.from_parts(Encoder(10, Z, (H,)), Decoder(10, Z, (H,)),
                       FlowPosterior(Planar(Z, context_dim=H), whitened=True)).double()
    assert w.q.whitened and w.q.flow is w.flow and not hasattr(WhitenedFlowVAE, "flow_on_noise")
    assert list(w.state_dict()) == list(v.state_dict())
    v.load_state_dict(w.state_dict())
    x = torch.rand(5, 10, dtype=torch.float64).bernoulli()
    torch.manual_seed(1)
    a = w.log_likelihood(x, k=7)
    torch.manual_seed(1)
    torch.testing.assert_close(a, v.log_likelihood(x, k=7), rtol=0, atol=0)
    assert WhitenedFlowVAE.from_parts(Encoder(10, Z, (H,)), Decoder(10, Z, (H,))).q.whitened
    assert WhitenedFlowVAE.from_parts(Encoder(10, Z, (H,)), Decoder(10, Z, (H,)), Planar(Z)).q.whitened


def test_posterior_errors():
    with pytest.raises(ValueError, match="flow must be a flowlib Flow or None, got Linear"):
        FlowPosterior(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="whitened must be a bool, got 1"):
        FlowPosterior(Planar(2), whitened=1)
    enc, dec = Encoder(10, Z, (H,)), Decoder(10, Z, (H,))
    with pytest.raises(ValueError, match="must be a FlowPosterior, a flowlib Flow or None, got str"):
        VAE.from_parts(enc, dec, "planar")
    with pytest.raises(ValueError, match=f"flow.dim must equal z_dim = {Z}, got 2"):
        VAE.from_parts(enc, dec, FlowPosterior(Planar(2)))
    with pytest.raises(ValueError, match=f"context_dim = h_dim = {H}, got 5"):
        VAE.from_parts(enc, dec, FlowPosterior(Planar(Z, context_dim=5), whitened=True))
    with pytest.raises(ValueError, match="a WhitenedFlowVAE's posterior is whitened"):
        WhitenedFlowVAE.from_parts(enc, dec, FlowPosterior(Planar(Z)))
    # the aggregate posterior inverts one static flow for all images: only after the affine map
    x = torch.rand(3, 784).bernoulli()
    points = torch.randn(5, 2, dtype=torch.float64)
    for model in (WhitenedFlowVAE(784, 2, (H,), Planar(2)), VAE(784, 2, (H,), Planar(2, context_dim=H))):
        with pytest.raises(ValueError, match="aggregate_log_q: needs a VAE without a flow or with a static"):
            aggregate_log_q(model, x, points)
    assert aggregate_log_q(WhitenedFlowVAE(784, 2, (H,)), x, points).shape == (5,)


# ---- convolutional networks on other image shapes -------------------------------------------------

def test_the_default_conv_nets_are_the_28x28_ones():
    """Without image_shape (x_dim = 784) the conv nets are the (1, 28, 28) ones: same state dict
    (names, shapes, values from one seed) and the last kernel 7 x 7 (van den Berg et al.)."""
    for cls in (Encoder, Decoder):
        torch.manual_seed(0)
        default = cls(784, 4, arch="conv")
        torch.manual_seed(0)
        explicit = cls(784, 4, arch="conv", image_shape=(1, 28, 28))
        assert default.image_shape == (1, 28, 28)
        a, b = default.state_dict(), explicit.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert Encoder(784, 4, arch="conv").state_dict()["features.6.a.weight"].shape == (256, 64, 7, 7)
    assert Decoder(784, 4, arch="conv").state_dict()["net.1.a.weight"].shape == (4, 64, 7, 7)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 16, 24)])
def test_conv_nets_on_other_image_shapes(shape):
    C, Hh, W = shape
    x_dim = C * Hh * W
    torch.manual_seed(0)
    enc = Encoder(x_dim, 4, arch="conv", image_shape=shape)
    dec = Decoder(x_dim, 4, arch="conv", image_shape=shape)
    assert enc.features[6].a.kernel_size == (Hh // 4, W // 4) and dec.net[-2].out_channels == C
    x = torch.rand(3, x_dim).bernoulli()
    mu, log_var, h = enc(x)
    assert mu.shape == log_var.shape == (3, 4) and h.shape == (3, enc.h_dim)
    logits = dec(mu)
    assert logits.shape == (3, x_dim)
    (logits.sum() + log_var.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    # the full VAE of these parts, with an amortized flow: ELBO, its gradient, importance sampling
    vae = VAE.from_parts(Encoder(x_dim, 4, arch="conv", image_shape=shape),
                         Decoder(x_dim, 4, arch="conv", image_shape=shape), Planar(4, context_dim=enc.h_dim))
    e = vae.elbo(x)
    torch.testing.assert_close(e.elbo, e.reconstruction + e.log_p_z - e.log_q)
    loss = e.loss()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)
    assert all(p.grad is not None for p in vae.flow.parameters())
    assert torch.isfinite(vae.log_likelihood(x, k=4)).all()
    with pytest.raises(ValueError, match=rf"\(B, {x_dim}\)"):
        vae.elbo(torch.rand(3, 784))


@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_image_shape_errors(cls):
    with pytest.raises(ValueError, match=r"'conv' needs image_shape=\(C, H, W\) with C\*H\*W = x_dim = 3072"):
        cls(3072, 4, arch="conv")
    with pytest.raises(ValueError, match=r"image_shape = \(3, 32, 32\) has C\*H\*W = 3072 values, "
                                         r"expected x_dim = 784"):
        cls(784, 4, arch="conv", image_shape=(3, 32, 32))
    with pytest.raises(ValueError, match=r"H and W must be divisible by 4, got image_shape = \(3, 30, 32\)"):
        cls(3 * 30 * 32, 4, arch="conv", image_shape=(3, 30, 32))
    with pytest.raises(ValueError, match=r"must be \(C, H, W\), three positive ints, got \(32, 32\)"):
        cls(1024, 4, arch="conv", image_shape=(32, 32))
    with pytest.raises(ValueError, match="three positive ints"):
        cls(1024, 4, arch="conv", image_shape=(1, 32.0, 32))
    # an MLP reads flat vectors: any x_dim, and an image shape given is checked against it
    assert cls(3072, 4).image_shape is None and cls(784, 4).image_shape == (1, 28, 28)
    assert cls(3 * 30 * 32, 4, image_shape=(3, 30, 32)).image_shape == (3, 30, 32)
    with pytest.raises(ValueError, match="expected x_dim = 100"):
        cls(100, 4, image_shape=(1, 28, 28))
