"""Coursework tooling: the student edition strips every solution, and the grader gives full marks
to the solution, 0 to the untouched handout, partial credit to a typical mistake, and a clear
0-point entry (never a crash) to every kind of broken submission."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import textwrap

import nbformat
import pytest

from flowlib.book.coursework import grade as grading
from flowlib.book.coursework.markers import SolutionMarkerError, strip_prose_solutions, stub_solutions
from flowlib.book.coursework.student import STUB_COMMENT, STUDENT_RUNNING_BOX, student_notebook, student_prose
from flowlib.book.coursework.verify import execute_student_notebook, html_leaks

CHAPTERS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
COURSEWORK = [p for p in CHAPTERS if nbformat.read(p, as_version=4).metadata.get("coursework")]

ANSWER = """\
def double(x):
    \"\"\"Twice x.\"\"\"
    # BEGIN SOLUTION
    y = 2 * x
    return y
    # END SOLUTION
"""

GRADED = '''
from flowlib.book.coursework.harness import Exercise, Grade


def _double(double):
    g = Grade(3)
    g.check(double(7) == 14, 2, "double(7) should be 14")
    g.check(double(-1.5) == -3.0, 1, "negative inputs", "did you use abs()?")
    return g


EXERCISES = [Exercise("toy-ex-double", 3, ("double",), _double)]
WRITTEN = {"toy-ex-proof": 4}
'''


def _chapter(answer=ANSWER, extra_cells=()):
    md = nbformat.v4.new_markdown_cell
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["coursework"] = {"chapter": "99_toy"}
    nb.cells = [
        md("# Toy chapter"),
        code("import math\nprint('setup')"),
        md("````{exercise}\n:label: toy-ex-double\nWrite `double(x)`.\n````\n\n"
           "```{solution} toy-ex-double\n:class: dropdown\nMultiply by two.\n```"),
        code(answer, metadata={"coursework": {"exercise": "toy-ex-double"}}),
        code("assert double(3) == 6", metadata={"coursework": {"exercise": "toy-ex-double"}}),
        code("print('a check that shows the answer:', double(21))", metadata={"tags": ["solution"]}),
        md(":::{solution} toy-ex-proof\nA proof.\n:::\n\nText after."),
        *extra_cells,
        code("print('the chapter goes on')"),
    ]
    return nb


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "coursework" / "graded").mkdir(parents=True)
    (tmp_path / "coursework" / "graded" / "99_toy.py").write_text(GRADED)
    return tmp_path


def _write(nb, path):
    nbformat.write(nb, path)
    return path


def test_stub_replaces_each_region_at_its_indentation():
    stubbed = stub_solutions(ANSWER, "Exercise toy: write it")
    assert "2 * x" not in stubbed and "BEGIN" not in stubbed and "END SOLUTION" not in stubbed
    assert "    raise NotImplementedError('Exercise toy: write it')" in stubbed.splitlines()
    assert '"""Twice x."""' in stubbed
    commented = stub_solutions(ANSWER, "Exercise toy", "Your solution replaces the next line.").splitlines()
    assert commented[-2:] == ["    # Your solution replaces the next line.",
                              "    raise NotImplementedError('Exercise toy')"]
    for bad in ("# BEGIN SOLUTION\n", "# END SOLUTION\n", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n"):
        with pytest.raises(SolutionMarkerError):
            stub_solutions(bad, "m")


def test_prose_solutions_are_removed_with_any_fence():
    text = "Before.\n\n````{solution} a\n:class: dropdown\n```python\ncode\n```\n````\n\nAfter."
    assert strip_prose_solutions(text) == "Before.\n\nAfter."
    assert strip_prose_solutions(":::{solution} b\nx\n:::") == ""
    with pytest.raises(SolutionMarkerError):
        strip_prose_solutions("```{solution} c\nnever closed")


def test_student_edition_leaks_no_solution():
    student = student_notebook(_chapter())
    text = json.dumps(student)
    for secret in ("2 * x", "BEGIN SOLUTION", "{solution}", "Multiply by two", "A proof", "shows the answer"):
        assert secret not in text, secret
    assert "Text after." in text and "the chapter goes on" in text
    answer = [c for c in student.cells if c.get("metadata", {}).get("coursework")][0]
    assert {"raises-exception", "remove-output"} <= set(answer.metadata["tags"])
    with pytest.raises(ValueError, match="no metadata.coursework.exercise"):
        nb = _chapter()
        nb.cells[3].metadata = {}
        student_notebook(nb)


@pytest.mark.slow
def test_student_notebook_fails_only_in_its_exercise_cells(tmp_path):
    path = _write(student_notebook(_chapter()), tmp_path / "student.ipynb")
    _, problems = execute_student_notebook(path)
    assert problems == []
    broken = _chapter(extra_cells=[nbformat.v4.new_code_cell("undefined_name")])
    _, problems = execute_student_notebook(_write(student_notebook(broken), tmp_path / "b.ipynb"))
    assert len(problems) == 1 and "NameError" in problems[0] and "not an exercise" in problems[0]


def _grade(root, nb_or_text, tmp_path, name="sub.ipynb", **kwargs):
    path = tmp_path / name
    if isinstance(nb_or_text, str):
        path.write_text(nb_or_text)
    else:
        nbformat.write(nb_or_text, path)
    kwargs.setdefault("cell_timeout", 20)
    kwargs.setdefault("exercise_timeout", 20)
    return grading.grade(path, root=root, **kwargs)


@pytest.mark.slow
def test_solution_full_marks_handout_zero_mistake_partial(root, tmp_path):
    full = _grade(root, _chapter(), tmp_path, "full.ipynb")
    assert (full["total"], full["max_total"]) == (3.0, 3.0), full
    assert full["written"] == [{"id": "toy-ex-proof", "max_points": 4.0,
                                "feedback": "graded by hand (rubric in the instructor guide)"}]
    handout = _grade(root, student_notebook(_chapter()), tmp_path, "handout.ipynb")
    assert handout["total"] == 0 and "not attempted" in handout["exercises"][0]["feedback"]
    mistake = _grade(root, _chapter(ANSWER.replace("y = 2 * x", "y = 2 * abs(x)")), tmp_path, "m.ipynb")
    assert mistake["total"] == 2.0
    feedback = mistake["exercises"][0]["feedback"]
    assert "negative inputs" in feedback and "abs()" in feedback


@pytest.mark.slow
def test_broken_submissions_get_zero_and_a_reason(root, tmp_path):
    # not JSON
    r = _grade(root, "this is not a notebook {", tmp_path, "text.ipynb", chapter="99_toy")
    assert r["total"] == 0 and "not a readable notebook" in r["exercises"][0]["feedback"]
    # another chapter
    other = _chapter()
    other.metadata["coursework"]["chapter"] = "04_planar_flows"
    r = _grade(root, other, tmp_path, "other.ipynb", chapter="99_toy")
    assert r["total"] == 0 and "not a notebook of chapter 99_toy" in r["exercises"][0]["feedback"]
    # the exercise deleted
    missing = _chapter()
    missing.cells = [c for c in missing.cells if not c.get("metadata", {}).get("coursework")]
    r = _grade(root, missing, tmp_path, "missing.ipynb")
    assert r["total"] == 0 and "missing" in r["exercises"][0]["feedback"]
    # an answer that raises, and a chapter cell that raises: the grade is still given
    raising = _chapter(ANSWER.replace("y = 2 * x", "y = 1 / 0"), [nbformat.v4.new_code_cell("1 / 0")])
    r = _grade(root, raising, tmp_path, "raising.ipynb")
    assert r["total"] == 0 and "ZeroDivisionError" in r["exercises"][0]["feedback"]
    assert any("raised ZeroDivisionError" in n for n in r["notes"])
    # an endless loop in the answer cell (at definition time) and one in the graded call
    forever = _chapter("while True:\n    pass\n" + ANSWER)
    r = _grade(root, forever, tmp_path, "forever.ipynb", cell_timeout=3, exercise_timeout=3)
    assert r["total"] == 0 and "timed out" in r["exercises"][0]["feedback"]
    looping = _chapter(ANSWER.replace("y = 2 * x", "while x: pass"))
    r = _grade(root, looping, tmp_path, "looping.ipynb", cell_timeout=3, exercise_timeout=3)
    assert r["total"] == 0 and "ran past their time limit" in r["exercises"][0]["feedback"]
    # megabytes of output are cut, and the grade is still right
    printing = nbformat.v4.new_code_cell("for i in range(200000):\n    print(i, 'x' * 40)")
    flood = _chapter(extra_cells=[printing])
    r = _grade(root, flood, tmp_path, "flood.ipynb")
    assert r["total"] == 3 and any("printed more than" in n for n in r["notes"])
    # a submission that says nothing about its chapter, graded without --chapter
    anonymous = _chapter()
    del anonymous.metadata["coursework"]
    r = _grade(root, anonymous, tmp_path, "anon.ipynb")
    assert r["exercises"] == [] and "grade it with --chapter" in r["notes"][0]


@pytest.mark.slow
def test_grade_all_writes_one_csv_row_per_submission(root, tmp_path, monkeypatch):
    folder = tmp_path / "class"
    folder.mkdir()
    nbformat.write(_chapter(), folder / "alice.ipynb")
    nbformat.write(student_notebook(_chapter()), folder / "bob.ipynb")
    (folder / "carol.ipynb").write_text("{")
    monkeypatch.setattr(grading, "_repository", lambda: root)
    grading.grade_all(folder, tmp_path / "grades.csv", "99_toy", cell_timeout=20, exercise_timeout=20)
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert [(r["submission"], r["total"]) for r in rows] == [("alice.ipynb", "3.0"), ("bob.ipynb", "0.0"),
                                                            ("carol.ipynb", "0.0")]
    assert "not a readable notebook" in rows[2]["notes"]


def test_a_chapter_without_graded_tests_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no graded tests for chapter 'zz'"):
        grading.load_graded("zz", tmp_path)
    (tmp_path / "coursework" / "graded").mkdir(parents=True)
    (tmp_path / "coursework" / "graded" / "yy.py").write_text(textwrap.dedent("EXERCISES = []"))
    with pytest.raises(ValueError, match="EXERCISES must be"):
        grading.load_graded("yy", tmp_path)


def test_every_coursework_chapter_has_graded_tests_for_every_coded_exercise():
    """Each notebook that declares its chapter (metadata.coursework.chapter, under its own name) has
    a graded module that grades exactly the exercises whose code cells carry solution markers; a
    notebook with solution markers must declare its chapter."""
    from flowlib.book.coursework.markers import has_solution
    from flowlib.book.coursework.student import chapter_of, exercise_of

    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        coded = {exercise_of(c) for c in nb.cells if c.cell_type == "code" and has_solution(c.source)}
        if chapter_of(nb) is None:
            assert not coded, f"{path.name} has solution markers but no metadata.coursework.chapter"
            continue
        assert chapter_of(nb) == path.stem
        module, _ = grading.load_graded(path.stem)
        assert {e.id for e in module.EXERCISES} == coded, path.name


# ------------------------------------------------------------------ the book's own chapters

def _solution_lines(source: str) -> list[str]:
    """The non-trivial lines inside the solution regions of a cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if "BEGIN SOLUTION" in line:
            inside = True
        elif "END SOLUTION" in line:
            inside = False
        elif inside and len(line.strip()) > 12:
            lines.append(line.strip())
    return lines


