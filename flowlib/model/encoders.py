"""Encoder and decoder networks of the VAE: an MLP (Rezende & Mohamed 2015; Tomczak &
Welling 2016: two hidden layers of 300 units) or gated convolutions (van den Berg et al.
2018, Appendix: ``h = conv_A(x) * sigmoid(conv_B(x))``, Dauphin et al. 2017).

The convolutional networks take images of any shape ``image_shape = (C, H, W)`` (flattened:
``x_dim = C * H * W``; ``(1, 28, 28)`` by default when ``x_dim = 784``) whose ``H`` and ``W``
are divisible by 4: two stride-2 layers halve them twice, and a last convolution with an
``(H/4, W/4)`` kernel (7 x 7 for MNIST, as in van den Berg et al.) leaves ``1 x 1`` features. The
decoder mirrors it."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Encoder", "Decoder", "ARCHS", "feature_size"]

ARCHS = ("mlp", "conv")
CONV_FEATURES = 256  # the gated convolutional encoder's last layer (van den Berg et al. 2018)


def feature_size(hidden, arch: str = "mlp") -> int:
    """``h_dim``, the size of the features ``h`` an :class:`Encoder` of ``hidden`` / ``arch`` gives
    (what an amortized flow takes as context), known before the encoder is built."""
    return CONV_FEATURES if arch == "conv" else hidden[-1]


class Gated(nn.Module):
    """``a(x) * sigmoid(b(x))`` for two copies ``a``, ``b`` of one layer type."""

    def __init__(self, make):
        super().__init__()
        self.a, self.b = make(), make()

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


def _mlp(sizes):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Softplus()]
    return nn.Sequential(*layers)


def _check(x_dim, z_dim, hidden, arch, image_shape=None) -> tuple[int, int, int] | None:
    """Validate the arguments; return the image shape ``(C, H, W)`` (None for an MLP given none, on
    inputs that are not 784 pixels)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if not hidden or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in hidden):
        raise ValueError(f"hidden must be a non-empty tuple of positive ints, got {hidden!r}")
    for name, v in (("x_dim", x_dim), ("z_dim", z_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if image_shape is None:
        if x_dim == 784:
            return 1, 28, 28
        if arch == "conv":
            raise ValueError(f"arch='conv' needs image_shape=(C, H, W) with C*H*W = x_dim = {x_dim} (the "
                             f"default (1, 28, 28) is for x_dim = 784)")
        return None
    if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in image_shape)):
        raise ValueError(f"image_shape must be (C, H, W), three positive ints, got {image_shape!r}")
    C, H, W = image_shape = tuple(image_shape)
    if C * H * W != x_dim:
        raise ValueError(f"image_shape = {image_shape} has C*H*W = {C * H * W} values, expected "
                         f"x_dim = {x_dim}")
    if arch == "conv" and (H % 4 or W % 4):
        raise ValueError(f"arch='conv' halves H and W twice (two stride-2 layers): H and W must be divisible "
                         f"by 4, got image_shape = {image_shape}")
    return C, H, W


class Encoder(nn.Module):
    """``x -> (mu, log_var, h)``: Gaussian parameters of ``q_0(z | x)`` and the features ``h``
    (size ``h_dim``) that amortized flows take as context. ``x`` is flat, ``(B, x_dim)``; with
    ``arch="conv"`` it is read as images of ``image_shape = (C, H, W)`` (see the module docstring)."""

    def __init__(self, x_dim: int, z_dim: int, hidden=(300, 300), arch: str = "mlp", image_shape=None):
        super().__init__()
        self.image_shape = _check(x_dim, z_dim, hidden, arch, image_shape)
        self.x_dim, self.z_dim, self.h_dim = x_dim, z_dim, feature_size(hidden, arch)
        if arch == "mlp":
            self.features = _mlp((x_dim, *hidden))
        else:
            def conv(i, o, k, s, p):
                return Gated(lambda: nn.Conv2d(i, o, k, s, p))
            C, H, W = self.image_shape
            self.features = nn.Sequential(
                nn.Unflatten(1, (C, H, W)),
                conv(C, 32, 5, 1, 2), conv(32, 32, 5, 2, 2), conv(32, 64, 5, 1, 2),
                conv(64, 64, 5, 2, 2), conv(64, 64, 5, 1, 2), conv(64, CONV_FEATURES, (H // 4, W // 4), 1, 0),
                nn.Flatten(),
            )
        self.mu = nn.Linear(self.h_dim, z_dim)
        self.log_var = nn.Linear(self.h_dim, z_dim)

    def forward(self, x: torch.Tensor):
        h = self.features(x)
        return self.mu(h), self.log_var(h), h


class Decoder(nn.Module):
    """``z -> logits`` of the Bernoulli ``p(x | z)``, shape ``(B, x_dim)`` (with ``arch="conv"``,
    images of ``image_shape = (C, H, W)``, flattened)."""

    def __init__(self, x_dim: int, z_dim: int, hidden=(300, 300), arch: str = "mlp", image_shape=None):
        super().__init__()
        self.image_shape = _check(x_dim, z_dim, hidden, arch, image_shape)
        self.x_dim, self.z_dim = x_dim, z_dim
        if arch == "mlp":
            self.net = nn.Sequential(_mlp((z_dim, *hidden)), nn.Linear(hidden[-1], x_dim))
        else:
            def deconv(i, o, k, s, p, op=0):
                return Gated(lambda: nn.ConvTranspose2d(i, o, k, s, p, op))
            C, H, W = self.image_shape
            self.net = nn.Sequential(
                nn.Unflatten(1, (z_dim, 1, 1)),
                deconv(z_dim, 64, (H // 4, W // 4), 1, 0), deconv(64, 64, 5, 1, 2),
                deconv(64, 32, 5, 2, 2, 1), deconv(32, 32, 5, 1, 2), deconv(32, 32, 5, 2, 2, 1),
                deconv(32, 32, 5, 1, 2),
                nn.Conv2d(32, C, 1), nn.Flatten(),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
