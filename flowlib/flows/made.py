"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015),
with a context input as used by IAF (Kingma et al. 2016, Sec. 4 and Fig. 2).

Every input ``z_j`` carries a degree ``d(j)`` in ``1..D`` (its place in the
variable order). A hidden unit of degree ``k`` may see inputs of degree ``<= k``
(and hidden units of the previous layer of degree ``<= k``); an output for
variable ``j`` may see hidden units of degree ``< d(j)`` (eq. 12-13). Hence
output ``j`` depends only on the inputs that come before ``j`` in the order:
the Jacobian d(output)/d(input) is strictly triangular under the order.

The hidden layers' activation is ELU by default (Kingma et al. 2016 use ELU in their IAF's
networks; computed from ``exp``, not PyTorch's slower ``expm1``: :mod:`.elu`);
``activation="relu"`` gives the ReLU of Germain et al. (2015) and of the MADEs of nflows,
normflows and pyro (``bench/peers.py`` times both against every one of them).

Hidden degrees run over ``0..D-1``. Degree-0 units see no input at all, only
the context ``h``; they are what carries ``h`` to the *first* variable in the
order, whose outputs would otherwise be constants (a bug in several public
implementations, where the context never reaches that output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_inputs, check_size
from .elu import elu

__all__ = ["MADE", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``y = (W * M) x + b`` with a fixed 0/1 mask ``M`` (Germain et al. 2015, eq. 10)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive network ``z, h -> (m, s)``: each of ``n_outputs`` outputs has shape
    ``(B, dim)`` and its entry ``j`` depends on ``z_i`` only for ``order[i] < order[j]``.
    ``z`` may also be ``(S, B, dim)`` with ``h`` of shape ``(B, C)``: the context's layer is
    then computed once per row of ``h`` and shared by the ``S`` samples.

    ``order`` is a permutation of ``1..dim`` giving each coordinate's degree
    (default: the natural order ``1, 2, ..., dim``). ``activation`` is ``"elu"`` (default) or
    ``"relu"``, applied after every hidden layer.
    """

    ACTIVATIONS = {"elu": elu, "relu": F.relu}

    def __init__(
        self,
        dim: int,
        context_dim: int | None = None,
        hidden: int = 64,
        n_layers: int = 2,
        n_outputs: int = 2,
        order: torch.Tensor | None = None,
        activation: str = "elu",
    ):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(self.ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        for name, value in (
            ("dim", dim),
            ("hidden", hidden),
            ("n_layers", n_layers),
            ("n_outputs", n_outputs),
        ):
            check_size(name, value)
        check_size("context_dim", context_dim, allow_none=True)
        self.dim, self.context_dim, self.n_outputs = dim, context_dim, n_outputs
        if order is None:
            order = torch.arange(1, dim + 1)
        order = torch.as_tensor(order)
        if order.shape != (dim,) or not torch.equal(order.sort().values, torch.arange(1, dim + 1)):
            raise ValueError(
                f"order must be a permutation of 1..{dim} of shape ({dim},), got {order.tolist()}"
            )
        self.register_buffer("order", order.long())

        degrees_prev = self.order
        layers = []
        for _ in range(n_layers):
            degrees = torch.arange(hidden) % dim  # 0..dim-1
            layers.append(MaskedLinear(len(degrees_prev), hidden, degrees[:, None] >= degrees_prev[None, :]))
            degrees_prev = degrees
        self.hidden_layers = nn.ModuleList(layers)
        out_degrees = self.order.repeat(n_outputs)
        self.output_layer = MaskedLinear(
            hidden, n_outputs * dim, out_degrees[:, None] > degrees_prev[None, :]
        )
        self.context_layer = None if context_dim is None else nn.Linear(context_dim, hidden)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None):
        check_inputs("MADE", self.dim, self.context_dim, z, context, sample_axis=True)
        return self._outputs(z, context)

    def _outputs(self, z, context):
        return self._joint_output(z, context).unflatten(-1, (self.n_outputs, self.dim)).unbind(-2)

    def _joint_output(self, z, context):
        """The output layer's result, ``(..., n_outputs * dim)``: the outputs side by side in each
        row (output ``k`` is entries ``k * dim`` to ``(k + 1) * dim``)."""
        x = self.hidden_layers[0](z)
        if self.context_layer is not None:
            x = x + self.context_layer(context)
        # ReLU in place: the pre-activations are fresh tensors that nothing else needs (elu keeps
        # exp(min(x, 0)), its derivative, and returns a new tensor)
        act = self.ACTIVATIONS[self.activation]
        x = act(x, inplace=True)
        for layer in self.hidden_layers[1:]:
            x = act(layer(x), inplace=True)
        return self.output_layer(x)
