"""The VAE of the book: its networks (:mod:`.encoders`), the model with its ELBO and importance
sampling (:mod:`.vae`), and the whitened 2-D posterior of chapter 11 (:mod:`.whitened`).
Imports torch and :mod:`flowlib.flows` only."""
