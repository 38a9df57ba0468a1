"""Build the flow of a VAE posterior by name: the families of the book's MNIST table."""

from __future__ import annotations

from . import (
    IAF,
    AdditiveCoupling,
    Flow,
    Householder,
    PCPMap,
    Planar,
    Radial,
    Reverse,
    Scale,
    Sequential,
    Sylvester,
)

__all__ = ["FLOWS", "build_flow"]

FLOWS = ("none", "planar", "radial", "householder", "nice", "iaf", "sylvester", "pcpmap")


def build_flow(name: str, length: int, z_dim: int, context_dim: int | None,
               sylvester_variant: str = "orthogonal", iaf_hidden: int = 320,
               sylvester_M: int | None = None, sylvester_reflections: int | None = None) -> Flow | None:
    """``length`` layers of the family ``name`` on ``R^z_dim``; amortized from a context of
    size ``context_dim``, or static when it is None. ``"none"`` gives None.

    - ``planar``, ``radial``, ``householder``, ``pcpmap``: ``length`` layers of that flow.
    - ``nice``: ``length`` additive couplings alternating the kept half, then a scaling layer.
    - ``iaf``: ``length`` IAF steps (MADE width ``iaf_hidden``) with the order reversed between steps.
    - ``sylvester``: ``length`` Sylvester layers of ``sylvester_variant``; the triangular
      variant alternates identity and reversal permutations, as in van den Berg et al. (2018).
      ``sylvester_M`` (orthogonal: columns of Q) and ``sylvester_reflections`` (householder:
      reflections per Q) default to ``z_dim``.
    """
    if name not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {name!r}")
    if name == "none":
        return None
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"flow length must be a positive int, got {length!r}")
    c = context_dim
    if name == "planar":
        layers = [Planar(z_dim, context_dim=c) for _ in range(length)]
    elif name == "radial":
        layers = [Radial(z_dim, context_dim=c) for _ in range(length)]
    elif name == "householder":
        layers = [Householder(z_dim, context_dim=c) for _ in range(length)]
    elif name == "nice":
        layers = [AdditiveCoupling(z_dim, context_dim=c, hidden=128, swap=k % 2 == 1) for k in range(length)]
        layers.append(Scale(z_dim, context_dim=c))
    elif name == "iaf":
        layers = []
        for k in range(length):
            if k:
                layers.append(Reverse(z_dim))
            layers.append(IAF(z_dim, context_dim=c, hidden=iaf_hidden))
    elif name == "sylvester":
        extra = {"orthogonal": {"M": sylvester_M}, "householder": {"n_reflections": sylvester_reflections},
                 "triangular": {}}.get(sylvester_variant, {})
        layers = [Sylvester(z_dim, context_dim=c, variant=sylvester_variant, **extra,
                            permute=sylvester_variant == "triangular" and k % 2 == 1) for k in range(length)]
    else:
        layers = [PCPMap(z_dim, context_dim=c) for _ in range(length)]
    return Sequential(*layers)
