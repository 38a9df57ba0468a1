"""Open the built book in headless Chromium and check every page as a reader sees it.

For every page of the table of contents (or the pages given), the script loads the built HTML
in Chromium (Debian's package: ``apt-get install -y chromium``), lets MathJax typeset, then
reads back from the live DOM of the page's content (``article.bd-article``, else ``main``, else
``body``) and fails the page, naming the element, on:

* maths not typeset: a ``.math`` element Sphinx wrote without a MathJax ``mjx-container``, or a
  TeX error (``mjx-merror``, an undefined macro drawn in red);
* figures that did not load (``naturalWidth == 0``);
* raw Markdown tables: text outside a ``<table>`` that contains a separator row ``|---|`` or a
  line that starts with ``|`` and contains `` | `` (a table that was not rendered), in prose or
  in an output (code cell inputs and inline code are exempt);
* object reprs in the page: ``<function ``, ``<Figure size ``, ``<matplotlib.``,
  ``<bound method ``, ``object at 0x`` (code cell inputs exempt);
* doubled references: a link whose first word repeats the word just before it ("exercise
  Exercise 3.2", "figure Fig. 4.1", "equation Equation"), or a parenthesised link right after
  "(" ("Eq. ((3.1))");
* an ``<img>`` without alt text, or whose alt is a file path or file name;
* a figure shown at less than 80% of its natural width (``clientWidth / naturalWidth``), which
  shrinks its text with it;
* numbering that does not restart per chapter: on the page of chapter N (the number of its
  title, else the leading digits of its file name), every equation number and every caption
  number (figures, tables, exercises, theorems) must be N.k;
* a widget view: a ``application/vnd.jupyter.widget-view+json`` output, or a visible element of
  class ``jupyter-widgets`` / ``widget-*``; a static page cannot run a widget, so it must show
  the widget's static twin and hide the widget's output (tag ``remove-output``);

and saves a screenshot of each full page under ``--out``. It prints a summary per page, exits
with status 1 and lists the defects if any page fails, and 2 if it cannot run (no HTML, no
Chromium, no MathJax).

MathJax comes from a CDN. Where the CDN cannot be reached (an offline machine), the pages are
checked in a temporary copy whose MathJax URL points at a local copy of the same major version,
fetched once with ``npm pack mathjax@3`` into ``~/.cache/flowlib/mathjax`` (or given with
``--mathjax`` / ``$MATHJAX_DIR``, the folder that holds ``es5/``); the report says which was used.

    python scripts/check_render.py                      # _build/html, pages from _toc.yml
    python scripts/check_render.py --html /tmp/b/_build/html --toc my_toc.yml
    python scripts/check_render.py --html DIR --pages notebooks/03_matrix_determinant_lemma
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MATHJAX_VERSION = "3.2.2"
MATHJAX_SRC = re.compile(r'src="(https://[^"]*mathjax[^"]*?/es5/([\w-]+\.js))"')
MIN_WIDTH_RATIO = 0.8
# The kinds of defect the probe reports, in the order the summary lists them.
KINDS = {
    "raw-table": "raw Markdown table text outside a <table>",
    "repr": "object repr in the page",
    "doubled-ref": "doubled reference",
    "alt": "image without alt text (or with a file name as alt)",
    "shrunk": f"figure shown below {MIN_WIDTH_RATIO:.0%} of its natural width",
    "numbering": "number not of the form N.k on chapter N's page",
    "widget": "widget view on a static page",
}

# Injected before </body> of each checked page (see the file for what it inspects).
PROBE = pathlib.Path(__file__).with_name("render_probe.js")


def fail(message: str, status: int = 2):
    print(f"check_render: {message}", file=sys.stderr)
    sys.exit(status)


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else []) + list(CHROMIUM_NAMES):
        path = shutil.which(name) if name else None
        if path:
            return path
    fail("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "). On Debian or Ubuntu: "
         "apt-get install -y chromium; or pass --chromium PATH")


def toc_pages(toc_path: pathlib.Path) -> list[str]:
    """The pages of a Jupyter Book _toc.yml, as paths without suffix, root first."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file") and isinstance(value, str):
                    yield str(pathlib.PurePosixPath(value).with_suffix(""))
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(yaml.safe_load(toc_path.read_text())))


def chapter_of(page: str) -> int | None:
    """The chapter number a page's file name gives (``notebooks/04_planar`` -> 4), else None."""
    m = re.match(r"(\d+)_", pathlib.PurePosixPath(page).name)
    return int(m.group(1)) if m else None


def reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def local_mathjax(explicit: str | None) -> pathlib.Path:
    """A folder holding MathJax's ``es5/``: given, or fetched once with ``npm pack``."""
    for candidate in (explicit, os.environ.get("MATHJAX_DIR")):
        if candidate:
            path = pathlib.Path(candidate).expanduser()
            if not (path / "es5" / "tex-mml-chtml.js").is_file():
                fail(f"{path} does not hold MathJax 3 (expected {path / 'es5' / 'tex-mml-chtml.js'})")
            return path
    cache = pathlib.Path.home() / ".cache" / "flowlib" / "mathjax" / MATHJAX_VERSION
    if (cache / "es5" / "tex-mml-chtml.js").is_file():
        return cache
    if not shutil.which("npm"):
        fail("the MathJax CDN cannot be reached and npm is not installed to fetch a local copy; "
             "install npm, or pass --mathjax DIR (a folder with MathJax 3's es5/)")
    print(f"check_render: the MathJax CDN cannot be reached; fetching mathjax@{MATHJAX_VERSION} (npm pack)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp,
                             capture_output=True, text=True)
        tarballs = list(pathlib.Path(tmp).glob("mathjax-*.tgz"))
        if out.returncode != 0 or not tarballs:
            fail(f"npm pack mathjax@{MATHJAX_VERSION} failed: {out.stderr.strip()}")
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(tmp, filter="data")
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(pathlib.Path(tmp) / "package", cache)
    return cache


def probe_for(page: str) -> str:
    chapter = chapter_of(page)
    script = (PROBE.read_text(encoding="utf-8").replace("__MIN_RATIO__", repr(MIN_WIDTH_RATIO))
              .replace("__CHAPTER__", "null" if chapter is None else str(chapter)))
    return f"<script>\n{script}</script>\n"


def prepare(html_dir: pathlib.Path, pages: list[str], mathjax_dir: pathlib.Path | None, work: pathlib.Path):
    """Copy the built site to ``work`` and inject the probe (and the local MathJax) into ``pages``."""
    site = work / "html"
    shutil.copytree(html_dir, site)
    for page in pages:
        path = site / f"{page}.html"
        text = path.read_text(encoding="utf-8")
        if mathjax_dir is not None:
            text = MATHJAX_SRC.sub(lambda m: f'src="{(mathjax_dir / "es5" / m.group(2)).as_uri()}"', text)
        if "</body>" not in text:
            fail(f"{path}: no </body>; is this a Sphinx HTML page?")
        path.write_text(text.replace("</body>", probe_for(page) + "</body>", 1), encoding="utf-8")
    return site


