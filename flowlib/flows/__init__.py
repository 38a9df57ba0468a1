"""Normalizing flows with exact log-determinants.

Every flow maps ``z`` of shape ``(B, dim)`` to ``(z_out, logdet)`` with
``logdet = log|det dz_out/dz|`` of shape ``(B,)``; see :class:`Flow`.
Importing this package needs only torch.
"""

from .affine import DiagonalAffine
from .base import Flow, ParameterSource
from .householder import Householder
from .iaf import IAF
from .made import MADE
from .nice import AdditiveCoupling, Scale
from .pcpmap import PCPMap
from .planar import Planar
from .radial import Radial
from .reverse import Reverse
from .sequential import Sequential
from .sylvester import Sylvester

__all__ = [
    "Flow",
    "ParameterSource",
    "Planar",
    "Radial",
    "Householder",
    "AdditiveCoupling",
    "Scale",
    "MADE",
    "IAF",
    "Sylvester",
    "PCPMap",
    "Reverse",
    "DiagonalAffine",
    "Sequential",
]
