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


def _type_order(types, order) -> list[str]:
    known = [t for t in order if t in set(types)]
    return known + sorted(set(types) - set(known))


def rephrase_heatmap(df: pl.DataFrame, value: str, title: str, rephrase_order=(), diverging: bool = False) -> go.Figure:
    """Editor x rephrase type heat map of `value` (a mean, or `drop_from_plain`), n and CI in the hover.

    Expects columns editor, rephrase_type, n, mean, ci_low, ci_high and `value`.
    """
    types = _type_order(df["rephrase_type"].unique().to_list(), rephrase_order)
    editors = sorted(df["editor"].unique().to_list())
    cell = {(r["editor"], r["rephrase_type"]): r for r in df.iter_rows(named=True)}
    z, text, custom = [], [], []
    for ed in editors:
        zr, tr, cr = [], [], []
        for t in types:
            r = cell.get((ed, t))
            v = None if r is None else r[value]
            zr.append(v)
            tr.append("" if v is None else f"{v:+.2f}" if diverging else f"{v:.2f}")
            cr.append([r["n"], r["mean"], r["ci_low"], r["ci_high"]] if r else [None] * 4)
        z.append(zr)
        text.append(tr)
        custom.append(cr)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=types, y=editors, text=text, texttemplate="%{text}", customdata=custom,
            colorscale="RdBu" if diverging else "Viridis", zmid=0 if diverging else None,
            zmin=None if diverging else 0, zmax=None if diverging else 1,
            colorbar_title=title,
            hovertemplate="%{y} · %{x}<br>" + title + ": %{z:.3f}<br>mean %{customdata[1]:.3f} "
            "[95% CI %{customdata[2]:.3f}, %{customdata[3]:.3f}]<br>n = %{customdata[0]}<extra></extra>",
        )
    )
    fig.update_layout(xaxis_title="Rephrase type", yaxis_title="Editor", margin=dict(t=30, b=40),
                      height=140 + 45 * len(editors))
    fig.update_xaxes(tickangle=-35)
    return fig


def binned_curves(df: pl.DataFrame, feature_label: str, value_label: str) -> go.Figure:
    """Mean value per popularity bin, one line per series, 95% CI band whiskers, n and range in the hover.

    Expects columns series, bin, lo, hi, n, mean, ci_low, ci_high.
    """
    fig = go.Figure()
    for (series,), part in sorted(df.partition_by("series", as_dict=True).items()):
        part = part.sort("bin")
        fig.add_trace(go.Scatter(
            x=[f"B{b}" for b in part["bin"]], y=part["mean"].to_list(), mode="lines+markers", name=str(series),
            error_y=dict(type="data", symmetric=False, array=(part["ci_high"] - part["mean"]).to_list(),
                         arrayminus=(part["mean"] - part["ci_low"]).to_list()),
            customdata=list(zip(part["n"].to_list(), part["lo"].to_list(), part["hi"].to_list())),
            hovertemplate="%{x}: %{y:.2f}<br>n = %{customdata[0]}<br>" + feature_label
            + " %{customdata[1]:.3g} to %{customdata[2]:.3g}<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(xaxis_title=f"{feature_label} bin (equal-count, B1 = least popular)", yaxis_title=value_label,
                      yaxis_range=[0, 1.05], legend_title="Editor", showlegend=True, margin=dict(t=30, b=40))
    return fig


def correlation_forest(df: pl.DataFrame, label_col: str, title: str) -> go.Figure:
    """Spearman rho with its 95% CI as horizontal whiskers, one row per `label_col` value, n in the hover."""
    df = df.sort(label_col, descending=True)
    fig = go.Figure(go.Scatter(
        x=df["rho"].to_list(), y=df[label_col].to_list(), mode="markers",
        error_x=dict(type="data", symmetric=False, array=(df["ci_high"] - df["rho"]).to_list(),
                     arrayminus=(df["rho"] - df["ci_low"]).to_list()),
        customdata=list(zip(df["n"].to_list(), df["ci_low"].to_list(), df["ci_high"].to_list())),
        hovertemplate="%{y}: rho %{x:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>n = %{customdata[0]}<extra></extra>",
    ))
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(xaxis_title=f"Spearman rho, {title} (95% bootstrap CI)", yaxis_title=label_col.replace("_", " "),
                      xaxis_range=[-1, 1], height=160 + 22 * df.height, margin=dict(t=30, b=40))
    return fig
