"""The book's helpers: what the chapters need to find their files, draw their figures and set
their exercises. The library (flows, VAE, data, training) never imports this package."""
