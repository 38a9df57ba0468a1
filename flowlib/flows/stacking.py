"""The free parameters of a run of static layers, stored as one tensor.

A :class:`~.sequential.Sequential` of ``K`` static layers of one class (e.g. 80 planar layers, each
``theta = [u, w, b]`` of eq. 10 of Rezende & Mohamed 2015) applies them as one run (the class's
``_chain``), which reads all their parameters at once as a ``(K, P)`` tensor. Kept as ``K``
separate parameters, that tensor is a copy made at every step, and everything that touches
parameters one at a time pays ``K`` times: the copy's backward splitting the gradient, autograd
accumulating ``K`` gradients, the optimizer updating ``K`` small tensors. Measured on the MNIST row
with 80 static planar layers (``bench/flow_cost.py``, one thread, a training update over the no-flow
VAE's, each version of the code over its own; ``results/mnist/cost_stacking.json``): 1.34 with 80
tensors, 1.23 with one.

So ``Sequential`` gives such a run one parameter, :class:`ParameterStack` ``theta`` of shape
``(K, P)``, and each layer's :class:`~.base.ParameterSource` reads its row: ``layer.params.theta``
is ``stack.theta[k]``, a view that is written through and carries gradients to the stack, so a
layer used on its own (``flow[3](z)``, its inverse) computes with the same numbers. The run's
``_chain`` reads the whole ``(K, P)`` parameter, no copy. The arithmetic is unchanged: the same
initial values (each layer draws its own, as before), the same gradients, and an optimizer's
update of each entry does not depend on how entries are grouped into tensors.

The saved format does not change either: ``state_dict()`` lists every layer's
``flows.<k>.params.theta`` (rows of the stack) and no stack, and ``load_state_dict`` takes that
form and fills the stack (:func:`save_rows`, :func:`load_rows`). What does change is
``parameters()``: one ``(K, P)`` tensor instead of ``K`` vectors, so an optimizer's saved state
from before lists ``K`` tensors where a model built now has one (:func:`stack_optimizer_state`
converts it, as the training loop does when it resumes a run); and a layer's own ``parameters()``
is empty (its row belongs to the sequence's stack: optimize the sequence, or read
``layer.params.theta``). A new ``Sequential`` made of layers that another one stacked registers
that stack too, so its ``parameters()`` still reach them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ParameterStack", "adopt", "whole", "holders", "rows_of", "save_rows", "load_rows",
           "per_layer_order", "stack_optimizer_state"]


class ParameterStack(nn.Module):
    """``theta``, ``(K, size)``: row ``k`` is the raw parameter vector of the run's ``k``-th layer."""

    def __init__(self, rows: list[torch.Tensor]):
        super().__init__()
        self.theta = nn.Parameter(torch.stack([row.detach() for row in rows]))

    def extra_repr(self) -> str:
        return f"layers={self.theta.shape[0]}, size={self.theta.shape[1]}"


def adopt(sources: list) -> ParameterStack | None:
    """Move the free parameters of ``sources`` (static :class:`~.base.ParameterSource` of one size,
    in the run's order) into one :class:`ParameterStack`, and point each source at its row. Returns
    the stack, or ``None`` (nothing changed) for fewer than two sources, or where a source is
    amortized, of another size, or already reads a stack (a layer in two sequences keeps its first)."""
    if len(sources) < 2 or any(s.linear is not None or "theta" not in s._parameters for s in sources):
        return None
    if len({s.size for s in sources}) != 1:
        return None
    stack = ParameterStack([s.theta for s in sources])
    for k, source in enumerate(sources):
        del source._parameters["theta"]
        # not a submodule: the stack is registered once, by the sequence that owns the run
        object.__setattr__(source, "_stack", (stack, k))
    return stack


def holders(sources: list) -> list[ParameterStack]:
    """The stacks that hold rows of ``sources``, each once, in order."""
    found = []
    for source in sources:
        place = source.__dict__.get("_stack")
        if place is not None and "theta" not in source._parameters and all(place[0] is not s for s in found):
            found.append(place[0])
    return found


def whole(sources: list) -> ParameterStack | None:
    """The stack whose rows are exactly ``sources``, all of them in order (a run of layers that
    another sequence stacked, taken whole into a new one), else ``None``."""
    found = holders(sources)
    if len(found) != 1:
        return None
    rows = rows_of(found[0], sources)
    return found[0] if rows is not None and rows.shape[0] == found[0].theta.shape[0] else None


