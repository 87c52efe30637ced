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
                page.locator(".js-plotly-plot .main-svg").nth(charts - 1).wait_for(timeout=60_000)
            drawn = page.locator(".js-plotly-plot").count()
            errors = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(SHOTS / f"{path or 'overview'}.png"), full_page=True)
            if drawn < charts or errors:
                problems.append(f"/{path}: {drawn} charts (want {charts}), {errors} exceptions")
        browser.close()
    assert not problems, problems


def test_a_shared_filter_survives_a_page_switch_in_the_url(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(f"{app_url}/robustness?editors=IKE", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Robustness of single edits").wait_for(timeout=60_000)
        page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
        page.get_by_role("link", name="Popularity").click()
        page.get_by_role("heading", name="Knowledge popularity").wait_for(timeout=60_000)
        page.wait_for_function("location.search.includes('editors=IKE')", timeout=30_000)
        browser.close()
