"""Calling the reader's answer from a check in a chapter that is also handed out as coursework.

In the student edition of a chapter (``flowlib.book.coursework``) an answer not yet written raises
``NotImplementedError`` from its stub. :func:`call_answer` is :func:`._mistakes.call_reader` except
that it lets that error through unchanged, so the check cell fails with the stub's own error (which
the student edition's execution accepts, and which says "not attempted yet") instead of reporting
it as a bug in the reader's code.
"""

from __future__ import annotations

from ._mistakes import call_reader
from .feedback import ExerciseError

__all__ = ["call_answer"]


def call_answer(what: str, fn, *args):
    """``call_reader(what, fn, *args)``, but a ``NotImplementedError`` of ``fn`` propagates as itself."""
    try:
        return call_reader(what, fn, *args)
    except ExerciseError as err:
        if isinstance(err.__cause__, NotImplementedError):
            raise err.__cause__ from None
        raise
