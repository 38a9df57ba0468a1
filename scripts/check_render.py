"""Open the built book in headless Chromium and check that the maths and the figures rendered.

For every page of the table of contents (or the pages given), the script loads the built HTML
in Chromium (Debian's package: ``apt-get install -y chromium``), lets MathJax typeset, then
reads back from the live DOM:

* maths: every ``.math`` element Sphinx wrote must contain a MathJax ``mjx-container`` and no
  ``mjx-merror`` (a TeX error MathJax shows in red);
* figures: every ``<img>`` with a local source must have loaded (``naturalWidth > 0``); the
  figures (notebook outputs, under ``_images/``) are counted apart from icons;

and saves a screenshot of the top of each page under ``--out``. It exits with status 1 and
says what is missing if any page fails, 2 if it cannot run (no HTML, no Chromium).

MathJax comes from a CDN. Where the CDN cannot be reached (an offline machine), the pages are
checked in a temporary copy whose MathJax URL points at a local copy of the same major version,
fetched once with ``npm pack mathjax@3`` into ``~/.cache/flowlib/mathjax`` (or given with
``--mathjax`` / ``$MATHJAX_DIR``, the folder that holds ``es5/``); the report says which was used.

    python scripts/check_render.py                      # _build/html, pages from _toc.yml
    python scripts/check_render.py --html /tmp/b/_build/html --toc my_toc.yml
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MATHJAX_VERSION = "3.2.2"
MATHJAX_SRC = re.compile(r'src="(https://[^"]*mathjax[^"]*?/es5/([\w-]+\.js))"')

# Injected before </body> of each checked page: waits for MathJax, then records what rendered
# as attributes of <body>, which --dump-dom then shows.
PROBE = r"""
<script>
(function () {
  function record(state) {
    var maths = document.querySelectorAll('.math');
    var rendered = 0;
    maths.forEach(function (m) { if (m.querySelector('mjx-container')) { rendered++; } });
    var imgs = Array.prototype.slice.call(document.querySelectorAll('img'));
    var local = imgs.filter(function (i) { return !/^(https?:)?\/\//.test(i.getAttribute('src') || ''); });
    var failed = local.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                      .map(function (i) { return i.getAttribute('src'); });
    var figures = local.filter(function (i) { return /_images\//.test(i.getAttribute('src')); });
    var figuresLoaded = figures.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    var b = document.body;
    b.setAttribute('data-rc-state', state);
    b.setAttribute('data-rc-math-total', maths.length);
    b.setAttribute('data-rc-math-rendered', rendered);
    b.setAttribute('data-rc-mjx-containers', document.querySelectorAll('mjx-container').length);
    // TeX errors: merror nodes, and (MathJax's noundefined extension) undefined macros drawn in red
    var undefinedMacros = Array.prototype.slice.call(
        document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
      .map(function (e) { return e.textContent.trim(); })
      .filter(function (t) { return t.charAt(0) === '\\'; });
    var errors = document.querySelectorAll('mjx-merror, [data-mjx-error]').length;
    b.setAttribute('data-rc-math-errors', errors + undefinedMacros.length);
    b.setAttribute('data-rc-math-error-text', JSON.stringify(undefinedMacros.slice(0, 10)));
    b.setAttribute('data-rc-img-total', local.length);
    b.setAttribute('data-rc-img-loaded', local.length - failed.length);
    b.setAttribute('data-rc-img-failed', JSON.stringify(failed));
    b.setAttribute('data-rc-fig-total', figures.length);
    b.setAttribute('data-rc-fig-loaded', figuresLoaded.length);
  }
  window.addEventListener('load', function () {
    var tries = 0;
    (function wait() {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        MathJax.startup.promise.then(function () { record('typeset'); },
                                     function () { record('mathjax-failed'); });
      } else if (tries++ < 300) {
        setTimeout(wait, 100);
      } else {
        record('no-mathjax');
      }
    })();
  });
})();
</script>
"""


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
        path.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    return site


def chromium(binary: str, profile: pathlib.Path, budget_ms: int, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--allow-file-access-from-files", f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def check_page(binary, site, page, out_dir, budget_ms, width, height, profile):
    url = (site / f"{page}.html").as_uri()
    dom = chromium(binary, profile, budget_ms, "--dump-dom", url)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    attrs = dict(re.findall(r'data-rc-([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    shot = out_dir / f"{page.replace('/', '__')}.png"
    chromium(binary, profile, budget_ms, f"--screenshot={shot}", f"--window-size={width},{height}", url)
    problems = []
    if not attrs:
        problems.append("the page did not finish loading in the time budget (no probe results; "
                        f"chromium said: {dom.stderr.strip()[-300:]})")
        return {"page": page, "screenshot": None, "problems": problems}
    n = {k: int(attrs[k]) for k in ("math-total", "math-rendered", "mjx-containers", "math-errors",
                                     "img-total", "img-loaded", "fig-total", "fig-loaded")}
    failed_images = json.loads(attrs["img-failed"].replace("&quot;", '"'))
    if attrs["state"] != "typeset":
        problems.append(f"MathJax did not run ({attrs['state']})")
    if n["math-rendered"] < n["math-total"]:
        problems.append(f"{n['math-total'] - n['math-rendered']} of {n['math-total']} maths elements "
                        "were not rendered")
    if n["math-errors"]:
        shown = json.loads(attrs.get("math-error-text", "[]").replace("&quot;", '"'))
        problems.append(f"{n['math-errors']} TeX errors or undefined macros on the page {shown}")
    if failed_images:
        problems.append(f"{len(failed_images)} images did not load: {failed_images}")
    if not shot.is_file() or shot.stat().st_size == 0:
        problems.append("no screenshot was written")
    return {"page": page, "screenshot": str(shot) if shot.is_file() else None, "problems": problems, **n}


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
    parser.add_argument("--window", default="1280x2400", help="screenshot size WIDTHxHEIGHT")
    parser.add_argument("--require-figures", action="store_true",
                        help="also fail a page (other than the root) that has no figure at all")
    args = parser.parse_args(argv)

    html_dir = pathlib.Path(args.html)
    if not (html_dir / "index.html").is_file():
        fail(f"no built book at {html_dir} (no index.html): build it first with `make book`")
    pages = args.pages or toc_pages(pathlib.Path(args.toc))
    missing = [p for p in pages if not (html_dir / f"{p}.html").is_file()]
    if missing:
        fail(f"pages missing from {html_dir}: {missing}")
    binary = find_chromium(args.chromium)
    width, height = (int(v) for v in args.window.lower().split("x"))

    sample = next((html_dir / f"{p}.html" for p in pages), None)
    cdn = MATHJAX_SRC.search(sample.read_text(encoding="utf-8")) if sample else None
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
            r = check_page(binary, site, page, out_dir, args.budget_ms, width, height, profile)
            if args.require_figures and page != pages[0] and r.get("fig-total", 0) == 0:
                r["problems"].append("no figure on the page")
            results.append(r)
            counts = (f"maths {r['math-rendered']}/{r['math-total']} rendered ({r['mjx-containers']} "
                      f"mjx-container, {r['math-errors']} errors), figures {r['fig-loaded']}/"
                      f"{r['fig-total']} loaded (all local images {r['img-loaded']}/{r['img-total']})"
                      if "math-total" in r else "no results")
            status = "ok  " if not r["problems"] else "FAIL"
            print(f"{status} {page}: {counts}; screenshot {r['screenshot']}")
            for problem in r["problems"]:
                print(f"       - {problem}")
    (out_dir / "report.json").write_text(json.dumps(results, indent=1))
    bad = [r["page"] for r in results if r["problems"]]
    if bad:
        print(f"check_render: FAILED on {len(bad)} of {len(results)} pages: {bad}", file=sys.stderr)
        return 1
    print(f"check_render: all {len(results)} pages show rendered maths and their figures; "
          f"screenshots and report.json in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
