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
                      height=200 + 45 * len(editors))
    fig.update_xaxes(tickangle=-35, automargin=True, title_standoff=18)
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


# --------------------------------------------------------------------------- sequential editing (study B)

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def forgetting_curves(curves: pl.DataFrame, events: pl.DataFrame, series: list[str], labels: dict[str, str],
                      log_x: bool = False) -> go.Figure:
    """Small multiples, one per series, of run-level values against edit count, one line per run.

    `curves`: run_id, edit_count, series, value, n, ci_low, ci_high (store.derived.sequential_curves).
    `events`: run_id, kind, series, phase, edit_count, end_count (store.derived.sequential_events):
    catastrophic phases are shaded in the run's colour, disabling edits marked with a dotted line and
    collapse with a dashed one. `labels`: run_id -> the legend name.
    """
    from plotly.subplots import make_subplots

    cols = 2 if len(series) > 1 else 1
    rows = max(1, -(-len(series) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=series, shared_xaxes=True,
                        vertical_spacing=0.12 if rows > 1 else 0.1, horizontal_spacing=0.08)
    run_ids = sorted(labels, key=lambda r: labels[r])
    for i, name in enumerate(series):
        row, col = i // cols + 1, i % cols + 1
        part = curves.filter(pl.col("series") == name)
        for j, run in enumerate(run_ids):
            data = part.filter(pl.col("run_id") == run).sort("edit_count")
            if data.is_empty():
                continue
            colour = _colour(j)
            has_ci = data["ci_low"].null_count() < data.height
            if has_ci:
                fig.add_trace(go.Scatter(
                    x=data["edit_count"].to_list() + data["edit_count"].reverse().to_list(),
                    y=data["ci_high"].to_list() + data["ci_low"].reverse().to_list(),
                    mode="lines", fill="toself", fillcolor=_rgba(colour, 0.12), line=dict(width=0), hoverinfo="skip",
                    showlegend=False, legendgroup=run), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=data["edit_count"].to_list(), y=data["value"].to_list(), mode="lines+markers",
                name=labels[run], legendgroup=run, showlegend=i == 0, line=dict(color=colour, width=2),
                marker=dict(size=4),
                customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
                hovertemplate="%{x} edits: %{y:.3f}" + (" [95% CI %{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                                                        if has_ci else "")
                + "<br>n = %{customdata[0]}<extra>" + labels[run] + "</extra>"), row=row, col=col)
            ev = events.filter(pl.col("run_id") == run) if not events.is_empty() else events
            for e in ev.iter_rows(named=True) if not ev.is_empty() else []:
                if e["kind"] == "phase" and e["phase"] == "catastrophic" and e["series"] and name.lower().startswith(
                        {"retention": "retained", "panel_recall": "recall on", "fluency": "fluency"}.get(e["series"], "?")):
                    fig.add_vrect(x0=e["edit_count"], x1=e["end_count"], fillcolor=_rgba(colour, 0.10), line_width=0,
                                  row=row, col=col)
                elif e["kind"] == "disabling_edit":
                    fig.add_vline(x=e["edit_count"], line_dash="dot", line_color=colour, line_width=1, row=row, col=col)
                elif e["kind"] == "collapse":
                    fig.add_vline(x=e["edit_count"], line_dash="dash", line_color=colour, line_width=1.5,
                                  row=row, col=col)
    fig.update_xaxes(title_text="Edits made", type="log" if log_x else "linear", row=rows)
    if rows > 1 and len(series) % cols:  # the last row's lone panel needs its own axis title
        fig.update_xaxes(title_text="Edits made", row=rows - 1, col=cols)
    fig.update_layout(height=260 * rows + 80, legend_title="Run", margin=dict(t=40, b=40),
                      hovermode="closest")
    return fig


def weight_drift_chart(drift: pl.DataFrame, labels: dict[str, str], log_y: bool = True) -> go.Figure:
    """||W - W0||_F, relative change and condition number per edited matrix against edit count; one colour
    per run, one dash per matrix. Expects run_id, edit_count, module, fro_delta, rel_change, cond_number."""
    from plotly.subplots import make_subplots

    titles = ["||W − W0||_F", "Relative change ||W − W0||_F / ||W0||_F", "Condition number of W"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    run_ids = sorted(labels, key=lambda r: labels[r])
    for j, run in enumerate(run_ids):
        part = drift.filter(pl.col("run_id") == run)
        modules = sorted(part["module"].unique().to_list())
        for k, module in enumerate(modules):
            data = part.filter(pl.col("module") == module).sort("edit_count")
            layer = "".join(ch for ch in module.split("layers.")[-1].split(".")[0] if ch.isdigit()) or module
            for c, column in enumerate(("fro_delta", "rel_change", "cond_number")):
                fig.add_trace(go.Scatter(
                    x=data["edit_count"].to_list(), y=data[column].to_list(), mode="lines",
                    name=f"{labels[run]} · layer {layer}", legendgroup=f"{run}-{module}", showlegend=c == 0,
                    line=dict(color=_colour(j), dash=dashes[k % len(dashes)]),
                    hovertemplate="%{x} edits: %{y:.4g}<br>" + module + "<extra>" + labels[run] + "</extra>"),
                    row=1, col=c + 1)
    fig.update_xaxes(title_text="Edits made")
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(height=380, legend_title="Run · edited matrix", margin=dict(t=40, b=40))
    return fig


def forgetting_by_age_chart(df: pl.DataFrame) -> go.Figure:
    """Share of held edits forgotten against edit count, one line per age bin (edits made since), n and
    the Wilson CI in the hover. Expects edit_count, age_bin, forgotten, n, ci_low, ci_high."""
    fig = go.Figure()
    bins = list(dict.fromkeys(df["age_bin"].to_list()))
    for i, b in enumerate(bins):
        data = df.filter(pl.col("age_bin") == b).sort("edit_count")
        fig.add_trace(go.Scatter(
            x=data["edit_count"].to_list(), y=data["forgotten"].to_list(), mode="lines+markers", name=b,
            line=dict(color=_colour(i)),
            customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
            hovertemplate="%{x} edits: %{y:.3f} [95% CI %{customdata[1]:.3f}, %{customdata[2]:.3f}]"
            "<br>n = %{customdata[0]}<extra>age " + b + "</extra>"))
    fig.update_layout(xaxis_title="Edits made", yaxis_title="Share of held edits now forgotten", yaxis_range=[0, 1],
                      legend_title="Edit's age (edits since)", margin=dict(t=30, b=40))
    return fig


def ability_small_multiples(df: pl.DataFrame, x: str, labels: dict[str, str], x_title: str,
                            baseline: dict | None = None, log_x: bool = False) -> go.Figure:
    """One panel per ability task: score against `x` (edit_count or batch_size), one line per run with its
    95% CI as whiskers and n in the hover; the task's chance level (dotted) and the unedited model's score
    (dashed, `baseline`: task -> score) as horizontal lines.

    Expects run_id, task, category, score, n, ci_low, ci_high, chance, metric and the `x` column.
    """
    from plotly.subplots import make_subplots

    tasks = sorted(df["task"].unique().to_list())
    if not tasks:
        return go.Figure()
    meta = {r["task"]: r for r in df.unique("task").iter_rows(named=True)}
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    def off_scale(t):  # a chance level far outside the scores (perplexity: the vocabulary size) is named, not drawn
        c, top = meta[t].get("chance"), df.filter(pl.col("task") == t)["score"].max()
        return c is not None and top is not None and c > 5 * top

    titles = [(f"{t} ({meta[t]['category']})" if meta[t].get("category") else t)
              + (f"<br>chance {meta[t]['chance']:,.0f}" if off_scale(t) else "") for t in tasks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.14, horizontal_spacing=0.07)
    run_ids = sorted(labels, key=lambda r: labels[r])
    for i, task in enumerate(tasks):
        row, col = i // cols + 1, i % cols + 1
        part = df.filter(pl.col("task") == task)
        for j, run in enumerate(run_ids):
            data = part.filter(pl.col("run_id") == run).sort(x)
            if data.is_empty():
                continue
            fig.add_trace(go.Scatter(
                x=data[x].to_list(), y=data["score"].to_list(), mode="lines+markers", name=labels[run],
                legendgroup=run, showlegend=i == 0, line=dict(color=_colour(j)),
                error_y=dict(type="data", symmetric=False, array=(data["ci_high"] - data["score"]).to_list(),
                             arrayminus=(data["score"] - data["ci_low"]).to_list(), thickness=1),
                customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
                hovertemplate=f"{x_title} %{{x}}: %{{y:.3f}} [95% CI %{{customdata[1]:.3f}}, %{{customdata[2]:.3f}}]"
                "<br>n = %{customdata[0]}<extra>" + labels[run] + "</extra>"), row=row, col=col)
        # reference lines as plain traces (add_hline per panel is slow with many panels)
        xs = part[x].drop_nulls()
        span = [xs.min(), xs.max()] if xs.len() else [0, 1]
        chance = meta[task].get("chance")
        if chance is not None and not off_scale(task):
            fig.add_trace(go.Scatter(x=span, y=[chance, chance], mode="lines", name="chance", legendgroup="chance",
                                     showlegend=i == 0, line=dict(color="grey", dash="dot", width=1),
                                     hovertemplate="chance %{y:.3g}<extra></extra>"), row=row, col=col)
        if baseline and baseline.get(task) is not None:
            fig.add_trace(go.Scatter(x=span, y=[baseline[task]] * 2, mode="lines", name="unedited model",
                                     legendgroup="unedited", showlegend=i == 0,
                                     line=dict(color="black", dash="dash", width=1),
                                     hovertemplate="unedited %{y:.3g}<extra></extra>"), row=row, col=col)
        fig.update_yaxes(title_text=meta[task].get("metric") or "score", row=row, col=col, title_font_size=10)
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear")
    fig.update_layout(height=250 * rows + 90, legend_title="Run", margin=dict(t=50, b=40))
    return fig


def popularity_scatter(points: pl.DataFrame, feature: str, feature_label: str, value_label: str,
                       log_x: bool = False) -> go.Figure:
    """One dot per (series, case): the popularity feature against the case's value, one colour per series.
    Values that are shares of a few probes (0, 1/3, 1/2, ...) pile up, so dots are jittered vertically by at
    most ±0.04 (seeded; the hover shows the exact value), and n per series is in the legend and hover.

    Expects series, case_id, subject, relation, value and the `feature` column (store.derived.popularity_points)."""
    import numpy as np

    fig = go.Figure()
    rng = np.random.default_rng(0)
    for j, ((series,), part) in enumerate(sorted(points.partition_by("series", as_dict=True).items())):
        part = part.drop_nulls("value")
        jitter = rng.uniform(-0.04, 0.04, part.height)
        n = part.height
        fig.add_trace(go.Scattergl(
            x=part[feature].to_list(), y=(part["value"].to_numpy() + jitter).tolist(), mode="markers",
            name=f"{series} (n = {n})", marker=dict(size=5, opacity=0.55, color=_colour(j)),
            customdata=list(zip(part["subject"].to_list(), part["relation"].to_list(), part["value"].to_list())),
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>" + feature_label + " %{x:.3g}<br>"
            + value_label + " %{customdata[2]:.2f}<br>n = " + str(n) + "<extra>" + str(series) + "</extra>"))
    fig.update_layout(xaxis_title=feature_label, yaxis_title=f"{value_label} (jittered ±0.04)",
                      yaxis_range=[-0.1, 1.1], legend_title="Series", margin=dict(t=30, b=40))
    if log_x:
        fig.update_xaxes(type="log")
    return fig
