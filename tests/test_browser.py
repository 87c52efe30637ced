"""The real-browser test: start the dashboard on a store made by the compute code, drive every page in
Debian's Chromium with Playwright, check that charts rendered and no exception is shown, and save a
screenshot of each page to artifacts/screenshots/ (look at them before calling the dashboard done).

Chromium is Debian's (/usr/bin/chromium; `.ci/run` installs it); Playwright never downloads a browser.
Without Chromium the test is skipped, unless EDITSCOPE_REQUIRE_BROWSER=1 (CI sets it), which makes a
missing browser a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("EDITSCOPE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

# url path -> (title shown on the page, least number of plotly charts it must draw)
PAGES = {
    "": ("EditScope", 1),
    "robustness": ("Robustness of single edits", 2),
    "popularity": ("Knowledge popularity", 2),
    "forgetting": ("Sequential editing: forgetting and collapse", 2),
    "abilities": ("General abilities after editing", 1),
    "cases": ("Case explorer", 0),
    "demo": ("Edit demo", 0),
    "launch": ("Launch runs", 0),
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# every shown table's content width and the width it has (st.dataframe draws in a scrolling canvas; tables in
# closed expanders have no size and are left out)
OVERFLOW = """() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
    .filter(s => s.clientWidth > 0).map(s => [s.scrollWidth, s.clientWidth])"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(fixture_store, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("EDITSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    pytest.importorskip("playwright")
    port = _free_port()
    env = {**os.environ, "EDITSCOPE_STORE": str(fixture_store), "EDITSCOPE_PUBLIC": ""}
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_page_renders_charts_without_an_exception(app_url):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh, empty profile directory of its own
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        # tall enough for a whole page: Streamlit scrolls inside its own container, not the window
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        for path, (title, charts) in PAGES.items():
            page.goto(f"{app_url}/{path}", wait_until="domcontentloaded")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            # Streamlit is done when its status widget stops saying "Running"
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
            if charts:
                _wait_for_charts(page, charts)
            drawn = page.locator(".js-plotly-plot").count()
            errors = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(SHOTS / f"{path or 'overview'}.png"), full_page=True)
            if drawn < charts or errors:
                problems.append(f"/{path}: {drawn} charts (want {charts}), {errors} exceptions")
            # no table is wider than its place in a 1400 px window (a column past the edge is a column cut off)
            for i, (width, room) in enumerate(page.evaluate(OVERFLOW)):
                if width > room + 2:
                    problems.append(f"/{path}: table {i} is {width} px wide in {room} px")
        browser.close()
    assert not problems, problems


def _wait_for_charts(page, charts: int) -> None:
    """Wait until the page's `charts`-th plotly chart is drawn. One chart has several .main-svg layers, so
    counting svg layers (".js-plotly-plot .main-svg") would let the first chart alone satisfy a wait for two."""
    page.locator(".js-plotly-plot").nth(charts - 1).locator(".main-svg").first.wait_for(timeout=60_000)


def _settle(page, charts: int = 0) -> None:
    """Wait until Streamlit has finished the page's run and drawn at least `charts` plotly charts."""
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    if charts:
        _wait_for_charts(page, charts)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


# what a page shows: every chart's traces (type, name, axes, values), which segments are chosen, the main text
SNAPSHOT = """() => ({
    chosen: [...document.querySelectorAll('[role="radio"]')].map(b => b.innerText + ':' + b.getAttribute('aria-checked')),
    charts: [...document.querySelectorAll('.js-plotly-plot')].map(g => JSON.stringify((g.data || []).map(
        t => [t.type, t.name, t.x, t.y, t.z, t.text]))),
    text: document.querySelector('[data-testid="stMain"]').innerText,
})"""


def _stable_snapshot(page, at_least: int = 0, tries: int = 40) -> dict:
    """SNAPSHOT once the page has stopped changing (two reads 1.5 s apart alike, with at least `at_least` charts):
    Streamlit draws a page's charts one after another, after its status widget has gone."""
    import time

    last = None
    for _ in range(tries):
        _settle(page)
        now = page.evaluate(SNAPSHOT)
        if now == last and len(now["charts"]) >= at_least:
            return now
        last = now
        time.sleep(1.5)
    return last


def _run_ids(store, kind: str) -> dict[str, str]:
    """editor -> run id of the store's runs of a kind."""
    import sqlite3

    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT editor, run_id FROM runs WHERE kind = ?", (kind,)).fetchall())
    finally:
        con.close()


def test_a_shared_filter_survives_a_page_switch_in_the_url(app_url, fixture_store):
    """The run choice is shared by Robustness and Popularity: a run id chosen on one (here through its link)
    is still in the URL, and still the choice, after a switch to the other; values equal to the page's
    default (every relation, the reference runs) never enter the URL."""
    from urllib.parse import parse_qs, urlparse

    from playwright.sync_api import sync_playwright

    ike = _run_ids(fixture_store, "robustness")["IKE"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{app_url}/robustness?runs={ike}", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Robustness of single edits").wait_for(timeout=60_000)
        _settle(page, 1)
        heat = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].y")
        assert list(heat) == ["IKE"]  # the link's choice, not the reference runs (FT-L and IKE)
        page.get_by_role("link", name="Popularity").click()
        page.get_by_role("heading", name="Knowledge popularity").wait_for(timeout=60_000)
        page.wait_for_function(f"location.search.includes('runs={ike}')", timeout=30_000)
        _settle(page, 1)
        query = parse_qs(urlparse(page.url).query)
        assert query["runs"] == [ike] and "relations" not in query and "editors" not in query
        names = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].flatMap("
                              "g => (g.data || []).map(t => t.name))")
        assert "IKE" in names and not [n for n in names if n and n.startswith("FT-L")]
        browser.close()


def test_a_copied_link_shows_the_same_view_in_a_fresh_browser(app_url):
    """Change widgets on Robustness by clicking, copy the address, open it in a new browser context (no
    cookies, no session, as a colleague would): the same charts with the same numbers and the same text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        first = browser.new_context(viewport={"width": 1400, "height": 2600}).new_page()
        first.goto(f"{app_url}/robustness", wait_until="domcontentloaded")
        first.get_by_role("heading", name="Robustness of single edits").wait_for(timeout=60_000)
        _settle(first, 2)
        default = first.evaluate(SNAPSHOT)
        first.get_by_role("radio", name="Generation names the true object (rev)").click()
        first.wait_for_function("location.search.includes('metric=rev')", timeout=30_000)
        first.get_by_role("radio", name="popularity quartile").click()
        first.wait_for_function("location.search.includes('split=popularity_quartile')", timeout=30_000)
        _settle(first, 2)
        link = first.url
        shown = _stable_snapshot(first)
        assert shown != default  # the clicks changed the view

        fresh_context = browser.new_context(viewport={"width": 1400, "height": 2600})
        assert fresh_context.cookies() == []
        fresh = fresh_context.new_page()
        fresh.goto(link, wait_until="domcontentloaded")
        fresh.get_by_role("heading", name="Robustness of single edits").wait_for(timeout=60_000)
        _settle(fresh, 2)
        fresh.wait_for_function("document.querySelector('[data-testid=\"stMain\"]').innerText.includes("
                                "'popularity quartile')", timeout=30_000)
        again = _stable_snapshot(fresh, at_least=len(shown["charts"]))
        assert again["chosen"] == shown["chosen"] and "Generation names the true object (rev):true" in again["chosen"]
        assert again["charts"] == shown["charts"]
        assert again["text"] == shown["text"]
        assert fresh.url == link  # the fresh view writes nothing more into its link
        browser.close()
