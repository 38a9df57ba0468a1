"""The VAE: ELBO parts, KL against its closed form, the importance-sampled likelihood."""

from __future__ import annotations

import pytest
import torch

from flowlib.flows import Planar
from flowlib.flows.registry import FLOWS, build
from flowlib.model.vae import VAE, log_diag_normal, log_standard_normal


def _x(n=8, seed=0):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed)).bernoulli()


def test_monte_carlo_kl_agrees_with_the_analytic_gaussian_kl():
    torch.manual_seed(0)
    vae = VAE(z_dim=5, hidden=(32,)).double()
    x = _x(3).double()
    mu, log_var, _ = vae.encoder(x)
    analytic = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(-1)
    z, log_q = vae.posterior(x, 200_000)
    mc = (log_q - log_standard_normal(z)).mean(0)
    # the MC error is about std / sqrt(n); 5 standard errors
    stderr = (log_q - log_standard_normal(z)).std(0) / 200_000**0.5
    assert ((mc - analytic).abs() < 5 * stderr).all(), (mc, analytic)


def test_elbo_parts_add_up_and_single_sample_likelihood_is_the_elbo():
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(32,), flow=Planar(4, context_dim=32))
    x = _x()
    torch.manual_seed(1)
    e = vae.elbo(x)
    torch.testing.assert_close(e.elbo, e.reconstruction + e.log_p_z - e.log_q)
    torch.manual_seed(1)
    torch.testing.assert_close(vae.log_likelihood(x, k=1), e.elbo.detach())


def test_importance_sampling_tightens_the_bound_and_chunking_does_not_matter():
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(32,))
    x = _x(16)
    elbo = torch.stack([vae.elbo(x).elbo.detach() for _ in range(50)]).mean(0)
    torch.manual_seed(2)
    ll = vae.log_likelihood(x, k=2000)
    assert (ll > elbo).float().mean() > 0.9
    assert ll.mean() > elbo.mean()
    torch.manual_seed(2)
    ll_small_chunks = vae.log_likelihood(x, k=2000, max_rows=16 * 7)
    assert (ll - ll_small_chunks).abs().max() < 0.5  # different chunks, same estimator: close


def test_log_q_of_a_flow_posterior_is_the_base_density_minus_the_logdet():
    torch.manual_seed(0)
    flow = Planar(3, context_dim=16, init_std=0.5)
    vae = VAE(z_dim=3, hidden=(16,), flow=flow).double()
    x = _x(4).double()
    torch.manual_seed(5)
    zK, log_q = vae.posterior(x, 2)
    torch.manual_seed(5)
    mu, log_var, h = vae.encoder(x)
    z0 = mu + (0.5 * log_var).exp() * torch.randn(2, 4, 3, dtype=torch.float64)
    z, logdet = flow(z0.reshape(-1, 3), h.repeat(2, 1))
    torch.testing.assert_close(zK.reshape(-1, 3), z)
    torch.testing.assert_close(log_q.reshape(-1), log_diag_normal(z0, mu, log_var).reshape(-1) - logdet)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("amortized", [False, True])
def test_every_posterior_family_trains_one_step(name, amortized):
    torch.manual_seed(0)
    options = {"hidden": 16} if name == "iaf" else {}
    flow = build(name, 4, context_dim=32 if amortized else None, length=2, **options)
    vae = VAE(z_dim=4, hidden=(32,), flow=flow)
    loss = vae.elbo(_x()).loss(beta=0.5)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, 784\)"):
        VAE(z_dim=2, hidden=(8,)).elbo(torch.rand(3, 783))
    with pytest.raises(ValueError, match="context_dim = h_dim = 8"):
        VAE(z_dim=2, hidden=(8,), flow=Planar(2, context_dim=5))
    with pytest.raises(ValueError, match="z_dim = 2"):
        VAE(z_dim=2, hidden=(8,), flow=Planar(3))
    with pytest.raises(ValueError, match="arch"):
        VAE(z_dim=2, arch="resnet")
    with pytest.raises(ValueError, match="flow must be one of"):
        build("maf", 4, length=2)
    with pytest.raises(ValueError, match="k must be"):
        VAE(z_dim=2, hidden=(8,)).log_likelihood(_x(2), k=0)


def test_a_vae_of_injected_parts():
    """VAE.from_parts takes any encoder, decoder and flow (a bare flow, wrapped in its posterior;
    tests/test_posterior_object.py gives it the posterior object) and reads the sizes from them (no 784, no
    h_dim written anywhere); the book's constructor is the same model with the same state-dict names."""
    from flowlib.model.encoders import Decoder, Encoder

    torch.manual_seed(0)
    vae = VAE.from_parts(Encoder(10, 3, (8,)), Decoder(10, 3, (8,)), Planar(3, context_dim=8))
    assert (vae.x_dim, vae.z_dim, vae.h_dim) == (10, 3, 8)
    x = torch.rand(4, 10).bernoulli()
    assert torch.isfinite(vae.elbo(x).loss()) and vae.log_likelihood(x, k=3).shape == (4,)
    torch.manual_seed(0)
    book = VAE(10, 3, (8,), Planar(3, context_dim=8))
    assert list(book.state_dict()) == list(vae.state_dict())
    with pytest.raises(ValueError, match="context_dim = h_dim = 8"):
        VAE.from_parts(Encoder(10, 3, (8,)), Decoder(10, 3, (8,)), Planar(3, context_dim=5))
    with pytest.raises(ValueError, match="the decoder maps z_dim = 2"):
        VAE.from_parts(Encoder(10, 3, (8,)), Decoder(10, 2, (8,)))
