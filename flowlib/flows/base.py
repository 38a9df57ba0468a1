"""The `Flow` interface shared by every flow, and the parameter source behind
static and amortized flows.

A flow is an invertible map ``f`` of ``R^dim``. ``forward(z, context)`` returns
``(f(z), log|det df/dz|)``; ``inverse(y, context)`` returns
``(f^{-1}(y), log|det df^{-1}/dy|)``. Shapes are ``(B, dim)`` in and out, and
``(B,)`` for the log-determinant: every sample is transformed on its own.

A flow built with ``context_dim=C`` is *amortized*: its parameters are
predicted per sample from a context of shape ``(B, C)`` (in a VAE, the
encoder's features ``h``). Without it the flow is *static*: its parameters are
free and shared by every sample.

Every flowlib flow (``sample_axis = True``) also takes ``z`` of shape ``(S, B, dim)``: ``S``
samples for each of ``B`` context rows, with the context still ``(B, C)``. The parameters are
then computed once per context row and shared by its ``S`` samples (broadcast over the sample
axis), which is what importance sampling needs: ``K`` samples of one image share its flow.
The log-determinant has shape ``(S, B)``. A static flow's parameters are never copied per sample.
"""

from __future__ import annotations

import torch
from torch import nn

from .stacking import rows_of

__all__ = ["Flow", "ParameterSource", "check_inputs", "check_size"]


def check_size(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_inputs(owner: str, dim: int, context_dim: int | None, z, context, name: str = "z",
                 sample_axis: bool = False) -> None:
    """Raise ValueError unless ``z`` is ``(B, dim)`` (or ``(S, B, dim)`` with ``sample_axis``) and
    ``context`` matches ``context_dim``: None for a static owner, ``(B, context_dim)`` otherwise."""
    expected = f"(B, {dim}) or (S, B, {dim})" if sample_axis else f"(B, {dim})"
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(z).__name__}")
    if z.dim() not in ((2, 3) if sample_axis else (2,)) or z.shape[-1] != dim:
        raise ValueError(
            f"{owner}: expected {name} of shape {expected}, got {tuple(z.shape)}"
        )
    if not z.is_floating_point():
        raise ValueError(f"{owner}: expected a floating-point {name}, got {z.dtype}")
    if context_dim is None:
        if context is not None:
            raise ValueError(
                f"{owner} is static (built without context_dim) and takes no "
                f"context, got one of shape {tuple(context.shape)}; build it with "
                "context_dim=C to make it amortized"
            )
        return
    expected_c = f"({z.shape[-2]}, {context_dim})"
    if context is None:
        raise ValueError(
            f"{owner} is amortized (context_dim={context_dim}) and needs a "
            f"context of shape {expected_c}, got None"
        )
    if not isinstance(context, torch.Tensor):
        raise ValueError(f"context must be a torch.Tensor of shape {expected_c}")
    if context.dim() != 2 or context.shape != (z.shape[-2], context_dim):
        raise ValueError(
            f"{owner}: expected context of shape {expected_c}, "
            f"got {tuple(context.shape)}"
        )


class Flow(nn.Module):
    """Base class: validates inputs, then calls ``_forward`` / ``_inverse``.

    Subclasses implement ``_forward(z, context)`` and, where a closed form or a
    solver exists, ``_inverse(y, context)``; both receive inputs already
    checked, with ``context`` None for a static flow. A subclass that sets
    ``sample_axis = True`` promises that both also take ``z`` of shape ``(S, B, dim)`` with a
    context of shape ``(B, C)`` (see the module's docstring); every flowlib flow does.
    ``volume_preserving = True`` promises that ``log|det| = 0`` everywhere, so that a
    :class:`Sequential` need not add it (a subclass whose log-determinant is not 0 must set it
    back to False).
    """

    sample_axis = False
    volume_preserving = False
    # Optional: a staticmethod ``_chain(layers, z, context) -> (z, logdet or None)`` applying
    # several layers of exactly this class in a row (all static or all amortized), with inputs
    # already checked; :class:`Sequential` calls it for such runs, so that their parameters are
    # transformed in one vectorized pass instead of one small pass per layer.
    _chain = None

    def __init__(self, dim: int, context_dim: int | None = None):
        super().__init__()
        check_size("dim", dim)
        check_size("context_dim", context_dim, allow_none=True)
        self.dim = dim
        self.context_dim = context_dim

    @property
    def amortized(self) -> bool:
        """True when the parameters are predicted from a context."""
        return self.context_dim is not None

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None):
        self._check_inputs(z, context, "z")
        return self._forward(z, context)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        self._check_inputs(z, context, "z")
        return self._inverse(z, context)

    def _forward(self, z, context):
        raise NotImplementedError

    def _inverse(self, z, context):
        raise NotImplementedError(
            f"{type(self).__name__} has no inverse in closed form and flowlib "
            "implements no solver for it; use it where only the forward "
            "direction is needed (a VAE posterior)."
        )

    def _check_inputs(self, z, context, name: str) -> None:
        check_inputs(type(self).__name__, self.dim, self.context_dim, z, context, name, self.sample_axis)

    def _step(self, z, context):
        """``(f(z), log|det|)`` for inputs already checked, or ``(f(z), None)`` where the
        log-determinant is known to be 0: what :class:`Sequential` calls for each part."""
        if self.volume_preserving:
            return self._forward(z, context)[0], None
        return self._forward(z, context)

    def extra_repr(self) -> str:
        s = f"dim={self.dim}"
        if self.context_dim is not None:
            s += f", context_dim={self.context_dim}"
        return s


