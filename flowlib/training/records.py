"""What a result records about where it came from, and the one writer of results.

Every driver (the experiment tables, Figure 3, the 2-D fits, the 2-D posteriors) and the training
loop record the same provenance: the ``command`` that made the result, the ``git_commit`` of the
checkout ``flowlib`` was imported from, and the ``machine`` it ran on; and they write through
:func:`write_results`, atomically (a reader never sees half a file, a crash never leaves one).
"""

from __future__ import annotations

import functools
import os
import pathlib
import platform
import subprocess

from .checkpoint import atomic_save, atomic_write_json

__all__ = ["ROOT", "git_commit", "machine", "provenance", "write_results"]

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout: flowlib/training/records.py


def git_commit(sources: tuple[str, ...] = ("flowlib",)) -> str | None:
    """``HEAD`` of the checkout, with a suffix if any of ``sources`` has uncommitted changes.

    Cached per ``sources``: the first call fixes the answer for the whole process, so a long run
    that calls it when it starts records the code it imported, not the ``HEAD`` of the moment its
    results are written (later commits do not change the code a running process executes).
    ``None`` outside a git checkout (e.g. an installed wheel).
    """
    if not isinstance(sources, tuple) or not all(isinstance(s, str) for s in sources):
        raise TypeError(f"sources must be a tuple of paths relative to {ROOT}, got {sources!r}")
    return _commit(ROOT, sources)


@functools.cache
def _commit(root: pathlib.Path, sources: tuple[str, ...]) -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *sources], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (f" with uncommitted changes in {', '.join(sources)}" if dirty else "")


def machine() -> dict:
    """The machine a result was computed on: platform, processor, CPUs, torch's threads and
    version, Python's version, and the name of its CUDA device where it has one (key ``gpu``)."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}),
    }


def provenance(command: str | None, sources: tuple[str, ...] = ("flowlib",)) -> dict:
    """``{"command", "git_commit", "machine"}`` of a result made now by ``command``."""
    return {"command": command, "git_commit": git_commit(sources), "machine": machine()}


def write_results(folder, results: dict, *, command: str | None, name: str = "results.json",
                  states: dict | None = None, sources: tuple[str, ...] = ("flowlib",)) -> dict:
    """Write ``results`` with its provenance (:func:`provenance`: the command, the commit of
    ``sources``, the machine) as ``folder/name``, and ``states`` (tensors, e.g. fitted flows'
    state dicts) as ``folder/states.pt``; both atomically. Returns what was written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**provenance(command, sources), **results}
    if states is not None:
        atomic_save(states, folder / "states.pt")
    atomic_write_json(record, folder / name)
    return record
