"""Text from a visitor or from the store, shown as text.

Streamlit renders the body of st.error, st.info, st.caption and friends as markdown, and its renderer turns a
bare URL into a live link even when every punctuation mark is backslash-escaped. So a message that carries
such text is shown as a fixed lead in the coloured box, with the text itself in a plain-text element below.
"""

from __future__ import annotations

import re

import streamlit as st


def message(lead: str, text: str, box=st.error, container=None) -> None:
    """`box(lead)` (lead is our own wording), then `text` in a plain code block: never markdown."""
    where = container or st
    getattr(where, box.__name__)(lead)
    where.code(str(text), language=None, wrap_lines=True)


def line(text: str, container=None) -> None:
    """One line of visitor or store text, as plain text (st.text: no markdown, no links)."""
    (container or st).text(str(text))


def word(text, pattern: str, fallback: str) -> str:
    """`text` for a markdown element when the whole of it matches `pattern` (a shape that cannot carry markup or
    a link, e.g. a plan's file name), else our own `fallback` wording."""
    return text if isinstance(text, str) and re.fullmatch(pattern, text) else fallback

