"""Dashboard speed on a LOAD-TEST store of about 1,000,000 measurement rows (a script, not a test).

Targets (issue: the dashboard): every page's first render at most 2 s, a filter change at most 1 s, on
the 2-core development machine. The store is synthetic (benchmarks/loadtest_store.py; labelled in its
meta table and on every run), never shipped.

Each page is rendered with Streamlit's AppTest in this process, which runs the page script exactly as
the server does (queries, derived tables, chart building and element serialisation); the browser's own
drawing is not included. "First render" starts from an empty query cache; a "filter change" sets one
widget on the rendered page and reruns it (the cache then holds what the first render loaded, as in a
real session).

    python benchmarks/bench_dashboard.py [--store artifacts/loadtest.sqlite] [--out benchmarks/results/dashboard.json]
        [--browser]

With --browser it also starts the server and times, in Debian's Chromium (Playwright), each page until
its charts are drawn and Streamlit is idle: opened in a new browser context, reloaded in a warm one, and
chosen in the sidebar (`_browser_first_renders`), beside a bare Streamlit app with one Plotly chart as the
framework's own baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
APP = str(ROOT / "dashboard" / "app.py")

# page -> (how to reach it, a filter change on it)
PAGES = {
    "overview": (None, lambda at: at.toggle[0].set_value(True)),
    "robustness": ("app_pages/robustness.py", lambda at: at.segmented_control(key="metric").set_value("rev")),
    "popularity": ("app_pages/popularity.py", lambda at: at.selectbox(key="pop_metric").set_value("rev")),
    "forgetting": ("app_pages/forgetting.py", lambda at: at.toggle(key="log_x").set_value(True)),
    "abilities": ("app_pages/abilities.py", lambda at: at.toggle(key="ability_log_x").set_value(True)),
    "cases": ("app_pages/cases.py", lambda at: at.text_input(key="subject").set_value("Subject 12")),
}


BROWSER_PAGES = {"overview": ("", 1), "robustness": ("robustness", 2), "popularity": ("popularity", 1),
                 "forgetting": ("forgetting", 2), "abilities": ("abilities", 1), "cases": ("cases", 0)}
# page -> (its link in the sidebar, its title)
NAV = {"overview": ("Overview", "EditScope"), "robustness": ("Robustness", "Robustness of single edits"),
       "popularity": ("Popularity", "Knowledge popularity"),
       "forgetting": ("Forgetting", "Sequential editing: forgetting and collapse"),
       "abilities": ("General abilities", "General abilities after editing"), "cases": ("Case explorer", "Case explorer")}

# The framework alone: a page with a title and one three-point Plotly chart, nothing of EditScope.
BASELINE_APP = """import plotly.graph_objects as go
import streamlit as st
st.title("Baseline")
st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2])))
"""


class _Server:
    """A Streamlit server on a free port for `script`, stopped on exit."""

    def __init__(self, script: Path, env: dict):
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.headless", "true"], cwd=ROOT, env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        import urllib.request

        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.25)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _idle(page) -> None:
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


def _browser_first_renders(store: Path, repeat: int = 1) -> dict:
    """Seconds until a page's charts are drawn and Streamlit is idle, per page, on one running server whose
    Python modules are loaded (a warm-up visit to a page not timed here first):

    - `cold_browser`: the page's address opened in a new browser context (Streamlit's JavaScript fetched
      and compiled again: a visitor's very first page);
    - `warm_browser`: the page's address loaded again in a context that has already loaded the app (a
      full reload, with the browser's caches);
    - `in_app`: the page chosen in the sidebar from the Launch page, as a visitor moves through the app
      (no reload: the server reruns the page and the browser redraws);
    - `baseline_cold` / `baseline_warm`: the same two loads of a bare Streamlit app with one three-point
      Plotly chart (BASELINE_APP): what the framework costs before EditScope draws anything.

    Each figure is the median of `repeat` visits (all kept under "samples"). A page's own queries run
    for the first time in its first cold visit (the query cache is keyed on the page's arguments; the
    cold visits come first)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    out = {"cold_browser": {}, "warm_browser": {}, "in_app": {}}

    def visit(page, url, charts) -> float:
        t = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        page.locator("h1").first.wait_for(timeout=60_000)
        if charts:
            page.locator(".js-plotly-plot .main-svg").nth(charts - 1).wait_for(timeout=60_000)
        _idle(page)
        return round(time.perf_counter() - t, 3)

    def navigate(page, name, charts) -> float:
        link, title = NAV[name]
        t = time.perf_counter()
        page.get_by_test_id("stSidebarNavLink").filter(has_text=link).first.click()
        page.locator("h1").filter(has_text=title).first.wait_for(timeout=60_000)
        if charts:
            page.locator(".js-plotly-plot .main-svg").nth(charts - 1).wait_for(timeout=60_000)
        _idle(page)
        return round(time.perf_counter() - t, 3)

    new_context = {"viewport": {"width": 1400, "height": 2600}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "baseline.py"
            script.write_text(BASELINE_APP)
            with _Server(script, {}) as server:
                page = browser.new_context(**new_context).new_page()
                visit(page, server.url, 1)  # the server's first script run: not timed
                ctx = browser.new_context(**new_context)
                out["baseline_cold"] = visit(ctx.new_page(), server.url, 1)
                out["baseline_warm"] = visit(page, server.url, 1)
                ctx.close()
                print(f"bare Streamlit + one Plotly chart: new context {out['baseline_cold']:.2f} s, "
                      f"reload {out['baseline_warm']:.2f} s", flush=True)
        with _Server(ROOT / "dashboard" / "app.py", {"EDITSCOPE_STORE": str(store)}) as server:
            warm = browser.new_context(**new_context).new_page()
            visit(warm, f"{server.url}/launch", 0)  # loads the server's Python modules; not timed
            samples = {"cold_browser": {}, "warm_browser": {}, "in_app": {}}
            for name, (path, charts) in BROWSER_PAGES.items():
                for _ in range(repeat):
                    ctx = browser.new_context(**new_context)
                    samples["cold_browser"].setdefault(name, []).append(visit(ctx.new_page(), f"{server.url}/{path}", charts))
                    ctx.close()
                print(f"{name:12s} first render in a new Chromium context {samples['cold_browser'][name]} s", flush=True)
            for name, (path, charts) in BROWSER_PAGES.items():
                for _ in range(repeat):
                    visit(warm, f"{server.url}/launch", 0)
                    samples["warm_browser"].setdefault(name, []).append(visit(warm, f"{server.url}/{path}", charts))
                print(f"{name:12s} page reload in a warm context {samples['warm_browser'][name]} s", flush=True)
            for name, (_path, charts) in BROWSER_PAGES.items():
                for _ in range(repeat):
                    visit(warm, f"{server.url}/launch", 0)
                    samples["in_app"].setdefault(name, []).append(navigate(warm, name, charts))
                print(f"{name:12s} chosen in the sidebar {samples['in_app'][name]} s", flush=True)
            for kind, pages in samples.items():
                out[kind] = {name: statistics.median(values) for name, values in pages.items()}
            out["samples"] = samples
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "artifacts" / "loadtest.sqlite")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeat", type=int, default=3, help="renders per page (the median is reported)")
    ap.add_argument("--browser", action="store_true", help="also time first renders in Chromium")
    ap.add_argument("--browser-repeat", type=int, default=3, help="visits per page and kind in Chromium (median)")
    args = ap.parse_args()
    if not args.store.exists():
        sys.exit(f"no load-test store at {args.store}: make one with `python benchmarks/loadtest_store.py`")
    import sqlite3

    label = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True).execute(
        "SELECT value FROM meta WHERE key = 'load_test'").fetchone()
    if not label:
        sys.exit(f"{args.store} is not a load-test store (no meta 'load_test'): refusing to time real results")
    rows = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True).execute("SELECT count(*) FROM measurements").fetchone()[0]
    os.environ["EDITSCOPE_STORE"] = str(args.store)
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    results = {}
    for name, (path, change) in PAGES.items():
        firsts, changes = [], []
        for _ in range(args.repeat):
            st.cache_data.clear()
            at = AppTest.from_file(APP, default_timeout=120)
            if path is None:
                t = time.perf_counter()
                at.run()
                firsts.append(time.perf_counter() - t)
            else:
                at.run()
                st.cache_data.clear()
                at.switch_page(path)
                t = time.perf_counter()
                at.run()
                firsts.append(time.perf_counter() - t)
            if at.exception:
                sys.exit(f"{name}: the page raised {at.exception[0].message}")
            change(at)
            t = time.perf_counter()
            at.run()
            changes.append(time.perf_counter() - t)
        firsts.sort()
        changes.sort()
        results[name] = {"first_render_s": round(firsts[len(firsts) // 2], 3),
                         "filter_change_s": round(changes[len(changes) // 2], 3),
                         "first_ok": firsts[len(firsts) // 2] <= 2.0, "change_ok": changes[len(changes) // 2] <= 1.0}
        print(f"{name:12s} first render {results[name]['first_render_s']:.2f} s   filter change "
              f"{results[name]['filter_change_s']:.2f} s", flush=True)
    browser = _browser_first_renders(args.store, args.browser_repeat) if args.browser else None
    report = {"store": str(args.store), "browser_first_render_s": browser, "measurement_rows": rows, "load_test": label[0], "pages": results,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
