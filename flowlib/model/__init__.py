"""The VAE of the book: its networks (:mod:`.encoders`), its approximate posterior ``q(z | x)``
(:mod:`.posterior`: a diagonal Gaussian and a flow, sampling and density), the model of injected
parts with its ELBO and importance sampling (:mod:`.vae`), and the VAE whose posterior is whitened,
chapter 11's (:mod:`.whitened`). Imports torch and :mod:`flowlib.flows` only."""