def _solution_count(source: str) -> int:
    return sum("BEGIN SOLUTION" in line for line in source.splitlines())


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_the_student_edition_of_each_chapter_leaks_no_solution(path):
    nb = nbformat.read(path, as_version=4)
    student = student_notebook(nb)
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    markdown = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert "BEGIN SOLUTION" not in code and "END SOLUTION" not in code
    assert "{solution}" not in markdown
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    # the stub (a comment and the line that raises) fits the page's code column, about 80 characters
    stubs = [line for c in student.cells if c.cell_type == "code" for line in c.source.splitlines()
             if "raise NotImplementedError('Exercise " in line or line.strip() == f"# {STUB_COMMENT}"]
    assert len(stubs) == 2 * sum(_solution_count(c.source) for c in nb.cells if c.cell_type == "code")
    assert all(len(line) <= 79 for line in stubs), max(stubs, key=len)
    # A line of a solution region that the student edition still has, and that the chapter does not
    # show anyway outside every solution (e.g. `h = 1 / (alpha + r)` in the chapter's own code).
    public = {line.strip() for c in nb.cells if c.cell_type == "code"
              and "solution" not in c.metadata.get("tags", [])
              for line in stub_solutions(c.source, "").splitlines()}
    student_lines = {line.strip() for line in code.splitlines()}
    leaked = [line for c in nb.cells if c.cell_type == "code" for line in _solution_lines(c.source)
              if line in student_lines and line not in public]
    assert not leaked, f"{path.name}: solution lines in the student edition: {leaked[:3]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_the_student_edition_sends_students_to_their_handout_not_to_a_launch_button(path):
    # The student pages have no launch buttons: the chapter's running box is the students' one.
    student = student_notebook(nbformat.read(path, as_version=4))
    markdown = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert markdown.count(STUDENT_RUNNING_BOX) == 1
    assert not re.search(r"launch button|rocket", markdown, re.I)