class ParameterSource(nn.Module):
    """Raw (unconstrained) parameters of a flow.

    Static (``context_dim=None``): a free vector ``theta`` of ``size`` numbers, shared by
    every sample. Amortized: ``theta = W h + c``, a linear map of the context ``h``, one row
    per context row, as in Rezende & Mohamed (2015, Sec. 4.2) and van den Berg et al. (2018,
    Sec. 3). Constraints are applied by each flow on top of these raw values, so any real
    ``theta`` gives a valid flow.

    ``raw(context)`` gives ``(size,)`` (static) or ``(B, size)`` (amortized): what the flows
    compute with, broadcast against ``z`` of shape ``(B, D)`` or ``(S, B, D)``. Calling the
    source, ``source(batch_size, context)``, gives one row per sample, ``(B, size)``.

    In a :class:`~.sequential.Sequential`, the static sources of a run of layers keep their
    ``theta`` in one tensor of the sequence (:mod:`.stacking`): ``theta`` is then that tensor's row.
    """

    def __init__(self, size: int, context_dim: int | None = None, init_std: float = 0.01,
                 init_mean: float | torch.Tensor = 0.0):
        super().__init__()
        self.size = size
        bias = torch.randn(size) * init_std + init_mean
        if context_dim is None:
            self.theta = nn.Parameter(bias)
            self.linear = None
        else:
            self.linear = nn.Linear(context_dim, size)
            with torch.no_grad():
                self.linear.weight.normal_(0.0, init_std)
                self.linear.bias.copy_(bias)

    def __getattr__(self, name: str):
        if name == "theta" and "_stack" in self.__dict__ and "theta" not in self._parameters:
            # a row of the tensor of a run of layers (.stacking)
            stack, k = self.__dict__["_stack"]
            return stack.theta[k]
        return super().__getattr__(name)

    def raw(self, context: torch.Tensor | None) -> torch.Tensor:
        """``theta``: ``(size,)`` for a static source, ``(B, size)`` from a context ``(B, C)``."""
        if self.linear is None:
            return self.theta
        return self.linear(context)

    @staticmethod
    def stack(sources, context: torch.Tensor | None) -> torch.Tensor:
        """The raw parameters of several sources of one size, all static or all amortized, stacked
        on the second-to-last axis: ``(K, size)``, or ``(B, K, size)`` from a context ``(B, C)``, the
        ``K`` linear maps applied as one matrix product with their stacked weights."""
        if context is None:
            stack = sources[0].__dict__.get("_stack")
            rows = None if stack is None else rows_of(stack[0], sources)  # no copy: the run's own tensor
            return torch.stack([source.theta for source in sources]) if rows is None else rows
        if len(sources) == 1:
            return sources[0].linear(context).unsqueeze(1)
        weight = torch.cat([source.linear.weight for source in sources])
        bias = torch.cat([source.linear.bias for source in sources])
        return nn.functional.linear(context, weight, bias).view(context.shape[0], len(sources), -1)

    def forward(self, batch_size: int, context: torch.Tensor | None) -> torch.Tensor:
        if self.linear is None:
            return self.theta.expand(batch_size, self.size)
        return self.linear(context)
