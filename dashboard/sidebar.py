"""The sidebar's shared model filter and the run lists pages draw from it."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard.data import query
from dashboard.filters import current, shared_selectbox


def model_filter() -> str | None:
    """Draw the sidebar's model select (app.py does, once per run): the model whose runs pages show."""
    runs = query("list_runs")
    models = sorted(runs["model"].drop_nulls().unique().to_list()) if not runs.is_empty() else []
    if not models:
        return None
    return shared_selectbox("Model", "model", models, container=st.sidebar,
                            help="Every page shows this model's runs; the choice is part of the page's link")


def model_runs(kind: str) -> pl.DataFrame:
    """The runs of a kind for the model chosen in the sidebar."""
    runs = query("list_runs", kind=kind)
    model = chosen_model()
    if model is None or runs.is_empty():
        return runs
    return runs.filter(pl.col("model") == model)


def chosen_model() -> str | None:
    """The model chosen in the sidebar (None before any choice: then pages show every model's runs)."""
    return current("model")
