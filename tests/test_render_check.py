"""The render check (scripts/check_render.py) fails on each defect it is meant to catch.

A check that passes a correct book proves little: it might check nothing. Here tiny HTML pages
shaped like the book's (Sphinx book theme markup, MathJax, a chapter number in the title) each
carry exactly one defect, a clean page carries none but contains the look-alikes the check must
let through (pipes in a real table and in code, a correct reference, a figure at its natural
width), and the checker runs on them in real headless Chromium. Each broken page must fail with
its own defect and nothing else; the clean page must pass.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_render.py"
sys.path.insert(0, str(ROOT / "scripts"))
import check_render  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any(shutil.which(n) for n in check_render.CHROMIUM_NAMES),
    reason="no Chromium installed (apt-get install -y chromium): the render check needs a real browser",
)


def png(width: int, height: int) -> bytes:
    """A plain grey PNG of the given size, written without any imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + \
        chunk(b"IEND", b"")


# The clean page: what the book's chapter pages contain, including things the check must NOT
# flag: pipes and reprs in a code cell's input, a Markdown-looking line inside a real <table>,
# a reference not preceded by its own word, a figure with alt text at its natural width.
CLEAN_BODY = """
<h1><span class="section-number">3. </span>A chapter<a class="headerlink" href="#">#</a></h1>
<p>Some maths <span class="math notranslate nohighlight">\\(x^2 + y\\)</span> and an equation:</p>
<div class="math notranslate nohighlight" id="equation-c-one">
<span class="eqno">(3.1)<a class="headerlink" href="#equation-c-one">#</a></span>\\[a = b\\]</div>
<div class="cell docutils container"><div class="cell_input docutils container">
<div class="highlight-ipython3 notranslate"><div class="highlight"><pre>
table = "| a | b |\\n|---|---|"  # &lt;function f at 0x1&gt; in a comment is code, not output
</pre></div></div></div>
<div class="cell_output docutils container">
<table class="table"><tr><td>| a | b |</td><td>|---|---|</td></tr></table>
<figure class="align-default"><img alt="The density after one layer" src="../_images/fig300.png" />
<figcaption><p><span class="caption-number">Fig. 3.1 </span><span class="caption-text">A figure.</span></p>
</figcaption></figure>
</div></div>
<div class="exercise admonition" id="ex-one"><p class="admonition-title">
<span class="caption-number">Exercise 3.1 </span></p><p>Do it.</p></div>
<p>See <a class="reference internal" href="#ex-one"><span class="std std-ref">Exercise 3.1</span></a>
and the equation <a class="reference internal" href="#equation-c-one">(3.1)</a>.</p>
"""

