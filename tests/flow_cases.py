"""Every flow the harness checks, single and stacked, by name.

A case is a factory ``(dim, context_dim) -> Flow``; ``context_dim=None`` builds
the static flow. ``INVERTIBLE`` names the cases whose ``inverse`` must work.
"""

from __future__ import annotations

import torch

from flowlib.flows import (
    IAF,
    AdditiveCoupling,
    Householder,
    PCPMap,
    Planar,
    Radial,
    Reverse,
    Scale,
    Sequential,
    Sylvester,
)

CONTEXT_DIM = 3

SINGLE = {
    "planar": lambda d, c: Planar(d, context_dim=c),
    "radial": lambda d, c: Radial(d, context_dim=c),
    "householder": lambda d, c: Householder(d, context_dim=c),
    "coupling": lambda d, c: AdditiveCoupling(d, context_dim=c, hidden=16),
    "coupling_swap": lambda d, c: AdditiveCoupling(d, context_dim=c, hidden=16, swap=True),
    "scale": lambda d, c: Scale(d, context_dim=c),
    "iaf": lambda d, c: IAF(d, context_dim=c, hidden=16),
    "iaf_permuted": lambda d, c: IAF(d, context_dim=c, hidden=16, order=torch.randperm(d) + 1),
    "sylvester_orthogonal": lambda d, c: Sylvester(d, context_dim=c, variant="orthogonal"),
    "sylvester_orthogonal_thin": lambda d, c: Sylvester(
        d, context_dim=c, variant="orthogonal", M=max(1, d // 2)
    ),
    "sylvester_householder": lambda d, c: Sylvester(d, context_dim=c, variant="householder", n_reflections=3),
    "sylvester_triangular": lambda d, c: Sylvester(d, context_dim=c, variant="triangular"),
    "sylvester_triangular_permuted": lambda d, c: Sylvester(
        d, context_dim=c, variant="triangular", permute=True
    ),
    "pcpmap": lambda d, c: PCPMap(d, context_dim=c, hidden=16),
    "reverse": lambda d, c: Reverse(d, context_dim=c),
}

STACKED = {
    "planar_radial_stack": lambda d, c: Sequential(
        Planar(d, context_dim=c), Radial(d, context_dim=c), Planar(d, context_dim=c)
    ),
    "householder_planar_stack": lambda d, c: Sequential(
        Householder(d, context_dim=c), Householder(d, context_dim=c), Planar(d, context_dim=c)
    ),
    "nice_stack": lambda d, c: Sequential(
        AdditiveCoupling(d, context_dim=c, hidden=16),
        AdditiveCoupling(d, context_dim=c, hidden=16, swap=True),
        Scale(d, context_dim=c),
    ),
    "iaf_stack": lambda d, c: Sequential(
        IAF(d, context_dim=c, hidden=16), Reverse(d), IAF(d, context_dim=c, hidden=16)
    ),
    "sylvester_stack": lambda d, c: Sequential(
        Sylvester(d, context_dim=c, variant="triangular"),
        Sylvester(d, context_dim=c, variant="triangular", permute=True),
        Sylvester(d, context_dim=c, variant="orthogonal"),
    ),
    # runs of one class, which Sequential applies together (Flow._chain)
    "planar_stack": lambda d, c: Sequential(*(Planar(d, context_dim=c) for _ in range(3))),
    "radial_stack": lambda d, c: Sequential(*(Radial(d, context_dim=c) for _ in range(3))),
    "householder_stack": lambda d, c: Sequential(*(Householder(d, context_dim=c) for _ in range(3))),
    "mixed_stack": lambda d, c: Sequential(
        Scale(d),
        PCPMap(d, context_dim=c, hidden=8),
        Householder(d, context_dim=c),
        IAF(d, context_dim=c, hidden=8),
    ),
}

CASES = {**SINGLE, **STACKED}

INVERTIBLE = {
    "radial",
    "householder",
    "coupling",
    "coupling_swap",
    "scale",
    "iaf",
    "iaf_permuted",
    "pcpmap",
    "reverse",
    "nice_stack",
    "radial_stack",
    "householder_stack",
    "iaf_stack",
    "mixed_stack",
}

DIMS = (1, 2, 5)


def perturb_(flow: torch.nn.Module, std: float = 0.5, seed: int = 0) -> torch.nn.Module:
    """Move every parameter away from its initial value (defaults sit near the identity,
    where a wrong log-determinant formula can still look right)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def build(name: str, dim: int, amortized: bool, dtype=torch.float64, seed: int = 0, std: float = 0.5):
    """The flow ``name``, in ``dtype``, at perturbed parameters, with inputs ``(z, context)``."""
    torch.manual_seed(seed)
    flow = CASES[name](dim, CONTEXT_DIM if amortized else None).to(dtype)
    perturb_(flow, std=std, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    batch = 4
    z = 1.5 * torch.randn(batch, dim, generator=g, dtype=dtype)
    context = torch.randn(batch, CONTEXT_DIM, generator=g, dtype=dtype) if amortized else None
    return flow, z, context
