"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tests of many small tensor operations (fits, Newton,
    bisection) are as fast with one thread, and far faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def no_kernel_loaded(monkeypatch, cache):
    """Kernels cached in ``cache`` (``FLOWLIB_KERNEL_CACHE``), on (``FLOWLIB_KERNELS`` unset), and none
    loaded or bound yet in this process: what a new process sees (tests/test_kernels.py, test_spd.py)."""
    from flowlib.flows import kernels

    monkeypatch.setenv("FLOWLIB_KERNEL_CACHE", str(cache))
    monkeypatch.delenv("FLOWLIB_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels.Kernel, "_bound", {})
    return cache


def count_kernel_calls(monkeypatch) -> list[str]:
    """A list that receives "forward" or "backward" at every call of a kernel bound from now on
    (tests/test_spd.py, test_iaf_gate.py, test_elu.py)."""
    from flowlib.flows import kernels

    calls = []

    class Counted(kernels.Kernel):
        def forward(self, sizes, *tensors):
            calls.append("forward")
            super().forward(sizes, *tensors)

        def backward(self, sizes, *tensors):
            calls.append("backward")
            super().backward(sizes, *tensors)

    monkeypatch.setattr(kernels, "Kernel", Counted)
    return calls
