"""Compiled kernels for the flows whose cost is many small operations rather than arithmetic.

A run of K planar layers on a batch of 100 samples in 40 dimensions is about 1 MFLOP, but through
PyTorch it is some 20 operations a layer, each of which costs microseconds of dispatch whatever its
size: a planar K = 80 stack cost more than the whole VAE it sits in. A kernel here is the same
arithmetic as the flow's PyTorch path, written as one C loop over the samples and layers, built with
the machine's C compiler on first use and called through :mod:`ctypes`. Two more serve PCP-Map's
log-determinant (:mod:`..spd`): ``spd.c``, the Cholesky factorization and inverse of a batch of small
matrices, eight at a time, and ``gram.c``, the elementwise work of a Jacobian's Gram product. Two serve
IAF (float32 only): ``elu.c``, the MADE's activation, and ``iaf.c``, the gate of eq. 14-15. They and
the planar kernel's float32 path take exp, log1p, log and tanh from ``vexp.h``, eight numbers at a
time. Every kernel's functions are built twice on Linux/x86-64 with GCC, for AVX2 with FMA and for
the baseline CPU (``clones.h``), the C library picking one at load time (planar x 80 forward and
backward, batch 128 x 40: 0.87 of the baseline build's time on an AVX2 CPU, ``bench/kernel_ab.py``).

- The source is a ``.c`` file beside this one (e.g. ``planar.c``); it is compiled with ``$CC`` (else
  ``cc``) into ``$FLOWLIB_KERNEL_CACHE`` (else ``$XDG_CACHE_HOME/flowlib/kernels``, else
  ``~/.cache/flowlib/kernels``), under a name that hashes the source, the headers beside it (``*.h``),
  the flags and the compiler, so an edited kernel is rebuilt; the library is written to a temporary
  file and renamed into place, so processes that build at once never load half a file.
- Where no kernel can be built (no compiler, no writable cache) :func:`load` warns once, saying why, and
  returns ``None``: the flow computes the same numbers with PyTorch, only slower. ``FLOWLIB_KERNELS=0``
  turns the kernels off (to compare, or to rule them out); anything but ``0`` or ``1`` is refused.
- A flow uses its kernel only for CPU tensors of ``float32`` or ``float64``; on a GPU, on PyTorch's
  ``meta`` device or inside ``torch.func`` transforms it runs its PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shlex
import subprocess
import tempfile
import warnings

import torch

__all__ = ["Kernel", "find", "for_tensors", "rows", "sizes", "load", "enabled", "cache_dir", "FLAGS", "NAMES"]

FLAGS = ["-O3", "-fopenmp-simd", "-fPIC", "-shared"]
SOURCES = pathlib.Path(__file__).resolve().parent
NAMES = tuple(sorted(path.stem for path in SOURCES.glob("*.c")))  # planar, radial, householder, ...
_loaded: dict[str, ctypes.CDLL | None] = {}
_SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}


class Kernel:
    """The functions ``{name}_forward_{f32|f64}`` and ``{name}_backward_...`` of a built kernel for one
    dtype. Every kernel function takes four sizes (C ``long``) and then pointers to the data of
    contiguous tensors, ``None`` for a NULL pointer. For the flows' kernels the sizes are
    :func:`sizes`, and row ``n`` of ``z`` uses the parameter row ``n % P``: ``P = 1`` for a static run,
    the batch for an amortized one; ``spd.c`` and ``gram.c`` say what theirs are."""

    _bound: dict[tuple[str, str], Kernel] = {}

    def __init__(self, lib: ctypes.CDLL, name: str, suffix: str):
        self.lib = lib
        self._forward = getattr(lib, f"{name}_forward_{suffix}")
        self._backward = getattr(lib, f"{name}_backward_{suffix}")

    @staticmethod
    def _call(function, sizes, tensors) -> None:
        if function.argtypes is None:  # declared at the first call: ctypes then converts plain ints itself
            function.argtypes = [ctypes.c_long] * len(sizes) + [ctypes.c_void_p] * len(tensors)
            function.restype = None
        assert all(t is None or t.is_contiguous() for t in tensors)
        function(*sizes, *(None if t is None else t.data_ptr() for t in tensors))

    def forward(self, sizes, *tensors) -> None:
        self._call(self._forward, sizes, tensors)

    def backward(self, sizes, *tensors) -> None:
        self._call(self._backward, sizes, tensors)


def rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A contiguous copy of ``x`` as rows of ``dim`` numbers, outside autograd: what a kernel reads
    and updates in place (``z`` forward, its gradient backward)."""
    return x.detach().reshape(-1, dim).clone(memory_format=torch.contiguous_format)


