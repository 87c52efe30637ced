"""Readable tables: one place that turns a frame into what st.dataframe shows.

A page describes each column it shows once: a readable header, one number format for the whole column and
an optional help text. Missing values read "—" (not "None"), numbers keep their type (so a column still
sorts as numbers), and only the described columns are shown, in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Col:
    """How one column reads: header, format ("{:.2f}", "{:,.0f}"; None: as it is), help, width."""

    label: str
    fmt: str | None = None
    help: str | None = None
    width: str | None = None  # "small", "medium", "large" or None (Streamlit's own choice)


def styled(df: pl.DataFrame, spec: dict[str, Col]):
    """(pandas Styler, column_config) for st.dataframe: the spec's columns only, formatted, "—" for missing."""
    import streamlit as st

    keep = [c for c in spec if c in df.columns]
    pdf = df.select(keep).to_pandas()
    formats = {c: spec[c].fmt for c in keep if spec[c].fmt}
    styler = pdf.style.format(formats, na_rep="—").format(na_rep="—", subset=[c for c in keep if c not in formats])
    config = {c: st.column_config.Column(spec[c].label, help=spec[c].help, width=spec[c].width) for c in keep}
    return styler, config


def show(df: pl.DataFrame, spec: dict[str, Col], container=None, **kwargs) -> None:
    """st.dataframe of `df` as `spec` describes it, without the index."""
    import streamlit as st

    styler, config = styled(df, spec)
    (container or st).dataframe(styler, column_config=config, hide_index=True, **kwargs)
