"""Pure figure builders: (polars DataFrame, options) -> plotly Figure. No Streamlit, no caching."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl


def recall_by_quartile(df: pl.DataFrame) -> go.Figure:
    """Bars of pre-edit greedy recall per popularity quartile with 95% CI whiskers and n in the hover.

    Expects columns: quartile, recall, ci_low, ci_high, n (one row per quartile, optionally `relation`).
    """
    fig = go.Figure()
    groups = df.partition_by("relation", as_dict=True) if "relation" in df.columns else {("all",): df}
    for key, part in sorted(groups.items()):
        part = part.sort("quartile")
        fig.add_trace(
            go.Bar(
                name=str(key[0]),
                x=[f"Q{q}" for q in part["quartile"]],
                y=part["recall"].to_list(),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(part["ci_high"] - part["recall"]).to_list(),
                    arrayminus=(part["recall"] - part["ci_low"]).to_list(),
                ),
                customdata=part["n"].to_list(),
                hovertemplate="%{x}: recall %{y:.2f}<br>n = %{customdata}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="Subject word-frequency quartile (Q1 = rarest)",
        yaxis_title="Pre-edit greedy recall of the true object",
        yaxis_range=[0, 1],
        legend_title="Relation",
        margin=dict(t=30, b=40),
    )
    return fig
