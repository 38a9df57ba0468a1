"""Checks for the book's exercises: each takes the reader's answer (a number, a
tensor or a function), compares it with flowlib's reference, prints what was
right and raises :class:`ExerciseError` with a hint when it is wrong.

One module per chapter; the shared comparison and reporting lives in
:mod:`flowlib.book.exercises.feedback`.
"""

from .feedback import ExerciseError, check_close, passed

__all__ = ["ExerciseError", "check_close", "passed"]