def chromium(binary: str, profile: pathlib.Path, budget_ms: int, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--allow-file-access-from-files", "--force-device-scale-factor=1",
               f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def read_report(dom: str) -> dict | None:
    body = re.search(r"<body([^>]*)>", dom)
    found = re.search(r'data-rc-report="([A-Za-z0-9+/=]*)"', body.group(1)) if body else None
    return json.loads(base64.b64decode(found.group(1)).decode("utf-8")) if found else None


def check_page(binary, site, page, out_dir, budget_ms, width, height, profile, full_page=True):
    url = (site / f"{page}.html").as_uri()
    dom = chromium(binary, profile, budget_ms, f"--window-size={width},{height}", "--dump-dom", url)
    report = read_report(dom.stdout)
    result = {"page": page, "screenshot": None, "problems": [], "defects": []}
    if report is None:
        result["problems"].append("the page did not finish loading in the time budget (no probe results; "
                                  f"chromium said: {dom.stderr.strip()[-300:]})")
        return result
    if "error" in report:
        result["problems"].append(f"the probe failed in the page: {report['error'][:500]}")
        return result
    shot = out_dir / f"{page.replace('/', '__')}.png"
    shot_height = min(max(height, int(report.get("height", height))), 32000) if full_page else height
    chromium(binary, profile, budget_ms, f"--screenshot={shot}", f"--window-size={width},{shot_height}", url)
    maths, images = report["maths"], report["images"]
    result.update(chapter=report["chapter"], numbered=report["numbered"], maths=maths, images=images,
                  defects=report["defects"])
    problems = result["problems"]
    if report["state"] not in ("typeset", "no-maths"):
        problems.append(f"MathJax did not run ({report['state']})")
    if maths["rendered"] < maths["total"]:
        problems.append(f"{maths['total'] - maths['rendered']} of {maths['total']} maths elements "
                        "were not rendered")
    if maths["errors"]:
        problems.append(f"{maths['errors']} TeX errors or undefined macros on the page {maths['errorText']}")
    if images["failed"]:
        problems.append(f"{len(images['failed'])} images did not load: {images['failed']}")
    for d in report["defects"]:
        problems.append(f"{KINDS[d['kind']]}: {d['detail']} ({d['where']})")
    if not shot.is_file() or shot.stat().st_size == 0:
        problems.append("no screenshot was written")
    else:
        result["screenshot"] = str(shot)
    return result


def summary(r: dict) -> str:
    if "maths" not in r:
        return "no results"
    m, i = r["maths"], r["images"]
    counts = {k: sum(d["kind"] == k for d in r["defects"]) for k in KINDS}
    found = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no defects"
    chapter = f"chapter {r['chapter']}, {r['numbered']} numbers checked" if r["chapter"] is not None \
        else "unnumbered page"
    return (f"maths {m['rendered']}/{m['total']} rendered ({m['errors']} errors), figures "
            f"{i['figuresLoaded']}/{i['figures']} loaded (local images {i['loaded']}/{i['total']}), "
            f"{chapter}; {found}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", default=str(ROOT / "_build" / "html"),
                        help="the built book (default: %(default)s)")
    parser.add_argument("--toc", default=str(ROOT / "_toc.yml"), help="pages to check: those of this toc")
    parser.add_argument("--pages", nargs="*", help="check only these pages (paths without .html)")
    parser.add_argument("--out", default=str(ROOT / "_build" / "screenshots"), help="screenshots go here")
    parser.add_argument("--chromium", help="the Chromium binary (default: found on PATH)")
    parser.add_argument("--mathjax", help="a local MathJax 3 folder (holding es5/) for offline checks")
    parser.add_argument("--budget-ms", type=int, default=60_000, help="Chromium virtual time budget per load")
    parser.add_argument("--window", default="1280x1600",
                        help="window WIDTHxHEIGHT; screenshots are as tall as the page (%(default)s)")
    parser.add_argument("--top-only", action="store_true",
                        help="screenshot only the window, not the full page")
    parser.add_argument("--require-figures", action="store_true",
                        help="also fail a page (other than the root) that has no figure at all")
    args = parser.parse_args(argv)

    started = time.monotonic()
    html_dir = pathlib.Path(args.html)
    if not (html_dir / "index.html").is_file():
        fail(f"no built book at {html_dir} (no index.html): build it first with `make book`")
    pages = args.pages or toc_pages(pathlib.Path(args.toc))
    missing = [p for p in pages if not (html_dir / f"{p}.html").is_file()]
    if missing:
        fail(f"pages missing from {html_dir}: {missing}")
    binary = find_chromium(args.chromium)
    width, height = (int(v) for v in args.window.lower().split("x"))

    sources = (MATHJAX_SRC.search((html_dir / f"{p}.html").read_text("utf-8")) for p in pages)
    cdn = next((m for m in sources if m), None)
    mathjax_dir = None
    if cdn and (args.mathjax or not reachable(cdn.group(1))):
        mathjax_dir = local_mathjax(args.mathjax)
    source = f"local copy {mathjax_dir}" if mathjax_dir else (cdn.group(1) if cdn else "none referenced")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"check_render: {version}; MathJax: {source}; {len(pages)} pages from {html_dir}")

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        site = prepare(html_dir, pages, mathjax_dir, pathlib.Path(tmp))
        for page in pages:
            profile = pathlib.Path(tmp) / "profile"
            r = check_page(binary, site, page, out_dir, args.budget_ms, width, height, profile,
                           full_page=not args.top_only)
            if args.require_figures and page != pages[0] and r.get("images", {}).get("figures", 0) == 0:
                r["problems"].append("no figure on the page")
            results.append(r)
            status = "ok  " if not r["problems"] else "FAIL"
            print(f"{status} {page}: {summary(r)}; screenshot {r['screenshot']}")
            for problem in r["problems"]:
                print(f"       - {problem}")
    (out_dir / "report.json").write_text(json.dumps(results, indent=1))
    elapsed = time.monotonic() - started
    bad = [r["page"] for r in results if r["problems"]]
    if bad:
        n = sum(len(r["problems"]) for r in results)
        print(f"check_render: FAILED: {n} problems on {len(bad)} of {len(results)} pages: {bad} "
              f"({elapsed:.0f} s)", file=sys.stderr)
        return 1
    print(f"check_render: all {len(results)} pages pass ({elapsed:.0f} s); screenshots and report.json "
          f"in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