def test_a_launch_button_the_student_edition_cannot_replace_is_an_error():
    box = ":::{admonition} Running this notebook\n:class: note\n- the launch button opens it\n:::\n"
    assert student_prose("Intro.\n\n" + box + "\nMore.") == "Intro.\n\n" + STUDENT_RUNNING_BOX + "\n\nMore."
    assert student_prose("use it in Colab (the launch button at the top of\nthe page).") == "use it in Colab."
    with pytest.raises(ValueError, match="markdown cell 3 mentions the launch button"):
        student_prose("Press the launch button above.", "markdown cell 3")


@pytest.mark.slow
@pytest.mark.parametrize("path", COURSEWORK, ids=[p.stem for p in COURSEWORK])
def test_grading_gives_the_instructor_notebook_full_marks_and_the_handout_zero(path, tmp_path):
    """The instructor notebook earns every point; the untouched student notebook earns none, and in
    it only the exercise cells fail, with the stub's NotImplementedError."""
    full = grading.grade(path)
    assert full["max_total"] > 0 and full["total"] == full["max_total"], full
    handout = tmp_path / path.name
    nbformat.write(student_notebook(nbformat.read(path, as_version=4)), handout)
    zero = grading.grade(handout)
    assert zero["total"] == 0 and zero["max_total"] == full["max_total"]
    assert all("not attempted" in e["feedback"] for e in zero["exercises"]), zero["exercises"]
    assert all("(exercise " in n and "raised NotImplementedError" in n for n in zero["notes"]), zero["notes"]