# One defect each, added to the clean page: (name, kind the checker reports, HTML).
DEFECTS = [
    ("raw_table", "raw-table",
     '<div class="cell_output docutils container">'
     '<p>| model | NLL |\n|---|---|\n| $K = 5000$ | 88.4 |</p></div>'),
    ("repr", "repr",
     '<div class="cell_output docutils container"><div class="output text_plain highlight-myst-ansi">'
     '<div class="highlight"><pre>&lt;function show at 0x7f3a2c1b0d30&gt;</pre></div></div></div>'),
    ("doubled_ref", "doubled-ref",
     '<p>As in exercise <a class="reference internal" href="#ex-one">'
     '<span class="std std-ref">Exercise 3.1</span></a>.</p>'),
    ("doubled_paren", "doubled-ref",
     '<p>a lower bound in expectation (<a class="reference internal" href="#equation-c-one">(3.1)</a>).</p>'),
    ("img_no_alt", "alt", '<img src="../_images/fig300.png" />'),
    ("img_path_alt", "alt", '<img alt="../_images/fig300.png" src="../_images/fig300.png" />'),
    ("squeezed", "shrunk",
     '<img alt="A wide gallery" src="../_images/fig1000.png" style="width: 300px" />'),
    ("numbering", "numbering",
     '<div class="math notranslate nohighlight" id="equation-c-two">'
     '<span class="eqno">(2.1)</span>\\[c = d\\]</div>'),
    ("widget", "widget",
     '<div class="cell_output docutils container"><script type="application/vnd.jupyter.widget-view+json">'
     '{"version_major": 2, "version_minor": 0, "model_id": "0123abcd"}</script></div>'),
]

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>test page</title>
<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
</head><body><main id="main-content"><div class="bd-content"><article class="bd-article">
<section id="a-chapter">{body}</section>
</article></div></main></body></html>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A built-book-like folder: index.html, _images/, and notebooks/03_<name>.html pages."""
    root = tmp_path_factory.mktemp("site")
    (root / "_images").mkdir()
    (root / "_images" / "fig300.png").write_bytes(png(300, 60))
    (root / "_images" / "fig1000.png").write_bytes(png(1000, 60))
    (root / "index.html").write_text('<html><head><meta http-equiv="refresh" content="0; url=x"></head>'
                                     "</html>")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "03_clean.html").write_text(PAGE.format(body=CLEAN_BODY))
    for name, _, html in DEFECTS:
        (root / "notebooks" / f"03_{name}.html").write_text(PAGE.format(body=CLEAN_BODY + html))
    return root


def run_check(site: pathlib.Path, pages: list[str], out: pathlib.Path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--html", str(site), "--out", str(out), "--window", "1000x800",
         "--budget-ms", "20000", "--pages", *pages],
        capture_output=True, text=True, timeout=900)
    if proc.returncode == 2:
        pytest.fail(f"the render check could not run:\n{proc.stdout}\n{proc.stderr}")
    report = json.loads((out / "report.json").read_text())
    return proc, {r["page"].split("/")[-1].removeprefix("03_"): r for r in report}


@pytest.mark.slow
def test_each_defect_fails_its_page_and_the_clean_page_passes(site, tmp_path):
    pages = ["notebooks/03_clean"] + [f"notebooks/03_{name}" for name, _, _ in DEFECTS]
    proc, results = run_check(site, pages, tmp_path / "shots")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output

    clean = results["clean"]
    assert clean["problems"] == [], f"the clean page failed:\n{output}"
    assert clean["maths"]["total"] >= 2 and clean["maths"]["rendered"] == clean["maths"]["total"], clean
    assert clean["images"]["figures"] == 1 and clean["images"]["figuresLoaded"] == 1, clean
    assert clean["chapter"] == 3 and clean["numbered"] == 3, clean  # (3.1), Fig. 3.1, Exercise 3.1
    assert pathlib.Path(clean["screenshot"]).stat().st_size > 0

    for name, kind, _ in DEFECTS:
        r = results[name]
        kinds = [d["kind"] for d in r["defects"]]
        assert kinds == [kind], f"{name}: expected exactly one {kind!r} defect, got {r['defects']}\n{output}"
        assert len(r["problems"]) == 1, f"{name}: {r['problems']}"
        assert f"FAIL notebooks/03_{name}" in proc.stdout, proc.stdout
    # the report names the element and what is wrong with it
    assert "exercise Exercise 3.1" in results["doubled_ref"]["problems"][0]
    assert "expectation ((3.1)" in results["doubled_paren"]["problems"][0]
    assert "<function show at 0x" in results["repr"]["problems"][0]
    assert "300 px wide of its natural 1000 px (30%)" in results["squeezed"]["problems"][0]
    assert '"(2.1)" on the page of chapter 3' in results["numbering"]["problems"][0]


@pytest.mark.slow
def test_a_clean_page_alone_exits_zero(site, tmp_path):
    proc, results = run_check(site, ["notebooks/03_clean"], tmp_path / "shots")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check_render: all 1 pages pass" in proc.stdout


def test_chapter_numbers_come_from_file_names():
    assert check_render.chapter_of("notebooks/04_planar_flows") == 4
    assert check_render.chapter_of("notebooks/11_posterior_2d") == 11
    assert check_render.chapter_of("book/intro") is None
    assert check_render.chapter_of("book/notation") is None


def test_toc_pages_lists_root_then_chapters():
    pages = check_render.toc_pages(ROOT / "_toc.yml")
    assert pages[0] == "book/intro"
    assert "notebooks/03_matrix_determinant_lemma" in pages
