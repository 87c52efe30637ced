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


@st.cache_resource
def _icon():
    """The favicon, drawn here: a material-symbol icon is fetched from a font CDN and breaks offline."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((6, 6, 42, 42), outline=(31, 119, 180, 255), width=7)  # a magnifying glass
    draw.line((38, 38, 58, 58), fill=(31, 119, 180, 255), width=9)
    draw.rectangle((17, 24, 21, 32), fill=(214, 39, 40, 255))  # over three bars
    draw.rectangle((23, 18, 27, 32), fill=(214, 39, 40, 255))
    draw.rectangle((29, 13, 33, 32), fill=(214, 39, 40, 255))
    return img


@st.cache_resource
def _passcode_failures():
    """Wrong passcodes across every session of this server (dashboard.jobs.FailureLog)."""
    from dashboard.jobs import FailureLog

    return FailureLog()


def run() -> None:
    st.set_page_config(page_title="EditScope", page_icon=_icon(), layout="wide")
    from dashboard.data import store_status
    from dashboard.sidebar import results_choice

    results_choice()  # which store to show, when a rebuild in progress sits beside the shipped one
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
            st.Page(str(PAGES / "findings.py"), title="Findings", icon=":material/fact_check:"),
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
    """Public mode hides the pages that start processes unless the visitor enters the passcode. Without a
    configured passcode there is no box at all; a wrong one gets a message, and each new wrong attempt (on
    this server, in the last ten minutes) makes the next answer wait longer."""
    import hashlib
    import os
    import time

    from dashboard.data import secrets as read_secrets
    from dashboard.jobs import passcode_delay, passcode_state

    secrets = read_secrets()
    state = passcode_state(os.environ, secrets, None)
    if state == "open":
        return True
    if state == "off":
        st.sidebar.caption("Public view: the Edit demo and Launch pages are switched off here.")
        return False
    entered = st.sidebar.text_input("Passcode", type="password", key="passcode", max_chars=200,
                                    help="Public mode: the passcode shows the Edit demo and Launch pages")
    if not entered:
        return False
    digest = hashlib.sha256(entered.encode()).hexdigest()  # the session keeps no copy of the text
    checked = st.session_state.get("_passcode_checked")
    if checked and checked[0] == digest:  # a rerun with the same text: no new attempt, no new wait
        state = checked[1]
    else:
        failures = _passcode_failures()
        time.sleep(passcode_delay(failures.recent()))
        state = passcode_state(os.environ, secrets, entered)
        if state == "wrong":
            failures.add()
        st.session_state["_passcode_checked"] = (digest, state)
    if state == "wrong":
        st.sidebar.error("Wrong passcode. Each wrong try makes the next answer slower.")
        return False
    return True


run()