def _html_page(code: str) -> str:
    """A code cell as Pygments highlights it on a page: every token in its own span."""
    spans = "".join(f'<span class="n">{tok}</span>' for tok in code.replace("<", "&lt;").split(" "))
    return f'<html><body><div class="highlight"><pre>{spans.replace("</span><span", "</span> <span")}'\
        "</pre></div></body></html>"


def test_the_html_check_finds_a_solution_line_a_directive_and_a_notebook_output(tmp_path):
    chapter = _write(_chapter(), tmp_path / "99_toy.ipynb")
    site = tmp_path / "html"
    (site / "_sources").mkdir(parents=True)
    student = student_notebook(_chapter())
    public = next(c.source for c in student.cells if c.metadata.get("coursework"))
    (site / "toy.html").write_text(_html_page(public))
    nbformat.write(student, site / "_sources" / "toy.ipynb")
    assert html_leaks(site, [chapter]) == []
    # a highlighted solution line, a cell tagged solution, a {solution} node, an output in the download
    (site / "code.html").write_text(_html_page("y = 2 * x"))
    assert html_leaks(site, [chapter]) == []  # 9 characters: too short to be distinctive
    (site / "code.html").write_text(_html_page("print('a check that shows the answer:', double(21))"))
    (site / "directive.html").write_text('<div class="solution dropdown admonition" id="solution-1">'
                                         '<section id="solution-content"><p>Multiply by two.</p>')
    leaked = student_notebook(_chapter())
    shown = "----> 1 print('a check that shows the answer:', double(21))"  # a traceback quotes its line
    leaked.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="", traceback=[shown])]
    nbformat.write(leaked, site / "_sources" / "toy.ipynb")
    problems = html_leaks(site, [chapter])
    assert len(problems) == 3, problems
    assert any(p.startswith("code.html: 1 solution line") for p in problems)
    assert any(p.startswith("directive.html: a rendered {solution}") for p in problems)
    assert any(p.startswith(str(pathlib.Path("_sources", "toy.ipynb"))) for p in problems)
    assert html_leaks(tmp_path / "nothing", [chapter]) == [f"{tmp_path / 'nothing'}: no HTML page to check"]


ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDENT_HTML = pathlib.Path(os.environ.get("FLOWLIB_STUDENT_HTML", ROOT / "_build" / "student" / "html"))


