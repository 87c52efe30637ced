"""The dashboard works offline: with every request that leaves the machine refused, each page loads and the
browser asked for nothing outside the dashboard's own server (the favicon used to come from a font CDN)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from test_browser import CHROMIUM, FLAGS, PAGES, app_url  # noqa: F401  (app_url is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_no_page_asks_for_anything_outside_the_server(app_url):  # noqa: F811
    from playwright.sync_api import sync_playwright

    own = urlparse(app_url).netloc
    outside: list[str] = []

    def route(r):
        if urlparse(r.request.url).netloc in (own, ""):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context()
        context.route("**/*", route)
        page = context.new_page()
        for path, (title, _) in PAGES.items():
            page.goto(f"{app_url}/{path}", wait_until="domcontentloaded")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
            page.wait_for_timeout(500)  # late requests: the favicon, fonts
        icon = page.evaluate("document.querySelector('link[rel~=\"icon\"]')?.href || ''")
        browser.close()
    assert not outside, sorted(set(outside))
    assert urlparse(icon).netloc in (own, "") or icon.startswith("data:"), icon
