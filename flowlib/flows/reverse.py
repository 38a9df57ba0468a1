"""Reversal of the coordinates, ``z'_i = z_{D+1-i}`` (Kingma et al. 2016, Sec. 6: the
variable order is reversed between IAF steps). A permutation: ``log|det| = 0``."""

from __future__ import annotations

from .base import Flow

__all__ = ["Reverse"]


class Reverse(Flow):
    """``z -> z[:, ::-1]``; its own inverse. It has no parameters; built with
    ``context_dim`` it takes (and ignores) a context, like the amortized flows beside it."""

    sample_axis = True
    volume_preserving = True

    def __init__(self, dim: int, context_dim: int | None = None):
        super().__init__(dim, context_dim)

    def _forward(self, z, context):
        return z.flip(-1), z.new_zeros(z.shape[:-1])

    def _inverse(self, z, context):
        return self._forward(z, context)
