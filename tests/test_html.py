"""The built HTML book, opened in a real headless browser (Debian's chromium driven by Playwright).

Needs `_build/html` (from `bash scripts/build_book.sh`) and /usr/bin/chromium. Skipped when either is
missing, unless DIPREG_REQUIRE_HTML=1 (as in CI, which builds the book first), where that is a failure.
Pages load from a local HTTP server. This machine has no internet: MathJax's CDN address is answered
from a local copy of the npm package mathjax@3 (.ci/run installs it in .cache/mathjax), and other CDN
requests get an empty response, so what is checked is the book itself.
"""

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("DIPREG_REQUIRE_HTML") == "1"
MATHJAX = Path(os.environ.get("DIPREG_MATHJAX_DIR", ROOT / ".cache" / "mathjax" / "node_modules" / "mathjax"))


def _missing() -> str | None:
    if not (HTML / "index.html").exists():
        return "the book is not built (run bash scripts/build_book.sh)"
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


@pytest.fixture(scope="module")
def site():
    why = _missing()
    if why:
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


stubbed: list[str] = []  # external URLs answered with an empty body (no internet here)


def _route(site: str):
    local = urlparse(site).netloc

    def route(r):
        url = r.request.url
        if urlparse(url).netloc == local:
            r.continue_()
        elif "mathjax@3/es5/" in url and (MATHJAX / "es5").exists():
            r.fulfill(path=str(MATHJAX / "es5" / url.split("mathjax@3/es5/")[1].split("?")[0]))
        else:
            stubbed.append(url)
            r.fulfill(status=200, body="", content_type="application/javascript")

    return route


def chapter_pages() -> list[str]:
    return sorted(str(p.relative_to(HTML)) for p in (HTML / "book").glob("*.html")) if HTML.exists() else []


@pytest.mark.parametrize("page", chapter_pages() or ["book/01_preface.html"])
def test_page_loads_cleanly(site, browser, page):
    ctx = browser.new_context()
    errors: list[str] = []
    local = urlparse(site).netloc
    ctx.route("**/*", _route(site))
    pg = ctx.new_page()
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []
    pg.on("requestfailed", lambda r: failed.append(r.url))
    resp = pg.goto(urljoin(site, page), wait_until="load")
    assert resp is not None and resp.status == 200
    # an empty stand-in for a CDN script fails its integrity check: that is the stub, not the book
    errors = [e for e in errors if not ("integrity" in e and any(u.split("?")[0] in e for u in stubbed))]
    assert not errors, f"console errors on {page}: {errors}"
    assert not failed, f"failed requests on {page}: {failed}"
    broken = pg.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                         ".map(i => i.src)")
    assert not broken, f"images that did not load on {page}: {broken}"
    # chapters 2-10 show computed figures (a kernel backend that draws nothing would leave none); the preface, the
    # bibliography and the teaching pages (course plan, instructor) are text
    name = page.split("/")[-1]
    if page.startswith("book/") and name[:2].isdigit() and name[:2] != "01":
        assert pg.locator("main img").count() >= 1, f"no figures on {page}"
    # every figure holds an image (a plotting call that closes its figure leaves only the caption)
    empty = pg.evaluate("Array.from(document.querySelectorAll('main figure'))"
                        ".filter(f => !f.querySelector('img, svg')).map(f => f.id)")
    assert not empty, f"figures without an image on {page}: {empty}"
    # every figure image has alt text
    # (the frames of a matplotlib JS animation are swapped in by script and are not figures of their own)
    no_alt = pg.evaluate("Array.from(document.querySelectorAll('main img')).filter(i => !i.alt && "
                         "!(i.id || '').startsWith('_anim_img')).map(i => i.src.slice(0, 80))")
    assert not no_alt, f"images without alt text on {page}: {no_alt}"
    # internal links resolve to files of the build
    hrefs = pg.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for href in hrefs:
        u = urlparse(href)
        if u.netloc == local and u.scheme.startswith("http"):
            target = HTML / u.path.lstrip("/")
            assert target.exists() or (target / "index.html").exists(), f"{page} links to missing {u.path}"
    ctx.close()


@pytest.mark.parametrize("page", [p for p in chapter_pages() if p.split("/")[-1][:2].isdigit()]
                         or ["book/02_problem.html"])
def test_math_is_rendered_by_mathjax(site, browser, page):
    if not (MATHJAX / "es5").exists():
        if REQUIRED:
            pytest.fail(f"no local MathJax at {MATHJAX} (npm install --prefix .cache/mathjax mathjax@3)")
        pytest.skip("no local MathJax copy")
    ctx = browser.new_context()
    ctx.route("**/*", _route(site))
    pg = ctx.new_page()
    pg.goto(urljoin(site, page), wait_until="load")
    if page.endswith("02_problem.html"):
        pg.wait_for_selector("mjx-container", timeout=20_000)
        assert pg.locator("mjx-container").count() > 3
    pg.wait_for_function("!window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=20_000)
    pg.evaluate("window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    assert not pg.locator("mjx-merror").count(), f"MathJax reported a TeX error on {page}"
    # TeX that MathJax never saw (a "$...$" broken by Markdown, e.g. a line starting with "+ ") stays as text
    raw = pg.evaluate(r"""(() => { const m = document.querySelector('main').cloneNode(true);
        m.querySelectorAll('pre, code, mjx-container, script, .cell_output').forEach(e => e.remove());
        return (m.textContent.match(/\\(mathbf|frac|phi|det|theta|sum|lVert|partial)\b/g) || []); })()""")
    assert not raw, f"TeX left unrendered on {page}: {raw[:5]}"
    ctx.close()
