"""Which code made a result: the git commit of the checkout that ``flowlib`` was imported from."""

from __future__ import annotations

import functools
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
