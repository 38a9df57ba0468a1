"""Where the book's committed files are, wherever a chapter runs.

A chapter must find ``results/`` and ``experiments/`` whether it runs in ``notebooks/`` (the
book's build, nbval), alone in another folder (a reader who downloaded one notebook), or on
Colab (where its first cell clones the repository and installs flowlib from it). Paths are
therefore resolved through flowlib, never relative to the working directory:

1. ``$FLOWLIB_REPO``, if set (the Colab cell sets it to its clone);
2. else the checkout flowlib was installed from (``pip install -e .``): the folder above the
   ``flowlib`` package, if it holds ``pyproject.toml`` and ``results/``.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["repository", "results", "experiments"]


def repository() -> pathlib.Path:
    """The root of the book's repository (the folder holding ``results/`` and ``experiments/``)."""
    env = os.environ.get("FLOWLIB_REPO")
    if env:
        root = pathlib.Path(env).expanduser().resolve()
        if not (root / "results").is_dir():
            raise FileNotFoundError(
                f"FLOWLIB_REPO={env} has no results/ folder: expected a clone of the book's repository")
        return root
    root = pathlib.Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "results").is_dir():
        return root
    raise FileNotFoundError(
        "cannot find the book's repository (its results/ and experiments/ folders): flowlib was not "
        f"installed from a checkout (it lives in {root}). Clone the repository and run "
        "`pip install -e .` in it, or set FLOWLIB_REPO to the clone's folder.")


def results(*parts: str) -> pathlib.Path:
    """``results/<parts...>`` of the repository, e.g. ``results("figure3")``."""
    return repository().joinpath("results", *parts)


def experiments(*parts: str) -> pathlib.Path:
    """``experiments/<parts...>`` of the repository, e.g. ``experiments("mnist")``."""
    return repository().joinpath("experiments", *parts)
