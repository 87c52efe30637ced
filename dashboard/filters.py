"""Widgets mirrored in the URL, so every view is a link someone else can open.

Two kinds:
- Shared filters (model, editors, runs, relations, feature, known facts only) keep their value in session state under
  `filter:<key>`, which survives page switches (a widget's own state does not: Streamlit drops it when the
  widget is not drawn). Values a page does not offer are ignored there, never dropped from the shared value.
- Page widgets (`url_selectbox`, `url_segmented`, `url_toggle`, `url_multiselect`): metric, split, group,
  rephrase type, suite, view, curves, log toggles. Their widget key is the URL parameter's name.

On a session's first run a widget's value comes from the URL (`?split=relation&runs=a,b`). After every
run the page's widgets write their values back, and a value equal to the widget's default on that page is
left out of the URL, so a link carries only what differs from what a fresh visitor would see. A value in
the URL that the page does not offer is ignored (the default is shown).
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

SHARED = ("model", "editors", "runs", "relations", "feature", "known")
MULTI = {"editors", "runs", "relations"}
SIDEBAR = ("results", "model")  # the sidebar's shared choices: kept in the URL across page switches
_STATE = "filter:{}"
_DEFAULTS = "filter-defaults"  # key -> this page's default, written by the widget that drew it


def _split(raw: str) -> list[str]:
    return [v for v in raw.split(",") if v]


def _from_url(key: str):
    raw = st.query_params.get(key)
    if raw is None:
        return None
    if key in MULTI:
        return _split(raw)
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


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def write_url(key: str, value, default) -> None:
    """Put `value` in the URL under `key`, or take the key out when the value equals `default` (lists
    compare as sets: the order of a multiselect's choices does not change the view)."""
    same = (set(value) == set(default)) if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)) \
        else value == default
    if same or value is None:
        if key in st.query_params:
            del st.query_params[key]
        return
    text = _text(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


def _set(key: str, value) -> None:
    st.session_state[_STATE.format(key)] = value


def sync_url() -> None:
    """Start a page's run: the URL gets the sidebar's model (unless it is the default), and forgets which
    shared filters the previous page drew, since each widget the page draws writes its own key. app.py
    calls it before the page runs (a page switch clears the query string)."""
    defaults = st.session_state.get(_DEFAULTS, {})
    for key in SIDEBAR:
        value = st.session_state.get(_STATE.format(key))
        if key in defaults and value is not None:
            write_url(key, value, defaults[key][1])
    st.session_state[_DEFAULTS] = {k: v for k, v in defaults.items() if k in SIDEBAR}


def _register(key: str, options: list, default) -> None:
    defaults = dict(st.session_state.get(_DEFAULTS, {}))
    defaults[key] = (list(options), default)
    st.session_state[_DEFAULTS] = defaults


def shared_multiselect(label: str, key: str, options: Sequence[str], default: Sequence[str] | None = None,
                       format_func: Callable = str, container=None, help: str | None = None) -> list[str]:
    """A multiselect whose choice is shared across pages and the URL; returns the chosen options.
    `default` (all options when None) is what a visitor without a choice sees, and is left out of the URL."""
    container = container or st
    options = list(options)
    default = [v for v in (default if default is not None else options) if v in options]
    value = current(key)
    chosen = [v for v in value if v in options] if value is not None else None
    if not chosen:
        chosen = list(default)
    widget = f"widget:{key}:{'|'.join(options)[:200]}"
    picked = container.multiselect(label, options, default=chosen,
                                   format_func=format_func, key=widget, help=help)
    if value is None or picked != [v for v in value if v in options]:
        keep = [v for v in (value or []) if v not in options]  # other pages' choices stay shared
        _set(key, keep + list(picked))
    _register(key, options, default)
    write_url(key, list(picked), default)
    return list(picked)


def shared_selectbox(label: str, key: str, options: Sequence[str], default: str | None = None,
                     format_func: Callable = str, container=None, help: str | None = None):
    """A selectbox whose choice is shared across pages and the URL; returns the chosen option.
    `default` (the first option when None or not offered) is left out of the URL."""
    container = container or st
    options = list(options)
    if not options:
        return None
    default = default if default in options else options[0]
    value = current(key)
    index = options.index(value) if value in options else options.index(default)
    widget = f"widget:{key}:{'|'.join(map(str, options))[:200]}"
    picked = container.selectbox(label, options, index=index,
                                 format_func=format_func, key=widget, help=help)
    if picked != value:
        _set(key, picked)
    _register(key, options, default)
    write_url(key, picked, default)
    return picked


def shared_toggle(label: str, key: str, default: bool = False, container=None, help: str | None = None) -> bool:
    """A toggle whose value is shared across pages and the URL (as 1 / 0): the known-facts filter, which a
    visitor who turns it on for one study-A view expects on the next (as a page widget it was dropped at every
    page switch). `default` is left out of the URL."""
    container = container or st
    value = current(key)
    if isinstance(value, str):
        value = {"1": True, "0": False}.get(value)
    chosen = default if value is None else bool(value)
    picked = container.toggle(label, value=chosen, key=f"widget:{key}", help=help)
    if picked != value:
        _set(key, picked)
    _register(key, [False, True], default)
    write_url(key, picked, default)
    return picked


# --------------------------------------------------------------------------- page widgets in the URL


def _seed(key: str, parse: Callable, valid: Callable, default) -> None:
    """Before a page widget is drawn: on its first run its state comes from the URL (if valid), else the
    default; a state no longer valid (the options changed) falls back to the default."""
    if key not in st.session_state:
        raw = st.query_params.get(key)
        value = parse(raw) if raw is not None else default
        st.session_state[key] = value if valid(value) else default
    elif not valid(st.session_state[key]):
        st.session_state[key] = default


def url_selectbox(label: str, key: str, options: Sequence, default=None, format_func: Callable = str,
                  container=None, help: str | None = None):
    """A selectbox kept in the URL under `key` (also its widget key); default: the first option."""
    container = container or st
    options = list(options)
    if not options:
        return None
    default = default if default in options else options[0]
    by_text = {str(o): o for o in options}
    _seed(key, lambda raw: by_text.get(raw), lambda v: v in options, default)
    value = container.selectbox(label, options, key=key, format_func=format_func, help=help)
    write_url(key, value, default)
    return value


def url_segmented(label: str, key: str, options: Sequence[str], default: str, format_func: Callable = str,
                  container=None, help: str | None = None) -> str:
    """A single-choice segmented control kept in the URL; clicking the chosen segment again (which
    Streamlit turns into no choice) reads as the default."""
    container = container or st
    options = list(options)
    _seed(key, lambda raw: raw, lambda v: v is None or v in options, default)
    value = container.segmented_control(label, options, key=key, format_func=format_func, help=help)
    value = default if value is None else value
    write_url(key, value, default)
    return value


def url_toggle(label: str, key: str, default: bool = False, container=None, help: str | None = None) -> bool:
    """A toggle kept in the URL as 1 / 0."""
    container = container or st
    _seed(key, lambda raw: {"1": True, "0": False}.get(raw), lambda v: isinstance(v, bool), default)
    value = container.toggle(label, key=key, help=help)
    write_url(key, value, default)
    return value


def url_multiselect(label: str, key: str, options: Sequence[str], default: Sequence[str],
                    format_func: Callable = str, container=None, help: str | None = None) -> list[str]:
    """A multiselect kept in the URL (comma-separated); values the page does not offer are dropped."""
    container = container or st
    options, default = list(options), [d for d in default if d in options]
    _seed(key, lambda raw: [v for v in _split(raw) if v in options],
          lambda v: isinstance(v, list) and all(x in options for x in v), default)
    value = container.multiselect(label, options, key=key, format_func=format_func, help=help)
    write_url(key, list(value), default)
    return list(value)


def forget(*keys: str) -> None:
    """Take page widgets that this run does not draw out of the URL (a group select once the split is off)."""
    for key in keys:
        if key in st.query_params:
            del st.query_params[key]


KNOWN_HELP = ("Only the facts the unedited model knew: before any edit, its answer to the plain prompt named the true "
              "object")
HELD_HELP = "In each run, only the facts whose edit held on the plain prompt (it named the new object there)"


def known_toggle(container=None, note: str = "Every rephrase type is then judged on the same facts.") -> bool:
    """Study A's "Known facts only" filter, shared across pages and the URL (key `known`); `note` says what it
    means on the page."""
    return shared_toggle("Known facts only", "known", default=False, container=container,
                         help=f"{KNOWN_HELP}. {note}")


def held_toggle(container=None, note: str = "") -> bool:
    """Study A's "Edits that held only" filter, kept in the URL (key `held`); `note` says what it means on the
    page."""
    return url_toggle("Edits that held only", "held", default=False, container=container,
                      help=f"{HELD_HELP}: {note}" if note else HELD_HELP)
