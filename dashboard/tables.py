"""Readable tables: one place that turns a frame into what st.dataframe shows.

A page describes each column it shows once: a readable header, one number format for the whole column and
an optional help text. Missing values read "—" (not "None"), a value computed and undefined (NaN: a
Spearman rho with a constant side) reads "undefined", numbers keep their type (so a column still
sorts as numbers), and only the described columns are shown, in the order given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from store.conventions import ZERO  # zero but for rounding (a bootstrap bound of -5e-18): shown as 0


def to_minute(column: str) -> pl.Expr:
    """A stored ISO timestamp column ("2026-12-05T23:45:13+00:00") to the minute, as a table shows it:
    "2026-12-05 23:45" (UTC, as stored)."""
    return pl.col(column).str.slice(0, 16).str.replace("T", " ")


def short_error(text: str, limit: int = 40) -> str:
    """A run's error as a table cell: its first clause (up to " (" or ": " or the first line), at most `limit`
    characters with "…"; the page shows the whole text beside the table."""
    first = text.split("\n", 1)[0]
    for stop in (" (", ": "):
        first = first.split(stop, 1)[0]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Col:
    """How one column reads: header, format ("{:.2f}", "{:,.0f}"; None: as it is), help, width."""

    label: str
    fmt: str | None = None
    help: str | None = None
    width: str | int | None = None  # "small", "medium", "large", pixels, or None (Streamlit's own choice)




def _text(value, fmt: str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):  # computed and undefined (a rho with a constant side)
        return "undefined"
    if isinstance(value, float) and abs(value) < ZERO:
        value = 0.0
    return fmt.format(value) if fmt else str(value)


def with_ci(df: pl.DataFrame, value: str, low: str, high: str, fmt: str = "{:.2f}") -> pl.Series:
    """`value` with its 95% CI in one text column, "0.86 [0.79, 0.91]" (a wide table fits a 1400 px window
    with the CI beside its number rather than in two more columns); "—" where the value is missing."""
    return pl.Series(value, [
        "—" if v is None else _text(v, fmt) + ("" if lo is None or hi is None else f" [{_text(lo, fmt)}, {_text(hi, fmt)}]")
        for v, lo, hi in zip(df[value].to_list(), df[low].to_list(), df[high].to_list())], dtype=pl.String)


def styled(df: pl.DataFrame, spec: dict[str, Col]):
    """(pandas Styler, column_config) for st.dataframe: the spec's columns only, formatted, "—" for missing,
    "undefined" for NaN.

    Streamlit draws a missing number as "None" whatever the Styler says, so a column with a missing value
    is turned into text here (formatted as the spec says); a complete column stays numeric and sortable."""
    import streamlit as st

    keep = [c for c in spec if c in df.columns]
    floats = [c for c in keep if df.schema[c] in (pl.Float32, pl.Float64)]
    df = df.with_columns(pl.when(pl.col(c).abs() < ZERO).then(0.0).otherwise(pl.col(c)).alias(c) for c in floats)
    nan = {c for c in floats if df[c].is_nan().any()}
    df = df.select(keep).with_columns(
        pl.Series(c, [_text(v, spec[c].fmt) for v in df[c].to_list()], dtype=pl.String)
        for c in keep if (df[c].null_count() or c in nan) and df.schema[c] != pl.String)
    df = df.with_columns(pl.col(c).fill_null("—") for c in keep if df.schema[c] == pl.String)
    pdf = df.to_pandas()
    formats = {c: spec[c].fmt for c in keep if spec[c].fmt and df.schema[c] != pl.String}
    styler = pdf.style.format(formats)
    config = {c: st.column_config.Column(spec[c].label, help=spec[c].help, width=spec[c].width) for c in keep}
    return styler, config


def show(df: pl.DataFrame, spec: dict[str, Col], container=None, **kwargs) -> None:
    """st.dataframe of `df` as `spec` describes it, without the index."""
    import streamlit as st

    styler, config = styled(df, spec)
    (container or st).dataframe(styler, column_config=config, hide_index=True, **kwargs)


def errors_in_full(errors: Sequence[tuple[str, str]], container=None) -> None:
    """An expander with each (run, error) whole, under a table whose Error column shows only the start of it; as
    text: an error can quote what a visitor typed."""
    import streamlit as st

    if errors:
        with (container or st).expander(f"Errors in full ({len(errors)})"):
            for run, error in errors:
                st.text(f"{run}: {error}")


def show_case_view(view: pl.DataFrame, container=None) -> pl.DataFrame:
    """One run's view of one case (store.derived.case_view) as the Case explorer and the Edit demo show it, in
    the rephrase types' order; returns the frame shown (for a CSV)."""
    import streamlit as st

    from store.metrics import METRICS, REPHRASE_TYPES

    where = container or st
    order = {t: i for i, t in enumerate(REPHRASE_TYPES)}
    view = (view.with_columns(pl.col("rephrase_type").replace_strict(order, default=99).alias("_o"))
            .sort("edit_count", "_o").drop("_o"))
    # short headers (the metric's full name in the help), one format per column, "—" where a metric was not
    # measured for a type; the generation beside its type; every column in view in a 1400 px window (the
    # edit's own seconds, one row of their own, are said above the table instead of taking a column)
    short = {"p_true": ("P(true)", "{:.3g}"), "p_new": ("P(new)", "{:.3g}"), "es": ("ES", "{:.0f}"),
             "acc": ("acc", "{:.2f}"), "rev": ("rev", "{:.2f}"), "ns": ("NS", "{:.2f}"),
             "rank_true": ("Rank true", "{:,.0f}"), "fluency": ("Fluency", "{:.2f}")}
    if "edit_seconds" in view.columns:
        took = view.filter(pl.col("edit_seconds").is_not_null())
        for r in took.iter_rows(named=True):
            where.text(f"Edit {r['edit_count']:,} took {r['edit_seconds']:.1f} s.")
        view = view.filter(pl.col("edit_seconds").is_null() | (pl.col("rephrase_type") != "edit")).drop("edit_seconds")
    show(view, {"edit_count": Col("Edits made", "{:,.0f}", "the run's edit count when this was measured: 0 before "
                                  "any edit; a sequential run measures each edit at the next checkpoint", width=50),
                "rephrase_type": Col("Rephrase type", width=150),
                "generation": Col("Generation", width=230, help="the model's greedy continuation of the "
                                  "type's probe(s), joined with ' | '"),
                **{m: Col(short.get(m, (m, "{:.2f}"))[0], short.get(m, (m, "{:.2f}"))[1],
                          f"{METRICS[m].label}: {METRICS[m].description}" if m in METRICS else None, width=62)
                   for m in view.columns if m not in ("edit_count", "rephrase_type", "generation")}},
         container=where, width="stretch")
    return view
