"""The test harness's catalogue: every flow the tests check, single and stacked, by name, built
through the registry (:mod:`.registry`), and :func:`perturb_`, which moves a flow's parameters
away from their initial values (defaults sit near the identity, where a wrong log-determinant
formula can still look right). Used by the tests and ``scripts/logdet_accuracy.py``.

A case is a factory ``(dim, context_dim) -> Flow``; ``context_dim=None`` builds
the static flow. ``INVERTIBLE`` names the cases whose ``inverse`` must work.
"""

from __future__ import annotations

import torch

from .registry import build, layer
from .sequential import Sequential

CONTEXT_DIM = 3

SINGLE = {
    "planar": lambda d, c: layer("planar", d, context_dim=c),
    "radial": lambda d, c: layer("radial", d, context_dim=c),
    "householder": lambda d, c: layer("householder", d, context_dim=c),
    "coupling": lambda d, c: layer("coupling", d, context_dim=c, hidden=16),
    "coupling_swap": lambda d, c: layer("coupling", d, context_dim=c, hidden=16, swap=True),
    "scale": lambda d, c: layer("scale", d, context_dim=c),
    "iaf": lambda d, c: layer("iaf", d, context_dim=c, hidden=16),
    "iaf_permuted": lambda d, c: layer("iaf", d, context_dim=c, hidden=16, order=torch.randperm(d) + 1),
    "iaf_relu": lambda d, c: layer("iaf", d, context_dim=c, hidden=16, activation="relu"),
    "sylvester_orthogonal": lambda d, c: layer("sylvester", d, context_dim=c, variant="orthogonal"),
    "sylvester_orthogonal_thin": lambda d, c: layer(
        "sylvester", d, context_dim=c, variant="orthogonal", M=max(1, d // 2)
    ),
    "sylvester_householder": lambda d, c: layer("sylvester", d, context_dim=c, variant="householder",
                                                n_reflections=3),
    "sylvester_triangular": lambda d, c: layer("sylvester", d, context_dim=c, variant="triangular"),
    "sylvester_triangular_permuted": lambda d, c: layer(
        "sylvester", d, context_dim=c, variant="triangular", permute=True
    ),
    "pcpmap": lambda d, c: layer("pcpmap", d, context_dim=c, hidden=16),
    "reverse": lambda d, c: layer("reverse", d, context_dim=c),
    "affine": lambda d, c: layer("affine", d, context_dim=c),
}

STACKED = {
    "planar_radial_stack": lambda d, c: Sequential(
        layer("planar", d, context_dim=c), layer("radial", d, context_dim=c),
        layer("planar", d, context_dim=c)
    ),
    "householder_planar_stack": lambda d, c: Sequential(
        layer("householder", d, context_dim=c), layer("householder", d, context_dim=c),
        layer("planar", d, context_dim=c)
    ),
    # NICE as the registry stacks it: couplings alternating the kept half, then a scaling layer
    "nice_stack": lambda d, c: build("nice", d, context_dim=c, length=2, hidden=16),
    # IAF steps with the order reversed between them
    "iaf_stack": lambda d, c: build("iaf", d, context_dim=c, length=2, hidden=16),
    "sylvester_stack": lambda d, c: Sequential(
        *build("sylvester", d, context_dim=c, length=2, variant="triangular").flows,
        layer("sylvester", d, context_dim=c, variant="orthogonal"),
    ),
    # runs of one class, which Sequential applies together (Flow._chain)
    "planar_stack": lambda d, c: build("planar", d, context_dim=c, length=3),
    "radial_stack": lambda d, c: build("radial", d, context_dim=c, length=3),
    "householder_stack": lambda d, c: build("householder", d, context_dim=c, length=3),
    # the 2-D posterior fits' stack: a family on unit-scale noise, placed by a diagonal affine map
    "planar_affine_stack": lambda d, c: Sequential(
        *build("planar", d, context_dim=c, length=2).flows, layer("affine", d, context_dim=c)
    ),
    "mixed_stack": lambda d, c: Sequential(
        layer("scale", d),
        layer("pcpmap", d, context_dim=c, hidden=8),
        layer("householder", d, context_dim=c),
        layer("iaf", d, context_dim=c, hidden=8),
    ),
}

CASES = {**SINGLE, **STACKED}

INVERTIBLE = {
    "planar",  # by a one-dimensional root per sample (Planar.solve)
    "planar_stack",
    "planar_radial_stack",
    "householder_planar_stack",
    "radial",
    "householder",
    "coupling",
    "coupling_swap",
    "scale",
    "iaf",
    "iaf_permuted",
    "iaf_relu",
    "pcpmap",
    "reverse",
    "affine",
    "nice_stack",
    "radial_stack",
    "householder_stack",
    "iaf_stack",
    "mixed_stack",
    "planar_affine_stack",
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


def case(name: str, dim: int, amortized: bool, dtype=torch.float64, seed: int = 0, std: float = 0.5):
    """The flow ``name``, in ``dtype``, at perturbed parameters, with inputs ``(z, context)``."""
    torch.manual_seed(seed)
    flow = CASES[name](dim, CONTEXT_DIM if amortized else None).to(dtype)
    perturb_(flow, std=std, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    batch = 4
    z = 1.5 * torch.randn(batch, dim, generator=g, dtype=dtype)
    context = torch.randn(batch, CONTEXT_DIM, generator=g, dtype=dtype) if amortized else None
    return flow, z, context
