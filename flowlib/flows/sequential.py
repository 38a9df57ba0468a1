"""Composition of flows: the change-of-variables formula applied K times
(Rezende & Mohamed 2015, eq. 7):

    z_K = f_K o ... o f_1 (z_0),   log|det dz_K/dz_0| = sum_k log|det df_k/dz_{k-1}|.
"""

from __future__ import annotations

import torch
from torch import nn

from . import stacking
from .base import Flow, ParameterSource

__all__ = ["Sequential"]


class Sequential(Flow):
    """``Sequential(f_1, ..., f_K)`` applies ``f_1`` first; ``inverse`` runs in reverse order.

    It is amortized when any part is; the context is then passed to the
    amortized parts only, which must all share one ``context_dim``. It takes a sample axis,
    ``z`` of shape ``(S, B, dim)``, when every part does. Its input is checked once, and each
    part is called on it unchecked (a part maps ``(B, dim)`` to ``(B, dim)``); consecutive parts
    of one class that defines ``_chain`` (planar, radial, Householder) are applied by it together,
    and where such a run is static its layers' parameters are one ``(K, P)`` tensor,
    ``stacks.<i>.theta``, each layer reading its row (:mod:`.stacking`; ``state_dict`` still lists
    them layer by layer).
    """

    def __init__(self, *flows: Flow):
        if not flows:
            raise ValueError("Sequential needs at least one Flow, got none")
        for i, f in enumerate(flows):
            if not isinstance(f, Flow):
                raise ValueError(f"Sequential expects Flow instances; argument {i} is {type(f).__name__}")
        dims = {f.dim for f in flows}
        if len(dims) != 1:
            raise ValueError(
                f"all flows in a Sequential must share one dim, got dims {[f.dim for f in flows]}"
            )
        context_dims = {f.context_dim for f in flows if f.context_dim is not None}
        if len(context_dims) > 1:
            raise ValueError(f"amortized parts must share one context_dim, got {sorted(context_dims)}")
        super().__init__(flows[0].dim, context_dims.pop() if context_dims else None)
        self.flows = nn.ModuleList(flows)
        self.sample_axis = all(f.sample_axis for f in flows)
        self.volume_preserving = all(f.volume_preserving for f in flows)
        stacks, self._stack_members = [], {}
        for i, j in self._runs():
            sources = [f.params for f in flows[i:j]
                       if isinstance(getattr(f, "params", None), ParameterSource)]
            stack = stacking.adopt(sources) if len(sources) == j - i else None
            if stack is None and len(sources) == j - i:  # a whole stack built by another sequence
                stack = stacking.whole(sources)
            if stack is None:  # rows held by other sequences' stacks: their parameters are ours too
                stacks += [held for held in stacking.holders(sources) if all(held is not s for s in stacks)]
                continue
            layer_keys = [f"flows.{k}.params.theta" for k in range(i, j)]
            self._stack_members[f"stacks.{len(stacks)}.theta"] = layer_keys
            stacks.append(stack)
        if stacks:
            self.stacks = nn.ModuleList(stacks)
            self.register_state_dict_post_hook(_save_rows)
            self.register_load_state_dict_pre_hook(_load_rows)

    def _runs(self):
        """``(i, j)`` for each run ``flows[i:j]`` that :meth:`_step` applies with one ``_chain`` call:
        consecutive layers of one class that defines it, all static or amortized alike."""
        flows, i = list(self.flows), 0
        while i < len(flows):
            f, j = flows[i], i + 1
            if type(f)._chain is not None:
                while j < len(flows) and type(flows[j]) is type(f) and flows[j].context_dim == f.context_dim:
                    j += 1
            yield i, j
            i = j

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, k: int) -> Flow:
        return self.flows[k]

    def _step(self, z, context):
        flows, total = list(self.flows), None
        for i, j in self._runs():
            f = flows[i]
            c = None if f.context_dim is None else context
            z, logdet = f._chain(flows[i:j], z, c) if j - i > 1 else f._step(z, c)
            if logdet is not None:
                total = logdet if total is None else total + logdet
        return z, total

    def _forward(self, z, context):
        z, total = self._step(z, context)
        return z, z.new_zeros(z.shape[:-1]) if total is None else total

    def _inverse(self, z, context):
        total = z.new_zeros(z.shape[:-1])
        for f in reversed(self.flows):
            z, logdet = f.inverse(z, context if f.amortized else None)
            total = total + logdet
        return z, total

    def trajectory(self, z: torch.Tensor, context: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[z_0, z_1, ..., z_K]``: the sample after each flow, for plots."""
        self._check_inputs(z, context, "z")
        out = [z]
        for f in self.flows:
            z, _ = f(z, context if f.amortized else None)
            out.append(z)
        return out


def _save_rows(module, state_dict, prefix, local_metadata):
    """``state_dict`` hook: the stacks' rows under their layers' names (:func:`stacking.save_rows`)."""
    stacking.save_rows(state_dict, prefix, module._stack_members)


def _load_rows(module, state_dict, prefix, *args):
    """``load_state_dict`` pre-hook: the layers' rows into their stacks (:func:`stacking.load_rows`)."""
    stacking.load_rows(state_dict, prefix, module._stack_members)