def rows_of(stack: ParameterStack, sources: list) -> torch.Tensor | None:
    """``stack.theta`` itself (or a slice of it) where ``sources`` are consecutive rows of ``stack``
    in order, else ``None``: what :meth:`~.base.ParameterSource.stack` returns without a copy."""
    places = [getattr(s, "_stack", None) for s in sources]
    if any(p is None or p[0] is not stack or "theta" in s._parameters for p, s in zip(places, sources)):
        return None
    first = places[0][1]
    if [p[1] for p in places] != list(range(first, first + len(sources))):
        return None
    theta = stack.theta
    return theta if len(sources) == theta.shape[0] else theta[first : first + len(sources)]


def save_rows(state_dict: dict, prefix: str, members: dict[str, list[str]]) -> None:
    """In ``state_dict`` (what ``state_dict()`` built), replace each stack's entry by its rows under
    the layers' own names: ``members`` maps a stack's key (after ``prefix``) to its layers' keys."""
    for stack_key, layer_keys in members.items():
        theta = state_dict.pop(prefix + stack_key)
        for k, key in enumerate(layer_keys):
            state_dict[prefix + key] = theta[k]


def load_rows(state_dict: dict, prefix: str, members: dict[str, list[str]]) -> None:
    """The inverse of :func:`save_rows`, in place on a state dict being loaded: where every layer of
    a stack has its entry, they become the stack's one entry (a stack's own entry is left as it is)."""
    for stack_key, layer_keys in members.items():
        keys = [prefix + key for key in layer_keys]
        if all(key in state_dict for key in keys):
            state_dict[prefix + stack_key] = torch.stack([state_dict.pop(key) for key in keys])


def per_layer_order(module: nn.Module) -> list[tuple[torch.Tensor, int | None]]:
    """``module``'s parameters in the order code from before the stacking listed them
    (``parameters()``: modules depth first, each module's own first): ``(stack.theta, k)`` for the
    ``k``-th row of a stack, standing where its layer's own ``theta`` stood, ``(p, None)`` for any
    other parameter ``p``."""
    out, seen_params, seen_modules = [], set(), set()

    def visit(m):
        if id(m) in seen_modules or isinstance(m, ParameterStack):
            return
        seen_modules.add(id(m))
        for p in m._parameters.values():
            if p is not None and id(p) not in seen_params:
                seen_params.add(id(p))
                out.append((p, None))
        place = m.__dict__.get("_stack")
        if place is not None and "theta" not in m._parameters:
            out.append((place[0].theta, place[1]))
        for child in m._modules.values():
            if child is not None:
                visit(child)

    visit(module)
    return out


def stack_optimizer_state(state: dict, module: nn.Module) -> dict | None:
    """An optimizer's ``state_dict()`` saved by code from before the stacking, for an optimizer
    over ``module.parameters()`` now: each stack's per-row entries (moment estimates of shape
    ``(P,)``) stacked into one ``(K, P)`` entry, every other entry moved to its parameter's new
    index. ``None`` where ``state`` is not such a state (it already matches, it has several
    parameter groups, or its rows disagree on their step count)."""
    params = list(module.parameters())
    groups = state.get("param_groups", [])
    order = per_layer_order(module)
    if len(groups) != 1 or len(groups[0]["params"]) != len(order) or len(order) == len(params):
        return None
    index = {id(p): i for i, p in enumerate(params)}
    moved, rows = {}, {}
    for old, (p, k) in zip(groups[0]["params"], order):
        entry = state["state"].get(old)
        if k is None:
            if entry is not None:
                moved[index[id(p)]] = entry
        else:
            rows.setdefault(index[id(p)], {})[k] = entry
    for i, by_row in rows.items():
        entries = [by_row.get(k) for k in range(params[i].shape[0])]
        if all(e is None for e in entries):
            continue
        if any(e is None for e in entries) or len({float(e["step"]) for e in entries}) != 1:
            return None
        moved[i] = {key: (entries[0][key] if key == "step" else torch.stack([e[key] for e in entries]))
                    for key in entries[0]}
    return {"state": moved, "param_groups": [dict(groups[0], params=list(range(len(params))))]}
