"""Atomic writes: a reader never sees half a file, a crash never leaves a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import torch

__all__ = ["atomic_save", "atomic_write_json", "atomic_write_text", "load_checkpoint"]


def _atomic(path, write) -> None:
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj, path) -> None:
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def atomic_write_text(text: str, path) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path, map_location="cpu"):
    """``torch.load(..., weights_only=True)``: tensors and plain containers only, no pickled code.

    A file that is not such a checkpoint (truncated, corrupt, or holding pickled objects) raises
    ``ValueError`` naming the file, instead of the unpickler's own error."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a checkpoint file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (zip), EOFError, ...
        reason = " ".join(str(err).split())[:200]
        raise ValueError(f"{path} is not a readable flowlib checkpoint ({type(err).__name__}: {reason}); "
                         "delete it and train again") from None
