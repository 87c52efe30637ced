"""EditScope dashboard entry point: `streamlit run dashboard/app.py`.

Pages live in dashboard/app_pages/ and are registered with st.navigation inside run(). The store is
opened read-only; if it is missing or not an EditScope store, every page is replaced by one that says
what is wrong and how to build a store.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path; the packages live one level up
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

PAGES = Path(__file__).resolve().parent / "app_pages"


def run() -> None:
    st.set_page_config(page_title="EditScope", page_icon=":material/biotech:", layout="wide")
    from dashboard.data import store_status

    path, error = store_status()
    if error:
        pages = [st.Page(str(PAGES / "no_store.py"), title="Store problem", icon=":material/error:")]
    else:
        pages = [
            st.Page(str(PAGES / "overview.py"), title="Overview", icon=":material/dashboard:", default=True),
            st.Page(str(PAGES / "robustness.py"), title="Robustness", icon=":material/grid_on:"),
            st.Page(str(PAGES / "popularity.py"), title="Popularity", icon=":material/trending_up:"),
            st.Page(str(PAGES / "forgetting.py"), title="Forgetting", icon=":material/timeline:"),
            st.Page(str(PAGES / "abilities.py"), title="General abilities", icon=":material/psychology:"),
            st.Page(str(PAGES / "cases.py"), title="Case explorer", icon=":material/search:"),
        ]
        if _write_access():
            pages += [
                st.Page(str(PAGES / "demo.py"), title="Edit demo", icon=":material/edit:"),
                st.Page(str(PAGES / "launch.py"), title="Launch runs", icon=":material/rocket_launch:"),
            ]
    page = st.navigation(pages)
    if not error:
        from dashboard.filters import sync_url
        from dashboard.sidebar import model_filter

        model_filter()
        sync_url()  # a page switch clears the query string: put the shared filters back, so links stay whole
    page.run()


def _write_access() -> bool:
    """Public mode hides the pages that start processes unless the visitor enters the passcode."""
    import os

    from dashboard.jobs import is_public, write_access

    try:
        secrets = dict(st.secrets)
    except Exception:  # no secrets file: Streamlit raises rather than returning an empty mapping
        secrets = {}
    entered = None
    if is_public(os.environ, secrets):
        entered = st.sidebar.text_input("Passcode", type="password", key="passcode",
                                        help="Public mode: the passcode shows the Edit demo and Launch pages")
    return write_access(os.environ, secrets, entered)


run()
