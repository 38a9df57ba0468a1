"""A VAE whose posterior's flow acts on the whitened noise, before the encoder's affine map
(:class:`flowlib.model.posterior.FlowPosterior` with ``whitened=True``):

    eps ~ N(0, I),   u = f(eps; h(x)),   z = mu(x) + sigma(x) * u,
    log q(z | x) = log N(eps; 0, I) - log|det df/d eps| - sum_i log sigma_i(x).

:class:`flowlib.model.vae.VAE` applies the flow after the affine map (Rezende & Mohamed 2015, eq. 13),
so the flow works at the posterior's own scale. With a two-dimensional latent space the
posteriors are narrow (``sigma`` of a few hundredths) while flows start near the identity at
scale one: a planar layer's initial shift, harmless for a unit-scale density, then moves ``z`` by
many posterior widths. Here the flow sees unit-scale noise wherever ``x`` puts its posterior.
Both are the same family of maps (an affine map composed with a flow), ordered differently.
"""

from __future__ import annotations

from ..flows.base import Flow
from .posterior import FlowPosterior
from .vae import VAE

__all__ = ["WhitenedFlowVAE"]


class WhitenedFlowVAE(VAE):
    """:class:`~flowlib.model.vae.VAE` whose posterior is ``FlowPosterior(flow, whitened=True)``:
    ``z = mu + sigma * f(eps; h)`` (see the module docstring). Same constructor, same
    :meth:`~flowlib.model.vae.VAE.from_parts` (a bare flow, or None, is wrapped whitened; a
    posterior given must be whitened), same state-dict names."""

    @classmethod
    def _posterior_of(cls, posterior) -> FlowPosterior:
        if posterior is None or isinstance(posterior, Flow):
            return FlowPosterior(posterior, whitened=True)
        if isinstance(posterior, FlowPosterior) and not posterior.whitened:
            raise ValueError("a WhitenedFlowVAE's posterior is whitened, got FlowPosterior(whitened=False); "
                             "use VAE.from_parts for a flow after the affine map")
        return super()._posterior_of(posterior)
