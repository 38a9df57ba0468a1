"""``python -m flowlib.book.coursework {student,grade,grade-all}``: see the package docstring."""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

import nbformat
import yaml

from ..paths import repository
from .grade import grade, grade_all
from .student import write_student_notebooks

INSTRUCTOR_ONLY = ("book/instructor_guide",)


def _student_toc(toc: dict) -> dict:
    """The table of contents without the instructor-only pages."""
    def keep(entry):
        return not any(str(entry.get("file", "")).startswith(p) for p in INSTRUCTOR_ONLY)

    toc = json.loads(json.dumps(toc))
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part.get("chapters", []) if keep(c)]
    toc["parts"] = [p for p in toc.get("parts", []) if p["chapters"]]
    return toc


def build_student(out: pathlib.Path, html: bool) -> int:
    root = repository()
    sources = sorted((root / "notebooks").glob("*.ipynb"))
    written = write_student_notebooks(sources, out / "notebooks")
    print(f"student notebooks: {len(written)} in {out / 'notebooks'}")
    if not html:
        return 0
    # The HTML is built from a copy of the book's sources with the student notebooks, executed here
    # first so that a cell failing with anything but an exercise's stub error stops the build.
    from .verify import execute_student_notebook

    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("instructor_guide*"))
    shutil.copy(root / "_config.yml", src / "_config.yml")
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    (src / "_toc.yml").write_text(yaml.safe_dump(_student_toc(toc), sort_keys=False))
    config = yaml.safe_load((src / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # executed below, once
    config["title"] = f"{config.get('title', 'Book')} (student edition)"
    # The launch (Binder, Colab) and repository buttons open the repository's notebooks, which are the
    # instructor edition with every solution: the student pages have neither (their download button
    # hands out the student notebook).
    config.pop("launch_buttons", None)
    config.pop("repository", None)
    for button in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
        config.setdefault("html", {})[button] = False
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    failed = []
    for path in written:
        nb, problems = execute_student_notebook(path)
        nbformat.write(nb, src / "notebooks" / path.name)
        print(f"  executed {path.name}: " + ("ok" if not problems else "; ".join(problems)), flush=True)
        failed += [f"{path.name}: {p}" for p in problems]
    if failed:
        print("error: student notebooks failed outside their exercise cells:\n  " + "\n  ".join(failed),
              file=sys.stderr)
        return 1
    build = out / "build"
    jupyter_book = str(pathlib.Path(sys.executable).parent / "jupyter-book")
    cmd = [jupyter_book, "build", "--all", "-W", "-n", "--keep-going", "--path-output", str(build), str(src)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        return rc
    if (out / "html").exists():
        shutil.rmtree(out / "html")
    shutil.copytree(build / "_build" / "html", out / "html")
    # A page's download button hands out the notebook the page was built from, executed (with the
    # stubs' tracebacks in the answer cells): hand out the clean handout instead, as in notebooks/.
    for path in written:
        download = out / "html" / "_sources" / "notebooks" / path.name
        if not download.is_file():
            print(f"error: no downloadable notebook {download} in the student HTML", file=sys.stderr)
            return 1
        shutil.copy(path, download)
    from .verify import html_leaks

    leaks = html_leaks(out / "html", sources, sorted((src / "book").rglob("*.md")))
    if leaks:
        print("error: the student HTML shows solutions:\n  " + "\n  ".join(leaks), file=sys.stderr)
        return 1
    print(f"student HTML: {out / 'html' / 'index.html'} (no solution line or directive on any page)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowlib.book.coursework", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="build the student edition (notebooks, and with --html the book)")
    s.add_argument("--out", type=pathlib.Path, default=pathlib.Path("_build/student"))
    s.add_argument("--html", action="store_true", help="also execute the notebooks and build the HTML book")
    g = sub.add_parser("grade", help="grade one submitted notebook into a JSON report")
    g.add_argument("submission", type=pathlib.Path)
    g.add_argument("--report", type=pathlib.Path, required=True)
    g.add_argument("--chapter", help="the chapter expected (default: what the notebook says it is)")
    g.add_argument("--cell-timeout", type=int, default=120)
    g.add_argument("--exercise-timeout", type=int, default=60)
    a = sub.add_parser("grade-all", help="grade every notebook of a folder into one CSV")
    a.add_argument("folder", type=pathlib.Path)
    a.add_argument("--report", type=pathlib.Path, required=True)
    a.add_argument("--chapter")
    a.add_argument("--cell-timeout", type=int, default=120)
    a.add_argument("--exercise-timeout", type=int, default=60)
    args = p.parse_args(argv)
    if args.command == "student":
        return build_student(args.out, args.html)
    for t in ("cell_timeout", "exercise_timeout"):
        if getattr(args, t) < 1:
            p.error(f"--{t.replace('_', '-')} must be >= 1 second")
    if args.command == "grade":
        try:
            report = grade(args.submission, args.chapter, cell_timeout=args.cell_timeout,
                           exercise_timeout=args.exercise_timeout)
        except (FileNotFoundError, ValueError) as err:
            p.error(str(err))
        args.report.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.report.with_name(f".{args.report.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.report)
        for e in report["exercises"]:
            print(f"{e['id']}: {e['points']:g}/{e['max_points']:g}  {e['feedback']}")
        print(f"total {report['total']:g}/{report['max_total']:g} -> {args.report}")
        return 0
    try:
        reports = grade_all(args.folder, args.report, args.chapter, cell_timeout=args.cell_timeout,
                            exercise_timeout=args.exercise_timeout)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    print(f"{len(reports)} submissions graded -> {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
