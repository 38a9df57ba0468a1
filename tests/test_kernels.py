"""The compiled kernels' loader (``flowlib.flows.kernels``): built once into the cache and reused,
written atomically, turned off by ``FLOWLIB_KERNELS=0``, a clear warning and the PyTorch path where
no compiler works, and used by the planar flow exactly where it applies. What the kernels compute
is tested against the PyTorch path and autograd in tests/test_fused_chains.py."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import no_kernel_loaded
from torch.utils.flop_counter import FlopCounterMode

from flowlib.flows import Planar, Sequential, kernels
from flowlib.flows import householder as householder_module
from flowlib.flows import planar as planar_module
from flowlib.flows import radial as radial_module


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache in ``tmp_path`` and no kernel loaded or bound yet in this process."""
    return no_kernel_loaded(monkeypatch, tmp_path)


def _find(dtype=torch.float32, device="cpu"):
    return planar_module._kernel(torch.zeros(2, 3, dtype=dtype, device=device),
                                 torch.zeros(4, 7, dtype=dtype, device=device))


needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


@needs_cc
def test_the_kernel_is_built_once_into_the_cache(fresh, monkeypatch):
    assert _find() is not None and _find(torch.float64) is not None
    built = sorted(fresh.iterdir())
    # one library, no partial file left
    assert [p.suffix for p in built] == [".so"] and built[0].name.startswith("planar-")
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(kernels, "_loaded", {})  # as a new process would: found in the cache, not rebuilt
    assert kernels._build("planar") == built[0] and built[0].stat().st_mtime_ns == stamp