@pytest.mark.skipif(not (STUDENT_HTML / "index.html").is_file(),
                    reason="no student HTML built (make student builds it, and fails itself on a leak)")
def test_the_built_student_html_leaks_no_solution():
    """Every page of the student HTML that `make student` built (and every notebook its download
    buttons hand out): no line of any solution region or solution cell, no {solution} directive."""
    pages = {p.stem for p in STUDENT_HTML.glob("notebooks/*.html")}
    assert pages == {p.stem for p in CHAPTERS}
    others = [p for p in (ROOT / "book").rglob("*.md") if not p.name.startswith("instructor_guide")]
    assert html_leaks(STUDENT_HTML, CHAPTERS, others) == []
    assert not (STUDENT_HTML / "book" / "instructor_guide.html").exists()
    for path in CHAPTERS:  # the download button hands out the handout: no outputs, no stub tracebacks
        download = nbformat.read(STUDENT_HTML / "_sources" / "notebooks" / path.name, as_version=4)
        assert all(not c.get("outputs") for c in download.cells if c.cell_type == "code"), path.name


def test_no_pipe_splits_a_table_cell_of_the_instructor_guide():
    """In a Markdown table row an unescaped | inside $...$ or `...` ends the cell: the rest of the
    cell is lost and the maths shows as raw TeX (it happened to a rubric of chapter 9). Write
    \\lvert ... \\rvert, or \\| for a norm."""
    pages = sorted((ROOT / "coursework" / "guide").glob("*.md")) + [ROOT / "book" / "instructor_guide.md"]
    split = [f"{p.name}:{n}: {m.group(0)}" for p in pages
             for n, line in enumerate(p.read_text().splitlines(), 1) if line.lstrip().startswith("|")
             for m in re.finditer(r"\$[^$]+\$|`[^`]+`", line) if re.search(r"(?<!\\)\|", m.group(0))]
    assert not split, split


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_answer_and_check_cells_fit_the_code_column(path):
    # The page's code column shows about 80 characters; a longer line of an answer cell is clipped,
    # in the instructor's book and in the student's handout alike.
    nb = nbformat.read(path, as_version=4)
    long = [line for c in nb.cells if c.cell_type == "code" and c.metadata.get("coursework")
            for line in c.source.splitlines() if len(line) > 79]
    assert not long, f"{path.name}: lines wider than the code column: {long[:3]}"