def sizes(z_rows: torch.Tensor, params: torch.Tensor) -> tuple[int, int, int, int]:
    """``(N, K, D, P)`` for rows ``z_rows`` (``(N, D)``) and a run's parameters ``params``, ``(K, .)``
    static or ``(P, K, .)`` amortized: the four sizes every kernel function takes first."""
    return z_rows.shape[0], params.shape[-2], z_rows.shape[1], 1 if params.dim() == 2 else params.shape[0]


def find(name: str, z: torch.Tensor, params: torch.Tensor) -> Kernel | None:
    """The kernel ``name`` for a run on ``z`` (``(B, D)`` or ``(S, B, D)``) with parameters ``params``
    (``(K, .)`` static, ``(B, K, .)`` amortized), or ``None`` where the flow must run its PyTorch
    path: an amortized ``params`` whose batch is not ``z``'s, or no kernel for these tensors
    (:func:`for_tensors`)."""
    if z.dim() < 2 or (params.dim() == 3 and (z.dim() > 3 or z.shape[-2] != params.shape[0])):
        return None
    return for_tensors(name, z, params)


def for_tensors(name: str, *tensors: torch.Tensor) -> Kernel | None:
    """The kernel ``name`` for the dtype of ``tensors``, or ``None`` where the caller must run its
    PyTorch path: tensors not all on the CPU in one dtype of ``float32``/``float64``, inside a
    ``torch.func`` transform or a dispatch mode that traces operations (e.g. the FLOP counter, which
    would not see inside the kernel), or no kernel built (:func:`load`)."""
    suffix = _SUFFIXES.get(tensors[0].dtype)
    if (suffix is None or any(t.dtype != tensors[0].dtype or t.device.type != "cpu" for t in tensors)
            or torch._C._functorch.maybe_current_level() is not None
            or torch._C._len_torch_dispatch_stack() > 0):
        return None
    if (name, suffix) not in Kernel._bound:
        lib = load(name)
        if lib is None:
            return None
        Kernel._bound[name, suffix] = Kernel(lib, name, suffix)
    return Kernel._bound[name, suffix]


def enabled() -> bool:
    """Whether kernels may be used: ``FLOWLIB_KERNELS`` unset or ``1`` (yes), ``0`` (no)."""
    value = os.environ.get("FLOWLIB_KERNELS", "1")
    if value not in ("0", "1"):
        raise ValueError(f"FLOWLIB_KERNELS: expected 0 (PyTorch only) or 1 (compiled kernels), got {value!r}")
    return value == "1"


def cache_dir() -> pathlib.Path:
    """Where built kernels are kept (see the module's docstring)."""
    if os.environ.get("FLOWLIB_KERNEL_CACHE"):
        return pathlib.Path(os.environ["FLOWLIB_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "flowlib" / "kernels"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def _build(name: str) -> pathlib.Path:
    """The shared library of ``name.c``, compiled unless the cache has it; raises ``OSError`` or
    ``subprocess.CalledProcessError`` (with the compiler's message) where it cannot be built."""
    source = SOURCES / f"{name}.c"
    compiler = _compiler()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=True).stdout
    headers = [path.read_text() for path in sorted(SOURCES.glob("*.h"))]  # vexp.h, which kernels include
    text = [source.read_text(), *headers, *FLAGS, *compiler, version]
    key = hashlib.sha256("\0".join(text).encode()).hexdigest()
    target = cache_dir() / f"{name}-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([*compiler, *FLAGS, "-o", partial, str(source), "-lm"],
                       capture_output=True, text=True, check=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``name`` (built on first use), or ``None`` where kernels are turned off or
    cannot be built here (with one warning that says why)."""
    if not enabled():
        return None
    if name not in _loaded:
        try:
            _loaded[name] = ctypes.CDLL(str(_build(name)))
        except subprocess.CalledProcessError as err:
            _loaded[name] = None
            said = " / ".join(line.strip() for line in (err.stderr or "").splitlines() if line.strip())
            warnings.warn(f"flowlib: the {name} kernel could not be compiled ({shlex.join(err.cmd)}: "
                          f"{said[:500]}); using the slower PyTorch path",
                          RuntimeWarning, stacklevel=2)
        except OSError as err:
            _loaded[name] = None
            warnings.warn(f"flowlib: no {name} kernel ({err}); using the slower PyTorch path",
                          RuntimeWarning, stacklevel=2)
    return _loaded[name]
