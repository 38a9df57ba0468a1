"""Coursework from the book's chapters: one source, two editions, and a grader.

The notebooks in ``notebooks/`` are the instructor edition. In them, solution code sits between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines (the nbgrader / otter-grader convention), whole
cells that only belong to a solution are tagged ``solution``, and prose solutions are
``{solution}`` directives. An exercise's code cells carry ``metadata.coursework.exercise`` (its
label), and the notebook carries ``metadata.coursework.chapter``.

* :mod:`.student` builds the student edition: solution regions become a stub that raises
  ``NotImplementedError``, solution cells and prose solutions are removed, outputs cleared.
* :mod:`.grade` executes a submitted notebook in a fresh kernel and runs the chapter's graded
  tests (``coursework/graded/<chapter>.py`` in the repository, not in the student handout) with a
  timeout per exercise, writing points and feedback per exercise.
* :mod:`.harness` is what the graded tests are written with.

    python -m flowlib.book.coursework student --out _build/student
    python -m flowlib.book.coursework grade SUBMISSION.ipynb --report report.json
    python -m flowlib.book.coursework grade-all SUBMISSIONS/ --report grades.csv
"""
