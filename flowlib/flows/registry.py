"""Flows by name: the one place that turns a name and options into a flow. The command line, the
experiment tables, the 2-D drivers, the tests and the benchmarks all build their flows here.

- :func:`layer` builds one layer of a family, ``LAYERS[name](dim, context_dim=..., **options)``.
- :func:`build` builds a flow of ``length`` layers as the book stacks them (the families of the
  MNIST table, :data:`FLOWS`); ``"none"`` gives None (the VAE's plain diagonal Gaussian).

Options are the layers' own constructor arguments (``hidden``, ``n_layers``, ``variant``, ``M``,
``n_reflections``, ...); one a family does not take is an error, not silently ignored.
"""

from __future__ import annotations

from .affine import DiagonalAffine
from .base import Flow
from .householder import Householder
from .iaf import IAF
from .nice import AdditiveCoupling, Scale
from .pcpmap import PCPMap
from .planar import Planar
from .radial import Radial
from .reverse import Reverse
from .sequential import Sequential
from .sylvester import Sylvester

__all__ = ["LAYERS", "FLOWS", "DEFAULTS", "layer", "build"]

LAYERS = {
    "planar": Planar,
    "radial": Radial,
    "householder": Householder,
    "coupling": AdditiveCoupling,
    "scale": Scale,
    "iaf": IAF,
    "sylvester": Sylvester,
    "pcpmap": PCPMap,
    "reverse": Reverse,
    "affine": DiagonalAffine,
}

FLOWS = ("none", "planar", "radial", "householder", "nice", "iaf", "sylvester", "pcpmap")

# The book's defaults where they differ from a layer's own: NICE couplings of width 128 and IAF
# steps of MADE width 320 (van den Berg et al. 2018), as in the MNIST table.
DEFAULTS = {"nice": {"hidden": 128}, "iaf": {"hidden": 320}}


def layer(name: str, dim: int, *, context_dim: int | None = None, **options) -> Flow:
    """One layer of the family ``name`` (one of :data:`LAYERS`) on ``R^dim``; amortized from a
    context of size ``context_dim``, or static when it is None."""
    if name not in LAYERS:
        raise ValueError(f"unknown layer {name!r}; expected one of {sorted(LAYERS)}")
    try:
        return LAYERS[name](dim, context_dim=context_dim, **options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise TypeError(f"the {name!r} layer does not take the options {sorted(options)} "
                            f"({err})") from None
        raise


def build(name: str, dim: int, *, context_dim: int | None = None, length: int = 1,
          **options) -> Sequential | None:
    """``length`` layers of the family ``name`` (one of :data:`FLOWS`) on ``R^dim``, amortized from
    a context of size ``context_dim`` or static when it is None, as one :class:`Sequential`.

    - ``planar``, ``radial``, ``householder``, ``pcpmap``: ``length`` layers of that flow.
    - ``nice``: ``length`` additive couplings alternating the kept half, then a scaling layer
      (Dinh et al. 2014); ``hidden`` defaults to 128.
    - ``iaf``: ``length`` IAF steps with the variable order reversed between steps (Kingma et al.
      2016); ``hidden`` defaults to 320.
    - ``sylvester``: ``length`` layers of ``variant`` (default ``"orthogonal"``); the triangular
      variant alternates identity and reversal permutations, as in van den Berg et al. (2018).
      ``M`` (orthogonal: columns of Q) and ``n_reflections`` (householder: reflections per Q)
      default to ``dim``; None means the default.
    - ``none``: None (no flow).

    ``options`` go to every layer of the family; an option it does not take is a ``TypeError``.
    """
    if name not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {name!r}")
    if name == "none":  # its length is not used (the tables' rows give it 0)
        if options:
            raise TypeError(f"flow 'none' takes no options, got {sorted(options)}")
        return None
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"flow length must be a positive int, got {length!r}")
    options = {**DEFAULTS.get(name, {}), **options}
    c = context_dim
    if name == "nice":
        layers = [layer("coupling", dim, context_dim=c, swap=k % 2 == 1, **options) for k in range(length)]
        layers.append(layer("scale", dim, context_dim=c))
    elif name == "iaf":
        layers = []
        for k in range(length):
            if k:
                layers.append(layer("reverse", dim))
            layers.append(layer("iaf", dim, context_dim=c, **options))
    elif name == "sylvester":
        options = {k: v for k, v in options.items() if not (k in ("M", "n_reflections") and v is None)}
        triangular = options.get("variant", "orthogonal") == "triangular"
        layers = [layer("sylvester", dim, context_dim=c, permute=triangular and k % 2 == 1, **options)
                  for k in range(length)]
    else:
        layers = [layer(name, dim, context_dim=c, **options) for _ in range(length)]
    return Sequential(*layers)
