"""A parameter source narrowed to the outputs its flow reads.

A Sylvester layer (van den Berg et al. 2018, eq. 13) takes ``R`` and ``R~`` upper triangular, so
of the ``2 M^2 + M`` raw numbers that a full ``[R, R~, b]`` head would give, the strict lower
triangles (``M (M - 1)`` numbers) are never read. Kept, they cost a full share of the head's
matrix products, and their parameters get a zero gradient at every step: Adam still updates them,
and on a CPU the square root of its all-zero second moment is several times slower than on ordinary
values. :func:`keep_outputs` narrows a :class:`~.base.ParameterSource` to the outputs its flow
reads, after it has drawn its initial values at full size: the kept numbers start where they
started before (the same random draws, no extra ones), so a seeded model is initialized as before.

The saved format does not change: ``state_dict()`` gives the full-size tensors, the unread rows
zero, and ``load_state_dict`` takes full-size tensors (from older checkpoints too) and keeps the
read rows. An optimizer's state saved by code from before the narrowing lists full-size moment
estimates: :func:`narrow_optimizer_state` keeps their read rows, as the training loop does when it
resumes a run. The unread rows had zero gradients there, so their moments were zero and nothing
is lost.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["keep_outputs", "narrow_optimizer_state"]


def keep_outputs(source: nn.Module, index: torch.Tensor) -> None:
    """Narrow ``source`` (a :class:`~.base.ParameterSource`) in place to the outputs ``index``
    (distinct positions in ``0 .. source.size - 1``, in the order the flow will read them)."""
    if "_kept" in source.__dict__:
        raise ValueError("keep_outputs: this parameter source is already narrowed")
    index = torch.as_tensor(index)
    if (index.dim() != 1 or index.dtype != torch.long or index.numel() == 0 or int(index.min()) < 0
            or int(index.max()) >= source.size or index.unique().numel() != index.numel()):
        raise ValueError("keep_outputs expects a 1-D LongTensor of distinct positions in "
                         f"[0, {source.size}); got {index.dtype} of shape {tuple(index.shape)}")
    full_size = source.size
    with torch.no_grad():
        for module, name in _free_tensors(source):
            old = module._parameters[name]
            module._parameters[name] = nn.Parameter(old[index].clone(), requires_grad=old.requires_grad)
    if source.linear is not None:
        source.linear.out_features = index.numel()
    source.size = index.numel()
    object.__setattr__(source, "_kept", (index, full_size))
    source.register_state_dict_post_hook(_save_full)
    source.register_load_state_dict_pre_hook(_load_full)


def _free_tensors(source):
    """``(module, name)`` of each parameter of ``source`` whose first axis runs over its outputs."""
    if source.linear is None:
        return [(source, "theta")]
    return [(source.linear, "weight"), (source.linear, "bias")]


def _keys(source, prefix):
    """The state-dict keys of :func:`_free_tensors`, under ``prefix``."""
    return [prefix + (name if module is source else f"linear.{name}")
            for module, name in _free_tensors(source)]


def _save_full(source, state_dict, prefix, local_metadata):
    index, full_size = source._kept
    for key in _keys(source, prefix):
        kept = state_dict[key]
        full = kept.new_zeros((full_size, *kept.shape[1:]))
        full[index] = kept
        state_dict[key] = full


def _load_full(source, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    index, full_size = source._kept
    for key in _keys(source, prefix):
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == full_size:
            state_dict[key] = value[index.to(value.device)]


def narrow_optimizer_state(state: dict, module: nn.Module) -> dict | None:
    """An optimizer's ``state_dict()`` saved by code from before the narrowing, for an optimizer
    over ``module.parameters()`` now: each narrowed parameter's full-size entries (moment
    estimates) cut to its kept rows, everything else as it was. ``None`` where nothing needs it
    (no narrowed parameter has a full-size entry) or where ``state`` does not list one entry per
    parameter of ``module``."""
    params = list(module.parameters())
    listed = [i for group in state.get("param_groups", []) for i in group["params"]]
    if len(listed) != len(params):
        return None
    kept = {}
    for m in module.modules():
        if "_kept" in m.__dict__:
            for owner, name in _free_tensors(m):
                kept[id(owner._parameters[name])] = m._kept
    changed, entries = False, {}
    for old_id, p in zip(listed, params):
        entry = state["state"].get(old_id)
        if entry is None:
            continue
        if id(p) in kept:
            index, full_size = kept[id(p)]
            entry = dict(entry)
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == full_size \
                        and value.shape[1:] == p.shape[1:] and full_size != p.shape[0]:
                    entry[key] = value[index.to(value.device)]
                    changed = True
        entries[old_id] = entry
    return dict(state, state=entries) if changed else None
