"""The four targets of Rezende & Mohamed (2015), Table 1: hand-computed energies, the
box that makes U2..U4 normalisable, and the log-partition function."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib.twod.densities import BOXED, TARGETS, U1, U2, U3, U4, Boxed, log_partition


def at(*point):
    return torch.tensor([point], dtype=torch.float64)


def nlse(a, b):
    """-ln(exp(a) + exp(b)), by hand."""
    return -math.log(math.exp(a) + math.exp(b))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# (energy, point, value worked out from the formulas with plain math)
HAND = [
    # U1: on the ring at a mode, on the ring between the modes, at the centre
    (U1, (2.0, 0.0), nlse(0.0, -0.5 * (4 / 0.6) ** 2)),
    (U1, (0.0, 2.0), 0.5 * (2 / 0.6) ** 2 - math.log(2)),
    (U1, (0.0, 0.0), 0.5 * (2 / 0.4) ** 2 + 0.5 * (2 / 0.6) ** 2 - math.log(2)),
    (U1, (3.0, 4.0), 0.5 * (3 / 0.4) ** 2 + nlse(-0.5 * (1 / 0.6) ** 2, -0.5 * (5 / 0.6) ** 2)),
    # U2: w1(1) = 1, w1(0) = 0, w1(-1) = -1
    (U2, (1.0, 1.0), 0.0),
    (U2, (0.0, 0.4), 0.5),
    (U2, (-1.0, 0.0), 0.5 * (1 / 0.4) ** 2),
    # U3 at z1 = 1: w1 = 1, w2 = 3; on the upper branch, and half-way between the branches
    (U3, (1.0, 1.0), nlse(0.0, -0.5 * (3 / 0.35) ** 2)),
    (U3, (1.0, -0.5), 0.5 * (1.5 / 0.35) ** 2 - math.log(2)),
    (U3, (0.0, 0.0), nlse(0.0, -0.5 * (3 * math.exp(-0.5 * (1 / 0.6) ** 2) / 0.35) ** 2)),
    # U4 at z1 = 1: w3 = 3 sigmoid(0) = 1.5; at z1 = 2: w1 = 0, w3 = 3 sigmoid(1 / 0.3)
    (U4, (1.0, 1.0), nlse(0.0, -0.5 * (1.5 / 0.35) ** 2)),
    (U4, (2.0, 0.5), nlse(-0.5 * (0.5 / 0.4) ** 2, -0.5 * ((0.5 + 3 * sigmoid(1 / 0.3)) / 0.35) ** 2)),
]


@pytest.mark.parametrize("U, point, expected", HAND, ids=[f"{u.__name__}{p}" for u, p, _ in HAND])
def test_energies_against_hand_computed_values(U, point, expected):
    assert U(at(*point)).item() == pytest.approx(expected, abs=1e-10, rel=1e-10)


@pytest.mark.parametrize("name", list(TARGETS))
def test_shapes_dtypes_and_finite_far_away(name):
    U = TARGETS[name]
    z = torch.randn(7, 2)
    out = U(z)
    assert out.shape == (7,) and out.dtype == torch.float32
    far = torch.tensor([[0.0, 200.0], [-150.0, -90.0], [1e3, 1e3]], dtype=torch.float64)
    assert torch.isfinite(U(far)).all()  # -logsumexp, not -log(exp + exp) = inf


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize(
    "bad", [torch.zeros(3, 3), torch.zeros(2), torch.zeros(2, 2, dtype=torch.long), [[0.0, 0.0]]]
)
def test_bad_inputs_raise_value_error(name, bad):
    with pytest.raises(ValueError, match=r"\(B, 2\)|floating-point"):
        TARGETS[name](bad)


def test_log_partition_of_u2_on_the_box_is_analytic():
    # exp(-U2) integrates over z2 to sqrt(2 pi) 0.4 for every z1; z2 in (-4, 4) holds all of it
    assert log_partition(U2) == pytest.approx(math.log(8 * 0.4 * math.sqrt(2 * math.pi)), abs=1e-6)


def test_u2_to_u4_are_not_normalisable_on_the_plane():
    # the integral over (-L, L)^2 keeps growing with L: no density on R^2 without the box
    for U in (U2, U3, U4):
        assert log_partition(U, lim=8.0, n=800) > log_partition(U, lim=4.0, n=400) + 0.5
    assert log_partition(U1, lim=8.0, n=800) == pytest.approx(log_partition(U1, lim=4.0, n=400), abs=1e-5)


def test_boxed_equals_u_inside_and_adds_the_wall_outside():
    b = Boxed(U2, lim=4.0, wall=0.1)
    z = torch.tensor([[3.9, -3.9], [0.0, 1.0], [4.2, 1.0], [-4.3, -4.1]], dtype=torch.float64)
    walls = [0.0, 0.0, 0.5 * (0.2 / 0.1) ** 2, 0.5 * (0.3 / 0.1) ** 2 + 0.5 * (0.1 / 0.1) ** 2]
    expected_wall = torch.tensor(walls, dtype=torch.float64)
    assert torch.allclose(b(z) - U2(z), expected_wall, atol=1e-12)
    assert b.__name__ == "U2_box"


def test_boxed_u2_log_partition_is_analytic():
    # z1-marginal: flat on (-4, 4) plus two half-Gaussian tails of standard deviation 0.1
    length = 8 + 0.1 * math.sqrt(2 * math.pi)
    expected = math.log(length * 0.4 * math.sqrt(2 * math.pi))
    assert BOXED["U2"].log_partition() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", list(BOXED))
def test_boxed_log_partition_has_converged_in_the_grid(name):
    assert BOXED[name].log_partition(n=1000) == pytest.approx(BOXED[name].log_partition(n=2000), abs=1e-5)


def test_the_box_leaves_u1_unchanged():
    assert BOXED["U1"].log_partition() == pytest.approx(log_partition(U1, lim=6.0, n=1200), abs=1e-5)


@pytest.mark.parametrize("kwargs", [{"lim": 0}, {"wall": -1.0}, {"lim": "4"}, {"wall": True}])
def test_boxed_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="positive number"):
        Boxed(U1, **kwargs)
    with pytest.raises(ValueError, match="energy function"):
        Boxed("U1")
