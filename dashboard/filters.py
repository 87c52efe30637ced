"""Filters shared across pages and mirrored in the URL, so every view is a link someone else can open.

A shared filter (model, editors, runs, relations, popularity feature) keeps its value in session state
under `filter:<key>`, which survives page switches (a widget's own state does not: Streamlit drops it when
the widget is not drawn). On a session's first run the value comes from the URL (`?editors=ROME,MEMIT`).
After every change, and on every page, the current values are written back to the URL with `sync_url`.
Values that a page does not offer are ignored there, never dropped from the shared value.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

SHARED = ("model", "editors", "runs", "relations", "feature")
MULTI = {"editors", "runs", "relations"}
_STATE = "filter:{}"


def _from_url(key: str):
    raw = st.query_params.get(key)
    if raw is None:
        return None
    if key in MULTI:
        return [v for v in raw.split(",") if v]
    return raw


def current(key: str):
    """The shared value of a filter (from this session, else from the URL), or None when unset."""
    state = _STATE.format(key)
    if state not in st.session_state:
        value = _from_url(key)
        if value is None:
            return None
        st.session_state[state] = value
    return st.session_state[state]


def _set(key: str, value) -> None:
    st.session_state[_STATE.format(key)] = value
    sync_url()


def sync_url() -> None:
    """Write every shared filter's current value into the URL's query string."""
    for key in SHARED:
        value = st.session_state.get(_STATE.format(key))
        if value is None:
            continue
        text = ",".join(value) if key in MULTI else str(value)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def shared_multiselect(label: str, key: str, options: Sequence[str], default: Sequence[str] | None = None,
                       format_func: Callable = str, container=None, help: str | None = None) -> list[str]:
    """A multiselect whose choice is shared across pages and the URL; returns the chosen options."""
    container = container or st
    options = list(options)
    value = current(key)
    chosen = [v for v in value if v in options] if value is not None else None
    if not chosen:
        chosen = list(default if default is not None else options)
    widget = f"widget:{key}:{'|'.join(options)[:200]}"
    picked = container.multiselect(label, options, default=chosen,
                                   format_func=format_func, key=widget, help=help)
    if value is None or picked != [v for v in value if v in options]:
        keep = [v for v in (value or []) if v not in options]  # other pages' choices stay shared
        _set(key, keep + list(picked))
    else:
        sync_url()
    return list(picked)


def shared_selectbox(label: str, key: str, options: Sequence[str], default: str | None = None,
                     format_func: Callable = str, container=None, help: str | None = None):
    """A selectbox whose choice is shared across pages and the URL; returns the chosen option."""
    container = container or st
    options = list(options)
    if not options:
        return None
    value = current(key)
    index = options.index(value) if value in options else (options.index(default) if default in options else 0)
    widget = f"widget:{key}:{'|'.join(map(str, options))[:200]}"
    picked = container.selectbox(label, options, index=index,
                                 format_func=format_func, key=widget, help=help)
    if picked != value:
        _set(key, picked)
    else:
        sync_url()
    return picked
