"""What the fused runs' autograd nodes (planar, radial, Householder: one node a run, its backward pass
written out by hand) share: their inputs kept for a backward pass that must itself be differentiable.

A hand-written backward pass computes first derivatives from values saved by the forward pass,
outside autograd: differentiating it again (``create_graph=True``, then a second ``grad``: Hessians,
gradient penalties) would miss every path through those values and give wrong second derivatives
without a word. So where autograd asks for a differentiable backward pass, the node reruns its
forward pass the plain way, recorded by autograd from the saved inputs, and differentiates that:
first derivatives equal to the hand-written ones up to rounding, and second derivatives exact.
"""

from __future__ import annotations

import torch

__all__ = ["save", "saved", "differentiable_backward"]


def save(ctx, inputs: tuple, values: tuple) -> None:
    """Save a node's ``inputs`` (for :func:`differentiable_backward`) and the ``values`` its
    hand-written backward pass reads."""
    ctx.n_inputs = len(inputs)
    ctx.save_for_backward(*inputs, *values)


def saved(ctx) -> tuple[tuple, tuple]:
    """``(inputs, values)`` as given to :func:`save`."""
    tensors = ctx.saved_tensors
    return tensors[: ctx.n_inputs], tensors[ctx.n_inputs :]


def differentiable_backward(ctx, plain, inputs: tuple, grad_outputs: tuple) -> tuple:
    """The gradients, with respect to ``inputs``, of ``plain(*inputs)`` (the node's forward pass in
    PyTorch operations, returning the node's outputs) against ``grad_outputs``, as a graph that can
    be differentiated again; ``None`` for the inputs that need no gradient."""
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[: len(inputs)]) if need]
    with torch.enable_grad():
        leaves = [t if t.requires_grad else t.detach().requires_grad_() for t in inputs]
        outputs = plain(*leaves)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        grads = torch.autograd.grad(outputs, [leaves[i] for i in wanted], grad_outputs,
                                    create_graph=True, allow_unused=True)
    out = [None] * len(inputs)
    for i, g in zip(wanted, grads):
        out[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(out)