@needs_cc
def test_an_edited_header_rebuilds_the_kernels_that_include_it(fresh, monkeypatch, tmp_path):
    """elu.c and iaf.c include vexp.h: the library's name hashes the headers too, so a kernel is
    rebuilt when its header changes, not only its own source."""
    sources = tmp_path / "sources"
    shutil.copytree(kernels.SOURCES, sources, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(kernels, "SOURCES", sources)
    first = kernels._build("elu")
    assert kernels._build("elu") == first
    (sources / "vexp.h").write_text((sources / "vexp.h").read_text() + "/* edited */\n")
    second = kernels._build("elu")
    assert second != first and second.exists()


@needs_cc
@pytest.mark.parametrize("module", [radial_module, householder_module])
def test_radial_and_householder_find_their_kernels(fresh, module):
    z = torch.zeros(2, 3)
    assert module._kernel(z, torch.zeros(4, 3)) is not None  # static
    assert module._kernel(z, torch.zeros(2, 4, 3)) is not None  # amortized, batch 2
    assert module._kernel(z, torch.zeros(5, 4, 3)) is None  # a batch that is not z's
    assert module._kernel(z.double(), torch.zeros(4, 3)) is None  # two dtypes
    assert {p.name.split("-")[0] for p in fresh.iterdir()} == {module.__name__.rsplit(".")[-1]}


@needs_cc
def test_the_planar_flow_uses_the_kernel_exactly_where_it_applies(fresh):
    assert _find(torch.float32) is not None and _find(torch.float64) is not None
    assert _find(torch.float16) is None and _find(torch.bfloat16) is None
    assert _find(device="meta") is None
    z = torch.zeros(2, 3)
    assert planar_module._kernel(z, torch.zeros(4, 7, dtype=torch.float64)) is None  # 2 dtypes
    assert planar_module._kernel(z, torch.zeros(2, 4, 7)) is not None  # amortized, batch 2
    assert planar_module._kernel(z, torch.zeros(5, 4, 7)) is None  # a batch that is not z's
    with FlopCounterMode(display=False):  # a mode that traces operations sees the PyTorch path
        assert _find() is None
    with torch.no_grad():
        assert _find() is not None


def test_flowlib_kernels_0_turns_them_off_and_bad_values_are_refused(fresh, monkeypatch):
    monkeypatch.setenv("FLOWLIB_KERNELS", "0")
    assert kernels.load("planar") is None and _find() is None
    assert list(fresh.iterdir()) == []  # nothing built
    monkeypatch.setenv("FLOWLIB_KERNELS", "yes")
    with pytest.raises(ValueError, match=r"FLOWLIB_KERNELS: expected 0 \(PyTorch only\) or 1 .*got 'yes'"):
        kernels.load("planar")


@pytest.mark.parametrize("compiler, says", [
    ("/nonexistent/cc", "No such file"),  # no compiler at all
    ("cc -include /nonexistent/header.h", "could not be compiled"),  # a compiler that fails
])
def test_without_a_working_compiler_a_warning_says_why_and_the_flow_still_works(fresh, monkeypatch, compiler,
                                                                                 says):
    if compiler.startswith("cc") and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("CC", compiler)
    torch.manual_seed(0)
    flow = Sequential(*(Planar(3, init_std=0.5) for _ in range(4)))
    z = torch.randn(5, 3)
    with pytest.warns(RuntimeWarning, match=f"flowlib: .*planar kernel.*{says}.*slower PyTorch path"):
        z_k, logdet = flow(z)
    assert [p.name for p in fresh.iterdir()] == []  # no partial file left
    monkeypatch.setattr(planar_module, "_kernel", lambda z, theta: None)
    torch.testing.assert_close((z_k, logdet), flow(z))


@needs_cc
def test_planar_without_a_gradient_uses_the_kernel_only_for_few_rows(fresh, monkeypatch):
    """Evaluation over many rows (importance sampling) runs the PyTorch path, faster there; a
    training-sized batch runs the kernel, with or without a gradient."""
    used, kernel_forward = [], planar_module._kernel_forward

    def counted(*args, **kwargs):
        used.append(1)
        return kernel_forward(*args, **kwargs)

    monkeypatch.setattr(planar_module, "_kernel_forward", counted)
    flow = Sequential(*(Planar(3) for _ in range(2)))
    rows = planar_module.KERNEL_ROWS_NO_GRAD
    with torch.no_grad():
        flow(torch.zeros(rows, 3))
        assert len(used) == 1
        flow(torch.zeros(2, rows, 3))
        assert len(used) == 1
    flow(torch.zeros(2, rows, 3))  # with a gradient: the kernel whatever the size
    assert len(used) == 2


@pytest.mark.parametrize("context_dim", [None, 5])
def test_planar_without_a_gradient_runs_many_rows_in_slices_with_the_same_arithmetic(monkeypatch,
                                                                                     context_dim):
    """Evaluation over many rows applies every layer to one slice of the first axis (rows of a static
    run, samples of an amortized one) before the next slice; each row gets what the whole run gives
    it, to rounding (a matrix-vector product over fewer rows may add in another order)."""
    torch.manual_seed(0)
    flow = Sequential(*[Planar(4, context_dim) for _ in range(3)]).double()
    c = None if context_dim is None else torch.randn(6, context_dim, dtype=torch.float64)
    z = torch.randn(50, 6, 4, dtype=torch.float64)
    runs, planar_run = [], planar_module._planar_run

    def counted(z, *args, **kwargs):
        runs.append(z.shape[0])
        return planar_run(z, *args, **kwargs)

    monkeypatch.setattr(planar_module, "_planar_run", counted)
    with torch.no_grad():
        monkeypatch.setattr(planar_module, "SLICE_ENTRIES", 10**9)
        whole = flow(z, c)
        assert runs == [50]
        runs.clear()
        monkeypatch.setattr(planar_module, "SLICE_ENTRIES", 7 * 6 * 4)  # 7 samples a slice
        sliced = flow(z, c)
        assert runs == [7] * 7 + [1]
        if context_dim is not None:  # an amortized run without a sample axis: its rows carry parameters
            runs.clear()
            rows = planar_module.KERNEL_ROWS_NO_GRAD + 1  # beyond the kernel's rows
            flow(torch.randn(rows, 4).double(), torch.randn(rows, context_dim).double())
            assert runs == [rows]
    for a, b in zip(sliced, whole):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planar_rows_in_blocks_give_each_row_what_it_gets_alone(dtype):
    """The kernel takes rows several at a time (planar.c's BLOCK, 8) for speed; each row's output,
    log-determinant and input gradient are those of the row run alone, to the bit (19 rows: two full
    blocks and a partial one; static layers, whose parameters are the same numbers for every row)."""
    torch.manual_seed(0)
    flow = Sequential(*[Planar(6) for _ in range(9)]).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(19, 6, dtype=dtype)

    def run(rows):
        x = z[rows].clone().requires_grad_()
        out, logdet = flow(x)
        (out.square().sum() - logdet.sum()).backward()
        return out.detach(), logdet.detach(), x.grad

    assert planar_module._kernel(z, torch.zeros(9, 13, dtype=dtype)) is not None
    together = run(slice(None))
    alone = [run(slice(n, n + 1)) for n in range(19)]
    for k in range(3):
        assert torch.equal(together[k], torch.cat([a[k] for a in alone]))
