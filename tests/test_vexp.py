"""The vector math of the float32 kernels (``flowlib/flows/kernels/vexp.h``: exp, log1p, log, tanh, eight
numbers at a time), each on a dense grid of floats against the same function in float64, through a small
C program built here that calls them. Checked once on more floats with a C program (session 16): exp
within 0.99 units in the last place on every float in [-104, 0], log1p within 2.47 on every float in
[0, 1], tanh within 2.50 and log within 1.96 on every 7th float of the whole range."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest
import torch

from flowlib.flows import kernels

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")

PROGRAM = r"""
#include "vexp.h"
#define APPLY(NAME, F) \
    VECTOR_CLONES void NAME(long n, const float *x, float *y) { \
        for (long i = 0; i + LANES <= n; i += LANES) *(vf *)(y + i) = F(*(const vf *)(x + i)); }
APPLY(apply_exp, exp_nonpositive)
APPLY(apply_log1p, log1p_unit)
APPLY(apply_log, log_nonnegative)
APPLY(apply_tanh, tanh_any)
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vexp")
    (folder / "apply.c").write_text(PROGRAM)
    subprocess.run(["cc", *kernels.FLAGS, f"-I{kernels.SOURCES}", "-o", str(folder / "apply.so"),
                    str(folder / "apply.c"), "-lm"], check=True, capture_output=True)
    return ctypes.CDLL(str(folder / "apply.so"))


def _apply(lib, name, x):
    y = torch.empty_like(x)
    getattr(lib, name)(ctypes.c_long(x.numel()), ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()))
    return y


def _floats(first_bits: int, last_bits: int, step: int) -> torch.Tensor:
    """The floats whose bit patterns run from ``first_bits`` to ``last_bits`` in steps of ``step``,
    a multiple of eight of them."""
    bits = torch.arange(first_bits, last_bits + 1, step, dtype=torch.int64)
    bits = bits[: len(bits) // 8 * 8]
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def _ulps(got, exact):
    """|got - exact| in units in the last place of exact rounded to float32 (the smallest subnormal
    below the normal range)."""
    rounded = exact.float()
    ulp = (torch.nextafter(rounded.abs(), torch.tensor(float("inf"))) - rounded.abs()).double()
    return (got.double() - exact).abs() / ulp.clamp_min(2.0**-149)


@pytest.mark.parametrize("name, first, last, exact, bound", [
    ("apply_exp", 0x80000000, 0xC2D00000, torch.exp, 1.0),     # [-104, -0]
    ("apply_log1p", 0x00000000, 0x3F800000, torch.log1p, 2.5),  # [0, 1]
    ("apply_log", 0x00000001, 0x7F7FFFFF, torch.log, 2.0),      # every positive finite float
    ("apply_tanh", 0x00000000, 0x7F7FFFFF, torch.tanh, 2.5),    # [0, max] ...
    ("apply_tanh", 0x80000000, 0xFF7FFFFF, torch.tanh, 2.5),    # ... and [-max, -0]
])
def test_within_a_few_units_in_the_last_place(lib, name, first, last, exact, bound):
    x = _floats(first, last, 997)
    assert x.numel() > 1_000_000
    assert _ulps(_apply(lib, name, x), exact(x.double())).max() <= bound


def test_special_values(lib):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([0.0, -0.0, inf, -inf, nan, -1.0, 1e-45, 1.0])
    log = _apply(lib, "apply_log", x)
    assert log[0] == -inf and log[1] == -inf and log[2] == inf and log[4].isnan() and log[5].isnan()
    assert log[7] == 0 and abs(log[6].item() - (-103.27893)) < 1e-4
    tanh = _apply(lib, "apply_tanh", x)
    assert tanh[0] == 0 and tanh[2] == 1 and tanh[3] == -1 and tanh[4].isnan() and tanh[6] == 1e-45
    assert torch.signbit(tanh[1])
    exp = _apply(lib, "apply_exp", torch.tensor([-0.0, -inf, nan, -104.5, -88.0, -1.0, -1e-30, -50.0]))
    assert exp[0] == 1 and exp[1] == 0 and exp[2].isnan() and exp[3] == 0
    exact = torch.exp(torch.tensor([-88.0, -1.0, -1e-30, -50.0]))
    torch.testing.assert_close(exp[4:], exact, rtol=1.2e-7, atol=0)
